// Kernels of the dense family: Gemm's C broadcast, conv bias and zero-padding copies, BatchNormalization and
// pooling. Float types compute in float32, as the reference does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/activation.cuh"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;


// A parameter of any float type, read as float (BatchNormalization's statistics may differ in type from X).
__device__ __forceinline__ float load_any(const void* p, DataType dt, int64_t i) {
  switch (dt) {
    case DataType::kHALF: return __half2float(static_cast<const __half*>(p)[i]);
    case DataType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// Grid for a grid-stride loop over n items (n > 0).
unsigned blocks_for(int64_t n, int64_t per_block = kThreads) {
  int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < (1 << 20) ? b : (1 << 20));
}

#define KILN_GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);       \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void broadcast_2d_kernel(const T* c, int64_t cs0, int64_t cs1, T* y, int64_t m, int64_t n, float scale) {
  KILN_GRID_STRIDE(idx, m * n) {
    int64_t i = idx / n, j = idx - i * n;
    y[idx] = from_f<T>(scale * to_f(c[i * cs0 + j * cs1]));
  }
}

template <typename T>
__global__ void channel_bias_kernel(T* y, const T* b, int64_t total, int64_t channels, int64_t inner) {
  KILN_GRID_STRIDE(idx, total) {
    int64_t ch = (idx / inner) % channels;
    y[idx] = from_f<T>(to_f(y[idx]) + to_f(b[ch]));
  }
}

template <typename T>
__global__ void conv_epilogue_kernel(T* y, const T* b, const T* z, int64_t total, int64_t channels, int64_t inner,
                                     EpilogueParams e) {
  KILN_GRID_STRIDE(idx, total) {
    float v = to_f(y[idx]);
    if (b) v += to_f(b[(idx / inner) % channels]);
    if (z) v += to_f(z[idx]);
    y[idx] = from_f<T>(epilogue_act(v, e));
  }
}

template <typename E>
__global__ void window_copy_kernel(const E* src, E* dst, int64_t total, Box3 b) {
  const int64_t dvol = b.dst[0] * b.dst[1] * b.dst[2], svol = b.src[0] * b.src[1] * b.src[2];
  KILN_GRID_STRIDE(idx, total) {
    int64_t p = idx / dvol, r = idx - p * dvol;
    int64_t w = r % b.dst[2], h = (r / b.dst[2]) % b.dst[1], d = r / (b.dst[2] * b.dst[1]);
    int64_t sd = d + b.off[0], sh = h + b.off[1], sw = w + b.off[2];
    bool inside = sd >= 0 && sd < b.src[0] && sh >= 0 && sh < b.src[1] && sw >= 0 && sw < b.src[2];
    dst[idx] = inside ? src[p * svol + (sd * b.src[1] + sh) * b.src[2] + sw] : E(0);
  }
}

template <typename T>
__global__ void batchnorm_kernel(const T* x, T* y, int64_t total, int64_t c, int64_t inner, BnParams p) {
  KILN_GRID_STRIDE(idx, total) {
    int64_t q = idx / inner;
    int64_t ch = q % c;
    int64_t k = p.per_position ? ch * inner + (idx - q * inner) : ch;
    float a = load_any(p.scale, p.scale_dt, k) / sqrtf(load_any(p.var, p.var_dt, k) + p.epsilon);
    float b = load_any(p.bias, p.bias_dt, k) - load_any(p.mean, p.mean_dt, k) * a;
    y[idx] = from_f<T>(to_f(x[idx]) * a + b);
  }
}

// One window element into a max (the first NaN wins and stays, as in the reference) or a sum.
__device__ __forceinline__ void pool_accumulate(float v, bool is_max, float& acc, bool& found) {
  if (is_max) {
    if (!found || v > acc || (isnan(v) && !isnan(acc))) acc = v;
    found = true;
  } else {
    acc += v;
  }
}

// cs: channel stride, 1 for planes (NCHW), C for channels-last (element (b, s, c) at (b * isz + s) * C + c).
template <typename T>
__global__ void pool_kernel(const T* x, T* y, int64_t total, PoolGeom g, bool is_max, bool count_include_pad,
                            int64_t cs) {
  const int64_t osz = g.out[0] * g.out[1] * g.out[2], isz = g.in[0] * g.in[1] * g.in[2];
  KILN_GRID_STRIDE(idx, total) {
    int64_t ch = idx % cs, q = idx / cs;
    int64_t pl = q / osz, r = q - pl * osz;
    int64_t o[3];
    o[2] = r % g.out[2];
    o[1] = (r / g.out[2]) % g.out[1];
    o[0] = r / (g.out[2] * g.out[1]);
    const T* xp = x + pl * isz * cs + ch;
    float acc = is_max ? -FLT_MAX : 0.0f;
    bool found = false;
    int64_t count = 0;
    for (int64_t kd = 0; kd < g.k[0]; ++kd) {
      int64_t id = o[0] * g.s[0] - g.pb[0] + kd * g.d[0];
      if (id < 0 || id >= g.in[0]) continue;
      for (int64_t kh = 0; kh < g.k[1]; ++kh) {
        int64_t ih = o[1] * g.s[1] - g.pb[1] + kh * g.d[1];
        if (ih < 0 || ih >= g.in[1]) continue;
        const T* row = xp + (id * g.in[1] + ih) * g.in[2] * cs;
        for (int64_t kw = 0; kw < g.k[2]; ++kw) {
          int64_t iw = o[2] * g.s[2] - g.pb[2] + kw * g.d[2];
          if (iw < 0 || iw >= g.in[2]) continue;
          ++count;
          pool_accumulate(to_f(row[iw * cs]), is_max, acc, found);
        }
      }
    }
    if (is_max) {
      if (!found) acc = 0.0f;
    } else {
      int64_t div = count;
      if (count_include_pad) {
        div = 1;
        for (int a = 0; a < 3; ++a) {
          int64_t cnt = 0;
          for (int64_t kk = 0; kk < g.k[a]; ++kk) {
            int64_t pos = o[a] * g.s[a] - g.pb[a] + kk * g.d[a];
            if (pos >= -g.pb[a] && pos < g.in[a] + g.pe[a]) ++cnt;
          }
          div *= cnt;
        }
      }
      acc = div > 0 ? acc / static_cast<float>(div) : 0.0f;
    }
    y[idx] = from_f<T>(acc);
  }
}

// 2-D channels-last pooling with 32-bit indices (the common case: every index below 2^31). The general kernel
// above spends most of its time in 64-bit divisions; here a thread's channels are the fastest index, so a warp reads
// neighbouring channels of one window position (coalesced), and the window loops need no 64-bit arithmetic.
// V channels per thread: 16 / sizeof(T) (one 16-byte load per window position; resnet50's max pool took 443 us at
// batch 128 with a 2-byte load per channel) when C is a whole number of vectors and x, y are aligned, else 1.
// Same results as pool_kernel, NaN rule and count_include_pad included.
struct Pool2d {
  int c, ih, iw, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
};

template <typename T, int V>
__global__ void pool2d_nhwc_kernel(const T* x, T* y, int total, Pool2d p, bool is_max, bool count_include_pad) {
  using Vec = std::conditional_t<V == 1, T, uint4>;
  static_assert(sizeof(Vec) == V * sizeof(T), "V channels of T per access");
  const int cv = p.c / V;  // vectors per pixel
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
    const int chv = idx % cv;
    int q = idx / cv;
    const int ow = q % p.ow;
    q /= p.ow;
    const int oh = q % p.oh, n = q / p.oh;
    const Vec* xp = reinterpret_cast<const Vec*>(x + static_cast<size_t>(n) * p.ih * p.iw * p.c) + chv;
    float acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = is_max ? -FLT_MAX : 0.0f;
    bool found = false;  // the same window positions count for every channel
    int count = 0;
    for (int kh = 0; kh < p.kh; ++kh) {
      const int ih = oh * p.sh - p.pt + kh * p.dh;
      if (ih < 0 || ih >= p.ih) continue;
      for (int kw = 0; kw < p.kw; ++kw) {
        const int iw = ow * p.sw - p.pl + kw * p.dw;
        if (iw < 0 || iw >= p.iw) continue;
        ++count;
        const Vec raw = xp[(ih * p.iw + iw) * cv];
        const T* t = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float v = to_f(t[e]);
          if (is_max) {
            if (!found || v > acc[e] || (isnan(v) && !isnan(acc[e]))) acc[e] = v;
          } else {
            acc[e] += v;
          }
        }
        found = true;
      }
    }
    int div = 0;  // averages: the divisor
    if (!is_max) {
      div = count;
      if (count_include_pad) {
        int ch_ = 0, cw_ = 0;
        for (int kh = 0; kh < p.kh; ++kh) {
          const int pos = oh * p.sh - p.pt + kh * p.dh;
          ch_ += pos >= -p.pt && pos < p.ih + p.pb;
        }
        for (int kw = 0; kw < p.kw; ++kw) {
          const int pos = ow * p.sw - p.pl + kw * p.dw;
          cw_ += pos >= -p.pl && pos < p.iw + p.pr;
        }
        div = ch_ * cw_;
      }
    }
    Vec out;
    T* o = reinterpret_cast<T*>(&out);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      float r = acc[e];
      if (is_max) {
        if (!found) r = 0.0f;
      } else {
        r = div > 0 ? r / static_cast<float>(div) : 0.0f;
      }
      o[e] = from_f<T>(r);
    }
    reinterpret_cast<Vec*>(y)[idx] = out;
  }
}

__device__ __forceinline__ float max_nan(float a, float b) { return (isnan(a) || isnan(b)) ? NAN : fmaxf(a, b); }

// One warp per plane.
template <typename T>
__global__ void global_pool_kernel(const T* x, T* y, int64_t planes, int64_t size, bool is_max) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t pl = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; pl < planes; pl += warps) {
    const T* xp = x + pl * size;
    float acc = is_max ? -FLT_MAX : 0.0f;
    for (int64_t i = lane; i < size; i += 32) {
      float v = to_f(xp[i]);
      acc = is_max ? max_nan(acc, v) : acc + v;
    }
    for (int off = 16; off > 0; off >>= 1) {
      float o = __shfl_xor_sync(0xffffffffu, acc, off);
      acc = is_max ? max_nan(acc, o) : acc + o;
    }
    if (lane == 0) y[pl] = from_f<T>(is_max ? acc : (size > 0 ? acc / static_cast<float>(size) : 0.0f));
  }
}

Status bad_dtype(const char* what, DataType dt) {
  return internal_error(std::string(what) + ": unexpected data type " + dtype_name(dt));
}

// Calls f(T{}) with T the CUDA type of a float DataType.
template <typename F>
Status dispatch_float(DataType dt, const char* what, F&& f) {
  switch (dt) {
    case DataType::kFLOAT: f(float{}); break;
    case DataType::kHALF: f(__half{}); break;
    case DataType::kBF16: f(__nv_bfloat16{}); break;
    default: return bad_dtype(what, dt);
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}


// kiln ToNhwc: a thread per pixel (n, h, w) reads its C values (coalesced across the warp's neighbouring pixels),
// converts them and writes the pixel's `cout` channels, zero-padded; with cout * sizeof(TO) == 16 as one
// 16-byte store (8 half channels: the padded stem of a CNN).
template <typename TI, typename TO, bool kVec16>
__global__ void to_nhwc_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t pixels, int64_t hw, int c,
                               int cout) {
  KILN_GRID_STRIDE(i, pixels) {
    const int64_t n = i / hw, p = i - n * hw;
    const TI* xs = x + n * c * hw + p;
    if constexpr (kVec16) {
      constexpr int E = 16 / sizeof(TO);
      uint4 raw;
      TO* t = reinterpret_cast<TO*>(&raw);
#pragma unroll
      for (int k = 0; k < E; ++k) t[k] = from_f<TO>(k < c ? to_f(xs[k * hw]) : 0.f);
      reinterpret_cast<uint4*>(y)[i] = raw;
    } else {
      TO* yd = y + i * cout;
      for (int k = 0; k < cout; ++k) yd[k] = from_f<TO>(k < c ? to_f(xs[k * hw]) : 0.f);
    }
  }
}

}  // namespace

Status launch_broadcast_2d(DataType dt, const void* c, int64_t cs0, int64_t cs1, void* y, int64_t m, int64_t n,
                           float scale, cudaStream_t stream) {
  if (m * n == 0) return Status::Ok();
  return dispatch_float(dt, "broadcast_2d", [&](auto tag) {
    using T = decltype(tag);
    broadcast_2d_kernel<T><<<blocks_for(m * n), kThreads, 0, stream>>>(static_cast<const T*>(c), cs0, cs1,
                                                                        static_cast<T*>(y), m, n, scale);
  });
}

Status launch_channel_bias(DataType dt, void* y, const void* b, int64_t outer, int64_t channels, int64_t inner,
                           cudaStream_t stream) {
  const int64_t total = outer * channels * inner;
  if (total == 0) return Status::Ok();
  return dispatch_float(dt, "channel_bias", [&](auto tag) {
    using T = decltype(tag);
    channel_bias_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<T*>(y), static_cast<const T*>(b),
                                                                        total, channels, inner);
  });
}

Status launch_conv_epilogue(DataType dt, void* y, const void* b, const void* z, int64_t total, int64_t channels,
                            int64_t inner, const EpilogueParams& e, cudaStream_t stream) {
  if (total == 0) return Status::Ok();
  if (channels < 1 || inner < 1) return invalid_argument("conv epilogue: channels and inner size must be positive");
  return dispatch_float(dt, "conv_epilogue", [&](auto tag) {
    using T = decltype(tag);
    conv_epilogue_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        static_cast<T*>(y), static_cast<const T*>(b), static_cast<const T*>(z), total, channels, inner, e);
  });
}

Status launch_window_copy(int elem_size, const void* src, void* dst, int64_t planes, Box3 box, cudaStream_t stream) {
  const int64_t total = planes * box.dst[0] * box.dst[1] * box.dst[2];
  if (total == 0) return Status::Ok();
  if (elem_size == 4) {
    window_copy_kernel<uint32_t><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const uint32_t*>(src),
                                                                              static_cast<uint32_t*>(dst), total, box);
  } else if (elem_size == 2) {
    window_copy_kernel<uint16_t><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const uint16_t*>(src),
                                                                              static_cast<uint16_t*>(dst), total, box);
  } else {
    return internal_error("window_copy: element size " + std::to_string(elem_size) + " is not 2 or 4");
  }
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

Status launch_batchnorm(DataType dt, const void* x, void* y, int64_t n, int64_t c, int64_t inner, const BnParams& p,
                        cudaStream_t stream) {
  const int64_t total = n * c * inner;
  if (total == 0) return Status::Ok();
  return dispatch_float(dt, "batchnorm", [&](auto tag) {
    using T = decltype(tag);
    batchnorm_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                     total, c, inner, p);
  });
}

Status launch_pool(DataType dt, PoolMode mode, bool count_include_pad, const void* x, void* y, int64_t planes,
                   const PoolGeom& g, cudaStream_t stream, int64_t channels_last) {
  const int64_t cs = channels_last > 0 ? channels_last : 1;
  const int64_t total = planes * g.out[0] * g.out[1] * g.out[2] * cs;
  if (total == 0) return Status::Ok();
  const int64_t in_total = planes * g.in[0] * g.in[1] * g.in[2] * cs;
  const bool two_d = g.in[0] == 1 && g.out[0] == 1 && g.k[0] == 1 && g.pb[0] == 0 && g.pe[0] == 0;
  if (channels_last > 0 && two_d && total < INT32_MAX && in_total < INT32_MAX) {
    const Pool2d p{static_cast<int>(cs),      static_cast<int>(g.in[1]),  static_cast<int>(g.in[2]),
                   static_cast<int>(g.out[1]), static_cast<int>(g.out[2]), static_cast<int>(g.k[1]),
                   static_cast<int>(g.k[2]),  static_cast<int>(g.s[1]),   static_cast<int>(g.s[2]),
                   static_cast<int>(g.d[1]),  static_cast<int>(g.d[2]),   static_cast<int>(g.pb[1]),
                   static_cast<int>(g.pb[2]), static_cast<int>(g.pe[1]),  static_cast<int>(g.pe[2])};
    return dispatch_float(dt, "pool2d_nhwc", [&](auto tag) {
      using T = decltype(tag);
      constexpr int kV = 16 / sizeof(T);
      const bool vec = cs % kV == 0 && (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) % 16 == 0;
      const int64_t items = vec ? total / kV : total;
      auto* kernel = vec ? &pool2d_nhwc_kernel<T, kV> : &pool2d_nhwc_kernel<T, 1>;
      kernel<<<blocks_for(items), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                          static_cast<int>(items), p, mode == PoolMode::kMax,
                                                          count_include_pad);
    });
  }
  return dispatch_float(dt, "pool", [&](auto tag) {
    using T = decltype(tag);
    pool_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y), total, g,
                                                                mode == PoolMode::kMax, count_include_pad, cs);
  });
}

Status launch_global_pool(DataType dt, PoolMode mode, const void* x, void* y, int64_t planes, int64_t size,
                          cudaStream_t stream) {
  if (planes == 0) return Status::Ok();
  return dispatch_float(dt, "global_pool", [&](auto tag) {
    using T = decltype(tag);
    global_pool_kernel<T><<<blocks_for(planes, kThreads / 32), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), planes, size, mode == PoolMode::kMax);
  });
}

Status launch_to_nhwc(DataType in_dt, DataType out_dt, const void* x, void* y, int64_t n, int64_t c, int64_t hw,
                      int64_t cout, cudaStream_t stream) {
  const int64_t pixels = n * hw;
  if (pixels == 0 || cout == 0) return Status::Ok();
  Status inner = Status::Ok();
  Status outer = dispatch_float(in_dt, "ToNhwc", [&](auto in_tag) {
    using TI = decltype(in_tag);
    inner = dispatch_float(out_dt, "ToNhwc", [&](auto out_tag) {
      using TO = decltype(out_tag);
      const bool vec = cout * static_cast<int64_t>(sizeof(TO)) == 16 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
      if (vec)
        to_nhwc_kernel<TI, TO, true><<<blocks_for(pixels), kThreads, 0, stream>>>(
            static_cast<const TI*>(x), static_cast<TO*>(y), pixels, hw, static_cast<int>(c), static_cast<int>(cout));
      else
        to_nhwc_kernel<TI, TO, false><<<blocks_for(pixels), kThreads, 0, stream>>>(
            static_cast<const TI*>(x), static_cast<TO*>(y), pixels, hw, static_cast<int>(c), static_cast<int>(cout));
    });
  });
  return outer.ok() ? inner : outer;
}

}  // namespace kiln::cuda
