// Erf GELU, x Phi(x), as x sigma(L(x)) with L an odd polynomial of degree 7 fitted here to Phi's logit,
// log(Phi(x) / (1 - Phi(x))), on [0, 5.6] (weighted least squares against mpmath; max |L error| 2e-3, and L
// increasing on the whole line, so Phi -> 1 above and -> 0 below). The CUTLASS GELU epilogue's activation
// (cutlass/cutlass_gemm_act.cuh): an exp2 and a reciprocal (the SFU's) and seven other operations, where erfc's
// scaled form took 19 and the same two: cheap enough that a ping-pong kernel hides it under the other warp group's
// main loop (bench/NOTES.md, twenty-fourth session). Its error against the exact GELU (tests/unit/
// test_gelu_sigmoid.cpp): at most 1.7e-4 absolute; relative 2e-3 at most, where the result is small (x < 0): float16
// results within 5 ulp of the correctly rounded GELU, most within 1. The sigmoid keeps the relative accuracy below
// zero (no 1 + erf cancellation) over the fit's range; beyond x = -5.6 (results under 6e-8, float16's smallest
// subnormal) the results keep their sign and shrink faster than the GELU's (gelu(-8): -3.6e-16 for -5.0e-15).
// gelu(+inf) = +inf; gelu(-inf) is NaN, as 0.5 x (1 + erf(x / sqrt 2)) gives. Host and device: on the GPU the exp2
// and the division are the SFU's approximations; the host build (the CPU test of its accuracy) uses the exact ones.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define KILN_GELU_HD __host__ __device__ __forceinline__
#else
#define KILN_GELU_HD inline
#endif

namespace kiln::cuda {

KILN_GELU_HD float gelu_sigmoid_form(float x) {
  // -log2(e) L(x) = x P(x^2): the fitted coefficients of L times -log2(e), highest first.
  const float x2 = x * x;
  float p = fmaf(-1.213818601e-05f, x2, 1.381283864e-03f);
  p = fmaf(p, x2, -0.1088209229f);
  p = fmaf(p, x2, -2.299728307f);
  const float a = x * p;  // -L(x) log2(e)
#ifdef __CUDA_ARCH__
  float e;  // exp(-L(x))
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(a));
  return __fdividef(x, e + 1.0f);
#else
  return x / (exp2f(a) + 1.0f);
#endif
}

}  // namespace kiln::cuda

#undef KILN_GELU_HD
