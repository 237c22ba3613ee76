// The CUDA implementation of runtime::DeviceBackend, and the weights it keeps per engine.
#pragma once

#include <map>

#include "backends/cuda/cuda_kernel.h"
#include "runtime/device_backend.h"

namespace kiln::cuda {

// Engine constants on the device: one allocation, uploaded once, shared by every context of the engine.
struct DeviceWeights {
  void* base = nullptr;
  uint64_t bytes = 0;
  std::map<int, void*> by_value;  // value id -> device address
  ~DeviceWeights();
};

using runtime::kMetaCublasLt;
using runtime::kMetaCudaRuntime;
using runtime::kMetaCudnn;
using runtime::kMetaGpuCc;
using runtime::kMetaGpuName;

// Candidates the tuner timed on the stream because CUDA-graph timing could not capture them (process-wide).
int64_t graph_timing_fallbacks();

std::unique_ptr<runtime::DeviceContext> make_context(std::shared_ptr<const runtime::EnginePlan> plan,
                                                     std::shared_ptr<DeviceWeights> weights, Status* status);

}  // namespace kiln::cuda
