// kiln StaggeredMatMul's row classes (staggered_matmul.cpp): the arithmetic shared by pad_gemm_width, which makes
// the node, and the CUDA kernel, which runs one GEMM per class. Rows of `width` elements of `elem_size` bytes start
// at element r * width; their misalignment to 16 bytes repeats every stagger_classes rows, and class c's rows start
// stagger_shift elements past an aligned address.
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>

namespace kiln::ops {

// Elements per 16-byte vector.
inline int64_t stagger_vector(size_t elem_size) { return 16 / static_cast<int64_t>(elem_size); }

// The zero rows above B's N rows that any class's shift may reach into.
inline int64_t stagger_lead(size_t elem_size) { return stagger_vector(elem_size) - 1; }

// C: rows start aligned again every C rows (1: every row is aligned).
inline int64_t stagger_classes(int64_t width, size_t elem_size) {
  const int64_t v = stagger_vector(elem_size), r = width % v;
  return r == 0 ? 1 : v / std::gcd(r, v);
}

// How many elements past an aligned address the rows of class c start.
inline int64_t stagger_shift(int64_t c, int64_t width, size_t elem_size) {
  return c * width % stagger_vector(elem_size);
}

}  // namespace kiln::ops
