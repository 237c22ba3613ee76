// dead_code_elimination pass: removes nodes none of whose outputs reach a graph output, then unused values.
#include <unordered_set>

#include "passes/pass.h"

namespace kiln::passes {
namespace {

class DeadCodeElimination final : public Pass {
 public:
  std::string_view name() const override { return "dead_code_elimination"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    std::unordered_set<const ir::Node*> live;
    std::vector<const ir::Node*> stack;
    for (const ir::Value* v : g.outputs())
      if (v && v->producer && live.insert(v->producer).second) stack.push_back(v->producer);
    while (!stack.empty()) {
      const ir::Node* n = stack.back();
      stack.pop_back();
      for (const ir::Value* v : n->inputs)
        if (v && v->producer && live.insert(v->producer).second) stack.push_back(v->producer);
    }
    std::vector<ir::Node*> dead;
    for (auto& n : g.nodes())
      if (!live.count(n.get())) dead.push_back(n.get());
    for (ir::Node* n : dead) g.remove_node(n);
    size_t before = g.values().size();
    g.prune_values();
    ctx.changes += static_cast<int>(dead.size());
    if (!dead.empty() || before != g.values().size())
      ctx.verbose("dead_code_elimination: removed " + std::to_string(dead.size()) + " nodes and " +
                  std::to_string(before - g.values().size()) + " values");
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_dead_code_elimination() { return std::make_unique<DeadCodeElimination>(); }

}  // namespace kiln::passes
