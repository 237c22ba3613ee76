// NetworkDefinition and ITensor: layer-by-layer network construction over the IR, inferring shapes as it goes.
#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "ir/graph.h"
#include "kiln/network.h"
#include "passes/shape_inference.h"

namespace kiln {
namespace {

// -1 dims become symbols named after the input, so error messages and dumps say which input they came from.
ops::Shape shape_for_input(const std::string& name, const Dims& dims) {
  ops::Shape s;
  for (size_t i = 0; i < dims.size(); ++i)
    s.push_back(dims[i] >= 0 ? ops::Dim(dims[i]) : ops::Dim::symbol(name + "_d" + std::to_string(i)));
  return s;
}

Attribute to_attribute(const OpAttr& a) {
  return std::visit([](const auto& v) { return Attribute(v); }, a);
}

}  // namespace

const std::string& ITensor::name() const { return value_->name; }
DataType ITensor::dtype() const { return value_->dtype; }
Dims ITensor::dims() const { return value_->rank_known ? ops::static_dims(value_->shape) : Dims{}; }

void ITensor::set_dims(const Dims& d) {
  // Values computed by layers get their shapes from inference; overriding them would contradict it.
  if (value_->producer || value_->is_constant()) return;
  value_->shape = shape_for_input(value_->name, d);
  value_->rank_known = true;
  passes::reinfer_downstream(value_);
}

struct NetworkDefinition::Impl {
  ir::Graph graph;
  std::unordered_map<const ir::Value*, std::unique_ptr<ITensor>> tensors;
  std::unordered_map<const ir::Value*, DataType> io_types;  // set_io_type's bindings that differ from the value's type
  int constant_counter = 0;
};

NetworkDefinition::NetworkDefinition() : impl_(std::make_unique<Impl>()) {}
NetworkDefinition::~NetworkDefinition() = default;

ir::Graph& NetworkDefinition::graph() { return impl_->graph; }
const ir::Graph& NetworkDefinition::graph() const { return impl_->graph; }

ITensor* NetworkDefinition::wrap(ir::Value* v) {
  if (!v) return nullptr;
  auto& slot = impl_->tensors[v];
  if (!slot) slot.reset(new ITensor(v));
  return slot.get();
}

ITensor* NetworkDefinition::add_input(const std::string& name, DataType dtype, const Dims& dims) {
  if (name.empty()) {
    last_error_ = invalid_argument("add_input: the input needs a name");
    return nullptr;
  }
  if (impl_->graph.find_value(name)) {
    last_error_ = invalid_argument("add_input: a tensor named '" + name + "' already exists");
    return nullptr;
  }
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] < -1) {
      last_error_ = invalid_argument("add_input '" + name + "': dim " + std::to_string(i) + " is " +
                                     std::to_string(dims[i]) + "; expected a size >= 0 or -1 for a dynamic dim");
      return nullptr;
    }
  ir::Value* v = impl_->graph.add_value(name);
  v->dtype = dtype;
  v->shape = shape_for_input(name, dims);
  v->rank_known = true;
  impl_->graph.inputs().push_back(v);
  return wrap(v);
}

Status NetworkDefinition::set_io_type(ITensor* t, DataType dtype) {
  if (!t || !impl_->tensors.count(t->value_))
    return last_error_ = invalid_argument("set_io_type: the tensor is null or belongs to another network");
  const ir::Value* v = t->value_;
  const auto& ins = impl_->graph.inputs();
  const auto& outs = impl_->graph.outputs();
  const bool in = std::find(ins.begin(), ins.end(), v) != ins.end();
  const bool out = std::find(outs.begin(), outs.end(), v) != outs.end();
  auto float_type = [](DataType d) { return d == DataType::kFLOAT || d == DataType::kHALF || d == DataType::kBF16; };
  const std::string what = "set_io_type '" + t->name() + "'";
  if (!in && !out)
    return last_error_ = invalid_argument(what + ": not a network input or output (only bindings have an I/O type)");
  if (in && out)
    return last_error_ = unsupported(what + ": a tensor that is both a network input and an output keeps its type");
  if (!float_type(dtype))
    return last_error_ = unsupported(what + ": " + dtype_name(dtype) + " bindings are not supported; float32, "
                                     "float16 and bfloat16 are");
  if (!float_type(v->dtype))
    return last_error_ = unsupported(what + ": the tensor is " + dtype_name(v->dtype) +
                                     "; only float32/float16/bfloat16 tensors can change their binding type");
  if (dtype == v->dtype)
    impl_->io_types.erase(v);
  else
    impl_->io_types[v] = dtype;
  return Status::Ok();
}

DataType NetworkDefinition::io_type(const ITensor* t) const {
  if (!t) return DataType::kFLOAT;
  auto it = impl_->io_types.find(t->value_);
  return it == impl_->io_types.end() ? t->dtype() : it->second;
}

const std::unordered_map<const ir::Value*, DataType>& NetworkDefinition::io_types() const { return impl_->io_types; }

Status NetworkDefinition::mark_output(ITensor* t) {
  if (!t || !impl_->tensors.count(t->value_))
    return last_error_ = invalid_argument("mark_output: the tensor is null or belongs to another network");
  auto& outs = impl_->graph.outputs();
  if (std::find(outs.begin(), outs.end(), t->value_) != outs.end())
    return last_error_ = invalid_argument("mark_output: '" + t->name() + "' is already an output");
  outs.push_back(t->value_);
  return Status::Ok();
}

ITensor* NetworkDefinition::add_constant(const std::string& name, DataType dtype, const Dims& dims, const void* data) {
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] < 0) {
      last_error_ = invalid_argument("add_constant '" + name + "': dim " + std::to_string(i) + " is " +
                                     std::to_string(dims[i]) + "; constants need static dims");
      return nullptr;
    }
  if (!data && volume(dims) > 0) {
    last_error_ = invalid_argument("add_constant '" + name + "': data is null");
    return nullptr;
  }
  Tensor t(dtype, dims);
  if (t.nbytes()) std::memcpy(t.raw(), data, t.nbytes());
  std::string n = name.empty() ? "const_" + std::to_string(impl_->constant_counter++) : name;
  return wrap(impl_->graph.add_constant(n, std::move(t)));
}

std::vector<ITensor*> NetworkDefinition::add_op(const std::string& op_type, const std::vector<ITensor*>& inputs,
                                                const OpAttrs& attrs, int num_outputs, const std::string& name) {
  const std::string what = "add_op " + op_type + (name.empty() ? "" : " '" + name + "'");
  const ops::OpSchema* schema = ops::OpRegistry::instance().find(op_type);
  if (!schema) {
    last_error_ = unsupported(what + ": operator '" + op_type + "' is not registered");
    return {};
  }
  int ni = static_cast<int>(inputs.size());
  if (ni < schema->min_inputs || (schema->max_inputs >= 0 && ni > schema->max_inputs)) {
    last_error_ = invalid_argument(what + ": expected " + std::to_string(schema->min_inputs) + " to " +
                                   (schema->max_inputs < 0 ? "any" : std::to_string(schema->max_inputs)) +
                                   " inputs, got " + std::to_string(ni));
    return {};
  }
  if (num_outputs < schema->min_outputs || (schema->max_outputs >= 0 && num_outputs > schema->max_outputs)) {
    last_error_ = invalid_argument(what + ": expected " + std::to_string(schema->min_outputs) + " to " +
                                   std::to_string(schema->max_outputs) + " outputs, asked for " +
                                   std::to_string(num_outputs));
    return {};
  }
  std::vector<ir::Value*> in;
  for (int i = 0; i < ni; ++i) {
    ITensor* t = inputs[i];
    // Trailing optional inputs may be left out with a null entry, as ONNX does with an empty name.
    if (!t && i >= schema->min_inputs) {
      in.push_back(nullptr);
      continue;
    }
    if (!t || !impl_->tensors.count(t->value_)) {
      last_error_ = invalid_argument(what + ": input " + std::to_string(i) +
                                     (t ? " belongs to another network" : " is null"));
      return {};
    }
    in.push_back(t->value_);
  }
  Attributes a;
  for (auto& [k, v] : attrs) a.set(k, to_attribute(v));
  Status st = ops::validate_attributes(*schema, a);
  if (!st.ok()) {
    last_error_ = st.with_context(what);
    return {};
  }
  ir::Graph& g = impl_->graph;
  // Empty output names let the graph derive them from the (uniquified) node name: "<node>_out", "<node>_out_1".
  ir::Node* n = g.add_node(op_type, name, in, std::vector<std::string>(num_outputs), std::move(a));
  st = passes::infer_node(g, *n);
  if (!st.ok()) {
    // Leave the network as it was: a failed layer must not linger as a half-typed node.
    std::vector<ir::Value*> outs = n->outputs;
    g.remove_node(n);
    for (ir::Value* o : outs) g.remove_value(o);
    last_error_ = st;
    return {};
  }
  std::vector<ITensor*> r;
  for (ir::Value* o : n->outputs) r.push_back(wrap(o));
  return r;
}

// A float scalar/tensor constant of the given dtype (Clip bounds, Reshape targets use int64 below).
static ITensor* float_constant(NetworkDefinition& net, const std::string& name, DataType dtype, float value) {
  Tensor t = Tensor::from_vector<float>({}, {value});
  if (dtype != DataType::kFLOAT) t = t.cast(dtype);
  return net.add_constant(name, dtype, {}, t.raw());
}

ITensor* NetworkDefinition::add_convolution(ITensor* input, int64_t out_channels, const Dims& kernel,
                                            const std::vector<float>& weights, const std::vector<float>& bias,
                                            const Dims& strides, const Dims& pads, const Dims& dilations,
                                            int64_t groups) {
  if (!input) {
    last_error_ = invalid_argument("add_convolution: input is null");
    return nullptr;
  }
  Dims in = input->dims();
  if (in.size() != kernel.size() + 2 || in[1] < 0) {
    last_error_ = invalid_argument("add_convolution: input '" + input->name() + "' has dims " + dims_to_string(in) +
                                   "; expected rank " + std::to_string(kernel.size() + 2) +
                                   " with a static channel dim");
    return nullptr;
  }
  if (groups <= 0 || in[1] % groups || out_channels % groups) {
    last_error_ = invalid_argument("add_convolution: groups " + std::to_string(groups) + " must divide input channels " +
                                   std::to_string(in[1]) + " and output channels " + std::to_string(out_channels));
    return nullptr;
  }
  Dims wdims = {out_channels, in[1] / groups};
  wdims.insert(wdims.end(), kernel.begin(), kernel.end());
  if (static_cast<int64_t>(weights.size()) != volume(wdims)) {
    last_error_ = invalid_argument("add_convolution: expected " + std::to_string(volume(wdims)) + " weights for shape " +
                                   dims_to_string(wdims) + ", got " + std::to_string(weights.size()));
    return nullptr;
  }
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != out_channels) {
    last_error_ = invalid_argument("add_convolution: expected " + std::to_string(out_channels) + " bias values, got " +
                                   std::to_string(bias.size()));
    return nullptr;
  }
  std::string base = "conv" + std::to_string(num_layers());
  std::vector<ITensor*> ins = {input, add_constant(base + "_weight", DataType::kFLOAT, wdims, weights.data())};
  if (!bias.empty()) ins.push_back(add_constant(base + "_bias", DataType::kFLOAT, {out_channels}, bias.data()));
  OpAttrs attrs = {{"kernel_shape", kernel}, {"group", groups}};
  if (!strides.empty()) attrs.emplace_back("strides", strides);
  if (!dilations.empty()) attrs.emplace_back("dilations", dilations);
  if (!pads.empty()) {
    // The API takes symmetric pads per spatial dim; ONNX wants all begins then all ends.
    Dims p = pads;
    if (pads.size() == kernel.size()) p.insert(p.end(), pads.begin(), pads.end());
    attrs.emplace_back("pads", p);
  }
  auto r = add_op("Conv", ins, attrs);
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_activation(ITensor* input, ActivationType type, float alpha, float beta) {
  auto one = [&](const std::string& op, const std::vector<ITensor*>& in, const OpAttrs& attrs = {}) -> ITensor* {
    auto r = add_op(op, in, attrs);
    return r.empty() ? nullptr : r[0];
  };
  if (!input) {
    last_error_ = invalid_argument("add_activation: input is null");
    return nullptr;
  }
  // alpha/beta of 0 (the API default) select the ONNX defaults where 0 would make the activation degenerate.
  switch (type) {
    case ActivationType::kRELU: return one("Relu", {input});
    case ActivationType::kSIGMOID: return one("Sigmoid", {input});
    case ActivationType::kTANH: return one("Tanh", {input});
    case ActivationType::kGELU_ERF: return one("Gelu", {input});
    case ActivationType::kGELU_TANH: return one("Gelu", {input}, {{"approximate", std::string("tanh")}});
    case ActivationType::kSILU: {
      ITensor* s = one("Sigmoid", {input});
      return s ? one("Mul", {input, s}) : nullptr;
    }
    case ActivationType::kHARD_SIGMOID:
      return one("HardSigmoid", {input}, {{"alpha", alpha != 0.f ? alpha : 0.2f}, {"beta", beta != 0.f ? beta : 0.5f}});
    case ActivationType::kHARD_SWISH: return one("HardSwish", {input});
    case ActivationType::kLEAKY_RELU: return one("LeakyRelu", {input}, {{"alpha", alpha}});
    case ActivationType::kELU: return one("Elu", {input}, {{"alpha", alpha != 0.f ? alpha : 1.f}});
    case ActivationType::kSOFTPLUS: return one("Softplus", {input});
    case ActivationType::kCLIP: {
      std::string base = "clip" + std::to_string(num_layers());
      ITensor* lo = float_constant(*this, base + "_min", input->dtype(), alpha);
      ITensor* hi = float_constant(*this, base + "_max", input->dtype(), beta);
      return lo && hi ? one("Clip", {input, lo, hi}) : nullptr;
    }
  }
  last_error_ = invalid_argument("add_activation: unknown activation type");
  return nullptr;
}

ITensor* NetworkDefinition::add_elementwise(ITensor* a, ITensor* b, ElementWiseOperation op) {
  static const char* kOps[] = {"Add", "Sub", "Mul", "Div", "Min", "Max", "Pow"};
  auto r = add_op(kOps[static_cast<int>(op)], {a, b});
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_matrix_multiply(ITensor* a, ITensor* b) {
  auto r = add_op("MatMul", {a, b});
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_pooling(ITensor* input, PoolingType type, const Dims& window, const Dims& strides,
                                        const Dims& pads) {
  OpAttrs attrs = {{"kernel_shape", window}};
  if (!strides.empty()) attrs.emplace_back("strides", strides);
  if (!pads.empty()) {
    Dims p = pads;
    if (pads.size() == window.size()) p.insert(p.end(), pads.begin(), pads.end());
    attrs.emplace_back("pads", p);
  }
  auto r = add_op(type == PoolingType::kMAX ? "MaxPool" : "AveragePool", {input}, attrs);
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_softmax(ITensor* input, int64_t axis) {
  auto r = add_op("Softmax", {input}, {{"axis", axis}});
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_reshape(ITensor* input, const Dims& shape) {
  ITensor* s = add_constant("reshape" + std::to_string(num_layers()) + "_shape", DataType::kINT64,
                            {static_cast<int64_t>(shape.size())}, shape.data());
  if (!s) return nullptr;
  auto r = add_op("Reshape", {input, s});
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_concatenation(const std::vector<ITensor*>& inputs, int64_t axis) {
  auto r = add_op("Concat", inputs, {{"axis", axis}});
  return r.empty() ? nullptr : r[0];
}

ITensor* NetworkDefinition::add_reduce(ITensor* input, ReduceOperation op, const std::vector<int64_t>& axes,
                                       bool keep_dims) {
  static const char* kOps[] = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"};
  const char* name = kOps[static_cast<int>(op)];
  OpAttrs attrs = {{"keepdims", int64_t{keep_dims}}};
  std::vector<ITensor*> ins = {input};
  // The network is built at opset 17, where ReduceSum takes axes as an input and the others as an attribute.
  if (op == ReduceOperation::kSUM) {
    ITensor* ax = add_constant("reduce" + std::to_string(num_layers()) + "_axes", DataType::kINT64,
                               {static_cast<int64_t>(axes.size())}, axes.data());
    if (!ax) return nullptr;
    ins.push_back(ax);
  } else {
    attrs.emplace_back("axes", axes);
  }
  auto r = add_op(name, ins, attrs);
  return r.empty() ? nullptr : r[0];
}

int NetworkDefinition::num_inputs() const { return static_cast<int>(impl_->graph.inputs().size()); }
int NetworkDefinition::num_outputs() const { return static_cast<int>(impl_->graph.outputs().size()); }
int NetworkDefinition::num_layers() const { return static_cast<int>(impl_->graph.nodes().size()); }

ITensor* NetworkDefinition::get_input(int i) {
  return i >= 0 && i < num_inputs() ? wrap(impl_->graph.inputs()[i]) : nullptr;
}
ITensor* NetworkDefinition::get_output(int i) {
  return i >= 0 && i < num_outputs() ? wrap(impl_->graph.outputs()[i]) : nullptr;
}
ITensor* NetworkDefinition::find_tensor(const std::string& name) { return wrap(impl_->graph.find_value(name)); }

}  // namespace kiln
