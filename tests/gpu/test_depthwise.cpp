// GPU tests of the own NHWC depthwise convolution (tactic kiln_depthwise_nhwc): kernel sizes, strides,
// dilations, asymmetric pads, vector and scalar channel paths, every epilogue activation with and without a
// residual, FP32/FP16/BF16, and the fused prologue (pre_* attributes), against the CPU reference running the same
// FusedConv node.
#include <algorithm>
#include <cstdio>

#include "builder/engine_writer.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
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
  bool mean = false;                           // the second output M (Y's spatial mean, fuse_conv_squeeze)

  std::string str() const {
    return std::string(dtype_name(dt)) + " n" + std::to_string(n) + " c" + std::to_string(c) + " " + std::to_string(h) +
           "x" + std::to_string(w) + " k" + std::to_string(k) + " s" + std::to_string(stride) + " d" +
           std::to_string(dilation) + " pads" + dims_to_string(pads) + " act " + ops::activation_name(ep.act) +
           (pre.act != ops::Activation::kNone ? std::string(" pre ") + ops::activation_name(pre.act) : "") +
           (bias ? " bias" : "") + (residual ? " residual" : "") + (mean ? " mean" : "") + " tactic '" + tactic + "'";
  }
};

void set_epilogue(Attributes& a, const std::string& prefix, const ops::Epilogue& e) {
  a.set(prefix + "activation", std::string(ops::activation_name(e.act)));
  a.set(prefix + "alpha", e.alpha);
  a.set(prefix + "beta", e.beta);
  a.set(prefix + "clip_min", e.lo);
  a.set(prefix + "clip_max", e.hi);
}

// One NHWC depthwise FusedConv node (weights [C, k, k, 1]) in g; returns its inputs (X, then Z if residual),
// none with make_inputs false (the same seeds give the same inputs for every graph of one case).
std::vector<Tensor> dw_graph(const DwCase& c, ir::Graph& g, bool make_inputs = true) {
  float s = 1.f / static_cast<float>(c.k);
  Tensor w = random_tensor(c.dt, {c.c, c.k, c.k, 1}, 2, -s, s);
  Tensor b = random_tensor(c.dt, {c.c}, 3, -0.5, 0.5);
  ir::Value* xv = g.add_value("x");
  xv->dtype = c.dt;
  xv->shape = ops::shape_from_dims({c.n, c.h, c.w, c.c});
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
  std::vector<std::string> outs = {"y"};
  if (c.mean) outs.push_back("m");
  ir::Node* n = g.add_node("FusedConv", "dw", in, outs, a, 1, "kiln");
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  Status inferred = passes::make_shape_inference()->apply(g, ctx);
  EXPECT_TRUE(inferred.ok()) << inferred.message();
  std::vector<Tensor> inputs;
  if (make_inputs) inputs.push_back(random_tensor(c.dt, {c.n, c.h, c.w, c.c}, 1, -2.0, 2.0));
  if (c.residual) {
    ir::Value* z = add_residual_input(g, n);
    if (make_inputs) inputs.push_back(random_tensor(c.dt, ops::static_dims(z->shape), 4));
  }
  for (ir::Value* o : n->outputs) g.outputs().push_back(o);
  return inputs;
}

// The reference rounds once from double; the kernel accumulates in float and rounds once, so the difference
// is about one rounding of the output type (the prologue's values are not rounded on the GPU: one more).
double dw_tolerance(DataType dt) { return dt == DataType::kFLOAT ? 1e-4 : dt == DataType::kHALF ? 4e-3 : 3e-2; }

// The node run on the CPU reference and on the GPU.
void depthwise_case(const DwCase& c) {
  SCOPED_TRACE(c.str());
  ir::Graph g;
  const std::vector<Tensor> inputs = dw_graph(c, g);
  const double tol = dw_tolerance(c.dt);
  auto [cpu, gpu] = run_on_both_all(g, inputs, c.mean ? 2 : 1);
  ASSERT_FALSE(cpu.empty());
  expect_tensors_close(cpu[0], gpu[0], tol, tol, "depthwise");
  if (c.mean) expect_tensors_close(cpu[1], gpu[1], tol, tol, "depthwise M (spatial mean)");
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

// Every activation as a prologue, and a clip above zero (act(0) != 0: padding taken before the activation would
// show on the border).
std::vector<ops::Epilogue> prologue_activations() {
  std::vector<ops::Epilogue> pres;
  for (const auto& e : all_activations(0.f, 6.f))
    if (e.act != ops::Activation::kNone) pres.push_back(e);
  ops::Epilogue high = act(ops::Activation::kClip);
  high.lo = 0.25f;
  high.hi = 0.75f;
  pres.push_back(high);
  return pres;
}

// The prologue: every activation applied to X on load, including ones with act(0) != 0 (sigmoid, a clip above
// zero), where the border pixels show whether padding stays zero after the activation.
TEST(GpuDepthwise, PrologueEveryActivation) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const auto& pre : prologue_activations()) {
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

// ---- the tiled kernels (tactics kiln_depthwise_nhwc_tiled, _small, the persistent double-buffered _pipe; _wide and
// _wide_pipe) ----

const char* const kTiledTactics[] = {"kiln_depthwise_nhwc_tiled", "kiln_depthwise_nhwc_tiled_small",
                                     "kiln_depthwise_nhwc_tiled_pipe", "kiln_depthwise_nhwc_tiled_wide",
                                     "kiln_depthwise_nhwc_tiled_wide_pipe", "kiln_depthwise_nhwc_rows"};

// KILN_DW_TILED=1 offers the tiled kernel (the default; set in case the environment withdraws it);
// KILN_DEPTHWISE=0 withdraws the strip kernel, so that a layer the tiled kernel declined could run only on cuDNN (symmetric pads, no prologue) or on the host, which run_on_both rejects.
// The cases below have a prologue or asymmetric pads wherever they can: passing proves the tiled kernel ran.
class GpuDepthwiseTiled : public ::testing::Test {
 protected:
  ScopedEnv tiled_{"KILN_DW_TILED", "1"};
  ScopedEnv strip_{"KILN_DEPTHWISE", "0"};
};

// The case under each tile variant.
void tiled_case(DwCase c) {
  for (const char* t : kTiledTactics) {
    c.tactic = t;
    depthwise_case(c);
  }
}

// A layer at batch 2: mobilenet_v2's with its ReLU6 prologue, efficientnet_b0's with SiLU after and TF "SAME"
// pads (the extra one at the end) standing in for a prologue as the proof that the tiled kernel ran.
struct Layer {
  const char* name;
  int64_t c, hw, k, stride;
  bool mobilenet;
};
const Layer kLayers[] = {
    {"mobilenet features.1", 32, 112, 3, 1, true},     {"mobilenet features.2", 96, 112, 3, 2, true},
    {"mobilenet features.3", 144, 56, 3, 1, true},     {"mobilenet features.14", 576, 14, 3, 2, true},
    {"mobilenet features.17", 960, 7, 3, 1, true},     {"efficientnet blocks.3.0", 144, 56, 5, 2, false},
    {"efficientnet blocks.3.1", 240, 28, 5, 1, false}, {"efficientnet blocks.5.0", 672, 14, 5, 1, false},
    {"efficientnet blocks.6.1", 1152, 7, 5, 1, false},
};

DwCase layer_case(const Layer& l, DataType dt) {
  DwCase c;
  c.dt = dt;
  c.c = l.c;
  c.h = c.w = l.hw;
  c.k = l.k;
  c.stride = l.stride;
  const int64_t p = l.k / 2;
  if (l.mobilenet) {
    c.pads = {p, p, p, p};
    c.pre = act(ops::Activation::kClip);
  } else {
    c.pads = l.stride == 2 ? std::vector<int64_t>{p - 1, p - 1, p, p} : std::vector<int64_t>{p, p - 1, p, p + 1};
    c.ep = act(ops::Activation::kSilu);
  }
  return c;
}

TEST_F(GpuDepthwiseTiled, MobilenetAndEfficientnetLayers) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const Layer& l : kLayers) {
      SCOPED_TRACE(l.name);
      DwCase c = layer_case(l, dt);
      c.residual = !l.mobilenet;
      tiled_case(c);
    }
}

TEST_F(GpuDepthwiseTiled, EveryActivationWithAndWithoutResidual) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const auto& ep : all_activations(0.f, 6.f))
      for (bool res : {false, true}) {
        DwCase c;
        c.dt = dt;
        c.ep = ep;
        c.residual = res;
        c.pads = {1, 0, 0, 1};
        tiled_case(c);
      }
}

// 3x3 and 5x5 at strides 1 and 2 with symmetric, asymmetric and no pads, on channel counts of one vector (8 in
// FP16), several, and chunks that end inside the tile's channel range (24 and 40 in FP16: 3 and 5 vectors).
TEST_F(GpuDepthwiseTiled, WindowsStridesPadsChannels) {
  KILN_REQUIRE_GPU();
  const Win wins[] = {
      {3, 1, 1, {1, 1, 1, 1}}, {3, 2, 1, {1, 1, 1, 1}}, {5, 1, 1, {2, 2, 2, 2}}, {5, 2, 1, {2, 2, 2, 2}},
      {3, 2, 1, {0, 0, 1, 1}}, {3, 1, 1, {0, 1, 2, 0}}, {5, 2, 1, {1, 2, 2, 1}}, {5, 1, 1, {0, 0, 0, 0}},
      {3, 1, 1, {0, 0, 0, 0}}, {5, 2, 1, {4, 3, 0, 1}},
  };
  for (DataType dt : kTypes)
    for (int64_t ch : {8, 16, 24, 40, 144})
      for (const Win& wn : wins) {
        DwCase c = window_case(dt, ch, wn);
        c.h = 19;
        c.w = 23;
        c.pre = act(ops::Activation::kRelu);  // symmetric pads: the prologue proves the tiled kernel ran
        c.ep = act(ch % 16 == 8 ? ops::Activation::kSilu : ops::Activation::kClip);
        c.residual = ch % 16 == 8;
        tiled_case(c);
      }
}

// The prologue: the clamp form (Relu, ReLU6, a clip above zero) and the general one (every other activation),
// with pads where act(0) != 0 shows whether padding stays zero after it.
TEST_F(GpuDepthwiseTiled, PrologueEveryActivation) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const auto& pre : prologue_activations()) {
      DwCase c;
      c.dt = dt;
      c.pre = pre;
      c.ep = act(ops::Activation::kClip);
      c.pads = {0, 1, 2, 1};
      tiled_case(c);
      c.k = 5;
      c.stride = 2;
      c.pads = {2, 2, 2, 2};
      c.residual = true;
      tiled_case(c);
    }
}

// Outputs that are not a multiple of the tile, images smaller than one tile (a single output, a single row or
// column), and many tiles per image.
TEST_F(GpuDepthwiseTiled, TileEdges) {
  KILN_REQUIRE_GPU();
  struct Img {
    int64_t n, h, w;
  };
  for (DataType dt : kTypes)
    for (const Img& im : {Img{3, 67, 71}, Img{1, 5, 3}, Img{2, 33, 32}, Img{1, 1, 1}, Img{2, 1, 90}, Img{2, 90, 2},
                          Img{4, 40, 150}, Img{1, 17, 129}})
      for (int64_t k : {3, 5})
        for (int64_t stride : {1, 2}) {
          DwCase c;
          c.dt = dt;
          c.n = im.n;
          c.h = im.h;
          c.w = im.w;
          c.c = 48;
          c.k = k;
          c.stride = stride;
          c.pads = {k / 2, k / 2, k / 2, k / 2 + 1};  // asymmetric: no cuDNN; every image has an output
          c.ep = act(ops::Activation::kHardSwish);
          c.residual = stride == 1;
          tiled_case(c);
        }
}

TEST_F(GpuDepthwiseTiled, OptionalInputs) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (auto [bias, res] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}}) {
      DwCase c;
      c.dt = dt;
      c.bias = bias;
      c.residual = res;
      c.pads = {0, 1, 1, 0};
      c.ep = act(ops::Activation::kRelu);
      tiled_case(c);
    }
}

// Convolutions the tiled kernel declines (dilation, 7x7 and 1x1 windows, stride 3, channels not in whole 16-byte
// vectors): forcing its tactic with the strip kernel withdrawn leaves them to cuDNN (symmetric pads, no
// prologue), correctly; and with the strip kernel back, to it, also with a prologue.
TEST_F(GpuDepthwiseTiled, DeclinedConvolutionsStillRunCorrectly) {
  KILN_REQUIRE_GPU();
  const Win declined[] = {
      {3, 1, 2, {2, 2, 2, 2}}, {7, 1, 1, {3, 3, 3, 3}}, {1, 1, 1, {0, 0, 0, 0}}, {3, 3, 1, {1, 1, 1, 1}}};
  for (DataType dt : kTypes) {
    for (const Win& wn : declined) {
      DwCase c = window_case(dt, 32, wn);
      c.ep = act(ops::Activation::kRelu);
      tiled_case(c);
    }
    DwCase odd = window_case(dt, dt == DataType::kFLOAT ? 6 : 12, kWins[0]);
    tiled_case(odd);
    ScopedEnv strip_on("KILN_DEPTHWISE", "1");
    odd.pre = act(ops::Activation::kClip);
    odd.pads = {0, 1, 1, 0};
    tiled_case(odd);
  }
}

// The pipelined variant with many tiles per persistent block (batch 160: more tiles a chunk than the H200 holds
// blocks, so each block walks several and both buffers alternate), every window and stride, each prologue form
// (none: cp.async zero-fill only; the clamp; the general one: SiLU, and Sigmoid with act(0) != 0, so the in-place
// pass must leave padding zero), 5 channel vectors in FP16/BF16 (a chunk ending inside the block's vectors).
TEST_F(GpuDepthwiseTiled, PipelinedLoopsOverManyTiles) {
  KILN_REQUIRE_GPU();
  const ops::Activation pres[] = {ops::Activation::kNone, ops::Activation::kClip, ops::Activation::kSilu,
                                  ops::Activation::kSigmoid};
  for (DataType dt : kTypes)
    for (int64_t k : {3, 5})
      for (int64_t stride : {1, 2})
        for (ops::Activation pre : pres) {
          DwCase c;
          c.dt = dt;
          c.n = 160;
          c.h = c.w = 30;
          c.c = 40;
          c.k = k;
          c.stride = stride;
          c.pads = {k / 2, k / 2, k / 2, k / 2 + 1};  // asymmetric: no cuDNN
          if (pre != ops::Activation::kNone) c.pre = act(pre);
          c.ep = act(ops::Activation::kRelu);
          c.residual = stride == 1;
          // The pipelined kernel over its own tiles and the wide ones, and the row-streaming kernel (strips of
          // many rows: its ring's slots reused many times, the prologue applied in place there too).
          for (int t : {2, 4, 5}) {
            c.tactic = kTiledTactics[t];
            depthwise_case(c);
          }
        }
}

// The tactic the tuner records for `c` (level 3), the tuned engine checked against the CPU reference.
// FusedConv's mean output M (fuse_conv_squeeze): the tiled and row-streaming kernels sum each block's outputs into
// partials that a second kernel adds up; every variant at efficientnet's layers (batch 3: partial tiles), tile
// edges (one-pixel and ragged images), batch 160 (the pipelined kernels' blocks walking many tiles, each tile's
// sums written from the buffer the next copies will fill), float and 16-bit types with and without residual; the
// strip kernel and cuDNN (a dilated window no tiled kernel takes) compute M by a reduction over Y instead.
TEST_F(GpuDepthwiseTiled, MeanOutputEveryVariantAndFallbacks) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes) {
    for (const Layer& l : kLayers) {
      SCOPED_TRACE(l.name);
      DwCase c = layer_case(l, dt);
      c.n = 3;
      c.mean = true;
      c.residual = !l.mobilenet;
      tiled_case(c);
    }
    for (int64_t n : {1, 160})
      for (int64_t hw : {1, 7, 30}) {
        DwCase c;
        c.dt = dt;
        c.n = n;
        c.h = hw;
        c.w = hw + 3;
        c.c = 40;
        c.k = hw == 7 ? 5 : 3;
        c.stride = hw == 30 ? 2 : 1;
        c.pads = {c.k / 2, c.k / 2, c.k / 2, c.k / 2};
        c.ep = act(ops::Activation::kSilu);
        c.mean = true;
        tiled_case(c);
      }
    DwCase dilated = window_case(dt, 32, {3, 1, 2, {2, 2, 2, 2}});  // declined by the tiled kernel: cuDNN
    dilated.mean = true;
    dilated.ep = act(ops::Activation::kSilu);
    dilated.tactic = kTiledTactics[0];
    depthwise_case(dilated);
    DwCase strip = layer_case(kLayers[6], dt);
    strip.mean = true;
    ScopedEnv strip_on("KILN_DEPTHWISE", "1");
    depthwise_case(strip);  // the strip kernel's tactic (DwCase's default)
  }
}

std::string tuned_tactic(const DwCase& c) {
  SCOPED_TRACE(c.str());
  return tuned_tactic_of("FusedConv", [&](ir::Graph& g) { return dw_graph(c, g); }, dw_tolerance(c.dt),
                         "tuned depthwise");
}

// The tuner times the tiled variants next to the strip kernel and cuDNN and records one of them; with the strip
// kernel withdrawn and a prologue (cuDNN cannot apply it) the tiled variants are the only candidates.
TEST_F(GpuDepthwiseTiled, TunerOffersAndRecordsIt) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    DwCase only;
    only.dt = dt;
    only.c = 144;
    only.h = only.w = 28;
    only.tactic.clear();
    only.pre = act(ops::Activation::kClip);
    const std::string t = tuned_tactic(only);
    EXPECT_NE(std::find(std::begin(kTiledTactics), std::end(kTiledTactics), t), std::end(kTiledTactics))
        << "recorded '" << t << "'";
    ScopedEnv strip_on("KILN_DEPTHWISE", "1");
    DwCase all = only;
    all.pre = {};
    all.ep = act(ops::Activation::kClip);
    EXPECT_FALSE(tuned_tactic(all).empty()) << "the tuner records a tactic among cuDNN's, strip and tiled";
  }
}

// The profiled layers at batch 128, FP16 (named *Times*: gpu_check runs it alone after the sharded suite, so that
// its timings are not shared with other tests): the tiled variants against the strip kernel and cuDNN (its
// algorithms timed on the first run, the fastest kept), all on the GPU, times printed. Without a prologue, so that
// cuDNN runs the same convolution; the mobilenet layers then again with their ReLU6 prologue (own kernels only).
// The tiled output must match cuDNN's.
TEST_F(GpuDepthwiseTiled, LayersAtBatch128TimesAgainstStripAndCudnn) {
  KILN_REQUIRE_GPU();
  const Layer layers[] = {kLayers[1], kLayers[2], kLayers[0], kLayers[5], kLayers[6]};
  for (const Layer& l : layers) {
    DwCase c = layer_case(l, DataType::kHALF);
    c.n = 128;
    c.pads = std::vector<int64_t>(4, l.k / 2);  // symmetric: cuDNN's NHWC path runs it
    c.pre = {};
    c.ep = act(l.mobilenet ? ops::Activation::kClip : ops::Activation::kSilu);
    SCOPED_TRACE(c.str());
    std::vector<Tensor> inputs;
    {
      ir::Graph g;
      inputs = dw_graph(c, g);
    }
    auto timed = [&](const std::string& tactic, bool strip, bool pre) {
      DwCase t = c;
      t.tactic = tactic;
      if (pre) t.pre = act(ops::Activation::kClip);
      ir::Graph g;
      dw_graph(t, g, false);
      ScopedEnv strip_env("KILN_DEPTHWISE", strip ? "1" : "0");
      return time_on_gpu(g, inputs, 20);
    };
    Timed big = timed(kTiledTactics[0], false, false), small = timed(kTiledTactics[1], false, false);
    Timed pipe = timed(kTiledTactics[2], false, false), wide = timed(kTiledTactics[3], false, false);
    Timed wide_pipe = timed(kTiledTactics[4], false, false), rows = timed(kTiledTactics[5], false, false);
    Timed strip = timed("kiln_depthwise_nhwc", true, false), dnn = timed("cudnn_fwd_algo1_tc", false, false);
    std::printf("[ dw tiled ] %-26s tiled %7.1f us  tiled_small %7.1f us  tiled_pipe %7.1f us  tiled_wide %7.1f us  "
                "tiled_wide_pipe %7.1f us  rows %7.1f us  strip %7.1f us  cuDNN %7.1f us\n",
                l.name, big.us, small.us, pipe.us, wide.us, wide_pipe.us, rows.us, strip.us, dnn.us);
    if (l.mobilenet) {
      Timed bp = timed(kTiledTactics[0], false, true), sp = timed(kTiledTactics[1], false, true);
      Timed pipe_pre = timed(kTiledTactics[2], false, true), wide_pre = timed(kTiledTactics[3], false, true);
      Timed rows_pre = timed(kTiledTactics[5], false, true), stp = timed("kiln_depthwise_nhwc", true, true);
      std::printf("[ dw tiled ] %-26s with the ReLU6 prologue: tiled %7.1f us  tiled_small %7.1f us  tiled_pipe "
                  "%7.1f us  tiled_wide %7.1f us  rows %7.1f us  strip %7.1f us\n",
                  l.name, bp.us, sp.us, pipe_pre.us, wide_pre.us, rows_pre.us, stp.us);
      // The pipelined kernel's persistent blocks loop over many tiles here (batch 128), and the row-streaming
      // kernel's blocks over long strips: their prologue outputs, and the wide tiles', against the tiled kernel's,
      // which the batch-2 tests check against the CPU reference.
      for (const Timed* t : {&pipe_pre, &wide_pre, &rows_pre}) {
        ASSERT_TRUE(bp.y.defined() && t->y.defined());
        ASSERT_EQ(bp.y.shape(), t->y.shape());
        EXPECT_EQ(half_mismatches(bp.y, t->y), 0)
            << "elements where the " << (t == &pipe_pre ? "pipelined" : t == &wide_pre ? "wide" : "row-streaming")
            << " and the tiled kernel differ (with the prologue)";
      }
    }
    for (const Timed* t : {&big, &small, &pipe, &wide, &wide_pipe, &rows}) {
      ASSERT_TRUE(t->y.defined() && dnn.y.defined());
      ASSERT_EQ(t->y.shape(), dnn.y.shape());
      EXPECT_EQ(half_mismatches(t->y, dnn.y), 0) << "elements where the tiled kernel and cuDNN differ";
    }
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
