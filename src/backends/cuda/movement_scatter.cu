// ScatterND and ScatterElements kernels. The reference applies updates one after another in index order, so with
// duplicate indices the result depends on that order (last write wins for reduction none; float sums round per
// step). To reproduce it exactly, contributions are keyed by destination slot and stably radix-sorted; each
// destination's first contribution then applies its whole run in order. Kept in its own file: CUB is slow to
// compile.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/movement_kernels.h"

namespace kiln::cuda::movement {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(b, 1), 1 << 20));
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

__device__ __forceinline__ int64_t load_index(const void* p, bool is64, int64_t k) {
  return is64 ? static_cast<const int64_t*>(p)[k] : static_cast<int64_t>(static_cast<const int32_t*>(p)[k]);
}

// One step of the reference's reduce_into.
template <typename T>
__device__ __forceinline__ T reduce_step(T d, T v, Reduction r) {
  switch (r) {
    case Reduction::kNone: return v;
    case Reduction::kAdd: return static_cast<T>(d + v);
    case Reduction::kMul: return static_cast<T>(d * v);
    case Reduction::kMax: return d < v ? v : d;
    case Reduction::kMin: return v < d ? v : d;
  }
  return v;
}
template <>
__device__ __forceinline__ float reduce_step<float>(float d, float v, Reduction r) {
  switch (r) {
    case Reduction::kNone: return v;
    case Reduction::kAdd: return __fadd_rn(d, v);
    case Reduction::kMul: return __fmul_rn(d, v);
    case Reduction::kMax: return d < v ? v : d;
    case Reduction::kMin: return v < d ? v : d;
  }
  return v;
}
template <>
__device__ __forceinline__ double reduce_step<double>(double d, double v, Reduction r) {
  switch (r) {
    case Reduction::kNone: return v;
    case Reduction::kAdd: return __dadd_rn(d, v);
    case Reduction::kMul: return __dmul_rn(d, v);
    case Reduction::kMax: return d < v ? v : d;
    case Reduction::kMin: return v < d ? v : d;
  }
  return v;
}
template <>
__device__ __forceinline__ bool reduce_step<bool>(bool d, bool v, Reduction r) {
  switch (r) {
    case Reduction::kNone: return v;
    case Reduction::kAdd: case Reduction::kMax: return d || v;
    case Reduction::kMul: case Reduction::kMin: return d && v;
  }
  return v;
}
// Half and bfloat16 reduce in float and round back every step, as the reference does.
template <>
__device__ __forceinline__ __half reduce_step<__half>(__half d, __half v, Reduction r) {
  if (r == Reduction::kNone) return v;
  return __float2half_rn(reduce_step<float>(__half2float(d), __half2float(v), r));
}
template <>
__device__ __forceinline__ __nv_bfloat16 reduce_step<__nv_bfloat16>(__nv_bfloat16 d, __nv_bfloat16 v, Reduction r) {
  if (r == Reduction::kNone) return v;
  return __float2bfloat16_rn(reduce_step<float>(__bfloat162float(d), __bfloat162float(v), r));
}

// Keys: destination slot of each index tuple; `slots` (past the end) marks an out-of-range index.
__global__ void nd_keys_kernel(ScatterNdDesc d, IndexRef idx, uint64_t* keys, int32_t* vals, int64_t n) {
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t slot = 0;
    bool ok = true;
    for (int c = 0; c < d.depth; ++c) {
      int64_t v = load_index(idx.data, idx.is64, t * d.depth + c);
      if (v < 0) v += d.dims[c];
      ok = ok && v >= 0 && v < d.dims[c];
      slot = slot * d.dims[c] + v;
    }
    keys[t] = ok ? static_cast<uint64_t>(slot) : static_cast<uint64_t>(d.slots);
    vals[t] = static_cast<int32_t>(t);
  }
}

// Keys: data offset of each index element (the walk of the reference's walk_elements).
__global__ void elem_keys_kernel(ElemsDesc d, int64_t data_numel, IndexRef idx, uint64_t* keys, int32_t* vals,
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
    bool ok = v >= 0 && v < d.axis_dim;
    keys[e] = ok ? static_cast<uint64_t>(off + v * d.data_st[d.axis]) : static_cast<uint64_t>(data_numel);
    vals[e] = static_cast<int32_t>(e);
  }
}

// One thread per (sorted position, element of the slice); only the first position of each run of equal keys works.
template <typename T>
__global__ void apply_kernel(T* __restrict__ out, const T* __restrict__ upd, const uint64_t* __restrict__ keys,
                             const int32_t* __restrict__ vals, int64_t n, int64_t slice, uint64_t invalid,
                             Reduction red) {
  const int64_t total = n * slice;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / slice, e = i - p * slice;
    const uint64_t key = keys[p];
    if (key == invalid || (p > 0 && keys[p - 1] == key)) continue;
    T* dst = out + static_cast<int64_t>(key) * slice + e;
    if (red == Reduction::kNone) {
      int64_t q = p;
      while (q + 1 < n && keys[q + 1] == key) ++q;
      *dst = upd[static_cast<int64_t>(vals[q]) * slice + e];
      continue;
    }
    T acc = *dst;
    for (int64_t q = p; q < n && keys[q] == key; ++q) acc = reduce_step<T>(acc, upd[static_cast<int64_t>(vals[q]) * slice + e], red);
    *dst = acc;
  }
}

struct Buffers {
  uint64_t* keys[2];
  int32_t* vals[2];
  void* temp;
  size_t temp_bytes;
};

size_t sort_temp_bytes(int n) {
  size_t bytes = 0;
  cub::DoubleBuffer<uint64_t> k(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> v(nullptr, nullptr);
  if (cub::DeviceRadixSort::SortPairs(nullptr, bytes, k, v, n, 0, 64) != cudaSuccess) {
    cudaGetLastError();
    return SIZE_MAX / 4;
  }
  return bytes;
}

Status carve(int64_t n, void* ws, size_t ws_bytes, Buffers* b) {
  if (n > INT32_MAX) return unsupported("Scatter: more than 2^31 index entries");
  const size_t kb = align256(static_cast<size_t>(n) * 8), vb = align256(static_cast<size_t>(n) * 4);
  const size_t need = scatter_workspace_bytes(n);
  if (need > ws_bytes)
    return unsupported("Scatter: " + std::to_string(n) + " index entries need " + std::to_string(need) +
                       " bytes of workspace, " + std::to_string(ws_bytes) + " are available");
  auto* base = static_cast<uint8_t*>(ws);
  b->keys[0] = reinterpret_cast<uint64_t*>(base);
  b->keys[1] = reinterpret_cast<uint64_t*>(base + kb);
  b->vals[0] = reinterpret_cast<int32_t*>(base + 2 * kb);
  b->vals[1] = reinterpret_cast<int32_t*>(base + 2 * kb + vb);
  b->temp = base + 2 * kb + 2 * vb;
  b->temp_bytes = need - (2 * kb + 2 * vb);
  return Status::Ok();
}

int bits_for(uint64_t max_key) {
  int b = 1;
  while (b < 64 && (max_key >> b) != 0) ++b;
  return b;
}

// Sorts (key, position) pairs and applies them; keys/vals hold the unsorted pairs in buffers 0.
Status sort_and_apply(void* out, const void* updates, int elem_bytes, ScatterType t, Reduction red, Buffers& b,
                      int64_t n, int64_t slice, uint64_t invalid, cudaStream_t stream) {
  cub::DoubleBuffer<uint64_t> keys(b.keys[0], b.keys[1]);
  cub::DoubleBuffer<int32_t> vals(b.vals[0], b.vals[1]);
  size_t temp = b.temp_bytes;
  KILN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(b.temp, temp, keys, vals, static_cast<int>(n), 0, bits_for(invalid),
                                                  stream));
  const int64_t total = n * slice;
  auto go = [&](auto z) {
    using T = decltype(z);
    apply_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(updates),
                                                              keys.Current(), vals.Current(), n, slice, invalid, red);
    KILN_CUDA_LAUNCH_CHECK();
    return Status::Ok();
  };
  if (red == Reduction::kNone) {  // a plain copy: any type of that width
    switch (elem_bytes) {
      case 1: return go(uint8_t{});
      case 2: return go(uint16_t{});
      case 4: return go(uint32_t{});
      case 8: return go(uint64_t{});
      default: return internal_error("Scatter: element width " + std::to_string(elem_bytes) + " is not supported");
    }
  }
  switch (t) {
    case ScatterType::kFloat: return go(float{});
    case ScatterType::kHalf: return go(__half{});
    case ScatterType::kBF16: return go(__nv_bfloat16{});
    case ScatterType::kDouble: return go(double{});
    case ScatterType::kInt8: return go(int8_t{});
    case ScatterType::kUInt8: return go(uint8_t{});
    case ScatterType::kInt16: return go(int16_t{});
    case ScatterType::kUInt16: return go(uint16_t{});
    case ScatterType::kInt32: return go(int32_t{});
    case ScatterType::kUInt32: return go(uint32_t{});
    case ScatterType::kInt64: return go(int64_t{});
    case ScatterType::kUInt64: return go(uint64_t{});
    case ScatterType::kBool: return go(bool{});
  }
  return internal_error("Scatter: unknown value type");
}

}  // namespace

size_t scatter_workspace_bytes(int64_t n) {
  if (n <= 0) return 0;
  if (n > INT32_MAX) return SIZE_MAX / 4;
  return 2 * align256(static_cast<size_t>(n) * 8) + 2 * align256(static_cast<size_t>(n) * 4) +
         align256(sort_temp_bytes(static_cast<int>(n)));
}

Status scatter_nd(void* out, const void* updates, int elem_bytes, ScatterType t, Reduction red,
                  const ScatterNdDesc& d, IndexRef idx, int64_t n_tuples, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream) {
  if (n_tuples == 0 || d.slots == 0 || d.slice == 0) return Status::Ok();
  Buffers b;
  KILN_RETURN_IF_ERROR(carve(n_tuples, workspace, workspace_bytes, &b));
  nd_keys_kernel<<<grid_for(n_tuples), kThreads, 0, stream>>>(d, idx, b.keys[0], b.vals[0], n_tuples);
  KILN_CUDA_LAUNCH_CHECK();
  return sort_and_apply(out, updates, elem_bytes, t, red, b, n_tuples, d.slice, static_cast<uint64_t>(d.slots),
                        stream);
}

Status scatter_elements(void* out, const void* updates, int elem_bytes, ScatterType t, Reduction red,
                        const ElemsDesc& d, int64_t data_numel, IndexRef idx, int64_t n, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  if (n == 0 || data_numel == 0) return Status::Ok();
  Buffers b;
  KILN_RETURN_IF_ERROR(carve(n, workspace, workspace_bytes, &b));
  elem_keys_kernel<<<grid_for(n), kThreads, 0, stream>>>(d, data_numel, idx, b.keys[0], b.vals[0], n);
  KILN_CUDA_LAUNCH_CHECK();
  return sort_and_apply(out, updates, elem_bytes, t, red, b, n, 1, static_cast<uint64_t>(data_numel), stream);
}

}  // namespace kiln::cuda::movement
