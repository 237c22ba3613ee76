// kiln StaggeredMatMul: Y[..., n] = sum_k A[..., k] * B[lead + n, k]: a MatMul whose constant B is stored
// transposed ([N, K]) below `lead` rows of zeros. pad_gemm_width (passes/pad_gemm_width.cpp) makes it, under
// KILN_STAGGER_GEMM=1, for an output whose rows are no whole number of 16-byte vectors (gpt2's lm_head, N = 50257):
// the CUDA kernel (backends/cuda/gemm_ops.cpp) writes those rows in place, as row classes whose starts are 16-byte
// aligned, where pad + Unpad write padded rows and copy them. The zero rows let each class's GEMM start a few
// columns early at an aligned address; here they are only skipped.
#include "ops/staggered_matmul.h"

#include "ops/gemm_util.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// lead, N and K from B's shape [lead + N, K], checked against A's last dim k_a (-1: unknown).
Status check_b(const Attributes& attrs, const std::vector<int64_t>& b, int64_t k_a, int64_t* lead, int64_t* n) {
  KILN_ASSIGN_OR_RETURN(*lead, attrs.get_int("lead"));
  if (b.size() != 2) return invalid_model("StaggeredMatMul: B must be 2-D [lead + N, K]");
  if (*lead < 0 || *lead > b[0])
    return invalid_model("StaggeredMatMul: lead " + std::to_string(*lead) + " must lie in [0, " + std::to_string(b[0]) +
                         "], B's rows");
  if (k_a >= 0 && b[1] != k_a)
    return invalid_model("StaggeredMatMul: B has K = " + std::to_string(b[1]) + ", A's last dim is " +
                         std::to_string(k_a));
  *n = b[0] - *lead;
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(StaggeredMatMul) {
  OpSchema s;
  s.name = "StaggeredMatMul";
  s.domain = "kiln";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"lead", AttrType::kINT, AttrRequirement::kRequired}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo &a = ctx.input(0), &b = ctx.input(1);
    if (!a.rank_known || a.shape.empty()) return unsupported("StaggeredMatMul: A must have rank >= 1");
    if (a.dtype != b.dtype) return invalid_model("StaggeredMatMul: A and B must have one type");
    if (!b.rank_known || b.shape.size() != 2 || !b.shape[0].is_static() || !b.shape[1].is_static())
      return unsupported("StaggeredMatMul: B must be 2-D with known dims");
    const Dim& k = a.shape.back();
    int64_t lead = 0, n = 0;
    KILN_RETURN_IF_ERROR(
        check_b(ctx.attrs(), {b.shape[0].value, b.shape[1].value}, k.is_static() ? k.value : -1, &lead, &n));
    Shape out = a.shape;
    out.back() = Dim(n);
    ctx.output(0) = make_info(a.dtype, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor &a = ctx.input(0), &b = ctx.input(1);
    if (a.rank() < 1) return invalid_argument("StaggeredMatMul: A must have rank >= 1");
    const int64_t k = a.shape().back();
    int64_t lead = 0, n = 0;
    KILN_RETURN_IF_ERROR(check_b(ctx.attrs(), b.shape(), k, &lead, &n));
    const bool wide = a.dtype() == DataType::kDOUBLE;
    const DataType acc = wide ? DataType::kDOUBLE : DataType::kFLOAT;
    const Tensor af = a.cast(acc), bf = b.cast(acc);
    std::vector<int64_t> dims = a.shape();
    dims.back() = n;
    Tensor y(acc, dims);
    const int64_t m = k ? a.numel() / k : (n ? y.numel() / n : 0);
    // Y = A B[lead:]^T; an empty K leaves Y's zeros.
    auto product = [&](auto zero) {
      using E = decltype(zero);
      gemm(false, true, m, n, k, E(1), af.data<E>(), k, bf.data<E>() + lead * k, k, E(0), y.data<E>(), n);
    };
    if (m && n && k) wide ? product(0.0) : product(0.0f);
    ctx.set_output(0, y.cast(a.dtype()));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
