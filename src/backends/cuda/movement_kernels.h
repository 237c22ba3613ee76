// Launchers of the data-movement and indexing kernels (movement.cu, movement_scatter.cu). Elements are moved as
// raw bytes of their width (1, 2, 4 or 8), so one kernel serves every data type of that size. Offsets and strides
// are in elements. Every launcher takes the stream, never allocates, never synchronizes, and launches nothing for
// an empty output.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/status.h"

namespace kiln::cuda::movement {

constexpr int kMaxCopyDims = 16;  // Tile doubles the rank of its iteration space
constexpr int kMaxDims = 8;       // every other kernel

// dst[sum_d i_d * dst_st[d]] = src[sum_d i_d * src_st[d]] for every i in the box `dims` (strides may be negative
// or zero). The launcher drops size-1 dims, merges dims that stay adjacent in both, and widens contiguous rows to
// 16/8/4-byte units where the pointers' alignment allows.
struct CopyPlan {
  int rank = 0;
  int64_t dims[kMaxCopyDims] = {};
  int64_t src_st[kMaxCopyDims] = {};
  int64_t dst_st[kMaxCopyDims] = {};
};
Status strided_copy(const void* src, void* dst, int elem_bytes, CopyPlan p, cudaStream_t stream);

// Transpose of a dense input by perm (rank <= kMaxDims): a tiled shared-memory kernel when, after collapsing,
// it is a (batched) swap of the last two dims, the strided copy otherwise.
Status transpose(const void* src, void* dst, int elem_bytes, int rank, const int64_t* in_dims, const int64_t* perm,
                 cudaStream_t stream);

// Index tensors are int32 or int64 in device memory; negative entries wrap once. Out-of-range indices (the
// reference rejects them) produce zeros in gathers and are skipped by scatters.
struct IndexRef {
  const void* data = nullptr;
  bool is64 = true;
};

// Gather along an axis of data viewed as [outer, dim, inner]: out = [outer, n_idx, inner].
Status gather(const void* data, void* out, int elem_bytes, int64_t outer, int64_t dim, int64_t inner, IndexRef idx,
              int64_t n_idx, cudaStream_t stream);

struct ElemsDesc {  // GatherElements / ScatterElements geometry
  int rank = 0;
  int axis = 0;
  int64_t idx_dims[kMaxDims] = {};   // shape of indices (= updates)
  int64_t data_st[kMaxDims] = {};    // strides of data
  int64_t axis_dim = 0;              // data.shape[axis]
};
Status gather_elements(const void* data, void* out, int elem_bytes, const ElemsDesc& d, IndexRef idx, int64_t n,
                       cudaStream_t stream);

struct NdDesc {  // GatherND geometry
  int depth = 0;                     // k: index tuple length
  int64_t dims[kMaxDims] = {};       // data.shape[b .. b+k)
  int64_t st[kMaxDims] = {};         // strides of those dims (elements)
  int64_t per_batch = 1;             // tuples per batch entry
  int64_t slab = 0;                  // elements of data per batch entry
  int64_t slice = 1;                 // elements copied per tuple
};
Status gather_nd(const void* data, void* out, int elem_bytes, const NdDesc& d, IndexRef idx, int64_t n_tuples,
                 cudaStream_t stream);

enum class PadMode : int { kConstant = 0, kReflect, kEdge, kWrap };
struct PadDesc {
  int rank = 0;
  PadMode mode = PadMode::kConstant;
  int64_t out_dims[kMaxDims] = {};
  int64_t in_dims[kMaxDims] = {};
  int64_t in_st[kMaxDims] = {};
  int64_t pad_begin[kMaxDims] = {};
  uint64_t value = 0;  // the constant's bytes (low elem_bytes bytes)
};
Status pad(const void* src, void* dst, int elem_bytes, const PadDesc& d, cudaStream_t stream);

// Resize: per-axis coordinate transformation computed in the kernel with the reference's float operations.
enum class ResizeCoord : int {
  kHalfPixel = 0, kHalfPixelSymmetric, kPytorchHalfPixel, kAlignCorners, kAsymmetric, kTfHalfPixelForNn,
  kTfCropAndResize
};
enum class ResizeNearest : int { kRoundPreferFloor = 0, kRoundPreferCeil, kFloor, kCeil, kSimple };
// Value types the linear mode interpolates (computed in float, rounded half away from zero for integers).
enum class LinearType : int { kFloat = 0, kHalf, kBF16, kInt8, kUInt8, kInt32, kInt64 };
struct ResizeDesc {
  int rank = 0;
  bool linear = false;
  ResizeCoord coord = ResizeCoord::kHalfPixel;
  ResizeNearest nearest = ResizeNearest::kRoundPreferFloor;
  int64_t in_dims[kMaxDims] = {};
  int64_t out_dims[kMaxDims] = {};
  float scales[kMaxDims] = {};
  float roi_start[kMaxDims] = {};
  float roi_end[kMaxDims] = {};
  uint64_t extrapolation = 0;  // bytes of the extrapolation value in the element type (tf_crop_and_resize)
};
Status resize_nearest(const void* src, void* dst, int elem_bytes, const ResizeDesc& d, cudaStream_t stream);
Status resize_linear(const void* src, void* dst, LinearType t, const ResizeDesc& d, cudaStream_t stream);  // rank <= 4

// Trilu over [mats, rows, cols]: keeps j >= i + k (upper) or j <= i + k (lower), zeros elsewhere.
Status trilu(const void* src, void* dst, int elem_bytes, int64_t mats, int64_t rows, int64_t cols, int64_t k,
             bool upper, cudaStream_t stream);

// Fills n elements with the value's low elem_bytes bytes.
Status fill(void* dst, int elem_bytes, int64_t n, uint64_t value, cudaStream_t stream);
// [rows, cols] zeros with `one` at (i, i + k).
Status eye(void* dst, int elem_bytes, int64_t rows, int64_t cols, int64_t k, uint64_t one, cudaStream_t stream);
// Writes n int64 values passed by value (Shape, Size).
Status write_i64(void* dst, int n, const int64_t* values, cudaStream_t stream);

// Range: out[i] = start + i * delta, in int64 for integer types (then truncated to the width) or in double for
// float/double, as the reference computes.
enum class RangeType : int { kFloat = 0, kDouble, kInt16, kInt32, kInt64 };
Status range(void* dst, RangeType t, int64_t n, double start_f, double delta_f, int64_t start_i, int64_t delta_i,
             cudaStream_t stream);

// OneHot: out viewed as [outer, depth, inner] is `off` except `on` where index(outer, inner) == position.
enum class OneHotIndex : int { kInt32 = 0, kInt64, kFloat, kDouble, kInt8, kUInt8 };
Status one_hot(const void* indices, OneHotIndex it, const void* values, void* dst, int elem_bytes, int64_t outer,
               int64_t depth, int64_t inner, cudaStream_t stream);

// --- movement_scatter.cu: ScatterND / ScatterElements with the reference's sequential semantics ---
enum class Reduction : int { kNone = 0, kAdd, kMul, kMax, kMin };
// Value types reductions other than none handle.
enum class ScatterType : int { kFloat = 0, kHalf, kBF16, kDouble, kInt8, kUInt8, kInt16, kUInt16, kInt32, kUInt32,
                               kInt64, kUInt64, kBool };

// Workspace bytes the scatter needs for n contributions (index tuples or index elements); 0 when n == 0.
size_t scatter_workspace_bytes(int64_t n);

// The output must already hold a copy of data. Contributions are grouped by destination with a stable radix sort
// so that each destination applies its updates in index order, exactly as the reference's loop does.
struct ScatterNdDesc {
  int depth = 0;
  int64_t dims[kMaxDims] = {};   // data.shape[0..k)
  int64_t slots = 0;             // product of those dims
  int64_t slice = 1;             // elements per slot
};
Status scatter_nd(void* out, const void* updates, int elem_bytes, ScatterType t, Reduction red,
                  const ScatterNdDesc& d, IndexRef idx, int64_t n_tuples, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream);
Status scatter_elements(void* out, const void* updates, int elem_bytes, ScatterType t, Reduction red,
                        const ElemsDesc& d, int64_t data_numel, IndexRef idx, int64_t n, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

}  // namespace kiln::cuda::movement
