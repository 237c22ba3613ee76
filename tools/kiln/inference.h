// Running an engine from the CLI: input shapes and data, the first inference, warm-up and timed runs.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kiln/logger.h"
#include "kiln/runtime.h"
#include "kiln/status.h"
#include "options.h"

namespace kiln::cli {

using NamedTensors = std::vector<std::pair<std::string, HostTensor>>;

struct Timings {
  std::vector<double> start_ms;    // per timed run, from the start of the first timed run
  std::vector<double> latency_ms;  // host wall time of each run
  double walltime_s = 0;           // first timed start to last timed end
  // CUDA backend, per timed run, from CUDA events: input upload, engine, output download.
  std::vector<double> h2d_ms, gpu_ms, d2h_ms;
  int warm_up_runs = 0;
};

struct InferenceResult {
  NamedTensors inputs;
  NamedTensors outputs;  // from the first inference
  Timings timings;
};

// The first inference gives the outputs; warm-up and timed runs follow it.
Result<InferenceResult> run_inference(const Engine& engine, const Options& options, ILogger& logger);

}  // namespace kiln::cli
