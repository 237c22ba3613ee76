// A layer's cuDNN plan from what the builder stored with its node (kDnnPlanAttr / kDnnPlanKeyAttr, dnn_matmul.h),
// shared by the fused-matmul and conv-graph tactics: restored when the stored key is the layer's own (no compile),
// else built, with one log line saying why the stored plan was not used.
#pragma once

#include <functional>
#include <string>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dnn_matmul.h"
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

}  // namespace kiln::cuda
