// Internal interface of the ONNX importer: diagnostics collection, model-level checks and graph construction.
#pragma once

#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/graph.h"
#include "kiln/logger.h"
#include "kiln/onnx_parser.h"
#include "kiln/status.h"
#include "onnx/onnx_pb.h"

namespace kiln::onnx_import {

// Oldest ai.onnx opset Kiln's operator definitions cover; older models predate broadcasting rules and
// attribute layouts the op library assumes.
constexpr int kMinOnnxOpset = 7;

// Where a problem was found; index -1 means the model as a whole.
struct NodeRef {
  std::string name;
  int index = -1;
  std::string op_type;
  std::string domain;  // "" for ai.onnx
  int opset = 0;
};

// Collects every problem an import finds so the caller sees all of them at once, then folds them into
// one summary Status. Unsupported operators are kept apart because users act on that list as a whole.
class Diagnostics {
 public:
  explicit Diagnostics(ILogger* logger) : logger_(logger) {}
  void model_error(ErrorCode code, std::string description);
  void node_error(ErrorCode code, const NodeRef& node, std::string description);
  // A node whose operator Kiln has no definition for; `reason` is appended to its line when set.
  void unsupported_node(const NodeRef& node, std::string reason = "");
  void warning(const std::string& message);
  void verbose(const std::string& message);

  bool has_errors() const { return !entries_.empty(); }
  bool node_has_error(int index) const { return flagged_nodes_.count(index) != 0; }
  Status summary() const;
  std::vector<ParserError> errors() const;

 private:
  struct Entry {
    ErrorCode code;
    bool unsupported_op;
    ParserError error;
  };
  std::vector<Entry> entries_;
  std::set<int> flagged_nodes_;
  ILogger* logger_;
};

// "ai.onnx" and "" name the same domain; Kiln keeps "".
inline std::string normalize_domain(const std::string& d) { return d == "ai.onnx" ? std::string() : d; }
// Newest ai.onnx opset that the linked ONNX library has schemas (checker, shape inference) for.
int newest_known_onnx_opset();

// Upgrades an ai.onnx opset 1-6 model to opset 7 in place with the ONNX version converter (warns on failure).
void upgrade_old_opset(onnx::ModelProto& model, Diagnostics& diag);
// Reads opset_import into `opsets` (keyed by normalized domain) and enforces the ai.onnx opset range.
// Returns false when the model cannot be imported at all (errors are in diag).
bool check_opsets(const onnx::ModelProto& model, std::unordered_map<std::string, int>* opsets, Diagnostics& diag);
// Runs ONNX's checker; complaints Kiln handles itself are logged, the rest become errors.
void run_onnx_checker(const onnx::ModelProto& model, const std::unordered_map<std::string, int>& opsets,
                      Diagnostics& diag);
// ONNX shape inference: adds value_info entries to the model. Failures only cost declared shapes.
void run_shape_inference(onnx::ModelProto& model, Diagnostics& diag);
// Builds the IR graph from the (checked, shape-inferred) model.
void build_graph(const onnx::ModelProto& model, const std::unordered_map<std::string, int>& opsets,
                 const std::string& base_dir, ir::Graph& graph, Diagnostics& diag);

// The whole import: checks, shape inference and graph construction. Takes the model mutably because ONNX
// shape inference writes its results into value_info (copying would double the memory of large models).
// Each problem is appended to *errors (when given); the Status summarizes them all.
Status import_model(onnx::ModelProto& model, const std::string& base_dir, ir::Graph& graph,
                    std::vector<ParserError>* errors, ILogger* logger = nullptr);

}  // namespace kiln::onnx_import
