// Transformer fusion passes (fuse_gelu, fuse_layernorm, fuse_rmsnorm, fuse_matmul_epilogue, fuse_attention,
// fuse_qkv) and their kiln ops: graph structure after each pass, and fused vs unfused outputs on the reference CPU
// kernels.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>

#include "builder/engine_writer.h"
#include "cnn_test_util.h"
#include "engine_io_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "ops/attention_layout.h"
#include "kiln/runtime.h"
#include "passes/matcher.h"
#include "passes/pass_manager.h"

using namespace kiln;

namespace {

struct Quiet : ILogger {
  void log(Severity, const char*) noexcept override {}
};

Tensor random(std::vector<int64_t> shape, uint32_t seed, float lo = -1, float hi = 1) {
  return test::random_f32(std::move(shape), seed, lo, hi);
}

// A small graph builder: every node at opset 17 unless given, shapes from shape inference (infer()).
struct Net {
  std::unique_ptr<ir::Graph> g = std::make_unique<ir::Graph>();
  int seed = 1;
  ir::Value* input(const std::string& name, std::vector<int64_t> shape) {
    return test::graph_input(*g, name, std::move(shape));
  }
  ir::Value* c(Tensor t) { return g->add_constant("c" + std::to_string(seed++), std::move(t)); }
  ir::Value* scalar(float v) { return c(Tensor::from_vector<float>({}, {v})); }
  ir::Value* weight(std::vector<int64_t> shape) { return c(random(shape, seed * 7919u, -0.5f, 0.5f)); }
  ir::Value* op(const std::string& type, std::vector<ir::Value*> in, Attributes a = {}, int opset = 17) {
    return g->add_node(type, g->unique_node_name(type), in, {type + std::to_string(seed++)}, std::move(a), opset)
        ->outputs[0];
  }
  void output(ir::Value* v) { g->outputs().push_back(v); }
};

// test::run_passes (shape inference first, verified after each pass), then dead-code elimination.
Status run_passes(ir::Graph& g, passes::PassList l, passes::PassOptions o = {}) {
  l.push_back(passes::make_dead_code_elimination());
  return test::run_passes(g, std::move(l), o);
}

using test::list_of;

// The shared reference runner (graph_test_util.h), under the name these tests use.
constexpr auto run = &test::run_reference;

// Every output within tol, absolutely (NaN never is).
void expect_close(const std::vector<Tensor>& want, const std::vector<Tensor>& got, double tol) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t k = 0; k < want.size(); ++k) {
    SCOPED_TRACE("output " + std::to_string(k));
    test::expect_close(got[k], want[k], tol);
  }
}

constexpr auto count = &test::count_ops;
constexpr auto find = &test::find_op;

// Runs `passes` on a copy of net's graph and checks that the copy computes what the original does.
std::unique_ptr<ir::Graph> fuse_and_compare(Net& net, passes::PassList l, const std::vector<Tensor>& inputs,
                                            double tol = 1e-4) {
  static Quiet quiet;
  passes::PassContext ctx(quiet, {});
  EXPECT_TRUE(passes::make_shape_inference()->apply(*net.g, ctx).ok());
  auto fused = net.g->clone();
  Status st = run_passes(*fused, std::move(l));
  EXPECT_TRUE(st.ok()) << st.message();
  expect_close(run(*net.g, inputs), run(*fused, inputs), tol);
  return fused;
}

ir::Value* gelu_erf_decomposed(Net& n, ir::Value* x, int form) {
  ir::Value* erf = n.op("Erf", {n.op("Div", {x, n.scalar(1.4142135623730951f)})});
  ir::Value* one_plus = n.op("Add", {erf, n.scalar(1.0f)});
  switch (form) {
    case 0:
      return n.op("Mul", {n.op("Mul", {x, one_plus}), n.scalar(0.5f)});  // torch.onnx's aten::gelu
    case 1:
      return n.op("Mul", {n.op("Mul", {n.scalar(0.5f), x}), one_plus});
    default:
      return n.op("Mul", {x, n.op("Mul", {one_plus, n.scalar(0.5f)})});
  }
}

// HF gpt2's NewGELU: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3))))
ir::Value* gelu_tanh_decomposed(Net& n, ir::Value* x) {
  ir::Value* cube = n.op("Pow", {x, n.scalar(3.0f)});
  ir::Value* inner = n.op("Add", {x, n.op("Mul", {n.scalar(0.044715f), cube})});
  ir::Value* t = n.op("Tanh", {n.op("Mul", {n.scalar(0.7978845608028654f), inner})});
  return n.op("Mul", {n.op("Mul", {n.scalar(0.5f), x}), n.op("Add", {n.scalar(1.0f), t})});
}

// ---------------------------------------------------------------- fuse_gelu

TEST(FuseGelu, EveryErfAssociationAndTheTanhForm) {
  for (int form = 0; form < 4; ++form) {
    Net n;
    ir::Value* x = n.input("x", {2, 5, 16});
    n.output(form < 3 ? gelu_erf_decomposed(n, x, form) : gelu_tanh_decomposed(n, x));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_gelu()), {random({2, 5, 16}, 3, -4, 4)}, 1e-5);
    ASSERT_EQ(fused->nodes().size(), 1u) << "form " << form;
    const ir::Node* gelu = find(*fused, "Gelu");
    ASSERT_NE(gelu, nullptr);
    EXPECT_EQ(gelu->attrs.get_string("approximate", "none").value(), form < 3 ? "none" : "tanh");
    EXPECT_EQ(fused->outputs()[0]->name, n.g->outputs()[0]->name) << "the graph output keeps its name";
  }
}

// A float16 model (exported in half precision or converted by onnxconverter-common) holds GELU's constants rounded:
// sqrt(2) is 1.4140625, sqrt(2/pi) 0.797852, 0.044715 0.044708. Within that rounding they are GELU's constants.
TEST(FuseGelu, Float16ModelConstants) {
  for (int form : {0, 3}) {
    SCOPED_TRACE(form);
    Net n;
    ir::Value* x = test::graph_input(*n.g, "x", {2, 5, 16}, DataType::kHALF);
    auto h = [&](float v) { return n.c(Tensor::from_vector<float>({}, {v}).cast(DataType::kHALF)); };
    ir::Value* y = nullptr;
    if (form == 0) {
      ir::Value* erf = n.op("Erf", {n.op("Div", {x, h(1.4142135623730951f)})});
      y = n.op("Mul", {n.op("Mul", {x, n.op("Add", {erf, h(1.0f)})}), h(0.5f)});
    } else {
      ir::Value* cube = n.op("Pow", {x, h(3.0f)});
      ir::Value* inner = n.op("Add", {x, n.op("Mul", {h(0.044715f), cube})});
      ir::Value* t = n.op("Tanh", {n.op("Mul", {h(0.7978845608028654f), inner})});
      y = n.op("Mul", {n.op("Mul", {h(0.5f), x}), n.op("Add", {h(1.0f), t})});
    }
    n.output(y);
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_gelu()),
                                  {random({2, 5, 16}, 3, -4, 4).cast(DataType::kHALF)}, 1e-2);
    EXPECT_EQ(count(*fused, "Gelu"), 1) << ir::print(*fused);
    EXPECT_EQ(fused->nodes().size(), 1u);
  }
}

TEST(FuseGelu, WrongConstantOrSharedIntermediateIsLeftAlone) {
  Net n;
  ir::Value* x = n.input("x", {4, 8});
  ir::Value* erf = n.op("Erf", {n.op("Div", {x, n.scalar(2.0f)})});  // not sqrt(2)
  n.output(n.op("Mul", {n.op("Mul", {x, n.op("Add", {erf, n.scalar(1.0f)})}), n.scalar(0.5f)}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_gelu()), {random({4, 8}, 4)});
  EXPECT_EQ(count(*fused, "Gelu"), 0);

  Net m;
  ir::Value* y = m.input("x", {4, 8});
  ir::Value* g = gelu_erf_decomposed(m, y, 0);
  m.output(g);
  m.output(m.g->nodes()[1]->outputs[0]);  // the Erf result is needed on its own
  auto fused2 = fuse_and_compare(m, list_of(passes::make_fuse_gelu()), {random({4, 8}, 5)});
  EXPECT_EQ(count(*fused2, "Gelu"), 0);
}

// ---------------------------------------------------------------- fuse_layernorm

ir::Value* layernorm_decomposed(Net& n, ir::Value* x, int64_t d, bool with_beta) {
  Attributes ax;
  ax.set("axes", Attribute(std::vector<int64_t>{-1}));
  ir::Value* mean = n.op("ReduceMean", {x}, ax);
  ir::Value* diff = n.op("Sub", {x, mean});
  ir::Value* var = n.op("ReduceMean", {n.op("Pow", {diff, n.scalar(2.0f)})}, ax);
  ir::Value* den = n.op("Sqrt", {n.op("Add", {var, n.scalar(1e-5f)})});
  ir::Value* y = n.op("Mul", {n.op("Div", {diff, den}), n.c(random({d}, 11, 0.5f, 1.5f))});
  return with_beta ? n.op("Add", {y, n.c(random({d}, 12))}) : y;
}

TEST(FuseLayerNorm, DecomposedFormWithAndWithoutBeta) {
  for (bool beta : {true, false}) {
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(layernorm_decomposed(n, x, 32, beta));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 6, -3, 3)}, 1e-5);
    ASSERT_EQ(fused->nodes().size(), 1u);
    const ir::Node* ln = find(*fused, "LayerNormalization");
    ASSERT_NE(ln, nullptr);
    EXPECT_EQ(ln->inputs.size(), beta ? 3u : 2u);
    EXPECT_NEAR(ln->attrs.get_float("epsilon").value(), 1e-5f, 1e-9);
  }
}

TEST(FuseLayerNorm, OtherAxisIsLeftAlone) {
  Net n;
  ir::Value* x = n.input("x", {2, 7, 32});
  Attributes ax;
  ax.set("axes", Attribute(std::vector<int64_t>{1}));
  ir::Value* mean = n.op("ReduceMean", {x}, ax);
  ir::Value* diff = n.op("Sub", {x, mean});
  ir::Value* var = n.op("ReduceMean", {n.op("Pow", {diff, n.scalar(2.0f)})}, ax);
  ir::Value* den = n.op("Sqrt", {n.op("Add", {var, n.scalar(1e-5f)})});
  n.output(n.op("Mul", {n.op("Div", {diff, den}), n.c(random({32}, 11))}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 6)});
  EXPECT_EQ(count(*fused, "LayerNormalization"), 0);
}

// HF ConvNextLayerNorm channels_first: mean and variance over axis 1 of NCHW, weight[:, None, None] * x +
// bias[:, None, None] ([C,1,1] constants): Transpose to NHWC -> LayerNormalization -> Transpose back.
ir::Value* channel_layernorm(Net& n, ir::Value* x, std::vector<int64_t> mean_axes, std::vector<int64_t> var_axes,
                             std::vector<int64_t> param_shape, bool rsqrt, bool beta) {
  Attributes ma, va;
  ma.set("axes", Attribute(mean_axes));
  va.set("axes", Attribute(var_axes));
  ir::Value* mean = n.op("ReduceMean", {x}, ma);
  ir::Value* diff = n.op("Sub", {x, mean});
  ir::Value* var = n.op("ReduceMean", {n.op("Pow", {diff, n.scalar(2.0f)})}, va);
  ir::Value* v = n.op("Add", {var, n.scalar(1e-6f)});
  ir::Value* norm = rsqrt ? n.op("Mul", {diff, n.op("Div", {n.scalar(1.0f), n.op("Sqrt", {v})})})
                          : n.op("Div", {diff, n.op("Sqrt", {v})});
  ir::Value* y = n.op("Mul", {n.c(random(param_shape, 13, 0.5f, 1.5f)), norm});
  return beta ? n.op("Add", {y, n.c(random(param_shape, 14))}) : y;
}

TEST(FuseLayerNorm, ChannelAxisBecomesTransposedLayerNormalization) {
  for (bool rsqrt : {false, true}) {
    for (bool beta : {true, false}) {
      SCOPED_TRACE(std::string(rsqrt ? "rsqrt" : "div") + (beta ? " with beta" : ""));
      Net n;
      ir::Value* x = n.input("x", {2, 8, 5, 6});
      n.output(channel_layernorm(n, x, {1}, {1}, {8, 1, 1}, rsqrt, beta));
      auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 8, 5, 6}, 15, -3, 3)}, 1e-5);
      ASSERT_EQ(fused->nodes().size(), 3u) << ir::print(*fused);
      const ir::Node* ln = find(*fused, "LayerNormalization");
      ASSERT_NE(ln, nullptr);
      EXPECT_EQ(ln->attrs.get_int("axis").value(), -1);
      EXPECT_EQ(ln->inputs[0]->shape, (ops::Shape{2, 5, 6, 8}));
      EXPECT_EQ(ln->inputs[1]->constant->shape(), (std::vector<int64_t>{8}));
      EXPECT_EQ(ln->inputs.size(), beta ? 3u : 2u);
      EXPECT_EQ(ln->inputs[0]->producer->attrs.get_ints("perm").value(), (std::vector<int64_t>{0, 2, 3, 1}));
      const ir::Node* back = fused->outputs()[0]->producer;
      ASSERT_EQ(back->op_type, "Transpose");
      EXPECT_EQ(back->attrs.get_ints("perm").value(), (std::vector<int64_t>{0, 3, 1, 2}));
    }
  }
}

// Parameters along another axis than the statistics, or the two statistics over different axes: not a norm over
// one axis, left alone.
TEST(FuseLayerNorm, ChannelAxisWithParamsOrStatisticsElsewhereIsLeftAlone) {
  struct Case {
    std::vector<int64_t> mean_axes, var_axes, param_shape;
  };
  for (const Case& c : {Case{{1}, {1}, {1, 1, 6}}, Case{{1}, {1}, {8, 1}}, Case{{1}, {2}, {8, 1, 1}},
                        Case{{1, 2}, {1, 2}, {8, 1, 1}}}) {
    Net n;
    ir::Value* x = n.input("x", {2, 8, 8, 6});
    n.output(channel_layernorm(n, x, c.mean_axes, c.var_axes, c.param_shape, false, true));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 8, 8, 6}, 16, -3, 3)}, 1e-5);
    EXPECT_EQ(count(*fused, "LayerNormalization"), 0) << ir::print(*fused);
  }
}

// The normalization x / sqrt(v) in the forms exporters write: 0 Div(x, Sqrt(v)), 1 x * Reciprocal(Sqrt(v)),
// 2 x * Div(1, Sqrt(v)) (torch's rsqrt), 3 Pow(v, -0.5) * x (operands swapped).
ir::Value* div_by_sqrt(Net& n, ir::Value* x, ir::Value* v, int form) {
  switch (form) {
    case 0:
      return n.op("Div", {x, n.op("Sqrt", {v})});
    case 1:
      return n.op("Mul", {x, n.op("Reciprocal", {n.op("Sqrt", {v})})});
    case 2:
      return n.op("Mul", {x, n.op("Div", {n.c(Tensor::from_vector<float>({1}, {1.0f})), n.op("Sqrt", {v})})});
    default:
      return n.op("Mul", {n.op("Pow", {v, n.scalar(-0.5f)}), x});
  }
}

Attributes last_axis() {
  Attributes ax;
  ax.set("axes", Attribute(std::vector<int64_t>{-1}));
  return ax;
}

TEST(FuseLayerNorm, RsqrtFormsAndMulSquare) {
  for (int form = 1; form < 4; ++form) {
    for (bool mul_square : {false, true}) {
      SCOPED_TRACE("form " + std::to_string(form) + (mul_square ? " d*d" : " pow"));
      Net n;
      ir::Value* x = n.input("x", {2, 7, 32});
      ir::Value* mean = n.op("ReduceMean", {x}, last_axis());
      ir::Value* d = n.op("Sub", {x, mean});
      ir::Value* sq = mul_square ? n.op("Mul", {d, d}) : n.op("Pow", {d, n.scalar(2.0f)});
      ir::Value* v = n.op("Add", {n.scalar(1e-5f), n.op("ReduceMean", {sq}, last_axis())});
      ir::Value* y = n.op("Mul", {n.c(random({32}, 11, 0.5f, 1.5f)), div_by_sqrt(n, d, v, form)});
      n.output(n.op("Add", {y, n.c(random({32}, 12))}));
      auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 6, -3, 3)}, 1e-5);
      ASSERT_EQ(fused->nodes().size(), 1u);
      const ir::Node* ln = find(*fused, "LayerNormalization");
      ASSERT_NE(ln, nullptr);
      EXPECT_EQ(ln->inputs.size(), 3u);
      EXPECT_EQ(ln->inputs[0]->name, "x");
    }
  }
}

// tf.keras 2 LayerNormalization through tf2onnx (tf.nn.moments + tf.nn.batch_normalization):
// s = rsqrt(var + eps) * gamma, y = x * s + (beta - mean * s), var the mean of SquaredDifference(x, mean).
ir::Value* keras_layernorm(Net& n, ir::Value* x, ir::Value* gamma, ir::Value* beta, ir::Value* eps) {
  ir::Value* mean = n.op("ReduceMean", {x}, last_axis());
  ir::Value* d = n.op("Sub", {x, mean});
  ir::Value* var = n.op("ReduceMean", {n.op("Mul", {d, d})}, last_axis());
  ir::Value* inv = n.op("Reciprocal", {n.op("Sqrt", {n.op("Add", {var, eps})})});
  ir::Value* s = n.op("Mul", {inv, gamma});
  return n.op("Add", {n.op("Mul", {x, s}), n.op("Sub", {beta, n.op("Mul", {mean, s})})});
}

TEST(FuseLayerNorm, Tf2onnxKerasForm) {
  Net n;
  ir::Value* x = n.input("x", {3, 5, 24});
  n.output(keras_layernorm(n, x, n.c(random({24}, 13, 0.5f, 1.5f)), n.c(random({24}, 14)), n.scalar(1e-3f)));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({3, 5, 24}, 7, -3, 3)}, 1e-5);
  ASSERT_EQ(fused->nodes().size(), 1u);
  const ir::Node* ln = find(*fused, "LayerNormalization");
  ASSERT_NE(ln, nullptr);
  EXPECT_EQ(ln->inputs.size(), 3u);
  EXPECT_NEAR(ln->attrs.get_float("epsilon").value(), 1e-3f, 1e-9);
  EXPECT_EQ(fused->outputs()[0]->name, n.g->outputs()[0]->name);
}

// torch.onnx below opset 17 on a float16 model: Cast(x - mean, float32) is squared and divided, the result Cast
// back to float16 before gamma and beta. A narrowing Cast (float32 x, float16 statistics) is left alone.
ir::Value* torch_half_layernorm(Net& n, ir::Value* x, int64_t d, int64_t stat_type, int64_t back_type, DataType pt) {
  Attributes to_stat, to_back;
  to_stat.set("to", Attribute(stat_type));
  to_back.set("to", Attribute(back_type));
  ir::Value* mean = n.op("ReduceMean", {x}, last_axis());
  ir::Value* d32 = n.op("Cast", {n.op("Sub", {x, mean})}, to_stat);
  ir::Value* var = n.op("ReduceMean", {n.op("Pow", {d32, n.scalar(2.0f)})}, last_axis());
  const DataType st = stat_type == 1 ? DataType::kFLOAT : DataType::kHALF;
  ir::Value* eps = n.c(Tensor::from_vector<float>({}, {1e-5f}).cast(st));
  ir::Value* norm = n.op("Cast", {n.op("Div", {d32, n.op("Sqrt", {n.op("Add", {var, eps})})})}, to_back);
  ir::Value* y = n.op("Mul", {norm, n.c(random({d}, 15, 0.5f, 1.5f).cast(pt))});
  return n.op("Add", {y, n.c(random({d}, 16).cast(pt))});
}

TEST(FuseLayerNorm, TorchFloat16FormWithCastsAroundTheStatistics) {
  {
    Net n;
    ir::Value* x = test::graph_input(*n.g, "x", {2, 7, 32}, DataType::kHALF);
    n.output(torch_half_layernorm(n, x, 32, 1, 10, DataType::kHALF));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()),
                                  {test::random_tensor(DataType::kHALF, {2, 7, 32}, 17, -3, 3)}, 1e-2);
    ASSERT_EQ(fused->nodes().size(), 1u);
    const ir::Node* ln = find(*fused, "LayerNormalization");
    ASSERT_NE(ln, nullptr);
    EXPECT_EQ(ln->inputs[0]->name, "x");
    EXPECT_EQ(ln->outputs[0]->dtype, DataType::kHALF);
  }
  {
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(torch_half_layernorm(n, x, 32, 10, 1, DataType::kFLOAT));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 18, -3, 3)});
    EXPECT_EQ(count(*fused, "LayerNormalization"), 0);
  }
}

TEST(FuseLayerNorm, NonConstantEpsSharedIntermediateOrNonVectorParamsAreLeftAlone) {
  {  // epsilon from an input
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    ir::Value* eps = n.input("eps", {1});
    n.output(keras_layernorm(n, x, n.c(random({32}, 13)), n.c(random({32}, 14)), eps));
    Tensor e = Tensor::from_vector<float>({1}, {1e-5f});
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 8), e});
    EXPECT_EQ(count(*fused, "LayerNormalization"), 0);
  }
  {  // the Sqrt result is also an output
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(layernorm_decomposed(n, x, 32, true));
    for (auto& node : n.g->nodes())
      if (node->op_type == "Sqrt") n.output(node->outputs[0]);
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 9)});
    EXPECT_EQ(count(*fused, "LayerNormalization"), 0);
  }
  // gamma per row and column ([7, 32]) or broadcasting the result to a higher rank ([1, 1, 1, 32])
  for (std::vector<int64_t> shape : {std::vector<int64_t>{7, 32}, std::vector<int64_t>{1, 1, 1, 32}}) {
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(keras_layernorm(n, x, n.c(random(shape, 13)), n.c(random({32}, 14)), n.scalar(1e-5f)));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_layernorm()), {random({2, 7, 32}, 10)});
    EXPECT_EQ(count(*fused, "LayerNormalization"), 0) << shape.size();
  }
}

// ---------------------------------------------------------------- fuse_rmsnorm

// weight * (x / sqrt(mean(x^2) + eps)): sq_form 0 Pow(x, 2), 1 Mul(x, x); the division in div_by_sqrt's forms.
ir::Value* rmsnorm_core(Net& n, ir::Value* x, int sq_form, int div_form, ir::Value* eps, ir::Value* sq_of = nullptr,
                        int64_t axis = -1) {
  Attributes ax;
  ax.set("axes", Attribute(std::vector<int64_t>{axis}));
  ir::Value* s = sq_of ? sq_of : x;
  ir::Value* sq = sq_form == 0 ? n.op("Pow", {s, n.scalar(2.0f)}) : n.op("Mul", {s, s});
  ir::Value* v = n.op("Add", {n.op("ReduceMean", {sq}, ax), eps});
  return div_by_sqrt(n, x, v, div_form);
}

ir::Value* cast(Net& n, ir::Value* x, int64_t onnx_type) {
  Attributes a;
  a.set("to", Attribute(onnx_type));
  return n.op("Cast", {x}, a);
}
constexpr int64_t kOnnxFloat = 1, kOnnxHalf = 10;

TEST(FuseRmsNorm, EveryFormWeightOnEitherSide) {
  for (int sq_form = 0; sq_form < 2; ++sq_form) {
    for (int div_form = 0; div_form < 4; ++div_form) {
      for (int w_form = 0; w_form < 3; ++w_form) {  // weight [d] on the left, [d] right, [1, 1, d] right
        SCOPED_TRACE(std::to_string(sq_form) + "/" + std::to_string(div_form) + "/" + std::to_string(w_form));
        Net n;
        ir::Value* x = n.input("x", {2, 7, 32});
        ir::Value* core = rmsnorm_core(n, x, sq_form, div_form, n.scalar(1e-6f));
        ir::Value* w = n.c(random(w_form == 2 ? std::vector<int64_t>{1, 1, 32} : std::vector<int64_t>{32}, 21, 0.5f,
                                  1.5f));
        n.output(w_form == 0 ? n.op("Mul", {w, core}) : n.op("Mul", {core, w}));
        auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({2, 7, 32}, 22, -3, 3)}, 1e-5);
        ASSERT_EQ(fused->nodes().size(), 1u);
        const ir::Node* rms = find(*fused, "RMSNormalization");
        ASSERT_NE(rms, nullptr);
        EXPECT_EQ(rms->inputs[0]->name, "x");
        EXPECT_EQ(rms->inputs[1]->constant->rank(), 1);
        EXPECT_NEAR(rms->attrs.get_float("epsilon").value(), 1e-6f, 1e-12);
        EXPECT_EQ(rms->attrs.get_int("axis").value(), -1);
        EXPECT_EQ(fused->outputs()[0]->name, n.g->outputs()[0]->name);
      }
    }
  }
}

TEST(FuseRmsNorm, WithoutWeightScalesByOnes) {
  Net n;
  ir::Value* x = n.input("x", {4, 16});
  n.output(rmsnorm_core(n, x, 0, 1, n.scalar(1e-5f)));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({4, 16}, 23, -2, 2)}, 1e-5);
  ASSERT_EQ(fused->nodes().size(), 1u);
  EXPECT_NE(find(*fused, "RMSNormalization"), nullptr);
}

// HF LlamaRMSNorm on a float16 model: weight * Cast(x32 * rsqrt(mean(x32^2) + eps), float16), x32 = Cast(x);
// on a float32 export both Casts are no-ops, and go as well.
TEST(FuseRmsNorm, LlamaFloat32BetweenCastsFusesAcrossThem) {
  for (int div_form : {2, 1}) {  // torch's rsqrt (Div(1, Sqrt)), then Reciprocal
    for (DataType dt : {DataType::kHALF, DataType::kFLOAT}) {
      SCOPED_TRACE(std::to_string(div_form) + (dt == DataType::kHALF ? " half" : " float"));
      Net n;
      ir::Value* x = test::graph_input(*n.g, "x", {2, 5, 64}, dt);
      ir::Value* x32 = cast(n, x, kOnnxFloat);
      ir::Value* h = cast(n, rmsnorm_core(n, x32, 0, div_form, n.scalar(1e-6f)),
                          dt == DataType::kHALF ? kOnnxHalf : kOnnxFloat);
      n.output(n.op("Mul", {n.c(random({64}, 24, 0.5f, 1.5f).cast(dt)), h}));
      auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()),
                                    {test::random_tensor(dt, {2, 5, 64}, 25, -3, 3)},
                                    dt == DataType::kHALF ? 1e-2 : 1e-5);
      ASSERT_EQ(fused->nodes().size(), 1u);
      const ir::Node* rms = find(*fused, "RMSNormalization");
      ASSERT_NE(rms, nullptr);
      EXPECT_EQ(rms->inputs[0]->name, "x");
      EXPECT_EQ(rms->inputs[1]->dtype, dt);
      EXPECT_EQ(rms->outputs[0]->dtype, dt);
    }
  }
}

// T5LayerNorm exported in float32: the square reads a (no-op) Cast of x, the division x itself.
TEST(FuseRmsNorm, T5SquaresACastOfX) {
  for (int div_form : {2, 3}) {  // x * rsqrt, and Pow(., -0.5) * x (the rsqrt operand first)
    Net n;
    ir::Value* x = n.input("x", {3, 48});
    ir::Value* core = rmsnorm_core(n, x, 0, div_form, n.scalar(1e-6f), cast(n, x, kOnnxFloat));
    n.output(n.op("Mul", {n.c(random({48}, 26, 0.5f, 1.5f)), core}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({3, 48}, 27, -3, 3)}, 1e-5);
    ASSERT_EQ(fused->nodes().size(), 1u) << div_form;
    EXPECT_EQ(find(*fused, "RMSNormalization")->inputs[0]->name, "x");
  }
  // The square of some other value is not an RMSNorm of x.
  Net n;
  ir::Value* x = n.input("x", {3, 48});
  ir::Value* other = n.input("o", {3, 48});
  n.output(n.op("Mul", {n.c(random({48}, 26)), rmsnorm_core(n, x, 0, 1, n.scalar(1e-6f), cast(n, other, kOnnxFloat))}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({3, 48}, 27), random({3, 48}, 28)});
  EXPECT_EQ(count(*fused, "RMSNormalization"), 0);
}

// A float32 weight applied before the Cast back, or a normalization computed in a narrower type than x: only the
// part inside the Casts is fused (the fused node reads the Cast, its result is Cast back).
TEST(FuseRmsNorm, InsideTheCastsWhenTypesDoNotAllowMore) {
  {
    Net n;
    ir::Value* x = test::graph_input(*n.g, "x", {2, 32}, DataType::kHALF);
    ir::Value* core = rmsnorm_core(n, cast(n, x, kOnnxFloat), 1, 0, n.scalar(1e-5f));
    n.output(cast(n, n.op("Mul", {core, n.c(random({32}, 28, 0.5f, 1.5f))}), kOnnxHalf));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()),
                                  {test::random_tensor(DataType::kHALF, {2, 32}, 29, -3, 3)}, 1e-3);
    ASSERT_EQ(fused->nodes().size(), 3u);
    const ir::Node* rms = find(*fused, "RMSNormalization");
    ASSERT_NE(rms, nullptr);
    EXPECT_EQ(rms->inputs[0]->dtype, DataType::kFLOAT);
    EXPECT_EQ(rms->inputs[0]->producer->op_type, "Cast");
  }
  {
    Net n;
    ir::Value* x = n.input("x", {2, 32});
    ir::Value* x16 = cast(n, x, kOnnxHalf);  // narrowing: x itself must not be read
    n.output(cast(n, rmsnorm_core(n, x16, 0, 3, n.c(Tensor::from_vector<float>({}, {1e-3f}).cast(DataType::kHALF))),
                  kOnnxFloat));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({2, 32}, 30, -3, 3)}, 1e-3);
    const ir::Node* rms = find(*fused, "RMSNormalization");
    ASSERT_NE(rms, nullptr);
    EXPECT_EQ(rms->inputs[0]->dtype, DataType::kHALF);
    EXPECT_EQ(count(*fused, "Cast"), 2);
  }
}

TEST(FuseRmsNorm, OtherAxisNonConstantEpsSharedIntermediateAndNoKernelAreLeftAlone) {
  {  // axis 1 of [2, 7, 32]
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(n.op("Mul", {rmsnorm_core(n, x, 0, 0, n.scalar(1e-5f), nullptr, 1), n.c(random({32}, 31))}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({2, 7, 32}, 32)});
    EXPECT_EQ(count(*fused, "RMSNormalization"), 0);
  }
  {  // epsilon from an input
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    ir::Value* eps = n.input("eps", {1});
    n.output(n.op("Mul", {rmsnorm_core(n, x, 0, 1, eps), n.c(random({32}, 31))}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()),
                                  {random({2, 7, 32}, 33), Tensor::from_vector<float>({1}, {1e-5f})});
    EXPECT_EQ(count(*fused, "RMSNormalization"), 0);
  }
  {  // the mean square is also an output
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(n.op("Mul", {rmsnorm_core(n, x, 1, 3, n.scalar(1e-5f)), n.c(random({32}, 31))}));
    for (auto& node : n.g->nodes())
      if (node->op_type == "ReduceMean") n.output(node->outputs[0]);
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({2, 7, 32}, 34)});
    EXPECT_EQ(count(*fused, "RMSNormalization"), 0);
  }
  {  // no kernel for it on the target
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    n.output(n.op("Mul", {rmsnorm_core(n, x, 0, 0, n.scalar(1e-5f)), n.c(random({32}, 31))}));
    passes::PassOptions o;
    o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "RMSNormalization"; };
    Quiet quiet;
    passes::PassContext ctx(quiet, o);
    ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, ctx).ok());
    ASSERT_TRUE(passes::make_fuse_rmsnorm()->apply(*n.g, ctx).ok());
    EXPECT_EQ(count(*n.g, "RMSNormalization"), 0);
  }
}

// A weight that is not a last-axis vector stays a Mul after the fused normalization (scale ones).
TEST(FuseRmsNorm, NonVectorWeightStaysOutside) {
  for (std::vector<int64_t> shape : {std::vector<int64_t>{7, 32}, std::vector<int64_t>{1, 1, 1, 32}}) {
    Net n;
    ir::Value* x = n.input("x", {2, 7, 32});
    ir::Value* w = n.c(random(shape, 35, 0.5f, 1.5f));
    n.output(n.op("Mul", {rmsnorm_core(n, x, 0, 1, n.scalar(1e-5f)), w}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_rmsnorm()), {random({2, 7, 32}, 36)}, 1e-5);
    ASSERT_EQ(fused->nodes().size(), 2u) << shape.size();
    const ir::Node* rms = find(*fused, "RMSNormalization");
    ASSERT_NE(rms, nullptr);
    for (ir::Value* v : rms->inputs) EXPECT_NE(v->name, w->name);
    const ir::Node* mul = find(*fused, "Mul");
    ASSERT_NE(mul, nullptr);
    EXPECT_TRUE(mul->inputs[0]->name == w->name || mul->inputs[1]->name == w->name);
  }
}

// ---------------------------------------------------------------- fuse_matmul_epilogue

TEST(FuseMatMulEpilogue, BiasGeluResidualBecomeOneNode) {
  Net n;
  ir::Value* x = n.input("x", {2, 5, 16});
  ir::Value* res = n.input("res", {2, 5, 24});
  ir::Value* h = n.op("Add", {n.op("MatMul", {x, n.weight({16, 24})}), n.weight({24})});
  n.output(n.op("Add", {res, gelu_erf_decomposed(n, h, 0)}));
  auto fused =
      fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue()), {random({2, 5, 16}, 1), random({2, 5, 24}, 2)});
  ASSERT_EQ(fused->nodes().size(), 1u) << ir::print(*fused);
  const ir::Node* f = fused->nodes()[0].get();
  EXPECT_EQ(f->op_type, "FusedMatMul");
  EXPECT_EQ(f->domain, "kiln");
  EXPECT_EQ(f->attrs.get_string("activation").value(), "gelu_erf");
  ASSERT_EQ(f->inputs.size(), 4u);
  EXPECT_EQ(f->inputs[3]->name, "res");
}

TEST(FuseMatMulEpilogue, ReluTanhGeluAndBareMatMul) {
  Net n;
  ir::Value* x = n.input("x", {3, 8});
  ir::Value* a = n.op("Relu", {n.op("Add", {n.weight({1, 12}), n.op("MatMul", {x, n.weight({8, 12})})})});
  ir::Value* b = gelu_tanh_decomposed(n, n.op("Add", {n.op("MatMul", {a, n.weight({12, 6})}), n.weight({6})}));
  n.output(n.op("Relu", {n.op("MatMul", {b, n.weight({6, 4})})}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue()), {random({3, 8}, 9)});
  ASSERT_EQ(fused->nodes().size(), 3u) << ir::print(*fused);
  std::vector<std::string> acts;
  for (auto& node : fused->nodes()) {
    EXPECT_EQ(node->op_type, "FusedMatMul");
    acts.push_back(node->attrs.get_string("activation").value());
  }
  EXPECT_EQ(acts, (std::vector<std::string>{"relu", "gelu_tanh", "relu"}));
  EXPECT_EQ(fused->nodes()[2]->inputs.size(), 2u) << "no bias on the last one";
}

TEST(FuseMatMulEpilogue, GemmWithActivationAndTransB) {
  Net n;
  ir::Value* x = n.input("x", {4, 10});
  Attributes a;
  a.set("transB", Attribute(int64_t{1}));
  a.set("alpha", Attribute(0.5f));
  n.output(n.op("Relu", {n.op("Gemm", {x, n.weight({6, 10}), n.weight({6})}, a)}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue()), {random({4, 10}, 10)});
  ASSERT_EQ(fused->nodes().size(), 1u);
  EXPECT_EQ(fused->nodes()[0]->attrs.get_int("trans_b").value(), 1);
  EXPECT_FLOAT_EQ(fused->nodes()[0]->attrs.get_float("alpha").value(), 0.5f);
}

// GPT-2's Conv1D: Reshape([B,S,E] -> [B*S,E]), Gemm with bias, Reshape back to [B,S,N], then the tanh GELU. The
// Gelu moves above the Reshape and joins the Gemm's epilogue; where the GEMM's result or the Reshape is read twice,
// everything stays as it is.
TEST(FuseMatMulEpilogue, ActivationAfterAReshapeOfTheGemm) {
  const int64_t B = 2, S = 5, E = 8, N = 12;
  for (int variant = 0; variant < 3; ++variant) {  // 0: fusable, 1: Gemm result also read, 2: Reshape also read
    SCOPED_TRACE(variant);
    Net n;
    ir::Value* x = n.input("x", {B, S, E});
    ir::Value* rows = n.op("Reshape", {x, n.c(Tensor::from_vector<int64_t>({2}, {-1, E}))});
    ir::Value* h = n.op("Gemm", {rows, n.weight({E, N}), n.weight({N})});
    ir::Value* back = n.op("Reshape", {h, n.c(Tensor::from_vector<int64_t>({3}, {B, S, N}))});
    n.output(n.op("Neg", {gelu_tanh_decomposed(n, back)}));  // the next layer reads the activation
    if (variant == 1) n.output(n.op("Relu", {h}));
    if (variant == 2) n.output(n.op("Neg", {back}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue()), {random({B, S, E}, 90)}, 1e-4);
    if (variant == 0) {
      const ir::Node* f = find(*fused, "FusedMatMul");
      ASSERT_NE(f, nullptr) << ir::print(*fused);
      EXPECT_EQ(f->attrs.get_string("activation").value(), "gelu_tanh");
      EXPECT_EQ(count(*fused, "Gelu") + count(*fused, "Gemm"), 0) << ir::print(*fused);
      ASSERT_EQ(f->outputs[0]->users.size(), 1u);
      EXPECT_EQ(f->outputs[0]->users[0]->op_type, "Reshape");
    } else {
      const ir::Node* gelu = find(*fused, "Gelu");
      ASSERT_NE(gelu, nullptr) << ir::print(*fused);
      EXPECT_EQ(gelu->inputs[0]->producer->op_type, "Reshape") << ir::print(*fused);
    }
  }
}

// GPT-2's Conv1D projection with its residual: Reshape([-1,E]) -> Gemm(+bias) -> Reshape([B,S,E]) -> Add(., x). The
// Add moves above the Reshape (x viewed as [B*S, E] rows) and the Gemm becomes one FusedMatMul with bias and
// residual; also after a fused activation (act, then residual). A residual that broadcasts, or a Reshape read
// elsewhere, stays as it was.
TEST(FuseMatMulEpilogue, ResidualAfterAReshapeOfTheGemm) {
  const int64_t B = 2, S = 5, E = 8;
  for (int variant = 0; variant < 4; ++variant) {  // 0: plain, 1: GELU first, 2: broadcast residual, 3: Reshape read
    SCOPED_TRACE(variant);
    Net n;
    ir::Value* x = n.input("x", {B, S, E});
    ir::Value* rows = n.op("Reshape", {x, n.c(Tensor::from_vector<int64_t>({2}, {-1, E}))});
    ir::Value* h = n.op("Gemm", {rows, n.weight({E, E}), n.weight({E})});
    ir::Value* back = n.op("Reshape", {h, n.c(Tensor::from_vector<int64_t>({3}, {B, S, E}))});
    if (variant == 1) back = n.op("Gelu", {back});
    ir::Value* res = variant == 2 ? n.weight({E}) : x;
    n.output(n.op("Add", {back, res}));
    if (variant == 3) n.output(n.op("Neg", {back}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue()), {random({B, S, E}, 91)}, 1e-4);
    if (variant <= 1) {
      const ir::Node* f = find(*fused, "FusedMatMul");
      ASSERT_NE(f, nullptr) << ir::print(*fused);
      EXPECT_EQ(f->inputs.size(), 4u) << "bias and residual in the epilogue\n" << ir::print(*fused);
      EXPECT_EQ(f->attrs.get_string("activation", "none").value(), variant == 1 ? "gelu_erf" : "none");
      EXPECT_EQ(count(*fused, "Add") + count(*fused, "Gemm") + count(*fused, "Gelu"), 0) << ir::print(*fused);
    } else {
      EXPECT_EQ(count(*fused, "Add"), 1) << ir::print(*fused);
    }
  }
}

TEST(FuseMatMulEpilogue, SharedOrBroadcastOperandsAreNotFused) {
  Net n;
  ir::Value* x = n.input("x", {3, 8});
  ir::Value* mm = n.op("MatMul", {x, n.weight({8, 5})});
  n.output(n.op("Add", {mm, n.weight({5})}));
  n.output(mm);  // the product is needed on its own
  ir::Value* mm2 = n.op("MatMul", {x, n.weight({8, 5})});
  n.output(n.op("Add", {mm2, n.weight({3, 5})}));  // not a per-column bias
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue()), {random({3, 8}, 12)});
  EXPECT_EQ(count(*fused, "FusedMatMul"), 0);
  EXPECT_EQ(count(*fused, "MatMul"), 2);
}

// ---------------------------------------------------------------- fuse_attention

// q, k, v as [B,S,H*D] projections reshaped to heads, as exporters write them.
struct AttnInputs {
  ir::Value *q, *k, *v;
};

ir::Value* heads(Net& n, ir::Value* x, int64_t h, int64_t d, std::vector<int64_t> perm) {
  ir::Value* shape = n.c(Tensor::from_vector<int64_t>({4}, {0, 0, h, d}));
  Attributes t;
  t.set("perm", Attribute(perm));
  return n.op("Transpose", {n.op("Reshape", {x, shape})}, t);
}

TEST(FuseAttention, BertFormDivAndPaddingMask) {
  const int64_t B = 2, S = 9, H = 3, D = 8;
  Net n;
  ir::Value* x = n.input("x", {B, S, H * D});
  ir::Value* mask = n.input("mask", {B, 1, 1, S});
  ir::Value* q = heads(n, x, H, D, {0, 2, 1, 3});
  ir::Value* kt = heads(n, n.op("MatMul", {x, n.weight({H * D, H * D})}), H, D, {0, 2, 3, 1});
  ir::Value* v = heads(n, n.op("MatMul", {x, n.weight({H * D, H * D})}), H, D, {0, 2, 1, 3});
  ir::Value* s = n.op("Add", {n.op("Div", {n.op("MatMul", {q, kt}), n.scalar(std::sqrt(8.0f))}), mask});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n.output(n.op("MatMul", {n.op("Softmax", {s}, sm), v}));
  Tensor m = random({B, 1, 1, S}, 21);
  for (int64_t i = 0; i < m.numel(); ++i) m.data<float>()[i] = (i % S) >= S - 2 ? -10000.0f : 0.0f;
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()), {random({B, S, H * D}, 20), m});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Softmax"), 0);
  EXPECT_EQ(a->inputs.size(), 4u);
  EXPECT_NEAR(a->attrs.get_float("scale").value(), 1.0 / std::sqrt(8.0), 1e-6);
  // K^T came from Transpose(0,2,3,1) of [B,S,H,D]; K is that tensor under perm (0,2,1,3).
  EXPECT_EQ(a->inputs[1]->producer->op_type, "Transpose");
  EXPECT_EQ(a->inputs[1]->producer->attrs.get_ints("perm").value(), (std::vector<int64_t>{0, 2, 1, 3}));
}

// torch nn.MultiheadAttention as PyTorch 1.x exports it: [S,B,E] projections, each Reshape([S,B*H,D]) and
// Transposed to 3-D [B*H,S,D] operands (K^T by perm [1,2,0]), Q divided by sqrt(D), an [S,S] additive mask, the
// output Transposed back to [S,B*H,D] and Reshaped to [S*B,E]: one FusedAttention reading the projections in place.
ir::Value* seq_first_heads(Net& n, ir::Value* x, int64_t s, int64_t bh, int64_t d, std::vector<int64_t> perm) {
  Attributes t;
  t.set("perm", Attribute(perm));
  return n.op("Transpose", {n.op("Reshape", {x, n.c(Tensor::from_vector<int64_t>({3}, {s, bh, d}))})}, t);
}

ir::Value* seq_first_attention(Net& n, int64_t S, int64_t B, int64_t H, int64_t D, ir::Value* mask) {
  const int64_t E = H * D;
  ir::Value* x = n.input("x", {S, B, E});
  ir::Value* q = seq_first_heads(n, n.op("MatMul", {x, n.weight({E, E})}), S, B * H, D, {1, 0, 2});
  ir::Value* kt = seq_first_heads(n, n.op("MatMul", {x, n.weight({E, E})}), S, B * H, D, {1, 2, 0});
  ir::Value* v = seq_first_heads(n, n.op("MatMul", {x, n.weight({E, E})}), S, B * H, D, {1, 0, 2});
  ir::Value* scores = n.op("MatMul", {n.op("Div", {q, n.scalar(std::sqrt(static_cast<float>(D)))}), kt});
  if (mask) scores = n.op("Add", {scores, mask});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  return n.op("MatMul", {n.op("Softmax", {scores}, sm), v});
}

TEST(FuseAttention, SequenceFirstMultiheadForm) {
  const int64_t S = 7, B = 2, H = 3, D = 8;
  Net n;
  ir::Value* mask = n.input("mask", {S, S});
  ir::Value* o = seq_first_attention(n, S, B, H, D, mask);
  Attributes back;
  back.set("perm", Attribute(std::vector<int64_t>{1, 0, 2}));
  n.output(n.op("Reshape", {n.op("Transpose", {o}, back), n.c(Tensor::from_vector<int64_t>({2}, {S * B, H * D}))}));
  Tensor m(DataType::kFLOAT, {S, S});
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) m.data<float>()[i * S + j] = (i + j) % 4 == 3 ? -10000.0f : 0.0f;
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()), {m, random({S, B, H * D}, 40)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Softmax"), 0);
  EXPECT_EQ(count(*fused, "Transpose"), 0) << "q, k, v and the output are read and written in place\n"
                                           << ir::print(*fused);
  EXPECT_EQ(a->attrs.get_string("qkv_layout").value(), "sbhd");
  EXPECT_EQ(a->attrs.get_string("out_layout").value(), "sbhd");
  EXPECT_NEAR(a->attrs.get_float("scale").value(), 1.0 / std::sqrt(8.0), 1e-6);
  // Layer information: the block's own nodes (head splits, scale, scores, mask, softmax, output Transpose),
  // not the projections before it.
  const Attribute* from = a->attrs.find(ops::kFusedFromAttr);
  ASSERT_NE(from, nullptr);
  std::map<std::string, int> ops_fused;
  for (const std::string& name : from->strings())
    for (const auto& node : n.g->nodes())
      if (node->name == name) ++ops_fused[node->op_type];
  EXPECT_EQ(ops_fused, (std::map<std::string, int>{
                           {"Add", 1}, {"Div", 1}, {"MatMul", 2}, {"Reshape", 3}, {"Softmax", 1}, {"Transpose", 4}}))
      << "fused from: " << from->to_string();
  ASSERT_EQ(a->inputs.size(), 4u);
  EXPECT_EQ(a->inputs[3]->name, "mask");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a->inputs[i]->producer->op_type, "Reshape") << i;
    EXPECT_EQ(ops::shape_to_string(a->inputs[i]->shape), "[7,2,3,8]") << i;
  }
}

// Cross-attention in the same form (torch 1.x nn.TransformerDecoder): queries from a [T,B,E] target, keys and
// values from a [S,B,E] memory, T != S. Fused with sbhd operands of their own lengths; outputs unchanged.
TEST(FuseAttention, SequenceFirstCrossAttention) {
  const int64_t T = 4, S = 9, B = 2, H = 2, D = 8, E = H * D;
  Net n;
  ir::Value* tgt = n.input("tgt", {T, B, E});
  ir::Value* mem = n.input("mem", {S, B, E});
  ir::Value* q = seq_first_heads(n, n.op("MatMul", {tgt, n.weight({E, E})}), T, B * H, D, {1, 0, 2});
  ir::Value* kt = seq_first_heads(n, n.op("MatMul", {mem, n.weight({E, E})}), S, B * H, D, {1, 2, 0});
  ir::Value* v = seq_first_heads(n, n.op("MatMul", {mem, n.weight({E, E})}), S, B * H, D, {1, 0, 2});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* o = n.op("MatMul", {n.op("Softmax", {n.op("MatMul", {n.op("Div", {q, n.scalar(2.0f)}), kt})}, sm), v});
  Attributes back;
  back.set("perm", Attribute(std::vector<int64_t>{1, 0, 2}));
  n.output(n.op("Transpose", {o}, back));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()),
                                {random({T, B, E}, 80), random({S, B, E}, 81)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(ops::shape_to_string(a->inputs[0]->shape), "[4,2,2,8]");
  EXPECT_EQ(ops::shape_to_string(a->inputs[1]->shape), "[9,2,2,8]");
  EXPECT_EQ(ops::shape_to_string(a->outputs[0]->shape), "[4,2,2,8]");
  EXPECT_NEAR(a->attrs.get_float("scale").value(), 0.5, 1e-6);
}

// Without the Transpose that takes the output back to [S,B*H,D] (the form's last step) nothing is fused: the 3-D
// [B*H,S,D] result has no sequence-first layout to be written in.
TEST(FuseAttention, SequenceFirstFormWithoutOutputTransposeIsLeftAlone) {
  Net n;
  n.output(seq_first_attention(n, 5, 2, 2, 4, nullptr));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()), {random({5, 2, 8}, 41)});
  EXPECT_EQ(count(*fused, "FusedAttention"), 0) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Softmax"), 1);
}

TEST(FuseAttention, SdpaExportFormSplitScaleNoMask) {
  const int64_t B = 2, S = 13, H = 2, D = 16;
  Net n;
  ir::Value* q = n.input("q", {B, H, S, D});
  ir::Value* k = n.input("k", {B, H, S, D});
  ir::Value* v = n.input("v", {B, H, S, D});
  Attributes t;
  t.set("perm", Attribute(std::vector<int64_t>{0, 1, 3, 2}));
  const float s = std::sqrt(1.0f / std::sqrt(16.0f));
  ir::Value* qk =
      n.op("MatMul", {n.op("Mul", {q, n.scalar(s)}), n.op("Mul", {n.op("Transpose", {k}, t), n.scalar(s)})});
  n.output(n.op("MatMul", {n.op("Softmax", {qk}), v}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()),
                                {random({B, H, S, D}, 30), random({B, H, S, D}, 31), random({B, H, S, D}, 32)});
  ASSERT_EQ(fused->nodes().size(), 1u) << ir::print(*fused);
  const ir::Node* a = fused->nodes()[0].get();
  EXPECT_EQ(a->inputs[1]->name, "k") << "the transpose of K is undone, not repeated";
  EXPECT_NEAR(a->attrs.get_float("scale").value(), 0.25, 1e-6);
}

TEST(FuseAttention, CausalWhereBecomesTheFlag) {
  const int64_t B = 1, S = 6, H = 2, D = 4;
  for (bool keep_form : {false, true}) {
    Net n;
    ir::Value* q = n.input("q", {B, H, S, D});
    ir::Value* kt = n.input("kt", {B, H, D, S});
    ir::Value* v = n.input("v", {B, H, S, D});
    Tensor cond(DataType::kBOOL, {S, S});
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) cond.data<bool>()[i * S + j] = keep_form ? j <= i : j > i;
    ir::Value* sc = n.op("Div", {n.op("MatMul", {q, kt}), n.scalar(2.0f)});
    ir::Value* fill = n.scalar(-3.4028234663852886e38f);
    ir::Value* c = n.c(cond);
    ir::Value* w = keep_form ? n.op("Where", {c, sc, fill}) : n.op("Where", {c, fill, sc});
    n.output(n.op("MatMul", {n.op("Softmax", {w}), v}));
    auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()),
                                  {random({B, H, S, D}, 40), random({B, H, D, S}, 41), random({B, H, S, D}, 42)});
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->attrs.get_int("causal", 0).value(), 1);
    EXPECT_EQ(a->inputs.size(), 3u) << "no mask tensor";
    EXPECT_EQ(count(*fused, "Where"), 0);
  }
}

TEST(FuseAttention, NonCausalWhereBecomesAnAdditiveMask) {
  const int64_t B = 2, S = 5, H = 1, D = 4;
  Net n;
  ir::Value* q = n.input("q", {B, H, S, D});
  ir::Value* kt = n.input("kt", {B, H, D, S});
  ir::Value* v = n.input("v", {B, H, S, D});
  Tensor cond(DataType::kBOOL, {B, 1, 1, S});
  for (int64_t i = 0; i < cond.numel(); ++i) cond.data<bool>()[i] = i % 3 != 1;
  ir::Value* w = n.op("Where", {n.c(cond), n.op("MatMul", {q, kt}), n.scalar(-1e9f)});
  n.output(n.op("MatMul", {n.op("Softmax", {w}), v}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()),
                                {random({B, H, S, D}, 50), random({B, H, D, S}, 51), random({B, H, S, D}, 52)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->inputs.size(), 4u);
  EXPECT_EQ(a->inputs[3]->producer->op_type, "Where");
  EXPECT_EQ(a->attrs.get_int("causal", 0).value(), 0);
}

// HF's eager attention exported in float32: gpt2 casts the scaled scores to their own type before its causal Where
// and the probabilities to V's; T5 and Llama run the softmax on a float32 Cast and cast the result back (two Casts).
// All of them are no-ops here, and one FusedAttention (causal flag plus the padding mask) replaces the lot; a Cast
// that changes the type is a real rounding and keeps the block unfused.
TEST(FuseAttention, NoOpCastChainsAroundScoresAndSoftmax) {
  const int64_t B = 2, S = 6, H = 2, D = 4;
  for (bool narrowing : {false, true}) {
    SCOPED_TRACE(narrowing ? "a narrowing Cast" : "no-op Casts");
    Net n;
    ir::Value* q = n.input("q", {B, H, S, D});
    ir::Value* kt = n.input("kt", {B, H, D, S});
    ir::Value* v = n.input("v", {B, H, S, D});
    ir::Value* mask = n.input("mask", {B, 1, 1, S});
    auto cast = [&](ir::Value* x, int64_t to) {
      Attributes a;
      a.set("to", Attribute(to));
      return n.op("Cast", {x}, a);
    };
    Tensor cond(DataType::kBOOL, {1, 1, S, S});
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) cond.data<bool>()[i * S + j] = j <= i;
    ir::Value* sc = cast(n.op("Div", {n.op("MatMul", {q, kt}), n.scalar(2.0f)}), 1);
    ir::Value* masked = n.op("Add", {n.op("Where", {n.c(cond), sc, n.scalar(-3.4028234663852886e38f)}), mask});
    ir::Value* pre = narrowing ? cast(cast(masked, 10), 1) : cast(masked, 1);
    Attributes sm;
    sm.set("axis", Attribute(int64_t{-1}));
    n.output(n.op("MatMul", {cast(cast(n.op("Softmax", {pre}, sm), 1), 1), v}));
    Tensor m(DataType::kFLOAT, {B, 1, 1, S});
    for (int64_t i = 0; i < m.numel(); ++i) m.data<float>()[i] = i % S == S - 1 && i > S ? -3.4e38f : 0.0f;
    auto fused = fuse_and_compare(
        n, list_of(passes::make_remove_identity(), passes::make_fuse_attention()),
        {random({B, H, S, D}, 60), random({B, H, D, S}, 61), random({B, H, S, D}, 62), m});
    if (narrowing) {
      EXPECT_EQ(count(*fused, "FusedAttention"), 0) << ir::print(*fused);
      continue;
    }
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(a->attrs.get_int("causal", 0).value(), 1);
    ASSERT_EQ(a->inputs.size(), 4u);
    EXPECT_EQ(a->inputs[3]->name, "mask");
    EXPECT_EQ(count(*fused, "Cast") + count(*fused, "Softmax") + count(*fused, "Where"), 0) << ir::print(*fused);
  }
}

// DistilBERT's masked_fill: Where(Cast(Expand(cond, Shape(scores)), bool), fill, scores). The Expand (and the Shape
// that reads the scores, which would keep the scores MatMul from being used once) goes, and the [B,1,1,S]
// condition becomes the additive mask. An Expand to some other tensor's shape is left as it is.
TEST(FuseAttention, DistilBertConditionExpandedToTheScores) {
  const int64_t B = 2, S = 5, H = 2, D = 4;
  for (bool other_shape : {false, true}) {
    SCOPED_TRACE(other_shape ? "expanded to another tensor's shape" : "expanded to the scores' shape");
    Net n;
    ir::Value* q = n.input("q", {B, H, S, D});
    ir::Value* kt = n.input("kt", {B, H, D, S});
    ir::Value* v = n.input("v", {B, H, S, D});
    ir::Value* cond = n.input("cond", {B, 1, 1, S});
    ir::Value* sc = n.op("MatMul", {n.op("Div", {q, n.scalar(2.0f)}), kt});
    ir::Value* shape = n.op("Shape", {other_shape ? n.op("Add", {sc, n.scalar(0.0f)}) : sc});
    Attributes to_bool;
    to_bool.set("to", Attribute(int64_t{9}));
    ir::Value* c = n.op("Cast", {n.op("Expand", {cond, shape})}, to_bool);
    n.output(n.op("MatMul", {n.op("Softmax", {n.op("Where", {c, n.scalar(-3.4028234663852886e38f), sc})}), v}));
    Tensor cv(DataType::kBOOL, {B, 1, 1, S});
    for (int64_t i = 0; i < cv.numel(); ++i) cv.data<bool>()[i] = i == S - 1 || i >= 2 * S - 2;
    cond->dtype = DataType::kBOOL;
    auto fused = fuse_and_compare(n, list_of(passes::make_remove_identity(), passes::make_fuse_attention()),
                                  {random({B, H, S, D}, 70), random({B, H, D, S}, 71), random({B, H, S, D}, 72), cv});
    if (other_shape) {
      EXPECT_EQ(count(*fused, "Expand"), 1) << ir::print(*fused);
      continue;
    }
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(count(*fused, "Expand") + count(*fused, "Shape") + count(*fused, "Softmax"), 0) << ir::print(*fused);
    ASSERT_EQ(a->inputs.size(), 4u);
    EXPECT_EQ(ops::shape_to_string(a->inputs[3]->shape), "[2,1,1,5]");
  }
}

// torch's SDPA export with a boolean mask, as HF models on torch 2 write it: the split scale, the mask as
// Add(scores, Where(mask, 0, -inf)), the NaN guard Where(IsNaN(p), 0, p) after the softmax, and a Reshape of the
// output to the shape it already has before the head-merging Transpose. One FusedAttention that the Transpose
// reads directly, no guard left. A guard with a non-zero fill, or whose Where reads other probabilities, is not taken.
TEST(FuseAttention, SdpaExportNanGuardAndSameShapeReshape) {
  const int64_t B = 2, S = 6, H = 2, D = 4;
  for (int variant = 0; variant < 2; ++variant) {  // 1: the guard fills 1, which FusedAttention cannot do
    SCOPED_TRACE(variant);
    Net n;
    ir::Value* x = n.input("x", {B, S, H * D});
    ir::Value* keep = n.input("keep", {B, 1, S, S});
    keep->dtype = DataType::kBOOL;
    ir::Value* q = heads(n, x, H, D, {0, 2, 1, 3});
    ir::Value* kt = heads(n, n.op("MatMul", {x, n.weight({H * D, H * D})}), H, D, {0, 2, 3, 1});
    ir::Value* v = heads(n, n.op("MatMul", {x, n.weight({H * D, H * D})}), H, D, {0, 2, 1, 3});
    const float s = std::sqrt(1.0f / std::sqrt(static_cast<float>(D)));
    ir::Value* qk = n.op("MatMul", {n.op("Mul", {q, n.scalar(s)}), n.op("Mul", {kt, n.scalar(s)})});
    ir::Value* bias = n.op("Where", {keep, n.scalar(0.0f), n.scalar(-std::numeric_limits<float>::infinity())});
    ir::Value* p = n.op("Softmax", {n.op("Add", {qk, bias})});
    ir::Value* guarded = n.op("Where", {n.op("IsNaN", {p}), n.scalar(variant ? 1.0f : 0.0f), p});
    ir::Value* o = n.op("MatMul", {guarded, v});
    ir::Value* same = n.op("Reshape", {o, n.c(Tensor::from_vector<int64_t>({4}, {B, H, S, D}))});
    Attributes t;
    t.set("perm", Attribute(std::vector<int64_t>{0, 2, 1, 3}));
    n.output(n.op("Reshape", {n.op("Transpose", {same}, t), n.c(Tensor::from_vector<int64_t>({3}, {B, S, H * D}))}));
    Tensor kv(DataType::kBOOL, {B, 1, S, S});
    for (int64_t i = 0; i < kv.numel(); ++i) kv.data<bool>()[i] = (i % S) < S - 2 * (i / (S * S));
    // Query 0 of batch 1 sees no key (a left-padded causal batch has such rows): the guard makes its output zeros,
    // and so must the fused node (masked_rows_zero), or NaN would reach the comparison.
    for (int64_t j = 0; j < S; ++j) kv.data<bool>()[S * S + j] = false;
    auto fused = fuse_and_compare(n, list_of(passes::make_remove_identity(), passes::make_fuse_attention()),
                                  {random({B, S, H * D}, 80), kv});
    if (variant == 1) {
      EXPECT_EQ(count(*fused, "FusedAttention"), 0) << ir::print(*fused);
      continue;
    }
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_NEAR(a->attrs.get_float("scale").value(), 0.5, 1e-6);
    EXPECT_EQ(a->attrs.get_int("masked_rows_zero", 0).value(), 1);
    for (const char* gone : {"IsNaN", "Softmax"}) EXPECT_EQ(count(*fused, gone), 0) << gone;
    EXPECT_EQ(count(*fused, "Where"), 1) << "only the mask's";
    // The output Transpose reads the attention directly (fold_mha_output_transposes' form); the mask is the bias.
    ASSERT_EQ(a->outputs[0]->users.size(), 1u);
    EXPECT_EQ(a->outputs[0]->users[0]->op_type, "Transpose") << ir::print(*fused);
    ASSERT_EQ(a->inputs.size(), 4u);
    EXPECT_EQ(a->inputs[3]->producer->op_type, "Where");
  }
}

// HF Llama's attention in float32 on x [B,S,H*D] (B 2, S 6, H 2, D 32): q, k, v split into heads and Transposed to
// [B,H,S,D], rotary embeddings on q and k (x * cos + cat(-x2, x1) * sin), K^T by Transpose(0,1,3,2), the output
// Transposed back and viewed as [B,S,H*D], a graph output. Returns the rotated q.
constexpr int64_t kRotB = 2, kRotS = 6, kRotH = 2, kRotD = 32, kRotE = kRotH * kRotD;
ir::Value* llama_rotary_attention(Net& n, ir::Value* x, ir::Value* cos, ir::Value* sin) {
  const int64_t H = kRotH, D = kRotD, E = kRotE;
  auto i64 = [&](std::vector<int64_t> v) {
    return n.c(Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
  };
  auto rotary = [&](ir::Value* t) {
    ir::Value* x1 = n.op("Slice", {t, i64({0}), i64({D / 2}), i64({3})});
    ir::Value* x2 = n.op("Slice", {t, i64({D / 2}), i64({D}), i64({-1})});
    Attributes cat;
    cat.set("axis", Attribute(int64_t{-1}));
    ir::Value* rot = n.op("Concat", {n.op("Neg", {x2}), x1}, cat);
    return n.op("Add", {n.op("Mul", {t, cos}), n.op("Mul", {rot, sin})});
  };
  ir::Value* q = rotary(heads(n, n.op("MatMul", {x, n.weight({E, E})}), H, D, {0, 2, 1, 3}));
  ir::Value* k = rotary(heads(n, n.op("MatMul", {x, n.weight({E, E})}), H, D, {0, 2, 1, 3}));
  ir::Value* v = heads(n, n.op("MatMul", {x, n.weight({E, E})}), H, D, {0, 2, 1, 3});
  Attributes t;
  t.set("perm", Attribute(std::vector<int64_t>{0, 1, 3, 2}));
  ir::Value* sc = n.op("Div", {n.op("MatMul", {q, n.op("Transpose", {k}, t)}), n.scalar(std::sqrt(32.0f))});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* o = n.op("MatMul", {n.op("Softmax", {sc}, sm), v});
  Attributes back;
  back.set("perm", Attribute(std::vector<int64_t>{0, 2, 1, 3}));
  n.output(n.op("Reshape", {n.op("Transpose", {o}, back), i64({0, 0, E})}));
  return q;
}

// sink_head_transposes with the CUDA attention passes after it (FP16) on a copy of n's graph: one FusedAttention
// reading q, k and v in place, no Transpose left, the results of the original graph.
void expect_attention_in_place(Net& n, const std::vector<Tensor>& in) {
  static Quiet quiet;
  passes::PassContext ctx(quiet, {});
  ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, ctx).ok());
  passes::PassOptions o16;
  o16.backend = Backend::kCUDA;
  o16.reduced_precision = DataType::kHALF;
  auto full = n.g->clone();
  ASSERT_TRUE(run_passes(*full,
                         list_of(passes::make_sink_head_transposes(), passes::make_fuse_attention(),
                                 passes::make_fold_mha_input_transposes(), passes::make_fold_mha_output_transposes(),
                                 passes::make_fold_attention_layouts()),
                         o16)
                  .ok());
  EXPECT_EQ(count(*full, "FusedAttention"), 1) << ir::print(*full);
  EXPECT_EQ(count(*full, "Transpose"), 0) << ir::print(*full);
  expect_close(run(*n.g, in), run(*full, in), 1e-4);
}

// cos/sin [S,D] constants: sink_head_transposes moves the q and k Transposes below the rotary region, so that the
// attention's operands are Transposes of [B,S,H,D] tensors; with fuse_attention and fold_attention_layouts (CUDA,
// FP16) no Transpose is left. Variant 1 reads the rotated q twice (a second output): the Transpose stays where it is.
TEST(SinkHeadTransposes, LlamaRotaryThenAttention) {
  for (int variant = 0; variant < 2; ++variant) {
    SCOPED_TRACE(variant);
    Net n;
    ir::Value* x = n.input("x", {kRotB, kRotS, kRotE});
    ir::Value* cos = n.c(random({kRotS, kRotD}, 91, -1, 1));
    ir::Value* sin = n.c(random({kRotS, kRotD}, 92, -1, 1));
    ir::Value* q = llama_rotary_attention(n, x, cos, sin);
    if (variant == 1) n.output(q);
    const std::vector<Tensor> in = {random({kRotB, kRotS, kRotE}, 93)};
    // The sink alone: same results, and (variant 0) the attention's q and k are Transposes of the rotary's result.
    auto sunk = fuse_and_compare(n, list_of(passes::make_sink_head_transposes()), in);
    const ir::Node* qk = nullptr;
    for (const auto& node : sunk->nodes())
      if (node->op_type == "MatMul" && node->inputs[1]->producer && node->inputs[1]->producer->op_type == "Transpose" &&
          passes::match::perm_is(node->inputs[1]->producer, {0, 1, 3, 2}))
        qk = node.get();
    ASSERT_NE(qk, nullptr) << ir::print(*sunk);
    const ir::Node* qt = qk->inputs[0]->producer;
    ASSERT_NE(qt, nullptr);
    if (variant == 1) {
      EXPECT_EQ(qt->op_type, "Add") << "q's rotary is also an output: nothing moved\n" << ir::print(*sunk);
      continue;
    }
    ASSERT_EQ(qt->op_type, "Transpose") << ir::print(*sunk);
    EXPECT_EQ(qt->inputs[0]->producer->op_type, "Add");
    EXPECT_EQ(ops::shape_to_string(qt->inputs[0]->shape), "[2,6,2,32]");
    expect_attention_in_place(n, in);
  }
}

// A dynamic-length export computes cos/sin at run time (a Gather by position ids, unsqueezed at the head axis): the
// Transposes still sink, the run-time cos [B,1,S,D] and sin [S,D] read through views as [B,S,1,D] / [1,S,1,D], and
// the attention reads q, k and v in place with no Transpose left.
TEST(SinkHeadTransposes, RunTimeCosSinBroadcastOverHeads) {
  Net n;
  ir::Value* x = n.input("x", {kRotB, kRotS, kRotE});
  ir::Value* cos = n.input("cos", {kRotB, 1, kRotS, kRotD});
  ir::Value* sin = n.input("sin", {kRotS, kRotD});
  llama_rotary_attention(n, x, cos, sin);
  expect_attention_in_place(n, {random({kRotB, kRotS, kRotE}, 93), random({kRotB, 1, kRotS, kRotD}, 94, -1, 1),
                                random({kRotS, kRotD}, 95, -1, 1)});
}

TEST(FuseAttention, OtherSoftmaxAxisIsLeftAlone) {
  Net n;
  ir::Value* q = n.input("q", {1, 2, 4, 4});
  ir::Value* kt = n.input("kt", {1, 2, 4, 4});
  ir::Value* v = n.input("v", {1, 2, 4, 4});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{2}));
  n.output(n.op("MatMul", {n.op("Softmax", {n.op("MatMul", {q, kt})}, sm), v}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()),
                                {random({1, 2, 4, 4}, 1), random({1, 2, 4, 4}, 2), random({1, 2, 4, 4}, 3)});
  EXPECT_EQ(count(*fused, "FusedAttention"), 0);
}

// ---------------------------------------------------------------- fuse_qkv

TEST(FuseQkv, ProjectionsSharingTheirInputBecomeOneGemm) {
  Net n;
  ir::Value* x = n.input("x", {2, 5, 16});
  for (int i = 0; i < 3; ++i) {
    ir::Value* p = n.op("Add", {n.op("MatMul", {x, n.weight({16, 16})}), n.weight({16})});
    n.output(n.op("Neg", {n.op("Relu", {p})}));  // a consumer that is not itself fused
  }
  ir::Value* other = n.op("MatMul", {x, n.weight({16, 8})});  // no bias: a group of its own, alone
  n.output(n.op("Neg", {other}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_matmul_epilogue(), passes::make_fuse_qkv()),
                                {random({2, 5, 16}, 60)});
  // The Relus were absorbed by the epilogue fusion, so the three GEMMs agree on bias and activation and merge.
  EXPECT_EQ(count(*fused, "Split"), 1) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "FusedMatMul"), 1);
  const ir::Node* sp = find(*fused, "Split");
  EXPECT_EQ(sp->outputs.size(), 3u);
  EXPECT_EQ(sp->inputs[0]->producer->inputs[1]->shape, (ops::Shape{16, 48}));
}

// ---------------------------------------------------------------- kiln ops directly

TEST(FusedOps, FusedMatMulBatchedBAndRejectsBadBias) {
  Net n;
  ir::Value* a = n.input("a", {2, 3, 4});
  ir::Value* b = n.input("b", {2, 4, 5});
  ir::Value* bias = n.weight({5});
  Attributes at;
  at.set("alpha", Attribute(2.0f));
  ir::Node* f = n.g->add_node("FusedMatMul", "f", {a, b, bias}, {"y"}, at, 1, "kiln");
  n.output(f->outputs[0]);
  Tensor ta = random({2, 3, 4}, 70), tb = random({2, 4, 5}, 71);
  auto got = run(*n.g, {ta, tb});
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].shape(), (std::vector<int64_t>{2, 3, 5}));
  for (int64_t bi = 0; bi < 2; ++bi)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 5; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < 4; ++k)
          acc += ta.data<float>()[(bi * 3 + i) * 4 + k] * tb.data<float>()[(bi * 4 + k) * 5 + j];
        EXPECT_NEAR(got[0].data<float>()[(bi * 3 + i) * 5 + j], 2 * acc + bias->constant->data<float>()[j], 1e-5);
      }
  Net m;
  ir::Value* a2 = m.input("a", {3, 4});
  m.g->add_node("FusedMatMul", "f", {a2, m.weight({4, 5}), m.weight({6})}, {"y"}, {}, 1, "kiln");
  static Quiet quiet;
  passes::PassContext ctx(quiet, {});
  EXPECT_FALSE(passes::make_shape_inference()->apply(*m.g, ctx).ok()) << "a bias of the wrong length";
}

// ---------------------------------------------------------------- pipeline and precision

TEST(TransformerFusions, CudaPipelineOrder) {
  std::vector<std::string> names;
  for (auto& p : passes::pipeline_for(Backend::kCUDA)) names.emplace_back(p->name());
  auto at = [&](const std::string& s) { return std::find(names.begin(), names.end(), s) - names.begin(); };
  EXPECT_LT(at("constant_folding"), at("fuse_layernorm"));
  EXPECT_LT(at("fuse_layernorm"), at("fuse_rmsnorm"));
  EXPECT_LT(at("fuse_rmsnorm"), at("precision_lowering"));
  EXPECT_LT(at("fuse_gelu"), at("fuse_attention"));
  EXPECT_LT(at("lift_bmm_heads"), at("sink_head_transposes"));
  EXPECT_LT(at("sink_head_transposes"), at("fuse_attention"));
  EXPECT_LT(at("fuse_attention"), at("fuse_matmul_epilogue"));
  EXPECT_LT(at("lower_onnx_attention"), at("fold_attention_layouts"));
  EXPECT_LT(at("lower_einsum"), at("fuse_attention"));
  EXPECT_LT(at("fuse_matmul_epilogue"), at("fuse_qkv"));
  EXPECT_LT(at("fuse_qkv"), at("fold_mha_input_transposes"));
  EXPECT_LT(at("fold_mha_input_transposes"), at("fold_mha_output_transposes"));
  EXPECT_LT(at("fold_mha_output_transposes"), at("precision_lowering"));
  for (auto& p : passes::pipeline_for(Backend::kCPU))
    EXPECT_EQ(std::string(p->name()).rfind("fuse_", 0), std::string::npos);
}

TEST(TransformerFusions, PrecisionLoweringTakesFusedOpsToHalf) {
  Net n;
  ir::Value* x = n.input("x", {2, 4, 8});
  ir::Value* h = n.op("Add", {n.op("MatMul", {x, n.weight({8, 8})}), n.weight({8})});
  n.output(n.op("Relu", {h}));
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.reduced_precision = DataType::kHALF;
  o.has_kernel = [](const std::string& op, const std::string& domain, DataType) {
    return op == "FusedMatMul" && domain == "kiln";
  };
  auto g = n.g->clone();
  Status st = run_passes(*g, list_of(passes::make_fuse_matmul_epilogue(), passes::make_precision_lowering()), o);
  ASSERT_TRUE(st.ok()) << st.message();
  const ir::Node* f = find(*g, "FusedMatMul");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->outputs[0]->dtype, DataType::kHALF);
  for (auto* v : f->inputs) EXPECT_EQ(v->dtype, DataType::kHALF) << v->name;
  expect_close(run(*n.g, {random({2, 4, 8}, 80)}), run(*g, {random({2, 4, 8}, 80)}), 1e-2);
}

}  // namespace

namespace {

// torch.onnx's SDPA export computes its scale from the query's shape: 1 / sqrt(float(Shape(q)[-1])), then
// multiplies Q and K^T by its square root. With a symbolic batch only the last dim is static; the CPU pipeline's
// folding must turn that chain into constants for the attention fusion to see scalars.
TEST(FuseAttention, SdpaScaleFromShapeFoldsWithSymbolicBatch) {
  Net n;
  ir::Value* q = n.input("q", {2, 4, 10, 16});
  ir::Value* k = n.input("k", {2, 4, 10, 16});
  ir::Value* v = n.input("v", {2, 4, 10, 16});
  for (ir::Value* x : {q, k, v}) x->shape[0] = ops::Dim::symbol("B");
  ir::Value* shape = n.op("Shape", {q});
  ir::Value* last = n.op("Slice", {shape, n.c(Tensor::from_vector<int64_t>({1}, {-1})),
                                   n.c(Tensor::from_vector<int64_t>({1}, {INT64_MAX}))});
  Attributes to_float;
  to_float.set("to", Attribute(int64_t{1}));
  ir::Value* d = n.op("Cast", {last}, to_float);
  ir::Value* scale =
      n.op("Cast", {n.op("Div", {n.c(Tensor::from_vector<float>({1}, {1.0f})), n.op("Sqrt", {d})})}, to_float);
  ir::Value* root = n.op("Sqrt", {scale});
  Attributes t;
  t.set("perm", Attribute(std::vector<int64_t>{0, 1, 3, 2}));
  ir::Value* qk = n.op("MatMul", {n.op("Mul", {q, root}), n.op("Mul", {n.op("Transpose", {k}, t), root})});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n.output(n.op("MatMul", {n.op("Softmax", {qk}, sm), v}));
  static Quiet quiet;
  passes::PassContext ctx(quiet, {});
  ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, ctx).ok());
  auto fused = n.g->clone();
  passes::PassList l = passes::cpu_pipeline();
  l.push_back(passes::make_fuse_attention());
  l.push_back(passes::make_dead_code_elimination());
  passes::PassManager pm(std::move(l));
  Status st = pm.run(*fused, ctx);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(count(*fused, "FusedAttention"), 1) << ir::print(*fused);
  EXPECT_NEAR(find(*fused, "FusedAttention")->attrs.get_float("scale").value(), 0.25, 1e-6);
  std::vector<Tensor> in = {random({2, 4, 10, 16}, 90), random({2, 4, 10, 16}, 91), random({2, 4, 10, 16}, 92)};
  expect_close(run(*n.g, in), run(*fused, in), 1e-4);
}

}  // namespace

namespace {

// HF gpt2 (eager): Div by sqrt(D), Where(causal, scores, min) keeping where true, + padding mask, Softmax, Cast to
// V's (same) type, MatMul.
TEST(FuseAttention, Gpt2EagerWhereThenPaddingMaskThenNoopCast) {
  const int64_t B = 2, S = 7, H = 2, D = 4;
  Net n;
  ir::Value* q = n.input("q", {B, H, S, D});
  ir::Value* kt = n.input("kt", {B, H, D, S});
  ir::Value* v = n.input("v", {B, H, S, D});
  ir::Value* pad = n.input("pad", {B, 1, 1, S});
  Tensor cond(DataType::kBOOL, {1, 1, S, S});
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) cond.data<bool>()[i * S + j] = j <= i;
  ir::Value* sc = n.op("Div", {n.op("MatMul", {q, kt}), n.scalar(2.0f)});
  ir::Value* w = n.op("Add", {n.op("Where", {n.c(cond), sc, n.scalar(-3.4028234663852886e38f)}), pad});
  Attributes to;
  to.set("to", Attribute(int64_t{1}));
  n.output(n.op("MatMul", {n.op("Cast", {n.op("Softmax", {w})}, to), v}));
  Tensor padv(DataType::kFLOAT, {B, 1, 1, S});
  for (int64_t i = 0; i < padv.numel(); ++i) padv.data<float>()[i] = i == S - 1 ? -10000.0f : 0.0f;
  auto fused = fuse_and_compare(n, list_of(passes::make_remove_identity(), passes::make_fuse_attention()),
                                {random({B, H, S, D}, 1), random({B, H, D, S}, 2), random({B, H, S, D}, 3), padv});
  ASSERT_EQ(count(*fused, "FusedAttention"), 1) << ir::print(*fused);
  EXPECT_EQ(fused->nodes().size(), 2u) << "the attention and K's transpose back";
  const ir::Node* a = find(*fused, "FusedAttention");
  EXPECT_EQ(a->attrs.get_int("causal", 0).value(), 1);
  ASSERT_EQ(a->inputs.size(), 4u);
  EXPECT_EQ(a->inputs[3]->name, "pad");
}

// torch's SDPA export with is_causal: a constant additive triangle of 0 and -inf, once folded.
TEST(FuseAttention, ConstantAdditiveCausalMaskBecomesTheFlag) {
  const int64_t S = 6;
  Net n;
  ir::Value* q = n.input("q", {1, 2, S, 8});
  ir::Value* kt = n.input("kt", {1, 2, 8, S});
  ir::Value* v = n.input("v", {1, 2, S, 8});
  Tensor m(DataType::kFLOAT, {S, S});
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) m.data<float>()[i * S + j] = j > i ? -INFINITY : 0.0f;
  n.output(n.op("MatMul", {n.op("Softmax", {n.op("Add", {n.op("MatMul", {q, kt}), n.c(m)})}), v}));
  auto fused = fuse_and_compare(n, list_of(passes::make_fuse_attention()),
                                {random({1, 2, S, 8}, 4), random({1, 2, 8, S}, 5), random({1, 2, S, 8}, 6)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(a->attrs.get_int("causal", 0).value(), 1);
  EXPECT_EQ(a->inputs.size(), 3u);
}

}  // namespace

namespace {

// A post-LN encoder block written as an opset-13 export of an HF-style BERT layer: separate Q/K/V projections,
// K transposed by one Transpose(0,2,3,1), Div by sqrt(D), padding mask, decomposed LayerNorms, erf GELU.
void encoder_block(Net& n, int64_t E, int64_t H, int64_t F) {
  const int64_t D = E / H;
  ir::Value* x = n.input("x", {2, 16, E});
  ir::Value* mask = n.input("mask", {2, 1, 1, 16});
  ir::Value* qkv[3];
  for (int i = 0; i < 3; ++i) {
    ir::Value* p = n.op("Add", {n.op("MatMul", {x, n.weight({E, E})}), n.weight({E})});
    ir::Value* r = n.op("Reshape", {p, n.c(Tensor::from_vector<int64_t>({4}, {0, 0, H, D}))});
    Attributes t;
    t.set("perm", Attribute(i == 1 ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 2, 1, 3}));
    qkv[i] = n.op("Transpose", {r}, t);
  }
  ir::Value* s =
      n.op("Add", {n.op("Div", {n.op("MatMul", {qkv[0], qkv[1]}), n.scalar(std::sqrt(static_cast<float>(D)))}), mask});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* a = n.op("MatMul", {n.op("Softmax", {s}, sm), qkv[2]});
  Attributes t;
  t.set("perm", Attribute(std::vector<int64_t>{0, 2, 1, 3}));
  ir::Value* o = n.op("Reshape", {n.op("Transpose", {a}, t), n.c(Tensor::from_vector<int64_t>({3}, {0, 0, E}))});
  ir::Value* h = layernorm_decomposed(
      n, n.op("Add", {x, n.op("Add", {n.op("MatMul", {o, n.weight({E, E})}), n.weight({E})})}), E, true);
  ir::Value* f = gelu_erf_decomposed(n, n.op("Add", {n.op("MatMul", {h, n.weight({E, F})}), n.weight({F})}), 0);
  ir::Value* y = n.op("Add", {h, n.op("Add", {n.op("MatMul", {f, n.weight({F, E})}), n.weight({E})})});
  n.output(layernorm_decomposed(n, y, E, true));
}

TEST(TransformerFusions, CudaPipelineOnAnEncoderBlock) {
  for (DataType reduced : {DataType::kFLOAT, DataType::kHALF}) {
    Net n;
    encoder_block(n, 128, 4, 256);
    static Quiet quiet;
    passes::PassContext sctx(quiet, {});
    ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, sctx).ok());
    auto g = n.g->clone();
    passes::PassOptions o;
    o.backend = Backend::kCUDA;
    o.verify_each = true;
    o.reduced_precision = reduced;
    o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
    passes::PassContext ctx(quiet, o);
    passes::PassManager pm(passes::pipeline_for(Backend::kCUDA));
    Status st = pm.run(*g, ctx);
    ASSERT_TRUE(st.ok()) << st.message();
    // Attention fuses on CUDA only where its tensor-core kernel runs: FP16/BF16 (head dim 32 here).
    const bool attn = reduced == DataType::kHALF;
    EXPECT_EQ(count(*g, "FusedAttention"), attn ? 1 : 0) << ir::print(*g);
    EXPECT_EQ(count(*g, "MatMul"), attn ? 0 : 2);
    EXPECT_EQ(count(*g, "Softmax"), attn ? 0 : 1);
    EXPECT_EQ(count(*g, "LayerNormalization"), 2);
    for (const char* gone : {"Erf", "ReduceMean"}) EXPECT_EQ(count(*g, gone), 0) << gone;
    // Q, K and V merged into one GEMM + Split; the output projection and both FFN GEMMs with their epilogues.
    // Fused attention reads the packed projection in place and writes [B,S,H,D]: no Split, no Transpose left.
    EXPECT_EQ(count(*g, "FusedMatMul"), 4);
    EXPECT_EQ(count(*g, "Split"), attn ? 0 : 1);
    if (attn) {
      EXPECT_EQ(count(*g, "Transpose"), 0) << ir::print(*g);
      const ir::Node* a = find(*g, "FusedAttention");
      EXPECT_EQ(a->attrs.get_string("qkv_layout", "").value(), "bs3hd");
      EXPECT_EQ(a->attrs.get_string("out_layout", "").value(), "bshd");
    }
    int with_res = 0, gelu = 0;
    for (auto& node : g->nodes()) {
      if (node->op_type != "FusedMatMul") continue;
      with_res += node->inputs.size() == 4;
      gelu += node->attrs.get_string("activation", "none").value() == "gelu_erf";
    }
    EXPECT_EQ(with_res, 2);
    EXPECT_EQ(gelu, 1);
    Tensor m(DataType::kFLOAT, {2, 1, 1, 16});
    for (int64_t i = 0; i < m.numel(); ++i) m.data<float>()[i] = i >= 28 ? -10000.0f : 0.0f;
    std::vector<Tensor> in = {random({2, 16, 128}, 100, -2, 2), m};
    expect_close(run(*n.g, in), run(*g, in), reduced == DataType::kFLOAT ? 1e-4 : 3e-2);
  }
}

// A Llama-style block through the whole CUDA pipeline: RMSNorm, a projection with a residual, RMSNorm again; in
// float32 (lowered to float16 or not) and as a float16 model whose RMSNorms compute in float32 between Casts.
TEST(TransformerFusions, CudaPipelineFusesRmsNorms) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    const bool half_model = variant == 2;
    const DataType dt = half_model ? DataType::kHALF : DataType::kFLOAT;
    Net n;
    ir::Value* x = test::graph_input(*n.g, "x", {2, 16, 64}, dt);
    auto rms = [&](ir::Value* h, uint32_t seed) {
      ir::Value* w = n.c(random({64}, seed, 0.5f, 1.5f).cast(dt));
      if (!half_model) return n.op("Mul", {w, rmsnorm_core(n, h, 0, 2, n.scalar(1e-6f))});
      ir::Value* h32 = cast(n, h, kOnnxFloat);
      return n.op("Mul", {w, cast(n, rmsnorm_core(n, h32, 0, 2, n.scalar(1e-6f)), kOnnxHalf)});
    };
    ir::Value* h = rms(x, 101);
    h = n.op("Add", {x, n.op("MatMul", {h, n.c(random({64, 64}, 102, -0.2f, 0.2f).cast(dt))})});
    n.output(rms(h, 103));
    static Quiet quiet;
    passes::PassContext sctx(quiet, {});
    ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, sctx).ok());
    auto g = n.g->clone();
    passes::PassOptions o;
    o.backend = Backend::kCUDA;
    o.verify_each = true;
    o.reduced_precision = variant == 1 ? DataType::kHALF : DataType::kFLOAT;
    o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
    passes::PassContext ctx(quiet, o);
    passes::PassManager pm(passes::pipeline_for(Backend::kCUDA));
    Status st = pm.run(*g, ctx);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(count(*g, "RMSNormalization"), 2) << ir::print(*g);
    for (const char* gone : {"ReduceMean", "Sqrt", "Pow"}) EXPECT_EQ(count(*g, gone), 0) << gone;
    if (half_model) {
      EXPECT_EQ(count(*g, "Cast"), 0) << ir::print(*g);
    }
    for (auto& node : g->nodes()) {
      if (node->op_type == "RMSNormalization") {
        EXPECT_EQ(node->outputs[0]->dtype, variant == 0 ? DataType::kFLOAT : DataType::kHALF);
      }
    }
    std::vector<Tensor> in = {test::random_tensor(dt, {2, 16, 64}, 104, -2, 2)};
    expect_close(run(*n.g, in), run(*g, in), variant == 0 ? 1e-4 : 3e-2);
  }
}

}  // namespace

namespace {

// Engine files carry kiln-domain nodes (with an omitted optional input) and the CPU executor runs them: the fused
// encoder block, written as an engine, computes what the unfused one does.
std::vector<float> run_engine(const ir::Graph& g, const std::vector<std::pair<std::string, Tensor>>& inputs) {
  auto engine = test::load_engine(builder::write_engine(g, BuilderConfig()));
  if (!engine) return {};
  std::vector<float> v;  // every output, one after the other
  for (const Tensor& t : test::infer(*engine, inputs)) v.insert(v.end(), t.data<float>(), t.data<float>() + t.numel());
  return v;
}

TEST(TransformerFusions, FusedEngineRunsOnTheCpuExecutor) {
  Net n;
  encoder_block(n, 128, 4, 256);
  ir::Value* extra = n.input("r", {2, 16, 128});
  // A FusedMatMul with its bias left out and a residual: the omitted input must survive the engine file.
  ir::Node* f = n.g->add_node("FusedMatMul", "no_bias", {n.g->outputs()[0], n.weight({128, 128}), nullptr, extra},
                              {"y2"}, {}, 1, "kiln");
  n.output(f->outputs[0]);
  static Quiet quiet;
  passes::PassContext sctx(quiet, {});
  ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, sctx).ok());
  auto g = n.g->clone();
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.reduced_precision = DataType::kHALF;  // where the attention fusion applies on CUDA
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  passes::PassContext ctx(quiet, o);
  passes::PassManager pm(passes::pipeline_for(Backend::kCUDA));
  ASSERT_TRUE(pm.run(*g, ctx).ok());
  ASSERT_EQ(count(*g, "FusedAttention"), 1);
  Tensor m(DataType::kFLOAT, {2, 1, 1, 16});
  for (int64_t i = 0; i < m.numel(); ++i) m.data<float>()[i] = i % 16 >= 13 ? -10000.0f : 0.0f;
  std::vector<std::pair<std::string, Tensor>> in = {
      {"x", random({2, 16, 128}, 7, -2, 2)}, {"mask", m}, {"r", random({2, 16, 128}, 8)}};
  std::vector<float> want = run_engine(*n.g, in), got = run_engine(*g, in);
  ASSERT_EQ(want.size(), got.size());
  ASSERT_EQ(want.size(), 2u * 2 * 16 * 128) << "both outputs";
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(want[i] - got[i])));
  EXPECT_LE(worst, 5e-2) << "float16 engine against the float32 one";
}

// RMSNormalization (an opset-23 node in an opset-17 graph) survives the engine file and runs on the CPU executor.
TEST(TransformerFusions, FusedRmsNormEngineRunsOnTheCpuExecutor) {
  Net n;
  ir::Value* x = n.input("x", {3, 9, 64});
  n.output(n.op("Mul", {rmsnorm_core(n, x, 1, 2, n.scalar(1e-6f)), n.c(random({64}, 110, 0.5f, 1.5f))}));
  static Quiet quiet;
  passes::PassContext sctx(quiet, {});
  ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, sctx).ok());
  auto g = n.g->clone();
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  passes::PassContext ctx(quiet, o);
  passes::PassManager pm(passes::pipeline_for(Backend::kCUDA));
  ASSERT_TRUE(pm.run(*g, ctx).ok());
  ASSERT_EQ(g->nodes().size(), 1u);
  ASSERT_EQ(count(*g, "RMSNormalization"), 1);
  std::vector<std::pair<std::string, Tensor>> in = {{"x", random({3, 9, 64}, 111, -3, 3)}};
  std::vector<float> want = run_engine(*n.g, in), got = run_engine(*g, in);
  ASSERT_EQ(want.size(), 3u * 9 * 64);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(want[i], got[i], 1e-5) << i;
}

}  // namespace

namespace {

TEST(FuseAttention, CudaOnlyWhereTensorCoresRun) {
  // Head dims that are multiples of 8 up to 128 run on the tensor-core kernel (in a zero-padded tile where they
  // are not 32, 64, 96 or 128); 12 (not a multiple of 8) and 256 (past its largest tile) do not.
  for (int64_t d : {12, 16, 40, 64, 80, 256}) {
    for (DataType reduced : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) {
      Net n;
      ir::Value* q = n.input("q", {1, 2, 8, d});
      ir::Value* kt = n.input("kt", {1, 2, d, 8});
      ir::Value* v = n.input("v", {1, 2, 8, d});
      n.output(n.op("MatMul", {n.op("Softmax", {n.op("MatMul", {q, kt})}), v}));
      static Quiet quiet;
      passes::PassContext sctx(quiet, {});
      ASSERT_TRUE(passes::make_shape_inference()->apply(*n.g, sctx).ok());
      passes::PassOptions o;
      o.backend = Backend::kCUDA;
      o.reduced_precision = reduced;
      ASSERT_TRUE(run_passes(*n.g, list_of(passes::make_fuse_attention()), o).ok());
      const bool tensor_cores = d % 8 == 0 && d <= 128 && reduced != DataType::kFLOAT;
      EXPECT_EQ(count(*n.g, "FusedAttention"), tensor_cores ? 1 : 0)
          << "head dim " << d << " " << dtype_name(reduced);
    }
  }
}

}  // namespace

// torch's batch_first MultiheadAttention as torch.onnx exports it: x [B,S,E] -> Transpose -> packed in_proj ->
// Reshape [S,B,3,E] -> Unsqueeze(0) -> Transpose(3,1,2,0,4) -> Squeeze(3) -> Gather(0|1|2) -> Reshape [S,B*H,D] ->
// Transpose(1,0,2) -> Reshape [B,H,S,D] -> attention.
// torch's batch_first MultiheadAttention as exported: x [B,S,E] in, attention + out_proj + residual out.
constexpr int64_t kMhaB = 2, kMhaS = 5, kMhaE = 12;
void torch_mha(Net& n) {
  const int64_t B = kMhaB, S = kMhaS, H = 3, D = 4, E = H * D;
  ir::Value* x = n.input("x", {B, S, E});
  Attributes p102;
  p102.set("perm", std::vector<int64_t>{1, 0, 2});
  ir::Value* xt = n.op("Transpose", {x}, p102);
  ir::Value* proj = n.op("Add", {n.op("MatMul", {xt, n.weight({E, 3 * E})}), n.weight({3 * E})});
  ir::Value* r1 = n.op("Reshape", {proj, n.c(Tensor::from_vector<int64_t>({4}, {S, B, 3, E}))});
  ir::Value* un = n.op("Unsqueeze", {r1, n.c(Tensor::from_vector<int64_t>({1}, {0}))});
  Attributes p5;
  p5.set("perm", std::vector<int64_t>{3, 1, 2, 0, 4});
  ir::Value* sq = n.op("Squeeze", {n.op("Transpose", {un}, p5), n.c(Tensor::from_vector<int64_t>({1}, {3}))});
  auto head = [&](int64_t i) {
    ir::Value* g = n.op("Gather", {sq, n.c(Tensor::from_vector<int64_t>({}, {i}))});
    ir::Value* r2 = n.op("Reshape", {g, n.c(Tensor::from_vector<int64_t>({3}, {S, B * H, D}))});
    return n.op("Reshape", {n.op("Transpose", {r2}, p102), n.c(Tensor::from_vector<int64_t>({4}, {B, H, S, D}))});
  };
  // v first in the graph, so the Gather order is not the input order.
  ir::Value* v = head(2);
  ir::Value* q = head(0);
  ir::Value* k = head(1);
  Attributes kt_perm;
  kt_perm.set("perm", std::vector<int64_t>{0, 1, 3, 2});
  ir::Value* s = n.op("Mul", {n.op("MatMul", {q, n.op("Transpose", {k}, kt_perm)}), n.scalar(0.5f)});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* att = n.op("MatMul", {n.op("Softmax", {s}, sm), v});
  // The output side: [B,H,S,D] -> [S,B,H,D] -> [S*B,E] -> out_proj Gemm (transB) -> [S,B,E] -> [B,S,E] + x.
  Attributes p2013;
  p2013.set("perm", std::vector<int64_t>{2, 0, 1, 3});
  ir::Value* flat = n.op("Reshape", {n.op("Transpose", {att}, p2013),
                                     n.c(Tensor::from_vector<int64_t>({2}, {S * B, E}))});
  Attributes tb;
  tb.set("transB", int64_t{1});
  ir::Value* out = n.op("Gemm", {flat, n.weight({E, E}), n.weight({E})}, tb);
  ir::Value* back = n.op("Transpose", {n.op("Reshape", {out, n.c(Tensor::from_vector<int64_t>({3}, {S, B, E}))})},
                         p102);
  n.output(n.op("Add", {back, x}));
}

TEST(FoldMhaInputTransposes, TorchPackedProjectionReadsThroughOneTranspose) {
  Net n;
  torch_mha(n);
  auto fused = fuse_and_compare(n,
                                list_of(passes::make_fuse_attention(), passes::make_fuse_matmul_epilogue(),
                                        passes::make_fold_mha_input_transposes(),
                                        passes::make_fold_mha_output_transposes()),
                                {random({kMhaB, kMhaS, kMhaE}, 31)});
  ASSERT_NE(find(*fused, "FusedAttention"), nullptr) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Gather"), 0) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Transpose"), 2) << "one to [3,B,H,S,D], one to [B,S,H,D]\n" << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Split"), 1);
  EXPECT_EQ(count(*fused, "Gemm"), 0) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Add"), 0) << "the residual is in out_proj's epilogue\n" << ir::print(*fused);
  EXPECT_EQ(count(*fused, "FusedMatMul"), 2);
}

// nanoGPT-style attention: qkv [B,S,3E] -> Split(axis 2) -> Reshape [B,S,H,D] -> Transpose (K^T for k).
constexpr int64_t kGptB = 2, kGptS = 6, kGptE = 8;
void nanogpt_attention(Net& n) {
  const int64_t B = kGptB, S = kGptS, H = 2, D = 4, E = H * D;
  ir::Value* x = n.input("x", {B, S, E});
  ir::Value* qkv = n.op("Add", {n.op("MatMul", {x, n.weight({E, 3 * E})}), n.weight({3 * E})});
  Attributes ax;
  ax.set("axis", int64_t{2});
  ir::Node* sp = n.g->add_node("Split", "split", {qkv, n.c(Tensor::from_vector<int64_t>({3}, {E, E, E}))},
                               {"q0", "k0", "v0"}, ax, 13);
  auto heads = [&](ir::Value* part, std::vector<int64_t> perm) {
    Attributes t;
    t.set("perm", perm);
    return n.op("Transpose", {n.op("Reshape", {part, n.c(Tensor::from_vector<int64_t>({4}, {B, S, H, D}))})}, t);
  };
  ir::Value* q = heads(sp->outputs[0], {0, 2, 1, 3});
  ir::Value* kt = heads(sp->outputs[1], {0, 2, 3, 1});
  ir::Value* v = heads(sp->outputs[2], {0, 2, 1, 3});
  ir::Value* s = n.op("Mul", {n.op("MatMul", {q, kt}), n.scalar(0.5f)});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  n.output(n.op("MatMul", {n.op("Softmax", {s}, sm), v}));
}

TEST(FoldMhaInputTransposes, SplitOfPackedProjection) {
  Net n;
  nanogpt_attention(n);
  auto fused = fuse_and_compare(n,
                                list_of(passes::make_fuse_attention(), passes::make_fuse_matmul_epilogue(),
                                        passes::make_fold_mha_input_transposes()),
                                {random({kGptB, kGptS, kGptE}, 41)});
  ASSERT_NE(find(*fused, "FusedAttention"), nullptr) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Transpose"), 1) << ir::print(*fused);
  EXPECT_EQ(count(*fused, "Split"), 1) << "the [3,B,H,S,D] split replaces the [B,S,3E] one\n" << ir::print(*fused);
}

// ---- fold_attention_layouts: attention reads the packed projection in place and writes [B,S,H,D] ----

std::string layout(const ir::Node* n, const char* attr) { return n->attrs.get_string(attr, "bhsd").value(); }

TEST(FoldAttentionLayouts, TorchMhaReadsPackedProjectionAndWritesBshd) {
  Net n;
  torch_mha(n);
  auto fused = fuse_and_compare(n,
                                list_of(passes::make_fuse_attention(), passes::make_fuse_matmul_epilogue(),
                                        passes::make_fold_mha_input_transposes(),
                                        passes::make_fold_mha_output_transposes(),
                                        passes::make_fold_attention_layouts(), passes::make_dead_code_elimination()),
                                {random({kMhaB, kMhaS, kMhaE}, 32)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(layout(a, "qkv_layout"), "bs3hd");
  EXPECT_EQ(layout(a, "out_layout"), "bshd");
  EXPECT_EQ(a->inputs[1], nullptr);
  for (const char* gone : {"Transpose", "Split", "Squeeze"}) EXPECT_EQ(count(*fused, gone), 0) << gone << ir::print(*fused);
  EXPECT_EQ(count(*fused, "FusedMatMul"), 2);
}

// The attention's output is the graph's output here: it keeps [B,H,S,D], only the inputs change.
TEST(FoldAttentionLayouts, SplitOfPackedProjectionKeepsAGraphOutputsLayout) {
  Net n;
  nanogpt_attention(n);
  auto fused = fuse_and_compare(n,
                                list_of(passes::make_fuse_attention(), passes::make_fuse_matmul_epilogue(),
                                        passes::make_fold_mha_input_transposes(), passes::make_fold_attention_layouts(),
                                        passes::make_dead_code_elimination()),
                                {random({kGptB, kGptS, kGptE}, 42)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(layout(a, "qkv_layout"), "bs3hd");
  EXPECT_EQ(layout(a, "out_layout"), "bhsd");
  EXPECT_EQ(count(*fused, "Transpose"), 0) << ir::print(*fused);
}

// The layout decides where K and V come from; inputs that contradict it are refused, never read out of bounds.
TEST(FoldAttentionLayouts, GeometryRefusesInputsThatContradictTheLayout) {
  Attributes packed;
  packed.set("qkv_layout", std::string("bs3hd"));
  const Dims qkv = {2, 5, 3, 4, 8}, kv = {2, 4, 5, 8};
  auto g = ops::attention_geometry(packed, qkv, nullptr, nullptr);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g->out_shape, (Dims{2, 4, 5, 8}));
  EXPECT_EQ(g->k.offset, 32);
  auto both = ops::attention_geometry(packed, qkv, &kv, &kv);
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("must be empty"), std::string::npos) << both.status().message();
  auto missing = ops::attention_geometry(Attributes{}, kv, nullptr, nullptr);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("K and V are required"), std::string::npos);
  Attributes bad;
  bad.set("out_layout", std::string("hsbd"));
  auto wrong = ops::attention_geometry(bad, kv, &kv, &kv);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("out_layout must be bhsd, bshd or sbhd, got 'hsbd'"), std::string::npos)
      << wrong.status().message();
  Attributes seq_first;
  seq_first.set("qkv_layout", std::string("sb3hd"));
  auto five = ops::attention_geometry(seq_first, kv, nullptr, nullptr);
  ASSERT_FALSE(five.ok());
  EXPECT_NE(five.status().message().find("must be [S,B,3,H,D]"), std::string::npos) << five.status().message();
}

// Sequence-first layouts (torch nn.MultiheadAttention's [S,B,E] projections): where element (b, h, s, d) lies,
// counted by hand from the row-major [S,B,H,D] and [S,B,3,H,D] tensors.
TEST(FoldAttentionLayouts, SequenceFirstStrides) {
  const int64_t S = 5, B = 2, H = 3, D = 4;
  Attributes a;
  a.set("qkv_layout", std::string("sbhd"));
  a.set("out_layout", std::string("sbhd"));
  const Dims q = {S, B, H, D}, k = {S + 1, B, H, D}, v = {S + 1, B, H, 8};
  auto g = ops::attention_geometry(a, q, &k, &v);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ(g->B, B);
  EXPECT_EQ(g->H, H);
  EXPECT_EQ(g->Sq, S);
  EXPECT_EQ(g->Sk, S + 1);
  EXPECT_EQ(g->Dv, 8);
  // [S,B,H,D]: s moves B*H*D elements, b H*D, h D.
  EXPECT_EQ((std::vector<int64_t>{g->q.st[0], g->q.st[1], g->q.st[2]}), (std::vector<int64_t>{H * D, D, B * H * D}));
  EXPECT_EQ((std::vector<int64_t>{g->v.st[0], g->v.st[1], g->v.st[2]}), (std::vector<int64_t>{H * 8, 8, B * H * 8}));
  EXPECT_EQ(g->out_shape, (Dims{S, B, H, 8}));
  EXPECT_EQ((std::vector<int64_t>{g->o.st[0], g->o.st[1], g->o.st[2]}), (std::vector<int64_t>{H * 8, 8, B * H * 8}));
  const Dims bad_k = {S, B + 1, H, D};
  EXPECT_FALSE(ops::attention_geometry(a, q, &bad_k, &v).ok()) << "K's batch must be Q's";

  Attributes p;
  p.set("qkv_layout", std::string("sb3hd"));
  auto pg = ops::attention_geometry(p, Dims{S, B, 3, H, D}, nullptr, nullptr);
  ASSERT_TRUE(pg.ok()) << pg.status().message();
  EXPECT_TRUE(pg->packed);
  EXPECT_EQ(pg->B, B);
  EXPECT_EQ(pg->Sq, S);
  EXPECT_EQ(pg->H, H);
  // [S,B,3,H,D]: s moves B*3*H*D, b 3*H*D, h D; K and V start H*D and 2*H*D in.
  for (const ops::AttentionView* w : {&pg->q, &pg->k, &pg->v})
    EXPECT_EQ((std::vector<int64_t>{w->st[0], w->st[1], w->st[2]}),
              (std::vector<int64_t>{3 * H * D, D, B * 3 * H * D}));
  EXPECT_EQ(pg->q.offset, 0);
  EXPECT_EQ(pg->k.offset, H * D);
  EXPECT_EQ(pg->v.offset, 2 * H * D);
  EXPECT_EQ(pg->out_shape, (Dims{B, H, S, D}));
}

// Separate q, k and v as [B,S,H,D] (K transposed to [B,H,D,S] by the exporter), the output back to [B,S,E].
// torch 1.x nn.MultiheadAttention with its packed in_proj: one [S,B,3E] projection whose thirds are Sliced off along
// the last axis (opset 10+ Slice with constant starts/ends/axes) before the sequence-first head split. After
// fuse_attention (sbhd views of the three Slices) fold_attention_layouts reads the projection itself as [S,B,3,H,D]
// (sb3hd): no Slice copies left. A projection cut in another order, or wider than q, k and v, keeps its Slices.
ir::Value* seq_first_packed(Net& n, int64_t S, int64_t B, int64_t H, int64_t D, std::vector<int> order,
                            int64_t parts = 3) {
  const int64_t E = H * D;
  ir::Value* x = n.input("x", {S, B, E});
  ir::Value* a = n.op("MatMul", {x, n.weight({E, parts * E})});
  auto third = [&](int k) {
    const int64_t lo = k * E, hi = (k + 1) * E;
    return n.op("Slice", {a, n.c(Tensor::from_vector<int64_t>({1}, {lo})), n.c(Tensor::from_vector<int64_t>({1}, {hi})),
                          n.c(Tensor::from_vector<int64_t>({1}, {-1}))});
  };
  ir::Value* q = seq_first_heads(n, third(order[0]), S, B * H, D, {1, 0, 2});
  ir::Value* kt = seq_first_heads(n, third(order[1]), S, B * H, D, {1, 2, 0});
  ir::Value* v = seq_first_heads(n, third(order[2]), S, B * H, D, {1, 0, 2});
  ir::Value* scores = n.op("MatMul", {n.op("Mul", {q, n.scalar(0.25f)}), kt});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  Attributes back;
  back.set("perm", Attribute(std::vector<int64_t>{1, 0, 2}));
  ir::Value* o = n.op("Transpose", {n.op("MatMul", {n.op("Softmax", {scores}, sm), v})}, back);
  return n.op("Reshape", {o, n.c(Tensor::from_vector<int64_t>({2}, {S * B, E}))});
}

TEST(FoldAttentionLayouts, SequenceFirstPackedProjection) {
  const int64_t S = 6, B = 3, H = 2, D = 8;
  const auto passes = [] {
    return list_of(passes::make_fuse_attention(), passes::make_fold_attention_layouts(),
                   passes::make_dead_code_elimination());
  };
  {
    Net n;
    n.output(seq_first_packed(n, S, B, H, D, {0, 1, 2}));
    auto fused = fuse_and_compare(n, passes(), {random({S, B, H * D}, 50)});
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(layout(a, "qkv_layout"), "sb3hd");
    EXPECT_EQ(layout(a, "out_layout"), "sbhd");
    EXPECT_EQ(a->inputs[1], nullptr);
    EXPECT_EQ(ops::shape_to_string(a->inputs[0]->shape), "[6,3,3,2,8]");
    EXPECT_EQ(count(*fused, "Slice"), 0) << ir::print(*fused);
    EXPECT_EQ(count(*fused, "Transpose"), 0) << ir::print(*fused);
  }
  {  // q and k swapped: still fused (sbhd on the Slices), not read as one packed tensor
    Net n;
    n.output(seq_first_packed(n, S, B, H, D, {1, 0, 2}));
    auto fused = fuse_and_compare(n, passes(), {random({S, B, H * D}, 51)});
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(layout(a, "qkv_layout"), "sbhd");
    EXPECT_EQ(count(*fused, "Slice"), 3);
  }
  {  // a [S,B,4E] projection of which q, k and v are the first three quarters: fused, Slices kept
    Net n;
    n.output(seq_first_packed(n, S, B, H, D, {0, 1, 2}, 4));
    auto fused = fuse_and_compare(n, passes(), {random({S, B, H * D}, 52)});
    EXPECT_EQ(count(*fused, "Slice"), 3) << ir::print(*fused);
  }
}

// torch's batch_first=True around that block: the [B,S,E] input Transposed to sequence-first before the in_proj,
// the out_proj's [S*B,E] rows Reshaped to [S,B,E] and Transposed back. The in_proj reads the input itself (its
// rows are independent), the attention reads bs3hd and writes bshd, the out_proj's rows are then batch-first and
// its Reshape gives [B,S,E] directly: no Transpose left. With a [M,N] bias on the out_proj (tied to the row order)
// the output side stays as it was.
// ends_model: the block's Transpose gives the network output (no residual after it).
void batch_first_block(Net& n, int64_t S, int64_t B, int64_t H, int64_t D, bool row_bias, bool ends_model = false) {
  const int64_t E = H * D;
  Attributes swap01;
  swap01.set("perm", Attribute(std::vector<int64_t>{1, 0, 2}));
  ir::Value* x = n.input("x", {B, S, E});
  ir::Value* a = n.op("MatMul", {n.op("Transpose", {x}, swap01), n.weight({E, 3 * E})});
  auto third = [&](int k) {
    return n.op("Slice",
                {a, n.c(Tensor::from_vector<int64_t>({1}, {k * E})),
                 n.c(Tensor::from_vector<int64_t>({1}, {(k + 1) * E})), n.c(Tensor::from_vector<int64_t>({1}, {2}))});
  };
  ir::Value* q = seq_first_heads(n, third(0), S, B * H, D, {1, 0, 2});
  ir::Value* kt = seq_first_heads(n, third(1), S, B * H, D, {1, 2, 0});
  ir::Value* v = seq_first_heads(n, third(2), S, B * H, D, {1, 0, 2});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* o = n.op("MatMul", {n.op("Softmax", {n.op("MatMul", {n.op("Div", {q, n.scalar(4.0f)}), kt})}, sm), v});
  ir::Value* rows =
      n.op("Reshape", {n.op("Transpose", {o}, swap01), n.c(Tensor::from_vector<int64_t>({2}, {S * B, E}))});
  ir::Value* proj = n.op("Gemm", {rows, n.weight({E, E}), row_bias ? n.weight({S * B, E}) : n.weight({E})});
  ir::Value* seq = n.op("Reshape", {proj, n.c(Tensor::from_vector<int64_t>({3}, {S, B, E}))});
  ir::Value* y = n.op("Transpose", {seq}, swap01);
  n.output(ends_model ? y : n.op("Add", {y, x}));
}

TEST(FoldAttentionLayouts, BatchFirstAroundSequenceFirstBlock) {
  const int64_t S = 5, B = 3, H = 2, D = 8;
  const auto passes = [] {
    return list_of(passes::make_fuse_attention(), passes::make_fold_attention_layouts(),
                   passes::make_dead_code_elimination());
  };
  {
    Net n;
    batch_first_block(n, S, B, H, D, false);
    auto fused = fuse_and_compare(n, passes(), {random({B, S, H * D}, 60)});
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(layout(a, "qkv_layout"), "bs3hd");
    EXPECT_EQ(layout(a, "out_layout"), "bshd");
    EXPECT_EQ(count(*fused, "Transpose"), 0) << ir::print(*fused);
    EXPECT_EQ(count(*fused, "Slice"), 0);
  }
  {  // the block ends the model (GpuTransformer.Torch1BatchFirstMultiheadAttention's form): the output Transpose
     // goes too, and the network output keeps its name
    Net n;
    batch_first_block(n, S, B, H, D, false, true);
    auto fused = fuse_and_compare(n, passes(), {random({B, S, H * D}, 62)});
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(layout(a, "out_layout"), "bshd");
    EXPECT_EQ(count(*fused, "Transpose"), 0) << ir::print(*fused);
    EXPECT_EQ(fused->outputs()[0]->name, n.g->outputs()[0]->name) << "the graph output keeps its name";
  }
  {
    Net n;
    batch_first_block(n, S, B, H, D, true);
    auto fused = fuse_and_compare(n, passes(), {random({B, S, H * D}, 61)});
    const ir::Node* a = find(*fused, "FusedAttention");
    ASSERT_NE(a, nullptr) << ir::print(*fused);
    EXPECT_EQ(layout(a, "qkv_layout"), "bs3hd") << "the input side does not depend on the output side";
    EXPECT_EQ(layout(a, "out_layout"), "sbhd");
    EXPECT_EQ(count(*fused, "Transpose"), 1) << ir::print(*fused);
  }
}

TEST(FoldAttentionLayouts, SeparateBshdInputs) {
  const int64_t B = 2, S = 7, H = 2, D = 4, E = H * D;
  Net n;
  std::vector<ir::Value*> x;
  for (const char* name : {"q", "k", "v"}) x.push_back(n.input(name, {B, S, H, D}));
  auto perm = [&](ir::Value* v, std::vector<int64_t> p) {
    Attributes t;
    t.set("perm", p);
    return n.op("Transpose", {v}, t);
  };
  ir::Value* s = n.op("Mul", {n.op("MatMul", {perm(x[0], {0, 2, 1, 3}), perm(x[1], {0, 2, 3, 1})}), n.scalar(0.5f)});
  Attributes sm;
  sm.set("axis", Attribute(int64_t{-1}));
  ir::Value* att = n.op("MatMul", {n.op("Softmax", {s}, sm), perm(x[2], {0, 2, 1, 3})});
  ir::Value* flat = n.op("Reshape", {perm(att, {0, 2, 1, 3}), n.c(Tensor::from_vector<int64_t>({3}, {0, 0, E}))});
  n.output(n.op("MatMul", {flat, n.weight({E, E})}));
  auto fused = fuse_and_compare(n,
                                list_of(passes::make_fuse_attention(), passes::make_fold_attention_layouts(),
                                        passes::make_dead_code_elimination()),
                                {random({B, S, H, D}, 43), random({B, S, H, D}, 44), random({B, S, H, D}, 45)});
  const ir::Node* a = find(*fused, "FusedAttention");
  ASSERT_NE(a, nullptr) << ir::print(*fused);
  EXPECT_EQ(layout(a, "qkv_layout"), "bshd");
  EXPECT_EQ(layout(a, "out_layout"), "bshd");
  EXPECT_EQ(count(*fused, "Transpose"), 0) << ir::print(*fused);
}

