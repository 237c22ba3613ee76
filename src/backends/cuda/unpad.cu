// kiln Unpad's kernel: a GEMM's output rows of an aligned pitch (pad_gemm_width) compacted to the kept width and
// converted on the way (the float32 output cast it absorbed). Memory-bound: one read of the padded rows, one
// write of the compact ones.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/pdl.cuh"
#include "backends/cuda/unpad.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// The padded rows are whole 16-byte vectors, so the input is read flat: a block loads kThreads consecutive vectors
// (one per thread, coalesced), converts them into shared memory, then writes the tile's kept elements with one
// scalar store per thread and step: consecutive threads write consecutive addresses of a compact row, which starts
// anywhere (width * sizeof(TO) need not be a multiple of 16), so no wider store would be aligned. A tile may span
// rows (narrow pitches) or end inside one; (r, c), the row and column of a thread's element, advance without a
// division per element.
template <typename TI, typename TO>
__global__ void __launch_bounds__(kThreads)
    unpad_vec_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t vectors, int64_t pitch, int64_t width,
                     int64_t step_rows, int64_t step_cols) {
  constexpr int E = 16 / sizeof(TI);         // elements per input vector
  constexpr int kOutBytes = E * sizeof(TO);  // 8 (float -> half), 16 or 32 bytes per thread in the tile
  using Chunk = std::conditional_t<kOutBytes % 16 == 0, uint4, uint2>;
  constexpr int kChunks = kOutBytes / sizeof(Chunk);
  __shared__ Chunk tile_raw[kThreads * kChunks];  // vector stores into the tile: no bank conflicts to speak of
  TO* tile = reinterpret_cast<TO*>(tile_raw);

  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads;
  // Row and column of element threadIdx.x of this block's first tile: one division per thread, then steps.
  int64_t r0 = base * E / pitch, c0 = base * E - r0 * pitch;
  pdl_wait();  // launched with launch_pdl, right after the GEMM whose output it reads
  for (; base < vectors; base += stride) {
    const int64_t v = base + threadIdx.x;
    if (v < vectors) {
      const uint4 raw = reinterpret_cast<const uint4*>(x)[v];
      const TI* in = reinterpret_cast<const TI*>(&raw);
      Chunk out[kChunks];
      TO* o = reinterpret_cast<TO*>(out);
#pragma unroll
      for (int k = 0; k < E; ++k) o[k] = from_f<TO>(to_f(in[k]));
#pragma unroll
      for (int k = 0; k < kChunks; ++k) tile_raw[threadIdx.x * kChunks + k] = out[k];
    }
    __syncthreads();
    const int64_t left = vectors - base;
    const int count = static_cast<int>(left < kThreads ? left : kThreads) * E;
    int64_t r = r0, c = c0 + threadIdx.x;
    while (c >= pitch) c -= pitch, ++r;
    for (int k = threadIdx.x; k < count; k += kThreads) {
      if (c < width) y[r * width + c] = tile[k];
      c += kThreads;
      while (c >= pitch) c -= pitch, ++r;
    }
    __syncthreads();  // the tile is rewritten by the next step
    r0 += step_rows;
    c0 += step_cols;
    if (c0 >= pitch) c0 -= pitch, ++r0;
  }
}

// Any pitch and alignment (an Unpad not made by pad_gemm_width): an element per thread and step.
template <typename TI, typename TO>
__global__ void unpad_scalar_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t total, int64_t pitch,
                                    int64_t width) {
  pdl_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, c = i - r * width;
    y[i] = from_f<TO>(to_f(x[r * pitch + c]));
  }
}

template <typename F>
bool dispatch(DataType dt, F&& f) {
  switch (dt) {
    case DataType::kFLOAT:
      f(float{});
      return true;
    case DataType::kHALF:
      f(__half{});
      return true;
    case DataType::kBF16:
      f(__nv_bfloat16{});
      return true;
    default:
      return false;
  }
}

// As many blocks as the SMs hold at once (8 of 256 threads each), or fewer for small tensors: each then strides over
// the rest, so no wave of blocks ends half-empty on a large output.
unsigned grid_for(int64_t items, int sm_count) {
  const int64_t b = (items + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sm_count > 0 ? sm_count : 132) * 8;
  return static_cast<unsigned>(b < cap ? b : cap);
}

}  // namespace

Status launch_unpad(DataType in_dt, DataType out_dt, const void* x, void* y, int64_t rows, int64_t pitch, int64_t width,
                    int sm_count, cudaStream_t stream) {
  if (width < 0 || width > pitch) return internal_error("Unpad: width must lie in [0, pitch]");
  if (rows == 0 || width == 0) return Status::Ok();
  cudaError_t err = cudaSuccess;
  const bool ok = dispatch(in_dt, [&](auto in_tag) {
    using TI = decltype(in_tag);
    dispatch(out_dt, [&](auto out_tag) {
      using TO = decltype(out_tag);
      const TI* xi = static_cast<const TI*>(x);
      TO* yo = static_cast<TO*>(y);
      constexpr int64_t E = 16 / sizeof(TI);
      if (pitch % E == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
        const int64_t vectors = rows * pitch / E;
        const unsigned grid = grid_for(vectors, sm_count);
        const int64_t step = static_cast<int64_t>(grid) * kThreads * E;  // elements a grid-stride step advances
        err = launch_pdl(&unpad_vec_kernel<TI, TO>, dim3(grid), dim3(kThreads), 0, stream, xi, yo, vectors, pitch,
                         width, step / pitch, step % pitch);
      } else {
        err = launch_pdl(&unpad_scalar_kernel<TI, TO>, dim3(grid_for(rows * width, sm_count)), dim3(kThreads), 0,
                         stream, xi, yo, rows * width, pitch, width);
      }
    });
  });
  if (!ok || (out_dt != DataType::kFLOAT && out_dt != DataType::kHALF && out_dt != DataType::kBF16))
    return internal_error(std::string("Unpad: unsupported types ") + dtype_name(in_dt) + " -> " + dtype_name(out_dt));
  KILN_CUDA_CHECK(err);
  return Status::Ok();
}

}  // namespace kiln::cuda
