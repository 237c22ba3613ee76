// BuildProgress: forwards build phases to the user's progress monitor and to NVTX.
#include "builder/build_progress.h"

#ifdef KILN_WITH_NVTX
#include "common/nvtx.h"
#endif

namespace kiln::builder {

#ifdef KILN_WITH_NVTX
void BuildProgress::range_push(const char* name) { nvtx::push(name); }
void BuildProgress::range_pop() { nvtx::pop(); }
#else
void BuildProgress::range_push(const char*) {}
void BuildProgress::range_pop() {}
#endif

BuildProgress::~BuildProgress() {
  while (!open_.empty()) finish();
}

void BuildProgress::start(const std::string& phase, int32_t num_steps) {
  const char* parent = open_.empty() ? nullptr : open_.back().name.c_str();
  if (monitor_) monitor_->phase_start(phase.c_str(), parent, num_steps);
  open_.push_back({phase, 0});
  range_push(phase.c_str());
}

Status BuildProgress::step() {
  if (open_.empty()) return Status::Ok();
  Open& p = open_.back();
  const int32_t step = p.next_step++;
  if (monitor_ && !monitor_->step_complete(p.name.c_str(), step))
    return invalid_argument("the build was cancelled by its progress monitor (phase '" + p.name + "', step " +
                            std::to_string(step) + ")");
  return Status::Ok();
}

void BuildProgress::finish() {
  if (open_.empty()) return;
  range_pop();
  if (monitor_) monitor_->phase_finish(open_.back().name.c_str());
  open_.pop_back();
}

}  // namespace kiln::builder
