// The pointwise program IR behind the kiln Pointwise op: register instructions, text serialisation, interpreter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::ops {

// Numbering is part of the serialised form (engine files hold programs): append only.
enum class PwOp : uint8_t {
  kLoad = 0,   // a = input index; the value broadcasts from the input's shape to the output shape
  kConst,      // the immediate: f for float types, i for integers and bools
  kAdd, kSub, kMul, kDiv, kPow, kMax, kMin,
  kNeg, kAbs, kExp, kLog, kSqrt, kReciprocal, kSigmoid, kTanh, kRelu, kErf,
  kLeakyRelu,    // f = alpha
  kHardSigmoid,  // f = alpha, g = beta
  kHardSwish,
  kGelu,         // i = 0: erf form, 1: tanh approximation
  kClip,         // a = x, b = lo register or -1, c = hi register or -1 (x < lo ? lo : x, then hi < x ? hi : x)
  kWhere,        // a = condition, b = true value, c = false value
  kEqual, kLess, kGreater, kLessOrEqual, kGreaterOrEqual,  // bool result over operands of one type
  kNot, kAnd, kOr, kXor,
  kCast,         // converts register a to this instruction's type; float targets round to their storage
  kNumOps
};
const char* pw_op_name(PwOp op);

// Register r is the result of code[r]. Float16/bfloat16 registers compute in float32 and round only at a Cast
// and at the final store, so a fused chain is at least as precise as the op-by-op graph.
struct PwInstr {
  PwOp op = PwOp::kConst;
  DataType type = DataType::kFLOAT;  // storage type of the result
  int a = -1, b = -1, c = -1;
  double f = 0, g = 0;
  int64_t i = 0;
};

struct PointwiseProgram {
  std::vector<DataType> inputs;  // storage type of each input
  std::vector<PwInstr> code;
  std::vector<int> outputs;      // the register each output stores (its type is the output's)

  int add(PwInstr in) { code.push_back(in); return static_cast<int>(code.size()) - 1; }
  DataType output_type(size_t k) const { return code[outputs[k]].type; }
  // Types, operand ranges and op/type agreement; the message names the instruction.
  Status validate() const;
  std::string serialize() const;
  static Result<PointwiseProgram> parse(const std::string& text);
};

// Data types a program register or I/O may have.
bool pw_supports_type(DataType t);
// Ops defined on float types only (integer forms would need rounding rules of their own).
bool pw_float_only(PwOp op);

// Runs the program over tensors that broadcast to out_shape (numpy rules); outputs are allocated here.
Status run_pointwise_program(const PointwiseProgram& p, const std::vector<const Tensor*>& inputs,
                             const std::vector<int64_t>& out_shape, std::vector<Tensor>* outputs);

}  // namespace kiln::ops

namespace kiln::ops {

// The parameter block of a compiled Pointwise kernel. The generated CUDA source declares the same struct
// (builder/pointwise_codegen.cpp) and the CUDA backend fills it (backends/cuda/pointwise_ops.cpp); every member is
// 8 bytes wide, so both sides lay it out identically. Strides are in elements, 0 on broadcast axes.
inline constexpr int kPwMaxRank = 8, kPwMaxInputs = 16, kPwMaxOutputs = 8;
struct PwKernelParams {
  long long n = 0;     // output elements
  long long rank = 0;  // of the collapsed output shape, >= 1
  long long dims[kPwMaxRank] = {};
  long long strides[kPwMaxInputs][kPwMaxRank] = {};
  const void* in[kPwMaxInputs] = {};
  void* out[kPwMaxOutputs] = {};
};

}  // namespace kiln::ops
