// Unit tests for common_subexpression_elimination and fold_transposes: graphs before and after, and the same
// outputs on the reference kernels.
#include <gtest/gtest.h>

#include "cnn_test_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

passes::PassList one(std::unique_ptr<passes::Pass> p) {
  passes::PassList l;
  l.push_back(std::move(p));
  l.push_back(passes::make_dead_code_elimination());
  return l;
}

TEST(CommonSubexpressionElimination, DuplicatedChainsCollapse) {
  // y1 = Relu(x) * 2, y2 = Relu(x) * 2 (computed twice), out = y1 + y2; plus a different Mul that must stay.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 3});
  ir::Value* two = g.add_constant("two", Tensor::from_vector<float>({}, {2.f}));
  ir::Value* three = g.add_constant("three", Tensor::from_vector<float>({}, {3.f}));
  auto* r1 = g.add_node("Relu", "r1", {x}, {"r1"}, {}, 14)->outputs[0];
  auto* r2 = g.add_node("Relu", "r2", {x}, {"r2"}, {}, 14)->outputs[0];
  auto* m1 = g.add_node("Mul", "m1", {r1, two}, {"m1"}, {}, 14)->outputs[0];
  auto* m2 = g.add_node("Mul", "m2", {r2, two}, {"m2"}, {}, 14)->outputs[0];
  auto* m3 = g.add_node("Mul", "m3", {r2, three}, {"m3"}, {}, 14)->outputs[0];
  auto* s = g.add_node("Add", "s", {m1, m2}, {"s"}, {}, 14)->outputs[0];
  auto* y = g.add_node("Add", "y", {s, m3}, {"y"}, {}, 14)->outputs[0];
  g.outputs().push_back(y);
  Tensor in = random_f32({2, 3}, 5);
  auto want = run_reference(g, {in});
  ASSERT_TRUE(run_passes(g, one(passes::make_common_subexpression_elimination())).ok());
  EXPECT_EQ(count_ops(g, "Relu"), 1) << ir::print(g);
  EXPECT_EQ(count_ops(g, "Mul"), 2) << "the two *2 merge, the *3 stays\n" << ir::print(g);
  auto got = run_reference(g, {in});
  expect_close(got[0], want[0], 0, 0);
}

TEST(CommonSubexpressionElimination, KeepsRandomOpsDifferentAttributesAndNamedOutputs) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {4});
  Attributes a1, a2;
  a1.set("alpha", 0.1f);
  a2.set("alpha", 0.10000001f);  // differs in the last bit only: not the same op
  auto* l1 = g.add_node("LeakyRelu", "l1", {x}, {"l1"}, a1, 16)->outputs[0];
  auto* l2 = g.add_node("LeakyRelu", "l2", {x}, {"l2"}, a2, 16)->outputs[0];
  auto* r1 = g.add_node("RandomUniformLike", "u1", {x}, {"u1"}, {}, 1)->outputs[0];
  auto* r2 = g.add_node("RandomUniformLike", "u2", {x}, {"u2"}, {}, 1)->outputs[0];
  auto* e1 = g.add_node("Exp", "e1", {x}, {"e1"}, {}, 13)->outputs[0];
  auto* e2 = g.add_node("Exp", "e2", {x}, {"e2"}, {}, 13)->outputs[0];
  for (auto* v : {l1, l2, r1, r2, e1, e2}) g.outputs().push_back(v);
  ASSERT_TRUE(run_passes(g, one(passes::make_common_subexpression_elimination())).ok());
  EXPECT_EQ(count_ops(g, "LeakyRelu"), 2);
  EXPECT_EQ(count_ops(g, "RandomUniformLike"), 2);
  EXPECT_EQ(count_ops(g, "Exp"), 2) << "both are network outputs under their own names";
}

TEST(FoldTransposes, PairsComposeOrCancel) {
  for (bool cancel : {false, true}) {
    SCOPED_TRACE(cancel ? "cancelling pair" : "composed pair");
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {2, 3, 4, 5});
    Attributes p1, p2;
    p1.set("perm", std::vector<int64_t>{0, 2, 3, 1});
    p2.set("perm", cancel ? std::vector<int64_t>{0, 3, 1, 2} : std::vector<int64_t>{3, 1, 0, 2});
    auto* t1 = g.add_node("Transpose", "t1", {x}, {"t1"}, p1, 13)->outputs[0];
    auto* t2 = g.add_node("Transpose", "t2", {t1}, {"t2"}, p2, 13)->outputs[0];
    auto* y = g.add_node("Relu", "relu", {t2}, {"y"}, {}, 14)->outputs[0];
    g.outputs().push_back(y);
    Tensor in = random_f32({2, 3, 4, 5}, 8);
    ASSERT_TRUE(run_passes(g, {}).ok());
    auto want = run_reference(g, {in});
    ASSERT_TRUE(run_passes(g, one(passes::make_fold_transposes())).ok());
    EXPECT_EQ(count_ops(g, "Transpose"), cancel ? 0 : 1) << ir::print(g);
    auto got = run_reference(g, {in});
    ASSERT_EQ(got.size(), 1u);
    expect_close(got[0], want[0], 0, 0);
  }
}

TEST(FoldTransposes, SharedInnerTransposeStays) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 3});
  Attributes p;
  p.set("perm", std::vector<int64_t>{1, 0});
  auto* t1 = g.add_node("Transpose", "t1", {x}, {"t1"}, p, 13)->outputs[0];
  auto* t2 = g.add_node("Transpose", "t2", {t1}, {"t2"}, p, 13)->outputs[0];
  g.outputs().push_back(t1);
  g.outputs().push_back(t2);
  ASSERT_TRUE(run_passes(g, one(passes::make_fold_transposes())).ok());
  EXPECT_EQ(count_ops(g, "Transpose"), 2);
}

}  // namespace
