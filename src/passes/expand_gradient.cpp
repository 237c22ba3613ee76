// expand_gradient pass: replaces each ai.onnx.preview.training::Gradient node with backward nodes built by
// reverse-mode differentiation of the forward nodes between its `xs` and its `y`.
#include <algorithm>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "passes/pass.h"
#include "passes/shape_inference.h"

namespace kiln::passes {
namespace {

constexpr const char* kTrainingDomain = "ai.onnx.preview.training";

bool is_gradient(const ir::Node& n) { return n.op_type == "Gradient" && n.domain == kTrainingDomain; }

// Builds the backward nodes of one Gradient node. New nodes are plain ai.onnx nodes at the graph's opset.
class Backward {
 public:
  Backward(ir::Graph& g, const ir::Node& grad) : g_(g), where_("Gradient node '" + grad.name + "'") {}

  // A forward node's input gradients from its output gradient `dy`, each summed into grads_.
  Status differentiate(const ir::Node& n, ir::Value* dy, const std::unordered_set<const ir::Value*>& active) {
    const std::string& op = n.op_type;
    ir::Value* y = n.outputs[0];
    auto in = [&](size_t i) { return i < n.inputs.size() ? n.inputs[i] : nullptr; };
    auto wants = [&](size_t i) { return in(i) && active.count(in(i)); };
    auto give = [&](size_t i, Result<ir::Value*> d) -> Status {
      if (!d.ok()) return d.status();
      accumulate(in(i), *d);
      return Status::Ok();
    };
    ir::Value *a = in(0), *b = in(1);
    if (op == "Identity") return give(0, dy);
    if (op == "Neg") return give(0, unary("Neg", dy));
    if (op == "Add" || op == "Sub") {
      if (wants(0)) KILN_RETURN_IF_ERROR(give(0, reduce_to(dy, a)));
      if (wants(1)) KILN_RETURN_IF_ERROR(give(1, reduce_to(op == "Add" ? dy : unary("Neg", dy), b)));
      return Status::Ok();
    }
    if (op == "Mul") {
      if (wants(0)) KILN_RETURN_IF_ERROR(give(0, reduce_to(binary("Mul", dy, b), a)));
      if (wants(1)) KILN_RETURN_IF_ERROR(give(1, reduce_to(binary("Mul", dy, a), b)));
      return Status::Ok();
    }
    if (op == "Div") {  // y = a / b: dy/da = 1 / b, dy/db = -a / b^2 = -y / b
      if (wants(0)) KILN_RETURN_IF_ERROR(give(0, reduce_to(binary("Div", dy, b), a)));
      if (wants(1)) KILN_RETURN_IF_ERROR(give(1, reduce_to(unary("Neg", binary("Div", binary("Mul", dy, y), b)), b)));
      return Status::Ok();
    }
    if (op == "Relu") {
      ir::Value* positive = binary("Greater", a, scalar(a->dtype, 0));
      return give(0, node("Where", {positive, dy, scalar(dy->dtype, 0)}));
    }
    if (op == "Sigmoid") return give(0, binary("Mul", dy, binary("Mul", y, binary("Sub", scalar(y->dtype, 1), y))));
    if (op == "Tanh") return give(0, binary("Mul", dy, binary("Sub", scalar(y->dtype, 1), binary("Mul", y, y))));
    if (op == "Exp") return give(0, binary("Mul", dy, y));
    if (op == "Log") return give(0, binary("Div", dy, a));
    if (op == "Sqrt") return give(0, binary("Div", dy, binary("Mul", scalar(y->dtype, 2), y)));
    if (op == "MatMul") return matmul(n, dy, wants(0), wants(1));
    return unsupported(where_ + ": cannot differentiate node '" + n.name + "' (" + op +
                       "), which lies between xs and y; supported: Add, Sub, Mul, Div, Neg, Identity, MatMul, Relu, "
                       "Sigmoid, Tanh, Exp, Log, Sqrt");
  }

  void accumulate(ir::Value* v, ir::Value* d) {
    auto [it, fresh] = grads_.emplace(v, d);
    if (!fresh) it->second = binary("Add", it->second, d);
  }
  ir::Value* grad_of(const ir::Value* v) const {
    auto it = grads_.find(v);
    return it == grads_.end() ? nullptr : it->second;
  }

  // A tensor of v's shape filled with `fill` (the seed of y, or the gradient of an x that y does not depend on).
  ir::Value* filled_like(ir::Value* v, double fill) {
    return node("Expand", {scalar(v->dtype, fill), node("Shape", {v})});
  }

 private:
  ir::Value* node(const std::string& op, const std::vector<ir::Value*>& inputs, Attributes attrs = {}) {
    ir::Node* n = g_.add_node(op, "grad/" + op, inputs, {"grad/" + op + "_out"}, std::move(attrs), g_.opset());
    (void)infer_node(g_, *n);  // keeps dtypes and shapes known for the nodes built on this one
    return n->outputs[0];
  }
  ir::Value* unary(const std::string& op, ir::Value* x) { return node(op, {x}); }
  ir::Value* binary(const std::string& op, ir::Value* x, ir::Value* y) { return node(op, {x, y}); }
  ir::Value* scalar(DataType dt, double v) {
    return g_.add_constant("grad/const", Tensor::from_vector<double>({}, {v}).cast(dt));
  }

  // Sums a gradient d, shaped like the broadcast result x fed, over the axes along which x was broadcast.
  Result<ir::Value*> reduce_to(ir::Value* d, ir::Value* x) {
    const ir::Value* out = d;
    if (!x->rank_known || !out->rank_known)
      return unsupported(where_ + ": the rank of '" + x->name + "' or '" + out->name +
                         "' is unknown, so the broadcast to undo cannot be found");
    const size_t rx = x->shape.size(), ro = out->shape.size();
    if (rx > ro) return internal_error(where_ + ": '" + x->name + "' has a larger rank than the result it feeds");
    std::vector<int64_t> axes;
    for (size_t i = 0; i < ro; ++i) {
      if (i < ro - rx) {
        axes.push_back(static_cast<int64_t>(i));
        continue;
      }
      const ops::Dim& dx = x->shape[i - (ro - rx)];
      const ops::Dim& dout = out->shape[i];
      if (dx == dout) continue;
      if (dx.is_static() && dx.value == 1) {
        axes.push_back(static_cast<int64_t>(i));
        continue;
      }
      return unsupported(where_ + ": cannot tell whether dim " + std::to_string(i) + " of '" + out->name + "' " +
                         ops::shape_to_string(out->shape) + " was broadcast from '" + x->name + "' " +
                         ops::shape_to_string(x->shape) + "; give the model static shapes");
    }
    if (axes.empty()) return d;
    Attributes attrs;
    attrs.set("keepdims", int64_t{1});
    std::vector<ir::Value*> inputs = {d};
    if (g_.opset() >= 13)
      inputs.push_back(g_.add_constant("grad/axes", Tensor::from_vector<int64_t>({static_cast<int64_t>(axes.size())}, axes)));
    else
      attrs.set("axes", axes);
    ir::Value* summed = node("ReduceSum", inputs, std::move(attrs));
    return node("Reshape", {summed, node("Shape", {x})});
  }

  // y = a @ b for a, b of rank >= 2: da = dy @ b^T and db = a^T @ dy, each summed over broadcast batch dims.
  Status matmul(const ir::Node& n, ir::Value* dy, bool want_a, bool want_b) {
    ir::Value *a = n.inputs[0], *b = n.inputs[1];
    for (ir::Value* v : {a, b})
      if (!v->rank_known || v->shape.size() < 2)
        return unsupported(where_ + ": MatMul node '" + n.name + "' has an operand of rank < 2 or unknown rank ('" +
                           v->name + "'); only matrices and batches of them are differentiated");
    auto transposed = [&](ir::Value* v) {
      std::vector<int64_t> perm(v->shape.size());
      for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
      std::swap(perm[perm.size() - 1], perm[perm.size() - 2]);
      Attributes attrs;
      attrs.set("perm", perm);
      return node("Transpose", {v}, std::move(attrs));
    };
    if (want_a) {
      KILN_ASSIGN_OR_RETURN(ir::Value * da, reduce_to(binary("MatMul", dy, transposed(b)), a));
      accumulate(a, da);
    }
    if (want_b) {
      KILN_ASSIGN_OR_RETURN(ir::Value * db, reduce_to(binary("MatMul", transposed(a), dy), b));
      accumulate(b, db);
    }
    return Status::Ok();
  }

  ir::Graph& g_;
  std::string where_;
  std::unordered_map<const ir::Value*, ir::Value*> grads_;
};

Result<ir::Value*> named_value(const ir::Graph& g, const ir::Node& grad, const std::string& attr, const std::string& name) {
  ir::Value* v = g.find_value(name);
  if (!v)
    return invalid_model("Gradient node '" + grad.name + "': attribute '" + attr + "' names '" + name +
                         "', which is not a value of the graph");
  return v;
}

// A strings attribute; absent gives none (the schema check has made the required ones present).
std::vector<std::string> strings_attr(const ir::Node& n, const std::string& name) {
  const Attribute* a = n.attrs.find(name);
  return a && a->type() == AttrType::kSTRINGS ? a->strings() : std::vector<std::string>{};
}

Status expand(ir::Graph& g, ir::Node* grad) {
  const std::string where = "Gradient node '" + grad->name + "'";
  std::vector<std::string> xs_names = strings_attr(*grad, "xs"), zs_names = strings_attr(*grad, "zs");
  KILN_ASSIGN_OR_RETURN(std::string y_name, grad->attrs.get_string("y"));
  std::vector<ir::Value*> xs;
  for (auto& name : xs_names) {
    KILN_ASSIGN_OR_RETURN(ir::Value * v, named_value(g, *grad, "xs", name));
    xs.push_back(v);
  }
  KILN_ASSIGN_OR_RETURN(ir::Value * y, named_value(g, *grad, "y", y_name));
  // Inputs are the values of xs then zs; the forward nodes compute from exactly those values.
  std::vector<std::string> fed = xs_names;
  fed.insert(fed.end(), zs_names.begin(), zs_names.end());
  if (grad->inputs.size() != fed.size())
    return invalid_model(where + " has " + std::to_string(grad->inputs.size()) + " inputs but xs and zs name " +
                         std::to_string(fed.size()) + " values");
  for (size_t i = 0; i < fed.size(); ++i)
    if (!grad->inputs[i] || grad->inputs[i]->name != fed[i])
      return unsupported(where + ": input " + std::to_string(i) + " is '" +
                         (grad->inputs[i] ? grad->inputs[i]->name : std::string("<omitted>")) + "', not '" + fed[i] +
                         "'; only gradients at the forward graph's own values are supported");
  if (grad->outputs.size() > xs.size())
    return invalid_model(where + " has " + std::to_string(grad->outputs.size()) + " outputs for " +
                         std::to_string(xs.size()) + " names in xs");

  // Active values depend on some x; the path is the active nodes that y depends on, in topological order.
  std::unordered_set<const ir::Value*> active(xs.begin(), xs.end());
  std::vector<ir::Node*> forward;
  for (auto& n : g.nodes()) {
    if (n.get() == grad || is_gradient(*n)) continue;
    bool depends = std::any_of(n->inputs.begin(), n->inputs.end(), [&](const ir::Value* v) { return v && active.count(v); });
    if (!depends) continue;
    for (ir::Value* o : n->outputs)
      if (!active.count(o)) active.insert(o);
    forward.push_back(n.get());
  }
  std::unordered_set<const ir::Value*> needed = {y};
  std::vector<ir::Node*> path;
  for (auto it = forward.rbegin(); it != forward.rend(); ++it) {
    ir::Node* n = *it;
    if (!std::any_of(n->outputs.begin(), n->outputs.end(), [&](const ir::Value* v) { return needed.count(v); })) continue;
    if (n->outputs.size() != 1)
      return unsupported(where + ": cannot differentiate node '" + n->name + "' (" + n->op_type +
                         "), which has several outputs");
    for (ir::Value* v : n->inputs)
      if (v) needed.insert(v);
    path.push_back(n);  // reverse topological order
  }

  Backward bw(g, *grad);
  if (active.count(y)) bw.accumulate(y, bw.filled_like(y, 1.0));
  for (ir::Node* n : path) {
    ir::Value* dy = bw.grad_of(n->outputs[0]);
    if (dy) KILN_RETURN_IF_ERROR(bw.differentiate(*n, dy, active));
  }

  // Each output keeps its value (and name); an Identity from the computed gradient now produces it.
  std::vector<ir::Value*> outs = grad->outputs;
  std::string base = grad->name;
  g.remove_node(grad);
  for (size_t k = 0; k < outs.size(); ++k) {
    ir::Value* d = bw.grad_of(xs[k]);
    if (!d) d = bw.filled_like(xs[k], 0.0);
    ir::Node* id = g.add_node("Identity", base + "/d_" + xs_names[k], {d}, {outs[k]->name + "_tmp"}, {}, g.opset());
    ir::Value* tmp = id->outputs[0];
    id->outputs[0] = outs[k];
    outs[k]->producer = id;
    g.remove_value(tmp);
  }
  g.rebuild_links();
  return Status::Ok();
}

class ExpandGradient final : public Pass {
 public:
  std::string_view name() const override { return "expand_gradient"; }
  Status apply(ir::Graph& g, PassContext& ctx) override {
    std::vector<ir::Node*> grads;
    for (auto& n : g.nodes())
      if (is_gradient(*n)) grads.push_back(n.get());
    if (grads.empty()) return Status::Ok();
    // The backward rules need every forward value's type and shape.
    KILN_RETURN_IF_ERROR(g.topo_sort());
    for (auto& n : g.nodes())
      if (!is_gradient(*n)) KILN_RETURN_IF_ERROR(infer_node(g, *n));
    for (ir::Node* n : grads) {
      KILN_RETURN_IF_ERROR(expand(g, n));
      KILN_RETURN_IF_ERROR(g.topo_sort());  // the next Gradient's forward walk relies on the order
      ++ctx.changes;
    }
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_expand_gradient() { return std::make_unique<ExpandGradient>(); }

}  // namespace kiln::passes
