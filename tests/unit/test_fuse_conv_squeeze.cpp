// Unit tests for fuse_conv_squeeze: the ReduceMean over H and W of an NHWC depthwise FusedConv's output becomes the
// conv's second output M, with the same values on the reference kernels (FusedConv's M, src/ops/fused_conv.cpp,
// against ReduceMean); the pass declines other means, other convolutions, and is off with conv_squeeze false. Also
// an efficientnet-style block through the whole CUDA FP16 pipeline: its squeeze ends up inside the depthwise conv.
#include <gtest/gtest.h>

#include "cnn_onnx_model.h"

using namespace kiln;
using namespace kiln::test;

namespace {

struct SqueezeSpec {
  int64_t n = 2, h = 9, w = 7, c = 16;
  int64_t group = 16;              // c: depthwise
  std::vector<int64_t> axes = {1, 2};
  int64_t keepdims = 1;
  bool axes_input = false;         // ReduceMean-18: axes as a constant input
  std::string layout = "NHWC";
  DataType dt = DataType::kFLOAT;
};

// x [N, H, W, C] -> FusedConv (3x3, SiLU, NHWC) -> y (an output) and ReduceMean(y) -> m (an output).
struct SqueezeGraph {
  ir::Graph g;
  std::vector<Tensor> inputs;
  explicit SqueezeGraph(const SqueezeSpec& p) {
    const bool nhwc = p.layout == "NHWC";
    std::vector<int64_t> xs = nhwc ? std::vector<int64_t>{p.n, p.h, p.w, p.c} : std::vector<int64_t>{p.n, p.c, p.h, p.w};
    ir::Value* x = graph_input(g, "x", xs, p.dt);
    inputs.push_back(random_f32(xs, 1).cast(p.dt));
    const int64_t cg = p.c / p.group;
    std::vector<int64_t> ws = nhwc ? std::vector<int64_t>{p.c, 3, 3, cg} : std::vector<int64_t>{p.c, cg, 3, 3};
    Attributes a;
    a.set("group", p.group);
    a.set("pads", std::vector<int64_t>{1, 1, 1, 1});
    a.set("layout", p.layout);
    a.set("activation", std::string("silu"));
    ir::Node* conv = g.add_node("FusedConv", "dw", {x, g.add_constant("w", random_f32(ws, 2).cast(p.dt)),
                                                    g.add_constant("b", random_f32({p.c}, 3).cast(p.dt))},
                                {"y"}, a, 1, "kiln");
    Attributes r;
    r.set("keepdims", p.keepdims);
    std::vector<ir::Value*> rin = {conv->outputs[0]};
    if (p.axes_input) {
      rin.push_back(g.add_constant("axes", Tensor::from_vector<int64_t>({static_cast<int64_t>(p.axes.size())}, p.axes)));
    } else {
      r.set("axes", p.axes);
    }
    ir::Node* mean = g.add_node("ReduceMean", "squeeze", rin, {"m"}, r, p.axes_input ? 18 : 13);
    g.outputs().push_back(conv->outputs[0]);
    g.outputs().push_back(mean->outputs[0]);
  }
};

Status run_squeeze_pass(ir::Graph& g, bool on = true) {
  passes::PassOptions o;
  o.conv_squeeze = on;
  return run_passes(g, list_of(passes::make_fuse_conv_squeeze()), o);
}

// Runs the pass on the spec's graph; expects it to fuse or not, and the same outputs before and after.
void squeeze_case(const SqueezeSpec& p, bool fused, bool on = true) {
  SqueezeGraph sg(p);
  ASSERT_TRUE(run_passes(sg.g, {}).ok());
  auto want = run_reference(sg.g, sg.inputs);
  ASSERT_TRUE(run_squeeze_pass(sg.g, on).ok());
  EXPECT_EQ(count_ops(sg.g, "ReduceMean"), fused ? 0 : 1) << ir::print(sg.g);
  const ir::Node* conv = find_op(sg.g, "FusedConv");
  ASSERT_NE(conv, nullptr);
  ASSERT_EQ(conv->outputs.size(), fused ? 2u : 1u) << ir::print(sg.g);
  if (fused) {
    EXPECT_EQ(conv->outputs[1]->name, "m");
    EXPECT_EQ(conv->outputs[1]->producer, conv);
    const Attribute* from = conv->attrs.find(ops::kFusedFromAttr);
    ASSERT_NE(from, nullptr);
    EXPECT_NE(std::find(from->strings().begin(), from->strings().end(), "squeeze"), from->strings().end());
  }
  auto got = run_reference(sg.g, sg.inputs);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_EQ(want.size(), 2u);
  const double tol = p.dt == DataType::kFLOAT ? 1e-6 : 1e-3;
  expect_close(got[0], want[0], 0, 0);  // Y itself is untouched
  EXPECT_EQ(got[1].shape(), want[1].shape());
  expect_close(got[1], want[1], tol, tol);
}

TEST(FuseConvSqueeze, DepthwiseMeanBecomesTheConvsSecondOutput) {
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF})
    for (bool axes_input : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (axes_input ? " axes input" : " axes attribute"));
      SqueezeSpec p;
      p.dt = dt;
      p.axes_input = axes_input;
      squeeze_case(p, true);
    }
  SqueezeSpec neg;
  neg.axes = {-3, -2};  // the same axes, counted from the end
  squeeze_case(neg, true);
}

TEST(FuseConvSqueeze, DeclinesOtherMeansAndConvolutions) {
  struct Case {
    const char* what;
    SqueezeSpec p;
  };
  std::vector<Case> cases;
  Case k{"mean over H only", {}};
  k.p.axes = {1};
  cases.push_back(k);
  k = Case{"mean over the channels too", {}};
  k.p.axes = {1, 2, 3};
  cases.push_back(k);
  k = Case{"keepdims 0", {}};
  k.p.keepdims = 0;
  cases.push_back(k);
  k = Case{"grouped, not depthwise", {}};
  k.p.group = 4;
  cases.push_back(k);
  k = Case{"NCHW", {}};
  k.p.layout = "NCHW";
  k.p.axes = {2, 3};
  cases.push_back(k);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    squeeze_case(c.p, false);
  }
  SCOPED_TRACE("switched off");
  squeeze_case(SqueezeSpec{}, false, false);
}

// FusedConv's M on the reference kernels, checked by hand: the mean over H and W of the stored Y, for NHWC and
// NCHW, rounded once to the type (float16 here).
TEST(FuseConvSqueeze, ReferenceMeanOutputOfFusedConv) {
  for (const char* layout : {"NHWC", "NCHW"}) {
    SCOPED_TRACE(layout);
    const bool nhwc = std::string(layout) == "NHWC";
    SqueezeSpec p;
    p.layout = layout;
    p.dt = DataType::kHALF;
    SqueezeGraph sg(p);
    // Take the mean as the conv's own output (for NCHW too: the op computes it in any layout).
    ir::Node* conv = nullptr;
    for (auto& n : sg.g.nodes())
      if (n->op_type == "FusedConv") conv = n.get();
    ir::Node* mean = nullptr;
    for (auto& n : sg.g.nodes())
      if (n->op_type == "ReduceMean") mean = n.get();
    ir::Value* m = mean->outputs[0];
    sg.g.remove_node(mean);
    conv->outputs.push_back(m);
    m->producer = conv;
    m->rank_known = false;
    ASSERT_TRUE(run_passes(sg.g, {}).ok());
    const std::vector<int64_t> ms = nhwc ? std::vector<int64_t>{p.n, 1, 1, p.c} : std::vector<int64_t>{p.n, p.c, 1, 1};
    EXPECT_EQ(m->shape, ops::shape_from_dims(ms));
    EXPECT_EQ(m->dtype, DataType::kHALF);
    auto out = run_reference(sg.g, sg.inputs);
    ASSERT_EQ(out.size(), 2u);
    Tensor y = out[0].cast(DataType::kDOUBLE);
    Tensor want(DataType::kDOUBLE, ms);
    const int64_t hw = p.h * p.w;
    for (int64_t b = 0; b < p.n; ++b)
      for (int64_t ch = 0; ch < p.c; ++ch) {
        double s = 0;
        for (int64_t i = 0; i < hw; ++i)
          s += y.data<double>()[nhwc ? (b * hw + i) * p.c + ch : (b * p.c + ch) * hw + i];
        want.data<double>()[b * p.c + ch] = s / hw;
      }
    expect_close(out[1], want.cast(DataType::kHALF), 0, 0);
  }
}

// An efficientnet block (expand 1x1, depthwise 3x3 + SiLU, squeeze-excitation, project 1x1) through the CUDA FP16
// pipeline: the squeeze's mean is the depthwise conv's second output, no ReduceMean is left, and the optimized
// graph computes what the CPU pipeline's does.
TEST(FuseConvSqueeze, EfficientnetBlockInTheCudaPipeline) {
  for (int64_t hw : {28, 7}) {
    SCOPED_TRACE("hw " + std::to_string(hw));
    passes::PassOptions on;
    on.conv_squeeze = true;
    auto [cpu, cuda] = cpu_and_cuda_graphs(se_block_cnn(2, hw, 144, true), on);
    ASSERT_TRUE(cpu && cuda);
    EXPECT_EQ(count_ops(*cuda, "ReduceMean"), 0) << ir::print(*cuda);
    int with_mean = 0;
    for (auto& n : cuda->nodes())
      if (n->op_type == "FusedConv" && n->outputs.size() == 2) {
        ++with_mean;
        EXPECT_EQ(n->outputs[1]->shape, ops::shape_from_dims({2, 1, 1, 144}));
        EXPECT_EQ(n->outputs[1]->dtype, DataType::kHALF);
      }
    EXPECT_EQ(with_mean, 1) << ir::print(*cuda);
    expect_same_on_reference(*cpu, *cuda, random_f32({2, 8, hw, hw}, 92), 3e-2);
  }
  // Off by default (opt-in: measured slower on efficientnet_b0, bench/NOTES.md): the squeeze stays a ReduceMean.
  auto [cpu, cuda] = cpu_and_cuda_graphs(se_block_cnn(2, 28, 144, true));
  ASSERT_TRUE(cpu && cuda);
  EXPECT_EQ(count_ops(*cuda, "ReduceMean"), 1) << ir::print(*cuda);
}

}  // namespace
