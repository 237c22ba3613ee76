// OnnxParser: fills a NetworkDefinition from an ONNX model (file or bytes).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/logger.h"
#include "kiln/network.h"
#include "kiln/status.h"

namespace kiln {

struct ParserError {
  std::string node_name;  // empty for model-level errors
  int node_index = -1;
  std::string op_type;
  std::string domain;
  int opset = 0;
  std::string description;
  std::string to_string() const;
};

class OnnxParser {
 public:
  OnnxParser(NetworkDefinition& network, ILogger& logger = default_logger());
  ~OnnxParser();
  // Both return one Status that summarizes every error (each unsupported node is listed); the individual
  // errors stay available through num_errors()/get_error(). External-data files are resolved against
  // base_dir (parse) or the model's directory (parse_from_file).
  Status parse_from_file(const std::string& path);
  Status parse(const void* data, size_t size, const std::string& base_dir = ".");
  int num_errors() const { return static_cast<int>(errors_.size()); }
  const ParserError& get_error(int i) const { return errors_.at(i); }
  void clear_errors() { errors_.clear(); }

 private:
  NetworkDefinition& network_;
  ILogger& logger_;
  std::vector<ParserError> errors_;
};

}  // namespace kiln
