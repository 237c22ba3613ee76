// fold_transposes pass: a Transpose of a Transpose (the inner one read by nothing else) becomes one Transpose with
// the composed permutation, or nothing when they cancel. Each Transpose left in an engine is a copy of its tensor.
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

namespace m = match;

std::optional<std::vector<int64_t>> perm_of(const ir::Node& n) {
  auto p = n.attrs.get_ints("perm");
  if (p.ok()) return *p;
  // No perm: the dims reversed, which needs the rank.
  const ir::Value* x = n.inputs.empty() ? nullptr : n.inputs[0];
  if (!x || !x->rank_known) return std::nullopt;
  std::vector<int64_t> r(x->shape.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<int64_t>(r.size() - 1 - i);
  return r;
}

class FoldTransposes final : public Pass {
 public:
  std::string_view name() const override { return "fold_transposes"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    auto pattern = m::op("Transpose", {m::op("Transpose").bind("inner").used_once()}).bind("outer");
    int n = m::rewrite(g, pattern, [&](m::Bindings& b) {
      ir::Node* inner = b.node("inner");
      ir::Node* outer = b.node("outer");
      auto p1 = perm_of(*inner), p2 = perm_of(*outer);
      if (!p1 || !p2 || p1->size() != p2->size()) return false;
      // outer(inner(x)): output dim i is inner's dim p2[i], which is x's dim p1[p2[i]].
      std::vector<int64_t> p(p2->size());
      bool identity = true;
      for (size_t i = 0; i < p.size(); ++i) {
        if ((*p2)[i] < 0 || (*p2)[i] >= static_cast<int64_t>(p1->size())) return false;
        p[i] = (*p1)[(*p2)[i]];
        identity &= p[i] == static_cast<int64_t>(i);
      }
      ir::Value* x = inner->inputs[0];
      ir::Value* y = outer->outputs[0];
      if (identity && !m::is_graph_output(g, y)) {
        g.replace_all_uses(y, x);
        return true;
      }
      // One Transpose from x in y's place (y's name may be a network output).
      Attributes a;
      a.set("perm", p);
      fusion::replace_with_node(g, y, "Transpose", "", {x}, std::move(a), outer->opset, outer->name + "_folded");
      return true;
    });
    ctx.changes += n;
    // The replaced pairs are left for dead_code_elimination; the folded Transposes were appended after their readers.
    if (n) KILN_RETURN_IF_ERROR(g.topo_sort());
    if (n) ctx.verbose("fold_transposes: " + std::to_string(n) + " Transpose pairs folded");
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_transposes() { return std::make_unique<FoldTransposes>(); }

}  // namespace kiln::passes
