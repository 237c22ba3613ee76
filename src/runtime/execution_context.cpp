// ExecutionContext: per-context input shapes, bindings, output shape inference and execution on the CPU backend.
#include <cstring>
#include <algorithm>
#include <atomic>
#include <exception>
#include <limits>
#include <new>
#include <optional>

#include "backends/cpu/cpu_executor.h"
#include "kiln/runtime.h"
#include "runtime/device_backend.h"
#include "runtime/engine_plan.h"
#include "runtime/host_values.h"
#include "runtime/shape_resolver.h"

namespace kiln {

struct ExecutionContext::Impl {
  explicit Impl(std::shared_ptr<const runtime::EnginePlan> p)
      : plan(std::move(p)), executor(*plan), shapes(plan->io.size()), addresses(plan->io.size(), nullptr),
        capacities(plan->io.size(), kUnknownCapacity), allocators(plan->io.size(), nullptr),
        allocated(plan->io.size(), nullptr), output_shapes(plan->io.size()), run_shapes(plan->io.size()) {
    // Fully static inputs need no set_input_shape call.
    for (int i : plan->inputs) {
      const auto& v = plan->values[plan->io[i].value];
      if (v.kind != ValueKind::kTENSOR) shapes[i] = Dims{};  // sequences and optionals have no shape of their own
      else if (ops::shape_is_static(v.shape)) shapes[i] = ops::static_dims(v.shape);
    }
  }

  const runtime::PlanValue& value_of(int io) const { return plan->values[plan->io[io].value]; }
  Result<int> find(const std::string& name) const;
  Status check_input_shape(int io, const Dims& dims) const;
  Status check_ready_inputs() const;
  Status ensure_output_shapes() const;
  void invalidate_shapes() {
    shapes_valid = false;
    ++shape_epoch;
  }
  // Forgets the previous run's shapes, so a run that fails half way leaves none of them behind.
  void begin_run_shapes() {
    std::fill(run_shapes.begin(), run_shapes.end(), std::nullopt);
    run_epoch = shape_epoch;
  }
  Status check_output_fits(int io, uint64_t bytes, const Dims& dims) const;

  static constexpr uint64_t kUnknownCapacity = std::numeric_limits<uint64_t>::max();
  // Host memory needs no more than this; it matches the engine file's weight alignment.
  static constexpr uint64_t kOutputAlignment = 64;

  std::shared_ptr<const runtime::EnginePlan> plan;
  cpu::CpuExecutor executor;
  int profile = 0;
  std::vector<std::optional<Dims>> shapes;  // per io entry, inputs only
  std::vector<void*> addresses;             // per io entry
  std::vector<uint64_t> capacities;         // per io entry: bound buffer size, when the caller gave it
  std::vector<IOutputAllocator*> allocators;  // per io entry, outputs only
  std::vector<void*> allocated;             // what each allocator last returned, handed back as current memory
  // Output shapes follow from the input shapes; computed lazily and dropped when an input shape changes.
  mutable bool shapes_valid = false;
  // Per io entry, outputs only: nullopt when the rank depends on the data, -1 for data-dependent dims.
  mutable std::vector<std::optional<Dims>> output_shapes;
  // Actual output shapes of the last run; they answer get_tensor_shape only while the input shapes are the
  // ones that run used, which the epochs track. Kept apart from output_shapes so that the next run's
  // pre-checks still see which dims depend on the data.
  uint64_t shape_epoch = 0;
  uint64_t run_epoch = std::numeric_limits<uint64_t>::max();
  std::vector<std::optional<Dims>> run_shapes;
  // CUDA backend: the device side of this context (null on the CPU backend).
  std::unique_ptr<runtime::DeviceContext> device;
  IProfiler* profiler = nullptr;
  // Set while execute/enqueue/enqueue_graph/infer runs: see InUse.
  std::atomic<bool> busy{false};

  std::vector<Dims> input_dims() const {
    std::vector<Dims> d;
    for (int i : plan->inputs) d.push_back(*shapes[i]);
    return d;
  }
  Status check_device_run() const;
};

namespace {

std::string list_names(const runtime::EnginePlan& plan, const std::vector<int>& which) {
  std::string s;
  for (int i : which) s += (s.empty() ? "" : ", ") + plan.io[i].name;
  return s.empty() ? "none" : s;
}

// Runs f, turning exceptions from allocation or from an operator into a Status at the API boundary.
template <typename F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kOutOfMemory, "out of memory during execution");
  } catch (const std::exception& e) {
    return internal_error(std::string("unexpected error during execution: ") + e.what());
  }
}

// Claims the context for one run. A second thread (or a callback re-entering the context) gets an error
// instead of racing on the bindings, the shapes and the activation arena; one atomic exchange per run.
class InUse {
 public:
  explicit InUse(std::atomic<bool>& flag) : flag_(flag), claimed_(!flag.exchange(true, std::memory_order_acquire)) {}
  ~InUse() {
    if (claimed_) flag_.store(false, std::memory_order_release);
  }
  InUse(const InUse&) = delete;
  InUse& operator=(const InUse&) = delete;
  bool claimed() const { return claimed_; }

 private:
  std::atomic<bool>& flag_;
  bool claimed_;
};

Status context_busy() {
  return invalid_argument("this execution context is already running (used from two threads at once, or "
                          "re-entered from a callback); a context runs one execution at a time: create one "
                          "context per thread or stream");
}

}  // namespace

Result<int> ExecutionContext::Impl::find(const std::string& name) const {
  int i = plan->find_io(name);
  if (i >= 0) return i;
  return invalid_argument("engine has no I/O tensor '" + name + "' (inputs: " + list_names(*plan, plan->inputs) +
                          "; outputs: " + list_names(*plan, plan->outputs) + ")");
}

Status ExecutionContext::Impl::check_input_shape(int io, const Dims& dims) const {
  const auto& v = value_of(io);
  const std::string& name = plan->io[io].name;
  if (v.kind != ValueKind::kTENSOR) {
    if (dims.empty()) return Status::Ok();
    return invalid_argument("input '" + name + "' is " + a_kind(v.kind) + ", which has no shape to set");
  }
  if (dims.size() != v.shape.size())
    return invalid_argument("input '" + name + "' has rank " + std::to_string(v.shape.size()) + " but the given shape " +
                            dims_to_string(dims) + " has rank " + std::to_string(dims.size()));
  const runtime::ProfileBounds* bounds = nullptr;
  if (profile < static_cast<int>(plan->profiles.size())) {
    auto it = plan->profiles[profile].find(plan->io[io].value);
    if (it != plan->profiles[profile].end()) bounds = &it->second;
  }
  for (size_t d = 0; d < dims.size(); ++d) {
    std::string dim = "input '" + name + "' dimension " + std::to_string(d) + " is " + std::to_string(dims[d]);
    if (dims[d] < 0) return invalid_argument(dim + ", which is negative");
    if (v.shape[d].is_static()) {
      if (dims[d] != v.shape[d].value)
        return invalid_argument(dim + " but the engine was built for " + std::to_string(v.shape[d].value));
    } else if (bounds && (dims[d] < bounds->min[d] || dims[d] > bounds->max[d])) {
      return invalid_argument(dim + " but the optimization profile allows [" + std::to_string(bounds->min[d]) + ", " +
                              std::to_string(bounds->max[d]) + "]");
    }
  }
  return Status::Ok();
}

Status ExecutionContext::Impl::check_ready_inputs() const {
  for (int i : plan->inputs) {
    if (!shapes[i])
      return invalid_argument("the shape of input '" + plan->io[i].name + "' is not set (call set_input_shape)");
    // The profile may have changed since the shape was set.
    KILN_RETURN_IF_ERROR(check_input_shape(i, *shapes[i]));
  }
  return Status::Ok();
}

Status ExecutionContext::Impl::ensure_output_shapes() const {
  if (shapes_valid) return Status::Ok();
  KILN_RETURN_IF_ERROR(check_ready_inputs());
  KILN_ASSIGN_OR_RETURN(std::vector<ops::TensorInfo> info, runtime::resolve_shapes(*plan, input_dims()));
  for (int o : plan->outputs) {
    const auto& t = info[plan->io[o].value];
    if (value_of(o).kind != ValueKind::kTENSOR) output_shapes[o] = Dims{};
    else output_shapes[o] = t.rank_known ? std::optional<Dims>(ops::static_dims(t.shape)) : std::nullopt;
  }
  shapes_valid = true;
  return Status::Ok();
}

// Before a device run: every I/O tensor bound, inputs set, outputs of known size that fit their buffers.
Status ExecutionContext::Impl::check_device_run() const {
  for (size_t i = 0; i < plan->io.size(); ++i) {
    if (allocators[i])
      return unsupported("output allocators are not supported on the CUDA backend yet ('" + plan->io[i].name +
                         "'); bind a device buffer with set_tensor_address or use infer()");
    if (!addresses[i])
      return invalid_argument(std::string(plan->io[i].mode == TensorIOMode::kINPUT ? "input '" : "output '") +
                              plan->io[i].name + "' has no bound device address (call set_tensor_address)");
  }
  KILN_RETURN_IF_ERROR(check_ready_inputs());
  KILN_RETURN_IF_ERROR(ensure_output_shapes());
  for (int i : plan->inputs) {
    uint64_t need = static_cast<uint64_t>(volume(*shapes[i])) * dtype_size(value_of(i).dtype);
    if (capacities[i] != kUnknownCapacity && need > capacities[i])
      return invalid_argument("input '" + plan->io[i].name + "' needs " + std::to_string(need) + " bytes (shape " +
                              dims_to_string(*shapes[i]) + ") but its bound buffer holds " +
                              std::to_string(capacities[i]));
  }
  for (int o : plan->outputs) {
    const auto& d = output_shapes[o];
    if (!d || volume(*d) < 0)
      return unsupported("output '" + plan->io[o].name +
                         "' has a data-dependent shape; on the CUDA backend run this engine with infer()");
    KILN_RETURN_IF_ERROR(check_output_fits(o, static_cast<uint64_t>(volume(*d)) * dtype_size(value_of(o).dtype), *d));
  }
  return Status::Ok();
}

ExecutionContext::ExecutionContext(std::shared_ptr<const runtime::EnginePlan> plan)
    : impl_(std::make_unique<Impl>(std::move(plan))) {}

ExecutionContext::~ExecutionContext() = default;

Status ExecutionContext::attach_device(std::shared_ptr<void> weights) {
  KILN_ASSIGN_OR_RETURN(runtime::DeviceBackend * backend, runtime::device_backend(impl_->plan->backend));
  KILN_ASSIGN_OR_RETURN(impl_->device, backend->create_context(impl_->plan, std::move(weights)));
  return Status::Ok();
}

Status ExecutionContext::enqueue(void* cuda_stream) {
  if (!impl_->device) return execute();
  InUse use(impl_->busy);
  if (!use.claimed()) return context_busy();
  return guarded([&]() -> Status {
    auto& im = *impl_;
    KILN_RETURN_IF_ERROR(im.check_device_run());
    KILN_RETURN_IF_ERROR(im.device->prepare(im.input_dims()));
    im.device->set_profiler(im.profiler);
    KILN_RETURN_IF_ERROR(im.device->enqueue(im.addresses, cuda_stream));
    im.begin_run_shapes();
    for (int o : im.plan->outputs) im.run_shapes[o] = im.output_shapes[o];
    return Status::Ok();
  });
}

Status ExecutionContext::enqueue_graph(void* cuda_stream) {
  if (!impl_->device) return unsupported("CUDA graphs need an engine built for the CUDA backend");
  InUse use(impl_->busy);
  if (!use.claimed()) return context_busy();
  return guarded([&]() -> Status {
    auto& im = *impl_;
    KILN_RETURN_IF_ERROR(im.check_device_run());
    KILN_RETURN_IF_ERROR(im.device->prepare(im.input_dims()));
    im.device->set_profiler(im.profiler);
    return im.device->enqueue_graph(im.addresses, cuda_stream);
  });
}

Status ExecutionContext::synchronize() { return impl_->device ? impl_->device->synchronize(nullptr) : Status::Ok(); }

void ExecutionContext::set_profiler(IProfiler* profiler) {
  impl_->profiler = profiler;
  impl_->executor.set_profiler(profiler);
}
IProfiler* ExecutionContext::profiler() const { return impl_->profiler; }
uint64_t ExecutionContext::activation_arena_bytes() const { return impl_->device ? impl_->device->arena_bytes() : 0; }
uint64_t ExecutionContext::activation_total_bytes() const {
  return impl_->device ? impl_->device->activation_bytes() : 0;
}

Status ExecutionContext::set_input_shape(const std::string& name, const Dims& dims) {
  KILN_ASSIGN_OR_RETURN(int i, impl_->find(name));
  if (impl_->plan->io[i].mode != TensorIOMode::kINPUT) return invalid_argument("'" + name + "' is an output, not an input");
  KILN_RETURN_IF_ERROR(impl_->check_input_shape(i, dims));
  if (impl_->shapes[i] != dims) impl_->invalidate_shapes();
  impl_->shapes[i] = dims;
  return Status::Ok();
}

Status ExecutionContext::set_optimization_profile(int index) {
  int n = static_cast<int>(impl_->plan->profiles.size());
  if (index < 0 || index >= std::max(n, 1))
    return invalid_argument("optimization profile " + std::to_string(index) + " does not exist (the engine has " +
                            std::to_string(n) + ")");
  impl_->profile = index;
  impl_->invalidate_shapes();
  return Status::Ok();
}

Result<Dims> ExecutionContext::get_tensor_shape(const std::string& name) const {
  KILN_ASSIGN_OR_RETURN(int i, impl_->find(name));
  if (impl_->plan->io[i].mode == TensorIOMode::kINPUT) {
    if (!impl_->shapes[i])
      return invalid_argument("the shape of input '" + name + "' is not set (call set_input_shape)");
    return *impl_->shapes[i];
  }
  if (impl_->run_epoch == impl_->shape_epoch && impl_->run_shapes[i]) return *impl_->run_shapes[i];
  KILN_RETURN_IF_ERROR(guarded([&] { return impl_->ensure_output_shapes(); }));
  const auto& d = impl_->output_shapes[i];
  if (!d) return unsupported("the rank of output '" + name + "' depends on the input data");
  return *d;
}

Status ExecutionContext::set_tensor_address(const std::string& name, void* ptr) {
  KILN_ASSIGN_OR_RETURN(int i, impl_->find(name));
  impl_->addresses[i] = ptr;
  impl_->capacities[i] = Impl::kUnknownCapacity;
  return Status::Ok();
}

Status ExecutionContext::set_tensor_address(const std::string& name, void* ptr, uint64_t size_bytes) {
  KILN_RETURN_IF_ERROR(set_tensor_address(name, ptr));
  impl_->capacities[impl_->plan->find_io(name)] = size_bytes;
  return Status::Ok();
}

Status ExecutionContext::set_output_allocator(const std::string& name, IOutputAllocator* allocator) {
  KILN_ASSIGN_OR_RETURN(int i, impl_->find(name));
  if (impl_->plan->io[i].mode != TensorIOMode::kOUTPUT)
    return invalid_argument("'" + name + "' is an input; output allocators are for outputs");
  // Memory from a previous allocator is not the new one's to reallocate.
  if (impl_->allocators[i] != allocator) impl_->allocated[i] = nullptr;
  impl_->allocators[i] = allocator;
  return Status::Ok();
}

IOutputAllocator* ExecutionContext::get_output_allocator(const std::string& name) const {
  int i = impl_->plan->find_io(name);
  return i >= 0 ? impl_->allocators[i] : nullptr;
}

Status ExecutionContext::Impl::check_output_fits(int io, uint64_t bytes, const Dims& dims) const {
  if (capacities[io] == kUnknownCapacity || bytes <= capacities[io]) return Status::Ok();
  return invalid_argument("output '" + plan->io[io].name + "' needs " + std::to_string(bytes) + " bytes (shape " +
                          dims_to_string(dims) + ") but its bound buffer holds " + std::to_string(capacities[io]));
}

Status ExecutionContext::execute() {
  if (impl_->device) {
    KILN_RETURN_IF_ERROR(enqueue(nullptr));
    return impl_->device->synchronize(nullptr);
  }
  InUse use(impl_->busy);
  if (!use.claimed()) return context_busy();
  return guarded([&]() -> Status {
    auto& im = *impl_;
    const auto& plan = *im.plan;
    for (size_t i = 0; i < plan.io.size(); ++i)
      if (im.value_of(static_cast<int>(i)).kind != ValueKind::kTENSOR)
        return unsupported("'" + plan.io[i].name + "' is " + a_kind(im.value_of(static_cast<int>(i)).kind) +
                           ", which has no single buffer to bind; use infer()");
    for (size_t i = 0; i < plan.io.size(); ++i)
      if (!im.addresses[i] && !im.allocators[i])
        return invalid_argument(std::string(plan.io[i].mode == TensorIOMode::kINPUT ? "input '" : "output '") +
                                plan.io[i].name + "' has no bound address (call set_tensor_address)");
    KILN_RETURN_IF_ERROR(im.check_ready_inputs());
    KILN_RETURN_IF_ERROR(im.ensure_output_shapes());
    // Refuse before running what cannot be checked after it: a buffer of unknown size for an unknown shape.
    for (int o : plan.outputs) {
      if (im.allocators[o]) continue;
      const auto& d = im.output_shapes[o];
      bool data_dependent = !d || volume(*d) < 0;
      if (data_dependent && im.capacities[o] == Impl::kUnknownCapacity)
        return unsupported("output '" + plan.io[o].name +
                           "' has a data-dependent shape; use infer(), set an output allocator (set_output_allocator) "
                           "or bind a buffer with its size (set_tensor_address with size_bytes)");
      if (!data_dependent)
        KILN_RETURN_IF_ERROR(
            im.check_output_fits(o, static_cast<uint64_t>(volume(*d)) * dtype_size(im.value_of(o).dtype), *d));
    }

    std::vector<Tensor> inputs, outputs;
    for (int i : plan.inputs) inputs.push_back(Tensor::wrap(im.value_of(i).dtype, *im.shapes[i], im.addresses[i]));
    KILN_RETURN_IF_ERROR(im.executor.run(inputs, &outputs));
    // Check every output before writing any, so a failed execute() leaves the caller's buffers alone.
    for (size_t k = 0; k < plan.outputs.size(); ++k) {
      int o = plan.outputs[k];
      const Dims& got = outputs[k].shape();
      if (const auto& d = im.output_shapes[o]) {
        bool agrees = got.size() == d->size();
        for (size_t j = 0; agrees && j < got.size(); ++j) agrees = (*d)[j] < 0 || (*d)[j] == got[j];
        if (!agrees)
          return internal_error("output '" + plan.io[o].name + "' has shape " + dims_to_string(got) +
                                " but shape inference gave " + dims_to_string(*d));
      }
      if (!im.allocators[o]) KILN_RETURN_IF_ERROR(im.check_output_fits(o, outputs[k].nbytes(), got));
    }
    im.begin_run_shapes();
    for (size_t k = 0; k < plan.outputs.size(); ++k) {
      int o = plan.outputs[k];
      const std::string& name = plan.io[o].name;
      uint64_t bytes = outputs[k].nbytes();
      void* dst = im.addresses[o];
      if (IOutputAllocator* a = im.allocators[o]) {
        dst = a->reallocate_output(name.c_str(), im.allocated[o], bytes, Impl::kOutputAlignment);
        if (!dst && bytes)
          return Status(ErrorCode::kOutOfMemory, "the output allocator returned no memory for output '" + name +
                                                     "' (" + std::to_string(bytes) + " bytes, shape " +
                                                     dims_to_string(outputs[k].shape()) + ")");
        im.allocated[o] = dst;
      }
      // memmove: the caller may bind an output to the same memory as an input it passes through.
      if (bytes) std::memmove(dst, outputs[k].raw(), bytes);
      im.run_shapes[o] = outputs[k].shape();
      if (im.allocators[o]) im.allocators[o]->notify_shape(name.c_str(), outputs[k].shape());
    }
    return Status::Ok();
  });
}

Result<std::vector<std::pair<std::string, HostTensor>>> ExecutionContext::infer(
    const std::vector<std::pair<std::string, HostTensor>>& inputs) {
  using Out = std::vector<std::pair<std::string, HostTensor>>;
  InUse use(impl_->busy);
  if (!use.claimed()) return context_busy();
  try {
    const auto& plan = *impl_->plan;
    std::vector<const HostTensor*> given(plan.io.size(), nullptr);
    for (const auto& [name, t] : inputs) {
      int i = plan.find_io(name);
      if (i < 0 || plan.io[i].mode != TensorIOMode::kINPUT)
        return invalid_argument("'" + name + "' is not an input of this engine (inputs: " + list_names(plan, plan.inputs) + ")");
      if (given[i]) return invalid_argument("input '" + name + "' is given twice");
      if (t.kind != ValueKind::kTENSOR || impl_->value_of(i).kind != ValueKind::kTENSOR) {
        given[i] = &t;  // no shape to set; wrap_host_value checks the kind and the elements below
        continue;
      }
      DataType want = impl_->value_of(i).dtype;
      if (t.dtype != want)
        return invalid_argument("input '" + name + "' expects " + dtype_name(want) + " but got " + dtype_name(t.dtype));
      KILN_RETURN_IF_ERROR(set_input_shape(name, t.dims));
      size_t need = static_cast<size_t>(volume(t.dims)) * dtype_size(want);
      if (t.data.size() != need)
        return invalid_argument("input '" + name + "' has " + std::to_string(t.data.size()) + " bytes but shape " +
                                dims_to_string(t.dims) + " of " + dtype_name(want) + " needs " + std::to_string(need));
      given[i] = &t;
    }
    std::vector<Tensor> in, outs;
    for (int i : plan.inputs) {
      if (!given[i]) return invalid_argument("input '" + plan.io[i].name + "' is missing");
      const auto& v = impl_->value_of(i);
      KILN_ASSIGN_OR_RETURN(Tensor t, runtime::wrap_host_value(*given[i], v.kind, v.dtype, "input '" + plan.io[i].name + "'"));
      in.push_back(std::move(t));
    }
    KILN_RETURN_IF_ERROR(impl_->check_ready_inputs());
    if (impl_->device) {
      impl_->device->set_profiler(impl_->profiler);
      KILN_RETURN_IF_ERROR(impl_->device->run_host(in, &outs));
    } else {
      KILN_RETURN_IF_ERROR(impl_->executor.run(in, &outs));
    }
    Out result;
    impl_->begin_run_shapes();
    for (size_t k = 0; k < plan.outputs.size(); ++k) {
      int o = plan.outputs[k];
      HostTensor h = runtime::to_host_value(outs[k]);
      impl_->run_shapes[o] = h.dims;
      result.emplace_back(plan.io[o].name, std::move(h));
    }
    return result;
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kOutOfMemory, "out of memory during execution");
  } catch (const std::exception& e) {
    return internal_error(std::string("unexpected error during execution: ") + e.what());
  }
}

}  // namespace kiln
