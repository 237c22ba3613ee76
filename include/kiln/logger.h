// Logger interface with TensorRT's severities; every library message goes through one of these.
#pragma once

#include <string>

namespace kiln {

class ILogger {
 public:
  enum class Severity { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual ~ILogger() = default;
  virtual void log(Severity severity, const char* msg) noexcept = 0;
};

// Writes to stderr every message at or above min_severity ("[W] message").
class StderrLogger : public ILogger {
 public:
  explicit StderrLogger(Severity min_severity = Severity::kWARNING) : min_(min_severity) {}
  void log(Severity severity, const char* msg) noexcept override;
  void set_min_severity(Severity s) { min_ = s; }

 private:
  Severity min_;
};

// The logger used when the caller gives none (warnings and errors to stderr).
ILogger& default_logger();

}  // namespace kiln
