// Layout permutations, reference delegation and fused-op epilogues (see layout_util.h).
#include "ops/layout_util.h"

#include <cmath>

#include "ops/op_util.h"

namespace kiln::ops {

std::vector<int64_t> perm_to_nhwc(int rank) {
  std::vector<int64_t> p = {0};
  for (int i = 2; i < rank; ++i) p.push_back(i);
  p.push_back(1);
  return p;
}

std::vector<int64_t> perm_to_nchw(int rank) {
  std::vector<int64_t> p = {0, rank - 1};
  for (int i = 1; i < rank - 1; ++i) p.push_back(i);
  return p;
}

Shape permute_shape(const Shape& s, const std::vector<int64_t>& perm) {
  Shape r;
  for (auto a : perm) r.push_back(s[a]);
  return r;
}

Result<Tensor> permute(const Tensor& t, const std::vector<int64_t>& perm) {
  Attributes a;
  a.set("perm", perm);
  KILN_ASSIGN_OR_RETURN(auto out, run_reference("Transpose", "", a, 17, {&t}));
  return std::move(out[0]);
}

Result<std::vector<Tensor>> run_reference(const std::string& op, const std::string& domain, const Attributes& attrs,
                                          int opset, const std::vector<const Tensor*>& inputs, int num_outputs) {
  const OpSchema* s = OpRegistry::instance().find(op, domain);
  if (!s || !s->compute) return internal_error("no reference implementation of " + op);
  std::vector<Tensor> out(num_outputs);
  ComputeContext c(attrs, opset, inputs, &out);
  KILN_RETURN_IF_ERROR(s->compute(c));
  return out;
}

Result<TensorInfo> infer_reference(const std::string& op, int opset, InferContext& outer, const Attributes& attrs,
                                   const std::vector<const TensorInfo*>& inputs) {
  const OpSchema* s = OpRegistry::instance().find(op);
  if (!s || !s->infer) return internal_error("no shape inference for " + op);
  InferContext c(attrs, opset, inputs, 1, [&outer] { return outer.fresh_dim().sym; });
  KILN_RETURN_IF_ERROR(s->infer(c));
  return c.output(0);
}

namespace {
struct ActName {
  const char* name;
  Activation act;
};
constexpr ActName kActs[] = {
    {"none", Activation::kNone},        {"relu", Activation::kRelu},          {"clip", Activation::kClip},
    {"sigmoid", Activation::kSigmoid},  {"silu", Activation::kSilu},          {"hardswish", Activation::kHardSwish},
    {"gelu_erf", Activation::kGeluErf}, {"gelu_tanh", Activation::kGeluTanh}, {"leaky_relu", Activation::kLeakyRelu}};
}  // namespace

const char* activation_name(Activation a) {
  for (const auto& n : kActs)
    if (n.act == a) return n.name;
  return "?";
}

std::optional<Activation> matmul_activation(const std::string& name) {
  for (Activation a : {Activation::kNone, Activation::kRelu, Activation::kSigmoid, Activation::kSilu,
                       Activation::kGeluErf, Activation::kGeluTanh})
    if (name == activation_name(a)) return a;
  return std::nullopt;
}

Result<Activation> parse_matmul_activation(const Attributes& attrs, const std::string& key, const std::string& op) {
  const auto r = attrs.get_string(key, "none");  // read in place: see fused_conv.cpp's is_nhwc
  if (!r.ok()) return r.status();
  if (const std::optional<Activation> a = matmul_activation(r.value())) return *a;
  return invalid_model(op + ": " + key + " must be none, relu, gelu_erf, gelu_tanh, silu or sigmoid but is '" +
                       r.value() + "'");
}

Result<Epilogue> parse_epilogue(const std::string& op, const Attributes& attrs, const std::string& prefix) {
  Epilogue e;
  KILN_ASSIGN_OR_RETURN(std::string name, attrs.get_string(prefix + "activation", "none"));
  bool found = false;
  for (const auto& n : kActs)
    if (name == n.name) e.act = n.act, found = true;
  if (!found) return invalid_model(op + ": unknown " + prefix + "activation \"" + name + "\"");
  float def_alpha = e.act == Activation::kHardSwish ? 1.f / 6.f : e.act == Activation::kLeakyRelu ? 0.01f : 0.f;
  KILN_ASSIGN_OR_RETURN(e.alpha, attrs.get_float(prefix + "alpha", def_alpha));
  KILN_ASSIGN_OR_RETURN(e.beta, attrs.get_float(prefix + "beta", e.act == Activation::kHardSwish ? 0.5f : 0.f));
  KILN_ASSIGN_OR_RETURN(e.lo, attrs.get_float(prefix + "clip_min", -INFINITY));
  KILN_ASSIGN_OR_RETURN(e.hi, attrs.get_float(prefix + "clip_max", INFINITY));
  return e;
}

double apply_activation(const Epilogue& e, double x) {
  switch (e.act) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return x > 0 ? x : 0.0;
    case Activation::kClip:
      return std::fmin(std::fmax(x, static_cast<double>(e.lo)), static_cast<double>(e.hi));
    case Activation::kSigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case Activation::kSilu:
      return x / (1.0 + std::exp(-x));
    case Activation::kHardSwish:
      return x * std::fmax(0.0, std::fmin(1.0, e.alpha * x + e.beta));
    case Activation::kGeluErf:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::kGeluTanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case Activation::kLeakyRelu:
      return x >= 0 ? x : e.alpha * x;
  }
  return x;
}

Tensor apply_activation(const Epilogue& e, const Tensor& t) {
  Tensor d = t.cast(DataType::kDOUBLE);
  double* p = d.data<double>();
  for (int64_t i = 0; i < d.numel(); ++i) p[i] = apply_activation(e, p[i]);
  return d.cast(t.dtype());
}

const std::vector<AttrSpec>& epilogue_attrs() {
  static const std::vector<AttrSpec> a = {{"activation", AttrType::kSTRING},
                                          {"alpha", AttrType::kFLOAT},
                                          {"beta", AttrType::kFLOAT},
                                          {"clip_min", AttrType::kFLOAT},
                                          {"clip_max", AttrType::kFLOAT}};
  return a;
}

const std::vector<AttrSpec>& prologue_attrs() {
  static const std::vector<AttrSpec> a = [] {
    std::vector<AttrSpec> v = epilogue_attrs();
    for (auto& s : v) s.name = kProloguePrefix + s.name;
    return v;
  }();
  return a;
}

Attributes without_layout(const Attributes& a) {
  Attributes r = a;
  r.erase("layout");
  return r;
}

Status check_nhwc_layout(const std::string& op, const Attributes& a) {
  KILN_ASSIGN_OR_RETURN(std::string layout, a.get_string("layout"));
  if (layout != "NHWC") return invalid_model("kiln " + op + ": layout must be NHWC, got \"" + layout + "\"");
  return Status::Ok();
}

}  // namespace kiln::ops
