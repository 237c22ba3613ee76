// Greedy lifetime-aware arena packing (see memory_plan.h).
#include "runtime/memory_plan.h"

#include <algorithm>
#include <numeric>

namespace kiln::runtime {

MemoryPlan plan_memory(const std::vector<Lifetime>& tensors, uint64_t alignment) {
  MemoryPlan plan;
  plan.offsets.assign(tensors.size(), 0);
  auto align = [alignment](uint64_t x) { return (x + alignment - 1) / alignment * alignment; };
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors[a].bytes > tensors[b].bytes; });
  struct Placed { uint64_t begin, end; int first, last; };
  std::vector<Placed> placed;
  for (size_t i : order) {
    const Lifetime& t = tensors[i];
    if (t.bytes == 0) continue;
    plan.total_bytes += t.bytes;
    uint64_t size = align(t.bytes);
    // Blocks alive at the same time, by offset; take the first gap that fits.
    std::vector<const Placed*> live;
    for (const auto& p : placed)
      if (p.first <= t.last && t.first <= p.last) live.push_back(&p);
    std::sort(live.begin(), live.end(), [](const Placed* a, const Placed* b) { return a->begin < b->begin; });
    uint64_t offset = 0;
    for (const Placed* p : live) {
      if (p->begin >= offset + size) break;
      offset = std::max(offset, p->end);
    }
    placed.push_back({offset, offset + size, t.first, t.last});
    plan.offsets[i] = offset;
    plan.arena_bytes = std::max(plan.arena_bytes, offset + size);
  }
  return plan;
}

}  // namespace kiln::runtime
