// Dispatch of the CUTLASS GEMM tactics (cutlass_gemm.h) to the per-type kernels in cutlass/, or, in a build
// without the CUTLASS headers (KILN_HAVE_CUTLASS undefined), answers that there are none.
#include "backends/cuda/cutlass_gemm.h"

namespace kiln::cuda {

#ifdef KILN_HAVE_CUTLASS
namespace cutlass_impl {
Result<std::unique_ptr<CutlassGemm>> make_gelu_f16(int config, int m, int n, int k, bool bias, float alpha);
Result<std::unique_ptr<CutlassGemm>> make_gelu_bf16(int config, int m, int n, int k, bool bias, float alpha);
Result<std::unique_ptr<CutlassGemm>> make_silu_f16(int config, int m, int n, int k, bool bias, float alpha);
Result<std::unique_ptr<CutlassGemm>> make_silu_bf16(int config, int m, int n, int k, bool bias, float alpha);
Result<std::unique_ptr<CutlassGemm>> make_res_f16(int config, bool trans_b, int m, int n, int k, bool bias,
                                                  float alpha);
Result<std::unique_ptr<CutlassGemm>> make_res_bf16(int config, bool trans_b, int m, int n, int k, bool bias,
                                                   float alpha);
Result<std::unique_ptr<CutlassGemm>> make_odd_f16(int config, int m, int n, int k, bool bias, float alpha);
Result<std::unique_ptr<CutlassGemm>> make_odd_bf16(int config, int m, int n, int k, bool bias, float alpha);
Result<std::unique_ptr<CutlassGemm>> make_norm_f16(int config, int m, int n, int k, bool bias);
Result<std::unique_ptr<CutlassGemm>> make_ngelu_f16(int config, int m, int n, int k, bool bias);
std::string version();
}  // namespace cutlass_impl

bool cutlass_gemm_available() { return true; }
std::string cutlass_version() { return cutlass_impl::version(); }

Result<std::unique_ptr<CutlassGemm>> make_cutlass_gemm(CutlassAct act, int config, DataType dt, bool trans_b,
                                                       int64_t m, int64_t n, int64_t k, bool bias, float alpha) {
  // The odd-width kernels take any N (their epilogue stores element by element); the others need 16-byte rows.
  const bool odd = act == CutlassAct::kOddWidth;
  if (m <= 0 || n <= 0 || k <= 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || (!odd && n % 8 != 0) ||
      k % 8 != 0)
    return unsupported("CUTLASS GEMM: sizes " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                       (odd ? " (K must be a positive multiple of 8)" : " (N and K must be positive multiples of 8)"));
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if (odd) {
    if (!trans_b) return unsupported("CUTLASS GEMM: the odd-width kernels take B stored [N, K]");
    if (dt == DataType::kHALF) return cutlass_impl::make_odd_f16(config, mi, ni, ki, bias, alpha);
    if (dt == DataType::kBF16) return cutlass_impl::make_odd_bf16(config, mi, ni, ki, bias, alpha);
    return unsupported(std::string("CUTLASS GEMM: no kernel for ") + dtype_name(dt));
  }
  if (act == CutlassAct::kNorm || act == CutlassAct::kNormGelu) {
    if (trans_b) return unsupported("CUTLASS GEMM: the folded-LayerNorm kernels take B stored [K, N]");
    if (dt != DataType::kHALF)
      return unsupported(std::string("CUTLASS GEMM: the folded-LayerNorm kernels are built for float16, not ") +
                         dtype_name(dt));
    if (alpha != 1.f) return unsupported("CUTLASS GEMM: the folded-LayerNorm kernels take alpha in rstd");
    return act == CutlassAct::kNorm ? cutlass_impl::make_norm_f16(config, mi, ni, ki, bias)
                                    : cutlass_impl::make_ngelu_f16(config, mi, ni, ki, bias);
  }
  const bool gelu = act == CutlassAct::kGeluErf;
  // Each activation's kernels were built for one layout of B (cutlass_gemm.h); the residual ones for both.
  if ((act == CutlassAct::kGeluErf || act == CutlassAct::kSilu) && trans_b != (act == CutlassAct::kSilu))
    return unsupported(std::string("CUTLASS GEMM: the ") + (gelu ? "erf-GELU" : "SiLU") + " kernels take B stored " +
                       (gelu ? "[K, N]" : "[N, K]"));
  if (act == CutlassAct::kResidual) {
    if (dt == DataType::kHALF) return cutlass_impl::make_res_f16(config, trans_b, mi, ni, ki, bias, alpha);
    if (dt == DataType::kBF16) return cutlass_impl::make_res_bf16(config, trans_b, mi, ni, ki, bias, alpha);
  }
  switch (dt) {
    case DataType::kHALF:
      return gelu ? cutlass_impl::make_gelu_f16(config, mi, ni, ki, bias, alpha)
                  : cutlass_impl::make_silu_f16(config, mi, ni, ki, bias, alpha);
    case DataType::kBF16:
      return gelu ? cutlass_impl::make_gelu_bf16(config, mi, ni, ki, bias, alpha)
                  : cutlass_impl::make_silu_bf16(config, mi, ni, ki, bias, alpha);
    default: return unsupported(std::string("CUTLASS GEMM: no kernel for ") + dtype_name(dt));
  }
}
#else
bool cutlass_gemm_available() { return false; }
std::string cutlass_version() { return ""; }

Result<std::unique_ptr<CutlassGemm>> make_cutlass_gemm(CutlassAct, int, DataType, bool, int64_t, int64_t, int64_t,
                                                       bool, float) {
  return unsupported("this build has no CUTLASS kernels (configure with -DKILN_CUTLASS_DIR=...; `make cutlass`)");
}
#endif

}  // namespace kiln::cuda
