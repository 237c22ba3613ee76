// GEMM through OpenBLAS, opened with dlopen after choosing its kernel set.
//
// Why dlopen: OpenBLAS picks its kernels from the CPU model when it is loaded, and the 0.3.21 in Debian 12
// does not know recent CPU models, falling back to its slowest (Prescott) kernels: 4x slower convolutions on
// the CI machines. It only honours OPENBLAS_CORETYPE if set before it loads, which linking it directly makes
// impossible. So the runtime sets the variable from the CPU's features (unless the user set it) and then
// opens the library. Without any BLAS, a plain loop keeps results correct, with a warning.
#include "ops/gemm_util.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace kiln::ops {
namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;  // CBLAS enum values (fixed by the CBLAS standard)
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using DgemmFn = void (*)(int, int, int, int, int, int, double, const double*, int, const double*, int, double, double*,
                         int);

struct Blas {
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  std::string description = "built-in loops (no BLAS library found: install libopenblas0)";
};

const char* core_type_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;  // let OpenBLAS decide
}

const Blas& blas() {
  static Blas b = [] {
    Blas r;
    if (!std::getenv("OPENBLAS_CORETYPE"))
      if (const char* core = core_type_for_this_cpu()) setenv("OPENBLAS_CORETYPE", core, 0);
    for (const char* lib : {"libopenblas.so.0", "libopenblas.so", "libblas.so.3"}) {
      void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
      if (!h) continue;
      auto s = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
      auto d = reinterpret_cast<DgemmFn>(dlsym(h, "cblas_dgemm"));
      if (!s || !d) continue;
      r.sgemm = s;
      r.dgemm = d;
      const char* core = std::getenv("OPENBLAS_CORETYPE");
      r.description = std::string(lib) + (core ? std::string(" (OPENBLAS_CORETYPE=") + core + ")" : "");
      return r;
    }
    std::fprintf(stderr, "[W] kiln: %s\n", r.description.c_str());
    return r;
  }();
  return b;
}

template <typename T>
void gemm_loops(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
                int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * ldc + j] = alpha * acc + (beta == T(0) ? T(0) : beta * c[i * ldc + j]);
    }
}

}  // namespace

const char* blas_description() { return blas().description.c_str(); }

template <typename T, typename Fn>
void gemm_with(Fn f, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (f)
    f(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, static_cast<int>(m), static_cast<int>(n),
      static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
  else
    gemm_loops(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_with(blas().sgemm, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  gemm_with(blas().dgemm, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace kiln::ops
