// Builder and OptimizationProfile: checks profiles against the network, runs the pass pipeline, writes the engine.
#include "kiln/builder.h"

#include <algorithm>
#include <new>
#include <array>
#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>

#include "builder/build_progress.h"
#include "builder/io_types.h"
#include "builder/engine_writer.h"
#include "builder/layout_choice.h"
#include "builder/timing_cache.h"
#include "builder/pointwise_codegen.h"
#include "common/dnn_matmul_switch.h"
#include "ir/graph.h"
#include "passes/pass_manager.h"
#include "runtime/device_backend.h"

namespace kiln {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string r;
  for (auto& s : v) r += (r.empty() ? "'" : ", '") + s + "'";
  return r;
}

bool is_dynamic(const ir::Value& v) { return !v.rank_known || !ops::shape_is_static(v.shape); }

// The smallest value each symbolic dim of the network's inputs takes in any optimization profile (a pass that
// pays off only above a size, fold_layernorm_into_matmul, bounds a dynamic batch from below with it).
std::map<std::string, int64_t> symbol_minimums(const ir::Graph& g, const BuilderConfig& config) {
  std::map<std::string, int64_t> lo;
  for (const auto& profile : config.profiles())
    for (const auto& [name, b] : profile.shapes()) {
      const ir::Value* v = g.find_value(name);
      if (!v || b.min.size() != v->shape.size()) continue;
      for (size_t i = 0; i < v->shape.size(); ++i) {
        const ops::Dim& d = v->shape[i];
        if (d.is_static() || d.sym.empty()) continue;
        auto [it, fresh] = lo.emplace(d.sym, b.min[i]);
        if (!fresh) it->second = std::min(it->second, b.min[i]);
      }
    }
  return lo;
}

// Each profile must cover every dynamic input, agree with every static dim, and name only real inputs.
Status check_profiles(const ir::Graph& g, const BuilderConfig& config, ILogger& logger) {
  std::vector<std::string> dynamic, input_names;
  for (const ir::Value* v : g.inputs()) {
    input_names.push_back(v->name);
    if (v->kind != ValueKind::kTENSOR) continue;  // sequences and optionals have no shape to bound
    if (!v->rank_known)
      return invalid_argument("network input '" + v->name + "' has an unknown rank; give it a shape before building");
    if (is_dynamic(*v)) dynamic.push_back(v->name);
  }
  const auto& profiles = config.profiles();
  if (profiles.empty()) {
    if (dynamic.empty()) return Status::Ok();
    return invalid_argument("network inputs " + join(dynamic) +
                            " have dynamic dims but the config has no optimization profile; add one with "
                            "min/opt/max shapes for each of them");
  }
  for (size_t p = 0; p < profiles.size(); ++p) {
    const std::string where = "optimization profile " + std::to_string(p);
    std::vector<std::string> missing;
    for (auto& name : dynamic)
      if (!profiles[p].has(name)) missing.push_back(name);
    if (!missing.empty())
      return invalid_argument(where + " lacks min/opt/max shapes for dynamic inputs " + join(missing));
    // Symbols shared between inputs (e.g. a batch dim) must get the same range, or one of the inputs lies.
    std::map<std::string, std::pair<std::string, std::array<int64_t, 3>>> symbols;
    for (auto& [name, b] : profiles[p].shapes()) {
      const ir::Value* v = g.find_value(name);
      if (!v || std::find(g.inputs().begin(), g.inputs().end(), v) == g.inputs().end())
        return invalid_argument(where + " gives shapes for '" + name + "', which is not a network input (inputs: " +
                                join(input_names) + ")");
      if (b.min.size() != v->shape.size())
        return invalid_argument(where + ": input '" + name + "' has rank " + std::to_string(v->shape.size()) + " " +
                                ops::shape_to_string(v->shape) + " but the profile gives rank " +
                                std::to_string(b.min.size()) + " (" + dims_to_string(b.min) + ")");
      for (size_t i = 0; i < v->shape.size(); ++i) {
        const ops::Dim& d = v->shape[i];
        std::array<int64_t, 3> r = {b.min[i], b.opt[i], b.max[i]};
        if (d.is_static()) {
          if (r[0] != d.value || r[1] != d.value || r[2] != d.value)
            return invalid_argument(where + ": input '" + name + "' dim " + std::to_string(i) + " is static " +
                                    std::to_string(d.value) + " but the profile gives min/opt/max " +
                                    std::to_string(r[0]) + "/" + std::to_string(r[1]) + "/" + std::to_string(r[2]));
          continue;
        }
        if (d.sym.empty()) continue;
        auto [it, inserted] = symbols.emplace(d.sym, std::make_pair(name, r));
        if (!inserted && it->second.second != r) {
          std::string msg = where + ": dim '" + d.sym + "' is shared by inputs '" + it->second.first + "' and '" +
                            name + "' but their profile ranges differ";
          logger.log(ILogger::Severity::kWARNING, msg.c_str());
        }
      }
    }
  }
  return Status::Ok();
}

// Reduced precision is a promise about the kernels that run: a flag no kernel can honour is an error, never
// silently ignored.
Status set_precision_options(const BuilderConfig& config, passes::PassOptions* opts) {
  const bool fp16 = config.get_flag(BuilderFlag::kFP16), bf16 = config.get_flag(BuilderFlag::kBF16);
  if (config.get_flag(BuilderFlag::kINT8) || config.get_flag(BuilderFlag::kFP8))
    return unsupported(std::string(config.get_flag(BuilderFlag::kINT8) ? "INT8" : "FP8") +
                       " precision is not implemented yet (no quantized kernels or calibration exist); build without it");
  const std::string& c = config.precision_constraints();
  if (c != "none" && c != "prefer" && c != "obey")
    return invalid_argument("precision constraints must be none, prefer or obey, got '" + c + "'");
  for (const auto& [layer, dt] : config.layer_precisions())
    if (dt != DataType::kFLOAT && dt != DataType::kHALF && dt != DataType::kBF16)
      return invalid_argument("layer precision for '" + layer + "' must be fp32, fp16 or bf16, got " + dtype_name(dt));
  bool any_reduced = fp16 || bf16;
  for (const auto& [layer, dt] : config.layer_precisions()) any_reduced |= dt != DataType::kFLOAT;
  if (config.backend() == Backend::kCPU) {
    if (any_reduced)
      return unsupported("FP16/BF16 need the CUDA backend: the CPU reference backend computes in float32 only");
    return Status::Ok();
  }
  opts->reduced_precision = fp16 ? DataType::kHALF : bf16 ? DataType::kBF16 : DataType::kFLOAT;
  opts->layer_precisions = config.layer_precisions();
  opts->precision_constraints = c;
  KILN_ASSIGN_OR_RETURN(runtime::DeviceBackend * backend, runtime::device_backend(config.backend()));
  opts->has_kernel = [backend](const std::string& op, const std::string& domain, DataType dt) {
    return backend->has_kernel(op, domain, dt);
  };
  return Status::Ok();
}

// A device arena holds tensors: graphs with sequences or optionals (ONNX seq/optional types) run on the CPU only.
Status check_value_kinds(const ir::Graph& g, Backend backend) {
  if (backend == Backend::kCPU) return Status::Ok();
  for (const auto& v : g.values())
    if (v->kind != ValueKind::kTENSOR)
      return unsupported("value '" + v->name + "' is " + a_kind(v->kind) + "; graphs with sequence or optional values "
                         "run on the CPU backend only");
  return Status::Ok();
}

// Where FP16/BF16 convolutions run channels-last (KILN_LAYOUT): timed (the default: per layout region, by timing
// the engine both ways), nhwc (every region, the rule of builder levels below 3) or nchw (none: every
// convolution keeps the network's layout; for comparisons).
enum class LayoutMode { kTimed, kNhwc, kNchw };

// An opt-in switch from the environment: `*on` set from "0" or "1", left alone where the variable is unset; any
// other value stops the build by name rather than leaving the option quietly off.
Status env_switch(const char* name, bool* on) {
  const char* e = std::getenv(name);
  if (!e) return Status::Ok();
  const std::string v = e;
  if (v != "0" && v != "1") return invalid_argument(std::string(name) + " must be 0 or 1, got '" + v + "'");
  *on = v == "1";
  return Status::Ok();
}

Result<LayoutMode> layout_mode_requested() {
  const char* env = std::getenv("KILN_LAYOUT");
  const std::string v = env ? env : "";
  if (v.empty() || v == "timed") return LayoutMode::kTimed;
  if (v == "nhwc") return LayoutMode::kNhwc;
  if (v == "nchw") return LayoutMode::kNchw;
  return invalid_argument("KILN_LAYOUT must be timed, nhwc or nchw, got '" + v + "'");
}

// Forwards errors only: the layout variants' builds repeat the main build's messages.
class ErrorsOnlyLogger final : public ILogger {
 public:
  explicit ErrorsOnlyLogger(ILogger& to) : to_(to) {}
  void log(Severity s, const char* msg) noexcept override {
    if (s <= Severity::kERROR) to_.log(s, msg);
  }

 private:
  ILogger& to_;
};

// The shapes an engine is tuned and timed at: each input's first-profile opt shape, else its static shape.
std::vector<Dims> opt_shapes(const runtime::EnginePlan& plan) {
  std::vector<Dims> shapes;
  for (int i : plan.inputs) {
    int v = plan.io[i].value;
    Dims d = ops::static_dims(plan.values[v].shape);
    if (!plan.profiles.empty()) {
      auto it = plan.profiles[0].find(v);
      if (it != plan.profiles[0].end()) d = it->second.opt;
    }
    shapes.push_back(d);
  }
  return shapes;
}

// Kernel auto-tuning: loads the engine on the GPU, times each layer's candidate tactics at the first profile's
// opt shapes (or answers them from the timing cache), records the winners as "kiln.tactic" annotations and
// writes the engine again. Level 0 skips it: every kernel then runs its first (heuristic) tactic.
// `measured` (may be null) carries this build's timings from one tuning to the next (the layout variants
// share their layers' timings with the first engine, with or without a cache file).
Result<std::vector<uint8_t>> tune_engine(ir::Graph& g, const BuilderConfig& config, std::vector<uint8_t> engine,
                                         ILogger& logger, builder::BuildProgress& progress,
                                         runtime::TimingEntries* measured) {
  if (config.builder_optimization_level() <= 0) return engine;
  auto t0 = std::chrono::steady_clock::now();
  KILN_ASSIGN_OR_RETURN(runtime::DeviceBackend * backend, runtime::device_backend(config.backend()));
  KILN_ASSIGN_OR_RETURN(runtime::DeviceInfo info, backend->device_info());
  KILN_ASSIGN_OR_RETURN(const bool graph_timing, builder::graph_timing_requested());
  KILN_ASSIGN_OR_RETURN(const bool cold_requested, builder::cold_weight_timing_requested());
  const bool cold_weights = graph_timing && cold_requested;  // only graph timing rotates weight copies
  // Times taken as CUDA-graph replays are not comparable with stream-timed ones, nor cold-weight ones with hot:
  // each kind is kept under its own key.
  builder::TimingCache cache(builder::device_key(info) + (graph_timing ? " graph-timed" : "") +
                             (cold_weights ? " cold-weights" : ""));
  const std::string& file = config.timing_cache_file();
  if (!file.empty()) KILN_RETURN_IF_ERROR(cache.load(file));
  KILN_ASSIGN_OR_RETURN(auto plan, runtime::read_engine(engine.data(), engine.size()));
  KILN_ASSIGN_OR_RETURN(auto weights, backend->load_weights(*plan));
  KILN_ASSIGN_OR_RETURN(auto ctx, backend->create_context(plan, weights));
  KILN_RETURN_IF_ERROR(ctx->prepare(opt_shapes(*plan)).with_context("preparing the engine for tactic timing"));
  const std::map<std::string, int64_t> counters_before = backend->counters();
  runtime::TuneOptions opts;
  opts.level = config.builder_optimization_level();
  opts.avg_timing = config.avg_timing_iterations();
  opts.max_tactics = config.max_num_tactics();
  opts.graph_timing = graph_timing;
  opts.cold_weights = cold_weights;
  if (opts.graph_timing)
    logger.log(ILogger::Severity::kINFO, opts.cold_weights ? "tactics are timed as CUDA-graph replays, each launch "
                                                             "reading weights that are not in L2"
                                                           : "tactics are timed as CUDA-graph replays");
  runtime::TimingEntries entries = cache.device_entries();
  if (measured) entries.insert(measured->begin(), measured->end());
  std::vector<runtime::TacticChoice> choices;
  {
    // One step per tunable layer; the phase opens when the context knows how many there are.
    std::optional<builder::BuildProgress::Scope> phase;
    bool cancelled = false;
    auto on_layer = [&](int done, int total) {
      if (!phase) phase.emplace(progress, "Tuning tactics", total);
      if (!cancelled && !progress.step().ok()) cancelled = true;
    };
    KILN_RETURN_IF_ERROR(ctx->tune(opts, entries, &choices, on_layer).with_context("timing tactics"));
    if (cancelled) return invalid_argument("the build was cancelled by the progress monitor while tuning tactics");
  }
  int timed = 0, cached = 0;
  std::map<std::string, std::vector<ir::Node*>> by_name;
  for (auto& n : g.nodes()) by_name[n->name].push_back(n.get());
  for (const auto& c : choices) {
    timed += c.timed;
    cached += c.from_cache;
    if (auto it = by_name.find(c.layer); it != by_name.end())
      for (ir::Node* n : it->second) {
        n->attrs.set("kiln.tactic", Attribute(c.tactic));
        for (const auto& [name, value] : c.annotations) n->attrs.set(name, Attribute(value));
      }
    std::string line = "tactic for '" + c.layer + "': " + c.tactic + (c.from_cache ? " (timing cache)" : "") +
                       (c.timed ? " (" + std::to_string(c.ms) + " ms, best of " + std::to_string(c.timed) + " timed)" : "");
    // Every candidate's time, as trtexec --verbose lists them: why the winner won is in the build log.
    if (c.timings.size() > 1) {
      line += ":";
      for (const auto& [tactic, ms] : c.timings) line += " " + tactic + " " + std::to_string(ms * 1000.0) + " us,";
      line.pop_back();
    }
    logger.log(ILogger::Severity::kVERBOSE, line.c_str());
  }
  cache.update(entries);
  if (measured) *measured = entries;
  if (!file.empty()) KILN_RETURN_IF_ERROR(cache.save(file));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string msg = "tactics: " + std::to_string(choices.size()) + " layers tuned (" + std::to_string(timed) +
                    " tactics timed, " + std::to_string(cached) + " layers from the timing cache) in " +
                    std::to_string(s) + " s";
  // What tuning cost besides timing (cuDNN plans compiled, say): the backend's counters that moved.
  for (const auto& [name, n] : backend->counters()) {
    auto it = counters_before.find(name);
    const int64_t d = n - (it == counters_before.end() ? 0 : it->second);
    if (d != 0) msg += ", " + name + " +" + std::to_string(d);
  }
  logger.log(ILogger::Severity::kINFO, msg.c_str());
  if (choices.empty()) return engine;
  ctx.reset();
  return builder::write_engine(g, config);
}

// Pointwise kernels are compiled for the GPU the engine is built on (its compute capability), as cubins unless
// KILN_POINTWISE_PTX=1 asks for PTX, which the driver compiles on load for that GPU or a newer one. Without a
// GPU the target is sm_90, the architecture the CUDA backend itself is built for.
Status compile_pointwise_layers(ir::Graph& g, ILogger& logger) {
  bool any = false;
  for (auto& n : g.nodes()) any |= n->op_type == "Pointwise" && n->domain == "kiln";
  if (!any) return Status::Ok();
  int major = 9, minor = 0;
  auto backend = runtime::device_backend(Backend::kCUDA);
  auto dev = backend.ok() ? (*backend)->device_info() : Result<runtime::DeviceInfo>(backend.status());
  if (dev.ok()) {
    major = dev->cc_major;
    minor = dev->cc_minor;
  } else {
    std::string msg = "pointwise kernels compiled for sm_90: no GPU to target (" + dev.status().message() + ")";
    logger.log(ILogger::Severity::kWARNING, msg.c_str());
  }
  const char* env = std::getenv("KILN_POINTWISE_PTX");
  const bool ptx = env && *env && std::string(env) != "0";
  return builder::compile_pointwise_nodes(g, major, minor, ptx, logger);
}


// The passes over a copy of the network, then the engine written and, on a GPU, tuned.
Result<builder::LayoutVariant> optimize_and_write(const ir::Graph& network, const passes::PassOptions& opts,
                                                  passes::PassManager& pm, const BuilderConfig& config,
                                                  ILogger& logger, builder::BuildProgress& progress,
                                                  runtime::TimingEntries* measured) {
  // The network stays as the user built it; the passes rewrite a private copy.
  std::unique_ptr<ir::Graph> g = network.clone();
  passes::PassContext ctx(logger, opts);
  {
    builder::BuildProgress::Scope passes_phase(progress, "Optimization passes",
                                               static_cast<int32_t>(pm.pass_names().size()));
    pm.set_hooks({[](size_t, const std::string& name) { builder::BuildProgress::range_push(name.c_str()); },
                  [&progress](size_t, const std::string&, bool ok) {
                    builder::BuildProgress::range_pop();
                    return !ok || progress.step().ok();
                  }});
    KILN_RETURN_IF_ERROR(pm.run(*g, ctx));
  }
  KILN_RETURN_IF_ERROR(ir::verify(*g).with_context("the optimized graph is invalid"));
  KILN_RETURN_IF_ERROR(g->topo_sort());
  KILN_RETURN_IF_ERROR(check_value_kinds(*g, config.backend()));
  if (config.backend() == Backend::kCUDA) KILN_RETURN_IF_ERROR(compile_pointwise_layers(*g, logger));
  KILN_RETURN_IF_ERROR(progress.step());
  Result<std::vector<uint8_t>> engine = [&] {
    builder::BuildProgress::Scope write_phase(progress, "Writing engine", 0);
    return builder::write_engine(*g, config);
  }();
  if (!engine.ok()) return engine.status();
  KILN_RETURN_IF_ERROR(progress.step());
  if (config.backend() != Backend::kCPU) {
    engine = tune_engine(*g, config, std::move(*engine), logger, progress, measured);
    if (!engine.ok()) return engine.status();
    KILN_RETURN_IF_ERROR(progress.step());
  }
  return builder::LayoutVariant{std::move(g), std::move(*engine)};
}

// The layout choice on the GPU (builder/layout_choice.h): variants built quietly, engines timed at the opt
// shapes, decisions kept in the timing cache file next to the tactics.
Result<builder::LayoutVariant> time_layouts(const ir::Graph& network, const passes::PassOptions& opts,
                                            builder::LayoutVariant nhwc, const BuilderConfig& config,
                                            ILogger& logger, builder::BuildProgress& progress,
                                            runtime::TimingEntries* measured) {
  if (builder::layout_regions(*nhwc.graph).empty()) return nhwc;  // nothing to choose (most engines)
  KILN_ASSIGN_OR_RETURN(runtime::DeviceBackend * backend, runtime::device_backend(config.backend()));
  KILN_ASSIGN_OR_RETURN(runtime::DeviceInfo info, backend->device_info());
  builder::TimingCache cache(builder::device_key(info));
  const std::string& file = config.timing_cache_file();
  if (!file.empty()) KILN_RETURN_IF_ERROR(cache.load(file));
  runtime::TimingEntries entries = cache.device_entries();
  // What the decisions depend on besides the GPU: the network, the precision and the shapes timed.
  std::string what = ir::print(network) + "|precision " + dtype_name(opts.reduced_precision);
  for (const auto& profile : config.profiles())
    for (const auto& [name, b] : profile.shapes()) what += "|" + name + " " + dims_to_string(b.opt);
  ErrorsOnlyLogger quiet(logger);
  auto build = [&](const std::set<std::string>& nchw) -> Result<builder::LayoutVariant> {
    passes::PassOptions o = opts;
    o.nchw_layout_regions = nchw;
    passes::PassManager pm(passes::pipeline_for(config.backend()));
    builder::BuildProgress none(nullptr);
    return optimize_and_write(network, o, pm, config, quiet, none, measured);
  };
  auto time = [&](const std::vector<uint8_t>& engine) -> Result<double> {
    KILN_ASSIGN_OR_RETURN(auto plan, runtime::read_engine(engine.data(), engine.size()));
    KILN_ASSIGN_OR_RETURN(auto weights, backend->load_weights(*plan));
    KILN_ASSIGN_OR_RETURN(auto ctx, backend->create_context(plan, weights));
    KILN_RETURN_IF_ERROR(ctx->prepare(opt_shapes(*plan)));
    return ctx->time_engine(20, 5);
  };
  auto chosen = builder::choose_layouts(std::move(nhwc), builder::fingerprint(what), build, time, entries, logger,
                                       progress);
  if (!chosen.ok()) return chosen.status();
  if (!file.empty()) {
    // The variants' tuning wrote tactics to the file since it was read: merge them before saving.
    KILN_RETURN_IF_ERROR(cache.load(file));
    cache.update(entries);
    KILN_RETURN_IF_ERROR(cache.save(file));
  }
  return chosen;
}
}  // namespace

Status OptimizationProfile::set_shape(const std::string& input, const Dims& min, const Dims& opt, const Dims& max) {
  const std::string where = "optimization profile shape for '" + input + "'";
  if (min.size() != opt.size() || opt.size() != max.size())
    return invalid_argument(where + ": min, opt and max must have the same rank, got " + dims_to_string(min) + ", " +
                            dims_to_string(opt) + " and " + dims_to_string(max));
  for (size_t i = 0; i < min.size(); ++i) {
    if (min[i] < 0)
      return invalid_argument(where + ": dim " + std::to_string(i) + " of min is " + std::to_string(min[i]) +
                              "; profile shapes must be concrete (>= 0)");
    if (!(min[i] <= opt[i] && opt[i] <= max[i]))
      return invalid_argument(where + ": dim " + std::to_string(i) + " needs min <= opt <= max, got " +
                              std::to_string(min[i]) + " / " + std::to_string(opt[i]) + " / " +
                              std::to_string(max[i]));
  }
  shapes_[input] = Bounds{min, opt, max};
  return Status::Ok();
}

Builder::Builder(ILogger& logger) : logger_(logger) {}

std::unique_ptr<NetworkDefinition> Builder::create_network() { return std::make_unique<NetworkDefinition>(); }
std::unique_ptr<BuilderConfig> Builder::create_builder_config() { return std::make_unique<BuilderConfig>(); }

static Result<std::vector<uint8_t>> build_impl(NetworkDefinition& network, const BuilderConfig& config, ILogger& logger_);

// Exceptions stay inside the library: a shape from model data too large to allocate is an error, not an abort.
Result<std::vector<uint8_t>> Builder::build_serialized_network(NetworkDefinition& network, const BuilderConfig& config) {
  try {
    return build_impl(network, config, logger_);
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kOutOfMemory, "out of memory while building the engine (a tensor too large to allocate)");
  }
}

static Result<std::vector<uint8_t>> build_impl(NetworkDefinition& network, const BuilderConfig& config, ILogger& logger_) {
  auto t0 = std::chrono::steady_clock::now();
  const bool on_device = config.backend() != Backend::kCPU;
  builder::BuildProgress progress(config.progress_monitor());
  // Steps: optimization passes, engine writing, and on a GPU tactic tuning and the check of which layers have
  // device kernels.
  builder::BuildProgress::Scope build_phase(progress, "Building engine", on_device ? 4 : 2);
  if (network.graph().outputs().empty())
    return invalid_argument("the network has no outputs; mark at least one with mark_output");
  KILN_RETURN_IF_ERROR(check_profiles(network.graph(), config, logger_));
  KILN_RETURN_IF_ERROR(ir::verify(network.graph()).with_context("the network is invalid before optimization"));
  // Binding types that differ from the network's (set_io_type): a copy of the network with a Cast at each.
  // (A tensor no longer an input or output, unmarked since, has no binding: its entry is left out.)
  std::unique_ptr<ir::Graph> io_graph;
  std::map<std::string, DataType> io_types;
  const auto& ins = network.graph().inputs();
  const auto& outs = network.graph().outputs();
  for (const auto& [v, dt] : network.io_types())
    if (std::find(ins.begin(), ins.end(), v) != ins.end() || std::find(outs.begin(), outs.end(), v) != outs.end())
      io_types[v->name] = dt;
  if (!io_types.empty()) {
    io_graph = network.graph().clone();
    KILN_RETURN_IF_ERROR(builder::apply_io_types(*io_graph, io_types));
  }
  const ir::Graph& source = io_graph ? *io_graph : network.graph();

  passes::PassOptions opts;
  opts.backend = config.backend();
  opts.dump_after = config.dump_after();
  opts.fuse_pointwise = builder::pointwise_codegen_available();
  // cuDNN's fused matmul runs SiLU/sigmoid inside the GEMM; KILN_DNN_MATMUL=0 withdraws both.
  opts.matmul_sigmoid_acts = matmul_sigmoid_acts_for(config.backend());
  // Channels-last GroupNorm (layout_nhwc): on unless KILN_NHWC_GROUPNORM=0 (run 19, H100: unet_stage FP16 1.48x
  // faster at batch 1 and 1.38x at batch 16 than with the GroupNorms bounding NCHW layout regions).
  if (const char* e = std::getenv("KILN_NHWC_GROUPNORM")) opts.nhwc_groupnorm = std::string(e) != "0";
  // A LayerNorm taking in its input's lookup and Add and its output's Cast (fuse_add_layernorm,
  // fuse_layernorm_output_cast): opt-in until their CUDA kernels have run on a GPU.
  KILN_RETURN_IF_ERROR(env_switch("KILN_FUSE_LAYERNORM_IO", &opts.layernorm_io));
  // The device backend, looked up once for the passes' options and the host-layer check below (null where its
  // library does not load: the steps that need it, tuning and engine writing, return that error).
  runtime::DeviceBackend* device = nullptr;
  if (on_device) {
    auto backend = runtime::device_backend(config.backend());
    if (backend.ok()) device = *backend;
  }
  // pad_gemm_width: an odd-width float16/bfloat16 product left unpadded where the backend stores rows of any width
  // at full speed (the CUDA backend's CUTLASS kernels: gpt2 b32 -5.3% on an H100, bench/NOTES.md); KILN_ODD_GEMM=0
  // or 1 overrides.
  opts.odd_gemm = device && device->odd_width_gemm();
  KILN_RETURN_IF_ERROR(env_switch("KILN_ODD_GEMM", &opts.odd_gemm));
  // fold_layernorm_into_matmul: a pre-LN transformer's LayerNorm goes into the QKV and FFN1 GEMMs that read it (a
  // statistics pass and the CUTLASS epilogue in place of the normalized copy). Opt-in (KILN_NORM_GEMM=1): on an
  // H100 it changed vit_b_16 b64 by +0.3% and gpt2 b32 by -0.4% (bench/NOTES.md, twenty-third session).
  KILN_RETURN_IF_ERROR(env_switch("KILN_NORM_GEMM", &opts.norm_gemm));
  // fuse_conv_squeeze: a depthwise convolution writes its squeeze-excitation mean too. Opt-in (KILN_CONV_SQUEEZE=1):
  // measured 1.6% slower on efficientnet_b0 b128 (H200, bench/NOTES.md).
  KILN_RETURN_IF_ERROR(env_switch("KILN_CONV_SQUEEZE", &opts.conv_squeeze));
  opts.symbol_min = symbol_minimums(source, config);
  KILN_RETURN_IF_ERROR(set_precision_options(config, &opts));
  KILN_ASSIGN_OR_RETURN(const LayoutMode layout_mode, layout_mode_requested());
  if (layout_mode == LayoutMode::kNchw) opts.nchw_layout_regions = {passes::kAllLayoutRegions};
  passes::PassManager pm(passes::pipeline_for(config.backend()));
  runtime::TimingEntries measured;  // this build's tactic timings, for the layout variants
  auto first = optimize_and_write(source, opts, pm, config, logger_, progress, &measured);
  if (!first.ok()) return first.status();
  builder::LayoutVariant built = std::move(*first);
  // Layout by measurement (builder/layout_choice.h) from the default level up; lower levels keep the rule.
  if (on_device && layout_mode == LayoutMode::kTimed && config.builder_optimization_level() >= 3) {
    auto timed = time_layouts(source, opts, std::move(built), config, logger_, progress, &measured);
    if (!timed.ok()) return timed.status();
    built = std::move(*timed);
  }
  if (on_device) {
    // Layers without a device kernel still run (on the host, with a synchronization each): say which.
    auto plan = runtime::read_engine(built.engine.data(), built.engine.size());
    if (plan.ok() && device) {
      auto host = device->host_nodes(**plan);
      if (!host.empty()) {
        std::string msg = std::to_string(host.size()) + " of " + std::to_string((*plan)->nodes.size()) +
                          " layers have no GPU kernel and run on the host reference kernels:";
        for (size_t i = 0; i < host.size() && i < 20; ++i) msg += " " + host[i];
        if (host.size() > 20) msg += " ...";
        logger_.log(ILogger::Severity::kWARNING, msg.c_str());
      }
    }
    KILN_RETURN_IF_ERROR(progress.step());
  }
  double pass_ms = 0;
  for (auto& r : pm.records()) pass_ms += r.ms;
  double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::string msg = "build: " + std::to_string(pm.records().size()) + " passes in " + std::to_string(pass_ms) +
                    " ms, " + std::to_string(built.graph->nodes().size()) + " nodes, total " + std::to_string(total_ms) +
                    " ms";
  logger_.log(ILogger::Severity::kVERBOSE, msg.c_str());
  return std::move(built.engine);
}

}  // namespace kiln
