// fuse_add_layernorm and kiln AddLayerNormalization: which Add -> LayerNormalization pairs become one node (graph
// before/after), that the fused node computes what the pair computed on the reference kernels (float32 and
// float16, where the pair rounds the sum before normalizing), which addend shapes it accepts, and what it leaves.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "onnx_model_util.h"
#include "transformer_model_util.h"
#include "ops/add_layer_norm.h"
#include "passes/pass.h"

using namespace kiln;
using namespace kiln::test;

namespace {

struct Built {
  std::vector<Tensor> inputs;
};

// a [2, 8, 16] (+ b) -> LayerNormalization over the last `norm_dims` dims -> y. b is a constant of `b_shape`
// (a position table) or, with b_input, a second graph input of a's shape (a residual). `sum_is_output`: the sum
// is a graph output too; `stats`: the LayerNorm's Mean output is read (a graph output).
Built build(ir::Graph& g, DataType dt, std::vector<int64_t> b_shape, bool b_first = false, bool b_input = false,
            bool sum_is_output = false, bool stats = false, int64_t norm_dims = 1) {
  Built r;
  const std::vector<int64_t> shape = {2, 8, 16};
  ir::Value* a = graph_input(g, "a", shape, dt);
  r.inputs.push_back(random_f32(shape, 5, -2.f, 2.f).cast(dt));
  ir::Value* b = nullptr;
  if (b_input) {
    b = graph_input(g, "b", shape, dt);
    r.inputs.push_back(random_f32(shape, 6, -2.f, 2.f).cast(dt));
  } else {
    b = g.add_constant("pos", random_f32(b_shape, 7).cast(dt));
  }
  ir::Node* add = g.add_node("Add", "emb_add", b_first ? std::vector<ir::Value*>{b, a} : std::vector<ir::Value*>{a, b},
                             {"sum"}, {}, 14);
  std::vector<int64_t> p(shape.end() - norm_dims, shape.end());
  ir::Value* scale = g.add_constant("gamma", random_f32(p, 8, 0.5f, 1.5f).cast(dt));
  ir::Value* bias = g.add_constant("beta", random_f32(p, 9).cast(dt));
  Attributes at;
  at.set("axis", int64_t{-norm_dims});
  at.set("epsilon", 1e-5f);
  std::vector<std::string> outs = {"y"};
  if (stats) outs.push_back("mean");
  ir::Node* ln = g.add_node("LayerNormalization", "emb_norm", {add->outputs[0], scale, bias}, outs, at, 17);
  g.outputs().push_back(ln->outputs[0]);
  if (stats) g.outputs().push_back(ln->outputs[1]);
  if (sum_is_output) g.outputs().push_back(add->outputs[0]);
  return r;
}

passes::PassList fusion() { return list_of(passes::make_fuse_add_layernorm()); }

// The pass's option on (the builder sets it from KILN_FUSE_LAYERNORM_IO=1).
passes::PassOptions enabled() {
  passes::PassOptions o;
  o.layernorm_io = true;
  return o;
}

TEST(FuseAddLayerNorm, AddBecomesPartOfTheLayerNorm) {
  struct Case {
    const char* name;
    DataType dt;
    std::vector<int64_t> b_shape;
    bool b_first, b_input;
    int64_t norm_dims;
  };
  const Case cases[] = {
      {"position table [1,8,16]", DataType::kFLOAT, {1, 8, 16}, false, false, 1},
      {"position table first", DataType::kFLOAT, {1, 8, 16}, true, false, 1},
      {"table without the batch dim [8,16]", DataType::kFLOAT, {8, 16}, false, false, 1},
      {"residual of the same shape", DataType::kFLOAT, {}, false, true, 1},
      {"float16 position table", DataType::kHALF, {1, 8, 16}, false, false, 1},
      {"normalized over the last two dims", DataType::kFLOAT, {8, 16}, false, false, 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ir::Graph g;
    Built in = build(g, c.dt, c.b_shape, c.b_first, c.b_input, false, false, c.norm_dims);
    ASSERT_TRUE(run_passes(g, {}).ok());
    auto before = g.clone();
    Status st = run_passes(g, fusion(), enabled());
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(g.nodes().size(), 1u) << ir::print(g);
    const ir::Node* f = g.nodes()[0].get();
    EXPECT_EQ(f->op_type, "AddLayerNormalization");
    EXPECT_EQ(f->domain, "kiln");
    EXPECT_EQ(f->outputs[0], g.outputs()[0]) << "the fused node writes the graph output under its name";
    EXPECT_EQ(f->inputs[0]->name, "a") << "the full-shape addend comes first";
    const Attribute* from = f->attrs.find(ops::kFusedFromAttr);
    ASSERT_NE(from, nullptr);
    EXPECT_EQ(from->strings().size(), 2u);
    auto want = run_reference(*before, in.inputs);
    auto got = run_reference(g, in.inputs);
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    // The same arithmetic: the sum rounded to the type, then the reference LayerNorm.
    expect_close(got[0].cast(DataType::kFLOAT), want[0].cast(DataType::kFLOAT), 0, 0);
  }
}

// ids -> Gather(table [20, 16], axis) -> + pos [1, 8, 16] -> LayerNormalization: bert's embedding lookup. Indices
// [2, 8] of `idx_type` with negative entries (counted from the table's end); `gather_read_elsewhere`: the looked-up
// rows are a graph output too.
Built build_embedding(ir::Graph& g, DataType dt, DataType idx_type, int64_t axis = 0, bool gather_read_elsewhere = false) {
  Built r;
  ir::Value* ids = graph_input(g, "ids", {2, 8}, idx_type);
  std::vector<int64_t> v(16);
  for (int64_t i = 0; i < 16; ++i) v[i] = (i * 7) % 20 - (i % 3 == 0 ? 20 : 0);  // some negative
  Tensor t = Tensor::from_vector<int64_t>({2, 8}, v);
  r.inputs.push_back(t.cast(idx_type));
  ir::Value* table = g.add_constant("table", random_f32({20, 16}, 11, -2.f, 2.f).cast(dt));
  Attributes ga;
  ga.set("axis", axis);
  ir::Node* gather = g.add_node("Gather", "tok_gather", {table, ids}, {"tok"}, ga, 13);
  ir::Value* pos = g.add_constant("pos", random_f32({1, 8, 16}, 12).cast(dt));
  ir::Node* add = g.add_node("Add", "emb_add", {gather->outputs[0], pos}, {"sum"}, {}, 14);
  Attributes at;
  at.set("axis", int64_t{-1});
  at.set("epsilon", 1e-5f);
  ir::Node* ln = g.add_node("LayerNormalization", "emb_norm",
                            {add->outputs[0], g.add_constant("gamma", random_f32({16}, 13, 0.5f, 1.5f).cast(dt)),
                             g.add_constant("beta", random_f32({16}, 14).cast(dt))},
                            {"y"}, at, 17);
  g.outputs().push_back(ln->outputs[0]);
  if (gather_read_elsewhere) g.outputs().push_back(gather->outputs[0]);
  return r;
}

// The lookup goes in too: one kiln::EmbedLayerNormalization reading the table and the indices, computing what the
// three nodes computed (float32 and float16, int64 and int32 indices, negative indices).
TEST(FuseAddLayerNorm, EmbeddingLookupBecomesPartOfTheLayerNorm) {
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF})
    for (DataType idx : {DataType::kINT64, DataType::kINT32}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " indices " + dtype_name(idx));
      ir::Graph g;
      Built in = build_embedding(g, dt, idx);
      ASSERT_TRUE(run_passes(g, {}).ok());
      auto before = g.clone();
      Status st = run_passes(g, fusion(), enabled());
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(g.nodes().size(), 1u) << ir::print(g);
      const ir::Node* f = g.nodes()[0].get();
      EXPECT_EQ(f->op_type, "EmbedLayerNormalization");
      EXPECT_EQ(f->domain, "kiln");
      ASSERT_EQ(f->inputs.size(), 5u);
      EXPECT_EQ(f->inputs[0]->name, "table");
      EXPECT_EQ(f->inputs[1]->name, "ids");
      EXPECT_EQ(f->inputs[2]->name, "pos");
      EXPECT_EQ(f->outputs[0], g.outputs()[0]);
      const Attribute* from = f->attrs.find(ops::kFusedFromAttr);
      ASSERT_NE(from, nullptr);
      EXPECT_EQ(from->strings(), (std::vector<std::string>{"tok_gather", "emb_add", "emb_norm"}));
      auto want = run_reference(*before, in.inputs);
      auto got = run_reference(g, in.inputs);
      ASSERT_EQ(want.size(), 1u);
      ASSERT_EQ(got.size(), 1u);
      EXPECT_EQ(got[0].dtype(), dt);
      expect_close(got[0].cast(DataType::kFLOAT), want[0].cast(DataType::kFLOAT), 0, 0);
    }
}

// A lookup that something else reads, or one along another axis, stays a Gather (the Add still fuses).
TEST(FuseAddLayerNorm, LookupsItLeaves) {
  {
    SCOPED_TRACE("the looked-up rows are read elsewhere");
    ir::Graph g;
    build_embedding(g, DataType::kFLOAT, DataType::kINT64, 0, true);
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
    EXPECT_EQ(count_ops(g, "Gather"), 1) << ir::print(g);
    EXPECT_EQ(count_ops(g, "AddLayerNormalization"), 1);
    EXPECT_EQ(count_ops(g, "EmbedLayerNormalization"), 0);
  }
  {
    SCOPED_TRACE("Gather along axis 1");
    ir::Graph g;
    // table [20, 16] gathered along axis 1 by [2, 8] indices in [-16, 16): [20, 2, 8]; the addend [8] normalizes
    // the last dim. Built directly: the helper's shapes are for axis 0.
    ir::Value* ids = graph_input(g, "ids", {2, 8}, DataType::kINT64);
    ir::Value* table = g.add_constant("table", random_f32({20, 16}, 11));
    Attributes ga;
    ga.set("axis", int64_t{1});
    ir::Node* gather = g.add_node("Gather", "g", {table, ids}, {"tok"}, ga, 13);
    ir::Node* add = g.add_node("Add", "add", {gather->outputs[0], g.add_constant("pos", random_f32({8}, 12))}, {"sum"},
                               {}, 14);
    Attributes at;
    at.set("axis", int64_t{-1});
    ir::Node* ln = g.add_node("LayerNormalization", "ln", {add->outputs[0], g.add_constant("gamma", random_f32({8}, 13))},
                              {"y"}, at, 17);
    g.outputs().push_back(ln->outputs[0]);
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
    EXPECT_EQ(count_ops(g, "Gather"), 1) << ir::print(g);
    EXPECT_EQ(count_ops(g, "EmbedLayerNormalization"), 0);
  }
}

// Hugging Face BERT's embeddings: word Gather + token-type Gather -> Add -> + position embeddings -> LayerNorm. The
// two lookups and both Adds become one EmbedLayerNormalization (second table and indices as inputs 5 and 6), with
// the sum of the lookups rounded before the position row is added, as the graph did; with and without the
// LayerNorm's bias (its slot then stays empty).
TEST(FuseAddLayerNorm, TwoLookupsBecomeOneNode) {
  for (bool bias : {true, false})
    for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (bias ? " with bias" : " without bias"));
      ir::Graph g;
      ir::Value* ids = graph_input(g, "ids", {2, 8}, DataType::kINT64);
      ir::Value* tt = graph_input(g, "tt", {2, 8}, DataType::kINT32);
      std::vector<int64_t> v(16), w(16);
      for (int64_t i = 0; i < 16; ++i) v[i] = (i * 7) % 20, w[i] = i % 2 - (i % 5 == 0 ? 2 : 0);
      const std::vector<Tensor> inputs = {Tensor::from_vector<int64_t>({2, 8}, v),
                                          Tensor::from_vector<int64_t>({2, 8}, w).cast(DataType::kINT32)};
      Attributes ga;
      ga.set("axis", int64_t{0});
      ir::Node* g0 = g.add_node("Gather", "word", {g.add_constant("word_table", random_f32({20, 16}, 41).cast(dt)), ids},
                                {"we"}, ga, 13);
      ir::Node* g1 = g.add_node("Gather", "token_type", {g.add_constant("tt_table", random_f32({2, 16}, 42).cast(dt)), tt},
                                {"te"}, ga, 13);
      ir::Node* inner = g.add_node("Add", "add", {g0->outputs[0], g1->outputs[0]}, {"s1"}, {}, 14);
      ir::Node* outer =
          g.add_node("Add", "add_1", {inner->outputs[0], g.add_constant("pos", random_f32({1, 8, 16}, 43).cast(dt))},
                     {"s2"}, {}, 14);
      Attributes at;
      at.set("axis", int64_t{-1});
      at.set("epsilon", 1e-12f);
      std::vector<ir::Value*> ln_in = {outer->outputs[0], g.add_constant("gamma", random_f32({16}, 44, 0.5f, 1.5f).cast(dt))};
      if (bias) ln_in.push_back(g.add_constant("beta", random_f32({16}, 45).cast(dt)));
      g.outputs().push_back(g.add_node("LayerNormalization", "norm", ln_in, {"y"}, at, 17)->outputs[0]);
      ASSERT_TRUE(run_passes(g, {}).ok());
      auto before = g.clone();
      Status st = run_passes(g, fusion(), enabled());
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(g.nodes().size(), 1u) << ir::print(g);
      const ir::Node* f = g.nodes()[0].get();
      EXPECT_EQ(f->op_type, "EmbedLayerNormalization");
      ASSERT_EQ(f->inputs.size(), 7u);
      EXPECT_EQ(f->inputs[0]->name, "word_table");
      EXPECT_EQ(f->inputs[1]->name, "ids");
      EXPECT_EQ(f->inputs[2]->name, "pos");
      EXPECT_EQ(f->inputs[4] != nullptr, bias);
      EXPECT_EQ(f->inputs[5]->name, "tt_table");
      EXPECT_EQ(f->inputs[6]->name, "tt");
      EXPECT_EQ(f->attrs.find(ops::kFusedFromAttr)->strings(),
                (std::vector<std::string>{"word", "token_type", "add", "add_1", "norm"}));
      auto want = run_reference(*before, inputs);
      auto got = run_reference(g, inputs);
      expect_close(got[0].cast(DataType::kFLOAT), want[0].cast(DataType::kFLOAT), 0, 0);
    }
}

// The fused node's own checks: B must follow the addend rule against the looked-up shape.
TEST(FuseAddLayerNorm, EmbedLayerNormalizationChecksItsAddend) {
  ir::Graph g;
  ir::Value* ids = graph_input(g, "ids", {2, 8}, DataType::kINT64);
  ir::Value* table = g.add_constant("table", random_f32({20, 16}, 11));
  ir::Value* pos = g.add_constant("pos", random_f32({2, 1, 16}, 12));  // broadcasts along a middle dim
  Attributes at;
  at.set("axis", int64_t{-1});
  g.add_node("EmbedLayerNormalization", "e", {table, ids, pos, g.add_constant("gamma", random_f32({16}, 13))}, {"y"},
             at, 1, "kiln");
  g.outputs().push_back(g.nodes().back()->outputs[0]);
  Status st = run_passes(g, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kiln EmbedLayerNormalization: B [2,1,16] must equal A [2,8,16]"), std::string::npos)
      << st.message();
}

// Off by default: the pass leaves the pair unless PassOptions::layernorm_io.
TEST(FuseAddLayerNorm, OffUnlessEnabled) {
  ir::Graph g;
  build(g, DataType::kFLOAT, {1, 8, 16});
  ASSERT_TRUE(run_passes(g, fusion()).ok());
  EXPECT_EQ(count_ops(g, "Add"), 1);
  EXPECT_EQ(count_ops(g, "AddLayerNormalization"), 0);
}

TEST(FuseAddLayerNorm, LeavesWhatItCannotFuse) {
  struct Case {
    const char* name;
    std::vector<int64_t> b_shape;
    bool sum_is_output, stats;
    int64_t norm_dims;
  };
  const Case cases[] = {
      {"the sum is read elsewhere", {1, 8, 16}, true, false, 1},
      {"the LayerNorm's Mean is read", {1, 8, 16}, false, true, 1},
      {"B broadcasts inside a row ([16] against rows of [8,16])", {16}, false, false, 2},
      {"B broadcasts along a middle dim ([2,1,16])", {2, 1, 16}, false, false, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ir::Graph g;
    build(g, DataType::kFLOAT, c.b_shape, false, false, c.sum_is_output, c.stats, c.norm_dims);
    ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
    EXPECT_EQ(count_ops(g, "Add"), 1) << ir::print(g);
    EXPECT_EQ(count_ops(g, "LayerNormalization"), 1);
    EXPECT_EQ(count_ops(g, "AddLayerNormalization"), 0);
  }
}

// The addend rule itself, shape by shape (A [N, S, E]; axis 2 normalizes E, axis 1 normalizes [S, E]).
TEST(FuseAddLayerNorm, AddendShapes) {
  using ops::Dim;
  const ops::Shape a = {Dim(4), Dim(8), Dim(16)};
  auto ok = [&](std::vector<int64_t> b, int64_t axis) {
    return ops::check_add_layernorm_addend(a, ops::shape_from_dims(b), axis).ok();
  };
  EXPECT_TRUE(ok({4, 8, 16}, 2));
  EXPECT_TRUE(ok({1, 8, 16}, 2));
  EXPECT_TRUE(ok({8, 16}, 2));
  EXPECT_TRUE(ok({16}, 2));      // one row for all: B covers the normalized dim
  EXPECT_TRUE(ok({1, 1, 16}, 2));
  EXPECT_TRUE(ok({8, 16}, 1));   // covers [S, E]
  EXPECT_FALSE(ok({16}, 1));     // would broadcast along S inside a row
  EXPECT_FALSE(ok({1, 16}, 1));
  EXPECT_FALSE(ok({4, 1, 16}, 2));  // broadcast along a middle dim
  EXPECT_FALSE(ok({8, 1}, 2));
  EXPECT_FALSE(ok({2, 4, 8, 16}, 2));
  EXPECT_FALSE(ok({9, 16}, 2));
  // A symbolic batch: B matches from the first dim it shares.
  const ops::Shape sym = {Dim::symbol("batch"), Dim(8), Dim(16)};
  EXPECT_TRUE(ops::check_add_layernorm_addend(sym, {Dim(1), Dim(8), Dim(16)}, 2).ok());
  EXPECT_TRUE(ops::check_add_layernorm_addend(sym, {Dim::symbol("batch"), Dim(8), Dim(16)}, 2).ok());
}

// The CI exports (`make test-models` sets KILN_TRANSFORMER_MODEL_DIRS) through the CUDA pipeline with the fusion on
// (PassOptions::layernorm_io): bert's token lookup and embedding sum go into its first LayerNorm (gpt's and vit's sums are also
// the first residual, so they stay), and the FP16 result still matches the float32 CPU pipeline.
TEST(FuseAddLayerNorm, ExportedTransformers) {
  const std::vector<std::string> dirs = model_dirs({"KILN_TRANSFORMER_MODEL_DIRS"});
  if (dirs.empty()) GTEST_SKIP() << "KILN_TRANSFORMER_MODEL_DIRS is not set (`make test-models` sets it)";
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    auto g = import_onnx_file(dir + "/model.onnx");
    ASSERT_NE(g, nullptr);
    const Tensor x = read_input(dir + "/input.bin", *g->inputs()[0]);
    auto cpu = g->clone();
    ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
    auto want = run_reference(*cpu, {x});
    auto cuda = g->clone();
    Status st = run_cuda_pipeline(*cuda, DataType::kHALF, enabled());
    ASSERT_TRUE(st.ok()) << st.message();
    const int added = count_ops(*cuda, "AddLayerNormalization");
    const int embedded = count_ops(*cuda, "EmbedLayerNormalization");
    std::cout << dir << ": " << added << " AddLayerNormalization, " << embedded << " EmbedLayerNormalization\n";
    if (dir.find("bert") != std::string::npos) {
      EXPECT_EQ(embedded, 1) << "the token lookup and the embedding sum feed only the first LayerNorm";
    }
    auto got = run_reference(*cuda, {x});
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    EXPECT_LT(relative_l2(want[0], got[0]), 1e-2) << "FP16 CUDA pipeline vs float32 CPU pipeline";
  }
}

}  // namespace
