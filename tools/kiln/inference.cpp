// Input preparation and the timing loop of the kiln CLI (trtexec's warm-up / iterations / duration rules), with
// --infStreams contexts on their own threads, the per-layer profiler and the energy meter.
#include "inference.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

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

std::string profile_text(const Engine& engine, const std::string& name, int profile) {
  if (engine.num_optimization_profiles() <= profile) return "";
  Dims lo, mid, hi;
  if (!engine.get_profile_shape(name, profile, &lo, &mid, &hi).ok()) return "";
  return " (profile " + std::to_string(profile) + ": min " + dims_to_string(lo) + ", opt " + dims_to_string(mid) +
         ", max " + dims_to_string(hi) + ")";
}

void io_names(const Engine& engine, std::vector<std::string>* inputs, std::vector<std::string>* outputs) {
  for (int i = 0; i < engine.num_io_tensors(); ++i) {
    const std::string& name = engine.get_tensor_name(i);
    (engine.get_tensor_mode(name) == TensorIOMode::kINPUT ? inputs : outputs)->push_back(name);
  }
}

// One execution context with its own buffers: stream 0 gives the outputs, the others only time.
class Stream {
 public:
  Stream(const Engine& engine, const Options& o, int index) : engine_(engine), o_(o), index_(index) {}

  Status init(const NamedTensors& inputs, const std::vector<std::string>& output_names, ILogger& logger) {
    context_ = engine_.create_execution_context();
    if (!context_) return internal_error("could not create an execution context");
    if (o_.profile != 0 || engine_.num_optimization_profiles() > 1) {
      Status st = context_->set_optimization_profile(o_.profile);
      if (!st.ok()) return st.with_context("--profile");
    }
    inputs_ = inputs;
    for (auto& [name, t] : inputs_) {
      Status st = context_->set_input_shape(name, t.dims);
      if (!st.ok()) {
        return st.with_context("shape " + dims_to_string(t.dims) + " for input '" + name + "' was rejected" +
                               profile_text(engine_, name, o_.profile));
      }
    }
    // Data-dependent output shapes (NonZero and the like) are only known after a run: use infer(), which
    // returns the outputs with their shapes, instead of pre-bound buffers.
    for (const auto& name : output_names) {
      auto dims = context_->get_tensor_shape(name);
      HostTensor t;
      t.dtype = engine_.get_tensor_dtype(name);
      if (!dims.ok() || is_dynamic(dims.value())) {
        shapes_known_ = false;
      } else {
        t.dims = dims.value();
        allocate(t);
      }
      outputs_.emplace_back(name, std::move(t));
    }
    on_device_ = engine_.backend() == Backend::kCUDA && shapes_known_;
    if (on_device_) {
      KILN_RETURN_IF_ERROR(device_.setup(*context_, inputs_, outputs_));
      if (index_ == 0) {
        auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
        std::printf("Device memory: weights %.2f MiB; activation arena %.2f MiB for the largest profile shapes "
                    "(activations without reuse: %.2f MiB)\n",
                    mib(engine_.weights_device_bytes()), mib(context_->activation_arena_bytes()),
                    mib(context_->activation_total_bytes()));
      }
    } else if (shapes_known_) {
      for (auto& [name, t] : inputs_) KILN_RETURN_IF_ERROR(context_->set_tensor_address(name, t.data.data()));
      for (auto& [name, t] : outputs_) KILN_RETURN_IF_ERROR(context_->set_tensor_address(name, t.data.data()));
    } else if (index_ == 0) {
      logger.log(ILogger::Severity::kVERBOSE, "output shapes depend on the data; running through infer()");
    }
    return Status::Ok();
  }

  // One inference; `origin` is the start of the timed run, which the trace's times are relative to.
  Status run(Clock::time_point origin, RunTrace* trace) {
    const Clock::time_point begin = Clock::now();
    if (on_device_) {
      DeviceIterTiming d;
      // A profiled run launches layer by layer (the profiler's events sit between them): no graph replay.
      const bool graph = o_.use_cuda_graph && !context_->profiler();
      KILN_RETURN_IF_ERROR(device_.run(graph, first_ || !o_.no_data_transfers, o_.use_spin_wait, &d));
      if (first_) KILN_RETURN_IF_ERROR(device_.fetch(&outputs_));
      first_ = false;
      if (trace) {
        const double t0 = ms_between(origin, begin);
        trace->enq_start = t0 + d.enqueue_offset_ms;
        trace->enq_end = trace->enq_start + d.enqueue_ms;
        trace->h2d_start = t0;
        trace->h2d_end = t0 + d.h2d_ms;
        trace->compute_start = trace->h2d_end;
        trace->compute_end = trace->compute_start + d.compute_ms;
        trace->d2h_start = trace->compute_end;
        trace->d2h_end = trace->d2h_start + d.d2h_ms;
      }
    } else {
      if (shapes_known_) {
        KILN_RETURN_IF_ERROR(context_->execute());
      } else {
        auto outputs = context_->infer(inputs_);
        if (!outputs.ok()) return outputs.status();
        outputs_ = std::move(outputs.value());
      }
      if (trace) {
        const double a = ms_between(origin, begin), b = ms_between(origin, Clock::now());
        *trace = {a, b, a, a, a, b, b, b, index_};
      }
    }
    if (trace) trace->stream = index_;
    if (context_->profiler()) profiler_.end_run();
    return Status::Ok();
  }

  void attach_profiler(bool on) { context_->set_profiler(on ? &profiler_ : nullptr); }
  const LayerProfiler& profiler() const { return profiler_; }
  const NamedTensors& inputs() const { return inputs_; }
  NamedTensors& outputs() { return outputs_; }
  bool on_device() const { return on_device_; }

 private:
  const Engine& engine_;
  const Options& o_;
  int index_;
  std::unique_ptr<ExecutionContext> context_;
  NamedTensors inputs_, outputs_;
  DeviceRunner device_;
  LayerProfiler profiler_;
  bool shapes_known_ = true, on_device_ = false, first_ = true;
};

// trtexec's stopping rule, per stream: at least --iterations runs and at least --duration seconds.
bool keep_going(const Options& o, size_t runs, Clock::time_point start) {
  return static_cast<int64_t>(runs) < o.iterations || ms_between(start, Clock::now()) < o.duration_s * 1000;
}

}  // namespace

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
  if (o.profile > 0 && o.profile >= engine.num_optimization_profiles())
    return invalid_argument("--profile=" + std::to_string(o.profile) + ": the engine has " +
                            std::to_string(engine.num_optimization_profiles()) + " optimization profile(s)");
  for (const auto& name : inputs) {
    if (shapes.count(name)) continue;
    Dims declared = engine.get_tensor_shape(name);
    if (!is_dynamic(declared)) {
      shapes[name] = declared;
      continue;
    }
    Dims lo, mid, hi;
    Status st = engine.num_optimization_profiles() > 0 ? engine.get_profile_shape(name, o.profile, &lo, &mid, &hi)
                                                       : invalid_argument("the engine has no optimization profile");
    if (!st.ok()) {
      return st.with_context("input '" + name + "' is dynamic (" + dims_to_string(declared) +
                             ") and has no --shapes entry or profile opt shape");
    }
    shapes[name] = mid;
  }
  return shapes;
}

Result<NamedTensors> prepare_inputs(const Engine& engine, const Options& o) {
  std::vector<std::string> input_names, output_names;
  io_names(engine, &input_names, &output_names);
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
  NamedTensors inputs;
  for (size_t i = 0; i < input_names.size(); ++i) {
    const std::string& name = input_names[i];
    HostTensor t;
    t.dtype = engine.get_tensor_dtype(name);
    t.dims = shapes[name];
    if (auto f = file_of.find(name); f != file_of.end()) {
      KILN_RETURN_IF_ERROR(load_raw(f->second, name, t));
    } else {
      // A fixed seed per input position, so that two runs of one engine see the same data.
      fill_random(t, 0x6b696c6eu + static_cast<uint32_t>(i));
    }
    inputs.emplace_back(name, std::move(t));
  }
  return inputs;
}

Result<InferenceResult> run_inference(const Engine& engine, const Options& o, ILogger& logger) {
  std::vector<std::string> input_names, output_names;
  io_names(engine, &input_names, &output_names);
  InferenceResult result;
  KILN_ASSIGN_OR_RETURN(result.inputs, prepare_inputs(engine, o));
  if (engine.backend() == Backend::kCPU && (o.use_cuda_graph || o.no_data_transfers))
    return unsupported(std::string(o.use_cuda_graph ? "--useCudaGraph" : "--noDataTransfers") +
                       " needs the CUDA backend; this engine runs on the CPU");
  if (engine.backend() == Backend::kCPU && o.use_spin_wait)
    logger.log(ILogger::Severity::kINFO,
               "--useSpinWait: the CPU backend runs each inference synchronously on the calling thread, so there "
               "is no event to wait on; the flag changes nothing here");
  if (o.threads)
    logger.log(ILogger::Severity::kINFO,
               "--threads: Kiln always drives each --infStreams stream from its own thread; nothing more to enable");

  const Clock::time_point setup_start = Clock::now();
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < o.inf_streams; ++i) {
    streams.push_back(std::make_unique<Stream>(engine, o, i));
    Status st = streams.back()->init(result.inputs, output_names, logger);
    if (!st.ok()) return o.inf_streams > 1 ? st.with_context("stream " + std::to_string(i)) : st;
  }
  Stream& first = *streams[0];
  Status st = first.run(Clock::now(), nullptr);
  if (!st.ok()) return st.with_context("inference failed");
  result.first_inference_ms = std::chrono::duration<double, std::milli>(Clock::now() - setup_start).count();
  result.outputs = first.outputs();
  // Every stream's first run (which also fetches its outputs on the GPU) stays out of warm-up and timing.
  for (size_t i = 1; i < streams.size(); ++i) {
    st = streams[i]->run(Clock::now(), nullptr);
    if (!st.ok()) return st.with_context("inference failed on stream " + std::to_string(i));
  }

  EnergyMeter meter;
  bool measure_energy = false;
  if (Status e = meter.open(engine.backend() == Backend::kCUDA ? current_gpu_pci_bus_id() : ""); !e.ok()) {
    result.energy_note = e.message();
  } else if (engine.backend() != Backend::kCUDA) {
    result.energy_note = "CPU backend: NVML measures the GPU, which this run does not use";
  } else {
    measure_energy = true;
  }

  // Every stream warms up until the same deadline, then all start timing together.
  const bool profile_timed = o.profiling() && !o.profile_separately();
  const size_t n = streams.size();
  Clock::time_point timed_start;
  std::vector<std::vector<RunTrace>> traces(n);
  std::vector<Status> failures(n);
  std::vector<int> warm_ups(n, 0);
  std::atomic<bool> failed{false};
  auto begin_timing = [&]() noexcept {
    timed_start = Clock::now();
    if (measure_energy) meter.start();
  };
  std::barrier sync(static_cast<std::ptrdiff_t>(n), begin_timing);
  const Clock::time_point warm_end =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(o.warm_up_ms));
  auto drive = [&](size_t i) {
    Stream& s = *streams[i];
    Status status;
    while (status.ok() && !failed && Clock::now() < warm_end) {
      status = s.run(Clock::now(), nullptr);
      ++warm_ups[i];
    }
    if (!status.ok()) {
      failures[i] = status;
      failed = true;
      sync.arrive_and_drop();
      return;
    }
    s.attach_profiler(profile_timed);
    sync.arrive_and_wait();
    const Clock::time_point start = timed_start;
    // The duration is measured over the recorded queries themselves, so that the walltime reported from them
    // is never short of --duration.
    auto timed_ms = [&] { return traces[i].empty() ? 0.0 : traces[i].back().end() - traces[i].front().start(); };
    while (!failed && (static_cast<int64_t>(traces[i].size()) < o.iterations || timed_ms() < o.duration_s * 1000)) {
      RunTrace t;
      status = s.run(start, &t);
      if (!status.ok()) {
        failures[i] = status;
        failed = true;
        break;
      }
      traces[i].push_back(t);
    }
    s.attach_profiler(false);
  };
  if (n == 1) {
    drive(0);
  } else {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < n; ++i) threads.emplace_back(drive, i);
    for (auto& t : threads) t.join();
  }
  meter.stop();
  for (size_t i = 0; i < n; ++i) {
    if (!failures[i].ok()) return n > 1 ? failures[i].with_context("stream " + std::to_string(i)) : failures[i];
  }

  Timings& timings = result.timings;
  timings.streams = static_cast<int>(n);
  timings.gpu = first.on_device();
  // trtexec's walltime: from the first timed query's start to the last one's end.
  double start_ms = 1e300, end_ms = 0;
  for (size_t i = 0; i < n; ++i) {
    timings.warm_up_runs += warm_ups[i];
    for (const auto& t : traces[i]) {
      start_ms = std::min(start_ms, t.start());
      end_ms = std::max(end_ms, t.end());
    }
    timings.runs.insert(timings.runs.end(), traces[i].begin(), traces[i].end());
  }
  std::sort(timings.runs.begin(), timings.runs.end(),
            [](const RunTrace& a, const RunTrace& b) { return a.enq_start < b.enq_start; });
  timings.walltime_s = timings.runs.empty() ? 0 : (end_ms - start_ms) / 1000;
  if (measure_energy) result.energy = meter.reading();

  if (o.profiling()) {
    if (o.profile_separately()) {
      // trtexec's --separateProfileRun: the timed numbers above ran without the profiler; these runs profile.
      first.attach_profiler(true);
      const Clock::time_point start = Clock::now();
      size_t runs = 0;
      while (keep_going(o, runs, start)) {
        Status ps = first.run(start, nullptr);
        if (!ps.ok()) return ps.with_context("profile run");
        ++runs;
      }
      first.attach_profiler(false);
    }
    result.profile.emplace();
    for (const auto& s : streams) result.profile->merge(s->profiler());
  }
  return result;
}

}  // namespace kiln::cli
