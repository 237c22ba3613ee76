// remove_identity pass: drops Identity and inference-mode Dropout nodes, rewiring their consumers to the input; and,
// on values shape inference has seen, a Cast to the type its input already has and a Reshape to the shape its input
// already has (every dim static or a named symbol), and a Pad by zero on every side. Exporters write these (Hugging
// Face's float32 exports cast the softmax to float32 and back; torch's SDPA export reshapes the attention output to
// its own shape; Swin pads to whole windows), and each would hide a pattern from the fusions after. A Cast of an
// exact widening Cast reads the narrower value directly first (fold_cast_chains), which can make it such a Cast.
#include <algorithm>

#include "passes/pass.h"

namespace kiln::passes {
namespace {

bool is_graph_output(const ir::Graph& g, const ir::Value* v) {
  return std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
}

// The same dims, each known: static sizes, or symbols that inference proved equal.
bool same_known_dims(const ir::Value* a, const ir::Value* b) {
  if (!a->rank_known || !b->rank_known || a->shape != b->shape) return false;
  for (const ops::Dim& d : a->shape)
    if (!d.is_static() && d.sym.empty()) return false;
  return true;
}

// Every value of `from` is exactly a value of `to` (a widening): a Cast from -> to loses nothing, so a Cast of its
// result to any type gives what a Cast of its input would.
bool exact_widening(DataType from, DataType to) {
  using D = DataType;
  auto in = [&](std::initializer_list<D> l) { return std::find(l.begin(), l.end(), to) != l.end(); };
  switch (from) {
    case D::kHALF:
    case D::kBF16: return in({D::kFLOAT, D::kDOUBLE});
    case D::kFLOAT: return in({D::kDOUBLE});
    case D::kINT8: return in({D::kINT16, D::kINT32, D::kINT64});
    case D::kINT16: return in({D::kINT32, D::kINT64});
    case D::kINT32: return in({D::kINT64});
    case D::kUINT8: return in({D::kINT16, D::kUINT16, D::kINT32, D::kUINT32, D::kINT64});
    case D::kUINT16: return in({D::kINT32, D::kUINT32, D::kINT64});
    case D::kUINT32: return in({D::kINT64});
    default: return false;
  }
}

// Cast(Cast(x, wider), t) -> Cast(x, t) where the inner Cast widens exactly: float16 bindings meeting float16
// layers (a float16 network input's Cast to float32 that lowering casts back to float16, or a float16 layer's
// float32 result cast to a float16 output) then become Casts to their input's own type, which this pass removes.
int fold_cast_chains(ir::Graph& g) {
  int folded = 0;
  for (auto& n : g.nodes()) {
    if (n->op_type != "Cast" || !n->domain.empty() || n->inputs.size() != 1 || !n->inputs[0]) continue;
    const ir::Node* inner = n->inputs[0]->producer;
    if (!inner || inner->op_type != "Cast" || !inner->domain.empty() || inner->inputs.size() != 1 || !inner->inputs[0])
      continue;
    ir::Value* x = inner->inputs[0];
    const ir::Value* w = n->inputs[0];
    if (x->kind != ValueKind::kTENSOR || !x->rank_known || !w->rank_known || !exact_widening(x->dtype, w->dtype))
      continue;
    g.set_node_input(n.get(), 0, x);
    ++folded;
  }
  return folded;
}

// Dropout is a no-op at inference unless training_mode is (or may be) true, or its mask is consumed.
bool is_passthrough(const ir::Graph& g, const ir::Node& n) {
  if (!n.domain.empty() || n.inputs.empty() || !n.inputs[0] || n.outputs.empty()) return false;
  if (n.op_type == "Identity") return n.outputs.size() == 1;
  // Cast and Reshape only once inference has given both sides their type and shape (rank_known).
  const ir::Value *x = n.inputs[0], *y = n.outputs[0];
  if (n.op_type == "Cast")
    return n.outputs.size() == 1 && x->rank_known && y->rank_known && x->dtype == y->dtype &&
           x->kind == ValueKind::kTENSOR;
  if (n.op_type == "Reshape") return n.outputs.size() == 1 && x->dtype == y->dtype && same_known_dims(x, y);
  // A Pad by nothing on any side (Swin pads each block's input to whole windows: zero once the sizes fold), in any
  // mode; pads is an input from opset 11, an attribute before.
  if (n.op_type == "Pad") {
    std::vector<int64_t> pads;
    if (n.opset >= 11 || (n.inputs.size() > 1 && n.inputs[1])) {
      if (n.inputs.size() < 2 || !n.inputs[1] || !n.inputs[1]->is_constant()) return false;
      pads = n.inputs[1]->constant->to_i64_vector();
    } else {
      auto p = n.attrs.get_ints("pads");
      if (!p.ok()) return false;
      pads = *p;
    }
    return n.outputs.size() == 1 && !pads.empty() &&
           std::all_of(pads.begin(), pads.end(), [](int64_t v) { return v == 0; });
  }
  if (n.op_type != "Dropout") return false;
  if (n.inputs.size() > 2 && n.inputs[2]) {
    const ir::Value* mode = n.inputs[2];
    if (!mode->is_constant() || mode->constant->numel() != 1 || mode->constant->get_i64(0) != 0) return false;
  }
  for (size_t k = 1; k < n.outputs.size(); ++k)
    if (!n.outputs[k]->users.empty() || is_graph_output(g, n.outputs[k])) return false;
  return true;
}

class RemoveIdentity final : public Pass {
 public:
  std::string_view name() const override { return "remove_identity"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    ctx.changes += fold_cast_chains(g);
    std::vector<ir::Node*> candidates;
    for (auto& n : g.nodes())
      if (is_passthrough(g, *n)) candidates.push_back(n.get());
    for (ir::Node* n : candidates)
      if (remove(g, n)) ++ctx.changes;
    g.prune_values();
    return Status::Ok();
  }

 private:
  bool remove(ir::Graph& g, ir::Node* n) {
    ir::Value* x = n->inputs[0];
    ir::Value* y = n->outputs[0];
    if (!is_graph_output(g, y)) {
      g.remove_node(n);
      g.replace_all_uses(y, x);
      return true;
    }
    // y is what users see: its name must survive, so x's producer takes y over as its output instead.
    if (x->producer && !is_graph_output(g, x)) {
      ir::Node* p = x->producer;
      g.remove_node(n);
      g.replace_all_uses(x, y);
      std::replace(p->outputs.begin(), p->outputs.end(), x, y);
      y->producer = p;
      x->producer = nullptr;
      return true;
    }
    // A constant can simply be given the output's name by sharing its data.
    if (x->is_constant()) {
      g.remove_node(n);
      y->constant = x->constant;
      y->set_info(x->info());
      return true;
    }
    // y copies a graph input or another graph output: two names for one tensor need the copy to stay.
    return false;
  }
};

}  // namespace

std::unique_ptr<Pass> make_remove_identity() { return std::make_unique<RemoveIdentity>(); }

}  // namespace kiln::passes
