// ONNX GraphProto -> ir::Graph: inputs, initializers and Constant nodes as constants, operator nodes,
// outputs, the shapes ONNX shape inference found, and subgraph attributes (If/Loop/Scan bodies), recursively.
#include <algorithm>
#include <optional>
#include <unordered_set>

#include "onnx/importer.h"
#include "onnx/proto_convert.h"

namespace kiln::onnx_import {
namespace {

class GraphBuilder {
 public:
  GraphBuilder(const onnx::GraphProto& g, const std::unordered_map<std::string, int>& opsets,
               const std::string& base_dir, ir::Graph& graph, Diagnostics& diag)
      : g_(g), opsets_(opsets), base_dir_(base_dir), graph_(graph), diag_(diag) {}

  // A subgraph builder: names it does not define resolve in `parent` (and become captured inputs); its
  // problems are reported against the top-level node that holds it, under a path like "loop/body/".
  GraphBuilder(const onnx::GraphProto& g, GraphBuilder& parent, std::string scope, int root_index, ir::Graph& graph)
      : GraphBuilder(g, parent.opsets_, parent.base_dir_, graph, parent.diag_) {
    parent_ = &parent;
    scope_ = std::move(scope);
    root_index_ = root_index;
  }

  // Outer values the subgraph reads, each with the body input that stands for it, in body-input order.
  const std::vector<std::pair<ir::Value*, ir::Value*>>& captured() const { return captured_; }

  void build() {
    graph_.name = g_.name();
    graph_.set_opset(opsets_.at(""));
    collect_symbols();
    add_initializers();
    add_inputs();
    declare_node_outputs();
    for (int i = 0; i < g_.node_size(); ++i) add_node(i);
    for (auto& [node, i] : created_) {
      connect_inputs(node, i);
      attach_subgraphs(node, i);
    }
    add_outputs();
    if (parent_) separate_outputs();
    apply_declared_shapes();
    Status st = graph_.topo_sort();
    if (!st.ok()) model_error(st.code(), st.message());
  }

 private:
  void model_error(ErrorCode code, const std::string& message) {
    diag_.model_error(code, parent_ ? "in subgraph " + scope_ + ": " + message : message);
  }

  NodeRef ref(int i) const {
    const auto& n = g_.node(i);
    NodeRef r;
    r.name = scope_ + (n.name().empty() ? n.op_type() + "_" + std::to_string(i) : n.name());
    r.index = parent_ ? root_index_ : i;
    r.op_type = n.op_type();
    r.domain = normalize_domain(n.domain());
    auto it = opsets_.find(r.domain);
    r.opset = it == opsets_.end() ? 0 : it->second;
    return r;
  }

  // Model dim_params are reserved so a fresh symbol never aliases a dimension the model named.
  void collect_symbols() {
    auto scan = [&](const onnx::ValueInfoProto& vi) {
      if (!vi.type().has_tensor_type()) return;
      for (auto& d : vi.type().tensor_type().shape().dim())
        if (d.has_dim_param()) reserved_symbols_.insert(d.dim_param());
    };
    for (auto& vi : g_.input()) scan(vi);
    for (auto& vi : g_.output()) scan(vi);
    for (auto& vi : g_.value_info()) scan(vi);
  }

  std::string fresh_symbol() {
    std::string s;
    do s = graph_.fresh_symbol();
    while (reserved_symbols_.count(s));
    return s;
  }

  // Unknown dims of graph inputs get fresh symbols (each is a distinct run-time size); unknown dims of inner
  // values stay unknown, because Kiln's inference may still prove them equal to something.
  ops::Shape shape_from_proto(const onnx::TensorShapeProto& sp, bool fresh_for_unknown) {
    ops::Shape s;
    for (auto& d : sp.dim()) {
      if (d.has_dim_value() && d.dim_value() >= 0)
        s.push_back(ops::Dim(d.dim_value()));
      else if (d.has_dim_param() && !d.dim_param().empty())
        s.push_back(ops::Dim::symbol(d.dim_param()));
      else
        s.push_back(fresh_for_unknown ? ops::Dim::symbol(fresh_symbol()) : ops::Dim());
    }
    return s;
  }

  // The tensors of a sequence or optional: only their static dims are kept, since a named dim could differ
  // between the elements of one sequence and must not be taken for a single size.
  static void set_element_shape(ir::Value* v, const onnx::TensorShapeProto* sp) {
    v->shape.clear();
    v->rank_known = sp != nullptr;
    if (!sp) return;
    for (auto& d : sp->dim())
      v->shape.push_back(d.has_dim_value() && d.dim_value() >= 0 ? ops::Dim(d.dim_value()) : ops::Dim());
  }

  bool define(const std::string& name, ir::Value* v) { return values_.emplace(name, v).second; }

  void add_initializers() {
    for (auto& tp : g_.initializer()) {
      if (tp.name().empty()) {
        model_error(ErrorCode::kInvalidModel, "an initializer has an empty name");
        continue;
      }
      if (values_.count(tp.name())) {
        model_error(ErrorCode::kInvalidModel, "initializer '" + tp.name() + "' is defined more than once");
        continue;
      }
      auto t = tensor_from_proto(tp, base_dir_);
      if (!t.ok()) {
        model_error(t.status().code(), "initializer '" + tp.name() + "': " + t.status().message());
        values_[tp.name()] = nullptr;  // known name: users should not also be reported as dangling
        continue;
      }
      define(tp.name(), graph_.add_constant(tp.name(), std::move(t).value()));
    }
    for (auto& sp : g_.sparse_initializer())
      model_error(ErrorCode::kUnsupported,
                        "sparse initializer '" + sp.values().name() + "' is not supported (store it dense)");
  }

  void add_inputs() {
    std::unordered_set<std::string> initializers, seen;
    for (auto& tp : g_.initializer()) initializers.insert(tp.name());
    for (auto& vi : g_.input()) {
      // Models before IR version 4 (opset < 9) list every initializer as an input too. Later IR versions
      // allow this for inputs with defaults; Kiln builds for fixed weights, so the initializer wins.
      if (initializers.count(vi.name())) {
        diag_.verbose("graph input '" + vi.name() + "' has an initializer; it is imported as a constant");
        continue;
      }
      if (!seen.insert(vi.name()).second) {
        model_error(ErrorCode::kInvalidModel, "graph input '" + vi.name() + "' is listed more than once");
        continue;
      }
      values_.emplace(vi.name(), nullptr);  // known from here on, even if rejected below: no dangling reports
      if (parent_ && vi.type().value_case() == onnx::TypeProto::VALUE_NOT_SET) {
        // A body input without a type (what ONNX's function expansions of Range and LinearAttention write):
        // shape inference gives it the type the enclosing Loop or Scan passes in.
        ir::Value* v = graph_.add_value(vi.name());
        v->type_from_parent = true;
        values_[vi.name()] = v;
        graph_.inputs().push_back(v);
        continue;
      }
      auto vt = value_type_from_proto(vi.type());
      if (!vt.ok()) {
        model_error(ErrorCode::kUnsupported, "graph input '" + vi.name() + "': " + vt.status().message());
        continue;
      }
      if (vi.type().value_case() == onnx::TypeProto::VALUE_NOT_SET) {
        model_error(ErrorCode::kUnsupported, "graph input '" + vi.name() + "' declares no type");
        continue;
      }
      DataType dt;
      if (!dtype_from_onnx(vt->elem_type, &dt)) {
        model_error(ErrorCode::kUnsupported, "graph input '" + vi.name() + "' has element type " +
                                                       onnx_dtype_name(vt->elem_type) +
                                                       ", which Kiln does not support");
        continue;
      }
      ir::Value* v = graph_.add_value(vi.name());
      v->kind = vt->kind;
      v->dtype = dt;
      v->rank_known = vt->shape != nullptr;
      if (vt->kind != ValueKind::kTENSOR)
        set_element_shape(v, vt->shape);
      else if (vt->shape)
        v->shape = shape_from_proto(*vt->shape, /*fresh_for_unknown=*/true);
      else if (!parent_)  // a body's inputs get their shapes from the enclosing node
        diag_.warning("graph input '" + vi.name() + "' declares no shape; set one before building");
      values_[vi.name()] = v;
      graph_.inputs().push_back(v);
    }
  }

  // ONNX graphs need not list nodes in order, so every produced name is known before any input is resolved.
  void declare_node_outputs() {
    std::unordered_map<std::string, int> producer;
    for (int i = 0; i < g_.node_size(); ++i)
      for (auto& out : g_.node(i).output()) {
        if (out.empty()) continue;
        if (values_.count(out)) {
          diag_.node_error(ErrorCode::kInvalidModel, ref(i),
                           "output '" + out + "' is already a graph input or initializer (ONNX graphs are SSA)");
        } else if (auto [it, fresh] = producer.emplace(out, i); !fresh) {
          diag_.node_error(ErrorCode::kInvalidModel, ref(i),
                           "output '" + out + "' is also produced by node '" + ref(it->second).name + "' (index " +
                               std::to_string(it->second) + "); ONNX graphs are SSA");
        }
      }
  }

  Result<Tensor> constant_value(const onnx::NodeProto& n) {
    if (n.attribute_size() != 1)
      return invalid_model("a Constant node needs exactly one value attribute, found " +
                           std::to_string(n.attribute_size()));
    const auto& a = n.attribute(0);
    const std::string& k = a.name();
    if (k == "value") return tensor_from_proto(a.t(), base_dir_);
    if (k == "value_float") return Tensor::from_vector<float>({}, {a.f()});
    if (k == "value_int") return Tensor::scalar_i64(a.i());
    if (k == "value_floats")
      return Tensor::from_vector<float>({a.floats_size()}, std::vector<float>(a.floats().begin(), a.floats().end()));
    if (k == "value_ints")
      return Tensor::from_vector<int64_t>({a.ints_size()}, std::vector<int64_t>(a.ints().begin(), a.ints().end()));
    if (k == "sparse_value" || k == "value_string" || k == "value_strings")
      return unsupported("Constant attribute '" + k + "' is not supported (Kiln holds dense numeric tensors only)");
    return invalid_model("Constant has unknown attribute '" + k + "'");
  }

  void add_constant_node(int i) {
    const auto& n = g_.node(i);
    if (n.output_size() != 1 || n.output(0).empty()) {
      diag_.node_error(ErrorCode::kInvalidModel, ref(i), "a Constant node must have exactly one output");
      return;
    }
    auto t = constant_value(n);
    if (!t.ok()) {
      diag_.node_error(t.status().code(), ref(i), t.status().message());
      values_.emplace(n.output(0), nullptr);
      return;
    }
    define(n.output(0), graph_.add_constant(n.output(0), std::move(t).value()));
  }

  void add_node(int i) {
    const auto& n = g_.node(i);
    const NodeRef r = ref(i);
    if (r.domain.empty() && n.op_type() == "Constant") return add_constant_node(i);

    Attributes attrs;
    std::vector<std::string> graph_lists;
    bool has_subgraph = false;
    for (auto& a : n.attribute()) {
      if (a.type() == onnx::AttributeProto::GRAPHS || a.graphs_size()) {
        graph_lists.push_back(a.name());
        continue;
      }
      if (a.type() == onnx::AttributeProto::GRAPH || a.has_g()) {
        has_subgraph = true;  // built once every outer name is known (attach_subgraphs)
        continue;
      }
      if (a.name().empty()) {
        diag_.node_error(ErrorCode::kInvalidModel, r, "has an attribute with an empty name");
        continue;
      }
      auto conv = attribute_from_proto(a, base_dir_);
      if (!conv.ok()) {
        diag_.node_error(conv.status().code(), r, "attribute '" + a.name() + "': " + conv.status().message());
        continue;
      }
      attrs.set(a.name(), std::move(conv).value());
    }

    const ops::OpSchema* schema = ops::OpRegistry::instance().find(n.op_type(), r.domain);
    if (!graph_lists.empty()) {
      std::string list;
      for (auto& s : graph_lists) list += (list.empty() ? "'" : ", '") + s + "'";
      diag_.unsupported_node(r, "graph-list attribute " + list + " is not supported");
    } else if (!schema) {
      std::string reason;
      if (!r.domain.empty() && !kiln_domains().count(r.domain))
        reason = "Kiln supports no operator of domain '" + r.domain + "'";
      diag_.unsupported_node(r, reason);
    } else if (!opsets_.count(r.domain)) {
      diag_.node_error(ErrorCode::kInvalidModel, r,
                       "domain '" + r.domain + "' is not listed in the model's opset_import");
    } else if (!has_subgraph) {
      check_against_schema(*schema, n, attrs, r);
    } else {
      needs_check_.insert(i);  // its graph attributes are not there yet
    }

    // Omitted optional outputs in the middle keep their position with a placeholder value nobody reads;
    // trailing ones are dropped so the node's output count is what it really produces.
    int num_outputs = n.output_size();
    while (num_outputs > 0 && n.output(num_outputs - 1).empty()) --num_outputs;
    std::vector<std::string> out_names;
    for (int k = 0; k < num_outputs; ++k)
      out_names.push_back(n.output(k).empty() ? r.name + "_unused_output_" + std::to_string(k) : n.output(k));
    ir::Node* node = graph_.add_node(n.op_type(), r.name, {}, out_names, std::move(attrs), r.opset, r.domain);
    for (int k = 0; k < num_outputs; ++k)
      if (!n.output(k).empty()) values_.emplace(n.output(k), node->outputs[k]);
    created_.emplace_back(node, i);
  }

  // Domains that at least one Kiln operator belongs to; any other domain is unsupported as a whole.
  static const std::set<std::string>& kiln_domains() {
    static const std::set<std::string> domains = [] {
      std::set<std::string> d;
      for (auto* s : ops::OpRegistry::instance().all()) d.insert(normalize_domain(s->domain));
      return d;
    }();
    return domains;
  }

  void check_against_schema(const ops::OpSchema& schema, const onnx::NodeProto& n, const Attributes& attrs,
                            const NodeRef& r) {
    Status st = ops::validate_attributes(schema, attrs);
    if (!st.ok()) {
      // validate_attributes prefixes the op name, which the node context already shows.
      std::string msg = st.message();
      if (msg.rfind(schema.name + ": ", 0) == 0) msg = msg.substr(schema.name.size() + 2);
      diag_.node_error(st.code(), r, msg);
    }
    int num_in = n.input_size();
    if (num_in < schema.min_inputs || (schema.max_inputs >= 0 && num_in > schema.max_inputs))
      diag_.node_error(
          ErrorCode::kInvalidModel, r,
          "has " + std::to_string(num_in) + " inputs, expected " + arity(schema.min_inputs, schema.max_inputs));
    // "" marks an omitted optional input. Where Kiln's definition needs a value (below min_inputs, or anywhere in
    // the list of a variadic op whose first input is required: Einsum, Max/Sum, Concat) its inference would read
    // the missing one. model_checks reports the ONNX-defined cases first (top-level nodes are not told twice).
    const bool all_required = schema.max_inputs < 0 && schema.min_inputs >= 1;
    for (int k = 0; k < num_in; ++k)
      if (n.input(k).empty() && (k < schema.min_inputs || all_required) && !(!parent_ && diag_.node_has_error(r.index)))
        diag_.node_error(ErrorCode::kInvalidModel, r,
                         "input " + std::to_string(k) + " is empty (\"\"), but " + schema.name +
                             " needs a value there; \"\" marks an omitted optional input only");
    int num_out = n.output_size();
    while (num_out > 0 && n.output(num_out - 1).empty()) --num_out;
    if (num_out < schema.min_outputs || (schema.max_outputs >= 0 && num_out > schema.max_outputs))
      diag_.node_error(
          ErrorCode::kInvalidModel, r,
          "has " + std::to_string(num_out) + " outputs, expected " + arity(schema.min_outputs, schema.max_outputs));
  }

  static std::string arity(int lo, int hi) {
    if (hi < 0) return "at least " + std::to_string(lo);
    if (lo == hi) return std::to_string(lo);
    return std::to_string(lo) + " to " + std::to_string(hi);
  }

  // The value a name stands for here: defined in this graph or, in a subgraph, in an enclosing one, which
  // makes it a captured input of this graph. nullopt: unknown; null: known but failed to import.
  std::optional<ir::Value*> lookup(const std::string& name) {
    auto it = values_.find(name);
    if (it != values_.end()) return it->second;
    if (!parent_) return std::nullopt;
    std::optional<ir::Value*> outer = parent_->lookup(name);
    if (!outer || !*outer) return outer;
    ir::Value* inner = graph_.add_value(name);
    inner->kind = (*outer)->kind;
    inner->dtype = (*outer)->dtype;
    inner->shape = (*outer)->shape;
    inner->rank_known = (*outer)->rank_known;
    graph_.inputs().push_back(inner);
    captured_.emplace_back(*outer, inner);
    values_[name] = inner;
    return inner;
  }

  void connect_inputs(ir::Node* node, int i) {
    const auto& n = g_.node(i);
    node->inputs.assign(n.input_size(), nullptr);
    for (int k = 0; k < n.input_size(); ++k) {
      const std::string& name = n.input(k);
      if (name.empty()) continue;  // omitted optional input
      std::optional<ir::Value*> v = lookup(name);
      if (!v) {
        diag_.node_error(ErrorCode::kInvalidModel, ref(i),
                         "input '" + name + "' is not produced by any node, graph input or initializer");
        continue;
      }
      if (*v) graph_.set_node_input(node, k, *v);
    }
  }

  // Builds each graph attribute of node i as its own ir::Graph; the outer values a body captures become extra
  // inputs of the node after its own (shared between bodies), so ordering and liveness passes see them.
  void attach_subgraphs(ir::Node* node, int i) {
    const auto& n = g_.node(i);
    const NodeRef r = ref(i);
    std::vector<ir::Value*> extra;
    for (auto& a : n.attribute()) {
      if (!(a.type() == onnx::AttributeProto::GRAPH || a.has_g()) || a.graphs_size()) continue;
      auto body = std::make_unique<ir::Graph>();
      GraphBuilder sub(a.g(), *this, r.name + "/" + a.name() + "/", parent_ ? root_index_ : i, *body);
      sub.build();
      int num_formal = static_cast<int>(body->inputs().size() - sub.captured().size());
      std::vector<int> captures;
      for (auto& [outer, inner] : sub.captured()) {
        auto it = std::find(extra.begin(), extra.end(), outer);
        if (it == extra.end()) it = extra.insert(extra.end(), outer);
        captures.push_back(n.input_size() + static_cast<int>(it - extra.begin()));
      }
      if (body->name.empty()) body->name = a.name();
      node->attrs.set(a.name(), std::shared_ptr<const Subgraph>(
                                    std::make_shared<ir::GraphAttr>(std::move(body), num_formal, std::move(captures))));
    }
    for (ir::Value* v : extra) {
      node->inputs.push_back(nullptr);
      graph_.set_node_input(node, node->inputs.size() - 1, v);
    }
    if (needs_check_.count(i))
      if (const ops::OpSchema* schema = ops::OpRegistry::instance().find(n.op_type(), r.domain))
        check_against_schema(*schema, n, node->attrs, r);
  }

  void add_outputs() {
    for (auto& vi : g_.output()) {
      std::optional<ir::Value*> v = lookup(vi.name());
      if (!v) {
        model_error(ErrorCode::kInvalidModel,
                    "graph output '" + vi.name() + "' is not produced by any node, graph input or initializer");
        continue;
      }
      if (*v) graph_.outputs().push_back(*v);
    }
  }

  // A body may return one of its inputs (or an outer value, or one value twice); an Identity gives each such
  // output its own producer, as engines require of their outputs.
  void separate_outputs() {
    std::unordered_set<const ir::Value*> seen(graph_.inputs().begin(), graph_.inputs().end());
    for (auto& o : graph_.outputs()) {
      if (!seen.insert(o).second) {
        ir::Node* id = graph_.add_node("Identity", o->name + "_out", {o}, {o->name + "_out"}, {},
                                       opsets_.at(""));
        id->outputs[0]->kind = o->kind;
        id->outputs[0]->dtype = o->dtype;
        id->outputs[0]->shape = o->shape;
        id->outputs[0]->rank_known = o->rank_known;
        o = id->outputs[0];
      }
    }
  }

  // Declared (model or ONNX-inferred) types of node outputs; graph inputs and constants already carry theirs.
  void apply_declared_shapes() {
    auto apply = [&](const onnx::ValueInfoProto& vi) {
      auto it = values_.find(vi.name());
      if (it == values_.end() || !it->second || !it->second->producer || !vi.has_type()) return;
      auto vt = value_type_from_proto(vi.type());
      if (!vt.ok() || vi.type().value_case() == onnx::TypeProto::VALUE_NOT_SET) return;
      ir::Value* v = it->second;
      v->kind = vt->kind;
      DataType dt;
      if (vt->elem_type != onnx::TensorProto::UNDEFINED && dtype_from_onnx(vt->elem_type, &dt)) v->dtype = dt;
      if (vt->kind != ValueKind::kTENSOR) {
        set_element_shape(v, vt->shape);
      } else if (vt->shape) {
        v->shape = shape_from_proto(*vt->shape, /*fresh_for_unknown=*/false);
        v->rank_known = true;
      }
    };
    for (auto& vi : g_.value_info()) apply(vi);
    for (auto& vi : g_.output()) apply(vi);  // graph outputs may be declared more precisely than inferred
  }

  const onnx::GraphProto& g_;
  const std::unordered_map<std::string, int>& opsets_;
  std::string base_dir_;
  ir::Graph& graph_;
  Diagnostics& diag_;
  // ONNX name -> value; null for names that exist but failed to import (so users are not reported too).
  std::unordered_map<std::string, ir::Value*> values_;
  std::vector<std::pair<ir::Node*, int>> created_;
  std::unordered_set<std::string> reserved_symbols_;
  GraphBuilder* parent_ = nullptr;
  std::string scope_;    // "node/attribute/" path of a subgraph; empty at the top level
  int root_index_ = -1;  // index of the top-level node holding this subgraph
  std::vector<std::pair<ir::Value*, ir::Value*>> captured_;
  std::set<int> needs_check_;  // nodes whose schema check waits for their graph attributes
};

}  // namespace

void build_graph(const onnx::ModelProto& model, const std::unordered_map<std::string, int>& opsets,
                 const std::string& base_dir, ir::Graph& graph, Diagnostics& diag) {
  GraphBuilder(model.graph(), opsets, base_dir, graph, diag).build();
}

}  // namespace kiln::onnx_import
