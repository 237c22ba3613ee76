// DnnMatmul: the FusedMatMul graph (matmul, then bias / residual / activation pointwise nodes on float
// intermediates) on cuDNN's backend API, its heuristic's engine configs (mode A, else the fallback list) and the
// finalized plan of one of them.
#include "backends/cuda/dnn_matmul.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dnn_graph.h"

namespace kiln::cuda {
namespace {

using dnn_graph::Desc;
using dnn_graph::Owned;
using dnn_graph::set;

cudnnDataType_t dnn_dtype(DataType dt) { return dt == DataType::kBF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF; }

// Unique ids of the variant pack's tensors; intermediates count up from kFirstVirtual.
enum : int64_t { kUidA = 1, kUidB, kUidBias, kUidRes, kUidY, kFirstVirtual = 16 };

Status make_tensor(Owned& o, Desc* d, int64_t uid, cudnnDataType_t dt, const DnnDims& t, bool is_virtual) {
  return dnn_graph::make_tensor(o, d, uid, dt, 3, t.dims, t.strides, static_cast<int64_t>(kDnnAlignment), is_virtual);
}

cudnnPointwiseMode_t act_mode(const std::string& act) {
  if (act == "relu") return CUDNN_POINTWISE_RELU_FWD;
  if (act == "gelu_tanh") return CUDNN_POINTWISE_GELU_APPROX_TANH_FWD;
  if (act == "silu") return CUDNN_POINTWISE_SWISH_FWD;
  if (act == "sigmoid") return CUDNN_POINTWISE_SIGMOID_FWD;
  return CUDNN_POINTWISE_GELU_FWD;  // the erf form
}

// The operation graph of s, finalized, with the engine configs of cuDNN's heuristic: mode A's list, then the
// fallback list (the walk below takes the latter only where no config of mode A gives a plan); all owned by o.
Status make_graph(Owned& o, cudnnHandle_t handle, const DnnMatmulSpec& s, std::vector<std::vector<Desc>>* lists) {
  if (std::string why = dnn_matmul_declined(s, 1, 1); !why.empty()) return unsupported("cuDNN matmul: " + why);
  const DnnMatmulLayout l = dnn_matmul_layout(s.m, s.n, s.k, s.trans_b);
  const cudnnDataType_t io = dnn_dtype(s.dt), f32 = CUDNN_DATA_FLOAT;
  Desc a = nullptr, b = nullptr, bias = nullptr, res = nullptr, y = nullptr;
  KILN_RETURN_IF_ERROR(make_tensor(o, &a, kUidA, io, l.a, false));
  KILN_RETURN_IF_ERROR(make_tensor(o, &b, kUidB, io, l.b, false));
  if (s.bias) KILN_RETURN_IF_ERROR(make_tensor(o, &bias, kUidBias, io, l.bias, false));
  if (s.res) KILN_RETURN_IF_ERROR(make_tensor(o, &res, kUidRes, io, l.y, false));
  KILN_RETURN_IF_ERROR(make_tensor(o, &y, kUidY, io, l.y, false));
  // The pointwise chain after the product, in FusedMatMul's order.
  std::vector<dnn_graph::PointwiseStep> steps;
  if (s.bias) steps.push_back({CUDNN_POINTWISE_ADD, bias});
  if (s.res && s.residual_first) steps.push_back({CUDNN_POINTWISE_ADD, res});
  if (s.act != "none") steps.push_back({act_mode(s.act), nullptr});
  if (s.res && !s.residual_first) steps.push_back({CUDNN_POINTWISE_ADD, res});
  int64_t next_uid = kFirstVirtual;
  auto intermediate = [&](Desc* d) { return make_tensor(o, d, next_uid++, f32, l.y, true); };
  // The product: Y itself when nothing follows, else a float intermediate.
  Desc cur = y;
  if (!steps.empty()) KILN_RETURN_IF_ERROR(intermediate(&cur));
  std::vector<Desc> ops;
  Desc mm = nullptr, mm_op = nullptr;
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm), "matmul descriptor");
  KILN_DNN_GRAPH_TRY(set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32), "matmul compute type");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(mm), "matmul finalize");
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, &mm_op), "matmul operation");
  KILN_DNN_GRAPH_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a), "matmul a");
  KILN_DNN_GRAPH_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b), "matmul b");
  KILN_DNN_GRAPH_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cur), "matmul c");
  KILN_DNN_GRAPH_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm),
                     "matmul desc");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(mm_op), "matmul op finalize");
  ops.push_back(mm_op);
  KILN_RETURN_IF_ERROR(dnn_graph::append_pointwise_chain(o, steps, cur, y, intermediate, &ops));
  Desc graph = nullptr;
  KILN_RETURN_IF_ERROR(dnn_graph::make_op_graph(o, handle, ops, &graph));
  std::vector<std::vector<dnn_graph::Config>> configs;
  KILN_RETURN_IF_ERROR(dnn_graph::heuristic_configs(o, graph, &configs));
  for (const auto& list : configs) {
    lists->emplace_back();
    for (const dnn_graph::Config& c : list) lists->back().push_back(c.cfg);
  }
  return Status::Ok();
}

std::atomic<int64_t> g_finalized{0}, g_restored{0};

// The plan of one engine config on `handle` (one runtime compilation), or null when it does not finalize or
// needs more than max_workspace.
std::shared_ptr<dnn_graph::Plan> finalize_config(cudnnHandle_t handle, Desc cfg, size_t max_workspace,
                                                 std::shared_ptr<Owned> graph) {
  auto p = std::make_shared<dnn_graph::Plan>();
  p->graph = std::move(graph);
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p->d) != CUDNN_STATUS_SUCCESS) {
    p->d = nullptr;
    return nullptr;
  }
  if (set(p->d, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) != CUDNN_STATUS_SUCCESS ||
      set(p->d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg) !=
          CUDNN_STATUS_SUCCESS)
    return nullptr;
  ++g_finalized;
  if (cudnnBackendFinalize(p->d) != CUDNN_STATUS_SUCCESS || !dnn_graph::plan_fits(p->d, max_workspace, &p->workspace))
    return nullptr;
  return p;
}

// A plan deserialized from `json` on `handle` (no compile), or why not.
Result<std::shared_ptr<dnn_graph::Plan>> plan_from_json(cudnnHandle_t handle, const std::string& json,
                                                        size_t max_workspace) {
  auto p = std::make_shared<dnn_graph::Plan>();
  KILN_RETURN_IF_ERROR(dnn_graph::restore_plan(handle, json, max_workspace, &p->d, &p->workspace));
  ++g_restored;
  return p;
}

// The walk over one problem's engine configs on one device, for the process: the positions (list, config) of
// the configs that gave usable plans, in order (tactic rank r is usable[r]), and where the walk resumes. Only the
// first list that gives any plan is walked (mode A's, else the fallback list), as before. `json` keeps each
// usable plan serialized, so that another handle restores it rather than compiling it again.
struct Walk {
  std::vector<std::pair<size_t, size_t>> usable;
  std::vector<std::string> json;  // by rank; empty where cuDNN cannot serialize
  size_t list = 0, cfg = 0;
  bool done = false;
};

// One problem on one handle: the graph with its heuristic configs (made on first need) and the plans finalized
// or restored on this handle, by rank.
struct HandleProblem {
  std::shared_ptr<Owned> graph;
  std::vector<std::vector<Desc>> lists;
  Status graph_status = Status::Ok();
  bool graph_tried = false;
  std::map<int, std::shared_ptr<dnn_graph::Plan>> plans;
};

struct Registry {
  std::mutex mu;                      // held while compiling: builds of one process compile one plan at a time
  std::map<std::string, Walk> walks;  // by device, problem and workspace limit
  std::map<std::pair<cudnnHandle_t, std::string>, HandleProblem> handles;  // by handle, problem and workspace
};

// Never destroyed: handles still alive at exit keep their plans, and no static destruction order matters.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

std::string problem_key(const DnnMatmulSpec& s, size_t max_workspace) {
  return dnn_matmul_problem_key(s) + " ws" + std::to_string(max_workspace);
}

Walk& walk_of(Registry& r, const std::string& key) {
  int device = -1;
  cudaGetDevice(&device);
  return r.walks[std::to_string(device) + " " + key];
}

Status ensure_graph(HandleProblem& hp, cudnnHandle_t handle, const DnnMatmulSpec& s) {
  if (!hp.graph_tried) {
    hp.graph_tried = true;
    auto o = std::make_shared<Owned>();
    hp.graph_status = make_graph(*o, handle, s, &hp.lists);
    if (hp.graph_status.ok())
      hp.graph = std::move(o);
    else
      hp.lists.clear();
  }
  return hp.graph_status;
}

// Continues the walk on this handle until it has `want` usable plans or no config is left; the plans it
// finalizes are kept with the handle under their ranks.
void extend(Walk& w, HandleProblem& hp, cudnnHandle_t handle, size_t max_workspace, size_t want) {
  while (!w.done && w.usable.size() < want) {
    if (w.list >= hp.lists.size()) {
      w.done = true;
    } else if (w.cfg >= hp.lists[w.list].size()) {
      if (!w.usable.empty()) {
        w.done = true;
      } else {
        ++w.list;
        w.cfg = 0;
      }
    } else {
      if (auto p = finalize_config(handle, hp.lists[w.list][w.cfg], max_workspace, hp.graph)) {
        w.json.push_back(dnn_graph::plan_json(p->d));
        hp.plans[static_cast<int>(w.usable.size())] = std::move(p);
        w.usable.emplace_back(w.list, w.cfg);
      }
      ++w.cfg;
    }
  }
}

}  // namespace

struct DnnMatmul::Impl {
  std::shared_ptr<dnn_graph::Plan> plan;
  bool has_bias = false, has_res = false;
  dnn_graph::VariantPack pack;
};

DnnMatmul::DnnMatmul(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DnnMatmul::~DnnMatmul() = default;

std::unique_ptr<DnnMatmul> DnnMatmul::wrap(std::shared_ptr<dnn_graph::Plan> plan, const DnnMatmulSpec& s) {
  auto impl = std::make_unique<Impl>();
  impl->has_bias = s.bias;
  impl->has_res = s.res;
  const size_t ws = plan->workspace;
  impl->plan = std::move(plan);
  std::unique_ptr<DnnMatmul> d(new DnnMatmul(std::move(impl)));
  d->workspace_ = ws;
  return d;
}

Result<std::unique_ptr<DnnMatmul>> DnnMatmul::build(cudnnContext* handle, const DnnMatmulSpec& s, int rank,
                                                    size_t max_workspace) {
  if (rank < 0) return unsupported("cuDNN matmul: no tactic of rank " + std::to_string(rank));
  if (std::string why = dnn_matmul_declined(s, 1, 1); !why.empty()) return unsupported("cuDNN matmul: " + why);
  Registry& r = registry();
  const std::string key = problem_key(s, max_workspace);
  std::lock_guard<std::mutex> lock(r.mu);
  HandleProblem& hp = r.handles[{handle, key}];
  if (auto it = hp.plans.find(rank); it != hp.plans.end()) return wrap(it->second, s);
  Walk& w = walk_of(r, key);
  if (static_cast<size_t>(rank) < w.usable.size()) {
    // Found usable by an earlier walk (another handle): restored from its serialized form, else that config
    // alone finalized.
    if (!w.json[rank].empty()) {
      auto p = plan_from_json(handle, w.json[rank], max_workspace);
      if (p.ok()) {
        hp.plans[rank] = *p;
        return wrap(std::move(*p), s);
      }
    }
    KILN_RETURN_IF_ERROR(ensure_graph(hp, handle, s));
    const auto [l, c] = w.usable[rank];
    if (l < hp.lists.size() && c < hp.lists[l].size())
      if (auto p = finalize_config(handle, hp.lists[l][c], max_workspace, hp.graph)) {
        hp.plans[rank] = p;
        return wrap(std::move(p), s);
      }
    return unsupported("cuDNN matmul: the engine config of " + dnn_matmul_tactic_name(rank) +
                       " does not finalize on this handle");
  }
  KILN_RETURN_IF_ERROR(ensure_graph(hp, handle, s));
  extend(w, hp, handle, max_workspace, static_cast<size_t>(rank) + 1);
  if (auto it = hp.plans.find(rank); it != hp.plans.end()) return wrap(it->second, s);
  return unsupported("cuDNN matmul: " + std::to_string(w.usable.size()) + " usable plans for this graph, no " +
                     dnn_matmul_tactic_name(rank));
}

Result<std::unique_ptr<DnnMatmul>> DnnMatmul::restore(cudnnContext* handle, const DnnMatmulSpec& s, int rank,
                                                      const std::string& json, size_t max_workspace) {
  Registry& r = registry();
  const std::string key = problem_key(s, max_workspace);
  std::lock_guard<std::mutex> lock(r.mu);
  HandleProblem& hp = r.handles[{handle, key}];
  if (auto it = hp.plans.find(rank); it != hp.plans.end()) return wrap(it->second, s);
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<dnn_graph::Plan> p, plan_from_json(handle, json, max_workspace));
  hp.plans[rank] = p;
  return wrap(std::move(p), s);
}

int DnnMatmul::count_usable(cudnnContext* handle, const DnnMatmulSpec& s, int max, size_t max_workspace) {
  if (max <= 0 || !dnn_matmul_declined(s, 1, 1).empty()) return 0;
  Registry& r = registry();
  const std::string key = problem_key(s, max_workspace);
  std::lock_guard<std::mutex> lock(r.mu);
  Walk& w = walk_of(r, key);
  if (!w.done && w.usable.size() < static_cast<size_t>(max)) {
    HandleProblem& hp = r.handles[{handle, key}];
    if (ensure_graph(hp, handle, s).ok())
      extend(w, hp, handle, max_workspace, static_cast<size_t>(max));
    else
      w.done = true;  // cuDNN refuses the graph: nothing to offer, and nothing to try again
  }
  return static_cast<int>(std::min(w.usable.size(), static_cast<size_t>(max)));
}

void DnnMatmul::release_handle(cudnnContext* handle) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (auto it = r.handles.begin(); it != r.handles.end();)
    it = it->first.first == handle ? r.handles.erase(it) : std::next(it);
}

std::string DnnMatmul::plan_key(const DnnMatmulSpec& s, int rank) {
  return dnn_matmul_plan_key(s, rank, dnn_graph::plan_environment());
}

int64_t DnnMatmul::plans_finalized() { return g_finalized.load(); }
int64_t DnnMatmul::plans_restored() { return g_restored.load(); }

std::string DnnMatmul::json() const { return dnn_graph::plan_json(impl_->plan->d); }

Status DnnMatmul::run(cudnnContext* handle, void* workspace, const void* a, const void* b, const void* bias,
                      const void* res, void* y) {
  Impl& m = *impl_;
  int64_t uids[5] = {kUidA, kUidB};
  void* data[5] = {const_cast<void*>(a), const_cast<void*>(b)};
  int n = 2;
  if (m.has_bias) uids[n] = kUidBias, data[n++] = const_cast<void*>(bias);
  if (m.has_res) uids[n] = kUidRes, data[n++] = const_cast<void*>(res);
  uids[n] = kUidY, data[n++] = y;
  KILN_RETURN_IF_ERROR(m.pack.bind(n, uids, data, workspace));
  KILN_CUDNN_CHECK(cudnnBackendExecute(handle, m.plan->d, m.pack.get()));
  return Status::Ok();
}

}  // namespace kiln::cuda
