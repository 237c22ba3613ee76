// OnnxParser: reads the model bytes, runs the import pipeline and keeps the errors for the caller.
#include "kiln/onnx_parser.h"

#include <google/protobuf/io/coded_stream.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>

#include "onnx/importer.h"

namespace kiln {
namespace onnx_import {

Status import_model(onnx::ModelProto& model, const std::string& base_dir, ir::Graph& graph,
                    std::vector<ParserError>* errors, ILogger* logger) {
  Diagnostics diag(logger);
  std::unordered_map<std::string, int> opsets;
  upgrade_old_opset(model, diag);
  if (check_opsets(model, &opsets, diag)) {
    // Shape inference first so the graph gets declared shapes; the checker runs last so it can skip nodes
    // Kiln already rejected with a clearer message.
    run_shape_inference(model, diag);
    build_graph(model, opsets, base_dir, graph, diag);
    run_onnx_checker(model, opsets, diag);
  }
  if (errors) {
    auto found = diag.errors();
    errors->insert(errors->end(), found.begin(), found.end());
  }
  return diag.summary();
}

}  // namespace onnx_import

OnnxParser::OnnxParser(NetworkDefinition& network, ILogger& logger) : network_(network), logger_(logger) {}
OnnxParser::~OnnxParser() = default;

namespace {

// Protobuf refuses messages over 2 GiB; parse through a CodedInputStream so the limit is the format's,
// not the default 64 MiB of older protobuf releases.
bool parse_model(const void* data, size_t size, onnx::ModelProto* model) {
  google::protobuf::io::CodedInputStream in(static_cast<const uint8_t*>(data), static_cast<int>(size));
  in.SetTotalBytesLimit(INT_MAX);
  return model->ParseFromCodedStream(&in);
}

Status parse_impl(const void* data, size_t size, const std::string& base_dir, const std::string& source,
                  NetworkDefinition& network, ILogger& logger, std::vector<ParserError>* errors) {
  auto fail = [&](Status st) {
    ParserError e;
    e.description = st.message();
    errors->push_back(e);
    logger.log(ILogger::Severity::kERROR, st.message().c_str());
    return st;
  };
  const std::string what = "failed to parse ONNX protobuf from '" + source + "' (" + std::to_string(size) + " bytes)";
  if (size > static_cast<size_t>(INT_MAX))
    return fail(invalid_model(what + ": protobuf messages cannot exceed 2 GiB; save the weights as external data"));
  onnx::ModelProto model;
  if (!data || !parse_model(data, size, &model)) return fail(invalid_model(what + ": not a valid ModelProto"));
  // Protobuf accepts an empty buffer (and some stray bytes) as a message with every field unset.
  if (!model.has_graph()) return fail(invalid_model(what + ": not a valid ModelProto (it has no graph)"));
  // No exception may leave the library; a tensor too large to hold is the one the checks above cannot rule out.
  try {
    return onnx_import::import_model(model, base_dir, network.graph(), errors, &logger);
  } catch (const std::bad_alloc&) {
    return fail(Status(ErrorCode::kOutOfMemory, "out of memory while importing '" + source + "'"));
  }
}

}  // namespace

Status OnnxParser::parse(const void* data, size_t size, const std::string& base_dir) {
  return parse_impl(data, size, base_dir, "<memory>", network_, logger_, &errors_);
}

Status OnnxParser::parse_from_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    Status st = io_error("cannot open ONNX model '" + path + "': " + std::strerror(errno));
    errors_.push_back(ParserError{"", -1, "", "", 0, st.message()});
    logger_.log(ILogger::Severity::kERROR, st.message().c_str());
    return st;
  }
  std::string bytes(static_cast<size_t>(f.tellg()), '\0');
  f.seekg(0);
  f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    Status st = io_error("reading ONNX model '" + path + "' failed");
    errors_.push_back(ParserError{"", -1, "", "", 0, st.message()});
    return st;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  return parse_impl(bytes.data(), bytes.size(), dir.empty() ? "." : dir, path, network_, logger_, &errors_);
}

}  // namespace kiln
