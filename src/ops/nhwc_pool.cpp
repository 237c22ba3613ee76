// kiln MaxPool and AveragePool with layout "NHWC": ONNX's pooling on channels-last tensors (X, Y [N, spatial..., C]),
// for the layout_nhwc pass; the reference permutes to NCHW and runs the ONNX op.
#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

OpSchema make_nhwc_pool(const std::string& op) {
  OpSchema s;
  s.name = op;
  s.domain = "kiln";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"auto_pad", AttrType::kSTRING},
             {"kernel_shape", AttrType::kINTS, AttrRequirement::kRequired},
             {"pads", AttrType::kINTS},
             {"strides", AttrType::kINTS},
             {"ceil_mode", AttrType::kINT},
             {"dilations", AttrType::kINTS},
             {"layout", AttrType::kSTRING, AttrRequirement::kRequired}};
  s.attrs.push_back(op == "MaxPool" ? AttrSpec{"storage_order", AttrType::kINT}
                                    : AttrSpec{"count_include_pad", AttrType::kINT});
  s.dtypes = float_types();
  s.infer = [op](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(check_nhwc_layout(op, ctx.attrs()));
    const TensorInfo& x = ctx.input(0);
    if (!x.rank_known || x.shape.size() < 3) return unsupported("kiln " + op + ": X must have a known rank >= 3");
    const int rank = static_cast<int>(x.shape.size());
    TensorInfo xn = x;
    xn.shape = permute_shape(x.shape, perm_to_nchw(rank));
    KILN_ASSIGN_OR_RETURN(TensorInfo y, infer_reference(op, 19, ctx, without_layout(ctx.attrs()), {&xn}));
    ctx.output(0) = make_info(x.dtype, permute_shape(y.shape, perm_to_nhwc(rank)));
    return Status::Ok();
  };
  s.compute = [op](ComputeContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(check_nhwc_layout(op, ctx.attrs()));
    const Tensor& x = ctx.input(0);
    if (x.rank() < 3) return invalid_argument("kiln " + op + ": X must have rank >= 3");
    KILN_ASSIGN_OR_RETURN(Tensor xn, permute(x, perm_to_nchw(x.rank())));
    KILN_ASSIGN_OR_RETURN(auto y, run_reference(op, "", without_layout(ctx.attrs()), 19, {&xn}));
    KILN_ASSIGN_OR_RETURN(Tensor yh, permute(y[0], perm_to_nhwc(x.rank())));
    ctx.set_output(0, std::move(yh));
    return Status::Ok();
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(NhwcMaxPool) { return make_nhwc_pool("MaxPool"); }
KILN_REGISTER_OP(NhwcAveragePool) { return make_nhwc_pool("AveragePool"); }

}  // namespace kiln::ops
