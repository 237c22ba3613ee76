// Grouped-query attention (K/V with Hk heads dividing Q's H; Hk = 1 is multi-query): kiln::FusedAttention's
// geometry, shape inference and CPU reference against a direct computation with the repeat written out, and
// fuse_attention's folding of HF's repeat_kv (Unsqueeze -> Expand or Tile -> Reshape) against the unfused graph.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "ops/attention_layout.h"
#include "ops/layout_util.h"
#include "passes/pass_manager.h"

using namespace kiln;

namespace {

struct Quiet : ILogger {
  void log(Severity, const char*) noexcept override {}
};

Attributes layouts(const std::string& in, const std::string& out) {
  Attributes a;
  a.set("qkv_layout", in);
  a.set("out_layout", out);
  return a;
}

// The permutation that stores a [B,H,S,D] tensor in `layout` ("bhsd", "bshd" or "sbhd").
std::vector<int64_t> perm_of(const std::string& layout) {
  if (layout == "bshd") return {0, 2, 1, 3};
  if (layout == "sbhd") return {2, 0, 1, 3};
  return {0, 1, 2, 3};
}

Tensor to_layout(const Tensor& bhsd, const std::string& layout) { return ops::permute(bhsd, perm_of(layout)).value(); }

TEST(GqaAttention, GeometryIndexesKvHeadsByGroup) {
  const int64_t B = 2, H = 6, Hk = 2, Sq = 5, Sk = 7, D = 8, Dv = 4;
  // bhsd: K [B,Hk,Sk,D], strides over its own Hk heads.
  const Dims q = {B, H, Sq, D}, k = {B, Hk, Sk, D}, v = {B, Hk, Sk, Dv};
  auto g = ops::attention_geometry(Attributes{}, q, &k, &v);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g->H, H);
  EXPECT_EQ(g->Hk, Hk);
  EXPECT_EQ(g->k.st[0], Hk * Sk * D);
  EXPECT_EQ(g->k.st[1], Sk * D);
  EXPECT_EQ(g->v.st[0], Hk * Sk * Dv);
  EXPECT_EQ(g->out_shape, (Dims{B, H, Sq, Dv}));
  for (int64_t h = 0; h < H; ++h) EXPECT_EQ(g->kv_head(h), h / 3) << h;
  // bshd: K [B,Sk,Hk,D]; a token's row holds Hk heads.
  const Dims qb = {B, Sq, H, D}, kb = {B, Sk, Hk, D}, vb = {B, Sk, Hk, Dv};
  auto gb = ops::attention_geometry(layouts("bshd", "bshd"), qb, &kb, &vb);
  ASSERT_TRUE(gb.ok()) << gb.status().message();
  EXPECT_EQ(gb->Hk, Hk);
  EXPECT_EQ(gb->k.st[0], Sk * Hk * D);
  EXPECT_EQ(gb->k.st[1], D);
  EXPECT_EQ(gb->k.st[2], Hk * D);
  EXPECT_EQ(gb->out_shape, (Dims{B, Sq, H, Dv}));
  // Multi-query and plain multi-head.
  const Dims k1 = {B, 1, Sk, D}, v1 = {B, 1, Sk, Dv};
  auto g1 = ops::attention_geometry(Attributes{}, q, &k1, &v1);
  ASSERT_TRUE(g1.ok());
  for (int64_t h = 0; h < H; ++h) EXPECT_EQ(g1->kv_head(h), 0);
  const Dims kh = {B, H, Sk, D}, vh = {B, H, Sk, Dv};
  auto gh = ops::attention_geometry(Attributes{}, q, &kh, &vh);
  ASSERT_TRUE(gh.ok());
  for (int64_t h = 0; h < H; ++h) EXPECT_EQ(gh->kv_head(h), h);
  // Packed layouts have as many K/V heads as Q heads.
  auto gp = ops::attention_geometry(layouts("bs3hd", "bshd"), Dims{B, Sq, 3, H, D}, nullptr, nullptr);
  ASSERT_TRUE(gp.ok());
  EXPECT_EQ(gp->Hk, H);
}

TEST(GqaAttention, GeometryRefusesHeadCountsThatDoNotDivide) {
  const Dims q = {1, 6, 5, 8}, k4 = {1, 4, 5, 8}, v4 = {1, 4, 5, 8}, k2 = {1, 2, 5, 8}, v3 = {1, 3, 5, 8};
  auto bad = ops::attention_geometry(Attributes{}, q, &k4, &v4);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("4 heads, which does not divide Q's 6"), std::string::npos)
      << bad.status().message();
  auto mixed = ops::attention_geometry(Attributes{}, q, &k2, &v3);
  ASSERT_FALSE(mixed.ok()) << "K and V must have one head count";
  EXPECT_NE(mixed.status().message().find("do not fit Q"), std::string::npos) << mixed.status().message();
}

// Shape inference of a lone FusedAttention node: the output has Q's heads; K/V head counts that do not divide
// Q's, or differ between K and V, are errors that say so.
Status infer_attention(const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
                       ops::Shape* out) {
  ir::Graph g;
  ir::Value* qi = test::graph_input(g, "q", q);
  ir::Value* ki = test::graph_input(g, "k", k);
  ir::Value* vi = test::graph_input(g, "v", v);
  ir::Value* y = g.add_node("FusedAttention", "att", {qi, ki, vi}, {"y"}, {}, 1, "kiln")->outputs[0];
  g.outputs().push_back(y);
  static Quiet quiet;
  passes::PassContext ctx(quiet, {});
  Status st = passes::make_shape_inference()->apply(g, ctx);
  if (st.ok()) *out = y->shape;
  return st;
}

TEST(GqaAttention, ShapeInference) {
  ops::Shape out;
  ASSERT_TRUE(infer_attention({2, 8, 5, 16}, {2, 2, 7, 16}, {2, 2, 7, 4}, &out).ok());
  EXPECT_EQ(ops::shape_to_string(out), "[2,8,5,4]");
  Status st = infer_attention({2, 8, 5, 16}, {2, 3, 7, 16}, {2, 3, 7, 4}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("3 heads, which does not divide Q's 8"), std::string::npos) << st.message();
  st = infer_attention({2, 8, 5, 16}, {2, 2, 7, 16}, {2, 4, 7, 4}, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("K has 2 heads and V 4"), std::string::npos) << st.message();
}

// softmax(scale * Q K^T + mask [causal]) V with query head h reading K/V head h / (H / Hk), computed here from
// the [B,H,S,D] tensors directly (no FusedAttention code).
Tensor naive_gqa(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, bool causal, double scale) {
  const int64_t B = q.dim(0), H = q.dim(1), Sq = q.dim(2), D = q.dim(3), Hk = k.dim(1), Sk = k.dim(2), Dv = v.dim(3);
  const Tensor qd = q.cast(DataType::kDOUBLE), kd = k.cast(DataType::kDOUBLE), vd = v.cast(DataType::kDOUBLE);
  Tensor y(DataType::kDOUBLE, {B, H, Sq, Dv});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kh = h / (H / Hk);
      for (int64_t i = 0; i < Sq; ++i) {
        std::vector<double> s(Sk);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Sk; ++j) {
          double acc = 0;
          for (int64_t d = 0; d < D; ++d)
            acc +=
                qd.data<double>()[((b * H + h) * Sq + i) * D + d] * kd.data<double>()[((b * Hk + kh) * Sk + j) * D + d];
          acc *= scale;
          if (mask) acc += mask->get_f64((b * Sq + i) * Sk + j);  // [B,1,Sq,Sk]
          if (causal && j > i) acc = -std::numeric_limits<double>::infinity();
          s[j] = acc;
          mx = std::max(mx, acc);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int64_t d = 0; d < Dv; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < Sk; ++j) acc += s[j] * vd.data<double>()[((b * Hk + kh) * Sk + j) * Dv + d];
          y.data<double>()[((b * H + h) * Sq + i) * Dv + d] = acc / sum;
        }
      }
    }
  return y.cast(DataType::kFLOAT);
}

TEST(GqaAttention, ReferenceMatchesTheRepeatWrittenOut) {
  const int64_t B = 2, H = 6, Sq = 5, Sk = 7, D = 8, Dv = 4;
  uint32_t seed = 300;
  for (int64_t Hk : {1, 2, 3, 6})
    for (const char* in_l : {"bhsd", "bshd", "sbhd"})
      for (const char* out_l : {"bhsd", "bshd", "sbhd"})
        for (int masking = 0; masking < 3; ++masking) {  // none, additive [B,1,Sq,Sk], causal
          SCOPED_TRACE(std::to_string(Hk) + " K/V heads, " + in_l + " -> " + out_l + ", masking " +
                       std::to_string(masking));
          const Tensor q = test::random_f32({B, H, Sq, D}, ++seed), k = test::random_f32({B, Hk, Sk, D}, ++seed),
                       v = test::random_f32({B, Hk, Sk, Dv}, ++seed), m = test::random_f32({B, 1, Sq, Sk}, ++seed);
          ir::Graph g;
          const Tensor qi = to_layout(q, in_l), ki = to_layout(k, in_l), vi = to_layout(v, in_l);
          std::vector<ir::Value*> ins = {test::graph_input(g, "q", qi.shape()), test::graph_input(g, "k", ki.shape()),
                                         test::graph_input(g, "v", vi.shape())};
          std::vector<Tensor> feed = {qi, ki, vi};
          if (masking == 1) {
            ins.push_back(test::graph_input(g, "m", m.shape()));
            feed.push_back(m);
          }
          Attributes a = layouts(in_l, out_l);
          a.set("scale", Attribute(0.3f));
          if (masking == 2) a.set("causal", Attribute(int64_t{1}));
          g.outputs().push_back(g.add_node("FusedAttention", "att", ins, {"y"}, std::move(a), 1, "kiln")->outputs[0]);
          auto got = test::run_reference(g, feed);
          ASSERT_EQ(got.size(), 1u);
          const Tensor want = naive_gqa(q, k, v, masking == 1 ? &m : nullptr, masking == 2, 0.3);
          test::expect_close(got[0], to_layout(want, out_l), 1e-5);
        }
}

// ---------------------------------------------------------------- fuse_attention on repeat_kv

// A small graph builder, opset 17, shapes from shape inference.
struct Net {
  std::unique_ptr<ir::Graph> g = std::make_unique<ir::Graph>();
  int seed = 1;
  ir::Value* input(const std::string& name, std::vector<int64_t> shape) {
    return test::graph_input(*g, name, std::move(shape));
  }
  ir::Value* c(Tensor t) { return g->add_constant("c" + std::to_string(seed++), std::move(t)); }
  ir::Value* ints(std::vector<int64_t> v) {
    return c(Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
  }
  ir::Value* weight(std::vector<int64_t> shape) { return c(test::random_f32(shape, seed * 7919u, -0.5f, 0.5f)); }
  ir::Value* op(const std::string& type, std::vector<ir::Value*> in, Attributes a = {}) {
    return g->add_node(type, g->unique_node_name(type), in, {type + std::to_string(seed++)}, std::move(a), 17)
        ->outputs[0];
  }
  ir::Value* transpose(ir::Value* x, std::vector<int64_t> perm) {
    Attributes t;
    t.set("perm", Attribute(perm));
    return op("Transpose", {x}, t);
  }
};

// x [B,S,E] -> projection to h heads of d -> [B,h,S,d].
ir::Value* heads(Net& n, ir::Value* x, int64_t e, int64_t h, int64_t d) {
  ir::Value* p = n.op("MatMul", {x, n.weight({e, h * d})});
  return n.transpose(n.op("Reshape", {p, n.ints({0, 0, h, d})}), {0, 2, 1, 3});
}

enum class Repeat {
  kExpand,       // HF's repeat_kv: Unsqueeze(2) -> Expand [B,Hk,n,S,D] -> Reshape [B,Hk*n,S,D]
  kTile,         // the same values by Tile [1,1,n,1,1]
  kInterleaved,  // Unsqueeze(1) -> Expand [B,n,Hk,S,D]: head h reads h % Hk (torch's .repeat), not a GQA repeat
  kTile4d,       // Tile [1,n,1,1] of the 4-D tensor: also h % Hk
  kSplitsHeads,  // Unsqueeze(2) -> Expand, then a Reshape to [B,2*Hk*n,S,D/2]: not a head repeat
};

ir::Value* repeat(Net& n, ir::Value* x, int64_t B, int64_t Hk, int64_t rep, int64_t S, int64_t D, Repeat form) {
  switch (form) {
    case Repeat::kExpand:
      return n.op("Reshape", {n.op("Expand", {n.op("Unsqueeze", {x, n.ints({2})}), n.ints({B, Hk, rep, S, D})}),
                              n.ints({B, Hk * rep, S, D})});
    case Repeat::kTile:
      return n.op("Reshape", {n.op("Tile", {n.op("Unsqueeze", {x, n.ints({2})}), n.ints({1, 1, rep, 1, 1})}),
                              n.ints({B, Hk * rep, S, D})});
    case Repeat::kInterleaved:
      return n.op("Reshape", {n.op("Expand", {n.op("Unsqueeze", {x, n.ints({1})}), n.ints({B, rep, Hk, S, D})}),
                              n.ints({B, Hk * rep, S, D})});
    case Repeat::kTile4d:
      return n.op("Tile", {x, n.ints({1, rep, 1, 1})});
    case Repeat::kSplitsHeads:
      return n.op("Reshape", {n.op("Expand", {n.op("Unsqueeze", {x, n.ints({2})}), n.ints({B, Hk, rep, S, D})}),
                              n.ints({B, 2 * Hk * rep, S, D / 2})});
  }
  return nullptr;
}

struct GqaCase {
  int64_t H = 4, Hk = 2, Hv = 2;  // Hv: V's head count (Hk unless a test makes them differ)
  Repeat k_form = Repeat::kExpand, v_form = Repeat::kExpand;
  int masking = 0;  // 0 none, 1 additive [B,1,1,S] padding mask (a graph input), 2 causal Where
  bool k_repeat_is_output = false;
  bool k_repeat_shape_read = false;  // Shape(K repeated) read too (a dynamic-length export's key length)
};

constexpr int64_t kB = 2, kS = 9, kD = 32;

// Llama's eager attention over x [B,S,E]: q [B,H,S,D]; k and v projected to Hk (Hv) heads and repeated to H.
std::unique_ptr<Net> gqa_net(const GqaCase& c) {
  auto n = std::make_unique<Net>();
  const int64_t E = 64;
  ir::Value* x = n->input("x", {kB, kS, E});
  ir::Value* q = heads(*n, x, E, c.H, kD);
  ir::Value* k = repeat(*n, heads(*n, x, E, c.Hk, kD), kB, c.Hk, c.H / c.Hk, kS, kD, c.k_form);
  ir::Value* v = repeat(*n, heads(*n, x, E, c.Hv, kD), kB, c.Hv, c.H / c.Hv, kS, kD, c.v_form);
  ir::Value* s = n->op("Div", {n->op("MatMul", {q, n->transpose(k, {0, 1, 3, 2})}),
                               n->c(Tensor::from_vector<float>({}, {std::sqrt(static_cast<float>(kD))}))});
  if (c.masking == 1) s = n->op("Add", {s, n->input("mask", {kB, 1, 1, kS})});
  if (c.masking == 2) {
    Tensor keep(DataType::kBOOL, {1, 1, kS, kS});
    for (int64_t i = 0; i < kS; ++i)
      for (int64_t j = 0; j < kS; ++j) keep.data<bool>()[i * kS + j] = j <= i;
    s = n->op("Where", {n->c(keep), s, n->c(Tensor::from_vector<float>({}, {-1e9f}))});
  }
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n->g->outputs().push_back(n->op("MatMul", {n->op("Softmax", {s}, sm), v}));
  if (c.k_repeat_is_output) n->g->outputs().push_back(k);
  if (c.k_repeat_shape_read)
    n->g->outputs().push_back(n->op("Mul", {n->op("Shape", {k}), n->c(Tensor::from_vector<int64_t>({}, {3}))}));
  return n;
}

std::vector<Tensor> gqa_inputs(const GqaCase& c) {
  std::vector<Tensor> in = {test::random_f32({kB, kS, 64}, 501)};
  if (c.masking == 1) {
    Tensor m(DataType::kFLOAT, {kB, 1, 1, kS});
    for (int64_t i = 0; i < m.numel(); ++i) m.data<float>()[i] = (i / kS == 1 && i % kS >= kS - 3) ? -1e4f : 0.f;
    in.push_back(m);
  }
  return in;
}

// The graph after `l`, checked against the unfused graph on the reference kernels.
std::unique_ptr<ir::Graph> run_and_compare(Net& n, passes::PassList l, const std::vector<Tensor>& in,
                                           passes::PassOptions o = {}) {
  auto fused = n.g->clone();
  l.push_back(passes::make_dead_code_elimination());
  Status st = test::run_passes(*fused, std::move(l), o);
  EXPECT_TRUE(st.ok()) << st.message();
  auto want = test::run_reference(*n.g, in), got = test::run_reference(*fused, in);
  EXPECT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) test::expect_close(got[i], want[i], 1e-4);
  return fused;
}

// The K/V head count the graph's one FusedAttention reads (dim 1: bhsd), or -1.
int64_t kv_heads(const ir::Graph& g) {
  const ir::Node* a = test::find_op(g, "FusedAttention");
  if (!a || a->inputs.size() < 3 || !a->inputs[1]->rank_known || !a->inputs[1]->shape[1].is_static()) return -1;
  EXPECT_EQ(a->inputs[2]->shape[1].value, a->inputs[1]->shape[1].value);
  return a->inputs[1]->shape[1].value;
}

TEST(GqaFusion, RepeatKvIsReadUnrepeated) {
  struct Named {
    const char* what;
    GqaCase c;
  };
  const Named cases[] = {
      {"Expand, 4 heads / 2", {4, 2, 2, Repeat::kExpand, Repeat::kExpand, 0}},
      {"Tile, 4 heads / 2", {4, 2, 2, Repeat::kTile, Repeat::kTile, 0}},
      {"multi-query, padding mask", {4, 1, 1, Repeat::kExpand, Repeat::kExpand, 1}},
      {"6 heads / 3, causal", {6, 3, 3, Repeat::kExpand, Repeat::kExpand, 2}},
      {"K's repeat also read by a Shape", {4, 2, 2, Repeat::kExpand, Repeat::kExpand, 0, false, true}},
  };
  for (const Named& t : cases) {
    SCOPED_TRACE(t.what);
    auto n = gqa_net(t.c);
    auto g = run_and_compare(*n, test::list_of(passes::make_fuse_attention()), gqa_inputs(t.c));
    EXPECT_EQ(test::count_ops(*g, "FusedAttention"), 1) << ir::print(*g);
    EXPECT_EQ(test::count_ops(*g, "Softmax"), 0);
    EXPECT_EQ(kv_heads(*g), t.c.Hk) << ir::print(*g);
    EXPECT_EQ(test::count_ops(*g, "Expand") + test::count_ops(*g, "Tile") + test::count_ops(*g, "Unsqueeze"), 0)
        << ir::print(*g);
    // (A Shape of the repeat reads Shape(x) * [1,n,1,1] instead: run_and_compare checked its value.)
    if (t.c.masking == 2) {
      EXPECT_EQ(test::find_op(*g, "FusedAttention")->attrs.get_int("causal", 0).value(), 1);
    }
  }
}

// Forms that look like a repeat but are not GQA's mapping, or whose repeat something else reads: the attention
// still fuses (reading the repeated K/V), results unchanged.
TEST(GqaFusion, NotARepeatOrReadElsewhereKeepsTheRepeat) {
  struct Named {
    const char* what;
    GqaCase c;
  };
  GqaCase interleaved{4, 2, 2, Repeat::kInterleaved, Repeat::kInterleaved, 0};
  GqaCase tile4d{4, 2, 2, Repeat::kTile4d, Repeat::kTile4d, 0};
  GqaCase read_elsewhere{4, 2, 2, Repeat::kExpand, Repeat::kExpand, 0, true};
  GqaCase k_only{4, 2, 4, Repeat::kExpand, Repeat::kExpand, 0};            // V projected to 4 heads, "repeated" by 1
  GqaCase different_groups{4, 2, 1, Repeat::kExpand, Repeat::kExpand, 0};  // K 2 heads, V 1
  const Named cases[] = {{"Unsqueeze(1) + Expand: head h % Hk", interleaved},
                         {"Tile of the 4-D tensor: head h % Hk", tile4d},
                         {"the repeated K is also a graph output", read_elsewhere},
                         {"V not repeated (group 1)", k_only},
                         {"K and V with different head counts", different_groups}};
  for (const Named& t : cases) {
    SCOPED_TRACE(t.what);
    auto n = gqa_net(t.c);
    auto g = run_and_compare(*n, test::list_of(passes::make_fuse_attention()), gqa_inputs(t.c));
    EXPECT_EQ(test::count_ops(*g, "FusedAttention"), 1) << ir::print(*g);
    // (V's "repeat" by 1 is a repeat of group 1; K's group is 2: one FusedAttention cannot read both unrepeated.)
    EXPECT_EQ(kv_heads(*g), 4) << ir::print(*g);
    EXPECT_GE(test::count_ops(*g, "Expand") + test::count_ops(*g, "Tile"), 1) << ir::print(*g);
  }
}

TEST(GqaFusion, ReshapeThatSplitsHeadsIsNotARepeat) {
  // [B,Hk,n,S,D] reshaped to [B,2*H,S,D/2]: the scores MatMul then has 2*H heads of D/2; no GQA fold.
  Net n;
  const int64_t E = 64, H = 4, Hk = 2;
  ir::Value* x = n.input("x", {kB, kS, E});
  ir::Value* q = heads(n, x, E, 2 * H, kD / 2);
  ir::Value* k = repeat(n, heads(n, x, E, Hk, kD), kB, Hk, H / Hk, kS, kD, Repeat::kSplitsHeads);
  ir::Value* v = repeat(n, heads(n, x, E, Hk, kD), kB, Hk, H / Hk, kS, kD, Repeat::kSplitsHeads);
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n.g->outputs().push_back(
      n.op("MatMul", {n.op("Softmax", {n.op("MatMul", {q, n.transpose(k, {0, 1, 3, 2})})}, sm), v}));
  auto g = run_and_compare(n, test::list_of(passes::make_fuse_attention()), {test::random_f32({kB, kS, E}, 502)});
  EXPECT_EQ(test::count_ops(*g, "FusedAttention"), 1) << ir::print(*g);
  EXPECT_EQ(kv_heads(*g), 2 * H) << ir::print(*g);
  EXPECT_EQ(test::count_ops(*g, "Expand"), 2) << ir::print(*g);
}

// torch 2's SDPA export of HF's sdpa attention (repeat_kv before torch's SDPA): Q and K^T each multiplied by
// sqrt(scale), a boolean mask as Where(mask, 0, -inf) added to the scores, the NaN guard after the softmax.
TEST(GqaFusion, SdpaExportForm) {
  const int64_t B = 2, H = 4, Hk = 2, S = 11, D = 16;
  Net n;
  ir::Value* q = n.input("q", {B, H, S, D});
  ir::Value* k = n.input("k", {B, Hk, S, D});
  ir::Value* v = n.input("v", {B, Hk, S, D});
  ir::Value* keep = test::graph_input(*n.g, "keep", {B, 1, S, S}, DataType::kBOOL);
  const float s = std::sqrt(1.0f / std::sqrt(static_cast<float>(D)));
  auto scalar = [&](float x) { return n.c(Tensor::from_vector<float>({}, {x})); };
  ir::Value* kr = repeat(n, k, B, Hk, H / Hk, S, D, Repeat::kExpand);
  ir::Value* vr = repeat(n, v, B, Hk, H / Hk, S, D, Repeat::kExpand);
  ir::Value* qk =
      n.op("MatMul", {n.op("Mul", {q, scalar(s)}), n.op("Mul", {n.transpose(kr, {0, 1, 3, 2}), scalar(s)})});
  ir::Value* bias = n.op("Where", {keep, scalar(0.f), scalar(-std::numeric_limits<float>::infinity())});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* p = n.op("Softmax", {n.op("Add", {qk, bias})}, sm);
  p = n.op("Where", {n.op("IsNaN", {p}), scalar(0.f), p});
  n.g->outputs().push_back(n.op("MatMul", {p, vr}));
  Tensor mask(DataType::kBOOL, {B, 1, S, S});
  for (int64_t i = 0; i < mask.numel(); ++i)
    mask.data<bool>()[i] = (i % S) <= (i / S) % S && !(i / (S * S) == 1 && i % S == 0);
  const std::vector<Tensor> in = {test::random_f32({B, H, S, D}, 601), test::random_f32({B, Hk, S, D}, 602),
                                  test::random_f32({B, Hk, S, D}, 603), mask};
  auto g = run_and_compare(n, test::list_of(passes::make_fuse_attention()), in);
  const ir::Node* a = test::find_op(*g, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*g);
  EXPECT_EQ(a->inputs[1]->name, "k") << ir::print(*g);
  EXPECT_EQ(a->inputs[2]->name, "v") << ir::print(*g);
  EXPECT_EQ(a->attrs.get_int("masked_rows_zero", 0).value(), 1);
  EXPECT_NEAR(a->attrs.get_float("scale").value(), 0.25, 1e-6);
}

// The CUDA FP16 attention passes on Llama's GQA form with rotary embeddings on q and k (sink_head_transposes moves
// their head Transposes below the rotary, past repeat_kv's Unsqueeze, and moves the Shape its Expand target is
// computed from, which no constant folding took away here):
// one FusedAttention reading q, k and v in place ([B,S,H,D] and [B,S,Hk,D]) and no Transpose, Expand or Tile.
TEST(GqaFusion, CudaPassesReadProjectionsInPlace) {
  const int64_t E = 64, H = 4, Hk = 2, D = kD;
  for (int64_t hk : {Hk, int64_t{1}}) {
    SCOPED_TRACE(std::to_string(hk) + " K/V heads");
    Net n;
    ir::Value* x = n.input("x", {kB, kS, E});
    ir::Value* cos = n.c(test::random_f32({kS, D}, 91));
    ir::Value* sin = n.c(test::random_f32({kS, D}, 92));
    auto rotary = [&](ir::Value* t) {
      ir::Value* x1 = n.op("Slice", {t, n.ints({0}), n.ints({D / 2}), n.ints({3})});
      ir::Value* x2 = n.op("Slice", {t, n.ints({D / 2}), n.ints({D}), n.ints({-1})});
      Attributes cat;
      cat.set("axis", Attribute(int64_t{-1}));
      ir::Value* rot = n.op("Concat", {n.op("Neg", {x2}), x1}, cat);
      return n.op("Add", {n.op("Mul", {t, cos}), n.op("Mul", {rot, sin})});
    };
    // HF's Expand target: K's own dims from Shape, with the group inserted.
    auto hf_repeat = [&](ir::Value* t) {
      ir::Value* sh = n.op("Shape", {t});
      Attributes ax0;
      ax0.set("axis", Attribute(int64_t{0}));
      ir::Value* dims = n.op("Concat",
                             {n.op("Slice", {sh, n.ints({0}), n.ints({2})}), n.ints({H / hk}),
                              n.op("Slice", {sh, n.ints({2}), n.ints({4})})},
                             ax0);
      ir::Value* e = n.op("Expand", {n.op("Unsqueeze", {t, n.ints({2})}), dims});
      return n.op("Reshape", {e, n.ints({kB, H, kS, D})});
    };
    ir::Value* q = rotary(heads(n, x, E, H, D));
    ir::Value* k = hf_repeat(rotary(heads(n, x, E, hk, D)));
    ir::Value* v = hf_repeat(heads(n, x, E, hk, D));
    ir::Value* s = n.op("Div", {n.op("MatMul", {q, n.transpose(k, {0, 1, 3, 2})}),
                                n.c(Tensor::from_vector<float>({}, {std::sqrt(static_cast<float>(D))}))});
    Attributes sm;
    sm.set("axis", Attribute(int64_t{-1}));
    ir::Value* o = n.op("MatMul", {n.op("Softmax", {s}, sm), v});
    n.g->outputs().push_back(n.op("Reshape", {n.transpose(o, {0, 2, 1, 3}), n.ints({0, 0, H * D})}));
    passes::PassOptions o16;
    o16.backend = Backend::kCUDA;
    o16.reduced_precision = DataType::kHALF;
    auto g =
        run_and_compare(n,
                        test::list_of(passes::make_sink_head_transposes(), passes::make_fuse_attention(),
                                      passes::make_fold_mha_input_transposes(),
                                      passes::make_fold_mha_output_transposes(), passes::make_fold_attention_layouts()),
                        {test::random_f32({kB, kS, E}, 503)}, o16);
    const ir::Node* a = test::find_op(*g, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*g);
    EXPECT_EQ(a->attrs.get_string("qkv_layout", "bhsd").value(), "bshd") << ir::print(*g);
    EXPECT_EQ(ops::shape_to_string(a->inputs[1]->shape), "[2,9," + std::to_string(hk) + ",32]");
    EXPECT_EQ(test::count_ops(*g, "Transpose"), 0) << ir::print(*g);
    EXPECT_EQ(test::count_ops(*g, "Expand") + test::count_ops(*g, "Tile"), 0) << ir::print(*g);
  }
}

}  // namespace
