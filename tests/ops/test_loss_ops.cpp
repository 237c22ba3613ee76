// Focused tests of the loss, integer, unpooling, training-mode and TfIdf operators against values worked out by
// hand (or by naive formulas) in this file.
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/op.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

using ops::testing::RunResult;
using ops::testing::run_op;


Tensor f32(std::vector<int64_t> shape, std::vector<float> v) { return Tensor::from_vector<float>(std::move(shape), v); }
Tensor i64(std::vector<int64_t> shape, std::vector<int64_t> v) { return Tensor::from_vector<int64_t>(std::move(shape), v); }
Tensor u8(std::vector<int64_t> shape, std::vector<uint8_t> v) { return Tensor::from_vector<uint8_t>(std::move(shape), v); }

}  // namespace

TEST(LossOps, NllMeanWithWeightAndIgnoreIndex) {
  Tensor x = f32({3, 3}, {-0.1f, -2.0f, -3.0f, -1.5f, -0.5f, -2.5f, -0.7f, -0.9f, -1.2f});
  Tensor target = i64({3}, {2, 1, 0});
  Tensor weight = f32({3}, {0.5f, 2.0f, 4.0f});
  Attributes a;
  a.set("ignore_index", int64_t{1});  // drops sample 1 from both the sum and the weight total
  auto r = run_op("NegativeLogLikelihoodLoss", a, {&x, &target, &weight});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].rank(), 0);
  EXPECT_TRUE(r.inferred[0].shape.empty());
  const double expect = (3.0 * 4.0 + 0.7 * 0.5) / (4.0 + 0.5);
  EXPECT_NEAR(r.outputs[0].get_f64(0), expect, 1e-6);
}

TEST(LossOps, NllNoneKeepsExtraDims) {
  // [N=1, C=2, d1=2]: position 0 picks class 1, position 1 picks class 0.
  Tensor x = f32({1, 2, 2}, {-1.0f, -2.0f, -3.0f, -4.0f});
  Tensor target = i64({1, 2}, {1, 0});
  Attributes a;
  a.set("reduction", "none");
  auto r = run_op("NegativeLogLikelihoodLoss", a, {&x, &target, nullptr});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 2}));
  EXPECT_FLOAT_EQ(r.outputs[0].data<float>()[0], 3.0f);
  EXPECT_FLOAT_EQ(r.outputs[0].data<float>()[1], 2.0f);
}

TEST(LossOps, NllTargetOutOfRangeIsAnError) {
  Tensor x = f32({1, 2}, {-1.0f, -2.0f});
  Tensor target = i64({1}, {5});
  auto r = run_op("NegativeLogLikelihoodLoss", Attributes{}, {&x, &target});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("outside [0, 2)"), std::string::npos) << r.status.message();
}

TEST(LossOps, SoftmaxCrossEntropySumWithLogProb) {
  const std::vector<float> sv = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f, 2.0f};
  Tensor scores = f32({2, 3}, sv);
  Tensor labels = Tensor::from_vector<int32_t>({2}, {0, 2});
  Attributes a;
  a.set("reduction", "sum");
  auto r = run_op("SoftmaxCrossEntropyLoss", a, {&scores, &labels}, 2);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  double loss = 0;
  for (int n = 0; n < 2; ++n) {
    double z = 0;
    for (int c = 0; c < 3; ++c) z += std::exp(static_cast<double>(sv[n * 3 + c]));
    for (int c = 0; c < 3; ++c)
      EXPECT_NEAR(r.outputs[1].data<float>()[n * 3 + c], sv[n * 3 + c] - std::log(z), 1e-6);
    const int label = n == 0 ? 0 : 2;
    loss -= sv[n * 3 + label] - std::log(z);
  }
  EXPECT_EQ(r.outputs[1].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_NEAR(r.outputs[0].get_f64(0), loss, 1e-5);
}

TEST(LossOps, BadReductionNamesTheAllowedValues) {
  Tensor x = f32({1, 2}, {-1.0f, -2.0f});
  Tensor target = i64({1}, {0});
  Attributes a;
  a.set("reduction", "avg");
  for (const char* op : {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"}) {
    auto r = run_op(op, a, {&x, &target});
    ASSERT_FALSE(r.status.ok()) << op;
    EXPECT_NE(r.status.message().find("none, sum, mean"), std::string::npos) << r.status.message();
    EXPECT_NE(r.status.message().find("avg"), std::string::npos) << r.status.message();
  }
}

TEST(IntegerOps, ConvIntegerByHand) {
  // With the zero points removed, x is 0..8 in a 3x3 grid and w is [[0, 1], [2, 3]].
  Tensor x = u8({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = u8({1, 1, 2, 2}, {2, 3, 4, 5});
  Tensor xz = u8({}, {1});
  Tensor wz = u8({1}, {2});
  auto r = run_op("ConvInteger", Attributes{}, {&x, &w, &xz, &wz}, 1, 10);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].dtype(), DataType::kINT32);
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 1, 2, 2}));
  const int32_t* y = r.outputs[0].data<int32_t>();
  EXPECT_EQ(y[0], 0 * 0 + 1 * 1 + 3 * 2 + 4 * 3);
  EXPECT_EQ(y[1], 1 * 0 + 2 * 1 + 4 * 2 + 5 * 3);
  EXPECT_EQ(y[2], 3 * 0 + 4 * 1 + 6 * 2 + 7 * 3);
  EXPECT_EQ(y[3], 4 * 0 + 5 * 1 + 7 * 2 + 8 * 3);

  // Padding stands for the zero point (real zero): the top-right output sees only x(0,2) under w(1,0).
  Attributes pad;
  pad.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  auto rp = run_op("ConvInteger", pad, {&x, &w, &xz, &wz}, 1, 10);
  ASSERT_TRUE(rp.status.ok()) << rp.status.message();
  ASSERT_EQ(rp.outputs[0].shape(), (std::vector<int64_t>{1, 1, 4, 4}));
  EXPECT_EQ(rp.outputs[0].data<int32_t>()[3], 2 * 2);
}

TEST(IntegerOps, MatMulIntegerPerRowAndColumnZeroPoints) {
  Tensor a = u8({2, 2}, {3, 4, 5, 6});
  Tensor b = u8({2, 2}, {1, 2, 3, 4});
  Tensor az = u8({2}, {1, 2});  // rows of A become [2, 3] and [3, 4]
  Tensor bz = u8({2}, {1, 0});  // B becomes [[0, 2], [2, 4]]
  auto r = run_op("MatMulInteger", Attributes{}, {&a, &b, &az, &bz}, 1, 10);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  const int32_t* y = r.outputs[0].data<int32_t>();
  EXPECT_EQ(y[0], 2 * 0 + 3 * 2);
  EXPECT_EQ(y[1], 2 * 2 + 3 * 4);
  EXPECT_EQ(y[2], 3 * 0 + 4 * 2);
  EXPECT_EQ(y[3], 3 * 2 + 4 * 4);
}

TEST(UnpoolOps, MaxUnpoolScattersToIndices) {
  Tensor x = f32({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor ind = i64({1, 1, 2, 2}, {0, 3, 10, 15});
  Attributes a;
  a.set("kernel_shape", std::vector<int64_t>{2, 2});
  a.set("strides", std::vector<int64_t>{2, 2});
  auto r = run_op("MaxUnpool", a, {&x, &ind}, 1, 11);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 1, 4, 4}));
  for (int i = 0; i < 16; ++i) {
    float expect = i == 0 ? 1 : i == 3 ? 2 : i == 10 ? 3 : i == 15 ? 4 : 0;
    EXPECT_EQ(r.outputs[0].data<float>()[i], expect) << i;
  }
  // A larger output_shape keeps each value at its (row, col), padding the ends of the axes.
  Tensor os = i64({4}, {1, 1, 5, 5});
  auto r2 = run_op("MaxUnpool", a, {&x, &ind, &os}, 1, 11);
  ASSERT_TRUE(r2.status.ok()) << r2.status.message();
  EXPECT_EQ(r2.outputs[0].data<float>()[2 * 5 + 2], 3.0f);
  EXPECT_EQ(r2.outputs[0].data<float>()[3 * 5 + 3], 4.0f);
}

TEST(TrainingOps, BatchNormTrainingUsesBatchStatistics) {
  Tensor x = f32({2, 1, 2}, {1, 2, 3, 6});  // mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5
  Tensor scale = f32({1}, {1}), bias = f32({1}, {0}), mean = f32({1}, {0}), var = f32({1}, {1});
  Attributes a;
  a.set("training_mode", int64_t{1});
  a.set("momentum", 0.9f);
  auto r = run_op("BatchNormalization", a, {&x, &scale, &bias, &mean, &var}, 3, 15);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  const float inv = 1.0f / std::sqrt(3.5f + 1e-5f);
  EXPECT_NEAR(r.outputs[0].data<float>()[0], (1 - 3) * inv, 1e-5);
  EXPECT_NEAR(r.outputs[0].data<float>()[3], (6 - 3) * inv, 1e-5);
  EXPECT_NEAR(r.outputs[1].data<float>()[0], 0 * 0.9 + 3 * 0.1, 1e-6);
  EXPECT_NEAR(r.outputs[2].data<float>()[0], 1 * 0.9 + 3.5 * 0.1, 1e-6);
}

TEST(TrainingOps, DropoutTraining) {
  Tensor x = f32({64}, std::vector<float>(64, 1.5f));
  Tensor train = Tensor::from_vector<bool>({}, {true});
  Tensor zero = f32({}, {0.0f});
  auto r0 = run_op("Dropout", Attributes{}, {&x, &zero, &train}, 2, 13);
  ASSERT_TRUE(r0.status.ok()) << r0.status.message();
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(r0.outputs[0].data<float>()[i], 1.5f);
    EXPECT_TRUE(r0.outputs[1].data<bool>()[i]);
  }
  Tensor half = f32({}, {0.5f});
  Attributes seeded;
  seeded.set("seed", int64_t{7});
  auto r1 = run_op("Dropout", seeded, {&x, &half, &train}, 2, 13);
  auto r2 = run_op("Dropout", seeded, {&x, &half, &train}, 2, 13);
  ASSERT_TRUE(r1.status.ok()) << r1.status.message();
  int kept = 0;
  for (int i = 0; i < 64; ++i) {
    const bool keep = r1.outputs[1].data<bool>()[i];
    kept += keep;
    EXPECT_EQ(r1.outputs[0].data<float>()[i], keep ? 3.0f : 0.0f);  // kept values scale by 1 / (1 - 0.5)
    EXPECT_EQ(keep, r2.outputs[1].data<bool>()[i]) << "the same seed must give the same mask";
  }
  EXPECT_GT(kept, 16);
  EXPECT_LT(kept, 48);
}

TEST(TfIdfOps, CountsUnigramsOnceAcrossSkips) {
  Tensor x = i64({6}, {1, 2, 3, 1, 2, 4});
  Attributes a;
  a.set("min_gram_length", int64_t{1});
  a.set("max_gram_length", int64_t{2});
  a.set("max_skip_count", int64_t{1});
  a.set("mode", "TF");
  a.set("pool_int64s", std::vector<int64_t>{1, 4, 1, 2, 1, 3});  // unigrams 1, 4; bigrams (1,2), (1,3)
  a.set("ngram_counts", std::vector<int64_t>{0, 2});
  a.set("ngram_indexes", std::vector<int64_t>{0, 1, 2, 3});
  auto r = run_op("TfIdfVectorizer", a, {&x}, 1, 9);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{4}));
  const float* y = r.outputs[0].data<float>();
  EXPECT_EQ(y[0], 2.0f);  // "1" twice, not once per skip distance
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[2], 2.0f);  // (1,2) adjacent twice
  EXPECT_EQ(y[3], 1.0f);  // (1,3) only with one token skipped
}
