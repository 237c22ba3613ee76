// The kiln LayerNorm family (add_layer_norm.cpp): what AddLayerNormalization and EmbedLayerNormalization accept as
// their addend, and the type each member stores Y in.
#pragma once

#include "ops/op.h"

namespace kiln::ops {

// Ok when B broadcasts to A along leading dims only and covers the normalized dims (from `axis`, normalized, on):
// right-aligned to A, B is some 1s and then A's own dims. Each of A's rows then meets one row of B (row r of A
// meets row r mod rows(B)). `op` names the node kind in the error.
Status check_add_layernorm_addend(const Shape& a, const Shape& b, int64_t axis,
                                  const std::string& op = "kiln AddLayerNormalization");

// Y's type of a kiln LayerNorm node with X of type x: its `to` attribute (float32 or x), else x.
Result<DataType> layernorm_output_type(const Attributes& attrs, DataType x, const std::string& op);

}  // namespace kiln::ops
