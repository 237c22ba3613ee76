// fold_attention_layouts pass (CUDA, after the MHA transpose folds): kiln::FusedAttention reads q, k and v where the
// projection wrote them and writes its output in the layout the output projection reads, so the copies between
// (a Transpose + Split of the packed projection before, a Transpose after) disappear:
//  - inputs that are the thirds of a packed [B,S,3,H,D] projection, taken by Transpose(perm [2,0,3,1,4]) -> Split
//    (axis 0) -> Squeeze(axis 0) (what fold_mha_input_transposes builds), q, k, v in that order -> qkv_layout bs3hd
//    on the [B,S,3,H,D] tensor itself;
//  - q, k and v each a Transpose(perm [0,2,1,3]) of a [B,S,H,D] tensor -> qkv_layout bshd on those tensors;
//  - an output whose one use is a Transpose(perm [0,2,1,3]) -> out_layout bshd, the Transpose removed;
//  - sequence-first inputs (qkv_layout sbhd, what fuse_attention makes of torch 1.x nn.MultiheadAttention) that are
//    [S,B,H,D] views (Reshape) of the thirds of one [S,B,3E] projection taken by Slice along its last axis, q, k, v
//    in that order -> qkv_layout sb3hd on a [S,B,3,H,D] view of the projection: the three Slice copies go;
//  - a batch-first model around such a sequence-first block (torch's batch_first=True: Transpose(perm [1,0,2])
//    into the in_proj GEMM, Transpose back after the out_proj GEMM): a GEMM applies to each row, so the in_proj
//    reads the batch-first input itself (qkv_layout bs3hd) and the attention writes bshd, whose rows the out_proj
//    reads in batch-first order; both Transposes go (Shape readers are moved by shape_from_source).
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using match::perm_is;
constexpr auto producer_of = &match::producer_op;

bool rank_is(const ir::Value* v, size_t r) { return v && v->rank_known && v->shape.size() == r; }

// Whether a Squeeze removes exactly axis 0 (axes as input 1 from opset 13, as an attribute before).
bool squeezes_axis0(const ir::Node* n) {
  if (n->inputs.size() > 1 && n->inputs[1]) {
    const ir::Value* a = n->inputs[1];
    return a->is_constant() && a->constant->numel() == 1 && a->constant->get_i64(0) == 0;
  }
  auto axes = n->attrs.get_ints("axes");
  return axes.ok() && axes->size() == 1 && (*axes)[0] == 0;
}

// The [B,S,3,H,D] tensor whose thirds are q, k and v, in that order; null when the inputs are not such views.
ir::Value* packed_source(const ir::Node* att) {
  const ir::Node* split = nullptr;
  for (int i = 0; i < 3; ++i) {
    const ir::Node* sq = producer_of(att->inputs[i], "Squeeze");
    if (!sq || !squeezes_axis0(sq)) return nullptr;
    const ir::Node* sp = producer_of(sq->inputs[0], "Split");
    if (!sp || (split && sp != split) || sp->outputs.size() != 3 || sp->outputs[i] != sq->inputs[0]) return nullptr;
    split = sp;
  }
  auto axis = split->attrs.get_int("axis", 0);
  if (!axis.ok() || *axis != 0) return nullptr;
  for (const ir::Value* o : split->outputs)
    if (!rank_is(o, 5) || !(o->shape[0] == ops::Dim(1))) return nullptr;
  const ir::Node* t = producer_of(split->inputs[0], "Transpose");
  if (!t || !perm_is(t, {2, 0, 3, 1, 4})) return nullptr;
  ir::Value* x = t->inputs[0];
  if (!rank_is(x, 5) || !(x->shape[2] == ops::Dim(3))) return nullptr;
  return x;
}

// The [B,S,H,D] tensor input i is a Transpose of; null otherwise.
ir::Value* bshd_source(const ir::Node* att, int i) {
  const ir::Node* t = producer_of(att->inputs[i], "Transpose");
  if (!t || !perm_is(t, {0, 2, 1, 3}) || !rank_is(t->inputs[0], 4)) return nullptr;
  return t->inputs[0];
}

// A constant integer operand's values (empty when absent or not constant).
std::vector<int64_t> const_ints(const ir::Node* n, size_t input, const char* attr) {
  std::vector<int64_t> r;
  if (input < n->inputs.size() && n->inputs[input]) {
    const ir::Value* v = n->inputs[input];
    return v->is_constant() ? v->constant->to_i64_vector() : r;
  }
  auto a = n->attrs.get_ints(attr);
  return a.ok() ? *a : r;
}

// Which third (0, 1 or 2) of a tensor's last axis `v` is: Slice(a) with constant starts/ends/axes (inputs from
// opset 10, attributes before), step 1, taking [k*E, (k+1)*E) of a last dim of static size 3E; -1 otherwise.
int last_axis_third(const ir::Value* v, const ir::Value** a) {
  const ir::Node* s = producer_of(v, "Slice");
  if (!s || !rank_is(s->inputs[0], 3)) return -1;
  const ops::Dim& whole = s->inputs[0]->shape[2];
  if (!whole.is_static() || whole.value % 3 != 0) return -1;
  const int64_t e = whole.value / 3;
  const std::vector<int64_t> starts = const_ints(s, 1, "starts"), ends = const_ints(s, 2, "ends");
  std::vector<int64_t> axes = const_ints(s, 3, "axes"), steps = const_ints(s, 4, "steps");
  if (axes.empty() && !(s->inputs.size() > 3 && s->inputs[3])) axes = {0, 1, 2};  // absent: the first dims
  if (starts.size() != 1 || ends.size() != 1 || axes.size() < 1 || (axes[0] != 2 && axes[0] != -1)) return -1;
  if (!steps.empty() && (steps.size() != 1 || steps[0] != 1)) return -1;
  const int64_t k = starts[0] / std::max<int64_t>(e, 1);
  if (k < 0 || k > 2 || starts[0] != k * e || !(ends[0] == (k + 1) * e || (k == 2 && ends[0] >= 3 * e))) return -1;
  *a = s->inputs[0];
  return static_cast<int>(k);
}

// The [S,B,3E] projection whose thirds q, k and v (qkv_layout sbhd) are [S,B,H,D] views of; null otherwise.
ir::Value* seq_first_packed_source(const ir::Node* att) {
  const ir::Value* a = nullptr;
  for (int i = 0; i < 3; ++i) {
    const ir::Node* r = producer_of(att->inputs[i], "Reshape");
    const ir::Value* ai = nullptr;
    if (!r || !rank_is(att->inputs[i], 4) || last_axis_third(r->inputs[0], &ai) != i || (a && ai != a)) return nullptr;
    a = ai;
  }
  const ir::Value* q = att->inputs[0];
  if (!(att->inputs[1]->shape[3] == q->shape[3]) || !(att->inputs[2]->shape[3] == q->shape[3])) return nullptr;
  return const_cast<ir::Value*>(a);
}

// A GEMM that applies to each row of its input 0 alone (FusedMatMul or MatMul with a constant 2-D B, no residual
// input): reordering its input's rows reorders its output's the same way.
bool row_wise_gemm(const ir::Node* n) {
  const bool fused = n->op_type == "FusedMatMul" && n->domain == "kiln";
  const bool plain = n->op_type == "MatMul" && n->domain.empty();
  const bool gemm = n->op_type == "Gemm" && n->domain.empty();
  if ((!fused && !plain && !gemm) || n->inputs.size() < 2 || !n->inputs[1] || !n->inputs[1]->is_constant() ||
      n->inputs[1]->constant->rank() != 2 || n->outputs.size() != 1)
    return false;
  if (gemm) {  // A not transposed; C, if any, one row for all rows (a [M,N] C would be tied to the row order)
    auto ta = n->attrs.get_int("transA", 0);
    const ir::Value* c = n->inputs.size() > 2 ? n->inputs[2] : nullptr;
    return ta.ok() && *ta == 0 &&
           (!c || (c->rank_known && (c->shape.size() <= 1 || (c->shape.size() == 2 && c->shape[0] == ops::Dim(1)))));
  }
  return !(fused && n->inputs.size() > 3 && n->inputs[3]);
}

// The one node reading v (not a graph output), else null.
ir::Node* sole_user(const ir::Graph& g, const ir::Value* v, const char* op) {
  if (!v || v->users.size() != 1 || match::is_graph_output(g, v)) return nullptr;
  ir::Node* u = v->users[0];
  return u->op_type == op && (u->domain.empty() || std::string(op) == "FusedMatMul") ? u : nullptr;
}

// The layout attribute's value, "" when it is not a string.
std::string layout_of(const ir::Node* n, const char* attr) {
  auto l = n->attrs.get_string(attr, "bhsd");
  return l.ok() ? *l : "";
}

class FoldAttentionLayouts final : public Pass {
 public:
  std::string_view name() const override { return "fold_attention_layouts"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    // The chains the earlier folds bypassed still read the attention's output: an output Transpose is only seen as
    // its one use once they are gone.
    KILN_RETURN_IF_ERROR(make_dead_code_elimination()->apply(g, ctx));
    g.rebuild_links();
    std::vector<ir::Node*> attention;
    for (auto& n : g.nodes())
      if (n->domain == "kiln" && n->op_type == "FusedAttention" && n->inputs.size() >= 3) attention.push_back(n.get());
    int inputs = 0, outputs = 0;
    for (ir::Node* att : attention) {
      if (layout_of(att, "qkv_layout") == "bhsd" && att->inputs[1] && att->inputs[2]) {
        if (ir::Value* x = packed_source(att)) {
          g.set_node_input(att, 0, x);
          g.set_node_input(att, 1, nullptr);
          g.set_node_input(att, 2, nullptr);
          att->attrs.set("qkv_layout", std::string("bs3hd"));
          ++inputs;
        } else if (ir::Value *q = bshd_source(att, 0), *k = bshd_source(att, 1), *v = bshd_source(att, 2);
                   q && k && v) {
          g.set_node_input(att, 0, q);
          g.set_node_input(att, 1, k);
          g.set_node_input(att, 2, v);
          att->attrs.set("qkv_layout", std::string("bshd"));
          ++inputs;
        }
      }
      if (layout_of(att, "qkv_layout") == "sbhd" && att->inputs[1] && att->inputs[2]) {
        if (ir::Value* a = seq_first_packed_source(att)) {
          const ir::Value* q = att->inputs[0];
          const ops::Dim &h = q->shape[2], &d = q->shape[3];
          if (h.is_static() && d.is_static()) {
            ir::Value* shape = g.add_constant(att->name + "_qkv_shape",
                                              Tensor::from_vector<int64_t>({5}, {0, 0, 3, h.value, d.value}));
            ir::Node* r = g.add_node("Reshape", g.unique_node_name(att->name + "_qkv"), {a, shape},
                                     {att->name + "_qkv"}, {}, g.opset());
            ir::Value* packed = r->outputs[0];
            packed->dtype = a->dtype;
            packed->rank_known = true;
            packed->shape = {a->shape[0], a->shape[1], ops::Dim(3), h, d};
            g.set_node_input(att, 0, packed);
            g.set_node_input(att, 1, nullptr);
            g.set_node_input(att, 2, nullptr);
            att->attrs.set("qkv_layout", std::string("sb3hd"));
            ++inputs;
          }
        }
      }
      if (fold_output(g, att)) ++outputs;
    }
    // The batch-first rewrites count the readers of the projections: the Slices bypassed above must be gone.
    bool seq_first = false;
    for (ir::Node* att : attention) seq_first |= layout_of(att, "out_layout") == "sbhd";
    if (seq_first) {
      KILN_RETURN_IF_ERROR(make_dead_code_elimination()->apply(g, ctx));
      g.rebuild_links();
      for (ir::Node* att : attention) {
        inputs += batch_first_input(g, att);
        outputs += batch_first_output(g, att);
      }
    }
    if (inputs + outputs) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += inputs + outputs;
      ctx.verbose("fold_attention_layouts: " + std::to_string(inputs) + " attention layers read q/k/v in place, " +
                  std::to_string(outputs) + " write [B,S,H,D]");
    }
    return Status::Ok();
  }

 private:
  // sb3hd on [S,B,3,H,D] = Reshape(A), A = GEMM(Transpose(perm [1,0,2])(X)) with X [B,S,E], A read only by that
  // Reshape: the GEMM reads X, A is [B,S,3E], the attention reads bs3hd.
  static bool batch_first_input(ir::Graph& g, ir::Node* att) {
    if (layout_of(att, "qkv_layout") != "sb3hd") return false;
    ir::Value* p = att->inputs[0];
    const ir::Node* view = producer_of(p, "Reshape");
    if (!view || !rank_is(p, 5)) return false;
    ir::Value* a = view->inputs[0];
    ir::Node* gemm = a->producer;
    if (a->users.size() != 1 || match::is_graph_output(g, a) || !gemm || !row_wise_gemm(gemm) || !rank_is(a, 3))
      return false;
    const ir::Node* t = producer_of(gemm->inputs[0], "Transpose");
    if (!t || !perm_is(t, {1, 0, 2}) || !rank_is(t->inputs[0], 3)) return false;
    ir::Value* x = t->inputs[0];
    g.set_node_input(gemm, 0, x);
    a->shape = {x->shape[0], x->shape[1], a->shape[2]};
    p->shape = {x->shape[0], x->shape[1], p->shape[2], p->shape[3], p->shape[4]};
    att->attrs.set("qkv_layout", std::string("bs3hd"));
    g.rebuild_links();
    return true;
  }

  // sbhd output O -> Reshape [S,B*H,Dv] -> Reshape [S*B,E] -> row-wise GEMM -> Reshape [S,B,E'] -> Transpose(perm
  // [1,0,2]), each read only by the next: O written bshd, the GEMM's rows are then (b, s), the last Reshape gives
  // [B,S,E'] (a constant target [-1,S,E']: S must be static) and the Transpose goes.
  static bool batch_first_output(ir::Graph& g, ir::Node* att) {
    ir::Value* o = att->outputs[0];
    if (layout_of(att, "out_layout") != "sbhd" || !rank_is(o, 4) || !o->shape[0].is_static()) return false;
    ir::Node* r1 = sole_user(g, o, "Reshape");
    ir::Node* r3 = r1 ? sole_user(g, r1->outputs[0], "Reshape") : nullptr;
    ir::Node* gemm = nullptr;
    for (const char* op : {"FusedMatMul", "MatMul", "Gemm"})
      if (!gemm && r3) gemm = sole_user(g, r3->outputs[0], op);
    ir::Node* r4 = gemm ? sole_user(g, gemm->outputs[0], "Reshape") : nullptr;
    ir::Node* t = r4 ? sole_user(g, r4->outputs[0], "Transpose") : nullptr;
    if (!t || !row_wise_gemm(gemm) || gemm->inputs[0] != r3->outputs[0] || !rank_is(r1->outputs[0], 3) ||
        !rank_is(r3->outputs[0], 2) || !rank_is(r4->outputs[0], 3) || !perm_is(t, {1, 0, 2}))
      return false;
    const ops::Dim s = o->shape[0], e = r4->outputs[0]->shape[2], h = o->shape[2], dv = o->shape[3];
    // The GEMM's rows are whole tokens ([S*B, H*Dv]), so that reordering them is reordering tokens.
    const ops::Dim& k = r3->outputs[0]->shape[1];
    if (!e.is_static() || !h.is_static() || !dv.is_static() || !(r4->outputs[0]->shape[0] == s) || !k.is_static() ||
        k.value != h.value * dv.value)
      return false;
    att->attrs.set("out_layout", std::string("bshd"));
    o->shape = {o->shape[1], s, h, dv};
    r1->outputs[0]->shape = {o->shape[0], ops::Dim(s.value * h.value), dv};
    ir::Value* target =
        g.add_constant(r4->name + "_batch_first", Tensor::from_vector<int64_t>({3}, {-1, s.value, e.value}));
    g.set_node_input(r4, 1, target);
    ir::Value* y = r4->outputs[0];
    y->shape = t->outputs[0]->shape;
    // (a network output where the block ends the model: it keeps its name)
    fusion::take_place(g, t->outputs[0], y, "_folded");
    g.remove_node(t);
    g.rebuild_links();
    return true;
  }

  static bool fold_output(ir::Graph& g, ir::Node* att) {
    ir::Value* y = att->outputs[0];
    if (layout_of(att, "out_layout") != "bhsd" || match::is_graph_output(g, y) ||
        y->users.size() != 1)
      return false;
    ir::Node* t = y->users[0];
    if (!t->domain.empty() || t->op_type != "Transpose" || !perm_is(t, {0, 2, 1, 3}) || !rank_is(t->outputs[0], 4))
      return false;
    // The attention produces the Transpose's value itself (its name may be what later layers read).
    ir::Value* out = t->outputs[0];
    g.remove_node(t);
    att->outputs[0] = out;
    out->producer = att;
    att->attrs.set("out_layout", std::string("bshd"));
    g.rebuild_links();
    g.remove_value(y);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_attention_layouts() { return std::make_unique<FoldAttentionLayouts>(); }

}  // namespace kiln::passes
