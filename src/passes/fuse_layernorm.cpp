// fuse_layernorm pass: LayerNorm decomposed as exporters write it below opset 17
// (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta) -> LayerNormalization.
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// ReduceMean over the last axis only, keeping it (axes as an attribute before opset 18, an input from 18).
bool reduces_last_axis(ir::Value* v) {
  const ir::Node* n = v->producer;
  if (!n || !n->inputs[0]->rank_known) return false;
  const int64_t rank = static_cast<int64_t>(n->inputs[0]->shape.size());
  auto keep = n->attrs.get_int("keepdims", 1);
  if (!keep.ok() || *keep != 1) return false;
  std::vector<int64_t> axes;
  if (n->attrs.has("axes")) {
    auto a = n->attrs.get_ints("axes");
    if (!a.ok()) return false;
    axes = *a;
  } else if (n->inputs.size() > 1 && n->inputs[1] && n->inputs[1]->is_constant()) {
    axes = n->inputs[1]->constant->to_i64_vector();
  }
  return axes.size() == 1 && (axes[0] == -1 || axes[0] == rank - 1);
}

// A constant that broadcasts as a vector over the last axis of length d: [d], [1,d], [1,1,d]...
bool is_last_axis_vector(const ir::Value* c, int64_t d) {
  if (!c->is_constant() || !dtype_is_float(c->dtype) || c->constant->numel() != d) return false;
  const auto& s = c->constant->shape();
  return !s.empty() && s.back() == d;
}

class FuseLayerNorm final : public Pass {
 public:
  std::string_view name() const override { return "fuse_layernorm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    using namespace match;
    const Pattern x = any().bind("x");
    const Pattern mean =
        op("ReduceMean", {x}).where([](ir::Value* v, const Bindings&) { return reduces_last_axis(v); });
    const Pattern d = op("Sub", {x, mean}).bind("d");
    const Pattern sq = either({op("Pow", {d, fusion::one_scalar(2.0)}), op("Mul", {d, d})}).used_once();
    const Pattern var =
        op("ReduceMean", {sq}).where([](ir::Value* v, const Bindings&) { return reduces_last_axis(v); }).used_once();
    const Pattern denom = op("Sqrt", {commutative("Add", var, constant().bind("eps")).used_once()}).used_once();
    const Pattern norm = op("Div", {d, denom}).used_once();
    const Pattern scaled = commutative("Mul", norm, constant().bind("gamma"));
    // With beta first: the sweep meets the Mul before its Add and must not take it alone when a beta follows.
    const Pattern with_beta = commutative("Add", scaled.used_once(), constant().bind("beta")).bind("root");
    const Pattern without_beta = scaled.bind("root");
    auto fuse = [&](Bindings& b) {
      ir::Value* in = b.value("x");
      if (!dtype_is_float(in->dtype) || !in->rank_known || in->shape.empty() || !in->shape.back().is_static())
        return false;
      const int64_t dim = in->shape.back().value;
      ir::Value* gamma = b.value("gamma");
      ir::Value* beta = b.value("beta");
      auto eps = match::constant_scalar(b.value("eps"));
      if (!eps || b.value("eps")->constant->numel() != 1) return false;
      if (!is_last_axis_vector(gamma, dim) || (beta && !is_last_axis_vector(beta, dim))) return false;
      if (gamma->dtype != in->dtype || (beta && beta->dtype != in->dtype)) return false;
      // LayerNormalization wants Scale and B shaped like the normalized axes.
      auto as_vector = [&](ir::Value* c) {
        if (c->constant->rank() == 1) return c;
        return g.add_constant(c->name + "_vec", c->constant->reshaped({dim}));
      };
      std::vector<ir::Value*> inputs = {in, as_vector(gamma)};
      if (beta) inputs.push_back(as_vector(beta));
      Attributes a;
      a.set("axis", Attribute(int64_t{-1}));
      a.set("epsilon", Attribute(static_cast<float>(*eps)));
      fusion::replace_with_node(g, b.value("root"), "LayerNormalization", "", inputs, std::move(a), 17, "layernorm");
      return true;
    };
    const int n = rewrite(g, with_beta, fuse) + rewrite(g, without_beta, fuse);
    if (n) fusion::prune_dead_nodes(g);
    ctx.changes += n;
    if (n) ctx.verbose("fuse_layernorm: " + std::to_string(n) + " decomposed LayerNorms -> LayerNormalization");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_layernorm() { return std::make_unique<FuseLayerNorm>(); }

}  // namespace kiln::passes
