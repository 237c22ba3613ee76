// Direct channels-last convolution for few input channels (image stems) on CUDA cores, epilogue fused.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/direct_conv.h"
#include "backends/cuda/float_convert.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kOc = 16;                     // output channels per thread (and per block)
constexpr int kMinBlocks = 2;               // resident blocks per SM: at most 128 registers per thread
constexpr int kSmemFloats = 48 * 1024 / 4;  // without the opt-in for more than 48 KiB of dynamic smem

// Input channels the kernel reads per pixel: an image's 3 (one 8-byte load of half/bfloat16), else all 8.
constexpr int cu_template(int cu) { return cu <= 3 ? 3 : 8; }

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// The first CU channels of one pixel as float. VEC: C == 8 and 16-byte aligned pixels, read as whole 4-element
// vectors (8 or 16 bytes); otherwise element by element, channels past C reading as zero.
template <typename T, int CU, bool VEC>
__device__ __forceinline__ void load_pixel(const T* p, int c, float (&v)[CU]) {
  if constexpr (VEC) {
    const Pack<T, 4> lo = *reinterpret_cast<const Pack<T, 4>*>(p);
#pragma unroll
    for (int i = 0; i < CU && i < 4; ++i) v[i] = to_f(lo.v[i]);
    if constexpr (CU > 4) {
      const Pack<T, 4> hi = *reinterpret_cast<const Pack<T, 4>*>(p + 4);
#pragma unroll
      for (int i = 4; i < CU; ++i) v[i] = to_f(hi.v[i - 4]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < CU; ++i) v[i] = i < c ? to_f(p[i]) : 0.f;
  }
}

// Block: one group of kOc output channels (blockIdx.x % groups, fastest, so the groups of one pixel tile run
// together and share its input through L2) times kThreads * P output pixels. Every thread of the block reads
// the same weights, staged in shared memory as float [tap][c][o]: each read is a broadcast, four channels per
// 16-byte access, each feeding P FMAs. A thread's pixels lie 32 apart in the flattened (n, oh, ow) order so
// that a warp's loads of one tap touch neighbouring pixels (a few 128-byte lines, not one per lane); the
// window's overlap between neighbours is reused from L1. KW > 0 fixes the window width. P: output pixels per
// thread, 32 apart (see launch_typed).
template <typename T, int CU, bool VEC, int KW, int P>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    direct_conv_nhwc_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                            const T* __restrict__ z, T* __restrict__ y, DirectConvGeom g, int groups,
                            EpilogueParams ep) {
  extern __shared__ float4 smem4[];  // float4: 16-byte alignment for the vector reads
  float* smem = reinterpret_cast<float*>(smem4);
  const int kw = KW > 0 ? KW : g.kw;
  const int taps = g.kh * kw;
  const int grp = blockIdx.x % groups, tile = blockIdx.x / groups;
  const int m0 = grp * kOc;
  float* sw = smem;                     // [taps][CU][kOc]
  float* sb = smem + taps * CU * kOc;  // [kOc]
  for (int i = threadIdx.x; i < taps * CU * kOc; i += blockDim.x) {
    const int o = i % kOc, tc = i / kOc;
    const int ch = tc % CU, t = tc / CU;
    const int mm = m0 + o;
    sw[i] = mm < g.m && ch < g.cu ? to_f(w[(mm * taps + t) * g.c + ch]) : 0.f;
  }
  if (threadIdx.x < kOc) sb[threadIdx.x] = b && m0 + threadIdx.x < g.m ? to_f(b[m0 + threadIdx.x]) : 0.f;
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int total = g.n * g.oh * g.ow;
  const int pix0 = (tile * (kThreads / 32) + warp) * 32 * P + lane;
  if (pix0 >= total) return;  // no barrier follows
  int iy0[P], ix0[P], base[P];
  bool ok[P];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int pix = pix0 + 32 * p;
    ok[p] = pix < total;
    const int ox = pix % g.ow, q = pix / g.ow;
    const int oy = q % g.oh, img = q / g.oh;
    iy0[p] = oy * g.sh - g.pt;
    ix0[p] = ox * g.sw - g.pl;
    base[p] = img * g.h * g.w * g.c;
  }
  float acc[P][kOc];
#pragma unroll
  for (int p = 0; p < P; ++p)
#pragma unroll
    for (int o = 0; o < kOc; ++o) acc[p][o] = sb[o];

  for (int ky = 0; ky < g.kh; ++ky) {
    const T* row[P];
    bool rok[P];
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int iy = iy0[p] + ky * g.dh;
      rok[p] = ok[p] && static_cast<unsigned>(iy) < static_cast<unsigned>(g.h);
      row[p] = x + (rok[p] ? base[p] + iy * g.w * g.c : 0);
    }
    const float4* wrow = reinterpret_cast<const float4*>(sw + ky * kw * CU * kOc);
#pragma unroll 1
    for (int kx = 0; kx < kw; ++kx) {
      float xv[P][CU];
#pragma unroll
      for (int p = 0; p < P; ++p) {
        const int ix = ix0[p] + kx * g.dw;
        // Padding (and the pixels past the last output) reads as zero.
        if (rok[p] && static_cast<unsigned>(ix) < static_cast<unsigned>(g.w)) {
          load_pixel<T, CU, VEC>(row[p] + ix * g.c, g.c, xv[p]);
        } else {
#pragma unroll
          for (int c = 0; c < CU; ++c) xv[p][c] = 0.f;
        }
      }
#pragma unroll
      for (int c = 0; c < CU; ++c) {
        float wt[kOc];
#pragma unroll
        for (int q = 0; q < kOc / 4; ++q) {
          const float4 v = wrow[(kx * CU + c) * (kOc / 4) + q];
          wt[4 * q] = v.x, wt[4 * q + 1] = v.y, wt[4 * q + 2] = v.z, wt[4 * q + 3] = v.w;
        }
#pragma unroll
        for (int p = 0; p < P; ++p)
#pragma unroll
          for (int o = 0; o < kOc; ++o) acc[p][o] = fmaf(xv[p][c], wt[o], acc[p][o]);
      }
    }
  }

  constexpr int kU = 16 / sizeof(T);  // elements per 16-byte vector
#pragma unroll
  for (int p = 0; p < P; ++p) {
    if (!ok[p]) continue;
    const int out = (pix0 + 32 * p) * g.m + m0;
#pragma unroll
    for (int u = 0; u < kOc; u += kU) {
      if (m0 + u >= g.m) break;  // M is a multiple of 8 (and of kU): whole vectors or none
      float v[kU];
#pragma unroll
      for (int i = 0; i < kU; ++i) v[i] = acc[p][u + i];
      if (z) {
        const Pack<T, kU> zv = *reinterpret_cast<const Pack<T, kU>*>(z + out + u);
#pragma unroll
        for (int i = 0; i < kU; ++i) v[i] += to_f(zv.v[i]);
      }
      Pack<T, kU> r;
#pragma unroll
      for (int i = 0; i < kU; ++i) r.v[i] = from_f<T>(epilogue_act(v[i], ep));
      *reinterpret_cast<Pack<T, kU>*>(y + out + u) = r;
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
Status launch_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DirectConvGeom& g,
                    const EpilogueParams& ep, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(g.n) * g.oh * g.ow;
  const bool vec = g.c == 8 && aligned16(x);
  const int groups = (g.m + kOc - 1) / kOc;
  auto launch = [&](auto kernel, int cu, int pix) -> Status {
    const int64_t tiles = (total + kThreads * pix - 1) / (kThreads * pix);
    const unsigned blocks = static_cast<unsigned>(tiles * groups);
    const size_t smem = (static_cast<size_t>(g.kh) * g.kw * cu + 1) * kOc * sizeof(float);
    kernel<<<blocks, kThreads, smem, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                               static_cast<const T*>(b), static_cast<const T*>(z), static_cast<T*>(y),
                                               g, groups, ep);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  // The stems' window widths fixed (7: resnet; 3: mobilenet, efficientnet), anything else general. Pixels per
  // thread, measured on an H200 (FP16, batch 128, 3 of 8 channels used, the kernel alone): 4 for the 7x7 stem
  // (1040 us; 2 pixels: 1140), 2 for the 3x3 ones (214/245 us with ReLU6/SiLU; 4 pixels: 267/282) and the rest.
  // 8 output channels per thread instead of 16 (1358/257/289 us) and an unrolled 7-wide window (1195/318/337)
  // were slower.
  auto pick = [&](auto cu_tag) -> Status {
    constexpr int kCu = decltype(cu_tag)::value;
    if (!vec) return launch(direct_conv_nhwc_kernel<T, kCu, false, 0, 2>, kCu, 2);
    if (g.kw == 7) return launch(direct_conv_nhwc_kernel<T, kCu, true, 7, 4>, kCu, 4);
    if (g.kw == 3) return launch(direct_conv_nhwc_kernel<T, kCu, true, 3, 2>, kCu, 2);
    return launch(direct_conv_nhwc_kernel<T, kCu, true, 0, 2>, kCu, 2);
  };
  if (cu_template(g.cu) == 3) return pick(std::integral_constant<int, 3>{});
  return pick(std::integral_constant<int, 8>{});
}

}  // namespace

bool direct_conv_fits(const DirectConvGeom& g) {
  if (g.n < 0 || g.h < 1 || g.w < 1 || g.c < 1 || g.c > 8 || g.cu < 1 || g.cu > g.c || g.m < 8 || g.m % 8 != 0 ||
      g.oh < 0 || g.ow < 0 || g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 ||
      g.pl < 0)
    return false;
  const int64_t in = static_cast<int64_t>(g.n) * g.h * g.w * g.c;
  const int64_t out = static_cast<int64_t>(g.n) * g.oh * g.ow * g.m;
  const int64_t taps = static_cast<int64_t>(g.kh) * g.kw;
  // Index arithmetic is 32-bit; a thread's last pixel may lie up to 128 past the end, and a padded row or
  // column index (oy * sh - pt + ky * dh) must not overflow either.
  const int64_t span_h = static_cast<int64_t>(g.oh) * g.sh + static_cast<int64_t>(g.kh) * g.dh;
  const int64_t span_w = static_cast<int64_t>(g.ow) * g.sw + static_cast<int64_t>(g.kw) * g.dw;
  return in < INT_MAX / 2 && out < INT_MAX / 2 && span_h < INT_MAX / 2 && span_w < INT_MAX / 2 &&
         (taps * cu_template(g.cu) + 1) * kOc <= kSmemFloats;
}

Status launch_direct_conv_nhwc(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                               const DirectConvGeom& g, const EpilogueParams& ep, cudaStream_t stream) {
  if (static_cast<int64_t>(g.n) * g.oh * g.ow == 0) return Status::Ok();
  if (!direct_conv_fits(g)) return unsupported("direct convolution: the problem is outside the kernel's limits");
  if (!aligned16(y) || (z && !aligned16(z)))
    return unsupported("direct convolution: Y and Z must be 16-byte aligned");
  switch (dt) {
    case DataType::kFLOAT:
      return launch_typed<float>(x, w, b, z, y, g, ep, stream);
    case DataType::kHALF:
      return launch_typed<__half>(x, w, b, z, y, g, ep, stream);
    case DataType::kBF16:
      return launch_typed<__nv_bfloat16>(x, w, b, z, y, g, ep, stream);
    default:
      return internal_error(std::string("direct convolution: unexpected data type ") + dtype_name(dt));
  }
}

}  // namespace kiln::cuda
