// layout_nhwc: on FP16 CNN graphs lowered like the CUDA pipeline does, how many layout Transposes are left, and
// that the NHWC graph computes what the graph before the pass computes (reference kernels).
#include <gtest/gtest.h>

#include "cnn_test_util.h"
#include "ops/layout_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

Attributes conv_attrs(int64_t pad, int64_t group = 1, int64_t stride = 1) {
  Attributes a;
  a.set("pads", std::vector<int64_t>{pad, pad, pad, pad});
  a.set("group", group);
  a.set("strides", std::vector<int64_t>{stride, stride});
  return a;
}

ir::Value* conv(ir::Graph& g, ir::Value* x, int64_t cin, int64_t cout, int64_t k, uint32_t seed, int64_t group = 1,
                int64_t stride = 1) {
  float s = 1.f / std::sqrt(static_cast<float>(cin / group * k * k));
  return op1(g, "Conv",
             {x, g.add_constant("w", random_f32({cout, cin / group, k, k}, seed, -s, s)),
              g.add_constant("b", random_f32({cout}, seed + 1, -0.1f, 0.1f))},
             conv_attrs(k / 2, group, stride));
}

ir::Value* batchnorm(ir::Graph& g, ir::Value* x, int64_t c, uint32_t seed) {
  return op1(
      g, "BatchNormalization",
      {x, g.add_constant("s", random_f32({c}, seed, 0.5f, 1.5f)), g.add_constant("bb", random_f32({c}, seed + 1)),
       g.add_constant("m", random_f32({c}, seed + 2, -0.1f, 0.1f)),
       g.add_constant("v", random_f32({c}, seed + 3, 0.5f, 2.f))});
}

int layout_transposes(const ir::Graph& g) { return count_ops(g, "Transpose"); }

// The CUDA pipeline's CNN part up to lowering (FP16, every kernel available), then layout_nhwc; `before` gets a
// copy of the graph as it was just before layout_nhwc.
void lower_and_layout(ir::Graph& g, std::unique_ptr<ir::Graph>* before) {
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.reduced_precision = DataType::kHALF;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  passes::PassList l;
  l.push_back(passes::make_fold_batchnorm());
  l.push_back(passes::make_fuse_conv_epilogue());
  l.push_back(passes::make_precision_lowering());
  l.push_back(passes::make_dead_code_elimination());
  ASSERT_TRUE(run_passes(g, std::move(l), o).ok());
  *before = g.clone();
  passes::PassList l2;
  l2.push_back(passes::make_layout_nhwc());
  Status st = run_passes(g, std::move(l2), o);
  ASSERT_TRUE(st.ok()) << st.message();
}

void expect_same(const ir::Graph& before, const ir::Graph& after, const std::vector<Tensor>& in) {
  auto a = run_reference(before, in);
  auto b = run_reference(after, in);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  // Same FP16 roundings in both graphs except the pooled means' order of summation.
  for (size_t i = 0; i < a.size(); ++i) expect_close(b[i], a[i], 2e-3, 2e-3);
}

TEST(LayoutNhwc, ResnetBlockRunsNhwcBetweenOneTransposeInAndOut) {
  // conv-bn-relu-conv-bn-add-relu-maxpool-gap-flatten-gemm
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 8, 12, 12});
  ir::Value* a = op1(g, "Relu", {batchnorm(g, conv(g, x, 8, 16, 3, 1), 16, 3)});
  ir::Value* b = batchnorm(g, conv(g, a, 16, 16, 3, 7), 16, 9);
  ir::Value* r = op1(g, "Relu", {op1(g, "Add", {b, a})});
  Attributes mp;
  mp.set("kernel_shape", std::vector<int64_t>{3, 3});
  mp.set("strides", std::vector<int64_t>{2, 2});
  mp.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  ir::Value* p = op1(g, "MaxPool", {r}, mp);
  ir::Value* f = op1(g, "Flatten", {op1(g, "GlobalAveragePool", {p})});
  Attributes gm;
  gm.set("transB", int64_t{1});
  ir::Value* y = op1(
      g, "Gemm", {f, g.add_constant("fc", random_f32({10, 16}, 13)), g.add_constant("fb", random_f32({10}, 14))}, gm);
  g.outputs().push_back(y);
  std::unique_ptr<ir::Graph> before;
  lower_and_layout(g, &before);
  if (HasFatalFailure()) return;
  EXPECT_EQ(layout_transposes(*before), 0);
  EXPECT_EQ(count_ops(g, "Conv"), 0);
  int nhwc = 0;
  for (auto& n : g.nodes())
    if (n->op_type == "FusedConv") nhwc += n->attrs.get_string("layout", "").value() == "NHWC";
  EXPECT_EQ(nhwc, 2);
  // One Transpose into NHWC at the input; the flattened [N, C] leaves without one.
  EXPECT_EQ(layout_transposes(g), 1) << ir::print(g);
  expect_same(*before, g, {random_f32({2, 8, 12, 12}, 15)});
}

TEST(LayoutNhwc, MobilenetAndEfficientnetStyleBlocks) {
  // Inverted residual with ReLU6 and depthwise conv, then a squeeze-excite block with SiLU and a channel concat.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 8, 10, 10});
  auto relu6 = [&](ir::Value* v) {
    return op1(g, "Clip",
               {v, g.add_constant("lo", Tensor::from_vector<float>({}, {0.f})),
                g.add_constant("hi", Tensor::from_vector<float>({}, {6.f}))});
  };
  auto silu = [&](ir::Value* v) { return op1(g, "Mul", {v, op1(g, "Sigmoid", {v})}); };
  ir::Value* e = relu6(batchnorm(g, conv(g, x, 8, 24, 1, 20), 24, 21));
  ir::Value* d = relu6(batchnorm(g, conv(g, e, 24, 24, 3, 25, /*group=*/24), 24, 26));
  ir::Value* pr = batchnorm(g, conv(g, d, 24, 8, 1, 30), 8, 31);
  ir::Value* blk = op1(g, "Add", {x, pr});
  // Squeeze-excite: the gate multiplies the feature map per channel.
  ir::Value* h = silu(conv(g, blk, 8, 16, 3, 35));
  ir::Value* s = silu(conv(g, op1(g, "GlobalAveragePool", {h}), 16, 4, 1, 40));
  s = op1(g, "Sigmoid", {conv(g, s, 4, 16, 1, 45)});
  ir::Value* se = op1(g, "Mul", {h, s});
  Attributes cat;
  cat.set("axis", int64_t{1});
  ir::Value* c = op1(g, "Concat", {se, blk}, cat);
  ir::Value* c2 = op1(g, "Add", {c, g.add_constant("shift", random_f32({1, 24, 1, 1}, 50))});
  g.outputs().push_back(op1(g, "Flatten", {op1(g, "GlobalAveragePool", {conv(g, c2, 24, 12, 1, 55)})}));
  std::unique_ptr<ir::Graph> before;
  lower_and_layout(g, &before);
  if (HasFatalFailure()) return;
  EXPECT_EQ(count_ops(g, "Conv"), 0);
  EXPECT_EQ(layout_transposes(g), 1) << ir::print(g);
  expect_same(*before, g, {random_f32({1, 8, 10, 10}, 60)});
}

TEST(FuseInputLayout, StemCastTransposeAndPadBecomeOneToNhwc) {
  // A 3-channel stem: lowering casts the float32 input, layout_nhwc transposes it and pads it to 8 channels.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 3, 9, 11});
  g.outputs().push_back(op1(g, "Relu", {conv(g, x, 3, 16, 3, 80, 1, 2)}));
  std::unique_ptr<ir::Graph> before;
  lower_and_layout(g, &before);
  if (HasFatalFailure()) return;
  ASSERT_EQ(count_ops(g, "Pad"), 1) << ir::print(g);
  ASSERT_EQ(count_ops(g, "Transpose"), 2) << ir::print(g);  // in, and out to NCHW
  auto after_layout = g.clone();
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  passes::PassList l;
  l.push_back(passes::make_fuse_input_layout());
  ASSERT_TRUE(run_passes(g, std::move(l), o).ok());
  EXPECT_EQ(count_ops(g, "ToNhwc"), 1) << ir::print(g);
  EXPECT_EQ(count_ops(g, "Pad"), 0);
  EXPECT_EQ(count_ops(g, "Transpose"), 1);  // the output's, back to NCHW: 16 channels, a plain transpose
  for (auto& n : g.nodes())
    if (n->op_type == "ToNhwc") {
      EXPECT_EQ(n->inputs[0]->dtype, DataType::kFLOAT);  // the Cast went in
      EXPECT_EQ(n->outputs[0]->dtype, DataType::kHALF);
      EXPECT_EQ(n->attrs.get_int("channels").value(), 8);
    }
  // Bit-identical to the three layers it replaced (same roundings), and close to the float32 graph.
  Tensor in = random_f32({2, 3, 9, 11}, 81);
  auto a = run_reference(*after_layout, {in});
  auto b = run_reference(g, {in});
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  expect_close(b[0], a[0], 0, 0);
  expect_same(*before, g, {in});
}

TEST(FuseInputLayout, LeavesWideTransposesAlone) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 64, 4, 4});
  Attributes p;
  p.set("perm", std::vector<int64_t>{0, 2, 3, 1});
  g.outputs().push_back(op1(g, "Relu", {op1(g, "Transpose", {x}, p)}));
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  passes::PassList l;
  l.push_back(passes::make_shape_inference());
  l.push_back(passes::make_fuse_input_layout());
  ASSERT_TRUE(run_passes(g, std::move(l), o).ok());
  EXPECT_EQ(count_ops(g, "ToNhwc"), 0);  // 256 bytes per pixel: the tiled transpose's job
  EXPECT_EQ(count_ops(g, "Transpose"), 1);
}

TEST(LayoutNhwc, LeavesFloat32AndTheCpuPipelineAlone) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 4, 6, 6});
  g.outputs().push_back(op1(g, "Relu", {conv(g, x, 4, 4, 3, 70)}));
  passes::PassOptions o;
  o.backend = Backend::kCUDA;  // float32: no reduced precision, so convolutions stay NCHW
  passes::PassList l;
  l.push_back(passes::make_layout_nhwc());
  ASSERT_TRUE(run_passes(g, std::move(l), o).ok());
  EXPECT_EQ(count_ops(g, "Transpose"), 0);
  EXPECT_EQ(count_ops(g, "Conv"), 1);
}

}  // namespace

namespace {

TEST(NhwcPool, MatchesOnnxPoolingPermuted) {
  Tensor x = random_f32({2, 5, 9, 7}, 80);
  Tensor xh = ops::permute(x, ops::perm_to_nhwc(4)).value();
  for (const char* op : {"MaxPool", "AveragePool"}) {
    SCOPED_TRACE(op);
    Attributes a;
    a.set("kernel_shape", std::vector<int64_t>{3, 2});
    a.set("strides", std::vector<int64_t>{2, 1});
    a.set("pads", std::vector<int64_t>{1, 0, 1, 1});
    if (std::string(op) == "AveragePool") a.set("count_include_pad", int64_t{1});
    auto ref = ops::run_reference(op, "", a, 17, {&x});
    ASSERT_TRUE(ref.ok()) << ref.status().message();
    a.set("layout", "NHWC");
    auto got = ops::run_reference(op, "kiln", a, 1, {&xh});
    ASSERT_TRUE(got.ok()) << got.status().message();
    expect_close((*got)[0], ops::permute((*ref)[0], ops::perm_to_nhwc(4)).value(), 0);
  }
}

}  // namespace

#include "cnn_onnx_model.h"

namespace {

// The whole CUDA pass list (as the builder runs it for --fp16, every kernel assumed present) on an imported CNN:
// every convolution ends up NHWC FusedConv with one Transpose at the input, and the result computes what the
// CPU pipeline's graph computes, on the reference kernels.
TEST(CnnPipeline, ImportedCnnThroughTheCudaPassesFp16) {
  int convs = 0;
  onnx::ModelProto m = small_cnn(&convs);
  auto [cpu, cuda] = cpu_and_cuda_graphs(m);
  ASSERT_TRUE(cpu && cuda);
  EXPECT_EQ(count_ops(*cpu, "Conv"), convs);
  EXPECT_EQ(count_ops(*cuda, "Conv"), 0);
  // 1x1 stride-1 convolutions run as GEMMs on NHWC data (conv1x1_as_gemm): FusedMatMul over a rank-4 input.
  int gemm_convs = 0;
  for (auto& n : cuda->nodes())
    gemm_convs += n->op_type == "FusedMatMul" && n->inputs[0]->shape.size() == 4;
  EXPECT_GT(gemm_convs, 0);
  EXPECT_EQ(count_ops(*cuda, "FusedConv") + gemm_convs, convs);
  EXPECT_EQ(count_ops(*cuda, "BatchNormalization"), 0);
  // The one conversion into channels-last, at the input, is a kiln::ToNhwc (with the lowering Cast and padding).
  EXPECT_EQ(count_ops(*cuda, "Transpose"), 0) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "ToNhwc"), 1) << ir::print(*cuda);
  for (auto& n : cuda->nodes())
    if (n->op_type == "FusedConv") {
      EXPECT_EQ(n->attrs.get_string("layout", "").value(), "NHWC") << n->name;
      EXPECT_EQ(n->inputs[0]->dtype, DataType::kHALF) << n->name;
    }
  expect_same_on_reference(*cpu, *cuda, random_f32({4, 3, 32, 32}, 90), 3e-2);
}

}  // namespace

namespace {

// The squeeze-excite block's global pool becomes, in the CUDA FP16 pipeline, a ReduceMean over axes 1 and 2 of the
// half NHWC tensor: the shape the CUDA backend's contiguous-column reduction serves (tests/gpu runs it there).
TEST(CnnPipeline, SqueezeExcitePoolIsAnNhwcReduceMean) {
  onnx::ModelProto m = se_block_cnn(2, 14, 144);
  auto [cpu, cuda] = cpu_and_cuda_graphs(m);
  ASSERT_TRUE(cpu && cuda);
  EXPECT_EQ(count_ops(*cuda, "GlobalAveragePool"), 0) << ir::print(*cuda);
  int pools = 0;
  for (auto& n : cuda->nodes()) {
    if (n->op_type != "ReduceMean") continue;
    ++pools;
    EXPECT_EQ(n->attrs.get_ints("axes").value(), (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(n->inputs[0]->dtype, DataType::kHALF);
    EXPECT_EQ(n->inputs[0]->shape, ops::shape_from_dims({2, 14, 14, 144}));
  }
  EXPECT_EQ(pools, 1) << ir::print(*cuda);
  expect_same_on_reference(*cpu, *cuda, random_f32({2, 8, 14, 14}, 91), 3e-2);
}

}  // namespace
