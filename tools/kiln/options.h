// Command-line options of the kiln tool (trtexec's flag names) and the parsers for their values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::cli {

enum class DeviceChoice { kDefault, kCpu, kCuda };

struct Options {
  std::string onnx;
  std::string save_engine;
  std::string load_engine;
  // Raw "name:dims,..." lists, as given (possibly repeated); parsed by parse_shape_list().
  std::vector<std::string> min_shapes, opt_shapes, max_shapes, shapes;
  std::vector<std::string> load_inputs;
  std::string export_output;
  std::string export_times;
  int64_t iterations = 10;
  double warm_up_ms = 200;
  double duration_s = 3;
  bool verbose = false;
  DeviceChoice device = DeviceChoice::kDefault;
  bool skip_inference = false;
  bool dump_output = false;
  bool no_tf32 = false;
  bool fp16 = false;
  bool bf16 = false;
  bool int8 = false;
  bool use_cuda_graph = false;
  std::string precision_constraints = "none";
  std::vector<std::string> layer_precisions;
  bool no_data_transfers = false;
  std::string dump_after;
  std::string progress = "auto";  // auto | live | plain | none

  // Build options beyond the precisions.
  bool fp8 = false;
  bool best = false;
  std::string mem_pool_size;           // raw --memPoolSize spec; parsed by parse_mem_pool_size()
  uint64_t workspace_bytes = 0;        // from --memPoolSize=workspace:N (0 = not given)
  int builder_optimization_level = -1;  // -1 = not given (the builder's default, 3)
  std::string timing_cache_file;
  int avg_timing = -1;                  // -1 = not given
  int max_tactics = -2;                 // -2 = not given; -1 = the tuner's heuristic
  std::vector<std::string> input_io_formats, output_io_formats;
  std::string profiling_verbosity = "layer_names_only";

  // Inference options.
  int inf_streams = 1;
  bool threads = false;
  bool use_spin_wait = false;
  bool separate_profile_run = false;
  int profile = 0;
  bool get_plan_version_only = false;

  // Reporting options.
  int avg_runs = 10;
  std::vector<double> percentiles = {90, 95, 99};
  bool dump_profile = false;
  std::string export_profile;
  bool dump_layer_info = false;
  std::string export_layer_info;

  // Set by `kiln compare --markAll`, not a flag of the main tool: every tensor that a layer computes from the
  // inputs becomes an output of the build.
  bool mark_all = false;

  bool profiling() const { return dump_profile || !export_profile.empty(); }
  // Whether the profile comes from runs of its own after the timed ones: asked for, or implied by --useCudaGraph
  // (a graph replay has no per-layer events, so the timed runs replay and the profiled ones launch layer by layer).
  bool profile_separately() const { return profiling() && (separate_profile_run || use_cuda_graph); }
};

// What parse_options() decided: run with the options, or exit at once (after --help, --version or an error).
struct ParseOutcome {
  std::optional<Options> options;
  int exit_code = 0;
};

// Prints help/version to stdout and errors to stderr itself, since only the parser knows the option table.
ParseOutcome parse_options(int argc, char** argv);

// One "name:value" entry of a comma-separated list. The name may itself contain ':' (ONNX names such as
// "input:0"), so the split is on the last ':'; a name in single quotes is taken verbatim.
Result<std::vector<std::pair<std::string, std::string>>> split_name_value_list(const std::vector<std::string>& lists,
                                                                               const std::string& flag);

// "1x3x224x224" -> {1,3,224,224}; an empty string is a scalar. Dims must be non-negative integers.
Result<Dims> parse_dims(const std::string& text);

// name -> dims for --shapes/--minShapes/...; a name given twice is an error.
Result<std::vector<std::pair<std::string, Dims>>> parse_shape_list(const std::vector<std::string>& lists,
                                                                   const std::string& flag);

// "workspace:512M" -> bytes. Sizes take a base-2 suffix B, K, M or G; without one they are MiB (trtexec's rule).
Result<uint64_t> parse_mem_pool_size(const std::string& spec);

// "fp32:chw,fp16:chw" -> {(kFLOAT, "chw"), ...}; each entry type:format.
struct IoFormat {
  DataType dtype = DataType::kFLOAT;
  std::string type_text, format;
};
Result<std::vector<IoFormat>> parse_io_formats(const std::vector<std::string>& lists, const std::string& flag);

// "90,95,99" -> {90, 95, 99}; each in [0, 100].
Result<std::vector<double>> parse_percentiles(const std::string& text);

// Prints the option-parsing error the way parse_options does ("[E] ..." and a pointer to --help).
void print_usage_error(const std::string& message);

// Returns an error naming the closest known flag when `token` (a "-x" or "--name[=value]" argument) is not one of
// `known`; nullopt when it is known.
std::optional<std::string> unknown_flag_error(const std::string& token, const std::vector<std::string>& known);

// Levenshtein distance, ignoring case: users mistype trtexec's camelCase more than its letters.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace kiln::cli
