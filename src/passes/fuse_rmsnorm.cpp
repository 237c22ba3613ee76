// fuse_rmsnorm pass: RMSNorm decomposed as exporters write it below opset 23 (Llama, T5, Mistral) ->
// RMSNormalization:
//   y = weight * (x / sqrt(mean(x^2, axis=-1, keepdims) + eps))
// with x^2 as Pow(x, 2) or Mul(x, x), the division as Div(x, Sqrt(.)) or x * rsqrt(.) (Reciprocal(Sqrt(.)),
// Div(1, Sqrt(.)), Pow(., -0.5)) and the weight on either side. HF's LlamaRMSNorm computes in float32 between
// Casts, weight * Cast(norm(Cast(x, float32)), float16); T5 squares Cast(x) but divides x itself. The fused node
// reads x and its weight directly when the Cast to float32 only widens and the result is in x's type again (the
// kernels accumulate in float32 anyway); otherwise the part inside the Casts is fused. Without a weight Mul, the
// scale is a vector of ones.
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

class FuseRmsNorm final : public Pass {
 public:
  std::string_view name() const override { return "fuse_rmsnorm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    using namespace match;
    // x is the numerator; the squared value is x or a Cast of x (T5). fuse() looks through a widening Cast
    // before x (LlamaRMSNorm's hidden_states.to(float32)).
    const Pattern x = any().bind("x");
    const Pattern sqin = any().bind("sqin");  // checked in fuse(): matching it against x here would depend on order
    const Pattern sq = either({op("Pow", {sqin, fusion::one_scalar(2.0)}), op("Mul", {sqin, sqin})}).used_once();
    const Pattern ms = op("ReduceMean", {sq})
                           .where([](ir::Value* v, const Bindings&) { return fusion::reduces_last_axis(v); })
                           .used_once();
    const Pattern norm = fusion::div_by_sqrt(x, commutative("Add", ms, constant().bind("eps")).used_once());
    // The Cast back after the normalization (LlamaRMSNorm's hidden_states.to(input_dtype)).
    const Pattern cast_back = op("Cast", {norm.used_once()});
    // Largest forms first: the sweep meets the inner nodes first and must not take them alone when more follows.
    const Pattern weighted_cast = commutative("Mul", cast_back.used_once(), constant().bind("weight")).bind("root");
    const Pattern weighted = commutative("Mul", norm.used_once(), constant().bind("weight")).bind("root");
    const Pattern unweighted_cast = cast_back.bind("root");
    const Pattern unweighted = norm.bind("root");

    auto fuse = [&](Bindings& b) {
      ir::Value* root = b.value("root");
      ir::Value* in = b.value("x");
      const DataType out = root->dtype;
      ir::Value* sv = b.value("sqin");
      const ir::Node* sq_cast = match::producer_op(sv, "Cast");
      if (sv != in && !(sq_cast && sq_cast->inputs[0] == in)) return false;
      if (!dtype_is_float(out) || !fusion::widens(in->dtype, sv->dtype)) return false;
      // x a widening Cast of a value in the result's type (LlamaRMSNorm's Casts around the float32 compute, or
      // no-op Casts of a float32 export): read the value before the Cast, as the kernels accumulate in float32 (or
      // double) whatever the input type.
      const ir::Node* c = match::producer_op(in, "Cast");
      if (c && c->inputs[0]->dtype == out && fusion::widens(out, in->dtype))
        in = c->inputs[0];
      else if (in->dtype != out)
        return false;
      if (!in || !in->rank_known || in->shape.empty() || !in->shape.back().is_static()) return false;
      // Nothing in the chain may broadcast the result beyond the input's shape.
      if (!fusion::same_shape(root, in)) return false;
      const int64_t dim = in->shape.back().value;
      auto eps = match::constant_scalar(b.value("eps"));
      if (!eps || b.value("eps")->constant->numel() != 1) return false;
      ir::Value* w = b.value("weight");
      if (w && (!fusion::is_last_axis_vector(w, dim, in->shape.size()) || w->dtype != out)) return false;
      if (ctx.options.has_kernel && !ctx.options.has_kernel("RMSNormalization", "", out)) return false;
      ir::Value* scale = nullptr;
      if (!w) {
        const Tensor ones = Tensor::from_vector<float>({dim}, std::vector<float>(static_cast<size_t>(dim), 1.0f));
        scale = g.add_constant(root->name + "_ones", ones.cast(out));
      } else if (w->constant->rank() == 1) {
        scale = w;
      } else {
        scale = g.add_constant(w->name + "_vec", w->constant->reshaped({dim}));
      }
      Attributes a;
      a.set("axis", Attribute(int64_t{-1}));
      a.set("epsilon", Attribute(static_cast<float>(*eps)));
      fusion::replace_with_node(g, root, "RMSNormalization", "", {in, scale}, std::move(a), 23, "rmsnorm");
      return true;
    };
    const int n = rewrite(g, weighted_cast, fuse) + rewrite(g, weighted, fuse) + rewrite(g, unweighted_cast, fuse) +
                  rewrite(g, unweighted, fuse);
    if (n) fusion::prune_dead_nodes(g);
    ctx.changes += n;
    if (n) ctx.verbose("fuse_rmsnorm: " + std::to_string(n) + " decomposed RMSNorms -> RMSNormalization");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_rmsnorm() { return std::make_unique<FuseRmsNorm>(); }

}  // namespace kiln::passes
