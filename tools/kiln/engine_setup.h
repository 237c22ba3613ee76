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

struct BuiltEngine {
  std::vector<uint8_t> bytes;
  double parse_s = 0;
  double build_s = 0;
  int num_layers = 0;
};

Result<BuiltEngine> build_engine(const Options& options, Backend backend, ILogger& logger);

Status write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace kiln::cli
