// Element loops shared by the elementwise operator files: N-input broadcast iteration and compute types.
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/op_util.h"

namespace kiln::ops {

// Half and bfloat16 are storage formats only; arithmetic on them happens in float.
template <typename T>
using compute_t = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, float, T>;

// Calls f(out_index, idx) once per element of `out`, where idx[k] is the flat index of the element of
// input k that broadcasts to it. Inputs must broadcast to `out` (numpy rules, right-aligned).
template <size_t N, typename F>
void for_each_broadcast(const std::vector<int64_t>& out, const std::array<const std::vector<int64_t>*, N>& ins,
                        F&& f) {
  const int64_t total = product(out);
  if (total <= 0) return;
  std::array<int64_t, N> idx{};
  // An input with as many elements as the output that broadcasts to it has the output's layout (all its
  // 1-dims face 1-dims), so same-shape and scalar inputs need no per-axis bookkeeping.
  bool simple = true;
  std::array<int64_t, N> step{};
  for (size_t k = 0; k < N; ++k) {
    int64_t n = product(*ins[k]);
    if (n == total) step[k] = 1;
    else if (n == 1) step[k] = 0;
    else simple = false;
  }
  if (simple) {
    for (int64_t i = 0; i < total; ++i) {
      for (size_t k = 0; k < N; ++k) idx[k] = i * step[k];
      f(i, idx);
    }
    return;
  }
  const size_t rank = out.size();
  std::array<std::vector<int64_t>, N> st;
  for (size_t k = 0; k < N; ++k) st[k] = broadcast_strides(*ins[k], out);
  const int64_t inner = out[rank - 1];
  const int64_t outer = total / inner;
  std::array<int64_t, N> inner_st{}, base{};
  for (size_t k = 0; k < N; ++k) inner_st[k] = st[k][rank - 1];
  std::vector<int64_t> counter(rank, 0);
  int64_t o = 0;
  for (int64_t r = 0; r < outer; ++r) {
    for (int64_t j = 0; j < inner; ++j, ++o) {
      for (size_t k = 0; k < N; ++k) idx[k] = base[k] + j * inner_st[k];
      f(o, idx);
    }
    for (int d = static_cast<int>(rank) - 2; d >= 0; --d) {
      for (size_t k = 0; k < N; ++k) base[k] += st[k][d];
      if (++counter[d] < out[d]) break;
      for (size_t k = 0; k < N; ++k) base[k] -= st[k][d] * out[d];
      counter[d] = 0;
    }
  }
}

// Output rank/shape of a broadcasting op over the given inputs (rank unknown if any input's is).
inline Status infer_broadcast(InferContext& ctx, const std::vector<int>& which, DataType out_dtype) {
  TensorInfo& out = ctx.output(0);
  out.dtype = out_dtype;
  std::vector<Shape> shapes;
  for (int i : which) {
    if (!ctx.input(i).rank_known) {
      out.rank_known = false;
      out.shape.clear();
      return Status::Ok();
    }
    shapes.push_back(ctx.input(i).shape);
  }
  KILN_ASSIGN_OR_RETURN(out.shape, broadcast_shapes(shapes, &ctx));
  return Status::Ok();
}

// Fails unless every listed input has the same data type as the first; names the op and both types.
inline Status check_same_dtype(const InferContext& ctx, const std::string& op, const std::vector<int>& which) {
  DataType first = ctx.input(which[0]).dtype;
  for (int i : which) {
    if (ctx.input(i).dtype != first)
      return invalid_model(op + ": input " + std::to_string(i) + " must have the same type as input " +
                           std::to_string(which[0]) + " (" + dtype_name(first) + ") but is " +
                           dtype_name(ctx.input(i).dtype));
  }
  return Status::Ok();
}

}  // namespace kiln::ops
