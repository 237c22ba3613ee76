// fuse_groupnorm pass: GroupNorm as torch.onnx writes it below opset 18 (and for every opset, torch 1.x/2.x's
// TorchScript exporter) -> one GroupNormalization:
//   Reshape(x, [0|N, G, -1|L]) -> InstanceNormalization(scale s[G], bias b[G]) -> Reshape(back to x's shape, by
//   Shape(x) or a constant) -> Mul gamma[C,1,..] -> Add beta[C,1,..]   (the Mul/Add absent without affine).
// The group statistics are InstanceNormalization's over the [N, G, L] view; the per-group s, b and the per-channel
// gamma, beta become one per-channel scale and bias (opset 21's form): scale = s[g(c)] * gamma[c],
// bias = b[g(c)] * gamma[c] + beta[c]. Diffusion UNets and VAEs have one per residual block; each becomes one
// kernel instead of an instance norm over a view, a multiply and an add over the whole activation.
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

class FuseGroupNorm final : public Pass {
 public:
  std::string_view name() const override { return "fuse_groupnorm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    using namespace match;
    const Pattern x = any().bind("x");
    const Pattern grouped = op("Reshape", {x, constant().bind("view")}).used_once();
    const Pattern inorm =
        op("InstanceNormalization", {grouped, constant().bind("s"), constant().bind("b")}).used_once().bind("in");
    const Pattern back = op("Reshape", {inorm, any().bind("back_shape")}).bind("back");
    const Pattern scaled = commutative("Mul", back.used_once(), constant().bind("gamma"));
    const Pattern affine = commutative("Add", scaled.used_once(), constant().bind("beta")).bind("root");
    const Pattern plain = back.bind("root");
    auto fuse = [&](Bindings& b) {
      ir::Value* in = b.value("x");
      if (!dtype_is_float(in->dtype) || !in->rank_known || in->shape.size() < 3 || !in->shape[1].is_static())
        return false;
      const size_t rank = in->shape.size();
      const int64_t c = in->shape[1].value;
      // The view [0 or N, G, -1 or L]: G groups of C/G channels each, batch kept.
      const Tensor& view = *b.value("view")->constant;
      if (view.numel() != 3 || (view.dtype() != DataType::kINT64 && view.dtype() != DataType::kINT32)) return false;
      const std::vector<double> vd = view.to_f64_vector();
      const int64_t groups = static_cast<int64_t>(vd[1]);
      if (groups < 1 || c % groups != 0) return false;
      if (vd[0] != 0 && !(in->shape[0].is_static() && static_cast<int64_t>(vd[0]) == in->shape[0].value)) return false;
      if (vd[2] != -1) {
        int64_t rest = c / groups;
        for (size_t i = 2; i < rank; ++i) {
          if (!in->shape[i].is_static()) return false;
          rest *= in->shape[i].value;
        }
        if (static_cast<int64_t>(vd[2]) != rest) return false;
      }
      // Back to x's shape: Shape(x), or the constant x's static shape folded to.
      ir::Value* back_shape = b.value("back_shape");
      const ir::Node* sp = back_shape->producer;
      const bool by_shape = sp && sp->op_type == "Shape" && sp->domain.empty() && sp->inputs.size() == 1 &&
                            sp->inputs[0] == in && !sp->attrs.has("start") && !sp->attrs.has("end");
      if (!by_shape && !fusion::same_shape(b.value("back"), in)) return false;
      ir::Value* root = b.value("root");
      if (!fusion::same_shape(root, in) || root->dtype != in->dtype) return false;
      // InstanceNormalization's per-group parameters, and gamma/beta along the channel axis ([C, 1, .., 1]).
      const Tensor& s = *b.value("s")->constant;
      const Tensor& bi = *b.value("b")->constant;
      if (s.numel() != groups || bi.numel() != groups) return false;
      auto along_channels = [&](const ir::Value* v) {
        if (!v->is_constant() || !dtype_is_float(v->dtype) || v->constant->numel() != c) return false;
        const auto& cs = v->constant->shape();
        return cs.size() >= rank - 1 && cs.size() <= rank && cs[cs.size() - (rank - 1)] == c;
      };
      ir::Value* gamma = b.value("gamma");
      ir::Value* beta = b.value("beta");
      if (gamma && (!along_channels(gamma) || !beta || !along_channels(beta))) return false;
      auto eps = b.node("in")->attrs.get_float("epsilon", 1e-5f);
      if (!eps.ok()) return false;
      if (ctx.options.has_kernel && !ctx.options.has_kernel("GroupNormalization", "", in->dtype)) return false;
      const std::vector<double> sv = s.to_f64_vector(), bv = bi.to_f64_vector();
      const std::vector<double> gv = gamma ? gamma->constant->to_f64_vector() : std::vector<double>(c, 1.0);
      const std::vector<double> betav = beta ? beta->constant->to_f64_vector() : std::vector<double>(c, 0.0);
      std::vector<float> scale(c), bias(c);
      const int64_t cpg = c / groups;
      for (int64_t ch = 0; ch < c; ++ch) {
        scale[ch] = static_cast<float>(sv[ch / cpg] * gv[ch]);
        bias[ch] = static_cast<float>(bv[ch / cpg] * gv[ch] + betav[ch]);
      }
      const std::string base = root->name;
      ir::Value* sc = g.add_constant(base + "_gn_scale", Tensor::from_vector<float>({c}, scale).cast(in->dtype));
      ir::Value* bs = g.add_constant(base + "_gn_bias", Tensor::from_vector<float>({c}, bias).cast(in->dtype));
      Attributes a;
      a.set("epsilon", Attribute(*eps));
      a.set("num_groups", Attribute(groups));
      fusion::replace_with_node(g, root, "GroupNormalization", "", {in, sc, bs}, std::move(a), 21, "groupnorm");
      return true;
    };
    const int n = rewrite(g, affine, fuse) + rewrite(g, plain, fuse);
    if (n) fusion::prune_dead_nodes(g);
    ctx.changes += n;
    if (n) ctx.verbose("fuse_groupnorm: " + std::to_string(n) + " decomposed GroupNorms -> GroupNormalization");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_groupnorm() { return std::make_unique<FuseGroupNorm>(); }

}  // namespace kiln::passes
