// Engine writer: ir::Graph + BuilderConfig -> engine file bytes (see common/engine_format.h).
#include "builder/engine_writer.h"

#include <unordered_map>

#include "common/engine_format.h"
#include "common/version.h"
#include "runtime/device_backend.h"

namespace kiln::builder {

namespace fmt = engine_format;

namespace {

Result<std::vector<uint8_t>> write_graph(const ir::Graph& graph, const BuilderConfig& config, bool nested);

// Each IR body becomes a nested engine file of its own; a body's inputs are its formal inputs, then its captures.
Status serialize_subgraphs(const ir::Node& n, const BuilderConfig& config, Attributes* attrs) {
  for (auto& [name, body] : ir::graph_attrs(n)) {
    auto bytes = write_graph(body->body(), config, /*nested=*/true);
    if (!bytes.ok()) return bytes.status().with_context("node '" + n.name + "' (" + n.op_type + "), subgraph '" + name + "'");
    attrs->set(name, std::shared_ptr<const Subgraph>(
                         std::make_shared<fmt::SerializedSubgraph>(std::move(bytes).value(), body->captures())));
  }
  return Status::Ok();
}

// A nested graph (a subgraph body) may have inputs of unknown rank and has no optimization profiles.
Result<std::vector<uint8_t>> write_graph(const ir::Graph& graph, const BuilderConfig& config, bool nested) {
  try {
    fmt::EngineFile file;
    std::vector<const Tensor*> weights;
    std::unordered_map<const ir::Value*, int32_t> ids;
    std::unordered_map<const ir::Value*, bool> is_input;
    for (const ir::Value* v : graph.inputs()) is_input[v] = true;

    // Only values that nodes or I/O touch are written, numbered in first-use order.
    auto id_of = [&](const ir::Value* v) -> Result<int32_t> {
      auto it = ids.find(v);
      if (it != ids.end()) return it->second;
      fmt::ValueRecord rec;
      rec.name = v->name;
      rec.kind = v->kind;
      rec.dtype = v->dtype;
      rec.rank_known = v->rank_known;
      rec.shape = v->shape;
      const Tensor* data = nullptr;
      if (v->is_constant() && !is_input.count(v)) {  // an input with an initializer stays an input
        const Tensor& t = *v->constant;
        if (t.dtype() != v->dtype)
          return internal_error("constant '" + v->name + "' holds " + dtype_name(t.dtype()) + " data but is typed " +
                                dtype_name(v->dtype));
        rec.is_constant = true;
        rec.rank_known = true;
        rec.shape = ops::shape_from_dims(t.shape());  // the data is the authority on a constant's shape
        data = &t;
      }
      int32_t id = static_cast<int32_t>(file.values.size());
      file.values.push_back(std::move(rec));
      weights.push_back(data);
      ids[v] = id;
      return id;
    };

    for (const ir::Value* v : graph.inputs()) {
      KILN_ASSIGN_OR_RETURN(int32_t id, id_of(v));
      if (!v->rank_known && !nested && v->kind == ValueKind::kTENSOR)
        return invalid_model("network input '" + v->name + "' has no known rank");
      file.io.push_back({id, TensorIOMode::kINPUT});
    }
    for (const auto& n : graph.nodes()) {
      fmt::NodeRecord rec;
      rec.name = n->name;
      rec.op_type = n->op_type;
      rec.domain = n->domain;
      rec.opset = n->opset ? n->opset : graph.opset();
      rec.attrs = n->attrs;
      KILN_RETURN_IF_ERROR(serialize_subgraphs(*n, config, &rec.attrs));
      for (const ir::Value* v : n->inputs) {
        if (!v) {
          rec.inputs.push_back(-1);
          continue;
        }
        KILN_ASSIGN_OR_RETURN(int32_t id, id_of(v));
        rec.inputs.push_back(id);
      }
      for (const ir::Value* v : n->outputs) {
        KILN_ASSIGN_OR_RETURN(int32_t id, id_of(v));
        rec.outputs.push_back(id);
      }
      file.nodes.push_back(std::move(rec));
    }
    std::unordered_map<const ir::Value*, bool> produced;
    for (const auto& n : graph.nodes())
      for (const ir::Value* v : n->outputs) produced[v] = true;
    for (const ir::Value* v : graph.outputs()) {
      if (is_input.count(v))
        return invalid_model("network output '" + v->name + "' is also a network input; add an Identity between them");
      if (!produced.count(v) && !v->is_constant())
        return invalid_model("network output '" + v->name + "' is not produced by any node");
      KILN_ASSIGN_OR_RETURN(int32_t id, id_of(v));
      for (auto& io : file.io)
        if (io.value == id) return invalid_model("network output '" + v->name + "' is listed twice");
      file.io.push_back({id, TensorIOMode::kOUTPUT});
    }

    for (size_t p = 0; !nested && p < config.profiles().size(); ++p) {
      fmt::ProfileRecord rec;
      for (const auto& [name, b] : config.profiles()[p].shapes()) {
        const ir::Value* input = nullptr;
        for (const ir::Value* v : graph.inputs())
          if (v->name == name) input = v;
        if (!input)
          return invalid_argument("optimization profile " + std::to_string(p) + " names '" + name +
                                  "', which is not a network input");
        if (b.min.size() != input->shape.size())
          return invalid_argument("optimization profile " + std::to_string(p) + " gives input '" + name + "' rank " +
                                  std::to_string(b.min.size()) + " but the input has rank " +
                                  std::to_string(input->shape.size()));
        rec.push_back({ids.at(input), b.min, b.opt, b.max});
      }
      file.profiles.push_back(std::move(rec));
    }

    file.header.backend = config.backend();
    file.header.device = config.backend() == Backend::kCPU ? fmt::host_device_string() : backend_name(config.backend());
    if (config.backend() != Backend::kCPU) {
      // An engine is built for one GPU and one set of libraries; the loader checks them against these.
      KILN_ASSIGN_OR_RETURN(runtime::DeviceBackend * backend, runtime::device_backend(config.backend()));
      KILN_ASSIGN_OR_RETURN(runtime::DeviceInfo dev, backend->device_info());
      file.header.device = dev.name;
      file.metadata[runtime::kMetaGpuName] = dev.name;
      file.metadata[runtime::kMetaGpuCc] = std::to_string(dev.cc_major) + "." + std::to_string(dev.cc_minor);
      file.metadata[runtime::kMetaCudaRuntime] = dev.cuda_runtime;
      file.metadata[runtime::kMetaCublasLt] = dev.cublaslt;
      file.metadata[runtime::kMetaCudnn] = dev.cudnn;
      file.metadata["gpu.cuda_driver"] = dev.cuda_driver;
    }
    file.metadata["producer"] = std::string("kiln ") + KILN_VERSION_STRING;
    file.metadata["graph_name"] = graph.name;
    file.metadata["opset"] = std::to_string(graph.opset());
    std::string flags;
    const char* kFlagNames[] = {"tf32", "fp16", "bf16", "int8", "fp8"};
    for (uint32_t f = 0; f < 5; ++f)
      if (config.get_flag(static_cast<BuilderFlag>(f))) flags += (flags.empty() ? "" : ",") + std::string(kFlagNames[f]);
    file.metadata["builder_flags"] = flags;
    // --memPoolSize=workspace:N: the CUDA context sizes its kernel workspace from it (0: its default).
    if (uint64_t ws = config.memory_pool_limit(MemoryPoolType::kWORKSPACE); ws > 0)
      file.metadata["workspace_limit"] = std::to_string(ws);
    return fmt::encode(std::move(file), weights);
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kOutOfMemory, "out of memory while writing the engine");
  }
}

}  // namespace

Result<std::vector<uint8_t>> write_engine(const ir::Graph& graph, const BuilderConfig& config) {
  return write_graph(graph, config, /*nested=*/false);
}

}  // namespace kiln::builder
