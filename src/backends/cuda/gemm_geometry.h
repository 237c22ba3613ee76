// How a numpy-batched row-major product Y[..., m, n] = A[..., m, k] · B[..., k, n] runs on cuBLASLt: one strided
// batch (the innermost batch dim that is not folded) inside a host loop over the remaining batch dims; a batch dim
// that shares B and runs through contiguous A and Y is folded into the rows instead. Host-only arithmetic (no CUDA
// types), so the CPU tests check it: an SE projection with per-sample weights, A [N, H, W, C] · B [N, 1, C, M],
// must be one call with batch count N and H*W rows.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/op_util.h"

namespace kiln::cuda {

struct GemmGeometry {
  int64_t m = 0, n = 0, k = 0;     // one matrix of the strided batch (m may include folded batch dims)
  int64_t batch = 1;               // cuBLASLt's batch count
  int64_t sa = 0, sb = 0, sd = 0;  // its batch strides in elements (0: the matrix is shared)
  std::vector<int64_t> off_a{0}, off_b{0}, off_y{0};  // element offsets of each host-loop call, in row-major order
  // Every offset step OR-ed together, in elements: what the pointers may be moved by (for alignment).
  uint64_t step_a = 0, step_b = 0, step_y = 0;
};

inline Result<GemmGeometry> gemm_geometry(std::vector<int64_t> a, std::vector<int64_t> b) {
  if (a.empty() || b.empty()) return invalid_argument("MatMul: operands must have rank >= 1");
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  const int64_t m = a[a.size() - 2], k = a.back(), n = b.back();
  if (b[b.size() - 2] != k) return invalid_argument("MatMul: inner dimensions differ");
  std::vector<int64_t> ab(a.begin(), a.end() - 2), bb(b.begin(), b.end() - 2);
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> batch, ops::broadcast_dims({ab, bb}));
  const std::vector<int64_t> sa = ops::broadcast_strides(ab, batch), sb = ops::broadcast_strides(bb, batch);
  const int64_t mat_a = m * k, mat_b = k * n, mat_y = m * n;
  // Batch dims as (size, A stride, B stride, Y stride) in elements, size-1 dims dropped, mergeable dims merged.
  struct BDim {
    int64_t size, a, b, y;
  };
  std::vector<BDim> dims;
  int64_t y_stride = mat_y;
  for (int i = static_cast<int>(batch.size()) - 1; i >= 0; --i) {
    if (batch[i] != 1) dims.insert(dims.begin(), BDim{batch[i], sa[i] * mat_a, sb[i] * mat_b, y_stride});
    y_stride *= batch[i];
  }
  std::vector<BDim> merged;
  for (const BDim& d : dims) {
    if (!merged.empty()) {
      BDim& o = merged.back();
      if (o.a == d.a * d.size && o.b == d.b * d.size && o.y == d.y * d.size) {
        o = BDim{o.size * d.size, d.a, d.b, d.y};
        continue;
      }
    }
    merged.push_back(d);
  }
  GemmGeometry gm;
  gm.m = m;
  gm.n = n;
  gm.k = k;
  if (!merged.empty() && merged.back().b == 0 && merged.back().a == mat_a && merged.back().y == mat_y) {
    gm.m = m * merged.back().size;  // one tall GEMM: [L*m, k] x [k, n]
    merged.pop_back();
  }
  if (!merged.empty()) {
    const BDim& in = merged.back();
    gm.batch = in.size;
    gm.sa = in.a;
    gm.sb = in.b;
    gm.sd = in.y;
    merged.pop_back();
  }
  for (const BDim& d : merged) {  // outer to inner: offsets in row-major order of the outer dims
    std::vector<int64_t> na, nb, ny;
    for (size_t i = 0; i < gm.off_a.size(); ++i)
      for (int64_t j = 0; j < d.size; ++j) {
        na.push_back(gm.off_a[i] + j * d.a);
        nb.push_back(gm.off_b[i] + j * d.b);
        ny.push_back(gm.off_y[i] + j * d.y);
      }
    gm.off_a.swap(na);
    gm.off_b.swap(nb);
    gm.off_y.swap(ny);
    gm.step_a |= static_cast<uint64_t>(d.a);
    gm.step_b |= static_cast<uint64_t>(d.b);
    gm.step_y |= static_cast<uint64_t>(d.y);
  }
  return gm;
}

}  // namespace kiln::cuda
