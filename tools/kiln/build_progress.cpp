// ProgressDisplay: draws the builder's phases (passes done, layers tuned, elapsed time) for a person or a log.
#include "build_progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

namespace kiln::cli {

namespace {
// Plain mode prints a phase's intermediate steps at most this often, so a log shows a long phase moving
// without one line per pass or per layer.
constexpr double kPlainStepInterval = 1.0;
// Live mode redraws at most this often: enough to look live, without the redraws costing build time.
constexpr double kLiveRedrawInterval = 0.05;

std::string counts(int32_t done, int32_t steps) {
  return steps > 0 ? std::to_string(done) + "/" + std::to_string(steps) : std::string();
}
}  // namespace

ProgressDisplay::Mode ProgressDisplay::mode_for(const std::string& setting) {
  if (setting == "live") return Mode::kLive;
  if (setting == "plain") return Mode::kPlain;
  if (setting == "none") return Mode::kNone;
  return isatty(STDERR_FILENO) ? Mode::kLive : Mode::kPlain;
}

ProgressDisplay::ProgressDisplay(Mode mode, std::FILE* out, ILogger& logger)
    : mode_(mode), out_(out), logger_(logger) {}

void ProgressDisplay::log(Severity severity, const char* msg) noexcept {
  const bool live_line = mode_ == Mode::kLive && !open_.empty();
  if (live_line) {
    std::fprintf(out_, "\r\033[K");
    std::fflush(out_);
  }
  logger_.log(severity, msg);
  if (live_line) draw_live(true);
}

double ProgressDisplay::seconds_since(Clock::time_point t) const {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void ProgressDisplay::plain(const Phase& p, const std::string& what) {
  std::string indent(2 * (open_.empty() ? 0 : open_.size() - 1), ' ');
  std::fprintf(out_, "[build] %s%s: %s\n", indent.c_str(), p.name.c_str(), what.c_str());
  std::fflush(out_);
}

void ProgressDisplay::draw_live(bool force) {
  const auto now = Clock::now();
  if (!force && std::chrono::duration<double>(now - last_draw_).count() < kLiveRedrawInterval) return;
  last_draw_ = now;
  char elapsed[32];
  std::snprintf(elapsed, sizeof elapsed, "%.1f s", seconds_since(build_start_));
  std::string line = std::string("[build ") + elapsed + "]";
  for (size_t i = 0; i < open_.size(); ++i) {
    line += i ? " > " : " ";
    line += open_[i].name;
    if (open_[i].steps > 0) line += " " + counts(open_[i].done, open_[i].steps);
  }
  // A line longer than the terminal would wrap, and \r would then redraw only its last row.
  winsize ws{};
  size_t width = ioctl(fileno(out_), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
  if (line.size() >= width) line.resize(width - 1);
  std::fprintf(out_, "\r\033[K%s", line.c_str());
  std::fflush(out_);
}

void ProgressDisplay::phase_start(const char* phase, const char* parent, int32_t num_steps) noexcept {
  if (mode_ == Mode::kNone) return;
  const auto now = Clock::now();
  if (open_.empty()) build_start_ = now;
  open_.push_back({phase, num_steps, 0, now, now});
  if (mode_ == Mode::kPlain)
    plain(open_.back(), num_steps > 0 ? "started, " + std::to_string(num_steps) + " steps" : "started");
  else
    draw_live(true);
}

bool ProgressDisplay::step_complete(const char* phase, int32_t step) noexcept {
  if (mode_ == Mode::kNone || open_.empty() || open_.back().name != phase) return true;
  Phase& p = open_.back();
  p.done = step + 1;
  if (mode_ == Mode::kLive) {
    draw_live(false);
  } else if (p.done < p.steps && seconds_since(p.last_line) >= kPlainStepInterval) {
    p.last_line = Clock::now();
    char t[32];
    std::snprintf(t, sizeof t, "%.1f s", seconds_since(p.start));
    plain(p, counts(p.done, p.steps) + " after " + t);
  }
  return true;
}

void ProgressDisplay::phase_finish(const char* phase) noexcept {
  if (mode_ == Mode::kNone || open_.empty() || open_.back().name != phase) return;
  const Phase& p = open_.back();
  if (mode_ == Mode::kPlain) {
    char t[48];
    std::snprintf(t, sizeof t, "%.3f s", seconds_since(p.start));
    // A phase a failure cut short says so, rather than "done".
    if (p.done < p.steps)
      plain(p, "stopped at " + counts(p.done, p.steps) + " after " + t);
    else
      plain(p, (p.steps > 0 ? "done " + counts(p.done, p.steps) : std::string("done")) + " in " + t);
  }
  open_.pop_back();
  if (mode_ == Mode::kLive) {
    if (open_.empty()) {  // leave the terminal clean for the build summary that follows
      std::fprintf(out_, "\r\033[K");
      std::fflush(out_);
    } else {
      draw_live(true);
    }
  }
}

}  // namespace kiln::cli
