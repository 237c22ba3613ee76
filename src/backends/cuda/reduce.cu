// Reduction kernels: ReduceXxx over any set of axes (row and column variants), ArgMax/ArgMin and CumSum.
// Floating types accumulate in float32, integers in int64 (wrapping, as the reference does).
#include <cmath>
#include <string>
#include <type_traits>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/reduce_common.cuh"
#include "backends/cuda/reduce_kernels.h"

namespace kiln::cuda {
namespace {

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<int32_t> { using type = int64_t; };
template <> struct AccOf<int64_t> { using type = int64_t; };
template <typename T> using Acc = typename AccOf<T>::type;

__device__ __forceinline__ float acc_of(float v) { return v; }
__device__ __forceinline__ float acc_of(__half v) { return __half2float(v); }
__device__ __forceinline__ float acc_of(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ int64_t acc_of(int32_t v) { return v; }
__device__ __forceinline__ int64_t acc_of(int64_t v) { return v; }

template <typename T> __device__ __forceinline__ T cast_out(float a) { return from_f<T>(a); }
template <typename T> __device__ __forceinline__ T cast_out(int64_t a) { return static_cast<T>(a); }

template <typename A> __device__ __forceinline__ bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>) return v != v;
  else return false;
}

// Integer arithmetic wraps (two's complement) instead of overflowing.
template <typename A> __device__ __forceinline__ A add_wrap(A a, A b) {
  if constexpr (std::is_integral_v<A>) return static_cast<A>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  else return a + b;
}
template <typename A> __device__ __forceinline__ A mul_wrap(A a, A b) {
  if constexpr (std::is_integral_v<A>) return static_cast<A>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  else return a * b;
}

template <typename A> __device__ __forceinline__ A red_init(ReduceOp op) {
  if constexpr (std::is_floating_point_v<A>) {
    if (op == ReduceOp::kMax) return -INFINITY;
    if (op == ReduceOp::kMin) return INFINITY;
  } else {
    if (op == ReduceOp::kMax) return INT64_MIN;
    if (op == ReduceOp::kMin) return INT64_MAX;
  }
  return op == ReduceOp::kProd ? A(1) : A(0);
}

// Max and Min propagate NaN, like the reference.
template <typename A> __device__ __forceinline__ A red_combine(ReduceOp op, A a, A b) {
  switch (op) {
    case ReduceOp::kProd: return mul_wrap(a, b);
    case ReduceOp::kMax: return (a > b || is_nan(a)) ? a : b;
    case ReduceOp::kMin: return (a < b || is_nan(a)) ? a : b;
    default: return add_wrap(a, b);
  }
}

template <typename A> __device__ __forceinline__ A red_map(ReduceOp op, A v, A peak) {
  switch (op) {
    case ReduceOp::kL1: return v < A(0) ? A(0) - v : v;
    case ReduceOp::kL2:
    case ReduceOp::kSumSquare: return mul_wrap(v, v);
    case ReduceOp::kLogSumExp:
      if constexpr (std::is_floating_point_v<A>) return expf(v - peak);
      else return v;
    default: return v;
  }
}

template <typename A> __device__ __forceinline__ A red_finalize(ReduceOp op, A r, int64_t count, A peak) {
  if constexpr (std::is_floating_point_v<A>) {
    switch (op) {
      case ReduceOp::kMean: return count > 0 ? r / static_cast<A>(count) : A(0);
      case ReduceOp::kL2: return sqrtf(r);
      case ReduceOp::kLogSum: return logf(r);
      case ReduceOp::kLogSumExp: return logf(r) + peak;
      default: return r;
    }
  } else {
    return r;
  }
}

template <typename A> struct Combine {
  ReduceOp op;
  __device__ __forceinline__ A operator()(A a, A b) const { return red_combine(op, a, b); }
};

// LogSumExp's shift: the row maximum (NaN ignored), or 0 when it is not finite, as in the reference.
template <typename A> __device__ __forceinline__ A lse_peak(A m) {
  if constexpr (std::is_floating_point_v<A>) return isfinite(m) ? m : A(0);
  else return A(0);
}

// Row mode: each output reduces its elements with a warp (blockDim (32, rows per block)) or a block.
template <typename T>
__global__ void __launch_bounds__(1024)
    reduce_rows_kernel(const T* __restrict__ x, T* __restrict__ y, ReduceProblem p) {
  using A = Acc<T>;
  __shared__ A smem[32];
  const ReduceOp op = p.op;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; o < p.nout; o += step) {
    const T* base = x + map_offset(p.kept, o);
    A peak = A(0);
    if (op == ReduceOp::kLogSumExp) {
      A m = red_init<A>(ReduceOp::kMax);
      for (int64_t r = threadIdx.x; r < p.nred; r += blockDim.x) m = MaxOp()(m, acc_of(base[map_offset(p.red, r)]));
      peak = lse_peak(row_allreduce(m, MaxOp(), smem));
    }
    A acc = red_init<A>(op);
    for (int64_t r = threadIdx.x; r < p.nred; r += blockDim.x)
      acc = red_combine(op, acc, red_map(op, acc_of(base[map_offset(p.red, r)]), peak));
    acc = row_allreduce(acc, Combine<A>{op}, smem);
    if (threadIdx.x == 0) y[o] = cast_out<T>(red_finalize(op, acc, p.nred, peak));
  }
}

// Reduction across threadIdx.y of a (32, by) block; every thread gets its column's result.
template <typename A, typename F>
__device__ __forceinline__ A col_allreduce(A v, F f, A (*sm)[33]) {
  __syncthreads();
  sm[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  v = sm[0][threadIdx.x];
  for (int i = 1; i < static_cast<int>(blockDim.y); ++i) v = f(v, sm[i][threadIdx.x]);
  return v;
}

// Column mode: a block owns 32 adjacent outputs along the innermost (stride-1) kept dim, so loads coalesce;
// threadIdx.y splits the reduction.
template <typename T>
__global__ void __launch_bounds__(1024)
    reduce_cols_kernel(const T* __restrict__ x, T* __restrict__ y, ReduceProblem p) {
  using A = Acc<T>;
  __shared__ A sm[32][33];
  const ReduceOp op = p.op;
  const int64_t col_tiles = (p.inner + 31) / 32;
  const int64_t ntiles = (p.nout / p.inner) * col_tiles;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const int64_t ko = t / col_tiles;
    const int64_t c = (t - ko * col_tiles) * 32 + threadIdx.x;
    const bool valid = c < p.inner;
    const T* base = x + map_offset(p.kept, ko) + (valid ? c : 0);
    A peak = A(0);
    if (op == ReduceOp::kLogSumExp) {
      A m = red_init<A>(ReduceOp::kMax);
      if (valid)
        for (int64_t r = threadIdx.y; r < p.nred; r += blockDim.y) m = MaxOp()(m, acc_of(base[map_offset(p.red, r)]));
      peak = lse_peak(col_allreduce(m, MaxOp(), sm));
    }
    A acc = red_init<A>(op);
    if (valid)
      for (int64_t r = threadIdx.y; r < p.nred; r += blockDim.y)
        acc = red_combine(op, acc, red_map(op, acc_of(base[map_offset(p.red, r)]), peak));
    acc = col_allreduce(acc, Combine<A>{op}, sm);
    if (threadIdx.y == 0 && valid) y[ko * p.inner + c] = cast_out<T>(red_finalize(op, acc, p.nred, peak));
  }
}

template <typename T>
Status reduce_t(const void* x, void* y, const ReduceProblem& p, int sm_count, cudaStream_t stream) {
  if (p.nout <= 0) return Status::Ok();
  const T* xp = static_cast<const T*>(x);
  T* yp = static_cast<T*>(y);
  if (p.inner > 0) {
    const int64_t ntiles = (p.nout / p.inner) * ((p.inner + 31) / 32);
    const unsigned by = (p.nred >= 256 && ntiles < 2ll * sm_count) ? 32 : 8;
    reduce_cols_kernel<T><<<grid_for(ntiles, 1), dim3(32, by), 0, stream>>>(xp, yp, p);
  } else {
    const dim3 block = row_block(p.nred, p.nout, sm_count);
    reduce_rows_kernel<T><<<grid_for(p.nout, block.y), block, 0, stream>>>(xp, yp, p);
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// ArgMax / ArgMin

// Whether candidate (v, k) beats (bv, bk); the index breaks ties (first or last occurrence).
template <typename A>
__device__ __forceinline__ bool arg_better(bool is_max, bool last, A v, int64_t k, A bv, int64_t bk) {
  if (v == bv) return last ? k > bk : k < bk;
  return is_max ? v > bv : v < bv;
}

// One row per warp or block (inner == 1). The reference scans sequentially with a strict comparison, so a NaN
// never wins unless it is the first element, which then wins for good: NaNs are skipped here and element 0
// decides at the end.
template <typename T>
__global__ void __launch_bounds__(1024) arg_rows_kernel(const T* __restrict__ x, int64_t* __restrict__ y,
                                                        int64_t rows, int64_t len, bool is_max, bool last) {
  using A = Acc<T>;
  __shared__ A sv[32];
  __shared__ int64_t si[32];
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows; row += step) {
    const T* xr = x + row * len;
    A bv = A(0);
    int64_t bk = -1;
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
      const A v = acc_of(xr[k]);
      if (is_nan(v)) continue;
      if (bk < 0 || arg_better(is_max, last, v, k, bv, bk)) { bv = v; bk = k; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const A ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int64_t ok = __shfl_xor_sync(0xffffffffu, bk, o);
      if (ok >= 0 && (bk < 0 || arg_better(is_max, last, ov, ok, bv, bk))) { bv = ov; bk = ok; }
    }
    if (blockDim.x > 32) {
      const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
      __syncthreads();
      if (lane == 0) { sv[w] = bv; si[w] = bk; }
      __syncthreads();
      bv = sv[0];
      bk = si[0];
      for (int i = 1; i < nw; ++i)
        if (si[i] >= 0 && (bk < 0 || arg_better(is_max, last, sv[i], si[i], bv, bk))) { bv = sv[i]; bk = si[i]; }
    }
    if (threadIdx.x == 0) y[row] = (bk < 0 || is_nan(acc_of(xr[0]))) ? 0 : bk;
  }
}

// One thread per (outer, inner) column, scanning exactly as the reference does.
template <typename T>
__global__ void arg_cols_kernel(const T* __restrict__ x, int64_t* __restrict__ y, int64_t outer, int64_t len,
                                int64_t inner, bool is_max, bool last) {
  using A = Acc<T>;
  const int64_t total = outer * inner, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += step) {
    const int64_t o = t / inner, i = t - o * inner;
    const T* p = x + o * len * inner + i;
    int64_t best = 0;
    A bv = acc_of(p[0]);
    for (int64_t k = 1; k < len; ++k) {
      const A v = acc_of(p[k * inner]);
      const bool better = is_max ? (last ? v >= bv : v > bv) : (last ? v <= bv : v < bv);
      if (better) { best = k; bv = v; }
    }
    y[t] = best;
  }
}

template <typename T>
Status arg_t(const void* x, int64_t* y, int64_t outer, int64_t len, int64_t inner, bool is_max, bool last,
             int sm_count, cudaStream_t stream) {
  if (outer * inner == 0) return Status::Ok();
  const T* xp = static_cast<const T*>(x);
  if (inner == 1 && len >= 64) {
    const dim3 block = row_block(len, outer, sm_count);
    arg_rows_kernel<T><<<grid_for(outer, block.y), block, 0, stream>>>(xp, y, outer, len, is_max, last);
  } else {
    arg_cols_kernel<T><<<grid_for(outer * inner, 256), 256, 0, stream>>>(xp, y, outer, len, inner, is_max, last);
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// CumSum

// One thread per (outer, inner) column, sequential like the reference (so float rounding matches it too).
template <typename T>
__global__ void cumsum_cols_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t len,
                                   int64_t inner, bool exclusive, bool reverse) {
  using A = Acc<T>;
  const int64_t total = outer * inner, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += step) {
    const int64_t o = t / inner, i = t - o * inner;
    const int64_t base = o * len * inner + i;
    A acc = A(0);
    for (int64_t k = 0; k < len; ++k) {
      const int64_t at = base + (reverse ? len - 1 - k : k) * inner;
      const A v = acc_of(x[at]);
      if (exclusive) {
        y[at] = cast_out<T>(acc);
        acc = add_wrap(acc, v);
      } else {
        acc = add_wrap(acc, v);
        y[at] = cast_out<T>(acc);
      }
    }
  }
}

// One block per contiguous row (inner == 1): chunks of blockDim.x elements, warp scans plus a running carry.
template <typename T>
__global__ void cumsum_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t len,
                                   bool exclusive, bool reverse) {
  using A = Acc<T>;
  __shared__ A warp_tot[32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * len;
    T* yr = y + row * len;
    A carry = A(0);
    for (int64_t c0 = 0; c0 < len; c0 += blockDim.x) {
      const int64_t k = c0 + threadIdx.x;
      const int64_t pos = reverse ? len - 1 - k : k;
      const A v = k < len ? acc_of(xr[pos]) : A(0);
      A inc = v;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const A n = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc = add_wrap(inc, n);
      }
      A exc = __shfl_up_sync(0xffffffffu, inc, 1);
      if (lane == 0) exc = A(0);
      __syncthreads();  // the previous chunk has finished reading warp_tot
      if (lane == 31) warp_tot[w] = inc;
      __syncthreads();
      A woff = A(0), tot = A(0);
      for (int i = 0; i < nw; ++i) {
        if (i < w) woff = add_wrap(woff, warp_tot[i]);
        tot = add_wrap(tot, warp_tot[i]);
      }
      if (k < len) yr[pos] = cast_out<T>(add_wrap(carry, add_wrap(woff, exclusive ? exc : inc)));
      carry = add_wrap(carry, tot);
    }
  }
}

template <typename T>
Status cumsum_t(const void* x, void* y, int64_t outer, int64_t len, int64_t inner, bool exclusive, bool reverse,
                cudaStream_t stream) {
  if (outer * len * inner == 0) return Status::Ok();
  const T* xp = static_cast<const T*>(x);
  T* yp = static_cast<T*>(y);
  if (inner == 1 && len > 64) {
    cumsum_rows_kernel<T><<<grid_for(outer, 1), 256, 0, stream>>>(xp, yp, outer, len, exclusive, reverse);
  } else {
    cumsum_cols_kernel<T><<<grid_for(outer * inner, 256), 256, 0, stream>>>(xp, yp, outer, len, inner, exclusive,
                                                                              reverse);
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

Status bad_type(const char* what, DataType dt) {
  return unsupported(std::string(what) + ": no CUDA kernel for data type " + std::to_string(static_cast<int>(dt)));
}

}  // namespace

Status launch_reduce(DataType dt, const void* x, void* y, const ReduceProblem& p, int sm_count, cudaStream_t stream) {
  if (sm_count <= 0) sm_count = 132;
  switch (dt) {
    case DataType::kFLOAT: return reduce_t<float>(x, y, p, sm_count, stream);
    case DataType::kHALF: return reduce_t<__half>(x, y, p, sm_count, stream);
    case DataType::kBF16: return reduce_t<__nv_bfloat16>(x, y, p, sm_count, stream);
    case DataType::kINT32: return reduce_t<int32_t>(x, y, p, sm_count, stream);
    case DataType::kINT64: return reduce_t<int64_t>(x, y, p, sm_count, stream);
    default: return bad_type("Reduce", dt);
  }
}

Status launch_arg_reduce(DataType dt, const void* x, int64_t* y, int64_t outer, int64_t len, int64_t inner,
                         bool is_max, bool select_last, int sm_count, cudaStream_t stream) {
  if (sm_count <= 0) sm_count = 132;
  switch (dt) {
    case DataType::kFLOAT: return arg_t<float>(x, y, outer, len, inner, is_max, select_last, sm_count, stream);
    case DataType::kHALF: return arg_t<__half>(x, y, outer, len, inner, is_max, select_last, sm_count, stream);
    case DataType::kBF16: return arg_t<__nv_bfloat16>(x, y, outer, len, inner, is_max, select_last, sm_count, stream);
    case DataType::kINT32: return arg_t<int32_t>(x, y, outer, len, inner, is_max, select_last, sm_count, stream);
    case DataType::kINT64: return arg_t<int64_t>(x, y, outer, len, inner, is_max, select_last, sm_count, stream);
    default: return bad_type("ArgMax/ArgMin", dt);
  }
}

Status launch_cumsum(DataType dt, const void* x, void* y, int64_t outer, int64_t len, int64_t inner, bool exclusive,
                     bool reverse, int /*sm_count*/, cudaStream_t stream) {
  switch (dt) {
    case DataType::kFLOAT: return cumsum_t<float>(x, y, outer, len, inner, exclusive, reverse, stream);
    case DataType::kHALF: return cumsum_t<__half>(x, y, outer, len, inner, exclusive, reverse, stream);
    case DataType::kBF16: return cumsum_t<__nv_bfloat16>(x, y, outer, len, inner, exclusive, reverse, stream);
    case DataType::kINT32: return cumsum_t<int32_t>(x, y, outer, len, inner, exclusive, reverse, stream);
    case DataType::kINT64: return cumsum_t<int64_t>(x, y, outer, len, inner, exclusive, reverse, stream);
    default: return bad_type("CumSum", dt);
  }
}

}  // namespace kiln::cuda
