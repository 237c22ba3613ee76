// Pointwise programs: validation, the text form stored in node attributes and engines, the reference interpreter.
#include "ops/pointwise_program.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

constexpr const char* kNames[] = {
    "load", "const", "add", "sub", "mul", "div", "pow", "max", "min", "neg", "abs", "exp", "log", "sqrt",
    "reciprocal", "sigmoid", "tanh", "relu", "erf", "leaky_relu", "hard_sigmoid", "hard_swish", "gelu", "clip",
    "where", "equal", "less", "greater", "less_equal", "greater_equal", "not", "and", "or", "xor", "cast"};
static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(PwOp::kNumOps));

bool is_float_kind(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

int arity(PwOp op) {
  switch (op) {
    case PwOp::kLoad: case PwOp::kConst: return 0;
    case PwOp::kAdd: case PwOp::kSub: case PwOp::kMul: case PwOp::kDiv: case PwOp::kPow: case PwOp::kMax:
    case PwOp::kMin: case PwOp::kEqual: case PwOp::kLess: case PwOp::kGreater: case PwOp::kLessOrEqual:
    case PwOp::kGreaterOrEqual: case PwOp::kAnd: case PwOp::kOr: case PwOp::kXor: return 2;
    case PwOp::kWhere: return 3;
    default: return 1;
  }
}
bool is_compare(PwOp op) { return op >= PwOp::kEqual && op <= PwOp::kGreaterOrEqual; }
bool is_logic(PwOp op) { return op >= PwOp::kNot && op <= PwOp::kXor; }

std::string hexf(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%a", v);
  return buf;
}

// One register value: floats (any float storage) in `f`, integers and bools in `i`.
union Reg {
  float f;
  int64_t i;
};

Reg load(const Tensor& t, int64_t idx, DataType ty) {
  Reg r;
  switch (ty) {
    case DataType::kFLOAT: r.f = t.data<float>()[idx]; break;
    case DataType::kHALF: r.f = static_cast<float>(t.data<Half>()[idx]); break;
    case DataType::kBF16: r.f = static_cast<float>(t.data<BFloat16>()[idx]); break;
    case DataType::kINT32: r.i = t.data<int32_t>()[idx]; break;
    case DataType::kINT64: r.i = t.data<int64_t>()[idx]; break;
    default: r.i = t.data<bool>()[idx] ? 1 : 0; break;
  }
  return r;
}

void store(Tensor& t, int64_t idx, DataType ty, Reg r) {
  switch (ty) {
    case DataType::kFLOAT: t.data<float>()[idx] = r.f; break;
    case DataType::kHALF: t.data<Half>()[idx] = Half(r.f); break;
    case DataType::kBF16: t.data<BFloat16>()[idx] = BFloat16(r.f); break;
    case DataType::kINT32: t.data<int32_t>()[idx] = static_cast<int32_t>(r.i); break;
    case DataType::kINT64: t.data<int64_t>()[idx] = r.i; break;
    default: t.data<bool>()[idx] = r.i != 0; break;
  }
}

float nan_max(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return a < b ? b : a;
}
float nan_min(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  return b < a ? b : a;
}

// Rounds a float register to its storage type, as a Cast to float16/bfloat16 does.
float round_to(DataType t, float v) {
  if (t == DataType::kHALF) return static_cast<float>(Half(v));
  if (t == DataType::kBF16) return static_cast<float>(BFloat16(v));
  return v;
}

Reg eval(const PwInstr& in, const std::vector<PwInstr>& code, const std::vector<Reg>& r) {
  Reg o;
  o.i = 0;
  const bool fl = is_float_kind(in.type);
  const Reg a = in.a >= 0 ? r[in.a] : o, b = in.b >= 0 ? r[in.b] : o, c = in.c >= 0 ? r[in.c] : o;
  const float x = a.f, y = b.f;
  switch (in.op) {
    case PwOp::kConst:
      if (fl) o.f = static_cast<float>(in.f);
      else o.i = in.i;
      break;
    case PwOp::kAdd: if (fl) o.f = x + y; else o.i = a.i + b.i; break;
    case PwOp::kSub: if (fl) o.f = x - y; else o.i = a.i - b.i; break;
    case PwOp::kMul: if (fl) o.f = x * y; else o.i = a.i * b.i; break;
    case PwOp::kDiv: o.f = x / y; break;
    case PwOp::kPow: o.f = std::pow(x, y); break;
    case PwOp::kMax: if (fl) o.f = nan_max(x, y); else o.i = a.i < b.i ? b.i : a.i; break;
    case PwOp::kMin: if (fl) o.f = nan_min(x, y); else o.i = b.i < a.i ? b.i : a.i; break;
    case PwOp::kNeg: if (fl) o.f = -x; else o.i = -a.i; break;
    case PwOp::kAbs: if (fl) o.f = std::fabs(x); else o.i = a.i < 0 ? -a.i : a.i; break;
    case PwOp::kExp: o.f = std::exp(x); break;
    case PwOp::kLog: o.f = std::log(x); break;
    case PwOp::kSqrt: o.f = std::sqrt(x); break;
    case PwOp::kReciprocal: o.f = 1.0f / x; break;
    case PwOp::kSigmoid: o.f = 1.0f / (1.0f + std::exp(-x)); break;
    case PwOp::kTanh: o.f = std::tanh(x); break;
    case PwOp::kRelu: if (fl) o.f = x < 0.0f ? 0.0f : x; else o.i = a.i < 0 ? 0 : a.i; break;
    case PwOp::kErf: o.f = std::erf(x); break;
    case PwOp::kLeakyRelu: o.f = x < 0.0f ? static_cast<float>(in.f) * x : x; break;
    case PwOp::kHardSigmoid:
      o.f = std::max(0.0f, std::min(1.0f, static_cast<float>(in.f) * x + static_cast<float>(in.g)));
      break;
    case PwOp::kHardSwish: o.f = x * std::max(0.0f, std::min(1.0f, x / 6.0f + 0.5f)); break;
    case PwOp::kGelu:
      if (in.i == 0) {
        o.f = 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
      } else {
        const float k = 0.79788456080286536f;  // sqrt(2 / pi)
        o.f = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
      }
      break;
    case PwOp::kClip:
      if (fl) {
        float v = x;
        if (in.b >= 0) v = v < b.f ? b.f : v;
        if (in.c >= 0) v = c.f < v ? c.f : v;
        o.f = v;
      } else {
        int64_t v = a.i;
        if (in.b >= 0) v = v < b.i ? b.i : v;
        if (in.c >= 0) v = c.i < v ? c.i : v;
        o.i = v;
      }
      break;
    case PwOp::kWhere: o = a.i ? b : c; break;
    case PwOp::kEqual: case PwOp::kLess: case PwOp::kGreater: case PwOp::kLessOrEqual: case PwOp::kGreaterOrEqual: {
      const bool f = is_float_kind(code[in.a].type);
      int cmp;  // -1, 0, 1; 2 when unordered (NaN): every comparison is false
      if (f) cmp = std::isnan(x) || std::isnan(y) ? 2 : (x < y ? -1 : x > y ? 1 : 0);
      else cmp = a.i < b.i ? -1 : a.i > b.i ? 1 : 0;
      bool res = false;
      if (cmp != 2) {
        switch (in.op) {
          case PwOp::kEqual: res = cmp == 0; break;
          case PwOp::kLess: res = cmp < 0; break;
          case PwOp::kGreater: res = cmp > 0; break;
          case PwOp::kLessOrEqual: res = cmp <= 0; break;
          default: res = cmp >= 0; break;
        }
      }
      o.i = res;
      break;
    }
    case PwOp::kNot: o.i = !a.i; break;
    case PwOp::kAnd: o.i = a.i && b.i; break;
    case PwOp::kOr: o.i = a.i || b.i; break;
    case PwOp::kXor: o.i = (a.i != 0) != (b.i != 0); break;
    case PwOp::kCast: {
      const DataType from = code[in.a].type;
      if (is_float_kind(from)) {
        if (fl) o.f = round_to(in.type, x);
        else if (in.type == DataType::kBOOL) o.i = x != 0.0f;
        else o.i = std::isfinite(x) ? static_cast<int64_t>(x) : 0;  // truncation toward zero, as ONNX Cast
      } else {
        if (fl) o.f = round_to(in.type, static_cast<float>(a.i));
        else o.i = a.i;
      }
      break;
    }
    default: break;
  }
  if (in.type == DataType::kINT32) o.i = static_cast<int32_t>(o.i);
  else if (in.type == DataType::kBOOL) o.i = o.i != 0;
  return o;
}

}  // namespace

const char* pw_op_name(PwOp op) {
  return op < PwOp::kNumOps ? kNames[static_cast<int>(op)] : "?";
}

bool pw_float_only(PwOp op) {
  switch (op) {
    case PwOp::kDiv: case PwOp::kPow: case PwOp::kExp: case PwOp::kLog: case PwOp::kSqrt: case PwOp::kReciprocal:
    case PwOp::kSigmoid: case PwOp::kTanh: case PwOp::kErf: case PwOp::kLeakyRelu: case PwOp::kHardSigmoid:
    case PwOp::kHardSwish: case PwOp::kGelu: return true;
    default: return false;
  }
}

bool pw_supports_type(DataType t) {
  return is_float_kind(t) || t == DataType::kINT32 || t == DataType::kINT64 || t == DataType::kBOOL;
}

Status PointwiseProgram::validate() const {
  for (size_t k = 0; k < inputs.size(); ++k)
    if (!pw_supports_type(inputs[k]))
      return invalid_argument("pointwise program: input " + std::to_string(k) + " has unsupported type " +
                              dtype_name(inputs[k]));
  for (size_t r = 0; r < code.size(); ++r) {
    const PwInstr& in = code[r];
    auto bad = [&](const std::string& why) {
      return invalid_argument("pointwise program: instruction " + std::to_string(r) + " (" + pw_op_name(in.op) +
                              "): " + why);
    };
    if (in.op >= PwOp::kNumOps) return bad("unknown op");
    if (!pw_supports_type(in.type)) return bad(std::string("unsupported type ") + dtype_name(in.type));
    auto operand = [&](int v) { return v >= 0 && v < static_cast<int>(r); };
    const int n = arity(in.op);
    if (n >= 1 && !operand(in.a)) return bad("operand a is not an earlier register");
    if (in.op == PwOp::kClip) {
      if ((in.b >= 0 && !operand(in.b)) || (in.c >= 0 && !operand(in.c))) return bad("bound is not an earlier register");
    } else {
      if (n >= 2 && !operand(in.b)) return bad("operand b is not an earlier register");
      if (n >= 3 && !operand(in.c)) return bad("operand c is not an earlier register");
    }
    if (in.op == PwOp::kLoad) {
      if (in.a < 0 || in.a >= static_cast<int>(inputs.size())) return bad("input index out of range");
      if (inputs[in.a] != in.type) return bad("type differs from the input's");
      continue;
    }
    if (in.op == PwOp::kConst) continue;
    if (pw_float_only(in.op) && !is_float_kind(in.type)) return bad("needs a float type");
    if (is_compare(in.op)) {
      if (in.type != DataType::kBOOL || code[in.a].type != code[in.b].type) return bad("operand types differ or result not bool");
      continue;
    }
    if (is_logic(in.op)) {
      if (in.type != DataType::kBOOL || code[in.a].type != DataType::kBOOL ||
          (n == 2 && code[in.b].type != DataType::kBOOL))
        return bad("logic ops take and give bool");
      continue;
    }
    if (in.op == PwOp::kCast) continue;
    if (in.op == PwOp::kWhere) {
      if (code[in.a].type != DataType::kBOOL || code[in.b].type != in.type || code[in.c].type != in.type)
        return bad("condition must be bool and both branches of the result type");
      continue;
    }
    if (code[in.a].type != in.type || (n >= 2 && in.b >= 0 && code[in.b].type != in.type) ||
        (in.c >= 0 && code[in.c].type != in.type))
      return bad("operand types differ from the result type");
  }
  if (outputs.empty()) return invalid_argument("pointwise program has no outputs");
  for (int o : outputs)
    if (o < 0 || o >= static_cast<int>(code.size()))
      return invalid_argument("pointwise program: output register " + std::to_string(o) + " does not exist");
  return Status::Ok();
}

// Text form: a header line, the input types, one instruction per line, the output registers. Immediates are
// hexadecimal floats so that a round trip is exact.
std::string PointwiseProgram::serialize() const {
  std::ostringstream s;
  s << "kiln-pointwise 1\ninputs";
  for (DataType t : inputs) s << ' ' << dtype_name(t);
  s << '\n';
  for (const PwInstr& in : code)
    s << pw_op_name(in.op) << ' ' << dtype_name(in.type) << ' ' << in.a << ' ' << in.b << ' ' << in.c << ' '
      << hexf(in.f) << ' ' << hexf(in.g) << ' ' << in.i << '\n';
  s << "outputs";
  for (int o : outputs) s << ' ' << o;
  s << '\n';
  return s.str();
}

Result<PointwiseProgram> PointwiseProgram::parse(const std::string& text) {
  std::istringstream s(text);
  std::string line, word;
  auto err = [&](const std::string& why) { return invalid_argument("pointwise program text: " + why + " at '" + line + "'"); };
  if (!std::getline(s, line) || line != "kiln-pointwise 1") return err("bad header");
  PointwiseProgram p;
  if (!std::getline(s, line)) return err("missing inputs line");
  {
    std::istringstream ls(line);
    ls >> word;
    if (word != "inputs") return err("expected 'inputs'");
    while (ls >> word) {
      DataType t;
      if (!parse_dtype(word, &t)) return err("unknown type " + word);
      p.inputs.push_back(t);
    }
  }
  bool got_outputs = false;
  while (std::getline(s, line)) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    std::string op, ty, f, g;
    ls >> op;
    if (op == "outputs") {
      int o;
      while (ls >> o) p.outputs.push_back(o);
      got_outputs = true;
      break;
    }
    PwInstr in;
    int k = 0;
    while (k < static_cast<int>(PwOp::kNumOps) && op != kNames[k]) ++k;
    if (k == static_cast<int>(PwOp::kNumOps)) return err("unknown op " + op);
    in.op = static_cast<PwOp>(k);
    if (!(ls >> ty >> in.a >> in.b >> in.c >> f >> g >> in.i)) return err("truncated instruction");
    if (!parse_dtype(ty, &in.type)) return err("unknown type " + ty);
    in.f = std::strtod(f.c_str(), nullptr);
    in.g = std::strtod(g.c_str(), nullptr);
    p.code.push_back(in);
  }
  if (!got_outputs) return invalid_argument("pointwise program text: missing outputs line");
  KILN_RETURN_IF_ERROR(p.validate());
  return p;
}

Status run_pointwise_program(const PointwiseProgram& p, const std::vector<const Tensor*>& inputs,
                             const std::vector<int64_t>& out_shape, std::vector<Tensor>* outputs) {
  if (inputs.size() != p.inputs.size())
    return invalid_argument("pointwise program takes " + std::to_string(p.inputs.size()) + " inputs, got " +
                            std::to_string(inputs.size()));
  const size_t rank = out_shape.size();
  std::vector<std::vector<int64_t>> strides;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k]->dtype() != p.inputs[k])
      return invalid_argument("pointwise program input " + std::to_string(k) + " is " + dtype_name(inputs[k]->dtype()) +
                              ", expected " + dtype_name(p.inputs[k]));
    if (inputs[k]->rank() > static_cast<int>(rank))
      return invalid_argument("pointwise program input " + std::to_string(k) + " has a higher rank than the output");
    for (int j = 0; j < inputs[k]->rank(); ++j) {
      int64_t d = inputs[k]->shape()[j], o = out_shape[rank - inputs[k]->rank() + j];
      if (d != o && d != 1)
        return invalid_argument("pointwise program input " + std::to_string(k) + " [" +
                                dims_to_string(inputs[k]->shape()) + "] does not broadcast to [" +
                                dims_to_string(out_shape) + "]");
    }
    strides.push_back(broadcast_strides(inputs[k]->shape(), out_shape));
  }
  outputs->clear();
  for (size_t k = 0; k < p.outputs.size(); ++k) outputs->emplace_back(p.output_type(k), out_shape);
  const int64_t total = product(out_shape);
  std::vector<Reg> regs(p.code.size());
  std::vector<int64_t> coord(rank, 0);
  for (int64_t e = 0; e < total; ++e) {
    for (size_t r = 0; r < p.code.size(); ++r) {
      const PwInstr& in = p.code[r];
      if (in.op == PwOp::kLoad) {
        int64_t off = 0;
        for (size_t d = 0; d < rank; ++d) off += coord[d] * strides[in.a][d];
        regs[r] = load(*inputs[in.a], off, in.type);
      } else {
        regs[r] = eval(in, p.code, regs);
      }
    }
    for (size_t k = 0; k < p.outputs.size(); ++k) store((*outputs)[k], e, p.output_type(k), regs[p.outputs[k]]);
    for (int d = static_cast<int>(rank) - 1; d >= 0; --d) {
      if (++coord[d] < out_shape[d]) break;
      coord[d] = 0;
    }
  }
  return Status::Ok();
}

}  // namespace kiln::ops
