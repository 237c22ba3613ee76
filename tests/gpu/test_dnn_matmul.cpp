// GPU tests of FusedMatMul's cuDNN graph tactic (src/backends/cuda/dnn_matmul.h, gated by KILN_DNN_MATMUL=1):
// the tactic forced through "kiln.tactic" at bert's FFN1 shapes and odd ones, FP16 and BF16, every activation,
// with and without bias and residual (before or after the activation), against the CPU reference; a recorded
// tactic that cannot be built falling back to cuBLASLt with a warning; the tuner recording a tactic; the gate
// off leaving cuBLASLt's list alone; and the time of cuBLASLt + epilogue pass against the fused tactic. SiLU and
// sigmoid (cuDNN's SWISH_FWD / SIGMOID_FWD, cuBLASLt + our pass otherwise) at efficientnet_b0's expand GEMMs.
// Plan compilation: each plan compiled once per process (other handles restore it), a tuned build compiling
// nothing more, the chosen plan stored in the engine and restored at load, unusable stored plans compiled instead,
// and one stored plan for the layers of one problem (the backend's cudnn_matmul.* counters).
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "../unit/engine_test_util.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "backends/cuda/dnn_matmul.h"
#include "backends/cuda/gemm_tactics.h"
#include "passes/shape_inference.h"

namespace kiln::gpu_testing {
namespace {

struct MmCase {
  const char* name;
  int64_t m, n, k;
  const char* act;
  bool bias = true, res = false, residual_first = false, trans_b = false;
};

std::string describe(const MmCase& c, DataType dt, const std::string& tactic) {
  return std::string(c.name) + " " + dtype_name(dt) + " m" + std::to_string(c.m) + " n" + std::to_string(c.n) + " k" +
         std::to_string(c.k) + " " + c.act + (c.bias ? " +bias" : "") +
         (c.res ? (c.residual_first ? " +res(first)" : " +res(after)") : "") + (c.trans_b ? " trans_b" : "") +
         " tactic '" + tactic + "'";
}

// One FusedMatMul over graph inputs a, b (and bias, res) into g; `tactic` empty: the kernel's untuned default.
void fill_mm_graph(ir::Graph& g, const MmCase& c, DataType dt, const std::string& tactic, std::vector<Tensor>* inputs,
                   uint32_t seed) {
  const Dims b_shape = c.trans_b ? Dims{c.n, c.k} : Dims{c.k, c.n};
  // B scaled so that the pre-activation values are O(1): the GELU's curved part is exercised.
  const double bs = 2.0 / std::sqrt(static_cast<double>(c.k));
  std::vector<ir::Value*> in = {test::add_input(g, "a", dt, ops::shape_from_dims({c.m, c.k})),
                                test::add_input(g, "b", dt, ops::shape_from_dims(b_shape))};
  inputs->push_back(random_tensor(dt, {c.m, c.k}, seed, -1, 1));
  inputs->push_back(random_tensor(dt, b_shape, seed + 1, -bs, bs));
  if (c.bias) {
    in.push_back(test::add_input(g, "bias", dt, ops::shape_from_dims({c.n})));
    inputs->push_back(random_tensor(dt, {c.n}, seed + 2, -1, 1));
  } else if (c.res) {
    in.push_back(nullptr);
  }
  if (c.res) {
    in.push_back(test::add_input(g, "res", dt, ops::shape_from_dims({c.m, c.n})));
    inputs->push_back(random_tensor(dt, {c.m, c.n}, seed + 3, -1, 1));
  }
  Attributes a;
  a.set("activation", Attribute(std::string(c.act)));
  if (c.trans_b) a.set("trans_b", Attribute(int64_t{1}));
  if (c.residual_first) a.set("residual_first", Attribute(int64_t{1}));
  if (!tactic.empty()) a.set("kiln.tactic", Attribute(tactic));
  ir::Node* n = g.add_node("FusedMatMul", "ffn", in, {"y"}, a, 1, "kiln");
  Status st = passes::infer_node(g, *n);
  EXPECT_TRUE(st.ok()) << st.message();
  g.outputs().push_back(n->outputs[0]);
}

// fill_mm_graph's inputs by name, in its order: a, b, then bias and res where the case has them.
std::vector<std::pair<std::string, Tensor>> named_inputs(const MmCase& c, const std::vector<Tensor>& inputs) {
  std::vector<std::string> names = {"a", "b"};
  if (c.bias) names.push_back("bias");
  if (c.res) names.push_back("res");
  EXPECT_EQ(inputs.size(), names.size());
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < inputs.size() && i < names.size(); ++i) named.emplace_back(names[i], inputs[i]);
  return named;
}

std::unique_ptr<ir::Graph> mm_graph(const MmCase& c, DataType dt, const std::string& tactic,
                                    std::vector<Tensor>* inputs, uint32_t seed) {
  auto owned = std::make_unique<ir::Graph>();
  fill_mm_graph(*owned, c, dt, tactic, inputs, seed);
  return owned;
}

double atol_of(DataType dt) { return dt == DataType::kHALF ? 3e-2 : 1.5e-1; }
double rtol_of(DataType dt) { return dt == DataType::kHALF ? 2e-2 : 5e-2; }

constexpr const char* kFallbackText = "falls back to cuBLASLt";

// Every test runs with the gate on.
class GpuDnnMatmul : public ::testing::Test {
 protected:
  ScopedEnv gate_{"KILN_DNN_MATMUL", "1"};
};

// cuDNN's first usable plan, forced, against the reference: bert-base FFN1 at batch 64 x seq 128 (8192 tokens) and
// batch 1 (128), every epilogue form, and row counts that are not multiples of a tile. The forms the tactic is
// offered for (first group) must build (no fallback warning); the others print whether cuDNN took them.
TEST_F(GpuDnnMatmul, ForcedTacticMatchesTheReference) {
  KILN_REQUIRE_GPU();
  struct Forced {
    MmCase c;
    bool must_run;
  };
  const Forced cases[] = {
      {{"bert-ffn1-b64", 8192, 3072, 768, "gelu_erf"}, true},
      {{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"}, true},
      {{"gelu-res-after", 130, 768, 256, "gelu_erf", true, true}, true},
      {{"relu-res-after", 256, 512, 256, "relu", true, true}, true},
      {{"odd-rows", 77, 200, 72, "gelu_erf", true, true}, true},
      {{"bert-ffn1-b1-tb", 128, 3072, 768, "gelu_erf", true, false, false, true}, false},
      {{"gelu-res-first", 130, 768, 256, "gelu_erf", true, true, true}, false},
      {{"gelu-no-bias", 200, 512, 64, "gelu_erf", false}, false},
      {{"gelu-no-bias-res", 96, 256, 128, "gelu_erf", false, true}, false},
      {{"relu-bias", 64, 256, 128, "relu"}, false},
      {{"relu-plain-tb", 64, 256, 128, "relu", false, false, false, true}, false},
      {{"gelu-tanh-res-after-tb", 100, 384, 192, "gelu_tanh", true, true, false, true}, false},
      {{"none-bias-res", 64, 256, 128, "none", true, true}, false},
      {{"one-row", 1, 3072, 768, "gelu_erf"}, false},
  };
  for (const auto& [c, must_run] : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      const std::string tactic = "cudnn_matmul_fused_0";
      SCOPED_TRACE(describe(c, dt, tactic));
      std::vector<Tensor> inputs;
      const auto g = mm_graph(c, dt, tactic, &inputs, 17);
      const std::vector<Tensor> cpu = run_graph(*g, Backend::kCPU, inputs, nullptr);
      std::string err;
      const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
      ASSERT_EQ(cpu.size(), 1u);
      ASSERT_EQ(got.size(), 1u);
      const bool ran = err.find(kFallbackText) == std::string::npos;
      if (must_run) {
        EXPECT_TRUE(ran) << "cuDNN did not run: " << err;
      }
      std::printf("DNN_MM %-58s %s\n", describe(c, dt, tactic).c_str(), ran ? "cuDNN" : "fallback (cuBLASLt + pass)");
      expect_tensors_close(cpu[0], got[0], atol_of(dt), rtol_of(dt), "vs the reference");
    }
}

// The other ranks where cuDNN has them, and shapes cuDNN may refuse (rows not 16-byte aligned): whichever runs,
// the result matches; a refused one warns and runs cuBLASLt + the pass.
TEST_F(GpuDnnMatmul, OtherRanksAndRefusedShapesStayCorrect) {
  KILN_REQUIRE_GPU();
  const MmCase cases[] = {
      {"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"},
      {"odd-k", 33, 101, 77, "gelu_erf", true, true},
      {"odd-n-tb", 50, 99, 64, "relu", true, true, false, true},
  };
  for (const MmCase& c : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      std::vector<Tensor> ref_inputs;
      const std::vector<Tensor> cpu =
          run_graph(*mm_graph(c, dt, "", &ref_inputs, 23), Backend::kCPU, ref_inputs, nullptr);
      for (const char* tactic : {"cudnn_matmul_fused_0", "cudnn_matmul_fused_1", "cudnn_matmul_fused_2"}) {
        SCOPED_TRACE(describe(c, dt, tactic));
        std::vector<Tensor> inputs;
        const auto g = mm_graph(c, dt, tactic, &inputs, 23);
        std::string err;
        const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
        ASSERT_EQ(cpu.size(), 1u);
        ASSERT_EQ(got.size(), 1u);
        std::printf("DNN_MM %-44s %s\n", describe(c, dt, tactic).c_str(),
                    err.find(kFallbackText) == std::string::npos ? "cuDNN" : "fallback (cuBLASLt + pass)");
        expect_tensors_close(cpu[0], got[0], atol_of(dt), rtol_of(dt), "vs the reference");
      }
    }
}

// A recorded tactic no cuDNN offers (rank 99): the layer warns once and runs cuBLASLt + the epilogue pass.
TEST_F(GpuDnnMatmul, UnbuildableRecordedTacticFallsBack) {
  KILN_REQUIRE_GPU();
  const MmCase c{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"};
  std::vector<Tensor> inputs;
  const auto g = mm_graph(c, DataType::kHALF, "cudnn_matmul_fused_99", &inputs, 5);
  const std::vector<Tensor> cpu = run_graph(*g, Backend::kCPU, inputs, nullptr);
  std::string err;
  const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(err.find(kFallbackText), std::string::npos) << err;
  expect_tensors_close(cpu[0], got[0], 3e-2, 2e-2, "fallback vs the reference");
}

// build_ffn1's weights of layer l: B [k, n] (seed 2 + 2l) and bias [n] (seed 3 + 2l).
std::pair<Tensor, Tensor> ffn1_weights(const MmCase& c, int l) {
  return {random_tensor(DataType::kHALF, {c.k, c.n}, 2 + 2 * l, -0.07, 0.07),
          random_tensor(DataType::kHALF, {c.n}, 3 + 2 * l, -1, 1)};
}

// The reference of build_ffn1's layer `l` for input x: the same weights through the CPU backend.
Tensor ffn1_reference(const MmCase& c, const Tensor& x, int l = 0) {
  std::vector<Tensor> unused;
  auto g = mm_graph(c, DataType::kHALF, "", &unused, 0);
  const auto [w, bias] = ffn1_weights(c, l);
  auto want = run_graph(*g, Backend::kCPU, {x, w, bias}, nullptr);
  EXPECT_EQ(want.size(), 1u);
  return want.size() == 1 ? want[0] : Tensor();
}

// A level-3 build of FFN1 (B and bias as weights, seeds 2 and 3), with a timing cache file when given; more
// layers of the same problem on the same input (weights seeds 2 + 2l, 3 + 2l, outputs y, y1, y2, ...).
Result<std::vector<uint8_t>> build_ffn1(const MmCase& c, const std::string& timing_cache = "", int layers = 1) {
  QuietLogger quiet;
  Builder builder(quiet);
  auto net = builder.create_network();
  EXPECT_NE(net->add_input("a", DataType::kHALF, {c.m, c.k}), nullptr);
  ir::Graph& g = net->graph();
  for (int l = 0; l < layers; ++l) {
    const std::string sfx = l ? std::to_string(l) : "";
    const auto [w, bias] = ffn1_weights(c, l);
    EXPECT_NE(net->add_constant("w" + sfx, DataType::kHALF, {c.k, c.n}, w.raw()), nullptr);
    EXPECT_NE(net->add_constant("bias" + sfx, DataType::kHALF, {c.n}, bias.raw()), nullptr);
    Attributes a;
    a.set("activation", Attribute(std::string(c.act)));
    ir::Node* n = g.add_node("FusedMatMul", "ffn" + sfx,
                             {g.find_value("a"), g.find_value("w" + sfx), g.find_value("bias" + sfx)}, {"y" + sfx}, a,
                             1, "kiln");
    EXPECT_TRUE(passes::infer_node(g, *n).ok());
    EXPECT_TRUE(net->mark_output(net->find_tensor("y" + sfx)).ok());
  }
  auto config = builder.create_builder_config();
  config->set_backend(Backend::kCUDA);
  config->set_builder_optimization_level(3);
  if (!timing_cache.empty()) config->set_timing_cache_file(timing_cache);
  return builder.build_serialized_network(*net, *config);
}

// The engine's only FusedMatMul node, or null.
const runtime::PlanNode* ffn_node(const Engine& e) { return first_node(e, "FusedMatMul"); }

// The recorded tactic of the only FusedMatMul of a level-3 build of FFN1 (B and bias as weights).
std::string tuned_tactic(const MmCase& c, std::unique_ptr<Engine>* out) {
  auto engine = test::load_engine(build_ffn1(c));
  EXPECT_NE(engine, nullptr);
  const std::string tactic = engine ? string_attr(ffn_node(*engine), "kiln.tactic") : "";
  if (out) *out = std::move(engine);
  return tactic;
}

// The tuner times cuBLASLt's ranks, cuDNN's plans and (in a build with them) the CUTLASS kernels and records one;
// the tuned engine matches the reference.
TEST_F(GpuDnnMatmul, TunerRecordsATacticThatMatches) {
  KILN_REQUIRE_GPU();
  for (const MmCase& c :
       {MmCase{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"}, MmCase{"bert-ffn1-b64", 8192, 3072, 768, "gelu_erf"}}) {
    std::unique_ptr<Engine> engine;
    const std::string tactic = tuned_tactic(c, &engine);
    ASSERT_NE(engine, nullptr);
    std::printf("DNN_MM tuner %s recorded '%s'\n", c.name, tactic.c_str());
    EXPECT_TRUE(tactic.rfind("lt_heur", 0) == 0 || tactic.rfind("cudnn_matmul_fused_", 0) == 0 ||
                tactic.rfind(cuda::kCutlassGeluPrefix, 0) == 0)
        << tactic;
    const Tensor x = random_tensor(DataType::kHALF, {c.m, c.k}, 9, -1, 1);
    std::string err;
    const auto got = infer_capturing(*engine, {{"a", x}}, &err);
    EXPECT_EQ(err.find(kFallbackText), std::string::npos) << err;
    // The same weights through the reference, on the CPU.
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(ffn1_reference(c, x), got[0], 3e-2, 2e-2, std::string("tuned FFN1 ") + c.name);
  }
}

// The batch-1 question of run 16 (bert_base b1 got slower as cuDNN tactics were offered): bert's FFN1 at 128 tokens
// tuned with the tuner's two timing modes (KILN_TACTIC_TIMING stream, graph) and with cuDNN withdrawn; each engine
// then timed as plain enqueues and as CUDA-graph replays. Printed (DNN_MM_B1 lines), not pass/fail beyond the
// results matching the reference: which mode picks the tactic that is faster where it matters (graph replay).
TEST_F(GpuDnnMatmul, BatchOneChoiceByTimingMode) {
  KILN_REQUIRE_GPU();
  const MmCase c{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"};
  const Tensor x = random_tensor(DataType::kHALF, {c.m, c.k}, 9, -1, 1);
  const Tensor want = ffn1_reference(c, x);
  for (const char* mode : {"stream", "graph", "no-cudnn"}) {
    ScopedEnv timing("KILN_TACTIC_TIMING", std::string(mode) == "graph" ? "graph" : "stream");
    ScopedEnv dnn("KILN_DNN_MATMUL", std::string(mode) == "no-cudnn" ? "0" : nullptr);
    std::unique_ptr<Engine> engine;
    const std::string tactic = tuned_tactic(c, &engine);
    ASSERT_NE(engine, nullptr) << mode;
    const Timed plain = time_engine(*engine, {{"a", x}}, DataType::kHALF, 200);
    const Timed replay = time_engine(*engine, {{"a", x}}, DataType::kHALF, 200, true);
    std::printf("DNN_MM_B1 %-8s recorded %-24s plain %7.2f us, graph replay %7.2f us\n", mode, tactic.c_str(),
                plain.us, replay.us);
    expect_tensors_close(want, plain.y, 3e-2, 2e-2, std::string("FFN1 b1, ") + mode);
    expect_tensors_close(want, replay.y, 3e-2, 2e-2, std::string("FFN1 b1 replayed, ") + mode);
  }
}

// With KILN_DNN_MATMUL=0 the tactic list is cuBLASLt's alone: the tuner can only record one of its ranks.
TEST(GpuDnnMatmulGateOff, TunerKeepsCublasLt) {
  KILN_REQUIRE_GPU();
  ScopedEnv off("KILN_DNN_MATMUL", "0");
  const std::string tactic = tuned_tactic(MmCase{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"}, nullptr);
  EXPECT_EQ(tactic.rfind("lt_heur", 0), 0u) << tactic;
}

// Not a pass/fail check beyond correctness: bert-base FFN1 (FP16, [tokens, 768] x [768, 3072] + bias, erf-GELU) with
// cuBLASLt + the epilogue pass (the default) against each cuDNN plan, printed.
TEST_F(GpuDnnMatmul, Ffn1Times) {
  KILN_REQUIRE_GPU();
  for (int64_t tokens : {8192, 128}) {
    const MmCase c{"bert-ffn1", tokens, 3072, 768, "gelu_erf"};
    Tensor first;
    for (const char* tactic : {"", "cudnn_matmul_fused_0", "cudnn_matmul_fused_1", "cudnn_matmul_fused_2"}) {
      std::vector<Tensor> inputs;
      const auto g = mm_graph(c, DataType::kHALF, tactic, &inputs, 31);
      ::testing::internal::CaptureStderr();
      const Timed t = time_on_gpu(*g, inputs, tokens > 1000 ? 50 : 200);
      const std::string err = ::testing::internal::GetCapturedStderr();
      const bool fell_back = err.find(kFallbackText) != std::string::npos;
      std::printf("DNN_MM_TIME tokens %5lld %-22s %8.1f us%s\n", static_cast<long long>(tokens),
                  *tactic ? tactic : "cuBLASLt+pass", t.us, fell_back ? " (not built: cuBLASLt+pass)" : "");
      if (!*tactic) {
        first = t.y;
      } else if (first.defined() && t.y.defined()) {
        expect_tensors_close(first, t.y, 3e-2, 2e-2, std::string("vs cuBLASLt ") + tactic);
      }
    }
  }
}

// SiLU and sigmoid, forced to cuDNN's first plan and to cuBLASLt's first algorithm (+ the epilogue pass), against
// the reference: efficientnet_b0's expand 1x1 GEMMs (NHWC rows x K -> N, weights [N, K] read with trans_b) at batch
// 16 (the b128 rows are timed below, checked there against cuBLASLt), its SE reduce FC (N = 4: 8-byte rows, which
// cuDNN may refuse), and odd sizes with residuals before and after the activation.
TEST_F(GpuDnnMatmul, SigmoidActsMatchTheReference) {
  KILN_REQUIRE_GPU();
  struct Forced {
    MmCase c;
    bool must_run;  // the cuDNN tactic must build (the shapes the feature is for)
  };
  const Forced cases[] = {
      {{"effnet-expand-112-b16", 16 * 112 * 112, 96, 16, "silu", true, false, false, true}, true},
      {{"effnet-expand-56-b16", 16 * 56 * 56, 144, 24, "silu", true, false, false, true}, true},
      {{"effnet-expand-28-b16", 16 * 28 * 28, 240, 40, "silu", true, false, false, true}, true},
      {{"effnet-se-expand", 128, 96, 4, "sigmoid", true, false, false, true}, false},
      {{"effnet-se-reduce", 128, 4, 96, "silu", true, false, false, true}, false},
      {{"odd-res-after", 77, 200, 72, "silu", true, true}, false},
      {{"odd-res-first-tb", 130, 96, 24, "silu", true, true, true, true}, false},
      {{"no-bias", 200, 136, 64, "sigmoid", false}, false},
      {{"one-row", 1, 240, 40, "silu", true, false, false, true}, false},
  };
  for (const auto& [c0, must_run] : cases)
    for (const char* act : {"silu", "sigmoid"})
      for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
        MmCase c = c0;
        c.act = act;
        std::vector<Tensor> ref_inputs;
        const std::vector<Tensor> cpu =
            run_graph(*mm_graph(c, dt, "", &ref_inputs, 41), Backend::kCPU, ref_inputs, nullptr);
        ASSERT_EQ(cpu.size(), 1u);
        for (const char* tactic : {"cudnn_matmul_fused_0", "lt_heur0"}) {
          SCOPED_TRACE(describe(c, dt, tactic));
          std::vector<Tensor> inputs;
          const auto g = mm_graph(c, dt, tactic, &inputs, 41);
          std::string err;
          const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
          ASSERT_EQ(got.size(), 1u);
          const bool dnn = std::string(tactic).rfind("cudnn", 0) == 0;
          const bool ran = err.find(kFallbackText) == std::string::npos;
          if (dnn && must_run) {
            EXPECT_TRUE(ran) << "cuDNN did not run: " << err;
          }
          std::printf("DNN_MM_SIG %-66s %s\n", describe(c, dt, tactic).c_str(),
                      !dnn  ? "cuBLASLt + pass"
                      : ran ? "cuDNN"
                            : "fallback (cuBLASLt + pass)");
          expect_tensors_close(cpu[0], got[0], atol_of(dt), rtol_of(dt), "vs the reference");
        }
      }
}

// The tuner on an efficientnet expand GEMM with SiLU (the gate on): it records one of the offered tactics, and the
// tuned engine matches the reference.
TEST_F(GpuDnnMatmul, TunerRecordsATacticForSilu) {
  KILN_REQUIRE_GPU();
  const MmCase c{"effnet-expand-56-b16", 16 * 56 * 56, 144, 24, "silu"};
  std::unique_ptr<Engine> engine;
  const std::string tactic = tuned_tactic(c, &engine);
  ASSERT_NE(engine, nullptr);
  std::printf("DNN_MM tuner %s silu recorded '%s'\n", c.name, tactic.c_str());
  EXPECT_TRUE(tactic.rfind("lt_heur", 0) == 0 || tactic.rfind("cudnn_matmul_fused_", 0) == 0) << tactic;
  const Tensor x = random_tensor(DataType::kHALF, {c.m, c.k}, 9, -1, 1);
  const auto got = test::infer(*engine, {{"a", x}});
  ASSERT_EQ(got.size(), 1u);
  expect_tensors_close(ffn1_reference(c, x), got[0], 3e-2, 2e-2, "tuned expand GEMM + SiLU");
}

// Not a pass/fail check beyond agreement with cuBLASLt: efficientnet_b0's expand GEMMs at batch 128 (FP16, + bias,
// SiLU): the GEMM alone (cuBLASLt, bias in its epilogue: today's FusedMatMul before the separate SiLU kernel),
// cuBLASLt + the SiLU pass (what the SiLU costs on top), and each cuDNN plan with SWISH fused, printed.
TEST_F(GpuDnnMatmul, EfficientnetExpandSiluTimes) {
  KILN_REQUIRE_GPU();
  const MmCase shapes[] = {{"expand-112", 128 * 112 * 112, 96, 16, "silu", true, false, false, true},
                           {"expand-56", 128 * 56 * 56, 144, 24, "silu", true, false, false, true},
                           {"expand-28", 128 * 28 * 28, 240, 40, "silu", true, false, false, true}};
  for (const MmCase& s : shapes) {
    MmCase plain = s;
    plain.act = "none";
    std::vector<Tensor> inputs;
    const Timed gemm = time_on_gpu(*mm_graph(plain, DataType::kHALF, "lt_heur0", &inputs, 51), inputs, 50);
    std::printf("DNN_MM_SILU_TIME %-10s m%-8lld GEMM alone (cuBLASLt)  %8.1f us\n", s.name, static_cast<long long>(s.m),
                gemm.us);
    Tensor first;
    for (const char* tactic : {"lt_heur0", "cudnn_matmul_fused_0", "cudnn_matmul_fused_1", "cudnn_matmul_fused_2"}) {
      inputs.clear();
      const auto g = mm_graph(s, DataType::kHALF, tactic, &inputs, 51);
      ::testing::internal::CaptureStderr();
      const Timed t = time_on_gpu(*g, inputs, 50);
      const std::string err = ::testing::internal::GetCapturedStderr();
      const bool fell_back = err.find(kFallbackText) != std::string::npos;
      std::printf("DNN_MM_SILU_TIME %-10s m%-8lld %-22s %8.1f us%s\n", s.name, static_cast<long long>(s.m),
                  std::string(tactic) == "lt_heur0" ? "cuBLASLt + SiLU pass" : tactic, t.us,
                  fell_back ? " (not built: cuBLASLt+pass)" : "");
      if (!first.defined()) {
        first = t.y;
      } else if (t.y.defined()) {
        expect_tensors_close(first, t.y, 3e-2, 2e-2, std::string(s.name) + " vs cuBLASLt + pass: " + tactic);
      }
    }
  }
}

// ---- Plan compilation counts and the plan stored in the engine ----

using cuda::kDnnMatmulMaxTactics;
using cuda::kDnnPlanAttr;
using cuda::kDnnPlanKeyAttr;

// The CUDA backend's process-wide counts of cuDNN matmul plans finalized from an engine config (each a runtime
// compilation) and restored from an engine's stored JSON.
struct PlanCounts {
  int64_t finalized = -1, restored = -1;
};
PlanCounts plan_counts() {
  return {backend_counter("cudnn_matmul.plans_finalized"), backend_counter("cudnn_matmul.plans_restored")};
}

// A forced tactic run through a fresh context (a fresh cuDNN handle); whether cuDNN ran, and the finalizes it cost.
struct ForcedRun {
  bool ran = false;
  int64_t finalized = 0, restored = 0;
};
ForcedRun run_forced(const MmCase& c, const std::string& tactic, int layers = 1,
                     const std::vector<std::pair<std::string, std::string>>& annotations = {}) {
  std::vector<Tensor> inputs;
  auto g = mm_graph(c, DataType::kHALF, tactic, &inputs, 61);
  ir::Node* first = nullptr;
  for (auto& n : g->nodes()) first = n.get();
  for (const auto& [k, v] : annotations) first->attrs.set(k, Attribute(v));
  // More layers of the same problem, each reading the same inputs.
  for (int l = 1; l < layers; ++l) {
    ir::Node* n = g->add_node("FusedMatMul", "ffn" + std::to_string(l), first->inputs, {"y" + std::to_string(l)},
                              first->attrs, 1, "kiln");
    EXPECT_TRUE(passes::infer_node(*g, *n).ok());
    g->outputs().push_back(n->outputs[0]);
  }
  const std::vector<Tensor> cpu = run_graph(*g, Backend::kCPU, inputs, nullptr);
  const PlanCounts before = plan_counts();
  std::string err;
  const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
  const PlanCounts after = plan_counts();
  EXPECT_EQ(got.size(), static_cast<size_t>(layers));
  EXPECT_EQ(cpu.size(), static_cast<size_t>(layers));
  for (size_t i = 0; i < got.size() && i < cpu.size(); ++i)
    expect_tensors_close(cpu[i], got[i], 3e-2, 2e-2, "forced " + tactic + " layer " + std::to_string(i));
  return {err.find(kFallbackText) == std::string::npos, after.finalized - before.finalized,
          after.restored - before.restored};
}

// Each plan is compiled once per process: the first run of rank 2 walks cuDNN's configs (three usable plans at
// least); later contexts (new handles) restore the walk's serialized plan of the rank they run, compiling
// nothing, and the layers of one problem share one plan. Before, every run compiled rank + 1 plans and every
// layer its own.
TEST_F(GpuDnnMatmul, EachPlanCompiledOncePerProcess) {
  KILN_REQUIRE_GPU();
  const MmCase c{"ffn1-352", 352, 3072, 768, "gelu_erf"};
  const ForcedRun walk = run_forced(c, "cudnn_matmul_fused_2");
  std::printf("DNN_MM_PLANS first run of rank 2: %lld finalizes (cuDNN %s)\n", static_cast<long long>(walk.finalized),
              walk.ran ? "ran" : "had fewer than 3 plans");
  if (!walk.ran) GTEST_SKIP() << "cuDNN offers fewer than 3 usable plans for FFN1 here";
  EXPECT_GE(walk.finalized, 3);
  EXPECT_EQ(walk.restored, 0);
  const ForcedRun again = run_forced(c, "cudnn_matmul_fused_2");
  EXPECT_TRUE(again.ran);
  EXPECT_EQ(again.finalized, 0) << "a new handle restores the plan of rank 2 the walk compiled";
  EXPECT_EQ(again.restored, 1);
  const ForcedRun rank0 = run_forced(c, "cudnn_matmul_fused_0");
  EXPECT_TRUE(rank0.ran);
  EXPECT_EQ(rank0.finalized, 0);
  EXPECT_EQ(rank0.restored, 1);
  const ForcedRun four = run_forced(c, "cudnn_matmul_fused_1", 4);
  EXPECT_TRUE(four.ran);
  EXPECT_EQ(four.finalized, 0);
  EXPECT_EQ(four.restored, 1) << "four layers of one problem share one plan";
}

// A cold level-3 build (a problem this process has not seen) compiles only the walk over cuDNN's configs (one
// compile per config tried, the three offered plans among them; before, the tuner compiled 1 + 2 + 3 more); a
// second build of the same network compiles nothing (its tuner handle restores the three plans).
TEST_F(GpuDnnMatmul, ColdBuildCompilesEachConfigOnce) {
  KILN_REQUIRE_GPU();
  const MmCase c{"ffn1-544", 544, 3072, 768, "gelu_erf"};
  const PlanCounts b0 = plan_counts();
  auto first = build_ffn1(c);
  const PlanCounts b1 = plan_counts();
  auto second = build_ffn1(c);
  const PlanCounts b2 = plan_counts();
  ASSERT_TRUE(first.ok()) << first.status().message();
  ASSERT_TRUE(second.ok()) << second.status().message();
  std::printf("DNN_MM_PLANS cold level-3 build: %lld finalizes, %lld restores; again: %lld finalizes, %lld restores\n",
              static_cast<long long>(b1.finalized - b0.finalized), static_cast<long long>(b1.restored - b0.restored),
              static_cast<long long>(b2.finalized - b1.finalized), static_cast<long long>(b2.restored - b1.restored));
  // cuDNN offers FFN1 plans (ForcedTacticMatchesTheReference requires them), three where it has three.
  EXPECT_GE(b1.finalized - b0.finalized, 1) << "the walk";
  EXPECT_EQ(b1.restored - b0.restored, 0) << "the tuner's timing runs use the walk's plans on the same handle";
  EXPECT_EQ(b2.finalized - b1.finalized, 0) << "nothing compiled twice";
  EXPECT_GE(b2.restored - b1.restored, 1);
  EXPECT_LE(b2.restored - b1.restored, std::min<int64_t>(kDnnMatmulMaxTactics, b1.finalized - b0.finalized));
}

// A level-3 build after the configs were walked: the tuner compiles nothing more (its handle restores the three
// offered plans); loading the engine compiles nothing (the chosen cuDNN plan is restored from the engine, or
// cuBLASLt was chosen).
TEST_F(GpuDnnMatmul, TunedBuildCompilesEachOfferedPlanOnceAndTheLoadNone) {
  KILN_REQUIRE_GPU();
  const MmCase c{"ffn1-288", 288, 3072, 768, "gelu_erf"};
  const ForcedRun walk = run_forced(c, "cudnn_matmul_fused_2");
  if (!walk.ran) GTEST_SKIP() << "cuDNN offers fewer than 3 usable plans for FFN1 here";
  const PlanCounts b0 = plan_counts();
  auto blob = build_ffn1(c);
  const PlanCounts b1 = plan_counts();
  ASSERT_TRUE(blob.ok()) << blob.status().message();
  std::printf("DNN_MM_PLANS level-3 build: %lld finalizes, %lld restores\n",
              static_cast<long long>(b1.finalized - b0.finalized), static_cast<long long>(b1.restored - b0.restored));
  EXPECT_EQ(b1.finalized - b0.finalized, 0) << "the walk compiled the offered plans already";
  EXPECT_EQ(b1.restored - b0.restored, kDnnMatmulMaxTactics) << "each of the 3 offered plans restored once";
  auto engine = test::load_engine(*blob);
  ASSERT_NE(engine, nullptr);
  const std::string tactic = string_attr(ffn_node(*engine), "kiln.tactic");
  const bool dnn = tactic.rfind("cudnn_matmul_fused_", 0) == 0;
  EXPECT_EQ(!string_attr(ffn_node(*engine), kDnnPlanAttr).empty(), dnn) << tactic;
  const Tensor x = random_tensor(DataType::kHALF, {c.m, c.k}, 9, -1, 1);
  const PlanCounts l0 = plan_counts();
  std::string err;
  const auto got = infer_capturing(*engine, {{"a", x}}, &err);
  const PlanCounts l1 = plan_counts();
  std::printf("DNN_MM_PLANS load of the engine (tactic %s): %lld finalizes, %lld restores\n", tactic.c_str(),
              static_cast<long long>(l1.finalized - l0.finalized), static_cast<long long>(l1.restored - l0.restored));
  EXPECT_EQ(l1.finalized - l0.finalized, 0);
  EXPECT_EQ(l1.restored - l0.restored, dnn ? 1 : 0);
  EXPECT_EQ(err.find(kFallbackText), std::string::npos) << err;
  ASSERT_EQ(got.size(), 1u);
  expect_tensors_close(ffn1_reference(c, x), got[0], 3e-2, 2e-2, "loaded engine");
}

// A level-3 build whose timing cache names cuDNN's first plan for the layer (so the choice does not depend on
// timings: whatever the tuner recorded, cuBLASLt, cuDNN or CUTLASS, is rewritten), as the engine blob.
Result<std::vector<uint8_t>> build_with_dnn_choice(const MmCase& c, int layers = 1) {
  return build_with_cached_tactic("dnn_plan_" + std::to_string(c.m),
                                  "\"(lt_heur[0-9]+(_sk[0-9]+)?|cudnn_matmul_fused_[0-9]+|cutlass_[a-z]+_c[0-9]+)\"",
                                  "cudnn_matmul_fused_0",
                                  [&](const std::string& path) { return build_ffn1(c, path, layers); });
}

// The chosen plan travels in the engine: the build stores its JSON and key with the node; a load restores it (a
// restore, no compile) and matches the reference.
TEST_F(GpuDnnMatmul, SavedEngineRestoresItsPlanWithoutCompiling) {
  KILN_REQUIRE_GPU();
  const MmCase c{"ffn1-320", 320, 3072, 768, "gelu_erf"};
  auto blob = build_with_dnn_choice(c);
  ASSERT_TRUE(blob.ok()) << blob.status().message();
  auto engine = test::load_engine(*blob);
  ASSERT_NE(engine, nullptr);
  const runtime::PlanNode* node = ffn_node(*engine);
  ASSERT_EQ(string_attr(node, "kiln.tactic"), "cudnn_matmul_fused_0");
  const std::string json = string_attr(node, kDnnPlanAttr), key = string_attr(node, kDnnPlanKeyAttr);
  std::printf("DNN_MM_PLANS stored plan: %zu bytes of JSON, key '%s', engine %zu bytes\n", json.size(), key.c_str(),
              blob->size());
  ASSERT_FALSE(json.empty());
  EXPECT_NE(key.find("cudnn_matmul_fused_0"), std::string::npos) << key;
  // Reported, not asserted: a rebuild with the timing cache gives the same engine bytes only if cuDNN writes the
  // same JSON for the same plan (GpuTuning.TacticsTimedCachedAndReused asserts that property for its CNN).
  auto again = build_with_dnn_choice(c);
  ASSERT_TRUE(again.ok()) << again.status().message();
  std::printf("DNN_MM_PLANS rebuild gives identical engine bytes: %s\n", *again == *blob ? "yes" : "NO");
  const Tensor x = random_tensor(DataType::kHALF, {c.m, c.k}, 19, -1, 1);
  for (int load = 0; load < 2; ++load) {  // each inference makes a context, with a handle of its own
    const PlanCounts before = plan_counts();
    const auto t0 = std::chrono::steady_clock::now();
    std::string err;
    const auto got = infer_capturing(*engine, {{"a", x}}, &err);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const PlanCounts after = plan_counts();
    std::printf("DNN_MM_PLANS load %d: first inference %.1f ms, %lld finalizes, %lld restores\n", load, ms,
                static_cast<long long>(after.finalized - before.finalized),
                static_cast<long long>(after.restored - before.restored));
    EXPECT_EQ(after.finalized - before.finalized, 0) << "the load compiled a plan";
    EXPECT_EQ(after.restored - before.restored, 1);
    EXPECT_EQ(err.find(kFallbackText), std::string::npos) << err;
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(ffn1_reference(c, x), got[0], 3e-2, 2e-2, "restored plan");
  }
}

// A stored plan that cannot be used is a compile, never an error: corrupt JSON (truncated, or not a plan: cuDNN
// refuses it), a key of another cuDNN version and GPU (not even tried), and for contrast the intact one (restored).
// The unusable ones are stored for problems this process has not compiled (other row counts, the key rewritten to
// match), so the fallback is a real compile.
// (Flipped bytes inside a kernel image that still parses are not tried: a damaged kernel could fault the GPU
// and end the test process.) Each result matches the
// reference and no fallback to cuBLASLt happens.
TEST_F(GpuDnnMatmul, UnusableStoredPlanIsCompiledInstead) {
  KILN_REQUIRE_GPU();
  const MmCase c{"ffn1-320", 320, 3072, 768, "gelu_erf"};
  auto blob = build_with_dnn_choice(c);
  ASSERT_TRUE(blob.ok()) << blob.status().message();
  auto engine = test::load_engine(*blob);
  ASSERT_NE(engine, nullptr);
  const std::string json = string_attr(ffn_node(*engine), kDnnPlanAttr);
  const std::string key = string_attr(ffn_node(*engine), kDnnPlanKeyAttr);
  ASSERT_FALSE(json.empty());
  ASSERT_NE(key.find(" m320 "), std::string::npos) << key;
  // The key of the same layer at m rows (the row count is part of the problem).
  auto key_for = [&](int64_t m, const std::string& k) {
    std::string r = k;
    r.replace(r.find(" m320 "), 6, " m" + std::to_string(m) + " ");
    return r;
  };
  const std::string other_env = key.substr(0, key.find("| cudnn ")) + "| cudnn 1 | another GPU";
  struct Case {
    const char* what;
    int64_t m;
    std::string json, key;
  };
  const Case cases[] = {{"truncated JSON", 448, json.substr(0, json.size() / 2), key_for(448, key)},
                        {"garbage", 480, "{not a plan", key_for(480, key)},
                        {"other cuDNN and GPU", 512, json, key_for(512, other_env)},
                        {"intact", 320, json, key}};
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    MmCase ck = c;
    ck.m = k.m;
    const bool restores = k.m == 320;
    const ForcedRun r = run_forced(ck, "cudnn_matmul_fused_0", 1, {{kDnnPlanAttr, k.json}, {kDnnPlanKeyAttr, k.key}});
    std::printf("DNN_MM_PLANS stored plan %-22s: %lld finalizes, %lld restores\n", k.what,
                static_cast<long long>(r.finalized), static_cast<long long>(r.restored));
    EXPECT_TRUE(r.ran) << "a cuDNN plan still runs";
    if (restores) {
      EXPECT_EQ(r.restored, 1);
      EXPECT_EQ(r.finalized, 0) << "restored, not compiled";
    } else {
      EXPECT_EQ(r.restored, 0);
      EXPECT_GE(r.finalized, 1) << "compiled instead";
    }
  }
}

// Layers of one problem store one plan (the first layer's annotations; the others find the plan the first
// restored): three FFN1 layers on one input, one stored JSON, a load with one restore and no compile, each output
// against its reference.
TEST_F(GpuDnnMatmul, LayersOfOneProblemStoreOnePlan) {
  KILN_REQUIRE_GPU();
  const MmCase c{"ffn1-416", 416, 3072, 768, "gelu_erf"};
  constexpr int kLayers = 3;
  auto blob = build_with_dnn_choice(c, kLayers);
  ASSERT_TRUE(blob.ok()) << blob.status().message();
  auto engine = test::load_engine(*blob);
  ASSERT_NE(engine, nullptr);
  int layers = 0, stored = 0;
  for (const auto& pn : engine->plan().nodes) {
    if (pn.op_type != "FusedMatMul") continue;
    ++layers;
    EXPECT_EQ(string_attr(&pn, "kiln.tactic"), "cudnn_matmul_fused_0") << pn.name;
    stored += !string_attr(&pn, kDnnPlanAttr).empty();
  }
  EXPECT_EQ(layers, kLayers);
  EXPECT_EQ(stored, 1) << "one stored plan for the three layers";
  const Tensor x = random_tensor(DataType::kHALF, {c.m, c.k}, 29, -1, 1);
  const PlanCounts before = plan_counts();
  std::string err;
  const auto got = infer_capturing(*engine, {{"a", x}}, &err);
  const PlanCounts after = plan_counts();
  std::printf("DNN_MM_PLANS load of %d layers of one problem: %lld finalizes, %lld restores\n", kLayers,
              static_cast<long long>(after.finalized - before.finalized),
              static_cast<long long>(after.restored - before.restored));
  EXPECT_EQ(after.finalized - before.finalized, 0);
  EXPECT_EQ(after.restored - before.restored, 1);
  EXPECT_EQ(err.find(kFallbackText), std::string::npos) << err;
  ASSERT_EQ(got.size(), static_cast<size_t>(kLayers));
  for (int l = 0; l < kLayers; ++l)
    expect_tensors_close(ffn1_reference(c, x, l), got[l], 3e-2, 2e-2, "layer " + std::to_string(l));
}

// cuBLASLt's configurations split along K (tactic "lt_heurK_skS", offered where the output tiles leave most SMs
// idle: bert's 128-token GEMMs at batch 1), forced, against the reference: every epilogue form the GEMM layers use
// (bias, residual after or first, an activation cuBLASLt finishes or the pass after it), K not a multiple of the
// split or of a tile, and each type. The bert shapes must really split in FP16 (no "running it unsplit" warning).
TEST(GpuGemmSplitK, ForcedSplitsMatchTheReference) {
  KILN_REQUIRE_GPU();
  struct Split {
    MmCase c;
    bool must_split;
  };
  const Split cases[] = {
      {{"bert-ffn2-b1", 128, 768, 3072, "none", true, true}, true},
      {{"bert-qkv-b1", 128, 2304, 768, "none"}, true},
      {{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"}, true},
      {{"relu-res-first", 128, 768, 1024, "relu", true, true, true}, false},
      {{"odd-k-tb", 96, 200, 1000, "none", true, false, false, true}, false},
      {{"no-bias", 64, 256, 2048, "none", false}, false},
  };
  for (const auto& [c, must_split] : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16, DataType::kFLOAT}) {
      std::vector<Tensor> ref_inputs;
      const std::vector<Tensor> cpu =
          run_graph(*mm_graph(c, dt, "", &ref_inputs, 29), Backend::kCPU, ref_inputs, nullptr);
      for (const char* tactic : {"lt_heur0_sk2", "lt_heur0_sk4", "lt_heur1_sk8"}) {
        SCOPED_TRACE(describe(c, dt, tactic));
        std::vector<Tensor> inputs;
        const auto g = mm_graph(c, dt, tactic, &inputs, 29);
        std::string err;
        const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
        ASSERT_EQ(cpu.size(), 1u);
        ASSERT_EQ(got.size(), 1u);
        const bool split = err.find("running it unsplit") == std::string::npos;
        if (must_split && dt == DataType::kHALF) {
          EXPECT_TRUE(split) << err;
        }
        std::printf("SPLITK %-52s %s\n", describe(c, dt, tactic).c_str(), split ? "split" : "unsplit (warned)");
        // FP32 runs as TF32 (the backend's default), so its tolerance is the half types'.
        expect_tensors_close(cpu[0], got[0], atol_of(dt == DataType::kFLOAT ? DataType::kHALF : dt),
                             rtol_of(dt == DataType::kFLOAT ? DataType::kHALF : dt), "vs the reference");
      }
    }
}

// At level 4 the tuner times the splits where the problem leaves SMs idle (bert FFN2 at 128 tokens: 6 output
// tiles) and not where it fills the GPU (8192 tokens); at the default level 3 it times cuBLASLt's ranks alone.
// What it chooses matches the reference.
TEST(GpuGemmSplitK, TunerTimesSplitsOnlyForSmallProblems) {
  KILN_REQUIRE_GPU();
  for (const MmCase& c : {MmCase{"bert-ffn2-b1", 128, 768, 3072, "none", true, true},
                          MmCase{"bert-ffn2-b64", 8192, 768, 3072, "none", true, true},
                          // vit's output projection and FFN2 at batch 64 (12608 rows).
                          MmCase{"vit-outproj-b64", 12608, 768, 768, "none", true, true, false, true},
                          MmCase{"vit-ffn2-b64", 12608, 768, 3072, "none", true, true},
                          MmCase{"bert-qkv-b64", 8192, 2304, 768, "none"},
                          MmCase{"gpt2-qkv-b32", 4096, 2304, 768, "none"}}) {
    SCOPED_TRACE(c.name);
    std::vector<Tensor> inputs;
    auto make = [&](ir::Graph& g) {
      inputs.clear();
      fill_mm_graph(g, c, DataType::kHALF, "", &inputs, 37);
      return inputs;
    };
    const TunedBuild level3 = tuned_build("FusedMatMul", "ffn", 3, make);
    EXPECT_EQ(level3.log.find("_sk"), std::string::npos) << level3.log;
    TunedBuild b = tuned_build("FusedMatMul", "ffn", 4, make);
    ASSERT_NE(b.engine, nullptr);
    const size_t at = b.log.find("tactic for 'ffn'");
    ASSERT_NE(at, std::string::npos) << b.log;
    const std::string line = b.log.substr(at, b.log.find('\n', at) - at);
    std::printf("SPLITK tuned %s: %s\n", c.name, line.c_str());
    EXPECT_EQ(line.find("lt_heur0_sk") != std::string::npos, c.m == 128) << line;
    EXPECT_GE(b.timed, 2) << line;
    const auto got = test::infer(*b.engine, named_inputs(c, inputs));
    std::vector<Tensor> ref_inputs;
    const auto want = run_graph(*mm_graph(c, DataType::kHALF, "", &ref_inputs, 37), Backend::kCPU, ref_inputs, nullptr);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    expect_tensors_close(want[0], got[0], atol_of(DataType::kHALF), rtol_of(DataType::kHALF), b.tactic.c_str());
  }
}

// The CUTLASS GEMM + bias + activation tactics (cutlass_gemm.h; built with `make cutlass`), each configuration
// forced through "kiln.tactic", FP16 and BF16: erf GELU at bert's FFN1 shapes for 128 and 1024 tokens, an M that is
// no tile multiple, without bias; SiLU with B stored [N, K] at efficientnet's expand shapes and without bias;
// against the CPU reference; no fallback may happen. Skipped, saying so, in a build without
// the kernels (the forced tactic then falls back to cuBLASLt with a warning naming the reason).
// Whether the backend under test has the CUTLASS kernels: a forced CUTLASS tactic in a build without them falls
// back with a warning that says so.
bool cutlass_built() {
  std::vector<Tensor> inputs;
  const auto g = mm_graph(MmCase{"probe", 64, 64, 64, "gelu_erf"}, DataType::kHALF, cuda::cutlass_gelu_tactic_name(0),
                          &inputs, 61);
  std::string err;
  run_capturing(*g, inputs, &err);
  return err.find("this build has no CUTLASS kernels") == std::string::npos;
}

TEST(GpuCutlassGemm, ForcedConfigsMatchTheReference) {
  KILN_REQUIRE_GPU();
  const MmCase cases[] = {
      {"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"},
      {"bert-ffn1-b8", 1024, 3072, 768, "gelu_erf"},
      {"odd-rows", 37, 512, 256, "gelu_erf"},
      {"no-bias", 200, 256, 512, "gelu_erf", false},
      // SiLU 1x1 convolutions as GEMMs (B stored [N, K]): efficientnet_b0's expand shapes at batch 2.
      {"effnet-expand-112", 25088, 96, 16, "silu", true, false, false, true},
      {"effnet-expand-28", 1568, 240, 40, "silu", true, false, false, true},
      {"silu-no-bias", 300, 64, 32, "silu", false, false, false, true},
      // Bias + residual, no activation: bert's attention output projection (a Gemm: B stored [N, K]) and FFN2
      // (a MatMul: B [K, N]) at batch 1, and rows that are not a multiple of a tile.
      {"bert-outproj-b1", 128, 768, 768, "none", true, true, false, true},
      {"bert-ffn2-b1", 128, 768, 3072, "none", true, true},
      {"res-odd-rows", 1037, 256, 512, "none", true, true, true},
      {"res-no-bias", 300, 64, 32, "none", false, true, false, true},
      // The product alone into rows of an odd width (B stored [N, K]): gpt2's lm_head at 128 tokens, 1001 columns
      // over rows that are no tile multiple, a width narrower than a tile.
      {"gpt2-lmhead-b1", 128, 50257, 768, "none", false, false, false, true},
      {"odd-1001", 200, 1001, 64, "none", false, false, false, true},
      {"odd-77", 37, 77, 32, "none", false, false, false, true},
  };
  for (const MmCase& c : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      std::vector<Tensor> ref_inputs;
      const std::vector<Tensor> cpu =
          run_graph(*mm_graph(c, dt, "", &ref_inputs, 53), Backend::kCPU, ref_inputs, nullptr);
      std::vector<std::string> tactics;
      if (std::string(c.act) == "silu")
        for (int config : cuda::kCutlassSiluConfigs) tactics.push_back(cuda::cutlass_silu_tactic_name(config));
      else if (c.res)
        for (int config : cuda::kCutlassResConfigs) tactics.push_back(cuda::cutlass_res_tactic_name(config));
      else if (c.n % 8 != 0)
        for (int config : cuda::kCutlassOddConfigs) tactics.push_back(cuda::cutlass_odd_tactic_name(config));
      else
        for (int config : cuda::kCutlassGeluConfigs) tactics.push_back(cuda::cutlass_gelu_tactic_name(config));
      for (const std::string& tactic : tactics) {
        SCOPED_TRACE(describe(c, dt, tactic));
        std::vector<Tensor> inputs;
        const auto g = mm_graph(c, dt, tactic, &inputs, 53);
        std::string err;
        const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
        if (err.find("this build has no CUTLASS kernels") != std::string::npos)
          GTEST_SKIP() << "this build has no CUTLASS kernels (`make cutlass`, or KILN_CUTLASS_DIR, builds them)";
        EXPECT_EQ(err.find("falls back"), std::string::npos) << err;
        ASSERT_EQ(got.size(), 1u);
        expect_tensors_close(cpu[0], got[0], atol_of(dt), rtol_of(dt), "vs the reference");
      }
    }
}

// A post-LN block chain of forced CUTLASS kernels, all launched with programmatic dependent launch (pdl.cuh, with
// KILN_PDL=1 for the GEMMs):
// LayerNorm -> CUTLASS erf-GELU GEMM -> CUTLASS bias + residual GEMM (the residual is the LayerNorm's output) ->
// LayerNorm, once for each GELU configuration. Every boundary is a kernel launched while its predecessor
// may still run (the CUTLASS kernels trigger on their last tile, the LayerNorm right after its wait): one that read
// its input, or overwrote a buffer, before its predecessor finished would leave stale rows somewhere along the
// chain. Against the CPU reference, FP16; 4096 rows, so each GEMM runs in several waves.
TEST(GpuCutlassGemm, DependentLaunchChainMatchesReference) {
  KILN_REQUIRE_GPU();
  if (!cutlass_built()) GTEST_SKIP() << "this build has no CUTLASS kernels (`make cutlass` builds them)";
  ScopedEnv pdl("KILN_PDL", "1");  // the GEMMs' PDL launch (read when each layer's kernel object is made)
  const int64_t m = 4096, d = 256, hidden = 1024;
  const DataType dt = DataType::kHALF;
  auto build = [&](ir::Graph& g, bool forced) {
    ir::Value* x = test::add_input(g, "x", dt, ops::shape_from_dims({m, d}));
    uint32_t seed = 70;
    auto constant = [&](const std::string& name, Dims shape, double lo, double hi) {
      return g.add_constant(name, random_tensor(dt, shape, seed++, lo, hi));
    };
    auto add = [&](const std::string& op, const std::string& name, std::vector<ir::Value*> in, Attributes at,
                   const char* domain) {
      ir::Node* n = g.add_node(op, name, in, {name + "_y"}, std::move(at), domain[0] ? 1 : 17, domain);
      Status st = passes::infer_node(g, *n);
      EXPECT_TRUE(st.ok()) << st.message();
      return n->outputs[0];
    };
    Attributes ln;
    ln.set("axis", Attribute(int64_t{-1}));
    x = add("LayerNormalization", "ln_in", {x, constant("g_in", {d}, 0.5, 1.5), constant("b_in", {d}, -0.5, 0.5)}, ln,
            "");
    for (size_t i = 0; i < std::size(cuda::kCutlassGeluConfigs); ++i) {
      const std::string l = std::to_string(i);
      Attributes a1, a2;
      a1.set("activation", Attribute(std::string("gelu_erf")));
      a2.set("activation", Attribute(std::string("none")));
      if (forced) {
        a1.set("kiln.tactic", Attribute(cuda::cutlass_gelu_tactic_name(cuda::kCutlassGeluConfigs[i])));
        a2.set("kiln.tactic", Attribute(cuda::cutlass_res_tactic_name(cuda::kCutlassResConfigs[0])));
      }
      const double s1 = 2.0 / std::sqrt(static_cast<double>(d)), s2 = 1.0 / std::sqrt(static_cast<double>(hidden));
      ir::Value* h = add("FusedMatMul", "ffn1_" + l,
                         {x, constant("w1_" + l, {d, hidden}, -s1, s1), constant("b1_" + l, {hidden}, -1, 1)}, a1,
                         "kiln");
      ir::Value* r = add("FusedMatMul", "ffn2_" + l,
                         {h, constant("w2_" + l, {hidden, d}, -s2, s2), constant("b2_" + l, {d}, -1, 1), x}, a2,
                         "kiln");
      x = add("LayerNormalization", "ln_" + l,
              {r, constant("g_" + l, {d}, 0.5, 1.5), constant("b_" + l, {d}, -0.5, 0.5)}, ln, "");
    }
    g.outputs().push_back(x);
  };
  const std::vector<Tensor> inputs = {random_tensor(dt, {m, d}, 69, -2, 2)};
  ir::Graph ref, gpu;
  build(ref, false);
  build(gpu, true);
  const std::vector<Tensor> want = run_graph(ref, Backend::kCPU, inputs, nullptr);
  std::string err;
  const std::vector<Tensor> got = run_capturing(gpu, inputs, &err);
  EXPECT_EQ(err.find("falls back"), std::string::npos) << err;
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  // Five FP16 blocks: the LayerNorms keep values O(1); a stale row would be off by O(1) everywhere in it.
  expect_tensors_close(want[0], got[0], 6e-2, 5e-2, "CUTLASS chain vs the reference");
}

// At the default level the tuner times the CUTLASS kernels against cuBLASLt + the erf-GELU pass for bert's FFN1 at
// 128 and 8192 tokens, and against cuBLASLt's bias + residual epilogue for its attention output projection and FFN2
// at 8192 (FP16); whatever it keeps matches the reference; the 'tactic for' line with every candidate's time is
// printed (bench/NOTES.md: what the fused kernels save at batch 64).
TEST(GpuCutlassGemm, TunerTimesCutlassForErfGeluAndResidualLayers) {
  KILN_REQUIRE_GPU();
  if (!cutlass_built()) GTEST_SKIP() << "this build has no CUTLASS kernels (`make cutlass` builds them)";
  for (const MmCase& c : {MmCase{"bert-ffn1-b1", 128, 3072, 768, "gelu_erf"},
                          MmCase{"bert-ffn1-b64", 8192, 3072, 768, "gelu_erf"},
                          MmCase{"vit-ffn1-b64", 12608, 3072, 768, "gelu_erf"},
                          MmCase{"bert-outproj-b64", 8192, 768, 768, "none", true, true, false, true},
                          MmCase{"bert-ffn2-b64", 8192, 768, 3072, "none", true, true},
                          // vit's output projection and FFN2 at batch 64 (12608 rows).
                          MmCase{"vit-outproj-b64", 12608, 768, 768, "none", true, true, false, true},
                          MmCase{"vit-ffn2-b64", 12608, 768, 3072, "none", true, true}}) {
    SCOPED_TRACE(c.name);
    std::vector<Tensor> inputs;
    auto make = [&](ir::Graph& g) {
      inputs.clear();
      fill_mm_graph(g, c, DataType::kHALF, "", &inputs, 59);
      return inputs;
    };
    TunedBuild b = tuned_build("FusedMatMul", "ffn", 3, make);
    ASSERT_NE(b.engine, nullptr);
    const size_t at = b.log.find("tactic for 'ffn'");
    ASSERT_NE(at, std::string::npos) << b.log;
    const std::string line = b.log.substr(at, b.log.find('\n', at) - at);
    std::printf("CUTLASS tuned %s: %s\n", c.name, line.c_str());
    // A build with the kernels must time them here; one without them skips, saying so.
    const char* prefix = c.res ? cuda::kCutlassResPrefix : cuda::kCutlassGeluPrefix;
    EXPECT_NE(line.find(prefix), std::string::npos) << line;
    const auto got = test::infer(*b.engine, named_inputs(c, inputs));
    std::vector<Tensor> ref_inputs;
    const auto want = run_graph(*mm_graph(c, DataType::kHALF, "", &ref_inputs, 59), Backend::kCPU, ref_inputs, nullptr);
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(want[0], got[0], atol_of(DataType::kHALF), rtol_of(DataType::kHALF), b.tactic.c_str());
  }
}

// Cold-weight timing (KILN_TACTIC_WEIGHTS=cold): each captured launch of bert's FFN2 at 128 tokens reads its own
// copy of the 4.7 MB weight matrix, so the weights come from DRAM as in a whole-model run. The build says so, the
// candidates are timed and the engine matches the reference; the chosen tactic's cold and hot times are printed
// (bench/NOTES.md compares the model-level effect).
TEST(GpuGemmSplitK, ColdWeightTimingTimesLaunchesOnTheirOwnWeightCopies) {
  KILN_REQUIRE_GPU();
  const int64_t m = 128, n = 768, k = 3072;
  const Tensor x = random_tensor(DataType::kHALF, {m, k}, 43, -1, 1);
  const Tensor w = random_tensor(DataType::kHALF, {k, n}, 44, -0.04, 0.04);
  const Tensor bias = random_tensor(DataType::kHALF, {n}, 45, -1, 1);
  auto make = [&](ir::Graph& g) {
    ir::Value* a = test::add_input(g, "a", DataType::kHALF, ops::shape_from_dims({m, k}));
    ir::Value* b = g.add_constant("w", w);
    ir::Value* c = g.add_constant("bias", bias);
    Attributes at;
    at.set("activation", Attribute(std::string("none")));
    ir::Node* node = g.add_node("FusedMatMul", "ffn", {a, b, c}, {"y"}, at, 1, "kiln");
    Status st = passes::infer_node(g, *node);
    EXPECT_TRUE(st.ok()) << st.message();
    g.outputs().push_back(node->outputs[0]);
    return std::vector<Tensor>{x};
  };
  auto chosen_ms = [](const std::string& log) {
    const size_t at = log.find("tactic for 'ffn'");
    const size_t paren = at == std::string::npos ? at : log.find('(', at);
    return paren == std::string::npos ? -1.0 : std::atof(log.c_str() + paren + 1);
  };
  TunedBuild hot = tuned_build("FusedMatMul", "ffn", 3, make);
  ASSERT_NE(hot.engine, nullptr);
  ScopedEnv cold_env("KILN_TACTIC_WEIGHTS", "cold");
  TunedBuild cold = tuned_build("FusedMatMul", "ffn", 3, make);
  ASSERT_NE(cold.engine, nullptr);
  EXPECT_NE(cold.log.find("reading weights that are not in L2"), std::string::npos) << cold.log;
  EXPECT_EQ(hot.log.find("reading weights that are not in L2"), std::string::npos) << hot.log;
  EXPECT_GE(cold.timed, 2) << cold.log;
  const double hot_ms = chosen_ms(hot.log), cold_ms = chosen_ms(cold.log);
  std::printf("COLD_WEIGHTS ffn2 128x768x3072: hot %s %.2f us, cold %s %.2f us\n", hot.tactic.c_str(), hot_ms * 1e3,
              cold.tactic.c_str(), cold_ms * 1e3);
  EXPECT_GT(cold_ms, 0.0) << cold.log;
  ir::Graph ref;
  const std::vector<Tensor> inputs = make(ref);
  const auto want = run_graph(ref, Backend::kCPU, inputs, nullptr);
  const auto got = test::infer(*cold.engine, {{"a", x}});
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(want.size(), 1u);
  expect_tensors_close(want[0], got[0], atol_of(DataType::kHALF), rtol_of(DataType::kHALF), cold.tactic.c_str());
}

}  // namespace
}  // namespace kiln::gpu_testing
