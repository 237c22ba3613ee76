// Registration of kiln::FusedMlp (fuse_small_mlp's target): shape checks, the activation codes, and the tactics
// from fused_mlp.h for the tuner to time: (rows a block, blocks sharing a row group) pairs, and with squeeze the
// fused one-block-a-row kernel or those pairs after the ReduceMean kernels' reduction into the workspace.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/fused_mlp.h"
#include "backends/cuda/reduce_kernels.h"
#include "ops/layout_util.h"

namespace kiln::cuda {
namespace {

Result<MlpShape> mlp_shape(const KernelArgs& a) {
  const DevTensor &x = a.in[0], &w1 = a.in[1], &w2 = a.in[3];
  if (x.rank() < 1 || w1.rank() != 2 || w2.rank() != 2 || x.shape.back() != w1.shape[1] || w1.shape[0] != w2.shape[1])
    return invalid_argument("FusedMlp: expected X [..., K], W1 [H, K], W2 [N, H], got " + dims_to_string(x.shape) +
                            ", " + dims_to_string(w1.shape) + ", " + dims_to_string(w2.shape));
  KILN_ASSIGN_OR_RETURN(int64_t squeeze, a.attrs().get_int("squeeze", 0));
  MlpShape s;
  s.k = w1.shape[1];
  s.hidden = w1.shape[0];
  s.n = w2.shape[0];
  s.rows = s.k > 0 ? x.numel() / s.k : 0;
  if (squeeze) {
    if (x.rank() < 3) return invalid_argument("FusedMlp: squeeze needs X of rank >= 3, got " + dims_to_string(x.shape));
    s.rows = x.shape[0];
    s.squeeze = true;
    s.spatial = s.rows * s.k > 0 ? x.numel() / (s.rows * s.k) : 0;
  }
  for (int i : {1, 3})
    if (a.in[i].dtype != x.dtype) return invalid_argument("FusedMlp: the weights must have X's type");
  for (const auto& [i, len] : {std::pair{2, s.hidden}, std::pair{4, s.n}})
    if (a.has_input(i) && (a.in[i].dtype != x.dtype || a.in[i].numel() != len))
      return invalid_argument("FusedMlp: bias " + std::to_string(i) + " must be [" + std::to_string(len) +
                              "] of X's type, got " + dims_to_string(a.in[i].shape));
  return s;
}

Status run_mlp(KernelArgs& a) {
  KILN_ASSIGN_OR_RETURN(MlpShape s, mlp_shape(a));
  // EpilogueParams::act codes are ops::Activation's numbers.
  KILN_ASSIGN_OR_RETURN(const ops::Activation a1, ops::parse_matmul_activation(a.attrs(), "activation1", "FusedMlp"));
  KILN_ASSIGN_OR_RETURN(const ops::Activation a2, ops::parse_matmul_activation(a.attrs(), "activation2", "FusedMlp"));
  const int act1 = static_cast<int>(a1), act2 = static_cast<int>(a2);
  const DataType dt = a.in[0].dtype;
  const int elem = static_cast<int>(dtype_size(dt));
  // The tactic the builder chose; the plan's first candidate only where none is named (or it cannot run here).
  std::optional<MlpTactic> t = a.tactic.empty() ? std::nullopt : parse_mlp_tactic(a.tactic);
  if (t && !mlp_tactic_applies(s, *t, elem)) t.reset();
  if (!t && !a.tactic.empty() && a.strict_tactic)
    return invalid_argument("FusedMlp: tactic '" + a.tactic + "' does not apply here");
  if (!t) {
    const std::vector<MlpTactic> plan = mlp_tactics(s, a.handles ? a.handles->sm_count : 132, elem);
    if (plan.empty())
      return invalid_argument("FusedMlp: K " + std::to_string(s.k) + " + hidden " + std::to_string(s.hidden) +
                              " do not fit a block's shared memory");
    t = plan[0];
  }
  const void* x = a.in[0].data;
  if (t->kind == MlpKind::kPool && s.rows > 0) {
    // The squeeze first, as the ReduceMean it replaces ran it (an empty one gives 0s, as the reference's): the
    // pooled rows (X's type) at the workspace's start, the reduction's own partial sums after them.
    const size_t pooled = (static_cast<size_t>(s.rows * s.k) * elem + 255) / 256 * 256;
    if (!a.handles || !a.handles->workspace || a.handles->workspace_bytes < pooled)
      return invalid_argument("FusedMlp: the pooled rows (" + std::to_string(pooled) + " bytes) exceed the workspace");
    char* ws = static_cast<char*>(a.handles->workspace);
    KILN_RETURN_IF_ERROR(launch_reduce_dims(dt, x, ws, Dims{s.rows, s.spatial, s.k}, {false, true, false},
                                            ReduceOp::kMean, s.rows * s.k, "FusedMlp", ws + pooled,
                                            a.handles->workspace_bytes - pooled, a.handles->sm_count, a.stream));
    x = ws;
  }
  return launch_fused_mlp(dt, s, *t, x, a.in[1].data, a.has_input(2) ? a.in[2].data : nullptr, a.in[3].data,
                          a.has_input(4) ? a.in[4].data : nullptr, a.out[0].data, act1, act2, a.stream);
}

}  // namespace

KILN_CUDA_KERNEL(FusedMlp) {
  KernelDef d;
  d.op = "FusedMlp";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_mlp;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    if (n.inputs.size() < 4 || n.inputs[1] < 0 || n.inputs[3] < 0) return false;
    const auto &x = plan.values[n.inputs[0]], &w1 = plan.values[n.inputs[1]], &w2 = plan.values[n.inputs[3]];
    if (!x.rank_known || !w1.rank_known || !w2.rank_known || w1.shape.size() != 2 || w2.shape.size() != 2) return false;
    if (!w1.shape[0].is_static() || !w1.shape[1].is_static() || !w2.shape[0].is_static()) return false;
    MlpShape s;
    s.k = w1.shape[1].value;
    s.hidden = w1.shape[0].value;
    s.n = w2.shape[0].value;
    for (const auto& key : {"activation1", "activation2"})
      if (!ops::parse_matmul_activation(n.attrs, key, "FusedMlp").ok()) return false;
    auto squeeze = n.attrs.get_int("squeeze", 0);
    if (!squeeze.ok() || (*squeeze != 0 && (*squeeze != 1 || x.shape.size() < 3))) return false;
    return mlp_fits(s);
  };
  d.tactics = [](const KernelArgs& a) {
    std::vector<std::string> names;
    auto s = mlp_shape(a);
    if (!s.ok()) return names;
    const int elem = static_cast<int>(dtype_size(a.in[0].dtype));
    for (const MlpTactic& t : mlp_tactics(*s, a.handles ? a.handles->sm_count : 132, elem))
      names.push_back(mlp_tactic_name(t));
    return names;
  };
  return d;
}

}  // namespace kiln::cuda
