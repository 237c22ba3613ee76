// The timing cache file (see timing_cache.h).
#include "builder/timing_cache.h"

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace kiln::builder {

namespace {
constexpr const char* kFormat = "kiln-timing-cache";
constexpr int kVersion = 1;
}  // namespace

std::string device_key(const runtime::DeviceInfo& info) {
  // A build with the CUTLASS tactics has candidates one without lacks: its cache entries are its own, so that a
  // cache written without them does not keep its layers from timing them.
  return info.name + " sm_" + std::to_string(info.cc_major) + std::to_string(info.cc_minor) + " cuda " +
         info.cuda_runtime + " cublasLt " + info.cublaslt + " cudnn " + info.cudnn +
         (info.cutlass.empty() ? "" : " cutlass " + info.cutlass);
}

Status TimingCache::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Ok();  // a first build creates the file
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != kFormat)
    return invalid_argument("timing cache '" + path + "' is not a Kiln timing cache (expected a JSON object with "
                            "\"format\": \"" + kFormat + "\"); delete it or pass another --timingCacheFile");
  if (j.value("version", 0) != kVersion)
    return invalid_argument("timing cache '" + path + "' has version " + std::to_string(j.value("version", 0)) +
                            "; this Kiln reads version " + std::to_string(kVersion) + ": delete the file to rebuild it");
  if (!j.contains("devices") || !j["devices"].is_object()) return Status::Ok();
  for (auto& [dev, entries] : j["devices"].items()) {
    if (!entries.is_object()) continue;
    for (auto& [sig, e] : entries.items()) {
      if (!e.is_object() || !e.contains("tactic") || !e["tactic"].is_string()) continue;
      all_.emplace(dev + "|" + sig, std::make_pair(e["tactic"].get<std::string>(), e.value("ms", 0.0)));
    }
  }
  return Status::Ok();
}

Status TimingCache::save(const std::string& path) const {
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  nlohmann::ordered_json devices = nlohmann::ordered_json::object();
  for (const auto& [key, e] : all_) {
    size_t bar = key.find('|');
    devices[key.substr(0, bar)][key.substr(bar + 1)] = {{"tactic", e.first}, {"ms", e.second}};
  }
  j["devices"] = devices;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return invalid_argument("cannot write the timing cache to '" + path + "'");
  f << j.dump(1) << "\n";
  if (!f) return invalid_argument("writing the timing cache to '" + path + "' failed");
  return Status::Ok();
}

runtime::TimingEntries TimingCache::device_entries() const {
  runtime::TimingEntries out;
  const std::string prefix = device_ + "|";
  for (const auto& [key, e] : all_)
    if (key.rfind(prefix, 0) == 0) out.emplace(key.substr(prefix.size()), e);
  return out;
}

void TimingCache::update(const runtime::TimingEntries& entries) {
  for (const auto& [sig, e] : entries) all_[device_ + "|" + sig] = e;
}

Result<bool> graph_timing_requested() {
  const char* t = std::getenv("KILN_TACTIC_TIMING");
  if (!t || !*t) return true;  // the default since H100 run 18 (bert_base b1 0.457 -> 0.437 ms)
  const std::string how = t;
  if (how == "graph" || how == "stream") return how == "graph";
  return invalid_argument("KILN_TACTIC_TIMING is '" + how + "'; it takes 'graph' or 'stream'");
}

Result<bool> cold_weight_timing_requested() {
  const char* t = std::getenv("KILN_TACTIC_WEIGHTS");
  if (!t || !*t) return false;
  const std::string how = t;
  if (how == "cold" || how == "hot") return how == "cold";
  return invalid_argument("KILN_TACTIC_WEIGHTS is '" + how + "'; it takes 'cold' or 'hot'");
}

}  // namespace kiln::builder
