// Declarative graph patterns for fusion passes: a Pattern tests one Value and, through its producer, the subgraph
// above it, binding names to the nodes and values it matched. Passes describe what they fuse instead of walking
// use-def chains by hand:
//
//   auto p = match::op("Relu", {match::commutative("Add", match::op("Conv").bind("conv"),
//                                                    match::constant().bind("bias")).used_once()}).bind("relu");
//   match::rewrite(g, p, [&](match::Bindings& b) { ... return true; });
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln::passes::match {

struct Bindings {
  const ir::Graph* graph = nullptr;
  std::map<std::string, ir::Value*> values;
  std::map<std::string, ir::Node*> nodes;  // a bound value's producer, under the same name (when it has one)

  ir::Value* value(const std::string& name) const;  // null when not bound
  ir::Node* node(const std::string& name) const;    // null when not bound or a graph input/constant
};

class Pattern {
 public:
  using Fn = std::function<bool(ir::Value*, Bindings&)>;
  explicit Pattern(Fn fn) : fn_(std::move(fn)) {}
  // Tests v; on failure the bindings made during the attempt are undone.
  bool operator()(ir::Value* v, Bindings& b) const;

  // Binds the matched value (and its producer node) under `name`. A name bound twice must bind the same value.
  Pattern bind(std::string name) const;
  // The value has exactly one use and is not a graph output: fusing its producer away loses nothing.
  Pattern used_once() const;
  // The value has exactly n uses and is not a graph output (x * f(x) activations read their input twice).
  Pattern used_times(size_t n) const;
  // Extra condition on the matched value.
  Pattern where(std::function<bool(ir::Value*, const Bindings&)> pred) const;

 private:
  Fn fn_;
};

Pattern any();
Pattern constant();
// A constant whose elements all equal v (within tol), any shape; float or integer types.
Pattern scalar(double v, double tol = 1e-6);
// The value is produced by a default-domain node of this op type; `inputs` match its inputs position by position
// (fewer patterns than inputs: the rest are unconstrained; an omitted optional input never matches).
Pattern op(std::string op_type, std::vector<Pattern> inputs = {});
// Like op() for any of several op types.
Pattern op_any(std::vector<std::string> op_types, std::vector<Pattern> inputs = {});
// A binary op whose two inputs match a and b in either order.
Pattern commutative(std::string op_type, Pattern a, Pattern b);
// The first of the alternatives that matches.
Pattern either(std::vector<Pattern> alternatives);

bool is_graph_output(const ir::Graph& g, const ir::Value* v);
// The default-domain node of this op type that produces v; null for anything else (walking exported chains).
ir::Node* producer_op(const ir::Value* v, const char* op_type);
// Whether n is a Transpose with exactly this perm attribute.
bool perm_is(const ir::Node* n, const std::vector<int64_t>& perm);
// Float value of a one-element (or all-equal) constant, if v is one.
std::optional<double> constant_scalar(const ir::Value* v);

// Tries `root` on the output 0 of every node, in order; on a match calls apply, which rewrites the graph and
// returns whether it changed anything; it must leave the matched root unused (replace_all_uses) or changed
// so that it no longer matches. Repeats until a sweep changes nothing; returns the number of rewrites.
// apply must keep the graph consistent (Graph::add_node / replace_all_uses / remove_node); dead nodes left
// behind are for dead_code_elimination.
int rewrite(ir::Graph& g, const Pattern& root, const std::function<bool(Bindings&)>& apply);

// The activations kiln's fused ops take, as patterns over the activated value x: a unary op of x_once
// (Relu, Sigmoid, HardSwish, Gelu, LeakyRelu, Clip), x_twice * Sigmoid(x) (SiLU) and x_twice * HardSigmoid(x)
// (HardSwish). Each binds "act" (and "gate" for the products); x_twice must bind "x".
std::vector<Pattern> activation_forms(const Pattern& x_once, const Pattern& x_twice);
// Sets prefix + "activation" (and its alpha, beta, clip_min, clip_max) for the form bound under "act" (true
// without one: nothing to set); false when the form has no fused equivalent (non-constant Clip bounds).
bool activation_attrs(const Bindings& b, Attributes& a, const std::string& prefix = "");

// Finishes a fusion: removes the `replaced` nodes (and those of their outputs nothing reads any more), then makes
// `fused` produce `root` (the last replaced value, which keeps its name and its readers) in place of its own
// output 0, which goes.
void finish_fusion(ir::Graph& g, ir::Node* fused, ir::Value* root, const std::vector<ir::Node*>& replaced);

// Records on `fused` the names of the original nodes it replaces (attribute "kiln.fused_from", flattened through
// nodes that were themselves fused), for layer information and `kiln compare --markAll`.
void record_fusion(ir::Node* fused, const std::vector<const ir::Node*>& originals);

}  // namespace kiln::passes::match
