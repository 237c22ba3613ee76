// What the kiln CLI prints and exports: engine I/O, the performance summary, output tensors, timings.
#pragma once

#include <string>

#include "inference.h"
#include "kiln/logger.h"
#include "options.h"
#include "kiln/runtime.h"
#include "kiln/status.h"

namespace kiln::cli {

// Inputs show the bounds of optimization profile `profile` (--profile).
void print_engine_io(const Engine& engine, size_t engine_bytes, int profile);

struct LatencyStats {
  double min = 0, max = 0, mean = 0, median = 0;
  double cv_percent = 0;            // coefficient of variation: standard deviation / mean, in percent
  std::vector<double> percentiles;  // one per requested percentage
};
// trtexec's statistics: its median, and its percentile rule (the value below which the top (100 - p)% lie).
LatencyStats latency_stats(std::vector<double> values_ms, const std::vector<double>& percentages);

// trtexec's "=== Performance summary ===" block (Throughput; Latency, Enqueue Time, H2D Latency, GPU Compute
// Time, D2H Latency; Total Host Walltime; Total GPU Compute Time), the energy line, and trtexec's warnings
// (enqueue-bound, transfer-bound, unstable timing) through the logger. Lines with no meaning on the CPU say n/a.
// With --verbose also the averages over each --avgRuns window and what each metric means.
void print_performance_summary(const InferenceResult& result, Backend backend, const Options& options,
                               ILogger& logger);

// trtexec's --dumpOutput layout: a "name: (dims)" header, then one line per row of the last dimension.
void dump_tensors(const NamedTensors& tensors);

// trtexec's --exportOutput layout: [{"name": ..., "dimensions": "AxB", "values": [...]}]. Non-finite values are
// written as NaN / Infinity, which Python's json module reads (strict JSON has no spelling for them).
Status export_output(const std::string& path, const NamedTensors& tensors);

// trtexec's --exportTimes layout: one object per timed run with startEnqMs, endEnqMs, startH2dMs, endH2dMs,
// startComputeMs, endComputeMs, startD2hMs, endD2hMs, h2dMs, computeMs, d2hMs and latencyMs.
Status export_times(const std::string& path, const Timings& timings);

}  // namespace kiln::cli
