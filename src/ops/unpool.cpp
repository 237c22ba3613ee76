// MaxUnpool: scatters pooled values back to the positions MaxPool's Indices output recorded.
#include "ops/window_util.h"

namespace kiln::ops {
namespace {

// The output size MaxUnpool reconstructs when no output_shape is given: the inverse of the pooling geometry.
std::vector<int64_t> default_unpool_spatial(const WindowParams& p, const std::vector<int64_t>& in_sp) {
  std::vector<int64_t> out(in_sp.size());
  for (size_t i = 0; i < in_sp.size(); ++i)
    out[i] = (in_sp[i] - 1) * p.strides[i] + p.kernel[i] - p.pads[i] - p.pads[i + p.nsp];
  return out;
}

}  // namespace

KILN_REGISTER_OP(MaxUnpool) {
  OpSchema s;
  s.name = "MaxUnpool";
  s.since_opset = 9;
  s.min_inputs = 2;
  s.max_inputs = 3;  // X, I, output_shape
  s.attrs = {{"kernel_shape", AttrType::kINTS, AttrRequirement::kRequired}, {"pads", AttrType::kINTS},
             {"strides", AttrType::kINTS}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const std::string op = "MaxUnpool";
    const TensorInfo &x = ctx.input(0), &ind = ctx.input(1);
    if (!dtype_is_float(x.dtype))
      return invalid_model(op + ": X must be a floating-point type but is " + dtype_name(x.dtype));
    if (ind.dtype != DataType::kINT64) return invalid_model(op + ": I must be int64 but is " + dtype_name(ind.dtype));
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (ctx.has_input(2)) {
      if (auto v = known_values(ctx.input(2))) {
        o.shape.assign(v->begin(), v->end());
        return Status::Ok();
      }
    }
    if (!x.rank_known) { o.rank_known = false; return Status::Ok(); }
    const int nsp = static_cast<int>(x.shape.size()) - 2;
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window(op, ctx.attrs(), nsp, nullptr, false));
    o.shape = {x.shape[0], x.shape[1]};
    for (int i = 0; i < nsp; ++i) {
      const Dim& d = x.shape[i + 2];
      if (ctx.has_input(2) || !d.is_static()) {
        o.shape.push_back(ctx.fresh_dim());
      } else {
        o.shape.push_back(Dim((d.value - 1) * p.strides[i] + p.kernel[i] - p.pads[i] - p.pads[i + nsp]));
      }
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "MaxUnpool";
    const Tensor &x = ctx.input(0), &ind = ctx.input(1);
    if (ind.shape() != x.shape())
      return invalid_argument(op + ": I " + dims_to_string(ind.shape()) + " must have the shape of X " +
                              dims_to_string(x.shape()));
    const int nsp = x.rank() - 2;
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window(op, ctx.attrs(), nsp, nullptr, false));
    const std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    // Indices count positions in the default-sized output (as MaxPool produced them over the original input);
    // an explicit output_shape only changes where those positions land, by padding each axis at its end.
    std::vector<int64_t> def_shape = {x.dim(0), x.dim(1)};
    for (int64_t d : default_unpool_spatial(p, in_sp)) {
      if (d < 0) return invalid_argument(op + ": pads are larger than the unpooled extent");
      def_shape.push_back(d);
    }
    std::vector<int64_t> out_shape = def_shape;
    if (ctx.has_input(2)) {
      KILN_ASSIGN_OR_RETURN(out_shape, tensor_to_ints(ctx.input(2)));
      if (out_shape.size() != def_shape.size() || out_shape[0] != def_shape[0] || out_shape[1] != def_shape[1])
        return invalid_argument(op + ": output_shape " + dims_to_string(out_shape) + " must be [N, C, spatial...] = [" +
                                std::to_string(def_shape[0]) + ", " + std::to_string(def_shape[1]) + ", ...] of rank " +
                                std::to_string(def_shape.size()));
      for (auto d : out_shape)
        if (d < 0) return invalid_argument(op + ": output_shape " + dims_to_string(out_shape) + " has a negative dim");
    }
    const int64_t def_total = product(def_shape);
    const auto out_strides = strides_of(out_shape);
    Tensor& y = ctx.allocate_output(0, x.dtype(), out_shape);
    const int64_t* ip = ind.data<int64_t>();
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), op, {
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        int64_t flat = ip[i];
        if (flat < 0 || flat >= def_total)
          return invalid_argument(op + ": index " + std::to_string(flat) + " at position " + std::to_string(i) +
                                  " is outside the unpooled tensor " + dims_to_string(def_shape));
        int64_t off = 0;
        for (int d = static_cast<int>(def_shape.size()) - 1; d >= 0; --d) {
          const int64_t coord = flat % def_shape[d];
          flat /= def_shape[d];
          if (coord >= out_shape[d])
            return invalid_argument(op + ": index " + std::to_string(ip[i]) + " falls outside output_shape " +
                                    dims_to_string(out_shape));
          off += coord * out_strides[d];
        }
        yp[off] = xp[i];
      }
    });
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
