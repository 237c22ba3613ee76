// GPU tests of FusedConv's cuDNN graph tactic (src/backends/cuda/dnn_conv.h, cudnn_conv_graph_<r>): the tactic
// forced through "kiln.tactic" at resnet50's 3x3 shapes (small batch) and odd ones, FP16 and BF16, bias + ReLU,
// a residual, other activations, against the CPU reference; every rank; a recorded tactic that cannot be built
// falling back to the legacy path with a warning; the tuner recording a tactic that matches; KILN_DNN_CONV=0
// withdrawing the tactics; and, printed (DNN_CONV_TIME lines), the four resnet50 3x3 convolutions at batch 128:
// the legacy path (its fastest algorithm) against each graph plan.
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <tuple>

#include "../unit/engine_test_util.h"
#include "backends/cuda/dnn_conv.h"
#include "backends/cuda/dnn_matmul.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "ops/layout_util.h"
#include "passes/pass.h"

namespace kiln::gpu_testing {
namespace {

using cuda::DnnConvGraph;
using cuda::DnnConvSpec;

// Plans restored from stored JSON in this process (the CUDA backend's counter; the library is loaded at run time).
int64_t conv_plans_restored() { return backend_counter("cudnn_conv.plans_restored"); }
using cuda::kDnnPlanAttr;
using cuda::kDnnPlanKeyAttr;

struct CvCase {
  const char* name;
  int64_t n, h, w, c, m;
  int64_t k = 3, stride = 1, pad = 1;
  bool bias = true, res = false;
  ops::Activation act = ops::Activation::kRelu;
};

std::string describe(const CvCase& c, DataType dt, const std::string& tactic) {
  return std::string(c.name) + " " + dtype_name(dt) + " n" + std::to_string(c.n) + " " + std::to_string(c.h) + "x" +
         std::to_string(c.w) + " " + std::to_string(c.c) + "->" + std::to_string(c.m) + " k" + std::to_string(c.k) +
         " s" + std::to_string(c.stride) + " p" + std::to_string(c.pad) + " " + ops::activation_name(c.act) +
         (c.bias ? " +bias" : "") + (c.res ? " +res" : "") + " tactic '" + tactic + "'";
}

// One NHWC FusedConv node in g (W [M, k, k, C] and B constants, X and Z graph inputs), as the layout pass leaves
// resnet's convolutions; returns the inputs (X, then Z).
std::vector<Tensor> conv_graph(const CvCase& c, DataType dt, const std::string& tactic, ir::Graph& g) {
  ir::Value* xv = g.add_value("x");
  xv->dtype = dt;
  xv->shape = ops::shape_from_dims({c.n, c.h, c.w, c.c});
  xv->rank_known = true;
  g.inputs().push_back(xv);
  Attributes a;
  a.set("pads", std::vector<int64_t>{c.pad, c.pad, c.pad, c.pad});
  a.set("strides", std::vector<int64_t>{c.stride, c.stride});
  a.set("group", int64_t{1});
  a.set("layout", std::string("NHWC"));
  a.set("activation", std::string(ops::activation_name(c.act)));
  if (!tactic.empty()) a.set("kiln.tactic", tactic);
  // Weights scaled so that the pre-activation values are O(1).
  const double s = 2.0 / std::sqrt(static_cast<double>(c.c * c.k * c.k));
  std::vector<ir::Value*> in = {xv, g.add_constant("w", random_tensor(dt, {c.m, c.k, c.k, c.c}, 2, -s, s))};
  if (c.bias) in.push_back(g.add_constant("b", random_tensor(dt, {c.m}, 3, -0.5, 0.5)));
  ir::Node* n = g.add_node("FusedConv", "conv", in, {"y"}, a, 1, "kiln");
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  Status inferred = passes::make_shape_inference()->apply(g, ctx);
  EXPECT_TRUE(inferred.ok()) << inferred.message();
  std::vector<Tensor> inputs = {random_tensor(dt, {c.n, c.h, c.w, c.c}, 1, -1.0, 1.0)};
  if (c.res) {
    ir::Value* z = add_residual_input(g, n);
    inputs.push_back(random_tensor(dt, ops::static_dims(z->shape), 4, -1.0, 1.0));
  }
  g.outputs().push_back(n->outputs[0]);
  return inputs;
}

double atol_of(DataType dt) { return dt == DataType::kHALF ? 2e-2 : 1e-1; }
double rtol_of(DataType dt) { return dt == DataType::kHALF ? 1e-2 : 4e-2; }

constexpr const char* kFallbackText = "falls back to cuDNN's legacy convolution";

// Forces `tactic` on case c and checks it against the CPU reference; returns whether the graph ran (no fallback).
bool forced_case(const CvCase& c, DataType dt, const std::string& tactic) {
  SCOPED_TRACE(describe(c, dt, tactic));
  ir::Graph g;
  const std::vector<Tensor> inputs = conv_graph(c, dt, tactic, g);
  const std::vector<Tensor> cpu = run_graph(g, Backend::kCPU, inputs, nullptr);
  std::string err;
  const std::vector<Tensor> got = run_capturing(g, inputs, &err);
  EXPECT_EQ(cpu.size(), 1u);
  EXPECT_EQ(got.size(), 1u);
  const bool ran = err.find(kFallbackText) == std::string::npos;
  std::printf("DNN_CONV %-72s %s\n", describe(c, dt, tactic).c_str(), ran ? "graph" : "fallback (legacy)");
  if (cpu.size() == 1 && got.size() == 1)
    expect_tensors_close(cpu[0], got[0], atol_of(dt), rtol_of(dt), "vs the reference");
  return ran;
}

// resnet50's 3x3 convolutions at batch 2 (layer1-4, the stride-2 one that opens layer2, a residual form): the
// graph's first plan must build and match the reference; the odd shapes and other epilogues print whether cuDNN
// took them and must match whichever ran.
TEST(GpuDnnConv, ForcedTacticMatchesTheReference) {
  KILN_REQUIRE_GPU();
  struct Forced {
    CvCase c;
    bool must_run;
  };
  const Forced cases[] = {
      {{"layer1-3x3", 2, 56, 56, 64, 64}, true},
      {{"layer2-3x3", 2, 28, 28, 128, 128}, true},
      {{"layer2-3x3-s2", 2, 56, 56, 128, 128, 3, 2}, true},
      {{"layer3-3x3", 2, 14, 14, 256, 256}, true},
      {{"layer4-3x3", 2, 7, 7, 512, 512}, true},
      {{"layer2-3x3-res", 2, 28, 28, 128, 128, 3, 1, 1, true, true}, true},
      {{"layer1-3x3-none", 2, 56, 56, 64, 64, 3, 1, 1, true, false, ops::Activation::kNone}, false},
      {{"res-no-bias", 2, 28, 28, 64, 64, 3, 1, 1, false, true}, false},
      {{"plain", 2, 28, 28, 64, 64, 3, 1, 1, false, false, ops::Activation::kNone}, false},
      {{"silu", 2, 14, 14, 96, 96, 3, 1, 1, true, false, ops::Activation::kSilu}, false},
      {{"gelu-res", 2, 14, 14, 64, 128, 3, 1, 1, true, true, ops::Activation::kGeluErf}, false},
      {{"odd-24", 2, 15, 17, 24, 24}, false},
      {{"odd-24-res-s2", 3, 15, 17, 24, 24, 3, 2, 1, true, true}, false},
      {{"1x1", 2, 28, 28, 64, 256, 1, 1, 0}, false},
      {{"5x5-s2", 2, 19, 23, 32, 48, 5, 2, 2}, false},
      // Image stems after the NHWC pipeline's channel padding to 8 (the own stem kernels' default shapes).
      {{"resnet-stem", 2, 64, 64, 8, 64, 7, 2, 3}, false},
      {{"effnet-stem", 2, 64, 64, 8, 32, 3, 2, 1, true, false, ops::Activation::kSilu}, false},
  };
  for (const auto& [c, must_run] : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      const bool ran = forced_case(c, dt, "cudnn_conv_graph_0");
      if (must_run) {
        EXPECT_TRUE(ran) << describe(c, dt, "cudnn_conv_graph_0") << ": cuDNN's graph did not run";
      }
    }
}

// Every rank the tactic list can carry: whichever runs (or falls back, where cuDNN has fewer plans) matches.
TEST(GpuDnnConv, EveryRankMatchesTheReference) {
  KILN_REQUIRE_GPU();
  const CvCase cases[] = {
      {"layer1-3x3", 2, 56, 56, 64, 64},
      {"layer2-3x3-res", 2, 28, 28, 128, 128, 3, 1, 1, true, true},
      {"odd-24", 2, 15, 17, 24, 24},
  };
  for (const CvCase& c : cases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16})
      for (int r = 0; r < 3; ++r) forced_case(c, dt, "cudnn_conv_graph_" + std::to_string(r));
}

// A recorded tactic no cuDNN offers (rank 99), and one on a convolution the graph declines (FP32): the layer warns
// and runs the legacy path, correctly.
TEST(GpuDnnConv, UnbuildableRecordedTacticFallsBack) {
  KILN_REQUIRE_GPU();
  const CvCase c{"layer2-3x3", 2, 28, 28, 128, 128};
  EXPECT_FALSE(forced_case(c, DataType::kHALF, "cudnn_conv_graph_99"));
  const CvCase fp32{"layer2-3x3", 2, 28, 28, 64, 64};
  EXPECT_FALSE(forced_case(fp32, DataType::kFLOAT, "cudnn_conv_graph_0")) << "FP32 is declined";
}

// The tuner (level 3) times the legacy algorithms and the graph plans and records one; the tuned engine matches.
TEST(GpuDnnConv, TunerRecordsATacticThatMatches) {
  KILN_REQUIRE_GPU();
  for (const CvCase& c :
       {CvCase{"layer1-3x3", 8, 56, 56, 64, 64}, CvCase{"layer3-3x3-res", 8, 14, 14, 256, 256, 3, 1, 1, true, true}}) {
    SCOPED_TRACE(describe(c, DataType::kHALF, ""));
    const std::string t = tuned_tactic_of(
        "FusedConv", [&](ir::Graph& g) { return conv_graph(c, DataType::kHALF, "", g); }, 2e-2, "tuned FusedConv");
    std::printf("DNN_CONV tuner %s recorded '%s'\n", c.name, t.c_str());
    EXPECT_TRUE(t.rfind("cudnn_fwd_algo", 0) == 0 || t.rfind("cudnn_conv_graph_", 0) == 0) << t;
  }
}

// How many tactics a level-5 build (every candidate timed) timed for c's layer, and the one it recorded.
std::pair<int, std::string> timed_candidates(const CvCase& c) {
  TunedBuild b = tuned_build("FusedConv", "conv", 5, [&](ir::Graph& g) { conv_graph(c, DataType::kHALF, "", g); });
  return {b.timed, b.tactic};
}

// KILN_DNN_CONV=0 withdraws the graph tactics: the tuner times fewer candidates (the legacy ones alone) and can
// only record a legacy algorithm; on, the graph plans are among the timed candidates.
TEST(GpuDnnConv, SwitchOffWithdrawsTheTactics) {
  KILN_REQUIRE_GPU();
  const CvCase c{"layer2-3x3", 4, 28, 28, 128, 128};
  std::pair<int, std::string> off, on;
  {
    ScopedEnv s("KILN_DNN_CONV", "0");
    off = timed_candidates(c);
  }
  {
    ScopedEnv s("KILN_DNN_CONV", nullptr);
    on = timed_candidates(c);
  }
  std::printf("DNN_CONV switch: off %d timed, recorded '%s'; on %d timed, recorded '%s'\n", off.first,
              off.second.c_str(), on.first, on.second.c_str());
  EXPECT_GT(off.first, 0);
  EXPECT_EQ(off.second.rfind("cudnn_fwd_algo", 0), 0u) << off.second;
  EXPECT_GT(on.first, off.first) << "the graph plans were not offered with the switch on";
}

// Times case c at FP16 on its untuned default (`baseline` names it in the print) and then on each graph plan,
// printing DNN_CONV_TIME lines with TFLOPS; every plan that builds must agree with the default's output.
void time_graph_plans(const CvCase& c, const char* baseline) {
  SCOPED_TRACE(c.name);
  const int64_t p = (c.h + 2 * c.pad - c.k) / c.stride + 1, q = (c.w + 2 * c.pad - c.k) / c.stride + 1;
  const double flops = 2.0 * c.n * p * q * c.m * c.c * c.k * c.k;
  ir::Graph dg;
  const std::vector<Tensor> inputs = conv_graph(c, DataType::kHALF, "", dg);
  const Timed base = time_on_gpu(dg, inputs, 20);
  std::printf("DNN_CONV_TIME %s b%lld %lldx%lld %lld->%lld k%lld s%lld %s %8.1f us %6.1f TFLOPS\n", c.name,
              static_cast<long long>(c.n), static_cast<long long>(c.h), static_cast<long long>(c.w),
              static_cast<long long>(c.c), static_cast<long long>(c.m), static_cast<long long>(c.k),
              static_cast<long long>(c.stride), baseline, base.us, flops / base.us * 1e-6);
  for (int r = 0; r < 3; ++r) {
    const std::string tactic = "cudnn_conv_graph_" + std::to_string(r);
    ir::Graph g;
    conv_graph(c, DataType::kHALF, tactic, g);
    ::testing::internal::CaptureStderr();
    const Timed t = time_on_gpu(g, inputs, 20);
    const std::string err = ::testing::internal::GetCapturedStderr();
    if (err.find(kFallbackText) != std::string::npos) {
      std::printf("DNN_CONV_TIME %s %s: not built (fewer plans)\n", c.name, tactic.c_str());
      continue;
    }
    std::printf("DNN_CONV_TIME %s b%lld %s %8.1f us %6.1f TFLOPS (%.2fx the default)\n", c.name,
                static_cast<long long>(c.n), tactic.c_str(), t.us, flops / t.us * 1e-6, base.us / t.us);
    ASSERT_EQ(t.y.shape(), base.y.shape());
    EXPECT_EQ(half_mismatches(t.y, base.y), 0) << tactic << " disagrees with " << baseline;
  }
}

// Not a pass/fail check beyond agreement: resnet50's four 3x3 convolutions (FP16, batch 128, pad 1, + bias + ReLU)
// on the legacy path (the fastest of its algorithms, timed on the first run, then its epilogue) against each graph
// plan.
TEST(GpuDnnConv, Resnet50Batch128Times) {
  KILN_REQUIRE_GPU();
  for (const CvCase& c : {CvCase{"layer1", 128, 56, 56, 64, 64}, CvCase{"layer2", 128, 28, 28, 128, 128},
                          CvCase{"layer3", 128, 14, 14, 256, 256}, CvCase{"layer4", 128, 7, 7, 512, 512}})
    time_graph_plans(c, "legacy (best algo + epilogue)");
}

// Not a pass/fail check beyond agreement: the image stems at batch 128 (FP16, 224x224, channels padded to 8) on
// the untuned default (the own tensor-core stem kernel) against each graph plan. Measured on the H200: resnet50's
// 335.7 us against 620-784, efficientnet's 157.2 against 157.7-481: why stems are not offered the graph. Disabled
// (device time); run with --gtest_also_run_disabled_tests.
TEST(GpuDnnConv, DISABLED_StemsBatch128Times) {
  KILN_REQUIRE_GPU();
  for (const CvCase& c : {CvCase{"resnet50-stem", 128, 224, 224, 8, 64, 7, 2, 3},
                          CvCase{"effnet-stem", 128, 224, 224, 8, 32, 3, 2, 1, true, false, ops::Activation::kSilu}})
    time_graph_plans(c, "default (own stem kernel)");
}

// A level-3 build of case c (FP16) whose tuner records `cudnn_conv_graph_0` for the convolution, through a timing
// cache rewritten to name that plan (so the stored plan does not depend on which tactic won the timing).
Result<std::vector<uint8_t>> build_with_graph_choice(const CvCase& c) {
  auto build = [&](const std::string& cache) {
    QuietLogger quiet;
    Builder builder(quiet);
    auto net = builder.create_network();
    conv_graph(c, DataType::kHALF, "", net->graph());
    auto config = builder.create_builder_config();
    config->set_backend(Backend::kCUDA);
    config->set_builder_optimization_level(3);
    config->set_timing_cache_file(cache);
    return builder.build_serialized_network(*net, *config);
  };
  return build_with_cached_tactic(std::string("conv_") + c.name,
                                  "\"(cudnn_fwd_algo[0-9]+_(tc|fma)|cudnn_conv_graph_[0-9]+)\"", "cudnn_conv_graph_0",
                                  build);
}

std::string conv_string_attr(const Engine& e, const char* name) { return string_attr(first_node(e, "FusedConv"), name); }

// The chosen graph plan travels in the engine: the build stores its JSON and key with the node, and each load
// (a context, with a handle of its own) restores it, no compile, and matches the reference.
TEST(GpuDnnConv, SavedEngineRestoresItsPlan) {
  KILN_REQUIRE_GPU();
  const CvCase c{"layer1-3x3-n8", 8, 56, 56, 64, 64};
  auto blob = build_with_graph_choice(c);
  ASSERT_TRUE(blob.ok()) << blob.status().message();
  auto engine = test::load_engine(*blob);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(conv_string_attr(*engine, "kiln.tactic"), "cudnn_conv_graph_0");
  const std::string json = conv_string_attr(*engine, kDnnPlanAttr), key = conv_string_attr(*engine, kDnnPlanKeyAttr);
  std::printf("DNN_CONV_PLANS stored plan: %zu bytes of JSON, key '%s', engine %zu bytes\n", json.size(), key.c_str(),
              blob->size());
  ir::Graph ref;
  const std::vector<Tensor> inputs = conv_graph(c, DataType::kHALF, "", ref);
  const std::vector<Tensor> want = run_graph(ref, Backend::kCPU, inputs, nullptr);
  ASSERT_EQ(want.size(), 1u);
  if (json.empty()) {
    // cuDNN serializes the plans of runtime-compiled engines; a precompiled engine's plan is finalized at load
    // (cheap). Then nothing is stored, no key either, and the engine still runs right: say so and stop.
    EXPECT_TRUE(key.empty()) << "a key without a plan: " << key;
    const auto got = test::infer(*engine, {{"x", inputs[0]}});
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(want[0], got[0], atol_of(DataType::kHALF), rtol_of(DataType::kHALF), "unstored plan");
    GTEST_SKIP() << "cuDNN did not serialize this plan (not a runtime-compiled engine): nothing to restore";
  }
  EXPECT_EQ(key.rfind("cudnn_conv_graph_0 | ", 0), 0u) << key;
  for (int load = 0; load < 2; ++load) {
    const int64_t before = conv_plans_restored();
    const auto t0 = std::chrono::steady_clock::now();
    std::string err;
    const auto got = infer_capturing(*engine, {{"x", inputs[0]}}, &err);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const int64_t restored = conv_plans_restored() - before;
    std::printf("DNN_CONV_PLANS load %d: first inference %.1f ms, %lld restores\n", load, ms,
                static_cast<long long>(restored));
    EXPECT_EQ(restored, 1) << "the load did not restore the stored plan";
    EXPECT_EQ(err.find(kFallbackText), std::string::npos) << err;
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(want[0], got[0], atol_of(DataType::kHALF), rtol_of(DataType::kHALF), "restored plan");
  }
}

// Lets the library's INFO lines through to stderr for one scope. default_logger() is a StderrLogger
// (src/common/status.cpp), the one instance libkiln_cuda logs to (libkiln_runtime is shared).
struct InfoToStderr {
  StderrLogger& logger = static_cast<StderrLogger&>(default_logger());
  InfoToStderr() { logger.set_min_severity(ILogger::Severity::kINFO); }
  ~InfoToStderr() { logger.set_min_severity(ILogger::Severity::kWARNING); }
};

// A stored plan that cannot be used (text cuDNN refuses under the layer's own key: garbage or the real plan cut in
// half; or the real plan under a key of another cuDNN and GPU) is a build, never an error: the forced graph tactic
// still runs, restores nothing, says so in one INFO line (so the stored plan did reach the layer), and matches the
// reference.
TEST(GpuDnnConv, UnusableStoredPlanIsBuiltInstead) {
  KILN_REQUIRE_GPU();
  const CvCase c{"layer2-3x3-stored", 2, 28, 28, 128, 128};
  // The layer's own stored plan and key, from a build that chose the graph.
  auto blob = build_with_graph_choice(c);
  ASSERT_TRUE(blob.ok()) << blob.status().message();
  auto engine = test::load_engine(*blob);
  ASSERT_NE(engine, nullptr);
  const std::string own_json = conv_string_attr(*engine, kDnnPlanAttr);
  const std::string own_key = conv_string_attr(*engine, kDnnPlanKeyAttr);
  if (own_json.empty())  // as in SavedEngineRestoresItsPlan: a precompiled engine's plan is not stored
    GTEST_SKIP() << "cuDNN did not serialize this plan (not a runtime-compiled engine): no stored plan to spoil";
  ASSERT_EQ(own_key.rfind("cudnn_conv_graph_0 | ", 0), 0u) << own_key;
  const std::string foreign = own_key.substr(0, own_key.find("| cudnn ")) + "| cudnn 1 | another GPU";
  for (const auto& [what, json, key] :
       {std::tuple<const char*, std::string, std::string>{"garbage", "{not a plan", own_key},
        {"truncated", own_json.substr(0, own_json.size() / 2), own_key},
        {"other cuDNN and GPU", own_json, foreign}}) {
    SCOPED_TRACE(what);
    ir::Graph g;
    const std::vector<Tensor> inputs = conv_graph(c, DataType::kHALF, "cudnn_conv_graph_0", g);
    ir::Node* n = nullptr;
    for (const auto& node : g.nodes())
      if (node->op_type == "FusedConv") n = node.get();
    ASSERT_NE(n, nullptr);
    n->attrs.set(kDnnPlanAttr, Attribute(std::string(json)));
    n->attrs.set(kDnnPlanKeyAttr, Attribute(std::string(key)));
    const int64_t before = conv_plans_restored();
    std::string err;
    std::vector<Tensor> got;
    {
      InfoToStderr info;
      got = run_capturing(g, inputs, &err);
    }
    EXPECT_NE(err.find("stored cuDNN plan not used"), std::string::npos) << err;
    const std::vector<Tensor> want = run_graph(g, Backend::kCPU, inputs, nullptr);
    std::printf("DNN_CONV_PLANS stored plan %-20s: %lld restores, %s\n", what,
                static_cast<long long>(conv_plans_restored() - before),
                err.find(kFallbackText) == std::string::npos ? "graph ran" : "fell back to legacy");
    EXPECT_EQ(conv_plans_restored() - before, 0);
    EXPECT_EQ(err.find(kFallbackText), std::string::npos) << "the graph plan is built instead: " << err;
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(want.size(), 1u);
    expect_tensors_close(want[0], got[0], atol_of(DataType::kHALF), rtol_of(DataType::kHALF), "built instead");
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
