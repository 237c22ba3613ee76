// The shared pieces of Kiln's cuDNN backend-API graphs (dnn_graph.h).
#include "backends/cuda/dnn_graph.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "backends/cuda/cuda_kernel.h"

namespace kiln::cuda::dnn_graph {

Status refused(cudnnStatus_t e, const std::string& what) {
  return unsupported("cuDNN graph: " + what + ": " + cudnnGetErrorString(e));
}

Owned::~Owned() {
  for (auto it = v.rbegin(); it != v.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
}

cudnnStatus_t Owned::make(cudnnBackendDescriptorType_t t, Desc* d) {
  *d = nullptr;
  cudnnStatus_t s = cudnnBackendCreateDescriptor(t, d);
  if (s == CUDNN_STATUS_SUCCESS) v.push_back(*d);
  return s;
}

Status make_tensor(Owned& o, Desc* d, int64_t uid, cudnnDataType_t dt, int rank, const int64_t* dims,
                   const int64_t* strides, int64_t align, bool is_virtual) {
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, d), "tensor descriptor");
  const bool virt = is_virtual;
  KILN_DNN_GRAPH_TRY(set(*d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), "tensor type");
  KILN_DNN_GRAPH_TRY(set(*d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, rank, dims), "tensor dimensions");
  KILN_DNN_GRAPH_TRY(set(*d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, rank, strides), "tensor strides");
  KILN_DNN_GRAPH_TRY(set(*d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor id");
  KILN_DNN_GRAPH_TRY(set(*d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), "tensor alignment");
  KILN_DNN_GRAPH_TRY(set(*d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt), "tensor virtual");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(*d), "tensor finalize");
  return Status::Ok();
}

Status make_pointwise(Owned& o, Desc* op, cudnnPointwiseMode_t mode, Desc x, Desc b, Desc y) {
  Desc pw = nullptr;
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw), "pointwise descriptor");
  KILN_DNN_GRAPH_TRY(set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode), "pointwise mode");
  KILN_DNN_GRAPH_TRY(set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec), "pointwise precision");
  if (mode == CUDNN_POINTWISE_SWISH_FWD) {
    // cuDNN's swish is x * sigmoid(beta * x); beta 1 is SiLU (set explicitly rather than trusting a default).
    const float beta = 1.0f;
    KILN_DNN_GRAPH_TRY(set(pw, CUDNN_ATTR_POINTWISE_SWISH_BETA, CUDNN_TYPE_FLOAT, 1, &beta), "swish beta");
  }
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(pw), "pointwise finalize");
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op), "pointwise operation");
  KILN_DNN_GRAPH_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw),
                     "pointwise op descriptor");
  KILN_DNN_GRAPH_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x),
                     "pointwise x");
  if (b)
    KILN_DNN_GRAPH_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b),
                       "pointwise b");
  KILN_DNN_GRAPH_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y),
                     "pointwise y");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(*op), "pointwise op finalize");
  return Status::Ok();
}

Status append_pointwise_chain(Owned& o, const std::vector<PointwiseStep>& steps, Desc cur, Desc y,
                              const std::function<Status(Desc*)>& intermediate, std::vector<Desc>* ops) {
  for (size_t i = 0; i < steps.size(); ++i) {
    Desc out = y;
    if (i + 1 < steps.size()) KILN_RETURN_IF_ERROR(intermediate(&out));
    Desc op = nullptr;
    KILN_RETURN_IF_ERROR(make_pointwise(o, &op, steps[i].mode, cur, steps[i].operand, out));
    ops->push_back(op);
    cur = out;
  }
  return Status::Ok();
}

Status make_op_graph(Owned& o, cudnnHandle_t handle, const std::vector<Desc>& ops, Desc* graph) {
  KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, graph), "operation graph");
  KILN_DNN_GRAPH_TRY(set(*graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                         static_cast<int64_t>(ops.size()), ops.data()),
                     "graph operations");
  KILN_DNN_GRAPH_TRY(set(*graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle), "graph handle");
  KILN_DNN_GRAPH_TRY(cudnnBackendFinalize(*graph), "graph finalize");
  return Status::Ok();
}

bool runtime_compiled(Desc cfg) {
  Desc engine = nullptr;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) != CUDNN_STATUS_SUCCESS) return false;
  int64_t got = 0;
  bool rtc = false;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &engine) ==
          CUDNN_STATUS_SUCCESS &&
      got == 1) {
    cudnnBackendBehaviorNote_t notes[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t n = 0;
    if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, notes) == CUDNN_STATUS_SUCCESS)
      for (int64_t i = 0; i < std::min<int64_t>(n, CUDNN_BEHAVIOR_NOTE_TYPE_COUNT); ++i)
        rtc = rtc || notes[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
  }
  cudnnBackendDestroyDescriptor(engine);
  return rtc;
}

Status heuristic_configs(Owned& o, Desc graph, std::vector<std::vector<Config>>* lists) {
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Desc heur = nullptr;
    if (o.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur) != CUDNN_STATUS_SUCCESS ||
        set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph) !=
            CUDNN_STATUS_SUCCESS ||
        set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS)
      continue;
    int64_t count = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) != CUDNN_STATUS_SUCCESS ||
        count <= 0)
      continue;
    std::vector<Desc> cfgs(static_cast<size_t>(count), nullptr);
    for (Desc& c : cfgs) KILN_DNN_GRAPH_TRY(o.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c), "engine config");
    int64_t got = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                 cfgs.data()) != CUDNN_STATUS_SUCCESS ||
        got <= 0)
      continue;
    std::vector<Config> list;
    for (int64_t i = 0; i < std::min(got, count); ++i) list.push_back({cfgs[i], runtime_compiled(cfgs[i])});
    lists->push_back(std::move(list));
  }
  if (lists->empty()) return unsupported("cuDNN graph: the heuristics offer no engine");
  return Status::Ok();
}

Desc finalize_plan(cudnnHandle_t handle, Desc cfg, size_t max_workspace, size_t* workspace) {
  Desc plan = nullptr;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS)
    return nullptr;
  int64_t ws = -1, got = 0;
  const bool ok = set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) == CUDNN_STATUS_SUCCESS &&
                  set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg) ==
                      CUDNN_STATUS_SUCCESS &&
                  cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
                  cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got,
                                           &ws) == CUDNN_STATUS_SUCCESS &&
                  ws >= 0 && static_cast<uint64_t>(ws) <= max_workspace;
  if (!ok) {
    cudnnBackendDestroyDescriptor(plan);
    return nullptr;
  }
  *workspace = static_cast<size_t>(ws);
  return plan;
}

bool plan_fits(Desc plan, size_t max_workspace, size_t* workspace) {
  int64_t ws = -1, got = 0;
  if (cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &ws) !=
          CUDNN_STATUS_SUCCESS ||
      ws < 0 || static_cast<uint64_t>(ws) > max_workspace)
    return false;
  *workspace = static_cast<size_t>(ws);
  return true;
}

std::string plan_json(Desc plan) {
  int64_t n = 0;
  if (cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0, &n, nullptr) !=
          CUDNN_STATUS_SUCCESS ||
      n <= 0)
    return "";
  std::string text(static_cast<size_t>(n), '\0');
  if (cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, n, &n,
                               text.data()) != CUDNN_STATUS_SUCCESS)
    return "";
  text.resize(std::min(text.size(), static_cast<size_t>(std::max<int64_t>(n, 0))));
  while (!text.empty() && text.back() == '\0') text.pop_back();
  return text;
}

Status restore_plan(cudnnHandle_t handle, const std::string& json, size_t max_workspace, Desc* plan,
                    size_t* workspace) {
  *plan = nullptr;
  if (json.empty()) return unsupported("cuDNN graph: the stored plan is empty");
  Desc d = nullptr;
  KILN_DNN_GRAPH_TRY(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &d), "plan descriptor");
  // The text as cuDNN wrote it (plan_json drops the terminating NUL; cuDNN takes the length).
  Status st = Status::Ok();
  if (cudnnStatus_t e = set(d, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                            static_cast<int64_t>(json.size()), json.data());
      e != CUDNN_STATUS_SUCCESS)
    st = refused(e, "stored plan text");
  else if (cudnnStatus_t e2 = set(d, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
           e2 != CUDNN_STATUS_SUCCESS)
    st = refused(e2, "plan handle");
  else if (cudnnStatus_t e3 = cudnnBackendFinalize(d); e3 != CUDNN_STATUS_SUCCESS)
    st = refused(e3, "restoring the stored plan");
  else if (!plan_fits(d, max_workspace, workspace))
    st = unsupported("cuDNN graph: the stored plan needs more than " + std::to_string(max_workspace) +
                     " bytes of workspace");
  if (!st.ok()) {
    cudnnBackendDestroyDescriptor(d);
    return st;
  }
  *plan = d;
  return Status::Ok();
}

std::string plan_environment() {
  int device = -1;
  cudaGetDevice(&device);
  static std::mutex mu;
  static std::map<int, std::string> names;
  std::lock_guard<std::mutex> lock(mu);
  auto it = names.find(device);
  if (it == names.end()) {
    cudaDeviceProp p{};
    std::string gpu = "unknown GPU";
    if (cudaGetDeviceProperties(&p, device) == cudaSuccess)
      gpu = std::string(p.name) + " sm_" + std::to_string(p.major) + std::to_string(p.minor) + " " +
            std::to_string(p.multiProcessorCount) + " SMs";
    else
      cudaGetLastError();
    it = names.emplace(device, gpu).first;
  }
  return "cudnn " + std::to_string(cudnnGetVersion()) + " | " + it->second;
}

VariantPack::~VariantPack() {
  if (pack_) cudnnBackendDestroyDescriptor(pack_);
}

Status VariantPack::bind(int n, const int64_t* uids, void* const* ptrs, void* workspace) {
  if (n < 0 || n > kMaxTensors) return internal_error("cuDNN variant pack: too many tensors");
  std::array<void*, kMaxTensors + 1> p{};
  std::array<int64_t, kMaxTensors> u{};
  std::copy(ptrs, ptrs + n, p.begin());
  std::copy(uids, uids + n, u.begin());
  p[kMaxTensors] = workspace;
  if (pack_ && n == n_ && p == ptrs_ && u == uids_) return Status::Ok();
  if (pack_) cudnnBackendDestroyDescriptor(pack_);
  pack_ = nullptr;
  n_ = -1;
  Desc d = nullptr;
  KILN_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &d));
  pack_ = d;
  KILN_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids));
  KILN_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs));
  KILN_CUDNN_CHECK(cudnnBackendSetAttribute(d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace));
  KILN_CUDNN_CHECK(cudnnBackendFinalize(d));
  ptrs_ = p;
  uids_ = u;
  n_ = n;
  return Status::Ok();
}

}  // namespace kiln::cuda::dnn_graph
