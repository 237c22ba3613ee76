// The engine writer: serializes an optimized graph into the engine file format (src/common/engine_format.h).
#pragma once

#include <cstdint>
#include <vector>

#include "ir/graph.h"
#include "kiln/builder.h"

namespace kiln::builder {

// Expects a verified, topologically sorted graph whose values all carry a dtype and a (possibly symbolic) shape.
// Writes nodes in graph order, constants (64-byte aligned), I/O tensors and the config's optimization profiles.
Result<std::vector<uint8_t>> write_engine(const ir::Graph& graph, const BuilderConfig& config);

}  // namespace kiln::builder
