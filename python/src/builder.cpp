// Builder, BuilderConfig, OptimizationProfile and OnnxParser bindings (build time: these link the optimizer).
#include "kiln/builder.h"

#include <filesystem>

#include "common.h"
#include "kiln/onnx_parser.h"

namespace kiln::py_bind {
namespace {

using NetPtr = std::shared_ptr<NetworkDefinition>;

std::pair<const void*, size_t> bytes_of(const py::buffer& b) {
  py::buffer_info info = b.request();
  return {info.ptr, static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize)};
}

// Forwards build progress to Python overrides. The builder calls these from the building thread with the GIL
// released, and they must not throw: an exception in step_complete cancels the build (reported as
// unraisable, as in the others, which otherwise carry on).
class ProgressMonitorTrampoline : public IProgressMonitor {
 public:
  void phase_start(const char* phase, const char* parent, int32_t num_steps) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      if (py::function f = py::get_override(static_cast<const IProgressMonitor*>(this), "phase_start"))
        f(phase, parent ? py::object(py::str(parent)) : py::object(py::none()), num_steps);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.IProgressMonitor.phase_start");
    }
  }
  bool step_complete(const char* phase, int32_t step) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      if (py::function f = py::get_override(static_cast<const IProgressMonitor*>(this), "step_complete")) {
        py::object r = f(phase, step);
        return r.is_none() || py::bool_(r);  // None: a monitor that only watches
      }
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.IProgressMonitor.step_complete");
      return false;
    }
    return true;
  }
  void phase_finish(const char* phase) noexcept override {
    py::gil_scoped_acquire gil;
    try {
      if (py::function f = py::get_override(static_cast<const IProgressMonitor*>(this), "phase_finish")) f(phase);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.IProgressMonitor.phase_finish");
    }
  }
};

}  // namespace

void bind_builder(py::module_& m) {
  py::class_<IProgressMonitor, ProgressMonitorTrampoline>(
      m, "IProgressMonitor",
      "Build progress (TensorRT's IProgressMonitor): subclass it, call IProgressMonitor.__init__(self) and "
      "implement phase_start(phase_name, parent_phase, num_steps), step_complete(phase_name, step) -> bool "
      "(False cancels the build) and phase_finish(phase_name).")
      .def(py::init<>())
      .def("phase_start", &IProgressMonitor::phase_start, py::arg("phase_name"), py::arg("parent_phase"),
           py::arg("num_steps"))
      .def("step_complete", &IProgressMonitor::step_complete, py::arg("phase_name"), py::arg("step"))
      .def("phase_finish", &IProgressMonitor::phase_finish, py::arg("phase_name"));

  py::enum_<BuilderFlag>(m, "BuilderFlag")
      .value("TF32", BuilderFlag::kTF32)
      .value("FP16", BuilderFlag::kFP16)
      .value("BF16", BuilderFlag::kBF16)
      .value("INT8", BuilderFlag::kINT8)
      .value("FP8", BuilderFlag::kFP8)
      // TensorRT's precision-constraint flags map onto BuilderConfig::set_precision_constraints (kiln/builder.py
      // handles them); their values lie past the C++ flags.
      .value("OBEY_PRECISION_CONSTRAINTS", static_cast<BuilderFlag>(16))
      .value("PREFER_PRECISION_CONSTRAINTS", static_cast<BuilderFlag>(17));

  py::class_<OptimizationProfile>(m, "IOptimizationProfile",
                                  "min/opt/max shapes of the dynamic network inputs, for one range of shapes.")
      .def(py::init<>())
      .def(
          "set_shape",
          [](OptimizationProfile& p, const std::string& input, const Dims& min, const Dims& opt, const Dims& max) {
            check(p.set_shape(input, min, opt, max));
          },
          py::arg("input"), py::arg("min"), py::arg("opt"), py::arg("max"))
      .def("get_shape",
           [](const OptimizationProfile& p, const std::string& input) {
             auto it = p.shapes().find(input);
             if (it == p.shapes().end())
               throw StatusError{invalid_argument("the profile has no shapes for input '" + input + "'")};
             return std::vector<py::tuple>{dims_to_tuple(it->second.min), dims_to_tuple(it->second.opt),
                                           dims_to_tuple(it->second.max)};
           })
      .def_property_readonly("inputs", [](const OptimizationProfile& p) {
        std::vector<std::string> names;
        for (auto& [name, b] : p.shapes()) names.push_back(name);
        return names;
      });

  py::class_<BuilderConfig>(m, "_BuilderConfig")
      .def(py::init<>())
      .def("copy", [](const BuilderConfig& c) { return BuilderConfig(c); })
      .def("set_layer_precision", &BuilderConfig::set_layer_precision)
      .def_property("precision_constraints", &BuilderConfig::precision_constraints,
                    &BuilderConfig::set_precision_constraints)
      .def("set_flag", &BuilderConfig::set_flag)
      .def("clear_flag", &BuilderConfig::clear_flag)
      .def("get_flag", &BuilderConfig::get_flag)
      .def("add_optimization_profile", &BuilderConfig::add_optimization_profile)
      .def_property_readonly("num_optimization_profiles",
                             [](const BuilderConfig& c) { return static_cast<int>(c.profiles().size()); })
      .def_property("backend", &BuilderConfig::backend, &BuilderConfig::set_backend)
      .def_property("dump_after", &BuilderConfig::dump_after, &BuilderConfig::set_dump_after)
      // The Python IBuilderConfig keeps the monitor object alive; the C++ config only borrows it.
      .def("set_progress_monitor", [](BuilderConfig& c, IProgressMonitor* m) { c.set_progress_monitor(m); },
           py::arg("monitor").none(true));

  py::class_<Builder>(m, "_Builder")
      .def(py::init<ILogger&>(), py::keep_alive<1, 2>())
      .def("build_serialized_network", [](Builder& b, const NetPtr& net, const BuilderConfig& config) {
        Result<std::vector<uint8_t>> r = [&] {
          py::gil_scoped_release release;  // the logger re-acquires it for Python loggers
          return b.build_serialized_network(*net, config);
        }();
        std::vector<uint8_t> bytes = take(std::move(r));
        return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      });

  py::class_<ParserError>(m, "ParserError", "One problem the ONNX parser found, with the node it concerns.")
      .def("desc", [](const ParserError& e) { return e.description; })
      .def("node", [](const ParserError& e) { return e.node_index; })
      .def("node_name", [](const ParserError& e) { return e.node_name; })
      .def("node_operator", [](const ParserError& e) { return e.op_type; })
      .def("domain", [](const ParserError& e) { return e.domain; })
      .def("opset", [](const ParserError& e) { return e.opset; })
      .def("__str__", &ParserError::to_string)
      .def("__repr__", [](const ParserError& e) { return "<kiln.ParserError " + e.to_string() + ">"; });

  py::class_<OnnxParser>(m, "_OnnxParser")
      .def(py::init([](const NetPtr& net, ILogger& logger) { return std::make_unique<OnnxParser>(*net, logger); }),
           py::keep_alive<1, 2>(), py::keep_alive<1, 3>())
      .def(
          "parse",
          [](OnnxParser& p, const py::buffer& model, const std::optional<std::string>& path) {
            auto [data, size] = bytes_of(model);
            std::string base = ".";
            if (path) base = std::filesystem::path(*path).parent_path().string();
            if (base.empty()) base = ".";
            Status st;
            {
              py::gil_scoped_release release;
              st = p.parse(data, size, base);
            }
            check(st);
          },
          py::arg("model"), py::arg("path") = std::nullopt)
      .def("parse_from_file",
           [](OnnxParser& p, const std::string& path) {
             Status st;
             {
               py::gil_scoped_release release;
               st = p.parse_from_file(path);
             }
             check(st);
           })
      .def_property_readonly("num_errors", &OnnxParser::num_errors)
      .def("get_error",
           [](const OnnxParser& p, int i) {
             if (i < 0 || i >= p.num_errors())
               throw py::index_error("parser error " + std::to_string(i) + " does not exist (the parser holds " +
                                     std::to_string(p.num_errors()) + ")");
             return p.get_error(i);
           })
      .def("clear_errors", &OnnxParser::clear_errors);
}

}  // namespace kiln::py_bind
