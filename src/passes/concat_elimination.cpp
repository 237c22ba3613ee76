// concat_elimination pass: marks each Concat whose inputs can be written in place ("kiln.inplace" = 1), so that
// the CUDA context gives every input a slot inside the concat's output and the concat copies nothing. The
// graph keeps the Concat (the CPU reference still runs it as a copy, and a device context copies where the
// slices are not contiguous at its shapes, see runtime/concat_inplace.h); only the annotation is added.
//
// A Concat is marked when
//  - it has a kernel on the target backend and its output is not a small integer tensor inference already knows
//    (a shape computation, resolved on the host, never launched);
//  - every input is a distinct value written by a node of its own with a device kernel: not a graph input,
//    constant or graph output (those live in the caller's or the weights' buffers), not a known small integer
//    tensor, not the output of an alias-like op whose result is its input's bytes (Reshape, Flatten, Squeeze,
//    Unsqueeze, Identity: the bytes belong to another value);
//  - no input is already an input of an earlier marked Concat (a value has one place).
// An input may be the output of another marked Concat (nesting: DenseNet blocks, Inception, SPP/PAN necks,
// U-Nets): the inner concat's output then lives inside the outer's, and its producers write at the composed
// offset. It still has one place: an inner concat read by two outer ones is a slice of the first one only.
// Hand-walked rather than matched: the conditions are about all of a variadic node's inputs at once.
#include <set>

#include "passes/matcher.h"
#include "passes/pass.h"
#include "runtime/concat_inplace.h"

namespace kiln::passes {
namespace {

bool alias_like(const ir::Node& n) {
  static const std::set<std::string> kAlias = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"};
  return n.domain.empty() && kAlias.count(n.op_type) > 0;
}

bool marked(const ir::Node& n) {
  const Attribute* a = n.attrs.find(runtime::kInPlaceAttr);
  return a && a->type() == AttrType::kINT && a->i() == 1;
}

// The type the CUDA registry keys a node's kernel by: its first present input's, else its first output's.
DataType kernel_dtype(const ir::Node& n) {
  for (const ir::Value* v : n.inputs)
    if (v) return v->dtype;
  return n.outputs.empty() ? DataType::kFLOAT : n.outputs[0]->dtype;
}

class ConcatElimination final : public Pass {
 public:
  std::string_view name() const override { return "concat_elimination"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    const auto& has_kernel = ctx.options.has_kernel;
    auto on_device = [&](const ir::Node& n) { return !has_kernel || has_kernel(n.op_type, n.domain, kernel_dtype(n)); };
    auto is_concat = [](const ir::Node& n) {
      return n.op_type == "Concat" && n.domain.empty() && n.outputs.size() == 1 && !n.inputs.empty();
    };
    // Producers before readers: a value read by two Concats goes to the first in topological order.
    KILN_RETURN_IF_ERROR(g.topo_sort());
    // Concats marked by an earlier run keep their inputs, wherever they sit in the order.
    std::set<const ir::Value*> slices;
    for (const auto& node : g.nodes())
      if (is_concat(*node) && marked(*node)) slices.insert(node->inputs.begin(), node->inputs.end());
    int changes = 0;
    for (const auto& node : g.nodes()) {
      ir::Node& n = *node;
      if (!is_concat(n) || marked(n) || n.outputs[0]->known || !on_device(n)) continue;
      std::set<const ir::Value*> seen;
      bool ok = true;
      for (const ir::Value* v : n.inputs) {
        ok = v && !v->is_constant() && !v->known && v->producer && v->producer != &n && !alias_like(*v->producer) &&
             on_device(*v->producer) && !match::is_graph_output(g, v) && !slices.count(v) && seen.insert(v).second;
        if (!ok) break;
      }
      if (!ok) continue;
      n.attrs.set(runtime::kInPlaceAttr, Attribute(int64_t{1}));
      slices.insert(seen.begin(), seen.end());
      ctx.verbose("concat_elimination: the producers of '" + n.name + "' may write into its output");
      ++changes;
    }
    ctx.changes = changes;
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_concat_elimination() { return std::make_unique<ConcatElimination>(); }

}  // namespace kiln::passes
