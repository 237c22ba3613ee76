// fuse_layernorm_output_cast pass (CUDA): a Cast to float32 of a LayerNorm's float16/bfloat16 Y that nothing else
// reads (the network output's Cast that precision lowering leaves after a transformer's last LayerNorm) goes into
// the LayerNorm, which then stores float32 itself (attribute `to` of the kiln LayerNorm family, add_layer_norm.cpp):
// one launch and one pass over the output fewer. An ONNX LayerNormalization becomes kiln::LayerNormalization;
// kiln AddLayerNormalization / EmbedLayerNormalization keep their kind. The values are the normalization's float32
// results, no longer rounded to the reduced type on the way. Off unless PassOptions::layernorm_io.
#include "ops/op_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

bool is_layernorm(const ir::Node& n) {
  if (n.domain.empty()) return n.op_type == "LayerNormalization";
  return n.domain == "kiln" && (n.op_type == "LayerNormalization" || n.op_type == "AddLayerNormalization" ||
                                n.op_type == "EmbedLayerNormalization");
}

class FuseLayerNormOutputCast final : public Pass {
 public:
  std::string_view name() const override { return "fuse_layernorm_output_cast"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (!ctx.options.layernorm_io) return Status::Ok();
    std::vector<ir::Node*> casts;
    for (const auto& n : g.nodes())
      if (n->op_type == "Cast" && n->domain.empty()) casts.push_back(n.get());
    int fused = 0;
    for (ir::Node* c : casts) fused += fuse(g, c) ? 1 : 0;
    if (fused > 0) {
      KILN_RETURN_IF_ERROR(g.topo_sort());
      g.prune_values();
      ctx.changes += fused;
      ctx.verbose("fuse_layernorm_output_cast: " + std::to_string(fused) + " float32 output Casts stored by their LayerNorm");
    }
    return Status::Ok();
  }

 private:
  static bool fuse(ir::Graph& g, ir::Node* cast) {
    if (cast->inputs.size() != 1 || cast->outputs.size() != 1 || !cast->inputs[0]) return false;
    ir::Value* y = cast->inputs[0];
    ir::Value* out = cast->outputs[0];
    ir::Node* ln = y->producer;
    if (!ln || !is_layernorm(*ln) || out->dtype != DataType::kFLOAT ||
        (y->dtype != DataType::kHALF && y->dtype != DataType::kBF16) || y->users.size() != 1 ||
        match::is_graph_output(g, y) || ln->outputs[0] != y)
      return false;
    // Y only: an ONNX LayerNormalization's Mean/InvStdDev must be absent or unread.
    for (size_t k = 1; k < ln->outputs.size(); ++k)
      if (ln->outputs[k] && (!ln->outputs[k]->users.empty() || match::is_graph_output(g, ln->outputs[k]))) return false;
    // Cast's saturate attribute only concerns float8 targets.
    Attributes attrs = ln->attrs;
    attrs.set("to", ops::onnx_code_of(DataType::kFLOAT));
    ir::Node* f = g.add_node(ln->op_type, g.unique_node_name(ln->name + "_f32"), ln->inputs, {out->name + "_fused"},
                             attrs, 1, "kiln");
    match::record_fusion(f, std::vector<const ir::Node*>{ln, cast});
    match::finish_fusion(g, f, out, {cast, ln});
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_layernorm_output_cast() { return std::make_unique<FuseLayerNormOutputCast>(); }

}  // namespace kiln::passes
