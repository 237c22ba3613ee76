// fold_batchnorm and fuse_conv_epilogue: graph structure after each pass, and the transformed graph's outputs
// against the original's on the reference kernels.
#include <gtest/gtest.h>

#include <functional>

#include "cnn_test_util.h"
#include "ops/layout_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

Attributes conv_attrs(std::vector<int64_t> pads, int64_t group = 1, std::vector<int64_t> strides = {1, 1}) {
  Attributes a;
  a.set("pads", pads);
  a.set("group", group);
  a.set("strides", strides);
  return a;
}

// Constant BN parameters with variances away from zero, as trained networks have.
std::vector<ir::Value*> bn_params(ir::Graph& g, int64_t c, uint32_t seed) {
  return {g.add_constant("bn_scale", random_f32({c}, seed, 0.5f, 1.5f)),
          g.add_constant("bn_bias", random_f32({c}, seed + 1)), g.add_constant("bn_mean", random_f32({c}, seed + 2)),
          g.add_constant("bn_var", random_f32({c}, seed + 3, 0.2f, 2.f))};
}

ir::Value* batchnorm(ir::Graph& g, ir::Value* x, int64_t c, uint32_t seed) {
  auto p = bn_params(g, c, seed);
  Attributes a;
  a.set("epsilon", 1e-3f);
  return op1(g, "BatchNormalization", {x, p[0], p[1], p[2], p[3]}, a);
}

// Runs `passes` on a copy and checks that its outputs match the original's on `inputs`.
void expect_same_outputs(const ir::Graph& before, const ir::Graph& after, const std::vector<Tensor>& inputs,
                         double atol = 1e-5, double rtol = 1e-5) {
  auto a = run_reference(before, inputs);
  auto b = run_reference(after, inputs);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) expect_close(b[i], a[i], atol, rtol);
}

passes::PassList fold() {
  passes::PassList l;
  l.push_back(passes::make_fold_batchnorm());
  return l;
}

passes::PassList fuse() {
  passes::PassList l;
  l.push_back(passes::make_fuse_conv_epilogue());
  l.push_back(passes::make_dead_code_elimination());
  return l;
}

// ---- fold_batchnorm ----

TEST(FoldBatchNorm, FoldsIntoConvWithAndWithoutBias) {
  for (bool with_bias : {false, true}) {
    SCOPED_TRACE(with_bias ? "conv bias" : "no conv bias");
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {2, 3, 7, 6});
    std::vector<ir::Value*> in = {x, g.add_constant("w", random_f32({8, 3, 3, 3}, 1))};
    if (with_bias) in.push_back(g.add_constant("b", random_f32({8}, 2)));
    ir::Value* c = op1(g, "Conv", in, conv_attrs({1, 1, 1, 1}));
    ir::Value* y = batchnorm(g, c, 8, 3);
    g.rename_value(y, "y");
    g.outputs().push_back(op1(g, "Relu", {y}));
    g.outputs().push_back(y);  // BN's output is itself a graph output: its name must survive the fold
    auto before = g.clone();
    ASSERT_TRUE(run_passes(g, fold()).ok());
    EXPECT_EQ(count_ops(g, "BatchNormalization"), 0);
    const ir::Node* conv = find_op(g, "Conv");
    ASSERT_NE(conv, nullptr);
    ASSERT_EQ(conv->inputs.size(), 3u);
    EXPECT_TRUE(conv->inputs[2]->is_constant());
    EXPECT_EQ(conv->outputs[0]->name, "y");
    EXPECT_EQ(g.outputs()[1]->name, "y");
    expect_same_outputs(*before, g, {random_f32({2, 3, 7, 6}, 4)});
  }
}

TEST(FoldBatchNorm, FoldsIntoGroupedConvTranspose) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 4, 5, 5});
  // W [C_in=4, M/group=3, 2, 2] with group 2: 6 output channels, each group's rows scale different channels.
  ir::Value* c = op1(g, "ConvTranspose", {x, g.add_constant("w", random_f32({4, 3, 2, 2}, 5))},
                     conv_attrs({0, 0, 0, 0}, 2, {2, 2}));
  g.outputs().push_back(batchnorm(g, c, 6, 6));
  auto before = g.clone();
  ASSERT_TRUE(run_passes(g, fold()).ok());
  EXPECT_EQ(count_ops(g, "BatchNormalization"), 0);
  expect_same_outputs(*before, g, {random_f32({1, 4, 5, 5}, 7)});
}

TEST(FoldBatchNorm, KeepsBatchNormWhenConvOutputIsSharedOrWeightsVary) {
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 2, 4, 4});
    ir::Value* c = op1(g, "Conv", {x, g.add_constant("w", random_f32({2, 2, 1, 1}, 8))});
    g.outputs().push_back(batchnorm(g, c, 2, 9));
    g.outputs().push_back(op1(g, "Relu", {c}));  // the raw convolution is needed too
    ASSERT_TRUE(run_passes(g, fold()).ok());
    EXPECT_EQ(count_ops(g, "BatchNormalization"), 1);
  }
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 2, 4, 4});
    ir::Value* w = graph_input(g, "w", {2, 2, 1, 1});  // weights fed at run time cannot be rewritten
    g.outputs().push_back(batchnorm(g, op1(g, "Conv", {x, w}), 2, 10));
    ASSERT_TRUE(run_passes(g, fold()).ok());
    EXPECT_EQ(count_ops(g, "BatchNormalization"), 1);
  }
}

// ---- fuse_conv_epilogue ----

struct EpilogueCase {
  std::string name;
  std::string activation;  // expected FusedConv activation
  // Builds the activation over v (the convolution's possibly biased / residual-added value).
  std::function<ir::Value*(ir::Graph&, ir::Value*)> act;
};

std::vector<EpilogueCase> epilogue_cases() {
  auto unary = [](const char* op, Attributes a = {}) {
    return [op, a](ir::Graph& g, ir::Value* v) { return op1(g, op, {v}, a); };
  };
  Attributes leaky;
  leaky.set("alpha", 0.125f);
  Attributes gelu_tanh;
  gelu_tanh.set("approximate", "tanh");
  Attributes hsig;
  hsig.set("alpha", 0.25f);
  hsig.set("beta", 0.4f);
  return {
      {"relu", "relu", unary("Relu")},
      {"sigmoid", "sigmoid", unary("Sigmoid")},
      {"hardswish", "hardswish", unary("HardSwish")},
      {"leaky_relu", "leaky_relu", unary("LeakyRelu", leaky)},
      {"gelu_erf", "gelu_erf", unary("Gelu")},
      {"gelu_tanh", "gelu_tanh", unary("Gelu", gelu_tanh)},
      {"relu6", "clip",
       [](ir::Graph& g, ir::Value* v) {
         return op1(g, "Clip",
                    {v, g.add_constant("lo", Tensor::from_vector<float>({}, {0.f})),
                     g.add_constant("hi", Tensor::from_vector<float>({}, {6.f}))});
       }},
      {"silu", "silu",
       [](ir::Graph& g, ir::Value* v) {
         return op1(g, "Mul", {op1(g, "Sigmoid", {v}), v});
       }},
      {"hardsigmoid_x", "hardswish",
       [hsig](ir::Graph& g, ir::Value* v) {
         return op1(g, "Mul", {v, op1(g, "HardSigmoid", {v}, hsig)});
       }},
  };
}

TEST(FuseConvEpilogue, EachActivationWithBiasAndResidual) {
  for (const auto& c : epilogue_cases())
    for (int form = 0; form < 3; ++form) {  // 0: conv + act; 1: conv + bias add + act; 2: + residual too
      SCOPED_TRACE(c.name + " form " + std::to_string(form));
      ir::Graph g;
      ir::Value* x = graph_input(g, "x", {2, 4, 6, 6});
      ir::Value* z = graph_input(g, "z", {2, 8, 6, 6});
      ir::Value* v = op1(
          g, "Conv", {x, g.add_constant("w", random_f32({8, 4, 3, 3}, 11)), g.add_constant("b", random_f32({8}, 12))},
          conv_attrs({1, 1, 1, 1}));
      if (form >= 1) v = op1(g, "Add", {g.add_constant("cb", random_f32({1, 8, 1, 1}, 13)), v});
      if (form >= 2) v = op1(g, "Add", {v, z});
      ir::Value* y = c.act(g, v);
      g.rename_value(y, "y");
      g.outputs().push_back(y);
      auto before = g.clone();
      ASSERT_TRUE(run_passes(g, fuse()).ok());
      ASSERT_EQ(g.nodes().size(), 1u) << ir::print(g);
      const ir::Node* f = g.nodes()[0].get();
      EXPECT_EQ(f->op_type, "FusedConv");
      EXPECT_EQ(f->domain, "kiln");
      EXPECT_EQ(f->attrs.get_string("activation").value(), c.activation);
      EXPECT_EQ(f->inputs.size(), form == 2 ? 4u : 3u);
      EXPECT_EQ(g.outputs()[0]->name, "y");
      expect_same_outputs(*before, g, {random_f32({2, 4, 6, 6}, 14, -2, 2), random_f32({2, 8, 6, 6}, 15)});
    }
}

TEST(FuseConvEpilogue, ResidualAndBiasWithoutActivation) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 3, 5, 5});
  ir::Value* z = graph_input(g, "z", {1, 6, 5, 5});
  ir::Value* c = op1(g, "Conv", {x, g.add_constant("w", random_f32({6, 3, 1, 1}, 16))});
  ir::Value* r = op1(g, "Add", {z, c});
  g.outputs().push_back(r);
  // Another conv whose bias add feeds a non-fusable op: the add alone is taken.
  ir::Value* c2 = op1(g, "Conv", {x, g.add_constant("w2", random_f32({6, 3, 1, 1}, 17))});
  ir::Value* b2 = op1(g, "Add", {c2, g.add_constant("s", Tensor::from_vector<float>({}, {0.5f}))});
  g.outputs().push_back(op1(g, "Tanh", {b2}));
  auto before = g.clone();
  ASSERT_TRUE(run_passes(g, fuse()).ok());
  EXPECT_EQ(count_ops(g, "FusedConv"), 2);
  EXPECT_EQ(count_ops(g, "Conv"), 0);
  EXPECT_EQ(count_ops(g, "Add"), 0);
  EXPECT_EQ(count_ops(g, "Tanh"), 1);
  expect_same_outputs(*before, g, {random_f32({1, 3, 5, 5}, 18), random_f32({1, 6, 5, 5}, 19)});
}

TEST(FuseConvEpilogue, LeavesValuesNeededElsewhere) {
  // The conv output is read by a second consumer: nothing may fuse it away.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 2, 4, 4});
  ir::Value* c = op1(g, "Conv", {x, g.add_constant("w", random_f32({2, 2, 3, 3}, 20))}, conv_attrs({1, 1, 1, 1}));
  g.outputs().push_back(op1(g, "Relu", {c}));
  g.outputs().push_back(op1(g, "Neg", {c}));
  // A bias add that broadcasts along W, not channels, is not a per-channel bias.
  ir::Value* c2 = op1(g, "Conv", {x, g.add_constant("w2", random_f32({2, 2, 3, 3}, 21))}, conv_attrs({1, 1, 1, 1}));
  g.outputs().push_back(op1(g, "Add", {c2, g.add_constant("row", random_f32({4}, 22))}));
  // A residual that broadcasts is not a residual.
  ir::Value* c3 = op1(g, "Conv", {x, g.add_constant("w3", random_f32({2, 2, 3, 3}, 23))}, conv_attrs({1, 1, 1, 1}));
  ir::Value* small = graph_input(g, "small", {1, 2, 1, 4});
  g.outputs().push_back(op1(g, "Add", {c3, small}));
  auto before = g.clone();
  ASSERT_TRUE(run_passes(g, fuse()).ok());
  EXPECT_EQ(count_ops(g, "FusedConv"), 0) << ir::print(g);
  EXPECT_EQ(count_ops(g, "Conv"), 3);
  expect_same_outputs(*before, g, {random_f32({1, 2, 4, 4}, 24), random_f32({1, 2, 1, 4}, 25)});
}

TEST(FuseConvEpilogue, FoldedResnetBlock) {
  // conv-bn-relu-conv-bn-add-relu after both passes: two FusedConvs, the second with the residual.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 8, 6, 6});
  ir::Value* a = op1(g, "Conv", {x, g.add_constant("w1", random_f32({8, 8, 3, 3}, 26))}, conv_attrs({1, 1, 1, 1}));
  a = op1(g, "Relu", {batchnorm(g, a, 8, 27)});
  ir::Value* b = op1(g, "Conv", {a, g.add_constant("w2", random_f32({8, 8, 3, 3}, 28))}, conv_attrs({1, 1, 1, 1}));
  b = batchnorm(g, b, 8, 29);
  g.outputs().push_back(op1(g, "Relu", {op1(g, "Add", {b, x})}));
  auto before = g.clone();
  passes::PassList l = fold();
  for (auto& p : fuse()) l.push_back(std::move(p));
  ASSERT_TRUE(run_passes(g, std::move(l)).ok());
  ASSERT_EQ(g.nodes().size(), 2u) << ir::print(g);
  EXPECT_EQ(g.nodes()[1]->inputs.size(), 4u);
  EXPECT_EQ(g.nodes()[1]->inputs[3], x);
  expect_same_outputs(*before, g, {random_f32({2, 8, 6, 6}, 30)});
}

TEST(FusedConv, NhwcMatchesNchw) {
  // The NHWC form (X, Z, Y channels-last, W as [M, kh, kw, C/g]) computes the NCHW result permuted.
  for (int64_t group : {1, 2}) {
    Tensor x = random_f32({2, 4, 7, 5}, 31), w = random_f32({6, 4 / group, 3, 2}, 32), b = random_f32({6}, 33);
    Attributes a = conv_attrs({1, 0, 1, 1}, group, {2, 1});
    a.set("activation", "silu");
    Tensor z = random_f32({2, 6, 4, 5}, 34);
    auto nchw = ops::run_reference("FusedConv", "kiln", a, 1, {&x, &w, &b, &z});
    ASSERT_TRUE(nchw.ok()) << nchw.status().message();
    Tensor xh = ops::permute(x, ops::perm_to_nhwc(4)).value(), wh = ops::permute(w, ops::perm_to_nhwc(4)).value(),
           zh = ops::permute(z, ops::perm_to_nhwc(4)).value();
    a.set("layout", "NHWC");
    auto nhwc = ops::run_reference("FusedConv", "kiln", a, 1, {&xh, &wh, &b, &zh});
    ASSERT_TRUE(nhwc.ok()) << nhwc.status().message();
    expect_close((*nhwc)[0], ops::permute((*nchw)[0], ops::perm_to_nhwc(4)).value(), 0);
  }
}

}  // namespace
