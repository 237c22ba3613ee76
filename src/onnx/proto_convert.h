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
// Attribute conversion; graph, sparse-tensor and type-proto attributes are rejected with a clear message.
Result<Attribute> attribute_from_proto(const onnx::AttributeProto& ap, const std::string& base_dir);

}  // namespace kiln::onnx_import
