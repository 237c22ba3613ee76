// ir::verify: structural checks run after import and after each pass, with errors that name the node.
#include <algorithm>
#include <functional>
#include <unordered_map>
#include <unordered_set>

#include "ir/graph.h"

namespace kiln::ir {
namespace {

std::string where(const Node& n, size_t index) {
  return "node '" + n.name + "' (#" + std::to_string(index) + ", " + n.op_type + ")";
}

using ProducerMap = std::unordered_map<const Value*, const Node*>;

// Finds a cycle reachable from `start` by following producers backwards; returns the node names along it.
// Uses a producer map built from the node list because verify must not trust (or rebuild) the cached links.
std::vector<std::string> find_cycle(const Node* start, const ProducerMap& producers) {
  std::unordered_map<const Node*, int> state;  // 1 = on the current path, 2 = finished
  std::vector<const Node*> path;
  std::vector<std::string> cycle;
  std::function<bool(const Node*)> dfs = [&](const Node* n) {
    state[n] = 1;
    path.push_back(n);
    for (const Value* v : n->inputs) {
      auto pit = v ? producers.find(v) : producers.end();
      if (pit == producers.end()) continue;
      const Node* p = pit->second;
      if (state[p] == 1) {
        auto it = std::find(path.begin(), path.end(), p);
        for (; it != path.end(); ++it) cycle.push_back((*it)->name);
        cycle.push_back(p->name);
        return true;
      }
      if (state[p] == 0 && dfs(p)) return true;
    }
    path.pop_back();
    state[n] = 2;
    return false;
  };
  dfs(start);
  return cycle;
}

Status check_value_names(const Graph& g) {
  std::unordered_map<std::string, const Value*> seen;
  for (auto& v : g.values()) {
    if (v->name.empty()) {
      std::string who = v->producer ? "output of node '" + v->producer->name + "' (" + v->producer->op_type + ")"
                                    : "a value";
      return invalid_model(who + " has an empty name");
    }
    auto [it, inserted] = seen.emplace(v->name, v.get());
    if (!inserted) {
      std::string who;
      for (const Value* x : {it->second, static_cast<const Value*>(v.get())})
        who += x->producer ? " (produced by node '" + x->producer->name + "', " + x->producer->op_type + ")"
                           : (x->is_constant() ? " (a constant)" : " (a graph input or unused value)");
      return invalid_model("value name '" + v->name + "' is used by two values:" + who);
    }
  }
  std::unordered_map<std::string, size_t> node_names;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const Node& n = *g.nodes()[i];
    auto [it, inserted] = node_names.emplace(n.name, i);
    if (!inserted)
      return invalid_model("node name '" + n.name + "' is used by node #" + std::to_string(it->second) +
                           " and node #" + std::to_string(i) + " (" + n.op_type + ")");
  }
  return Status::Ok();
}

Status check_schema(const Node& n, size_t i) {
  const ops::OpSchema* s = ops::OpRegistry::instance().find(n.op_type, n.domain);
  if (!s)
    return unsupported(where(n, i) + ": operator '" + (n.domain.empty() ? "" : n.domain + "::") + n.op_type +
                       "' is not registered");
  int ni = static_cast<int>(n.inputs.size()), no = static_cast<int>(n.outputs.size());
  KILN_RETURN_IF_ERROR(ops::check_arity(*s, ni, no).with_context(where(n, i)));
  for (int k = 0; k < std::min(ni, s->min_inputs); ++k)
    if (!n.inputs[k])
      return invalid_model(where(n, i) + ": required input " + std::to_string(k) + " is omitted");
  Status st = ops::validate_attributes(*s, n.attrs);
  if (!st.ok()) return st.with_context(where(n, i));
  for (auto& [attr, body] : graph_attrs(n)) {
    const std::string ctx = where(n, i) + ", subgraph '" + attr + "'";
    if (body->body().inputs().size() != body->num_formal_inputs() + body->captures().size())
      return invalid_model(ctx + ": has " + std::to_string(body->body().inputs().size()) + " inputs but " +
                           std::to_string(body->num_formal_inputs()) + " formal and " +
                           std::to_string(body->captures().size()) + " captured ones are declared");
    for (int c : body->captures())
      if (c < 0 || c >= ni || !n.inputs[c])
        return invalid_model(ctx + ": captures node input " + std::to_string(c) + ", which the node lacks");
    KILN_RETURN_IF_ERROR(verify(body->body()).with_context(ctx));
  }
  return Status::Ok();
}

}  // namespace

Status verify(const Graph& g) {
  KILN_RETURN_IF_ERROR(check_value_names(g));

  std::unordered_set<const Value*> owned;
  for (auto& v : g.values()) owned.insert(v.get());
  std::unordered_map<const Value*, size_t> produced_at;  // value -> index of its producing node
  for (size_t i = 0; i < g.nodes().size(); ++i)
    for (const Value* o : g.nodes()[i]->outputs) {
      if (!o) return invalid_model(where(*g.nodes()[i], i) + ": has a null output");
      auto [it, inserted] = produced_at.emplace(o, i);
      if (!inserted)
        return invalid_model(where(*g.nodes()[i], i) + ": output '" + o->name + "' is also produced by node '" +
                             g.nodes()[it->second]->name + "'");
    }

  std::unordered_set<const Value*> available;
  for (const Value* v : g.inputs()) {
    if (!v) return invalid_model("graph input list holds a null value");
    if (!owned.count(v)) return invalid_model("graph input '" + v->name + "' is not a value of this graph");
    if (produced_at.count(v))
      return invalid_model("graph input '" + v->name + "' is also produced by node '" +
                           g.nodes()[produced_at[v]]->name + "'");
    available.insert(v);
  }
  for (auto& v : g.values())
    if (v->is_constant()) {
      if (produced_at.count(v.get()))
        return invalid_model("constant '" + v->name + "' is also produced by node '" +
                             g.nodes()[produced_at[v.get()]]->name + "'");
      available.insert(v.get());
    }

  for (size_t i = 0; i < g.nodes().size(); ++i) {
    const Node& n = *g.nodes()[i];
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Value* v = n.inputs[k];
      if (!v || available.count(v)) continue;
      std::string in = "input " + std::to_string(k) + " '" + v->name + "'";
      if (!owned.count(v))
        return invalid_model(where(n, i) + ": " + in + " is not a value of this graph (removed or from another graph)");
      auto p = produced_at.find(v);
      if (p == produced_at.end())
        return invalid_model(where(n, i) + ": " + in +
                             " is dangling: no node produces it and it is not a graph input or constant");
      if (p->second == i)
        return invalid_model(where(n, i) + ": " + in + " is its own output");
      ProducerMap producers;
      for (auto& [val, idx] : produced_at) producers[val] = g.nodes()[idx].get();
      auto cycle = find_cycle(&n, producers);
      if (!cycle.empty()) {
        std::string path;
        for (auto& c : cycle) path += (path.empty() ? "'" : " -> '") + c + "'";
        return invalid_model(where(n, i) + ": is part of a cycle: " + path);
      }
      return invalid_model(where(n, i) + ": " + in + " is produced later by node '" + g.nodes()[p->second]->name +
                           "' (#" + std::to_string(p->second) + "); nodes are not in topological order");
    }
    KILN_RETURN_IF_ERROR(check_schema(n, i));
    for (const Value* o : n.outputs) available.insert(o);
  }

  for (size_t k = 0; k < g.outputs().size(); ++k) {
    const Value* v = g.outputs()[k];
    if (!v) return invalid_model("graph output " + std::to_string(k) + " is null");
    if (!owned.count(v))
      return invalid_model("graph output " + std::to_string(k) + " '" + v->name + "' is not a value of this graph");
    if (!available.count(v))
      return invalid_model("graph output " + std::to_string(k) + " '" + v->name +
                           "' is not produced by any node and is not a graph input or constant");
  }
  return Status::Ok();
}

}  // namespace kiln::ir
