// Printing and exporting the kiln CLI's results in trtexec's layouts.
#include "inference_report.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "common/small_types.h"
#include "host_data.h"

namespace kiln::cli {
namespace {

template <typename T>
T load(const HostTensor& t, size_t i) {
  T v;
  std::memcpy(&v, t.data.data() + i * sizeof(T), sizeof(T));
  return v;
}

template <typename T>
void append_number(std::string& out, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(v)) return void(out += "NaN");
    if (std::isinf(v)) return void(out += v > 0 ? "Infinity" : "-Infinity");
  }
  char buf[32];
  // Shortest text that reads back to the same value: exact for every dtype, and no longer than needed.
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, end);
}

// Integers are read at their own width so that int64 values stay exact; FP16/BF16 widen to float exactly.
void append_element(std::string& out, const HostTensor& t, size_t i) {
  switch (t.dtype) {
    case DataType::kFLOAT:
      return append_number(out, load<float>(t, i));
    case DataType::kDOUBLE:
      return append_number(out, load<double>(t, i));
    case DataType::kHALF:
      return append_number(out, half_to_float(load<uint16_t>(t, i)));
    case DataType::kBF16:
      return append_number(out, bf16_to_float(load<uint16_t>(t, i)));
    case DataType::kBOOL:
      return append_number(out, static_cast<int>(load<uint8_t>(t, i) != 0));
    case DataType::kINT8:
      return append_number(out, static_cast<int>(load<int8_t>(t, i)));
    case DataType::kUINT8:
      return append_number(out, static_cast<int>(load<uint8_t>(t, i)));
    case DataType::kINT16:
      return append_number(out, load<int16_t>(t, i));
    case DataType::kUINT16:
      return append_number(out, load<uint16_t>(t, i));
    case DataType::kINT32:
      return append_number(out, load<int32_t>(t, i));
    case DataType::kUINT32:
      return append_number(out, load<uint32_t>(t, i));
    case DataType::kINT64:
      return append_number(out, load<int64_t>(t, i));
    case DataType::kUINT64:
      return append_number(out, load<uint64_t>(t, i));
    case DataType::kINT4: case DataType::kINT2:
      return append_number(out, static_cast<int>(load<int8_t>(t, i)));
    case DataType::kUINT4: case DataType::kUINT2:
      return append_number(out, static_cast<int>(load<uint8_t>(t, i)));
    case DataType::kFP8E4M3FN: case DataType::kFP8E4M3FNUZ: case DataType::kFP8E5M2: case DataType::kFP8E5M2FNUZ:
    case DataType::kFP4E2M1: case DataType::kFP8E8M0:
      return append_number(out, small_float_to_float(t.dtype, load<uint8_t>(t, i)));
  }
}

size_t element_count(const HostTensor& t) { return t.data.size() / dtype_size(t.dtype); }

Status write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return io_error("cannot open '" + path + "' for writing");
  out << text;
  out.close();
  if (!out) return io_error("failed writing '" + path + "'");
  return Status::Ok();
}

// trtexec's percentile of sorted values: leave out the largest floor((1 - p/100) * n) and take the next.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto n = static_cast<int64_t>(sorted.size());
  const auto exclude = static_cast<int64_t>((1 - p / 100) * static_cast<double>(n));
  return sorted[static_cast<size_t>(std::clamp<int64_t>(n - 1 - exclude, 0, n - 1))];
}

std::string format_ms(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.5f", v);
  return buf;
}

std::string stats_text(const LatencyStats& s, const std::vector<double>& percentages) {
  std::string t = "min = " + format_ms(s.min) + " ms, max = " + format_ms(s.max) + " ms, mean = " + format_ms(s.mean) +
                  " ms, median = " + format_ms(s.median) + " ms";
  for (size_t i = 0; i < percentages.size(); ++i) {
    char label[32];
    std::snprintf(label, sizeof(label), "%g", percentages[i]);
    t += std::string(", percentile(") + label + "%) = " + format_ms(s.percentiles[i]) + " ms";
  }
  return t;
}

template <typename F>
std::vector<double> field(const std::vector<RunTrace>& runs, F f) {
  std::vector<double> v;
  v.reserve(runs.size());
  for (const auto& r : runs) v.push_back(f(r));
  return v;
}

void print_explanations() {
  std::printf(
      "=== What the metrics mean ===\n"
      "Throughput: timed queries (of every stream) divided by the Total Host Walltime.\n"
      "Latency: time to serve one query: H2D Latency + GPU Compute Time + D2H Latency on the GPU; on the CPU "
      "backend, the wall time of one synchronous execution.\n"
      "Enqueue Time: host time of the call that launches one query; when it approaches the GPU Compute Time the "
      "host, not the GPU, limits the throughput. On the CPU backend the call runs the whole engine.\n"
      "H2D / D2H Latency: copies of one query's inputs to the GPU and of its outputs back (CUDA events).\n"
      "GPU Compute Time: the engine's kernels for one query (CUDA events around the enqueue).\n"
      "Total Host Walltime: from the start of the first timed query to the end of the last.\n"
      "Total GPU Compute Time: the sum of every query's GPU Compute Time; far below the walltime means an idle GPU.\n"
      "Energy: the GPU's power as NVML reports it, sampled during the timed run.\n");
}

}  // namespace

void print_engine_io(const Engine& engine, size_t engine_bytes, int profile) {
  std::printf("=== Engine ===\n");
  std::printf("Backend: %s, layers: %d, Kiln version: %s, size: %.2f MiB\n", backend_name(engine.backend()),
              engine.num_layers(), engine.kiln_version().c_str(), static_cast<double>(engine_bytes) / (1 << 20));
  for (int i = 0; i < engine.num_io_tensors(); ++i) {
    const std::string& name = engine.get_tensor_name(i);
    const bool input = engine.get_tensor_mode(name) == TensorIOMode::kINPUT;
    std::string line = std::string(input ? "Input  '" : "Output '") + name +
                       "': " + dtype_name(engine.get_tensor_dtype(name)) + " " +
                       dims_to_string(engine.get_tensor_shape(name));
    Dims lo, mid, hi;
    if (input && engine.num_optimization_profiles() > profile &&
        engine.get_profile_shape(name, profile, &lo, &mid, &hi).ok()) {
      line += " (profile " + std::to_string(profile) + ": min " + dims_to_string(lo) + ", opt " + dims_to_string(mid) +
              ", max " + dims_to_string(hi) + ")";
    }
    std::printf("%s\n", line.c_str());
  }
}

LatencyStats latency_stats(std::vector<double> v, const std::vector<double>& percentages) {
  LatencyStats s;
  s.percentiles.assign(percentages.size(), 0);
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const double n = static_cast<double>(v.size());
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
  const size_t m = v.size();
  s.median = m % 2 ? v[m / 2] : (v[m / 2 - 1] + v[m / 2]) / 2;
  for (size_t i = 0; i < percentages.size(); ++i) s.percentiles[i] = percentile(v, percentages[i]);
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.cv_percent = s.mean > 0 ? std::sqrt(var / n) / s.mean * 100 : 0;
  return s;
}

void print_performance_summary(const InferenceResult& result, Backend backend, const Options& o, ILogger& logger) {
  const Timings& t = result.timings;
  const auto& runs = t.runs;
  const auto& pct = o.percentiles;
  const bool gpu = t.gpu;

  if (o.verbose) {
    // trtexec's trace averages, one line per --avgRuns consecutive queries.
    std::printf("=== Trace details ===\nTrace averages of %d runs:\n", o.avg_runs);
    double compute = 0, latency = 0, enqueue = 0;
    int count = 0;
    for (const auto& r : runs) {
      compute += r.compute_ms(), latency += r.latency_ms(), enqueue += r.enqueue_ms();
      if (++count == o.avg_runs) {
        const double k = o.avg_runs;
        if (gpu)
          std::printf("Average on %d runs - GPU latency: %.5f ms - Host latency: %.5f ms (enqueue %.5f ms)\n",
                      o.avg_runs, compute / k, latency / k, enqueue / k);
        else
          std::printf("Average on %d runs - GPU latency: n/a - Host latency: %.5f ms (enqueue %.5f ms)\n", o.avg_runs,
                      latency / k, enqueue / k);
        compute = latency = enqueue = 0;
        count = 0;
      }
    }
  }

  const double qps = t.walltime_s > 0 ? static_cast<double>(runs.size()) / t.walltime_s : 0;
  const LatencyStats latency = latency_stats(field(runs, [](const RunTrace& r) { return r.latency_ms(); }), pct);
  const LatencyStats enqueue = latency_stats(field(runs, [](const RunTrace& r) { return r.enqueue_ms(); }), pct);
  const LatencyStats h2d = latency_stats(field(runs, [](const RunTrace& r) { return r.h2d_ms(); }), pct);
  const LatencyStats compute = latency_stats(field(runs, [](const RunTrace& r) { return r.compute_ms(); }), pct);
  const LatencyStats d2h = latency_stats(field(runs, [](const RunTrace& r) { return r.d2h_ms(); }), pct);
  const char* na = "n/a (CPU backend: no GPU, inputs and outputs stay in host memory)";

  std::printf("=== Performance summary ===\n");
  std::printf("Throughput: %.3f qps\n", qps);
  std::printf("Latency: %s\n", stats_text(latency, pct).c_str());
  std::printf("Enqueue Time: %s\n", stats_text(enqueue, pct).c_str());
  std::printf("H2D Latency: %s\n", gpu ? stats_text(h2d, pct).c_str() : na);
  std::printf("GPU Compute Time: %s\n", gpu ? stats_text(compute, pct).c_str() : na);
  std::printf("D2H Latency: %s\n", gpu ? stats_text(d2h, pct).c_str() : na);
  std::printf("Total Host Walltime: %.4f s\n", t.walltime_s);
  if (gpu)
    std::printf("Total GPU Compute Time: %.4f s\n", compute.mean * static_cast<double>(runs.size()) / 1000);
  else
    std::printf("Total GPU Compute Time: %s\n", na);
  if (result.energy) {
    const auto& e = *result.energy;
    std::printf("Energy: %.1f W average over %.3f s, %.3f J in total, %.6f J per inference (%s)\n", e.average_watts,
                e.seconds, e.joules, runs.empty() ? 0.0 : e.joules / static_cast<double>(runs.size()),
                e.from_energy_counter ? "NVML energy counter" : "NVML power samples");
  } else {
    std::printf("Energy: n/a (%s)\n", result.energy_note.c_str());
  }
  std::printf("First inference: %.3f ms after the engine was ready (context setup and the first run, which "
              "prepares every layer)\n",
              result.first_inference_ms);
  std::printf("Timed iterations: %zu on %d stream%s (after %d warm-up runs)\n", runs.size(), t.streams,
              t.streams == 1 ? "" : "s", t.warm_up_runs);
  if (backend == Backend::kCPU)
    std::printf("Latency is the host wall time of one synchronous execution, inputs and outputs in host memory.\n");
  else if (!gpu)
    std::printf("Latency is the host wall time of one inference through infer() (data-dependent output shapes).\n");

  auto warn = [&logger](const std::string& m) { logger.log(ILogger::Severity::kWARNING, m.c_str()); };
  if (gpu && !runs.empty()) {
    // trtexec's thresholds: enqueue above 80% of compute, a transfer at least as long as compute, CV above 1%.
    if (enqueue.median > 0.8 * compute.median)
      warn("* The host's Enqueue Time is close to or above the GPU Compute Time: throughput may be limited by "
           "launching work rather than by the GPU, which then idles." +
           std::string(o.use_cuda_graph ? "" : " --useCudaGraph replays the launches with less host work."));
    if (!o.no_data_transfers && h2d.median >= compute.median)
      warn("* Copying the inputs to the GPU (H2D) takes at least as long as the compute: throughput may be limited "
           "by the transfers. --noDataTransfers times the engine alone.");
    if (!o.no_data_transfers && d2h.median >= compute.median)
      warn("* Copying the outputs back (D2H) takes at least as long as the compute: throughput may be limited by "
           "the transfers. --noDataTransfers times the engine alone.");
    if (compute.cv_percent > 1.0) {
      char m[256];
      std::snprintf(m, sizeof(m),
                    "* GPU Compute Time is unstable: its coefficient of variation is %.2f%%. Locked GPU clocks%s "
                    "may steady it.",
                    compute.cv_percent, o.use_spin_wait ? "" : " or --useSpinWait");
      warn(m);
    }
  } else if (!runs.empty() && latency.cv_percent > 1.0) {
    char m[256];
    std::snprintf(m, sizeof(m),
                  "* Latency is unstable: its coefficient of variation is %.2f%% (other processes sharing the CPU "
                  "are the usual cause).",
                  latency.cv_percent);
    warn(m);
  }
  if (o.profile_separately() && !o.separate_profile_run)
    logger.log(ILogger::Severity::kINFO,
               "--useCudaGraph with a per-layer profile: the timed runs above replayed the CUDA graph; the profile "
               "comes from separate runs launched layer by layer (as with --separateProfileRun).");
  if (o.profiling() && !o.profile_separately())
    logger.log(ILogger::Severity::kINFO,
               "The profiler was attached during the timed runs, which adds per-layer timing to every query; "
               "--separateProfileRun keeps it out of the numbers above.");
  if (o.verbose) print_explanations();
  else std::printf("Explanations of the performance metrics are printed with --verbose.\n");
}

void dump_tensors(const NamedTensors& tensors) {
  std::printf("Output Tensors:\n");
  for (const auto& [name, t] : tensors) {
    std::printf("%s: (%s)\n", name.c_str(), dims_to_string(t.dims).c_str());
    const size_t n = element_count(t);
    const size_t row =
        t.dims.empty() || t.dims.back() <= 0 ? std::max<size_t>(n, 1) : static_cast<size_t>(t.dims.back());
    std::string line;
    for (size_t i = 0; i < n; ++i) {
      if (!line.empty()) line += ' ';
      append_element(line, t, i);
      if ((i + 1) % row == 0 || i + 1 == n) {
        std::printf("%s\n", line.c_str());
        line.clear();
      }
    }
  }
}

Status export_output(const std::string& path, const NamedTensors& tensors) {
  std::string text = "[\n";
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& [name, t] = tensors[k];
    text += "  { \"name\" : " + nlohmann::json(name).dump() + ",\n";
    text += "    \"dimensions\" : \"" + dims_to_string(t.dims) + "\",\n";
    text += "    \"values\" : [ ";
    const size_t n = element_count(t);
    for (size_t i = 0; i < n; ++i) {
      if (i) text += ", ";
      append_element(text, t, i);
    }
    text += std::string(" ]\n  }") + (k + 1 < tensors.size() ? "," : "") + "\n";
  }
  text += "]\n";
  return write_text(path, text).with_context("--exportOutput");
}

Status export_times(const std::string& path, const Timings& t) {
  nlohmann::ordered_json runs = nlohmann::ordered_json::array();
  for (const auto& r : t.runs) {
    runs.push_back({{"startEnqMs", r.enq_start},
                    {"endEnqMs", r.enq_end},
                    {"startH2dMs", r.h2d_start},
                    {"endH2dMs", r.h2d_end},
                    {"startComputeMs", r.compute_start},
                    {"endComputeMs", r.compute_end},
                    {"startD2hMs", r.d2h_start},
                    {"endD2hMs", r.d2h_end},
                    {"h2dMs", r.h2d_ms()},
                    {"computeMs", r.compute_ms()},
                    {"d2hMs", r.d2h_ms()},
                    {"latencyMs", r.latency_ms()}});
  }
  return write_text(path, runs.dump(2) + "\n").with_context("--exportTimes");
}

}  // namespace kiln::cli
