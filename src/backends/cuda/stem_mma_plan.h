// Tiling and shared-memory plan of the tensor-core stem convolution (direct_conv_mma.cu): plain C++, so that
// the host-side geometry is unit-tested without a GPU.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace kiln::cuda {

// A block computes kStemTileH x kStemTileW output pixels (8 warps, each two output rows of 16 pixels: two
// m16 tiles) for up to 64 output channels (one channel group; more channels take more groups, gridDim.y).
constexpr int kStemTileW = 16;
constexpr int kStemWarps = 8;
constexpr int kStemRowsPerWarp = 2;
constexpr int kStemTileH = kStemWarps * kStemRowsPerWarp;
constexpr int kStemMaxGroup = 64;
constexpr size_t kStemMaxSmem = 227 * 1024;  // sm_90's opt-in limit per block
// Up to this much a block double-buffers its patch (the next tile loads while this one is multiplied) and two
// blocks still fit an SM (228 KiB, 1 KiB of it reserved per block).
constexpr size_t kStemTwoBlockSmem = 112 * 1024;

struct StemMmaPlan {
  int taps = 0, ksteps = 0;  // window taps, and K steps of 16 (two taps of 8 channels each)
  int wld = 0;               // weight row length in shared memory (elements): 16 * ksteps + 8 (bank skew)
  int group_m = 0, groups = 0;
  // The input patch of one tile: patch_h rows of patch_w pixels, each row stored as sw phases (columns c with
  // c % sw equal) of patch_ws pixels, so that the 8 pixels of one ldmatrix row group are consecutive 16-byte
  // vectors for any stride (no bank conflicts).
  int patch_h = 0, patch_w = 0, patch_ws = 0;
  int patch_vecs = 0;  // 16-byte vectors of one patch buffer
  int buffers = 1;     // patch buffers: 2 where they fit kStemTwoBlockSmem
  size_t weight_bytes = 0, smem_bytes = 0;
};

#if defined(__CUDACC__)
#define KILN_STEM_HD __host__ __device__
#else
#define KILN_STEM_HD
#endif

// The patch vector of patch row r, column c (stride sw): rows of sw phases of patch_ws vectors. For a pixel at
// column px * sw plus a tap's column offset, this is the pixel's index plus the tap's: consecutive pixels are
// consecutive vectors whatever the stride.
KILN_STEM_HD inline int stem_patch_index(int r, int c, int sw, int patch_ws) {
  return (r * sw + c % sw) * patch_ws + c / sw;
}

// kh, kw, sh, sw, dh, dw >= 1 and at most 1024, m >= 1 (16-bit elements, 8 channels per pixel).
inline StemMmaPlan stem_mma_plan(int kh, int kw, int sh, int sw, int dh, int dw, int m) {
  StemMmaPlan p;
  p.taps = kh * kw;
  p.ksteps = (p.taps + 1) / 2;
  p.wld = 16 * p.ksteps + 8;
  p.group_m = std::min(kStemMaxGroup, (m + 15) / 16 * 16);
  p.groups = (m + p.group_m - 1) / p.group_m;
  p.patch_h = (kStemTileH - 1) * sh + (kh - 1) * dh + 1;
  p.patch_w = (kStemTileW - 1) * sw + (kw - 1) * dw + 1;
  p.patch_ws = (p.patch_w + sw - 1) / sw;
  p.patch_vecs = p.patch_h * sw * p.patch_ws;
  p.weight_bytes = static_cast<size_t>(p.group_m) * p.wld * 2;
  // Weights, patch buffers (16-byte vectors), a zero vector (the odd tap count's missing tap), bias (float per
  // channel), tap offsets (int per tap of 2 * ksteps).
  auto bytes = [&](int buffers) {
    return p.weight_bytes + (static_cast<size_t>(p.patch_vecs) * buffers + 1) * 16 + p.group_m * 4 + p.ksteps * 2 * 4;
  };
  p.buffers = bytes(2) <= kStemTwoBlockSmem ? 2 : 1;
  p.smem_bytes = bytes(p.buffers);
  return p;
}

}  // namespace kiln::cuda
