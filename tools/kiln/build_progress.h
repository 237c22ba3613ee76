// The CLI's build progress display: a live status line on a terminal, plain log lines otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kiln/builder.h"
#include "kiln/logger.h"

namespace kiln::cli {

// Also the build's logger: in live mode a message first clears the status line, which is then drawn again
// below it, so log lines and the live line do not run into each other.
class ProgressDisplay final : public IProgressMonitor, public ILogger {
 public:
  enum class Mode { kLive, kPlain, kNone };
  // "auto" picks kLive when stderr is a terminal, else kPlain; "live", "plain" and "none" force one.
  static Mode mode_for(const std::string& setting);
  // Live mode redraws one line on `out` (stderr); plain mode writes lines to `out` (stdout). Log messages
  // go on to `logger`.
  ProgressDisplay(Mode mode, std::FILE* out, ILogger& logger);

  void log(Severity severity, const char* msg) noexcept override;

  void phase_start(const char* phase, const char* parent, int32_t num_steps) noexcept override;
  bool step_complete(const char* phase, int32_t step) noexcept override;
  void phase_finish(const char* phase) noexcept override;

 private:
  using Clock = std::chrono::steady_clock;
  struct Phase {
    std::string name;
    int32_t steps = 0, done = 0;
    Clock::time_point start;
    Clock::time_point last_line;  // plain mode: when this phase last printed a step line
  };
  double seconds_since(Clock::time_point t) const;
  void draw_live(bool force);
  void plain(const Phase& p, const std::string& what);

  Mode mode_;
  std::FILE* out_;
  ILogger& logger_;
  std::vector<Phase> open_;
  Clock::time_point build_start_, last_draw_;
};

}  // namespace kiln::cli
