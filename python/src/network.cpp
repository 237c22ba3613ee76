// NetworkDefinition and ITensor bindings, plus the node-level helpers the Python layer classes build on:
// layers are recipes of add_op calls, and changing a layer property rebuilds its nodes in place (replace_layer).
#include "kiln/network.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_set>

#include "common.h"
#include "ir/graph.h"
#include "passes/shape_inference.h"

namespace kiln::py_bind {
namespace {

using NetPtr = std::shared_ptr<NetworkDefinition>;

// A tensor handle that keeps its network alive. The ir::Value behind it is found by name, which stays exact
// because every rename goes through Graph::rename_value.
struct TensorRef {
  NetPtr net;
  ITensor* t;
  ir::Value* value() const { return net->graph().find_value(t->name()); }
};

[[noreturn]] void fail(const NetworkDefinition& net, const std::string& fallback) {
  const Status& st = net.last_error();
  throw StatusError{st.ok() ? invalid_argument(fallback) : st};
}

TensorRef ref(const NetPtr& net, ITensor* t, const std::string& what) {
  if (!t) fail(*net, what + " failed");
  return TensorRef{net, t};
}

void same_network(const NetPtr& net, const TensorRef& t) {
  if (t.net != net) throw StatusError{invalid_argument("tensor '" + t.t->name() + "' belongs to another network")};
}

// Python attribute values -> OpAttr: int, float, str, and sequences of ints or floats (a float anywhere makes
// the whole list floats).
OpAttr to_attr(const std::string& key, const py::handle& v) {
  if (py::isinstance<py::bool_>(v)) return int64_t{v.cast<bool>()};
  if (py::isinstance<py::int_>(v)) return v.cast<int64_t>();
  if (py::isinstance<py::float_>(v)) return v.cast<float>();
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  if (py::isinstance<py::sequence>(v)) {
    auto seq = v.cast<py::sequence>();
    bool any_float = false;
    for (auto x : seq) any_float |= py::isinstance<py::float_>(x);
    if (any_float) return seq.cast<std::vector<float>>();
    return seq.cast<std::vector<int64_t>>();
  }
  throw StatusError{
      invalid_argument("attribute '" + key + "': unsupported value type " + std::string(py::str(py::type::of(v))))};
}

ir::Node* find_node(ir::Graph& g, uintptr_t id) {
  for (auto& n : g.nodes())
    if (reinterpret_cast<uintptr_t>(n.get()) == id) return n.get();
  throw StatusError{invalid_argument("layer node " + std::to_string(id) + " is no longer part of the network")};
}

Tensor tensor_from_buffer(DataType dtype, const Dims& dims, const py::buffer& data, const std::string& what) {
  for (int64_t d : dims)
    if (d < 0) throw StatusError{invalid_argument(what + ": constants need static dims, got " + dims_to_string(dims))};
  py::buffer_info info = data.request();
  size_t need = static_cast<size_t>(volume(dims)) * dtype_size(dtype);
  size_t got = static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize);
  if (got != need)
    throw StatusError{invalid_argument(what + ": shape " + dims_to_string(dims) + " of " + dtype_name(dtype) +
                                       " needs " + std::to_string(need) + " bytes, the weights hold " +
                                       std::to_string(got))};
  Tensor t(dtype, dims);
  if (need) std::memcpy(t.raw(), info.ptr, need);
  return t;
}

// Removes nodes. The values they produced are detached, not deleted: Python may still hold handles to them (a
// traceback keeps a failed recipe's locals), and a handle must never point at freed memory. Detached values
// give up their names and are dropped with the other unused values when the builder prunes its copy.
void detach(ir::Graph& g, ir::Value* v) {
  static uint64_t counter = 0;
  while (!g.rename_value(v, "__kiln_detached_" + std::to_string(counter++))) {
  }
}

void discard_nodes(ir::Graph& g, const std::vector<ir::Node*>& nodes, const std::unordered_set<ir::Value*>& keep) {
  std::vector<ir::Value*> produced;
  for (ir::Node* n : nodes) {
    produced.insert(produced.end(), n->outputs.begin(), n->outputs.end());
    g.remove_node(n);
  }
  for (ir::Value* v : produced)
    if (!keep.count(v) && v->users.empty() && !v->producer) detach(g, v);
}

// The layer's old nodes give way to new ones built since: each old output value stays (tensors held by Python and
// the layers downstream keep pointing at it) and becomes the output of the new node that computed the new one.
void replace_layer(NetworkDefinition& net, const std::vector<uintptr_t>& old_ids,
                   const std::vector<TensorRef>& old_outs, const std::vector<TensorRef>& new_outs) {
  ir::Graph& g = net.graph();
  if (old_outs.size() != new_outs.size()) throw StatusError{internal_error("replace_layer: output counts differ")};
  std::vector<ir::Node*> old_nodes;
  for (uintptr_t id : old_ids) old_nodes.push_back(find_node(g, id));
  std::vector<std::pair<ir::Value*, ir::Value*>> pairs;
  std::unordered_set<ir::Value*> keep;
  for (size_t k = 0; k < old_outs.size(); ++k) {
    ir::Value* o = old_outs[k].value();
    ir::Value* n = new_outs[k].value();
    if (!o || !n || !n->producer || n->is_constant())
      throw StatusError{internal_error("replace_layer: output " + std::to_string(k) + " is not computed by a node")};
    pairs.emplace_back(o, n);
    keep.insert(o);
  }
  discard_nodes(g, old_nodes, keep);
  for (auto [o, n] : pairs) {
    ir::Node* p = n->producer;
    if (!n->users.empty()) g.replace_all_uses(n, o);
    std::replace(p->outputs.begin(), p->outputs.end(), n, o);
    o->producer = p;
    n->producer = nullptr;
    o->dtype = n->dtype;
    o->shape = n->shape;
    o->rank_known = n->rank_known;
    o->known = n->known;
    detach(g, n);
  }
  // New nodes were appended after their consumers; the builder's verifier wants producers first.
  check(g.topo_sort());
  for (auto [o, n] : pairs) passes::reinfer_downstream(o);
}

py::tuple tensor_shape(const TensorRef& r) {
  ir::Value* v = r.value();
  if (!v->rank_known) return py::tuple();
  return dims_to_tuple(r.t->dims());
}

}  // namespace

void bind_network(py::module_& m) {
  py::class_<TensorRef>(m, "ITensor", "A tensor of a network definition.")
      .def_property(
          "name", [](const TensorRef& r) { return r.t->name(); },
          [](const TensorRef& r, const std::string& name) {
            if (name.empty()) throw StatusError{invalid_argument("a tensor name cannot be empty")};
            if (!r.net->graph().rename_value(r.value(), name))
              throw StatusError{invalid_argument("cannot rename tensor '" + r.t->name() + "' to '" + name +
                                                 "': another tensor of the network has that name")};
          })
      .def_property(
          "shape", &tensor_shape,
          [](const TensorRef& r, const Dims& dims) {
            ir::Value* v = r.value();
            if (v->producer || v->is_constant() ||
                std::find(r.net->graph().inputs().begin(), r.net->graph().inputs().end(), v) ==
                    r.net->graph().inputs().end())
              throw StatusError{invalid_argument("tensor '" + r.t->name() +
                                                 "' is not a network input; only input shapes can be set")};
            for (int64_t d : dims)
              if (d < -1)
                throw StatusError{invalid_argument("shape " + dims_to_string(dims) + " for input '" + r.t->name() +
                                                   "': dims must be >= 0, or -1 for a dynamic dim")};
            r.t->set_dims(dims);
          })
      .def_property(
          "dtype", [](const TensorRef& r) { return r.t->dtype(); },
          [](const TensorRef& r, DataType dt) {
            ir::Value* v = r.value();
            auto& ins = r.net->graph().inputs();
            if (std::find(ins.begin(), ins.end(), v) == ins.end())
              throw StatusError{
                  invalid_argument("tensor '" + r.t->name() + "' is not a network input; only input types can be set")};
            v->dtype = dt;
            passes::reinfer_downstream(v);
          })
      .def_property_readonly("is_network_input",
                             [](const TensorRef& r) {
                               auto& ins = r.net->graph().inputs();
                               return std::find(ins.begin(), ins.end(), r.value()) != ins.end();
                             })
      .def_property_readonly("is_network_output",
                             [](const TensorRef& r) {
                               auto& outs = r.net->graph().outputs();
                               return std::find(outs.begin(), outs.end(), r.value()) != outs.end();
                             })
      .def_property_readonly("is_constant", [](const TensorRef& r) { return r.value()->is_constant(); })
      .def_property_readonly("rank_known", [](const TensorRef& r) { return r.value()->rank_known; })
      .def("__eq__", [](const TensorRef& a, const TensorRef& b) { return a.t == b.t; })
      .def("__hash__", [](const TensorRef& r) { return std::hash<const void*>()(r.t); })
      .def("__repr__", [](const TensorRef& r) {
        std::string shape = r.value()->rank_known ? dims_to_string(r.t->dims()) : "?";
        return "<kiln.ITensor '" + r.t->name() + "' " + dtype_name(r.t->dtype()) + " " + shape + ">";
      });

  py::class_<NetworkDefinition, NetPtr>(m, "_Network",
                                        "The C++ NetworkDefinition (wrapped by kiln.INetworkDefinition).")
      .def(py::init<>())
      .def("add_input",
           [](const NetPtr& net, const std::string& name, DataType dtype, const Dims& dims) {
             return ref(net, net->add_input(name, dtype, dims), "add_input '" + name + "'");
           })
      .def("mark_output",
           [](const NetPtr& net, const TensorRef& t) {
             same_network(net, t);
             check(net->mark_output(t.t));
           })
      .def("set_io_type",
           [](const NetPtr& net, const TensorRef& t, DataType dtype) {
             same_network(net, t);
             check(net->set_io_type(t.t, dtype));
           })
      .def("io_type",
           [](const NetPtr& net, const TensorRef& t) {
             same_network(net, t);
             return net->io_type(t.t);
           })
      .def("unmark_output",
           [](const NetPtr& net, const TensorRef& t) {
             same_network(net, t);
             auto& outs = net->graph().outputs();
             auto it = std::find(outs.begin(), outs.end(), t.value());
             if (it == outs.end()) throw StatusError{invalid_argument("'" + t.t->name() + "' is not a network output")};
             outs.erase(it);
           })
      .def(
          "add_op",
          [](const NetPtr& net, const std::string& op, const std::vector<std::optional<TensorRef>>& inputs,
             const py::dict& attrs, int num_outputs, const std::string& name) {
            std::vector<ITensor*> in;
            for (auto& t : inputs) {
              if (t) same_network(net, *t);
              in.push_back(t ? t->t : nullptr);
            }
            OpAttrs a;
            for (auto [k, v] : attrs) a.emplace_back(k.cast<std::string>(), to_attr(k.cast<std::string>(), v));
            std::vector<ITensor*> outs = net->add_op(op, in, a, num_outputs, name);
            if (outs.empty()) fail(*net, "add_op " + op + " failed");
            std::vector<TensorRef> r;
            for (ITensor* t : outs) r.push_back(TensorRef{net, t});
            return r;
          },
          py::arg("op_type"), py::arg("inputs"), py::arg("attrs") = py::dict(), py::arg("num_outputs") = 1,
          py::arg("name") = "")
      .def("add_constant",
           [](const NetPtr& net, const std::string& name, DataType dtype, const Dims& dims, const py::buffer& data) {
             Tensor t = tensor_from_buffer(dtype, dims, data, "constant '" + name + "'");
             return ref(net, net->add_constant(name, dtype, dims, t.raw()), "add_constant '" + name + "'");
           })
      .def("set_constant",
           [](const NetPtr& net, const TensorRef& r, DataType dtype, const Dims& dims, const py::buffer& data) {
             same_network(net, r);
             ir::Value* v = r.value();
             if (!v->is_constant()) throw StatusError{invalid_argument("'" + r.t->name() + "' is not a constant")};
             Tensor t = tensor_from_buffer(dtype, dims, data, "constant '" + r.t->name() + "'");
             // Recreating the value through add_constant keeps its derived info (known integer values) exact.
             ir::Graph scratch;
             ir::Value* fresh = scratch.add_constant("scratch", std::move(t));
             v->dtype = fresh->dtype;
             v->shape = fresh->shape;
             v->rank_known = true;
             v->known = fresh->known;
             v->constant = fresh->constant;
             passes::reinfer_downstream(v);
           })
      .def("add_placeholder",
           [](const NetPtr& net, const std::string& name, DataType dtype, int rank) {
             // Stands for the output of a layer that cannot be built yet (TensorRT checks layers only at build
             // time, so scripts may create one and fix its properties afterwards). Dims are unknown symbols.
             ir::Value* v = net->graph().add_value(name);
             v->dtype = dtype;
             v->rank_known = true;
             for (int i = 0; i < rank; ++i) v->shape.push_back(ir::Dim::symbol(v->name + "_d" + std::to_string(i)));
             return TensorRef{net, net->wrap(v)};
           })
      .def_property_readonly("num_inputs", &NetworkDefinition::num_inputs)
      .def_property_readonly("num_outputs", &NetworkDefinition::num_outputs)
      .def_property_readonly("num_nodes", &NetworkDefinition::num_layers)
      .def_property_readonly("opset", [](const NetPtr& net) { return net->graph().opset(); })
      .def("get_input", [](const NetPtr& net, int i) { return ref(net, net->get_input(i), "get_input"); })
      .def("get_output", [](const NetPtr& net, int i) { return ref(net, net->get_output(i), "get_output"); })
      .def("find_tensor",
           [](const NetPtr& net, const std::string& name) -> std::optional<TensorRef> {
             ITensor* t = net->find_tensor(name);
             if (!t) return std::nullopt;
             return TensorRef{net, t};
           })
      .def(
          "node_ids",
          [](const NetPtr& net, size_t start) {
            std::vector<uintptr_t> ids;
            auto& nodes = net->graph().nodes();
            for (size_t i = start; i < nodes.size(); ++i) ids.push_back(reinterpret_cast<uintptr_t>(nodes[i].get()));
            return ids;
          },
          py::arg("start") = 0)
      .def("node_info",
           [](const NetPtr& net, uintptr_t id) {
             ir::Node* n = find_node(net->graph(), id);
             std::vector<std::optional<TensorRef>> ins;
             for (ir::Value* v : n->inputs) {
               if (v)
                 ins.emplace_back(TensorRef{net, net->wrap(v)});
               else
                 ins.emplace_back(std::nullopt);
             }
             std::vector<TensorRef> outs;
             for (ir::Value* v : n->outputs) outs.push_back(TensorRef{net, net->wrap(v)});
             return py::make_tuple(n->name, n->op_type, ins, outs);
           })
      .def("set_node_name",
           [](const NetPtr& net, uintptr_t id, const std::string& name) {
             ir::Node* n = find_node(net->graph(), id);
             if (name.empty()) throw StatusError{invalid_argument("a layer name cannot be empty")};
             for (auto& other : net->graph().nodes())
               if (other.get() != n && other->name == name)
                 throw StatusError{invalid_argument("layer name '" + name + "' is already used by another layer")};
             n->name = name;
           })
      .def("discard_nodes",
           [](const NetPtr& net, const std::vector<uintptr_t>& ids) {
             std::vector<ir::Node*> nodes;
             for (uintptr_t id : ids) nodes.push_back(find_node(net->graph(), id));
             discard_nodes(net->graph(), nodes, {});
           })
      .def("replace_layer",
           [](const NetPtr& net, const std::vector<uintptr_t>& old_ids, const std::vector<TensorRef>& old_outs,
              const std::vector<TensorRef>& new_outs) { replace_layer(*net, old_ids, old_outs, new_outs); })
      .def("__str__", [](const NetPtr& net) { return ir::print(net->graph()); });
}

}  // namespace kiln::py_bind
