// Status helpers and the data-type / logger basics of the public API.
#include "kiln/status.h"

#include <cstdio>

#include "kiln/logger.h"
#include "kiln/types.h"

namespace kiln {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "Ok";
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kInvalidModel: return "InvalidModel";
    case ErrorCode::kUnsupported: return "Unsupported";
    case ErrorCode::kInvalidEngine: return "InvalidEngine";
    case ErrorCode::kIoError: return "IoError";
    case ErrorCode::kOutOfMemory: return "OutOfMemory";
    case ErrorCode::kInternal: return "Internal";
  }
  return "Unknown";
}

std::string Status::to_string() const {
  if (ok()) return "Ok";
  return std::string(error_code_name(code_)) + ": " + message_;
}

Status Status::with_context(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

size_t dtype_size(DataType t) {
  switch (t) {
    case DataType::kFLOAT: case DataType::kINT32: case DataType::kUINT32: return 4;
    case DataType::kHALF: case DataType::kBF16: case DataType::kINT16: case DataType::kUINT16: return 2;
    case DataType::kINT8: case DataType::kUINT8: case DataType::kBOOL: return 1;
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kUINT4: case DataType::kINT4: case DataType::kFP4E2M1: case DataType::kFP8E8M0:
    case DataType::kUINT2: case DataType::kINT2:
      return 1;
    case DataType::kINT64: case DataType::kUINT64: case DataType::kDOUBLE: return 8;
  }
  return 0;
}

const char* dtype_name(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT8: return "int8";
    case DataType::kUINT8: return "uint8";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    case DataType::kBOOL: return "bool";
    case DataType::kDOUBLE: return "float64";
    case DataType::kINT16: return "int16";
    case DataType::kUINT16: return "uint16";
    case DataType::kUINT32: return "uint32";
    case DataType::kUINT64: return "uint64";
    case DataType::kFP8E4M3FN: return "float8e4m3fn";
    case DataType::kFP8E4M3FNUZ: return "float8e4m3fnuz";
    case DataType::kFP8E5M2: return "float8e5m2";
    case DataType::kFP8E5M2FNUZ: return "float8e5m2fnuz";
    case DataType::kUINT4: return "uint4";
    case DataType::kINT4: return "int4";
    case DataType::kFP4E2M1: return "float4e2m1";
    case DataType::kFP8E8M0: return "float8e8m0";
    case DataType::kUINT2: return "uint2";
    case DataType::kINT2: return "int2";
  }
  return "invalid";
}

bool dtype_is_float(DataType t) {
  switch (t) {
    case DataType::kFLOAT: case DataType::kHALF: case DataType::kBF16: case DataType::kDOUBLE:
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kFP4E2M1: case DataType::kFP8E8M0:
      return true;
    default: return false;
  }
}
bool dtype_is_integer(DataType t) { return !dtype_is_float(t) && t != DataType::kBOOL; }

bool parse_dtype(const std::string& s, DataType* out) {
  static const std::pair<const char*, DataType> kNames[] = {
      {"float32", DataType::kFLOAT}, {"fp32", DataType::kFLOAT},   {"float", DataType::kFLOAT},
      {"float16", DataType::kHALF},  {"fp16", DataType::kHALF},    {"half", DataType::kHALF},
      {"bfloat16", DataType::kBF16}, {"bf16", DataType::kBF16},    {"int8", DataType::kINT8},
      {"uint8", DataType::kUINT8},   {"int32", DataType::kINT32},  {"int64", DataType::kINT64},
      {"bool", DataType::kBOOL},     {"float64", DataType::kDOUBLE}, {"fp64", DataType::kDOUBLE},
      {"double", DataType::kDOUBLE}, {"int16", DataType::kINT16},  {"uint16", DataType::kUINT16},
      {"uint32", DataType::kUINT32}, {"uint64", DataType::kUINT64},
      {"float8e4m3fn", DataType::kFP8E4M3FN}, {"fp8", DataType::kFP8E4M3FN}, {"float8e4m3fnuz", DataType::kFP8E4M3FNUZ},
      {"float8e5m2", DataType::kFP8E5M2}, {"float8e5m2fnuz", DataType::kFP8E5M2FNUZ}, {"uint4", DataType::kUINT4},
      {"int4", DataType::kINT4}, {"float4e2m1", DataType::kFP4E2M1}, {"fp4", DataType::kFP4E2M1},
      {"float8e8m0", DataType::kFP8E8M0}, {"uint2", DataType::kUINT2}, {"int2", DataType::kINT2}};
  for (auto& [n, t] : kNames)
    if (s == n) { *out = t; return true; }
  return false;
}

std::string dims_to_string(const Dims& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? "x" : "") + std::to_string(d[i]);
  return s;
}

int64_t volume(const Dims& d) {
  int64_t v = 1;
  for (auto x : d) {
    if (x < 0) return -1;
    v *= x;
  }
  return v;
}

const char* backend_name(Backend b) { return b == Backend::kCPU ? "cpu" : "cuda"; }

const char* value_kind_name(ValueKind k) {
  switch (k) {
    case ValueKind::kTENSOR: return "tensor";
    case ValueKind::kSEQUENCE: return "sequence";
    case ValueKind::kOPTIONAL_TENSOR: return "optional tensor";
    case ValueKind::kOPTIONAL_SEQUENCE: return "optional sequence";
  }
  return "unknown";
}

void StderrLogger::log(Severity severity, const char* msg) noexcept {
  if (static_cast<int>(severity) > static_cast<int>(min_)) return;
  static const char* kTags[] = {"[F]", "[E]", "[W]", "[I]", "[V]"};
  std::fprintf(stderr, "%s %s\n", kTags[static_cast<int>(severity)], msg);
}

ILogger& default_logger() {
  static StderrLogger logger;
  return logger;
}

}  // namespace kiln
