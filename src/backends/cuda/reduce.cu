// Reduction kernels: ReduceXxx over any set of axes (row and column variants, each with a contiguous fast path),
// ArgMax/ArgMin and CumSum.
// Floating types accumulate in float32, integers in int64 (wrapping, as the reference does).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
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

// ---------------------------------------------------------------------------------------------------------------
// Column mode over one contiguous reduced block: x viewed as [outer, nred, inner], the NHWC global pool (axes 1, 2
// of [N, H, W, C]). The generic column kernel spends a 64-bit map_offset() and a 2-byte load per element and
// leaves 32-wide tiles idle when C is not a multiple of 32; here a block's threads walk whole rows of `inner`
// (consecutive threads read consecutive E-element vectors, rows back to back) with one pointer step per load.

// x as [outer, nred, inner]; a block reduces rows [split * chunk, +chunk) of one column tile of one outer index.
struct ColsVecPlan {
  int64_t outer = 1, nred = 1, inner = 1;
  int tile_w = 1;   // vectors of E elements per column tile
  int ntiles = 1;   // column tiles per row
  int rows = 1;     // rows a block reads at once (threads per column vector)
  int splits = 1;   // blocks per (outer, tile); > 1: partials (accumulator type) in the workspace, then a finish
  int64_t chunk = 1;  // rows per split
  unsigned threads = 32;
};

// The accumulation an op shares with others (Mean and LogSum sum, L2 sums squares): a template argument, so the
// inner loop has no switch.
constexpr ReduceOp accumulation_of(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMean:
    case ReduceOp::kLogSum: return ReduceOp::kSum;
    case ReduceOp::kL2: return ReduceOp::kSumSquare;
    default: return op;
  }
}

// v by value: a reference into global memory would let the compiler split the 16-byte load into E narrow ones.
template <typename T, int E, ReduceOp K, typename V, typename A>
__device__ __forceinline__ void accumulate_vec(A (&acc)[E], V v) {
  const T* t = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int j = 0; j < E; ++j) acc[j] = red_combine(K, acc[j], red_map(K, acc_of(t[j]), A(0)));
}

// E elements per access: 16 bytes (uint4) or one T. Deterministic: every thread adds its rows in order, the
// rows-per-column partial sums combine in a fixed tree, and splits combine in order in the finishing kernel.
template <typename T, int E, ReduceOp K>
__global__ void __launch_bounds__(256)
    reduce_cols_vec_kernel(const T* __restrict__ x, T* __restrict__ y, Acc<T>* __restrict__ part, ColsVecPlan q,
                           ReduceOp op) {
  using A = Acc<T>;
  using V = std::conditional_t<E == 1, T, uint4>;
  static_assert(sizeof(V) == E * sizeof(T), "E elements of T per access");
  __shared__ A sm[E * 256];
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int c = tid % q.tile_w, rr = tid / q.tile_w;
  const int64_t inner_v = q.inner / E;
  const int64_t step = static_cast<int64_t>(q.rows) * inner_v;  // in vectors
  const int64_t units = q.outer * q.ntiles * q.splits;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t s = u % q.splits, ot = u / q.splits;
    const int64_t tile = ot % q.ntiles, o = ot / q.ntiles;
    const int64_t cv = tile * q.tile_w + c;
    const bool active = rr < q.rows && cv < inner_v;
    const int64_t r0 = s * q.chunk, len = q.nred - r0 < q.chunk ? q.nred - r0 : q.chunk;
    A acc[E];
#pragma unroll
    for (int j = 0; j < E; ++j) acc[j] = red_init<A>(K);
    if (active && len > rr) {
      const int64_t n = (len - rr + q.rows - 1) / q.rows;  // this thread's rows: r0 + rr, + rows, ...
      const V* p = reinterpret_cast<const V*>(x + (o * q.nred + r0 + rr) * q.inner) + cv;
      int64_t k = 0;
      for (; k + 4 <= n; k += 4) {  // four loads in flight per thread
        V v[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = p[i * step];
#pragma unroll
        for (int i = 0; i < 4; ++i) accumulate_vec<T, E, K>(acc, v[i]);
        p += 4 * step;
      }
      for (; k < n; ++k, p += step) accumulate_vec<T, E, K>(acc, *p);
    }
    // Tree over the rows of a column: in round h, row rr (a multiple of 2h) takes row rr + h's value. Element j of
    // thread t sits at sm[j * nthreads + t], so a warp's accesses are consecutive words.
    __syncthreads();  // the previous unit has finished reading sm
#pragma unroll
    for (int j = 0; j < E; ++j) sm[j * nthreads + tid] = acc[j];
    for (int h = 1; h < q.rows; h <<= 1) {
      __syncthreads();
      if (active && rr % (2 * h) == 0 && rr + h < q.rows) {
#pragma unroll
        for (int j = 0; j < E; ++j) {
          acc[j] = red_combine(K, acc[j], sm[j * nthreads + tid + h * q.tile_w]);
          sm[j * nthreads + tid] = acc[j];
        }
      }
    }
    if (active && rr == 0) {
      const int64_t col = cv * E;
      if (q.splits == 1) {
#pragma unroll
        for (int j = 0; j < E; ++j) y[o * q.inner + col + j] = cast_out<T>(red_finalize(op, acc[j], q.nred, A(0)));
      } else {
        A* pp = part + (o * q.splits + s) * q.inner + col;
#pragma unroll
        for (int j = 0; j < E; ++j) pp[j] = acc[j];
      }
    }
  }
}

// Combines the splits' partials of each output, in split order, and applies the op's final step.
template <typename T>
__global__ void reduce_cols_finish_kernel(const Acc<T>* __restrict__ part, T* __restrict__ y, int64_t outer,
                                          int splits, int64_t inner, int64_t nred, ReduceOp op) {
  using A = Acc<T>;
  const int64_t total = outer * inner, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t o = i / inner, c = i - o * inner;
    const A* p = part + o * splits * inner + c;
    A acc = p[0];
    for (int s = 1; s < splits; ++s) acc = red_combine(op, acc, p[s * inner]);
    y[i] = cast_out<T>(red_finalize(op, acc, nred, A(0)));
  }
}

// x as [outer, nred, inner] with nred's stride inner, or false (then the generic kernels run).
bool outer_red_inner(const ReduceProblem& p, int64_t* outer) {
  if (p.inner <= 0 || p.nred < 1 || p.red.n != 1 || p.red.size[0] != p.nred || p.red.stride[0] != p.inner)
    return false;
  if (p.kept.n == 0) *outer = 1;
  else if (p.kept.n == 1 && p.kept.stride[0] == p.nred * p.inner) *outer = p.kept.size[0];
  else return false;
  return *outer * p.inner == p.nout;
}

// Ops with one pass and an identity (LogSumExp needs its max first; Prod stays generic); integers sum, max, min.
template <typename T> bool one_pass_op(ReduceOp op) {
  if constexpr (std::is_integral_v<T>) return op == ReduceOp::kSum || op == ReduceOp::kMax || op == ReduceOp::kMin;
  else return op != ReduceOp::kLogSumExp && op != ReduceOp::kProd;
}

// Tiles of at most 256 vectors (balanced when a row needs several) and as many rows per block as fit in 256
// threads; one split (set_splits decides more).
ColsVecPlan tile_cols_vec(int64_t outer, int64_t nred, int64_t inner, int e) {
  ColsVecPlan q;
  q.outer = outer;
  q.nred = nred;
  q.inner = inner;
  const int64_t inner_v = inner / e;
  q.ntiles = static_cast<int>((inner_v + 255) / 256);
  q.tile_w = static_cast<int>((inner_v + q.ntiles - 1) / q.ntiles);
  q.rows = static_cast<int>(std::min<int64_t>(std::max(1, 256 / q.tile_w), nred));
  q.threads = static_cast<unsigned>((q.rows * q.tile_w + 31) / 32 * 32);
  q.chunk = nred;
  return q;
}

// Each thread should read a few rows at least, else the tree and the partials cost more than the loads.
constexpr int64_t kMinRowsPerThread = 4;

// Splits the rows so that the grid fills the GPU's resident-block slots once (batch 1 and batch 128 alike), within
// the workspace; no split when the (outer, tile) units alone fill it.
void set_splits(ColsVecPlan& q, int64_t slots, size_t acc_bytes, size_t ws_bytes) {
  const int64_t units = q.outer * q.ntiles;
  int64_t splits = 1;
  if (units < slots) {
    const int64_t by_rows = (q.nred + q.rows * kMinRowsPerThread - 1) / (q.rows * kMinRowsPerThread);
    const int64_t by_ws = static_cast<int64_t>(ws_bytes / (static_cast<size_t>(q.outer * q.inner) * acc_bytes));
    splits = std::max<int64_t>(1, std::min({slots / units, by_rows, by_ws}));
  }
  q.chunk = (q.nred + splits - 1) / splits;
  q.splits = static_cast<int>((q.nred + q.chunk - 1) / q.chunk);  // no empty split
}

template <typename T, int E, ReduceOp K>
Status reduce_cols_vec_k(const T* x, T* y, void* ws, size_t ws_bytes, int64_t outer, const ReduceProblem& p,
                         int sm_count, cudaStream_t stream) {
  using A = Acc<T>;
  auto* kernel = &reduce_cols_vec_kernel<T, E, K>;
  ColsVecPlan q = tile_cols_vec(outer, p.nred, p.inner, E);
  // Resident blocks per SM for each block size (multiples of 32 up to 256), asked once per kernel.
  static std::atomic<int> per_sm_cache[9];
  int per_sm = per_sm_cache[q.threads / 32].load(std::memory_order_relaxed);
  if (per_sm == 0) {
    KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, static_cast<int>(q.threads), 0));
    per_sm = std::max(per_sm, 1);
    per_sm_cache[q.threads / 32].store(per_sm, std::memory_order_relaxed);
  }
  set_splits(q, static_cast<int64_t>(sm_count) * per_sm, sizeof(A), ws ? ws_bytes : 0);
  A* part = static_cast<A*>(ws);
  kernel<<<grid_for(outer * q.ntiles * q.splits, 1), q.threads, 0, stream>>>(x, y, part, q, p.op);
  KILN_CUDA_LAUNCH_CHECK();
  if (q.splits > 1) {
    reduce_cols_finish_kernel<T>
        <<<grid_for(outer * p.inner, 256), 256, 0, stream>>>(part, y, outer, q.splits, p.inner, p.nred, p.op);
    KILN_CUDA_LAUNCH_CHECK();
  }
  return Status::Ok();
}

template <typename T, ReduceOp K>
Status reduce_cols_vec_e(const T* x, T* y, void* ws, size_t ws_bytes, int64_t outer, const ReduceProblem& p,
                         int sm_count, cudaStream_t stream) {
  constexpr int E = 16 / sizeof(T);
  if (p.inner % E == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0)
    return reduce_cols_vec_k<T, E, K>(x, y, ws, ws_bytes, outer, p, sm_count, stream);
  return reduce_cols_vec_k<T, 1, K>(x, y, ws, ws_bytes, outer, p, sm_count, stream);
}

// Calls launch(std::integral_constant<ReduceOp, K>()) with K the op's accumulation (one of the one-pass ops).
template <typename T, typename F>
Status with_accumulation(ReduceOp op, F&& launch) {
  using std::integral_constant;
  switch (accumulation_of(op)) {
    case ReduceOp::kMax: return launch(integral_constant<ReduceOp, ReduceOp::kMax>());
    case ReduceOp::kMin: return launch(integral_constant<ReduceOp, ReduceOp::kMin>());
    default: break;
  }
  if constexpr (std::is_floating_point_v<Acc<T>>) {
    switch (accumulation_of(op)) {
      case ReduceOp::kSumSquare: return launch(integral_constant<ReduceOp, ReduceOp::kSumSquare>());
      case ReduceOp::kL1: return launch(integral_constant<ReduceOp, ReduceOp::kL1>());
      default: break;
    }
  }
  return launch(integral_constant<ReduceOp, ReduceOp::kSum>());
}

template <typename T>
Status reduce_cols_vec(const T* x, T* y, void* ws, size_t ws_bytes, int64_t outer, const ReduceProblem& p,
                       int sm_count, cudaStream_t stream) {
  return with_accumulation<T>(p.op, [&](auto k) {
    return reduce_cols_vec_e<T, decltype(k)::value>(x, y, ws, ws_bytes, outer, p, sm_count, stream);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Row mode over contiguous rows: x viewed as [nout, nred] (the innermost dims reduced, a LayerNorm-style mean).
// The generic row kernel computes map_offset() and loads 2 bytes per element; here each row is a pointer and
// the threads read E-element vectors along it, four in flight.

template <typename T, int E, ReduceOp K>
__global__ void __launch_bounds__(1024)
    reduce_rows_vec_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t len, ReduceOp op) {
  using A = Acc<T>;
  using V = std::conditional_t<E == 1, T, uint4>;
  static_assert(sizeof(V) == E * sizeof(T), "E elements of T per access");
  __shared__ A smem[32];
  const int64_t nv = len / E;
  const int bd = blockDim.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; o < rows; o += step) {
    const V* base = reinterpret_cast<const V*>(x + o * len);
    A acc[E];
#pragma unroll
    for (int j = 0; j < E; ++j) acc[j] = red_init<A>(K);
    int64_t r = threadIdx.x;
    for (; r + 3 * bd < nv; r += 4 * bd) {
      V v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = base[r + i * bd];
#pragma unroll
      for (int i = 0; i < 4; ++i) accumulate_vec<T, E, K>(acc, v[i]);
    }
    for (; r < nv; r += bd) accumulate_vec<T, E, K>(acc, base[r]);
    A a = acc[0];
#pragma unroll
    for (int j = 1; j < E; ++j) a = red_combine(K, a, acc[j]);
    a = row_allreduce(a, Combine<A>{K}, smem);
    if (threadIdx.x == 0) y[o] = cast_out<T>(red_finalize(op, a, len, A(0)));
  }
}

// x as [nout, nred] with each output's elements contiguous, or false.
bool rows_contiguous(const ReduceProblem& p) {
  if (p.inner != 0 || p.nred < 1 || p.red.n != 1 || p.red.size[0] != p.nred || p.red.stride[0] != 1) return false;
  if (p.kept.n == 0) return p.nout == 1;
  return p.kept.n == 1 && p.kept.size[0] == p.nout && p.kept.stride[0] == p.nred;
}

template <typename T, int E, ReduceOp K>
Status reduce_rows_vec_k(const T* x, T* y, const ReduceProblem& p, int sm_count, cudaStream_t stream) {
  const dim3 block = row_block(p.nred / E, p.nout, sm_count);
  reduce_rows_vec_kernel<T, E, K><<<grid_for(p.nout, block.y), block, 0, stream>>>(x, y, p.nout, p.nred, p.op);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T>
Status reduce_rows_vec(const T* x, T* y, const ReduceProblem& p, int sm_count, cudaStream_t stream) {
  constexpr int E = 16 / sizeof(T);
  const bool vec = p.nred % E == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  return with_accumulation<T>(p.op, [&](auto k) {
    constexpr ReduceOp K = decltype(k)::value;
    return vec ? reduce_rows_vec_k<T, E, K>(x, y, p, sm_count, stream)
               : reduce_rows_vec_k<T, 1, K>(x, y, p, sm_count, stream);
  });
}

template <typename T>
Status reduce_t(const void* x, void* y, const ReduceProblem& p, void* ws, size_t ws_bytes, int sm_count,
                cudaStream_t stream) {
  if (p.nout <= 0) return Status::Ok();
  const T* xp = static_cast<const T*>(x);
  T* yp = static_cast<T*>(y);
  int64_t outer = 0;
  if (one_pass_op<T>(p.op) && outer_red_inner(p, &outer))
    return reduce_cols_vec<T>(xp, yp, ws, ws_bytes, outer, p, sm_count, stream);
  if (one_pass_op<T>(p.op) && rows_contiguous(p)) return reduce_rows_vec<T>(xp, yp, p, sm_count, stream);
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

bool reduce_cols_contiguous(DataType dt, const ReduceProblem& p) {
  int64_t outer = 0;
  if (!outer_red_inner(p, &outer)) return false;
  switch (dt) {
    case DataType::kFLOAT: return one_pass_op<float>(p.op);
    case DataType::kHALF: return one_pass_op<__half>(p.op);
    case DataType::kBF16: return one_pass_op<__nv_bfloat16>(p.op);
    case DataType::kINT32: return one_pass_op<int32_t>(p.op);
    case DataType::kINT64: return one_pass_op<int64_t>(p.op);
    default: return false;
  }
}

Status launch_reduce(DataType dt, const void* x, void* y, const ReduceProblem& p, void* workspace,
                     size_t workspace_bytes, int sm_count, cudaStream_t stream) {
  if (sm_count <= 0) sm_count = 132;
  switch (dt) {
    case DataType::kFLOAT: return reduce_t<float>(x, y, p, workspace, workspace_bytes, sm_count, stream);
    case DataType::kHALF: return reduce_t<__half>(x, y, p, workspace, workspace_bytes, sm_count, stream);
    case DataType::kBF16: return reduce_t<__nv_bfloat16>(x, y, p, workspace, workspace_bytes, sm_count, stream);
    case DataType::kINT32: return reduce_t<int32_t>(x, y, p, workspace, workspace_bytes, sm_count, stream);
    case DataType::kINT64: return reduce_t<int64_t>(x, y, p, workspace, workspace_bytes, sm_count, stream);
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
