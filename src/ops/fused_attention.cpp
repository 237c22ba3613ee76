// kiln::FusedAttention: softmax(scale * Q K^T + mask [causal]) V over [B,H,S,D] tensors (or their [B,S,H,D] and
// packed [B,S,3,H,D] layouts), the attention fusion's op.
#include <cmath>
#include <limits>

#include "ops/attention_layout.h"
#include "ops/op_util.h"

namespace kiln::ops {

Result<std::string> attention_qkv_layout(const Attributes& a) {
  KILN_ASSIGN_OR_RETURN(std::string l, a.get_string("qkv_layout", "bhsd"));
  if (l != "bhsd" && l != "bshd" && l != "bs3hd")
    return invalid_model("FusedAttention: qkv_layout must be bhsd, bshd or bs3hd, got '" + l + "'");
  return l;
}

Result<std::string> attention_out_layout(const Attributes& a) {
  KILN_ASSIGN_OR_RETURN(std::string l, a.get_string("out_layout", "bhsd"));
  if (l != "bhsd" && l != "bshd")
    return invalid_model("FusedAttention: out_layout must be bhsd or bshd, got '" + l + "'");
  return l;
}

namespace {

// Strides of a dense 4-D operand stored as [B,H,S,D] or [B,S,H,D].
AttentionView view_4d(bool bshd, int64_t H, int64_t S, int64_t D) {
  AttentionView v;
  if (bshd) {
    v.st[0] = S * H * D, v.st[1] = D, v.st[2] = H * D;
  } else {
    v.st[0] = H * S * D, v.st[1] = S * D, v.st[2] = D;
  }
  return v;
}

}  // namespace

Result<AttentionGeometry> attention_geometry(const Attributes& a, const Dims& q, const Dims* kp, const Dims* vp) {
  KILN_ASSIGN_OR_RETURN(std::string in_l, attention_qkv_layout(a));
  KILN_ASSIGN_OR_RETURN(std::string out_l, attention_out_layout(a));
  const bool packed = in_l == "bs3hd";
  // The packed strides applied to separate K and V buffers would read past them: the inputs must fit the layout.
  if (packed != (!kp && !vp) || (!kp != !vp))
    return invalid_argument(packed ? "FusedAttention: with qkv_layout bs3hd, K and V come from input 0 and must be empty"
                                   : "FusedAttention: K and V are required");
  AttentionGeometry g;
  if (packed) {
    if (q.size() != 5 || q[2] != 3)
      return invalid_argument("FusedAttention: a packed (bs3hd) input must be [B,S,3,H,D], got " + dims_to_string(q));
    g.packed = true;
    g.B = q[0], g.Sq = g.Sk = q[1], g.H = q[3], g.D = g.Dv = q[4];
    const int64_t hd = g.H * g.D;
    for (AttentionView* w : {&g.q, &g.k, &g.v}) w->st[0] = g.Sq * 3 * hd, w->st[1] = g.D, w->st[2] = 3 * hd;
    g.k.offset = hd;
    g.v.offset = 2 * hd;
  } else {
    const Dims &k = *kp, &v = *vp;
    if (q.size() != 4 || k.size() != 4 || v.size() != 4)
      return invalid_argument("FusedAttention: Q, K and V must be 4-D, got " + dims_to_string(q) + ", " +
                              dims_to_string(k) + ", " + dims_to_string(v));
    const bool bshd = in_l == "bshd";
    const int hi = bshd ? 2 : 1, si = bshd ? 1 : 2;
    g.B = q[0], g.H = q[hi], g.Sq = q[si], g.D = q[3], g.Sk = k[si], g.Dv = v[3];
    if (k[0] != g.B || k[hi] != g.H || k[3] != g.D || v[0] != g.B || v[hi] != g.H || v[si] != g.Sk)
      return invalid_argument("FusedAttention: K " + dims_to_string(k) + " and V " + dims_to_string(v) +
                              " do not fit Q " + dims_to_string(q) + " (layout " + in_l + ")");
    g.q = view_4d(bshd, g.H, g.Sq, g.D);
    g.k = view_4d(bshd, g.H, g.Sk, g.D);
    g.v = view_4d(bshd, g.H, g.Sk, g.Dv);
  }
  const bool out_bshd = out_l == "bshd";
  g.o = view_4d(out_bshd, g.H, g.Sq, g.Dv);
  g.out_shape = out_bshd ? Dims{g.B, g.Sq, g.H, g.Dv} : Dims{g.B, g.H, g.Sq, g.Dv};
  return g;
}

// K is taken as [B,H,Sk,D], the layout Q and V have (not transposed): the CUDA kernel then reads all three the same
// way, and the pass undoes the exporter's transpose of K instead of materializing it.
// causal=1 masks key j for query i when j > i (top-left aligned, as torch's is_causal); an additive mask, when
// given, must broadcast to [B,H,Sq,Sk] and is added before the softmax. qkv_layout and out_layout (above) let the
// op read q, k and v straight from a [B,S,3E] projection and write what the output projection reads.
KILN_REGISTER_OP(FusedAttention) {
  OpSchema s;
  s.name = "FusedAttention";
  s.domain = "kiln";
  s.min_inputs = 1;
  s.max_inputs = 4;
  s.attrs = {{"scale", AttrType::kFLOAT},
             {"causal", AttrType::kINT},
             {"qkv_layout", AttrType::kSTRING},
             {"out_layout", AttrType::kSTRING}};
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kHALF, DataType::kBF16};
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& q = ctx.input(0);
    for (int i = 1; i < ctx.num_inputs(); ++i)
      if (ctx.has_input(i) && ctx.input(i).dtype != q.dtype)
        return invalid_model("FusedAttention: input " + std::to_string(i) + " has type " +
                             dtype_name(ctx.input(i).dtype) + ", expected " + dtype_name(q.dtype) + " like Q");
    if (!dtype_is_float(q.dtype)) return invalid_model("FusedAttention: Q must be a float type");
    KILN_ASSIGN_OR_RETURN(std::string in_l, attention_qkv_layout(ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(std::string out_l, attention_out_layout(ctx.attrs()));
    const bool packed = in_l == "bs3hd";
    if (packed ? (ctx.has_input(1) || ctx.has_input(2)) : (!ctx.has_input(1) || !ctx.has_input(2)))
      return invalid_model(packed ? "FusedAttention: with qkv_layout bs3hd, K and V come from input 0 and must be empty"
                                  : "FusedAttention: K and V are required");
    if (ctx.has_input(3) && ctx.input(3).rank_known && ctx.input(3).shape.size() > 4)
      return invalid_model("FusedAttention: the mask must have rank <= 4, got " + shape_to_string(ctx.input(3).shape));
    const bool known = q.rank_known && (packed || (ctx.input(1).rank_known && ctx.input(2).rank_known));
    if (!known) {
      ctx.output(0).dtype = q.dtype;
      ctx.output(0).rank_known = false;
      return Status::Ok();
    }
    Dim B, H, Sq, Dv;
    if (packed) {
      if (q.shape.size() != 5 || !(q.shape[2] == Dim(3)))
        return invalid_model("FusedAttention: a packed (bs3hd) input must be [B,S,3,H,D], got " +
                             shape_to_string(q.shape));
      B = q.shape[0], Sq = q.shape[1], H = q.shape[3], Dv = q.shape[4];
    } else {
      const TensorInfo& k = ctx.input(1);
      const TensorInfo& v = ctx.input(2);
      if (q.shape.size() != 4 || k.shape.size() != 4 || v.shape.size() != 4)
        return invalid_model("FusedAttention: Q, K and V must be 4-D, got " + shape_to_string(q.shape) + ", " +
                             shape_to_string(k.shape) + ", " + shape_to_string(v.shape));
      const bool bshd = in_l == "bshd";
      B = q.shape[0], H = q.shape[bshd ? 2 : 1], Sq = q.shape[bshd ? 1 : 2], Dv = v.shape[3];
    }
    ctx.output(0) = out_l == "bshd" ? make_info(q.dtype, {B, Sq, H, Dv}) : make_info(q.dtype, {B, H, Sq, Dv});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor q = ctx.input(0).cast(DataType::kDOUBLE);
    const bool has_k = ctx.has_input(1), has_v = ctx.has_input(2);
    const Tensor k = has_k ? ctx.input(1).cast(DataType::kDOUBLE) : q;
    const Tensor v = has_v ? ctx.input(2).cast(DataType::kDOUBLE) : q;
    KILN_ASSIGN_OR_RETURN(AttentionGeometry geo, attention_geometry(ctx.attrs(), q.shape(), has_k ? &k.shape() : nullptr,
                                                                    has_v ? &v.shape() : nullptr));
    const int64_t B = geo.B, H = geo.H, Sq = geo.Sq, D = geo.D, Sk = geo.Sk, Dv = geo.Dv;
    KILN_ASSIGN_OR_RETURN(float scale_attr, ctx.attrs().get_float("scale", 0.0f));
    KILN_ASSIGN_OR_RETURN(int64_t causal, ctx.attrs().get_int("causal", 0));
    const double scale = ctx.attrs().has("scale") ? scale_attr : 1.0 / std::sqrt(static_cast<double>(D));
    Tensor mask;
    std::vector<int64_t> ms(4, 0);
    if (ctx.has_input(3)) {
      mask = ctx.input(3).cast(DataType::kDOUBLE);
      std::vector<int64_t> mshape = mask.shape();
      if (mshape.size() > 4) return invalid_argument("FusedAttention: the mask has rank > 4");
      while (mshape.size() < 4) mshape.insert(mshape.begin(), 1);
      const std::vector<int64_t> full = {B, H, Sq, Sk};
      for (int d = 0; d < 4; ++d)
        if (mshape[d] != 1 && mshape[d] != full[d])
          return invalid_argument("FusedAttention: mask " + dims_to_string(mask.shape()) + " does not broadcast to " +
                                  dims_to_string(full));
      ms = broadcast_strides(mshape, full);
    }
    Tensor y(DataType::kDOUBLE, geo.out_shape);
    const double* mp = mask.defined() ? mask.data<double>() : nullptr;
    double* yp = y.data<double>();
    std::vector<double> p(Sk);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        // Row pointers of this (b, h): row s of an operand starts at base + s * st[2].
        auto base = [b, h](const Tensor& t, const AttentionView& w) {
          return t.data<double>() + w.offset + b * w.st[0] + h * w.st[1];
        };
        const double *qp = base(q, geo.q), *kp = base(k, geo.k), *vp = base(v, geo.v);
        double* op = yp + b * geo.o.st[0] + h * geo.o.st[1];
        for (int64_t i = 0; i < Sq; ++i) {
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < Sk; ++j) {
            double acc = 0;
            for (int64_t d = 0; d < D; ++d) acc += qp[i * geo.q.st[2] + d] * kp[j * geo.k.st[2] + d];
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
            for (int64_t j = 0; j < Sk; ++j) acc += p[j] * vp[j * geo.v.st[2] + d];
            op[i * geo.o.st[2] + d] = acc / sum;
          }
        }
      }
    ctx.set_output(0, y.cast(ctx.input(0).dtype()));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
