// concat_elimination: which Concats the pass marks "kiln.inplace" (graph before/after, negative cases), that the mark
// survives the engine file and the CPU reference ignores it, that the CUDA pipeline marks a concat of fused
// producers; and the runtime's in-place decision (runtime/concat_inplace.h) at concrete shapes, on the CPU.
#include <gtest/gtest.h>

#include <map>

#include "concat_test_graphs.h"
#include "engine_io_util.h"
#include "runtime/shape_resolver.h"

using namespace kiln;
using namespace kiln::test;

namespace {

bool concat_marked(const ir::Graph& g, const std::string& name = "concat") {
  const ir::Node* n = node_named(g, name);
  EXPECT_NE(n, nullptr) << name;
  return n && marked_in_place(n->attrs);
}

// Marks the net's concats; checks that the pass changed nothing but the annotation and that the reference
// results are those of the graph before it.
void expect_only_annotated(ConcatNet& net) {
  SCOPED_TRACE(net.what);
  auto before = net.g->clone();
  ASSERT_TRUE(mark_concats(*net.g).ok());
  ASSERT_EQ(net.g->nodes().size(), before->nodes().size());
  for (size_t i = 0; i < net.g->nodes().size(); ++i) {
    const ir::Node& a = *before->nodes()[i];
    const ir::Node& b = *net.g->nodes()[i];
    EXPECT_EQ(a.name, b.name);
    ASSERT_EQ(a.inputs.size(), b.inputs.size());
    for (size_t k = 0; k < a.inputs.size(); ++k) EXPECT_EQ(a.inputs[k]->name, b.inputs[k]->name);
    EXPECT_EQ(marked_in_place(b.attrs), b.op_type == "Concat") << b.name;
    // The annotation is the only new attribute.
    EXPECT_EQ(b.attrs.map().size(), a.attrs.map().size() + (b.op_type == "Concat" ? 1 : 0)) << b.name;
  }
  auto want = run_reference(*before, net.inputs);
  auto got = run_reference(*net.g, net.inputs);
  ASSERT_EQ(want.size(), got.size());
  for (size_t k = 0; k < want.size(); ++k) expect_close(got[k], want[k], 0);
}

TEST(ConcatElimination, MarksConcatsOfComputedProducers) {
  for (int64_t axis : {0, 1}) {
    auto a = relu_matmul(DataType::kFLOAT, 1, axis, true);
    expect_only_annotated(a);
    auto b = three_producers(DataType::kFLOAT, 2, axis);
    expect_only_annotated(b);
    auto c = conv_relu(DataType::kFLOAT, 2, axis);
    expect_only_annotated(c);
    auto d = read_after(DataType::kFLOAT, 1, axis);  // a read again after the concat: still in place
    expect_only_annotated(d);
    auto e = alias_of_input(DataType::kFLOAT, 1, axis);  // a Reshape of an input elsewhere: still in place
    expect_only_annotated(e);
    auto f = nested_read_elsewhere(DataType::kFLOAT, 2, axis);  // a concat of a concat: both
    expect_only_annotated(f);
  }
  for (int levels : {2, 3}) {
    auto d = dense_block(DataType::kFLOAT, 2, levels);
    expect_only_annotated(d);
  }
  auto i = inner_only(DataType::kFLOAT, 1);
  expect_only_annotated(i);
}

TEST(ConcatElimination, LeavesReshapedInputsAndGraphInputsAndConstants) {
  auto r = reshaped_inputs(DataType::kFLOAT, 1, 1);
  ASSERT_TRUE(mark_concats(*r.g).ok());
  EXPECT_FALSE(concat_marked(*r.g)) << "Reshape outputs are their input's bytes";

  // Every alias-like producer, and a graph input, and a constant, each next to a Relu: [1,128] + [1,128].
  auto axes = [](ir::Graph& g, const std::string& name) {
    return g.add_constant(name, Tensor::from_vector<int64_t>({1}, {0}));
  };
  for (const std::string op : {"Flatten", "Squeeze", "Unsqueeze", "Identity", "Input", "Constant"}) {
    SCOPED_TRACE(op);
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 128});
    ir::Value* a = add_op(g, "Relu", "relu", {x});
    ir::Value* b = nullptr;
    if (op == "Flatten") {  // [1,1,128] -> [1,128]
      Attributes fa;
      fa.set("axis", int64_t{1});
      b = add_op(g, "Flatten", "flatten", {add_op(g, "Sigmoid", "sigmoid", {graph_input(g, "x3", {1, 1, 128})})}, fa);
    } else if (op == "Squeeze") {  // [1,1,128] without axis 0 -> [1,128]
      b = add_op(g, "Squeeze", "squeeze",
                 {add_op(g, "Sigmoid", "sigmoid", {graph_input(g, "x3", {1, 1, 128})}), axes(g, "a")});
    } else if (op == "Unsqueeze") {  // [128] -> [1,128]
      b = add_op(g, "Unsqueeze", "unsqueeze",
                 {add_op(g, "Sigmoid", "sigmoid", {graph_input(g, "x1", {128})}), axes(g, "a")});
    } else if (op == "Identity") {
      b = add_op(g, "Identity", "identity", {add_op(g, "Sigmoid", "sigmoid", {x})});
    } else if (op == "Input") {
      b = graph_input(g, "x2", {1, 128});
    } else {
      b = g.add_constant("c", random_f32({1, 128}, 5));
    }
    g.outputs().push_back(add_concat(g, {a, b}, 1));
    Status st = run_passes(g, {});
    ASSERT_TRUE(st.ok()) << st.message() << ir::print(g);
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_FALSE(concat_marked(g)) << ir::print(g);
  }
}

TEST(ConcatElimination, LeavesDuplicatesGraphOutputsAndSharedInputs) {
  {  // the same value twice
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 128});
    ir::Value* a = add_op(g, "Relu", "relu", {x});
    g.outputs().push_back(add_concat(g, {a, a}, 1));
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_FALSE(concat_marked(g));
  }
  {  // an input that is a graph output lives in the caller's buffer
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 128});
    ir::Value* a = add_op(g, "Relu", "relu", {x});
    ir::Value* b = add_op(g, "Sigmoid", "sigmoid", {x});
    g.outputs().push_back(add_concat(g, {a, b}, 1));
    g.outputs().push_back(b);
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_FALSE(concat_marked(g));
  }
  {  // a value read by two concats has one place: the first concat takes it, the second copies; a third concat
     // of other values is marked, and so is one that reads a marked concat's output (nesting)
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 128});
    ir::Value* a = add_op(g, "Relu", "relu", {x});
    ir::Value* b = add_op(g, "Sigmoid", "sigmoid", {x});
    ir::Value* c = add_op(g, "Neg", "neg", {x});
    ir::Value* d = add_op(g, "Abs", "abs", {x});
    ir::Value* c1 = add_concat(g, {a, b}, 1, "concat1");
    ir::Value* c2 = add_concat(g, {c, a}, 1, "concat2");
    ir::Value* c3 = add_concat(g, {c, d}, 1, "concat3");
    ir::Value* c4 = add_concat(g, {c1, add_op(g, "Relu", "relu4", {x})}, 1, "concat4");
    for (ir::Value* v : {c2, c3, c4}) g.outputs().push_back(v);
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_TRUE(concat_marked(g, "concat1"));
    EXPECT_FALSE(concat_marked(g, "concat2"));
    EXPECT_TRUE(concat_marked(g, "concat3"));
    EXPECT_TRUE(concat_marked(g, "concat4"));
    // Marking again changes nothing (the marked concats' inputs keep their place).
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_FALSE(concat_marked(g, "concat2"));
  }
  {  // an inner concat read by two outer ones is a slice of the first only; one that is a graph output lives in
     // the caller's buffer and is a slice of none
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 128});
    ir::Value* inner = add_concat(g, {add_op(g, "Relu", "relu", {x}), add_op(g, "Sigmoid", "sigmoid", {x})}, 1,
                                  "inner");
    ir::Value* o1 = add_concat(g, {inner, add_op(g, "Neg", "neg", {x})}, 1, "outer1");
    ir::Value* o2 = add_concat(g, {add_op(g, "Abs", "abs", {x}), inner}, 1, "outer2");
    ir::Value* io = add_concat(g, {add_op(g, "Relu", "relu_b", {x}), add_op(g, "Neg", "neg_b", {x})}, 1, "inner_out");
    ir::Value* o3 = add_concat(g, {io, add_op(g, "Abs", "abs_b", {x})}, 1, "outer3");
    for (ir::Value* v : {o1, o2, io, o3}) g.outputs().push_back(v);
    ASSERT_TRUE(run_passes(g, {}).ok());
    auto count = [&] {
      int k = 0;
      for (const char* name : {"inner", "outer1", "outer2", "inner_out", "outer3"}) k += concat_marked(g, name);
      return k;
    };
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_TRUE(concat_marked(g, "inner"));
    EXPECT_NE(concat_marked(g, "outer1"), concat_marked(g, "outer2")) << "exactly one outer concat takes it";
    EXPECT_TRUE(concat_marked(g, "inner_out"));
    EXPECT_FALSE(concat_marked(g, "outer3"));
    EXPECT_EQ(count(), 3);
    // Marking again (the marked ones first collected, wherever they sit) marks nothing more.
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_EQ(count(), 3);
  }
  {  // a concat whose input another (unmarked) concat writes: that concat's copy kernel writes the slice
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {1, 128});
    ir::Value* c1 = add_concat(g, {x, add_op(g, "Relu", "relu", {x})}, 1, "concat1");  // reads a graph input
    ir::Value* c2 = add_concat(g, {c1, add_op(g, "Sigmoid", "sigmoid", {x})}, 1, "concat2");
    g.outputs().push_back(c2);
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(mark_concats(g).ok());
    EXPECT_FALSE(concat_marked(g, "concat1"));
    EXPECT_TRUE(concat_marked(g, "concat2"));
  }
}

TEST(ConcatElimination, LeavesProducersWithoutADeviceKernelAndShapeConcats) {
  auto net = relu_matmul(DataType::kFLOAT, 1, 1, false);
  passes::PassOptions o;
  o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "MatMul"; };
  ASSERT_TRUE(mark_concats(*net.g, o).ok());
  EXPECT_FALSE(concat_marked(*net.g)) << "MatMul would run on the host";
  o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "Concat"; };
  ASSERT_TRUE(mark_concats(*net.g, o).ok());
  EXPECT_FALSE(concat_marked(*net.g)) << "the Concat itself would run on the host";

  // Shape(a) ++ Shape(b): values inference knows, resolved on the host and never launched.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 128});
  ir::Value* s1 = add_op(g, "Shape", "shape1", {add_op(g, "Relu", "relu", {x})});
  ir::Value* s2 = add_op(g, "Shape", "shape2", {add_op(g, "Sigmoid", "sigmoid", {x})});
  g.outputs().push_back(add_concat(g, {s1, s2}, 0));
  ASSERT_TRUE(run_passes(g, {}).ok());
  ASSERT_TRUE(mark_concats(g).ok());
  EXPECT_FALSE(concat_marked(g));
}

TEST(ConcatElimination, CudaPipelineMarksAConcatOfFusedProducers) {
  // Relu and MatMul + bias Add become Pointwise / FusedMatMul nodes first; the concat of their outputs is marked.
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {1, 128});
  ir::Value* a = add_op(g, "Relu", "relu", {add_op(g, "Neg", "neg", {x})});
  ir::Value* m = add_op(g, "MatMul", "matmul", {x, add_weight(g, "w", {128, 128}, DataType::kFLOAT, 1, 0.1)});
  ir::Value* mb = add_op(g, "Add", "bias", {m, add_weight(g, "b", {128}, DataType::kFLOAT, 2, 0.5)});
  g.outputs().push_back(add_op(g, "Sigmoid", "sigmoid", {add_concat(g, {a, mb}, 1)}));
  ASSERT_TRUE(run_cuda_pipeline(g).ok());
  const ir::Node* c = find_op(g, "Concat");
  ASSERT_NE(c, nullptr) << ir::print(g);
  EXPECT_TRUE(marked_in_place(c->attrs)) << ir::print(g);
  for (const ir::Value* v : c->inputs) {
    ASSERT_NE(v->producer, nullptr);
    EXPECT_NE(v->producer->op_type, "Relu") << "fused before the mark: " << ir::print(g);
  }
}

TEST(ConcatElimination, CudaPipelineMarksNestedConcatsOfFusedConvs) {
  // Conv + Relu fuse first; every level of the dense block is still marked.
  auto net = dense_block(DataType::kFLOAT, 1, 3);
  ASSERT_TRUE(run_cuda_pipeline(*net.g).ok());
  int concats = 0;
  for (const auto& n : net.g->nodes()) {
    if (n->op_type != "Concat") continue;
    ++concats;
    EXPECT_TRUE(marked_in_place(n->attrs)) << n->name << "\n" << ir::print(*net.g);
  }
  EXPECT_EQ(concats, 3) << ir::print(*net.g);
}

TEST(ConcatElimination, MarkSurvivesTheEngineAndTheCpuBackendIgnoresIt) {
  auto net = three_producers(DataType::kFLOAT, 1, 1);
  auto before = net.g->clone();
  ASSERT_TRUE(mark_concats(*net.g).ok());
  auto engine = load_engine(builder::write_engine(*net.g, BuilderConfig()));
  ASSERT_TRUE(engine);
  const runtime::EnginePlan& plan = engine->plan();
  int marked = 0;
  for (const auto& n : plan.nodes) marked += n.op_type == "Concat" && marked_in_place(n.attrs);
  EXPECT_EQ(marked, 1);
  auto got = infer(*engine, {{"x", net.inputs[0]}});
  auto want = run_reference(*before, net.inputs);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(want.size(), 1u);
  expect_close(got[0], want[0], 0);
}

// --- The runtime's decision at concrete shapes (runtime::plan_inplace_concats), on a CPU engine's plan, with
// the CUDA context's view of which layers write on the device: every layer but the alias ops.

std::vector<runtime::InPlaceConcat> decide(const runtime::EnginePlan& plan, const std::vector<Dims>& input_dims) {
  auto info = runtime::resolve_shapes(plan, input_dims);
  EXPECT_TRUE(info.ok()) << info.status().message();
  if (!info.ok()) return {};
  std::vector<Dims> dims(plan.values.size());
  std::vector<bool> host_known(plan.values.size(), false), device_writer(plan.nodes.size(), false);
  for (size_t v = 0; v < plan.values.size(); ++v) {
    dims[v] = ops::static_dims((*info)[v].shape);
    host_known[v] = !plan.values[v].constant.defined() && runtime::host_known((*info)[v]);
  }
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const std::string& op = plan.nodes[i].op_type;
    device_writer[i] = op != "Reshape" && op != "Flatten" && op != "Squeeze" && op != "Unsqueeze" && op != "Identity";
  }
  return runtime::plan_inplace_concats(plan, dims, device_writer, host_known);
}

std::unique_ptr<Engine> marked_engine(ConcatNet& net, bool mark = true) {
  if (mark) { EXPECT_TRUE(mark_concats(*net.g).ok()); }
  return load_engine(builder::write_engine(*net.g, BuilderConfig()));
}

int value_id(const runtime::EnginePlan& plan, const std::string& name) {
  for (size_t v = 0; v < plan.values.size(); ++v)
    if (plan.values[v].name == name) return static_cast<int>(v);
  ADD_FAILURE() << "no value " << name;
  return -1;
}

TEST(ConcatInPlacePlan, ContiguousSlicesAtBatchOneOrAxisZero) {
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
    const uint64_t es = dtype_size(dt);
    // Channel concat at batch 1: in place, the MatMul's slice after the Relu's 128 elements.
    auto net = three_producers(dt, 1, 1);
    auto e = marked_engine(net);
    ASSERT_TRUE(e);
    const auto& plan = e->plan();
    auto r = decide(plan, {{1, 128}});
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(plan.nodes[r[0].node].name, "concat");
    EXPECT_EQ(r[0].output, value_id(plan, "concat_out"));
    EXPECT_EQ(plan.nodes[r[0].first_writer].name, "relu");
    ASSERT_EQ(r[0].slices.size(), 3u);
    const char* names[] = {"relu_out", "matmul_out", "gemm_out"};
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(r[0].slices[k].first, value_id(plan, names[k]));
      EXPECT_EQ(r[0].slices[k].second, static_cast<uint64_t>(k) * 128 * es);
    }
    // Along axis 0 at batch 3: each input's rows follow the previous input's.
    auto net0 = relu_matmul(dt, 3, 0, true);
    auto e0 = marked_engine(net0);
    ASSERT_TRUE(e0);
    auto r0 = decide(e0->plan(), {{3, 128}});
    ASSERT_EQ(r0.size(), 1u);
    ASSERT_EQ(r0[0].slices.size(), 2u);
    EXPECT_EQ(r0[0].slices[1].second, 3 * 128 * es);
    // Axis -1 is axis 1.
    auto neg = relu_matmul(dt, 1, -1, false);
    auto en = marked_engine(neg);
    ASSERT_TRUE(en);
    EXPECT_EQ(decide(en->plan(), {{1, 128}}).size(), 1u);
  }
}

TEST(ConcatInPlacePlan, CopiesWhereSlicesAreNotContiguousOrAligned) {
  // Channel concat at batch 2: each input is two strided pieces of the output.
  auto net = three_producers(DataType::kFLOAT, 2, 1);
  auto e = marked_engine(net);
  ASSERT_TRUE(e);
  EXPECT_TRUE(decide(e->plan(), {{2, 128}}).empty());
  auto conv = conv_relu(DataType::kHALF, 2, 1);
  auto ec = marked_engine(conv);
  ASSERT_TRUE(ec);
  EXPECT_TRUE(decide(ec->plan(), {{2, 8, 8, 8}}).empty());
  EXPECT_EQ(decide(ec->plan(), {{1, 8, 8, 8}}).size(), 1u) << "the same concat at batch 1";
  // The second slice would start 3 floats in: not at a 256-byte boundary.
  ConcatNet odd;
  ir::Graph& g = *odd.g;
  ir::Value* x = graph_input(g, "x", {1, 3});
  g.outputs().push_back(add_concat(g, {add_op(g, "Relu", "relu", {x}), add_op(g, "Sigmoid", "sigmoid", {x})}, 1));
  finish(odd, "unaligned");
  auto eo = marked_engine(odd);
  ASSERT_TRUE(eo);
  EXPECT_TRUE(decide(eo->plan(), {{1, 3}}).empty());
  // Unmarked: never.
  auto plain = three_producers(DataType::kFLOAT, 1, 1);
  auto ep = marked_engine(plain, false);
  ASSERT_TRUE(ep);
  EXPECT_TRUE(decide(ep->plan(), {{1, 128}}).empty());
}

TEST(ConcatInPlacePlan, RechecksTheStructureOfHandMarkedConcats) {
  // Marked by hand, past the pass: Reshape inputs (not device writers) and a graph input are refused at run time.
  auto r = reshaped_inputs(DataType::kFLOAT, 1, 1);
  for (auto& n : r.g->nodes())
    if (n->op_type == "Concat") n->attrs.set(runtime::kInPlaceAttr, Attribute(int64_t{1}));
  auto e = marked_engine(r, false);
  ASSERT_TRUE(e);
  EXPECT_TRUE(decide(e->plan(), {{1, 128}}).empty());

  ConcatNet in;
  ir::Graph& g = *in.g;
  ir::Value* x = graph_input(g, "x", {1, 128});
  Attributes a;
  a.set("axis", int64_t{1});
  a.set(runtime::kInPlaceAttr, int64_t{1});
  g.outputs().push_back(add_op(g, "Concat", "concat", {x, add_op(g, "Relu", "relu", {x})}, a));
  finish(in, "graph input");
  auto ei = marked_engine(in, false);
  ASSERT_TRUE(ei);
  EXPECT_TRUE(decide(ei->plan(), {{1, 128}}).empty());
}

TEST(ConcatInPlacePlan, AnInputHasOnePlace) {
  // Two hand-marked concats share an input: the first is eliminated, the second copies.
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {1, 128});
  ir::Value* a = add_op(g, "Relu", "relu", {x});
  ir::Value* b = add_op(g, "Sigmoid", "sigmoid", {x});
  Attributes at;
  at.set("axis", int64_t{1});
  at.set(runtime::kInPlaceAttr, int64_t{1});
  g.outputs().push_back(add_op(g, "Concat", "concat1", {a, b}, at));
  g.outputs().push_back(add_op(g, "Concat", "concat2", {b, add_op(g, "Neg", "neg", {x})}, at));
  finish(net, "shared input");
  auto e = marked_engine(net, false);
  ASSERT_TRUE(e);
  auto r = decide(e->plan(), {{1, 128}});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(e->plan().nodes[r[0].node].name, "concat1");
}

// --- Nesting: a concat's output as a slice of another eliminated concat.

const runtime::InPlaceConcat* decided(const runtime::EnginePlan& plan, const std::vector<runtime::InPlaceConcat>& r,
                                      const std::string& name) {
  for (const auto& c : r)
    if (plan.nodes[c.node].name == name) return &c;
  return nullptr;
}

// Every value placed in root `root`, with its byte offset there: the slices of each concat nested in it, at the
// concat's root_offset plus the slice's own offset.
std::map<std::string, uint64_t> placed_in(const runtime::EnginePlan& plan, const std::vector<runtime::InPlaceConcat>& r,
                                          int root) {
  std::map<std::string, uint64_t> m;
  for (const auto& c : r)
    if (c.root == root)
      for (const auto& [v, offset] : c.slices) m[plan.values[v].name] = c.root_offset + offset;
  return m;
}

TEST(ConcatInPlacePlan, NestedTwoAndThreeLevels) {
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
    SCOPED_TRACE(dtype_name(dt));
    const uint64_t ch = 8 * 8 * dtype_size(dt);  // one channel of [1,C,8,8]
    {
      auto net = dense_block(dt, 1, 2);
      auto e = marked_engine(net);
      ASSERT_TRUE(e);
      const auto& plan = e->plan();
      auto r = decide(plan, {{1, 8, 8, 8}});
      ASSERT_EQ(r.size(), 2u);
      EXPECT_EQ(plan.nodes[r[0].node].name, "concat1") << "inner before outer";
      EXPECT_EQ(plan.nodes[r[1].node].name, "concat2");
      const int root = value_id(plan, "concat2_out");
      for (const auto& c : r) EXPECT_EQ(c.root, root);
      EXPECT_EQ(r[0].root_offset, 0u);
      EXPECT_EQ(r[1].root_offset, 0u);
      // The outer's lifetime starts at the inner's first writer, not at the (skipped) inner concat.
      EXPECT_EQ(plan.nodes[r[0].first_writer].name, "relu0");
      EXPECT_EQ(plan.nodes[r[1].first_writer].name, "relu0");
      const std::map<std::string, uint64_t> want = {
          {"relu0_out", 0}, {"sigmoid0_out", 8 * ch}, {"concat1_out", 0}, {"relu1_out", 16 * ch}};
      EXPECT_EQ(placed_in(plan, r, root), want);
    }
    {
      auto net = dense_block(dt, 1, 3);
      auto e = marked_engine(net);
      ASSERT_TRUE(e);
      const auto& plan = e->plan();
      auto r = decide(plan, {{1, 8, 8, 8}});
      ASSERT_EQ(r.size(), 3u);
      const char* order[] = {"concat1", "concat2", "concat3"};
      for (int k = 0; k < 3; ++k) {
        EXPECT_EQ(plan.nodes[r[k].node].name, order[k]);
        EXPECT_EQ(plan.nodes[r[k].first_writer].name, "relu0") << order[k];
      }
      const int root = value_id(plan, "concat3_out");
      for (const auto& c : r) EXPECT_EQ(c.root, root);
      EXPECT_EQ(r[2].root_offset, 0u);
      EXPECT_EQ(r[1].root_offset, 8 * ch) << "concat2 follows relu2's 8 channels";
      EXPECT_EQ(r[0].root_offset, 8 * ch) << "concat1 is at the start of concat2";
      const std::map<std::string, uint64_t> want = {{"relu2_out", 0},           {"concat2_out", 8 * ch},
                                                    {"concat1_out", 8 * ch},    {"relu1_out", 24 * ch},
                                                    {"relu0_out", 8 * ch},      {"sigmoid0_out", 16 * ch}};
      EXPECT_EQ(placed_in(plan, r, root), want);
      for (const auto& [name, off] : want) EXPECT_EQ(off % runtime::kSliceAlignment, 0u) << name;
      // Batch 2: no level's slices are contiguous.
      EXPECT_TRUE(decide(plan, {{2, 8, 8, 8}}).empty());
    }
  }
}

// A misaligned level copies (its concat kernel writes its output), the others are still eliminated, and a level
// that copies can still be a slice of the level above it.
TEST(ConcatInPlacePlan, AlignmentRefusalsAtAnyLevel) {
  for (const NestedWidthsCase& t : nested_widths_cases()) {
    ConcatNet net = nested_widths(t.l1a, t.l1b, t.l2, t.l3);
    SCOPED_TRACE(net.what);
    auto e = marked_engine(net);
    ASSERT_TRUE(e);
    const auto& plan = e->plan();
    std::vector<Dims> dims;
    for (const Tensor& x : net.inputs) dims.push_back(x.shape());
    auto r = decide(plan, dims);
    std::vector<std::string> got;
    for (const auto& c : r) got.push_back(plan.nodes[c.node].name);
    EXPECT_EQ(got, t.eliminated);
    const auto* d1 = decided(plan, r, "c1");
    EXPECT_EQ(d1 ? plan.values[d1->root].name : "", t.root_of_c1.empty() ? "" : t.root_of_c1 + "_out");
    for (const auto& c : r)  // every composed offset is aligned
      for (const auto& [v, offset] : c.slices) EXPECT_EQ((c.root_offset + offset) % runtime::kSliceAlignment, 0u);
  }
}

TEST(ConcatInPlacePlan, AnInnerConcatHasOnePlace) {
  // Hand-marked past the pass: an inner concat read by two outer ones is a slice of the first; the second copies.
  // An inner concat that is an engine output is eliminated into the caller's buffer and is a slice of none.
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {1, 128});
  Attributes at;
  at.set("axis", int64_t{1});
  at.set(runtime::kInPlaceAttr, int64_t{1});
  auto concat = [&](const std::string& name, std::vector<ir::Value*> in) {
    return add_op(g, "Concat", name, std::move(in), at);
  };
  ir::Value* inner = concat("inner", {add_op(g, "Relu", "relu", {x}), add_op(g, "Sigmoid", "sigmoid", {x})});
  g.outputs().push_back(concat("outer1", {add_op(g, "Neg", "neg", {x}), inner}));
  g.outputs().push_back(concat("outer2", {inner, add_op(g, "Abs", "abs", {x})}));
  ir::Value* io = concat("inner_io", {add_op(g, "Relu", "relu_b", {x}), add_op(g, "Neg", "neg_b", {x})});
  g.outputs().push_back(io);
  g.outputs().push_back(concat("outer3", {io, add_op(g, "Abs", "abs_b", {x})}));
  finish(net, "shared inner");
  auto e = marked_engine(net, false);
  ASSERT_TRUE(e);
  const auto& plan = e->plan();
  auto r = decide(plan, {{1, 128}});
  std::vector<std::string> got;
  for (const auto& c : r) got.push_back(plan.nodes[c.node].name);
  EXPECT_EQ(got, (std::vector<std::string>{"inner", "outer1", "inner_io"}));
  const auto* in = decided(plan, r, "inner");
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(in->root, value_id(plan, "outer1_out"));
  EXPECT_EQ(in->root_offset, 128u * 4);
  const auto* iio = decided(plan, r, "inner_io");
  ASSERT_NE(iio, nullptr);
  EXPECT_EQ(iio->root, value_id(plan, "inner_io_out"));
}

TEST(ConcatInPlacePlan, NestedGraphsOfTheGpuTests) {
  // The nested graphs tests/gpu/test_concat_inplace.cpp runs: FP16 on the CPU engine agrees with FP32, and the
  // eliminated concats are those the GPU tests count the activation bytes of.
  struct Case {
    ConcatNet f32, f16;
    std::vector<std::string> eliminated;
  };
  std::vector<Case> cases;
  for (int levels : {2, 3}) {
    std::vector<std::string> all = {"concat1", "concat2"};
    if (levels == 3) all.push_back("concat3");
    cases.push_back({dense_block(DataType::kFLOAT, 1, levels), dense_block(DataType::kHALF, 1, levels), all});
    cases.push_back(
        {dense_block(DataType::kFLOAT, 1, levels, true), dense_block(DataType::kHALF, 1, levels, true), all});
    cases.push_back({dense_block(DataType::kFLOAT, 2, levels), dense_block(DataType::kHALF, 2, levels), {}});
  }
  for (int64_t n : {1, 2})
    for (int64_t axis : {0, 1}) {
      std::vector<std::string> el;
      if (n == 1 || axis == 0) el = {"concat1", "concat2"};
      cases.push_back({nested_read_elsewhere(DataType::kFLOAT, n, axis), nested_read_elsewhere(DataType::kHALF, n, axis),
                       el});
    }
  for (int64_t n : {1, 2}) cases.push_back({inner_only(DataType::kFLOAT, n), inner_only(DataType::kHALF, n), {"concat1"}});
  for (Case& c : cases) {
    SCOPED_TRACE(c.f16.what);
    auto want = run_reference(*c.f32.g, c.f32.inputs);
    auto e = marked_engine(c.f16);
    ASSERT_TRUE(e);
    std::vector<std::pair<std::string, Tensor>> feed;
    std::vector<Dims> dims;
    for (size_t i = 0; i < c.f16.inputs.size(); ++i) {
      feed.emplace_back(c.f16.g->inputs()[i]->name, c.f16.inputs[i]);
      dims.push_back(c.f16.inputs[i].shape());
    }
    auto got = infer(*e, feed);
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < got.size(); ++k) expect_close(got[k], want[k], 2e-2, 2e-2);
    std::vector<std::string> names;
    for (const auto& d : decide(e->plan(), dims)) names.push_back(e->plan().nodes[d.node].name);
    EXPECT_EQ(names, c.eliminated);
  }
}

}  // namespace

namespace {

// The graphs the GPU tests (tests/gpu/test_concat_inplace.cpp) run: on the CPU engine in FP16 they agree with
// FP32 (the GPU tests' FP16 oracle is sound), and the runtime's decision is the one those tests expect from the
// activation bytes: in place at batch 1 or along axis 0, never for Reshaped inputs.
TEST(ConcatInPlacePlan, TheGpuTestGraphsDecideAsTheGpuTestsExpect) {
  using Make = ConcatNet (*)(DataType, int64_t, int64_t);
  const std::pair<const char*, Make> makers[] = {
      {"relu_matmul", [](DataType d, int64_t n, int64_t a) { return relu_matmul(d, n, a, true); }},
      {"relu_matmul_arena", [](DataType d, int64_t n, int64_t a) { return relu_matmul(d, n, a, false); }},
      {"three_producers", three_producers},
      {"conv_relu", conv_relu},
      {"read_after", read_after},
      {"alias_of_input", alias_of_input},
      {"reshaped_inputs", reshaped_inputs}};
  for (const auto& [name, make] : makers)
    for (int64_t n : {1, 2})
      for (int64_t axis : {0, 1}) {
        SCOPED_TRACE(std::string(name) + " n=" + std::to_string(n) + " axis=" + std::to_string(axis));
        ConcatNet f32 = make(DataType::kFLOAT, n, axis);
        ConcatNet f16 = make(DataType::kHALF, n, axis);
        auto want = run_reference(*f32.g, f32.inputs);
        auto e = marked_engine(f16);
        ASSERT_TRUE(e);
        std::vector<std::pair<std::string, Tensor>> feed;
        for (size_t i = 0; i < f16.inputs.size(); ++i) feed.emplace_back(f16.g->inputs()[i]->name, f16.inputs[i]);
        auto got = infer(*e, feed);
        ASSERT_EQ(got.size(), want.size());
        for (size_t k = 0; k < got.size(); ++k) expect_close(got[k], want[k], 2e-2, 2e-2);
        std::vector<Dims> dims;
        for (const Tensor& t : f16.inputs) dims.push_back(t.shape());
        const bool expect = (n == 1 || axis == 0) && std::string(name) != "reshaped_inputs";
        EXPECT_EQ(decide(e->plan(), dims).size(), expect ? 1u : 0u);
      }
}

}  // namespace
