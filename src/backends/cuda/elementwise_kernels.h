// Launchers of the CUDA elementwise kernels (elementwise.cu): unary maps, broadcasting binary and variadic
// operators, comparisons, Where and Cast. Plain C++ signatures; every launcher takes the stream, never
// allocates or synchronizes, launches nothing for an empty output and returns the launch status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::cuda {

constexpr int kEwMaxDims = 8;     // output rank after collapsing
constexpr int kEwMaxInputs = 8;   // inputs of one variadic launch

// A broadcast over one output, with dims collapsed on the host: dims[0] is the innermost dim, and
// strides[k][d] is input k's element stride along dims[d] (0 where it broadcasts). Same-shape and scalar
// inputs collapse to rank 1 with strides 1 or 0.
struct EwBroadcast {
  int rank = 1;
  int num_inputs = 0;
  int64_t total = 0;
  bool index32 = false;  // every offset fits in 31 bits: index arithmetic in 32 bits
  int64_t dims[kEwMaxDims] = {};
  int64_t strides[kEwMaxInputs][kEwMaxDims] = {};
};

// Unary operators. Float ones run on float32/float16/bfloat16, computing in float32.
enum class UnaryOp : int {
  kRelu, kSigmoid, kTanh, kExp, kLog, kSqrt, kReciprocal, kNeg, kAbs, kErf, kFloor, kCeil, kRound,
  kSin, kCos, kTan, kAsin, kAcos, kAtan, kSinh, kCosh, kAsinh, kAcosh, kAtanh,
  kSoftplus, kSoftsign, kSign, kElu, kSelu, kCelu, kLeakyRelu, kHardSigmoid, kHardSwish, kThresholdedRelu,
  kGeluErf, kGeluTanh, kMish, kClip, kSwish, kShrink,
  kNot,     // bool only (the integer kernel over uint8)
  kBitNot,  // integers (BitwiseNot)
};

struct UnaryParams {
  UnaryOp op = UnaryOp::kRelu;
  float alpha = 0, beta = 0, gamma = 0;  // Clip (float types): alpha = min, beta = max
  int64_t lo = 0, hi = 0;                // Clip (integer types)
};

// dt: float32, float16 or bfloat16.
Status launch_unary_float(DataType dt, const void* x, void* y, int64_t n, const UnaryParams& p, cudaStream_t s);
// dt: int8, uint8, int32 or int64 (Neg, Abs, Sign, Relu, Clip), or bool (Not).
Status launch_unary_int(DataType dt, const void* x, void* y, int64_t n, const UnaryParams& p, cudaStream_t s);
// IsNaN (is_inf false) or IsInf with its detect flags; y is bool.
Status launch_float_class(DataType dt, const void* x, void* y, int64_t n, bool is_inf, bool detect_negative,
                          bool detect_positive, cudaStream_t s);

// Binary operators whose output has the inputs' type.
enum class BinaryOp : int { kAdd, kSub, kMul, kDiv, kMod, kFmod, kPRelu, kShiftLeft, kShiftRight, kBitAnd, kBitOr, kBitXor };
// dt: float32/float16/bfloat16/int32/int64 (shifts and bitwise ops: int32/int64 only).
Status launch_binary(BinaryOp op, DataType dt, const void* a, const void* b, void* out, const EwBroadcast& bc,
                     cudaStream_t s);

// Comparisons and logic with a bool output.
enum class CompareOp : int { kEqual, kLess, kLessOrEqual, kGreater, kGreaterOrEqual, kAnd, kOr, kXor };
// dt: float32/float16/bfloat16/int32/int64/bool (And/Or/Xor: bool only).
Status launch_compare(CompareOp op, DataType dt, const void* a, const void* b, void* out, const EwBroadcast& bc,
                      cudaStream_t s);

// Pow with a float32/float16/bfloat16 base; exponent float32/float16/bfloat16/float64/int32/int64.
Status launch_pow(DataType base_dt, DataType exp_dt, const void* base, const void* expo, void* out,
                  const EwBroadcast& bc, cudaStream_t s);

// Variadic Sum/Mean/Max/Min over bc.num_inputs (1..kEwMaxInputs) inputs, accumulated in the compute type.
enum class VariadicOp : int { kSum, kMean, kMax, kMin };
// dt: float32/float16/bfloat16/int32/int64 (Mean: float types only).
Status launch_variadic(VariadicOp op, DataType dt, const void* const* ins, void* out, const EwBroadcast& bc,
                       cudaStream_t s);

// out = cond ? x : y over the broadcast of (cond, x, y); elem_bytes is 1, 2, 4 or 8.
Status launch_where(int elem_bytes, const void* cond, const void* x, const void* y, void* out,
                    const EwBroadcast& bc, cudaStream_t s);

// Element type conversion between float32, float16, bfloat16, float64, int8, uint8, int16, int32, int64, bool,
// with the CPU reference's rounding (float -> int truncates toward zero).
bool cast_type_supported(DataType dt);
Status launch_cast(DataType from, DataType to, const void* x, void* y, int64_t n, cudaStream_t s);

}  // namespace kiln::cuda
