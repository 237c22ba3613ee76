// Pointwise code generation: CUDA C for a pointwise program (one thread per output element or per four), NVRTC
// compilation to a cubin or PTX, and the builder step that stores the result in each kiln::Pointwise node.
#include "builder/pointwise_codegen.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#ifdef KILN_WITH_NVRTC
#include <nvrtc.h>
#endif

namespace kiln::builder {
namespace {

using ops::PwInstr;
using ops::PwOp;

bool is_float(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

// Register type in the kernel: float16/bfloat16 compute in float.
const char* reg_type(DataType t) {
  switch (t) {
    case DataType::kINT32: return "int";
    case DataType::kINT64: return "long long";
    case DataType::kBOOL: return "bool";
    default: return "float";
  }
}
// Element type in memory.
const char* mem_type(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "float";
    case DataType::kHALF: case DataType::kBF16: return "unsigned short";
    case DataType::kINT32: return "int";
    case DataType::kINT64: return "long long";
    default: return "unsigned char";
  }
}
std::string from_mem(DataType t, const std::string& x) {
  switch (t) {
    case DataType::kHALF: return "h2f(" + x + ")";
    case DataType::kBF16: return "b2f(" + x + ")";
    case DataType::kBOOL: return "(" + x + " != 0)";
    default: return x;
  }
}
std::string to_mem(DataType t, const std::string& x) {
  switch (t) {
    case DataType::kHALF: return "f2h(" + x + ")";
    case DataType::kBF16: return "f2b(" + x + ")";
    case DataType::kBOOL: return "(unsigned char)(" + x + " ? 1 : 0)";
    default: return x;
  }
}

// A float immediate by its bits: exact, and infinities and NaN need no special spelling.
std::string flit(double v) {
  float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  char buf[48];
  std::snprintf(buf, sizeof(buf), "__int_as_float(0x%08x)", bits);
  return buf;
}
std::string ilit(DataType t, int64_t v) {
  if (t == DataType::kBOOL) return v ? "true" : "false";
  if (t == DataType::kINT32) return "(int)(" + std::to_string(static_cast<int32_t>(v)) + ")";
  if (v == INT64_MIN) return "(-9223372036854775807LL - 1)";
  return "(" + std::to_string(v) + "LL)";
}

std::string r(int i) { return "r" + std::to_string(i); }

std::string round_float(DataType t, const std::string& x) {
  if (t == DataType::kHALF) return "h2f(f2h(" + x + "))";
  if (t == DataType::kBF16) return "b2f(f2b(" + x + "))";
  return x;
}

// The expression for instruction `in`, whose operands are earlier registers; loads are emitted by the caller.
std::string expr(const PwInstr& in, const std::vector<PwInstr>& code) {
  const bool fl = is_float(in.type);
  const std::string a = in.a >= 0 ? r(in.a) : "", b = in.b >= 0 ? r(in.b) : "", c = in.c >= 0 ? r(in.c) : "";
  switch (in.op) {
    case PwOp::kConst: return fl ? flit(in.f) : ilit(in.type, in.i);
    case PwOp::kAdd: return a + " + " + b;
    case PwOp::kSub: return a + " - " + b;
    case PwOp::kMul: return a + " * " + b;
    case PwOp::kDiv: return a + " / " + b;
    case PwOp::kPow: return "powf(" + a + ", " + b + ")";
    case PwOp::kMax: return fl ? "kmax(" + a + ", " + b + ")" : "(" + a + " < " + b + " ? " + b + " : " + a + ")";
    case PwOp::kMin: return fl ? "kmin(" + a + ", " + b + ")" : "(" + b + " < " + a + " ? " + b + " : " + a + ")";
    case PwOp::kNeg: return "-" + a;
    case PwOp::kAbs: return fl ? "fabsf(" + a + ")" : "(" + a + " < 0 ? -" + a + " : " + a + ")";
    case PwOp::kExp: return "expf(" + a + ")";
    case PwOp::kLog: return "logf(" + a + ")";
    case PwOp::kSqrt: return "sqrtf(" + a + ")";
    case PwOp::kReciprocal: return "1.0f / " + a;
    case PwOp::kSigmoid: return "1.0f / (1.0f + expf(-" + a + "))";
    case PwOp::kTanh: return "tanhf(" + a + ")";
    case PwOp::kRelu: return "(" + a + " < 0 ? (" + reg_type(in.type) + ")0 : " + a + ")";
    case PwOp::kErf: return "erff(" + a + ")";
    case PwOp::kLeakyRelu: return "(" + a + " < 0.0f ? " + flit(in.f) + " * " + a + " : " + a + ")";
    case PwOp::kHardSigmoid: return "fmaxf(0.0f, fminf(1.0f, " + flit(in.f) + " * " + a + " + " + flit(in.g) + "))";
    case PwOp::kHardSwish: return a + " * fmaxf(0.0f, fminf(1.0f, " + a + " / 6.0f + 0.5f))";
    case PwOp::kGelu:
      if (in.i == 0) return "0.5f * " + a + " * (1.0f + erff(" + a + " * 0.70710678118654752f))";
      return "0.5f * " + a + " * (1.0f + tanhf(0.79788456080286536f * (" + a + " + 0.044715f * " + a + " * " + a +
             " * " + a + ")))";
    case PwOp::kClip: {
      std::string v = a;
      if (in.b >= 0) v = "(" + v + " < " + b + " ? " + b + " : " + v + ")";
      if (in.c >= 0) v = "(" + c + " < " + v + " ? " + c + " : " + v + ")";
      return v;
    }
    case PwOp::kWhere: return a + " ? " + b + " : " + c;
    case PwOp::kEqual: return a + " == " + b;
    case PwOp::kLess: return a + " < " + b;
    case PwOp::kGreater: return a + " > " + b;
    case PwOp::kLessOrEqual: return a + " <= " + b;
    case PwOp::kGreaterOrEqual: return a + " >= " + b;
    case PwOp::kNot: return "!" + a;
    case PwOp::kAnd: return a + " && " + b;
    case PwOp::kOr: return a + " || " + b;
    case PwOp::kXor: return a + " != " + b;
    case PwOp::kCast: {
      const DataType from = code[in.a].type;
      if (is_float(from)) {
        if (fl) return round_float(in.type, a);
        if (in.type == DataType::kBOOL) return a + " != 0.0f";
        // Truncation toward zero; NaN and infinities give 0, as the reference interpreter does.
        std::string t = "(fabsf(" + a + ") <= 3.402823466e+38f ? (long long)" + a + " : 0LL)";
        return in.type == DataType::kINT32 ? "(int)" + t : t;
      }
      if (fl) return round_float(in.type, "(float)" + a);
      return std::string("(") + reg_type(in.type) + ")" + a;
    }
    default: return "0";
  }
}

constexpr const char* kPrelude = R"(// Generated by kiln for one fused chain of elementwise operators.
struct KilnPwParams {
  long long n, rank;
  long long dims[KILN_MAX_RANK];
  long long strides[KILN_MAX_INPUTS][KILN_MAX_RANK];
  const void* in[KILN_MAX_INPUTS];
  void* out[KILN_MAX_OUTPUTS];
};
__device__ __forceinline__ float h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float b2f(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }
__device__ __forceinline__ unsigned short f2b(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return (unsigned short)(u >> 16);
}
// Four consecutive elements, aligned so that one vector instruction moves them.
template <typename T> struct alignas(4 * sizeof(T)) KilnV4 { T v[4]; };
__device__ __forceinline__ float kmax(float a, float b) { return (a != a || b != b) ? __int_as_float(0x7fc00000) : (a < b ? b : a); }
__device__ __forceinline__ float kmin(float a, float b) { return (a != a || b != b) ? __int_as_float(0x7fc00000) : (b < a ? b : a); }
)";

}  // namespace

std::string pointwise_source(const ops::PointwiseProgram& p, const std::string& kernel) {
  std::ostringstream s;
  s << "#define KILN_MAX_RANK " << ops::kPwMaxRank << "\n#define KILN_MAX_INPUTS " << ops::kPwMaxInputs
    << "\n#define KILN_MAX_OUTPUTS " << ops::kPwMaxOutputs << "\n"
    << kPrelude;
  const size_t ni = p.inputs.size();
  // I: index type; V: consecutive elements per thread (the host picks V = 4 only when the innermost dim is a
  // multiple of 4, so the V elements share one row and step by each input's innermost stride).
  s << "template <typename I, int V>\n__device__ __forceinline__ void body(const KilnPwParams& p) {\n";
  // The runtime launches these kernels with programmatic dependent launch when the image carries the marker
  // kernel below (backends/cuda/pdl.cuh): nothing may touch memory before this wait.
  // The trigger after it lets the next kernel launch while this one's last blocks run (pdl.cuh's pdl_trigger).
  s << "#if __CUDA_ARCH__ >= 900\n  asm volatile(\"griddepcontrol.wait;\" ::: \"memory\");\n"
       "  asm volatile(\"griddepcontrol.launch_dependents;\" ::: \"memory\");\n#endif\n";
  for (size_t k = 0; k < ni; ++k)
    s << "  const " << mem_type(p.inputs[k]) << "* __restrict__ in" << k << " = (const " << mem_type(p.inputs[k])
      << "*)p.in[" << k << "];\n";
  for (size_t k = 0; k < p.outputs.size(); ++k)
    s << "  " << mem_type(p.output_type(k)) << "* __restrict__ out" << k << " = (" << mem_type(p.output_type(k))
      << "*)p.out[" << k << "];\n";
  s << "  const int rank = (int)p.rank;\n";
  for (size_t k = 0; k < ni; ++k) s << "  const I is" << k << " = (I)p.strides[" << k << "][rank - 1];\n";
  s << "  const I n = (I)p.n;\n"
    << "  const I step = (I)gridDim.x * (I)blockDim.x * (I)V;\n"
    << "  for (I e0 = ((I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x) * (I)V; e0 < n; e0 += step) {\n"
    << "    I rem = e0;\n";
  for (size_t k = 0; k < ni; ++k) s << "    I off" << k << " = 0;\n";
  s << "    for (int d = rank - 1; d >= 0; --d) {\n"
    << "      const I dim = (I)p.dims[d];\n"
    << "      const I c = rem % dim;\n"
    << "      rem /= dim;\n";
  for (size_t k = 0; k < ni; ++k) s << "      off" << k << " += c * (I)p.strides[" << k << "][d];\n";
  s << "    }\n";
  // Inputs that run along the innermost dim (stride 1) are read four at a time with one vector load when V is 4;
  // broadcast ones (stride 0) read one element. The host picks V = 4 only when every such pointer and every
  // output is aligned to four elements (offsets then are multiples of four too).
  for (size_t k = 0; k < ni; ++k) {
    const std::string m = mem_type(p.inputs[k]), ks = std::to_string(k);
    s << "    " << m << " x" << ks << "[V];\n"
      << "    if (V == 4 && is" << ks << " == (I)1) {\n"
      << "      const KilnV4<" << m << "> t = *reinterpret_cast<const KilnV4<" << m << ">*>(in" << ks << " + off" << ks
      << ");\n"
      << "      for (int j = 0; j < V; ++j) x" << ks << "[j] = t.v[j];\n"
      << "    } else {\n"
      << "      for (int j = 0; j < V; ++j) x" << ks << "[j] = in" << ks << "[off" << ks << " + (I)j * is" << ks << "];\n"
      << "    }\n";
  }
  for (size_t k = 0; k < p.outputs.size(); ++k)
    s << "    " << mem_type(p.output_type(k)) << " y" << k << "[V];\n";
  s << "#pragma unroll\n"
    << "    for (int j = 0; j < V; ++j) {\n";
  for (size_t i = 0; i < p.code.size(); ++i) {
    const PwInstr& in = p.code[i];
    s << "      const " << reg_type(in.type) << " " << r(static_cast<int>(i)) << " = ";
    if (in.op == PwOp::kLoad)
      s << from_mem(in.type, "x" + std::to_string(in.a) + "[j]");
    else
      s << "(" << reg_type(in.type) << ")(" << expr(in, p.code) << ")";
    s << ";\n";
  }
  for (size_t k = 0; k < p.outputs.size(); ++k)
    s << "      y" << k << "[j] = " << to_mem(p.output_type(k), r(p.outputs[k])) << ";\n";
  s << "    }\n";
  for (size_t k = 0; k < p.outputs.size(); ++k) {
    const std::string m = mem_type(p.output_type(k)), ks = std::to_string(k);
    s << "    if (V == 4) {\n"
      << "      KilnV4<" << m << "> t;\n"
      << "      for (int j = 0; j < V; ++j) t.v[j] = y" << ks << "[j];\n"
      << "      *reinterpret_cast<KilnV4<" << m << ">*>(out" << ks << " + e0) = t;\n"
      << "    } else {\n"
      << "      out" << ks << "[e0] = y" << ks << "[0];\n"
      << "    }\n";
  }
  s << "  }\n}\n";
  s << "extern \"C\" __global__ void " << kernel << "_v1_64(const KilnPwParams p) { body<long long, 1>(p); }\n";
  s << "extern \"C\" __global__ void " << kernel << "_v1_32(const KilnPwParams p) { body<unsigned, 1>(p); }\n";
  s << "extern \"C\" __global__ void " << kernel << "_v4_32(const KilnPwParams p) { body<unsigned, 4>(p); }\n";
  // Marker: these kernels wait for their predecessor themselves (images written before they did lack it).
  s << "extern \"C\" __global__ void " << kernel << "_pdl() {}\n";
  return s.str();
}

#ifdef KILN_WITH_NVRTC

bool pointwise_codegen_available() { return true; }

Result<PointwiseImage> compile_pointwise(const ops::PointwiseProgram& p, int cc_major, int cc_minor, bool ptx) {
  KILN_RETURN_IF_ERROR(p.validate());
  // Named by content: identical chains in one engine get identical kernels.
  const std::string text = p.serialize();
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : text) h = (h ^ ch) * 1099511628211ull;
  char name[40];
  std::snprintf(name, sizeof(name), "kiln_pw_%016llx", static_cast<unsigned long long>(h));
  PointwiseImage img;
  img.kernel = name;
  img.source = pointwise_source(p, img.kernel);
  img.kind = ptx ? "ptx" : "cubin";
  auto check = [](nvrtcResult res, const char* what) -> Status {
    if (res == NVRTC_SUCCESS) return Status::Ok();
    return internal_error(std::string("NVRTC ") + what + " failed: " + nvrtcGetErrorString(res));
  };
  nvrtcProgram prog = nullptr;
  KILN_RETURN_IF_ERROR(check(nvrtcCreateProgram(&prog, img.source.c_str(), "kiln_pointwise.cu", 0, nullptr, nullptr),
                             "nvrtcCreateProgram"));
  struct Destroy {
    nvrtcProgram* p;
    ~Destroy() { nvrtcDestroyProgram(p); }
  } destroy{&prog};
  const std::string arch = std::string("--gpu-architecture=") + (ptx ? "compute_" : "sm_") +
                           std::to_string(cc_major) + std::to_string(cc_minor);
  const char* opts[] = {arch.c_str(), "--std=c++17"};
  nvrtcResult res = nvrtcCompileProgram(prog, 2, opts);
  if (res != NVRTC_SUCCESS) {
    size_t n = 0;
    nvrtcGetProgramLogSize(prog, &n);
    std::string log(n, '\0');
    if (n) nvrtcGetProgramLog(prog, log.data());
    return internal_error("NVRTC could not compile the pointwise kernel " + img.kernel + " for " + arch + ": " +
                          nvrtcGetErrorString(res) + "\n" + log + "\nsource:\n" + img.source);
  }
  size_t n = 0;
  if (ptx) {
    KILN_RETURN_IF_ERROR(check(nvrtcGetPTXSize(prog, &n), "nvrtcGetPTXSize"));
    img.image.resize(n);
    KILN_RETURN_IF_ERROR(check(nvrtcGetPTX(prog, img.image.data()), "nvrtcGetPTX"));
  } else {
    KILN_RETURN_IF_ERROR(check(nvrtcGetCUBINSize(prog, &n), "nvrtcGetCUBINSize"));
    img.image.resize(n);
    KILN_RETURN_IF_ERROR(check(nvrtcGetCUBIN(prog, img.image.data()), "nvrtcGetCUBIN"));
  }
  return img;
}

#else

bool pointwise_codegen_available() { return false; }

Result<PointwiseImage> compile_pointwise(const ops::PointwiseProgram&, int, int, bool) {
  return unsupported("this Kiln builder was built without NVRTC (no CUDA toolkit): pointwise kernels cannot be "
                     "generated");
}

#endif

Status compile_pointwise_nodes(ir::Graph& g, int cc_major, int cc_minor, bool ptx, ILogger& logger) {
  for (auto& n : g.nodes()) {
    if (n->op_type != "Pointwise" || n->domain != "kiln") continue;
    KILN_ASSIGN_OR_RETURN(std::string text, n->attrs.get_string("program"));
    KILN_ASSIGN_OR_RETURN(ops::PointwiseProgram p, ops::PointwiseProgram::parse(text));
    auto img = compile_pointwise(p, cc_major, cc_minor, ptx);
    if (!img.ok()) return img.status().with_context("layer '" + n->name + "'");
    std::string msg = "pointwise layer '" + n->name + "': kernel " + img->kernel + ", " +
                      std::to_string(img->image.size()) + " bytes of " + img->kind + ", source:\n" + img->source;
    logger.log(ILogger::Severity::kVERBOSE, msg.c_str());
    n->attrs.set("image", std::move(img->image));
    n->attrs.set("image_kind", img->kind);
    n->attrs.set("kernel", img->kernel);
  }
  return Status::Ok();
}

}  // namespace kiln::builder
