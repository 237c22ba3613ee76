// kiln::FusedMatMul with norm_epsilon (A's rows standardized over K) and fold_layernorm_into_matmul: the op's
// reference compute against a LayerNorm-then-GEMM written here in double, its input checks, which LayerNorm ->
// FusedMatMul pairs the pass folds (and the ones it leaves), and the folded graph's results against the unfolded
// one's on the reference kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "onnx_model_util.h"
#include "ops/op_util.h"
#include "passes/pass.h"
#include "transformer_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

// ---- The op ----

// y = act(alpha * standardize(A).B + bias) in double, from the values as stored: LayerNorm of each row of A over K
// without scale or shift (biased variance), the product, the bias, the activation.
Tensor reference_norm_gemm(const Tensor& a, const Tensor& b, const Tensor* bias, double alpha, double eps, bool gelu) {
  const int64_t k = a.dim(-1), n = b.dim(1), rows = a.numel() / k;
  const std::vector<double> av = a.to_f64_vector(), bv = b.to_f64_vector();
  const std::vector<double> cv = bias ? bias->to_f64_vector() : std::vector<double>(n, 0.0);
  std::vector<int64_t> shape = a.shape();
  shape.back() = n;
  Tensor y(DataType::kDOUBLE, shape);
  std::vector<double> z(k);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < k; ++i) mean += av[r * k + i];
    mean /= k;
    for (int64_t i = 0; i < k; ++i) var += (av[r * k + i] - mean) * (av[r * k + i] - mean);
    var /= k;
    for (int64_t i = 0; i < k; ++i) z[i] = (av[r * k + i] - mean) / std::sqrt(var + eps);
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t i = 0; i < k; ++i) s += z[i] * bv[i * n + j];
      double v = alpha * s + cv[j];
      if (gelu) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      y.data<double>()[r * n + j] = v;
    }
  }
  return y;
}

// B's column sums in double, as float32 [N].
Tensor column_sums(const Tensor& b) {
  const int64_t k = b.dim(0), n = b.dim(1);
  const std::vector<double> bv = b.to_f64_vector();
  Tensor c(DataType::kFLOAT, {n});
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t i = 0; i < k; ++i) s += bv[i * n + j];
    c.data<float>()[j] = static_cast<float>(s);
  }
  return c;
}

// A graph input a, constants B, bias and colsum -> FusedMatMul with norm_epsilon -> y.
struct NormGemm {
  ir::Graph g;
  NormGemm(const std::vector<int64_t>& a_shape, const Tensor& b, const Tensor* bias, const Tensor* colsum,
           const Attributes& at) {
    ir::Value* a = graph_input(g, "a", a_shape, b.dtype());
    std::vector<ir::Value*> in = {a, g.add_constant("b", b), bias ? g.add_constant("bias", *bias) : nullptr, nullptr,
                                  colsum ? g.add_constant("colsum", *colsum) : nullptr};
    while (in.size() > 2 && !in.back()) in.pop_back();
    g.outputs().push_back(g.add_node("FusedMatMul", "mm", in, {"y"}, at, 1, "kiln")->outputs[0]);
  }
};

Attributes norm_attrs(const char* act, float alpha, float eps) {
  Attributes at;
  at.set("activation", std::string(act));
  at.set("alpha", alpha);
  at.set("norm_epsilon", eps);
  return at;
}

TEST(FusedMatMulNorm, MatchesLayerNormThenGemm) {
  const std::vector<int64_t> a_shape = {2, 5, 48};
  const int64_t k = 48, n = 24;
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF})
    for (bool with_bias : {false, true})
      for (const char* act : {"none", "gelu_erf"})
        for (float alpha : {1.0f, 0.5f}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + (with_bias ? " bias " : " ") + act + " alpha " +
                       std::to_string(alpha));
          // Rows with a mean well away from zero: the mean * colsum term has something to take off.
          const Tensor a = random_f32(a_shape, 1, 1.0f, 3.0f).cast(dt);
          const Tensor b = random_f32({k, n}, 2, -0.3f, 0.3f).cast(dt);
          const Tensor bias = random_f32({n}, 3).cast(dt);
          const Tensor colsum = column_sums(b);
          NormGemm m(a_shape, b, with_bias ? &bias : nullptr, &colsum, norm_attrs(act, alpha, 1e-5f));
          Status st = run_passes(m.g, {});
          ASSERT_TRUE(st.ok()) << st.message();
          EXPECT_EQ(m.g.outputs()[0]->dtype, dt);
          const auto got = run_reference(m.g, {a});
          ASSERT_EQ(got.size(), 1u);
          ASSERT_EQ(got[0].dtype(), dt);
          const Tensor want =
              reference_norm_gemm(a, b, with_bias ? &bias : nullptr, alpha, 1e-5, std::string(act) == "gelu_erf");
          // float32: the product's own rounding; float16: the output's rounding to float16.
          if (dt == DataType::kFLOAT)
            expect_close(got[0], want, 1e-5, 1e-5);
          else
            expect_close(got[0], want, 2e-3, 2e-3);
        }
}

TEST(FusedMatMulNorm, NormEpsilonNeedsAFloat32ColsumOfN) {
  const Tensor b = random_f32({16, 8}, 2);
  const Tensor a = random_f32({4, 16}, 1);
  {
    NormGemm m({4, 16}, b, nullptr, nullptr, norm_attrs("none", 1.0f, 1e-5f));
    Status st = run_passes(m.g, {});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("colsum"), std::string::npos) << st.message();
    // The reference compute says the same where it is called without inference.
    std::vector<Tensor> out(1);
    const Attributes at = norm_attrs("none", 1.0f, 1e-5f);
    ops::ComputeContext c(at, 1, {&a, &b}, &out);
    st = ops::OpRegistry::instance().find("FusedMatMul", "kiln")->compute(c);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("colsum"), std::string::npos) << st.message();
  }
  {
    const Tensor wrong_n = random_f32({7}, 4);
    NormGemm m({4, 16}, b, nullptr, &wrong_n, norm_attrs("none", 1.0f, 1e-5f));
    Status st = run_passes(m.g, {});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("colsum"), std::string::npos) << st.message();
  }
  {
    const Tensor wrong_type = column_sums(b).cast(DataType::kDOUBLE);
    NormGemm m({4, 16}, b, nullptr, &wrong_type, norm_attrs("none", 1.0f, 1e-5f));
    Status st = run_passes(m.g, {});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("colsum"), std::string::npos) << st.message();
  }
  {
    // A batch of B matrices has no single column sum.
    const Tensor b3 = random_f32({2, 16, 8}, 5);
    const Tensor cs = column_sums(b);
    NormGemm m({4, 16}, b3, nullptr, &cs, norm_attrs("none", 1.0f, 1e-5f));
    EXPECT_FALSE(run_passes(m.g, {}).ok());
  }
  {
    // Without norm_epsilon the op is what it was: no colsum wanted, and none accepted.
    const Tensor cs = column_sums(b);
    Attributes at;
    NormGemm plain({4, 16}, b, nullptr, nullptr, at);
    EXPECT_TRUE(run_passes(plain.g, {}).ok());
    NormGemm stray({4, 16}, b, nullptr, &cs, at);
    EXPECT_FALSE(run_passes(stray.g, {}).ok());
  }
}

// ---- The pass ----

struct LnGemmCase {
  std::vector<int64_t> x_shape = {4, 1024, 64};  // M = 4096 rows of K = 64
  int64_t n = 32;
  DataType dt = DataType::kHALF;
  const char* act = "gelu_erf";
  float alpha = 1.0f;
  bool bias = true, beta = true;
  bool residual = false, trans_b = false, second_reader = false;
};

// x -> LayerNormalization(gamma, beta) -> FusedMatMul(B, bias, act) -> y, every parameter a constant.
struct LnGemm {
  ir::Graph g;
  std::vector<Tensor> inputs;
  explicit LnGemm(const LnGemmCase& c) {
    const int64_t k = c.x_shape.back();
    ir::Value* x = graph_input(g, "x", c.x_shape, c.dt);
    // Activations with a row mean away from zero, as a residual stream has.
    inputs.push_back(random_f32(c.x_shape, 1, -1.0f, 3.0f).cast(c.dt));
    std::vector<ir::Value*> ln_in = {x, g.add_constant("gamma", random_f32({k}, 2, 0.5f, 1.5f).cast(c.dt))};
    if (c.beta) ln_in.push_back(g.add_constant("beta", random_f32({k}, 3, -0.5f, 0.5f).cast(c.dt)));
    Attributes la;
    la.set("axis", int64_t{-1});
    la.set("epsilon", 1e-5f);
    ir::Value* y = g.add_node("LayerNormalization", "ln_1", ln_in, {"ln_1_out"}, la, 17)->outputs[0];
    const std::vector<int64_t> b_shape = c.trans_b ? std::vector<int64_t>{c.n, k} : std::vector<int64_t>{k, c.n};
    std::vector<ir::Value*> in = {y, g.add_constant("w", random_f32(b_shape, 4, -0.25f, 0.25f).cast(c.dt)),
                                  c.bias ? g.add_constant("b", random_f32({c.n}, 5).cast(c.dt)) : nullptr};
    if (c.residual) {
      std::vector<int64_t> out_shape = c.x_shape;
      out_shape.back() = c.n;
      in.push_back(graph_input(g, "z", out_shape, c.dt));
      inputs.push_back(random_f32(out_shape, 6).cast(c.dt));
    }
    while (in.size() > 2 && !in.back()) in.pop_back();
    Attributes ma;
    ma.set("activation", std::string(c.act));
    ma.set("alpha", c.alpha);
    if (c.trans_b) ma.set("trans_b", int64_t{1});
    g.outputs().push_back(g.add_node("FusedMatMul", "fc1", in, {"y"}, ma, 1, "kiln")->outputs[0]);
    if (c.second_reader) g.outputs().push_back(g.add_node("Relu", "other", {y}, {"y2"}, {}, 17)->outputs[0]);
  }
};

passes::PassOptions norm_gemm_on() {
  passes::PassOptions o;
  o.norm_gemm = true;
  return o;
}

Status fold(ir::Graph& g, passes::PassOptions o = norm_gemm_on()) {
  return run_passes(g, list_of(passes::make_fold_layernorm_into_matmul(), passes::make_dead_code_elimination()), o);
}

TEST(FoldLayerNormIntoMatMul, LayerNormGoesIntoTheGemm) {
  struct Variant {
    const char* name;
    bool bias, beta;
    const char* act;
    float alpha;
  };
  for (const Variant& v : {Variant{"bias, beta, gelu_erf", true, true, "gelu_erf", 1.0f},
                           Variant{"beta only, none, alpha 0.5", false, true, "none", 0.5f},
                           Variant{"bias only (no beta), gelu_erf", true, false, "gelu_erf", 1.0f},
                           Variant{"neither", false, false, "none", 1.0f}}) {
    SCOPED_TRACE(v.name);
    LnGemmCase c;
    c.bias = v.bias;
    c.beta = v.beta;
    c.act = v.act;
    c.alpha = v.alpha;
    LnGemm m(c);
    ASSERT_TRUE(run_passes(m.g, {}).ok());
    auto before = m.g.clone();
    Status st = fold(m.g);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(count_ops(m.g, "LayerNormalization"), 0) << ir::print(m.g);
    ASSERT_EQ(m.g.nodes().size(), 1u) << ir::print(m.g);
    const ir::Node* f = find_op(m.g, "FusedMatMul");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->name, "fc1") << "the GEMM keeps its layer name";
    EXPECT_EQ(f->outputs[0]->name, "y");
    ASSERT_EQ(f->inputs.size(), 5u);
    EXPECT_EQ(f->inputs[0], m.g.inputs()[0]) << "A is the LayerNorm's input";
    EXPECT_EQ(f->inputs[3], nullptr);
    EXPECT_FLOAT_EQ(f->attrs.get_float("norm_epsilon", 0.0f).value(), 1e-5f);
    EXPECT_EQ((v.bias || v.beta), f->inputs[2] != nullptr);
    if (f->inputs[2]) {
      EXPECT_EQ(f->inputs[2]->dtype, DataType::kHALF);
    }
    // The LayerNorm is listed among the nodes the GEMM stands for.
    const Attribute* from = f->attrs.find(ops::kFusedFromAttr);
    ASSERT_NE(from, nullptr);
    EXPECT_EQ(from->strings(), (std::vector<std::string>{"fc1", "ln_1"}));

    // W' = gamma * B rounded to float16; colsum = its column sums in float32; B itself untouched.
    const Tensor w = before->find_value("w")->constant->cast(DataType::kDOUBLE);
    const Tensor gamma = before->find_value("gamma")->constant->cast(DataType::kDOUBLE);
    const Tensor wp = *f->inputs[1]->constant;
    ASSERT_EQ(wp.dtype(), DataType::kHALF);
    ASSERT_EQ(wp.shape(), (std::vector<int64_t>{64, 32}));
    Tensor want_w(DataType::kDOUBLE, {64, 32});
    for (int64_t i = 0; i < 64; ++i)
      for (int64_t j = 0; j < 32; ++j)
        want_w.data<double>()[i * 32 + j] = gamma.data<double>()[i] * w.data<double>()[i * 32 + j];
    expect_close(wp, want_w.cast(DataType::kHALF), 0);
    const Tensor& cs = *f->inputs[4]->constant;
    ASSERT_EQ(cs.dtype(), DataType::kFLOAT);
    expect_close(cs, column_sums(wp), 0);

    const auto want = run_reference(*before, m.inputs);
    const auto got = run_reference(m.g, m.inputs);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got[0].dtype(), DataType::kHALF);
    // Both round in float16, at different places (the unfolded graph its normalized activation, the folded one
    // gamma * B): float16's tolerance.
    expect_close(got[0], want[0], 1e-2, 1e-2);
    EXPECT_LT(relative_l2(want[0], got[0]), 2e-3);
  }
}

TEST(FoldLayerNormIntoMatMul, SharedWeightStaysAsItWas) {
  LnGemmCase c;
  LnGemm m(c);
  // A second GEMM reads B from another input.
  ir::Value* x2 = graph_input(m.g, "x2", {8, 64}, DataType::kHALF);
  ir::Value* w = m.g.find_value("w");
  m.g.outputs().push_back(m.g.add_node("FusedMatMul", "other", {x2, w}, {"y_other"}, {}, 1, "kiln")->outputs[0]);
  const auto w_before = w->constant;
  ASSERT_TRUE(fold(m.g).ok());
  EXPECT_EQ(count_ops(m.g, "LayerNormalization"), 0);
  const ir::Node* other = nullptr;
  for (const auto& n : m.g.nodes())
    if (n->name == "other") other = n.get();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->inputs[1], w);
  EXPECT_EQ(w->constant, w_before);
  expect_close(*w->constant, *w_before, 0);
}

TEST(FoldLayerNormIntoMatMul, LeavesWhatTheKernelsDoNotRun) {
  struct Negative {
    const char* name;
    LnGemmCase c;
    bool on = true;
    int64_t min_rows = 2048;
  };
  std::vector<Negative> cases;
  auto add = [&](const char* name, auto edit, bool on = true, int64_t min_rows = 2048) {
    LnGemmCase c;
    edit(c);
    cases.push_back({name, c, on, min_rows});
  };
  const auto as_is = [](LnGemmCase&) {};
  add("norm_gemm off", as_is, false);
  add("M below the threshold (batch 1, 197 tokens)", [](LnGemmCase& c) { c.x_shape = {1, 197, 64}; });
  add("M below a raised threshold", as_is, true, 8192);
  add("Y read by a second node", [](LnGemmCase& c) { c.second_reader = true; });
  add("activation relu", [](LnGemmCase& c) { c.act = "relu"; });
  add("a residual", [](LnGemmCase& c) { c.residual = true; });
  add("B stored [N, K] (trans_b 1)", [](LnGemmCase& c) { c.trans_b = true; });
  add("float32", [](LnGemmCase& c) { c.dt = DataType::kFLOAT; });
  add("K not a multiple of 8", [](LnGemmCase& c) { c.x_shape = {4, 1024, 60}; });
  add("N not a multiple of 8", [](LnGemmCase& c) { c.n = 30; });
  for (const Negative& neg : cases) {
    SCOPED_TRACE(neg.name);
    LnGemm m(neg.c);
    passes::PassOptions o;
    o.norm_gemm = neg.on;
    o.norm_gemm_min_rows = neg.min_rows;
    Status st = fold(m.g, o);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(count_ops(m.g, "LayerNormalization"), 1) << ir::print(m.g);
    const ir::Node* f = find_op(m.g, "FusedMatMul");
    ASSERT_NE(f, nullptr);
    EXPECT_FALSE(f->attrs.has("norm_epsilon"));
    EXPECT_EQ(f->inputs[0]->name, "ln_1_out");
  }
}

// x [.., 64] (float16 input) -> LayerNormalization (gamma only) -> FusedMatMul "fc" with a constant [64, 32] B
// -> graph output: the smallest graph the fold takes.
struct TinyLnGemm {
  ir::Value *x, *y, *w;
};
TinyLnGemm ln_into_gemm(ir::Graph& g, ops::Shape x_shape) {
  TinyLnGemm r;
  r.x = add_input(g, "x", DataType::kHALF, std::move(x_shape));
  Attributes la;
  la.set("axis", int64_t{-1});
  r.y = g.add_node("LayerNormalization", "ln",
                   {r.x, g.add_constant("gamma", random_f32({64}, 2).cast(DataType::kHALF))}, {"ln_out"}, la, 17)
            ->outputs[0];
  r.w = g.add_constant("w", random_f32({64, 32}, 3).cast(DataType::kHALF));
  g.outputs().push_back(g.add_node("FusedMatMul", "fc", {r.y, r.w}, {"out"}, {}, 1, "kiln")->outputs[0]);
  return r;
}

// A dynamic batch counts at the smallest value the optimization profiles give it (PassOptions::symbol_min, which
// the builder fills): no bound, or one that leaves too few rows, and the LayerNorm stays.
TEST(FoldLayerNormIntoMatMul, SymbolicRowsFoldOnlyWhenTheProfilesBoundThem) {
  struct Bound {
    const char* what;
    std::map<std::string, int64_t> symbol_min;
    bool folds;
  };
  for (const Bound& b : {Bound{"no bound", {}, false}, Bound{"batch >= 1: 1024 rows", {{"batch", 1}}, false},
                         Bound{"batch >= 2: 2048 rows", {{"batch", 2}}, true},
                         Bound{"another symbol bounded", {{"seq", 64}}, false}}) {
    SCOPED_TRACE(b.what);
    ir::Graph g;
    ln_into_gemm(g, {ops::Dim::symbol("batch"), ops::Dim(1024), ops::Dim(64)});
    passes::PassOptions o = norm_gemm_on();
    o.symbol_min = b.symbol_min;
    ASSERT_TRUE(fold(g, o).ok());
    EXPECT_EQ(count_ops(g, "LayerNormalization"), b.folds ? 0 : 1);
  }
}

// A Shape node beside the GEMM (an exporter reading the normalized activation's size: `B, T, C = x.shape`) does not
// keep the LayerNorm: it reads X's shape, the same, after the fold. A second GEMM reader does keep it.
TEST(FoldLayerNormIntoMatMul, ShapeReadersMoveToTheInput) {
  for (bool second_gemm : {false, true}) {
    SCOPED_TRACE(second_gemm ? "a second GEMM reads Y" : "a Shape node reads Y");
    ir::Graph g;
    const TinyLnGemm lg = ln_into_gemm(g, {ops::Dim(4), ops::Dim(1024), ops::Dim(64)});
    ir::Value *x = lg.x, *y = lg.y, *w = lg.w;
    if (second_gemm)
      g.outputs().push_back(g.add_node("FusedMatMul", "fc2", {y, w}, {"out2"}, {}, 1, "kiln")->outputs[0]);
    else
      g.outputs().push_back(g.add_node("Shape", "shape", {y}, {"size"}, {}, 17)->outputs[0]);
    ASSERT_TRUE(fold(g).ok());
    EXPECT_EQ(count_ops(g, "LayerNormalization"), second_gemm ? 1 : 0) << ir::print(g);
    if (!second_gemm) {
      const ir::Node* shape = find_op(g, "Shape");
      ASSERT_NE(shape, nullptr);
      EXPECT_EQ(shape->inputs[0], x);
    }
  }
}

// The whole CUDA pipeline on a float32 pre-LN block's ln_2 -> FFN1 (MatMul, bias Add, erf Gelu), lowered to
// float16: the LayerNorm ends up in the FusedMatMul that the epilogue fusion made, with norm_gemm, and stays
// without it.
TEST(FoldLayerNormIntoMatMul, CudaPipelineFoldsTheLoweredLayerNorm) {
  for (bool on : {false, true}) {
    SCOPED_TRACE(on ? "norm_gemm on" : "norm_gemm off");
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {2, 1024, 64});
    Attributes la;
    la.set("axis", int64_t{-1});
    la.set("epsilon", 1e-6f);
    ir::Value* y = g.add_node("LayerNormalization", "ln_2",
                              {x, g.add_constant("gamma", random_f32({64}, 2, 0.5f, 1.5f)),
                               g.add_constant("beta", random_f32({64}, 3, -0.5f, 0.5f))},
                              {"ln_2_out"}, la, 17)
                       ->outputs[0];
    ir::Value* mm = g.add_node("MatMul", "fc1", {y, g.add_constant("w", random_f32({64, 256}, 4, -0.25f, 0.25f))},
                               {"fc1_out"}, {}, 17)
                        ->outputs[0];
    ir::Value* h =
        g.add_node("Add", "fc1_bias", {mm, g.add_constant("b", random_f32({256}, 5))}, {"h"}, {}, 17)->outputs[0];
    g.outputs().push_back(g.add_node("Gelu", "gelu", {h}, {"out"}, {}, 20)->outputs[0]);
    const std::vector<Tensor> in = {random_f32({2, 1024, 64}, 6, -1.0f, 3.0f)};
    auto before = g.clone();
    passes::PassOptions o;
    o.norm_gemm = on;
    Status st = run_cuda_pipeline(g, DataType::kHALF, o);
    ASSERT_TRUE(st.ok()) << st.message();
    const ir::Node* f = find_op(g, "FusedMatMul");
    ASSERT_NE(f, nullptr) << ir::print(g);
    EXPECT_EQ(f->attrs.get_string("activation", "none").value(), "gelu_erf");
    EXPECT_EQ(count_ops(g, "LayerNormalization"), on ? 0 : 1) << ir::print(g);
    EXPECT_EQ(f->attrs.has("norm_epsilon"), on);
    if (on) {
      EXPECT_FLOAT_EQ(f->attrs.get_float("norm_epsilon", 0.0f).value(), 1e-6f);
    }
    const auto want = run_reference(*before, in);
    const auto got = run_reference(g, in);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    EXPECT_LT(relative_l2(want[0], got[0]), 5e-3);
  }
}

}  // namespace

// The transformer exports `make test-models` writes (KILN_TRANSFORMER_MODEL_DIRS, see test_transformer_models.cpp)
// through the CUDA FP16 pipeline with norm_gemm at any row count (the CI exports are small): a pre-LN model's
// LayerNorms go into the GEMMs after them (gpt, vit: ln_1 -> QKV, ln_2 -> FFN1; bert's post-LN outputs also feed
// the residual and stay), and the output stays what the unfolded graph computes. Skipped when the variable is unset.
TEST(FoldLayerNormIntoMatMul, TransformerExports) {
  const char* dirs = std::getenv("KILN_TRANSFORMER_MODEL_DIRS");
  if (!dirs || !*dirs) GTEST_SKIP() << "KILN_TRANSFORMER_MODEL_DIRS is not set (`make test-models` sets it)";
  std::stringstream ss(dirs);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    SCOPED_TRACE(dir);
    auto g = import_onnx_file(dir + "/model.onnx");
    ASSERT_NE(g, nullptr);
    // The batch as the input file has it: the fold wants the row count statically (the builder's profile gives it).
    ir::Value* in = g->inputs()[0];
    const Tensor x = read_input(dir + "/input.bin", *in);
    in->shape[0] = ops::Dim(x.dim(0));
    auto plain = g->clone();
    ASSERT_TRUE(run_cuda_pipeline(*plain).ok());
    passes::PassOptions o;
    o.norm_gemm = true;
    o.norm_gemm_min_rows = 1;
    Status st = run_cuda_pipeline(*g, DataType::kHALF, o);
    ASSERT_TRUE(st.ok()) << st.message();
    int folded = 0;
    for (const auto& n : g->nodes()) folded += n->op_type == "FusedMatMul" && n->attrs.has("norm_epsilon");
    const int norms_before = count_ops(*plain, "LayerNormalization"), norms_after = count_ops(*g, "LayerNormalization");
    std::cout << dir << ": " << folded << " LayerNorms folded into GEMMs (" << norms_before << " -> " << norms_after
              << " LayerNormalization nodes)\n";
    EXPECT_EQ(norms_before - norms_after, folded);
    if (dir.find("bert") == std::string::npos) {
      EXPECT_GT(folded, 0) << "a pre-LN export";
    }
    const auto want = run_reference(*plain, {x});
    const auto got = run_reference(*g, {x});
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    EXPECT_LT(relative_l2(want[0], got[0]), 1e-2);
  }
}
