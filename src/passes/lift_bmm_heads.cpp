// lift_bmm_heads pass (CUDA, before sink_head_transposes and fuse_attention): views around attention scores that
// fuse_attention cannot see through. The batched-matmul attention that
// BART-style modeling code exports (CLIPAttention, BART, Marian, M2M100): heads [B,H,S,D] viewed as [B*H,S,D] by a
// Reshape, torch.bmm on those 3-D operands, the scores viewed back to [B,H,S,Sk] around each mask Add and to
// [B*H,S,Sk] for the Softmax. fuse_attention takes 4-D batch-first operands, so the chain is lifted to 4-D:
//   MatMul(merge(a), merge(b))            -> merge(MatMul(a, b))   (K^T as Transpose(0,2,1)(merge(k)): k^T per head)
//   Softmax(merge(z)) over the last axis  -> merge(Softmax(z))
//   Reshape(Reshape(y)) to y's own shape  -> y                      (the exporter's view back to [B,H,S,Sk])
// and Swin's shifted-window mask, added to the scores s [B*nW,H,N,N] through a 5-D view:
//   Reshape(Add(Reshape(s, [B,nW,H,N,N]), m), [-1,H,N,N]) -> Add(s, Reshape(Expand(m, [B,nW,1,N,N]), [-1,1,N,N]))
// (the mask made per batch-window once, a small tensor, so that the Add is one fuse_attention takes; [G',G] read
// from the view's target).
// merge(x) is a Reshape of a 4-D x [B,H,M,N] to [B*H,M,N]: the bytes of x with its heads as the batch, whatever B
// is. With a dynamic batch the exporter's target holds B*H as Mul(Gather(Shape(t), 0), H), to which inference gives
// a fresh symbol (and the -1 stays unknown); the merge is then shown from the target's shape chain.
#include <algorithm>

#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using fusion::add_inferred;
using fusion::add_int64s;

bool rank_is(const ir::Value* v, size_t r) { return v && v->rank_known && v->shape.size() == r; }

// A product of a static factor and symbolic dims (names sorted): what an element of an exporter's shape chain is.
struct Prod {
  int64_t k = 1;
  std::vector<std::string> syms;
  bool operator==(const Prod& o) const { return k == o.k && syms == o.syms; }
};

std::optional<Prod> dim_prod(const ops::Dim& d) {
  if (d.is_static()) return Prod{d.value, {}};
  if (d.sym.empty()) return std::nullopt;
  return Prod{1, {d.sym}};
}

Prod times(Prod a, const Prod& b) {
  a.k *= b.k;
  a.syms.insert(a.syms.end(), b.syms.begin(), b.syms.end());
  std::sort(a.syms.begin(), a.syms.end());
  return a;
}

// Element i of a small integer tensor (rank 0 or 1) through the ops exporters compute shapes with: constants, Concat,
// Unsqueeze/Squeeze/Cast of one element, Gather of one dim of Shape(t), Mul.
std::optional<Prod> shape_elem(const ir::Value* v, int64_t i, int depth = 0) {
  if (!v || depth > 12 || !v->rank_known || v->shape.size() > 1) return std::nullopt;
  if (v->is_constant()) {
    const Tensor& c = *v->constant;
    if ((c.dtype() != DataType::kINT64 && c.dtype() != DataType::kINT32) || i < 0 || i >= c.numel())
      return std::nullopt;
    return Prod{c.get_i64(i), {}};
  }
  const ir::Node* n = v->producer;
  if (!n || !n->domain.empty()) return std::nullopt;
  const auto one_elem = [](const ir::Value* x) {
    return x && x->rank_known && x->shape.size() <= 1 && (x->shape.empty() || x->shape[0] == ops::Dim(1));
  };
  const std::string& op = n->op_type;
  if (op == "Concat") {
    int64_t at = i;
    for (const ir::Value* in : n->inputs) {
      if (!in || !in->rank_known || in->shape.size() != 1 || !in->shape[0].is_static()) return std::nullopt;
      if (at < in->shape[0].value) return shape_elem(in, at, depth + 1);
      at -= in->shape[0].value;
    }
    return std::nullopt;
  }
  if (i != 0) return std::nullopt;
  if (op == "Unsqueeze" || op == "Squeeze" || op == "Cast") {
    if (!one_elem(n->inputs[0])) return std::nullopt;
    return shape_elem(n->inputs[0], 0, depth + 1);
  }
  if (op == "Mul") {
    if (n->inputs.size() != 2 || !one_elem(n->inputs[0]) || !one_elem(n->inputs[1])) return std::nullopt;
    auto a = shape_elem(n->inputs[0], 0, depth + 1), b = shape_elem(n->inputs[1], 0, depth + 1);
    if (!a || !b) return std::nullopt;
    return times(*a, *b);
  }
  if (op == "Gather") {
    const ir::Node* s = match::producer_op(n->inputs[0], "Shape");
    auto axis = n->attrs.get_int("axis", 0);
    if (!s || !axis.ok() || *axis != 0 || !one_elem(n->inputs[1]) || !n->inputs[1]->is_constant()) return std::nullopt;
    if (s->attrs.find("start") || s->attrs.find("end")) return std::nullopt;
    const ir::Value* t = s->inputs[0];
    if (!t->rank_known) return std::nullopt;
    int64_t d = n->inputs[1]->constant->get_i64(0);
    const int64_t r = static_cast<int64_t>(t->shape.size());
    if (d < 0) d += r;
    if (d < 0 || d >= r) return std::nullopt;
    return dim_prod(t->shape[d]);
  }
  return std::nullopt;
}

// x when v = merge(x): a Reshape of a 4-D x [B,H,M,N] to [B*H,M,N] (M and N static or symbols: a dynamic-length
// export's sequence). Shown by the result's last two dims (then the first is B*H by the element count), or by the
// target's elements: B*H from x's own dims, -1 or M, and N.
ir::Value* merged_heads(const ir::Value* v) {
  const ir::Node* r = match::producer_op(v, "Reshape");
  if (!r || !r->domain.empty() || !rank_is(v, 3)) return nullptr;
  ir::Value* x = r->inputs[0];
  if (!rank_is(x, 4)) return nullptr;
  const ops::Shape &xs = x->shape, &vs = v->shape;
  if (vs[1] == xs[2] && vs[2] == xs[3]) return x;  // Dim equality: the same static value or the same symbol
  auto e0 = shape_elem(r->inputs[1], 0), e1 = shape_elem(r->inputs[1], 1), e2 = shape_elem(r->inputs[1], 2);
  auto b = dim_prod(xs[0]), h = dim_prod(xs[1]), m = dim_prod(xs[2]), n = dim_prod(xs[3]);
  if (!e0 || !e1 || !e2 || !b || !h || !n || !(*e0 == times(*b, *h)) || !(*e2 == *n)) return nullptr;
  const bool any_rows = e1->syms.empty() && e1->k == -1;
  if (!any_rows && !(m && *e1 == *m)) return nullptr;
  return x;
}

class LiftBmmHeads final : public Pass {
 public:
  std::string_view name() const override { return "lift_bmm_heads"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    int n = 0;
    for (bool changed = true; changed;) {
      changed = false;
      g.rebuild_links();
      std::vector<ir::Node*> order;
      for (const auto& node : g.nodes()) order.push_back(node.get());
      // A merge's last two dims are its source's, whatever inference made of the -1 (the exporter reads them back
      // through Shape for the views that follow: src_len = key_states.size(1)).
      for (ir::Node* node : order)
        if (node->op_type == "Reshape" && !node->outputs.empty())
          if (const ir::Value* x = merged_heads(node->outputs[0])) {
            node->outputs[0]->shape[1] = x->shape[2];
            node->outputs[0]->shape[2] = x->shape[3];
          }
      for (ir::Node* node : order) {
        ir::Value* out = node->outputs.empty() ? nullptr : node->outputs[0];
        // Nodes already bypassed (nothing reads them) wait for pruning; graph outputs keep their producers.
        if (!node->domain.empty() || !out || out->users.empty() || match::is_graph_output(g, out)) continue;
        bool done = false;
        if (node->op_type == "MatMul")
          done = lift_matmul(g, node);
        else if (node->op_type == "Softmax")
          done = lift_softmax(g, node);
        else if (node->op_type == "Reshape")
          done = collapse_view_back(g, node) || flatten_grouped_mask(g, node);
        if (done) {
          g.rebuild_links();
          ++n;
          changed = true;
        }
      }
      if (changed) fusion::prune_dead_nodes(g);
    }
    ctx.changes += n;
    if (n) ctx.verbose("lift_bmm_heads: " + std::to_string(n) + " [B*H,S,D] attention steps lifted to [B,H,S,D]");
    return g.topo_sort();
  }

 private:
  // merge(y) in place of `old`: a Reshape of the 4-D y to [-1, M, N]. Where M or N is dynamic (a dynamic-length
  // export) the target is [-1] followed by y's dims 2 and 3 from Shape(y); such a merge lives only until the view
  // back to 4-D that reads it collapses, and goes with its Shape chain when the dead nodes are pruned.
  static bool replace_with_merge(ir::Graph& g, ir::Value* old, ir::Value* y, int opset) {
    if (!y || !rank_is(y, 4)) return false;
    ir::Value* target = nullptr;
    if (y->shape[2].is_static() && y->shape[3].is_static()) {
      target = add_int64s(g, old->name + "_heads_shape", {-1, y->shape[2].value, y->shape[3].value});
    } else {
      ir::Value* shape = add_inferred(g, {"Shape", old->name + "_heads_dims", {y}, {}, opset});
      if (!shape) return false;
      ir::Value *from = add_int64s(g, old->name + "_from", {2}), *upto = add_int64s(g, old->name + "_to", {4});
      ir::Value* rows = add_inferred(g, {"Slice", old->name + "_heads_rows", {shape, from, upto}, {}, opset});
      if (!rows) return false;
      Attributes ca;
      ca.set("axis", Attribute(int64_t{0}));
      ir::Value* any = add_int64s(g, old->name + "_any", {-1});
      target = add_inferred(g, {"Concat", old->name + "_heads_shape", {any, rows}, std::move(ca), opset});
      if (!target) return false;
    }
    ir::Value* m = add_inferred(g, {"Reshape", old->name + "_heads", {y, target}, {}, opset});
    if (!m) return false;
    m->shape[1] = y->shape[2];  // inference may have lost them in the target's chain
    m->shape[2] = y->shape[3];
    g.replace_all_uses(old, m);
    return true;
  }

  static int opset_of(const ir::Graph& g, const ir::Node* n) { return n->opset ? n->opset : g.opset(); }

  static bool lift_matmul(ir::Graph& g, ir::Node* mm) {
    ir::Value* out = mm->outputs[0];
    if (!rank_is(out, 3)) return false;
    ir::Value* a = merged_heads(mm->inputs[0]);
    if (!a) return false;
    const int opset = opset_of(g, mm);
    ir::Value* b = merged_heads(mm->inputs[1]);
    const ir::Node* t = match::producer_op(mm->inputs[1], "Transpose");
    ir::Value* k =
        (!b && t && t->domain.empty() && match::perm_is(t, {0, 2, 1})) ? merged_heads(t->inputs[0]) : nullptr;
    if (!b && !k) return false;
    const ir::Value* heads = b ? b : k;
    // One batch of heads on both sides: the bmm paired them by their merged index.
    if (!(a->shape[0] == heads->shape[0]) || !(a->shape[1] == heads->shape[1])) return false;
    if (k) {
      Attributes p;
      p.set("perm", Attribute(std::vector<int64_t>{0, 1, 3, 2}));
      b = add_inferred(g, {"Transpose", out->name + "_kt_heads", {k}, std::move(p), opset});
      if (!b) return false;
    }
    // The contraction dims must be the same dim (shape inference unifies a length the exporter computed twice).
    if (a->shape[3] != b->shape[2]) return false;
    return replace_with_merge(g, out, add_inferred(g, {"MatMul", out->name + "_per_head", {a, b}, {}, opset}), opset);
  }

  // Softmax over the last axis commutes with a Reshape that keeps that axis.
  static bool lift_softmax(ir::Graph& g, ir::Node* sm) {
    ir::Value* out = sm->outputs[0];
    const int opset = opset_of(g, sm);
    auto axis = sm->attrs.get_int("axis", opset >= 13 ? -1 : 1);
    if (!rank_is(out, 3) || !axis.ok() || (*axis != -1 && *axis != 2)) return false;
    ir::Value* z = merged_heads(sm->inputs[0]);
    // Below opset 13 Softmax flattens from `axis` on: only the 13+ definition is per row for rank 4 too.
    if (!z || opset < 13) return false;
    Attributes a;
    a.set("axis", Attribute(int64_t{-1}));
    return replace_with_merge(g, out, add_inferred(g, {"Softmax", out->name + "_per_head", {z}, std::move(a), opset}),
                              opset);
  }

  // r = Reshape(Add(v, m), [-1,H,N,N]) with v = Reshape(s, [G',G,H,N,N]) of s [X,H,N,N] (H, N static: v splits
  // s's first dim into groups of G, whatever X is) -> s + Reshape(Expand(m, [G',G,1,N,N]), [-1,1,N,N]) where m
  // does not vary over heads (else over [G',G,H,N,N] and [-1,H,N,N]).
  static bool flatten_grouped_mask(ir::Graph& g, ir::Node* r) {
    ir::Value* out = r->outputs[0];
    const ir::Node* add = match::producer_op(r->inputs[0], "Add");
    if (!add || !add->domain.empty() || !rank_is(out, 4) || !rank_is(add->outputs[0], 5)) return false;
    const int opset = opset_of(g, r);
    for (int i = 0; i < 2; ++i) {
      ir::Value* v = add->inputs[i];
      ir::Value* m = add->inputs[1 - i];
      const ir::Node* view = match::producer_op(v, "Reshape");
      if (!view || !view->domain.empty() || !rank_is(v, 5) || !fusion::same_shape(v, add->outputs[0])) continue;
      ir::Value* s = view->inputs[0];
      if (!rank_is(s, 4) || !v->shape[1].is_static() || !m->rank_known || m->shape.size() > 5 || m->dtype != s->dtype)
        continue;
      bool dims = true;
      for (size_t d = 1; d < 4; ++d)
        dims &= s->shape[d].is_static() && v->shape[d + 1] == s->shape[d] && out->shape[d] == s->shape[d];
      if (!dims) continue;
      // m's dim over heads (position 2 of 5, right-aligned): 1 or absent lets the mask broadcast over heads.
      const size_t mr = m->shape.size();
      const bool per_head = mr >= 3 && !(m->shape[mr - 3] == ops::Dim(1));
      const int64_t h = per_head ? s->shape[1].value : 1, n1 = s->shape[2].value, n2 = s->shape[3].value;
      // [G', G] from the view's own target (the exporter computes it from the hidden states' shape; a Shape of v
      // or s would add a reader to the scores and stop fuse_attention): its first two elements are sizes, not -1/0.
      ir::Value* target = view->inputs[1];
      std::vector<ops::Dim> known;
      if (target->is_constant())
        for (int64_t e : target->constant->to_i64_vector()) known.push_back(ops::Dim(e));
      else if (target->known)
        known = *target->known;
      if (known.size() != 5 || !(known[1] == v->shape[1]) ||
          (known[0].is_static() ? known[0].value <= 0 : known[0].sym.empty()))
        continue;
      const std::string base = out->name + "_mask";
      ir::Value *from = add_int64s(g, base + "_from", {0}), *upto = add_int64s(g, base + "_to", {2});
      ir::Value* groups = add_inferred(g, {"Slice", base + "_groups", {target, from, upto}, {}, opset});
      if (!groups) return false;
      Attributes ca;
      ca.set("axis", Attribute(int64_t{0}));
      ir::Value* rest = add_int64s(g, base + "_rest", {h, n1, n2});
      ir::Value* to = add_inferred(g, {"Concat", base + "_target", {groups, rest}, std::move(ca), opset});
      if (!to) return false;
      ir::Value* wide = add_inferred(g, {"Expand", base + "_grouped", {m, to}, {}, opset});
      if (!wide) return false;
      ir::Value* flat_shape = add_int64s(g, base + "_flat_shape", {-1, h, n1, n2});
      ir::Value* flat = add_inferred(g, {"Reshape", base + "_flat", {wide, flat_shape}, {}, opset});
      if (!flat) return false;
      flat->shape[0] = s->shape[0];
      ir::Value* sum = add_inferred(g, {"Add", base + "_added", {s, flat}, {}, opset});
      if (!sum) return false;
      sum->shape = s->shape;
      g.replace_all_uses(out, sum);
      return true;
    }
    return false;
  }

  // A Reshape of merge(y) whose result has y's own shape is y (a Reshape never moves data).
  static bool collapse_view_back(ir::Graph& g, ir::Node* r) {
    ir::Value* out = r->outputs[0];
    ir::Value* y = merged_heads(r->inputs[0]);
    if (!y) return false;
    if (!out->rank_known || !y->rank_known || out->shape.size() != y->shape.size() || out->dtype != y->dtype)
      return false;
    // Inference may not know it (a dim read from a merge's unknown -1): then the target's own element shows it.
    for (size_t i = 0; i < y->shape.size(); ++i) {
      if (out->shape[i] == y->shape[i]) continue;
      auto e = shape_elem(r->inputs[1], static_cast<int64_t>(i)), d = dim_prod(y->shape[i]);
      if (!e || !d || !(*e == *d)) return false;
    }
    g.replace_all_uses(out, y);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_lift_bmm_heads() { return std::make_unique<LiftBmmHeads>(); }

}  // namespace kiln::passes
