// ONNX protobuf -> Kiln conversions for tensors (inline, typed fields, external data) and attributes.
#include "onnx/proto_convert.h"

#include "common/small_types.h"
#include "ops/op_util.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

namespace kiln::onnx_import {

bool dtype_from_onnx(int t, DataType* out) { return ops::dtype_from_onnx_code(t, out); }

const char* onnx_dtype_name(int t) {
  using TP = onnx::TensorProto;
  if (t == TP::STRING) return "string";
  if (t == TP::COMPLEX64) return "complex64";
  if (t == TP::COMPLEX128) return "complex128";
  if (t == TP::UNDEFINED) return "undefined";
  DataType d;
  if (dtype_from_onnx(t, &d)) return dtype_name(d);
  return "unknown (newer than this ONNX library)";
}

// A number from external_data (offset, length): decimal, non-negative; false otherwise (stoll would throw).
static bool parse_external_number(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  *out = std::stoll(s);
  return true;
}

// Reads the bytes of an external tensor of n elements; checks the file holds them before allocating anything.
static Result<Tensor> read_external(const onnx::TensorProto& tp, const std::string& base_dir, DataType dt,
                                    const std::vector<int64_t>& shape, int64_t n) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (auto& kv : tp.external_data()) {
    if (kv.key() == "location") {
      location = kv.value();
    } else if (kv.key() == "offset" || kv.key() == "length") {
      if (!parse_external_number(kv.value(), kv.key() == "offset" ? &offset : &length))
        return invalid_model("tensor '" + tp.name() + "': external data " + kv.key() + " '" + kv.value() +
                             "' is not a non-negative integer");
    }
  }
  if (location.empty()) return invalid_model("tensor '" + tp.name() + "' has external data without a location");
  if (location.find("..") != std::string::npos || location[0] == '/' || location.find('\0') != std::string::npos)
    return invalid_model("tensor '" + tp.name() + "': external data location '" + location +
                         "' must be a relative path inside the model's directory");
  std::string path = base_dir + "/" + location;
  std::ifstream f(path, std::ios::binary);
  if (!f) return io_error("tensor '" + tp.name() + "': cannot open external data file '" + path + "'");
  f.seekg(0, std::ios::end);
  int64_t file_size = f.tellg();
  // Packed 4-bit/2-bit types occupy fewer bytes on disk than in the (one byte per element) Tensor.
  const int per = onnx_elems_per_byte(dt);
  int64_t want = (n + per - 1) / per * static_cast<int64_t>(per == 1 ? dtype_size(dt) : 1);
  if (length >= 0 && length != want)
    return invalid_model("tensor '" + tp.name() + "': external data length " + std::to_string(length) +
                         " does not match its shape (" + std::to_string(want) + " bytes)");
  if (file_size < 0 || offset > file_size || want > file_size - offset)
    return invalid_model("tensor '" + tp.name() + "': external data of " + std::to_string(want) + " bytes at offset " +
                         std::to_string(offset) + " lies outside '" + path + "' (" + std::to_string(file_size) +
                         " bytes)");
  Tensor t(dt, shape);
  f.seekg(offset);
  std::string packed;
  if (per > 1) packed.resize(static_cast<size_t>(want));
  f.read(per > 1 ? packed.data() : static_cast<char*>(t.raw()), want);
  if (!f) return io_error("tensor '" + tp.name() + "': reading external data from '" + path + "' failed");
  if (per > 1 && n)
    unpack_subbyte(dt, reinterpret_cast<const uint8_t*>(packed.data()), static_cast<size_t>(n), t.data<uint8_t>());
  return t;
}

// Elements in the data fields of a non-external tensor, in the unit its shape counts (raw bytes / element size,
// packed sub-byte elements unpacked).
static int64_t stored_elements(const onnx::TensorProto& tp, DataType dt) {
  if (dtype_is_packed_in_onnx(dt))
    return static_cast<int64_t>(tp.has_raw_data() ? tp.raw_data().size() : tp.int32_data_size()) * onnx_elems_per_byte(dt);
  if (tp.has_raw_data()) return static_cast<int64_t>(tp.raw_data().size() / std::max<size_t>(1, dtype_size(dt)));
  switch (dt) {
    case DataType::kFLOAT: return tp.float_data_size();
    case DataType::kDOUBLE: return tp.double_data_size();
    case DataType::kINT64: return tp.int64_data_size();
    case DataType::kUINT32: case DataType::kUINT64: return tp.uint64_data_size();
    default: return tp.int32_data_size();
  }
}

Result<Tensor> tensor_from_proto(const onnx::TensorProto& tp, const std::string& base_dir) {
  DataType dt;
  if (!dtype_from_onnx(tp.data_type(), &dt))
    return unsupported("tensor '" + tp.name() + "' has unsupported type " + onnx_dtype_name(tp.data_type()));
  std::vector<int64_t> shape(tp.dims().begin(), tp.dims().end());
  // The element count comes from the file: check it for overflow and against the data present before the
  // Tensor allocates it (a few bytes of protobuf may declare terabytes).
  int64_t n = 1;
  const int64_t max_elems = std::numeric_limits<int64_t>::max() / 8;
  for (auto d : shape) {
    if (d < 0) return invalid_model("tensor '" + tp.name() + "' has a negative dimension");
    if (d && n > max_elems / d)
      return invalid_model("tensor '" + tp.name() + "' has shape " + dims_to_string(shape) +
                           ", whose element count overflows");
    n *= d;
  }
  auto count_error = [&](int64_t have) {
    return invalid_model("tensor '" + tp.name() + "' holds " + std::to_string(have) + " values but its shape " +
                         dims_to_string(shape) + " needs " + std::to_string(n));
  };
  if (tp.data_location() == onnx::TensorProto::EXTERNAL) return read_external(tp, base_dir, dt, shape, n);
  const int64_t have = stored_elements(tp, dt);
  const bool exact_raw = !tp.has_raw_data() || dtype_is_packed_in_onnx(dt) ||
                         tp.raw_data().size() % std::max<size_t>(1, dtype_size(dt)) == 0;
  if (dtype_is_packed_in_onnx(dt) ? (have + onnx_elems_per_byte(dt) - 1) / onnx_elems_per_byte(dt) !=
                                        (n + onnx_elems_per_byte(dt) - 1) / onnx_elems_per_byte(dt)
                                  : (have != n || !exact_raw))
    return count_error(have);
  Tensor t(dt, shape);
  // 4-bit and 2-bit elements arrive packed (low bits first), in raw_data bytes or in int32_data words
  // alike; Kiln stores them one per byte.
  if (dtype_is_packed_in_onnx(dt)) {
    const int per = onnx_elems_per_byte(dt);
    const size_t packed = static_cast<size_t>((n + per - 1) / per);
    std::string bytes;
    if (tp.has_raw_data()) {
      bytes = tp.raw_data();
    } else {
      for (int32_t v : tp.int32_data()) bytes.push_back(static_cast<char>(v & 0xFF));
    }
    if (bytes.size() != packed) return count_error(static_cast<int64_t>(bytes.size()) * per);
    if (n) unpack_subbyte(dt, reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<size_t>(n), t.data<uint8_t>());
    return t;
  }
  if (tp.has_raw_data()) {
    if (tp.raw_data().size() != t.nbytes()) return count_error(static_cast<int64_t>(tp.raw_data().size() / std::max<size_t>(1, dtype_size(dt))));
    if (n) std::memcpy(t.raw(), tp.raw_data().data(), t.nbytes());
    return t;
  }
  switch (dt) {
    case DataType::kFLOAT:
      if (tp.float_data_size() != n) return count_error(tp.float_data_size());
      std::copy(tp.float_data().begin(), tp.float_data().end(), t.data<float>());
      break;
    case DataType::kDOUBLE:
      if (tp.double_data_size() != n) return count_error(tp.double_data_size());
      std::copy(tp.double_data().begin(), tp.double_data().end(), t.data<double>());
      break;
    case DataType::kINT64:
      if (tp.int64_data_size() != n) return count_error(tp.int64_data_size());
      std::copy(tp.int64_data().begin(), tp.int64_data().end(), t.data<int64_t>());
      break;
    case DataType::kUINT32: case DataType::kUINT64:
      if (tp.uint64_data_size() != n) return count_error(tp.uint64_data_size());
      for (int64_t i = 0; i < n; ++i) {
        if (dt == DataType::kUINT32) t.data<uint32_t>()[i] = static_cast<uint32_t>(tp.uint64_data(i));
        else t.data<uint64_t>()[i] = tp.uint64_data(i);
      }
      break;
    default:  // int32_data holds int32, int16, int8, uint16, uint8, bool, and the bits of float16/bfloat16
      if (tp.int32_data_size() != n) return count_error(tp.int32_data_size());
      for (int64_t i = 0; i < n; ++i) {
        int32_t v = tp.int32_data(i);
        switch (dt) {
          case DataType::kINT32: t.data<int32_t>()[i] = v; break;
          case DataType::kINT16: t.data<int16_t>()[i] = static_cast<int16_t>(v); break;
          case DataType::kUINT16: case DataType::kHALF: case DataType::kBF16:
            t.data<uint16_t>()[i] = static_cast<uint16_t>(v); break;
          case DataType::kINT8: t.data<int8_t>()[i] = static_cast<int8_t>(v); break;
          case DataType::kUINT8: case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2:
          case DataType::kFP8E5M2FNUZ: case DataType::kFP8E8M0:
            t.data<uint8_t>()[i] = static_cast<uint8_t>(v); break;
          case DataType::kBOOL: t.data<bool>()[i] = v != 0; break;
          default: return internal_error("unhandled dtype in tensor_from_proto");
        }
      }
  }
  return t;
}

std::string type_proto_name(const onnx::TypeProto& t) {
  switch (t.value_case()) {
    case onnx::TypeProto::kTensorType: return onnx_dtype_name(t.tensor_type().elem_type());
    case onnx::TypeProto::kSequenceType: return "seq(" + type_proto_name(t.sequence_type().elem_type()) + ")";
    case onnx::TypeProto::kOptionalType: return "optional(" + type_proto_name(t.optional_type().elem_type()) + ")";
    case onnx::TypeProto::kMapType:
      return std::string("map(") + onnx_dtype_name(t.map_type().key_type()) + ", " +
             type_proto_name(t.map_type().value_type()) + ")";
    case onnx::TypeProto::kSparseTensorType:
      return std::string("sparse(") + onnx_dtype_name(t.sparse_tensor_type().elem_type()) + ")";
    default: return "undefined";
  }
}

Result<ValueType> value_type_from_proto(const onnx::TypeProto& t) {
  ValueType v;
  const onnx::TypeProto* tensor = &t;
  switch (t.value_case()) {
    case onnx::TypeProto::VALUE_NOT_SET: return v;
    case onnx::TypeProto::kTensorType: break;
    case onnx::TypeProto::kSequenceType:
      v.kind = ValueKind::kSEQUENCE;
      tensor = &t.sequence_type().elem_type();
      break;
    case onnx::TypeProto::kOptionalType: {
      const onnx::TypeProto& inner = t.optional_type().elem_type();
      v.kind = ValueKind::kOPTIONAL_TENSOR;
      tensor = &inner;
      if (inner.has_sequence_type()) {
        v.kind = ValueKind::kOPTIONAL_SEQUENCE;
        tensor = &inner.sequence_type().elem_type();
      }
      break;
    }
    default: break;
  }
  if (!tensor->has_tensor_type())
    return unsupported("type " + type_proto_name(t) +
                       " is not supported (Kiln holds tensors, sequences of tensors and optionals of those)");
  v.elem_type = tensor->tensor_type().elem_type();
  if (tensor->tensor_type().has_shape()) v.shape = &tensor->tensor_type().shape();
  return v;
}

Result<Attribute> attribute_from_proto(const onnx::AttributeProto& ap, const std::string& base_dir) {
  using AP = onnx::AttributeProto;
  switch (ap.type()) {
    case AP::TYPE_PROTO: {
      KILN_ASSIGN_OR_RETURN(ValueType vt, value_type_from_proto(ap.tp()));
      DataType dt;
      if (!dtype_from_onnx(vt.elem_type, &dt))
        return unsupported("type attribute '" + ap.name() + "' has element type " + onnx_dtype_name(vt.elem_type) +
                           ", which Kiln does not support");
      return Attribute(std::vector<int64_t>{static_cast<int64_t>(vt.kind), static_cast<int64_t>(dt)});
    }
    case AP::INT: return Attribute(static_cast<int64_t>(ap.i()));
    case AP::FLOAT: return Attribute(ap.f());
    case AP::STRING: return Attribute(ap.s());
    case AP::INTS: return Attribute(std::vector<int64_t>(ap.ints().begin(), ap.ints().end()));
    case AP::FLOATS: return Attribute(std::vector<float>(ap.floats().begin(), ap.floats().end()));
    case AP::STRINGS: return Attribute(std::vector<std::string>(ap.strings().begin(), ap.strings().end()));
    case AP::TENSOR: {
      KILN_ASSIGN_OR_RETURN(Tensor t, tensor_from_proto(ap.t(), base_dir));
      return Attribute(std::move(t));
    }
    case AP::UNDEFINED:
      // Old exporters leave `type` unset; infer it from the populated field.
      if (ap.has_i()) return Attribute(static_cast<int64_t>(ap.i()));
      if (ap.has_f()) return Attribute(ap.f());
      if (ap.has_s()) return Attribute(ap.s());
      if (ap.ints_size()) return Attribute(std::vector<int64_t>(ap.ints().begin(), ap.ints().end()));
      if (ap.floats_size()) return Attribute(std::vector<float>(ap.floats().begin(), ap.floats().end()));
      if (ap.has_t()) {
        KILN_ASSIGN_OR_RETURN(Tensor t, tensor_from_proto(ap.t(), base_dir));
        return Attribute(std::move(t));
      }
      return invalid_model("attribute '" + ap.name() + "' has no type and no value");
    default:
      return unsupported("attribute '" + ap.name() + "' has kind " + AP::AttributeType_Name(ap.type()) +
                         " (graphs and sparse tensors are not supported)");
  }
}

}  // namespace kiln::onnx_import
