// The float16 CUTLASS GEMMs of a folded LayerNorm with bias and erf GELU (a pre-LN transformer's FFN1;
// cutlass_gemm_act.cuh's NormGemm).
#include "backends/cuda/cutlass/cutlass_gemm_act.cuh"

namespace kiln::cuda::cutlass_impl {

Result<std::unique_ptr<CutlassGemm>> make_ngelu_f16(int config, int m, int n, int k, bool bias) {
  return make_norm<cutlass::half_t, GeluFast>(config, m, n, k, bias);
}

}  // namespace kiln::cuda::cutlass_impl
