// kiln ToNhwc: Y[n, h, w, c] = cast(X[n, c, h, w]) for c < C, and 0 for C <= c < channels. One layer for what
// the CUDA pipeline otherwise runs as three over a CNN's input: the lowering Cast, the Transpose into
// channels-last and the channel padding of the stem (passes/fuse_input_layout.cpp).
#include <cstring>

#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

struct ToNhwcAttrs {
  DataType to = DataType::kFLOAT;
  int64_t channels = 0;
};

Result<ToNhwcAttrs> parse(const Attributes& attrs, int64_t c) {
  ToNhwcAttrs a;
  KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("to"));
  if (!dtype_from_onnx_code(code, &a.to) ||
      (a.to != DataType::kFLOAT && a.to != DataType::kHALF && a.to != DataType::kBF16))
    return invalid_model("ToNhwc: 'to' must be float, float16 or bfloat16, got type code " + std::to_string(code));
  KILN_ASSIGN_OR_RETURN(a.channels, attrs.get_int("channels", c));
  if (c >= 0 && a.channels < c)
    return invalid_model("ToNhwc: channels (" + std::to_string(a.channels) + ") must be at least X's " +
                         std::to_string(c));
  return a;
}

}  // namespace

KILN_REGISTER_OP(ToNhwc) {
  OpSchema s;
  s.name = "ToNhwc";
  s.domain = "kiln";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"to", AttrType::kINT, AttrRequirement::kRequired}, {"channels", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    if (!x.rank_known || x.shape.size() != 4) return unsupported("ToNhwc: X must have rank 4 ([N, C, H, W])");
    const int64_t c = x.shape[1].is_static() ? x.shape[1].value : -1;
    KILN_ASSIGN_OR_RETURN(ToNhwcAttrs a, parse(ctx.attrs(), c));
    if (c < 0 && !ctx.attrs().has("channels")) return unsupported("ToNhwc: X's channel count must be known");
    ctx.output(0) = make_info(a.to, {x.shape[0], x.shape[2], x.shape[3], Dim(a.channels)});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    if (x.rank() != 4) return invalid_argument("ToNhwc: X must have rank 4 ([N, C, H, W])");
    KILN_ASSIGN_OR_RETURN(ToNhwcAttrs a, parse(ctx.attrs(), x.dim(1)));
    KILN_ASSIGN_OR_RETURN(Tensor t, permute(x.cast(a.to), perm_to_nhwc(4)));
    const int64_t c = x.dim(1), rows = x.dim(0) * x.dim(2) * x.dim(3);
    Tensor y(a.to, {x.dim(0), x.dim(2), x.dim(3), a.channels});  // zero-filled
    const size_t es = dtype_size(a.to);
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(static_cast<uint8_t*>(y.raw()) + i * a.channels * es,
                  static_cast<const uint8_t*>(t.raw()) + i * c * es, c * es);
    ctx.set_output(0, std::move(y));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
