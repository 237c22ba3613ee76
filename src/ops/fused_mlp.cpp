// kiln::FusedMlp: two chained small GEMMs over each row of X, Y = act2(act1(X.W1^T + b1).W2^T + b2), the target of
// fuse_small_mlp (a squeeze-excitation's excitation: fc1 + SiLU, fc2, on the pooled [N, 1, 1, C]).
//   X [..., K], W1 [Hd, K], b1 [Hd] (optional), W2 [N, Hd], b2 [N] (optional) -> Y [..., N], X's type.
// With squeeze = 1, X is [B, d1, ..., K] (rank >= 3) and each row is first the mean of X over the middle dims (the
// squeeze itself, a ReduceMean over H and W of an NHWC activation): Y is [B, 1, ..., 1, N].
// Both weights are stored as FusedMatMul's trans_b = 1 matrices (one output feature per row). The squeezed row and
// the hidden row are kept in float32 (the CUDA kernel holds them in shared memory), so the result can be more
// accurate than the ReduceMean and two FusedMatMuls it replaces, which round each to X's type.
#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// The mean of x over its middle dims (keeping them) as float32, through ReduceMean's reference compute, summed in
// double.
Result<Tensor> squeeze_mean(const Tensor& x) {
  const OpSchema* rm = OpRegistry::instance().find("ReduceMean", "");
  if (!rm) return internal_error("FusedMlp: ReduceMean is not registered");
  std::vector<int64_t> middle;
  for (int64_t i = 1; i + 1 < x.rank(); ++i) middle.push_back(i);
  Attributes at;
  at.set("axes", middle);
  at.set("keepdims", int64_t{1});
  std::vector<Tensor> out(1);
  const Tensor xd = x.cast(DataType::kDOUBLE);
  ComputeContext c(at, 13, {&xd}, &out);  // opset 13: the axes as an attribute
  KILN_RETURN_IF_ERROR(rm->compute(c).with_context("FusedMlp"));
  return out[0].cast(DataType::kFLOAT);
}

// One FusedMatMul (trans_b = 1) through its reference compute, in float32.
Result<Tensor> linear(const Tensor& x, const Tensor& w, const Tensor* bias, const std::string& act, int opset) {
  const OpSchema* mm = OpRegistry::instance().find("FusedMatMul", "kiln");
  if (!mm) return internal_error("FusedMlp: FusedMatMul is not registered");
  Attributes at;
  at.set("activation", act);
  at.set("trans_b", int64_t{1});
  Tensor wf = w.cast(DataType::kFLOAT), bf;
  if (bias) bf = bias->cast(DataType::kFLOAT);
  std::vector<Tensor> out(1);
  ComputeContext c(at, opset, {&x, &wf, bias ? &bf : nullptr}, &out);
  KILN_RETURN_IF_ERROR(mm->compute(c).with_context("FusedMlp"));
  return out[0];
}

}  // namespace

KILN_REGISTER_OP(FusedMlp) {
  OpSchema s;
  s.name = "FusedMlp";
  s.domain = "kiln";
  // b1 (input 2) may be omitted while W2 (input 3) follows it: the verifier's minimum counts only leading inputs,
  // so W2's presence is checked in infer.
  s.min_inputs = 2;
  s.max_inputs = 5;
  // activation1 / activation2: FusedMatMul's activation names (none, relu, gelu_erf, gelu_tanh, silu, sigmoid).
  s.attrs = {{"activation1", AttrType::kSTRING}, {"activation2", AttrType::kSTRING}, {"squeeze", AttrType::kINT}};
  s.dtypes = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
  s.infer = [](InferContext& ctx) -> Status {
    for (const char* name : {"activation1", "activation2"})
      KILN_RETURN_IF_ERROR(parse_matmul_activation(ctx.attrs(), name, "FusedMlp").status());
    const TensorInfo& x = ctx.input(0);
    if (!dtype_is_float(x.dtype)) return invalid_model("FusedMlp: X must be a float type");
    for (int i = 1; i < ctx.num_inputs(); ++i)
      if (ctx.has_input(i) && ctx.input(i).dtype != x.dtype)
        return invalid_model("FusedMlp: input " + std::to_string(i) + " has type " + dtype_name(ctx.input(i).dtype) +
                             ", expected " + dtype_name(x.dtype) + " like X");
    if (!ctx.has_input(1) || !ctx.has_input(3)) return invalid_model("FusedMlp: W1 (input 1) and W2 (input 3) are required");
    const TensorInfo &w1 = ctx.input(1), &w2 = ctx.input(3);
    if (!x.rank_known || !w1.rank_known || !w2.rank_known) {
      ctx.output(0).dtype = x.dtype;
      ctx.output(0).rank_known = false;
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(int64_t squeeze, ctx.attrs().get_int("squeeze", 0));
    if (squeeze != 0 && squeeze != 1) return invalid_model("FusedMlp: squeeze must be 0 or 1");
    if (x.shape.size() < (squeeze ? 3u : 1u) || w1.shape.size() != 2 || w2.shape.size() != 2)
      return invalid_model(std::string("FusedMlp: X must have rank >= ") + (squeeze ? "3 (with squeeze)" : "1") +
                           " and W1, W2 rank 2, got " + shape_to_string(x.shape) + ", " + shape_to_string(w1.shape) +
                           " and " + shape_to_string(w2.shape));
    auto differ = [](const Dim& a, const Dim& b) { return a.is_static() && b.is_static() && a.value != b.value; };
    if (differ(x.shape.back(), w1.shape[1]) || differ(w1.shape[0], w2.shape[1]))
      return invalid_model("FusedMlp: inner dimensions differ: X " + shape_to_string(x.shape) + ", W1 " +
                           shape_to_string(w1.shape) + ", W2 " + shape_to_string(w2.shape) +
                           " (expected X [..., K], W1 [H, K], W2 [N, H])");
    for (const auto& [i, len, what] : {std::tuple{2, w1.shape[0], "b1"}, std::tuple{4, w2.shape[0], "b2"}}) {
      if (!ctx.has_input(i) || !ctx.input(i).rank_known) continue;
      const Shape& b = ctx.input(i).shape;
      if (b.size() != 1 || differ(b[0], len))
        return invalid_model(std::string("FusedMlp: ") + what + " must be [" + len.to_string() + "], got " +
                             shape_to_string(b));
    }
    Shape out = x.shape;
    out.back() = w2.shape[0];
    if (squeeze)
      for (size_t i = 1; i + 1 < out.size(); ++i) out[i] = Dim(1);
    ctx.output(0) = make_info(x.dtype, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(std::string act1, ctx.attrs().get_string("activation1", "none"));
    KILN_ASSIGN_OR_RETURN(std::string act2, ctx.attrs().get_string("activation2", "none"));
    KILN_ASSIGN_OR_RETURN(int64_t squeeze, ctx.attrs().get_int("squeeze", 0));
    const Tensor& x = ctx.input(0);
    Tensor xf;
    if (squeeze) {  // the mean over the middle dims (an empty mean is 0, as ReduceMean's)
      if (x.rank() < 3) return invalid_argument("FusedMlp: squeeze needs X of rank >= 3");
      KILN_ASSIGN_OR_RETURN(xf, squeeze_mean(x));
    } else {
      xf = x.cast(DataType::kFLOAT);
    }
    KILN_ASSIGN_OR_RETURN(Tensor h, linear(xf, ctx.input(1), ctx.has_input(2) ? &ctx.input(2) : nullptr, act1,
                                           ctx.opset()));
    KILN_ASSIGN_OR_RETURN(Tensor y, linear(h, ctx.input(3), ctx.has_input(4) ? &ctx.input(4) : nullptr, act2,
                                           ctx.opset()));
    ctx.set_output(0, y.cast(x.dtype()));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
