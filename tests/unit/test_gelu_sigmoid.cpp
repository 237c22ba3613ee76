// The CUTLASS GELU epilogue's activation (backends/cuda/gelu_sigmoid.h), host build: against the exact erf GELU
// (x Phi(x) through erfc, in double) over x in [-10, 10]. Its bounds: 1.7e-4 absolute everywhere; 2.5e-3 relative
// over the fit's range, |x| <= 5.6 (below it the results are under 6e-8, float16's smallest subnormal; they keep
// their sign and shrink faster than the GELU's); float16 results within 5 ulp of the correctly rounded GELU, and no
// more than one in four of them off by more than one ulp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "backends/cuda/gelu_sigmoid.h"
#include "common/tensor.h"

namespace {

double gelu_exact(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }

// float16 values as integers that order like the values (-0 and +0 equal): their difference counts ulps.
int ordered_half(float v) {
  const uint16_t h = kiln::float_to_half(v);
  return (h & 0x8000) ? -static_cast<int>(h & 0x7fff) : static_cast<int>(h);
}

TEST(GeluSigmoidForm, AbsoluteRelativeAndFloat16Error) {
  double worst_abs = 0, worst_abs_x = 0, worst_rel = 0, worst_rel_x = 0;
  int worst_ulp = 0, over_one_ulp = 0, far_negative_nonzero = 0;
  const int steps = 400000;
  for (int i = 0; i <= steps; ++i) {
    const float x = static_cast<float>(-10.0 + 20.0 * i / steps);
    const double want = gelu_exact(x);
    const float got = kiln::cuda::gelu_sigmoid_form(x);
    const double abs_err = std::fabs(got - want);
    if (abs_err > worst_abs) worst_abs = abs_err, worst_abs_x = x;
    if (std::fabs(x) <= 5.6f) {
      const double rel = abs_err / std::fabs(want);
      if (rel > worst_rel) worst_rel = rel, worst_rel_x = x;
    }
    const int ulp = std::abs(ordered_half(got) - ordered_half(static_cast<float>(want)));
    worst_ulp = std::max(worst_ulp, ulp);
    over_one_ulp += ulp > 1;
    far_negative_nonzero += x < -6 && x > -8 && got < 0;  // no cancellation to zero
  }
  EXPECT_LT(worst_abs, 1.7e-4) << "at x = " << worst_abs_x;
  EXPECT_LT(worst_rel, 2.5e-3) << "at x = " << worst_rel_x;
  EXPECT_LE(worst_ulp, 5);
  EXPECT_LT(over_one_ulp, (steps + 1) / 4);
  EXPECT_GE(far_negative_nonzero, 2 * steps / 20 - 2);  // every x in (-8, -6)
  EXPECT_EQ(kiln::cuda::gelu_sigmoid_form(0.0f), 0.0f);
  EXPECT_EQ(kiln::cuda::gelu_sigmoid_form(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(kiln::cuda::gelu_sigmoid_form(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(kiln::cuda::gelu_sigmoid_form(-100.0f), 0.0f);
}

}  // namespace
