// DnnConvGraph: the NHWC FusedConv graph (convolution forward into a float intermediate, then bias / residual /
// activation pointwise nodes) on cuDNN's backend API, the engine configs of its heuristics and the finalized plan
// of one of them.
#include "backends/cuda/dnn_conv.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <utility>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dnn_graph.h"

namespace kiln::cuda {
namespace {

using dnn_graph::Config;
using dnn_graph::Desc;
using dnn_graph::Owned;
using dnn_graph::set;

// Unique ids of the variant pack's tensors; intermediates count up from kFirstVirtual.
enum : int64_t { kUidX = 1, kUidW, kUidBias, kUidZ, kUidY, kFirstVirtual = 16 };

cudnnPointwiseMode_t act_mode(ops::Activation a) {
  switch (a) {
    case ops::Activation::kRelu:
      return CUDNN_POINTWISE_RELU_FWD;
    case ops::Activation::kSigmoid:
      return CUDNN_POINTWISE_SIGMOID_FWD;
    case ops::Activation::kSilu:
      return CUDNN_POINTWISE_SWISH_FWD;
    case ops::Activation::kGeluTanh:
      return CUDNN_POINTWISE_GELU_APPROX_TANH_FWD;
    default:
      return CUDNN_POINTWISE_GELU_FWD;  // kGeluErf; dnn_conv_declined keeps the others out
  }
}

Status tensor(Owned& o, Desc* d, int64_t uid, cudnnDataType_t dt, const DnnConvDims& t, bool is_virtual) {
  return dnn_graph::make_tensor(o, d, uid, dt, 4, t.dims, t.strides, static_cast<int64_t>(kDnnAlignment), is_virtual);
}

// The operation graph of s, finalized, and its heuristics' config lists, each in dnn_conv_config_order; all
// owned by o.
Status make_graph(Owned& o, cudnnHandle_t handle, const DnnConvSpec& s, std::vector<std::vector<Config>>* lists) {
  if (std::string why = dnn_conv_declined(s); !why.empty()) return unsupported("cuDNN conv graph: " + why);
  const DnnConvLayout l = dnn_conv_layout(s);
  const cudnnDataType_t io = s.dt == DataType::kBF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  Desc x = nullptr, w = nullptr, bias = nullptr, z = nullptr, y = nullptr;
  KILN_RETURN_IF_ERROR(tensor(o, &x, kUidX, io, l.x, false));
  KILN_RETURN_IF_ERROR(tensor(o, &w, kUidW, io, l.w, false));
  if (s.bias) KILN_RETURN_IF_ERROR(tensor(o, &bias, kUidBias, io, l.bias, false));
  if (s.res) KILN_RETURN_IF_ERROR(tensor(o, &z, kUidZ, io, l.y, false));
  KILN_RETURN_IF_ERROR(tensor(o, &y, kUidY, io, l.y, false));
  // FusedConv's epilogue, act(conv + B + Z).
  std::vector<dnn_graph::PointwiseStep> steps;
  if (s.bias) steps.push_back({CUDNN_POINTWISE_ADD, bias});
  if (s.res) steps.push_back({CUDNN_POINTWISE_ADD, z});
  if (s.act != ops::Activation::kNone) steps.push_back({act_mode(s.act), nullptr});
  int64_t next_uid = kFirstVirtual;
  auto intermediate = [&](Desc* d) { return tensor(o, d, next_uid++, f32, l.y, true); };
  // The convolution: Y itself when nothing follows, else a float intermediate.
  Desc cur = y;
  if (!steps.empty()) KILN_RETURN_IF_ERROR(intermediate(&cur));

  Desc conv = nullptr, conv_op = nullptr;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t nsp = 2;
  const int64_t pre[2] = {s.pad[0], s.pad[1]}, post[2] = {s.pad_end[0], s.pad_end[1]};
  const int64_t stride[2] = {s.stride[0], s.stride[1]}, dil[2] = {s.dil[0], s.dil[1]};
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv), "convolution descriptor");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32), "compute type");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode), "mode");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &nsp), "spatial dims");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil), "dilations");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride), "strides");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pre), "pre paddings");
  KILN_DNN_GRAPH_TRY(set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, post), "post paddings");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(conv), "convolution finalize");
  const float alpha = 1.0f, beta = 0.0f;
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, &conv_op), "conv operation");
  KILN_DNN_GRAPH_TRY(set(conv_op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x),
                     "conv x");
  KILN_DNN_GRAPH_TRY(set(conv_op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w),
                     "conv w");
  KILN_DNN_GRAPH_TRY(set(conv_op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cur),
                     "conv y");
  KILN_DNN_GRAPH_TRY(
      set(conv_op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv),
      "conv descriptor");
  KILN_DNN_GRAPH_TRY(set(conv_op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha),
                     "conv alpha");
  KILN_DNN_GRAPH_TRY(set(conv_op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta),
                     "conv beta");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(conv_op), "conv operation finalize");
  std::vector<Desc> ops = {conv_op};
  KILN_RETURN_IF_ERROR(dnn_graph::append_pointwise_chain(o, steps, cur, y, intermediate, &ops));
  Desc graph = nullptr;
  KILN_RETURN_IF_ERROR(dnn_graph::make_op_graph(o, handle, ops, &graph));
  std::vector<std::vector<Config>> heuristic;
  KILN_RETURN_IF_ERROR(dnn_graph::heuristic_configs(o, graph, &heuristic));
  for (const std::vector<Config>& list : heuristic) {
    std::vector<bool> rtc;
    for (const Config& c : list) rtc.push_back(c.rtc);
    std::vector<Config> ordered;
    for (size_t i : dnn_conv_config_order(rtc)) ordered.push_back(list[i]);
    lists->push_back(std::move(ordered));
  }
  return Status::Ok();
}

// A usable config: its list and its index in it.
using Pos = std::pair<int, int>;

// What the process knows of one problem: the usable configs found so far, in rank order, and whether the walk
// that found them saw every config.
struct Known {
  std::vector<Pos> usable;
  bool complete = false;
};

std::mutex g_mu;
std::map<std::string, Known>& known_problems() {
  static std::map<std::string, Known> m;
  return m;
}
// Weak: a plan lives as long as a layer holds it (a handle's address may be reused once its context is gone).
std::map<std::string, std::weak_ptr<dnn_graph::Plan>>& live_plans() {
  static std::map<std::string, std::weak_ptr<dnn_graph::Plan>> m;
  return m;
}

std::string problem_key(const DnnConvSpec& s, size_t max_workspace) {
  int device = -1;
  cudaGetDevice(&device);
  return std::to_string(device) + " " + dnn_conv_key(s) + " ws" + std::to_string(max_workspace);
}

void remember(const std::string& key, const Known& k) {
  std::lock_guard<std::mutex> lock(g_mu);
  Known& m = known_problems()[key];
  if (k.complete || k.usable.size() > m.usable.size()) m = k;
}

// Finalizes the configs in order (the first list that gives any plan is the only one walked) until `want`
// usable plans are found, recording where they are; the plan of rank `keep` (-1: none) is returned in *kept.
// At most kMaxAttempts configs are tried per problem: a failed runtime-fusion finalize can cost a compile too.
constexpr int kMaxAttempts = 4 * kDnnConvMaxTactics;
Known walk(cudnnHandle_t handle, const std::vector<std::vector<Config>>& lists, size_t max_workspace, int want,
           int keep, Desc* kept, size_t* kept_ws) {
  Known k;
  int attempts = 0;
  for (size_t li = 0; li < lists.size() && k.usable.empty(); ++li)
    for (size_t ci = 0; ci < lists[li].size(); ++ci) {
      if (static_cast<int>(k.usable.size()) >= want) return k;
      if (attempts++ >= kMaxAttempts) {
        k.complete = true;  // as far as this process will look
        return k;
      }
      size_t ws = 0;
      Desc plan = dnn_graph::finalize_plan(handle, lists[li][ci].cfg, max_workspace, &ws);
      if (!plan) continue;
      if (static_cast<int>(k.usable.size()) == keep) {
        *kept = plan;
        *kept_ws = ws;
      } else {
        cudnnBackendDestroyDescriptor(plan);
      }
      k.usable.emplace_back(static_cast<int>(li), static_cast<int>(ci));
    }
  k.complete = true;
  return k;
}

// The plan of rank `rank` for s, finalized on `handle`.
Result<std::shared_ptr<dnn_graph::Plan>> make_plan(cudnnHandle_t handle, const DnnConvSpec& s, int rank,
                                                   size_t max_workspace) {
  auto sp = std::make_shared<dnn_graph::Plan>();
  std::vector<std::vector<Config>> lists;
  sp->graph = std::make_shared<Owned>();
  KILN_RETURN_IF_ERROR(make_graph(*sp->graph, handle, s, &lists));
  const std::string key = problem_key(s, max_workspace);
  Known known;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (auto it = known_problems().find(key); it != known_problems().end()) known = it->second;
  }
  Pos at{-1, -1};
  if (rank < static_cast<int>(known.usable.size())) {
    // Where an earlier walk found this rank: finalize that config alone (one compile, not rank + 1).
    at = known.usable[static_cast<size_t>(rank)];
    if (at.first < static_cast<int>(lists.size()) && at.second < static_cast<int>(lists[at.first].size()))
      sp->d = dnn_graph::finalize_plan(handle, lists[at.first][at.second].cfg, max_workspace, &sp->workspace);
  } else if (known.complete) {
    return unsupported("cuDNN conv graph: " + std::to_string(known.usable.size()) +
                       " usable plans for this problem, no " + dnn_conv_tactic_name(rank));
  }
  if (!sp->d) {
    Known found = walk(handle, lists, max_workspace, rank + 1, rank, &sp->d, &sp->workspace);
    remember(key, found);
    if (!sp->d)
      return unsupported("cuDNN conv graph: " + std::to_string(found.usable.size()) +
                         " usable plans for this problem, no " + dnn_conv_tactic_name(rank));
    at = found.usable[static_cast<size_t>(rank)];
  }
  sp->rtc = lists[at.first][at.second].rtc;
  return sp;
}

}  // namespace

struct DnnConvGraph::Impl {
  std::shared_ptr<dnn_graph::Plan> plan;
  bool has_bias = false, has_res = false;
  dnn_graph::VariantPack pack;  // per layer: its own pointers
};

DnnConvGraph::DnnConvGraph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DnnConvGraph::~DnnConvGraph() = default;

namespace {

std::atomic<int64_t> g_restored{0};

// The key of the plan a layer on `handle` shares with the handle's other layers of the same problem and rank.
std::string live_key(cudnnContext* handle, const DnnConvSpec& s, int rank, size_t max_workspace) {
  char h[32];
  std::snprintf(h, sizeof(h), "%p", static_cast<void*>(handle));
  return std::string(h) + " r" + std::to_string(rank) + " " + problem_key(s, max_workspace);
}

// The handle's live plan under `key`, else the one `make` gives (then shared under the key).
Result<std::shared_ptr<dnn_graph::Plan>> shared_plan(
    const std::string& key, const std::function<Result<std::shared_ptr<dnn_graph::Plan>>()>& make) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (auto it = live_plans().find(key); it != live_plans().end())
      if (auto p = it->second.lock()) return p;
  }
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<dnn_graph::Plan> p, make());
  std::lock_guard<std::mutex> lock(g_mu);
  auto& live = live_plans();
  for (auto it = live.begin(); it != live.end();) it = it->second.expired() ? live.erase(it) : std::next(it);
  live[key] = p;
  return p;
}

}  // namespace

std::unique_ptr<DnnConvGraph> DnnConvGraph::wrap(std::shared_ptr<dnn_graph::Plan> plan, const DnnConvSpec& s) {
  auto impl = std::make_unique<Impl>();
  impl->has_bias = s.bias;
  impl->has_res = s.res;
  impl->plan = std::move(plan);
  std::unique_ptr<DnnConvGraph> d(new DnnConvGraph(std::move(impl)));
  d->workspace_ = d->impl_->plan->workspace;
  d->rtc_ = d->impl_->plan->rtc;
  return d;
}

Result<std::unique_ptr<DnnConvGraph>> DnnConvGraph::build(cudnnContext* handle, const DnnConvSpec& s, int rank,
                                                          size_t max_workspace) {
  if (rank < 0) return unsupported("cuDNN conv graph: negative rank");
  if (std::string why = dnn_conv_declined(s); !why.empty()) return unsupported("cuDNN conv graph: " + why);
  KILN_ASSIGN_OR_RETURN(
      std::shared_ptr<dnn_graph::Plan> plan,
      shared_plan(live_key(handle, s, rank, max_workspace), [&] { return make_plan(handle, s, rank, max_workspace); }));
  return wrap(std::move(plan), s);
}

Result<std::unique_ptr<DnnConvGraph>> DnnConvGraph::restore(cudnnContext* handle, const DnnConvSpec& s, int rank,
                                                            const std::string& json, size_t max_workspace) {
  if (rank < 0) return unsupported("cuDNN conv graph: negative rank");
  if (std::string why = dnn_conv_declined(s); !why.empty()) return unsupported("cuDNN conv graph: " + why);
  auto from_json = [&]() -> Result<std::shared_ptr<dnn_graph::Plan>> {
    auto sp = std::make_shared<dnn_graph::Plan>();
    KILN_RETURN_IF_ERROR(dnn_graph::restore_plan(handle, json, max_workspace, &sp->d, &sp->workspace));
    ++g_restored;
    return sp;
  };
  KILN_ASSIGN_OR_RETURN(std::shared_ptr<dnn_graph::Plan> plan,
                        shared_plan(live_key(handle, s, rank, max_workspace), from_json));
  return wrap(std::move(plan), s);
}

std::string DnnConvGraph::plan_key(const DnnConvSpec& s, int rank) {
  return dnn_conv_plan_key(s, rank, dnn_graph::plan_environment());
}

int64_t DnnConvGraph::plans_restored() { return g_restored.load(); }

std::string DnnConvGraph::json() const { return dnn_graph::plan_json(impl_->plan->d); }

int DnnConvGraph::count_usable(cudnnContext* handle, const DnnConvSpec& s, int max, size_t max_workspace) {
  if (max <= 0 || !dnn_conv_declined(s).empty()) return 0;
  // Remembered per problem and device: a network repeats its layers (resnet50's layer3 has six identical 3x3
  // convolutions), and each count may compile up to `max` kernels.
  const std::string key = problem_key(s, max_workspace);
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (auto it = known_problems().find(key); it != known_problems().end())
      if (it->second.complete || static_cast<int>(it->second.usable.size()) >= max)
        return std::min(max, static_cast<int>(it->second.usable.size()));
  }
  Owned graph;
  std::vector<std::vector<Config>> lists;
  Known found;
  if (make_graph(graph, handle, s, &lists).ok()) {
    found = walk(handle, lists, max_workspace, max, -1, nullptr, nullptr);
  } else {
    found.complete = true;  // refused: nothing to offer, and nothing to try again
  }
  remember(key, found);
  return std::min(max, static_cast<int>(found.usable.size()));
}

Status DnnConvGraph::run(cudnnContext* handle, void* workspace, const void* x, const void* w, const void* bias,
                         const void* z, void* y) {
  Impl& m = *impl_;
  int64_t uids[5];
  void* ptrs[5];
  int n = 0;
  auto add = [&](int64_t uid, const void* p) {
    uids[n] = uid;
    ptrs[n++] = const_cast<void*>(p);
  };
  add(kUidX, x);
  add(kUidW, w);
  if (m.has_bias) add(kUidBias, bias);
  if (m.has_res) add(kUidZ, z);
  add(kUidY, y);
  KILN_RETURN_IF_ERROR(m.pack.bind(n, uids, ptrs, workspace));
  KILN_CUDNN_CHECK(cudnnBackendExecute(handle, m.plan->d, m.pack.get()));
  return Status::Ok();
}

}  // namespace kiln::cuda
