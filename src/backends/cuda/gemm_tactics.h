// The tactics of the cuBLASLt GEMM kernels (MatMul, Gemm, FusedMatMul; gemm_ops.cpp): their stable names (they go
// into engines and timing caches), what a name asks for, and which are offered for a problem. Plain C++, so the CPU
// unit tests check it without a GPU.
//
// "lt_heurK" takes the K-th of cuBLASLt's ranked heuristic answers ("lt_heur0" is its first choice);
// "lt_heurK_skS" that configuration with K split into S partial products summed by cuBLASLt's reduction. cuBLASLt's
// heuristic does not offer split-K for the 128-token GEMMs of a batch-1 transformer on Hopper (bert_base: 6-18 output
// tiles of 128x128 for 132 SMs), so it is offered here, after the ranks: the default level (8 timed) times the ranks
// alone and levels 4-5 the splits too. On an H100 the splits lost to the unsplit ranks at bert's batch-1 shapes (FFN2
// 128x768x3072: 6.9 us unsplit, 10.1 us in 8 parts, 11.9 us in 16, graph-timed; bench/NOTES.md).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/tactic_list.h"

namespace kiln::cuda {

inline constexpr const char* kLtTacticPrefix = "lt_heur";
inline constexpr int kLtRanks = 8;  // heuristic answers offered

struct LtTactic {
  int rank = 0;    // in cuBLASLt's heuristic list
  int splitk = 1;  // K split into this many parts (1: not split)
};

inline std::string lt_tactic_name(int rank, int splitk = 1) {
  return kLtTacticPrefix + std::to_string(rank) + (splitk > 1 ? "_sk" + std::to_string(splitk) : "");
}

// What a tactic name asks for; rank 0 unsplit for a name that is not one of these (the kernel's default).
inline LtTactic parse_lt_tactic(const std::string& t) {
  LtTactic r;
  if (t.rfind(kLtTacticPrefix, 0) != 0) return r;
  const char* p = t.c_str() + std::strlen(kLtTacticPrefix);
  char* end = nullptr;
  r.rank = std::clamp(static_cast<int>(std::strtol(p, &end, 10)), 0, kLtRanks - 1);
  if (end && std::strncmp(end, "_sk", 3) == 0) r.splitk = std::clamp(std::atoi(end + 3), 1, 64);
  return r;
}

// The split-K counts worth timing for a problem of `rows` x n outputs and depth k on `sms` SMs, largest first, or
// none when its 128x128 output tiles already fill half the SMs: a power of two up to the SMs per tile (at most 16),
// each part at least 128 deep, and half of it.
inline std::vector<int> splitk_counts(int64_t rows, int64_t n, int64_t k, int sms) {
  const int64_t tiles = ((rows + 127) / 128) * ((n + 127) / 128);
  if (sms <= 0 || tiles <= 0 || tiles * 2 > sms || k < 256) return {};
  int s = 1;
  while (s * 2 * tiles <= sms && s * 2 * 128 <= k && s < 16) s *= 2;
  std::vector<int> out;
  for (int c = s; c >= 2 && out.size() < 2; c /= 2) out.push_back(c);
  return out;
}

// The candidates for a problem (rows <= 0: shapes unknown), in timing order: the ranks, then the splits of ranks
// 0-3 where splitk_counts offers any.
inline std::vector<std::string> lt_tactics(int64_t rows, int64_t n, int64_t k, int sms) {
  std::vector<std::string> t;
  for (int r = 0; r < kLtRanks; ++r) t.push_back(lt_tactic_name(r));
  if (rows <= 0) return t;
  const std::vector<int> counts = splitk_counts(rows, n, k, sms);
  for (int r = 0; r < 4 && !counts.empty(); ++r)
    for (int c : counts) t.push_back(lt_tactic_name(r, c));
  return t;
}

// "cutlass_gelu_cC" / "cutlass_silu_cC" / "cutlass_res_cC" / "cutlass_odd_cC": FusedMatMul's bias + erf-GELU,
// bias + SiLU or bias + residual (no activation) layers, or the product alone into rows of an odd width, as one
// CUTLASS kernel of configuration C (cutlass_gemm.h), where cuBLASLt leaves the activation to a second pass (GELU,
// SiLU), its tiles a partial last wave (residual) or the rows to be padded and compacted (odd width). Offered where
// the build has the kernels and the layer fits them (cutlass_kind): float16/bfloat16, one GEMM (not batched), K a
// multiple of 8 and N too but for the odd-width kind; erf GELU with B stored [K, N] (a MatMul's weights) and no
// residual, SiLU with B stored [N, K] (trans_b: a 1x1 convolution's) and no residual, the residual kind with no
// activation and B either way, the odd-width kind with B stored [N, K] and nothing added.
inline constexpr const char* kCutlassGeluPrefix = "cutlass_gelu_c";
inline constexpr const char* kCutlassSiluPrefix = "cutlass_silu_c";
inline constexpr const char* kCutlassResPrefix = "cutlass_res_c";
inline constexpr const char* kCutlassOddPrefix = "cutlass_odd_c";
// "cutlass_norm_cC" / "cutlass_ngelu_cC": a FusedMatMul whose A rows are standardized (norm_epsilon: a LayerNorm
// folded into the GEMM by fold_layernorm_into_matmul), bias and no activation or erf GELU, B stored [K, N], float16.
// Its epilogue takes each row's mean and reciprocal deviation (a statistics pass before it) and the column sums
// of B: rstd (acc - mean colsum) + bias. cuBLASLt's epilogue has no row terms: its tactics run that form over the
// rows standardized into the workspace first (a LayerNorm's cost, gamma and beta already in B and the bias).
inline constexpr const char* kCutlassNormPrefix = "cutlass_norm_c";
inline constexpr const char* kCutlassNormGeluPrefix = "cutlass_ngelu_c";
inline constexpr int kCutlassGeluConfigs[] = {0, 1, 2, 3, 8};  // (cutlass_gemm.h)
inline constexpr int kCutlassSiluConfigs[] = {0, 2};
inline constexpr int kCutlassResConfigs[] = {4};
inline constexpr int kCutlassOddConfigs[] = {1, 4};  // in timing order (cutlass_tactics)
inline constexpr int kCutlassNormConfigs[] = {0, 1, 3};

inline std::string cutlass_gelu_tactic_name(int config) { return kCutlassGeluPrefix + std::to_string(config); }
inline std::string cutlass_silu_tactic_name(int config) { return kCutlassSiluPrefix + std::to_string(config); }
inline std::string cutlass_res_tactic_name(int config) { return kCutlassResPrefix + std::to_string(config); }
inline std::string cutlass_odd_tactic_name(int config) { return kCutlassOddPrefix + std::to_string(config); }
inline std::string cutlass_norm_tactic_name(int config) { return kCutlassNormPrefix + std::to_string(config); }
inline std::string cutlass_ngelu_tactic_name(int config) { return kCutlassNormGeluPrefix + std::to_string(config); }

// The names of a kind's configurations, in the order given.
template <size_t N>
std::vector<std::string> cutlass_tactic_names(std::string (*name)(int), const int (&configs)[N]) {
  std::vector<std::string> names;
  for (int c : configs) names.push_back(name(c));
  return names;
}

// The kinds of CUTLASS kernel (cutlass_gemm.h): bias + erf GELU, bias + SiLU, bias + residual (no activation), and
// the product alone into rows that are no whole number of 16-byte vectors (odd width); and A's rows standardized
// (a folded LayerNorm) with bias and no activation or erf GELU.
enum class CutlassAct { kGeluErf, kSilu, kResidual, kOddWidth, kNorm, kNormGelu };

struct CutlassTactic {
  CutlassAct act = CutlassAct::kGeluErf;
  int config = -1;  // -1: not a CUTLASS tactic
};

// What a tactic name asks for; config -1 for a name that is not one of these.
inline CutlassTactic parse_cutlass_tactic(const std::string& t) {
  for (int c : kCutlassGeluConfigs)
    if (t == cutlass_gelu_tactic_name(c)) return {CutlassAct::kGeluErf, c};
  for (int c : kCutlassSiluConfigs)
    if (t == cutlass_silu_tactic_name(c)) return {CutlassAct::kSilu, c};
  for (int c : kCutlassResConfigs)
    if (t == cutlass_res_tactic_name(c)) return {CutlassAct::kResidual, c};
  for (int c : kCutlassOddConfigs)
    if (t == cutlass_odd_tactic_name(c)) return {CutlassAct::kOddWidth, c};
  for (int c : kCutlassNormConfigs) {
    if (t == cutlass_norm_tactic_name(c)) return {CutlassAct::kNorm, c};
    if (t == cutlass_ngelu_tactic_name(c)) return {CutlassAct::kNormGelu, c};
  }
  return {};
}

struct CutlassProblem {
  bool available = false;  // the build has the kernels
  bool gelu_erf = false, silu = false, residual = false, reduced_type = false, trans_b = false;
  bool no_act = false;         // no activation at all
  bool bias = false;           // a bias is added
  bool residual_full = true;   // the residual is [M, N], as the output (not broadcast)
  bool norm = false;           // A's rows standardized (norm_epsilon): only the kNorm kinds take it
  bool half = false;           // float16 (the kNorm kinds are built for it alone)
  int64_t gemms = 1;    // GEMMs the layer runs (a batched MatMul: more than one)
  int64_t m = 0, n = 0, k = 0;
};

// Which kind of CUTLASS kernel (if any) can run the layer: the layer's type, sizes and epilogue, B's layout. Every
// built configuration of that kind takes it (make_cutlass_gemm refuses one that was not built), whatever order
// cutlass_tactics offers them in.
inline std::optional<CutlassAct> cutlass_kind(const CutlassProblem& p) {
  if (!p.available || !p.reduced_type || p.gemms != 1 || p.m <= 0 || p.n <= 0 || p.k <= 0 || p.k % 8 != 0)
    return std::nullopt;
  if (p.norm) {
    if (!p.half || p.n % 8 != 0 || p.residual || p.trans_b) return std::nullopt;
    if (p.no_act) return CutlassAct::kNorm;
    if (p.gelu_erf) return CutlassAct::kNormGelu;
    return std::nullopt;
  }
  // Rows of N elements that are no whole number of 16-byte vectors: only the product alone, B stored [N, K].
  if (p.n % 8 != 0) {
    if (p.no_act && !p.residual && !p.bias && p.trans_b) return CutlassAct::kOddWidth;
    return std::nullopt;
  }
  if (p.residual) {
    if (!p.no_act || !p.residual_full) return std::nullopt;
    return CutlassAct::kResidual;
  }
  if (p.gelu_erf && !p.trans_b) return CutlassAct::kGeluErf;
  if (p.silu && p.trans_b) return CutlassAct::kSilu;
  return std::nullopt;
}

// Whether the problem has few output tiles: under two waves of 128x128 tiles on `sms` SMs (batch 1).
inline bool few_tiles(const CutlassProblem& p, int sms) {
  return sms > 0 && ((p.m + 127) / 128) * ((p.n + 127) / 128) < 2 * sms;
}

// The CUTLASS tactics for a layer, in timing order. Erf GELU: for few output tiles (under two waves of 128x128 tiles on
// `sms` SMs, batch 1) the ping-pong 64x128 and the cooperative 128x128 kernels; else the ping-pong 128x192 one (its
// epilogue under the other warp group's main loop), then the cooperative 128x256 and 256x128 ones, fastest first as the
// H100 timed them at bert's and vit's FFN1, b64 (70.0, 77.2, 77.9 us at bert; cuBLASLt + the pass 94.9). SiLU: the
// cooperative 128x128 and the ping-pong 64x128 kernels. Residual: the ping-pong 128x128 kernel. Odd width: the
// cooperative 128x256 and the ping-pong 128x128 kernels, whose epilogue stages rows in shared memory (OddRowEpilogue).
inline std::vector<std::string> cutlass_tactics(const CutlassProblem& p, int sms) {
  const std::optional<CutlassAct> kind = cutlass_kind(p);
  if (!kind) return {};
  const bool few = few_tiles(p, sms);
  switch (*kind) {
    case CutlassAct::kResidual: return cutlass_tactic_names(cutlass_res_tactic_name, kCutlassResConfigs);
    case CutlassAct::kOddWidth: return cutlass_tactic_names(cutlass_odd_tactic_name, kCutlassOddConfigs);
    case CutlassAct::kGeluErf:
      if (few) return {cutlass_gelu_tactic_name(2), cutlass_gelu_tactic_name(0)};
      return {cutlass_gelu_tactic_name(8), cutlass_gelu_tactic_name(1), cutlass_gelu_tactic_name(3)};
    case CutlassAct::kSilu:
      if (few) return {cutlass_silu_tactic_name(2), cutlass_silu_tactic_name(0)};
      return {cutlass_silu_tactic_name(0), cutlass_silu_tactic_name(2)};
    case CutlassAct::kNorm:
    case CutlassAct::kNormGelu: {
      // The 128x256 tile first (the GELU kind's fastest at vit's and bert's FFN1), then 256x128 (2x1 cluster),
      // then 128x128, whose tiles fill the SMs' last wave better at gpt2's b32 QKV (288 large tiles on 132 SMs).
      auto name = *kind == CutlassAct::kNorm ? cutlass_norm_tactic_name : cutlass_ngelu_tactic_name;
      if (few) return {name(0), name(1)};
      return {name(1), name(3), name(0)};
    }
  }
  return {};
}

// The tactic list of a layer with the CUTLASS kernels that fit it (cutlass_tactics): cuBLASLt's first choice, then
// the CUTLASS kernels (which replace the whole layer, a pass included, so they are timed at the default level), then
// the rest. At an odd width the CUTLASS kernels come before all of cuBLASLt's, which run 5-7x slower there (gpt2's
// lm_head b32 on an H100: 3.0 ms against 0.57), so the levels that time few tactics, or none (level 0), take one.
inline std::vector<std::string> with_cutlass_tactics(std::vector<std::string> tactics, const CutlassProblem& p,
                                                     int sms) {
  const std::vector<std::string> cutlass = cutlass_tactics(p, sms);
  if (cutlass.empty()) return tactics;
  // The folded-LayerNorm form: the CUTLASS kernels first (their statistics pass and fused epilogue are what the
  // fold is for), then cuBLASLt's over the standardized rows (a LayerNorm's cost again, where those kernels lose);
  // the other way round at few output tiles (batch 1), where cuBLASLt is faster.
  if (p.norm) {
    if (few_tiles(p, sms)) {
      tactics.insert(tactics.end(), cutlass.begin(), cutlass.end());
      return tactics;
    }
    std::vector<std::string> all = cutlass;
    all.insert(all.end(), tactics.begin(), tactics.end());
    return all;
  }
  if (cutlass_kind(p) == CutlassAct::kOddWidth) {
    tactics.insert(tactics.begin(), cutlass.begin(), cutlass.end());
    return tactics;
  }
  return after_first_choice(tactics, cutlass);
}

}  // namespace kiln::cuda
