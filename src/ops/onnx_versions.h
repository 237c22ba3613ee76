// Lookups in the table of ai.onnx operator versions generated from the newest onnx release (onnx_op_versions.inc).
#pragma once

#include <span>
#include <string>

namespace kiln::ops {

// Newest ai.onnx opset of ONNX 1.12, the C++ library Kiln links: operators are assumed to implement what it
// defines unless their schema says otherwise (OpSchema::max_version).
constexpr int kOnnxLibraryOpset = 17;

// The since_versions of an ai.onnx operator, oldest first; empty when the table does not know the operator.
std::span<const int> onnx_op_versions(const std::string& op_type);
// Newest ai.onnx opset the table covers, and the onnx release it was generated from.
int onnx_table_newest_opset();
const char* onnx_table_release();
// The version of an operator in effect at `opset`: its largest since_version <= opset; 0 when the operator
// does not exist yet at that opset (or is unknown).
int onnx_op_version_at(const std::string& op_type, int opset);
// max_version for an ai.onnx schema that leaves it 0: the version verified against newer node tests where one is
// listed (onnx_versions.cpp), else the op's version at max(17, since_opset), i.e. what ONNX 1.12 defines.
int default_max_version(const std::string& op_type, int since_opset);

}  // namespace kiln::ops
