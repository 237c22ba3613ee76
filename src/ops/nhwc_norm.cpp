// kiln GroupNormalization with layout "NHWC": ONNX's GroupNormalization (opset 21: per-channel scale and bias) on a
// channels-last X [N, spatial..., C], for the layout_nhwc pass, with an optional activation applied last (the
// epilogue attributes, set by fuse_norm_activation); the reference permutes to NCHW and runs the ONNX op.
#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {

KILN_REGISTER_OP(NhwcGroupNormalization) {
  OpSchema s;
  s.name = "GroupNormalization";
  s.domain = "kiln";
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"epsilon", AttrType::kFLOAT},
             {"num_groups", AttrType::kINT, AttrRequirement::kRequired},
             {"stash_type", AttrType::kINT},
             {"layout", AttrType::kSTRING, AttrRequirement::kRequired}};
  for (const auto& a : epilogue_attrs()) s.attrs.push_back(a);
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(check_nhwc_layout("GroupNormalization", ctx.attrs()));
    KILN_RETURN_IF_ERROR(parse_epilogue("kiln GroupNormalization", ctx.attrs()).status());
    const TensorInfo& x = ctx.input(0);
    if (x.rank_known && x.shape.size() < 3)
      return invalid_model("kiln GroupNormalization: X must have rank >= 3 (N, spatial..., C), got rank " +
                           std::to_string(x.shape.size()));
    ctx.output(0) = make_info(x.dtype, x.shape);
    ctx.output(0).rank_known = x.rank_known;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(check_nhwc_layout("GroupNormalization", ctx.attrs()));
    const Tensor& x = ctx.input(0);
    if (x.rank() < 3) return invalid_argument("kiln GroupNormalization: X must have rank >= 3 (N, spatial..., C)");
    const int64_t c = x.shape().back();
    if (ctx.input(1).numel() != c || ctx.input(2).numel() != c)
      return invalid_argument("kiln GroupNormalization: scale and bias must have " + std::to_string(c) +
                              " elements (one per channel)");
    KILN_ASSIGN_OR_RETURN(Epilogue e, parse_epilogue("kiln GroupNormalization", ctx.attrs()));
    Attributes norm_attrs = without_layout(ctx.attrs());
    for (const auto& spec : epilogue_attrs()) norm_attrs.erase(spec.name);
    KILN_ASSIGN_OR_RETURN(Tensor xn, permute(x, perm_to_nchw(x.rank())));
    KILN_ASSIGN_OR_RETURN(auto y, run_reference("GroupNormalization", "", norm_attrs, 21,
                                                {&xn, &ctx.input(1), &ctx.input(2)}));
    KILN_ASSIGN_OR_RETURN(Tensor yh, permute(y[0], perm_to_nhwc(x.rank())));
    // One rounding, from double, where the unfused activation would have rounded twice.
    if (e.act != Activation::kNone) yh = apply_activation(e, yh);
    ctx.set_output(0, std::move(yh));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
