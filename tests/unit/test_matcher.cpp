// Unit tests for the declarative graph patterns of passes/matcher.h.
#include <gtest/gtest.h>

#include "ir/graph.h"
#include "passes/matcher.h"

using namespace kiln;
namespace match = kiln::passes::match;

namespace {

// x -> Conv(w) -> Add(bias) -> Relu -> y
struct ConvAddRelu {
  ir::Graph g;
  ir::Value *x, *w, *bias, *conv, *add, *relu;
  ConvAddRelu() {
    x = g.add_value("x");
    g.inputs().push_back(x);
    w = g.add_constant("w", Tensor::from_vector<float>({1, 1, 1, 1}, {2.f}));
    bias = g.add_constant("b", Tensor::from_vector<float>({1, 1, 1, 1}, {0.5f}));
    conv = g.add_node("Conv", "conv", {x, w}, {"c"})->outputs[0];
    add = g.add_node("Add", "add", {bias, conv}, {"a"})->outputs[0];
    relu = g.add_node("Relu", "relu", {add}, {"y"})->outputs[0];
    g.outputs().push_back(relu);
  }
};

match::Pattern conv_bias_relu() {
  return match::op("Relu", {match::commutative("Add", match::op("Conv").bind("conv").used_once(),
                                               match::constant().bind("bias"))
                                .used_once()})
      .bind("relu");
}

TEST(Matcher, BindsNodesAndValuesThroughCommutativeInputs) {
  ConvAddRelu m;
  match::Bindings b;
  b.graph = &m.g;
  ASSERT_TRUE(conv_bias_relu()(m.relu, b));
  EXPECT_EQ(b.value("bias"), m.bias);
  EXPECT_EQ(b.node("conv"), m.conv->producer);
  EXPECT_EQ(b.node("relu"), m.relu->producer);
  EXPECT_EQ(b.node("bias"), nullptr);  // constants have no producer
}

TEST(Matcher, UsedOnceRejectsSharedAndGraphOutputValues) {
  ConvAddRelu m;
  m.g.outputs().push_back(m.conv);  // the conv result is needed on its own: it cannot be fused away
  match::Bindings b;
  b.graph = &m.g;
  EXPECT_FALSE(conv_bias_relu()(m.relu, b));
  EXPECT_TRUE(b.values.empty()) << "a failed match leaves no bindings";
}

TEST(Matcher, ScalarAndBindConsistency) {
  ConvAddRelu m;
  match::Bindings b;
  EXPECT_TRUE(match::scalar(0.5)(m.bias, b));
  EXPECT_FALSE(match::scalar(0.25)(m.bias, b));
  EXPECT_FALSE(match::scalar(0.5)(m.conv, b));
  // The same name bound to two different values fails.
  auto same_twice = match::op("Add", {match::any().bind("v"), match::any().bind("v")});
  EXPECT_FALSE(same_twice(m.add, b));
  ir::Value* sq = m.g.add_node("Add", "sq", {m.x, m.x}, {"sq"})->outputs[0];
  EXPECT_TRUE(same_twice(sq, b));
}

TEST(Matcher, RewriteReplacesEveryMatchAndStops) {
  ConvAddRelu m;
  int calls = 0;
  int n = match::rewrite(m.g, conv_bias_relu(), [&](match::Bindings& b) {
    ++calls;
    ir::Node* conv = b.node("conv");
    ir::Node* fused = m.g.add_node("FusedTest", "fused", {conv->inputs[0], conv->inputs[1], b.value("bias")},
                                   {"fused_out"}, {}, 0, "kiln.test");
    m.g.replace_all_uses(b.value("relu"), fused->outputs[0]);
    return true;
  });
  EXPECT_EQ(n, 1);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(m.g.outputs()[0]->producer->op_type, "FusedTest");
}

}  // namespace

TEST(Matcher, RecordFusionFlattensEarlierFusions) {
  ConvAddRelu m;
  ir::Node* conv = m.conv->producer;
  ir::Node* add = m.add->producer;
  ir::Node* relu = m.relu->producer;
  ir::Node* first = m.g.add_node("FusedTest", "f1", {m.x, m.w}, {"f1"}, {}, 0, "kiln.test");
  match::record_fusion(first, {conv, add});
  ir::Node* second = m.g.add_node("FusedTest", "f2", {m.x, m.w}, {"f2"}, {}, 0, "kiln.test");
  match::record_fusion(second, {first, relu});
  const Attribute* a = second->attrs.find(ops::kFusedFromAttr);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->strings(), (std::vector<std::string>{"conv", "add", "relu"}));
}
