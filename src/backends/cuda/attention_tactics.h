// The tactics of kiln::FusedAttention's tensor-core kernel: block sizes the builder times per layer, their stable
// names (they go into engines and timing caches) and which shapes each is offered for. Plain C++, so the CPU unit
// tests check it without a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::cuda {

// What decides whether the tensor-core kernel runs a FusedAttention node and with which blocks.
struct AttentionShape {
  int64_t B = 0, H = 0, Sq = 0, Sk = 0, D = 0, Dv = 0;
  bool half_or_bf16 = false;  // the element type is float16 or bfloat16
  bool aligned = false;       // Q/K/V rows 16-byte aligned, the output's 4-byte aligned (attention_rows_aligned)
};

// Warps per block the kernel is instantiated for; each warp owns 16 query rows, so a block covers 16 * warps
// queries and loads each K/V tile once for all of them.
inline constexpr int kAttentionWarps[] = {1, 2, 4, 8};
// Keys per tile of the kernel.
inline constexpr int64_t kAttentionKeyTile = 64;
// The key split: kAttentionKeySplit warps share each 16 query rows, each taking every kAttentionKeySplit-th key
// tile, and the block merges their partial softmax sums at the end. For grids that leave SMs idle (batch 1: bert's
// 12 heads x 128 queries are 96 warps of work for 132 SMs), it doubles the warps and halves each one's chain of
// dependent tiles. Instantiated for these row warps per block (blocks of 2, 4 and 8 warps).
inline constexpr int kAttentionKeySplit = 2;
inline constexpr int kAttentionSplitWarps[] = {1, 2, 4};

// A tactic's block: row warps and key splits (warps 0: not a tactic of this kernel).
struct AttentionBlock {
  int warps = 0;
  int splits = 1;
};

// Whether the 16-byte cp.async row loads and the 4-byte output stores are aligned for these addresses and
// element strides (2-byte elements).
inline bool attention_rows_aligned(const void* q, const void* k, const void* v, const void* o, const int64_t* qs,
                                   const int64_t* ks, const int64_t* vs, const int64_t* os) {
  const uintptr_t in = reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(k) | reinterpret_cast<uintptr_t>(v);
  int64_t in_strides = 0, out_strides = 0;
  for (int i = 0; i < 3; ++i) in_strides |= qs[i] | ks[i] | vs[i], out_strides |= os[i];
  return in % 16 == 0 && in_strides % 8 == 0 && reinterpret_cast<uintptr_t>(o) % 4 == 0 && out_strides % 2 == 0;
}

// The tensor-core kernel's head-dim tiles: it is instantiated for 32, 64, 96 and 128 columns and runs a head dim
// that is a multiple of 8 (its 16-byte row loads) in the smallest tile that holds it, the rest of the tile zeros.
inline int64_t attention_mma_tile(int64_t d) {
  for (int64_t tile : {32, 64, 96}) {
    if (d <= tile) return tile;
  }
  return 128;
}

inline bool attention_mma_applies(const AttentionShape& s) {
  return s.half_or_bf16 && s.aligned && s.D == s.Dv && s.D > 0 && s.D % 8 == 0 && s.D <= 128;
}

// The untuned choice: four warps (64 queries) per block share each K/V tile; when that grid would leave most
// SMs idle (batch 1), one warp per block spreads the same work over four times as many blocks.
inline int attention_default_warps(const AttentionShape& s, int sm_count) {
  return s.B * s.H * ((s.Sq + 63) / 64) < 2 * static_cast<int64_t>(sm_count) ? 1 : 4;
}

inline std::string attention_tactic_name(int warps, int splits = 1) {
  return "kiln_attn_mma_w" + std::to_string(warps) + (splits > 1 ? "s" + std::to_string(splits) : "");
}

// The block of a tactic name; warps 0 for a name that is not one of these tactics.
inline AttentionBlock attention_tactic_block(std::string_view name) {
  for (int w : kAttentionWarps)
    if (name == attention_tactic_name(w)) return {w, 1};
  for (int w : kAttentionSplitWarps)
    if (name == attention_tactic_name(w, kAttentionKeySplit)) return {w, kAttentionKeySplit};
  return {};
}

// The row warps of a tactic name, 0 for a name that is not one of these tactics.
inline int attention_tactic_warps(std::string_view name) { return attention_tactic_block(name).warps; }

// The candidates for this shape, the untuned choice first; empty where the tensor-core kernel does not run (the
// generic kernel has no alternatives). A block size is offered only while at least half its warps have query
// rows: a larger one computes the same thing with idle warps holding shared memory. The key-split blocks follow,
// where the grid leaves SMs idle (the untuned choice is one warp per block) and there are keys for two tiles.
inline std::vector<std::string> attention_tactics(const AttentionShape& s, int sm_count) {
  std::vector<std::string> names;
  if (!attention_mma_applies(s) || s.B * s.H * s.Sq == 0) return names;
  const int first = attention_default_warps(s, sm_count);
  names.push_back(attention_tactic_name(first));
  auto rows_fill = [&](int w) { return w == 1 || s.Sq > 8 * static_cast<int64_t>(w); };
  for (int w : kAttentionWarps)
    if (w != first && rows_fill(w)) names.push_back(attention_tactic_name(w));
  if (first == 1 && s.Sk > kAttentionKeyTile)
    for (int w : kAttentionSplitWarps)
      if (rows_fill(w)) names.push_back(attention_tactic_name(w, kAttentionKeySplit));
  return names;
}

}  // namespace kiln::cuda
