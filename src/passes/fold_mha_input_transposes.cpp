// fold_mha_input_transposes pass (CUDA, after fuse_attention): torch's batch_first MultiheadAttention exports its
// packed q/k/v projection as Transpose(x) -> in_proj -> Reshape -> Unsqueeze -> Transpose -> Squeeze -> 3 Gathers ->
// per head: Reshape -> Transpose -> Reshape, eight copies before FusedAttention reads q, k and v as [B, H, S, D].
// The same q, k and v come from in_proj(x) -> Reshape [B, S, 3, H, D] -> one Transpose to [3, B, H, S, D] -> Split:
// two launches. The shapes along the chain are checked, so the element mapping is the one described here. The
// nanoGPT-style form (Split of the packed projection, then per part Reshape + Transpose) gets the same treatment.
#include <algorithm>
#include <array>

#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using match::perm_is;
constexpr auto producer_of = &match::producer_op;

// The int64 values of a constant input (Squeeze/Unsqueeze axes, Gather index), or the attribute of older opsets.
std::optional<std::vector<int64_t>> ints_of(const ir::Node* n, size_t input, const char* attr) {
  if (n->inputs.size() > input && n->inputs[input]) {
    const ir::Value* v = n->inputs[input];
    if (!v->is_constant()) return std::nullopt;
    std::vector<int64_t> r;
    for (int64_t i = 0; i < v->constant->numel(); ++i) r.push_back(v->constant->get_i64(i));
    return r;
  }
  auto a = n->attrs.get_ints(attr);
  if (a.ok()) return *a;
  return std::nullopt;
}

bool static_dim(const ops::Dim& d, int64_t* v) {
  if (!d.is_static()) return false;
  *v = d.value;
  return true;
}

struct Chain {
  ir::Value* x = nullptr;        // [B, S, E] before the batch_first Transpose
  ir::Node* proj = nullptr;      // in_proj (MatMul or kiln FusedMatMul) on Transpose(x)
  ir::Value* squeezed = nullptr; // [3, S, B, E]
  int64_t index = -1;            // which third this input is
  int64_t heads = 0, head_dim = 0;
};

// Walks back from a FusedAttention input of shape [B, H, S, D]; false when the chain is not the exported one.
bool trace(ir::Value* q, Chain* c) {
  if (!q || !q->rank_known || q->shape.size() != 4) return false;
  ir::Node* r3 = producer_of(q, "Reshape");
  ir::Node* t2 = r3 ? producer_of(r3->inputs[0], "Transpose") : nullptr;
  if (!t2 || !perm_is(t2, {1, 0, 2})) return false;
  ir::Node* r2 = producer_of(t2->inputs[0], "Reshape");
  ir::Node* gather = r2 ? producer_of(r2->inputs[0], "Gather") : nullptr;
  if (!gather) return false;
  auto axis = gather->attrs.get_int("axis", 0);
  if (!axis.ok() || *axis != 0) return false;
  auto idx = ints_of(gather, 1, "");
  if (!idx || idx->size() != 1 || gather->inputs[1]->constant->shape().size() != 0) return false;
  ir::Node* sq = producer_of(gather->inputs[0], "Squeeze");
  auto sq_axes = sq ? ints_of(sq, 1, "axes") : std::nullopt;
  if (!sq_axes || *sq_axes != std::vector<int64_t>{3}) return false;
  ir::Node* t1 = producer_of(sq->inputs[0], "Transpose");
  if (!t1 || !perm_is(t1, {3, 1, 2, 0, 4})) return false;
  ir::Node* un = producer_of(t1->inputs[0], "Unsqueeze");
  auto un_axes = un ? ints_of(un, 1, "axes") : std::nullopt;
  if (!un_axes || *un_axes != std::vector<int64_t>{0}) return false;
  ir::Node* r1 = producer_of(un->inputs[0], "Reshape");
  if (!r1) return false;
  ir::Value* p = r1->inputs[0];
  ir::Node* proj = p ? p->producer : nullptr;
  if (!proj || proj->inputs.empty()) return false;
  const bool fused = proj->domain == "kiln" && proj->op_type == "FusedMatMul";
  if (!fused && !(proj->domain.empty() && proj->op_type == "MatMul")) return false;
  ir::Node* t0 = producer_of(proj->inputs[0], "Transpose");
  if (!t0 || !perm_is(t0, {1, 0, 2})) return false;
  ir::Value* x = t0->inputs[0];
  // Shapes: x [B,S,E], p [S,B,3E], r1 [S,B,3,E], q [B,H,S,D] with H*D = E; the intermediate head reshape is
  // [S, B*H, D] (its element count fixes B*H).
  if (!x->rank_known || x->shape.size() != 3 || !p->rank_known || p->shape.size() != 3) return false;
  const ir::Value* v1 = r1->outputs[0];
  const ir::Value* v2 = r2->outputs[0];
  if (!v1->rank_known || v1->shape.size() != 4 || !v2->rank_known || v2->shape.size() != 3) return false;
  int64_t e = 0, three_e = 0, three = 0, e1 = 0, h = 0, d = 0, d2 = 0;
  if (!static_dim(x->shape[2], &e) || !static_dim(p->shape[2], &three_e) || three_e != 3 * e) return false;
  if (!(p->shape[0] == x->shape[1]) || !(p->shape[1] == x->shape[0])) return false;
  if (!(v1->shape[0] == x->shape[1]) || !(v1->shape[1] == x->shape[0]) || !static_dim(v1->shape[2], &three) ||
      three != 3 || !static_dim(v1->shape[3], &e1) || e1 != e)
    return false;
  if (!(v2->shape[0] == x->shape[1]) || !static_dim(v2->shape[2], &d2)) return false;
  if (!(q->shape[0] == x->shape[0]) || !(q->shape[2] == x->shape[1]) || !static_dim(q->shape[1], &h) ||
      !static_dim(q->shape[3], &d) || d != d2 || h * d != e)
    return false;
  c->x = x;
  c->proj = proj;
  c->squeezed = sq->outputs[0];
  c->index = (*idx)[0];
  c->heads = h;
  c->head_dim = d;
  return true;
}

// The other common export (nanoGPT-style modules): qkv [B,S,3E] -> Split(axis 2, three E) -> per input
// Reshape [B,S,H,D] -> Transpose(0,2,1,3). `packed` receives qkv, `index` the Split output this input came from.
bool trace_split(ir::Value* q, ir::Value** packed, ir::Node** split, int64_t* index, int64_t* heads, int64_t* head_dim) {
  if (!q || !q->rank_known || q->shape.size() != 4) return false;
  ir::Node* t = producer_of(q, "Transpose");
  if (!t || !perm_is(t, {0, 2, 1, 3})) return false;
  ir::Node* r = producer_of(t->inputs[0], "Reshape");
  ir::Node* sp = r ? producer_of(r->inputs[0], "Split") : nullptr;
  if (!sp || sp->outputs.size() != 3) return false;
  auto axis = sp->attrs.get_int("axis", 0);
  ir::Value* p = sp->inputs[0];
  if (!axis.ok() || !p->rank_known || p->shape.size() != 3 || (*axis != 2 && *axis != -1)) return false;
  int64_t three_e = 0, h = 0, d = 0;
  if (!static_dim(p->shape[2], &three_e) || three_e % 3 != 0) return false;
  const int64_t e = three_e / 3;
  for (ir::Value* o : sp->outputs)  // three equal parts
    if (!o || !o->rank_known || o->shape.size() != 3 || !o->shape[2].is_static() || o->shape[2].value != e) return false;
  const ir::Value* rv = r->outputs[0];  // [B,S,H,D]
  if (!rv->rank_known || rv->shape.size() != 4 || !(rv->shape[0] == p->shape[0]) || !(rv->shape[1] == p->shape[1]) ||
      !static_dim(rv->shape[2], &h) || !static_dim(rv->shape[3], &d) || h * d != e)
    return false;
  *index = std::find(sp->outputs.begin(), sp->outputs.end(), r->inputs[0]) - sp->outputs.begin();
  *packed = p;
  *split = sp;
  *heads = h;
  *head_dim = d;
  return true;
}

ir::Value* typed(ir::Value* v, DataType dt, ops::Shape shape) {
  v->dtype = dt;
  v->shape = std::move(shape);
  v->rank_known = true;
  return v;
}

class FoldMhaInputTransposes final : public Pass {
 public:
  std::string_view name() const override { return "fold_mha_input_transposes"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    std::vector<ir::Node*> attention;
    for (auto& n : g.nodes())
      if (n->domain == "kiln" && n->op_type == "FusedAttention" && n->inputs.size() >= 3) attention.push_back(n.get());
    int rewritten = 0;
    for (ir::Node* att : attention) {
      Chain c[3];
      bool ok = true;
      for (int i = 0; i < 3 && ok; ++i) ok = trace(att->inputs[i], &c[i]);
      if (!ok || c[0].squeezed != c[1].squeezed || c[0].squeezed != c[2].squeezed) {
        if (rewrite_split(g, att)) ++rewritten;
        continue;
      }
      std::vector<bool> seen(3, false);
      for (auto& ci : c) {
        if (ci.index < 0 || ci.index > 2 || seen[ci.index]) ok = false;
        else seen[ci.index] = true;
      }
      if (!ok) continue;
      rewrite(g, att, c);
      ++rewritten;
    }
    if (rewritten) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += rewritten;
      ctx.verbose("fold_mha_input_transposes: " + std::to_string(rewritten) + " attention layers read q/k/v through "
                  "one Transpose and a Split");
    }
    return Status::Ok();
  }

 private:
  // q, k and v as [B,H,S,D] from a packed [B,S,3E] projection: Reshape [B,S,3,H,D], Transpose to [3,B,H,S,D],
  // Split, Squeeze. Returns the three parts in packed order.
  static std::array<ir::Value*, 3> heads_from_packed(ir::Graph& g, ir::Value* packed, const ops::Dim& b,
                                                     const ops::Dim& s, int64_t h, int64_t d, const std::string& base) {
    const DataType dt = packed->dtype;
    ir::Value* target = g.add_constant(base + "_shape", Tensor::from_vector<int64_t>({5}, {0, 0, 3, h, d}));
    ir::Node* r = g.add_node("Reshape", g.unique_node_name(base + "_reshape"), {packed, target}, {base + "_5d"}, {}, 14);
    typed(r->outputs[0], dt, {b, s, ops::Dim(3), ops::Dim(h), ops::Dim(d)});
    Attributes pa;
    pa.set("perm", std::vector<int64_t>{2, 0, 3, 1, 4});
    ir::Node* t = g.add_node("Transpose", g.unique_node_name(base + "_transpose"), {r->outputs[0]}, {base + "_heads"},
                             std::move(pa), 13);
    typed(t->outputs[0], dt, {ops::Dim(3), b, ops::Dim(h), s, ops::Dim(d)});
    ir::Value* sizes = g.add_constant(base + "_sizes", Tensor::from_vector<int64_t>({3}, {1, 1, 1}));
    Attributes sa;
    sa.set("axis", int64_t{0});
    ir::Node* sp = g.add_node("Split", g.unique_node_name(base + "_split"), {t->outputs[0], sizes},
                              {base + "_q", base + "_k", base + "_v"}, std::move(sa), 13);
    ir::Value* axes = g.add_constant(base + "_axes", Tensor::from_vector<int64_t>({1}, {0}));
    std::array<ir::Value*, 3> parts{};
    for (int i = 0; i < 3; ++i) {
      typed(sp->outputs[i], dt, {ops::Dim(1), b, ops::Dim(h), s, ops::Dim(d)});
      ir::Node* sq = g.add_node("Squeeze", g.unique_node_name(base + "_squeeze"), {sp->outputs[i], axes},
                                {sp->outputs[i]->name + "_4d"}, {}, 13);
      parts[i] = typed(sq->outputs[0], dt, {b, ops::Dim(h), s, ops::Dim(d)});
    }
    return parts;
  }

  static void rewrite(ir::Graph& g, ir::Node* att, Chain* c) {
    const Chain& k = c[0];
    ir::Node* proj = k.proj;
    ir::Value* x = k.x;
    const ops::Dim b = x->shape[0], s = x->shape[1];
    const int64_t e = k.heads * k.head_dim;
    const std::string base = att->name + "_qkv";
    // The projection on x itself: [B, S, 3E].
    std::vector<ir::Value*> in = proj->inputs;
    in[0] = x;
    ir::Node* p = g.add_node(proj->op_type, g.unique_node_name(proj->name + "_bsf"), in, {base + "_proj"}, proj->attrs,
                             proj->opset, proj->domain);
    typed(p->outputs[0], proj->outputs[0]->dtype, {b, s, ops::Dim(3 * e)});
    auto parts = heads_from_packed(g, p->outputs[0], b, s, k.heads, k.head_dim, base);
    for (int i = 0; i < 3; ++i) g.set_node_input(att, i, parts[c[i].index]);
  }

  // The Split form: the projection stays, its three parts come from one Transpose.
  static bool rewrite_split(ir::Graph& g, ir::Node* att) {
    ir::Value* packed[3];
    ir::Node* split[3];
    int64_t index[3], h[3], d[3];
    for (int i = 0; i < 3; ++i)
      if (!trace_split(att->inputs[i], &packed[i], &split[i], &index[i], &h[i], &d[i])) return false;
    if (split[1] != split[0] || split[2] != split[0] || h[1] != h[0] || h[2] != h[0] || d[1] != d[0] || d[2] != d[0])
      return false;
    if (index[0] == index[1] || index[0] == index[2] || index[1] == index[2]) return false;
    ir::Value* p = packed[0];
    auto parts = heads_from_packed(g, p, p->shape[0], p->shape[1], h[0], d[0], att->name + "_qkv");
    for (int i = 0; i < 3; ++i) g.set_node_input(att, i, parts[index[i]]);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_mha_input_transposes() { return std::make_unique<FoldMhaInputTransposes>(); }

}  // namespace kiln::passes
