// Binary search over the generated ai.onnx operator-version table.
#include "ops/onnx_versions.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>

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

// Ops whose implementation handles ONNX versions newer than ONNX 1.12's, each checked against the node tests of
// the newest onnx release (make test-node, suite onnx-pypi; survey with KILN_SURVEY_NEWEST_OP_VERSIONS=1). Kept
// here rather than in the op files so the whole list of what Kiln claims past opset 17 reads in one place.
// Most newer versions only add element types (bf16, float8, int4, ...) or attributes and inputs; Kiln rejects
// the types it lacks and validate_attributes/arity reject what it does not know, so raising cannot make a model
// silently compute something else. Dropout 22 still fails its training-mode tests, whose random masks no
// other implementation can reproduce.
struct VerifiedVersion {
  std::string_view op;
  int version;
};
constexpr VerifiedVersion kVerifiedVersions[] = {
    {"Acos", 22},
    {"Acosh", 22},
    {"Asin", 22},
    {"Asinh", 22},
    {"Atan", 22},
    {"Atanh", 22},
    {"Attention", 25},
    {"AveragePool", 22},
    {"Bernoulli", 22},
    {"BitShift", 28},
    {"Cast", 28},
    {"CastLike", 25},
    {"Celu", 28},
    {"Compress", 28},
    {"Constant", 25},
    {"ConstantOfShape", 25},
    {"Conv", 22},
    {"ConvTranspose", 22},
    {"Cos", 22},
    {"Cosh", 22},
    {"DFT", 20},
    {"DepthToSpace", 28},
    {"DequantizeLinear", 28},
    {"Det", 22},
    {"Dropout", 22},
    {"Einsum", 28},
    {"Elu", 22},
    {"Equal", 19},
    {"EyeLike", 22},
    {"Flatten", 25},
    {"GRU", 22},
    {"GlobalAveragePool", 22},
    {"GlobalMaxPool", 22},
    {"GridSample", 22},
    {"GroupNormalization", 21},
    {"HardSigmoid", 22},
    {"HardSwish", 22},
    {"Identity", 25},
    {"If", 25},
    {"InstanceNormalization", 22},
    {"IsInf", 20},
    {"IsNaN", 20},
    {"LSTM", 22},
    {"Loop", 25},
    {"LpNormalization", 22},
    {"LpPool", 22},
    {"MaxPool", 22},
    {"MaxUnpool", 22},
    {"Mish", 22},
    {"Mod", 28},
    {"NegativeLogLikelihoodLoss", 22},
    {"OneHot", 28},
    {"Optional", 28},
    {"OptionalGetElement", 28},
    {"OptionalHasElement", 28},
    {"Pad", 25},
    {"QLinearMatMul", 21},
    {"QuantizeLinear", 28},
    {"RNN", 22},
    {"RandomNormal", 22},
    {"RandomNormalLike", 22},
    {"RandomUniform", 22},
    {"RandomUniformLike", 22},
    {"Range", 27},
    {"ReduceL1", 18},
    {"ReduceL2", 18},
    {"ReduceLogSum", 28},
    {"ReduceLogSumExp", 28},
    {"ReduceMax", 20},
    {"ReduceMean", 18},
    {"ReduceMin", 20},
    {"ReduceProd", 18},
    {"ReduceSumSquare", 18},
    {"Reshape", 25},
    {"Resize", 19},
    {"ReverseSequence", 28},
    {"RoiAlign", 22},
    {"Round", 22},
    {"Scan", 25},
    {"ScatterElements", 18},
    {"ScatterND", 18},
    {"Selu", 22},
    {"Shape", 25},
    {"Sin", 22},
    {"Sinh", 22},
    {"Size", 25},
    {"Softplus", 22},
    {"Softsign", 22},
    {"SpaceToDepth", 28},
    {"Split", 18},
    {"SplitToSequence", 24},
    {"Squeeze", 25},
    {"Tan", 22},
    {"ThresholdedRelu", 22},
    {"TopK", 24},
    {"Transpose", 25},
    {"Unique", 28},
    {"Unsqueeze", 25},
};

int onnx_table_newest_opset() { return kOnnxTableNewestOpset; }
const char* onnx_table_release() { return kOnnxTableRelease; }

int onnx_op_version_at(const std::string& op_type, int opset) {
  int found = 0;
  for (int v : onnx_op_versions(op_type))
    if (v <= opset) found = v;
  return found;
}

int default_max_version(const std::string& op_type, int since_opset) {
  // Survey knob for raising versions: claims every op's newest version so the newer node tests show which pass.
  static const bool claim_newest = std::getenv("KILN_SURVEY_NEWEST_OP_VERSIONS") != nullptr;
  if (claim_newest) {
    auto all = onnx_op_versions(op_type);
    return all.empty() ? 0 : all.back();
  }
  for (const auto& v : kVerifiedVersions)
    if (v.op == op_type) return v.version;
  return onnx_op_version_at(op_type, std::max(kOnnxLibraryOpset, since_opset));
}

}  // namespace kiln::ops
