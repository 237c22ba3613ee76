// layout_nhwc pass (CUDA, float16/bfloat16): convolutions become channels-last FusedConv (weights converted to
// [M, kh, kw, C/group] here, at build time) between Transposes, which are then sunk through layout-agnostic ops
// and cancelled in pairs, so a CNN body runs NHWC with transposes left only where it enters and leaves. The
// NHWC nodes that NHWC values connect form a layout region; the Transposes at its borders are its reformat
// layers. The builder times each region with reformats both ways and names those that run faster in NCHW
// (PassOptions::nchw_layout_regions), whose convolutions this pass then leaves as they are.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "ops/layout_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

const std::vector<int64_t> kToNhwc = ops::perm_to_nhwc(4), kToNchw = ops::perm_to_nchw(4);

bool has_perm(const ir::Node* n, const std::vector<int64_t>& perm) {
  if (!n || n->op_type != "Transpose" || !n->domain.empty() || n->inputs.size() != 1) return false;
  auto p = n->attrs.get_ints("perm");
  return p.ok() && *p == perm;
}

// The NHWC value behind an NCHW value produced by a Transpose back to NCHW, else null.
ir::Value* nhwc_source(const ir::Value* v) {
  return v && has_perm(v->producer, kToNchw) ? v->producer->inputs[0] : nullptr;
}

std::string str_attr(const ir::Node& n, const char* name, const char* def) {
  auto r = n.attrs.get_string(name, def);
  return r.ok() ? *r : std::string();
}

bool rank4(const ir::Value* v) { return v && v->rank_known && v->shape.size() == 4; }

const std::set<std::string>& unary_ops() {
  static const std::set<std::string> s = {"Relu",        "Sigmoid",  "Tanh", "Cast", "Clip", "LeakyRelu", "HardSwish",
                                          "HardSigmoid", "Gelu",     "Erf",  "Exp",  "Neg",  "Abs",       "Sqrt",
                                          "Reciprocal",  "Softplus", "Elu",  "Selu", "Celu", "Mish",      "Identity"};
  return s;
}

const std::set<std::string>& binary_ops() {
  static const std::set<std::string> s = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"};
  return s;
}

class LayoutNhwc final : public Pass {
 public:
  std::string_view name() const override { return "layout_nhwc"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (ctx.options.backend != Backend::kCUDA) return Status::Ok();
    opts_ = &ctx.options;
    // Regions the builder measured faster in NCHW (PassOptions::nchw_layout_regions): which convolutions belong
    // to them comes from a trial rewrite of a copy, as a region is what the rewrite connects.
    keep_nchw_.clear();
    const auto& nchw = opts_->nchw_layout_regions;
    if (!nchw.empty()) {
      std::unique_ptr<ir::Graph> trial = g.clone();
      PassContext quiet(ctx.logger, ctx.options);
      KILN_ASSIGN_OR_RETURN(auto region_of, rewrite(*trial, quiet));
      for (const auto& [conv, region] : region_of)
        if (nchw.count(region) || nchw.count(kAllLayoutRegions)) keep_nchw_.insert(conv);
    }
    return rewrite(g, ctx).status();
  }

 private:
  // The rewrite; returns, for each convolution it made NHWC, the key of its layout region.
  Result<std::map<std::string, std::string>> rewrite(ir::Graph& g, PassContext& ctx) {
    g.rebuild_links();
    to_nhwc_of_.clear();
    made_nhwc_.clear();
    nhwc_convs_.clear();
    caching_ = true;
    std::vector<ir::Node*> convs;
    for (auto& n : g.nodes())
      if (candidate(*n)) convs.push_back(n.get());
    if (convs.empty()) return std::map<std::string, std::string>{};
    for (ir::Node* n : convs) to_nhwc(g, n);
    to_nhwc_of_.clear();  // cancelling removes some of them: sharing is for the conversions above only
    caching_ = false;
    int sunk = 0;
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t i = 0; i < g.nodes().size() && !changed; ++i) changed = step(g, g.nodes()[i].get());
      sunk += changed;
    }
    PassContext quiet(ctx.logger, ctx.options);
    KILN_RETURN_IF_ERROR(make_dead_code_elimination()->apply(g, quiet));
    KILN_RETURN_IF_ERROR(g.topo_sort());
    KILN_RETURN_IF_ERROR(make_shape_inference()->apply(g, quiet));
    int left = 0;
    for (auto& n : g.nodes()) left += has_perm(n.get(), kToNhwc) || has_perm(n.get(), kToNchw);
    auto region_of = mark_regions(g);
    std::set<std::string> regions;
    for (const auto& [conv, r] : region_of) regions.insert(r);
    ctx.changes += static_cast<int>(convs.size()) + sunk;
    ctx.verbose("layout_nhwc: " + std::to_string(convs.size()) + " convolutions NHWC in " +
                std::to_string(regions.size()) + " layout regions, " + std::to_string(sunk) + " rewrites, " +
                std::to_string(left) + " layout transposes left" +
                (keep_nchw_.empty() ? "" : ", " + std::to_string(keep_nchw_.size()) + " convolutions kept NCHW"));
    return region_of;
  }

  // A layout region: the NHWC nodes this rewrite made that NHWC values connect, with the layout Transposes at
  // its borders (a to-NHWC belongs to the region it feeds, a to-NCHW to the region it reads). Regions are what
  // the builder times in both layouts (its reformat layers against the convolutions' gain); each is named after
  // its first convolution, and its border Transposes carry that name as kLayoutRegionAttr.
  std::map<std::string, std::string> mark_regions(ir::Graph& g) {
    std::vector<ir::Node*> members;
    std::map<const ir::Node*, size_t> index;
    for (auto& n : g.nodes())
      if (made_nhwc_.count(n->name) || has_perm(n.get(), kToNhwc) || has_perm(n.get(), kToNchw)) {
        index[n.get()] = members.size();
        members.push_back(n.get());
      }
    std::vector<size_t> parent(members.size());
    for (size_t i = 0; i < parent.size(); ++i) parent[i] = i;
    auto find = [&](size_t i) {
      while (parent[i] != i) i = parent[i] = parent[parent[i]];
      return i;
    };
    for (ir::Node* c : members) {
      if (has_perm(c, kToNhwc)) continue;  // reads an NCHW value
      for (ir::Value* v : c->inputs) {
        if (!v || !v->producer || has_perm(v->producer, kToNchw)) continue;  // an NCHW value
        auto it = index.find(v->producer);
        if (it != index.end()) parent[find(it->second)] = find(index[c]);
      }
    }
    // Members are in topological order: a region's key is its first convolution's name (the name candidate()
    // sees when the builder names the region NCHW).
    std::map<size_t, std::string> key;
    std::map<std::string, std::string> region_of;
    for (ir::Node* n : members)
      if (nhwc_convs_.count(n->name)) {
        key.emplace(find(index[n]), n->name);
        region_of[n->name] = key[find(index[n])];
      }
    for (ir::Node* n : members)
      if (has_perm(n, kToNhwc) || has_perm(n, kToNchw))
        if (auto it = key.find(find(index[n])); it != key.end()) n->attrs.set(ops::kLayoutRegionAttr, it->second);
    return region_of;
  }

  const PassOptions* opts_ = nullptr;
  std::set<std::string> keep_nchw_;  // convolutions of regions the builder keeps NCHW
  std::set<std::string> made_nhwc_;  // names of the nodes the rewrite made (NHWC convolutions, sunk ops, pads)
  std::set<std::string> nhwc_convs_;  // the NHWC convolutions (named as the convolutions they replace)

  // One input and one output channel per group (W [C, 1, kh, kw] over C input channels).
  static bool depthwise(const ir::Node& n) {
    const ir::Value* x = n.inputs[0];
    const Tensor& w = *n.inputs[1]->constant;
    auto group = n.attrs.get_int("group", 1);
    return group.ok() && x->shape[1].is_static() &&
           ops::is_depthwise(*group, x->shape[1].value, w.shape()[0], w.shape()[1]);
  }

  bool candidate(const ir::Node& n) const {
    bool conv = n.op_type == "Conv" && n.domain.empty();
    bool fused = n.op_type == "FusedConv" && n.domain == "kiln" && str_attr(n, "layout", "NCHW") == "NCHW";
    if (!conv && !fused) return false;
    if (keep_nchw_.count(n.name)) return false;
    if (n.inputs.size() < 2 || !rank4(n.inputs[0]) || !n.inputs[1] || !n.inputs[1]->is_constant() ||
        n.inputs[1]->constant->rank() != 4)
      return false;
    DataType dt = n.inputs[0]->dtype;
    if (dt != DataType::kHALF && dt != DataType::kBF16) return false;
    if (opts_->has_kernel && !opts_->has_kernel("FusedConv", "kiln", dt)) return false;
    // cuDNN pads symmetrically; asymmetric pads stay on the NCHW path, which copies X padded, except for
    // depthwise convolutions: the CUDA backend's own NHWC depthwise kernel pads any way.
    std::string ap = str_attr(n, "auto_pad", "NOTSET");
    if (ap != "NOTSET" && ap != "VALID") return false;
    auto pads = n.attrs.get_ints("pads", std::vector<int64_t>{0, 0, 0, 0});
    if (!pads.ok() || pads->size() != 4) return false;
    return ((*pads)[0] == (*pads)[2] && (*pads)[1] == (*pads)[3]) || depthwise(n);
  }

  // One to-NHWC copy per value, shared by all its NHWC readers (a block input feeds a conv and a residual).
  std::map<ir::Value*, ir::Value*> to_nhwc_of_;
  bool caching_ = false;

  ir::Value* transpose(ir::Graph& g, ir::Value* v, const std::vector<int64_t>& perm) {
    if (caching_ && perm == kToNhwc) {
      auto it = to_nhwc_of_.find(v);
      if (it != to_nhwc_of_.end()) return it->second;
    }
    Attributes a;
    a.set("perm", perm);
    ir::Node* t = g.add_node("Transpose", g.unique_node_name(v->name + (perm == kToNhwc ? "_to_nhwc" : "_to_nchw")),
                             {v}, {v->name + (perm == kToNhwc ? "_nhwc" : "_nchw")}, std::move(a), 13);
    ir::Value* o = t->outputs[0];
    o->dtype = v->dtype;
    o->rank_known = v->rank_known;
    if (v->rank_known) o->shape = ops::permute_shape(v->shape, perm);
    if (caching_ && perm == kToNhwc) to_nhwc_of_[v] = o;
    return o;
  }

  // Makes `node` produce `existing` (a value whose old producer was removed) in place of its fresh output 0.
  static void produce(ir::Graph& g, ir::Node* node, ir::Value* existing) {
    ir::Value* tmp = node->outputs[0];
    node->outputs[0] = existing;
    existing->producer = node;
    g.remove_value(tmp);
  }

  // Replaces node n (whose output 0 is NCHW `y`) by `nhwc_node` (already added, fresh NHWC output) followed by a
  // Transpose back to NCHW that produces y itself, so every reader and graph output keeps working.
  void replace_with_nhwc(ir::Graph& g, ir::Node* n, ir::Node* nhwc_node) {
    ir::Value* y = n->outputs[0];
    ir::Value* o = nhwc_node->outputs[0];
    o->dtype = y->dtype;
    o->rank_known = y->rank_known;
    if (y->rank_known && y->shape.size() == 4) o->shape = ops::permute_shape(y->shape, kToNhwc);
    // The NHWC layer keeps the name of the node it replaces (add_node made it unique while both existed).
    const std::string name = n->name;
    g.remove_node(n);
    nhwc_node->name = name;
    made_nhwc_.insert(name);
    Attributes a;
    a.set("perm", kToNchw);
    ir::Node* back =
        g.add_node("Transpose", g.unique_node_name(y->name + "_to_nchw"), {o}, {y->name + "_tmp"}, std::move(a), 13);
    produce(g, back, y);
  }

  // Tensor cores take FP16/BF16 channels in multiples of 8: a convolution with fewer input channels (an image
  // stem's 3) gets zero channels appended to its input and weights, which change no output. Predicted: resnet50's
  // 7x7 stem, 20% of its batch-128 time with 3 channels, to about a fifth of that (not measured yet).
  static constexpr int64_t kChannelMultiple = 8;

  static Tensor pad_last_dim(const Tensor& t, int64_t to) {
    const int64_t c = t.shape().back(), rows = t.numel() / std::max<int64_t>(c, 1);
    std::vector<int64_t> shape = t.shape();
    shape.back() = to;
    Tensor r(t.dtype(), shape);
    std::memset(r.raw(), 0, r.nbytes());
    const size_t es = dtype_size(t.dtype());
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(static_cast<uint8_t*>(r.raw()) + i * to * es, static_cast<const uint8_t*>(t.raw()) + i * c * es,
                  c * es);
    return r;
  }

  void to_nhwc(ir::Graph& g, ir::Node* n) {
    Attributes a = n->attrs;
    a.set("layout", "NHWC");
    ir::Value* w = n->inputs[1];
    Tensor wt = ops::permute(*w->constant, kToNhwc).value();
    ir::Value* x = transpose(g, n->inputs[0], kToNhwc);
    const int64_t c = wt.shape().back();
    auto group = a.get_int("group", 1);
    // (1x1 convolutions become GEMMs in conv1x1_as_gemm, which take any channel count.)
    const bool one_by_one = wt.shape()[1] == 1 && wt.shape()[2] == 1;
    if (group.ok() && *group == 1 && !one_by_one && c % kChannelMultiple != 0 && c < kChannelMultiple &&
        x->rank_known && x->shape.size() == 4) {
      const int64_t to = kChannelMultiple;
      wt = pad_last_dim(wt, to);
      ir::Value* pads =
          g.add_constant(x->name + "_chpad", Tensor::from_vector<int64_t>({8}, {0, 0, 0, 0, 0, 0, 0, to - c}));
      ir::Node* p =
          g.add_node("Pad", g.unique_node_name(x->name + "_pad_channels"), {x, pads}, {x->name + "_c8"}, {}, 13);
      made_nhwc_.insert(p->name);
      ir::Value* xp = p->outputs[0];
      xp->dtype = x->dtype;
      xp->shape = x->shape;
      xp->shape[3] = ops::Dim(to);
      xp->rank_known = true;
      x = xp;
    }
    ir::Value* wk = g.add_constant(w->name + "_krsc", std::move(wt));
    std::vector<ir::Value*> in = {x, wk, n->inputs.size() > 2 ? n->inputs[2] : nullptr};
    if (n->inputs.size() > 3 && n->inputs[3]) in.push_back(transpose(g, n->inputs[3], kToNhwc));
    while (in.size() > 2 && !in.back()) in.pop_back();
    ir::Node* f = g.add_node("FusedConv", n->name, in, {n->outputs[0]->name + "_nhwc"}, std::move(a), 1, "kiln");
    replace_with_nhwc(g, n, f);
    nhwc_convs_.insert(f->name);
  }

  // One rewrite at node n, if any applies: cancel a to-NHWC of a to-NCHW, or move a to-NCHW below n.
  bool step(ir::Graph& g, ir::Node* n) {
    if (has_perm(n, kToNhwc)) {
      ir::Value* src = nhwc_source(n->inputs[0]);
      if (!src || match::is_graph_output(g, n->outputs[0])) return false;
      g.replace_all_uses(n->outputs[0], src);
      g.remove_node(n);
      return true;
    }
    if (!n->domain.empty() || n->outputs.empty() || n->inputs.empty()) return false;
    const std::string& op = n->op_type;
    if (unary_ops().count(op)) return sink_elementwise(g, n, 1);
    if (binary_ops().count(op)) return sink_elementwise(g, n, 2);
    if (op == "GlobalAveragePool" || op == "GlobalMaxPool") return sink_global_pool(g, n);
    if (op == "MaxPool" || op == "AveragePool") return sink_pool(g, n);
    if (op == "Flatten") return sink_flatten(g, n);
    if (op == "Concat") return sink_concat(g, n);
    if (op == "GroupNormalization" && opts_->nhwc_groupnorm) return sink_groupnorm(g, n);
    return false;
  }

  // Elementwise ops with `arity` data inputs (other inputs: constant scalars such as Clip's bounds). Each data
  // input is a to-NCHW transpose (taken off), a constant (permuted here) or a small [N|1, C, 1, 1] tensor
  // (permuted by a Transpose of its own, cheap); at least one must be a transpose.
  bool sink_elementwise(ir::Graph& g, ir::Node* n, size_t arity) {
    if (n->outputs.size() != 1 || !rank4(n->outputs[0]) || n->inputs.size() < arity) return false;
    bool any = false;
    for (size_t i = 0; i < arity; ++i) any |= nhwc_source(n->inputs[i]) != nullptr;
    if (!any) return false;
    for (size_t i = arity; i < n->inputs.size(); ++i)
      if (n->inputs[i] && !(n->inputs[i]->is_constant() && n->inputs[i]->constant->numel() == 1)) return false;
    std::vector<ir::Value*> in = n->inputs;
    for (size_t i = 0; i < arity; ++i) {
      ir::Value* v = n->inputs[i];
      if (ir::Value* s = nhwc_source(v)) {
        in[i] = s;
      } else if (v->is_constant()) {
        if (v->constant->rank() > 4) return false;
        std::vector<int64_t> dims = v->constant->shape();
        dims.insert(dims.begin(), 4 - dims.size(), 1);  // broadcasting aligns to the right: make it explicit
        in[i] = g.add_constant(v->name + "_nhwc", ops::permute(v->constant->reshaped(dims), kToNhwc).value());
      } else if (rank4(v) && v->shape[2] == ops::Dim(1) && v->shape[3] == ops::Dim(1)) {
        in[i] = transpose(g, v, kToNhwc);
      } else {
        return false;
      }
    }
    ir::Node* m = g.add_node(n->op_type, n->name, in, {n->outputs[0]->name + "_nhwc"}, n->attrs, n->opset);
    replace_with_nhwc(g, n, m);
    return true;
  }

  // Global pooling over H, W is a reduction over axes 1, 2 of the NHWC tensor.
  bool sink_global_pool(ir::Graph& g, ir::Node* n) {
    ir::Value* s = nhwc_source(n->inputs[0]);
    if (!s || n->outputs.size() != 1 || !rank4(n->outputs[0])) return false;
    Attributes a;
    a.set("axes", std::vector<int64_t>{1, 2});
    a.set("keepdims", int64_t{1});
    ir::Node* m = g.add_node(n->op_type == "GlobalAveragePool" ? "ReduceMean" : "ReduceMax", n->name, {s},
                             {n->outputs[0]->name + "_nhwc"}, std::move(a), 13);
    replace_with_nhwc(g, n, m);
    return true;
  }

  // Windowed pooling runs as the kiln NHWC op of the same name, attributes unchanged (only Y, not MaxPool's
  // Indices, and only where the backend has the NHWC kernel).
  bool sink_pool(ir::Graph& g, ir::Node* n) {
    ir::Value* s = nhwc_source(n->inputs[0]);
    if (!s || n->outputs.size() != 1 || !rank4(n->outputs[0])) return false;
    if (opts_->has_kernel && !opts_->has_kernel(n->op_type, "kiln", s->dtype)) return false;
    Attributes a = n->attrs;
    a.set("layout", "NHWC");
    ir::Node* m = g.add_node(n->op_type, n->name, {s}, {n->outputs[0]->name + "_nhwc"}, std::move(a), 1, "kiln");
    replace_with_nhwc(g, n, m);
    return true;
  }

  // Flatten(axis 1) of [N, C, 1, 1] and of [N, 1, 1, C] give the same [N, C]: read the NHWC tensor directly.
  bool sink_flatten(ir::Graph& g, ir::Node* n) {
    ir::Value* s = nhwc_source(n->inputs[0]);
    if (!s || !rank4(s) || s->shape[1] != ops::Dim(1) || s->shape[2] != ops::Dim(1)) return false;
    auto axis = n->attrs.get_int("axis", 1);
    if (!axis.ok() || (*axis != 1 && *axis != -3)) return false;
    g.set_node_input(n, 0, s);
    return true;
  }

  // GroupNormalization over NHWC X: the kiln op with layout NHWC, its scale and bias per channel (opset 18's
  // per-group parameters repeated over each group's channels at build time).
  bool sink_groupnorm(ir::Graph& g, ir::Node* n) {
    ir::Value* s = nhwc_source(n->inputs[0]);
    if (!s || !rank4(s) || n->inputs.size() != 3 || n->outputs.size() != 1 || !rank4(n->outputs[0])) return false;
    if (!s->shape[3].is_static() || !n->inputs[1] || !n->inputs[2] || !n->inputs[1]->is_constant() ||
        !n->inputs[2]->is_constant())
      return false;
    if (opts_->has_kernel && !opts_->has_kernel("GroupNormalization", "kiln", s->dtype)) return false;
    auto groups = n->attrs.get_int("num_groups");
    const int64_t c = s->shape[3].value;
    if (!groups.ok() || *groups < 1 || c % *groups != 0) return false;
    auto per_channel = [&](ir::Value* v) -> ir::Value* {
      const Tensor& t = *v->constant;
      if (t.numel() == c) return t.rank() == 1 ? v : g.add_constant(v->name + "_c", t.reshaped({c}));
      if (t.numel() != *groups) return nullptr;
      const std::vector<double> pg = t.to_f64_vector();
      std::vector<float> pc(c);
      for (int64_t ch = 0; ch < c; ++ch) pc[ch] = static_cast<float>(pg[ch / (c / *groups)]);
      return g.add_constant(v->name + "_per_channel", Tensor::from_vector<float>({c}, pc).cast(t.dtype()));
    };
    ir::Value* scale = per_channel(n->inputs[1]);
    ir::Value* bias = scale ? per_channel(n->inputs[2]) : nullptr;
    if (!bias) return false;
    Attributes a = n->attrs;
    a.set("layout", "NHWC");
    ir::Node* m = g.add_node("GroupNormalization", n->name, {s, scale, bias}, {n->outputs[0]->name + "_nhwc"},
                             std::move(a), 1, "kiln");
    replace_with_nhwc(g, n, m);
    return true;
  }

  bool sink_concat(ir::Graph& g, ir::Node* n) {
    auto axis = n->attrs.get_int("axis");
    if (!axis.ok() || (*axis != 1 && *axis != -3) || !rank4(n->outputs[0])) return false;
    std::vector<ir::Value*> in;
    for (ir::Value* v : n->inputs) {
      ir::Value* s = nhwc_source(v);
      if (!s) return false;
      in.push_back(s);
    }
    Attributes a = n->attrs;
    a.set("axis", int64_t{3});
    ir::Node* m = g.add_node("Concat", n->name, in, {n->outputs[0]->name + "_nhwc"}, std::move(a), n->opset);
    replace_with_nhwc(g, n, m);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_layout_nhwc() { return std::make_unique<LayoutNhwc>(); }

}  // namespace kiln::passes
