// The float16 CUTLASS GEMMs whose output rows are no whole number of 16-byte vectors (B stored [N, K], no bias;
// cutlass_gemm_act.cuh).
#include "backends/cuda/cutlass/cutlass_gemm_act.cuh"

namespace kiln::cuda::cutlass_impl {

Result<std::unique_ptr<CutlassGemm>> make_odd_f16(int config, int m, int n, int k, bool bias, float alpha) {
  return make_odd<cutlass::half_t>(config, m, n, k, bias, alpha);
}

}  // namespace kiln::cuda::cutlass_impl
