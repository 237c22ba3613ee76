// kiln::FusedMatMul on cuDNN's backend graph API: Y = act(A·B + bias (+ residual)) (+ residual) as one matmul +
// pointwise graph, which cuDNN 9's runtime fusion engines compile into a single kernel (cuBLASLt cannot fuse the
// erf-GELU, so its path makes a second pass over Y). A tactic family gated by KILN_DNN_MATMUL=1 until measured.
// The names, the gate, which nodes are offered the tactics and the descriptors' dimensions are plain C++ (the CPU
// tests check them); DnnMatmul itself lives in dnn_matmul.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cuda/dnn_common.h"
#include "backends/cuda/tactic_list.h"
#include "common/dnn_matmul_switch.h"
#include "common/tensor.h"
#include "kiln/status.h"

struct cudnnContext;  // cudnnHandle_t, without cudnn.h

namespace kiln::cuda {

// "cudnn_matmul_fused_<r>": the r-th plan, in cuDNN's heuristic order, that finalizes within the workspace.
inline constexpr const char* kDnnMatmulTacticPrefix = "cudnn_matmul_fused_";
// Offered per layer: each costs a runtime compilation (NVRTC inside cuDNN, ~0.3-1 s) at build time.
inline constexpr int kDnnMatmulMaxTactics = 3;

inline std::string dnn_matmul_tactic_name(int rank) { return kDnnMatmulTacticPrefix + std::to_string(rank); }

// The rank a tactic name carries, or -1 when it is not one of ours.
inline int dnn_matmul_tactic_index(std::string_view t) { return dnn_tactic_rank(t, kDnnMatmulTacticPrefix); }

// Outputs smaller than this (M*N elements) are not offered the cuDNN plans: the epilogue pass they save is a
// launch (~2 us) plus a read and write of Y, which at 256K FP16 elements (1 MB at ~4 TB/s: ~0.5 us) is a few
// microseconds per inference, not worth a compile per layer at build and load. Measured on the H200: bert-base
// FFN1 at batch 1 ([128, 3072], 393K) went from 16.8 us (cuBLASLt + pass) to 8.4 us, and efficientnet_b0's
// expand GEMMs at batch 128 ([1.6M, 96], 154M) from 367 to 232 us: both stay above. Its SE-block FCs
// ([batch, <= 1152], at most 147K at batch 128) fall below.
inline constexpr int64_t kDnnMatmulMinOutput = int64_t{1} << 18;

inline bool dnn_matmul_worth_compiling(int64_t m, int64_t n) { return m > 0 && n > 0 && m * n >= kDnnMatmulMinOutput; }

// How many cuDNN plans to offer when the tuner times at most `max_timed` candidates of the layer (0: unknown):
// cuBLASLt's first choice is always timed first, so plans past max_timed - 1 would be compiled and never timed.
// Level 1 (one timed) offers none, level 2 one, level 3 and up kDnnMatmulMaxTactics. When the timing cache
// already answers for the layer (`cached`, else empty), only what confirming that answer needs: no plan for a
// cuBLASLt tactic, the ranks up to r for cuDNN's rank r.
inline int dnn_matmul_offered(int max_timed, std::string_view cached = {}) {
  int n = kDnnMatmulMaxTactics;
  if (max_timed > 0 && max_timed - 1 < n) n = max_timed - 1;
  if (!cached.empty()) {
    const int r = dnn_matmul_tactic_index(cached);
    if (r < 0) return 0;
    if (r + 1 < n) n = r + 1;
  }
  return n;
}

// The gate: the tactics are offered only with KILN_DNN_MATMUL=1 (a recorded one runs regardless).
using kiln::dnn_matmul_enabled;

// Whether cuBLASLt leaves part of this FusedMatMul epilogue to a second pass (gemm_ops.cpp's fused_plan): the
// erf-GELU, SiLU and sigmoid always, and any activation followed by a residual. Only those layers are offered the
// cuDNN tactics.
inline bool dnn_matmul_wanted(std::string_view act, bool has_res, bool residual_first) {
  if (act == "gelu_erf" || act == "silu" || act == "sigmoid") return true;
  return act != "none" && has_res && !residual_first;
}

// The layer's tactic list: cuBLASLt's first choice stays first (the untuned default), cuDNN's plans next so that
// the tuner's per-level limit reaches them, then cuBLASLt's other ranks.
inline std::vector<std::string> merge_matmul_tactics(const std::vector<std::string>& lt,
                                                     const std::vector<std::string>& dnn) {
  return after_first_choice(lt, dnn);
}

// One tensor of the graph: cuDNN's matmul takes rank-3 [batch, rows, cols] tensors; strides in elements.
struct DnnDims {
  int64_t dims[3] = {0, 0, 0};
  int64_t strides[3] = {0, 0, 0};
};

// Row-major A [M, K], B [K, N] (trans_b: stored [N, K], read transposed), the bias [N] broadcast over the rows,
// and Y (and the residual, and every intermediate) [M, N].
struct DnnMatmulLayout {
  DnnDims a, b, bias, y;
};

inline DnnMatmulLayout dnn_matmul_layout(int64_t m, int64_t n, int64_t k, bool trans_b) {
  DnnMatmulLayout l;
  l.a = {{1, m, k}, {m * k, k, 1}};
  l.b = trans_b ? DnnDims{{1, k, n}, {n * k, 1, k}} : DnnDims{{1, k, n}, {k * n, n, 1}};
  l.bias = {{1, 1, n}, {n, n, 1}};
  l.y = {{1, m, n}, {m * n, n, 1}};
  return l;
}

// One FusedMatMul problem as cuDNN sees it: a single 2-D GEMM (batched products are declined).
struct DnnMatmulSpec {
  DataType dt = DataType::kHALF;
  int64_t m = 0, n = 0, k = 0;
  bool trans_b = false, bias = false, res = false, residual_first = false;
  std::string act = "none";  // FusedMatMul's activation attribute
  float alpha = 1.0f;
};

// Why cuDNN is not tried for a spec, or empty: FP16/BF16 (float accumulation), a non-empty single GEMM (the
// caller passes its batch count and host-loop calls), alpha 1, a known activation.
inline std::string dnn_matmul_declined(const DnnMatmulSpec& s, int64_t batch, size_t calls) {
  if (s.dt != DataType::kHALF && s.dt != DataType::kBF16) return "not float16/bfloat16";
  if (batch != 1 || calls != 1) return "a batched product";
  if (s.m <= 0 || s.n <= 0 || s.k <= 0) return "an empty product";
  if (s.alpha != 1.0f) return "alpha != 1";
  if (s.act != "none" && s.act != "relu" && s.act != "gelu_erf" && s.act != "gelu_tanh" && s.act != "silu" &&
      s.act != "sigmoid")
    return "activation " + s.act;
  return "";
}

// The problem as a cache key: everything the cuDNN graph is built from.
inline std::string dnn_matmul_problem_key(const DnnMatmulSpec& s) {
  return std::string(dtype_name(s.dt)) + " m" + std::to_string(s.m) + " n" + std::to_string(s.n) + " k" +
         std::to_string(s.k) + (s.trans_b ? " tb" : "") + (s.bias ? " bias" : "") +
         (s.res ? (s.residual_first ? " res-first" : " res") : "") + " " + s.act + " alpha" + std::to_string(s.alpha);
}

// What a stored plan is valid for: the tactic, the problem (dynamic shapes prepare per shape, and only the tuned
// shapes' plan is stored) and `where` (the cuDNN version and the GPU, which the plan's kernel was compiled for).
inline std::string dnn_matmul_plan_key(const DnnMatmulSpec& s, int rank, const std::string& where) {
  return dnn_matmul_tactic_name(rank) + " | " + dnn_matmul_problem_key(s) + " | " + where;
}

namespace dnn_graph {
struct Plan;  // one finalized execution plan (dnn_graph.h)
}

// A finalized cuDNN execution plan for one spec; the variant pack is rebuilt only when the pointers change (a
// context's arena keeps them fixed). Each plan is compiled at most once per process: a walk over the heuristic's
// engine configs per problem and device is remembered for the process (which configs finalize within the
// workspace, in order, and each usable plan serialized); plans are kept per cuDNN handle (a plan is finalized
// against a handle) until release_handle(), so layers of one problem share one plan, and another handle restores
// the serialized plan instead of compiling it again.
class DnnMatmul {
 public:
  ~DnnMatmul();
  DnnMatmul(const DnnMatmul&) = delete;
  DnnMatmul& operator=(const DnnMatmul&) = delete;

  // The plan of tactic rank `rank`: the handle's, else the walk's serialized plan restored (or, where that
  // fails, its config finalized: one compile), else the walk continued up to that rank. Unsupported
  // (kUNSUPPORTED) when cuDNN refuses the graph or has fewer usable plans.
  static Result<std::unique_ptr<DnnMatmul>> build(cudnnContext* handle, const DnnMatmulSpec& s, int rank,
                                                  size_t max_workspace);
  // The plan of tactic `rank` from a stored JSON (json() of a plan for the same key): the handle's own plan when
  // it has one, else the JSON deserialized, no compile. Unsupported when cuDNN refuses the text or the plan needs
  // more than max_workspace; the caller then builds.
  static Result<std::unique_ptr<DnnMatmul>> restore(cudnnContext* handle, const DnnMatmulSpec& s, int rank,
                                                    const std::string& json, size_t max_workspace);
  // How many plans (at most `max`) finalize within max_workspace: the tactics to offer; 0 when refused. Each
  // config is finalized once per process; the plans stay with the handle for build().
  static int count_usable(cudnnContext* handle, const DnnMatmulSpec& s, int max, size_t max_workspace);
  // Drops the plans kept for this handle; called before the handle is destroyed (after every DnnMatmul built
  // with it is gone).
  static void release_handle(cudnnContext* handle);
  // dnn_matmul_plan_key with this process's cuDNN version and the current GPU.
  static std::string plan_key(const DnnMatmulSpec& s, int rank);
  // Process-wide counts: execution plans finalized from an engine config (each a runtime compilation), and
  // plans restored from stored JSON.
  static int64_t plans_finalized();
  static int64_t plans_restored();

  // The plan serialized; empty when cuDNN cannot (engines other than the runtime-fusion ones).
  std::string json() const;

  size_t workspace_bytes() const { return workspace_; }

  // On the handle's stream (the context sets it); bias/res null where the spec has none.
  Status run(cudnnContext* handle, void* workspace, const void* a, const void* b, const void* bias, const void* res,
             void* y);

 private:
  struct Impl;
  explicit DnnMatmul(std::unique_ptr<Impl> impl);
  static std::unique_ptr<DnnMatmul> wrap(std::shared_ptr<dnn_graph::Plan> plan, const DnnMatmulSpec& s);
  std::unique_ptr<Impl> impl_;
  size_t workspace_ = 0;
};

}  // namespace kiln::cuda
