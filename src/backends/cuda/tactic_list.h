// How a layer's tactic lists combine (plain C++, checked by the CPU unit tests): alternatives of another kind
// (cuDNN graph plans, CUTLASS kernels) go right after the first choice of the layer's usual library, which stays
// the untuned default, so that the tuner's per-level limit reaches them; that library's other choices follow.
#pragma once

#include <string>
#include <vector>

namespace kiln::cuda {

inline std::vector<std::string> after_first_choice(const std::vector<std::string>& usual,
                                                   const std::vector<std::string>& others) {
  std::vector<std::string> v;
  if (!usual.empty()) v.push_back(usual[0]);
  v.insert(v.end(), others.begin(), others.end());
  if (usual.size() > 1) v.insert(v.end(), usual.begin() + 1, usual.end());
  return v;
}

}  // namespace kiln::cuda
