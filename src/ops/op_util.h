// Helpers shared by operator files: axes, broadcasting (symbolic and concrete), strides, dtype dispatch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops/op.h"

namespace kiln::ops {

// Normalizes a possibly negative axis into [0, rank); error names the op and the valid range.
// Most dims a tensor may have. A rank read from data (the length of a shape input) above it is an error: no
// real model comes near it, and a declared length of 2^59 would otherwise make inference allocate that many dims.
inline constexpr int64_t kMaxRank = 1024;

Result<int64_t> normalize_axis(int64_t axis, int64_t rank, const std::string& what = "axis");

// Numpy-style multidirectional broadcasting. Symbolic version: a dim broadcasts with 1, equal symbols agree, a
// static dim > 1 wins over symbols (which may be 1 there: nothing is unified). Two different symbols: legal only if
// equal or one is 1, and exporters mean equal, so with `ctx` they are unified (InferContext::require_equal) and the
// first names the result - except two symbols the user declared apart on graph inputs, which either may be 1: the
// result is then a fresh symbol. Without `ctx` (passes, run-time checks) the first operand's symbol names it.
Result<Shape> broadcast_shapes(const std::vector<Shape>& shapes, InferContext* ctx = nullptr);
Result<std::vector<int64_t>> broadcast_dims(const std::vector<std::vector<int64_t>>& shapes);

// C-order strides of a shape, in elements.
std::vector<int64_t> strides_of(const std::vector<int64_t>& shape);
// Strides of `in` viewed as broadcast to `out` (0 on broadcast axes); in is right-aligned to out.
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in, const std::vector<int64_t>& out);

int64_t product(const std::vector<int64_t>& v, size_t begin = 0, size_t end = SIZE_MAX);

// Reads a 0-D/1-D integer tensor (int32/int64) into int64s.
Result<std::vector<int64_t>> tensor_to_ints(const Tensor& t);

// ONNX TensorProto.DataType numbers (they appear raw in attributes such as Cast's `to`) -> DataType;
// false for types Kiln does not hold (string, complex, float6).
bool dtype_from_onnx_code(int64_t code, DataType* out);
// The TensorProto type code of dt (for Cast's `to`); 0 (UNDEFINED) for a type ONNX lacks.
int64_t onnx_code_of(DataType dt);

// Output info helpers for inference.
inline TensorInfo make_info(DataType dt, Shape s) { TensorInfo t; t.dtype = dt; t.shape = std::move(s); return t; }
// Known values of an integer input (from a constant or from propagated `value`), if any.
std::optional<std::vector<Dim>> known_values(const TensorInfo& t);
// Same, but only when every value is static.
std::optional<std::vector<int64_t>> known_static_values(const TensorInfo& t);

// Fills every output of ctx by unary "same shape and type as input 0".
Status infer_same_as_input0(InferContext& ctx);

// Common dtype lists for schemas.
const std::vector<DataType>& float_types();      // f32, f16, bf16, f64
const std::vector<DataType>& numeric_types();    // floats + all ints
const std::vector<DataType>& all_types();        // numeric + bool

}  // namespace kiln::ops

// Dispatch on a DataType, binding `scalar_t`. Unlisted types return an Unsupported status from the
// enclosing function naming `opname`.
#define KILN_DISPATCH_FLOAT_TYPES(dtype, opname, ...)                                              \
  switch (dtype) {                                                                                 \
    case ::kiln::DataType::kFLOAT: { using scalar_t = float; __VA_ARGS__; } break;                 \
    case ::kiln::DataType::kDOUBLE: { using scalar_t = double; __VA_ARGS__; } break;               \
    case ::kiln::DataType::kHALF: { using scalar_t = ::kiln::Half; __VA_ARGS__; } break;           \
    case ::kiln::DataType::kBF16: { using scalar_t = ::kiln::BFloat16; __VA_ARGS__; } break;       \
    default:                                                                                       \
      return ::kiln::unsupported(std::string(opname) + ": data type " + ::kiln::dtype_name(dtype) + \
                                 " is not supported");                                             \
  }

#define KILN_DISPATCH_INT_CASES(...)                                                               \
  case ::kiln::DataType::kINT8: { using scalar_t = int8_t; __VA_ARGS__; } break;                   \
  case ::kiln::DataType::kUINT8: { using scalar_t = uint8_t; __VA_ARGS__; } break;                 \
  case ::kiln::DataType::kINT16: { using scalar_t = int16_t; __VA_ARGS__; } break;                 \
  case ::kiln::DataType::kUINT16: { using scalar_t = uint16_t; __VA_ARGS__; } break;               \
  case ::kiln::DataType::kINT32: { using scalar_t = int32_t; __VA_ARGS__; } break;                 \
  case ::kiln::DataType::kUINT32: { using scalar_t = uint32_t; __VA_ARGS__; } break;               \
  case ::kiln::DataType::kINT64: { using scalar_t = int64_t; __VA_ARGS__; } break;                 \
  case ::kiln::DataType::kUINT64: { using scalar_t = uint64_t; __VA_ARGS__; } break;

#define KILN_DISPATCH_NUMERIC_TYPES(dtype, opname, ...)                                            \
  switch (dtype) {                                                                                 \
    case ::kiln::DataType::kFLOAT: { using scalar_t = float; __VA_ARGS__; } break;                 \
    case ::kiln::DataType::kDOUBLE: { using scalar_t = double; __VA_ARGS__; } break;               \
    case ::kiln::DataType::kHALF: { using scalar_t = ::kiln::Half; __VA_ARGS__; } break;           \
    case ::kiln::DataType::kBF16: { using scalar_t = ::kiln::BFloat16; __VA_ARGS__; } break;       \
    KILN_DISPATCH_INT_CASES(__VA_ARGS__)                                                           \
    default:                                                                                       \
      return ::kiln::unsupported(std::string(opname) + ": data type " + ::kiln::dtype_name(dtype) + \
                                 " is not supported");                                             \
  }

// Every type, bool included: for data-movement ops that only copy elements.
#define KILN_DISPATCH_ALL_TYPES(dtype, opname, ...)                                                \
  switch (dtype) {                                                                                 \
    case ::kiln::DataType::kFLOAT: { using scalar_t = float; __VA_ARGS__; } break;                 \
    case ::kiln::DataType::kDOUBLE: { using scalar_t = double; __VA_ARGS__; } break;               \
    case ::kiln::DataType::kHALF: { using scalar_t = ::kiln::Half; __VA_ARGS__; } break;           \
    case ::kiln::DataType::kBF16: { using scalar_t = ::kiln::BFloat16; __VA_ARGS__; } break;       \
    case ::kiln::DataType::kBOOL: { using scalar_t = bool; __VA_ARGS__; } break;                   \
    KILN_DISPATCH_INT_CASES(__VA_ARGS__)                                                           \
    default:                                                                                       \
      return ::kiln::unsupported(std::string(opname) + ": data type " + ::kiln::dtype_name(dtype) + \
                                 " is not supported");                                             \
  }
