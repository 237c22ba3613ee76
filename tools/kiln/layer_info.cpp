// Layer information from the engine plan (see layer_info.h).
#include "layer_info.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/concat_inplace.h"
#include "runtime/device_backend.h"
#include "runtime/engine_plan.h"

namespace kiln::cli {
namespace {

using Json = nlohmann::ordered_json;

// TensorRT's spelling of the common types; the rest keep Kiln's names.
std::string type_label(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "FP32";
    case DataType::kHALF: return "FP16";
    case DataType::kBF16: return "BF16";
    case DataType::kINT8: return "Int8";
    case DataType::kUINT8: return "UInt8";
    case DataType::kINT32: return "Int32";
    case DataType::kINT64: return "Int64";
    case DataType::kBOOL: return "Bool";
    default: return dtype_name(t);
  }
}

Json dims_of(const runtime::PlanValue& v) {
  if (!v.rank_known) return nullptr;
  Json d = Json::array();
  for (const auto& dim : v.shape) d.push_back(dim.is_static() ? dim.value : -1);
  return d;
}

std::string dims_text(const runtime::PlanValue& v) {
  if (!v.rank_known) return "?";
  std::string s;
  for (const auto& dim : v.shape) s += (s.empty() ? "" : "x") + (dim.is_static() ? std::to_string(dim.value) : dim.sym.empty() ? "?" : dim.sym);
  return s.empty() ? "scalar" : s;
}

struct LayerPlacement {
  std::set<std::string> host;  // CUDA engines: layers without a GPU kernel
  bool gpu = false;
};

Result<LayerPlacement> placement(const Engine& engine) {
  LayerPlacement p;
  if (engine.backend() == Backend::kCPU) return p;
  p.gpu = true;
  auto backend = runtime::device_backend(engine.backend());
  if (!backend.ok()) return backend.status().with_context("layer placement");
  for (auto& n : (*backend)->host_nodes(engine.plan())) p.host.insert(n);
  return p;
}

std::string layer_type(const runtime::PlanNode& n) { return n.domain.empty() ? n.op_type : n.domain + "::" + n.op_type; }

// The original nodes a fused layer stands for (empty for a layer the builder kept as it was).
std::vector<std::string> fused_from(const runtime::PlanNode& n) {
  const Attribute* a = n.attrs.find(ops::kFusedFromAttr);
  return a && a->type() == AttrType::kSTRINGS ? a->strings() : std::vector<std::string>{};
}

std::string tactic(const runtime::PlanNode& n) {
  const Attribute* a = n.attrs.find("kiln.tactic");
  return a && a->type() == AttrType::kSTRING ? a->s() : "";
}

// A Concat concat_elimination marked: on the GPU its producers write into their slices of its output, so it
// copies nothing, at shapes where those slices are contiguous (see runtime/concat_inplace.h).
bool in_place(const runtime::PlanNode& n, bool gpu) {
  const Attribute* a = n.attrs.find(runtime::kInPlaceAttr);
  return gpu && a && a->type() == AttrType::kINT && a->i() == 1;
}

}  // namespace

Result<std::string> layer_info_json(const Engine& engine, const std::string& verbosity, const LayerProfiler* profile) {
  const runtime::EnginePlan& plan = engine.plan();
  KILN_ASSIGN_OR_RETURN(LayerPlacement where, placement(engine));
  const auto shares = profile ? layer_shares(*profile) : std::unordered_map<std::string, LayerShare>{};
  Json layers = Json::array();
  for (const auto& n : plan.nodes) {
    if (verbosity != "detailed") {
      layers.push_back(n.name);
      continue;
    }
    const bool on_gpu = where.gpu && !where.host.count(n.name);
    auto tensors = [&](const std::vector<int>& ids) {
      Json list = Json::array();
      for (int id : ids) {
        if (id < 0) continue;
        const auto& v = plan.values[id];
        list.push_back({{"Name", v.name},
                        {"Location", where.gpu ? "Device" : "Host"},
                        {"Dimensions", dims_of(v)},
                        {"Format/Datatype", "Row major linear " + type_label(v.dtype)}});
      }
      return list;
    };
    // The type the layer computes in: its output's, except for a kiln layer that stores another type (`to`: a
    // LayerNorm writing the float32 network output, Unpad converting a GEMM's rows), which computes in its input's.
    const bool stores_other = n.domain == "kiln" && n.attrs.has("to") && !n.inputs.empty() && n.inputs[0] >= 0;
    const std::string precision = stores_other ? type_label(plan.values[n.inputs[0]].dtype)
                                  : !n.outputs.empty() && n.outputs[0] >= 0 ? type_label(plan.values[n.outputs[0]].dtype)
                                                                            : "";
    Json layer = {{"Name", n.name},
                  {"LayerType", layer_type(n)},
                  {"Inputs", tensors(n.inputs)},
                  {"Outputs", tensors(n.outputs)},
                  {"Precision", precision},
                  {"Backend", backend_name(engine.backend())},
                  {"RunsOn", on_gpu ? "GPU" : "Host"}};
    if (auto from = fused_from(n); !from.empty()) layer["FusedFrom"] = from;
    if (auto t = tactic(n); !t.empty()) layer["TacticName"] = t;
    if (in_place(n, on_gpu)) layer["InPlace"] = "producers write into its output; no copy where slices are contiguous";
    if (auto it = shares.find(n.name); it != shares.end()) {
      layer["AverageMs"] = it->second.average_ms;
      layer["TimePercent"] = it->second.percent;
    }
    layers.push_back(std::move(layer));
  }
  Json bindings = Json::array();
  for (const auto& io : plan.io) bindings.push_back(io.name);
  return Json{{"Layers", layers}, {"Bindings", bindings}}.dump(2) + "\n";
}

Status print_layer_info(const Engine& engine, const std::string& verbosity, const LayerProfiler* profile) {
  const runtime::EnginePlan& plan = engine.plan();
  KILN_ASSIGN_OR_RETURN(LayerPlacement where, placement(engine));
  const auto shares = profile ? layer_shares(*profile) : std::unordered_map<std::string, LayerShare>{};
  std::printf("=== Layer Information (%zu layers) ===\n", plan.nodes.size());
  for (const auto& n : plan.nodes) {
    if (verbosity != "detailed") {
      std::printf("%s\n", n.name.c_str());
      continue;
    }
    auto list = [&](const std::vector<int>& ids) {
      std::string s;
      for (int id : ids) {
        if (id < 0) continue;
        const auto& v = plan.values[id];
        s += (s.empty() ? "" : ", ") + v.name + " " + type_label(v.dtype) + " " + dims_text(v);
      }
      return s;
    };
    const bool on_gpu = where.gpu && !where.host.count(n.name);
    const std::string precision =
        !n.outputs.empty() && n.outputs[0] >= 0 ? type_label(plan.values[n.outputs[0]].dtype) : "-";
    std::string extra;
    if (auto from = fused_from(n); !from.empty()) {
      extra += "; fuses";
      for (const auto& f : from) extra += " " + f;
    }
    if (auto t = tactic(n); !t.empty()) extra += "; tactic " + t;
    if (in_place(n, on_gpu))
      extra += "; in place (producers write into its output; no copy where slices are contiguous)";
    if (auto it = shares.find(n.name); it != shares.end()) {
      char t[96];
      std::snprintf(t, sizeof t, "; %.6f ms a run (%.1f%% of the profiled time)", it->second.average_ms,
                    it->second.percent);
      extra += t;
    }
    std::printf("%s [%s] %s: (%s) -> (%s), runs on the %s%s\n", n.name.c_str(), layer_type(n).c_str(),
                precision.c_str(), list(n.inputs).c_str(), list(n.outputs).c_str(),
                on_gpu ? "GPU" : where.gpu ? "host (no GPU kernel)" : "host", extra.c_str());
  }
  std::string bindings;
  for (const auto& io : plan.io) bindings += (bindings.empty() ? "" : ", ") + io.name;
  std::printf("Bindings: %s\n", bindings.c_str());
  return Status::Ok();
}

}  // namespace kiln::cli
