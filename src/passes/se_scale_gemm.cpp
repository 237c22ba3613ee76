// se_scale_gemm pass (CUDA, after conv1x1_as_gemm): a squeeze-excitation scale x * s (x [N, H, W, C], s [N, 1, 1, C])
// read only by a GEMM with a constant weight, Y = (x * s) · Wᵀ with W [M, C], is computed with per-sample scaled
// weights instead: Ws[n, m, c] = s[n, c] · W[m, c] (one small broadcast Mul, [N, 1, M, C]) and one batched GEMM
// x · Wsᵀ over n (bias, activation and residual stay in its epilogue). The multiply over the largest tensor of an
// efficientnet block (a read and a write of N*H*W*C elements) becomes one over N*M*C elements.
//
// Rule: only where M * 4 <= H*W. Ws costs N*M*C elements written and read back by the GEMM, against N*H*W*C read
// and written by the activation multiply it replaces, so the saving is at least 3/4 of that traffic; and each
// sample's GEMM still has H*W >= 4*M rows, so its tiles stay full. efficientnet_b0's early stages qualify (H*W = 12544,
// 3136, 784 with M = 16, 24, 40); the 14x14 and 7x7 ones (M = 80..320) do not, and there the unbatched GEMM, whose
// rows run through all N samples, is the better shape anyway.
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// Smallest H*W / M at which the rewrite is taken (see the rule above).
constexpr int64_t kMinRowsPerOutputChannel = 4;

bool middle_all_ones(const ir::Value* v) {
  const auto& s = v->shape;
  for (size_t i = 1; i + 1 < s.size(); ++i)
    if (!(s[i].is_static() && s[i].value == 1)) return false;
  return true;
}

// x: [N, spatial..., C] with at least one spatial dim other than 1.
bool feature_map(ir::Value* v, const match::Bindings&) {
  return v->rank_known && v->shape.size() >= 3 && !middle_all_ones(v);
}

// s: [N, 1..., C].
bool channel_scale(ir::Value* v, const match::Bindings&) {
  return v->rank_known && v->shape.size() >= 3 && middle_all_ones(v);
}

class SeScaleGemm final : public Pass {
 public:
  std::string_view name() const override { return "se_scale_gemm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    auto root = match::commutative("Mul", match::any().where(feature_map).bind("x"),
                                   match::any().where(channel_scale).bind("s"))
                    .used_once()
                    .bind("mul");
    const int n = match::rewrite(g, root, [&](match::Bindings& b) { return rewrite_one(g, b); });
    if (n > 0) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += n;
      ctx.verbose("se_scale_gemm: " + std::to_string(n) + " channel scales folded into per-sample GEMM weights");
    }
    return Status::Ok();
  }

 private:
  static bool rewrite_one(ir::Graph& g, match::Bindings& b) {
    ir::Value* x = b.value("x");
    ir::Value* s = b.value("s");
    ir::Value* scaled = b.value("mul");
    ir::Node* mul = b.node("mul");
    ir::Node* gemm = scaled->users[0];
    if (gemm->op_type != "FusedMatMul" || gemm->domain != "kiln" || gemm->inputs.size() < 2 ||
        gemm->inputs[0] != scaled)
      return false;
    auto tb = gemm->attrs.get_int("trans_b", 0);
    if (!tb.ok() || *tb != 1) return false;
    const ir::Value* w = gemm->inputs[1];
    if (!w->is_constant() || w->constant->rank() != 2) return false;
    const int64_t m = w->constant->dim(0), c = w->constant->dim(1);
    // Same type throughout: the scaled weights are made in the type the scaled activation had (FP16 after lowering).
    const DataType dt = scaled->dtype;
    if (x->dtype != dt || s->dtype != dt || w->dtype != dt || !dtype_is_float(dt)) return false;
    const size_t r = x->shape.size();
    if (s->shape.size() != r || !scaled->rank_known || scaled->shape != x->shape) return false;
    if (!(x->shape[0] == s->shape[0]) || !x->shape[r - 1].is_static() || x->shape[r - 1].value != c ||
        !(s->shape[r - 1] == x->shape[r - 1]))
      return false;
    int64_t rows = 1;  // H*W: each sample's GEMM rows
    for (size_t i = 1; i + 1 < r; ++i) {
      if (!x->shape[i].is_static()) return false;
      rows *= x->shape[i].value;
    }
    if (m * kMinRowsPerOutputChannel > rows) return false;

    // Ws = s [N, 1..., 1, C] * W [M, C] -> [N, 1..., M, C]: B of the batched GEMM, still read with trans_b.
    ir::Value* ws = g.add_node("Mul", g.unique_node_name(mul->name + "_weights"), {s, gemm->inputs[1]},
                               {scaled->name + "_weights"}, {}, mul->opset)
                        ->outputs[0];
    ws->dtype = dt;
    ws->shape = s->shape;
    ws->shape[r - 2] = m;
    ws->rank_known = true;
    match::record_fusion(gemm, {gemm, mul});
    g.set_node_input(gemm, 0, x);
    g.set_node_input(gemm, 1, ws);
    g.remove_node(mul);
    g.remove_value(scaled);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_se_scale_gemm() { return std::make_unique<SeScaleGemm>(); }

}  // namespace kiln::passes
