// Engine binding types (NetworkDefinition::set_io_type, builder/io_types.h) and the Cast chains they leave
// (remove_identity's fold_cast_chains): the API's checks, the boundary Casts the builder adds, that an FP16 CUDA
// pass list then converts nothing at float16 bindings of the CI models, and that the values stay the network's.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "builder/io_types.h"
#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/onnx_parser.h"
#include "onnx_model_util.h"
#include "ops/op_util.h"
#include "passes/pass.h"
#include "transformer_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

ir::Node* cast(ir::Graph& g, ir::Value* x, DataType to, const std::string& name) {
  Attributes a;
  a.set("to", ops::onnx_code_of(to));
  return g.add_node("Cast", name, {x}, {name + "_out"}, a, 19);
}

TEST(IoTypes, SetIoTypeChecks) {
  Builder b;
  auto net = b.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {2, 3});
  ITensor* ids = net->add_input("ids", DataType::kINT64, {2, 3});
  ITensor* r = net->add_op("Relu", {x})[0];
  ITensor* y = net->add_op("Sigmoid", {r})[0];
  ASSERT_TRUE(net->mark_output(y).ok());
  ASSERT_TRUE(net->mark_output(ids).ok());  // an input that is also an output
  auto msg = [&](ITensor* t, DataType d) { return net->set_io_type(t, d).message(); };
  EXPECT_NE(msg(r, DataType::kHALF).find("set_io_type '" + r->name() + "'"), std::string::npos)
      << msg(r, DataType::kHALF);
  EXPECT_NE(msg(r, DataType::kHALF).find("not a network input or output"), std::string::npos);
  EXPECT_NE(msg(ids, DataType::kHALF).find("both a network input and an output keeps its type"), std::string::npos);
  EXPECT_NE(msg(x, DataType::kINT8).find("int8 bindings are not supported; float32, float16 and bfloat16 are"),
            std::string::npos);
  EXPECT_EQ(msg(nullptr, DataType::kHALF), "set_io_type: the tensor is null or belongs to another network");
  ASSERT_TRUE(net->set_io_type(x, DataType::kHALF).ok());
  ASSERT_TRUE(net->set_io_type(y, DataType::kBF16).ok());
  EXPECT_EQ(net->io_type(x), DataType::kHALF);
  EXPECT_EQ(net->io_type(y), DataType::kBF16);
  EXPECT_EQ(x->dtype(), DataType::kFLOAT) << "the network keeps its own type";
  EXPECT_EQ(net->io_types().size(), 2u);
  ASSERT_TRUE(net->set_io_type(x, DataType::kFLOAT).ok());  // its own type back: undone
  EXPECT_EQ(net->io_type(x), DataType::kFLOAT);
  EXPECT_EQ(net->io_types().size(), 1u);
}

// The builder's copy: the input takes the binding type and a Cast feeds its readers; the output's value is renamed
// and a Cast writes the binding under the output's name.
TEST(IoTypes, BoundaryCasts) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 3}, DataType::kFLOAT);
  ir::Node* relu = g.add_node("Relu", "relu", {x}, {"r"}, {}, 14);
  ir::Node* add = g.add_node("Add", "add", {relu->outputs[0], x}, {"y"}, {}, 14);
  g.outputs().push_back(add->outputs[0]);
  ASSERT_TRUE(run_passes(g, {}).ok());
  ASSERT_TRUE(builder::apply_io_types(g, {{"x", DataType::kHALF}, {"y", DataType::kBF16}}).ok());
  EXPECT_EQ(g.inputs()[0]->name, "x");
  EXPECT_EQ(g.inputs()[0]->dtype, DataType::kHALF);
  EXPECT_EQ(g.outputs()[0]->name, "y");
  EXPECT_EQ(g.outputs()[0]->dtype, DataType::kBF16);
  ASSERT_EQ(count_ops(g, "Cast"), 2) << ir::print(g);
  // Every reader of x reads the one Cast back to float32.
  ir::Value* back = nullptr;
  for (const auto& n : g.nodes())
    if (n->op_type == "Cast" && n->inputs[0] == g.inputs()[0]) back = n->outputs[0];
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->dtype, DataType::kFLOAT);
  EXPECT_EQ(relu->inputs[0], back);
  EXPECT_EQ(add->inputs[1], back);
  EXPECT_EQ(add->outputs[0]->name, "y_float32");
  EXPECT_EQ(g.outputs()[0]->producer->op_type, "Cast");
  EXPECT_TRUE(ir::verify(g).ok());
  // Values: the float32 graph on the float16 input, rounded to bfloat16.
  const Tensor in = random_f32({2, 3}, 3, -2.f, 2.f).cast(DataType::kHALF);
  auto got = run_reference(g, {in});
  ASSERT_EQ(got[0].dtype(), DataType::kBF16);
  const Tensor xf = in.cast(DataType::kFLOAT);
  std::vector<float> want(6);
  for (int i = 0; i < 6; ++i) want[i] = std::max(xf.data<float>()[i], 0.f) + xf.data<float>()[i];
  expect_close(got[0].cast(DataType::kFLOAT), Tensor::from_vector<float>({2, 3}, want).cast(DataType::kBF16).cast(DataType::kFLOAT),
               0, 0);
}

// remove_identity: Cast(Cast(x, wider), t) reads x directly where the inner Cast is exact, and a Cast to x's own
// type then goes; a narrowing inner Cast (float32 -> float16 -> float32 rounds) stays.
TEST(IoTypes, CastChainsFold) {
  struct Case {
    DataType x, mid, to;
    int casts_left;
  };
  const Case cases[] = {
      {DataType::kHALF, DataType::kFLOAT, DataType::kHALF, 0},   // float16 round trip: nothing left
      {DataType::kBF16, DataType::kFLOAT, DataType::kBF16, 0},
      {DataType::kHALF, DataType::kFLOAT, DataType::kBF16, 1},   // one Cast, from x
      {DataType::kINT32, DataType::kINT64, DataType::kFLOAT, 1},
      {DataType::kFLOAT, DataType::kHALF, DataType::kFLOAT, 2},  // rounds: stays
      {DataType::kINT64, DataType::kINT32, DataType::kINT64, 2},  // narrows: stays
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(dtype_name(c.x)) + " -> " + dtype_name(c.mid) + " -> " + dtype_name(c.to));
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {2, 3}, c.x);
    ir::Node* inner = cast(g, x, c.mid, "inner");
    ir::Node* outer = cast(g, inner->outputs[0], c.to, "outer");
    ir::Node* neg = g.add_node("Neg", "neg", {outer->outputs[0]}, {"y"}, {}, 13);
    g.outputs().push_back(neg->outputs[0]);
    ASSERT_TRUE(run_passes(g, {}).ok());
    auto before = g.clone();
    ASSERT_TRUE(run_passes(g, list_of(passes::make_remove_identity(), passes::make_dead_code_elimination())).ok());
    EXPECT_EQ(count_ops(g, "Cast"), c.casts_left) << ir::print(g);
    if (c.casts_left < 2) {
      EXPECT_EQ(count_ops(g, "Cast") == 0 ? neg->inputs[0] : neg->inputs[0]->producer->inputs[0], g.inputs()[0]);
    }
    const Tensor in = random_f32({2, 3}, 5, -100.f, 100.f).cast(c.x);
    auto want = run_reference(*before, {in});
    auto got = run_reference(g, {in});
    expect_close(got[0].cast(DataType::kDOUBLE), want[0].cast(DataType::kDOUBLE), 0, 0);
  }
}

// The CI exports with float16 bindings through the FP16 CUDA pass list: no Cast reads a network input or writes a
// network output (the layers next to the bindings read and write float16 themselves), and the result is exactly
// the float32-binding FP16 engine's (which rounds its input to float16 first and converts a float16 result), and
// the float32 CPU pipeline's within float16 accuracy.
TEST(IoTypes, Float16BindingsConvertNothingInAnFp16Build) {
  const std::vector<std::string> dirs = model_dirs({"KILN_CNN_MODEL_DIRS", "KILN_TRANSFORMER_MODEL_DIRS"});
  if (dirs.empty()) GTEST_SKIP() << "KILN_CNN_MODEL_DIRS and KILN_TRANSFORMER_MODEL_DIRS are not set (`make test-models` sets them)";
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    auto g = import_onnx_file(dir + "/model.onnx");
    ASSERT_NE(g, nullptr);
    const Tensor x = read_input(dir + "/input.bin", *g->inputs()[0]);
    auto cpu = g->clone();
    ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
    auto want = run_reference(*cpu, {x});
    auto cuda32 = g->clone();
    ASSERT_TRUE(run_cuda_pipeline(*cuda32, DataType::kHALF).ok());
    auto same = run_reference(*cuda32, {x});
    auto cuda = g->clone();
    std::map<std::string, DataType> types = {{cuda->outputs()[0]->name, DataType::kHALF}};
    const bool float_input = cuda->inputs()[0]->dtype == DataType::kFLOAT;
    if (float_input) types[cuda->inputs()[0]->name] = DataType::kHALF;
    ASSERT_TRUE(builder::apply_io_types(*cuda, types).ok());
    Status st = run_cuda_pipeline(*cuda, DataType::kHALF);
    ASSERT_TRUE(st.ok()) << st.message();
    int boundary_casts = 0;
    for (const auto& n : cuda->nodes()) {
      if (n->op_type != "Cast") continue;
      boundary_casts += n->inputs[0] == cuda->inputs()[0] || n->outputs[0] == cuda->outputs()[0];
    }
    EXPECT_EQ(boundary_casts, 0) << ir::print(*cuda);
    EXPECT_EQ(cuda->outputs()[0]->dtype, DataType::kHALF);
    const Tensor xin = float_input ? x.cast(DataType::kHALF) : x;
    auto got = run_reference(*cuda, {xin});
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(got[0].dtype(), DataType::kHALF);
    std::cout << dir << ": " << cuda->nodes().size() << " nodes, first " << cuda->nodes()[0]->op_type << ", last "
              << cuda->outputs()[0]->producer->op_type << "\n";
    expect_close(got[0].cast(DataType::kFLOAT), same[0].cast(DataType::kHALF).cast(DataType::kFLOAT), 0, 0);
    EXPECT_LT(relative_l2(want[0], got[0].cast(DataType::kFLOAT)), 3e-2) << "FP16 bindings vs float32 CPU pipeline";
  }
}

}  // namespace
