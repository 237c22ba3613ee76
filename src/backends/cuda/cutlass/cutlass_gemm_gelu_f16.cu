// The float16 CUTLASS GEMM + bias + erf-GELU (B [K, N]) kernels (cutlass_gemm_act.cuh).
#include "backends/cuda/cutlass/cutlass_gemm_act.cuh"

namespace kiln::cuda::cutlass_impl {

std::string version() {
  return std::to_string(CUTLASS_MAJOR) + "." + std::to_string(CUTLASS_MINOR) + "." + std::to_string(CUTLASS_PATCH);
}

Result<std::unique_ptr<CutlassGemm>> make_gelu_f16(int config, int m, int n, int k, bool bias, float alpha) {
  return make_gelu<cutlass::half_t>(config, m, n, k, bias, alpha);
}

}  // namespace kiln::cuda::cutlass_impl
