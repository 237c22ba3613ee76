// Channels-last depthwise convolution with fused prologue and epilogue: one pass over X, one write of Y. This file:
// the strip kernel and the entry points of depthwise.h; the tiled kernels are in depthwise_tiled.cu, the
// row-streaming one in depthwise_rows.cu, their shared parts in depthwise_kernels.cuh.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>

#include "backends/cuda/depthwise_kernels.cuh"
#include "backends/cuda/depthwise_tile_plan.h"

namespace kiln::cuda {
namespace dw {

// Resident blocks per SM of a kernel at a block size and shared memory: asked of the runtime once per
// combination, not on every enqueue (the occupancy query costs microseconds of host time).
Result<int> resident_blocks_per_sm(const void* kernel, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t>, int> known;
  const auto key = std::make_tuple(kernel, threads, smem);
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = known.find(key); it != known.end()) return it->second;
  int per_sm = 0;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  known.emplace(key, per_sm);
  return per_sm;
}

// Relu (act 1) as a clamp to [0, inf): prologues and the kernels' clamp epilogue class run Relu and Clip alike.
EpilogueParams as_clamp(const EpilogueParams& e) {
  EpilogueParams r = e;
  if (e.act == 1) r.lo = 0.f, r.hi = INFINITY;
  return r;
}

// Raises a tiled kernel's dynamic shared memory limit to its plans' most (`bytes`), once per kernel.
Status allow_tile_smem(const void* kernel, size_t bytes) {
  static std::mutex mu;
  static std::map<const void*, bool> done;
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(kernel)) return Status::Ok();
  KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  done.emplace(kernel, true);
  return Status::Ok();
}

}  // namespace dw

namespace {

using dw::as_clamp;
using dw::Pack;
using dw::load_vec;
using dw::resident_blocks_per_sm;
using dw::store_output;

constexpr int kThreads = 256;
constexpr int kMaxLanes = 32;               // channel vectors per block (a warp's width of 16-byte loads)
constexpr int kSmemFloats = 48 * 1024 / 4;  // without the opt-in for more than 48 KiB of dynamic smem
constexpr int kStrip = 4;                   // output pixels per thread, along a row

// Block: `lanes` channel vectors (blockIdx.y picks which) times blockDim.x / lanes strips of kStrip output
// pixels along a row; the lane is the fastest index, so a warp reads neighbouring 16-byte vectors of one or two
// pixels (coalesced along C). A thread reads each tap's weights once per strip and keeps kStrip independent
// loads in flight per tap. The block's weights and bias live in shared memory as float, laid out
// [tap][v][lane] and [v][lane]: the lanes of a warp read consecutive words (no bank conflicts; the same lane in
// another strip reads the same word, a broadcast). Halo reuse between neighbouring pixels comes from L1/L2.
// KW and SW > 0 (a 3- or 5-wide window, stride 1 or 2, no horizontal dilation: every common depthwise layer) fix
// the window at compile time: each input pixel of a strip's row is then loaded, converted and given the
// prologue once and multiplied into every output of the strip that reads it, instead of once per tap (a 3x3
// stride-1 strip of 4 reads 6 pixels per row rather than 12). KW = 0 is the general form.
// kPre: 0 no prologue, 1 a clamp to [pre.lo, pre.hi] (Relu, Clip: two instructions per element), 2 any activation.
template <typename T, int V, int kPre, int KW = 0, int SW = 0>
__global__ void __launch_bounds__(kThreads)
    depthwise_nhwc_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                          const T* __restrict__ z, T* __restrict__ y, DepthwiseGeom g, int lanes, EpilogueParams pre,
                          EpilogueParams ep) {
  extern __shared__ float smem[];
  const int taps = g.kh * g.kw;
  const int width = lanes * V;  // channels of this block's chunk (the last ones may lie past C)
  const int c0 = blockIdx.y * width;
  float* sw = smem;                 // [taps][V][lanes]
  float* sb = smem + taps * width;  // [V][lanes]
  for (int i = threadIdx.x; i < taps * width; i += blockDim.x) {
    const int l = i % lanes, tv = i / lanes;
    const int v = tv % V, t = tv / V;
    const int ch = c0 + l * V + v;
    sw[i] = ch < g.c ? to_f(w[ch * taps + t]) : 0.f;
  }
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const int ch = c0 + (i % lanes) * V + i / lanes;
    sb[i] = b && ch < g.c ? to_f(b[ch]) : 0.f;
  }
  __syncthreads();

  const int lane = threadIdx.x % lanes, slot = threadIdx.x / lanes, slots = blockDim.x / lanes;
  const int ch = c0 + lane * V;
  if (ch >= g.c) return;  // no barrier follows
  const int row_strips = (g.ow + kStrip - 1) / kStrip;
  const int strips = g.n * g.oh * row_strips;
  const float* wl = sw + lane;
  for (int st = blockIdx.x * slots + slot; st < strips; st += gridDim.x * slots) {
    const int ox0 = (st % row_strips) * kStrip, q = st / row_strips;
    const int oy = q % g.oh, img = q / g.oh;
    float acc[kStrip][V];
#pragma unroll
    for (int p = 0; p < kStrip; ++p)
#pragma unroll
      for (int v = 0; v < V; ++v) acc[p][v] = sb[v * lanes + lane];
    const int iy0 = oy * g.sh - g.pt, ix0 = ox0 * g.sw - g.pl;
    if constexpr (KW > 0) {
      constexpr int kSpan = (kStrip - 1) * SW + KW;  // input columns the strip reads
      for (int ky = 0; ky < g.kh; ++ky) {
        const int iy = iy0 + ky * g.dh;
        if (static_cast<unsigned>(iy) >= static_cast<unsigned>(g.h)) continue;
        const T* row = x + (img * g.h + iy) * g.w * g.c + ch;
        const float* wrow = wl + ky * KW * width;
        float wt[KW][V];
#pragma unroll
        for (int kx = 0; kx < KW; ++kx)
#pragma unroll
          for (int v = 0; v < V; ++v) wt[kx][v] = wrow[kx * width + v * lanes];
#pragma unroll
        for (int j = 0; j < kSpan; ++j) {
          const int ix = ix0 + j;
          // Padding is skipped (zero after the prologue, which applies to real pixels only). Columns that only
          // outputs past the row's end read are loaded too when they exist; those outputs are never stored.
          if (static_cast<unsigned>(ix) >= static_cast<unsigned>(g.w)) continue;
          float xv[V];
          load_vec<T, V>(row + ix * g.c, xv);
          if constexpr (kPre == 1) {
#pragma unroll
            for (int v = 0; v < V; ++v) xv[v] = fminf(fmaxf(xv[v], pre.lo), pre.hi);
          } else if constexpr (kPre == 2) {
#pragma unroll
            for (int v = 0; v < V; ++v) xv[v] = epilogue_act(xv[v], pre);
          }
#pragma unroll
          for (int p = 0; p < kStrip; ++p) {
            const int kx = j - p * SW;  // a constant once the loops are unrolled
            if (kx < 0 || kx >= KW) continue;
#pragma unroll
            for (int v = 0; v < V; ++v) acc[p][v] = fmaf(xv[v], wt[kx][v], acc[p][v]);
          }
        }
      }
    } else {
    for (int ky = 0; ky < g.kh; ++ky) {
      const int iy = iy0 + ky * g.dh;
      if (static_cast<unsigned>(iy) >= static_cast<unsigned>(g.h)) continue;
      const T* row = x + (img * g.h + iy) * g.w * g.c + ch;
      const float* wrow = wl + ky * g.kw * width;  // width = V * lanes words per tap
      for (int kx = 0; kx < g.kw; ++kx) {
        float wt[V];
#pragma unroll
        for (int v = 0; v < V; ++v) wt[v] = wrow[kx * width + v * lanes];
        const int ixk = ix0 + kx * g.dw;
#pragma unroll
        for (int p = 0; p < kStrip; ++p) {
          const int ix = ixk + p * g.sw;
          // Pixels past the row's end (last strip) and padding are skipped: the prologue, applied to real
          // pixels only, leaves padding zero after it.
          if (ox0 + p >= g.ow || static_cast<unsigned>(ix) >= static_cast<unsigned>(g.w)) continue;
          float xv[V];
          load_vec<T, V>(row + ix * g.c, xv);
#pragma unroll
          for (int v = 0; v < V; ++v) acc[p][v] = fmaf(kPre ? epilogue_act(xv[v], pre) : xv[v], wt[v], acc[p][v]);
        }
      }
    }
    }
#pragma unroll
    for (int p = 0; p < kStrip; ++p) {
      if (ox0 + p >= g.ow) break;
      store_output<T, V>(y, z, ((img * g.oh + oy) * g.ow + ox0 + p) * g.c + ch, acc[p], ep);
    }
  }
}

// Lanes per block for `vecs` channel vectors: chunks of at most kMaxLanes, evenly split so that the last
// chunk does not idle most of its lanes (120 vectors: 4 chunks of 30), and few enough that the chunk's weights
// fit the shared memory. 0: one vector's weights do not fit.
int lanes_for(int vecs, int taps, int v) {
  const int chunks = (vecs + kMaxLanes - 1) / kMaxLanes;
  int lanes = (vecs + chunks - 1) / chunks;
  const int fit = kSmemFloats / ((taps + 1) * v);
  return std::min(lanes, fit);
}

template <typename T, int V>
Status launch_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DepthwiseGeom& g,
                    const EpilogueParams& pre, const EpilogueParams& ep, int sm_count, cudaStream_t stream) {
  const int taps = g.kh * g.kw, vecs = g.c / V;
  const int lanes = lanes_for(vecs, taps, V);
  if (lanes < 1) return unsupported("depthwise convolution: the kernel window is too large for shared memory");
  const int slots = kThreads / lanes;
  const int threads = slots * lanes;
  const unsigned gy = static_cast<unsigned>((vecs + lanes - 1) / lanes);
  const size_t smem = static_cast<size_t>(taps + 1) * lanes * V * sizeof(float);
  // Relu and Clip prologues run as a clamp (the general form would switch on the activation per element).
  const EpilogueParams kernel_pre = as_clamp(pre);
  auto launch = [&](auto kernel) -> Status {
    // One wave of resident blocks, each looping over pixels: the weights are staged once per block, not once
    // per handful of pixels, and no partial second wave leaves SMs idle at the end.
    KILN_ASSIGN_OR_RETURN(int per_sm, resident_blocks_per_sm(reinterpret_cast<const void*>(kernel), threads, smem));
    const int64_t resident = static_cast<int64_t>(std::max(sm_count, 1)) * std::max(per_sm, 1);
    const int64_t per_chunk = std::max<int64_t>(1, resident / gy);
    const int64_t strips = static_cast<int64_t>(g.n) * g.oh * ((g.ow + kStrip - 1) / kStrip);
    const int64_t want = (strips + slots - 1) / slots;
    const dim3 grid(static_cast<unsigned>(std::min(want, per_chunk)), gy);
    kernel<<<grid, threads, smem, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                            static_cast<const T*>(b), static_cast<const T*>(z), static_cast<T*>(y), g,
                                            lanes, kernel_pre, ep);
    return Status::Ok();
  };
  // The fixed windows of the common layers (see the kernel); anything else takes the general form.
  // Only the vector instantiations with a clamp prologue take them. Measured on an H200 (FP16, batch 128): with
  // the ReLU6 prologue (mobilenet_v2) the fixed windows run a 144-channel 56x56 layer in 0.34 ms where the
  // general form, applying the prologue per tap, took 0.99; without a prologue (efficientnet_b0's layers of the
  // same shapes) the general form is faster (0.28 against 0.35 ms: the fixed windows need ~91-124 registers, so
  // fewer warps hide the loads' latency).
  auto pick = [&](auto pre_tag) -> Status {
    constexpr int kP = decltype(pre_tag)::value;
    if constexpr (V > 1 && kP == 1) {
      if (g.dw == 1 && g.kw == 3 && g.sw == 1) return launch(depthwise_nhwc_kernel<T, V, kP, 3, 1>);
      if (g.dw == 1 && g.kw == 3 && g.sw == 2) return launch(depthwise_nhwc_kernel<T, V, kP, 3, 2>);
      if (g.dw == 1 && g.kw == 5 && g.sw == 1) return launch(depthwise_nhwc_kernel<T, V, kP, 5, 1>);
      if (g.dw == 1 && g.kw == 5 && g.sw == 2) return launch(depthwise_nhwc_kernel<T, V, kP, 5, 2>);
    }
    return launch(depthwise_nhwc_kernel<T, V, kP>);
  };
  if (pre.act == 1 || pre.act == 2)
    KILN_RETURN_IF_ERROR(pick(std::integral_constant<int, 1>{}));
  else if (pre.act != 0)
    KILN_RETURN_IF_ERROR(pick(std::integral_constant<int, 2>{}));
  else
    KILN_RETURN_IF_ERROR(pick(std::integral_constant<int, 0>{}));
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// M[img, c] = the sum of image img's partials for channel c, in slot order, over OH * OW. A thread an output,
// consecutive threads consecutive channels.
template <typename T>
__global__ void dw_squeeze_finish_kernel(const float* __restrict__ part, T* __restrict__ mean, int n, int c,
                                         int slots, float inv_count) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n * c) return;
  const int img = i / c, ch = i - img * c;
  const float* p = part + static_cast<size_t>(img) * slots * c + ch;
  float a = 0.f;
  for (int s = 0; s < slots; ++s) a += p[static_cast<size_t>(s) * c];
  mean[i] = from_f<T>(a * inv_count);
}

template <typename T>
Status launch_dispatch(const void* x, const void* w, const void* b, const void* z, void* y, const DepthwiseGeom& g,
                       const EpilogueParams& pre, const EpilogueParams& ep, int sm_count, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = g.c % kVec == 0 && aligned16(x) && aligned16(y) && (!z || aligned16(z));
  // A window whose taps for one vector of channels overflow the shared memory still fits one channel at a time
  // (what depthwise_fits checks).
  const bool vec_fits = lanes_for(g.c / kVec, g.kh * g.kw, kVec) >= 1;
  if (vec && vec_fits) return launch_typed<T, kVec>(x, w, b, z, y, g, pre, ep, sm_count, stream);
  return launch_typed<T, 1>(x, w, b, z, y, g, pre, ep, sm_count, stream);
}

}  // namespace

bool depthwise_fits(const DepthwiseGeom& g) {
  if (g.n < 0 || g.h < 1 || g.w < 1 || g.c < 1 || g.oh < 0 || g.ow < 0 || g.kh < 1 || g.kw < 1 || g.sh < 1 ||
      g.sw < 1 || g.dh < 1 || g.dw < 1 || g.pt < 0 || g.pl < 0)
    return false;
  const int64_t in = static_cast<int64_t>(g.n) * g.h * g.w * g.c;
  const int64_t out = static_cast<int64_t>(g.n) * g.oh * g.ow * g.c;
  const int64_t taps = static_cast<int64_t>(g.kh) * g.kw;
  // The scalar instantiation needs the least shared memory: one channel's taps and bias.
  // Half the int range: a grid-stride step past the last pixel must not overflow either.
  return in < INT_MAX / 2 && out < INT_MAX / 2 && taps * g.c < INT_MAX && taps + 1 <= kSmemFloats;
}

Status launch_depthwise_nhwc(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                             const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep, int sm_count,
                             cudaStream_t stream) {
  if (static_cast<int64_t>(g.n) * g.oh * g.ow == 0) return Status::Ok();
  if (!depthwise_fits(g)) return unsupported("depthwise convolution: sizes beyond the kernel's 32-bit indices");
  return dw::dw_typed(dt, [&](auto t) {
    return launch_dispatch<typename decltype(t)::type>(x, w, b, z, y, g, pre, ep, sm_count, stream);
  });
}

bool depthwise_tiled_fits(const DepthwiseGeom& g, int elem_bytes, int variant) {
  if (elem_bytes != 2 && elem_bytes != 4) return false;
  const int v = 16 / elem_bytes;
  if (!depthwise_fits(g) || g.kh != g.kw || g.sh != g.sw || g.dh != 1 || g.dw != 1 || g.c % v != 0) return false;
  if (variant == kDwRows) return dw_rows_plan(g.n, g.oh, g.ow, g.c / v, v, g.kh, g.sh).ok;
  return dw_tile_plan(g.n, g.oh, g.ow, g.c / v, v, g.kh, g.sh, variant).ok;
}

Status launch_depthwise_nhwc_tiled(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                                   const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep,
                                   int variant, int sm_count, cudaStream_t stream, DwSqueeze* squeeze) {
  if (static_cast<int64_t>(g.n) * g.oh * g.ow == 0) return Status::Ok();
  // The tile holds 16-byte vectors: buffers off that alignment (never the arena's) take the strip kernel.
  if (!aligned16(x) || !aligned16(y) || (z && !aligned16(z)))
    return launch_depthwise_nhwc(dt, x, w, b, z, y, g, pre, ep, sm_count, stream);
  if (!depthwise_tiled_fits(g, static_cast<int>(dtype_size(dt)), variant))
    return unsupported("depthwise convolution: outside the tiled kernel's windows, strides or sizes");
  if (variant == kDwRows) return dw::launch_rows(dt, x, w, b, z, y, g, pre, ep, sm_count, squeeze, stream);
  return dw::launch_tiles(dt, x, w, b, z, y, g, pre, ep, variant, sm_count, squeeze, stream);
}

namespace dw {

float* squeeze_partials(DwSqueeze* squeeze, const DepthwiseGeom& g, int slots_per_image, size_t buffer_bytes,
                        int threads, int cv, int vec) {
  if (!squeeze || !squeeze->mean || !squeeze->workspace) return nullptr;
  const size_t part_bytes = static_cast<size_t>(g.n) * slots_per_image * g.c * sizeof(float);
  if (part_bytes > squeeze->workspace_bytes || !dw_squeeze_fits(threads, cv, vec, buffer_bytes)) return nullptr;
  squeeze->done = true;
  return static_cast<float*>(squeeze->workspace);
}

Status launch_squeeze_finish(DataType dt, const float* part, void* mean, const DepthwiseGeom& g, int slots_per_image,
                             cudaStream_t stream) {
  const int total = g.n * g.c;
  const float inv = 1.f / static_cast<float>(static_cast<int64_t>(g.oh) * g.ow);
  return dw_typed(dt, [&](auto t) -> Status {
    using T = typename decltype(t)::type;
    dw_squeeze_finish_kernel<T><<<(total + 255) / 256, 256, 0, stream>>>(part, static_cast<T*>(mean), g.n, g.c,
                                                                         slots_per_image, inv);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

}  // namespace dw

}  // namespace kiln::cuda
