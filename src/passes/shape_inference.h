// Shape inference for one node, shared by the shape_inference pass and NetworkDefinition (which infers as it builds).
#pragma once

#include <functional>
#include <string>

#include "ir/graph.h"

namespace kiln::passes {

// Runs the node's schema inference on its inputs' info and merges the result into its output values:
// a static dim already declared (by the importer or the user) survives when inference only knows a symbol,
// and a declared static dim that contradicts an inferred one is an error naming the node and both shapes.
// `changed` (optional) counts output values whose info changed.
Status infer_node(ir::Graph& g, ir::Node& n, int* changed = nullptr);
// Same, minting fresh symbols with `fresh` (for callers that hold a node but not its graph).
Status infer_node(ir::Node& n, const std::function<std::string()>& fresh, int* changed = nullptr);
// After `changed` got a new shape or type (a network input's dims, a rebuilt layer's output), forgets what every
// node downstream inferred and infers again in dependency order. Failures leave values unknown: the builder's
// shape_inference pass then reports them with full context.
void reinfer_downstream(ir::Value* changed);

}  // namespace kiln::passes
