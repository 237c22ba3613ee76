// DnnMatmul: the FusedMatMul graph (matmul, then bias / residual / activation pointwise nodes on float
// intermediates) on cuDNN's backend API, its heuristic's engine configs (mode A, else the fallback list) and the
// finalized plan of one of them.
#include "backends/cuda/dnn_matmul.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
#include <mutex>

#include "backends/cuda/cuda_kernel.h"

namespace kiln::cuda {
namespace {

using Desc = cudnnBackendDescriptor_t;

// Every failure while building is cuDNN declining the problem: the tactic is then not offered (never an error).
Status refused(cudnnStatus_t e, const char* what) {
  return unsupported(std::string("cuDNN matmul graph: ") + what + ": " + cudnnGetErrorString(e));
}

#define KILN_DNN_TRY(call, what)                                        \
  do {                                                                  \
    cudnnStatus_t kiln_s_ = (call);                                     \
    if (kiln_s_ != CUDNN_STATUS_SUCCESS) return refused(kiln_s_, what); \
  } while (0)

cudnnDataType_t dnn_dtype(DataType dt) { return dt == DataType::kBF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF; }

// Descriptors destroyed together, newest first (an operation before its tensors, the graph before its operations).
struct Owned {
  std::vector<Desc> v;
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() {
    for (auto it = v.rbegin(); it != v.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  }
  cudnnStatus_t make(cudnnBackendDescriptorType_t t, Desc* d) {
    *d = nullptr;
    cudnnStatus_t s = cudnnBackendCreateDescriptor(t, d);
    if (s == CUDNN_STATUS_SUCCESS) v.push_back(*d);
    return s;
  }
};

cudnnStatus_t set(Desc d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                  const void* value) {
  return cudnnBackendSetAttribute(d, name, type, count, value);
}

// Unique ids of the variant pack's tensors; intermediates count up from kFirstVirtual.
enum : int64_t { kUidA = 1, kUidB, kUidBias, kUidRes, kUidY, kFirstVirtual = 16 };

Status make_tensor(Owned& o, Desc* d, int64_t uid, cudnnDataType_t dt, const DnnDims& t, bool is_virtual) {
  KILN_DNN_TRY(o.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, d), "tensor descriptor");
  const int64_t align = static_cast<int64_t>(DnnMatmul::kAlignment);
  const bool virt = is_virtual;
  KILN_DNN_TRY(set(*d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt), "tensor type");
  KILN_DNN_TRY(set(*d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 3, t.dims), "tensor dimensions");
  KILN_DNN_TRY(set(*d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 3, t.strides), "tensor strides");
  KILN_DNN_TRY(set(*d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor id");
  KILN_DNN_TRY(set(*d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align), "tensor alignment");
  KILN_DNN_TRY(set(*d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt), "tensor virtual");
  KILN_DNN_TRY(cudnnBackendFinalize(*d), "tensor finalize");
  return Status::Ok();
}

// y = mode(x) or mode(x, b) in float.
Status make_pointwise(Owned& o, Desc* op, cudnnPointwiseMode_t mode, Desc x, Desc b, Desc y) {
  Desc pw = nullptr;
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  KILN_DNN_TRY(o.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw), "pointwise descriptor");
  KILN_DNN_TRY(set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode), "pointwise mode");
  KILN_DNN_TRY(set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec), "pointwise precision");
  if (mode == CUDNN_POINTWISE_SWISH_FWD) {
    // cuDNN's swish is x * sigmoid(beta * x); beta 1 is SiLU (set explicitly rather than trusting a default).
    const float beta = 1.0f;
    KILN_DNN_TRY(set(pw, CUDNN_ATTR_POINTWISE_SWISH_BETA, CUDNN_TYPE_FLOAT, 1, &beta), "swish beta");
  }
  KILN_DNN_TRY(cudnnBackendFinalize(pw), "pointwise finalize");
  KILN_DNN_TRY(o.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op), "pointwise operation");
  KILN_DNN_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw),
               "pointwise op descriptor");
  KILN_DNN_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x), "pointwise x");
  if (b)
    KILN_DNN_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b), "pointwise b");
  KILN_DNN_TRY(set(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y), "pointwise y");
  KILN_DNN_TRY(cudnnBackendFinalize(*op), "pointwise op finalize");
  return Status::Ok();
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
  // The pointwise chain after the product, in FusedMatMul's order; each step's second operand or none.
  struct Step {
    cudnnPointwiseMode_t mode;
    int64_t operand;  // a uid, 0: unary
  };
  std::vector<Step> steps;
  if (s.bias) steps.push_back({CUDNN_POINTWISE_ADD, kUidBias});
  if (s.res && s.residual_first) steps.push_back({CUDNN_POINTWISE_ADD, kUidRes});
  if (s.act != "none") steps.push_back({act_mode(s.act), 0});
  if (s.res && !s.residual_first) steps.push_back({CUDNN_POINTWISE_ADD, kUidRes});

  Desc a = nullptr, b = nullptr, bias = nullptr, res = nullptr, y = nullptr;
  KILN_RETURN_IF_ERROR(make_tensor(o, &a, kUidA, io, l.a, false));
  KILN_RETURN_IF_ERROR(make_tensor(o, &b, kUidB, io, l.b, false));
  if (s.bias) KILN_RETURN_IF_ERROR(make_tensor(o, &bias, kUidBias, io, l.bias, false));
  if (s.res) KILN_RETURN_IF_ERROR(make_tensor(o, &res, kUidRes, io, l.y, false));
  KILN_RETURN_IF_ERROR(make_tensor(o, &y, kUidY, io, l.y, false));
  int64_t next_uid = kFirstVirtual;
  // The product: Y itself when nothing follows, else a float intermediate.
  Desc cur = y;
  if (!steps.empty()) KILN_RETURN_IF_ERROR(make_tensor(o, &cur, next_uid++, f32, l.y, true));
  std::vector<Desc> ops;
  Desc mm = nullptr, mm_op = nullptr;
  KILN_DNN_TRY(o.make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm), "matmul descriptor");
  KILN_DNN_TRY(set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32), "matmul compute type");
  KILN_DNN_TRY(cudnnBackendFinalize(mm), "matmul finalize");
  KILN_DNN_TRY(o.make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, &mm_op), "matmul operation");
  KILN_DNN_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a), "matmul a");
  KILN_DNN_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b), "matmul b");
  KILN_DNN_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cur), "matmul c");
  KILN_DNN_TRY(set(mm_op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm), "matmul desc");
  KILN_DNN_TRY(cudnnBackendFinalize(mm_op), "matmul op finalize");
  ops.push_back(mm_op);
  for (size_t i = 0; i < steps.size(); ++i) {
    Desc out = y;
    if (i + 1 < steps.size()) KILN_RETURN_IF_ERROR(make_tensor(o, &out, next_uid++, f32, l.y, true));
    Desc operand = steps[i].operand == kUidBias ? bias : steps[i].operand == kUidRes ? res : nullptr;
    Desc op = nullptr;
    KILN_RETURN_IF_ERROR(make_pointwise(o, &op, steps[i].mode, cur, operand, out));
    ops.push_back(op);
    cur = out;
  }
  Desc graph = nullptr;
  KILN_DNN_TRY(o.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph), "operation graph");
  KILN_DNN_TRY(set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                   static_cast<int64_t>(ops.size()), ops.data()),
               "graph operations");
  KILN_DNN_TRY(set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle), "graph handle");
  KILN_DNN_TRY(cudnnBackendFinalize(graph), "graph finalize");
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
    for (Desc& c : cfgs) KILN_DNN_TRY(o.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c), "engine config");
    int64_t got = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                 cfgs.data()) != CUDNN_STATUS_SUCCESS)
      continue;
    if (got > 0) lists->emplace_back(cfgs.begin(), cfgs.begin() + std::min(got, count));
  }
  if (lists->empty()) return unsupported("cuDNN matmul graph: the heuristics offer no engine");
  return Status::Ok();
}

// Finalizes the plans of the configs in order and calls `take(plan, workspace)` for each one that fits; the
// callee keeps the plan by returning true (it then owns it) and stops the walk by setting *stop. The first list
// that gives any plan is the only one walked.
Status for_each_plan(cudnnHandle_t handle, const std::vector<std::vector<Desc>>& lists, size_t max_workspace,
                     const std::function<bool(Desc, size_t, bool*)>& take) {
  int usable = 0;
  for (const std::vector<Desc>& configs : lists) {
    if (usable > 0) break;
    for (Desc cfg : configs) {
      Desc plan = nullptr;
      if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS)
        return unsupported("cuDNN matmul: cannot create an execution plan");
      int64_t ws = -1, got = 0;
      const bool ok =
          set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) == CUDNN_STATUS_SUCCESS &&
          set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg) ==
              CUDNN_STATUS_SUCCESS &&
          cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
          cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &ws) ==
              CUDNN_STATUS_SUCCESS &&
          ws >= 0 && static_cast<uint64_t>(ws) <= max_workspace;
      usable += ok;
      bool stop = false;
      if (!(ok && take(plan, static_cast<size_t>(ws), &stop))) cudnnBackendDestroyDescriptor(plan);
      if (stop) return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace

struct DnnMatmul::Impl {
  Owned graph;  // tensors, operations, graph, heuristics, configs
  Desc plan = nullptr;
  bool has_bias = false, has_res = false;
  Desc pack = nullptr;
  std::array<const void*, 6> pack_ptrs{};  // a, b, bias, res, y, workspace of `pack`
  ~Impl() {
    if (pack) cudnnBackendDestroyDescriptor(pack);
    if (plan) cudnnBackendDestroyDescriptor(plan);
  }
};

DnnMatmul::DnnMatmul(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DnnMatmul::~DnnMatmul() = default;

Result<std::unique_ptr<DnnMatmul>> DnnMatmul::build(cudnnContext* handle, const DnnMatmulSpec& s, int rank,
                                                    size_t max_workspace) {
  auto impl = std::make_unique<Impl>();
  impl->has_bias = s.bias;
  impl->has_res = s.res;
  std::vector<std::vector<Desc>> configs;
  KILN_RETURN_IF_ERROR(make_graph(impl->graph, handle, s, &configs));
  int seen = 0;
  size_t workspace = 0;
  KILN_RETURN_IF_ERROR(for_each_plan(handle, configs, max_workspace, [&](Desc plan, size_t ws, bool* stop) {
    if (seen++ != rank) return false;
    impl->plan = plan;
    workspace = ws;
    *stop = true;
    return true;
  }));
  if (!impl->plan)
    return unsupported("cuDNN matmul: " + std::to_string(seen) + " usable plans for this graph, no " +
                       dnn_matmul_tactic_name(rank));
  std::unique_ptr<DnnMatmul> d(new DnnMatmul(std::move(impl)));
  d->workspace_ = workspace;
  return d;
}

int DnnMatmul::count_usable(cudnnContext* handle, const DnnMatmulSpec& s, int max, size_t max_workspace) {
  // Remembered per problem and device: a network repeats its layers (bert's twelve FFN1s), and each count
  // compiles up to `max` kernels.
  int device = -1;
  cudaGetDevice(&device);
  const std::string key = std::to_string(device) + " " + std::to_string(static_cast<int>(s.dt)) + " " +
                          std::to_string(s.m) + " " + std::to_string(s.n) + " " + std::to_string(s.k) + " " +
                          std::to_string(s.trans_b) + std::to_string(s.bias) + std::to_string(s.res) +
                          std::to_string(s.residual_first) + " " + s.act + " " + std::to_string(s.alpha) + " " +
                          std::to_string(max) + " " + std::to_string(max_workspace);
  static std::mutex mu;
  static std::map<std::string, int> counted;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = counted.find(key); it != counted.end()) return it->second;
  }
  const int n = count_plans(handle, s, max, max_workspace);
  std::lock_guard<std::mutex> lock(mu);
  counted[key] = n;
  return n;
}

int DnnMatmul::count_plans(cudnnContext* handle, const DnnMatmulSpec& s, int max, size_t max_workspace) {
  Owned graph;
  std::vector<std::vector<Desc>> configs;
  if (max <= 0 || !make_graph(graph, handle, s, &configs).ok()) return 0;
  int n = 0;
  Status st = for_each_plan(handle, configs, max_workspace, [&](Desc, size_t, bool* stop) {
    *stop = ++n >= max;
    return false;
  });
  return st.ok() ? n : 0;
}

Status DnnMatmul::run(cudnnContext* handle, void* workspace, const void* a, const void* b, const void* bias,
                      const void* res, void* y) {
  Impl& m = *impl_;
  const std::array<const void*, 6> ptrs = {a, b, bias, res, y, workspace};
  if (!m.pack || ptrs != m.pack_ptrs) {
    if (m.pack) cudnnBackendDestroyDescriptor(m.pack);
    m.pack = nullptr;
    m.pack_ptrs = {};
    std::vector<int64_t> uids = {kUidA, kUidB};
    std::vector<void*> data = {const_cast<void*>(a), const_cast<void*>(b)};
    if (m.has_bias) uids.push_back(kUidBias), data.push_back(const_cast<void*>(bias));
    if (m.has_res) uids.push_back(kUidRes), data.push_back(const_cast<void*>(res));
    uids.push_back(kUidY), data.push_back(y);
    const auto n = static_cast<int64_t>(uids.size());
    KILN_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &m.pack));
    KILN_CUDNN_CHECK(
        cudnnBackendSetAttribute(m.pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids.data()));
    KILN_CUDNN_CHECK(
        cudnnBackendSetAttribute(m.pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, data.data()));
    KILN_CUDNN_CHECK(
        cudnnBackendSetAttribute(m.pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace));
    KILN_CUDNN_CHECK(cudnnBackendFinalize(m.pack));
    m.pack_ptrs = ptrs;
  }
  KILN_CUDNN_CHECK(cudnnBackendExecute(handle, m.plan, m.pack));
  return Status::Ok();
}

}  // namespace kiln::cuda
