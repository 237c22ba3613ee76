// kiln::FusedAttention on the CUDA backend: shapes and mask strides from the node, the kernel in attention.cu.
#include <cmath>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/transformer_kernels.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

Status run_fused_attention(KernelArgs& a) {
  const DevTensor &q = a.in[0], &k = a.in[1], &v = a.in[2];
  if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4) return invalid_argument("FusedAttention: Q, K, V must be 4-D");
  AttentionParams p;
  p.B = q.shape[0];
  p.H = q.shape[1];
  p.Sq = q.shape[2];
  p.D = q.shape[3];
  p.Sk = k.shape[2];
  p.Dv = v.shape[3];
  if (k.shape[0] != p.B || k.shape[1] != p.H || k.shape[3] != p.D || v.shape[0] != p.B || v.shape[1] != p.H ||
      v.shape[2] != p.Sk)
    return invalid_argument("FusedAttention: K " + dims_to_string(k.shape) + " and V " + dims_to_string(v.shape) +
                            " do not fit Q " + dims_to_string(q.shape));
  KILN_ASSIGN_OR_RETURN(int64_t causal, a.attrs().get_int("causal", 0));
  KILN_ASSIGN_OR_RETURN(float scale, a.attrs().get_float("scale", 0.0f));
  p.scale = a.attrs().has("scale") ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.D)));
  p.causal = causal != 0;
  if (a.has_input(3)) {
    const DevTensor& m = a.in[3];
    Dims ms = m.shape;
    if (ms.size() > 4) return invalid_argument("FusedAttention: the mask has rank > 4");
    while (ms.size() < 4) ms.insert(ms.begin(), 1);
    const Dims full = {p.B, p.H, p.Sq, p.Sk};
    for (int d = 0; d < 4; ++d)
      if (ms[d] != 1 && ms[d] != full[d])
        return invalid_argument("FusedAttention: mask " + dims_to_string(m.shape) + " does not broadcast to " +
                                dims_to_string(full));
    const std::vector<int64_t> st = ops::broadcast_strides(ms, full);
    for (int d = 0; d < 4; ++d) p.ms[d] = st[d];
    p.mask = m.data;
  }
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.o = a.out[0].data;
  return launch_fused_attention(q.dtype, p, a.stream);
}

}  // namespace

KILN_CUDA_KERNEL(FusedAttention) {
  KernelDef d;
  d.op = "FusedAttention";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_fused_attention;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    const DataType dt = node_dtype(n, p);
    for (int id : n.inputs)
      if (id >= 0 && p.values[id].dtype != dt) return false;
    return true;
  };
  return d;
}

}  // namespace kiln::cuda
