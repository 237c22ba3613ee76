// The node and view builders of fusion_util.h.
#include "passes/fusion_util.h"

#include "ops/layout_util.h"
#include "passes/shape_inference.h"

namespace kiln::passes::fusion {
namespace {

ir::Node* add(ir::Graph& g, NewNode& n) {
  const std::string output = n.output.empty() ? n.name : n.output;
  return g.add_node(n.op, g.unique_node_name(n.name), n.inputs, {output}, std::move(n.attrs), n.opset, n.domain);
}

}  // namespace

bool is_depthwise_nhwc_conv(const ir::Node& n) {
  if (n.op_type != "FusedConv" || n.domain != "kiln" || n.inputs.size() < 2 || !n.inputs[0] || !n.inputs[1])
    return false;
  auto layout = n.attrs.get_string("layout", "NCHW");
  if (!layout.ok() || *layout != "NHWC") return false;
  const ir::Value* x = n.inputs[0];
  const ir::Value* w = n.inputs[1];
  if (!x->rank_known || x->shape.size() != 4 || !x->shape[3].is_static() || !w->rank_known || w->shape.size() != 4)
    return false;
  auto group = n.attrs.get_int("group", 1);
  // W is [M, kh, kw, C / group] in NHWC.
  return group.ok() && w->shape[0].is_static() && w->shape[3].is_static() &&
         ops::is_depthwise(*group, x->shape[3].value, w->shape[0].value, w->shape[3].value);
}

std::vector<int64_t> reduced_axes(const ir::Node& r, int64_t rank) {
  std::vector<int64_t> axes;
  if (r.inputs.size() > 1 && r.inputs[1]) {
    const ir::Value* a = r.inputs[1];
    if (!a->is_constant() || a->constant->dtype() != DataType::kINT64) return {};
    const Tensor& t = *a->constant;
    axes.assign(t.data<int64_t>(), t.data<int64_t>() + t.numel());
  } else if (const Attribute* at = r.attrs.find("axes")) {
    axes = at->ints();
  }
  for (int64_t& a : axes) a = a < 0 ? a + rank : a;
  std::sort(axes.begin(), axes.end());
  return axes;
}

std::optional<int64_t> reduced_single_axis(const ir::Value* v) {
  const ir::Node* n = v->producer;
  if (!n || !n->inputs[0]->rank_known) return std::nullopt;
  auto keep = n->attrs.get_int("keepdims", 1);
  if (!keep.ok() || *keep != 1) return std::nullopt;
  const int64_t rank = static_cast<int64_t>(n->inputs[0]->shape.size());
  const std::vector<int64_t> axes = reduced_axes(*n, rank);
  if (axes.size() != 1 || axes[0] < 0 || axes[0] >= rank) return std::nullopt;
  return axes[0];
}

bool reduces_last_axis(const ir::Value* v) {
  const std::optional<int64_t> a = reduced_single_axis(v);
  return a && *a == static_cast<int64_t>(v->producer->inputs[0]->shape.size()) - 1;
}

ir::Value* add_typed(ir::Graph& g, NewNode n, DataType dtype, ops::Shape shape) {
  ir::Value* y = add(g, n)->outputs[0];
  y->dtype = dtype;
  y->shape = std::move(shape);
  y->rank_known = true;
  return y;
}

ir::Value* add_inferred(ir::Graph& g, NewNode n) {
  ir::Node* m = add(g, n);
  if (infer_node(g, *m).ok()) return m->outputs[0];
  ir::Value* y = m->outputs[0];
  g.remove_node(m);
  g.remove_value(y);
  return nullptr;
}

ir::Value* add_int64s(ir::Graph& g, const std::string& name, std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return g.add_constant(name, Tensor::from_vector<int64_t>({n}, std::move(v)));
}

ir::Value* reshape_view(ir::Graph& g, ir::Value* x, const std::string& name, const std::vector<int64_t>& dims,
                        ops::Shape shape, int opset) {
  ir::Value* target = add_int64s(g, name + "_shape", dims);
  return add_typed(g, {"Reshape", name, {x, target}, {}, opset}, x->dtype, std::move(shape));
}

ir::Value* split_heads(ir::Graph& g, ir::Value* x, int64_t H, int64_t D, const std::string& name, int opset) {
  return reshape_view(g, x, name, {0, 0, H, D}, {x->shape[0], x->shape[1], ops::Dim(H), ops::Dim(D)}, opset);
}

void take_place(ir::Graph& g, ir::Value* old, ir::Value* y, const std::string& suffix) {
  const std::string name = old->name;
  g.rename_value(old, name + suffix);
  g.rename_value(y, name);
  g.replace_all_uses(old, y);
}

ir::Value* view_in_place(ir::Graph& g, ir::Value* old, ir::Value* y, const std::vector<int64_t>& dims,
                         const std::string& suffix, int opset) {
  const std::string name = old->name;
  g.rename_value(old, name + suffix);
  ir::Value* v = reshape_view(g, y, name, dims, old->shape, opset);
  v->dtype = old->dtype;
  v->rank_known = old->rank_known;
  v->kind = old->kind;
  g.replace_all_uses(old, v);
  return v;
}

}  // namespace kiln::passes::fusion
