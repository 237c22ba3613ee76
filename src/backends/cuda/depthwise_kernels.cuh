// Internal to the depthwise convolution's CUDA files, shared by them: the 16-byte packs, the epilogue and
// prologue by class, the weight staging, and the launch helpers. depthwise.cu holds the strip kernel and the entry
// points (depthwise.h), depthwise_tiled.cu the tiled and pipelined kernels, depthwise_rows.cu the row-streaming one:
// three sets of instantiations that compile side by side.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>
#include <type_traits>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/depthwise.h"
#include "backends/cuda/float_convert.cuh"

namespace kiln::cuda::dw {

// V consecutive elements, aligned to their size: one 16-byte access for the vector instantiations. Read and
// written as an aggregate of T (no type punning through another type).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&v)[V]) {
  const Pack<T, V> raw = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = to_f(raw.v[i]);
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&v)[V]) {
  Pack<T, V> raw;
#pragma unroll
  for (int i = 0; i < V; ++i) raw.v[i] = from_f<T>(v[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = raw;
}

// The epilogue's activation by class, fixed at compile time in the tiled and row-streaming kernels (dw_classes):
// 1 a clamp to [ep.lo, ep.hi] (Relu, Clip: two instructions an element), 2 SiLU (as epilogue_act computes it), 3
// any activation (epilogue_act's switch, an indirect branch an element; also the identity).
template <int kEp>
__device__ __forceinline__ float dw_epilogue(float x, const EpilogueParams& ep) {
  if constexpr (kEp == 1) return fminf(fmaxf(x, ep.lo), ep.hi);
  if constexpr (kEp == 2) return x / (1.f + expf(-x));
  return epilogue_act(x, ep);
}

// The epilogue of one output vector at element offset `out`: + residual z (if any), activation, store. With
// `squeeze`, the stored values (rounded to T) are added to sum, the thread's per-channel sums for FusedConv's mean
// output (dw_block_channel_sums).
template <typename T, int V, int kEp = 3>
__device__ __forceinline__ void store_output(T* y, const T* z, int out, float (&acc)[V], const EpilogueParams& ep,
                                             bool squeeze, float (&sum)[V]) {
  if (z) {
    float zv[V];
    load_vec<T, V>(z + out, zv);
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] += zv[v];
  }
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = dw_epilogue<kEp>(acc[v], ep);
  store_vec<T, V>(y + out, acc);
  if (squeeze) {
#pragma unroll
    for (int v = 0; v < V; ++v) sum[v] += to_f(from_f<T>(acc[v]));
  }
}

template <typename T, int V, int kEp = 3>
__device__ __forceinline__ void store_output(T* y, const T* z, int out, float (&acc)[V], const EpilogueParams& ep) {
  float unused[V];
  store_output<T, V, kEp>(y, z, out, acc, ep, false, unused);
}

// The squeeze (FusedConv's mean output M) in the tiled and row-streaming kernels: each block adds up its threads'
// per-channel sums of the outputs they stored, in a fixed order, and writes them as its partial: part[slot][C],
// slot the block's spatial tile or strip; dw_squeeze_finish (depthwise.cu) adds an image's partials in slot order
// and divides by OH * OW. Deterministic: no atomics.
//
// A thread holds the sums of channel vector l (tid % cv; blockDim.x a multiple of cv). red: shared memory that no
// thread uses meanwhile, dw_squeeze_floats(blockDim.x, cv, V) floats (depthwise_tile_plan.h). Every thread of the
// block calls it; it ends with a barrier, so red may be written again after it.

template <int V>
__device__ __forceinline__ void dw_block_channel_sums(const float (&sum)[V], int cv, float* red,
                                                      float* __restrict__ part, int c0, int c) {
  const int nt = blockDim.x, tid = threadIdx.x, l = tid % cv, k = tid / cv, nk = nt / cv, e_count = cv * V;
  // red[v][k][l]: element v of the sums of thread (k, l); element e = v * cv + l below, so that consecutive threads
  // read consecutive words.
#pragma unroll
  for (int v = 0; v < V; ++v) red[(v * nk + k) * cv + l] = sum[v];
  __syncthreads();
  // j of J threads per element adds the rows k = j, j + J, ...; then one thread an element adds the J results.
  const int J = nt / e_count > 1 ? nt / e_count : 1;
  float* mid = red + nt * V;
  for (int i = tid; i < J * e_count; i += nt) {
    const int e = i % e_count, j = i / e_count, v = e / cv, le = e % cv;
    float a = 0.f;
    for (int kk = j; kk < nk; kk += J) a += red[(v * nk + kk) * cv + le];
    mid[j * e_count + e] = a;
  }
  __syncthreads();
  for (int e = tid; e < e_count; e += nt) {
    float a = 0.f;
    for (int j = 0; j < J; ++j) a += mid[j * e_count + e];
    const int ch = c0 + (e % cv) * V + e / cv;
    if (ch < c) part[ch] = a;
  }
  __syncthreads();
}

// Shared by the tiled and row-streaming kernels. Weights and bias of the chunk at channel c0 into shared memory as
// float [tap][cv][V] and [cv][V] (zero past C).
template <typename T, int V, int K>
__device__ __forceinline__ void dw_tile_stage_weights(const T* __restrict__ w, const T* __restrict__ b,
                                                      const DepthwiseGeom& g, int c0, int cv, float* sw, float* sb) {
  constexpr int kTaps = K * K;
  for (int i = threadIdx.x; i < kTaps * cv * V; i += blockDim.x) {
    const int v = i % V, t = i / V;
    const int ch = c0 + (t % cv) * V + v;
    sw[i] = ch < g.c ? to_f(w[ch * kTaps + t / cv]) : 0.f;
  }
  for (int i = threadIdx.x; i < cv * V; i += blockDim.x) sb[i] = b && c0 + i < g.c ? to_f(b[c0 + i]) : 0.f;
}

// The prologue of one real input element (kPre as in the tiled kernel); padding never takes it.
template <int kPre>
__device__ __forceinline__ float dw_tile_pre(float f, const EpilogueParams& pre) {
  if constexpr (kPre == 1) return fminf(fmaxf(f, pre.lo), pre.hi);
  if constexpr (kPre == 2) return epilogue_act(f, pre);
  return f;
}

// Resident blocks per SM of a kernel at a block size and shared memory: asked of the runtime once per
// combination, not on every enqueue (the occupancy query costs microseconds of host time).
Result<int> resident_blocks_per_sm(const void* kernel, int threads, size_t smem);

// Relu (act 1) as a clamp to [0, inf): prologues and the kernels' clamp epilogue class run Relu and Clip alike.
EpilogueParams as_clamp(const EpilogueParams& e);

// Raises a tiled kernel's dynamic shared memory limit to its plans' most (`bytes`), once per kernel.
Status allow_tile_smem(const void* kernel, size_t bytes);

// Calls f(integral_constant<kPre>, integral_constant<kEp>, integral_constant<K>, integral_constant<S>) with the
// compile-time parameters of a tiled or row-streaming kernel for element type T: the prologue's class (0 none, 1
// Relu/Clip as a clamp, 2 any), the epilogue's (dw_epilogue: 1 Relu/Clip, 2 SiLU, 3 any), and the square window
// (3 or 5) and stride (1 or 2) the plans admit. The epilogue classes 1 and 2 only for 16-bit types without a
// general prologue (the layers of the mobilenet and efficientnet families; the rest keeps the per-element switch,
// to bound the instantiations).
template <typename T, typename F>
Status dw_instance(const EpilogueParams& pre, const EpilogueParams& ep, const DepthwiseGeom& g, F&& f) {
  using I0 = std::integral_constant<int, 0>;
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I3 = std::integral_constant<int, 3>;
  using I5 = std::integral_constant<int, 5>;
  auto with_window = [&](auto kp, auto ke) -> Status {
    if (g.kh == 3) return g.sh == 1 ? f(kp, ke, I3{}, I1{}) : f(kp, ke, I3{}, I2{});
    return g.sh == 1 ? f(kp, ke, I5{}, I1{}) : f(kp, ke, I5{}, I2{});
  };
  if (pre.act != 0 && pre.act != 1 && pre.act != 2) return with_window(I2{}, I3{});
  auto with_ep = [&](auto kp) -> Status {
    if constexpr (sizeof(T) == 2) {
      if (ep.act == 1 || ep.act == 2) return with_window(kp, I1{});
      if (ep.act == 4) return with_window(kp, I2{});
    }
    return with_window(kp, I3{});
  };
  return pre.act == 0 ? with_ep(I0{}) : with_ep(I1{});
}

template <typename T>
struct TypeTag {
  using type = T;
};

// The DataType of a kernel element type (dw_typed's inverse).
template <typename T>
constexpr DataType dw_dtype() {
  if constexpr (std::is_same_v<T, float>) return DataType::kFLOAT;
  else if constexpr (std::is_same_v<T, __half>) return DataType::kHALF;
  else return DataType::kBF16;
}

// Calls f(TypeTag<T>{}) for the element type of a float, half or bfloat16 tensor; an error for any other type.
template <typename F>
Status dw_typed(DataType dt, F&& f) {
  switch (dt) {
    case DataType::kFLOAT:
      return f(TypeTag<float>{});
    case DataType::kHALF:
      return f(TypeTag<__half>{});
    case DataType::kBF16:
      return f(TypeTag<__nv_bfloat16>{});
    default:
      return internal_error(std::string("depthwise convolution: unexpected data type ") + dtype_name(dt));
  }
}

// Where a kernel takes the squeeze (squeeze given, its shared buffer large enough for dw_block_channel_sums and the
// partials within the workspace): the partials' buffer and the image's slots, else null. Sets squeeze->done.
float* squeeze_partials(DwSqueeze* squeeze, const DepthwiseGeom& g, int slots_per_image, size_t buffer_bytes,
                        int threads, int cv, int vec);
// M from the partials: part [n][slots][C] float, mean [n][C] of type dt.
Status launch_squeeze_finish(DataType dt, const float* part, void* mean, const DepthwiseGeom& g, int slots_per_image,
                             cudaStream_t stream);

// The tiled variants' and the row-streaming kernel's launches for launch_depthwise_nhwc_tiled, which has checked the
// buffers' alignment and that the plan fits.
Status launch_tiles(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                    const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep, int variant,
                    int sm_count, DwSqueeze* squeeze, cudaStream_t stream);
Status launch_rows(DataType dt, const void* x, const void* w, const void* b, const void* z, void* y,
                   const DepthwiseGeom& g, const EpilogueParams& pre, const EpilogueParams& ep, int sm_count,
                   DwSqueeze* squeeze, cudaStream_t stream);

}  // namespace kiln::cuda::dw
