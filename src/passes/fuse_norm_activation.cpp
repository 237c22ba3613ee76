// fuse_norm_activation pass (CUDA, after layout_nhwc): an activation whose input is the output of a channels-last
// kiln GroupNormalization, and which nothing else reads, becomes that node's epilogue attributes, so the
// normalization's second pass stores the activated value. A diffusion UNet's GroupNorm -> SiLU pairs then cost one
// read and one write of the activation less each (the separate Pointwise kernel fuse_pointwise would make).
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

namespace m = match;

// Output of a kiln GroupNormalization (layout_nhwc's channels-last form) that applies no activation yet.
bool plain_nhwc_groupnorm(ir::Value* v, const m::Bindings&) {
  const ir::Node* n = v->producer;
  if (!n || n->op_type != "GroupNormalization" || n->domain != "kiln" || n->outputs.size() != 1) return false;
  auto act = n->attrs.get_string("activation", "none");
  return act.ok() && *act == "none";
}

class FuseNormActivation final : public Pass {
 public:
  std::string_view name() const override { return "fuse_norm_activation"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    const m::Pattern norm = m::any().where(plain_nhwc_groupnorm);
    const m::Pattern act = m::either(m::activation_forms(norm.used_once().bind("x"), norm.used_times(2).bind("x")));
    const int n = m::rewrite(g, act, [&](m::Bindings& b) { return fuse(g, b); });
    if (n > 0) {
      KILN_RETURN_IF_ERROR(g.topo_sort());
      g.prune_values();
      ctx.changes += n;
      ctx.verbose("fuse_norm_activation: " + std::to_string(n) + " activations applied by their GroupNormalization");
    }
    return Status::Ok();
  }

 private:
  static bool fuse(ir::Graph& g, m::Bindings& b) {
    ir::Value* x = b.value("x");
    ir::Value* root = b.value("act");
    ir::Node* norm = x ? x->producer : nullptr;
    if (!norm || !root || root->dtype != x->dtype) return false;
    Attributes a = norm->attrs;
    if (!m::activation_attrs(b, a)) return false;
    // The normalization now produces the activated value under the activation's name; its own output goes.
    ir::Node* fused = g.add_node("GroupNormalization", g.unique_node_name(norm->name + "_act"), norm->inputs,
                                 {root->name + "_fused"}, std::move(a), norm->opset, "kiln");
    std::vector<ir::Node*> replaced;  // readers first: the norm's output x goes once nothing reads it
    for (const char* k : {"act", "gate"})
      if (ir::Node* n = b.node(k)) replaced.push_back(n);
    replaced.push_back(norm);
    m::record_fusion(fused, std::vector<const ir::Node*>(replaced.rbegin(), replaced.rend()));
    m::finish_fusion(g, fused, root, replaced);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_norm_activation() { return std::make_unique<FuseNormActivation>(); }

}  // namespace kiln::passes
