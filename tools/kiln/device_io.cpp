// DeviceRunner (see device_io.h).
#include "device_io.h"

#include <chrono>

#ifdef KILN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace kiln::cli {

#ifdef KILN_WITH_CUDA
namespace {
Status check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Status(e == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kInternal,
                std::string(what) + ": " + cudaGetErrorString(e));
}
}  // namespace

struct DeviceRunner::Impl {
  ExecutionContext* ctx = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t ev[4] = {};
  struct Io { const HostTensor* host; void* dev; size_t bytes; };
  std::vector<Io> inputs, outputs;
  ~Impl() {
    for (auto& b : inputs) cudaFree(b.dev);
    for (auto& b : outputs) cudaFree(b.dev);
    for (auto e : ev) if (e) cudaEventDestroy(e);
    if (stream) cudaStreamDestroy(stream);
  }
};

DeviceRunner::DeviceRunner() = default;
DeviceRunner::~DeviceRunner() = default;

Status DeviceRunner::setup(ExecutionContext& ctx, const NamedTensors& inputs, const NamedTensors& outputs) {
  impl_ = std::make_unique<Impl>();
  auto& im = *impl_;
  im.ctx = &ctx;
  KILN_RETURN_IF_ERROR(check(cudaStreamCreateWithFlags(&im.stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  for (auto& e : im.ev) KILN_RETURN_IF_ERROR(check(cudaEventCreate(&e), "cudaEventCreate"));
  auto bind = [&](const std::string& name, const HostTensor& t, std::vector<Impl::Io>& list) -> Status {
    Impl::Io io{&t, nullptr, t.data.size()};
    KILN_RETURN_IF_ERROR(check(cudaMalloc(&io.dev, std::max<size_t>(io.bytes, 1)),
                               ("cudaMalloc for '" + name + "'").c_str()));
    list.push_back(io);
    return ctx.set_tensor_address(name, io.dev, io.bytes);
  };
  for (auto& [name, t] : inputs) KILN_RETURN_IF_ERROR(bind(name, t, im.inputs));
  for (auto& [name, t] : outputs) KILN_RETURN_IF_ERROR(bind(name, t, im.outputs));
  for (auto& b : im.inputs)
    KILN_RETURN_IF_ERROR(check(cudaMemcpy(b.dev, b.host->data.data(), b.bytes, cudaMemcpyHostToDevice), "upload"));
  // The engine runs on a non-blocking stream, which does not wait for these legacy-stream copies.
  return check(cudaDeviceSynchronize(), "upload");
}

Status DeviceRunner::run(bool cuda_graph, bool transfers, bool spin_wait, DeviceIterTiming* timing) {
  auto& im = *impl_;
  const auto run_start = std::chrono::steady_clock::now();
  KILN_RETURN_IF_ERROR(check(cudaEventRecord(im.ev[0], im.stream), "cudaEventRecord"));
  if (transfers)
    for (auto& b : im.inputs)
      KILN_RETURN_IF_ERROR(check(cudaMemcpyAsync(b.dev, b.host->data.data(), b.bytes, cudaMemcpyHostToDevice, im.stream), "H2D"));
  KILN_RETURN_IF_ERROR(check(cudaEventRecord(im.ev[1], im.stream), "cudaEventRecord"));
  const auto enqueue_start = std::chrono::steady_clock::now();
  KILN_RETURN_IF_ERROR(cuda_graph ? im.ctx->enqueue_graph(im.stream) : im.ctx->enqueue(im.stream));
  const double enqueue_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - enqueue_start).count();
  KILN_RETURN_IF_ERROR(check(cudaEventRecord(im.ev[2], im.stream), "cudaEventRecord"));
  if (transfers)
    for (auto& b : im.outputs)
      KILN_RETURN_IF_ERROR(check(cudaMemcpyAsync(const_cast<uint8_t*>(b.host->data.data()), b.dev, b.bytes,
                                                 cudaMemcpyDeviceToHost, im.stream), "D2H"));
  KILN_RETURN_IF_ERROR(check(cudaEventRecord(im.ev[3], im.stream), "cudaEventRecord"));
  if (spin_wait) {
    // Busy polling trades a CPU core for the wake-up latency of a blocking wait.
    cudaError_t e;
    while ((e = cudaEventQuery(im.ev[3])) == cudaErrorNotReady) {
    }
    KILN_RETURN_IF_ERROR(check(e, "inference"));
  } else {
    KILN_RETURN_IF_ERROR(check(cudaStreamSynchronize(im.stream), "inference"));
  }
  float a = 0, b = 0, c = 0;
  cudaEventElapsedTime(&a, im.ev[0], im.ev[1]);
  cudaEventElapsedTime(&b, im.ev[1], im.ev[2]);
  cudaEventElapsedTime(&c, im.ev[2], im.ev[3]);
  if (timing)
    *timing = {a, b, c, enqueue_ms,
               std::chrono::duration<double, std::milli>(enqueue_start - run_start).count()};
  return Status::Ok();
}

Status DeviceRunner::fetch(NamedTensors* outputs) {
  auto& im = *impl_;
  for (size_t k = 0; k < im.outputs.size(); ++k) {
    auto& t = (*outputs)[k].second;
    KILN_RETURN_IF_ERROR(check(cudaMemcpy(t.data.data(), im.outputs[k].dev, im.outputs[k].bytes, cudaMemcpyDeviceToHost), "download"));
  }
  return Status::Ok();
}

std::string current_gpu_pci_bus_id() {
  int device = 0;
  char id[32] = {};
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetPCIBusId(id, sizeof(id), device) != cudaSuccess) return "";
  return id;
}

#else

std::string current_gpu_pci_bus_id() { return ""; }

struct DeviceRunner::Impl {};
DeviceRunner::DeviceRunner() = default;
DeviceRunner::~DeviceRunner() = default;
Status DeviceRunner::setup(ExecutionContext&, const NamedTensors&, const NamedTensors&) {
  return unsupported("this kiln was built without the CUDA backend");
}
Status DeviceRunner::run(bool, bool, bool, DeviceIterTiming*) { return unsupported("no CUDA backend"); }
Status DeviceRunner::fetch(NamedTensors*) { return unsupported("no CUDA backend"); }

#endif

}  // namespace kiln::cli
