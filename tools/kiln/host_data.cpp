// Seeded random inputs, raw input files and FP16/BF16 conversion for the kiln CLI.
#include "host_data.h"

#include "common/small_types.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

namespace kiln::cli {
namespace {

template <typename T>
void store(HostTensor& t, size_t i, T v) {
  std::memcpy(t.data.data() + i * sizeof(T), &v, sizeof(T));
}

}  // namespace

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {
      // Subnormal half: renormalize into a float exponent.
      int shift = 0;
      while ((mantissa & 0x400u) == 0) mantissa <<= 1, ++shift;
      mantissa &= 0x3ffu;
      bits = sign | (static_cast<uint32_t>(127 - 15 - shift + 1) << 23) | (mantissa << 13);
    }
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t float_to_half(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past the largest half
  if (abs < 0x38800000u) {                        // below the smallest normal half
    if (abs < 0x33000000u) return sign;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t half = ((abs >> 13) - (112u << 10));
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return sign | static_cast<uint16_t>(half);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t float_to_bf16(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

void allocate(HostTensor& t) {
  const int64_t n = volume(t.dims);
  t.data.assign(static_cast<size_t>(std::max<int64_t>(n, 0)) * dtype_size(t.dtype), 0);
}

void fill_random(HostTensor& t, uint32_t seed) {
  allocate(t);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> real(-1.f, 1.f);
  std::uniform_int_distribution<int> small(0, 3);
  const size_t n = t.data.size() / dtype_size(t.dtype);
  for (size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DataType::kFLOAT:
        store(t, i, real(rng));
        break;
      case DataType::kDOUBLE:
        store(t, i, static_cast<double>(real(rng)));
        break;
      case DataType::kHALF:
        store(t, i, float_to_half(real(rng)));
        break;
      case DataType::kBF16:
        store(t, i, float_to_bf16(real(rng)));
        break;
      case DataType::kBOOL:
        store(t, i, static_cast<uint8_t>(small(rng) & 1));
        break;
      case DataType::kINT8:
        store(t, i, static_cast<int8_t>(small(rng)));
        break;
      case DataType::kUINT8:
        store(t, i, static_cast<uint8_t>(small(rng)));
        break;
      case DataType::kINT16:
        store(t, i, static_cast<int16_t>(small(rng)));
        break;
      case DataType::kUINT16:
        store(t, i, static_cast<uint16_t>(small(rng)));
        break;
      case DataType::kINT32:
        store(t, i, static_cast<int32_t>(small(rng)));
        break;
      case DataType::kUINT32:
        store(t, i, static_cast<uint32_t>(small(rng)));
        break;
      case DataType::kINT64:
        store(t, i, static_cast<int64_t>(small(rng)));
        break;
      case DataType::kUINT64:
        store(t, i, static_cast<uint64_t>(small(rng)));
        break;
      case DataType::kINT4: case DataType::kINT2: case DataType::kUINT4: case DataType::kUINT2:
        store(t, i, static_cast<uint8_t>(small(rng) & 1));  // 0/1 fit every sub-byte integer type
        break;
      case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
      case DataType::kFP4E2M1: case DataType::kFP8E8M0:
        store(t, i, float_to_small_float(t.dtype, real(rng)));
        break;
    }
  }
}

Status load_raw(const std::string& path, const std::string& input_name, HostTensor& t) {
  allocate(t);
  std::error_code ec;
  const auto file_size = std::filesystem::file_size(path, ec);
  if (ec) return io_error("--loadInputs: cannot read '" + path + "' for input '" + input_name + "': " + ec.message());
  if (file_size != t.data.size()) {
    const int64_t elements = static_cast<int64_t>(t.data.size() / dtype_size(t.dtype));
    return invalid_argument("--loadInputs: '" + path + "' for input '" + input_name + "' has " +
                            std::to_string(file_size) + " bytes, but shape " + dims_to_string(t.dims) + " of " +
                            dtype_name(t.dtype) + " needs " + std::to_string(t.data.size()) + " bytes (" +
                            std::to_string(elements) + " elements x " + std::to_string(dtype_size(t.dtype)) +
                            " bytes)");
  }
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  if (!in) return io_error("--loadInputs: failed reading '" + path + "'");
  return Status::Ok();
}

Result<HostTensor> convert_float(const HostTensor& t, DataType to) {
  auto is_float = [](DataType d) { return d == DataType::kFLOAT || d == DataType::kHALF || d == DataType::kBF16; };
  if (t.dtype == to) return t;
  if (!is_float(t.dtype) || !is_float(to) || t.kind != ValueKind::kTENSOR)
    return unsupported(std::string("cannot convert ") + dtype_name(t.dtype) + " data to " + dtype_name(to));
  HostTensor r;
  r.dtype = to;
  r.dims = t.dims;
  allocate(r);
  const size_t n = t.data.size() / dtype_size(t.dtype);
  for (size_t i = 0; i < n; ++i) {
    float v = 0;
    if (t.dtype == DataType::kFLOAT) {
      std::memcpy(&v, t.data.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t.data.data() + 2 * i, 2);
      v = t.dtype == DataType::kHALF ? half_to_float(h) : bf16_to_float(h);
    }
    if (to == DataType::kFLOAT) {
      std::memcpy(r.data.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = to == DataType::kHALF ? float_to_half(v) : float_to_bf16(v);
      std::memcpy(r.data.data() + 2 * i, &h, 2);
    }
  }
  return r;
}

}  // namespace kiln::cli
