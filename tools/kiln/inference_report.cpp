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

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

void print_engine_io(const Engine& engine, size_t engine_bytes) {
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
    if (input && engine.num_optimization_profiles() > 0 && engine.get_profile_shape(name, 0, &lo, &mid, &hi).ok()) {
      line += " (profile 0: min " + dims_to_string(lo) + ", opt " + dims_to_string(mid) + ", max " +
              dims_to_string(hi) + ")";
    }
    std::printf("%s\n", line.c_str());
  }
}

LatencyStats latency_stats(std::vector<double> v) {
  LatencyStats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  s.p90 = percentile(v, 90);
  s.p95 = percentile(v, 95);
  s.p99 = percentile(v, 99);
  return s;
}

void print_performance_summary(const Timings& t, Backend backend) {
  const LatencyStats s = latency_stats(t.latency_ms);
  const double qps = t.walltime_s > 0 ? static_cast<double>(t.latency_ms.size()) / t.walltime_s : 0;
  std::printf("=== Performance summary ===\n");
  std::printf("Throughput: %.3f qps\n", qps);
  std::printf(
      "Latency: min = %.5f ms, max = %.5f ms, mean = %.5f ms, median = %.5f ms, percentile(90%%) = %.5f ms, "
      "percentile(95%%) = %.5f ms, percentile(99%%) = %.5f ms\n",
      s.min, s.max, s.mean, s.median, s.p90, s.p95, s.p99);
  std::printf("Total Host Walltime: %.4f s\n", t.walltime_s);
  if (backend == Backend::kCPU) {
    std::printf("Total GPU Compute Time: n/a (CPU backend)\n");
  } else if (!t.gpu_ms.empty()) {
    auto line = [](const char* what, const std::vector<double>& v) {
      const LatencyStats g = latency_stats(v);
      std::printf("%s: min = %.5f ms, max = %.5f ms, mean = %.5f ms, median = %.5f ms, percentile(90%%) = %.5f ms, "
                  "percentile(95%%) = %.5f ms, percentile(99%%) = %.5f ms\n",
                  what, g.min, g.max, g.mean, g.median, g.p90, g.p95, g.p99);
    };
    line("H2D Latency", t.h2d_ms);
    line("GPU Compute Time", t.gpu_ms);
    line("D2H Latency", t.d2h_ms);
    double total = 0;
    for (double x : t.gpu_ms) total += x;
    std::printf("Total GPU Compute Time: %.4f s\n", total / 1000);
  }
  std::printf("Timed iterations: %zu (after %d warm-up runs)\n", t.latency_ms.size(), t.warm_up_runs);
  if (backend == Backend::kCPU)
    std::printf("Latency is the host wall time of one synchronous execution, inputs and outputs in host memory.\n");
  else
    std::printf("Latency is the host wall time of one inference: upload, engine, download and synchronization.\n");
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
  for (size_t i = 0; i < t.latency_ms.size(); ++i) {
    runs.push_back({{"startComputeMs", t.start_ms[i]},
                    {"endComputeMs", t.start_ms[i] + t.latency_ms[i]},
                    {"computeMs", t.latency_ms[i]},
                    {"latencyMs", t.latency_ms[i]}});
  }
  return write_text(path, runs.dump(2) + "\n").with_context("--exportTimes");
}

}  // namespace kiln::cli
