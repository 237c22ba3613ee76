// Layout by measurement (see layout_choice.h).
#include "builder/layout_choice.h"

#include <algorithm>
#include <cstdio>

#include "ops/op.h"

namespace kiln::builder {

std::string fingerprint(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<std::string> layout_regions(const ir::Graph& g) {
  std::vector<std::string> regions;
  for (const auto& n : g.nodes()) {
    if (n->op_type != "Transpose" || !n->domain.empty() || !n->attrs.has(ops::kLayoutRegionAttr)) continue;
    auto r = n->attrs.get_string(ops::kLayoutRegionAttr);
    if (r.ok() && std::find(regions.begin(), regions.end(), *r) == regions.end()) regions.push_back(*r);
  }
  return regions;
}

Result<LayoutVariant> choose_layouts(LayoutVariant nhwc, const std::string& fp, const BuildLayoutVariant& build,
                                     const TimeEngine& time, runtime::TimingEntries& cache, ILogger& logger,
                                     BuildProgress& progress) {
  auto info = [&](const std::string& m) { logger.log(ILogger::Severity::kINFO, m.c_str()); };
  std::vector<std::string> regions = layout_regions(*nhwc.graph);
  if (regions.empty()) return nhwc;
  if (regions.size() > kMaxTimedLayoutRegions) {
    info("layout: " + std::to_string(regions.size() - kMaxTimedLayoutRegions) + " of " +
         std::to_string(regions.size()) + " regions with reformat layers stay NHWC untimed (the first " +
         std::to_string(kMaxTimedLayoutRegions) + " are timed)");
    regions.resize(kMaxTimedLayoutRegions);
  }
  auto key_of = [&](const std::string& region) { return "layout|" + fp + "|" + region; };
  // Regions decided in an earlier build (the timing cache): applied without timing.
  std::set<std::string> nchw;
  std::vector<std::string> todo;
  for (const std::string& r : regions) {
    auto it = cache.find(key_of(r));
    if (it == cache.end()) {
      todo.push_back(r);
    } else if (it->second.first == "NCHW") {
      nchw.insert(r);
    }
  }
  if (regions.size() > todo.size())
    info("layout: " + std::to_string(regions.size() - todo.size()) + " regions from the timing cache, " +
         std::to_string(nchw.size()) + " of them NCHW");
  LayoutVariant best = std::move(nhwc);
  if (!nchw.empty()) {
    KILN_ASSIGN_OR_RETURN(best, build(nchw));
  }
  if (todo.empty()) return best;
  BuildProgress::Scope phase(progress, "Choosing layouts", static_cast<int32_t>(todo.size()));
  // An engine that cannot be timed whole (data-dependent shapes) keeps the rule: NHWC wherever it applies.
  Result<double> first = time(best.engine);
  if (!first.ok()) {
    logger.log(ILogger::Severity::kWARNING,
               ("layout regions stay NHWC untimed: " + first.status().message()).c_str());
    return best;
  }
  double best_ms = *first;
  for (const std::string& r : todo) {
    std::set<std::string> trial = nchw;
    trial.insert(r);
    // A variant that fails to build or run is not a candidate; the build goes on without it (and says so).
    Result<double> ms_or(0.0);
    Result<LayoutVariant> v = build(trial);
    if (v.ok()) ms_or = time(v->engine);
    if (!v.ok() || !ms_or.ok()) {
      const Status& why = !v.ok() ? v.status() : ms_or.status();
      logger.log(ILogger::Severity::kWARNING,
                 ("layout region '" + r + "' stays NHWC: its NCHW variant failed: " + why.message()).c_str());
      KILN_RETURN_IF_ERROR(progress.step());
      continue;
    }
    const double ms = *ms_or;
    const bool keep = ms < best_ms * (1 - kLayoutMargin);
    char line[256];
    std::snprintf(line, sizeof line, "layout region '%s': %.4f ms per run NHWC, %.4f ms NCHW: %s", r.c_str(),
                  best_ms, ms, keep ? "NCHW" : "NHWC");
    info(line);
    cache[key_of(r)] = {keep ? "NCHW" : "NHWC", best_ms > 0 ? ms / best_ms : 0};
    if (keep) {
      nchw = std::move(trial);
      best = std::move(*v);
      best_ms = ms;
    }
    KILN_RETURN_IF_ERROR(progress.step());
  }
  return best;
}

}  // namespace kiln::builder
