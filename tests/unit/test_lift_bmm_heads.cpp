// lift_bmm_heads (CLIPAttention's [B*H,S,D] torch.bmm form lifted to [B,H,S,D]), fuse_attention's two-mask form and
// its query scale before the head views:
// the graph after each pass, and its outputs against the unfused graph on the reference CPU kernels.
#include <gtest/gtest.h>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "passes/pass_manager.h"
#include "passes/shape_inference.h"

using namespace kiln;

namespace {

struct Quiet : ILogger {
  void log(Severity, const char*) noexcept override {}
};

// A graph builder whose batch is the symbol "batch" (torch.onnx's dynamic axis), opset 17.
struct Net {
  std::unique_ptr<ir::Graph> g = std::make_unique<ir::Graph>();
  int seed = 1;
  Net() { g->set_opset(17); }
  ir::Value* input(const std::string& name, std::vector<int64_t> shape, bool symbolic_batch) {
    ir::Value* v = test::graph_input(*g, name, std::move(shape));
    if (symbolic_batch) v->shape[0] = ops::Dim::symbol("batch");
    return v;
  }
  ir::Value* c(Tensor t) { return g->add_constant("c" + std::to_string(seed++), std::move(t)); }
  ir::Value* ints(std::vector<int64_t> v) {
    const int64_t n = static_cast<int64_t>(v.size());
    return c(Tensor::from_vector<int64_t>({n}, std::move(v)));
  }
  ir::Value* weight(std::vector<int64_t> shape) { return c(test::random_f32(shape, seed * 7919u, -0.5f, 0.5f)); }
  ir::Value* op(const std::string& type, std::vector<ir::Value*> in, Attributes a = {}) {
    return g->add_node(type, g->unique_node_name(type), in, {type + std::to_string(seed++)}, std::move(a), 17)
        ->outputs[0];
  }
  ir::Value* transpose(ir::Value* x, std::vector<int64_t> perm) {
    Attributes a;
    a.set("perm", Attribute(perm));
    return op("Transpose", {x}, a);
  }
  // Concat of shape pieces: scalars (Unsqueezed, as torch.onnx writes a Python int from a Shape) and constants.
  ir::Value* target(std::vector<ir::Value*> pieces) {
    std::vector<ir::Value*> in;
    for (ir::Value* p : pieces) in.push_back(p->shape.empty() ? op("Unsqueeze", {p, ints({0})}) : p);
    Attributes a;
    a.set("axis", Attribute(int64_t{0}));
    return op("Concat", in, a);
  }
  // Element i of Shape(x), a scalar.
  ir::Value* dim(ir::Value* x, int64_t i) {
    Attributes a;
    a.set("axis", Attribute(int64_t{0}));
    return op("Gather", {op("Shape", {x}), c(Tensor::from_vector<int64_t>({}, {i}))}, a);
  }
};

// CLIPAttention (eager) as torch.onnx exports it: q = q_proj(x) * scale; each of q/k/v viewed [B,S,H,D],
// transposed to [B,H,S,D] and viewed [B*H,-1,D] (B*H = Mul(Gather(Shape(x), 0), H)); scores = bmm(q, k^T);
// viewed [B,H,S,Sk] for the causal mask, [B*H,S,Sk] again, [B,H,S,Sk] for the padding mask, [B*H,S,Sk] for the
// Softmax (Sk = Gather(Shape(k), 1)); bmm with v; viewed [B,H,S,D], transposed, reshaped [B,S,E].
// `heads_merged` false views [B,H*S,D] instead (the rows of all heads together): not the per-head form.
// `dynamic_seq` views q with -1 too and takes S from Shape(x) (a dynamic sequence length): inference then names q's,
// k's and v's lengths apart, and only unification tells the bmms' contraction dims equal.
ir::Value* clip_attention(Net& n, ir::Value* x, ir::Value* causal, ir::Value* pad, int64_t S, int64_t H, int64_t D,
                          bool heads_merged = true, bool dynamic_seq = false) {
  const int64_t E = H * D;
  ir::Value* bsz = n.dim(x, 0);
  ir::Value* seq = dynamic_seq ? n.dim(x, 1) : n.ints({S});
  ir::Value* bh = n.op("Mul", {bsz, n.c(Tensor::from_vector<int64_t>({}, {H}))});
  auto split = [&](ir::Value* p, bool tgt) {
    ir::Value* t = n.transpose(
        n.op("Reshape", {p, n.target({bsz, n.ints({tgt && !dynamic_seq ? S : -1, H, D})})}), {0, 2, 1, 3});
    ir::Value* to3 = heads_merged ? n.target({bh, n.ints({-1, D})}) : n.target({bsz, n.ints({-1, D})});
    return n.op("Reshape", {t, to3});
  };
  ir::Value* q = split(n.op("Mul", {n.op("MatMul", {x, n.weight({E, E})}),
                                    n.c(Tensor::from_vector<float>({}, {1.0f / std::sqrt(static_cast<float>(D))}))}),
                       true);
  ir::Value* k = split(n.op("MatMul", {x, n.weight({E, E})}), false);
  ir::Value* v = split(n.op("MatMul", {x, n.weight({E, E})}), false);
  ir::Value* src_len = n.dim(k, 1);
  ir::Value* s = n.op("MatMul", {q, n.transpose(k, {0, 2, 1})});
  auto view4 = [&](ir::Value* t) { return n.op("Reshape", {t, n.target({bsz, n.ints({H}), seq, src_len})}); };
  auto view3 = [&](ir::Value* t) { return n.op("Reshape", {t, n.target({bh, seq, src_len})}); };
  if (heads_merged && causal) {
    s = view3(n.op("Add", {view4(s), causal}));
    s = view3(n.op("Add", {view4(s), pad}));
  }
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* o = n.op("MatMul", {n.op("Softmax", {s}, sm), v});
  if (!heads_merged) return o;
  o = n.op("Reshape", {o, n.target({bsz, n.ints({H}), seq, n.ints({D})})});
  return n.op("Reshape", {n.transpose(o, {0, 2, 1, 3}), n.target({bsz, seq, n.ints({E})})});
}

// Causal [B,1,S,S] (-1e4 above the diagonal) and padding [B,1,S,S] masks (the last keys of row 1 hidden).
std::vector<Tensor> clip_inputs(int64_t B, int64_t S, int64_t E) {
  Tensor causal(DataType::kFLOAT, {B, 1, S, S}), pad(DataType::kFLOAT, {B, 1, S, S});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) {
        causal.data<float>()[(b * S + i) * S + j] = j > i ? -1e4f : 0.0f;
        pad.data<float>()[(b * S + i) * S + j] = (b == 1 && j >= S - 3) ? -1e4f : 0.0f;
      }
  return {test::random_f32({B, S, E}, 30), causal, pad};
}

// Runs `l` on a copy of the net's graph (shape inference first) and checks the copy computes what the original does.
std::unique_ptr<ir::Graph> passes_and_compare(Net& n, passes::PassList l, const std::vector<Tensor>& in) {
  static Quiet quiet;
  passes::PassContext ctx(quiet, {});
  EXPECT_TRUE(passes::make_shape_inference()->apply(*n.g, ctx).ok());
  auto out = n.g->clone();
  l.push_back(passes::make_dead_code_elimination());
  Status st = test::run_passes(*out, std::move(l));
  EXPECT_TRUE(st.ok()) << st.message();
  auto want = test::run_reference(*n.g, in), got = test::run_reference(*out, in);
  EXPECT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) test::expect_close(got[i], want[i], 1e-5);
  return out;
}

int ranked(const ir::Graph& g, const std::string& op, size_t rank) {
  int c = 0;
  for (auto& n : g.nodes()) c += n->op_type == op && n->outputs[0]->rank_known && n->outputs[0]->shape.size() == rank;
  return c;
}

TEST(LiftBmmHeads, ClipFormWithSymbolicBatchBecomesPerHead) {
  const int64_t B = 2, S = 9, H = 2, D = 8;
  for (bool symbolic : {true, false}) {
    SCOPED_TRACE(symbolic ? "symbolic batch" : "static batch");
    Net n;
    ir::Value* x = n.input("x", {B, S, H * D}, symbolic);
    ir::Value* causal = n.input("causal", {B, 1, S, S}, symbolic);
    ir::Value* pad = n.input("pad", {B, 1, S, S}, symbolic);
    n.g->outputs().push_back(clip_attention(n, x, causal, pad, S, H, D));
    const auto in = clip_inputs(B, S, H * D);
    // Before: the scores, Softmax and both products are 3-D.
    auto lifted = passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads()), in);
    EXPECT_EQ(ranked(*n.g, "MatMul", 3), 5);  // 3 projections + 2 bmm
    EXPECT_EQ(ranked(*n.g, "Softmax", 3), 1);
    // After: both products and the Softmax per head, the masks added to [B,H,S,Sk] scores with no view between.
    EXPECT_EQ(ranked(*lifted, "MatMul", 4), 2) << ir::print(*lifted);
    EXPECT_EQ(ranked(*lifted, "Softmax", 4), 1);
    EXPECT_EQ(ranked(*lifted, "Softmax", 3), 0);
    for (auto& node : lifted->nodes())
      if (node->op_type == "Add") EXPECT_NE(node->inputs[0]->producer->op_type, "Reshape") << node->name;
    // And fuse_attention takes it, the two masks as their sum.
    auto fused = passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads(), passes::make_fuse_attention()), in);
    EXPECT_EQ(test::count_ops(*fused, "FusedAttention"), 1) << ir::print(*fused);
    EXPECT_EQ(test::count_ops(*fused, "Softmax"), 0);
    EXPECT_EQ(test::count_ops(*fused, "MatMul"), 3);
  }
}

// With a dynamic sequence length the exporter's views name q's, k's and v's lengths apart: inference node by node
// (no unification) gives P = Softmax(q.k^T) [B*H,Sq,Sk] and v [B*H,Sv,D] with Sk != Sv, and the strict contraction
// check would leave the second bmm 3-D. The shape_inference pass proves Sk == Sv (the bmm's contraction), and both
// products are lifted and fused.
TEST(LiftBmmHeads, ClipFormWithDynamicSequenceLiftsOnceInferenceUnifiesLengths) {
  const int64_t B = 2, S = 9, H = 2, D = 8;
  Net n;
  ir::Value* x = n.input("x", {B, S, H * D}, true);
  x->shape[1] = ops::Dim::symbol("seq");
  ir::Value* causal = n.input("causal", {B, 1, S, S}, true);
  ir::Value* pad = n.input("pad", {B, 1, S, S}, true);
  causal->shape[2] = causal->shape[3] = pad->shape[2] = pad->shape[3] = ops::Dim::symbol("seq");
  n.g->outputs().push_back(clip_attention(n, x, causal, pad, S, H, D, true, true));
  auto second_bmm = [](ir::Graph& g) -> ir::Node* {
    for (auto& node : g.nodes())
      if (node->op_type == "MatMul" && node->inputs[0]->producer && node->inputs[0]->producer->op_type == "Softmax")
        return node.get();
    return nullptr;
  };
  {
    auto plain = n.g->clone();
    ASSERT_TRUE(plain->topo_sort().ok());
    for (auto& node : plain->nodes()) ASSERT_TRUE(passes::infer_node(*plain, *node).ok()) << node->name;
    ir::Node* pv = second_bmm(*plain);
    ASSERT_NE(pv, nullptr);
    ASSERT_EQ(pv->inputs[0]->shape.size(), 3u);
    EXPECT_NE(pv->inputs[0]->shape[2], pv->inputs[1]->shape[1]) << ir::print(*plain);
  }
  const auto in = clip_inputs(B, S, H * D);
  auto fused = passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads(), passes::make_fuse_attention()), in);
  ir::Node* pv = second_bmm(*n.g);
  ASSERT_NE(pv, nullptr);
  EXPECT_EQ(pv->inputs[0]->shape[2], pv->inputs[1]->shape[1]) << ir::print(*n.g);
  EXPECT_EQ(test::count_ops(*fused, "FusedAttention"), 1) << ir::print(*fused);
  EXPECT_EQ(test::count_ops(*fused, "Softmax"), 0);
}

// Rows of all heads viewed together ([B,H*S,D]: attention across heads, which a model may mean) are not per-head
// products: nothing is lifted; and without the pass, fuse_attention leaves the 3-D CLIP form alone.
TEST(LiftBmmHeads, OtherViewsAndTheUnliftedFormAreLeftAlone) {
  const int64_t B = 2, S = 9, H = 2, D = 8;
  const auto in = clip_inputs(B, S, H * D);
  {
    Net n;
    ir::Value* x = n.input("x", {B, S, H * D}, true);
    n.g->outputs().push_back(clip_attention(n, x, nullptr, nullptr, S, H, D, false));
    auto out =
        passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads(), passes::make_fuse_attention()), {in[0]});
    EXPECT_EQ(ranked(*out, "MatMul", 4), 0) << ir::print(*out);
    EXPECT_EQ(ranked(*out, "Softmax", 3), 1);
    EXPECT_EQ(test::count_ops(*out, "FusedAttention"), 0);
  }
  {
    Net n;
    ir::Value* x = n.input("x", {B, S, H * D}, true);
    n.g->outputs().push_back(
        clip_attention(n, x, n.input("causal", {B, 1, S, S}, true), n.input("pad", {B, 1, S, S}, true), S, H, D));
    auto out = passes_and_compare(n, test::list_of(passes::make_fuse_attention()), in);
    EXPECT_EQ(test::count_ops(*out, "FusedAttention"), 0);
    EXPECT_EQ(ranked(*out, "Softmax", 3), 1);
  }
}

// Swin's shifted-window attention: scores [B*nW,H,N,N] + relative position bias, viewed [B,nW,H,N,N] (the view's
// target from the hidden states' shape) for the window mask [1,nW,1,N,N] (or one per head [1,nW,H,N,N]), viewed back
// [-1,H,N,N]: the mask flattened to [B*nW,1,N,N] is added to the scores directly and fuse_attention takes both. A
// view that does not keep the heads and key positions ([B,nW,N,H,N], the mask [1,nW,1,1,N]) is left alone.
void swin_attention(Net& n, int64_t nW, int64_t H, int64_t N, int64_t D, std::vector<int64_t> mask_shape,
                    bool keeps_heads) {
  ir::Value* x = n.input("x", {2 * nW, N, H * D}, true);  // [B*nW, N, C] windows
  ir::Value* mask = n.input("mask", mask_shape, false);
  auto heads = [&](std::vector<int64_t> perm) {
    return n.transpose(n.op("Reshape", {n.op("MatMul", {x, n.weight({H * D, H * D})}), n.ints({0, 0, H, D})}), perm);
  };
  ir::Value* s = n.op("MatMul", {heads({0, 2, 1, 3}), heads({0, 2, 3, 1})});
  s = n.op("Add", {s, n.c(test::random_f32({H, N, N}, 60))});
  ir::Value* windows = n.op("Div", {n.dim(x, 0), n.c(Tensor::from_vector<int64_t>({}, {nW}))});
  ir::Value* to5 = n.target({windows, keeps_heads ? n.ints({nW, H, N, N}) : n.ints({nW, N, H, N})});
  s = n.op("Reshape", {n.op("Add", {n.op("Reshape", {s, to5}), mask}), n.ints({-1, H, N, N})});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n.g->outputs().push_back(n.op("MatMul", {n.op("Softmax", {s}, sm), heads({0, 2, 1, 3})}));
}

TEST(LiftBmmHeads, SwinWindowMaskThroughAFiveDimViewIsAddedToTheScores) {
  const int64_t nW = 4, H = 2, N = 9, D = 8;
  for (bool per_head : {false, true}) {
    SCOPED_TRACE(per_head ? "mask per head" : "mask over heads");
    Net n;
    const std::vector<int64_t> ms = {1, nW, per_head ? H : 1, N, N};
    swin_attention(n, nW, H, N, D, ms, true);
    const std::vector<Tensor> in = {test::random_f32({2 * nW, N, H * D}, 62), test::random_f32(ms, 61, -3, 0)};
    auto lifted = passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads()), in);
    EXPECT_EQ(ranked(*lifted, "Add", 5), 0) << ir::print(*lifted);
    const ir::Node* sm = test::find_op(*lifted, "Softmax");
    ASSERT_NE(sm, nullptr);
    EXPECT_EQ(sm->inputs[0]->producer->op_type, "Add");
    auto fused = passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads(), passes::make_fuse_attention()), in);
    const ir::Node* a = test::find_op(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    ASSERT_EQ(a->inputs.size(), 4u);
    EXPECT_EQ(a->inputs[3]->shape.size(), 4u);
    EXPECT_EQ(test::count_ops(*fused, "Softmax"), 0);
  }
  Net n;
  swin_attention(n, nW, H, N, D, {1, nW, 1, 1, N}, false);
  auto kept = passes_and_compare(n, test::list_of(passes::make_lift_bmm_heads(), passes::make_fuse_attention()),
                                 {test::random_f32({2 * nW, N, H * D}, 62), test::random_f32({1, nW, 1, 1, N}, 61)});
  EXPECT_EQ(ranked(*kept, "Add", 5), 1) << ir::print(*kept);
  EXPECT_EQ(test::count_ops(*kept, "FusedAttention"), 0);
}

// Add(Add(scores, m1), m2) on 4-D scores: one FusedAttention whose mask is m1 + m2; a second Add whose other operand
// is the first Add's result again (not a mask) is left alone.
TEST(FuseAttention, TwoAdditiveMasksBecomeTheirSum) {
  const int64_t B = 2, S = 7, H = 2, D = 8;
  Net n;
  ir::Value* q = n.input("q", {B, H, S, D}, false);
  ir::Value* k = n.input("k", {B, H, S, D}, false);
  ir::Value* v = n.input("v", {B, H, S, D}, false);
  ir::Value* m1 = n.input("m1", {1, 1, S, S}, false);
  ir::Value* m2 = n.input("m2", {B, 1, 1, S}, false);
  ir::Value* s = n.op("MatMul", {q, n.transpose(k, {0, 1, 3, 2})});
  s = n.op("Add", {m2, n.op("Add", {s, m1})});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n.g->outputs().push_back(n.op("MatMul", {n.op("Softmax", {s}, sm), v}));
  std::vector<Tensor> in = {test::random_f32({B, H, S, D}, 40), test::random_f32({B, H, S, D}, 41),
                            test::random_f32({B, H, S, D}, 42), test::random_f32({1, 1, S, S}, 43, -3, 0),
                            test::random_f32({B, 1, 1, S}, 44, -3, 0)};
  auto out = passes_and_compare(n, test::list_of(passes::make_fuse_attention()), in);
  const ir::Node* a = test::find_op(*out, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*out);
  ASSERT_EQ(a->inputs.size(), 4u);
  ASSERT_NE(a->inputs[3]->producer, nullptr);
  EXPECT_EQ(a->inputs[3]->producer->op_type, "Add");
  EXPECT_EQ(a->inputs[3]->shape, (ops::Shape{B, 1, S, S}));

  Net r;
  q = r.input("q", {B, H, S, D}, false);
  k = r.input("k", {B, H, S, D}, false);
  v = r.input("v", {B, H, S, D}, false);
  m1 = r.input("m1", {1, 1, S, S}, false);
  ir::Value* first = r.op("Add", {r.op("MatMul", {q, r.transpose(k, {0, 1, 3, 2})}), m1});
  s = r.op("Add", {first, first});
  r.g->outputs().push_back(r.op("MatMul", {r.op("Softmax", {s}, sm), v}));
  auto kept = passes_and_compare(r, test::list_of(passes::make_fuse_attention()), {in[0], in[1], in[2], in[3]});
  EXPECT_EQ(test::count_ops(*kept, "FusedAttention"), 0) << ir::print(*kept);
}

// q_proj(x) * c before the head views (CLIP, Whisper): the attention's scale takes c and the views read the
// projection; with the scaled value read elsewhere too, the Mul stays and the scale is the rest.
TEST(FuseAttention, QueryScaleBeforeTheHeadViewsGoesIntoTheScale) {
  const int64_t B = 2, S = 7, H = 2, D = 8, E = H * D;
  for (bool shared : {false, true}) {
    SCOPED_TRACE(shared ? "scaled query read elsewhere" : "");
    Net n;
    ir::Value* x = n.input("x", {B, S, E}, false);
    auto heads = [&](ir::Value* p, std::vector<int64_t> perm) {
      return n.transpose(n.op("Reshape", {p, n.ints({0, 0, H, D})}), perm);
    };
    ir::Value* scaled =
        n.op("Mul", {n.op("MatMul", {x, n.weight({E, E})}), n.c(Tensor::from_vector<float>({}, {0.3f}))});
    ir::Value* q = heads(scaled, {0, 2, 1, 3});
    ir::Value* kt = heads(n.op("MatMul", {x, n.weight({E, E})}), {0, 2, 3, 1});
    ir::Value* v = heads(n.op("MatMul", {x, n.weight({E, E})}), {0, 2, 1, 3});
    Attributes sm;
    sm.set("axis", Attribute(int64_t{-1}));
    ir::Value* s = n.op("Div", {n.op("MatMul", {q, kt}), n.c(Tensor::from_vector<float>({}, {2.0f}))});
    n.g->outputs().push_back(n.op("MatMul", {n.op("Softmax", {s}, sm), v}));
    if (shared) n.g->outputs().push_back(scaled);
    auto out = passes_and_compare(n, test::list_of(passes::make_fuse_attention()), {test::random_f32({B, S, E}, 50)});
    const ir::Node* a = test::find_op(*out, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*out);
    EXPECT_NEAR(a->attrs.get_float("scale").value(), shared ? 0.5 : 0.15, 1e-6);
    EXPECT_EQ(test::count_ops(*out, "Mul"), shared ? 1 : 0) << ir::print(*out);
  }
}

}  // namespace
