// GPU tests of the folded LayerNorm (fold_layernorm_into_matmul; FusedMatMul with norm_epsilon): the CUTLASS
// kernels that run it (cutlass_norm_c*, cutlass_ngelu_c*, after the row-statistics pass) and cuBLASLt over the
// standardized rows (lt_heur*), each forced, against the CPU reference, rows with large means included; a pre-LN
// block built from ONNX-level nodes through the CUDA pipeline, folded (no LayerNormalization layer left) and
// agreeing with the CPU engine, and not folded with KILN_NORM_GEMM=0 or below the row threshold; and vit's LN + QKV
// and LN + FFN1 at batch 64 timed both ways (bench/NOTES.md).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

#include "../unit/engine_test_util.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "backends/cuda/gemm_tactics.h"
#include "passes/shape_inference.h"

namespace kiln::gpu_testing {
namespace {

struct NormCase {
  const char* name;
  int64_t m, n, k;
  const char* act;
  bool bias = true;
  float alpha = 1.f;
  double row_offset = 0;  // rows' means spread over [-row_offset, row_offset]: a LayerNorm's input seldom is centred
};

// B's column sums in float32 from its stored values, as the pass computes them.
Tensor column_sums(const Tensor& b) {
  const int64_t k = b.shape()[0], n = b.shape()[1];
  std::vector<float> s(n);
  for (int64_t j = 0; j < n; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += b.get_f64(i * n + j);
    s[j] = static_cast<float>(acc);
  }
  return Tensor::from_vector<float>({n}, s);
}

// One FusedMatMul with norm_epsilon over graph inputs a, b, (bias,) colsum; `tactic` empty: the kernel's default.
std::unique_ptr<ir::Graph> norm_graph(const NormCase& c, const std::string& tactic, std::vector<Tensor>* inputs) {
  auto g = std::make_unique<ir::Graph>();
  const DataType dt = DataType::kHALF;
  Tensor a = random_tensor(DataType::kFLOAT, {c.m, c.k}, 71, -1, 1);
  for (int64_t r = 0; r < c.m; ++r)
    for (int64_t i = 0; i < c.k; ++i)
      a.data<float>()[r * c.k + i] += static_cast<float>(c.row_offset * (2.0 * (r % 7) / 6.0 - 1.0));
  inputs->push_back(a.cast(dt));
  inputs->push_back(random_tensor(dt, {c.k, c.n}, 72, -2.0 / std::sqrt(double(c.k)), 2.0 / std::sqrt(double(c.k))));
  std::vector<ir::Value*> in = {test::add_input(*g, "a", dt, ops::shape_from_dims({c.m, c.k})),
                                test::add_input(*g, "b", dt, ops::shape_from_dims({c.k, c.n}))};
  if (c.bias) {
    in.push_back(test::add_input(*g, "bias", dt, ops::shape_from_dims({c.n})));
    inputs->push_back(random_tensor(dt, {c.n}, 73, -1, 1));
  } else {
    in.push_back(nullptr);
  }
  in.push_back(nullptr);  // no residual
  in.push_back(test::add_input(*g, "colsum", DataType::kFLOAT, ops::shape_from_dims({c.n})));
  inputs->push_back(column_sums((*inputs)[1]));
  Attributes at;
  at.set("activation", Attribute(std::string(c.act)));
  at.set("norm_epsilon", Attribute(1e-5f));
  if (c.alpha != 1.f) at.set("alpha", Attribute(c.alpha));
  if (!tactic.empty()) at.set("kiln.tactic", Attribute(tactic));
  ir::Node* n = g->add_node("FusedMatMul", "ffn", in, {"y"}, at, 1, "kiln");
  Status st = passes::infer_node(*g, *n);
  EXPECT_TRUE(st.ok()) << st.message();
  g->outputs().push_back(n->outputs[0]);
  return g;
}

TEST(GpuNormGemm, ForcedConfigsMatchTheReference) {
  KILN_REQUIRE_GPU();
  const NormCase cases[] = {
      {"vit-qkv-b1", 197, 2304, 768, "none"},
      {"vit-ffn1-b2", 394, 3072, 768, "gelu_erf"},
      {"offset-rows", 1037, 512, 256, "gelu_erf", true, 1.f, 40.0},
      {"no-bias-alpha", 300, 256, 512, "none", false, 0.5f, 3.0},
      {"small", 64, 64, 64, "gelu_erf"},
  };
  for (const NormCase& c : cases) {
    std::vector<Tensor> ref_inputs;
    const std::vector<Tensor> cpu = run_graph(*norm_graph(c, "", &ref_inputs), Backend::kCPU, ref_inputs, nullptr);
    ASSERT_EQ(cpu.size(), 1u);
    // The untuned default (the first tactic offered), cuBLASLt's first two ranks, each CUTLASS configuration.
    std::vector<std::string> tactics = {"", cuda::lt_tactic_name(0), cuda::lt_tactic_name(1)};
    for (int config : cuda::kCutlassNormConfigs)
      tactics.push_back(std::string(c.act) == "none" ? cuda::cutlass_norm_tactic_name(config)
                                                     : cuda::cutlass_ngelu_tactic_name(config));
    for (const std::string& tactic : tactics) {
      SCOPED_TRACE(std::string(c.name) + " tactic '" + tactic + "'");
      std::vector<Tensor> inputs;
      const auto g = norm_graph(c, tactic, &inputs);
      std::string err;
      const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
      if (err.find("this build has no CUTLASS kernels") != std::string::npos)
        GTEST_SKIP() << "this build has no CUTLASS kernels (`make cutlass` builds them): " << err;
      EXPECT_EQ(err.find("falls back"), std::string::npos) << err;
      ASSERT_EQ(got.size(), 1u) << err;
      expect_tensors_close(cpu[0], got[0], 3e-2, 2e-2, "vs the reference");
    }
  }
}

// A pre-LN block as exporters write it: x -> LayerNormalization -> MatMul + bias (QKV) and x -> LayerNormalization
// -> MatMul + bias -> erf GELU (FFN1), float16 at 4096 rows.
struct Block {
  int64_t rows, e, f;
};

std::vector<Tensor> run_block(const Block& b, Backend backend, std::vector<std::string>* ops) {
  QuietLogger quiet;
  Builder builder(quiet);
  auto net = builder.create_network();
  const Tensor x = random_tensor(DataType::kFLOAT, {b.rows / 128, 128, b.e}, 81, -1, 3);
  EXPECT_NE(net->add_input("in0", DataType::kFLOAT, x.shape()), nullptr);
  ir::Graph& g = net->graph();
  ir::Value* in = g.find_value("in0");
  int counter = 0;
  auto node = [&](const std::string& op, std::vector<ir::Value*> ins, Attributes a = {}) {
    ir::Node* n = g.add_node(op, g.unique_node_name(op), ins, {""}, std::move(a), 17, "");
    Status st = passes::infer_node(g, *n);
    EXPECT_TRUE(st.ok()) << op << ": " << st.message();
    return n->outputs[0];
  };
  auto weight = [&](std::vector<int64_t> shape, double scale) {
    ++counter;
    return g.add_constant("w" + std::to_string(counter),
                          random_tensor(DataType::kFLOAT, shape, 90 + counter, -scale, scale));
  };
  auto ln = [&] {
    Attributes a;
    a.set("axis", Attribute(int64_t{-1}));
    a.set("epsilon", Attribute(1e-6f));
    return node("LayerNormalization", {in, weight({b.e}, 1.5), weight({b.e}, 0.5)}, a);
  };
  auto scalar = [&](float v) {
    ++counter;
    return g.add_constant("s" + std::to_string(counter), Tensor::from_vector<float>({}, {v}));
  };
  ir::Value* qkv = node("Add", {node("MatMul", {ln(), weight({b.e, 3 * b.e}, 0.05)}), weight({3 * b.e}, 0.5)});
  ir::Value* h = node("Add", {node("MatMul", {ln(), weight({b.e, b.f}, 0.05)}), weight({b.f}, 0.5)});
  ir::Value* erf = node("Erf", {node("Div", {h, scalar(1.4142135623730951f)})});
  ir::Value* gelu = node("Mul", {node("Mul", {h, node("Add", {erf, scalar(1.0f)})}), scalar(0.5f)});
  for (ir::Value* v : {qkv, gelu}) EXPECT_TRUE(net->mark_output(net->find_tensor(v->name)).ok());
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  if (backend == Backend::kCUDA) config->set_flag(BuilderFlag::kFP16);
  auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
  if (!engine) return {};
  for (const auto& n : engine->plan().nodes) ops->push_back(n.op_type);
  return test::infer(*engine, test::numbered_inputs({x}));
}

int count_of(const std::vector<std::string>& ops, const std::string& op) {
  return static_cast<int>(std::count(ops.begin(), ops.end(), op));
}

TEST(GpuNormGemm, PreLnBlockFoldsAndMatchesTheCpuEngine) {
  KILN_REQUIRE_GPU();
  const Block b{4096, 64, 256};
  std::vector<std::string> cpu_ops, gpu_ops, off_ops, small_ops;
  const std::vector<Tensor> cpu = run_block(b, Backend::kCPU, &cpu_ops);
  EXPECT_EQ(count_of(cpu_ops, "LayerNormalization"), 2);
  std::vector<Tensor> gpu;
  {
    ScopedEnv on("KILN_NORM_GEMM", "1");
    gpu = run_block(b, Backend::kCUDA, &gpu_ops);
  }
  std::string joined;
  for (const auto& o : gpu_ops) joined += o + " ";
  // Folded with or without CUTLASS kernels (KILN_NORM_GEMM=1 forces it; cuBLASLt then runs the standardized rows).
  EXPECT_EQ(count_of(gpu_ops, "LayerNormalization"), 0) << joined;
  EXPECT_EQ(count_of(gpu_ops, "FusedMatMul"), 2) << joined;
  ASSERT_EQ(cpu.size(), 2u);
  ASSERT_EQ(gpu.size(), 2u);
  for (size_t i = 0; i < 2; ++i) expect_tensors_close(cpu[i], gpu[i], 3e-2, 2e-2, "output " + std::to_string(i));
  {
    ScopedEnv off("KILN_NORM_GEMM", "0");
    const std::vector<Tensor> unfolded = run_block(b, Backend::kCUDA, &off_ops);
    EXPECT_EQ(count_of(off_ops, "LayerNormalization"), 2);
    ASSERT_EQ(unfolded.size(), 2u);
    for (size_t i = 0; i < 2; ++i)
      expect_tensors_close(cpu[i], unfolded[i], 3e-2, 2e-2, "unfolded output " + std::to_string(i));
  }
  {
    // Below the row threshold (batch 1 shapes) cuBLASLt's GEMMs stay: no fold.
    ScopedEnv on("KILN_NORM_GEMM", "1");
    run_block(Block{1024, 64, 256}, Backend::kCUDA, &small_ops);
    EXPECT_EQ(count_of(small_ops, "LayerNormalization"), 2);
  }
}

// vit_b_16 at batch 64 (12608 rows of 768): LN + QKV (bias) and LN + FFN1 (bias, erf GELU) as separate layers
// (KILN_NORM_GEMM=0: the LayerNorm kernel, then the tuner's GEMM) against the folded form (the statistics pass and
// the tuner's CUTLASS kernel), timed as whole engines; printed as NORMGEMM lines (bench/NOTES.md).
TEST(GpuNormGemm, VitB64LayerNormGemmTimes) {
  KILN_REQUIRE_GPU();
  const int64_t e = 768;
  for (const auto& [what, n, gelu] :
       {std::tuple{"qkv", int64_t{2304}, false}, std::tuple{"ffn1", int64_t{3072}, true}}) {
    double us[2] = {0, 0};
    std::string tactic;
    for (int folded = 0; folded < 2; ++folded) {
      ScopedEnv env("KILN_NORM_GEMM", folded ? "1" : "0");
      TextLogger logger;
      Builder builder(logger);
      auto net = builder.create_network();
      const Tensor x = random_tensor(DataType::kHALF, {64, 197, e}, 101, -1, 3);
      EXPECT_NE(net->add_input("x", DataType::kHALF, x.shape()), nullptr);
      ir::Graph& g = net->graph();
      Attributes la;
      la.set("axis", Attribute(int64_t{-1}));
      la.set("epsilon", Attribute(1e-6f));
      auto c = [&](const char* name, std::vector<int64_t> shape, uint32_t seed, double s) {
        return g.add_constant(name, random_tensor(DataType::kHALF, shape, seed, -s, s));
      };
      ir::Node* l = g.add_node("LayerNormalization", "ln",
                               {g.find_value("x"), c("g", {e}, 1, 1.5), c("b", {e}, 2, 0.5)}, {"ln_out"}, la, 17, "");
      ASSERT_TRUE(passes::infer_node(g, *l).ok());
      Attributes ma;
      ma.set("activation", Attribute(std::string(gelu ? "gelu_erf" : "none")));
      ir::Node* mm = g.add_node("FusedMatMul", "gemm", {l->outputs[0], c("w", {e, n}, 3, 0.05), c("bias", {n}, 4, 0.5)},
                                {"y"}, ma, 1, "kiln");
      ASSERT_TRUE(passes::infer_node(g, *mm).ok());
      ASSERT_TRUE(net->mark_output(net->find_tensor("y")).ok());
      auto config = builder.create_builder_config();
      config->set_backend(Backend::kCUDA);
      config->set_flag(BuilderFlag::kFP16);
      auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
      ASSERT_NE(engine, nullptr) << logger.text;
      if (folded) {
        const runtime::PlanNode* fm = first_node(*engine, "FusedMatMul");
        tactic = string_attr(fm, "kiln.tactic");
        EXPECT_EQ(first_node(*engine, "LayerNormalization"), nullptr);
      }
      us[folded] = time_engine(*engine, {{"x", x}}, DataType::kHALF, 50).us;
    }
    std::printf("NORMGEMM vit b64 %s: LN + GEMM %.1f us, folded (%s) %.1f us (%.2fx)\n", what, us[0], tactic.c_str(),
                us[1], us[0] / us[1]);
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
