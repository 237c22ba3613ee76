// lower_einsum: Einsum as Transpose/Reshape/MatMul/ReduceSum in the CUDA pass list. Each equation's lowered graph,
// run by the reference kernels, against the Einsum reference kernel on the same random inputs; what it leaves as
// Einsum; an attention written as einsums fusing; and the ONNX suite's Einsum tests (`make test-node` runs those).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cnn_test_util.h"
#include "engine_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "onnx/proto_convert.h"
#include "onnx_model_util.h"
#include "passes/pass.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using test::count_ops;

struct EinsumCase {
  std::string eq;
  std::vector<std::vector<int64_t>> shapes;
};

// The graph: inputs of these shapes, one Einsum, its output. With `symbolic_batch` the first operand's first label
// is a symbolic dim in every operand that starts with that label.
std::unique_ptr<ir::Graph> einsum_graph(const EinsumCase& c, bool symbolic_batch, DataType dt = DataType::kFLOAT) {
  auto g = std::make_unique<ir::Graph>();
  g->set_opset(17);
  std::vector<ir::Value*> in;
  std::vector<char> first;  // each operand's first label
  for (size_t b = 0; b < c.eq.size(); b = c.eq.find(',', b) + 1) {
    first.push_back(c.eq[b]);
    if (c.eq.find(',', b) == std::string::npos || c.eq.find(',', b) > c.eq.find("->")) break;
  }
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    ops::Shape s = ops::shape_from_dims(c.shapes[i]);
    if (symbolic_batch && !s.empty() && i < first.size() && first[i] == first[0]) s[0] = ops::Dim::symbol("N");
    in.push_back(test::add_input(*g, "x" + std::to_string(i), dt, s));
  }
  Attributes a;
  a.set("equation", c.eq);
  g->outputs().push_back(g->add_node("Einsum", "einsum", in, {"y"}, std::move(a), 17)->outputs[0]);
  return g;
}

std::vector<Tensor> inputs_for(const EinsumCase& c, DataType dt = DataType::kFLOAT) {
  std::vector<Tensor> t;
  for (size_t i = 0; i < c.shapes.size(); ++i) t.push_back(test::random_tensor(dt, c.shapes[i], 10 + i));
  return t;
}

void expect_lowered_matches(const EinsumCase& c, bool symbolic_batch) {
  SCOPED_TRACE(c.eq + (symbolic_batch ? " (symbolic batch)" : ""));
  auto g = einsum_graph(c, symbolic_batch);
  const std::vector<Tensor> in = inputs_for(c);
  const std::vector<Tensor> want = test::run_reference(*g, in);
  ASSERT_TRUE(test::run_cuda_pipeline(*g, DataType::kFLOAT).ok());
  EXPECT_EQ(count_ops(*g, "Einsum"), 0);
  EXPECT_EQ(g->outputs()[0]->name, "y");
  const std::vector<Tensor> got = test::run_reference(*g, in);
  ASSERT_EQ(got.size(), 1u);
  test::expect_close(got[0], want[0], 1e-4, 1e-4);
}

TEST(LowerEinsum, EquationsMatchTheReference) {
  const EinsumCase cases[] = {
      {"ij,jk->ik", {{3, 4}, {4, 5}}},
      {"bij,bjk->bik", {{2, 3, 4}, {2, 4, 5}}},
      {"bhqd,bhkd->bhqk", {{2, 3, 5, 8}, {2, 3, 7, 8}}},
      {"bhqk,bhkd->bhqd", {{2, 3, 5, 7}, {2, 3, 7, 8}}},
      {"bqhd,bkhd->bhqk", {{2, 5, 3, 8}, {2, 7, 3, 8}}},
      {"bhqk,bkhd->bqhd", {{2, 3, 5, 7}, {2, 7, 3, 8}}},
      {"bsd,de->bse", {{2, 5, 6}, {6, 4}}},
      {"bsd,ed->bse", {{2, 5, 6}, {4, 6}}},
      {"abc,cd->abd", {{2, 3, 4}, {4, 5}}},
      {"bn,anm->bam", {{3, 4}, {2, 4, 5}}},
      {"i,i->", {{6}, {6}}},
      {"i,j->ij", {{3}, {4}}},
      {"ij,ij->i", {{3, 4}, {3, 4}}},
      {"ij,jk", {{3, 4}, {4, 5}}},  // implicit output: ik
      {"...ij,...jk->...ik", {{2, 3, 4, 5}, {2, 3, 5, 6}}},
      {"...ij,...jk->...ik", {{2, 3, 4, 5}, {3, 5, 6}}},  // shorter ellipsis broadcasts
      {"bij,bkj->bik", {{1, 3, 4}, {2, 5, 4}}},           // batch 1 against 2 broadcasts
      {"ijk,jl->il", {{3, 4, 5}, {4, 2}}},                // k only in A and not out: summed first
      {"ij->ji", {{3, 4}}},
      {"ij->i", {{3, 4}}},
      {"ijk->kji", {{2, 3, 4}}},
      {"ij->", {{3, 4}}},
      {"ij->ij", {{3, 4}}},
  };
  for (const EinsumCase& c : cases) expect_lowered_matches(c, false);
  // A dynamic batch: Reshapes copy batch dims (0) or take it as their one -1.
  for (const EinsumCase& c : {cases[1], cases[2], cases[4], cases[6], cases[7], cases[18]})
    expect_lowered_matches(c, true);
}

// A weight operand (a constant) is permuted and reshaped at build time: no Transpose or Reshape of it runs.
TEST(LowerEinsum, ConstantOperandIsRearrangedAtBuildTime) {
  auto g = std::make_unique<ir::Graph>();
  g->set_opset(17);
  ir::Value* x = test::add_input(*g, "x", DataType::kFLOAT, {ops::Dim::symbol("N"), 5, 4, 8});
  const Tensor w = test::random_tensor(DataType::kFLOAT, {6, 4, 8}, 3);
  Attributes a;
  a.set("equation", std::string("bshd,ehd->bse"));
  g->outputs().push_back(
      g->add_node("Einsum", "proj", {x, g->add_constant("w", w)}, {"y"}, std::move(a), 17)->outputs[0]);
  const std::vector<Tensor> in = {test::random_tensor(DataType::kFLOAT, {2, 5, 4, 8}, 4)};
  const std::vector<Tensor> want = test::run_reference(*g, in);
  ASSERT_TRUE(test::run_cuda_pipeline(*g, DataType::kFLOAT).ok());
  EXPECT_EQ(count_ops(*g, "Einsum"), 0);
  EXPECT_EQ(count_ops(*g, "Transpose"), 0);
  for (const auto& n : g->nodes())
    if (n->op_type == "Reshape") {
      EXPECT_FALSE(n->inputs[0]->is_constant());
    }
  test::expect_close(test::run_reference(*g, in)[0], want[0], 1e-4, 1e-4);
}

TEST(LowerEinsum, FormsItLeavesAlone) {
  const EinsumCase cases[] = {
      {"ii->i", {{4, 4}}},                         // a diagonal
      {"ij,jk,kl->il", {{2, 3}, {3, 4}, {4, 5}}},  // three operands
      {"bij,bjk->bik", {{2, 3, 4}, {2, 4, 5}}},    // below, with integer inputs
  };
  for (size_t k = 0; k < 3; ++k) {
    const EinsumCase& c = cases[k];
    SCOPED_TRACE(c.eq);
    const DataType dt = k == 2 ? DataType::kINT32 : DataType::kFLOAT;
    auto g = einsum_graph(c, false, dt);
    const std::vector<Tensor> in = inputs_for(c, dt);
    const std::vector<Tensor> want = test::run_reference(*g, in);
    ASSERT_TRUE(test::run_cuda_pipeline(*g, DataType::kFLOAT).ok());
    EXPECT_EQ(count_ops(*g, "Einsum"), 1);
    const std::vector<Tensor> got = test::run_reference(*g, in);
    test::expect_close(got[0], want[0], 0);
  }
  // Two dynamic dims merged into one: a Reshape takes only one -1.
  auto g = std::make_unique<ir::Graph>();
  g->set_opset(17);
  ir::Value* a = test::add_input(*g, "a", DataType::kFLOAT, {ops::Dim::symbol("N"), ops::Dim::symbol("M"), 4});
  ir::Value* b = test::add_input(*g, "b", DataType::kFLOAT, {4, 5});
  Attributes at;
  at.set("equation", std::string("nmk,kj->nmj"));
  g->outputs().push_back(g->add_node("Einsum", "einsum", {a, b}, {"y"}, std::move(at), 17)->outputs[0]);
  ASSERT_TRUE(test::run_cuda_pipeline(*g, DataType::kFLOAT).ok());
  EXPECT_EQ(count_ops(*g, "Einsum"), 1);
}

// Attention written as einsums: the scores' einsum becomes MatMul(Q, Transpose(K)) and the second MatMul(P, V), which
// fuse_attention takes (FP16, head dim 64), for [B,H,S,D] operands and for [B,S,H,D] ones (whose Transposes the
// layout folds then read in place).
TEST(LowerEinsum, EinsumAttentionFuses) {
  struct Form {
    const char *scores, *context;
    bool bshd;
  };
  for (const Form& f :
       {Form{"bhqd,bhkd->bhqk", "bhqk,bhkd->bhqd", false}, Form{"bqhd,bkhd->bhqk", "bhqk,bkhd->bqhd", true}}) {
    SCOPED_TRACE(f.scores);
    auto g = std::make_unique<ir::Graph>();
    g->set_opset(17);
    const std::vector<int64_t> s = f.bshd ? std::vector<int64_t>{2, 16, 4, 64} : std::vector<int64_t>{2, 4, 16, 64};
    ir::Value* q = test::add_input(*g, "q", DataType::kFLOAT, ops::shape_from_dims(s));
    ir::Value* k = test::add_input(*g, "k", DataType::kFLOAT, ops::shape_from_dims(s));
    ir::Value* v = test::add_input(*g, "v", DataType::kFLOAT, ops::shape_from_dims(s));
    Attributes e1, e2, sm;
    e1.set("equation", std::string(f.scores));
    e2.set("equation", std::string(f.context));
    sm.set("axis", Attribute(int64_t{-1}));
    ir::Value* scores = g->add_node("Einsum", "scores", {q, k}, {"scores"}, std::move(e1), 17)->outputs[0];
    ir::Value* scale = g->add_constant("scale", Tensor::from_vector<float>({}, {0.125f}));
    ir::Value* scaled = g->add_node("Mul", "scale_mul", {scores, scale}, {"scaled"}, {}, 17)->outputs[0];
    ir::Value* p = g->add_node("Softmax", "softmax", {scaled}, {"p"}, std::move(sm), 17)->outputs[0];
    g->outputs().push_back(g->add_node("Einsum", "context", {p, v}, {"y"}, std::move(e2), 17)->outputs[0]);
    std::vector<Tensor> in;
    for (int i = 0; i < 3; ++i) in.push_back(test::random_tensor(DataType::kFLOAT, s, 20 + i));
    const std::vector<Tensor> want = test::run_reference(*g, in);
    ASSERT_TRUE(test::run_cuda_pipeline(*g, DataType::kHALF).ok());
    EXPECT_EQ(count_ops(*g, "Einsum"), 0);
    EXPECT_EQ(count_ops(*g, "FusedAttention"), 1);
    EXPECT_EQ(count_ops(*g, "Softmax"), 0);
    const std::vector<Tensor> got = test::run_reference(*g, in);
    EXPECT_LT(test::relative_l2(want[0], got[0]), 2e-3);
    EXPECT_EQ(count_ops(*g, "Transpose"), 0);  // K^T and the [B,S,H,D] reads folded into the attention
  }
}

// The ONNX suite's Einsum tests (expected outputs from ONNX's reference) through the CUDA pass list.
TEST(LowerEinsum, OnnxNodeTests) {
  const char* dir = std::getenv("KILN_ONNX_NODE_DIR");
  if (!dir || !*dir || !fs::is_directory(dir))
    GTEST_SKIP() << "KILN_ONNX_NODE_DIR (the pypi onnx node tests' directory) is not set; `make test-node` runs this";
  int tests = 0, lowered = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("test_einsum", 0) != 0 || name.find("expanded") != std::string::npos) continue;
    const fs::path data = e.path() / "test_data_set_0";
    SCOPED_TRACE(name);
    std::unique_ptr<ir::Graph> g = test::import_onnx_file((e.path() / "model.onnx").string());
    if (!g) continue;
    ++tests;
    std::vector<Tensor> in, want;
    for (size_t i = 0; i < g->inputs().size(); ++i)
      in.push_back(test::read_tensor_pb(data / ("input_" + std::to_string(i) + ".pb")));
    for (size_t i = 0; i < g->outputs().size(); ++i)
      want.push_back(test::read_tensor_pb(data / ("output_" + std::to_string(i) + ".pb")));
    ASSERT_TRUE(test::run_cuda_pipeline(*g, DataType::kFLOAT).ok());
    const bool diagonal = name.find("diagonal") != std::string::npos;
    EXPECT_EQ(count_ops(*g, "Einsum"), diagonal ? 1 : 0);
    lowered += count_ops(*g, "Einsum") == 0;
    const std::vector<Tensor> got = test::run_reference(*g, in);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const bool half = want[i].dtype() == DataType::kHALF || want[i].dtype() == DataType::kBF16;
      test::expect_close(got[i], want[i], half ? 3e-2 : 1e-5, half ? 2e-2 : 1e-4);
    }
  }
  std::cout << "ONNX Einsum node tests: " << tests << ", lowered: " << lowered << "\n";
  EXPECT_GE(tests, 5);
  EXPECT_GT(lowered, 0);
}

}  // namespace
}  // namespace kiln
