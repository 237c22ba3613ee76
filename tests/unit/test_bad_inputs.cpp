// Regression tests for inputs the fuzzers (tools/fuzz) found crashing the importer, the builder or the runtime:
// each now fails with an error naming what is wrong. The raw crash inputs are replayed by ctest as well
// (FuzzRegressionReplay*, tests/fuzz_regressions/).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "common/tensor.h"
#include "engine_test_util.h"
#include "onnx_model_util.h"

namespace kiln::test {
namespace {

// Every parser error of the model, one per line ("" when it imports).
std::string import_errors(const onnx::ModelProto& m) {
  static SilentLogger quiet;
  std::string bytes;
  m.SerializeToString(&bytes);
  auto network = Builder(quiet).create_network();
  OnnxParser parser(*network, quiet);
  Status st = parser.parse(bytes.data(), bytes.size());
  if (st.ok()) return "";
  std::string all = st.message();
  for (int i = 0; i < parser.num_errors(); ++i) all += "\n" + parser.get_error(i).to_string();
  return all;
}

void set_attr_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a->add_ints(x);
}

onnx::TensorProto float_tensor(const std::string& name, const std::vector<int64_t>& dims, size_t values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) t.add_dims(d);
  for (size_t i = 0; i < values; ++i) t.add_float_data(1.f);
  return t;
}

// x[1,3,4,4] -> Conv(w[2,3,3,3]) -> y
onnx::ModelProto conv_model(const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 3, 4, 4}));
  *g->add_initializer() = float_tensor("w", {2, 3, 3, 3}, 54);
  auto* conv = add_onnx_node(g, "Conv", {"x", "w"}, {"y"});
  conv->set_name("the_conv");
  set_attr_ints(conv, "strides", strides);
  set_attr_ints(conv, "dilations", dilations);
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1, -1}));
  return m;
}

// Found by the ONNX fuzzer: libonnx's Conv shape inference divides by the stride (SIGFPE, no exception).
TEST(BadOnnxInputs, ConvZeroStrideRejectedBeforeOnnxShapeInference) {
  std::string e = import_errors(conv_model({0, 1}, {1, 1}));
  EXPECT_NE(e.find("node 'the_conv'"), std::string::npos) << e;
  EXPECT_NE(e.find("attribute 'strides' has value 0"), std::string::npos) << e;
  e = import_errors(conv_model({1, 1}, {int64_t{1} << 40, 1}));
  EXPECT_NE(e.find("attribute 'dilations' has value 1099511627776"), std::string::npos) << e;
  // Valid attributes still import.
  EXPECT_EQ(import_errors(conv_model({1, 1}, {1, 1})), "");
}

TEST(BadOnnxInputs, ConvZeroStrideInsideSubgraphRejected) {
  auto inner = conv_model({1, -2}, {1, 1});
  onnx::GraphProto branch = inner.graph();
  branch.clear_input();
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 3, 4, 4}));
  add_graph_input(g, "c", value_type("tensor", onnx::TensorProto::BOOL, {}));
  auto* n = add_onnx_node(g, "If", {"c"}, {"y"});
  n->set_name("the_if");
  set_attr_graph(n, "then_branch", branch);
  set_attr_graph(n, "else_branch", branch);
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1, -1}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("the_if/then_branch/the_conv"), std::string::npos) << e;
  EXPECT_NE(e.find("attribute 'strides' has value -2"), std::string::npos) << e;
}

// Found by the ONNX fuzzer: a subgraph initializer declaring [2^40] floats over 1 value made the importer
// allocate 4 TiB (std::bad_alloc out of the library) before comparing the data with the shape.
TEST(BadOnnxInputs, InitializerDimsBeyondItsDataRejectedBeforeAllocating) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  add_graph_input(g, "c", value_type("tensor", onnx::TensorProto::BOOL, {}));
  onnx::GraphProto branch;
  branch.set_name("branch");
  *branch.add_initializer() = float_tensor("big", {int64_t{1} << 40}, 1);
  add_onnx_node(&branch, "Add", {"x", "big"}, {"t"});
  add_graph_output(&branch, "t", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  auto* n = add_onnx_node(g, "If", {"c"}, {"y"});
  set_attr_graph(n, "then_branch", branch);
  set_attr_graph(n, "else_branch", branch);
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("tensor 'big' holds 1 values but its shape 1099511627776 needs 1099511627776"), std::string::npos) << e;
}

// The element count of [2^62, 2^62, 4, 4] wrapped to 0, so the error said "needs 0".
TEST(BadOnnxInputs, InitializerDimsOverflowNamed) {
  auto m = conv_model({1, 1}, {1, 1});
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_dims();
  for (int64_t d : {int64_t{1} << 62, int64_t{1} << 62, int64_t{4}, int64_t{4}}) w->add_dims(d);
  std::string e = import_errors(m);
  EXPECT_NE(e.find("tensor 'w' has shape 4611686018427387904x4611686018427387904x4x4, whose element count overflows"),
            std::string::npos) << e;
}

// std::stoll threw out of the library (std::terminate) on a non-numeric external data offset.
TEST(BadOnnxInputs, ExternalDataNonNumericOffsetRejected) {
  auto m = conv_model({1, 1}, {1, 1});
  auto* w = m.mutable_graph()->mutable_initializer(0);
  w->clear_float_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  for (auto [k, v] : {std::pair<const char*, const char*>{"location", "w.bin"}, {"offset", "12abc"}}) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  }
  std::string e = import_errors(m);
  EXPECT_NE(e.find("tensor 'w': external data offset '12abc' is not a non-negative integer"), std::string::npos) << e;
  w->mutable_external_data(1)->set_value("99999999999999999999999");  // out of int64 range: stoll threw too
  e = import_errors(m);
  EXPECT_NE(e.find("is not a non-negative integer"), std::string::npos) << e;
}

// An opset of 2^40 was cut to int (0) and reported as "opset 0".
TEST(BadOnnxInputs, OpsetVersionOutOfRangeNamed) {
  auto m = conv_model({1, 1}, {1, 1});
  m.mutable_opset_import(0)->set_version(int64_t{1} << 40);
  std::string e = import_errors(m);
  EXPECT_NE(e.find("opset_import version 1099511627776 for domain 'ai.onnx' is out of range"), std::string::npos) << e;
}

// ConstantOfShape([2^31, 2^31]): its byte size wrapped to 0, so constant folding "computed" it into a 0-byte
// constant of that shape and the builder wrote an engine its own loader rejects. Now the node is left to run
// time, the engine loads, and running it fails with an out-of-memory error instead of writing past a buffer.
TEST(BadOnnxInputs, ConstantOfShapeHugeBuildsLoadableEngineThatFailsCleanly) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  onnx::TensorProto s;
  s.set_name("s");
  s.set_data_type(onnx::TensorProto::INT64);
  s.add_dims(2);
  s.add_int64_data(int64_t{1} << 31);
  s.add_int64_data(int64_t{1} << 31);
  *g->add_initializer() = s;
  add_onnx_node(g, "ConstantOfShape", {"s"}, {"y"});
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_TRUE(engine) << st.message();
  auto ctx = engine->create_execution_context();
  auto r = ctx->infer({});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kOutOfMemory) << r.status().message();
}

TEST(BadOnnxInputs, TensorWithOverflowingShapeIsAnAllocationFailure) {
  EXPECT_THROW(Tensor(DataType::kFLOAT, {int64_t{1} << 31, int64_t{1} << 31}), std::bad_alloc);
  EXPECT_THROW(Tensor(DataType::kFLOAT, {-2, 3}), std::bad_alloc);
  EXPECT_EQ(Tensor(DataType::kFLOAT, {0, int64_t{1} << 62}).numel(), 0);
}


// ---- engine files ----

Status load_engine(const std::vector<uint8_t>& b) {
  static SilentLogger quiet;
  Runtime rt(quiet);
  auto r = rt.deserialize_engine(b.data(), b.size());
  return r.ok() ? Status::Ok() : r.status();
}

// x[3], y[3] float -> <op> -> z[3]
std::vector<uint8_t> binary_engine(const std::string& op) {
  ir::Graph g;
  ir::Value* x = add_input(g, "x", DataType::kFLOAT, {3});
  ir::Value* y = add_input(g, "y", DataType::kFLOAT, {3});
  ir::Node* n = add_node(g, op, "the_" + op, {x, y}, {"z"}, DataType::kFLOAT, {3});
  n->opset = 14;
  g.outputs() = {n->outputs[0]};
  auto r = builder::write_engine(g, BuilderConfig());
  return r.ok() ? r.value() : std::vector<uint8_t>{};
}

// Found by the engine fuzzer (checksums recomputed after the edit): Sub/Min/Sum with inputs of different types
// passed the reader, and the kernel read the narrower input as the output's type (heap-buffer-overflow). The
// reader now runs each operator's type/shape inference over the declared values.
TEST(BadEngineInputs, NodeInputsOfMixedTypesRejectedAtLoad) {
  auto good = binary_engine("Sub");
  ASSERT_FALSE(good.empty());
  EXPECT_TRUE(load_engine(good).ok()) << load_engine(good).message();
  for (std::string op : {"Sub", "Min", "Add"}) {
    auto b = reencode(binary_engine(op), [](engine_format::EngineFile& f) { f.values[1].dtype = DataType::kUINT8; });
    ASSERT_FALSE(b.empty());
    Status st = load_engine(b);
    EXPECT_EQ(st.code(), ErrorCode::kInvalidEngine);
    EXPECT_NE(st.message().find("'the_" + op + "' (" + op + ") does not fit its declared inputs: " + op +
                                ": input 1 must have the same type as input 0 (float32) but is uint8"),
              std::string::npos)
        << st.message();
  }
}

TEST(BadEngineInputs, NodeInputRankThatBreaksBroadcastRejectedAtLoad) {
  auto b = reencode(binary_engine("Add"), [](engine_format::EngineFile& f) { f.values[1].shape = {ops::Dim(4)}; });
  Status st = load_engine(b);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidEngine);
  EXPECT_NE(st.message().find("'the_Add' (Add) does not fit its declared inputs"), std::string::npos) << st.message();
}

// Found by the engine fuzzer as a timeout (after the reader began running inference): a Reshape whose shape input
// is declared int64[2^59] made inference build a 2^59-dim output shape. The same model from ONNX hung the builder.
TEST(BadEngineInputs, ShapeInputLengthBeyondMaxRankRejected) {
  ir::Graph g;
  ir::Value* x = add_input(g, "x", DataType::kFLOAT, {2, 3});
  ir::Value* s = add_input(g, "s", DataType::kINT64, {2});
  ir::Node* n = add_node(g, "Reshape", "the_reshape", {x, s}, {"y"}, DataType::kFLOAT, {3, 2});
  n->opset = 14;
  g.outputs() = {n->outputs[0]};
  auto r = builder::write_engine(g, BuilderConfig());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(load_engine(r.value()).ok());
  auto b = reencode(r.value(), [](engine_format::EngineFile& f) { f.values[1].shape = {ops::Dim(int64_t{1} << 59)}; });
  Status st = load_engine(b);
  EXPECT_NE(st.message().find("'the_reshape' (Reshape) does not fit its declared inputs: Reshape: the shape input has "
                              "576460752303423488 entries; Kiln supports at most 1024 dims"),
            std::string::npos)
      << st.message();
}

TEST(BadOnnxInputs, ShapeInputLengthBeyondMaxRankRejected) {
  for (std::string op : {"Reshape", "ConstantOfShape"}) {
    auto m = onnx_model(17);
    auto* g = m.mutable_graph();
    if (op == "Reshape") add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {2, 3}));
    add_graph_input(g, "s", value_type("tensor", onnx::TensorProto::INT64, {int64_t{1} << 40}));
    add_onnx_node(g, op, op == "Reshape" ? std::vector<std::string>{"x", "s"} : std::vector<std::string>{"s"}, {"y"});
    add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    Status st;
    auto engine = build_onnx_engine(m, &st);
    EXPECT_FALSE(engine);
    EXPECT_NE(st.message().find("shape input 's' is declared with 1099511627776 entries; Kiln supports at most 1024 dims"),
              std::string::npos)
        << st.message();
  }
}

// Found by the ONNX fuzzer: libonnx's shape inference dereferences null on a node input nothing defines (data
// propagation through Shape/Cast) and on a Scan without num_scan_inputs. Kiln now skips libonnx's inference for
// such graphs and reports them itself.
TEST(BadOnnxInputs, UndefinedInputAndMissingRequiredAttributeReportedNotCrashing) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_onnx_node(g, "Shape", {"nowhere"}, {"s"})->set_name("the_shape");
  add_graph_output(g, "s", value_type("tensor", onnx::TensorProto::INT64, {-1}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("node 'the_shape' (index 0, Shape): input 'nowhere' is not produced by any node"), std::string::npos)
      << e;

  auto scan = onnx_model(8);
  g = scan.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 3, 2}));
  onnx::GraphProto body;
  body.set_name("body");
  add_graph_input(&body, "xi", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  add_onnx_node(&body, "Identity", {"xi"}, {"yi"});
  add_graph_output(&body, "yi", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  auto* n = add_onnx_node(g, "Scan", {"", "x"}, {"y"});
  n->set_name("the_scan");
  set_attr_graph(n, "body", body);
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1}));
  e = import_errors(scan);
  EXPECT_NE(e.find("the_scan"), std::string::npos) << e;
  EXPECT_NE(e.find("num_scan_inputs"), std::string::npos) << e;
}

// libonnx's conv/pool inference takes the spatial rank from X but the kernel from W's dims, then indexes one with
// the other's count: a W of another rank than X read past its vectors and X's dims (Conv: SIGSEGV; ConvTranspose:
// silent reads past the heap block). Its attribute lengths are trusted too. Kiln checks each node of the family
// against its attribute-shape table first and reports every bad node, naming the node, op type and field.
TEST(BadOnnxInputs, ConvFamilyAttributeShapesCheckedBeforeOnnxShapeInference) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 1, 5, 5}));
  *g->add_initializer() = float_tensor("w5", {1, 1, 3, 3, 3}, 27);
  *g->add_initializer() = float_tensor("w", {1, 1, 3, 3}, 9);
  add_onnx_node(g, "Conv", {"x", "w5"}, {"a"})->set_name("conv_w5");
  auto* ct_pads = add_onnx_node(g, "ConvTranspose", {"x", "w"}, {"b"});
  ct_pads->set_name("ct_pads");
  set_attr_ints(ct_pads, "pads", {1});
  auto* pool = add_onnx_node(g, "MaxPool", {"x"}, {"c"});
  pool->set_name("pool_neg");
  set_attr_ints(pool, "kernel_shape", {2, 2});
  set_attr_ints(pool, "pads", {0, -3, 0, 0});
  auto* ct = add_onnx_node(g, "ConvTranspose", {"x", "w"}, {"d"});
  ct->set_name("ct_outpad");
  set_attr_ints(ct, "output_padding", {1, 1, 1});
  for (const char* out : {"a", "b", "c", "d"})
    add_graph_output(g, out, value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1, -1}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("node 'conv_w5' (index 0, Conv): weight 'w5' has rank 5 but input 'x' has rank 4"), std::string::npos)
      << e;
  EXPECT_NE(e.find("node 'ct_pads' (index 1, ConvTranspose): attribute 'pads' has 1 values; 2 spatial dims "
                   "(input 'x' of rank 4) need 4"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("node 'pool_neg' (index 2, MaxPool): attribute 'pads' has value -3; each must be >= 0"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("node 'ct_outpad' (index 3, ConvTranspose): attribute 'output_padding' has 3 values"),
            std::string::npos)
      << e;
  // Without a declared rank anywhere, the attributes must agree with each other.
  auto p = onnx_model(17);
  g = p.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  g->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  auto* avg = add_onnx_node(g, "AveragePool", {"x"}, {"y"});
  avg->set_name("avg");
  set_attr_ints(avg, "kernel_shape", {2, 2});
  set_attr_ints(avg, "strides", {1, 1, 1});
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1, -1}));
  e = import_errors(p);
  EXPECT_NE(e.find("node 'avg' (index 0, AveragePool): attribute 'strides' has 3 values; 2 spatial dims (attribute "
                   "'kernel_shape') need 2"),
            std::string::npos)
      << e;
}

// The same rules guard libonnx's inference where the ranks are known only from inference (X or W made by another
// node): the node fails libonnx's inference instead of crashing it, and Kiln's own inference reports it.
TEST(BadOnnxInputs, ConvWeightRankKnownOnlyAfterInferenceDoesNotCrashOnnxInference) {
  for (const char* op : {"Conv", "ConvTranspose"}) {
    auto m = onnx_model(17);
    auto* g = m.mutable_graph();
    add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 1, 5, 5}));
    *g->add_initializer() = float_tensor("w", {1, 1, 3, 3, 3}, 27);
    add_onnx_node(g, "Relu", {"x"}, {"r"});
    add_onnx_node(g, op, {"r", "w"}, {"y"})->set_name("the_conv");
    add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    Status st;
    EXPECT_EQ(build_onnx_engine(m, &st), nullptr) << op;
    EXPECT_NE(st.message().find("the_conv"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("W must have the rank of X (4)"), std::string::npos) << st.message();
  }
}

// libonnx's STFT inference reads the signal's dims 0 and 1 without checking its rank (SIGSEGV on a rank-1 signal);
// the frame length comes from the optional window or frame_length input, either of which may be "".
TEST(BadOnnxInputs, StftSignalRankAndEmptyOptionalInputsReported) {
  auto stft_model = [](const std::vector<int64_t>& signal, const std::vector<std::string>& inputs, bool through_relu) {
    auto m = onnx_model(17);
    auto* g = m.mutable_graph();
    add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, signal));
    auto* step = g->add_initializer();
    step->set_name("step");
    step->set_data_type(onnx::TensorProto::INT64);
    step->add_int64_data(8);
    *g->add_initializer() = float_tensor("window", {16}, 16);
    std::vector<std::string> ins = inputs;
    if (through_relu) add_onnx_node(g, "Relu", {"x"}, {"r"});
    add_onnx_node(g, "STFT", ins, {"y"})->set_name("the_stft");
    add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    return m;
  };
  std::string e = import_errors(stft_model({128}, {"x", "step", "", ""}, false));
  EXPECT_NE(e.find("node 'the_stft' (index 0, STFT): signal 'x' has rank 1; STFT needs [batch, length, 1 or 2]"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("node 'the_stft' (index 0, STFT): neither the optional 'window' (input 2) nor 'frame_length' "
                   "(input 3) is given"),
            std::string::npos)
      << e;
  e = import_errors(stft_model({1, 128, 1}, {"x", "", "window"}, false));
  EXPECT_NE(e.find("node 'the_stft' (index 0, STFT): required input 'frame_step' (input 1) is empty"), std::string::npos)
      << e;
  // An empty frame_length next to a window is fine.
  EXPECT_EQ(import_errors(stft_model({1, 128, 1}, {"x", "step", "window", ""}, false)), "");
  // A signal whose rank only inference knows.
  Status st;
  EXPECT_EQ(build_onnx_engine(stft_model({128}, {"r", "step", "window"}, true), &st), nullptr);
  EXPECT_NE(st.message().find("the_stft"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("signal must have shape [batch, length, 1 or 2]"), std::string::npos) << st.message();
}

// The other way round: a valid STFT without the onesided attribute (default 1: floor(16/2)+1 = 9 bins) was refused,
// as libonnx's inference reads the missing attribute as 0 and declared 16 bins that Kiln's inference contradicted.
// Checked against the DFT written out: X[f, k] = sum_n x[8f + n] w[n] e^(-2 pi i k n / 16), window of ones.
TEST(BadOnnxInputs, StftWithoutOnesidedIsOneSidedNotRefused) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 128, 1}));
  auto* step = g->add_initializer();
  step->set_name("step");
  step->set_data_type(onnx::TensorProto::INT64);
  step->add_int64_data(8);
  *g->add_initializer() = float_tensor("window", {16}, 16);
  add_onnx_node(g, "STFT", {"x", "step", "window"}, {"y"})->set_name("the_stft");
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_TRUE(engine) << st.message();
  std::vector<float> x(128);
  for (int i = 0; i < 128; ++i) x[i] = static_cast<float>((i * 37) % 11) - 5.f;
  HostTensor in;
  in.dims = {1, 128, 1};
  in.data.resize(512);
  std::memcpy(in.data.data(), x.data(), 512);
  auto r = engine->create_execution_context()->infer({{"x", in}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  const HostTensor& y = (*r)[0].second;
  ASSERT_EQ(y.dims, (Dims{1, 15, 9, 2}));
  const float* got = reinterpret_cast<const float*>(y.data.data());
  const double pi = std::acos(-1.0);
  for (int f = 0; f < 15; ++f)
    for (int k = 0; k < 9; ++k) {
      double re = 0, im = 0;
      for (int n = 0; n < 16; ++n) {
        re += x[8 * f + n] * std::cos(2 * pi * k * n / 16);
        im -= x[8 * f + n] * std::sin(2 * pi * k * n / 16);
      }
      EXPECT_NEAR(got[(f * 9 + k) * 2], re, 1e-3) << f << " " << k;
      EXPECT_NEAR(got[(f * 9 + k) * 2 + 1], im, 1e-3) << f << " " << k;
    }
}

// Found by fuzzing the node-test models with mutated attributes and emptied inputs. libonnx's MaxUnpool inference
// reads dim 1 of the indices I through its type without a null or rank check: I given as "" (a required input),
// made by a node libonnx cannot type (a custom-domain op), or of another rank than X crashed (SIGSEGV).
// DepthToSpace divides by blocksize * blocksize, which wrapped to 0 for blocksize 2^40 (SIGFPE).
TEST(BadOnnxInputs, MaxUnpoolIndicesAndDepthToSpaceBlocksizeReported) {
  auto unpool_model = [](const std::string& indices, const std::vector<int64_t>& i_dims, bool custom) {
    auto m = onnx_model(17);
    auto* g = m.mutable_graph();
    add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 1, 2, 2}));
    if (custom) {
      import_opset(m, "com.foo", 1);
      add_onnx_node(g, "Foo", {"x"}, {"i"})->set_domain("com.foo");
    } else if (!indices.empty()) {
      add_graph_input(g, indices, value_type("tensor", onnx::TensorProto::INT64, i_dims));
    }
    auto* n = add_onnx_node(g, "MaxUnpool", {"x", indices}, {"y"});
    n->set_name("the_unpool");
    set_attr_ints(n, "kernel_shape", {2, 2});
    add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    return m;
  };
  std::string e = import_errors(unpool_model("", {}, false));
  EXPECT_NE(e.find("node 'the_unpool' (index 0, MaxUnpool): required input 'I' (input 1) is empty"), std::string::npos)
      << e;
  e = import_errors(unpool_model("i", {4}, false));
  EXPECT_NE(e.find("node 'the_unpool' (index 0, MaxUnpool): indices 'i' have rank 1 but input 'x' has rank 4"),
            std::string::npos)
      << e;
  e = import_errors(unpool_model("i", {}, true));  // Foo's output has no type inside libonnx
  EXPECT_NE(e.find("op_type 'Foo', domain 'com.foo'"), std::string::npos) << e;
  EXPECT_EQ(import_errors(unpool_model("i", {1, 1, 2, 2}, false)), "");

  auto d2s = onnx_model(17);
  auto* g = d2s.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {1, 8, 2, 2}));
  auto* n = add_onnx_node(g, "DepthToSpace", {"x"}, {"y"});
  n->set_name("the_d2s");
  set_attr_int(n, "blocksize", int64_t{1} << 40);
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1, -1}));
  e = import_errors(d2s);
  EXPECT_NE(e.find("node 'the_d2s' (index 0, DepthToSpace): attribute 'blocksize' is 1099511627776"), std::string::npos)
      << e;
}

// Found by fuzzing with emptied inputs: "" in a variadic input list (Max/Min/Sum/Mean, Einsum) reached Kiln's op
// definitions as a value and check_same_dtype read through null (SIGSEGV). "" means an omitted optional input
// only; ONNX's formal parameters say which positions those are, at opsets past the linked library's too when the
// op has not changed since.
TEST(BadOnnxInputs, EmptyNameAtRequiredOrVariadicInputReported) {
  for (int opset : {17, 18}) {
    auto m = onnx_model(opset);
    auto* g = m.mutable_graph();
    add_graph_input(g, "a", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
    add_onnx_node(g, "Sum", {"a", "", "a"}, {"y"})->set_name("the_sum");
    add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
    std::string e = import_errors(m);
    EXPECT_NE(e.find("node 'the_sum' (index 0, Sum): variadic input 'data_0' (input 1) is empty"), std::string::npos)
        << opset << ": " << e;
  }
  // An omitted optional input is fine.
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "a", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  add_graph_input(g, "hi", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  add_onnx_node(g, "Clip", {"a", "", "hi"}, {"y"});
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  EXPECT_EQ(import_errors(m), "");
}

// Found by the ONNX fuzzer (a seed with num_scan_inputs = 2^40): libonnx's Scan inference subtracts it from the
// input count in size_t and sized a vector with the result (a 2^43-byte allocation).
TEST(BadOnnxInputs, ScanNumScanInputsBeyondItsInputsReported) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "s", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {3, 2}));
  onnx::GraphProto body;
  body.set_name("body");
  add_graph_input(&body, "si", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  add_graph_input(&body, "xi", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  add_onnx_node(&body, "Add", {"si", "xi"}, {"so"});
  add_graph_output(&body, "so", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  auto* n = add_onnx_node(g, "Scan", {"s", "x"}, {"y"});
  n->set_name("the_scan");
  set_attr_graph(n, "body", body);
  set_attr_int(n, "num_scan_inputs", int64_t{1} << 40);
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {2}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("node 'the_scan' (index 0, Scan): attribute 'num_scan_inputs' is 1099511627776; the node has 2 "
                   "state and scan inputs, so it must be in [1, 2]"),
            std::string::npos)
      << e;
  n->mutable_attribute(1)->set_i(1);  // the valid count: one state, one scan input
  EXPECT_EQ(import_errors(m), "");
}

// Found by the ONNX fuzzer. libonnx's LayerNormalization inference casts 'axis' to int and indexes the Mean and
// InvStdDev dims with it unchecked (axis 2^63-3: SIGSEGV). An opset-6 graph whose output nothing defines (and
// which has no nodes, so the per-node checks of eaebe84 never looked at it) went to the version converter, whose
// graph import wrote the output's type through null.
TEST(BadOnnxInputs, AxisBeyondRankAndUndefinedOutputOfOldOpsetReported) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {2, 3, 4}));
  add_graph_input(g, "s", value_type("tensor", onnx::TensorProto::FLOAT, {4}));
  auto* n = add_onnx_node(g, "LayerNormalization", {"x", "s"}, {"y", "mean", "inv"});
  n->set_name("the_ln");
  set_attr_int(n, "axis", std::numeric_limits<int64_t>::max() - 2);
  for (const char* o : {"y", "mean", "inv"})
    add_graph_output(g, o, value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("node 'the_ln' (index 0, LayerNormalization): attribute 'axis' is 9223372036854775805 but input "
                   "'x' has rank 3"),
            std::string::npos)
      << e;
  n->mutable_attribute(0)->set_i(-1);
  EXPECT_EQ(import_errors(m), "");

  auto old = onnx_model(6);
  add_graph_output(old.mutable_graph(), "reduced", value_type("tensor", onnx::TensorProto::FLOAT, {3}));
  EXPECT_NE(import_errors(old), "");
}

// Found by the ONNX fuzzer on the PyPI node tests (opset 28, past the linked ONNX library, whose formal
// parameters model_checks uses): Einsum(x, "") reached Kiln's Einsum inference, which read the missing operand
// through null. Kiln's own definitions now say where "" may stand (not below min_inputs, not in a variadic list).
// And Kiln's Reshape inference multiplied a crafted target's dims ([2^40, 2^40, 2^40]) into a signed overflow.
TEST(BadOnnxInputs, EmptyOperandPastLibonnxOpsetsAndReshapeProductOverflowReported) {
  auto m = onnx_model(28);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {2, 3, 4}));
  auto* n = add_onnx_node(g, "Einsum", {"x", ""}, {"y"});
  n->set_name("the_einsum");
  set_attr_string(n, "equation", "bij,bjk->bik");
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1}));
  std::string e = import_errors(m);
  EXPECT_NE(e.find("node 'the_einsum' (index 0, Einsum): input 1 is empty (\"\"), but Einsum needs a value there"),
            std::string::npos)
      << e;

  auto r = onnx_model(17);
  g = r.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {4}));
  auto* shape = g->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(3);
  for (int i = 0; i < 3; ++i) shape->add_int64_data(int64_t{1} << 40);
  add_onnx_node(g, "Reshape", {"x", "shape"}, {"y"})->set_name("the_reshape");
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {-1, -1, -1}));
  Status st;
  EXPECT_EQ(build_onnx_engine(r, &st), nullptr);
  EXPECT_NE(st.message().find("the_reshape"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("has more elements than int64 can count"), std::string::npos) << st.message();
}

// Found by the rank mutants (node-test models with a graph input's declared rank changed). A scalar has no axes,
// yet normalize_axis took axis 0 on rank 0 as dim 0: Split, Compress, Unique, Scan and the reductions then read
// or wrote past the empty shape (SIGSEGV). libonnx's LayerNormalization indexed dim -1 of a scalar X with its
// default axis.
// CumSum's axis is an input, so a scalar's axis 0 is refused when the node runs (ONNX: axis in [-r, r-1], empty for
// a scalar; ONNX Runtime refuses a scalar too): an error naming the node, never a sum. GpuCumSum summed scalars
// before the axis checks; it now leaves them to this test.
TEST(BadOnnxInputs, CumSumOfAScalarIsAnError) {
  auto m = onnx_model(17);
  auto* g = m.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  onnx::TensorProto axis;
  axis.set_name("axis");
  axis.set_data_type(onnx::TensorProto::INT64);
  axis.add_int64_data(0);
  *g->add_initializer() = axis;
  add_onnx_node(g, "CumSum", {"x", "axis"}, {"y"})->set_name("the_sum");
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  std::string msg = st.message();
  if (engine) {
    HostTensor x;
    x.data.assign(4, 0);
    auto r = engine->create_execution_context()->infer({{"x", x}});
    ASSERT_FALSE(r.ok());
    msg = r.status().message();
  }
  EXPECT_NE(msg.find("the_sum"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CumSum axis 0 refers to an input of rank 0, which has no axes"), std::string::npos) << msg;
}

TEST(BadOnnxInputs, AxisOfAScalarReportedNotCrashing) {
  for (const char* op : {"Split", "ReduceMax", "Unique"}) {
    auto m = onnx_model(17);
    auto* g = m.mutable_graph();
    add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {}));
    auto* n = add_onnx_node(g, op, {"x"}, {"y"});
    n->set_name("the_node");
    if (std::string(op) == "ReduceMax") set_attr_ints(n, "axes", {0});
    else set_attr_int(n, "axis", 0);
    add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
    g->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
    Status st;
    EXPECT_EQ(build_onnx_engine(m, &st), nullptr) << op;
    EXPECT_NE(st.message().find("the_node"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("axis 0 refers to an input of rank 0, which has no axes"), std::string::npos)
        << st.message();
  }
  auto ln = onnx_model(17);
  auto* g = ln.mutable_graph();
  add_graph_input(g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  add_graph_input(g, "s", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  add_onnx_node(g, "LayerNormalization", {"x", "s"}, {"y", "mean"})->set_name("the_ln");
  add_graph_output(g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  add_graph_output(g, "mean", value_type("tensor", onnx::TensorProto::FLOAT, {}));
  std::string e = import_errors(ln);
  EXPECT_NE(e.find("node 'the_ln' (index 0, LayerNormalization): attribute 'axis' is -1 (the default) but input 'x' "
                   "has rank 0; it must be in [0, 0]"),
            std::string::npos)
      << e;
}

}  // namespace
}  // namespace kiln::test
