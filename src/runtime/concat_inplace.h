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
  int first_writer = -1;  // the earliest node that writes a slice, nested ones included: the lifetime starts there
  std::vector<std::pair<int, uint64_t>> slices;  // (input value, byte offset into the output), in input order
  // Nesting: the output of a concat that is itself a slice of an eliminated (outer) concat lives there. root is
  // the outermost concat's output, the value that gets memory, and root_offset this output's bytes into it
  // (output and 0 for a concat that is no slice).
  int root = -1;
  uint64_t root_offset = 0;
};

// The marked Concat layers whose producers can write their results straight into the output at these shapes:
//  - the layer runs (device_writer[node]) and its output is not known on the host;
//  - its slices are contiguous: the product of the output's dims before the axis is 1 (batch 1, or axis 0);
//  - every input is a distinct value, neither an engine input nor output, nor a constant, nor host-known, written
//    by an earlier node that runs a device kernel writing its own output (device_writer: not an alias such as
//    Reshape, not a layer on the host), and not already a slice of another eliminated concat;
//  - every slice's offset is a multiple of kSliceAlignment.
// An input may be the output of an eliminated concat decided before (nodes are in topological order, so inner
// concats are decided before the outer ones): it becomes a slice like any other, and its own slices then lie at
// (its offset + theirs) in the outer output; aligned offsets at every level compose to aligned offsets. A value
// has one place, so an inner concat read by two outer ones is a slice of the first only, and the second copies.
// device_writer: per node; dims and host_known: per value, at the prepared shapes. Anything else copies as before.
// Returned in node order, inner concats before the ones they are nested in.
std::vector<InPlaceConcat> plan_inplace_concats(const EnginePlan& plan, const std::vector<Dims>& dims,
                                                const std::vector<bool>& device_writer,
                                                const std::vector<bool>& host_known);

}  // namespace kiln::runtime
