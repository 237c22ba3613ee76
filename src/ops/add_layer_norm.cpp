// kiln AddLayerNormalization: LayerNormalization(A + B) in one node, for fuse_add_layernorm (a transformer's
// embedding sum, or a residual Add no GEMM epilogue took, feeding a LayerNorm). B is A's shape or broadcasts to it
// along leading dims only (position embeddings [1, S, E] against [N, S, E]): each of A's rows meets one row of B.
// The sum is rounded to A's type as the separate Add stored it, so the fused node computes what the pair did.
// kiln EmbedLayerNormalization: the same with A gathered from an embedding table first (Gather along axis 0 ->
// Add -> LayerNormalization, a transformer's token embedding + position embedding + its first LayerNorm).
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

KILN_REGISTER_OP(AddLayerNormalization) {
  OpSchema s;
  s.name = "AddLayerNormalization";
  s.domain = "kiln";
  s.min_inputs = 3;
  s.max_inputs = 4;
  s.attrs = {{"axis", AttrType::kINT}, {"epsilon", AttrType::kFLOAT}, {"stash_type", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (a.dtype != b.dtype) return invalid_model("kiln AddLayerNormalization: A and B differ in type");
    if (a.rank_known && b.rank_known) {
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
      KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, a.shape.size(), "kiln AddLayerNormalization: axis"));
      KILN_RETURN_IF_ERROR(check_add_layernorm_addend(a.shape, b.shape, axis));
    }
    ctx.output(0) = make_info(a.dtype, a.shape);
    ctx.output(0).rank_known = a.rank_known;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, a.rank(), "kiln AddLayerNormalization: axis"));
    KILN_RETURN_IF_ERROR(check_add_layernorm_addend(shape_from_dims(a.shape()), shape_from_dims(b.shape()), axis));
    KILN_ASSIGN_OR_RETURN(auto sum, run_reference("Add", "", Attributes{}, 14, {&a, &b}));
    std::vector<const Tensor*> in = {&sum[0], &ctx.input(2)};
    if (ctx.has_input(3)) in.push_back(&ctx.input(3));
    KILN_ASSIGN_OR_RETURN(auto y, run_reference("LayerNormalization", "", ctx.attrs(), 17, in));
    ctx.set_output(0, std::move(y[0]));
    return Status::Ok();
  };
  return s;
}

// kiln EmbedLayerNormalization (Data [V, ...], Indices, B, Scale, [Bias]): A = Gather(Data, Indices, axis 0) has
// Indices' shape followed by Data's trailing dims; the rest is AddLayerNormalization(A, B, Scale, Bias).
KILN_REGISTER_OP(EmbedLayerNormalization) {
  OpSchema s;
  s.name = "EmbedLayerNormalization";
  s.domain = "kiln";
  s.min_inputs = 4;
  s.max_inputs = 5;
  s.attrs = {{"axis", AttrType::kINT}, {"epsilon", AttrType::kFLOAT}, {"stash_type", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& data = ctx.input(0);
    const TensorInfo& idx = ctx.input(1);
    const TensorInfo& b = ctx.input(2);
    if (idx.dtype != DataType::kINT32 && idx.dtype != DataType::kINT64)
      return invalid_model("kiln EmbedLayerNormalization: Indices must be int32 or int64");
    if (data.dtype != b.dtype) return invalid_model("kiln EmbedLayerNormalization: Data and B differ in type");
    TensorInfo& y = ctx.output(0);
    y.dtype = data.dtype;
    y.rank_known = data.rank_known && idx.rank_known;
    if (!y.rank_known) return Status::Ok();
    if (data.shape.empty()) return invalid_model("kiln EmbedLayerNormalization: Data must have rank >= 1");
    Shape a = idx.shape;
    a.insert(a.end(), data.shape.begin() + 1, data.shape.end());
    if (b.rank_known) {
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
      KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, a.size(), "kiln EmbedLayerNormalization: axis"));
      KILN_RETURN_IF_ERROR(check_add_layernorm_addend(a, b.shape, axis, "kiln EmbedLayerNormalization"));
    }
    y = make_info(data.dtype, a);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    Attributes gather;
    gather.set("axis", int64_t{0});
    KILN_ASSIGN_OR_RETURN(auto a, run_reference("Gather", "", gather, 13, {&ctx.input(0), &ctx.input(1)}));
    const Tensor& b = ctx.input(2);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, a[0].rank(), "kiln EmbedLayerNormalization: axis"));
    KILN_RETURN_IF_ERROR(check_add_layernorm_addend(shape_from_dims(a[0].shape()), shape_from_dims(b.shape()), axis,
                                                    "kiln EmbedLayerNormalization"));
    KILN_ASSIGN_OR_RETURN(auto sum, run_reference("Add", "", Attributes{}, 14, {&a[0], &b}));
    std::vector<const Tensor*> in = {&sum[0], &ctx.input(3)};
    if (ctx.has_input(4)) in.push_back(&ctx.input(4));
    KILN_ASSIGN_OR_RETURN(auto y, run_reference("LayerNormalization", "", ctx.attrs(), 17, in));
    ctx.set_output(0, std::move(y[0]));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
