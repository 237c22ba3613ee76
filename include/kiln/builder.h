// Builder, BuilderConfig and OptimizationProfile: turn a NetworkDefinition into a serialized engine.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/logger.h"
#include "kiln/network.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln {

// min/opt/max shape of each dynamic network input.
class OptimizationProfile {
 public:
  struct Bounds {
    Dims min, opt, max;
  };
  // Fails when ranks differ or min <= opt <= max does not hold element-wise.
  Status set_shape(const std::string& input, const Dims& min, const Dims& opt, const Dims& max);
  const std::map<std::string, Bounds>& shapes() const { return shapes_; }
  bool has(const std::string& input) const { return shapes_.count(input) != 0; }

 private:
  std::map<std::string, Bounds> shapes_;
};

enum class BuilderFlag : uint32_t { kTF32 = 0, kFP16 = 1, kBF16 = 2, kINT8 = 3, kFP8 = 4 };

// Memory pools whose size a build may cap (TensorRT's MemoryPoolType; Kiln has only the workspace so far).
enum class MemoryPoolType : uint32_t { kWORKSPACE = 0 };

// Receives the progress of a build (TensorRT's IProgressMonitor). Phases nest: each names its parent (null
// for the top one) and says how many steps it has. The builder reports "Building engine" with its parts,
// "Optimization passes" with one step per pass, and the CUDA tactic tuner a phase with one step per layer it
// times. Calls come from the building thread, in order; a monitor must not call back into the builder.
class IProgressMonitor {
 public:
  virtual ~IProgressMonitor() = default;
  virtual void phase_start(const char* phase, const char* parent, int32_t num_steps) noexcept = 0;
  // Step `step` (0-based) of `phase` is done. Returning false cancels the build, which then fails.
  virtual bool step_complete(const char* phase, int32_t step) noexcept = 0;
  // Also called for phases a failure or a cancellation cut short.
  virtual void phase_finish(const char* phase) noexcept = 0;
};

class BuilderConfig {
 public:
  BuilderConfig() { set_flag(BuilderFlag::kTF32); }
  void set_flag(BuilderFlag f) { flags_ |= 1u << static_cast<uint32_t>(f); }
  void clear_flag(BuilderFlag f) { flags_ &= ~(1u << static_cast<uint32_t>(f)); }
  bool get_flag(BuilderFlag f) const { return flags_ & (1u << static_cast<uint32_t>(f)); }
  void add_optimization_profile(const OptimizationProfile& p) { profiles_.push_back(p); }
  const std::vector<OptimizationProfile>& profiles() const { return profiles_; }
  void set_backend(Backend b) { backend_ = b; }
  Backend backend() const { return backend_; }
  // TensorRT's per-layer precision controls: a layer named here runs in that type (float32, float16 or
  // bfloat16) when a kernel exists; precision constraints say what happens when none does: "none" and
  // "prefer" keep float32 with a warning, "obey" fails the build.
  void set_layer_precision(const std::string& layer, DataType dtype) { layer_precisions_[layer] = dtype; }
  const std::map<std::string, DataType>& layer_precisions() const { return layer_precisions_; }
  void set_precision_constraints(const std::string& c) { precision_constraints_ = c; }
  const std::string& precision_constraints() const { return precision_constraints_; }
  // Prints the graph after each named pass ("all" for every pass) through the logger at INFO.
  void set_dump_after(const std::string& pass) { dump_after_ = pass; }
  const std::string& dump_after() const { return dump_after_; }

  // Tuning controls with TensorRT's meaning, used by the CUDA builder's tactic auto-tuner: each layer whose kernel
  // has several implementations (cuDNN algorithms, cuBLASLt heuristics) is timed at the first profile's opt shapes
  // and the fastest is recorded in the engine.
  // Workspace cap in bytes; 0 = no limit beyond the device's memory.
  void set_memory_pool_limit(MemoryPoolType pool, uint64_t bytes) { pool_limits_[pool] = bytes; }
  uint64_t memory_pool_limit(MemoryPoolType pool) const {
    auto it = pool_limits_.find(pool);
    return it == pool_limits_.end() ? 0 : it->second;
  }
  // 0 (fastest build, fewest tactics) to 5 (most search); TensorRT's default is 3.
  void set_builder_optimization_level(int level) { optimization_level_ = level; }
  int builder_optimization_level() const { return optimization_level_; }
  // Timing runs averaged per tactic (TensorRT's default 8).
  void set_avg_timing_iterations(int n) { avg_timing_iterations_ = n; }
  int avg_timing_iterations() const { return avg_timing_iterations_; }
  // Most tactics timed per layer; -1 = the tuner's own heuristic.
  void set_max_num_tactics(int n) { max_num_tactics_ = n; }
  int max_num_tactics() const { return max_num_tactics_; }
  // File the timing cache is read from and written to; empty = no persistent cache.
  void set_timing_cache_file(const std::string& path) { timing_cache_file_ = path; }
  const std::string& timing_cache_file() const { return timing_cache_file_; }
  // Null (the default) reports nothing. The monitor must outlive the builds that use this config.
  void set_progress_monitor(IProgressMonitor* monitor) { progress_monitor_ = monitor; }
  IProgressMonitor* progress_monitor() const { return progress_monitor_; }

 private:
  uint32_t flags_ = 0;
  std::vector<OptimizationProfile> profiles_;
  Backend backend_ = Backend::kCPU;
  std::string dump_after_;
  std::map<std::string, DataType> layer_precisions_;
  std::string precision_constraints_ = "none";
  std::map<MemoryPoolType, uint64_t> pool_limits_;
  int optimization_level_ = 3;
  int avg_timing_iterations_ = 8;
  int max_num_tactics_ = -1;
  std::string timing_cache_file_;
  IProgressMonitor* progress_monitor_ = nullptr;
};

class Builder {
 public:
  explicit Builder(ILogger& logger = default_logger());
  std::unique_ptr<NetworkDefinition> create_network();
  std::unique_ptr<BuilderConfig> create_builder_config();
  // Runs the pass pipeline and writes the engine. Dynamic inputs without a profile are an error naming them.
  Result<std::vector<uint8_t>> build_serialized_network(NetworkDefinition& network, const BuilderConfig& config);

 private:
  ILogger& logger_;
};

}  // namespace kiln
