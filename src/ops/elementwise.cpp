// Broadcasting binary and variadic elementwise operators: arithmetic, comparison, logic, BitShift, PRelu.
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/broadcast_loop.h"

namespace kiln::ops {
namespace {

// ---- scalar kernels (operate on compute_t<T>) ----

// Signed overflow is undefined in C++; ONNX integer arithmetic wraps like the hardware does.
template <typename T>
T wrap_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  else return a + b;
}
template <typename T>
T wrap_sub(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
  else return a - b;
}
template <typename T>
T wrap_mul(T a, T b) {
  if constexpr (std::is_integral_v<T>) return static_cast<T>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  else return a * b;
}
// Integer division truncates toward zero (C semantics, as ONNX specifies). Division by zero is undefined in
// ONNX; it yields 0 here rather than trapping the process.
template <typename T>
T safe_div(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) {
      if (b == -1) return wrap_sub<T>(0, a);  // avoids the INT_MIN / -1 trap
    }
    return static_cast<T>(a / b);
  } else {
    return a / b;
  }
}
template <typename T>
T nan_min(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  }
  return b < a ? b : a;
}
template <typename T>
T nan_max(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
  }
  return a < b ? b : a;
}

// fmod=1: remainder has the dividend's sign (C fmod / %); fmod=0: the divisor's sign (Python %).
template <typename T>
T mod_value(T a, T b, bool fmod) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) {
      if (b == -1) return 0;
    }
    T r = static_cast<T>(a % b);
    if constexpr (std::is_signed_v<T>) {
      if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
    }
    return r;
  } else {
    T r = std::fmod(a, b);
    if (!fmod && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
}

enum class Arith { kAdd, kSub, kMul, kDiv, kMin, kMax };

const char* arith_name(Arith op) {
  switch (op) {
    case Arith::kAdd: return "Add";
    case Arith::kSub: return "Sub";
    case Arith::kMul: return "Mul";
    case Arith::kDiv: return "Div";
    case Arith::kMin: return "Min";
    case Arith::kMax: return "Max";
  }
  return "?";
}

template <Arith kOp, typename T>
inline T apply_arith(T a, T b) {
  if constexpr (kOp == Arith::kAdd) return wrap_add(a, b);
  else if constexpr (kOp == Arith::kSub) return wrap_sub(a, b);
  else if constexpr (kOp == Arith::kMul) return wrap_mul(a, b);
  else if constexpr (kOp == Arith::kDiv) return safe_div(a, b);
  else if constexpr (kOp == Arith::kMin) return nan_min(a, b);
  else return nan_max(a, b);
}

// out[o] = f(a[ia], b[ib]) over the broadcast of a and b; T is the storage type of a and b, R of out.
template <typename T, typename R, typename F>
void binary_kernel(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  using C = compute_t<T>;
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  R* po = out.data<R>();
  for_each_broadcast<2>(out.shape(), {&a.shape(), &b.shape()}, [&](int64_t o, const std::array<int64_t, 2>& i) {
    po[o] = static_cast<R>(f(static_cast<C>(pa[i[0]]), static_cast<C>(pb[i[1]])));
  });
}

// Value propagation for integer shape arithmetic: exact where both entries are static, algebraic identities
// (x+0, x*1, ...) where one is symbolic, and a fresh unknown otherwise.
std::optional<Dim> arith_dim(InferContext& ctx, Arith op, const Dim& x, const Dim& y) {
  if (x.is_static() && y.is_static()) {
    int64_t a = x.value, b = y.value;
    switch (op) {
      case Arith::kAdd: return Dim(wrap_add(a, b));
      case Arith::kSub: return Dim(wrap_sub(a, b));
      case Arith::kMul: return Dim(wrap_mul(a, b));
      case Arith::kDiv: if (b == 0) return std::nullopt; return Dim(safe_div(a, b));
      case Arith::kMin: return Dim(std::min(a, b));
      case Arith::kMax: return Dim(std::max(a, b));
    }
  }
  auto is = [](const Dim& d, int64_t v) { return d.is_static() && d.value == v; };
  switch (op) {
    case Arith::kAdd: if (is(y, 0)) return x; if (is(x, 0)) return y; break;
    case Arith::kSub:
      if (is(y, 0)) return x;
      if (x == y) return Dim(0);  // same symbol on both sides
      break;
    case Arith::kMul:
      if (is(y, 1)) return x;
      if (is(x, 1)) return y;
      if (is(x, 0) || is(y, 0)) return Dim(0);
      break;
    case Arith::kDiv: if (is(y, 1)) return x; break;
    case Arith::kMin:
    case Arith::kMax: if (x == y) return x; break;
  }
  return ctx.fresh_dim();
}

// Combines the known values of inputs 0 and 1 (rank <= 1, length-1 broadcasting) entry by entry.
template <typename F>
void propagate_values(InferContext& ctx, F combine) {
  TensorInfo& out = ctx.output(0);
  if (!out.rank_known || out.shape.size() > 1) return;
  auto va = known_values(ctx.input(0));
  auto vb = known_values(ctx.input(1));
  if (!va || !vb || va->empty() || vb->empty()) return;
  size_t n = std::max(va->size(), vb->size());
  if ((va->size() != n && va->size() != 1) || (vb->size() != n && vb->size() != 1)) return;
  if (out.shape.empty() ? n != 1 : (out.shape[0].is_static() && out.shape[0].value != static_cast<int64_t>(n))) return;
  std::vector<Dim> r;
  for (size_t i = 0; i < n; ++i) {
    std::optional<Dim> d = combine((*va)[va->size() == 1 ? 0 : i], (*vb)[vb->size() == 1 ? 0 : i]);
    if (!d) return;
    r.push_back(*d);
  }
  out.value = std::move(r);
}

Status infer_binary_same_type(InferContext& ctx, const std::string& op, DataType out_dtype) {
  KILN_RETURN_IF_ERROR(check_same_dtype(ctx, op, {0, 1}));
  return infer_broadcast(ctx, {0, 1}, out_dtype);
}

template <Arith kOp>
Status compute_arith(ComputeContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({a.shape(), b.shape()}));
  Tensor& out = ctx.allocate_output(0, a.dtype(), dims);
  KILN_DISPATCH_NUMERIC_TYPES(a.dtype(), arith_name(kOp),
                              binary_kernel<scalar_t, scalar_t>(a, b, out, [](auto x, auto y) {
                                return apply_arith<kOp>(x, y);
                              }));
  return Status::Ok();
}

template <Arith kOp>
OpSchema make_arith() {
  OpSchema s;
  s.name = arith_name(kOp);
  s.min_inputs = s.max_inputs = 2;
  // Opset < 7 spelled broadcasting with attributes; they are accepted and numpy broadcasting applies.
  s.attrs = {{"broadcast", AttrType::kINT}, {"axis", AttrType::kINT}, {"consumed_inputs", AttrType::kINTS}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(infer_binary_same_type(ctx, arith_name(kOp), ctx.input(0).dtype));
    if (dtype_is_integer(ctx.input(0).dtype))
      propagate_values(ctx, [&](const Dim& x, const Dim& y) { return arith_dim(ctx, kOp, x, y); });
    return Status::Ok();
  };
  s.compute = compute_arith<kOp>;
  return s;
}

// ---- variadic Sum / Mean / Min / Max ----

enum class Variadic { kSum, kMean, kMin, kMax };

template <typename T>
Status compute_variadic(ComputeContext& ctx, Variadic op, const std::vector<int64_t>& dims) {
  using C = compute_t<T>;
  Tensor& out = ctx.allocate_output(0, DTypeOf<T>::value, dims);
  const int64_t n = out.numel();
  // Accumulating in compute precision keeps half-precision sums from rounding at every step.
  std::vector<C> acc(static_cast<size_t>(n));
  {
    const T* p = ctx.input(0).data<T>();
    for_each_broadcast<1>(dims, {&ctx.input(0).shape()},
                          [&](int64_t o, const std::array<int64_t, 1>& i) { acc[o] = static_cast<C>(p[i[0]]); });
  }
  for (int k = 1; k < ctx.num_inputs(); ++k) {
    const Tensor& in = ctx.input(k);
    const T* p = in.data<T>();
    auto run = [&](auto f) {
      for_each_broadcast<2>(dims, {&dims, &in.shape()}, [&](int64_t o, const std::array<int64_t, 2>& i) {
        acc[o] = f(acc[o], static_cast<C>(p[i[1]]));
      });
    };
    switch (op) {
      case Variadic::kSum:
      case Variadic::kMean: run([](C x, C y) { return wrap_add(x, y); }); break;
      case Variadic::kMin: run([](C x, C y) { return nan_min(x, y); }); break;
      case Variadic::kMax: run([](C x, C y) { return nan_max(x, y); }); break;
    }
  }
  T* po = out.data<T>();
  if (op == Variadic::kMean) {
    for (int64_t i = 0; i < n; ++i) po[i] = static_cast<T>(acc[i] / static_cast<C>(ctx.num_inputs()));
  } else {
    for (int64_t i = 0; i < n; ++i) po[i] = static_cast<T>(acc[i]);
  }
  return Status::Ok();
}

OpSchema make_variadic(const std::string& name, Variadic op) {
  OpSchema s;
  s.name = name;
  s.min_inputs = 1;
  s.max_inputs = -1;
  s.attrs = {{"consumed_inputs", AttrType::kINTS}};
  s.dtypes = op == Variadic::kMean ? float_types() : numeric_types();
  s.infer = [name, op](InferContext& ctx) {
    std::vector<int> all;
    for (int i = 0; i < ctx.num_inputs(); ++i) all.push_back(i);
    KILN_RETURN_IF_ERROR(check_same_dtype(ctx, name, all));
    KILN_RETURN_IF_ERROR(infer_broadcast(ctx, all, ctx.input(0).dtype));
    if (ctx.num_inputs() == 1) {
      ctx.output(0).value = known_values(ctx.input(0));
    } else if (ctx.num_inputs() == 2 && dtype_is_integer(ctx.input(0).dtype) &&
               (op == Variadic::kMin || op == Variadic::kMax || op == Variadic::kSum)) {
      Arith a = op == Variadic::kMin ? Arith::kMin : op == Variadic::kMax ? Arith::kMax : Arith::kAdd;
      propagate_values(ctx, [&](const Dim& x, const Dim& y) { return arith_dim(ctx, a, x, y); });
    }
    return Status::Ok();
  };
  s.compute = [name, op](ComputeContext& ctx) {
    std::vector<std::vector<int64_t>> shapes;
    for (int i = 0; i < ctx.num_inputs(); ++i) shapes.push_back(ctx.input(i).shape());
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims(shapes));
    DataType dt = ctx.input(0).dtype();
    if (op == Variadic::kMean) {
      KILN_DISPATCH_FLOAT_TYPES(dt, name, return compute_variadic<scalar_t>(ctx, op, dims));
    } else {
      KILN_DISPATCH_NUMERIC_TYPES(dt, name, return compute_variadic<scalar_t>(ctx, op, dims));
    }
    return Status::Ok();
  };
  return s;
}

// ---- comparisons ----

enum class Compare { kEqual, kLess, kGreater, kLessOrEqual, kGreaterOrEqual };

template <Compare kOp, typename T>
inline bool apply_compare(T a, T b) {
  if constexpr (kOp == Compare::kEqual) return a == b;
  else if constexpr (kOp == Compare::kLess) return a < b;
  else if constexpr (kOp == Compare::kGreater) return a > b;
  else if constexpr (kOp == Compare::kLessOrEqual) return a <= b;
  else return a >= b;
}

template <Compare kOp>
OpSchema make_compare(const std::string& name) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"broadcast", AttrType::kINT}, {"axis", AttrType::kINT}};
  s.dtypes = kOp == Compare::kEqual ? all_types() : numeric_types();
  s.infer = [name](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(infer_binary_same_type(ctx, name, DataType::kBOOL));
    // Exported shape logic often tests shape entries (Where(Equal(shape, -1), ...)); keep those known.
    propagate_values(ctx, [](const Dim& x, const Dim& y) -> std::optional<Dim> {
      // Unnamed negative entries are literal integers (Reshape's -1), as concrete as static ones.
      auto concrete = [](const Dim& d) { return d.is_static() || d.sym.empty(); };
      if (concrete(x) && concrete(y)) return Dim(apply_compare<kOp>(x.value, y.value) ? 1 : 0);
      // A run-time size is never negative, so it never equals a negative literal.
      if (kOp == Compare::kEqual && ((concrete(x) && x.value < 0) || (concrete(y) && y.value < 0))) return Dim(0);
      if (x == y) {
        if (kOp == Compare::kEqual || kOp == Compare::kLessOrEqual || kOp == Compare::kGreaterOrEqual) return Dim(1);
        return Dim(0);
      }
      return std::nullopt;
    });
    return Status::Ok();
  };
  s.compute = [name](ComputeContext& ctx) {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({a.shape(), b.shape()}));
    Tensor& out = ctx.allocate_output(0, DataType::kBOOL, dims);
    KILN_DISPATCH_ALL_TYPES(a.dtype(), name,
                            binary_kernel<scalar_t, bool>(a, b, out, [](auto x, auto y) {
                              return apply_compare<kOp>(x, y);
                            }));
    return Status::Ok();
  };
  return s;
}

// ---- logic ----

template <typename F>
OpSchema make_logic(const std::string& name, F f) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"broadcast", AttrType::kINT}, {"axis", AttrType::kINT}};
  s.dtypes = {DataType::kBOOL};
  s.infer = [name](InferContext& ctx) {
    for (int i = 0; i < 2; ++i) {
      if (ctx.input(i).dtype != DataType::kBOOL)
        return invalid_model(name + ": input " + std::to_string(i) + " must be bool but is " +
                             dtype_name(ctx.input(i).dtype));
    }
    return infer_broadcast(ctx, {0, 1}, DataType::kBOOL);
  };
  s.compute = [name, f](ComputeContext& ctx) {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    if (a.dtype() != DataType::kBOOL || b.dtype() != DataType::kBOOL)
      return invalid_argument(name + ": inputs must be bool, got " + dtype_name(a.dtype()) + " and " +
                              dtype_name(b.dtype()));
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({a.shape(), b.shape()}));
    Tensor& out = ctx.allocate_output(0, DataType::kBOOL, dims);
    binary_kernel<bool, bool>(a, b, out, f);
    return Status::Ok();
  };
  return s;
}

// ---- Pow ----

// Exact integer power by squaring; negative exponents give 0 except for bases 1 and -1 (1/b^n truncates).
int64_t int_pow(int64_t base, int64_t e) {
  if (e < 0) {
    if (base == 1) return 1;
    if (base == -1) return (e % 2 == 0) ? 1 : -1;
    return 0;
  }
  uint64_t result = 1, b = static_cast<uint64_t>(base);
  while (e > 0) {
    if (e & 1) result *= b;
    b *= b;
    e >>= 1;
  }
  return static_cast<int64_t>(result);
}

template <typename T>
void pow_kernel(const Tensor& base, const Tensor& expo, Tensor& out) {
  using C = compute_t<T>;
  const T* pb = base.data<T>();
  T* po = out.data<T>();
  auto run = [&](const auto* pe, auto f) {
    for_each_broadcast<2>(out.shape(), {&base.shape(), &expo.shape()},
                          [&](int64_t o, const std::array<int64_t, 2>& i) {
                            po[o] = static_cast<T>(f(static_cast<C>(pb[i[0]]), pe[i[1]]));
                          });
  };
  if (dtype_is_integer(expo.dtype())) {
    const int64_t* pe = expo.data<int64_t>();
    if constexpr (std::is_integral_v<T>) {
      run(pe, [](C b, int64_t e) { return static_cast<C>(int_pow(static_cast<int64_t>(b), e)); });
    } else {
      run(pe, [](C b, int64_t e) { return static_cast<C>(std::pow(static_cast<double>(b), static_cast<double>(e))); });
    }
  } else {
    const double* pe = expo.data<double>();
    if constexpr (std::is_same_v<C, float>) {
      // float ** float stays in float precision so results match float reference implementations.
      run(pe, [](C b, double e) { return std::pow(b, static_cast<float>(e)); });
    } else {
      run(pe, [](C b, double e) { return static_cast<C>(std::pow(static_cast<double>(b), e)); });
    }
  }
}

// ---- BitShift ----

template <typename T>
void shift_kernel(const Tensor& a, const Tensor& b, Tensor& out, bool left) {
  using U = std::make_unsigned_t<T>;
  constexpr uint64_t kBits = sizeof(T) * 8;
  binary_kernel<T, T>(a, b, out, [left](T x, T y) -> T {
    bool negative_x = false;
    bool in_range = static_cast<uint64_t>(y) < kBits;
    if constexpr (std::is_signed_v<T>) {
      negative_x = x < 0;
      in_range = y >= 0 && in_range;
    }
    // Opset 28 defines negative and >= width counts as shifting every bit out, leaving the sign fill for right
    // shifts; C++ leaves them undefined, so they never reach the shift operators.
    if (!in_range) return (!left && negative_x) ? T(-1) : T(0);
    const unsigned s = static_cast<unsigned>(y);
    // Left shifts go through the unsigned type so overflow wraps (two's complement) instead of being undefined.
    if (left) return static_cast<T>(static_cast<U>(static_cast<U>(x) << s));
    return static_cast<T>(x >> s);  // arithmetic for signed values since C++20, as opset 28 asks
  });
}

}  // namespace

KILN_REGISTER_OP(Add) { return make_arith<Arith::kAdd>(); }
KILN_REGISTER_OP(Sub) { return make_arith<Arith::kSub>(); }
KILN_REGISTER_OP(Mul) { return make_arith<Arith::kMul>(); }
KILN_REGISTER_OP(Div) { return make_arith<Arith::kDiv>(); }

KILN_REGISTER_OP(Sum) { return make_variadic("Sum", Variadic::kSum); }
KILN_REGISTER_OP(Mean) { return make_variadic("Mean", Variadic::kMean); }
KILN_REGISTER_OP(Min) { return make_variadic("Min", Variadic::kMin); }
KILN_REGISTER_OP(Max) { return make_variadic("Max", Variadic::kMax); }

KILN_REGISTER_OP(Equal) { return make_compare<Compare::kEqual>("Equal"); }
KILN_REGISTER_OP(Less) { return make_compare<Compare::kLess>("Less"); }
KILN_REGISTER_OP(Greater) { return make_compare<Compare::kGreater>("Greater"); }
KILN_REGISTER_OP(LessOrEqual) {
  OpSchema s = make_compare<Compare::kLessOrEqual>("LessOrEqual");
  s.since_opset = 12;
  return s;
}
KILN_REGISTER_OP(GreaterOrEqual) {
  OpSchema s = make_compare<Compare::kGreaterOrEqual>("GreaterOrEqual");
  s.since_opset = 12;
  return s;
}

KILN_REGISTER_OP(And) { return make_logic("And", [](bool x, bool y) { return x && y; }); }
KILN_REGISTER_OP(Or) { return make_logic("Or", [](bool x, bool y) { return x || y; }); }
KILN_REGISTER_OP(Xor) { return make_logic("Xor", [](bool x, bool y) { return x != y; }); }

KILN_REGISTER_OP(Not) {
  OpSchema s;
  s.name = "Not";
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = {DataType::kBOOL};
  s.infer = [](InferContext& ctx) {
    if (ctx.input(0).dtype != DataType::kBOOL)
      return invalid_model(std::string("Not: input must be bool but is ") + dtype_name(ctx.input(0).dtype));
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    if (auto v = known_static_values(ctx.input(0))) {
      std::vector<Dim> r;
      for (int64_t x : *v) r.push_back(Dim(x == 0 ? 1 : 0));
      ctx.output(0).value = std::move(r);
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& a = ctx.input(0);
    if (a.dtype() != DataType::kBOOL)
      return invalid_argument(std::string("Not: input must be bool, got ") + dtype_name(a.dtype()));
    Tensor& out = ctx.allocate_output(0, DataType::kBOOL, a.shape());
    const bool* p = a.data<bool>();
    bool* q = out.data<bool>();
    for (int64_t i = 0; i < a.numel(); ++i) q[i] = !p[i];
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Mod) {
  OpSchema s;
  s.name = "Mod";
  s.since_opset = 10;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"fmod", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(int64_t fmod, ctx.attrs().get_int("fmod", 0));
    if (fmod != 0 && fmod != 1)
      return invalid_model("Mod: attribute 'fmod' must be 0 or 1 but is " + std::to_string(fmod));
    KILN_RETURN_IF_ERROR(infer_binary_same_type(ctx, "Mod", ctx.input(0).dtype));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(int64_t fmod_attr, ctx.attrs().get_int("fmod", 0));
    // ONNX requires fmod=1 for floating types; fmod=0 on floats still has a well-defined (Python) meaning,
    // which is what we compute rather than refusing.
    const bool fmod = fmod_attr != 0;
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({a.shape(), b.shape()}));
    Tensor& out = ctx.allocate_output(0, a.dtype(), dims);
    KILN_DISPATCH_NUMERIC_TYPES(a.dtype(), "Mod",
                                binary_kernel<scalar_t, scalar_t>(a, b, out, [fmod](auto x, auto y) {
                                  return mod_value(x, y, fmod);
                                }));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Pow) {
  OpSchema s;
  s.name = "Pow";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"broadcast", AttrType::kINT}, {"axis", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    // The base's type is the output's; from opset 12 the exponent may have any numeric type.
    if (ctx.opset() < 12) KILN_RETURN_IF_ERROR(check_same_dtype(ctx, "Pow", {0, 1}));
    if (ctx.input(1).dtype == DataType::kBOOL) return invalid_model("Pow: exponent must be numeric but is bool");
    return infer_broadcast(ctx, {0, 1}, ctx.input(0).dtype);
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& base = ctx.input(0);
    // One exponent representation per kind keeps the kernel count at one per base type.
    Tensor expo = ctx.input(1).cast(dtype_is_integer(ctx.input(1).dtype()) ? DataType::kINT64 : DataType::kDOUBLE);
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({base.shape(), expo.shape()}));
    Tensor& out = ctx.allocate_output(0, base.dtype(), dims);
    KILN_DISPATCH_NUMERIC_TYPES(base.dtype(), "Pow", pow_kernel<scalar_t>(base, expo, out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(BitShift) {
  OpSchema s;
  s.name = "BitShift";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"direction", AttrType::kSTRING, AttrRequirement::kRequired}};
  s.dtypes = {DataType::kINT8,  DataType::kINT16,  DataType::kINT32,  DataType::kINT64,
              DataType::kUINT8, DataType::kUINT16, DataType::kUINT32, DataType::kUINT64};
  s.infer = [](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(std::string dir, ctx.attrs().get_string("direction"));
    if (dir != "LEFT" && dir != "RIGHT")
      return invalid_model("BitShift: attribute 'direction' must be one of LEFT, RIGHT but is '" + dir + "'");
    if (!dtype_is_integer(ctx.input(0).dtype))
      return invalid_model(std::string("BitShift: inputs must be integers but are ") + dtype_name(ctx.input(0).dtype));
    return infer_binary_same_type(ctx, "BitShift", ctx.input(0).dtype);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(std::string dir, ctx.attrs().get_string("direction"));
    if (dir != "LEFT" && dir != "RIGHT")
      return invalid_argument("BitShift: attribute 'direction' must be one of LEFT, RIGHT but is '" + dir + "'");
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({a.shape(), b.shape()}));
    Tensor& out = ctx.allocate_output(0, a.dtype(), dims);
    switch (a.dtype()) {
      KILN_DISPATCH_INT_CASES(shift_kernel<scalar_t>(a, b, out, dir == "LEFT"))
      default:
        return unsupported(std::string("BitShift: data type ") + dtype_name(a.dtype()) + " is not supported");
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(PRelu) {
  OpSchema s;
  s.name = "PRelu";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"consumed_inputs", AttrType::kINTS}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(check_same_dtype(ctx, "PRelu", {0, 1}));
    KILN_RETURN_IF_ERROR(infer_broadcast(ctx, {0, 1}, ctx.input(0).dtype));
    // slope broadcasts to X (unidirectionally): the output keeps X's shape, symbols included.
    if (ctx.input(0).rank_known && ctx.output(0).rank_known) {
      if (ctx.output(0).shape.size() != ctx.input(0).shape.size())
        return invalid_model("PRelu: slope " + shape_to_string(ctx.input(1).shape) +
                             " must broadcast to X " + shape_to_string(ctx.input(0).shape));
      ctx.output(0).shape = ctx.input(0).shape;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    const Tensor& slope = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({x.shape(), slope.shape()}));
    if (dims != x.shape())
      return invalid_argument("PRelu: slope " + dims_to_string(slope.shape()) + " must broadcast to X " +
                              dims_to_string(x.shape()));
    Tensor& out = ctx.allocate_output(0, x.dtype(), dims);
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), "PRelu",
                                binary_kernel<scalar_t, scalar_t>(x, slope, out, [](auto v, auto a) {
                                  return v < 0 ? static_cast<decltype(v)>(v * a) : v;
                                }));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
