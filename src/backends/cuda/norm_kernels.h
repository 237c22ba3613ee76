// Launchers of the normalization kernels: Softmax/LogSoftmax, LpNormalization, LayerNormalization,
// RMSNormalization, GroupNormalization, InstanceNormalization, MeanVarianceNormalization. Statistics are
// accumulated in float32 whatever the data type. Launchers take the stream, never allocate, never synchronize.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/dense_kernels.h"
#include "backends/cuda/index_map.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::cuda {

enum class RowNorm : int { kSoftmax, kLogSoftmax, kLp1, kLp2, kLayerNorm, kRmsNorm, kGroupNorm, kInstanceNorm };

// `rows` contiguous rows of `len` elements, each normalized on its own.
struct RowNormParams {
  RowNorm mode = RowNorm::kSoftmax;
  int64_t rows = 0, len = 0;
  float eps = 0.f;
  // Scale and bias (bias may be null): float, half or bf16, each with its own type.
  const void* scale = nullptr;
  const void* bias = nullptr;
  DataType scale_dtype = DataType::kFLOAT, bias_dtype = DataType::kFLOAT;
  // Layer/RMS: the position in the row -> the scale/bias element (they broadcast to the normalized dims).
  IndexMap scale_map, bias_map;
  // Group/Instance: row = n * groups + g; a row holds cpg channels of `inner` elements; parameters are per
  // channel (g * cpg + c) when per_channel, else per group.
  int64_t groups = 1, cpg = 1, inner = 1;
  bool per_channel = false;
  // LayerNormalization's optional Mean and InvStdDev outputs, one value per row, float or double.
  void* mean_out = nullptr;
  void* inv_std_out = nullptr;
  bool stats_double = false;
  // kiln AddLayerNormalization: row r of x is loaded as x + row (r mod addend_rows) of `addend` (x's type, rows of
  // len elements, the sum rounded to that type). Only the register-resident vector kernel takes it: launch_row_norm
  // answers Unsupported where that kernel does not apply, and the caller adds first.
  const void* addend = nullptr;
  int64_t addend_rows = 0;
  // kiln EmbedLayerNormalization: row r of x is row index[r] of `x` taken as a table of gather_rows rows (the
  // embedding lookup), int64 or int32 indices in device memory; a negative index counts from the end once, one
  // still outside the table reads a row of zeros (as the Gather kernel does). Register-resident kernel only, as
  // `addend`.
  const void* gather_index = nullptr;
  bool gather_index64 = true;
  int64_t gather_rows = 0;
  // And a second lookup added to the first (rounded to x's type as their Add stored it): row index2[r] of table2
  // (gather2_rows rows of len elements, x's type), under the same index rules.
  const void* gather2_table = nullptr;
  const void* gather2_index = nullptr;
  bool gather2_index64 = true;
  int64_t gather2_rows = 0;
  // y is float32 whatever x's type (a kiln norm node with to = float: the output Cast fused). Register-resident
  // kernel only, as `addend`.
  bool out_float = false;
};

// dt: float, half or bf16 for x and y (y float32 with p.out_float).
Status launch_row_norm(DataType dt, const void* x, void* y, const RowNormParams& p, int sm_count, cudaStream_t stream);

// Softmax, LogSoftmax, Lp1, Lp2 over the middle axis of [outer, len, inner] with inner > 1.
Status launch_col_norm(DataType dt, const void* x, void* y, RowNorm mode, int64_t outer, int64_t len, int64_t inner,
                       cudaStream_t stream);

// MeanVarianceNormalization: statistics over s.red for every index of s.kept; y has x's shape.
Status launch_mvn(DataType dt, const void* x, void* y, const AxisSplit& s, int sm_count, cudaStream_t stream);

// FusedMatMul's folded LayerNorm (norm_epsilon): for each of `rows` contiguous rows of `len` elements of x, its
// negated mean and alpha / sqrt(variance + eps) (biased variance), float32, into neg_mean[row] and rstd[row].
Status launch_row_stats(DataType dt, const void* x, int64_t rows, int64_t len, float eps, float alpha,
                        float* neg_mean, float* rstd, int sm_count, cudaStream_t stream);
// The same rows standardized, (x - mean) / sqrt(variance + eps), into y (x's type, rows x len): the folded form
// run as cuBLASLt's GEMM over them.
Status launch_row_standardize(DataType dt, const void* x, void* y, int64_t rows, int64_t len, float eps, int sm_count,
                              cudaStream_t stream);

// GroupNormalization on channels-last x [n, spatial, channels]: statistics per (image, group of channels / groups
// consecutive channels) in float, then y = act((x - mean) / sqrt(var + eps) * scale[c] + bias[c]). Uses
// n * groups * 8 bytes of `workspace`. dt: float, half or bf16; scale and bias float, half or bf16.
struct ChannelAffine {
  const void* scale = nullptr;
  const void* bias = nullptr;
  DataType scale_dtype = DataType::kFLOAT, bias_dtype = DataType::kFLOAT;
  int64_t channels = 1;
  float eps = 0.f;
  EpilogueParams act;  // applied last, before the store (fuse_norm_activation)
};
Status launch_nhwc_groupnorm(DataType dt, const void* x, void* y, int64_t n, int64_t spatial, int64_t groups,
                             const ChannelAffine& aff, void* workspace, size_t workspace_bytes, int sm_count,
                             cudaStream_t stream);

// LRN over x [n, c, inner] (channels at dim 1), size >= 1: x / (bias + alpha / size * sum of squares over the
// channel window [ch - (size-1)/2, ch + size-1 - (size-1)/2])^beta. dt: float, half or bf16.
Status launch_lrn(DataType dt, const void* x, void* y, int64_t n, int64_t c, int64_t inner, int64_t size, float alpha,
                  float beta, float bias, cudaStream_t stream);

}  // namespace kiln::cuda
