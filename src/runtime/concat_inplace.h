// In-place Concat: which Concat layers marked "kiln.inplace" (passes/concat_elimination.cpp) a device context
// eliminates at the shapes it prepared, with each input's byte offset into the concat's output. Kept apart from
// the CUDA context so that the decision is a plain function, tested on the CPU.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "kiln/types.h"
#include "runtime/engine_plan.h"

namespace kiln::runtime {

// The annotation (an int, 1) the pass sets on a Concat whose producers may write into its output; like every
// "kiln." attribute, ops (the CPU reference among them) ignore it.
inline constexpr const char* kInPlaceAttr = "kiln.inplace";

// Every slice starts at a multiple of this many bytes from the output's start: kernels were only ever handed
// arena addresses (256-byte aligned) and some vectorize on that; slices before the last then also span whole
// 256-byte blocks, so a kernel that rounds its stores up to the arena's granularity cannot reach the next slice.
inline constexpr uint64_t kSliceAlignment = 256;

struct InPlaceConcat {
  int node = -1;          // index into plan.nodes
  int output = -1;        // the concat's output value
  int first_writer = -1;  // the earliest node that writes a slice: the output's lifetime starts there
  std::vector<std::pair<int, uint64_t>> slices;  // (input value, byte offset into the output), in input order
};

// The marked Concat layers whose producers can write their results straight into the output at these shapes:
//  - the layer runs (device_writer[node]) and its output is not known on the host;
//  - its slices are contiguous: the product of the output's dims before the axis is 1 (batch 1, or axis 0);
//  - every input is a distinct value, neither an engine input nor output, nor a constant, nor host-known, written
//    by an earlier node that runs a device kernel writing its own output (device_writer: not an alias such as
//    Reshape, not a layer on the host), and not already a slice or the output of another eliminated concat;
//  - every slice's offset is a multiple of kSliceAlignment.
// device_writer: per node; dims and host_known: per value, at the prepared shapes. Anything else copies as before.
std::vector<InPlaceConcat> plan_inplace_concats(const EnginePlan& plan, const std::vector<Dims>& dims,
                                                const std::vector<bool>& device_writer,
                                                const std::vector<bool>& host_known);

}  // namespace kiln::runtime
