// PassManager: runs an ordered list of passes with optional verification, graph dumps and per-pass reports.
#pragma once

#include "passes/pass.h"

namespace kiln::passes {

class PassManager {
 public:
  struct Record {
    std::string name;
    int changes = 0;
    double ms = 0;
  };

  // Build progress and profiler ranges: `before` runs as a pass starts; `after` once it ends, failed or not
  // (`ok` says which), and returning false stops the pipeline with a cancellation error.
  struct Hooks {
    std::function<void(size_t index, const std::string& name)> before;
    std::function<bool(size_t index, const std::string& name, bool ok)> after;
  };

  explicit PassManager(PassList passes) : passes_(std::move(passes)) {}
  void set_hooks(Hooks hooks) { hooks_ = std::move(hooks); }
  // Stops at the first failing pass (or failed verification), the error naming the pass.
  Status run(ir::Graph& g, PassContext& ctx);
  const std::vector<Record>& records() const { return records_; }
  std::vector<std::string> pass_names() const;

 private:
  PassList passes_;
  std::vector<Record> records_;
  Hooks hooks_;
};

}  // namespace kiln::passes
