// Launchers of the reduction kernels (ReduceXxx, ArgMax/ArgMin, CumSum). Plain C++ signatures: they take the
// stream, never allocate, never synchronize. Shapes arrive already coalesced by the host side.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backends/cuda/index_map.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::cuda {

enum class ReduceOp : int { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSum, kLogSumExp, kSumSquare };

struct ReduceProblem {
  ReduceOp op = ReduceOp::kSum;
  int64_t nout = 0;  // output elements (dense, in the kept dims' order)
  int64_t nred = 1;  // elements reduced into each output (the Mean's count)
  // inner == 0: row mode, `kept` maps the output index to its first input element. inner > 0: column mode, the
  // innermost kept dim (input stride 1) has `inner` elements and `kept` maps the other kept dims.
  int64_t inner = 0;
  IndexMap kept, red;  // red maps the reduction index to an offset from the output's first element
};

// dt: float, half, bf16, int32 or int64 (integers only for Sum/Max/Min/Prod). y has x's type. The workspace holds
// partial results when one contiguous reduced block is split across blocks (see reduce_cols_contiguous); null or
// small: no split.
Status launch_reduce(DataType dt, const void* x, void* y, const ReduceProblem& p, void* workspace,
                     size_t workspace_bytes, int sm_count, cudaStream_t stream);

// The reduction of x (dims `shape`, the dims with `reduced` set reduced) into y of y_numel elements: the problem
// and its mode chosen as the ReduceXxx kernels do (ReduceMean over H, W of NHWC: the contiguous column kernel).
// name: the op named in errors.
Status launch_reduce_dims(DataType dt, const void* x, void* y, const Dims& shape, const std::vector<bool>& reduced,
                          ReduceOp op, int64_t y_numel, const std::string& name, void* workspace,
                          size_t workspace_bytes, int sm_count, cudaStream_t stream);

// Whether the column-mode problem p (inner > 0) is x viewed as [outer, nred, inner] with an op the contiguous
// kernel handles: it then packs whole rows of any width into a block, so short inner dims waste no lanes.
bool reduce_cols_contiguous(DataType dt, const ReduceProblem& p);

// ArgMax/ArgMin over the middle axis of [outer, len, inner] (len >= 1), int64 indices.
Status launch_arg_reduce(DataType dt, const void* x, int64_t* y, int64_t outer, int64_t len, int64_t inner,
                         bool is_max, bool select_last, int sm_count, cudaStream_t stream);

// Inclusive/exclusive, forward/reverse running sum over the middle axis of [outer, len, inner].
Status launch_cumsum(DataType dt, const void* x, void* y, int64_t outer, int64_t len, int64_t inner, bool exclusive,
                     bool reverse, int sm_count, cudaStream_t stream);

// TopK over the middle axis of [outer, len, inner] (1 <= len <= kTopKMaxLen, 0 <= k <= len): the k best of each
// row, best first (largest or smallest; equal values by lower index, as the reference orders them), values into
// [outer, k, inner] of x's type and int64 indices. Float types.
inline constexpr int64_t kTopKMaxLen = 4096;
Status launch_topk(DataType dt, const void* x, void* values, int64_t* indices, int64_t outer, int64_t len,
                   int64_t inner, int64_t k, bool largest, cudaStream_t stream);

// QuantizeLinear / DequantizeLinear: element e uses scale and zero point 0 (per tensor) or (e / inner) % n (per axis).
struct QuantGeometry {
  bool per_tensor = true;
  int64_t n = 1, inner = 1;
};
// x (float, half or bfloat16) / scale (x's type), rounded half to even, + zero point (q_type, may be null), saturated
// to q_type (int8 or uint8).
Status launch_quantize(DataType x_type, DataType q_type, const void* x, const void* scale, const void* zero_point,
                       void* y, int64_t total, const QuantGeometry& g, cudaStream_t stream);
// (x - zero point) * scale for x int8, uint8 or int32 (zero point of x's type, may be null), into scale_type.
Status launch_dequantize(DataType q_type, DataType scale_type, const void* x, const void* scale,
                         const void* zero_point, void* y, int64_t total, const QuantGeometry& g, cudaStream_t stream);

}  // namespace kiln::cuda
