// fuse_matmul_epilogue pass: MatMul/Gemm followed by a bias Add, an activation (Relu, Gelu, GELU's decomposed
// forms; with PassOptions::matmul_sigmoid_acts also Sigmoid and SiLU as x * Sigmoid(x) after a MatMul) and a
// residual Add -> one kiln::FusedMatMul, which the CUDA backend runs as a cuBLASLt epilogue (or a cuDNN graph).
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using match::Bindings;
using match::Pattern;

bool float_matmul_operands(const ir::Node* mm) {
  const ir::Value *a = mm->inputs[0], *b = mm->inputs[1];
  return a && b && dtype_is_float(a->dtype) && a->dtype == b->dtype && a->rank_known && b->rank_known &&
         a->shape.size() >= 2 && b->shape.size() >= 2;
}

// A bias that adds one value per output column: a constant [N] or [1,..,1,N] no longer than the output's rank.
ir::Value* column_bias(ir::Graph& g, ir::Value* c, const ir::Value* out) {
  if (!c || !c->is_constant() || c->dtype != out->dtype || !out->rank_known || out->shape.empty()) return nullptr;
  const ops::Dim& n = out->shape.back();
  const auto& s = c->constant->shape();
  if (!n.is_static() || s.empty() || s.size() > out->shape.size() || s.back() != n.value ||
      c->constant->numel() != n.value)
    return nullptr;
  if (s.size() == 1) return c;
  return g.add_constant(c->name + "_vec", c->constant->reshaped({n.value}));
}

std::string act_of(const ir::Node* n) {
  if (n->op_type == "Relu") return "relu";
  if (n->op_type == "Gelu") {
    auto m = n->attrs.get_string("approximate", "none");
    if (!m.ok()) return "";
    return *m == "tanh" ? "gelu_tanh" : *m == "none" ? "gelu_erf" : "";
  }
  return "";
}

// A FusedMatMul with no activation or residual yet, whatever reads it.
Pattern no_epilogue_fused() {
  return fusion::domain_op("FusedMatMul", "kiln").where([](ir::Value* v, const Bindings&) {
    const ir::Node* n = v->producer;
    auto act = n->attrs.get_string("activation", "none");
    return act.ok() && *act == "none" && n->inputs.size() < 4;
  });
}

// A FusedMatMul to which more epilogue may be added: its result feeds one node only, no activation or residual yet.
Pattern open_fused() { return no_epilogue_fused().used_once(); }

std::vector<ir::Value*> inputs_of(const ir::Node* n) { return {n->inputs.begin(), n->inputs.end()}; }

// The matched MatMul or FusedMatMul ("mm") and the activation after it ("root") become one FusedMatMul that applies
// `act` in its epilogue; the product keeps its other attributes (bias, trans_b) where it was fused already.
void take_activation(ir::Graph& g, match::Bindings& b, const std::string& act) {
  ir::Node* m = b.node("mm");
  Attributes at = m->domain == "kiln" ? m->attrs : Attributes{};
  at.set("activation", Attribute(act));
  fusion::replace_with_node(g, b.value("root"), "FusedMatMul", "kiln", inputs_of(m), std::move(at), 1,
                            m->name + "_act");
}

// GPT-2's Conv1D exports as Reshape([-1,E]) -> Gemm -> Reshape([B,S,N]) -> activation. The activation is
// elementwise, so it moves above the Reshape onto the GEMM's result, where the epilogue rules take it: Relu/Gelu
// whose input is a Reshape read by it alone, of a GEMM result read by that Reshape alone.
int activation_above_reshape(ir::Graph& g) {
  g.rebuild_links();  // users as they are now, after the rewrites before
  std::vector<ir::Node*> acts;
  for (const auto& node : g.nodes())
    if ((node->op_type == "Relu" || node->op_type == "Gelu") && node->domain.empty() && node->inputs.size() == 1 &&
        node->outputs.size() == 1)
      acts.push_back(node.get());
  int n = 0;
  for (ir::Node* a : acts) {
    ir::Value *r = a->inputs[0], *z = a->outputs[0];
    ir::Node* reshape = r ? r->producer : nullptr;
    if (!reshape || reshape->op_type != "Reshape" || !reshape->domain.empty() || r->users.size() != 1 ||
        match::is_graph_output(g, r) || match::is_graph_output(g, z))
      continue;
    ir::Value* x = reshape->inputs[0];
    const ir::Node* p = x->producer;
    if (!p || x->users.size() != 1 || match::is_graph_output(g, x) || x->dtype != z->dtype ||
        !(p->domain.empty() ? p->op_type == "Gemm" || p->op_type == "MatMul"
                            : p->domain == "kiln" && p->op_type == "FusedMatMul"))
      continue;
    ir::Node* moved = g.add_node(a->op_type, g.unique_node_name(a->name + "_above_reshape"), {x},
                                 {z->name + "_above_reshape"}, a->attrs, a->opset, a->domain);
    ir::Value* y = moved->outputs[0];
    y->dtype = x->dtype;
    y->shape = x->shape;
    y->rank_known = x->rank_known;
    g.set_node_input(reshape, 0, y);
    g.remove_node(a);
    g.replace_all_uses(z, r);
    ++n;
  }
  if (n) g.rebuild_links();
  return n;
}

// The same for a residual: Add(Reshape(x), res) with x a rank-2 [M, N] GEMM result read by that Reshape alone and res
// of the Add's own shape (no broadcast) becomes Reshape(Add(x, Reshape(res, [-1, N]))): res's rows are x's rows
// (both are the same [M, N] bytes), and the residual rule below then takes the Add into the GEMM's epilogue.
// GPT-2's Conv1D projections and torch 1.x attention out_proj Gemms are followed by such Reshape + residual Adds.
int residual_above_reshape(ir::Graph& g) {
  g.rebuild_links();
  std::vector<ir::Node*> adds;
  for (const auto& node : g.nodes())
    if (node->op_type == "Add" && node->domain.empty() && node->inputs.size() == 2 && node->outputs.size() == 1)
      adds.push_back(node.get());
  int n = 0;
  for (ir::Node* a : adds) {
    ir::Value* z = a->outputs[0];
    for (int side = 0; side < 2; ++side) {
      ir::Value *r = a->inputs[side], *res = a->inputs[1 - side];
      ir::Node* reshape = r ? r->producer : nullptr;
      if (!reshape || reshape->op_type != "Reshape" || !reshape->domain.empty() || r->users.size() != 1 ||
          match::is_graph_output(g, r) || !res || res == r || !fusion::same_shape(res, z) ||
          !fusion::same_shape(r, z) || res->dtype != z->dtype)
        continue;
      ir::Value* x = reshape->inputs[0];
      const ir::Node* p = x->producer;
      if (!p || x->users.size() != 1 || match::is_graph_output(g, x) || x->dtype != z->dtype || !x->rank_known ||
          x->shape.size() != 2 || !x->shape[1].is_static() || !z->rank_known || z->shape.empty() ||
          !(z->shape.back() == x->shape[1]) ||
          !(p->domain.empty() ? p->op_type == "Gemm" || p->op_type == "MatMul"
                              : p->domain == "kiln" && p->op_type == "FusedMatMul"))
        continue;
      const int64_t cols = x->shape[1].value;
      ir::Value* rows = g.add_constant(res->name + "_rows_shape", Tensor::from_vector<int64_t>({2}, {-1, cols}));
      ir::Node* rr = g.add_node("Reshape", g.unique_node_name(res->name + "_rows"), {res, rows},
                                {res->name + "_rows"}, {}, 14);
      ir::Value* res2 = rr->outputs[0];
      res2->dtype = res->dtype;
      res2->shape = x->shape;
      res2->rank_known = true;
      ir::Node* moved = g.add_node("Add", g.unique_node_name(a->name + "_above_reshape"), {x, res2},
                                   {z->name + "_above_reshape"}, a->attrs, a->opset, a->domain);
      ir::Value* y = moved->outputs[0];
      y->dtype = x->dtype;
      y->shape = x->shape;
      y->rank_known = true;
      g.set_node_input(reshape, 0, y);
      g.remove_node(a);
      g.replace_all_uses(z, r);
      ++n;
      break;
    }
  }
  if (n) g.rebuild_links();
  return n;
}

class FuseMatMulEpilogue final : public Pass {
 public:
  std::string_view name() const override { return "fuse_matmul_epilogue"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    using namespace match;
    // Standing alone, this pass must see decomposed GELUs as Gelu too (in the CUDA pipeline fuse_gelu ran already).
    int gelus = fusion::fuse_gelu_forms(g);
    int n = 0;

    // MatMul + bias.
    const Pattern mm =
        op("MatMul").where([](ir::Value* v, const Bindings&) { return float_matmul_operands(v->producer); });
    n += rewrite(g, commutative("Add", mm.bind("mm").used_once(), constant().bind("bias")).bind("root"),
                 [&](Bindings& b) {
                   ir::Value* bias = column_bias(g, b.value("bias"), b.value("root"));
                   if (!bias) return false;
                   ir::Node* m = b.node("mm");
                   fusion::replace_with_node(g, b.value("root"), "FusedMatMul", "kiln",
                                             {m->inputs[0], m->inputs[1], bias}, {}, 1, m->name + "_fused");
                   return true;
                 });
    fusion::prune_dead_nodes(g);

    const int moved = activation_above_reshape(g);
    if (moved) {
      Status st = g.topo_sort();  // the moved activations were appended after their Reshapes
      if (!st.ok()) return st;
    }

    // Gemm (+ C as a column bias) + activation. transA has no FusedMatMul form.
    const Pattern gemm = op("Gemm").where([](ir::Value* v, const Bindings&) {
      const ir::Node* n = v->producer;
      auto ta = n->attrs.get_int("transA", 0);
      auto beta = n->attrs.get_float("beta", 1.0f);
      return ta.ok() && *ta == 0 && beta.ok() && (n->inputs.size() < 3 || !n->inputs[2] || *beta == 1.0f) &&
             float_matmul_operands(n);
    });
    n += rewrite(g, op_any({"Relu", "Gelu"}, {gemm.bind("gemm").used_once()}).bind("root"), [&](Bindings& b) {
      ir::Node* ge = b.node("gemm");
      const std::string a = act_of(b.node("root"));
      if (a.empty()) return false;
      std::vector<ir::Value*> in = {ge->inputs[0], ge->inputs[1]};
      if (ge->inputs.size() > 2 && ge->inputs[2]) {
        ir::Value* bias = column_bias(g, ge->inputs[2], ge->outputs[0]);
        if (!bias) return false;
        in.push_back(bias);
      }
      Attributes at;
      at.set("activation", Attribute(a));
      auto alpha = ge->attrs.get_float("alpha", 1.0f);
      auto tb = ge->attrs.get_int("transB", 0);
      if (!alpha.ok() || !tb.ok()) return false;
      at.set("alpha", Attribute(alpha.value()));
      at.set("trans_b", Attribute(tb.value()));
      fusion::replace_with_node(g, b.value("root"), "FusedMatMul", "kiln", in, std::move(at), 1, ge->name + "_fused");
      return true;
    });
    fusion::prune_dead_nodes(g);

    // Activation after a bias-fused MatMul, or after a bare MatMul.
    n += rewrite(g, op_any({"Relu", "Gelu"}, {either({open_fused(), mm.used_once()}).bind("mm")}).bind("root"),
                 [&](Bindings& b) {
                   const std::string a = act_of(b.node("root"));
                   if (a.empty()) return false;
                   take_activation(g, b, a);
                   return true;
                 });
    fusion::prune_dead_nodes(g);

    // SiLU and sigmoid, only where cuDNN's fused matmul may run them (not with KILN_DNN_MATMUL=0; cuBLASLt has no such
    // epilogue). SiLU's product is read twice, by the Sigmoid and the Mul, and by nothing else.
    if (ctx.options.matmul_sigmoid_acts) {
      const Pattern src = either({no_epilogue_fused(), mm}).where([&g](ir::Value* v, const Bindings&) {
        return v->users.size() == 2 && !match::is_graph_output(g, v);
      });
      const Pattern silu = commutative("Mul", src.bind("mm"), op("Sigmoid", {src.bind("mm")}).used_once());
      const Pattern sig = op("Sigmoid", {either({open_fused(), mm.used_once()}).bind("mm")});
      for (const auto& [form, p] : {std::pair<const char*, Pattern>{"silu", silu}, {"sigmoid", sig}})
        n += rewrite(g, p.bind("root"), [&, act = std::string(form)](Bindings& b) {
          take_activation(g, b, act);
          return true;
        });
      fusion::prune_dead_nodes(g);
    }

    // A residual Add after a Reshape of a GEMM result moves above the Reshape (see residual_above_reshape).
    const int res_moved = residual_above_reshape(g);
    if (res_moved) {
      Status st = g.topo_sort();
      if (!st.ok()) return st;
    }

    // A plain Gemm (no activation: the rules above took those) with a residual: a FusedMatMul with alpha, trans_b,
    // its C as the bias, then the residual rule below adds the residual.
    n += rewrite(g, commutative("Add", gemm.bind("gemm").used_once(), any().bind("res")).bind("root"),
                 [&](Bindings& b) {
                   ir::Node* ge = b.node("gemm");
                   ir::Value* res = b.value("res");
                   ir::Value* out = ge->outputs[0];
                   if (res == out || res->dtype != out->dtype || !fusion::same_shape(res, out) ||
                       !fusion::same_shape(b.value("root"), out))
                     return false;
                   std::vector<ir::Value*> in = {ge->inputs[0], ge->inputs[1], nullptr, res};
                   if (ge->inputs.size() > 2 && ge->inputs[2]) {
                     in[2] = column_bias(g, ge->inputs[2], out);
                     if (!in[2]) return false;
                   }
                   auto alpha = ge->attrs.get_float("alpha", 1.0f);
                   auto tb = ge->attrs.get_int("transB", 0);
                   if (!alpha.ok() || !tb.ok()) return false;
                   Attributes at;
                   at.set("alpha", Attribute(alpha.value()));
                   at.set("trans_b", Attribute(tb.value()));
                   fusion::replace_with_node(g, b.value("root"), "FusedMatMul", "kiln", in, std::move(at), 1,
                                             ge->name + "_res");
                   return true;
                 });
    fusion::prune_dead_nodes(g);

    // Residual: FusedMatMul + a tensor of the output's own shape (no broadcast), after the activation if any.
    const Pattern with_act = fusion::domain_op("FusedMatMul", "kiln").where([](ir::Value* v, const Bindings&) {
      return v->producer->inputs.size() < 4;
    });
    n += rewrite(
        g, commutative("Add", with_act.used_once().bind("mm"), any().bind("res")).bind("root"), [&](Bindings& b) {
          ir::Node* m = b.node("mm");
          ir::Value* res = b.value("res");
          ir::Value* out = b.value("mm");
          if (res == out || res->dtype != out->dtype || !fusion::same_shape(res, out) ||
              !fusion::same_shape(b.value("root"), out))
            return false;
          std::vector<ir::Value*> in = inputs_of(m);
          if (in.size() < 3) in.push_back(nullptr);  // no bias
          in.push_back(res);
          fusion::replace_with_node(g, b.value("root"), "FusedMatMul", "kiln", in, m->attrs, 1, m->name + "_res");
          return true;
        });
    fusion::prune_dead_nodes(g);
    ctx.changes += n + gelus + moved + res_moved;
    if (n) ctx.verbose("fuse_matmul_epilogue: " + std::to_string(n) + " epilogue fusions");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_matmul_epilogue() { return std::make_unique<FuseMatMulEpilogue>(); }

}  // namespace kiln::passes
