// The kiln option table (CLI11), unknown-flag suggestions, and the parsers for shape and file lists.
#include "options.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>

#include "kiln/runtime.h"

namespace kiln::cli {
namespace {

constexpr int kUsageExitCode = 2;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool looks_like_number(const std::string& s) {
  return s.size() > 1 && s[0] == '-' && (std::isdigit(static_cast<unsigned char>(s[1])) || s[1] == '.');
}

}  // namespace

void print_usage_error(const std::string& message) {
  std::fprintf(stderr, "[E] %s\n", message.c_str());
  std::fprintf(stderr, "[E] Run 'kiln --help' for the list of options.\n");
}

// CLI11 would only say "the following argument was not expected"; trtexec users mistype camelCase flags
// often enough that naming the nearest flag saves a trip to --help.
std::optional<std::string> unknown_flag_error(const std::string& token, const std::vector<std::string>& known) {
  std::string name = token;
  while (!name.empty() && name.front() == '-') name.erase(name.begin());
  name = name.substr(0, name.find('='));
  if (name.empty()) return std::nullopt;  // "--" alone: CLI11 treats it as end of options
  if (std::find(known.begin(), known.end(), name) != known.end()) {
    if (token.rfind("--", 0) == 0) return std::nullopt;
    return "Options take two dashes: '" + token + "' should be '--" + token.substr(1) + "'.";
  }
  if (token.rfind("--", 0) != 0 && name == "h") return std::nullopt;
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& k : known) {
    size_t d = edit_distance(name, k);
    if (d < best_distance) best_distance = d, best = k;
  }
  std::string message = "Unknown option '" + token.substr(0, token.find('=')) + "'.";
  // Beyond a third of the name the nearest flag is more likely noise than the intended one.
  if (!best.empty() && best_distance <= std::max<size_t>(2, name.size() / 3)) {
    message += " Did you mean '--" + best + "'?";
  }
  return message;
}

size_t edit_distance(const std::string& a_in, const std::string& b_in) {
  const std::string a = lower(a_in), b = lower(b_in);
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

ParseOutcome parse_options(int argc, char** argv) {
  Options o;
  std::string device = "";
  std::string percentiles;
  bool show_version = false;

  CLI::App app{
      "kiln: build an optimized engine from an ONNX model, run it and report its performance.\n"
      "Flags follow trtexec's names and take the form --flag=value.\n"
      "Also: 'kiln compare --help' (compare an engine or model with a reference, tensor by tensor).",
      "kiln"};
  app.get_formatter()->column_width(34);
  // Gives a heading to the options added since the previous call (CLI11 puts new options in "Options").
  auto close_group = [&app](const std::string& heading) {
    for (CLI::Option* opt : app.get_options([](CLI::Option* opt) { return opt->get_group() == "Options"; })) {
      opt->group(heading);
    }
  };

  app.add_option("--onnx", o.onnx, "ONNX model to parse and build an engine from")->type_name("FILE");
  app.add_option("--saveEngine", o.save_engine, "Write the built engine to this file (needs --onnx)")
      ->type_name("FILE");
  app.add_option("--loadEngine", o.load_engine, "Load a serialized engine instead of building one")->type_name("FILE");
  app.add_flag("--getPlanVersionOnly", o.get_plan_version_only,
               "With --loadEngine: print the Kiln version and engine format version the file was written with, "
               "reading only its header, and exit");
  close_group("Model and engine");

  const char* shape_hint =
      "name:AxBxC[,name2:...] (names may contain ':'; the last ':' separates the dims; "
      "quote a name as 'name' to take it verbatim)";
  app.add_option("--minShapes", o.min_shapes, std::string("Minimum shapes of the optimization profile: ") + shape_hint)
      ->type_name("SPEC")
      ->allow_extra_args(false);
  app.add_option("--optShapes", o.opt_shapes, "Optimal shapes of the optimization profile (same syntax)")
      ->type_name("SPEC")
      ->allow_extra_args(false);
  app.add_option("--maxShapes", o.max_shapes, "Maximum shapes of the optimization profile (same syntax)")
      ->type_name("SPEC")
      ->allow_extra_args(false);
  app.add_flag("--noTF32", o.no_tf32, "Disable TF32 math (the CPU backend always computes in full FP32)");
  app.add_flag("--fp16", o.fp16, "Allow FP16 kernels (needs --device=cuda)");
  app.add_flag("--bf16", o.bf16, "Allow BF16 kernels (needs --device=cuda)");
  app.add_flag("--int8", o.int8, "Allow INT8 kernels (not implemented yet: an error)");
  app.add_flag("--fp8", o.fp8, "Allow FP8 kernels (not implemented yet: an error)");
  app.add_flag("--best", o.best,
               "Allow every precision Kiln has: FP16 and BF16 (INT8 and FP8 are not implemented yet, so --best "
               "leaves them off and says so); needs --device=cuda");
  app.add_option("--precisionConstraints", o.precision_constraints,
                 "none|prefer|obey: what --layerPrecisions does when a layer has no kernel of that type "
                 "(none/prefer: keep float32 with a warning; obey: fail the build)")
      ->check(CLI::IsMember({"none", "prefer", "obey"}));
  app.add_option("--layerPrecisions", o.layer_precisions,
                 "Per-layer precision, e.g. --layerPrecisions=conv1:fp32,fc:fp16 (CUDA backend)")
      ->type_name("SPEC");
  app.add_option("--inputIOFormats", o.input_io_formats,
                 "type:format per input, in input order (or one for all), e.g. fp16:chw. At build time a float "
                 "input may take fp32, fp16 or bf16 (the engine converts at the boundary); other types must be the "
                 "input's own, and the layout linear (chw). With --loadEngine: checked against the engine")
      ->type_name("SPEC");
  app.add_option("--outputIOFormats", o.output_io_formats, "type:format per output (same rules as --inputIOFormats)")
      ->type_name("SPEC");
  app.add_option("--memPoolSize", o.mem_pool_size,
                 "workspace:N[B|K|M|G] (MiB without a suffix): cap on the builder's workspace pool. Recorded in "
                 "the builder config; kernels do not size their workspace from it yet")
      ->type_name("SPEC");
  app.add_option("--builderOptimizationLevel", o.builder_optimization_level,
                 "0..5 (default 3): how hard the CUDA tactic auto-tuner searches (0: first tactic, no timing; 1..5 time up to 2, 4, 8, 16, all candidates per layer)")
      ->type_name("N");
  app.add_option("--timingCacheFile", o.timing_cache_file,
                 "Timing cache file (JSON) to read, merge into and update: layers found there are not timed again (CUDA builds)")
      ->type_name("FILE");
  app.add_option("--avgTiming", o.avg_timing,
                 "Timing runs averaged per tactic (>= 1, default 8; CUDA builds)")
      ->type_name("N");
  app.add_option("--maxTactics", o.max_tactics,
                 "Most tactics timed per layer (>= 0, or -1: set by --builderOptimizationLevel; CUDA builds)")
      ->type_name("N");
  app.add_option("--profilingVerbosity", o.profiling_verbosity,
                 "layer_names_only (default)|detailed|none: what --dumpLayerInfo/--exportLayerInfo show "
                 "(names only; op types, tensors, shapes, precisions, backend and where each layer runs; nothing)")
      ->check(CLI::IsMember({"layer_names_only", "detailed", "none"}));
  app.add_option("--dumpAfter", o.dump_after,
                 "Print the graph after the named optimization pass ('all' for every pass)")
      ->type_name("PASS");
  app.add_option("--progress", o.progress,
                 "auto (default)|live|plain|none: how the build shows its progress (phases, passes done, layers "
                 "tuned, elapsed time): auto draws a live line when stderr is a terminal and prints plain "
                 "'[build]' lines otherwise")
      ->check(CLI::IsMember({"auto", "live", "plain", "none"}));
  close_group("Build");

  app.add_option("--shapes", o.shapes,
                 "Shapes to run with: name:AxBxC[,...]; dynamic inputs default to the profile's opt shape. "
                 "With --onnx and no --min/opt/maxShapes this also sets the profile (min=opt=max)")
      ->type_name("SPEC")
      ->allow_extra_args(false);
  app.add_option("--loadInputs", o.load_inputs,
                 "name:file.bin[,...]: raw little-endian input data in the input's dtype, C order; "
                 "other inputs get seeded random data")
      ->type_name("SPEC")
      ->allow_extra_args(false);
  app.add_option("--iterations", o.iterations, "Run at least N timed inferences (default 10)")->type_name("N");
  app.add_option("--warmUp", o.warm_up_ms, "Warm up for N milliseconds before timing (default 200)")->type_name("MS");
  app.add_option("--duration", o.duration_s, "Time inferences for at least N seconds (default 3)")->type_name("S");
  app.add_option("--device", device,
                 "cpu or cuda. Without it: cuda when a GPU is present and the CUDA backend is built, else cpu")
      ->type_name("DEV")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--profile,--useProfile", o.profile,
                 "Optimization profile the execution contexts use (default 0; --useProfile is newer trtexec's name)")
      ->type_name("N");
  app.add_option("--infStreams", o.inf_streams,
                 "Run N execution contexts concurrently, each on its own thread (and CUDA stream); throughput is "
                 "their sum (default 1)")
      ->type_name("N");
  app.add_flag("--threads", o.threads,
               "Drive each stream from its own thread (Kiln always does; accepted for trtexec command lines)");
  app.add_flag("--useSpinWait", o.use_spin_wait,
               "Wait for each inference by polling its CUDA event instead of a blocking synchronization "
               "(CUDA backend; on the CPU there is nothing to wait for)");
  app.add_flag("--useCudaGraph", o.use_cuda_graph,
               "Capture the engine in a CUDA graph and replay it (CUDA backend); a per-layer profile then comes "
               "from separate runs without the graph, as with --separateProfileRun");
  app.add_flag("--noDataTransfers", o.no_data_transfers,
               "Leave host-device copies out of the timed runs (CUDA backend)");
  app.add_flag("--separateProfileRun", o.separate_profile_run,
               "Time the benchmark without the profiler attached, then run the profiled iterations separately "
               "(with --dumpProfile/--exportProfile)");
  app.add_flag("--skipInference", o.skip_inference, "Build (or load) the engine and stop");
  close_group("Inference");

  app.add_option("--avgRuns", o.avg_runs,
                 "Also report the timings averaged over each N consecutive iterations, in --verbose (default 10)")
      ->type_name("N");
  app.add_option("--percentile", percentiles,
                 "Percentiles to report, P1,P2,... each in [0, 100] (default 90,95,99)")
      ->type_name("P");
  app.add_flag("--dumpOutput", o.dump_output, "Print the output tensors of the first inference");
  app.add_option("--exportOutput", o.export_output,
                 "Write outputs as JSON: [{\"name\", \"dimensions\": \"AxB\", \"values\": [...]}]")
      ->type_name("FILE");
  app.add_option("--exportTimes", o.export_times,
                 "Write the timing of every timed inference as JSON (trtexec's layout: startEnqMs, endEnqMs, "
                 "startH2dMs, ..., latencyMs; in ms from the start of the timed run)")
      ->type_name("FILE");
  app.add_flag("--dumpProfile", o.dump_profile,
               "Print the per-layer profile: total, average and median time and share of each layer");
  app.add_option("--exportProfile", o.export_profile,
                 "Write the per-layer profile as JSON: [{\"count\"}, {\"name\", \"timeMs\", \"averageMs\", "
                 "\"medianMs\", \"percentage\"}, ...]")
      ->type_name("FILE");
  app.add_flag("--dumpLayerInfo", o.dump_layer_info,
               "Print the engine's layers (see --profilingVerbosity for how much; with --dumpProfile or "
               "--exportProfile, after the run, with each layer's average time and share of it)");
  app.add_option("--exportLayerInfo", o.export_layer_info,
                 "Write the engine's layers as JSON: {\"Layers\": [...], \"Bindings\": [...]} (detailed with a "
                 "profile in the same run: each layer's \"AverageMs\" and \"TimePercent\" too)")
      ->type_name("FILE");
  app.add_flag("--verbose", o.verbose, "Log verbose messages from the library");
  close_group("Reporting");
  app.set_help_flag("-h,--help", "Print this help and exit");
  app.add_flag("--version", show_version, "Print the Kiln version and exit");
  close_group("General");

  app.footer(
      "Examples:\n"
      "  kiln --onnx=model.onnx --saveEngine=model.engine --minShapes=x:1x3x224x224 "
      "--optShapes=x:8x3x224x224 --maxShapes=x:32x3x224x224\n"
      "  kiln --loadEngine=model.engine --shapes=x:4x3x224x224 --loadInputs=x:x.bin --exportOutput=out.json\n"
      "  kiln --loadEngine=model.engine --dumpProfile --separateProfileRun --exportLayerInfo=layers.json "
      "--profilingVerbosity=detailed\n"
      "  kiln compare --onnx=model.onnx --device=cuda --fp16 --atol=1e-2 --rtol=1e-2 --markAll");

  std::vector<std::string> known;
  for (const CLI::Option* opt : app.get_options()) {
    for (const auto& n : opt->get_lnames()) known.push_back(n);
  }
  for (int i = 1; i < argc; ++i) {
    std::string token = argv[i];
    if (token.size() < 2 || token[0] != '-' || looks_like_number(token)) continue;
    if (token == "--") break;
    if (auto error = unknown_flag_error(token, known)) {
      print_usage_error(*error);
      return {std::nullopt, kUsageExitCode};
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return {std::nullopt, app.exit(e)};
  } catch (const CLI::ParseError& e) {
    print_usage_error(e.what());
    return {std::nullopt, kUsageExitCode};
  }
  if (show_version) {
    std::printf("kiln %s\n", kiln_version_string());
    return {std::nullopt, 0};
  }
  o.device = device.empty() ? DeviceChoice::kDefault : device == "cuda" ? DeviceChoice::kCuda : DeviceChoice::kCpu;

  auto usage_error = [](const std::string& m) {
    print_usage_error(m);
    return ParseOutcome{std::nullopt, kUsageExitCode};
  };
  if (o.get_plan_version_only) {
    if (o.load_engine.empty()) return usage_error("--getPlanVersionOnly needs --loadEngine (it reads an engine file).");
    if (!o.onnx.empty()) return usage_error("--getPlanVersionOnly reads an engine file; it does not take --onnx.");
    return {std::move(o), 0};
  }
  if (o.onnx.empty() == o.load_engine.empty()) return usage_error("Give exactly one of --onnx and --loadEngine.");
  if (!o.save_engine.empty() && o.onnx.empty())
    return usage_error("--saveEngine needs --onnx (there is nothing to build).");
  if (!o.load_engine.empty()) {
    const std::pair<const char*, bool> build_only[] = {{"--minShapes", !o.min_shapes.empty()},
                                                       {"--optShapes", !o.opt_shapes.empty()},
                                                       {"--maxShapes", !o.max_shapes.empty()},
                                                       {"--fp16", o.fp16},
                                                       {"--bf16", o.bf16},
                                                       {"--int8", o.int8},
                                                       {"--fp8", o.fp8},
                                                       {"--best", o.best},
                                                       {"--noTF32", o.no_tf32},
                                                       {"--layerPrecisions", !o.layer_precisions.empty()},
                                                       {"--memPoolSize", !o.mem_pool_size.empty()},
                                                       {"--builderOptimizationLevel", o.builder_optimization_level != -1},
                                                       {"--timingCacheFile", !o.timing_cache_file.empty()},
                                                       {"--avgTiming", o.avg_timing != -1},
                                                       {"--maxTactics", o.max_tactics != -2},
                                                       {"--dumpAfter", !o.dump_after.empty()}};
    for (const auto& [flag, given] : build_only) {
      if (given) return usage_error(std::string(flag) + " is a build option; it has no effect with --loadEngine.");
    }
  }
  if (o.iterations < 1)
    return usage_error("--iterations must be at least 1, got " + std::to_string(o.iterations) + ".");
  if (!(o.warm_up_ms >= 0)) return usage_error("--warmUp must be >= 0 milliseconds.");
  if (!(o.duration_s >= 0)) return usage_error("--duration must be >= 0 seconds.");
  if (!o.mem_pool_size.empty()) {
    auto bytes = parse_mem_pool_size(o.mem_pool_size);
    if (!bytes.ok()) return usage_error(bytes.status().message());
    o.workspace_bytes = *bytes;
  }
  if (o.builder_optimization_level != -1 && (o.builder_optimization_level < 0 || o.builder_optimization_level > 5))
    return usage_error("--builderOptimizationLevel must be 0 to 5, got " +
                       std::to_string(o.builder_optimization_level) + ".");
  if (o.avg_timing != -1 && o.avg_timing < 1)
    return usage_error("--avgTiming must be at least 1, got " + std::to_string(o.avg_timing) + ".");
  if (o.max_tactics != -2 && o.max_tactics < -1)
    return usage_error("--maxTactics must be >= 0 (or -1 for the tuner's heuristic), got " +
                       std::to_string(o.max_tactics) + ".");
  // Contexts are threads with their own buffers: beyond this a typo, not a benchmark.
  constexpr int kMaxStreams = 256;
  if (o.inf_streams < 1 || o.inf_streams > kMaxStreams)
    return usage_error("--infStreams must be 1 to " + std::to_string(kMaxStreams) + ", got " +
                       std::to_string(o.inf_streams) + ".");
  if (o.profile < 0) return usage_error("--profile must be >= 0, got " + std::to_string(o.profile) + ".");
  if (o.avg_runs < 1) return usage_error("--avgRuns must be at least 1, got " + std::to_string(o.avg_runs) + ".");
  if (!percentiles.empty()) {
    auto p = parse_percentiles(percentiles);
    if (!p.ok()) return usage_error(p.status().message());
    o.percentiles = *p;
  }
  for (const auto& [flag, lists] : {std::pair{"--inputIOFormats", &o.input_io_formats},
                                    std::pair{"--outputIOFormats", &o.output_io_formats}}) {
    auto formats = parse_io_formats(*lists, flag);
    if (!formats.ok()) return usage_error(formats.status().message());
  }
  if (o.separate_profile_run && !o.profiling())
    return usage_error("--separateProfileRun needs --dumpProfile or --exportProfile: without a profile there is "
                       "no profiled run to separate.");
  if (o.profiling_verbosity == "none" && (o.dump_layer_info || !o.export_layer_info.empty()))
    return usage_error(std::string(o.dump_layer_info ? "--dumpLayerInfo" : "--exportLayerInfo") +
                       " with --profilingVerbosity=none has nothing to show; use layer_names_only or detailed.");
  if (o.skip_inference && (o.profiling() || o.inf_streams > 1))
    return usage_error("--skipInference runs nothing, so there is nothing to profile or stream.");
  return {std::move(o), 0};
}

Result<uint64_t> parse_mem_pool_size(const std::string& spec) {
  const std::string flag = "--memPoolSize";
  uint64_t workspace = 0;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    std::string entry = spec.substr(pos, end - pos);
    pos = end + 1;
    size_t colon = entry.find(':');
    if (colon == std::string::npos)
      return invalid_argument(flag + ": expected pool:size (e.g. workspace:1024M), got '" + entry + "'");
    std::string pool = entry.substr(0, colon), size = entry.substr(colon + 1);
    if (pool == "dlaSRAM" || pool == "dlaLocalDRAM" || pool == "dlaGlobalDRAM")
      return unsupported(flag + ": pool '" + pool + "' belongs to DLA, which Kiln does not support");
    if (pool == "tacticSharedMem")
      return unsupported(flag + ": pool 'tacticSharedMem' is not supported yet (Kiln has no tactic auto-tuner); "
                         "only 'workspace' is");
    if (pool != "workspace")
      return invalid_argument(flag + ": unknown pool '" + pool + "' (Kiln has 'workspace')");
    double scale = 1 << 20;  // MiB without a suffix, as trtexec
    if (!size.empty()) {
      switch (size.back()) {
        case 'B': scale = 1, size.pop_back(); break;
        case 'K': scale = 1 << 10, size.pop_back(); break;
        case 'M': scale = 1 << 20, size.pop_back(); break;
        case 'G': scale = 1 << 30, size.pop_back(); break;
        default: break;
      }
    }
    double v = 0;
    auto [ptr, ec] = std::from_chars(size.data(), size.data() + size.size(), v);
    if (size.empty() || ec != std::errc() || ptr != size.data() + size.size() || !(v >= 0))
      return invalid_argument(flag + ": bad size in '" + entry +
                              "': expected a non-negative number with an optional B, K, M or G suffix");
    workspace = static_cast<uint64_t>(v * scale);
  }
  return workspace;
}

Result<std::vector<IoFormat>> parse_io_formats(const std::vector<std::string>& lists, const std::string& flag) {
  std::vector<IoFormat> out;
  static const std::set<std::string> kLayouts = {"chw",  "chw2",     "chw4",       "hwc8",     "chw16", "chw32",
                                                 "dhwc8", "cdhw32", "hwc",        "dla_linear", "dla_hwc4", "hwc16",
                                                 "dhwc"};
  for (const auto& list : lists) {
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t end = list.find(',', pos);
      if (end == std::string::npos) end = list.size();
      std::string entry = list.substr(pos, end - pos);
      pos = end + 1;
      size_t colon = entry.find(':');
      if (colon == std::string::npos)
        return invalid_argument(flag + ": expected type:format (e.g. fp32:chw), got '" + entry + "'");
      IoFormat f;
      f.type_text = entry.substr(0, colon);
      f.format = entry.substr(colon + 1);
      static const std::map<std::string, DataType> kTypes = {
          {"fp32", DataType::kFLOAT}, {"fp16", DataType::kHALF},  {"bf16", DataType::kBF16},
          {"int32", DataType::kINT32}, {"int64", DataType::kINT64}, {"int8", DataType::kINT8},
          {"uint8", DataType::kUINT8}, {"bool", DataType::kBOOL},  {"fp8", DataType::kFP8E4M3FN}};
      auto t = kTypes.find(f.type_text);
      if (t == kTypes.end())
        return invalid_argument(flag + ": unknown type '" + f.type_text +
                                "' (fp32, fp16, bf16, int32, int64, int8, uint8, bool, fp8)");
      f.dtype = t->second;
      size_t start = 0;
      while (start <= f.format.size()) {
        size_t plus = f.format.find('+', start);
        if (plus == std::string::npos) plus = f.format.size();
        std::string layout = f.format.substr(start, plus - start);
        if (!kLayouts.count(layout))
          return invalid_argument(flag + ": unknown format '" + layout + "' in '" + entry + "'");
        start = plus + 1;
      }
      out.push_back(std::move(f));
    }
  }
  return out;
}

Result<std::vector<double>> parse_percentiles(const std::string& text) {
  std::vector<double> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string part = text.substr(pos, end - pos);
    pos = end + 1;
    if (!part.empty() && part.back() == '%') part.pop_back();
    double v = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || ec != std::errc() || ptr != part.data() + part.size() || !(v >= 0 && v <= 100))
      return invalid_argument("--percentile: '" + part + "' is not a percentage in [0, 100]");
    out.push_back(v);
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> split_name_value_list(const std::vector<std::string>& lists,
                                                                               const std::string& flag) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& list : lists) {
    size_t pos = 0;
    while (pos <= list.size()) {
      std::string name, value;
      if (pos < list.size() && list[pos] == '\'') {
        size_t close = list.find('\'', pos + 1);
        if (close == std::string::npos || close + 1 >= list.size() || list[close + 1] != ':') {
          return invalid_argument(flag + ": unterminated quoted name in '" + list + "' (expected 'name':value)");
        }
        name = list.substr(pos + 1, close - pos - 1);
        size_t end = list.find(',', close + 2);
        if (end == std::string::npos) end = list.size();
        value = list.substr(close + 2, end - close - 2);
        pos = end + 1;
      } else {
        size_t end = list.find(',', pos);
        if (end == std::string::npos) end = list.size();
        std::string entry = list.substr(pos, end - pos);
        size_t colon = entry.rfind(':');
        if (colon == std::string::npos || colon == 0) {
          return invalid_argument(flag + ": expected name:value, got '" + entry + "'");
        }
        name = entry.substr(0, colon);
        value = entry.substr(colon + 1);
        pos = end + 1;
      }
      out.emplace_back(std::move(name), std::move(value));
    }
  }
  return out;
}

Result<Dims> parse_dims(const std::string& text) {
  Dims dims;
  if (text.empty()) return dims;
  size_t pos = 0;
  while (true) {
    size_t end = text.find_first_of("xX", pos);
    std::string part = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (part.empty() || ec != std::errc() || ptr != part.data() + part.size() || v < 0) {
      return invalid_argument("bad dimensions '" + text +
                              "': expected non-negative integers joined by 'x', e.g. 1x3x224x224");
    }
    dims.push_back(v);
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return dims;
}

Result<std::vector<std::pair<std::string, Dims>>> parse_shape_list(const std::vector<std::string>& lists,
                                                                   const std::string& flag) {
  KILN_ASSIGN_OR_RETURN(auto entries, split_name_value_list(lists, flag));
  std::vector<std::pair<std::string, Dims>> out;
  std::set<std::string> seen;
  for (auto& [name, text] : entries) {
    if (!seen.insert(name).second) return invalid_argument(flag + ": input '" + name + "' is given twice");
    auto dims = parse_dims(text);
    if (!dims.ok()) return dims.status().with_context(flag + " for input '" + name + "'");
    out.emplace_back(name, std::move(dims.value()));
  }
  return out;
}

}  // namespace kiln::cli
