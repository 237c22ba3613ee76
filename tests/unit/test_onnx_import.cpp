// Unit tests for the ONNX importer: models built with the protobuf API, imported into an ir::Graph.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "ir/graph.h"
#include "kiln/network.h"
#include "kiln/onnx_parser.h"
#include "onnx/importer.h"
#include "ops/onnx_versions.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

onnx::ModelProto make_model(int opset = 13) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(opset);
  m.mutable_graph()->set_name("test");
  return m;
}

void import_domain(onnx::ModelProto& m, const std::string& domain, int version) {
  auto* imp = m.add_opset_import();
  imp->set_domain(domain);
  imp->set_version(version);
}

// Dims: a number is a static size, "" an unknown dim, anything else a dim_param.
void set_type(onnx::ValueInfoProto* vi, int elem_type, const std::vector<std::string>& dims) {
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem_type);
  auto* shape = tt->mutable_shape();
  for (auto& d : dims) {
    auto* dim = shape->add_dim();
    if (d.empty()) continue;
    if (std::isdigit(static_cast<unsigned char>(d[0])))
      dim->set_dim_value(std::stoll(d));
    else
      dim->set_dim_param(d);
  }
}

void add_input(onnx::ModelProto& m, const std::string& name, const std::vector<std::string>& dims,
               int elem_type = onnx::TensorProto::FLOAT) {
  auto* vi = m.mutable_graph()->add_input();
  vi->set_name(name);
  set_type(vi, elem_type, dims);
}

void add_output(onnx::ModelProto& m, const std::string& name) {
  auto* vi = m.mutable_graph()->add_output();
  vi->set_name(name);
  vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
}

onnx::NodeProto* add_node(onnx::ModelProto& m, const std::string& op, const std::vector<std::string>& inputs,
                          const std::vector<std::string>& outputs, const std::string& name = "",
                          const std::string& domain = "") {
  auto* n = m.mutable_graph()->add_node();
  n->set_op_type(op);
  n->set_name(name);
  n->set_domain(domain);
  for (auto& i : inputs) n->add_input(i);
  for (auto& o : outputs) n->add_output(o);
  return n;
}

onnx::TensorProto float_tensor(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (auto d : dims) t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
  return t;
}

class QuietLogger : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};
QuietLogger quiet;

struct Imported {
  Status status;
  std::vector<ParserError> errors;
};

Imported import(onnx::ModelProto m, ir::Graph& g, const std::string& base_dir = ".") {
  Imported r;
  r.status = onnx_import::import_model(m, base_dir, g, &r.errors);
  return r;
}

std::vector<float> floats_of(const ir::Value* v) {
  const Tensor& t = *v->constant;
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

fs::path temp_dir(const std::string& tag) {
  fs::path dir = fs::temp_directory_path() / ("kiln_onnx_import_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST(OnnxImport, IdentityKeepsDtypeShapeAndSymbolicDims) {
  auto m = make_model();
  add_input(m, "x", {"N", "3", ""});
  add_node(m, "Identity", {"x"}, {"y"});
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_TRUE(r.errors.empty());
  ASSERT_EQ(g.inputs().size(), 1u);
  const ir::Value* x = g.inputs()[0];
  EXPECT_EQ(x->name, "x");
  EXPECT_EQ(x->dtype, DataType::kFLOAT);
  ASSERT_TRUE(x->rank_known);
  ASSERT_EQ(x->shape.size(), 3u);
  EXPECT_EQ(x->shape[0].sym, "N");
  EXPECT_EQ(x->shape[1], ops::Dim(3));
  EXPECT_FALSE(x->shape[2].is_static());
  EXPECT_FALSE(x->shape[2].sym.empty());  // a fresh symbol: a distinct run-time size
  EXPECT_NE(x->shape[2].sym, "N");

  ASSERT_EQ(g.nodes().size(), 1u);
  const ir::Node& n = *g.nodes()[0];
  EXPECT_EQ(n.op_type, "Identity");
  EXPECT_EQ(n.name, "Identity_0");
  EXPECT_EQ(n.opset, 13);
  EXPECT_EQ(n.domain, "");
  ASSERT_EQ(n.inputs.size(), 1u);
  EXPECT_EQ(n.inputs[0], x);
  ASSERT_EQ(g.outputs().size(), 1u);
  EXPECT_EQ(g.outputs()[0], n.outputs[0]);
  EXPECT_EQ(g.outputs()[0]->name, "y");
  EXPECT_EQ(g.opset(), 13);

  // Declared by ONNX shape inference: same rank and the named dim carried through.
  const ir::Value* y = g.outputs()[0];
  ASSERT_TRUE(y->rank_known);
  ASSERT_EQ(y->shape.size(), 3u);
  EXPECT_EQ(y->shape[0].sym, "N");
  EXPECT_EQ(y->shape[1], ops::Dim(3));
}

TEST(OnnxImport, InferredShapesAreDeclaredOnInnerValues) {
  auto m = make_model();
  add_input(m, "x", {"B", "4"}, onnx::TensorProto::INT64);
  add_node(m, "Identity", {"x"}, {"mid"});
  add_node(m, "Identity", {"mid"}, {"y"});
  add_output(m, "y");
  m.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  const ir::Value* mid = g.find_value("mid");
  ASSERT_NE(mid, nullptr);
  EXPECT_EQ(mid->dtype, DataType::kINT64);
  ASSERT_TRUE(mid->rank_known);
  EXPECT_EQ(ops::shape_to_string(mid->shape), "[B,4]");
}

TEST(OnnxImport, InitializersAndConstantNodesBecomeConstants) {
  // Opset 8: initializers are listed among the graph inputs, as exporters of that era did.
  auto m = make_model(8);
  add_input(m, "x", {"2"});
  add_input(m, "w", {"2"});
  *m.mutable_graph()->add_initializer() = float_tensor("w", {2}, {1.5f, -2.0f});
  auto* c1 = add_node(m, "Constant", {}, {"c_tensor"}, "const_tensor");
  auto* a1 = c1->add_attribute();
  a1->set_name("value");
  a1->set_type(onnx::AttributeProto::TENSOR);
  *a1->mutable_t() = float_tensor("", {2, 1}, {3.f, 4.f});
  auto* c2 = add_node(m, "Constant", {}, {"c_floats"});
  auto* a2 = c2->add_attribute();
  a2->set_name("value_floats");
  a2->set_type(onnx::AttributeProto::FLOATS);
  a2->add_floats(5.f);
  a2->add_floats(6.f);
  a2->add_floats(7.f);
  auto* c3 = add_node(m, "Constant", {}, {"c_int"});
  auto* a3 = c3->add_attribute();
  a3->set_name("value_int");
  a3->set_type(onnx::AttributeProto::INT);
  a3->set_i(42);
  add_node(m, "Identity", {"w"}, {"y1"});
  add_node(m, "Identity", {"c_tensor"}, {"y2"});
  add_node(m, "Identity", {"c_floats"}, {"y3"});
  add_node(m, "Identity", {"c_int"}, {"y4"});
  for (auto o : {"y1", "y2", "y3", "y4"}) add_output(m, o);
  m.mutable_graph()->mutable_output(3)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);

  ir::Graph g;
  auto r = import(m, g);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  ASSERT_EQ(g.inputs().size(), 1u);  // w is a constant, not an input
  EXPECT_EQ(g.inputs()[0]->name, "x");
  EXPECT_EQ(g.nodes().size(), 4u);  // Constant nodes are folded away

  const ir::Value* w = g.find_value("w");
  ASSERT_TRUE(w && w->is_constant());
  EXPECT_EQ(floats_of(w), (std::vector<float>{1.5f, -2.0f}));
  const ir::Value* ct = g.find_value("c_tensor");
  ASSERT_TRUE(ct && ct->is_constant());
  EXPECT_EQ(ct->constant->shape(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(floats_of(ct), (std::vector<float>{3.f, 4.f}));
  const ir::Value* cf = g.find_value("c_floats");
  ASSERT_TRUE(cf && cf->is_constant());
  EXPECT_EQ(floats_of(cf), (std::vector<float>{5.f, 6.f, 7.f}));
  const ir::Value* ci = g.find_value("c_int");
  ASSERT_TRUE(ci && ci->is_constant());
  EXPECT_EQ(ci->dtype, DataType::kINT64);
  EXPECT_EQ(ci->constant->rank(), 0);
  EXPECT_EQ(ci->constant->data<int64_t>()[0], 42);
  EXPECT_EQ(g.nodes()[0]->inputs[0], w);
}

TEST(OnnxImport, ExternalDataIsReadRelativeToTheModelDirectory) {
  fs::path dir = temp_dir("external");
  std::vector<float> payload = {0.f, 0.f, 1.f, 2.f, 3.f, 4.f};  // tensor starts at byte offset 8
  {
    std::ofstream f(dir / "weights.bin", std::ios::binary);
    f.write(reinterpret_cast<const char*>(payload.data()), payload.size() * sizeof(float));
  }
  auto m = make_model();
  onnx::TensorProto w;
  w.set_name("w");
  w.set_data_type(onnx::TensorProto::FLOAT);
  w.add_dims(2);
  w.add_dims(2);
  w.set_data_location(onnx::TensorProto::EXTERNAL);
  auto kv = [&](const char* k, const char* v) {
    auto* e = w.add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  kv("location", "weights.bin");
  kv("offset", "8");
  kv("length", "16");
  *m.mutable_graph()->add_initializer() = w;
  add_node(m, "Identity", {"w"}, {"y"});
  add_output(m, "y");

  ir::Graph g;
  auto r = import(m, g, dir.string());
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  const ir::Value* v = g.find_value("w");
  ASSERT_TRUE(v && v->is_constant());
  EXPECT_EQ(floats_of(v), (std::vector<float>{1.f, 2.f, 3.f, 4.f}));

  // Through the public parser: the base directory is the model file's own.
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));
  {
    std::ofstream f(dir / "model.onnx", std::ios::binary);
    f << bytes;
  }
  NetworkDefinition net;
  OnnxParser parser(net);
  Status st = parser.parse_from_file((dir / "model.onnx").string());
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(floats_of(net.graph().find_value("w")), (std::vector<float>{1.f, 2.f, 3.f, 4.f}));

  // A missing file names the tensor.
  ir::Graph g2;
  auto r2 = import(m, g2, (dir / "elsewhere").string());
  EXPECT_FALSE(r2.status.ok());
  EXPECT_NE(r2.status.message().find("'w'"), std::string::npos) << r2.status.message();
  fs::remove_all(dir);
}

TEST(OnnxImport, MalformedBytesAreRejected) {
  NetworkDefinition net;
  OnnxParser parser(net, quiet);
  const std::string junk = "\xff\xff\xff\xff this is not protobuf";
  Status st = parser.parse(junk.data(), junk.size());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kInvalidModel);
  EXPECT_NE(st.message().find("failed to parse ONNX protobuf"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("not a valid ModelProto"), std::string::npos) << st.message();
  EXPECT_EQ(parser.num_errors(), 1);

  fs::path dir = temp_dir("malformed");
  {
    std::ofstream f(dir / "x.onnx", std::ios::binary);
    f << junk;
  }
  st = parser.parse_from_file((dir / "x.onnx").string());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("x.onnx' (" + std::to_string(junk.size()) + " bytes): not a valid ModelProto"),
            std::string::npos)
      << st.message();
  fs::remove_all(dir);

  st = parser.parse("", 0);  // protobuf parses this as an empty message
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not a valid ModelProto"), std::string::npos) << st.message();

  st = parser.parse_from_file("/nonexistent/kiln/model.onnx");
  EXPECT_EQ(st.code(), ErrorCode::kIoError);
}

TEST(OnnxImport, EveryUnsupportedNodeIsListed) {
  auto m = make_model();
  import_domain(m, "com.example", 2);
  add_input(m, "x", {"4"});
  add_node(m, "KilnNoSuchOpA", {"x"}, {"a"}, "first");
  add_node(m, "Identity", {"a"}, {"b"}, "fine");
  add_node(m, "KilnNoSuchOpB", {"b"}, {"c"});
  add_node(m, "Custom", {"c"}, {"y"}, "third", "com.example");
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), ErrorCode::kUnsupported);
  ASSERT_EQ(r.errors.size(), 3u) << r.status.message();
  EXPECT_EQ(r.errors[0].node_name, "first");
  EXPECT_EQ(r.errors[0].node_index, 0);
  EXPECT_EQ(r.errors[0].op_type, "KilnNoSuchOpA");
  EXPECT_EQ(r.errors[0].opset, 13);
  EXPECT_EQ(r.errors[1].node_name, "KilnNoSuchOpB_2");
  EXPECT_EQ(r.errors[1].node_index, 2);
  EXPECT_EQ(r.errors[2].domain, "com.example");
  EXPECT_EQ(r.errors[2].opset, 2);
  const std::string& msg = r.status.message();
  EXPECT_NE(msg.find("3 unsupported nodes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("node 'first' (index 0): op_type 'KilnNoSuchOpA', domain 'ai.onnx', opset 13"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("node 'KilnNoSuchOpB_2' (index 2): op_type 'KilnNoSuchOpB', domain 'ai.onnx', opset 13"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("node 'third' (index 3): op_type 'Custom', domain 'com.example', opset 2"), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("'fine'"), std::string::npos) << msg;
}

// Kiln implements a few ai.onnx.ml ops (Binarizer), so a vendor domain stands for one it knows nothing of.
TEST(OnnxImport, UnknownDomainNamesEachNode) {
  auto m = make_model();
  import_domain(m, "com.example.vendor", 3);
  add_input(m, "x", {"4"});
  auto* n = add_node(m, "Threshold", {"x"}, {"a"}, "bin1", "com.example.vendor");
  (void)n;
  add_node(m, "Threshold", {"a"}, {"y"}, "bin2", "com.example.vendor");
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  ASSERT_EQ(r.errors.size(), 2u) << r.status.message();
  for (auto& e : r.errors) {
    EXPECT_EQ(e.domain, "com.example.vendor");
    EXPECT_NE(e.description.find("domain 'com.example.vendor'"), std::string::npos) << e.description;
  }
  EXPECT_NE(r.status.message().find("'bin1'"), std::string::npos);
  EXPECT_NE(r.status.message().find("'bin2'"), std::string::npos);
}

TEST(OnnxImport, OpsetNewerThanKnownIsRejected) {
  auto m = make_model(99);
  add_input(m, "x", {"4"});
  add_node(m, "Identity", {"x"}, {"y"});
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.status.message().find("opset 99"), std::string::npos) << r.status.message();
  // The bound is the generated op-version table's newest opset, not the linked ONNX library's.
  std::string bound = std::to_string(ops::onnx_table_newest_opset());
  EXPECT_NE(r.status.message().find("(" + bound + ", onnx "), std::string::npos) << r.status.message();
  EXPECT_GE(onnx_import::newest_known_onnx_opset(), 17);
}

TEST(OnnxImport, OldOpsetIsUpgradedByTheVersionConverter) {
  auto m = make_model(6);
  add_input(m, "x", {"4"});
  add_node(m, "Identity", {"x"}, {"y"});
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0]->opset, onnx_import::kMinOnnxOpset);
}

TEST(OnnxImport, DanglingInputNamesNodeAndTensor) {
  auto m = make_model();
  add_input(m, "x", {"4"});
  add_node(m, "Identity", {"x"}, {"a"});
  add_node(m, "Identity", {"a"}, {"b"});
  add_node(m, "Identity", {"b"}, {"c"});
  add_node(m, "Identity", {"foo"}, {"y"}, "Add_3");
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), ErrorCode::kInvalidModel);
  ASSERT_EQ(r.errors.size(), 1u) << r.status.message();
  EXPECT_EQ(r.errors[0].node_name, "Add_3");
  EXPECT_EQ(r.errors[0].node_index, 3);
  EXPECT_EQ(r.status.message(),
            "node 'Add_3' (index 3, Identity): input 'foo' is not produced by any node, graph input or initializer");
}

TEST(OnnxImport, CycleIsDetected) {
  auto m = make_model();
  add_input(m, "x", {"4"});
  add_node(m, "Identity", {"q"}, {"p"}, "loop_a");
  add_node(m, "Identity", {"p"}, {"q"}, "loop_b");
  add_node(m, "Identity", {"x"}, {"y"});
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("cycle"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("loop_a"), std::string::npos) << r.status.message();
}

TEST(OnnxImport, NodesOutOfOrderAreSorted) {
  auto m = make_model();
  add_input(m, "x", {"4"});
  add_node(m, "Identity", {"a"}, {"y"}, "second");
  add_node(m, "Identity", {"x"}, {"a"}, "first");
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(g.nodes()[0]->name, "first");
  EXPECT_EQ(g.nodes()[1]->name, "second");
}

TEST(OnnxImport, AttributeOfWrongTypeNamesNodeAndAttribute) {
  auto m = make_model(10);
  add_input(m, "x", {"4"});
  auto* n = add_node(m, "Dropout", {"x"}, {"y"}, "drop");
  auto* a = n->add_attribute();
  a->set_name("ratio");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("half");
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  ASSERT_EQ(r.errors.size(), 1u) << r.status.message();
  EXPECT_EQ(r.errors[0].node_name, "drop");
  const std::string& msg = r.status.message();
  EXPECT_NE(msg.find("node 'drop' (index 0, Dropout)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'ratio'"), std::string::npos) << msg;
}

// Graph attributes (If/Loop/Scan bodies) are imported; lists of graphs, which no ai.onnx operator takes, are not.
TEST(OnnxImport, GraphListsAndStringConstantsAreUnsupportedPerNode) {
  auto m = make_model();
  add_input(m, "cond", {}, onnx::TensorProto::BOOL);
  auto* c = add_node(m, "Constant", {}, {"s"}, "strings");
  auto* ca = c->add_attribute();
  ca->set_name("value_strings");
  ca->set_type(onnx::AttributeProto::STRINGS);
  ca->add_strings("a");
  auto* iff = add_node(m, "If", {"cond"}, {"y"}, "branch");
  for (const char* name : {"then_branch", "else_branch"}) {
    auto* a = iff->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::GRAPHS);
    a->add_graphs()->set_name(name);
  }
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  ASSERT_EQ(r.errors.size(), 2u) << r.status.message();
  EXPECT_EQ(r.errors[0].node_name, "strings");
  EXPECT_NE(r.errors[0].description.find("value_strings"), std::string::npos);
  EXPECT_EQ(r.errors[1].node_name, "branch");
  EXPECT_NE(r.errors[1].description.find("then_branch"), std::string::npos) << r.errors[1].description;
}

TEST(OnnxImport, CheckerComplaintsNameTheNode) {
  // Kiln's Dropout accepts `ratio` (an attribute before opset 12); ONNX's checker knows opset 13 made it an input.
  auto m = make_model(13);
  add_input(m, "x", {"4"});
  auto* n = add_node(m, "Dropout", {"x"}, {"y"}, "drop13");
  auto* a = n->add_attribute();
  a->set_name("ratio");
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(0.5f);
  add_output(m, "y");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  ASSERT_EQ(r.errors.size(), 1u) << r.status.message();
  EXPECT_EQ(r.errors[0].node_name, "drop13");
  EXPECT_NE(r.status.message().find("ONNX checker"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("ratio"), std::string::npos) << r.status.message();
}

TEST(OnnxImport, GraphLevelProblemsAreAllReported) {
  auto m = make_model();
  add_input(m, "x", {"4"});
  add_node(m, "Identity", {"x"}, {"a"}, "one");
  add_node(m, "Identity", {"x"}, {"a"}, "two");  // not SSA
  add_output(m, "missing");
  ir::Graph g;
  auto r = import(m, g);
  ASSERT_FALSE(r.status.ok());
  const std::string& msg = r.status.message();
  EXPECT_NE(msg.find("node 'two' (index 1, Identity): output 'a' is also produced by node 'one'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("graph output 'missing' is not produced"), std::string::npos) << msg;
}
