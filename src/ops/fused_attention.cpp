// kiln::FusedAttention: softmax(scale * Q K^T + mask [causal]) V over [B,H,S,D] tensors (or their [B,S,H,D] and
// [S,B,H,D] layouts, and the packed [B,S,3,H,D] and [S,B,3,H,D] ones), the attention fusion's op.
#include <cmath>
#include <limits>

#include "ops/attention_layout.h"
#include "ops/op_util.h"

namespace kiln::ops {

Result<std::string> attention_qkv_layout(const Attributes& a) {
  KILN_ASSIGN_OR_RETURN(std::string l, a.get_string("qkv_layout", "bhsd"));
  if (l != "bhsd" && l != "bshd" && l != "sbhd" && l != "bs3hd" && l != "sb3hd")
    return invalid_model("FusedAttention: qkv_layout must be bhsd, bshd, sbhd, bs3hd or sb3hd, got '" + l + "'");
  return l;
}

Result<std::string> attention_out_layout(const Attributes& a) {
  KILN_ASSIGN_OR_RETURN(std::string l, a.get_string("out_layout", "bhsd"));
  if (l != "bhsd" && l != "bshd" && l != "sbhd")
    return invalid_model("FusedAttention: out_layout must be bhsd, bshd or sbhd, got '" + l + "'");
  return l;
}

bool attention_layout_packed(const std::string& layout) { return layout == "bs3hd" || layout == "sb3hd"; }

AttentionAxes attention_axes(const std::string& layout) {
  const std::string l = attention_layout_packed(layout) ? layout.substr(0, 2) + "hd" : layout;
  return {static_cast<int>(l.find('b')), static_cast<int>(l.find('h')), static_cast<int>(l.find('s'))};
}

namespace {

// Strides of a dense 4-D operand stored in `layout` order (D last), from the sizes of B, H, S and D.
AttentionView view_4d(const std::string& layout, int64_t B, int64_t H, int64_t S, int64_t D) {
  const AttentionAxes ax = attention_axes(layout);
  int64_t size[4], stride[4];
  size[ax.b] = B, size[ax.h] = H, size[ax.s] = S, size[3] = D;
  stride[3] = 1;
  for (int i = 2; i >= 0; --i) stride[i] = stride[i + 1] * size[i + 1];
  AttentionView v;
  v.st[0] = stride[ax.b], v.st[1] = stride[ax.h], v.st[2] = stride[ax.s];
  return v;
}

}  // namespace

Result<AttentionGeometry> attention_geometry(const Attributes& a, const Dims& q, const Dims* kp, const Dims* vp) {
  KILN_ASSIGN_OR_RETURN(std::string in_l, attention_qkv_layout(a));
  KILN_ASSIGN_OR_RETURN(std::string out_l, attention_out_layout(a));
  const bool packed = attention_layout_packed(in_l);
  // The packed strides applied to separate K and V buffers would read past them: the inputs must fit the layout.
  if (packed != (!kp && !vp) || (!kp != !vp))
    return invalid_argument(packed ? "FusedAttention: with qkv_layout " + in_l +
                                         ", K and V come from input 0 and must be empty"
                                   : std::string("FusedAttention: K and V are required"));
  AttentionGeometry g;
  const AttentionAxes ax = attention_axes(in_l);
  if (packed) {
    if (q.size() != 5 || q[2] != 3)
      return invalid_argument("FusedAttention: a packed (" + in_l + ") input must be [" +
                              (in_l == "bs3hd" ? "B,S" : "S,B") + ",3,H,D], got " + dims_to_string(q));
    g.packed = true;
    g.B = q[ax.b], g.Sq = g.Sk = q[ax.s], g.H = g.Hk = q[3], g.D = g.Dv = q[4];
    const int64_t hd = g.H * g.D;
    // The packed tensor is the 4-D layout with 3 * H heads of which q, k and v take a third each.
    const AttentionView w = view_4d(in_l, g.B, 3 * g.H, g.Sq, g.D);
    for (AttentionView* o : {&g.q, &g.k, &g.v}) *o = w;
    g.k.offset = hd;
    g.v.offset = 2 * hd;
  } else {
    const Dims &k = *kp, &v = *vp;
    if (q.size() != 4 || k.size() != 4 || v.size() != 4)
      return invalid_argument("FusedAttention: Q, K and V must be 4-D, got " + dims_to_string(q) + ", " +
                              dims_to_string(k) + ", " + dims_to_string(v));
    g.B = q[ax.b], g.H = q[ax.h], g.Sq = q[ax.s], g.D = q[3], g.Hk = k[ax.h], g.Sk = k[ax.s], g.Dv = v[3];
    if (k[ax.b] != g.B || k[3] != g.D || v[ax.b] != g.B || v[ax.h] != g.Hk || v[ax.s] != g.Sk)
      return invalid_argument("FusedAttention: K " + dims_to_string(k) + " and V " + dims_to_string(v) +
                              " do not fit Q " + dims_to_string(q) + " (layout " + in_l + ")");
    if (g.Hk == 0 ? g.H != 0 : g.H % g.Hk != 0)
      return invalid_argument("FusedAttention: K/V have " + std::to_string(g.Hk) +
                              " heads, which does not divide Q's " + std::to_string(g.H) + " (K " + dims_to_string(k) +
                              ", Q " + dims_to_string(q) + ", layout " + in_l + ")");
    g.q = view_4d(in_l, g.B, g.H, g.Sq, g.D);
    g.k = view_4d(in_l, g.B, g.Hk, g.Sk, g.D);
    g.v = view_4d(in_l, g.B, g.Hk, g.Sk, g.Dv);
  }
  g.o = view_4d(out_l, g.B, g.H, g.Sq, g.Dv);
  const AttentionAxes oa = attention_axes(out_l);
  g.out_shape.assign(4, g.Dv);
  g.out_shape[oa.b] = g.B, g.out_shape[oa.h] = g.H, g.out_shape[oa.s] = g.Sq;
  return g;
}

// K and V may have fewer heads than Q (grouped-query attention: Hk divides H, query head h reads K/V head
// h / (H / Hk)), which is what the fusion makes of HF's repeat_kv instead of materializing the repeat.
// K is taken as [B,Hk,Sk,D], the layout Q and V have (not transposed): the CUDA kernel then reads all three the same
// way, and the pass undoes the exporter's transpose of K instead of materializing it.
// causal=1 masks key j for query i when j > i (top-left aligned, as torch's is_causal); an additive mask, when
// given, must broadcast to [B,H,Sq,Sk] and is added before the softmax. A query row whose every key is masked
// (-inf) is NaN, as softmax gives it, unless masked_rows_zero=1 makes it zeros (what torch's SDPA export does
// with its NaN guard, which the fusion then absorbs). qkv_layout and out_layout (above) let the
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
             {"out_layout", AttrType::kSTRING},
             {"masked_rows_zero", AttrType::kINT}};
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
    const bool packed = attention_layout_packed(in_l);
    if (packed ? (ctx.has_input(1) || ctx.has_input(2)) : (!ctx.has_input(1) || !ctx.has_input(2)))
      return invalid_model(packed ? "FusedAttention: with qkv_layout " + in_l +
                                        ", K and V come from input 0 and must be empty"
                                  : std::string("FusedAttention: K and V are required"));
    if (ctx.has_input(3) && ctx.input(3).rank_known && ctx.input(3).shape.size() > 4)
      return invalid_model("FusedAttention: the mask must have rank <= 4, got " + shape_to_string(ctx.input(3).shape));
    const bool known = q.rank_known && (packed || (ctx.input(1).rank_known && ctx.input(2).rank_known));
    if (!known) {
      ctx.output(0).dtype = q.dtype;
      ctx.output(0).rank_known = false;
      return Status::Ok();
    }
    const AttentionAxes ax = attention_axes(in_l);
    Dim B, H, Sq, Dv;
    if (packed) {
      if (q.shape.size() != 5 || !(q.shape[2] == Dim(3)))
        return invalid_model("FusedAttention: a packed (" + in_l + ") input must be [" +
                             (in_l == "bs3hd" ? "B,S" : "S,B") + ",3,H,D], got " + shape_to_string(q.shape));
      B = q.shape[ax.b], Sq = q.shape[ax.s], H = q.shape[3], Dv = q.shape[4];
    } else {
      const TensorInfo& k = ctx.input(1);
      const TensorInfo& v = ctx.input(2);
      if (q.shape.size() != 4 || k.shape.size() != 4 || v.shape.size() != 4)
        return invalid_model("FusedAttention: Q, K and V must be 4-D, got " + shape_to_string(q.shape) + ", " +
                             shape_to_string(k.shape) + ", " + shape_to_string(v.shape));
      B = q.shape[ax.b], H = q.shape[ax.h], Sq = q.shape[ax.s], Dv = v.shape[3];
      const Dim &hk = k.shape[ax.h], &hv = v.shape[ax.h];
      if (hk.is_static() && hv.is_static() && hk.value != hv.value)
        return invalid_model("FusedAttention: K has " + std::to_string(hk.value) + " heads and V " +
                             std::to_string(hv.value) + " (K " + shape_to_string(k.shape) + ", V " +
                             shape_to_string(v.shape) + ", layout " + in_l + ")");
      if (H.is_static() && hk.is_static() && (hk.value == 0 ? H.value != 0 : H.value % hk.value != 0))
        return invalid_model("FusedAttention: K/V have " + std::to_string(hk.value) +
                             " heads, which does not divide Q's " + std::to_string(H.value) + " (Q " +
                             shape_to_string(q.shape) + ", K " + shape_to_string(k.shape) + ", layout " + in_l + ")");
    }
    const AttentionAxes oa = attention_axes(out_l);
    Shape out(4, Dv);
    out[oa.b] = B, out[oa.h] = H, out[oa.s] = Sq;
    ctx.output(0) = make_info(q.dtype, out);
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
    KILN_ASSIGN_OR_RETURN(int64_t masked_rows_zero, ctx.attrs().get_int("masked_rows_zero", 0));
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
        auto base_kv = [b, kh = geo.kv_head(h)](const Tensor& t, const AttentionView& w) {
          return t.data<double>() + w.offset + b * w.st[0] + kh * w.st[1];
        };
        const double* qp = base(q, geo.q);
        const double *kp = base_kv(k, geo.k), *vp = base_kv(v, geo.v);
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
          if (masked_rows_zero && mx == -std::numeric_limits<double>::infinity()) {  // every key masked: zeros
            for (int64_t d = 0; d < Dv; ++d) op[i * geo.o.st[2] + d] = 0.0;
            continue;
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
