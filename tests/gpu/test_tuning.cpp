// GPU tests of the builder's tactic auto-tuner: tactics recorded per convolution, the timing cache written and
// reused (a rebuild from the cache times nothing and writes the same engine), level 0 timing nothing, and the
// tuned engine still matching the CPU reference; and of the layout choice (builder/layout_choice.h): layout
// regions timed NHWC and NCHW, the decisions cached, KILN_LAYOUT's forced layouts.
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../unit/cnn_onnx_model.h"
#include "backends/cuda/dnn_common.h"
#include "gpu_timing_util.h"

namespace kiln::gpu_testing {
namespace {

// Collects the builder's INFO lines (the tuner reports "tactics: N layers tuned (T tactics timed, C ...").
struct Capture : ILogger {
  std::string text;
  void log(Severity s, const char* msg) noexcept override {
    if (s <= Severity::kINFO) text += std::string(msg) + "\n";
  }
};

struct Built {
  std::vector<uint8_t> blob;
  std::string log;
  Status status;  // the build's: the builder does not log why it failed
  int tuned_convs = 0, convs = 0;
};

// fails: the build is meant to fail (its status is then returned, not a test failure).
Built build(const onnx::ModelProto& m, Backend backend, int level, const std::string& cache, bool fp16 = true,
            bool fails = false) {
  Built r;
  Capture log;
  std::string bytes;
  m.SerializeToString(&bytes);
  Builder builder(log);
  auto network = builder.create_network();
  OnnxParser parser(*network, log);
  Status st = parser.parse(bytes.data(), bytes.size());
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return r;
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  if (fp16) config->set_flag(BuilderFlag::kFP16);
  config->set_builder_optimization_level(level);
  config->set_timing_cache_file(cache);
  auto blob = builder.build_serialized_network(*network, *config);
  r.log = log.text;  // the build's messages only
  if (!blob.ok()) r.status = blob.status();
  if (fails) {
    EXPECT_FALSE(blob.ok()) << "the build was meant to fail";
    return r;
  }
  auto engine = test::load_engine(blob, log);
  if (!engine) return r;
  r.blob = *blob;
  for (const auto& n : engine->plan().nodes) {
    // Convolutions, including the 1x1 ones that run as GEMMs on NHWC data (FusedMatMul over a rank-4 input).
    const bool gemm_conv = n.op_type == "FusedMatMul" && !n.inputs.empty() && n.inputs[0] >= 0 &&
                           engine->plan().values[n.inputs[0]].shape.size() == 4;
    // A squeeze-excitation's two 1x1 convolutions as one FusedMlp (fuse_small_mlp) count as the two.
    const int n_convs = n.op_type == "FusedMlp" ? 2 : n.op_type == "FusedConv" || n.op_type == "Conv" || gemm_conv;
    if (n_convs == 0) continue;
    r.convs += n_convs;
    if (const Attribute* t = n.attrs.find("kiln.tactic"); t && t->type() == AttrType::kSTRING && !t->s().empty())
      r.tuned_convs += n_convs;
  }
  return r;
}

// The engine built from `m` computes what the CPU reference build of `m` computes (FP16 tolerance, relative L2).
void expect_matches_cpu(const onnx::ModelProto& m, const std::vector<uint8_t>& gpu_blob) {
  Tensor x = random_tensor(DataType::kFLOAT, {4, 3, 32, 32}, 11);
  Built cpu = build(m, Backend::kCPU, 3, "", false);
  auto cpu_engine = test::load_engine(cpu.blob), gpu_engine = test::load_engine(gpu_blob);
  ASSERT_TRUE(cpu_engine && gpu_engine);
  auto want = test::infer(*cpu_engine, {{"x", x}});
  auto got = test::infer(*gpu_engine, {{"x", x}});
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(want[0].shape(), got[0].shape());
  EXPECT_LT(test::relative_l2(want[0], got[0]), 2e-2) << "tuned FP16 engine vs CPU reference, relative L2";
}

// Where two engines of one network differ, or "" where they agree: metadata, values (name, type, shape, constant
// bytes), then nodes (op, name, inputs, outputs, attributes; a string attribute's difference shown with its length
// and the text around its first differing byte). `ignored`: an attribute whose text may differ.
bool same_tensor(const Tensor& x, const Tensor& y) {
  return x.defined() == y.defined() && (!x.defined() || (x.dtype() == y.dtype() && x.shape() == y.shape() &&
                                                         std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0));
}

std::string engine_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                              const std::string& ignored = "") {
  auto ea = test::load_engine(a), eb = test::load_engine(b);
  if (!ea || !eb) return "an engine does not load";
  const runtime::EnginePlan &pa = ea->plan(), &pb = eb->plan();
  if (pa.metadata != pb.metadata) return "metadata";
  if (pa.values.size() != pb.values.size()) return "value count";
  for (size_t i = 0; i < pa.values.size(); ++i) {
    const auto &x = pa.values[i], &y = pb.values[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape || !same_tensor(x.constant, y.constant))
      return "value " + x.name + " / " + y.name;
  }
  const auto &na = pa.nodes, &nb = pb.nodes;
  if (na.size() != nb.size()) return std::to_string(na.size()) + " vs " + std::to_string(nb.size()) + " nodes";
  for (size_t i = 0; i < na.size(); ++i) {
    if (na[i].op_type != nb[i].op_type || na[i].name != nb[i].name || na[i].inputs != nb[i].inputs ||
        na[i].outputs != nb[i].outputs)
      return "node " + std::to_string(i) + ": " + na[i].op_type + " '" + na[i].name + "' vs " + nb[i].op_type + " '" +
             nb[i].name + "'";
    if (na[i].attrs.map().size() != nb[i].attrs.map().size()) return "node '" + na[i].name + "': attribute count";
    for (const auto& [key, attr] : na[i].attrs.map()) {
      const Attribute* other = nb[i].attrs.find(key);
      if (!other || other->type() != attr.type()) return "node '" + na[i].name + "': attribute " + key;
      if (attr.type() == AttrType::kTENSOR) {
        if (!same_tensor(attr.t(), other->t())) return "node '" + na[i].name + "': tensor attribute " + key;
        continue;
      }
      const bool same = [&] {
        switch (attr.type()) {
          case AttrType::kINT: return attr.i() == other->i();
          case AttrType::kFLOAT: {
            const float x = attr.f(), y = other->f();
            return std::memcmp(&x, &y, sizeof(float)) == 0;
          }
          case AttrType::kSTRING: return attr.s() == other->s();
          case AttrType::kINTS: return attr.ints() == other->ints();
          case AttrType::kFLOATS: return attr.floats() == other->floats();
          case AttrType::kSTRINGS: return attr.strings() == other->strings();
          default: return true;  // subgraphs: none in these engines
        }
      }();
      if (same || key == ignored) continue;
      if (attr.type() != AttrType::kSTRING) return "node '" + na[i].name + "': attribute " + key;
      const std::string &x = attr.s(), &y = other->s();
      size_t at = 0;
      while (at < x.size() && at < y.size() && x[at] == y[at]) ++at;
      const size_t from = at > 80 ? at - 80 : 0;
      return "node '" + na[i].name + "' attribute " + key + ": " + std::to_string(x.size()) + " vs " +
             std::to_string(y.size()) + " bytes, first difference at " + std::to_string(at) + "\n  first:  ..." +
             x.substr(from, 240) + "\n  second: ..." + y.substr(from, 240);
    }
  }
  return "";
}

// The number before " tactics timed" in the tuner's summary line, -1 if absent.
int tactics_timed(const std::string& log) {
  const size_t at = log.find(" tactics timed");
  if (at == std::string::npos) return -1;
  size_t b = at;
  while (b > 0 && std::isdigit(static_cast<unsigned char>(log[b - 1]))) --b;
  return b == at ? -1 : std::atoi(log.c_str() + b);
}

TEST(GpuTuning, TacticsTimedCachedAndReused) {
  KILN_REQUIRE_GPU();
  int convs = 0;
  onnx::ModelProto m = test::small_cnn(&convs);
  const std::string cache =
      (std::filesystem::temp_directory_path() / ("kiln_tuning_" + std::to_string(::getpid()) + ".json")).string();
  std::remove(cache.c_str());

  Built first = build(m, Backend::kCUDA, 3, cache);
  ASSERT_FALSE(first.blob.empty());
  EXPECT_EQ(first.convs, convs);
  EXPECT_EQ(first.tuned_convs, convs) << "every convolution records the tactic the tuner chose\n" << first.log;
  EXPECT_NE(first.log.find("tactics timed"), std::string::npos) << first.log;
  ASSERT_TRUE(std::filesystem::exists(cache));
  std::ifstream f(cache);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // A convolution's winner: a legacy cuDNN algorithm or one of the cuDNN graph plans (dnn_conv.h).
  EXPECT_TRUE(text.find("cudnn_fwd_algo") != std::string::npos || text.find("cudnn_conv_graph_") != std::string::npos)
      << text.substr(0, 400);
  EXPECT_NE(text.find("lt_heur"), std::string::npos) << text.substr(0, 400);

  // From the cache: nothing timed, every layer answered, the same engine bytes.
  Built again = build(m, Backend::kCUDA, 3, cache);
  EXPECT_NE(again.log.find("(0 tactics timed, "), std::string::npos) << again.log;
  EXPECT_EQ(again.log.find(" 0 layers from the timing cache"), std::string::npos) << again.log;
  // The same engine: the same layers, tactics, constants and attributes; only a cuDNN plan stored with a layer
  // (kDnnPlanAttr) may differ in its bytes: cuDNN's serialized conv graph plans carry what look like host
  // addresses of the building process (H200 run 17: a few 8-byte words 0x55../0x7f.. apart in equal-length texts).
  // Such a stored plan restores (GpuDnnConv.SavedEngineRestoresItsPlan).
  EXPECT_EQ(again.blob.size(), first.blob.size());
  EXPECT_EQ(engine_difference(first.blob, again.blob, cuda::kDnnPlanAttr), "")
      << "a rebuild with the timing cache must give the same engine";
  if (again.blob != first.blob)
    std::printf("cache rebuild: engine bytes differ only inside stored cuDNN plans (%s)\n",
                engine_difference(first.blob, again.blob).c_str());

  // Level 0: no timing, no tactics recorded (kernels take their heuristic first choice).
  Built quick = build(m, Backend::kCUDA, 0, "");
  EXPECT_EQ(quick.tuned_convs, 0);

  // The tuned engine computes what the CPU reference computes.
  expect_matches_cpu(m, first.blob);
  std::remove(cache.c_str());
}

// KILN_TACTIC_TIMING=graph: candidates are timed as CUDA-graph replays (what a graph-launched engine pays), every
// convolution still records a tactic, the capture works for (nearly) every candidate, and the engine is right.
TEST(GpuTuning, GraphTimingTimesCandidatesAsReplays) {
  KILN_REQUIRE_GPU();
  ScopedEnv env("KILN_TACTIC_TIMING", "graph");
  int convs = 0;
  onnx::ModelProto m = test::small_cnn(&convs);
  const int64_t fallbacks_before = backend_counter("tuner.graph_timing_fallbacks");
  Built b = build(m, Backend::kCUDA, 3, "");
  ASSERT_FALSE(b.blob.empty()) << b.log;
  EXPECT_NE(b.log.find("tactics are timed as CUDA-graph replays"), std::string::npos) << b.log;
  EXPECT_EQ(b.tuned_convs, convs) << b.log;
  const int timed = tactics_timed(b.log);
  const int64_t fallbacks = backend_counter("tuner.graph_timing_fallbacks") - fallbacks_before;
  std::printf("GRAPH_TIMING small_cnn: %d tactics timed, %lld timed on the stream (not capturable)\n", timed,
              static_cast<long long>(fallbacks));
  EXPECT_GT(timed, 0) << b.log;
  EXPECT_LT(fallbacks * 2, timed) << "most candidates must be capturable, else the switch times nothing new";
  expect_matches_cpu(m, b.blob);
}

// A value the switch does not know fails the build and names the accepted values.
TEST(GpuTuning, TacticTimingSwitchTypoIsAnError) {
  KILN_REQUIRE_GPU();
  ScopedEnv env("KILN_TACTIC_TIMING", "cuda-graph");
  int convs = 0;
  onnx::ModelProto m = test::small_cnn(&convs);
  Built b = build(m, Backend::kCUDA, 3, "", true, /*fails=*/true);
  EXPECT_TRUE(b.blob.empty());
  EXPECT_NE(b.status.message().find("KILN_TACTIC_TIMING is 'cuda-graph'; it takes 'graph' or 'stream'"),
            std::string::npos)
      << b.status.message();
}

// The cold-weight switch (KILN_TACTIC_WEIGHTS) takes cold or hot; anything else fails the build by name.
TEST(GpuTuning, WeightTimingSwitchTypoIsAnError) {
  KILN_REQUIRE_GPU();
  ScopedEnv env("KILN_TACTIC_WEIGHTS", "dram");
  int convs = 0;
  onnx::ModelProto m = test::small_cnn(&convs);
  Built b = build(m, Backend::kCUDA, 3, "", true, /*fails=*/true);
  EXPECT_TRUE(b.blob.empty());
  EXPECT_NE(b.status.message().find("KILN_TACTIC_WEIGHTS is 'dram'; it takes 'cold' or 'hot'"), std::string::npos)
      << b.status.message();
}

// Two layout regions with reformat layers: conv-relu, a channel softmax (no NHWC form), conv-relu-conv, a channel
// softmax. Input "x" [4, 3, 32, 32], output "y" [4, 16, 32, 32].
onnx::ModelProto two_region_cnn() {
  using namespace test;
  CnnBuilder b;
  add_graph_input(b.g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {4, 3, 32, 32}));
  auto softmax = [&](const std::string& x) {
    onnx::NodeProto* n;
    std::string y = b.node("Softmax", {x}, &n);
    set_attr_int(n, "axis", 1);
    return y;
  };
  std::string a = softmax(b.node("Relu", {b.conv("x", 3, 32, 3)}));
  std::string c = b.conv(b.node("Relu", {b.conv(a, 32, 32, 3)}), 32, 16, 3);
  add_onnx_node(b.g, "Identity", {softmax(c)}, {"y"});
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {4, 16, 32, 32}));
  return b.m;
}

int nhwc_convs(const std::vector<uint8_t>& blob) {
  auto engine = test::load_engine(blob);
  if (!engine) return -1;
  int n = 0;
  for (const auto& node : engine->plan().nodes)
    if (const Attribute* l = node.attrs.find("layout"); node.op_type == "FusedConv" && l && l->s() == "NHWC") ++n;
  return n;
}

int count(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// Each region is timed both ways at the default level (one line each), the engine stays right whichever layout
// won, and a rebuild with the timing cache makes the same choices without timing and writes the same engine.
TEST(GpuTuning, LayoutRegionsTimedBothWaysAndCached) {
  KILN_REQUIRE_GPU();
  onnx::ModelProto m = two_region_cnn();
  const std::string cache =
      (std::filesystem::temp_directory_path() / ("kiln_layout_" + std::to_string(::getpid()) + ".json")).string();
  std::remove(cache.c_str());
  Built first = build(m, Backend::kCUDA, 3, cache);
  ASSERT_FALSE(first.blob.empty()) << first.status.message();
  EXPECT_EQ(count(first.log, "layout region '"), 2) << first.log;
  for (size_t at = first.log.find("layout region '"); at != std::string::npos;
       at = first.log.find("layout region '", at + 1))
    std::printf("LAYOUT_CHOICE %s\n", first.log.substr(at, first.log.find('\n', at) - at).c_str());
  const int nhwc = nhwc_convs(first.blob);
  EXPECT_GE(nhwc, 0);
  EXPECT_LE(nhwc, 3);
  expect_matches_cpu(m, first.blob);
  std::ifstream f(cache);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(count(text, "layout|"), 2) << text.substr(0, 600);

  Built again = build(m, Backend::kCUDA, 3, cache);
  EXPECT_EQ(count(again.log, "layout region '"), 0) << again.log;
  EXPECT_NE(again.log.find("2 regions from the timing cache"), std::string::npos) << again.log;
  EXPECT_EQ(nhwc_convs(again.blob), nhwc);
  EXPECT_EQ(engine_difference(first.blob, again.blob, cuda::kDnnPlanAttr), "")
      << "a rebuild with the timing cache must give the same engine";
  // Below the default level the rule stands: every region NHWC, nothing timed.
  Built quick = build(m, Backend::kCUDA, 2, "");
  EXPECT_EQ(count(quick.log, "layout region '"), 0) << quick.log;
  EXPECT_EQ(nhwc_convs(quick.blob), 3);
  std::remove(cache.c_str());
}

// KILN_LAYOUT=nchw keeps every convolution NCHW and =nhwc applies the rule without timing; both engines are right.
// Any other value fails the build, naming the accepted ones.
TEST(GpuTuning, LayoutSwitchForcesALayout) {
  KILN_REQUIRE_GPU();
  onnx::ModelProto m = two_region_cnn();
  for (auto [layout, nhwc] : {std::pair<const char*, int>{"nchw", 0}, {"nhwc", 3}}) {
    SCOPED_TRACE(std::string("KILN_LAYOUT=") + layout);
    ScopedEnv env("KILN_LAYOUT", layout);
    Built b = build(m, Backend::kCUDA, 3, "");
    ASSERT_FALSE(b.blob.empty()) << b.status.message();
    EXPECT_EQ(nhwc_convs(b.blob), nhwc);
    EXPECT_EQ(count(b.log, "layout region '"), 0) << b.log;
    expect_matches_cpu(m, b.blob);
  }
  ScopedEnv env("KILN_LAYOUT", "channels_last");
  Built b = build(m, Backend::kCUDA, 3, "", true, /*fails=*/true);
  EXPECT_NE(b.status.message().find("KILN_LAYOUT must be timed, nhwc or nchw, got 'channels_last'"),
            std::string::npos)
      << b.status.message();
}

int count_layers(const std::vector<uint8_t>& blob, const std::string& op, const std::string& domain) {
  auto engine = test::load_engine(blob);
  if (!engine) return -1;
  int n = 0;
  for (const auto& node : engine->plan().nodes) n += node.op_type == op && node.domain == domain;
  return n;
}

// The GroupNorm export fuses into one GroupNormalization on the GPU; by default it runs channels-last (kiln
// GroupNormalization) and the two convolutions share one layout region (no Transpose between them); with
// KILN_NHWC_GROUPNORM=0 the GroupNorm stays NCHW between two regions. Both engines compute what the CPU reference
// computes.
TEST(GpuTuning, GroupNormExportFusesAndRunsChannelsLast) {
  KILN_REQUIRE_GPU();
  onnx::ModelProto m = test::groupnorm_cnn();
  {
    ScopedEnv nchw_gn("KILN_NHWC_GROUPNORM", "0");
    ScopedEnv layout("KILN_LAYOUT", "nhwc");  // the rule: both convolutions NHWC, GroupNorm between regions
    Built b = build(m, Backend::kCUDA, 3, "");
    ASSERT_FALSE(b.blob.empty()) << b.status.message();
    EXPECT_EQ(count_layers(b.blob, "GroupNormalization", ""), 1);
    EXPECT_EQ(count_layers(b.blob, "InstanceNormalization", ""), 0);
    EXPECT_EQ(count_layers(b.blob, "Transpose", ""), 2) << "out of the first region, and the output's";
    expect_matches_cpu(m, b.blob);
  }
  ScopedEnv nhwc_gn("KILN_NHWC_GROUPNORM", nullptr);  // the default
  ScopedEnv layout("KILN_LAYOUT", "nhwc");
  Built b = build(m, Backend::kCUDA, 3, "");
  ASSERT_FALSE(b.blob.empty()) << b.status.message();
  EXPECT_EQ(count_layers(b.blob, "GroupNormalization", "kiln"), 1);
  EXPECT_EQ(count_layers(b.blob, "Transpose", ""), 1) << "one region: only the output's Transpose back";
  expect_matches_cpu(m, b.blob);
}

}  // namespace
}  // namespace kiln::gpu_testing
