// kiln::FusedAttention kernels: a tensor-core (mma.sync) flash-attention kernel for half/bfloat16 with a head dim that
// is a multiple of 8 up to 128, and a generic one-query-row-per-block kernel for every other case. Softmax runs in float32 in both.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <type_traits>

#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/mma.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/transformer_kernels.h"

namespace kiln::cuda {
namespace {


// The kernels' view of AttentionParams (32-bit where the grid bounds it anyway). Each of Q, K, V and O is
// addressed as base + b * s[0] + h * s[1] + row * s[2] + d: any of the layouts FusedAttention accepts.
struct Args {
  const void *q, *k, *v, *mask;
  void* o;
  int H, Sq, Sk, D, Dv;
  int group;  // query heads per K/V head (grouped-query attention): query head h reads K/V head h / group
  long long qs[3], ks[3], vs[3], os[3];
  long long ms0, ms1, ms2, ms3;
  float scale;
  int causal;
  int masked_rows_zero;  // 1: a row whose every key is masked gives zeros (its sum l is 0), else NaN
  int mask_pairs;  // the mask's last stride is 1 and its rows start 4-byte aligned: two keys' values in one load
};

// ---- tensor-core path: D = Dv <= kHd (32, 64, 96 or 128), 16 queries per warp, keys in tiles of 64 ----
// A head dim below its tile (40, 80, ...) is read as kHd columns whose last ones are zeros: they add nothing to
// Q K^T, and the output columns they make (0 from V's zeros) are not stored.
// A FlashAttention-2 style kernel on mma.sync m16n8k16: S = Q K^T and the running output O stay in registers, the
// probabilities of S's accumulator fragments are re-packed in place as the A operand of P V, and the K/V tiles are
// double-buffered in shared memory by cp.async so the next tile loads while this one is multiplied.
constexpr int kKeys = static_cast<int>(kAttentionKeyTile);  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;

// Shared-memory size of the kernel below: Q's rows and two buffers each of K and V (kSplit tiles a buffer), rows
// padded by 16 bytes so the eight row addresses of an ldmatrix fall in different banks.
template <int kHd, int kWarps, int kSplit>
constexpr size_t mma_smem_bytes() {
  return static_cast<size_t>(16 * kWarps + 4 * kKeys * kSplit) * (kHd + 8) * 2;
}

// Copies kN rows of a matrix (row stride `ss` elements) into a padded shared tile, asynchronously, each thread the
// same 16-byte column of every (kThreads / (kHd / 8))-th row: the per-copy index arithmetic is worked out once,
// and a tile's loads are a pointer step and one bound test per copy. Rows past `rows` and columns from `cols` on
// become zeros so that they add nothing (P is 0 there, and 0 * garbage could be NaN). `cols` is a multiple of 8.
// A row of 12 pieces (head dim tile 96) that the threads do not divide is copied piece by piece in a strided loop.
template <int kHd, int kThreads, int kN, typename T>
struct RowLoader {
  static constexpr int kChunks = kHd / 8;
  static constexpr bool kFixed = kThreads % kChunks == 0;  // each thread keeps one column
  long long ss;
  int row, col, soff, cols;
  bool col_ok;
  __device__ __forceinline__ RowLoader(long long stride, int c_end) : ss(stride), cols(c_end) {
    row = static_cast<int>(threadIdx.x) / kChunks;
    col = static_cast<int>(threadIdx.x) % kChunks * 8;
    col_ok = col < cols;
    soff = row * (kHd + 8) + col;
  }
  // Rows [r0, r0 + kN) of the matrix at `base` into dst (an invalid copy names `base`, which it does not read).
  __device__ __forceinline__ void load(T* dst, const T* base, int r0, int rows) const {
    if constexpr (kFixed) {
      constexpr int kPer = kThreads / kChunks, kIters = (kN + kPer - 1) / kPer;
      const T* src = base + (r0 + row) * ss + col;
#pragma unroll
      for (int i = 0; i < kIters; ++i) {
        if (kN % kPer != 0 && row + i * kPer >= kN) break;
        const bool valid = col_ok && r0 + row + i * kPer < rows;
        cp_async16(dst + soff + i * kPer * (kHd + 8), valid ? src + i * kPer * ss : base, valid);
      }
    } else {
      for (int idx = threadIdx.x; idx < kN * kChunks; idx += kThreads) {
        const int r = idx / kChunks, c = (idx % kChunks) * 8;
        const bool valid = r0 + r < rows && c < cols;
        cp_async16(dst + r * (kHd + 8) + c, valid ? base + static_cast<long long>(r0 + r) * ss + c : base, valid);
      }
    }
  }
};

// 2^x in one special-function instruction; 2^-inf = 0, which the masked scores rely on.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Launch bounds: at most 128 registers a thread where that leaves the accumulators of head dim 32/64 in registers,
// so four 4-warp or two 8-warp blocks fit an SM's registers; head dims 96 and 128 need more and keep the compiler's
// choice.
template <int kHd, int kWarps, int kSplit>
constexpr int mma_min_blocks() {
  return kHd > 64 || kWarps * kSplit > 16 ? 1 : 16 / (kWarps * kSplit);
}

// kSplit > 1 (the key split, for grids too small to fill the GPU: batch 1): kSplit warps share each 16 query rows,
// warp group s taking key tiles s, s + kSplit, ...; each group keeps its own running max, sum and output, and
// group 0 merges the others' through shared memory at the end (the FlashDecoding combine, inside one block).
template <typename T, bool kMask, int kHd, int kWarps, int kSplit>
__global__ void __launch_bounds__(kWarps * kSplit * 32, (mma_min_blocks<kHd, kWarps, kSplit>()))
    attention_mma_kernel(Args p) {
  constexpr int kRows = 16 * kWarps, kLd = kHd + 8, kThreads = kWarps * kSplit * 32, kStep = kKeys * kSplit;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qsm = reinterpret_cast<T*>(smem);
  T* ksm = qsm + kRows * kLd;      // two buffers of kStep rows
  T* vsm = ksm + 2 * kStep * kLd;  // two buffers of kStep rows
  const int warp = threadIdx.x / 32 % kWarps, lane = threadIdx.x % 32;
  const int split = threadIdx.x / 32 / kWarps;  // the warp group: which of each step's kSplit key tiles it takes
  const int bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const int q0 = blockIdx.x * kRows;
  const T* qg = static_cast<const T*>(p.q) + b * p.qs[0] + h * p.qs[1];
  const T* kg = static_cast<const T*>(p.k) + b * p.ks[0] + (h / p.group) * p.ks[1];
  const T* vg = static_cast<const T*>(p.v) + b * p.vs[0] + (h / p.group) * p.vs[1];
  const int kv_end = p.causal ? min(p.Sk, q0 + kRows) : p.Sk;  // later keys are hidden from every row here
  const int ntiles = (kv_end + kStep - 1) / kStep;  // steps of kSplit key tiles

  const RowLoader<kHd, kThreads, kStep, T> kload(p.ks[2], p.D), vload(p.vs[2], p.D);
  RowLoader<kHd, kThreads, kRows, T>(p.qs[2], p.D).load(qsm, qg, q0, p.Sq);
  kload.load(ksm, kg, 0, p.Sk);
  vload.load(vsm, vg, 0, p.Sk);
  cp_async_commit();

  // Fragment coordinates: this lane holds rows g and g + 8 of the warp's 16, columns 2t and 2t + 1 of each 8.
  const int g = lane / 4, t = lane % 4;
  const int qw = q0 + warp * 16;  // the warp's first query
  const int qi0 = qw + g, qi1 = qi0 + 8;
  // A warp whose rows all lie past Sq only helps load tiles; keys from warp_kv_end on are hidden from all its
  // rows (past the end, or causal and after its last query), so the 16-key steps there are skipped: exact, since
  // their probabilities are 0.
  const bool warp_live = qw < p.Sq;
  const int warp_kv_end = p.causal ? min(p.Sk, qw + 16) : p.Sk;
  const float scale = p.scale * kLog2e;  // exponentials in base 2
  // The mask rows of this lane's two queries (rows past Sq read the last row's values, which are never stored).
  const T* mrow0 = nullptr;
  const T* mrow1 = nullptr;
  if (kMask) {
    const T* mb = static_cast<const T*>(p.mask) + b * p.ms0 + h * p.ms1;
    mrow0 = mb + min(qi0, p.Sq - 1) * p.ms2;
    mrow1 = mb + min(qi1, p.Sq - 1) * p.ms2;
  }
  uint32_t qf[kHd / 16][4];
  float o[kHd / 8][4];
#pragma unroll
  for (int i = 0; i < kHd / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // l: this lane's part of the row sums

  // One key tile of the warp's rows. kEdge: the tile crosses Sk or the causal diagonal of the warp's rows, so keys
  // are tested one by one and 16-key steps no row sees are skipped; an interior tile (every other) has no test at
  // all, and its code no branch between the products.
  auto tile = [&](const T* kt, const T* vt, int k0, auto edge) {
    constexpr bool kEdge = decltype(edge)::value;
    const int live = warp_kv_end - k0;  // keys of this tile some row of the warp sees: the first `live`
    // S = Q K^T: 16 x 64 per warp, as eight 16x8 accumulator fragments.
    float s[kKeys / 8][4];
#pragma unroll
    for (int i = 0; i < kKeys / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kHd / 16; ++kk) {
      if (kHd > 32 && kk * 16 >= p.D) continue;  // the tile's zero columns
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        if (kEdge && np * 16 >= live) continue;  // hidden keys: left 0, masked below
        uint32_t bf[4];  // keys np*16 .. +7 and +8 .. +15, head dims kk*16 .. +15
        ldsm_x4(bf, kt + (np * 16 + (lane / 16) * 8 + lane % 8) * kLd + kk * 16 + ((lane / 8) % 2) * 8);
        mma16816<T>(s[2 * np], qf[kk], bf[0], bf[1]);
        mma16816<T>(s[2 * np + 1], qf[kk], bf[2], bf[3]);
      }
    }

    // Online softmax over this tile, in float32: scale, mask, the new row maxima (across the lane's quad). The
    // products, sums and differences are rounded one by one (__fmul_rn and the like: never contracted into an FMA)
    // so that every block size gives the same bits: the compiler's contraction choices differ between them.
    float mxa[kKeys / 8], mxb[kKeys / 8];  // per 8-key step, rows g and g + 8
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      const int kj = k0 + nt * 8 + 2 * t;  // this lane's keys: kj (elements 0, 2) and kj + 1 (1, 3)
      float x[4] = {__fmul_rn(s[nt][0], scale), __fmul_rn(s[nt][1], scale), __fmul_rn(s[nt][2], scale),
                    __fmul_rn(s[nt][3], scale)};
      if (kMask) {
        if (!kEdge && p.mask_pairs) {
          const float2 a = load_pair(mrow0 + kj);
          const float2 c = p.ms2 == 0 ? a : load_pair(mrow1 + kj);
          x[0] = fmaf(a.x, kLog2e, x[0]);
          x[1] = fmaf(a.y, kLog2e, x[1]);
          x[2] = fmaf(c.x, kLog2e, x[2]);
          x[3] = fmaf(c.y, kLog2e, x[3]);
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = kj + (e & 1);
            if (!kEdge || key < p.Sk) x[e] = fmaf(to_f((e < 2 ? mrow0 : mrow1)[key * p.ms3]), kLog2e, x[e]);
          }
        }
      }
      if (kEdge) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kj + (e & 1);
          if (key >= p.Sk || (p.causal && key > (e < 2 ? qi0 : qi1))) x[e] = -INFINITY;
        }
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = x[e];
      mxa[nt] = fmaxf(x[0], x[1]);
      mxb[nt] = fmaxf(x[2], x[3]);
    }
    // The row maxima as trees rather than one chain of dependent max operations.
#pragma unroll
    for (int w = 1; w < kKeys / 8; w *= 2)
#pragma unroll
      for (int nt = 0; nt + w < kKeys / 8; nt += 2 * w) {
        mxa[nt] = fmaxf(mxa[nt], mxa[nt + w]);
        mxb[nt] = fmaxf(mxb[nt], mxb[nt + w]);
      }
    float mx0 = fmaxf(m0, mxa[0]), mx1 = fmaxf(m1, mxb[0]);
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    // While every key so far is masked, m stays -inf: nothing accumulates (2^(-inf - 0) = 0) and no inf - inf
    // appears.
    const float c0 = mx0 == -INFINITY ? 1.f : fast_exp2(__fsub_rn(m0, mx0));
    const float c1 = mx1 == -INFINITY ? 1.f : fast_exp2(__fsub_rn(m1, mx1));
    m0 = mx0;
    m1 = mx1;
    const float base0 = m0 == -INFINITY ? 0.f : m0, base1 = m1 == -INFINITY ? 0.f : m1;
    float r0 = 0.f, r1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      s[nt][0] = fast_exp2(__fsub_rn(s[nt][0], base0));
      s[nt][1] = fast_exp2(__fsub_rn(s[nt][1], base0));
      s[nt][2] = fast_exp2(__fsub_rn(s[nt][2], base1));
      s[nt][3] = fast_exp2(__fsub_rn(s[nt][3], base1));
      r0 = __fadd_rn(r0, __fadd_rn(s[nt][0], s[nt][1]));
      r1 = __fadd_rn(r1, __fadd_rn(s[nt][2], s[nt][3]));
    }
    l0 = fmaf(l0, c0, r0);
    l1 = fmaf(l1, c1, r1);
#pragma unroll
    for (int i = 0; i < kHd / 8; ++i) {
      o[i][0] = __fmul_rn(o[i][0], c0);
      o[i][1] = __fmul_rn(o[i][1], c0);
      o[i][2] = __fmul_rn(o[i][2], c1);
      o[i][3] = __fmul_rn(o[i][3], c1);
    }

    // O += P V: two adjacent 16x8 probability fragments are exactly one 16x16 A fragment.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      if (kEdge && kk * 16 >= live) continue;  // probabilities all 0
      const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                             pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < kHd / 16; ++dp) {
        if (kHd > 32 && dp * 16 >= p.D) continue;  // output columns that are not stored
        uint32_t bf[4];  // keys kk*16 .. +15, head dims dp*16 .. +7 and +8 .. +15, transposed on load
        ldsm_x4_trans(bf, vt + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kLd + dp * 16 + (lane / 16) * 8);
        mma16816<T>(o[2 * dp], a, bf[0], bf[1]);
        mma16816<T>(o[2 * dp + 1], a, bf[2], bf[3]);
      }
    }
  };

  for (int j = 0; j < ntiles; ++j) {
    if (j + 1 < ntiles) {  // the buffer of tile j - 1, released by the barrier that ended that iteration
      const int nb = (j + 1) & 1;
      kload.load(ksm + nb * kStep * kLd, kg, (j + 1) * kStep, p.Sk);
      vload.load(vsm + nb * kStep * kLd, vg, (j + 1) * kStep, p.Sk);
    }
    cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning tile j
    cp_async_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kHd / 16; ++kk)
        ldsm_x4(qf[kk], qsm + (warp * 16 + lane % 16) * kLd + kk * 16 + (lane / 16) * 8);
    }
    const int k0 = (j * kSplit + split) * kKeys;
    if (warp_live && k0 < warp_kv_end) {
      const T* kt = ksm + ((j & 1) * kSplit + split) * kKeys * kLd;
      const T* vt = vsm + ((j & 1) * kSplit + split) * kKeys * kLd;
      if (k0 + kKeys > p.Sk || (p.causal && k0 + kKeys - 1 > qw))
        tile(kt, vt, k0, std::true_type{});
      else
        tile(kt, vt, k0, std::false_type{});
    }
    // Every warp must be done with this tile's buffers before the next iteration refills them; only tiles up to
    // ntiles - 3 are refilled (tile j + 2 goes to tile j's buffer), so the last two need no barrier and the warps
    // of a short sequence's block run apart (their exponentials and their matrix products overlap).
    if (j + 2 < ntiles) __syncthreads();
  }

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  if constexpr (kSplit > 1) {
    // The groups' partial results meet in the K/V buffers, free once every warp is past its last tile. A lane's
    // fragments hold the same rows and columns in every group, so each lane writes its own registers (value i of
    // lane x at [i][x]: no bank conflicts) and group 0's same lane merges them: with M the larger maximum,
    // o = o_a 2^(m_a - M) + o_b 2^(m_b - M), likewise l; a group that saw no key of a row (m = -inf) adds 0.
    constexpr int kVals = kHd / 8 * 4 + 4;
    float* xs = reinterpret_cast<float*>(ksm);
    __syncthreads();
    if (split > 0) {
      float* mine = xs + ((split - 1) * kWarps + warp) * kVals * 32 + lane;
#pragma unroll
      for (int i = 0; i < kHd / 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) mine[(i * 4 + e) * 32] = o[i][e];
      mine[(kVals - 4) * 32] = m0;
      mine[(kVals - 3) * 32] = m1;
      mine[(kVals - 2) * 32] = l0;
      mine[(kVals - 1) * 32] = l1;
    }
    __syncthreads();
    if (split > 0) return;
#pragma unroll
    for (int g2 = 1; g2 < kSplit; ++g2) {
      const float* other = xs + ((g2 - 1) * kWarps + warp) * kVals * 32 + lane;
      const float mb0 = other[(kVals - 4) * 32], mb1 = other[(kVals - 3) * 32];
      const float mm0 = fmaxf(m0, mb0), mm1 = fmaxf(m1, mb1);
      const float ca0 = m0 == -INFINITY ? 0.f : fast_exp2(m0 - mm0), cb0 = mb0 == -INFINITY ? 0.f : fast_exp2(mb0 - mm0);
      const float ca1 = m1 == -INFINITY ? 0.f : fast_exp2(m1 - mm1), cb1 = mb1 == -INFINITY ? 0.f : fast_exp2(mb1 - mm1);
#pragma unroll
      for (int i = 0; i < kHd / 8; ++i) {
        o[i][0] = o[i][0] * ca0 + other[(i * 4 + 0) * 32] * cb0;
        o[i][1] = o[i][1] * ca0 + other[(i * 4 + 1) * 32] * cb0;
        o[i][2] = o[i][2] * ca1 + other[(i * 4 + 2) * 32] * cb1;
        o[i][3] = o[i][3] * ca1 + other[(i * 4 + 3) * 32] * cb1;
      }
      l0 = l0 * ca0 + other[(kVals - 2) * 32] * cb0;
      l1 = l1 * ca1 + other[(kVals - 1) * 32] * cb1;
      m0 = mm0;
      m1 = mm1;
    }
  }
  // l = 0 (a row with every key masked) gives NaN, as the reference does, or zeros with masked_rows_zero.
  const float inv0 = p.masked_rows_zero && l0 == 0.f ? 0.f : 1.f / l0;
  const float inv1 = p.masked_rows_zero && l1 == 0.f ? 0.f : 1.f / l1;
  T* og = static_cast<T*>(p.o) + b * p.os[0] + h * p.os[1];
#pragma unroll
  for (int i = 0; i < kHd / 8; ++i) {
    const int col = i * 8 + 2 * t;
    if (col >= p.D) break;  // past the head dim (a multiple of 8: col + 1 is inside when col is)
    if (qi0 < p.Sq)
      *reinterpret_cast<uint32_t*>(og + qi0 * p.os[2] + col) = pack2<T>(__fmul_rn(o[i][0], inv0),
                                                                         __fmul_rn(o[i][1], inv0));
    if (qi1 < p.Sq)
      *reinterpret_cast<uint32_t*>(og + qi1 * p.os[2] + col) = pack2<T>(__fmul_rn(o[i][2], inv1),
                                                                         __fmul_rn(o[i][3], inv1));
  }
}

// ---- generic path: one block per (query row, b*h), the row's scores in shared memory ----
constexpr int kGenThreads = 128;

__device__ float block_reduce(float v, bool is_max, float* red) {
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = red[0];
  for (int w = 1; w < kGenThreads / 32; ++w) v = is_max ? fmaxf(v, red[w]) : v + red[w];
  return v;
}

template <typename T, bool kMask>
__global__ void __launch_bounds__(kGenThreads) attention_generic_kernel(Args p) {
  extern __shared__ float gsm[];
  float* qrow = gsm;
  float* sc = qrow + p.D;
  float* red = sc + p.Sk;
  const int i = blockIdx.x, bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const T* q = static_cast<const T*>(p.q) + b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
  const T* k = static_cast<const T*>(p.k) + b * p.ks[0] + (h / p.group) * p.ks[1];
  const T* v = static_cast<const T*>(p.v) + b * p.vs[0] + (h / p.group) * p.vs[1];
  for (int d = threadIdx.x; d < p.D; d += kGenThreads) qrow[d] = to_f(q[d]);
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < p.Sk; j += kGenThreads) {
    const T* kr = k + j * p.ks[2];
    float acc = 0.f;
    for (int d = 0; d < p.D; ++d) acc += qrow[d] * to_f(kr[d]);
    float x = acc * p.scale;
    if (kMask) x += to_f(static_cast<const T*>(p.mask)[b * p.ms0 + h * p.ms1 + i * p.ms2 + j * p.ms3]);
    if (p.causal && j > i) x = -INFINITY;
    sc[j] = x;
    mx = fmaxf(mx, x);
  }
  mx = block_reduce(mx, true, red);
  float sum = 0.f;
  for (int j = threadIdx.x; j < p.Sk; j += kGenThreads) {
    const float e = mx == -INFINITY ? 0.f : expf(sc[j] - mx);
    sc[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, false, red);  // its barriers also publish every sc[j]
  T* o = static_cast<T*>(p.o) + b * p.os[0] + h * p.os[1] + i * p.os[2];
  for (int d = threadIdx.x; d < p.Dv; d += kGenThreads) {
    float acc = 0.f;
    for (int j = 0; j < p.Sk; ++j) acc += sc[j] * to_f(v[j * p.vs[2] + d]);
    o[d] = from_f<T>(p.masked_rows_zero && sum == 0.f ? 0.f : acc / sum);
  }
}

template <typename T, int kHd, int kWarps, int kSplit>
Status launch_mma(const Args& a, int64_t B, int64_t H, int64_t Sq, cudaStream_t stream) {
  constexpr size_t bytes = mma_smem_bytes<kHd, kWarps, kSplit>();
  // The key split's merge reuses the K/V buffers for the other groups' registers.
  static_assert(kSplit == 1 || (kSplit - 1) * kWarps * 32 * (kHd / 8 * 4 + 4) * 4 <= 4 * kKeys * kSplit * (kHd + 8) * 2);
  dim3 grid(static_cast<unsigned>((Sq + 16 * kWarps - 1) / (16 * kWarps)), static_cast<unsigned>(B * H));
  if (a.mask) {
    KILN_CUDA_CHECK(allow_smem(attention_mma_kernel<T, true, kHd, kWarps, kSplit>, bytes));
    attention_mma_kernel<T, true, kHd, kWarps, kSplit><<<grid, kWarps * kSplit * 32, bytes, stream>>>(a);
  } else {
    KILN_CUDA_CHECK(allow_smem(attention_mma_kernel<T, false, kHd, kWarps, kSplit>, bytes));
    attention_mma_kernel<T, false, kHd, kWarps, kSplit><<<grid, kWarps * kSplit * 32, bytes, stream>>>(a);
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T, int kHd>
Status launch_mma_warps(const Args& a, const AttentionParams& p, int warps, int splits, cudaStream_t stream) {
  if (splits == kAttentionKeySplit) {
    switch (warps) {
      case 1: return launch_mma<T, kHd, 1, kAttentionKeySplit>(a, p.B, p.H, p.Sq, stream);
      case 2: return launch_mma<T, kHd, 2, kAttentionKeySplit>(a, p.B, p.H, p.Sq, stream);
      case 4: return launch_mma<T, kHd, 4, kAttentionKeySplit>(a, p.B, p.H, p.Sq, stream);
      default: break;
    }
  } else if (splits <= 1) {
    switch (warps) {
      case 1: return launch_mma<T, kHd, 1, 1>(a, p.B, p.H, p.Sq, stream);
      case 2: return launch_mma<T, kHd, 2, 1>(a, p.B, p.H, p.Sq, stream);
      case 4: return launch_mma<T, kHd, 4, 1>(a, p.B, p.H, p.Sq, stream);
      case 8: return launch_mma<T, kHd, 8, 1>(a, p.B, p.H, p.Sq, stream);
      default: break;
    }
  }
  return unsupported("FusedAttention: no tensor-core kernel with " + std::to_string(warps) + " warps per block and " +
                     std::to_string(splits) + " key splits");
}

template <typename T>
Status launch_typed(const AttentionParams& p, const Args& a, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    const AttentionShape shape = attention_shape(p, std::is_same_v<T, __half> ? DataType::kHALF : DataType::kBF16);
    if (attention_mma_applies(shape)) {
      int warps = p.warps, splits = p.warps ? p.splits : 1;
      if (warps == 0) {
        int sms = p.sm_count;
        if (sms <= 0) {
          int dev = 0;
          KILN_CUDA_CHECK(cudaGetDevice(&dev));
          KILN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        }
        warps = attention_default_warps(shape, sms);
      }
      switch (attention_mma_tile(p.D)) {
        case 32: return launch_mma_warps<T, 32>(a, p, warps, splits, stream);
        case 64: return launch_mma_warps<T, 64>(a, p, warps, splits, stream);
        case 96: return launch_mma_warps<T, 96>(a, p, warps, splits, stream);
        default: return launch_mma_warps<T, 128>(a, p, warps, splits, stream);
      }
    }
  }
  // A block size asked for a case the tensor-core kernel cannot run (rebound addresses that lost their alignment)
  // is ignored: the generic kernel computes the same result. The tuner checks its candidates before timing them.
  {
    const size_t smem = static_cast<size_t>(p.D + p.Sk + 32) * sizeof(float);
    int dev = 0, limit = 0;
    KILN_CUDA_CHECK(cudaGetDevice(&dev));
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (smem > static_cast<size_t>(limit))
      return unsupported("FusedAttention: a row of " + std::to_string(p.Sk) + " keys (head dim " + std::to_string(p.D) +
                         ") does not fit the generic kernel's shared memory");
    dim3 grid(static_cast<unsigned>(p.Sq), static_cast<unsigned>(p.B * p.H));
    if (p.mask) {
      KILN_CUDA_CHECK(allow_smem(attention_generic_kernel<T, true>, smem));
      attention_generic_kernel<T, true><<<grid, kGenThreads, smem, stream>>>(a);
    } else {
      KILN_CUDA_CHECK(allow_smem(attention_generic_kernel<T, false>, smem));
      attention_generic_kernel<T, false><<<grid, kGenThreads, smem, stream>>>(a);
    }
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

}  // namespace

Status launch_fused_attention(DataType dt, const AttentionParams& p, cudaStream_t stream) {
  if (p.B * p.H * p.Sq * p.Dv == 0) return Status::Ok();
  if (p.Sk == 0) return unsupported("FusedAttention: no keys (Sk = 0)");
  if (p.Hk <= 0 || p.H % p.Hk != 0)
    return invalid_argument("FusedAttention: " + std::to_string(p.Hk) + " K/V heads do not divide " +
                            std::to_string(p.H) + " query heads");
  // Row indices are 32-bit in the kernels, a block's last row (q0 + 128) included.
  if (p.B * p.H > 65535 || p.Sq > (1ll << 31) - 129 || p.Sk > (1 << 30))
    return unsupported("FusedAttention: B*H=" + std::to_string(p.B * p.H) + " or the sequence is too large");
  Args a{p.q,
         p.k,
         p.v,
         p.mask,
         p.o,
         static_cast<int>(p.H),
         static_cast<int>(p.Sq),
         static_cast<int>(p.Sk),
         static_cast<int>(p.D),
         static_cast<int>(p.Dv),
         static_cast<int>(p.Hk > 0 ? p.H / p.Hk : 1),
         {p.qs[0], p.qs[1], p.qs[2]},
         {p.ks[0], p.ks[1], p.ks[2]},
         {p.vs[0], p.vs[1], p.vs[2]},
         {p.os[0], p.os[1], p.os[2]},
         p.ms[0],
         p.ms[1],
         p.ms[2],
         p.ms[3],
         p.scale,
         p.causal ? 1 : 0,
         p.masked_rows_zero ? 1 : 0,
         0};
  // Pairs need an even offset to every row the kernel reads (its keys start even) and a 4-byte aligned base.
  a.mask_pairs = p.mask && p.ms[3] == 1 && (p.ms[0] | p.ms[1] | p.ms[2]) % 2 == 0 &&
                 reinterpret_cast<uintptr_t>(p.mask) % 4 == 0;
  switch (dt) {
    case DataType::kFLOAT:
      return launch_typed<float>(p, a, stream);
    case DataType::kHALF:
      return launch_typed<__half>(p, a, stream);
    case DataType::kBF16:
      return launch_typed<__nv_bfloat16>(p, a, stream);
    default:
      return unsupported(std::string("FusedAttention: no kernel for ") + dtype_name(dt));
  }
}

}  // namespace kiln::cuda
