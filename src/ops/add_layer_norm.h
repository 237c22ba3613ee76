// kiln AddLayerNormalization and EmbedLayerNormalization (add_layer_norm.cpp): what the fused nodes accept as
// their addend.
#pragma once

#include "ops/op.h"

namespace kiln::ops {

// Ok when B broadcasts to A along leading dims only and covers the normalized dims (from `axis`, normalized, on):
// right-aligned to A, B is some 1s and then A's own dims. Each of A's rows then meets one row of B (row r of A
// meets row r mod rows(B)). `op` names the node kind in the error.
Status check_add_layernorm_addend(const Shape& a, const Shape& b, int64_t axis,
                                  const std::string& op = "kiln AddLayerNormalization");

}  // namespace kiln::ops
