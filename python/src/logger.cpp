// ILogger (subclassable from Python) and Logger (prints to sys.stderr above a minimum severity), as in TensorRT.
#include "kiln/logger.h"

#include "common.h"

namespace kiln::py_bind {
namespace {

using Severity = ILogger::Severity;

// The concrete logger: writes through Python's sys.stderr so notebooks and pytest capture it.
class ConsoleLogger : public ILogger {
 public:
  explicit ConsoleLogger(Severity min_severity) : min_severity(min_severity) {}
  void log(Severity severity, const char* msg) noexcept override {
    if (severity > min_severity) return;
    static const char* kTags[] = {"F", "E", "W", "I", "V"};
    py::gil_scoped_acquire gil;
    try {
      std::string line = std::string("[kiln] [") + kTags[static_cast<int>(severity)] + "] " + msg + "\n";
      py::module_::import("sys").attr("stderr").attr("write")(line);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("kiln.Logger.log");
    }
  }
  Severity min_severity;
};

// Forwards log() to a Python override. Library code calls loggers from any thread, with or without the GIL,
// and log() must not throw: Python errors are reported as unraisable instead.
template <typename Base>
class LoggerTrampoline : public Base {
 public:
  using Base::Base;
  void log(Severity severity, const char* msg) noexcept override {
    {
      py::gil_scoped_acquire gil;
      try {
        if (py::function f = py::get_override(static_cast<const Base*>(this), "log")) {
          f(severity, msg);
          return;
        }
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("kiln.ILogger.log");
        return;
      }
    }
    if constexpr (!std::is_abstract_v<Base>) Base::log(severity, msg);
  }
};

}  // namespace

void bind_logger(py::module_& m) {
  py::class_<ILogger, LoggerTrampoline<ILogger>> ilogger(
      m, "ILogger", "Logger interface: subclass it, call ILogger.__init__(self) and implement log(severity, msg).");
  py::enum_<Severity>(ilogger, "Severity", py::arithmetic())
      .value("INTERNAL_ERROR", Severity::kINTERNAL_ERROR)
      .value("ERROR", Severity::kERROR)
      .value("WARNING", Severity::kWARNING)
      .value("INFO", Severity::kINFO)
      .value("VERBOSE", Severity::kVERBOSE)
      .export_values();
  ilogger.def(py::init<>()).def("log", &ILogger::log, py::arg("severity"), py::arg("msg"));

  py::class_<ConsoleLogger, ILogger, LoggerTrampoline<ConsoleLogger>>(
      m, "Logger", "Prints messages at or above min_severity to sys.stderr.")
      .def(py::init<Severity>(), py::arg("min_severity") = Severity::kWARNING)
      .def_readwrite("min_severity", &ConsoleLogger::min_severity)
      .def("log", &ConsoleLogger::log, py::arg("severity"), py::arg("msg"));
}

}  // namespace kiln::py_bind
