// Tests of Swish, AffineGrid and TensorScatter against values worked out by hand in this file.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "op_test_util.h"
#include "ops/op.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

using ops::testing::run_op;

Tensor f32(std::vector<int64_t> shape, std::vector<float> v) { return Tensor::from_vector<float>(std::move(shape), v); }
Tensor i64(std::vector<int64_t> shape, std::vector<int64_t> v) { return Tensor::from_vector<int64_t>(std::move(shape), v); }

}  // namespace

TEST(ExtraOps, SwishScalesTheSigmoid) {
  Tensor x = f32({3}, {0.f, 2.f, -1.f});
  Attributes a;
  a.set("alpha", 0.5f);
  auto r = run_op("Swish", a, {&x}, 1, 24);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_NEAR(r.outputs[0].get_f64(0), 0.0, 1e-6);
  EXPECT_NEAR(r.outputs[0].get_f64(1), 2.0 / (1.0 + std::exp(-1.0)), 1e-6);   // sigmoid(0.5 * 2)
  EXPECT_NEAR(r.outputs[0].get_f64(2), -1.0 / (1.0 + std::exp(0.5)), 1e-6);   // sigmoid(0.5 * -1)
}

TEST(ExtraOps, AffineGridIdentityHalfPixelCenters) {
  // Identity theta on a 2x2 grid: without align_corners the centres sit at -0.5 and 0.5.
  Tensor theta = f32({1, 2, 3}, {1.f, 0.f, 0.f, 0.f, 1.f, 0.f});
  Tensor size = i64({4}, {1, 1, 2, 2});
  auto r = run_op("AffineGrid", Attributes{}, {&theta, &size}, 1, 20);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 2, 2, 2}));
  EXPECT_EQ(shape_to_string(r.inferred[0].shape), "[1,2,2,2]");
  const float want[8] = {-0.5f, -0.5f, 0.5f, -0.5f, -0.5f, 0.5f, 0.5f, 0.5f};  // (x, y) per point, row-major
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(r.outputs[0].get_f64(i), want[i], 1e-6) << i;

  Attributes bad;
  bad.set("align_corners", int64_t{2});
  auto rb = run_op("AffineGrid", bad, {&theta, &size}, 1, 20);
  ASSERT_FALSE(rb.status.ok());
  EXPECT_NE(rb.status.message().find("allowed values are 0, 1"), std::string::npos) << rb.status.message();
}

TEST(ExtraOps, TensorScatterCircularWraps) {
  // Writing two steps at position 2 of a 3-long cache wraps the second one to position 0.
  Tensor past = f32({1, 3, 1}, {1.f, 2.f, 3.f});
  Tensor update = f32({1, 2, 1}, {9.f, 8.f});
  Tensor idx = i64({1}, {2});
  Attributes a;
  a.set("mode", std::string("circular"));
  auto r = run_op("TensorScatter", a, {&past, &update, &idx}, 1, 24);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].to_f64_vector(), (std::vector<double>{8.0, 2.0, 9.0}));

  Attributes bad;
  bad.set("mode", std::string("ring"));
  auto rb = run_op("TensorScatter", bad, {&past, &update, &idx}, 1, 24);
  ASSERT_FALSE(rb.status.ok());
  EXPECT_NE(rb.status.message().find("allowed values are linear, circular"), std::string::npos);
}
