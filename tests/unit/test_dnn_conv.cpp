// The host-side logic of FusedConv's cuDNN graph tactic (src/backends/cuda/dnn_conv.h): stable names, the
// KILN_DNN_CONV switch, which convolutions are offered it, the tactic order, and the descriptors' dimensions and
// strides checked against plain NHWC / KRSC indexing of the stored tensors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "backends/cuda/dnn_conv.h"

namespace kiln::cuda {
namespace {

// A resnet50 3x3 convolution: N x size x size x ch, pad 1, the given stride, + bias + ReLU.
DnnConvSpec resnet3x3(int64_t n, int64_t size, int64_t ch, int64_t stride = 1) {
  DnnConvSpec s;
  s.n = n;
  s.h = s.w = size;
  s.c = s.k = ch;
  s.r = s.s = 3;
  s.pad[0] = s.pad[1] = s.pad_end[0] = s.pad_end[1] = 1;
  s.stride[0] = s.stride[1] = stride;
  s.p = s.q = (size + 2 - 3) / stride + 1;
  s.bias = true;
  s.act = ops::Activation::kRelu;
  return s;
}

// The names go into engines and timing caches: they must not change.
TEST(DnnConvTactics, NamesAreStableAndRoundTrip) {
  EXPECT_EQ(dnn_conv_tactic_name(0), "cudnn_conv_graph_0");
  EXPECT_EQ(dnn_conv_tactic_name(2), "cudnn_conv_graph_2");
  for (int r : {0, 1, 2, 7, 42, 999}) EXPECT_EQ(dnn_conv_tactic_index(dnn_conv_tactic_name(r)), r);
  for (const char* other :
       {"", "cudnn_fwd_algo1_tc", "cudnn_conv_graph_", "cudnn_conv_graph_-1", "cudnn_conv_graph_1x",
        "cudnn_conv_graph_1000", "cudnn_matmul_fused_0", "xcudnn_conv_graph_0", "kiln_depthwise_nhwc"})
    EXPECT_EQ(dnn_conv_tactic_index(other), -1) << other;
}

TEST(DnnConvTactics, SwitchIsOnUnlessZero) {
  const char* old = std::getenv("KILN_DNN_CONV");
  const std::string saved = old ? old : "";
  unsetenv("KILN_DNN_CONV");
  EXPECT_TRUE(dnn_conv_enabled());
  for (const char* on : {"1", "", "yes", "00"}) {
    setenv("KILN_DNN_CONV", on, 1);
    EXPECT_TRUE(dnn_conv_enabled()) << on;
  }
  setenv("KILN_DNN_CONV", "0", 1);
  EXPECT_FALSE(dnn_conv_enabled());
  if (old)
    setenv("KILN_DNN_CONV", saved.c_str(), 1);
  else
    unsetenv("KILN_DNN_CONV");
}

// resnet50's four 3x3 shapes (and the stride-2 ones that start layers 2-4) are taken, with or without a residual,
// FP16 and BF16, every activation cuDNN's pointwise modes have.
TEST(DnnConvOffer, ResnetShapesAreTaken) {
  for (auto [size, ch] : {std::pair<int64_t, int64_t>{56, 64}, {28, 128}, {14, 256}, {7, 512}})
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      DnnConvSpec s = resnet3x3(128, size, ch);
      s.dt = dt;
      EXPECT_EQ(dnn_conv_declined(s), "") << size;
      EXPECT_TRUE(dnn_conv_wanted(s, false));
      EXPECT_FALSE(dnn_conv_wanted(s, true)) << "an own kernel runs it";
      s.res = true;
      EXPECT_EQ(dnn_conv_declined(s), "");
      s.bias = false;
      EXPECT_EQ(dnn_conv_declined(s), "");
    }
  EXPECT_EQ(dnn_conv_declined(resnet3x3(128, 56, 128, 2)), "");
  EXPECT_EQ(resnet3x3(128, 56, 128, 2).p, 28);
  for (ops::Activation a : {ops::Activation::kNone, ops::Activation::kRelu, ops::Activation::kSigmoid,
                            ops::Activation::kSilu, ops::Activation::kGeluErf, ops::Activation::kGeluTanh}) {
    DnnConvSpec s = resnet3x3(2, 15, 24);
    s.act = a;
    EXPECT_EQ(dnn_conv_declined(s), "") << ops::activation_name(a);
  }
}

// Image stems (the NHWC pipeline pads their 3 input channels to 8): the graph takes resnet50's 7x7/2 pad 3 with
// ReLU and efficientnet_b0's 3x3/2 pad 1 with SiLU (GpuDnnConv forces it on them), but they are not offered it
// where the own stem kernels run them (measured slower there); mobilenet_v2's ReLU6 stem (a Clip) is declined.
TEST(DnnConvOffer, ImageStemsStayWithTheOwnKernels) {
  DnnConvSpec resnet = resnet3x3(128, 224, 8, 2);
  resnet.k = 64;
  resnet.r = resnet.s = 7;
  resnet.pad[0] = resnet.pad[1] = resnet.pad_end[0] = resnet.pad_end[1] = 3;
  resnet.p = resnet.q = 112;
  EXPECT_EQ(dnn_conv_declined(resnet), "");
  EXPECT_FALSE(dnn_conv_wanted(resnet, true));
  DnnConvSpec effnet = resnet3x3(128, 224, 8, 2);
  effnet.k = 32;
  effnet.act = ops::Activation::kSilu;
  EXPECT_EQ(effnet.p, 112);
  EXPECT_EQ(dnn_conv_declined(effnet), "");
  EXPECT_FALSE(dnn_conv_wanted(effnet, true));
  effnet.act = ops::Activation::kClip;
  EXPECT_NE(dnn_conv_declined(effnet), "");
}

TEST(DnnConvOffer, DeclinesWhatTheGraphDoesNotTake) {
  auto why = [](auto&& edit) {
    DnnConvSpec s = resnet3x3(2, 56, 64);
    edit(s);
    return dnn_conv_declined(s);
  };
  EXPECT_EQ(why([](DnnConvSpec& s) { s.dt = DataType::kFLOAT; }), "not float16/bfloat16");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.dt = DataType::kINT8; }), "not float16/bfloat16");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.group = 2; }), "grouped");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.prologue = true; }), "a prologue");
  for (ops::Activation a : {ops::Activation::kClip, ops::Activation::kHardSwish, ops::Activation::kLeakyRelu})
    EXPECT_EQ(why([a](DnnConvSpec& s) { s.act = a; }), std::string("activation ") + ops::activation_name(a));
  EXPECT_EQ(why([](DnnConvSpec& s) {
              s.pad_end[0] = 2;
              s.p = 57;
            }),
            "asymmetric pads");
  EXPECT_EQ(why([](DnnConvSpec& s) {
              s.pad_end[1] = 0;
              s.q = 55;
            }),
            "asymmetric pads");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.n = 0; }), "an empty tensor");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.p = 55; }), "output size does not follow from the window");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.stride[1] = 2; }), "output size does not follow from the window");
  EXPECT_EQ(why([](DnnConvSpec& s) { s.dil[0] = 0; }), "bad window");
  // 2^31 elements in Y: 2048 images of 56 x 56 x 512.
  EXPECT_EQ(why([](DnnConvSpec& s) {
              s.n = 2048;
              s.c = s.k = 512;
            }),
            "beyond 32-bit sizes");
  EXPECT_EQ(why([](DnnConvSpec&) {}), "");
}

// The untuned default (the legacy first choice) stays first; the graph plans come next, then the legacy others.
TEST(DnnConvOffer, TacticOrder) {
  const std::vector<std::string> legacy = {"cudnn_fwd_algo1_tc", "cudnn_fwd_algo0_tc", "cudnn_fwd_algo6_tc"};
  const std::vector<std::string> dnn = {"cudnn_conv_graph_0", "cudnn_conv_graph_1"};
  EXPECT_EQ(merge_conv_tactics(legacy, dnn),
            (std::vector<std::string>{"cudnn_fwd_algo1_tc", "cudnn_conv_graph_0", "cudnn_conv_graph_1",
                                      "cudnn_fwd_algo0_tc", "cudnn_fwd_algo6_tc"}));
  EXPECT_EQ(merge_conv_tactics(legacy, {}), legacy);
  EXPECT_EQ(merge_conv_tactics({}, dnn), dnn);
  EXPECT_EQ(merge_conv_tactics({"a"}, dnn),
            (std::vector<std::string>{"a", "cudnn_conv_graph_0", "cudnn_conv_graph_1"}));
}

// The heuristic's first config leads whatever it is; after it the precompiled ones, then the runtime-compiled ones,
// each in the heuristic's order; every config exactly once.
TEST(DnnConvOffer, ConfigOrderPrefersPrecompiledAfterTheFirst) {
  using V = std::vector<size_t>;
  EXPECT_EQ(dnn_conv_config_order({}), V{});
  EXPECT_EQ(dnn_conv_config_order({true}), V{0});
  EXPECT_EQ(dnn_conv_config_order({true, true, false, true, false}), (V{0, 2, 4, 1, 3}));
  EXPECT_EQ(dnn_conv_config_order({false, true, false, false}), (V{0, 2, 3, 1}));
  EXPECT_EQ(dnn_conv_config_order({false, false, false}), (V{0, 1, 2}));
  EXPECT_EQ(dnn_conv_config_order({true, true, true}), (V{0, 1, 2}));
}

int64_t offset(const DnnConvDims& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return a * t.strides[0] + b * t.strides[1] + c * t.strides[2] + d * t.strides[3];
}

// cuDNN addresses element [n, c, h, w] (filter [k, c, r, s]) at the strides' dot product: it must be where Kiln
// stores it, X/Y/Z channels-last and W as [K, R, S, C]; the bias [K] broadcasts over n, h and w.
TEST(DnnConvLayout, StridesAddressNhwcAndKrsc) {
  DnnConvSpec s = resnet3x3(3, 15, 24, 2);
  s.w = 17;
  s.k = 40;
  s.q = (17 + 2 - 3) / 2 + 1;
  ASSERT_EQ(dnn_conv_declined(s), "");
  const DnnConvLayout l = dnn_conv_layout(s);
  EXPECT_EQ(std::vector<int64_t>(l.x.dims, l.x.dims + 4), (std::vector<int64_t>{3, 24, 15, 17}));
  EXPECT_EQ(std::vector<int64_t>(l.w.dims, l.w.dims + 4), (std::vector<int64_t>{40, 24, 3, 3}));
  EXPECT_EQ(std::vector<int64_t>(l.y.dims, l.y.dims + 4), (std::vector<int64_t>{3, 40, 8, 9}));
  EXPECT_EQ(std::vector<int64_t>(l.bias.dims, l.bias.dims + 4), (std::vector<int64_t>{1, 40, 1, 1}));
  std::set<int64_t> seen;
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t h = 0; h < s.h; ++h)
      for (int64_t w = 0; w < s.w; ++w)
        for (int64_t c = 0; c < s.c; ++c) {
          const int64_t o = offset(l.x, n, c, h, w);
          ASSERT_EQ(o, ((n * s.h + h) * s.w + w) * s.c + c);
          seen.insert(o);
        }
  EXPECT_EQ(static_cast<int64_t>(seen.size()), s.n * s.h * s.w * s.c);  // a bijection onto the buffer
  for (int64_t k = 0; k < s.k; ++k)
    for (int64_t r = 0; r < s.r; ++r)
      for (int64_t t = 0; t < s.s; ++t)
        for (int64_t c = 0; c < s.c; ++c) ASSERT_EQ(offset(l.w, k, c, r, t), ((k * s.r + r) * s.s + t) * s.c + c);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t p = 0; p < s.p; ++p)
      for (int64_t q = 0; q < s.q; ++q)
        for (int64_t k = 0; k < s.k; ++k) ASSERT_EQ(offset(l.y, n, k, p, q), ((n * s.p + p) * s.q + q) * s.k + k);
  for (int64_t k = 0; k < s.k; ++k) EXPECT_EQ(offset(l.bias, 0, k, 0, 0), k);
}

// The per-process memory tells problems apart by every field that changes cuDNN's answer.
TEST(DnnConvLayout, ProblemKeysDiffer) {
  std::set<std::string> keys;
  const DnnConvSpec base = resnet3x3(2, 56, 64);
  std::vector<DnnConvSpec> v(12, base);
  v[1].dt = DataType::kBF16;
  v[2].n = 3;
  v[3].res = true;
  v[4].bias = false;
  v[5].act = ops::Activation::kNone;
  v[6].stride[0] = 2;
  v[7].dil[1] = 2;
  v[8].pad[0] = v[8].pad_end[0] = 0;
  v[9].k = 32;
  v[10].c = 32;
  v[11].h = 57;
  for (const DnnConvSpec& s : v) keys.insert(dnn_conv_key(s));
  EXPECT_EQ(keys.size(), v.size());
  EXPECT_EQ(dnn_conv_key(base), dnn_conv_key(resnet3x3(2, 56, 64)));
}

// A stored plan's key (dnn_conv_plan_key): the tactic first, then the problem, then where it was compiled; a
// layer compares the whole key with its own, and a key of the same tactic and problem but another cuDNN or GPU
// still starts with dnn_conv_plan_key(s, r, "") (conv_ops.cpp logs that case louder than other shapes).
TEST(DnnConvLayout, StoredPlanKeys) {
  const DnnConvSpec s = resnet3x3(2, 28, 128);
  const std::string here = "cudnn 91400 | NVIDIA H200 sm_90 132 SMs";
  const std::string k = dnn_conv_plan_key(s, 1, here);
  EXPECT_EQ(k, "cudnn_conv_graph_1 | " + dnn_conv_key(s) + " | " + here);
  EXPECT_NE(k, dnn_conv_plan_key(s, 0, here));
  EXPECT_NE(k, dnn_conv_plan_key(resnet3x3(4, 28, 128), 1, here));
  EXPECT_NE(k, dnn_conv_plan_key(s, 1, "cudnn 91000 | NVIDIA H100 sm_90 132 SMs"));
  EXPECT_EQ(dnn_conv_plan_key(s, 1, "cudnn 1 | another GPU").rfind(dnn_conv_plan_key(s, 1, ""), 0), 0u);
  EXPECT_NE(dnn_conv_plan_key(resnet3x3(4, 28, 128), 1, here).rfind(dnn_conv_plan_key(s, 1, ""), 0), 0u);
}

}  // namespace
}  // namespace kiln::cuda
