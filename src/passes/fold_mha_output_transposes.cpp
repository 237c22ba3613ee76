// fold_mha_output_transposes pass (CUDA, after fold_mha_input_transposes): torch's batch_first MultiheadAttention
// exports its output side as attention [B,H,S,D] -> Transpose to [S,B,H,D] -> Reshape [S*B, E] -> Gemm out_proj ->
// Reshape [S,B,E] -> Transpose to [B,S,E] -> Add residual. A row-wise GEMM commutes with reordering its rows, so
// the same values come from Transpose to [B,S,H,D] -> Reshape [B,S,E] -> FusedMatMul(out_proj, bias, residual):
// two launches instead of four, and the residual Add inside the GEMM's epilogue.
#include <cstring>

#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using match::perm_is;

namespace m = match;

bool shape_is(const ir::Value* v, size_t rank) { return v && v->rank_known && v->shape.size() == rank; }

class FoldMhaOutputTransposes final : public Pass {
 public:
  std::string_view name() const override { return "fold_mha_output_transposes"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    // op() matches default-domain nodes: FusedAttention (domain kiln) has its own predicate.
    auto any_att = m::Pattern([](ir::Value* v, m::Bindings&) {
      return v->producer && v->producer->domain == "kiln" && v->producer->op_type == "FusedAttention";
    });
    auto gemm = m::op("Gemm", {m::op("Reshape", {m::op("Transpose", {any_att.bind("att")}).bind("t6").used_once()})
                              .bind("r9")
                              .used_once(),
                          m::constant().bind("w")})
               .bind("gemm")
               .used_once();
    auto t7 = m::op("Transpose", {m::op("Reshape", {gemm}).bind("r10").used_once()}).bind("t7").used_once();
    auto root = m::commutative("Add", t7, m::any().bind("residual")).bind("add");
    int n = m::rewrite(g, root, [&](m::Bindings& b) { return rewrite(g, b); });
    if (n) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += n;
      ctx.verbose("fold_mha_output_transposes: " + std::to_string(n) + " attention outputs projected in [B,S,E]");
    }
    return Status::Ok();
  }

 private:
  static bool rewrite(ir::Graph& g, m::Bindings& b) {
    ir::Value* att = b.value("att");
    ir::Node* t6 = b.node("t6");
    ir::Node* gemm = b.node("gemm");
    ir::Node* t7 = b.node("t7");
    ir::Value* residual = b.value("residual");
    ir::Value* y = b.value("add");
    if (!perm_is(t6, {2, 0, 1, 3}) || !perm_is(t7, {1, 0, 2})) return false;
    if (!shape_is(att, 4) || !shape_is(y, 3) || !shape_is(residual, 3)) return false;
    // att [B,H,S,D]; the Add's result [B,S,E] with E = H*D, and the residual of that same shape.
    const auto& a = att->shape;
    if (!a[1].is_static() || !a[3].is_static()) return false;
    const int64_t e = a[1].value * a[3].value;
    if (!(y->shape[0] == a[0]) || !(y->shape[1] == a[2]) || !y->shape[2].is_static() || y->shape[2].value != e)
      return false;
    for (size_t i = 0; i < 3; ++i)
      if (!(residual->shape[i] == y->shape[i])) return false;
    auto ta = gemm->attrs.get_int("transA", 0);
    auto tb = gemm->attrs.get_int("transB", 0);
    auto alpha = gemm->attrs.get_float("alpha", 1.f), beta = gemm->attrs.get_float("beta", 1.f);
    if (!ta.ok() || *ta != 0 || !tb.ok() || !alpha.ok() || *alpha != 1.f || !beta.ok() || *beta != 1.f) return false;
    ir::Value* w = b.value("w");
    if (!w->rank_known || w->shape.size() != 2) return false;
    const int64_t trans_b = *tb;
    ir::Value* bias = gemm->inputs.size() > 2 ? gemm->inputs[2] : nullptr;
    if (bias && (!bias->is_constant() || bias->constant->numel() != e)) return false;

    const DataType dt = y->dtype;
    const std::string base = gemm->name + "_bse";
    Attributes pa;
    pa.set("perm", std::vector<int64_t>{0, 2, 1, 3});
    ir::Node* t = g.add_node("Transpose", g.unique_node_name(base + "_transpose"), {att}, {base + "_bshd"},
                             std::move(pa), 13);
    ir::Value* tv = t->outputs[0];
    tv->dtype = att->dtype;
    tv->shape = {a[0], a[2], a[1], a[3]};
    tv->rank_known = true;
    ir::Value* target = g.add_constant(base + "_shape", Tensor::from_vector<int64_t>({3}, {0, 0, e}));
    ir::Node* r = g.add_node("Reshape", g.unique_node_name(base + "_reshape"), {tv, target}, {base + "_bse"}, {}, 14);
    ir::Value* rv = r->outputs[0];
    rv->dtype = att->dtype;
    rv->shape = y->shape;
    rv->rank_known = true;
    if (bias && bias->constant->shape().size() != 1) {
      Tensor flat(bias->constant->dtype(), {e});
      std::memcpy(flat.raw(), bias->constant->raw(), flat.nbytes());
      bias = g.add_constant(bias->name + "_flat", std::move(flat));
    }
    Attributes ma;
    ma.set("trans_b", trans_b);
    ma.set("activation", std::string("none"));
    ir::Node* mm = g.add_node("FusedMatMul", g.unique_node_name(base), {rv, w, bias, residual}, {y->name + "_fused"},
                              std::move(ma), 1, "kiln");
    m::record_fusion(mm, {t6, b.node("r9"), gemm, b.node("r10"), t7, b.node("add")});
    ir::Value* out = mm->outputs[0];
    out->dtype = dt;
    out->shape = y->shape;
    out->rank_known = true;
    // The fused node produces the Add's value itself (its name may be what later layers or outputs read).
    ir::Node* add = b.node("add");
    g.remove_node(add);
    mm->outputs[0] = y;
    y->producer = mm;
    g.remove_value(out);
    g.rebuild_links();
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_mha_output_transposes() { return std::make_unique<FoldMhaOutputTransposes>(); }

}  // namespace kiln::passes
