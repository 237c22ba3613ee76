// Einsum equations parsed once for the reference kernel (src/ops/generators.cpp) and the CUDA pipeline's
// lower_einsum pass.
#pragma once

#include <string>
#include <vector>

#include "kiln/status.h"

namespace kiln::ops {

// An equation with ellipses expanded: each operand and the output as lists of label ids. Letters are ids 0..51;
// ellipsis dims get ids 52.. right-aligned so operands with shorter ellipses broadcast. Without "->" the output is
// the ellipsis dims, then the letters that appear once, in alphabetical order (upper case after lower case).
struct EinsumPlan {
  std::vector<std::vector<int>> inputs;
  std::vector<int> output;
  int num_labels = 0;
};

// `ranks`: each operand's rank (needed to expand its ellipsis). Errors name the equation and what is wrong.
Result<EinsumPlan> parse_einsum(std::string eq, const std::vector<size_t>& ranks);

}  // namespace kiln::ops
