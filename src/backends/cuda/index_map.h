// IndexMap: a strided, mixed-radix index space passed by value to the reduction and normalization kernels, and
// the host helpers that build one from a dense shape (size-1 dims dropped, mergeable dims merged).
#pragma once

#include <cstdint>
#include <vector>

namespace kiln::cuda {

constexpr int kMaxIndexDims = 8;

// Index i, decomposed over size[] (innermost last), lands at sum(digit[d] * stride[d]) elements. n == 0 is a
// single index at offset 0.
struct IndexMap {
  int n = 0;
  int64_t size[kMaxIndexDims] = {};
  int64_t stride[kMaxIndexDims] = {};
};

// A dense C-order shape split into the dims kept and the dims reduced. Outputs are dense in the kept dims' order.
struct AxisSplit {
  IndexMap kept, red;
  int64_t nkept = 1, nred = 1;
  bool innermost_kept = false;  // the innermost dim of size > 1 is kept (it then has stride 1)
};

// False when either side needs more than kMaxIndexDims dims after merging.
inline bool split_axes(const std::vector<int64_t>& shape, const std::vector<bool>& reduce, AxisSplit* out) {
  struct D { int64_t size, stride; bool red; };
  std::vector<D> ds;  // innermost first
  int64_t st = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] != 1) {
      if (!ds.empty() && ds.back().red == reduce[d]) ds.back().size *= shape[d];
      else ds.push_back({shape[d], st, reduce[d]});
    }
    st *= shape[d];
  }
  AxisSplit s;
  s.innermost_kept = !ds.empty() && !ds.front().red;
  for (auto it = ds.rbegin(); it != ds.rend(); ++it) {
    IndexMap& m = it->red ? s.red : s.kept;
    if (m.n == kMaxIndexDims) return false;
    m.size[m.n] = it->size;
    m.stride[m.n] = it->stride;
    ++m.n;
    (it->red ? s.nred : s.nkept) *= it->size;
  }
  *out = s;
  return true;
}

// The map from a position in the dense space `dims` to the element of a tensor viewed with `strides` over it
// (0 on broadcast dims). False when it needs more than kMaxIndexDims dims.
inline bool strided_map(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, IndexMap* out) {
  std::vector<std::pair<int64_t, int64_t>> g;  // (size, stride), innermost first
  for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
    if (dims[d] == 1) continue;
    if (!g.empty() && g.back().second * g.back().first == strides[d]) g.back().first *= dims[d];
    else g.emplace_back(dims[d], strides[d]);
  }
  if (g.size() > static_cast<size_t>(kMaxIndexDims)) return false;
  IndexMap m;
  for (auto it = g.rbegin(); it != g.rend(); ++it) {
    m.size[m.n] = it->first;
    m.stride[m.n] = it->second;
    ++m.n;
  }
  *out = m;
  return true;
}

}  // namespace kiln::cuda
