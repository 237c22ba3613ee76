// Helpers for the channels-last (NHWC) and fused kiln ops: axis permutations, delegation to an ONNX op's
// reference implementation, and the activation epilogue that fused ops apply after their main computation.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ops/op.h"

namespace kiln::ops {

// NCHW -> NHWC for a tensor of `rank` dims: [0, 2, ..., rank-1, 1]. Also ONNX conv weights [M, C, k...] -> KRSC.
std::vector<int64_t> perm_to_nhwc(int rank);
// NHWC -> NCHW: [0, rank-1, 1, ..., rank-2].
std::vector<int64_t> perm_to_nchw(int rank);
Shape permute_shape(const Shape& s, const std::vector<int64_t>& perm);
Result<Tensor> permute(const Tensor& t, const std::vector<int64_t>& perm);

// The kiln channels-last ops (layout "NHWC"): their attributes as the ONNX op of the same name takes them, and the
// check that "layout" says NHWC.
Attributes without_layout(const Attributes& a);
Status check_nhwc_layout(const std::string& op, const Attributes& a);

// Runs a registered op's reference compute on host tensors (null: an omitted optional input).
Result<std::vector<Tensor>> run_reference(const std::string& op, const std::string& domain, const Attributes& attrs,
                                          int opset, const std::vector<const Tensor*>& inputs, int num_outputs = 1);
// Runs a registered ai.onnx op's inference at `opset` on infos (null: an omitted optional input); its output 0.
Result<TensorInfo> infer_reference(const std::string& op, int opset, InferContext& outer, const Attributes& attrs,
                                   const std::vector<const TensorInfo*>& inputs);

// The activation a fused op applies last. The attributes: activation (none|relu|clip|sigmoid|silu|hardswish|
// gelu_erf|gelu_tanh|leaky_relu), alpha and beta (hardswish: y = x * clamp(alpha*x + beta, 0, 1), ONNX's
// HardSwish being alpha 1/6, beta 0.5; leaky_relu: the slope alpha), clip_min and clip_max.
enum class Activation : int { kNone = 0, kRelu, kClip, kSigmoid, kSilu, kHardSwish, kGeluErf, kGeluTanh, kLeakyRelu };
struct Epilogue {
  Activation act = Activation::kNone;
  float alpha = 0.f, beta = 0.f, lo = 0.f, hi = 0.f;
};
// prefix: kProloguePrefix for the activation a fused op applies first, to its input (FusedConv's pre_*).
inline constexpr const char* kProloguePrefix = "pre_";
Result<Epilogue> parse_epilogue(const std::string& op, const Attributes& attrs, const std::string& prefix = "");
const char* activation_name(Activation a);
// The activations kiln::FusedMatMul's epilogue and kiln::FusedMlp take (none, relu, sigmoid, silu, gelu_erf,
// gelu_tanh: no parameters), by name; nullopt for any other name.
std::optional<Activation> matmul_activation(const std::string& name);
// The attribute `key` (default "none") as one of those, or an error naming op, key, the allowed names and the value.
Result<Activation> parse_matmul_activation(const Attributes& attrs, const std::string& key, const std::string& op);
double apply_activation(const Epilogue& e, double x);
// e applied to every element of t, computed in double and rounded once to t's type.
Tensor apply_activation(const Epilogue& e, const Tensor& t);
// A depthwise convolution: one input and one output channel per group (group == C == M, W's per-group input
// channels 1), whichever layout the caller read these from.
inline bool is_depthwise(int64_t group, int64_t channels, int64_t out_channels, int64_t w_in_per_group) {
  return channels > 0 && group == channels && out_channels == channels && w_in_per_group == 1;
}
// The attribute specs of an epilogue, for op schemas.
const std::vector<AttrSpec>& epilogue_attrs();
const std::vector<AttrSpec>& prologue_attrs();

}  // namespace kiln::ops
