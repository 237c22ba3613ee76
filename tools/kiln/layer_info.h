// --dumpLayerInfo / --exportLayerInfo: the engine's layers in the layout of TensorRT's engine inspector.
#pragma once

#include <string>

#include "kiln/runtime.h"
#include "kiln/status.h"
#include "layer_profiler.h"

namespace kiln::cli {

// verbosity "layer_names_only": {"Layers": ["name", ...], "Bindings": [...]}. "detailed": each layer an object
// {"Name", "LayerType", "Inputs": [{"Name", "Location", "Dimensions", "Format/Datatype"}], "Outputs": [...],
// "Precision", "Backend", "RunsOn": "GPU" | "Host"}, plus "FusedFrom" (the nodes a fused layer stands for),
// "TacticName" (the builder's recorded winner) and, when `profile` is given (a profile collected in the same run),
// "AverageMs" and "TimePercent" (the layer's share of the profiled total). Dimensions are -1 where they depend on
// the input shapes.
Result<std::string> layer_info_json(const Engine& engine, const std::string& verbosity,
                                    const LayerProfiler* profile = nullptr);

// The same as readable lines on stdout.
Status print_layer_info(const Engine& engine, const std::string& verbosity, const LayerProfiler* profile = nullptr);

}  // namespace kiln::cli
