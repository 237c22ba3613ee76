// kiln::FusedMlp's kernel (the plan and the tactics are in fused_mlp.h): Y = act2(act1(X.W1^T + b1).W2^T + b2) for
// a few rows at a time, float32 throughout inside, one rounding to T at the store.
#include <cstdint>

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

// kVec: K and the hidden size are multiples of 16 / sizeof(T) (so of 4) and W1, W2 are 16-byte aligned: weight
// rows are read in 16-byte vectors and X's and the hidden rows in float4s from shared memory (each such row starts
// at a multiple of 4 floats); else one element at a time.
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
#pragma unroll
        for (int q = 0; q < V; q += 4) {
          const float wa = to_f(w.v[q]), wb = to_f(w.v[q + 1]), wc = to_f(w.v[q + 2]), wd = to_f(w.v[q + 3]);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const float4 xv = *reinterpret_cast<const float4*>(xs + r * k + c + q);
            acc[r] = fmaf(wd, xv.w, fmaf(wc, xv.z, fmaf(wb, xv.y, fmaf(wa, xv.x, acc[r]))));
          }
        }
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

  // Outputs: a thread per feature of this block's slice, reading its row of W2; every thread reads the same hidden
  // element at a time (a shared-memory broadcast).
  const int n0 = blockIdx.y * n_per_block, n1 = min(n, n0 + n_per_block);
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
#pragma unroll
        for (int q = 0; q < V; q += 4) {
          const float wa = to_f(w.v[q]), wb = to_f(w.v[q + 1]), wc = to_f(w.v[q + 2]), wd = to_f(w.v[q + 3]);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const float4 hv = *reinterpret_cast<const float4*>(hs + r * hidden + c + q);
            acc[r] = fmaf(wd, hv.w, fmaf(wc, hv.z, fmaf(wb, hv.y, fmaf(wa, hv.x, acc[r]))));
          }
        }
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
      if (r < nr) y[static_cast<int64_t>(row0 + r) * n + o] = from_f<T>(epilogue_act(acc[r] + bias, e2));
  }
}

template <typename T, int R>
Status launch_r(const MlpShape& s, int n_split, const void* x, const void* w1, const void* b1, const void* w2,
                const void* b2, void* y, const EpilogueParams& e1, const EpilogueParams& e2, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = s.k % V == 0 && s.hidden % V == 0 && reinterpret_cast<uintptr_t>(w1) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(w2) % 16 == 0;
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

template <typename T>
Status launch_t(const MlpShape& s, const MlpTactic& t, const void* x, const void* w1, const void* b1, const void* w2,
                const void* b2, void* y, const EpilogueParams& e1, const EpilogueParams& e2, cudaStream_t stream) {
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
  if (!mlp_fits(s) || mlp_smem_bytes(s, t.rows_per_block) > kMlpSmemBytes)
    return invalid_argument("FusedMlp: K " + std::to_string(s.k) + " + hidden " + std::to_string(s.hidden) +
                            " floats times " + std::to_string(t.rows_per_block) +
                            " rows exceed a block's shared memory");
  if (s.rows > INT32_MAX / std::max<int64_t>(s.k, s.n) || t.n_split < 1 || t.n_split > 65535)
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
