// Operator registry, inference context and attribute validation.
#include "ops/op.h"

#include <algorithm>
#include <set>

#include "ops/onnx_versions.h"

namespace kiln::ops {

std::string shape_to_string(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + s[i].to_string();
  return r + "]";
}
bool shape_is_static(const Shape& s) {
  for (auto& d : s)
    if (!d.is_static()) return false;
  return true;
}
std::vector<int64_t> static_dims(const Shape& s) {
  std::vector<int64_t> r;
  for (auto& d : s) r.push_back(d.is_static() ? d.value : -1);
  return r;
}
Shape shape_from_dims(const std::vector<int64_t>& d) {
  Shape s;
  for (auto v : d) s.push_back(v >= 0 ? Dim(v) : Dim());
  return s;
}

int explicit_input_count(const Attributes& attrs, int total_inputs) {
  int n = total_inputs;
  for (auto& [name, a] : attrs.map())
    if (a.type() == AttrType::kGRAPH && a.g())
      for (int c : a.g()->captures()) n = std::min(n, c);
  return std::max(n, 0);
}

// Captured values are hidden from inference: the op's own inputs are what its rules are written for.
InferContext::InferContext(const Attributes& attrs, int opset, std::vector<const TensorInfo*> inputs,
                           int num_outputs, std::function<std::string()> fresh_symbol)
    : attrs_(attrs), opset_(opset), inputs_(std::move(inputs)), outputs_(num_outputs),
      fresh_symbol_(std::move(fresh_symbol)) {
  inputs_.resize(explicit_input_count(attrs_, static_cast<int>(inputs_.size())));
}

ComputeContext::ComputeContext(const Attributes& attrs, int opset, std::vector<const Tensor*> inputs,
                               std::vector<Tensor>* outputs, SubgraphRunner runner)
    : attrs_(attrs), opset_(opset), inputs_(std::move(inputs)),
      num_inputs_(explicit_input_count(attrs, static_cast<int>(inputs_.size()))), outputs_(outputs),
      runner_(std::move(runner)) {}

Result<std::vector<Tensor>> ComputeContext::run_subgraph(const std::string& attr, std::vector<Tensor> inputs) const {
  KILN_ASSIGN_OR_RETURN(auto body, attrs_.get_graph(attr));
  if (!runner_) return unsupported("subgraph '" + attr + "' cannot run here (no subgraph runner)");
  for (int c : body->captures()) {
    if (c < 0 || c >= static_cast<int>(inputs_.size()) || !inputs_[c])
      return internal_error("subgraph '" + attr + "' captures node input " + std::to_string(c) + ", which is missing");
    inputs.push_back(*inputs_[c]);
  }
  auto r = runner_(*body, inputs);
  if (!r.ok()) return r.status().with_context("subgraph '" + attr + "'");
  return r;
}

Dim InferContext::fresh_dim() {
  if (fresh_symbol_) return Dim::symbol(fresh_symbol_());
  return Dim::symbol("unk__" + std::to_string(local_counter_++));
}

void InferContext::require_equal(const Dim& a, const Dim& b) {
  if (!unification_ || (a.is_static() && b.is_static()) || a == b) return;
  if ((!a.is_static() && a.sym.empty()) || (!b.is_static() && b.sym.empty())) return;
  unification_->equal.emplace_back(a, b);
}

bool InferContext::declared_apart(const Dim& a, const Dim& b) const {
  return unification_ && unification_->declared && !a.is_static() && !b.is_static() && a.sym != b.sym &&
         unification_->declared(a.sym) && unification_->declared(b.sym);
}

OpRegistry& OpRegistry::instance() {
  static OpRegistry r;
  return r;
}

static std::string key(const std::string& name, const std::string& domain) {
  return (domain == "ai.onnx" ? std::string() : domain) + "::" + name;
}

void OpRegistry::add(OpSchema schema) {
  auto k = key(schema.name, schema.domain);
  // Central default so op files need not mention max_version (see default_max_version).
  if (schema.max_version == 0 && (schema.domain.empty() || schema.domain == "ai.onnx"))
    schema.max_version = default_max_version(schema.name, schema.since_opset);
  ops_[k] = std::move(schema);
}

const OpSchema* OpRegistry::find(const std::string& name, const std::string& domain) const {
  auto it = ops_.find(key(name, domain));
  return it == ops_.end() ? nullptr : &it->second;
}

std::vector<const OpSchema*> OpRegistry::all() const {
  std::vector<const OpSchema*> r;
  for (auto& [k, v] : ops_) r.push_back(&v);
  return r;
}

static std::string arity_range(int lo, int hi) {
  if (hi < 0) return "at least " + std::to_string(lo);
  if (lo == hi) return std::to_string(lo);
  return std::to_string(lo) + " to " + std::to_string(hi);
}

Status check_arity(const OpSchema& s, int ni, int no) {
  if (ni < s.min_inputs || (s.max_inputs >= 0 && ni > s.max_inputs))
    return invalid_model("expected " + arity_range(s.min_inputs, s.max_inputs) + " inputs, found " + std::to_string(ni));
  if (no < s.min_outputs || (s.max_outputs >= 0 && no > s.max_outputs))
    return invalid_model("expected " + arity_range(s.min_outputs, s.max_outputs) + " outputs, found " +
                         std::to_string(no));
  return Status::Ok();
}

Status validate_attributes(const OpSchema& schema, const Attributes& attrs) {
  std::set<std::string> known;
  for (auto& spec : schema.attrs) {
    known.insert(spec.name);
    const Attribute* a = attrs.find(spec.name);
    if (!a) {
      if (spec.req == AttrRequirement::kRequired)
        return invalid_model(schema.name + ": required attribute '" + spec.name + "' is missing");
      continue;
    }
    bool ok = a->type() == spec.type || (spec.type == AttrType::kFLOAT && a->type() == AttrType::kINT);
    if (!ok)
      return invalid_model(schema.name + ": attribute '" + spec.name + "' must be of type " +
                           attr_type_name(spec.type) + " but is " + attr_type_name(a->type()));
  }
  for (auto& [name, a] : attrs.map()) {
    // "kiln."-prefixed attributes are the builder's annotations (fusion origins, chosen tactic), not operands.
    if (name.rfind(kAnnotationPrefix, 0) == 0) continue;
    if (!known.count(name)) {
      std::string list;
      for (auto& k : known) list += (list.empty() ? "" : ", ") + k;
      return invalid_model(schema.name + ": unknown attribute '" + name + "' (accepted: " +
                           (list.empty() ? "none" : list) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace kiln::ops
