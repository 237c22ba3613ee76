// kiln Unpad's kernel: a GEMM's output rows of an aligned pitch (pad_gemm_width) compacted to the kept width and
// converted on the way (the float32 output cast it absorbed). Memory-bound: one read of the padded rows, one
// write of the compact ones.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdlib>
#include <string>
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
  pdl_trigger();
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

// 2-byte types in and out (an FP16/BF16 lm_head's output, the common case): each thread writes one whole aligned
// 16-byte vector of the compact output, so every store is a full vector and there is no shared-memory staging.
// Unless the vector crosses a row's end, its eight elements lie in one input row, at some offset from an aligned
// input vector: the thread loads that vector and the next (the neighbour thread's, so mostly from L1) and shifts
// the pair into place. A vector that crosses a row's end, and the last partial one, go element by element. Needs
// width >= 8 (a vector spans at most two rows), a pitch of whole vectors and 16-byte aligned x and y.
template <typename TI, typename TO>
__global__ void __launch_bounds__(kThreads)
    unpad_gather16_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t total, int64_t pitch, int64_t width) {
  static_assert(sizeof(TI) == 2 && sizeof(TO) == 2, "2-byte types only");
  pdl_wait();  // launched with launch_pdl, right after the GEMM whose output it reads
  pdl_trigger();
  const int64_t e0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * 8;
  if (e0 >= total) return;
  // A 32-bit division where the output allows (gpt2's: 206 M elements): a 64-bit one is a long emulated sequence.
  const int64_t r =
      total <= UINT32_MAX ? static_cast<int64_t>(static_cast<uint32_t>(e0) / static_cast<uint32_t>(width)) : e0 / width;
  const int64_t c = e0 - r * width;
  if (c + 8 <= width && e0 + 8 <= total) {
    const int64_t s = r * pitch + c;  // the first element's input index
    const int64_t s0 = s & ~int64_t{7};
    const int sh = static_cast<int>(s - s0);  // its offset in the aligned vector, in elements
    uint32_t w[8];
    const uint4 v0 = reinterpret_cast<const uint4*>(x)[s0 / 8];
    w[0] = v0.x, w[1] = v0.y, w[2] = v0.z, w[3] = v0.w;
    // sh > 0: the elements run into the next vector, which lies within the row's pitch (s + 8 <= r * pitch + width).
    const uint4 v1 = sh ? reinterpret_cast<const uint4*>(x)[s0 / 8 + 1] : v0;
    w[4] = v1.x, w[5] = v1.y, w[6] = v1.z, w[7] = v1.w;
    const int o = sh >> 1;  // whole 32-bit words to skip
    uint32_t sel[5];
#pragma unroll
    for (int t = 0; t < 5; ++t) {
      uint32_t v = w[t];
      v = o == 1 ? w[t + 1] : v;
      v = o == 2 ? w[t + 2] : v;
      v = o == 3 ? w[t + 3] : v;
      sel[t] = v;
    }
    uint32_t out[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) out[t] = (sh & 1) ? __byte_perm(sel[t], sel[t + 1], 0x5432) : sel[t];
    if constexpr (!std::is_same_v<TI, TO>) {
      const TI* in = reinterpret_cast<const TI*>(out);
      TO conv[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) conv[k] = from_f<TO>(to_f(in[k]));
#pragma unroll
      for (int t = 0; t < 4; ++t) out[t] = reinterpret_cast<const uint32_t*>(conv)[t];
    }
    reinterpret_cast<uint4*>(y)[e0 / 8] = make_uint4(out[0], out[1], out[2], out[3]);
    return;
  }
  for (int k = 0; k < 8 && e0 + k < total; ++k) {
    const int64_t cc = c + k, rr = cc >= width ? r + 1 : r;
    y[e0 + k] = from_f<TO>(to_f(x[rr * pitch + (cc >= width ? cc - width : cc)]));
  }
}

// Whether the 16-byte store kernel is used (KILN_UNPAD_VEC_STORES=0, an A/B switch, keeps the tiled kernel).
bool gather16_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("KILN_UNPAD_VEC_STORES");
    return !(v && std::string(v) == "0");
  }();
  return on;
}

// Any pitch and alignment (an Unpad not made by pad_gemm_width): an element per thread and step.
template <typename TI, typename TO>
__global__ void unpad_scalar_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t total, int64_t pitch,
                                    int64_t width) {
  pdl_wait();
  pdl_trigger();
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
      if constexpr (sizeof(TI) == 2 && sizeof(TO) == 2) {
        if (pitch % 8 == 0 && width >= 8 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
            reinterpret_cast<uintptr_t>(y) % 16 == 0 && gather16_enabled()) {
          const int64_t blocks = (rows * width + 8 * kThreads - 1) / (8 * kThreads);
          err = launch_pdl(&unpad_gather16_kernel<TI, TO>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0,
                           stream, xi, yo, rows * width, pitch, width);
          return;
        }
      }
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
