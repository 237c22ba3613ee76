// kiln::FusedMlp's kernels (the plan and the tactics are in fused_mlp.h): Y = act2(act1(X.W1^T + b1).W2^T + b2) for
// a few rows at a time, or for one row squeezed from X's [spatial, K] slice, float32 throughout inside, one
// rounding to T at the store.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/fused_mlp.h"

namespace kiln::cuda {
namespace {

// 16 bytes of T: the unit of a vector load.
template <typename T> struct Vec16 {
  static constexpr int kN = 16 / sizeof(T);
  union {
    uint4 raw;
    T v[kN];
  };
};

// acc[r] += the 16 bytes of weights w . the same span of row r of a float matrix in shared memory (rows `pitch`
// floats apart, `a` pointing at row 0's span; 16-byte aligned), as float4 reads.
template <typename T, int R>
__device__ __forceinline__ void fma_rows(const Vec16<T>& w, const float* a, int pitch, float (&acc)[R]) {
#pragma unroll
  for (int q = 0; q < Vec16<T>::kN; q += 4) {
    const float wa = to_f(w.v[q]), wb = to_f(w.v[q + 1]), wc = to_f(w.v[q + 2]), wd = to_f(w.v[q + 3]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 v = *reinterpret_cast<const float4*>(a + r * pitch + q);
      acc[r] = fmaf(wd, v.w, fmaf(wc, v.z, fmaf(wb, v.y, fmaf(wa, v.x, acc[r]))));
    }
  }
}

// The products of R rows already in shared memory (xs [R][k], float): the hidden layer into hs [R][hidden], then
// outputs [n0, n1) of the rows into y (row r at y + r * n). kVec: K and the hidden size are multiples of
// 16 / sizeof(T) (so of 4) and W1, W2 are 16-byte aligned: weight rows are read in 16-byte vectors and the rows in
// float4s from shared memory (each row starts at a multiple of 4 floats); else one element at a time. Starts and
// ends with a barrier's worth of ordering: the caller has synchronized after filling xs.
template <typename T, int R, bool kVec>
__device__ __forceinline__ void mlp_products(const float* xs, float* hs, const T* __restrict__ w1,
                                             const T* __restrict__ b1, const T* __restrict__ w2,
                                             const T* __restrict__ b2, T* __restrict__ y, int k, int hidden, int n,
                                             int n0, int n1, int nr, const EpilogueParams& e1,
                                             const EpilogueParams& e2) {
  // Hidden layer: a warp per feature j, its lanes along K; the R rows share each weight read.
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int j = warp; j < hidden; j += warps) {
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    const T* wr = w1 + static_cast<int64_t>(j) * k;
    if constexpr (kVec) {
      constexpr int V = Vec16<T>::kN;
      for (int c = lane * V; c < k; c += 32 * V) {
        Vec16<T> w;
        w.raw = __ldg(reinterpret_cast<const uint4*>(wr + c));
        fma_rows<T, R>(w, xs + c, k, acc);
      }
    } else {
      for (int c = lane; c < k; c += 32) {
        const float wf = to_f(wr[c]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = fmaf(wf, xs[r * k + c], acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
    if (lane == 0) {
      const float bias = b1 ? to_f(b1[j]) : 0.f;
#pragma unroll
      for (int r = 0; r < R; ++r) hs[r * hidden + j] = epilogue_act(acc[r] + bias, e1);
    }
  }
  __syncthreads();

  // Outputs: a thread per feature of the slice, reading its row of W2; every thread reads the same hidden element at
  // a time (a shared-memory broadcast).
  for (int o = n0 + static_cast<int>(threadIdx.x); o < n1; o += blockDim.x) {
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    const T* wr = w2 + static_cast<int64_t>(o) * hidden;
    if constexpr (kVec) {
      constexpr int V = Vec16<T>::kN;
      for (int c = 0; c < hidden; c += V) {
        Vec16<T> w;
        w.raw = __ldg(reinterpret_cast<const uint4*>(wr + c));
        fma_rows<T, R>(w, hs + c, hidden, acc);
      }
    } else {
      for (int c = 0; c < hidden; ++c) {
        const float wf = to_f(wr[c]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] = fmaf(wf, hs[r * hidden + c], acc[r]);
      }
    }
    const float bias = b2 ? to_f(b2[o]) : 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r < nr) y[static_cast<int64_t>(r) * n + o] = from_f<T>(epilogue_act(acc[r] + bias, e2));
  }
}

// R rows of X a block (blockIdx.x), outputs [blockIdx.y * n_per_block, +n_per_block).
template <typename T, int R, bool kVec>
__global__ void __launch_bounds__(kMlpThreads)
    fused_mlp_kernel(const T* __restrict__ x, const T* __restrict__ w1, const T* __restrict__ b1,
                     const T* __restrict__ w2, const T* __restrict__ b2, T* __restrict__ y, int rows, int k,
                     int hidden, int n, int n_per_block, EpilogueParams e1, EpilogueParams e2) {
  extern __shared__ float smem[];
  float* xs = smem;               // [R][k]
  float* hs = smem + R * k;       // [R][hidden]
  const int row0 = blockIdx.x * R;
  const int nr = min(R, rows - row0);
  for (int i = threadIdx.x; i < R * k; i += blockDim.x) {
    const int r = i / k;
    xs[i] = r < nr ? to_f(x[static_cast<int64_t>(row0) * k + i]) : 0.f;
  }
  __syncthreads();
  const int n0 = blockIdx.y * n_per_block;
  mlp_products<T, R, kVec>(xs, hs, w1, b1, w2, b2, y + static_cast<int64_t>(row0) * n, k, hidden, n, n0,
                           min(n, n0 + n_per_block), nr, e1, e2);
}

// The squeeze and the products of one row a block: X's [spatial, k] slice of row blockIdx.x read by `groups`
// threads per column unit of E elements (16 bytes, or one element), each adding every groups-th spatial row in
// order (with one group, a thread takes every blockDim-th unit); the groups' sums then add in group order
// (deterministic), divided by `spatial`, into xs.
template <typename T, int E, bool kVec>
__global__ void __launch_bounds__(kMlpPoolThreads)
    fused_pool_mlp_kernel(const T* __restrict__ x, const T* __restrict__ w1, const T* __restrict__ b1,
                          const T* __restrict__ w2, const T* __restrict__ b2, T* __restrict__ y, int spatial, int k,
                          int hidden, int n, int groups, EpilogueParams e1, EpilogueParams e2) {
  using V = std::conditional_t<E == 1, T, uint4>;
  extern __shared__ float smem[];
  float* xs = smem;               // [k]
  float* hs = xs + k;             // [hidden]
  float* part = hs + hidden;      // [groups][k]
  const int units = k / E, t = threadIdx.x;
  const int g = groups > 1 ? t / units : 0;
  const int col_step = groups > 1 ? units : static_cast<int>(blockDim.x);
  for (int col = groups > 1 ? t % units : t; g < groups && col < units; col += col_step) {
    float acc[E];
#pragma unroll
    for (int j = 0; j < E; ++j) acc[j] = 0.f;
    const V* p = reinterpret_cast<const V*>(x + static_cast<int64_t>(blockIdx.x) * spatial * k) + col;
    const int64_t step = static_cast<int64_t>(groups) * units;  // in units of V
    const int rows = g < spatial ? (spatial - g + groups - 1) / groups : 0;
    p += static_cast<int64_t>(g) * units;
    int i = 0;
    for (; i + 4 <= rows; i += 4) {  // four loads in flight a thread
      V v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v[u] = p[u * step];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const T* e = reinterpret_cast<const T*>(&v[u]);
#pragma unroll
        for (int j = 0; j < E; ++j) acc[j] += to_f(e[j]);
      }
      p += 4 * step;
    }
    for (; i < rows; ++i, p += step) {
      const V v = *p;
      const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
      for (int j = 0; j < E; ++j) acc[j] += to_f(e[j]);
    }
#pragma unroll
    for (int j = 0; j < E; ++j) part[g * k + col * E + j] = acc[j];
  }
  __syncthreads();
  const float inv = 1.f / static_cast<float>(spatial);
  for (int c = t; c < k; c += blockDim.x) {
    float sum = 0.f;
    for (int q = 0; q < groups; ++q) sum += part[q * k + c];
    xs[c] = sum * inv;
  }
  __syncthreads();
  mlp_products<T, 1, kVec>(xs, hs, w1, b1, w2, b2, y + static_cast<int64_t>(blockIdx.x) * n, k, hidden, n, 0, n, 1,
                           e1, e2);
}

// Whether the products may read the weights in 16-byte vectors (mlp_products' kVec).
template <typename T>
bool weights_vec(const MlpShape& s, const void* w1, const void* w2) {
  constexpr int V = 16 / sizeof(T);
  return s.k % V == 0 && s.hidden % V == 0 && reinterpret_cast<uintptr_t>(w1) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w2) % 16 == 0;
}

template <typename T, int R>
Status launch_r(const MlpShape& s, int n_split, const void* x, const void* w1, const void* b1, const void* w2,
                const void* b2, void* y, const EpilogueParams& e1, const EpilogueParams& e2, cudaStream_t stream) {
  const bool vec = weights_vec<T>(s, w1, w2);
  const int64_t groups = (s.rows + R - 1) / R;
  const int n_per_block = static_cast<int>((s.n + n_split - 1) / n_split);
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(n_split));
  const size_t smem = static_cast<size_t>(mlp_smem_bytes(s, R));
  auto args = [&](auto kernel) {
    kernel<<<grid, kMlpThreads, smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w1), static_cast<const T*>(b1), static_cast<const T*>(w2),
        static_cast<const T*>(b2), static_cast<T*>(y), static_cast<int>(s.rows), static_cast<int>(s.k),
        static_cast<int>(s.hidden), static_cast<int>(s.n), n_per_block, e1, e2);
  };
  if (vec) args(fused_mlp_kernel<T, R, true>);
  else args(fused_mlp_kernel<T, R, false>);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T, int E>
Status launch_fused_e(const MlpShape& s, bool vec, const void* x, const void* w1, const void* b1, const void* w2,
                      const void* b2, void* y, const EpilogueParams& e1, const EpilogueParams& e2,
                      cudaStream_t stream) {
  const int groups = mlp_pool_groups(s.k, E);
  const size_t smem = static_cast<size_t>(mlp_pool_smem_bytes(s, E));
  auto args = [&](auto kernel) {
    kernel<<<static_cast<unsigned>(s.rows), kMlpPoolThreads, smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w1), static_cast<const T*>(b1), static_cast<const T*>(w2),
        static_cast<const T*>(b2), static_cast<T*>(y), static_cast<int>(s.spatial), static_cast<int>(s.k),
        static_cast<int>(s.hidden), static_cast<int>(s.n), groups, e1, e2);
  };
  if (vec) args(fused_pool_mlp_kernel<T, E, true>);
  else args(fused_pool_mlp_kernel<T, E, false>);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T>
Status launch_fused(const MlpShape& s, const void* x, const void* w1, const void* b1, const void* w2, const void* b2,
                    void* y, const EpilogueParams& e1, const EpilogueParams& e2, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = weights_vec<T>(s, w1, w2);
  if (mlp_pool_vec(s.k, sizeof(T)) == V && reinterpret_cast<uintptr_t>(x) % 16 == 0 && mlp_pool_fits(s, V))
    return launch_fused_e<T, V>(s, vec, x, w1, b1, w2, b2, y, e1, e2, stream);
  if (!mlp_pool_fits(s, 1))
    return invalid_argument("FusedMlp: the fused squeeze needs 16-byte aligned rows of X for K " + std::to_string(s.k));
  return launch_fused_e<T, 1>(s, vec, x, w1, b1, w2, b2, y, e1, e2, stream);
}

template <typename T>
Status launch_t(const MlpShape& s, const MlpTactic& t, const void* x, const void* w1, const void* b1, const void* w2,
                const void* b2, void* y, const EpilogueParams& e1, const EpilogueParams& e2, cudaStream_t stream) {
  if (t.kind == MlpKind::kFused) return launch_fused<T>(s, x, w1, b1, w2, b2, y, e1, e2, stream);
  switch (t.rows_per_block) {
    case 1: return launch_r<T, 1>(s, t.n_split, x, w1, b1, w2, b2, y, e1, e2, stream);
    case 2: return launch_r<T, 2>(s, t.n_split, x, w1, b1, w2, b2, y, e1, e2, stream);
    case 4: return launch_r<T, 4>(s, t.n_split, x, w1, b1, w2, b2, y, e1, e2, stream);
    case 8: return launch_r<T, 8>(s, t.n_split, x, w1, b1, w2, b2, y, e1, e2, stream);
    default: return invalid_argument("FusedMlp: rows per block must be 1, 2, 4 or 8, got " +
                                     std::to_string(t.rows_per_block));
  }
}

}  // namespace

Status launch_fused_mlp(DataType dt, const MlpShape& s, const MlpTactic& t, const void* x, const void* w1,
                        const void* b1, const void* w2, const void* b2, void* y, int act1, int act2,
                        cudaStream_t stream) {
  if (s.rows == 0 || s.n == 0) return Status::Ok();
  if (!mlp_fits(s) || !mlp_tactic_applies(s, t, static_cast<int>(dtype_size(dt))))
    return invalid_argument("FusedMlp: tactic " + mlp_tactic_name(t) + " cannot run K " + std::to_string(s.k) +
                            ", hidden " + std::to_string(s.hidden) + ", N " + std::to_string(s.n) +
                            (s.squeeze ? ", squeeze over " + std::to_string(s.spatial) : std::string()));
  const int64_t per_row = std::max<int64_t>({s.k * std::max<int64_t>(s.spatial, 1), s.n});
  if (s.rows > INT32_MAX / per_row || s.rows > INT32_MAX || t.n_split < 1 || t.n_split > 65535)
    return invalid_argument("FusedMlp: " + std::to_string(s.rows) + " rows are too many for the kernel's indices");
  EpilogueParams e1, e2;
  e1.act = act1;
  e2.act = act2;
  switch (dt) {
    case DataType::kFLOAT: return launch_t<float>(s, t, x, w1, b1, w2, b2, y, e1, e2, stream);
    case DataType::kHALF: return launch_t<__half>(s, t, x, w1, b1, w2, b2, y, e1, e2, stream);
    case DataType::kBF16: return launch_t<__nv_bfloat16>(s, t, x, w1, b1, w2, b2, y, e1, e2, stream);
    default: return unsupported(std::string("FusedMlp: no kernel for ") + dtype_name(dt));
  }
}

}  // namespace kiln::cuda
