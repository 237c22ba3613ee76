// conv1x1_as_gemm pass (CUDA, after layout_nhwc): a channels-last 1x1 convolution with stride 1, no padding and one
// group is a matrix product, Y[N*H*W, M] = X[N*H*W, C] · W[M, C]ᵀ, so it becomes a kiln::FusedMatMul (cuBLASLt,
// bias, ReLU/GELU and the residual in the GEMM's epilogue, SiLU/sigmoid too unless KILN_DNN_MATMUL=0; other
// activations follow as a pointwise kernel). cuDNN's legacy convolution API picked slow kernels for these
// on Hopper (resnet50 FP16 at batch 1: 50-250 µs per 1x1 layer against 13 µs for the 3x3 ones).
// A strided 1x1 convolution (resnet's downsample shortcuts, stride 2) reads only every s-th row and column, so it is
// a Slice of X with steps (s_h, s_w) on the NHWC axes 1 and 2, then the same GEMM: cuDNN ran those 5-7x slower than
// the slice and the GEMM take together (resnet50 FP16 batch 128, layer2's downsample: 0.31 ms).
#include <cstring>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "passes/conv_gemm_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using namespace conv_gemm;

// The strides of an eligible 1x1 convolution ({1, 1} for a plain GEMM); nullopt when it is not one.
std::optional<std::vector<int64_t>> eligible(const ir::Node& n) {
  if (n.op_type != "FusedConv" || n.domain != "kiln" || n.inputs.size() < 2 || n.outputs.size() != 1)
    return std::nullopt;
  auto layout = n.attrs.get_string("layout", "NCHW");
  if (!layout.ok() || *layout != "NHWC") return std::nullopt;
  const ir::Value* x = n.inputs[0];
  const ir::Value* w = n.inputs[1];
  if (!x || !w || !w->is_constant() || w->constant->shape().size() != 4) return std::nullopt;
  const auto& ws = w->constant->shape();  // KRSC: [M, kh, kw, C]
  if (ws[1] != 1 || ws[2] != 1) return std::nullopt;
  auto ap = n.attrs.get_string("auto_pad", "NOTSET");
  if (!ap.ok() || (*ap != "NOTSET" && *ap != "VALID")) return std::nullopt;
  // A prologue (an activation on X) has no place in the GEMM; fuse_conv_prologue runs later, so none is expected.
  auto pre = ops::parse_epilogue("FusedConv", n.attrs, ops::kProloguePrefix);
  if (!pre.ok() || pre->act != ops::Activation::kNone) return std::nullopt;
  if (!all_equal(n.attrs, "dilations", 1, 2) || !all_equal(n.attrs, "pads", 0, 4) || !group_is_one(n.attrs))
    return std::nullopt;
  auto st = n.attrs.get_ints("strides", {1, 1});
  if (!st.ok() || st->size() != 2 || (*st)[0] < 1 || (*st)[1] < 1) return std::nullopt;
  if ((*st)[0] == 1 && (*st)[1] == 1) return *st;
  // The Slice's output takes its dims from X (batch, channels) and Y (the spatial dims), so both need rank 4.
  const ir::Value* y = n.outputs[0];
  if (!x->rank_known || x->shape.size() != 4 || !y || !y->rank_known || y->shape.size() != 4) return std::nullopt;
  return *st;
}

// X[:, ::s_h, ::s_w, :] as an ONNX Slice (opset 13). With zero pads a 1x1 convolution's output has
// floor((H-1)/s)+1 rows, which is what steps s from 0 to the end select; ends = INT64_MAX (clamped to the dim)
// needs no static H.
ir::Value* strided_rows(ir::Graph& g, ir::Node* conv, const std::vector<int64_t>& st) {
  ir::Value* x = conv->inputs[0];
  const ir::Value* y = conv->outputs[0];
  const std::string base = conv->name + "_stride";
  auto ints = [&](const char* what, std::vector<int64_t> v) {
    return g.add_constant(base + what, Tensor::from_vector<int64_t>({2}, v));
  };
  constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
  ir::Node* s = g.add_node("Slice", g.unique_node_name(base), {x, ints("_starts", {0, 0}), ints("_ends", {kEnd, kEnd}),
                           ints("_axes", {1, 2}), ints("_steps", st)}, {base}, {}, 13);
  ir::Value* v = s->outputs[0];
  v->dtype = x->dtype;
  v->shape = {x->shape[0], y->shape[1], y->shape[2], x->shape[3]};
  v->rank_known = true;
  return v;
}

class Conv1x1AsGemm final : public Pass {
 public:
  std::string_view name() const override { return "conv1x1_as_gemm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (ctx.options.has_kernel && !ctx.options.has_kernel("FusedMatMul", "kiln", DataType::kHALF)) return Status::Ok();
    std::vector<std::pair<ir::Node*, std::vector<int64_t>>> todo;
    int strided = 0;
    for (auto& n : g.nodes()) {
      auto st = eligible(*n);
      if (!st || !ops::parse_epilogue("FusedConv", n->attrs).ok()) continue;
      const bool s = (*st)[0] != 1 || (*st)[1] != 1;
      if (s && ctx.options.has_kernel && !ctx.options.has_kernel("Slice", "", n->inputs[0]->dtype)) continue;
      todo.emplace_back(n.get(), *st);
      strided += s;
    }
    for (auto& [n, st] : todo) {
      const ops::Epilogue ep = ops::parse_epilogue("FusedConv", n->attrs).value();
      const Tensor& w = *n->inputs[1]->constant;
      const int64_t m = w.shape()[0], c = w.shape()[3];
      Tensor w2(w.dtype(), {m, c});  // [M, 1, 1, C] and [M, C] share their bytes
      std::memcpy(w2.raw(), w.raw(), w.nbytes());
      ir::Value* x = st[0] != 1 || st[1] != 1 ? strided_rows(g, n, st) : n->inputs[0];
      std::vector<ir::Value*> in = {x, g.add_constant(n->inputs[1]->name + "_mc", std::move(w2))};
      in.push_back(n->inputs.size() > 2 ? n->inputs[2] : nullptr);
      if (n->inputs.size() > 3 && n->inputs[3]) in.push_back(n->inputs[3]);
      while (in.size() > 2 && !in.back()) in.pop_back();
      // FusedConv adds the residual before its activation: FusedMatMul does too with residual_first (cuBLASLt's
      // C). Its epilogue knows ReLU and GELU (SiLU and sigmoid too with matmul_sigmoid_acts: cuDNN's fused matmul);
      // other activations follow as ONNX nodes, which fuse_pointwise turns into one kernel.
      const char* own = gemm_epilogue(ep.act, ctx.options.matmul_sigmoid_acts);
      Attributes a;
      a.set("trans_b", int64_t{1});
      a.set("activation", std::string(own ? own : "none"));
      if (in.size() > 3) a.set("residual_first", int64_t{1});
      ir::Value* y = n->outputs[0];
      ir::Node* mm = g.add_node("FusedMatMul", g.unique_node_name(n->name + "_gemm"), in, {y->name + "_gemm"},
                                std::move(a), 1, "kiln");
      match::record_fusion(mm, {n});
      ir::Value* out = mm->outputs[0];
      out->dtype = y->dtype;
      out->shape = y->shape;
      out->rank_known = y->rank_known;
      if (!own) out = emit_activation(g, out, ep, y->name);
      // The product keeps the convolution's output name: readers and network outputs see no change.
      take_over(g, n, y, out);
      ++ctx.changes;
    }
    if (!todo.empty()) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.verbose("conv1x1_as_gemm: " + std::to_string(todo.size()) + " 1x1 convolutions run as GEMMs (" +
                  std::to_string(strided) + " strided, through a Slice)");
    }
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_conv1x1_as_gemm() { return std::make_unique<Conv1x1AsGemm>(); }

}  // namespace kiln::passes
