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

  explicit PassManager(PassList passes) : passes_(std::move(passes)) {}
  // Stops at the first failing pass (or failed verification), the error naming the pass.
  Status run(ir::Graph& g, PassContext& ctx);
  const std::vector<Record>& records() const { return records_; }
  std::vector<std::string> pass_names() const;

 private:
  PassList passes_;
  std::vector<Record> records_;
};

}  // namespace kiln::passes
