// GPU tests of FusedAttention's cuDNN tactic (cuDNN's fused flash attention through the frontend,
// src/backends/cuda/dnn_attention.h): "cudnn_sdpa" forced through "kiln.tactic" at bert-like (padding mask),
// vit-like (odd length, no mask) and gpt2-like (causal) shapes, packed and separate layouts, FP16 and BF16, against
// the CPU reference; shapes cuDNN may refuse falling back to our kernel with one warning; the tuner offering it
// (and not with KILN_DNN_SDPA=0) and recording a tactic that matches; and the time of our default against it at
// bert b64 / vit b64 / gpt2 b32 (printed, DNN_SDPA_TIME).
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "attention_test_util.h"
#include "backends/cuda/attention_tactics.h"
#include "gpu_timing_util.h"

namespace kiln::gpu_testing {
namespace {

constexpr const char* kTactic = "cudnn_sdpa";
constexpr const char* kFallbackText = "falls back to Kiln's own attention kernel";

double atol_of(DataType dt) { return dt == DataType::kHALF ? 3e-2 : 1.5e-1; }
double rtol_of(DataType dt) { return dt == DataType::kHALF ? 2e-2 : 5e-2; }

// cudnn_sdpa forced, against the reference. The shapes the tactic is for (first group: B=2 versions of bert's
// padding mask, vit's 197 tokens, gpt2's causal attention, packed and separate) must run on cuDNN (no fallback
// warning), FP16 and BF16; the others (full masks, odd mask rows, head dim 128, Sq != Sk, a key-broadcast mask
// that is declined) print whether cuDNN took them and must match the reference either way. Each line prints the
// engine's load + first run, which includes building cuDNN's plan.
TEST(GpuDnnSdpa, ForcedTacticMatchesTheReference) {
  KILN_REQUIRE_GPU();
  struct Forced {
    AttnCase c;
    bool must_run;
  };
  const Forced cases[] = {
      {{"bert", 2, 3, 128, 64, "bhsd", "bhsd", {2, 1, 1, 128}}, true},
      {{"bert-packed", 2, 3, 128, 64, "bs3hd", "bshd", {2, 1, 1, 128}}, true},
      {{"vit", 2, 3, 197, 64, "bs3hd", "bshd", {}}, true},
      {{"gpt2", 2, 3, 128, 64, "bs3hd", "bshd", {}, true}, true},
      {{"gpt2-separate", 2, 3, 128, 64, "bhsd", "bhsd", {}, true}, true},
      {{"full-mask", 2, 2, 128, 64, "bhsd", "bshd", {2, 1, 128, 128}}, false},
      {{"odd-full-mask-causal", 1, 2, 77, 64, "bshd", "bshd", {1, 2, 77, 77}, true}, false},
      {{"vit-padding-mask", 2, 2, 197, 64, "bs3hd", "bshd", {2, 1, 1, 197}}, false},
      {{"d128-causal", 1, 2, 100, 128, "bs3hd", "bshd", {}, true}, false},
      {{"sq50-sk136", 2, 2, 50, 64, "bhsd", "bshd", {2, 1, 1, 136}, false, 136}, false},
      {{"sq130-sk80-causal", 1, 3, 130, 64, "bshd", "bhsd", {}, true, 80}, false},
      {{"key-broadcast-mask", 2, 2, 64, 64, "bhsd", "bhsd", {2, 1, 64, 1}}, false},
  };
  for (const auto& [c, must_run] : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      if (!must_run && dt == DataType::kBF16) continue;  // one type is enough where cuDNN may decline
      SCOPED_TRACE(describe(c, dt, kTactic));
      std::vector<Tensor> inputs;
      const auto g = attention_graph(c, dt, kTactic, &inputs, 13);
      const std::vector<Tensor> cpu = run_graph(*g, Backend::kCPU, inputs, nullptr);
      const auto t0 = std::chrono::steady_clock::now();
      std::string err;
      const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      ASSERT_EQ(cpu.size(), 1u);
      ASSERT_EQ(got.size(), 1u);
      const bool ran = err.find(kFallbackText) == std::string::npos;
      if (must_run) {
        EXPECT_TRUE(ran) << "cuDNN did not run: " << err;
      }
      std::printf("DNN_SDPA %-78s %s (engine load + run %.0f ms)\n", describe(c, dt, kTactic).c_str(),
                  ran ? "cuDNN" : "fallback (own kernel)", ms);
      expect_tensors_close(cpu[0], got[0], atol_of(dt), rtol_of(dt), "vs the reference");
    }
}

// A recorded cudnn_sdpa runs whatever KILN_DNN_SDPA says (the engine chose it); one that cannot be built (float32:
// cuDNN's fused attention is FP16/BF16) warns and runs our kernel.
TEST(GpuDnnSdpa, RecordedTacticRunsWithTheSwitchOffAndFallsBackWhereItCannot) {
  KILN_REQUIRE_GPU();
  ScopedEnv off("KILN_DNN_SDPA", "0");
  const AttnCase c{"bert-packed", 2, 3, 128, 64, "bs3hd", "bshd", {2, 1, 1, 128}};
  for (DataType dt : {DataType::kHALF, DataType::kFLOAT}) {
    SCOPED_TRACE(describe(c, dt, kTactic));
    std::vector<Tensor> inputs;
    const auto g = attention_graph(c, dt, kTactic, &inputs, 29);
    const std::vector<Tensor> cpu = run_graph(*g, Backend::kCPU, inputs, nullptr);
    std::string err;
    const std::vector<Tensor> got = run_capturing(*g, inputs, &err);
    ASSERT_EQ(got.size(), 1u);
    const bool fell_back = err.find(kFallbackText) != std::string::npos;
    EXPECT_EQ(fell_back, dt == DataType::kFLOAT) << err;
    expect_tensors_close(cpu[0], got[0], dt == DataType::kFLOAT ? 2e-3 : 3e-2, 2e-2, "vs the reference");
  }
}

// A level-5 build (every candidate timed) of one FusedAttention case: the recorded tactic and how many candidates
// the tuner timed for it (-1: no tactic line).
std::pair<std::string, int> tune(const AttnCase& c, std::unique_ptr<Engine>* engine_out) {
  TunedBuild b = tuned_build("FusedAttention", "attn", 5, [&](ir::Graph& g) {
    std::vector<Tensor> unused;
    fill_attention_graph(g, c, DataType::kHALF, "", &unused, 0);
  });
  if (engine_out) *engine_out = std::move(b.engine);
  return {b.tactic, b.timed};
}

// Our kernel's candidates for a case (what attention_tactics offers at this GPU's SM count).
int own_tactics(const AttnCase& c) {
  cudaDeviceProp prop{};
  EXPECT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  cuda::AttentionShape s;
  s.B = c.B, s.H = c.H, s.Sq = c.S, s.Sk = c.keys(), s.D = s.Dv = c.D;
  s.half_or_bf16 = true;
  s.aligned = true;
  return static_cast<int>(cuda::attention_tactics(s, prop.multiProcessorCount).size());
}

// The tuner times cuDNN next to our block sizes (one candidate more than ours) and records one; the tuned engine
// matches the reference. With KILN_DNN_SDPA=0 only ours are timed and one of them is recorded.
TEST(GpuDnnSdpa, TunerOffersItUnlessSwitchedOff) {
  KILN_REQUIRE_GPU();
  const AttnCase cases[] = {{"vit", 2, 3, 197, 64, "bs3hd", "bshd", {}},
                            {"bert", 4, 12, 128, 64, "bs3hd", "bshd", {4, 1, 1, 128}}};
  for (const AttnCase& c : cases) {
    SCOPED_TRACE(c.name);
    const int own = own_tactics(c);
    ASSERT_GT(own, 1);
    std::unique_ptr<Engine> engine;
    const auto [tactic, timed] = tune(c, &engine);
    ASSERT_NE(engine, nullptr);
    std::printf("DNN_SDPA tuner %s: recorded '%s', %d candidates timed (%d of ours)\n", c.name, tactic.c_str(), timed,
                own);
    EXPECT_EQ(timed, own + 1);
    EXPECT_TRUE(tactic == kTactic || cuda::attention_tactic_warps(tactic) != 0) << tactic;
    std::vector<Tensor> inputs;
    const auto g = attention_graph(c, DataType::kHALF, "", &inputs, 0);
    std::vector<std::pair<std::string, Tensor>> named;
    for (size_t i = 0; i < inputs.size(); ++i) named.emplace_back(g->inputs()[i]->name, inputs[i]);
    std::string err;
    ::testing::internal::CaptureStderr();
    const auto got = test::infer(*engine, named);
    err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.find(kFallbackText), std::string::npos) << err;
    const auto want = run_graph(*g, Backend::kCPU, inputs, nullptr);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    expect_tensors_close(want[0], got[0], 3e-2, 2e-2, "tuned FusedAttention");

    ScopedEnv off("KILN_DNN_SDPA", "0");
    const auto [off_tactic, off_timed] = tune(c, nullptr);
    EXPECT_EQ(off_timed, own);
    EXPECT_NE(cuda::attention_tactic_warps(off_tactic), 0) << off_tactic;
  }
}

// Not a pass/fail check beyond agreement: our kernel's untuned default against cudnn_sdpa at bert_base b64
// (padding mask), vit_b_16 b64 (197 tokens) and gpt2 b32 (causal), FP16, packed projections in, [B,S,H,D] out.
TEST(GpuDnnSdpa, Times) {
  KILN_REQUIRE_GPU();
  const AttnCase cases[] = {
      {"bert_base b64", 64, 12, 128, 64, "bs3hd", "bshd", {64, 1, 1, 128}},
      {"vit_b_16 b64", 64, 12, 197, 64, "bs3hd", "bshd", {}},
      {"gpt2 b32", 32, 12, 128, 64, "bs3hd", "bshd", {}, true},
  };
  for (const AttnCase& c : cases) {
    Tensor first;
    double first_us = 0;
    for (const char* tactic : {"", kTactic}) {
      std::vector<Tensor> inputs;
      const auto g = attention_graph(c, DataType::kHALF, tactic, &inputs, 3);
      ::testing::internal::CaptureStderr();
      const Timed t = time_on_gpu(*g, inputs, 50);
      const std::string err = ::testing::internal::GetCapturedStderr();
      const bool fell_back = err.find(kFallbackText) != std::string::npos;
      EXPECT_FALSE(fell_back) << err;
      std::printf("DNN_SDPA_TIME %-14s %-12s %8.1f us%s\n", c.name, *tactic ? tactic : "own default", t.us,
                  *tactic && first_us > 0 ? ("  (" + std::to_string(first_us / t.us).substr(0, 4) + "x)").c_str()
                                          : "");
      if (!*tactic) {
        first = t.y;
        first_us = t.us;
      } else if (first.defined() && t.y.defined()) {
        ASSERT_EQ(first.shape(), t.y.shape());
        EXPECT_EQ(half_mismatches(t.y, first), 0) << c.name << ": cudnn_sdpa vs our kernel";
      }
    }
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
