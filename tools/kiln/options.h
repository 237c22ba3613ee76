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

// Levenshtein distance, ignoring case: users mistype trtexec's camelCase more than its letters.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace kiln::cli
