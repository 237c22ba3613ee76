// Pointwise code generation: a pointwise program as CUDA C source, compiled at build time with NVRTC.
#pragma once

#include <string>

#include "ir/graph.h"
#include "kiln/logger.h"
#include "kiln/status.h"
#include "ops/pointwise_program.h"

namespace kiln::builder {

// Each image holds three entry points, <kernel>_v1_64 (64-bit indices), <kernel>_v1_32 and <kernel>_v4_32 (four
// consecutive elements per thread, for an innermost dim divisible by 4); all take one ops::PwKernelParams.
struct PointwiseImage {
  std::string kernel;  // base name
  std::string source;
  std::string image;   // cubin bytes, or PTX text
  std::string kind;    // "cubin" or "ptx"
};

// Whether this build of the builder has NVRTC (without it no Pointwise node may be created).
bool pointwise_codegen_available();
std::string pointwise_source(const ops::PointwiseProgram& p, const std::string& kernel);
// For compute capability cc_major.cc_minor: a cubin for that exact GPU, or PTX (ptx = true) that the driver
// compiles on load for it or any newer one.
Result<PointwiseImage> compile_pointwise(const ops::PointwiseProgram& p, int cc_major, int cc_minor, bool ptx);
// Compiles every kiln::Pointwise node of g and stores image, image_kind and kernel in its attributes; logs each
// generated source at verbose severity.
Status compile_pointwise_nodes(ir::Graph& g, int cc_major, int cc_minor, bool ptx, ILogger& logger);

}  // namespace kiln::builder
