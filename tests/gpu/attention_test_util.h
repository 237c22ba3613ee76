// GPU test helpers for kiln::FusedAttention: a case (shapes, layouts, mask broadcast, causal), its description, and
// a graph of one FusedAttention node over random inputs with an optional forced tactic. Shared by the tactic
// suites of our kernel (test_attention_tactics.cpp) and of cuDNN's (test_dnn_attention.cpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../unit/engine_test_util.h"
#include "gpu_test_util.h"
#include "ops/attention_layout.h"
#include "passes/shape_inference.h"

namespace kiln::gpu_testing {

struct AttnCase {
  const char* name;
  int64_t B, H, S, D;
  const char* qkv = "bhsd";
  const char* out = "bhsd";
  Dims mask;  // empty: none; else broadcast to [B, H, S, Sk]
  bool causal = false;
  int64_t Sk = 0;  // keys; 0: S (separate Q/K/V layouts only)
  int64_t Hk = 0;  // K/V heads (grouped-query attention, divides H); 0: H (separate layouts only)
  int64_t keys() const { return Sk ? Sk : S; }
  int64_t kv_heads() const { return Hk ? Hk : H; }
};

inline std::string describe(const AttnCase& c, DataType dt, const std::string& tactic) {
  const std::string hk = c.kv_heads() != c.H ? " Hk" + std::to_string(c.kv_heads()) : "";
  return std::string(c.name) + " " + dtype_name(dt) + " B" + std::to_string(c.B) + " H" + std::to_string(c.H) + " S" +
         std::to_string(c.S) + " Sk" + std::to_string(c.keys()) + hk + " D" + std::to_string(c.D) + " " + c.qkv + "->" +
         c.out + " mask" + dims_to_string(c.mask) + (c.causal ? " causal" : "") + " tactic '" + tactic + "'";
}

inline ir::Value* input(ir::Graph& g, const std::string& name, DataType dt, const Dims& shape) {
  return test::add_input(g, name, dt, ops::shape_from_dims(shape));
}

// One FusedAttention node "attn" with output "y" over inputs of type dt, added to g (empty: a network's graph
// too), their random values appended to *inputs; `tactic` empty: the kernel's untuned default.
inline void fill_attention_graph(ir::Graph& g, const AttnCase& c, DataType dt, const std::string& tactic,
                                 std::vector<Tensor>* inputs, uint32_t seed) {
  std::vector<ir::Value*> in;
  const std::string layout = c.qkv;
  const ops::AttentionAxes ax = ops::attention_axes(layout);
  if (ops::attention_layout_packed(layout)) {
    Dims shape(5);
    shape[ax.b] = c.B, shape[ax.s] = c.S, shape[2] = 3, shape[3] = c.H, shape[4] = c.D;
    in = {input(g, "qkv", dt, shape), nullptr, nullptr};
    inputs->push_back(random_tensor(dt, shape, seed, -1, 1));
  } else {
    for (const char* n : {"q", "k", "v"}) {
      Dims shape(4);
      const bool q = std::string(n) == "q";
      shape[ax.b] = c.B, shape[ax.h] = q ? c.H : c.kv_heads(), shape[ax.s] = q ? c.S : c.keys(), shape[3] = c.D;
      in.push_back(input(g, n, dt, shape));
      inputs->push_back(random_tensor(dt, shape, seed++, -1, 1));
    }
  }
  if (!c.mask.empty()) {
    in.push_back(input(g, "mask", dt, c.mask));
    // Mostly small values and some large negative ones (padding), as real masks are.
    Tensor m = random_tensor(DataType::kFLOAT, c.mask, seed + 7, -3, 0);
    for (int64_t i = 0; i < m.numel(); i += 5) m.data<float>()[i] = -10000.f;
    inputs->push_back(m.cast(dt));
  }
  Attributes a;
  a.set("qkv_layout", Attribute(std::string(c.qkv)));
  a.set("out_layout", Attribute(std::string(c.out)));
  if (c.causal) a.set("causal", Attribute(int64_t{1}));
  if (!tactic.empty()) a.set("kiln.tactic", Attribute(tactic));
  ir::Node* n = g.add_node("FusedAttention", "attn", in, {"y"}, a, 1, "kiln");
  Status st = passes::infer_node(g, *n);
  EXPECT_TRUE(st.ok()) << st.message();
  g.outputs().push_back(n->outputs[0]);
}

// The same as a graph of its own.
inline std::unique_ptr<ir::Graph> attention_graph(const AttnCase& c, DataType dt, const std::string& tactic,
                                                  std::vector<Tensor>* inputs, uint32_t seed) {
  auto owned = std::make_unique<ir::Graph>();
  fill_attention_graph(*owned, c, dt, tactic, inputs, seed);
  return owned;
}

}  // namespace kiln::gpu_testing
