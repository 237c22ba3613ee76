// Helpers shared by the convolution-as-GEMM passes (see conv_gemm_util.h).
#include "passes/conv_gemm_util.h"

namespace kiln::passes::conv_gemm {

bool all_equal(const Attributes& a, const char* name, int64_t want, size_t n) {
  auto v = a.get_ints(name, std::vector<int64_t>(n, want));
  if (!v.ok()) return false;
  for (int64_t x : *v)
    if (x != want) return false;
  return true;
}

ir::Value* emit_activation(ir::Graph& g, ir::Value* t, const ops::Epilogue& e, const std::string& base) {
  auto like = [&](ir::Value* v) {
    v->dtype = t->dtype;
    v->shape = t->shape;
    v->rank_known = t->rank_known;
    return v;
  };
  auto node = [&](const std::string& op, std::vector<ir::Value*> in, Attributes a = {}, int opset = 13) {
    return like(g.add_node(op, g.unique_node_name(base + "_" + op), in, {base + "_" + op}, std::move(a), opset)->outputs[0]);
  };
  auto scalar = [&](float v, const char* what) {
    return g.add_constant(base + "_" + what, Tensor::from_vector<float>({}, {v}).cast(t->dtype));
  };
  Attributes ab;
  switch (e.act) {
    case ops::Activation::kNone: return t;
    case ops::Activation::kRelu: return node("Relu", {t}, {}, 14);
    case ops::Activation::kClip: return node("Clip", {t, scalar(e.lo, "lo"), scalar(e.hi, "hi")});
    case ops::Activation::kSigmoid: return node("Sigmoid", {t});
    case ops::Activation::kSilu: return node("Mul", {t, node("Sigmoid", {t})}, {}, 14);
    case ops::Activation::kHardSwish:
      ab.set("alpha", e.alpha);
      ab.set("beta", e.beta);
      return node("Mul", {t, node("HardSigmoid", {t}, ab, 6)}, {}, 14);
    case ops::Activation::kGeluErf:
    case ops::Activation::kGeluTanh:
      ab.set("approximate", std::string(e.act == ops::Activation::kGeluTanh ? "tanh" : "none"));
      return node("Gelu", {t}, ab, 20);
    case ops::Activation::kLeakyRelu:
      ab.set("alpha", e.alpha);
      return node("LeakyRelu", {t}, ab, 16);
  }
  return t;
}

// The activations FusedMatMul applies in its own epilogue (before any residual, which it adds after).
const char* gemm_epilogue(ops::Activation a, bool sigmoid_forms) {
  switch (a) {
    case ops::Activation::kNone: return "none";
    case ops::Activation::kRelu: return "relu";
    case ops::Activation::kGeluErf: return "gelu_erf";
    case ops::Activation::kGeluTanh: return "gelu_tanh";
    case ops::Activation::kSilu: return sigmoid_forms ? "silu" : nullptr;
    case ops::Activation::kSigmoid: return sigmoid_forms ? "sigmoid" : nullptr;
    default: return nullptr;
  }
}

bool group_is_one(const Attributes& a) {
  auto g = a.get_int("group", 1);
  return g.ok() && *g == 1;
}

void take_over(ir::Graph& g, ir::Node* node, ir::Value* old, ir::Value* v, bool keep_name) {
  const std::string name = old->name;
  g.replace_all_uses(old, v);
  g.remove_node(node);
  g.remove_value(old);
  if (keep_name) g.rename_value(v, name);
}

}  // namespace kiln::passes::conv_gemm
