// kiln::Pointwise: a fused chain of elementwise operators, described by a pointwise program (pointwise_program.h).
// Inputs broadcast to one output shape; every output has that shape and the type its program register gives.
// The builder adds the compiled CUDA image (cubin or PTX) and its kernel name; the reference compute interprets.
#include "ops/op.h"
#include "ops/op_util.h"
#include "ops/pointwise_program.h"

namespace kiln::ops {

KILN_REGISTER_OP(Pointwise) {
  OpSchema s;
  s.name = "Pointwise";
  s.domain = "kiln";
  s.min_inputs = 0;
  s.max_inputs = -1;
  s.min_outputs = 1;
  s.max_outputs = -1;
  s.attrs = {{"program", AttrType::kSTRING, AttrRequirement::kRequired},
             {"image", AttrType::kSTRING},        // compiled code for the CUDA backend
             {"image_kind", AttrType::kSTRING},   // "cubin" or "ptx"
             {"kernel", AttrType::kSTRING}};      // base name of the kernels in the image
  s.dtypes = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT32, DataType::kINT64,
              DataType::kBOOL};
  s.infer = [](InferContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(std::string text, ctx.attrs().get_string("program"));
    KILN_ASSIGN_OR_RETURN(PointwiseProgram p, PointwiseProgram::parse(text));
    if (static_cast<int>(p.inputs.size()) != ctx.num_inputs() ||
        static_cast<int>(p.outputs.size()) != ctx.num_outputs())
      return invalid_model("Pointwise: the program has " + std::to_string(p.inputs.size()) + " inputs and " +
                           std::to_string(p.outputs.size()) + " outputs, the node " + std::to_string(ctx.num_inputs()) +
                           " and " + std::to_string(ctx.num_outputs()));
    std::vector<Shape> shapes;
    for (int k = 0; k < ctx.num_inputs(); ++k) {
      if (!ctx.has_input(k)) return invalid_model("Pointwise: input " + std::to_string(k) + " is missing");
      if (ctx.input(k).dtype != p.inputs[k])
        return invalid_model("Pointwise: input " + std::to_string(k) + " is " + dtype_name(ctx.input(k).dtype) +
                             " but the program reads " + dtype_name(p.inputs[k]));
      if (!ctx.input(k).rank_known) {
        for (int o = 0; o < ctx.num_outputs(); ++o) {
          ctx.output(o).dtype = p.output_type(o);
          ctx.output(o).rank_known = false;
        }
        return Status::Ok();
      }
      shapes.push_back(ctx.input(k).shape);
    }
    KILN_ASSIGN_OR_RETURN(Shape out, broadcast_shapes(shapes, &ctx));
    for (int o = 0; o < ctx.num_outputs(); ++o) ctx.output(o) = make_info(p.output_type(o), out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(std::string text, ctx.attrs().get_string("program"));
    KILN_ASSIGN_OR_RETURN(PointwiseProgram p, PointwiseProgram::parse(text));
    std::vector<const Tensor*> in;
    std::vector<std::vector<int64_t>> shapes;
    for (int k = 0; k < ctx.num_inputs(); ++k) {
      in.push_back(&ctx.input(k));
      shapes.push_back(ctx.input(k).shape());
    }
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> out_shape, broadcast_dims(shapes));
    std::vector<Tensor> outs;
    KILN_RETURN_IF_ERROR(run_pointwise_program(p, in, out_shape, &outs));
    if (static_cast<int>(outs.size()) != ctx.num_outputs())
      return invalid_model("Pointwise: the program has " + std::to_string(outs.size()) + " outputs, the node " +
                           std::to_string(ctx.num_outputs()));
    for (size_t k = 0; k < outs.size(); ++k) ctx.set_output(static_cast<int>(k), std::move(outs[k]));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
