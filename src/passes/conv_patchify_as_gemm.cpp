// conv_patchify_as_gemm pass (CUDA, before layout_nhwc): a convolution whose kernel tiles its input exactly (kernel
// equal to stride, no padding, dilation 1, one group: ViT's patch embedding) is a matrix product over the patches,
//   X [N,C,H,W] -> [N,C,Ho,kh,Wo,kw] -> Transpose(0,2,4,1,3,5) -> [N, Ho*Wo, C*kh*kw] · W[OC, C*kh*kw]ᵀ + b,
// which cuBLASLt runs as one GEMM (vit_b_16 at batch 64: M = 12544, N = K = 768). cuDNN ran it channels-last on the
// 3-channel image padded to 8 channels with slow kernels (0.63 ms at batch 64 on an H200, 9% of the model).
// The product is [N, Ho*Wo, OC]: exactly what torchvision's `x.reshape(n, hidden, h*w).permute(0, 2, 1)` makes of
// the convolution's output, so that chain is bypassed; a Transpose to NHWC after it reads a view of the product, and
// other readers get the NCHW result back through a Transpose.
#include <algorithm>
#include <optional>

#include "ops/op_util.h"
#include "passes/conv_gemm_util.h"
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using namespace conv_gemm;

// Input channels up to which a patchify convolution with NCHW readers is still taken: an image (1, 3 or 4
// channels) is what cuDNN pads to 8 channels and runs slowly. With more channels (a ConvNeXt 2x2 downsampling
// inside an NHWC body) cuDNN does well and the convolution stays, keeping layout_nhwc's transposes cancelling.
constexpr int64_t kMaxImageChannels = 4;

struct Patchify {
  ir::Node* conv = nullptr;
  int64_t c = 0, h = 0, w = 0, kh = 0, kw = 0, oc = 0;
  int64_t ho() const { return h / kh; }
  int64_t wo() const { return w / kw; }
  std::vector<ir::Node*> tokens;   // Transposes ending the [N, OC, Ho*Wo] -> [N, Ho*Wo, OC] chains of the output
  std::vector<ir::Node*> to_nhwc;  // Transpose(0, 2, 3, 1) readers (torchvision's Swin and ConvNeXt stems)
  bool nchw_readers = false;       // any other reader of the NCHW output (or a graph output)
};

bool is_float(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

// The Transpose(0, 2, 1) of `reshape` when it flattens the conv output y [N, OC, Ho, Wo] to [N, OC, Ho*Wo] and the
// Transpose is its only reader (torchvision's vit computes the Reshape's target from Shape ops, so only the
// inferred result shape tells what it is; its first dim then follows from the element count).
ir::Node* token_transpose(const ir::Graph& g, const ir::Node* reshape, const ir::Value* y, const Patchify& p) {
  if (reshape->op_type != "Reshape" || !reshape->domain.empty() || reshape->inputs.empty() || reshape->inputs[0] != y ||
      reshape->outputs.size() != 1)
    return nullptr;
  const ir::Value* r = reshape->outputs[0];
  if (!r->rank_known || r->shape.size() != 3 || r->shape[1] != ops::Dim(p.oc) ||
      r->shape[2] != ops::Dim(p.ho() * p.wo()))
    return nullptr;
  if (r->users.size() != 1 || match::is_graph_output(g, r)) return nullptr;
  ir::Node* t = r->users[0];
  return match::perm_is(t, {0, 2, 1}) ? t : nullptr;
}

std::optional<Patchify> match_patchify(const ir::Graph& g, ir::Node* n, const PassOptions& o) {
  const bool conv = n->op_type == "Conv" && n->domain.empty();
  const bool fused = n->op_type == "FusedConv" && n->domain == "kiln";
  if ((!conv && !fused) || n->inputs.size() < 2 || n->outputs.size() != 1) return std::nullopt;
  if (fused) {
    auto layout = n->attrs.get_string("layout", "NCHW");
    if (!layout.ok() || *layout != "NCHW") return std::nullopt;
    // A residual is NCHW like the output: the GEMM would need it transposed. No patch embedding has one.
    if (n->inputs.size() > 3 && n->inputs[3]) return std::nullopt;
    auto pre = ops::parse_epilogue("FusedConv", n->attrs, ops::kProloguePrefix);
    if (!pre.ok() || pre->act != ops::Activation::kNone || !ops::parse_epilogue("FusedConv", n->attrs).ok())
      return std::nullopt;
  }
  const ir::Value* x = n->inputs[0];
  const ir::Value* wv = n->inputs[1];
  const ir::Value* y = n->outputs[0];
  if (!x || !wv || !wv->is_constant() || wv->constant->rank() != 4 || !x->rank_known || x->shape.size() != 4 ||
      !is_float(x->dtype) || wv->dtype != x->dtype)
    return std::nullopt;
  if (n->inputs.size() > 2 && n->inputs[2] && (n->inputs[2]->dtype != x->dtype)) return std::nullopt;
  Patchify p;
  p.conv = n;
  const auto& ws = wv->constant->shape();
  p.oc = ws[0], p.c = ws[1], p.kh = ws[2], p.kw = ws[3];
  if (!x->shape[1].is_static() || !x->shape[2].is_static() || !x->shape[3].is_static()) return std::nullopt;
  p.h = x->shape[2].value, p.w = x->shape[3].value;
  // 1x1 kernels: conv1x1_as_gemm takes them on NHWC data, where the CNN around them runs.
  if (x->shape[1].value != p.c || p.kh * p.kw <= 1 || p.h % p.kh || p.w % p.kw || p.h == 0 || p.w == 0)
    return std::nullopt;
  auto ap = n->attrs.get_string("auto_pad", "NOTSET");
  if (!ap.ok() || (*ap != "NOTSET" && *ap != "VALID")) return std::nullopt;
  auto strides = n->attrs.get_ints("strides", {1, 1});
  auto kernel = n->attrs.get_ints("kernel_shape", {p.kh, p.kw});
  if (!strides.ok() || *strides != std::vector<int64_t>{p.kh, p.kw} || !kernel.ok() ||
      *kernel != std::vector<int64_t>{p.kh, p.kw})
    return std::nullopt;
  if (!all_equal(n->attrs, "dilations", 1, 2) || !all_equal(n->attrs, "pads", 0, 4) || !group_is_one(n->attrs))
    return std::nullopt;
  if (o.has_kernel && (!o.has_kernel("FusedMatMul", "kiln", x->dtype) || !o.has_kernel("Transpose", "", x->dtype)))
    return std::nullopt;
  for (ir::Node* u : y->users) {
    if (ir::Node* t = token_transpose(g, u, y, p)) {
      if (std::find(p.tokens.begin(), p.tokens.end(), t) == p.tokens.end()) p.tokens.push_back(t);
    } else if (match::perm_is(u, {0, 2, 3, 1})) {
      if (std::find(p.to_nhwc.begin(), p.to_nhwc.end(), u) == p.to_nhwc.end()) p.to_nhwc.push_back(u);
    } else {
      p.nchw_readers = true;
    }
  }
  p.nchw_readers = p.nchw_readers || match::is_graph_output(g, y);
  if (p.nchw_readers && p.c > kMaxImageChannels) return std::nullopt;
  return p;
}

void rewrite(ir::Graph& g, const Patchify& p) {
  ir::Node* n = p.conv;
  ir::Value* x = n->inputs[0];
  ir::Value* y = n->outputs[0];
  const DataType dt = x->dtype;
  const ops::Dim batch = x->shape[0];
  const int64_t ho = p.ho(), wo = p.wo(), k = p.c * p.kh * p.kw;
  const std::string base = n->name;
  auto typed = [&](ir::Value* v, std::vector<ops::Dim> shape) {
    v->dtype = dt;
    v->shape = std::move(shape);
    v->rank_known = true;
    return v;
  };
  auto dims = [&](const char* what, std::vector<int64_t> d) {
    const int64_t len = static_cast<int64_t>(d.size());
    return g.add_constant(base + what, Tensor::from_vector<int64_t>({len}, d));
  };
  // Reshape's 0 copies the batch dim, so a dynamic batch needs no shape arithmetic.
  auto reshape = [&](ir::Value* v, const char* what, std::vector<int64_t> target, std::vector<ops::Dim> shape) {
    ir::Node* r =
        g.add_node("Reshape", g.unique_node_name(base + what), {v, dims(what, target)}, {base + what}, {}, 14);
    return typed(r->outputs[0], std::move(shape));
  };
  auto transpose = [&](ir::Value* v, const char* what, std::vector<int64_t> perm, std::vector<ops::Dim> shape) {
    Attributes a;
    a.set("perm", std::move(perm));
    return typed(
        g.add_node("Transpose", g.unique_node_name(base + what), {v}, {base + what}, std::move(a), 13)->outputs[0],
        std::move(shape));
  };

  ir::Value* split = reshape(x, "_patches6d", {0, p.c, ho, p.kh, wo, p.kw}, {batch, p.c, ho, p.kh, wo, p.kw});
  ir::Value* patches = transpose(split, "_patches", {0, 2, 4, 1, 3, 5}, {batch, ho, wo, p.c, p.kh, p.kw});
  ir::Value* rows = reshape(patches, "_rows", {0, ho * wo, k}, {batch, ho * wo, k});
  // [OC, C, kh, kw] is [OC, C*kh*kw] row-major with the (c, kh, kw) order of a patch row: trans_b reads it as is.
  ir::Value* wmat = g.add_constant(n->inputs[1]->name + "_patch_gemm", n->inputs[1]->constant->reshaped({p.oc, k}));
  std::vector<ir::Value*> in = {rows, wmat};
  if (n->inputs.size() > 2 && n->inputs[2]) in.push_back(n->inputs[2]);
  const ops::Epilogue ep =
      n->op_type == "FusedConv" ? ops::parse_epilogue("FusedConv", n->attrs).value() : ops::Epilogue{};
  const char* own = gemm_epilogue(ep.act);
  Attributes a;
  a.set("trans_b", int64_t{1});
  a.set("activation", std::string(own ? own : "none"));
  ir::Node* mm =
      g.add_node("FusedMatMul", g.unique_node_name(base + "_gemm"), in, {y->name + "_tokens"}, std::move(a), 1, "kiln");
  match::record_fusion(mm, {n});
  ir::Value* tokens = typed(mm->outputs[0], {batch, ho * wo, p.oc});
  // Activations FusedMatMul has no epilogue for follow as ONNX nodes (one pointwise kernel after fuse_pointwise).
  if (!own) tokens = emit_activation(g, tokens, ep, y->name + "_tokens");

  // The token chains read the product directly; the first one's name goes to it (it may be a network output).
  for (size_t i = 0; i < p.tokens.size(); ++i) {
    ir::Node* t = p.tokens[i];
    ir::Node* r = t->inputs[0]->producer;
    take_over(g, t, t->outputs[0], tokens, i == 0);
    ir::Value* flat = r->outputs[0];
    g.remove_node(r);
    g.remove_value(flat);
  }
  // [N, Ho*Wo, OC] is NHWC: a view for the channels-last readers, and through a Transpose the NCHW output.
  ir::Value* nhwc = nullptr;
  if (!p.to_nhwc.empty() || p.nchw_readers) nhwc = reshape(tokens, "_nhwc", {0, ho, wo, p.oc}, {batch, ho, wo, p.oc});
  for (size_t i = 0; i < p.to_nhwc.size(); ++i) take_over(g, p.to_nhwc[i], p.to_nhwc[i]->outputs[0], nhwc, i == 0);
  if (p.nchw_readers) {
    take_over(g, n, y, transpose(nhwc, "_nchw", {0, 3, 1, 2}, {batch, p.oc, ho, wo}));
  } else {
    g.remove_node(n);
    g.remove_value(y);
  }
}

class ConvPatchifyAsGemm final : public Pass {
 public:
  std::string_view name() const override { return "conv_patchify_as_gemm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (ctx.options.backend != Backend::kCUDA) return Status::Ok();
    std::vector<Patchify> todo;
    for (auto& n : g.nodes())
      if (auto p = match_patchify(g, n.get(), ctx.options)) todo.push_back(*p);
    if (todo.empty()) return Status::Ok();
    int chains = 0;
    for (const Patchify& p : todo) {
      rewrite(g, p);
      chains += static_cast<int>(p.tokens.size());
    }
    ctx.changes += static_cast<int>(todo.size());
    // The bypassed Reshape's target was computed from Shape ops, which now feed nothing.
    fusion::prune_dead_nodes(g);
    KILN_RETURN_IF_ERROR(g.topo_sort());
    ctx.verbose("conv_patchify_as_gemm: " + std::to_string(todo.size()) + " patch convolutions as GEMMs, " +
                std::to_string(chains) + " token layouts bypassed");
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_conv_patchify_as_gemm() { return std::make_unique<ConvPatchifyAsGemm>(); }

}  // namespace kiln::passes
