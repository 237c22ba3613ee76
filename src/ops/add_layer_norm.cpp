// The kiln LayerNorm family: LayerNormalization nodes that take in what was around them.
// - kiln AddLayerNormalization: LayerNormalization(A + B) in one node, for fuse_add_layernorm (a transformer's
//   embedding sum, or a residual Add no GEMM epilogue took, feeding a LayerNorm). B is A's shape or broadcasts to it
//   along leading dims only (position embeddings [1, S, E] against [N, S, E]): each of A's rows meets one row of B.
//   The sum is rounded to A's type as the separate Add stored it, so the fused node computes what the pair did.
// - kiln EmbedLayerNormalization: the same with A gathered from an embedding table first (Gather along axis 0 ->
//   Add -> LayerNormalization, a transformer's token embedding + position embedding + its first LayerNorm), or
//   the sum of two such lookups (BERT's token and token-type embeddings), rounded as their Add stored it.
// - kiln LayerNormalization: ONNX LayerNormalization (Y only).
// Each takes an optional `to` (an ONNX type code: X's type or float32): Y stored in that type. With float32 from a
// reduced type (fuse_layernorm_output_cast: the network output's Cast after the last LayerNorm) the normalized
// values are stored unrounded, where the separate Cast converted values already rounded to X's type.
#include <algorithm>

#include "ops/add_layer_norm.h"
#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {

Status check_add_layernorm_addend(const Shape& a, const Shape& b, int64_t axis, const std::string& op) {
  auto bad = [&] {
    return invalid_model(op + ": B " + shape_to_string(b) + " must equal A " + shape_to_string(a) +
                         " from dim " + std::to_string(axis) + " (the normalized dims) on, with only 1s before");
  };
  if (b.size() > a.size()) return bad();
  const size_t lead = a.size() - b.size();
  size_t f = b.size();  // B's first dim of the matching tail
  while (f > 0 && b[f - 1] == a[lead + f - 1]) --f;
  for (size_t i = 0; i < f; ++i)
    if (!(b[i].is_static() && b[i].value == 1)) return bad();
  if (static_cast<int64_t>(lead + f) > axis) {
    // The tail may start later where A's dims before it are 1 anyway (nothing is broadcast there).
    for (size_t ai = static_cast<size_t>(std::max<int64_t>(axis, 0)); ai < lead + f; ++ai)
      if (!(a[ai].is_static() && a[ai].value == 1)) return bad();
  }
  return Status::Ok();
}

Result<DataType> layernorm_output_type(const Attributes& attrs, DataType x, const std::string& op) {
  if (!attrs.has("to")) return x;
  KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("to"));
  DataType t = x;
  if (!dtype_from_onnx_code(code, &t) || (t != x && t != DataType::kFLOAT))
    return invalid_model(op + ": 'to' must be float32 or X's type (" + std::string(dtype_name(x)) + "), got type code " +
                         std::to_string(code));
  return t;
}

namespace {

const std::vector<AttrSpec> kAttrs = {
    {"axis", AttrType::kINT}, {"epsilon", AttrType::kFLOAT}, {"stash_type", AttrType::kINT}, {"to", AttrType::kINT}};

// Y of the family's shape inference: A's shape (when known) in the `to` type.
Status set_output(InferContext& ctx, const TensorInfo& a, const std::string& op) {
  KILN_ASSIGN_OR_RETURN(DataType t, layernorm_output_type(ctx.attrs(), a.dtype, op));
  ctx.output(0) = make_info(t, a.shape);
  ctx.output(0).rank_known = a.rank_known;
  return Status::Ok();
}

// The reference LayerNormalization of x (already summed, in its type) with the node's scale/bias inputs from
// `first_param` on, stored as the node's `to`: float32 from a reduced type normalizes float32 copies of x and the
// parameters, as the kernel computes in float32 and stores without rounding to x's type.
Status normalize(ComputeContext& ctx, const Tensor& x, int first_param, const std::string& op) {
  KILN_ASSIGN_OR_RETURN(DataType to, layernorm_output_type(ctx.attrs(), x.dtype(), op));
  Attributes attrs = ctx.attrs();
  attrs.erase("to");
  std::vector<Tensor> copies;
  copies.reserve(3);
  std::vector<const Tensor*> in = {&x, &ctx.input(first_param)};  // X, Scale, and the Bias when given
  if (ctx.has_input(first_param + 1)) in.push_back(&ctx.input(first_param + 1));
  if (to != x.dtype())
    for (const Tensor*& t : in) t = &copies.emplace_back(t->cast(to));
  KILN_ASSIGN_OR_RETURN(auto y, run_reference("LayerNormalization", "", attrs, 17, in));
  ctx.set_output(0, std::move(y[0]));
  return Status::Ok();
}

// normalize() of a + b, b checked against a by the addend rule and the sum rounded to a's type as an Add stores it.
Status add_and_normalize(ComputeContext& ctx, const Tensor& a, const Tensor& b, int first_param, const std::string& op) {
  KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
  KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, a.rank(), op + ": axis"));
  KILN_RETURN_IF_ERROR(check_add_layernorm_addend(shape_from_dims(a.shape()), shape_from_dims(b.shape()), axis, op));
  KILN_ASSIGN_OR_RETURN(auto sum, run_reference("Add", "", Attributes{}, 14, {&a, &b}));
  return normalize(ctx, sum[0], first_param, op);
}

// Shape inference's addend rule: B against A (both of known rank) at the node's normalized axis.
Status check_addend_info(const InferContext& ctx, const Shape& a, const TensorInfo& b, const std::string& op) {
  if (!b.rank_known) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
  KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, a.size(), op + ": axis"));
  return check_add_layernorm_addend(a, b.shape, axis, op);
}

}  // namespace

KILN_REGISTER_OP(AddLayerNormalization) {
  OpSchema s;
  s.name = "AddLayerNormalization";
  s.domain = "kiln";
  s.min_inputs = 3;
  s.max_inputs = 4;
  s.attrs = kAttrs;
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const std::string op = "kiln AddLayerNormalization";
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (a.dtype != b.dtype) return invalid_model(op + ": A and B differ in type");
    if (a.rank_known) KILN_RETURN_IF_ERROR(check_addend_info(ctx, a.shape, b, op));
    return set_output(ctx, a, op);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "kiln AddLayerNormalization";
    return add_and_normalize(ctx, ctx.input(0), ctx.input(1), 2, op);
  };
  return s;
}

// kiln EmbedLayerNormalization (Data [V, ...], Indices, B, Scale, [Bias], [Data2 [V2, ...], Indices2]):
// A = Gather(Data, Indices, axis 0) has Indices' shape followed by Data's trailing dims; with Data2 and Indices2 (of
// Indices' shape, Data2's rows Data's), A is that plus Gather(Data2, Indices2), rounded to the type; the rest is
// AddLayerNormalization(A, B, Scale, Bias).
KILN_REGISTER_OP(EmbedLayerNormalization) {
  OpSchema s;
  s.name = "EmbedLayerNormalization";
  s.domain = "kiln";
  s.min_inputs = 4;
  s.max_inputs = 7;
  s.attrs = kAttrs;
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const std::string op = "kiln EmbedLayerNormalization";
    const TensorInfo& data = ctx.input(0);
    const TensorInfo& idx = ctx.input(1);
    const TensorInfo& b = ctx.input(2);
    if (idx.dtype != DataType::kINT32 && idx.dtype != DataType::kINT64)
      return invalid_model(op + ": Indices must be int32 or int64");
    if (data.dtype != b.dtype) return invalid_model(op + ": Data and B differ in type");
    if (ctx.has_input(5) != ctx.has_input(6)) return invalid_model(op + ": Data2 and Indices2 come together");
    if (ctx.has_input(5)) {
      const TensorInfo& data2 = ctx.input(5);
      const TensorInfo& idx2 = ctx.input(6);
      if (data2.dtype != data.dtype) return invalid_model(op + ": Data and Data2 differ in type");
      if (idx2.dtype != DataType::kINT32 && idx2.dtype != DataType::kINT64)
        return invalid_model(op + ": Indices2 must be int32 or int64");
      if (data.rank_known && data2.rank_known &&
          (data2.shape.size() != data.shape.size() || data.shape.empty() ||
           !std::equal(data.shape.begin() + 1, data.shape.end(), data2.shape.begin() + 1)))
        return invalid_model(op + ": Data2 " + shape_to_string(data2.shape) + " must have Data's rows (Data " +
                             shape_to_string(data.shape) + ")");
      if (idx.rank_known && idx2.rank_known && idx2.shape != idx.shape)
        return invalid_model(op + ": Indices2 " + shape_to_string(idx2.shape) + " must have Indices' shape " +
                             shape_to_string(idx.shape));
    }
    TensorInfo a;
    a.dtype = data.dtype;
    a.rank_known = data.rank_known && idx.rank_known;
    if (a.rank_known) {
      if (data.shape.empty()) return invalid_model(op + ": Data must have rank >= 1");
      a.shape = idx.shape;
      a.shape.insert(a.shape.end(), data.shape.begin() + 1, data.shape.end());
      KILN_RETURN_IF_ERROR(check_addend_info(ctx, a.shape, b, op));
    }
    return set_output(ctx, a, op);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "kiln EmbedLayerNormalization";
    Attributes gather;
    gather.set("axis", int64_t{0});
    KILN_ASSIGN_OR_RETURN(auto a, run_reference("Gather", "", gather, 13, {&ctx.input(0), &ctx.input(1)}));
    if (ctx.has_input(5)) {
      KILN_ASSIGN_OR_RETURN(auto a2, run_reference("Gather", "", gather, 13, {&ctx.input(5), &ctx.input(6)}));
      if (a2[0].shape() != a[0].shape())
        return invalid_argument(op + ": the two lookups' shapes " + dims_to_string(a[0].shape()) + " and " +
                                dims_to_string(a2[0].shape()) + " differ");
      KILN_ASSIGN_OR_RETURN(a, run_reference("Add", "", Attributes{}, 14, {&a[0], &a2[0]}));
    }
    return add_and_normalize(ctx, a[0], ctx.input(2), 3, op);
  };
  return s;
}

// kiln LayerNormalization (X, Scale, [Bias]): ONNX LayerNormalization's Y, stored as `to`.
KILN_REGISTER_OP(KilnLayerNormalization) {
  OpSchema s;
  s.name = "LayerNormalization";
  s.domain = "kiln";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = kAttrs;
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    const std::string op = "kiln LayerNormalization";
    if (x.rank_known) {
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
      KILN_RETURN_IF_ERROR(normalize_axis(axis, x.shape.size(), op + ": axis").status());
    }
    return set_output(ctx, x, op);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    return normalize(ctx, ctx.input(0), 1, "kiln LayerNormalization");
  };
  return s;
}

}  // namespace kiln::ops
