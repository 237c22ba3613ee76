// Tensor: a dense, C-order host buffer with a data type and a concrete shape (weights, CPU activations).
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln {

// IEEE half and bfloat16 storage types with conversions (arithmetic happens in float).
struct Half {
  uint16_t bits = 0;
  Half() = default;
  explicit Half(float f);
  operator float() const;  // NOLINT(google-explicit-constructor)
};
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  explicit BFloat16(float f);
  operator float() const;  // NOLINT(google-explicit-constructor)
};
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

// Maps a C++ element type to its DataType.
template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DataType value = DataType::kFLOAT; };
template <> struct DTypeOf<double> { static constexpr DataType value = DataType::kDOUBLE; };
template <> struct DTypeOf<Half> { static constexpr DataType value = DataType::kHALF; };
template <> struct DTypeOf<BFloat16> { static constexpr DataType value = DataType::kBF16; };
template <> struct DTypeOf<int8_t> { static constexpr DataType value = DataType::kINT8; };
template <> struct DTypeOf<uint8_t> { static constexpr DataType value = DataType::kUINT8; };
template <> struct DTypeOf<int16_t> { static constexpr DataType value = DataType::kINT16; };
template <> struct DTypeOf<uint16_t> { static constexpr DataType value = DataType::kUINT16; };
template <> struct DTypeOf<int32_t> { static constexpr DataType value = DataType::kINT32; };
template <> struct DTypeOf<uint32_t> { static constexpr DataType value = DataType::kUINT32; };
template <> struct DTypeOf<int64_t> { static constexpr DataType value = DataType::kINT64; };
template <> struct DTypeOf<uint64_t> { static constexpr DataType value = DataType::kUINT64; };
template <> struct DTypeOf<bool> { static constexpr DataType value = DataType::kBOOL; };

class Tensor {
 public:
  Tensor() = default;
  // Allocates (64-byte aligned, zero-filled) storage for shape; every dim must be >= 0.
  Tensor(DataType dtype, std::vector<int64_t> shape);
  // Wraps caller memory without owning it (the caller keeps it alive).
  static Tensor wrap(DataType dtype, std::vector<int64_t> shape, void* data);
  template <typename T>
  static Tensor from_vector(std::vector<int64_t> shape, const std::vector<T>& v) {
    Tensor t(DTypeOf<T>::value, std::move(shape));
    if constexpr (std::is_same_v<T, bool>) {
      for (size_t i = 0; i < v.size(); ++i) t.data<bool>()[i] = v[i];
    } else {
      if (t.nbytes()) std::memcpy(t.raw(), v.data(), t.nbytes());  // an empty vector's data() may be null
    }
    return t;
  }
  static Tensor scalar_i64(int64_t v) { return from_vector<int64_t>({}, {v}); }

  // ONNX sequence and optional values ride in a Tensor, with kind() saying which, so that executor slots, op
  // contexts and subgraph runs carry them unchanged. Such a Tensor has no data of its own (rank 0, numel 0);
  // dtype() is the element type and items() are the elements: a sequence's tensors, an optional's one value
  // (none when it is empty). Items are shared and never modified, so copying a sequence is cheap.
  static Tensor sequence(DataType elem, std::vector<Tensor> items);
  // kind: kOPTIONAL_TENSOR or kOPTIONAL_SEQUENCE; an undefined `value` makes an empty optional.
  static Tensor optional(ValueKind kind, DataType elem, Tensor value);
  ValueKind kind() const { return kind_; }
  bool is_tensor() const { return kind_ == ValueKind::kTENSOR; }
  const std::vector<Tensor>& items() const;

  DataType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool empty() const { return data_ == nullptr && numel_ == 0 && shape_.empty() && !defined_; }
  bool defined() const { return defined_; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T> T* data() { return static_cast<T*>(data_); }
  template <typename T> const T* data() const { return static_cast<const T*>(data_); }

  // Same bytes, new shape (numel must match); shares storage.
  Tensor reshaped(std::vector<int64_t> shape) const;
  // Deep copy.
  Tensor clone() const;
  // Element i converted to double / int64 whatever the dtype (for shape tensors, attributes, tests).
  double get_f64(int64_t i) const;
  int64_t get_i64(int64_t i) const;
  std::vector<int64_t> to_i64_vector() const;
  std::vector<double> to_f64_vector() const;
  // Converts to another data type (float <-> int casts truncate toward zero, as ONNX Cast does).
  Tensor cast(DataType to) const;
  // saturate only matters for float8 targets: false lets overflow become inf/NaN (ONNX Cast saturate=0).
  Tensor cast(DataType to, bool saturate) const;

  std::string debug_string(int max_elems = 8) const;

 private:
  DataType dtype_ = DataType::kFLOAT;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  bool defined_ = false;
  std::shared_ptr<uint8_t> storage_;  // null when wrapping caller memory
  void* data_ = nullptr;
  ValueKind kind_ = ValueKind::kTENSOR;
  std::shared_ptr<const std::vector<Tensor>> items_;  // sequences and optionals only
};

// "a tensor", "a sequence", "an optional tensor", "an optional sequence": for messages.
inline std::string a_kind(ValueKind k) {
  return (k == ValueKind::kOPTIONAL_TENSOR || k == ValueKind::kOPTIONAL_SEQUENCE ? "an " : "a ") +
         std::string(value_kind_name(k));
}

// Calls f(T{}) with T the C++ type of dtype; returns unsupported for types not in the list.
#define KILN_DISPATCH_CASE(DT, T, ...) \
  case DT: {                           \
    using scalar_t = T;                \
    __VA_ARGS__;                       \
    break;                             \
  }

}  // namespace kiln
