// Binding types at the network boundary (io_types.h).
#include "builder/io_types.h"

#include <algorithm>

#include "ops/op_util.h"

namespace kiln::builder {
namespace {

// `base`, or base_1, base_2... where a value of that name exists.
std::string free_name(const ir::Graph& g, const std::string& base) {
  std::string n = base;
  for (int i = 1; g.find_value(n); ++i) n = base + "_" + std::to_string(i);
  return n;
}

ir::Node* cast_node(ir::Graph& g, ir::Value* x, DataType to, const std::string& node_name, const std::string& out) {
  Attributes a;
  a.set("to", ops::onnx_code_of(to));
  ir::Node* c = g.add_node("Cast", g.unique_node_name(node_name), {x}, {out}, std::move(a), std::max(g.opset(), 13));
  ir::Value* y = c->outputs[0];
  y->dtype = to;
  y->shape = x->shape;
  y->rank_known = x->rank_known;
  return c;
}

}  // namespace

Status apply_io_types(ir::Graph& g, const std::map<std::string, DataType>& types) {
  for (const auto& [name, dt] : types) {
    ir::Value* v = g.find_value(name);
    if (!v) return internal_error("apply_io_types: no value named '" + name + "'");
    auto& ins = g.inputs();
    auto& outs = g.outputs();
    const bool in = std::find(ins.begin(), ins.end(), v) != ins.end();
    const bool out = std::find(outs.begin(), outs.end(), v) != outs.end();
    if (in == out)
      return invalid_argument("binding type for '" + name + "': it must be a network input or an output, not both");
    const DataType own = v->dtype;
    if (own == dt) continue;
    if (in) {
      // The input takes the binding type; its readers read the Cast back to the network's type.
      ir::Node* c = cast_node(g, v, own, name + "_io_cast", free_name(g, name + "_" + dtype_name(own)));
      ir::Value* y = c->outputs[0];
      std::vector<ir::Node*> readers;
      for (ir::Node* u : v->users)
        if (u != c) readers.push_back(u);
      for (ir::Node* u : readers)
        for (size_t i = 0; i < u->inputs.size(); ++i)
          if (u->inputs[i] == v) g.set_node_input(u, i, y);
      v->dtype = dt;
    } else {
      // The network's value gives up the name to the Cast that writes the binding.
      if (!g.rename_value(v, free_name(g, name + "_" + dtype_name(own))))
        return internal_error("apply_io_types: cannot rename '" + name + "'");
      ir::Node* c = cast_node(g, v, dt, name + "_io_cast", name);
      if (c->outputs[0]->name != name) return internal_error("apply_io_types: '" + name + "' is still taken");
      std::replace(outs.begin(), outs.end(), v, c->outputs[0]);
    }
  }
  g.rebuild_links();
  return g.topo_sort();
}

}  // namespace kiln::builder
