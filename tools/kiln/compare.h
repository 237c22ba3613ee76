// `kiln compare`: runs an engine or model and a reference on the same inputs and compares them tensor by tensor
// (in the spirit of Polygraphy's `run`), optionally every intermediate tensor (--markAll).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/runtime.h"

namespace kiln::cli {

// Error statistics of one tensor against its reference.
struct TensorDiff {
  bool shape_matches = true;
  size_t elements = 0, failing = 0, nan_mismatches = 0;
  double max_abs = 0, mean_abs = 0, max_rel = 0, mean_rel = 0, cosine = 1;
  bool passed() const { return shape_matches && failing == 0; }
};

// numpy.isclose's rule per element: |a - r| <= atol + rtol * |r|; NaN matches only NaN. Relative error is taken
// over the elements whose reference is not zero.
TensorDiff diff_tensors(const HostTensor& actual, const HostTensor& reference, double atol, double rtol);

// Entry point for `kiln compare ...` (argv[0] is "compare"): 0 when every tensor passes, 1 when one fails or the
// comparison cannot run, 2 for a usage error.
int compare_main(int argc, char** argv);

}  // namespace kiln::cli
