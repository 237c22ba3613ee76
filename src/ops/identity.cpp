// Identity and Dropout (inference mode: Dropout is Identity, its optional mask output is all true).
#include "ops/op_util.h"

namespace kiln::ops {

KILN_REGISTER_OP(Identity) {
  OpSchema s;
  s.name = "Identity";
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).value = known_values(ctx.input(0));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    ctx.set_output(0, ctx.input(0));  // shares the input's storage; the runtime never writes in place
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Dropout) {
  OpSchema s;
  s.name = "Dropout";
  s.min_inputs = 1;
  s.max_inputs = 3;  // data, ratio (opset 12+), training_mode (opset 12+)
  s.min_outputs = 1;
  s.max_outputs = 2;
  s.attrs = {{"ratio", AttrType::kFLOAT}, {"seed", AttrType::kINT}, {"is_test", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    ctx.output(0) = make_info(ctx.input(0).dtype, ctx.input(0).shape);
    if (ctx.num_outputs() > 1) ctx.output(1) = make_info(DataType::kBOOL, ctx.input(0).shape);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    if (ctx.has_input(2) && ctx.input(2).numel() == 1 && ctx.input(2).get_i64(0) != 0)
      return unsupported("Dropout: training_mode=true is not supported for inference");
    ctx.set_output(0, ctx.input(0));
    if (ctx.num_outputs() > 1) {
      Tensor& mask = ctx.allocate_output(1, DataType::kBOOL, ctx.input(0).shape());
      std::fill_n(mask.data<bool>(), mask.numel(), true);
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
