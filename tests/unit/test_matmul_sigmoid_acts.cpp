// FusedMatMul's SiLU and sigmoid epilogues (the forms only cuDNN's fused matmul applies in-kernel): the reference
// compute against the same epilogue written as plain ONNX nodes (MatMul, Add, Sigmoid, Mul) on the CPU backend,
// and conv1x1_as_gemm keeping them inside the GEMM only with PassOptions::matmul_sigmoid_acts, which the builder
// sets for CUDA alone (unless KILN_DNN_MATMUL=0); without it the CUDA pipeline's graph is the one it was before.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <set>
#include <tuple>

#include "cnn_onnx_model.h"
#include "cnn_test_util.h"
#include "common/dnn_matmul_switch.h"
#include "ops/layout_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

// y = act(A·op(B) + bias [+ res first]) [+ res after] as FusedMatMul, and the same as ONNX nodes.
struct EpilogueCase {
  const char* act;
  bool trans_b, bias, res, residual_first;
};

std::unique_ptr<ir::Graph> fused_graph(const EpilogueCase& c, int64_t m, int64_t n, int64_t k, DataType dt) {
  auto gp = std::make_unique<ir::Graph>();
  ir::Graph& g = *gp;
  std::vector<ir::Value*> in = {
      graph_input(g, "a", {m, k}, dt),
      graph_input(g, "b", c.trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, dt)};
  in.push_back(c.bias ? graph_input(g, "bias", {n}, dt) : nullptr);
  if (c.res) in.push_back(graph_input(g, "z", {m, n}, dt));
  while (in.size() > 2 && !in.back()) in.pop_back();
  Attributes at;
  at.set("activation", std::string(c.act));
  at.set("trans_b", int64_t{c.trans_b});
  at.set("residual_first", int64_t{c.residual_first});
  g.outputs().push_back(g.add_node("FusedMatMul", "mm", in, {"y"}, at, 1, "kiln")->outputs[0]);
  return gp;
}

std::unique_ptr<ir::Graph> onnx_graph(const EpilogueCase& c, int64_t m, int64_t n, int64_t k, DataType dt) {
  auto gp = std::make_unique<ir::Graph>();
  ir::Graph& g = *gp;
  ir::Value* a = graph_input(g, "a", {m, k}, dt);
  ir::Value* b = graph_input(g, "b", c.trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, dt);
  ir::Value* bias = c.bias ? graph_input(g, "bias", {n}, dt) : nullptr;
  ir::Value* z = c.res ? graph_input(g, "z", {m, n}, dt) : nullptr;
  int id = 0;
  auto node = [&](const std::string& op, std::vector<ir::Value*> in, Attributes at = {}) {
    return g.add_node(op, op + std::to_string(id), in, {"t" + std::to_string(id++)}, std::move(at), 17)->outputs[0];
  };
  if (c.trans_b) {
    Attributes p;
    p.set("perm", std::vector<int64_t>{1, 0});
    b = node("Transpose", {b}, p);
  }
  ir::Value* t = node("MatMul", {a, b});
  if (bias) t = node("Add", {t, bias});
  if (z && c.residual_first) t = node("Add", {t, z});
  ir::Value* s = node("Sigmoid", {t});
  t = std::string(c.act) == "silu" ? node("Mul", {t, s}) : s;
  if (z && !c.residual_first) t = node("Add", {t, z});
  g.outputs().push_back(t);
  return gp;
}

TEST(FusedMatMulSigmoidActs, MatchTheEpilogueAsOnnxNodes) {
  const int64_t m = 37, n = 19, k = 23;  // odd sizes: no vector path is implied
  for (DataType dt : {DataType::kFLOAT, DataType::kDOUBLE})
    for (const char* act : {"silu", "sigmoid"})
      for (bool tb : {false, true})
        for (auto [bias, res, first] : {std::tuple{false, false, false},
                                        {true, false, false},
                                        {true, true, false},
                                        {true, true, true},
                                        {false, true, true},
                                        {false, true, false}}) {
          const EpilogueCase c{act, tb, bias, res, first};
          SCOPED_TRACE(std::string(act) + " " + dtype_name(dt) + (tb ? " trans_b" : "") + (bias ? " bias" : "") +
                       (res ? (first ? " residual first" : " residual after") : ""));
          // Inputs wide enough for the sigmoid's tails (|x| up to ~30 after the product).
          std::vector<Tensor> in = {
              random_f32({m, k}, 1, -2.f, 2.f).cast(dt),
              random_f32(tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, 2, -1.5f, 1.5f).cast(dt)};
          if (bias) in.push_back(random_f32({n}, 3).cast(dt));
          if (res) in.push_back(random_f32({m, n}, 4).cast(dt));
          auto f = fused_graph(c, m, n, k, dt), o = onnx_graph(c, m, n, k, dt);
          ASSERT_TRUE(run_passes(*f, {}).ok());
          ASSERT_TRUE(run_passes(*o, {}).ok());
          auto got = run_reference(*f, in);
          auto want = run_reference(*o, in);
          ASSERT_EQ(got.size(), 1u);
          ASSERT_EQ(want.size(), 1u);
          EXPECT_EQ(got[0].shape(), (std::vector<int64_t>{m, n}));
          expect_close(got[0], want[0], 1e-5, 1e-5);
        }
}

// The values where SiLU and sigmoid differ most from the other activations' forms: large negative inputs (exp
// overflows), zero, large positive ones.
TEST(FusedMatMulSigmoidActs, Tails) {
  for (const char* act : {"silu", "sigmoid"}) {
    ir::Graph g2;
    std::vector<ir::Value*> in2 = {graph_input(g2, "a", {1, 1}), graph_input(g2, "b", {1, 6})};
    Attributes at;
    at.set("activation", std::string(act));
    g2.outputs().push_back(g2.add_node("FusedMatMul", "mm", in2, {"y"}, at, 1, "kiln")->outputs[0]);
    ASSERT_TRUE(run_passes(g2, {}).ok());
    const std::vector<float> xs = {-1000.f, -30.f, 0.f, 1.f, 30.f, 1000.f};
    auto got = run_reference(g2, {Tensor::from_vector<float>({1, 1}, {1.f}), Tensor::from_vector<float>({1, 6}, xs)});
    ASSERT_EQ(got.size(), 1u);
    for (size_t i = 0; i < xs.size(); ++i) {
      const double x = xs[i], sig = 1.0 / (1.0 + std::exp(-x));
      const double want = std::string(act) == "silu" ? x * sig : sig;
      EXPECT_NEAR(got[0].data<float>()[i], want, 1e-6 * std::max(1.0, std::abs(want))) << act << " x=" << x;
      EXPECT_FALSE(std::isnan(got[0].data<float>()[i])) << act << " x=" << x;
    }
  }
}

TEST(FusedMatMulSigmoidActs, UnknownActivationStillRejected) {
  ir::Graph g;
  std::vector<ir::Value*> in = {graph_input(g, "a", {2, 3}), graph_input(g, "b", {3, 4})};
  Attributes at;
  at.set("activation", std::string("swish"));
  g.outputs().push_back(g.add_node("FusedMatMul", "mm", in, {"y"}, at, 1, "kiln")->outputs[0]);
  const Status st = run_passes(g, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("activation must be none, relu"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'swish'"), std::string::npos) << st.message();
  // clip is an activation of FusedConv's epilogue, not of FusedMatMul's.
  at.set("activation", std::string("clip"));
  ir::Graph g2;
  std::vector<ir::Value*> in2 = {graph_input(g2, "a", {2, 3}), graph_input(g2, "b", {3, 4})};
  g2.outputs().push_back(g2.add_node("FusedMatMul", "mm", in2, {"y"}, at, 1, "kiln")->outputs[0]);
  EXPECT_FALSE(run_passes(g2, {}).ok());
}

// x [2,5,6,8] NHWC -> 1x1 FusedConv (activation act, bias, optional residual) -> y.
struct OneConv1x1 {
  ir::Graph g;
  std::vector<Tensor> inputs;
  OneConv1x1(const std::string& act, bool residual) {
    ir::Value* x = graph_input(g, "x", {2, 5, 6, 8});
    inputs.push_back(random_f32({2, 5, 6, 8}, 1, -2.f, 2.f));
    Attributes a;
    a.set("layout", "NHWC");
    a.set("activation", act);
    a.set("alpha", 1.f / 6);
    a.set("beta", 0.5f);
    a.set("clip_min", 0.f);
    a.set("clip_max", 0.5f);
    std::vector<ir::Value*> in = {x, g.add_constant("w", random_f32({16, 1, 1, 8}, 2)),
                                  g.add_constant("b", random_f32({16}, 3))};
    if (residual) {
      in.push_back(graph_input(g, "z", {2, 5, 6, 16}));
      inputs.push_back(random_f32({2, 5, 6, 16}, 4));
    }
    g.outputs().push_back(g.add_node("FusedConv", "conv", in, {"y"}, a, 1, "kiln")->outputs[0]);
  }
};

std::string activation_of(const ir::Node* n) { return n->attrs.get_string("activation", "none").value(); }

TEST(Conv1x1AsGemmSigmoidActs, InsideTheGemmOnlyWithTheSwitch) {
  for (const char* act : {"silu", "sigmoid", "hardswish", "clip", "relu"})
    for (bool residual : {false, true})
      for (bool on : {false, true}) {
        SCOPED_TRACE(std::string(act) + (residual ? " residual" : "") + (on ? " switch on" : " switch off"));
        OneConv1x1 c(act, residual);
        ASSERT_TRUE(run_passes(c.g, {}).ok());
        auto want = run_reference(c.g, c.inputs);
        passes::PassOptions o;
        o.matmul_sigmoid_acts = on;
        ASSERT_TRUE(run_passes(c.g, list_of(passes::make_conv1x1_as_gemm()), o).ok());
        ASSERT_EQ(count_ops(c.g, "FusedMatMul"), 1) << ir::print(c.g);
        const ir::Node* mm = find_op(c.g, "FusedMatMul");
        const std::string a = act;
        const bool sigmoid_form = a == "silu" || a == "sigmoid";
        const std::string expect = on && sigmoid_form ? a : a == "relu" ? "relu" : "none";
        EXPECT_EQ(activation_of(mm), expect) << ir::print(c.g);
        // Inside: the GEMM alone; outside: Sigmoid (and SiLU's Mul), HardSigmoid + Mul, or Clip after it.
        const size_t want_nodes = expect != "none" ? 1u : a == "silu" || a == "hardswish" ? 3u : 2u;
        EXPECT_EQ(c.g.nodes().size(), want_nodes) << ir::print(c.g);
        EXPECT_EQ(count_ops(c.g, "Sigmoid"), !on && sigmoid_form ? 1 : 0);
        // FusedConv's residual comes before the activation: FusedMatMul's residual_first.
        if (residual) {
          EXPECT_EQ(mm->attrs.get_int("residual_first", 0).value(), 1);
        }
        EXPECT_EQ(c.g.outputs()[0]->name, "y");
        auto got = run_reference(c.g, c.inputs);
        ASSERT_EQ(got.size(), 1u);
        expect_close(got[0], want[0], 1e-5, 1e-5);
      }
}

// fuse_matmul_epilogue under the same option: MatMul (+ bias) followed by SiLU as x * Sigmoid(x) (either operand
// order), or by a Sigmoid, then a residual Add, becomes one FusedMatMul with the option and stays as it was
// without; a product read by anything besides the SiLU's two nodes is left alone. Same result on the reference.
struct MlpGraph {
  std::unique_ptr<ir::Graph> g = std::make_unique<ir::Graph>();
  std::vector<Tensor> inputs;
  MlpGraph(const std::string& act, bool sigmoid_first, bool residual, bool extra_reader) {
    ir::Graph& gr = *g;
    ir::Value* x = graph_input(gr, "x", {2, 5, 16});
    inputs.push_back(random_f32({2, 5, 16}, 5, -2.f, 2.f));
    int id = 0;
    auto node = [&](const std::string& op, std::vector<ir::Value*> in) {
      return gr.add_node(op, op + std::to_string(id), in, {"v" + std::to_string(id++)}, {}, 17)->outputs[0];
    };
    ir::Value* t = node("MatMul", {x, gr.add_constant("w", random_f32({16, 24}, 6))});
    t = node("Add", {t, gr.add_constant("b", random_f32({24}, 7))});
    ir::Value* s = node("Sigmoid", {t});
    ir::Value* y = act == "silu" ? (sigmoid_first ? node("Mul", {s, t}) : node("Mul", {t, s})) : s;
    if (residual) {
      y = node("Add", {y, graph_input(gr, "z", {2, 5, 24})});
      inputs.push_back(random_f32({2, 5, 24}, 8));
    }
    gr.outputs().push_back(y);
    if (extra_reader) gr.outputs().push_back(node("Relu", {t}));
  }
};

TEST(FuseMatMulEpilogueSigmoidActs, SiluAndSigmoidOnlyWithTheOption) {
  for (const char* act : {"silu", "sigmoid"})
    for (bool sigmoid_first : {false, true})
      for (bool residual : {false, true})
        for (bool extra_reader : {false, true})
          for (bool on : {false, true}) {
            if (std::string(act) == "sigmoid" && sigmoid_first) continue;
            SCOPED_TRACE(std::string(act) + (sigmoid_first ? " Mul(Sigmoid(t), t)" : "") +
                         (residual ? " residual" : "") + (extra_reader ? " extra reader" : "") +
                         (on ? " option on" : " option off"));
            MlpGraph m(act, sigmoid_first, residual, extra_reader);
            ASSERT_TRUE(run_passes(*m.g, {}).ok());
            auto want = run_reference(*m.g, m.inputs);
            passes::PassOptions o;
            o.matmul_sigmoid_acts = on;
            ASSERT_TRUE(
                run_passes(*m.g, list_of(passes::make_fuse_matmul_epilogue(), passes::make_dead_code_elimination()), o)
                    .ok());
            const bool fused = on && !extra_reader;
            ASSERT_EQ(count_ops(*m.g, "FusedMatMul"), 1) << ir::print(*m.g);
            const ir::Node* mm = find_op(*m.g, "FusedMatMul");
            EXPECT_EQ(activation_of(mm), fused ? act : "none") << ir::print(*m.g);
            EXPECT_EQ(count_ops(*m.g, "Sigmoid"), fused ? 0 : 1) << ir::print(*m.g);
            // The residual joins the fused node (after the activation) where the activation did.
            if (fused && residual) {
              EXPECT_EQ(mm->inputs.size(), 4u) << ir::print(*m.g);
              EXPECT_EQ(mm->attrs.get_int("residual_first", 0).value(), 0);
              EXPECT_EQ(count_ops(*m.g, "Add"), 0) << ir::print(*m.g);
            }
            if (fused) {
              EXPECT_EQ(m.g->nodes().size(), 1u) << ir::print(*m.g);
            }
            auto got = run_reference(*m.g, m.inputs);
            ASSERT_EQ(got.size(), want.size());
            for (size_t i = 0; i < got.size(); ++i) expect_close(got[i], want[i], 1e-5, 1e-5);
          }
}

// The builder's choice: the CUDA backend unless KILN_DNN_MATMUL=0, never the CPU backend.
TEST(Conv1x1AsGemmSigmoidActs, BuilderSetsTheOptionForCudaUnlessSwitchedOff) {
  const char* old = std::getenv("KILN_DNN_MATMUL");
  const std::string saved = old ? old : "";
  EXPECT_FALSE(passes::PassOptions{}.matmul_sigmoid_acts);
  unsetenv("KILN_DNN_MATMUL");
  EXPECT_TRUE(matmul_sigmoid_acts_for(Backend::kCUDA));
  EXPECT_FALSE(matmul_sigmoid_acts_for(Backend::kCPU));
  setenv("KILN_DNN_MATMUL", "0", 1);
  EXPECT_FALSE(matmul_sigmoid_acts_for(Backend::kCUDA));
  setenv("KILN_DNN_MATMUL", "1", 1);
  EXPECT_TRUE(matmul_sigmoid_acts_for(Backend::kCUDA));
  EXPECT_FALSE(matmul_sigmoid_acts_for(Backend::kCPU));
  if (old)
    setenv("KILN_DNN_MATMUL", saved.c_str(), 1);
  else
    unsetenv("KILN_DNN_MATMUL");
}

// The whole CUDA FP16 pipeline on an efficientnet-like SE block (its reduce/expand 1x1 convolutions carry SiLU and
// sigmoid): with the option off the graph prints exactly as with default options and keeps SiLU/sigmoid as
// ONNX nodes (what it was before the option existed); with it on they move into the two GEMMs (which fuse_small_mlp
// then makes one FusedMlp), the graph loses those nodes, and both compute what the CPU pipeline's graph computes on
// the reference kernels.
TEST(Conv1x1AsGemmSigmoidActs, SeBlockThroughTheCudaPipeline) {
  const onnx::ModelProto model = se_block_cnn(2, 12, 48);
  auto cpu = import_onnx(model);
  ASSERT_TRUE(cpu);
  auto def = cpu->clone(), off = cpu->clone(), on = cpu->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  ASSERT_TRUE(run_cuda_pipeline(*def).ok());
  auto cuda = [](ir::Graph& g, bool sw) {
    passes::PassOptions o;
    o.backend = Backend::kCUDA;
    o.reduced_precision = DataType::kHALF;
    o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
    o.matmul_sigmoid_acts = sw;
    return run_passes(g, passes::pipeline_for(Backend::kCUDA), o);
  };
  ASSERT_TRUE(cuda(*off, false).ok());
  ASSERT_TRUE(cuda(*on, true).ok());
  EXPECT_EQ(ir::print(*off), ir::print(*def));
  auto acts = [](const ir::Graph& g) {
    std::multiset<std::string> s;
    for (auto& n : g.nodes()) {
      if (n->op_type == "FusedMatMul") s.insert(activation_of(n.get()));
      // With the activations in the epilogues, fuse_small_mlp makes the excitation's two GEMMs one FusedMlp.
      if (n->op_type == "FusedMlp")
        for (const char* k : {"activation1", "activation2"}) s.insert(n->attrs.get_string(k, "none").value());
    }
    return s;
  };
  const std::multiset<std::string> off_acts = acts(*off), on_acts = acts(*on);
  EXPECT_EQ(off_acts.count("silu") + off_acts.count("sigmoid"), 0u) << ir::print(*off);
  EXPECT_EQ(on_acts.count("silu"), 1u) << ir::print(*on);
  EXPECT_EQ(on_acts.count("sigmoid"), 1u) << ir::print(*on);
  EXPECT_EQ(on_acts.size(), off_acts.size());
  EXPECT_LT(on->nodes().size(), off->nodes().size()) << ir::print(*on);
  const Tensor x = random_f32({2, 8, 12, 12}, 77);
  expect_same_on_reference(*cpu, *off, x, 3e-2);
  expect_same_on_reference(*cpu, *on, x, 3e-2);
}

}  // namespace
