// Focused tests of the NN operators (Conv, ConvTranspose, pools, MatMul/Gemm, norms, reductions, Pad, Resize)
// against values computed independently by naive loops in this file.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "op_test_util.h"
#include "ops/op.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

using ops::testing::RunResult;
using ops::testing::run_op;


Tensor random_tensor(std::vector<int64_t> shape, uint32_t seed) {
  Tensor t(DataType::kFLOAT, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

// Straightforward 2-D grouped convolution, the reference the optimized kernels must agree with.
Tensor naive_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t group, int64_t stride, int64_t pad,
                    int64_t dil) {
  int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  int64_t m = w.dim(0), kh = w.dim(2), kw = w.dim(3), cg = c / group, mg = m / group;
  int64_t oh = (h + 2 * pad - ((kh - 1) * dil + 1)) / stride + 1;
  int64_t ow = (wd + 2 * pad - ((kw - 1) * dil + 1)) / stride + 1;
  Tensor y(DataType::kFLOAT, {n, m, oh, ow});
  auto X = [&](int64_t a, int64_t bb, int64_t i, int64_t j) { return x.data<float>()[((a * c + bb) * h + i) * wd + j]; };
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t mi = 0; mi < m; ++mi)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b ? b->data<float>()[mi] : 0.0;
          int64_t g = mi / mg;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t p = 0; p < kh; ++p)
              for (int64_t q = 0; q < kw; ++q) {
                int64_t ii = i * stride - pad + p * dil, jj = j * stride - pad + q * dil;
                if (ii < 0 || ii >= h || jj < 0 || jj >= wd) continue;
                acc += X(ni, g * cg + ci, ii, jj) * w.data<float>()[((mi * cg + ci) * kh + p) * kw + q];
              }
          y.data<float>()[((ni * m + mi) * oh + i) * ow + j] = static_cast<float>(acc);
        }
  return y;
}

void expect_close(const Tensor& got, const Tensor& want, float tol = 1e-4f) {
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.numel(); ++i)
    ASSERT_NEAR(got.get_f64(i), want.get_f64(i), tol * (1 + std::fabs(want.get_f64(i)))) << "element " << i;
}

Attributes conv_attrs(int64_t group, int64_t stride, int64_t pad, int64_t dil) {
  Attributes a;
  a.set("group", group);
  a.set("strides", std::vector<int64_t>{stride, stride});
  a.set("pads", std::vector<int64_t>{pad, pad, pad, pad});
  a.set("dilations", std::vector<int64_t>{dil, dil});
  return a;
}

}  // namespace

TEST(Conv, MatchesNaiveLoopWithStridePadDilation) {
  Tensor x = random_tensor({2, 3, 9, 8}, 1), w = random_tensor({4, 3, 3, 3}, 2), b = random_tensor({4}, 3);
  auto r = run_op("Conv", conv_attrs(1, 2, 1, 2), {&x, &w, &b});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  expect_close(r.outputs[0], naive_conv2d(x, w, &b, 1, 2, 1, 2));
}

TEST(Conv, GroupedAndDepthwiseMatchNaiveLoop) {
  Tensor x = random_tensor({1, 4, 7, 7}, 4);
  Tensor wg = random_tensor({6, 2, 3, 3}, 5);  // 2 groups, 2 input channels each
  auto r = run_op("Conv", conv_attrs(2, 1, 1, 1), {&x, &wg});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  expect_close(r.outputs[0], naive_conv2d(x, wg, nullptr, 2, 1, 1, 1));

  Tensor wd = random_tensor({8, 1, 3, 3}, 6), bd = random_tensor({8}, 7);  // depthwise, multiplier 2
  r = run_op("Conv", conv_attrs(4, 2, 1, 1), {&x, &wd, &bd});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  expect_close(r.outputs[0], naive_conv2d(x, wd, &bd, 4, 2, 1, 1));
}

TEST(Conv, PointwiseSkipsIm2colAndStaysExact) {
  Tensor x = random_tensor({1, 5, 4, 3}, 8), w = random_tensor({7, 5, 1, 1}, 9);
  auto r = run_op("Conv", conv_attrs(1, 1, 0, 1), {&x, &w});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  expect_close(r.outputs[0], naive_conv2d(x, w, nullptr, 1, 1, 0, 1));
}

TEST(Conv, SymbolicBatchPassesThroughAndSameUpperKeepsSize) {
  Tensor x = random_tensor({1, 3, 5, 5}, 10), w = random_tensor({2, 3, 3, 3}, 11);
  Attributes a;
  a.set("auto_pad", "SAME_UPPER");
  a.set("strides", std::vector<int64_t>{2, 2});
  auto r = run_op("Conv", a, {&x, &w}, 1, 17, {Shape{Dim::symbol("N"), 3, 5, 5}});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  const Shape& s = r.inferred[0].shape;
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].sym, "N");
  EXPECT_EQ(s[2].value, 3);
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 2, 3, 3}));
}

TEST(Conv, BadAutoPadListsAllowedValues) {
  Tensor x = random_tensor({1, 1, 4, 4}, 12), w = random_tensor({1, 1, 3, 3}, 13);
  Attributes a;
  a.set("auto_pad", "FOO");
  auto r = run_op("Conv", a, {&x, &w});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("NOTSET, SAME_UPPER, SAME_LOWER, VALID"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("FOO"), std::string::npos);
}

TEST(ConvTranspose, IsTheAdjointOfConv) {
  // <conv(x), y> == <x, convT(y)> for the same weights, stride and pads.
  Tensor x = random_tensor({1, 3, 7, 7}, 14), w = random_tensor({2, 3, 3, 3}, 15);
  auto r = run_op("Conv", conv_attrs(1, 2, 1, 1), {&x, &w});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  Tensor y = random_tensor(r.outputs[0].shape(), 16);
  Attributes a = conv_attrs(1, 2, 1, 1);
  a.set("output_shape", std::vector<int64_t>{7, 7});
  a.erase("pads");
  auto rt = run_op("ConvTranspose", a, {&y, &w});
  ASSERT_TRUE(rt.status.ok()) << rt.status.to_string();
  ASSERT_EQ(rt.outputs[0].shape(), x.shape());
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < y.numel(); ++i) lhs += r.outputs[0].data<float>()[i] * y.data<float>()[i];
  for (int64_t i = 0; i < x.numel(); ++i) rhs += x.data<float>()[i] * rt.outputs[0].data<float>()[i];
  EXPECT_NEAR(lhs, rhs, 1e-3);
}

TEST(Pool, MaxPoolIndicesAndAveragePoolCountIncludePad) {
  Tensor x = Tensor::from_vector<float>({1, 1, 3, 3}, {1, 2, 3, 4, 9, 6, 7, 8, 5});
  Attributes a;
  a.set("kernel_shape", std::vector<int64_t>{2, 2});
  auto r = run_op("MaxPool", a, {&x}, 2);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{9, 9, 9, 9}));
  EXPECT_EQ(r.outputs[1].to_i64_vector(), (std::vector<int64_t>{4, 4, 4, 4}));

  a.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  a.set("strides", std::vector<int64_t>{2, 2});
  a.set("count_include_pad", int64_t{1});
  r = run_op("AveragePool", a, {&x});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  // Padded windows still divide by 4: {1}, {2,3}, {4,7}, then the all-real {9,6,8,5}.
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{1 / 4.0, 5 / 4.0, 11 / 4.0, 28 / 4.0}));
}

TEST(MatMul, BroadcastsBatchAndHandles1D) {
  Tensor a = random_tensor({2, 1, 3, 4}, 17), b = random_tensor({3, 4, 5}, 18);
  auto r = run_op("MatMul", {}, {&a, &b});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{2, 3, 3, 5}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t m = 0; m < 3; ++m)
        for (int64_t n = 0; n < 5; ++n) {
          double acc = 0;
          for (int64_t k = 0; k < 4; ++k)
            acc += a.data<float>()[(i * 3 + m) * 4 + k] * b.data<float>()[(j * 4 + k) * 5 + n];
          EXPECT_NEAR(r.outputs[0].data<float>()[((i * 3 + j) * 3 + m) * 5 + n], acc, 1e-5);
        }
  Tensor v = Tensor::from_vector<float>({4}, {1, 2, 3, 4});
  Tensor mtx = Tensor::from_vector<float>({4, 2}, {1, 0, 0, 1, 1, 0, 0, 1});
  r = run_op("MatMul", {}, {&v, &mtx});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{4, 6}));
}

TEST(Gemm, TransposesScalesAndBroadcastsBias) {
  Tensor a = Tensor::from_vector<float>({2, 2}, {1, 2, 3, 4});  // used transposed: [[1,3],[2,4]]
  Tensor b = Tensor::from_vector<float>({2, 2}, {1, 0, 0, 1});
  Tensor c = Tensor::from_vector<float>({2}, {10, 20});
  Attributes at;
  at.set("transA", int64_t{1});
  at.set("alpha", 2.0f);
  at.set("beta", 0.5f);
  auto r = run_op("Gemm", at, {&a, &b, &c});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{7, 16, 9, 18}));
}

TEST(Norm, LayerNormNormalizesLastAxis) {
  Tensor x = Tensor::from_vector<float>({2, 2}, {1, 3, 2, 2});
  Tensor s = Tensor::from_vector<float>({2}, {1, 1});
  auto r = run_op("LayerNormalization", {}, {&x, &s}, 3);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  expect_close(r.outputs[0], Tensor::from_vector<float>({2, 2}, {-1, 1, 0, 0}));
  expect_close(r.outputs[1], Tensor::from_vector<float>({2, 1}, {2, 2}));
}

TEST(Reduce, AxesInputAndKeepdims) {
  Tensor x = Tensor::from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor axes = Tensor::from_vector<int64_t>({1}, {-1});
  Attributes a;
  a.set("keepdims", int64_t{0});
  auto r = run_op("ReduceSum", a, {&x, &axes}, 1, 13);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{6, 15}));
  Attributes b;
  b.set("axes", std::vector<int64_t>{0});
  r = run_op("ReduceLogSumExp", b, {&x}, 1, 13);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 3}));
  EXPECT_NEAR(r.outputs[0].get_f64(0), std::log(std::exp(1.0) + std::exp(4.0)), 1e-5);
}

TEST(Pad, ReflectAndEdgeModes) {
  Tensor x = Tensor::from_vector<float>({3}, {1, 2, 3});
  Tensor pads = Tensor::from_vector<int64_t>({2}, {2, 1});
  Attributes a;
  a.set("mode", "reflect");
  auto r = run_op("Pad", a, {&x, &pads}, 1, 13);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{3, 2, 1, 2, 3, 2}));
  a.set("mode", "edge");
  r = run_op("Pad", a, {&x, &pads}, 1, 13);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{1, 1, 1, 2, 3, 3}));
  a.set("mode", "bogus");
  r = run_op("Pad", a, {&x, &pads}, 1, 13);
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("constant, reflect, edge"), std::string::npos);
}

TEST(Resize, LinearHalfPixelUpsample) {
  Tensor x = Tensor::from_vector<float>({1, 1, 1, 2}, {0, 4});
  Tensor scales = Tensor::from_vector<float>({4}, {1, 1, 1, 2});
  Attributes a;
  a.set("mode", "linear");
  auto r = run_op("Resize", a, {&x, nullptr, &scales}, 1, 13, {Shape{Dim::symbol("N"), 1, 1, 2}});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.inferred[0].shape[0].sym, "N");
  EXPECT_EQ(r.inferred[0].shape[3].value, 4);
  // half_pixel: x_in = (x + 0.5) / 2 - 0.5 -> -0.25, 0.25, 0.75, 1.25, clamped at the borders.
  expect_close(r.outputs[0], Tensor::from_vector<float>({1, 1, 1, 4}, {0, 1, 3, 4}));
}
