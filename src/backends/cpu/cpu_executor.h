// CPU executor: runs an EnginePlan's nodes in order with the operators' reference CPU implementations.
#pragma once

#include <vector>

#include "common/tensor.h"
#include "kiln/runtime.h"
#include "kiln/status.h"
#include "runtime/engine_plan.h"

namespace kiln::cpu {

// Runs a control-flow body (a runtime::PlanSubgraph) on a fresh executor; the SubgraphRunner of every executor
// that hands If/Loop/Scan to the reference kernels.
Result<std::vector<Tensor>> run_plan_subgraph(const Subgraph& body, const std::vector<Tensor>& inputs);

class CpuExecutor {
 public:
  explicit CpuExecutor(const runtime::EnginePlan& plan) : plan_(plan) {}
  // inputs[k] is the tensor of plan.inputs[k]; outputs receives plan.outputs' tensors in order
  // (they may share storage with inputs or constants: copy before writing). Intermediates are
  // released after their last reader, so peak memory follows the plan's lifetimes.
  Status run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs);
  // Times each node with the host clock and reports it after the run.
  void set_profiler(IProfiler* p) { profiler_ = p; }

 private:
  const runtime::EnginePlan& plan_;
  std::vector<Tensor> slots_;
  IProfiler* profiler_ = nullptr;  // one per plan value; reused across runs to avoid reallocating the vector
};

}  // namespace kiln::cpu
