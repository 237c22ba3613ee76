// Device helpers shared by the reduction and normalization kernels: float conversions, strided index maps,
// warp and block all-reductions. Included only by .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/reduce_kernels.h"

namespace kiln::cuda {


// A float-typed parameter (scale, bias) whose type is only known at run time.
__device__ __forceinline__ float load_param(const void* p, DataType dt, int64_t i) {
  switch (dt) {
    case DataType::kHALF: return __half2float(static_cast<const __half*>(p)[i]);
    case DataType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// Element offset of the i-th index of a mixed-radix space (innermost dim last).
__device__ __forceinline__ int64_t map_offset(const IndexMap& m, int64_t i) {
  if (m.n == 1) return i * m.stride[0];
  int64_t off = 0;
  for (int d = m.n - 1; d >= 0; --d) {
    const int64_t q = i / m.size[d];
    off += (i - q * m.size[d]) * m.stride[d];
    i = q;
  }
  return off;
}

// a / b for non-negative operands, with 32-bit division when both fit (64-bit division is slow on the GPU).
__device__ __forceinline__ int64_t div_nonneg(int64_t a, int64_t b) {
  if (((a | b) >> 31) == 0) return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
  return a / b;
}

struct AddOp {
  template <typename A> __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
// Max that ignores NaN in b (a starts at -inf): the reference's `if (v > m) m = v`.
struct MaxOp {
  template <typename A> __device__ __forceinline__ A operator()(A a, A b) const { return b > a ? b : a; }
};

// Every lane of the warp gets the reduction of the 32 lanes' values, combined in the same order.
template <typename A, typename F>
__device__ __forceinline__ A warp_allreduce(A v, F f) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Every thread of a one-dimensional block (blockDim.x a multiple of 32, blockDim.y == 1) gets the reduction;
// smem holds 32 values. Safe to call repeatedly: the leading barrier protects the previous call's reads.
template <typename A, typename F>
__device__ __forceinline__ A block_allreduce(A v, F f, A* smem) {
  v = warp_allreduce(v, f);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = smem[0];
  for (int i = 1; i < nw; ++i) v = f(v, smem[i]);
  return v;
}

// Rows owned by a warp (blockDim.x == 32) or by the whole block (blockDim.y == 1).
template <typename A, typename F>
__device__ __forceinline__ A row_allreduce(A v, F f, A* smem) {
  return blockDim.x == 32 ? warp_allreduce(v, f) : block_allreduce(v, f, smem);
}

// Threads per row and rows per block for a row-wise kernel: a warp per row for short rows, else a block.
inline dim3 row_block(int64_t len, int64_t rows, int sm_count) {
  if (len <= 1024) return dim3(32, 8);
  if (len <= 8192 || rows >= 4ll * sm_count) return dim3(256, 1);
  return dim3(1024, 1);
}

// Grid for a grid-stride loop over `work` units of `per_block` each; at least one block.
inline unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t b = (work + per_block - 1) / per_block;
  if (b < 1) b = 1;
  if (b > (1 << 20)) b = 1 << 20;
  return static_cast<unsigned>(b);
}

}  // namespace kiln::cuda
