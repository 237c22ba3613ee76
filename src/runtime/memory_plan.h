// Activation memory planning: packs tensors with known sizes and lifetimes into one arena.
#pragma once

#include <cstdint>
#include <vector>

namespace kiln::runtime {

struct Lifetime {
  uint64_t bytes = 0;  // 0: needs no memory
  int first = 0;       // index of the step that writes it
  int last = 0;        // index of the last step that reads it (inclusive)
};

struct MemoryPlan {
  std::vector<uint64_t> offsets;  // per tensor, into the arena
  uint64_t arena_bytes = 0;
  uint64_t total_bytes = 0;       // sum of all sizes: what no reuse would need
};

// Greedy by size, largest first: each tensor goes at the lowest aligned offset that no tensor alive at the
// same time overlaps. Deterministic for a given input.
MemoryPlan plan_memory(const std::vector<Lifetime>& tensors, uint64_t alignment = 256);

}  // namespace kiln::runtime
