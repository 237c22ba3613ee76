// shape_from_source pass: Shape nodes read the earliest value with the same dims (through ops that keep their
// input's dims), or the input of a Transpose with a Gather of the permutation, so that the ops in between die when
// Shape was their only reader. Structure after the pass, and outputs on the reference kernels before and after.
#include <gtest/gtest.h>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"

using namespace kiln;

namespace {

ir::Value* node(ir::Graph& g, const std::string& op, std::vector<ir::Value*> in, Attributes a = {}) {
  return g.add_node(op, g.unique_node_name(op), in, {g.unique_node_name(op + "_y")}, std::move(a), 17)->outputs[0];
}

Attributes perm(std::vector<int64_t> p) {
  Attributes a;
  a.set("perm", Attribute(std::move(p)));
  return a;
}

// Runs the pass and dead-code elimination on a copy of g; the copy computes what g does on `inputs`.
std::unique_ptr<ir::Graph> apply_and_compare(ir::Graph& g, const std::vector<Tensor>& inputs) {
  auto before = g.clone();
  EXPECT_TRUE(test::run_passes(*before, {}).ok());
  auto after = g.clone();
  Status st = test::run_passes(*after, test::list_of(passes::make_shape_from_source(),
                                                      passes::make_dead_code_elimination()));
  EXPECT_TRUE(st.ok()) << st.message();
  const auto want = test::run_reference(*before, inputs), got = test::run_reference(*after, inputs);
  EXPECT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) test::expect_close(got[i], want[i], 0.0);
  return after;
}

// Shape(Transpose(x)) feeding a Reshape target: the Transpose is read by nothing else and goes; a Gather of the
// permutation over Shape(x) gives the same target.
TEST(ShapeFromSource, TransposeReadOnlyByShapeGoes) {
  ir::Graph g;
  ir::Value* x = test::graph_input(g, "x", {2, 3, 4});
  ir::Value* w = test::graph_input(g, "w", {24});
  ir::Value* s = node(g, "Shape", {node(g, "Transpose", {x}, perm({1, 2, 0}))});
  g.outputs().push_back(node(g, "Reshape", {w, s}));
  auto after = apply_and_compare(g, {test::random_f32({2, 3, 4}, 1), test::random_f32({24}, 2)});
  EXPECT_EQ(test::count_ops(*after, "Transpose"), 0) << ir::print(*after);
  EXPECT_EQ(test::count_ops(*after, "Gather"), 1);
  EXPECT_EQ(after->outputs()[0]->shape.size(), 3u);
  EXPECT_EQ(ops::shape_to_string(after->outputs()[0]->shape), "[3,4,2]");
}

// A chain of ops that keep their input's dims (Relu, Sigmoid, an Add of a same-shaped tensor): Shape reads the
// chain's start, and the chain goes.
TEST(ShapeFromSource, SameDimsChainGoes) {
  ir::Graph g;
  ir::Value* x = test::graph_input(g, "x", {3, 5});
  ir::Value* y = test::graph_input(g, "y", {3, 5});
  ir::Value* w = test::graph_input(g, "w", {15});
  ir::Value* chain = node(g, "Add", {node(g, "Sigmoid", {node(g, "Relu", {x})}), y});
  g.outputs().push_back(node(g, "Reshape", {w, node(g, "Shape", {chain})}));
  auto after = apply_and_compare(g, {test::random_f32({3, 5}, 3), test::random_f32({3, 5}, 4),
                                     test::random_f32({15}, 5)});
  EXPECT_EQ(after->nodes().size(), 2u) << ir::print(*after);
  const ir::Node* shape = test::find_op(*after, "Shape");
  ASSERT_NE(shape, nullptr);
  EXPECT_EQ(shape->inputs[0]->name, "x");
}

// Left alone: a Shape with a start (its Gather would need the slice too), a broadcasting Add whose output has
// other dims than its first input.
TEST(ShapeFromSource, OtherDimsAndPartialShapesStay) {
  ir::Graph g;
  ir::Value* x = test::graph_input(g, "x", {2, 3});
  ir::Value* b = test::graph_input(g, "b", {4, 2, 3});
  ir::Value* w = test::graph_input(g, "w", {24});
  Attributes from1;
  from1.set("start", Attribute(int64_t{1}));
  ir::Value* t = node(g, "Transpose", {x}, perm({1, 0}));
  ir::Value* tail = node(g, "Shape", {t}, from1);                      // [2]
  ir::Value* wide = node(g, "Shape", {node(g, "Add", {x, b})});        // [4,2,3], not x's dims
  ir::Value* three = g.add_constant("three", Tensor::from_vector<int64_t>({1}, {3}));
  Attributes axis0;
  axis0.set("axis", Attribute(int64_t{0}));
  g.outputs().push_back(node(g, "Reshape", {w, wide}));
  g.outputs().push_back(node(g, "Reshape", {node(g, "Relu", {x}), node(g, "Concat", {tail, three}, axis0)}));
  g.outputs().push_back(t);
  auto after = apply_and_compare(g, {test::random_f32({2, 3}, 6), test::random_f32({4, 2, 3}, 7),
                                     test::random_f32({24}, 8)});
  EXPECT_EQ(test::count_ops(*after, "Transpose"), 1) << ir::print(*after);
  EXPECT_EQ(test::count_ops(*after, "Add"), 1) << ir::print(*after);
  EXPECT_EQ(test::count_ops(*after, "Gather"), 0);
}

}  // namespace
