// A layer's cuDNN plan, for the fused-matmul and conv-graph tactics: getting it (from what the builder stored with
// the node, kDnnPlanAttr / kDnnPlanKeyAttr in dnn_common.h, else built) and running it with the layer's fallback.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dnn_common.h"
#include "kiln/logger.h"

namespace kiln::cuda {

// `want` is the layer's key; `same_problem` its prefix without the cuDNN/GPU part. A stored plan of other shapes
// (a dynamic profile) is expected: a verbose line. Another cuDNN or GPU, or text cuDNN refuses, makes the load
// slower than it should be: an info line.
template <class Plan>
Result<Plan> restore_or_build(const KernelArgs& args, const char* op, const std::string& want,
                              const std::string& same_problem,
                              const std::function<Result<Plan>(const std::string& json)>& restore,
                              const std::function<Result<Plan>()>& build) {
  const Attribute* json = args.attrs().find(kDnnPlanAttr);
  const Attribute* key = args.attrs().find(kDnnPlanKeyAttr);
  if (json && key && json->type() == AttrType::kSTRING && key->type() == AttrType::kSTRING) {
    std::string why;
    if (key->s() != want) {
      why = "it was stored for '" + key->s() + "', this layer needs '" + want + "'";
    } else {
      Result<Plan> r = restore(json->s());
      if (r.ok()) return r;
      why = r.status().message();
    }
    const std::string msg = std::string(op) + " '" + args.node->name + "': stored cuDNN plan not used (" + why +
                            "); compiling " + args.tactic;
    const bool other_shapes = key->s().rfind(same_problem, 0) != 0;
    default_logger().log(other_shapes ? ILogger::Severity::kVERBOSE : ILogger::Severity::kINFO, msg.c_str());
  }
  return build();
}

// Runs the layer's plan (a unique or shared pointer) when it has one. The status to return, or nothing when the layer goes on with its other
// path (`fallback` names it): pointers not kDnnAlignment-aligned, or a plan that finalized but does not execute
// (then it is dropped, with one warning, and the layer keeps the other path). The tuner (strict_tactic) gets the
// error instead, so that it never times a tactic under a name that did not run.
template <class PlanPtr, class Run>
std::optional<Status> run_layer_plan(const KernelArgs& args, PlanPtr& plan, bool aligned, const char* op,
                                     const char* fallback, Run&& run) {
  if (!plan) return std::nullopt;
  if (!aligned) {
    if (args.strict_tactic)
      return unsupported(std::string(op) + ": pointers not " + std::to_string(kDnnAlignment) + "-byte aligned for " +
                         args.tactic);
    return std::nullopt;
  }
  Status s = run(*plan);
  if (s.ok() || args.strict_tactic) return s;
  const std::string msg = std::string(op) + " '" + args.node->name + "': tactic " + args.tactic + " failed (" +
                          s.message() + "); it falls back to " + fallback;
  default_logger().log(ILogger::Severity::kWARNING, msg.c_str());
  plan.reset();
  return std::nullopt;
}

}  // namespace kiln::cuda
