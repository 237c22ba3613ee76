// Sequence and optional values end to end: ONNX import of their types, engine round trip of a sequence-valued
// graph (value kinds in the file), the runtime's infer() with sequence inputs and outputs, Loop-carried sequences.
#include <gtest/gtest.h>

#include "common/engine_format.h"
#include "onnx_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr int kI64 = onnx::TensorProto::INT64;
constexpr int kBool = onnx::TensorProto::BOOL;

// seq_in: seq(float[?]), x: float[2,3] ->
//   n = SequenceLength(seq_in), last = SequenceAt(seq_in, -1), pieces = SplitToSequence(x, axis=1),
//   cat = ConcatFromSequence(pieces, axis=0), opt = Optional(seq_in)
onnx::ModelProto sequence_model() {
  auto m = onnx_model(15);
  auto* g = m.mutable_graph();
  add_graph_input(g, "seq_in", value_type("seq", kF32, {-1}));
  add_graph_input(g, "x", value_type("tensor", kF32, {2, 3}));
  add_onnx_node(g, "SequenceLength", {"seq_in"}, {"n"});
  add_int_constant(g, "minus1", -1);
  add_onnx_node(g, "SequenceAt", {"seq_in", "minus1"}, {"last"});
  set_attr_int(add_onnx_node(g, "SplitToSequence", {"x"}, {"pieces"}), "axis", 1);
  set_attr_int(add_onnx_node(g, "ConcatFromSequence", {"pieces"}, {"cat"}), "axis", 0);
  add_onnx_node(g, "Optional", {"seq_in"}, {"opt"});
  add_graph_output(g, "n", value_type("tensor", kI64, {}));
  add_graph_output(g, "last", value_type("tensor", kF32, {-1}));
  add_graph_output(g, "pieces", value_type("seq", kF32, {2, 1}));
  add_graph_output(g, "cat", value_type("tensor", kF32, {6, 1}));
  add_graph_output(g, "opt", value_type("optional_seq", kF32, {-1}));
  return m;
}

void check_sequence_outputs(const Engine& engine) {
  HostTensor seq = host_sequence(DataType::kFLOAT, {host_f32({2}, {1, 2}), host_f32({3}, {3, 4, 5})});
  auto out = run_engine(engine, {{"seq_in", seq}, {"x", host_f32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out["n"].kind, ValueKind::kTENSOR);
  EXPECT_EQ(host_values<int64_t>(out["n"]), (std::vector<int64_t>{2}));
  EXPECT_EQ(out["last"].dims, (Dims{3}));
  EXPECT_EQ(host_values<float>(out["last"]), (std::vector<float>{3, 4, 5}));
  // x's columns [1,4], [2,5], [3,6], each 2x1, then stacked into 6x1.
  const HostTensor& pieces = out["pieces"];
  EXPECT_EQ(pieces.kind, ValueKind::kSEQUENCE);
  EXPECT_EQ(pieces.dtype, DataType::kFLOAT);
  ASSERT_EQ(pieces.elements.size(), 3u);
  EXPECT_EQ(pieces.elements[1].dims, (Dims{2, 1}));
  EXPECT_EQ(host_values<float>(pieces.elements[1]), (std::vector<float>{2, 5}));
  EXPECT_EQ(out["cat"].dims, (Dims{6, 1}));
  EXPECT_EQ(host_values<float>(out["cat"]), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  const HostTensor& opt = out["opt"];
  EXPECT_EQ(opt.kind, ValueKind::kOPTIONAL_SEQUENCE);
  ASSERT_EQ(opt.elements.size(), 1u);
  EXPECT_EQ(opt.elements[0].kind, ValueKind::kSEQUENCE);
  ASSERT_EQ(opt.elements[0].elements.size(), 2u);
  EXPECT_EQ(host_values<float>(opt.elements[0].elements[0]), (std::vector<float>{1, 2}));
}

}  // namespace

TEST(Sequences, EndToEndAndEngineRoundTrip) {
  Status st;
  auto engine = build_onnx_engine(sequence_model(), &st);
  ASSERT_TRUE(engine) << st.to_string();
  EXPECT_EQ(engine->get_tensor_kind("seq_in"), ValueKind::kSEQUENCE);
  EXPECT_EQ(engine->get_tensor_kind("x"), ValueKind::kTENSOR);
  EXPECT_EQ(engine->get_tensor_kind("pieces"), ValueKind::kSEQUENCE);
  EXPECT_EQ(engine->get_tensor_kind("opt"), ValueKind::kOPTIONAL_SEQUENCE);
  check_sequence_outputs(*engine);

  // The kinds are in the file: decode its records, then load the bytes again and get the same results.
  std::vector<uint8_t> bytes = engine->serialize();
  auto file = engine_format::decode(bytes.data(), bytes.size());
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  std::map<std::string, ValueKind> kinds;
  for (auto& v : file->values) kinds[v.name] = v.kind;
  EXPECT_EQ(kinds["seq_in"], ValueKind::kSEQUENCE);
  EXPECT_EQ(kinds["pieces"], ValueKind::kSEQUENCE);
  EXPECT_EQ(kinds["opt"], ValueKind::kOPTIONAL_SEQUENCE);
  EXPECT_EQ(kinds["cat"], ValueKind::kTENSOR);
  SilentLogger quiet;
  Runtime rt(quiet);
  auto again = rt.deserialize_engine(bytes.data(), bytes.size());
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  check_sequence_outputs(**again);

}

TEST(Sequences, EngineFormatRejectsBadValueKinds) {
  // Bits 1-2 of a value's flag byte hold its kind; a kind past the last one, or a constant that is not a tensor,
  // is a corrupt file.
  engine_format::EngineFile f;
  engine_format::ValueRecord v;
  v.name = "v";
  v.shape = {ops::Dim(1)};
  f.values = {v};
  f.io = {{0, TensorIOMode::kINPUT}};
  auto ok = engine_format::encode(f, {nullptr});
  ASSERT_TRUE(ok.ok());
  ASSERT_TRUE(engine_format::decode(ok->data(), ok->size()).ok());
  f.values[0].kind = static_cast<ValueKind>(7);
  auto bytes = engine_format::encode(f, {nullptr});
  ASSERT_TRUE(bytes.ok());
  auto r = engine_format::decode(bytes->data(), bytes->size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("value 'v' has an invalid flag byte"), std::string::npos) << r.status().message();

  Tensor one = Tensor::from_vector<float>({1}, {1.f});
  f.values[0].kind = ValueKind::kSEQUENCE;
  f.values[0].is_constant = true;
  f.io.clear();
  bytes = engine_format::encode(f, {&one});
  ASSERT_TRUE(bytes.ok());
  r = engine_format::decode(bytes->data(), bytes->size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("constant 'v' is a sequence; constants are tensors"), std::string::npos)
      << r.status().message();
}

TEST(Sequences, InputsAreCheckedAndExecuteRefusesThem) {
  Status st;
  auto engine = build_onnx_engine(sequence_model(), &st);
  ASSERT_TRUE(engine) << st.to_string();
  auto ctx = engine->create_execution_context();
  auto r = ctx->infer({{"seq_in", host_f32({2}, {1, 2})}, {"x", host_f32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("input 'seq_in' expects a sequence but got a tensor"), std::string::npos)
      << r.status().message();
  HostTensor mixed = host_sequence(DataType::kFLOAT, {host_f32({1}, {1}), host_f32({2}, {1, 2})});
  mixed.elements[1].data.pop_back();  // 7 bytes for 2 floats
  r = ctx->infer({{"seq_in", mixed}, {"x", host_f32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("input 'seq_in' element 1 has 7 bytes"), std::string::npos)
      << r.status().message();
  // SequenceAt(-1) of an empty sequence fails at run time with the position and length.
  r = ctx->infer({{"seq_in", host_sequence(DataType::kFLOAT, {})}, {"x", host_f32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("out of range"), std::string::npos) << r.status().message();

  Status ex = ctx->execute();
  ASSERT_FALSE(ex.ok());
  EXPECT_EQ(ex.code(), ErrorCode::kUnsupported);
  EXPECT_NE(ex.message().find("use infer()"), std::string::npos) << ex.message();
}

// A Loop carries a sequence: starting empty, each iteration appends its float(iteration number).
TEST(Sequences, LoopCarriesASequence) {
  auto m = onnx_model(13);
  auto* g = m.mutable_graph();
  add_graph_input(g, "trip", value_type("tensor", kI64, {}));
  add_graph_input(g, "cond", value_type("tensor", kBool, {}));
  add_onnx_node(g, "SequenceEmpty", {}, {"empty"});
  onnx::GraphProto body;
  body.set_name("body");
  add_graph_input(&body, "i", value_type("tensor", kI64, {}));
  add_graph_input(&body, "c", value_type("tensor", kBool, {}));
  add_graph_input(&body, "s", value_type("seq", kF32, {}));
  set_attr_int(add_onnx_node(&body, "Cast", {"i"}, {"f"}), "to", kF32);
  add_onnx_node(&body, "SequenceInsert", {"s", "f"}, {"s_out"});
  add_onnx_node(&body, "Identity", {"c"}, {"c_out"});
  add_graph_output(&body, "c_out", value_type("tensor", kBool, {}));
  add_graph_output(&body, "s_out", value_type("seq", kF32, {}));
  set_attr_graph(add_onnx_node(g, "Loop", {"trip", "cond", "empty"}, {"result"}), "body", body);
  auto* stack = add_onnx_node(g, "ConcatFromSequence", {"result"}, {"stacked"});
  set_attr_int(stack, "axis", 0);
  set_attr_int(stack, "new_axis", 1);
  add_graph_output(g, "result", value_type("seq", kF32, {}));
  add_graph_output(g, "stacked", value_type("tensor", kF32, {-1}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  HostTensor trip;
  trip.dtype = DataType::kINT64;
  trip.data.resize(8);
  int64_t three = 3;
  std::memcpy(trip.data.data(), &three, 8);
  HostTensor cond;
  cond.dtype = DataType::kBOOL;
  cond.data = {1};
  auto out = run_engine(*engine, {{"trip", trip}, {"cond", cond}});
  ASSERT_EQ(out["result"].elements.size(), 3u);
  EXPECT_EQ(host_values<float>(out["result"].elements[2]), (std::vector<float>{2}));
  EXPECT_EQ(out["stacked"].dims, (Dims{3}));
  EXPECT_EQ(host_values<float>(out["stacked"]), (std::vector<float>{0, 1, 2}));
}

TEST(Sequences, ImportNamesTypesItCannotHold) {
  auto m = onnx_model(15);
  auto* g = m.mutable_graph();
  onnx::TypeProto map;
  map.mutable_map_type()->set_key_type(kI64);
  tensor_type(map.mutable_map_type()->mutable_value_type(), kF32, {});
  add_graph_input(g, "m", map);
  onnx::TypeProto nested;
  tensor_type(nested.mutable_sequence_type()->mutable_elem_type()->mutable_sequence_type()->mutable_elem_type(), kF32, {});
  add_graph_input(g, "nested", nested);
  add_graph_input(g, "x", value_type("tensor", kF32, {1}));
  add_onnx_node(g, "Identity", {"x"}, {"y"});
  add_graph_output(g, "y", value_type("tensor", kF32, {1}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_FALSE(engine);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("graph input 'm': type map(int64, float32) is not supported"), std::string::npos)
      << st.message();
}

TEST(Sequences, TensorOperatorRejectsASequenceAtBuild) {
  auto m = onnx_model(15);
  auto* g = m.mutable_graph();
  add_graph_input(g, "s", value_type("seq", kF32, {2}));
  add_onnx_node(g, "Relu", {"s"}, {"y"});
  add_graph_output(g, "y", value_type("tensor", kF32, {2}));
  Status st;
  auto engine = build_onnx_engine(m, &st);
  ASSERT_FALSE(engine);
  EXPECT_NE(st.message().find("is a sequence but the operator takes tensors only"), std::string::npos)
      << st.message();
}
