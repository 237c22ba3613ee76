// Developer tool: runs single-node ONNX backend tests straight through the op registry (inference + reference
// compute), bypassing importer, builder and runtime. Prints PASS/FAIL/SKIP per test directory.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "onnx/proto_convert.h"
#include "ops/op.h"

namespace fs = std::filesystem;
using namespace kiln;

static bool read_proto(const fs::path& p, google::protobuf::MessageLite* m) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return m->ParseFromString(ss.str());
}

static std::string compare(const Tensor& got, const Tensor& want) {
  if (got.dtype() != want.dtype())
    return std::string("dtype ") + dtype_name(got.dtype()) + " != expected " + dtype_name(want.dtype());
  if (got.shape() != want.shape()) return "shape " + dims_to_string(got.shape()) + " != expected " + dims_to_string(want.shape());
  double rtol = 1e-3, atol = 1e-5;
  if (want.dtype() == DataType::kHALF || want.dtype() == DataType::kBF16) { rtol = 1e-2; atol = 1e-3; }
  for (int64_t i = 0; i < want.numel(); ++i) {
    double g = got.get_f64(i), w = want.get_f64(i);
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && g == w) continue;
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w)))
      return "element " + std::to_string(i) + ": got " + std::to_string(g) + ", expected " + std::to_string(w);
  }
  return "";
}

int main(int argc, char** argv) {
  int pass = 0, fail = 0, skip = 0;
  for (int a = 1; a < argc; ++a) {
    fs::path dir = argv[a];
    std::string name = dir.filename().string();
    onnx::ModelProto model;
    if (!read_proto(dir / "model.onnx", &model)) { std::cout << "SKIP " << name << ": unreadable model\n"; ++skip; continue; }
    const auto& g = model.graph();
    if (g.node_size() != 1) { std::cout << "SKIP " << name << ": not a single-node test\n"; ++skip; continue; }
    const auto& node = g.node(0);
    int opset = 0;
    for (auto& o : model.opset_import()) if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
    const ops::OpSchema* schema = ops::OpRegistry::instance().find(node.op_type(), node.domain());
    if (!schema) { std::cout << "SKIP " << name << ": operator " << node.op_type() << " not registered\n"; ++skip; continue; }
    Attributes attrs;
    std::string err;
    for (auto& ap : node.attribute()) {
      auto r = onnx_import::attribute_from_proto(ap, dir.string());
      if (!r.ok()) { err = r.status().to_string(); break; }
      attrs.set(ap.name(), r.value());
    }
    if (err.empty()) { auto st = ops::validate_attributes(*schema, attrs); if (!st.ok()) err = st.to_string(); }
    for (auto ds : fs::directory_iterator(dir)) {
      if (!err.empty()) break;
      if (!ds.is_directory() || ds.path().filename().string().rfind("test_data_set", 0) != 0) continue;
      std::map<std::string, Tensor> feeds;
      for (int i = 0; i < g.input_size(); ++i) {
        onnx::TensorProto tp;
        fs::path p = ds.path() / ("input_" + std::to_string(i) + ".pb");
        if (!read_proto(p, &tp)) { err = "cannot read " + p.string(); break; }
        auto t = onnx_import::tensor_from_proto(tp, dir.string());
        if (!t.ok()) { err = t.status().to_string(); break; }
        feeds[g.input(i).name()] = t.value();
      }
      if (!err.empty()) break;
      std::vector<const Tensor*> ins;
      std::vector<ops::TensorInfo> infos(node.input_size());
      std::vector<const ops::TensorInfo*> info_ptrs;
      for (int i = 0; i < node.input_size(); ++i) {
        if (node.input(i).empty() || !feeds.count(node.input(i))) { ins.push_back(nullptr); info_ptrs.push_back(nullptr); continue; }
        const Tensor& t = feeds[node.input(i)];
        ins.push_back(&t);
        infos[i].dtype = t.dtype();
        infos[i].shape = ops::shape_from_dims(t.shape());
        infos[i].constant = &t;
        info_ptrs.push_back(&infos[i]);
      }
      ops::InferContext ictx(attrs, opset, info_ptrs, node.output_size());
      Status st = schema->infer(ictx);
      if (!st.ok()) { err = "infer: " + st.to_string(); break; }
      std::vector<Tensor> outs(node.output_size());
      ops::ComputeContext cctx(attrs, opset, ins, &outs);
      st = schema->compute(cctx);
      if (!st.ok()) { err = "compute: " + st.to_string(); break; }
      for (int i = 0; i < g.output_size() && err.empty(); ++i) {
        onnx::TensorProto tp;
        read_proto(ds.path() / ("output_" + std::to_string(i) + ".pb"), &tp);
        auto want = onnx_import::tensor_from_proto(tp, dir.string());
        if (!want.ok()) { err = want.status().to_string(); break; }
        int k = i;
        for (int j = 0; j < node.output_size(); ++j) if (node.output(j) == g.output(i).name()) k = j;
        const auto& info = ictx.output(k);
        if (info.dtype != outs[k].dtype()) err = std::string("inferred dtype ") + dtype_name(info.dtype) + " != computed " + dtype_name(outs[k].dtype());
        else if (info.shape.size() != outs[k].shape().size()) err = "inferred rank " + std::to_string(info.shape.size()) + " != computed " + std::to_string(outs[k].rank());
        else {
          for (size_t k2 = 0; k2 < info.shape.size(); ++k2)
            if (info.shape[k2].is_static() && info.shape[k2].value != outs[k].shape()[k2]) err = "inferred shape " + ops::shape_to_string(info.shape) + " != computed " + dims_to_string(outs[k].shape());
        }
        if (err.empty()) { std::string c = compare(outs[k], want.value()); if (!c.empty()) err = "output " + std::to_string(i) + ": " + c; }
      }
    }
    if (err.empty()) { std::cout << "PASS " << name << "\n"; ++pass; }
    else { std::cout << "FAIL " << name << ": " << err << "\n"; ++fail; }
  }
  std::cout << "passed " << pass << ", failed " << fail << ", skipped " << skip << "\n";
  return 0;
}
