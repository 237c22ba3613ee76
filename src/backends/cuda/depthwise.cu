// Channels-last depthwise convolution with fused prologue and epilogue: one pass over X, one write of Y.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/depthwise.h"
#include "backends/cuda/depthwise_tile_plan.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/mma.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxLanes = 32;               // channel vectors per block (a warp's width of 16-byte loads)
constexpr int kSmemFloats = 48 * 1024 / 4;  // without the opt-in for more than 48 KiB of dynamic smem
constexpr int kStrip = 4;                   // output pixels per thread, along a row

// V consecutive elements, aligned to their size: one 16-byte access for the vector instantiations. Read and
// written as an aggregate of T (no type punning through another type).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[V]) {
  const Pack<T, V> raw = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = to_f(raw.v[i]);
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[V]) {
  Pack<T, V> raw;
#pragma unroll
  for (int i = 0; i < V; ++i) raw.v[i] = from_f<T>(v[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = raw;
}

// The epilogue's activation by class, fixed at compile time in the tiled and row-streaming kernels (dw_classes):
// 1 a clamp to [ep.lo, ep.hi] (Relu, Clip: two instructions an element), 2 SiLU (as epilogue_act computes it), 3
// any activation (epilogue_act's switch, an indirect branch an element; also the identity).
template <int kEp>
__device__ __forceinline__ float dw_epilogue(float x, const EpilogueParams& ep) {
  if constexpr (kEp == 1) return fminf(fmaxf(x, ep.lo), ep.hi);
  if constexpr (kEp == 2) return x / (1.f + expf(-x));
  return epilogue_act(x, ep);
}

// The epilogue of one output vector at element offset `out`: + residual z (if any), activation, store.
template <typename T, int V, int kEp = 3>
__device__ __forceinline__ void store_output(T* y, const T* z, int out, float (&acc)[V], const EpilogueParams& ep) {
  if (z) {
    float zv[V];
    load_vec<T, V>(z + out, zv);
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] += zv[v];
  }
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = dw_epilogue<kEp>(acc[v], ep);
  store_vec<T, V>(y + out, acc);
}

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

// Shared by the tiled kernels below. Weights and bias of the chunk at channel c0 into shared memory as float
// [tap][cv][V] and [cv][V] (zero past C).
template <typename T, int V, int K>
__device__ __forceinline__ void dw_tile_stage_weights(const T* __restrict__ w, const T* __restrict__ b,
                                                      const DepthwiseGeom& g, int c0, int cv, float* sw, float* sb) {
  constexpr int kTaps = K * K;
  for (int i = threadIdx.x; i < kTaps * cv * V; i += blockDim.x) {
    const int v = i % V, t = i / V;
    const int ch = c0 + (t % cv) * V + v;
    sw[i] = ch < g.c ? to_f(w[ch * kTaps + t / cv]) : 0.f;
  }
  for (int i = threadIdx.x; i < cv * V; i += blockDim.x) sb[i] = b && c0 + i < g.c ? to_f(b[c0 + i]) : 0.f;
}

// The prologue of one real input element (kPre as in the tiled kernel); padding never takes it.
template <int kPre>
__device__ __forceinline__ float dw_tile_pre(float f, const EpilogueParams& pre) {
  if constexpr (kPre == 1) return fminf(fmaxf(f, pre.lo), pre.hi);
  if constexpr (kPre == 2) return epilogue_act(f, pre);
  return f;
}

// The outputs of one staged tile (the tile's top-left output oy0, ox0 of image img, channels from c0): a thread
// computes kDwTileRows outputs down one column for one channel vector: for each window column it keeps that
// column's K weights in registers and walks the (kDwTileRows - 1) * S + K input rows once, each row feeding every
// output whose window covers it. Threads outside the image or past C return (the callers' barriers come after).
template <typename T, int V, int K, int S, int kEp>
__device__ __forceinline__ void dw_tile_compute(const Pack<T, V>* tile, const float* sw, const float* sb,
                                                const T* __restrict__ z, T* __restrict__ y, const DepthwiseGeom& g,
                                                const DwTilePlan& p, int img, int oy0, int ox0, int c0,
                                                const EpilogueParams& ep) {
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
    store_output<T, V, kEp>(y, z, ((img * g.oh + oy) * g.ow + ox) * g.c + ch, acc[r], ep);
  }
}

// The tiled form (tactic kiln_depthwise_nhwc_tiled, plan in depthwise_tile_plan.h): a block stages its tile's
// input with the halo in shared memory once (16-byte loads along C, the prologue applied on the way and rounded
// to T as the CPU reference does; padding stays zero), so each input row is fetched from global memory by one
// block instead of by every block whose outputs read it, then computes the tile (dw_tile_compute). Weights
// and bias sit in shared memory as float [tap][cv][V]: a warp spans few vectors, so their reads are broadcasts.
template <typename T, int V, int kPre, int kEp, int K, int S>
__global__ void __launch_bounds__(kDwTileThreads)
    depthwise_tiled_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                           const T* __restrict__ z, T* __restrict__ y, DepthwiseGeom g, DwTilePlan p,
                           EpilogueParams pre, EpilogueParams ep) {
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
  dw_tile_compute<T, V, K, S, kEp>(tile, sw, sb, z, y, g, p, img, oy0, ox0, c0, ep);
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
                                EpilogueParams pre, EpilogueParams ep) {
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
    dw_tile_compute<T, V, K, S, kEp>(cur, sw, sb, z, y, g, p, q / p.tiles_y, q % p.tiles_y * p.th, tx * p.tw, c0,
                                     ep);
    __syncthreads();
  }
}

// The row-streaming form (tactic kiln_depthwise_nhwc_rows, plan DwRowsPlan in depthwise_tile_plan.h): a block
// walks down one strip of output rows over whole staged input rows. Output row r needs input rows r * S .. r * S
// + K - 1 of the strip; group r holds the rows it needs first (0 .. K - 1 for r = 0, then S more a row), copied by
// cp.async into a ring of p.ring = K + (depth + 1) * S rows (row i at slot i % ring, zero-filled where padding or
// past C). Groups 0 .. depth are issued before the loop; at output row r a thread waits for group r, applies the
// prologue to the slots it copied itself (padding stays zero), and after the barrier issues group r + depth + 1
// into the slots of rows (r - 1) * S .. r * S - 1, which only the previous output row read, before it computes
// row r: one barrier a row, with the next rows' copies in flight under the compute.
template <typename T, int V, int kPre, int kEp, int K, int S>
__global__ void __launch_bounds__(kDwTileThreads)
    depthwise_rows_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                          const T* __restrict__ z, T* __restrict__ y, DepthwiseGeom g, DwRowsPlan p,
                          EpilogueParams pre, EpilogueParams ep) {
  using P = Pack<T, V>;
  constexpr int TC = kDwRowsCols, kSpan = (TC - 1) * S + K;
  extern __shared__ float4 dw_smem[];
  const int cv = p.cv;
  float* sw = reinterpret_cast<float*>(dw_smem);       // [tap][cv][V]
  float* sb = sw + p.weight_floats;                    // [cv][V]
  P* ring = reinterpret_cast<P*>(sb + p.bias_floats);  // [ring][in_w][cv]
  const int row_vecs = static_cast<int>(p.row_vecs);
  int q = blockIdx.x;
  const int c0 = q % p.chunks * cv * V;
  q /= p.chunks;
  const int tx = q % p.tiles_x;
  q /= p.tiles_x;
  const int strip = q % p.strips, img = q / p.strips;
  const int oy0 = strip * p.th, rows = min(p.th, g.oh - oy0), ox0 = tx * p.tw;
  const int iy0 = oy0 * S - g.pt, ix0 = ox0 * S - g.pl;
  const int tid = threadIdx.x;
  dw_tile_stage_weights<T, V, K>(w, b, g, c0, cv, sw, sb);
  // A thread copies one vector lane l (blockDim.x = cv * cgs) of every cgs-th staged column, from column tid / cv.
  const int l = tid % cv, cg = tid / cv;
  const bool lane_real = c0 + l * V < g.c;
  const T* xl = x + img * g.h * g.w * g.c + c0 + l * V;
  // Calls f(ring slot, element offset in xl, real) for each vector of input row i of the strip this thread copies.
  auto each_vec = [&](int i, auto&& f) {
    const int iy = iy0 + i;
    const bool row_real = lane_real && static_cast<unsigned>(iy) < static_cast<unsigned>(g.h);
    const int base = (i % p.ring) * row_vecs + l;
    for (int c = cg; c < p.in_w; c += p.cgs) {
      const int ix = ix0 + c;
      f(base + c * cv, (iy * g.w + ix) * g.c, row_real && static_cast<unsigned>(ix) < static_cast<unsigned>(g.w));
    }
  };
  // The input rows of group r: [first, first + count).
  auto group = [&](int r, int& first, int& count) {
    first = r == 0 ? 0 : (r - 1) * S + K;
    count = r == 0 ? K : S;
  };
  auto issue = [&](int r) {
    if (r < rows) {
      int first, count;
      group(r, first, count);
      for (int i = first; i < first + count; ++i)
        each_vec(i, [&](int slot, int off, bool real) { cp_async16(ring + slot, real ? xl + off : x, real); });
    }
    cp_async_commit();  // possibly empty: the waits below count groups
  };
  for (int r = 0; r <= p.depth; ++r) issue(r);
  const int ch = c0 + l * V, oxt = cg * TC;
  const bool active = lane_real && ox0 + oxt < g.ow;
  // The ring slot of input row r * S, stepped rather than divided.
  for (int r = 0, top = 0; r < rows; ++r, top = top + S >= p.ring ? top + S - p.ring : top + S) {
    if (p.depth == 1)
      cp_async_wait<1>();
    else
      cp_async_wait<0>();
    if constexpr (kPre != 0) {
      int first, count;
      group(r, first, count);
      for (int i = first; i < first + count; ++i)
        each_vec(i, [&](int slot, int, bool real) {
          if (!real) return;  // padding (and channels past C) stays zero
          P v = ring[slot];
#pragma unroll
          for (int e = 0; e < V; ++e) v.v[e] = from_f<T>(dw_tile_pre<kPre>(to_f(v.v[e]), pre));
          ring[slot] = v;
        });
    }
    __syncthreads();  // group r (and, the first time, the weights) visible; output row r - 1 read by every thread
    issue(r + p.depth + 1);
    if (!active) continue;
    float acc[TC][V];
#pragma unroll
    for (int c = 0; c < TC; ++c)
#pragma unroll
      for (int v = 0; v < V; ++v) acc[c][v] = sb[l * V + v];
#pragma unroll
    for (int ky = 0; ky < K; ++ky) {
      float wk[K][V];
#pragma unroll
      for (int kx = 0; kx < K; ++kx) {
        const float4* wp = reinterpret_cast<const float4*>(sw + ((ky * K + kx) * cv + l) * V);
#pragma unroll
        for (int v4 = 0; v4 < V / 4; ++v4) {
          const float4 f = wp[v4];
          wk[kx][4 * v4] = f.x, wk[kx][4 * v4 + 1] = f.y, wk[kx][4 * v4 + 2] = f.z, wk[kx][4 * v4 + 3] = f.w;
        }
      }
      // The thread's columns oxt .. oxt + TC - 1 read staged columns oxt * S .. oxt * S + kSpan - 1 (inside
      // in_w: the last column group ends at (tw - 1) * S + K - 1).
      const int slot = top + ky >= p.ring ? top + ky - p.ring : top + ky;
      const P* src = ring + slot * row_vecs + oxt * S * cv + l;
#pragma unroll
      for (int j = 0; j < kSpan; ++j) {
        const P raw = src[j * cv];
        float xv[V];
#pragma unroll
        for (int v = 0; v < V; ++v) xv[v] = to_f(raw.v[v]);
#pragma unroll
        for (int c = 0; c < TC; ++c) {
          const int kx = j - c * S;  // a constant once the loops are unrolled
          if (kx < 0 || kx >= K) continue;
#pragma unroll
          for (int v = 0; v < V; ++v) acc[c][v] = fmaf(xv[v], wk[kx][v], acc[c][v]);
        }
      }
    }
    const int oy = oy0 + r;
#pragma unroll
    for (int c = 0; c < TC; ++c) {
      const int ox = ox0 + oxt + c;
      if (ox >= g.ow) break;
      store_output<T, V, kEp>(y, z, ((img * g.oh + oy) * g.ow + ox) * g.c + ch, acc[c], ep);
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

// Calls f(integral_constant<kPre>, integral_constant<kEp>) with the compile-time classes of a tiled or
// row-streaming kernel: the prologue's (0 none, 1 Relu/Clip as a clamp, 2 any) and the epilogue's (dw_epilogue:
// 1 Relu/Clip, 2 SiLU, 3 any). The epilogue classes 1 and 2 only for 16-bit types without a general prologue (the
// layers of the mobilenet and efficientnet families; the rest keeps the per-element switch, to bound the
// instantiations).
template <typename T, typename F>
Status dw_classes(const EpilogueParams& pre, const EpilogueParams& ep, F&& f) {
  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I3 = std::integral_constant<int, 3>;
  if (pre.act != 0 && pre.act != 1 && pre.act != 2) return f(I2{}, I3{});
  auto with_ep = [&](auto kp) -> Status {
    if constexpr (sizeof(T) == 2) {
      if (ep.act == 1 || ep.act == 2) return f(kp, I1{});
      if (ep.act == 4) return f(kp, I2{});
    }
    return f(kp, I3{});
  };
  return pre.act == 0 ? with_ep(I0{}) : with_ep(I1{});
}

template <typename T>
Status launch_rows_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DepthwiseGeom& g,
                         const EpilogueParams& pre, const EpilogueParams& ep, int sm_count, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  DwRowsPlan p = dw_rows_plan(g.n, g.oh, g.ow, g.c / V, V, g.kh, g.sh);
  if (!p.ok) return unsupported("depthwise convolution: the row-streaming kernel has no plan for this problem");
  const EpilogueParams kernel_pre = as_clamp(pre), kernel_ep = as_clamp(ep);
  auto launch = [&](auto kernel) -> Status {
    const void* key = reinterpret_cast<const void*>(kernel);
    if (p.smem > 48 * 1024) KILN_RETURN_IF_ERROR(allow_tile_smem(key, kDwRowsMaxSmem));
    KILN_ASSIGN_OR_RETURN(int per_sm, resident_blocks_per_sm(key, p.threads, p.smem));
    dw_rows_strips(p, g.n, g.oh, g.kh, g.sh, static_cast<int64_t>(std::max(sm_count, 1)) * std::max(per_sm, 1));
    kernel<<<static_cast<unsigned>(p.blocks), p.threads, p.smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<const T*>(z),
        static_cast<T*>(y), g, p, kernel_pre, kernel_ep);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  return dw_classes<T>(pre, ep, [&](auto pre_tag, auto ep_tag) -> Status {
    constexpr int kP = decltype(pre_tag)::value, kE = decltype(ep_tag)::value;
    if (g.kh == 3 && g.sh == 1) return launch(depthwise_rows_kernel<T, V, kP, kE, 3, 1>);
    if (g.kh == 3 && g.sh == 2) return launch(depthwise_rows_kernel<T, V, kP, kE, 3, 2>);
    if (g.kh == 5 && g.sh == 1) return launch(depthwise_rows_kernel<T, V, kP, kE, 5, 1>);
    return launch(depthwise_rows_kernel<T, V, kP, kE, 5, 2>);  // the plan admits no other window
  });
}

template <typename T>
Status launch_tiled_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DepthwiseGeom& g,
                          const EpilogueParams& pre, const EpilogueParams& ep, int variant, int sm_count,
                          cudaStream_t stream) {
  if (variant == kDwRows) return launch_rows_typed<T>(x, w, b, z, y, g, pre, ep, sm_count, stream);
  constexpr int V = 16 / sizeof(T);
  const DwTilePlan p = dw_tile_plan(g.n, g.oh, g.ow, g.c / V, V, g.kh, g.sh, variant);
  if (!p.ok) return unsupported("depthwise convolution: the tiled kernel has no plan for this problem");
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
        static_cast<T*>(y), g, p, kernel_pre, kernel_ep);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  return dw_classes<T>(pre, ep, [&](auto pre_tag, auto ep_tag) -> Status {
    constexpr int kP = decltype(pre_tag)::value, kE = decltype(ep_tag)::value;
    if (pipe) {
      if (g.kh == 3 && g.sh == 1) return launch(depthwise_tiled_pipe_kernel<T, V, kP, kE, 3, 1>);
      if (g.kh == 3 && g.sh == 2) return launch(depthwise_tiled_pipe_kernel<T, V, kP, kE, 3, 2>);
      if (g.kh == 5 && g.sh == 1) return launch(depthwise_tiled_pipe_kernel<T, V, kP, kE, 5, 1>);
      return launch(depthwise_tiled_pipe_kernel<T, V, kP, kE, 5, 2>);
    }
    if (g.kh == 3 && g.sh == 1) return launch(depthwise_tiled_kernel<T, V, kP, kE, 3, 1>);
    if (g.kh == 3 && g.sh == 2) return launch(depthwise_tiled_kernel<T, V, kP, kE, 3, 2>);
    if (g.kh == 5 && g.sh == 1) return launch(depthwise_tiled_kernel<T, V, kP, kE, 5, 1>);
    return launch(depthwise_tiled_kernel<T, V, kP, kE, 5, 2>);  // the plan admits no other window
  });
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

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
  switch (dt) {
    case DataType::kFLOAT:
      return launch_dispatch<float>(x, w, b, z, y, g, pre, ep, sm_count, stream);
    case DataType::kHALF:
      return launch_dispatch<__half>(x, w, b, z, y, g, pre, ep, sm_count, stream);
    case DataType::kBF16:
      return launch_dispatch<__nv_bfloat16>(x, w, b, z, y, g, pre, ep, sm_count, stream);
    default:
      return internal_error(std::string("depthwise convolution: unexpected data type ") + dtype_name(dt));
  }
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
                                   int variant, int sm_count, cudaStream_t stream) {
  if (static_cast<int64_t>(g.n) * g.oh * g.ow == 0) return Status::Ok();
  // The tile holds 16-byte vectors: buffers off that alignment (never the arena's) take the strip kernel.
  if (!aligned16(x) || !aligned16(y) || (z && !aligned16(z)))
    return launch_depthwise_nhwc(dt, x, w, b, z, y, g, pre, ep, sm_count, stream);
  if (!depthwise_tiled_fits(g, static_cast<int>(dtype_size(dt)), variant))
    return unsupported("depthwise convolution: outside the tiled kernel's windows, strides or sizes");
  switch (dt) {
    case DataType::kFLOAT:
      return launch_tiled_typed<float>(x, w, b, z, y, g, pre, ep, variant, sm_count, stream);
    case DataType::kHALF:
      return launch_tiled_typed<__half>(x, w, b, z, y, g, pre, ep, variant, sm_count, stream);
    case DataType::kBF16:
      return launch_tiled_typed<__nv_bfloat16>(x, w, b, z, y, g, pre, ep, variant, sm_count, stream);
    default:
      return internal_error(std::string("depthwise convolution: unexpected data type ") + dtype_name(dt));
  }
}

}  // namespace kiln::cuda
