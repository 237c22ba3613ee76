// ONNX LRN on the GPU over [N, C, inner]: one thread per element sums the squares of its channel window (float32)
// and divides by (bias + alpha / size * sum)^beta, as src/ops/norm.cpp does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/norm_kernels.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void lrn_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t c, int64_t inner, int64_t total,
                           int before, int after, float alpha_over_size, float beta, float bias) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, ch = (e / inner) % c, n = e / (inner * c);
    const int64_t lo = ch - before < 0 ? 0 : ch - before, hi = ch + after > c - 1 ? c - 1 : ch + after;
    float sq = 0.f;
    for (int64_t cc = lo; cc <= hi; ++cc) {
      const float v = to_f(x[(n * c + cc) * inner + i]);
      sq += v * v;
    }
    y[e] = from_f<T>(to_f(x[e]) / powf(bias + alpha_over_size * sq, beta));
  }
}

template <typename T>
void launch(const void* x, void* y, int64_t n, int64_t c, int64_t inner, int before, int after, float a, float b,
            float bias, cudaStream_t s) {
  const int64_t total = n * c * inner;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  lrn_kernel<T><<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), kThreads, 0, s>>>(
      static_cast<const T*>(x), static_cast<T*>(y), c, inner, total, before, after, a, b, bias);
}

}  // namespace

Status launch_lrn(DataType dt, const void* x, void* y, int64_t n, int64_t c, int64_t inner, int64_t size, float alpha,
                  float beta, float bias, cudaStream_t stream) {
  if (n * c * inner == 0) return Status::Ok();
  const int before = static_cast<int>((size - 1) / 2), after = static_cast<int>(size - 1 - before);
  const float a = alpha / static_cast<float>(size);
  switch (dt) {
    case DataType::kFLOAT: launch<float>(x, y, n, c, inner, before, after, a, beta, bias, stream); break;
    case DataType::kHALF: launch<__half>(x, y, n, c, inner, before, after, a, beta, bias, stream); break;
    case DataType::kBF16: launch<__nv_bfloat16>(x, y, n, c, inner, before, after, a, beta, bias, stream); break;
    default: return unsupported(std::string("LRN: no GPU kernel for ") + dtype_name(dt));
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

}  // namespace kiln::cuda
