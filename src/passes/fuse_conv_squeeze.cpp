// fuse_conv_squeeze pass (CUDA, after layout_nhwc): the squeeze of a squeeze-excitation block, the mean over H and
// W of a depthwise convolution's output (layout_nhwc's ReduceMean over axes 1, 2 of [N, H, W, C], from a
// GlobalAveragePool), becomes that FusedConv's second output M. The CUDA depthwise kernels then sum each block's
// outputs per channel as they store them and a small kernel adds those partial sums (conv_ops.cpp), so the
// activation, the largest tensor of an efficientnet block, is not read back for its mean: efficientnet_b0's 16
// squeezes read 590 MB at batch 128. Any other tactic the layer runs computes M by a reduction over Y after it,
// as the ReduceMean did. Off unless PassOptions::conv_squeeze (the builder sets it from KILN_CONV_SQUEEZE=1).
#include <algorithm>

#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

class FuseConvSqueeze final : public Pass {
 public:
  std::string_view name() const override { return "fuse_conv_squeeze"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (!ctx.options.conv_squeeze) return Status::Ok();
    std::vector<ir::Node*> means;
    for (const auto& n : g.nodes())
      if (n->op_type == "ReduceMean" && n->domain.empty()) means.push_back(n.get());
    int fused = 0;
    for (ir::Node* r : means) fused += fuse(g, r) ? 1 : 0;
    if (fused > 0) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += fused;
      ctx.verbose("fuse_conv_squeeze: " + std::to_string(fused) + " spatial means taken by the depthwise convolution");
    }
    return Status::Ok();
  }

 private:
  static bool fuse(ir::Graph& g, ir::Node* r) {
    if (r->inputs.empty() || !r->inputs[0] || r->outputs.size() != 1) return false;
    ir::Value* y = r->inputs[0];
    ir::Value* m = r->outputs[0];
    ir::Node* conv = y->producer;
    if (!conv || !fusion::is_depthwise_nhwc_conv(*conv) || conv->outputs.size() != 1 || conv->outputs[0] != y)
      return false;
    if (!y->rank_known || y->shape.size() != 4 || m->dtype != y->dtype) return false;
    auto keep = r->attrs.get_int("keepdims", 1);
    if (!keep.ok() || *keep != 1) return false;
    if (fusion::reduced_axes(*r, 4) != std::vector<int64_t>{1, 2}) return false;
    match::record_fusion(conv, {conv, r});
    g.remove_node(r);
    conv->outputs.push_back(m);
    m->producer = conv;
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_conv_squeeze() { return std::make_unique<FuseConvSqueeze>(); }

}  // namespace kiln::passes
