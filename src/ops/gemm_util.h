// Row-major GEMM for float and double, over a BLAS library loaded at first use (see gemm_util.cpp for why).
#pragma once

#include <cstdint>

namespace kiln::ops {

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, all row-major.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

// Which BLAS the CPU backend uses ("libopenblas.so.0 (OPENBLAS_CORETYPE=SkylakeX)", or the fallback).
const char* blas_description();

}  // namespace kiln::ops
