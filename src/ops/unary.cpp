// Unary elementwise operators: math functions, predicates (IsNaN, IsInf), activations and Clip.
#include <cmath>
#include <limits>

#include "ops/broadcast_loop.h"

namespace kiln::ops {
namespace {

// Attribute values an activation reads, resolved once per call.
struct Params {
  double alpha = 0, beta = 0, gamma = 0;
  int mode = 0;  // Gelu: 0 exact (erf), 1 tanh approximation
};
using PrepareFn = std::function<Status(const Attributes&, Params&)>;

// Which element types an op computes: floats only, or floats and every integer type.
enum class Types { kFloat, kNumeric };

template <typename T, typename F>
void map_kernel(const Tensor& in, Tensor& out, const Params& p, F f) {
  using C = compute_t<T>;
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  const int64_t n = in.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(f(static_cast<C>(src[i]), p));
}

// Reads the float attributes alpha/beta/gamma (those absent take the given defaults).
PrepareFn float_params(double alpha, double beta = 0, double gamma = 0) {
  return [alpha, beta, gamma](const Attributes& attrs, Params& p) {
    KILN_ASSIGN_OR_RETURN(float a, attrs.get_float("alpha", static_cast<float>(alpha)));
    KILN_ASSIGN_OR_RETURN(float b, attrs.get_float("beta", static_cast<float>(beta)));
    KILN_ASSIGN_OR_RETURN(float g, attrs.get_float("gamma", static_cast<float>(gamma)));
    // Defaults stay in full precision (Selu's constants are specified to more digits than float holds).
    p.alpha = attrs.has("alpha") ? a : alpha;
    p.beta = attrs.has("beta") ? b : beta;
    p.gamma = attrs.has("gamma") ? g : gamma;
    return Status::Ok();
  };
}

Status check_float_input(const InferContext& ctx, const std::string& name, Types types) {
  DataType dt = ctx.input(0).dtype;
  bool ok = dtype_is_float(dt) || (types == Types::kNumeric && dtype_is_integer(dt));
  if (!ok)
    return invalid_model(name + ": input must be " +
                         (types == Types::kFloat ? "a floating-point type" : "a numeric type") + " but is " +
                         dtype_name(dt));
  return Status::Ok();
}

// Schema for a same-shape, same-type unary op whose element function is f(x, params). Integer inputs are
// dispatched only when `types` allows them; f must then be valid for integer x as well.
template <Types kTypes, typename F>
OpSchema make_unary(const std::string& name, std::vector<AttrSpec> attrs, PrepareFn prepare, F f) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = std::move(attrs);
  s.dtypes = kTypes == Types::kFloat ? float_types() : numeric_types();
  s.infer = [name, prepare](InferContext& ctx) {
    Params p;
    if (prepare) KILN_RETURN_IF_ERROR(prepare(ctx.attrs(), p).with_context(name));
    KILN_RETURN_IF_ERROR(check_float_input(ctx, name, kTypes));
    return infer_same_as_input0(ctx);
  };
  s.compute = [name, prepare, f](ComputeContext& ctx) {
    Params p;
    if (prepare) KILN_RETURN_IF_ERROR(prepare(ctx.attrs(), p).with_context(name));
    const Tensor& in = ctx.input(0);
    Tensor& out = ctx.allocate_output(0, in.dtype(), in.shape());
    if constexpr (kTypes == Types::kFloat) {
      KILN_DISPATCH_FLOAT_TYPES(in.dtype(), name, map_kernel<scalar_t>(in, out, p, f));
    } else {
      KILN_DISPATCH_NUMERIC_TYPES(in.dtype(), name, map_kernel<scalar_t>(in, out, p, f));
    }
    return Status::Ok();
  };
  return s;
}

// Float-only op without attributes, from a one-argument element function.
template <typename F>
OpSchema make_math(const std::string& name, F f) {
  return make_unary<Types::kFloat>(name, {}, nullptr, [f](auto x, const Params&) { return f(x); });
}

// Propagates known integer values through a unary op (Neg/Abs over shape arithmetic).
template <typename F>
OpSchema with_value_propagation(OpSchema s, F f) {
  InferFn base = s.infer;
  s.infer = [base, f](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(base(ctx));
    if (dtype_is_integer(ctx.input(0).dtype)) {
      if (auto v = known_static_values(ctx.input(0))) {
        std::vector<Dim> r;
        for (int64_t x : *v) r.push_back(Dim(f(x)));
        ctx.output(0).value = std::move(r);
      }
    }
    return Status::Ok();
  };
  return s;
}

OpSchema since(int opset, OpSchema s) {
  s.since_opset = opset;
  return s;
}

template <typename C>
C sigmoid(C x) {
  // Split by sign so exp never overflows.
  if (x >= 0) return C(1) / (C(1) + std::exp(-x));
  C e = std::exp(x);
  return e / (C(1) + e);
}

template <typename C>
C softplus(C x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

template <typename T>
OpSchema make_predicate(const std::string& name, std::vector<AttrSpec> attrs, T pred) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = std::move(attrs);
  s.dtypes = float_types();
  s.infer = [name](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(check_float_input(ctx, name, Types::kFloat));
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).dtype = DataType::kBOOL;
    return Status::Ok();
  };
  s.compute = [name, pred](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(int64_t neg, ctx.attrs().get_int("detect_negative", 1));
    KILN_ASSIGN_OR_RETURN(int64_t pos, ctx.attrs().get_int("detect_positive", 1));
    const Tensor& in = ctx.input(0);
    Tensor& out = ctx.allocate_output(0, DataType::kBOOL, in.shape());
    bool* dst = out.data<bool>();
    KILN_DISPATCH_FLOAT_TYPES(in.dtype(), name, {
      const scalar_t* src = in.data<scalar_t>();
      for (int64_t i = 0; i < in.numel(); ++i)
        dst[i] = pred(static_cast<double>(static_cast<compute_t<scalar_t>>(src[i])), neg != 0, pos != 0);
    });
    return Status::Ok();
  };
  return s;
}

template <typename T>
Status clip_kernel(ComputeContext& ctx, double attr_lo, double attr_hi) {
  using C = compute_t<T>;
  C lo = std::numeric_limits<C>::lowest(), hi = std::numeric_limits<C>::max();
  if constexpr (std::is_floating_point_v<C>) {
    lo = -std::numeric_limits<C>::infinity();
    hi = std::numeric_limits<C>::infinity();
  }
  if (ctx.opset() < 11) {
    if (ctx.attrs().has("min")) lo = static_cast<C>(attr_lo);
    if (ctx.attrs().has("max")) hi = static_cast<C>(attr_hi);
  } else {
    for (int k = 1; k <= 2; ++k) {
      if (!ctx.has_input(k)) continue;
      const Tensor& b = ctx.input(k);
      if (b.numel() == 0) continue;  // an empty tensor stands for "not given" in some exporters
      if (b.numel() != 1 || b.dtype() != ctx.input(0).dtype())
        return invalid_argument(std::string("Clip: ") + (k == 1 ? "min" : "max") + " must be a scalar of type " +
                                dtype_name(ctx.input(0).dtype()) + ", got " + dtype_name(b.dtype()) + " of shape [" +
                                dims_to_string(b.shape()) + "]");
      (k == 1 ? lo : hi) = static_cast<C>(b.data<T>()[0]);
    }
  }
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.allocate_output(0, in.dtype(), in.shape());
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  // min > max yields max everywhere, as ONNX specifies; NaN passes through both comparisons.
  for (int64_t i = 0; i < in.numel(); ++i) {
    C v = static_cast<C>(src[i]);
    v = v < lo ? lo : v;
    v = hi < v ? hi : v;
    dst[i] = static_cast<T>(v);
  }
  return Status::Ok();
}

constexpr double kSeluAlpha = 1.67326319217681884765625;
constexpr double kSeluGamma = 1.05070102214813232421875;

}  // namespace

// ---- math ----

KILN_REGISTER_OP(Abs) {
  return with_value_propagation(
      make_unary<Types::kNumeric>("Abs", {}, nullptr,
                                  [](auto x, const Params&) {
                                    using C = decltype(x);
                                    if constexpr (std::is_unsigned_v<C>) return x;
                                    else return static_cast<C>(x < 0 ? -x : x);
                                  }),
      [](int64_t x) { return x < 0 ? -x : x; });
}
KILN_REGISTER_OP(Neg) {
  return with_value_propagation(
      make_unary<Types::kNumeric>("Neg", {}, nullptr,
                                  [](auto x, const Params&) {
                                    using C = decltype(x);
                                    // Wraps for unsigned and INT_MIN instead of overflowing.
                                    if constexpr (std::is_integral_v<C>) return static_cast<C>(0ull - static_cast<uint64_t>(x));
                                    else return -x;
                                  }),
      [](int64_t x) { return static_cast<int64_t>(0ull - static_cast<uint64_t>(x)); });
}
KILN_REGISTER_OP(Sign) {
  return since(9, make_unary<Types::kNumeric>("Sign", {}, nullptr, [](auto x, const Params&) {
    using C = decltype(x);
    if constexpr (std::is_floating_point_v<C>) {
      if (std::isnan(x)) return x;
    }
    return static_cast<C>(x > C(0) ? 1 : (x < C(0) ? -1 : 0));
  }));
}
KILN_REGISTER_OP(Exp) { return make_math("Exp", [](auto x) { return std::exp(x); }); }
KILN_REGISTER_OP(Log) { return make_math("Log", [](auto x) { return std::log(x); }); }
KILN_REGISTER_OP(Sqrt) { return make_math("Sqrt", [](auto x) { return std::sqrt(x); }); }
KILN_REGISTER_OP(Reciprocal) { return make_math("Reciprocal", [](auto x) { return decltype(x)(1) / x; }); }
KILN_REGISTER_OP(Floor) { return make_math("Floor", [](auto x) { return std::floor(x); }); }
KILN_REGISTER_OP(Ceil) { return make_math("Ceil", [](auto x) { return std::ceil(x); }); }
// Halves round to even: nearbyint uses the default (to-nearest-even) rounding mode.
KILN_REGISTER_OP(Round) { return since(11, make_math("Round", [](auto x) { return std::nearbyint(x); })); }
KILN_REGISTER_OP(Erf) { return since(9, make_math("Erf", [](auto x) { return std::erf(x); })); }
KILN_REGISTER_OP(Sin) { return make_math("Sin", [](auto x) { return std::sin(x); }); }
KILN_REGISTER_OP(Cos) { return make_math("Cos", [](auto x) { return std::cos(x); }); }
KILN_REGISTER_OP(Tan) { return make_math("Tan", [](auto x) { return std::tan(x); }); }
KILN_REGISTER_OP(Asin) { return make_math("Asin", [](auto x) { return std::asin(x); }); }
KILN_REGISTER_OP(Acos) { return make_math("Acos", [](auto x) { return std::acos(x); }); }
KILN_REGISTER_OP(Atan) { return make_math("Atan", [](auto x) { return std::atan(x); }); }
KILN_REGISTER_OP(Sinh) { return since(9, make_math("Sinh", [](auto x) { return std::sinh(x); })); }
KILN_REGISTER_OP(Cosh) { return since(9, make_math("Cosh", [](auto x) { return std::cosh(x); })); }
KILN_REGISTER_OP(Asinh) { return since(9, make_math("Asinh", [](auto x) { return std::asinh(x); })); }
KILN_REGISTER_OP(Acosh) { return since(9, make_math("Acosh", [](auto x) { return std::acosh(x); })); }
KILN_REGISTER_OP(Atanh) { return since(9, make_math("Atanh", [](auto x) { return std::atanh(x); })); }
KILN_REGISTER_OP(Tanh) { return make_math("Tanh", [](auto x) { return std::tanh(x); }); }
KILN_REGISTER_OP(Sigmoid) { return make_math("Sigmoid", [](auto x) { return sigmoid(x); }); }
KILN_REGISTER_OP(Softplus) { return make_math("Softplus", [](auto x) { return softplus(x); }); }
KILN_REGISTER_OP(Softsign) {
  return make_math("Softsign", [](auto x) { return x / (decltype(x)(1) + std::fabs(x)); });
}
KILN_REGISTER_OP(Mish) { return since(18, make_math("Mish", [](auto x) { return x * std::tanh(softplus(x)); })); }
KILN_REGISTER_OP(HardSwish) {
  return since(14, make_math("HardSwish", [](auto x) {
    using C = decltype(x);
    C t = x / C(6) + C(0.5);
    return x * std::max(C(0), std::min(C(1), t));
  }));
}

KILN_REGISTER_OP(IsNaN) {
  return since(9, make_predicate("IsNaN", {}, [](double x, bool, bool) { return std::isnan(x); }));
}
KILN_REGISTER_OP(IsInf) {
  return since(10, make_predicate("IsInf", {{"detect_negative", AttrType::kINT}, {"detect_positive", AttrType::kINT}},
                        [](double x, bool neg, bool pos) { return std::isinf(x) && (x < 0 ? neg : pos); }));
}

// ---- activations ----

KILN_REGISTER_OP(Relu) {
  return make_unary<Types::kNumeric>("Relu", {}, nullptr, [](auto x, const Params&) {
    using C = decltype(x);
    return x < C(0) ? C(0) : x;
  });
}
KILN_REGISTER_OP(LeakyRelu) {
  return make_unary<Types::kFloat>("LeakyRelu", {{"alpha", AttrType::kFLOAT}}, float_params(0.01),
                                   [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     return x < C(0) ? static_cast<C>(p.alpha) * x : x;
                                   });
}
KILN_REGISTER_OP(Elu) {
  return make_unary<Types::kFloat>("Elu", {{"alpha", AttrType::kFLOAT}}, float_params(1.0),
                                   [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     return x < C(0) ? static_cast<C>(p.alpha) * std::expm1(x) : x;
                                   });
}
KILN_REGISTER_OP(Selu) {
  return make_unary<Types::kFloat>("Selu", {{"alpha", AttrType::kFLOAT}, {"gamma", AttrType::kFLOAT}},
                                   float_params(kSeluAlpha, 0, kSeluGamma), [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     C g = static_cast<C>(p.gamma);
                                     return x > C(0) ? g * x : g * static_cast<C>(p.alpha) * std::expm1(x);
                                   });
}
KILN_REGISTER_OP(Celu) {
  return since(12, make_unary<Types::kFloat>("Celu", {{"alpha", AttrType::kFLOAT}}, float_params(1.0),
                                   [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     C a = static_cast<C>(p.alpha);
                                     return std::max(C(0), x) + std::min(C(0), a * std::expm1(x / a));
                                   }));
}
KILN_REGISTER_OP(HardSigmoid) {
  return make_unary<Types::kFloat>("HardSigmoid", {{"alpha", AttrType::kFLOAT}, {"beta", AttrType::kFLOAT}},
                                   float_params(0.2, 0.5), [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     C t = static_cast<C>(p.alpha) * x + static_cast<C>(p.beta);
                                     return std::max(C(0), std::min(C(1), t));
                                   });
}
KILN_REGISTER_OP(ThresholdedRelu) {
  return since(10, make_unary<Types::kFloat>("ThresholdedRelu", {{"alpha", AttrType::kFLOAT}}, float_params(1.0),
                                   [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     return x > static_cast<C>(p.alpha) ? x : C(0);
                                   }));
}
KILN_REGISTER_OP(Gelu) {
  PrepareFn prepare = [](const Attributes& attrs, Params& p) {
    KILN_ASSIGN_OR_RETURN(std::string mode, attrs.get_string("approximate", "none"));
    if (mode == "none") p.mode = 0;
    else if (mode == "tanh") p.mode = 1;
    else return invalid_model("attribute 'approximate' must be one of none, tanh but is '" + mode + "'");
    return Status::Ok();
  };
  return since(20, make_unary<Types::kFloat>("Gelu", {{"approximate", AttrType::kSTRING}}, prepare,
                                   [](auto x, const Params& p) {
                                     using C = decltype(x);
                                     if (p.mode == 0) return C(0.5) * x * (C(1) + std::erf(x / std::sqrt(C(2))));
                                     const C k = std::sqrt(C(2) / C(3.14159265358979323846));
                                     return C(0.5) * x * (C(1) + std::tanh(k * (x + C(0.044715) * x * x * x)));
                                   }));
}

KILN_REGISTER_OP(Clip) {
  OpSchema s;
  s.name = "Clip";
  s.min_inputs = 1;
  s.max_inputs = 3;  // input, min (opset 11+), max (opset 11+)
  s.attrs = {{"min", AttrType::kFLOAT}, {"max", AttrType::kFLOAT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    if (ctx.opset() >= 11 && (ctx.attrs().has("min") || ctx.attrs().has("max")))
      return invalid_model("Clip: from opset 11 min and max are inputs, not attributes (found an attribute at opset " +
                           std::to_string(ctx.opset()) + ")");
    for (int k = 1; k <= 2; ++k) {
      if (ctx.has_input(k) && ctx.input(k).dtype != ctx.input(0).dtype)
        return invalid_model(std::string("Clip: ") + (k == 1 ? "min" : "max") + " must have the input's type " +
                             dtype_name(ctx.input(0).dtype) + " but is " + dtype_name(ctx.input(k).dtype));
    }
    KILN_RETURN_IF_ERROR(check_float_input(ctx, "Clip", Types::kNumeric));
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(float lo, ctx.attrs().get_float("min", 0.f));
    KILN_ASSIGN_OR_RETURN(float hi, ctx.attrs().get_float("max", 0.f));
    KILN_DISPATCH_NUMERIC_TYPES(ctx.input(0).dtype(), "Clip", return clip_kernel<scalar_t>(ctx, lo, hi));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
