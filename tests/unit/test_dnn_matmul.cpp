// The host-side logic of FusedMatMul's cuDNN graph tactic (src/backends/cuda/dnn_matmul.h): stable names, the
// KILN_DNN_MATMUL gate, which layers are offered it, the tactic order, and the descriptors' dimensions and strides
// checked against plain row-major indexing of the stored matrices; which outputs are worth a compile and how many
// plans each tuning level is offered; the keys plans are cached and stored under; the stored plan carried
// through an engine file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <tuple>

#include "engine_io_util.h"
#include "engine_test_util.h"
#include "graph_test_util.h"
#include "backends/cuda/dnn_matmul.h"
#include "passes/shape_inference.h"

namespace kiln::cuda {
namespace {

// The names go into engines and timing caches: they must not change.
TEST(DnnMatmulTactics, NamesAreStableAndRoundTrip) {
  EXPECT_EQ(dnn_matmul_tactic_name(0), "cudnn_matmul_fused_0");
  EXPECT_EQ(dnn_matmul_tactic_name(2), "cudnn_matmul_fused_2");
  for (int r : {0, 1, 2, 7, 42, 999}) EXPECT_EQ(dnn_matmul_tactic_index(dnn_matmul_tactic_name(r)), r);
  for (const char* other : {"", "lt_heur0", "cudnn_matmul_fused_", "cudnn_matmul_fused_-1", "cudnn_matmul_fused_1x",
                            "cudnn_matmul_fused_1000", "cudnn_fwd_algo1_tc", "xcudnn_matmul_fused_0"})
    EXPECT_EQ(dnn_matmul_tactic_index(other), -1) << other;
}

// On by default; only "0" withdraws the tactics (like KILN_DW_TILED and KILN_STEM_MMA).
TEST(DnnMatmulTactics, OnUnlessTheSwitchIsZero) {
  const char* old = std::getenv("KILN_DNN_MATMUL");
  const std::string saved = old ? old : "";
  unsetenv("KILN_DNN_MATMUL");
  EXPECT_TRUE(dnn_matmul_enabled());
  for (const char* on : {"1", "", "yes", "00"}) {
    setenv("KILN_DNN_MATMUL", on, 1);
    EXPECT_TRUE(dnn_matmul_enabled()) << on;
  }
  setenv("KILN_DNN_MATMUL", "0", 1);
  EXPECT_FALSE(dnn_matmul_enabled());
  if (old)
    setenv("KILN_DNN_MATMUL", saved.c_str(), 1);
  else
    unsetenv("KILN_DNN_MATMUL");
}

// Offered exactly where cuBLASLt's epilogue leaves work to the second pass: the erf-GELU, SiLU and sigmoid always; ReLU and
// tanh-GELU only with a residual added after them; never without an activation (cuBLASLt's C takes the
// residual) and never where the residual comes first (also cuBLASLt's C, before its activation).
TEST(DnnMatmulTactics, OfferedOnlyWhereCublasLtNeedsASecondPass) {
  for (bool res : {false, true})
    for (bool first : {false, true}) {
      // cuBLASLt has no SiLU or sigmoid epilogue: its path always makes the second pass for them.
      for (const char* act : {"gelu_erf", "silu", "sigmoid"}) EXPECT_TRUE(dnn_matmul_wanted(act, res, first)) << act;
      EXPECT_FALSE(dnn_matmul_wanted("none", res, first));
      for (const char* act : {"relu", "gelu_tanh"}) EXPECT_EQ(dnn_matmul_wanted(act, res, first), res && !first) << act;
    }
}

// cuBLASLt's first choice stays the untuned default; cuDNN's plans come next so the tuner's limit reaches them;
// with none, the list is cuBLASLt's unchanged.
TEST(DnnMatmulTactics, MergedOrder) {
  const std::vector<std::string> lt = {"lt_heur0", "lt_heur1", "lt_heur2"};
  EXPECT_EQ(merge_matmul_tactics(lt, {}), lt);
  EXPECT_EQ(
      merge_matmul_tactics(lt, {"cudnn_matmul_fused_0", "cudnn_matmul_fused_1"}),
      (std::vector<std::string>{"lt_heur0", "cudnn_matmul_fused_0", "cudnn_matmul_fused_1", "lt_heur1", "lt_heur2"}));
  EXPECT_EQ(merge_matmul_tactics({"lt_heur0"}, {"cudnn_matmul_fused_0"}),
            (std::vector<std::string>{"lt_heur0", "cudnn_matmul_fused_0"}));
}

int64_t offset(const DnnDims& t, int64_t i, int64_t j) { return i * t.strides[1] + j * t.strides[2]; }

// Every element (i, j) of the logical operand lands where the row-major stored matrix holds it.
TEST(DnnMatmulLayout, StridesAddressTheStoredMatrices) {
  for (bool tb : {false, true})
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{8192, 3072, 768}, {77, 101, 33}, {1, 1, 1}}) {
      SCOPED_TRACE(::testing::Message() << "m" << m << " n" << n << " k" << k << (tb ? " trans_b" : ""));
      const DnnMatmulLayout l = dnn_matmul_layout(m, n, k, tb);
      EXPECT_EQ(l.a.dims[0], 1);
      EXPECT_EQ(l.a.dims[1], m);
      EXPECT_EQ(l.a.dims[2], k);
      EXPECT_EQ(l.b.dims[1], k);
      EXPECT_EQ(l.b.dims[2], n);
      EXPECT_EQ(l.bias.dims[1], 1);
      EXPECT_EQ(l.bias.dims[2], n);
      EXPECT_EQ(l.y.dims[1], m);
      EXPECT_EQ(l.y.dims[2], n);
      for (int64_t i : {int64_t{0}, m / 2, m - 1})
        for (int64_t j : {int64_t{0}, k / 2, k - 1}) EXPECT_EQ(offset(l.a, i, j), i * k + j);
      for (int64_t i : {int64_t{0}, k / 2, k - 1})
        for (int64_t j : {int64_t{0}, n / 2, n - 1})
          EXPECT_EQ(offset(l.b, i, j), tb ? j * k + i : i * n + j);  // stored [N, K] or [K, N]
      for (int64_t i : {int64_t{0}, m - 1})
        for (int64_t j : {int64_t{0}, n - 1}) EXPECT_EQ(offset(l.y, i, j), i * n + j);
      // The bias row is one vector for every output row.
      EXPECT_EQ(offset(l.bias, 0, n - 1), n - 1);
      // The batch stride spans a whole matrix (one batch; cuDNN checks it is consistent).
      EXPECT_EQ(l.a.strides[0], m * k);
      EXPECT_EQ(l.b.strides[0], k * n);
      EXPECT_EQ(l.y.strides[0], m * n);
    }
}

TEST(DnnMatmulLayout, DeclinedProblems) {
  DnnMatmulSpec s;
  s.dt = DataType::kHALF;
  s.m = 128, s.n = 3072, s.k = 768;
  s.act = "gelu_erf";
  EXPECT_EQ(dnn_matmul_declined(s, 1, 1), "");
  s.dt = DataType::kBF16;
  EXPECT_EQ(dnn_matmul_declined(s, 1, 1), "");
  s.dt = DataType::kFLOAT;
  EXPECT_NE(dnn_matmul_declined(s, 1, 1), "");
  s.dt = DataType::kHALF;
  EXPECT_NE(dnn_matmul_declined(s, 4, 1), "");  // a strided batch
  EXPECT_NE(dnn_matmul_declined(s, 1, 3), "");  // host-loop calls
  DnnMatmulSpec e = s;
  e.k = 0;
  EXPECT_NE(dnn_matmul_declined(e, 1, 1), "");
  DnnMatmulSpec a = s;
  a.alpha = 0.5f;
  EXPECT_NE(dnn_matmul_declined(a, 1, 1), "");
  DnnMatmulSpec x = s;
  x.act = "swish";
  EXPECT_NE(dnn_matmul_declined(x, 1, 1), "");
  for (const char* act : {"none", "relu", "gelu_tanh", "silu", "sigmoid"}) {
    DnnMatmulSpec k = s;
    k.act = act;
    EXPECT_EQ(dnn_matmul_declined(k, 1, 1), "") << act;
  }
}

// The size threshold, at the layers it was chosen from: bert-base FFN1 at batch 1 and efficientnet_b0's expand
// GEMMs at batch 128 (measured gains) keep the cuDNN plans; the SE block's FCs at batch 128 (a ~2 us pass each)
// do not; the boundary is the named constant.
TEST(DnnMatmulOffer, OutputSizeThreshold) {
  EXPECT_TRUE(dnn_matmul_worth_compiling(128, 3072));              // bert FFN1, batch 1
  EXPECT_TRUE(dnn_matmul_worth_compiling(8192, 3072));             // bert FFN1, batch 64
  EXPECT_TRUE(dnn_matmul_worth_compiling(128 * 112 * 112, 96));    // efficientnet expand, batch 128
  EXPECT_TRUE(dnn_matmul_worth_compiling(112 * 112, 96));          // the same at batch 1
  EXPECT_TRUE(dnn_matmul_worth_compiling(128 * 7 * 7, 1280));      // efficientnet head 1x1, batch 128
  for (int64_t n : {4, 8, 96, 240, 480, 672, 1152})                // SE FCs, batch 128
    EXPECT_FALSE(dnn_matmul_worth_compiling(128, n)) << n;
  EXPECT_TRUE(dnn_matmul_worth_compiling(kDnnMatmulMinOutput, 1));
  EXPECT_TRUE(dnn_matmul_worth_compiling(1, kDnnMatmulMinOutput));
  EXPECT_FALSE(dnn_matmul_worth_compiling(kDnnMatmulMinOutput - 1, 1));
  EXPECT_FALSE(dnn_matmul_worth_compiling(511, 512));
  EXPECT_TRUE(dnn_matmul_worth_compiling(512, 512));
  EXPECT_FALSE(dnn_matmul_worth_compiling(0, 1 << 30));
  EXPECT_FALSE(dnn_matmul_worth_compiling(1 << 30, 0));
}

// The tuner times cuBLASLt's first choice, then the plans: offering more than it times only compiles plans that
// are never timed. Levels 1-5 time 1, 2, 4, 8, 16 and unlimited candidates (cuda_context.cpp).
TEST(DnnMatmulOffer, NoMorePlansThanTheTunerTimes) {
  EXPECT_EQ(dnn_matmul_offered(0), kDnnMatmulMaxTactics);  // not told: all
  EXPECT_EQ(dnn_matmul_offered(1), 0);                     // level 1: cuBLASLt's first choice only
  EXPECT_EQ(dnn_matmul_offered(2), 1);                     // level 2
  EXPECT_EQ(dnn_matmul_offered(3), 2);
  for (int timed : {4, 8, 16, 1 << 20}) EXPECT_EQ(dnn_matmul_offered(timed), kDnnMatmulMaxTactics) << timed;
  for (int timed = 1; timed < 40; ++timed) {
    EXPECT_LE(dnn_matmul_offered(timed), timed - 1);
    EXPECT_LE(dnn_matmul_offered(timed), kDnnMatmulMaxTactics);
  }
}

// A timing-cache answer needs only itself confirmed: cuBLASLt's ranks no plan, cuDNN's rank r the ranks 0..r
// (the walk that finds rank r compiles those anyway); never more than the level allows.
TEST(DnnMatmulOffer, TimingCacheAnswerNeedsOnlyItself) {
  for (int timed : {0, 4, 8, 1 << 20}) {
    EXPECT_EQ(dnn_matmul_offered(timed, "lt_heur0"), 0);
    EXPECT_EQ(dnn_matmul_offered(timed, "lt_heur5"), 0);
    EXPECT_EQ(dnn_matmul_offered(timed, "cudnn_matmul_fused_0"), 1);
    EXPECT_EQ(dnn_matmul_offered(timed, "cudnn_matmul_fused_1"), 2);
    EXPECT_EQ(dnn_matmul_offered(timed, "cudnn_matmul_fused_2"), 3);
    EXPECT_EQ(dnn_matmul_offered(timed, "cudnn_matmul_fused_7"), kDnnMatmulMaxTactics);
    EXPECT_EQ(dnn_matmul_offered(timed, ""), kDnnMatmulMaxTactics);
  }
  EXPECT_EQ(dnn_matmul_offered(2, "cudnn_matmul_fused_2"), 1);  // level 2 times one plan at most
  EXPECT_EQ(dnn_matmul_offered(1, "cudnn_matmul_fused_0"), 0);  // level 1 none
}

DnnMatmulSpec ffn1_spec() {
  DnnMatmulSpec s;
  s.dt = DataType::kHALF;
  s.m = 128, s.n = 3072, s.k = 768;
  s.bias = true;
  s.act = "gelu_erf";
  return s;
}

// Every field the cuDNN graph is built from changes the problem key (a plan must never be reused for another
// graph); the same spec gives the same key.
TEST(DnnMatmulKeys, ProblemKeyCoversEveryField) {
  const DnnMatmulSpec base = ffn1_spec();
  EXPECT_EQ(dnn_matmul_problem_key(base), dnn_matmul_problem_key(ffn1_spec()));
  std::vector<DnnMatmulSpec> variants;
  auto vary = [&](auto f) {
    DnnMatmulSpec s = base;
    f(s);
    variants.push_back(s);
  };
  vary([](DnnMatmulSpec& s) { s.dt = DataType::kBF16; });
  vary([](DnnMatmulSpec& s) { s.m = 129; });
  vary([](DnnMatmulSpec& s) { s.n = 3073; });
  vary([](DnnMatmulSpec& s) { s.k = 769; });
  vary([](DnnMatmulSpec& s) { s.m = 3072, s.n = 128; });  // m and n swapped
  vary([](DnnMatmulSpec& s) { s.trans_b = true; });
  vary([](DnnMatmulSpec& s) { s.bias = false; });
  vary([](DnnMatmulSpec& s) { s.res = true; });
  vary([](DnnMatmulSpec& s) { s.res = true, s.residual_first = true; });
  vary([](DnnMatmulSpec& s) { s.act = "silu"; });
  vary([](DnnMatmulSpec& s) { s.act = "gelu_tanh"; });
  vary([](DnnMatmulSpec& s) { s.alpha = 0.5f; });
  std::set<std::string> keys = {dnn_matmul_problem_key(base)};
  for (const DnnMatmulSpec& v : variants) keys.insert(dnn_matmul_problem_key(v));
  EXPECT_EQ(keys.size(), variants.size() + 1);
}

// A stored plan's key names the tactic, the problem and the environment (cuDNN version, GPU): a change of any one
// makes the load compile instead of restoring.
TEST(DnnMatmulKeys, PlanKeyNamesTacticProblemAndEnvironment) {
  const DnnMatmulSpec s = ffn1_spec();
  const std::string where = "cudnn 91900 | NVIDIA H200 sm_90 132 SMs";
  const std::string k = dnn_matmul_plan_key(s, 1, where);
  EXPECT_EQ(k, dnn_matmul_plan_key(ffn1_spec(), 1, where));
  EXPECT_NE(k.find(dnn_matmul_tactic_name(1)), std::string::npos);
  EXPECT_NE(k.find(dnn_matmul_problem_key(s)), std::string::npos);
  EXPECT_NE(k.find(where), std::string::npos);
  EXPECT_NE(k, dnn_matmul_plan_key(s, 0, where));
  EXPECT_NE(k, dnn_matmul_plan_key(s, 1, "cudnn 91400 | NVIDIA H200 sm_90 132 SMs"));
  EXPECT_NE(k, dnn_matmul_plan_key(s, 1, "cudnn 91900 | NVIDIA H100 80GB HBM3 sm_90 132 SMs"));
  DnnMatmulSpec other = s;
  other.m = 256;
  EXPECT_NE(k, dnn_matmul_plan_key(other, 1, where));
}

// The builder stores the chosen plan as node annotations: a long JSON text (quotes, backslashes, newlines, a
// base64 kernel image) must come back from the engine file byte for byte, and the annotations must not change
// what the layer computes (here on the CPU reference, which ignores them).
TEST(DnnMatmulStoredPlan, AnnotationsRoundTripThroughTheEngine) {
  std::string json = "{\"engine\": {\"id\": 7, \"knobs\": [1, 2, 3]},\n \"path\": \"a\\\\b\", \"cubin\": \"";
  uint32_t x = 12345;
  const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int i = 0; i < 300000; ++i) {
    x = x * 1664525u + 1013904223u;
    json += b64[x >> 26];
  }
  json += "\"}";
  const std::string key = dnn_matmul_plan_key(ffn1_spec(), 2, "cudnn 91900 | test GPU");
  auto make = [&](bool annotated) {
    auto g = std::make_unique<ir::Graph>();
    std::vector<ir::Value*> in = {test::add_input(*g, "a", DataType::kFLOAT, ops::shape_from_dims({5, 8})),
                                  test::add_input(*g, "b", DataType::kFLOAT, ops::shape_from_dims({8, 6})),
                                  test::add_input(*g, "bias", DataType::kFLOAT, ops::shape_from_dims({6}))};
    Attributes a;
    a.set("activation", Attribute(std::string("gelu_erf")));
    if (annotated) {
      a.set("kiln.tactic", Attribute(dnn_matmul_tactic_name(2)));
      a.set(kDnnPlanKeyAttr, Attribute(key));
      a.set(kDnnPlanAttr, Attribute(json));
    }
    ir::Node* n = g->add_node("FusedMatMul", "ffn", in, {"y"}, a, 1, "kiln");
    EXPECT_TRUE(passes::infer_node(*g, *n).ok());
    g->outputs().push_back(n->outputs[0]);
    return g;
  };
  const auto plain = make(false), annotated = make(true);
  auto engine = test::load_engine(builder::write_engine(*annotated, BuilderConfig()));
  ASSERT_NE(engine, nullptr);
  const runtime::PlanNode* node = nullptr;
  for (const auto& pn : engine->plan().nodes)
    if (pn.op_type == "FusedMatMul") node = &pn;
  ASSERT_NE(node, nullptr);
  const Attribute* stored = node->attrs.find(kDnnPlanAttr);
  const Attribute* stored_key = node->attrs.find(kDnnPlanKeyAttr);
  ASSERT_NE(stored, nullptr);
  ASSERT_NE(stored_key, nullptr);
  ASSERT_EQ(stored->type(), AttrType::kSTRING);
  EXPECT_EQ(stored->s(), json);
  EXPECT_EQ(stored_key->s(), key);
  const std::vector<Tensor> inputs = {test::random_tensor(DataType::kFLOAT, {5, 8}, 1, -1, 1),
                                      test::random_tensor(DataType::kFLOAT, {8, 6}, 2, -1, 1),
                                      test::random_tensor(DataType::kFLOAT, {6}, 3, -1, 1)};
  const auto want = test::run_reference(*plain, inputs);
  const auto got = test::infer(*engine, {{"a", inputs[0]}, {"b", inputs[1]}, {"bias", inputs[2]}});
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].numel(), want[0].numel());
  for (int64_t i = 0; i < want[0].numel(); ++i) EXPECT_EQ(got[0].template data<float>()[i], want[0].template data<float>()[i]) << i;
}

}  // namespace
}  // namespace kiln::cuda
