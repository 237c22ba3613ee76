// fuse_conv_epilogue pass: Conv [+ per-channel constant bias] [+ same-shaped residual] [+ activation] becomes one
// kiln FusedConv, so the CUDA backend runs the epilogue inside (or right behind) the convolution.
#include <cmath>
#include <limits>

#include "ops/layout_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

namespace m = match;
using ops::Activation;

bool same_shape(const ir::Value* a, const ir::Value* b) {
  if (!a->rank_known || !b->rank_known || a->shape.size() != b->shape.size()) return false;
  for (size_t i = 0; i < a->shape.size(); ++i)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

// A constant that broadcasts as one value per channel (axis 1) over the convolution output `y`.
bool per_channel(const ir::Value* c, const ir::Value* y) {
  if (!c->is_constant() || c->dtype != y->dtype || !y->rank_known || y->shape.size() < 2) return false;
  const auto& cs = c->constant->shape();
  const size_t r = y->shape.size();
  if (cs.size() > r) return false;
  for (size_t i = 0; i < cs.size(); ++i) {
    size_t axis = r - cs.size() + i;
    if (cs[i] == 1) continue;
    if (axis != 1 || !y->shape[1].is_static() || cs[i] != y->shape[1].value) return false;
  }
  return true;
}

// The convolution and its optional bias and residual adds, longest first; `inner` decides how the top value is
// guarded (used once, or twice for x * f(x) activations).
struct Chains {
  m::Pattern conv = m::op("Conv").bind("conv");
  m::Pattern biased = m::commutative("Add", conv.used_once(), m::constant().bind("bias"))
                          .where([](ir::Value* v, const m::Bindings& b) { return per_channel(b.value("bias"), v); })
                          .bind("badd");
  m::Pattern residual = m::commutative("Add", m::either({biased.used_once(), conv.used_once()}), m::any().bind("z"))
                            .where([](ir::Value* v, const m::Bindings& b) {
                              const ir::Value* z = b.value("z");
                              return !z->is_constant() && same_shape(z, v) && z->dtype == v->dtype;
                            })
                            .bind("radd");
  std::vector<m::Pattern> all() const { return {residual, biased, conv}; }
};

class FuseConvEpilogue final : public Pass {
 public:
  std::string_view name() const override { return "fuse_conv_epilogue"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    Chains c;
    m::Pattern once = m::either(c.all()).used_once();
    m::Pattern twice = m::either(c.all()).used_times(2).bind("x");
    std::vector<m::Pattern> acts = m::activation_forms(once, twice);
    int n = 0;
    // Phases, longest chains first: the sweep visits a bias Add before the Relu after it, so a shorter root
    // tried in the same sweep would take the Add and leave the activation outside.
    n += m::rewrite(g, m::either(acts), [&](m::Bindings& b) { return fuse(g, b); });
    n += m::rewrite(g, c.residual, [&](m::Bindings& b) { return fuse(g, b); });
    n += m::rewrite(g, c.biased, [&](m::Bindings& b) { return fuse(g, b); });
    if (n > 0) KILN_RETURN_IF_ERROR(g.topo_sort());
    g.prune_values();
    ctx.changes += n;
    return Status::Ok();
  }

 private:
  static bool fuse(ir::Graph& g, m::Bindings& b) {
    ir::Node* conv = b.node("conv");
    if (!conv || conv->inputs.size() < 2 || !conv->inputs[0] || !conv->inputs[1]) return false;
    ir::Value* y = conv->outputs[0];
    Attributes a = conv->attrs;
    if (!m::activation_attrs(b, a)) return false;
    // The root is the last matched value: its node goes, the fused node produces it under the same name.
    ir::Value* root = b.value("act") ? b.value("act") : b.value("radd") ? b.value("radd") : b.value("badd");
    if (!root || !same_shape(root, y)) return false;

    ir::Value* bias = conv->inputs.size() > 2 ? conv->inputs[2] : nullptr;
    if (ir::Value* extra = b.value("bias")) {
      if (bias && !bias->is_constant()) return false;
      const int64_t ch = y->shape[1].value;
      std::vector<double> sum(ch);
      for (int64_t i = 0; i < ch; ++i) {
        double e = extra->constant->numel() == 1 ? extra->constant->get_f64(0) : extra->constant->get_f64(i);
        sum[i] = e + (bias ? bias->constant->get_f64(i) : 0.0);
      }
      bias = g.add_constant(extra->name + "_conv_bias", Tensor::from_vector<double>({ch}, sum).cast(y->dtype));
    }
    std::vector<ir::Value*> in = {conv->inputs[0], conv->inputs[1], bias};
    if (ir::Value* z = b.value("z")) in.push_back(z);
    while (in.size() > 2 && !in.back()) in.pop_back();

    std::vector<ir::Node*> dead;
    for (const char* k : {"act", "gate", "radd", "badd", "conv"})
      if (ir::Node* n = b.node(k)) dead.push_back(n);
    std::string name = conv->name;
    ir::Node* fused = g.add_node("FusedConv", name + "_fused", in, {root->name + "_fused"}, std::move(a), 1, "kiln");
    m::record_fusion(fused, std::vector<const ir::Node*>(dead.rbegin(), dead.rend()));
    m::finish_fusion(g, fused, root, dead);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_conv_epilogue() { return std::make_unique<FuseConvEpilogue>(); }

}  // namespace kiln::passes
