// Runs ONNX backend test directories through the full public pipeline (parse, build, serialize, load, infer) and prints one JSON result per test.
//
// Usage: kiln_node_runner [--timeout=SECONDS] [--no-fork] [--verbose] [--device=cpu|cuda] TEST_DIR...
// Each test runs in a forked child so that a crash or hang in one operator costs that test only; the parent
// reads the child's progress over a pipe so a crashed test still reports the stage it died in.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/builder.h"
#include "kiln/logger.h"
#include "kiln/network.h"
#include "kiln/onnx_parser.h"
#include "kiln/runtime.h"
#include "runtime/device_backend.h"
#include "kiln/status.h"
#include "onnx/proto_convert.h"
#include "ops/op.h"

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// What the parent learns from the model file alone; enough to report a test even if its child crashes.
struct ModelInfo {
  std::string name;
  fs::path dir;
  int opset = 0;
  std::vector<std::string> ops;     // "Conv" or "com.microsoft::Foo", sorted, unique
  std::vector<std::string> dtypes;  // element types of graph inputs and outputs
  std::string skip_reason;          // set when the test cannot apply to Kiln at all
  std::string load_error;
};

struct Outcome {
  std::string status = "pass";  // pass | fail | skip
  std::string stage;            // import | build | load | run | compare (where it stopped)
  std::string reason;
  double time_ms = 0;
  int datasets = 0;
  int host_layers = 0;  // CUDA backend: layers that ran on the host reference kernels
};

// --device=cuda builds every test for the CUDA backend (compared with the same expected outputs).
kiln::Backend g_backend = kiln::Backend::kCPU;

// Collects library errors so a failure can say more than its Status when the Status is terse.
class CollectingLogger : public kiln::ILogger {
 public:
  explicit CollectingLogger(bool verbose) : verbose_(verbose) {}
  void log(Severity s, const char* msg) noexcept override {
    if (s <= Severity::kERROR) errors_.push_back(msg);
    if (verbose_ || s <= Severity::kERROR) std::cerr << "[" << static_cast<int>(s) << "] " << msg << "\n";
  }
  std::string last_error() const { return errors_.empty() ? "" : errors_.back(); }

 private:
  bool verbose_;
  std::vector<std::string> errors_;
};

bool read_proto_file(const fs::path& p, google::protobuf::MessageLite* m) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  return m->ParseFromString(ss.str());
}

// Names a non-tensor (or non-numeric) value type the way the skip reasons report it; empty when Kiln can hold it.
std::string unsupported_value_type(const onnx::TypeProto& t) {
  switch (t.value_case()) {
    case onnx::TypeProto::kTensorType: {
      int et = t.tensor_type().elem_type();
      kiln::DataType dt;
      if (et == onnx::TensorProto::UNDEFINED || kiln::onnx_import::dtype_from_onnx(et, &dt)) return "";
      return kiln::onnx_import::onnx_dtype_name(et);
    }
    case onnx::TypeProto::kSequenceType: return "sequence";
    case onnx::TypeProto::kMapType: return "map";
    case onnx::TypeProto::kOptionalType: return "optional";
    case onnx::TypeProto::kSparseTensorType: return "sparse tensor";
    default: return "unknown value type";
  }
}

void collect_ops(const onnx::GraphProto& g, std::set<std::string>* ops) {
  for (const auto& n : g.node()) {
    bool default_domain = n.domain().empty() || n.domain() == "ai.onnx";
    ops->insert(default_domain ? n.op_type() : n.domain() + "::" + n.op_type());
    for (const auto& a : n.attribute()) {
      if (a.has_g()) collect_ops(a.g(), ops);
      for (const auto& sg : a.graphs()) collect_ops(sg, ops);
    }
  }
}

ModelInfo inspect_model(const fs::path& dir) {
  ModelInfo info;
  info.dir = dir;
  info.name = dir.filename().string();
  if (info.name.empty()) info.name = dir.parent_path().filename().string();
  onnx::ModelProto model;
  if (!read_proto_file(dir / "model.onnx", &model)) {
    info.load_error = "cannot read or parse " + (dir / "model.onnx").string();
    return info;
  }
  for (const auto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") info.opset = static_cast<int>(o.version());
  std::set<std::string> ops;
  collect_ops(model.graph(), &ops);
  info.ops.assign(ops.begin(), ops.end());

  std::set<std::string> initializers;
  for (const auto& t : model.graph().initializer()) initializers.insert(t.name());
  std::set<std::string> dtypes;
  auto visit = [&](const onnx::ValueInfoProto& v) {
    std::string bad = unsupported_value_type(v.type());
    if (!bad.empty()) {
      if (info.skip_reason.empty()) info.skip_reason = "unsupported type: " + bad;
      dtypes.insert(bad);
    } else if (v.type().has_tensor_type()) {
      dtypes.insert(kiln::onnx_import::onnx_dtype_name(v.type().tensor_type().elem_type()));
    }
  };
  for (const auto& v : model.graph().input())
    if (!initializers.count(v.name())) visit(v);
  for (const auto& v : model.graph().output()) visit(v);
  info.dtypes.assign(dtypes.begin(), dtypes.end());
  return info;
}

// Progress goes to the parent as "S <stage>" lines, the result as one "R <json>" line.
class Reporter {
 public:
  explicit Reporter(int fd) : fd_(fd) {}
  void stage(const std::string& s) { write_line("S " + s); }
  void result(const Outcome& o) {
    Json j = {{"status", o.status}, {"stage", o.stage},       {"reason", o.reason},
              {"time_ms", o.time_ms}, {"datasets", o.datasets}, {"host_layers", o.host_layers}};
    write_line("R " + j.dump(-1, ' ', false, Json::error_handler_t::replace));
  }

 private:
  void write_line(std::string line) {
    if (fd_ < 0) return;
    line += "\n";
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n <= 0) return;
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  int fd_;
};

kiln::HostTensor to_host(const kiln::Tensor& t) {
  kiln::HostTensor h;
  h.dtype = t.dtype();
  h.dims = t.shape();
  h.data.resize(t.nbytes());
  if (t.nbytes()) std::memcpy(h.data.data(), t.raw(), t.nbytes());
  return h;
}

struct Tolerance {
  double rtol, atol;
};

Tolerance tolerance_for(kiln::DataType t) {
  switch (t) {
    case kiln::DataType::kHALF: return {1e-2, 1e-3};
    case kiln::DataType::kBF16: return {2e-2, 1e-2};
    // Neighbouring float8/float4 codes differ by far more than any tolerance; a wrong rounding must fail.
    case kiln::DataType::kFP8E4M3FN: case kiln::DataType::kFP8E4M3FNUZ: case kiln::DataType::kFP8E5M2:
    case kiln::DataType::kFP8E5M2FNUZ: case kiln::DataType::kFP4E2M1: case kiln::DataType::kFP8E8M0:
      return {0, 0};
    default: return {1e-3, 1e-5};
  }
}

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

// Empty string when got matches want. Integers and bools compare exactly; floats within rtol/atol where atol
// grows with the largest expected magnitude, since results of big sums carry absolute error of that scale.
std::string compare_tensors(const kiln::HostTensor& got_h, const kiln::Tensor& want) {
  if (got_h.dtype != want.dtype())
    return std::string("dtype ") + kiln::dtype_name(got_h.dtype) + " != expected " + kiln::dtype_name(want.dtype());
  if (got_h.dims != want.shape())
    return "shape " + kiln::dims_to_string(got_h.dims) + " != expected " + kiln::dims_to_string(want.shape());
  if (got_h.data.size() != want.nbytes())
    return "buffer holds " + std::to_string(got_h.data.size()) + " bytes, expected " + std::to_string(want.nbytes());
  kiln::Tensor got =
      kiln::Tensor::wrap(got_h.dtype, got_h.dims, const_cast<uint8_t*>(got_h.data.data()));
  const int64_t n = want.numel();
  if (!kiln::dtype_is_float(want.dtype())) {
    int64_t mismatches = 0, first = -1;
    for (int64_t i = 0; i < n; ++i)
      if (got.get_i64(i) != want.get_i64(i) && mismatches++ == 0) first = i;
    if (mismatches == 0) return "";
    return std::to_string(mismatches) + " of " + std::to_string(n) + " elements differ; first at " +
           std::to_string(first) + ": got " + std::to_string(got.get_i64(first)) + ", expected " +
           std::to_string(want.get_i64(first));
  }
  Tolerance tol = tolerance_for(want.dtype());
  double max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    double w = want.get_f64(i);
    if (std::isfinite(w)) max_abs = std::max(max_abs, std::fabs(w));
  }
  const double atol = tol.atol * std::max(1.0, max_abs);
  int64_t mismatches = 0, worst = -1;
  double worst_excess = -1;
  for (int64_t i = 0; i < n; ++i) {
    double g = got.get_f64(i), w = want.get_f64(i);
    if (std::isnan(w) || std::isnan(g)) {
      if (std::isnan(w) && std::isnan(g)) continue;
    } else if (std::isinf(w) || std::isinf(g)) {
      if (g == w) continue;
    } else {
      double err = std::fabs(g - w), allowed = atol + tol.rtol * std::fabs(w);
      if (err <= allowed) continue;
      if (err - allowed > worst_excess) { worst_excess = err - allowed; worst = i; }
      ++mismatches;
      continue;
    }
    // A NaN/Inf mismatch outranks any finite one as the example to report.
    if (worst_excess != std::numeric_limits<double>::infinity()) {
      worst = i;
      worst_excess = std::numeric_limits<double>::infinity();
    }
    ++mismatches;
  }
  if (mismatches == 0) return "";
  return std::to_string(mismatches) + " of " + std::to_string(n) + " elements outside rtol " + fmt(tol.rtol) +
         " atol " + fmt(atol) + "; worst at " + std::to_string(worst) + ": got " + fmt(got.get_f64(worst)) +
         ", expected " + fmt(want.get_f64(worst));
}

// Parser errors that mean "Kiln has no such operator" rather than "Kiln mishandled this one".
std::string unsupported_operator(const kiln::OnnxParser& parser, const kiln::Status& st) {
  for (int i = 0; i < parser.num_errors(); ++i) {
    const auto& e = parser.get_error(i);
    if (e.op_type.empty()) continue;
    std::string d = e.description;
    std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return std::tolower(c); });
    bool known = kiln::ops::OpRegistry::instance().find(e.op_type, e.domain) != nullptr;
    bool says_unsupported = d.find("unsupported op") != std::string::npos ||
                            d.find("no importer") != std::string::npos ||
                            d.find("not registered") != std::string::npos ||
                            d.find("unknown op") != std::string::npos;
    if (!known || says_unsupported) {
      bool default_domain = e.domain.empty() || e.domain == "ai.onnx";
      return default_domain ? e.op_type : e.domain + "::" + e.op_type;
    }
  }
  return "";
}

// The backend test data stores bfloat16 tensors as uint16 (numpy has no bfloat16); relabel them with the type
// the model declares so that they feed and compare as what they are.
kiln::Tensor as_declared(const kiln::Tensor& t, int declared_onnx_type) {
  kiln::DataType want;
  if (!kiln::onnx_import::dtype_from_onnx(declared_onnx_type, &want) || want == t.dtype()) return t;
  if (t.dtype() != kiln::DataType::kUINT16 || (want != kiln::DataType::kBF16 && want != kiln::DataType::kHALF)) return t;
  kiln::Tensor r(want, t.shape());
  if (t.nbytes()) std::memcpy(r.raw(), t.raw(), t.nbytes());
  return r;
}

struct DataSet {
  fs::path dir;
  std::vector<std::pair<std::string, kiln::HostTensor>> inputs;
  std::vector<kiln::Tensor> outputs;
};

// Loads input_N.pb / output_N.pb. Inputs are named by their proto name when it names a network input,
// otherwise by position among the graph's non-initializer inputs (older test files leave names empty).
kiln::Status load_datasets(const fs::path& dir, const onnx::ModelProto& model, std::vector<DataSet>* out) {
  std::set<std::string> initializers;
  for (const auto& t : model.graph().initializer()) initializers.insert(t.name());
  std::vector<std::string> input_names;
  for (const auto& v : model.graph().input())
    if (!initializers.count(v.name())) input_names.push_back(v.name());
  std::set<std::string> name_set(input_names.begin(), input_names.end());
  std::map<std::string, int> declared;
  for (const auto& v : model.graph().input()) declared[v.name()] = v.type().tensor_type().elem_type();

  std::vector<fs::path> sets;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  for (const auto& sp : sets) {
    DataSet ds;
    ds.dir = sp;
    for (int i = 0;; ++i) {
      fs::path p = sp / ("input_" + std::to_string(i) + ".pb");
      if (!fs::exists(p)) break;
      onnx::TensorProto tp;
      if (!read_proto_file(p, &tp)) return kiln::io_error("cannot parse " + p.string() + " as a TensorProto");
      auto t = kiln::onnx_import::tensor_from_proto(tp, dir.string());
      if (!t.ok()) return t.status().with_context(p.string());
      std::string name = name_set.count(tp.name()) ? tp.name()
                         : i < static_cast<int>(input_names.size()) ? input_names[i]
                                                                    : tp.name();
      ds.inputs.emplace_back(name, to_host(as_declared(t.value(), declared.count(name) ? declared[name] : 0)));
    }
    for (int i = 0; i < model.graph().output_size(); ++i) {
      fs::path p = sp / ("output_" + std::to_string(i) + ".pb");
      onnx::TensorProto tp;
      if (!read_proto_file(p, &tp)) return kiln::io_error("cannot read " + p.string());
      auto t = kiln::onnx_import::tensor_from_proto(tp, dir.string());
      if (!t.ok()) return t.status().with_context(p.string());
      ds.outputs.push_back(as_declared(t.value(), model.graph().output(i).type().tensor_type().elem_type()));
    }
    out->push_back(std::move(ds));
  }
  if (out->empty()) return kiln::invalid_model("no test_data_set_* directories in " + dir.string());
  return kiln::Status::Ok();
}

Outcome fail(const std::string& stage, const std::string& reason) {
  Outcome o;
  o.status = "fail";
  o.stage = stage;
  o.reason = reason;
  return o;
}

std::string status_text(const kiln::Status& st, const CollectingLogger& logger) {
  std::string s = st.to_string();
  std::string extra = logger.last_error();
  if (!extra.empty() && s.find(extra) == std::string::npos && st.message().size() < 40) s += " (" + extra + ")";
  return s;
}

Outcome run_pipeline(const ModelInfo& info, Reporter& rep, bool verbose) {
  using Clock = std::chrono::steady_clock;
  CollectingLogger logger(verbose);

  rep.stage("import");
  onnx::ModelProto model;
  if (!read_proto_file(info.dir / "model.onnx", &model)) return fail("import", "cannot parse model.onnx");
  std::vector<DataSet> datasets;
  if (auto st = load_datasets(info.dir, model, &datasets); !st.ok()) return fail("import", "test data: " + st.to_string());

  kiln::Builder builder(logger);
  auto network = builder.create_network();
  kiln::OnnxParser parser(*network, logger);
  kiln::Status st = parser.parse_from_file((info.dir / "model.onnx").string());
  if (!st.ok()) {
    std::string op = unsupported_operator(parser, st);
    // Model-level errors (e.g. a training-only domain with no ai.onnx import) stop the parser before it
    // names a node; an operator the registry has never heard of is then the reason to report.
    for (size_t i = 0; op.empty() && i < info.ops.size(); ++i) {
      const std::string& key = info.ops[i];
      size_t sep = key.rfind("::");
      std::string domain = sep == std::string::npos ? "" : key.substr(0, sep);
      std::string name = sep == std::string::npos ? key : key.substr(sep + 2);
      if (!kiln::ops::OpRegistry::instance().find(name, domain)) op = key;
    }
    if (!op.empty()) {
      Outcome o;
      o.status = "skip";
      o.stage = "import";
      o.reason = "unsupported operator: " + op;
      return o;
    }
    return fail("import", status_text(st, logger));
  }

  rep.stage("build");
  auto config = builder.create_builder_config();
  config->set_backend(g_backend);
  // Dynamic inputs get a profile spanning exactly the shapes the test feeds; rank-unknown inputs are pinned.
  kiln::OptimizationProfile profile;
  bool need_profile = false;
  for (int i = 0; i < network->num_inputs(); ++i) {
    kiln::ITensor* in = network->get_input(i);
    std::vector<const kiln::Dims*> fed;
    for (const auto& ds : datasets)
      for (const auto& [name, t] : ds.inputs)
        if (name == in->name()) fed.push_back(&t.dims);
    if (fed.empty()) continue;
    kiln::Dims decl = in->dims();
    bool agrees = decl.size() == fed[0]->size();
    for (size_t k = 0; agrees && k < decl.size(); ++k) agrees = decl[k] < 0 || decl[k] == (*fed[0])[k];
    if (!agrees) {
      // The test data is the ground truth: some tests feed shapes other than the declared ones (CastLike's
      // 'like' input is declared 3x4 and fed [1]), and reference backends accept that.
      bool same = std::all_of(fed.begin(), fed.end(), [&](const kiln::Dims* d) { return *d == *fed[0]; });
      decl = same ? *fed[0] : kiln::Dims(fed[0]->size(), -1);
      in->set_dims(decl);
    }
    if (std::none_of(decl.begin(), decl.end(), [](int64_t d) { return d < 0; })) continue;
    kiln::Dims lo = *fed[0], hi = *fed[0];
    for (const auto* d : fed) {
      if (d->size() != lo.size()) return fail("build", "input '" + in->name() + "' is fed with different ranks");
      for (size_t k = 0; k < lo.size(); ++k) lo[k] = std::min(lo[k], (*d)[k]), hi[k] = std::max(hi[k], (*d)[k]);
    }
    if (auto s = profile.set_shape(in->name(), lo, *fed[0], hi); !s.ok()) return fail("build", "profile: " + s.to_string());
    need_profile = true;
  }
  if (need_profile) config->add_optimization_profile(profile);

  auto t0 = Clock::now();
  auto blob = builder.build_serialized_network(*network, *config);
  if (!blob.ok()) return fail("build", status_text(blob.status(), logger));

  rep.stage("load");
  kiln::Runtime runtime(logger);
  auto engine = runtime.deserialize_engine(blob->data(), blob->size());
  if (!engine.ok()) return fail("load", status_text(engine.status(), logger));
  auto context = engine.value()->create_execution_context();
  if (!context) return fail("load", "create_execution_context returned null");

  Outcome ok;
  if (g_backend != kiln::Backend::kCPU)
    if (auto b = kiln::runtime::device_backend(g_backend); b.ok())
      ok.host_layers = static_cast<int>((*b)->host_nodes(engine.value()->plan()).size());
  ok.stage = "compare";
  for (const auto& ds : datasets) {
    rep.stage("run");
    auto res = context->infer(ds.inputs);
    std::string where = ds.dir.filename().string();
    if (!res.ok()) return fail("run", where + ": " + status_text(res.status(), logger));
    rep.stage("compare");
    for (int i = 0; i < model.graph().output_size(); ++i) {
      const std::string& oname = model.graph().output(i).name();
      auto it = std::find_if(res->begin(), res->end(), [&](const auto& p) { return p.first == oname; });
      if (it == res->end()) return fail("compare", where + ": output '" + oname + "' missing from the results");
      std::string diff = compare_tensors(it->second, ds.outputs[i]);
      if (!diff.empty()) return fail("compare", where + ": output '" + oname + "': " + diff);
    }
    ++ok.datasets;
  }
  ok.time_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return ok;
}

Json to_json(const ModelInfo& info, const Outcome& o) {
  return {{"name", info.name},       {"dir", info.dir.string()}, {"status", o.status},
          {"stage", o.stage},        {"reason", o.reason},       {"ops", info.ops},
          {"dtypes", info.dtypes},   {"opset", info.opset},      {"time_ms", o.time_ms},
          {"datasets", o.datasets},  {"host_layers", o.host_layers}};
}

// Runs one test in a child; the parent turns a crash or timeout into a failure at the last reported stage.
Outcome run_forked(const ModelInfo& info, int timeout_s, bool verbose) {
  int fds[2];
  if (pipe(fds) != 0) return fail("import", std::string("pipe: ") + std::strerror(errno));
  std::cout.flush();
  pid_t pid = fork();
  if (pid < 0) return fail("import", std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(fds[0]);
    Reporter rep(fds[1]);
    Outcome o;
    try {
      o = run_pipeline(info, rep, verbose);
    } catch (const std::exception& e) {
      o = fail("run", std::string("exception: ") + e.what());
    } catch (...) {
      o = fail("run", "unknown exception");
    }
    rep.result(o);
    ::close(fds[1]);
    _exit(0);
  }
  ::close(fds[1]);
  std::string buf, stage = "import";
  Json result;
  bool got_result = false, timed_out = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) { timed_out = true; break; }
    pollfd pfd{fds[0], POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char chunk[4096];
    ssize_t n = ::read(fds[0], chunk, sizeof chunk);
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      if (line.rfind("S ", 0) == 0) stage = line.substr(2);
      else if (line.rfind("R ", 0) == 0) { result = Json::parse(line.substr(2), nullptr, false); got_result = !result.is_discarded(); }
    }
  }
  ::close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (got_result) {
    Outcome o;
    o.status = result.value("status", "fail");
    o.stage = result.value("stage", stage);
    o.reason = result.value("reason", "");
    o.time_ms = result.value("time_ms", 0.0);
    o.datasets = result.value("datasets", 0);
    o.host_layers = result.value("host_layers", 0);
    return o;
  }
  if (timed_out) return fail(stage, "timeout after " + std::to_string(timeout_s) + " s");
  if (WIFSIGNALED(wstatus))
    return fail(stage, std::string("crashed with signal ") + std::to_string(WTERMSIG(wstatus)) + " (" +
                           strsignal(WTERMSIG(wstatus)) + ")");
  return fail(stage, "child exited with status " + std::to_string(WEXITSTATUS(wstatus)) + " without a result");
}

}  // namespace

int main(int argc, char** argv) {
  int timeout_s = 60;
  bool use_fork = true, verbose = false;
  std::vector<fs::path> dirs;
  for (int a = 1; a < argc; ++a) {
    std::string arg = argv[a];
    if (arg.rfind("--timeout=", 0) == 0) timeout_s = std::max(1, std::atoi(arg.c_str() + 10));
    else if (arg == "--no-fork") use_fork = false;
    else if (arg == "--verbose") verbose = true;
    else if (arg == "--device=cuda") g_backend = kiln::Backend::kCUDA;
    else if (arg == "--device=cpu") g_backend = kiln::Backend::kCPU;
    else if (arg == "-h" || arg == "--help") {
      std::cout << "usage: kiln_node_runner [--timeout=SECONDS] [--no-fork] [--verbose] [--device=cpu|cuda] TEST_DIR...\n";
      return 0;
    } else dirs.emplace_back(arg);
  }
  for (const auto& dir : dirs) {
    ModelInfo info = inspect_model(dir);
    Outcome o;
    if (!info.load_error.empty()) o = fail("import", info.load_error);
    else if (!info.skip_reason.empty()) { o.status = "skip"; o.stage = "import"; o.reason = info.skip_reason; }
    else if (use_fork) o = run_forked(info, timeout_s, verbose);
    else {
      Reporter rep(-1);
      try { o = run_pipeline(info, rep, verbose); }
      catch (const std::exception& e) { o = fail("run", std::string("exception: ") + e.what()); }
    }
    std::cout << to_json(info, o).dump(-1, ' ', false, Json::error_handler_t::replace) << std::endl;
  }
  return 0;
}
