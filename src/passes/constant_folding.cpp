// constant_folding pass: computes nodes whose inputs are all constant (and Shape of static shapes) at build time.
#include <algorithm>
#include <limits>
#include <new>
#include <unordered_set>

#include "passes/pass.h"

namespace kiln::passes {
namespace {

// Folding trades engine size for run time; past this a weight-sized intermediate (e.g. a broadcast
// to a huge constant) would bloat the engine more than computing it at run time costs.
constexpr size_t kMaxFoldedBytes = size_t{64} << 20;

// Ops whose result must differ between runs: folding would freeze one sample into the engine.
bool is_nondeterministic(const std::string& op) {
  static const std::unordered_set<std::string> kOps = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                                       "RandomUniformLike", "Multinomial", "Bernoulli"};
  return kOps.count(op) != 0;
}

// Turns a produced value into a constant in place, so its name, and any graph output pointing at it, survive.
void make_constant(ir::Value& v, Tensor t) {
  v.dtype = t.dtype();
  v.shape = ops::shape_from_dims(t.shape());
  v.rank_known = true;
  v.known.reset();
  if (dtype_is_integer(t.dtype()) && t.rank() <= 1) {
    std::vector<ops::Dim> k;
    for (auto x : t.to_i64_vector()) k.push_back(ops::Dim(x));
    v.known = std::move(k);
  }
  v.constant = std::make_shared<const Tensor>(std::move(t));
}

std::optional<size_t> static_bytes(const ir::Value& v) {
  if (!v.rank_known || !ops::shape_is_static(v.shape)) return std::nullopt;
  // Saturating: a declared shape of 2^31 x 2^31 must read as huge, not wrap around to a small size.
  size_t bytes = dtype_size(v.dtype);
  for (int64_t d : ops::static_dims(v.shape)) {
    if (d && bytes > std::numeric_limits<size_t>::max() / static_cast<size_t>(d)) return std::numeric_limits<size_t>::max();
    bytes *= static_cast<size_t>(d);
  }
  return bytes;
}

// Shape's output depends only on the input's dims; opset 15 adds start/end, clamped like Slice.
std::optional<Tensor> fold_static_shape(const ir::Node& n) {
  if (n.op_type != "Shape" || !n.domain.empty() || n.inputs.size() != 1 || !n.inputs[0]) return std::nullopt;
  const ir::Value& in = *n.inputs[0];
  if (!in.rank_known || !ops::shape_is_static(in.shape)) return std::nullopt;
  auto dims = ops::static_dims(in.shape);
  int64_t rank = static_cast<int64_t>(dims.size());
  auto start = n.attrs.get_int("start", 0), end = n.attrs.get_int("end", rank);
  if (!start.ok() || !end.ok()) return std::nullopt;
  auto clamp = [rank](int64_t x) { return std::clamp(x < 0 ? x + rank : x, int64_t{0}, rank); };
  int64_t b = clamp(*start), e = clamp(*end);
  std::vector<int64_t> r(dims.begin() + b, dims.begin() + std::max(b, e));
  return Tensor::from_vector<int64_t>({static_cast<int64_t>(r.size())}, r);
}

// Inference may already know every element (Shape -> Gather -> Concat chains on static dims).
std::optional<Tensor> fold_known_value(const ir::Value& v) {
  if (!v.known || !dtype_is_integer(v.dtype) || !v.rank_known || v.shape.size() > 1 || !ops::shape_is_static(v.shape))
    return std::nullopt;
  std::vector<int64_t> vals;
  for (auto& d : *v.known) {
    if (!d.is_static()) return std::nullopt;
    vals.push_back(d.value);
  }
  auto dims = ops::static_dims(v.shape);
  if (volume(dims) != static_cast<int64_t>(vals.size())) return std::nullopt;
  Tensor t64 = Tensor::from_vector<int64_t>(dims, vals);
  return v.dtype == DataType::kINT64 ? t64 : t64.cast(v.dtype);
}

class ConstantFolding final : public Pass {
 public:
  std::string_view name() const override { return "constant_folding"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    KILN_RETURN_IF_ERROR(g.topo_sort());
    std::vector<ir::Node*> order;
    for (auto& n : g.nodes()) order.push_back(n.get());
    for (ir::Node* n : order) {
      auto folded = fold(*n, ctx);
      if (!folded) continue;
      std::vector<ir::Value*> outs = n->outputs;  // remove_node frees the node
      g.remove_node(n);
      for (size_t k = 0; k < folded->size(); ++k) make_constant(*outs[k], std::move((*folded)[k]));
      ++ctx.changes;
    }
    g.prune_values();
    return Status::Ok();
  }

 private:
  // The node's outputs as tensors, or nothing when the node must stay.
  std::optional<std::vector<Tensor>> fold(const ir::Node& n, PassContext& ctx) {
    // Control flow runs its bodies through the runtime's executor, which the builder does not have.
    if (n.attrs.has_graph()) return std::nullopt;
    // Engine constants are tensors: a sequence or optional is computed at run time.
    for (const ir::Value* o : n.outputs)
      if (o->kind != ValueKind::kTENSOR) return std::nullopt;
    if (auto t = fold_static_shape(n)) return std::vector<Tensor>{std::move(*t)};
    std::vector<Tensor> known;
    for (const ir::Value* o : n.outputs)
      if (auto t = fold_known_value(*o)) known.push_back(std::move(*t));
    if (known.size() == n.outputs.size() && !known.empty()) return known;

    if (is_nondeterministic(n.op_type)) return std::nullopt;
    std::vector<const Tensor*> inputs;
    for (const ir::Value* v : n.inputs) {
      if (v && !v->is_constant()) return std::nullopt;
      inputs.push_back(v ? v->constant.get() : nullptr);
    }
    const ops::OpSchema* schema = ops::OpRegistry::instance().find(n.op_type, n.domain);
    if (!schema || !schema->compute) return std::nullopt;
    for (const ir::Value* o : n.outputs) {
      auto bytes = static_bytes(*o);
      if (bytes && *bytes > kMaxFoldedBytes) return std::nullopt;
    }
    std::vector<Tensor> outs(n.outputs.size());
    ops::ComputeContext cc(n.attrs, n.opset, inputs, &outs);
    Status st;
    try {
      st = schema->compute(cc);
    } catch (const std::bad_alloc&) {  // an output whose size comes from data; the run reports it if real
      st = Status(ErrorCode::kOutOfMemory, "output too large to allocate");
    }
    if (!st.ok()) {
      // Not fatal: the node simply runs at inference time, where the same error (if real) will surface.
      ctx.verbose("constant_folding: node '" + n.name + "' (" + n.op_type + ") not folded: " + st.to_string());
      return std::nullopt;
    }
    for (size_t k = 0; k < outs.size(); ++k) {
      if (!outs[k].defined() || outs[k].nbytes() > kMaxFoldedBytes) return std::nullopt;
    }
    return outs;
  }
};

}  // namespace

std::unique_ptr<Pass> make_constant_folding() { return std::make_unique<ConstantFolding>(); }

}  // namespace kiln::passes
