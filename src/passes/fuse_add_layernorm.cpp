// fuse_add_layernorm pass (CUDA): Add -> LayerNormalization, where the sum is read by nothing else and the
// normalization's Mean/InvStdDev outputs are not used, becomes one kiln::AddLayerNormalization: the LayerNorm
// kernel adds B to each row as it loads it, so the sum is never stored and one launch goes. What it takes: a
// transformer's embedding sum (token + position embeddings) ahead of its first LayerNorm, and residual Adds that
// no GEMM epilogue took. One addend must have the sum's shape; the other may broadcast along leading dims only
// (a [1, S, E] position table against [N, S, E]), as ops::check_add_layernorm_addend says. Where that full-shape
// addend is a Gather along axis 0 that nothing else reads (the token embedding lookup), or the sum of two such
// Gathers (BERT's token + token-type embeddings), the lookups go in too, as kiln::EmbedLayerNormalization: the
// kernel loads each row straight from the embedding tables, so two to four launches and as many stores of the
// activation go. Off unless PassOptions::layernorm_io (the builder sets it from KILN_FUSE_LAYERNORM_IO=1).
#include "ops/add_layer_norm.h"
#include "ops/op_util.h"
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

class FuseAddLayerNorm final : public Pass {
 public:
  std::string_view name() const override { return "fuse_add_layernorm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (!ctx.options.layernorm_io) return Status::Ok();
    std::vector<ir::Node*> norms;
    for (const auto& n : g.nodes())
      if (n->op_type == "LayerNormalization" && n->domain.empty()) norms.push_back(n.get());
    int fused = 0;
    for (ir::Node* ln : norms) fused += fuse(g, ln) ? 1 : 0;
    if (fused > 0) {
      KILN_RETURN_IF_ERROR(g.topo_sort());
      g.prune_values();
      ctx.changes += fused;
      ctx.verbose("fuse_add_layernorm: " + std::to_string(fused) + " Adds taken into the LayerNormalization after them");
    }
    return Status::Ok();
  }

 private:
  // The Gather along axis 0 of a table of rank >= 1 by int32/int64 indices that writes `a` and nothing else reads,
  // or null.
  static ir::Node* embedding_lookup(const ir::Graph& g, const ir::Value* a) {
    ir::Node* n = a->producer;
    if (!n || n->op_type != "Gather" || !n->domain.empty() || n->inputs.size() != 2 || a->users.size() != 1 ||
        match::is_graph_output(g, a))
      return nullptr;
    const ir::Value* data = n->inputs[0];
    const ir::Value* idx = n->inputs[1];
    if (!data || !idx || !data->rank_known || data->shape.empty() || data->dtype != a->dtype ||
        (idx->dtype != DataType::kINT32 && idx->dtype != DataType::kINT64))
      return nullptr;
    auto axis = n->attrs.get_int("axis", 0);
    if (!axis.ok() || (*axis != 0 && *axis != -static_cast<int64_t>(data->shape.size()))) return nullptr;
    return n;
  }

  static bool fuse(ir::Graph& g, ir::Node* ln) {
    // The statistics outputs must be absent or unread: the fused node has Y only.
    for (size_t k = 1; k < ln->outputs.size(); ++k)
      if (ln->outputs[k] && (!ln->outputs[k]->users.empty() || match::is_graph_output(g, ln->outputs[k]))) return false;
    ir::Value* x = ln->inputs.empty() ? nullptr : ln->inputs[0];
    ir::Node* add = x ? x->producer : nullptr;
    if (!add || add->op_type != "Add" || !add->domain.empty() || add->inputs.size() != 2 || x->users.size() != 1 ||
        match::is_graph_output(g, x))
      return false;
    auto axis_attr = ln->attrs.get_int("axis", -1);
    if (!axis_attr.ok() || !x->rank_known) return false;
    auto axis = ops::normalize_axis(*axis_attr, static_cast<int64_t>(x->shape.size()));
    if (!axis.ok()) return false;
    for (int first = 0; first < 2; ++first) {
      ir::Value* a = add->inputs[first];
      ir::Value* b = add->inputs[1 - first];
      if (!a || !b || a->dtype != x->dtype || b->dtype != x->dtype || !b->rank_known || !fusion::same_shape(a, x)) continue;
      if (!ops::check_add_layernorm_addend(a->shape, b->shape, *axis).ok()) continue;
      // The lookups behind A: one Gather, or the Add of two (BERT's token and token-type embeddings).
      std::vector<ir::Node*> lookups;
      if (ir::Node* one = embedding_lookup(g, a)) {
        lookups = {one};
      } else if (ir::Node* inner = a->producer; inner && inner->op_type == "Add" && inner->domain.empty() &&
                                                 inner->inputs.size() == 2 && a->users.size() == 1 &&
                                                 !match::is_graph_output(g, a)) {
        ir::Node* g0 = inner->inputs[0] ? embedding_lookup(g, inner->inputs[0]) : nullptr;
        ir::Node* g1 = inner->inputs[1] ? embedding_lookup(g, inner->inputs[1]) : nullptr;
        if (g0 && g1 && g0 != g1 && fusion::same_shape(inner->inputs[0], a) && fusion::same_shape(inner->inputs[1], a))
          lookups = {g0, g1};
      }
      const bool embed = !lookups.empty();
      std::vector<ir::Value*> in = {a, b};
      std::vector<const ir::Node*> from = {add, ln};
      std::vector<ir::Node*> gone = {ln, add};
      if (embed) {
        in = {lookups[0]->inputs[0], lookups[0]->inputs[1], b};
        if (lookups.size() == 2) {
          from.insert(from.begin(), a->producer);
          gone.push_back(a->producer);
        }
        for (auto it = lookups.rbegin(); it != lookups.rend(); ++it) from.insert(from.begin(), *it);
        for (ir::Node* l : lookups) gone.push_back(l);
      }
      for (size_t k = 1; k < ln->inputs.size(); ++k) in.push_back(ln->inputs[k]);
      if (lookups.size() == 2) {
        if (in.size() == 4) in.push_back(nullptr);  // no Bias: its slot stays empty
        in.push_back(lookups[1]->inputs[0]);
        in.push_back(lookups[1]->inputs[1]);
      }
      ir::Value* y = ln->outputs[0];
      ir::Node* f = g.add_node(embed ? "EmbedLayerNormalization" : "AddLayerNormalization",
                               g.unique_node_name(ln->name + (embed ? "_embed" : "_add")), in, {y->name + "_fused"},
                               ln->attrs, 1, "kiln");
      match::record_fusion(f, from);
      match::finish_fusion(g, f, y, gone);
      return true;
    }
    return false;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_add_layernorm() { return std::make_unique<FuseAddLayerNorm>(); }

}  // namespace kiln::passes
