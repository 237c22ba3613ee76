// The tiled depthwise convolution (tactics kiln_depthwise_nhwc_tiled, _small, _pipe, _wide, _wide_pipe; plans in
// depthwise_tile_plan.h), entered through launch_depthwise_nhwc_tiled (depthwise.cu).
#include <algorithm>
#include <cstdint>

#include "backends/cuda/depthwise_kernels.cuh"
#include "backends/cuda/depthwise_tile_plan.h"
#include "backends/cuda/mma.cuh"

namespace kiln::cuda::dw {
namespace {

// The outputs of one staged tile (the tile's top-left output oy0, ox0 of image img, channels from c0): a thread
// computes kDwTileRows outputs down one column for one channel vector: for each window column it keeps that
// column's K weights in registers and walks the (kDwTileRows - 1) * S + K input rows once, each row feeding every
// output whose window covers it. Threads outside the image or past C return (the callers' barriers come after).
// With squeeze, the stored outputs are added to sum (the caller's zeros; dw_block_channel_sums).
template <typename T, int V, int K, int S, int kEp>
__device__ __forceinline__ void dw_tile_compute(const Pack<T, V>* tile, const float* sw, const float* sb,
                                                const T* __restrict__ z, T* __restrict__ y, const DepthwiseGeom& g,
                                                const DwTilePlan& p, int img, int oy0, int ox0, int c0,
                                                const EpilogueParams& ep, bool squeeze, float (&sum)[V]) {
  using P = Pack<T, V>;
  constexpr int R = kDwTileRows, kSpan = (R - 1) * S + K;
  const int cv = p.cv, row_slots = S * p.in_ws;
  const int tid = threadIdx.x;
  const int l = tid % cv, cq = tid / cv;
  const int col = cq % p.tw, grp = cq / p.tw;
  const int ch = c0 + l * V, ox = ox0 + col, oyb = oy0 + grp * R;
  if (ch >= g.c || ox >= g.ow || oyb >= g.oh) return;
  float acc[R][V];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int v = 0; v < V; ++v) acc[r][v] = sb[l * V + v];
  const int rstride = row_slots * cv;  // vectors per tile row
  // Column col * S + kx lies at slot dw_tile_column(kx, S, in_ws) + col: consecutive columns, consecutive slots.
  const P* src = tile + (grp * R * S * row_slots + col) * cv + l;
#pragma unroll
  for (int kx = 0; kx < K; ++kx) {
    float wc[K][V];
#pragma unroll
    for (int ky = 0; ky < K; ++ky) {
      const float4* wp = reinterpret_cast<const float4*>(sw + ((ky * K + kx) * cv + l) * V);
#pragma unroll
      for (int v4 = 0; v4 < V / 4; ++v4) {
        const float4 f = wp[v4];
        wc[ky][4 * v4] = f.x, wc[ky][4 * v4 + 1] = f.y, wc[ky][4 * v4 + 2] = f.z, wc[ky][4 * v4 + 3] = f.w;
      }
    }
#pragma unroll
    for (int j = 0; j < kSpan; ++j) {
      const P raw = src[j * rstride + dw_tile_column(kx, S, p.in_ws) * cv];
      float xv[V];
#pragma unroll
      for (int v = 0; v < V; ++v) xv[v] = to_f(raw.v[v]);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int ky = j - r * S;  // a constant once the loops are unrolled
        if (ky < 0 || ky >= K) continue;
#pragma unroll
        for (int v = 0; v < V; ++v) acc[r][v] = fmaf(xv[v], wc[ky][v], acc[r][v]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int oy = oyb + r;
    if (oy >= g.oh) break;
    store_output<T, V, kEp>(y, z, ((img * g.oh + oy) * g.ow + ox) * g.c + ch, acc[r], ep, squeeze, sum);
  }
}

// The tiled form (tactic kiln_depthwise_nhwc_tiled, plan in depthwise_tile_plan.h): a block stages its tile's
// input with the halo in shared memory once (16-byte loads along C, the prologue applied on the way and rounded
// to T as the CPU reference does; padding stays zero), so each input row is fetched from global memory by one
// block instead of by every block whose outputs read it, then computes the tile (dw_tile_compute). Weights
// and bias sit in shared memory as float [tap][cv][V]: a warp spans few vectors, so their reads are broadcasts.
// part (null: none) takes the block's per-channel sums of Y at part[tile * C] (the squeeze, depthwise.h).
template <typename T, int V, int kPre, int kEp, int K, int S>
__global__ void __launch_bounds__(kDwTileThreads)
    depthwise_tiled_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                           const T* __restrict__ z, T* __restrict__ y, DepthwiseGeom g, DwTilePlan p,
                           EpilogueParams pre, EpilogueParams ep, float* __restrict__ part) {
  using P = Pack<T, V>;
  extern __shared__ float4 dw_smem[];
  const int cv = p.cv;
  float* sw = reinterpret_cast<float*>(dw_smem);       // [tap][cv][V]
  float* sb = sw + p.weight_floats;                    // [cv][V]
  P* tile = reinterpret_cast<P*>(sb + p.bias_floats);  // [in_h][S * in_ws][cv]; both counts multiples of 4 floats
  const int row_slots = S * p.in_ws;
  int q = blockIdx.x;
  const int c0 = q % p.chunks * cv * V;
  q /= p.chunks;
  const int tx = q % p.tiles_x;
  q /= p.tiles_x;
  const int ty = q % p.tiles_y, img = q / p.tiles_y;
  const int oy0 = ty * p.th, ox0 = tx * p.tw;
  const int iy0 = oy0 * S - g.pt, ix0 = ox0 * S - g.pl;
  const int tid = threadIdx.x, nt = blockDim.x;
  dw_tile_stage_weights<T, V, K>(w, b, g, c0, cv, sw, sb);
  // A thread stages one vector lane l0 throughout (blockDim.x is a multiple of cv), walking the tile's pixels
  // pstep at a time with its row and column stepped, not divided; kU loads in flight before any is stored
  // (one with a general prologue activation, whose switch otherwise spills the held vectors).
  constexpr int kU = kPre == 2 ? 1 : 4;
  const int l0 = tid % cv, pstep = nt / cv, pixels = p.in_h * p.in_w;
  const int drow = pstep / p.in_w, dcol = pstep % p.in_w;
  const bool lane_real = c0 + l0 * V < g.c;
  const T* xl = x + img * g.h * g.w * g.c + c0 + l0 * V;
  int pix = tid / cv, srow = pix / p.in_w, scol = pix % p.in_w;
  while (pix < pixels) {
    P raw[kU];
    bool real[kU];
    int at[kU];  // the tile slot of each load, -1 past the tile
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      at[u] = pix < pixels ? srow * row_slots + dw_tile_column(scol, S, p.in_ws) : -1;
      const int iy = iy0 + srow, ix = ix0 + scol;
      real[u] = pix < pixels && lane_real && static_cast<unsigned>(iy) < static_cast<unsigned>(g.h) &&
                static_cast<unsigned>(ix) < static_cast<unsigned>(g.w);
      if (real[u]) raw[u] = *reinterpret_cast<const P*>(xl + (iy * g.w + ix) * g.c);
      pix += pstep;
      srow += drow;
      scol += dcol;
      if (scol >= p.in_w) scol -= p.in_w, ++srow;
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      if (at[u] < 0) break;
      P out;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        // Padding (and channels past C) stays zero: the prologue applies to real pixels only.
        out.v[v] = from_f<T>(real[u] ? dw_tile_pre<kPre>(to_f(raw[u].v[v]), pre) : 0.f);
      }
      tile[at[u] * cv + l0] = out;
    }
  }
  __syncthreads();
  float sum[V] = {};
  dw_tile_compute<T, V, K, S, kEp>(tile, sw, sb, z, y, g, p, img, oy0, ox0, c0, ep, part != nullptr, sum);
  if (part) {
    __syncthreads();  // the tile read by every thread: its buffer takes the sums
    dw_block_channel_sums<V>(sum, cv, reinterpret_cast<float*>(tile), part + (blockIdx.x / p.chunks) * g.c, c0, g.c);
  }
}

// The pipelined form (tactic kiln_depthwise_nhwc_tiled_pipe, plan variant kDwTilePipe): the tiled kernel made
// persistent. gridDim.x is a multiple of p.chunks, so a block keeps one channel chunk (its weights staged once)
// and walks the chunk's tiles gridDim.x / chunks apart, with two input buffers: the 16-byte cp.async copies of
// the next tile (zero-filled where padding or past C) are in flight while the current one is computed, so the
// loads no longer wait behind a barrier for the compute. With a prologue each thread, once its own copies of the
// tile have landed, rewrites those slots in place (prologue applied, rounded to T; padding left zero) before the
// barrier that publishes the tile: the global loads stay asynchronous and no registers are held across the
// compute (staging the loads in registers would take 17 vectors a thread for a stride-2 tile).
template <typename T, int V, int kPre, int kEp, int K, int S>
__global__ void __launch_bounds__(kDwTileThreads)
    depthwise_tiled_pipe_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                const T* __restrict__ z, T* __restrict__ y, DepthwiseGeom g, DwTilePlan p,
                                EpilogueParams pre, EpilogueParams ep, float* __restrict__ part) {
  using P = Pack<T, V>;
  extern __shared__ float4 dw_smem[];
  const int cv = p.cv;
  float* sw = reinterpret_cast<float*>(dw_smem);        // [tap][cv][V]
  float* sb = sw + p.weight_floats;                     // [cv][V]
  P* tiles = reinterpret_cast<P*>(sb + p.bias_floats);  // two of [in_h][S * in_ws][cv], tile_vecs apart
  const int row_slots = S * p.in_ws;
  const int c0 = blockIdx.x % p.chunks * cv * V;
  dw_tile_stage_weights<T, V, K>(w, b, g, c0, cv, sw, sb);
  const int spatial = static_cast<int>(p.blocks / p.chunks), sstep = gridDim.x / p.chunks;
  const int tid = threadIdx.x, nt = blockDim.x;
  const int l0 = tid % cv, pstep = nt / cv, pixels = p.in_h * p.in_w;
  const int drow = pstep / p.in_w, dcol = pstep % p.in_w;
  const bool lane_real = c0 + l0 * V < g.c;
  // Calls f(slot, element offset in x, real) for each pixel of tile sp that this thread stages (lane l0).
  auto each_pixel = [&](int sp, auto&& f) {
    const int tx = sp % p.tiles_x, q = sp / p.tiles_x;
    const int ty = q % p.tiles_y, img = q / p.tiles_y;
    const int iy0 = ty * p.th * S - g.pt, ix0 = tx * p.tw * S - g.pl;
    const int base = img * g.h * g.w * g.c + c0 + l0 * V;
    int pix = tid / cv, srow = pix / p.in_w, scol = pix % p.in_w;
    for (; pix < pixels; pix += pstep) {
      const int iy = iy0 + srow, ix = ix0 + scol;
      const bool real = lane_real && static_cast<unsigned>(iy) < static_cast<unsigned>(g.h) &&
                        static_cast<unsigned>(ix) < static_cast<unsigned>(g.w);
      f((srow * row_slots + dw_tile_column(scol, S, p.in_ws)) * cv + l0, base + (iy * g.w + ix) * g.c, real);
      srow += drow;
      scol += dcol;
      if (scol >= p.in_w) scol -= p.in_w, ++srow;
    }
  };
  auto issue = [&](int sp, P* buf) {
    each_pixel(sp, [&](int slot, int off, bool real) { cp_async16(buf + slot, real ? x + off : x, real); });
  };
  int sp = blockIdx.x / p.chunks;
  if (sp < spatial) issue(sp, tiles);
  cp_async_commit();
  for (int i = 0; sp < spatial; sp += sstep, ++i) {
    P* cur = tiles + (i & 1) * p.tile_vecs;
    // The other buffer was last read by the previous tile's compute, which the barrier ending it closed.
    if (sp + sstep < spatial) issue(sp + sstep, tiles + ((i + 1) & 1) * p.tile_vecs);
    cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group in flight
    cp_async_wait<1>();
    if constexpr (kPre != 0) {
      each_pixel(sp, [&](int slot, int, bool real) {
        if (!real) return;  // padding (and channels past C) stays zero
        P v = cur[slot];
#pragma unroll
        for (int e = 0; e < V; ++e) v.v[e] = from_f<T>(dw_tile_pre<kPre>(to_f(v.v[e]), pre));
        cur[slot] = v;
      });
    }
    __syncthreads();  // the tile (and, the first time, the weights) visible to every thread
    const int tx = sp % p.tiles_x, q = sp / p.tiles_x;
    float sum[V] = {};
    dw_tile_compute<T, V, K, S, kEp>(cur, sw, sb, z, y, g, p, q / p.tiles_y, q % p.tiles_y * p.th, tx * p.tw, c0,
                                     ep, part != nullptr, sum);
    __syncthreads();
    // This tile's buffer is free until the copies issued two tiles on (dw_block_channel_sums ends with a barrier).
    if (part) dw_block_channel_sums<V>(sum, cv, reinterpret_cast<float*>(cur), part + sp * g.c, c0, g.c);
  }
}

template <typename T>
Status launch_tiled_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DepthwiseGeom& g,
                          const EpilogueParams& pre, const EpilogueParams& ep, int variant, int sm_count,
                          DwSqueeze* squeeze, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const DwTilePlan p = dw_tile_plan(g.n, g.oh, g.ow, g.c / V, V, g.kh, g.sh, variant);
  if (!p.ok) return unsupported("depthwise convolution: the tiled kernel has no plan for this problem");
  const int slots = p.tiles_y * p.tiles_x;
  float* part = squeeze_partials(squeeze, g, slots, p.tile_vecs * 16, p.threads, p.cv, V);
  const EpilogueParams kernel_pre = as_clamp(pre), kernel_ep = as_clamp(ep);
  const bool pipe = dw_tile_pipelined(variant);
  auto launch = [&](auto kernel) -> Status {
    const void* key = reinterpret_cast<const void*>(kernel);
    if (p.smem > 48 * 1024) KILN_RETURN_IF_ERROR(allow_tile_smem(key, pipe ? kDwPipeMaxSmem : kDwTileMaxSmem));
    int64_t grid = p.blocks;
    if (pipe) {
      // One wave of resident blocks, a whole number of them per chunk (each keeps its chunk's weights), at most
      // one per tile of the chunk.
      KILN_ASSIGN_OR_RETURN(int per_sm, resident_blocks_per_sm(key, p.threads, p.smem));
      const int64_t resident = static_cast<int64_t>(std::max(sm_count, 1)) * std::max(per_sm, 1);
      grid = p.chunks * std::clamp<int64_t>(resident / p.chunks, 1, p.blocks / p.chunks);
    }
    kernel<<<static_cast<unsigned>(grid), p.threads, p.smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<const T*>(z),
        static_cast<T*>(y), g, p, kernel_pre, kernel_ep, part);
    KILN_CUDA_LAUNCH_CHECK();
    if (part) return launch_squeeze_finish(dw_dtype<T>(), part, squeeze->mean, g, slots, stream);
    return Status::Ok();
  };
  return dw_instance<T>(pre, ep, g, [&](auto kp, auto ke, auto k, auto s) -> Status {
    constexpr int kP = decltype(kp)::value, kE = decltype(ke)::value, K = decltype(k)::value, S = decltype(s)::value;
    return pipe ? launch(depthwise_tiled_pipe_kernel<T, V, kP, kE, K, S>)
                : launch(depthwise_tiled_kernel<T, V, kP, kE, K, S>);
  });
}

}  // namespace

Status launch_tiles(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                    const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep, int variant,
                    int sm_count, DwSqueeze* squeeze, cudaStream_t stream) {
  return dw_typed(dt, [&](auto t) {
    return launch_tiled_typed<typename decltype(t)::type>(x, w, b, z, y, g, pre, ep, variant, sm_count, squeeze,
                                                          stream);
  });
}

}  // namespace kiln::cuda::dw
