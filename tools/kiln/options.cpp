// The kiln option table (CLI11), unknown-flag suggestions, and the parsers for shape and file lists.
#include "options.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <set>

#include "kiln/runtime.h"

namespace kiln::cli {
namespace {

constexpr int kUsageExitCode = 2;

void print_usage_error(const std::string& message) {
  std::fprintf(stderr, "[E] %s\n", message.c_str());
  std::fprintf(stderr, "[E] Run 'kiln --help' for the list of options.\n");
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
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

bool looks_like_number(const std::string& s) {
  return s.size() > 1 && s[0] == '-' && (std::isdigit(static_cast<unsigned char>(s[1])) || s[1] == '.');
}

}  // namespace

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
  bool show_version = false;

  CLI::App app{
      "kiln: build an optimized engine from an ONNX model, run it and report its performance.\n"
      "Flags follow trtexec's names and take the form --flag=value.",
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
  app.add_flag("--int8", o.int8, "Allow INT8 kernels (needs --device=cuda)");
  app.add_option("--dumpAfter", o.dump_after,
                 "Print the graph after the named optimization pass ('all' for every pass)")
      ->type_name("PASS");
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
  app.add_option("--precisionConstraints", o.precision_constraints,
                 "none|prefer|obey: what --layerPrecisions does when a layer has no kernel of that type "
                 "(none/prefer: keep float32 with a warning; obey: fail the build)")
      ->check(CLI::IsMember({"none", "prefer", "obey"}));
  app.add_option("--layerPrecisions", o.layer_precisions,
                 "Per-layer precision, e.g. --layerPrecisions=conv1:fp32,fc:fp16 (CUDA backend)")
      ->type_name("SPEC");
  app.add_flag("--useCudaGraph", o.use_cuda_graph, "Capture the engine in a CUDA graph and replay it (CUDA backend)");
  app.add_flag("--noDataTransfers", o.no_data_transfers,
               "Leave host-device copies out of the timed runs (CUDA backend)");
  app.add_flag("--skipInference", o.skip_inference, "Build (or load) the engine and stop");
  close_group("Inference");

  app.add_flag("--dumpOutput", o.dump_output, "Print the output tensors of the first inference");
  app.add_option("--exportOutput", o.export_output,
                 "Write outputs as JSON: [{\"name\", \"dimensions\": \"AxB\", \"values\": [...]}]")
      ->type_name("FILE");
  app.add_option("--exportTimes", o.export_times, "Write the timing of every timed inference as JSON")
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
      "  kiln --loadEngine=model.engine --shapes=x:4x3x224x224 --loadInputs=x:x.bin --exportOutput=out.json");

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
                                                       {"--noTF32", o.no_tf32},
                                                       {"--dumpAfter", !o.dump_after.empty()}};
    for (const auto& [flag, given] : build_only) {
      if (given) return usage_error(std::string(flag) + " is a build option; it has no effect with --loadEngine.");
    }
  }
  if (o.iterations < 1)
    return usage_error("--iterations must be at least 1, got " + std::to_string(o.iterations) + ".");
  if (!(o.warm_up_ms >= 0)) return usage_error("--warmUp must be >= 0 milliseconds.");
  if (!(o.duration_s >= 0)) return usage_error("--duration must be >= 0 seconds.");
  return {std::move(o), 0};
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
