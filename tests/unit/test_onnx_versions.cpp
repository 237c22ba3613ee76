// Unit tests for the operator-version rule: models past ONNX 1.12's opset 17 import per node, by op version.
#include <gtest/gtest.h>

#include <array>
#include <optional>

#include "ir/graph.h"
#include "onnx/importer.h"
#include "ops/onnx_versions.h"
#include "ops/op.h"

using namespace kiln;

namespace {

onnx::ModelProto make_model(int opset) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(opset);
  m.mutable_graph()->set_name("versions");
  return m;
}

void add_value(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list, const std::string& name) {
  auto* vi = list->Add();
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_value(2);
  tt->mutable_shape()->add_dim()->set_dim_value(3);
}

// x -> op -> y with one unary/binary elementwise node named `name`.
onnx::ModelProto elementwise_model(int opset, const std::string& op, const std::string& name, bool binary = false) {
  auto m = make_model(opset);
  auto* g = m.mutable_graph();
  add_value(g->mutable_input(), "x");
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(name);
  n->add_input("x");
  if (binary) n->add_input("x");
  n->add_output("y");
  add_value(g->mutable_output(), "y");
  return m;
}

struct Imported {
  Status status;
  std::vector<ParserError> errors;
};

Imported import(onnx::ModelProto m, ir::Graph& g) {
  Imported r;
  r.status = onnx_import::import_model(m, ".", g, &r.errors);
  return r;
}

// A unary op whose newest ONNX version is past what Kiln implements, and that version; the test does not hard-code
// one because raising max_version as ops catch up would silently turn it into a passing import.
std::pair<std::string, int> op_with_unimplemented_version() {
  static const std::array<const char*, 12> candidates = {"Acos", "Asin", "Atan", "Cos",  "Sin",      "Tan",
                                                         "Cosh", "Sinh", "Exp",  "Log", "Softplus", "Round"};
  for (const char* op : candidates) {
    const ops::OpSchema* s = ops::OpRegistry::instance().find(op);
    if (!s) continue;
    for (int v : ops::onnx_op_versions(op))
      if (v > s->max_version) return {op, v};
  }
  return {"", 0};
}

}  // namespace

TEST(OnnxVersions, TableKnowsOpsetsPastTheOnnxLibrary) {
  EXPECT_GE(ops::onnx_table_newest_opset(), 18);
  auto add = ops::onnx_op_versions("Add");
  ASSERT_FALSE(add.empty());
  EXPECT_EQ(add.front(), 1);
  EXPECT_TRUE(ops::onnx_op_versions("NoSuchOp").empty());
  EXPECT_EQ(ops::onnx_op_version_at("Add", 12), 7);
  EXPECT_EQ(ops::onnx_op_version_at("Add", 19), 14);
  EXPECT_EQ(ops::onnx_op_version_at("Gelu", 15), 0);  // introduced in opset 20
}

TEST(OnnxVersions, RegistryDefaultsMaxVersionToOnnx112) {
  const ops::OpSchema* add = ops::OpRegistry::instance().find("Add");
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->max_version, 14);
  // Ops newer than ONNX 1.12 default to the version their since_opset selects.
  if (const ops::OpSchema* c = ops::OpRegistry::instance().find("Col2Im")) EXPECT_EQ(c->max_version, 18);
}

TEST(OnnxVersions, NodeNewerThanImplementedFailsNamingNodeAndVersions) {
  auto [op, version] = op_with_unimplemented_version();
  // Every real op may catch up with ONNX; then pin one below its newest version for this test and restore it.
  std::optional<ops::OpSchema> saved;
  if (op.empty()) {
    op = "Acos";
    saved = *ops::OpRegistry::instance().find(op);
    auto versions = ops::onnx_op_versions(op);
    ASSERT_GE(versions.size(), 2u);
    version = versions.back();
    ops::OpSchema pinned = *saved;
    pinned.max_version = versions[versions.size() - 2];
    ops::OpRegistry::instance().add(pinned);
  }
  struct Restore {
    std::optional<ops::OpSchema>& s;
    ~Restore() { if (s) ops::OpRegistry::instance().add(*s); }
  } restore{saved};
  const int implemented = ops::OpRegistry::instance().find(op)->max_version;
  ir::Graph g;
  auto r = import(elementwise_model(version, op, "too_new"), g);
  ASSERT_FALSE(r.status.ok());
  EXPECT_EQ(r.status.code(), ErrorCode::kUnsupported);
  const std::string msg = r.status.to_string();
  EXPECT_NE(msg.find("node 'too_new' (index 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find(op + " version " + std::to_string(version) + " (opset " + std::to_string(version) + ")"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("newer than Kiln implements (" + std::to_string(implemented) + ")"), std::string::npos) << msg;
  ASSERT_FALSE(r.errors.empty());
  EXPECT_EQ(r.errors[0].node_name, "too_new");
  EXPECT_EQ(r.errors[0].node_index, 0);
}

TEST(OnnxVersions, Opset19ModelWithUnchangedOpImports) {
  ir::Graph g;
  auto r = import(elementwise_model(19, "Add", "add", /*binary=*/true), g);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  ASSERT_EQ(g.nodes().size(), 1u);
  EXPECT_EQ(g.nodes()[0]->opset, 19);
  ASSERT_EQ(g.outputs().size(), 1u);
  EXPECT_EQ(ops::shape_to_string(g.outputs()[0]->shape), "[2,3]");
}

TEST(OnnxVersions, OpsetBeyondTheTableFailsNamingEachNode) {
  const int opset = ops::onnx_table_newest_opset() + 1;
  ir::Graph g;
  auto r = import(elementwise_model(opset, "Add", "add", /*binary=*/true), g);
  ASSERT_FALSE(r.status.ok());
  const std::string msg = r.status.to_string();
  EXPECT_NE(msg.find("node 'add' (index 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("opset " + std::to_string(opset) + " is newer than the newest Kiln knows"), std::string::npos)
      << msg;
}

TEST(OnnxVersions, OpUsedBeforeItExistsFails) {
  ir::Graph g;
  auto r = import(elementwise_model(15, "Gelu", "gelu"), g);
  ASSERT_FALSE(r.status.ok());
  const std::string msg = r.status.to_string();
  EXPECT_NE(msg.find("node 'gelu' (index 0"), std::string::npos) << msg;
  if (ops::OpRegistry::instance().find("Gelu"))
    EXPECT_NE(msg.find("Gelu does not exist in ai.onnx opset 15 (it was introduced in opset 20)"), std::string::npos)
        << msg;
}
