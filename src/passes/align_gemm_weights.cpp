// align_gemm_weights pass (CUDA, after precision lowering): a GEMM whose constant weight B [K, N] has rows that are
// not a whole number of 16-byte vectors (gpt2's tied lm_head: N = 50257) keeps B transposed, [N, K] with trans_b,
// when K's rows are: cuBLASLt's Hopper kernels load operands with TMA, which needs 16-byte strides, and with an
// unaligned B it fell back to kernels at about a third of the tensor cores' rate (gpt2 at batch 32: the lm_head
// took 1.24 ms, 44% of the run). The transposed copy replaces the original, so the engine does not grow.
#include <cstring>

#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// B as a 2-D float constant [K, N] stored row-major with unaligned rows and K aligned.
bool unaligned_weight(const ir::Value* b) {
  if (!b || !b->is_constant() || !dtype_is_float(b->dtype)) return false;
  const Tensor& t = *b->constant;
  if (t.shape().size() != 2) return false;
  const int64_t es = static_cast<int64_t>(dtype_size(t.dtype()));
  const int64_t k = t.shape()[0], n = t.shape()[1];
  return k > 0 && n >= 8 && (n * es) % 16 != 0 && (k * es) % 16 == 0;
}

bool eligible(const ir::Node& n) {
  if (n.outputs.size() != 1 || n.inputs.size() < 2 || !n.inputs[0]) return false;
  if (n.op_type == "MatMul" && n.domain.empty()) return n.inputs.size() == 2 && unaligned_weight(n.inputs[1]);
  if (n.op_type == "FusedMatMul" && n.domain == "kiln") {
    auto tb = n.attrs.get_int("trans_b", 0);
    return tb.ok() && *tb == 0 && unaligned_weight(n.inputs[1]);
  }
  return false;
}

Tensor transposed(const Tensor& w) {
  const int64_t k = w.shape()[0], n = w.shape()[1];
  const size_t es = dtype_size(w.dtype());
  Tensor t(w.dtype(), {n, k});
  const auto* src = static_cast<const uint8_t*>(w.raw());
  auto* dst = static_cast<uint8_t*>(t.raw());
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < n; ++j) std::memcpy(dst + (j * k + i) * es, src + (i * n + j) * es, es);
  return t;
}

class AlignGemmWeights final : public Pass {
 public:
  std::string_view name() const override { return "align_gemm_weights"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (ctx.options.has_kernel && !ctx.options.has_kernel("FusedMatMul", "kiln", DataType::kHALF)) return Status::Ok();
    std::vector<ir::Node*> todo;
    for (auto& n : g.nodes())
      if (eligible(*n)) todo.push_back(n.get());
    for (ir::Node* n : todo) {
      ir::Value* w = n->inputs[1];
      ir::Value* wt = g.add_constant(w->name + "_nk", transposed(*w->constant));
      if (n->op_type == "FusedMatMul") {
        n->inputs[1] = wt;
        n->attrs.set("trans_b", int64_t{1});
      } else {
        Attributes a;
        a.set("trans_b", int64_t{1});
        a.set("activation", std::string("none"));
        ir::Value* y = n->outputs[0];
        ir::Node* mm = g.add_node("FusedMatMul", g.unique_node_name(n->name + "_nk"), {n->inputs[0], wt},
                                  {y->name + "_nk"}, std::move(a), 1, "kiln");
        match::record_fusion(mm, {n});
        ir::Value* out = mm->outputs[0];
        out->dtype = y->dtype;
        out->shape = y->shape;
        out->rank_known = y->rank_known;
        // The product keeps the MatMul's output name: readers and network outputs see no change.
        g.remove_node(n);
        g.replace_all_uses(y, out);
        const std::string keep = y->name;
        g.remove_value(y);
        g.rename_value(out, keep);
      }
      ++ctx.changes;
    }
    if (!todo.empty()) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.verbose("align_gemm_weights: " + std::to_string(todo.size()) + " weights stored as [N, K]");
    }
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_align_gemm_weights() { return std::make_unique<AlignGemmWeights>(); }

}  // namespace kiln::passes
