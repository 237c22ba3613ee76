// Launcher of kiln Unpad's kernel: rows of a padded GEMM output compacted (and converted) to their kept width.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/tensor.h"
#include "kiln/status.h"

namespace kiln::cuda {

// y[r, j] = convert(x[r, j]) for r < rows, j < width; x has rows of `pitch` elements, y of `width`. Float, half or
// bfloat16 on either side. sm_count sizes the grid (0: a guess). Takes the stream, never allocates, never
// synchronizes.
Status launch_unpad(DataType in_dt, DataType out_dt, const void* x, void* y, int64_t rows, int64_t pitch, int64_t width,
                    int sm_count, cudaStream_t stream);

}  // namespace kiln::cuda
