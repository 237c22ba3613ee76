// Conversions for the sub-16-bit element types: OFP8 float8 variants, float4e2m1, e8m0, int4/int2 packing.
#include "common/small_types.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace kiln {
namespace {

// How a minifloat spends its top codes: that decides NaN, infinity and the largest finite value.
enum class NanStyle {
  kIeee,     // exponent all ones is inf (mantissa 0) or NaN (E5M2)
  kAllOnes,  // only S.1111.111 is NaN, no inf (E4M3FN)
  kNegZero,  // 0x80 is the only NaN, no inf, no -0 (FNUZ variants)
  kNone,     // every code is a number (E2M1)
};

struct MiniFloat {
  int exp_bits, man_bits, bias;
  NanStyle nan;
};

MiniFloat format_of(DataType t) {
  switch (t) {
    case DataType::kFP8E4M3FN: return {4, 3, 7, NanStyle::kAllOnes};
    case DataType::kFP8E4M3FNUZ: return {4, 3, 8, NanStyle::kNegZero};
    case DataType::kFP8E5M2: return {5, 2, 15, NanStyle::kIeee};
    case DataType::kFP8E5M2FNUZ: return {5, 2, 16, NanStyle::kNegZero};
    default: return {2, 1, 1, NanStyle::kNone};  // kFP4E2M1
  }
}

uint8_t max_finite_code(const MiniFloat& f) {
  const int exp_all = (1 << f.exp_bits) - 1, man_all = (1 << f.man_bits) - 1;
  switch (f.nan) {
    case NanStyle::kIeee: return static_cast<uint8_t>(((exp_all - 1) << f.man_bits) | man_all);
    case NanStyle::kAllOnes: return static_cast<uint8_t>((exp_all << f.man_bits) | (man_all - 1));
    default: return static_cast<uint8_t>((exp_all << f.man_bits) | man_all);
  }
}

uint8_t nan_code(const MiniFloat& f) {
  const int sign_bit = 1 << (f.exp_bits + f.man_bits);
  switch (f.nan) {
    case NanStyle::kIeee: case NanStyle::kAllOnes: return static_cast<uint8_t>(sign_bit - 1);
    // FNUZ's NaN is the negative-zero pattern; E2M1 has no NaN and the reference maps NaN to that pattern too.
    default: return static_cast<uint8_t>(sign_bit);
  }
}

float decode(const MiniFloat& f, uint8_t code) {
  const int sign_shift = f.exp_bits + f.man_bits;
  const bool neg = (code >> sign_shift) & 1;
  const int e = (code >> f.man_bits) & ((1 << f.exp_bits) - 1);
  const int m = code & ((1 << f.man_bits) - 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  switch (f.nan) {
    case NanStyle::kIeee:
      if (e == (1 << f.exp_bits) - 1) return m ? nan : (neg ? -INFINITY : INFINITY);
      break;
    case NanStyle::kAllOnes:
      if ((code & ((1 << sign_shift) - 1)) == (1 << sign_shift) - 1) return nan;
      break;
    case NanStyle::kNegZero:
      if (code == (1 << sign_shift)) return nan;
      break;
    case NanStyle::kNone: break;
  }
  double mag = e == 0 ? std::ldexp(static_cast<double>(m), 1 - f.bias - f.man_bits)
                      : std::ldexp(static_cast<double>((1 << f.man_bits) + m), e - f.bias - f.man_bits);
  return static_cast<float>(neg ? -mag : mag);
}

uint8_t encode(const MiniFloat& f, double v, bool saturate) {
  const uint8_t sign = std::signbit(v) ? static_cast<uint8_t>(1 << (f.exp_bits + f.man_bits)) : 0;
  const uint8_t max_code = max_finite_code(f);
  const bool always_saturate = f.nan == NanStyle::kNone;
  if (std::isnan(v)) return nan_code(f);
  auto overflow = [&]() -> uint8_t {
    if (saturate || always_saturate) return sign | max_code;
    if (f.nan == NanStyle::kIeee) return sign | static_cast<uint8_t>(((1 << f.exp_bits) - 1) << f.man_bits);
    return nan_code(f);
  };
  if (std::isinf(v)) return overflow();
  const double a = std::fabs(v);
  const int emin = 1 - f.bias;
  int ex = 0;
  std::frexp(a, &ex);  // a = frac * 2^ex with frac in [0.5, 1), so floor(log2 a) = ex - 1
  // Scaling by the quantum (a power of two) is exact, so one nearbyint gives round-to-nearest-even.
  const int quantum_exp = std::max(ex - 1, emin) - f.man_bits;
  const double n = std::nearbyint(std::ldexp(a, -quantum_exp));
  const double r = std::ldexp(n, quantum_exp);
  if (r > decode(f, max_code)) return overflow();
  if (r == 0) return f.nan == NanStyle::kNegZero ? 0 : sign;
  int rex = 0;
  std::frexp(r, &rex);
  int e = 0, m = 0;
  if (rex - 1 < emin) {
    m = static_cast<int>(std::ldexp(r, -(emin - f.man_bits)));
  } else {
    e = rex - 1 + f.bias;
    m = static_cast<int>(std::ldexp(r, -(rex - 1 - f.man_bits))) - (1 << f.man_bits);
  }
  return static_cast<uint8_t>(sign | (e << f.man_bits) | m);
}

}  // namespace

bool dtype_is_small_float(DataType t) {
  switch (t) {
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kFP4E2M1: case DataType::kFP8E8M0:
      return true;
    default: return false;
  }
}

int onnx_elems_per_byte(DataType t) {
  switch (t) {
    case DataType::kINT4: case DataType::kUINT4: case DataType::kFP4E2M1: return 2;
    case DataType::kINT2: case DataType::kUINT2: return 4;
    default: return 1;
  }
}

bool dtype_is_packed_in_onnx(DataType t) { return onnx_elems_per_byte(t) > 1; }

float small_float_to_float(DataType t, uint8_t code) {
  if (t == DataType::kFP8E8M0) {
    if (code == 0xFF) return std::numeric_limits<float>::quiet_NaN();
    return std::ldexp(1.0f, static_cast<int>(code) - 127);
  }
  return decode(format_of(t), code);
}

uint8_t float_to_small_float(DataType t, double v, bool saturate) {
  if (t == DataType::kFP8E8M0) return float_to_e8m0(static_cast<float>(v), saturate, "up");
  return encode(format_of(t), v, saturate);
}

uint8_t float_to_e8m0(float v, bool saturate, const char* round_mode) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  // e8m0 has no sign: the result is the float32 exponent field, rounded by the discarded mantissa.
  uint32_t e = (bits >> 23) & 0xFF;
  if (e == 0xFF) return 0xFF;
  const uint32_t frac = bits & 0x7FFFFF;
  bool up = false;
  if (std::strcmp(round_mode, "up") == 0) {
    up = frac != 0;
  } else if (std::strcmp(round_mode, "nearest") == 0) {
    // Half-way rounds up except for zero/denormal exponents, where only a strictly larger fraction does.
    up = (frac & 0x400000) && ((frac & 0x3FFFFF) || e > 0);
  }
  if (up && !(saturate && e == 0xFE)) ++e;
  return static_cast<uint8_t>(e);
}

int8_t wrap_int_bits(int64_t v, int bits) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t u = static_cast<uint64_t>(v) & mask;
  int64_t s = (u & (uint64_t{1} << (bits - 1))) ? static_cast<int64_t>(u) - (int64_t{1} << bits) : static_cast<int64_t>(u);
  return static_cast<int8_t>(s);
}

uint8_t wrap_uint_bits(int64_t v, int bits) {
  return static_cast<uint8_t>(static_cast<uint64_t>(v) & ((uint64_t{1} << bits) - 1));
}

int subbyte_int_bits(DataType t) {
  switch (t) {
    case DataType::kINT4: case DataType::kUINT4: return 4;
    case DataType::kINT2: case DataType::kUINT2: return 2;
    default: return 0;
  }
}

void pack_subbyte(DataType t, const uint8_t* src, size_t n, uint8_t* dst) {
  const int per = onnx_elems_per_byte(t), bits = 8 / per;
  const uint8_t mask = static_cast<uint8_t>((1u << bits) - 1);
  std::memset(dst, 0, (n + per - 1) / per);
  for (size_t i = 0; i < n; ++i) dst[i / per] |= static_cast<uint8_t>((src[i] & mask) << (bits * (i % per)));
}

void unpack_subbyte(DataType t, const uint8_t* src, size_t n, uint8_t* dst) {
  const int per = onnx_elems_per_byte(t), bits = 8 / per;
  const bool is_signed = t == DataType::kINT4 || t == DataType::kINT2;
  for (size_t i = 0; i < n; ++i) {
    uint8_t v = static_cast<uint8_t>((src[i / per] >> (bits * (i % per))) & ((1u << bits) - 1));
    dst[i] = is_signed ? static_cast<uint8_t>(wrap_int_bits(v, bits)) : v;
  }
}

}  // namespace kiln
