// Launcher of the channels-last depthwise convolution (group == C == M) with a fused prologue and epilogue.
#pragma once

#include <cuda_runtime.h>

#include "backends/cuda/dense_kernels.h"

namespace kiln::cuda {

// y[n, oh, ow, c] = act(sum_k w[c, kh, kw] * pre(x[n, ih, iw, c]) + b[c] + z[n, oh, ow, c]), X [N, H, W, C],
// W [C, kh, kw, 1] (FusedConv's KRSC), b and z optional (null). Pads are top/left (pt, pl); the bottom/right
// ones follow from the output size. pre applies to real pixels only: padding is zero after it; its result
// stays in float (the CPU reference rounds it to X's type first: a difference within the FP16 tolerance). Every element
// count must stay below 2^31 (depthwise_fits); float, half, bfloat16 with float accumulation.
struct DepthwiseGeom {
  int n, h, w, c, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
};
// Whether the kernel can run this problem (32-bit indices, the weights of one channel in shared memory).
bool depthwise_fits(const DepthwiseGeom& g);
Status launch_depthwise_nhwc(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                             const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep, int sm_count,
                             cudaStream_t stream);

// FusedConv's mean output M ([N, 1, 1, C], Y's mean over OH and OW, in Y's type) taken by the tiled and
// row-streaming kernels: each block sums the outputs it stores per channel into float partials in the workspace and
// a second kernel adds an image's partials. `done` says whether the launch wrote M; where it did not (a variant
// whose shared buffer is too small, partials beyond the workspace, misaligned buffers), the caller computes M from Y.
struct DwSqueeze {
  void* mean = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool done = false;
};

// The same convolution by the shared-memory tiled kernel (depthwise_tile_plan.h): square 3x3 or 5x5 windows,
// equal strides of 1 or 2, no dilation, C a multiple of the 16-byte vector (elem_bytes 2 or 4), in tile
// variant 0, 1, kDwTilePipe (the persistent, double-buffered kernel), kDwTileWide or kDwTileWidePipe
// (kDwTileVariants), or the row-streaming kernel (kDwRows; kDwVariants in all). Misaligned buffers run the
// kernel above instead.
bool depthwise_tiled_fits(const DepthwiseGeom& g, int elem_bytes, int variant);
Status launch_depthwise_nhwc_tiled(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                                   const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep,
                                   int variant, int sm_count, cudaStream_t stream, DwSqueeze* squeeze = nullptr);

}  // namespace kiln::cuda
