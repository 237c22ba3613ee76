// sink_head_transposes pass (CUDA, before fuse_attention): HF Llama-style rotary embeddings run on q and k after the
// head-splitting Transpose ([B,S,H,D] -> [B,H,S,D]): q * cos + cat(-q2, q1) * sin, with cos/sin constants. The
// Transpose then feeds elementwise work instead of the attention, and fold_attention_layouts cannot read q and k in
// place. The Transpose moves below that region: the region computes on the [B,S,H,D] tensor (its constants, Slice
// axes and Concat axis permuted to match) and one Transpose of its single result takes the old one's place, where
// fold_attention_layouts removes it. Taken only where the region ends in one value read by a MatMul or a Transpose
// (the attention's operand or K^T), or by the Unsqueeze that starts a grouped-query model's repeat_kv of K (which
// fuse_attention folds into the attention), so no copy is added anywhere else.
#include <map>
#include <optional>
#include <set>

#include "ops/layout_util.h"
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

bool elementwise(const ir::Node* n) {
  return n->domain.empty() &&
         (n->op_type == "Mul" || n->op_type == "Add" || n->op_type == "Sub" || n->op_type == "Neg");
}

std::optional<std::vector<int64_t>> const_ints(const ir::Value* v) {
  if (!v || !v->is_constant()) return std::nullopt;
  return v->constant->to_i64_vector();
}

// A constant of rank <= 4 in the transposed layout, as the same values in the source layout: extended to rank 4 with
// leading 1s, then transposed back (perm is its own inverse). Scalars stay as they are.
std::optional<Tensor> to_source_layout(const Tensor& c, const std::vector<int64_t>& perm) {
  if (c.numel() == 1 && c.rank() <= 1) return c;
  if (c.rank() > 4) return std::nullopt;
  std::vector<int64_t> s4(4 - c.rank(), 1);
  for (int64_t d : c.shape()) s4.push_back(d);
  auto t = ops::permute(c.reshaped(s4), perm);
  if (!t.ok()) return std::nullopt;
  return std::move(t).value();
}

// The first step of HF's repeat_kv (grouped-query attention): Unsqueeze(axes [2]) of K before its Expand over
// the group; fuse_attention then reads K unrepeated, so the Transpose sunk above it reaches the attention too.
bool repeat_kv_unsqueeze(const ir::Node* n) {
  if (n->op_type != "Unsqueeze" || !n->domain.empty() || n->outputs[0]->users.size() != 1) return false;
  const ir::Node* ex = n->outputs[0]->users[0];
  if ((ex->op_type != "Expand" && ex->op_type != "Tile") || !ex->domain.empty()) return false;
  std::optional<std::vector<int64_t>> axes;
  if (n->inputs.size() > 1) {
    axes = const_ints(n->inputs[1]);
  } else if (auto a = n->attrs.get_ints("axes"); a.ok()) {
    axes = *a;
  }
  return axes && axes->size() == 1 && ((*axes)[0] == 2 || (*axes)[0] == -3);
}

// A tensor computed at run time that broadcasts over the heads: rank <= 4 with, extended to rank 4, a static 1 as its
// head dim ([B,1,S,D] from HF's cos.unsqueeze(1), or [S,D]). In the [B,S,H,D] layout it is the same bytes as
// [B,S,1,D], so a Reshape (a view) gives it that layout where a constant would be permuted.
bool one_head(const ir::Value* v) {
  if (!v->rank_known || v->shape.empty() || v->shape.size() > 4 || !dtype_is_float(v->dtype)) return false;
  const size_t r = v->shape.size();
  return r < 3 || (v->shape[r - 3].is_static() && v->shape[r - 3].value == 1);
}

// v (one_head) as [B,S,1,D] in the sunk layout: Unsqueeze to rank 4 if shorter, then Reshape [0,-1,1,0] (the head
// dim of 1 moves behind the sequence dim without moving a byte).
ir::Value* bshd_view(ir::Graph& g, ir::Value* v, int opset) {
  ir::Value* x = v;
  const int64_t r = static_cast<int64_t>(v->shape.size());
  if (r < 4) {
    std::vector<int64_t> axes;
    for (int64_t i = 0; i < 4 - r; ++i) axes.push_back(i);
    Attributes a;
    std::vector<ir::Value*> in = {v};
    if (opset >= 13) {
      in.push_back(fusion::add_int64s(g, v->name + "_unsq_axes", axes));
    } else {
      a.set("axes", Attribute(axes));
    }
    ops::Shape shape(4 - r, ops::Dim(1));
    shape.insert(shape.end(), v->shape.begin(), v->shape.end());
    x = fusion::add_typed(g, {"Unsqueeze", v->name + "_rank4", in, std::move(a), opset}, v->dtype, shape);
  }
  return fusion::reshape_view(g, x, v->name + "_bshd", {0, -1, 1, 0},
                              {x->shape[0], x->shape[2], ops::Dim(1), x->shape[3]}, opset);
}

class SinkHeadTransposes final : public Pass {
 public:
  std::string_view name() const override { return "sink_head_transposes"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    std::vector<ir::Node*> cands;
    for (const auto& n : g.nodes())
      if (n->op_type == "Transpose" && n->domain.empty() && match::perm_is(n.get(), {0, 2, 1, 3}) &&
          n->outputs[0]->rank_known && n->outputs[0]->shape.size() == 4 && !match::is_graph_output(g, n->outputs[0]))
        cands.push_back(n.get());
    int moved = 0;
    for (ir::Node* t : cands) moved += sink(g, t);
    if (moved) {
      g.rebuild_links();
      ctx.changes += moved;
      ctx.verbose("sink_head_transposes: " + std::to_string(moved) + " head Transposes below rotary embeddings");
    }
    return g.topo_sort();
  }

 private:
  static bool sink(ir::Graph& g, ir::Node* t) {
    const std::vector<int64_t> perm = {0, 2, 1, 3};  // its own inverse
    ir::Value* tv = t->outputs[0];
    // The region: nodes reachable from the Transpose's result through the allowed ops, every input of which is a
    // region value, the Transpose's result or a constant.
    std::set<const ir::Value*> inside = {tv};
    std::vector<ir::Node*> region;
    std::set<const ir::Node*> seen;
    std::vector<ir::Value*> work = {tv};
    while (!work.empty()) {
      ir::Value* v = work.back();
      work.pop_back();
      for (ir::Node* u : v->users) {
        if (seen.count(u)) continue;
        const bool slice = u->op_type == "Slice" && u->domain.empty() && u->inputs.size() >= 4 && u->inputs[0] == v;
        const bool concat = u->op_type == "Concat" && u->domain.empty();
        if (!elementwise(u) && !slice && !concat) continue;  // an exit: checked below
        seen.insert(u);
        region.push_back(u);
        inside.insert(u->outputs[0]);
        work.push_back(u->outputs[0]);
      }
    }
    if (region.empty() || region.size() > 32) return false;
    // Inputs: region values, constants (Slice's parameters included), or tensors computed at run time that broadcast
    // over the heads (a dynamic-length export's cos/sin, [B,1,S,D] or [S,D]); one exit value, read only outside.
    ir::Value* exit = nullptr;
    for (ir::Node* n : region) {
      if (n->outputs.size() != 1 || !n->outputs[0]->rank_known || n->outputs[0]->shape.size() != 4) return false;
      for (size_t i = 0; i < n->inputs.size(); ++i) {
        const ir::Value* in = n->inputs[i];
        if (!in) continue;
        if (!inside.count(in) && !in->is_constant() && !(elementwise(n) && one_head(in))) return false;
        if (n->op_type == "Slice" && i > 0 && !in->is_constant()) return false;
        if (n->op_type == "Slice" && i == 0 && !inside.count(in)) return false;
      }
      ir::Value* o = n->outputs[0];
      bool outside = match::is_graph_output(g, o), in_region = false;
      for (const ir::Node* u : o->users) (seen.count(u) ? in_region : outside) = true;
      if (outside) {
        if (in_region || exit) return false;
        exit = o;
      }
    }
    for (const ir::Node* u : tv->users)
      if (!seen.count(u)) return false;  // the Transpose's result is read outside the region too
    if (!exit || match::is_graph_output(g, exit)) return false;
    // One data reader; Shape readers (the dims repeat_kv's Expand target is built from) read the Transpose's
    // result instead, which has the old shape.
    const ir::Node* reader = nullptr;
    for (const ir::Node* u : exit->users) {
      if (u->op_type == "Shape" && u->domain.empty()) continue;
      if (reader) return false;
      reader = u;
    }
    if (!reader || (reader->op_type != "MatMul" && reader->op_type != "Transpose" && !repeat_kv_unsqueeze(reader)))
      return false;
    // Slice axes and Concat axis in the source layout; constants permuted. Checked for every node before changing.
    std::map<const ir::Value*, Tensor> new_consts;
    for (ir::Node* n : region) {
      if (n->op_type == "Slice") {
        auto axes = const_ints(n->inputs[3]);
        if (!axes) return false;
      } else if (n->op_type == "Concat") {
        if (!n->attrs.get_int("axis").ok()) return false;
        for (const ir::Value* in : n->inputs)
          if (!inside.count(in)) return false;  // a constant part would need permuting too
      } else {
        for (const ir::Value* in : n->inputs)
          if (in && in->is_constant() && !new_consts.count(in)) {
            auto c = to_source_layout(*in->constant, perm);
            if (!c) return false;
            new_consts.emplace(in, std::move(*c));
          }
      }
    }
    ir::Value* src = t->inputs[0];
    std::map<const ir::Value*, ir::Value*> side_views;  // a run-time input -> its [B,S,1,D] view
    for (ir::Node* n : region) {
      if (n->op_type == "Slice") {
        std::vector<int64_t> axes = *const_ints(n->inputs[3]);
        for (int64_t& a : axes) a = perm[a < 0 ? a + 4 : a];
        g.set_node_input(n, 3, fusion::add_int64s(g, n->name + "_axes_bshd", axes));
      } else if (n->op_type == "Concat") {
        int64_t a = n->attrs.get_int("axis").value();
        n->attrs.set("axis", Attribute(perm[a < 0 ? a + 4 : a]));
      } else {
        for (size_t i = 0; i < n->inputs.size(); ++i) {
          ir::Value* in = n->inputs[i];
          if (auto it = new_consts.find(in); it != new_consts.end() && it->second.rank() == 4) {
            g.set_node_input(n, i, g.add_constant(in->name + "_bshd", it->second));
          } else if (in && !in->is_constant() && !inside.count(in) && in != tv) {
            auto v = side_views.find(in);
            if (v == side_views.end()) v = side_views.emplace(in, bshd_view(g, in, t->opset)).first;
            g.set_node_input(n, i, v->second);
          }
        }
      }
      for (size_t i = 0; i < n->inputs.size(); ++i)
        if (n->inputs[i] == tv) g.set_node_input(n, i, src);
      ir::Value* o = n->outputs[0];
      o->shape = ops::permute_shape(o->shape, perm);
    }
    // One Transpose of the region's result where the exit was read.
    const std::vector<ir::Node*> readers = exit->users;
    Attributes a;
    a.set("perm", Attribute(perm));
    ir::Value* bv =
        fusion::add_typed(g, {"Transpose", t->name + "_sunk", {exit}, std::move(a), t->opset, exit->name + "_bhsd"},
                          exit->dtype, ops::permute_shape(exit->shape, perm));
    for (ir::Node* r : readers)
      for (size_t i = 0; i < r->inputs.size(); ++i)
        if (r->inputs[i] == exit) g.set_node_input(r, i, bv);
    g.remove_node(t);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_sink_head_transposes() { return std::make_unique<SinkHeadTransposes>(); }

}  // namespace kiln::passes
