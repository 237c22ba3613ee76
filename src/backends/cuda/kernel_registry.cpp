// CUDA kernel registry and the library error-to-Status helpers.
#include "backends/cuda/cuda_kernel.h"

#include <algorithm>

namespace kiln::cuda {

Status cuda_status(cudaError_t e, const char* what, const char* file, int line) {
  ErrorCode code = e == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kInternal;
  return Status(code, std::string(what) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") at " +
                          file + ":" + std::to_string(line));
}

Status cublas_status(cublasStatus_t e, const char* what, const char* file, int line) {
  ErrorCode code = e == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOutOfMemory : ErrorCode::kInternal;
  return Status(code, std::string(what) + " failed: cuBLAS status " + std::to_string(static_cast<int>(e)) + " at " +
                          file + ":" + std::to_string(line));
}

Status cudnn_status(cudnnStatus_t e, const char* what, const char* file, int line) {
  ErrorCode code = e == CUDNN_STATUS_ALLOC_FAILED ? ErrorCode::kOutOfMemory : ErrorCode::kInternal;
  return Status(code, std::string(what) + " failed: " + cudnnGetErrorString(e) + " at " + file + ":" +
                          std::to_string(line));
}

KernelRegistry& KernelRegistry::instance() {
  static KernelRegistry r;
  return r;
}

void KernelRegistry::add(KernelDef def) {
  if (def.domain == "ai.onnx") def.domain.clear();
  defs_.push_back(std::move(def));
}

DataType node_dtype(const runtime::PlanNode& node, const runtime::EnginePlan& plan) {
  for (int id : node.inputs)
    if (id >= 0) return plan.values[id].dtype;
  return node.outputs.empty() ? DataType::kFLOAT : plan.values[node.outputs[0]].dtype;
}

const KernelDef* KernelRegistry::find(const runtime::PlanNode& node, const runtime::EnginePlan& plan) const {
  std::string domain = node.domain == "ai.onnx" ? "" : node.domain;
  DataType dt = node_dtype(node, plan);
  for (const auto& d : defs_) {
    if (d.op != node.op_type || d.domain != domain) continue;
    if (!d.dtypes.empty() && std::find(d.dtypes.begin(), d.dtypes.end(), dt) == d.dtypes.end()) continue;
    if (d.supports && !d.supports(node, plan)) continue;
    return &d;
  }
  return nullptr;
}

bool KernelRegistry::has(const std::string& op, const std::string& domain, DataType dtype) const {
  std::string dom = domain == "ai.onnx" ? "" : domain;
  for (const auto& d : defs_)
    if (d.op == op && d.domain == dom &&
        (d.dtypes.empty() || std::find(d.dtypes.begin(), d.dtypes.end(), dtype) != d.dtypes.end()))
      return true;
  return false;
}

std::vector<const KernelDef*> KernelRegistry::all() const {
  std::vector<const KernelDef*> v;
  for (const auto& d : defs_) v.push_back(&d);
  return v;
}

}  // namespace kiln::cuda
