// Registration of QuantizeLinear and DequantizeLinear for 8-bit integers (and int32 into DequantizeLinear), per
// tensor or per axis: the scale/zero-point layout and the output type as the reference in src/ops/quantize.cpp reads
// them. Blocked quantization, 4-bit/16-bit/float8 types stay on the host reference. The kernels are quantize.cu.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/reduce_kernels.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

bool present(const runtime::PlanNode& n, int i) { return i < static_cast<int>(n.inputs.size()) && n.inputs[i] >= 0; }

bool is_float_type(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

// Per tensor (a scalar or one-element scale, as the reference takes it) or per axis (a 1-D scale along `axis`).
Result<QuantGeometry> geometry(const std::string& op, const KernelArgs& a) {
  const DevTensor &x = a.in[0], &s = a.in[1];
  QuantGeometry g;
  if (s.rank() == 0 || (s.rank() == 1 && s.numel() == 1 && x.rank() != 1)) return g;
  KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis", 1));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, x.rank(), op + " axis"));
  g.per_tensor = false;
  g.n = x.shape[axis];
  g.inner = ops::product(x.shape, axis + 1);
  if (s.rank() != 1 || s.numel() != g.n)
    return invalid_argument(op + ": per-axis scale must be 1-D of size " + std::to_string(g.n) + " (axis " +
                            std::to_string(axis) + " of " + dims_to_string(x.shape) + "), got " +
                            dims_to_string(s.shape));
  if (a.has_input(2) && a.in[2].shape != s.shape)
    return invalid_argument(op + ": zero point shape " + dims_to_string(a.in[2].shape) + " differs from scale shape " +
                            dims_to_string(s.shape));
  return g;
}

bool not_blocked(const runtime::PlanNode& n) {
  auto b = n.attrs.get_int("block_size", 0);
  return b.ok() && *b == 0;
}

// QuantizeLinear's output type: the zero point's, else output_dtype (opset 21), else uint8.
DataType quantized_type(const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
  if (present(n, 2)) return plan.values[n.inputs[2]].dtype;
  auto code = n.attrs.get_int("output_dtype", 0);
  if (code.ok() && *code != 0) {
    DataType t;
    if (ops::dtype_from_onnx_code(*code, &t)) return t;
    return DataType::kBOOL;  // not one of ours: declined below
  }
  return DataType::kUINT8;
}

}  // namespace

KILN_CUDA_KERNEL(QuantizeLinear) {
  KernelDef d;
  d.op = "QuantizeLinear";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(QuantGeometry g, geometry("QuantizeLinear", a));
    const DevTensor& x = a.in[0];
    return launch_quantize(x.dtype, a.out[0].dtype, x.data, a.in[1].data, a.has_input(2) ? a.in[2].data : nullptr,
                           a.out[0].data, x.numel(), g, a.stream);
  };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    const DataType xt = plan.values[n.inputs[0]].dtype, q = quantized_type(n, plan);
    return present(n, 1) && plan.values[n.inputs[1]].dtype == xt && not_blocked(n) &&
           (q == DataType::kINT8 || q == DataType::kUINT8) && plan.values[n.outputs[0]].dtype == q;
  };
  return d;
}

KILN_CUDA_KERNEL(DequantizeLinear) {
  KernelDef d;
  d.op = "DequantizeLinear";
  d.dtypes = {DataType::kINT8, DataType::kUINT8, DataType::kINT32};
  d.run = [](KernelArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(QuantGeometry g, geometry("DequantizeLinear", a));
    const DevTensor& x = a.in[0];
    if (a.has_input(2) && a.in[2].dtype != x.dtype)
      return invalid_argument(std::string("DequantizeLinear: zero point type ") + dtype_name(a.in[2].dtype) +
                              " differs from input type " + dtype_name(x.dtype));
    return launch_dequantize(x.dtype, a.in[1].dtype, x.data, a.in[1].data, a.has_input(2) ? a.in[2].data : nullptr,
                             a.out[0].data, x.numel(), g, a.stream);
  };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    const DataType xt = plan.values[n.inputs[0]].dtype;
    return present(n, 1) && is_float_type(plan.values[n.inputs[1]].dtype) && not_blocked(n) &&
           (!present(n, 2) || plan.values[n.inputs[2]].dtype == xt);
  };
  return d;
}

}  // namespace kiln::cuda
