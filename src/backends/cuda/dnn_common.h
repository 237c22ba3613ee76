// What the cuDNN graph-API tactic families (dnn_matmul.h, dnn_conv.h, dnn_attention.h) share and the CPU tests can
// check without cudnn.h: the rank a tactic name carries, the pointer alignment cuDNN is promised, and the node
// annotations a chosen plan is stored under.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

namespace kiln::cuda {

// cuDNN is told every tensor pointer is aligned to this; a plan must not run otherwise (dnn_pointers_aligned).
inline constexpr uint64_t kDnnAlignment = 16;

// Whether every pointer (null ones included: absent operands) is kDnnAlignment-byte aligned.
inline bool dnn_pointers_aligned(std::initializer_list<const void*> ptrs) {
  uint64_t v = 0;
  for (const void* p : ptrs) v |= reinterpret_cast<uintptr_t>(p);
  return v % kDnnAlignment == 0;
}

// The rank r of a tactic named `prefix` + r (at most three digits), or -1 when the name is not of that family.
inline int dnn_tactic_rank(std::string_view name, std::string_view prefix) {
  if (name.size() <= prefix.size() || name.size() > prefix.size() + 3 || name.substr(0, prefix.size()) != prefix)
    return -1;
  int r = 0;
  for (char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return -1;
    r = r * 10 + (c - '0');
  }
  return r;
}

// Node annotations the builder stores with a chosen cuDNN plan (fused matmul and conv graph): the finalized plan's
// JSON (cuDNN's CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, compiled kernel included) and the key it is valid
// for, so a load restores the plan instead of compiling it again (dnn_layer_plan.h).
inline constexpr const char* kDnnPlanAttr = "kiln.dnn_plan";
inline constexpr const char* kDnnPlanKeyAttr = "kiln.dnn_plan_key";

}  // namespace kiln::cuda
