// DnnSdpa: FusedAttention as one cuDNN frontend graph (sdpa forward, inference: no softmax stats), built with the
// heuristic's first plan that finalizes, or restored from the engine. The only file that includes the cuDNN
// frontend (its headers are heavy).
#include "backends/cuda/dnn_attention.h"

#include <cuda_runtime.h>
#include <cudnn.h>

// With the frontend's JSON support (its vendored nlohmann/json; nothing to link): Graph::serialize / deserialize
// store and restore the plan (dnn_sdpa_store_enabled). It costs compile time: this file took 34-37 s and 1.4 GB
// without it, 58-61 s and 2.4 GB with it (g++ 12 -O2, one core).
#include <cudnn_frontend.h>

#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dnn_graph.h"

namespace kiln::cuda {
namespace {

namespace fe = cudnn_frontend;

// Unique ids of the variant pack's tensors.
enum : int64_t { kUidQ = 1, kUidK, kUidV, kUidBias, kUidO };

std::vector<int64_t> vec(const int64_t* p) { return std::vector<int64_t>(p, p + 4); }

Status refused(const std::string& what, fe::error_t e) {
  return unsupported("cuDNN SDPA: " + what + ": " + e.get_message());
}

std::atomic<int64_t> g_built{0}, g_restored{0};

// What a plan is remembered under: the device (live graphs: the handle), the problem and the workspace limit.
std::string device_key(const DnnSdpaSpec& s, size_t max_workspace) {
  int device = -1;
  cudaGetDevice(&device);
  return std::to_string(device) + " " + dnn_sdpa_problem_key(s) + " w" + std::to_string(max_workspace);
}
std::string live_key(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  return std::to_string(reinterpret_cast<uintptr_t>(handle)) + " " + dnn_sdpa_problem_key(s) + " w" +
         std::to_string(max_workspace);
}

// The serialized plans this process built (device_key), while KILN_DNN_SDPA_STORE is on: what the builder stores
// with the tuned layer, whose own graph is gone by then (the tuner resets a layer's state after timing it).
std::mutex g_text_mu;
std::map<std::string, std::string> g_texts;

// Live graphs, held weakly: bert's twelve identical layers of one context share one graph (each build compiles
// kernels), and the graph goes with the last layer that uses it. Keyed by handle: a plan runs on the handle it
// was built (or restored) on.
std::mutex g_live_mu;
std::map<std::string, std::weak_ptr<DnnSdpa>> g_live;

std::shared_ptr<DnnSdpa> find_live(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_live_mu);
  if (auto it = g_live.find(key); it != g_live.end()) return it->second.lock();
  return nullptr;
}

void add_live(const std::string& key, const std::shared_ptr<DnnSdpa>& d) {
  std::lock_guard<std::mutex> lock(g_live_mu);
  for (auto it = g_live.begin(); it != g_live.end();) it = it->second.expired() ? g_live.erase(it) : std::next(it);
  g_live[key] = d;
}

// The graph's plan serialized as the engine stores it, or empty (cuDNN serializes runtime-compiled engines only;
// the frontend then reports an error or throws). Plan only, without the graph's structure: deserialize() with a
// handle needs no more.
std::string serialize_plan(const fe::graph::Graph& g) {
  std::vector<uint8_t> bytes;
  try {
    if (g.serialize(bytes, false).is_bad()) return "";
  } catch (const std::exception&) {
    return "";
  }
  return dnn_plan_to_text(bytes);
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
    ++g_built;
    if (dnn_sdpa_store_enabled()) {
      // Serialized now, while the graph exists: the builder asks for it after the tuner has dropped the layer.
      std::string text = serialize_plan(impl->graph);
      std::lock_guard<std::mutex> lock(g_text_mu);
      g_texts[device_key(s, max_workspace)] = std::move(text);
    }
    std::shared_ptr<DnnSdpa> d(new DnnSdpa(std::move(impl)));
    d->workspace_ = static_cast<size_t>(workspace);
    return d;
  }
  return last;
}

Result<std::shared_ptr<DnnSdpa>> DnnSdpa::get(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  const std::string key = live_key(handle, s, max_workspace);
  if (std::shared_ptr<DnnSdpa> d = find_live(key)) return d;
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<DnnSdpa> d, build(handle, s, max_workspace));
  add_live(key, d);
  return d;
}

Result<std::shared_ptr<DnnSdpa>> DnnSdpa::restore(cudnnContext* handle, const DnnSdpaSpec& s, const std::string& text,
                                                  size_t max_workspace) {
  if (std::string why = dnn_sdpa_declined(s); !why.empty()) return unsupported("cuDNN SDPA: " + why);
  const std::string key = live_key(handle, s, max_workspace);
  if (std::shared_ptr<DnnSdpa> d = find_live(key)) return d;
  std::vector<uint8_t> bytes;
  if (text.empty() || !dnn_plan_from_text(text, &bytes))
    return unsupported("cuDNN SDPA: the stored plan is not base64");
  auto impl = std::make_unique<Impl>();
  impl->has_bias = !s.mask.empty();
  int64_t workspace = 0;
  try {
    const nlohmann::json j = nlohmann::json::from_ubjson(bytes);
    // The frontend reads these unchecked (operator[] of a const json): a damaged plan must not get that far.
    for (const char* field : {"json_version", "cudnn_backend_data", "behavior_notes", "variant_pack_uids",
                              "variant_pack_replacements", "fe_workspace_size"})
      if (!j.contains(field)) return unsupported(std::string("cuDNN SDPA: the stored plan has no ") + field);
    // No warmup capture: a context runs a plain inference before it captures a CUDA graph.
    if (auto e = impl->graph.deserialize(handle, j, true, false); e.is_bad()) return refused("stored plan", e);
    if (auto e = impl->graph.get_workspace_size(workspace); e.is_bad()) return refused("workspace size", e);
  } catch (const std::exception& e) {
    return unsupported(std::string("cuDNN SDPA: stored plan: ") + e.what());
  }
  if (workspace < 0 || static_cast<uint64_t>(workspace) > max_workspace)
    return unsupported("cuDNN SDPA: the stored plan needs " + std::to_string(workspace) +
                       " bytes of workspace, the context has " + std::to_string(max_workspace));
  std::shared_ptr<DnnSdpa> d(new DnnSdpa(std::move(impl)));
  d->workspace_ = static_cast<size_t>(workspace);
  ++g_restored;
  add_live(key, d);
  return d;
}

std::string DnnSdpa::stored_plan(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  const std::string key = device_key(s, max_workspace);
  {
    std::lock_guard<std::mutex> lock(g_text_mu);
    if (auto it = g_texts.find(key); it != g_texts.end()) return it->second;
  }
  auto d = get(handle, s, max_workspace);
  if (!d.ok()) return "";
  std::lock_guard<std::mutex> lock(g_text_mu);
  auto it = g_texts.find(key);  // get() may have built it, which kept it
  if (it == g_texts.end()) it = g_texts.emplace(key, serialize_plan((*d)->impl_->graph)).first;
  return it->second;
}

std::string DnnSdpa::plan_key(const DnnSdpaSpec& s) { return dnn_sdpa_plan_key(s, dnn_graph::plan_environment()); }
int64_t DnnSdpa::plans_built() { return g_built.load(); }
int64_t DnnSdpa::plans_restored() { return g_restored.load(); }

bool DnnSdpa::supported(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace) {
  if (!dnn_sdpa_declined(s).empty()) return false;
  const std::string key = device_key(s, max_workspace);
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
