// Helpers for cuDNN's backend (graph) API shared by the graph tactics (dnn_conv.cpp; dnn_matmul.cpp may move onto
// them): descriptors destroyed together, cuDNN's refusals as kUNSUPPORTED, tensors and pointwise nodes, the
// heuristics' engine configs (mode A, then the fallback list) and the plan of one config, and a variant pack
// rebuilt only when the pointers change.
#pragma once

#include <cudnn.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kiln/status.h"

namespace kiln::cuda::dnn_graph {

using Desc = cudnnBackendDescriptor_t;

// Every failure while building a graph or plan is cuDNN declining the problem: the caller does not offer the
// tactic (never an error). `what` names the step.
Status refused(cudnnStatus_t e, const std::string& what);

#define KILN_DNN_GRAPH_TRY(call, what)                                                                 \
  do {                                                                                                 \
    cudnnStatus_t kiln_dg_s_ = (call);                                                                 \
    if (kiln_dg_s_ != CUDNN_STATUS_SUCCESS) return ::kiln::cuda::dnn_graph::refused(kiln_dg_s_, what); \
  } while (0)

// Descriptors destroyed together, newest first (an operation before its tensors, the graph before its operations).
struct Owned {
  std::vector<Desc> v;
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned();
  cudnnStatus_t make(cudnnBackendDescriptorType_t t, Desc* d);
};

inline cudnnStatus_t set(Desc d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                         const void* value) {
  return cudnnBackendSetAttribute(d, name, type, count, value);
}

// A finalized tensor of `rank` dims/strides (elements), aligned to `align` bytes; virtual: a graph intermediate.
Status make_tensor(Owned& o, Desc* d, int64_t uid, cudnnDataType_t dt, int rank, const int64_t* dims,
                   const int64_t* strides, int64_t align, bool is_virtual);

// y = mode(x) or mode(x, b), computed in float; SWISH gets beta 1 (SiLU).
Status make_pointwise(Owned& o, Desc* op, cudnnPointwiseMode_t mode, Desc x, Desc b, Desc y);

// One pointwise node of a chain after the graph's main operation: its mode and second operand (null: unary).
struct PointwiseStep {
  cudnnPointwiseMode_t mode;
  Desc operand;
};

// Appends to *ops the chain `steps` after `cur` (the main operation's output): each step reads the previous
// result, the last one writes `y`, the ones between write intermediates that `intermediate` makes (float,
// virtual).
Status append_pointwise_chain(Owned& o, const std::vector<PointwiseStep>& steps, Desc cur, Desc y,
                              const std::function<Status(Desc*)>& intermediate, std::vector<Desc>* ops);

// The finalized operation graph of `ops` on `handle`.
Status make_op_graph(Owned& o, cudnnHandle_t handle, const std::vector<Desc>& ops, Desc* graph);

// One engine config of the heuristics, and whether its engine compiles at plan time (runtime_compiled).
struct Config {
  Desc cfg = nullptr;
  bool rtc = false;
};

// The engine configs cuDNN's heuristics offer for a finalized graph, in their order: mode A's list, then the
// fallback list (callers walk the latter only where no config of mode A gives a plan); owned by o. Unsupported
// when neither mode offers any.
Status heuristic_configs(Owned& o, Desc graph, std::vector<std::vector<Config>>* lists);

// Whether the config's engine compiles its kernel at plan time (CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION); false
// where cuDNN does not say.
bool runtime_compiled(Desc cfg);

// The finalized execution plan of one config on `handle` when its workspace fits max_workspace (its size in
// *workspace), else null. The caller destroys it.
Desc finalize_plan(cudnnHandle_t handle, Desc cfg, size_t max_workspace, size_t* workspace);

// A finalized execution plan, with the graph descriptors it was made from (null for a plan restored from JSON,
// which needs none) and its workspace; shared by the layers of one problem on one handle.
struct Plan {
  Desc d = nullptr;
  size_t workspace = 0;
  bool rtc = false;  // its engine compiles at plan time (a note for the tests' prints)
  std::shared_ptr<Owned> graph;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
};

// The workspace a finalized plan needs, into *workspace, when it fits max_workspace.
bool plan_fits(Desc plan, size_t max_workspace, size_t* workspace);

// A finalized plan as cuDNN serializes it (CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION: its JSON, a runtime-
// compiled kernel included), or empty where it cannot.
std::string plan_json(Desc plan);

// The plan `json` (plan_json's text) deserialized on `handle` into *plan (no compile; the caller destroys it), or
// why not (kUNSUPPORTED: empty or refused text, or more workspace than max_workspace).
Status restore_plan(cudnnHandle_t handle, const std::string& json, size_t max_workspace, Desc* plan, size_t* workspace);

// The cuDNN version and the current GPU (name, compute capability, SMs) a plan's kernel was compiled for: part of
// the key a stored plan is valid for.
std::string plan_environment();

// A variant pack for one plan's tensors (by unique id) and workspace; rebuilt only when a pointer changes (an
// execution context's arena keeps them fixed).
class VariantPack {
 public:
  static constexpr int kMaxTensors = 8;
  VariantPack() = default;
  VariantPack(const VariantPack&) = delete;
  VariantPack& operator=(const VariantPack&) = delete;
  ~VariantPack();
  // uids[i] binds ptrs[i]; n <= kMaxTensors.
  Status bind(int n, const int64_t* uids, void* const* ptrs, void* workspace);
  Desc get() const { return pack_; }

 private:
  Desc pack_ = nullptr;
  std::array<void*, kMaxTensors + 1> ptrs_{};
  std::array<int64_t, kMaxTensors> uids_{};
  int n_ = -1;
};

}  // namespace kiln::cuda::dnn_graph
