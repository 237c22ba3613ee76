// Registration of RotaryEmbedding (opset 23): attributes and shape checks mirror the reference in
// src/ops/transformer_ops.cpp, which rejects what the kernel could not read safely; the kernel is rotary.cu.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/transformer_kernels.h"

namespace kiln::cuda {
namespace {

Status run_rotary(KernelArgs& a) {
  const std::string op = "RotaryEmbedding";
  const DevTensor& x = a.in[0];
  KILN_ASSIGN_OR_RETURN(int64_t inter, a.attrs().get_int("interleaved", 0));
  KILN_ASSIGN_OR_RETURN(int64_t heads, a.attrs().get_int("num_heads", 0));
  KILN_ASSIGN_OR_RETURN(int64_t rot, a.attrs().get_int("rotary_embedding_dim", 0));
  if (inter != 0 && inter != 1) return invalid_model(op + ": interleaved must be 0 or 1");
  if (x.rank() != 3 && x.rank() != 4) return invalid_argument(op + ": input must be 3-D or 4-D");
  RotaryParams p;
  p.four_d = x.rank() == 4;
  p.interleaved = inter == 1;
  p.S = p.four_d ? x.shape[2] : x.shape[1];
  p.H = p.four_d ? x.shape[1] : heads;
  if (!p.four_d && (p.H <= 0 || x.shape[2] % p.H != 0))
    return invalid_argument(op + ": 3-D input needs num_heads dividing the hidden size " + std::to_string(x.shape[2]));
  p.D = p.four_d ? x.shape[3] : x.shape[2] / p.H;
  p.R = rot == 0 ? p.D : rot;
  if (rot < 0 || p.R > p.D || p.R % 2 != 0)
    return invalid_argument(op + ": rotary_embedding_dim " + std::to_string(p.R) +
                            " must be even and at most the head size " + std::to_string(p.D));
  p.rows = x.shape[0] * p.S * p.H;
  const DevTensor &c = a.in[1], &s = a.in[2];
  if (c.dtype != x.dtype || s.dtype != x.dtype || c.shape != s.shape || c.shape.empty() || c.shape.back() != p.R / 2)
    return invalid_argument(op +
                            ": cos/sin caches must have the input's type, match, and end in "
                            "rotary_embedding_dim/2 = " +
                            std::to_string(p.R / 2) + ", got " + dims_to_string(c.shape) + " and " +
                            dims_to_string(s.shape));
  const int64_t* pos = nullptr;
  if (a.has_input(3)) {
    const DevTensor& ids = a.in[3];
    if (ids.dtype != DataType::kINT64 || ids.numel() != x.shape[0] * p.S || c.rank() != 2)
      return invalid_argument(op + ": position_ids must be int64 [batch, seq] and the caches 2-D");
    pos = static_cast<const int64_t*>(ids.data);
    p.cache_rows = c.shape[0];
  } else {
    if (c.rank() != 3 || c.shape[0] != x.shape[0] || c.shape[1] != p.S)
      return invalid_argument(op + ": without position_ids the caches must be [batch, seq, dim/2], got " +
                              dims_to_string(c.shape));
    p.cache_rows = x.shape[0] * p.S;
  }
  return launch_rotary_embedding(x.dtype, p, x.data, c.data, s.data, pos, a.out[0].data, a.stream);
}

}  // namespace

KILN_CUDA_KERNEL(RotaryEmbedding) {
  KernelDef d;
  d.op = "RotaryEmbedding";
  d.dtypes = float_types();
  d.run = run_rotary;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    const auto& x = plan.values[n.inputs[0]];
    if (!x.rank_known || (x.shape.size() != 3 && x.shape.size() != 4)) return false;
    for (int i = 1; i <= 2; ++i)
      if (n.inputs.size() <= static_cast<size_t>(i) || n.inputs[i] < 0 || plan.values[n.inputs[i]].dtype != x.dtype)
        return false;
    return n.inputs.size() <= 3 || n.inputs[3] < 0 || plan.values[n.inputs[3]].dtype == DataType::kINT64;
  };
  return d;
}

}  // namespace kiln::cuda
