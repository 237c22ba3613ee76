// Focused tests of the transformer ops (Attention, RMSNormalization, RotaryEmbedding, CumProd, CenterCropPad, BitCast)
// against values worked out independently in this file.
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/op.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

using ops::testing::RunResult;
using ops::testing::run_op;


void expect_values(const Tensor& got, const std::vector<double>& want, double tol = 1e-5) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got.get_f64(i), want[i], tol) << "element " << i;
}

}  // namespace

// One head, two queries, two keys: scores by hand, softmax by hand, weighted values by hand.
TEST(Attention, SingleHeadByHand) {
  Tensor q = Tensor::from_vector<float>({1, 1, 2, 2}, {1, 0, 0, 1});
  Tensor k = Tensor::from_vector<float>({1, 1, 2, 2}, {1, 0, 0, 2});
  Tensor v = Tensor::from_vector<float>({1, 1, 2, 1}, {10, 20});
  Attributes a;
  a.set("scale", 1.0f);
  auto r = run_op("Attention", a, {&q, &k, &v}, 1, 23);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // Query 0 scores {1, 0}; query 1 scores {0, 2}.
  const double p0 = std::exp(1.0) / (std::exp(1.0) + 1.0);
  const double p1 = 1.0 / (1.0 + std::exp(2.0));
  expect_values(r.outputs[0], {p0 * 10 + (1 - p0) * 20, p1 * 10 + (1 - p1) * 20}, 1e-4);
  EXPECT_EQ(static_dims(r.inferred[0].shape), (std::vector<int64_t>{1, 1, 2, 1}));
}

// Causal masking leaves query 0 only key 0; the 4th output (mode 3) exposes the probabilities.
TEST(Attention, CausalWithSoftmaxOutput) {
  Tensor q = Tensor::from_vector<float>({1, 1, 2, 2}, {1, 0, 0, 1});
  Tensor k = Tensor::from_vector<float>({1, 1, 2, 2}, {1, 0, 0, 2});
  Tensor v = Tensor::from_vector<float>({1, 1, 2, 1}, {10, 20});
  Attributes a;
  a.set("scale", 1.0f);
  a.set("is_causal", int64_t{1});
  a.set("qk_matmul_output_mode", int64_t{3});
  auto r = run_op("Attention", a, {&q, &k, &v}, 4, 23);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  const double p1 = 1.0 / (1.0 + std::exp(2.0));
  expect_values(r.outputs[0], {10, p1 * 10 + (1 - p1) * 20}, 1e-4);
  expect_values(r.outputs[3], {1, 0, p1, 1 - p1}, 1e-5);
  // present_key equals K when there is no past.
  expect_values(r.outputs[1], {1, 0, 0, 2});
}

TEST(Attention, RejectsBadModeListingAllowedValues) {
  Tensor q = Tensor::from_vector<float>({1, 1, 1, 1}, {1});
  Attributes a;
  a.set("qk_matmul_output_mode", int64_t{7});
  auto r = run_op("Attention", a, {&q, &q, &q}, 1, 23);
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("{0, 1, 2, 3}"), std::string::npos) << r.status.message();
}

TEST(RMSNormalization, ThreeByFourByHand) {
  std::vector<float> xs = {1, 2, 3, 4, -1, 0, 1, 0, 2, 2, 2, 2};
  Tensor x = Tensor::from_vector<float>({3, 4}, xs);
  Tensor w = Tensor::from_vector<float>({4}, {1, 2, 1, 0.5f});
  Attributes a;
  a.set("epsilon", 0.0f);
  auto r = run_op("RMSNormalization", a, {&x, &w}, 1, 23);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // Row RMS: sqrt(30/4), sqrt(2/4), sqrt(16/4).
  const double rms[3] = {std::sqrt(7.5), std::sqrt(0.5), 2.0};
  const double ws[4] = {1, 2, 1, 0.5};
  std::vector<double> want;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) want.push_back(xs[i * 4 + j] / rms[i] * ws[j]);
  expect_values(r.outputs[0], want, 1e-5);
}

// A 90-degree rotation (cos 0, sin 1) maps each pair (x1, x2) to (-x2, x1).
TEST(RotaryEmbedding, QuarterTurnNonInterleaved) {
  Tensor x = Tensor::from_vector<float>({1, 1, 1, 4}, {1, 2, 3, 4});
  Tensor c = Tensor::from_vector<float>({1, 1, 2}, {0, 1});
  Tensor s = Tensor::from_vector<float>({1, 1, 2}, {1, 0});
  auto r = run_op("RotaryEmbedding", Attributes{}, {&x, &c, &s}, 1, 23);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // Pairs are (x0, x2) and (x1, x3): the first turns by 90 degrees, the second not at all.
  expect_values(r.outputs[0], {-3, 2, 1, 4});
}

TEST(CumProd, ExclusiveReverse) {
  Tensor x = Tensor::from_vector<int32_t>({4}, {1, 2, 3, 4});
  Tensor axis = Tensor::from_vector<int64_t>({}, {0});
  Attributes a;
  a.set("exclusive", int64_t{1});
  a.set("reverse", int64_t{1});
  auto r = run_op("CumProd", a, {&x, &axis}, 1, 26);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  expect_values(r.outputs[0], {24, 12, 4, 1});
}

TEST(CenterCropPad, CropsOneAxisAndPadsAnother) {
  Tensor x = Tensor::from_vector<float>({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor shape = Tensor::from_vector<int64_t>({2}, {1, 4});
  auto r = run_op("CenterCropPad", Attributes{}, {&x, &shape}, 1, 18);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(static_dims(r.inferred[0].shape), (std::vector<int64_t>{1, 4}));
  expect_values(r.outputs[0], {0, 3, 4, 0});
}

TEST(BitCast, FloatOneIsItsIeeeBits) {
  Tensor x = Tensor::from_vector<float>({1}, {1.0f});
  Attributes a;
  a.set("to", int64_t{6});  // INT32
  auto r = run_op("BitCast", a, {&x}, 1, 26);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].data<int32_t>()[0], 0x3f800000);
}

// A left window of 0 keeps each query to its own position (plus the causal frontier); before opset 25 the
// attribute does not exist and is refused.
TEST(Attention, LeftWindowNeedsOpset25) {
  Tensor q = Tensor::from_vector<float>({1, 1, 2, 1}, {1, 1});
  Tensor v = Tensor::from_vector<float>({1, 1, 2, 1}, {10, 20});
  Attributes a;
  a.set("left_window_size", int64_t{0});
  EXPECT_FALSE(run_op("Attention", a, {&q, &q, &v}, 1, 24).status.ok());
  auto r = run_op("Attention", a, {&q, &q, &v}, 1, 25);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // The left bound alone allows keys j >= i: query 0 sees both (equal scores), query 1 only key 1.
  const double half = 0.5;
  expect_values(r.outputs[0], {half * 10 + half * 20, 20}, 1e-5);
}
