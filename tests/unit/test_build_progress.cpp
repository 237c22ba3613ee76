// Build progress monitor: the phases, steps and cancellation the builder reports through IProgressMonitor.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kiln/builder.h"
#include "kiln/network.h"
#include "passes/pass_manager.h"

using namespace kiln;

namespace {

class QuietLog : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

// Records every call as one line, and checks nesting as it goes.
class RecordingMonitor : public IProgressMonitor {
 public:
  void phase_start(const char* phase, const char* parent, int32_t num_steps) noexcept override {
    const std::string expected_parent = open.empty() ? "" : open.back();
    EXPECT_EQ(parent ? std::string(parent) : std::string(), expected_parent) << "phase " << phase;
    open.push_back(phase);
    events.push_back("start " + std::string(phase) + " " + std::to_string(num_steps));
  }
  bool step_complete(const char* phase, int32_t step) noexcept override {
    EXPECT_FALSE(open.empty());
    if (!open.empty()) { EXPECT_EQ(open.back(), phase); }
    events.push_back("step " + std::string(phase) + " " + std::to_string(step));
    return ++steps_seen != cancel_at;
  }
  void phase_finish(const char* phase) noexcept override {
    EXPECT_FALSE(open.empty());
    if (!open.empty()) {
      EXPECT_EQ(open.back(), phase);
      open.pop_back();
    }
    events.push_back("finish " + std::string(phase));
  }
  std::vector<std::string> events, open;
  int steps_seen = 0, cancel_at = -1;  // cancel on this step (1-based count over all phases)
};

std::unique_ptr<NetworkDefinition> relu_network(Builder& b) {
  auto net = b.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {2, 3});
  auto y = net->add_op("Relu", {x});
  EXPECT_EQ(y.size(), 1u);
  EXPECT_TRUE(net->mark_output(y[0]).ok());
  return net;
}

}  // namespace

TEST(BuildProgress, ReportsBuildPhaseAndOneStepPerPass) {
  QuietLog log;
  Builder b(log);
  auto net = relu_network(b);
  auto config = b.create_builder_config();
  RecordingMonitor m;
  config->set_progress_monitor(&m);
  EXPECT_EQ(config->progress_monitor(), &m);
  auto engine = b.build_serialized_network(*net, *config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();

  const int n = static_cast<int>(passes::PassManager(passes::pipeline_for(Backend::kCPU)).pass_names().size());
  ASSERT_GT(n, 1);
  std::vector<std::string> want = {"start Building engine 2", "start Optimization passes " + std::to_string(n)};
  for (int i = 0; i < n; ++i) want.push_back("step Optimization passes " + std::to_string(i));
  want.insert(want.end(), {"finish Optimization passes", "step Building engine 0", "start Writing engine 0",
                           "finish Writing engine", "step Building engine 1", "finish Building engine"});
  EXPECT_EQ(m.events, want);
  EXPECT_TRUE(m.open.empty());
}

TEST(BuildProgress, MonitorCancelsTheBuildAndEveryPhaseIsFinished) {
  QuietLog log;
  Builder b(log);
  auto net = relu_network(b);
  auto config = b.create_builder_config();
  RecordingMonitor m;
  m.cancel_at = 2;  // the second pass
  config->set_progress_monitor(&m);
  auto engine = b.build_serialized_network(*net, *config);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("cancelled by its progress monitor"), std::string::npos)
      << engine.status().message();
  EXPECT_EQ(m.steps_seen, 2);  // no pass ran after the cancelling step reported
  EXPECT_TRUE(m.open.empty());
  ASSERT_GE(m.events.size(), 2u);
  EXPECT_EQ(m.events[m.events.size() - 2], "finish Optimization passes");
  EXPECT_EQ(m.events.back(), "finish Building engine");

  // The same config without the monitor builds: nothing of the cancelled build lingers.
  config->set_progress_monitor(nullptr);
  EXPECT_TRUE(b.build_serialized_network(*net, *config).ok());
}
