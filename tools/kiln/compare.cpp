// kiln compare (see compare.h): option parsing, the subject and reference runs, and the comparison report.
#include "compare.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/small_types.h"
#include "engine_setup.h"
#include "host_data.h"
#include "inference.h"
#include "kiln/builder.h"
#include "kiln/logger.h"
#include "kiln/onnx_parser.h"
#include "options.h"

namespace kiln::cli {
namespace {

constexpr int kUsageExitCode = 2;

struct CompareOptions {
  Options build;  // the subject's build and run options
  std::string reference = "cpu";
  std::string reference_onnx;
  double atol = 1e-5, rtol = 1e-5;
};

template <typename T>
double load_as_double(const HostTensor& t, size_t i) {
  T v;
  std::memcpy(&v, t.data.data() + i * sizeof(T), sizeof(T));
  return static_cast<double>(v);
}

double element(const HostTensor& t, size_t i) {
  switch (t.dtype) {
    case DataType::kFLOAT: return load_as_double<float>(t, i);
    case DataType::kDOUBLE: return load_as_double<double>(t, i);
    case DataType::kHALF: { uint16_t h; std::memcpy(&h, t.data.data() + 2 * i, 2); return half_to_float(h); }
    case DataType::kBF16: { uint16_t h; std::memcpy(&h, t.data.data() + 2 * i, 2); return bf16_to_float(h); }
    case DataType::kBOOL: return t.data[i] != 0;
    case DataType::kINT8: return load_as_double<int8_t>(t, i);
    case DataType::kUINT8: return load_as_double<uint8_t>(t, i);
    case DataType::kINT16: return load_as_double<int16_t>(t, i);
    case DataType::kUINT16: return load_as_double<uint16_t>(t, i);
    case DataType::kINT32: return load_as_double<int32_t>(t, i);
    case DataType::kUINT32: return load_as_double<uint32_t>(t, i);
    case DataType::kINT64: return load_as_double<int64_t>(t, i);
    case DataType::kUINT64: return load_as_double<uint64_t>(t, i);
    case DataType::kINT4: case DataType::kINT2: return load_as_double<int8_t>(t, i);
    case DataType::kUINT4: case DataType::kUINT2: return load_as_double<uint8_t>(t, i);
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kFP4E2M1: case DataType::kFP8E8M0:
      return small_float_to_float(t.dtype, t.data[i]);
  }
  return 0;
}

size_t count_of(const HostTensor& t) { return t.data.size() / std::max<size_t>(dtype_size(t.dtype), 1); }

// numpy names of the types ONNX Runtime's Python API hands over; bfloat16 and the small floats have none.
const std::map<DataType, std::string>& numpy_names() {
  static const std::map<DataType, std::string> m = {
      {DataType::kFLOAT, "float32"}, {DataType::kDOUBLE, "float64"}, {DataType::kHALF, "float16"},
      {DataType::kINT8, "int8"},     {DataType::kUINT8, "uint8"},    {DataType::kINT16, "int16"},
      {DataType::kUINT16, "uint16"}, {DataType::kINT32, "int32"},    {DataType::kUINT32, "uint32"},
      {DataType::kINT64, "int64"},   {DataType::kUINT64, "uint64"},  {DataType::kBOOL, "bool"}};
  return m;
}

// The ONNX Runtime side runs in python3 (the C++ library is not a dependency of Kiln): inputs and outputs go
// through raw files described by a JSON manifest.
constexpr const char* kOrtScript = R"PY(
import json, os, sys
try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:
    print(f"cannot import {e.name}: {e}")
    sys.exit(3)
m = json.load(open(sys.argv[1]))
model = onnx.load(m["model"])
if m["mark"]:
    known = {o.name for o in model.graph.output}
    try:
        infos = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    except Exception:
        infos = {}
    for name in m["mark"]:
        if name not in known:
            model.graph.output.append(infos.get(name, onnx.helper.make_empty_tensor_value_info(name)))
options = ort.SessionOptions()
# Intermediate tensors must stay as the model names them: no fusion.
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
feeds = {i["name"]: np.fromfile(i["file"], dtype=i["dtype"]).reshape(i["dims"]) for i in m["inputs"]}
names = [o.name for o in session.get_outputs()]
outputs = []
for k, (name, value) in enumerate(zip(names, session.run(names, feeds))):
    value = np.ascontiguousarray(value)
    path = os.path.join(m["dir"], f"out{k}.bin")
    value.tofile(path)
    outputs.append({"name": name, "dtype": str(value.dtype), "dims": list(value.shape), "file": path})
json.dump({"version": ort.__version__, "outputs": outputs}, open(m["result"], "w"))
)PY";

Result<std::map<std::string, HostTensor>> run_onnxruntime(const std::string& model, const NamedTensors& inputs,
                                                          const std::vector<std::string>& mark, std::string* version) {
  namespace fs = std::filesystem;
  std::string pattern = (fs::temp_directory_path() / "kiln-compare-XXXXXX").string();
  if (!mkdtemp(pattern.data())) return io_error("cannot create a temporary directory for ONNX Runtime");
  const fs::path dir = pattern;
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};

  nlohmann::json manifest = {{"model", fs::absolute(model).string()},
                             {"dir", dir.string()},
                             {"result", (dir / "result.json").string()},
                             {"mark", mark},
                             {"inputs", nlohmann::json::array()}};
  for (size_t k = 0; k < inputs.size(); ++k) {
    const auto& [name, t] = inputs[k];
    auto np = numpy_names().find(t.dtype);
    if (np == numpy_names().end())
      return unsupported("--reference=onnxruntime: input '" + name + "' is " + dtype_name(t.dtype) +
                         ", which numpy cannot hold");
    const fs::path file = dir / ("in" + std::to_string(k) + ".bin");
    KILN_RETURN_IF_ERROR(write_file(file.string(), t.data));
    manifest["inputs"].push_back({{"name", name}, {"dtype", np->second}, {"dims", t.dims}, {"file", file.string()}});
  }
  const std::string text = manifest.dump();
  KILN_RETURN_IF_ERROR(write_file((dir / "manifest.json").string(), std::vector<uint8_t>(text.begin(), text.end())));
  const std::string script(kOrtScript);
  KILN_RETURN_IF_ERROR(write_file((dir / "reference.py").string(), std::vector<uint8_t>(script.begin(), script.end())));

  const std::string command = "python3 '" + (dir / "reference.py").string() + "' '" + (dir / "manifest.json").string() + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return internal_error("cannot start python3 for --reference=onnxruntime");
  std::string output;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) output.append(buf, n);
  const int status = pclose(pipe);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  if (code == 3)
    return unsupported("--reference=onnxruntime needs the onnxruntime Python package for python3 (" + output +
                       "); install it (pip install onnxruntime) or use --reference=cpu");
  if (code == 127) return unsupported("--reference=onnxruntime needs python3, which was not found");
  if (code != 0) return internal_error("ONNX Runtime failed on '" + model + "':\n" + output);

  std::ifstream in(dir / "result.json");
  nlohmann::json result = nlohmann::json::parse(in, nullptr, false);
  if (result.is_discarded()) return internal_error("ONNX Runtime wrote no readable result");
  *version = result.value("version", "");
  std::map<std::string, HostTensor> outputs;
  for (const auto& o : result["outputs"]) {
    HostTensor t;
    bool known = false;
    for (const auto& [dt, name] : numpy_names())
      if (name == o["dtype"].get<std::string>()) t.dtype = dt, known = true;
    if (!known) continue;  // a type Kiln cannot compare (strings): left out of the comparison
    t.dims = o["dims"].get<Dims>();
    std::ifstream f(o["file"].get<std::string>(), std::ios::binary);
    t.data.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    outputs[o["name"].get<std::string>()] = std::move(t);
  }
  return outputs;
}

// --shapes for the reference build: exactly the shapes the subject runs with.
std::vector<std::string> shapes_of(const NamedTensors& inputs) {
  std::vector<std::string> out;
  for (const auto& [name, t] : inputs) out.push_back("'" + name + "':" + dims_to_string(t.dims));
  return out;
}

Result<std::map<std::string, HostTensor>> run_engine(const Engine& engine, const NamedTensors& inputs) {
  auto context = engine.create_execution_context();
  if (!context) return internal_error("could not create an execution context");
  KILN_ASSIGN_OR_RETURN(auto outputs, context->infer(inputs));
  std::map<std::string, HostTensor> m;
  for (auto& [name, t] : outputs) m[name] = std::move(t);
  return m;
}

Result<std::unique_ptr<Engine>> build_and_load(const Options& o, Backend backend, ILogger& logger,
                                               std::vector<MarkedTensor>* marked) {
  KILN_ASSIGN_OR_RETURN(BuiltEngine built, build_engine(o, backend, logger));
  if (marked) *marked = built.marked;
  Runtime runtime(logger);
  return runtime.deserialize_engine(built.bytes.data(), built.bytes.size());
}

// The inputs as a reference network declares them: a float input whose binding in the subject has another float
// type (an engine built with float16 bindings) converted to the reference's; `type_of` gives the reference's type
// of an input by name.
template <typename TypeOf>
Result<NamedTensors> inputs_as_declared(const NamedTensors& inputs, TypeOf type_of) {
  NamedTensors out;
  for (const auto& [name, t] : inputs) {
    KILN_ASSIGN_OR_RETURN(DataType want, type_of(name));
    if (want == t.dtype) {
      out.emplace_back(name, t);
      continue;
    }
    auto c = convert_float(t, want);
    if (!c.ok()) return c.status().with_context("input '" + name + "' for the reference");
    out.emplace_back(name, std::move(c.value()));
  }
  return out;
}

// The float input types an ONNX model declares, by name (parsed, not built).
Result<std::map<std::string, DataType>> declared_input_types(const std::string& model, ILogger& logger) {
  Builder builder(logger);
  auto network = builder.create_network();
  OnnxParser parser(*network, logger);
  KILN_RETURN_IF_ERROR(parser.parse_from_file(model).with_context("failed to parse '" + model + "'"));
  std::map<std::string, DataType> types;
  for (int i = 0; i < network->num_inputs(); ++i) types[network->get_input(i)->name()] = network->get_input(i)->dtype();
  return types;
}

std::string shape_text(const HostTensor& t) { return t.dims.empty() ? "scalar" : dims_to_string(t.dims); }

int compare(const CompareOptions& c, StderrLogger& logger) {
  auto fail = [&logger](const Status& st) {
    logger.log(ILogger::Severity::kERROR, st.to_string().c_str());
    return 1;
  };
  const Options& o = c.build;
  auto device = resolve_device(o);
  if (!device.ok()) return fail(device.status());

  // The subject.
  std::unique_ptr<Engine> subject;
  std::vector<MarkedTensor> marked;
  std::string subject_text;
  if (!o.load_engine.empty()) {
    Runtime runtime(logger);
    auto loaded = runtime.load_engine_file(o.load_engine);
    if (!loaded.ok()) return fail(loaded.status().with_context("failed to load engine '" + o.load_engine + "'"));
    subject = std::move(loaded.value());
    subject_text = "engine " + o.load_engine + " on " + backend_name(subject->backend());
  } else {
    auto built = build_and_load(o, device->backend, logger, &marked);
    if (!built.ok()) return fail(built.status());
    subject = std::move(built.value());
    std::string flags;
    for (auto [name, on] : {std::pair{"fp16", o.fp16}, std::pair{"bf16", o.bf16}})
      if (on) flags += std::string(flags.empty() ? "" : ", ") + name;
    if (!o.layer_precisions.empty()) flags += std::string(flags.empty() ? "" : ", ") + "layer precisions";
    subject_text = o.onnx + " built for " + backend_name(device->backend) + (flags.empty() ? "" : " (" + flags + ")");
  }
  auto inputs = prepare_inputs(*subject, o);
  if (!inputs.ok()) return fail(inputs.status());
  auto actual = run_engine(*subject, *inputs);
  if (!actual.ok()) return fail(actual.status().with_context("the subject failed"));

  // The reference, on the same inputs.
  const std::string ref_model = c.reference_onnx.empty() ? o.onnx : c.reference_onnx;
  std::vector<std::string> mark_names;
  for (const auto& m : marked) mark_names.push_back(m.tensor);
  std::map<std::string, HostTensor> expected;
  std::string reference_text;
  if (c.reference == "onnxruntime") {
    auto declared = declared_input_types(ref_model, logger);
    if (!declared.ok()) return fail(declared.status());
    auto ref_inputs = inputs_as_declared(*inputs, [&](const std::string& name) -> Result<DataType> {
      auto it = declared->find(name);
      if (it == declared->end()) return invalid_argument("'" + name + "' is not an input of " + ref_model);
      return it->second;
    });
    if (!ref_inputs.ok()) return fail(ref_inputs.status());
    std::string version;
    auto ran = run_onnxruntime(ref_model, *ref_inputs, mark_names, &version);
    if (!ran.ok()) return fail(ran.status());
    expected = std::move(ran.value());
    reference_text = "ONNX Runtime " + version + " (CPU) on " + ref_model;
  } else {
    Options r;
    r.onnx = ref_model;
    r.shapes = shapes_of(*inputs);
    r.mark_all = o.mark_all;
    r.device = DeviceChoice::kCpu;
    std::vector<MarkedTensor> ref_marked;
    auto ref = build_and_load(r, Backend::kCPU, logger, &ref_marked);
    if (!ref.ok()) return fail(ref.status().with_context("the reference build failed"));
    auto ref_inputs = inputs_as_declared(*inputs, [&](const std::string& name) -> Result<DataType> {
      return (*ref)->get_tensor_dtype(name.c_str());
    });
    if (!ref_inputs.ok()) return fail(ref_inputs.status());
    auto ran = run_engine(**ref, *ref_inputs);
    if (!ran.ok()) return fail(ran.status().with_context("the reference failed"));
    expected = std::move(ran.value());
    reference_text = "CPU backend on " + ref_model;
  }

  std::printf("Subject:   %s\n", subject_text.c_str());
  std::printf("Reference: %s\n", reference_text.c_str());
  for (const auto& [name, t] : *inputs)
    std::printf("Input '%s': %s %s\n", name.c_str(), dtype_name(t.dtype), shape_text(t).c_str());

  // What to compare, in order: with --markAll the subject network's topological order, else its outputs.
  struct Entry {
    std::string tensor, layer, op;
    bool output = false;  // an output of the network: it must exist on both sides
  };
  std::vector<Entry> order;
  std::set<std::string> listed;
  for (const auto& m : marked) {
    order.push_back({m.tensor, m.layer, m.op_type, m.network_output});
    listed.insert(m.tensor);
  }
  for (int i = 0; i < subject->num_io_tensors(); ++i) {
    const std::string& name = subject->get_tensor_name(i);
    if (subject->get_tensor_mode(name) == TensorIOMode::kOUTPUT && !listed.count(name)) order.push_back({name, "", "", true});
  }

  std::printf("=== Comparison (atol %g, rtol %g) ===\n", c.atol, c.rtol);
  std::printf("%-32s %-24s %12s %12s %12s %12s %10s  %s\n", "tensor", "layer", "max abs", "mean abs", "max rel",
              "mean rel", "cosine", "result");
  size_t compared = 0, failed = 0, absent = 0;
  const Entry* first_failure = nullptr;
  TensorDiff first_diff;
  for (const auto& e : order) {
    auto a = actual->find(e.tensor);
    auto r = expected.find(e.tensor);
    const bool is_output = e.output;
    if (a == actual->end() || r == expected.end()) {
      // --markAll: a tensor one side optimized away is not there to compare; a real output must be.
      if (!is_output) {
        ++absent;
        continue;
      }
      std::printf("%-32s %-24s FAIL: not an output of the %s\n", e.tensor.c_str(), "-",
                  r == expected.end() ? "reference" : "tested engine");
      ++failed;
      if (!first_failure) first_failure = &e;
      continue;
    }
    const TensorDiff d = diff_tensors(a->second, r->second, c.atol, c.rtol);
    ++compared;
    const std::string layer = e.layer.empty() ? "(output)" : e.layer + " [" + e.op + "]";
    if (!d.shape_matches) {
      std::printf("%-32s %-24s FAIL: shape %s, reference %s\n", e.tensor.c_str(), layer.c_str(),
                  shape_text(a->second).c_str(), shape_text(r->second).c_str());
    } else {
      std::string result = d.passed() ? "pass" : "FAIL (" + std::to_string(d.failing) + " of " +
                                                     std::to_string(d.elements) + " elements)";
      std::printf("%-32s %-24s %12.4e %12.4e %12.4e %12.4e %10.6f  %s\n", e.tensor.c_str(), layer.c_str(), d.max_abs,
                  d.mean_abs, d.max_rel, d.mean_rel, d.cosine, result.c_str());
    }
    if (!d.passed()) {
      ++failed;
      if (!first_failure) first_failure = &e, first_diff = d;
    }
  }
  if (absent)
    std::printf("%zu intermediate tensor(s) exist in only one of the two runs (fused or folded away) and were not "
                "compared\n",
                absent);
  if (first_failure && !first_failure->layer.empty()) {
    std::printf("First layer over the tolerance: '%s' (%s), output '%s': max abs error %.4e, max rel error %.4e\n",
                first_failure->layer.c_str(), first_failure->op.c_str(), first_failure->tensor.c_str(),
                first_diff.max_abs, first_diff.max_rel);
  }
  if (failed) {
    std::printf("FAILED: %zu of %zu tensors exceed the tolerance\n", failed, compared);
    return 1;
  }
  std::printf("PASSED: %zu tensors within the tolerance\n", compared);
  return 0;
}

}  // namespace

TensorDiff diff_tensors(const HostTensor& a, const HostTensor& r, double atol, double rtol) {
  TensorDiff d;
  if (a.dims != r.dims || count_of(a) != count_of(r)) {
    d.shape_matches = false;
    return d;
  }
  d.elements = count_of(a);
  double abs_sum = 0, rel_sum = 0, dot = 0, na = 0, nr = 0;
  size_t rel_count = 0, numeric = 0;
  for (size_t i = 0; i < d.elements; ++i) {
    const double x = element(a, i), y = element(r, i);
    if (std::isnan(x) || std::isnan(y)) {
      if (!(std::isnan(x) && std::isnan(y))) ++d.nan_mismatches, ++d.failing;
      continue;
    }
    if (std::isinf(x) || std::isinf(y)) {
      if (x != y) ++d.failing;
      continue;
    }
    const double err = std::fabs(x - y);
    if (err > atol + rtol * std::fabs(y)) ++d.failing;
    d.max_abs = std::max(d.max_abs, err);
    abs_sum += err;
    ++numeric;
    if (y != 0) {
      const double rel = err / std::fabs(y);
      d.max_rel = std::max(d.max_rel, rel);
      rel_sum += rel;
      ++rel_count;
    }
    dot += x * y, na += x * x, nr += y * y;
  }
  d.mean_abs = numeric ? abs_sum / static_cast<double>(numeric) : 0;
  d.mean_rel = rel_count ? rel_sum / static_cast<double>(rel_count) : 0;
  d.cosine = na == 0 && nr == 0 ? 1.0 : na == 0 || nr == 0 ? 0.0 : dot / std::sqrt(na * nr);
  return d;
}

int compare_main(int argc, char** argv) {
  CompareOptions c;
  Options& o = c.build;
  std::string device;
  CLI::App app{
      "kiln compare: run an engine or model and a reference on the same inputs and compare every output\n"
      "(with --markAll, every intermediate tensor) by absolute and relative error and cosine similarity.\n"
      "Exit code 0 when every tensor is within --atol/--rtol, 1 when one is not or a run fails.",
      "kiln compare"};
  app.get_formatter()->column_width(30);
  app.add_option("--onnx", o.onnx, "Model to build and test (and the reference's model unless --referenceOnnx)")
      ->type_name("FILE");
  app.add_option("--loadEngine", o.load_engine,
                 "Test this engine instead of building one (the reference needs --onnx or --referenceOnnx)")
      ->type_name("FILE");
  app.add_option("--device", device, "Backend of the tested build: cpu or cuda (default: as kiln)")
      ->type_name("DEV")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_flag("--fp16", o.fp16, "Build the tested engine with FP16 (CUDA)");
  app.add_flag("--bf16", o.bf16, "Build the tested engine with BF16 (CUDA)");
  app.add_flag("--noTF32", o.no_tf32, "Build the tested engine without TF32");
  app.add_option("--layerPrecisions", o.layer_precisions, "Per-layer precision of the tested build (as kiln)")
      ->type_name("SPEC");
  app.add_option("--precisionConstraints", o.precision_constraints, "none|prefer|obey (as kiln)")
      ->check(CLI::IsMember({"none", "prefer", "obey"}));
  app.add_option("--minShapes", o.min_shapes, "Profile of the tested build (as kiln)")->type_name("SPEC");
  app.add_option("--optShapes", o.opt_shapes, "Profile of the tested build (as kiln)")->type_name("SPEC");
  app.add_option("--maxShapes", o.max_shapes, "Profile of the tested build (as kiln)")->type_name("SPEC");
  app.add_option("--shapes", o.shapes, "Input shapes to compare at (as kiln)")->type_name("SPEC");
  app.add_option("--loadInputs", o.load_inputs, "Input data files (as kiln); other inputs get seeded random data")
      ->type_name("SPEC");
  app.add_option("--reference", c.reference,
                 "cpu (default): Kiln's CPU reference backend; onnxruntime: ONNX Runtime through python3")
      ->check(CLI::IsMember({"cpu", "onnxruntime"}));
  app.add_option("--referenceOnnx", c.reference_onnx,
                 "Model the reference runs (default: --onnx), e.g. the original of an edited model")
      ->type_name("FILE");
  app.add_option("--atol", c.atol, "Absolute tolerance (default 1e-5)")->type_name("X");
  app.add_option("--rtol", c.rtol, "Relative tolerance (default 1e-5): pass when |a - r| <= atol + rtol * |r|")
      ->type_name("X");
  app.add_flag("--markAll", o.mark_all,
               "Compare every intermediate tensor that both builds still have after optimization, and name the "
               "first layer (in topological order) whose output exceeds the tolerance");
  app.add_flag("--verbose", o.verbose, "Log verbose messages from the library");
  app.set_help_flag("-h,--help", "Print this help and exit");

  std::vector<std::string> known;
  for (const CLI::Option* opt : app.get_options())
    for (const auto& n : opt->get_lnames()) known.push_back(n);
  for (int i = 1; i < argc; ++i) {
    std::string token = argv[i];
    if (token.size() < 2 || token[0] != '-' || (token.size() > 1 && (std::isdigit(static_cast<unsigned char>(token[1])) || token[1] == '.'))) continue;
    if (auto error = unknown_flag_error(token, known)) {
      std::fprintf(stderr, "[E] %s\n[E] Run 'kiln compare --help' for the list of options.\n", error->c_str());
      return kUsageExitCode;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "[E] %s\n[E] Run 'kiln compare --help' for the list of options.\n", e.what());
    return kUsageExitCode;
  }
  auto usage = [](const std::string& m) {
    std::fprintf(stderr, "[E] %s\n[E] Run 'kiln compare --help' for the list of options.\n", m.c_str());
    return kUsageExitCode;
  };
  o.device = device.empty() ? DeviceChoice::kDefault : device == "cuda" ? DeviceChoice::kCuda : DeviceChoice::kCpu;
  if (o.onnx.empty() && o.load_engine.empty()) return usage("Give --onnx (a model to build) or --loadEngine.");
  if (!o.load_engine.empty() && o.onnx.empty() && c.reference_onnx.empty())
    return usage("The reference runs a model: give --onnx or --referenceOnnx with --loadEngine.");
  if (!o.load_engine.empty() && o.mark_all)
    return usage("--markAll needs --onnx: a loaded engine has only the outputs it was built with.");
  if (!o.load_engine.empty() && (o.fp16 || o.bf16 || !o.layer_precisions.empty() || !o.min_shapes.empty()))
    return usage("build options (--fp16, --bf16, --layerPrecisions, --minShapes...) need --onnx, not --loadEngine.");
  if (!(c.atol >= 0) || !(c.rtol >= 0)) return usage("--atol and --rtol must be >= 0.");
  // With --loadEngine, --onnx names the reference's model only.
  if (!o.load_engine.empty() && c.reference_onnx.empty()) c.reference_onnx = o.onnx;

  StderrLogger logger(o.verbose ? ILogger::Severity::kVERBOSE : ILogger::Severity::kWARNING);
  return compare(c, logger);
}

}  // namespace kiln::cli
