// shape_inference pass: runs every node's schema inference in topological order and stores the results.
#include "passes/shape_inference.h"

#include <unordered_map>

#include "passes/pass.h"

namespace kiln::passes {
namespace {

std::string where(const ir::Node& n) { return "node '" + n.name + "' (" + n.op_type + ")"; }

bool same_info(const ir::Value& v, const ops::TensorInfo& t) {
  if (v.kind != t.kind || v.dtype != t.dtype || v.rank_known != t.rank_known || v.shape.size() != t.shape.size()) return false;
  for (size_t i = 0; i < v.shape.size(); ++i)
    if (v.shape[i].value != t.shape[i].value || v.shape[i].sym != t.shape[i].sym) return false;
  if (v.known.has_value() != t.value.has_value()) return false;
  if (v.known)
    for (size_t i = 0; i < v.known->size() && i < t.value->size(); ++i)
      if ((*v.known)[i].value != (*t.value)[i].value || (*v.known)[i].sym != (*t.value)[i].sym) return false;
  return !v.known || v.known->size() == t.value->size();
}

// Symbols minted by fresh_dim() name nothing the user wrote: a declared name (or an earlier fresh one, when
// inference runs again after other passes) is at least as good and keeps re-runs from churning the graph.
bool is_anonymous(const ops::Dim& d) { return d.sym.empty() || d.sym.rfind(ir::Graph::kFreshSymbolPrefix, 0) == 0; }

Status merge_output(const ir::Node& n, size_t k, const ir::Value& declared, ops::TensorInfo& inferred) {
  // Values the model declares no type for are tensors until inference says otherwise.
  if (declared.kind != inferred.kind) return Status::Ok();
  if (!declared.rank_known || !inferred.rank_known) {
    if (!inferred.rank_known && declared.rank_known) {
      inferred.shape = declared.shape;
      inferred.rank_known = true;
    }
    return Status::Ok();
  }
  if (declared.shape.size() != inferred.shape.size())
    return invalid_model(where(n) + ": output " + std::to_string(k) + " '" + declared.name + "' is declared as " +
                         ops::shape_to_string(declared.shape) + " but inference gives rank " +
                         std::to_string(inferred.shape.size()) + " " + ops::shape_to_string(inferred.shape));
  for (size_t i = 0; i < inferred.shape.size(); ++i) {
    const ops::Dim& d = declared.shape[i];
    ops::Dim& r = inferred.shape[i];
    if (d.is_static() && r.is_static() && d.value != r.value)
      return invalid_model(where(n) + ": output " + std::to_string(k) + " '" + declared.name + "' is declared as " +
                           ops::shape_to_string(declared.shape) + " but inference gives " +
                           ops::shape_to_string(inferred.shape) + " (dim " + std::to_string(i) + ")");
    if (d.is_static() && !r.is_static()) r = d;
    else if (!d.is_static() && !r.is_static() && !d.sym.empty() && is_anonymous(r)) r = d;
  }
  return Status::Ok();
}

bool any_rank_unknown(const ir::Node& n) {
  for (const ir::Value* v : n.inputs)
    if (v && !v->rank_known) return true;
  return false;
}

// Infers a subgraph body from its inputs' declared types and its captured values' current ones. Bodies may
// leave input shapes open (a Loop-carried value can change shape), and op rules assume known ranks: a node
// with a rank-unknown input only takes its output types from inference and keeps its declared shapes.
Status infer_body(const ir::Node& n, const ir::GraphAttr& attr) {
  ir::Graph& g = attr.body();
  for (size_t i = 0; i < attr.captures().size(); ++i) {
    ir::Value* inner = g.inputs()[attr.num_formal_inputs() + i];
    const ir::Value* outer = n.inputs[attr.captures()[i]];
    inner->kind = outer->kind;
    inner->dtype = outer->dtype;
    inner->shape.clear();  // outer symbols mean nothing to the body's own fresh symbols
    for (auto& d : outer->shape) inner->shape.push_back(d.is_static() ? d : ops::Dim());
    inner->rank_known = outer->rank_known;
  }
  KILN_RETURN_IF_ERROR(g.topo_sort());
  for (auto& bn : g.nodes()) {
    if (!any_rank_unknown(*bn)) {
      KILN_RETURN_IF_ERROR(infer_node(g, *bn, nullptr));
      continue;
    }
    std::vector<ir::Value*> outs = bn->outputs;
    std::vector<ops::TensorInfo> declared;
    for (ir::Value* o : outs) declared.push_back(o->info());
    if (!infer_node(g, *bn, nullptr).ok()) continue;
    for (size_t k = 0; k < outs.size(); ++k) {
      DataType dt = outs[k]->dtype;
      outs[k]->set_info(declared[k]);
      outs[k]->dtype = dt;
    }
  }
  return Status::Ok();
}

class ShapeInference final : public Pass {
 public:
  std::string_view name() const override { return "shape_inference"; }
  Status apply(ir::Graph& g, PassContext& ctx) override {
    KILN_RETURN_IF_ERROR(g.topo_sort());
    for (auto& n : g.nodes()) KILN_RETURN_IF_ERROR(infer_node(g, *n, &ctx.changes));
    return Status::Ok();
  }
};

}  // namespace

Status infer_node(ir::Graph& g, ir::Node& n, int* changed) {
  return infer_node(n, [&g] { return g.fresh_symbol(); }, changed);
}

Status infer_node(ir::Node& n, const std::function<std::string()>& fresh, int* changed) {
  const ops::OpSchema* schema = ops::OpRegistry::instance().find(n.op_type, n.domain);
  if (!schema) return unsupported(where(n) + ": operator '" + n.op_type + "' is not registered");
  for (auto& [attr, body] : ir::graph_attrs(n))
    KILN_RETURN_IF_ERROR(infer_body(n, *body).with_context(where(n) + ", subgraph '" + attr + "'"));
  if (!schema->infer) return unsupported(where(n) + ": operator has no shape inference");
  if (!schema->takes_non_tensors)
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (n.inputs[i] && n.inputs[i]->kind != ValueKind::kTENSOR)
        return invalid_model(where(n) + ": input " + std::to_string(i) + " '" + n.inputs[i]->name + "' is " +
                             a_kind(n.inputs[i]->kind) + " but the operator takes tensors only");
  std::vector<ops::TensorInfo> infos(n.inputs.size());
  std::vector<const ops::TensorInfo*> ptrs(n.inputs.size(), nullptr);
  for (size_t i = 0; i < n.inputs.size(); ++i)
    if (n.inputs[i]) {
      infos[i] = n.inputs[i]->info();
      ptrs[i] = &infos[i];
    }
  ops::InferContext ictx(n.attrs, n.opset, std::move(ptrs), static_cast<int>(n.outputs.size()), fresh);
  Status st = schema->infer(ictx);
  if (!st.ok()) {
    std::string shapes;
    for (auto* v : n.inputs)
      shapes += (shapes.empty() ? "" : ", ") +
                (v ? std::string(dtype_name(v->dtype)) + (v->rank_known ? ops::shape_to_string(v->shape) : "[*]")
                   : std::string("none"));
    return st.with_context("shape inference of " + where(n) + " with inputs (" + shapes + ")");
  }
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    ir::Value& out = *n.outputs[k];
    ops::TensorInfo& t = ictx.output(static_cast<int>(k));
    KILN_RETURN_IF_ERROR(merge_output(n, k, out, t));
    if (out.is_constant()) continue;  // a folded value's data is the truth
    if (changed && !same_info(out, t)) ++*changed;
    out.set_info(t);
  }
  return Status::Ok();
}

std::unique_ptr<Pass> make_shape_inference() { return std::make_unique<ShapeInference>(); }

void reinfer_downstream(ir::Value* changed) {
  // Stale downstream shapes would be taken for declared ones (which inference refuses to contradict): clear them.
  std::unordered_map<ir::Node*, int> pending;  // downstream node -> inputs still awaiting re-inference
  std::vector<ir::Value*> stack = {changed};
  std::vector<ir::Node*> nodes;
  while (!stack.empty()) {
    ir::Value* v = stack.back();
    stack.pop_back();
    for (ir::Node* u : v->users)
      if (pending[u]++ == 0) {
        nodes.push_back(u);
        for (ir::Value* o : u->outputs) stack.push_back(o);
      }
  }
  for (ir::Node* n : nodes)
    for (ir::Value* o : n->outputs) {
      o->rank_known = false;
      o->shape.clear();
      o->known.reset();
    }
  // Kahn's order over the affected subgraph; `pending` counts uses of changed values, so start from `changed`.
  std::vector<ir::Node*> ready;
  auto release = [&](ir::Value* v) {
    for (ir::Node* u : v->users)
      if (--pending[u] == 0) ready.push_back(u);
  };
  release(changed);
  int counter = 0;
  auto fresh = [&] { return changed->name + "_s" + std::to_string(counter++); };
  while (!ready.empty()) {
    ir::Node* n = ready.back();
    ready.pop_back();
    if (!infer_node(*n, fresh).ok()) continue;  // its users stay pending: nothing to build on
    for (ir::Value* o : n->outputs) release(o);
  }
}

}  // namespace kiln::passes
