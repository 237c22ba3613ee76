// Elementwise CUDA kernels: grid-stride drivers (same-shape, and broadcast over collapsed dims) instantiated
// once per (functor, storage type); the operator is a run-time switch inside the functor (uniform across the grid), which
// keeps the number of instantiations small. Float16/bfloat16 compute in float32; every formula mirrors the CPU
// reference (src/ops/unary.cpp, elementwise.cpp, cast.cpp), including its operation order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/elementwise_kernels.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int64_t kMaxBlocks = 4096;  // the loop strides over the rest

// ---------------------------------------------------------------------------------------------------------
// Storage and compute types

template <typename T> struct ComputeOf { using type = T; };
template <> struct ComputeOf<__half> { using type = float; };
template <> struct ComputeOf<__nv_bfloat16> { using type = float; };
template <typename T> using compute_t = typename ComputeOf<T>::type;

template <typename T>
__device__ __forceinline__ compute_t<T> load_c(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(p[i]);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(p[i]);
  else return p[i];
}
template <typename T>
__device__ __forceinline__ void store_c(T* p, int64_t i, compute_t<T> v) {
  if constexpr (std::is_same_v<T, __half>) p[i] = __float2half_rn(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) p[i] = __float2bfloat16_rn(v);
  else p[i] = v;
}

// ---------------------------------------------------------------------------------------------------------
// Broadcast indexing and the driver

template <int N>
struct Bc {
  int rank;
  bool index32;
  int64_t dims[kEwMaxDims];
  int64_t st[N][kEwMaxDims];
};

template <int N>
Bc<N> to_bc(const EwBroadcast& b) {
  Bc<N> r{};
  r.rank = b.rank;
  r.index32 = b.index32;
  for (int d = 0; d < kEwMaxDims; ++d) {
    r.dims[d] = b.dims[d];
    for (int k = 0; k < N; ++k) r.st[k][d] = b.strides[k][d];
  }
  return r;
}

// Flat index o of the output -> element offsets of each input. b lives in shared memory, so the dims loop can
// stay a loop (one copy of the index code per load site) while its reads stay cheap broadcasts.
template <int N>
__device__ __forceinline__ void offsets(const Bc<N>& b, int64_t o, int64_t (&idx)[N]) {
  if (b.rank == 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) idx[k] = o * b.st[k][0];
    return;
  }
  if (b.index32) {  // 32-bit division is several times cheaper than 64-bit
    uint32_t r = static_cast<uint32_t>(o);
    uint32_t acc[N];
#pragma unroll
    for (int k = 0; k < N; ++k) acc[k] = 0;
#pragma unroll 1
    for (int d = 0; d < b.rank; ++d) {
      uint32_t m = r;
      if (d + 1 < b.rank) {
        const uint32_t n = static_cast<uint32_t>(b.dims[d]);
        const uint32_t q = r / n;
        m = r - q * n;
        r = q;
      }
#pragma unroll
      for (int k = 0; k < N; ++k) acc[k] += m * static_cast<uint32_t>(b.st[k][d]);
    }
#pragma unroll
    for (int k = 0; k < N; ++k) idx[k] = acc[k];
  } else {
    int64_t r = o;
#pragma unroll
    for (int k = 0; k < N; ++k) idx[k] = 0;
#pragma unroll 1
    for (int d = 0; d < b.rank; ++d) {
      int64_t m = r;
      if (d + 1 < b.rank) {
        const int64_t q = r / b.dims[d];
        m = r - q * b.dims[d];
        r = q;
      }
#pragma unroll
      for (int k = 0; k < N; ++k) idx[k] += m * b.st[k][d];
    }
  }
}

// Each thread handles kUnroll elements kThreads apart per step. The loads are unrolled so that they are in
// flight together; the compute-and-store loop is not (it shifts the loaded values down instead of indexing
// them), so each operator's code appears once per kernel: that keeps compile time and code size down.
template <typename F, typename Load>
__device__ __forceinline__ void run_step(const F& f, int64_t base, int64_t total, Load load) {
  typename F::Loaded v[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t o = base + u * kThreads;
    if (o < total) v[u] = load(o);
  }
#pragma unroll 1
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t o = base + u * kThreads;
    if (o >= total) break;
    f.store(o, v[0]);
#pragma unroll
    for (int j = 0; j + 1 < kUnroll; ++j) v[j] = v[j + 1];
  }
}

// Broadcasting driver.
template <int N, typename F>
__global__ void __launch_bounds__(kThreads) bcast_kernel(F f, Bc<N> b, int64_t total) {
  __shared__ Bc<N> sb;
  if (threadIdx.x == 0) sb = b;
  __syncthreads();
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads * kUnroll;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < total;
       base += step) {
    run_step(f, base, total, [&](int64_t o) {
      int64_t idx[N];
      offsets(sb, o, idx);
      return f.load(idx);
    });
  }
}

// Same-shape driver (unary maps, Cast): element o of the input is element o of the output.
template <typename F>
__global__ void __launch_bounds__(kThreads) flat_kernel(F f, int64_t total) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads * kUnroll;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < total;
       base += step) {
    run_step(f, base, total, [&](int64_t o) {
      const int64_t idx[1] = {o};
      return f.load(idx);
    });
  }
}

unsigned grid_for(int64_t total) {
  int64_t blocks = (total + kThreads * kUnroll - 1) / (kThreads * kUnroll);
  return static_cast<unsigned>(blocks > kMaxBlocks ? kMaxBlocks : blocks);
}

template <int N, typename F>
Status launch(const F& f, const Bc<N>& b, int64_t total, cudaStream_t s) {
  if (total <= 0) return Status::Ok();
  bcast_kernel<N, F><<<grid_for(total), kThreads, 0, s>>>(f, b, total);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

template <typename F>
Status launch_flat(const F& f, int64_t total, cudaStream_t s) {
  if (total <= 0) return Status::Ok();
  flat_kernel<F><<<grid_for(total), kThreads, 0, s>>>(f, total);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

Status bad_type(const char* what, DataType dt) {
  return unsupported(std::string("CUDA ") + what + ": data type " + dtype_name(dt) + " is not supported");
}

// ---------------------------------------------------------------------------------------------------------
// Scalar helpers shared with the reference's semantics

// std::max / std::min as the reference uses them (NaN handling follows the comparison).
__device__ __forceinline__ float ref_max(float a, float b) { return a < b ? b : a; }
__device__ __forceinline__ float ref_min(float a, float b) { return b < a ? b : a; }

template <typename C>
__device__ __forceinline__ C wrap_add(C a, C b) {
  if constexpr (std::is_integral_v<C>)
    return static_cast<C>(static_cast<unsigned long long>(a) + static_cast<unsigned long long>(b));
  else return a + b;
}
template <typename C>
__device__ __forceinline__ C wrap_sub(C a, C b) {
  if constexpr (std::is_integral_v<C>)
    return static_cast<C>(static_cast<unsigned long long>(a) - static_cast<unsigned long long>(b));
  else return a - b;
}
template <typename C>
__device__ __forceinline__ C wrap_mul(C a, C b) {
  if constexpr (std::is_integral_v<C>)
    return static_cast<C>(static_cast<unsigned long long>(a) * static_cast<unsigned long long>(b));
  else return a * b;
}

template <typename C>
__device__ __forceinline__ C nan_max(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    if (isnan(a) || isnan(b)) return __int_as_float(0x7fc00000);
  }
  return a < b ? b : a;
}
template <typename C>
__device__ __forceinline__ C nan_min(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    if (isnan(a) || isnan(b)) return __int_as_float(0x7fc00000);
  }
  return b < a ? b : a;
}

__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}
__device__ __forceinline__ float softplus(float x) { return x > 0.f ? x + log1pf(expf(-x)) : log1pf(expf(x)); }

// Explicit roundings where the reference's a * b + c must not become an FMA.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }

__device__ __forceinline__ float unary_float(const UnaryParams& p, float x) {
  switch (p.op) {
    case UnaryOp::kRelu: return x < 0.f ? 0.f : x;
    case UnaryOp::kSigmoid: return sigmoid(x);
    case UnaryOp::kTanh: return tanhf(x);
    case UnaryOp::kExp: return expf(x);
    case UnaryOp::kLog: return logf(x);
    case UnaryOp::kSqrt: return sqrtf(x);
    case UnaryOp::kReciprocal: return 1.f / x;
    case UnaryOp::kNeg: return -x;
    case UnaryOp::kAbs: return x < 0.f ? -x : x;
    case UnaryOp::kErf: return erff(x);
    case UnaryOp::kFloor: return floorf(x);
    case UnaryOp::kCeil: return ceilf(x);
    case UnaryOp::kRound: return rintf(x);  // halves to even
    case UnaryOp::kSin: return sinf(x);
    case UnaryOp::kCos: return cosf(x);
    case UnaryOp::kTan: return tanf(x);
    case UnaryOp::kAsin: return asinf(x);
    case UnaryOp::kAcos: return acosf(x);
    case UnaryOp::kAtan: return atanf(x);
    case UnaryOp::kSinh: return sinhf(x);
    case UnaryOp::kCosh: return coshf(x);
    case UnaryOp::kAsinh: return asinhf(x);
    case UnaryOp::kAcosh: return acoshf(x);
    case UnaryOp::kAtanh: return atanhf(x);
    case UnaryOp::kSoftplus: return softplus(x);
    case UnaryOp::kSoftsign: return x / (1.f + fabsf(x));
    case UnaryOp::kSign: return isnan(x) ? x : (x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f));
    case UnaryOp::kElu: return x < 0.f ? p.alpha * expm1f(x) : x;
    case UnaryOp::kSelu: return x > 0.f ? p.gamma * x : p.gamma * p.alpha * expm1f(x);
    case UnaryOp::kCelu: return ref_max(0.f, x) + ref_min(0.f, mul_rn(p.alpha, expm1f(x / p.alpha)));
    case UnaryOp::kLeakyRelu: return x < 0.f ? p.alpha * x : x;
    case UnaryOp::kHardSigmoid: return ref_max(0.f, ref_min(1.f, mul_rn(p.alpha, x) + p.beta));
    case UnaryOp::kHardSwish: return x * ref_max(0.f, ref_min(1.f, x / 6.f + 0.5f));
    case UnaryOp::kThresholdedRelu: return x > p.alpha ? x : 0.f;
    case UnaryOp::kGeluErf: return 0.5f * x * (1.f + erff(x / sqrtf(2.f)));
    case UnaryOp::kGeluTanh: {
      const float k = sqrtf(2.f / 3.14159265358979323846f);
      const float cube = mul_rn(mul_rn(mul_rn(0.044715f, x), x), x);
      return 0.5f * x * (1.f + tanhf(k * (x + cube)));
    }
    case UnaryOp::kMish: return x * tanhf(softplus(x));
    case UnaryOp::kSwish: return x * sigmoid(p.alpha * x);
    case UnaryOp::kShrink: return x < -p.alpha ? x + p.beta : (x > p.alpha ? x - p.beta : 0.f);  // alpha: lambd
    case UnaryOp::kClip: {
      float v = x < p.alpha ? p.alpha : x;
      return p.beta < v ? p.beta : v;  // min > max gives max; NaN passes through
    }
    case UnaryOp::kNot: break;
  }
  return x;
}

template <typename T>
__device__ __forceinline__ T unary_int(const UnaryParams& p, T x) {
  using U = std::make_unsigned_t<T>;
  switch (p.op) {
    case UnaryOp::kNeg: return static_cast<T>(static_cast<U>(0) - static_cast<U>(x));
    case UnaryOp::kAbs:
      if constexpr (std::is_signed_v<T>) return x < 0 ? static_cast<T>(static_cast<U>(0) - static_cast<U>(x)) : x;
      else return x;
    case UnaryOp::kSign:
      if constexpr (std::is_signed_v<T>) return static_cast<T>(x > 0 ? 1 : (x < 0 ? -1 : 0));
      else return static_cast<T>(x > 0 ? 1 : 0);
    case UnaryOp::kRelu:
      if constexpr (std::is_signed_v<T>) return x < 0 ? T(0) : x;
      else return x;
    case UnaryOp::kClip: {
      int64_t v = static_cast<int64_t>(x);
      v = v < p.lo ? p.lo : v;
      v = p.hi < v ? p.hi : v;
      return static_cast<T>(v);
    }
    case UnaryOp::kNot: return static_cast<T>(x == 0 ? 1 : 0);
    case UnaryOp::kBitNot: return static_cast<T>(~x);
    default: break;
  }
  return x;
}

// ---------------------------------------------------------------------------------------------------------
// Functors: load(idx) reads the inputs, store(o, v) computes and writes output element o.

template <typename T>
struct UnaryFloatF {
  using Loaded = float;
  const T* x;
  T* y;
  UnaryParams p;
  __device__ float load(const int64_t (&i)[1]) const { return load_c(x, i[0]); }
  __device__ void store(int64_t o, float v) const { store_c(y, o, unary_float(p, v)); }
};

template <typename T>
struct UnaryIntF {
  using Loaded = T;
  const T* x;
  T* y;
  UnaryParams p;
  __device__ T load(const int64_t (&i)[1]) const { return x[i[0]]; }
  __device__ void store(int64_t o, T v) const { y[o] = unary_int(p, v); }
};

template <typename T>
struct FloatClassF {
  using Loaded = float;
  const T* x;
  uint8_t* y;
  bool is_inf, neg, pos;
  __device__ float load(const int64_t (&i)[1]) const { return load_c(x, i[0]); }
  __device__ void store(int64_t o, float v) const {
    bool r = is_inf ? (isinf(v) && (v < 0.f ? neg : pos)) : isnan(v);
    y[o] = r ? 1 : 0;
  }
};

template <typename C>
struct Pair {
  C a, b;
};

template <typename C>
__device__ __forceinline__ C mod_value(C a, C b, bool fmod_mode) {
  if constexpr (std::is_integral_v<C>) {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<C>) {
      if (b == -1) return 0;
    }
    C r = static_cast<C>(a % b);
    if constexpr (std::is_signed_v<C>) {
      if (!fmod_mode && r != 0 && ((r < 0) != (b < 0))) r = static_cast<C>(r + b);
    }
    return r;
  } else {
    C r = fmodf(a, b);
    if (!fmod_mode && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
}

template <typename C>
__device__ __forceinline__ C shift_value(C x, C y, bool left) {
  using U = std::make_unsigned_t<C>;
  constexpr unsigned long long kBits = sizeof(C) * 8;
  // Negative or >= width counts shift every bit out (opset 28), leaving the sign fill for right shifts.
  const bool in_range = y >= 0 && static_cast<unsigned long long>(y) < kBits;
  if (!in_range) return (!left && x < 0) ? C(-1) : C(0);
  const unsigned s = static_cast<unsigned>(y);
  if (left) return static_cast<C>(static_cast<U>(static_cast<U>(x) << s));
  return static_cast<C>(x >> s);  // arithmetic for signed values
}

template <typename T>
struct BinaryF {
  using C = compute_t<T>;
  using Loaded = Pair<C>;
  const T* a;
  const T* b;
  T* out;
  BinaryOp op;
  __device__ Loaded load(const int64_t (&i)[2]) const { return {load_c(a, i[0]), load_c(b, i[1])}; }
  __device__ void store(int64_t o, Loaded v) const {
    const C x = v.a, y = v.b;
    C r = x;
    switch (op) {
      case BinaryOp::kAdd: r = wrap_add(x, y); break;
      case BinaryOp::kSub: r = wrap_sub(x, y); break;
      case BinaryOp::kMul: r = wrap_mul(x, y); break;
      case BinaryOp::kDiv:
        if constexpr (std::is_integral_v<C>) {
          // Truncates toward zero; x / 0 gives 0 and x / -1 wraps, as the reference does.
          r = y == 0 ? C(0) : (y == -1 ? wrap_sub(C(0), x) : static_cast<C>(x / y));
        } else {
          r = x / y;
        }
        break;
      case BinaryOp::kMod: r = mod_value(x, y, false); break;
      case BinaryOp::kFmod: r = mod_value(x, y, true); break;
      case BinaryOp::kPRelu: r = x < C(0) ? wrap_mul(x, y) : x; break;
      case BinaryOp::kShiftLeft:
      case BinaryOp::kShiftRight:
        if constexpr (std::is_integral_v<C>) r = shift_value(x, y, op == BinaryOp::kShiftLeft);
        break;
      case BinaryOp::kBitAnd:
        if constexpr (std::is_integral_v<C>) r = static_cast<C>(x & y);
        break;
      case BinaryOp::kBitOr:
        if constexpr (std::is_integral_v<C>) r = static_cast<C>(x | y);
        break;
      case BinaryOp::kBitXor:
        if constexpr (std::is_integral_v<C>) r = static_cast<C>(x ^ y);
        break;
    }
    store_c(out, o, r);
  }
};

template <typename T>
struct CompareF {
  using C = compute_t<T>;
  using Loaded = Pair<C>;
  const T* a;
  const T* b;
  uint8_t* out;
  CompareOp op;
  __device__ Loaded load(const int64_t (&i)[2]) const { return {load_c(a, i[0]), load_c(b, i[1])}; }
  __device__ void store(int64_t o, Loaded v) const {
    const C x = v.a, y = v.b;
    bool r = false;
    switch (op) {
      case CompareOp::kEqual: r = x == y; break;
      case CompareOp::kLess: r = x < y; break;
      case CompareOp::kLessOrEqual: r = x <= y; break;
      case CompareOp::kGreater: r = x > y; break;
      case CompareOp::kGreaterOrEqual: r = x >= y; break;
      case CompareOp::kAnd: r = (x != 0) && (y != 0); break;
      case CompareOp::kOr: r = (x != 0) || (y != 0); break;
      case CompareOp::kXor: r = (x != 0) != (y != 0); break;
    }
    out[o] = r ? 1 : 0;
  }
};

// Exponent of Pow, read whatever its type: integer exponents go through double pow (as the reference does),
// float ones through float pow.
struct Exponent {
  double v;
  bool is_int;
};

template <typename T>
struct PowF {
  struct Loaded {
    float base;
    Exponent e;
  };
  const T* base;
  const void* expo;
  T* out;
  DataType exp_dt;
  __device__ Loaded load(const int64_t (&i)[2]) const {
    Loaded l;
    l.base = load_c(base, i[0]);
    switch (exp_dt) {
      case DataType::kFLOAT: l.e = {static_cast<const float*>(expo)[i[1]], false}; break;
      case DataType::kHALF: l.e = {__half2float(static_cast<const __half*>(expo)[i[1]]), false}; break;
      case DataType::kBF16: l.e = {__bfloat162float(static_cast<const __nv_bfloat16*>(expo)[i[1]]), false}; break;
      case DataType::kDOUBLE: l.e = {static_cast<const double*>(expo)[i[1]], false}; break;
      case DataType::kINT32: l.e = {static_cast<double>(static_cast<const int32_t*>(expo)[i[1]]), true}; break;
      default: l.e = {static_cast<double>(static_cast<const long long*>(expo)[i[1]]), true}; break;
    }
    return l;
  }
  __device__ void store(int64_t o, const Loaded& l) const {
    float r = l.e.is_int ? static_cast<float>(pow(static_cast<double>(l.base), l.e.v))
                         : powf(l.base, static_cast<float>(l.e.v));
    store_c(out, o, r);
  }
};

template <typename T>
struct VariadicF {
  using C = compute_t<T>;
  using Loaded = C;
  const T* in[kEwMaxInputs];
  int n;
  T* out;
  VariadicOp op;
  __device__ C load(const int64_t (&i)[kEwMaxInputs]) const {
    C acc = load_c(in[0], i[0]);
#pragma unroll
    for (int k = 1; k < kEwMaxInputs; ++k) {
      if (k < n) {
        const C v = load_c(in[k], i[k]);
        switch (op) {
          case VariadicOp::kSum:
          case VariadicOp::kMean: acc = wrap_add(acc, v); break;
          case VariadicOp::kMax: acc = nan_max(acc, v); break;
          case VariadicOp::kMin: acc = nan_min(acc, v); break;
        }
      }
    }
    return acc;
  }
  __device__ void store(int64_t o, C acc) const {
    if constexpr (std::is_floating_point_v<C>) {
      if (op == VariadicOp::kMean) acc = acc / static_cast<C>(n);
    }
    store_c(out, o, acc);
  }
};

template <typename S>
struct WhereF {
  struct Loaded {
    S v;
  };
  const uint8_t* cond;
  const S* x;
  const S* y;
  S* out;
  __device__ Loaded load(const int64_t (&i)[3]) const { return {cond[i[0]] ? x[i[1]] : y[i[2]]}; }
  __device__ void store(int64_t o, Loaded l) const { out[o] = l.v; }
};

// ---- Cast ----

// x86's truncating conversions, which the host reference compiles to: out-of-range and NaN give the
// "integer indefinite" INT_MIN; narrower targets take the low bits of the 32-bit result.
__device__ __forceinline__ int32_t trunc_i32(double d) {
  return (d > -2147483649.0 && d < 2147483648.0) ? static_cast<int32_t>(d) : INT32_MIN;
}
__device__ __forceinline__ long long trunc_i64(double d) {
  return (d >= -9223372036854775808.0 && d < 9223372036854775808.0) ? static_cast<long long>(d)
                                                                     : static_cast<long long>(INT64_MIN);
}

template <typename S>
struct CastF {
  using Loaded = S;
  const S* x;
  void* y;
  DataType to;
  __device__ S load(const int64_t (&i)[1]) const { return x[i[0]]; }
  template <typename D>
  __device__ void put(int64_t o, D v) const { static_cast<D*>(y)[o] = v; }
  __device__ void store(int64_t o, S v) const {
    constexpr bool kFloatSrc = std::is_same_v<S, float> || std::is_same_v<S, double> ||
                               std::is_same_v<S, __half> || std::is_same_v<S, __nv_bfloat16>;
    if constexpr (kFloatSrc) {
      double d;
      if constexpr (std::is_same_v<S, __half>) d = __half2float(v);
      else if constexpr (std::is_same_v<S, __nv_bfloat16>) d = __bfloat162float(v);
      else d = v;
      switch (to) {
        case DataType::kFLOAT: put(o, static_cast<float>(d)); break;
        case DataType::kDOUBLE: put(o, d); break;
        case DataType::kHALF: put(o, __float2half_rn(static_cast<float>(d))); break;
        case DataType::kBF16: put(o, __float2bfloat16_rn(static_cast<float>(d))); break;
        case DataType::kINT8: put(o, static_cast<int8_t>(static_cast<uint32_t>(trunc_i32(d)))); break;
        case DataType::kUINT8: put(o, static_cast<uint8_t>(static_cast<uint32_t>(trunc_i32(d)))); break;
        case DataType::kINT16: put(o, static_cast<int16_t>(static_cast<uint32_t>(trunc_i32(d)))); break;
        case DataType::kINT32: put(o, trunc_i32(d)); break;
        case DataType::kINT64: put(o, trunc_i64(d)); break;
        case DataType::kBOOL: put(o, static_cast<uint8_t>(d != 0.0 ? 1 : 0)); break;
        default: break;
      }
    } else {
      const long long i = static_cast<long long>(v);
      switch (to) {
        case DataType::kFLOAT: put(o, static_cast<float>(i)); break;
        case DataType::kDOUBLE: put(o, static_cast<double>(i)); break;
        // The reference converts through double then float: keep both roundings.
        case DataType::kHALF: put(o, __float2half_rn(static_cast<float>(static_cast<double>(i)))); break;
        case DataType::kBF16: put(o, __float2bfloat16_rn(static_cast<float>(static_cast<double>(i)))); break;
        case DataType::kINT8: put(o, static_cast<int8_t>(i)); break;
        case DataType::kUINT8: put(o, static_cast<uint8_t>(i)); break;
        case DataType::kINT16: put(o, static_cast<int16_t>(i)); break;
        case DataType::kINT32: put(o, static_cast<int32_t>(i)); break;
        case DataType::kINT64: put(o, i); break;
        case DataType::kBOOL: put(o, static_cast<uint8_t>(i != 0 ? 1 : 0)); break;
        default: break;
      }
    }
  }
};

template <typename S>
Status cast_from(const void* x, void* y, DataType to, int64_t n, cudaStream_t s) {
  return launch_flat(CastF<S>{static_cast<const S*>(x), y, to}, n, s);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Launchers

Status launch_unary_float(DataType dt, const void* x, void* y, int64_t n, const UnaryParams& p, cudaStream_t s) {
  auto go = [&](auto tag) {
    using T = decltype(tag);
    return launch_flat(UnaryFloatF<T>{static_cast<const T*>(x), static_cast<T*>(y), p}, n, s);
  };
  switch (dt) {
    case DataType::kFLOAT: return go(float{});
    case DataType::kHALF: return go(__half{});
    case DataType::kBF16: return go(__nv_bfloat16{});
    default: return bad_type("unary", dt);
  }
}

Status launch_unary_int(DataType dt, const void* x, void* y, int64_t n, const UnaryParams& p, cudaStream_t s) {
  auto go = [&](auto tag) {
    using T = decltype(tag);
    return launch_flat(UnaryIntF<T>{static_cast<const T*>(x), static_cast<T*>(y), p}, n, s);
  };
  switch (dt) {
    case DataType::kINT8: return go(int8_t{});
    case DataType::kUINT8:
    case DataType::kBOOL: return go(uint8_t{});
    case DataType::kINT32: return go(int32_t{});
    case DataType::kINT64: return go(static_cast<long long>(0));
    default: return bad_type("unary", dt);
  }
}

Status launch_float_class(DataType dt, const void* x, void* y, int64_t n, bool is_inf, bool detect_negative,
                          bool detect_positive, cudaStream_t s) {
  auto go = [&](auto tag) {
    using T = decltype(tag);
    FloatClassF<T> f{static_cast<const T*>(x), static_cast<uint8_t*>(y), is_inf, detect_negative, detect_positive};
    return launch_flat(f, n, s);
  };
  switch (dt) {
    case DataType::kFLOAT: return go(float{});
    case DataType::kHALF: return go(__half{});
    case DataType::kBF16: return go(__nv_bfloat16{});
    default: return bad_type(is_inf ? "IsInf" : "IsNaN", dt);
  }
}

Status launch_binary(BinaryOp op, DataType dt, const void* a, const void* b, void* out, const EwBroadcast& bc,
                     cudaStream_t s) {
  auto go = [&](auto tag) {
    using T = decltype(tag);
    BinaryF<T> f{static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), op};
    return launch(f, to_bc<2>(bc), bc.total, s);
  };
  switch (dt) {
    case DataType::kFLOAT: return go(float{});
    case DataType::kHALF: return go(__half{});
    case DataType::kBF16: return go(__nv_bfloat16{});
    case DataType::kINT32: return go(int32_t{});
    case DataType::kINT64: return go(static_cast<long long>(0));
    default: return bad_type("binary", dt);
  }
}

Status launch_compare(CompareOp op, DataType dt, const void* a, const void* b, void* out, const EwBroadcast& bc,
                      cudaStream_t s) {
  auto go = [&](auto tag) {
    using T = decltype(tag);
    CompareF<T> f{static_cast<const T*>(a), static_cast<const T*>(b), static_cast<uint8_t*>(out), op};
    return launch(f, to_bc<2>(bc), bc.total, s);
  };
  switch (dt) {
    case DataType::kFLOAT: return go(float{});
    case DataType::kHALF: return go(__half{});
    case DataType::kBF16: return go(__nv_bfloat16{});
    case DataType::kINT32: return go(int32_t{});
    case DataType::kINT64: return go(static_cast<long long>(0));
    case DataType::kBOOL: return go(uint8_t{});
    default: return bad_type("comparison", dt);
  }
}

Status launch_pow(DataType base_dt, DataType exp_dt, const void* base, const void* expo, void* out,
                  const EwBroadcast& bc, cudaStream_t s) {
  switch (exp_dt) {
    case DataType::kFLOAT: case DataType::kHALF: case DataType::kBF16: case DataType::kDOUBLE:
    case DataType::kINT32: case DataType::kINT64: break;
    default: return bad_type("Pow exponent", exp_dt);
  }
  auto go = [&](auto tag) {
    using T = decltype(tag);
    PowF<T> f{static_cast<const T*>(base), expo, static_cast<T*>(out), exp_dt};
    return launch(f, to_bc<2>(bc), bc.total, s);
  };
  switch (base_dt) {
    case DataType::kFLOAT: return go(float{});
    case DataType::kHALF: return go(__half{});
    case DataType::kBF16: return go(__nv_bfloat16{});
    default: return bad_type("Pow", base_dt);
  }
}

Status launch_variadic(VariadicOp op, DataType dt, const void* const* ins, void* out, const EwBroadcast& bc,
                       cudaStream_t s) {
  if (bc.num_inputs < 1 || bc.num_inputs > kEwMaxInputs)
    return invalid_argument("CUDA variadic elementwise: " + std::to_string(bc.num_inputs) + " inputs (1 to " +
                            std::to_string(kEwMaxInputs) + " supported)");
  auto go = [&](auto tag) {
    using T = decltype(tag);
    VariadicF<T> f{};
    for (int k = 0; k < bc.num_inputs; ++k) f.in[k] = static_cast<const T*>(ins[k]);
    for (int k = bc.num_inputs; k < kEwMaxInputs; ++k) f.in[k] = f.in[0];
    f.n = bc.num_inputs;
    f.out = static_cast<T*>(out);
    f.op = op;
    return launch(f, to_bc<kEwMaxInputs>(bc), bc.total, s);
  };
  switch (dt) {
    case DataType::kFLOAT: return go(float{});
    case DataType::kHALF: return go(__half{});
    case DataType::kBF16: return go(__nv_bfloat16{});
    case DataType::kINT32:
      if (op == VariadicOp::kMean) break;
      return go(int32_t{});
    case DataType::kINT64:
      if (op == VariadicOp::kMean) break;
      return go(static_cast<long long>(0));
    default: break;
  }
  return bad_type("variadic", dt);
}

Status launch_where(int elem_bytes, const void* cond, const void* x, const void* y, void* out,
                    const EwBroadcast& bc, cudaStream_t s) {
  auto go = [&](auto tag) {
    using S = decltype(tag);
    WhereF<S> f{static_cast<const uint8_t*>(cond), static_cast<const S*>(x), static_cast<const S*>(y),
                static_cast<S*>(out)};
    return launch(f, to_bc<3>(bc), bc.total, s);
  };
  switch (elem_bytes) {
    case 1: return go(uint8_t{});
    case 2: return go(uint16_t{});
    case 4: return go(uint32_t{});
    case 8: return go(static_cast<unsigned long long>(0));
    default: return unsupported("CUDA Where: element size " + std::to_string(elem_bytes) + " is not supported");
  }
}

bool cast_type_supported(DataType dt) {
  switch (dt) {
    case DataType::kFLOAT: case DataType::kHALF: case DataType::kBF16: case DataType::kDOUBLE:
    case DataType::kINT8: case DataType::kUINT8: case DataType::kINT16: case DataType::kINT32:
    case DataType::kINT64: case DataType::kBOOL:
      return true;
    default: return false;
  }
}

Status launch_cast(DataType from, DataType to, const void* x, void* y, int64_t n, cudaStream_t s) {
  if (!cast_type_supported(to)) return bad_type("Cast target", to);
  switch (from) {
    case DataType::kFLOAT: return cast_from<float>(x, y, to, n, s);
    case DataType::kHALF: return cast_from<__half>(x, y, to, n, s);
    case DataType::kBF16: return cast_from<__nv_bfloat16>(x, y, to, n, s);
    case DataType::kDOUBLE: return cast_from<double>(x, y, to, n, s);
    case DataType::kINT8: return cast_from<int8_t>(x, y, to, n, s);
    case DataType::kUINT8:
    case DataType::kBOOL: return cast_from<uint8_t>(x, y, to, n, s);
    case DataType::kINT16: return cast_from<int16_t>(x, y, to, n, s);
    case DataType::kINT32: return cast_from<int32_t>(x, y, to, n, s);
    case DataType::kINT64: return cast_from<long long>(x, y, to, n, s);
    default: return bad_type("Cast source", from);
  }
}

}  // namespace kiln::cuda
