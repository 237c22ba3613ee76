// The part of kiln::FusedMatMul's epilogue that cuBLASLt does not fuse (erf GELU, SiLU, sigmoid, an activation
// before a residual): one elementwise pass over the GEMM's output, in float32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/pdl.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/transformer_kernels.h"

namespace kiln::cuda {
namespace {


// erf to ~2e-7 absolute without a branch (Abramowitz and Stegun's 7.1.26 rational form with one exponential),
// for half and bfloat16 outputs only, whose rounding (2^-9 to 2^-12 relative) is far coarser; float outputs use
// erff. erff's two polynomial branches, both evaluated when a warp's values straddle them, made the erf-GELU
// pass over bert's FFN output compute-bound (41 us per layer at batch 64 against ~25 us of memory traffic).
__device__ __forceinline__ float erf_branchless(float x) {
  const float a = fabsf(x);
  const float t = __fdividef(1.f, fmaf(0.3275911f, a, 1.f));
  const float poly = t * fmaf(t, fmaf(t, fmaf(t, fmaf(t, 1.061405429f, -1.453152027f), 1.421413741f), -0.284496736f),
                              0.254829592f);
  return copysignf(1.f - poly * __expf(-a * a), x);
}

template <typename T, EpiAct A>
__device__ __forceinline__ float act_f(float x) {
  if constexpr (A == EpiAct::kRelu) {
    return x > 0.f ? x : 0.f;
  } else if constexpr (A == EpiAct::kGeluErf) {
    const float z = x * 0.70710678118654752f;
    return 0.5f * x * (1.f + (std::is_same_v<T, float> ? erff(z) : erf_branchless(z)));
  } else if constexpr (A == EpiAct::kGeluTanh) {
    return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  } else if constexpr (A == EpiAct::kSilu) {
    // expf(-x) overflows to inf for x < -88: x / inf is -0, SiLU's limit.
    return x / (1.f + expf(-x));
  } else if constexpr (A == EpiAct::kSigmoid) {
    return 1.f / (1.f + expf(-x));
  } else {
    return x;
  }
}

// E elements per access: 16 / sizeof(T) (one 16-byte load and store, one column index per vector) when the rows
// are a whole number of vectors and y and the residual are 16-byte aligned, else 1. The scalar form alone, with a
// 64-bit modulo and a 2-byte access per element, made bert's erf-GELU pass cost more than its GEMM.
template <typename T, int E, EpiAct A>
__global__ void __launch_bounds__(256) epilogue_kernel(T* y, const T* bias, const T* res, int64_t nvec, int64_t n) {
  pdl_wait();  // launched with launch_pdl, right after the GEMM whose output it finishes
  pdl_trigger();
  using V = std::conditional_t<E == 1, T, uint4>;
  static_assert(sizeof(V) == E * sizeof(T), "E elements of T per access");
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nvec;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    V yv = reinterpret_cast<const V*>(y)[i];
    V rv = yv;  // overwritten when there is a residual, unread otherwise
    if (res) rv = reinterpret_cast<const V*>(res)[i];
    T* yt = reinterpret_cast<T*>(&yv);
    const T* rt = reinterpret_cast<const T*>(&rv);
    const int64_t col0 = bias ? (i * E) % n : 0;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      float v = to_f(yt[e]);
      if (bias) v += to_f(bias[col0 + e]);
      v = act_f<T, A>(v);
      if (res) v += to_f(rt[e]);
      yt[e] = from_f<T>(v);
    }
    reinterpret_cast<V*>(y)[i] = yv;
  }
}

template <typename T, int E, EpiAct A>
void launch_act(void* y, const void* bias, const void* res, int64_t total, int64_t n, cudaStream_t s) {
  constexpr int kThreads = 256;
  const int64_t nvec = total / E, blocks = (nvec + kThreads - 1) / kThreads;
  launch_pdl(&epilogue_kernel<T, E, A>, dim3(static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20))),
             dim3(kThreads), 0, s, static_cast<T*>(y), static_cast<const T*>(bias), static_cast<const T*>(res), nvec, n);
}

// The activation as a template argument: a run-time switch per element kept every form's code in the loop.
template <typename T, int E>
void launch_with(void* y, const void* bias, const void* res, int64_t total, int64_t n, EpiAct act, cudaStream_t s) {
  switch (act) {
    case EpiAct::kRelu: return launch_act<T, E, EpiAct::kRelu>(y, bias, res, total, n, s);
    case EpiAct::kGeluErf: return launch_act<T, E, EpiAct::kGeluErf>(y, bias, res, total, n, s);
    case EpiAct::kGeluTanh: return launch_act<T, E, EpiAct::kGeluTanh>(y, bias, res, total, n, s);
    case EpiAct::kSilu: return launch_act<T, E, EpiAct::kSilu>(y, bias, res, total, n, s);
    case EpiAct::kSigmoid: return launch_act<T, E, EpiAct::kSigmoid>(y, bias, res, total, n, s);
    default: return launch_act<T, E, EpiAct::kNone>(y, bias, res, total, n, s);
  }
}

template <typename T>
void launch(void* y, const void* bias, const void* res, int64_t total, int64_t n, EpiAct act, cudaStream_t s) {
  constexpr int E = 16 / sizeof(T);
  if (n % E == 0 && (reinterpret_cast<uintptr_t>(y) | reinterpret_cast<uintptr_t>(res)) % 16 == 0)
    launch_with<T, E>(y, bias, res, total, n, act, s);
  else
    launch_with<T, 1>(y, bias, res, total, n, act, s);
}

}  // namespace

Status launch_matmul_epilogue(DataType dt, void* y, const void* bias, const void* res, int64_t total, int64_t n,
                              EpiAct act, cudaStream_t stream) {
  if (total == 0) return Status::Ok();
  switch (dt) {
    case DataType::kFLOAT:
      launch<float>(y, bias, res, total, n, act, stream);
      break;
    case DataType::kHALF:
      launch<__half>(y, bias, res, total, n, act, stream);
      break;
    case DataType::kBF16:
      launch<__nv_bfloat16>(y, bias, res, total, n, act, stream);
      break;
    default:
      return unsupported(std::string("FusedMatMul epilogue: no kernel for ") + dtype_name(dt));
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

}  // namespace kiln::cuda
