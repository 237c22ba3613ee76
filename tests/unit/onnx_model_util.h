// Helpers for end-to-end tests that build ONNX models with the protobuf API and run them through the public
// pipeline (OnnxParser -> Builder -> engine bytes -> Runtime -> infer), sequences and optionals included.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine_test_util.h"  // host_f32
#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/onnx_parser.h"
#include "kiln/runtime.h"
#include "onnx/onnx_pb.h"
#include "onnx/proto_convert.h"

namespace kiln::test {

class SilentLogger : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

inline onnx::ModelProto onnx_model(int opset) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(opset);
  m.mutable_graph()->set_name("model");
  return m;
}

inline void import_opset(onnx::ModelProto& m, const std::string& domain, int version) {
  auto* imp = m.add_opset_import();
  imp->set_domain(domain);
  imp->set_version(version);
}

inline void tensor_type(onnx::TypeProto* t, int elem, const std::vector<int64_t>& dims) {
  auto* tt = t->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (auto d : dims) {
    auto* dim = shape->add_dim();
    if (d >= 0) dim->set_dim_value(d);
  }
}

// kind: "tensor", "seq", "optional", "optional_seq"; dims -1 are unknown.
inline onnx::TypeProto value_type(const std::string& kind, int elem, const std::vector<int64_t>& dims) {
  onnx::TypeProto t;
  if (kind == "tensor")
    tensor_type(&t, elem, dims);
  else if (kind == "seq")
    tensor_type(t.mutable_sequence_type()->mutable_elem_type(), elem, dims);
  else if (kind == "optional")
    tensor_type(t.mutable_optional_type()->mutable_elem_type(), elem, dims);
  else
    tensor_type(t.mutable_optional_type()->mutable_elem_type()->mutable_sequence_type()->mutable_elem_type(), elem,
                dims);
  return t;
}

inline void add_graph_input(onnx::GraphProto* g, const std::string& name, const onnx::TypeProto& t) {
  auto* vi = g->add_input();
  vi->set_name(name);
  *vi->mutable_type() = t;
}

inline void add_graph_output(onnx::GraphProto* g, const std::string& name, const onnx::TypeProto& t) {
  auto* vi = g->add_output();
  vi->set_name(name);
  *vi->mutable_type() = t;
}

inline onnx::NodeProto* add_onnx_node(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& ins,
                                      const std::vector<std::string>& outs, const std::string& domain = "") {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_domain(domain);
  n->set_name(op + "_" + std::to_string(g->node_size()));
  for (auto& i : ins) n->add_input(i);
  for (auto& o : outs) n->add_output(o);
  return n;
}

inline void set_attr_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

inline void set_attr_string(onnx::NodeProto* n, const std::string& name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

inline void set_attr_strings(onnx::NodeProto* n, const std::string& name, const std::vector<std::string>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRINGS);
  for (auto& s : v) a->add_strings(s);
}

inline void set_attr_graph(onnx::NodeProto* n, const std::string& name, const onnx::GraphProto& body) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = body;
}

inline void add_int_constant(onnx::GraphProto* g, const std::string& out, int64_t v) {
  auto* n = add_onnx_node(g, "Constant", {}, {out});
  auto* a = n->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(onnx::TensorProto::INT64);
  a->mutable_t()->add_int64_data(v);
}

// Parses, builds (with the config as `configure` leaves it; the defaults without one) and deserializes the model;
// errors land in *status (with the parser's first error detail).
inline std::unique_ptr<Engine> build_onnx_engine(const onnx::ModelProto& m, Status* status,
                                                 const std::function<void(BuilderConfig&)>& configure = {}) {
  static SilentLogger quiet;
  std::string bytes;
  m.SerializeToString(&bytes);
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  *status = parser.parse(bytes.data(), bytes.size());
  if (!status->ok()) {
    if (parser.num_errors() > 0) *status = Status(status->code(), parser.get_error(0).description);
    return nullptr;
  }
  auto config = builder.create_builder_config();
  if (configure) configure(*config);
  auto blob = builder.build_serialized_network(*network, *config);
  if (!blob.ok()) {
    *status = blob.status();
    return nullptr;
  }
  Runtime rt(quiet);
  auto engine = rt.deserialize_engine(blob->data(), blob->size());
  if (!engine.ok()) {
    *status = engine.status();
    return nullptr;
  }
  return std::move(engine).value();
}

// The model built for `backend` with TF32 off (FP32 layers compare tightly) and `flags` set; null, with a test
// failure naming why, when any step fails.
inline std::unique_ptr<Engine> build_onnx_engine(const onnx::ModelProto& m, Backend backend,
                                                 const std::vector<BuilderFlag>& flags = {}) {
  Status st;
  auto engine = build_onnx_engine(m, &st, [&](BuilderConfig& c) {
    c.set_backend(backend);
    c.clear_flag(BuilderFlag::kTF32);
    for (BuilderFlag f : flags) c.set_flag(f);
  });
  EXPECT_TRUE(engine) << st.message();
  return engine;
}

inline HostTensor host_sequence(DataType dt, std::vector<HostTensor> elements) {
  HostTensor t;
  t.kind = ValueKind::kSEQUENCE;
  t.dtype = dt;
  t.elements = std::move(elements);
  return t;
}

template <typename T>
std::vector<T> host_values(const HostTensor& t) {
  std::vector<T> v(t.data.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

using NamedOutputs = std::map<std::string, HostTensor>;

inline NamedOutputs run_engine(const Engine& engine, const std::vector<std::pair<std::string, HostTensor>>& inputs) {
  auto ctx = engine.create_execution_context();
  auto r = ctx->infer(inputs);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  NamedOutputs out;
  if (r.ok())
    for (auto& [name, t] : *r) out[name] = t;
  return out;
}

// The graph an ONNX file imports to (parsed by OnnxParser into a network, cloned out of it); null, with a test
// failure naming the parser's message, when it does not import.
inline std::unique_ptr<ir::Graph> import_onnx_file(const std::string& path) {
  SilentLogger quiet;
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  Status st = parser.parse_from_file(path);
  EXPECT_TRUE(st.ok()) << path << ": " << st.message();
  return st.ok() ? network->graph().clone() : nullptr;
}

// A TensorProto file (an ONNX test's input_N.pb / output_N.pb) as a Tensor; a test failure where it does not read.
inline Tensor read_tensor_pb(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  onnx::TensorProto tp;
  EXPECT_TRUE(tp.ParseFromString(ss.str())) << p;
  auto t = onnx_import::tensor_from_proto(tp, p.parent_path().string());
  EXPECT_TRUE(t.ok()) << p;
  return t.ok() ? std::move(t).value() : Tensor();
}

}  // namespace kiln::test
