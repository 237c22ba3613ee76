// Per-layer timing for --dumpProfile and --exportProfile: collects the times a context reports through
// kiln::IProfiler, run by run, and prints or exports them in trtexec's layouts.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "kiln/runtime.h"
#include "kiln/status.h"

namespace kiln::cli {

class LayerProfiler final : public IProfiler {
 public:
  void report_layer_time(const char* layer_name, float ms) noexcept override;
  // Closes one inference: the times reported since the previous call form one run of each layer.
  void end_run();
  // Adds another profiler's runs (one per stream) to this one.
  void merge(const LayerProfiler& other);
  int runs() const { return runs_; }

  struct Layer {
    std::string name;
    std::vector<double> ms;  // one entry per run (0 for runs in which the layer did not report)
  };
  const std::vector<Layer>& layers() const { return layers_; }

 private:
  Layer& layer(const std::string& name);
  std::vector<Layer> layers_;  // in the order the layers first reported, which is the engine's order
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<size_t, double> current_;  // this run's time per layer, until end_run()
  int runs_ = 0;
};

// Each profiled layer's average time per run and its share of the profiled total (the --exportProfile figures),
// by layer name: what --dumpLayerInfo/--exportLayerInfo add when the same run collected a profile.
struct LayerShare {
  double average_ms = 0;
  double percent = 0;
};
std::unordered_map<std::string, LayerShare> layer_shares(const LayerProfiler& profiler);

// trtexec's --dumpProfile table: per layer the total, average and median time and its share of the total.
void print_profile(const LayerProfiler& profiler);

// trtexec's --exportProfile layout: [{"count": runs}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}, ...]
Status export_profile(const std::string& path, const LayerProfiler& profiler);

}  // namespace kiln::cli
