// DeviceBackend: the runtime's view of a GPU backend that lives in its own shared library (libkiln_cuda.so),
// so that CPU-only deployments load no CUDA library. The backend registers itself when loaded; the runtime
// loads it on first use from the directory that holds libkiln_runtime.so.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/runtime.h"
#include "kiln/status.h"
#include "kiln/types.h"
#include "runtime/engine_plan.h"

namespace kiln::runtime {

// What an engine records about the GPU and libraries it was built for (engine metadata keys "gpu.*").
struct DeviceInfo {
  std::string name;              // "NVIDIA H100 80GB HBM3"
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
  uint64_t total_memory = 0;
  std::string cuda_runtime, cuda_driver, cublaslt, cudnn;  // versions as "13.0", "9.14.0"
  std::string cutlass;  // the CUTLASS kernels built in ("4.2.0 kernel set 7"), empty in a build without them
};

// Engine metadata keys the builder writes and the loader checks.
inline constexpr const char* kMetaGpuName = "gpu.name";
inline constexpr const char* kMetaGpuCc = "gpu.compute_capability";
inline constexpr const char* kMetaCudaRuntime = "gpu.cuda_runtime";
inline constexpr const char* kMetaCublasLt = "gpu.cublaslt";
inline constexpr const char* kMetaCudnn = "gpu.cudnn";

// Builder-time kernel auto-tuning (see DeviceContext::tune).
struct TuneOptions {
  int level = 3;            // builder optimization level: 0 takes each kernel's first tactic without timing
  int avg_timing = 8;       // timed runs averaged per tactic
  int max_tactics = -1;     // most tactics timed per layer; -1: by level
  // How a candidate is timed. Stream: avg_timing launches back to back on the stream, so a kernel shorter than
  // its launch is timed at its launch cost. Graph: the avg_timing launches captured into a CUDA graph and
  // replayed, which is what an engine run through a CUDA graph (enqueue_graph, the batch-1 serving path) pays;
  // a candidate that cannot be captured is timed on the stream instead. The builder's default; KILN_TACTIC_TIMING=
  // stream asks for stream timing.
  bool graph_timing = false;
  // With graph timing: each captured launch reads its own copy of the layer's weights (constant inputs of 1 MB
  // or more), enough copies that none is still in L2 when its turn comes again, as in a whole-model run where
  // every layer's weights come from DRAM while its activations come from L2 (they were just written).
  // KILN_TACTIC_WEIGHTS=cold asks for it.
  bool cold_weights = false;
};
struct TacticChoice {
  std::string layer;        // node name
  std::string key;          // timing-cache key (the layer's signature on this device)
  std::string tactic;
  double ms = 0;            // average time of the chosen tactic (0 when not timed)
  int candidates = 0, timed = 0;
  bool from_cache = false;
  std::vector<std::pair<std::string, double>> timings;  // every candidate timed (tactic, ms), in timing order
  // Node annotations ("kiln."-prefixed name, value) the builder stores with the choice (KernelDef::annotations).
  std::vector<std::pair<std::string, std::string>> annotations;
};
// Timing-cache entries: key -> (tactic, ms).
using TimingEntries = std::map<std::string, std::pair<std::string, double>>;

// Per execution context state on the device.
class DeviceContext {
 public:
  virtual ~DeviceContext() = default;
  // Input shapes changed (or the first run): resolve every shape, plan the arena, prepare kernels. The
  // arena is sized once per context for the profile's max shapes, so this never allocates after creation
  // unless the graph has data-dependent shapes.
  virtual Status prepare(const std::vector<Dims>& input_shapes) = 0;
  // Enqueues the whole engine on `stream` (a cudaStream_t; null = the context's own stream) with device
  // buffers for every I/O tensor (engine io order). Output shapes must not depend on the data.
  virtual Status enqueue(const std::vector<void*>& io, void* stream) = 0;
  // Same, through a CUDA graph captured on the first call for these shapes and addresses.
  virtual Status enqueue_graph(const std::vector<void*>& io, void* stream) = 0;
  // Host convenience: copies inputs in, runs, waits, copies outputs out (any output, data-dependent too).
  virtual Status run_host(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) = 0;
  virtual Status synchronize(void* stream) = 0;
  // Bytes of the activation arena, and the sum of all activation sizes without reuse (planning report).
  virtual uint64_t arena_bytes() const = 0;
  virtual uint64_t activation_bytes() const = 0;
  virtual void set_profiler(IProfiler* profiler) = 0;
  // For the prepared shapes, times the candidate tactics of every layer whose kernel offers several and
  // reports the fastest per layer; `cache` answers layers seen before (same signature on the same GPU and
  // libraries) and receives the new measurements. `progress` (may be empty) is called after each layer.
  virtual Status tune(const TuneOptions& options, TimingEntries& cache, std::vector<TacticChoice>* choices,
                      const std::function<void(int done, int total)>& progress) {
    return Status::Ok();
  }
  // The whole engine's time per run at the prepared shapes (the builder's layout choice), on the context's own
  // I/O buffers filled as for tuning: the median of `repeats` timings of `iters` back-to-back runs, as CUDA-graph
  // replays when every layer can be captured.
  virtual Result<double> time_engine(int iters, int repeats) {
    return unsupported("this backend cannot time a whole engine");
  }
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  virtual Backend kind() const = 0;
  // The current GPU; fails when there is none or the driver is missing.
  virtual Result<DeviceInfo> device_info() = 0;
  // Whether a device kernel exists for this op and data type (the builder's precision choices ask this).
  virtual bool has_kernel(const std::string& op, const std::string& domain, DataType dtype) const = 0;
  // Checks a loaded engine against this GPU and these libraries; the message says which differs and how to
  // rebuild. Uploads nothing.
  virtual Status check_engine(const EnginePlan& plan) = 0;
  // Uploads the engine's weights once; every context of the engine shares the result.
  virtual Result<std::shared_ptr<void>> load_weights(const EnginePlan& plan) = 0;
  virtual Result<std::unique_ptr<DeviceContext>> create_context(std::shared_ptr<const EnginePlan> plan,
                                                                std::shared_ptr<void> weights) = 0;
  // Nodes of the plan that have no device kernel and run on the host (with a stream synchronization).
  virtual std::vector<std::string> host_nodes(const EnginePlan& plan) const = 0;
  // Whether a float16/bfloat16 GEMM can write rows of any width at full speed (the CUDA backend's CUTLASS kernels:
  // pad_gemm_width then leaves an odd-width product unpadded instead of padding its rows and compacting them).
  virtual bool odd_width_gemm() const { return false; }
  // Process-wide counts the backend keeps, by name (tests and build reports read them: compiled cuDNN plans).
  virtual std::map<std::string, int64_t> counters() const { return {}; }
};

// Called by the backend library at load time.
void register_device_backend(DeviceBackend* backend);
// The backend of that kind, loading its library on first use; the error says why it is unavailable.
Result<DeviceBackend*> device_backend(Backend kind);

}  // namespace kiln::runtime
