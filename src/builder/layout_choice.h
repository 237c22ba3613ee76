// Layout by measurement: layout_nhwc makes every FP16/BF16 convolution channels-last and leaves Transposes
// (reformat layers) where a layout region meets NCHW operators. Whether a region's convolutions gain more than its
// reformats cost depends on the shapes and the GPU, so the builder times the engine both ways, one region at a
// time, and keeps NCHW for the regions that run faster so. Decisions go into the timing cache (with it, a rebuild
// makes the same choices without timing).
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "builder/build_progress.h"
#include "ir/graph.h"
#include "kiln/logger.h"
#include "kiln/status.h"
#include "runtime/device_backend.h"

namespace kiln::builder {

// A built variant: the optimized graph and its (tuned) engine.
struct LayoutVariant {
  std::unique_ptr<ir::Graph> graph;
  std::vector<uint8_t> engine;
};

// Builds the engine with these regions' convolutions kept NCHW (passes::PassOptions::nchw_layout_regions).
using BuildLayoutVariant = std::function<Result<LayoutVariant>(const std::set<std::string>& nchw_regions)>;
// The whole engine's time per run in ms (runtime::DeviceContext::time_engine at the profile's opt shapes).
using TimeEngine = std::function<Result<double>(const std::vector<uint8_t>& engine)>;

// The layout regions that still have reformat layers in an optimized graph (Transposes carrying
// kiln.layout_region), each once, in the graph's order; regions whose reformats were fused away are not listed.
std::vector<std::string> layout_regions(const ir::Graph& g);

// How many regions a build times at most (the largest graphs would otherwise build once per region); the rest
// stay NHWC, and the builder says so.
inline constexpr size_t kMaxTimedLayoutRegions = 12;
// A region goes NCHW only when the whole engine runs at least this much faster, so that run-to-run noise
// does not flip choices between builds.
inline constexpr double kLayoutMargin = 0.02;

// Starting from the all-NHWC variant, tries each region NCHW in turn (keeping those already chosen) and keeps
// the change when the engine is faster by kLayoutMargin. `cache` (timing-cache entries of this device) answers
// regions decided before under `fingerprint` (the network, precision and shapes) and receives new decisions as
// ("NHWC" | "NCHW", NCHW time / NHWC time). Returns the chosen variant.
Result<LayoutVariant> choose_layouts(LayoutVariant nhwc, const std::string& fingerprint,
                                     const BuildLayoutVariant& build, const TimeEngine& time,
                                     runtime::TimingEntries& cache, ILogger& logger, BuildProgress& progress);

// FNV-1a of a string, as 16 hex digits (timing-cache keys of layout decisions).
std::string fingerprint(const std::string& text);

}  // namespace kiln::builder
