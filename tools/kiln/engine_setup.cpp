// Backend choice, ONNX parsing, optimization-profile resolution and engine building for the kiln CLI.
#include "engine_setup.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "kiln/builder.h"
#include "kiln/onnx_parser.h"

namespace kiln::cli {
namespace {

// There is no CUDA backend yet; when one lands, its CMake option defines this.
#ifdef KILN_WITH_CUDA
constexpr bool kCudaBackendBuilt = true;
#else
constexpr bool kCudaBackendBuilt = false;
#endif

bool gpu_present() {
  std::error_code ec;
  return std::filesystem::exists("/proc/driver/nvidia/version", ec) || std::filesystem::exists("/dev/nvidia0", ec);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct InputInfo {
  Dims dims;
  bool dynamic = false;
};

std::string input_list(const std::map<std::string, InputInfo>& inputs) {
  std::string s;
  for (const auto& [name, info] : inputs)
    s += (s.empty() ? "" : ", ") + ("'" + name + "' (" + dims_to_string(info.dims) + ")");
  return s;
}

// Shapes for an input must match its rank and its static dims; saying so here names the flag at fault.
Status check_against_input(const std::string& flag, const std::string& name, const Dims& dims, const InputInfo& info) {
  if (dims.size() != info.dims.size()) {
    return invalid_argument(flag + " for input '" + name + "': " + dims_to_string(dims) + " has " +
                            std::to_string(dims.size()) + " dims, but the input has rank " +
                            std::to_string(info.dims.size()) + " (" + dims_to_string(info.dims) + ")");
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    if (info.dims[i] >= 0 && dims[i] != info.dims[i]) {
      return invalid_argument(flag + " for input '" + name + "': dim " + std::to_string(i) + " is " +
                              std::to_string(dims[i]) + ", but the input fixes it to " + std::to_string(info.dims[i]) +
                              " (" + dims_to_string(info.dims) + ")");
    }
  }
  return Status::Ok();
}

using ShapeMap = std::map<std::string, Dims>;

Result<ShapeMap> shape_map(const std::vector<std::string>& lists, const std::string& flag,
                           const std::map<std::string, InputInfo>& inputs) {
  KILN_ASSIGN_OR_RETURN(auto entries, parse_shape_list(lists, flag));
  ShapeMap out;
  for (auto& [name, dims] : entries) {
    auto it = inputs.find(name);
    if (it == inputs.end()) {
      return invalid_argument(flag + ": '" + name + "' is not an input of the network (inputs: " + input_list(inputs) +
                              ")");
    }
    KILN_RETURN_IF_ERROR(check_against_input(flag, name, dims, it->second));
    out[name] = std::move(dims);
  }
  return out;
}

// trtexec's rules: explicit --min/opt/maxShapes must name each input in all three; an input named only in
// --shapes gets min=opt=max; a dynamic input named nowhere gets its dynamic dims set to 1, with a warning.
Result<OptimizationProfile> resolve_profile(const Options& o, const std::map<std::string, InputInfo>& inputs,
                                            ILogger& logger) {
  KILN_ASSIGN_OR_RETURN(ShapeMap min, shape_map(o.min_shapes, "--minShapes", inputs));
  KILN_ASSIGN_OR_RETURN(ShapeMap opt, shape_map(o.opt_shapes, "--optShapes", inputs));
  KILN_ASSIGN_OR_RETURN(ShapeMap max, shape_map(o.max_shapes, "--maxShapes", inputs));
  KILN_ASSIGN_OR_RETURN(ShapeMap run, shape_map(o.shapes, "--shapes", inputs));

  const std::pair<const char*, const ShapeMap*> bounds[] = {
      {"--minShapes", &min}, {"--optShapes", &opt}, {"--maxShapes", &max}};
  std::set<std::string> named;
  for (const auto& [flag, map] : bounds) {
    for (const auto& entry : *map) named.insert(entry.first);
  }
  for (const auto& name : named) {
    for (const auto& [flag, map] : bounds) {
      if (!map->count(name)) {
        return invalid_argument("input '" + name + "' has profile shapes but none in " + flag +
                                "; give --minShapes, --optShapes and --maxShapes for it together");
      }
    }
  }

  OptimizationProfile profile;
  for (const auto& [name, info] : inputs) {
    Dims lo, mid, hi;
    if (named.count(name)) {
      lo = min[name], mid = opt[name], hi = max[name];
    } else if (!info.dynamic) {
      continue;
    } else if (run.count(name)) {
      lo = mid = hi = run[name];
    } else {
      lo = info.dims;
      for (auto& d : lo) d = d < 0 ? 1 : d;
      mid = hi = lo;
      std::string m = "Dynamic dimensions required for input: " + name +
                      ", but no shapes were provided. Automatically overriding shape to: " + dims_to_string(lo);
      logger.log(ILogger::Severity::kWARNING, m.c_str());
    }
    Status st = profile.set_shape(name, lo, mid, hi);
    if (!st.ok()) return st.with_context("optimization profile for input '" + name + "'");
  }
  return profile;
}

}  // namespace

Result<DeviceDecision> resolve_device(const Options& o) {
  DeviceDecision d;
  const bool gpu = gpu_present();
  if (o.device == DeviceChoice::kCuda) {
    if (!kCudaBackendBuilt) return unsupported("--device=cuda: the CUDA backend is not available in this build");
    d.backend = Backend::kCUDA;
    d.reason = "requested with --device=cuda";
  } else if (o.device == DeviceChoice::kCpu) {
    d.reason = "requested with --device=cpu";
  } else if (gpu && kCudaBackendBuilt) {
    d.backend = Backend::kCUDA;
    d.reason = "a GPU is present (default)";
  } else {
    d.reason = gpu ? "a GPU is present, but the CUDA backend is not available in this build" : "no GPU found";
  }
  if (d.backend == Backend::kCPU) {
    // The CPU backend computes in FP32 only; building anyway would report FP32 speed under an FP16 label.
    const std::pair<const char*, bool> reduced[] = {{"--fp16", o.fp16}, {"--bf16", o.bf16}, {"--int8", o.int8}};
    for (const auto& [flag, given] : reduced) {
      if (given) {
        return unsupported(std::string(flag) + " requires --device=cuda: the CPU backend computes in FP32 only");
      }
    }
  }
  return d;
}

Result<BuiltEngine> build_engine(const Options& o, Backend backend, ILogger& logger) {
  BuiltEngine built;
  Builder builder(logger);
  std::unique_ptr<NetworkDefinition> network = builder.create_network();
  auto start = std::chrono::steady_clock::now();
  OnnxParser parser(*network, logger);
  Status parsed = parser.parse_from_file(o.onnx);
  if (!parsed.ok()) return parsed.with_context("failed to parse '" + o.onnx + "'");
  built.parse_s = seconds_since(start);
  built.num_layers = network->num_layers();

  std::map<std::string, InputInfo> inputs;
  for (int i = 0; i < network->num_inputs(); ++i) {
    ITensor* t = network->get_input(i);
    InputInfo info{t->dims(), false};
    for (int64_t d : info.dims) info.dynamic |= d < 0;
    inputs[t->name()] = std::move(info);
  }
  KILN_ASSIGN_OR_RETURN(OptimizationProfile profile, resolve_profile(o, inputs, logger));

  std::unique_ptr<BuilderConfig> config = builder.create_builder_config();
  config->set_backend(backend);
  if (o.no_tf32) config->clear_flag(BuilderFlag::kTF32);
  if (o.fp16) config->set_flag(BuilderFlag::kFP16);
  if (o.bf16) config->set_flag(BuilderFlag::kBF16);
  if (o.int8) config->set_flag(BuilderFlag::kINT8);
  if (!o.dump_after.empty()) config->set_dump_after(o.dump_after);
  config->set_precision_constraints(o.precision_constraints);
  KILN_ASSIGN_OR_RETURN(auto layers, split_name_value_list(o.layer_precisions, "--layerPrecisions"));
  for (const auto& [layer, type] : layers) {
    DataType dt;
    if (!parse_dtype(type, &dt) || (dt != DataType::kFLOAT && dt != DataType::kHALF && dt != DataType::kBF16))
      return invalid_argument("--layerPrecisions: '" + type + "' for layer '" + layer + "' is not fp32, fp16 or bf16");
    config->set_layer_precision(layer, dt);
  }
  if (!profile.shapes().empty()) config->add_optimization_profile(profile);

  start = std::chrono::steady_clock::now();
  auto bytes = builder.build_serialized_network(*network, *config);
  if (!bytes.ok()) return bytes.status().with_context("failed to build an engine from '" + o.onnx + "'");
  built.build_s = seconds_since(start);
  built.bytes = std::move(bytes.value());
  return built;
}

Status write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return io_error("cannot open '" + path + "' for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return io_error("failed writing '" + path + "'");
  return Status::Ok();
}

}  // namespace kiln::cli
