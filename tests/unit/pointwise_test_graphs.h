// Networks of elementwise chains shared by the fuse_pointwise unit tests and the CUDA Pointwise GPU tests.
#pragma once

#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "engine_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "kiln/network.h"

namespace kiln::pwtest {

inline ir::Value* input(ir::Graph& g, const std::string& name, DataType dt, ops::Shape shape) {
  return test::add_input(g, name, dt, std::move(shape));
}

inline Tensor random(DataType dt, std::vector<int64_t> shape, uint32_t seed, double lo = -2, double hi = 2) {
  return test::random_tensor(dt, std::move(shape), seed, lo, hi);
}

struct Case {
  std::string name;
  std::vector<std::pair<DataType, std::vector<int64_t>>> inputs_spec;
  std::function<void(NetworkDefinition&, const std::vector<ITensor*>&)> body;  // adds ops and marks outputs
  int opset = 17;
  int min_groups = 1;

  std::unique_ptr<ir::Graph> build() const {
    NetworkDefinition net;
    net.graph().set_opset(opset);
    std::vector<ITensor*> in;
    for (size_t i = 0; i < inputs_spec.size(); ++i)
      in.push_back(net.add_input("in" + std::to_string(i), inputs_spec[i].first, inputs_spec[i].second));
    body(net, in);
    return net.graph().clone();
  }
  std::vector<Tensor> inputs(uint32_t seed) const {
    std::vector<Tensor> r;
    for (size_t i = 0; i < inputs_spec.size(); ++i)
      r.push_back(random(inputs_spec[i].first, inputs_spec[i].second, seed + static_cast<uint32_t>(i)));
    return r;
  }
};

inline ITensor* scalar(NetworkDefinition& net, const std::string& name, float v) {
  return net.add_constant(name, DataType::kFLOAT, {}, &v);
}

inline ITensor* op(NetworkDefinition& net, const std::string& type, std::vector<ITensor*> in, OpAttrs attrs = {}) {
  auto r = net.add_op(type, in, attrs);
  return r.empty() ? nullptr : r[0];
}

// Shapes are those the brief names as common: per-channel [N,C,1,1] biases, [B,1,1,S] attention masks, scalars,
// and an odd innermost dim that rules out the 4-wide kernel.
inline std::vector<Case> cases(bool large = false) {
  const int64_t n = large ? 8 : 2, c = large ? 64 : 8, hw = large ? 28 : 6, s = large ? 128 : 8, h = large ? 12 : 4;
  std::vector<Case> v;
  v.push_back({"bias_swish_clip_nchw",
               {{DataType::kFLOAT, {n, c, hw, hw}}, {DataType::kFLOAT, {1, c, 1, 1}}},
               [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                 ITensor* x = op(net, "Add", {in[0], in[1]});
                 ITensor* hx = op(net, "Mul", {x, scalar(net, "half", 0.5f)});
                 ITensor* sw = op(net, "Mul", {op(net, "Sigmoid", {hx}), x});
                 ITensor* y = op(net, "Clip", {sw, scalar(net, "lo", -0.25f), scalar(net, "hi", 1.5f)});
                 (void)net.mark_output(y);
               }});
  v.push_back({"attention_mask_bs",
               {{DataType::kFLOAT, {n, h, s, s}}, {DataType::kBOOL, {n, 1, 1, s}}},
               [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                 ITensor* m = op(net, "Cast", {in[1]}, {{"to", int64_t{1}}});
                 ITensor* keep = op(net, "Sub", {scalar(net, "one", 1.0f), m});
                 ITensor* bias = op(net, "Mul", {keep, scalar(net, "neg", -10000.0f)});
                 ITensor* sc = op(net, "Mul", {in[0], scalar(net, "scale", 0.125f)});
                 ITensor* masked = op(net, "Add", {sc, bias});
                 ITensor* pos = op(net, "Greater", {masked, scalar(net, "zero", 0.0f)});
                 ITensor* y = op(net, "Where", {pos, op(net, "Tanh", {masked}), op(net, "Neg", {masked})});
                 (void)net.mark_output(y);
                 (void)net.mark_output(masked);  // a second output from inside the chain
               }});
  v.push_back({"activations_odd_inner",
               {{DataType::kFLOAT, {3, large ? 1001 : 17}}, {DataType::kFLOAT, {large ? 1001 : 17}}},
               [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                 ITensor* x = in[0];
                 ITensor* a = op(net, "LeakyRelu", {x}, {{"alpha", 0.1f}});
                 ITensor* b = op(net, "HardSigmoid", {a}, {{"alpha", 0.3f}, {"beta", 0.4f}});
                 ITensor* c = op(net, "HardSwish", {op(net, "Mul", {b, in[1]})});
                 ITensor* d = op(net, "Log", {op(net, "Add", {op(net, "Abs", {x}), scalar(net, "eps", 0.5f)})});
                 ITensor* e = op(net, "Sqrt", {op(net, "Exp", {op(net, "Relu", {in[1]})})});
                 ITensor* f = op(net, "Div", {op(net, "Erf", {c}), op(net, "Reciprocal", {e})});
                 ITensor* g = op(net, "Pow", {op(net, "Max", {f, d}), scalar(net, "two", 2.0f)});
                 ITensor* y = op(net, "Sub", {op(net, "Min", {g, x}), d});
                 (void)net.mark_output(y);
               }});
  v.push_back({"gelu_tanh_and_erf",
               {{DataType::kFLOAT, {n, s, 4 * c}}, {DataType::kFLOAT, {4 * c}}},
               [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                 ITensor* x = op(net, "Add", {in[0], in[1]});
                 ITensor* a = op(net, "Gelu", {x});
                 ITensor* b = op(net, "Gelu", {x}, {{"approximate", std::string("tanh")}});
                 (void)net.mark_output(op(net, "Add", {a, b}));
               },
               20});
  v.push_back({"int_bool_casts",
               {{DataType::kINT32, {4, 5}}, {DataType::kFLOAT, {4, 1}}},
               [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                 ITensor* xf = op(net, "Cast", {in[0]}, {{"to", int64_t{1}}});
                 ITensor* y = op(net, "Mul", {xf, in[1]});
                 ITensor* ge = op(net, "Not", {op(net, "Less", {y, xf})});
                 ITensor* both = op(net, "And", {ge, op(net, "Equal", {in[0], op(net, "Abs", {in[0]})})});
                 (void)net.mark_output(op(net, "Cast", {y}, {{"to", int64_t{7}}}));  // truncation to int64
                 (void)net.mark_output(both);
                 (void)net.mark_output(op(net, "Cast", {both}, {{"to", int64_t{10}}}));  // bool to float16
               }});
  return v;
}

}  // namespace kiln::pwtest
