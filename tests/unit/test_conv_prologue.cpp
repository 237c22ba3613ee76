// fuse_conv_prologue: which activations fold into a depthwise NHWC FusedConv (graph before/after), that the
// fused node computes what the activation + conv computed (CPU reference, padding zero after the activation),
// and that the CUDA pipeline folds mobilenet's ReLU6 into the depthwise conv after the expand GEMM. Also
// layout_nhwc taking depthwise convolutions with asymmetric pads (the depthwise kernel's, not cuDNN's).
#include <gtest/gtest.h>

#include "cnn_onnx_model.h"
#include "cnn_test_util.h"
#include "ops/layout_util.h"
#include "passes/pass.h"

using namespace kiln;
using namespace kiln::test;

namespace {

ir::Value* scalar(ir::Graph& g, const std::string& name, float v) {
  return g.add_constant(name, Tensor::from_vector<float>({}, {v}));
}

// x [2, 9, 11, C] -> activation -> FusedConv NHWC (group = groups, 3x3, pads) -> y; returns the conv.
struct Net {
  ir::Graph g;
  ir::Value* x = nullptr;
  ir::Node* conv = nullptr;
};

enum class Act { kRelu6, kClipHigh, kRelu, kLeaky, kSilu, kHardSwish, kSigmoid, kNone };

void build(Net& n, Act act, int64_t c = 16, int64_t groups = 16, const std::string& layout = "NHWC",
           std::vector<int64_t> pads = {1, 0, 1, 2}) {
  ir::Graph& g = n.g;
  n.x = graph_input(g, "x", layout == "NHWC" ? std::vector<int64_t>{2, 9, 11, c} : std::vector<int64_t>{2, c, 9, 11});
  ir::Value* a = n.x;
  switch (act) {
    case Act::kRelu6:
      a = op1(g, "Clip", {a, scalar(g, "lo", 0.f), scalar(g, "hi", 6.f)});
      break;
    // act(0) = 0.25: padding taken before the activation would show.
    case Act::kClipHigh:
      a = op1(g, "Clip", {a, scalar(g, "lo", 0.25f), scalar(g, "hi", 0.75f)});
      break;
    case Act::kRelu:
      a = op1(g, "Relu", {a});
      break;
    case Act::kLeaky: {
      Attributes lr;
      lr.set("alpha", 0.125f);
      a = op1(g, "LeakyRelu", {a}, lr);
      break;
    }
    case Act::kSilu:
      a = op1(g, "Mul", {a, op1(g, "Sigmoid", {a})});
      break;
    case Act::kHardSwish: {
      Attributes hs;
      hs.set("alpha", 1.f / 6.f);
      hs.set("beta", 0.5f);
      a = op1(g, "Mul", {op1(g, "HardSigmoid", {a}, hs), a});
      break;
    }
    case Act::kSigmoid:
      a = op1(g, "Sigmoid", {a});
      break;
    case Act::kNone:
      break;
  }
  Attributes at;
  at.set("pads", pads);
  at.set("strides", std::vector<int64_t>{1, 1});
  at.set("group", groups);
  at.set("layout", layout);
  at.set("activation", std::string("relu"));
  const std::vector<int64_t> wshape =
      layout == "NHWC" ? std::vector<int64_t>{c, 3, 3, c / groups} : std::vector<int64_t>{c, c / groups, 3, 3};
  ir::Value* w = g.add_constant("w", random_f32(wshape, 7, -0.5f, 0.5f));
  ir::Value* b = g.add_constant("b", random_f32({c}, 8, -0.2f, 0.2f));
  ir::Value* y = op1(g, "FusedConv", {a, w, b}, at, "kiln");
  n.conv = y->producer;
  g.outputs().push_back(y);
}

passes::PassList prologue() { return list_of(passes::make_fuse_conv_prologue()); }

std::string pre_act(const ir::Node* n) { return n->attrs.get_string("pre_activation", "none").value(); }

struct Folds {
  Act act;
  const char* name;
  int removed;  // nodes the fusion removes
};

TEST(FuseConvPrologue, FoldsEachActivationFormIntoTheDepthwiseConv) {
  for (Folds f : {Folds{Act::kRelu6, "clip", 1}, Folds{Act::kClipHigh, "clip", 1}, Folds{Act::kRelu, "relu", 1},
                  Folds{Act::kLeaky, "leaky_relu", 1}}) {
    SCOPED_TRACE(f.name);
    Net n;
    build(n, f.act);
    ASSERT_TRUE(run_passes(n.g, {}).ok());
    auto before = n.g.clone();
    const size_t nodes = n.g.nodes().size();
    Status st = run_passes(n.g, prologue());
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(n.g.nodes().size(), nodes - f.removed) << ir::print(n.g);
    const ir::Node* conv = find_op(n.g, "FusedConv");
    ASSERT_NE(conv, nullptr);
    EXPECT_EQ(pre_act(conv), f.name);
    EXPECT_EQ(conv->inputs[0], n.g.inputs()[0]) << "the conv reads the activation's input";
    EXPECT_EQ(conv->attrs.get_string("activation", "").value(), "relu") << "the epilogue stays";
    if (f.act == Act::kLeaky) { EXPECT_EQ(conv->attrs.get_float("pre_alpha", 0.f).value(), 0.125f); }
    if (f.act == Act::kRelu6) {
      EXPECT_EQ(conv->attrs.get_float("pre_clip_min", -1.f).value(), 0.f);
      EXPECT_EQ(conv->attrs.get_float("pre_clip_max", -1.f).value(), 6.f);
    }
    const Attribute* from = conv->attrs.find(ops::kFusedFromAttr);
    ASSERT_NE(from, nullptr);
    EXPECT_EQ(from->strings().size(), static_cast<size_t>(f.removed + 1));
    Tensor x = random_f32({2, 9, 11, 16}, 3, -3.f, 3.f);
    auto want = run_reference(*before, {x});
    auto got = run_reference(n.g, {x});
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    // The unfused graph rounds the activation to float once more than the prologue does.
    expect_close(got[0], want[0], 1e-5, 1e-5);
  }
}

TEST(FuseConvPrologue, LeavesWhatTheDepthwiseKernelWouldNotRun) {
  struct Case {
    const char* what;
    int64_t c, groups;
    std::string layout;
  };
  for (const Case& k : {Case{"dense conv", 16, 1, "NHWC"}, Case{"grouped, 2 channels per group", 16, 8, "NHWC"},
                        Case{"NCHW", 16, 16, "NCHW"}}) {
    SCOPED_TRACE(k.what);
    Net n;
    build(n, Act::kRelu6, k.c, k.groups, k.layout, {1, 1, 1, 1});
    ASSERT_TRUE(run_passes(n.g, prologue()).ok());
    EXPECT_EQ(count_ops(n.g, "Clip"), 1);
    EXPECT_EQ(pre_act(find_op(n.g, "FusedConv")), "none");
  }
  // An exp per tap would cost the kernel more than the separate pass it saves.
  for (Act a : {Act::kSilu, Act::kHardSwish, Act::kSigmoid}) {
    SCOPED_TRACE("expensive activation " + std::to_string(static_cast<int>(a)));
    Net n;
    build(n, a);
    const size_t nodes = n.g.nodes().size();
    ASSERT_TRUE(run_passes(n.g, prologue()).ok());
    EXPECT_EQ(n.g.nodes().size(), nodes);
    EXPECT_EQ(pre_act(find_op(n.g, "FusedConv")), "none");
  }
  {
    SCOPED_TRACE("the activation has another reader");
    Net n;
    build(n, Act::kRelu6);
    n.g.outputs().push_back(n.conv->inputs[0]);
    ASSERT_TRUE(run_passes(n.g, prologue()).ok());
    EXPECT_EQ(count_ops(n.g, "Clip"), 1);
    EXPECT_EQ(pre_act(find_op(n.g, "FusedConv")), "none");
  }
  {
    SCOPED_TRACE("Clip bounds that are not constants");
    Net n;
    build(n, Act::kNone);
    ir::Value* hi = graph_input(n.g, "hi", {});
    ir::Value* a = op1(n.g, "Clip", {n.x, scalar(n.g, "lo", 0.f), hi});
    n.g.set_node_input(n.conv, 0, a);
    ASSERT_TRUE(run_passes(n.g, prologue()).ok());
    EXPECT_EQ(count_ops(n.g, "Clip"), 1);
    EXPECT_EQ(pre_act(find_op(n.g, "FusedConv")), "none");
  }
}

// The reference applies the prologue to real pixels only: with act(0) != 0, pad(act(x)) differs from act(pad(x))
// on the border, and the fused node must give the former (the unfused graph's result).
TEST(FuseConvPrologue, PaddingIsZeroAfterTheActivation) {
  Net n;
  build(n, Act::kClipHigh, 16, 16, "NHWC", {2, 1, 0, 2});
  ASSERT_TRUE(run_passes(n.g, {}).ok());
  auto before = n.g.clone();
  ASSERT_TRUE(run_passes(n.g, prologue()).ok());
  ASSERT_EQ(count_ops(n.g, "Clip"), 0);
  Tensor x = random_f32({2, 9, 11, 16}, 5, -1.f, 1.f);
  auto want = run_reference(*before, {x});
  auto got = run_reference(n.g, {x});
  ASSERT_EQ(got.size(), 1u);
  expect_close(got[0], want[0], 1e-6, 1e-6);
}

// small_cnn through the CUDA passes in FP16: the expand GEMM's ReLU6 (emitted as a Clip by conv1x1_as_gemm) is
// folded into the depthwise conv, which the pipeline's result still matches against the CPU pipeline's.
TEST(FuseConvPrologue, CudaPipelineFoldsTheExpandRelu6) {
  int convs = 0;
  onnx::ModelProto m = small_cnn(&convs);
  auto [cpu, cuda] = cpu_and_cuda_graphs(m);
  ASSERT_TRUE(cpu && cuda);
  int folded = 0;
  for (auto& n : cuda->nodes())
    if (n->op_type == "FusedConv" && pre_act(n.get()) != "none") {
      ++folded;
      EXPECT_EQ(pre_act(n.get()), "clip");
      EXPECT_EQ(n->attrs.get_int("group", 1).value(), 32);
    }
  EXPECT_EQ(folded, 1) << ir::print(*cuda);
  expect_same_on_reference(*cpu, *cuda, random_f32({4, 3, 32, 32}, 90), 3e-2);
}

// TF-style "SAME" stride-2 pads (the extra one at the end): a depthwise conv goes NHWC, a dense one stays NCHW
// (cuDNN's NHWC path pads symmetrically only).
TEST(LayoutNhwc, DepthwiseConvsWithAsymmetricPadsGoNhwc) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 16, 10, 10});
  Attributes a;
  a.set("pads", std::vector<int64_t>{0, 0, 1, 1});
  a.set("strides", std::vector<int64_t>{2, 2});
  a.set("group", int64_t{16});
  ir::Value* d = op1(
      g, "Conv", {x, g.add_constant("wd", random_f32({16, 1, 3, 3}, 1)), g.add_constant("bd", random_f32({16}, 2))}, a);
  a.set("group", int64_t{1});
  ir::Value* y =
      op1(g, "Conv", {op1(g, "Relu", {d}), g.add_constant("w", random_f32({8, 16, 3, 3}, 3, -0.2f, 0.2f))}, a);
  g.outputs().push_back(y);
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.reduced_precision = DataType::kHALF;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  ASSERT_TRUE(run_passes(g,
                         list_of(passes::make_fuse_conv_epilogue(), passes::make_precision_lowering(),
                                 passes::make_dead_code_elimination()),
                         o)
                  .ok());
  auto before = g.clone();
  Status st = run_passes(g, list_of(passes::make_layout_nhwc()), o);
  ASSERT_TRUE(st.ok()) << st.message();
  int nhwc = 0, nchw = 0;
  for (auto& n : g.nodes())
    if (n->op_type == "FusedConv" || n->op_type == "Conv") {
      const bool is_nhwc = n->attrs.get_string("layout", "NCHW").value() == "NHWC";
      EXPECT_EQ(is_nhwc, n->attrs.get_int("group", 1).value() == 16) << n->name;
      (is_nhwc ? nhwc : nchw)++;
    }
  EXPECT_EQ(nhwc, 1) << ir::print(g);
  EXPECT_EQ(nchw, 1) << ir::print(g);
  Tensor in = random_f32({2, 16, 10, 10}, 4);
  auto want = run_reference(*before, {in});
  auto got = run_reference(g, {in});
  ASSERT_EQ(got.size(), 1u);
  expect_close(got[0], want[0], 2e-3, 2e-3);
}

}  // namespace
