// Backend choice, ONNX parsing, optimization-profile resolution and engine building for the kiln CLI.
#include "engine_setup.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "build_progress.h"
#include "common/engine_format.h"
#include "ir/graph.h"
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

// Several profiles, as trtexec takes them: when an input is named by more than one --minShapes, the i-th
// --minShapes, --optShapes and --maxShapes together make profile i (each flag repeated as often as the others).
// Otherwise repeated flags are one list, and there is one profile.
Result<std::vector<OptimizationProfile>> resolve_profiles(const Options& o, const std::map<std::string, InputInfo>& inputs,
                                                          ILogger& logger) {
  std::map<std::string, int> times_named;
  for (const auto& list : o.min_shapes) {
    KILN_ASSIGN_OR_RETURN(auto entries, parse_shape_list({list}, "--minShapes"));
    std::set<std::string> here;
    for (const auto& e : entries) here.insert(e.first);
    for (const auto& name : here) ++times_named[name];
  }
  bool several = false;
  for (const auto& [name, n] : times_named) several |= n > 1;
  std::vector<OptimizationProfile> profiles;
  if (!several) {
    KILN_ASSIGN_OR_RETURN(OptimizationProfile p, resolve_profile(o, inputs, logger));
    profiles.push_back(std::move(p));
    return profiles;
  }
  if (o.opt_shapes.size() != o.min_shapes.size() || o.max_shapes.size() != o.min_shapes.size())
    return invalid_argument("several optimization profiles need --minShapes, --optShapes and --maxShapes repeated "
                            "the same number of times (once per profile), got " + std::to_string(o.min_shapes.size()) +
                            ", " + std::to_string(o.opt_shapes.size()) + " and " + std::to_string(o.max_shapes.size()));
  for (size_t i = 0; i < o.min_shapes.size(); ++i) {
    Options one = o;
    one.min_shapes = {o.min_shapes[i]};
    one.opt_shapes = {o.opt_shapes[i]};
    one.max_shapes = {o.max_shapes[i]};
    auto p = resolve_profile(one, inputs, logger);
    if (!p.ok()) return p.status().with_context("optimization profile " + std::to_string(i));
    profiles.push_back(std::move(*p));
  }
  return profiles;
}

// Makes every tensor a layer computes from the network inputs an output. Tensors computed from constants alone
// are left out: the builder folds them away, so no engine would have them to compare.
Result<std::vector<MarkedTensor>> mark_all_tensors(NetworkDefinition& network) {
  ir::Graph& g = network.graph();
  KILN_RETURN_IF_ERROR(g.topo_sort().with_context("--markAll"));
  std::set<const ir::Value*> from_inputs(g.inputs().begin(), g.inputs().end());
  std::set<const ir::Value*> outputs(g.outputs().begin(), g.outputs().end());
  std::vector<MarkedTensor> marked;
  for (const auto& n : g.nodes()) {
    bool live = false;
    for (const ir::Value* v : n->inputs) live |= v && from_inputs.count(v);
    if (!live) continue;
    for (ir::Value* v : n->outputs) {
      if (!v || v->name.empty()) continue;
      from_inputs.insert(v);
      const bool network_output = outputs.count(v) != 0;
      if (!network_output) KILN_RETURN_IF_ERROR(network.mark_output(network.wrap(v)).with_context("--markAll"));
      outputs.insert(v);
      marked.push_back({v->name, n->name, n->op_type, network_output});
    }
  }
  return marked;
}

}  // namespace

Result<DeviceDecision> resolve_device(const Options& o) {
  DeviceDecision d;
  // Before the device: no backend can honour these, so naming the device would mislead.
  if (o.fp8)
    return unsupported("--fp8: FP8 precision is not implemented yet (no FP8 kernels, scales or calibration); "
                       "build without it");
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
    if (o.best)
      return unsupported("--best requires --device=cuda: it enables FP16 and BF16 (INT8 and FP8 are not "
                         "implemented yet), and the CPU backend computes in FP32 only");
    if (o.use_cuda_graph || o.no_data_transfers)
      return unsupported(std::string(o.use_cuda_graph ? "--useCudaGraph" : "--noDataTransfers") +
                         " requires --device=cuda: the CPU backend has no CUDA graphs and no host-device copies");
  }
  return d;
}

namespace {

// The tuning flags drive the CUDA builder's tactic auto-tuner; the CPU reference backend has one implementation
// per layer, so there they must not pass silently as if they had tuned something.
void note_tuning_options(const Options& o, const BuilderConfig& config, Backend backend, ILogger& logger) {
  std::string given;
  auto add = [&given](const std::string& s) { given += (given.empty() ? "" : ", ") + s; };
  if (o.builder_optimization_level != -1)
    add("--builderOptimizationLevel=" + std::to_string(o.builder_optimization_level));
  if (o.avg_timing != -1) add("--avgTiming=" + std::to_string(o.avg_timing));
  if (o.max_tactics != -2) add("--maxTactics=" + std::to_string(o.max_tactics));
  if (!o.timing_cache_file.empty()) add("--timingCacheFile=" + o.timing_cache_file);
  if (!given.empty() && backend == Backend::kCPU) {
    std::string m = given + ": the CPU reference backend has one implementation per layer, so there is nothing to "
                            "tune; these apply to CUDA builds (--device=cuda)" +
                    (o.timing_cache_file.empty() ? "" : " (the timing cache file is neither read nor written)");
    logger.log(ILogger::Severity::kINFO, m.c_str());
  }
  if (!o.mem_pool_size.empty()) {
    std::string m = "--memPoolSize: workspace limit " + std::to_string(config.memory_pool_limit(MemoryPoolType::kWORKSPACE)) +
                    " bytes" + (backend == Backend::kCPU ? "; the CPU backend's kernels use no workspace, so it changes nothing"
                                                         : ": the CUDA kernels' scratch memory (64 MiB by default) is capped "
                                                           "at this, and tactics that need more are not considered");
    logger.log(ILogger::Severity::kINFO, m.c_str());
  }
  std::string v = "builder config: optimization level " + std::to_string(config.builder_optimization_level()) +
                  ", avgTiming " + std::to_string(config.avg_timing_iterations()) + ", maxTactics " +
                  std::to_string(config.max_num_tactics()) + ", workspace limit " +
                  std::to_string(config.memory_pool_limit(MemoryPoolType::kWORKSPACE)) +
                  " bytes (0 = none), timing cache '" + config.timing_cache_file() + "'" +
                  (backend == Backend::kCPU ? "; the CPU backend has nothing to tune" : "");
  logger.log(ILogger::Severity::kVERBOSE, v.c_str());
}

}  // namespace

// --inputIOFormats / --outputIOFormats at build time: a float binding may take another float type
// (NetworkDefinition::set_io_type, as trtexec's fp16:chw on an FP32 network's I/O); check_io_formats then finds the
// engine's bindings as asked. Other types must be the tensor's own.
Status set_binding_types(NetworkDefinition& network, const Options& o) {
  const std::pair<const char*, const std::vector<std::string>*> flags[] = {
      {"--inputIOFormats", &o.input_io_formats}, {"--outputIOFormats", &o.output_io_formats}};
  for (const auto& [flag, lists] : flags) {
    if (lists->empty()) continue;
    KILN_ASSIGN_OR_RETURN(auto formats, parse_io_formats(*lists, flag));
    const bool inputs = flag == std::string("--inputIOFormats");
    const int n = inputs ? network.num_inputs() : network.num_outputs();
    if (formats.size() != 1 && static_cast<int>(formats.size()) != n)
      return invalid_argument(std::string(flag) + " gives " + std::to_string(formats.size()) + " formats, but the network has " +
                              std::to_string(n) + (inputs ? " inputs" : " outputs") +
                              " (give one per tensor, in order, or one for all)");
    for (int i = 0; i < n; ++i) {
      ITensor* t = inputs ? network.get_input(i) : network.get_output(i);
      const IoFormat& f = formats.size() == 1 ? formats[0] : formats[i];
      if (f.dtype == t->dtype()) continue;
      Status st = network.set_io_type(t, f.dtype);
      if (!st.ok())
        return unsupported(std::string(flag) + ": '" + f.type_text + ":" + f.format + "' for '" + t->name() + "' (" +
                           dtype_name(t->dtype()) + "): " + st.message());
    }
  }
  return Status::Ok();
}

Result<BuiltEngine> build_engine(const Options& o, Backend backend, ILogger& cli_logger) {
  BuiltEngine built;
  const ProgressDisplay::Mode mode = ProgressDisplay::mode_for(o.progress);
  ProgressDisplay progress(mode, mode == ProgressDisplay::Mode::kLive ? stderr : stdout, cli_logger);
  ILogger& logger = progress;  // the live status line steps aside for log messages
  Builder builder(logger);
  std::unique_ptr<NetworkDefinition> network = builder.create_network();
  auto start = std::chrono::steady_clock::now();
  OnnxParser parser(*network, logger);
  Status parsed = parser.parse_from_file(o.onnx);
  if (!parsed.ok()) return parsed.with_context("failed to parse '" + o.onnx + "'");
  built.parse_s = seconds_since(start);
  built.num_layers = network->num_layers();
  if (o.mark_all) {
    KILN_ASSIGN_OR_RETURN(built.marked, mark_all_tensors(*network));
  }

  KILN_RETURN_IF_ERROR(set_binding_types(*network, o));

  std::map<std::string, InputInfo> inputs;
  for (int i = 0; i < network->num_inputs(); ++i) {
    ITensor* t = network->get_input(i);
    InputInfo info{t->dims(), false};
    for (int64_t d : info.dims) info.dynamic |= d < 0;
    inputs[t->name()] = std::move(info);
  }
  KILN_ASSIGN_OR_RETURN(std::vector<OptimizationProfile> profiles, resolve_profiles(o, inputs, logger));

  std::unique_ptr<BuilderConfig> config = builder.create_builder_config();
  config->set_backend(backend);
  if (o.no_tf32) config->clear_flag(BuilderFlag::kTF32);
  if (o.fp16) config->set_flag(BuilderFlag::kFP16);
  if (o.bf16) config->set_flag(BuilderFlag::kBF16);
  if (o.int8) config->set_flag(BuilderFlag::kINT8);
  if (o.fp8) config->set_flag(BuilderFlag::kFP8);
  if (o.best) {
    config->set_flag(BuilderFlag::kFP16);
    config->set_flag(BuilderFlag::kBF16);
    logger.log(ILogger::Severity::kINFO,
               "--best: allowing FP16 and BF16 (where both are allowed the builder picks FP16); INT8 and FP8 are "
               "not implemented yet and stay off");
  }
  if (o.workspace_bytes) config->set_memory_pool_limit(MemoryPoolType::kWORKSPACE, o.workspace_bytes);
  if (o.builder_optimization_level != -1) config->set_builder_optimization_level(o.builder_optimization_level);
  if (o.avg_timing != -1) config->set_avg_timing_iterations(o.avg_timing);
  if (o.max_tactics != -2) config->set_max_num_tactics(o.max_tactics);
  config->set_timing_cache_file(o.timing_cache_file);
  note_tuning_options(o, *config, backend, logger);
  if (!o.dump_after.empty()) config->set_dump_after(o.dump_after);
  config->set_precision_constraints(o.precision_constraints);
  KILN_ASSIGN_OR_RETURN(auto layers, split_name_value_list(o.layer_precisions, "--layerPrecisions"));
  for (const auto& [layer, type] : layers) {
    DataType dt;
    if (!parse_dtype(type, &dt) || (dt != DataType::kFLOAT && dt != DataType::kHALF && dt != DataType::kBF16))
      return invalid_argument("--layerPrecisions: '" + type + "' for layer '" + layer + "' is not fp32, fp16 or bf16");
    config->set_layer_precision(layer, dt);
  }
  for (const auto& profile : profiles)
    if (!profile.shapes().empty()) config->add_optimization_profile(profile);

  config->set_progress_monitor(&progress);
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

namespace kiln::cli {

Status check_io_formats(const Engine& engine, const Options& o) {
  const std::pair<const char*, const std::vector<std::string>*> flags[] = {
      {"--inputIOFormats", &o.input_io_formats}, {"--outputIOFormats", &o.output_io_formats}};
  for (const auto& [flag, lists] : flags) {
    if (lists->empty()) continue;
    KILN_ASSIGN_OR_RETURN(auto formats, parse_io_formats(*lists, flag));
    const TensorIOMode mode = flag == std::string("--inputIOFormats") ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
    std::vector<std::string> names;
    for (int i = 0; i < engine.num_io_tensors(); ++i)
      if (engine.get_tensor_mode(engine.get_tensor_name(i)) == mode) names.push_back(engine.get_tensor_name(i));
    // trtexec's rule: one format per tensor in order, or a single one for all of them.
    if (formats.size() != 1 && formats.size() != names.size())
      return invalid_argument(std::string(flag) + " gives " + std::to_string(formats.size()) + " formats, but the engine has " +
                              std::to_string(names.size()) + (mode == TensorIOMode::kINPUT ? " inputs" : " outputs") +
                              " (give one per tensor, in order, or one for all)");
    for (size_t i = 0; i < names.size(); ++i) {
      const IoFormat& f = formats.size() == 1 ? formats[0] : formats[i];
      const DataType actual = engine.get_tensor_dtype(names[i]);
      if (f.dtype != actual)
        return invalid_argument(std::string(flag) + ": '" + f.type_text + ":" + f.format + "' for '" + names[i] +
                                "', but the engine's binding is " + dtype_name(actual) +
                                " (binding types are chosen when the engine is built: pass the formats with --onnx)");
      if (f.format != "chw")
        return unsupported(std::string(flag) + ": format '" + f.format + "' for '" + names[i] +
                           "' is not supported yet: Kiln engines take I/O in linear (chw) layout only");
    }
  }
  return Status::Ok();
}

Status print_plan_version(const std::string& path) {
  namespace fmt = engine_format;
  std::ifstream f(path, std::ios::binary);
  if (!f) return io_error("cannot open engine file '" + path + "'");
  // The fixed part: magic, u32 format version, u32 header size, u64 file size.
  constexpr size_t kFixed = 24;
  std::vector<uint8_t> head(kFixed);
  f.read(reinterpret_cast<char*>(head.data()), kFixed);
  if (static_cast<size_t>(f.gcount()) < sizeof(fmt::kMagic) ||
      std::memcmp(head.data(), fmt::kMagic, sizeof(fmt::kMagic)) != 0)
    return invalid_engine("'" + path + "' is not a Kiln engine (bad magic)");
  if (static_cast<size_t>(f.gcount()) < kFixed) return invalid_engine("'" + path + "': the engine header is truncated");
  uint32_t format_version = 0, header_size = 0;
  std::memcpy(&format_version, head.data() + 8, 4);
  std::memcpy(&header_size, head.data() + 12, 4);
  if (format_version != fmt::kFormatVersion) {
    // A later format may lay out the rest differently: its version number is all that can be trusted.
    std::printf("Engine format version: %u (this Kiln reads version %u)\n", format_version, fmt::kFormatVersion);
    return Status::Ok();
  }
  constexpr uint32_t kMaxHeader = 1 << 20;
  if (header_size < kFixed + 4 || header_size > kMaxHeader)
    return invalid_engine("'" + path + "': engine header size " + std::to_string(header_size) + " is invalid");
  head.resize(header_size);
  f.read(reinterpret_cast<char*>(head.data() + kFixed), header_size - kFixed);
  if (static_cast<size_t>(f.gcount()) < header_size - kFixed)
    return invalid_engine("'" + path + "': the engine header is truncated");
  uint32_t stored_crc = 0;
  std::memcpy(&stored_crc, head.data() + header_size - 4, 4);
  if (fmt::crc32(head.data(), header_size - 4) != stored_crc)
    return invalid_engine("'" + path + "': checksum mismatch in the engine header (file is corrupt)");
  fmt::ByteReader r(head.data() + kFixed, header_size - 4 - kFixed, "engine header", kFixed);
  std::string version, device;
  uint8_t backend = 0;
  KILN_RETURN_IF_ERROR(r.str(&version));
  KILN_RETURN_IF_ERROR(r.u8(&backend));
  KILN_RETURN_IF_ERROR(r.str(&device));
  std::printf("Plan was created with Kiln version: %s\n", version.c_str());
  std::printf("Engine format version: %u\n", format_version);
  std::printf("Backend: %s, device: %s\n",
              backend <= static_cast<uint8_t>(Backend::kCUDA) ? backend_name(static_cast<Backend>(backend)) : "unknown",
              device.c_str());
  std::printf("This Kiln: %s (%s)\n", kiln_version_string(),
              version == kiln_version_string() ? "can load it" : "cannot load it: rebuild the engine");
  return Status::Ok();
}

}  // namespace kiln::cli
