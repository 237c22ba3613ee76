// The CUTLASS GELU epilogue's activation (backends/cuda/gelu_erfc.h), host build: against erf-GELU in double over
// x in [-10, 10]. Its relative error stays within 2e-6 for |x| <= 4 and 1.5e-5 beyond (there x^2's rounding in
// the exponent dominates), where the usual float32 form 0.5 x (1 + erff(x / sqrt 2)) loses all its digits beyond
// x = -6 to cancellation; and its float16 rounding agrees with the correctly rounded GELU as often as that form's
// does, or more often.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backends/cuda/gelu_erfc.h"
#include "common/tensor.h"

namespace {

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
// Below x = -1 the double form itself cancels; x Phi(x) through erfc keeps every digit.
double gelu_exact(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
float gelu_erff_form(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678f)); }
float to_half_and_back(float v) { return kiln::half_to_float(kiln::float_to_half(v)); }

TEST(GeluErfcForm, RelativeErrorAndFloat16Rounding) {
  double worst = 0, worst_x = 0, worst_tail = 0, worst_tail_x = 0;
  int mismatches_fast = 0, mismatches_erff = 0, cancelled = 0;
  const int steps = 400000;
  for (int i = 0; i <= steps; ++i) {
    const float x = static_cast<float>(-10.0 + 20.0 * i / steps);
    const double want = gelu_exact(x);
    const float got = kiln::cuda::gelu_erfc_form(x);
    if (std::fabs(want) > std::numeric_limits<float>::min()) {
      const double rel = std::fabs(got - want) / std::fabs(want);
      if (std::fabs(x) <= 4 && rel > worst) worst = rel, worst_x = x;
      if (std::fabs(x) > 4 && rel > worst_tail) worst_tail = rel, worst_tail_x = x;
      const double rel_erff = std::fabs(gelu_erff_form(x) - want) / std::fabs(want);
      cancelled += rel_erff > 0.5;
    }
    const float h = to_half_and_back(static_cast<float>(want));
    mismatches_fast += to_half_and_back(got) != h;
    mismatches_erff += to_half_and_back(gelu_erff_form(x)) != h;
  }
  EXPECT_LT(worst, 2e-6) << "at x = " << worst_x;
  EXPECT_LT(worst_tail, 1.5e-5) << "at x = " << worst_tail_x;
  EXPECT_GT(cancelled, 0) << "the erff form was expected to cancel far below zero";
  EXPECT_LE(mismatches_fast, mismatches_erff);
  EXPECT_LT(mismatches_fast, steps / 1000) << mismatches_fast << " float16 results differ";
  // Agrees with erf's own form where that one is exact (x >= -1).
  for (float x : {-1.0f, -0.5f, 0.0f, 1e-3f, 0.5f, 1.0f, 2.0f, 3.0f, 6.0f})
    EXPECT_NEAR(kiln::cuda::gelu_erfc_form(x), gelu(x), 2e-6 * std::fabs(gelu(x)) + 1e-12) << x;
  EXPECT_EQ(kiln::cuda::gelu_erfc_form(0.0f), 0.0f);
  EXPECT_EQ(kiln::cuda::gelu_erfc_form(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
}

}  // namespace
