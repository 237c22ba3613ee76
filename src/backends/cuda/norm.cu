// Normalization kernels: a row kernel (Softmax/LogSoftmax, Lp, Layer/RMS/Group/Instance normalization), a
// column kernel for Softmax/LogSoftmax/Lp over a strided axis, and MeanVarianceNormalization. Float32 math;
// the formulas follow src/ops/{softmax,norm,transformer_ops}.cpp term by term so rounding stays close.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/norm_kernels.h"
#include "backends/cuda/pdl.cuh"
#include "backends/cuda/reduce_common.cuh"

namespace kiln::cuda {
namespace {

// LayerNormalization's optional Mean and InvStdDev outputs of one row, in the type the node asks for.
__device__ __forceinline__ void store_stats(const RowNormParams& p, int64_t row, float mean, float inv) {
  if (p.mean_out) {
    if (p.stats_double) static_cast<double*>(p.mean_out)[row] = mean;
    else static_cast<float*>(p.mean_out)[row] = mean;
  }
  if (p.inv_std_out) {
    if (p.stats_double) static_cast<double*>(p.inv_std_out)[row] = inv;
    else static_cast<float*>(p.inv_std_out)[row] = inv;
  }
}

// Rows owned by a warp (blockDim (32, rows per block)) or by a whole block (blockDim.y == 1).
template <typename T>
__global__ void __launch_bounds__(1024) row_norm_kernel(const T* __restrict__ x, T* __restrict__ y, RowNormParams p) {
  __shared__ float smem[32];
  const int64_t len = p.len;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.rows; row += step) {
    const T* xr = x + row * len;
    T* yr = y + row * len;
    if (p.mode == RowNorm::kSoftmax || p.mode == RowNorm::kLogSoftmax) {
      float mx = -INFINITY;
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) mx = MaxOp()(mx, to_f(xr[k]));
      mx = row_allreduce(mx, MaxOp(), smem);
      float sum = 0.f;
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) sum += expf(to_f(xr[k]) - mx);
      sum = row_allreduce(sum, AddOp(), smem);
      if (p.mode == RowNorm::kSoftmax) {
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x) yr[k] = from_f<T>(expf(to_f(xr[k]) - mx) / sum);
      } else {
        const float lse = logf(sum);
        for (int64_t k = threadIdx.x; k < len; k += blockDim.x) yr[k] = from_f<T>(to_f(xr[k]) - mx - lse);
      }
      continue;
    }
    if (p.mode == RowNorm::kLp1 || p.mode == RowNorm::kLp2) {
      const bool l1 = p.mode == RowNorm::kLp1;
      float acc = 0.f;
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
        const float v = to_f(xr[k]);
        acc += l1 ? fabsf(v) : v * v;
      }
      acc = row_allreduce(acc, AddOp(), smem);
      const float norm = l1 ? acc : sqrtf(acc);
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x)
        yr[k] = from_f<T>(norm == 0.f ? 0.f : to_f(xr[k]) / norm);
      continue;
    }
    // Mean (not for RMS) and biased variance, two passes like the reference.
    float mean = 0.f;
    if (p.mode != RowNorm::kRmsNorm) {
      float s = 0.f;
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) s += to_f(xr[k]);
      s = row_allreduce(s, AddOp(), smem);
      mean = len > 0 ? s / static_cast<float>(len) : 0.f;
    }
    float sq = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
      const float d = to_f(xr[k]) - mean;
      sq += d * d;
    }
    sq = row_allreduce(sq, AddOp(), smem);
    const float var = len > 0 ? sq / static_cast<float>(len) : 0.f;
    if (p.mode == RowNorm::kLayerNorm || p.mode == RowNorm::kRmsNorm) {
      const float inv = 1.f / sqrtf(var + p.eps);
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
        const float sc = load_param(p.scale, p.scale_dtype, map_offset(p.scale_map, k));
        const float b = p.bias ? load_param(p.bias, p.bias_dtype, map_offset(p.bias_map, k)) : 0.f;
        yr[k] = from_f<T>((to_f(xr[k]) - mean) * inv * sc + b);
      }
      if (threadIdx.x == 0) store_stats(p, row, mean, inv);
      continue;
    }
    // Group / Instance: y = x * a + b per channel, with a = scale / std (Instance) or scale * (1 / std) (Group).
    const bool instance = p.mode == RowNorm::kInstanceNorm;
    const float den = sqrtf(var + p.eps), inv = 1.f / den;
    const int64_t g = row % p.groups;
    if (!p.per_channel) {
      const float sc = load_param(p.scale, p.scale_dtype, g), bi = load_param(p.bias, p.bias_dtype, g);
      const float a = instance ? sc / den : sc * inv, b = bi - mean * a;
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) yr[k] = from_f<T>(to_f(xr[k]) * a + b);
    } else {
      for (int64_t k = threadIdx.x; k < len; k += blockDim.x) {
        const int64_t c = g * p.cpg + div_nonneg(k, p.inner);
        const float sc = load_param(p.scale, p.scale_dtype, c), bi = load_param(p.bias, p.bias_dtype, c);
        const float a = instance ? sc / den : sc * inv, b = bi - mean * a;
        yr[k] = from_f<T>(to_f(xr[k]) * a + b);
      }
    }
  }
}

// LayerNormalization / RMSNormalization fast path: a warp per row, the row held in registers (VPT 16-byte
// vectors per lane), loaded once with vector loads. Same two-pass statistics as row_norm_kernel. Used when the row
// is short (at most 32 * VPT vectors), 16-byte aligned and the scale and bias are dense over it, and when no
// Mean/InvStdDev output is wanted. PV: the scale (and bias) have x's type and alignment; they are then loaded as
// 16-byte vectors with each row (a warp often handles one row only, bert at batch 64: 48 scalar parameter loads
// per lane, each through a type switch, cost more than the row itself), else converted to float one by one.
// TO: y's type, T or (for a fused output Cast, RowNormParams::out_float) float.
template <typename T, typename TO, int VPT, bool PV>
__global__ void __launch_bounds__(128) row_layernorm_vec_kernel(const T* __restrict__ x, TO* __restrict__ y,
                                                                  RowNormParams p) {
  pdl_wait();  // launched with launch_pdl: nothing before this may touch memory an earlier kernel writes
  pdl_trigger();
  constexpr int E = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const bool rms = p.mode == RowNorm::kRmsNorm;
  const float n = static_cast<float>(p.len);
  // !PV: the parameters as floats, converted once per thread. PV: they are loaded per row, with the row's loads
  // (cache hits after the first warp on an SM), so that no converted copies hold registers across rows: at 80
  // registers per thread only 24 warps fit an SM, and bert's 8192 rows at batch 64 took three waves.
  float sc[PV ? 1 : VPT][E], bi[PV ? 1 : VPT][E];
  if constexpr (!PV) {
#pragma unroll
    for (int v = 0; v < VPT; ++v)
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int64_t k = (static_cast<int64_t>(v) * 32 + lane) * E + e;
        sc[v][e] = load_param(p.scale, p.scale_dtype, k);
        bi[v][e] = p.bias ? load_param(p.bias, p.bias_dtype, k) : 0.f;
      }
  }
  for (int64_t row = warp; row < p.rows; row += nwarps) {
    int64_t src = row;
    bool in_table = true;
    if (p.gather_index) {  // kiln EmbedLayerNormalization: the row is looked up in the table x
      src = p.gather_index64 ? static_cast<const int64_t*>(p.gather_index)[row]
                             : static_cast<int64_t>(static_cast<const int32_t*>(p.gather_index)[row]);
      if (src < 0) src += p.gather_rows;
      in_table = src >= 0 && src < p.gather_rows;
    }
    const uint4* xr = reinterpret_cast<const uint4*>(x + (in_table ? src : 0) * p.len);
    TO* yrow = y + row * p.len;
    uint4 raw[VPT], scv[PV ? VPT : 1], biv[PV ? VPT : 1];
#pragma unroll
    for (int i = 0; i < VPT; ++i) raw[i] = in_table ? xr[i * 32 + lane] : make_uint4(0, 0, 0, 0);
    if (p.gather2_table) {  // a second lookup, added as the separate Add stored the sum
      int64_t src2 = p.gather2_index64 ? static_cast<const int64_t*>(p.gather2_index)[row]
                                       : static_cast<int64_t>(static_cast<const int32_t*>(p.gather2_index)[row]);
      if (src2 < 0) src2 += p.gather2_rows;
      if (src2 >= 0 && src2 < p.gather2_rows) {
        const uint4* r2 = reinterpret_cast<const uint4*>(static_cast<const T*>(p.gather2_table) + src2 * p.len);
#pragma unroll
        for (int i = 0; i < VPT; ++i) {
          const uint4 bv = r2[i * 32 + lane];
          T* rt = reinterpret_cast<T*>(&raw[i]);
          const T* bt = reinterpret_cast<const T*>(&bv);
#pragma unroll
          for (int e = 0; e < E; ++e) rt[e] = from_f<T>(to_f(rt[e]) + to_f(bt[e]));
        }
      }
    }
    if (p.addend) {  // kiln AddLayerNormalization: the row plus its addend row, rounded as the Add stored it
      const uint4* ar = reinterpret_cast<const uint4*>(static_cast<const T*>(p.addend) + (row % p.addend_rows) * p.len);
#pragma unroll
      for (int i = 0; i < VPT; ++i) {
        const uint4 av = ar[i * 32 + lane];
        T* rt = reinterpret_cast<T*>(&raw[i]);
        const T* at = reinterpret_cast<const T*>(&av);
#pragma unroll
        for (int e = 0; e < E; ++e) rt[e] = from_f<T>(to_f(rt[e]) + to_f(at[e]));
      }
    }
    if constexpr (PV) {
#pragma unroll
      for (int v = 0; v < VPT; ++v) {
        scv[v] = reinterpret_cast<const uint4*>(p.scale)[v * 32 + lane];
        biv[v] = p.bias ? reinterpret_cast<const uint4*>(p.bias)[v * 32 + lane] : make_uint4(0, 0, 0, 0);
      }
    }
    // The row stays packed in `raw` and is converted in each pass: a float copy would double the registers.
    float mean = 0.f;
    if (!rms) {
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < VPT; ++i)
#pragma unroll
        for (int e = 0; e < E; ++e) s += to_f(reinterpret_cast<const T*>(&raw[i])[e]);
      mean = warp_allreduce(s, AddOp()) / n;
    }
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < VPT; ++i)
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float d = to_f(reinterpret_cast<const T*>(&raw[i])[e]) - mean;
        sq += d * d;
      }
    const float inv = 1.f / sqrtf(warp_allreduce(sq, AddOp()) / n + p.eps);
#pragma unroll
    for (int i = 0; i < VPT; ++i) {
      float o[E];
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float s, b;
        if constexpr (PV) {
          s = to_f(reinterpret_cast<const T*>(&scv[i])[e]);
          b = to_f(reinterpret_cast<const T*>(&biv[i])[e]);
        } else {
          s = sc[i][e];
          b = bi[i][e];
        }
        o[e] = (to_f(reinterpret_cast<const T*>(&raw[i])[e]) - mean) * inv * s + b;
      }
      if constexpr (std::is_same_v<TO, T>) {
        uint4 out;
        T* t = reinterpret_cast<T*>(&out);
#pragma unroll
        for (int e = 0; e < E; ++e) t[e] = from_f<T>(o[e]);
        reinterpret_cast<uint4*>(yrow)[i * 32 + lane] = out;
      } else {  // float32 out: the lane's E values as E / 4 float4 stores
        static_assert(std::is_same_v<TO, float> && E % 4 == 0, "a reduced type's row stored as float32");
        float4* yv = reinterpret_cast<float4*>(yrow) + (i * 32 + lane) * (E / 4);
#pragma unroll
        for (int j = 0; j < E / 4; ++j) yv[j] = make_float4(o[4 * j], o[4 * j + 1], o[4 * j + 2], o[4 * j + 3]);
      }
    }
  }
}

template <typename T, int VPT>
void launch_layernorm_vec(const T* x, void* y, const RowNormParams& p, bool pv, int sm_count, cudaStream_t stream) {
  constexpr int kWarps = 4;
  const int64_t blocks = std::min<int64_t>((p.rows + kWarps - 1) / kWarps, static_cast<int64_t>(sm_count) * 16);
  const dim3 grid(static_cast<unsigned>(blocks)), block(32 * kWarps);
  if (p.out_float && !std::is_same_v<T, float>) {
    auto* kernel = pv ? &row_layernorm_vec_kernel<T, float, VPT, true> : &row_layernorm_vec_kernel<T, float, VPT, false>;
    launch_pdl(kernel, grid, block, 0, stream, x, static_cast<float*>(y), p);
    return;
  }
  auto* kernel = pv ? &row_layernorm_vec_kernel<T, T, VPT, true> : &row_layernorm_vec_kernel<T, T, VPT, false>;
  launch_pdl(kernel, grid, block, 0, stream, x, static_cast<T*>(y), p);
}

// What both vector LayerNorm/RMSNorm kernels need: rows of whole 16-byte vectors of T, x and y aligned, the
// scale (and bias) dense along the row.
template <typename T>
bool layernorm_vectorizable(const void* x, const void* y, const RowNormParams& p) {
  if (p.mode != RowNorm::kLayerNorm && p.mode != RowNorm::kRmsNorm) return false;
  constexpr int64_t E = 16 / sizeof(T);
  if (p.len <= 0 || p.len % E != 0) return false;
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) % 16 != 0) return false;
  auto dense = [&](const IndexMap& m) { return m.n == 1 && m.size[0] == p.len && m.stride[0] == 1; };
  return dense(p.scale_map) && (!p.bias || dense(p.bias_map));
}

// The vector path's VPT for a vectorizable launch, or 0 when it does not apply.
template <typename T>
int layernorm_vec_width(const RowNormParams& p) {
  if (p.mean_out || p.inv_std_out) return 0;
  constexpr int64_t E = 16 / sizeof(T);
  if (p.len % (32 * E) != 0 || p.len / (32 * E) > 4) return 0;
  return static_cast<int>(p.len / (32 * E));
}

// LayerNormalization / RMSNormalization rows of any length that is a whole number of 16-byte vectors (bert-small's
// 384, llama's 4096), where the register-resident kernel does not fit: a warp or block per row as row_norm_kernel,
// the same three passes and formulas, but 16-byte loads and stores and dense parameters indexed directly instead
// of a 2-byte access, a map_offset() and a dtype switch per element. PV: the scale (and bias) have x's type and
// alignment, so they load as vectors too.
template <typename T, bool PV>
__global__ void __launch_bounds__(1024) row_layernorm_wide_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                  RowNormParams p) {
  pdl_wait();  // launched with launch_pdl
  pdl_trigger();
  constexpr int E = 16 / sizeof(T);
  __shared__ float smem[32];
  const int64_t nv = p.len / E;
  const bool rms = p.mode == RowNorm::kRmsNorm;
  const float n = static_cast<float>(p.len);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < p.rows; row += step) {
    const uint4* xr = reinterpret_cast<const uint4*>(x + row * p.len);
    uint4* yr = reinterpret_cast<uint4*>(y + row * p.len);
    float mean = 0.f;
    if (!rms) {
      float s = 0.f;
      for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
        const uint4 raw = xr[i];
        const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int e = 0; e < E; ++e) s += to_f(t[e]);
      }
      mean = row_allreduce(s, AddOp(), smem) / n;
    }
    float sq = 0.f;
    for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
      const uint4 raw = xr[i];
      const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const float d = to_f(t[e]) - mean;
        sq += d * d;
      }
    }
    const float inv = 1.f / sqrtf(row_allreduce(sq, AddOp(), smem) / n + p.eps);
    for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
      const uint4 raw = xr[i];
      const T* t = reinterpret_cast<const T*>(&raw);
      float sc[E], bi[E];
      if constexpr (PV) {
        const uint4 sraw = static_cast<const uint4*>(p.scale)[i];
        const T* st = reinterpret_cast<const T*>(&sraw);
        uint4 braw = make_uint4(0, 0, 0, 0);
        if (p.bias) braw = static_cast<const uint4*>(p.bias)[i];
        const T* bt = reinterpret_cast<const T*>(&braw);
#pragma unroll
        for (int e = 0; e < E; ++e) {
          sc[e] = to_f(st[e]);
          bi[e] = p.bias ? to_f(bt[e]) : 0.f;
        }
      } else {
#pragma unroll
        for (int e = 0; e < E; ++e) {
          sc[e] = load_param(p.scale, p.scale_dtype, i * E + e);
          bi[e] = p.bias ? load_param(p.bias, p.bias_dtype, i * E + e) : 0.f;
        }
      }
      uint4 out;
      T* o = reinterpret_cast<T*>(&out);
#pragma unroll
      for (int e = 0; e < E; ++e) o[e] = from_f<T>((to_f(t[e]) - mean) * inv * sc[e] + bi[e]);
      yr[i] = out;
    }
    if (threadIdx.x == 0) store_stats(p, row, mean, inv);
  }
}

// Whether the vector kernels (row_layernorm_vec_kernel, row_layernorm_wide_kernel) apply, else row_norm_kernel;
// *pv: the parameters load as vectors too.
template <typename T>
bool layernorm_vector_form(const void* x, const void* y, const RowNormParams& p, bool* pv) {
  if (!layernorm_vectorizable<T>(x, y, p)) return false;
  constexpr DataType kT = std::is_same_v<T, float> ? DataType::kFLOAT
                          : std::is_same_v<T, __half> ? DataType::kHALF : DataType::kBF16;
  auto vec_param = [&](const void* q, DataType dt) {
    return dt == kT && reinterpret_cast<uintptr_t>(q) % 16 == 0;
  };
  *pv = vec_param(p.scale, p.scale_dtype) && (!p.bias || vec_param(p.bias, p.bias_dtype));
  return true;
}

// One thread per (outer, inner) column of [outer, len, inner]: Softmax/LogSoftmax/Lp along a strided axis.
template <typename T>
__global__ void col_norm_kernel(const T* __restrict__ x, T* __restrict__ y, RowNorm mode, int64_t outer,
                                int64_t len, int64_t inner) {
  const int64_t total = outer * inner, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += step) {
    const int64_t o = t / inner, i = t - o * inner;
    const T* xc = x + o * len * inner + i;
    T* yc = y + o * len * inner + i;
    if (mode == RowNorm::kSoftmax || mode == RowNorm::kLogSoftmax) {
      float mx = -INFINITY;
      for (int64_t k = 0; k < len; ++k) mx = MaxOp()(mx, to_f(xc[k * inner]));
      float sum = 0.f;
      for (int64_t k = 0; k < len; ++k) sum += expf(to_f(xc[k * inner]) - mx);
      if (mode == RowNorm::kSoftmax) {
        for (int64_t k = 0; k < len; ++k) yc[k * inner] = from_f<T>(expf(to_f(xc[k * inner]) - mx) / sum);
      } else {
        const float lse = logf(sum);
        for (int64_t k = 0; k < len; ++k) yc[k * inner] = from_f<T>(to_f(xc[k * inner]) - mx - lse);
      }
    } else {
      const bool l1 = mode == RowNorm::kLp1;
      float acc = 0.f;
      for (int64_t k = 0; k < len; ++k) {
        const float v = to_f(xc[k * inner]);
        acc += l1 ? fabsf(v) : v * v;
      }
      const float norm = l1 ? acc : sqrtf(acc);
      for (int64_t k = 0; k < len; ++k)
        yc[k * inner] = from_f<T>(norm == 0.f ? 0.f : to_f(xc[k * inner]) / norm);
    }
  }
}

// One warp or block per statistics group (an index of the kept dims), reading through the strided maps.
template <typename T>
__global__ void __launch_bounds__(1024) mvn_kernel(const T* __restrict__ x, T* __restrict__ y, AxisSplit s) {
  __shared__ float smem[32];
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  const float n = static_cast<float>(s.nred);
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; g < s.nkept; g += step) {
    const int64_t base = map_offset(s.kept, g);
    float sum = 0.f;
    for (int64_t r = threadIdx.x; r < s.nred; r += blockDim.x) sum += to_f(x[base + map_offset(s.red, r)]);
    sum = row_allreduce(sum, AddOp(), smem);
    const float mean = s.nred > 0 ? sum / n : 0.f;
    float sq = 0.f;
    for (int64_t r = threadIdx.x; r < s.nred; r += blockDim.x) {
      const float d = to_f(x[base + map_offset(s.red, r)]) - mean;
      sq += d * d;
    }
    sq = row_allreduce(sq, AddOp(), smem);
    const float sd = sqrtf(s.nred > 0 ? sq / n : 0.f) + 1e-9f;
    for (int64_t r = threadIdx.x; r < s.nred; r += blockDim.x) {
      const int64_t off = base + map_offset(s.red, r);
      y[off] = from_f<T>((to_f(x[off]) - mean) / sd);
    }
  }
}

template <typename T>
Status row_norm_t(const void* x, void* y, const RowNormParams& p, int sm_count, cudaStream_t stream) {
  if (p.rows <= 0) return Status::Ok();
  bool pv = false;
  const bool vectorizable = layernorm_vector_form<T>(x, y, p, &pv);
  if ((p.addend || p.gather_index) &&
      (!vectorizable || layernorm_vec_width<T>(p) == 0 || (p.addend && p.addend_rows <= 0) ||
       reinterpret_cast<uintptr_t>(p.addend) % 16 != 0 || (p.gather_index && p.gather_rows <= 0) ||
       (p.gather2_table && (!p.gather_index || p.gather2_rows <= 0 ||
                            reinterpret_cast<uintptr_t>(p.gather2_table) % 16 != 0))))
    return unsupported("LayerNormalization with an addend or a row lookup: only the register-resident kernel takes one here");
  if (p.out_float && !std::is_same_v<T, float> && (!vectorizable || layernorm_vec_width<T>(p) == 0))
    return unsupported("LayerNormalization writing float32 from a reduced type: only the register-resident kernel does");
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  switch (vectorizable ? layernorm_vec_width<T>(p) : 0) {
    case 1: launch_layernorm_vec<T, 1>(xt, y, p, pv, sm_count, stream); break;
    case 2: launch_layernorm_vec<T, 2>(xt, y, p, pv, sm_count, stream); break;
    case 3: launch_layernorm_vec<T, 3>(xt, y, p, pv, sm_count, stream); break;
    case 4: launch_layernorm_vec<T, 4>(xt, y, p, pv, sm_count, stream); break;
    default: {
      if (vectorizable) {
        constexpr int64_t E = 16 / sizeof(T);
        const dim3 block = row_block(p.len / E, p.rows, sm_count);
        auto* kernel = pv ? &row_layernorm_wide_kernel<T, true> : &row_layernorm_wide_kernel<T, false>;
        launch_pdl(kernel, dim3(grid_for(p.rows, block.y)), block, 0, stream, xt, yt, p);
        break;
      }
      const dim3 block = row_block(p.len, p.rows, sm_count);
      row_norm_kernel<T><<<grid_for(p.rows, block.y), block, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                        p);
    }
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T>
Status col_norm_t(const void* x, void* y, RowNorm mode, int64_t outer, int64_t len, int64_t inner,
                  cudaStream_t stream) {
  if (outer * len * inner <= 0) return Status::Ok();
  col_norm_kernel<T><<<grid_for(outer * inner, 256), 256, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                       mode, outer, len, inner);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename T>
Status mvn_t(const void* x, void* y, const AxisSplit& s, int sm_count, cudaStream_t stream) {
  if (s.nkept <= 0 || s.nred <= 0) return Status::Ok();
  const dim3 block = row_block(s.nred, s.nkept, sm_count);
  mvn_kernel<T><<<grid_for(s.nkept, block.y), block, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), s);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

// Channels-last GroupNormalization, X [N, S, C] with C = G * cpg, in two passes. Pass 1: block (n, chunk) sums x
// and x*x over its rows of S, thread t over channels t, t + blockDim.x, ... (a row's reads are contiguous), folds
// the channels into their groups in shared memory and adds the block's partial sums to stats[n][g] (float2,
// zeroed first). Pass 2, same blocks: y = act(x * mul[c] + add[c]), mul = scale[c] * rsqrt(var + eps) and
// add = bias[c] - mean * mul computed once per thread and channel.
template <typename T>
__global__ void __launch_bounds__(1024) nhwc_gn_stats_kernel(const T* __restrict__ x, float2* __restrict__ stats,
                                                            int64_t spatial, int64_t channels, int64_t cpg,
                                                            int64_t groups, int64_t rows_per_chunk) {
  extern __shared__ float2 part[];  // [groups]
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) part[g] = make_float2(0.f, 0.f);
  __syncthreads();
  const int64_t n = blockIdx.y;
  const int64_t s0 = static_cast<int64_t>(blockIdx.x) * rows_per_chunk;
  const int64_t s1 = min(spatial, s0 + rows_per_chunk);
  const T* xn = x + n * spatial * channels;
  for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
    float sum = 0.f, sq = 0.f;
    for (int64_t r = s0; r < s1; ++r) {
      const float v = to_f(xn[r * channels + c]);
      sum += v;
      sq += v * v;
    }
    atomicAdd(&part[c / cpg].x, sum);
    atomicAdd(&part[c / cpg].y, sq);
  }
  __syncthreads();
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    atomicAdd(&stats[n * groups + g].x, part[g].x);
    atomicAdd(&stats[n * groups + g].y, part[g].y);
  }
}

template <typename T>
__global__ void __launch_bounds__(1024) nhwc_gn_apply_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                             const float2* __restrict__ stats, ChannelAffine aff,
                                                             int64_t spatial, int64_t cpg, int64_t groups,
                                                             int64_t rows_per_chunk) {
  const int64_t channels = aff.channels, n = blockIdx.y;
  const int64_t s0 = static_cast<int64_t>(blockIdx.x) * rows_per_chunk;
  const int64_t s1 = min(spatial, s0 + rows_per_chunk);
  const float count = static_cast<float>(spatial * cpg);
  const int64_t base = n * spatial * channels;
  for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
    const float2 st = stats[n * groups + c / cpg];
    const float mean = st.x / count;
    const float var = fmaxf(st.y / count - mean * mean, 0.f);
    const float mul = load_param(aff.scale, aff.scale_dtype, c) * rsqrtf(var + aff.eps);
    const float add = load_param(aff.bias, aff.bias_dtype, c) - mean * mul;
    for (int64_t r = s0; r < s1; ++r) {
      const int64_t i = base + r * channels + c;
      y[i] = from_f<T>(epilogue_act(to_f(x[i]) * mul + add, aff.act));
    }
  }
}

template <typename T>
Status nhwc_gn_t(const void* x, void* y, int64_t n, int64_t spatial, int64_t groups, const ChannelAffine& aff,
                 void* workspace, size_t workspace_bytes, int sm_count, cudaStream_t stream) {
  const int64_t channels = aff.channels, cpg = channels / groups, total = n * spatial * channels;
  if (total <= 0) return Status::Ok();
  const size_t stat_bytes = static_cast<size_t>(n * groups) * sizeof(float2);
  if (stat_bytes > workspace_bytes || groups * sizeof(float2) > 48 * 1024 || n > 65535)
    return unsupported("GroupNormalization (channels-last): " + std::to_string(n) + " images of " +
                       std::to_string(groups) + " groups do not fit the kernel's statistics buffers");
  auto* stats = static_cast<float2*>(workspace);
  KILN_CUDA_CHECK(cudaMemsetAsync(stats, 0, stat_bytes, stream));
  // About four blocks per SM over all images, each at least 8 rows; a thread per channel up to 1024 channels.
  const int64_t want = std::max<int64_t>(1, (4 * static_cast<int64_t>(sm_count) + n - 1) / n);
  const int64_t chunks = std::min<int64_t>(want, std::max<int64_t>(1, spatial / 8));
  const int64_t rows = (spatial + chunks - 1) / chunks;
  const dim3 grid(static_cast<unsigned>((spatial + rows - 1) / rows), static_cast<unsigned>(n));
  const int threads = channels <= 1024 ? static_cast<int>((channels + 31) / 32 * 32) : 512;
  nhwc_gn_stats_kernel<T><<<grid, threads, groups * sizeof(float2), stream>>>(
      static_cast<const T*>(x), stats, spatial, channels, cpg, groups, rows);
  KILN_CUDA_LAUNCH_CHECK();
  nhwc_gn_apply_kernel<T><<<grid, threads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), stats, aff,
                                                        spatial, cpg, groups, rows);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

// The statistics of FusedMatMul's standardized A rows (norm_epsilon: a LayerNorm folded into the GEMM), for the
// CUTLASS epilogue: a warp per row, float32 sums, the mean first and then the squared deviations from it (the
// second pass reads the row again from L1), as the LayerNorm kernels compute them. Rows of whole 16-byte vectors
// (the GEMM's TMA loads need them too) are read as vectors, others element by element. With y, the standardized
// rows (x - mean) / sqrt(var + eps) go there instead (x's type; for cuBLASLt, which has no row terms).
template <typename T>
__global__ void __launch_bounds__(128) row_stats_kernel(const T* __restrict__ x, int64_t rows, int64_t len, float eps,
                                                        float alpha, float* __restrict__ neg_mean,
                                                        float* __restrict__ rstd, T* __restrict__ y) {
  pdl_wait();
  pdl_trigger();
  constexpr int E = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const bool vec = len % E == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const float n = static_cast<float>(len);
  for (int64_t row = warp; row < rows; row += nwarps) {
    const T* xr = x + row * len;
    auto over_row = [&](auto&& f) {
      if (vec) {
        for (int64_t v = lane; v < len / E; v += 32) {
          const uint4 raw = reinterpret_cast<const uint4*>(xr)[v];
#pragma unroll
          for (int e = 0; e < E; ++e) f(to_f(reinterpret_cast<const T*>(&raw)[e]));
        }
      } else {
        for (int64_t k = lane; k < len; k += 32) f(to_f(xr[k]));
      }
    };
    float s = 0.f;
    over_row([&](float v) { s += v; });
    const float mean = warp_allreduce(s, AddOp()) / n;
    float sq = 0.f;
    over_row([&](float v) { sq += (v - mean) * (v - mean); });
    const float var = warp_allreduce(sq, AddOp()) / n;
    if (y) {
      const float inv = 1.f / sqrtf(var + eps);
      T* yr = y + row * len;
      if (vec) {
        for (int64_t v = lane; v < len / E; v += 32) {
          uint4 raw = reinterpret_cast<const uint4*>(xr)[v];
          T* t = reinterpret_cast<T*>(&raw);
#pragma unroll
          for (int e = 0; e < E; ++e) t[e] = from_f<T>((to_f(t[e]) - mean) * inv);
          reinterpret_cast<uint4*>(yr)[v] = raw;
        }
      } else {
        for (int64_t k = lane; k < len; k += 32) yr[k] = from_f<T>((to_f(xr[k]) - mean) * inv);
      }
    } else if (lane == 0) {
      neg_mean[row] = -mean;
      rstd[row] = alpha / sqrtf(var + eps);
    }
  }
}

template <typename T>
Status row_stats_t(const void* x, int64_t rows, int64_t len, float eps, float alpha, float* neg_mean, float* rstd,
                   void* y, int sm_count, cudaStream_t stream) {
  constexpr int kWarps = 4;
  const int64_t blocks = std::min<int64_t>((rows + kWarps - 1) / kWarps, static_cast<int64_t>(sm_count) * 16);
  KILN_CUDA_CHECK(launch_pdl(&row_stats_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(32 * kWarps), 0, stream,
                             static_cast<const T*>(x), rows, len, eps, alpha, neg_mean, rstd, static_cast<T*>(y)));
  return Status::Ok();
}

Status bad_type(const char* what, DataType dt) {
  return unsupported(std::string(what) + ": no CUDA kernel for data type " + std::to_string(static_cast<int>(dt)));
}

}  // namespace

Status launch_row_norm(DataType dt, const void* x, void* y, const RowNormParams& p, int sm_count, cudaStream_t stream) {
  if (sm_count <= 0) sm_count = 132;
  switch (dt) {
    case DataType::kFLOAT: return row_norm_t<float>(x, y, p, sm_count, stream);
    case DataType::kHALF: return row_norm_t<__half>(x, y, p, sm_count, stream);
    case DataType::kBF16: return row_norm_t<__nv_bfloat16>(x, y, p, sm_count, stream);
    default: return bad_type("normalization", dt);
  }
}

Status launch_col_norm(DataType dt, const void* x, void* y, RowNorm mode, int64_t outer, int64_t len, int64_t inner,
                       cudaStream_t stream) {
  switch (dt) {
    case DataType::kFLOAT: return col_norm_t<float>(x, y, mode, outer, len, inner, stream);
    case DataType::kHALF: return col_norm_t<__half>(x, y, mode, outer, len, inner, stream);
    case DataType::kBF16: return col_norm_t<__nv_bfloat16>(x, y, mode, outer, len, inner, stream);
    default: return bad_type("normalization", dt);
  }
}

Status launch_mvn(DataType dt, const void* x, void* y, const AxisSplit& s, int sm_count, cudaStream_t stream) {
  if (sm_count <= 0) sm_count = 132;
  switch (dt) {
    case DataType::kFLOAT: return mvn_t<float>(x, y, s, sm_count, stream);
    case DataType::kHALF: return mvn_t<__half>(x, y, s, sm_count, stream);
    case DataType::kBF16: return mvn_t<__nv_bfloat16>(x, y, s, sm_count, stream);
    default: return bad_type("MeanVarianceNormalization", dt);
  }
}

Status launch_nhwc_groupnorm(DataType dt, const void* x, void* y, int64_t n, int64_t spatial, int64_t groups,
                             const ChannelAffine& aff, void* ws, size_t ws_bytes, int sm_count, cudaStream_t stream) {
  const int sm = sm_count > 0 ? sm_count : 132;
  switch (dt) {
    case DataType::kFLOAT: return nhwc_gn_t<float>(x, y, n, spatial, groups, aff, ws, ws_bytes, sm, stream);
    case DataType::kHALF: return nhwc_gn_t<__half>(x, y, n, spatial, groups, aff, ws, ws_bytes, sm, stream);
    case DataType::kBF16:
      return nhwc_gn_t<__nv_bfloat16>(x, y, n, spatial, groups, aff, ws, ws_bytes, sm, stream);
    default: return bad_type("GroupNormalization", dt);
  }
}

namespace {
Status row_stats_any(DataType dt, const void* x, int64_t rows, int64_t len, float eps, float alpha, float* neg_mean,
                     float* rstd, void* y, int sm_count, cudaStream_t stream) {
  if (rows <= 0) return Status::Ok();
  if (len <= 0) return invalid_argument("row statistics over rows of " + std::to_string(len) + " elements");
  switch (dt) {
    case DataType::kFLOAT: return row_stats_t<float>(x, rows, len, eps, alpha, neg_mean, rstd, y, sm_count, stream);
    case DataType::kHALF: return row_stats_t<__half>(x, rows, len, eps, alpha, neg_mean, rstd, y, sm_count, stream);
    case DataType::kBF16:
      return row_stats_t<__nv_bfloat16>(x, rows, len, eps, alpha, neg_mean, rstd, y, sm_count, stream);
    default: return bad_type("row statistics", dt);
  }
}
}  // namespace

Status launch_row_stats(DataType dt, const void* x, int64_t rows, int64_t len, float eps, float alpha,
                        float* neg_mean, float* rstd, int sm_count, cudaStream_t stream) {
  return row_stats_any(dt, x, rows, len, eps, alpha, neg_mean, rstd, nullptr, sm_count, stream);
}

Status launch_row_standardize(DataType dt, const void* x, void* y, int64_t rows, int64_t len, float eps, int sm_count,
                              cudaStream_t stream) {
  return row_stats_any(dt, x, rows, len, eps, 1.f, nullptr, nullptr, y, sm_count, stream);
}

}  // namespace kiln::cuda
