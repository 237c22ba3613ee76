// Tensor-core (mma.sync) implicit-GEMM convolution for the image stems: 8-channel NHWC half/bfloat16 input.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/direct_conv.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/stem_mma_plan.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = kStemWarps * 32;

// GEMM view: rows = output pixels, columns = output channels, K = taps x 8 channels. One K step of 16 is two
// taps: an A fragment's 8x8 sub-matrices are 8 pixels x one tap's 16-byte channel vector, gathered straight
// from the shared input patch by ldmatrix (lane -> pixel, tap): an implicit im2col. B is W [M][taps * 8]
// (KRSC) as stored, its rows padded so that ldmatrix's 8 row addresses fall in different banks.
//
// Block: channel group blockIdx.y (weights and bias staged once), then output tiles blockIdx.x, +gridDim.x, ...
// Each tile's input patch is loaded by cp.async (zero-filled outside the image: the padding), with two buffers
// while the next tile's loads run behind this one's MMAs; each warp runs its two rows of 16 pixels against all
// NG channels: per K step 2 ldmatrix for A, NG/16 for B, NG/4 MMAs.
template <typename T, int NG>
__global__ void __launch_bounds__(kThreads, 2)
    stem_mma_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, const T* __restrict__ z,
                    T* __restrict__ y, DirectConvGeom g, StemMmaPlan p, EpilogueParams ep, bool vec_x, bool vec_w) {
  extern __shared__ uint4 smem[];
  T* sw = reinterpret_cast<T*>(smem);                        // [NG][wld]
  uint4* patch = reinterpret_cast<uint4*>(sw + NG * p.wld);  // [buffers][patch_h][g.sw][patch_ws]
  uint4* zero = patch + p.buffers * p.patch_vecs;            // one zero vector
  float* sbias = reinterpret_cast<float*>(zero + 1);         // [NG]
  int* tapoff = reinterpret_cast<int*>(sbias + NG);          // [2 * ksteps]
  const int tid = threadIdx.x;
  const int m0 = blockIdx.y * NG;
  const uint4 z4 = make_uint4(0, 0, 0, 0);

  // Weights: one 16-byte vector per (channel, tap); taps past the window and channels past M are zeros, so the
  // odd tap count's last step and a partial group add nothing.
  const int wvecs = p.wld / 8;  // 2 * ksteps + 1 (the last one is the skew padding)
  for (int i = tid; i < NG * wvecs; i += kThreads) {
    const int o = i / wvecs, t = i % wvecs;
    uint4 v = z4;
    if (m0 + o < g.m && t < p.taps) {
      const T* src = w + (static_cast<int64_t>(m0 + o) * p.taps + t) * 8;
      if (vec_w) {
        v = *reinterpret_cast<const uint4*>(src);
      } else {
        alignas(16) T e[8];
#pragma unroll
        for (int c = 0; c < 8; ++c) e[c] = src[c];
        v = *reinterpret_cast<const uint4*>(e);
      }
    }
    reinterpret_cast<uint4*>(sw)[i] = v;
  }
  for (int i = tid; i < NG; i += kThreads) sbias[i] = b && m0 + i < g.m ? to_f(b[m0 + i]) : 0.f;
  // Offset of tap t's vector from the pixel's (ky = kx = 0) vector in the patch; -1: past the window (zeros).
  for (int t = tid; t < 2 * p.ksteps; t += kThreads) {
    int off = -1;
    if (t < p.taps) {
      off = stem_patch_index(t / g.kw * g.dh, t % g.kw * g.dw, g.sw, p.patch_ws);
    }
    tapoff[t] = off;
  }
  if (tid == 0) *zero = z4;

  const int tiles_x = (g.ow + kStemTileW - 1) / kStemTileW;
  const int tiles_y = (g.oh + kStemTileH - 1) / kStemTileH;
  const int tiles = g.n * tiles_x * tiles_y;
  const int lane = tid & 31, warp = tid >> 5;
  const int wrow = warp * kStemRowsPerWarp;  // the warp's first output row in the tile

  // Tile t's patch into `dst`: rows from t's first output row * sh - pt, columns likewise.
  auto load_patch = [&](int t, uint4* dst) {
    const int tx = t % tiles_x, q = t / tiles_x;
    const int ty = q % tiles_y, img = q / tiles_y;
    const int iy0 = ty * kStemTileH * g.sh - g.pt, ix0 = tx * kStemTileW * g.sw - g.pl;
    const T* ximg = x + static_cast<int64_t>(img) * g.h * g.w * 8;
    for (int i = tid; i < p.patch_h * p.patch_w; i += kThreads) {
      const int r = i / p.patch_w, c = i % p.patch_w;
      const int iy = iy0 + r, ix = ix0 + c;
      const bool in = static_cast<unsigned>(iy) < static_cast<unsigned>(g.h) &&
                      static_cast<unsigned>(ix) < static_cast<unsigned>(g.w);
      uint4* v = dst + stem_patch_index(r, c, g.sw, p.patch_ws);
      const T* src = ximg + (in ? (iy * g.w + ix) * 8 : 0);
      if (vec_x) {
        cp_async16(v, src, in);
      } else {
        alignas(16) T e[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) e[k] = in ? src[k] : from_f<T>(0.f);
        *v = *reinterpret_cast<const uint4*>(e);
      }
    }
  };

  // Barriers: the one after a patch's loads publishes it (and, first, the staging above); the one closing each
  // iteration keeps the buffer being read from the loads that overwrite it next.
  if (p.buffers == 2 && static_cast<int>(blockIdx.x) < tiles) load_patch(blockIdx.x, patch);
  cp_async_commit();
  int it = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++it) {
    const int tx = tile % tiles_x, q = tile / tiles_x;
    const int ty = q % tiles_y, img = q / tiles_y;
    const int oy0 = ty * kStemTileH, ox0 = tx * kStemTileW;
    const uint4* cur = patch + (p.buffers == 2 ? (it & 1) * p.patch_vecs : 0);
    if (p.buffers == 1) {
      load_patch(tile, patch);
      cp_async_commit();
      cp_async_wait<0>();
    } else {
      if (tile + static_cast<int>(gridDim.x) < tiles)
        load_patch(tile + gridDim.x, patch + ((it + 1) & 1) * p.patch_vecs);
      cp_async_commit();  // possibly empty: "all but the newest group" is this tile's
      cp_async_wait<1>();
    }
    __syncthreads();

    if (oy0 + wrow < g.oh) {  // else no live row for this warp
      float acc[kStemRowsPerWarp][NG / 8][4];
#pragma unroll
      for (int i = 0; i < kStemRowsPerWarp; ++i)
#pragma unroll
        for (int n = 0; n < NG / 8; ++n) acc[i][n][0] = acc[i][n][1] = acc[i][n][2] = acc[i][n][3] = 0.f;

      // A: lane -> pixel lane % 16 of the row, tap 2s + lane / 16 (ldmatrix matrices 0/1: pixels 0-7/8-15 of the
      // even tap, 2/3: of the odd tap: the m16n8k16 A fragment's a0..a3). B: lane -> channel
      // (lane / 16) * 8 + lane % 8 of a 16-channel pair of n8 tiles, taps (lane / 8) % 2 (b0, b1 of the first n8
      // tile, then of the second).
      const int px = lane & 15, odd = lane >> 4;
      int base[kStemRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kStemRowsPerWarp; ++i)
        base[i] = stem_patch_index((wrow + i) * g.sh, 0, g.sw, p.patch_ws) + px;
      const T* wl = sw + ((lane >> 4) * 8 + (lane & 7)) * p.wld + ((lane >> 3) & 1) * 8;
#pragma unroll 1
      for (int s = 0; s < p.ksteps; ++s) {
        const int off = tapoff[2 * s + odd];
        uint32_t a[kStemRowsPerWarp][4];
#pragma unroll
        for (int i = 0; i < kStemRowsPerWarp; ++i) ldsm_x4(a[i], off < 0 ? zero : cur + base[i] + off);
#pragma unroll
        for (int j = 0; j < NG / 16; ++j) {
          uint32_t bf[4];
          ldsm_x4(bf, wl + j * 16 * p.wld + s * 16);
#pragma unroll
          for (int i = 0; i < kStemRowsPerWarp; ++i) {
            mma16816<T>(acc[i][2 * j], a[i], bf[0], bf[1]);
            mma16816<T>(acc[i][2 * j + 1], a[i], bf[2], bf[3]);
          }
        }
      }

      // Accumulator c0, c1: pixel lane / 4, channels 2 * (lane % 4) + {0, 1} of the n8 tile; c2, c3: pixel + 8.
      const int gq = lane >> 2, ch2 = (lane & 3) * 2;
#pragma unroll
      for (int i = 0; i < kStemRowsPerWarp; ++i) {
        const int oy = oy0 + wrow + i;
        if (oy >= g.oh) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int ox = ox0 + gq + 8 * h;
          if (ox >= g.ow) continue;
          const int pix = (img * g.oh + oy) * g.ow + ox;
#pragma unroll
          for (int n = 0; n < NG / 8; ++n) {
            if (m0 + n * 8 >= g.m) break;  // M is a multiple of 8: whole n8 tiles or none
            const int ch = n * 8 + ch2;
            float v0 = acc[i][n][2 * h] + sbias[ch], v1 = acc[i][n][2 * h + 1] + sbias[ch + 1];
            const int o = pix * g.m + m0 + ch;
            if (z) {
              const float2 zz = load_pair(z + o);
              v0 += zz.x;
              v1 += zz.y;
            }
            *reinterpret_cast<uint32_t*>(y + o) = pack2<T>(epilogue_act(v0, ep), epilogue_act(v1, ep));
          }
        }
      }
    }
    __syncthreads();
  }
}

bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

template <typename T, int NG>
Status launch_group(const void* x, const void* w, const void* b, const void* z, void* y, const DirectConvGeom& g,
                    const StemMmaPlan& p, const EpilogueParams& ep, int sm_count, cudaStream_t stream) {
  auto kernel = stem_mma_kernel<T, NG>;
  KILN_CUDA_CHECK(allow_smem(kernel, p.smem_bytes));
  int per_sm = 0;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, p.smem_bytes));
  const int64_t tiles =
      static_cast<int64_t>(g.n) * ((g.oh + kStemTileH - 1) / kStemTileH) * ((g.ow + kStemTileW - 1) / kStemTileW);
  // As many blocks as stay resident (each stages its weights once and walks the tiles), at most one per tile.
  const int64_t resident = static_cast<int64_t>(std::max(per_sm, 1)) * std::max(sm_count, 1);
  const dim3 grid(static_cast<unsigned>(std::min(tiles, std::max<int64_t>(resident / p.groups, 1))),
                  static_cast<unsigned>(p.groups));
  kernel<<<grid, kThreads, p.smem_bytes, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                   static_cast<const T*>(b), static_cast<const T*>(z),
                                                   static_cast<T*>(y), g, p, ep, aligned(x, 16), aligned(w, 16));
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T>
Status launch_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DirectConvGeom& g,
                    const EpilogueParams& ep, int sm_count, cudaStream_t stream) {
  const StemMmaPlan p = stem_mma_plan(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.m);
  switch (p.group_m) {
    case 16:
      return launch_group<T, 16>(x, w, b, z, y, g, p, ep, sm_count, stream);
    case 32:
      return launch_group<T, 32>(x, w, b, z, y, g, p, ep, sm_count, stream);
    case 48:
      return launch_group<T, 48>(x, w, b, z, y, g, p, ep, sm_count, stream);
    default:
      return launch_group<T, 64>(x, w, b, z, y, g, p, ep, sm_count, stream);
  }
}

}  // namespace

bool direct_conv_mma_fits(const DirectConvGeom& g) {
  if (g.n < 0 || g.h < 1 || g.w < 1 || g.c != 8 || g.m < 8 || g.m % 8 != 0 || g.oh < 0 || g.ow < 0 || g.kh < 1 ||
      g.kw < 1 || g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0)
    return false;
  // Windows, strides and dilations beyond these would not fit shared memory anyway; the bound keeps the plan's
  // arithmetic far from overflow.
  for (int v : {g.kh, g.kw, g.sh, g.sw, g.dh, g.dw})
    if (v > 1024) return false;
  const int64_t in = static_cast<int64_t>(g.n) * g.h * g.w * g.c;
  const int64_t out = static_cast<int64_t>(g.n) * g.oh * g.ow * g.m;
  // 32-bit indices: pixels, output elements, padded row/column indices (a tile may reach one tile past the
  // output's edge), and the tile count.
  const int64_t span_h = (static_cast<int64_t>(g.oh) + kStemTileH) * g.sh + static_cast<int64_t>(g.kh) * g.dh;
  const int64_t span_w = (static_cast<int64_t>(g.ow) + kStemTileW) * g.sw + static_cast<int64_t>(g.kw) * g.dw;
  if (in >= INT_MAX / 2 || out >= INT_MAX / 2 || span_h >= INT_MAX / 2 || span_w >= INT_MAX / 2) return false;
  return stem_mma_plan(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.m).smem_bytes <= kStemMaxSmem;
}

Status launch_direct_conv_nhwc_mma(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                                   const DirectConvGeom& g, const EpilogueParams& ep, int sm_count,
                                   cudaStream_t stream) {
  if (static_cast<int64_t>(g.n) * g.oh * g.ow == 0) return Status::Ok();
  if (!direct_conv_mma_fits(g))
    return unsupported("tensor-core stem convolution: the problem is outside the kernel's limits");
  if (!aligned(y, 4) || (z && !aligned(z, 4)) || !aligned(x, 2) || !aligned(w, 2) || (b && !aligned(b, 2)))
    return unsupported("tensor-core stem convolution: Y and Z must be 4-byte aligned, X, W and B 2-byte");
  switch (dt) {
    case DataType::kHALF:
      return launch_typed<__half>(x, w, b, z, y, g, ep, sm_count, stream);
    case DataType::kBF16:
      return launch_typed<__nv_bfloat16>(x, w, b, z, y, g, ep, sm_count, stream);
    default:
      return unsupported(std::string("tensor-core stem convolution: half or bfloat16 only, not ") + dtype_name(dt));
  }
}

}  // namespace kiln::cuda
