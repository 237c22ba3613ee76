// pad_gemm_width pass: a GEMM with a constant B whose output rows are not a whole number of 16-byte vectors (gpt2's
// lm_head, N = 50257) gets B (and its bias) padded with zero columns, writes rows of an aligned width Np, and a
// kiln::Unpad layer gives the graph its [..., N] value back. cuBLASLt's Hopper (TMA) kernels need 16-byte aligned
// row pitches; with an odd pitch it falls back to kernels at about a third of the tensor cores' rate. Where the
// only reader is a Cast (the float32 output cast lowering leaves), Unpad absorbs it, so the padding costs no pass.
// With PassOptions::odd_gemm (set where the device backend stores rows of any width at full speed: the CUDA
// backend's CUTLASS kernels, cutlass_odd_c*), a float16/bfloat16 GEMM that only multiplies and has no Cast to absorb
// stays at its odd width instead, as a FusedMatMul with B stored [N, K]: the output is written once, not padded,
// read and written again.
#include <cstring>

#include "ops/layout_util.h"
#include "ops/op_util.h"
#include "passes/fusion_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// Narrower outputs are not worth it: the GEMM is short, and an Unpad that absorbs no Cast adds a launch and a pass
// over the output. Vocabulary projections (tens of thousands of columns) are the case this is for.
constexpr int64_t kMinWidth = 512;
// From this width on, rows are padded to 64 elements (a tile edge of cuBLASLt's kernels, and 128-byte rows in
// half) at under 1.6% extra columns; narrower ones only to the next 16-byte multiple.
constexpr int64_t kTileWidth = 4096;

bool reduced_or_float(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

int64_t padded_width(int64_t n, size_t elem_size) {
  const int64_t align = n >= kTileWidth ? 64 : 16 / static_cast<int64_t>(elem_size);
  return (n + align - 1) / align * align;
}

// `t` with zero entries appended along `axis` (0 or 1 of a 2-D tensor, or 0 of a 1-D one) up to `size`.
Tensor zero_padded(const Tensor& t, int axis, int64_t size) {
  std::vector<int64_t> dims = t.shape();
  const int64_t old = dims[axis];
  dims[axis] = size;
  Tensor p(t.dtype(), dims);  // zero-filled
  const size_t es = dtype_size(t.dtype());
  const int64_t rows = axis == 1 ? dims[0] : 1, row = axis == 1 ? old : t.numel();
  const int64_t pitch = axis == 1 ? size : 0;
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<uint8_t*>(p.raw()) + r * pitch * es, static_cast<const uint8_t*>(t.raw()) + r * row * es,
                row * es);
  return p;
}

// Renames v to `base`, or to base_1, base_2... where that name is taken.
void rename_free(ir::Graph& g, ir::Value* v, const std::string& base) {
  for (int i = 0; !g.rename_value(v, i ? base + "_" + std::to_string(i) : base); ++i) {
  }
}

class PadGemmWidth final : public Pass {
 public:
  std::string_view name() const override { return "pad_gemm_width"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    std::vector<ir::Node*> gemms;
    for (auto& n : g.nodes())
      if ((n->op_type == "MatMul" && n->domain.empty()) || (n->op_type == "FusedMatMul" && n->domain == "kiln"))
        gemms.push_back(n.get());
    int padded = 0, casts = 0, odd = 0;
    for (ir::Node* n : gemms) {
      const Outcome r = pad(g, ctx, n);
      padded += r == Outcome::kPadded || r == Outcome::kPaddedCast;
      casts += r == Outcome::kPaddedCast;
      odd += r == Outcome::kOddWidth;
    }
    if (!padded && !odd) return Status::Ok();
    ctx.changes += padded + odd;
    fusion::prune_dead_nodes(g);
    KILN_RETURN_IF_ERROR(g.topo_sort());
    ctx.verbose("pad_gemm_width: " + std::to_string(padded) + " GEMM outputs padded to a 16-byte row pitch (" +
                std::to_string(casts) + " output casts absorbed), " + std::to_string(odd) +
                " left at their odd width with B stored [N, K]");
    return Status::Ok();
  }

 private:
  // What became of one GEMM: left alone; padded; padded with the reader's Cast absorbed; left at its odd width as a
  // FusedMatMul with B stored [N, K] (odd_gemm).
  enum class Outcome { kLeft, kPadded, kPaddedCast, kOddWidth };

  static Outcome pad(ir::Graph& g, PassContext& ctx, ir::Node* n) {
    const bool fused = n->domain == "kiln";
    if (n->inputs.size() < 2 || n->outputs.size() != 1) return Outcome::kLeft;
    ir::Value *a = n->inputs[0], *b = n->inputs[1], *out = n->outputs[0];
    // A residual has the output's shape: it would need padding at run time.
    if (fused && n->inputs.size() > 3 && n->inputs[3]) return Outcome::kLeft;
    // A folded LayerNorm's colsum would need padding with B (fold_layernorm_into_matmul takes aligned widths only).
    if (fused && n->attrs.has("norm_epsilon")) return Outcome::kLeft;
    if (!a || !b || !b->is_constant() || b->constant->rank() != 2 || !reduced_or_float(b->dtype) ||
        a->dtype != b->dtype || !a->rank_known || a->shape.size() < 2 || !out->rank_known || out->shape.empty())
      return Outcome::kLeft;
    int64_t tb = 0;
    if (fused) {
      auto t = n->attrs.get_int("trans_b", 0);
      if (!t.ok()) return Outcome::kLeft;
      tb = *t;
    }
    const int axis = tb ? 0 : 1;  // B's N axis: [K, N], or [N, K] with trans_b
    const int64_t width = b->constant->dim(axis);
    const size_t es = dtype_size(b->dtype);
    if (width < kMinWidth || width * static_cast<int64_t>(es) % 16 == 0) return Outcome::kLeft;
    if (!out->shape.back().is_static() || out->shape.back().value != width) return Outcome::kLeft;
    ir::Value* bias = fused && n->inputs.size() > 2 ? n->inputs[2] : nullptr;
    if (bias && (!bias->is_constant() || bias->constant->rank() != 1 || bias->constant->numel() != width))
      return Outcome::kLeft;
    if (ctx.options.has_kernel && !ctx.options.has_kernel("Unpad", "kiln", b->dtype)) return Outcome::kLeft;
    const int64_t np = padded_width(width, es);

    // The value to hand back: the GEMM's own, or the converted one of a Cast that is its only reader.
    ir::Value* target = out;
    ir::Node* cast = nullptr;
    DataType to = out->dtype;
    if (out->users.size() == 1 && !match::is_graph_output(g, out)) {
      ir::Node* u = out->users[0];
      auto code = u->attrs.get_int("to", 0);
      DataType t;
      if (u->op_type == "Cast" && u->domain.empty() && code.ok() && ops::dtype_from_onnx_code(*code, &t) &&
          reduced_or_float(t)) {
        cast = u;
        target = u->outputs[0];
        to = t;
      }
    }

    // odd_gemm: the product is left at its odd width, B stored [N, K] (already so: nothing to do). The kernels that
    // store any width load A's and B's rows of K by TMA: K must make 16-byte rows.
    const int64_t k = b->constant->dim(1 - axis);
    if (!cast && ctx.options.odd_gemm && plain_product(n) && b->dtype != DataType::kFLOAT &&
        k * static_cast<int64_t>(es) % 16 == 0) {
      if (fused && tb) return Outcome::kLeft;
      return odd_width(g, n) ? Outcome::kOddWidth : Outcome::kLeft;
    }

    g.set_node_input(n, 1, g.add_constant(b->name + "_padded", zero_padded(*b->constant, axis, np)));
    if (bias) g.set_node_input(n, 2, g.add_constant(bias->name + "_padded", zero_padded(*bias->constant, 0, np)));
    // The GEMM keeps its name (profiles and layer information find it) and writes the padded value.
    const std::string name = target->name;
    const ops::Shape shape = target->shape;
    if (target != out) rename_free(g, target, name + "_unpadded");
    rename_free(g, out, out->name + "_padded");
    out->shape.back() = ops::Dim(np);

    Attributes at;
    at.set("width", width);
    if (to != out->dtype) at.set("to", ops::onnx_code_of(to));
    ir::Node* u = g.add_node("Unpad", g.unique_node_name(n->name + "_unpad"), {out}, {name}, std::move(at), 1, "kiln");
    ir::Value* y = u->outputs[0];
    y->dtype = to;
    y->shape = shape;
    y->rank_known = true;
    // Every reader of the old value (and the graph outputs) reads Unpad's; Unpad itself keeps reading the GEMM.
    g.replace_all_uses(target, y);
    if (target == out) g.set_node_input(u, 0, out);
    if (cast) match::record_fusion(u, {cast});
    return cast ? Outcome::kPaddedCast : Outcome::kPadded;
  }

  // A MatMul, or a FusedMatMul that adds nothing to the product (no bias, residual, activation or scale).
  static bool plain_product(const ir::Node* n) {
    if (n->domain.empty()) return true;
    auto act = n->attrs.get_string("activation", "none");
    auto alpha = n->attrs.get_float("alpha", 1.0f);
    return n->inputs.size() == 2 && act.ok() && *act == "none" && alpha.ok() && *alpha == 1.0f;
  }

  // n (A times the constant B [K, N]) as a FusedMatMul under the same name with B transposed to [N, K], writing
  // the odd-width rows as they are (odd_gemm: the CUTLASS kernels take it; an engine loaded where they are not built
  // runs cuBLASLt at the odd leading dimension, correct and ~5x slower).
  static bool odd_width(ir::Graph& g, ir::Node* n) {
    ir::Value *a = n->inputs[0], *b = n->inputs[1], *out = n->outputs[0];
    auto nk = ops::permute(*b->constant, {1, 0});
    if (!nk.ok()) return false;
    ir::Value* w = g.add_constant(b->name + "_nk", std::move(*nk));
    const std::string name = n->name, value = out->name;
    const ops::Shape shape = out->shape;
    rename_free(g, out, value + "_replaced");
    Attributes at;
    at.set("trans_b", int64_t{1});
    ir::Node* f = g.add_node("FusedMatMul", name, {a, w}, {value}, std::move(at), 1, "kiln");
    ir::Value* y = f->outputs[0];
    y->dtype = out->dtype;
    y->shape = shape;
    y->rank_known = true;
    match::record_fusion(f, {n});
    g.replace_all_uses(out, y);
    g.remove_node(n);
    f->name = name;  // the GEMM's own name, for profiles and layer information
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_pad_gemm_width() { return std::make_unique<PadGemmWidth>(); }

}  // namespace kiln::passes
