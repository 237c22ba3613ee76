// kiln::FusedMatMul: y = act(alpha * A.op(B) + bias) [+ residual], the MatMul/Gemm epilogue fusion's target op.
// With norm_epsilon it also standardizes A's rows over K first (a LayerNormalization folded into the GEMM by
// fold_layernorm_into_matmul, its scale in B and its shift in bias): the product is taken of A as it is, and each
// row's mean and 1/stddev are applied to the result, y = act(alpha * rstd_r * (A_r.B - mean_r * colsum) + bias),
// colsum[n] = sum_k B[k, n] (input 4, float32). A kernel then reads A once for both the statistics and the product.
#include <algorithm>
#include <cmath>

#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::ops {

namespace {

// The epilogue's activation (SiLU and sigmoid are applied in-kernel only by cuDNN's fused matmul; cuBLASLt's path
// finishes them in its epilogue pass).
Result<Epilogue> parse_act(const Attributes& a) {
  Epilogue e;
  KILN_ASSIGN_OR_RETURN(e.act, parse_matmul_activation(a, "activation", "FusedMatMul"));
  return e;
}

// B as MatMul sees it: trans_b stores each matrix as [N, K] (Gemm's transB=1 layout): a 2-D weight, or a batch of
// them ([..., N, K], the per-sample weights of se_scale_gemm).
Shape effective_b_shape(const Shape& b, bool trans_b) {
  if (!trans_b || b.size() < 2) return b;
  Shape t = b;
  std::swap(t[t.size() - 2], t[t.size() - 1]);
  return t;
}

}  // namespace

KILN_REGISTER_OP(FusedMatMul) {
  OpSchema s;
  s.name = "FusedMatMul";
  s.domain = "kiln";
  s.min_inputs = 2;
  // A, B, bias (optional, [N]), residual (optional, the output's shape), colsum (float32 [N], with norm_epsilon
  // only: B's column sums, which the mean of A's row multiplies; given rather than computed, so that it is the sum
  // of B exactly as the kernel reads it).
  s.max_inputs = 5;
  // residual_first = 1: y = act(alpha * A.op(B) + bias + residual) (a convolution's order, and cuBLASLt's own: its
  // C is added before the epilogue's activation); 0 (default): y = act(alpha * A.op(B) + bias) + residual.
  // norm_epsilon (absent: no normalization): A's rows standardized over K with this epsilon, as above; B must then
  // be one matrix (rank 2).
  s.attrs = {{"alpha", AttrType::kFLOAT}, {"activation", AttrType::kSTRING}, {"trans_b", AttrType::kINT},
             {"residual_first", AttrType::kINT}, {"norm_epsilon", AttrType::kFLOAT}};
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kHALF, DataType::kBF16};
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(parse_act(ctx.attrs()).status());
    KILN_ASSIGN_OR_RETURN(int64_t tb, ctx.attrs().get_int("trans_b", 0));
    const bool norm = ctx.attrs().has("norm_epsilon");
    KILN_RETURN_IF_ERROR(ctx.attrs().get_float("norm_epsilon", 0.0f).status());
    const TensorInfo& a = ctx.input(0);
    const TensorInfo& b = ctx.input(1);
    if (!dtype_is_float(a.dtype)) return invalid_model("FusedMatMul: A must be a float type");
    if (norm && !ctx.has_input(4))
      return invalid_model("FusedMatMul: norm_epsilon needs input 4 (colsum, B's column sums as float32 [N])");
    if (!norm && ctx.has_input(4)) return invalid_model("FusedMatMul: input 4 (colsum) is only read with norm_epsilon");
    if (ctx.has_input(4) && ctx.input(4).dtype != DataType::kFLOAT)
      return invalid_model("FusedMatMul: colsum (input 4) must be float32, got " +
                           std::string(dtype_name(ctx.input(4).dtype)));
    for (int i = 1; i < std::min(ctx.num_inputs(), 4); ++i)
      if (ctx.has_input(i) && ctx.input(i).dtype != a.dtype)
        return invalid_model("FusedMatMul: input " + std::to_string(i) + " has type " + dtype_name(ctx.input(i).dtype) +
                             ", expected " + dtype_name(a.dtype) + " like A");
    if (!a.rank_known || !b.rank_known) {
      ctx.output(0).dtype = a.dtype;
      ctx.output(0).rank_known = false;
      return Status::Ok();
    }
    if (a.shape.size() < 2 || b.shape.size() < 2)
      return invalid_model("FusedMatMul: A and B must have rank >= 2, got " + shape_to_string(a.shape) + " and " +
                           shape_to_string(b.shape));
    if (norm && b.shape.size() != 2)
      return invalid_model("FusedMatMul: with norm_epsilon B must be one matrix (rank 2), got " +
                           shape_to_string(b.shape));
    Shape bs = effective_b_shape(b.shape, tb != 0);
    const Dim& ka = a.shape.back();
    const Dim& kb = bs[bs.size() - 2];
    if (ka.is_static() && kb.is_static() && ka.value != kb.value)
      return invalid_model("FusedMatMul: inner dimensions differ: A " + shape_to_string(a.shape) + ", B " +
                           shape_to_string(b.shape));
    ctx.require_equal(ka, kb);
    KILN_ASSIGN_OR_RETURN(
        Shape out, broadcast_shapes({Shape(a.shape.begin(), a.shape.end() - 2), Shape(bs.begin(), bs.end() - 2)}, &ctx));
    out.push_back(a.shape[a.shape.size() - 2]);
    out.push_back(bs.back());
    // The bias (input 2) and the column sums (input 4) are vectors of N.
    for (const auto& [i, what] : {std::pair{2, "bias"}, std::pair{4, "colsum"}}) {
      if (!ctx.has_input(i)) continue;
      const TensorInfo& v = ctx.input(i);
      if (v.rank_known && (v.shape.size() != 1 || (v.shape[0].is_static() && out.back().is_static() &&
                                                   v.shape[0].value != out.back().value)))
        return invalid_model(std::string("FusedMatMul: ") + what + " must be [N] with N=" + out.back().to_string() +
                             ", got " + shape_to_string(v.shape));
    }
    if (ctx.has_input(3) && ctx.input(3).rank_known && ctx.input(3).shape.size() != out.size())
      return invalid_model("FusedMatMul: residual must have the output's shape " + shape_to_string(out) + ", got " +
                           shape_to_string(ctx.input(3).shape));
    ctx.output(0) = make_info(a.dtype, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(const Epilogue act, parse_act(ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(float alpha, ctx.attrs().get_float("alpha", 1.0f));
    KILN_ASSIGN_OR_RETURN(int64_t tb, ctx.attrs().get_int("trans_b", 0));
    KILN_ASSIGN_OR_RETURN(int64_t residual_first, ctx.attrs().get_int("residual_first", 0));
    const bool norm = ctx.attrs().has("norm_epsilon");
    KILN_ASSIGN_OR_RETURN(float norm_eps, ctx.attrs().get_float("norm_epsilon", 0.0f));
    const Tensor& a = ctx.input(0);
    const DataType dt = a.dtype();
    // With norm_epsilon the product is taken in double: A.B - mean * colsum cancels most of a row whose mean is
    // large against its spread, and the reference should lose nothing there.
    const bool wide = dt == DataType::kDOUBLE || norm;
    const DataType acc = wide ? DataType::kDOUBLE : DataType::kFLOAT;
    Tensor af = a.cast(acc), bf = ctx.input(1).cast(acc);
    if (tb) {  // each [N, K] matrix of B to [K, N]
      if (bf.rank() < 2) return invalid_argument("FusedMatMul: B must have rank >= 2");
      std::vector<int64_t> dims = bf.shape();
      const int64_t r = bf.rank(), n = dims[r - 2], k = dims[r - 1], mats = bf.numel() / std::max<int64_t>(n * k, 1);
      std::swap(dims[r - 2], dims[r - 1]);
      Tensor t(DataType::kDOUBLE, dims);
      for (int64_t b = 0; b < mats; ++b)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < k; ++j) t.data<double>()[b * n * k + j * n + i] = bf.get_f64(b * n * k + i * k + j);
      bf = t.cast(acc);
    }
    // The product itself is MatMul's reference compute; only the epilogue is new here.
    const OpSchema* mm = OpRegistry::instance().find("MatMul");
    std::vector<Tensor> prod(1);
    Attributes none;
    ComputeContext mctx(none, ctx.opset(), {&af, &bf}, &prod);
    KILN_RETURN_IF_ERROR(mm->compute(mctx).with_context("FusedMatMul"));
    Tensor y = prod[0].cast(DataType::kDOUBLE);
    double* yp = y.data<double>();
    const int64_t n = y.shape().back(), total = y.numel();
    Tensor bias, res;
    if (ctx.has_input(2)) {
      bias = ctx.input(2).cast(acc);
      if (bias.numel() != n)
        return invalid_argument("FusedMatMul: bias has " + std::to_string(bias.numel()) +
                                " elements, expected N=" + std::to_string(n));
    }
    if (ctx.has_input(3)) {
      res = ctx.input(3).cast(acc);
      if (res.shape() != y.shape())
        return invalid_argument("FusedMatMul: residual of shape " + dims_to_string(res.shape()) +
                                " differs from the output's " + dims_to_string(y.shape()));
    }
    // norm_epsilon: each output row r is A's row r (B is one matrix) scaled by rstd_r after mean_r * colsum is
    // taken off; the statistics in double over K, the variance biased (LayerNormalization's).
    std::vector<double> colsum, row_mean, row_rstd;
    if (norm) {
      if (!ctx.has_input(4)) return invalid_argument("FusedMatMul: norm_epsilon needs input 4 (colsum)");
      const Tensor& cs = ctx.input(4);
      if (cs.dtype() != DataType::kFLOAT || cs.rank() != 1 || cs.numel() != n)
        return invalid_argument("FusedMatMul: colsum must be float32 [" + std::to_string(n) + "], got " +
                                std::string(dtype_name(cs.dtype())) + " " + dims_to_string(cs.shape()));
      if (ctx.input(1).rank() != 2) return invalid_argument("FusedMatMul: with norm_epsilon B must be rank 2");
      colsum = cs.to_f64_vector();
      const int64_t k = af.shape().back();
      int64_t rows = 1;
      for (int d = 0; d + 1 < af.rank(); ++d) rows *= af.dim(d);
      if (rows * n != total) return internal_error("FusedMatMul: output rows differ from A's");
      const double* ap = af.data<double>();
      row_mean.resize(rows);
      row_rstd.resize(rows);
      for (int64_t r = 0; r < rows; ++r) {
        double sum = 0, sq = 0;
        for (int64_t j = 0; j < k; ++j) sum += ap[r * k + j];
        const double mean = k > 0 ? sum / k : 0;
        for (int64_t j = 0; j < k; ++j) sq += (ap[r * k + j] - mean) * (ap[r * k + j] - mean);
        row_mean[r] = mean;
        row_rstd[r] = 1.0 / std::sqrt((k > 0 ? sq / k : 0) + static_cast<double>(norm_eps));
      }
    }
    for (int64_t i = 0; i < total; ++i) {
      if (norm) yp[i] = row_rstd[i / n] * (yp[i] - row_mean[i / n] * colsum[i % n]);
      double v = alpha * yp[i];
      if (bias.defined()) v += bias.get_f64(i % n);
      if (res.defined() && residual_first) v += res.get_f64(i);
      v = apply_activation(act, v);
      if (res.defined() && !residual_first) v += res.get_f64(i);
      yp[i] = v;
    }
    ctx.set_output(0, y.cast(dt));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
