// fuse_gelu pass: GELU's decomposed exporter forms (Erf and tanh) -> one Gelu node.
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {

namespace fusion {

int fuse_gelu_forms(ir::Graph& g) {
  int n = 0;
  for (const char* mode : {"none", "tanh"}) {
    const match::Pattern x = match::any().bind("x");
    const match::Pattern root = (std::string(mode) == "none" ? gelu_erf(x) : gelu_tanh(x)).bind("root");
    n += match::rewrite(g, root, [&](match::Bindings& b) {
      ir::Value* in = b.value("x");
      if (!dtype_is_float(in->dtype) || in->is_constant()) return false;
      Attributes a;
      if (std::string(mode) == "tanh") a.set("approximate", Attribute(std::string("tanh")));
      // Gelu is an opset-20 operator; the node carries its own opset so that a graph of opset 17 may hold it.
      replace_with_node(g, b.value("root"), "Gelu", "", {in}, std::move(a), 20, "gelu");
      return true;
    });
  }
  if (n) prune_dead_nodes(g);
  return n;
}

}  // namespace fusion

namespace {

class FuseGelu final : public Pass {
 public:
  std::string_view name() const override { return "fuse_gelu"; }
  Status apply(ir::Graph& g, PassContext& ctx) override {
    const int n = fusion::fuse_gelu_forms(g);
    ctx.changes += n;
    if (n) ctx.verbose("fuse_gelu: " + std::to_string(n) + " decomposed GELUs -> Gelu");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_gelu() { return std::make_unique<FuseGelu>(); }

}  // namespace kiln::passes
