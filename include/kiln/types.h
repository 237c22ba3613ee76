// Public value types shared by the builder and runtime APIs: data types, dimensions, tensor I/O modes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

// Numbering is part of the engine file format: append only.
enum class DataType : uint8_t {
  kFLOAT = 0,
  kHALF = 1,
  kBF16 = 2,
  kINT8 = 3,
  kUINT8 = 4,
  kINT32 = 5,
  kINT64 = 6,
  kBOOL = 7,
  kDOUBLE = 8,   // accepted at import; the CPU backend computes it natively
  kINT16 = 9,
  kUINT16 = 10,
  kUINT32 = 11,
  kUINT64 = 12,
  // Sub-16-bit types take one byte per element in Kiln tensors (see src/common/small_types.h);
  // only ONNX serialization packs the 4-bit and 2-bit ones.
  kFP8E4M3FN = 13,
  kFP8E4M3FNUZ = 14,
  kFP8E5M2 = 15,
  kFP8E5M2FNUZ = 16,
  kUINT4 = 17,
  kINT4 = 18,
  kFP4E2M1 = 19,
  kFP8E8M0 = 20,
  kUINT2 = 21,
  kINT2 = 22,
};
constexpr int kNumDataTypes = 23;

size_t dtype_size(DataType t);
const char* dtype_name(DataType t);  // "float32", "float16", ...
bool dtype_is_float(DataType t);
bool dtype_is_integer(DataType t);
// Parses the names dtype_name() prints (and the usual aliases fp32/fp16/bf16/int64...); false when unknown.
bool parse_dtype(const std::string& s, DataType* out);

// Dimensions of a tensor; -1 marks a dimension that is only known at run time.
using Dims = std::vector<int64_t>;
std::string dims_to_string(const Dims& d);  // "1x3x224x224", "-1x3x224x224" for dynamic
int64_t volume(const Dims& d);               // product; -1 if any dim is dynamic

enum class TensorIOMode : uint8_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };

// What an I/O tensor or graph value holds: a tensor, or one of ONNX's sequence and optional types (a sequence of
// tensors, an optional tensor, an optional sequence). For the latter, the DataType is that of the tensors inside.
// Numbering is part of the engine file format: append only.
enum class ValueKind : uint8_t { kTENSOR = 0, kSEQUENCE = 1, kOPTIONAL_TENSOR = 2, kOPTIONAL_SEQUENCE = 3 };
constexpr int kNumValueKinds = 4;
const char* value_kind_name(ValueKind k);  // "tensor", "sequence", "optional tensor", "optional sequence"


enum class Backend : uint8_t { kCPU = 0, kCUDA = 1 };
const char* backend_name(Backend b);

}  // namespace kiln
