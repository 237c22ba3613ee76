// GPU tests of the own NHWC depthwise convolution (tactic kiln_depthwise_nhwc): kernel sizes, strides,
// dilations, asymmetric pads, vector and scalar channel paths, every epilogue activation with and without a
// residual, FP32/FP16/BF16, and the fused prologue (pre_* attributes), against the CPU reference running the same
// FusedConv node.
#include "builder/engine_writer.h"
#include "gpu_test_util.h"
#include "ops/layout_util.h"
#include "passes/pass.h"

namespace kiln::gpu_testing {
namespace {

struct DwCase {
  int64_t n = 2, c = 32, h = 15, w = 13;
  int64_t k = 3, stride = 1, dilation = 1;
  std::vector<int64_t> pads = {1, 1, 1, 1};  // top, left, bottom, right
  bool bias = true, residual = false;
  DataType dt = DataType::kHALF;
  ops::Epilogue ep;
  ops::Epilogue pre;                           // the prologue (FusedConv's pre_* attributes); none: not set
  std::string tactic = "kiln_depthwise_nhwc";  // empty: the kernel's untuned default

  std::string str() const {
    return std::string(dtype_name(dt)) + " n" + std::to_string(n) + " c" + std::to_string(c) + " " + std::to_string(h) +
           "x" + std::to_string(w) + " k" + std::to_string(k) + " s" + std::to_string(stride) + " d" +
           std::to_string(dilation) + " pads" + dims_to_string(pads) + " act " + ops::activation_name(ep.act) +
           (pre.act != ops::Activation::kNone ? std::string(" pre ") + ops::activation_name(pre.act) : "") +
           (bias ? " bias" : "") + (residual ? " residual" : "") + " tactic '" + tactic + "'";
  }
};

void set_epilogue(Attributes& a, const std::string& prefix, const ops::Epilogue& e) {
  a.set(prefix + "activation", std::string(ops::activation_name(e.act)));
  a.set(prefix + "alpha", e.alpha);
  a.set(prefix + "beta", e.beta);
  a.set(prefix + "clip_min", e.lo);
  a.set(prefix + "clip_max", e.hi);
}

// One NHWC depthwise FusedConv node (weights [C, k, k, 1]), run on the CPU reference and on the GPU.
void depthwise_case(const DwCase& c) {
  SCOPED_TRACE(c.str());
  float s = 1.f / static_cast<float>(c.k);
  Tensor x = random_tensor(c.dt, {c.n, c.h, c.w, c.c}, 1, -2.0, 2.0);
  Tensor w = random_tensor(c.dt, {c.c, c.k, c.k, 1}, 2, -s, s);
  Tensor b = random_tensor(c.dt, {c.c}, 3, -0.5, 0.5);
  ir::Graph g;
  ir::Value* xv = g.add_value("x");
  xv->dtype = c.dt;
  xv->shape = ops::shape_from_dims(x.shape());
  xv->rank_known = true;
  g.inputs().push_back(xv);
  Attributes a;
  a.set("pads", c.pads);
  a.set("strides", std::vector<int64_t>{c.stride, c.stride});
  a.set("dilations", std::vector<int64_t>{c.dilation, c.dilation});
  a.set("group", c.c);
  a.set("layout", std::string("NHWC"));
  set_epilogue(a, "", c.ep);
  if (c.pre.act != ops::Activation::kNone) set_epilogue(a, "pre_", c.pre);
  if (!c.tactic.empty()) a.set("kiln.tactic", c.tactic);
  std::vector<ir::Value*> in = {xv, g.add_constant("w", w)};
  if (c.bias) in.push_back(g.add_constant("b", b));
  ir::Node* n = g.add_node("FusedConv", "dw", in, {"y"}, a, 1, "kiln");
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  Status inferred = passes::make_shape_inference()->apply(g, ctx);
  ASSERT_TRUE(inferred.ok()) << inferred.message();
  std::vector<Tensor> inputs = {x};
  if (c.residual) {
    ir::Value* z = add_residual_input(g, n);
    inputs.push_back(random_tensor(c.dt, ops::static_dims(z->shape), 4));
  }
  g.outputs().push_back(n->outputs[0]);
  auto [cpu, gpu] = run_on_both(g, inputs);
  // The reference rounds once from double; the kernel accumulates in float and rounds once, so the difference
  // is about one rounding of the output type (the prologue's values are not rounded on the GPU: one more).
  const double tol = c.dt == DataType::kFLOAT ? 1e-4 : c.dt == DataType::kHALF ? 4e-3 : 3e-2;
  expect_tensors_close(cpu, gpu, tol, tol, "depthwise");
}

ops::Epilogue act(ops::Activation a) {
  for (const auto& e : all_activations(0.f, 6.f))
    if (e.act == a) return e;
  return {};
}

const DataType kTypes[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};

TEST(GpuDepthwise, EveryActivationWithAndWithoutResidual) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const auto& ep : all_activations(0.f, 6.f))
      for (bool res : {false, true}) {
        DwCase c;
        c.dt = dt;
        c.ep = ep;
        c.residual = res;
        depthwise_case(c);
      }
}

// Windows and channel counts: 32 and 144 take 16-byte vectors in every type, 12 in FP32 only (FP16/BF16 fall
// back to the scalar path), 7 is scalar everywhere.
struct Win {
  int64_t k, stride, dilation;
  std::vector<int64_t> pads;
};
const Win kWins[] = {
    {3, 1, 1, {1, 1, 1, 1}},                           // mobilenet stride 1
    {3, 2, 1, {1, 1, 1, 1}},                           // mobilenet stride 2
    {5, 2, 1, {2, 2, 2, 2}},                           // efficientnet 5x5 stride 2
    {5, 1, 1, {2, 2, 2, 2}}, {3, 2, 1, {0, 0, 1, 1}},  // TF "SAME" stride 2: the extra pad at the end
    {3, 1, 1, {0, 1, 2, 0}},                           // asymmetric on both axes
    {3, 1, 2, {2, 2, 2, 2}},                           // dilation 2
    {3, 2, 2, {1, 0, 3, 2}},                           // dilation, stride and asymmetric pads together
    {1, 1, 1, {0, 0, 0, 0}}, {7, 3, 1, {0, 0, 0, 0}},  // no padding, windows that skip pixels
};

DwCase window_case(DataType dt, int64_t ch, const Win& wn) {
  DwCase c;
  c.dt = dt;
  c.c = ch;
  c.k = wn.k;
  c.stride = wn.stride;
  c.dilation = wn.dilation;
  c.pads = wn.pads;
  return c;
}

TEST(GpuDepthwise, WindowsStridesDilationsPads) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t ch : {32, 144, 12, 7})
      for (const Win& wn : kWins)
        for (auto a : {ops::Activation::kClip, ops::Activation::kSilu}) {
          DwCase c = window_case(dt, ch, wn);
          c.ep = act(a);
          c.residual = a == ops::Activation::kSilu;
          depthwise_case(c);
        }
}

// The same windows with a Relu/ReLU6 prologue on vector channels: the kernel's fixed 3/5-wide windows (stride 1
// and 2) take these, the rest its general form; plus images narrower than a strip's span of input columns.
TEST(GpuDepthwise, WindowsWithClampPrologue) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t ch : {32, 144})
      for (const Win& wn : kWins)
        for (auto pre : {ops::Activation::kClip, ops::Activation::kRelu}) {
          DwCase c = window_case(dt, ch, wn);
          c.pre = act(pre);
          c.ep = act(pre == ops::Activation::kClip ? ops::Activation::kNone : ops::Activation::kSilu);
          c.residual = pre == ops::Activation::kRelu;
          depthwise_case(c);
          if (wn.k == 3 || wn.k == 5) {  // a 3- or 4-pixel-wide image: the span runs past both edges
            c.h = 6;
            c.w = wn.stride == 1 ? 3 : 4;
            depthwise_case(c);
          }
        }
}

TEST(GpuDepthwise, OptionalInputsAndDefaultTactic) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (auto [bias, res] : {std::pair{false, false}, {false, true}, {true, true}})
      for (const char* tactic : {"kiln_depthwise_nhwc", ""}) {
        DwCase c;
        c.dt = dt;
        c.bias = bias;
        c.residual = res;
        c.tactic = tactic;
        c.ep = act(ops::Activation::kRelu);
        depthwise_case(c);
      }
}

// mobilenet_v2 features.3 conv.1 and features.2 conv.1 at batch 2 (the profiled layers), and more images
// than the capped grid covers in one step (the blocks' pixel loop).
TEST(GpuDepthwise, MobilenetShapes) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    DwCase a;
    a.dt = dt;
    a.c = 144;
    a.h = a.w = 56;
    a.ep = act(ops::Activation::kClip);
    depthwise_case(a);
    DwCase b = a;
    b.c = 96;
    b.h = b.w = 112;
    b.stride = 2;
    depthwise_case(b);
    DwCase e = a;  // efficientnet_b0 blocks.5: 5x5 on 672 channels at 14x14, SiLU
    e.n = 16;
    e.c = 672;
    e.h = e.w = 14;
    e.k = 5;
    e.pads = {2, 2, 2, 2};
    e.ep = act(ops::Activation::kSilu);
    depthwise_case(e);
  }
}

// The prologue: every activation applied to X on load, including ones with act(0) != 0 (sigmoid, a clip above
// zero), where the border pixels show whether padding stays zero after the activation.
TEST(GpuDepthwise, PrologueEveryActivation) {
  KILN_REQUIRE_GPU();
  std::vector<ops::Epilogue> pres = all_activations(0.f, 6.f);
  ops::Epilogue high = act(ops::Activation::kClip);
  high.lo = 0.25f;
  high.hi = 0.75f;
  pres.push_back(high);
  for (DataType dt : kTypes)
    for (const auto& pre : pres) {
      if (pre.act == ops::Activation::kNone) continue;
      DwCase c;
      c.dt = dt;
      c.pre = pre;
      c.ep = act(ops::Activation::kClip);
      c.pads = {0, 1, 2, 1};
      depthwise_case(c);
      c.c = 7;  // scalar channels
      c.stride = 2;
      c.tactic = "";
      c.residual = true;
      depthwise_case(c);
    }
}

// A prologue runs on the depthwise kernel whatever the recorded tactic says (cuDNN cannot apply it).
TEST(GpuDepthwise, PrologueIgnoresACudnnTactic) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes) {
    DwCase c;
    c.dt = dt;
    c.c = 144;
    c.pre = act(ops::Activation::kSilu);
    c.ep = act(ops::Activation::kSilu);
    c.tactic = "cudnn_fwd_algo1_tc";
    depthwise_case(c);
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
