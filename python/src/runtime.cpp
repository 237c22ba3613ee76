// Runtime, Engine and ExecutionContext bindings, IProfiler and IOutputAllocator for Python subclasses, and the
// array-in/array-out run behind Engine.infer. Addresses are integers: host pointers on the CPU backend, device
// pointers once a GPU backend binds them; stream handles are accepted and, on the CPU backend, unused.
#include "kiln/runtime.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>

#include "common.h"
#include "runtime/engine_plan.h"

namespace kiln::py_bind {
namespace {

using EnginePtr = std::shared_ptr<Engine>;

class PyProfiler : public IProfiler {
 public:
  void report_layer_time(const char* layer_name, float ms) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      if (py::function f = py::get_override(static_cast<const IProfiler*>(this), "report_layer_time"))
        f(layer_name, ms);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.IProfiler.report_layer_time");
    }
  }
};

class PyOutputAllocator : public IOutputAllocator {
 public:
  void* reallocate_output(const char* name, void* current, uint64_t size, uint64_t alignment) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      if (py::function f = py::get_override(static_cast<const IOutputAllocator*>(this), "reallocate_output")) {
        py::object r = f(name, reinterpret_cast<uintptr_t>(current), size, alignment);
        return r.is_none() ? nullptr : reinterpret_cast<void*>(r.cast<uintptr_t>());
      }
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.IOutputAllocator.reallocate_output");
    } catch (const py::cast_error&) {
      PyErr_SetString(PyExc_TypeError, "reallocate_output must return an address (int) or None");
      PyErr_WriteUnraisable(nullptr);
    }
    return nullptr;
  }
  void notify_shape(const char* name, const Dims& dims) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      if (py::function f = py::get_override(static_cast<const IOutputAllocator*>(this), "notify_shape"))
        f(name, dims_to_tuple(dims));
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.IOutputAllocator.notify_shape");
    }
  }
};

// Gives every output fresh memory that becomes a NumPy array afterwards, so infer() handles outputs whose shape
// is only known during the run without a second copy.
class ArrayAllocator : public IOutputAllocator {
 public:
  struct Out {
    void* mem = nullptr;
    Dims dims;
  };
  ~ArrayAllocator() override {
    for (auto& [name, o] : outs) std::free(o.mem);
  }
  void* reallocate_output(const char* name, void* current, uint64_t size, uint64_t alignment) noexcept override {
    Out& o = outs[name];
    std::free(o.mem);
    uint64_t rounded = (std::max<uint64_t>(size, 1) + alignment - 1) / alignment * alignment;
    o.mem = std::aligned_alloc(alignment, rounded);
    return o.mem;
  }
  void notify_shape(const char* name, const Dims& dims) noexcept override { outs[name].dims = dims; }
  std::map<std::string, Out> outs;
};

std::string io_names(const Engine& e) {
  std::string s;
  for (int i = 0; i < e.num_io_tensors(); ++i) s += (i ? ", '" : "'") + e.get_tensor_name(i) + "'";
  return s;
}

void check_name(const Engine& e, const std::string& name) {
  if (e.get_tensor_mode(name) == TensorIOMode::kNONE)
    throw StatusError{
        invalid_argument("the engine has no I/O tensor named '" + name + "' (its tensors: " + io_names(e) + ")")};
}

// The context with what the C++ context only borrows: the engine it came from, the Python profiler and
// allocators (kept alive here), and the bound addresses (which the C++ API does not report back).
struct Context {
  EnginePtr engine;
  std::unique_ptr<ExecutionContext> ctx;
  py::object profiler = py::none();
  std::map<std::string, py::object> allocators;
  std::map<std::string, std::pair<uintptr_t, std::optional<uint64_t>>> addresses;

  void bind(const std::string& name, uintptr_t ptr, std::optional<uint64_t> size) {
    void* p = reinterpret_cast<void*>(ptr);
    check(size ? ctx->set_tensor_address(name, p, *size) : ctx->set_tensor_address(name, p));
    addresses[name] = {ptr, size};
  }

  // With a stream: TensorRT's enqueueV3 (asynchronous on the CUDA backend); without: a synchronous run.
  void execute(std::optional<uintptr_t> stream) {
    Status st;
    {
      py::gil_scoped_release release;
      st = stream ? ctx->enqueue(reinterpret_cast<void*>(*stream)) : ctx->execute();
    }
    check(st);
  }

  // Device engines take device addresses, so host arrays go through the context's copying infer().
  std::vector<py::tuple> run_host_copies(const std::vector<std::tuple<std::string, uintptr_t, Dims>>& inputs) {
    std::vector<std::pair<std::string, HostTensor>> in;
    for (auto& [name, ptr, dims] : inputs) {
      HostTensor t;
      t.dtype = engine->get_tensor_dtype(name);
      t.dims = dims;
      const auto* p = reinterpret_cast<const uint8_t*>(ptr);
      t.data.assign(p, p + volume(dims) * static_cast<int64_t>(dtype_size(t.dtype)));
      in.emplace_back(name, std::move(t));
    }
    Result<std::vector<std::pair<std::string, HostTensor>>> r = [&] {
      py::gil_scoped_release release;
      return ctx->infer(in);
    }();
    std::vector<py::tuple> result;
    for (auto& [name, t] : take(std::move(r))) {
      // Explicit strides: pybind11 < 2.12 computes default strides from NumPy 1's descriptor layout, which NumPy 2
      // changed (the device's NumPy 2 got a non-contiguous byte array that .view() refused).
      py::array_t<uint8_t> raw({static_cast<py::ssize_t>(t.data.size())}, {py::ssize_t{1}});
      if (!t.data.empty()) std::memcpy(raw.mutable_data(), t.data.data(), t.data.size());
      result.push_back(py::make_tuple(name, raw, dims_to_tuple(t.dims), t.dtype));
    }
    return result;
  }

  // inputs: (name, host address, shape), all C-contiguous and of the engine's dtype (checked by the caller).
  std::vector<py::tuple> run_arrays(const std::vector<std::tuple<std::string, uintptr_t, Dims>>& inputs) {
    if (engine->backend() != Backend::kCPU) return run_host_copies(inputs);
    const Engine& e = *engine;
    ArrayAllocator alloc;
    std::vector<std::string> outputs;
    std::map<std::string, IOutputAllocator*> previous;
    for (int i = 0; i < e.num_io_tensors(); ++i)
      if (e.get_tensor_mode(e.get_tensor_name(i)) == TensorIOMode::kOUTPUT) outputs.push_back(e.get_tensor_name(i));
    auto saved = addresses;
    Status st;
    {
      py::gil_scoped_release release;
      for (auto& [name, ptr, dims] : inputs) {
        st = ctx->set_input_shape(name, dims);
        if (st.ok()) st = ctx->set_tensor_address(name, reinterpret_cast<void*>(ptr));
        if (!st.ok()) break;
      }
      for (auto& name : outputs) {
        previous[name] = ctx->get_output_allocator(name);
        if (st.ok()) st = ctx->set_output_allocator(name, &alloc);
      }
      if (st.ok()) st = ctx->execute();
      // Leave the user's own bindings as they were.
      for (auto& [name, a] : previous) (void)ctx->set_output_allocator(name, a);
      for (auto& [name, ptr, dims] : inputs) {
        auto it = saved.find(name);
        if (it == saved.end()) {
          (void)ctx->set_tensor_address(name, nullptr);
        } else {
          void* p = reinterpret_cast<void*>(it->second.first);
          auto size = it->second.second;
          (void)(size ? ctx->set_tensor_address(name, p, *size) : ctx->set_tensor_address(name, p));
        }
      }
    }
    check(st);
    std::vector<py::tuple> result;
    for (auto& name : outputs) {
      ArrayAllocator::Out& o = alloc.outs[name];
      DataType dt = e.get_tensor_dtype(name);
      auto bytes = static_cast<py::ssize_t>(volume(o.dims) * static_cast<int64_t>(dtype_size(dt)));
      // The array owns the memory from here on.
      py::capsule owner(o.mem, [](void* p) { std::free(p); });
      py::array_t<uint8_t> raw({bytes}, {py::ssize_t{1}}, static_cast<uint8_t*>(o.mem), owner);
      o.mem = nullptr;
      result.push_back(py::make_tuple(name, raw, dims_to_tuple(o.dims), dt));
    }
    return result;
  }
};

}  // namespace

void bind_runtime(py::module_& m) {
  py::class_<IProfiler, PyProfiler>(m, "IProfiler",
                                    "Per-layer timing callback: subclass it, call IProfiler.__init__(self) and "
                                    "implement report_layer_time(layer_name, ms).")
      .def(py::init<>())
      .def("report_layer_time", &IProfiler::report_layer_time, py::arg("layer_name"), py::arg("ms"));

  py::class_<IOutputAllocator, PyOutputAllocator>(
      m, "IOutputAllocator",
      "Gives outputs memory during execution: implement reallocate_output(tensor_name, memory, size, alignment) "
      "returning an address (or None) and notify_shape(tensor_name, shape).")
      .def(py::init<>());

  py::class_<Context>(m, "_ExecutionContext")
      .def("set_input_shape",
           [](Context& c, const std::string& name, const Dims& d) { check(c.ctx->set_input_shape(name, d)); })
      .def("get_tensor_shape",
           [](Context& c, const std::string& name) { return dims_to_tuple(take(c.ctx->get_tensor_shape(name))); })
      .def("set_tensor_address", &Context::bind, py::arg("name"), py::arg("ptr"), py::arg("size") = std::nullopt)
      .def("get_tensor_address",
           [](const Context& c, const std::string& name) -> uintptr_t {
             check_name(*c.engine, name);
             auto it = c.addresses.find(name);
             return it == c.addresses.end() ? 0 : it->second.first;
           })
      .def("set_output_allocator",
           [](Context& c, const std::string& name, py::object alloc) {
             IOutputAllocator* a = alloc.is_none() ? nullptr : alloc.cast<IOutputAllocator*>();
             check(c.ctx->set_output_allocator(name, a));
             if (a)
               c.allocators[name] = alloc;
             else
               c.allocators.erase(name);
           })
      .def("get_output_allocator",
           [](const Context& c, const std::string& name) -> py::object {
             auto it = c.allocators.find(name);
             return it == c.allocators.end() ? py::none() : it->second;
           })
      .def("set_optimization_profile", [](Context& c, int i) { check(c.ctx->set_optimization_profile(i)); })
      .def_property(
          "profiler", [](const Context& c) { return c.profiler; },
          [](Context& c, py::object p) {
            c.ctx->set_profiler(p.is_none() ? nullptr : p.cast<IProfiler*>());
            c.profiler = p;
          })
      .def("execute", &Context::execute, py::arg("stream") = std::nullopt)
      .def("run_arrays", &Context::run_arrays);

  py::class_<Engine, EnginePtr>(m, "_Engine")
      .def_property_readonly("num_io_tensors", &Engine::num_io_tensors)
      .def("get_tensor_name",
           [](const Engine& e, int i) {
             if (i < 0 || i >= e.num_io_tensors())
               throw py::index_error("I/O tensor index " + std::to_string(i) + " is out of range (the engine has " +
                                     std::to_string(e.num_io_tensors()) + ")");
             return e.get_tensor_name(i);
           })
      .def("get_tensor_mode", [](const Engine& e, const std::string& n) { return e.get_tensor_mode(n); })
      .def("get_tensor_dtype",
           [](const Engine& e, const std::string& n) {
             check_name(e, n);
             return e.get_tensor_dtype(n);
           })
      .def("get_tensor_shape",
           [](const Engine& e, const std::string& n) {
             check_name(e, n);
             return dims_to_tuple(e.get_tensor_shape(n));
           })
      .def("get_profile_shape",
           [](const Engine& e, const std::string& n, int profile) {
             check_name(e, n);
             Dims mn, opt, mx;
             check(e.get_profile_shape(n, profile, &mn, &opt, &mx));
             return std::vector<py::tuple>{dims_to_tuple(mn), dims_to_tuple(opt), dims_to_tuple(mx)};
           })
      .def_property_readonly("num_optimization_profiles", &Engine::num_optimization_profiles)
      .def_property_readonly("num_layers", &Engine::num_layers)
      .def_property_readonly("backend", &Engine::backend)
      .def_property_readonly("kiln_version", &Engine::kiln_version)
      .def_property_readonly("layer_names",
                             [](const Engine& e) {
                               std::vector<std::string> names;
                               for (auto& n : e.plan().nodes) names.push_back(n.name);
                               return names;
                             })
      .def("create_execution_context",
           [](const EnginePtr& e) {
             auto c = std::make_unique<Context>();
             c->engine = e;
             c->ctx = e->create_execution_context();
             return c;
           })
      .def("serialize", [](const Engine& e) {
        std::vector<uint8_t> b = e.serialize();
        return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
      });

  py::class_<Runtime>(m, "_Runtime")
      .def(py::init<ILogger&>(), py::keep_alive<1, 2>())
      .def("deserialize_engine", [](Runtime& r, const py::buffer& blob) {
        py::buffer_info info = blob.request();
        Result<std::unique_ptr<Engine>> e = [&] {
          py::gil_scoped_release release;
          return r.deserialize_engine(info.ptr, static_cast<size_t>(info.size * info.itemsize));
        }();
        return EnginePtr(take(std::move(e)));
      });

  m.def("version", [] { return std::string(kiln_version_string()); });
}

}  // namespace kiln::py_bind
