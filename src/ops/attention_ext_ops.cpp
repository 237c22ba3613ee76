// Recurrent and programmable attention operators: LinearAttention, CausalConvWithState (ai.onnx 27) and FlexAttention (ai.onnx.preview 1).
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/broadcast_loop.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// The reference computes are small and rare, so they work on doubles read element by element and round through
// the storage type only where the ONNX definition materializes a tensor of that type.
std::vector<double> load(const Tensor& t) {
  std::vector<double> r(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) r[i] = t.get_f64(i);
  return r;
}

Status store(Tensor& t, const std::vector<double>& v) {
  KILN_DISPATCH_FLOAT_TYPES(t.dtype(), "store", {
    scalar_t* p = t.data<scalar_t>();
    for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<scalar_t>(static_cast<compute_t<scalar_t>>(v[i]));
  });
  return Status::Ok();
}

double round_to(DataType dt, double v) {
  switch (dt) {
    case DataType::kFLOAT: return static_cast<float>(v);
    case DataType::kHALF: return static_cast<float>(Half(static_cast<float>(v)));
    case DataType::kBF16: return static_cast<float>(BFloat16(static_cast<float>(v)));
    default: return v;
  }
}

Result<std::string> string_attr_in(const std::string& op, const Attributes& attrs, const std::string& name,
                                   const std::string& def, const std::vector<std::string>& allowed) {
  KILN_ASSIGN_OR_RETURN(std::string v, attrs.get_string(name, def));
  for (auto& a : allowed)
    if (a == v) return v;
  std::string list;
  for (size_t i = 0; i < allowed.size(); ++i) list += (i ? ", " : "") + std::string("'") + allowed[i] + "'";
  return invalid_model(op + ": attribute " + name + " must be one of {" + list + "}, got '" + v + "'");
}

// Static size of a dim divided by n, or a fresh symbol when it is not known.
Dim div_dim(InferContext& ctx, const Dim& d, int64_t n) {
  if (d.is_static() && n > 0) return Dim(d.value / n);
  return ctx.fresh_dim();
}

// ---------------------------------------------------------------------------------------------------------------
// LinearAttention

struct LinAttnRule {
  bool gating = false, delta = false;
};

Result<LinAttnRule> linear_attention_rule(const Attributes& attrs, bool has_decay, bool has_beta) {
  const std::string op = "LinearAttention";
  KILN_ASSIGN_OR_RETURN(std::string rule,
                        string_attr_in(op, attrs, "update_rule", "gated_delta", {"linear", "gated", "delta", "gated_delta"}));
  LinAttnRule r;
  r.gating = rule == "gated" || rule == "gated_delta";
  r.delta = rule == "delta" || rule == "gated_delta";
  if (r.gating != has_decay)
    return invalid_model(op + ": update_rule '" + rule + "' " + (r.gating ? "requires" : "forbids") + " the decay input");
  if (r.delta != has_beta)
    return invalid_model(op + ": update_rule '" + rule + "' " + (r.delta ? "requires" : "forbids") + " the beta input");
  KILN_ASSIGN_OR_RETURN(int64_t qh, attrs.get_int("q_num_heads"));
  KILN_ASSIGN_OR_RETURN(int64_t kvh, attrs.get_int("kv_num_heads"));
  if (qh <= 0 || kvh <= 0 || qh % kvh != 0)
    return invalid_model(op + ": q_num_heads (" + std::to_string(qh) + ") must be a positive multiple of kv_num_heads (" +
                         std::to_string(kvh) + ")");
  return r;
}

Status linear_attention_infer(InferContext& ctx) {
  const std::string op = "LinearAttention";
  KILN_ASSIGN_OR_RETURN(LinAttnRule rule, linear_attention_rule(ctx.attrs(), ctx.has_input(4), ctx.has_input(5)));
  (void)rule;
  const TensorInfo& q = ctx.input(0);
  if (!dtype_is_float(q.dtype)) return invalid_model(op + ": query must be floating point");
  if (ctx.input(1).dtype != q.dtype || ctx.input(2).dtype != q.dtype)
    return invalid_model(op + ": query, key and value must share one type");
  for (int i = 0; i < 3; ++i)
    if (ctx.input(i).rank_known && ctx.input(i).shape.size() != 3)
      return invalid_model(op + ": query, key and value must be 3-D (batch, seq, heads*head_size)");
  const int64_t qh = ctx.attrs().get_int("q_num_heads").value();
  const int64_t kvh = ctx.attrs().get_int("kv_num_heads").value();
  const DataType state_type = ctx.has_input(3) ? ctx.input(3).dtype : q.dtype;
  if (!q.rank_known || !ctx.input(2).rank_known) {
    ctx.output(0).dtype = q.dtype;
    ctx.output(0).rank_known = false;
    if (ctx.num_outputs() > 1) {
      ctx.output(1).dtype = state_type;
      ctx.output(1).rank_known = false;
    }
    return Status::Ok();
  }
  const Dim dk = div_dim(ctx, q.shape[2], qh);
  const Dim dv = div_dim(ctx, ctx.input(2).shape[2], kvh);
  const Dim hidden = dv.is_static() ? Dim(dv.value * qh) : ctx.fresh_dim();
  ctx.output(0) = make_info(q.dtype, {q.shape[0], q.shape[1], hidden});
  if (ctx.num_outputs() > 1) ctx.output(1) = make_info(state_type, {q.shape[0], Dim(kvh), dk, dv});
  return Status::Ok();
}

Status linear_attention_compute(ComputeContext& ctx) {
  const std::string op = "LinearAttention";
  KILN_ASSIGN_OR_RETURN(LinAttnRule rule, linear_attention_rule(ctx.attrs(), ctx.has_input(4), ctx.has_input(5)));
  const int64_t qh = ctx.attrs().get_int("q_num_heads").value();
  const int64_t kvh = ctx.attrs().get_int("kv_num_heads").value();
  const Tensor& q = ctx.input(0);
  const Tensor& k = ctx.input(1);
  const Tensor& v = ctx.input(2);
  if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3)
    return invalid_argument(op + ": query, key and value must be 3-D");
  const int64_t B = q.dim(0), T = q.dim(1);
  if (q.dim(2) % qh != 0 || k.dim(2) % kvh != 0 || v.dim(2) % kvh != 0)
    return invalid_argument(op + ": hidden sizes are not divisible by the head counts");
  const int64_t dk = q.dim(2) / qh, dv = v.dim(2) / kvh, group = qh / kvh;
  if (k.dim(2) / kvh != dk || k.dim(0) != B || v.dim(0) != B || k.dim(1) != T || v.dim(1) != T)
    return invalid_argument(op + ": key " + dims_to_string(k.shape()) + " and value " + dims_to_string(v.shape()) +
                            " do not match query " + dims_to_string(q.shape()));
  const std::vector<double> qv = load(q), kv = load(k), vv = load(v);

  // decay holds one value per kv head or one per key dimension; dstride picks which.
  std::vector<double> decay;
  int64_t decay_last = 0;
  if (rule.gating) {
    const Tensor& d = ctx.input(4);
    decay_last = d.rank() == 3 ? d.dim(2) : -1;
    if (d.rank() != 3 || d.dim(0) != B || d.dim(1) != T || (decay_last != kvh && decay_last != kvh * dk))
      return invalid_argument(op + ": decay must be [batch, seq, kv_num_heads] or [batch, seq, kv_num_heads*head_size], got " +
                              dims_to_string(d.shape()));
    decay = load(d);
  }
  std::vector<double> beta;
  int64_t beta_last = 0;
  if (rule.delta) {
    const Tensor& bt = ctx.input(5);
    beta_last = bt.rank() == 3 ? bt.dim(2) : -1;
    if (bt.rank() != 3 || bt.dim(0) != B || bt.dim(1) != T || (beta_last != kvh && beta_last != 1))
      return invalid_argument(op + ": beta must be [batch, seq, kv_num_heads] or [batch, seq, 1], got " +
                              dims_to_string(bt.shape()));
    beta = load(bt);
  }

  const std::vector<int64_t> state_shape = {B, kvh, dk, dv};
  std::vector<double> S(static_cast<size_t>(B * kvh * dk * dv), 0.0);
  DataType state_type = q.dtype();
  if (ctx.has_input(3)) {
    const Tensor& ps = ctx.input(3);
    if (ps.shape() != state_shape)
      return invalid_argument(op + ": past_state " + dims_to_string(ps.shape()) + " must be " + dims_to_string(state_shape));
    S = load(ps);
    state_type = ps.dtype();
  }
  KILN_ASSIGN_OR_RETURN(float scale_attr, ctx.attrs().get_float("scale", 0.0f));
  // A scale of 0 means "unset" in the definition, falling back to 1/sqrt(head_size).
  const double scale = scale_attr == 0.0f ? 1.0 / std::sqrt(static_cast<double>(dk)) : static_cast<double>(scale_attr);

  std::vector<double> out(static_cast<size_t>(B * T * qh * dv), 0.0);
  std::vector<double> vt(static_cast<size_t>(dv));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < kvh; ++h) {
        double* st = S.data() + (b * kvh + h) * dk * dv;
        const double* kt = kv.data() + (b * T + t) * kvh * dk + h * dk;
        const double* vsrc = vv.data() + (b * T + t) * kvh * dv + h * dv;
        if (rule.gating)
          for (int64_t i = 0; i < dk; ++i) {
            const double g = decay_last == kvh ? decay[(b * T + t) * kvh + h] : decay[((b * T + t) * kvh + h) * dk + i];
            const double f = std::exp(g);
            for (int64_t j = 0; j < dv; ++j) st[i * dv + j] *= f;
          }
        for (int64_t j = 0; j < dv; ++j) vt[j] = vsrc[j];
        if (rule.delta) {
          const double be = beta[(b * T + t) * beta_last + (beta_last == 1 ? 0 : h)];
          for (int64_t j = 0; j < dv; ++j) {
            double retrieved = 0;
            for (int64_t i = 0; i < dk; ++i) retrieved += st[i * dv + j] * kt[i];
            vt[j] = be * (vt[j] - retrieved);
          }
        }
        for (int64_t i = 0; i < dk; ++i)
          for (int64_t j = 0; j < dv; ++j) st[i * dv + j] += kt[i] * vt[j];
        // Query heads of one group read their shared kv head's state right after its update.
        for (int64_t g = 0; g < group; ++g) {
          const int64_t hq = h * group + g;
          const double* qt = qv.data() + (b * T + t) * qh * dk + hq * dk;
          double* o = out.data() + (b * T + t) * qh * dv + hq * dv;
          for (int64_t j = 0; j < dv; ++j) {
            double acc = 0;
            for (int64_t i = 0; i < dk; ++i) acc += qt[i] * st[i * dv + j];
            o[j] = scale * acc;
          }
        }
      }
    }
  KILN_RETURN_IF_ERROR(store(ctx.allocate_output(0, q.dtype(), {B, T, qh * dv}), out));
  if (ctx.num_outputs() > 1) KILN_RETURN_IF_ERROR(store(ctx.allocate_output(1, state_type, state_shape), S));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// CausalConvWithState

Status causal_conv_infer(InferContext& ctx) {
  const std::string op = "CausalConvWithState";
  KILN_RETURN_IF_ERROR(string_attr_in(op, ctx.attrs(), "activation", "none", {"none", "silu", "swish"}).status());
  const TensorInfo& x = ctx.input(0);
  const TensorInfo& w = ctx.input(1);
  if (!dtype_is_float(x.dtype)) return invalid_model(op + ": input must be floating point");
  if (w.dtype != x.dtype) return invalid_model(op + ": input and weight must share one type");
  if ((x.rank_known && x.shape.size() != 3) || (w.rank_known && w.shape.size() != 3))
    return invalid_model(op + ": input must be [batch, channels, length] and weight [channels, 1, kernel]");
  ctx.output(0) = x;
  ctx.output(0).value.reset();
  ctx.output(0).constant = nullptr;
  if (ctx.num_outputs() > 1) {
    if (!x.rank_known || !w.rank_known) {
      ctx.output(1).dtype = x.dtype;
      ctx.output(1).rank_known = false;
    } else {
      const Dim kk = w.shape[2].is_static() ? Dim(w.shape[2].value - 1) : ctx.fresh_dim();
      ctx.output(1) = make_info(x.dtype, {x.shape[0], x.shape[1], kk});
    }
  }
  return Status::Ok();
}

Status causal_conv_compute(ComputeContext& ctx) {
  const std::string op = "CausalConvWithState";
  KILN_ASSIGN_OR_RETURN(std::string act, string_attr_in(op, ctx.attrs(), "activation", "none", {"none", "silu", "swish"}));
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  if (x.rank() != 3 || w.rank() != 3) return invalid_argument(op + ": input and weight must be 3-D");
  const int64_t B = x.dim(0), C = x.dim(1), L = x.dim(2), K = w.dim(2);
  if (w.dim(0) != C || w.dim(1) != 1 || K < 1)
    return invalid_argument(op + ": weight " + dims_to_string(w.shape()) + " must be [" + std::to_string(C) + ", 1, kernel]");
  const std::vector<double> xv = load(x), wv = load(w);
  std::vector<double> bias(static_cast<size_t>(C), 0.0);
  if (ctx.has_input(2)) {
    if (ctx.input(2).numel() != C) return invalid_argument(op + ": bias must hold one value per channel");
    bias = load(ctx.input(2));
  }
  const int64_t P = K - 1, W = P + L;
  // The padded sequence is past state (zeros when absent) followed by the new input.
  std::vector<double> padded(static_cast<size_t>(B * C * W), 0.0);
  if (ctx.has_input(3)) {
    const Tensor& ps = ctx.input(3);
    if (ps.shape() != std::vector<int64_t>{B, C, P})
      return invalid_argument(op + ": past_state " + dims_to_string(ps.shape()) + " must be " +
                              dims_to_string({B, C, P}));
    const std::vector<double> pv = load(ps);
    for (int64_t bc = 0; bc < B * C; ++bc)
      for (int64_t i = 0; i < P; ++i) padded[bc * W + i] = pv[bc * P + i];
  }
  for (int64_t bc = 0; bc < B * C; ++bc)
    for (int64_t i = 0; i < L; ++i) padded[bc * W + P + i] = xv[bc * L + i];
  const bool silu = act != "none";
  std::vector<double> out(static_cast<size_t>(B * C * L));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      const double* row = padded.data() + (b * C + c) * W;
      for (int64_t t = 0; t < L; ++t) {
        double acc = bias[c];
        for (int64_t j = 0; j < K; ++j) acc += wv[c * K + j] * row[t + j];
        // The definition materializes the convolution in the input type before the activation.
        acc = round_to(x.dtype(), acc);
        if (silu) acc = acc / (1.0 + std::exp(-acc));
        out[(b * C + c) * L + t] = acc;
      }
    }
  KILN_RETURN_IF_ERROR(store(ctx.allocate_output(0, x.dtype(), {B, C, L}), out));
  if (ctx.num_outputs() > 1) {
    std::vector<double> st(static_cast<size_t>(B * C * P));
    for (int64_t bc = 0; bc < B * C; ++bc)
      for (int64_t i = 0; i < P; ++i) st[bc * P + i] = padded[bc * W + L + i];
    KILN_RETURN_IF_ERROR(store(ctx.allocate_output(1, x.dtype(), {B, C, P}), st));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// FlexAttention

// softmax_precision names the type the softmax runs in; left out, half types are promoted to float.
Result<DataType> flex_softmax_type(const Attributes& attrs, DataType in) {
  if (!attrs.has("softmax_precision"))
    return in == DataType::kHALF || in == DataType::kBF16 ? DataType::kFLOAT : in;
  KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("softmax_precision"));
  if (code != 1 && code != 10 && code != 11 && code != 16)
    return invalid_model("FlexAttention: attribute softmax_precision must be one of {1, 10, 11, 16}, got " +
                         std::to_string(code));
  DataType dt;
  dtype_from_onnx_code(code, &dt);
  return dt;
}

Status flex_check_mods(const Attributes& attrs) {
  for (const char* name : {"score_mod", "prob_mod"}) {
    if (!attrs.has(name)) continue;
    KILN_ASSIGN_OR_RETURN(auto g, attrs.get_graph(name));
    if (g->output_ports().size() != 1)
      return invalid_model(std::string("FlexAttention: subgraph '") + name + "' must have exactly one output, it has " +
                           std::to_string(g->output_ports().size()));
  }
  return Status::Ok();
}

Status flex_infer(InferContext& ctx) {
  const std::string op = "FlexAttention";
  if (explicit_input_count(ctx.attrs(), ctx.num_inputs()) != 3) return invalid_model(op + ": takes exactly Q, K and V");
  KILN_RETURN_IF_ERROR(flex_check_mods(ctx.attrs()));
  const TensorInfo& q = ctx.input(0);
  const TensorInfo& k = ctx.input(1);
  const TensorInfo& v = ctx.input(2);
  if (!dtype_is_float(q.dtype)) return invalid_model(op + ": Q must be floating point");
  if (k.dtype != q.dtype || v.dtype != q.dtype) return invalid_model(op + ": Q, K and V must share one type");
  KILN_RETURN_IF_ERROR(flex_softmax_type(ctx.attrs(), q.dtype).status());
  for (int i = 0; i < 3; ++i)
    if (ctx.input(i).rank_known && ctx.input(i).shape.size() != 4)
      return invalid_model(op + ": Q, K and V must be 4-D (batch, heads, seq, head_size)");
  if (!q.rank_known || !v.rank_known) {
    ctx.output(0).dtype = v.dtype;
    ctx.output(0).rank_known = false;
    return Status::Ok();
  }
  ctx.output(0) = make_info(v.dtype, {q.shape[0], q.shape[1], q.shape[2], v.shape[3]});
  return Status::Ok();
}

Status flex_compute(ComputeContext& ctx) {
  const std::string op = "FlexAttention";
  const Tensor& q = ctx.input(0);
  const Tensor& k = ctx.input(1);
  const Tensor& v = ctx.input(2);
  if (q.rank() != 4 || k.rank() != 4 || v.rank() != 4) return invalid_argument(op + ": Q, K and V must be 4-D");
  const int64_t B = q.dim(0), Hq = q.dim(1), L = q.dim(2), E = q.dim(3);
  const int64_t Hkv = k.dim(1), S = k.dim(2), Ev = v.dim(3);
  if (k.dim(0) != B || v.dim(0) != B || v.dim(1) != Hkv || v.dim(2) != S || k.dim(3) != E)
    return invalid_argument(op + ": K " + dims_to_string(k.shape()) + " and V " + dims_to_string(v.shape()) +
                            " do not match Q " + dims_to_string(q.shape()));
  if (Hkv <= 0 || Hq % Hkv != 0) return invalid_argument(op + ": query heads must be a multiple of key/value heads");
  KILN_ASSIGN_OR_RETURN(DataType sm, flex_softmax_type(ctx.attrs(), q.dtype()));
  const DataType dt = q.dtype();
  const float scale = ctx.attrs().has("scale") ? ctx.attrs().get_float("scale").value()
                                               : static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
  // Q and K are each pre-scaled by sqrt(scale), computed in float and stored in the input type.
  const double rs = round_to(dt, std::sqrt(scale));
  std::vector<double> qv = load(q), kv = load(k);
  const std::vector<double> vv = load(v);
  for (auto& x : qv) x = round_to(dt, x * rs);
  for (auto& x : kv) x = round_to(dt, x * rs);
  const int64_t group = Hq / Hkv;
  std::vector<double> scores(static_cast<size_t>(B * Hq * L * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < S; ++j) {
          const double* qr = qv.data() + ((b * Hq + h) * L + i) * E;
          const double* kr = kv.data() + ((b * Hkv + h / group) * S + j) * E;
          double acc = 0;
          for (int64_t e = 0; e < E; ++e) acc += qr[e] * kr[e];
          scores[((b * Hq + h) * L + i) * S + j] = round_to(sm, round_to(dt, acc));
        }
  const std::vector<int64_t> sshape = {B, Hq, L, S};
  auto apply_mod = [&](const char* name, std::vector<double>& vals) -> Status {
    if (!ctx.attrs().has(name)) return Status::Ok();
    Tensor in(sm, sshape);
    KILN_RETURN_IF_ERROR(store(in, vals));
    KILN_ASSIGN_OR_RETURN(auto outs, ctx.run_subgraph(name, {std::move(in)}));
    if (outs.size() != 1 || outs[0].numel() != static_cast<int64_t>(vals.size()))
      return invalid_argument(op + ": subgraph '" + name + "' must return one tensor of shape " + dims_to_string(sshape));
    for (size_t i = 0; i < vals.size(); ++i) vals[i] = round_to(sm, outs[0].get_f64(static_cast<int64_t>(i)));
    return Status::Ok();
  };
  KILN_RETURN_IF_ERROR(apply_mod("score_mod", scores));
  for (int64_t r = 0; r < B * Hq * L; ++r) {
    double* row = scores.data() + r * S;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < S; ++j) mx = std::max(mx, row[j]);
    double sum = 0;
    for (int64_t j = 0; j < S; ++j) sum += (row[j] = std::exp(row[j] - mx));
    for (int64_t j = 0; j < S; ++j) row[j] = round_to(sm, row[j] / sum);
  }
  KILN_RETURN_IF_ERROR(apply_mod("prob_mod", scores));
  std::vector<double> out(static_cast<size_t>(B * Hq * L * Ev));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < L; ++i) {
        const double* p = scores.data() + ((b * Hq + h) * L + i) * S;
        for (int64_t e = 0; e < Ev; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < S; ++j) acc += p[j] * round_to(sm, vv[((b * Hkv + h / group) * S + j) * Ev + e]);
          out[((b * Hq + h) * L + i) * Ev + e] = round_to(sm, acc);
        }
      }
  KILN_RETURN_IF_ERROR(store(ctx.allocate_output(0, v.dtype(), {B, Hq, L, Ev}), out));
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(LinearAttention) {
  OpSchema s;
  s.name = "LinearAttention";
  s.since_opset = 27;
  s.min_inputs = 3;
  s.max_inputs = 6;
  s.min_outputs = 1;
  s.max_outputs = 2;
  // chunk_size only tunes how an implementation blocks the recurrence; the result does not depend on it.
  s.attrs = {{"chunk_size", AttrType::kINT},
             {"kv_num_heads", AttrType::kINT, AttrRequirement::kRequired},
             {"q_num_heads", AttrType::kINT, AttrRequirement::kRequired},
             {"scale", AttrType::kFLOAT},
             {"update_rule", AttrType::kSTRING}};
  s.dtypes = float_types();
  s.infer = linear_attention_infer;
  s.compute = linear_attention_compute;
  return s;
}

KILN_REGISTER_OP(CausalConvWithState) {
  OpSchema s;
  s.name = "CausalConvWithState";
  s.since_opset = 27;
  s.min_inputs = 2;
  s.max_inputs = 4;
  s.min_outputs = 1;
  s.max_outputs = 2;
  s.attrs = {{"activation", AttrType::kSTRING}};
  s.dtypes = float_types();
  s.infer = causal_conv_infer;
  s.compute = causal_conv_compute;
  return s;
}

KILN_REGISTER_OP(FlexAttention) {
  OpSchema s;
  s.name = "FlexAttention";
  s.domain = "ai.onnx.preview";
  s.since_opset = 1;
  s.min_inputs = 3;
  s.max_inputs = -1;  // values captured by score_mod/prob_mod follow Q, K and V
  s.attrs = {{"scale", AttrType::kFLOAT},
             {"score_mod", AttrType::kGRAPH},
             {"prob_mod", AttrType::kGRAPH},
             {"softmax_precision", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = flex_infer;
  s.compute = flex_compute;
  return s;
}

}  // namespace kiln::ops
