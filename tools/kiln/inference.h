// Running an engine from the CLI: input shapes and data, the first inference, warm-up and timed runs on one or
// more streams, the profiled run and the energy reading.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "energy.h"
#include "kiln/logger.h"
#include "kiln/runtime.h"
#include "kiln/status.h"
#include "layer_profiler.h"
#include "options.h"

namespace kiln::cli {

using NamedTensors = std::vector<std::pair<std::string, HostTensor>>;

// One timed inference in trtexec's trace terms, in ms from the start of the timed run. On the CPU backend the
// engine runs inside the enqueue call, so enqueue and compute are the same span and H2D/D2H are empty; on the
// CUDA backend the H2D/compute/D2H spans come from CUDA events, placed at the host time the run started.
struct RunTrace {
  double enq_start = 0, enq_end = 0, h2d_start = 0, h2d_end = 0, compute_start = 0, compute_end = 0, d2h_start = 0,
         d2h_end = 0;
  int stream = 0;
  double start() const { return enq_start < h2d_start ? enq_start : h2d_start; }
  double end() const { return enq_end > d2h_end ? enq_end : d2h_end; }
  double enqueue_ms() const { return enq_end - enq_start; }
  double h2d_ms() const { return h2d_end - h2d_start; }
  double compute_ms() const { return compute_end - compute_start; }
  double d2h_ms() const { return d2h_end - d2h_start; }
  // trtexec's Latency: H2D + compute + D2H of one query.
  double latency_ms() const { return h2d_ms() + compute_ms() + d2h_ms(); }
};

struct Timings {
  std::vector<RunTrace> runs;  // every stream's timed runs, by start time
  double walltime_s = 0;       // first timed start to last timed end
  int warm_up_runs = 0;
  int streams = 1;
  bool gpu = false;  // H2D, compute and D2H come from CUDA events
};

struct InferenceResult {
  NamedTensors inputs;
  NamedTensors outputs;  // from the first inference
  Timings timings;
  std::optional<LayerProfiler> profile;  // with --dumpProfile/--exportProfile: every stream's profiled runs
  std::optional<EnergyMeter::Reading> energy;
  std::string energy_note;  // why there is no energy reading
  // Host time from creating the execution contexts to the end of the first inference: what a service waits for
  // after loading an engine (activation memory, each layer's preparation: cuDNN plans built or restored).
  double first_inference_ms = 0;
};

// Resolves each input's run shape: --shapes, else the profile's opt shape, else the static shape.
Result<std::map<std::string, Dims>> run_shapes(const Engine& engine, const Options& options,
                                               const std::vector<std::string>& inputs);

// The inputs a run feeds: --loadInputs files, else seeded random data (the same on every run of one engine).
Result<NamedTensors> prepare_inputs(const Engine& engine, const Options& options);

// The first inference gives the outputs; warm-up and timed runs follow it.
Result<InferenceResult> run_inference(const Engine& engine, const Options& options, ILogger& logger);

}  // namespace kiln::cli
