// lower_onnx_attention pass (CUDA, before fuse_attention): the standard ONNX Attention operator (opset 23, what
// torch's dynamo exporter writes for scaled_dot_product_attention at that opset) becomes kiln::FusedAttention, which
// has CUDA kernels; the operator itself has only the CPU reference kernel, so on a GPU engine it would run on the
// host with its operands copied there and back. Taken where the two compute the same thing: no KV cache (past_key,
// past_value and nonpad_kv_seqlen absent, present_key/present_value and the qk output unread), no softcap or
// sliding window, and a mask (bool or Q's float type) whose last dimension is the key length; K/V heads as many as
// Q's or (grouped-query) a divisor of them. 4-D operands are read as they are ([B,H,S,D]); 3-D ones ([B,S,H*D] with
// q_num_heads/kv_num_heads) through Reshape views as [B,S,H,D], and the output is written [B,S,H,Dv] and shown as
// [B,S,H*Dv]. A bool mask becomes the
// additive one FusedAttention takes (0 where true, -inf where false), and a query row whose every key is masked gives
// zeros, as the operator specifies (masked_rows_zero).
#include <cmath>
#include <limits>

#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// Two dims known equal: the same static value or the same symbol.
bool same(const ops::Dim& a, const ops::Dim& b) { return a == b; }

bool present(const ir::Node* n, size_t i) { return i < n->inputs.size() && n->inputs[i] != nullptr; }

// Whether output i is absent or nothing reads it.
bool unread(const ir::Graph& g, const ir::Node* n, size_t i) {
  if (i >= n->outputs.size() || !n->outputs[i]) return true;
  return n->outputs[i]->users.empty() && !match::is_graph_output(g, n->outputs[i]);
}

// The problem as the lowering needs it: head counts, head sizes, and the 3-D form's flag.
struct Lowering {
  bool three_d = false;
  int64_t H = 0, Hk = 0, D = 0, Dv = 0;  // the 3-D form's head counts (4-D operands carry theirs)
};

std::optional<Lowering> plan(const ir::Node* n) {
  const ir::Value *q = n->inputs[0], *k = n->inputs[1], *v = n->inputs[2];
  if (!q->rank_known || !k->rank_known || !v->rank_known) return std::nullopt;
  if (q->dtype != DataType::kFLOAT && q->dtype != DataType::kHALF && q->dtype != DataType::kBF16) return std::nullopt;
  if (k->dtype != q->dtype || v->dtype != q->dtype) return std::nullopt;
  const size_t rank = q->shape.size();
  if ((rank != 3 && rank != 4) || k->shape.size() != rank || v->shape.size() != rank) return std::nullopt;
  Lowering l;
  l.three_d = rank == 3;
  if (l.three_d) {
    auto qh = n->attrs.get_int("q_num_heads", 0), kvh = n->attrs.get_int("kv_num_heads", 0);
    if (!qh.ok() || !kvh.ok() || *qh <= 0 || *kvh <= 0 || *qh % *kvh) return std::nullopt;
    const ops::Dim &eq = q->shape[2], &ek = k->shape[2], &ev = v->shape[2];
    if (!eq.is_static() || !ek.is_static() || !ev.is_static()) return std::nullopt;
    if (eq.value % *qh || ek.value % *kvh || ev.value % *kvh || ek.value / *kvh != eq.value / *qh) return std::nullopt;
    l.H = *qh;
    l.Hk = *kvh;
    l.D = eq.value / *qh;
    l.Dv = ev.value / *kvh;
    if (!same(k->shape[1], v->shape[1])) return std::nullopt;  // K and V lengths
  } else {
    // Heads: K's and V's the same, and Q's either the same or (grouped-query) a static multiple of them.
    const ops::Dim &hq = q->shape[1], &hk = k->shape[1];
    if (!same(hk, v->shape[1])) return std::nullopt;
    if (!same(hq, hk) && !(hq.is_static() && hk.is_static() && hk.value > 0 && hq.value % hk.value == 0))
      return std::nullopt;
    if (!same(k->shape[2], v->shape[2])) return std::nullopt;
    if (!q->shape[3].is_static() || !same(q->shape[3], k->shape[3]) || !v->shape[3].is_static()) return std::nullopt;
    l.D = q->shape[3].value;
    l.Dv = v->shape[3].value;
  }
  if (!same(q->shape[0], k->shape[0]) || !same(q->shape[0], v->shape[0])) return std::nullopt;  // batch
  return l;
}

class LowerOnnxAttention final : public Pass {
 public:
  std::string_view name() const override { return "lower_onnx_attention"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    std::vector<ir::Node*> cands;
    for (const auto& n : g.nodes())
      if (n->op_type == "Attention" && n->domain.empty()) cands.push_back(n.get());
    int lowered = 0;
    for (ir::Node* n : cands) lowered += lower(g, n);
    if (lowered) {
      fusion::prune_dead_nodes(g);
      ctx.changes += lowered;
      ctx.verbose("lower_onnx_attention: " + std::to_string(lowered) + " Attention nodes as FusedAttention");
    }
    return g.topo_sort();
  }

 private:
  static bool lower(ir::Graph& g, ir::Node* n) {
    if (n->inputs.size() < 3 || !present(n, 0) || !present(n, 1) || !present(n, 2)) return false;
    for (size_t i : {4, 5, 6})
      if (present(n, i)) return false;  // KV cache or per-batch key lengths
    for (size_t i : {1, 2, 3})
      if (!unread(g, n, i)) return false;
    auto softcap = n->attrs.get_float("softcap", 0.0f);
    auto left = n->attrs.get_int("left_window_size", -1), right = n->attrs.get_int("right_window_size", -1);
    auto causal = n->attrs.get_int("is_causal", 0);
    if (!softcap.ok() || *softcap != 0.0f || !left.ok() || *left != -1 || !right.ok() || *right != -1 || !causal.ok())
      return false;
    std::optional<Lowering> l = plan(n);
    if (!l) return false;
    ir::Value *q = n->inputs[0], *k = n->inputs[1], *v = n->inputs[2];
    ir::Value* mask = present(n, 3) ? n->inputs[3] : nullptr;
    // The key length every mask row must cover (the operator pads a shorter mask with -inf; FusedAttention
    // broadcasts instead, so only a full-length mask means the same to both).
    const ops::Dim& sk = k->shape[l->three_d ? 1 : 2];
    if (mask) {
      if (!mask->rank_known || mask->shape.empty() || mask->shape.size() > 4 || !same(mask->shape.back(), sk))
        return false;
      if (mask->dtype != DataType::kBOOL && mask->dtype != q->dtype) return false;
    }
    float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(l->D)));
    if (n->attrs.has("scale")) {
      auto s = n->attrs.get_float("scale");
      if (!s.ok()) return false;
      scale = *s;
    }

    const int opset = g.opset();
    const std::string base = n->outputs[0]->name;
    std::vector<ir::Value*> sources = {q, k, v};
    if (mask) sources.push_back(mask);
    if (mask && mask->dtype == DataType::kBOOL) {
      // 0 where a key is attended, -inf where not: the additive form, in Q's type.
      auto scalar = [&](const char* what, float x) {
        return g.add_constant(base + what, Tensor::from_vector<float>({}, {x}).cast(q->dtype));
      };
      ir::Value *keep = scalar("_mask_keep", 0.0f),
                *hide = scalar("_mask_hide", -std::numeric_limits<float>::infinity());
      mask = fusion::add_typed(g, {"Where", base + "_mask", {mask, keep, hide}, {}, opset, base + "_additive_mask"},
                               q->dtype, mask->shape);
    }
    std::vector<ir::Value*> in;
    if (l->three_d) {
      // [B,S,H*D] as [B,S,H,D] (views).
      in = {fusion::split_heads(g, q, l->H, l->D, base + "_q_heads", opset),
            fusion::split_heads(g, k, l->Hk, l->D, base + "_k_heads", opset),
            fusion::split_heads(g, v, l->Hk, l->Dv, base + "_v_heads", opset)};
    } else {
      in = {q, k, v};
    }
    if (mask) in.push_back(mask);
    Attributes a;
    a.set("scale", Attribute(scale));
    if (*causal) a.set("causal", Attribute(int64_t{1}));
    if (mask) a.set("masked_rows_zero", Attribute(int64_t{1}));  // only a mask can hide every key of a row
    if (l->three_d) {
      a.set("qkv_layout", std::string("bshd"));
      a.set("out_layout", std::string("bshd"));
    }
    ir::Value* out = n->outputs[0];
    if (!l->three_d) {
      fusion::replace_with_node(g, out, "FusedAttention", "kiln", in, std::move(a), 1, "attention", sources);
      g.rebuild_links();  // the Attention node, unread now, goes with prune_dead_nodes
      return true;
    }
    ir::Value* y =
        fusion::add_typed(g, {"FusedAttention", "attention", in, std::move(a), 1, out->name + "_bshd", "kiln"},
                          out->dtype, {q->shape[0], q->shape[1], ops::Dim(l->H), ops::Dim(l->Dv)});
    match::record_fusion(y->producer, {n});
    fusion::view_in_place(g, out, y, {0, 0, l->H * l->Dv}, "_unlowered", opset);
    g.rebuild_links();
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_lower_onnx_attention() { return std::make_unique<LowerOnnxAttention>(); }

}  // namespace kiln::passes
