// Device buffers and CUDA-event timing for the kiln CLI's runs on the CUDA backend (trtexec's H2D, compute,
// D2H split). Built as a stub that reports the backend missing when Kiln is built without CUDA.
#pragma once

#include <memory>
#include <string>

#include "inference.h"

namespace kiln::cli {

struct DeviceIterTiming {
  double h2d_ms = 0, compute_ms = 0, d2h_ms = 0;  // CUDA-event spans
  double enqueue_ms = 0;                          // host time of the enqueue call
  double enqueue_offset_ms = 0;                   // from the start of run() to the enqueue call
};

// PCI bus id of the current CUDA device ("0000:65:00.0"), for NVML; empty without CUDA.
std::string current_gpu_pci_bus_id();

class DeviceRunner {
 public:
  DeviceRunner();
  ~DeviceRunner();
  // Allocates a device buffer per I/O tensor, binds it to the context, copies the inputs in.
  Status setup(ExecutionContext& ctx, const NamedTensors& inputs, const NamedTensors& outputs);
  // One inference: optional input upload, the engine (through a CUDA graph if asked), optional download; then
  // waits for it, polling the last event when spin_wait is set (trtexec's --useSpinWait), else blocking.
  Status run(bool cuda_graph, bool transfers, bool spin_wait, DeviceIterTiming* timing);
  // Copies the device outputs into the host tensors.
  Status fetch(NamedTensors* outputs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::cli
