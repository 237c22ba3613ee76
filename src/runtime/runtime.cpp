// Runtime (engine loading) and Engine (read-only queries over a shared EnginePlan).
#include "kiln/runtime.h"

#include <exception>
#include <fstream>
#include <iterator>
#include <new>

#include "common/engine_format.h"
#include "common/version.h"
#include "runtime/device_backend.h"
#include "runtime/engine_plan.h"

namespace kiln {

const char* kiln_version_string() { return KILN_VERSION_STRING; }

Runtime::Runtime(ILogger& logger) : logger_(logger) {}

Result<std::unique_ptr<Engine>> Runtime::deserialize_engine(const void* data, size_t size) {
  try {
    auto plan = runtime::read_engine(data, size);
    if (!plan.ok()) {
      logger_.log(ILogger::Severity::kERROR, plan.status().message().c_str());
      return plan.status();
    }
    std::unique_ptr<Engine> engine(new Engine());
    if ((*plan)->backend != Backend::kCPU) {
      auto fail = [&](Status st) {
        logger_.log(ILogger::Severity::kERROR, st.message().c_str());
        return st;
      };
      auto backend = runtime::device_backend((*plan)->backend);
      if (!backend.ok())
        return fail(Status(ErrorCode::kInvalidEngine, "engine was built for backend cuda but " + backend.status().message()));
      Status ok = (*backend)->check_engine(**plan);
      if (!ok.ok()) return fail(ok);
      auto weights = (*backend)->load_weights(**plan);
      if (!weights.ok()) return fail(weights.status());
      engine->device_weights_ = std::move(weights).value();
      for (const auto& v : (*plan)->values)
        if (v.constant.defined()) engine->weights_bytes_ += v.constant.nbytes();
      engine->plan_ = std::move(plan).value();
      return engine;
    }
    std::string host = engine_format::host_device_string();
    if ((*plan)->device != host) {
      // Reference CPU kernels are portable, so another CPU model only matters for performance.
      std::string msg = "engine was built on '" + (*plan)->device + "' and runs on '" + host + "'";
      logger_.log(ILogger::Severity::kINFO, msg.c_str());
    }
    engine->plan_ = std::move(plan).value();
    return engine;
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kOutOfMemory, "out of memory while loading the engine");
  } catch (const std::exception& e) {
    return internal_error(std::string("unexpected error while loading the engine: ") + e.what());
  }
}

Result<std::unique_ptr<Engine>> Runtime::load_engine_file(const std::string& path) {
  std::vector<uint8_t> bytes;
  try {
    std::ifstream f(path, std::ios::binary);
    if (!f) return io_error("cannot open engine file '" + path + "'");
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (f.bad()) return io_error("cannot read engine file '" + path + "'");
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kOutOfMemory, "out of memory while reading '" + path + "'");
  }
  auto r = deserialize_engine(bytes.data(), bytes.size());
  if (!r.ok()) return r.status().with_context("engine file '" + path + "'");
  return r;
}

Engine::~Engine() = default;

int Engine::num_io_tensors() const { return static_cast<int>(plan_->io.size()); }

const std::string& Engine::get_tensor_name(int i) const {
  static const std::string kNone;
  return i >= 0 && i < num_io_tensors() ? plan_->io[i].name : kNone;
}

TensorIOMode Engine::get_tensor_mode(const std::string& name) const {
  int i = plan_->find_io(name);
  return i < 0 ? TensorIOMode::kNONE : plan_->io[i].mode;
}

DataType Engine::get_tensor_dtype(const std::string& name) const {
  int i = plan_->find_io(name);
  return i < 0 ? DataType::kFLOAT : plan_->values[plan_->io[i].value].dtype;
}

Dims Engine::get_tensor_shape(const std::string& name) const {
  int i = plan_->find_io(name);
  return i < 0 ? Dims{} : ops::static_dims(plan_->values[plan_->io[i].value].shape);
}

int Engine::num_optimization_profiles() const { return static_cast<int>(plan_->profiles.size()); }

Status Engine::get_profile_shape(const std::string& input, int profile, Dims* min, Dims* opt, Dims* max) const {
  int i = plan_->find_io(input);
  if (i < 0 || plan_->io[i].mode != TensorIOMode::kINPUT) return invalid_argument("'" + input + "' is not an engine input");
  if (profile < 0 || profile >= num_optimization_profiles())
    return invalid_argument("optimization profile " + std::to_string(profile) + " does not exist (the engine has " +
                            std::to_string(num_optimization_profiles()) + ")");
  auto it = plan_->profiles[profile].find(plan_->io[i].value);
  if (it == plan_->profiles[profile].end())
    return invalid_argument("input '" + input + "' has no bounds in optimization profile " + std::to_string(profile));
  if (min) *min = it->second.min;
  if (opt) *opt = it->second.opt;
  if (max) *max = it->second.max;
  return Status::Ok();
}

Backend Engine::backend() const { return plan_->backend; }
int Engine::num_layers() const { return static_cast<int>(plan_->nodes.size()); }
std::string Engine::kiln_version() const { return plan_->kiln_version; }

const std::string& Engine::metadata(const std::string& key) const {
  static const std::string kNone;
  auto it = plan_->metadata.find(key);
  return it == plan_->metadata.end() ? kNone : it->second;
}

std::unique_ptr<ExecutionContext> Engine::create_execution_context() const {
  std::unique_ptr<ExecutionContext> ctx(new ExecutionContext(plan_));
  if (plan_->backend == Backend::kCPU) return ctx;
  // A context failing on the GPU (out of memory, most often) comes back null, as in TensorRT; the reason goes
  // to the default logger.
  Status st = ctx->attach_device(device_weights_);
  if (!st.ok()) {
    std::string msg = "create_execution_context: " + st.message();
    default_logger().log(ILogger::Severity::kERROR, msg.c_str());
    return nullptr;
  }
  return ctx;
}

std::vector<uint8_t> Engine::serialize() const {
  // The plan keeps the file bytes (its constants are views into them), so no second copy is held.
  const uint8_t* p = plan_->file.get();
  return std::vector<uint8_t>(p, p + plan_->file_size);
}

}  // namespace kiln
