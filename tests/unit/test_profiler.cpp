// Profiler hook: ExecutionContext::set_profiler reports every layer once per successful run, in execution order.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/runtime.h"

using namespace kiln;

namespace {

class QuietLog : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

class Recorder : public IProfiler {
 public:
  void report_layer_time(const char* layer_name, float ms) noexcept override { calls.emplace_back(layer_name, ms); }
  std::vector<std::pair<std::string, float>> calls;
};

// x[2] -> Relu "first" -> Neg "second" -> y
std::unique_ptr<ExecutionContext> make_context(QuietLog& log, std::unique_ptr<Engine>* engine) {
  Builder builder(log);
  auto net = builder.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {2});
  ITensor* r = net->add_op("Relu", {x}, {}, 1, "first")[0];
  ITensor* y = net->add_op("Neg", {r}, {}, 1, "second")[0];
  EXPECT_TRUE(net->mark_output(y).ok());
  auto blob = builder.build_serialized_network(*net, *builder.create_builder_config());
  EXPECT_TRUE(blob.ok()) << blob.status().message();
  auto e = Runtime(log).deserialize_engine(blob->data(), blob->size());
  EXPECT_TRUE(e.ok());
  *engine = std::move(e.value());
  return (*engine)->create_execution_context();
}

TEST(Profiler, ReportsEachLayerPerRun) {
  QuietLog log;
  std::unique_ptr<Engine> engine;
  auto ctx = make_context(log, &engine);
  Recorder rec;
  ctx->set_profiler(&rec);
  EXPECT_EQ(ctx->profiler(), &rec);
  float x[2] = {-1, 2}, y[2] = {0, 0};
  ASSERT_TRUE(ctx->set_tensor_address("x", x).ok());
  ASSERT_TRUE(ctx->set_tensor_address(engine->get_tensor_name(1), y).ok());
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_FLOAT_EQ(y[1], -2.f);
  ASSERT_EQ(rec.calls.size(), 2u);
  EXPECT_EQ(rec.calls[0].first, "first");
  EXPECT_EQ(rec.calls[1].first, "second");
  for (auto& [name, ms] : rec.calls) EXPECT_GE(ms, 0.f);

  auto out = ctx->infer({{"x", HostTensor{DataType::kFLOAT, {2}, std::vector<uint8_t>(8, 0)}}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(rec.calls.size(), 4u);

  ctx->set_profiler(nullptr);
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_EQ(rec.calls.size(), 4u);
}

TEST(Profiler, FailedRunReportsNothing) {
  QuietLog log;
  std::unique_ptr<Engine> engine;
  auto ctx = make_context(log, &engine);
  Recorder rec;
  ctx->set_profiler(&rec);
  EXPECT_FALSE(ctx->execute().ok());  // no bound addresses
  EXPECT_TRUE(rec.calls.empty());
}

}  // namespace
