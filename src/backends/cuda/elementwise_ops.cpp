// CUDA registrations of the elementwise operators: attribute handling, the host-side broadcast collapse and
// the supports() checks; the kernels are in elementwise.cu. Types a kernel does not list run on the host.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/elementwise_kernels.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

using runtime::EnginePlan;
using runtime::PlanNode;

constexpr DataType kF32 = DataType::kFLOAT, kF16 = DataType::kHALF, kBF16 = DataType::kBF16,
                   kF64 = DataType::kDOUBLE, kI8 = DataType::kINT8, kU8 = DataType::kUINT8,
                   kI16 = DataType::kINT16, kI32 = DataType::kINT32, kI64 = DataType::kINT64,
                   kBool = DataType::kBOOL;

const std::vector<DataType> kFloatInt = {kF32, kF16, kBF16, kI32, kI64};
const std::vector<DataType> kSignedInts = {kI8, kI32, kI64};
const std::vector<DataType> kClipInts = {kI8, kU8, kI32, kI64};
const std::vector<DataType> kCastTypes = {kF32, kF16, kBF16, kF64, kI8, kU8, kI16, kI32, kI64, kBool};

bool contains(const std::vector<DataType>& v, DataType t) {
  for (DataType x : v)
    if (x == t) return true;
  return false;
}
bool is_float(DataType t) { return t == kF32 || t == kF16 || t == kBF16; }

// The output's rank is known and fits the kernels' index arithmetic.
bool rank_fits(const PlanNode& n, const EnginePlan& plan) {
  if (n.outputs.empty()) return false;
  const auto& v = plan.values[n.outputs[0]];
  return v.rank_known && v.shape.size() <= static_cast<size_t>(kEwMaxDims);
}

// Every input present (variadic and binary ops have no optional inputs).
bool all_inputs_present(const PlanNode& n) {
  for (int id : n.inputs)
    if (id < 0) return false;
  return true;
}

// Numpy broadcast of `ins` to `out`, collapsed: size-1 output dims are dropped and neighbouring dims merge
// wherever every input walks them as one (same-shape and scalar inputs end at rank 1).
Result<EwBroadcast> make_broadcast(const Dims& out, const std::vector<const Dims*>& ins) {
  EwBroadcast b;
  const int n = static_cast<int>(ins.size());
  if (n < 1 || n > kEwMaxInputs) return unsupported("elementwise broadcast over " + std::to_string(n) + " inputs");
  const int rank = static_cast<int>(out.size());
  std::vector<std::vector<int64_t>> st(n, std::vector<int64_t>(rank, 0));
  for (int k = 0; k < n; ++k) {
    const Dims& s = *ins[k];
    if (s.size() > out.size())
      return invalid_argument("input " + std::to_string(k) + " of shape " + dims_to_string(s) +
                              " has a higher rank than the output " + dims_to_string(out));
    int64_t stride = 1;
    for (int d = rank - 1, j = static_cast<int>(s.size()) - 1; j >= 0; --d, --j) {
      if (s[j] == out[d]) st[k][d] = out[d] == 1 ? 0 : stride;
      else if (s[j] == 1) st[k][d] = 0;
      else
        return invalid_argument("input " + std::to_string(k) + " of shape " + dims_to_string(s) +
                                " does not broadcast to " + dims_to_string(out));
      stride *= s[j];
    }
  }
  b.num_inputs = n;
  b.total = 1;
  for (int64_t d : out) b.total *= d;
  int r = 0;
  for (int d = rank - 1; d >= 0; --d) {
    if (out[d] == 1) continue;
    if (r > 0) {
      bool merge = true;
      for (int k = 0; k < n; ++k) merge &= st[k][d] == b.strides[k][r - 1] * b.dims[r - 1];
      if (merge) {
        b.dims[r - 1] *= out[d];
        continue;
      }
    }
    if (r == kEwMaxDims)
      return unsupported("broadcast of output " + dims_to_string(out) + " needs more than " +
                         std::to_string(kEwMaxDims) + " dims after collapsing");
    b.dims[r] = out[d];
    for (int k = 0; k < n; ++k) b.strides[k][r] = st[k][d];
    ++r;
  }
  if (r == 0) {  // a single element
    b.dims[0] = 1;
    r = 1;
  }
  b.rank = r;
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  b.index32 = b.total <= kMax32;
  for (int k = 0; k < n; ++k) {
    int64_t numel = 1;
    for (int64_t d : *ins[k]) numel *= d;
    b.index32 &= numel <= kMax32;
  }
  return b;
}

Result<EwBroadcast> broadcast_of(const KernelArgs& a, int first, int count) {
  std::vector<const Dims*> shapes;
  for (int k = first; k < first + count; ++k) shapes.push_back(&a.in[k].shape);
  return make_broadcast(a.out[0].shape, shapes);
}

KernelDef def(const char* op, std::vector<DataType> dtypes, KernelFn run, SupportsFn supports = nullptr) {
  KernelDef d;
  d.op = op;
  d.dtypes = std::move(dtypes);
  d.run = std::move(run);
  d.supports = std::move(supports);
  return d;
}

// ---- unary ----

// Reads a unary op's attributes into its kernel parameters.
using ParamsFn = std::function<Result<UnaryParams>(const Attributes&)>;

ParamsFn fixed(UnaryOp op) {
  return [op](const Attributes&) -> Result<UnaryParams> {
    UnaryParams p;
    p.op = op;
    return p;
  };
}

ParamsFn with_alpha_beta(UnaryOp op, float alpha, float beta = 0, float gamma = 0) {
  return [=](const Attributes& attrs) -> Result<UnaryParams> {
    UnaryParams p;
    p.op = op;
    KILN_ASSIGN_OR_RETURN(p.alpha, attrs.get_float("alpha", alpha));
    KILN_ASSIGN_OR_RETURN(p.beta, attrs.get_float("beta", beta));
    KILN_ASSIGN_OR_RETURN(p.gamma, attrs.get_float("gamma", gamma));
    return p;
  };
}

Result<UnaryParams> gelu_params(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string mode, attrs.get_string("approximate", "none"));
  UnaryParams p;
  if (mode == "none") p.op = UnaryOp::kGeluErf;
  else if (mode == "tanh") p.op = UnaryOp::kGeluTanh;
  else return invalid_model("Gelu: attribute 'approximate' must be one of none, tanh but is '" + mode + "'");
  return p;
}

// Float unary op (and, with int_types, the integer kernel for the same op).
KernelDef unary_def(const char* op, ParamsFn params, const std::vector<DataType>& int_types = {}) {
  std::vector<DataType> types = {kF32, kF16, kBF16};
  types.insert(types.end(), int_types.begin(), int_types.end());
  // Attribute errors (e.g. an unknown Gelu mode) are left to the host kernel, which reports them.
  SupportsFn supports = [params](const PlanNode& n, const EnginePlan&) { return params(n.attrs).ok(); };
  return def(
      op, types,
      [params](KernelArgs& a) -> Status {
        KILN_ASSIGN_OR_RETURN(UnaryParams p, params(a.attrs()));
        const DevTensor& x = a.in[0];
        if (is_float(x.dtype)) return launch_unary_float(x.dtype, x.data, a.out[0].data, x.numel(), p, a.stream);
        return launch_unary_int(x.dtype, x.data, a.out[0].data, x.numel(), p, a.stream);
      },
      supports);
}

KernelDef float_class_def(const char* op, bool is_inf) {
  return def(op, {kF32, kF16, kBF16}, [is_inf](KernelArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(int64_t neg, a.attrs().get_int("detect_negative", 1));
    KILN_ASSIGN_OR_RETURN(int64_t pos, a.attrs().get_int("detect_positive", 1));
    const DevTensor& x = a.in[0];
    return launch_float_class(x.dtype, x.data, a.out[0].data, x.numel(), is_inf, neg != 0, pos != 0, a.stream);
  });
}

// Clip's bounds: attributes before opset 11, else optional constant scalar inputs (empty means absent).
bool clip_supported(const PlanNode& n, const EnginePlan& plan) {
  if (n.opset < 11) return true;
  DataType dt = node_dtype(n, plan);
  for (size_t k = 1; k < n.inputs.size() && k <= 2; ++k) {
    int id = n.inputs[k];
    if (id < 0) continue;
    const Tensor& c = plan.values[id].constant;
    if (!c.defined() || c.numel() > 1 || c.dtype() != dt) return false;
  }
  return n.inputs.size() <= 3;
}

Status run_clip(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  UnaryParams p;
  p.op = UnaryOp::kClip;
  const bool fl = is_float(x.dtype);
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  int64_t ilo = std::numeric_limits<int64_t>::min(), ihi = std::numeric_limits<int64_t>::max();
  if (a.node->opset < 11) {
    KILN_ASSIGN_OR_RETURN(float amin, a.attrs().get_float("min", 0.f));
    KILN_ASSIGN_OR_RETURN(float amax, a.attrs().get_float("max", 0.f));
    if (a.attrs().has("min")) { lo = amin; ilo = static_cast<int64_t>(amin); }
    if (a.attrs().has("max")) { hi = amax; ihi = static_cast<int64_t>(amax); }
  } else {
    for (int k = 1; k <= 2 && k < static_cast<int>(a.in.size()); ++k) {
      const Tensor* t = k < static_cast<int>(a.host_in.size()) ? a.host_in[k] : nullptr;
      if (!t) {
        if (!a.has_input(k) || a.in[k].numel() == 0) continue;  // omitted or empty: no bound
        return internal_error("Clip: bound input " + std::to_string(k) + " is not known on the host");
      }
      if (t->numel() == 0) continue;
      if (t->numel() != 1) return invalid_argument("Clip: min and max must be scalars");
      if (k == 1) { lo = t->get_f64(0); ilo = t->get_i64(0); }
      else { hi = t->get_f64(0); ihi = t->get_i64(0); }
    }
  }
  if (fl) {
    p.alpha = static_cast<float>(lo);
    p.beta = static_cast<float>(hi);
    return launch_unary_float(x.dtype, x.data, a.out[0].data, x.numel(), p, a.stream);
  }
  p.lo = ilo;
  p.hi = ihi;
  return launch_unary_int(x.dtype, x.data, a.out[0].data, x.numel(), p, a.stream);
}

// ---- binary ----

KernelDef binary_def(const char* op, std::vector<DataType> types, std::function<Result<BinaryOp>(const Attributes&)> which) {
  SupportsFn supports = [which](const PlanNode& n, const EnginePlan& plan) {
    return n.inputs.size() == 2 && all_inputs_present(n) && rank_fits(n, plan) && which(n.attrs).ok();
  };
  return def(
      op, std::move(types),
      [which](KernelArgs& a) -> Status {
        KILN_ASSIGN_OR_RETURN(BinaryOp bop, which(a.attrs()));
        KILN_ASSIGN_OR_RETURN(EwBroadcast bc, broadcast_of(a, 0, 2));
        return launch_binary(bop, a.in[0].dtype, a.in[0].data, a.in[1].data, a.out[0].data, bc, a.stream);
      },
      supports);
}

std::function<Result<BinaryOp>(const Attributes&)> always(BinaryOp op) {
  return [op](const Attributes&) -> Result<BinaryOp> { return op; };
}

Result<BinaryOp> mod_op(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(int64_t fmod, attrs.get_int("fmod", 0));
  if (fmod != 0 && fmod != 1) return invalid_model("Mod: attribute 'fmod' must be 0 or 1");
  return fmod ? BinaryOp::kFmod : BinaryOp::kMod;
}

Result<BinaryOp> shift_op(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string dir, attrs.get_string("direction"));
  if (dir == "LEFT") return BinaryOp::kShiftLeft;
  if (dir == "RIGHT") return BinaryOp::kShiftRight;
  return invalid_model("BitShift: attribute 'direction' must be one of LEFT, RIGHT but is '" + dir + "'");
}

KernelDef compare_def(const char* op, std::vector<DataType> types, CompareOp cop) {
  SupportsFn supports = [](const PlanNode& n, const EnginePlan& plan) {
    return n.inputs.size() == 2 && all_inputs_present(n) && rank_fits(n, plan);
  };
  return def(
      op, std::move(types),
      [cop](KernelArgs& a) -> Status {
        KILN_ASSIGN_OR_RETURN(EwBroadcast bc, broadcast_of(a, 0, 2));
        return launch_compare(cop, a.in[0].dtype, a.in[0].data, a.in[1].data, a.out[0].data, bc, a.stream);
      },
      supports);
}

KernelDef variadic_def(const char* op, std::vector<DataType> types, VariadicOp vop) {
  SupportsFn supports = [](const PlanNode& n, const EnginePlan& plan) {
    return !n.inputs.empty() && n.inputs.size() <= static_cast<size_t>(kEwMaxInputs) && all_inputs_present(n) &&
           rank_fits(n, plan);
  };
  return def(
      op, std::move(types),
      [vop](KernelArgs& a) -> Status {
        const int n = static_cast<int>(a.in.size());
        KILN_ASSIGN_OR_RETURN(EwBroadcast bc, broadcast_of(a, 0, n));
        std::vector<const void*> ptrs;
        for (const auto& t : a.in) ptrs.push_back(t.data);
        return launch_variadic(vop, a.in[0].dtype, ptrs.data(), a.out[0].data, bc, a.stream);
      },
      supports);
}

// ---- Cast ----

Result<DataType> cast_target(const PlanNode& n, const EnginePlan& plan) {
  if (n.op_type == "CastLike") {
    if (n.inputs.size() < 2 || n.inputs[1] < 0) return invalid_model("CastLike: missing target_type input");
    return plan.values[n.inputs[1]].dtype;
  }
  KILN_ASSIGN_OR_RETURN(int64_t code, n.attrs.get_int("to"));
  DataType t;
  if (!ops::dtype_from_onnx_code(code, &t)) return unsupported("Cast: target type " + std::to_string(code));
  return t;
}

KernelDef cast_def(const char* op) {
  SupportsFn supports = [](const PlanNode& n, const EnginePlan& plan) {
    auto to = cast_target(n, plan);
    return to.ok() && cast_type_supported(*to) && !n.outputs.empty() && plan.values[n.outputs[0]].dtype == *to;
  };
  return def(op, kCastTypes, [](KernelArgs& a) -> Status {
    const DevTensor& x = a.in[0];
    const DevTensor& y = a.out[0];
    if (x.numel() == 0) return Status::Ok();
    if (x.dtype == y.dtype) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(y.data, x.data, x.nbytes(), cudaMemcpyDeviceToDevice, a.stream));
      return Status::Ok();
    }
    return launch_cast(x.dtype, y.dtype, x.data, y.data, x.numel(), a.stream);
  }, supports);
}

// ---- Where ----

KernelDef where_def() {
  SupportsFn supports = [](const PlanNode& n, const EnginePlan& plan) {
    if (n.inputs.size() != 3 || !all_inputs_present(n) || !rank_fits(n, plan)) return false;
    size_t bytes = dtype_size(plan.values[n.inputs[1]].dtype);
    return bytes == 1 || bytes == 2 || bytes == 4 || bytes == 8;
  };
  return def("Where", {kBool}, [](KernelArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(EwBroadcast bc, broadcast_of(a, 0, 3));
    return launch_where(static_cast<int>(dtype_size(a.in[1].dtype)), a.in[0].data, a.in[1].data, a.in[2].data,
                        a.out[0].data, bc, a.stream);
  }, supports);
}

// ---- Pow ----

KernelDef pow_def() {
  SupportsFn supports = [](const PlanNode& n, const EnginePlan& plan) {
    if (n.inputs.size() != 2 || !all_inputs_present(n) || !rank_fits(n, plan)) return false;
    DataType e = plan.values[n.inputs[1]].dtype;
    return is_float(e) || e == kF64 || e == kI32 || e == kI64;
  };
  return def("Pow", {kF32, kF16, kBF16}, [](KernelArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(EwBroadcast bc, broadcast_of(a, 0, 2));
    return launch_pow(a.in[0].dtype, a.in[1].dtype, a.in[0].data, a.in[1].data, a.out[0].data, bc, a.stream);
  }, supports);
}

struct UnaryEntry {
  const char* op;
  UnaryOp u;
};

const bool kRegistered = [] {
  auto& r = KernelRegistry::instance();
  // Float-only math without attributes.
  static const UnaryEntry kMath[] = {
      {"Sigmoid", UnaryOp::kSigmoid}, {"Tanh", UnaryOp::kTanh},       {"Exp", UnaryOp::kExp},
      {"Log", UnaryOp::kLog},         {"Sqrt", UnaryOp::kSqrt},       {"Reciprocal", UnaryOp::kReciprocal},
      {"Erf", UnaryOp::kErf},         {"Floor", UnaryOp::kFloor},     {"Ceil", UnaryOp::kCeil},
      {"Round", UnaryOp::kRound},     {"Sin", UnaryOp::kSin},         {"Cos", UnaryOp::kCos},
      {"Tan", UnaryOp::kTan},         {"Asin", UnaryOp::kAsin},       {"Acos", UnaryOp::kAcos},
      {"Atan", UnaryOp::kAtan},       {"Sinh", UnaryOp::kSinh},       {"Cosh", UnaryOp::kCosh},
      {"Asinh", UnaryOp::kAsinh},     {"Acosh", UnaryOp::kAcosh},     {"Atanh", UnaryOp::kAtanh},
      {"Softplus", UnaryOp::kSoftplus}, {"Softsign", UnaryOp::kSoftsign}, {"HardSwish", UnaryOp::kHardSwish},
      {"Mish", UnaryOp::kMish},
  };
  for (const auto& e : kMath) r.add(unary_def(e.op, fixed(e.u)));
  // Also on signed integers.
  r.add(unary_def("Relu", fixed(UnaryOp::kRelu), kSignedInts));
  r.add(unary_def("Neg", fixed(UnaryOp::kNeg), kSignedInts));
  r.add(unary_def("Abs", fixed(UnaryOp::kAbs), kSignedInts));
  r.add(unary_def("Sign", fixed(UnaryOp::kSign), kSignedInts));
  // Activations with attributes; defaults as in src/ops/unary.cpp.
  r.add(unary_def("Elu", with_alpha_beta(UnaryOp::kElu, 1.f)));
  r.add(unary_def("Selu", with_alpha_beta(UnaryOp::kSelu, static_cast<float>(1.67326319217681884765625), 0,
                                          static_cast<float>(1.05070102214813232421875))));
  r.add(unary_def("Celu", with_alpha_beta(UnaryOp::kCelu, 1.f)));
  r.add(unary_def("LeakyRelu", with_alpha_beta(UnaryOp::kLeakyRelu, 0.01f)));
  r.add(unary_def("HardSigmoid", with_alpha_beta(UnaryOp::kHardSigmoid, 0.2f, 0.5f)));
  r.add(unary_def("ThresholdedRelu", with_alpha_beta(UnaryOp::kThresholdedRelu, 1.f)));
  r.add(unary_def("Gelu", gelu_params));
  r.add(unary_def("Swish", with_alpha_beta(UnaryOp::kSwish, 1.f)));  // opset 24
  r.add(unary_def("Shrink", [](const Attributes& attrs) -> Result<UnaryParams> {  // lambd as alpha, bias as beta
    UnaryParams p;
    p.op = UnaryOp::kShrink;
    KILN_ASSIGN_OR_RETURN(p.alpha, attrs.get_float("lambd", 0.5f));
    KILN_ASSIGN_OR_RETURN(p.beta, attrs.get_float("bias", 0.f));
    return p;
  }));
  r.add(def("Not", {kBool}, [](KernelArgs& a) -> Status {
    UnaryParams p;
    p.op = UnaryOp::kNot;
    return launch_unary_int(kBool, a.in[0].data, a.out[0].data, a.in[0].numel(), p, a.stream);
  }));
  r.add(float_class_def("IsNaN", false));
  r.add(float_class_def("IsInf", true));
  {
    std::vector<DataType> types = {kF32, kF16, kBF16};
    types.insert(types.end(), kClipInts.begin(), kClipInts.end());
    r.add(def("Clip", types, run_clip, clip_supported));
  }

  r.add(binary_def("Add", kFloatInt, always(BinaryOp::kAdd)));
  r.add(binary_def("Sub", kFloatInt, always(BinaryOp::kSub)));
  r.add(binary_def("Mul", kFloatInt, always(BinaryOp::kMul)));
  r.add(binary_def("Div", kFloatInt, always(BinaryOp::kDiv)));
  r.add(binary_def("Mod", kFloatInt, mod_op));
  r.add(binary_def("PRelu", kFloatInt, always(BinaryOp::kPRelu)));
  r.add(binary_def("BitShift", {kI32, kI64}, shift_op));
  r.add(binary_def("BitwiseAnd", {kI32, kI64}, always(BinaryOp::kBitAnd)));  // opset 18
  r.add(binary_def("BitwiseOr", {kI32, kI64}, always(BinaryOp::kBitOr)));
  r.add(binary_def("BitwiseXor", {kI32, kI64}, always(BinaryOp::kBitXor)));
  r.add(def("BitwiseNot", {DataType::kINT8, DataType::kUINT8, kI32, kI64}, [](KernelArgs& a) -> Status {
    UnaryParams p;
    p.op = UnaryOp::kBitNot;
    return launch_unary_int(a.in[0].dtype, a.in[0].data, a.out[0].data, a.in[0].numel(), p, a.stream);
  }));
  r.add(pow_def());

  r.add(variadic_def("Sum", kFloatInt, VariadicOp::kSum));
  r.add(variadic_def("Mean", {kF32, kF16, kBF16}, VariadicOp::kMean));
  r.add(variadic_def("Max", kFloatInt, VariadicOp::kMax));
  r.add(variadic_def("Min", kFloatInt, VariadicOp::kMin));

  r.add(compare_def("Equal", {kF32, kF16, kBF16, kI32, kI64, kBool}, CompareOp::kEqual));
  r.add(compare_def("Less", kFloatInt, CompareOp::kLess));
  r.add(compare_def("LessOrEqual", kFloatInt, CompareOp::kLessOrEqual));
  r.add(compare_def("Greater", kFloatInt, CompareOp::kGreater));
  r.add(compare_def("GreaterOrEqual", kFloatInt, CompareOp::kGreaterOrEqual));
  r.add(compare_def("And", {kBool}, CompareOp::kAnd));
  r.add(compare_def("Or", {kBool}, CompareOp::kOr));
  r.add(compare_def("Xor", {kBool}, CompareOp::kXor));

  r.add(where_def());
  r.add(cast_def("Cast"));
  r.add(cast_def("CastLike"));
  return true;
}();

}  // namespace
}  // namespace kiln::cuda
