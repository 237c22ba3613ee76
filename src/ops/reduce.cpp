// Reductions (ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare) and ArgMax/ArgMin.
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

enum class Reduce { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kLogSum, kLogSumExp, kSumSquare };

// Opset from which `axes` moved from an attribute to the second input.
int axes_input_since(Reduce r) { return r == Reduce::kSum ? 13 : 18; }

template <typename T>
using RedAcc = std::conditional_t<std::is_same_v<T, double>, double,
               std::conditional_t<std::is_integral_v<T>, std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>,
                                  float>>;

template <typename T>
inline RedAcc<T> to_acc(const T& v) {
  if constexpr (std::is_integral_v<T> || std::is_same_v<T, double>) return static_cast<RedAcc<T>>(v);
  else return static_cast<float>(v);
}

// Axes requested by the node: std::nullopt when they come from a non-constant input (unknown at inference).
struct AxesSpec {
  bool known = true;
  std::vector<int64_t> axes;  // empty: all axes (or no-op with noop_with_empty_axes)
};

Result<AxesSpec> axes_from_attrs_or_input(const std::string& op, Reduce kind, const Attributes& attrs, int opset,
                                          bool has_input, const std::optional<std::vector<int64_t>>& input_vals) {
  AxesSpec s;
  if (attrs.has("axes")) {
    KILN_ASSIGN_OR_RETURN(s.axes, attrs.get_ints("axes"));
    return s;
  }
  if (has_input) {
    if (opset < axes_input_since(kind))
      return invalid_model(op + ": axes is an attribute before opset " + std::to_string(axes_input_since(kind)) +
                           ", but the node (opset " + std::to_string(opset) + ") passes it as an input");
    if (!input_vals) { s.known = false; return s; }
    s.axes = *input_vals;
  }
  return s;
}

// Normalized, de-duplicated reduce mask; empty axes reduce all (unless noop).
Result<std::vector<bool>> reduce_mask(const std::string& op, const std::vector<int64_t>& axes, int64_t rank, bool noop) {
  std::vector<bool> m(rank, axes.empty() && !noop);
  for (auto a : axes) {
    KILN_ASSIGN_OR_RETURN(int64_t na, normalize_axis(a, rank, op + ": axis"));
    m[na] = true;
  }
  return m;
}

template <typename T>
void reduce_kernel(Reduce kind, const Tensor& x, const std::vector<bool>& mask, Tensor& y) {
  using A = RedAcc<T>;
  const int rank = x.rank();
  std::vector<int64_t> keep(rank);
  for (int i = 0; i < rank; ++i) keep[i] = mask[i] ? 1 : x.dim(i);
  auto ost = broadcast_strides(keep, x.shape());
  const int64_t nout = product(keep), total = x.numel();
  const int64_t count = nout > 0 ? total / nout : 0;
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  A init = A(0);
  if (kind == Reduce::kMax) init = std::numeric_limits<A>::lowest();
  if (kind == Reduce::kMin) init = std::numeric_limits<A>::max();
  if (kind == Reduce::kProd) init = A(1);
  if constexpr (std::is_floating_point_v<A>) {
    if (kind == Reduce::kMax || kind == Reduce::kLogSumExp) init = -std::numeric_limits<A>::infinity();
    if (kind == Reduce::kMin) init = std::numeric_limits<A>::infinity();
  }
  std::vector<A> acc(nout, init);
  std::vector<A> peak;  // per-output maximum, for a stable LogSumExp
  auto visit = [&](auto&& f) {
    std::vector<int64_t> idx(rank, 0);
    int64_t o = 0;
    for (int64_t i = 0; i < total; ++i) {
      f(i, o);
      for (int d = rank - 1; d >= 0; --d) {
        o += ost[d];
        if (++idx[d] < x.dim(d)) break;
        o -= ost[d] * idx[d];
        idx[d] = 0;
      }
    }
  };
  if (kind == Reduce::kLogSumExp) {
    visit([&](int64_t i, int64_t o) { A v = to_acc(xp[i]); if (v > acc[o]) acc[o] = v; });
    peak = acc;
    for (auto& a : peak)
      if constexpr (std::is_floating_point_v<A>) { if (!std::isfinite(a)) a = 0; }
    std::fill(acc.begin(), acc.end(), A(0));
    visit([&](int64_t i, int64_t o) {
      acc[o] += static_cast<A>(std::exp(static_cast<double>(to_acc(xp[i]) - peak[o])));
    });
  } else {
    visit([&](int64_t i, int64_t o) {
      A v = to_acc(xp[i]);
      switch (kind) {
        case Reduce::kMax:
          if (v > acc[o]) acc[o] = v;
          if constexpr (std::is_floating_point_v<A>) if (std::isnan(v)) acc[o] = v;
          break;
        case Reduce::kMin:
          if (v < acc[o]) acc[o] = v;
          if constexpr (std::is_floating_point_v<A>) if (std::isnan(v)) acc[o] = v;
          break;
        case Reduce::kProd: acc[o] *= v; break;
        case Reduce::kL1: acc[o] += v < A(0) ? A(0) - v : v; break;
        case Reduce::kL2:
        case Reduce::kSumSquare: acc[o] += v * v; break;
        default: acc[o] += v; break;
      }
    });
  }
  for (int64_t o = 0; o < nout; ++o) {
    A r = acc[o];
    switch (kind) {
      case Reduce::kMean: r = count > 0 ? static_cast<A>(r / static_cast<A>(count)) : A(0); break;
      case Reduce::kL2: r = static_cast<A>(std::sqrt(static_cast<double>(r))); break;
      case Reduce::kLogSum: r = static_cast<A>(std::log(static_cast<double>(r))); break;
      case Reduce::kLogSumExp: r = static_cast<A>(std::log(static_cast<double>(r)) + static_cast<double>(peak[o])); break;
      default: break;
    }
    yp[o] = static_cast<T>(r);
  }
}

OpSchema make_reduce(const std::string& name, Reduce kind) {
  OpSchema s;
  s.name = name;
  s.min_inputs = 1;
  s.max_inputs = 2;
  s.attrs = {{"axes", AttrType::kINTS}, {"keepdims", AttrType::kINT}, {"noop_with_empty_axes", AttrType::kINT}};
  s.dtypes = {DataType::kFLOAT, DataType::kHALF,  DataType::kBF16,   DataType::kDOUBLE, DataType::kINT32,
              DataType::kINT64, DataType::kUINT32, DataType::kUINT64, DataType::kINT8,  DataType::kUINT8};
  s.infer = [name, kind](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t keepdims, ctx.attrs().get_int("keepdims", 1));
    KILN_ASSIGN_OR_RETURN(int64_t noop, ctx.attrs().get_int("noop_with_empty_axes", 0));
    bool has_in = ctx.has_input(1);
    std::optional<std::vector<int64_t>> vals;
    if (has_in) vals = known_static_values(ctx.input(1));
    KILN_ASSIGN_OR_RETURN(AxesSpec ax, axes_from_attrs_or_input(name, kind, ctx.attrs(), ctx.opset(), has_in, vals));
    TensorInfo& out = ctx.output(0);
    out.dtype = x.dtype;
    if (!x.rank_known || !ax.known) {
      if (x.rank_known && keepdims) {
        out.shape.clear();
        for (size_t i = 0; i < x.shape.size(); ++i) out.shape.push_back(ctx.fresh_dim());
      } else {
        out.rank_known = false;
      }
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(auto mask, reduce_mask(name, ax.axes, x.shape.size(), noop != 0));
    for (size_t i = 0; i < x.shape.size(); ++i) {
      if (!mask[i]) out.shape.push_back(x.shape[i]);
      else if (keepdims) out.shape.push_back(Dim(1));
    }
    return Status::Ok();
  };
  s.compute = [name, kind](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t keepdims, ctx.attrs().get_int("keepdims", 1));
    KILN_ASSIGN_OR_RETURN(int64_t noop, ctx.attrs().get_int("noop_with_empty_axes", 0));
    bool has_in = ctx.has_input(1);
    std::optional<std::vector<int64_t>> vals;
    if (has_in) {
      KILN_ASSIGN_OR_RETURN(auto v, tensor_to_ints(ctx.input(1)));
      vals = v;
    }
    KILN_ASSIGN_OR_RETURN(AxesSpec ax, axes_from_attrs_or_input(name, kind, ctx.attrs(), ctx.opset(), has_in, vals));
    KILN_ASSIGN_OR_RETURN(auto mask, reduce_mask(name, ax.axes, x.rank(), noop != 0));
    std::vector<int64_t> keep_shape, out_shape;
    for (int i = 0; i < x.rank(); ++i) {
      keep_shape.push_back(mask[i] ? 1 : x.dim(i));
      if (!mask[i]) out_shape.push_back(x.dim(i));
      else if (keepdims) out_shape.push_back(1);
    }
    if (ax.axes.empty() && noop) {
      ctx.set_output(0, x);
      return Status::Ok();
    }
    if (x.dtype() == DataType::kBOOL && (kind == Reduce::kMax || kind == Reduce::kMin)) {
      // Opset 20 adds bool to ReduceMax/Min (any/all). Going through uint8 keeps one kernel and gives the
      // empty-set identities for free: max starts at 0 (false), min at 255 (true).
      Tensor y8(DataType::kUINT8, out_shape);
      reduce_kernel<uint8_t>(kind, x.cast(DataType::kUINT8), mask, y8);
      ctx.set_output(0, y8.cast(DataType::kBOOL));
      return Status::Ok();
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), out_shape);
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), name, reduce_kernel<scalar_t>(kind, x, mask, y));
    return Status::Ok();
  };
  return s;
}

template <typename T>
void arg_kernel(bool is_max, bool last, const T* x, int64_t outer, int64_t len, int64_t inner, int64_t* y) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const T* p = x + o * len * inner + i;
      int64_t best = 0;
      auto bv = to_acc(p[0]);
      for (int64_t k = 1; k < len; ++k) {
        auto v = to_acc(p[k * inner]);
        bool better = is_max ? (last ? v >= bv : v > bv) : (last ? v <= bv : v < bv);
        if (better) { best = k; bv = v; }
      }
      y[o * inner + i] = best;
    }
}

OpSchema make_arg(const std::string& name, bool is_max) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"axis", AttrType::kINT}, {"keepdims", AttrType::kINT}, {"select_last_index", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [name](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(int64_t keepdims, ctx.attrs().get_int("keepdims", 1));
    TensorInfo& out = ctx.output(0);
    out.dtype = DataType::kINT64;
    if (!x.rank_known) { out.rank_known = false; return Status::Ok(); }
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, x.shape.size(), name + ": axis"));
    for (size_t i = 0; i < x.shape.size(); ++i) {
      if (static_cast<int64_t>(i) != axis) out.shape.push_back(x.shape[i]);
      else if (keepdims) out.shape.push_back(Dim(1));
    }
    return Status::Ok();
  };
  s.compute = [name, is_max](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(int64_t keepdims, ctx.attrs().get_int("keepdims", 1));
    KILN_ASSIGN_OR_RETURN(int64_t last, ctx.attrs().get_int("select_last_index", 0));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, x.rank(), name + ": axis"));
    if (x.dim(axis) == 0) return invalid_argument(name + ": cannot reduce over axis " + std::to_string(axis) + " of size 0");
    std::vector<int64_t> out;
    for (int i = 0; i < x.rank(); ++i) {
      if (i != axis) out.push_back(x.dim(i));
      else if (keepdims) out.push_back(1);
    }
    Tensor& y = ctx.allocate_output(0, DataType::kINT64, out);
    const int64_t outer = product(x.shape(), 0, axis), len = x.dim(axis), inner = product(x.shape(), axis + 1);
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), name,
                                arg_kernel<scalar_t>(is_max, last != 0, x.data<scalar_t>(), outer, len, inner, y.data<int64_t>()));
    return Status::Ok();
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(ReduceSum) { return make_reduce("ReduceSum", Reduce::kSum); }
KILN_REGISTER_OP(ReduceMean) { return make_reduce("ReduceMean", Reduce::kMean); }
KILN_REGISTER_OP(ReduceMax) { return make_reduce("ReduceMax", Reduce::kMax); }
KILN_REGISTER_OP(ReduceMin) { return make_reduce("ReduceMin", Reduce::kMin); }
KILN_REGISTER_OP(ReduceProd) { return make_reduce("ReduceProd", Reduce::kProd); }
KILN_REGISTER_OP(ReduceL1) { return make_reduce("ReduceL1", Reduce::kL1); }
KILN_REGISTER_OP(ReduceL2) { return make_reduce("ReduceL2", Reduce::kL2); }
KILN_REGISTER_OP(ReduceLogSum) { return make_reduce("ReduceLogSum", Reduce::kLogSum); }
KILN_REGISTER_OP(ReduceLogSumExp) { return make_reduce("ReduceLogSumExp", Reduce::kLogSumExp); }
KILN_REGISTER_OP(ReduceSumSquare) { return make_reduce("ReduceSumSquare", Reduce::kSumSquare); }
KILN_REGISTER_OP(ArgMax) { return make_arg("ArgMax", true); }
KILN_REGISTER_OP(ArgMin) { return make_arg("ArgMin", false); }

}  // namespace kiln::ops
