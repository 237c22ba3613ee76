// kiln FusedConv: y = act(conv(pre(X), W) + B + Z) in NCHW or NHWC (then X, Z, Y channels-last and W stored
// [M, k..., C/group]); the convolution itself is the ONNX Conv reference. pre (the pre_* attributes, a folded
// activation of the producer) applies to X before the convolution pads it: pad(pre(x)).
// An optional second output M is Y's mean over its spatial dims, kept as 1s ([N, 1, 1, C] channels-last, [N, C,
// 1, 1] otherwise) in Y's type: a squeeze-excitation's global average pool taken by the layer that writes Y
// (passes/fuse_conv_squeeze.cpp), so that Y need not be read back for it.
#include <cmath>

#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

Result<bool> is_nhwc(const Attributes& attrs) {
  // Read in place (not moved out of the Result): GCC 12 otherwise warns of a maybe-uninitialized string here.
  const auto r = attrs.get_string("layout", "NCHW");
  if (!r.ok()) return r.status();
  const std::string& layout = r.value();
  if (layout != "NCHW" && layout != "NHWC")
    return invalid_model("FusedConv: layout must be NCHW or NHWC, got \"" + layout + "\"");
  return layout == "NHWC";
}

// The node's attributes that Conv understands.
Attributes conv_only(const Attributes& attrs) {
  Attributes a = attrs;
  for (const auto& s : epilogue_attrs()) a.erase(s.name);
  for (const auto& s : prologue_attrs()) a.erase(s.name);
  a.erase("layout");
  return a;
}

// M's shape: Y's with the spatial dims 1.
Shape squeezed_shape(Shape y, bool nhwc) {
  const size_t first = nhwc ? 1 : 2, end = nhwc ? y.size() - 1 : y.size();
  for (size_t i = first; i < end; ++i) y[i] = Dim(1);
  return y;
}

// M from the stored Y: the ONNX ReduceMean reference over the spatial dims, keepdims (what the node the pass took
// computed).
Result<Tensor> spatial_mean(const Tensor& y, bool nhwc) {
  std::vector<int64_t> axes;
  for (int i = nhwc ? 1 : 2; i < (nhwc ? y.rank() - 1 : y.rank()); ++i) axes.push_back(i);
  Attributes a;
  a.set("axes", axes);
  a.set("keepdims", int64_t{1});
  KILN_ASSIGN_OR_RETURN(auto out, run_reference("ReduceMean", "", a, 13, {&y}));
  return std::move(out[0]);
}

}  // namespace

KILN_REGISTER_OP(FusedConv) {
  OpSchema s;
  s.name = "FusedConv";
  s.domain = "kiln";
  s.min_inputs = 2;
  s.max_inputs = 4;
  s.max_outputs = 2;
  s.attrs = {{"auto_pad", AttrType::kSTRING},   {"dilations", AttrType::kINTS}, {"group", AttrType::kINT},
             {"kernel_shape", AttrType::kINTS}, {"pads", AttrType::kINTS},      {"strides", AttrType::kINTS},
             {"layout", AttrType::kSTRING}};
  for (const auto& a : epilogue_attrs()) s.attrs.push_back(a);
  for (const auto& a : prologue_attrs()) s.attrs.push_back(a);
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(bool nhwc, is_nhwc(ctx.attrs()));
    KILN_RETURN_IF_ERROR(parse_epilogue("FusedConv", ctx.attrs()).status());
    KILN_RETURN_IF_ERROR(parse_epilogue("FusedConv", ctx.attrs(), kProloguePrefix).status());
    const TensorInfo& x = ctx.input(0);
    const TensorInfo& w = ctx.input(1);
    if (!x.rank_known || !w.rank_known) return unsupported("FusedConv: X and W must have known ranks");
    TensorInfo xn = x, wn = w;
    const int rank = static_cast<int>(x.shape.size());
    if (nhwc) {
      if (rank < 3 || w.shape.size() != x.shape.size())
        return invalid_argument("FusedConv: NHWC X and W must have the same rank >= 3");
      xn.shape = permute_shape(x.shape, perm_to_nchw(rank));
      wn.shape = permute_shape(w.shape, perm_to_nchw(rank));
    }
    std::vector<const TensorInfo*> in = {&xn, &wn, ctx.has_input(2) ? &ctx.input(2) : nullptr};
    KILN_ASSIGN_OR_RETURN(TensorInfo y, infer_reference("Conv", 17, ctx, conv_only(ctx.attrs()), in));
    if (nhwc) y.shape = permute_shape(y.shape, perm_to_nhwc(rank));
    if (ctx.has_input(3)) {
      const TensorInfo& z = ctx.input(3);
      if (z.dtype != x.dtype) return invalid_argument("FusedConv: Z must have X's type");
      if (z.rank_known && z.shape.size() != y.shape.size())
        return invalid_argument("FusedConv: Z " + shape_to_string(z.shape) + " must have Y's shape " +
                                shape_to_string(y.shape));
      for (size_t i = 0; z.rank_known && i < y.shape.size(); ++i)
        if (z.shape[i].is_static() && y.shape[i].is_static() && z.shape[i] != y.shape[i])
          return invalid_argument("FusedConv: Z " + shape_to_string(z.shape) + " must have Y's shape " +
                                  shape_to_string(y.shape));
    }
    ctx.output(0) = make_info(x.dtype, y.shape);
    if (ctx.num_outputs() > 1) {
      if (y.shape.size() < 3) return invalid_argument("FusedConv: the mean output M needs a spatial dim");
      ctx.output(1) = make_info(x.dtype, squeezed_shape(y.shape, nhwc));
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(bool nhwc, is_nhwc(ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(Epilogue e, parse_epilogue("FusedConv", ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(Epilogue pre, parse_epilogue("FusedConv", ctx.attrs(), kProloguePrefix));
    Tensor activated;
    if (pre.act != Activation::kNone) {
      // Rounded to X's type, as the standalone activation this prologue replaces would have stored it.
      activated = apply_activation(pre, ctx.input(0));
    }
    const Tensor& x = pre.act != Activation::kNone ? activated : ctx.input(0);
    const Tensor& w = ctx.input(1);
    const int rank = x.rank();
    Tensor xn, wn;
    if (nhwc) {
      if (rank < 3 || w.rank() != rank) return invalid_argument("FusedConv: NHWC X and W must have the same rank >= 3");
      KILN_ASSIGN_OR_RETURN(xn, permute(x, perm_to_nchw(rank)));
      KILN_ASSIGN_OR_RETURN(wn, permute(w, perm_to_nchw(rank)));
    }
    std::vector<const Tensor*> in = {nhwc ? &xn : &x, nhwc ? &wn : &w, ctx.has_input(2) ? &ctx.input(2) : nullptr};
    KILN_ASSIGN_OR_RETURN(auto out, run_reference("Conv", "", conv_only(ctx.attrs()), 17, in));
    Tensor y = std::move(out[0]);
    if (nhwc) {
      KILN_ASSIGN_OR_RETURN(y, permute(y, perm_to_nhwc(rank)));
    }
    const bool has_z = ctx.has_input(3);
    if (has_z && ctx.input(3).shape() != y.shape())
      return invalid_argument("FusedConv: Z " + dims_to_string(ctx.input(3).shape()) + " must have Y's shape " +
                              dims_to_string(y.shape()));
    const bool mean = ctx.num_outputs() > 1;
    if (!has_z && e.act == Activation::kNone) {
      if (mean) {
        KILN_ASSIGN_OR_RETURN(Tensor m, spatial_mean(y, nhwc));
        ctx.set_output(1, std::move(m));
      }
      ctx.set_output(0, std::move(y));
      return Status::Ok();
    }
    // The epilogue rounds once, from double, like the unfused ops' separate roundings up to one ulp.
    Tensor yd = y.cast(DataType::kDOUBLE);
    double* p = yd.data<double>();
    Tensor zd = has_z ? ctx.input(3).cast(DataType::kDOUBLE) : Tensor();
    for (int64_t i = 0; i < yd.numel(); ++i) {
      double v = p[i];
      if (has_z) v += zd.data<double>()[i];
      p[i] = apply_activation(e, v);
    }
    Tensor stored = yd.cast(y.dtype());
    if (mean) {
      KILN_ASSIGN_OR_RETURN(Tensor m, spatial_mean(stored, nhwc));
      ctx.set_output(1, std::move(m));
    }
    ctx.set_output(0, std::move(stored));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
