// Focused tests of LinearAttention and CausalConvWithState against values worked out by hand in this file.
#include <gtest/gtest.h>

#include <cmath>

#include "op_test_util.h"
#include "ops/op.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

using ops::testing::run_op;

void expect_values(const Tensor& got, const std::vector<double>& want, double tol = 1e-5) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got.get_f64(i), want[i], tol) << "element " << i;
}

}  // namespace

// One head of size 1, two steps: the state accumulates k*v and each output reads q*state.
TEST(LinearAttention, LinearRuleByHand) {
  Tensor q = Tensor::from_vector<float>({1, 2, 1}, {1, 2});
  Tensor k = Tensor::from_vector<float>({1, 2, 1}, {3, 4});
  Tensor v = Tensor::from_vector<float>({1, 2, 1}, {5, 6});
  Attributes a;
  a.set("q_num_heads", int64_t{1});
  a.set("kv_num_heads", int64_t{1});
  a.set("scale", 1.0f);
  a.set("update_rule", std::string("linear"));
  auto r = run_op("LinearAttention", a, {&q, &k, &v}, 2, 27);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // State 3*5 = 15 after step 0, 15 + 4*6 = 39 after step 1.
  expect_values(r.outputs[0], {15, 78});
  expect_values(r.outputs[1], {39});
  EXPECT_EQ(static_dims(r.inferred[1].shape), (std::vector<int64_t>{1, 1, 1, 1}));
}

// Past state 2 halved by decay ln(0.5) to 1; delta rule: retrieved 1*2, corrected value 0.5*(3-2); state 1 + 2*0.5.
TEST(LinearAttention, GatedDeltaByHand) {
  Tensor q = Tensor::from_vector<float>({1, 1, 1}, {1});
  Tensor k = Tensor::from_vector<float>({1, 1, 1}, {2});
  Tensor v = Tensor::from_vector<float>({1, 1, 1}, {3});
  Tensor past = Tensor::from_vector<float>({1, 1, 1, 1}, {2});
  Tensor decay = Tensor::from_vector<float>({1, 1, 1}, {static_cast<float>(std::log(0.5))});
  Tensor beta = Tensor::from_vector<float>({1, 1, 1}, {0.5f});
  Attributes a;
  a.set("q_num_heads", int64_t{1});
  a.set("kv_num_heads", int64_t{1});
  a.set("scale", 1.0f);
  auto r = run_op("LinearAttention", a, {&q, &k, &v, &past, &decay, &beta}, 2, 27);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  expect_values(r.outputs[0], {2});
  expect_values(r.outputs[1], {2});
}

// Kernel {1, 2}, bias 1, past state {4}: padded input 4,1,2,3.
TEST(CausalConvWithState, BiasAndPastStateByHand) {
  Tensor x = Tensor::from_vector<float>({1, 1, 3}, {1, 2, 3});
  Tensor w = Tensor::from_vector<float>({1, 1, 2}, {1, 2});
  Tensor b = Tensor::from_vector<float>({1}, {1});
  Tensor past = Tensor::from_vector<float>({1, 1, 1}, {4});
  auto r = run_op("CausalConvWithState", Attributes{}, {&x, &w, &b, &past}, 2, 27);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  expect_values(r.outputs[0], {1 + 4 + 2, 1 + 1 + 4, 1 + 2 + 6});
  expect_values(r.outputs[1], {3});

  Attributes bad;
  bad.set("activation", std::string("relu"));
  auto e = run_op("CausalConvWithState", bad, {&x, &w}, 2, 27);
  ASSERT_FALSE(e.status.ok());
  EXPECT_NE(e.status.message().find("'none', 'silu', 'swish'"), std::string::npos) << e.status.message();
}
