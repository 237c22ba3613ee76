// Unit tests for the IR: verifier diagnostics, the text printer, Graph::clone and remove_value.
#include <gtest/gtest.h>

#include "ir/graph.h"
#include "ops/op_util.h"

using namespace kiln;
using ir::Graph;
using ir::Value;

namespace kiln::ops {
// A test-only op (unique name so it never collides with real operators): 1-2 inputs, optional float alpha.
KILN_REGISTER_OP(IrTestOp) {
  OpSchema s;
  s.name = "IrTestOp";
  s.min_inputs = 1;
  s.max_inputs = 2;
  s.attrs = {{"alpha", AttrType::kFLOAT}};
  s.infer = infer_same_as_input0;
  return s;
}
}  // namespace kiln::ops

namespace {

Value* input(Graph& g, const std::string& name, ops::Shape shape) {
  Value* v = g.add_value(name);
  v->shape = std::move(shape);
  v->rank_known = true;
  g.inputs().push_back(v);
  return v;
}

// x -> n1 -> y -> n2 -> z (output)
struct Chain {
  Graph g;
  Value *x, *y, *z;
  ir::Node *n1, *n2;
  Chain() {
    x = input(g, "x", {ops::Dim::symbol("N"), 4});
    n1 = g.add_node("IrTestOp", "n1", {x}, {"y"});
    y = n1->outputs[0];
    n2 = g.add_node("IrTestOp", "n2", {y}, {"z"});
    z = n2->outputs[0];
    g.outputs().push_back(z);
  }
};

TEST(Verifier, AcceptsValidGraph) {
  Chain c;
  EXPECT_TRUE(ir::verify(c.g).ok()) << ir::verify(c.g).message();
}

TEST(Verifier, DanglingInputNamesNodeAndTensor) {
  Chain c;
  Value* ghost = c.g.add_value("ghost");
  c.g.set_node_input(c.n2, 0, ghost);
  Status st = ir::verify(c.g);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node 'n2' (#1, IrTestOp)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'ghost' is dangling"), std::string::npos) << st.message();
}

TEST(Verifier, CycleNamesTheNodesInvolved) {
  Chain c;
  c.g.set_node_input(c.n1, 0, c.z);  // n1 now consumes n2's output: n1 -> n2 -> n1
  Status st = ir::verify(c.g);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cycle"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'n1'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'n2'"), std::string::npos) << st.message();
  EXPECT_FALSE(c.g.topo_sort().ok());
}

TEST(Verifier, OutOfOrderIsNotACycle) {
  Graph g;
  Value* x = input(g, "x", {4});
  Value* late = g.add_value("late");
  ir::Node* a = g.add_node("IrTestOp", "a", {late}, {"y"});
  ir::Node* b = g.add_node("IrTestOp", "b", {x}, {"t"});
  // Make b produce `late` so a is before its producer without any cycle.
  b->outputs[0] = late;
  late->producer = b;
  g.outputs().push_back(a->outputs[0]);
  Status st = ir::verify(g);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not in topological order"), std::string::npos) << st.message();
  ASSERT_TRUE(g.topo_sort().ok());
  g.prune_values();
  EXPECT_TRUE(ir::verify(g).ok()) << ir::verify(g).message();
}

TEST(Verifier, DuplicateValueNames) {
  Chain c;
  c.z->name = "y";
  Status st = ir::verify(c.g);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("value name 'y'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("node 'n2'"), std::string::npos) << st.message();
}

TEST(Verifier, DuplicateNodeNames) {
  Chain c;
  c.n2->name = "n1";
  Status st = ir::verify(c.g);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node name 'n1'"), std::string::npos) << st.message();
}

TEST(Verifier, UnknownOpArityAndAttributes) {
  {
    Chain c;
    c.n2->op_type = "NoSuchOp";
    Status st = ir::verify(c.g);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("node 'n2' (#1, NoSuchOp)"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("not registered"), std::string::npos) << st.message();
  }
  {
    Chain c;
    c.n1->inputs = {c.x, c.x, c.x};
    c.g.rebuild_links();
    Status st = ir::verify(c.g);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("expected 1 to 2 inputs, found 3"), std::string::npos) << st.message();
  }
  {
    Chain c;
    c.n1->attrs.set("beta", Attribute(1.0f));
    Status st = ir::verify(c.g);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.message().find("node 'n1' (#0, IrTestOp)"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("unknown attribute 'beta'"), std::string::npos) << st.message();
  }
  {
    Chain c;
    c.n1->attrs.set("alpha", Attribute(std::string("x")));
    EXPECT_FALSE(ir::verify(c.g).ok());
  }
}

TEST(Verifier, GraphOutputMustBeProduced) {
  Chain c;
  c.g.outputs().push_back(c.g.add_value("orphan"));
  Status st = ir::verify(c.g);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("graph output 1 'orphan'"), std::string::npos) << st.message();
}

TEST(Verifier, ConstantOutputIsFine) {
  Graph g;
  g.outputs().push_back(g.add_constant("c", Tensor::from_vector<float>({2}, {1, 2})));
  EXPECT_TRUE(ir::verify(g).ok());
}

TEST(Printer, ShowsInputsConstantsNodesOutputs) {
  Chain c;
  c.g.name = "chain";
  Value* w = c.g.add_constant("w", Tensor::from_vector<float>({4}, {1, 2, 3, 4}));
  c.g.set_node_input(c.n1, 0, c.x);
  c.n1->inputs.push_back(w);
  w->users.push_back(c.n1);
  c.n1->attrs.set("alpha", Attribute(0.5f));
  c.y->shape = {ops::Dim::symbol("N"), 4};
  c.y->rank_known = true;
  std::string s = ir::print(c.g);
  EXPECT_NE(s.find("graph chain"), std::string::npos) << s;
  EXPECT_NE(s.find("  %x: float32[N,4]\n"), std::string::npos) << s;
  EXPECT_NE(s.find("constants: 1 (16 B)"), std::string::npos) << s;
  EXPECT_NE(s.find("  %w: float32[4] = {1, 2, 3, 4}"), std::string::npos) << s;
  EXPECT_NE(s.find("  %y:float32[N,4] = IrTestOp(%x, %w) {alpha=0.5}  # n1\n"), std::string::npos) << s;
  EXPECT_NE(s.find("  %z:float32[*] = IrTestOp(%y)  # n2\n"), std::string::npos) << s;
  EXPECT_NE(s.find("outputs:\n  %z: float32[*]"), std::string::npos) << s;
}

TEST(Graph, CloneIsDeepAndSharesConstants) {
  Chain c;
  Value* w = c.g.add_constant("w", Tensor::from_vector<float>({1}, {3}));
  c.n2->inputs.push_back(w);
  c.g.rebuild_links();
  auto copy = c.g.clone();
  ASSERT_TRUE(ir::verify(*copy).ok()) << ir::verify(*copy).message();
  EXPECT_EQ(ir::print(*copy), ir::print(c.g));
  Value* cy = copy->find_value("y");
  ASSERT_NE(cy, nullptr);
  EXPECT_NE(cy, c.y);
  ASSERT_NE(cy->producer, nullptr);
  EXPECT_EQ(cy->producer->name, "n1");
  EXPECT_NE(cy->producer, c.n1);
  EXPECT_EQ(cy->users.size(), 1u);
  EXPECT_EQ(copy->find_value("w")->constant.get(), w->constant.get());
  // Editing the copy leaves the original alone.
  copy->remove_node(copy->nodes()[1].get());
  EXPECT_EQ(c.g.nodes().size(), 2u);
  EXPECT_EQ(c.y->users.size(), 1u);
  // New names continue after the originals rather than colliding.
  ir::Node* n = copy->add_node("IrTestOp", "n1", {cy}, {"y"});
  EXPECT_EQ(n->name, "n1_1");
  EXPECT_EQ(n->outputs[0]->name, "y_1");
}

TEST(Graph, RemoveValueForgetsTheName) {
  Graph g;
  Value* v = g.add_value("t");
  g.remove_value(v);
  EXPECT_EQ(g.find_value("t"), nullptr);
  EXPECT_TRUE(g.values().empty());
}

}  // namespace
