// Own CUDA kernels of the dense family (GEMM bias/C broadcast, conv bias and padding, BatchNormalization,
// pooling): launchers with plain signatures; each takes the stream, never allocates, never synchronizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/tensor.h"
#include "kiln/status.h"

namespace kiln::ops {
struct Epilogue;
}

namespace kiln::cuda {

// y[i, j] = scale * c[i * cs0 + j * cs1] for an (m, n) output (Gemm's C broadcast to Y). dt: float types.
Status launch_broadcast_2d(DataType dt, const void* c, int64_t cs0, int64_t cs1, void* y, int64_t m, int64_t n,
                           float scale, cudaStream_t stream);

// y[o, ch, i] += b[ch] over an (outer, channels, inner) tensor (convolution bias). dt: float types.
Status launch_channel_bias(DataType dt, void* y, const void* b, int64_t outer, int64_t channels, int64_t inner,
                           cudaStream_t stream);

// A fused convolution's epilogue over y, in one pass: y = act(y + b[ch] + z) with b and z optional (null).
// Channels: ch = (i / inner) % channels (NCHW: inner = spatial size; NHWC: inner = 1). act numbers follow
// ops::Activation (none, relu, clip, sigmoid, silu, hardswish, gelu_erf, gelu_tanh, leaky_relu).
struct EpilogueParams {
  int act = 0;
  float alpha = 0.f, beta = 0.f, lo = 0.f, hi = 0.f;
};
// The parameters of a parsed epilogue (ops::Epilogue, ops/layout_util.h), for the kernels.
EpilogueParams epilogue_params(const ops::Epilogue& e);
Status launch_conv_epilogue(DataType dt, void* y, const void* b, const void* z, int64_t total, int64_t channels,
                            int64_t inner, const EpilogueParams& e, cudaStream_t stream);

// Copies planes of 3-D boxes: dst[p][d] = src[p][d + off] where that index lies inside src, else zero.
// Negative offsets pad, positive ones crop. elem_size: 2 or 4 (bit copy).
struct Box3 {
  int64_t dst[3], src[3], off[3];
};
Status launch_window_copy(int elem_size, const void* src, void* dst, int64_t planes, Box3 box, cudaStream_t stream);

// Inference BatchNormalization: y = (x - mean) * scale / sqrt(var + eps) + bias with per-channel parameters
// (per channel and position when per_position). Parameters may have their own float types.
struct BnParams {
  const void* scale = nullptr;
  const void* bias = nullptr;
  const void* mean = nullptr;
  const void* var = nullptr;
  DataType scale_dt = DataType::kFLOAT, bias_dt = DataType::kFLOAT, mean_dt = DataType::kFLOAT,
           var_dt = DataType::kFLOAT;
  float epsilon = 1e-5f;
  bool per_position = false;
};
Status launch_batchnorm(DataType dt, const void* x, void* y, int64_t n, int64_t c, int64_t inner, const BnParams& p,
                        cudaStream_t stream);

// Windowed pooling over planes of up to 3 spatial dims (left-padded with size-1 dims), one thread per output,
// with the reference's semantics (NaN propagation, empty windows give 0, count_include_pad over [-pb, in + pe)).
struct PoolGeom {
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
};
enum class PoolMode : int { kMax = 0, kAverage = 1 };
// channels_last > 0: X and Y are [planes, spatial..., channels_last] (NHWC) instead of [planes, spatial...].
Status launch_pool(DataType dt, PoolMode mode, bool count_include_pad, const void* x, void* y, int64_t planes,
                   const PoolGeom& g, cudaStream_t stream, int64_t channels_last = 0);

// Global pooling: y[p] = max or mean of the `size` values of plane p.
Status launch_global_pool(DataType dt, PoolMode mode, const void* x, void* y, int64_t planes, int64_t size,
                          cudaStream_t stream);

// kiln ToNhwc: y[n, p, k] = convert(x[n, k, p]) for k < c, 0 for c <= k < cout; x is [n, c, hw], y [n, hw, cout].
// Float, half or bfloat16 on either side.
Status launch_to_nhwc(DataType in_dt, DataType out_dt, const void* x, void* y, int64_t n, int64_t c, int64_t hw,
                      int64_t cout, cudaStream_t stream);

}  // namespace kiln::cuda
