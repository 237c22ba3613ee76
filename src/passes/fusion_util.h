// Helpers shared by the transformer fusion passes: scalar-constant patterns, kiln-domain op patterns, GELU's
// decomposed exporter forms, the rewrite step that puts a fused node in place of a matched value, and the node and
// view builders the rewrites add their nodes with.
#pragma once

#include <algorithm>

#include <string>
#include <vector>

#include "ir/graph.h"
#include "passes/matcher.h"

namespace kiln::passes::fusion {

// A one-element float constant equal to v: exporters write GELU's and attention's constants as rank-0 or [1]
// tensors, and a larger all-equal constant could broadcast the result to a bigger shape.
inline match::Pattern one_scalar(double v, double tol = 1e-4) {
  return match::scalar(v, tol).where(
      [](ir::Value* c, const match::Bindings&) { return c->constant->numel() == 1 && dtype_is_float(c->dtype); });
}

// A value produced by a node of `op_type` in `domain` (match::op only sees the default domain).
inline match::Pattern domain_op(std::string op_type, std::string domain) {
  return match::Pattern([op_type, domain](ir::Value* v, match::Bindings&) {
    return v->producer && v->producer->op_type == op_type && v->producer->domain == domain;
  });
}

// The value's shape is known (rank and every dim equal, static or the same symbol) and equals `other`'s.
inline bool same_shape(const ir::Value* a, const ir::Value* b) {
  if (!a->rank_known || !b->rank_known || a->shape.size() != b->shape.size()) return false;
  for (size_t i = 0; i < a->shape.size(); ++i)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

// ReduceMean over the last axis only, keeping it (axes as an attribute before opset 18, an input from 18).
bool reduces_last_axis(const ir::Value* v);

// The one axis a ReduceMean reduces, keeping it, as a non-negative index; nullopt for several axes or none.
std::optional<int64_t> reduced_single_axis(const ir::Value* v);

// A float constant that broadcasts as a vector over the last axis (length d) of a rank-`rank` tensor without
// growing it: [d], [1,d], [1,1,d]... up to that rank.
inline bool is_last_axis_vector(const ir::Value* c, int64_t d, size_t rank) {
  if (!c->is_constant() || !dtype_is_float(c->dtype) || c->constant->numel() != d) return false;
  const auto& s = c->constant->shape();
  return !s.empty() && s.size() <= rank && s.back() == d;
}

// A Cast from `from` to `to` that loses nothing: the same type, or a float type at least as wide. Fusions may
// drop such a Cast in front of a kernel that accumulates in float32 anyway.
inline bool widens(DataType from, DataType to) {
  if (from == to) return true;
  if (!dtype_is_float(from)) return false;
  return to == DataType::kDOUBLE || (to == DataType::kFLOAT && from != DataType::kDOUBLE);
}

// 1/sqrt(v) as exporters write it: Reciprocal(Sqrt(v)) (tf2onnx's rsqrt), Div(1, Sqrt(v)) (torch.onnx's rsqrt),
// Pow(v, -0.5).
inline match::Pattern rsqrt_of(const match::Pattern& v) {
  using namespace match;
  const Pattern root = op("Sqrt", {v}).used_once();
  return either({op("Reciprocal", {root}), op("Div", {one_scalar(1.0), root}), op("Pow", {v, one_scalar(-0.5)})});
}

// num / sqrt(v): Div(num, Sqrt(v)), or num * rsqrt(v) in any rsqrt_of form and either operand order.
inline match::Pattern div_by_sqrt(const match::Pattern& num, const match::Pattern& v) {
  using namespace match;
  return either({op("Div", {num, op("Sqrt", {v}).used_once()}), commutative("Mul", num, rsqrt_of(v).used_once())});
}

// GELU as exporters decompose it, with x bound under `x`:
//   erf:  x * 0.5 * (1 + Erf(x / sqrt2))   (torch.onnx's aten::gelu, any association of the three factors)
//   tanh: 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  (torch's tanh gelu, HF gpt2's NewGELU with
//         Pow(x, 3); x^3 also as x * (x * x))
inline match::Pattern gelu_from_inner(const match::Pattern& x, const match::Pattern& inner) {
  using namespace match;
  Pattern one_plus = commutative("Add", inner, one_scalar(1.0)).used_once();
  return either({
      commutative("Mul", commutative("Mul", x, one_scalar(0.5)).used_once(), one_plus),
      commutative("Mul", commutative("Mul", x, one_plus).used_once(), one_scalar(0.5)),
      commutative("Mul", x, commutative("Mul", one_plus, one_scalar(0.5)).used_once()),
  });
}

inline match::Pattern gelu_erf(const match::Pattern& x) {
  using namespace match;
  Pattern scaled =
      either({op("Div", {x, one_scalar(1.4142135623730951)}), commutative("Mul", x, one_scalar(0.7071067811865476))})
          .used_once();
  return gelu_from_inner(x, op("Erf", {scaled}).used_once());
}

inline match::Pattern gelu_tanh(const match::Pattern& x) {
  using namespace match;
  Pattern cube =
      either({op("Pow", {x, one_scalar(3.0)}), commutative("Mul", x, op("Mul", {x, x}).used_once())}).used_once();
  Pattern sum = commutative("Add", x, commutative("Mul", cube, one_scalar(0.044715)).used_once()).used_once();
  Pattern inner = op("Tanh", {commutative("Mul", sum, one_scalar(0.7978845608028654)).used_once()}).used_once();
  return gelu_from_inner(x, inner);
}

// A node with one output for a pass to add. The node is named `name` and its output `output` (empty: `name` too),
// each made unique in the graph. The node name goes through unique_node_name before Graph::add_node makes it unique
// again (the first node of a name is name_1), as every pass called it before these helpers: engines and layer
// information keep the node names they had.
struct NewNode {
  std::string op;
  std::string name;
  std::vector<ir::Value*> inputs;
  Attributes attrs = {};
  int opset = 0;            // 0: the graph's default-domain opset
  std::string output = {};  // the output's name where it differs from the node's
  std::string domain = {};  // "" = ai.onnx
};

// An NHWC 2-D kiln::FusedConv with one input and one output channel per group (what the CUDA depthwise kernels run),
// whatever its prologue and outputs.
bool is_depthwise_nhwc_conv(const ir::Node& n);

// The axes a ReduceXxx node reduces (the attribute before opset 18, a constant int64 input from it), normalized for
// an input of rank `rank` and sorted; empty when they are not known here or not given (all axes).
std::vector<int64_t> reduced_axes(const ir::Node& r, int64_t rank);

// Adds `n`, its output typed `dtype` with the known shape `shape` (for what the pass knows without inference), and
// returns that output; its producer is the node.
ir::Value* add_typed(ir::Graph& g, NewNode n, DataType dtype, ops::Shape shape);

// Adds `n` and types its output by shape inference; returns it, or null (the node removed again) where inference
// fails, so a rewrite that gives up leaves nothing half-built behind.
ir::Value* add_inferred(ir::Graph& g, NewNode n);

// A 1-D int64 initializer (a Reshape target, axes, a Slice's bounds).
ir::Value* add_int64s(ir::Graph& g, const std::string& name, std::vector<int64_t> v);

// x seen as `shape` without a copy: a Reshape by the constant target `dims` (initializer `name`_shape; its 0s keep
// x's dims, a -1 takes the rest), the node and its output named `name`, of x's type.
ir::Value* reshape_view(ir::Graph& g, ir::Value* x, const std::string& name, const std::vector<int64_t>& dims,
                        ops::Shape shape, int opset);

// x [A,B,H*D] as [A,B,H,D]: its last dim split into H heads of D by a view (target [0,0,H,D]).
ir::Value* split_heads(ir::Graph& g, ir::Value* x, int64_t H, int64_t D, const std::string& name, int opset);

// y takes old's place: old's readers, graph outputs included, read y, and y takes old's name (engine outputs keep
// the model's names; old is renamed with `suffix`).
void take_place(ir::Graph& g, ir::Value* old, ir::Value* y, const std::string& suffix);

// A view of y by the target `dims` in place of `old`: it takes old's name (old is renamed with `suffix`), type and
// readers, graph outputs included. Returns the view.
ir::Value* view_in_place(ir::Graph& g, ir::Value* old, ir::Value* y, const std::vector<int64_t>& dims,
                         const std::string& suffix, int opset);

// Puts a new node (one output) in place of `root`: every reader of root, and the graph outputs, read the node's
// output instead, which takes root's name (engine outputs keep their names) and type. The old producers are left
// for dead-code elimination. The nodes between the inputs and root are recorded as the ones the new node stands
// for; `sources` (optional) are where that walk stops instead, when the new node reads views of them.
inline ir::Node* replace_with_node(ir::Graph& g, ir::Value* root, const std::string& op_type, const std::string& domain,
                                   const std::vector<ir::Value*>& inputs, Attributes attrs, int opset,
                                   const std::string& base_name, const std::vector<ir::Value*>& sources = {}) {
  const std::string name = root->name;
  // The nodes the new one stands for: everything between its inputs and root (for layer information).
  std::vector<const ir::Node*> replaced;
  {
    std::vector<ir::Value*> stack = {root};
    while (!stack.empty() && replaced.size() < 64) {
      ir::Value* v = stack.back();
      stack.pop_back();
      if (!v || !v->producer || std::find(inputs.begin(), inputs.end(), v) != inputs.end() ||
          std::find(sources.begin(), sources.end(), v) != sources.end())
        continue;
      if (std::find(replaced.begin(), replaced.end(), v->producer) != replaced.end()) continue;
      replaced.push_back(v->producer);
      for (ir::Value* in : v->producer->inputs) stack.push_back(in);
    }
    std::reverse(replaced.begin(), replaced.end());
  }
  g.rename_value(root, name + "_unfused");
  ir::Value* out =
      add_typed(g, {op_type, base_name, inputs, std::move(attrs), opset, name, domain}, root->dtype, root->shape);
  match::record_fusion(out->producer, replaced);
  out->rank_known = root->rank_known;
  out->kind = root->kind;
  g.replace_all_uses(root, out);
  return out->producer;
}

// Removes nodes none of whose outputs is read or a graph output, and then the values left unused: the nodes a
// rewrite bypassed would otherwise still count as users and stop the next fusion's used_once() checks.
inline void prune_dead_nodes(ir::Graph& g) {
  for (bool changed = true; changed;) {
    changed = false;
    std::vector<ir::Node*> dead;
    for (auto it = g.nodes().rbegin(); it != g.nodes().rend(); ++it) {
      bool live = false;
      for (ir::Value* o : (*it)->outputs) live = live || !o->users.empty() || match::is_graph_output(g, o);
      if (!live) dead.push_back(it->get());
    }
    for (ir::Node* n : dead) g.remove_node(n);
    changed = !dead.empty();
  }
  g.prune_values();
}

// GELU decomposed forms -> Gelu (opset 20 op, run by graphs of any opset). Returns the rewrites made.
int fuse_gelu_forms(ir::Graph& g);

}  // namespace kiln::passes::fusion
