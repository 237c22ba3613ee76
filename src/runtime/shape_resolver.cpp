// Host-side shape resolution over a plan (see shape_resolver.h).
#include "runtime/shape_resolver.h"

namespace kiln::runtime {

Result<std::vector<ops::TensorInfo>> resolve_shapes(const EnginePlan& plan, const std::vector<Dims>& input_dims) {
  std::vector<ops::TensorInfo> info(plan.values.size());
  for (size_t v = 0; v < plan.values.size(); ++v) {
    const auto& pv = plan.values[v];
    info[v].dtype = pv.dtype;
    info[v].shape = pv.shape;
    info[v].rank_known = pv.rank_known;
    if (pv.constant.defined()) info[v].constant = &pv.constant;
  }
  for (size_t k = 0; k < plan.inputs.size() && k < input_dims.size(); ++k)
    info[plan.io[plan.inputs[k]].value].shape = ops::shape_from_dims(input_dims[k]);
  int counter = 0;
  auto fresh = [&counter] { return "dyn__" + std::to_string(counter++); };
  for (const auto& n : plan.nodes) {
    if (!n.schema->infer) continue;  // outputs keep the engine's shapes
    std::vector<const ops::TensorInfo*> in;
    for (int id : n.inputs) in.push_back(id >= 0 ? &info[id] : nullptr);
    ops::InferContext ctx(n.attrs, n.opset, in, static_cast<int>(n.outputs.size()), fresh);
    Status st = n.schema->infer(ctx);
    if (!st.ok()) return st.with_context("shape inference of node '" + n.name + "' (" + n.op_type + ")");
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      auto& out = ctx.output(static_cast<int>(k));
      out.constant = nullptr;  // only the engine's own constants outlive this loop
      info[n.outputs[k]] = std::move(out);
    }
  }
  return info;
}

bool host_known(const ops::TensorInfo& t) {
  if (t.constant) return true;
  if (!t.value || !t.rank_known || !ops::shape_is_static(t.shape)) return false;
  if (t.dtype != DataType::kINT64 && t.dtype != DataType::kINT32) return false;
  int64_t n = 1;
  for (const auto& d : t.shape) n *= d.value;
  if (n != static_cast<int64_t>(t.value->size())) return false;
  // Unnamed negative entries are literal integers (Reshape's -1); named ones are run-time sizes.
  for (const auto& d : *t.value)
    if (!d.is_static() && !d.sym.empty()) return false;
  return true;
}

Tensor host_value(const ops::TensorInfo& t) {
  if (t.constant) return *t.constant;
  std::vector<int64_t> v;
  for (const auto& d : *t.value) v.push_back(d.value);
  Tensor r = Tensor::from_vector<int64_t>(ops::static_dims(t.shape), v);
  return t.dtype == DataType::kINT64 ? r : r.cast(t.dtype);
}

}  // namespace kiln::runtime
