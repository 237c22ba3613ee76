// DepthToSpace (DCR and CRD orderings) and SpaceToDepth: moving blocks between channels and spatial dims.
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

enum class D2SMode { kDCR, kCRD };

Result<int64_t> get_blocksize(const Attributes& attrs, const char* op) {
  KILN_ASSIGN_OR_RETURN(int64_t b, attrs.get_int("blocksize"));
  if (b <= 0) return invalid_model(std::string(op) + ": blocksize must be positive, got " + std::to_string(b));
  return b;
}

Result<D2SMode> get_mode(const Attributes& attrs, const char* op) {
  KILN_ASSIGN_OR_RETURN(std::string m, attrs.get_string("mode", "DCR"));
  if (m == "DCR") return D2SMode::kDCR;
  if (m == "CRD") return D2SMode::kCRD;
  return invalid_model(std::string(op) + ": mode '" + m + "' is not supported; allowed values are DCR, CRD");
}

// Scales a dim by num/den; symbolic dims become a fresh unknown unless the factor is 1.
Result<Dim> scale_dim(const Dim& d, int64_t num, int64_t den, InferContext& ctx, const char* op, const char* what,
                      const Shape& shape) {
  if (num == den) return d;
  if (!d.is_static()) return ctx.fresh_dim();
  if ((d.value * num) % den != 0)
    return invalid_model(std::string(op) + ": " + what + " " + std::to_string(d.value) + " of input " +
                         shape_to_string(shape) + " is not divisible by " + std::to_string(den));
  return Dim(d.value * num / den);
}

Status check_rank4(const TensorInfo& x, const char* op) {
  if (x.rank_known && x.shape.size() != 4)
    return invalid_model(std::string(op) + ": input must be 4-D [N,C,H,W], got " + shape_to_string(x.shape));
  return Status::Ok();
}

// One element copy loop for both directions: `deep` is the [N, C*b*b, H, W] side, `wide` the [N, C, H*b, W*b]
// side; channel index of block (i, j) for wide channel c depends on the ordering.
void block_copy(const uint8_t* src, uint8_t* dst, size_t es, int64_t n, int64_t c, int64_t h, int64_t w, int64_t b,
                D2SMode mode, bool to_space) {
  const int64_t cd = c * b * b, hw = h * b, ww = w * b;
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < b; ++j) {
          int64_t dc = mode == D2SMode::kDCR ? (i * b + j) * c + ic : ic * b * b + i * b + j;
          for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x) {
              int64_t deep = ((in * cd + dc) * h + y) * w + x;
              int64_t wide = ((in * c + ic) * hw + y * b + i) * ww + x * b + j;
              if (to_space) std::memcpy(dst + wide * es, src + deep * es, es);
              else std::memcpy(dst + deep * es, src + wide * es, es);
            }
        }
}

}  // namespace

KILN_REGISTER_OP(DepthToSpace) {
  OpSchema s;
  s.name = "DepthToSpace";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"blocksize", AttrType::kINT, AttrRequirement::kRequired}, {"mode", AttrType::kSTRING}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t b, get_blocksize(ctx.attrs(), "DepthToSpace"));
    KILN_RETURN_IF_ERROR(get_mode(ctx.attrs(), "DepthToSpace").status());
    KILN_RETURN_IF_ERROR(check_rank4(x, "DepthToSpace"));
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!x.rank_known) { o.rank_known = false; return Status::Ok(); }
    o.shape = x.shape;
    KILN_ASSIGN_OR_RETURN(o.shape[1], scale_dim(x.shape[1], 1, b * b, ctx, "DepthToSpace", "channel count", x.shape));
    KILN_ASSIGN_OR_RETURN(o.shape[2], scale_dim(x.shape[2], b, 1, ctx, "DepthToSpace", "height", x.shape));
    KILN_ASSIGN_OR_RETURN(o.shape[3], scale_dim(x.shape[3], b, 1, ctx, "DepthToSpace", "width", x.shape));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t b, get_blocksize(ctx.attrs(), "DepthToSpace"));
    // Opset 1 has no mode attribute and always means DCR.
    KILN_ASSIGN_OR_RETURN(D2SMode mode, get_mode(ctx.attrs(), "DepthToSpace"));
    if (x.rank() != 4) return invalid_argument("DepthToSpace: input must be 4-D, got " + dims_to_string(x.shape()));
    auto sh = x.shape();
    if (sh[1] % (b * b) != 0)
      return invalid_argument("DepthToSpace: channels " + std::to_string(sh[1]) + " not divisible by blocksize^2 " +
                              std::to_string(b * b));
    int64_t c = sh[1] / (b * b);
    Tensor& out = ctx.allocate_output(0, x.dtype(), {sh[0], c, sh[2] * b, sh[3] * b});
    block_copy(static_cast<const uint8_t*>(x.raw()), static_cast<uint8_t*>(out.raw()), dtype_size(x.dtype()), sh[0], c,
               sh[2], sh[3], b, mode, true);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SpaceToDepth) {
  OpSchema s;
  s.name = "SpaceToDepth";
  s.min_inputs = s.max_inputs = 1;
  // mode arrives in opset 28; before it SpaceToDepth is always the inverse of DCR DepthToSpace, the default.
  s.attrs = {{"blocksize", AttrType::kINT, AttrRequirement::kRequired}, {"mode", AttrType::kSTRING}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t b, get_blocksize(ctx.attrs(), "SpaceToDepth"));
    KILN_RETURN_IF_ERROR(get_mode(ctx.attrs(), "SpaceToDepth").status());
    KILN_RETURN_IF_ERROR(check_rank4(x, "SpaceToDepth"));
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!x.rank_known) { o.rank_known = false; return Status::Ok(); }
    o.shape = x.shape;
    KILN_ASSIGN_OR_RETURN(o.shape[1], scale_dim(x.shape[1], b * b, 1, ctx, "SpaceToDepth", "channel count", x.shape));
    KILN_ASSIGN_OR_RETURN(o.shape[2], scale_dim(x.shape[2], 1, b, ctx, "SpaceToDepth", "height", x.shape));
    KILN_ASSIGN_OR_RETURN(o.shape[3], scale_dim(x.shape[3], 1, b, ctx, "SpaceToDepth", "width", x.shape));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t b, get_blocksize(ctx.attrs(), "SpaceToDepth"));
    KILN_ASSIGN_OR_RETURN(D2SMode mode, get_mode(ctx.attrs(), "SpaceToDepth"));
    if (x.rank() != 4) return invalid_argument("SpaceToDepth: input must be 4-D, got " + dims_to_string(x.shape()));
    auto sh = x.shape();
    if (sh[2] % b != 0 || sh[3] % b != 0)
      return invalid_argument("SpaceToDepth: spatial dims of " + dims_to_string(sh) + " not divisible by blocksize " +
                              std::to_string(b));
    int64_t h = sh[2] / b, w = sh[3] / b;
    Tensor& out = ctx.allocate_output(0, x.dtype(), {sh[0], sh[1] * b * b, h, w});
    block_copy(static_cast<const uint8_t*>(x.raw()), static_cast<uint8_t*>(out.raw()), dtype_size(x.dtype()), sh[0],
               sh[1], h, w, b, mode, false);
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
