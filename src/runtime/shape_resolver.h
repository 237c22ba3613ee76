// Shape resolution: every value's shape (and the contents of small shape tensors) for concrete input shapes,
// by running each node's inference on the host. Both backends use it; the CUDA backend also learns from it
// which values it can compute on the host once instead of on the device every run.
#pragma once

#include <vector>

#include "kiln/status.h"
#include "ops/op.h"
#include "runtime/engine_plan.h"

namespace kiln::runtime {

// input_dims follows plan.inputs. Dims inference cannot know (data-dependent) stay symbolic.
Result<std::vector<ops::TensorInfo>> resolve_shapes(const EnginePlan& plan, const std::vector<Dims>& input_dims);

// True when t's contents are fully known on the host (an engine constant, or a shape tensor whose every
// element inference computed).
bool host_known(const ops::TensorInfo& t);
// Materializes such a value as a host tensor.
Tensor host_value(const ops::TensorInfo& t);

}  // namespace kiln::runtime
