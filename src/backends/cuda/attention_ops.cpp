// kiln::FusedAttention on the CUDA backend: shapes, layout strides and mask strides from the node (worked out
// when the shapes change), the kernels in attention.cu, or cuDNN's fused attention (tactic "cudnn_sdpa",
// dnn_attention.h; its plan stored in the engine with KILN_DNN_SDPA_STORE=1).
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dnn_attention.h"
#include "backends/cuda/dnn_layer_plan.h"
#include "backends/cuda/transformer_kernels.h"
#include "kiln/logger.h"
#include "ops/attention_layout.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

// The launch parameters for the shapes they were worked out at (attributes, layout strides, mask broadcast):
// recomputed when a shape changes, not on every enqueue; only the addresses are set per run.
struct AttentionState {
  std::vector<Dims> shapes;  // Q, K, V, mask (empty where absent), then the output
  AttentionParams params;    // addresses unset
  int64_t offsets[3] = {0, 0, 0};  // Q's, K's, V's first element in their buffers (packed layouts), elements
  std::string tactic;        // the tactic `params.warps` (or `dnn`) was resolved from
  DnnSdpaSpec spec;          // the problem as cuDNN's fused attention sees it
  std::shared_ptr<DnnSdpa> dnn;  // set: cuDNN's fused attention runs instead of our kernels
};

const Dims kAbsent;
const Dims& shape_or_absent(const KernelArgs& a, int i) { return a.has_input(i) ? a.in[i].shape : kAbsent; }

bool same_shapes(const AttentionState& st, const KernelArgs& a) {
  if (st.shapes.size() != 5 || st.shapes[4] != a.out[0].shape) return false;
  for (int i = 0; i < 4; ++i)
    if (st.shapes[i] != shape_or_absent(a, i)) return false;
  return true;
}

Status make_params(const KernelArgs& a, AttentionState* st) {
  const DevTensor& q = a.in[0];
  const bool has_k = a.has_input(1), has_v = a.has_input(2);
  KILN_ASSIGN_OR_RETURN(ops::AttentionGeometry geo,
                        ops::attention_geometry(a.attrs(), q.shape, has_k ? &a.in[1].shape : nullptr,
                                                has_v ? &a.in[2].shape : nullptr));
  if (geo.out_shape != a.out[0].shape)
    return internal_error("FusedAttention: output " + dims_to_string(a.out[0].shape) + ", expected " +
                          dims_to_string(geo.out_shape));
  AttentionParams p;
  p.B = geo.B, p.H = geo.H, p.Hk = geo.Hk, p.Sq = geo.Sq, p.Sk = geo.Sk, p.D = geo.D, p.Dv = geo.Dv;
  for (int i = 0; i < 3; ++i) p.qs[i] = geo.q.st[i], p.ks[i] = geo.k.st[i], p.vs[i] = geo.v.st[i], p.os[i] = geo.o.st[i];
  KILN_ASSIGN_OR_RETURN(int64_t causal, a.attrs().get_int("causal", 0));
  KILN_ASSIGN_OR_RETURN(float scale, a.attrs().get_float("scale", 0.0f));
  p.scale = a.attrs().has("scale") ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.D)));
  p.causal = causal != 0;
  KILN_ASSIGN_OR_RETURN(int64_t masked_rows_zero, a.attrs().get_int("masked_rows_zero", 0));
  p.masked_rows_zero = masked_rows_zero != 0;
  Dims mask4;
  if (a.has_input(3)) {
    Dims ms = a.in[3].shape;
    if (ms.size() > 4) return invalid_argument("FusedAttention: the mask has rank > 4");
    while (ms.size() < 4) ms.insert(ms.begin(), 1);
    const Dims full = {p.B, p.H, p.Sq, p.Sk};
    for (int d = 0; d < 4; ++d)
      if (ms[d] != 1 && ms[d] != full[d])
        return invalid_argument("FusedAttention: mask " + dims_to_string(a.in[3].shape) + " does not broadcast to " +
                                dims_to_string(full));
    const std::vector<int64_t> mst = ops::broadcast_strides(ms, full);
    for (int d = 0; d < 4; ++d) p.ms[d] = mst[d];
    mask4 = ms;
  }
  p.sm_count = a.handles->sm_count;
  st->params = p;
  st->spec = dnn_sdpa_spec(geo, q.dtype, mask4, p.scale, p.causal);
  st->offsets[0] = geo.q.offset, st->offsets[1] = geo.k.offset, st->offsets[2] = geo.v.offset;
  return Status::Ok();
}

// The launch parameters with this run's addresses.
AttentionParams bound_params(const KernelArgs& a, const AttentionState& st) {
  const DevTensor& q = a.in[0];
  // A packed layout reads K and V from Q's buffer.
  const DevTensor& k = a.has_input(1) ? a.in[1] : q;
  const DevTensor& v = a.has_input(2) ? a.in[2] : q;
  const size_t es = dtype_size(q.dtype);
  AttentionParams p = st.params;
  p.q = static_cast<const char*>(q.data) + st.offsets[0] * es;
  p.k = static_cast<const char*>(k.data) + st.offsets[1] * es;
  p.v = static_cast<const char*>(v.data) + st.offsets[2] * es;
  p.mask = a.has_input(3) ? a.in[3].data : nullptr;
  p.o = a.out[0].data;
  return p;
}

// A layer's tactic that cannot run here: an error while the tuner times it (it must not time a name that did not
// run), else our kernel's default with one warning.
Status fall_back(const KernelArgs& a, const std::string& why) {
  if (a.strict_tactic) return unsupported("FusedAttention: tactic " + a.tactic + ": " + why);
  const std::string msg = "FusedAttention '" + a.node->name + "': recorded tactic " + a.tactic + " cannot run here (" +
                          why + "); it falls back to Kiln's own attention kernel";
  default_logger().log(ILogger::Severity::kWARNING, msg.c_str());
  return Status::Ok();
}

// cuDNN's graph for "cudnn_sdpa" (built, restored from the engine, or shared with a layer of the same shapes), or
// our kernel's default.
// A recorded one runs whatever KILN_DNN_SDPA says: the engine chose it.
Status resolve_dnn(const KernelArgs& a, const AttentionParams& p, AttentionState* st) {
  if (!a.handles || !a.handles->dnn) return fall_back(a, "no cuDNN handle");
  if (!dnn_pointers_aligned({p.q, p.k, p.v, p.mask, p.o}))
    return fall_back(a, "pointers not " + std::to_string(kDnnAlignment) + "-byte aligned");
  cudnnContext* h = a.handles->dnn;
  const size_t ws = a.handles->workspace_bytes;
  const DnnSdpaSpec& s = st->spec;
  using Plan = std::shared_ptr<DnnSdpa>;
  // With KILN_DNN_SDPA_STORE=1, the plan the builder stored with the node when it is for this problem, cuDNN and
  // GPU (no compile); a stored plan that cannot be used is only a slower load (a line in the log, then the build).
  auto d = dnn_sdpa_store_enabled() ? restore_or_build<Plan>(
                                          a, "FusedAttention", DnnSdpa::plan_key(s), dnn_sdpa_plan_key(s, ""),
                                          [&](const std::string& text) { return DnnSdpa::restore(h, s, text, ws); },
                                          [&] { return DnnSdpa::get(h, s, ws); })
                                    : DnnSdpa::get(h, s, ws);
  if (!d.ok()) return fall_back(a, d.status().message());
  st->dnn = std::move(d).value();
  return Status::Ok();
}

// The block size the layer's tactic names where it is one of the candidates for these shapes, or cuDNN's fused
// attention; otherwise the heuristic (0), or an error while the tuner times it. Worked out when the shapes or the
// tactic change.
Status resolve_tactic(const KernelArgs& a, const AttentionParams& p, AttentionState* st) {
  st->tactic = a.tactic;
  st->params.warps = 0;
  st->params.splits = 1;
  st->dnn.reset();
  if (a.tactic.empty()) return Status::Ok();
  if (a.tactic == kDnnSdpaTactic) return resolve_dnn(a, p, st);
  const std::vector<std::string> offered = attention_tactics(attention_shape(p, a.in[0].dtype), p.sm_count);
  if (std::find(offered.begin(), offered.end(), a.tactic) != offered.end()) {
    const AttentionBlock block = attention_tactic_block(a.tactic);
    st->params.warps = block.warps;
    st->params.splits = block.splits;
    return Status::Ok();
  }
  return a.strict_tactic ? unsupported("FusedAttention: tactic " + a.tactic + " is not offered for these shapes")
                         : Status::Ok();
}

Status prepare(KernelArgs& a, AttentionState** out) {
  if (!*a.state) *a.state = std::make_shared<AttentionState>();
  auto* st = static_cast<AttentionState*>(a.state->get());
  const bool fresh = !same_shapes(*st, a);
  if (fresh) {
    st->shapes.clear();
    KILN_RETURN_IF_ERROR(make_params(a, st));
    for (int i = 0; i < 4; ++i) st->shapes.push_back(shape_or_absent(a, i));
    st->shapes.push_back(a.out[0].shape);
  }
  // Alignment depends on the addresses, which a context keeps while its shapes stay (its arena is planned
  // for them), so the choice is kept with the shapes.
  if (fresh || st->tactic != a.tactic) {
    const Status s = resolve_tactic(a, bound_params(a, *st), st);
    if (!s.ok()) {
      st->shapes.clear();  // worked out again next time
      return s;
    }
  }
  *out = st;
  return Status::Ok();
}

Status run_fused_attention(KernelArgs& a) {
  AttentionState* st = nullptr;
  KILN_RETURN_IF_ERROR(prepare(a, &st));
  const AttentionParams p = bound_params(a, *st);
  if (auto done = run_layer_plan(a, st->dnn, dnn_pointers_aligned({p.q, p.k, p.v, p.mask, p.o}), "FusedAttention",
                                 "Kiln's own attention kernel", [&](DnnSdpa& d) {
                                   return d.run(a.handles->dnn, a.handles->workspace, p.q, p.k, p.v, p.mask, p.o);
                                 }))
    return *done;
  return launch_fused_attention(a.in[0].dtype, p, a.stream);
}

// The tensor-core kernel's block sizes for the layer's shapes (none where the generic kernel runs), with cuDNN's
// fused attention second where cuDNN takes these shapes (asked of cuDNN once per process and problem) and
// KILN_DNN_SDPA does not withdraw it.
std::vector<std::string> fused_attention_tactics(const KernelArgs& a) {
  if (a.in.empty() || a.out.empty() || a.out[0].numel() == 0) return {};
  AttentionState st;
  if (!make_params(a, &st).ok()) return {};
  const AttentionParams p = bound_params(a, st);
  const std::vector<std::string> own = attention_tactics(attention_shape(p, a.in[0].dtype), p.sm_count);
  // cuDNN's result for a row with every key masked is not documented: layers that must give zeros there keep ours.
  const bool dnn = !own.empty() && !p.masked_rows_zero && dnn_sdpa_enabled() && a.handles && a.handles->dnn &&
                   dnn_pointers_aligned({p.q, p.k, p.v, p.mask, p.o}) &&
                   DnnSdpa::supported(a.handles->dnn, st.spec, a.handles->workspace_bytes);
  return merge_attention_tactics(own, dnn);
}

// With a chosen cudnn_sdpa and KILN_DNN_SDPA_STORE=1: the plan serialized and its key, for the engine (the plan the
// tuner built, kept serialized, so nothing compiles here). Nothing when cuDNN cannot serialize it; the load then
// builds.
std::vector<std::pair<std::string, std::string>> fused_attention_annotations(KernelArgs& a) {
  if (a.tactic != kDnnSdpaTactic || !dnn_sdpa_store_enabled() || !a.handles || !a.handles->dnn || a.in.empty() ||
      a.out.empty() || a.out[0].numel() == 0)
    return {};
  AttentionState st;
  if (!make_params(a, &st).ok()) return {};
  std::string text = DnnSdpa::stored_plan(a.handles->dnn, st.spec, a.handles->workspace_bytes);
  if (text.empty()) return {};
  return {{kDnnPlanKeyAttr, DnnSdpa::plan_key(st.spec)}, {kDnnPlanAttr, std::move(text)}};
}

}  // namespace

KILN_CUDA_KERNEL(FusedAttention) {
  KernelDef d;
  d.op = "FusedAttention";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_fused_attention;
  d.tactics = fused_attention_tactics;
  d.annotations = fused_attention_annotations;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    const DataType dt = node_dtype(n, p);
    for (int id : n.inputs)
      if (id >= 0 && p.values[id].dtype != dt) return false;
    return true;
  };
  return d;
}

}  // namespace kiln::cuda
