// fuse_qkv pass: GEMMs that read the same activation with constant 2-D weights of equal K (attention's Q, K and V
// projections) -> one GEMM over the concatenated weights and biases, followed by a Split of its columns.
#include <map>
#include <tuple>

#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// The part of a (Fused)MatMul that must agree for two of them to share one GEMM.
struct Key {
  DataType dtype;
  int64_t k;
  bool bias;
  std::string act;
  float alpha;
  bool operator<(const Key& o) const {
    return std::tie(dtype, k, bias, act, alpha) < std::tie(o.dtype, o.k, o.bias, o.act, o.alpha);
  }
};

// Whether n is a candidate: A = input 0, constant [K, N] weight (not transposed), no residual; fills its key.
bool candidate(const ir::Graph& g, const ir::Node* n, Key* key) {
  const bool fused = n->op_type == "FusedMatMul" && n->domain == "kiln";
  if (!fused && !(n->op_type == "MatMul" && n->domain.empty())) return false;
  if (n->inputs.size() < 2 || !n->inputs[0] || !n->inputs[1] || n->inputs.size() > 3) return false;
  const ir::Value *a = n->inputs[0], *w = n->inputs[1];
  if (!w->is_constant() || w->constant->rank() != 2 || !dtype_is_float(w->dtype) || w->dtype != a->dtype) return false;
  if (!a->rank_known || a->shape.size() < 2) return false;
  if (match::is_graph_output(g, n->outputs[0])) return false;
  key->dtype = w->dtype;
  key->k = w->constant->dim(0);
  key->bias = n->inputs.size() > 2 && n->inputs[2];
  key->act = "none";
  key->alpha = 1.0f;
  if (fused) {
    auto tb = n->attrs.get_int("trans_b", 0);
    auto act = n->attrs.get_string("activation", "none");
    auto alpha = n->attrs.get_float("alpha", 1.0f);
    if (!tb.ok() || *tb != 0 || !act.ok() || !alpha.ok()) return false;
    key->act = *act;
    key->alpha = *alpha;
  }
  return !key->bias || n->inputs[2]->is_constant();
}

// Concatenates 2-D [K, Ni] (or 1-D [Ni]) constants along their last axis, through float64.
Tensor concat_columns(const std::vector<const Tensor*>& parts, DataType dt) {
  const bool two_d = parts[0]->rank() == 2;
  const int64_t rows = two_d ? parts[0]->dim(0) : 1;
  int64_t cols = 0;
  for (const Tensor* t : parts) cols += t->dim(-1);
  Tensor out(DataType::kDOUBLE, two_d ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{cols});
  double* o = out.data<double>();
  int64_t at = 0;
  for (const Tensor* t : parts) {
    const int64_t c = t->dim(-1);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < c; ++j) o[r * cols + at + j] = t->get_f64(r * c + j);
    at += c;
  }
  return out.cast(dt);
}

class FuseQkv final : public Pass {
 public:
  std::string_view name() const override { return "fuse_qkv"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    fusion::prune_dead_nodes(g);  // bypassed GEMMs of earlier fusions must not be merged
    int merged = 0;
    // Groups by (A, key); one sweep suffices: the merged GEMM's weight is new and matches nothing else.
    std::map<std::pair<const ir::Value*, Key>, std::vector<ir::Node*>> groups;
    for (auto& n : g.nodes()) {
      Key key;
      if (candidate(g, n.get(), &key)) groups[{n->inputs[0], key}].push_back(n.get());
    }
    for (auto& [id, nodes] : groups) {
      if (nodes.size() < 2) continue;
      const Key& key = id.second;
      std::vector<const Tensor*> ws, bs;
      std::vector<int64_t> split;
      for (ir::Node* n : nodes) {
        ws.push_back(n->inputs[1]->constant.get());
        if (key.bias) bs.push_back(n->inputs[2]->constant.get());
        split.push_back(n->inputs[1]->constant->dim(1));
      }
      ir::Node* first = nodes.front();
      ir::Value* a = first->inputs[0];
      std::vector<ir::Value*> in = {a, g.add_constant(first->name + "_merged_w", concat_columns(ws, key.dtype))};
      if (key.bias) in.push_back(g.add_constant(first->name + "_merged_b", concat_columns(bs, key.dtype)));
      Attributes at;
      at.set("activation", Attribute(key.act));
      at.set("alpha", Attribute(key.alpha));
      ir::Node* mm = g.add_node("FusedMatMul", g.unique_node_name(first->name + "_merged"), in,
                                {first->name + "_merged_out"}, std::move(at), 1, "kiln");
      int64_t total = 0;
      for (int64_t s : split) total += s;
      ir::Value* y = mm->outputs[0];
      y->dtype = key.dtype;
      y->rank_known = true;
      y->shape = first->outputs[0]->shape;
      y->shape.back() = ops::Dim(total);
      Attributes sa;
      sa.set("axis", Attribute(int64_t{-1}));
      ir::Value* sizes = g.add_constant(first->name + "_merged_split",
                                        Tensor::from_vector<int64_t>({static_cast<int64_t>(split.size())}, split));
      std::vector<std::string> names;
      for (ir::Node* n : nodes) names.push_back(n->outputs[0]->name + "_part");
      ir::Node* sp = g.add_node("Split", g.unique_node_name(first->name + "_split"), {y, sizes}, names, std::move(sa),
                                std::max(g.opset(), 13));
      for (size_t i = 0; i < nodes.size(); ++i) {
        ir::Value* old = nodes[i]->outputs[0];
        ir::Value* part = sp->outputs[i];
        part->dtype = old->dtype;
        part->shape = old->shape;
        part->rank_known = old->rank_known;
        g.replace_all_uses(old, part);
      }
      ++merged;
    }
    ctx.changes += merged;
    if (merged) ctx.verbose("fuse_qkv: " + std::to_string(merged) + " groups of GEMMs sharing their input merged");
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_qkv() { return std::make_unique<FuseQkv>(); }

}  // namespace kiln::passes
