// Engine reader: engine file bytes -> validated EnginePlan (every id, op and ordering checked before use).
#include <cstdlib>
#include <set>

#include "common/engine_format.h"
#include "runtime/engine_plan.h"

namespace kiln::runtime {

namespace fmt = engine_format;

int EnginePlan::find_io(const std::string& name) const {
  for (size_t i = 0; i < io.size(); ++i)
    if (io[i].name == name) return static_cast<int>(i);
  return -1;
}

static GraphPort port_of(const EnginePlan& plan, int io) {
  const PlanValue& v = plan.values[plan.io[io].value];
  return GraphPort{v.name, v.kind, v.dtype, v.rank_known, ops::static_dims(v.shape)};
}

std::vector<GraphPort> PlanSubgraph::input_ports() const {
  std::vector<GraphPort> r;
  size_t formal = plan_->inputs.size() - captures().size();  // the reader checked captures fit
  for (size_t i = 0; i < formal; ++i) r.push_back(port_of(*plan_, plan_->inputs[i]));
  return r;
}

std::vector<GraphPort> PlanSubgraph::output_ports() const {
  std::vector<GraphPort> r;
  for (int o : plan_->outputs) r.push_back(port_of(*plan_, o));
  return r;
}

std::string PlanSubgraph::describe() const {
  return "graph (" + std::to_string(plan_->inputs.size()) + " inputs, " + std::to_string(plan_->outputs.size()) +
         " outputs, " + std::to_string(plan_->nodes.size()) + " nodes)";
}

namespace {

Result<std::shared_ptr<const EnginePlan>> read_plan(const void* data, size_t size, bool nested);

std::string node_desc(const fmt::NodeRecord& n, size_t index) {
  return "engine node " + std::to_string(index) + " '" + n.name + "' (" + n.op_type + ")";
}

Status build_nodes(const fmt::EngineFile& f, EnginePlan* plan, std::vector<char>* available) {
  const int nv = static_cast<int>(plan->values.size());
  for (size_t i = 0; i < f.nodes.size(); ++i) {
    const auto& rec = f.nodes[i];
    const ops::OpSchema* schema = ops::OpRegistry::instance().find(rec.op_type, rec.domain);
    if (!schema)
      return invalid_engine(node_desc(rec, i) + " uses operator '" + rec.op_type + "'" +
                            (rec.domain.empty() ? "" : " of domain '" + rec.domain + "'") +
                            ", which this Kiln runtime does not implement");
    if (!schema->compute) return invalid_engine(node_desc(rec, i) + ": operator has no CPU implementation");
    int nin = static_cast<int>(rec.inputs.size()), nout = static_cast<int>(rec.outputs.size());
    if (Status st = ops::check_arity(*schema, nin, nout); !st.ok())
      return invalid_engine(node_desc(rec, i) + ": " + st.message());
    Status st = ops::validate_attributes(*schema, rec.attrs);
    if (!st.ok()) return invalid_engine(node_desc(rec, i) + ": " + st.message());

    for (int k = 0; k < nin; ++k) {
      int32_t id = rec.inputs[k];
      if (id == -1) {
        if (k < schema->min_inputs) return invalid_engine(node_desc(rec, i) + " omits its required input " + std::to_string(k));
        continue;
      }
      if (id < 0 || id >= nv)
        return invalid_engine(node_desc(rec, i) + " input " + std::to_string(k) + " refers to value " + std::to_string(id) +
                              " but the engine has " + std::to_string(nv) + " values");
      if (!(*available)[id])
        return invalid_engine(node_desc(rec, i) + " reads '" + plan->values[id].name + "' before any node produces it");
    }
    for (int32_t id : rec.outputs) {
      if (id < 0 || id >= nv)
        return invalid_engine(node_desc(rec, i) + " output refers to value " + std::to_string(id) + " but the engine has " +
                              std::to_string(nv) + " values");
      if ((*available)[id])
        return invalid_engine(node_desc(rec, i) + " writes '" + plan->values[id].name + "', which already has a producer");
      (*available)[id] = 1;
    }
    PlanNode n;
    n.attrs = rec.attrs;
    for (auto& [name, a] : rec.attrs.map()) {
      if (a.type() != AttrType::kGRAPH) continue;
      const auto* g = dynamic_cast<const fmt::SerializedSubgraph*>(a.g().get());
      const std::string where = node_desc(rec, i) + ", subgraph '" + name + "'";
      if (!g) return internal_error(where + " was not decoded from the engine file");
      auto body = read_plan(g->engine().data(), g->engine().size(), /*nested=*/true);
      if (!body.ok()) return body.status().with_context(where);
      if (g->captures().size() > (*body)->inputs.size())
        return invalid_engine(where + " captures " + std::to_string(g->captures().size()) + " values but has only " +
                              std::to_string((*body)->inputs.size()) + " inputs");
      for (int c : g->captures())
        if (c < 0 || c >= nin || rec.inputs[c] < 0)
          return invalid_engine(where + " captures node input " + std::to_string(c) + ", which the node lacks");
      n.attrs.set(name, std::shared_ptr<const Subgraph>(std::make_shared<PlanSubgraph>(std::move(body).value(), g->captures())));
    }
    // The kernels trust their inputs' types and ranks (Add reads both inputs as its output's type): the
    // operator's own inference over the declared values rejects a node the builder could not have written.
    if (schema->infer) {
      std::vector<ops::TensorInfo> infos(nin);
      std::vector<const ops::TensorInfo*> ptrs(nin, nullptr);
      for (int k = 0; k < nin; ++k) {
        if (rec.inputs[k] < 0) continue;
        const PlanValue& v = plan->values[rec.inputs[k]];
        infos[k].kind = v.kind;
        infos[k].dtype = v.dtype;
        infos[k].shape = v.shape;
        infos[k].rank_known = v.rank_known;
        infos[k].constant = v.constant.defined() ? &v.constant : nullptr;
        ptrs[k] = &infos[k];
      }
      ops::InferContext ictx(n.attrs, rec.opset, ptrs, nout);
      Status ist = schema->infer(ictx);
      if (!ist.ok()) return invalid_engine(node_desc(rec, i) + " does not fit its declared inputs: " + ist.message());
    }
    n.name = rec.name;
    n.op_type = rec.op_type;
    n.domain = rec.domain;
    n.opset = rec.opset;
    n.inputs.assign(rec.inputs.begin(), rec.inputs.end());
    n.outputs.assign(rec.outputs.begin(), rec.outputs.end());
    n.schema = schema;
    plan->nodes.push_back(std::move(n));
  }
  return Status::Ok();
}

Status build_profiles(const fmt::EngineFile& f, EnginePlan* plan) {
  for (size_t p = 0; p < f.profiles.size(); ++p) {
    std::map<int, ProfileBounds> bounds;
    for (auto& e : f.profiles[p]) {
      int io = -1;
      for (int i : plan->inputs)
        if (plan->io[i].value == e.value) io = i;
      if (io < 0) return invalid_engine("optimization profile " + std::to_string(p) + " refers to value " +
                                        std::to_string(e.value) + ", which is not an engine input");
      const auto& v = plan->values[e.value];
      const std::string where = "optimization profile " + std::to_string(p) + " for input '" + v.name + "'";
      if (e.min.size() != v.shape.size()) return invalid_engine(where + " has the wrong rank");
      for (size_t d = 0; d < e.min.size(); ++d)
        if (e.min[d] > e.opt[d] || e.opt[d] > e.max[d]) return invalid_engine(where + " does not satisfy min <= opt <= max");
      if (bounds.count(e.value)) return invalid_engine(where + " is listed twice");
      bounds[e.value] = ProfileBounds{e.min, e.opt, e.max};
    }
    plan->profiles.push_back(std::move(bounds));
  }
  return Status::Ok();
}

// For each node, the values it is the last reader of (never graph outputs or constants).
void compute_releases(EnginePlan* plan) {
  std::vector<int> last(plan->values.size(), -1);
  for (size_t i = 0; i < plan->nodes.size(); ++i) {
    for (int id : plan->nodes[i].inputs)
      if (id >= 0) last[id] = static_cast<int>(i);
    for (int id : plan->nodes[i].outputs)  // an output nobody reads dies right after its producer
      if (last[id] < static_cast<int>(i)) last[id] = static_cast<int>(i);
  }
  std::vector<char> keep(plan->values.size(), 0);
  for (int o : plan->outputs) keep[plan->io[o].value] = 1;
  for (size_t v = 0; v < plan->values.size(); ++v)
    if (last[v] >= 0 && !keep[v] && !plan->values[v].constant.defined())
      plan->nodes[last[v]].release_after.push_back(static_cast<int>(v));
}

}  // namespace

Result<std::shared_ptr<const EnginePlan>> read_engine(const void* data, size_t size) {
  return read_plan(data, size, /*nested=*/false);
}

namespace {

// A nested plan (a subgraph body) may have inputs of unknown rank: a Loop-carried value may change shape.
Result<std::shared_ptr<const EnginePlan>> read_plan(const void* data, size_t size, bool nested) {
  if (data == nullptr || size == 0) return invalid_engine("engine file is empty");
  auto plan = std::make_shared<EnginePlan>();
  // One aligned copy: weights are used in place and contexts may outlive the caller's buffer.
  size_t alloc = (size + fmt::kAlignment - 1) / fmt::kAlignment * fmt::kAlignment;
  void* mem = std::aligned_alloc(fmt::kAlignment, alloc);
  if (!mem) return Status(ErrorCode::kOutOfMemory, "cannot allocate " + std::to_string(size) + " bytes for the engine");
  plan->file = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(mem), [](uint8_t* p) { std::free(p); });
  plan->file_size = size;
  std::memcpy(mem, data, size);
  const uint8_t* bytes = plan->file.get();

  KILN_ASSIGN_OR_RETURN(fmt::EngineFile f, fmt::decode(bytes, size));
  KILN_RETURN_IF_ERROR(fmt::check_compatible(f.header, {Backend::kCPU, Backend::kCUDA}));
  plan->kiln_version = f.header.kiln_version;
  plan->backend = f.header.backend;
  for (auto& rec : f.values)  // the builder keeps them off device backends, whose arenas hold tensors only
    if (rec.kind != ValueKind::kTENSOR && plan->backend != Backend::kCPU)
      return invalid_engine("engine value '" + rec.name + "' is " + a_kind(rec.kind) + ", which only CPU engines hold");
  plan->device = f.header.device;
  plan->metadata = f.metadata;

  std::set<std::string> names;
  std::vector<char> available(f.values.size(), 0);
  for (auto& rec : f.values) {
    if (!names.insert(rec.name).second) return invalid_engine("engine value name '" + rec.name + "' is not unique");
    PlanValue v;
    v.name = rec.name;
    v.kind = rec.kind;
    v.dtype = rec.dtype;
    v.rank_known = rec.rank_known;
    v.shape = rec.shape;
    if (rec.is_constant) {
      // Ops never write into their inputs, so handing them the read-only file bytes is safe.
      void* p = const_cast<uint8_t*>(bytes + f.weights_offset + rec.weight_offset);
      v.constant = Tensor::wrap(rec.dtype, ops::static_dims(rec.shape), p);
      if (rec.dtype == DataType::kBOOL) {  // any byte but 0 and 1 would be an invalid bool to the kernels
        const uint8_t* q = static_cast<const uint8_t*>(p);
        for (uint64_t k = 0; k < rec.weight_size; ++k)
          if (q[k] > 1) return invalid_engine("bool constant '" + rec.name + "' holds a byte that is not 0 or 1");
      }
      available[plan->values.size()] = 1;
    }
    plan->values.push_back(std::move(v));
  }

  const int nv = static_cast<int>(plan->values.size());
  std::set<std::string> io_names;
  for (auto& rec : f.io) {
    if (rec.value < 0 || rec.value >= nv)
      return invalid_engine("engine I/O tensor refers to value " + std::to_string(rec.value) + " but the engine has " +
                            std::to_string(nv) + " values");
    const auto& v = plan->values[rec.value];
    if (!io_names.insert(v.name).second) return invalid_engine("engine I/O tensor '" + v.name + "' is listed twice");
    if (rec.mode == TensorIOMode::kINPUT) {
      if (v.constant.defined()) return invalid_engine("engine input '" + v.name + "' is also a constant");
      // A sequence's elements may differ in rank; only tensor inputs need one for their shape bindings.
      if (!v.rank_known && !nested && v.kind == ValueKind::kTENSOR)
        return invalid_engine("engine input '" + v.name + "' has no known rank");
      available[rec.value] = 1;
      plan->inputs.push_back(static_cast<int>(plan->io.size()));
    } else {
      plan->outputs.push_back(static_cast<int>(plan->io.size()));
    }
    plan->io.push_back(PlanIo{v.name, rec.value, rec.mode});
  }
  KILN_RETURN_IF_ERROR(build_nodes(f, plan.get(), &available));
  for (int o : plan->outputs)
    if (!available[plan->io[o].value])
      return invalid_engine("engine output '" + plan->io[o].name + "' is not produced by any node");
  KILN_RETURN_IF_ERROR(build_profiles(f, plan.get()));
  compute_releases(plan.get());
  return std::shared_ptr<const EnginePlan>(std::move(plan));
}

}  // namespace

}  // namespace kiln::runtime
