// DnnSdpa: FusedAttention as one cuDNN frontend graph (sdpa forward, inference: no softmax stats), built with the
// heuristic's first plan that finalizes. The only file that includes the cuDNN frontend (its headers are heavy).
#include "backends/cuda/dnn_attention.h"

#include <cuda_runtime.h>
#include <cudnn.h>

// The frontend's JSON (de)serialization is not used here; leaving it out saves a third of this file's compile time.
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <cudnn_frontend.h>

#include <map>
#include <mutex>
#include <unordered_map>

#include "backends/cuda/cuda_kernel.h"

namespace kiln::cuda {
namespace {

namespace fe = cudnn_frontend;

// Unique ids of the variant pack's tensors.
enum : int64_t { kUidQ = 1, kUidK, kUidV, kUidBias, kUidO };

std::vector<int64_t> vec(const int64_t* p) { return std::vector<int64_t>(p, p + 4); }

std::string spec_key(const DnnSdpaSpec& s) {
  std::string k = std::to_string(static_cast<int>(s.dt));
  for (int64_t v : {s.B, s.H, s.Sq, s.Sk, s.D, s.Dv}) k += " " + std::to_string(v);
  for (const int64_t* st : {s.qs, s.ks, s.vs, s.os})
    for (int i = 0; i < 3; ++i) k += " " + std::to_string(st[i]);
  k += " m" + dims_to_string(s.mask) + " s" + std::to_string(s.scale) + (s.causal ? " c" : "");
  return k;
}

Status refused(const std::string& what, fe::error_t e) {
  return unsupported("cuDNN SDPA: " + what + ": " + e.get_message());
}

}  // namespace

struct DnnSdpa::Impl {
  fe::graph::Graph graph;
  bool has_bias = false;
};

DnnSdpa::DnnSdpa(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DnnSdpa::~DnnSdpa() = default;

namespace {

// The graph of one layout into g (fresh), its plan built; the plan's workspace size into *workspace.
Status build_graph(fe::graph::Graph& g, cudnnContext* handle, const DnnSdpaSpec& s, const DnnSdpaLayout& l,
                   int64_t* workspace) {
  const fe::DataType_t io = s.dt == DataType::kBF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF;
  try {
    g.set_io_data_type(io)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto tensor = [&](const char* name, int64_t uid, const DnnSdpaTensor& t) {
      return g.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_data_type(io)
                          .set_dim(vec(t.dims))
                          .set_stride(vec(t.strides)));
    };
    auto q = tensor("Q", kUidQ, l.q), k = tensor("K", kUidK, l.k), v = tensor("V", kUidV, l.v);
    auto opts = fe::graph::SDPA_attributes().set_name("kiln_sdpa").set_generate_stats(false).set_attn_scale(s.scale);
    // Top-left aligned, as FusedAttention's causal attribute (key j masked for query i when j > i).
    if (s.causal) opts.set_causal_mask(true);
    if (l.has_bias) opts.set_bias(tensor("Bias", kUidBias, l.bias));
    auto [o, stats] = g.sdpa(q, k, v, opts);
    (void)stats;  // none: inference
    o->set_output(true).set_uid(kUidO).set_data_type(io).set_dim(vec(l.o.dims)).set_stride(vec(l.o.strides));
    if (auto e = g.validate(); e.is_bad()) return refused("validate", e);
    if (auto e = g.build_operation_graph(handle); e.is_bad()) return refused("operation graph", e);
    if (auto e = g.create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}); e.is_bad())
      return refused("heuristics", e);
    if (auto e = g.check_support(handle); e.is_bad()) return refused("support", e);
    if (auto e = g.build_plans(handle, fe::BuildPlanPolicy_t::HEURISTICS_CHOICE); e.is_bad())
      return refused("plans", e);
    if (auto e = g.get_workspace_size(*workspace); e.is_bad()) return refused("workspace size", e);
  } catch (const std::exception& e) {
    return unsupported(std::string("cuDNN SDPA: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<DnnSdpa>> DnnSdpa::build(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  if (std::string why = dnn_sdpa_declined(s); !why.empty()) return unsupported("cuDNN SDPA: " + why);
  // The mask as stored (size-1 dims broadcast by the graph's add); where cuDNN refuses that, the same mask
  // expanded to the full [B,H,Sq,Sk] with stride 0 along its broadcast dims.
  std::vector<DnnSdpaLayout> layouts = {dnn_sdpa_layout(s)};
  if (layouts[0].has_bias) {
    DnnSdpaLayout e = layouts[0];
    const int64_t full[4] = {s.B, s.H, s.Sq, s.Sk};
    bool broadcast = false;
    for (int d = 0; d < 4; ++d)
      if (e.bias.dims[d] != full[d]) e.bias.dims[d] = full[d], e.bias.strides[d] = 0, broadcast = true;
    if (broadcast) layouts.push_back(e);
  }
  Status last;
  for (const DnnSdpaLayout& l : layouts) {
    auto impl = std::make_unique<Impl>();
    impl->has_bias = l.has_bias;
    int64_t workspace = 0;
    last = build_graph(impl->graph, handle, s, l, &workspace);
    if (!last.ok()) continue;
    if (workspace < 0 || static_cast<uint64_t>(workspace) > max_workspace)
      return unsupported("cuDNN SDPA: needs " + std::to_string(workspace) + " bytes of workspace, the context has " +
                         std::to_string(max_workspace));
    std::shared_ptr<DnnSdpa> d(new DnnSdpa(std::move(impl)));
    d->workspace_ = static_cast<size_t>(workspace);
    return d;
  }
  return last;
}

Result<std::shared_ptr<DnnSdpa>> DnnSdpa::get(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  // Held weakly: bert's twelve identical layers of one context build one graph (each build compiles kernels), and
  // the graph goes with the last layer that uses it. Keyed by handle: a plan runs on the handle it was built on.
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<DnnSdpa>> live;
  const std::string key = std::to_string(reinterpret_cast<uintptr_t>(handle)) + " " + spec_key(s) + " w" +
                          std::to_string(max_workspace);
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = live.find(key); it != live.end())
      if (std::shared_ptr<DnnSdpa> d = it->second.lock()) return d;
  }
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<DnnSdpa> d, build(handle, s, max_workspace));
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = live.begin(); it != live.end();) it = it->second.expired() ? live.erase(it) : std::next(it);
  live[key] = d;
  return d;
}

bool DnnSdpa::supported(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  if (!dnn_sdpa_declined(s).empty()) return false;
  int device = -1;
  cudaGetDevice(&device);
  const std::string key = std::to_string(device) + " " + spec_key(s) + " w" + std::to_string(max_workspace);
  static std::mutex mu;
  static std::map<std::string, bool> known;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = known.find(key); it != known.end()) return it->second;
  }
  // Only the answer is kept: the layer that runs the tactic builds its own graph (get()).
  const bool ok = get(handle, s, max_workspace).ok();
  std::lock_guard<std::mutex> lock(mu);
  known[key] = ok;
  return ok;
}

Status DnnSdpa::run(cudnnContext* handle, void* workspace, const void* q, const void* k, const void* v,
                    const void* mask, void* o) const {
  std::unordered_map<int64_t, void*> pack = {
      {kUidQ, const_cast<void*>(q)}, {kUidK, const_cast<void*>(k)}, {kUidV, const_cast<void*>(v)}, {kUidO, o}};
  if (impl_->has_bias) pack[kUidBias] = const_cast<void*>(mask);
  fe::error_t e = impl_->graph.execute(handle, pack, workspace);
  if (e.is_bad()) return internal_error("cuDNN SDPA execute: " + e.get_message());
  return Status::Ok();
}

}  // namespace kiln::cuda
