// fuse_layernorm_output_cast and the kiln LayerNorm family's `to`: which LayerNorm -> Cast(float32) pairs become one
// node (graph before/after), that the fused node stores the normalization's float32 values (the pair's within
// float16 rounding, and exactly the float32 normalization of the float16 inputs), what the pass leaves alone, the
// `to` attribute's check, and the CI exports through the CUDA pipeline.
#include <gtest/gtest.h>

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "cnn_test_util.h"
#include "env_switch_test_util.h"
#include "graph_test_util.h"
#include "onnx_model_util.h"
#include "transformer_model_util.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "ops/op_util.h"
#include "passes/pass.h"

using namespace kiln;
using namespace kiln::test;

namespace {

passes::PassOptions enabled() {
  passes::PassOptions o;
  o.layernorm_io = true;
  return o;
}

passes::PassList fusion() {
  passes::PassList p;
  p.push_back(passes::make_fuse_add_layernorm());
  p.push_back(passes::make_fuse_layernorm_output_cast());
  return p;
}

struct Built {
  std::vector<Tensor> inputs;
  ir::Value* y = nullptr;  // the LayerNorm's output
};

// x [2, 8, 16] of `dt` (+ pos [1, 8, 16] when `add`) -> LayerNormalization -> Cast(to) -> out.
Built build(ir::Graph& g, DataType dt, bool add = false, DataType to = DataType::kFLOAT) {
  Built r;
  ir::Value* x = graph_input(g, "x", {2, 8, 16}, dt);
  r.inputs.push_back(random_f32({2, 8, 16}, 21, -3.f, 3.f).cast(dt));
  ir::Value* in = x;
  if (add) {
    in = g.add_node("Add", "add", {x, g.add_constant("pos", random_f32({1, 8, 16}, 22).cast(dt))}, {"sum"}, {}, 14)
             ->outputs[0];
  }
  Attributes at;
  at.set("axis", int64_t{-1});
  at.set("epsilon", 1e-5f);
  ir::Node* ln = g.add_node("LayerNormalization", "final_norm",
                            {in, g.add_constant("gamma", random_f32({16}, 23, 0.5f, 1.5f).cast(dt)),
                             g.add_constant("beta", random_f32({16}, 24).cast(dt))},
                            {"y"}, at, 17);
  r.y = ln->outputs[0];
  Attributes ca;
  ca.set("to", ops::onnx_code_of(to));
  ir::Node* cast = g.add_node("Cast", "output_to_float32", {r.y}, {"out"}, ca, 19);
  g.outputs().push_back(cast->outputs[0]);
  return r;
}

// The float32 LayerNorm of float32 copies of x (+ pos), gamma and beta: what the fused node stores.
Tensor float_reference(const ir::Graph& before, const std::vector<Tensor>& inputs) {
  auto f = before.clone();
  for (auto& n : f->nodes())
    if (n->op_type == "Cast") n->attrs.set("to", ops::onnx_code_of(DataType::kFLOAT));
  // Every constant and input to float32, the graph run in float32.
  std::vector<Tensor> in32;
  for (const Tensor& t : inputs) in32.push_back(t.cast(DataType::kFLOAT));
  for (ir::Value* v : f->inputs()) v->dtype = DataType::kFLOAT;
  for (auto& v : f->values())
    if (v->is_constant() && dtype_is_float(v->constant->dtype())) {
      v->constant = std::make_shared<const Tensor>(v->constant->cast(DataType::kFLOAT));
      v->dtype = DataType::kFLOAT;
    }
  EXPECT_TRUE(run_passes(*f, {}).ok());
  return run_reference(*f, in32)[0];
}

TEST(FuseLayerNormOutputCast, CastGoesIntoTheLayerNorm) {
  for (DataType dt : {DataType::kHALF, DataType::kBF16})
    for (bool add : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (add ? " with the Add" : ""));
      ir::Graph g;
      Built in = build(g, dt, add);
      ASSERT_TRUE(run_passes(g, {}).ok());
      auto before = g.clone();
      Status st = run_passes(g, fusion(), enabled());
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(g.nodes().size(), 1u) << ir::print(g);
      const ir::Node* f = g.nodes()[0].get();
      EXPECT_EQ(f->op_type, add ? "AddLayerNormalization" : "LayerNormalization");
      EXPECT_EQ(f->domain, "kiln");
      ASSERT_NE(f->attrs.find("to"), nullptr);
      EXPECT_EQ(f->attrs.find("to")->i(), ops::onnx_code_of(DataType::kFLOAT));
      EXPECT_EQ(f->outputs[0], g.outputs()[0]);
      EXPECT_EQ(f->outputs[0]->name, "out") << "the network output keeps its name";
      EXPECT_EQ(f->outputs[0]->dtype, DataType::kFLOAT);
      const Attribute* from = f->attrs.find(ops::kFusedFromAttr);
      ASSERT_NE(from, nullptr);
      std::vector<std::string> want_from = {"final_norm", "output_to_float32"};
      if (add) want_from.insert(want_from.begin(), "add");
      EXPECT_EQ(from->strings(), want_from);
      auto pair = run_reference(*before, in.inputs);
      auto got = run_reference(g, in.inputs);
      ASSERT_EQ(got.size(), 1u);
      ASSERT_EQ(got[0].dtype(), DataType::kFLOAT);
      // The pair rounded each value to the reduced type first: within its half ulp (2^-11 for float16, 2^-8 for
      // bfloat16, relative) of the fused values.
      const double ulp = dt == DataType::kHALF ? 1.0 / 2048 : 1.0 / 256;
      expect_close(got[0], pair[0], 1e-6, ulp);
      if (!add) {
        // Exactly the float32 normalization of the reduced inputs (with the Add, the sum is rounded first, which a
        // float32 graph would not do).
        expect_close(got[0], float_reference(*before, in.inputs), 0, 0);
      }
      // And not the pair's values everywhere: they differ by the rounding the fused node no longer does.
      const float* a = got[0].data<float>();
      const float* b = pair[0].data<float>();
      int differ = 0;
      for (int64_t i = 0; i < got[0].numel(); ++i) differ += a[i] != b[i];
      EXPECT_GT(differ, 0) << "the fused node stores unrounded values";
    }
}

TEST(FuseLayerNormOutputCast, EmbeddingLookupNormAndCastAreOneNode) {
  ir::Graph g;
  ir::Value* ids = graph_input(g, "ids", {2, 8}, DataType::kINT64);
  std::vector<int64_t> v(16);
  for (int64_t i = 0; i < 16; ++i) v[i] = (i * 3) % 20;
  std::vector<Tensor> inputs = {Tensor::from_vector<int64_t>({2, 8}, v)};
  Attributes ga;
  ga.set("axis", int64_t{0});
  ir::Node* gather =
      g.add_node("Gather", "tok", {g.add_constant("table", random_f32({20, 16}, 31).cast(DataType::kHALF)), ids},
                 {"emb"}, ga, 13);
  ir::Node* add = g.add_node(
      "Add", "add", {gather->outputs[0], g.add_constant("pos", random_f32({1, 8, 16}, 32).cast(DataType::kHALF))},
      {"sum"}, {}, 14);
  Attributes at;
  at.set("axis", int64_t{-1});
  ir::Node* ln = g.add_node("LayerNormalization", "norm",
                            {add->outputs[0], g.add_constant("gamma", random_f32({16}, 33).cast(DataType::kHALF))},
                            {"y"}, at, 17);
  Attributes ca;
  ca.set("to", ops::onnx_code_of(DataType::kFLOAT));
  g.outputs().push_back(g.add_node("Cast", "cast", {ln->outputs[0]}, {"out"}, ca, 19)->outputs[0]);
  ASSERT_TRUE(run_passes(g, {}).ok());
  auto before = g.clone();
  ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
  ASSERT_EQ(g.nodes().size(), 1u) << ir::print(g);
  EXPECT_EQ(g.nodes()[0]->op_type, "EmbedLayerNormalization");
  EXPECT_EQ(g.nodes()[0]->attrs.find(ops::kFusedFromAttr)->strings(),
            (std::vector<std::string>{"tok", "add", "norm", "cast"}));
  expect_close(run_reference(g, inputs)[0], run_reference(*before, inputs)[0], 1e-6, 1.0 / 2048);
}

TEST(FuseLayerNormOutputCast, LeavesWhatItCannotFuse) {
  {
    SCOPED_TRACE("off unless enabled");
    ir::Graph g;
    build(g, DataType::kHALF);
    ASSERT_TRUE(run_passes(g, fusion()).ok());
    EXPECT_EQ(count_ops(g, "Cast"), 1);
  }
  {
    SCOPED_TRACE("a Cast to another reduced type");
    ir::Graph g;
    build(g, DataType::kHALF, false, DataType::kBF16);
    ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
    EXPECT_EQ(count_ops(g, "Cast"), 1) << ir::print(g);
  }
  {
    SCOPED_TRACE("Y is read elsewhere too");
    ir::Graph g;
    Built b = build(g, DataType::kHALF);
    g.outputs().push_back(b.y);
    ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
    EXPECT_EQ(count_ops(g, "Cast"), 1) << ir::print(g);
    EXPECT_EQ(g.nodes().size(), 2u);
  }
  {
    SCOPED_TRACE("the LayerNorm's Mean is read");
    ir::Graph g;
    Built b = build(g, DataType::kHALF);
    ir::Node* ln = b.y->producer;
    ln->outputs.push_back(g.add_value("mean"));
    ln->outputs.back()->producer = ln;
    g.outputs().push_back(ln->outputs.back());
    ASSERT_TRUE(run_passes(g, {}).ok());
    ASSERT_TRUE(run_passes(g, fusion(), enabled()).ok());
    EXPECT_EQ(count_ops(g, "Cast"), 1) << ir::print(g);
  }
}

TEST(FuseLayerNormOutputCast, ToMustBeFloat32OrXsType) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {2, 16}, DataType::kHALF);
  Attributes at;
  at.set("to", ops::onnx_code_of(DataType::kINT32));
  g.add_node("LayerNormalization", "ln", {x, g.add_constant("gamma", random_f32({16}, 1).cast(DataType::kHALF))},
             {"y"}, at, 1, "kiln");
  g.outputs().push_back(g.nodes().back()->outputs[0]);
  Status st = run_passes(g, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kiln LayerNormalization: 'to' must be float32 or X's type (float16), got type code 6"),
            std::string::npos)
      << st.message();
}

// The builder's switch takes 0 or 1; anything else stops the build by name rather than leaving the fusions off.
TEST(FuseLayerNormOutputCast, SwitchTypoIsAnError) { expect_env_switch_takes_0_or_1("KILN_FUSE_LAYERNORM_IO"); }

// The CI exports through the CUDA pipeline in float16 with the option on: bert's output is its last LayerNorm's,
// which now stores it in float32 (and its first takes the lookup and the embedding sum); the result still matches
// the float32 CPU pipeline.
TEST(FuseLayerNormOutputCast, ExportedTransformers) {
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
    int stores_float = 0;
    for (const auto& n : cuda->nodes())
      if (n->domain == "kiln" && n->attrs.has("to") && n->op_type.find("LayerNormalization") != std::string::npos)
        ++stores_float;
    std::cout << dir << ": " << stores_float << " LayerNorms store float32\n";
    if (dir.find("bert") != std::string::npos) {
      EXPECT_EQ(stores_float, 1) << "bert's output is its last LayerNorm's";
      EXPECT_EQ(count_ops(*cuda, "Cast"), 0) << ir::print(*cuda);
    }
    auto got = run_reference(*cuda, {x});
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    EXPECT_EQ(got[0].dtype(), DataType::kFLOAT);
    EXPECT_LT(relative_l2(want[0], got[0]), 1e-2) << "FP16 CUDA pipeline vs float32 CPU pipeline";
  }
}

}  // namespace
