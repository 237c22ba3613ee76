// The activation forms fusions fold into kiln's fused ops (FusedConv's epilogue and prologue): patterns and
// the attributes that describe a matched form.
#include <limits>

#include "passes/matcher.h"

namespace kiln::passes::match {
namespace {

// Reads a Clip bound (input `i`, or the attribute for opset < 11); nullopt when it is not a constant.
std::optional<double> clip_bound(const ir::Node& n, size_t i, const char* attr, double def) {
  if (n.inputs.size() > i && n.inputs[i]) return constant_scalar(n.inputs[i]);
  if (n.opset < 11) {
    auto f = n.attrs.get_float(attr, static_cast<float>(def));
    if (f.ok()) return *f;
    return std::nullopt;
  }
  return def;
}

}  // namespace

std::vector<Pattern> activation_forms(const Pattern& x_once, const Pattern& x_twice) {
  return {
      op_any({"Relu", "Sigmoid", "HardSwish", "Gelu", "LeakyRelu", "Clip"}, {x_once}).bind("act"),
      commutative("Mul", x_twice, op("Sigmoid", {any().bind("x")}).used_once().bind("gate")).bind("act"),
      commutative("Mul", x_twice, op("HardSigmoid", {any().bind("x")}).used_once().bind("gate")).bind("act"),
  };
}

bool activation_attrs(const Bindings& b, Attributes& a, const std::string& prefix) {
  const ir::Node* act = b.node("act");
  if (!act) return true;  // a residual or bias root: no activation
  const std::string& op = act->op_type;
  if (op == "Relu") {
    a.set(prefix + "activation", "relu");
  } else if (op == "Sigmoid") {
    a.set(prefix + "activation", "sigmoid");
  } else if (op == "HardSwish") {
    a.set(prefix + "activation", "hardswish");
  } else if (op == "LeakyRelu") {
    a.set(prefix + "activation", "leaky_relu");
    auto al = act->attrs.get_float("alpha", 0.01f);
    if (!al.ok()) return false;
    a.set(prefix + "alpha", *al);
  } else if (op == "Gelu") {
    auto approx = act->attrs.get_string("approximate", "none");
    if (!approx.ok() || (*approx != "none" && *approx != "tanh")) return false;
    a.set(prefix + "activation", *approx == "tanh" ? "gelu_tanh" : "gelu_erf");
  } else if (op == "Clip") {
    const double inf = std::numeric_limits<double>::infinity();
    auto lo = clip_bound(*act, 1, "min", -inf), hi = clip_bound(*act, 2, "max", inf);
    if (!lo || !hi) return false;
    a.set(prefix + "activation", "clip");
    a.set(prefix + "clip_min", static_cast<float>(*lo));
    a.set(prefix + "clip_max", static_cast<float>(*hi));
  } else if (op == "Mul") {
    const ir::Node* gate = b.node("gate");
    if (gate->op_type == "Sigmoid") {
      a.set(prefix + "activation", "silu");
    } else {
      auto al = gate->attrs.get_float("alpha", 0.2f), be = gate->attrs.get_float("beta", 0.5f);
      if (!al.ok() || !be.ok()) return false;
      a.set(prefix + "activation", "hardswish");
      a.set(prefix + "alpha", *al);
      a.set(prefix + "beta", *be);
    }
  } else {
    return false;
  }
  return true;
}

}  // namespace kiln::passes::match
