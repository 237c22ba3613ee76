// fuse_attention pass: MatMul(Q, K^T) -> scale -> [mask] -> Softmax -> MatMul(., V) -> kiln::FusedAttention.
// Scale forms: Div or Mul of the scores by a scalar, or SDPA's export, Mul of Q and of K^T by sqrt(scale) each, or a
// scalar Mul of the query projection before its head views (CLIP, Whisper, BART).
// Mask forms: Add of an additive mask (or two Adds: their sum is the mask), Where(cond, scores, fill) or Where(cond,
// fill, scores); a constant cond that is the causal triangle becomes the causal flag instead of a mask.
// Operands are [B,H,S,D] (4-D), or the sequence-first form of torch's nn.MultiheadAttention exports (before its
// SDPA-based export of PyTorch 2): 3-D [B*H,S,D] operands made from [S,B,E] projections by Reshape([S,B*H,D]) and a
// Transpose (perm [1,0,2]; [1,2,0] for K^T), the output taken back by Transpose(perm [1,0,2]). That form becomes
// FusedAttention reading the projections in place as [S,B,H,D] (qkv_layout sbhd, views by Reshape) and writing
// [S,B,H,D] (out_layout sbhd), which a Reshape shows as the [S,B*H,D] the output Transpose gave.
// Grouped-query attention: K and V made by HF's repeat_kv (Unsqueeze -> Expand or Tile -> Reshape, see
// repeat_kv_source) are read unrepeated, FusedAttention mapping query head h to K/V head h / group.
#include <algorithm>
#include <optional>

#include "ops/op_util.h"
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using match::Bindings;
using match::Pattern;

// The leading n dims can be taken as equal: the same static size, or symbolic (the exporter's batch is a symbol
// that inference may not prove equal across Q, K and V; the kernels check the actual sizes). A static 1 against
// anything else may be a broadcast, which FusedAttention does not do.
bool dim_compatible(const ops::Dim& x, const ops::Dim& y) {
  return x.is_static() && y.is_static() ? x.value == y.value
                                        : !((x.is_static() && x.value == 1) || (y.is_static() && y.value == 1));
}
bool dims_equal(const ir::Value* a, const ir::Value* b, int n) {
  for (int i = 0; i < n; ++i)
    if (!dim_compatible(a->shape[i], b->shape[i])) return false;
  return true;
}

bool rank_is(const ir::Value* v, size_t r) { return v->rank_known && v->shape.size() == r; }
bool rank4(const ir::Value* v) { return rank_is(v, 4); }

// Whether a constant bool condition of shape [1,..,1,S,S] is the causal triangle: `masked_when_true` says whether
// true marks the keys to hide (j > i) or the keys to keep (j <= i).
bool is_causal_cond(const ir::Value* cond, bool masked_when_true) {
  if (!cond->is_constant() || cond->dtype != DataType::kBOOL) return false;
  const Tensor& t = *cond->constant;
  if (t.rank() < 2) return false;
  const int64_t s = t.dim(-1);
  if (t.dim(-2) != s || t.numel() != s * s) return false;
  const bool* p = t.data<bool>();
  for (int64_t i = 0; i < s; ++i)
    for (int64_t j = 0; j < s; ++j)
      if (p[i * s + j] != (masked_when_true ? j > i : j <= i)) return false;
  return true;
}

// A constant additive mask that is the causal triangle: 0 where j <= i, a large negative value (or -inf) where
// j > i (what torch's SDPA export builds for is_causal once folded).
bool is_causal_additive(const ir::Value* m) {
  if (!m->is_constant() || !dtype_is_float(m->dtype)) return false;
  const Tensor& t = *m->constant;
  if (t.rank() < 2) return false;
  const int64_t s = t.dim(-1);
  if (s < 2 || t.dim(-2) != s || t.numel() != s * s) return false;
  for (int64_t i = 0; i < s; ++i)
    for (int64_t j = 0; j < s; ++j) {
      const double v = t.get_f64(i * s + j);
      if (j <= i ? v != 0.0 : !(v <= -1e4)) return false;
    }
  return true;
}

// An elementwise Where or Add that reads Expand(c, Shape(y)) beside y itself reads c instead: the node broadcasts
// c against y anyway. DistilBERT's masked_fill expands its padding condition to the scores' shape (and casts it to
// bool, a no-op remove_identity takes out), and that Shape would keep the scores MatMul from being used once.
int drop_expand_to_operand_shape(ir::Graph& g) {
  int n = 0;
  for (const auto& node : g.nodes()) {
    if ((node->op_type != "Where" && node->op_type != "Add") || !node->domain.empty()) continue;
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const ir::Node* ex = match::producer_op(node->inputs[i], "Expand");
      if (!ex || ex->inputs.size() != 2) continue;
      const ir::Node* sh = match::producer_op(ex->inputs[1], "Shape");
      if (!sh || sh->attrs.has("start") || sh->attrs.has("end")) continue;
      bool beside = false;
      for (size_t j = 0; j < node->inputs.size(); ++j) beside |= j != i && node->inputs[j] == sh->inputs[0];
      if (!beside) continue;
      g.set_node_input(node.get(), i, ex->inputs[0]);
      ++n;
    }
  }
  return n;
}

bool softmax_last_axis(ir::Value* v, int graph_opset) {
  const ir::Node* n = v->producer;
  const int opset = n->opset ? n->opset : graph_opset;
  if (!n->inputs[0]->rank_known) return false;
  const int64_t rank = static_cast<int64_t>(n->inputs[0]->shape.size());
  auto axis = n->attrs.get_int("axis", opset >= 13 ? -1 : 1);
  return axis.ok() && (*axis == -1 || *axis == rank - 1);
}

// A sequence-first operand: `v` = Transpose(perm)(Reshape(x)) where x is a [S,B,E] projection and the Reshape keeps
// S and splits E into heads of D (its [S,B*H,D] result is then x's bytes as [S,B,H,D], whatever B is).
struct SeqFirst {
  ir::Value* x = nullptr;
  int64_t H = 0, D = 0;
};
SeqFirst seq_first_source(const ir::Value* v, const std::vector<int64_t>& perm) {
  const ir::Node* t = match::producer_op(v, "Transpose");
  if (!t || !match::perm_is(t, perm)) return {};
  const ir::Value* r = t->inputs[0];
  const ir::Node* reshape = match::producer_op(r, "Reshape");
  if (!reshape || !r->rank_known || r->shape.size() != 3) return {};
  ir::Value* x = reshape->inputs[0];
  if (!x->rank_known || x->shape.size() != 3 || !(x->shape[0] == r->shape[0])) return {};
  const ops::Dim &e = x->shape[2], &d = r->shape[2];
  if (!e.is_static() || !d.is_static() || d.value <= 0 || e.value % d.value != 0) return {};
  return {x, e.value / d.value, d.value};
}

// A scalar Mul of the query before its head views, q = Transpose(Reshape(p * c)) (q_proj(x) * scaling in CLIP,
// Whisper and BART-style attention): the views commute with it, so the attention's scale may take c and the first
// view read p. Every value from the Mul to q must have one reader (no one else sees the unscaled values then).
struct ViewedScale {
  ir::Node* first_view = nullptr;  // reads the Mul's result
  ir::Value* unscaled = nullptr;   // p
  double c = 1.0;
};
ViewedScale scale_before_views(const ir::Graph& g, const ir::Value* q) {
  const ir::Value* v = q;
  ir::Node* view = nullptr;
  for (int i = 0; i < 4 && v->producer && v->producer->domain.empty() &&
                  (v->producer->op_type == "Reshape" || v->producer->op_type == "Transpose");
       ++i) {
    if (v->users.size() != 1 || match::is_graph_output(g, v)) return {};
    view = v->producer;
    v = view->inputs[0];
  }
  const ir::Node* mul = v->producer;
  if (!view || !mul || mul->op_type != "Mul" || !mul->domain.empty() || v->users.size() != 1 ||
      match::is_graph_output(g, v))
    return {};
  for (int i = 0; i < 2; ++i) {
    const ir::Value* c = mul->inputs[i];
    ir::Value* p = mul->inputs[1 - i];
    if (c->is_constant() && c->constant->numel() == 1 && dtype_is_float(c->dtype) && p->dtype == v->dtype &&
        fusion::same_shape(p, v))
      if (auto f = match::constant_scalar(c)) return {view, p, *f};
  }
  return {};
}

// The constant integer list of input `i` (from the opset that made it an input) or of attribute `attr`.
std::optional<std::vector<int64_t>> const_ints(const ir::Node* n, size_t i, const char* attr) {
  if (i < n->inputs.size() && n->inputs[i]) {
    const ir::Value* c = n->inputs[i];
    if (!c->is_constant()) return std::nullopt;
    return c->constant->to_i64_vector();
  }
  auto a = n->attrs.get_ints(attr);
  if (!a.ok()) return std::nullopt;
  return *a;
}

// HF's repeat_kv (grouped-query attention): x [B,Hk,S,D] -> Unsqueeze(axes [2]) [B,Hk,1,S,D] -> Expand to
// [B,Hk,n,S,D] (torch.expand; or Tile by [1,1,n,1,1], the same values) -> Reshape [B,Hk*n,S,D], so query head h
// reads x's head h / n, which FusedAttention does itself from x. The exporters build the Expand target and the
// Reshape's from Shape ops; inference gives Hk, n and D statically (B and S may be symbols it lost track of: an
// Expand cannot shrink a dim, so with Hk, n and D fixed a batch or length other than x's fails the attention's own
// runtime check, never silently). Null where `v` is not that, or the repeat has a data reader besides the
// attention's operand (then the copy stays anyway). Shape readers of `v` (a dynamic-length export reads the key
// length from K) are listed, to read Shape(x) * [1,n,1,1] instead. (A Tile of the 4-D x along heads, [1,n,1,1],
// gives head h % Hk instead, which is not this mapping.)
struct KvRepeat {
  ir::Value* x = nullptr;
  int64_t n = 0;
  std::vector<ir::Node*> shape_readers;
};
KvRepeat repeat_kv_source(const ir::Graph& g, const ir::Value* v) {
  const ir::Node* r = match::producer_op(v, "Reshape");
  if (!r || !rank4(v) || match::is_graph_output(g, v)) return {};
  KvRepeat out;
  int data_readers = 0;
  for (ir::Node* u : v->users) {
    const bool shape = u->op_type == "Shape" && u->domain.empty() && !u->attrs.has("start") && !u->attrs.has("end") &&
                       !match::is_graph_output(g, u->outputs[0]);
    if (shape) {
      if (std::find(out.shape_readers.begin(), out.shape_readers.end(), u) == out.shape_readers.end())
        out.shape_readers.push_back(u);
    } else {
      ++data_readers;
    }
  }
  if (data_readers != 1) return {};
  const ir::Value* e = r->inputs[0];
  const ir::Node* ex = e->producer;
  if (!ex || !ex->domain.empty() || (ex->op_type != "Expand" && ex->op_type != "Tile") || !rank_is(e, 5) ||
      e->users.size() != 1 || match::is_graph_output(g, e) || ex->inputs.size() != 2)
    return {};
  const ir::Value* u = ex->inputs[0];
  const ir::Node* un = match::producer_op(u, "Unsqueeze");
  if (!un || !rank_is(u, 5)) return {};
  auto axes = const_ints(un, 1, "axes");
  if (!axes || axes->size() != 1 || ((*axes)[0] != 2 && (*axes)[0] != -3)) return {};
  ir::Value* x = un->inputs[0];
  if (!rank4(x)) return {};
  const ops::Dim &hk = x->shape[1], &n = e->shape[2], &h = v->shape[1], &d = x->shape[3];
  if (!hk.is_static() || !n.is_static() || !h.is_static() || !d.is_static() || hk.value < 1 || n.value < 1 ||
      h.value != hk.value * n.value || !(e->shape[1] == hk) || !(e->shape[4] == d) || !(v->shape[3] == d))
    return {};
  if (ex->op_type == "Tile") {
    auto reps = const_ints(ex, 1, "");
    if (!reps || *reps != std::vector<int64_t>{1, 1, n.value, 1, 1}) return {};
  }
  // Batch and length: x's, as far as inference knows (a static 1 against another size would be a broadcast).
  if (!dim_compatible(e->shape[0], x->shape[0]) || !dim_compatible(v->shape[0], x->shape[0]) ||
      !dim_compatible(e->shape[3], x->shape[2]) || !dim_compatible(v->shape[2], x->shape[2]))
    return {};
  out.x = x;
  out.n = n.value;
  return out;
}

// The Shape readers of a repeat read its source's shape with the heads multiplied by n (what the repeat had).
void shape_from_repeat_source(ir::Graph& g, const KvRepeat& r, int opset) {
  if (r.shape_readers.empty()) return;
  const std::string base = r.x->name + "_repeated_shape";
  const ops::Shape four = {ops::Dim(4)};
  ir::Value* sh = fusion::add_typed(g, {"Shape", base, {r.x}, {}, opset, base + "_source"}, DataType::kINT64, four);
  ir::Value* factor = fusion::add_int64s(g, base + "_factor", {1, r.n, 1, 1});
  ir::Value* mul = fusion::add_typed(g, {"Mul", base, {sh, factor}, {}, opset}, DataType::kINT64, four);
  for (ir::Node* s : r.shape_readers) g.replace_all_uses(s->outputs[0], mul);
}

// On CUDA the fused kernel beats cuBLAS GEMMs + softmax only where it runs on tensor cores: FP16/BF16 engines and
// equal Q/K and V head dims that are multiples of 8 up to 128 (attention.cu, attention_mma_applies). Elsewhere its
// row-per-block kernel rereads K and V from L2 for every query and would be slower than the unfused graph, so those
// stay unfused.
bool tensor_core_case(const ir::Value* q, const ir::Value* v, const PassOptions& o) {
  if (o.reduced_precision != DataType::kHALF && o.reduced_precision != DataType::kBF16) return false;
  const ops::Dim &d = q->shape.back(), &dv = v->shape.back();
  return d.is_static() && dv.is_static() && d.value == dv.value && d.value > 0 && d.value % 8 == 0 &&
         d.value <= 128;
}

class FuseAttention final : public Pass {
 public:
  std::string_view name() const override { return "fuse_attention"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    using namespace match;
    auto scalar_const = [](const std::string& name) {
      return constant()
          .where([](ir::Value* c, const Bindings&) { return c->constant->numel() == 1 && dtype_is_float(c->dtype); })
          .bind(name);
    };
    const Pattern q = either({commutative("Mul", any().bind("q"), scalar_const("cq")).used_once(),
                              op("Div", {any().bind("q"), scalar_const("cqdiv")}).used_once(), any().bind("q")});
    const Pattern kt = either({commutative("Mul", any().bind("kt"), scalar_const("ck")).used_once(), any().bind("kt")});
    const Pattern qk = op("MatMul", {q, kt}).used_once();
    const Pattern scores = either({op("Div", {qk, scalar_const("cdiv")}).used_once(),
                                   commutative("Mul", qk, scalar_const("cmul")).used_once(), qk});
    const Pattern where = either({
        op("Where", {any().bind("cond_keep"), scores, scalar_const("fill")}).used_once(),
        op("Where", {any().bind("cond_hide"), scalar_const("fill"), scores}).used_once(),
    });
    // Two additive masks one after the other (CLIP's causal mask, then its padding mask) become their sum.
    const Pattern masked =
        either({commutative("Add", where, any().bind("mask")).used_once(), where,
                commutative("Add", commutative("Add", scores, any().bind("mask")).used_once(), any().bind("mask2"))
                    .used_once(),
                commutative("Add", scores, any().bind("mask")).used_once(), scores});
    const int opset = g.opset();
    const Pattern probs =
        op("Softmax", {masked}).where([opset](ir::Value* v, const Bindings&) { return softmax_last_axis(v, opset); });
    // torch's SDPA export guards fully masked rows: Where(IsNaN(p), 0, p) (a left-padded causal batch has such
    // rows). Absorbed, it becomes FusedAttention's masked_rows_zero=1: those rows are zeros, not NaN.
    const Pattern guarded =
        op("Where", {op("IsNaN", {probs.bind("sm")}).used_once(), scalar_const("nan_fill"), any().bind("sm_again")})
            .used_once();
    const Pattern root = op("MatMul", {either({guarded, probs.used_once()}), any().bind("v")}).bind("root");

    const int dropped = drop_expand_to_operand_shape(g);
    if (dropped) fusion::prune_dead_nodes(g);
    int n = rewrite(g, root, [&](Bindings& b) {
      ir::Value *qv = b.value("q"), *ktv = b.value("kt"), *vv = b.value("v"), *out = b.value("root");
      if (ir::Value* f = b.value("nan_fill")) {  // the guard reads the same probabilities, and nothing else does
        ir::Value* sm = b.value("sm");
        if (b.value("sm_again") != sm || sm->users.size() != 2 || *constant_scalar(f) != 0.0) return false;
      }
      if (!dtype_is_float(qv->dtype) || ktv->dtype != qv->dtype || vv->dtype != qv->dtype) return false;
      // The sequence-first 3-D form: its operands' sources, and the Transpose that takes the output back.
      SeqFirst sq, sk, sv;
      ir::Node* out_transpose = nullptr;
      if (rank_is(qv, 3) && rank_is(ktv, 3) && rank_is(vv, 3) && rank_is(out, 3)) {
        sq = seq_first_source(qv, {1, 0, 2});
        sk = seq_first_source(ktv, {1, 2, 0});
        sv = seq_first_source(vv, {1, 0, 2});
        if (!sq.x || !sk.x || !sv.x || sq.H != sk.H || sq.H != sv.H || sq.D != sk.D) return false;
        // One batch for all three (dim 1), one key length for K and V (dim 0).
        if (!dim_compatible(sq.x->shape[1], sk.x->shape[1]) || !dim_compatible(sq.x->shape[1], sv.x->shape[1]) ||
            !dim_compatible(sk.x->shape[0], sv.x->shape[0]))
          return false;
        if (out->users.size() != 1 || match::is_graph_output(g, out)) return false;
        out_transpose = out->users[0];
        // (The Transpose's value may be a graph output: the Reshape below takes over its name.)
        if (!match::perm_is(out_transpose, {1, 0, 2}) || out_transpose->op_type != "Transpose" ||
            !out_transpose->domain.empty() || opset < 5)
          return false;
        // A mask or condition of rank 3 is indexed by B*H: only one that broadcasts over it (leading 1) is taken.
        for (const char* m : {"mask", "cond_keep", "cond_hide"})
          if (ir::Value* mv = b.value(m);
              mv && mv->rank_known && mv->shape.size() == 3 && !(mv->shape[0] == ops::Dim(1)))
            return false;
      } else if (!rank4(qv) || !rank4(ktv) || !rank4(vv) || !rank4(out)) {
        return false;
      } else if (!dims_equal(qv, ktv, 2) || !dims_equal(qv, vv, 2)) {
        return false;  // no batch broadcasting
      }
      if (ctx.options.backend == Backend::kCUDA && !tensor_core_case(qv, vv, ctx.options)) return false;
      double scale = 1.0;
      if (ir::Value* c = b.value("cq")) scale *= *constant_scalar(c);
      if (ir::Value* c = b.value("cqdiv")) scale /= *constant_scalar(c);
      if (ir::Value* c = b.value("ck")) scale *= *constant_scalar(c);
      if (ir::Value* c = b.value("cmul")) scale *= *constant_scalar(c);
      if (ir::Value* c = b.value("cdiv")) scale /= *constant_scalar(c);
      ir::Value* mask = b.value("mask");
      if (ir::Value* mask2 = b.value("mask2")) {
        if (mask->dtype != qv->dtype || mask2->dtype != qv->dtype || !mask->rank_known || !mask2->rank_known)
          return false;
        auto both = ops::broadcast_shapes({mask->shape, mask2->shape});
        if (!both.ok() || both->size() > 4) return false;
        mask = fusion::add_typed(
            g, {"Add", out->name + "_masks", {mask, mask2}, {}, opset, out->name + "_summed_masks"}, qv->dtype, *both);
      }
      if (mask && (mask->dtype != qv->dtype || !mask->rank_known || mask->shape.size() > 4)) return false;
      bool causal = false;
      if (mask && is_causal_additive(mask)) {
        causal = true;
        mask = nullptr;
      }
      ir::Value* cond = b.value("cond_keep") ? b.value("cond_keep") : b.value("cond_hide");
      if (cond) {
        const bool hide = b.value("cond_hide") != nullptr;
        if (cond->dtype != DataType::kBOOL || !cond->rank_known || cond->shape.size() > 4) return false;
        if (is_causal_cond(cond, hide)) {
          causal = true;
        } else {
          // The replacing Where keeps its scores untouched and adds the fill where the original replaced them;
          // the fill is so negative that the softmax gives those keys nothing either way.
          Tensor zero = Tensor::from_vector<float>({}, {0.0f}).cast(qv->dtype);
          ir::Value* z = g.add_constant(out->name + "_mask_zero", std::move(zero));
          ir::Value* fill = b.value("fill");
          if (fill->dtype != qv->dtype) return false;
          ir::Value *where_true = hide ? fill : z, *where_false = hide ? z : fill;
          ir::Value* wm = fusion::add_typed(
              g,
              {"Where", out->name + "_mask", {cond, where_true, where_false}, {}, opset, out->name + "_additive_mask"},
              qv->dtype, cond->shape);
          if (mask) {
            if (!mask->rank_known) return false;
            auto both = ops::broadcast_shapes({mask->shape, cond->shape});
            if (!both.ok() || both->size() > 4) return false;
            mask =
                fusion::add_typed(g, {"Add", out->name + "_masks", {wm, mask}, {}, opset, out->name + "_combined_mask"},
                                  qv->dtype, *both);
          } else {
            mask = wm;
          }
        }
      }
      if (out_transpose) {
        // Q, K and V read as [S,B,H,D] where the projections wrote them; the output written as [S,B,H,Dv] and
        // shown to the output Transpose's readers as the [S,B*H,Dv] it produced.
        std::vector<ir::Value*> in = {fusion::split_heads(g, sq.x, sq.H, sq.D, out->name + "_q", opset),
                                      fusion::split_heads(g, sk.x, sk.H, sk.D, out->name + "_k", opset),
                                      fusion::split_heads(g, sv.x, sv.H, sv.D, out->name + "_v", opset)};
        if (mask) in.push_back(mask);
        Attributes a;
        a.set("scale", Attribute(static_cast<float>(scale)));
        if (causal) a.set("causal", Attribute(int64_t{1}));
        if (b.value("nan_fill")) a.set("masked_rows_zero", Attribute(int64_t{1}));
        a.set("qkv_layout", std::string("sbhd"));
        a.set("out_layout", std::string("sbhd"));
        std::vector<ir::Value*> sources = {sq.x, sk.x, sv.x};
        if (mask) sources.push_back(mask);
        ir::Node* att =
            fusion::replace_with_node(g, out, "FusedAttention", "kiln", in, std::move(a), 1, "attention", sources);
        match::record_fusion(att, {out_transpose});
        ir::Value* y = att->outputs[0];
        y->shape = {sq.x->shape[0], sq.x->shape[1], ops::Dim(sq.H), ops::Dim(sv.D)};
        fusion::view_in_place(g, out_transpose->outputs[0], y, {0, -1, sv.D}, "_unfused", opset);
        g.remove_node(out_transpose);
        g.rebuild_links();
        return true;
      }
      // K as [B,H,Sk,D]: undo the exporter's transpose when K^T comes from one, else transpose K^T back.
      ir::Value* k = nullptr;
      const ir::Node* tp = ktv->producer;
      std::vector<int64_t> perm = {0, 1, 3, 2};
      ir::Value* src = ktv;
      if (tp && tp->op_type == "Transpose" && tp->domain.empty() && tp->inputs[0]->rank_known &&
          tp->inputs[0]->shape.size() == 4) {
        auto p = tp->attrs.get_ints("perm", {3, 2, 1, 0});
        if (p.ok() && p->size() == 4) {
          perm = *p;
          std::swap(perm[2], perm[3]);
          src = tp->inputs[0];
        }
      }
      // Grouped-query attention: K and V both repeat_kv'd by the same n (K through a Transpose that keeps B and
      // the heads in place, its only reader the scores MatMul) are read unrepeated, Hk = H / n heads.
      if (src != ktv && perm[0] == 0 && perm[1] == 1 && ktv->users.size() == 1) {
        const KvRepeat rk = repeat_kv_source(g, src), rv = repeat_kv_source(g, vv);
        if (rk.x && rv.x && rk.n == rv.n && rk.x->shape[1] == rv.x->shape[1]) {
          shape_from_repeat_source(g, rk, opset);
          shape_from_repeat_source(g, rv, opset);
          src = rk.x;
          vv = rv.x;
        }
      }
      if (perm == std::vector<int64_t>{0, 1, 2, 3}) {
        k = src;
      } else {
        Attributes ta;
        ta.set("perm", Attribute(perm));
        ops::Shape shape;
        for (int64_t d : perm) shape.push_back(src->shape[d]);
        k = fusion::add_typed(g, {"Transpose", out->name + "_k", {src}, std::move(ta), opset}, src->dtype, shape);
      }
      // (Only here, on the batch-first form: the checks above may still have refused it.)
      if (const ViewedScale vs = scale_before_views(g, qv); vs.first_view) {
        scale *= vs.c;
        g.set_node_input(vs.first_view, 0, vs.unscaled);
      }
      std::vector<ir::Value*> in = {qv, k, vv};
      if (mask) in.push_back(mask);
      Attributes a;
      a.set("scale", Attribute(static_cast<float>(scale)));
      if (causal) a.set("causal", Attribute(int64_t{1}));
      if (b.value("nan_fill")) a.set("masked_rows_zero", Attribute(int64_t{1}));
      fusion::replace_with_node(g, out, "FusedAttention", "kiln", in, std::move(a), 1, "attention");
      return true;
    });
    if (n) fusion::prune_dead_nodes(g);
    ctx.changes += n + dropped;
    if (n) ctx.verbose("fuse_attention: " + std::to_string(n) + " attention blocks -> FusedAttention");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_attention() { return std::make_unique<FuseAttention>(); }

}  // namespace kiln::passes
