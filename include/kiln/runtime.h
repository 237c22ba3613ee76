// Runtime, Engine and ExecutionContext: load a serialized engine and run it. Links no builder code.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/logger.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln {

namespace runtime {
struct EnginePlan;
}

class ExecutionContext;

// Receives each layer's time after an execution when set on a context (TensorRT's IProfiler). On the GPU the
// times come from CUDA events around each layer, which adds a synchronization per run while a profiler is set.
class IProfiler {
 public:
  virtual ~IProfiler() = default;
  virtual void report_layer_time(const char* layer_name, float ms) noexcept = 0;
};

// Caller-side memory for outputs whose size is only known during execute() (NonZero, Unique, TopK with a
// run-time k, ...). Also usable for any other output, so the caller need not size buffers up front.
class IOutputAllocator {
 public:
  virtual ~IOutputAllocator() = default;
  // Called on every execute() once the output's byte size is known. current_memory is what this allocator
  // returned last time for the tensor (null the first time); return it again to keep it. The result must
  // hold size_bytes bytes; null means failure (execute() then fails and names the tensor and the size),
  // except when size_bytes is 0.
  virtual void* reallocate_output(const char* tensor_name, void* current_memory, uint64_t size_bytes,
                                  uint64_t alignment) noexcept = 0;
  // Called after the output has been written to the memory, with its actual shape.
  virtual void notify_shape(const char* tensor_name, const Dims& dims) noexcept = 0;
};

// Host-side tensor for the convenience execution path. It also carries ONNX sequence and optional values
// (kind other than kTENSOR): dtype is then the element type, dims and data stay empty, and elements holds the
// sequence's tensors or the optional's value (none when the optional is empty).
struct HostTensor {
  DataType dtype = DataType::kFLOAT;
  Dims dims;
  std::vector<uint8_t> data;  // C-order, little-endian
  ValueKind kind = ValueKind::kTENSOR;
  std::vector<HostTensor> elements;
};

class Engine {
 public:
  ~Engine();
  int num_io_tensors() const;
  const std::string& get_tensor_name(int i) const;
  TensorIOMode get_tensor_mode(const std::string& name) const;
  DataType get_tensor_dtype(const std::string& name) const;
  // kTENSOR unless the I/O value is a sequence or optional, which only infer() can pass (execute() refuses).
  ValueKind get_tensor_kind(const std::string& name) const;
  Dims get_tensor_shape(const std::string& name) const;  // -1 for dynamic dims
  int num_optimization_profiles() const;
  // min/opt/max of a dynamic input in a profile; error when the input has no bounds.
  Status get_profile_shape(const std::string& input, int profile, Dims* min, Dims* opt, Dims* max) const;
  Backend backend() const;
  int num_layers() const;
  std::string kiln_version() const;
  std::unique_ptr<ExecutionContext> create_execution_context() const;
  std::vector<uint8_t> serialize() const;  // the engine file bytes it was loaded from
  // Bytes of GPU memory the engine's weights occupy (0 on the CPU backend).
  uint64_t weights_device_bytes() const { return weights_bytes_; }
  // Engine metadata (builder flags, GPU and library versions, memory plan figures).
  const std::string& metadata(const std::string& key) const;
  const runtime::EnginePlan& plan() const { return *plan_; }

 private:
  friend class Runtime;
  Engine() = default;
  std::shared_ptr<const runtime::EnginePlan> plan_;
  std::shared_ptr<void> device_weights_;  // CUDA backend: weights uploaded once, shared by contexts
  uint64_t weights_bytes_ = 0;
};

class Runtime {
 public:
  explicit Runtime(ILogger& logger = default_logger());
  // Validates header, version, checksums and every section; never crashes on bad bytes.
  Result<std::unique_ptr<Engine>> deserialize_engine(const void* data, size_t size);
  Result<std::unique_ptr<Engine>> load_engine_file(const std::string& path);

 private:
  ILogger& logger_;
};

// One in-flight execution of an engine. Contexts of one engine share its weights and may run on
// different threads at once; one context runs one execution at a time: execute(), enqueue(),
// enqueue_graph() and infer() called while another of them runs on the same context (from a second thread,
// or from an output allocator or profiler callback) fail at once with kInvalidArgument instead of racing.
// The other setters are not synchronized at all: do not call them while the context runs.
class ExecutionContext {
 public:
  ~ExecutionContext();
  // Fails when the shape is outside every profile bound or the rank/static dims differ.
  Status set_input_shape(const std::string& name, const Dims& dims);
  Status set_optimization_profile(int index);
  // Output shapes follow from the input shapes (after set_input_shape for all inputs). Dims that depend on
  // the data are -1 until execute() or infer() has run with these input shapes, then the actual ones.
  Result<Dims> get_tensor_shape(const std::string& name) const;
  // Binds caller-owned memory for an I/O tensor (host memory on the CPU backend). A null address counts as
  // unbound: running then fails naming the tensor. On the CUDA backend a run whose addresses or shapes
  // changed checks that each address is device (or managed) memory of the context's GPU and that the bound
  // shape's bytes do not run past the end of the allocation it lies in (cuMemGetAddressRange). A buffer
  // carved out of a larger allocation (a caching allocator's block) can only be checked against that block,
  // and memory mapped with cuMemMap not at all, so staying inside one's own buffer remains the caller's duty.
  Status set_tensor_address(const std::string& name, void* ptr);
  // As above, with the buffer's capacity: execute() then checks the output fits, which lets an output whose
  // shape depends on the data be written to a buffer sized for its largest case.
  Status set_tensor_address(const std::string& name, void* ptr, uint64_t size_bytes);
  // Gives an output memory on demand at execution time; it then needs no address (and any bound address is
  // ignored). Null removes the allocator. The allocator must outlive its use by this context.
  Status set_output_allocator(const std::string& name, IOutputAllocator* allocator);
  IOutputAllocator* get_output_allocator(const std::string& name) const;
  // Runs synchronously with the bound buffers and output allocators; errors on missing bindings, unset
  // shapes, or a data-dependent output that has neither an allocator nor a bound buffer large enough.
  // On the CUDA backend the bound addresses are device pointers.
  Status execute();
  // TensorRT's enqueueV3: on the CUDA backend, enqueues the engine on `cuda_stream` (a cudaStream_t; null
  // = the context's own stream) and returns without waiting; bound addresses are device pointers and must
  // stay valid until the stream reaches this work. On the CPU backend it runs synchronously.
  // A context must not be used from two threads at once: a second call fails while one runs (see above).
  Status enqueue(void* cuda_stream);
  // As enqueue(), through a CUDA graph: captured on the first call (and again whenever shapes, addresses
  // or the stream change), replayed afterwards. Fails when a layer runs on the host.
  Status enqueue_graph(void* cuda_stream);
  // Waits for the context's own stream (after enqueue(nullptr)).
  Status synchronize();
  void set_profiler(IProfiler* profiler);
  IProfiler* profiler() const;
  // CUDA backend: bytes of the activation arena, and of all activations without reuse; 0 on the CPU.
  uint64_t activation_arena_bytes() const;
  uint64_t activation_total_bytes() const;
  // Convenience: copies inputs in, sets shapes, runs, returns every output with its shape.
  Result<std::vector<std::pair<std::string, HostTensor>>> infer(
      const std::vector<std::pair<std::string, HostTensor>>& inputs);

 private:
  friend class Engine;
  struct Impl;
  explicit ExecutionContext(std::shared_ptr<const runtime::EnginePlan> plan);
  Status attach_device(std::shared_ptr<void> weights);
  std::unique_ptr<Impl> impl_;
};

// Library version string ("0.1.0").
const char* kiln_version_string();

}  // namespace kiln
