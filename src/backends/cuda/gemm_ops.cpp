// MatMul and Gemm on cuBLASLt. Row-major Y = op(A) op(B) is computed as the column-major Y^T = op(B)^T op(A)^T,
// so the stored row-major buffers are passed as they are, B first. Descriptors and the chosen algorithm live in
// the step's state; the algorithm is picked by cuBLASLt's heuristic for the pointers' alignment. FusedMatMul
// layers whose epilogue cuBLASLt cannot finish (erf-GELU, SiLU, sigmoid) are offered cuDNN graph tactics too
// (dnn_matmul.h), gated by KILN_DNN_MATMUL=1.
#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"
#include "backends/cuda/dnn_matmul.h"
#include "backends/cuda/dnn_layer_plan.h"
#include "backends/cuda/gemm_geometry.h"
#include "backends/cuda/cutlass_gemm.h"
#include "backends/cuda/gemm_tactics.h"
#include "backends/cuda/norm_kernels.h"
#include "backends/cuda/transformer_kernels.h"
#include "kiln/logger.h"
#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

cudaDataType_t lt_type(DataType dt) {
  switch (dt) {
    case DataType::kHALF: return CUDA_R_16F;
    case DataType::kBF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

// Largest power of two <= 256 dividing the address and every byte stride OR-ed into `extra`.
uint32_t alignment(const void* p, uint64_t extra) {
  uint64_t v = reinterpret_cast<uintptr_t>(p) | extra;
  uint32_t a = 256;
  while (a > 1 && (v % a) != 0) a >>= 1;
  return a;
}

// One row-major problem: D(m x n) = alpha * op(A) op(B) + beta * D, optionally a strided batch, optionally with a
// length-n bias added to every row (cuBLASLt's bias epilogue).
struct GemmShape {
  DataType dt = DataType::kFLOAT;
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0;  // row-major leading dimensions of the stored A and B
  int64_t ldd = 0;           // of D (0: n, packed rows)
  int64_t batch = 1;
  int64_t sa = 0, sb = 0, sd = 0;  // batch strides in elements (0: the matrix is shared)
  bool bias = false;
  // Set: this epilogue instead of the plain bias one (RELU_BIAS, GELU_BIAS, RELU, GELU for FusedMatMul).
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
};

// cuBLASLt's column-major view of a GemmShape: a stored row-major (r x c) matrix with leading dimension ld is a
// column-major (c x r) one, so cuBLAS computes Y^T = op(B)^T op(A)^T with our B as its A and our A as its B.
struct ColMajor {
  cublasOperation_t op_a, op_b;
  int64_t a_rows, a_cols, lda;  // cuBLAS's A: our B
  int64_t b_rows, b_cols, ldb;  // cuBLAS's B: our A
  int64_t d_rows, d_cols, ldd;
};

ColMajor col_major(const GemmShape& s) {
  ColMajor c;
  c.op_a = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.op_b = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.a_rows = s.tb ? s.k : s.n;  // stored B is (n x k) when transposed, else (k x n)
  c.a_cols = s.tb ? s.n : s.k;
  c.lda = std::max<int64_t>(s.ldb, 1);
  c.b_rows = s.ta ? s.m : s.k;  // stored A is (k x m) when transposed, else (m x k)
  c.b_cols = s.ta ? s.k : s.m;
  c.ldb = std::max<int64_t>(s.lda, 1);
  c.d_rows = s.n;
  c.d_cols = s.m;
  c.ldd = std::max<int64_t>(s.ldd ? s.ldd : s.n, 1);
  return c;
}

// The problem's output rows, columns and depth as the layer's shapes give them (MatMul, FusedMatMul or Gemm).
bool gemm_extent(const KernelArgs& a, int64_t* rows, int64_t* n, int64_t* k) {
  if (!a.node || a.in.empty() || a.out.empty() || a.in[0].shape.empty() || a.out[0].shape.empty()) return false;
  const Dims& x = a.in[0].shape;
  const Dims& y = a.out[0].shape;
  *n = y.back();
  if (*n <= 0) return false;
  *rows = volume(y) / *n;
  auto ta = a.attrs().get_int("transA", 0);
  const bool trans_a = a.node->op_type == "Gemm" && ta.ok() && *ta != 0;
  *k = trans_a ? x.front() : x.back();
  return true;
}

// The candidates for the layer's shapes (gemm_tactics.h).
std::vector<std::string> gemm_tactics(const KernelArgs& a) {
  int64_t rows = 0, n = 0, k = 0;
  if (!a.handles || !gemm_extent(a, &rows, &n, &k)) return lt_tactics(0, 0, 0, 0);
  return lt_tactics(rows, n, k, a.handles->sm_count);
}

class LtGemm {
 public:
  LtGemm() = default;
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  ~LtGemm() { release(); }

  // May be called again (FusedMatMul re-plans without its epilogue): the previous descriptors are dropped.
  Status init(const GemmShape& s, bool tf32) {
    release();
    s_ = s;
    if (s.batch > INT_MAX) return unsupported("MatMul: batch of " + std::to_string(s.batch) + " matrices is too large");
    cublasComputeType_t compute =
        s.dt == DataType::kFLOAT && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    compute_ = compute;
    KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, compute, CUDA_R_32F));
    const ColMajor cm = col_major(s);
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &cm.op_a, sizeof(cm.op_a)));
    KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &cm.op_b, sizeof(cm.op_b)));
    const cublasLtEpilogue_t epi =
        s.epilogue != CUBLASLT_EPILOGUE_DEFAULT ? s.epilogue : s.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (epi != CUBLASLT_EPILOGUE_DEFAULT)
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    const cudaDataType_t t = lt_type(s.dt);
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la_, t, cm.b_rows, cm.b_cols, cm.ldb));  // our A
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb_, t, cm.a_rows, cm.a_cols, cm.lda));  // our B
    KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld_, t, cm.d_rows, cm.d_cols, cm.ldd));
    // A batch shares the bias vector: CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE stays at its default 0.
    if (s.batch > 1) {
      int32_t count = static_cast<int32_t>(s.batch);
      const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {{la_, s.sa}, {lb_, s.sb}, {ld_, s.sd}};
      for (auto [l, stride] : layouts) {
        KILN_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
        KILN_CUBLAS_CHECK(
            cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
      }
    }
    return Status::Ok();
  }

  // D = alpha * op(A) op(B) + beta * C (+ bias, then the epilogue's activation); C is D unless given (a residual
  // of D's shape and layout). *_extra: byte offsets the pointers may also be moved by (the caller's loop over
  // outer batches), so the chosen algorithm's alignment holds for all of them.
  Status run(const KernelArgs& args, const void* a, const void* b, void* d, const void* bias, float alpha, float beta,
             uint64_t a_extra = 0, uint64_t b_extra = 0, uint64_t d_extra = 0, const void* c = nullptr) {
    const size_t es = dtype_size(s_.dt);
    a_extra |= static_cast<uint64_t>(s_.sa) * es;
    b_extra |= static_cast<uint64_t>(s_.sb) * es;
    d_extra |= static_cast<uint64_t>(s_.sd) * es;
    const uint32_t al_a = alignment(a, a_extra), al_b = alignment(b, b_extra), al_d = alignment(d, d_extra);
    const uint32_t al_bias = s_.bias ? alignment(bias, 0) : 0;
    const uint32_t al_c = c ? std::min(alignment(c, d_extra), al_d) : al_d;
    // Each alignment is at most 256: nine bits apiece.
    const uint64_t key = (uint64_t{al_a} << 36) | (uint64_t{al_b} << 27) | (uint64_t{al_d} << 18) |
                         (uint64_t{al_c} << 9) | al_bias;
    if (s_.bias)
      KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    const cublasLtMatmulAlgo_t* algo = nullptr;
    for (const auto& [k, al] : algos_)
      if (k == key) algo = &al;
    CudaHandles& h = *args.handles;
    if (!algo) {
      cublasLtMatmulPreference_t pref = nullptr;
      KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      uint64_t ws = h.workspace_bytes;
      const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_b},  // cuBLAS's A is our B
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d}};
      cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                               sizeof(ws));
      for (const auto& [attr, v] : aligns)
        if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v));
      // The builder's tactic "lt_heurK" takes the K-th of cuBLASLt's ranked heuristic answers (K = 0: its first);
      // "lt_heurK_skS" that configuration with K split into S parts.
      const LtTactic tac = parse_lt_tactic(args.tactic);
      const int pick = tac.rank;
      std::vector<cublasLtMatmulHeuristicResult_t> results(pick + 1);
      std::memset(results.data(), 0, results.size() * sizeof(results[0]));
      int found = 0;
      if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(h.lt, op_, lb_, la_, ld_, ld_, pref, pick + 1, results.data(), &found);
      cublasLtMatmulPreferenceDestroy(pref);
      // Some cuBLASLt versions answer an unsupported epilogue/layout combination this way rather than with none.
      if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
        st = CUBLAS_STATUS_SUCCESS;
        found = 0;
      }
      KILN_CUBLAS_CHECK(st);
      no_algo_ = found == 0;
      if (found == 0)
        return internal_error("cuBLASLt has no algorithm for a " + std::string(dtype_name(s_.dt)) + " GEMM of m=" +
                              std::to_string(s_.m) + " n=" + std::to_string(s_.n) + " k=" + std::to_string(s_.k) +
                              " batch=" + std::to_string(s_.batch));
      if (found <= pick && args.strict_tactic)
        return unsupported("cuBLASLt offers " + std::to_string(found) + " algorithms here, not " + args.tactic);
      cublasLtMatmulAlgo_t chosen = results[std::min(pick, found - 1)].algo;
      if (tac.splitk > 1) {
        Status split = split_k(h, chosen, tac.splitk);
        if (!split.ok()) {
          if (args.strict_tactic) return split;
          default_logger().log(ILogger::Severity::kWARNING,
                               ("GEMM tactic " + args.tactic + ": " + split.message() + "; running it unsplit").c_str());
        }
      }
      algos_.emplace_back(key, chosen);
      algo = &algos_.back().second;
    }
    // C and D share the layout; without a C of its own, the same buffer (cuBLASLt's in-place form).
    KILN_CUBLAS_CHECK(cublasLtMatmul(h.lt, op_, &alpha, b, lb_, a, la_, &beta, c ? c : d, ld_, d, ld_, algo,
                                     h.workspace, h.workspace_bytes, args.stream));
    return Status::Ok();
  }

  // Whether the last run failed because cuBLASLt had no algorithm (the caller may retry a plainer epilogue).
  bool no_algo() const { return no_algo_; }

 private:
  // `algo` with K split into `parts`, summed by the first reduction its algorithm offers that cuBLASLt accepts
  // for this problem within the workspace: in float (the compute type) first, then in the output type, then in
  // place. `algo` is left as it was when none does.
  Status split_k(CudaHandles& h, cublasLtMatmulAlgo_t& algo, int parts) {
    int32_t id = 0, supported = 0;
    uint32_t mask = 0;
    size_t w = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
    cublasLtMatmulAlgo_t base;
    if (cublasLtMatmulAlgoInit(h.lt, compute_, CUDA_R_32F, lt_type(s_.dt), lt_type(s_.dt), lt_type(s_.dt),
                               lt_type(s_.dt), id, &base) == CUBLAS_STATUS_SUCCESS) {
      cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &supported, sizeof(supported), &w);
      cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &mask, sizeof(mask), &w);
    }
    if (!supported) return unsupported("cuBLASLt algorithm " + std::to_string(id) + " cannot split K");
    const int32_t split = parts;
    for (uint32_t red : {uint32_t{CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}, uint32_t{CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE},
                         uint32_t{CUBLASLT_REDUCTION_SCHEME_INPLACE}}) {
      if (!(mask & red)) continue;
      cublasLtMatmulAlgo_t a = algo;
      cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof(split));
      cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red));
      cublasLtMatmulHeuristicResult_t check;
      if (cublasLtMatmulAlgoCheck(h.lt, op_, lb_, la_, ld_, ld_, &a, &check) == CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= h.workspace_bytes) {
        algo = a;
        return Status::Ok();
      }
    }
    return unsupported("cuBLASLt does not split this problem's K into " + std::to_string(parts) +
                       " parts within the workspace");
  }

  void release() {
    if (la_) cublasLtMatrixLayoutDestroy(la_);
    if (lb_) cublasLtMatrixLayoutDestroy(lb_);
    if (ld_) cublasLtMatrixLayoutDestroy(ld_);
    if (op_) cublasLtMatmulDescDestroy(op_);
    la_ = lb_ = ld_ = nullptr;
    op_ = nullptr;
    algos_.clear();
    no_algo_ = false;
  }

  GemmShape s_;
  cublasComputeType_t compute_ = CUBLAS_COMPUTE_32F;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t la_ = nullptr, lb_ = nullptr, ld_ = nullptr;
  std::vector<std::pair<uint64_t, cublasLtMatmulAlgo_t>> algos_;
  bool no_algo_ = false;
};

bool same_dtypes(const runtime::PlanNode& n, const runtime::EnginePlan& p, size_t count) {
  DataType dt = node_dtype(n, p);
  for (size_t i = 0; i < std::min(count, n.inputs.size()); ++i)
    if (n.inputs[i] >= 0 && p.values[n.inputs[i]].dtype != dt) return false;
  return true;
}

// ---- MatMul ----

// The numpy batch of a MatMul as gemm_geometry() plans it (gemm_geometry.h): one cuBLASLt strided batch inside a
// host loop over the rest.
struct MatMulState {
  Dims a_shape, b_shape;
  int64_t m = 0, n = 0, k = 0;
  std::vector<int64_t> off_a, off_b, off_y;  // element offsets of each host-loop iteration
  uint64_t extra_a = 0, extra_b = 0, extra_y = 0;
  LtGemm lt;
};

// Fills st's offsets and returns the cuBLASLt problem for operands of shapes a and b.
Result<GemmShape> matmul_geometry(Dims a, Dims b, DataType dt, MatMulState& st) {
  KILN_ASSIGN_OR_RETURN(GemmGeometry gm, gemm_geometry(std::move(a), std::move(b)));
  GemmShape s;
  s.dt = dt;
  s.m = gm.m;
  s.n = gm.n;
  s.k = gm.k;
  s.lda = gm.k;
  s.ldb = gm.n;
  s.batch = gm.batch;
  s.sa = gm.sa;
  s.sb = gm.sb;
  s.sd = gm.sd;
  st.m = gm.m;
  st.n = gm.n;
  st.k = gm.k;
  st.off_a = std::move(gm.off_a);
  st.off_b = std::move(gm.off_b);
  st.off_y = std::move(gm.off_y);
  // Element sizes are powers of two, so scaling the OR of the element steps is the OR of the byte steps.
  const uint64_t es = dtype_size(dt);
  st.extra_a = gm.step_a * es;
  st.extra_b = gm.step_b * es;
  st.extra_y = gm.step_y * es;
  return s;
}

Status matmul_plan(const KernelArgs& args, MatMulState& st) {
  KILN_ASSIGN_OR_RETURN(GemmShape s, matmul_geometry(args.in[0].shape, args.in[1].shape, args.in[0].dtype, st));
  if (s.k == 0) return Status::Ok();  // zeros, no GEMM
  return st.lt.init(s, args.handles->allow_tf32);
}

Status matmul_run(KernelArgs& args) {
  const DevTensor &A = args.in[0], &B = args.in[1];
  DevTensor& Y = args.out[0];
  if (Y.numel() == 0) return Status::Ok();
  auto* st = static_cast<MatMulState*>(args.state->get());
  if (!st || st->a_shape != A.shape || st->b_shape != B.shape) {
    auto fresh = std::make_shared<MatMulState>();
    fresh->a_shape = A.shape;
    fresh->b_shape = B.shape;
    KILN_RETURN_IF_ERROR(matmul_plan(args, *fresh));
    *args.state = fresh;
    st = fresh.get();
  }
  if (st->k == 0) {  // an empty sum
    KILN_CUDA_CHECK(cudaMemsetAsync(Y.data, 0, Y.nbytes(), args.stream));
    return Status::Ok();
  }
  const size_t es = dtype_size(A.dtype);
  for (size_t i = 0; i < st->off_a.size(); ++i) {
    const auto* a = static_cast<const uint8_t*>(A.data) + st->off_a[i] * es;
    const auto* b = static_cast<const uint8_t*>(B.data) + st->off_b[i] * es;
    auto* y = static_cast<uint8_t*>(Y.data) + st->off_y[i] * es;
    KILN_RETURN_IF_ERROR(st->lt.run(args, a, b, y, nullptr, 1.0f, 0.0f, st->extra_a, st->extra_b, st->extra_y));
  }
  return Status::Ok();
}

// ---- Gemm ----

struct GemmState {
  Dims a_shape, b_shape, c_shape;
  bool has_c = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1, beta = 1;
  bool use_c = false, bias = false;
  int64_t cs0 = 0, cs1 = 0;  // C's strides broadcast to (m, n)
  LtGemm lt;
};

Status gemm_plan(const KernelArgs& args, GemmState& st) {
  const DevTensor &A = args.in[0], &B = args.in[1];
  if (A.rank() != 2 || B.rank() != 2) return invalid_argument("Gemm: A and B must be 2-D");
  const auto& at = args.attrs();
  KILN_ASSIGN_OR_RETURN(int64_t ta, at.get_int("transA", 0));
  KILN_ASSIGN_OR_RETURN(int64_t tb, at.get_int("transB", 0));
  KILN_ASSIGN_OR_RETURN(st.alpha, at.get_float("alpha", 1.0f));
  KILN_ASSIGN_OR_RETURN(st.beta, at.get_float("beta", 1.0f));
  st.m = ta ? A.shape[1] : A.shape[0];
  st.k = ta ? A.shape[0] : A.shape[1];
  st.n = tb ? B.shape[0] : B.shape[1];
  if ((tb ? B.shape[1] : B.shape[0]) != st.k) return invalid_argument("Gemm: inner dimensions differ");
  st.use_c = st.has_c && st.beta != 0.0f;
  if (st.use_c) {
    const Dims& cs = st.c_shape;
    if (cs.size() > 2) return invalid_argument("Gemm: C must have rank <= 2, got " + dims_to_string(cs));
    const Dims out = {st.m, st.n};
    for (size_t i = 0; i < cs.size(); ++i)
      if (cs[i] != 1 && cs[i] != out[out.size() - cs.size() + i])
        return invalid_argument("Gemm: C of shape " + dims_to_string(cs) + " cannot be broadcast to " +
                                dims_to_string(out));
    auto s = ops::broadcast_strides(cs, out);
    st.cs0 = s[0];
    st.cs1 = s[1];
    // A row vector of length n added with beta 1 is cuBLASLt's bias epilogue.
    st.bias = st.beta == 1.0f && st.cs0 == 0 && (st.cs1 == 1 || st.n == 1) && st.k > 0;
  }
  GemmShape s;
  s.dt = A.dtype;
  s.ta = ta != 0;
  s.tb = tb != 0;
  s.m = st.m;
  s.n = st.n;
  s.k = st.k;
  s.lda = A.shape[1];
  s.ldb = B.shape[1];
  s.bias = st.bias;
  if (st.k == 0) return Status::Ok();
  return st.lt.init(s, args.handles->allow_tf32);
}

Status gemm_run(KernelArgs& args) {
  const DevTensor &A = args.in[0], &B = args.in[1];
  DevTensor& Y = args.out[0];
  if (Y.numel() == 0) return Status::Ok();
  const bool has_c = args.has_input(2);
  const Dims c_shape = has_c ? args.in[2].shape : Dims{};
  auto* st = static_cast<GemmState*>(args.state->get());
  if (!st || st->a_shape != A.shape || st->b_shape != B.shape || st->has_c != has_c || st->c_shape != c_shape) {
    auto fresh = std::make_shared<GemmState>();
    fresh->a_shape = A.shape;
    fresh->b_shape = B.shape;
    fresh->c_shape = c_shape;
    fresh->has_c = has_c;
    KILN_RETURN_IF_ERROR(gemm_plan(args, *fresh));
    *args.state = fresh;
    st = fresh.get();
  }
  const void* c = has_c ? args.in[2].data : nullptr;
  if (st->k == 0) {  // Y = beta * C, or zeros
    if (st->use_c) return launch_broadcast_2d(Y.dtype, c, st->cs0, st->cs1, Y.data, st->m, st->n, st->beta, args.stream);
    KILN_CUDA_CHECK(cudaMemsetAsync(Y.data, 0, Y.nbytes(), args.stream));
    return Status::Ok();
  }
  if (st->bias) return st->lt.run(args, A.data, B.data, Y.data, c, st->alpha, 0.0f);
  if (st->use_c) {
    KILN_RETURN_IF_ERROR(launch_broadcast_2d(Y.dtype, c, st->cs0, st->cs1, Y.data, st->m, st->n, 1.0f, args.stream));
    return st->lt.run(args, A.data, B.data, Y.data, nullptr, st->alpha, st->beta);
  }
  return st->lt.run(args, A.data, B.data, Y.data, nullptr, st->alpha, 0.0f);
}

// ---- kiln::FusedMatMul ----

// What cuBLASLt's epilogue does and what is left to launch_matmul_epilogue, for one FusedMatMul.
struct FusedState {
  Dims a_shape, b_shape;
  bool has_bias = false, has_res = false;
  bool residual_first = false;  // act(AB + bias + residual): cuBLASLt's C takes the residual under any epilogue
  float alpha = 1;
  EpiAct act = EpiAct::kNone;
  bool lt_bias = false, lt_res = false;  // bias by the epilogue, residual as cuBLASLt's C
  EpiAct kernel_act = EpiAct::kNone;      // what our epilogue kernel still applies
  bool kernel_bias = false, kernel_res = false, kernel = false;
  int64_t batch = 1;  // cuBLASLt's strided batch count
  MatMulState mm;
  std::unique_ptr<DnnMatmul> dnn;  // set: the layer's cuDNN tactic runs instead of all the above
  std::unique_ptr<CutlassGemm> cutlass;  // set: the layer's CUTLASS tactic runs instead of cuBLASLt + the pass
  // norm_epsilon: A's rows are standardized (a folded LayerNorm); input 4 holds B's column sums. A CUTLASS kNorm
  // kernel runs this form after the row statistics pass; cuBLASLt after the rows are standardized into the
  // workspace.
  bool norm = false;
  float norm_eps = 0;
};

// The epilogue kernels' code for the activation attribute.
Result<EpiAct> parse_act(const Attributes& a) {
  KILN_ASSIGN_OR_RETURN(const ops::Activation act, ops::parse_matmul_activation(a, "activation", "FusedMatMul"));
  switch (act) {
    case ops::Activation::kRelu:
      return EpiAct::kRelu;
    case ops::Activation::kGeluErf:
      return EpiAct::kGeluErf;
    case ops::Activation::kGeluTanh:
      return EpiAct::kGeluTanh;
    case ops::Activation::kSilu:
      return EpiAct::kSilu;
    case ops::Activation::kSigmoid:
      return EpiAct::kSigmoid;
    default:  // kNone: parse_matmul_activation returns no other
      return EpiAct::kNone;
  }
}

// cuBLASLt fuses bias, ReLU, tanh-GELU and (with no activation) the residual as C; erf-GELU, SiLU, sigmoid, and an
// activation followed by a residual, finish in one pass of our epilogue kernel. `plain` asks for no cuBLASLt
// epilogue at all (when cuBLASLt has no algorithm for the fused one).
Status fused_plan(const KernelArgs& args, FusedState& st, bool plain) {
  KILN_ASSIGN_OR_RETURN(int64_t tb, args.attrs().get_int("trans_b", 0));
  Dims b = st.b_shape;
  // trans_b: each [N, K] matrix of B read transposed; a batched B ([..., N, K], se_scale_gemm's per-sample
  // weights) keeps its matrix stride K*N, so the geometry is that of [..., K, N] and still one strided batch.
  if (tb) {
    if (b.size() < 2) return invalid_argument("FusedMatMul: B must have rank >= 2");
    std::swap(b[b.size() - 2], b[b.size() - 1]);
  }
  KILN_ASSIGN_OR_RETURN(GemmShape s, matmul_geometry(st.a_shape, b, args.in[0].dtype, st.mm));
  if (tb) {
    s.tb = true;
    s.ldb = s.k;  // stored [N, K]
  }
  // A residual added before the activation is cuBLASLt's C (beta 1), in the plain GEMM too; one added after the
  // activation can be C only when there is no activation.
  const bool res_free = !st.has_res || st.residual_first;
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  st.lt_bias = st.has_bias && !plain;
  st.lt_res = st.has_res && st.residual_first;
  st.kernel_act = st.act;
  if (!plain) {
    if (st.act == EpiAct::kNone) {
      st.lt_res = st.has_res;
    } else if (st.act == EpiAct::kRelu && res_free) {
      epi = st.has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
      st.kernel_act = EpiAct::kNone;
    } else if (st.act == EpiAct::kGeluTanh && res_free) {
      epi = st.has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
      st.kernel_act = EpiAct::kNone;
    }
  }
  st.kernel_bias = st.has_bias && !st.lt_bias;
  st.kernel_res = st.has_res && !st.lt_res;
  st.kernel = st.kernel_act != EpiAct::kNone || st.kernel_bias || st.kernel_res;
  s.bias = st.lt_bias;
  s.epilogue = epi;
  st.batch = s.batch;
  if (s.k == 0) return Status::Ok();
  return st.mm.lt.init(s, args.handles->allow_tf32);
}

Status fused_gemms(KernelArgs& args, FusedState& st) {
  const DevTensor &A = args.in[0], &B = args.in[1];
  DevTensor& Y = args.out[0];
  const void* bias = st.has_bias ? args.in[2].data : nullptr;
  const void* res = st.has_res ? args.in[3].data : nullptr;
  const size_t es = dtype_size(A.dtype);
  MatMulState& mm = st.mm;
  for (size_t i = 0; i < mm.off_a.size(); ++i) {
    const auto* a = static_cast<const uint8_t*>(A.data) + mm.off_a[i] * es;
    const auto* b = static_cast<const uint8_t*>(B.data) + mm.off_b[i] * es;
    auto* y = static_cast<uint8_t*>(Y.data) + mm.off_y[i] * es;
    const void* c = st.lt_res ? static_cast<const uint8_t*>(res) + mm.off_y[i] * es : nullptr;
    KILN_RETURN_IF_ERROR(mm.lt.run(args, a, b, y, st.lt_bias ? bias : nullptr, st.alpha, st.lt_res ? 1.0f : 0.0f,
                                   mm.extra_a, mm.extra_b, mm.extra_y, c));
  }
  return Status::Ok();
}

// A fresh state for the node's current shapes, planned for cuBLASLt.
Status init_fused_state(const KernelArgs& args, FusedState& st) {
  st.a_shape = args.in[0].shape;
  st.b_shape = args.in[1].shape;
  st.has_bias = args.has_input(2);
  st.has_res = args.has_input(3);
  KILN_ASSIGN_OR_RETURN(int64_t rf, args.attrs().get_int("residual_first", 0));
  st.residual_first = rf != 0;
  KILN_ASSIGN_OR_RETURN(st.alpha, args.attrs().get_float("alpha", 1.0f));
  KILN_ASSIGN_OR_RETURN(st.act, parse_act(args.attrs()));
  st.norm = args.attrs().has("norm_epsilon");
  if (st.norm) {
    KILN_ASSIGN_OR_RETURN(st.norm_eps, args.attrs().get_float("norm_epsilon"));
    if (!args.has_input(4) || args.in[4].dtype != DataType::kFLOAT)
      return invalid_argument("FusedMatMul '" + args.node->name +
                              "': norm_epsilon needs B's column sums (float32) as input 4");
  }
  return fused_plan(args, st, false);
}

// The layer as a CUTLASS GEMM + bias + activation problem (gemm_tactics.h says which ones take it).
CutlassProblem cutlass_problem(const KernelArgs& args, const FusedState& st) {
  CutlassProblem p;
  p.available = cutlass_gemm_available();
  p.gelu_erf = st.act == EpiAct::kGeluErf;
  p.silu = st.act == EpiAct::kSilu;
  p.no_act = st.act == EpiAct::kNone;
  p.bias = st.has_bias;
  p.residual = st.has_res;
  // The epilogue reads the residual as C, [M, N] like the output (cuBLASLt's C is the same).
  p.residual_full = !st.has_res || args.in[3].numel() == st.mm.m * st.mm.n;
  p.reduced_type = args.in[0].dtype == DataType::kHALF || args.in[0].dtype == DataType::kBF16;
  p.half = args.in[0].dtype == DataType::kHALF;
  p.norm = st.norm;
  const auto tb = args.attrs().get_int("trans_b", 0);
  p.trans_b = !tb.ok() || tb.value() != 0;
  p.gemms = st.batch * static_cast<int64_t>(st.mm.off_a.size());
  p.m = st.mm.m;
  p.n = st.mm.n;
  p.k = st.mm.k;
  return p;
}

// The CUTLASS kernel of tactic `t` into st.cutlass, or why not.
Status make_cutlass(const KernelArgs& args, FusedState& st, const CutlassTactic& t) {
  const CutlassProblem p = cutlass_problem(args, st);
  // Any configuration of the layer's kind, not only those the tuner offers now (the offer depends on the SM count,
  // and an engine or a forced tactic may name another configuration of the same kind).
  if (cutlass_kind(p) != t.act)
    return unsupported("FusedMatMul '" + args.node->name + "': the CUTLASS GEMM " + args.tactic +
                       " does not take this layer");
  // The folded-LayerNorm kernels take alpha in the rows' rstd (launch_row_stats), not in the epilogue.
  KILN_ASSIGN_OR_RETURN(st.cutlass, make_cutlass_gemm(t.act, t.config, args.in[0].dtype, p.trans_b, st.mm.m, st.mm.n,
                                                      st.mm.k, st.has_bias, st.norm ? 1.f : st.alpha));
  return Status::Ok();
}

// The layer as one cuDNN graph problem, or why not (dnn_matmul_declined).
Result<DnnMatmulSpec> dnn_spec(const KernelArgs& args, const FusedState& st) {
  DnnMatmulSpec s;
  s.dt = args.in[0].dtype;
  s.m = st.mm.m;
  s.n = st.mm.n;
  s.k = st.mm.k;
  KILN_ASSIGN_OR_RETURN(int64_t tb, args.attrs().get_int("trans_b", 0));
  s.trans_b = tb != 0;
  s.bias = st.has_bias;
  s.res = st.has_res;
  s.residual_first = st.residual_first;
  KILN_ASSIGN_OR_RETURN(s.act, args.attrs().get_string("activation", "none"));
  s.alpha = st.alpha;
  if (std::string why = dnn_matmul_declined(s, st.batch, st.mm.off_a.size()); !why.empty())
    return unsupported("cuDNN matmul: " + why);
  return s;
}

// The plan of the cuDNN tactic of rank `rank` into st.dnn: restored from the plan the builder stored with the
// node when it is for this problem, cuDNN and GPU (no compile), else built. A stored plan that cannot be used
// is only a slower load: one line in the log, then the build.
Status make_dnn(const KernelArgs& args, FusedState& st, int rank) {
  KILN_ASSIGN_OR_RETURN(DnnMatmulSpec s, dnn_spec(args, st));
  CudaHandles& h = *args.handles;
  using Plan = std::unique_ptr<DnnMatmul>;
  KILN_ASSIGN_OR_RETURN(
      st.dnn, restore_or_build<Plan>(
                  args, "FusedMatMul", DnnMatmul::plan_key(s, rank), dnn_matmul_plan_key(s, rank, ""),
                  [&](const std::string& json) { return DnnMatmul::restore(h.dnn, s, rank, json, h.workspace_bytes); },
                  [&] { return DnnMatmul::build(h.dnn, s, rank, h.workspace_bytes); }));
  return Status::Ok();
}

Status fused_lt_run(KernelArgs& args, FusedState& st);

// A slice of the workspace for `bytes`, rounded up so that what follows it stays 256-byte aligned.
size_t workspace_slice(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The layer's CUTLASS kernel over 16-byte aligned operands; a folded LayerNorm's after the row statistics pass,
// which writes them at the start of the workspace (the kernel's own workspace after them).
Status fused_cutlass_run(KernelArgs& args, FusedState& st) {
  const DevTensor &A = args.in[0], &B = args.in[1];
  void* y = args.out[0].data;
  const void* bias = st.has_bias ? args.in[2].data : nullptr;
  if (!st.norm) {
    const void* res = st.has_res ? args.in[3].data : nullptr;
    return st.cutlass->run(A.data, B.data, bias, res, y, args.handles->workspace, args.handles->workspace_bytes,
                           args.stream);
  }
  const int64_t m = st.mm.m;
  const size_t stats_bytes = workspace_slice(static_cast<size_t>(2 * m) * sizeof(float));
  if (stats_bytes > args.handles->workspace_bytes)
    return unsupported("FusedMatMul '" + args.node->name + "': the row statistics of " + std::to_string(m) +
                       " rows need " + std::to_string(stats_bytes) + " bytes of workspace");
  auto* ws = static_cast<uint8_t*>(args.handles->workspace);
  float* neg_mean = reinterpret_cast<float*>(ws);
  float* rstd = neg_mean + m;
  KILN_RETURN_IF_ERROR(launch_row_stats(A.dtype, A.data, m, st.mm.k, st.norm_eps, st.alpha, neg_mean, rstd,
                                        args.handles->sm_count, args.stream));
  const CutlassRowNorm rn{neg_mean, rstd, static_cast<const float*>(args.in[4].data)};
  return st.cutlass->run(A.data, B.data, bias, nullptr, y, ws + stats_bytes,
                         args.handles->workspace_bytes - stats_bytes, args.stream, &rn);
}

Status fused_matmul_run(KernelArgs& args) {
  const DevTensor &A = args.in[0], &B = args.in[1];
  DevTensor& Y = args.out[0];
  if (Y.numel() == 0) return Status::Ok();
  auto* st = static_cast<FusedState*>(args.state->get());
  if (!st || st->a_shape != A.shape || st->b_shape != B.shape) {
    auto fresh = std::make_shared<FusedState>();
    KILN_RETURN_IF_ERROR(init_fused_state(args, *fresh));
    // A recorded cuDNN tactic runs whether or not KILN_DNN_MATMUL is set (the engine chose it); where it cannot
    // be built here (other GPU, cuDNN version or shapes) the layer keeps cuBLASLt and the epilogue pass.
    if (const int rank = dnn_matmul_tactic_index(args.tactic); rank >= 0) {
      Status ds = make_dnn(args, *fresh, rank);
      if (!ds.ok()) {
        if (args.strict_tactic) return ds;  // the tuner must not time a name that did not run
        const std::string msg = "FusedMatMul '" + args.node->name + "': recorded tactic " + args.tactic +
                                " cannot be built here (" + ds.message() +
                                "); it falls back to cuBLASLt with the epilogue pass";
        default_logger().log(ILogger::Severity::kWARNING, msg.c_str());
      }
    }
    // Likewise a CUTLASS tactic, which an engine built where the kernels existed may name in a build without them.
    // The folded-LayerNorm form without a recorded tactic takes the first one offered (a CUTLASS kernel at large
    // sizes where this build has them).
    CutlassTactic ct = parse_cutlass_tactic(args.tactic);
    if (fresh->norm && args.tactic.empty() && cutlass_tactics_enabled()) {
      const std::vector<std::string> offered = with_cutlass_tactics(
          gemm_tactics(args), cutlass_problem(args, *fresh), args.handles->sm_count);
      if (!offered.empty()) ct = parse_cutlass_tactic(offered.front());
    }
    if (ct.config >= 0) {
      Status cs = make_cutlass(args, *fresh, ct);
      if (!cs.ok()) {
        if (args.strict_tactic) return cs;
        const std::string msg = "FusedMatMul '" + args.node->name + "': recorded tactic " + args.tactic +
                                " cannot run here (" + cs.message() +
                                "); it falls back to cuBLASLt with the epilogue pass";
        default_logger().log(ILogger::Severity::kWARNING, msg.c_str());
      }
    }
    *args.state = fresh;
    st = fresh.get();
  }
  const int64_t n = Y.shape.back();
  const void* bias = st->has_bias ? args.in[2].data : nullptr;
  const void* res = st->has_res ? args.in[3].data : nullptr;
  if (st->mm.k == 0) {  // an empty sum: the epilogue of zeros (or of the residual, when it comes first)
    if (res && st->residual_first) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(Y.data, res, Y.nbytes(), cudaMemcpyDeviceToDevice, args.stream));
      return launch_matmul_epilogue(Y.dtype, Y.data, bias, nullptr, Y.numel(), n, st->act, args.stream);
    }
    KILN_CUDA_CHECK(cudaMemsetAsync(Y.data, 0, Y.nbytes(), args.stream));
    return launch_matmul_epilogue(Y.dtype, Y.data, bias, res, Y.numel(), n, st->act, args.stream);
  }
  // TMA wants 16-byte aligned operands; addresses rebound to unaligned memory take cuBLASLt (and the pass).
  const bool aligned = st->cutlass && ((reinterpret_cast<uintptr_t>(A.data) | reinterpret_cast<uintptr_t>(B.data) |
                                        reinterpret_cast<uintptr_t>(bias) | reinterpret_cast<uintptr_t>(res) |
                                        reinterpret_cast<uintptr_t>(Y.data)) % 16) == 0;
  if (st->cutlass && !aligned && args.strict_tactic)
    return unsupported("FusedMatMul: the CUTLASS GEMM needs 16-byte aligned operands");
  if (aligned) {
    Status cs = fused_cutlass_run(args, *st);
    if (cs.ok() || args.strict_tactic) return cs;
    // Refused before its launch (workspace, parameters): this layer takes cuBLASLt from now on.
    const std::string msg = "FusedMatMul '" + args.node->name + "': tactic " + args.tactic + " failed (" +
                            cs.message() + "); it falls back to cuBLASLt " +
                            (st->norm ? "over the standardized rows" : "with the epilogue pass");
    default_logger().log(ILogger::Severity::kWARNING, msg.c_str());
    st->cutlass.reset();
  }
  // The folded-LayerNorm form on cuBLASLt: the rows standardized into the start of the workspace, then the layer
  // as any other over them, with the rest of the workspace.
  if (st->norm) {
    const size_t a_bytes = workspace_slice(A.nbytes());
    if (a_bytes >= args.handles->workspace_bytes)
      return unsupported("FusedMatMul '" + args.node->name + "' (a folded LayerNorm): its " +
                         std::to_string(st->mm.m) + " standardized rows need " + std::to_string(a_bytes) +
                         " bytes of workspace, more than the " + std::to_string(args.handles->workspace_bytes) +
                         " there are");
    KILN_RETURN_IF_ERROR(launch_row_standardize(A.dtype, A.data, args.handles->workspace, st->mm.m, st->mm.k,
                                                st->norm_eps, args.handles->sm_count, args.stream));
    CudaHandles rest = *args.handles;
    rest.workspace = static_cast<uint8_t*>(rest.workspace) + a_bytes;
    rest.workspace_bytes -= a_bytes;
    KernelArgs standardized = args;
    standardized.handles = &rest;
    standardized.in[0].data = args.handles->workspace;
    return fused_lt_run(standardized, *st);
  }
  if (auto done = run_layer_plan(args, st->dnn, dnn_pointers_aligned({A.data, B.data, bias, res, Y.data}),
                                 "FusedMatMul", "cuBLASLt with the epilogue pass", [&](DnnMatmul& d) {
                                   return d.run(args.handles->dnn, args.handles->workspace, A.data, B.data, bias,
                                                res, Y.data);
                                 }))
    return *done;
  return fused_lt_run(args, *st);
}

// The layer on cuBLASLt, and the epilogue pass where its epilogue cannot finish it.
Status fused_lt_run(KernelArgs& args, FusedState& st) {
  DevTensor& Y = args.out[0];
  const void* bias = st.has_bias ? args.in[2].data : nullptr;
  const void* res = st.has_res ? args.in[3].data : nullptr;
  Status s = fused_gemms(args, st);
  if (!s.ok() && st.mm.lt.no_algo()) {
    // No algorithm for this epilogue (shape, alignment or batch): plain GEMM, everything else in our kernel.
    KILN_RETURN_IF_ERROR(fused_plan(args, st, true));
    s = fused_gemms(args, st);
  }
  KILN_RETURN_IF_ERROR(s);
  if (!st.kernel) return Status::Ok();
  return launch_matmul_epilogue(Y.dtype, Y.data, st.kernel_bias ? bias : nullptr, st.kernel_res ? res : nullptr,
                                Y.numel(), Y.shape.back(), st.kernel_act, args.stream);
}

// cuBLASLt's ranks, and with KILN_DNN_MATMUL=1, where cuBLASLt would leave a second pass on an output large
// enough to pay for a compile (dnn_matmul_worth_compiling), the cuDNN plans that finalize for these shapes, no
// more than the tuner will time (each one compiled once per process here; a graph cuDNN refuses adds nothing).
std::vector<std::string> fused_matmul_tactics(const KernelArgs& args) {
  std::vector<std::string> lt = gemm_tactics(args);
  if (!args.handles || args.in.size() < 2 || args.out.empty() || args.out[0].numel() == 0) return lt;
  FusedState probe;  // the layer's geometry, planned once for both kinds of candidates below
  if (!init_fused_state(args, probe).ok()) return lt;
  // A folded LayerNorm: its CUTLASS kernels and cuBLASLt over the standardized rows (no cuDNN graph tactic).
  if (probe.norm)
    return cutlass_tactics_enabled() ? with_cutlass_tactics(std::move(lt), cutlass_problem(args, probe),
                                                            args.handles->sm_count)
                                     : lt;
  // The CUTLASS kernels where this build has them and the layer fits (an erf-GELU FFN1, a SiLU 1x1 convolution, a
  // residual GEMM), right after cuBLASLt's first choice; an odd-width product's before all of cuBLASLt's.
  if (cutlass_tactics_enabled())
    lt = with_cutlass_tactics(std::move(lt), cutlass_problem(args, probe), args.handles->sm_count);
  if (!dnn_matmul_enabled()) return lt;
  auto act = args.attrs().get_string("activation", "none");
  auto rf = args.attrs().get_int("residual_first", 0);
  if (!act.ok() || !rf.ok() || !dnn_matmul_wanted(*act, args.has_input(3), *rf != 0)) return lt;
  auto spec = dnn_spec(args, probe);
  if (!spec.ok() || !dnn_matmul_worth_compiling(spec->m, spec->n)) return lt;
  const int offered = dnn_matmul_offered(args.max_timed, args.cached_tactic);
  if (offered == 0) return lt;
  const int n = DnnMatmul::count_usable(args.handles->dnn, *spec, offered, args.handles->workspace_bytes);
  std::vector<std::string> dnn;
  for (int r = 0; r < n; ++r) dnn.push_back(dnn_matmul_tactic_name(r));
  return merge_matmul_tactics(lt, dnn);
}

// With a chosen cuDNN tactic: its plan's JSON and key, for the engine (the plan comes from this handle's cache:
// the tuner compiled it). Nothing when cuDNN cannot serialize it; the load then compiles.
std::vector<std::pair<std::string, std::string>> fused_matmul_annotations(KernelArgs& args) {
  const int rank = dnn_matmul_tactic_index(args.tactic);
  if (rank < 0 || !args.handles || args.in.size() < 2 || args.out.empty() || args.out[0].numel() == 0) return {};
  FusedState st;
  if (!init_fused_state(args, st).ok()) return {};
  auto spec = dnn_spec(args, st);
  if (!spec.ok()) return {};
  auto d = DnnMatmul::build(args.handles->dnn, *spec, rank, args.handles->workspace_bytes);
  if (!d.ok()) return {};
  std::string json = (*d)->json();
  if (json.empty()) return {};
  return {{kDnnPlanKeyAttr, DnnMatmul::plan_key(*spec, rank)}, {kDnnPlanAttr, std::move(json)}};
}

bool rank_is(const runtime::EnginePlan& p, int id, size_t lo, size_t hi) {
  if (id < 0) return true;
  const auto& v = p.values[id];
  return v.rank_known && v.shape.size() >= lo && v.shape.size() <= hi;
}

}  // namespace

KILN_CUDA_KERNEL(MatMul) {
  KernelDef d;
  d.op = "MatMul";
  d.dtypes = float_types();
  d.run = matmul_run;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    return n.inputs.size() == 2 && same_dtypes(n, p, 2) && rank_is(p, n.inputs[0], 1, 64) &&
           rank_is(p, n.inputs[1], 1, 64);
  };
  d.tactics = gemm_tactics;
  return d;
}

KILN_CUDA_KERNEL(FusedMatMul) {
  KernelDef d;
  d.op = "FusedMatMul";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = fused_matmul_run;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    return n.inputs.size() >= 2 && same_dtypes(n, p, 4) && rank_is(p, n.inputs[0], 2, 64) &&
           rank_is(p, n.inputs[1], 2, 64) && (n.inputs.size() < 3 || rank_is(p, n.inputs[2], 1, 1)) &&
           (n.inputs.size() < 4 || rank_is(p, n.inputs[3], 2, 64));
  };
  d.tactics = fused_matmul_tactics;
  d.annotations = fused_matmul_annotations;
  return d;
}

KILN_CUDA_KERNEL(Gemm) {
  KernelDef d;
  d.op = "Gemm";
  d.dtypes = float_types();
  d.run = gemm_run;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    return n.inputs.size() >= 2 && same_dtypes(n, p, 3) && rank_is(p, n.inputs[0], 2, 2) &&
           rank_is(p, n.inputs[1], 2, 2) && (n.inputs.size() < 3 || rank_is(p, n.inputs[2], 0, 2));
  };
  d.tactics = gemm_tactics;
  return d;
}

}  // namespace kiln::cuda
