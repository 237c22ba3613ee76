// fuse_pointwise pass (CUDA pipeline, after precision_lowering): connected groups of elementwise nodes become one
// kiln::Pointwise node whose program (ops/pointwise_program.h) the builder compiles to a single CUDA kernel.
// Groups are open-ended shapes, not fixed patterns, so they grow node by node here rather than through matcher.h.
#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "ops/pointwise_program.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

using ops::PwInstr;
using ops::PwOp;
using ops::PointwiseProgram;

// Kernel parameter limits (backends/cuda/pointwise_ops.cpp and builder/pointwise_codegen.cpp share them).
constexpr size_t kMaxInputs = ops::kPwMaxInputs, kMaxOutputs = ops::kPwMaxOutputs, kMaxNodes = 64;

const std::map<std::string, PwOp>& simple_ops() {
  static const std::map<std::string, PwOp> m = {
      {"Add", PwOp::kAdd}, {"Sub", PwOp::kSub}, {"Mul", PwOp::kMul}, {"Div", PwOp::kDiv}, {"Pow", PwOp::kPow},
      {"Neg", PwOp::kNeg}, {"Abs", PwOp::kAbs}, {"Exp", PwOp::kExp}, {"Log", PwOp::kLog}, {"Sqrt", PwOp::kSqrt},
      {"Reciprocal", PwOp::kReciprocal}, {"Sigmoid", PwOp::kSigmoid}, {"Tanh", PwOp::kTanh}, {"Relu", PwOp::kRelu},
      {"Erf", PwOp::kErf}, {"HardSwish", PwOp::kHardSwish}, {"Equal", PwOp::kEqual}, {"Less", PwOp::kLess},
      {"Greater", PwOp::kGreater}, {"LessOrEqual", PwOp::kLessOrEqual}, {"GreaterOrEqual", PwOp::kGreaterOrEqual},
      {"Not", PwOp::kNot}, {"And", PwOp::kAnd}, {"Or", PwOp::kOr}, {"Xor", PwOp::kXor}, {"Where", PwOp::kWhere},
      {"Max", PwOp::kMax}, {"Min", PwOp::kMin}, {"Sum", PwOp::kAdd}};
  return m;
}

bool is_float(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

// Whether the node can become part of a program: a known elementwise op over supported types, one output.
bool fusable(const ir::Node& n, int graph_opset) {
  if (!n.domain.empty() || n.outputs.size() != 1 || n.inputs.empty()) return false;
  const ir::Value* y = n.outputs[0];
  if (y->kind != ValueKind::kTENSOR || !y->rank_known || !ops::pw_supports_type(y->dtype)) return false;
  // Shape arithmetic (Where/Equal/Mul over Shape's elements, say) stays as it is: the runtime resolves those small
  // integer values on the host when input shapes change, which a fused device kernel would hide from it.
  if (y->known) return false;
  if (!is_float(y->dtype) && y->shape.size() <= 1 && ops::shape_is_static(y->shape)) {
    int64_t n_el = 1;
    for (const auto& d : y->shape) n_el *= d.value;
    if (n_el <= 64) return false;
  }
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    const ir::Value* v = n.inputs[i];
    if (!v) {
      if (n.op_type == "Clip") continue;
      return false;
    }
    if (v->kind != ValueKind::kTENSOR || !v->rank_known || !ops::pw_supports_type(v->dtype)) return false;
    // An empty Clip bound means "not given"; anything else must be one element.
    if (n.op_type == "Clip" && i > 0 && !(v->is_constant() && v->constant->numel() == 1)) return false;
  }
  const DataType t = n.inputs[0]->dtype;
  // Operands share one type (Pow's integer exponents and the like stay unfused); Where's condition is bool.
  if (n.op_type == "Where") {
    if (n.inputs.size() != 3 || t != DataType::kBOOL || n.inputs[1]->dtype != y->dtype ||
        n.inputs[2]->dtype != y->dtype)
      return false;
  } else if (n.op_type != "Cast") {
    for (const ir::Value* v : n.inputs)
      if (v && v->dtype != t) return false;
  }
  auto it = simple_ops().find(n.op_type);
  if (it != simple_ops().end()) {
    if (ops::pw_float_only(it->second) && !is_float(t)) return false;
    return true;
  }
  if (n.op_type == "LeakyRelu" || n.op_type == "HardSigmoid") return is_float(t);
  if (n.op_type == "Clip") return (n.opset ? n.opset : graph_opset) >= 11 && t != DataType::kBOOL;
  if (n.op_type == "Cast") return true;  // both types were checked above
  if (n.op_type == "Gelu") {
    auto mode = n.attrs.get_string("approximate", "none");
    return is_float(t) && mode.ok() && (*mode == "none" || *mode == "tanh");
  }
  return false;
}

bool same_shape(const ir::Shape& a, const ir::Shape& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// `a` broadcasts to `b` without changing `b` (numpy rules, right-aligned).
bool broadcasts_to(const ir::Shape& a, const ir::Shape& b) {
  if (a.size() > b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const ir::Dim& d = a[a.size() - 1 - i];
    if (!(d.is_static() && d.value == 1) && d != b[b.size() - 1 - i]) return false;
  }
  return true;
}

// Appends the instructions of node n, whose inputs are in registers `in` (-1: omitted), to p.
int translate(const ir::Node& n, const std::vector<int>& in, PointwiseProgram& p) {
  const DataType t = n.outputs[0]->dtype;
  auto emit = [&](PwOp op, int a, int b = -1, int c = -1, double f = 0, double g = 0, int64_t i = 0) {
    PwInstr x;
    x.op = op;
    x.type = t;
    x.a = a;
    x.b = b;
    x.c = c;
    x.f = f;
    x.g = g;
    x.i = i;
    return p.add(x);
  };
  auto fattr = [&](const char* name, float def) {
    auto v = n.attrs.get_float(name, def);
    return static_cast<double>(v.ok() ? *v : def);
  };
  auto it = simple_ops().find(n.op_type);
  if (it != simple_ops().end()) {
    PwOp op = it->second;
    if (op == PwOp::kWhere) return emit(op, in[0], in[1], in[2]);
    const bool variadic = n.op_type == "Sum" || n.op_type == "Max" || n.op_type == "Min";
    if (variadic && in.size() == 1) return in[0];
    int r = emit(op, in[0], in.size() > 1 ? in[1] : -1);
    // Variadic Sum/Max/Min fold left.
    for (size_t k = 2; k < in.size(); ++k) r = emit(op, r, in[k]);
    return r;
  }
  if (n.op_type == "LeakyRelu") return emit(PwOp::kLeakyRelu, in[0], -1, -1, fattr("alpha", 0.01f));
  if (n.op_type == "HardSigmoid")
    return emit(PwOp::kHardSigmoid, in[0], -1, -1, fattr("alpha", 0.2f), fattr("beta", 0.5f));
  if (n.op_type == "Clip")
    return emit(PwOp::kClip, in[0], in.size() > 1 ? in[1] : -1, in.size() > 2 ? in[2] : -1);
  if (n.op_type == "Cast") return emit(PwOp::kCast, in[0]);
  auto mode = n.attrs.get_string("approximate", "none");  // Gelu; fusable() checked the mode
  return emit(PwOp::kGelu, in[0], -1, -1, 0, 0, mode.ok() && *mode == "tanh" ? 1 : 0);
}

class FusePointwise final : public Pass {
 public:
  std::string_view name() const override { return "fuse_pointwise"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    const PassOptions& o = ctx.options;
    if (!o.fuse_pointwise) return Status::Ok();
    if (o.has_kernel && !o.has_kernel("Pointwise", "kiln", DataType::kFLOAT)) return Status::Ok();
    g.rebuild_links();
    KILN_RETURN_IF_ERROR(g.topo_sort());
    std::vector<ir::Node*> order;
    for (auto& n : g.nodes()) order.push_back(n.get());
    std::unordered_set<const ir::Node*> gone;
    int fused_nodes = 0, groups = 0;
    // Seeds run from the end so that a group starts at its widest (last) node and grows up into the narrower
    // values (biases, masks) that feed it.
    index_nodes(g);
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      ir::Node* seed = *it;
      if (gone.count(seed) || !fusable(*seed, g.opset())) continue;
      std::vector<ir::Node*> members = grow(g, seed);
      // A lone float op with several inputs too (mobilenet's ReLU6 Clip after a 1x1 GEMM, bert's embedding Add of
      // a broadcast position table: 39 us at batch 64 for 25 MB of traffic): the generic elementwise kernel moves
      // one element per access and works out broadcast offsets with 64-bit divisions, the Pointwise kernel moves
      // four per access with 32-bit strides. Vector accesses in the generic kernels would serve every op; until
      // then, these are the ops that showed in the profiles (one-input maps and Casts keep the same-shape kernel).
      const DataType st = seed->outputs[0]->dtype;
      const bool lone_float = seed->inputs.size() >= 2 &&
                              (st == DataType::kFLOAT || st == DataType::kHALF || st == DataType::kBF16);
      if (members.size() < 2 && !lone_float) continue;
      for (ir::Node* m : members) gone.insert(m);
      // Later groups see this one as a single node, so their cycle checks cover paths through it.
      KILN_ASSIGN_OR_RETURN(bool fused, rewrite(g, members, ctx));
      if (!fused) continue;
      index_nodes(g);
      fused_nodes += static_cast<int>(members.size());
      ++groups;
    }
    g.rebuild_links();
    g.prune_values();
    ctx.changes += groups;
    ctx.verbose("fuse_pointwise: " + std::to_string(fused_nodes) + " nodes into " + std::to_string(groups) +
                " Pointwise kernels");
    return Status::Ok();
  }

 private:
  std::unordered_map<const ir::Node*, size_t> index_;

  void index_nodes(const ir::Graph& g) {
    index_.clear();
    for (size_t i = 0; i < g.nodes().size(); ++i) index_[g.nodes()[i].get()] = i;
  }

  static bool is_graph_output(const ir::Graph& g, const ir::Value* v) {
    return std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
  }

  // Whether some path leaves `group` and comes back: the fused node would then depend on itself.
  bool makes_cycle(const std::set<ir::Node*>& group) const {
    size_t last = 0;
    for (ir::Node* m : group) last = std::max(last, index_.at(m));
    std::vector<ir::Node*> stack;
    std::unordered_set<ir::Node*> seen;
    auto push_users = [&](ir::Node* n) {
      for (ir::Value* v : n->outputs)
        for (ir::Node* u : v->users)
          if (!group.count(u) && index_.at(u) < last && seen.insert(u).second) stack.push_back(u);
    };
    for (ir::Node* m : group) push_users(m);
    while (!stack.empty()) {
      ir::Node* n = stack.back();
      stack.pop_back();
      for (ir::Value* v : n->outputs)
        for (ir::Node* u : v->users)
          if (group.count(u)) return true;
      push_users(n);
    }
    return false;
  }

  std::vector<ir::Node*> grow(const ir::Graph& g, ir::Node* seed) {
    const ir::Shape& shape = seed->outputs[0]->shape;
    std::set<ir::Node*> group = {seed};
    bool changed = true;
    while (changed && group.size() < kMaxNodes) {
      changed = false;
      std::vector<ir::Node*> near;
      for (ir::Node* m : group) {
        for (ir::Value* v : m->inputs)
          if (v && v->producer && !group.count(v->producer)) near.push_back(v->producer);
        for (ir::Value* v : m->outputs)
          for (ir::Node* u : v->users)
            if (!group.count(u)) near.push_back(u);
      }
      std::sort(near.begin(), near.end(), [&](ir::Node* a, ir::Node* b) { return index_.at(a) > index_.at(b); });
      near.erase(std::unique(near.begin(), near.end()), near.end());
      for (ir::Node* n : near) {
        if (group.count(n) || !fusable(*n, g.opset()) || index_.count(n) == 0) continue;
        if (!fits(g, *n, shape, group)) continue;
        group.insert(n);
        if (limits_exceeded(g, group) || makes_cycle(group)) {
          group.erase(n);
          continue;
        }
        changed = true;
      }
    }
    std::vector<ir::Node*> v(group.begin(), group.end());
    std::sort(v.begin(), v.end(), [&](ir::Node* a, ir::Node* b) { return index_.at(a) < index_.at(b); });
    return v;
  }

  // The node's result either has the group's shape (and may leave the group as an extra output) or broadcasts
  // to it and is read only inside the group (the kernel recomputes it per output element).
  static bool fits(const ir::Graph& g, const ir::Node& n, const ir::Shape& shape, const std::set<ir::Node*>& group) {
    const ir::Value* y = n.outputs[0];
    if (same_shape(y->shape, shape)) return true;
    if (!broadcasts_to(y->shape, shape) || is_graph_output(g, y) || y->users.empty()) return false;
    for (ir::Node* u : y->users)
      if (!group.count(u)) return false;
    return true;
  }

  struct Io {
    std::vector<ir::Value*> inputs;   // loaded from memory
    std::vector<ir::Value*> outputs;  // stored to memory
  };

  static bool immediate(const ir::Value* v) { return v->is_constant() && v->constant->numel() == 1; }

  static Io io_of(const ir::Graph& g, const std::set<ir::Node*>& group) {
    Io io;
    for (ir::Node* m : group) {
      for (ir::Value* v : m->inputs)
        if (v && !group.count(v->producer) && !immediate(v) &&
            std::find(io.inputs.begin(), io.inputs.end(), v) == io.inputs.end())
          io.inputs.push_back(v);
      ir::Value* y = m->outputs[0];
      bool escapes = is_graph_output(g, y);
      for (ir::Node* u : y->users) escapes |= !group.count(u);
      if (escapes) io.outputs.push_back(y);
    }
    return io;
  }

  static bool limits_exceeded(const ir::Graph& g, const std::set<ir::Node*>& group) {
    Io io = io_of(g, group);
    return io.inputs.size() > kMaxInputs || io.outputs.size() > kMaxOutputs;
  }

  // False (graph untouched) when the group's program is invalid: a gap in fusable() costs a fusion, not a build.
  Result<bool> rewrite(ir::Graph& g, const std::vector<ir::Node*>& members, PassContext& ctx) {
    std::set<ir::Node*> group(members.begin(), members.end());
    Io io = io_of(g, group);
    // Keep the store order stable: outputs in member order (io_of walks the set by address).
    std::vector<ir::Value*> outs;
    for (ir::Node* m : members)
      if (std::find(io.outputs.begin(), io.outputs.end(), m->outputs[0]) != io.outputs.end())
        outs.push_back(m->outputs[0]);
    std::vector<ir::Value*> ins;
    for (ir::Node* m : members)
      for (ir::Value* v : m->inputs)
        if (v && std::find(io.inputs.begin(), io.inputs.end(), v) != io.inputs.end() &&
            std::find(ins.begin(), ins.end(), v) == ins.end())
          ins.push_back(v);

    // The fused node's result has its loaded inputs' broadcast shape. A one-element constant held as an immediate
    // adds nothing to that shape, so it must not be what gives the group its rank (Swin's shifted-window mask
    // indices add a [1,1,1,1] zero to [12,1,1] + [12,1]: fused, the result would lose its leading 1).
    size_t in_rank = 0;
    bool ranks_known = true;
    for (ir::Value* v : ins) {
      in_rank = std::max(in_rank, v->shape.size());
      ranks_known &= v->rank_known;
    }
    for (ir::Value* v : outs)
      if (ranks_known && v->rank_known && v->shape.size() != in_rank) {
        ctx.verbose("fuse_pointwise: group ending at " + members.back()->name +
                    " left unfused: a one-element constant sets its rank");
        return false;
      }

    PointwiseProgram p;
    std::unordered_map<const ir::Value*, int> reg;
    auto reg_of = [&](ir::Value* v) -> int {
      auto it = reg.find(v);
      if (it != reg.end()) return it->second;
      PwInstr x;
      x.type = v->dtype;
      if (immediate(v)) {
        x.op = PwOp::kConst;
        if (is_float(v->dtype)) x.f = v->constant->get_f64(0);
        else x.i = v->constant->get_i64(0);
      } else {
        x.op = PwOp::kLoad;
        x.a = static_cast<int>(std::find(ins.begin(), ins.end(), v) - ins.begin());
      }
      return reg[v] = p.add(x);
    };
    for (ir::Value* v : ins) p.inputs.push_back(v->dtype);
    std::string names;
    for (ir::Node* m : members) {
      std::vector<int> in;
      for (ir::Value* v : m->inputs) in.push_back(v ? reg_of(v) : -1);
      reg[m->outputs[0]] = translate(*m, in, p);
      names += (names.empty() ? "" : " ") + m->op_type;
    }
    for (ir::Value* v : outs) p.outputs.push_back(reg.at(v));
    if (Status st = p.validate(); !st.ok()) {
      ctx.log(ILogger::Severity::kWARNING, "fuse_pointwise: group of " + names + " left unfused: " + st.message());
      return false;
    }

    Attributes a;
    a.set("program", p.serialize());
    const std::string node_name = g.unique_node_name("pointwise_" + members.back()->name);
    // The original nodes, for layer information (members are removed before the fused node takes their outputs).
    std::vector<std::string> origin;
    for (ir::Node* m : members) {
      const Attribute* from = m->attrs.find(ops::kFusedFromAttr);
      if (from && from->type() == AttrType::kSTRINGS)
        origin.insert(origin.end(), from->strings().begin(), from->strings().end());
      else
        origin.push_back(m->name);
    }
    a.set(ops::kFusedFromAttr, Attribute(origin));
    for (ir::Node* m : members) g.remove_node(m);
    std::vector<std::string> tmp_names(outs.size(), "__pointwise_tmp");
    ir::Node* f = g.add_node("Pointwise", node_name, ins, tmp_names, std::move(a), 1, "kiln");
    // The fused node writes the original values, so readers and network outputs keep their names.
    for (size_t k = 0; k < outs.size(); ++k) {
      ir::Value* tmp = f->outputs[k];
      f->outputs[k] = outs[k];
      outs[k]->producer = f;
      g.remove_value(tmp);
    }
    ctx.verbose("fuse_pointwise: " + node_name + " <- " + names + " (" + std::to_string(ins.size()) + " inputs, " +
                std::to_string(outs.size()) + " outputs)");
    g.rebuild_links();
    KILN_RETURN_IF_ERROR(g.topo_sort());
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_pointwise() { return std::make_unique<FusePointwise>(); }

}  // namespace kiln::passes
