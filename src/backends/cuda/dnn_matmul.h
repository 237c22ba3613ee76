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

#include "common/dnn_matmul_switch.h"
#include "common/tensor.h"
#include "kiln/status.h"

struct cudnnContext;  // cudnnHandle_t, without cudnn.h

namespace kiln::cuda {

// "cudnn_matmul_fused_<r>": the r-th plan, in cuDNN's heuristic order, that finalizes within the workspace.
inline constexpr const char* kDnnMatmulTacticPrefix = "cudnn_matmul_fused_";
// Offered per layer: each costs a runtime compilation at build time.
inline constexpr int kDnnMatmulMaxTactics = 3;

inline std::string dnn_matmul_tactic_name(int rank) { return kDnnMatmulTacticPrefix + std::to_string(rank); }

// The rank a tactic name carries, or -1 when it is not one of ours.
inline int dnn_matmul_tactic_index(std::string_view t) {
  const std::string_view p = kDnnMatmulTacticPrefix;
  if (t.size() <= p.size() || t.size() > p.size() + 3 || t.substr(0, p.size()) != p) return -1;
  int r = 0;
  for (char c : t.substr(p.size())) {
    if (c < '0' || c > '9') return -1;
    r = r * 10 + (c - '0');
  }
  return r;
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
  std::vector<std::string> v;
  if (!lt.empty()) v.push_back(lt[0]);
  v.insert(v.end(), dnn.begin(), dnn.end());
  if (lt.size() > 1) v.insert(v.end(), lt.begin() + 1, lt.end());
  return v;
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

// A finalized cuDNN execution plan for one spec, with its graph's descriptors; the variant pack is rebuilt only
// when the pointers change (a context's arena keeps them fixed).
class DnnMatmul {
 public:
  // cuDNN is told every pointer is aligned to this; run() must not be called otherwise (see aligned()).
  static constexpr uint64_t kAlignment = 16;

  ~DnnMatmul();
  DnnMatmul(const DnnMatmul&) = delete;
  DnnMatmul& operator=(const DnnMatmul&) = delete;

  // The plan of tactic rank `rank`. Unsupported (kUNSUPPORTED) when cuDNN refuses the graph or has fewer usable
  // plans; other errors are cuDNN failures.
  static Result<std::unique_ptr<DnnMatmul>> build(cudnnContext* handle, const DnnMatmulSpec& s, int rank,
                                                  size_t max_workspace);
  // How many plans (at most `max`) finalize within max_workspace: the tactics to offer; 0 when refused.
  // Remembered per problem and device for the process.
  static int count_usable(cudnnContext* handle, const DnnMatmulSpec& s, int max, size_t max_workspace);

  static bool aligned(const void* a, const void* b, const void* bias, const void* res, const void* y) {
    const uint64_t v = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
                       reinterpret_cast<uintptr_t>(bias) | reinterpret_cast<uintptr_t>(res) |
                       reinterpret_cast<uintptr_t>(y);
    return v % kAlignment == 0;
  }
  size_t workspace_bytes() const { return workspace_; }

  // On the handle's stream (the context sets it); bias/res null where the spec has none.
  Status run(cudnnContext* handle, void* workspace, const void* a, const void* b, const void* bias, const void* res,
             void* y);

 private:
  struct Impl;
  explicit DnnMatmul(std::unique_ptr<Impl> impl);
  static int count_plans(cudnnContext* handle, const DnnMatmulSpec& s, int max, size_t max_workspace);
  std::unique_ptr<Impl> impl_;
  size_t workspace_ = 0;
};

}  // namespace kiln::cuda
