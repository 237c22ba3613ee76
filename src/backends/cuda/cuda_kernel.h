// The CUDA backend's kernel interface: each operator's host-side launcher registers here, keyed by op type,
// with the data types it handles and an optional supports() check. Launchers take the node's stream, never
// allocate, never synchronize; scratch memory comes from the context's workspace.
#pragma once

#include <cuda_runtime.h>
#include <cublasLt.h>
#include <cudnn.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/tensor.h"
#include "kiln/status.h"
#include "runtime/engine_plan.h"

namespace kiln::cuda {

Status cuda_status(cudaError_t e, const char* what, const char* file, int line);
Status cublas_status(cublasStatus_t e, const char* what, const char* file, int line);
Status cudnn_status(cudnnStatus_t e, const char* what, const char* file, int line);

// Each returns a Status naming the call, the library's error string and file:line.
#define KILN_CUDA_CHECK(call)                                                                          \
  do {                                                                                                 \
    cudaError_t kiln_e_ = (call);                                                                      \
    if (kiln_e_ != cudaSuccess) return ::kiln::cuda::cuda_status(kiln_e_, #call, __FILE__, __LINE__);  \
  } while (0)
#define KILN_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                                 \
    cublasStatus_t kiln_e_ = (call);                                                                   \
    if (kiln_e_ != CUBLAS_STATUS_SUCCESS)                                                              \
      return ::kiln::cuda::cublas_status(kiln_e_, #call, __FILE__, __LINE__);                          \
  } while (0)
#define KILN_CUDNN_CHECK(call)                                                                         \
  do {                                                                                                 \
    cudnnStatus_t kiln_e_ = (call);                                                                    \
    if (kiln_e_ != CUDNN_STATUS_SUCCESS) return ::kiln::cuda::cudnn_status(kiln_e_, #call, __FILE__, __LINE__); \
  } while (0)
// After a kernel launch: launch-configuration errors surface here.
#define KILN_CUDA_LAUNCH_CHECK() KILN_CUDA_CHECK(cudaGetLastError())

// A device tensor: C-order, dense. data is null for an omitted optional input.
struct DevTensor {
  void* data = nullptr;
  DataType dtype = DataType::kFLOAT;
  Dims shape;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int rank() const { return static_cast<int>(shape.size()); }
  template <typename T> T* as() const { return static_cast<T*>(data); }
};

// Per-context library handles and scratch memory shared by the kernels of one context.
struct CudaHandles {
  cublasLtHandle_t lt = nullptr;
  cudnnHandle_t dnn = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int sm_count = 0;
  // Builder flags of the engine: TF32 lets FP32 GEMM/convolution use tensor cores (TensorRT's default).
  bool allow_tf32 = true;
};

struct KernelArgs {
  const runtime::PlanNode* node = nullptr;
  std::vector<DevTensor> in, out;
  // Host copies of inputs whose contents are known before the run (constants, shape tensors): kernels read
  // axes, shapes and scalars from here instead of the device. Null where not known.
  std::vector<const Tensor*> host_in;
  cudaStream_t stream = nullptr;
  CudaHandles* handles = nullptr;
  // Kernel-owned state (descriptors, chosen algorithms), kept while the shapes stay the same.
  std::shared_ptr<void>* state = nullptr;
  // The implementation the builder chose for this layer (its "kiln.tactic" annotation, or the candidate the
  // tuner is timing); empty: the kernel's own default.
  std::string tactic;
  // Set while the tuner times candidates: a tactic the kernel cannot apply is an error, not a silent default.
  bool strict_tactic = false;
  // Set by the tuner when it asks for tactics(): the most candidates it will time for this layer (0: unknown).
  // A kernel whose candidates cost something to offer (a compilation) offers no more than that.
  int max_timed = 0;
  // Set by the tuner when it asks for tactics() and its timing cache has an answer for this layer: a kernel may
  // then offer only what confirming that answer needs (the tuner takes it when it is among the candidates).
  std::string cached_tactic;

  const Attributes& attrs() const { return node->attrs; }
  bool has_input(int i) const { return i < static_cast<int>(in.size()) && in[i].data != nullptr; }
};

using KernelFn = std::function<Status(KernelArgs&)>;
// Static check over the node, its input/output types and (possibly symbolic) shapes.
using SupportsFn = std::function<bool(const runtime::PlanNode&, const runtime::EnginePlan&)>;

struct KernelDef {
  std::string op;
  std::string domain;             // "" for ai.onnx
  std::vector<DataType> dtypes;   // of input 0 (output 0 for ops without inputs); empty: any
  KernelFn run;
  SupportsFn supports;            // empty: every node of a listed dtype
  // The output is input 0's bytes under another shape (Reshape, Squeeze, ...): no launch, no memory.
  bool alias = false;
  // Candidate implementations for this layer at the shapes in args, best guess first (the level-0 choice).
  // Unset or fewer than two: nothing to tune. The builder times each candidate by running `run` with
  // args.tactic set to it (state reset between candidates) and records the fastest in the engine.
  std::function<std::vector<std::string>(const KernelArgs&)> tactics;
  // Optional: what to store in the engine with the tactic the tuner chose (args.tactic), as "kiln."-prefixed
  // node annotations the kernel reads back at load (a compiled cuDNN plan), so a load need not redo the work.
  // An annotation equal (name and value) to one an earlier layer stores is stored with that layer only: layers
  // run in order, so a later layer of the same problem finds what the first one restored (bert's twelve FFN1s
  // carry one plan).
  std::function<std::vector<std::pair<std::string, std::string>>(KernelArgs&)> annotations;
};

class KernelRegistry {
 public:
  static KernelRegistry& instance();
  void add(KernelDef def);
  // The kernel for this node, or null (the node then runs on the host).
  const KernelDef* find(const runtime::PlanNode& node, const runtime::EnginePlan& plan) const;
  bool has(const std::string& op, const std::string& domain, DataType dtype) const;
  std::vector<const KernelDef*> all() const;

 private:
  std::vector<KernelDef> defs_;
};

// Registers at static-initialization time: KILN_CUDA_KERNEL(Relu) { return KernelDef{...}; }
#define KILN_CUDA_KERNEL(NAME)                                                                  \
  static ::kiln::cuda::KernelDef kiln_cuda_kernel_##NAME();                                     \
  static const bool kiln_cuda_registered_##NAME =                                               \
      (::kiln::cuda::KernelRegistry::instance().add(kiln_cuda_kernel_##NAME()), true);          \
  static ::kiln::cuda::KernelDef kiln_cuda_kernel_##NAME()

// The float types every elementwise-style kernel handles.
inline const std::vector<DataType>& float_types() {
  static const std::vector<DataType> v = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
  return v;
}

// Dtype of the node's type-defining input (input 0, or output 0 when it has no inputs).
DataType node_dtype(const runtime::PlanNode& node, const runtime::EnginePlan& plan);

}  // namespace kiln::cuda
