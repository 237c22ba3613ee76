// ai.onnx.preview.training::Gradient end to end: the expand_gradient pass differentiates the forward graph, and the
// engine's gradients match derivatives worked out in closed form here (plain loops and <cmath>, not Kiln).
#include <gtest/gtest.h>

#include <cmath>

#include "onnx_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr const char* kTraining = "ai.onnx.preview.training";

onnx::ModelProto gradient_model(int opset) {
  auto m = onnx_model(opset);
  import_opset(m, kTraining, 1);
  return m;
}

onnx::NodeProto* add_gradient(onnx::GraphProto* g, const std::vector<std::string>& xs, const std::string& y,
                              const std::vector<std::string>& outs) {
  auto* n = add_onnx_node(g, "Gradient", xs, outs, kTraining);
  set_attr_strings(n, "xs", xs);
  set_attr_string(n, "y", y);
  return n;
}

void expect_near(const std::vector<float>& got, const std::vector<double>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << what << "[" << i << "]";
}

}  // namespace

// y = Sigmoid(MatMul(Tanh(a + b), W)) with b broadcast over a's rows: covers broadcasting, MatMul and activations.
TEST(Gradient, MlpWithBroadcastMatchesClosedForm) {
  for (int opset : {12, 13}) {  // ReduceSum takes axes as an attribute before 13, as an input from 13
    auto m = gradient_model(opset);
    auto* g = m.mutable_graph();
    add_graph_input(g, "a", value_type("tensor", kF32, {2, 3}));
    add_graph_input(g, "b", value_type("tensor", kF32, {3}));
    add_graph_input(g, "W", value_type("tensor", kF32, {3, 2}));
    add_onnx_node(g, "Add", {"a", "b"}, {"s"});
    add_onnx_node(g, "Tanh", {"s"}, {"h"});
    add_onnx_node(g, "MatMul", {"h", "W"}, {"z"});
    add_onnx_node(g, "Sigmoid", {"z"}, {"y"});
    add_gradient(g, {"a", "b", "W"}, "y", {"da", "db", "dW"});
    add_graph_output(g, "y", value_type("tensor", kF32, {2, 2}));
    add_graph_output(g, "da", value_type("tensor", kF32, {2, 3}));
    add_graph_output(g, "db", value_type("tensor", kF32, {3}));
    add_graph_output(g, "dW", value_type("tensor", kF32, {3, 2}));
    Status st;
    auto engine = build_onnx_engine(m, &st);
    ASSERT_TRUE(engine) << "opset " << opset << ": " << st.to_string();

    const std::vector<float> a = {0.1f, -0.2f, 0.3f, 0.5f, 0.0f, -0.4f}, b = {0.2f, 0.1f, -0.3f},
                             W = {1.0f, -0.5f, 0.25f, 0.75f, -1.5f, 0.5f};
    auto out = run_engine(*engine, {{"a", host_f32({2, 3}, a)}, {"b", host_f32({3}, b)}, {"W", host_f32({3, 2}, W)}});

    // Reference: h = tanh(a + b), z = h W, y = sigmoid(z); dz = y (1 - y) (dy = 1), dh = dz W^T,
    // ds = dh (1 - h^2); da = ds, db = column sums of ds, dW = h^T dz.
    double h[2][3], y[2][2], dz[2][2], ds[2][3];
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 3; ++k) h[i][k] = std::tanh(double(a[i * 3 + k]) + b[k]);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        double z = 0;
        for (int k = 0; k < 3; ++k) z += h[i][k] * W[k * 2 + j];
        y[i][j] = 1 / (1 + std::exp(-z));
        dz[i][j] = y[i][j] * (1 - y[i][j]);
      }
    std::vector<double> da, db(3, 0.0), dW;
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 3; ++k) {
        double dh = dz[i][0] * W[k * 2] + dz[i][1] * W[k * 2 + 1];
        ds[i][k] = dh * (1 - h[i][k] * h[i][k]);
        da.push_back(ds[i][k]);
        db[k] += ds[i][k];
      }
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 2; ++j) dW.push_back(h[0][k] * dz[0][j] + h[1][k] * dz[1][j]);
    expect_near(host_values<float>(out["y"]), {y[0][0], y[0][1], y[1][0], y[1][1]}, "y");
    EXPECT_EQ(out["db"].dims, (Dims{3}));
    expect_near(host_values<float>(out["da"]), da, "da");
    expect_near(host_values<float>(out["db"]), db, "db");
    expect_near(host_values<float>(out["dW"]), dW, "dW");
  }
}

// y = Relu(Log(q) - Exp(p) / q) * Identity(p) - Neg(q): every other elementwise rule, and both sides of Relu.
TEST(Gradient, ElementwiseRulesMatchClosedForm) {
  auto m = gradient_model(13);
  auto* g = m.mutable_graph();
  add_graph_input(g, "p", value_type("tensor", kF32, {2}));
  add_graph_input(g, "q", value_type("tensor", kF32, {2}));
  add_onnx_node(g, "Exp", {"p"}, {"e"});
  add_onnx_node(g, "Div", {"e", "q"}, {"d"});
  add_onnx_node(g, "Log", {"q"}, {"l"});
  add_onnx_node(g, "Sub", {"l", "d"}, {"n"});
  add_onnx_node(g, "Relu", {"n"}, {"r"});
  add_onnx_node(g, "Identity", {"p"}, {"pi"});
  add_onnx_node(g, "Mul", {"r", "pi"}, {"t"});
  add_onnx_node(g, "Neg", {"q"}, {"nq"});
  add_onnx_node(g, "Sub", {"t", "nq"}, {"y"});
  add_gradient(g, {"p", "q"}, "y", {"dp", "dq"});
  add_graph_output(g, "dp", value_type("tensor", kF32, {2}));
  add_graph_output(g, "dq", value_type("tensor", kF32, {2}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  // p = 0.5, q = 2: n = log 2 - e^0.5 / 2 < 0 (Relu closed); p = -1, q = 3: n > 0 (Relu open).
  const std::vector<float> p = {0.5f, -1.0f}, q = {2.0f, 3.0f};
  auto out = run_engine(*engine, {{"p", host_f32({2}, p)}, {"q", host_f32({2}, q)}});
  std::vector<double> dp, dq;
  for (int i = 0; i < 2; ++i) {
    double e = std::exp(double(p[i])), n = std::log(double(q[i])) - e / q[i];
    double open = n > 0 ? 1 : 0, r = std::max(n, 0.0);
    dp.push_back(r + p[i] * open * (-e / q[i]));                              // d(r p)/dp
    dq.push_back(p[i] * open * (1.0 / q[i] + e / (double(q[i]) * q[i])) + 1);  // d(r p)/dq, then -(-q)
  }
  expect_near(host_values<float>(out["dp"]), dp, "dp");
  expect_near(host_values<float>(out["dq"]), dq, "dq");
}

TEST(Gradient, UnsupportedForwardOpIsNamed) {
  auto m = gradient_model(13);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", kF32, {2}));
  add_onnx_node(g, "Softmax", {"x"}, {"y"});
  add_gradient(g, {"x"}, "y", {"dx"});
  add_graph_output(g, "dx", value_type("tensor", kF32, {2}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_FALSE(engine);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("cannot differentiate node 'Softmax_1' (Softmax)"), std::string::npos) << st.message();
}

// An x that y does not depend on gets a zero gradient; an unknown name in xs is an error naming it.
TEST(Gradient, UnreachedInputGetsZerosAndUnknownNamesFail) {
  auto m = gradient_model(13);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", kF32, {2}));
  add_graph_input(g, "u", value_type("tensor", kF32, {3}));
  add_onnx_node(g, "Exp", {"x"}, {"y"});
  add_gradient(g, {"x", "u"}, "y", {"dx", "du"});
  add_graph_output(g, "dx", value_type("tensor", kF32, {2}));
  add_graph_output(g, "du", value_type("tensor", kF32, {3}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  auto out = run_engine(*engine, {{"x", host_f32({2}, {0.f, 1.f})}, {"u", host_f32({3}, {5.f, 6.f, 7.f})}});
  expect_near(host_values<float>(out["dx"]), {1.0, std::exp(1.0)}, "dx");
  expect_near(host_values<float>(out["du"]), {0, 0, 0}, "du");

  auto bad = gradient_model(13);
  auto* bg = bad.mutable_graph();
  add_graph_input(bg, "x", value_type("tensor", kF32, {2}));
  add_onnx_node(bg, "Exp", {"x"}, {"y"});
  add_gradient(bg, {"x"}, "nope", {"dx"});
  add_graph_output(bg, "dx", value_type("tensor", kF32, {2}));
  engine = build_onnx_engine(bad, &st);
  ASSERT_FALSE(engine);
  EXPECT_NE(st.message().find("attribute 'y' names 'nope', which is not a value of the graph"), std::string::npos)
      << st.message();
}
