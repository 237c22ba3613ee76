// Shape inference for one node, shared by the shape_inference pass and NetworkDefinition (which infers as it builds).
#pragma once

#include <functional>
#include <string>

#include "ir/graph.h"

namespace kiln::passes {

// The shape_inference pass (make_shape_inference) also unifies symbolic dims. Where an operator is legal only if two
// dims are equal, it says so (ops::InferContext::require_equal): a MatMul's or Gemm's contraction, Concat's dims off
// the axis, and two different symbols broadcast against each other (legal only if equal or one is 1; exporters mean
// equal, as when a position-embedding Slice of the sequence length is added to the sequence). The pass keeps
// union-find classes over symbol names and renames every value's dims (shapes and known shape elements) to the
// class's representative: a graph input's symbol, else a name from the model, else a fresh one, ties broken
// alphabetically. It sweeps the graph again while classes change, so passes see one symbol per proven length.
// Not unified: a symbol broadcast against a static dim > 1 or against an unnamed dim (it may be 1 there), two
// symbols the user declared on graph inputs when they only broadcast (either may be 1; the result gets a fresh
// symbol), and Expand's operands (broadcasting a 1 is what Expand is for).
// A class proven equal to a static value becomes that value, unless it holds a graph input's symbol: a dim the user
// declared dynamic stays dynamic (the engine must still accept every shape of the optimization profile; a run with
// another value fails in the node that requires it), and the pass logs a warning naming that node and the value.
// Two static values in one class are an error naming both nodes.

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
