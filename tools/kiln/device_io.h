// Device buffers and CUDA-event timing for the kiln CLI's runs on the CUDA backend (trtexec's H2D, compute,
// D2H split). Built as a stub that reports the backend missing when Kiln is built without CUDA.
#pragma once

#include <memory>

#include "inference.h"

namespace kiln::cli {

struct DeviceIterTiming {
  double h2d_ms = 0, compute_ms = 0, d2h_ms = 0;
};

class DeviceRunner {
 public:
  DeviceRunner();
  ~DeviceRunner();
  // Allocates a device buffer per I/O tensor, binds it to the context, copies the inputs in.
  Status setup(ExecutionContext& ctx, const NamedTensors& inputs, const NamedTensors& outputs);
  // One inference: optional input upload, the engine (through a CUDA graph if asked), optional download.
  Status run(bool cuda_graph, bool transfers, DeviceIterTiming* timing);
  // Copies the device outputs into the host tensors.
  Status fetch(NamedTensors* outputs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::cli
