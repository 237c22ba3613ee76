// ai.onnx.preview.training::Gradient: registered so that import, verification and inference know it; the builder's
// expand_gradient pass replaces every Gradient node with backward nodes, so an engine never runs one.
#include "ops/op_util.h"

namespace kiln::ops {

KILN_REGISTER_OP(Gradient) {
  OpSchema s;
  s.name = "Gradient";
  s.domain = "ai.onnx.preview.training";
  s.since_opset = 1;
  s.min_inputs = 1;  // the values of xs, then of zs
  s.max_inputs = -1;
  s.min_outputs = 1;  // one gradient per name in xs
  s.max_outputs = -1;
  s.attrs = {{"xs", AttrType::kSTRINGS, AttrRequirement::kRequired},
             {"y", AttrType::kSTRING, AttrRequirement::kRequired},
             {"zs", AttrType::kSTRINGS}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    if (ctx.num_outputs() > ctx.num_inputs())
      return invalid_model("has " + std::to_string(ctx.num_outputs()) + " outputs but only " +
                           std::to_string(ctx.num_inputs()) + " inputs; output k is the gradient of input k");
    for (int k = 0; k < ctx.num_outputs(); ++k) {
      const TensorInfo& x = ctx.input(k);
      ctx.output(k) = make_info(x.dtype, x.shape);
      ctx.output(k).rank_known = x.rank_known;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext&) -> Status {
    return unsupported("Gradient is expanded into backward nodes when the engine is built (pass expand_gradient); "
                       "it cannot run as a node");
  };
  return s;
}

}  // namespace kiln::ops
