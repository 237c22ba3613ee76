// Layout regions (layout_nhwc) and the builder's layout choice by measurement (builder/layout_choice.h): which
// convolutions form a region, that a region named NCHW keeps its convolutions and computes the same, and how
// choose_layouts decides, caches and falls back, with the build and the timer replaced by test doubles (the GPU
// tests time real engines).
#include <gtest/gtest.h>

#include <map>

#include "builder/layout_choice.h"
#include "cnn_test_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

ir::Value* conv3x3(ir::Graph& g, ir::Value* x, int64_t cin, int64_t cout, uint32_t seed) {
  Attributes a;
  a.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  float s = 1.f / std::sqrt(static_cast<float>(cin * 9));
  return op1(g, "Conv",
             {x, g.add_constant("w", random_f32({cout, cin, 3, 3}, seed, -s, s)),
              g.add_constant("b", random_f32({cout}, seed + 1, -0.1f, 0.1f))},
             a);
}

// Two regions: conv-relu, then a channel softmax (no NHWC form: the first region ends there), then conv-relu-conv.
std::unique_ptr<ir::Graph> two_region_graph() {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = graph_input(*g, "x", {1, 8, 6, 6});
  ir::Value* a = op1(*g, "Relu", {conv3x3(*g, x, 8, 16, 1)});
  Attributes sm;
  sm.set("axis", int64_t{1});
  ir::Value* s = op1(*g, "Softmax", {a}, sm);
  ir::Value* b = op1(*g, "Relu", {conv3x3(*g, s, 16, 16, 5)});
  g->outputs().push_back(conv3x3(*g, b, 16, 8, 9));
  return g;
}

// Lowered to FP16 as the CUDA pipeline does, then layout_nhwc with these regions kept NCHW.
std::unique_ptr<ir::Graph> lowered(const ir::Graph& src, const std::set<std::string>& nchw,
                                   bool nhwc_groupnorm = false) {
  auto g = src.clone();
  passes::PassOptions o;
  o.nhwc_groupnorm = nhwc_groupnorm;
  o.backend = Backend::kCUDA;
  o.reduced_precision = DataType::kHALF;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  o.nchw_layout_regions = nchw;
  passes::PassList l;
  l.push_back(passes::make_fuse_conv_epilogue());
  l.push_back(passes::make_precision_lowering());
  l.push_back(passes::make_dead_code_elimination());
  l.push_back(passes::make_layout_nhwc());
  Status st = run_passes(*g, std::move(l), o);
  EXPECT_TRUE(st.ok()) << st.message();
  return g;
}

int nhwc_convs(const ir::Graph& g) {
  int n = 0;
  for (auto& node : g.nodes())
    n += node->op_type == "FusedConv" && node->attrs.get_string("layout", "NCHW").value() == "NHWC";
  return n;
}

TEST(LayoutRegions, SeparatedByAnNchwOnlyOpAndNamedAfterTheirFirstConvolution) {
  auto src = two_region_graph();
  auto g = lowered(*src, {});
  if (HasFailure()) return;
  EXPECT_EQ(nhwc_convs(*g), 3);
  std::vector<std::string> regions = builder::layout_regions(*g);
  ASSERT_EQ(regions.size(), 2u) << ir::print(*g);
  // Each region's key is one of its convolutions' names, the first one in the graph's order.
  std::vector<std::string> convs;
  for (auto& n : g->nodes())
    if (n->op_type == "FusedConv") convs.push_back(n->name);
  ASSERT_EQ(convs.size(), 3u);
  EXPECT_EQ(regions[0], convs[0]);
  EXPECT_EQ(regions[1], convs[1]);
  // Every layout Transpose borders a region and says which.
  int transposes = 0;
  for (auto& n : g->nodes())
    if (n->op_type == "Transpose") {
      ++transposes;
      EXPECT_TRUE(n->attrs.has(ops::kLayoutRegionAttr)) << n->name;
    }
  EXPECT_EQ(transposes, 4);  // into and out of each region
}

TEST(LayoutRegions, RegionsNamedNchwKeepTheirConvolutionsAndComputeTheSame) {
  auto src = two_region_graph();
  auto all_nhwc = lowered(*src, {});
  if (HasFailure()) return;
  std::vector<std::string> regions = builder::layout_regions(*all_nhwc);
  ASSERT_EQ(regions.size(), 2u);
  const std::vector<Tensor> in = {random_f32({1, 8, 6, 6}, 40)};
  auto reference = run_reference(*lowered(*src, {passes::kAllLayoutRegions}), in);

  // The second region NCHW: its two convolutions stay, the first region is as before.
  auto second = lowered(*src, {regions[1]});
  EXPECT_EQ(nhwc_convs(*second), 1);
  EXPECT_EQ(count_ops(*second, "Transpose"), 2);
  EXPECT_EQ(builder::layout_regions(*second), std::vector<std::string>{regions[0]});
  auto out = run_reference(*second, in);
  ASSERT_EQ(out.size(), reference.size());
  expect_close(out[0], reference[0], 2e-3, 2e-3);

  // Every region NCHW: no NHWC convolution, no layout Transpose.
  auto none = lowered(*src, {passes::kAllLayoutRegions});
  EXPECT_EQ(nhwc_convs(*none), 0);
  EXPECT_EQ(count_ops(*none, "Transpose"), 0);
  EXPECT_TRUE(builder::layout_regions(*none).empty());
  // And the all-NHWC graph computes the same as the all-NCHW one.
  expect_close(run_reference(*all_nhwc, in)[0], reference[0], 2e-3, 2e-3);
  // A region name that is not in the graph changes nothing.
  EXPECT_EQ(nhwc_convs(*lowered(*src, {"no such region"})), 3);
}

struct RecordingLogger : ILogger {
  std::vector<std::pair<Severity, std::string>> lines;
  void log(Severity s, const char* m) noexcept override { lines.emplace_back(s, m); }
  bool has(Severity s, const std::string& part) const {
    for (auto& [sev, l] : lines)
      if (sev == s && l.find(part) != std::string::npos) return true;
    return false;
  }
};

// Test doubles: each variant's "engine" is its NCHW set written out; times come from a table by that text.
struct FakeBuilder {
  const ir::Graph* src;
  std::map<std::string, double> ms;  // by "R1,R2" (sorted NCHW regions), "" for all NHWC
  std::set<std::string> fail;        // variants whose build fails
  int builds = 0, timings = 0;

  static std::string key(const std::set<std::string>& s) {
    std::string k;
    for (auto& r : s) k += (k.empty() ? "" : ",") + r;
    return k;
  }
  builder::BuildLayoutVariant build() {
    return [this](const std::set<std::string>& nchw) -> Result<builder::LayoutVariant> {
      ++builds;
      if (fail.count(key(nchw))) return internal_error("no kernel for this variant");
      std::string k = key(nchw);
      return builder::LayoutVariant{lowered(*src, nchw), std::vector<uint8_t>(k.begin(), k.end())};
    };
  }
  builder::TimeEngine time() {
    return [this](const std::vector<uint8_t>& e) -> Result<double> {
      ++timings;
      auto it = ms.find(std::string(e.begin(), e.end()));
      if (it == ms.end()) return unsupported("cannot time this engine");
      return it->second;
    };
  }
};

builder::LayoutVariant first_variant(const ir::Graph& src) { return {lowered(src, {}), {}}; }

TEST(ChooseLayouts, KeepsARegionNchwOnlyWhenTheWholeEngineIsFasterByTheMargin) {
  auto src = two_region_graph();
  auto regions = builder::layout_regions(*lowered(*src, {}));
  ASSERT_EQ(regions.size(), 2u);
  const std::string r1 = regions[0], r2 = regions[1];
  FakeBuilder fb{src.get()};
  // NCHW for the first region saves 1% (inside the 2% margin: stays NHWC); for the second 10%.
  fb.ms = {{"", 1.0}, {FakeBuilder::key({r1}), 0.99}, {FakeBuilder::key({r2}), 0.9}};
  RecordingLogger log;
  builder::BuildProgress progress(nullptr);
  runtime::TimingEntries cache;
  auto chosen = builder::choose_layouts(first_variant(*src), "fp", fb.build(), fb.time(), cache, log, progress);
  ASSERT_TRUE(chosen.ok()) << chosen.status().message();
  EXPECT_EQ(std::string(chosen->engine.begin(), chosen->engine.end()), FakeBuilder::key({r2}));
  EXPECT_EQ(nhwc_convs(*chosen->graph), 1);
  EXPECT_EQ(fb.builds, 2);
  EXPECT_EQ(fb.timings, 3);
  ASSERT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.at("layout|fp|" + r1).first, "NHWC");
  EXPECT_EQ(cache.at("layout|fp|" + r2).first, "NCHW");
  EXPECT_NEAR(cache.at("layout|fp|" + r2).second, 0.9, 1e-9);
  EXPECT_TRUE(log.has(ILogger::Severity::kINFO, "layout region '" + r2 + "': 1.0000 ms per run NHWC, 0.9000 ms NCHW: NCHW"))
      << (log.lines.empty() ? "" : log.lines.back().second);

  // With the cache: the same choice, one build (the chosen variant), nothing timed.
  FakeBuilder again{src.get()};
  RecordingLogger log2;
  auto cached = builder::choose_layouts(first_variant(*src), "fp", again.build(), again.time(), cache, log2, progress);
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(cached->engine, chosen->engine);
  EXPECT_EQ(again.builds, 1);
  EXPECT_EQ(again.timings, 0);
  EXPECT_TRUE(log2.has(ILogger::Severity::kINFO, "2 regions from the timing cache, 1 of them NCHW"));
  // Another fingerprint (another network, precision or shape) is not answered by those entries.
  FakeBuilder other{src.get()};
  other.ms = fb.ms;
  auto fresh = builder::choose_layouts(first_variant(*src), "other", other.build(), other.time(), cache, log2, progress);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(other.timings, 3);
}

TEST(ChooseLayouts, ChoicesAccumulateRegionByRegion) {
  auto src = two_region_graph();
  auto regions = builder::layout_regions(*lowered(*src, {}));
  ASSERT_EQ(regions.size(), 2u);
  FakeBuilder fb{src.get()};
  // Each region alone saves 5%; both together 12%: the second trial keeps the first choice.
  fb.ms = {{"", 1.0}, {FakeBuilder::key({regions[0]}), 0.95}, {FakeBuilder::key({regions[0], regions[1]}), 0.88}};
  RecordingLogger log;
  builder::BuildProgress progress(nullptr);
  runtime::TimingEntries cache;
  auto chosen = builder::choose_layouts(first_variant(*src), "fp", fb.build(), fb.time(), cache, log, progress);
  ASSERT_TRUE(chosen.ok()) << chosen.status().message();
  EXPECT_EQ(nhwc_convs(*chosen->graph), 0);
  EXPECT_EQ(count_ops(*chosen->graph, "Transpose"), 0);
}

TEST(ChooseLayouts, FailedVariantsAndUntimableEnginesKeepNhwcAndSaySo) {
  auto src = two_region_graph();
  auto regions = builder::layout_regions(*lowered(*src, {}));
  ASSERT_EQ(regions.size(), 2u);
  builder::BuildProgress progress(nullptr);
  {
    FakeBuilder fb{src.get()};
    fb.ms = {{"", 1.0}, {FakeBuilder::key({regions[1]}), 0.5}};
    fb.fail = {FakeBuilder::key({regions[1]})};
    RecordingLogger log;
    runtime::TimingEntries cache;
    auto chosen = builder::choose_layouts(first_variant(*src), "fp", fb.build(), fb.time(), cache, log, progress);
    ASSERT_TRUE(chosen.ok()) << chosen.status().message();
    EXPECT_EQ(nhwc_convs(*chosen->graph), 3);
    EXPECT_TRUE(log.has(ILogger::Severity::kWARNING,
                        "layout region '" + regions[1] + "' stays NHWC: its NCHW variant failed: no kernel"));
    // The first region's variant could not be timed (no entry in the table): NHWC, warned, not cached.
    EXPECT_TRUE(log.has(ILogger::Severity::kWARNING, "layout region '" + regions[0] + "' stays NHWC"));
    EXPECT_TRUE(cache.empty());
  }
  {
    FakeBuilder fb{src.get()};  // no times at all: the engine cannot be timed whole
    RecordingLogger log;
    runtime::TimingEntries cache;
    auto chosen = builder::choose_layouts(first_variant(*src), "fp", fb.build(), fb.time(), cache, log, progress);
    ASSERT_TRUE(chosen.ok());
    EXPECT_EQ(nhwc_convs(*chosen->graph), 3);
    EXPECT_EQ(fb.builds, 0);
    EXPECT_TRUE(log.has(ILogger::Severity::kWARNING, "layout regions stay NHWC untimed: cannot time this engine"));
  }
}

// GroupNormalization between NHWC convolutions (PassOptions::nhwc_groupnorm): the kiln NHWC form keeps the two
// convolutions in one region, no Transpose between them, per-group (opset 18) and per-channel (opset 21)
// parameters alike; the results are the NCHW graph's. Without the option GroupNorm bounds the regions.
TEST(LayoutRegions, GroupNormJoinsRegionsWhenItRunsNhwc) {
  for (int opset : {18, 21}) {
    SCOPED_TRACE("GroupNormalization opset " + std::to_string(opset));
    ir::Graph src;
    ir::Value* x = graph_input(src, "x", {2, 8, 6, 6});
    Attributes a;
    a.set("num_groups", int64_t{4});
    a.set("epsilon", 1e-5f);
    const int64_t params = opset == 18 ? 4 : 16;
    ir::Node* gn = src.add_node("GroupNormalization", "gn",
                                {conv3x3(src, x, 8, 16, 1), src.add_constant("gs", random_f32({params}, 2, 0.5f, 1.5f)),
                                 src.add_constant("gb", random_f32({params}, 3))},
                                {"gn_out"}, a, opset);
    ir::Value* h = op1(src, "Relu", {gn->outputs[0]});
    src.outputs().push_back(conv3x3(src, h, 16, 8, 5));
    const std::vector<Tensor> in = {random_f32({2, 8, 6, 6}, 41)};
    auto reference = run_reference(*lowered(src, {passes::kAllLayoutRegions}), in);

    auto bounded = lowered(src, {});
    EXPECT_EQ(builder::layout_regions(*bounded).size(), 2u);
    EXPECT_EQ(count_ops(*bounded, "Transpose"), 4);  // into and out of each region

    auto joined = lowered(src, {}, true);
    EXPECT_EQ(builder::layout_regions(*joined).size(), 1u) << ir::print(*joined);
    EXPECT_EQ(count_ops(*joined, "Transpose"), 2);  // into and out of the one region
    int nhwc_gn = 0;
    for (auto& n : joined->nodes())
      nhwc_gn += n->op_type == "GroupNormalization" && n->domain == "kiln" &&
                 n->attrs.get_string("layout", "").value() == "NHWC";
    EXPECT_EQ(nhwc_gn, 1);
    auto out = run_reference(*joined, in);
    ASSERT_EQ(out.size(), 1u);
    expect_close(out[0], reference[0], 3e-3, 3e-3);
  }
}

}  // namespace
