// Erf GELU, x Phi(x), from erfc's scaled form: h = erfc(|x| / sqrt 2) / 2 = exp(-x^2 / 2) t P(t) / 2 with
// t = 1 / (1 + |x| / (2 sqrt 2)) and P of degree 6, fitted to erfc(z) exp(z^2) on z in [0, 6.5] (relative error
// 4e-7); Phi = 1 - h for x >= 0, h below. The CUTLASS GELU epilogue's activation (cutlass/cutlass_gemm_act.cuh):
// 18 operations where 0.5 x (1 + erff(x / sqrt 2)) takes 28, and without that form's cancellation below x = -1.
// Host and device: on the GPU the reciprocal and the exp2 are the SFU's approximations; the host build (CPU
// tests of its accuracy) uses the exact ones.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define KILN_GELU_HD __host__ __device__ __forceinline__
#else
#define KILN_GELU_HD inline
#endif

namespace kiln::cuda {

KILN_GELU_HD float gelu_erfc_form(float x) {
  const float z = fabsf(x);
  const float d = fmaf(0.35355339f, z, 1.0f);  // 1 + z / (2 sqrt 2)
#ifdef __CUDA_ARCH__
  const float t = __fdividef(1.0f, d);
#else
  const float t = 1.0f / d;
#endif
  // Half of P's coefficients (erfc(z) exp(z^2) ~ sum c_i t^i, i = 1..7, at z = |x| / sqrt 2), highest first.
  float q = 0.0476648286f;
  q = fmaf(q, t, -0.191076472f);
  q = fmaf(q, t, 0.212730259f);
  q = fmaf(q, t, 0.00578862848f);
  q = fmaf(q, t, 0.145860612f);
  q = fmaf(q, t, 0.137789339f);
  q = fmaf(q, t, 0.141242996f);
  q *= t;
  const float a = x * x * -0.72134752f;  // -x^2 log2(e) / 2
  float e;                               // exp(-x^2 / 2)
#ifdef __CUDA_ARCH__
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(a));
#else
  e = exp2f(a);
#endif
  const float h = q * e;
  return x * (x >= 0.0f ? 1.0f - h : h);
}

}  // namespace kiln::cuda

#undef KILN_GELU_HD
