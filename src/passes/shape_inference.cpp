// shape_inference pass: runs every node's schema inference in topological order, unifies the dims that operators
// prove equal, and stores the results.
#include "passes/shape_inference.h"

#include <set>
#include <unordered_map>

#include "ops/op_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// Classes of dims proven equal: union-find over symbol names, each class with at most one static value.
class DimClasses {
 public:
  explicit DimClasses(std::set<std::string> declared) : declared_(std::move(declared)) {}
  bool declared(const std::string& s) const { return declared_.count(s) != 0; }

  // Records a == b, proven by node n; true when that changed a class. Two static values in one class: an error.
  Result<bool> unite(const ops::Dim& a, const ops::Dim& b, const ir::Node& n) {
    if (a.is_static() && b.is_static()) return false;  // the op checks those itself
    if (a.is_static()) return unite(b, a, n);
    std::string ra = find(a.sym);
    if (b.is_static()) return set_value(ra, b.value, n);
    std::string rb = find(b.sym);
    if (ra == rb) return false;
    if (better(rb, ra)) std::swap(ra, rb);
    parent_[rb] = ra;
    if (auto it = value_.find(rb); it != value_.end()) {
      KILN_ASSIGN_OR_RETURN(bool ignored, set_value(ra, it->second, n));
      (void)ignored;
    }
    return true;
  }

  // The class's name for d: its static value unless the class holds a graph input's symbol (which stays dynamic:
  // see shape_inference.h), else its representative symbol.
  ops::Dim canonical(const ops::Dim& d) {
    if (d.is_static() || d.sym.empty() || !parent_.count(d.sym)) return d;
    std::string r = find(d.sym);
    auto it = value_.find(r);
    if (it != value_.end() && !declared(r)) return ops::Dim(it->second);
    return ops::Dim::symbol(r);
  }
  bool canonicalize(ops::Shape& s) {
    bool changed = false;
    for (ops::Dim& d : s) {
      ops::Dim c = canonical(d);
      if (c.value != d.value || c.sym != d.sym) d = std::move(c), changed = true;
    }
    return changed;
  }
  // Rewrites a value's shape and known elements with the class names; true when anything changed.
  bool canonicalize(ir::Value& v) {
    if (parent_.empty() || v.is_constant()) return false;
    bool changed = canonicalize(v.shape);
    if (v.known) changed |= canonicalize(*v.known);
    return changed;
  }
  void canonicalize(ops::TensorInfo& t) {
    if (parent_.empty()) return;
    canonicalize(t.shape);
    if (t.value) canonicalize(*t.value);
  }
  // Graph-input symbols that the graph proves static, with the proving node (reported, never baked in).
  const std::vector<std::string>& constraints() const { return constraints_; }

 private:
  std::string find(const std::string& s) {
    parent_.emplace(s, s);
    std::string r = s;
    while (parent_.at(r) != r) r = parent_.at(r);
    for (std::string x = s; x != r;) {  // path compression
      std::string next = parent_.at(x);
      parent_.at(x) = r;
      x = std::move(next);
    }
    return r;
  }
  // The representative: a graph input's symbol, else a name from the model, else a fresh one; ties alphabetically.
  int tier(const std::string& s) const {
    if (declared(s)) return 0;
    bool fresh = s.rfind(ir::Graph::kFreshSymbolPrefix, 0) == 0 || s.rfind("unk__", 0) == 0;
    return fresh ? 2 : 1;
  }
  bool better(const std::string& a, const std::string& b) const {
    return tier(a) != tier(b) ? tier(a) < tier(b) : a < b;
  }
  Result<bool> set_value(const std::string& root, int64_t v, const ir::Node& n) {
    auto [it, inserted] = value_.emplace(root, v);
    if (!inserted && it->second != v)
      return invalid_model("node '" + n.name + "' (" + n.op_type + ") requires dim '" + root + "' to be " +
                           std::to_string(v) + " but node '" + proof_[root] + "' requires " +
                           std::to_string(it->second));
    if (!inserted) return false;
    proof_[root] = n.name;
    if (declared(root))
      constraints_.push_back("node '" + n.name + "' (" + n.op_type + ") is legal only when the network input dim '" +
                             root + "' is " + std::to_string(v) + "; the engine keeps '" + root +
                             "' dynamic as declared, and a run with another value fails in that node (declare it "
                             "static if the model only supports " + std::to_string(v) + ")");
    return true;
  }

  std::set<std::string> declared_;
  std::unordered_map<std::string, std::string> parent_;
  std::unordered_map<std::string, int64_t> value_;      // root -> proven static value
  std::unordered_map<std::string, std::string> proof_;  // root -> the node that proved it
  std::vector<std::string> constraints_;
};

// `classes` (the shape_inference pass only) takes the equalities the node proves and renames its outputs' dims;
// `merges` counts the classes that changed.
Status infer_node_impl(ir::Node& n, const std::function<std::string()>& fresh, int* changed, DimClasses* classes,
                       int* merges);

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

// Sets body input `inner` from what the enclosing node passes in: its kind and type, and its shape with the
// outer symbols dropped (they mean nothing to the body), less dim `drop` (a scan input's scan axis; -1: none).
void take_outer_type(ir::Value* inner, const ir::Value* outer, int64_t drop = -1) {
  inner->kind = outer->kind;
  inner->dtype = outer->dtype;
  inner->shape.clear();
  for (size_t d = 0; d < outer->shape.size(); ++d)
    if (static_cast<int64_t>(d) != drop) inner->shape.push_back(outer->shape[d].is_static() ? outer->shape[d] : ops::Dim());
  inner->rank_known = outer->rank_known;
}

void set_scalar(ir::Value* v, DataType dt) {
  v->kind = ValueKind::kTENSOR;
  v->dtype = dt;
  v->shape.clear();
  v->rank_known = true;
}

// The types of the body inputs the model left untyped (ir::Value::type_from_parent), from the enclosing node, as
// ONNX's shape inference gives them: a Loop body's iteration number (int64 scalar), condition (bool scalar) and
// loop-carried values (the initial values' types, ranks left open since an iteration may change a shape); a Scan
// body's states (the initial states') and scan inputs (one slice of each scan input: its shape less the scan axis,
// and for Scan 8 less the batch axis too).
Status type_untyped_body_inputs(const ir::Node& n, const ir::GraphAttr& attr) {
  ir::Graph& g = attr.body();
  const int formal = attr.num_formal_inputs();
  bool any = false;
  for (int i = 0; i < formal; ++i) any = any || g.inputs()[i]->type_from_parent;
  if (!any) return Status::Ok();
  auto outer = [&](int k) -> const ir::Value* { return k < static_cast<int>(n.inputs.size()) ? n.inputs[k] : nullptr; };
  for (int i = 0; i < formal; ++i) {
    ir::Value* in = g.inputs()[i];
    if (!in->type_from_parent) continue;
    const std::string what = "body input " + std::to_string(i) + " '" + in->name + "' declares no type";
    if (n.op_type == "Loop" && n.domain.empty()) {
      if (i == 0) {
        set_scalar(in, DataType::kINT64);
      } else if (i == 1) {
        set_scalar(in, DataType::kBOOL);
      } else if (const ir::Value* init = outer(i); init) {
        in->kind = init->kind;
        in->dtype = init->dtype;
        in->shape.clear();
        in->rank_known = false;
      } else {
        return invalid_model(what + " and the Loop passes no value for it");
      }
    } else if (n.op_type == "Scan" && n.domain.empty()) {
      const int first = n.opset < 9 ? 1 : 0;
      KILN_ASSIGN_OR_RETURN(int64_t m, n.attrs.get_int("num_scan_inputs"));
      // The body's formal inputs are the states, then one slice of each scan input (the node's inputs after its
      // own are the values the body captures).
      const int states = formal - static_cast<int>(m);
      const ir::Value* o = outer(first + i);
      if (!o) return invalid_model(what + " and the Scan passes no value for it");
      if (i < states || !o->rank_known) {  // a state; or a scan input whose slice's rank is not known
        take_outer_type(in, o);
        continue;
      }
      if (first) {  // Scan 8: [batch, sequence, ...] slices to [...]
        take_outer_type(in, o, 1);
        if (!in->shape.empty()) in->shape.erase(in->shape.begin());
        continue;
      }
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes,
                            n.attrs.get_ints("scan_input_axes", std::vector<int64_t>(static_cast<size_t>(m), 0)));
      const int64_t axis = i - states < static_cast<int>(axes.size()) ? axes[i - states] : 0;
      KILN_ASSIGN_OR_RETURN(const int64_t a, ops::normalize_axis(axis, static_cast<int64_t>(o->shape.size()),
                                                                 "scan input axis"));
      take_outer_type(in, o, a);
    } else {
      return unsupported(what + "; only Loop and Scan bodies may leave their inputs untyped (the enclosing " +
                         n.op_type + " says nothing of them)");
    }
  }
  return Status::Ok();
}

// Infers a subgraph body from its inputs' declared types and its captured values' current ones. Bodies may
// leave input shapes open (a Loop-carried value can change shape), and op rules assume known ranks: a node
// with a rank-unknown input only takes its output types from inference and keeps its declared shapes.
Status infer_body(const ir::Node& n, const ir::GraphAttr& attr) {
  ir::Graph& g = attr.body();
  KILN_RETURN_IF_ERROR(type_untyped_body_inputs(n, attr));
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
    std::set<std::string> declared;
    for (const ir::Value* v : g.inputs())
      for (const ops::Dim& d : v->shape)
        if (!d.is_static() && !d.sym.empty()) declared.insert(d.sym);
    DimClasses classes(std::move(declared));
    auto fresh = [&g] { return g.fresh_symbol(); };
    // A merge can rename dims of values inferred earlier in the sweep and make more dims known downstream (a
    // Reshape whose target held the symbol): sweep again until nothing merges. Each merge joins two classes or
    // gives one a value, so this ends; the bound only guards against an op minting new symbols every sweep.
    for (int sweep = 0; sweep < 8; ++sweep) {
      int merges = 0;
      for (auto& n : g.nodes()) {
        for (ir::Value* in : n->inputs)
          if (in && classes.canonicalize(*in)) ++ctx.changes;
        KILN_RETURN_IF_ERROR(infer_node_impl(*n, fresh, &ctx.changes, &classes, &merges));
      }
      for (auto& v : g.values())
        if (classes.canonicalize(*v)) ++ctx.changes;
      if (merges == 0) break;
    }
    for (const std::string& c : classes.constraints()) ctx.warn_once(c);
    return Status::Ok();
  }
};

}  // namespace

Status infer_node(ir::Graph& g, ir::Node& n, int* changed) {
  return infer_node(n, [&g] { return g.fresh_symbol(); }, changed);
}

Status infer_node(ir::Node& n, const std::function<std::string()>& fresh, int* changed) {
  return infer_node_impl(n, fresh, changed, nullptr, nullptr);
}

namespace {

Status infer_node_impl(ir::Node& n, const std::function<std::string()>& fresh, int* changed, DimClasses* classes,
                       int* merges) {
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
  ops::InferContext::Unification unification;
  if (classes) {
    unification.declared = [classes](const std::string& s) { return classes->declared(s); };
    ictx.set_unification(&unification);
  }
  Status st = schema->infer(ictx);
  if (!st.ok()) {
    std::string shapes;
    for (auto* v : n.inputs)
      shapes += (shapes.empty() ? "" : ", ") +
                (v ? std::string(dtype_name(v->dtype)) + (v->rank_known ? ops::shape_to_string(v->shape) : "[*]")
                   : std::string("none"));
    return st.with_context("shape inference of " + where(n) + " with inputs (" + shapes + ")");
  }
  for (auto& [a, b] : unification.equal) {
    KILN_ASSIGN_OR_RETURN(bool merged, classes->unite(a, b, n));
    if (merges) *merges += merged;
  }
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    ir::Value& out = *n.outputs[k];
    ops::TensorInfo& t = ictx.output(static_cast<int>(k));
    KILN_RETURN_IF_ERROR(merge_output(n, k, out, t));
    if (classes) classes->canonicalize(t);
    if (out.is_constant()) continue;  // a folded value's data is the truth
    if (changed && !same_info(out, t)) ++*changed;
    out.set_info(t);
  }
  return Status::Ok();
}

}  // namespace

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
