// The float16 CUTLASS GEMM + bias + erf-GELU kernels (cutlass_gemm_gelu.cuh).
#include "backends/cuda/cutlass/cutlass_gemm_gelu.cuh"

namespace kiln::cuda::cutlass_impl {

Result<std::unique_ptr<CutlassGemmGelu>> make_f16(int config, int m, int n, int k, bool bias, float alpha) {
  return make<cutlass::half_t>(config, m, n, k, bias, alpha);
}

}  // namespace kiln::cuda::cutlass_impl
