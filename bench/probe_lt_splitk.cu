// Probe (device): cuBLASLt's ranked heuristic answers for the FP16 GEMMs of a transformer at batch 1 (M = 128
// tokens: QKV, out-proj, FFN1, FFN2), plain and with the bias epilogue, and each answer split along K where its
// algorithm allows (2-8 parts, each reduction scheme AlgoCheck accepts); each timed with the weights hot in L2 and
// cold (a fresh copy per launch). Caution: launches are timed back to back on a stream, and at these sizes the
// host's cublasLtMatmul call (~9 us on the device's CPU) is slower than the kernel (~4-7 us), so the figures are
// host-bound; the tuner's CUDA-graph timing (the 'tactic for' lines of `kiln --verbose`) is the kernel measurement.
// Build: nvcc -O2 -arch=sm_90 -o probe_lt_splitk bench/probe_lt_splitk.cu -lcublasLt
// Run:   ./probe_lt_splitk [M]   (default M = 128)
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CK(x)                                                                       \
  do {                                                                              \
    cudaError_t e_ = (x);                                                           \
    if (e_ != cudaSuccess) {                                                        \
      std::printf("CUDA %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)
#define LK(x)                                                                   \
  do {                                                                          \
    cublasStatus_t s_ = (x);                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                          \
      std::printf("cuBLASLt status %d at %s:%d\n", (int)s_, __FILE__, __LINE__); \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

struct Problem {
  const char* name;
  int m, n, k;
};

struct Setup {
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, ld;
  void *a, *b, *d, *bias, *ws;
  size_t ws_bytes;
  cudaStream_t stream;
};

// Median of 5 rounds of `reps` back-to-back launches (A taken from `copies` in turn when given), microseconds per launch; < 0 when a launch fails.
float time_algo(Setup& s, const cublasLtMatmulAlgo_t& algo, int reps, const std::vector<void*>* copies) {
  const float alpha = 1.f, beta = 0.f;
  int turn = 0;
  auto launch = [&] {
    const void* a = copies ? (*copies)[turn++ % copies->size()] : s.a;
    return cublasLtMatmul(s.lt, s.op, &alpha, a, s.la, s.b, s.lb, &beta, s.d, s.ld, s.d, s.ld, &algo, s.ws,
                          s.ws_bytes, s.stream);
  };
  for (int i = 0; i < 3; ++i)
    if (launch() != CUBLAS_STATUS_SUCCESS) return -1.f;
  if (cudaStreamSynchronize(s.stream) != cudaSuccess) return -1.f;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int r = 0; r < 5; ++r) {
    CK(cudaEventRecord(e0, s.stream));
    for (int i = 0; i < reps; ++i) launch();
    CK(cudaEventRecord(e1, s.stream));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1000.f / reps);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[2];
}

void describe(const cublasLtMatmulAlgo_t& algo, char* out, size_t n) {
  int id = 0, tile = 0, splitk = 0, red = 0, stages = 0, swz = 0;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof(swz), &w);
  std::snprintf(out, n, "id %d tile %d splitK %d red %d stages %d swz %d", id, tile, splitk, red, stages, swz);
}

// Times `algo` with the weights hot in L2 (one copy) and cold (a new copy per launch, more than L2 holds, as in a
// model whose every layer has its own weights); microseconds per launch, < 0 when it cannot run.
std::pair<float, float> time_both(Setup& s, const cublasLtMatmulAlgo_t& algo, const std::vector<void*>& copies) {
  void* a0 = s.a;
  const float hot = time_algo(s, algo, 50, nullptr);
  const float cold = hot < 0 ? -1.f : time_algo(s, algo, int(copies.size()), &copies);
  s.a = a0;
  return {hot, cold};
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const int M = argc > 1 ? std::atoi(argv[1]) : 128;
  const Problem probs[] = {{"qkv", M, 2304, 768}, {"out_proj", M, 768, 768}, {"ffn1", M, 3072, 768},
                           {"ffn2", M, 768, 3072}};
  Setup s{};
  LK(cublasLtCreate(&s.lt));
  CK(cudaStreamCreate(&s.stream));
  s.ws_bytes = 32u << 20;
  CK(cudaMalloc(&s.ws, s.ws_bytes));
  const size_t maxe = size_t(M) * 3072 + 3072 * 3072;
  CK(cudaMalloc(&s.b, maxe * 2));
  CK(cudaMalloc(&s.d, maxe * 2));
  CK(cudaMalloc(&s.bias, 3072 * 2));
  CK(cudaMemset(s.b, 0, maxe * 2));
  CK(cudaMemset(s.bias, 0, 3072 * 2));
  // Weight copies: 256 MB in all, walked in turn so each launch reads its weights from DRAM.
  const size_t wbytes = size_t(3072) * 768 * 2;
  std::vector<void*> pool;
  for (size_t used = 0; used < (256u << 20); used += wbytes) {
    void* w = nullptr;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMemset(w, 0, wbytes));
    pool.push_back(w);
  }
  s.a = pool[0];
  std::printf("M = %d; hot: one weight copy (L2); cold: %zu copies in turn (DRAM)\n", M, pool.size());
  for (const Problem& p : probs)
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      // Row-major Y[M,N] = X[M,K] W[K,N] as column-major Y^T[N,M] = W^T[N,K] X^T[K,M]: cuBLAS's A is W, B is X.
      LK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      if (with_bias) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        LK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        LK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &s.bias, sizeof(s.bias)));
      }
      LK(cublasLtMatrixLayoutCreate(&s.la, CUDA_R_16F, p.n, p.k, p.n));
      LK(cublasLtMatrixLayoutCreate(&s.lb, CUDA_R_16F, p.k, p.m, p.k));
      LK(cublasLtMatrixLayoutCreate(&s.ld, CUDA_R_16F, p.n, p.m, p.n));
      cublasLtMatmulPreference_t pref;
      LK(cublasLtMatmulPreferenceCreate(&pref));
      LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &s.ws_bytes,
                                              sizeof(s.ws_bytes)));
      cublasLtMatmulHeuristicResult_t res[16];
      int found = 0;
      LK(cublasLtMatmulAlgoGetHeuristic(s.lt, s.op, s.la, s.lb, s.ld, s.ld, pref, 16, res, &found));
      struct Row {
        std::string what;
        cublasLtMatmulAlgo_t algo;
        float hot, cold;
      };
      std::vector<Row> rows;
      char desc[160];
      for (int i = 0; i < found; ++i) {
        auto [hot, cold] = time_both(s, res[i].algo, pool);
        describe(res[i].algo, desc, sizeof(desc));
        rows.push_back({"heur" + std::to_string(i) + " " + desc, res[i].algo, hot, cold});
        // The same configuration split along K, where its algorithm allows it.
        int id = 0;
        size_t w = 0;
        cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
        cublasLtMatmulAlgo_t base;
        if (cublasLtMatmulAlgoInit(s.lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
                                   CUDA_R_16F, id, &base) != CUBLAS_STATUS_SUCCESS)
          continue;
        int32_t splitk_support = 0;
        uint32_t red_mask = 0;
        cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_support, sizeof(splitk_support), &w);
        cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &red_mask, sizeof(red_mask), &w);
        if (!splitk_support) continue;
        for (int32_t sk : {2, 3, 4, 6, 8})
          for (uint32_t red : {1u, 2u, 4u}) {
            if (!(red_mask & red)) continue;
            cublasLtMatmulAlgo_t a = res[i].algo;
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof(sk));
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red));
            cublasLtMatmulHeuristicResult_t chk;
            if (cublasLtMatmulAlgoCheck(s.lt, s.op, s.la, s.lb, s.ld, s.ld, &a, &chk) != CUBLAS_STATUS_SUCCESS ||
                chk.workspaceSize > s.ws_bytes)
              continue;
            auto [h2, c2] = time_both(s, a, pool);
            describe(a, desc, sizeof(desc));
            rows.push_back({"heur" + std::to_string(i) + "+sk " + desc, a, h2, c2});
          }
      }
      rows.erase(std::remove_if(rows.begin(), rows.end(), [](const Row& r) { return r.hot <= 0 || r.cold <= 0; }),
                 rows.end());
      const Row first = rows.empty() ? Row{"none", {}, -1, -1} : rows[0];
      float best8_hot = 1e9, best8_cold = 1e9;
      for (const Row& r : rows)
        if (r.what.find("+sk") == std::string::npos && std::atoi(r.what.c_str() + 4) < 8)
          best8_hot = std::min(best8_hot, r.hot), best8_cold = std::min(best8_cold, r.cold);
      std::printf("\n%-8s M %d N %d K %d %s: heur0 hot %.2f cold %.2f us; best of heur0-7 hot %.2f cold %.2f us (%zu timed)\n",
                  p.name, p.m, p.n, p.k, with_bias ? "bias" : "plain", first.hot, first.cold, best8_hot, best8_cold,
                  rows.size());
      std::sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) { return x.cold < y.cold; });
      for (size_t i = 0; i < rows.size() && i < 6; ++i)
        std::printf("   cold %7.2f hot %7.2f  %s\n", rows[i].cold, rows[i].hot, rows[i].what.c_str());
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(s.la);
      cublasLtMatrixLayoutDestroy(s.lb);
      cublasLtMatrixLayoutDestroy(s.ld);
      cublasLtMatmulDescDestroy(s.op);
    }
  return 0;
}
