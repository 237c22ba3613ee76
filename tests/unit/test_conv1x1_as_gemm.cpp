// Unit tests for conv1x1_as_gemm: channels-last 1x1 convolutions become FusedMatMul (graph and numbers), the
// others stay convolutions.
#include <gtest/gtest.h>

#include "cnn_onnx_model.h"
#include "cnn_test_util.h"
#include "ops/layout_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

// x [2,h,w,8] NHWC -> FusedConv(kernel k, strides (sh, sw), activation act, bias, residual z) -> y
struct OneConv {
  ir::Graph g;
  std::vector<Tensor> inputs;
  OneConv(int64_t k, int64_t stride, const std::string& act, bool residual)
      : OneConv(k, stride, stride, act, residual, 5, 6, true) {}
  OneConv(int64_t k, int64_t sh, int64_t sw, const std::string& act, bool residual, int64_t h, int64_t w, bool bias) {
    const int64_t m = 16, c = 8;
    ir::Value* x = graph_input(g, "x", {2, h, w, c});
    inputs.push_back(random_f32({2, h, w, c}, 1));
    Attributes a;
    a.set("layout", "NHWC");
    a.set("activation", act);
    a.set("alpha", act == "leaky_relu" ? 0.1f : 1.f / 6);
    a.set("beta", 0.5f);
    a.set("clip_min", 0.f);
    a.set("clip_max", 0.5f);
    a.set("strides", std::vector<int64_t>{sh, sw});
    a.set("pads", std::vector<int64_t>(4, 0));
    std::vector<ir::Value*> in = {x, g.add_constant("w", random_f32({m, k, k, c}, 2))};
    if (bias || residual) in.push_back(bias ? g.add_constant("b", random_f32({m}, 3)) : nullptr);
    if (residual) {
      // The convolution's output size, written out independently of the pass: floor((H - k) / s) + 1.
      const int64_t oh = (h - k) / sh + 1, ow = (w - k) / sw + 1;
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
  for (Case cs : {Case{3, 1, "relu"}, Case{3, 2, "silu"}}) {
    SCOPED_TRACE(std::to_string(cs.k) + "x" + std::to_string(cs.k) + " stride " + std::to_string(cs.stride) + " " + cs.act);
    OneConv c(cs.k, cs.stride, cs.act, false);
    passes::PassList l;
    l.push_back(passes::make_conv1x1_as_gemm());
    ASSERT_TRUE(run_passes(c.g, std::move(l)).ok());
    EXPECT_EQ(count_ops(c.g, "FusedConv"), 1);
    EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 0);
  }
}

// Strided 1x1 convolutions (resnet's downsample shortcuts) become Slice(steps s_h, s_w on axes 1, 2) + FusedMatMul
// and compute what the convolution computes on the reference backend: odd and even spatial sizes (the output has
// floor((H-1)/s)+1 rows), unequal strides, with and without bias and residual, activations inside the GEMM's
// epilogue and after it.
TEST(Conv1x1AsGemm, StridedOneByOneBecomeSliceAndGemmWithTheSameResult) {
  struct Case { int64_t sh, sw, h, w; };
  for (Case cs : {Case{2, 2, 56 / 4, 56 / 4}, Case{2, 2, 7, 9}, Case{2, 1, 6, 5}, Case{1, 2, 5, 8}, Case{3, 3, 7, 8},
                  Case{3, 3, 9, 9}, Case{2, 2, 1, 1}, Case{4, 2, 3, 5}}) {
    for (const char* act : {"none", "relu", "silu", "clip"}) {
      for (auto [bias, residual] : {std::pair{true, false}, {true, true}, {false, true}, {false, false}}) {
        SCOPED_TRACE("strides " + std::to_string(cs.sh) + "," + std::to_string(cs.sw) + " " + std::to_string(cs.h) +
                     "x" + std::to_string(cs.w) + " " + act + (bias ? " bias" : "") + (residual ? " residual" : ""));
        OneConv c(1, cs.sh, cs.sw, act, residual, cs.h, cs.w, bias);
        ASSERT_TRUE(run_passes(c.g, {}).ok());
        auto want = run_reference(c.g, c.inputs);
        passes::PassList l;
        l.push_back(passes::make_conv1x1_as_gemm());
        ASSERT_TRUE(run_passes(c.g, std::move(l)).ok());
        EXPECT_EQ(count_ops(c.g, "FusedConv"), 0) << ir::print(c.g);
        EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 1) << ir::print(c.g);
        ASSERT_EQ(count_ops(c.g, "Slice"), 1) << ir::print(c.g);
        const ir::Node* s = find_op(c.g, "Slice");
        const ir::Node* mm = find_op(c.g, "FusedMatMul");
        EXPECT_EQ(mm->inputs[0], s->outputs[0]);
        EXPECT_EQ(s->inputs[0], c.g.inputs()[0]);
        // The Slice's declared shape is what the reference computes for it (the GEMM's row count depends on it).
        const int64_t oh = (cs.h - 1) / cs.sh + 1, ow = (cs.w - 1) / cs.sw + 1;
        EXPECT_EQ(s->outputs[0]->shape, ops::shape_from_dims({2, oh, ow, 8}));
        EXPECT_EQ(c.g.outputs()[0]->name, "y");
        const std::string a = act;
        const bool in_gemm = a == "none" || a == "relu";
        EXPECT_EQ(c.g.nodes().size(), (in_gemm ? 2u : 3u + (a == "silu"))) << ir::print(c.g);
        auto got = run_reference(c.g, c.inputs);
        ASSERT_EQ(got.size(), 1u);
        EXPECT_EQ(got[0].shape(), want[0].shape());
        expect_close(got[0], want[0], 1e-5, 1e-5);
      }
    }
  }
}

// A strided 1x1 convolution whose backend has no Slice kernel stays a convolution (the stride-1 ones still go).
TEST(Conv1x1AsGemm, StridedStaysWithoutASliceKernel) {
  OneConv c(1, 2, 2, "relu", false, 6, 6, true);
  passes::PassOptions o;
  o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "Slice"; };
  passes::PassList l;
  l.push_back(passes::make_conv1x1_as_gemm());
  ASSERT_TRUE(run_passes(c.g, std::move(l), o).ok());
  EXPECT_EQ(count_ops(c.g, "FusedConv"), 1);
  EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 0);
}

// A resnet downsampling block (odd and even sizes) through the whole CUDA pipeline in FP16: the 1x1 stride-2
// shortcut becomes a Slice of the NHWC stem output feeding a FusedMatMul, no strided 1x1 convolution is left, and
// the graph computes what the CPU pipeline's graph computes on the reference kernels.
TEST(Conv1x1AsGemm, DownsampleBlockThroughTheCudaPassesFp16) {
  for (int64_t hw : {12, 13}) {
    SCOPED_TRACE("hw " + std::to_string(hw));
    auto [cpu, cuda] = cpu_and_cuda_graphs(downsample_block_cnn(2, hw, 16, 32));
    ASSERT_TRUE(cpu && cuda);
    EXPECT_EQ(count_ops(*cpu, "Conv"), 3);
    ASSERT_EQ(count_ops(*cuda, "Slice"), 1) << ir::print(*cuda);
    const ir::Node* s = find_op(*cuda, "Slice");
    ASSERT_EQ(s->outputs[0]->users.size(), 1u);
    const ir::Node* mm = s->outputs[0]->users[0];
    EXPECT_EQ(mm->op_type, "FusedMatMul");
    EXPECT_EQ(s->inputs[0]->dtype, DataType::kHALF);
    const int64_t ho = (hw - 1) / 2 + 1;
    EXPECT_EQ(s->outputs[0]->shape, ops::shape_from_dims({2, ho, ho, 16}));
    for (auto& n : cuda->nodes()) {
      if (n->op_type != "FusedConv") continue;
      const auto& ws = n->inputs[1]->shape;
      EXPECT_FALSE(ws.size() == 4 && ws[1] == ops::Dim(1) && ws[2] == ops::Dim(1)) << n->name << " stayed a 1x1 conv";
    }
    expect_same_on_reference(*cpu, *cuda, random_f32({2, 8, hw, hw}, 92), 3e-2);
  }
}

}  // namespace
