// ONNX QuantizeLinear and DequantizeLinear on the GPU, per tensor or per axis, for 8-bit integers (and int32 into
// DequantizeLinear): one thread per element, float32 arithmetic as the reference (division in float32, rounding
// half to even, saturation to the type's range).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/reduce_kernels.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t param_index(int64_t e, const QuantGeometry& g) {
  return g.per_tensor ? 0 : (e / g.inner) % g.n;
}

template <typename TX, typename TQ>
__global__ void quantize_kernel(const TX* __restrict__ x, const TX* __restrict__ scale, const TQ* __restrict__ zp,
                                TQ* __restrict__ y, int64_t total, QuantGeometry g, float lo, float hi) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = param_index(e, g);
    float q = rintf(to_f(x[e]) / to_f(scale[k]));  // float32 division, then half to even
    if (zp) q += static_cast<float>(zp[k]);
    q = fminf(fmaxf(q, lo), hi);  // (a NaN input becomes lo; the reference leaves that case undefined)
    y[e] = static_cast<TQ>(q);
  }
}

template <typename TQ, typename TS>
__global__ void dequantize_kernel(const TQ* __restrict__ x, const TS* __restrict__ scale, const TQ* __restrict__ zp,
                                  TS* __restrict__ y, int64_t total, QuantGeometry g) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = param_index(e, g);
    const int64_t centered = static_cast<int64_t>(x[e]) - (zp ? static_cast<int64_t>(zp[k]) : 0);
    y[e] = from_f<TS>(static_cast<float>(centered) * to_f(scale[k]));
  }
}

unsigned grid_for(int64_t total) {
  const int64_t b = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < (1 << 20) ? b : (1 << 20));
}

template <typename TX>
Status quantize_to(DataType q, const void* x, const void* s, const void* zp, void* y, int64_t total,
                   const QuantGeometry& g, cudaStream_t st) {
  if (q == DataType::kINT8)
    quantize_kernel<TX, int8_t><<<grid_for(total), kThreads, 0, st>>>(
        static_cast<const TX*>(x), static_cast<const TX*>(s), static_cast<const int8_t*>(zp), static_cast<int8_t*>(y),
        total, g, -128.f, 127.f);
  else if (q == DataType::kUINT8)
    quantize_kernel<TX, uint8_t><<<grid_for(total), kThreads, 0, st>>>(
        static_cast<const TX*>(x), static_cast<const TX*>(s), static_cast<const uint8_t*>(zp),
        static_cast<uint8_t*>(y), total, g, 0.f, 255.f);
  else
    return unsupported(std::string("QuantizeLinear: no GPU kernel for ") + dtype_name(q));
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename TQ>
Status dequantize_from(DataType s_type, const void* x, const void* s, const void* zp, void* y, int64_t total,
                       const QuantGeometry& g, cudaStream_t st) {
  const TQ* xq = static_cast<const TQ*>(x);
  const TQ* z = static_cast<const TQ*>(zp);
  switch (s_type) {
    case DataType::kFLOAT:
      dequantize_kernel<TQ, float><<<grid_for(total), kThreads, 0, st>>>(xq, static_cast<const float*>(s), z,
                                                                          static_cast<float*>(y), total, g);
      break;
    case DataType::kHALF:
      dequantize_kernel<TQ, __half><<<grid_for(total), kThreads, 0, st>>>(xq, static_cast<const __half*>(s), z,
                                                                           static_cast<__half*>(y), total, g);
      break;
    case DataType::kBF16:
      dequantize_kernel<TQ, __nv_bfloat16><<<grid_for(total), kThreads, 0, st>>>(
          xq, static_cast<const __nv_bfloat16*>(s), z, static_cast<__nv_bfloat16*>(y), total, g);
      break;
    default:
      return unsupported(std::string("DequantizeLinear: no GPU kernel for scale type ") + dtype_name(s_type));
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

}  // namespace

Status launch_quantize(DataType x_type, DataType q_type, const void* x, const void* scale, const void* zero_point,
                       void* y, int64_t total, const QuantGeometry& g, cudaStream_t stream) {
  if (total == 0) return Status::Ok();
  switch (x_type) {
    case DataType::kFLOAT: return quantize_to<float>(q_type, x, scale, zero_point, y, total, g, stream);
    case DataType::kHALF: return quantize_to<__half>(q_type, x, scale, zero_point, y, total, g, stream);
    case DataType::kBF16: return quantize_to<__nv_bfloat16>(q_type, x, scale, zero_point, y, total, g, stream);
    default: return unsupported(std::string("QuantizeLinear: no GPU kernel for input type ") + dtype_name(x_type));
  }
}

Status launch_dequantize(DataType q_type, DataType scale_type, const void* x, const void* scale,
                         const void* zero_point, void* y, int64_t total, const QuantGeometry& g, cudaStream_t stream) {
  if (total == 0) return Status::Ok();
  switch (q_type) {
    case DataType::kINT8: return dequantize_from<int8_t>(scale_type, x, scale, zero_point, y, total, g, stream);
    case DataType::kUINT8: return dequantize_from<uint8_t>(scale_type, x, scale, zero_point, y, total, g, stream);
    case DataType::kINT32: return dequantize_from<int32_t>(scale_type, x, scale, zero_point, y, total, g, stream);
    default: return unsupported(std::string("DequantizeLinear: no GPU kernel for ") + dtype_name(q_type));
  }
}

}  // namespace kiln::cuda
