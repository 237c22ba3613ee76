// kiln::FusedAttention kernels: a tensor-core (WMMA) flash-attention kernel for half/bfloat16 with head dim 32, 64
// or 128, and a generic one-query-row-per-block kernel for every other case. Softmax runs online in float32 in both.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <type_traits>

#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/transformer_kernels.h"

namespace kiln::cuda {
namespace {


// The kernels' view of AttentionParams (32-bit where the grid bounds it anyway).
struct Args {
  const void *q, *k, *v, *mask;
  void* o;
  int H, Sq, Sk, D, Dv;
  long long ms0, ms1, ms2, ms3;
  float scale;
  int causal;
};

// ---- tensor-core path: D = Dv = kHd (32, 64 or 128), 64 queries per block (16 per warp), keys in tiles of 64 ----
constexpr int kTile = 64;  // queries per block and keys per step
constexpr int kWarps = 4;
constexpr int kLdf = kTile + 4;    // padded row of the float score tile
constexpr int kLdp = kTile + 8;    // padded row of the probability tile
constexpr int kWarpF = 16 * kLdf;  // floats of one warp's 16-row score tile
constexpr int kWarpP = 16 * kLdp;  // elements of one warp's 16-row probability tile

// Shared-memory layout for head dim kHd; every buffer and every WMMA pointer in it stays 32-byte aligned (rows of
// 16-bit tiles are padded by 8 elements, rows of float tiles by 4).
template <int kHd>
struct TcLayout {
  static constexpr int kLdh = kHd + 8;            // padded row of a Q, K or V tile
  static constexpr int kLdo = kHd + 4;            // padded row of the float output tile
  static constexpr int kHalfTile = kTile * kLdh;  // elements of one 64-row Q, K or V tile
  static constexpr int kWarpO = 16 * kLdo;        // floats of one warp's 16-row output tile
  static constexpr size_t kBytes = 3 * kHalfTile * 2 + kWarps * kWarpF * 4 + kWarps * kWarpO * 4 + kWarps * kWarpP * 2;
};

// Copies rows [r0, r0 + 64) of a [rows, kHd] matrix into a padded shared tile; rows past the end become zeros so
// that they add nothing (P is 0 there, and 0 * garbage could be NaN).
template <int kHd, typename T>
__device__ void load_tile(T* dst, const T* src, int r0, int rows) {
  for (int idx = threadIdx.x; idx < kTile * kHd / 8; idx += kWarps * 32) {
    const int r = idx / (kHd / 8), c = (idx % (kHd / 8)) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r0 + r < rows) val = *reinterpret_cast<const uint4*>(src + static_cast<size_t>(r0 + r) * kHd + c);
    *reinterpret_cast<uint4*>(dst + r * TcLayout<kHd>::kLdh + c) = val;
  }
}

template <typename T, bool kMask, int kHd>
__global__ void __launch_bounds__(kWarps * 32) attention_tc_kernel(Args p) {
  using namespace nvcuda;
  using L = TcLayout<kHd>;
  constexpr int kLdh = L::kLdh, kLdo = L::kLdo;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qs = reinterpret_cast<T*>(smem);
  T* ks = qs + L::kHalfTile;
  T* vs = ks + L::kHalfTile;
  float* ss = reinterpret_cast<float*>(vs + L::kHalfTile);
  float* os = ss + kWarps * kWarpF;
  T* ps = reinterpret_cast<T*>(os + kWarps * L::kWarpO);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int bh = blockIdx.y, b = bh / p.H, h = bh % p.H;
  const int q0 = blockIdx.x * kTile;
  const T* q = static_cast<const T*>(p.q) + static_cast<size_t>(bh) * p.Sq * kHd;
  const T* k = static_cast<const T*>(p.k) + static_cast<size_t>(bh) * p.Sk * kHd;
  const T* v = static_cast<const T*>(p.v) + static_cast<size_t>(bh) * p.Sk * kHd;
  float* sw = ss + warp * kWarpF;
  float* ow = os + warp * L::kWarpO;
  T* pw = ps + warp * kWarpP;

  load_tile<kHd>(qs, q, q0, p.Sq);
  for (int i = lane; i < L::kWarpO; i += 32) ow[i] = 0.f;
  // Each row of the warp's 16 belongs to two lanes: 32 of the tile's 64 scores, and half of the output columns.
  const int row = lane >> 1, col0 = (lane & 1) * 32, ocol0 = (lane & 1) * (kHd / 2);
  const int qi = q0 + warp * 16 + row;
  float m_i = -INFINITY, l_i = 0.f;
  const int kv_end = p.causal ? min(p.Sk, q0 + kTile) : p.Sk;  // later keys are hidden from every row here

  for (int k0 = 0; k0 < kv_end; k0 += kTile) {
    __syncthreads();  // every warp is done with the previous K and V tiles
    load_tile<kHd>(ks, k, k0, p.Sk);
    load_tile<kHd>(vs, v, k0, p.Sk);
    __syncthreads();
    // S = Q_w K^T: K's rows read as the columns of a column-major B.
    for (int nt = 0; nt < kTile / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
      for (int kt = 0; kt < kHd / 16; ++kt) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, qs + warp * 16 * kLdh + kt * 16, kLdh);
        wmma::load_matrix_sync(fb, ks + nt * 16 * kLdh + kt * 16, kLdh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(sw + nt * 16, acc, kLdf, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax over this tile's 64 keys for row `row`.
    float s[32];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int kj = k0 + col0 + c;
      float x = sw[row * kLdf + col0 + c] * p.scale;
      if (kMask && qi < p.Sq && kj < p.Sk)
        x += to_f(static_cast<const T*>(p.mask)[b * p.ms0 + h * p.ms1 + qi * p.ms2 + kj * p.ms3]);
      if (kj >= p.Sk || (p.causal && kj > qi)) x = -INFINITY;
      s[c] = x;
      mx = fmaxf(mx, x);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m_i, mx);
    // While every key so far is masked, m stays -inf: nothing accumulates and no inf - inf appears.
    const float corr = m_new == -INFINITY ? 1.f : __expf(m_i - m_new);
    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const float e = m_new == -INFINITY ? 0.f : __expf(s[c] - m_new);
      sum += e;
      pw[row * kLdp + col0 + c] = from_f<T>(e);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l_i = l_i * corr + sum;
    m_i = m_new;
#pragma unroll
    for (int c = 0; c < kHd / 2; ++c) ow[row * kLdo + ocol0 + c] *= corr;
    __syncwarp();
    // O_w += P_w V, the accumulator kept in shared memory between tiles (rows rescaled above).
    for (int nt = 0; nt < kHd / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, ow + nt * 16, kLdo, wmma::mem_row_major);
      for (int kt = 0; kt < kTile / 16; ++kt) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, pw + kt * 16, kLdp);
        wmma::load_matrix_sync(fb, vs + kt * 16 * kLdh + nt * 16, kLdh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(ow + nt * 16, acc, kLdo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (qi < p.Sq) {
    T* o = static_cast<T*>(p.o) + (static_cast<size_t>(bh) * p.Sq + qi) * kHd;
    const float inv = 1.f / l_i;  // l = 0 (a row with every key masked) gives NaN, as the reference does
    for (int c = 0; c < kHd / 2; ++c) o[ocol0 + c] = from_f<T>(ow[row * kLdo + ocol0 + c] * inv);
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
  const T* q = static_cast<const T*>(p.q) + (static_cast<size_t>(bh) * p.Sq + i) * p.D;
  const T* k = static_cast<const T*>(p.k) + static_cast<size_t>(bh) * p.Sk * p.D;
  const T* v = static_cast<const T*>(p.v) + static_cast<size_t>(bh) * p.Sk * p.Dv;
  for (int d = threadIdx.x; d < p.D; d += kGenThreads) qrow[d] = to_f(q[d]);
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < p.Sk; j += kGenThreads) {
    const T* kr = k + static_cast<size_t>(j) * p.D;
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
  T* o = static_cast<T*>(p.o) + (static_cast<size_t>(bh) * p.Sq + i) * p.Dv;
  for (int d = threadIdx.x; d < p.Dv; d += kGenThreads) {
    float acc = 0.f;
    for (int j = 0; j < p.Sk; ++j) acc += sc[j] * to_f(v[static_cast<size_t>(j) * p.Dv + d]);
    o[d] = from_f<T>(acc / sum);
  }
}

// Raises a kernel's dynamic shared memory limit once (above 48 KiB it must be asked for).
template <typename K>
cudaError_t allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

template <typename T, int kHd>
Status launch_tc(const Args& a, int64_t B, int64_t H, int64_t Sq, cudaStream_t stream) {
  constexpr size_t bytes = TcLayout<kHd>::kBytes;
  dim3 grid(static_cast<unsigned>((Sq + kTile - 1) / kTile), static_cast<unsigned>(B * H));
  if (a.mask) {
    KILN_CUDA_CHECK(allow_smem(attention_tc_kernel<T, true, kHd>, bytes));
    attention_tc_kernel<T, true, kHd><<<grid, kWarps * 32, bytes, stream>>>(a);
  } else {
    KILN_CUDA_CHECK(allow_smem(attention_tc_kernel<T, false, kHd>, bytes));
    attention_tc_kernel<T, false, kHd><<<grid, kWarps * 32, bytes, stream>>>(a);
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T>
Status launch_typed(const AttentionParams& p, const Args& a, cudaStream_t stream) {
  const bool aligned =
      ((reinterpret_cast<uintptr_t>(p.q) | reinterpret_cast<uintptr_t>(p.k) | reinterpret_cast<uintptr_t>(p.v)) % 16) ==
      0;
  if constexpr (!std::is_same_v<T, float>) {
    if (aligned && p.D == p.Dv) {
      if (p.D == 32) return launch_tc<T, 32>(a, p.B, p.H, p.Sq, stream);
      if (p.D == 64) return launch_tc<T, 64>(a, p.B, p.H, p.Sq, stream);
      if (p.D == 128) return launch_tc<T, 128>(a, p.B, p.H, p.Sq, stream);
    }
  }
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
  if (p.B * p.H > 65535 || p.Sq > (1ll << 31) - 1 || p.Sk > (1 << 30))
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
         p.ms[0],
         p.ms[1],
         p.ms[2],
         p.ms[3],
         p.scale,
         p.causal ? 1 : 0};
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
