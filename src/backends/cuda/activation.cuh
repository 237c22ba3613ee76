// The device-side activation of the fused ops' epilogues (and the depthwise convolution's prologue), shared by
// the .cu files so that every kernel rounds the same way. Included only by .cu files.
#pragma once

#include "backends/cuda/dense_kernels.h"

namespace kiln::cuda {

// Activation numbers as in EpilogueParams (ops::Activation); float math like the reference's rounding points.
__device__ __forceinline__ float epilogue_act(float x, const EpilogueParams& e) {
  switch (e.act) {
    case 1: return x > 0.f ? x : 0.f;
    case 2: return fminf(fmaxf(x, e.lo), e.hi);
    case 3: return 1.f / (1.f + expf(-x));
    case 4: return x / (1.f + expf(-x));
    case 5: return x * fmaxf(0.f, fminf(1.f, e.alpha * x + e.beta));
    case 6: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case 7: return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case 8: return x >= 0.f ? x : e.alpha * x;
    default: return x;
  }
}

}  // namespace kiln::cuda
