// fuse_layernorm pass: LayerNorm decomposed as exporters write it below opset 17 -> LayerNormalization:
//   torch: ReduceMean, Sub, Pow 2 (or Mul d*d), ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta; the Div also as
//          d * Reciprocal(Sqrt(.)), d * (1 / Sqrt(.)) or d * Pow(., -0.5); in float16 models with d Cast to
//          float32 and the normalized value Cast back;
//   tf2onnx (tf.keras 2 LayerNormalization, through tf.nn.batch_normalization):
//          s = rsqrt(var + eps) * gamma, y = x * s + (beta - mean * s).
// The torch form may also normalize one other axis, gamma and beta [C,1,..,1] along it: HF ConvNextLayerNorm's
// channels_first (mean and variance over the channels of NCHW), as SAM's and Detectron2's LayerNorm2d compute it.
// LayerNormalization normalizes every axis from `axis` on, so that becomes Transpose(channels last) ->
// LayerNormalization -> Transpose back; next to NHWC convolutions layout_nhwc cancels those Transposes.
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

class FuseLayerNorm final : public Pass {
 public:
  std::string_view name() const override { return "fuse_layernorm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    using namespace match;
    const Pattern x = any().bind("x");
    const Pattern mean =
        op("ReduceMean", {x})
            .where([](ir::Value* v, const Bindings&) { return fusion::reduced_single_axis(v).has_value(); })
            .bind("mean");
    // torch.onnx below opset 17 on float16 squares and divides Cast(x - mean, float32), and Casts the result back
    // before gamma; the fused node computes in float32 anyway.
    const Pattern dsub = op("Sub", {x, mean}).bind("dsub");
    const Pattern d = either({op("Cast", {dsub}), dsub}).bind("d");
    const Pattern sq = either({op("Pow", {d, fusion::one_scalar(2.0)}), op("Mul", {d, d})}).used_once();
    const Pattern var =
        op("ReduceMean", {sq})
            .where([](ir::Value* v, const Bindings&) { return fusion::reduced_single_axis(v).has_value(); })
            .used_once()
            .bind("var");
    const Pattern var_eps = commutative("Add", var, constant().bind("eps")).used_once();
    const Pattern norm = fusion::div_by_sqrt(d, var_eps).used_once();
    const Pattern scaled =
        commutative("Mul", either({op("Cast", {norm}).used_once(), norm}), constant().bind("gamma"));
    // With beta first: the sweep meets the Mul before its Add and must not take it alone when a beta follows.
    const Pattern with_beta = commutative("Add", scaled.used_once(), constant().bind("beta")).bind("root");
    const Pattern without_beta = scaled.bind("root");
    // tf2onnx's form: d only feeds the square; s (and mean) are read twice, both times inside the pattern.
    const Pattern s = commutative("Mul", fusion::rsqrt_of(var_eps).used_once(), constant().bind("gamma")).bind("s");
    const Pattern tf = commutative("Add", commutative("Mul", x, s).used_once(),
                                   op("Sub", {constant().bind("beta"), commutative("Mul", mean, s).used_once()})
                                       .used_once())
                           .bind("root");
    auto fuse = [&](Bindings& b) {
      ir::Value* in = b.value("x");
      if (!dtype_is_float(in->dtype) || !in->rank_known || in->shape.empty() || !in->shape.back().is_static())
        return false;
      const size_t rank = in->shape.size();
      // Both statistics over the same one axis: the last, or (torch form only) a channel axis.
      const auto axis = fusion::reduced_single_axis(b.value("mean"));
      if (!axis || fusion::reduced_single_axis(b.value("var")) != axis) return false;
      const bool last = *axis == static_cast<int64_t>(rank) - 1;
      if (!last && (b.node("s") || !in->shape[*axis].is_static())) return false;
      const int64_t dim = in->shape[*axis].value;
      // Nothing in the chain may broadcast the result beyond x's shape (LayerNormalization keeps it).
      if (!fusion::same_shape(b.value("root"), in) || b.value("root")->dtype != in->dtype) return false;
      if (!fusion::widens(in->dtype, b.value("d")->dtype)) return false;
      ir::Value* gamma = b.value("gamma");
      ir::Value* beta = b.value("beta");
      auto eps = match::constant_scalar(b.value("eps"));
      if (!eps || b.value("eps")->constant->numel() != 1) return false;
      // Vectors along the axis: [.., dim] for the last one, [.., dim, 1, .., 1] (no longer than x) for another.
      auto along = [&](const ir::Value* c) {
        if (last) return fusion::is_last_axis_vector(c, dim, rank);
        if (!c->is_constant() || !dtype_is_float(c->dtype) || c->constant->numel() != dim) return false;
        const auto& cs = c->constant->shape();
        const size_t from_end = rank - static_cast<size_t>(*axis);
        return cs.size() >= from_end && cs.size() <= rank && cs[cs.size() - from_end] == dim;
      };
      if (!along(gamma) || (beta && !along(beta))) return false;
      if (gamma->dtype != in->dtype || (beta && beta->dtype != in->dtype)) return false;
      if (ctx.options.has_kernel && (!ctx.options.has_kernel("LayerNormalization", "", in->dtype) ||
                                     (!last && !ctx.options.has_kernel("Transpose", "", in->dtype))))
        return false;
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
      if (last) {
        fusion::replace_with_node(g, b.value("root"), "LayerNormalization", "", inputs, std::move(a), 17, "layernorm");
        return true;
      }
      // The axis moved last, normalized there, moved back.
      std::vector<int64_t> perm, back(rank);
      for (size_t i = 0; i < rank; ++i)
        if (static_cast<int64_t>(i) != *axis) perm.push_back(static_cast<int64_t>(i));
      perm.push_back(*axis);
      for (size_t i = 0; i < rank; ++i) back[perm[i]] = static_cast<int64_t>(i);
      const std::string base = b.value("root")->name;
      Attributes ta;
      ta.set("perm", Attribute(perm));
      ir::Node* t = g.add_node("Transpose", g.unique_node_name(base + "_axis_last"), {in}, {base + "_axis_last"},
                               std::move(ta), 13);
      ir::Value* moved = t->outputs[0];
      moved->dtype = in->dtype;
      moved->rank_known = true;
      for (int64_t p : perm) moved->shape.push_back(in->shape[p]);
      inputs[0] = moved;
      ir::Node* ln = g.add_node("LayerNormalization", g.unique_node_name(base + "_layernorm"), inputs,
                                {base + "_normalized"}, std::move(a), 17);
      ln->outputs[0]->dtype = in->dtype;
      ln->outputs[0]->rank_known = true;
      ln->outputs[0]->shape = moved->shape;
      Attributes tb;
      tb.set("perm", Attribute(back));
      fusion::replace_with_node(g, b.value("root"), "Transpose", "", {ln->outputs[0]}, std::move(tb), 13,
                                "layernorm_axis_back", {in});
      return true;
    };
    const int n = rewrite(g, tf, fuse) + rewrite(g, with_beta, fuse) + rewrite(g, without_beta, fuse);
    if (n) fusion::prune_dead_nodes(g);
    ctx.changes += n;
    if (n) ctx.verbose("fuse_layernorm: " + std::to_string(n) + " decomposed LayerNorms -> LayerNormalization");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_layernorm() { return std::make_unique<FuseLayerNorm>(); }

}  // namespace kiln::passes
