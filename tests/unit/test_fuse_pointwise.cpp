// Pointwise programs and the fuse_pointwise pass: program text round trip and checks, the fused graph's structure
// (groups, extra outputs, no cycles, narrow values kept when used outside) and its numbers against the unfused graph
// on the reference kernels, in float32 and after float16 lowering, with broadcasting inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "builder/engine_writer.h"
#include "builder/pointwise_codegen.h"
#include "engine_io_util.h"
#include "kiln/runtime.h"
#include "runtime/engine_plan.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "ops/pointwise_program.h"
#include "passes/pass_manager.h"
#include "pointwise_test_graphs.h"

using namespace kiln;
using kiln::pwtest::Case;

namespace {

struct Quiet : ILogger {
  void log(Severity, const char*) noexcept override {}
};

// shape_inference, then (for reduced precision) precision_lowering + DCE, then optionally fuse_pointwise + DCE.
Status optimize(ir::Graph& g, DataType precision, bool fuse) {
  static Quiet quiet;
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.verify_each = true;
  o.reduced_precision = precision;
  o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "Softmax"; };
  passes::PassContext ctx(quiet, o);
  passes::PassList l;
  l.push_back(passes::make_shape_inference());
  l.push_back(passes::make_precision_lowering());
  l.push_back(passes::make_dead_code_elimination());
  if (fuse) {
    l.push_back(passes::make_fuse_pointwise());
    l.push_back(passes::make_dead_code_elimination());
  }
  passes::PassManager pm(std::move(l));
  return pm.run(g, ctx);
}

// The shared reference runner (graph_test_util.h), under the name these tests use.
constexpr auto run = &test::run_reference;

int count(const ir::Graph& g, const std::string& op) {
  int c = 0;
  for (auto& n : g.nodes()) c += n->op_type == op;
  return c;
}

void expect_close(const std::vector<Tensor>& want, const std::vector<Tensor>& got, double tol, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t k = 0; k < want.size(); ++k) {
    ASSERT_EQ(want[k].shape(), got[k].shape()) << what << " output " << k;
    ASSERT_EQ(want[k].dtype(), got[k].dtype()) << what << " output " << k;
    Tensor a = want[k].cast(DataType::kDOUBLE), b = got[k].cast(DataType::kDOUBLE);
    int bad = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      double x = a.data<double>()[i], y = b.data<double>()[i];
      if (!(std::fabs(x - y) <= tol * (1 + std::fabs(x))) && bad++ < 3)
        ADD_FAILURE() << what << " output " << k << " element " << i << ": want " << x << " got " << y;
    }
  }
}

}  // namespace

TEST(PointwiseProgram, TextRoundTripAndChecks) {
  ops::PointwiseProgram p;
  p.inputs = {DataType::kHALF, DataType::kBOOL};
  ops::PwInstr ld;
  ld.op = ops::PwOp::kLoad;
  ld.type = DataType::kHALF;
  ld.a = 0;
  int x = p.add(ld);
  ops::PwInstr c;
  c.op = ops::PwOp::kCast;
  c.type = DataType::kFLOAT;
  c.a = x;
  int xf = p.add(c);
  ops::PwInstr k;
  k.op = ops::PwOp::kConst;
  k.type = DataType::kFLOAT;
  k.f = 0.1;  // not exact in binary: the text form must still round-trip it
  int kr = p.add(k);
  ops::PwInstr m;
  m.op = ops::PwOp::kLeakyRelu;
  m.type = DataType::kFLOAT;
  m.a = xf;
  m.f = 0.02;
  int l = p.add(m);
  ops::PwInstr add;
  add.op = ops::PwOp::kAdd;
  add.type = DataType::kFLOAT;
  add.a = l;
  add.b = kr;
  p.outputs = {p.add(add), x};
  ASSERT_TRUE(p.validate().ok()) << p.validate().message();
  auto q = ops::PointwiseProgram::parse(p.serialize());
  ASSERT_TRUE(q.ok()) << q.status().message();
  EXPECT_EQ(q->serialize(), p.serialize());
  EXPECT_EQ(q->code[kr].f, 0.1);
  // Mixed operand types, a later operand and a float-only op on integers are rejected.
  ops::PointwiseProgram bad = p;
  bad.code[4].b = x;
  EXPECT_FALSE(bad.validate().ok());
  bad = p;
  bad.code[1].a = 3;
  EXPECT_FALSE(bad.validate().ok());
  bad = p;
  bad.code[3].type = DataType::kINT32;
  EXPECT_FALSE(bad.validate().ok());
  EXPECT_FALSE(ops::PointwiseProgram::parse("kiln-pointwise 1\ninputs float32\nfrobnicate float32 0 -1 -1 0x0p+0 "
                                            "0x0p+0 0\noutputs 0\n").ok());
}

// Every test graph, fused in float32 and after float16 lowering, against the same graph unfused.
TEST(FusePointwise, FusedGraphsMatchUnfused) {
  for (const Case& c : pwtest::cases()) {
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      auto ref = c.build();
      auto fused = c.build();
      ASSERT_TRUE(optimize(*ref, t, false).ok());
      Status st = optimize(*fused, t, true);
      ASSERT_TRUE(st.ok()) << st.message();
      EXPECT_GE(count(*fused, "Pointwise"), c.min_groups) << ir::print(*fused);
      if (t != DataType::kFLOAT) {
        EXPECT_EQ(count(*fused, "Cast"), 0) << ir::print(*fused);
      }
      auto inputs = c.inputs(7);
      // Float32: same float math in another order. Float16/bfloat16: the fused chain rounds only at Casts and
      // stores, the unfused one after every operator.
      const double tol = t == DataType::kFLOAT ? 1e-5 : t == DataType::kHALF ? 4e-3 : 3e-2;
      expect_close(run(*ref, inputs), run(*fused, inputs), tol, c.name);
      // The fused graph against float32 without fusion: what a user compares to.
      if (t != DataType::kFLOAT) {
        auto f32 = c.build();
        ASSERT_TRUE(optimize(*f32, DataType::kFLOAT, false).ok());
        expect_close(run(*f32, inputs), run(*fused, inputs), t == DataType::kHALF ? 1e-2 : 3e-2,
                     c.name + " vs float32");
      }
    }
  }
}

TEST(FusePointwise, GroupStructure) {
  // x -> Exp -> Softmax -> Add(Exp, Softmax): Exp and Add may not fuse, the path through Softmax would make a cycle.
  {
    ir::Graph g;
    g.set_opset(17);
    ir::Value* x = pwtest::input(g, "x", DataType::kFLOAT, {2, 8});
    auto* e = g.add_node("Exp", "exp", {x}, {"e"}, {}, 17);
    auto* sm = g.add_node("Softmax", "sm", {e->outputs[0]}, {"s"}, {}, 17);
    auto* a = g.add_node("Add", "add", {e->outputs[0], sm->outputs[0]}, {"y"}, {}, 17);
    g.outputs().push_back(a->outputs[0]);
    ASSERT_TRUE(optimize(g, DataType::kFLOAT, true).ok());
    // Exp stays its own node; the Add becomes a Pointwise of its own (a lone float op with two inputs).
    EXPECT_EQ(count(g, "Exp"), 1) << ir::print(g);
    EXPECT_EQ(count(g, "Add"), 0);
    ASSERT_EQ(count(g, "Pointwise"), 1);
    for (auto& n : g.nodes())
      if (n->op_type == "Pointwise") {
        EXPECT_EQ(n->inputs.size(), 2u);
        EXPECT_EQ(n->inputs[0]->name, "e");
        EXPECT_EQ(n->inputs[1]->name, "s");
      }
  }
  // Pow with an int64 exponent (ONNX allows mixed types) is not a program instruction: it splits the chain.
  {
    ir::Graph g;
    ir::Value* x = pwtest::input(g, "x", DataType::kFLOAT, {2, 8});
    ir::Value* k = pwtest::input(g, "k", DataType::kINT64, {2, 8});
    auto* e = g.add_node("Exp", "exp", {x}, {"e"}, {}, 17);
    auto* n = g.add_node("Neg", "neg", {e->outputs[0]}, {"n"}, {}, 17);
    auto* pw = g.add_node("Pow", "pow", {n->outputs[0], k}, {"p"}, {}, 17);
    auto* r = g.add_node("Relu", "relu", {pw->outputs[0]}, {"r"}, {}, 17);
    auto* a = g.add_node("Abs", "abs", {r->outputs[0]}, {"y"}, {}, 17);
    g.outputs().push_back(a->outputs[0]);
    ASSERT_TRUE(optimize(g, DataType::kFLOAT, true).ok());
    EXPECT_EQ(count(g, "Pointwise"), 2) << ir::print(g);
    EXPECT_EQ(count(g, "Pow"), 1);
  }
  // A lone Relu stays a Relu.
  {
    ir::Graph g;
    ir::Value* x = pwtest::input(g, "x", DataType::kFLOAT, {4});
    auto* r = g.add_node("Relu", "relu", {x}, {"y"}, {}, 17);
    g.outputs().push_back(r->outputs[0]);
    ASSERT_TRUE(optimize(g, DataType::kFLOAT, true).ok());
    EXPECT_EQ(count(g, "Relu"), 1);
    EXPECT_EQ(count(g, "Pointwise"), 0);
  }
  // x[2,3,4] + Relu(b[3,1]) where Relu(b) is also a network output: the narrow Relu is not fused (its result would
  // be stored at the wide shape); the wide chain Add -> Sigmoid -> Mul is, and its middle value, read by Softmax,
  // becomes a second output of the fused node.
  {
    ir::Graph g;
    ir::Value* x = pwtest::input(g, "x", DataType::kFLOAT, {2, 3, 4});
    ir::Value* b = pwtest::input(g, "b", DataType::kFLOAT, {3, 1});
    auto* rb = g.add_node("Relu", "relu_b", {b}, {"rb"}, {}, 17);
    auto* add = g.add_node("Add", "add", {x, rb->outputs[0]}, {"s"}, {}, 17);
    auto* sg = g.add_node("Sigmoid", "sig", {add->outputs[0]}, {"t"}, {}, 17);
    auto* sm = g.add_node("Softmax", "sm", {sg->outputs[0]}, {"u"}, {}, 17);
    auto* mul = g.add_node("Mul", "mul", {sg->outputs[0], x}, {"y"}, {}, 17);
    g.outputs() = {mul->outputs[0], sm->outputs[0], rb->outputs[0]};
    auto ref = g.clone();
    ASSERT_TRUE(optimize(*ref, DataType::kFLOAT, false).ok());
    ASSERT_TRUE(optimize(g, DataType::kFLOAT, true).ok());
    ASSERT_EQ(count(g, "Pointwise"), 1) << ir::print(g);
    EXPECT_EQ(count(g, "Relu"), 1);
    EXPECT_EQ(count(g, "Softmax"), 1);
    const ir::Node* f = nullptr;
    for (auto& n : g.nodes())
      if (n->op_type == "Pointwise") f = n.get();
    ASSERT_EQ(f->outputs.size(), 2u);
    EXPECT_EQ(f->outputs[0]->name, "t");
    EXPECT_EQ(f->outputs[1]->name, "y");
    EXPECT_EQ(f->domain, "kiln");
    std::vector<Tensor> in = {pwtest::random(DataType::kFLOAT, {2, 3, 4}, 1), pwtest::random(DataType::kFLOAT, {3, 1}, 2)};
    expect_close(run(*ref, in), run(g, in), 1e-6, "extra outputs");
  }
}

// NVRTC needs no GPU: every program the tests above create compiles for sm_90 (cubin) and compute_90 (PTX), and
// the builder step stores the image in the node.
TEST(PointwiseCodegen, EveryTestProgramCompiles) {
  if (!builder::pointwise_codegen_available()) GTEST_SKIP() << "built without NVRTC";
  int compiled = 0;
  for (const Case& c : pwtest::cases()) {
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
      SCOPED_TRACE(c.name + " " + dtype_name(t));
      auto g = c.build();
      ASSERT_TRUE(optimize(*g, t, true).ok());
      struct Capture : ILogger {
        std::string text;
        void log(Severity, const char* m) noexcept override { text += m; }
      } log;
      Status st = builder::compile_pointwise_nodes(*g, 9, 0, /*ptx=*/t == DataType::kHALF, log);
      ASSERT_TRUE(st.ok()) << st.message();
      EXPECT_NE(log.text.find("_v4_32"), std::string::npos);  // the source is in the verbose log
      for (auto& n : g->nodes()) {
        if (n->op_type != "Pointwise") continue;
        auto img = n->attrs.get_string("image");
        ASSERT_TRUE(img.ok());
        EXPECT_GT(img->size(), 100u);
        auto kind = n->attrs.get_string("image_kind");
        ASSERT_TRUE(kind.ok());
        EXPECT_EQ(*kind, t == DataType::kHALF ? "ptx" : "cubin");
        // A cubin is an ELF file; PTX is text naming its entry points.
        if (*kind == "cubin") EXPECT_EQ(img->substr(0, 4), "\x7f" "ELF");
        else EXPECT_NE(img->find(n->attrs.get_string("kernel").value() + "_v1_64"), std::string::npos);
        ++compiled;
      }
      // The attributes survive verification (the schema declares them).
      EXPECT_TRUE(ir::verify(*g).ok());
    }
  }
  EXPECT_GE(compiled, 10);
}

// The compiled image (binary bytes in a string attribute) survives the engine file, and the CPU executor runs the
// fused engine through the reference interpreter with the unfused graph's results.
TEST(PointwiseCodegen, FusedEngineRoundTripRunsOnCpu) {
  if (!builder::pointwise_codegen_available()) GTEST_SKIP() << "built without NVRTC";
  const Case c = pwtest::cases()[1];  // attention_mask_bs: two outputs, a bool mask input
  auto ref = c.build();
  auto fused = c.build();
  ASSERT_TRUE(optimize(*ref, DataType::kFLOAT, false).ok());
  ASSERT_TRUE(optimize(*fused, DataType::kFLOAT, true).ok());
  Quiet quiet;
  ASSERT_TRUE(builder::compile_pointwise_nodes(*fused, 9, 0, false, quiet).ok());
  std::string image;
  for (auto& n : fused->nodes())
    if (n->op_type == "Pointwise") image = n->attrs.get_string("image").value();
  ASSERT_FALSE(image.empty());
  auto engine = test::load_engine(builder::write_engine(*fused, BuilderConfig()));
  ASSERT_NE(engine, nullptr);
  int pointwise = 0;
  for (const auto& n : engine->plan().nodes) {
    if (n.op_type != "Pointwise") continue;
    ++pointwise;
    EXPECT_EQ(n.attrs.get_string("image").value(), image);
  }
  EXPECT_EQ(pointwise, 1);
  std::vector<Tensor> inputs = c.inputs(11);
  std::vector<Tensor> got = test::infer(*engine, test::numbered_inputs(inputs));
  ASSERT_FALSE(got.empty());
  expect_close(run(*ref, inputs), got, 1e-6, "engine");
}

// Shape arithmetic stays unfused: vit's exported class-token Expand computes its target with
// Where(Equal(shape, -1), 1, shape) over Shape(x)'s elements; fused into a device kernel, that value would no longer
// be known on the host and the engine would fall back to data-dependent shapes.
TEST(FusePointwise, ShapeArithmeticIsLeftToTheHost) {
  ir::Graph g;
  g.set_opset(17);
  ir::Value* x = pwtest::input(g, "x", DataType::kFLOAT, {ops::Dim::symbol("batch"), 4, 8});
  ir::Value* c = g.add_constant("c", Tensor::from_vector<float>({1, 1, 8}, std::vector<float>(8, 0.5f)));
  auto* shape = g.add_node("Shape", "shape", {x}, {"s"}, {}, 17);
  ir::Value* minus1 = g.add_constant("m1", Tensor::from_vector<int64_t>({3}, {-1, -1, -1}));
  ir::Value* ones = g.add_constant("ones", Tensor::from_vector<int64_t>({3}, {1, 1, 1}));
  auto* eq = g.add_node("Equal", "eq", {shape->outputs[0], minus1}, {"eq"}, {}, 17);
  auto* wh = g.add_node("Where", "where", {eq->outputs[0], ones, shape->outputs[0]}, {"target"}, {}, 17);
  auto* ex = g.add_node("Expand", "expand", {c, wh->outputs[0]}, {"e"}, {}, 17);
  auto* ad = g.add_node("Add", "add", {ex->outputs[0], x}, {"a"}, {}, 17);
  auto* rl = g.add_node("Relu", "relu", {ad->outputs[0]}, {"y"}, {}, 17);
  g.outputs().push_back(rl->outputs[0]);
  ASSERT_TRUE(optimize(g, DataType::kFLOAT, true).ok());
  EXPECT_EQ(count(g, "Where"), 1) << ir::print(g);
  EXPECT_EQ(count(g, "Equal"), 1) << ir::print(g);
  EXPECT_EQ(count(g, "Pointwise"), 1) << "the float Add + Relu still fuse\n" << ir::print(g);
}

TEST(FusePointwise, LoneFloatClipBecomesPointwise) {
  // ReLU6 after a GEMM, with nothing else to fuse: a Pointwise kernel with its bounds folded in; an integer Clip
  // keeps the elementwise kernel.
  for (DataType dt : {DataType::kFLOAT, DataType::kINT32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto build = [&](ir::Graph& g) {
      g.set_opset(17);
      ir::Value* x = pwtest::input(g, "x", dt, {3, 5, 7});
      ir::Value* lo = g.add_constant("lo", Tensor::from_vector<float>({}, {0.f}).cast(dt));
      ir::Value* hi = g.add_constant("hi", Tensor::from_vector<float>({}, {6.f}).cast(dt));
      g.outputs().push_back(g.add_node("Clip", "relu6", {x, lo, hi}, {"y"}, {}, 17)->outputs[0]);
    };
    ir::Graph fused, plain;
    build(fused);
    build(plain);
    ASSERT_TRUE(optimize(fused, DataType::kFLOAT, true).ok());
    ASSERT_TRUE(optimize(plain, DataType::kFLOAT, false).ok());
    const bool is_float = dt == DataType::kFLOAT;
    EXPECT_EQ(count(fused, "Pointwise"), is_float ? 1 : 0) << ir::print(fused);
    EXPECT_EQ(count(fused, "Clip"), is_float ? 0 : 1);
    Tensor in = Tensor::from_vector<float>({3, 5, 7}, [] {
      std::vector<float> v(105);
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(static_cast<int>(i % 17) - 5) * 0.75f;
      return v;
    }()).cast(dt);
    expect_close(run(plain, {in}), run(fused, {in}), 0, "lone Clip");
  }
}

// A one-element constant of higher rank than every other input decides the result's rank: held as an immediate in
// the program it would be lost (the Pointwise node's shape is its loaded inputs' broadcast), so such a group stays
// unfused. Swin's shifted-window mask indices add a [1,1,1,1] zero to [12,1,1] + [12,1]. A same-rank one-element
// constant is still an immediate.
TEST(FusePointwise, RankRaisingScalarConstantIsNotDropped) {
  for (bool raising : {true, false}) {
    SCOPED_TRACE(raising ? "[1,1,1,1] constant" : "[1,1,1] constant");
    auto build = [&](ir::Graph& g) {
      g.set_opset(17);
      ir::Value* a = pwtest::input(g, "a", DataType::kFLOAT, {3, 1, 1});
      ir::Value* b = pwtest::input(g, "b", DataType::kFLOAT, {3, 1});
      ir::Value* z =
          g.add_constant("z", Tensor::from_vector<float>(
                                  raising ? std::vector<int64_t>{1, 1, 1, 1} : std::vector<int64_t>{1, 1, 1}, {0.5f}));
      auto* s = g.add_node("Add", "add0", {z, a}, {"s"}, {}, 17);
      auto* t = g.add_node("Add", "add1", {s->outputs[0], b}, {"t"}, {}, 17);
      g.outputs().push_back(g.add_node("Relu", "relu", {t->outputs[0]}, {"y"}, {}, 17)->outputs[0]);
    };
    ir::Graph fused, plain;
    build(fused);
    build(plain);
    ASSERT_TRUE(optimize(fused, DataType::kFLOAT, true).ok());
    ASSERT_TRUE(optimize(plain, DataType::kFLOAT, false).ok());
    EXPECT_EQ(count(fused, "Pointwise"), raising ? 0 : 1) << ir::print(fused);
    std::vector<Tensor> in = {pwtest::random(DataType::kFLOAT, {3, 1, 1}, 3),
                              pwtest::random(DataType::kFLOAT, {3, 1}, 4)};
    auto want = run(plain, in);
    ASSERT_EQ(want.size(), 1u);
    EXPECT_EQ(want[0].shape(), raising ? (std::vector<int64_t>{1, 3, 3, 1}) : (std::vector<int64_t>{3, 3, 1}));
    expect_close(want, run(fused, in), 1e-6, "rank from a constant");
  }
}
