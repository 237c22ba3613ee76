// MatMul (numpy batch broadcasting, 1-D operands) and Gemm, on CBLAS for float/double, naive loops for integers.
#include <algorithm>
#include <type_traits>

#include "ops/gemm_util.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

template <typename T>
constexpr bool kIsBlasType = std::is_same_v<T, float> || std::is_same_v<T, double>;

// Accumulator for the naive integer kernels; wraps like the element type does.
template <typename T>
using IntAcc = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;

template <typename T>
void naive_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T alpha = T(1),
                bool accumulate = false) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      IntAcc<T> acc = 0;
      for (int64_t p = 0; p < k; ++p) {
        T av = ta ? a[p * m + i] : a[i * k + p];
        T bv = tb ? b[j * k + p] : b[p * n + j];
        acc += static_cast<IntAcc<T>>(av) * static_cast<IntAcc<T>>(bv);
      }
      T r = static_cast<T>(acc * static_cast<IntAcc<T>>(alpha));
      c[i * n + j] = accumulate ? static_cast<T>(c[i * n + j] + r) : r;
    }
}

struct MatMulGeometry {
  int64_t m = 1, n = 1, k = 1;
  std::vector<int64_t> batch, a_batch, b_batch, out;
};

Result<MatMulGeometry> matmul_geometry(std::vector<int64_t> a, std::vector<int64_t> b) {
  if (a.empty() || b.empty()) return invalid_argument("MatMul: operands must have rank >= 1, got scalars");
  bool a1 = a.size() == 1, b1 = b.size() == 1;
  if (a1) a.insert(a.begin(), 1);
  if (b1) b.push_back(1);
  MatMulGeometry g;
  g.m = a[a.size() - 2];
  g.k = a.back();
  g.n = b.back();
  if (b[b.size() - 2] != g.k)
    return invalid_argument("MatMul: inner dimensions differ: A has K=" + std::to_string(g.k) + ", B has K=" +
                            std::to_string(b[b.size() - 2]));
  g.a_batch.assign(a.begin(), a.end() - 2);
  g.b_batch.assign(b.begin(), b.end() - 2);
  KILN_ASSIGN_OR_RETURN(g.batch, broadcast_dims({g.a_batch, g.b_batch}));
  g.out = g.batch;
  if (!a1) g.out.push_back(g.m);
  if (!b1) g.out.push_back(g.n);
  return g;
}

template <typename T>
void matmul_kernel(const MatMulGeometry& g, const T* a, const T* b, T* y) {
  const int64_t nb = product(g.batch);
  const int64_t a_mat = g.m * g.k, b_mat = g.k * g.n, y_mat = g.m * g.n;
  if constexpr (kIsBlasType<T>) {
    // A shared B lets the whole batch of A run as one tall GEMM.
    if (product(g.b_batch) == 1 && product(g.a_batch) == nb) {
      gemm(false, false, nb * g.m, g.n, g.k, T(1), a, std::max<int64_t>(g.k, 1), b, std::max<int64_t>(g.n, 1), T(0), y,
           std::max<int64_t>(g.n, 1));
      return;
    }
  }
  auto as = broadcast_strides(g.a_batch, g.batch), bs = broadcast_strides(g.b_batch, g.batch);
  std::vector<int64_t> idx(g.batch.size(), 0);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t ao = 0, bo = 0;
    for (size_t d = 0; d < idx.size(); ++d) { ao += idx[d] * as[d]; bo += idx[d] * bs[d]; }
    const T* ap = a + ao * a_mat;
    const T* bp = b + bo * b_mat;
    T* yp = y + bi * y_mat;
    if constexpr (kIsBlasType<T>) {
      gemm(false, false, g.m, g.n, g.k, T(1), ap, std::max<int64_t>(g.k, 1), bp, std::max<int64_t>(g.n, 1), T(0), yp,
           std::max<int64_t>(g.n, 1));
    } else {
      naive_gemm<T>(false, false, g.m, g.n, g.k, ap, bp, yp);
    }
    for (int d = static_cast<int>(idx.size()) - 1; d >= 0; --d) {
      if (++idx[d] < g.batch[d]) break;
      idx[d] = 0;
    }
  }
}

// Half and bfloat16 run through float; returns the result cast back.
Tensor via_float(const Tensor& t) { return t.cast(DataType::kFLOAT); }

const std::vector<DataType>& matmul_types() {
  static const std::vector<DataType> v = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kHALF,   DataType::kBF16,
                                          DataType::kINT32, DataType::kINT64,  DataType::kUINT32, DataType::kUINT64};
  return v;
}

Status check_same_dtype(const std::string& op, const Tensor& a, const Tensor& b, const char* bname) {
  if (a.dtype() != b.dtype())
    return invalid_argument(op + ": " + bname + " has type " + dtype_name(b.dtype()) + ", expected " +
                            dtype_name(a.dtype()) + " like A");
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(MatMul) {
  OpSchema s;
  s.name = "MatMul";
  s.min_inputs = s.max_inputs = 2;
  s.dtypes = matmul_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (!a.rank_known || !b.rank_known) {
      ctx.output(0).dtype = a.dtype;
      ctx.output(0).rank_known = false;
      return Status::Ok();
    }
    Shape as = a.shape, bs = b.shape;
    if (as.empty() || bs.empty()) return invalid_model("MatMul: operands must have rank >= 1, got a scalar");
    bool a1 = as.size() == 1, b1 = bs.size() == 1;
    if (a1) as.insert(as.begin(), Dim(1));
    if (b1) bs.push_back(Dim(1));
    const Dim& ka = as.back();
    const Dim& kb = bs[bs.size() - 2];
    if (ka.is_static() && kb.is_static() && ka.value != kb.value)
      return invalid_model("MatMul: inner dimensions differ: A " + shape_to_string(a.shape) + ", B " + shape_to_string(b.shape));
    ctx.require_equal(ka, kb);
    KILN_ASSIGN_OR_RETURN(Shape out,
                          broadcast_shapes({Shape(as.begin(), as.end() - 2), Shape(bs.begin(), bs.end() - 2)}, &ctx));
    if (!a1) out.push_back(as[as.size() - 2]);
    if (!b1) out.push_back(bs.back());
    ctx.output(0) = make_info(a.dtype, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    KILN_RETURN_IF_ERROR(check_same_dtype("MatMul", a, b, "B"));
    KILN_ASSIGN_OR_RETURN(MatMulGeometry g, matmul_geometry(a.shape(), b.shape()));
    DataType dt = a.dtype();
    if (dt == DataType::kHALF || dt == DataType::kBF16) {
      Tensor af = via_float(a), bf = via_float(b);
      Tensor y(DataType::kFLOAT, g.out);
      matmul_kernel<float>(g, af.data<float>(), bf.data<float>(), y.data<float>());
      ctx.set_output(0, y.cast(dt));
      return Status::Ok();
    }
    Tensor& y = ctx.allocate_output(0, dt, g.out);
    switch (dt) {
      case DataType::kFLOAT: matmul_kernel<float>(g, a.data<float>(), b.data<float>(), y.data<float>()); break;
      case DataType::kDOUBLE: matmul_kernel<double>(g, a.data<double>(), b.data<double>(), y.data<double>()); break;
      case DataType::kINT32: matmul_kernel<int32_t>(g, a.data<int32_t>(), b.data<int32_t>(), y.data<int32_t>()); break;
      case DataType::kINT64: matmul_kernel<int64_t>(g, a.data<int64_t>(), b.data<int64_t>(), y.data<int64_t>()); break;
      case DataType::kUINT32: matmul_kernel<uint32_t>(g, a.data<uint32_t>(), b.data<uint32_t>(), y.data<uint32_t>()); break;
      case DataType::kUINT64: matmul_kernel<uint64_t>(g, a.data<uint64_t>(), b.data<uint64_t>(), y.data<uint64_t>()); break;
      default: return unsupported(std::string("MatMul: data type ") + dtype_name(dt) + " is not supported");
    }
    return Status::Ok();
  };
  return s;
}

namespace {

template <typename T>
Status gemm_kernel(const Tensor& a, const Tensor& b, const Tensor* c, bool ta, bool tb, float alpha, float beta,
                   int64_t m, int64_t n, int64_t k, Tensor& y) {
  T* yp = y.data<T>();
  bool use_c = c != nullptr && beta != 0.0f;
  if (use_c) {
    auto cs = c->shape();
    if (cs.size() > 2) return invalid_argument("Gemm: C must have rank <= 2, got " + dims_to_string(cs));
    auto st = broadcast_strides(cs, {m, n});
    // Unidirectional broadcast: every C dim must be 1 or equal to the output dim.
    std::vector<int64_t> out = {m, n};
    for (size_t i = 0; i < cs.size(); ++i)
      if (cs[i] != 1 && cs[i] != out[out.size() - cs.size() + i])
        return invalid_argument("Gemm: C of shape " + dims_to_string(cs) + " cannot be broadcast to " + dims_to_string(out));
    const T* cp = c->data<T>();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) yp[i * n + j] = cp[i * st[0] + j * st[1]];
  }
  const T* ap = a.data<T>();
  const T* bp = b.data<T>();
  if constexpr (kIsBlasType<T>) {
    int64_t lda = std::max<int64_t>(ta ? m : k, 1), ldb = std::max<int64_t>(tb ? k : n, 1);
    if (k == 0) {
      for (int64_t i = 0; i < m * n; ++i) yp[i] = use_c ? static_cast<T>(beta) * yp[i] : T(0);
    } else {
      gemm(ta, tb, m, n, k, static_cast<T>(alpha), ap, lda, bp, ldb, use_c ? static_cast<T>(beta) : T(0), yp,
           std::max<int64_t>(n, 1));
    }
  } else {
    if (use_c)
      for (int64_t i = 0; i < m * n; ++i) yp[i] = static_cast<T>(yp[i] * static_cast<T>(beta));
    naive_gemm<T>(ta, tb, m, n, k, ap, bp, yp, static_cast<T>(alpha), use_c);
  }
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(Gemm) {
  OpSchema s;
  s.name = "Gemm";
  s.min_inputs = 2;  // C is optional from opset 11
  s.max_inputs = 3;
  s.attrs = {{"alpha", AttrType::kFLOAT}, {"beta", AttrType::kFLOAT}, {"transA", AttrType::kINT},
             {"transB", AttrType::kINT}, {"broadcast", AttrType::kINT}};
  s.dtypes = matmul_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (a.shape.size() != 2 || b.shape.size() != 2)
      return invalid_model("Gemm: A and B must be 2-D, got " + shape_to_string(a.shape) + " and " + shape_to_string(b.shape));
    if (ctx.opset() < 11 && !ctx.has_input(2)) return invalid_model("Gemm: input C is required before opset 11");
    KILN_ASSIGN_OR_RETURN(int64_t ta, ctx.attrs().get_int("transA", 0));
    KILN_ASSIGN_OR_RETURN(int64_t tb, ctx.attrs().get_int("transB", 0));
    Dim m = ta ? a.shape[1] : a.shape[0], ka = ta ? a.shape[0] : a.shape[1];
    Dim kb = tb ? b.shape[1] : b.shape[0], n = tb ? b.shape[0] : b.shape[1];
    if (ka.is_static() && kb.is_static() && ka.value != kb.value)
      return invalid_model("Gemm: inner dimensions differ: op(A) " + shape_to_string(a.shape) + " has K=" +
                           ka.to_string() + ", op(B) has K=" + kb.to_string());
    ctx.require_equal(ka, kb);
    ctx.output(0) = make_info(a.dtype, {m, n});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    const Tensor* c = ctx.has_input(2) ? &ctx.input(2) : nullptr;
    if (a.rank() != 2 || b.rank() != 2)
      return invalid_argument("Gemm: A and B must be 2-D, got " + dims_to_string(a.shape()) + " and " + dims_to_string(b.shape()));
    KILN_RETURN_IF_ERROR(check_same_dtype("Gemm", a, b, "B"));
    if (c) KILN_RETURN_IF_ERROR(check_same_dtype("Gemm", a, *c, "C"));
    const auto& at = ctx.attrs();
    KILN_ASSIGN_OR_RETURN(int64_t ta, at.get_int("transA", 0));
    KILN_ASSIGN_OR_RETURN(int64_t tb, at.get_int("transB", 0));
    KILN_ASSIGN_OR_RETURN(float alpha, at.get_float("alpha", 1.0f));
    KILN_ASSIGN_OR_RETURN(float beta, at.get_float("beta", 1.0f));
    int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
    int64_t kb = tb ? b.dim(1) : b.dim(0), n = tb ? b.dim(0) : b.dim(1);
    if (k != kb)
      return invalid_argument("Gemm: inner dimensions differ: op(A) has K=" + std::to_string(k) + ", op(B) has K=" +
                              std::to_string(kb));
    DataType dt = a.dtype();
    if (dt == DataType::kHALF || dt == DataType::kBF16) {
      Tensor af = via_float(a), bf = via_float(b), cf;
      if (c) cf = via_float(*c);
      Tensor y(DataType::kFLOAT, {m, n});
      KILN_RETURN_IF_ERROR(gemm_kernel<float>(af, bf, c ? &cf : nullptr, ta, tb, alpha, beta, m, n, k, y));
      ctx.set_output(0, y.cast(dt));
      return Status::Ok();
    }
    Tensor& y = ctx.allocate_output(0, dt, {m, n});
    switch (dt) {
      case DataType::kFLOAT: return gemm_kernel<float>(a, b, c, ta, tb, alpha, beta, m, n, k, y);
      case DataType::kDOUBLE: return gemm_kernel<double>(a, b, c, ta, tb, alpha, beta, m, n, k, y);
      case DataType::kINT32: return gemm_kernel<int32_t>(a, b, c, ta, tb, alpha, beta, m, n, k, y);
      case DataType::kINT64: return gemm_kernel<int64_t>(a, b, c, ta, tb, alpha, beta, m, n, k, y);
      case DataType::kUINT32: return gemm_kernel<uint32_t>(a, b, c, ta, tb, alpha, beta, m, n, k, y);
      case DataType::kUINT64: return gemm_kernel<uint64_t>(a, b, c, ta, tb, alpha, beta, m, n, k, y);
      default: return unsupported(std::string("Gemm: data type ") + dtype_name(dt) + " is not supported");
    }
  };
  return s;
}

}  // namespace kiln::ops
