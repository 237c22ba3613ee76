// lower_einsum pass (CUDA, before the transformer fusions): Einsum has only the CPU reference kernel (a loop over
// every label combination), so in a GPU engine it would run on the host. One- and two-operand equations without a
// repeated label in an operand (no diagonals) become the ops they stand for: ReduceSum over the labels only one
// operand has and the output lacks, then for two operands
//   A -> Transpose [batch, a-only, contracted] -> Reshape [batch, M, K]
//   B -> Transpose [batch, contracted, b-only] -> Reshape [batch, K, N]
//   MatMul -> Reshape [batch, a-only dims, b-only dims] -> Transpose to the output's order,
// each step left out where it would do nothing. Batch labels (in both operands and the output) stay separate
// leading dims, which MatMul broadcasts; an ellipsis is a run of such labels. An attention written as einsums
// ("bhqd,bhkd->bhqk", softmax, "bhqk,bhkd->bhqd") so becomes MatMul(Q, Transpose(K)) ... MatMul(P, V), the form
// fuse_attention takes. Left as Einsum: three or more operands, diagonals, non-float types, a batch label missing
// from one operand, and groups of dims to merge of which more than one is dynamic (a Reshape takes one -1).
#include <algorithm>
#include <map>
#include <optional>

#include "ops/einsum.h"
#include "ops/layout_util.h"
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

bool has(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }
int pos(const std::vector<int>& v, int x) { return static_cast<int>(std::find(v.begin(), v.end(), x) - v.begin()); }

class Lowerer {
 public:
  Lowerer(ir::Graph& g, ir::Node* n) : g_(g), n_(n), base_(n->outputs[0]->name), opset_(g.opset()) {}

  bool run() {
    const ir::Node* n = n_;
    if (n->inputs.empty() || n->inputs.size() > 2) return false;
    std::vector<size_t> ranks;
    for (const ir::Value* v : n->inputs) {
      if (!v || !v->rank_known || !dtype_is_float(v->dtype)) return false;
      ranks.push_back(v->shape.size());
    }
    auto eq = n->attrs.get_string("equation");
    if (!eq.ok()) return false;
    auto plan = ops::parse_einsum(*eq, ranks);
    if (!plan.ok()) return false;
    std::vector<std::vector<int>> labels = plan->inputs;
    const std::vector<int>& out = plan->output;
    for (const auto& l : labels)
      for (size_t i = 0; i < l.size(); ++i)
        if (std::count(l.begin(), l.end(), l[i]) > 1) return false;  // a diagonal
    // Each label's dim, from the operands (a batch label may be 1 in one and n in the other: MatMul broadcasts).
    std::vector<ir::Value*> x(n->inputs.begin(), n->inputs.end());
    for (size_t t = 0; t < x.size(); ++t)
      for (size_t i = 0; i < labels[t].size(); ++i) {
        const ops::Dim& d = x[t]->shape[i];
        auto it = dims_.find(labels[t][i]);
        if (it == dims_.end() || (it->second.is_static() && it->second.value == 1)) dims_[labels[t][i]] = d;
      }
    // Sum away what only one operand has and the output lacks.
    for (size_t t = 0; t < x.size(); ++t) {
      std::vector<int64_t> axes;
      std::vector<int> kept;
      for (size_t i = 0; i < labels[t].size(); ++i) {
        const int l = labels[t][i];
        const bool other = x.size() == 2 && has(labels[1 - t], l);
        if (!other && !has(out, l))
          axes.push_back(static_cast<int64_t>(i));
        else
          kept.push_back(l);
      }
      if (!axes.empty()) {
        x[t] = reduce_sum(x[t], axes);
        if (!x[t]) return false;
        labels[t] = kept;
      }
    }
    ir::Value* y = nullptr;
    if (x.size() == 1) {
      y = transpose(x[0], labels[0], out);
    } else {
      y = contract(x, labels, out);
    }
    if (!y) return false;
    finish(y);
    return true;
  }

 private:
  ir::Value* node(const std::string& op, std::vector<ir::Value*> in, Attributes a = {}) {
    ir::Value* y = fusion::add_inferred(g_, {op, base_ + "_" + op, std::move(in), std::move(a), opset_});
    if (y) added_.push_back(y->producer);
    return y;
  }

  ir::Value* reduce_sum(ir::Value* v, const std::vector<int64_t>& axes) {
    Attributes a;
    a.set("keepdims", Attribute(int64_t{0}));
    if (opset_ < 13) {
      a.set("axes", Attribute(axes));
      return node("ReduceSum", {v}, std::move(a));
    }
    return node("ReduceSum", {v, fusion::add_int64s(g_, base_ + "_axes", axes)}, std::move(a));
  }

  // v, whose dims carry `from`'s labels, with its dims in `to`'s order (the same labels).
  ir::Value* transpose(ir::Value* v, const std::vector<int>& from, const std::vector<int>& to) {
    if (!v || from == to) return v;
    std::vector<int64_t> perm;
    for (int l : to) perm.push_back(pos(from, l));
    if (v->is_constant()) {  // a weight: permuted now, not at every run
      auto t = ops::permute(*v->constant, perm);
      return t.ok() ? g_.add_constant(base_ + "_permuted", std::move(t).value()) : nullptr;
    }
    Attributes a;
    a.set("perm", Attribute(perm));
    return node("Transpose", {v}, std::move(a));
  }

  // The product of the labels' dims: static, or -1 where exactly one is dynamic; nullopt where more are.
  std::optional<int64_t> merged(const std::vector<int>& ls) {
    int64_t p = 1;
    int dynamic = 0;
    for (int l : ls) {
      const ops::Dim& d = dims_.at(l);
      if (d.is_static())
        p *= d.value;
      else
        ++dynamic;
    }
    if (dynamic > 1) return std::nullopt;
    return dynamic ? -1 : p;
  }

  // v as [lead copied dims (Reshape's 0)..., rest]; v unchanged where its shape is that already.
  ir::Value* reshape(ir::Value* v, size_t lead, const std::vector<int64_t>& rest) {
    if (!v) return nullptr;
    if (v->shape.size() == lead + rest.size()) {
      bool same = true;
      for (size_t i = 0; i < rest.size(); ++i)
        same = same && v->shape[lead + i].is_static() && v->shape[lead + i].value == rest[i];
      if (same) return v;
    }
    if (std::count(rest.begin(), rest.end(), int64_t{-1}) > 1) return nullptr;
    std::vector<int64_t> s(lead, 0);
    s.insert(s.end(), rest.begin(), rest.end());
    if (v->is_constant()) {  // a weight: its dims are all known, so the 0s and the -1 resolve now
      const Tensor& c = *v->constant;
      int64_t known = 1, free_at = -1;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == 0) s[i] = c.shape()[i];
        if (s[i] == -1)
          free_at = static_cast<int64_t>(i);
        else
          known *= s[i];
      }
      if (free_at >= 0) s[free_at] = known ? c.numel() / known : 0;
      return g_.add_constant(base_ + "_reshaped", c.reshaped(s));
    }
    return node("Reshape", {v, fusion::add_int64s(g_, base_ + "_shape", s)});
  }

  ir::Value* contract(std::vector<ir::Value*> x, const std::vector<std::vector<int>>& labels,
                      const std::vector<int>& out) {
    const std::vector<int>&la = labels[0], &lb = labels[1];
    std::vector<int> batch, a_only, b_only, contracted;
    for (int l : out) {
      if (has(la, l) && has(lb, l))
        batch.push_back(l);
      else if (has(la, l))
        a_only.push_back(l);
      else
        b_only.push_back(l);
    }
    for (int l : la)
      if (has(lb, l) && !has(out, l)) contracted.push_back(l);
    // Every label of an operand is now batch, own or contracted (the rest were summed): a batch label must be in
    // both, which the classification above guarantees; an ellipsis label missing from one operand is own there.
    auto cat = [](std::vector<int> a, const std::vector<int>& b, const std::vector<int>& c) {
      a.insert(a.end(), b.begin(), b.end());
      a.insert(a.end(), c.begin(), c.end());
      return a;
    };
    const auto M = merged(a_only), K = merged(contracted), N = merged(b_only);
    if (!M || !K || !N) return nullptr;
    const size_t nb = batch.size();
    ir::Value* a = reshape(transpose(x[0], la, cat(batch, a_only, contracted)), nb, {*M, *K});
    ir::Value* b = reshape(transpose(x[1], lb, cat(batch, contracted, b_only)), nb, {*K, *N});
    if (!a || !b) return nullptr;
    ir::Value* c = node("MatMul", {a, b});
    if (!c) return nullptr;
    std::vector<int64_t> dims;
    for (const auto* group : {&a_only, &b_only})
      for (int l : *group) dims.push_back(dims_.at(l).is_static() ? dims_.at(l).value : -1);
    c = reshape(c, nb, dims);
    return transpose(c, cat(batch, a_only, b_only), out);
  }

  // y takes the Einsum output's place (its name, its users, a graph output).
  void finish(ir::Value* y) {
    ir::Value* out = n_->outputs[0];
    if (y->producer == nullptr || std::find(n_->inputs.begin(), n_->inputs.end(), y) != n_->inputs.end()) {
      // Nothing to compute ("ij->ij"): an Identity keeps the output a value of its own.
      y = node("Identity", {y});
    }
    match::record_fusion(y->producer, {n_});
    fusion::take_place(g_, out, y, "_einsum");
  }

  ir::Graph& g_;
  ir::Node* n_;
  std::string base_;
  int opset_;
  std::map<int, ops::Dim> dims_;
  std::vector<ir::Node*> added_;

 public:
  // Removes what a lowering that gave up on the way had added.
  void undo() {
    for (auto it = added_.rbegin(); it != added_.rend(); ++it) g_.remove_node(*it);
    g_.prune_values();
  }
};

class LowerEinsum final : public Pass {
 public:
  std::string_view name() const override { return "lower_einsum"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    std::vector<ir::Node*> cands;
    for (const auto& n : g.nodes())
      if (n->op_type == "Einsum" && n->domain.empty()) cands.push_back(n.get());
    int lowered = 0;
    for (ir::Node* n : cands) {
      Lowerer l(g, n);
      if (l.run()) {
        ++lowered;
      } else {
        l.undo();
      }
      g.rebuild_links();
    }
    if (lowered) {
      fusion::prune_dead_nodes(g);
      ctx.changes += lowered;
      ctx.verbose("lower_einsum: " + std::to_string(lowered) + " Einsum nodes as Transpose/Reshape/MatMul/ReduceSum");
    }
    return g.topo_sort();
  }
};

}  // namespace

std::unique_ptr<Pass> make_lower_einsum() { return std::make_unique<LowerEinsum>(); }

}  // namespace kiln::passes
