// Unit tests for the passes, the pass manager, NetworkDefinition and the builder's profile checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "ops/op_util.h"
#include "passes/pass_manager.h"
#include "passes/shape_inference.h"

using namespace kiln;
using ir::Graph;
using ir::Value;

namespace kiln::ops {
// Test-only ops, named so they never collide with the real operators merged from other branches.

// Float addition of two same-shaped (or broadcast) tensors.
KILN_REGISTER_OP(PassTestAdd) {
  OpSchema s;
  s.name = "PassTestAdd";
  s.min_inputs = s.max_inputs = 2;
  s.infer = [](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(Shape out, broadcast_shapes({ctx.input(0).shape, ctx.input(1).shape}));
    ctx.output(0) = make_info(ctx.input(0).dtype, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor &a = ctx.input(0), &b = ctx.input(1);
    if (a.shape() != b.shape()) return unsupported("PassTestAdd: compute needs equal shapes");
    Tensor& o = ctx.allocate_output(0, a.dtype(), a.shape());
    for (int64_t i = 0; i < a.numel(); ++i) o.data<float>()[i] = a.data<float>()[i] + b.data<float>()[i];
    return Status::Ok();
  };
  return s;
}

// A float vector of `size` elements filled with ones (to test the folding size limit without allocating).
KILN_REGISTER_OP(PassTestFill) {
  OpSchema s;
  s.name = "PassTestFill";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"size", AttrType::kINT, AttrRequirement::kRequired}};
  s.infer = [](InferContext& ctx) {
    ctx.output(0) = make_info(DataType::kFLOAT, {Dim(ctx.attrs().get_int("size").value())});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    ADD_FAILURE() << "PassTestFill must not be computed: its output is over the folding limit";
    return internal_error("PassTestFill computed");
  };
  return s;
}

// Like Shape: its value is known from inference whenever the input's dims are (no compute at all).
KILN_REGISTER_OP(PassTestShape) {
  OpSchema s;
  s.name = "PassTestShape";
  s.min_inputs = s.max_inputs = 1;
  s.infer = [](InferContext& ctx) {
    const Shape& in = ctx.input(0).shape;
    ctx.output(0) = make_info(DataType::kINT64, {Dim(static_cast<int64_t>(in.size()))});
    ctx.output(0).value = std::vector<Dim>(in.begin(), in.end());
    return Status::Ok();
  };
  return s;
}

// Output dim 0 is unknown to inference (a fresh symbol), dim 1 copies the input's dim 1.
KILN_REGISTER_OP(PassTestUnknown) {
  OpSchema s;
  s.name = "PassTestUnknown";
  s.min_inputs = s.max_inputs = 1;
  s.infer = [](InferContext& ctx) {
    ctx.output(0) = make_info(ctx.input(0).dtype, {ctx.fresh_dim(), ctx.input(0).shape.at(1)});
    return Status::Ok();
  };
  return s;
}
}  // namespace kiln::ops

namespace {

class CaptureLogger : public ILogger {
 public:
  void log(Severity s, const char* msg) noexcept override { lines.emplace_back(s, msg); }
  bool contains(Severity s, const std::string& text) const {
    return std::any_of(lines.begin(), lines.end(),
                       [&](auto& l) { return l.first == s && l.second.find(text) != std::string::npos; });
  }
  std::vector<std::pair<Severity, std::string>> lines;
};

Value* input(Graph& g, const std::string& name, ops::Shape shape, DataType dt = DataType::kFLOAT) {
  Value* v = g.add_value(name);
  v->dtype = dt;
  v->shape = std::move(shape);
  v->rank_known = true;
  g.inputs().push_back(v);
  return v;
}

Value* fconst(Graph& g, const std::string& name, std::vector<float> v) {
  int64_t n = static_cast<int64_t>(v.size());
  return g.add_constant(name, Tensor::from_vector<float>({n}, v));
}

Status run_passes(Graph& g, passes::PassList list, CaptureLogger* log = nullptr, const std::string& dump = "") {
  static CaptureLogger sink;
  passes::PassOptions o;
  o.verify_each = true;
  o.dump_after = dump;
  passes::PassContext ctx(log ? *log : sink, o);
  passes::PassManager pm(std::move(list));
  return pm.run(g, ctx);
}

using test::list_of;

std::vector<std::string> op_types(const Graph& g) {
  std::vector<std::string> r;
  for (auto& n : g.nodes()) r.push_back(n->op_type);
  return r;
}

// ---------------------------------------------------------------- shape inference

TEST(ShapeInference, PropagatesSymbolicShapes) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("N"), 8});
  Value* b = input(g, "b", {8});
  ir::Node* n = g.add_node("PassTestAdd", "add", {x, b}, {"y"});
  g.outputs().push_back(n->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference())).ok());
  EXPECT_EQ(ops::shape_to_string(n->outputs[0]->shape), "[N,8]");
  EXPECT_TRUE(n->outputs[0]->rank_known);
}

TEST(ShapeInference, KeepsDeclaredStaticDimOverInferredSymbol) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("N"), 8});
  ir::Node* n = g.add_node("PassTestUnknown", "u", {x}, {"y"});
  Value* y = n->outputs[0];
  y->shape = {5, 8};  // what the importer read from value_info
  y->rank_known = true;
  g.outputs().push_back(y);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference())).ok());
  EXPECT_EQ(ops::shape_to_string(y->shape), "[5,8]");
}

TEST(ShapeInference, DeclaredAndInferredConflictNamesNode) {
  Graph g;
  Value* x = input(g, "x", {2, 8});
  ir::Node* n = g.add_node("PassTestUnknown", "u", {x}, {"y"});
  n->outputs[0]->shape = {5, 7};
  n->outputs[0]->rank_known = true;
  g.outputs().push_back(n->outputs[0]);
  Status st = run_passes(g, list_of(passes::make_shape_inference()));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node 'u' (PassTestUnknown)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("declared as [5,7]"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("pass 'shape_inference'"), std::string::npos) << st.message();
}

TEST(ShapeInference, InferenceErrorNamesNodeAndInputShapes) {
  Graph g;
  Value* a = input(g, "a", {3});
  Value* b = input(g, "b", {4});
  g.outputs().push_back(g.add_node("PassTestAdd", "bad_add", {a, b}, {"y"})->outputs[0]);
  Status st = run_passes(g, list_of(passes::make_shape_inference()));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("node 'bad_add' (PassTestAdd)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("float32[3], float32[4]"), std::string::npos) << st.message();
}

TEST(ShapeInference, RerunDoesNotChurn) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("N"), 8});
  g.outputs().push_back(g.add_node("PassTestUnknown", "u", {x}, {"y"})->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference())).ok());
  std::string first = ir::print(g);
  CaptureLogger log;
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference()), &log).ok());
  EXPECT_EQ(ir::print(g), first);
  EXPECT_TRUE(log.contains(ILogger::Severity::kVERBOSE, "0 changes"));
}

// ---------------------------------------------------------------- symbolic dim unification

ir::Node* node(Graph& g, const std::string& op, const std::string& name, std::vector<Value*> in, Attributes a = {}) {
  return g.add_node(op, name, in, {name + "_out"}, std::move(a), 17);
}
Value* i64(Graph& g, const std::string& name, std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return g.add_constant(name, Tensor::from_vector<int64_t>({n}, std::move(v)));
}
std::string shape_of(const Value* v) { return ops::shape_to_string(v->shape); }

// Inference node by node without the pass (infer_node does not unify): the shapes before unification.
std::unique_ptr<Graph> inferred_without_unification(const Graph& g) {
  auto c = g.clone();
  EXPECT_TRUE(c->topo_sort().ok());
  for (auto& n : c->nodes()) EXPECT_TRUE(passes::infer_node(*c, *n).ok()) << n->name;
  return c;
}

// Runs the graph on the reference kernels with every node output marked as a graph output and checks the shapes
// inference claims against what was computed: static dims exactly, and each symbol one size throughout.
void expect_shapes_hold(const Graph& g, const std::vector<Tensor>& inputs) {
  auto c = g.clone();
  std::vector<Value*> all;
  for (auto& n : c->nodes())
    for (Value* o : n->outputs) all.push_back(o);
  c->outputs() = all;
  c->rebuild_links();
  auto got = test::run_reference(*c, inputs);
  ASSERT_EQ(got.size(), all.size());
  std::map<std::string, int64_t> size_of;
  for (size_t i = 0; i < inputs.size(); ++i) all.insert(all.begin() + i, c->inputs()[i]);
  for (size_t i = 0; i < inputs.size(); ++i) got.insert(got.begin() + i, inputs[i]);
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i]->shape.size(), got[i].shape().size()) << all[i]->name;
    for (size_t k = 0; k < all[i]->shape.size(); ++k) {
      const ops::Dim& d = all[i]->shape[k];
      const int64_t real = got[i].shape()[k];
      if (d.is_static()) EXPECT_EQ(d.value, real) << all[i]->name << " dim " << k;
      else if (!d.sym.empty()) {
        auto [it, inserted] = size_of.emplace(d.sym, real);
        EXPECT_EQ(it->second, real) << "symbol " << d.sym << " at " << all[i]->name << " dim " << k;
      }
    }
  }
}

// A position embedding sliced to the sequence length (Slice(table, 0, Shape(x)[1])): inference cannot tell the slice's
// length from the sequence (it is min(seq, 100)) and names it afresh; adding it to x is legal only if the two are
// equal (neither is a static 1), so the pass gives every value the graph input's symbol, also the slice's other user,
// inferred before the Add.
TEST(ShapeInference, BroadcastUnifiesASliceLengthWithTheSequence) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("batch"), ops::Dim::symbol("seq"), 8});
  Value* table = g.add_constant("table", test::random_f32({100, 8}, 3));
  Attributes ax;
  ax.set("axis", Attribute(int64_t{0}));
  Value* len = node(g, "Gather", "len", {node(g, "Shape", "shape", {x})->outputs[0], i64(g, "one", {1})}, ax)->outputs[0];
  Value* pos = node(g, "Slice", "pos", {table, i64(g, "zero", {0}), len, i64(g, "axis0", {0})})->outputs[0];
  Value* relu = node(g, "Relu", "relu", {pos})->outputs[0];
  Value* sum = node(g, "Add", "add", {x, pos})->outputs[0];
  g.outputs() = {relu, sum};

  auto before = inferred_without_unification(g);
  const std::string fresh = before->find_value("pos_out")->shape[0].sym;
  EXPECT_FALSE(fresh.empty());
  EXPECT_NE(fresh, "seq");
  EXPECT_EQ(shape_of(before->find_value("relu_out")), "[" + fresh + ",8]");

  CaptureLogger log;
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference()), &log).ok());
  EXPECT_EQ(shape_of(pos), "[seq,8]");
  EXPECT_EQ(shape_of(relu), "[seq,8]");
  EXPECT_EQ(shape_of(sum), "[batch,seq,8]");
  EXPECT_EQ(shape_of(x), "[batch,seq,8]");
  expect_shapes_hold(g, {test::random_f32({2, 5, 8}, 4)});
  // A second run finds nothing to rename.
  CaptureLogger again;
  std::string first = ir::print(g);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference()), &again).ok());
  EXPECT_EQ(ir::print(g), first);
  EXPECT_TRUE(again.contains(ILogger::Severity::kVERBOSE, "0 changes"));
}

// Several lengths computed apart (slices of tables of different sizes), summed pairwise and then with the input: one
// class, named by the input's symbol, whatever order the merges came in.
TEST(ShapeInference, ChainOfInferredSymbolsTakesTheInputSymbol) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("seq"), 8});
  Value* ends = input(g, "ends", {1}, DataType::kINT64);
  std::vector<Value*> slices;
  for (int i = 0; i < 4; ++i) {
    Value* table = g.add_constant("table" + std::to_string(i), test::random_f32({50 + i, 8}, i));
    slices.push_back(node(g, "Slice", "s" + std::to_string(i),
                          {table, i64(g, "zero" + std::to_string(i), {0}), ends, i64(g, "ax" + std::to_string(i), {0})})
                         ->outputs[0]);
  }
  Value* a = node(g, "Add", "a", {slices[0], slices[1]})->outputs[0];
  Value* b = node(g, "Add", "b", {slices[2], slices[3]})->outputs[0];
  Value* c = node(g, "Add", "c", {a, b})->outputs[0];
  Value* y = node(g, "Add", "y", {c, x})->outputs[0];
  g.outputs() = {y};
  auto before = inferred_without_unification(g);
  std::set<std::string> names;
  for (int i = 0; i < 4; ++i) names.insert(before->find_value("s" + std::to_string(i) + "_out")->shape[0].sym);
  EXPECT_EQ(names.size(), 4u);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference())).ok());
  for (Value* v : {slices[0], slices[1], slices[2], slices[3], a, b, c, y}) EXPECT_EQ(shape_of(v), "[seq,8]") << v->name;
  expect_shapes_hold(g, {test::random_f32({7, 8}, 1), Tensor::from_vector<int64_t>({1}, {7})});
}

// A MatMul's contraction and Concat's off-axis dims must be equal whatever the inputs: two declared symbols become one
// (the alphabetically first), the graph inputs included.
TEST(ShapeInference, ContractionAndConcatUnifyDeclaredSymbols) {
  Graph g;
  Value* a = input(g, "a", {ops::Dim::symbol("n"), ops::Dim::symbol("k_b")});
  Value* b = input(g, "b", {ops::Dim::symbol("k_a"), 4});
  Value* c = input(g, "c", {ops::Dim::symbol("m"), 4});
  Attributes ax;
  ax.set("axis", Attribute(int64_t{1}));
  Value* mm = node(g, "MatMul", "mm", {a, b})->outputs[0];
  Value* cat = node(g, "Concat", "cat", {mm, c}, ax)->outputs[0];  // dim 0: n == m
  g.outputs() = {cat};
  auto before = inferred_without_unification(g);
  EXPECT_EQ(shape_of(before->find_value("cat_out")), "[n,8]");
  EXPECT_EQ(shape_of(before->find_value("c")), "[m,4]");
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference())).ok());
  EXPECT_EQ(shape_of(a), "[m,k_a]");
  EXPECT_EQ(shape_of(b), "[k_a,4]");
  EXPECT_EQ(shape_of(c), "[m,4]");
  EXPECT_EQ(shape_of(mm), "[m,4]");
  EXPECT_EQ(shape_of(cat), "[m,8]");
  expect_shapes_hold(g, {test::random_f32({3, 6}, 1), test::random_f32({6, 4}, 2), test::random_f32({3, 4}, 5)});
}

// Where broadcasting does not prove equality nothing is unified: a symbol against a static dim (the symbol may be 1
// there: x [1,4] + y [128,4] is legal), and two symbols the user declared on separate inputs (either may be 1; the
// sum's dim is then a fresh symbol, not one of theirs). Run with s = 1 and t = 1 to show both are legal.
TEST(ShapeInference, BroadcastWhereOneSideMayBeOneDoesNotUnify) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("s"), 4});
  Value* y = input(g, "y", {128, 4});
  Value* u = input(g, "u", {ops::Dim::symbol("t"), 4});
  Value* xy = node(g, "Add", "xy", {x, y})->outputs[0];
  Value* xu = node(g, "Mul", "xu", {x, u})->outputs[0];
  Value* xx = node(g, "Sub", "xx", {x, x})->outputs[0];
  g.outputs() = {xy, xu, xx};
  CaptureLogger log;
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference()), &log).ok());
  EXPECT_EQ(shape_of(x), "[s,4]");
  EXPECT_EQ(shape_of(u), "[t,4]");
  EXPECT_EQ(shape_of(xy), "[128,4]");
  ASSERT_FALSE(xu->shape[0].is_static());
  EXPECT_NE(xu->shape[0].sym, "s");
  EXPECT_NE(xu->shape[0].sym, "t");
  EXPECT_FALSE(xu->shape[0].sym.empty());
  EXPECT_EQ(shape_of(xx), "[s,4]");
  EXPECT_FALSE(log.contains(ILogger::Severity::kWARNING, "is legal only when"));
  expect_shapes_hold(g, {test::random_f32({1, 4}, 1), test::random_f32({128, 4}, 2), test::random_f32({6, 4}, 3)});
  expect_shapes_hold(g, {test::random_f32({128, 4}, 1), test::random_f32({128, 4}, 2), test::random_f32({1, 4}, 3)});
}

// A symbol proven equal to a static value: one that names nothing the user declared becomes that value everywhere
// (here the Slice's length, against a [16,8] operand of a Concat); a graph input's symbol stays dynamic, as the user
// declared it, and the pass warns naming the node that requires the value.
TEST(ShapeInference, StaticValueReplacesInferredSymbolButNotADeclaredOne) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("seq"), 8});
  Value* c = g.add_constant("c", test::random_f32({16, 8}, 7));
  Value* table = g.add_constant("table", test::random_f32({100, 8}, 3));
  Value* ends = input(g, "ends", {1}, DataType::kINT64);
  Attributes ax;
  ax.set("axis", Attribute(int64_t{1}));
  Value* pos = node(g, "Slice", "pos", {table, i64(g, "zero", {0}), ends, i64(g, "axis0", {0})})->outputs[0];
  Value* relu = node(g, "Relu", "relu", {pos})->outputs[0];
  Value* cat_pos = node(g, "Concat", "cat_pos", {pos, c}, ax)->outputs[0];
  Value* cat_x = node(g, "Concat", "cat_x", {x, c}, ax)->outputs[0];
  Value* xr = node(g, "Relu", "xr", {x})->outputs[0];
  g.outputs() = {relu, cat_pos, cat_x, xr};
  auto before = inferred_without_unification(g);
  EXPECT_FALSE(before->find_value("relu_out")->shape[0].is_static());
  CaptureLogger log;
  // Twice, as the pipelines run it: the warning is given once.
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference(), passes::make_shape_inference()), &log).ok());
  EXPECT_EQ(std::count_if(log.lines.begin(), log.lines.end(),
                          [](auto& l) { return l.first == ILogger::Severity::kWARNING; }),
            1);
  EXPECT_EQ(shape_of(pos), "[16,8]");
  EXPECT_EQ(shape_of(relu), "[16,8]");
  EXPECT_EQ(shape_of(cat_pos), "[16,16]");
  EXPECT_EQ(shape_of(x), "[seq,8]");
  EXPECT_EQ(shape_of(xr), "[seq,8]");
  EXPECT_TRUE(log.contains(ILogger::Severity::kWARNING, "node 'cat_x' (Concat) is legal only when the network input "
                                                        "dim 'seq' is 16"));
  expect_shapes_hold(g, {test::random_f32({16, 8}, 1), Tensor::from_vector<int64_t>({1}, {16})});
}

// One dim required to be two different static values is an error naming both nodes.
TEST(ShapeInference, ConflictingStaticValuesNameBothNodes) {
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("seq"), 8});
  Attributes ax;
  ax.set("axis", Attribute(int64_t{1}));
  Value* a = node(g, "Concat", "with16", {x, g.add_constant("c16", test::random_f32({16, 8}, 1))}, ax)->outputs[0];
  Value* b = node(g, "Concat", "with32", {x, g.add_constant("c32", test::random_f32({32, 8}, 2))}, ax)->outputs[0];
  g.outputs() = {a, b};
  Status st = run_passes(g, list_of(passes::make_shape_inference()));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'with32' (Concat) requires dim 'seq' to be 32"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("node 'with16' requires 16"), std::string::npos) << st.message();
}

// ---------------------------------------------------------------- constant folding

TEST(ConstantFolding, FoldsConstantSubgraphAndKeepsTheRest) {
  Graph g;
  Value* x = input(g, "x", {2});
  Value* c1 = fconst(g, "c1", {1, 2});
  Value* c2 = fconst(g, "c2", {10, 20});
  ir::Node* k = g.add_node("PassTestAdd", "k", {c1, c2}, {"k_out"});
  ir::Node* y = g.add_node("PassTestAdd", "y", {x, k->outputs[0]}, {"y_out"});
  g.outputs().push_back(y->outputs[0]);
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"PassTestAdd", "PassTestAdd"}));
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference(), passes::make_constant_folding())).ok());
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0]->name, "y");
  Value* folded = g.nodes()[0]->inputs[1];
  EXPECT_EQ(folded->name, "k_out");
  ASSERT_TRUE(folded->is_constant());
  EXPECT_EQ(folded->constant->to_f64_vector(), (std::vector<double>{11, 22}));
  EXPECT_EQ(folded->producer, nullptr);
  // c1 and c2 fed only the folded node.
  EXPECT_EQ(g.find_value("c1"), nullptr);
  EXPECT_EQ(g.find_value("c2"), nullptr);
}

TEST(ConstantFolding, FoldedGraphOutputKeepsItsName) {
  Graph g;
  ir::Node* k = g.add_node("PassTestAdd", "k", {fconst(g, "a", {1}), fconst(g, "b", {2})}, {"result"});
  g.outputs().push_back(k->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_constant_folding())).ok());
  EXPECT_TRUE(g.nodes().empty());
  ASSERT_EQ(g.outputs().size(), 1u);
  EXPECT_EQ(g.outputs()[0]->name, "result");
  EXPECT_EQ(g.outputs()[0]->constant->get_f64(0), 3.0);
}

TEST(ConstantFolding, SkipsOutputsOver64MiB) {
  Graph g;
  int64_t n = (int64_t{64} << 20) / 4 + 1;
  ir::Node* f = g.add_node("PassTestFill", "fill", {fconst(g, "seed", {0})}, {"big"});
  f->attrs.set("size", Attribute(n));
  g.outputs().push_back(f->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference(), passes::make_constant_folding())).ok());
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_FALSE(g.outputs()[0]->is_constant());
}

TEST(ConstantFolding, FoldsKnownValuesOfStaticShapes) {
  Graph g;
  Value* x = input(g, "x", {2, 3, 4});
  ir::Node* s = g.add_node("PassTestShape", "shape", {x}, {"dims"});
  g.outputs().push_back(s->outputs[0]);
  Value* xd = input(g, "xd", {ops::Dim::symbol("N"), 3});
  ir::Node* sd = g.add_node("PassTestShape", "shape_dyn", {xd}, {"dims_dyn"});
  g.outputs().push_back(sd->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference(), passes::make_constant_folding())).ok());
  ASSERT_TRUE(g.find_value("dims")->is_constant());
  EXPECT_EQ(g.find_value("dims")->constant->to_i64_vector(), (std::vector<int64_t>{2, 3, 4}));
  // A symbolic dim is not a constant: that node stays.
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0]->name, "shape_dyn");
}

TEST(ConstantFolding, FoldsOnnxShapeOfStaticInput) {
  ASSERT_NE(ops::OpRegistry::instance().find("Shape"), nullptr) << "Shape is not registered";
  Graph g;
  Value* x = input(g, "x", {2, 3, 4});
  ir::Node* s = g.add_node("Shape", "shape", {x}, {"dims"});
  s->attrs.set("start", Attribute(int64_t{-2}));
  g.outputs().push_back(s->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_constant_folding())).ok());
  ASSERT_TRUE(g.outputs()[0]->is_constant());
  EXPECT_EQ(g.outputs()[0]->constant->to_i64_vector(), (std::vector<int64_t>{3, 4}));
}

// ---------------------------------------------------------------- dead code elimination

TEST(DeadCodeElimination, RemovesUnreachableNodesAndValues) {
  Graph g;
  Value* x = input(g, "x", {2});
  Value* unused_in = input(g, "unused_in", {2});
  Value* w = fconst(g, "w", {1, 1});
  ir::Node* live = g.add_node("PassTestAdd", "live", {x, x}, {"out"});
  ir::Node* dead1 = g.add_node("PassTestAdd", "dead1", {x, w}, {"d1"});
  g.add_node("PassTestAdd", "dead2", {dead1->outputs[0], unused_in}, {"d2"});
  g.outputs().push_back(live->outputs[0]);
  CaptureLogger log;
  ASSERT_TRUE(run_passes(g, list_of(passes::make_dead_code_elimination()), &log).ok());
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0]->name, "live");
  EXPECT_EQ(g.find_value("w"), nullptr);
  EXPECT_EQ(g.find_value("d1"), nullptr);
  EXPECT_EQ(g.find_value("d2"), nullptr);
  EXPECT_NE(g.find_value("unused_in"), nullptr);  // the network's interface is the user's, not ours
  EXPECT_TRUE(log.contains(ILogger::Severity::kVERBOSE, "dead_code_elimination: removed 2 nodes"));
}

// ---------------------------------------------------------------- remove identity

TEST(RemoveIdentity, RewiresConsumers) {
  Graph g;
  Value* x = input(g, "x", {2});
  ir::Node* id = g.add_node("Identity", "id", {x}, {"x_copy"});
  ir::Node* add = g.add_node("PassTestAdd", "add", {id->outputs[0], id->outputs[0]}, {"y"});
  g.outputs().push_back(add->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_remove_identity())).ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"PassTestAdd"}));
  EXPECT_EQ(add->inputs[0], x);
  EXPECT_EQ(add->inputs[1], x);
  EXPECT_EQ(g.find_value("x_copy"), nullptr);
}

TEST(RemoveIdentity, GraphOutputKeepsItsName) {
  Graph g;
  Value* x = input(g, "x", {2});
  ir::Node* add = g.add_node("PassTestAdd", "add", {x, x}, {"sum"});
  ir::Node* other = g.add_node("PassTestAdd", "other", {add->outputs[0], x}, {"other_out"});
  ir::Node* id = g.add_node("Identity", "id", {add->outputs[0]}, {"logits"});
  g.outputs() = {id->outputs[0], other->outputs[0]};
  ASSERT_TRUE(run_passes(g, list_of(passes::make_remove_identity())).ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"PassTestAdd", "PassTestAdd"}));
  EXPECT_EQ(g.outputs()[0]->name, "logits");
  EXPECT_EQ(g.outputs()[0]->producer, add);
  EXPECT_EQ(other->inputs[0]->name, "logits");
  EXPECT_EQ(g.find_value("sum"), nullptr);
}

TEST(RemoveIdentity, KeepsCopyOfGraphInputAsOutput) {
  Graph g;
  Value* x = input(g, "x", {2});
  g.outputs().push_back(g.add_node("Identity", "id", {x}, {"x_out"})->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_remove_identity())).ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"Identity"}));
}

TEST(RemoveIdentity, ConstantThroughIdentityToOutput) {
  Graph g;
  g.outputs().push_back(g.add_node("Identity", "id", {fconst(g, "c", {4})}, {"out"})->outputs[0]);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_remove_identity())).ok());
  EXPECT_TRUE(g.nodes().empty());
  ASSERT_TRUE(g.outputs()[0]->is_constant());
  EXPECT_EQ(g.outputs()[0]->name, "out");
}

// Once inference has typed and shaped the values: a Cast to its input's own type and a Reshape to its input's own
// shape go; a Cast that changes the type and a Reshape that changes the shape stay, as does a no-op Cast the pass
// meets before inference ran (its input's type is not known yet).
TEST(RemoveIdentity, NoOpCastAndReshapeAfterInference) {
  auto make = [](Graph& g) {
    Value* x = input(g, "x", {2, 3});
    Attributes to_float, to_half;
    to_float.set("to", Attribute(int64_t{1}));
    to_half.set("to", Attribute(int64_t{10}));
    Value* same = g.add_node("Cast", "same_type", {x}, {"c1"}, to_float, 13)->outputs[0];
    Value* half = g.add_node("Cast", "to_half", {same}, {"c2"}, to_half, 13)->outputs[0];
    Value* shape23 = g.add_constant("s23", Tensor::from_vector<int64_t>({2}, {2, 3}));
    Value* shape32 = g.add_constant("s32", Tensor::from_vector<int64_t>({2}, {3, 2}));
    Value* r1 = g.add_node("Reshape", "same_shape", {half, shape23}, {"r1"}, {}, 14)->outputs[0];
    g.outputs().push_back(g.add_node("Reshape", "other_shape", {r1, shape32}, {"r2"}, {}, 14)->outputs[0]);
  };
  Graph g;
  make(g);
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference(), passes::make_remove_identity())).ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"Cast", "Reshape"}));
  EXPECT_EQ(g.outputs()[0]->name, "r2");
  Graph early;
  make(early);
  ASSERT_TRUE(run_passes(early, list_of(passes::make_remove_identity())).ok());
  EXPECT_EQ(op_types(early), (std::vector<std::string>{"Cast", "Cast", "Reshape", "Reshape"}));
}

// A Pad by zero on every side (input pads from opset 11, the attribute before) goes; one that pads stays.
TEST(RemoveIdentity, PadByNothing) {
  for (int opset : {17, 2}) {
    SCOPED_TRACE(opset);
    Graph g;
    Value* x = input(g, "x", {2, 3});
    auto pad = [&](const std::string& name, Value* in, std::vector<int64_t> pads) {
      Attributes a;
      std::vector<Value*> ins = {in};
      if (opset >= 11)
        ins.push_back(g.add_constant(name + "_pads", Tensor::from_vector<int64_t>({4}, pads)));
      else
        a.set("pads", Attribute(pads));
      return g.add_node("Pad", name, ins, {name + "_out"}, std::move(a), opset)->outputs[0];
    };
    g.outputs().push_back(pad("pads", pad("zero", x, {0, 0, 0, 0}), {0, 1, 0, 0}));
    ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference(), passes::make_remove_identity())).ok());
    EXPECT_EQ(op_types(g), (std::vector<std::string>{"Pad"}));
    EXPECT_EQ(g.nodes()[0]->inputs[0], x);
    EXPECT_EQ(ops::shape_to_string(g.outputs()[0]->shape), "[2,4]");
  }
}

TEST(RemoveIdentity, DropoutOnlyWhenMaskUnusedAndNotTraining) {
  Graph g;
  Value* x = input(g, "x", {2});
  ir::Node* d1 = g.add_node("Dropout", "drop", {x}, {"d1"});
  ir::Node* d2 = g.add_node("Dropout", "drop_mask", {d1->outputs[0]}, {"d2", "mask"});
  Value* training = g.add_constant("training", Tensor::from_vector<bool>({}, {true}));
  ir::Node* d3 = g.add_node("Dropout", "drop_train", {d2->outputs[0], fconst(g, "ratio", {0.5f}), training}, {"d3"});
  ir::Node* add = g.add_node("PassTestAdd", "add", {d3->outputs[0], x}, {"y"});
  g.outputs() = {add->outputs[0], d2->outputs[1]};
  ASSERT_TRUE(run_passes(g, list_of(passes::make_remove_identity())).ok());
  std::vector<std::string> names;
  for (auto& n : g.nodes()) names.push_back(n->name);
  EXPECT_EQ(names, (std::vector<std::string>{"drop_mask", "drop_train", "add"}));
  EXPECT_EQ(d2->inputs[0], x);
}

// ---------------------------------------------------------------- pass manager and pipeline

class BreakGraph final : public passes::Pass {
 public:
  std::string_view name() const override { return "break_graph"; }
  Status apply(Graph& g, passes::PassContext& ctx) override {
    g.set_node_input(g.nodes()[0].get(), 0, g.add_value("nowhere"));
    return Status::Ok();
  }
};

TEST(PassManager, VerifiesAfterEachPassAndNamesIt) {
  Graph g;
  Value* x = input(g, "x", {2});
  g.outputs().push_back(g.add_node("PassTestAdd", "add", {x, x}, {"y"})->outputs[0]);
  Status st = run_passes(g, list_of(std::make_unique<BreakGraph>()));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("after pass 'break_graph'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("node 'add'"), std::string::npos) << st.message();
}

TEST(PassManager, DumpsAfterNamedPassAndReportsChanges) {
  Graph g;
  Value* x = input(g, "x", {2});
  ir::Node* id = g.add_node("Identity", "id", {x}, {"t"});
  g.outputs().push_back(g.add_node("PassTestAdd", "add", {id->outputs[0], x}, {"y"})->outputs[0]);
  CaptureLogger log;
  ASSERT_TRUE(run_passes(g, passes::cpu_pipeline(), &log, "remove_identity").ok());
  EXPECT_TRUE(log.contains(ILogger::Severity::kINFO, "graph after pass 'remove_identity'"));
  EXPECT_TRUE(log.contains(ILogger::Severity::kINFO, "%y:float32[2] = PassTestAdd(%x, %x)  # add"));
  EXPECT_FALSE(log.contains(ILogger::Severity::kINFO, "graph after pass 'constant_folding'"));
  EXPECT_TRUE(log.contains(ILogger::Severity::kVERBOSE, "remove_identity"));
  EXPECT_TRUE(log.contains(ILogger::Severity::kVERBOSE, "1 changes"));

  CaptureLogger typo;
  ASSERT_TRUE(run_passes(g, passes::cpu_pipeline(), &typo, "constant_foldin").ok());
  EXPECT_TRUE(typo.contains(ILogger::Severity::kWARNING, "no pass named 'constant_foldin'"));
}

TEST(PassManager, KilnDisablePassesSkipsNamedPasses) {
  Graph g;
  Value* x = input(g, "x", {2});
  ir::Node* id = g.add_node("Identity", "id", {x}, {"t"});
  g.outputs().push_back(g.add_node("PassTestAdd", "add", {id->outputs[0], x}, {"y"})->outputs[0]);
  ASSERT_EQ(setenv("KILN_DISABLE_PASSES", "remove_identity, no_such_pass", 1), 0);
  CaptureLogger log;
  Status st = run_passes(g, list_of(passes::make_remove_identity()), &log);
  unsetenv("KILN_DISABLE_PASSES");
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(g.nodes().size(), 2u) << "the Identity stays";
  EXPECT_TRUE(log.contains(ILogger::Severity::kWARNING, "pass remove_identity disabled by KILN_DISABLE_PASSES"));
  EXPECT_TRUE(log.contains(ILogger::Severity::kWARNING, "no pass named 'no_such_pass'"));
}

TEST(Pipeline, CpuOrderAndEndToEnd) {
  passes::PassManager pm(passes::cpu_pipeline());
  EXPECT_EQ(pm.pass_names(),
            (std::vector<std::string>{"expand_gradient", "shape_inference", "remove_identity", "constant_folding",
                                      "common_subexpression_elimination", "fold_transposes", "dead_code_elimination",
                                      "shape_inference", "constant_folding", "remove_identity",
                                      "common_subexpression_elimination", "dead_code_elimination", "shape_inference"}));
  // x + Identity(c1 + c2): the constant branch folds through the identity, the dead weights disappear.
  Graph g;
  Value* x = input(g, "x", {ops::Dim::symbol("N"), 2});
  ir::Node* k = g.add_node("PassTestAdd", "k", {fconst(g, "c1", {1, 2}), fconst(g, "c2", {3, 4})}, {"k_out"});
  ir::Node* id = g.add_node("Identity", "id", {k->outputs[0]}, {"k_id"});
  g.outputs().push_back(g.add_node("PassTestAdd", "y", {x, id->outputs[0]}, {"y_out"})->outputs[0]);
  CaptureLogger log;
  ASSERT_TRUE(run_passes(g, passes::cpu_pipeline(), &log, "all").ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"PassTestAdd"}));
  EXPECT_EQ(g.values().size(), 3u);  // x, the folded constant, y_out
  EXPECT_EQ(ops::shape_to_string(g.outputs()[0]->shape), "[N,2]");
  EXPECT_TRUE(ir::verify(g).ok());
}

// A Pad whose pads come from Shape arithmetic that inference does not evaluate (Swin pads its windows so): only after
// the first folds does inference know the padded dims, and a Range over one of them (Swin's shifted-window mask
// indices) folds in the second round.
TEST(Pipeline, ShapesThatFoldingRevealsFoldToo) {
  Graph g;
  g.set_opset(17);
  Value* x = input(g, "x", {ops::Dim::symbol("N"), 5});
  auto i64 = [&](const std::string& name, std::vector<int64_t> v, std::vector<int64_t> shape) {
    return g.add_constant(name, Tensor::from_vector<int64_t>(shape, std::move(v)));
  };
  auto add = [&](const std::string& op, std::vector<Value*> in, Attributes a = {}) {
    return g
        .add_node(op, op + "_" + std::to_string(g.nodes().size()), in, {op + "_out" + std::to_string(g.nodes().size())},
                  std::move(a), 17)
        ->outputs[0];
  };
  Attributes axis0;
  axis0.set("axis", Attribute(int64_t{0}));
  Value* width = add("Gather", {add("Shape", {x}), i64("one", {1}, {})}, axis0);  // 5, known from x's dims
  // Swin's (window - width % window) % window: inference does not evaluate Mod, folding does.
  Value* extra = add("Mod", {add("Sub", {i64("eight", {8}, {}), width}), i64("eight_again", {8}, {})});  // 3
  Value* pads = add("Concat", {i64("zeros", {0, 0, 0}, {3}), add("Unsqueeze", {extra, i64("ax", {0}, {1})})}, axis0);
  Value* y = add("Pad", {x, pads});                                                 // [N, 8]
  Value* n = add("Gather", {add("Shape", {y}), i64("one_again", {1}, {})}, axis0);  // 8: known only now
  Attributes to_float;
  to_float.set("to", Attribute(int64_t{1}));
  Value* r = add("Cast", {add("Range", {i64("from", {0}, {}), n, i64("step", {1}, {})})}, to_float);
  g.outputs().push_back(add("Add", {y, r}));
  auto reference = g.clone();
  ASSERT_TRUE(run_passes(g, passes::cpu_pipeline()).ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"Pad", "Add"}));
  EXPECT_EQ(ops::shape_to_string(g.outputs()[0]->shape), "[N,8]");
  Tensor in = test::random_f32({3, 5}, 7);
  auto want = test::run_reference(*reference, {in}), got = test::run_reference(g, {in});
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  test::expect_close(got[0], want[0], 0);
}

// ---------------------------------------------------------------- network definition

TEST(Network, InputsGetSymbolicDimsAndOpsInferImmediately) {
  NetworkDefinition net;
  ITensor* x = net.add_input("x", DataType::kFLOAT, {-1, 8});
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->dims(), (Dims{-1, 8}));
  EXPECT_EQ(ops::shape_to_string(net.graph().inputs()[0]->shape), "[x_d0,8]");
  std::vector<float> bias(8, 1.f);
  ITensor* b = net.add_constant("b", DataType::kFLOAT, {8}, bias.data());
  auto y = net.add_op("PassTestAdd", {x, b}, {}, 1, "add");
  ASSERT_EQ(y.size(), 1u);
  EXPECT_EQ(y[0]->dims(), (Dims{-1, 8}));
  EXPECT_EQ(y[0]->name(), "add_out");
  EXPECT_TRUE(net.mark_output(y[0]).ok());
  EXPECT_FALSE(net.mark_output(y[0]).ok());
  EXPECT_EQ(net.num_inputs(), 1);
  EXPECT_EQ(net.num_outputs(), 1);
  EXPECT_EQ(net.num_layers(), 1);
  EXPECT_EQ(net.find_tensor("add_out"), y[0]);
  EXPECT_EQ(net.get_output(0), y[0]);
  EXPECT_EQ(net.get_input(1), nullptr);
  EXPECT_TRUE(ir::verify(net.graph()).ok());
}

TEST(Network, SetDimsReinfersDownstreamLayers) {
  NetworkDefinition net;
  ITensor* x = net.add_input("x", DataType::kFLOAT, {4, 8});
  auto y = net.add_op("PassTestAdd", {x, x});
  auto z = net.add_op("PassTestUnknown", y);
  ASSERT_EQ(z.size(), 1u);
  EXPECT_EQ(y[0]->dims(), (Dims{4, 8}));
  x->set_dims({-1, 8});
  EXPECT_EQ(y[0]->dims(), (Dims{-1, 8}));
  EXPECT_EQ(ops::shape_to_string(net.graph().find_value(y[0]->name())->shape), "[x_d0,8]");
  x->set_dims({2, 8});
  EXPECT_EQ(y[0]->dims(), (Dims{2, 8}));
  EXPECT_EQ(z[0]->dims(), (Dims{-1, 8}));
  y[0]->set_dims({1, 1});  // not an input: ignored
  EXPECT_EQ(y[0]->dims(), (Dims{2, 8}));
  ASSERT_TRUE(net.mark_output(z[0]).ok());
  Graph& g = net.graph();
  ASSERT_TRUE(run_passes(g, list_of(passes::make_shape_inference())).ok());
}

TEST(Network, ErrorsLeaveNetworkUnchanged) {
  NetworkDefinition net;
  ITensor* x = net.add_input("x", DataType::kFLOAT, {3});
  ITensor* y = net.add_input("y", DataType::kFLOAT, {4});
  EXPECT_EQ(net.add_input("x", DataType::kFLOAT, {1}), nullptr);
  EXPECT_NE(net.last_error().message().find("already exists"), std::string::npos);

  EXPECT_TRUE(net.add_op("NoSuchOp", {x}).empty());
  EXPECT_NE(net.last_error().message().find("'NoSuchOp' is not registered"), std::string::npos);

  EXPECT_TRUE(net.add_op("PassTestAdd", {x}).empty());
  EXPECT_NE(net.last_error().message().find("inputs, got 1"), std::string::npos) << net.last_error().message();

  EXPECT_TRUE(net.add_op("PassTestAdd", {x, x}, {{"bogus", int64_t{1}}}).empty());
  EXPECT_NE(net.last_error().message().find("unknown attribute 'bogus'"), std::string::npos);

  size_t values = net.graph().values().size();
  EXPECT_TRUE(net.add_op("PassTestAdd", {x, y}, {}, 1, "mismatch").empty());  // [3] + [4] cannot broadcast
  EXPECT_NE(net.last_error().message().find("node 'mismatch'"), std::string::npos) << net.last_error().message();
  EXPECT_EQ(net.num_layers(), 0);
  EXPECT_EQ(net.graph().values().size(), values);

  NetworkDefinition other;
  ITensor* foreign = other.add_input("f", DataType::kFLOAT, {3});
  EXPECT_TRUE(net.add_op("PassTestAdd", {x, foreign}).empty());
  EXPECT_FALSE(net.mark_output(foreign).ok());
}

TEST(Network, ConvenienceLayersReportMissingOps) {
  // The real operators arrive from other branches; until then the conveniences must fail cleanly.
  NetworkDefinition net;
  ITensor* x = net.add_input("x", DataType::kFLOAT, {1, 2, 4, 4});
  std::vector<float> w(3 * 2 * 3 * 3, 0.f), bias(3, 0.f);
  ITensor* c = net.add_convolution(x, 3, {3, 3}, w, bias, {1, 1}, {1, 1});
  if (!ops::OpRegistry::instance().find("Conv")) {
    EXPECT_EQ(c, nullptr);
    EXPECT_NE(net.last_error().message().find("'Conv' is not registered"), std::string::npos);
  } else {
    ASSERT_NE(c, nullptr) << net.last_error().to_string();
    EXPECT_EQ(c->dims(), (Dims{1, 3, 4, 4}));
  }
  EXPECT_EQ(net.add_convolution(x, 3, {3, 3}, std::vector<float>(5), bias), nullptr);
  EXPECT_NE(net.last_error().message().find("expected 54 weights"), std::string::npos);
}

TEST(Network, ReshapeAndConcatConveniences) {
  auto& reg = ops::OpRegistry::instance();
  ASSERT_TRUE(reg.find("Reshape") && reg.find("Concat")) << "Reshape/Concat are not registered";
  NetworkDefinition net;
  ITensor* x = net.add_input("x", DataType::kFLOAT, {-1, 2, 3});
  ITensor* r = net.add_reshape(x, {0, 6});
  ASSERT_NE(r, nullptr) << net.last_error().to_string();
  EXPECT_EQ(r->dims(), (Dims{-1, 6}));
  ITensor* c = net.add_concatenation({r, r}, 1);
  ASSERT_NE(c, nullptr) << net.last_error().to_string();
  EXPECT_EQ(c->dims(), (Dims{-1, 12}));
  EXPECT_EQ(net.add_concatenation({r, x}, 1), nullptr);  // rank 2 with rank 3
  EXPECT_TRUE(ir::verify(net.graph()).ok());
}

TEST(Pipeline, FoldsShapeArithmeticOfStaticInputs) {
  auto& reg = ops::OpRegistry::instance();
  ASSERT_TRUE(reg.find("Shape") && reg.find("Reshape")) << "Shape/Reshape are not registered";
  // Reshape(x, Shape(w)) with static shapes: the target becomes a constant and the Shape node disappears.
  Graph g;
  Value* x = input(g, "x", {2, 6});
  Value* w = input(g, "w", {3, 4});
  ir::Node* s = g.add_node("Shape", "shape", {w}, {"w_shape"});
  ir::Node* r = g.add_node("Reshape", "reshape", {x, s->outputs[0]}, {"y"});
  g.outputs().push_back(r->outputs[0]);
  ASSERT_TRUE(run_passes(g, passes::cpu_pipeline()).ok());
  EXPECT_EQ(op_types(g), (std::vector<std::string>{"Reshape"}));
  ASSERT_TRUE(r->inputs[1]->is_constant());
  EXPECT_EQ(r->inputs[1]->constant->to_i64_vector(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(ops::shape_to_string(g.outputs()[0]->shape), "[3,4]");
}

TEST(Network, EveryConvenienceWithRealOps) {
  auto& reg = ops::OpRegistry::instance();
  for (const char* op : {"Conv", "Relu", "MaxPool", "Reshape", "MatMul", "Softmax", "ReduceMean", "ReduceSum", "Add",
                         "Clip", "Gelu", "Sigmoid", "Mul", "Concat"})
    ASSERT_NE(reg.find(op), nullptr) << op << " is not registered";
  NetworkDefinition net;
  ITensor* x = net.add_input("x", DataType::kFLOAT, {-1, 2, 4, 4});
  ITensor* c = net.add_convolution(x, 3, {3, 3}, std::vector<float>(54, 0.1f), {0.f, 1.f, 2.f}, {1, 1}, {1, 1});
  ASSERT_NE(c, nullptr) << net.last_error().to_string();
  EXPECT_EQ(c->dims(), (Dims{-1, 3, 4, 4}));
  ITensor* p = net.add_pooling(net.add_activation(c, ActivationType::kRELU), PoolingType::kMAX, {2, 2}, {2, 2});
  ASSERT_NE(p, nullptr) << net.last_error().to_string();
  EXPECT_EQ(p->dims(), (Dims{-1, 3, 2, 2}));
  ITensor* r = net.add_reshape(p, {-1, 12});
  ASSERT_NE(r, nullptr) << net.last_error().to_string();
  std::vector<float> w(12 * 5, 0.5f);
  ITensor* m = net.add_matrix_multiply(r, net.add_constant("fc_w", DataType::kFLOAT, {12, 5}, w.data()));
  ASSERT_NE(m, nullptr) << net.last_error().to_string();
  EXPECT_EQ(m->dims(), (Dims{-1, 5}));
  ITensor* act = m;
  for (auto t : {ActivationType::kGELU_ERF, ActivationType::kSILU, ActivationType::kCLIP})
    act = net.add_activation(act, t, -1.f, 1.f);
  ASSERT_NE(act, nullptr) << net.last_error().to_string();
  ITensor* sm = net.add_softmax(act, 1);
  ITensor* mean = net.add_reduce(sm, ReduceOperation::kMEAN, {1}, true);
  ITensor* sum = net.add_reduce(sm, ReduceOperation::kSUM, {1}, true);
  ASSERT_NE(mean, nullptr) << net.last_error().to_string();
  ASSERT_NE(sum, nullptr) << net.last_error().to_string();
  EXPECT_EQ(sum->dims(), (Dims{-1, 1}));
  ITensor* out = net.add_concatenation({net.add_elementwise(mean, sum, ElementWiseOperation::kSUM), sm}, 1);
  ASSERT_NE(out, nullptr) << net.last_error().to_string();
  EXPECT_EQ(out->dims(), (Dims{-1, 6}));
  ASSERT_TRUE(net.mark_output(out).ok());
  ASSERT_TRUE(ir::verify(net.graph()).ok()) << ir::verify(net.graph()).message();

  auto g = net.graph().clone();
  ASSERT_TRUE(run_passes(*g, passes::cpu_pipeline()).ok());
  EXPECT_EQ(g->nodes().size(), net.graph().nodes().size());  // nothing constant to fold here
  EXPECT_EQ(ops::shape_to_string(g->outputs()[0]->shape), "[x_d0,6]");
}

TEST(ConstantFolding, RealOpsFoldThroughChains) {
  auto& reg = ops::OpRegistry::instance();
  ASSERT_TRUE(reg.find("Add") && reg.find("Mul")) << "Add/Mul are not registered";
  Graph g;
  Value* x = input(g, "x", {2});
  ir::Node* a = g.add_node("Add", "a", {fconst(g, "c1", {1, 2}), fconst(g, "c2", {3, 4})}, {"a_out"});
  ir::Node* m = g.add_node("Mul", "m", {a->outputs[0], fconst(g, "c3", {2, 2})}, {"m_out"});
  g.outputs().push_back(g.add_node("Add", "y", {x, m->outputs[0]}, {"y_out"})->outputs[0]);
  ASSERT_TRUE(run_passes(g, passes::cpu_pipeline()).ok());
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0]->inputs[1]->constant->to_f64_vector(), (std::vector<double>{8, 12}));
}

// ---------------------------------------------------------------- builder

TEST(OptimizationProfile, ValidatesRanksAndOrder) {
  OptimizationProfile p;
  EXPECT_TRUE(p.set_shape("x", {1, 3}, {4, 3}, {8, 3}).ok());
  Status rank = p.set_shape("x", {1, 3}, {4}, {8, 3});
  EXPECT_FALSE(rank.ok());
  EXPECT_NE(rank.message().find("same rank"), std::string::npos);
  Status order = p.set_shape("x", {1, 3}, {9, 3}, {8, 3});
  ASSERT_FALSE(order.ok());
  EXPECT_NE(order.message().find("dim 0 needs min <= opt <= max, got 1 / 9 / 8"), std::string::npos)
      << order.message();
  EXPECT_FALSE(p.set_shape("x", {-1, 3}, {1, 3}, {1, 3}).ok());
  EXPECT_TRUE(p.has("x"));
}

TEST(Builder, DynamicInputsNeedProfiles) {
  CaptureLogger log;
  Builder builder(log);
  auto net = builder.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {-1, 2});
  ITensor* y = net->add_input("y", DataType::kFLOAT, {-1, 2});
  auto s = net->add_op("PassTestAdd", {x, y});
  ASSERT_EQ(s.size(), 1u);
  ASSERT_TRUE(net->mark_output(s[0]).ok());

  auto config = builder.create_builder_config();
  auto r = builder.build_serialized_network(*net, *config);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'x', 'y'"), std::string::npos) << r.status().message();

  OptimizationProfile p;
  ASSERT_TRUE(p.set_shape("x", {1, 2}, {2, 2}, {4, 2}).ok());
  config->add_optimization_profile(p);
  r = builder.build_serialized_network(*net, *config);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("profile 0 lacks min/opt/max shapes for dynamic inputs 'y'"), std::string::npos)
      << r.status().message();

  auto config2 = builder.create_builder_config();
  OptimizationProfile q;
  ASSERT_TRUE(q.set_shape("x", {1, 2}, {2, 2}, {4, 2}).ok());
  ASSERT_TRUE(q.set_shape("y", {1, 3}, {2, 3}, {4, 3}).ok());
  config2->add_optimization_profile(q);
  r = builder.build_serialized_network(*net, *config2);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("input 'y' dim 1 is static 2"), std::string::npos) << r.status().message();

  auto config3 = builder.create_builder_config();
  OptimizationProfile z;
  ASSERT_TRUE(z.set_shape("zzz", {1}, {1}, {1}).ok());
  ASSERT_TRUE(z.set_shape("x", {1, 2}, {2, 2}, {4, 2}).ok());
  ASSERT_TRUE(z.set_shape("y", {1, 2}, {2, 2}, {4, 2}).ok());
  config3->add_optimization_profile(z);
  r = builder.build_serialized_network(*net, *config3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'zzz', which is not a network input"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(net->num_layers(), 1);  // building never edits the user's network
}

TEST(Builder, NetworkWithoutOutputsIsAnError) {
  CaptureLogger log;
  Builder builder(log);
  auto net = builder.create_network();
  net->add_input("x", DataType::kFLOAT, {2});
  auto r = builder.build_serialized_network(*net, *builder.create_builder_config());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no outputs"), std::string::npos);
}

}  // namespace
