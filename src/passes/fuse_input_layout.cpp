// fuse_input_layout pass: the Transpose into channels-last that layout_nhwc leaves at a CNN's input becomes one
// kiln::ToNhwc layer, together with the lowering Cast before it and the zero channel padding (Pad on the last
// axis) after it. Three passes over the largest activation of the network become one, and the layer writes a
// padded pixel as one 16-byte store. Other NCHW-to-NHWC Transposes with few channels (at most 64 bytes per
// pixel) take the same layer, which beats the general tiled transpose there.
#include "ops/op_util.h"
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

bool is_float(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

bool read_once(const ir::Graph& g, const ir::Value* v) { return v->users.size() == 1 && !match::is_graph_output(g, v); }

// The padding Pad(x, pads) adds after the last axis of rank-4 x when it pads nothing else, with zeros; else -1.
int64_t channel_padding(const ir::Node& pad) {
  if (pad.op_type != "Pad" || !pad.domain.empty() || pad.inputs.size() < 2 || pad.inputs.size() > 3) return -1;
  auto mode = pad.attrs.get_string("mode", "constant");
  if (!mode.ok() || *mode != "constant") return -1;
  if (pad.inputs.size() == 3 && pad.inputs[2]) {
    auto v = match::constant_scalar(pad.inputs[2]);
    if (!v || *v != 0.0) return -1;
  }
  const ir::Value* pads = pad.inputs[1];
  if (!pads || !pads->is_constant() || pads->constant->numel() != 8) return -1;
  std::vector<int64_t> p = pads->constant->to_i64_vector();
  for (int i = 0; i < 7; ++i)
    if (p[i] != 0) return -1;
  return p[7] >= 0 ? p[7] : -1;
}

class FuseInputLayout final : public Pass {
 public:
  std::string_view name() const override { return "fuse_input_layout"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    std::vector<ir::Node*> todo;
    for (auto& n : g.nodes())
      if (match::perm_is(n.get(), {0, 2, 3, 1})) todo.push_back(n.get());
    int fused = 0;
    for (ir::Node* t : todo) {
      ir::Value* x = t->inputs[0];
      ir::Value* out = t->outputs[0];
      if (!x || !x->rank_known || x->shape.size() != 4 || !x->shape[1].is_static() || !is_float(x->dtype)) continue;
      const int64_t c = x->shape[1].value;
      const DataType to = x->dtype;
      ir::Value* src = x;
      bool absorbed = false;
      // The lowering Cast in front (float32 input to float16/bfloat16), when the Transpose is its only reader.
      if (x->producer && x->producer->op_type == "Cast" && x->producer->domain.empty() && read_once(g, x) &&
          is_float(x->producer->inputs[0]->dtype)) {
        src = x->producer->inputs[0];
        absorbed = true;
      }
      int64_t channels = c;
      if (read_once(g, out)) {
        ir::Node* reader = out->users[0];
        const int64_t extra = channel_padding(*reader);
        if (extra >= 0 && reader->inputs[0] == out) {
          channels += extra;
          out = reader->outputs[0];
          absorbed = true;
        }
      }
      if (!absorbed && channels * static_cast<int64_t>(dtype_size(to)) > 64) continue;
      if (ctx.options.has_kernel && !ctx.options.has_kernel("ToNhwc", "kiln", src->dtype)) continue;
      Attributes a;
      a.set("to", ops::onnx_code_of(to));
      a.set("channels", channels);
      fusion::replace_with_node(g, out, "ToNhwc", "kiln", {src}, std::move(a), 1, t->name);
      ++fused;
    }
    if (!fused) return Status::Ok();
    ctx.changes += fused;
    fusion::prune_dead_nodes(g);
    KILN_RETURN_IF_ERROR(g.topo_sort());
    ctx.verbose("fuse_input_layout: " + std::to_string(fused) + " channels-last conversions as kiln::ToNhwc");
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_input_layout() { return std::make_unique<FuseInputLayout>(); }

}  // namespace kiln::passes
