// Data-movement kernels and their launchers: strided copy (Transpose, Slice, Concat, Split, Expand, Tile,
// DepthToSpace...), tiled transpose, gathers, Pad, Resize, Trilu and the small generators.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/movement_kernels.h"

namespace kiln::cuda::movement {
namespace {

constexpr int kThreads = 256;

// 32-bit index arithmetic below this many elements (a grid-stride step is at most 2^28, so no overflow).
constexpr int64_t kI32Limit = int64_t{1} << 30;

unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(b, 1), 1 << 20));  // grid-stride beyond
}

template <typename T>
__device__ __forceinline__ T bits_as(uint64_t v) {
  T t;
  memcpy(&t, &v, sizeof(T));
  return t;
}

__device__ __forceinline__ int64_t load_index(const void* p, bool is64, int64_t k) {
  return is64 ? static_cast<const int64_t*>(p)[k] : static_cast<int64_t>(static_cast<const int32_t*>(p)[k]);
}

// Element-width dispatch: calls f(unsigned integer of W bytes) for W in {1, 2, 4, 8}, and uint4 for 16 where
// allowed (16-byte units come only from widening contiguous rows).
template <typename F>
Status by_width(int w, bool allow16, F&& f) {
  switch (w) {
    case 1: return f(uint8_t{});
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
    case 16:
      if (allow16) return f(uint4{});
      break;
    default: break;
  }
  return internal_error("movement kernel: element width " + std::to_string(w) + " bytes is not supported");
}

// --- strided copy ---

template <typename I>
struct CopyArgs {
  int rank;
  I dims[kMaxCopyDims];
  I src_st[kMaxCopyDims];
  I dst_st[kMaxCopyDims];
};

// The source and destination offsets of linear index i over a's dims (row-major, the last dim fastest).
template <typename I>
__device__ __forceinline__ void copy_offsets(const CopyArgs<I>& a, I i, I& so, I& d_off) {
  so = 0;
  d_off = 0;
  for (int d = a.rank - 1; d >= 0; --d) {
    const I q = i / a.dims[d];
    const I c = i - q * a.dims[d];
    i = q;
    so += c * a.src_st[d];
    d_off += c * a.dst_st[d];
  }
}

template <typename T, typename I>
__global__ void strided_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, CopyArgs<I> a, I n) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); i < n; i += step) {
    I so, d_off;
    copy_offsets(a, i, so, d_off);
    dst[d_off] = src[so];
  }
}

template <typename T, typename I>
Status launch_copy(const void* src, void* dst, const CopyPlan& p, int64_t n, cudaStream_t stream) {
  CopyArgs<I> a;
  a.rank = p.rank;
  for (int d = 0; d < p.rank; ++d) {
    a.dims[d] = static_cast<I>(p.dims[d]);
    a.src_st[d] = static_cast<I>(p.src_st[d]);
    a.dst_st[d] = static_cast<I>(p.dst_st[d]);
  }
  strided_copy_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), a,
                                                                    static_cast<I>(n));
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

// Contiguous rows: the innermost dim (row_len units) is dense in both tensors, so a row's offsets are computed once
// and its units copied by consecutive threads (coalesced, with the widened 16-byte units a single vector load and
// store each). The generic kernel above decomposes every unit's index instead: on an NHWC stride-2 Slice
// ([N, H/2, W/2, C] of [N, H, W, C]) that is three integer divisions per 16 bytes. blockDim.x threads share a row,
// blockDim.y rows per block; a.rank is the number of outer dims (their strides in a).
template <typename T, typename I>
__global__ void row_copy_kernel(const T* __restrict__ src, T* __restrict__ dst, CopyArgs<I> a, I rows, I row_len) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.y);
  for (I r = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.y) + static_cast<I>(threadIdx.y); r < rows;
       r += step) {
    I so, d_off;
    copy_offsets(a, r, so, d_off);
    for (I j = static_cast<I>(threadIdx.x); j < row_len; j += static_cast<I>(blockDim.x)) dst[d_off + j] = src[so + j];
  }
}

// The row kernel needs rows long enough to keep a warp busy and enough of them to fill the GPU (one long row, a
// plain memcpy, stays with the element-wise kernel, which spreads it over every SM).
constexpr int64_t kMinRowUnits = 8, kMinRows = 512;

bool row_copy_enabled() {  // KILN_COPY_ROWS=0 withdraws the row kernel (comparisons, and a way out)
  static const bool on = [] {
    const char* v = std::getenv("KILN_COPY_ROWS");
    return !(v && v[0] == '0' && v[1] == 0);
  }();
  return on;
}

template <typename T, typename I>
Status launch_row_copy(const void* src, void* dst, const CopyPlan& p, cudaStream_t stream) {
  const int l = p.rank - 1;
  CopyArgs<I> a;
  a.rank = l;
  int64_t rows = 1;
  for (int d = 0; d < l; ++d) {
    a.dims[d] = static_cast<I>(p.dims[d]);
    a.src_st[d] = static_cast<I>(p.src_st[d]);
    a.dst_st[d] = static_cast<I>(p.dst_st[d]);
    rows *= p.dims[d];
  }
  const int64_t row_len = p.dims[l];
  const int tx = static_cast<int>(std::min<int64_t>(kThreads, (row_len + 31) / 32 * 32));
  const int ty = kThreads / tx;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((rows + ty - 1) / ty, 1 << 20));
  row_copy_kernel<T, I><<<grid, dim3(tx, ty), 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), a,
                                                            static_cast<I>(rows), static_cast<I>(row_len));
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

// Drops size-1 dims and merges neighbours that are adjacent in both src and dst.
void simplify(CopyPlan& p) {
  CopyPlan q;
  for (int d = 0; d < p.rank; ++d) {
    if (p.dims[d] == 1) continue;
    if (q.rank > 0) {
      int l = q.rank - 1;
      if (q.src_st[l] == p.src_st[d] * p.dims[d] && q.dst_st[l] == p.dst_st[d] * p.dims[d]) {
        q.dims[l] *= p.dims[d];
        q.src_st[l] = p.src_st[d];
        q.dst_st[l] = p.dst_st[d];
        continue;
      }
    }
    q.dims[q.rank] = p.dims[d];
    q.src_st[q.rank] = p.src_st[d];
    q.dst_st[q.rank] = p.dst_st[d];
    ++q.rank;
  }
  p = q;
}

bool aligned(const void* p, int w) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(w) == 0; }

// Regroups elements of `es` bytes into units of w bytes when the innermost dim is contiguous in both tensors, its
// byte length and every other stride are multiples of w, and both pointers are w-aligned.
bool try_widen(CopyPlan& p, int es, int w, const void* src, const void* dst) {
  if (p.rank == 0 || w <= es || w % es) return false;
  const int l = p.rank - 1;
  const int64_t f = w / es;
  if (p.src_st[l] != 1 || p.dst_st[l] != 1 || p.dims[l] % f) return false;
  for (int d = 0; d < l; ++d)
    if (p.src_st[d] % f || p.dst_st[d] % f) return false;
  if (!aligned(src, w) || !aligned(dst, w)) return false;
  p.dims[l] /= f;
  for (int d = 0; d < l; ++d) {
    p.src_st[d] /= f;
    p.dst_st[d] /= f;
  }
  return true;
}

bool fits_i32(const CopyPlan& p, int64_t n) {
  if (n >= kI32Limit) return false;
  int64_t smax = 0, dmax = 0;
  for (int d = 0; d < p.rank; ++d) {
    smax += (p.dims[d] - 1) * (p.src_st[d] < 0 ? -p.src_st[d] : p.src_st[d]);
    dmax += (p.dims[d] - 1) * (p.dst_st[d] < 0 ? -p.dst_st[d] : p.dst_st[d]);
  }
  return smax < kI32Limit && dmax < kI32Limit;
}

// --- tiled transpose: [batch, rows, cols] -> [batch, cols, rows] ---

constexpr int kTile = 32, kTileRows = 8;

template <typename T>
__global__ void transpose_tiled_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t batch, int64_t rows,
                                       int64_t cols) {
  __shared__ T tile[kTile][kTile + 1];
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  const int64_t col_tiles = (cols + kTile - 1) / kTile;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T* s = src + b * rows * cols;
    T* o = dst + b * rows * cols;
    for (int64_t rt = blockIdx.y; rt < row_tiles; rt += gridDim.y) {
      for (int64_t ct = blockIdx.x; ct < col_tiles; ct += gridDim.x) {
        const int64_t r0 = rt * kTile, c0 = ct * kTile;
        __syncthreads();  // the previous tile's reads are done
        for (int k = threadIdx.y; k < kTile; k += kTileRows) {
          int64_t r = r0 + k, c = c0 + threadIdx.x;
          if (r < rows && c < cols) tile[k][threadIdx.x] = s[r * cols + c];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < kTile; k += kTileRows) {
          int64_t c = c0 + k, r = r0 + threadIdx.x;
          if (r < rows && c < cols) o[c * rows + r] = tile[threadIdx.x][k];
        }
      }
    }
  }
}

// --- gathers ---

template <typename T, typename I>
__global__ void gather_kernel(const T* __restrict__ src, T* __restrict__ dst, const void* __restrict__ idx, bool is64,
                              I dim, I n_idx, I inner, I total) {
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); i < total;
       i += step) {
    I j = i % inner;
    I t = i / inner;
    I k = t % n_idx;
    I o = t / n_idx;
    int64_t v = load_index(idx, is64, k);
    if (v < 0) v += dim;
    if (v < 0 || v >= dim) dst[i] = T{};
    else dst[i] = src[(o * dim + static_cast<I>(v)) * inner + j];
  }
}

template <typename T>
__global__ void gather_elements_kernel(const T* __restrict__ src, T* __restrict__ dst, ElemsDesc d, IndexRef idx,
                                       int64_t n) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = e, off = 0;
    for (int a = d.rank - 1; a >= 0; --a) {
      int64_t q = rem / d.idx_dims[a];
      int64_t c = rem - q * d.idx_dims[a];
      rem = q;
      if (a != d.axis) off += c * d.data_st[a];
    }
    int64_t v = load_index(idx.data, idx.is64, e);
    if (v < 0) v += d.axis_dim;
    if (v < 0 || v >= d.axis_dim) dst[e] = T{};
    else dst[e] = src[off + v * d.data_st[d.axis]];
  }
}

// One thread per (tuple, unit of the slice); slice_u and the offsets are in units of T.
template <typename T>
__global__ void gather_nd_kernel(const T* __restrict__ src, T* __restrict__ dst, NdDesc d, IndexRef idx,
                                 int64_t slice_u, int64_t unit_per_elem_num, int64_t unit_per_elem_den, int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t t = i / slice_u, j = i - t * slice_u;
    int64_t off = (t / d.per_batch) * d.slab;
    bool ok = true;
    for (int c = 0; c < d.depth; ++c) {
      int64_t v = load_index(idx.data, idx.is64, t * d.depth + c);
      if (v < 0) v += d.dims[c];
      ok = ok && v >= 0 && v < d.dims[c];
      off += v * d.st[c];
    }
    // off is a multiple of the slice, so it converts exactly to units.
    if (!ok) dst[i] = T{};
    else dst[i] = src[off * unit_per_elem_num / unit_per_elem_den + j];
  }
}

// --- Pad ---

__device__ __forceinline__ int64_t pad_source(PadMode mode, int64_t o, int64_t pb, int64_t n) {
  int64_t i = o - pb;
  if (i >= 0 && i < n) return i;
  if (n == 0) return -1;
  switch (mode) {
    case PadMode::kConstant: return -1;
    case PadMode::kEdge: return i < 0 ? 0 : n - 1;
    case PadMode::kWrap: return ((i % n) + n) % n;
    case PadMode::kReflect: {
      if (n == 1) return 0;
      int64_t period = 2 * (n - 1);
      i = ((i % period) + period) % period;
      return i >= n ? period - i : i;
    }
  }
  return -1;
}

template <typename T>
__global__ void pad_kernel(const T* __restrict__ src, T* __restrict__ dst, PadDesc d, int64_t n) {
  const T value = bits_as<T>(d.value);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0;
    bool fill = false;
    for (int a = d.rank - 1; a >= 0; --a) {
      int64_t q = rem / d.out_dims[a];
      int64_t c = rem - q * d.out_dims[a];
      rem = q;
      int64_t s = pad_source(d.mode, c, d.pad_begin[a], d.in_dims[a]);
      if (s < 0) fill = true;
      else off += s * d.in_st[a];
    }
    dst[i] = fill ? value : src[off];
  }
}

// --- Resize ---
// The reference computes coordinates in float without fused multiply-adds; the _rn intrinsics keep nvcc from
// contracting, so nearest indices and linear weights come out bit-identical.

__device__ __forceinline__ float f_max(float a, float b) { return a < b ? b : a; }  // std::max
__device__ __forceinline__ float f_min(float a, float b) { return b < a ? b : a; }  // std::min

__device__ float original_coord(ResizeCoord coord, int64_t x, float scale, int64_t out_len, int64_t in_len,
                                float rs, float re) {
  const float xf = static_cast<float>(x);
  switch (coord) {
    case ResizeCoord::kHalfPixel: return __fsub_rn(__fdiv_rn(__fadd_rn(xf, 0.5f), scale), 0.5f);
    case ResizeCoord::kHalfPixelSymmetric: {
      const float len = __fmul_rn(static_cast<float>(in_len), scale);
      const float adjustment = __fdiv_rn(static_cast<float>(out_len), len);
      const float offset = __fmul_rn(__fdiv_rn(static_cast<float>(in_len), 2.0f), __fsub_rn(1.0f, adjustment));
      return __fsub_rn(__fadd_rn(offset, __fdiv_rn(__fadd_rn(xf, 0.5f), scale)), 0.5f);
    }
    case ResizeCoord::kPytorchHalfPixel:
      return out_len > 1 ? __fsub_rn(__fdiv_rn(__fadd_rn(xf, 0.5f), scale), 0.5f) : 0.0f;
    case ResizeCoord::kAlignCorners: {
      const float len = __fmul_rn(static_cast<float>(in_len), scale);
      return out_len == 1 ? 0.0f
                          : __fdiv_rn(__fmul_rn(xf, static_cast<float>(in_len - 1)), __fsub_rn(len, 1.0f));
    }
    case ResizeCoord::kAsymmetric: return __fdiv_rn(xf, scale);
    case ResizeCoord::kTfHalfPixelForNn: return __fdiv_rn(__fadd_rn(xf, 0.5f), scale);
    case ResizeCoord::kTfCropAndResize: {
      const float l1 = static_cast<float>(in_len - 1);
      if (out_len > 1)
        return __fadd_rn(__fmul_rn(rs, l1),
                         __fdiv_rn(__fmul_rn(__fmul_rn(xf, __fsub_rn(re, rs)), l1), static_cast<float>(out_len - 1)));
      return __fmul_rn(__fmul_rn(0.5f, __fadd_rn(rs, re)), l1);
    }
  }
  return 0.0f;
}

__device__ int64_t nearest_index(ResizeNearest m, float x, float scale) {
  switch (m) {
    case ResizeNearest::kRoundPreferFloor:
      return x == __fadd_rn(floorf(x), 0.5f) ? static_cast<int64_t>(floorf(x)) : static_cast<int64_t>(roundf(x));
    case ResizeNearest::kRoundPreferCeil:
      return x == __fadd_rn(floorf(x), 0.5f) ? static_cast<int64_t>(ceilf(x)) : static_cast<int64_t>(roundf(x));
    case ResizeNearest::kFloor: return static_cast<int64_t>(floorf(x));
    case ResizeNearest::kCeil: return static_cast<int64_t>(ceilf(x));
    case ResizeNearest::kSimple: return scale < 1.0f ? static_cast<int64_t>(ceilf(x)) : static_cast<int64_t>(x);
  }
  return 0;
}

__device__ __forceinline__ bool passthrough(const ResizeDesc& d, int a) {
  return d.in_dims[a] == d.out_dims[a] && d.scales[a] == 1.0f && d.coord != ResizeCoord::kTfCropAndResize;
}

__device__ __forceinline__ bool outside(const ResizeDesc& d, int a, float x) {
  return d.coord == ResizeCoord::kTfCropAndResize && (x < 0 || x > static_cast<float>(d.in_dims[a] - 1));
}

template <typename T>
__global__ void resize_nearest_kernel(const T* __restrict__ src, T* __restrict__ dst, ResizeDesc d, int64_t n) {
  const T extrap = bits_as<T>(d.extrapolation);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = i, off = 0, st = 1;
    bool out = false;
    for (int a = d.rank - 1; a >= 0; --a) {
      int64_t q = rem / d.out_dims[a];
      int64_t o = rem - q * d.out_dims[a];
      rem = q;
      int64_t s = o;
      if (!passthrough(d, a)) {
        float x = original_coord(d.coord, o, d.scales[a], d.out_dims[a], d.in_dims[a], d.roi_start[a], d.roi_end[a]);
        if (outside(d, a, x)) out = true;
        s = nearest_index(d.nearest, x, d.scales[a]);
        s = s < 0 ? 0 : (s > d.in_dims[a] - 1 ? d.in_dims[a] - 1 : s);
      }
      off += s * st;
      st *= d.in_dims[a];
    }
    dst[i] = out ? extrap : src[off];
  }
}

template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return static_cast<T>(roundf(v)); }
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Up to 4 axes with two taps: the 2^m corner values are summed pairwise from the last axis up, the order of the
// reference's depth-first walk, so float results match it bit for bit.
template <typename T>
__global__ void resize_linear_kernel(const T* __restrict__ src, T* __restrict__ dst, ResizeDesc d, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t i0[4], i1[4], st[4];
    float w0[4], w1[4];
    bool two[4];
    bool out = false;
    int64_t rem = i, stride = 1;
    for (int a = d.rank - 1; a >= 0; --a) {
      int64_t q = rem / d.out_dims[a];
      int64_t o = rem - q * d.out_dims[a];
      rem = q;
      st[a] = stride;
      stride *= d.in_dims[a];
      two[a] = false;
      w0[a] = 1.0f;
      w1[a] = 0.0f;
      i0[a] = i1[a] = o;
      if (passthrough(d, a)) continue;
      float x = original_coord(d.coord, o, d.scales[a], d.out_dims[a], d.in_dims[a], d.roi_start[a], d.roi_end[a]);
      if (outside(d, a, x)) out = true;
      const float xc = f_min(f_max(x, 0.0f), static_cast<float>(d.in_dims[a] - 1));
      const int64_t lo = static_cast<int64_t>(floorf(xc));
      const float r = __fsub_rn(xc, static_cast<float>(lo));
      i0[a] = lo;
      i1[a] = lo + 1 < d.in_dims[a] - 1 ? lo + 1 : d.in_dims[a] - 1;
      w0[a] = __fsub_rn(1.0f, r);
      w1[a] = r;
      two[a] = r != 0.0f;
    }
    if (out) {
      dst[i] = bits_as<T>(d.extrapolation);
      continue;
    }
    float acc[16];
    int m = 0;
    for (int a = 0; a < d.rank; ++a) m += two[a];
    for (int leaf = 0; leaf < (1 << m); ++leaf) {
      float w = 1.0f;
      int64_t off = 0;
      int bit = m - 1;
      for (int a = 0; a < d.rank; ++a) {
        bool hi = two[a] && ((leaf >> bit) & 1);
        if (two[a]) --bit;
        w = __fmul_rn(w, hi ? w1[a] : w0[a]);
        off += (hi ? i1[a] : i0[a]) * st[a];
      }
      acc[leaf] = __fmul_rn(w, to_f(src[off]));
    }
    for (int level = m - 1; level >= 0; --level)
      for (int p = 0; p < (1 << level); ++p) acc[p] = __fadd_rn(acc[2 * p], acc[2 * p + 1]);
    dst[i] = from_f<T>(acc[0]);
  }
}

// --- Trilu, fills, generators ---

template <typename T>
__global__ void trilu_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t rows, int64_t cols, int64_t k,
                             bool upper, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t j = i % cols;
    int64_t r = (i / cols) % rows;
    bool keep = upper ? j >= r + k : j <= r + k;
    dst[i] = keep ? src[i] : T{};
  }
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ dst, uint64_t value, int64_t n) {
  const T v = bits_as<T>(value);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = v;
}

template <typename T>
__global__ void eye_kernel(T* __restrict__ dst, int64_t cols, int64_t k, uint64_t one, int64_t n) {
  const T v = bits_as<T>(one);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = i / cols, c = i - r * cols;
    dst[i] = c == r + k ? v : T{};
  }
}

struct I64Values {
  int64_t v[kMaxDims * 2];
};
__global__ void write_i64_kernel(int64_t* dst, I64Values v, int n) {
  int i = threadIdx.x;
  if (i < n) dst[i] = v.v[i];
}

template <typename T>
__global__ void range_kernel(T* __restrict__ dst, int64_t n, double start_f, double delta_f, int64_t start_i,
                             int64_t delta_i, bool integer) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Float ranges are computed in double and rounded once, as the reference does.
    if (integer) dst[i] = static_cast<T>(start_i + i * delta_i);
    else dst[i] = static_cast<T>(__dadd_rn(start_f, __dmul_rn(static_cast<double>(i), delta_f)));
  }
}

__device__ __forceinline__ int64_t onehot_index(const void* p, OneHotIndex t, int64_t k) {
  switch (t) {
    case OneHotIndex::kInt32: return static_cast<const int32_t*>(p)[k];
    case OneHotIndex::kInt64: return static_cast<int64_t>(static_cast<double>(static_cast<const int64_t*>(p)[k]));
    case OneHotIndex::kFloat: return static_cast<int64_t>(static_cast<double>(static_cast<const float*>(p)[k]));
    case OneHotIndex::kDouble: return static_cast<int64_t>(static_cast<const double*>(p)[k]);
    case OneHotIndex::kInt8: return static_cast<const int8_t*>(p)[k];
    case OneHotIndex::kUInt8: return static_cast<const uint8_t*>(p)[k];
  }
  return -1;
}

template <typename T>
__global__ void one_hot_kernel(const void* __restrict__ indices, OneHotIndex it, const T* __restrict__ values,
                               T* __restrict__ dst, int64_t depth, int64_t inner, int64_t n) {
  const T off_v = values[0], on_v = values[1];
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t j = i % inner;
    int64_t t = i / inner;
    int64_t pos = t % depth, o = t / depth;
    int64_t v = onehot_index(indices, it, o * inner + j);
    if (v < 0) v += depth;
    dst[i] = v == pos ? on_v : off_v;
  }
}

}  // namespace

// ----------------------------------------------------------------------------------------------------------------

Status strided_copy(const void* src, void* dst, int elem_bytes, CopyPlan p, cudaStream_t stream) {
  int64_t n = 1;
  for (int d = 0; d < p.rank; ++d) n *= p.dims[d];
  if (n == 0) return Status::Ok();
  simplify(p);
  int w = elem_bytes;
  for (int cand : {16, 8, 4})
    if (cand > w && try_widen(p, w, cand, src, dst)) {
      w = cand;
      break;
    }
  n = 1;
  for (int d = 0; d < p.rank; ++d) n *= p.dims[d];
  if (p.rank == 0) {  // a single element
    p.rank = 1;
    p.dims[0] = 1;
    p.src_st[0] = p.dst_st[0] = 0;
  }
  const bool i32 = fits_i32(p, n);
  const int l = p.rank - 1;
  const bool rows = p.src_st[l] == 1 && p.dst_st[l] == 1 && p.dims[l] >= kMinRowUnits &&
                    n / p.dims[l] >= kMinRows && row_copy_enabled();
  return by_width(w, true, [&](auto t) {
    using T = decltype(t);
    if (rows)
      return i32 ? launch_row_copy<T, int32_t>(src, dst, p, stream) : launch_row_copy<T, int64_t>(src, dst, p, stream);
    return i32 ? launch_copy<T, int32_t>(src, dst, p, n, stream) : launch_copy<T, int64_t>(src, dst, p, n, stream);
  });
}

Status transpose(const void* src, void* dst, int elem_bytes, int rank, const int64_t* in_dims, const int64_t* perm,
                 cudaStream_t stream) {
  if (rank > kMaxDims) return internal_error("Transpose: rank " + std::to_string(rank) + " exceeds the kernel's limit");
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= in_dims[d];
  if (n == 0) return Status::Ok();
  // Collapse: drop size-1 axes, then merge input axes a, a' (consecutive among the kept) that stay consecutive in
  // the output. dims[] are the collapsed input dims; cperm the collapsed permutation.
  int kept[kMaxDims], nk = 0;
  for (int d = 0; d < rank; ++d)
    if (in_dims[d] != 1) kept[nk++] = d;
  int out_order[kMaxDims], no = 0;
  for (int j = 0; j < rank; ++j)
    if (in_dims[perm[j]] != 1) out_order[no++] = static_cast<int>(perm[j]);
  int pos[kMaxDims] = {}, group[kMaxDims] = {};
  for (int j = 0; j < no; ++j) pos[out_order[j]] = j;
  int64_t dims[kMaxDims];
  int nd = 0;
  for (int q = 0; q < nk; ++q) {
    const int a = kept[q];
    if (q > 0 && pos[a] == pos[kept[q - 1]] + 1) {
      dims[nd - 1] *= in_dims[a];
    } else {
      dims[nd++] = in_dims[a];
    }
    group[a] = nd - 1;
  }
  int cperm[kMaxDims], ncp = 0;
  for (int j = 0; j < no; ++j) {
    const int g = group[out_order[j]];
    if (ncp == 0 || cperm[ncp - 1] != g) cperm[ncp++] = g;
  }
  // A (batched) swap of the last two dims goes through shared-memory tiles.
  bool swap2 = nd >= 2 && cperm[nd - 1] == nd - 2 && cperm[nd - 2] == nd - 1;
  for (int j = 0; swap2 && j < nd - 2; ++j) swap2 = cperm[j] == j;
  if (swap2) {
    int64_t batch = 1;
    for (int j = 0; j < nd - 2; ++j) batch *= dims[j];
    const int64_t rows = dims[nd - 2], cols = dims[nd - 1];
    dim3 block(kTile, kTileRows);
    dim3 grid(static_cast<unsigned>(std::min<int64_t>((cols + kTile - 1) / kTile, 1 << 20)),
              static_cast<unsigned>(std::min<int64_t>((rows + kTile - 1) / kTile, 65535)),
              static_cast<unsigned>(std::min<int64_t>(batch, 65535)));
    return by_width(elem_bytes, false, [&](auto t) {
      using T = decltype(t);
      transpose_tiled_kernel<T><<<grid, block, 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), batch,
                                                            rows, cols);
      KILN_CUDA_LAUNCH_CHECK();
      return Status::Ok();
    });
  }
  // Otherwise a strided copy over the output's collapsed dims.
  int64_t in_st[kMaxDims];
  int64_t s = 1;
  for (int g = nd - 1; g >= 0; --g) {
    in_st[g] = s;
    s *= dims[g];
  }
  CopyPlan p;
  p.rank = nd;
  int64_t os = 1;
  for (int j = nd - 1; j >= 0; --j) {
    p.dims[j] = dims[cperm[j]];
    p.src_st[j] = in_st[cperm[j]];
    p.dst_st[j] = os;
    os *= p.dims[j];
  }
  return strided_copy(src, dst, elem_bytes, p, stream);
}

Status gather(const void* data, void* out, int elem_bytes, int64_t outer, int64_t dim, int64_t inner, IndexRef idx,
              int64_t n_idx, cudaStream_t stream) {
  int64_t total = outer * n_idx * inner;
  if (total == 0) return Status::Ok();
  // Rows of `inner` elements move as wider units when their byte length and both pointers allow.
  int w = elem_bytes;
  for (int cand : {16, 8, 4}) {
    if (cand <= w) break;
    if ((inner * elem_bytes) % cand == 0 && aligned(data, cand) && aligned(out, cand)) {
      w = cand;
      break;
    }
  }
  const int64_t inner_u = inner * elem_bytes / w;
  total = outer * n_idx * inner_u;
  const bool i32 = total < kI32Limit && outer * dim * inner_u < kI32Limit;
  return by_width(w, true, [&](auto t) {
    using T = decltype(t);
    if (i32)
      gather_kernel<T, int32_t><<<grid_for(total), kThreads, 0, stream>>>(
          static_cast<const T*>(data), static_cast<T*>(out), idx.data, idx.is64, static_cast<int32_t>(dim),
          static_cast<int32_t>(n_idx), static_cast<int32_t>(inner_u), static_cast<int32_t>(total));
    else
      gather_kernel<T, int64_t><<<grid_for(total), kThreads, 0, stream>>>(
          static_cast<const T*>(data), static_cast<T*>(out), idx.data, idx.is64, dim, n_idx, inner_u, total);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status gather_elements(const void* data, void* out, int elem_bytes, const ElemsDesc& d, IndexRef idx, int64_t n,
                       cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    gather_elements_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(data), static_cast<T*>(out),
                                                                     d, idx, n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status gather_nd(const void* data, void* out, int elem_bytes, const NdDesc& d, IndexRef idx, int64_t n_tuples,
                 cudaStream_t stream) {
  if (n_tuples * d.slice == 0) return Status::Ok();
  int w = elem_bytes;
  for (int cand : {16, 8, 4}) {
    if (cand <= w) break;
    if ((d.slice * elem_bytes) % cand == 0 && aligned(data, cand) && aligned(out, cand)) {
      w = cand;
      break;
    }
  }
  const int64_t slice_u = d.slice * elem_bytes / w;
  const int64_t total = n_tuples * slice_u;
  return by_width(w, true, [&](auto t) {
    using T = decltype(t);
    gather_nd_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(static_cast<const T*>(data), static_cast<T*>(out), d,
                                                                  idx, slice_u, elem_bytes, w, total);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status pad(const void* src, void* dst, int elem_bytes, const PadDesc& d, cudaStream_t stream) {
  int64_t n = 1;
  for (int a = 0; a < d.rank; ++a) n *= d.out_dims[a];
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    pad_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), d, n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status resize_nearest(const void* src, void* dst, int elem_bytes, const ResizeDesc& d, cudaStream_t stream) {
  int64_t n = 1;
  for (int a = 0; a < d.rank; ++a) n *= d.out_dims[a];
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    resize_nearest_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), d,
                                                                   n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status resize_linear(const void* src, void* dst, LinearType type, const ResizeDesc& d, cudaStream_t stream) {
  if (d.rank > 4) return internal_error("Resize: linear mode handles rank <= 4 on the GPU");
  int64_t n = 1;
  for (int a = 0; a < d.rank; ++a) n *= d.out_dims[a];
  if (n == 0) return Status::Ok();
  auto go = [&](auto t) {
    using T = decltype(t);
    resize_linear_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), d,
                                                                  n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  switch (type) {
    case LinearType::kFloat: return go(float{});
    case LinearType::kHalf: return go(__half{});
    case LinearType::kBF16: return go(__nv_bfloat16{});
    case LinearType::kInt8: return go(int8_t{});
    case LinearType::kUInt8: return go(uint8_t{});
    case LinearType::kInt32: return go(int32_t{});
    case LinearType::kInt64: return go(int64_t{});
  }
  return internal_error("Resize: unknown linear type");
}

Status trilu(const void* src, void* dst, int elem_bytes, int64_t mats, int64_t rows, int64_t cols, int64_t k,
             bool upper, cudaStream_t stream) {
  const int64_t n = mats * rows * cols;
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    trilu_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(src), static_cast<T*>(dst), rows, cols,
                                                          k, upper, n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status fill(void* dst, int elem_bytes, int64_t n, uint64_t value, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    fill_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(dst), value, n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status eye(void* dst, int elem_bytes, int64_t rows, int64_t cols, int64_t k, uint64_t one, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    eye_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(dst), cols, k, one, n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

Status write_i64(void* dst, int n, const int64_t* values, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  if (n > kMaxDims * 2) return internal_error("write_i64: too many values (" + std::to_string(n) + ")");
  I64Values v{};
  for (int i = 0; i < n; ++i) v.v[i] = values[i];
  write_i64_kernel<<<1, 32, 0, stream>>>(static_cast<int64_t*>(dst), v, n);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

Status range(void* dst, RangeType t, int64_t n, double start_f, double delta_f, int64_t start_i, int64_t delta_i,
             cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  auto go = [&](auto z, bool integer) {
    using T = decltype(z);
    range_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(dst), n, start_f, delta_f, start_i, delta_i,
                                                          integer);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  switch (t) {
    case RangeType::kFloat: return go(float{}, false);
    case RangeType::kDouble: return go(double{}, false);
    case RangeType::kInt16: return go(int16_t{}, true);
    case RangeType::kInt32: return go(int32_t{}, true);
    case RangeType::kInt64: return go(int64_t{}, true);
  }
  return internal_error("Range: unknown type");
}

Status one_hot(const void* indices, OneHotIndex it, const void* values, void* dst, int elem_bytes, int64_t outer,
               int64_t depth, int64_t inner, cudaStream_t stream) {
  const int64_t n = outer * depth * inner;
  if (n == 0) return Status::Ok();
  return by_width(elem_bytes, false, [&](auto t) {
    using T = decltype(t);
    one_hot_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(indices, it, static_cast<const T*>(values),
                                                            static_cast<T*>(dst), depth, inner, n);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  });
}

}  // namespace kiln::cuda::movement
