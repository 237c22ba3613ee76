// precision_lowering pass: with --fp16 or --bf16, moves float32 layers that have a reduced-precision kernel to
// that type. Each lowered layer reads reduced-precision copies of its float inputs (constants are converted
// once here, activations through a Cast that later lowered layers share) and writes reduced-precision outputs;
// a Cast back to float32 serves every consumer that stays in float32 and every network output, so I/O types
// never change. Kernels of softmax, normalization and reductions accumulate in float32 whatever the storage.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "ops/op_util.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// A float32 constant in a reduced type, finite values beyond its range clamped to its largest finite value rather
// than rounded to infinity: exporters write masks as (1 - mask) * finfo(float32).min, which as an FP16 (or BF16)
// infinity turns the unmasked positions' 0 * -inf into NaN. True infinities stay infinite.
Tensor saturating_cast(const Tensor& c, DataType t) {
  if (c.dtype() != DataType::kFLOAT || (t != DataType::kHALF && t != DataType::kBF16)) return c.cast(t);
  const float hi = t == DataType::kHALF ? 65504.0f : 3.38953139e38f;
  Tensor x = c.cast(DataType::kFLOAT);  // a copy (cast always copies) to clamp
  float* p = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i)
    if (std::isfinite(p[i])) p[i] = std::min(hi, std::max(-hi, p[i]));
  return x.cast(t);
}

// Which inputs and outputs of an op carry its float type T; every other input keeps its type (Resize's scales,
// Reshape's shape, indices...). all = every input / output.
struct Rule {
  std::vector<int> in;
  std::vector<int> out = {0};
  bool all_in = false;
};

const std::map<std::string, Rule>& rules() {
  static const std::map<std::string, Rule> r = [] {
    std::map<std::string, Rule> m;
    const Rule all{{}, {0}, true};
    for (const char* op : {"Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Erf",
                           "Softplus", "Elu", "LeakyRelu", "HardSigmoid", "HardSwish", "Gelu", "Mish", "Selu",
                           "Celu", "Swish", "Sin", "Cos", "Floor", "Ceil", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
                           "Sum", "Mean", "PRelu", "Clip", "Softmax", "LogSoftmax", "Concat", "Transpose",
                           "Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "GlobalAveragePool",
                           "GlobalMaxPool", "InstanceNormalization", "GroupNormalization", "LRN", "DepthToSpace",
                           "SpaceToDepth"})
      m[op] = all;
    m["BatchNormalization"] = all;
    m["LayerNormalization"] = {{0, 1, 2}, {0}};
    m["RMSNormalization"] = {{0, 1}, {0}};
    m["RotaryEmbedding"] = {{0, 1, 2}, {0}};  // x and the cos/sin caches; position ids stay int64
    m["MaxPool"] = {{0}, {0}};
    m["Where"] = {{1, 2}, {0}};
    for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Expand", "Tile",
                           "Resize", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Identity"})
      m[op] = {{0}, {0}};
    m["Pad"] = {{0, 2}, {0}};
    m["Split"] = {{0}, {}};  // every output: filled in below
    // Fused ops of domain "kiln" are keyed "kiln::Op" (rule_key).
    m["kiln::FusedConv"] = all;
    // Fused ops by domain::name. Their kernels accumulate in float32 (GEMM epilogues, attention's softmax runs in
    // float32 whatever Q, K and V are stored in); every float input, bias, residual and mask included, goes along.
    // FusedMatMul's colsum (input 4, with norm_epsilon) stays float32 whatever the GEMM's type.
    m["kiln::FusedMatMul"] = {{0, 1, 2, 3}, {0}};
    m["kiln::FusedAttention"] = all;
    return m;
  }();
  return r;
}

std::string rule_key(const ir::Node& n) { return n.domain.empty() ? n.op_type : n.domain + "::" + n.op_type; }

class PrecisionLowering final : public Pass {
 public:
  std::string_view name() const override { return "precision_lowering"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    const PassOptions& o = ctx.options;
    if (o.reduced_precision == DataType::kFLOAT && o.layer_precisions.empty()) return Status::Ok();
    g.rebuild_links();
    std::set<const ir::Value*> outputs(g.outputs().begin(), g.outputs().end());
    graph_outputs_ = outputs;  // an extra output that the network returns counts as used (eligible())
    std::vector<ir::Node*> order;
    for (auto& n : g.nodes()) order.push_back(n.get());
    int lowered = 0, kept = 0;
    const std::set<const ir::Node*> index_math = index_arithmetic(g);
    for (ir::Node* n : order) {
      if (shape_of_lowered(g, n)) continue;
      DataType want = o.reduced_precision;
      auto lp = o.layer_precisions.find(n->name);
      bool named = lp != o.layer_precisions.end();
      if (named) want = lp->second;
      if (want == DataType::kFLOAT) continue;
      std::string why;
      // (A layer named in --layerPrecisions gets what was asked for.)
      if (index_math.count(n) && !named) why = "it computes integers (an index or a comparison) in floating point";
      if (!why.empty() || !eligible(*n, want, o, &why)) {
        if (named && o.precision_constraints == "obey")
          return invalid_argument("--layerPrecisions asks " + std::string(dtype_name(want)) + " for layer '" + n->name +
                                  "' (" + n->op_type + ") but " + why + " (--precisionConstraints=obey)");
        if (named)
          ctx.log(ILogger::Severity::kWARNING, "layer '" + n->name + "' stays float32: " + why);
        ++kept;
        continue;
      }
      lower(g, n, want);
      ++lowered;
    }
    KILN_RETURN_IF_ERROR(g.topo_sort());  // the Casts were appended at the end
    ctx.changes += lowered;
    ctx.verbose("precision_lowering: " + std::to_string(lowered) + " layers to " + dtype_name(o.reduced_precision) +
                ", " + std::to_string(kept) + " stay float32");
    return Status::Ok();
  }

 private:
  // Float arithmetic whose result becomes an integer or a comparison (T5's relative-position buckets: an int
  // distance cast to float, Div, Log, Mul, cast back to int64; position-dependent masks): in float16 a bucket
  // boundary or a comparison can flip, which changes which bias or mask entry a position gets, not just its
  // rounding. Found from each float -> integer/bool Cast and each comparison of floats, back through elementwise
  // and shape-preserving producers only (a GEMM or convolution ends the walk: their activations do not turn into
  // indices), so these small subgraphs stay float32 while the network around them is lowered.
  static std::set<const ir::Node*> index_arithmetic(const ir::Graph& g) {
    static const std::set<std::string> kCompare = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"};
    static const std::set<std::string> kThrough = {
        "Add", "Sub", "Mul", "Div", "Pow", "Log", "Exp", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round",
        "Min", "Max", "Clip", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Transpose", "Where"};
    // A seed whose walk grows past kMaxNodes is not index arithmetic (a comparison of activations reaches back
    // along a residual stream): it keeps nothing.
    constexpr size_t kMaxNodes = 32;
    std::set<const ir::Node*> keep;
    for (const auto& n : g.nodes()) {
      if (!n->domain.empty() || n->inputs.empty() || !n->inputs[0]) continue;
      const bool to_int = n->op_type == "Cast" && dtype_is_float(n->inputs[0]->dtype) &&
                          !dtype_is_float(n->outputs[0]->dtype) && n->outputs[0]->dtype != DataType::kBOOL;
      const bool compare = kCompare.count(n->op_type) && dtype_is_float(n->inputs[0]->dtype);
      if (!to_int && !compare) continue;
      std::vector<const ir::Value*> work(n->inputs.begin(), n->inputs.end());
      std::set<const ir::Value*> seen;
      std::set<const ir::Node*> found;
      while (!work.empty() && found.size() <= kMaxNodes) {
        const ir::Value* v = work.back();
        work.pop_back();
        if (!v || !seen.insert(v).second || !dtype_is_float(v->dtype) || v->is_constant()) continue;
        const ir::Node* p = v->producer;
        if (!p || !p->domain.empty() || !kThrough.count(p->op_type)) continue;
        found.insert(p);
        for (const ir::Value* in : p->inputs) work.push_back(in);
      }
      if (found.size() <= kMaxNodes) keep.insert(found.begin(), found.end());
    }
    return keep;
  }

  std::set<const ir::Value*> graph_outputs_;
  using Key = std::pair<const ir::Value*, DataType>;
  std::map<Key, ir::Value*> reduced_;  // float32 value -> its reduced copy

  // Shape and Size read only their input's shape: one reading the float32 copy that a lowered layer's Cast back
  // recreates reads the reduced value instead, and the Cast goes with dead-code elimination when nothing else
  // reads it (exported transformers take the batch size from an activation: vit did one such Cast per layer).
  bool shape_of_lowered(ir::Graph& g, ir::Node* n) const {
    if ((n->op_type != "Shape" && n->op_type != "Size") || !n->domain.empty() || n->inputs.empty() || !n->inputs[0])
      return false;
    ir::Value* v = n->inputs[0];
    const ir::Node* back = v->producer;
    if (!back || back->op_type != "Cast" || back->inputs.size() != 1 || !back->inputs[0]) return false;
    ir::Value* r = back->inputs[0];
    auto it = reduced_.find({v, r->dtype});
    if (it == reduced_.end() || it->second != r) return false;
    g.set_node_input(n, 0, r);
    return true;
  }

  static std::vector<int> t_inputs(const ir::Node& n, const Rule& r) {
    std::vector<int> v;
    if (r.all_in) {
      for (size_t i = 0; i < n.inputs.size(); ++i) v.push_back(static_cast<int>(i));
    } else {
      for (int i : r.in)
        if (i < static_cast<int>(n.inputs.size())) v.push_back(i);
    }
    return v;
  }
  static std::vector<int> t_outputs(const ir::Node& n, const Rule& r) {
    if (n.op_type == "Split") {
      std::vector<int> v;
      for (size_t i = 0; i < n.outputs.size(); ++i) v.push_back(static_cast<int>(i));
      return v;
    }
    return r.out;
  }


  bool eligible(const ir::Node& n, DataType want, const PassOptions& o, std::string* why) const {
    auto it = rules().find(rule_key(n));
    if (it == rules().end())
      return *why = n.domain.empty() ? n.op_type + " has no reduced-precision form" : "it is not an ai.onnx operator",
             false;
    if (!o.has_kernel || !o.has_kernel(n.op_type, n.domain, want))
      return *why = "no " + std::string(dtype_name(want)) + " kernel exists for " + n.op_type, false;
    for (int i : t_inputs(n, it->second))
      if (n.inputs[i] && n.inputs[i]->dtype != DataType::kFLOAT) return *why = "its inputs are not float32", false;
    for (int k : t_outputs(n, it->second))
      if (k >= static_cast<int>(n.outputs.size()) || n.outputs[k]->dtype != DataType::kFLOAT)
        return *why = "its outputs are not float32", false;
    // Extra outputs (LayerNormalization's mean, MaxPool's indices) keep their types only when unused.
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      auto outs = t_outputs(n, it->second);
      if (std::find(outs.begin(), outs.end(), static_cast<int>(k)) != outs.end()) continue;
      const bool used = !n.outputs[k]->users.empty() || graph_outputs_.count(n.outputs[k]);
      if (used && n.outputs[k]->dtype == DataType::kFLOAT && n.op_type != "MaxPool")
        return *why = "its optional float outputs are used", false;
    }
    return true;
  }

  ir::Value* reduced_copy(ir::Graph& g, ir::Value* v, DataType t, ir::Node* before) {
    auto it = reduced_.find({v, t});
    if (it != reduced_.end()) return it->second;
    ir::Value* r = nullptr;
    const ir::Node* p = v->producer;
    if (v->is_constant()) {
      r = g.add_constant(v->name + "_" + dtype_name(t), saturating_cast(*v->constant, t));
    } else if (p && p->op_type == "ConstantOfShape" && p->domain.empty() && p->inputs.size() == 1) {
      // A fill whose shape is known only at run time (HF's torch.full((S, S), finfo(float32).min) causal mask in a
      // dynamic-length export): a fill of the reduced type, its value saturated as constants are. A Cast would turn
      // -3.4e38 into -inf, and the mask arithmetic after it (min * 0) into NaN.
      Tensor fill = Tensor::from_vector<float>({1}, {0.0f});
      if (p->attrs.has("value")) fill = p->attrs.get_tensor("value").value();
      Attributes a;
      a.set("value", Attribute(saturating_cast(fill.cast(DataType::kFLOAT), t)));
      ir::Node* c = g.add_node("ConstantOfShape", g.unique_node_name(p->name + "_" + dtype_name(t)), {p->inputs[0]},
                               {v->name + "_" + dtype_name(t)}, std::move(a), p->opset);
      r = c->outputs[0];
    } else {
      Attributes a;
      a.set("to", ops::onnx_code_of(t));
      ir::Node* c = g.add_node("Cast", g.unique_node_name(v->name + "_to_" + dtype_name(t)), {v},
                               {v->name + "_" + dtype_name(t)}, std::move(a), std::max(g.opset(), 13));
      r = c->outputs[0];
    }
    r->dtype = t;
    r->shape = v->shape;
    r->rank_known = v->rank_known;
    reduced_[{v, t}] = r;
    return r;
  }


  void lower(ir::Graph& g, ir::Node* n, DataType t) {
    const Rule& r = rules().at(rule_key(*n));
    for (int i : t_inputs(*n, r)) {
      ir::Value* v = n->inputs[i];
      if (!v) continue;
      g.set_node_input(n, i, reduced_copy(g, v, t, n));
    }
    for (int k : t_outputs(*n, r)) {
      ir::Value* y = n->outputs[k];
      // The node now writes a reduced value; a Cast recreates y (same name, float32) for whoever still reads it,
      // and dead-code elimination drops that Cast when nobody does.
      ir::Value* yr = g.add_value(y->name + "_" + dtype_name(t));
      yr->dtype = t;
      yr->shape = y->shape;
      yr->rank_known = y->rank_known;
      n->outputs[k] = yr;
      yr->producer = n;
      Attributes a;
      a.set("to", ops::onnx_code_of(DataType::kFLOAT));
      ir::Node* back = g.add_node("Cast", g.unique_node_name(y->name + "_to_float32"), {yr}, {"__tmp"}, std::move(a),
                                  std::max(g.opset(), 13));
      // Swap the new Cast's fresh output for y itself so every reader and the network outputs keep working.
      ir::Value* tmp = back->outputs[0];
      back->outputs[0] = y;
      y->producer = back;
      g.remove_value(tmp);
      reduced_[{y, t}] = yr;
    }
  }
};

}  // namespace

std::unique_ptr<Pass> make_precision_lowering() { return std::make_unique<PrecisionLowering>(); }

}  // namespace kiln::passes
