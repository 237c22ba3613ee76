// Unit tests for conv1x1_as_gemm: channels-last 1x1 convolutions become FusedMatMul (graph and numbers), the
// others stay convolutions.
#include <gtest/gtest.h>

#include "cnn_test_util.h"
#include "ops/layout_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

// x [2,5,6,8] NHWC -> FusedConv(kernel k, stride s, activation act, bias, residual z) -> y
struct OneConv {
  ir::Graph g;
  std::vector<Tensor> inputs;
  OneConv(int64_t k, int64_t stride, const std::string& act, bool residual) {
    const int64_t m = 16, c = 8;
    ir::Value* x = graph_input(g, "x", {2, 5, 6, c});
    inputs.push_back(random_f32({2, 5, 6, c}, 1));
    Attributes a;
    a.set("layout", "NHWC");
    a.set("activation", act);
    a.set("alpha", act == "leaky_relu" ? 0.1f : 1.f / 6);
    a.set("beta", 0.5f);
    a.set("clip_min", 0.f);
    a.set("clip_max", 0.5f);
    a.set("strides", std::vector<int64_t>{stride, stride});
    a.set("pads", std::vector<int64_t>(4, 0));
    std::vector<ir::Value*> in = {x, g.add_constant("w", random_f32({m, k, k, c}, 2)),
                                  g.add_constant("b", random_f32({m}, 3))};
    if (residual) {
      const int64_t oh = (5 - k) / stride + 1, ow = (6 - k) / stride + 1;
      in.push_back(graph_input(g, "z", {2, oh, ow, m}));
      inputs.push_back(random_f32({2, oh, ow, m}, 4));
    }
    ir::Node* n = g.add_node("FusedConv", "conv", in, {"y"}, a, 1, "kiln");
    g.outputs().push_back(n->outputs[0]);
  }
};

TEST(Conv1x1AsGemm, OneByOneConvolutionsBecomeGemmsWithTheSameResult) {
  for (const char* act : {"none", "relu", "clip", "sigmoid", "silu", "hardswish", "gelu_erf", "gelu_tanh", "leaky_relu"}) {
    for (bool residual : {false, true}) {
      SCOPED_TRACE(std::string(act) + (residual ? " residual" : ""));
      OneConv c(1, 1, act, residual);
      ASSERT_TRUE(run_passes(c.g, {}).ok());
      auto want = run_reference(c.g, c.inputs);
      passes::PassList l;
      l.push_back(passes::make_conv1x1_as_gemm());
      ASSERT_TRUE(run_passes(c.g, std::move(l)).ok());
      EXPECT_EQ(count_ops(c.g, "FusedConv"), 0) << ir::print(c.g);
      EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 1) << ir::print(c.g);
      // FusedMatMul's epilogue has ReLU and GELU (after the residual, with residual_first); others follow.
      const std::string a = act;
      const bool in_gemm = a == "none" || a == "relu" || a == "gelu_erf" || a == "gelu_tanh";
      EXPECT_EQ(c.g.nodes().size(), in_gemm ? 1u : 2u + (a == "silu" || a == "hardswish")) << ir::print(c.g);
      EXPECT_EQ(c.g.outputs()[0]->name, "y");
      auto got = run_reference(c.g, c.inputs);
      ASSERT_EQ(got.size(), 1u);
      expect_close(got[0], want[0], 1e-5, 1e-5);
    }
  }
}

TEST(Conv1x1AsGemm, OtherConvolutionsStay) {
  struct Case { int64_t k, stride; const char* act; };
  for (Case cs : {Case{3, 1, "relu"}, Case{1, 2, "relu"}, Case{3, 2, "silu"}}) {
    SCOPED_TRACE(std::to_string(cs.k) + "x" + std::to_string(cs.k) + " stride " + std::to_string(cs.stride) + " " + cs.act);
    OneConv c(cs.k, cs.stride, cs.act, false);
    passes::PassList l;
    l.push_back(passes::make_conv1x1_as_gemm());
    ASSERT_TRUE(run_passes(c.g, std::move(l)).ok());
    EXPECT_EQ(count_ops(c.g, "FusedConv"), 1);
    EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 0);
  }
}

}  // namespace
