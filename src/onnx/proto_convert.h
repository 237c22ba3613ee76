// Conversions from ONNX protobuf messages (TensorProto, AttributeProto, TypeProto) to Kiln's own types.
#pragma once

#include <string>

#include "common/attribute.h"
#include "common/tensor.h"
#include "onnx/onnx_pb.h"

namespace kiln::onnx_import {

// ONNX TensorProto.DataType -> DataType; false for types Kiln does not hold (string, complex, float8...).
bool dtype_from_onnx(int onnx_type, DataType* out);
const char* onnx_dtype_name(int onnx_type);

// Reads a tensor from raw_data, the typed repeated fields, or external data resolved against base_dir.
Result<Tensor> tensor_from_proto(const onnx::TensorProto& tp, const std::string& base_dir);
// A value's ONNX type as Kiln holds it: a tensor, a sequence of tensors, or an optional of either.
struct ValueType {
  ValueKind kind = ValueKind::kTENSOR;
  int elem_type = 0;                              // ONNX TensorProto.DataType of the tensors (may be UNDEFINED)
  const onnx::TensorShapeProto* shape = nullptr;  // the tensors' declared shape; null when there is none
};
// Fails with an Unsupported status naming the type ("map(int64, float32)", "seq(seq(float32))", ...) for
// anything else; an unset TypeProto is an undefined-element tensor without shape.
Result<ValueType> value_type_from_proto(const onnx::TypeProto& t);
// Readable ONNX type: "float32", "seq(float32)", "optional(seq(int64))", "map(string, float32)", "sparse(float32)".
std::string type_proto_name(const onnx::TypeProto& t);

// Attribute conversion; graph and sparse-tensor attributes are rejected with a clear message. A type proto (the
// `type` of Optional) becomes ints {ValueKind, DataType}, the two things an operator can use of it.
Result<Attribute> attribute_from_proto(const onnx::AttributeProto& ap, const std::string& base_dir);

}  // namespace kiln::onnx_import
