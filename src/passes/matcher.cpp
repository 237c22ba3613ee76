// Declarative graph patterns (see matcher.h).
#include "passes/matcher.h"

#include <algorithm>
#include <cmath>

namespace kiln::passes::match {

ir::Value* Bindings::value(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? nullptr : it->second;
}

ir::Node* Bindings::node(const std::string& name) const {
  auto it = nodes.find(name);
  return it == nodes.end() ? nullptr : it->second;
}

bool Pattern::operator()(ir::Value* v, Bindings& b) const {
  if (!v) return false;
  Bindings saved = b;
  if (fn_(v, b)) return true;
  b = std::move(saved);
  return false;
}

Pattern Pattern::bind(std::string name) const {
  Pattern self = *this;
  return Pattern([self, name](ir::Value* v, Bindings& b) {
    auto it = b.values.find(name);
    if (it != b.values.end() && it->second != v) return false;
    if (!self(v, b)) return false;
    b.values[name] = v;
    if (v->producer) b.nodes[name] = v->producer;
    return true;
  });
}

Pattern Pattern::used_once() const { return used_times(1); }

Pattern Pattern::used_times(size_t n) const {
  Pattern self = *this;
  return Pattern([self, n](ir::Value* v, Bindings& b) {
    if (v->users.size() != n) return false;
    if (b.graph && is_graph_output(*b.graph, v)) return false;
    return self(v, b);
  });
}

Pattern Pattern::where(std::function<bool(ir::Value*, const Bindings&)> pred) const {
  Pattern self = *this;
  return Pattern([self, pred](ir::Value* v, Bindings& b) { return self(v, b) && pred(v, b); });
}

Pattern any() {
  return Pattern([](ir::Value*, Bindings&) { return true; });
}

Pattern constant() {
  return Pattern([](ir::Value* v, Bindings&) { return v->is_constant(); });
}

std::optional<double> constant_scalar(const ir::Value* v) {
  if (!v || !v->is_constant() || v->constant->numel() < 1) return std::nullopt;
  const Tensor& t = *v->constant;
  double first = t.get_f64(0);
  for (int64_t i = 1; i < t.numel(); ++i)
    if (t.get_f64(i) != first) return std::nullopt;
  return first;
}

Pattern scalar(double value, double tol) {
  return Pattern([value, tol](ir::Value* v, Bindings&) {
    auto s = constant_scalar(v);
    // A float16 or bfloat16 model (exported in half precision, or converted by onnxconverter-common) holds the
    // constant rounded to its type: sqrt(2) is 1.4140625 in float16. Within the type's rounding it is the same one.
    double eff = tol;
    if (v->dtype == DataType::kHALF) eff = std::max(tol, 1.0 / 1024);
    if (v->dtype == DataType::kBF16) eff = std::max(tol, 1.0 / 128);
    return s && std::fabs(*s - value) <= eff * std::max(1.0, std::fabs(value));
  });
}

Pattern op_any(std::vector<std::string> op_types, std::vector<Pattern> inputs) {
  return Pattern([op_types, inputs](ir::Value* v, Bindings& b) {
    const ir::Node* n = v->producer;
    if (!n || !n->domain.empty()) return false;
    if (std::find(op_types.begin(), op_types.end(), n->op_type) == op_types.end()) return false;
    if (inputs.size() > n->inputs.size()) return false;
    for (size_t i = 0; i < inputs.size(); ++i)
      if (!inputs[i](n->inputs[i], b)) return false;
    return true;
  });
}

Pattern op(std::string op_type, std::vector<Pattern> inputs) {
  return op_any({std::move(op_type)}, std::move(inputs));
}

Pattern commutative(std::string op_type, Pattern a, Pattern b) {
  return either({op(op_type, {a, b}), op(op_type, {b, a})});
}

Pattern either(std::vector<Pattern> alternatives) {
  return Pattern([alternatives](ir::Value* v, Bindings& b) {
    for (const Pattern& p : alternatives)
      if (p(v, b)) return true;
    return false;
  });
}

ir::Node* producer_op(const ir::Value* v, const char* op_type) {
  if (!v || !v->producer || !v->producer->domain.empty() || v->producer->op_type != op_type) return nullptr;
  return v->producer;
}

bool perm_is(const ir::Node* n, const std::vector<int64_t>& perm) {
  if (!n || n->op_type != "Transpose" || !n->domain.empty()) return false;
  auto p = n->attrs.get_ints("perm");
  return p.ok() && *p == perm;
}

bool is_graph_output(const ir::Graph& g, const ir::Value* v) {
  return std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
}

int rewrite(ir::Graph& g, const Pattern& root, const std::function<bool(Bindings&)>& apply) {
  int rewrites = 0;
  g.rebuild_links();
  // After a rewrite the node list has changed under us: start the sweep again. Nodes before the rewrite site
  // rarely match anew, so this stays near linear on real models.
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < g.nodes().size(); ++i) {
      ir::Node* n = g.nodes()[i].get();
      if (n->outputs.empty() || !n->outputs[0]) continue;
      // A node whose result nothing reads any more (the root of an earlier rewrite) is for DCE, not a match.
      if (n->outputs[0]->users.empty() && !is_graph_output(g, n->outputs[0])) continue;
      Bindings b;
      b.graph = &g;
      if (!root(n->outputs[0], b)) continue;
      if (apply(b)) {
        ++rewrites;
        changed = true;
        break;
      }
    }
  }
  return rewrites;
}

void record_fusion(ir::Node* fused, const std::vector<const ir::Node*>& originals) {
  std::vector<std::string> names;
  auto add = [&](const std::string& n) {
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  for (const ir::Node* n : {static_cast<const ir::Node*>(fused)})
    if (const Attribute* a = n->attrs.find(ops::kFusedFromAttr)) for (const auto& s : a->strings()) add(s);
  for (const ir::Node* n : originals) {
    if (!n || n == fused) continue;
    if (const Attribute* a = n->attrs.find(ops::kFusedFromAttr)) {
      for (const auto& s : a->strings()) add(s);
    } else {
      add(n->name);
    }
  }
  fused->attrs.set(ops::kFusedFromAttr, Attribute(names));
}

void finish_fusion(ir::Graph& g, ir::Node* fused, ir::Value* root, const std::vector<ir::Node*>& replaced) {
  ir::Value* own = fused->outputs[0];
  for (ir::Node* n : replaced) {
    std::vector<ir::Value*> outs = n->outputs;
    g.remove_node(n);
    for (ir::Value* o : outs)
      if (o != root && o->users.empty()) g.remove_value(o);
  }
  fused->outputs[0] = root;
  root->producer = fused;
  g.remove_value(own);
}

}  // namespace kiln::passes::match
