// Binary search over the generated ai.onnx operator-version table.
#include "ops/onnx_versions.h"

#include <algorithm>
#include <cstring>

namespace kiln::ops {
namespace {
#include "onnx/onnx_op_versions.inc"
}  // namespace

std::span<const int> onnx_op_versions(const std::string& op_type) {
  const auto* begin = std::begin(kOnnxOpVersionTable);
  const auto* end = std::end(kOnnxOpVersionTable);
  const auto* row = std::lower_bound(begin, end, op_type.c_str(), [](const OnnxOpVersionRow& r, const char* name) {
    return std::strcmp(r.name, name) < 0;
  });
  if (row == end || op_type != row->name) return {};
  int n = 0;
  while (n < kOnnxMaxVersionsPerOp && row->since_versions[n] != 0) ++n;
  return {row->since_versions, static_cast<size_t>(n)};
}

int onnx_table_newest_opset() { return kOnnxTableNewestOpset; }
const char* onnx_table_release() { return kOnnxTableRelease; }

int onnx_op_version_at(const std::string& op_type, int opset) {
  int found = 0;
  for (int v : onnx_op_versions(op_type))
    if (v <= opset) found = v;
  return found;
}

}  // namespace kiln::ops
