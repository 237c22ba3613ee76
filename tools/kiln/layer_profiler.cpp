// LayerProfiler (see layer_profiler.h).
#include "layer_profiler.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

namespace kiln::cli {
namespace {

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double total_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

// Per run, the sum over layers: the median of these is the Total row's median.
std::vector<double> per_run_totals(const LayerProfiler& p) {
  std::vector<double> totals(static_cast<size_t>(p.runs()), 0.0);
  for (const auto& l : p.layers())
    for (size_t r = 0; r < l.ms.size() && r < totals.size(); ++r) totals[r] += l.ms[r];
  return totals;
}

}  // namespace

LayerProfiler::Layer& LayerProfiler::layer(const std::string& name) {
  auto [it, inserted] = index_.emplace(name, layers_.size());
  if (inserted) layers_.push_back({name, std::vector<double>(static_cast<size_t>(runs_), 0.0)});
  return layers_[it->second];
}

void LayerProfiler::report_layer_time(const char* layer_name, float ms) noexcept {
  try {
    layer(layer_name ? layer_name : "");
    current_[index_.at(layer_name ? layer_name : "")] += ms;
  } catch (...) {
    // A profiler must not throw into the runtime; a lost sample only thins the statistics.
  }
}

void LayerProfiler::end_run() {
  ++runs_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto it = current_.find(i);
    layers_[i].ms.push_back(it == current_.end() ? 0.0 : it->second);
  }
  current_.clear();
}

void LayerProfiler::merge(const LayerProfiler& other) {
  for (const auto& l : other.layers_) layer(l.name);
  for (int r = 0; r < other.runs_; ++r) {
    for (const auto& l : other.layers_) current_[index_.at(l.name)] += l.ms[static_cast<size_t>(r)];
    end_run();
  }
}

std::unordered_map<std::string, LayerShare> layer_shares(const LayerProfiler& p) {
  double total = 0;
  for (const auto& l : p.layers()) total += total_of(l.ms);
  const double runs = std::max(p.runs(), 1);
  std::unordered_map<std::string, LayerShare> shares;
  for (const auto& l : p.layers()) {
    const double t = total_of(l.ms);
    shares[l.name] = {t / runs, total > 0 ? t / total * 100 : 0.0};
  }
  return shares;
}

void print_profile(const LayerProfiler& p) {
  const double total = [&] {
    double t = 0;
    for (const auto& l : p.layers()) t += total_of(l.ms);
    return t;
  }();
  size_t width = 5;
  for (const auto& l : p.layers()) width = std::max(width, l.name.size());
  std::printf("=== Profile (%d iterations) ===\n", p.runs());
  std::printf("%*s %14s %14s %14s %9s\n", -static_cast<int>(width), "Layer", "Time (ms)", "Avg. (ms)",
              "Median (ms)", "Time %");
  const double runs = std::max(p.runs(), 1);
  for (const auto& l : p.layers()) {
    const double t = total_of(l.ms);
    std::printf("%*s %14.4f %14.6f %14.6f %9.1f\n", -static_cast<int>(width), l.name.c_str(), t, t / runs,
                median_of(l.ms), total > 0 ? t / total * 100 : 0.0);
  }
  std::printf("%*s %14.4f %14.6f %14.6f %9.1f\n", -static_cast<int>(width), "Total", total, total / runs,
              median_of(per_run_totals(p)), total > 0 ? 100.0 : 0.0);
}

Status export_profile(const std::string& path, const LayerProfiler& p) {
  double total = 0;
  for (const auto& l : p.layers()) total += total_of(l.ms);
  const double runs = std::max(p.runs(), 1);
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  out.push_back({{"count", p.runs()}});
  for (const auto& l : p.layers()) {
    const double t = total_of(l.ms);
    out.push_back({{"name", l.name},
                   {"timeMs", t},
                   {"averageMs", t / runs},
                   {"medianMs", median_of(l.ms)},
                   {"percentage", total > 0 ? t / total * 100 : 0.0}});
  }
  std::ofstream f(path, std::ios::trunc);
  if (!f) return io_error("--exportProfile: cannot open '" + path + "' for writing");
  f << out.dump(2) << "\n";
  f.close();
  if (!f) return io_error("--exportProfile: failed writing '" + path + "'");
  return Status::Ok();
}

}  // namespace kiln::cli
