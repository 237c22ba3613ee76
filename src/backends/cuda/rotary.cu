// ONNX RotaryEmbedding (opset 23) on the GPU: one thread per output element, float32 arithmetic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/transformer_kernels.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// Element e of the output (x's shape, contiguous): row r = e / D holds one head's D values, rotated in its first R
// (pairs (i, i + R/2), or (2i, 2i + 1) when interleaved) by the angle of its (batch, position) and copied after.
template <typename T>
__global__ void rotary_kernel(const T* __restrict__ x, const T* __restrict__ cosc, const T* __restrict__ sinc,
                              const int64_t* __restrict__ pos, T* __restrict__ y, RotaryParams p) {
  const int64_t total = p.rows * p.D;
  const int64_t half = p.R / 2;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / p.D, d = e % p.D;
    if (d >= p.R) {
      y[e] = x[e];
      continue;
    }
    // (batch, position) of the row: rows run over [B,H,S] (4-D input) or [B,S,H] (3-D input).
    const int64_t s = p.four_d ? r % p.S : (r / p.H) % p.S;
    const int64_t b = r / (p.S * p.H);
    int64_t crow = b * p.S + s;
    bool valid = true;
    if (pos) {
      crow = pos[b * p.S + s];
      valid = crow >= 0 && crow < p.cache_rows;
    }
    if (!valid) {  // the reference rejects such a position; here the row shows it instead of reading past the cache
      y[e] = from_f<T>(NAN);
      continue;
    }
    const int64_t i = p.interleaved ? d / 2 : (d < half ? d : d - half);
    const bool first = p.interleaved ? d % 2 == 0 : d < half;
    const T* row = x + r * p.D;
    const float x1 = to_f(row[p.interleaved ? 2 * i : i]), x2 = to_f(row[p.interleaved ? 2 * i + 1 : i + half]);
    const float c = to_f(cosc[crow * half + i]), sn = to_f(sinc[crow * half + i]);
    y[e] = from_f<T>(first ? c * x1 - sn * x2 : sn * x1 + c * x2);
  }
}

template <typename T>
void launch(const RotaryParams& p, const void* x, const void* c, const void* s, const int64_t* pos, void* y,
            cudaStream_t stream) {
  const int64_t total = p.rows * p.D;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  rotary_kernel<T><<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(c), static_cast<const T*>(s), pos, static_cast<T*>(y), p);
}

}  // namespace

Status launch_rotary_embedding(DataType dt, const RotaryParams& p, const void* x, const void* cos_cache,
                               const void* sin_cache, const int64_t* position_ids, void* y, cudaStream_t stream) {
  if (p.rows * p.D == 0) return Status::Ok();
  switch (dt) {
    case DataType::kFLOAT:
      launch<float>(p, x, cos_cache, sin_cache, position_ids, y, stream);
      break;
    case DataType::kHALF:
      launch<__half>(p, x, cos_cache, sin_cache, position_ids, y, stream);
      break;
    case DataType::kBF16:
      launch<__nv_bfloat16>(p, x, cos_cache, sin_cache, position_ids, y, stream);
      break;
    default:
      return unsupported(std::string("RotaryEmbedding: no kernel for ") + dtype_name(dt));
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

}  // namespace kiln::cuda
