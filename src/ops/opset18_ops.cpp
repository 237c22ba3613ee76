// Operators introduced after ONNX 1.12 (opset 18+) that Kiln adds on its own: BitwiseAnd/Or/Xor/Not.
#include "ops/broadcast_loop.h"

namespace kiln::ops {
namespace {

const std::vector<DataType> kBitwiseTypes = {DataType::kINT8,   DataType::kUINT8,  DataType::kINT16,
                                              DataType::kUINT16, DataType::kINT32,  DataType::kUINT32,
                                              DataType::kINT64,  DataType::kUINT64};

Status check_integer(const std::string& op, DataType dt) {
  if (dtype_is_integer(dt)) return Status::Ok();
  return invalid_model(op + ": inputs must be integers but are " + dtype_name(dt));
}

template <typename T, typename F>
void bitwise_kernel(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* x = a.data<T>();
  const T* y = b.data<T>();
  T* z = out.data<T>();
  std::array<const std::vector<int64_t>*, 2> ins = {&a.shape(), &b.shape()};
  for_each_broadcast<2>(out.shape(), ins, [&](int64_t o, const std::array<int64_t, 2>& idx) {
    z[o] = static_cast<T>(f(x[idx[0]], y[idx[1]]));
  });
}

// The functor is generic so one definition serves every integer width.
template <typename F>
OpSchema make_bitwise(const std::string& name, F f) {
  OpSchema s;
  s.name = name;
  s.since_opset = 18;
  s.min_inputs = s.max_inputs = 2;
  s.dtypes = kBitwiseTypes;
  s.infer = [name](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(check_integer(name, ctx.input(0).dtype));
    KILN_RETURN_IF_ERROR(check_same_dtype(ctx, name, {0, 1}));
    return infer_broadcast(ctx, {0, 1}, ctx.input(0).dtype);
  };
  s.compute = [name, f](ComputeContext& ctx) {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    if (a.dtype() != b.dtype())
      return invalid_argument(name + ": inputs have different types (" + dtype_name(a.dtype()) + ", " +
                              dtype_name(b.dtype()) + ")");
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({a.shape(), b.shape()}));
    Tensor& out = ctx.allocate_output(0, a.dtype(), dims);
    switch (a.dtype()) {
      KILN_DISPATCH_INT_CASES(bitwise_kernel<scalar_t>(a, b, out, f))
      default:
        return unsupported(name + ": data type " + dtype_name(a.dtype()) + " is not supported");
    }
    return Status::Ok();
  };
  return s;
}

template <typename T>
void bitwise_not_kernel(const Tensor& a, Tensor& out) {
  const T* x = a.data<T>();
  T* z = out.data<T>();
  for (int64_t i = 0; i < a.numel(); ++i) z[i] = static_cast<T>(~x[i]);
}

}  // namespace

KILN_REGISTER_OP(BitwiseAnd) { return make_bitwise("BitwiseAnd", [](auto x, auto y) { return x & y; }); }
KILN_REGISTER_OP(BitwiseOr) { return make_bitwise("BitwiseOr", [](auto x, auto y) { return x | y; }); }
KILN_REGISTER_OP(BitwiseXor) { return make_bitwise("BitwiseXor", [](auto x, auto y) { return x ^ y; }); }

KILN_REGISTER_OP(BitwiseNot) {
  OpSchema s;
  s.name = "BitwiseNot";
  s.since_opset = 18;
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = kBitwiseTypes;
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(check_integer("BitwiseNot", ctx.input(0).dtype));
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& a = ctx.input(0);
    Tensor& out = ctx.allocate_output(0, a.dtype(), a.shape());
    switch (a.dtype()) {
      KILN_DISPATCH_INT_CASES(bitwise_not_kernel<scalar_t>(a, out))
      default:
        return unsupported(std::string("BitwiseNot: data type ") + dtype_name(a.dtype()) + " is not supported");
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
