// Unit tests for the timing cache file: round trip, merging across devices, and errors on foreign files.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "builder/timing_cache.h"

using namespace kiln;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kiln_tc_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(TimingCache, SavesAndLoadsEntriesPerDevice) {
  runtime::DeviceInfo h100;
  h100.name = "NVIDIA H100";
  h100.cc_major = 9;
  h100.cudnn = "9.14.0";
  const std::string path = temp_path("roundtrip.json");
  builder::TimingCache a(builder::device_key(h100));
  a.update({{"Conv(float16[1,64,56,56])", {"cudnn_algo_1", 0.125}}, {"MatMul(x)", {"lt_heuristic_0", 0.5}}});
  ASSERT_TRUE(a.save(path).ok());

  builder::TimingCache b(builder::device_key(h100));
  ASSERT_TRUE(b.load(path).ok());
  auto e = b.device_entries();
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e["Conv(float16[1,64,56,56])"].first, "cudnn_algo_1");
  EXPECT_DOUBLE_EQ(e["MatMul(x)"].second, 0.5);

  // Another GPU sees none of them, but saving its cache keeps them (one file can serve several GPUs).
  runtime::DeviceInfo h200 = h100;
  h200.name = "NVIDIA H200";
  builder::TimingCache c(builder::device_key(h200));
  ASSERT_TRUE(c.load(path).ok());
  EXPECT_TRUE(c.device_entries().empty());
  c.update({{"Conv(float16[1,64,56,56])", {"cudnn_algo_6", 0.1}}});
  ASSERT_TRUE(c.save(path).ok());
  builder::TimingCache d(builder::device_key(h100));
  ASSERT_TRUE(d.load(path).ok());
  EXPECT_EQ(d.size(), 3u);
  EXPECT_EQ(d.device_entries()["Conv(float16[1,64,56,56])"].first, "cudnn_algo_1");
  // A build with the CUTLASS tactics on the same GPU has its own entries: a cache written without them would
  // otherwise keep its layers from timing them.
  runtime::DeviceInfo with_cutlass = h100;
  with_cutlass.cutlass = "4.2.0";
  EXPECT_NE(builder::device_key(with_cutlass), builder::device_key(h100));
  EXPECT_NE(builder::device_key(with_cutlass).find(" cutlass 4.2.0"), std::string::npos);
  builder::TimingCache f(builder::device_key(with_cutlass));
  ASSERT_TRUE(f.load(path).ok());
  EXPECT_TRUE(f.device_entries().empty());
  std::remove(path.c_str());
}

TEST(TimingCache, MissingFileIsEmptyAndForeignFilesAreErrors) {
  builder::TimingCache a("dev");
  EXPECT_TRUE(a.load(temp_path("does_not_exist.json")).ok());
  EXPECT_EQ(a.size(), 0u);

  const std::string path = temp_path("foreign.json");
  std::ofstream(path) << "{\"something\": 1}";
  Status st = a.load(path);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("is not a Kiln timing cache"), std::string::npos) << st.message();

  std::ofstream(path, std::ios::trunc) << "{\"format\": \"kiln-timing-cache\", \"version\": 99}";
  st = a.load(path);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("has version 99"), std::string::npos) << st.message();
  std::remove(path.c_str());
}

}  // namespace

// KILN_TACTIC_TIMING: unset or "graph" times as CUDA-graph replays, "stream" on the stream, anything else is an
// error naming the accepted values (a typo must not silently keep the default).
TEST(TacticTiming, SwitchValues) {
  const char* old = std::getenv("KILN_TACTIC_TIMING");
  const std::string saved = old ? old : "";
  unsetenv("KILN_TACTIC_TIMING");
  auto r = builder::graph_timing_requested();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  setenv("KILN_TACTIC_TIMING", "stream", 1);
  r = builder::graph_timing_requested();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  setenv("KILN_TACTIC_TIMING", "graph", 1);
  r = builder::graph_timing_requested();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  setenv("KILN_TACTIC_TIMING", "graphs", 1);
  r = builder::graph_timing_requested();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'graphs'; it takes 'graph' or 'stream'"), std::string::npos)
      << r.status().message();
  if (old)
    setenv("KILN_TACTIC_TIMING", saved.c_str(), 1);
  else
    unsetenv("KILN_TACTIC_TIMING");
}
