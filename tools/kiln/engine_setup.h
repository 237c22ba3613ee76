// Choosing the backend, building an engine from ONNX (with its optimization profile) and loading engines.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/logger.h"
#include "kiln/runtime.h"
#include "kiln/status.h"
#include "options.h"

namespace kiln::cli {

struct DeviceDecision {
  Backend backend = Backend::kCPU;
  std::string reason;  // printed, so that a user on a GPU machine knows why the CPU runs
};

// Checks --device and the precision flags against what this build can honour.
Result<DeviceDecision> resolve_device(const Options& options);

// A tensor --markAll made an output, with the layer that computes it (in the network's topological order).
struct MarkedTensor {
  std::string tensor, layer, op_type;
  bool network_output = false;  // an output of the network as given, not one --markAll added
};

struct BuiltEngine {
  std::vector<uint8_t> bytes;
  std::vector<MarkedTensor> marked;  // with Options::mark_all: every tensor computed from the inputs
  double parse_s = 0;
  double build_s = 0;
  int num_layers = 0;
};

Result<BuiltEngine> build_engine(const Options& options, Backend backend, ILogger& logger);

Status write_file(const std::string& path, const std::vector<uint8_t>& bytes);

// --inputIOFormats/--outputIOFormats against the engine: Kiln engines take their I/O in the network's types and
// linear (chw) layout, so those are accepted and anything else is an error saying it is not supported yet.
Status check_io_formats(const Engine& engine, const Options& options);

// --getPlanVersionOnly: reads only the header of the engine file and prints the versions it was written with.
Status print_plan_version(const std::string& path);

}  // namespace kiln::cli
