// Launcher of the direct channels-last convolution for few input channels (image stems), epilogue fused.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/dense_kernels.h"

namespace kiln::cuda {

// y[n, oh, ow, m] = act(sum_{ky, kx, c < cu} w[m, ky, kx, c] * x[n, ih, iw, c] + b[m] + z[n, oh, ow, m]),
// X [N, H, W, C], W [M, kh, kw, C] (FusedConv's KRSC), group 1, b and z optional (null). Only the first `cu`
// input channels are read (1 <= cu <= C <= 8): an image stem's channels past its 3 colours are zero padding
// (kiln::ToNhwc) whose weights are zero, so skipping them is exact for finite inputs and saves 5/8 of the FMAs.
// Pads are top/left (pt, pl); the bottom/right ones follow from the output size. M must be a multiple of 8,
// every element count below 2^30 (direct_conv_fits). float, half, bfloat16 with float accumulation.
struct DirectConvGeom {
  int n, h, w, c, m, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, cu;
};
// Whether the kernel can run this problem (few channels, whole 16-byte output vectors, weights in shared memory).
bool direct_conv_fits(const DirectConvGeom& g);
Status launch_direct_conv_nhwc(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                               const DirectConvGeom& g, const EpilogueParams& ep, cudaStream_t stream);

// The same convolution on the tensor cores (direct_conv_mma.cu, implicit GEMM on mma.sync m16n8k16): half and
// bfloat16 only, C == 8 exactly (an image stem padded by kiln::ToNhwc; all 8 channels are multiplied, so `cu`
// is ignored), M a multiple of 8, the window's weights and one tile's input patch within shared memory.
bool direct_conv_mma_fits(const DirectConvGeom& g);
Status launch_direct_conv_nhwc_mma(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                                   const DirectConvGeom& g, const EpilogueParams& ep, int sm_count,
                                   cudaStream_t stream);

}  // namespace kiln::cuda
