// CPU executor: runs an EnginePlan's nodes in order with the operators' reference CPU implementations.
#pragma once

#include <vector>

#include "common/tensor.h"
#include "kiln/runtime.h"
#include "kiln/status.h"
#include "runtime/engine_plan.h"

namespace kiln::cpu {

class CpuExecutor {
 public:
  explicit CpuExecutor(const runtime::EnginePlan& plan) : plan_(plan) {}
  // inputs[k] is the tensor of plan.inputs[k]; outputs receives plan.outputs' tensors in order
  // (they may share storage with inputs or constants: copy before writing). Intermediates are
  // released after their last reader, so peak memory follows the plan's lifetimes.
  Status run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs);
  // When set, each node is timed and the times are reported after a successful run.
  void set_profiler(IProfiler* profiler) { profiler_ = profiler; }
  IProfiler* profiler() const { return profiler_; }

 private:
  const runtime::EnginePlan& plan_;
  std::vector<Tensor> slots_;  // one per plan value; reused across runs to avoid reallocating the vector
  IProfiler* profiler_ = nullptr;
  std::vector<float> node_ms_;  // per node of the current run, while a profiler is set
};

}  // namespace kiln::cpu
