// kiln::FusedAttention: softmax(scale * Q K^T + mask [causal]) V over [B,H,S,D] tensors, the attention fusion's op.
#include <cmath>
#include <limits>

#include "ops/op_util.h"

namespace kiln::ops {

// K is taken as [B,H,Sk,D], the layout Q and V have (not transposed): the CUDA kernel then reads all three the same
// way, and the pass undoes the exporter's transpose of K instead of materializing it.
// causal=1 masks key j for query i when j > i (top-left aligned, as torch's is_causal); an additive mask, when
// given, must broadcast to [B,H,Sq,Sk] and is added before the softmax.
KILN_REGISTER_OP(FusedAttention) {
  OpSchema s;
  s.name = "FusedAttention";
  s.domain = "kiln";
  s.min_inputs = 3;
  s.max_inputs = 4;
  s.attrs = {{"scale", AttrType::kFLOAT}, {"causal", AttrType::kINT}};
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kHALF, DataType::kBF16};
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& q = ctx.input(0);
    for (int i = 1; i < ctx.num_inputs(); ++i)
      if (ctx.has_input(i) && ctx.input(i).dtype != q.dtype)
        return invalid_model("FusedAttention: input " + std::to_string(i) + " has type " +
                             dtype_name(ctx.input(i).dtype) + ", expected " + dtype_name(q.dtype) + " like Q");
    if (!dtype_is_float(q.dtype)) return invalid_model("FusedAttention: Q must be a float type");
    const TensorInfo& k = ctx.input(1);
    const TensorInfo& v = ctx.input(2);
    if (!q.rank_known || !k.rank_known || !v.rank_known) {
      ctx.output(0).dtype = q.dtype;
      ctx.output(0).rank_known = false;
      return Status::Ok();
    }
    if (q.shape.size() != 4 || k.shape.size() != 4 || v.shape.size() != 4)
      return invalid_model("FusedAttention: Q, K and V must be [B,H,S,D], got " + shape_to_string(q.shape) + ", " +
                           shape_to_string(k.shape) + ", " + shape_to_string(v.shape));
    if (ctx.has_input(3) && ctx.input(3).rank_known && ctx.input(3).shape.size() > 4)
      return invalid_model("FusedAttention: the mask must have rank <= 4, got " + shape_to_string(ctx.input(3).shape));
    ctx.output(0) = make_info(q.dtype, {q.shape[0], q.shape[1], q.shape[2], v.shape[3]});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor q = ctx.input(0).cast(DataType::kDOUBLE), k = ctx.input(1).cast(DataType::kDOUBLE),
                 v = ctx.input(2).cast(DataType::kDOUBLE);
    if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4)
      return invalid_argument("FusedAttention: Q, K and V must be 4-D");
    const int64_t B = q.dim(0), H = q.dim(1), Sq = q.dim(2), D = q.dim(3), Sk = k.dim(2), Dv = v.dim(3);
    if (k.dim(0) != B || k.dim(1) != H || k.dim(3) != D || v.dim(0) != B || v.dim(1) != H || v.dim(2) != Sk)
      return invalid_argument("FusedAttention: K " + dims_to_string(k.shape()) + " and V " + dims_to_string(v.shape()) +
                              " do not fit Q " + dims_to_string(q.shape()));
    KILN_ASSIGN_OR_RETURN(float scale_attr, ctx.attrs().get_float("scale", 0.0f));
    KILN_ASSIGN_OR_RETURN(int64_t causal, ctx.attrs().get_int("causal", 0));
    const double scale = ctx.attrs().has("scale") ? scale_attr : 1.0 / std::sqrt(static_cast<double>(D));
    Tensor mask;
    std::vector<int64_t> ms(4, 0);
    if (ctx.has_input(3)) {
      mask = ctx.input(3).cast(DataType::kDOUBLE);
      std::vector<int64_t> mshape = mask.shape();
      while (mshape.size() < 4) mshape.insert(mshape.begin(), 1);
      const std::vector<int64_t> full = {B, H, Sq, Sk};
      for (int d = 0; d < 4; ++d)
        if (mshape[d] != 1 && mshape[d] != full[d])
          return invalid_argument("FusedAttention: mask " + dims_to_string(mask.shape()) + " does not broadcast to " +
                                  dims_to_string(full));
      ms = broadcast_strides(mshape, full);
    }
    Tensor y(DataType::kDOUBLE, {B, H, Sq, Dv});
    const double *qp = q.data<double>(), *kp = k.data<double>(), *vp = v.data<double>();
    const double* mp = mask.defined() ? mask.data<double>() : nullptr;
    double* yp = y.data<double>();
    std::vector<double> p(Sk);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t bh = b * H + h;
        for (int64_t i = 0; i < Sq; ++i) {
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < Sk; ++j) {
            double acc = 0;
            for (int64_t d = 0; d < D; ++d) acc += qp[(bh * Sq + i) * D + d] * kp[(bh * Sk + j) * D + d];
            acc *= scale;
            if (mp) acc += mp[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]];
            if (causal && j > i) acc = -std::numeric_limits<double>::infinity();
            p[j] = acc;
            mx = std::max(mx, acc);
          }
          double sum = 0;
          for (int64_t j = 0; j < Sk; ++j) sum += (p[j] = std::exp(p[j] - mx));
          for (int64_t d = 0; d < Dv; ++d) {
            double acc = 0;
            for (int64_t j = 0; j < Sk; ++j) acc += p[j] * vp[(bh * Sk + j) * Dv + d];
            yp[(bh * Sq + i) * Dv + d] = acc / sum;
          }
        }
      }
    ctx.set_output(0, y.cast(ctx.input(0).dtype()));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
