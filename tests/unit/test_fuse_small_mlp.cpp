// Unit tests for fuse_small_mlp and kiln::FusedMlp: the op's reference against a plain double loop, its shape
// errors; the pass replacing a squeeze-excitation's fc1/fc2 FusedMatMul pair with one FusedMlp that computes the
// same on the reference kernels, and declining what the kernel is not for (many rows a sample, a residual, a
// hidden value with another reader, large weights); the whole CUDA pipeline on an efficientnet block; and the CUDA
// kernel's plan (fused_mlp.h, host arithmetic).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "backends/cuda/fused_mlp.h"
#include "cnn_onnx_model.h"

using namespace kiln;
using namespace kiln::test;

namespace {

double act_ref(const std::string& act, double v) {
  if (act == "relu") return v > 0 ? v : 0;
  if (act == "silu") return v / (1 + std::exp(-v));
  if (act == "sigmoid") return 1 / (1 + std::exp(-v));
  return v;
}

// Y = act2(act1(X.W1^T + b1).W2^T + b2) in double, row by row.
Tensor mlp_by_hand(const Tensor& x, const Tensor& w1, const Tensor* b1, const Tensor& w2, const Tensor* b2,
                   const std::string& act1, const std::string& act2) {
  const int64_t k = w1.dim(1), hid = w1.dim(0), n = w2.dim(0), rows = x.numel() / k;
  std::vector<int64_t> shape = x.shape();
  shape.back() = n;
  Tensor y(DataType::kDOUBLE, shape);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> h(hid);
    for (int64_t j = 0; j < hid; ++j) {
      double s = b1 ? b1->get_f64(j) : 0;
      for (int64_t c = 0; c < k; ++c) s += x.get_f64(r * k + c) * w1.get_f64(j * k + c);
      h[j] = act_ref(act1, s);
    }
    for (int64_t o = 0; o < n; ++o) {
      double s = b2 ? b2->get_f64(o) : 0;
      for (int64_t j = 0; j < hid; ++j) s += h[j] * w2.get_f64(o * hid + j);
      y.data<double>()[r * n + o] = act_ref(act2, s);
    }
  }
  return y;
}

// A FusedMlp node alone: x [rows, 1, 1, k] -> y.
struct MlpGraph {
  ir::Graph g;
  Tensor x, w1, b1, w2, b2;
  MlpGraph(int64_t rows, int64_t k, int64_t hid, int64_t n, bool biases, const std::string& act1,
           const std::string& act2) {
    x = random_f32({rows, 1, 1, k}, 1);
    w1 = random_f32({hid, k}, 2);
    b1 = random_f32({hid}, 3);
    w2 = random_f32({n, hid}, 4);
    b2 = random_f32({n}, 5);
    Attributes a;
    a.set("activation1", act1);
    a.set("activation2", act2);
    std::vector<ir::Value*> in = {graph_input(g, "x", {rows, 1, 1, k}), g.add_constant("w1", w1),
                                  biases ? g.add_constant("b1", b1) : nullptr, g.add_constant("w2", w2)};
    if (biases) in.push_back(g.add_constant("b2", b2));
    g.outputs().push_back(g.add_node("FusedMlp", "mlp", in, {"y"}, a, 1, "kiln")->outputs[0]);
  }
};

TEST(FusedMlpOp, ReferenceIsTheTwoProductsWithTheirActivations) {
  for (bool biases : {true, false})
    for (const auto& [a1, a2] : {std::pair{"silu", "none"}, std::pair{"relu", "sigmoid"}, std::pair{"none", "none"}}) {
      SCOPED_TRACE(std::string(a1) + " " + a2 + (biases ? " biases" : ""));
      MlpGraph m(3, 40, 5, 40, biases, a1, a2);
      ASSERT_TRUE(run_passes(m.g, {}).ok());
      EXPECT_EQ(m.g.outputs()[0]->shape, ops::shape_from_dims({3, 1, 1, 40}));
      auto got = run_reference(m.g, {m.x});
      ASSERT_EQ(got.size(), 1u);
      const Tensor want = mlp_by_hand(m.x, m.w1, biases ? &m.b1 : nullptr, m.w2, biases ? &m.b2 : nullptr, a1, a2);
      expect_close(got[0], want, 1e-5, 1e-5);
    }
}

// squeeze = 1: each row is the mean over the middle dims of X [B, H, W, K] first, and Y is [B, 1, 1, N].
TEST(FusedMlpOp, SqueezeAveragesTheMiddleDimsFirst) {
  ir::Graph g;
  const Tensor x = random_f32({3, 5, 7, 24}, 21), w1 = random_f32({4, 24}, 22), b1 = random_f32({4}, 23),
               w2 = random_f32({16, 4}, 24);
  Attributes a;
  a.set("activation1", std::string("relu"));
  a.set("activation2", std::string("sigmoid"));
  a.set("squeeze", int64_t{1});
  g.outputs().push_back(g.add_node("FusedMlp", "mlp",
                                   {graph_input(g, "x", {3, 5, 7, 24}), g.add_constant("w1", w1),
                                    g.add_constant("b1", b1), g.add_constant("w2", w2)},
                                   {"y"}, a, 1, "kiln")
                            ->outputs[0]);
  ASSERT_TRUE(run_passes(g, {}).ok());
  EXPECT_EQ(g.outputs()[0]->shape, ops::shape_from_dims({3, 1, 1, 16}));
  Tensor mean(DataType::kDOUBLE, {3, 1, 1, 24});
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < 24; ++c) {
      double s = 0;
      for (int64_t p = 0; p < 35; ++p) s += x.get_f64((b * 35 + p) * 24 + c);
      mean.data<double>()[b * 24 + c] = s / 35;
    }
  auto got = run_reference(g, {x});
  ASSERT_EQ(got.size(), 1u);
  expect_close(got[0], mlp_by_hand(mean, w1, &b1, w2, nullptr, "relu", "sigmoid"), 1e-5, 1e-5);
  // No spatial elements: each row's mean is the empty mean, 0, and the products of zero rows remain.
  ir::Graph empty;
  empty.outputs().push_back(empty.add_node("FusedMlp", "mlp",
                                           {graph_input(empty, "x", {2, 0, 3, 24}), empty.add_constant("w1", w1),
                                            empty.add_constant("b1", b1), empty.add_constant("w2", w2)},
                                           {"y"}, a, 1, "kiln")
                                ->outputs[0]);
  ASSERT_TRUE(run_passes(empty, {}).ok());
  auto zero = run_reference(empty, {Tensor(DataType::kFLOAT, {2, 0, 3, 24})});
  ASSERT_EQ(zero.size(), 1u);
  expect_close(zero[0], mlp_by_hand(Tensor(DataType::kDOUBLE, {2, 1, 1, 24}), w1, &b1, w2, nullptr, "relu",
                                    "sigmoid"), 1e-6, 1e-6);
  // Rank 2 cannot be squeezed.
  ir::Graph bad;
  bad.outputs().push_back(bad.add_node("FusedMlp", "mlp",
                                       {graph_input(bad, "x", {3, 24}), bad.add_constant("w1", w1), nullptr,
                                        bad.add_constant("w2", w2)},
                                       {"y"}, a, 1, "kiln")
                              ->outputs[0]);
  Status st = run_passes(bad, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rank >= 3 (with squeeze)"), std::string::npos) << st.message();
}

TEST(FusedMlpOp, HalfKeepsTheHiddenLayerInFloat) {
  MlpGraph m(2, 64, 8, 64, true, "silu", "none");
  ir::Graph& g = m.g;
  g.inputs()[0]->dtype = DataType::kHALF;
  for (const auto& v : g.values())
    if (v->is_constant()) {
      v->constant = std::make_shared<const Tensor>(v->constant->cast(DataType::kHALF));
      v->dtype = DataType::kHALF;
    }
  ASSERT_TRUE(run_passes(g, {}).ok());
  EXPECT_EQ(g.outputs()[0]->dtype, DataType::kHALF);
  const Tensor xh = m.x.cast(DataType::kHALF);
  auto got = run_reference(g, {xh});
  ASSERT_EQ(got.size(), 1u);
  // By hand from the half-rounded operands, the hidden layer unrounded: only the output's rounding differs.
  const Tensor w1 = m.w1.cast(DataType::kHALF), b1 = m.b1.cast(DataType::kHALF), w2 = m.w2.cast(DataType::kHALF),
               b2 = m.b2.cast(DataType::kHALF);
  expect_close(got[0], mlp_by_hand(xh, w1, &b1, w2, &b2, "silu", "none"), 2e-3, 2e-3);
}

TEST(FusedMlpOp, MismatchedWeightsAreAnErrorNamingTheShapes) {
  ir::Graph g;
  Attributes a;
  a.set("activation1", std::string("silu"));
  g.outputs().push_back(g.add_node("FusedMlp", "mlp",
                                   {graph_input(g, "x", {2, 16}), g.add_constant("w1", random_f32({4, 16}, 1)), nullptr,
                                    g.add_constant("w2", random_f32({16, 5}, 2))},
                                   {"y"}, a, 1, "kiln")
                            ->outputs[0]);
  Status st = run_passes(g, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("inner dimensions differ"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("[16,5]"), std::string::npos) << st.message();
}

TEST(FusedMlpOp, UnknownActivationIsAnError) {
  MlpGraph m(1, 8, 2, 8, true, "swish", "none");
  Status st = run_passes(m.g, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("activation1 must be"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'swish'"), std::string::npos) << st.message();
}

// The pair conv1x1_as_gemm leaves for a squeeze-excitation (fc1 + act1, fc2 + act2), then a reader of fc2's output.
struct PairSpec {
  std::vector<int64_t> x_shape = {4, 1, 1, 48};
  int64_t hid = 2, n = 48;
  const char* act1 = "silu";
  const char* act2 = "sigmoid";
  bool residual = false;        // fc2 adds a residual: not fusible
  bool hidden_output = false;   // fc1's output is a graph output too
  bool bias1 = true;
  DataType dt = DataType::kFLOAT;
  // x is ReduceMean(fm) over the middle axes of fm [B, squeeze_hw, squeeze_hw, K] (0: x is the graph input).
  int64_t squeeze_hw = 0;
  bool pooled_output = false;  // the pooled x is a graph output too
  std::vector<int64_t> axes = {1, 2};
};

struct PairGraph {
  ir::Graph g;
  std::vector<Tensor> inputs;
  explicit PairGraph(const PairSpec& p) {
    const int64_t k = p.x_shape.back();
    ir::Value* x = nullptr;
    if (p.squeeze_hw > 0) {
      const std::vector<int64_t> fs = {p.x_shape[0], p.squeeze_hw, p.squeeze_hw, k};
      ir::Value* fm = graph_input(g, "fm", fs, p.dt);
      inputs.push_back(random_f32(fs, 10).cast(p.dt));
      Attributes ra;
      ra.set("axes", p.axes);
      ra.set("keepdims", int64_t{1});
      x = g.add_node("ReduceMean", "pool", {fm}, {"x"}, ra, 13)->outputs[0];
      if (p.pooled_output) g.outputs().push_back(x);
    } else {
      x = graph_input(g, "x", p.x_shape, p.dt);
      inputs.push_back(random_f32(p.x_shape, 11).cast(p.dt));
    }
    auto linear = [&](const std::string& name, ir::Value* a, int64_t in, int64_t out, const char* act, bool bias,
                      ir::Value* res) {
      Attributes at;
      at.set("trans_b", int64_t{1});
      at.set("activation", std::string(act));
      std::vector<ir::Value*> ins = {a, g.add_constant(name + "_w", random_f32({out, in}, 12 + out).cast(p.dt))};
      if (bias || res) ins.push_back(bias ? g.add_constant(name + "_b", random_f32({out}, 13 + out).cast(p.dt)) : nullptr);
      if (res) ins.push_back(res);
      return g.add_node("FusedMatMul", name, ins, {name + "_out"}, at, 1, "kiln")->outputs[0];
    };
    ir::Value* h = linear("fc1", x, k, p.hid, p.act1, p.bias1, nullptr);
    ir::Value* res = nullptr;
    if (p.residual) {
      std::vector<int64_t> rs = p.x_shape;
      rs.back() = p.n;
      res = graph_input(g, "r", rs, p.dt);
      inputs.push_back(random_f32(rs, 14).cast(p.dt));
    }
    ir::Value* y = linear("fc2", h, p.hid, p.n, p.act2, true, res);
    g.outputs().push_back(g.add_node("Neg", "reader", {y}, {"y"}, {}, 13)->outputs[0]);
    if (p.hidden_output) g.outputs().push_back(h);
  }
};

Status run_mlp_pass(ir::Graph& g) { return run_passes(g, list_of(passes::make_fuse_small_mlp())); }

TEST(FuseSmallMlp, SqueezeExcitationPairBecomesOneFusedMlp) {
  for (const std::vector<int64_t>& xs : {std::vector<int64_t>{4, 1, 1, 48}, std::vector<int64_t>{3, 48}})
    for (bool bias1 : {true, false})
      for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
        SCOPED_TRACE(std::to_string(xs.size()) + "-D " + (bias1 ? "bias1 " : "") + dtype_name(dt));
        PairSpec p;
        p.x_shape = xs;
        p.bias1 = bias1;
        p.dt = dt;
        PairGraph pg(p);
        ASSERT_TRUE(run_passes(pg.g, {}).ok());
        auto want = run_reference(pg.g, pg.inputs);
        ASSERT_TRUE(run_mlp_pass(pg.g).ok());
        EXPECT_EQ(count_ops(pg.g, "FusedMatMul"), 0) << ir::print(pg.g);
        const ir::Node* mlp = find_op(pg.g, "FusedMlp");
        ASSERT_NE(mlp, nullptr) << ir::print(pg.g);
        EXPECT_EQ(mlp->attrs.get_string("activation1").value(), "silu");
        EXPECT_EQ(mlp->attrs.get_string("activation2").value(), "sigmoid");
        EXPECT_EQ(mlp->inputs[0]->name, "x");
        EXPECT_EQ(mlp->inputs[2] != nullptr, bias1);
        EXPECT_EQ(mlp->outputs[0]->name, "fc2_out");  // the reader's input keeps its name
        const Attribute* from = mlp->attrs.find("kiln.fused_from");
        ASSERT_NE(from, nullptr);
        EXPECT_EQ(from->strings(), (std::vector<std::string>{"fc1", "fc2"}));
        auto got = run_reference(pg.g, pg.inputs);
        ASSERT_EQ(got.size(), 1u);
        // Half: the fused op keeps the hidden layer in float where the pair rounded it to half.
        const double tol = dt == DataType::kHALF ? 1e-2 : 1e-5;
        expect_close(got[0], want[0], tol, tol);
      }
}

// The pool too: a ReduceMean over H and W that only fc1 reads goes into the FusedMlp (squeeze = 1), which then
// reads the feature map; one over other axes, or read elsewhere too, stays (and the pair is still fused).
TEST(FuseSmallMlp, TakesTheSqueezeWhenOnlyFc1ReadsIt) {
  struct Case {
    const char* what;
    bool pooled_output;
    std::vector<int64_t> axes;
    bool absorbed;
  };
  for (const Case& c : {Case{"pool over H, W", false, {1, 2}, true}, Case{"negative axes", false, {-3, -2}, true},
                        Case{"pool also an output", true, {1, 2}, false}}) {
    SCOPED_TRACE(c.what);
    PairSpec p;
    p.squeeze_hw = 6;
    p.pooled_output = c.pooled_output;
    p.axes = c.axes;
    PairGraph pg(p);
    ASSERT_TRUE(run_passes(pg.g, {}).ok());
    auto want = run_reference(pg.g, pg.inputs);
    ASSERT_TRUE(run_mlp_pass(pg.g).ok());
    const ir::Node* mlp = find_op(pg.g, "FusedMlp");
    ASSERT_NE(mlp, nullptr) << ir::print(pg.g);
    EXPECT_EQ(count_ops(pg.g, "ReduceMean"), c.absorbed ? 0 : 1) << ir::print(pg.g);
    EXPECT_EQ(mlp->attrs.get_int("squeeze", 0).value(), c.absorbed ? 1 : 0);
    EXPECT_EQ(mlp->inputs[0]->name, c.absorbed ? "fm" : "x");
    if (c.absorbed) {
      const Attribute* from = mlp->attrs.find("kiln.fused_from");
      ASSERT_NE(from, nullptr);
      EXPECT_EQ(from->strings(), (std::vector<std::string>{"pool", "fc1", "fc2"}));
    }
    auto got = run_reference(pg.g, pg.inputs);
    ASSERT_EQ(got.size(), want.size());
    expect_close(got[0], want[0], 1e-5, 1e-5);
  }
}

TEST(FuseSmallMlp, DeclinesWhatTheKernelIsNotFor) {
  struct Case {
    const char* why;
    PairSpec p;
  };
  std::vector<Case> cases;
  {
    Case c{"many rows a sample (a feature map, not a pooled vector)", {}};
    c.p.x_shape = {2, 7, 7, 48};
    cases.push_back(c);
  }
  {
    Case c{"a residual in fc2", {}};
    c.p.residual = true;
    cases.push_back(c);
  }
  {
    Case c{"the hidden layer is also a graph output", {}};
    c.p.hidden_output = true;
    cases.push_back(c);
  }
  {
    Case c{"weights beyond the size bound (a transformer MLP)", {}};
    c.p.x_shape = {2, 768};
    c.p.hid = 3072;
    c.p.n = 768;
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.why);
    PairGraph pg(c.p);
    ASSERT_TRUE(run_passes(pg.g, {}).ok());
    ASSERT_TRUE(run_mlp_pass(pg.g).ok());
    EXPECT_EQ(count_ops(pg.g, "FusedMlp"), 0) << ir::print(pg.g);
    EXPECT_EQ(count_ops(pg.g, "FusedMatMul"), 2);
  }
}

TEST(FuseSmallMlp, DeclinesWithoutAKernel) {
  PairGraph pg(PairSpec{});
  passes::PassOptions o;
  o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "FusedMlp"; };
  ASSERT_TRUE(run_passes(pg.g, list_of(passes::make_fuse_small_mlp()), o).ok());
  EXPECT_EQ(count_ops(pg.g, "FusedMlp"), 0);
}

// The efficientnet block through the whole CUDA FP16 pipeline with the activations in the GEMM epilogues (the
// builder's default for CUDA): the squeeze and the excitation are one FusedMlp (the mean over H and W of the
// depthwise conv's output, SiLU, then the gate's sigmoid), no ReduceMean and no GEMM of the pooled vector is left,
// and the graph computes what the CPU pipeline's does.
TEST(FuseSmallMlp, EfficientnetBlockInTheCudaPipeline) {
  passes::PassOptions o;
  o.matmul_sigmoid_acts = true;
  auto [cpu, cuda] = cpu_and_cuda_graphs(se_block_cnn(2, 14, 144, true), o);
  ASSERT_TRUE(cpu && cuda);
  ASSERT_EQ(count_ops(*cuda, "FusedMlp"), 1) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "ReduceMean"), 0) << ir::print(*cuda);
  const ir::Node* mlp = find_op(*cuda, "FusedMlp");
  EXPECT_EQ(mlp->attrs.get_string("activation1").value(), "silu");
  EXPECT_EQ(mlp->attrs.get_string("activation2").value(), "sigmoid");
  EXPECT_EQ(mlp->attrs.get_int("squeeze", 0).value(), 1);
  EXPECT_EQ(mlp->inputs[0]->shape, ops::shape_from_dims({2, 14, 14, 144}));
  ASSERT_NE(mlp->inputs[0]->producer, nullptr);
  EXPECT_EQ(mlp->inputs[0]->producer->op_type, "FusedConv");
  EXPECT_EQ(mlp->outputs[0]->shape, ops::shape_from_dims({2, 1, 1, 144}));
  EXPECT_EQ(mlp->inputs[1]->shape, ops::shape_from_dims({6, 144}));
  EXPECT_EQ(mlp->inputs[0]->dtype, DataType::kHALF);
  for (auto& n : cuda->nodes())
    if (n->op_type == "FusedMatMul") {
      EXPECT_NE(n->inputs[0]->shape, ops::shape_from_dims({2, 1, 1, 144})) << "a GEMM of the pooled vector is left";
    }
  expect_same_on_reference(*cpu, *cuda, random_f32({2, 8, 14, 14}, 93), 3e-2);
}

// ---- The CUDA kernel's plan (fused_mlp.h) ----

TEST(FusedMlpPlan, EveryCandidateFitsAndNamesRoundTrip) {
  using namespace kiln::cuda;
  // efficientnet_b0's squeeze-excitations (C, C/24 or C/4) at batch 128 and 1, and odd sizes.
  const int64_t shapes[][3] = {{32, 8, 32}, {96, 4, 96}, {144, 6, 144}, {240, 10, 240}, {480, 20, 480},
                               {672, 28, 672}, {1152, 48, 1152}, {37, 5, 37}, {4000, 200, 16}};
  for (const auto& sh : shapes)
    for (int64_t rows : {128, 1, 3}) {
      MlpShape s{rows, sh[0], sh[1], sh[2]};
      SCOPED_TRACE(std::to_string(rows) + " rows " + std::to_string(s.k) + "-" + std::to_string(s.hidden) + "-" +
                   std::to_string(s.n));
      ASSERT_TRUE(mlp_fits(s));
      const std::vector<MlpTactic> ts = mlp_tactics(s, 132);
      ASSERT_FALSE(ts.empty());
      for (const MlpTactic& t : ts) {
        EXPECT_LE(mlp_smem_bytes(s, t.rows_per_block), kMlpSmemBytes);
        EXPECT_TRUE(t.rows_per_block == 1 || t.rows_per_block / 2 < rows);  // no block of only padding rows
        EXPECT_GE((s.n + t.n_split - 1) / t.n_split, 1);
        std::optional<MlpTactic> back = parse_mlp_tactic(mlp_tactic_name(t));
        ASSERT_TRUE(back);
        EXPECT_EQ(*back, t);
        EXPECT_EQ(std::count(ts.begin(), ts.end(), t), 1);
      }
      if (rows == 1) {
        EXPECT_EQ(ts[0].rows_per_block, 1);
      }
    }
  // With squeeze: the pool-first variants and the fused kernel (first where the rows give most SMs a block).
  for (int64_t rows : {128, 1}) {
    MlpShape s{rows, 1152, 48, 1152, true, 49};
    const std::vector<MlpTactic> ts = mlp_tactics(s, 132, 2);
    ASSERT_GE(ts.size(), 2u);
    EXPECT_EQ(ts[0].kind == MlpKind::kFused, rows == 128) << mlp_tactic_name(ts[0]);
    int fused = 0;
    for (const MlpTactic& t : ts) {
      EXPECT_NE(t.kind, MlpKind::kPlain);
      EXPECT_TRUE(mlp_tactic_applies(s, t, 2));
      fused += t.kind == MlpKind::kFused;
      std::optional<MlpTactic> back = parse_mlp_tactic(mlp_tactic_name(t));
      ASSERT_TRUE(back);
      EXPECT_EQ(*back, t);
    }
    EXPECT_EQ(fused, 1);
    EXPECT_FALSE(mlp_tactic_applies(s, MlpTactic{1, 1, MlpKind::kPlain}, 2));
    EXPECT_FALSE(mlp_tactic_applies(MlpShape{rows, 1152, 48, 1152}, MlpTactic{1, 1, MlpKind::kFused}, 2));
    EXPECT_FALSE(mlp_tactic_applies(MlpShape{rows, 1152, 48, 1152}, MlpTactic{1, 1, MlpKind::kPool}, 2));
    // A squeeze over no spatial elements: the pool-first tactics (the reduction writes the empty mean, 0), not the
    // fused kernel.
    const MlpShape empty{rows, 1152, 48, 1152, true, 0};
    const std::vector<MlpTactic> te = mlp_tactics(empty, 132, 2);
    ASSERT_FALSE(te.empty());
    for (const MlpTactic& t : te) EXPECT_EQ(t.kind, MlpKind::kPool) << mlp_tactic_name(t);
    EXPECT_FALSE(mlp_tactic_applies(empty, MlpTactic{1, 1, MlpKind::kFused}, 2));
  }
  // Threads per column unit: 16-byte units of a half K of 4096 (512) one each, more units than threads one group
  // with each thread taking several; an odd K is read one element at a time.
  EXPECT_EQ(mlp_pool_groups(4096, 8), 1);
  EXPECT_EQ(mlp_pool_groups(8192, 8), 1);
  EXPECT_EQ(mlp_pool_groups(1152, 8), 3);
  EXPECT_EQ(mlp_pool_groups(37, 1), 13);
  EXPECT_EQ(mlp_pool_groups(0, 8), 0);
  EXPECT_EQ(mlp_pool_vec(37, 2), 1);
  EXPECT_EQ(mlp_pool_vec(144, 2), 8);
  EXPECT_LE(mlp_pool_smem_bytes(MlpShape{128, 1152, 48, 1152, true, 49}, 8), kMlpSmemBytes);
  EXPECT_TRUE(mlp_pool_fits(MlpShape{128, 1152, 48, 1152, true, 49}, 1));  // a misaligned X read by elements
  EXPECT_FALSE(mlp_pool_fits(MlpShape{128, 1152, 48, 1152}, 8));
  EXPECT_FALSE(mlp_pool_fits(MlpShape{128, 1152, 48, 1152, true, 0}, 8));
  EXPECT_FALSE(parse_mlp_tactic("kiln_mlp_r3_s1"));
  EXPECT_FALSE(parse_mlp_tactic("kiln_mlp_pool_r2_s0"));
  EXPECT_FALSE(parse_mlp_tactic("kiln_mlp_fused_r1"));
  EXPECT_FALSE(parse_mlp_tactic("kiln_mlp_r4_s1x"));
  EXPECT_FALSE(parse_mlp_tactic("lt_heur0"));
  // A row of X that cannot fit a block's shared memory: no candidate, and the kernel's supports() says no.
  EXPECT_FALSE(mlp_fits(MlpShape{1, 12288, 64, 64}));
  EXPECT_TRUE(mlp_tactics(MlpShape{1, 12288, 64, 64}, 132).empty());
}

}  // namespace
