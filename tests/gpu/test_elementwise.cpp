// CUDA elementwise kernels against the CPU reference: unary math and activations, Clip, broadcasting binary and
// variadic operators, comparisons and logic, Where and Cast, over every registered dtype.
#include <limits>

#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

constexpr DataType kF32 = DataType::kFLOAT, kF16 = DataType::kHALF, kBF16 = DataType::kBF16,
                   kF64 = DataType::kDOUBLE, kI8 = DataType::kINT8, kU8 = DataType::kUINT8,
                   kI16 = DataType::kINT16, kI32 = DataType::kINT32, kI64 = DataType::kINT64,
                   kBool = DataType::kBOOL;
const std::vector<DataType> kFloats = {kF32, kF16, kBF16};
const std::vector<DataType> kFloatInt = {kF32, kF16, kBF16, kI32, kI64};

// Tolerances: float32 math functions differ by a few ulp between CUDA and the host libm; a half or bfloat16
// result can then round one ulp apart.
void set_tol(OpCase& c, DataType dt, double f32 = 1e-5) {
  if (dt == kF16) c.atol = c.rtol = 2e-3;
  else if (dt == kBF16) c.atol = c.rtol = 1.6e-2;
  else c.atol = c.rtol = f32;
}

OpCase make(const std::string& op, std::vector<Tensor> inputs, OpAttrs attrs = {}) {
  OpCase c;
  c.op = op;
  c.inputs = std::move(inputs);
  c.attrs = std::move(attrs);
  return c;
}

Tensor floats(DataType dt, std::vector<int64_t> shape, const std::vector<float>& v) {
  return Tensor::from_vector<float>(std::move(shape), v).cast(dt);
}

// Small integers (as any type): comparisons and Sign then see ties and zeros.
Tensor small_ints(DataType dt, std::vector<int64_t> shape, uint32_t seed, int lo = -3, int hi = 3) {
  return random_tensor(kI32, std::move(shape), seed, lo, hi).cast(dt);
}

std::string name_of(DataType dt) { return dtype_name(dt); }

// ONNX TensorProto.DataType numbers (Cast's 'to').
int64_t onnx_code(DataType dt) {
  switch (dt) {
    case DataType::kFLOAT: return 1;
    case DataType::kUINT8: return 2;
    case DataType::kINT8: return 3;
    case DataType::kINT16: return 5;
    case DataType::kINT32: return 6;
    case DataType::kINT64: return 7;
    case DataType::kBOOL: return 9;
    case DataType::kHALF: return 10;
    case DataType::kDOUBLE: return 11;
    case DataType::kBF16: return 16;
    default: ADD_FAILURE() << "no ONNX code for " << dtype_name(dt); return 0;
  }
}

// ---- unary ----

struct UnaryRange {
  const char* op;
  double lo, hi;
};

TEST(GpuElementwise, UnaryMathAllFloatTypes) {
  KILN_REQUIRE_GPU();
  const UnaryRange ops[] = {
      {"Relu", -3, 3},     {"Sigmoid", -8, 8},    {"Tanh", -4, 4},        {"Exp", -4, 4},
      {"Log", 0.05, 5},    {"Sqrt", 0, 9},        {"Reciprocal", 0.2, 4}, {"Neg", -3, 3},
      {"Abs", -3, 3},      {"Erf", -3, 3},        {"Floor", -5, 5},       {"Ceil", -5, 5},
      {"Round", -5, 5},    {"Sin", -6, 6},        {"Cos", -6, 6},         {"Tan", -1.2, 1.2},
      {"Asin", -0.95, 0.95}, {"Acos", -0.95, 0.95}, {"Atan", -5, 5},      {"Sinh", -4, 4},
      {"Cosh", -4, 4},     {"Asinh", -5, 5},      {"Acosh", 1.01, 6},     {"Atanh", -0.95, 0.95},
      {"Softplus", -10, 10}, {"Softsign", -5, 5}, {"Sign", -3, 3},        {"HardSwish", -5, 5},
      {"Mish", -6, 6},
  };
  uint32_t seed = 100;
  for (const auto& u : ops) {
    for (DataType dt : kFloats) {
      SCOPED_TRACE(std::string(u.op) + " " + name_of(dt));
      OpCase c = make(u.op, {random_tensor(dt, {3, 7, 37}, ++seed, u.lo, u.hi)});
      set_tol(c, dt);
      expect_backends_agree(c);
    }
  }
}

TEST(GpuElementwise, UnaryRankZeroAndOddSizes) {
  KILN_REQUIRE_GPU();
  for (std::vector<int64_t> shape : {std::vector<int64_t>{}, {1}, {1025}, {2, 1, 513}}) {
    OpCase c = make("Sigmoid", {random_tensor(kF32, shape, 7)});
    expect_backends_agree(c);
  }
}

TEST(GpuElementwise, SignAndRoundTies) {
  KILN_REQUIRE_GPU();
  const std::vector<float> v = {-2.5f, -1.5f, -0.5f, 0.f, 0.5f, 1.5f, 2.5f, 3.5f, -0.f, 1.49f, -3.51f, 4.f};
  for (DataType dt : kFloats) {
    SCOPED_TRACE(name_of(dt));
    expect_backends_agree(make("Round", {floats(dt, {12}, v)}));
    expect_backends_agree(make("Sign", {floats(dt, {12}, v)}));
    expect_backends_agree(make("Sign", {small_ints(dt, {40}, 3)}));
  }
}

TEST(GpuElementwise, UnaryIntegerTypes) {
  KILN_REQUIRE_GPU();
  for (const char* op : {"Relu", "Neg", "Abs", "Sign"}) {
    for (DataType dt : {kI8, kI32, kI64}) {
      SCOPED_TRACE(std::string(op) + " " + name_of(dt));
      expect_backends_agree(make(op, {small_ints(dt, {5, 67}, 11, -100, 100)}));
    }
  }
  // Wrap-around at the most negative value.
  expect_backends_agree(make("Neg", {Tensor::from_vector<int32_t>({3}, {std::numeric_limits<int32_t>::min(), -1, 7})}));
  expect_backends_agree(make("Abs", {Tensor::from_vector<int64_t>({3}, {std::numeric_limits<int64_t>::min(), -1, 7})}));
}

TEST(GpuElementwise, ActivationsWithAttributes) {
  KILN_REQUIRE_GPU();
  struct Act {
    const char* op;
    OpAttrs attrs;
  };
  const std::vector<Act> acts = {
      {"Elu", {}},
      {"Elu", {{"alpha", 0.5f}}},
      {"Selu", {}},
      {"Selu", {{"alpha", 1.5f}, {"gamma", 0.8f}}},
      {"Celu", {}},
      {"Celu", {{"alpha", 2.0f}}},
      {"LeakyRelu", {}},
      {"LeakyRelu", {{"alpha", 0.2f}}},
      {"HardSigmoid", {}},
      {"HardSigmoid", {{"alpha", 0.3f}, {"beta", 0.4f}}},
      {"ThresholdedRelu", {}},
      {"ThresholdedRelu", {{"alpha", 0.5f}}},
      {"Gelu", {}},
      {"Gelu", {{"approximate", std::string("none")}}},
      {"Gelu", {{"approximate", std::string("tanh")}}},
      {"Shrink", {}},
      {"Shrink", {{"lambd", 1.5f}, {"bias", 0.25f}}},
  };
  uint32_t seed = 300;
  for (const auto& a : acts) {
    for (DataType dt : kFloats) {
      SCOPED_TRACE(std::string(a.op) + " " + name_of(dt));
      OpCase c = make(a.op, {random_tensor(dt, {4, 129}, ++seed, -5, 5)}, a.attrs);
      set_tol(c, dt);
      expect_backends_agree(c);
    }
  }
}

// Swish (opset 24): x * sigmoid(alpha x), the default alpha and another, in each float type.
TEST(GpuElementwise, SwishOpset24) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 400;
  for (const OpAttrs& attrs : {OpAttrs{}, OpAttrs{{"alpha", 1.702f}}}) {
    for (DataType dt : kFloats) {
      SCOPED_TRACE(std::string("Swish ") + name_of(dt));
      OpCase c = make("Swish", {random_tensor(dt, {4, 129}, ++seed, -6, 6)}, attrs);
      c.opset = 24;
      set_tol(c, dt);
      expect_backends_agree(c);
    }
  }
}

// QuantizeLinear / DequantizeLinear (quantize.cu): per tensor and per axis, int8 and uint8 (and int32 into
// DequantizeLinear), with and without a zero point, from and to float32/float16, bit-exact against the reference
// (half-to-even rounding of x / scale in float32, saturation). Scales and zero points are engine constants.
TEST(GpuElementwise, QuantizeDequantizeLinear) {
  KILN_REQUIRE_GPU();
  const std::vector<int64_t> shape = {2, 3, 5, 7};
  Tensor scale_c(kF32, {3}), scale_1 = Tensor::from_vector<float>({}, {0.05f});
  for (int i = 0; i < 3; ++i) scale_c.data<float>()[i] = 0.02f * static_cast<float>(i + 1);
  for (const bool per_axis : {false, true})
    for (const DataType q : {DataType::kINT8, DataType::kUINT8})
      for (const bool with_zp : {false, true})
        for (const DataType x_t : {kF32, kF16}) {
          SCOPED_TRACE(std::string(per_axis ? "per axis " : "per tensor ") + name_of(q) + (with_zp ? " zp " : " ") +
                       name_of(x_t));
          const Tensor s = (per_axis ? scale_c : scale_1).cast(x_t);
          Tensor zp(q, per_axis ? std::vector<int64_t>{3} : std::vector<int64_t>{});
          for (int64_t i = 0; i < zp.numel(); ++i) {
            if (q == DataType::kINT8) zp.data<int8_t>()[i] = static_cast<int8_t>(-3 + 2 * i);
            else zp.data<uint8_t>()[i] = static_cast<uint8_t>(120 + 3 * i);
          }
          // Values reaching past the range (saturation) and landing on .5 steps (ties to even).
          Tensor x = random_tensor(kF32, shape, 70, -4, 4);
          for (int64_t i = 0; i < x.numel(); i += 11) x.data<float>()[i] = 0.025f * static_cast<float>(i % 9);
          OpCase qc = make("QuantizeLinear", {x.cast(x_t), s}, {{"axis", int64_t{1}}});
          if (with_zp) qc.inputs.push_back(zp);
          qc.constant = {false, true, true};
          qc.opset = 19;
          qc.atol = qc.rtol = 0;
          if (with_zp || q == DataType::kUINT8) expect_backends_agree(qc);  // without a zero point: uint8
          OpCase dc = make("DequantizeLinear", {random_tensor(q, shape, 71, q == DataType::kINT8 ? -128 : 0,
                                                              q == DataType::kINT8 ? 127 : 255), s},
                           {{"axis", int64_t{1}}});
          if (with_zp) dc.inputs.push_back(zp);
          dc.constant = {false, true, true};
          dc.opset = 19;
          set_tol(dc, x_t);
          expect_backends_agree(dc);
        }
  // int32 (a bias quantized with scale_a * scale_b) into float32.
  OpCase dc = make("DequantizeLinear", {random_tensor(DataType::kINT32, {4, 9}, 72, -100000, 100000),
                                        Tensor::from_vector<float>({}, {1e-4f})});
  dc.constant = {false, true};
  dc.opset = 19;
  expect_backends_agree(dc);
}

// BitwiseAnd/Or/Xor (int32/int64, broadcast) and BitwiseNot (8/32/64-bit), opset 18, against the reference.
TEST(GpuElementwise, BitwiseOps) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {kI32, kI64}) {
    for (const char* op : {"BitwiseAnd", "BitwiseOr", "BitwiseXor"}) {
      SCOPED_TRACE(std::string(op) + " " + name_of(dt));
      OpCase c = make(op, {small_ints(dt, {3, 1, 37}, 80, -1000, 1000), small_ints(dt, {5, 37}, 81, -1000, 1000)});
      c.opset = 18;
      expect_backends_agree(c);
    }
  }
  for (DataType dt : {DataType::kINT8, DataType::kUINT8, kI32, kI64}) {
    SCOPED_TRACE(std::string("BitwiseNot ") + name_of(dt));
    OpCase c = make("BitwiseNot", {small_ints(dt, {4, 33}, 82, dt == DataType::kUINT8 ? 0 : -100, 100)});
    c.opset = 18;
    expect_backends_agree(c);
  }
}

TEST(GpuElementwise, IsNaNIsInfNot) {
  KILN_REQUIRE_GPU();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> v = {1.f, -inf, inf, nan, 0.f, -2.f, -nan, 3.f};
  for (DataType dt : kFloats) {
    SCOPED_TRACE(name_of(dt));
    expect_backends_agree(make("IsNaN", {floats(dt, {2, 4}, v)}));
    expect_backends_agree(make("IsInf", {floats(dt, {2, 4}, v)}));
    expect_backends_agree(make("IsInf", {floats(dt, {2, 4}, v)}, {{"detect_negative", int64_t{0}}}));
    expect_backends_agree(make("IsInf", {floats(dt, {2, 4}, v)}, {{"detect_positive", int64_t{0}}}));
  }
  expect_backends_agree(make("Not", {random_tensor(kBool, {3, 45}, 5)}));
}

TEST(GpuElementwise, ClipWithConstantBounds) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {kF32, kF16, kBF16, kI8, kU8, kI32, kI64}) {
    SCOPED_TRACE(name_of(dt));
    const bool is_u8 = dt == kU8;
    Tensor x = random_tensor(dt, {6, 35}, 21, is_u8 ? 0 : -10, 10);
    Tensor lo = Tensor::from_vector<float>({}, {is_u8 ? 2.f : -3.f}).cast(dt);
    Tensor hi = Tensor::from_vector<float>({}, {4.f}).cast(dt);
    OpCase both = make("Clip", {x, lo, hi});
    both.constant = {false, true, true};
    set_tol(both, dt);
    expect_backends_agree(both);

    OpCase min_only = make("Clip", {x, lo});
    min_only.constant = {false, true};
    expect_backends_agree(min_only);

    OpCase max_only = make("Clip", {x, Tensor(), hi});
    max_only.constant = {false, false, true};
    expect_backends_agree(max_only);

    expect_backends_agree(make("Clip", {x}));

    OpCase crossed = make("Clip", {x, hi, lo});  // min > max: max everywhere
    crossed.constant = {false, true, true};
    expect_backends_agree(crossed);
  }
}

// ---- binary ----

struct Shapes {
  std::vector<int64_t> a, b;
};
const std::vector<Shapes> kBroadcastShapes = {
    {{4, 33}, {4, 33}},                                              // same shape
    {{4, 33}, {}},                                                   // scalar right
    {{}, {5, 7}},                                                    // scalar left
    {{2, 3, 5}, {5}},                                                // bias
    {{2, 3, 5}, {3, 1}},                                             // middle axis
    {{4, 1, 6}, {1, 5, 1}},                                          // both sides broadcast
    {{1, 1, 7}, {7, 1, 1}},                                          // size-1 dims everywhere
    {{2, 1, 3, 1, 2, 1, 2, 3}, {1, 2, 1, 3, 1, 2, 1, 3}},            // rank 8, nothing collapses
    {{2, 3, 4, 5}, {2, 1, 4, 1}},                                    // alternating
    {{1}, {1}},                                                      // one element
};

Tensor operand(DataType dt, const std::vector<int64_t>& shape, uint32_t seed, bool positive = false) {
  if (dt == kI32 || dt == kI64) return random_tensor(dt, shape, seed, positive ? 1 : -20, 20);
  return random_tensor(dt, shape, seed, positive ? 0.25 : -4, 4);
}

TEST(GpuElementwise, ArithmeticBroadcasting) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 500;
  for (const char* op : {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"}) {
    for (DataType dt : kFloatInt) {
      for (const auto& s : kBroadcastShapes) {
        SCOPED_TRACE(std::string(op) + " " + name_of(dt) + " " + dims_to_string(s.a) + " and " + dims_to_string(s.b));
        OpCase c = make(op, {operand(dt, s.a, ++seed), operand(dt, s.b, ++seed)});
        set_tol(c, dt);
        expect_backends_agree(c);
      }
    }
  }
}

TEST(GpuElementwise, IntegerDivisionTruncatesAndDividesByZero) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {kI32, kI64}) {
    SCOPED_TRACE(name_of(dt));
    Tensor a = Tensor::from_vector<int64_t>({8}, {7, -7, 7, -7, 5, -9, 0, 123}).cast(dt);
    Tensor b = Tensor::from_vector<int64_t>({8}, {2, 2, -2, -2, 0, -1, 3, 10}).cast(dt);
    expect_backends_agree(make("Div", {a, b}));
    expect_backends_agree(make("Mod", {a, b}));
    expect_backends_agree(make("Mod", {a, b}, {{"fmod", int64_t{1}}}));
  }
}

TEST(GpuElementwise, ModFloatAndInt) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 700;
  for (DataType dt : kFloatInt) {
    for (int64_t fmod : {0, 1}) {
      SCOPED_TRACE(name_of(dt) + " fmod " + std::to_string(fmod));
      Tensor a = operand(dt, {3, 40}, ++seed);
      Tensor b = dt == kI32 || dt == kI64 ? small_ints(dt, {40}, ++seed, -6, 6)
                                          : random_tensor(dt, {40}, ++seed, 0.5, 3);
      OpCase c = make("Mod", {a, b}, {{"fmod", fmod}});
      set_tol(c, dt);
      expect_backends_agree(c);
    }
  }
}

TEST(GpuElementwise, PowFloatAndIntegerExponents) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 800;
  for (DataType dt : kFloats) {
    for (DataType et : {kF32, kF16, kBF16, kF64, kI32, kI64}) {
      SCOPED_TRACE(name_of(dt) + " ** " + name_of(et));
      const bool int_exp = et == kI32 || et == kI64;
      // Negative bases only meet integer exponents (a float exponent would give NaN on both sides anyway).
      Tensor base = random_tensor(dt, {3, 5, 8}, ++seed, int_exp ? -2 : 0.1, 2);
      Tensor expo = int_exp ? small_ints(et, {5, 1}, ++seed, -3, 4) : random_tensor(et, {5, 1}, ++seed, -2, 2.5);
      OpCase c = make("Pow", {base, expo});
      set_tol(c, dt, 2e-5);
      expect_backends_agree(c);
    }
    OpCase sq = make("Pow", {random_tensor(dt, {100}, ++seed), Tensor::from_vector<float>({}, {2.f}).cast(dt)});
    sq.constant = {false, true};
    set_tol(sq, dt);
    expect_backends_agree(sq);
  }
}

TEST(GpuElementwise, PReluSlopeBroadcast) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 900;
  for (DataType dt : kFloatInt) {
    for (std::vector<int64_t> slope : {std::vector<int64_t>{3, 1, 1}, {5}, {2, 3, 4, 5}, {1}}) {
      SCOPED_TRACE(name_of(dt) + " slope " + dims_to_string(slope));
      OpCase c = make("PRelu", {operand(dt, {2, 3, 4, 5}, ++seed), operand(dt, slope, ++seed)});
      c.constant = {false, true};
      set_tol(c, dt);
      expect_backends_agree(c);
    }
  }
}

TEST(GpuElementwise, BitShift) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {kI32, kI64}) {
    for (const char* dir : {"LEFT", "RIGHT"}) {
      SCOPED_TRACE(name_of(dt) + " " + dir);
      Tensor x = small_ints(dt, {4, 50}, 31, -1000, 1000);
      // Includes negative and >= width counts, which shift every bit out.
      Tensor s = small_ints(dt, {50}, 32, -3, 70);
      expect_backends_agree(make("BitShift", {x, s}, {{"direction", std::string(dir)}}));
    }
  }
}

TEST(GpuElementwise, VariadicSumMeanMaxMin) {
  KILN_REQUIRE_GPU();
  const std::vector<std::vector<int64_t>> shapes = {{2, 3, 4}, {4}, {3, 1}, {}, {2, 1, 4}, {1, 3, 4}, {1}, {2, 3, 4}};
  uint32_t seed = 1000;
  for (const char* op : {"Sum", "Mean", "Max", "Min"}) {
    for (DataType dt : kFloatInt) {
      if (std::string(op) == "Mean" && (dt == kI32 || dt == kI64)) continue;
      for (size_t n : {size_t{1}, size_t{2}, size_t{3}, size_t{8}}) {
        SCOPED_TRACE(std::string(op) + " " + name_of(dt) + " of " + std::to_string(n));
        std::vector<Tensor> ins;
        for (size_t k = 0; k < n; ++k) ins.push_back(operand(dt, shapes[k], ++seed));
        OpCase c = make(op, ins);
        set_tol(c, dt);
        expect_backends_agree(c);
      }
    }
  }
}

TEST(GpuElementwise, MaxMinPropagateNaN) {
  KILN_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (DataType dt : kFloats) {
    Tensor a = floats(dt, {4}, {1.f, nan, 3.f, nan});
    Tensor b = floats(dt, {4}, {nan, 2.f, 1.f, nan});
    expect_backends_agree(make("Max", {a, b}));
    expect_backends_agree(make("Min", {a, b}));
  }
}

TEST(GpuElementwise, ComparisonsAndLogic) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 1200;
  for (const char* op : {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}) {
    for (DataType dt : kFloatInt) {
      for (const auto& s : kBroadcastShapes) {
        SCOPED_TRACE(std::string(op) + " " + name_of(dt) + " " + dims_to_string(s.a) + " and " + dims_to_string(s.b));
        expect_backends_agree(make(op, {small_ints(dt, s.a, ++seed), small_ints(dt, s.b, ++seed)}));
      }
    }
  }
  for (const char* op : {"Equal", "And", "Or", "Xor"}) {
    for (const auto& s : kBroadcastShapes) {
      SCOPED_TRACE(std::string(op) + " bool " + dims_to_string(s.a) + " and " + dims_to_string(s.b));
      expect_backends_agree(make(op, {random_tensor(kBool, s.a, ++seed), random_tensor(kBool, s.b, ++seed)}));
    }
  }
}

TEST(GpuElementwise, WhereEveryElementSize) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 1300;
  for (DataType dt : {kF32, kF16, kBF16, kF64, kI8, kU8, kI16, kI32, kI64, kBool}) {
    SCOPED_TRACE(name_of(dt));
    expect_backends_agree(make("Where", {random_tensor(kBool, {4, 1, 6}, ++seed), random_tensor(dt, {1, 5, 6}, ++seed),
                                         random_tensor(dt, {}, ++seed)}));
    expect_backends_agree(make("Where", {random_tensor(kBool, {3, 70}, ++seed), random_tensor(dt, {3, 70}, ++seed),
                                         random_tensor(dt, {3, 70}, ++seed)}));
  }
}

TEST(GpuElementwise, CastEveryPair) {
  KILN_REQUIRE_GPU();
  const std::vector<DataType> types = {kF32, kF16, kBF16, kF64, kI8, kU8, kI16, kI32, kI64, kBool};
  uint32_t seed = 1400;
  for (DataType from : types) {
    for (DataType to : types) {
      SCOPED_TRACE(name_of(from) + " -> " + name_of(to));
      // Values every target holds (truncation of out-of-range floats is undefined in C++); negative
      // fractions check truncation toward zero.
      const double lo = to == kU8 || from == kU8 ? 0 : -100, hi = from == kI8 || to == kI8 ? 100 : 120;
      Tensor x = from == kBool ? random_tensor(kBool, {3, 41}, ++seed) : random_tensor(from, {3, 41}, ++seed, lo, hi);
      expect_backends_agree(make("Cast", {x}, {{"to", onnx_code(to)}}));
    }
  }
}

TEST(GpuElementwise, CastRoundingWrapAndSpecials) {
  KILN_REQUIRE_GPU();
  // Large int64 values round to float (once) and to half/bfloat16 through double and float, as the reference.
  Tensor big = Tensor::from_vector<int64_t>({6}, {(int64_t{1} << 60) + 12345, -(int64_t{1} << 40) + 3, 123456789012,
                                                  (int64_t{1} << 53) + 1, 65519, -70000});
  for (DataType to : {kF32, kF16, kBF16, kF64, kI8, kU8, kI16, kI32, kBool}) {
    SCOPED_TRACE("int64 -> " + name_of(to));
    expect_backends_agree(make("Cast", {big}, {{"to", onnx_code(to)}}));
  }
  // Integer narrowing wraps.
  Tensor wide = Tensor::from_vector<int32_t>({5}, {300, -300, 70000, -129, 255});
  for (DataType to : {kI8, kU8, kI16}) expect_backends_agree(make("Cast", {wide}, {{"to", onnx_code(to)}}));
  // Infinities and NaN into other float types and bool; float -> float16 overflow and subnormals.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  Tensor special = Tensor::from_vector<float>({7}, {inf, -inf, nan, 70000.f, 1e-7f, -3e-6f, 0.f});
  for (DataType to : {kF16, kBF16, kF64, kBool}) expect_backends_agree(make("Cast", {special}, {{"to", onnx_code(to)}}));
}

TEST(GpuElementwise, CastLike) {
  KILN_REQUIRE_GPU();
  OpCase c = make("CastLike", {random_tensor(kF32, {4, 9}, 3), random_tensor(kF16, {1}, 4)});
  c.constant = {false, true};
  expect_backends_agree(c);
}

TEST(GpuElementwise, LargeTensorsUseTheGridStrideLoop) {
  KILN_REQUIRE_GPU();
  // More elements than one grid pass covers (4096 blocks x 1024 elements).
  OpCase add = make("Add", {random_tensor(kF32, {1100, 4099}, 1), random_tensor(kF32, {4099}, 2)});
  expect_backends_agree(add);
  OpCase relu = make("Relu", {random_tensor(kF16, {4500001}, 3)});
  expect_backends_agree(relu);
}

TEST(GpuElementwise, EmptyTensorsLaunchNothing) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("Add", {random_tensor(kF32, {0, 3}, 1), random_tensor(kF32, {3}, 2)}));
  expect_backends_agree(make("Exp", {random_tensor(kF32, {2, 0}, 1)}));
  expect_backends_agree(make("Cast", {random_tensor(kF32, {0}, 1)}, {{"to", onnx_code(kF16)}}));
}

}  // namespace
}  // namespace kiln::gpu_testing
