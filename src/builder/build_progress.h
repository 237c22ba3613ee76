// BuildProgress: the builder's side of IProgressMonitor, with a matching NVTX range around every phase.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/builder.h"
#include "kiln/status.h"

namespace kiln::builder {

// Phases nest in the order they are opened; the innermost open phase is the parent of the next one. Safe to
// use with no monitor (only the NVTX ranges remain, and those cost nothing without a profiler attached).
class BuildProgress {
 public:
  explicit BuildProgress(IProgressMonitor* monitor) : monitor_(monitor) {}
  ~BuildProgress();  // finishes phases an early return left open
  BuildProgress(const BuildProgress&) = delete;
  BuildProgress& operator=(const BuildProgress&) = delete;

  void start(const std::string& phase, int32_t num_steps);
  // Completes the next step of the innermost phase; an error when the monitor cancels the build.
  Status step();
  void finish();  // the innermost phase

  // Open phase for the scope of one block (finished by the destructor, also on early returns).
  class Scope {
   public:
    Scope(BuildProgress& p, const std::string& phase, int32_t num_steps) : p_(p), depth_(p.depth()) {
      p_.start(phase, num_steps);
    }
    ~Scope() {
      while (p_.depth() > depth_) p_.finish();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    BuildProgress& p_;
    size_t depth_;
  };

  size_t depth() const { return open_.size(); }
  static void range_push(const char* name);  // NVTX, "kiln" domain; no-op in builds without the CUDA toolkit
  static void range_pop();

 private:
  struct Open {
    std::string name;
    int32_t next_step = 0;
  };
  IProgressMonitor* monitor_;
  std::vector<Open> open_;
};

}  // namespace kiln::builder
