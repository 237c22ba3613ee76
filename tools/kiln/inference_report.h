// What the kiln CLI prints and exports: engine I/O, the performance summary, output tensors, timings.
#pragma once

#include <string>

#include "inference.h"
#include "kiln/runtime.h"
#include "kiln/status.h"

namespace kiln::cli {

void print_engine_io(const Engine& engine, size_t engine_bytes);

struct LatencyStats {
  double min = 0, max = 0, mean = 0, median = 0, p90 = 0, p95 = 0, p99 = 0;
};
LatencyStats latency_stats(std::vector<double> latencies_ms);

// trtexec's "=== Performance summary ===" block, with the lines that have no meaning on the CPU marked n/a.
void print_performance_summary(const Timings& timings, Backend backend);

// trtexec's --dumpOutput layout: a "name: (dims)" header, then one line per row of the last dimension.
void dump_tensors(const NamedTensors& tensors);

// trtexec's --exportOutput layout: [{"name": ..., "dimensions": "AxB", "values": [...]}]. Non-finite values are
// written as NaN / Infinity, which Python's json module reads (strict JSON has no spelling for them).
Status export_output(const std::string& path, const NamedTensors& tensors);

// One object per timed run: startComputeMs, endComputeMs, computeMs, latencyMs (trtexec's names for the
// fields that exist on the CPU backend).
Status export_times(const std::string& path, const Timings& timings);

}  // namespace kiln::cli
