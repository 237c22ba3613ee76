// The timing cache: the tactic the auto-tuner chose for each layer signature on one GPU and library set, kept in a
// JSON file the user can reuse and merge (TensorRT's --timingCacheFile), so that rebuilds skip timing and give
// the same engine.
#pragma once

#include <string>

#include "kiln/status.h"
#include "runtime/device_backend.h"

namespace kiln::builder {

// A device's cache key prefix: GPU name, compute capability and the library versions tactics depend on.
std::string device_key(const runtime::DeviceInfo& info);

// Whether the tuner times candidates as CUDA-graph replays (KILN_TACTIC_TIMING=graph, the default while unset) or
// as launches on a stream ("stream"); any other value is an error naming both.
Result<bool> graph_timing_requested();
// KILN_TACTIC_WEIGHTS: "cold" (TuneOptions::cold_weights) or "hot" (the default: weights stay in L2 between the
// timed launches).
Result<bool> cold_weight_timing_requested();

class TimingCache {
 public:
  // Entries for this device prefix, plus every other device's (kept so that a shared file loses nothing).
  explicit TimingCache(std::string device) : device_(std::move(device)) {}
  // Merges a cache file into this cache; a missing file is an empty cache. Entries already here win.
  Status load(const std::string& path);
  Status save(const std::string& path) const;
  // This device's entries, keys without the device prefix (what DeviceContext::tune reads and fills).
  runtime::TimingEntries device_entries() const;
  void update(const runtime::TimingEntries& entries);
  size_t size() const { return all_.size(); }

 private:
  std::string device_;
  runtime::TimingEntries all_;  // full key "device|signature"
};

}  // namespace kiln::builder
