// Registration of kiln::FusedMlp (fuse_small_mlp's target): shape checks, the activation codes, and the tactics,
// (rows a block, blocks sharing a row group) pairs from fused_mlp.h for the tuner to time.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/fused_mlp.h"

namespace kiln::cuda {
namespace {

// FusedMatMul's activation names as EpilogueParams::act codes; -1 for a name the kernel does not know.
int act_code(const std::string& s) {
  if (s == "none") return 0;
  if (s == "relu") return 1;
  if (s == "sigmoid") return 3;
  if (s == "silu") return 4;
  if (s == "gelu_erf") return 6;
  if (s == "gelu_tanh") return 7;
  return -1;
}

Result<MlpShape> mlp_shape(const KernelArgs& a) {
  const DevTensor &x = a.in[0], &w1 = a.in[1], &w2 = a.in[3];
  if (x.rank() < 1 || w1.rank() != 2 || w2.rank() != 2 || x.shape.back() != w1.shape[1] || w1.shape[0] != w2.shape[1])
    return invalid_argument("FusedMlp: expected X [..., K], W1 [H, K], W2 [N, H], got " + dims_to_string(x.shape) +
                            ", " + dims_to_string(w1.shape) + ", " + dims_to_string(w2.shape));
  MlpShape s;
  s.k = w1.shape[1];
  s.hidden = w1.shape[0];
  s.n = w2.shape[0];
  s.rows = s.k > 0 ? x.numel() / s.k : 0;
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
  KILN_ASSIGN_OR_RETURN(std::string n1, a.attrs().get_string("activation1", "none"));
  KILN_ASSIGN_OR_RETURN(std::string n2, a.attrs().get_string("activation2", "none"));
  const int act1 = act_code(n1), act2 = act_code(n2);
  if (act1 < 0 || act2 < 0) return invalid_model("FusedMlp: unknown activation '" + (act1 < 0 ? n1 : n2) + "'");
  const std::vector<MlpTactic> plan = mlp_tactics(s, a.handles ? a.handles->sm_count : 132);
  if (plan.empty())
    return invalid_argument("FusedMlp: K " + std::to_string(s.k) + " + hidden " + std::to_string(s.hidden) +
                            " do not fit a block's shared memory");
  MlpTactic t = plan[0];
  if (!a.tactic.empty()) {
    std::optional<MlpTactic> named = parse_mlp_tactic(a.tactic);
    if (named && mlp_smem_bytes(s, named->rows_per_block) <= kMlpSmemBytes) t = *named;
    else if (a.strict_tactic) return invalid_argument("FusedMlp: tactic '" + a.tactic + "' does not apply here");
  }
  return launch_fused_mlp(a.in[0].dtype, s, t, a.in[0].data, a.in[1].data, a.has_input(2) ? a.in[2].data : nullptr,
                          a.in[3].data, a.has_input(4) ? a.in[4].data : nullptr, a.out[0].data, act1, act2, a.stream);
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
    for (const auto& key : {"activation1", "activation2"}) {
      auto act = n.attrs.get_string(key, "none");
      if (!act.ok() || act_code(*act) < 0) return false;
    }
    return mlp_fits(s);
  };
  d.tactics = [](const KernelArgs& a) {
    std::vector<std::string> names;
    auto s = mlp_shape(a);
    if (!s.ok()) return names;
    for (const MlpTactic& t : mlp_tactics(*s, a.handles ? a.handles->sm_count : 132)) names.push_back(mlp_tactic_name(t));
    return names;
  };
  return d;
}

}  // namespace kiln::cuda
