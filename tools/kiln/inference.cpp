// Input preparation and the timing loop of the kiln CLI (trtexec's warm-up / iterations / duration rules).
#include "inference.h"

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <map>

#include "device_io.h"
#include "host_data.h"

namespace kiln::cli {
namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

bool is_dynamic(const Dims& d) {
  for (int64_t v : d) {
    if (v < 0) return true;
  }
  return false;
}

std::string names_of(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "'" : ", '") + n + "'";
  return s.empty() ? "none" : s;
}

std::string profile_text(const Engine& engine, const std::string& name) {
  if (engine.num_optimization_profiles() == 0) return "";
  Dims lo, mid, hi;
  if (!engine.get_profile_shape(name, 0, &lo, &mid, &hi).ok()) return "";
  return " (profile 0: min " + dims_to_string(lo) + ", opt " + dims_to_string(mid) + ", max " + dims_to_string(hi) +
         ")";
}

// Resolves each input's run shape: --shapes, else the profile's opt shape, else the static shape.
Result<std::map<std::string, Dims>> run_shapes(const Engine& engine, const Options& o,
                                               const std::vector<std::string>& inputs) {
  KILN_ASSIGN_OR_RETURN(auto given, parse_shape_list(o.shapes, "--shapes"));
  std::map<std::string, Dims> shapes;
  for (auto& [name, dims] : given) {
    if (std::find(inputs.begin(), inputs.end(), name) == inputs.end()) {
      return invalid_argument("--shapes: '" + name + "' is not an input of the engine (inputs: " + names_of(inputs) +
                              ")");
    }
    shapes[name] = dims;
  }
  for (const auto& name : inputs) {
    if (shapes.count(name)) continue;
    Dims declared = engine.get_tensor_shape(name);
    if (!is_dynamic(declared)) {
      shapes[name] = declared;
      continue;
    }
    Dims lo, mid, hi;
    Status st = engine.num_optimization_profiles() > 0 ? engine.get_profile_shape(name, 0, &lo, &mid, &hi)
                                                       : invalid_argument("the engine has no optimization profile");
    if (!st.ok()) {
      return st.with_context("input '" + name + "' is dynamic (" + dims_to_string(declared) +
                             ") and has no --shapes entry or profile opt shape");
    }
    shapes[name] = mid;
  }
  return shapes;
}

}  // namespace

Result<InferenceResult> run_inference(const Engine& engine, const Options& o, ILogger& logger) {
  std::vector<std::string> input_names, output_names;
  for (int i = 0; i < engine.num_io_tensors(); ++i) {
    const std::string& name = engine.get_tensor_name(i);
    (engine.get_tensor_mode(name) == TensorIOMode::kINPUT ? input_names : output_names).push_back(name);
  }
  KILN_ASSIGN_OR_RETURN(auto shapes, run_shapes(engine, o, input_names));
  KILN_ASSIGN_OR_RETURN(auto files, split_name_value_list(o.load_inputs, "--loadInputs"));
  std::map<std::string, std::string> file_of;
  for (auto& [name, path] : files) {
    if (std::find(input_names.begin(), input_names.end(), name) == input_names.end()) {
      return invalid_argument("--loadInputs: '" + name +
                              "' is not an input of the engine (inputs: " + names_of(input_names) + ")");
    }
    if (!file_of.emplace(name, path).second)
      return invalid_argument("--loadInputs: input '" + name + "' is given twice");
  }

  std::unique_ptr<ExecutionContext> context = engine.create_execution_context();
  if (!context) return internal_error("could not create an execution context");

  InferenceResult result;
  for (size_t i = 0; i < input_names.size(); ++i) {
    const std::string& name = input_names[i];
    HostTensor t;
    t.dtype = engine.get_tensor_dtype(name);
    t.dims = shapes[name];
    Status st = context->set_input_shape(name, t.dims);
    if (!st.ok()) {
      return st.with_context("shape " + dims_to_string(t.dims) + " for input '" + name + "' was rejected" +
                             profile_text(engine, name));
    }
    if (auto f = file_of.find(name); f != file_of.end()) {
      KILN_RETURN_IF_ERROR(load_raw(f->second, name, t));
    } else {
      // A fixed seed per input position, so that two runs of one engine see the same data.
      fill_random(t, 0x6b696c6eu + static_cast<uint32_t>(i));
    }
    result.inputs.emplace_back(name, std::move(t));
  }

  // Data-dependent output shapes (NonZero and the like) are only known after a run: use infer(), which
  // returns the outputs with their shapes, instead of pre-bound buffers.
  bool shapes_known = true;
  for (const auto& name : output_names) {
    auto dims = context->get_tensor_shape(name);
    HostTensor t;
    t.dtype = engine.get_tensor_dtype(name);
    if (!dims.ok() || is_dynamic(dims.value())) {
      shapes_known = false;
    } else {
      t.dims = dims.value();
      allocate(t);
    }
    result.outputs.emplace_back(name, std::move(t));
  }
  const bool on_device = engine.backend() == Backend::kCUDA && shapes_known;
  DeviceRunner device;
  DeviceIterTiming last;
  if (engine.backend() == Backend::kCPU && (o.use_cuda_graph || o.no_data_transfers))
    return unsupported(std::string(o.use_cuda_graph ? "--useCudaGraph" : "--noDataTransfers") +
                       " needs the CUDA backend; this engine runs on the CPU");
  if (on_device) {
    KILN_RETURN_IF_ERROR(device.setup(*context, result.inputs, result.outputs));
    auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
    std::printf("Device memory: weights %.2f MiB; activation arena %.2f MiB for the largest profile shapes "
                "(activations without reuse: %.2f MiB)\n",
                mib(engine.weights_device_bytes()), mib(context->activation_arena_bytes()),
                mib(context->activation_total_bytes()));
  } else if (shapes_known) {
    for (auto& [name, t] : result.inputs) KILN_RETURN_IF_ERROR(context->set_tensor_address(name, t.data.data()));
    for (auto& [name, t] : result.outputs) KILN_RETURN_IF_ERROR(context->set_tensor_address(name, t.data.data()));
  } else {
    logger.log(ILogger::Severity::kVERBOSE, "output shapes depend on the data; running through infer()");
  }

  bool first_run = true;
  auto run_once = [&]() -> Status {
    if (on_device) {
      KILN_RETURN_IF_ERROR(device.run(o.use_cuda_graph, first_run || !o.no_data_transfers, &last));
      if (first_run) KILN_RETURN_IF_ERROR(device.fetch(&result.outputs));
      first_run = false;
      return Status::Ok();
    }
    if (shapes_known) return context->execute();
    auto outputs = context->infer(result.inputs);
    if (!outputs.ok()) return outputs.status();
    result.outputs = std::move(outputs.value());
    return Status::Ok();
  };

  Status first = run_once();
  if (!first.ok()) return first.with_context("inference failed");

  const Clock::time_point warm_start = Clock::now();
  while (ms_between(warm_start, Clock::now()) < o.warm_up_ms) {
    KILN_RETURN_IF_ERROR(run_once());
    ++result.timings.warm_up_runs;
  }

  Timings& timings = result.timings;
  const Clock::time_point timed_start = Clock::now();
  Clock::time_point end = timed_start;
  while (static_cast<int64_t>(timings.latency_ms.size()) < o.iterations ||
         ms_between(timed_start, end) < o.duration_s * 1000) {
    const Clock::time_point begin = Clock::now();
    KILN_RETURN_IF_ERROR(run_once());
    end = Clock::now();
    timings.start_ms.push_back(ms_between(timed_start, begin));
    timings.latency_ms.push_back(ms_between(begin, end));
    if (on_device) {
      timings.h2d_ms.push_back(last.h2d_ms);
      timings.gpu_ms.push_back(last.compute_ms);
      timings.d2h_ms.push_back(last.d2h_ms);
    }
  }
  timings.walltime_s = ms_between(timed_start, end) / 1000;
  return result;
}

}  // namespace kiln::cli
