// Transformer-era operators: Attention, RMSNormalization, RotaryEmbedding, plus CumProd, CenterCropPad and BitCast.
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ops/broadcast_loop.h"
#include "ops/gemm_util.h"

namespace kiln::ops {
namespace {

// Reads an int attribute and rejects values outside `allowed`, naming them in the message.
Result<int64_t> int_attr_in(const std::string& op, const Attributes& attrs, const std::string& name, int64_t def,
                            const std::vector<int64_t>& allowed) {
  KILN_ASSIGN_OR_RETURN(int64_t v, attrs.get_int(name, def));
  for (int64_t a : allowed)
    if (a == v) return v;
  std::string list;
  for (size_t i = 0; i < allowed.size(); ++i) list += (i ? ", " : "") + std::to_string(allowed[i]);
  return invalid_model(op + ": attribute " + name + " must be one of {" + list + "}, got " + std::to_string(v));
}

// Accumulation type: half and bfloat16 compute in float, double stays double.
template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Rounds a value through the storage type, so that half/bf16 intermediates match a graph that materializes them.
template <typename T>
inline Acc<T> through(Acc<T> v) {
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) return static_cast<float>(T(v));
  else return v;
}

template <typename T>
std::vector<Acc<T>> to_acc(const Tensor& t) {
  std::vector<Acc<T>> r(static_cast<size_t>(t.numel()));
  const T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i) r[i] = static_cast<Acc<T>>(static_cast<compute_t<T>>(p[i]));
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// Attention

struct AttnConfig {
  bool three_d = false;
  int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, past_len = 0, head = 0, v_head = 0;
  bool causal = false;
  int64_t mode = 0;
  float scale = 0, softcap = 0;
  int64_t left_window = -1, right_window = -1;  // opset 25 sliding window; -1 leaves that side unbounded
};

Result<AttnConfig> attention_config(const Attributes& attrs, const std::vector<int64_t>& q,
                                    const std::vector<int64_t>& k, const std::vector<int64_t>& v,
                                    const std::vector<int64_t>* past_k) {
  const std::string op = "Attention";
  AttnConfig c;
  if (q.size() != k.size() || q.size() != v.size() || (q.size() != 3 && q.size() != 4))
    return invalid_argument(op + ": Q, K and V must all be 3-D or all 4-D, got " + dims_to_string(q) + ", " +
                            dims_to_string(k) + ", " + dims_to_string(v));
  c.three_d = q.size() == 3;
  KILN_ASSIGN_OR_RETURN(int64_t qh, attrs.get_int("q_num_heads", 0));
  KILN_ASSIGN_OR_RETURN(int64_t kvh, attrs.get_int("kv_num_heads", 0));
  c.batch = q[0];
  if (c.three_d) {
    if (qh <= 0 || kvh <= 0)
      return invalid_model(op + ": 3-D inputs need positive q_num_heads and kv_num_heads attributes");
    if (q[2] % qh != 0 || k[2] % kvh != 0 || v[2] % kvh != 0)
      return invalid_argument(op + ": hidden sizes " + std::to_string(q[2]) + "/" + std::to_string(k[2]) + "/" +
                              std::to_string(v[2]) + " are not divisible by the head counts");
    c.q_heads = qh; c.kv_heads = kvh;
    c.q_len = q[1]; c.kv_len = k[1];
    c.head = q[2] / qh; c.v_head = v[2] / kvh;
    if (k[2] / kvh != c.head) return invalid_argument(op + ": Q and K head sizes differ");
  } else {
    c.q_heads = q[1]; c.kv_heads = k[1];
    c.q_len = q[2]; c.kv_len = k[2];
    c.head = q[3]; c.v_head = v[3];
    if (k[3] != c.head) return invalid_argument(op + ": Q and K head sizes differ");
    if (v[1] != c.kv_heads) return invalid_argument(op + ": K and V head counts differ");
  }
  if (k[0] != c.batch || v[0] != c.batch) return invalid_argument(op + ": Q, K and V batch sizes differ");
  if (c.kv_heads <= 0 || c.q_heads % c.kv_heads != 0)
    return invalid_argument(op + ": q heads (" + std::to_string(c.q_heads) + ") must be a multiple of kv heads (" +
                            std::to_string(c.kv_heads) + ")");
  if (past_k) {
    if (past_k->size() != 4) return invalid_argument(op + ": past_key must be 4-D");
    c.past_len = (*past_k)[2];
  }
  KILN_ASSIGN_OR_RETURN(int64_t causal, int_attr_in(op, attrs, "is_causal", 0, {0, 1}));
  c.causal = causal != 0;
  KILN_ASSIGN_OR_RETURN(c.mode, int_attr_in(op, attrs, "qk_matmul_output_mode", 0, {0, 1, 2, 3}));
  KILN_ASSIGN_OR_RETURN(float scale, attrs.get_float("scale", 0.0f));
  c.scale = attrs.has("scale") ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head)));
  KILN_ASSIGN_OR_RETURN(c.softcap, attrs.get_float("softcap", 0.0f));
  KILN_ASSIGN_OR_RETURN(c.left_window, attrs.get_int("left_window_size", -1));
  KILN_ASSIGN_OR_RETURN(c.right_window, attrs.get_int("right_window_size", -1));
  return c;
}

Status check_attention_attrs(const Attributes& attrs, int opset) {
  for (const char* w : {"left_window_size", "right_window_size"}) {
    if (!attrs.has(w)) continue;
    if (opset < 25) return invalid_model(std::string("Attention: ") + w + " needs opset 25");
    KILN_ASSIGN_OR_RETURN(int64_t v, attrs.get_int(w));
    if (v < -1) return invalid_model(std::string("Attention: ") + w + " must be -1 or >= 0, got " + std::to_string(v));
  }
  // softmax_precision names a floating-point TensorProto type: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
  if (attrs.has("softmax_precision"))
    KILN_RETURN_IF_ERROR(int_attr_in("Attention", attrs, "softmax_precision", 1, {1, 10, 11, 16}).status());
  KILN_RETURN_IF_ERROR(int_attr_in("Attention", attrs, "is_causal", 0, {0, 1}).status());
  KILN_RETURN_IF_ERROR(int_attr_in("Attention", attrs, "qk_matmul_output_mode", 0, {0, 1, 2, 3}).status());
  return Status::Ok();
}

// Q/K/V as [B, H, S, D] in the accumulation type; 3-D inputs are [B, S, H*D].
template <typename T>
std::vector<Acc<T>> to_bhsd(const Tensor& t, bool three_d, int64_t b, int64_t h, int64_t s, int64_t d, Acc<T> mul) {
  std::vector<Acc<T>> src = to_acc<T>(t);
  for (auto& x : src) x = through<T>(x * mul);
  if (!three_d) return src;
  std::vector<Acc<T>> r(src.size());
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t si = 0; si < s; ++si)
      for (int64_t hi = 0; hi < h; ++hi)
        for (int64_t di = 0; di < d; ++di) r[((bi * h + hi) * s + si) * d + di] = src[((bi * s + si) * h + hi) * d + di];
  return r;
}

inline void gemm_acc(bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  gemm(false, tb, m, n, k, 1.0f, a, k, b, tb ? k : n, 0.0f, c, n);
}
inline void gemm_acc(bool tb, int64_t m, int64_t n, int64_t k, const double* a, const double* b, double* c) {
  gemm(false, tb, m, n, k, 1.0, a, k, b, tb ? k : n, 0.0, c, n);
}

template <typename T>
Status attention_kernel(ComputeContext& ctx, const AttnConfig& c) {
  using A = Acc<T>;
  const A inf = std::numeric_limits<A>::infinity();
  const int64_t B = c.batch, Hq = c.q_heads, Hk = c.kv_heads, Sq = c.q_len, D = c.head, Dv = c.v_head;
  const int64_t P = c.past_len, L = P + c.kv_len;
  // The scale is split as sqrt(scale) on both Q and K, which keeps half-precision products in range.
  const A sq = through<T>(static_cast<A>(std::sqrt(static_cast<double>(c.scale))));
  std::vector<A> q = to_bhsd<T>(ctx.input(0), c.three_d, B, Hq, Sq, D, sq);
  std::vector<A> k_new = to_bhsd<T>(ctx.input(1), c.three_d, B, Hk, c.kv_len, D, A(1));
  std::vector<A> v_new = to_bhsd<T>(ctx.input(2), c.three_d, B, Hk, c.kv_len, Dv, A(1));
  // present = concat(past, new) along the sequence axis.
  std::vector<A> k(static_cast<size_t>(B * Hk * L * D)), v(static_cast<size_t>(B * Hk * L * Dv));
  std::vector<A> pk, pv;
  if (P > 0 || ctx.has_input(4)) {
    pk = to_acc<T>(ctx.input(4));
    pv = to_acc<T>(ctx.input(5));
    if (static_cast<int64_t>(pk.size()) != B * Hk * P * D || static_cast<int64_t>(pv.size()) != B * Hk * P * Dv)
      return invalid_argument("Attention: past_key/past_value shapes do not match K/V");
  }
  for (int64_t bh = 0; bh < B * Hk; ++bh) {
    std::copy(pk.begin() + bh * P * D, pk.begin() + (bh + 1) * P * D, k.begin() + bh * L * D);
    std::copy(k_new.begin() + bh * c.kv_len * D, k_new.begin() + (bh + 1) * c.kv_len * D, k.begin() + bh * L * D + P * D);
    std::copy(pv.begin() + bh * P * Dv, pv.begin() + (bh + 1) * P * Dv, v.begin() + bh * L * Dv);
    std::copy(v_new.begin() + bh * c.kv_len * Dv, v_new.begin() + (bh + 1) * c.kv_len * Dv,
              v.begin() + bh * L * Dv + P * Dv);
  }
  for (int o = 1; o <= 2 && o < ctx.num_outputs(); ++o) {
    const std::vector<A>& src = o == 1 ? k : v;
    Tensor& t = ctx.allocate_output(o, ctx.input(0).dtype(), {B, Hk, L, o == 1 ? D : Dv});
    T* p = t.data<T>();
    for (size_t i = 0; i < src.size(); ++i) p[i] = static_cast<T>(static_cast<compute_t<T>>(src[i]));
  }
  // Scaled K for the product (the cache outputs keep the unscaled values).
  for (auto& x : k) x = through<T>(x * sq);

  // Additive bias of shape [B, Hq, Sq, L], built from the mask, causality and nonpad_kv_seqlen.
  std::vector<A> bias(static_cast<size_t>(B * Hq * Sq * L), A(0));
  if (ctx.has_input(3)) {
    const Tensor& m = ctx.input(3);
    if (m.rank() < 1 || m.rank() > 4) return invalid_argument("Attention: attn_mask must have rank 1 to 4");
    const int64_t ml = m.dim(-1);
    if (ml > L) return invalid_argument("Attention: attn_mask's last dimension exceeds the total key length");
    std::vector<int64_t> target = {B, Hq, Sq, ml};
    for (int i = 0; i < m.rank(); ++i) {
      const int64_t md = m.shape()[i], td = target[4 - m.rank() + i];
      if (md != 1 && md != td)
        return invalid_argument("Attention: attn_mask shape " + dims_to_string(m.shape()) + " does not broadcast to " +
                                dims_to_string(target));
    }
    auto st = broadcast_strides(m.shape(), target);
    const bool is_bool = m.dtype() == DataType::kBOOL;
    std::vector<A> mv;
    if (!is_bool) {
      if (m.dtype() != ctx.input(0).dtype()) return invalid_argument("Attention: a float attn_mask must have Q's type");
      mv = to_acc<T>(m);
    }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Sq; ++i)
          for (int64_t j = 0; j < L; ++j) {
            A val;
            // Keys past the mask's end are masked out, as if the mask were padded with -inf / false.
            if (j >= ml) val = -inf;
            else {
              const int64_t off = b * st[0] + h * st[1] + i * st[2] + j * st[3];
              val = is_bool ? (m.data<bool>()[off] ? A(0) : -inf) : mv[off];
            }
            bias[((b * Hq + h) * Sq + i) * L + j] = val;
          }
  }
  std::vector<int64_t> nonpad;
  if (ctx.has_input(6)) {
    KILN_ASSIGN_OR_RETURN(nonpad, tensor_to_ints(ctx.input(6)));
    if (static_cast<int64_t>(nonpad.size()) != B)
      return invalid_argument("Attention: nonpad_kv_seqlen must have one entry per batch");
    if (P > 0) return invalid_argument("Attention: nonpad_kv_seqlen cannot be combined with past_key/past_value");
  }
  for (int64_t b = 0; b < B; ++b) {
    // Causality is bottom-right aligned: query i sits after the keys that precede its block.
    const int64_t offset = !nonpad.empty() ? nonpad[b] - Sq : P;
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Sq; ++i)
        for (int64_t j = 0; j < L; ++j) {
          A& x = bias[((b * Hq + h) * Sq + i) * L + j];
          if (c.causal && j > i + offset) x = -inf;
          const int64_t ahead = i + offset - j;  // how far key j lies before query i's position
          if (c.left_window >= 0 && ahead > c.left_window) x = -inf;
          if (c.right_window >= 0 && -ahead > c.right_window) x = -inf;
          if (!nonpad.empty() && j >= nonpad[b]) x = -inf;
        }
  }

  std::vector<A> scores(static_cast<size_t>(Sq * L)), probs(static_cast<size_t>(Sq * L)), out(static_cast<size_t>(Sq * Dv));
  Tensor* qk_out = nullptr;
  if (ctx.num_outputs() > 3) qk_out = &ctx.allocate_output(3, ctx.input(0).dtype(), {B, Hq, Sq, L});
  Tensor& y = c.three_d ? ctx.allocate_output(0, ctx.input(0).dtype(), {B, Sq, Hq * Dv})
                        : ctx.allocate_output(0, ctx.input(0).dtype(), {B, Hq, Sq, Dv});
  T* yp = y.data<T>();
  const int64_t group = Hq / Hk;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kvh = h / group;
      const A* qp = q.data() + (b * Hq + h) * Sq * D;
      const A* kp = k.data() + (b * Hk + kvh) * L * D;
      const A* vp = v.data() + (b * Hk + kvh) * L * Dv;
      const A* bp = bias.data() + (b * Hq + h) * Sq * L;
      gemm_acc(true, Sq, L, D, qp, kp, scores.data());
      for (auto& s : scores) {
        s = through<T>(s);
        if (c.softcap > 0) s = through<T>(static_cast<A>(c.softcap) * std::tanh(s / static_cast<A>(c.softcap)));
      }
      T* qko = qk_out ? qk_out->data<T>() + (b * Hq + h) * Sq * L : nullptr;
      if (qko && c.mode <= 1)
        for (int64_t i = 0; i < Sq * L; ++i) qko[i] = static_cast<T>(static_cast<compute_t<T>>(scores[i]));
      for (int64_t i = 0; i < Sq * L; ++i) scores[i] = through<T>(scores[i] + bp[i]);
      if (qko && c.mode == 2)
        for (int64_t i = 0; i < Sq * L; ++i) qko[i] = static_cast<T>(static_cast<compute_t<T>>(scores[i]));
      for (int64_t i = 0; i < Sq; ++i) {
        const A* row = scores.data() + i * L;
        A* pr = probs.data() + i * L;
        A bmax = -inf, mx = -inf;
        for (int64_t j = 0; j < L; ++j) { bmax = std::max(bmax, bp[i * L + j]); mx = std::max(mx, row[j]); }
        // A row whose bias masks every key attends nothing: its probabilities are zero, not NaN.
        if (bmax == -inf || mx == -inf) {
          std::fill(pr, pr + L, A(0));
          continue;
        }
        A sum = 0;
        for (int64_t j = 0; j < L; ++j) { pr[j] = std::exp(row[j] - mx); sum += pr[j]; }
        for (int64_t j = 0; j < L; ++j) pr[j] = through<T>(pr[j] / sum);
      }
      if (qko && c.mode == 3)
        for (int64_t i = 0; i < Sq * L; ++i) qko[i] = static_cast<T>(static_cast<compute_t<T>>(probs[i]));
      gemm_acc(false, Sq, Dv, L, probs.data(), vp, out.data());
      for (int64_t i = 0; i < Sq; ++i)
        for (int64_t d = 0; d < Dv; ++d) {
          const int64_t dst = c.three_d ? (b * Sq + i) * Hq * Dv + h * Dv + d : ((b * Hq + h) * Sq + i) * Dv + d;
          yp[dst] = static_cast<T>(static_cast<compute_t<T>>(out[i * Dv + d]));
        }
    }
  return Status::Ok();
}

Dim dim_div(const Dim& a, int64_t n, InferContext& ctx) {
  return a.is_static() && n > 0 ? Dim(a.value / n) : ctx.fresh_dim();
}
Dim dim_add(const Dim& a, const Dim& b, InferContext& ctx) {
  return a.is_static() && b.is_static() ? Dim(a.value + b.value) : ctx.fresh_dim();
}

}  // namespace

KILN_REGISTER_OP(Attention) {
  OpSchema s;
  s.name = "Attention";
  s.since_opset = 23;
  s.min_inputs = 3;
  s.max_inputs = 7;  // opset 24 adds nonpad_kv_seqlen
  s.min_outputs = 1;
  s.max_outputs = 4;
  s.attrs = {{"is_causal", AttrType::kINT},       {"kv_num_heads", AttrType::kINT},
             {"q_num_heads", AttrType::kINT},     {"qk_matmul_output_mode", AttrType::kINT},
             {"scale", AttrType::kFLOAT},         {"softcap", AttrType::kFLOAT},
             {"softmax_precision", AttrType::kINT}, {"left_window_size", AttrType::kINT},
             {"right_window_size", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(check_attention_attrs(ctx.attrs(), ctx.opset()));
    const TensorInfo& q = ctx.input(0);
    const TensorInfo& k = ctx.input(1);
    const TensorInfo& v = ctx.input(2);
    if (!dtype_is_float(q.dtype)) return invalid_model("Attention: Q must be floating point, got " + std::string(dtype_name(q.dtype)));
    if (k.dtype != q.dtype || v.dtype != q.dtype) return invalid_model("Attention: Q, K and V must share one type");
    if (ctx.has_input(6) && ctx.opset() < 24) return invalid_model("Attention: nonpad_kv_seqlen needs opset 24");
    if (ctx.has_input(4) != ctx.has_input(5))
      return invalid_model("Attention: past_key and past_value must be given together");
    const size_t r = q.shape.size();
    if (!q.rank_known || (r != 3 && r != 4) || k.shape.size() != r || v.shape.size() != r)
      return invalid_model("Attention: Q, K and V must all be 3-D or all 4-D");
    KILN_ASSIGN_OR_RETURN(int64_t qh, ctx.attrs().get_int("q_num_heads", 0));
    KILN_ASSIGN_OR_RETURN(int64_t kvh, ctx.attrs().get_int("kv_num_heads", 0));
    if (r == 4 && ctx.opset() >= 25 && (ctx.attrs().has("q_num_heads") || ctx.attrs().has("kv_num_heads")))
      return invalid_model("Attention: q_num_heads and kv_num_heads must not be given with 4-D inputs (opset 25)");
    if (r == 3 && (qh <= 0 || kvh <= 0))
      return invalid_model("Attention: 3-D inputs need positive q_num_heads and kv_num_heads attributes");
    const Dim B = q.shape[0];
    const Dim Hq = r == 4 ? q.shape[1] : Dim(qh);
    const Dim Hk = r == 4 ? k.shape[1] : Dim(kvh);
    const Dim Sq = q.shape[r == 4 ? 2 : 1];
    const Dim Skv = k.shape[r == 4 ? 2 : 1];
    const Dim D = r == 4 ? k.shape[3] : dim_div(k.shape[2], kvh, ctx);
    const Dim Dv = r == 4 ? v.shape[3] : dim_div(v.shape[2], kvh, ctx);
    Dim L = Skv;
    if (ctx.has_input(4)) {
      const TensorInfo& pk = ctx.input(4);
      if (pk.rank_known && pk.shape.size() != 4) return invalid_model("Attention: past_key must be 4-D");
      L = pk.rank_known ? dim_add(pk.shape[2], Skv, ctx) : ctx.fresh_dim();
    }
    if (r == 4) ctx.output(0) = make_info(q.dtype, {B, Hq, Sq, Dv});
    else ctx.output(0) = make_info(q.dtype, {B, Sq, Dv.is_static() ? Dim(Dv.value * qh) : ctx.fresh_dim()});
    if (ctx.num_outputs() > 1) ctx.output(1) = make_info(q.dtype, {B, Hk, L, D});
    if (ctx.num_outputs() > 2) ctx.output(2) = make_info(q.dtype, {B, Hk, L, Dv});
    if (ctx.num_outputs() > 3) ctx.output(3) = make_info(q.dtype, {B, Hq, Sq, L});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(check_attention_attrs(ctx.attrs(), ctx.opset()));
    if (ctx.has_input(4) != ctx.has_input(5))
      return invalid_argument("Attention: past_key and past_value must be given together");
    const std::vector<int64_t>* pk = ctx.has_input(4) ? &ctx.input(4).shape() : nullptr;
    KILN_ASSIGN_OR_RETURN(AttnConfig c, attention_config(ctx.attrs(), ctx.input(0).shape(), ctx.input(1).shape(),
                                                          ctx.input(2).shape(), pk));
    KILN_DISPATCH_FLOAT_TYPES(ctx.input(0).dtype(), "Attention", KILN_RETURN_IF_ERROR(attention_kernel<scalar_t>(ctx, c)));
    return Status::Ok();
  };
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNormalization

namespace {

template <typename T>
void rms_norm_kernel(const Tensor& x, int64_t axis, double eps, const Tensor& scale, Tensor& y) {
  using A = Acc<T>;
  const int64_t outer = product(x.shape(), 0, axis), inner = product(x.shape(), axis);
  // Scale broadcasts against the normalized trailing dims; expand it once so the main loop is contiguous.
  std::vector<int64_t> norm_dims(x.shape().begin() + axis, x.shape().end());
  const std::vector<double> sd = scale.to_f64_vector();
  const auto st = broadcast_strides(scale.shape(), norm_dims);
  std::vector<A> sv(static_cast<size_t>(inner));
  std::vector<int64_t> idx(norm_dims.size(), 0);
  for (int64_t i = 0; i < inner; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * st[d];
    sv[i] = static_cast<A>(sd[off]);
    for (int d = static_cast<int>(idx.size()) - 1; d >= 0; --d) {
      if (++idx[d] < norm_dims[d]) break;
      idx[d] = 0;
    }
  }
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  for (int64_t o = 0; o < outer; ++o) {
    double ss = 0;
    for (int64_t i = 0; i < inner; ++i) {
      const double v = static_cast<double>(static_cast<compute_t<T>>(xp[o * inner + i]));
      ss += v * v;
    }
    const A inv = static_cast<A>(1.0 / std::sqrt(ss / static_cast<double>(inner) + eps));
    for (int64_t i = 0; i < inner; ++i)
      yp[o * inner + i] = static_cast<T>(static_cast<compute_t<T>>(static_cast<A>(static_cast<compute_t<T>>(xp[o * inner + i])) * inv * sv[i]));
  }
}

}  // namespace

KILN_REGISTER_OP(RMSNormalization) {
  OpSchema s;
  s.name = "RMSNormalization";
  s.since_opset = 23;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"axis", AttrType::kINT}, {"epsilon", AttrType::kFLOAT}, {"stash_type", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    // The statistics are accumulated in double whatever stash_type says, which is at least as precise as asked.
    KILN_RETURN_IF_ERROR(int_attr_in("RMSNormalization", ctx.attrs(), "stash_type", 1, {1, 10, 11, 16}).status());
    if (!dtype_is_float(ctx.input(0).dtype))
      return invalid_model("RMSNormalization: X must be floating point, got " + std::string(dtype_name(ctx.input(0).dtype)));
    if (ctx.input(0).rank_known) {
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
      KILN_RETURN_IF_ERROR(normalize_axis(axis, static_cast<int64_t>(ctx.input(0).shape.size()), "RMSNormalization axis").status());
    }
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(int_attr_in("RMSNormalization", ctx.attrs(), "stash_type", 1, {1, 10, 11, 16}).status());
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_attr, x.rank(), "RMSNormalization axis"));
    KILN_ASSIGN_OR_RETURN(float eps, ctx.attrs().get_float("epsilon", 1e-5f));
    const Tensor& scale = ctx.input(1);
    std::vector<int64_t> norm_dims(x.shape().begin() + axis, x.shape().end());
    if (scale.rank() > static_cast<int>(norm_dims.size()))
      return invalid_argument("RMSNormalization: scale " + dims_to_string(scale.shape()) +
                              " does not broadcast to the normalized shape " + dims_to_string(norm_dims));
    for (int i = 0; i < scale.rank(); ++i) {
      const int64_t sd = scale.shape()[i], nd = norm_dims[norm_dims.size() - scale.rank() + i];
      if (sd != 1 && sd != nd)
        return invalid_argument("RMSNormalization: scale " + dims_to_string(scale.shape()) +
                                " does not broadcast to the normalized shape " + dims_to_string(norm_dims));
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "RMSNormalization",
                              rms_norm_kernel<scalar_t>(x, axis, static_cast<double>(eps), scale, y));
    return Status::Ok();
  };
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// RotaryEmbedding

namespace {

template <typename T>
Status rotary_kernel(ComputeContext& ctx, int64_t num_heads, int64_t rot_dim, bool interleaved) {
  using A = Acc<T>;
  const std::string op = "RotaryEmbedding";
  const Tensor& x = ctx.input(0);
  const bool four_d = x.rank() == 4;
  const int64_t B = x.dim(0);
  const int64_t S = four_d ? x.dim(2) : x.dim(1);
  const int64_t H = four_d ? x.dim(1) : num_heads;
  if (!four_d && (H <= 0 || x.dim(2) % H != 0))
    return invalid_argument(op + ": 3-D input needs num_heads dividing the hidden size " + std::to_string(x.dim(2)));
  const int64_t D = four_d ? x.dim(3) : x.dim(2) / H;
  const int64_t R = rot_dim == 0 ? D : rot_dim;
  if (R > D || R % 2 != 0)
    return invalid_argument(op + ": rotary_embedding_dim " + std::to_string(R) + " must be even and at most the head size " +
                            std::to_string(D));
  const int64_t half = R / 2;
  const Tensor& cs = ctx.input(1);
  const Tensor& sn = ctx.input(2);
  if (cs.shape() != sn.shape() || cs.dim(-1) != half)
    return invalid_argument(op + ": cos/sin caches must match and end in rotary_embedding_dim/2 = " + std::to_string(half) +
                            ", got " + dims_to_string(cs.shape()) + " and " + dims_to_string(sn.shape()));
  std::vector<int64_t> pos;
  if (ctx.has_input(3)) {
    KILN_ASSIGN_OR_RETURN(pos, tensor_to_ints(ctx.input(3)));
    if (static_cast<int64_t>(pos.size()) != B * S || cs.rank() != 2)
      return invalid_argument(op + ": position_ids must be [batch, seq] and the caches 2-D");
    for (int64_t p : pos)
      if (p < 0 || p >= cs.dim(0)) return invalid_argument(op + ": position id " + std::to_string(p) + " is out of range");
  } else if (cs.rank() != 3 || cs.dim(0) != B || cs.dim(1) != S) {
    return invalid_argument(op + ": without position_ids the caches must be [batch, seq, dim/2], got " +
                            dims_to_string(cs.shape()));
  }
  const std::vector<A> cv = to_acc<T>(cs), sv = to_acc<T>(sn);
  const T* xp = x.data<T>();
  Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
  T* yp = y.data<T>();
  std::memcpy(yp, xp, x.nbytes());
  auto ld = [](const T& v) { return static_cast<A>(static_cast<compute_t<T>>(v)); };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t row = pos.empty() ? b * S + s : pos[b * S + s];
      const A* c = cv.data() + row * half;
      const A* si = sv.data() + row * half;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = four_d ? ((b * H + h) * S + s) * D : ((b * S + s) * H + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          const int64_t i1 = interleaved ? base + 2 * i : base + i;
          const int64_t i2 = interleaved ? base + 2 * i + 1 : base + i + half;
          const A x1 = ld(xp[i1]), x2 = ld(xp[i2]);
          yp[i1] = static_cast<T>(static_cast<compute_t<T>>(c[i] * x1 - si[i] * x2));
          yp[i2] = static_cast<T>(static_cast<compute_t<T>>(si[i] * x1 + c[i] * x2));
        }
      }
    }
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(RotaryEmbedding) {
  OpSchema s;
  s.name = "RotaryEmbedding";
  s.since_opset = 23;
  s.min_inputs = 3;
  s.max_inputs = 4;
  s.attrs = {{"interleaved", AttrType::kINT}, {"rotary_embedding_dim", AttrType::kINT}, {"num_heads", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(int_attr_in("RotaryEmbedding", ctx.attrs(), "interleaved", 0, {0, 1}).status());
    const TensorInfo& x = ctx.input(0);
    if (!dtype_is_float(x.dtype)) return invalid_model("RotaryEmbedding: input must be floating point");
    if (x.rank_known && x.shape.size() != 3 && x.shape.size() != 4)
      return invalid_model("RotaryEmbedding: input must be 3-D or 4-D, got " + shape_to_string(x.shape));
    KILN_ASSIGN_OR_RETURN(int64_t nh, ctx.attrs().get_int("num_heads", 0));
    if (x.rank_known && x.shape.size() == 3 && nh <= 0)
      return invalid_model("RotaryEmbedding: 3-D input needs a positive num_heads attribute");
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(int64_t inter, int_attr_in("RotaryEmbedding", ctx.attrs(), "interleaved", 0, {0, 1}));
    KILN_ASSIGN_OR_RETURN(int64_t nh, ctx.attrs().get_int("num_heads", 0));
    KILN_ASSIGN_OR_RETURN(int64_t rd, ctx.attrs().get_int("rotary_embedding_dim", 0));
    const Tensor& x = ctx.input(0);
    if (x.rank() != 3 && x.rank() != 4) return invalid_argument("RotaryEmbedding: input must be 3-D or 4-D");
    if (rd < 0) return invalid_argument("RotaryEmbedding: rotary_embedding_dim must be >= 0");
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "RotaryEmbedding",
                              KILN_RETURN_IF_ERROR(rotary_kernel<scalar_t>(ctx, nh, rd, inter != 0)));
    return Status::Ok();
  };
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// CumProd

KILN_REGISTER_OP(CumProd) {
  OpSchema s;
  s.name = "CumProd";
  s.since_opset = 26;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"exclusive", AttrType::kINT}, {"reverse", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(int_attr_in("CumProd", ctx.attrs(), "exclusive", 0, {0, 1}).status());
    KILN_RETURN_IF_ERROR(int_attr_in("CumProd", ctx.attrs(), "reverse", 0, {0, 1}).status());
    const DataType at = ctx.input(1).dtype;
    if (at != DataType::kINT32 && at != DataType::kINT64)
      return invalid_model("CumProd: axis must be int32 or int64, got " + std::string(dtype_name(at)));
    if (ctx.input(0).dtype == DataType::kBOOL) return invalid_model("CumProd: bool input is not allowed");
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(int64_t excl, int_attr_in("CumProd", ctx.attrs(), "exclusive", 0, {0, 1}));
    KILN_ASSIGN_OR_RETURN(int64_t rev, int_attr_in("CumProd", ctx.attrs(), "reverse", 0, {0, 1}));
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, tensor_to_ints(ctx.input(1)));
    if (ax.size() != 1) return invalid_argument("CumProd: axis must hold exactly one value");
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ax[0], x.rank(), "CumProd axis"));
    const int64_t outer = product(x.shape(), 0, axis), len = x.dim(static_cast<int>(axis)),
                  inner = product(x.shape(), axis + 1);
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), "CumProd", {
      using C = compute_t<scalar_t>;
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          C acc = C(1);
          for (int64_t n = 0; n < len; ++n) {
            const int64_t k = rev ? len - 1 - n : n;
            const int64_t idx = (o * len + k) * inner + i;
            const C v = static_cast<C>(xp[idx]);
            if (excl) { yp[idx] = static_cast<scalar_t>(acc); acc = static_cast<C>(acc * v); }
            else { acc = static_cast<C>(acc * v); yp[idx] = static_cast<scalar_t>(acc); }
          }
        }
    });
    return Status::Ok();
  };
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// CenterCropPad

namespace {

Result<std::vector<int64_t>> crop_axes(const Attributes& attrs, int64_t rank, size_t nshape) {
  std::vector<int64_t> all(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) all[i] = i;
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, attrs.get_ints("axes", all));
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (auto& a : axes) {
    KILN_ASSIGN_OR_RETURN(a, normalize_axis(a, rank, "CenterCropPad axes"));
    if (seen[a]) return invalid_model("CenterCropPad: axes repeat axis " + std::to_string(a));
    seen[a] = true;
  }
  if (axes.size() != nshape)
    return invalid_argument("CenterCropPad: shape has " + std::to_string(nshape) + " entries but there are " +
                            std::to_string(axes.size()) + " axes");
  return axes;
}

}  // namespace

KILN_REGISTER_OP(CenterCropPad) {
  OpSchema s;
  s.name = "CenterCropPad";
  s.since_opset = 18;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"axes", AttrType::kINTS}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    const DataType st = ctx.input(1).dtype;
    if (st != DataType::kINT32 && st != DataType::kINT64)
      return invalid_model("CenterCropPad: shape must be int32 or int64, got " + std::string(dtype_name(st)));
    ctx.output(0) = make_info(x.dtype, {});
    if (!x.rank_known) { ctx.output(0).rank_known = false; return Status::Ok(); }
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    Shape out = x.shape;
    auto vals = known_values(ctx.input(1));
    if (vals) {
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, crop_axes(ctx.attrs(), rank, vals->size()));
      for (size_t i = 0; i < axes.size(); ++i) out[axes[i]] = (*vals)[i];
    } else {
      std::vector<int64_t> all(static_cast<size_t>(rank));
      for (int64_t i = 0; i < rank; ++i) all[i] = i;
      KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, ctx.attrs().get_ints("axes", all));
      for (int64_t a : axes) {
        KILN_ASSIGN_OR_RETURN(int64_t n, normalize_axis(a, rank, "CenterCropPad axes"));
        out[n] = ctx.fresh_dim();
      }
    }
    ctx.output(0).shape = out;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> target, tensor_to_ints(ctx.input(1)));
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axes, crop_axes(ctx.attrs(), x.rank(), target.size()));
    std::vector<int64_t> out = x.shape();
    // Per axis, where output index 0 falls in the input: positive when cropping, negative when padding.
    std::vector<int64_t> start(out.size(), 0);
    for (size_t i = 0; i < axes.size(); ++i) {
      if (target[i] < 0) return invalid_argument("CenterCropPad: target sizes must be non-negative");
      const int64_t in = x.dim(static_cast<int>(axes[i]));
      out[axes[i]] = target[i];
      start[axes[i]] = in >= target[i] ? (in - target[i]) / 2 : -((target[i] - in) / 2);
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), out);
    const size_t es = dtype_size(x.dtype());
    const auto xs = strides_of(x.shape());
    const int64_t total = product(out);
    const int rank = x.rank();
    std::vector<int64_t> idx(static_cast<size_t>(rank), 0);
    const char* src = static_cast<const char*>(x.raw());
    char* dst = static_cast<char*>(y.raw());
    for (int64_t o = 0; o < total; ++o) {
      int64_t off = 0;
      bool inside = true;
      for (int d = 0; d < rank; ++d) {
        const int64_t p = idx[d] + start[d];
        if (p < 0 || p >= x.dim(d)) { inside = false; break; }
        off += p * xs[d];
      }
      // Padding stays zero: the output buffer is allocated zero-filled.
      if (inside) std::memcpy(dst + o * es, src + off * es, es);
      for (int d = rank - 1; d >= 0; --d) {
        if (++idx[d] < out[d]) break;
        idx[d] = 0;
      }
    }
    return Status::Ok();
  };
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// BitCast

namespace {

Result<DataType> bitcast_target(const Attributes& attrs, DataType from) {
  KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("to"));
  DataType to;
  if (!dtype_from_onnx_code(code, &to))
    return unsupported("BitCast: target type code " + std::to_string(code) + " is not supported");
  if (dtype_size(to) != dtype_size(from))
    return invalid_model("BitCast: " + std::string(dtype_name(from)) + " and " + dtype_name(to) +
                         " differ in width; only same-width casts are allowed");
  return to;
}

}  // namespace

KILN_REGISTER_OP(BitCast) {
  OpSchema s;
  s.name = "BitCast";
  s.since_opset = 26;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"to", AttrType::kINT, AttrRequirement::kRequired}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(DataType to, bitcast_target(ctx.attrs(), ctx.input(0).dtype));
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).dtype = to;
    ctx.output(0).value.reset();
    ctx.output(0).constant = nullptr;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(DataType to, bitcast_target(ctx.attrs(), x.dtype()));
    Tensor& y = ctx.allocate_output(0, to, x.shape());
    if (x.nbytes() > 0) std::memcpy(y.raw(), x.raw(), x.nbytes());
    if (to == DataType::kBOOL) {
      // A bool byte other than 0/1 is not a valid C++ bool; normalize it.
      uint8_t* p = static_cast<uint8_t*>(y.raw());
      for (int64_t i = 0; i < y.numel(); ++i) p[i] = p[i] != 0;
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
