// Tensor storage, element access and casts; half/bfloat16 conversions.
#include "common/tensor.h"

#include "common/small_types.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <sstream>

namespace kiln {

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
    // value = m * 2^(e-150) and the half subnormal unit is 2^-24, so h = m >> (126 - e), rounded to even.
    uint32_t s = 126 - e;
    uint32_t hm = m >> s;
    uint32_t rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (hm & 1))) ++hm;
    return static_cast<uint16_t>(sign | hm);
  }
  uint32_t e = ((absx >> 23) - 127 + 15), m = absx & 0x7fffff;
  uint32_t h = (e << 10) | (m >> 13);
  uint32_t rem = m & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

Half::Half(float f) : bits(float_to_half(f)) {}
Half::operator float() const { return half_to_float(bits); }
BFloat16::BFloat16(float f) : bits(float_to_bf16(f)) {}
BFloat16::operator float() const { return bf16_to_float(bits); }

// A shape whose byte size does not fit in memory is an allocation failure, not a small wrapped-around buffer that
// kernels would then write past (shapes can come from model data: ConstantOfShape, Expand, Reshape).
static int64_t checked_numel(const std::vector<int64_t>& shape) {
  constexpr int64_t kMaxElems = std::numeric_limits<int64_t>::max() / 8;  // bytes of the widest dtype fit
  int64_t n = 1;
  for (auto d : shape) {
    if (d < 0 || (d && n > kMaxElems / d)) throw std::bad_alloc();
    n *= d;
  }
  return n;
}

Tensor::Tensor(DataType dtype, std::vector<int64_t> shape)
    : dtype_(dtype), shape_(std::move(shape)), numel_(checked_numel(shape_)), defined_(true) {
  size_t bytes = nbytes();
  size_t alloc = ((bytes + 63) / 64) * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, alloc);
  storage_ = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
  data_ = p;
}

Tensor Tensor::wrap(DataType dtype, std::vector<int64_t> shape, void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = checked_numel(t.shape_);
  t.defined_ = true;
  t.data_ = data;
  return t;
}

Tensor Tensor::sequence(DataType elem, std::vector<Tensor> items) {
  Tensor t;
  t.dtype_ = elem;
  t.defined_ = true;
  t.kind_ = ValueKind::kSEQUENCE;
  t.items_ = std::make_shared<const std::vector<Tensor>>(std::move(items));
  return t;
}

Tensor Tensor::optional(ValueKind kind, DataType elem, Tensor value) {
  Tensor t;
  t.dtype_ = elem;
  t.defined_ = true;
  t.kind_ = kind;
  std::vector<Tensor> items;
  if (value.defined()) items.push_back(std::move(value));
  t.items_ = std::make_shared<const std::vector<Tensor>>(std::move(items));
  return t;
}

const std::vector<Tensor>& Tensor::items() const {
  static const std::vector<Tensor> kNone;
  return items_ ? *items_ : kNone;
}

Tensor Tensor::reshaped(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.numel_ = checked_numel(t.shape_);
  return t;
}

Tensor Tensor::clone() const {
  if (!is_tensor()) return *this;  // the items are immutable
  Tensor t(dtype_, shape_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

template <typename F>
static auto visit_elem(const Tensor& t, int64_t i, F f) {
  const void* p = t.raw();
  switch (t.dtype()) {
    case DataType::kFLOAT: return f(static_cast<const float*>(p)[i]);
    case DataType::kDOUBLE: return f(static_cast<const double*>(p)[i]);
    case DataType::kHALF: return f(static_cast<double>(half_to_float(static_cast<const uint16_t*>(p)[i])));
    case DataType::kBF16: return f(static_cast<double>(bf16_to_float(static_cast<const uint16_t*>(p)[i])));
    case DataType::kINT8: return f(static_cast<const int8_t*>(p)[i]);
    case DataType::kUINT8: return f(static_cast<const uint8_t*>(p)[i]);
    case DataType::kINT16: return f(static_cast<const int16_t*>(p)[i]);
    case DataType::kUINT16: return f(static_cast<const uint16_t*>(p)[i]);
    case DataType::kINT32: return f(static_cast<const int32_t*>(p)[i]);
    case DataType::kUINT32: return f(static_cast<const uint32_t*>(p)[i]);
    case DataType::kINT64: return f(static_cast<const int64_t*>(p)[i]);
    case DataType::kUINT64: return f(static_cast<const uint64_t*>(p)[i]);
    case DataType::kBOOL: return f(static_cast<const bool*>(p)[i]);
    case DataType::kINT4: case DataType::kINT2: return f(static_cast<const int8_t*>(p)[i]);
    case DataType::kUINT4: case DataType::kUINT2: return f(static_cast<const uint8_t*>(p)[i]);
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kFP4E2M1: case DataType::kFP8E8M0:
      return f(static_cast<double>(small_float_to_float(t.dtype(), static_cast<const uint8_t*>(p)[i])));
  }
  return f(0);
}

double Tensor::get_f64(int64_t i) const {
  return visit_elem(*this, i, [](auto v) { return static_cast<double>(v); });
}
int64_t Tensor::get_i64(int64_t i) const {
  return visit_elem(*this, i, [](auto v) { return static_cast<int64_t>(v); });
}
std::vector<int64_t> Tensor::to_i64_vector() const {
  std::vector<int64_t> v(numel_);
  for (int64_t i = 0; i < numel_; ++i) v[i] = get_i64(i);
  return v;
}
std::vector<double> Tensor::to_f64_vector() const {
  std::vector<double> v(numel_);
  for (int64_t i = 0; i < numel_; ++i) v[i] = get_f64(i);
  return v;
}

template <typename To>
static void cast_into(const Tensor& src, To* dst) {
  const int64_t n = src.numel();
  switch (src.dtype()) {
    case DataType::kFLOAT: { auto s = src.data<float>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(s[i]); break; }
    case DataType::kDOUBLE: { auto s = src.data<double>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(s[i]); break; }
    case DataType::kINT64: { auto s = src.data<int64_t>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(s[i]); break; }
    case DataType::kINT32: { auto s = src.data<int32_t>(); for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<To>(s[i]); break; }
    default:
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_integral_v<To>) {
          if (dtype_is_float(src.dtype())) dst[i] = static_cast<To>(src.get_f64(i));
          else dst[i] = static_cast<To>(src.get_i64(i));
        } else {
          dst[i] = static_cast<To>(src.get_f64(i));
        }
      }
  }
}

Tensor Tensor::cast(DataType to) const { return cast(to, true); }

Tensor Tensor::cast(DataType to, bool saturate) const {
  Tensor out(to, shape_);
  const int64_t n = numel_;
  switch (to) {
    case DataType::kFLOAT: cast_into(*this, out.data<float>()); break;
    case DataType::kDOUBLE: cast_into(*this, out.data<double>()); break;
    case DataType::kHALF: for (int64_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = float_to_half(static_cast<float>(get_f64(i))); break;
    case DataType::kBF16: for (int64_t i = 0; i < n; ++i) out.data<uint16_t>()[i] = float_to_bf16(static_cast<float>(get_f64(i))); break;
    case DataType::kINT8: cast_into(*this, out.data<int8_t>()); break;
    case DataType::kUINT8: cast_into(*this, out.data<uint8_t>()); break;
    case DataType::kINT16: cast_into(*this, out.data<int16_t>()); break;
    case DataType::kUINT16: cast_into(*this, out.data<uint16_t>()); break;
    case DataType::kINT32: cast_into(*this, out.data<int32_t>()); break;
    case DataType::kUINT32: cast_into(*this, out.data<uint32_t>()); break;
    case DataType::kINT64: cast_into(*this, out.data<int64_t>()); break;
    case DataType::kUINT64: cast_into(*this, out.data<uint64_t>()); break;
    case DataType::kBOOL: for (int64_t i = 0; i < n; ++i) out.data<bool>()[i] = get_f64(i) != 0.0; break;
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kFP4E2M1: case DataType::kFP8E8M0:
      for (int64_t i = 0; i < n; ++i) out.data<uint8_t>()[i] = float_to_small_float(to, get_f64(i), saturate);
      break;
    case DataType::kINT4: case DataType::kINT2: case DataType::kUINT4: case DataType::kUINT2: {
      // Out-of-range values wrap, as a C cast to a narrower integer (and the ONNX reference) does.
      const int bits = subbyte_int_bits(to);
      const bool is_signed = to == DataType::kINT4 || to == DataType::kINT2;
      const bool from_float = dtype_is_float(dtype_);
      for (int64_t i = 0; i < n; ++i) {
        int64_t v = from_float ? static_cast<int64_t>(get_f64(i)) : get_i64(i);
        out.data<uint8_t>()[i] = is_signed ? static_cast<uint8_t>(wrap_int_bits(v, bits)) : wrap_uint_bits(v, bits);
      }
      break;
    }
  }
  return out;
}

std::string Tensor::debug_string(int max_elems) const {
  std::ostringstream os;
  if (!is_tensor()) {
    os << value_kind_name(kind_) << "<" << dtype_name(dtype_) << ">(";
    for (size_t i = 0; i < items().size(); ++i) os << (i ? ", " : "") << items()[i].debug_string(max_elems);
    os << ")";
    return os.str();
  }
  os << dtype_name(dtype_) << "[";
  for (size_t i = 0; i < shape_.size(); ++i) os << (i ? "," : "") << shape_[i];
  os << "]{";
  for (int64_t i = 0; i < numel_ && i < max_elems; ++i) os << (i ? ", " : "") << get_f64(i);
  if (numel_ > max_elems) os << ", ...";
  os << "}";
  return os.str();
}

}  // namespace kiln
