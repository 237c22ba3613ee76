// shape_from_source pass: a Shape node reads its input only for the dims. Where those dims are known from an
// earlier value's, Shape reads that value instead, so that the op in between is no longer kept (and run) for
// Shape alone:
//  - the producer's output has the very dims of its first input (inference proved them equal: static sizes, or
//    the same symbols): Shape reads that input (chains of such ops are walked back in one go);
//  - the producer is a Transpose: Shape(Transpose(x)) becomes Gather(Shape(x), perm), for a Shape over all dims.
// Exporters compute reshape targets from the Shape of whatever tensor is at hand (torch 1.x nn.MultiheadAttention
// reads the Shape of its input Transpose), which keeps copies alive after the fusions stopped needing their data.
#include "passes/matcher.h"
#include "passes/pass.h"
#include "passes/shape_inference.h"

namespace kiln::passes {
namespace {

bool same_dims(const ir::Value* a, const ir::Value* b) {
  if (!a->rank_known || !b->rank_known || a->shape.size() != b->shape.size()) return false;
  for (size_t i = 0; i < a->shape.size(); ++i)
    if (!(a->shape[i] == b->shape[i])) return false;
  return true;
}

// The earliest value with `v`'s dims along a chain of producers whose output has their first input's dims.
ir::Value* same_dims_source(ir::Value* v) {
  for (int hops = 0; hops < 64; ++hops) {
    const ir::Node* p = v->producer;
    if (!p || p->inputs.empty() || !p->inputs[0] || p->outputs.size() != 1 || !same_dims(p->inputs[0], v)) break;
    v = p->inputs[0];
  }
  return v;
}

// Shape over all dims (no start/end attributes other than the whole range).
bool whole_shape(const ir::Node& n) {
  const Attribute* s = n.attrs.find("start");
  const Attribute* e = n.attrs.find("end");
  return (!s || (s->type() == AttrType::kINT && s->i() == 0)) && !e;
}

class ShapeFromSource final : public Pass {
 public:
  std::string_view name() const override { return "shape_from_source"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    g.rebuild_links();
    std::vector<ir::Node*> shapes;
    for (auto& n : g.nodes())
      if (n->op_type == "Shape" && n->domain.empty() && n->inputs.size() == 1 && n->inputs[0] &&
          n->outputs.size() == 1)
        shapes.push_back(n.get());
    int changes = 0;
    for (ir::Node* s : shapes) {
      for (bool moved = true; moved;) {
        moved = false;
        ir::Value* x = s->inputs[0];
        if (ir::Value* src = same_dims_source(x); src != x) {
          g.set_node_input(s, 0, src);
          moved = true;
        } else if (const ir::Node* t = match::producer_op(x, "Transpose"); t && whole_shape(*s) && x->rank_known) {
          auto perm = t->attrs.get_ints("perm");
          if (!perm.ok() || perm->size() != x->shape.size()) break;
          moved = through_transpose(g, s, t->inputs[0], *perm);
        }
        changes += moved;
      }
    }
    if (changes) {
      g.rebuild_links();
      ctx.verbose("shape_from_source: " + std::to_string(changes) + " Shape reads moved to earlier values");
    }
    ctx.changes = changes;
    return changes ? g.topo_sort() : Status::Ok();
  }

 private:
  // Shape(Transpose(x, perm)) -> Gather(Shape(x), perm): the Shape node reads x, a Gather after it produces the
  // value the Shape node did (same name, so later readers are untouched).
  static bool through_transpose(ir::Graph& g, ir::Node* s, ir::Value* x, const std::vector<int64_t>& perm) {
    ir::Value* out = s->outputs[0];
    const std::string name = out->name;
    if (!g.rename_value(out, name + "_untransposed")) return false;
    g.set_node_input(s, 0, x);
    if (!infer_node(g, *s).ok()) return false;
    ir::Value* idx =
        g.add_constant(name + "_perm", Tensor::from_vector<int64_t>({static_cast<int64_t>(perm.size())}, perm));
    ir::Node* gather = g.add_node("Gather", g.unique_node_name(s->name + "_perm"), {out, idx}, {name}, {}, 13);
    g.replace_all_uses(out, gather->outputs[0]);
    // replace_all_uses moved the Gather's own read of `out` too: point it back.
    g.set_node_input(gather, 0, out);
    return infer_node(g, *gather).ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_shape_from_source() { return std::make_unique<ShapeFromSource>(); }

}  // namespace kiln::passes
