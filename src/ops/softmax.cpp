// Normalizations along an axis: Softmax, LogSoftmax and Hardmax.
#include <cmath>

#include "ops/broadcast_loop.h"

namespace kiln::ops {
namespace {

enum class Kind { kSoftmax, kLogSoftmax, kHardmax };

// The reduced extent viewed as [outer, len, inner]. Before opset 13 the input is coerced to 2-D at axis
// (everything from axis on is one row); from 13 only the axis itself is reduced.
struct Layout {
  int64_t outer = 1, len = 1, inner = 1;
};

Result<Layout> layout_for(const std::string& name, const Attributes& attrs, int opset, const std::vector<int64_t>& dims) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  KILN_ASSIGN_OR_RETURN(int64_t axis_attr, attrs.get_int("axis", opset < 13 ? 1 : -1));
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_attr, rank, name + " axis"));
  Layout l;
  l.outer = product(dims, 0, axis);
  if (opset < 13) {
    l.len = product(dims, axis);
  } else {
    l.len = rank == 0 ? 1 : dims[axis];
    l.inner = product(dims, axis + 1);
  }
  return l;
}

template <typename T>
void normalize(const Tensor& in, Tensor& out, const Layout& l, Kind kind) {
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  std::vector<double> row(static_cast<size_t>(l.len));
  for (int64_t o = 0; o < l.outer; ++o) {
    for (int64_t i = 0; i < l.inner; ++i) {
      const int64_t base = o * l.len * l.inner + i;
      double mx = -INFINITY;
      int64_t arg = 0;
      for (int64_t k = 0; k < l.len; ++k) {
        row[k] = static_cast<double>(static_cast<compute_t<T>>(src[base + k * l.inner]));
        if (row[k] > mx) { mx = row[k]; arg = k; }
      }
      if (kind == Kind::kHardmax) {
        for (int64_t k = 0; k < l.len; ++k) dst[base + k * l.inner] = static_cast<T>(static_cast<compute_t<T>>(k == arg ? 1 : 0));
        continue;
      }
      // Subtracting the maximum keeps exp() from overflowing on large logits.
      double sum = 0;
      for (int64_t k = 0; k < l.len; ++k) sum += std::exp(row[k] - mx);
      if (kind == Kind::kSoftmax) {
        for (int64_t k = 0; k < l.len; ++k)
          dst[base + k * l.inner] = static_cast<T>(static_cast<compute_t<T>>(std::exp(row[k] - mx) / sum));
      } else {
        const double lse = std::log(sum);
        for (int64_t k = 0; k < l.len; ++k)
          dst[base + k * l.inner] = static_cast<T>(static_cast<compute_t<T>>(row[k] - mx - lse));
      }
    }
  }
}

OpSchema make_normalization(const std::string& name, Kind kind) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [name](InferContext& ctx) {
    if (!dtype_is_float(ctx.input(0).dtype))
      return invalid_model(name + ": input must be a floating-point type but is " + dtype_name(ctx.input(0).dtype));
    if (ctx.input(0).rank_known) {
      const int64_t rank = static_cast<int64_t>(ctx.input(0).shape.size());
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", ctx.opset() < 13 ? 1 : -1));
      KILN_RETURN_IF_ERROR(normalize_axis(axis, rank, name + " axis").status());
    }
    return infer_same_as_input0(ctx);
  };
  s.compute = [name, kind](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(Layout l, layout_for(name, ctx.attrs(), ctx.opset(), in.shape()));
    Tensor& out = ctx.allocate_output(0, in.dtype(), in.shape());
    KILN_DISPATCH_FLOAT_TYPES(in.dtype(), name, normalize<scalar_t>(in, out, l, kind));
    return Status::Ok();
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(Softmax) { return make_normalization("Softmax", Kind::kSoftmax); }
KILN_REGISTER_OP(LogSoftmax) { return make_normalization("LogSoftmax", Kind::kLogSoftmax); }
KILN_REGISTER_OP(Hardmax) { return make_normalization("Hardmax", Kind::kHardmax); }

}  // namespace kiln::ops
