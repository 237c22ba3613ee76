// GPU tests of the own direct NHWC convolutions for few input channels (tactic kiln_direct_conv_nhwc, and the
// tensor-core one for 8-channel half/bfloat16 stems, kiln_direct_conv_nhwc_mma, at the end): the
// image stems' shapes, odd image sizes, strides, pads (asymmetric ones only this kernel runs in NHWC), every
// epilogue activation with and without a residual, FP32/FP16/BF16, weights that use 3 of 8 channels (ToNhwc's
// padding) or all of them, against the CPU reference running the same FusedConv node; convolutions it must
// decline; and, at batch 128, the stems against cuDNN on the GPU with both timed.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "builder/engine_writer.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "ops/layout_util.h"
#include "passes/pass.h"

namespace kiln::gpu_testing {
namespace {

struct DcCase {
  int64_t n = 2, c = 8, m = 32, h = 17, w = 15;
  int64_t used = 3;  // input channels with nonzero weights (the rest are zero, like ToNhwc's padding)
  int64_t k = 3, stride = 2, dilation = 1, group = 1;
  std::vector<int64_t> pads = {1, 1, 1, 1};  // top, left, bottom, right
  bool bias = true, residual = false;
  DataType dt = DataType::kHALF;
  ops::Epilogue ep;
  std::string tactic = "kiln_direct_conv_nhwc";  // empty: the untuned default

  std::string str() const {
    return std::string(dtype_name(dt)) + " n" + std::to_string(n) + " c" + std::to_string(c) + "(" +
           std::to_string(used) + " used) m" + std::to_string(m) + " " + std::to_string(h) + "x" + std::to_string(w) +
           " k" + std::to_string(k) + " s" + std::to_string(stride) + " d" + std::to_string(dilation) + " g" +
           std::to_string(group) + " pads" + dims_to_string(pads) + " act " + ops::activation_name(ep.act) +
           (bias ? " bias" : "") + (residual ? " residual" : "") + " tactic '" + tactic + "'";
  }
};

void set_epilogue(Attributes& a, const ops::Epilogue& e) {
  a.set("activation", std::string(ops::activation_name(e.act)));
  a.set("alpha", e.alpha);
  a.set("beta", e.beta);
  a.set("clip_min", e.lo);
  a.set("clip_max", e.hi);
}

// W [M, k, k, C / group] with the input channels from `used` on zeroed.
Tensor stem_weights(const DcCase& c, uint32_t seed) {
  const int64_t cg = c.c / c.group;
  const double s = 1.0 / std::sqrt(static_cast<double>(c.k * c.k * std::min(c.used, cg)));
  Tensor w = random_tensor(DataType::kFLOAT, {c.m, c.k, c.k, cg}, seed, -s, s);
  for (int64_t i = 0; i < w.numel(); ++i)
    if (i % cg >= c.used) w.data<float>()[i] = 0.f;
  return w.cast(c.dt);
}

// One NHWC FusedConv node; its inputs: X (random in every channel, padded ones included), then Z if residual.
void stem_graph(const DcCase& c, ir::Graph& g) {
  ir::Value* xv = g.add_value("x");
  xv->dtype = c.dt;
  xv->shape = ops::shape_from_dims({c.n, c.h, c.w, c.c});
  xv->rank_known = true;
  g.inputs().push_back(xv);
  Attributes a;
  a.set("pads", c.pads);
  a.set("strides", std::vector<int64_t>{c.stride, c.stride});
  a.set("dilations", std::vector<int64_t>{c.dilation, c.dilation});
  a.set("group", c.group);
  a.set("layout", std::string("NHWC"));
  set_epilogue(a, c.ep);
  if (!c.tactic.empty()) a.set("kiln.tactic", c.tactic);
  std::vector<ir::Value*> in = {xv, g.add_constant("w", stem_weights(c, 2))};
  if (c.bias) in.push_back(g.add_constant("b", random_tensor(c.dt, {c.m}, 3, -0.5, 0.5)));
  ir::Node* n = g.add_node("FusedConv", "stem", in, {"y"}, a, 1, "kiln");
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  Status inferred = passes::make_shape_inference()->apply(g, ctx);
  EXPECT_TRUE(inferred.ok()) << inferred.message();
  if (c.residual) add_residual_input(g, n);
  g.outputs().push_back(n->outputs[0]);
}

std::vector<Tensor> stem_inputs(const DcCase& c, const ir::Graph& g) {
  std::vector<Tensor> inputs = {random_tensor(c.dt, {c.n, c.h, c.w, c.c}, 1, -2.0, 2.0)};
  if (c.residual) inputs.push_back(random_tensor(c.dt, ops::static_dims(g.inputs()[1]->shape), 4));
  return inputs;
}

void direct_case(const DcCase& c) {
  SCOPED_TRACE(c.str());
  ir::Graph g;
  stem_graph(c, g);
  auto [cpu, gpu] = run_on_both(g, stem_inputs(c, g));
  // The reference rounds once from double; the kernel accumulates in float and rounds once.
  const double tol = c.dt == DataType::kFLOAT ? 1e-4 : c.dt == DataType::kHALF ? 4e-3 : 3e-2;
  expect_tensors_close(cpu, gpu, tol, tol, "direct conv");
}

ops::Epilogue act(ops::Activation a) {
  for (const auto& e : all_activations(0.f, 6.f))
    if (e.act == a) return e;
  return {};
}

const DataType kTypes[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};

using GpuDirectConv = ::testing::Test;

// The three stems at batch 2, odd image sizes: resnet50 7x7/2 3->64 ReLU, mobilenet_v2 3x3/2 3->32 ReLU6,
// efficientnet_b0 3x3/2 3->32 SiLU; `used` input channels of 8; asym: pads with one less at the start (TF "SAME"
// style), which only the own kernels run in NHWC.
std::vector<DcCase> three_stems(DataType dt, int64_t used, bool asym) {
  DcCase r;
  r.dt = dt;
  r.used = used;
  r.m = 64;
  r.k = 7;
  r.pads = asym ? std::vector<int64_t>{3, 2, 2, 3} : std::vector<int64_t>{3, 3, 3, 3};
  r.h = 45;
  r.w = 39;
  r.ep = act(ops::Activation::kRelu);
  DcCase mb;
  mb.dt = dt;
  mb.used = used;
  mb.h = 37;
  mb.w = 29;
  mb.pads = asym ? std::vector<int64_t>{0, 0, 1, 1} : std::vector<int64_t>{1, 1, 1, 1};
  mb.ep = act(ops::Activation::kClip);
  DcCase ef = mb;
  ef.ep = act(ops::Activation::kSilu);
  return {r, mb, ef};
}

TEST_F(GpuDirectConv, StemShapes) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const DcCase& c : three_stems(dt, 3, false)) direct_case(c);
}

TEST_F(GpuDirectConv, EveryActivationWithAndWithoutResidual) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (const auto& ep : all_activations(0.f, 6.f))
      for (bool res : {false, true}) {
        DcCase c;
        c.dt = dt;
        c.ep = ep;
        c.residual = res;
        direct_case(c);
      }
}

// Windows, strides, dilations and pads, including asymmetric pads (only this kernel runs those in NHWC, so
// those cases also prove it ran: otherwise the layer would fall back to the host), for the unrolled window
// widths (3, 7) and the general form (1, 5).
TEST_F(GpuDirectConv, WindowsStridesDilationsPads) {
  KILN_REQUIRE_GPU();
  struct Win {
    int64_t k, stride, dilation;
    std::vector<int64_t> pads;
  };
  const Win wins[] = {
      {3, 1, 1, {1, 1, 1, 1}}, {3, 2, 1, {0, 0, 1, 1}}, {7, 2, 1, {3, 3, 3, 3}}, {7, 1, 1, {2, 3, 4, 1}},
      {5, 2, 1, {2, 2, 2, 2}}, {3, 1, 2, {2, 2, 2, 2}}, {3, 2, 2, {1, 0, 3, 2}}, {1, 1, 1, {0, 0, 0, 0}},
      {4, 3, 1, {0, 0, 0, 0}},
  };
  for (DataType dt : kTypes)
    for (const Win& wn : wins)
      for (bool res : {false, true}) {
        DcCase c;
        c.dt = dt;
        c.k = wn.k;
        c.stride = wn.stride;
        c.dilation = wn.dilation;
        c.pads = wn.pads;
        c.residual = res;
        c.ep = act(res ? ops::Activation::kHardSwish : ops::Activation::kLeakyRelu);
        direct_case(c);
      }
}

// Channel counts: 3 of 8 used (an 8-byte load per pixel), 4..8 of 8 (the 8-channel form), 3 or 1 stored
// (element loads), and output channels that are not a multiple of the kernel's 16 (the last group half full).
TEST_F(GpuDirectConv, ChannelCounts) {
  KILN_REQUIRE_GPU();
  struct Ch {
    int64_t c, used, m;
  };
  for (DataType dt : kTypes)
    for (const Ch& ch : {Ch{8, 3, 32}, Ch{8, 8, 32}, Ch{8, 5, 24}, Ch{8, 1, 8}, Ch{3, 3, 16}, Ch{1, 1, 40},
                         Ch{4, 4, 8}, Ch{6, 2, 48}})
      for (auto pads : {std::vector<int64_t>{1, 1, 1, 1}, std::vector<int64_t>{0, 1, 2, 1}}) {
        DcCase c;
        c.dt = dt;
        c.c = ch.c;
        c.used = ch.used;
        c.m = ch.m;
        c.pads = pads;
        c.ep = act(ops::Activation::kGeluTanh);
        c.residual = true;
        direct_case(c);
      }
}

TEST_F(GpuDirectConv, OptionalInputsAndDefaultTactic) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (auto [bias, res] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}})
      for (const char* tactic : {"kiln_direct_conv_nhwc", ""}) {
        DcCase c;
        c.dt = dt;
        c.bias = bias;
        c.residual = res;
        c.tactic = tactic;
        c.ep = act(ops::Activation::kRelu);
        direct_case(c);
      }
}

// Convolutions the kernel declines (more than 8 input channels, groups, output channels not in whole 8s, a
// shared-memory-sized window of 8 channels): forcing its tactic must leave them to cuDNN, correctly.
TEST_F(GpuDirectConv, DeclinedConvolutionsStillRunCorrectly) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    DcCase wide;
    wide.dt = dt;
    wide.c = 16;
    wide.used = 16;
    direct_case(wide);
    DcCase grouped = wide;
    grouped.c = 8;
    grouped.used = 4;
    grouped.group = 2;
    direct_case(grouped);
    DcCase odd_m;
    odd_m.dt = dt;
    odd_m.m = 12;
    direct_case(odd_m);
    DcCase big = odd_m;  // 11x11 taps of 8 channels: 15.5k weights, more than the 12k floats of shared memory
    big.m = 16;
    big.used = 8;
    big.k = 11;
    big.stride = 4;
    big.pads = {5, 5, 5, 5};
    big.h = big.w = 33;
    direct_case(big);
  }
}

// ---- the tensor-core stem kernel (tactic kiln_direct_conv_nhwc_mma, direct_conv_mma.cu) ----

constexpr const char* kMmaTactic = "kiln_direct_conv_nhwc_mma";

// KILN_STEM_MMA=1 offers the kernel (the default; set in case the environment withdraws it); KILN_DIRECT_CONV=0
// withdraws the CUDA-core direct kernel, so that a case with asymmetric pads (which cuDNN's NHWC path cannot run)
// proves that the tensor-core kernel ran: otherwise the layer would fall back to the host, which run_on_both
// rejects.
class GpuStemMma : public ::testing::Test {
 protected:
  ScopedEnv mma_{"KILN_STEM_MMA", "1"};
  ScopedEnv direct_{"KILN_DIRECT_CONV", "0"};
};

const DataType kMmaTypes[] = {DataType::kHALF, DataType::kBF16};

void mma_case(DcCase c) {
  c.tactic = kMmaTactic;
  direct_case(c);
}

// The three stems at batch 2, odd image sizes: with their own symmetric pads, and with asymmetric ones (proof
// that this kernel ran); 3 of 8 channels used (ToNhwc) and all 8.
TEST_F(GpuStemMma, StemShapes) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kMmaTypes)
    for (int64_t used : {3, 8})
      for (bool asym : {false, true})
        for (const DcCase& c : three_stems(dt, used, asym)) mma_case(c);
}

TEST_F(GpuStemMma, EveryActivationWithAndWithoutResidual) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kMmaTypes)
    for (const auto& ep : all_activations(0.f, 6.f))
      for (bool res : {false, true}) {
        DcCase c;
        c.dt = dt;
        c.ep = ep;
        c.residual = res;
        c.pads = {1, 0, 0, 1};
        mma_case(c);
      }
}

// Windows (odd and even tap counts), strides 1-4, dilations, pads; symmetric and asymmetric.
TEST_F(GpuStemMma, WindowsStridesDilationsPads) {
  KILN_REQUIRE_GPU();
  struct Win {
    int64_t k, stride, dilation;
    std::vector<int64_t> pads;
  };
  const Win wins[] = {
      {3, 1, 1, {1, 1, 0, 1}}, {3, 2, 1, {0, 0, 1, 1}}, {7, 2, 1, {3, 3, 3, 3}}, {7, 1, 1, {2, 3, 4, 1}},
      {5, 2, 1, {2, 2, 1, 2}}, {3, 1, 2, {2, 2, 2, 1}}, {3, 2, 2, {1, 0, 3, 2}}, {1, 1, 1, {0, 0, 0, 0}},
      {4, 3, 1, {0, 1, 0, 0}}, {2, 2, 1, {0, 0, 1, 1}}, {11, 4, 1, {5, 4, 5, 4}}, {3, 3, 3, {3, 3, 0, 0}},
  };
  for (DataType dt : kMmaTypes)
    for (const Win& wn : wins)
      for (bool res : {false, true}) {
        DcCase c;
        c.dt = dt;
        c.k = wn.k;
        c.stride = wn.stride;
        c.dilation = wn.dilation;
        c.pads = wn.pads;
        c.residual = res;
        c.used = res ? 8 : 3;
        c.ep = act(res ? ops::Activation::kHardSwish : ops::Activation::kLeakyRelu);
        mma_case(c);
      }
}

// Output channels: one group of 16/32/48/64 (the last n8 tile of 24/40/56 empty), several groups of 64 (72, 96,
// 128: the last one partly empty), and M = 8.
TEST_F(GpuStemMma, OutputChannels) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kMmaTypes)
    for (int64_t m : {8, 16, 24, 32, 40, 48, 56, 64, 72, 96, 128}) {
      DcCase c;
      c.dt = dt;
      c.m = m;
      c.used = 8;
      c.pads = {2, 1, 0, 1};
      c.residual = m % 16 == 8;
      c.ep = act(ops::Activation::kGeluTanh);
      mma_case(c);
    }
}

// Images across several tiles of 16x16 outputs with partial edge tiles, images smaller than one tile, and more
// tiles than resident blocks (each block walks several: the double-buffered patch's prefetch, and the
// single-buffer path).
TEST_F(GpuStemMma, TileEdgesAndManyTiles) {
  KILN_REQUIRE_GPU();
  struct Img {
    int64_t n, h, w;
  };
  for (DataType dt : kMmaTypes)
    for (const Img& im : {Img{3, 67, 71}, Img{1, 5, 3}, Img{2, 33, 32}, Img{1, 3, 3}, Img{4, 40, 150}}) {
      DcCase c;
      c.dt = dt;
      c.n = im.n;
      c.h = im.h;
      c.w = im.w;
      c.m = 64;
      c.k = 7;
      c.pads = {3, 3, 2, 2};
      c.ep = act(ops::Activation::kRelu);
      c.residual = true;
      mma_case(c);
    }
  // 640 tiles of 16x16 outputs: more than the resident blocks of an H200, so blocks walk several tiles.
  for (DataType dt : kMmaTypes) {
    DcCase c;
    c.dt = dt;
    c.n = 40;
    c.h = c.w = 64;
    c.m = 16;
    c.used = 8;
    c.k = 3;
    c.stride = 1;
    c.pads = {1, 1, 1, 0};
    c.ep = act(ops::Activation::kSigmoid);
    mma_case(c);
  }
  // An 11x11 stride-4 window: too much shared memory for two patch buffers (stem_mma_plan), so the single-buffer
  // path, again over more tiles (160) than resident blocks.
  for (DataType dt : kMmaTypes) {
    DcCase c;
    c.dt = dt;
    c.n = 40;
    c.h = c.w = 128;
    c.m = 16;
    c.k = 11;
    c.stride = 4;
    c.pads = {5, 5, 5, 4};
    c.ep = act(ops::Activation::kRelu);
    mma_case(c);
  }
}

TEST_F(GpuStemMma, OptionalInputs) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kMmaTypes)
    for (auto [bias, res] : {std::pair{false, false}, {false, true}, {true, false}, {true, true}}) {
      DcCase c;
      c.dt = dt;
      c.bias = bias;
      c.residual = res;
      c.pads = {0, 1, 1, 0};
      c.ep = act(ops::Activation::kRelu);
      mma_case(c);
    }
}

// Convolutions the kernel declines (float32, fewer or more than 8 channels, groups, M not in whole 8s): forcing
// its tactic leaves them to cuDNN, correctly (symmetric pads, which cuDNN runs).
TEST_F(GpuStemMma, DeclinedConvolutionsStillRunCorrectly) {
  KILN_REQUIRE_GPU();
  DcCase f32;
  f32.dt = DataType::kFLOAT;
  mma_case(f32);
  for (DataType dt : kMmaTypes) {
    DcCase narrow;
    narrow.dt = dt;
    narrow.c = 4;
    mma_case(narrow);
    DcCase wide = narrow;
    wide.c = 16;
    wide.used = 16;
    mma_case(wide);
    DcCase grouped = wide;
    grouped.c = 8;
    grouped.used = 4;
    grouped.group = 2;
    mma_case(grouped);
    DcCase odd_m;
    odd_m.dt = dt;
    odd_m.m = 12;
    mma_case(odd_m);
  }
}

// The tactic the tuner records for `c` (level 3), the tuned engine checked against the CPU reference.
std::string tuned_tactic(const DcCase& c) {
  SCOPED_TRACE(c.str());
  auto make = [&](ir::Graph& g) {
    stem_graph(c, g);
    return stem_inputs(c, g);
  };
  return tuned_tactic_of("FusedConv", make, c.dt == DataType::kHALF ? 4e-3 : 3e-2, "tuned stem");
}

// The tuner times the tensor-core tactic next to the others and records one of them; where it is the only
// candidate (asymmetric pads, the direct kernel withdrawn) it is the one recorded.
TEST_F(GpuStemMma, TunerOffersAndRecordsIt) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kMmaTypes) {
    DcCase only;
    only.dt = dt;
    only.m = 64;
    only.k = 7;
    only.pads = {3, 2, 2, 3};
    only.h = 45;
    only.w = 39;
    only.tactic.clear();
    only.ep = act(ops::Activation::kRelu);
    EXPECT_EQ(tuned_tactic(only), kMmaTactic);
    ScopedEnv direct_on("KILN_DIRECT_CONV", "1");
    DcCase all = only;
    all.pads = {3, 3, 3, 3};
    EXPECT_FALSE(tuned_tactic(all).empty()) << "the tuner records a tactic among cuDNN's, direct and tensor-core";
  }
}

// The three stems at batch 128 (224x224 input with 8 channels, 3 used), FP16: the tensor-core kernel next to the
// CUDA-core direct kernel and cuDNN, all timed and printed; both own kernels' outputs must match cuDNN's.
TEST_F(GpuStemMma, StemsAtBatch128AgainstDirectAndCudnn) {
  KILN_REQUIRE_GPU();
  struct Stem {
    const char* name;
    int64_t m, k, pad;
    ops::Activation a;
  };
  for (const Stem& st : {Stem{"resnet50 conv1", 64, 7, 3, ops::Activation::kRelu},
                         Stem{"mobilenet_v2 stem", 32, 3, 1, ops::Activation::kClip},
                         Stem{"efficientnet_b0 stem", 32, 3, 1, ops::Activation::kSilu}}) {
    DcCase c;
    c.n = 128;
    c.h = c.w = 224;
    c.m = st.m;
    c.k = st.k;
    c.pads = {st.pad, st.pad, st.pad, st.pad};
    c.ep = act(st.a);
    c.tactic = kMmaTactic;
    SCOPED_TRACE(c.str());
    ir::Graph mma, direct, dnn;
    stem_graph(c, mma);
    c.tactic = "kiln_direct_conv_nhwc";
    stem_graph(c, direct);
    c.tactic = "cudnn_fwd_algo1_tc";
    stem_graph(c, dnn);
    std::vector<Tensor> inputs = stem_inputs(c, mma);
    Timed a = time_on_gpu(mma, inputs, 20);
    Timed d;
    {
      ScopedEnv on("KILN_DIRECT_CONV", "1");
      d = time_on_gpu(direct, inputs, 20);
    }
    Timed b = time_on_gpu(dnn, inputs, 20);
    std::printf("[ stem mma ] %-22s tensor-core %8.1f us   direct %8.1f us   cuDNN %8.1f us\n", st.name, a.us, d.us,
                b.us);
    ASSERT_TRUE(a.y.defined() && d.y.defined() && b.y.defined());
    ASSERT_EQ(a.y.shape(), b.y.shape());
    ASSERT_EQ(d.y.shape(), b.y.shape());
    EXPECT_EQ(half_mismatches(a.y, b.y), 0) << "elements where the tensor-core kernel and cuDNN differ";
    EXPECT_EQ(half_mismatches(d.y, b.y), 0) << "elements where the direct kernel and cuDNN differ";
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
