// Test helper shared by the per-operator tests: runs one op's inference and reference compute as the runtime does.
#pragma once

#include <string>
#include <vector>

#include "ops/op.h"

namespace kiln::ops::testing {

struct RunResult {
  Status status;
  std::vector<Tensor> outputs;
  std::vector<TensorInfo> inferred;
};

// Inputs after the first are visible to inference as constants (as initializers are); `shapes` may override an
// input's inferred shape with symbolic dims. Absent optional inputs are nullptr.
inline RunResult run_op(const std::string& name, const Attributes& attrs, const std::vector<const Tensor*>& inputs,
                        int num_outputs = 1, int opset = 17, const std::vector<Shape>& shapes = {}) {
  RunResult r;
  const OpSchema* s = OpRegistry::instance().find(name);
  if (!s) {
    r.status = unsupported(name + " not registered");
    return r;
  }
  r.status = validate_attributes(*s, attrs);
  if (!r.status.ok()) return r;
  std::vector<TensorInfo> infos(inputs.size());
  std::vector<const TensorInfo*> ptrs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i]) {
      ptrs.push_back(nullptr);
      continue;
    }
    infos[i].kind = inputs[i]->kind();
    infos[i].dtype = inputs[i]->dtype();
    if (!inputs[i]->is_tensor()) {  // a sequence or optional: nothing known of its tensors
      infos[i].rank_known = false;
      ptrs.push_back(&infos[i]);
      continue;
    }
    infos[i].shape = i < shapes.size() && !shapes[i].empty() ? shapes[i] : shape_from_dims(inputs[i]->shape());
    infos[i].constant = i == 0 ? nullptr : inputs[i];
    ptrs.push_back(&infos[i]);
  }
  InferContext ictx(attrs, opset, ptrs, num_outputs);
  r.status = s->infer(ictx);
  if (!r.status.ok()) return r;
  r.inferred = ictx.outputs();
  r.outputs.resize(num_outputs);
  ComputeContext cctx(attrs, opset, inputs, &r.outputs);
  r.status = s->compute(cctx);
  return r;
}

}  // namespace kiln::ops::testing
