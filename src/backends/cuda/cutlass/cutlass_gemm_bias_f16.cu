// The float16 CUTLASS GEMM + bias kernels (no activation, no residual; cutlass_gemm_act.cuh).
#include "backends/cuda/cutlass/cutlass_gemm_act.cuh"

namespace kiln::cuda::cutlass_impl {

Result<std::unique_ptr<CutlassGemm>> make_bias_f16(int config, bool trans_b, int m, int n, int k, bool bias,
                                                  float alpha) {
  return make_bias<cutlass::half_t>(config, trans_b, m, n, k, bias, alpha);
}

}  // namespace kiln::cuda::cutlass_impl
