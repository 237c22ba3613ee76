// kiln Unpad: Y[..., j] = cast(X[..., j]) for j < width: the first `width` columns of X's rows, optionally
// converted to `to`. pad_gemm_width (passes/pad_gemm_width.cpp) makes a GEMM write rows padded to a 16-byte
// multiple and this layer gives the graph its original [..., N] value back (absorbing the float32 output's Cast).
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

struct UnpadAttrs {
  int64_t width = 0;
  DataType to = DataType::kFLOAT;
};

// x_dt: X's type, the default of `to`; x_width: X's last dim, or -1 when not known.
Result<UnpadAttrs> parse(const Attributes& attrs, DataType x_dt, int64_t x_width) {
  UnpadAttrs a;
  KILN_ASSIGN_OR_RETURN(a.width, attrs.get_int("width"));
  if (a.width < 0 || (x_width >= 0 && a.width > x_width))
    return invalid_model("Unpad: width " + std::to_string(a.width) + " must lie in [0, " + std::to_string(x_width) +
                         "], X's last dim");
  a.to = x_dt;
  if (attrs.has("to")) {
    KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("to"));
    if (!dtype_from_onnx_code(code, &a.to) || !dtype_is_float(a.to))
      return invalid_model("Unpad: 'to' must be a float type, got type code " + std::to_string(code));
  }
  return a;
}

}  // namespace

KILN_REGISTER_OP(Unpad) {
  OpSchema s;
  s.name = "Unpad";
  s.domain = "kiln";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"width", AttrType::kINT, AttrRequirement::kRequired}, {"to", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    if (!x.rank_known || x.shape.empty()) return unsupported("Unpad: X must have rank >= 1");
    const Dim& last = x.shape.back();
    KILN_ASSIGN_OR_RETURN(UnpadAttrs a, parse(ctx.attrs(), x.dtype, last.is_static() ? last.value : -1));
    Shape out = x.shape;
    out.back() = Dim(a.width);
    ctx.output(0) = make_info(a.to, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    if (x.rank() < 1) return invalid_argument("Unpad: X must have rank >= 1");
    const int64_t np = x.shape().back();
    KILN_ASSIGN_OR_RETURN(UnpadAttrs a, parse(ctx.attrs(), x.dtype(), np));
    std::vector<int64_t> dims = x.shape();
    dims.back() = a.width;
    Tensor y(x.dtype(), dims);
    const int64_t rows = np ? x.numel() / np : 0;
    const size_t es = dtype_size(x.dtype());
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<uint8_t*>(y.raw()) + r * a.width * es, static_cast<const uint8_t*>(x.raw()) + r * np * es,
                  a.width * es);
    ctx.set_output(0, y.cast(a.to));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
