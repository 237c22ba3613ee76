// CPU executor: node-by-node execution with output dtype/shape checks and early release of intermediates.
#include "backends/cpu/cpu_executor.h"

#include <chrono>

namespace kiln::cpu {

namespace {

std::string where(const runtime::PlanNode& n) { return "node '" + n.name + "' (" + n.op_type + ")"; }

Status check_output(const runtime::PlanNode& n, const runtime::PlanValue& v, const Tensor& t) {
  if (t.dtype() != v.dtype)
    return internal_error(where(n) + " produced " + dtype_name(t.dtype()) + " for '" + v.name + "' but the engine expects " +
                          dtype_name(v.dtype));
  if (!v.rank_known) return Status::Ok();
  bool ok = t.rank() == static_cast<int>(v.shape.size());
  for (int d = 0; ok && d < t.rank(); ++d) ok = !v.shape[d].is_static() || v.shape[d].value == t.dim(d);
  if (!ok)
    return internal_error(where(n) + " produced shape " + dims_to_string(t.shape()) + " for '" + v.name +
                          "' but the engine expects " + ops::shape_to_string(v.shape));
  return Status::Ok();
}

}  // namespace

// Bodies are small and run once per iteration, so a fresh slot vector per run costs little next to the ops.
Result<std::vector<Tensor>> run_plan_subgraph(const Subgraph& body, const std::vector<Tensor>& inputs) {
  const auto* sub = dynamic_cast<const runtime::PlanSubgraph*>(&body);
  if (!sub) return internal_error("subgraph is not part of a loaded engine");
  const runtime::EnginePlan& plan = sub->plan();
  if (inputs.size() != plan.inputs.size())
    return internal_error("body takes " + std::to_string(plan.inputs.size()) + " inputs but was given " +
                          std::to_string(inputs.size()));
  for (size_t k = 0; k < inputs.size(); ++k) {
    const auto& v = plan.values[plan.io[plan.inputs[k]].value];
    if (inputs[k].dtype() != v.dtype)
      return invalid_argument("body input '" + v.name + "' is " + dtype_name(v.dtype) + " but was given " +
                              dtype_name(inputs[k].dtype()));
  }
  CpuExecutor executor(plan);
  std::vector<Tensor> outputs;
  KILN_RETURN_IF_ERROR(executor.run(inputs, &outputs));
  return outputs;
}

Status CpuExecutor::run(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) {
  const auto& plan = plan_;
  slots_.assign(plan.values.size(), Tensor());
  for (size_t v = 0; v < plan.values.size(); ++v)
    if (plan.values[v].constant.defined()) slots_[v] = plan.values[v].constant;
  for (size_t k = 0; k < plan.inputs.size(); ++k) slots_[plan.io[plan.inputs[k]].value] = inputs[k];

  std::vector<const Tensor*> in;
  std::vector<Tensor> out;
  for (const auto& n : plan.nodes) {
    in.clear();
    for (int id : n.inputs) {
      if (id >= 0 && !slots_[id].defined()) {
        slots_.assign(slots_.size(), Tensor());
        return internal_error(where(n) + " reads '" + plan.values[id].name + "', which its producer did not compute");
      }
      in.push_back(id >= 0 ? &slots_[id] : nullptr);
    }
    out.assign(n.outputs.size(), Tensor());
    ops::ComputeContext ctx(n.attrs, n.opset, in, &out, run_plan_subgraph);
    auto t0 = std::chrono::steady_clock::now();
    Status st = n.schema->compute(ctx);
    if (profiler_)
      profiler_->report_layer_time(
          n.name.c_str(), std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!st.ok()) {
      slots_.assign(slots_.size(), Tensor());
      return st.with_context(where(n));
    }
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      const auto& v = plan.values[n.outputs[k]];
      if (!out[k].defined()) continue;  // an optional output the op chose not to produce; readers fail below
      Status cs = check_output(n, v, out[k]);
      if (!cs.ok()) {
        slots_.assign(slots_.size(), Tensor());
        return cs;
      }
      slots_[n.outputs[k]] = std::move(out[k]);
    }
    for (int id : n.release_after) slots_[id] = Tensor();
  }

  outputs->clear();
  for (int o : plan.outputs) {
    int v = plan.io[o].value;
    if (!slots_[v].defined()) return internal_error("no node produced engine output '" + plan.values[v].name + "'");
    outputs->push_back(std::move(slots_[v]));
  }
  slots_.assign(slots_.size(), Tensor());  // drop references to the caller's input memory
  return Status::Ok();
}

}  // namespace kiln::cpu
