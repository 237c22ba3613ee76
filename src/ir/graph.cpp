// Graph editing: value/node creation, use lists, topological order.
#include "ir/graph.h"

#include <algorithm>
#include <unordered_set>

namespace kiln::ir {

TensorInfo Value::info() const {
  TensorInfo t;
  t.kind = kind;
  t.dtype = dtype;
  t.shape = shape;
  t.rank_known = rank_known;
  t.value = known;
  t.constant = constant.get();
  return t;
}

void Value::set_info(const TensorInfo& t) {
  kind = t.kind;
  dtype = t.dtype;
  shape = t.shape;
  rank_known = t.rank_known;
  known = t.value;
}

std::unique_ptr<Graph> Graph::clone() const {
  auto g = std::make_unique<Graph>();
  g->name = name;
  g->opset_ = opset_;
  g->symbol_counter_ = symbol_counter_;
  g->node_names_ = node_names_;
  std::unordered_map<const Value*, Value*> vmap;
  for (auto& v : values_) {
    auto c = std::make_unique<Value>(*v);
    c->producer = nullptr;
    c->users.clear();
    vmap[v.get()] = c.get();
    g->by_name_[c->name] = c.get();
    g->values_.push_back(std::move(c));
  }
  // A value the graph does not own (a bug elsewhere) maps to null rather than aliasing the source graph.
  auto map_value = [&](Value* v) -> Value* {
    if (!v) return nullptr;
    auto it = vmap.find(v);
    return it == vmap.end() ? nullptr : it->second;
  };
  for (auto& n : nodes_) {
    auto c = std::make_unique<Node>();
    c->name = n->name;
    c->op_type = n->op_type;
    c->domain = n->domain;
    c->opset = n->opset;
    c->attrs = n->attrs;
    for (auto& [attr, body] : graph_attrs(*n)) c->attrs.set(attr, std::shared_ptr<const Subgraph>(body->clone()));
    for (Value* v : n->inputs) c->inputs.push_back(map_value(v));
    for (Value* v : n->outputs) c->outputs.push_back(map_value(v));
    g->nodes_.push_back(std::move(c));
  }
  for (Value* v : inputs_) g->inputs_.push_back(map_value(v));
  for (Value* v : outputs_) g->outputs_.push_back(map_value(v));
  g->rebuild_links();
  return g;
}

GraphAttr::GraphAttr(std::unique_ptr<Graph> body, int num_formal_inputs, std::vector<int> captures)
    : Subgraph(std::move(captures)), body_(std::move(body)), num_formal_(num_formal_inputs) {}

static GraphPort port_of(const Value& v) {
  GraphPort p;
  p.name = v.name;
  p.kind = v.kind;
  p.dtype = v.dtype;
  p.rank_known = v.rank_known;
  for (auto& d : v.shape) p.dims.push_back(d.is_static() ? d.value : -1);
  return p;
}

std::vector<GraphPort> GraphAttr::input_ports() const {
  std::vector<GraphPort> r;
  for (int i = 0; i < num_formal_ && i < static_cast<int>(body_->inputs().size()); ++i)
    r.push_back(port_of(*body_->inputs()[i]));
  return r;
}

std::vector<GraphPort> GraphAttr::output_ports() const {
  std::vector<GraphPort> r;
  for (const Value* v : body_->outputs()) r.push_back(port_of(*v));
  return r;
}

std::string GraphAttr::describe() const {
  return "graph '" + body_->name + "' (" + std::to_string(num_formal_) + " inputs, " +
         std::to_string(captures().size()) + " captured, " + std::to_string(body_->outputs().size()) + " outputs, " +
         std::to_string(body_->nodes().size()) + " nodes)";
}

std::shared_ptr<GraphAttr> GraphAttr::clone() const {
  return std::make_shared<GraphAttr>(body_->clone(), num_formal_, captures());
}

std::vector<std::pair<std::string, const GraphAttr*>> graph_attrs(const Node& n) {
  std::vector<std::pair<std::string, const GraphAttr*>> r;
  for (auto& [name, a] : n.attrs.map())
    if (a.type() == AttrType::kGRAPH)
      if (auto* g = dynamic_cast<const GraphAttr*>(a.g().get())) r.emplace_back(name, g);
  return r;
}

Value* Graph::add_value(const std::string& name) {
  std::string n = name.empty() ? "tensor" : name;
  if (by_name_.count(n)) {
    int k = 1;
    while (by_name_.count(n + "_" + std::to_string(k))) ++k;
    n += "_" + std::to_string(k);
  }
  auto v = std::make_unique<Value>();
  v->name = n;
  Value* p = v.get();
  values_.push_back(std::move(v));
  by_name_[n] = p;
  return p;
}

Value* Graph::add_constant(const std::string& name, Tensor t) {
  Value* v = add_value(name);
  v->dtype = t.dtype();
  v->shape = ops::shape_from_dims(t.shape());
  v->rank_known = true;
  v->constant = std::make_shared<const Tensor>(std::move(t));
  if (dtype_is_integer(v->dtype) && v->constant->rank() <= 1) {
    std::vector<Dim> k;
    for (auto x : v->constant->to_i64_vector()) k.push_back(Dim(x));
    v->known = std::move(k);
  }
  return v;
}

Value* Graph::find_value(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::string Graph::unique_node_name(const std::string& base) {
  std::string b = base.empty() ? "node" : base;
  int& count = node_names_[b];
  std::string n = count == 0 ? b : b + "_" + std::to_string(count);
  ++count;
  return n;
}

Node* Graph::add_node(const std::string& op_type, const std::string& name, const std::vector<Value*>& inputs,
                      const std::vector<std::string>& output_names, Attributes attrs, int opset,
                      const std::string& domain) {
  auto n = std::make_unique<Node>();
  n->op_type = op_type;
  n->name = unique_node_name(name.empty() ? op_type : name);
  n->domain = domain;
  n->opset = opset ? opset : opset_;
  n->attrs = std::move(attrs);
  n->inputs = inputs;
  Node* p = n.get();
  for (Value* v : inputs)
    if (v) v->users.push_back(p);
  for (auto& on : output_names) {
    Value* v = add_value(on.empty() ? n->name + "_out" : on);
    v->producer = p;
    n->outputs.push_back(v);
  }
  nodes_.push_back(std::move(n));
  return p;
}

void Graph::remove_node(Node* n) {
  for (Value* v : n->inputs)
    if (v) {
      auto it = std::find(v->users.begin(), v->users.end(), n);
      if (it != v->users.end()) v->users.erase(it);
    }
  for (Value* v : n->outputs)
    if (v->producer == n) v->producer = nullptr;
  nodes_.erase(std::remove_if(nodes_.begin(), nodes_.end(), [n](auto& p) { return p.get() == n; }), nodes_.end());
}

void Graph::set_node_input(Node* n, size_t i, Value* v) {
  Value* old = n->inputs[i];
  if (old) {
    auto it = std::find(old->users.begin(), old->users.end(), n);
    if (it != old->users.end()) old->users.erase(it);
  }
  n->inputs[i] = v;
  if (v) v->users.push_back(n);
}

void Graph::replace_all_uses(Value* from, Value* to) {
  std::vector<Node*> users = from->users;
  for (Node* u : users)
    for (size_t i = 0; i < u->inputs.size(); ++i)
      if (u->inputs[i] == from) set_node_input(u, i, to);
  for (auto& o : outputs_)
    if (o == from) o = to;
}

void Graph::remove_value(Value* v) {
  auto it = by_name_.find(v->name);
  if (it != by_name_.end() && it->second == v) by_name_.erase(it);
  inputs_.erase(std::remove(inputs_.begin(), inputs_.end(), v), inputs_.end());
  outputs_.erase(std::remove(outputs_.begin(), outputs_.end(), v), outputs_.end());
  values_.erase(std::remove_if(values_.begin(), values_.end(), [v](auto& p) { return p.get() == v; }), values_.end());
}

bool Graph::rename_value(Value* v, const std::string& name) {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second == v;
  auto old = by_name_.find(v->name);
  if (old != by_name_.end() && old->second == v) by_name_.erase(old);
  v->name = name;
  by_name_[name] = v;
  return true;
}

void Graph::prune_values() {
  std::unordered_set<const Value*> keep(inputs_.begin(), inputs_.end());
  keep.insert(outputs_.begin(), outputs_.end());
  for (auto& n : nodes_) {
    keep.insert(n->inputs.begin(), n->inputs.end());
    keep.insert(n->outputs.begin(), n->outputs.end());
  }
  std::vector<std::unique_ptr<Value>> kept;
  for (auto& v : values_) {
    if (keep.count(v.get())) kept.push_back(std::move(v));
    else by_name_.erase(v->name);
  }
  values_ = std::move(kept);
}

void Graph::rebuild_links() {
  for (auto& v : values_) {
    v->users.clear();
    v->producer = nullptr;
  }
  for (auto& n : nodes_) {
    for (Value* v : n->inputs)
      if (v) v->users.push_back(n.get());
    for (Value* v : n->outputs) v->producer = n.get();
  }
}

Status Graph::topo_sort() {
  rebuild_links();
  std::unordered_map<const Node*, int> pending;
  std::vector<Node*> ready;
  for (auto& n : nodes_) {
    int deps = 0;
    for (Value* v : n->inputs)
      if (v && v->producer) ++deps;
    pending[n.get()] = deps;
    if (deps == 0) ready.push_back(n.get());
  }
  std::vector<Node*> order;
  // Stable: among ready nodes keep the original order so dumps stay readable.
  std::unordered_map<const Node*, size_t> pos;
  for (size_t i = 0; i < nodes_.size(); ++i) pos[nodes_[i].get()] = i;
  auto cmp = [&](Node* a, Node* b) { return pos[a] > pos[b]; };
  std::make_heap(ready.begin(), ready.end(), cmp);
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), cmp);
    Node* n = ready.back();
    ready.pop_back();
    order.push_back(n);
    for (Value* o : n->outputs)
      for (Node* u : o->users)
        if (--pending[u] == 0) {
          ready.push_back(u);
          std::push_heap(ready.begin(), ready.end(), cmp);
        }
  }
  if (order.size() != nodes_.size()) {
    std::string names;
    int listed = 0;
    for (auto& n : nodes_)
      if (pending[n.get()] > 0 && listed++ < 10) names += (names.empty() ? "'" : ", '") + n->name + "' (" + n->op_type + ")";
    return invalid_model("graph has a cycle (or a node consumes its own output); nodes involved: " + names);
  }
  std::vector<std::unique_ptr<Node>> sorted;
  std::unordered_map<Node*, std::unique_ptr<Node>*> owner;
  for (auto& n : nodes_) owner[n.get()] = &n;
  for (Node* n : order) sorted.push_back(std::move(*owner[n]));
  nodes_ = std::move(sorted);
  return Status::Ok();
}

}  // namespace kiln::ir
