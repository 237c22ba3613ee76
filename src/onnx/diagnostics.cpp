// Import diagnostics: ParserError formatting and the one summary Status that lists every problem.
#include "onnx/importer.h"

namespace kiln {

static std::string display_domain(const std::string& d) { return d.empty() ? "ai.onnx" : d; }

std::string ParserError::to_string() const {
  if (node_index < 0 && node_name.empty()) return description;
  return "node '" + node_name + "' (index " + std::to_string(node_index) + ", " + op_type + "): " + description;
}

namespace onnx_import {

void Diagnostics::model_error(ErrorCode code, std::string description) {
  ParserError e;
  e.description = std::move(description);
  if (logger_) logger_->log(ILogger::Severity::kERROR, e.to_string().c_str());
  entries_.push_back({code, false, std::move(e)});
}

void Diagnostics::node_error(ErrorCode code, const NodeRef& node, std::string description) {
  ParserError e{node.name, node.index, node.op_type, node.domain, node.opset, std::move(description)};
  if (logger_) logger_->log(ILogger::Severity::kERROR, e.to_string().c_str());
  flagged_nodes_.insert(node.index);
  entries_.push_back({code, false, std::move(e)});
}

void Diagnostics::unsupported_node(const NodeRef& node, std::string reason) {
  std::string d = "op_type '" + node.op_type + "', domain '" + display_domain(node.domain) + "', opset " +
                  std::to_string(node.opset) + " is not supported";
  if (!reason.empty()) d += " (" + reason + ")";
  ParserError e{node.name, node.index, node.op_type, node.domain, node.opset, std::move(d)};
  if (logger_) logger_->log(ILogger::Severity::kERROR, e.to_string().c_str());
  flagged_nodes_.insert(node.index);
  entries_.push_back({ErrorCode::kUnsupported, true, std::move(e)});
}

void Diagnostics::warning(const std::string& message) {
  if (logger_) logger_->log(ILogger::Severity::kWARNING, message.c_str());
}

void Diagnostics::verbose(const std::string& message) {
  if (logger_) logger_->log(ILogger::Severity::kVERBOSE, message.c_str());
}

std::vector<ParserError> Diagnostics::errors() const {
  std::vector<ParserError> r;
  for (auto& e : entries_) r.push_back(e.error);
  return r;
}

Status Diagnostics::summary() const {
  if (entries_.empty()) return Status::Ok();
  std::string unsupported_lines, other_lines;
  int num_unsupported = 0, num_other = 0;
  // Invalid models outrank unsupported ones: fixing the model comes before asking for an operator.
  ErrorCode code = ErrorCode::kUnsupported;
  for (auto& e : entries_) {
    const ParserError& p = e.error;
    if (e.unsupported_op) {
      ++num_unsupported;
      unsupported_lines += "\n  node '" + p.node_name + "' (index " + std::to_string(p.node_index) + "): op_type '" +
                           p.op_type + "', domain '" + display_domain(p.domain) + "', opset " + std::to_string(p.opset);
      auto reason = p.description.find(" is not supported (");
      if (reason != std::string::npos) unsupported_lines += p.description.substr(reason + 17);
    } else {
      ++num_other;
      other_lines += "\n  " + p.to_string();
      if (e.code != ErrorCode::kUnsupported) code = e.code;
    }
  }
  if (num_other == 1 && num_unsupported == 0) return Status(code, entries_.front().error.to_string());
  std::string msg =
      "ONNX import failed with " + std::to_string(entries_.size()) + (entries_.size() == 1 ? " error" : " errors");
  if (num_unsupported)
    msg += "\n" + std::to_string(num_unsupported) + " unsupported node" + (num_unsupported == 1 ? "" : "s") +
           " (Kiln has no definition for these operators):" + unsupported_lines;
  if (num_other)
    msg += "\n" + std::to_string(num_other) + " other error" + (num_other == 1 ? "" : "s") + ":" + other_lines;
  return Status(code, msg);
}

}  // namespace onnx_import
}  // namespace kiln
