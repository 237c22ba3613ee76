// kiln::FusedAttention kernels: a tensor-core (mma.sync) flash-attention kernel for half/bfloat16 with a head dim that
// is a multiple of 8 up to 128, and a generic one-query-row-per-block kernel for every other case. Softmax runs in float32 in both.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>

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
  int BH = 0;      // batch * heads (the persistent kernel's items are BH query blocks of each)
};

// ---- tensor-core path: D = Dv <= kHd (32, 64, 96 or 128), 16 queries per warp, keys in tiles of 64 ----
// A head dim below its tile (40, 80, ...) is read as kHd columns whose last ones are zeros: they add nothing to
// Q K^T, and the output columns they make (0 from V's zeros) are not stored.
// A FlashAttention-2 style kernel on mma.sync m16n8k16: S = Q K^T and the running output O stay in registers, the
// probabilities of S's accumulator fragments are re-packed in place as the A operand of P V, and the K/V tiles are
// double-buffered in shared memory by cp.async so the next tile loads while this one is multiplied.
constexpr int kKeys = static_cast<int>(kAttentionKeyTile);  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;

// Shared-memory size of the kernel below: Q's rows (kRT 16-row tiles a warp; two buffers when persistent) and two
// buffers each of K and V (kSplit tiles a buffer), rows padded by 16 bytes so the eight row addresses of an ldmatrix fall in different banks.
template <int kHd, int kWarps, int kSplit, int kRT, bool kPersist>
constexpr size_t mma_smem_bytes() {
  return static_cast<size_t>((kPersist ? 2 : 1) * 16 * kRT * kWarps + 4 * kKeys * kSplit) * (kHd + 8) * 2;
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
// so four 4-warp or two 8-warp blocks fit an SM's registers; two row tiles a warp (twice the accumulators) at most
// 255 (two 4-warp blocks); a persistent block (its next item's addresses besides) at most 168 (twelve warps an SM);
// head dims 96 and 128 need more and keep the compiler's choice.
template <int kHd, int kWarps, int kSplit, int kRT, bool kPersist>
constexpr int mma_min_blocks() {
  if (kPersist) return 12 / kWarps;
  return kHd > 64 || kWarps * kSplit > 16 ? 1 : 16 / (kWarps * kSplit * kRT * kRT);
}

// kSplit > 1 (the key split, for grids too small to fill the GPU: batch 1): kSplit warps share each 16 query rows,
// warp group s taking key tiles s, s + kSplit, ...; each group keeps its own running max, sum and output, and
// group 0 merges the others' through shared memory at the end (the FlashDecoding combine, inside one block).
// kRT > 1 (kSplit 1): a warp owns kRT 16-row tiles of consecutive queries, and every K/V fragment it loads from
// shared memory feeds each tile's product. Each row's arithmetic is the same whatever the block (bit for bit).
// kPersist (kSplit 1): the grid is what the GPU holds at once and each block takes the query blocks ("items")
// blockIdx.x, + gridDim.x, ... in turn, loading the next item's Q and first K/V tile while it computes the last
// tile of the current one. For short sequences (gpt2's 128 keys: one or two tiles an item, 1.45 waves of blocks)
// the blocks otherwise load, then compute, then load again wave by wave; this streams the loads under the math.
template <typename T, bool kMask, int kHd, int kWarps, int kSplit, int kRT, bool kPersist>
__global__ void __launch_bounds__(kWarps * kSplit * 32, (mma_min_blocks<kHd, kWarps, kSplit, kRT, kPersist>()))
    attention_mma_kernel(Args p) {
  static_assert(kSplit == 1 || (kRT == 1 && !kPersist), "the key split merges one row tile a warp, one item a block");
  constexpr int kRows = 16 * kRT * kWarps, kLd = kHd + 8, kThreads = kWarps * kSplit * 32, kStep = kKeys * kSplit;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qsm = reinterpret_cast<T*>(smem);                // kPersist ? 2 : 1 buffers of kRows rows
  T* ksm = qsm + (kPersist ? 2 : 1) * kRows * kLd;  // two buffers of kStep rows
  T* vsm = ksm + 2 * kStep * kLd;                   // two buffers of kStep rows
  const int warp = threadIdx.x / 32 % kWarps, lane = threadIdx.x % 32;
  const int split = threadIdx.x / 32 / kWarps;  // the warp group: which of each step's kSplit key tiles it takes
  // Fragment coordinates: this lane holds rows g and g + 8 of each of the warp's 16-row tiles, columns 2t and
  // 2t + 1 of each 8.
  const int g = lane / 4, t = lane % 4;
  const float scale = p.scale * kLog2e;  // exponentials in base 2
  const int qblocks = (p.Sq + kRows - 1) / kRows;
  const RowLoader<kHd, kThreads, kRows, T> qload(p.qs[2], p.D);
  const RowLoader<kHd, kThreads, kStep, T> kload(p.ks[2], p.D), vload(p.vs[2], p.D);

  // The item's geometry: (batch, head) bh, queries from q0. Set by begin().
  int b = 0, h = 0, q0 = 0, ntiles = 0, qw = 0, warp_kv_end = 0;
  bool warp_live = false;
  const T *qg = nullptr, *kg = nullptr, *vg = nullptr;
  const T* mrow[kRT][2] = {};  // the mask rows of this lane's queries
  auto geometry = [&](int bh, int qb, int& b_, int& h_, int& q0_, const T*& qg_, const T*& kg_, const T*& vg_) {
    b_ = bh / p.H, h_ = bh % p.H, q0_ = qb * kRows;
    qg_ = static_cast<const T*>(p.q) + b_ * p.qs[0] + h_ * p.qs[1];
    kg_ = static_cast<const T*>(p.k) + b_ * p.ks[0] + (h_ / p.group) * p.ks[1];
    vg_ = static_cast<const T*>(p.v) + b_ * p.vs[0] + (h_ / p.group) * p.vs[1];
  };
  auto begin = [&](int bh, int qb) {
    geometry(bh, qb, b, h, q0, qg, kg, vg);
    const int kv_end = p.causal ? min(p.Sk, q0 + kRows) : p.Sk;  // later keys are hidden from every row here
    ntiles = (kv_end + kStep - 1) / kStep;                        // steps of kSplit key tiles
    qw = q0 + warp * 16 * kRT;                                    // the warp's first query
    // A warp whose rows all lie past Sq only helps load tiles; keys from warp_kv_end on are hidden from all its
    // rows (past the end, or causal and after its last query), so the 16-key steps there are skipped: exact,
    // since their probabilities are 0 (a row tile that sees none of a computed step's keys masks them all).
    warp_live = qw < p.Sq;
    warp_kv_end = p.causal ? min(p.Sk, qw + 16 * kRT) : p.Sk;
    if (kMask) {  // rows past Sq read the last row's values, which are never stored
      const T* mb = static_cast<const T*>(p.mask) + b * p.ms0 + h * p.ms1;
#pragma unroll
      for (int rt = 0; rt < kRT; ++rt) {
        mrow[rt][0] = mb + min(qw + rt * 16 + g, p.Sq - 1) * p.ms2;
        mrow[rt][1] = mb + min(qw + rt * 16 + g + 8, p.Sq - 1) * p.ms2;
      }
    }
  };

  uint32_t qf[kRT][kHd / 16][4];
  float o[kRT][kHd / 8][4];
  float m[kRT][2], l[kRT][2];  // l: this lane's part of the row sums
  auto reset = [&]() {
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) {
#pragma unroll
      for (int i = 0; i < kHd / 8; ++i) o[rt][i][0] = o[rt][i][1] = o[rt][i][2] = o[rt][i][3] = 0.f;
      m[rt][0] = m[rt][1] = -INFINITY;
      l[rt][0] = l[rt][1] = 0.f;
    }
  };
  auto load_q = [&](const T* qbuf) {
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int kk = 0; kk < kHd / 16; ++kk)
        ldsm_x4(qf[rt][kk], qbuf + ((warp * kRT + rt) * 16 + lane % 16) * kLd + kk * 16 + (lane / 16) * 8);
  };

  // One key tile of the warp's rows. kEdge: the tile crosses Sk or the causal diagonal of some row of the warp,
  // so keys are tested one by one and 16-key steps no row sees are skipped; an interior tile (every other) has no
  // test at all.
  auto tile = [&](const T* kt, const T* vt, int k0, auto edge) {
    constexpr bool kEdge = decltype(edge)::value;
    const int live = warp_kv_end - k0;  // keys of this tile some row of the warp sees: the first `live`
    // S = Q K^T: 16 x 64 per row tile, as eight 16x8 accumulator fragments.
    float s[kRT][kKeys / 8][4];
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int i = 0; i < kKeys / 8; ++i) s[rt][i][0] = s[rt][i][1] = s[rt][i][2] = s[rt][i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kHd / 16; ++kk) {
      if (kHd > 32 && kk * 16 >= p.D) continue;  // the tile's zero columns
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        if (kEdge && np * 16 >= live) continue;  // hidden keys: left 0, masked below
        uint32_t bf[4];  // keys np*16 .. +7 and +8 .. +15, head dims kk*16 .. +15
        ldsm_x4(bf, kt + (np * 16 + (lane / 16) * 8 + lane % 8) * kLd + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int rt = 0; rt < kRT; ++rt) {
          mma16816<T>(s[rt][2 * np], qf[rt][kk], bf[0], bf[1]);
          mma16816<T>(s[rt][2 * np + 1], qf[rt][kk], bf[2], bf[3]);
        }
      }
    }

    // Online softmax over this tile, in float32: scale, mask, the new row maxima (across the lane's quad). The
    // products, sums and differences are rounded one by one (__fmul_rn and the like: never contracted into an FMA)
    // so that every block size gives the same bits: the compiler's contraction choices differ between them.
    uint32_t pa[kRT][kKeys / 16][4];  // the probabilities, packed as P V's A fragments
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) {
      const int qi0 = qw + rt * 16 + g, qi1 = qi0 + 8;
      float mxa[kKeys / 8], mxb[kKeys / 8];  // per 8-key step, rows g and g + 8
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
        const int kj = k0 + nt * 8 + 2 * t;  // this lane's keys: kj (elements 0, 2) and kj + 1 (1, 3)
        float x[4] = {__fmul_rn(s[rt][nt][0], scale), __fmul_rn(s[rt][nt][1], scale), __fmul_rn(s[rt][nt][2], scale),
                      __fmul_rn(s[rt][nt][3], scale)};
        if (kMask) {
          if (!kEdge && p.mask_pairs) {
            const float2 a = load_pair(mrow[rt][0] + kj);
            const float2 c = p.ms2 == 0 ? a : load_pair(mrow[rt][1] + kj);
            x[0] = fmaf(a.x, kLog2e, x[0]);
            x[1] = fmaf(a.y, kLog2e, x[1]);
            x[2] = fmaf(c.x, kLog2e, x[2]);
            x[3] = fmaf(c.y, kLog2e, x[3]);
          } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = kj + (e & 1);
              if (!kEdge || key < p.Sk) x[e] = fmaf(to_f(mrow[rt][e >> 1][key * p.ms3]), kLog2e, x[e]);
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
        for (int e = 0; e < 4; ++e) s[rt][nt][e] = x[e];
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
      float mx0 = fmaxf(m[rt][0], mxa[0]), mx1 = fmaxf(m[rt][1], mxb[0]);
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      // While every key so far is masked, m stays -inf: nothing accumulates (2^(-inf - 0) = 0) and no inf - inf
      // appears.
      const float c0 = mx0 == -INFINITY ? 1.f : fast_exp2(m[rt][0] - mx0);
      const float c1 = mx1 == -INFINITY ? 1.f : fast_exp2(m[rt][1] - mx1);
      m[rt][0] = mx0;
      m[rt][1] = mx1;
      const float base0 = mx0 == -INFINITY ? 0.f : mx0, base1 = mx1 == -INFINITY ? 0.f : mx1;
      float r0 = 0.f, r1 = 0.f;
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
        s[rt][nt][0] = fast_exp2(__fsub_rn(s[rt][nt][0], base0));
        s[rt][nt][1] = fast_exp2(__fsub_rn(s[rt][nt][1], base0));
        s[rt][nt][2] = fast_exp2(__fsub_rn(s[rt][nt][2], base1));
        s[rt][nt][3] = fast_exp2(__fsub_rn(s[rt][nt][3], base1));
        r0 = __fadd_rn(r0, __fadd_rn(s[rt][nt][0], s[rt][nt][1]));
        r1 = __fadd_rn(r1, __fadd_rn(s[rt][nt][2], s[rt][nt][3]));
      }
      l[rt][0] = fmaf(l[rt][0], c0, r0);
      l[rt][1] = fmaf(l[rt][1], c1, r1);
#pragma unroll
      for (int i = 0; i < kHd / 8; ++i) {
        o[rt][i][0] = __fmul_rn(o[rt][i][0], c0);
        o[rt][i][1] = __fmul_rn(o[rt][i][1], c0);
        o[rt][i][2] = __fmul_rn(o[rt][i][2], c1);
        o[rt][i][3] = __fmul_rn(o[rt][i][3], c1);
      }
      // Two adjacent 16x8 probability fragments are exactly one 16x16 A fragment.
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        pa[rt][kk][0] = pack2<T>(s[rt][2 * kk][0], s[rt][2 * kk][1]);
        pa[rt][kk][1] = pack2<T>(s[rt][2 * kk][2], s[rt][2 * kk][3]);
        pa[rt][kk][2] = pack2<T>(s[rt][2 * kk + 1][0], s[rt][2 * kk + 1][1]);
        pa[rt][kk][3] = pack2<T>(s[rt][2 * kk + 1][2], s[rt][2 * kk + 1][3]);
      }
    }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      if (kEdge && kk * 16 >= live) continue;  // probabilities all 0
#pragma unroll
      for (int dp = 0; dp < kHd / 16; ++dp) {
        if (kHd > 32 && dp * 16 >= p.D) continue;  // output columns that are not stored
        uint32_t bf[4];  // keys kk*16 .. +15, head dims dp*16 .. +7 and +8 .. +15, transposed on load
        ldsm_x4_trans(bf, vt + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kLd + dp * 16 + (lane / 16) * 8);
#pragma unroll
        for (int rt = 0; rt < kRT; ++rt) {
          mma16816<T>(o[rt][2 * dp], pa[rt][kk], bf[0], bf[1]);
          mma16816<T>(o[rt][2 * dp + 1], pa[rt][kk], bf[2], bf[3]);
        }
      }
    }
  };

  // The warp's tile j of the item (its buffers), interior or edge.
  auto step = [&](int j, int buf) {
    const int k0 = (j * kSplit + split) * kKeys;
    if (!warp_live || k0 >= warp_kv_end) return;
    const T* kt = ksm + (buf * kSplit + split) * kKeys * kLd;
    const T* vt = vsm + (buf * kSplit + split) * kKeys * kLd;
    if (k0 + kKeys > p.Sk || (p.causal && k0 + kKeys - 1 > qw))
      tile(kt, vt, k0, std::true_type{});
    else
      tile(kt, vt, k0, std::false_type{});
  };
  // The row sums across each quad, then o / l stored (l = 0, a row with every key masked, gives NaN as the
  // reference does, or zeros with masked_rows_zero).
  auto finish_sums = [&]() {
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) {
        l[rt][0] += __shfl_xor_sync(0xffffffffu, l[rt][0], off);
        l[rt][1] += __shfl_xor_sync(0xffffffffu, l[rt][1], off);
      }
  };
  auto store = [&]() {
    T* og = static_cast<T*>(p.o) + b * p.os[0] + h * p.os[1];
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt) {
      const int qi0 = qw + rt * 16 + g, qi1 = qi0 + 8;
      const float inv0 = p.masked_rows_zero && l[rt][0] == 0.f ? 0.f : 1.f / l[rt][0];
      const float inv1 = p.masked_rows_zero && l[rt][1] == 0.f ? 0.f : 1.f / l[rt][1];
#pragma unroll
      for (int i = 0; i < kHd / 8; ++i) {
        const int col = i * 8 + 2 * t;
        if (col >= p.D) break;  // past the head dim (a multiple of 8: col + 1 is inside when col is)
        if (qi0 < p.Sq)
          *reinterpret_cast<uint32_t*>(og + qi0 * p.os[2] + col) =
              pack2<T>(__fmul_rn(o[rt][i][0], inv0), __fmul_rn(o[rt][i][1], inv0));
        if (qi1 < p.Sq)
          *reinterpret_cast<uint32_t*>(og + qi1 * p.os[2] + col) =
              pack2<T>(__fmul_rn(o[rt][i][2], inv1), __fmul_rn(o[rt][i][3], inv1));
      }
    }
  };

  if constexpr (kPersist) {
    // Items in order of query block within (batch, head), so that the blocks working at once share K/V in L2.
    const int items = qblocks * p.BH;
    int item = blockIdx.x;
    if (item >= items) return;
    begin(item / qblocks, item % qblocks);
    qload.load(qsm, qg, q0, p.Sq);
    kload.load(ksm, kg, 0, p.Sk);
    vload.load(vsm, vg, 0, p.Sk);
    cp_async_commit();
    int j = 0, buf = 0, qbuf = 0;
    for (;;) {
      // Load the next step's tiles: the item's next K/V tile, or the next item's Q and first tile.
      const int next = item + gridDim.x;
      const bool more = j + 1 < ntiles;
      if (more) {
        kload.load(ksm + (buf ^ 1) * kStep * kLd, kg, (j + 1) * kStep, p.Sk);
        vload.load(vsm + (buf ^ 1) * kStep * kLd, vg, (j + 1) * kStep, p.Sk);
      } else if (next < items) {
        int nb, nh, nq0;
        const T *nqg, *nkg, *nvg;
        geometry(next / qblocks, next % qblocks, nb, nh, nq0, nqg, nkg, nvg);
        qload.load(qsm + (qbuf ^ 1) * kRows * kLd, nqg, nq0, p.Sq);
        kload.load(ksm + (buf ^ 1) * kStep * kLd, nkg, 0, p.Sk);
        vload.load(vsm + (buf ^ 1) * kStep * kLd, nvg, 0, p.Sk);
      }
      cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning this step's tiles
      cp_async_wait<1>();
      __syncthreads();
      if (j == 0) {
        load_q(qsm + qbuf * kRows * kLd);
        reset();
      }
      step(j, buf);
      if (!more) {
        finish_sums();
        if (warp_live) store();
        if (next >= items) break;
        item = next;
        begin(item / qblocks, item % qblocks);
        j = 0;
        qbuf ^= 1;
      } else {
        ++j;
      }
      buf ^= 1;
      __syncthreads();  // every warp is done with this step's buffers before the next step refills them
    }
    return;
  } else {
    begin(blockIdx.y, blockIdx.x);
    qload.load(qsm, qg, q0, p.Sq);
    kload.load(ksm, kg, 0, p.Sk);
    vload.load(vsm, vg, 0, p.Sk);
    cp_async_commit();
    reset();
    for (int j = 0; j < ntiles; ++j) {
      if (j + 1 < ntiles) {  // the buffer of tile j - 1, released by the barrier that ended that iteration
        const int nb = (j + 1) & 1;
        kload.load(ksm + nb * kStep * kLd, kg, (j + 1) * kStep, p.Sk);
        vload.load(vsm + nb * kStep * kLd, vg, (j + 1) * kStep, p.Sk);
      }
      cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning tile j
      cp_async_wait<1>();
      __syncthreads();
      if (j == 0) load_q(qsm);
      step(j, j & 1);
      // Every warp must be done with this tile's buffers before the next iteration refills them; only tiles up
      // to ntiles - 3 are refilled (tile j + 2 goes to tile j's buffer), so the last two need no barrier and the
      // warps of a short sequence's block run apart (their exponentials and their matrix products overlap).
      if (j + 2 < ntiles) __syncthreads();
    }
    finish_sums();
    if constexpr (kSplit > 1) {
      // The groups' partial results meet in the K/V buffers, free once every warp is past its last tile. A lane's
      // fragments hold the same rows and columns in every group, so each lane writes its own registers (value i of
      // lane x at [i][x]: no bank conflicts) and group 0's same lane merges them: with M the larger maximum,
      // o = o_a 2^(m_a - M) + o_b 2^(m_b - M), likewise l; a group that saw no key of a row (m = -inf) adds 0.
      constexpr int kVals = kHd / 8 * 4 + 4;
      float* xs = reinterpret_cast<float*>(ksm);
      float(&o0)[kHd / 8][4] = o[0];
      float(&m0)[2] = m[0];
      float(&l0)[2] = l[0];
      __syncthreads();
      if (split > 0) {
        float* mine = xs + ((split - 1) * kWarps + warp) * kVals * 32 + lane;
#pragma unroll
        for (int i = 0; i < kHd / 8; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) mine[(i * 4 + e) * 32] = o0[i][e];
        mine[(kVals - 4) * 32] = m0[0];
        mine[(kVals - 3) * 32] = m0[1];
        mine[(kVals - 2) * 32] = l0[0];
        mine[(kVals - 1) * 32] = l0[1];
      }
      __syncthreads();
      if (split > 0) return;
#pragma unroll
      for (int g2 = 1; g2 < kSplit; ++g2) {
        const float* other = xs + ((g2 - 1) * kWarps + warp) * kVals * 32 + lane;
        const float mb0 = other[(kVals - 4) * 32], mb1 = other[(kVals - 3) * 32];
        const float mm0 = fmaxf(m0[0], mb0), mm1 = fmaxf(m0[1], mb1);
        const float ca0 = m0[0] == -INFINITY ? 0.f : fast_exp2(m0[0] - mm0), cb0 = mb0 == -INFINITY ? 0.f : fast_exp2(mb0 - mm0);
        const float ca1 = m0[1] == -INFINITY ? 0.f : fast_exp2(m0[1] - mm1), cb1 = mb1 == -INFINITY ? 0.f : fast_exp2(mb1 - mm1);
#pragma unroll
        for (int i = 0; i < kHd / 8; ++i) {
          o0[i][0] = o0[i][0] * ca0 + other[(i * 4 + 0) * 32] * cb0;
          o0[i][1] = o0[i][1] * ca0 + other[(i * 4 + 1) * 32] * cb0;
          o0[i][2] = o0[i][2] * ca1 + other[(i * 4 + 2) * 32] * cb1;
          o0[i][3] = o0[i][3] * ca1 + other[(i * 4 + 3) * 32] * cb1;
        }
        l0[0] = l0[0] * ca0 + other[(kVals - 2) * 32] * cb0;
        l0[1] = l0[1] * ca1 + other[(kVals - 1) * 32] * cb1;
        m0[0] = mm0;
        m0[1] = mm1;
      }
    }
    store();
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

template <typename T, int kHd, int kWarps, int kSplit, int kRT = 1, bool kPersist = false>
Status launch_mma(const Args& a, int64_t B, int64_t H, int64_t Sq, int sm_count, cudaStream_t stream) {
  constexpr size_t bytes = mma_smem_bytes<kHd, kWarps, kSplit, kRT, kPersist>();
  // The key split's merge reuses the K/V buffers for the other groups' registers.
  static_assert(kSplit == 1 || (kSplit - 1) * kWarps * 32 * (kHd / 8 * 4 + 4) * 4 <= 4 * kKeys * kSplit * (kHd + 8) * 2);
  constexpr int kRows = 16 * kRT * kWarps, kThreads = kWarps * kSplit * 32;
  const int64_t qblocks = (Sq + kRows - 1) / kRows;
  auto run = [&](auto kernel) -> Status {
    KILN_CUDA_CHECK(allow_smem(kernel, bytes));
    if constexpr (kPersist) {
      // As many blocks as the GPU holds at once (each loops over the items), never more than there are items.
      int per_sm = 0;
      KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, bytes));
      const int64_t blocks = std::min<int64_t>(qblocks * B * H, static_cast<int64_t>(std::max(per_sm, 1)) * sm_count);
      kernel<<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(a);
    } else {
      kernel<<<dim3(static_cast<unsigned>(qblocks), static_cast<unsigned>(B * H)), kThreads, bytes, stream>>>(a);
    }
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  if (a.mask) return run(attention_mma_kernel<T, true, kHd, kWarps, kSplit, kRT, kPersist>);
  return run(attention_mma_kernel<T, false, kHd, kWarps, kSplit, kRT, kPersist>);
}

template <typename T, int kHd>
Status launch_mma_warps(const Args& a, const AttentionParams& p, int warps, int splits, int row_tiles, bool persistent,
                        int sms, cudaStream_t stream) {
  if (row_tiles > 1 || persistent) {
    if constexpr (kHd <= kAttentionRowTilesMaxD) {
      if (splits <= 1 && row_tiles == 2 && !persistent) switch (warps) {
          case 2: return launch_mma<T, kHd, 2, 1, 2>(a, p.B, p.H, p.Sq, sms, stream);
          case 4: return launch_mma<T, kHd, 4, 1, 2>(a, p.B, p.H, p.Sq, sms, stream);
          default: break;
        }
      if (splits <= 1 && row_tiles == 1 && persistent) switch (warps) {
          case 2: return launch_mma<T, kHd, 2, 1, 1, true>(a, p.B, p.H, p.Sq, sms, stream);
          case 4: return launch_mma<T, kHd, 4, 1, 1, true>(a, p.B, p.H, p.Sq, sms, stream);
          default: break;
        }
    }
  } else if (splits == kAttentionKeySplit) {
    switch (warps) {
      case 1: return launch_mma<T, kHd, 1, kAttentionKeySplit>(a, p.B, p.H, p.Sq, sms, stream);
      case 2: return launch_mma<T, kHd, 2, kAttentionKeySplit>(a, p.B, p.H, p.Sq, sms, stream);
      case 4: return launch_mma<T, kHd, 4, kAttentionKeySplit>(a, p.B, p.H, p.Sq, sms, stream);
      default: break;
    }
  } else if (splits <= 1) {
    switch (warps) {
      case 1: return launch_mma<T, kHd, 1, 1>(a, p.B, p.H, p.Sq, sms, stream);
      case 2: return launch_mma<T, kHd, 2, 1>(a, p.B, p.H, p.Sq, sms, stream);
      case 4: return launch_mma<T, kHd, 4, 1>(a, p.B, p.H, p.Sq, sms, stream);
      case 8: return launch_mma<T, kHd, 8, 1>(a, p.B, p.H, p.Sq, sms, stream);
      default: break;
    }
  }
  return unsupported("FusedAttention: no tensor-core kernel with " + std::to_string(warps) + " warps per block, " +
                     std::to_string(splits) + " key splits, " + std::to_string(row_tiles) + " row tiles a warp" +
                     (persistent ? ", persistent," : "") + " for head dim tile " + std::to_string(kHd));
}

template <typename T>
Status launch_typed(const AttentionParams& p, const Args& a, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    const AttentionShape shape = attention_shape(p, std::is_same_v<T, __half> ? DataType::kHALF : DataType::kBF16);
    if (attention_mma_applies(shape)) {
      int warps = p.warps, splits = p.warps ? p.splits : 1, row_tiles = p.warps ? p.row_tiles : 1;
      const bool persistent = p.warps && p.persistent;
      int sms = p.sm_count;
      if (sms <= 0) {
        int dev = 0;
        KILN_CUDA_CHECK(cudaGetDevice(&dev));
        KILN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
      }
      if (warps == 0) warps = attention_default_warps(shape, sms);
      switch (attention_mma_tile(p.D)) {
        case 32: return launch_mma_warps<T, 32>(a, p, warps, splits, row_tiles, persistent, sms, stream);
        case 64: return launch_mma_warps<T, 64>(a, p, warps, splits, row_tiles, persistent, sms, stream);
        case 96: return launch_mma_warps<T, 96>(a, p, warps, splits, row_tiles, persistent, sms, stream);
        default: return launch_mma_warps<T, 128>(a, p, warps, splits, row_tiles, persistent, sms, stream);
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
  a.BH = static_cast<int>(p.B * p.H);
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
