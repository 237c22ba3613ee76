// The row-streaming depthwise convolution (tactic kiln_depthwise_nhwc_rows; plan DwRowsPlan in
// depthwise_tile_plan.h), entered through launch_depthwise_nhwc_tiled (depthwise.cu).
#include <algorithm>
#include <cstdint>

#include "backends/cuda/depthwise_kernels.cuh"
#include "backends/cuda/depthwise_tile_plan.h"
#include "backends/cuda/mma.cuh"

namespace kiln::cuda::dw {
namespace {

// The row-streaming form (tactic kiln_depthwise_nhwc_rows, plan DwRowsPlan in depthwise_tile_plan.h): a block
// walks down one strip of output rows over whole staged input rows. Output row r needs input rows r * S .. r * S
// + K - 1 of the strip; group r holds the rows it needs first (0 .. K - 1 for r = 0, then S more a row), copied by
// cp.async into a ring of p.ring = K + (depth + 1) * S rows (row i at slot i % ring, zero-filled where padding or
// past C). Groups 0 .. depth are issued before the loop; at output row r a thread waits for group r, applies the
// prologue to the slots it copied itself (padding stays zero), and after the barrier issues group r + depth + 1
// into the slots of rows (r - 1) * S .. r * S - 1, which only the previous output row read, before it computes
// row r: one barrier a row, with the next rows' copies in flight under the compute. part (null: none) takes the
// block's per-channel sums of Y at part[(strip column) * C] (the squeeze, depthwise.h).
template <typename T, int V, int kPre, int kEp, int K, int S>
__global__ void __launch_bounds__(kDwTileThreads)
    depthwise_rows_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                          const T* __restrict__ z, T* __restrict__ y, DepthwiseGeom g, DwRowsPlan p,
                          EpilogueParams pre, EpilogueParams ep, float* __restrict__ part) {
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
  float sum[V] = {};
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
      store_output<T, V, kEp>(y, z, ((img * g.oh + oy) * g.ow + ox) * g.c + ch, acc[c], ep, part != nullptr, sum);
    }
  }
  if (part) {
    __syncthreads();  // every row read (the last group waited for above): the ring takes the sums
    dw_block_channel_sums<V>(sum, cv, reinterpret_cast<float*>(ring), part + (blockIdx.x / p.chunks) * g.c, c0, g.c);
  }
}

template <typename T>
Status launch_rows_typed(const void* x, const void* w, const void* b, const void* z, void* y, const DepthwiseGeom& g,
                         const EpilogueParams& pre, const EpilogueParams& ep, int sm_count, DwSqueeze* squeeze,
                         cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  DwRowsPlan p = dw_rows_plan(g.n, g.oh, g.ow, g.c / V, V, g.kh, g.sh);
  if (!p.ok) return unsupported("depthwise convolution: the row-streaming kernel has no plan for this problem");
  const EpilogueParams kernel_pre = as_clamp(pre), kernel_ep = as_clamp(ep);
  auto launch = [&](auto kernel) -> Status {
    const void* key = reinterpret_cast<const void*>(kernel);
    if (p.smem > 48 * 1024) KILN_RETURN_IF_ERROR(allow_tile_smem(key, kDwRowsMaxSmem));
    KILN_ASSIGN_OR_RETURN(int per_sm, resident_blocks_per_sm(key, p.threads, p.smem));
    dw_rows_strips(p, g.n, g.oh, g.kh, g.sh, static_cast<int64_t>(std::max(sm_count, 1)) * std::max(per_sm, 1));
    const int slots = p.strips * p.tiles_x;
    float* part = squeeze_partials(squeeze, g, slots, static_cast<size_t>(p.ring) * p.row_vecs * 16, p.threads, p.cv, V);
    kernel<<<static_cast<unsigned>(p.blocks), p.threads, p.smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<const T*>(z),
        static_cast<T*>(y), g, p, kernel_pre, kernel_ep, part);
    KILN_CUDA_LAUNCH_CHECK();
    if (part) return launch_squeeze_finish(dw_dtype<T>(), part, squeeze->mean, g, slots, stream);
    return Status::Ok();
  };
  return dw_instance<T>(pre, ep, g, [&](auto kp, auto ke, auto k, auto s) -> Status {
    return launch(depthwise_rows_kernel<T, V, decltype(kp)::value, decltype(ke)::value, decltype(k)::value,
                                        decltype(s)::value>);
  });
}

}  // namespace

Status launch_rows(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                   const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep, int sm_count,
                   DwSqueeze* squeeze, cudaStream_t stream) {
  return dw_typed(dt, [&](auto t) {
    return launch_rows_typed<typename decltype(t)::type>(x, w, b, z, y, g, pre, ep, sm_count, squeeze, stream);
  });
}

}  // namespace kiln::cuda::dw
