// kiln::FusedMlp on CUDA (fused_mlp.cu): both small products of each row in one launch. A block takes
// `rows_per_block` rows of X into shared memory (float32), computes their whole hidden layer (one warp per hidden
// feature, lanes along K, reading W1's row once for all of the block's rows), then one slice of the outputs (one
// thread per output feature, the hidden rows read by broadcast); `n_split` blocks share a group of rows, each
// recomputing the hidden layer and writing its own slice of N.
// With squeeze (each row the mean of `spatial` rows of X first) the tactics are either the same kernel after the
// ReduceMean kernels' reduction into the workspace (kPool), or one block per row that reads its whole [spatial, K]
// slice of X, averages it in shared memory and goes on with the products (kFused: one launch, no pooled tensor;
// at a small batch too few blocks to read X fast, so the tuner decides). This header is plain C++ so the CPU unit
// tests check the plan.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "kiln/status.h"

namespace kiln::cuda {

struct MlpShape {
  int64_t rows = 0, k = 0, hidden = 0, n = 0;
  // squeeze: each row the mean of `spatial` rows of X ([rows, spatial, k]); spatial may be 0 (an empty mean, 0).
  bool squeeze = false;
  int64_t spatial = 0;
};

enum class MlpKind { kPlain, kPool, kFused };

struct MlpTactic {
  int rows_per_block = 1;
  int n_split = 1;
  MlpKind kind = MlpKind::kPlain;
  bool operator==(const MlpTactic& o) const {
    return rows_per_block == o.rows_per_block && n_split == o.n_split && kind == o.kind;
  }
};

inline constexpr int kMlpThreads = 256;
// The fused squeeze's block: enough loads in flight for one block to read its row's slice of X near an SM's share
// of the memory bandwidth.
inline constexpr int kMlpPoolThreads = 512;
// Without the opt-in attribute a block may take 48 KiB of dynamic shared memory.
inline constexpr int64_t kMlpSmemBytes = 48 * 1024;

inline int64_t mlp_smem_bytes(const MlpShape& s, int rows_per_block) {
  return static_cast<int64_t>(rows_per_block) * (s.k + s.hidden) * static_cast<int64_t>(sizeof(float));
}

inline bool mlp_fits(const MlpShape& s) { return s.k > 0 && s.hidden > 0 && s.n > 0 && mlp_smem_bytes(s, 1) <= kMlpSmemBytes; }

// The fused squeeze: X read in 16-byte vectors where K allows (else one element at a time), `groups` threads per
// column unit sharing the rows; a K of more units than the block has threads: one group, each thread taking
// every blockDim-th unit.
inline int mlp_pool_vec(int64_t k, int elem_bytes) { return k % (16 / elem_bytes) == 0 ? 16 / elem_bytes : 1; }
inline int mlp_pool_groups(int64_t k, int vec) {
  const int64_t units = k / vec;
  return units <= 0 ? 0 : static_cast<int>(std::max<int64_t>(1, kMlpPoolThreads / units));
}
// X's row, the hidden row and the groups' partial sums, for X read `vec` elements at a time.
inline int64_t mlp_pool_smem_bytes(const MlpShape& s, int vec) {
  const int g = mlp_pool_groups(s.k, vec);
  return (s.k + s.hidden + static_cast<int64_t>(g) * s.k) * static_cast<int64_t>(sizeof(float));
}
inline bool mlp_pool_fits(const MlpShape& s, int vec) {
  return s.squeeze && s.spatial > 0 && mlp_pool_groups(s.k, vec) > 0 && mlp_pool_smem_bytes(s, vec) <= kMlpSmemBytes;
}
// For 16-byte aligned rows of X (activation buffers are); a misaligned X is read one element at a time, which must
// fit too (the launcher checks).
inline bool mlp_fused_fits(const MlpShape& s, int elem_bytes) { return mlp_pool_fits(s, mlp_pool_vec(s.k, elem_bytes)); }

inline std::string mlp_tactic_name(const MlpTactic& t) {
  if (t.kind == MlpKind::kFused) return "kiln_mlp_fused";
  return std::string(t.kind == MlpKind::kPool ? "kiln_mlp_pool_r" : "kiln_mlp_r") + std::to_string(t.rows_per_block) +
         "_s" + std::to_string(t.n_split);
}

inline std::optional<MlpTactic> parse_mlp_tactic(const std::string& name) {
  if (name == "kiln_mlp_fused") return MlpTactic{1, 1, MlpKind::kFused};
  int r = 0, s = 0;
  char tail = 0;
  MlpKind kind = MlpKind::kPlain;
  int got = std::sscanf(name.c_str(), "kiln_mlp_r%d_s%d%c", &r, &s, &tail);
  if (got != 2) {
    kind = MlpKind::kPool;
    got = std::sscanf(name.c_str(), "kiln_mlp_pool_r%d_s%d%c", &r, &s, &tail);
  }
  if (got != 2 || (r != 1 && r != 2 && r != 4 && r != 8) || s < 1 || s > 8) return std::nullopt;
  return MlpTactic{r, s, kind};
}

// Whether tactic t can run shape s (elements of elem_bytes).
inline bool mlp_tactic_applies(const MlpShape& s, const MlpTactic& t, int elem_bytes) {
  if (t.kind == MlpKind::kFused) return mlp_fused_fits(s, elem_bytes);
  return (t.kind == MlpKind::kPool) == s.squeeze && mlp_smem_bytes(s, t.rows_per_block) <= kMlpSmemBytes;
}

// The candidates for a shape, best guess first. A rough cost per candidate: the waves of blocks (a few resident
// per SM) times one block's multiply-adds per thread (the hidden layer of its rows, its slice of the outputs) and
// its weight reads; the tuner times them, so the order only matters for --builderOptimizationLevel=0 and the cut
// at lower levels. With squeeze the fused kernel comes first where the rows alone give most SMs a block.
inline std::vector<MlpTactic> mlp_tactics(const MlpShape& s, int sm_count, int elem_bytes = 2) {
  std::vector<std::pair<double, MlpTactic>> c;
  const int64_t sms = std::max(sm_count, 1);
  const MlpKind kind = s.squeeze ? MlpKind::kPool : MlpKind::kPlain;
  for (int r : {1, 2, 4, 8}) {
    if (mlp_smem_bytes(s, r) > kMlpSmemBytes) continue;
    if (r > 1 && (r / 2) >= s.rows) continue;  // no more rows a block than the problem has (rounded up)
    for (int sp : {1, 2, 4, 8}) {
      if (sp > 1 && s.n < static_cast<int64_t>(sp) * 32) continue;  // at least 32 outputs a block's slice
      const int64_t groups = (s.rows + r - 1) / r, blocks = groups * sp;
      const int64_t per_sm = std::max<int64_t>(1, std::min<int64_t>(8, kMlpSmemBytes * 4 / std::max<int64_t>(mlp_smem_bytes(s, r), 1)));
      const double waves = static_cast<double>((blocks + sms * per_sm - 1) / (sms * per_sm));
      const double slice = static_cast<double>((s.n + sp - 1) / sp);
      const double macs = r * static_cast<double>(s.hidden) * s.k + r * slice * s.hidden;
      const double weights = static_cast<double>(s.hidden) * s.k + slice * s.hidden;
      c.push_back({waves * (macs + 2.0 * weights) / kMlpThreads + 200.0 * waves, MlpTactic{r, sp, kind}});
    }
  }
  std::stable_sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<MlpTactic> v;
  const bool fused = mlp_fused_fits(s, elem_bytes), fused_first = fused && s.rows * 2 >= sms;
  if (fused_first) v.push_back(MlpTactic{1, 1, MlpKind::kFused});
  for (const auto& e : c) v.push_back(e.second);
  if (fused && !fused_first) v.push_back(MlpTactic{1, 1, MlpKind::kFused});
  return v;
}

// Activation codes as EpilogueParams::act (dense_kernels.h): FusedMatMul's names mapped by the launcher's caller.
// x, w1, w2, y: dense, X's type dt (float, half, bfloat16); b1, b2 may be null. kFused reads x as [rows, spatial,
// k]; kPlain and kPool as [rows, k] (for kPool the caller passes the rows it pooled).
Status launch_fused_mlp(DataType dt, const MlpShape& s, const MlpTactic& t, const void* x, const void* w1,
                        const void* b1, const void* w2, const void* b2, void* y, int act1, int act2,
                        cudaStream_t stream);

}  // namespace kiln::cuda
