// fuse_small_mlp pass (CUDA, after conv1x1_as_gemm): two FusedMatMuls in a row over one row per sample, with small
// constant weights, become one kiln::FusedMlp (ops/fused_mlp.cpp). A squeeze-excitation's excitation is the case
// it is for: conv1x1_as_gemm leaves fc1 (+ SiLU or ReLU) and fc2 as FusedMatMuls on the pooled [N, 1, 1, C], each a
// GEMM of a few dozen columns whose launch and latency are most of its cost (efficientnet_b0 has 16 such pairs);
// the CUDA kernel runs both products in one launch with the hidden row in shared memory.
//
// Taken when: both are FusedMatMul with trans_b = 1, a rank-2 constant B, at most a bias (no residual, no
// norm_epsilon, alpha 1), the same float type; the first one's output is read only by the second, as its A; A has
// one row per sample ([N, C] or [N, 1, ..., 1, C]); and each weight matrix has at most kMaxWeightElems elements and
// K + hidden <= kMaxRowFloats (one row of X and of the hidden layer fit a block's shared memory as float32).
// Larger or many-row products (a transformer's MLP) stay GEMMs: there the tensor cores win.
// When A is the mean of an activation over its middle dims (the squeeze: layout_nhwc's ReduceMean over H and W of
// a GlobalAveragePool) read only by fc1, the FusedMlp takes the activation itself (squeeze = 1): its CUDA tactics
// either pool it in the same kernel (one block an image) or run the same reduction first (as before).
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

constexpr int64_t kMaxWeightElems = 128 * 1024;
constexpr int64_t kMaxRowFloats = 12 * 1024;

// A FusedMatMul that is only A.B^T (+ bias) [then an activation], B a constant matrix [out, in].
bool plain_linear(const ir::Node* n) {
  if (!n || n->op_type != "FusedMatMul" || n->domain != "kiln" || n->outputs.size() != 1) return false;
  if (n->inputs.size() < 2 || n->inputs.size() > 3 || !n->inputs[0] || !n->inputs[1]) return false;
  if (n->attrs.has("norm_epsilon")) return false;
  auto tb = n->attrs.get_int("trans_b", 0);
  auto alpha = n->attrs.get_float("alpha", 1.0f);
  if (!tb.ok() || *tb != 1 || !alpha.ok() || *alpha != 1.0f) return false;
  const ir::Value* w = n->inputs[1];
  if (!w->is_constant() || w->constant->rank() != 2 || w->constant->numel() > kMaxWeightElems) return false;
  const DataType dt = n->inputs[0]->dtype;
  if (dt != DataType::kFLOAT && dt != DataType::kHALF && dt != DataType::kBF16) return false;
  for (const ir::Value* v : n->inputs)
    if (v && v->dtype != dt) return false;
  const ir::Value* b = n->inputs.size() > 2 ? n->inputs[2] : nullptr;
  return !b || (b->rank_known && b->shape.size() == 1 && b->shape[0].is_static() &&
                b->shape[0].value == w->constant->dim(0));
}

// [N, C] or [N, 1, ..., 1, C] with C static.
bool one_row_per_sample(const ir::Value* v) {
  if (!v->rank_known || v->shape.size() < 2 || !v->shape.back().is_static()) return false;
  for (size_t i = 1; i + 1 < v->shape.size(); ++i)
    if (!(v->shape[i].is_static() && v->shape[i].value == 1)) return false;
  return true;
}

// The activation x is the mean of, when x = ReduceMean(fm) over every middle axis of fm ([B, d1, ..., K], rank >= 3,
// keepdims), read by nothing else: fm; else null.
ir::Value* squeezed_from(const ir::Graph& g, ir::Value* x) {
  const ir::Node* r = x->producer;
  if (!r || r->op_type != "ReduceMean" || !r->domain.empty() || r->outputs.size() != 1 || x->users.size() != 1)
    return nullptr;
  for (const ir::Value* o : g.outputs())
    if (o == x) return nullptr;
  ir::Value* fm = r->inputs.empty() ? nullptr : r->inputs[0];
  if (!fm || !fm->rank_known || fm->shape.size() < 3 || fm->dtype != x->dtype) return nullptr;
  auto keep = r->attrs.get_int("keepdims", 1);
  if (!keep.ok() || *keep != 1) return nullptr;
  const int64_t rank = static_cast<int64_t>(fm->shape.size());
  std::vector<int64_t> middle;
  for (int64_t i = 1; i + 1 < rank; ++i) middle.push_back(i);
  return fusion::reduced_axes(*r, rank) == middle ? fm : nullptr;
}

class FuseSmallMlp final : public Pass {
 public:
  std::string_view name() const override { return "fuse_small_mlp"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    std::vector<ir::Node*> seconds;
    for (const auto& n : g.nodes())
      if (plain_linear(n.get())) seconds.push_back(n.get());
    int fused = 0;
    for (ir::Node* n : seconds) fused += fuse(g, ctx, n) ? 1 : 0;
    if (fused > 0) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += fused;
      ctx.verbose("fuse_small_mlp: " + std::to_string(fused) + " pairs of small GEMMs made one FusedMlp each");
    }
    return Status::Ok();
  }

 private:
  static bool fuse(ir::Graph& g, PassContext& ctx, ir::Node* second) {
    ir::Value* h = second->inputs[0];
    ir::Node* first = h->producer;
    if (!plain_linear(first) || h->users.size() != 1 || h->users[0] != second) return false;
    for (const ir::Value* o : g.outputs())
      if (o == h) return false;
    ir::Value* x = first->inputs[0];
    if (!one_row_per_sample(x) || !one_row_per_sample(h)) return false;
    const Tensor& w1 = *first->inputs[1]->constant;
    const Tensor& w2 = *second->inputs[1]->constant;
    const int64_t k = x->shape.back().value, hidden = w1.dim(0);
    if (w1.dim(1) != k || w2.dim(1) != hidden || k + hidden > kMaxRowFloats) return false;
    const auto& has_kernel = ctx.options.has_kernel;
    if (has_kernel && !has_kernel("FusedMlp", "kiln", x->dtype)) return false;

    auto act1 = first->attrs.get_string("activation", "none");
    auto act2 = second->attrs.get_string("activation", "none");
    if (!act1.ok() || !act2.ok()) return false;
    Attributes a;
    a.set("activation1", *act1);
    a.set("activation2", *act2);
    // The squeeze too, where x is the mean over the middle dims of an activation and only fc1 reads it.
    if (ir::Value* fm = squeezed_from(g, x)) {
      x = fm;
      a.set("squeeze", int64_t{1});
    }
    ir::Value* b1 = first->inputs.size() > 2 ? first->inputs[2] : nullptr;
    ir::Value* b2 = second->inputs.size() > 2 ? second->inputs[2] : nullptr;
    std::vector<ir::Value*> in = {x, first->inputs[1], b1, second->inputs[1]};
    if (b2) in.push_back(b2);
    ir::Node* mlp = g.add_node("FusedMlp", g.unique_node_name(second->name + "_mlp"), in,
                               {second->outputs[0]->name + "_mlp"}, a, 1, "kiln");
    ir::Node* squeeze = x == first->inputs[0] ? nullptr : first->inputs[0]->producer;
    if (squeeze) {
      match::record_fusion(mlp, {squeeze, first, second});
      match::finish_fusion(g, mlp, second->outputs[0], {second, first, squeeze});
    } else {
      match::record_fusion(mlp, {first, second});
      match::finish_fusion(g, mlp, second->outputs[0], {second, first});
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_small_mlp() { return std::make_unique<FuseSmallMlp>(); }

}  // namespace kiln::passes
