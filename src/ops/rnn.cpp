// Recurrent layers RNN, GRU and LSTM: attribute checks, symbolic shape inference and reference CPU kernels.

#include <algorithm>
#include <cctype>
#include <cmath>

#include "ops/broadcast_loop.h"
#include "ops/gemm_util.h"

namespace kiln::ops {
namespace {

enum class Cell { kRnn, kGru, kLstm };

const char* cell_name(Cell c) { return c == Cell::kRnn ? "RNN" : c == Cell::kGru ? "GRU" : "LSTM"; }
// Weight blocks stacked along W's and R's second axis: RNN one, GRU z|r|h, LSTM i|o|f|c.
int gate_count(Cell c) { return c == Cell::kRnn ? 1 : c == Cell::kGru ? 3 : 4; }
// Activations per direction: RNN f; GRU f, g; LSTM f, g, h.
int acts_per_direction(Cell c) { return c == Cell::kRnn ? 1 : c == Cell::kGru ? 2 : 3; }

enum class ActKind {
  kRelu, kTanh, kSigmoid, kAffine, kLeakyRelu, kThresholdedRelu, kScaledTanh, kHardSigmoid, kElu, kSoftsign,
  kSoftplus
};

struct ActDef {
  const char* name;
  ActKind kind;
  bool takes_alpha, takes_beta;
  float alpha, beta;  // defaults, as for the standalone ONNX operators
};

const ActDef kActDefs[] = {
    {"Relu", ActKind::kRelu, false, false, 0.f, 0.f},
    {"Tanh", ActKind::kTanh, false, false, 0.f, 0.f},
    {"Sigmoid", ActKind::kSigmoid, false, false, 0.f, 0.f},
    {"Affine", ActKind::kAffine, true, true, 1.f, 0.f},
    {"LeakyRelu", ActKind::kLeakyRelu, true, false, 0.01f, 0.f},
    {"ThresholdedRelu", ActKind::kThresholdedRelu, true, false, 1.f, 0.f},
    {"ScaledTanh", ActKind::kScaledTanh, true, true, 1.f, 1.f},
    {"HardSigmoid", ActKind::kHardSigmoid, true, true, 0.2f, 0.5f},
    {"Elu", ActKind::kElu, true, false, 1.f, 0.f},
    {"Softsign", ActKind::kSoftsign, false, false, 0.f, 0.f},
    {"Softplus", ActKind::kSoftplus, false, false, 0.f, 0.f},
};

struct Activation {
  ActKind kind = ActKind::kTanh;
  double alpha = 0, beta = 0;
};

template <typename C>
C activate(const Activation& a, C x) {
  switch (a.kind) {
    case ActKind::kRelu: return x > 0 ? x : C(0);
    case ActKind::kTanh: return std::tanh(x);
    case ActKind::kSigmoid:
      // Split by sign so exp never overflows.
      if (x >= 0) return C(1) / (C(1) + std::exp(-x));
      else { C e = std::exp(x); return e / (C(1) + e); }
    case ActKind::kAffine: return C(a.alpha) * x + C(a.beta);
    case ActKind::kLeakyRelu: return x >= 0 ? x : C(a.alpha) * x;
    case ActKind::kThresholdedRelu: return x > C(a.alpha) ? x : C(0);
    case ActKind::kScaledTanh: return C(a.alpha) * std::tanh(C(a.beta) * x);
    case ActKind::kHardSigmoid: return std::clamp(C(a.alpha) * x + C(a.beta), C(0), C(1));
    case ActKind::kElu: return x >= 0 ? x : C(a.alpha) * (std::exp(x) - C(1));
    case ActKind::kSoftsign: return x / (C(1) + std::fabs(x));
    case ActKind::kSoftplus: return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
  }
  return x;
}

struct Config {
  Cell cell = Cell::kRnn;
  int num_dir = 1;
  bool reverse = false;        // single-direction layer running from the last step back
  int64_t hidden = -1;         // hidden_size attribute, -1 when absent
  bool has_clip = false;
  double clip = 0;
  int64_t layout = 0;          // 1: batch-major X, Y, initial and final states (opset 14)
  bool linear_before_reset = false;
  bool input_forget = false;
  std::vector<Activation> acts;  // num_dir * acts_per_direction, direction-major
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Result<Config> parse_config(Cell cell, const Attributes& attrs) {
  const std::string op = cell_name(cell);
  Config cfg;
  cfg.cell = cell;
  KILN_ASSIGN_OR_RETURN(std::string dir, attrs.get_string("direction", "forward"));
  if (dir == "forward") cfg.num_dir = 1;
  else if (dir == "reverse") { cfg.num_dir = 1; cfg.reverse = true; }
  else if (dir == "bidirectional") cfg.num_dir = 2;
  else
    return invalid_model(op + ": attribute 'direction' is \"" + dir +
                         "\"; allowed values: forward, reverse, bidirectional");
  KILN_ASSIGN_OR_RETURN(cfg.hidden, attrs.get_int("hidden_size", -1));
  if (attrs.has("hidden_size") && cfg.hidden <= 0)
    return invalid_model(op + ": attribute 'hidden_size' must be positive but is " + std::to_string(cfg.hidden));
  if (attrs.has("clip")) {
    KILN_ASSIGN_OR_RETURN(float clip, attrs.get_float("clip"));
    if (!(clip > 0)) return invalid_model(op + ": attribute 'clip' must be positive but is " + std::to_string(clip));
    cfg.has_clip = true;
    cfg.clip = clip;
  }
  KILN_ASSIGN_OR_RETURN(cfg.layout, attrs.get_int("layout", 0));
  if (cfg.layout != 0 && cfg.layout != 1)
    return invalid_model(op + ": attribute 'layout' is " + std::to_string(cfg.layout) + "; allowed values: 0, 1");
  if (cell == Cell::kGru) {
    KILN_ASSIGN_OR_RETURN(int64_t lbr, attrs.get_int("linear_before_reset", 0));
    cfg.linear_before_reset = lbr != 0;
  }
  if (cell == Cell::kLstm) {
    KILN_ASSIGN_OR_RETURN(int64_t inf, attrs.get_int("input_forget", 0));
    if (inf != 0 && inf != 1)
      return invalid_model(op + ": attribute 'input_forget' is " + std::to_string(inf) + "; allowed values: 0, 1");
    cfg.input_forget = inf != 0;
  }

  const int per_dir = acts_per_direction(cell);
  std::vector<std::string> names;
  if (const Attribute* a = attrs.find("activations")) {
    if (a->type() != AttrType::kSTRINGS) return invalid_model(op + ": attribute 'activations' must be a list of strings");
    names = a->strings();
  } else {
    if (cell == Cell::kRnn) names = {"Tanh"};
    else if (cell == Cell::kGru) names = {"Sigmoid", "Tanh"};
    else names = {"Sigmoid", "Tanh", "Tanh"};
  }
  // One direction's list serves both directions of a bidirectional layer (as onnxruntime accepts).
  if (static_cast<int>(names.size()) == per_dir && cfg.num_dir == 2) {
    std::vector<std::string> twice = names;
    twice.insert(twice.end(), names.begin(), names.end());
    names = std::move(twice);
  }
  if (static_cast<int>(names.size()) != per_dir * cfg.num_dir)
    return invalid_model(op + ": attribute 'activations' has " + std::to_string(names.size()) + " entries; expected " +
                         std::to_string(per_dir * cfg.num_dir) + " (" + std::to_string(per_dir) + " per direction)");
  KILN_ASSIGN_OR_RETURN(std::vector<float> alphas, attrs.get_floats("activation_alpha", {}));
  KILN_ASSIGN_OR_RETURN(std::vector<float> betas, attrs.get_floats("activation_beta", {}));
  // Alpha and beta lists are consumed in activation order, only by the functions that take them.
  size_t ai = 0, bi = 0;
  for (const std::string& n : names) {
    const ActDef* def = nullptr;
    for (const ActDef& d : kActDefs)
      if (lower(d.name) == lower(n)) def = &d;
    if (!def) {
      std::string allowed;
      for (const ActDef& d : kActDefs) allowed += (allowed.empty() ? "" : ", ") + std::string(d.name);
      return invalid_model(op + ": activation \"" + n + "\" is not supported; allowed values: " + allowed);
    }
    Activation act;
    act.kind = def->kind;
    act.alpha = def->alpha;
    act.beta = def->beta;
    if (def->takes_alpha && ai < alphas.size()) act.alpha = alphas[ai++];
    if (def->takes_beta && bi < betas.size()) act.beta = betas[bi++];
    cfg.acts.push_back(act);
  }
  return cfg;
}

// ---- inference ----

Status check_rank(const InferContext& ctx, int i, size_t rank, const std::string& op, const char* what) {
  if (!ctx.has_input(i) || !ctx.input(i).rank_known) return Status::Ok();
  if (ctx.input(i).shape.size() != rank)
    return invalid_model(op + ": input " + what + " must have rank " + std::to_string(rank) + " but has shape " +
                         shape_to_string(ctx.input(i).shape));
  return Status::Ok();
}

Status check_dim(const Dim& got, const Dim& want, const std::string& op, const std::string& what) {
  if (got.is_static() && want.is_static() && got.value != want.value)
    return invalid_model(op + ": " + what + " is " + std::to_string(got.value) + " but must be " +
                         std::to_string(want.value));
  return Status::Ok();
}

Status infer_rnn(InferContext& ctx, Cell cell) {
  const std::string op = cell_name(cell);
  KILN_ASSIGN_OR_RETURN(Config cfg, parse_config(cell, ctx.attrs()));
  const TensorInfo& x = ctx.input(0);
  if (!dtype_is_float(x.dtype))
    return invalid_model(op + ": input X must be a floating-point type but is " + dtype_name(x.dtype));
  std::vector<int> same = {0, 1, 2};
  for (int i : {3, 5, 6, 7})
    if (ctx.has_input(i) && (i < 6 || cell == Cell::kLstm)) same.push_back(i);
  for (int i : same)
    if (!ctx.has_input(i)) return invalid_model(op + ": input " + std::to_string(i) + " is required");
  KILN_RETURN_IF_ERROR(check_same_dtype(ctx, op, same));
  if (ctx.has_input(4) && !dtype_is_integer(ctx.input(4).dtype))
    return invalid_model(op + ": input sequence_lens must be an integer tensor but is " + dtype_name(ctx.input(4).dtype));
  KILN_RETURN_IF_ERROR(check_rank(ctx, 0, 3, op, "X"));
  KILN_RETURN_IF_ERROR(check_rank(ctx, 1, 3, op, "W"));
  KILN_RETURN_IF_ERROR(check_rank(ctx, 2, 3, op, "R"));
  KILN_RETURN_IF_ERROR(check_rank(ctx, 3, 2, op, "B"));
  KILN_RETURN_IF_ERROR(check_rank(ctx, 4, 1, op, "sequence_lens"));
  KILN_RETURN_IF_ERROR(check_rank(ctx, 5, 3, op, "initial_h"));
  if (cell == Cell::kLstm) {
    KILN_RETURN_IF_ERROR(check_rank(ctx, 6, 3, op, "initial_c"));
    KILN_RETURN_IF_ERROR(check_rank(ctx, 7, 2, op, "P"));
  }

  const int64_t gates = gate_count(cell);
  Dim hidden;
  const TensorInfo& w = ctx.input(1);
  const TensorInfo& r = ctx.input(2);
  if (cfg.hidden > 0) hidden = Dim(cfg.hidden);
  else if (r.rank_known && (r.shape[2].is_static() || !r.shape[2].sym.empty())) hidden = r.shape[2];
  else if (w.rank_known && w.shape[1].is_static()) hidden = Dim(w.shape[1].value / gates);
  else hidden = ctx.fresh_dim();
  if (w.rank_known) {
    KILN_RETURN_IF_ERROR(check_dim(w.shape[0], Dim(cfg.num_dir), op, "W's first dimension (directions)"));
    if (hidden.is_static())
      KILN_RETURN_IF_ERROR(check_dim(w.shape[1], Dim(gates * hidden.value), op, "W's second dimension"));
    if (x.rank_known) KILN_RETURN_IF_ERROR(check_dim(w.shape[2], x.shape[2], op, "W's third dimension (input size)"));
  }
  if (r.rank_known) {
    KILN_RETURN_IF_ERROR(check_dim(r.shape[0], Dim(cfg.num_dir), op, "R's first dimension (directions)"));
    if (hidden.is_static()) {
      KILN_RETURN_IF_ERROR(check_dim(r.shape[1], Dim(gates * hidden.value), op, "R's second dimension"));
      KILN_RETURN_IF_ERROR(check_dim(r.shape[2], hidden, op, "R's third dimension (hidden size)"));
    }
  }
  if (ctx.has_input(3) && ctx.input(3).rank_known && hidden.is_static())
    KILN_RETURN_IF_ERROR(check_dim(ctx.input(3).shape[1], Dim(2 * gates * hidden.value), op, "B's second dimension"));

  Dim seq, batch;
  if (x.rank_known) {
    seq = x.shape[cfg.layout == 0 ? 0 : 1];
    batch = x.shape[cfg.layout == 0 ? 1 : 0];
  } else {
    seq = ctx.fresh_dim();
    batch = ctx.fresh_dim();
  }
  const Dim nd(cfg.num_dir);
  for (int i = 0; i < ctx.num_outputs(); ++i) {
    TensorInfo& out = ctx.output(i);
    out = TensorInfo{};
    out.dtype = x.dtype;
    if (i == 0) out.shape = cfg.layout == 0 ? Shape{seq, nd, batch, hidden} : Shape{batch, seq, nd, hidden};
    else out.shape = cfg.layout == 0 ? Shape{nd, batch, hidden} : Shape{batch, nd, hidden};
  }
  return Status::Ok();
}

// ---- compute ----

// out[M,N] = a[M,K] * b[N,K]^T + beta * out
template <typename T>
void gemm_nt(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* out, T beta) {
  if (m == 0 || n == 0 || k == 0) {
    for (int64_t i = 0; i < m * n; ++i) out[i] *= beta;
    return;
  }
  gemm(false, true, m, n, k, T(1), a, k, b, k, beta, out, n);
}

// All inputs converted to the compute type C and validated against X's sizes.
template <typename C>
struct Operands {
  int64_t seq = 0, batch = 0, input = 0, hidden = 0;
  Tensor x;                   // [seq, batch, input], seq-major whatever the layout
  Tensor w, r, b, h0, c0, p;  // b, h0, c0, p undefined when absent; h0/c0 direction-major [nd, batch, hidden]
  std::vector<int64_t> lens;  // per batch entry
};

template <typename C>
Tensor to_compute(const Tensor& t) {
  return t.dtype() == DTypeOf<C>::value ? t : t.cast(DTypeOf<C>::value);
}

// Swaps the first two axes of a rank-3 tensor (layout 1 <-> layout 0).
template <typename C>
Tensor swap01(const Tensor& t) {
  const int64_t a = t.dim(0), b = t.dim(1), c = t.dim(2);
  Tensor out(t.dtype(), {b, a, c});
  const C* src = t.data<C>();
  C* dst = out.data<C>();
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j) std::copy_n(src + (i * b + j) * c, c, dst + (j * a + i) * c);
  return out;
}

Status expect_shape(const Tensor& t, const std::vector<int64_t>& want, const std::string& op, const char* what) {
  if (t.shape() != want)
    return invalid_argument(op + ": input " + what + " has shape " + dims_to_string(t.shape()) + " but must be " +
                            dims_to_string(want));
  return Status::Ok();
}

template <typename C>
Result<Operands<C>> gather_operands(ComputeContext& ctx, const Config& cfg) {
  const std::string op = cell_name(cfg.cell);
  const int64_t gates = gate_count(cfg.cell), nd = cfg.num_dir;
  Operands<C> o;
  const Tensor& x = ctx.input(0);
  if (x.rank() != 3) return invalid_argument(op + ": input X must have rank 3 but has shape " + dims_to_string(x.shape()));
  if (ctx.input(2).rank() != 3)
    return invalid_argument(op + ": input R must have rank 3 but has shape " + dims_to_string(ctx.input(2).shape()));
  o.seq = x.dim(cfg.layout == 0 ? 0 : 1);
  o.batch = x.dim(cfg.layout == 0 ? 1 : 0);
  o.input = x.dim(2);
  o.hidden = cfg.hidden > 0 ? cfg.hidden : ctx.input(2).dim(2);
  const int64_t gh = gates * o.hidden;
  KILN_RETURN_IF_ERROR(expect_shape(ctx.input(1), {nd, gh, o.input}, op, "W"));
  KILN_RETURN_IF_ERROR(expect_shape(ctx.input(2), {nd, gh, o.hidden}, op, "R"));
  o.x = to_compute<C>(x);
  if (cfg.layout == 1) o.x = swap01<C>(o.x);
  o.w = to_compute<C>(ctx.input(1));
  o.r = to_compute<C>(ctx.input(2));
  if (ctx.has_input(3)) {
    KILN_RETURN_IF_ERROR(expect_shape(ctx.input(3), {nd, 2 * gh}, op, "B"));
    o.b = to_compute<C>(ctx.input(3));
  }
  o.lens.assign(static_cast<size_t>(o.batch), o.seq);
  if (ctx.has_input(4)) {
    KILN_RETURN_IF_ERROR(expect_shape(ctx.input(4), {o.batch}, op, "sequence_lens"));
    for (int64_t i = 0; i < o.batch; ++i) {
      o.lens[i] = ctx.input(4).get_i64(i);
      if (o.lens[i] < 0 || o.lens[i] > o.seq)
        return invalid_argument(op + ": sequence_lens[" + std::to_string(i) + "] = " + std::to_string(o.lens[i]) +
                                " is outside [0, " + std::to_string(o.seq) + "]");
    }
  }
  const std::vector<int64_t> state_shape =
      cfg.layout == 0 ? std::vector<int64_t>{nd, o.batch, o.hidden} : std::vector<int64_t>{o.batch, nd, o.hidden};
  if (ctx.has_input(5)) {
    KILN_RETURN_IF_ERROR(expect_shape(ctx.input(5), state_shape, op, "initial_h"));
    o.h0 = to_compute<C>(ctx.input(5));
    if (cfg.layout == 1) o.h0 = swap01<C>(o.h0);
  }
  if (cfg.cell == Cell::kLstm && ctx.has_input(6)) {
    KILN_RETURN_IF_ERROR(expect_shape(ctx.input(6), state_shape, op, "initial_c"));
    o.c0 = to_compute<C>(ctx.input(6));
    if (cfg.layout == 1) o.c0 = swap01<C>(o.c0);
  }
  if (cfg.cell == Cell::kLstm && ctx.has_input(7)) {
    KILN_RETURN_IF_ERROR(expect_shape(ctx.input(7), {nd, 3 * o.hidden}, op, "P"));
    o.p = to_compute<C>(ctx.input(7));
  }
  return o;
}

template <typename C>
C clip_value(const Config& cfg, C v) {
  return cfg.has_clip ? std::clamp(v, C(-cfg.clip), C(cfg.clip)) : v;
}

// Runs one direction over the whole batch. y: [seq, nd, batch, hidden] (rows outside a batch entry's length stay
// zero); h_out/c_out: [batch, hidden] final states.
template <typename C>
void run_direction(const Config& cfg, const Operands<C>& o, int d, bool reverse, C* y, C* h_out, C* c_out) {
  const int64_t S = o.seq, NB = o.batch, I = o.input, H = o.hidden, G = gate_count(cfg.cell);
  const int64_t GH = G * H, nd = cfg.num_dir;
  const C* w = o.w.template data<C>() + d * GH * I;
  const C* r = o.r.template data<C>() + d * GH * H;
  const C* wb = o.b.defined() ? o.b.template data<C>() + d * 2 * GH : nullptr;
  const C* rb = wb ? wb + GH : nullptr;
  const C* peep = o.p.defined() ? o.p.template data<C>() + d * 3 * H : nullptr;
  const Activation* act = &cfg.acts[static_cast<size_t>(d) * acts_per_direction(cfg.cell)];

  // Input projection for every time step at once: [S*NB, GH].
  std::vector<C> xw(static_cast<size_t>(S * NB * GH));
  gemm_nt(S * NB, GH, I, o.x.template data<C>(), w, xw.data(), C(0));
  if (wb)
    for (int64_t row = 0; row < S * NB; ++row)
      for (int64_t j = 0; j < GH; ++j) xw[row * GH + j] += wb[j];

  std::vector<C> h(static_cast<size_t>(NB * H), C(0)), c(static_cast<size_t>(NB * H), C(0));
  if (o.h0.defined()) std::copy_n(o.h0.template data<C>() + d * NB * H, NB * H, h.begin());
  if (o.c0.defined()) std::copy_n(o.c0.template data<C>() + d * NB * H, NB * H, c.begin());
  std::vector<C> hr(static_cast<size_t>(NB * GH));
  std::vector<C> rh, rh_proj;  // GRU without linear_before_reset: (r * h) and its projection by R_h
  if (cfg.cell == Cell::kGru && !cfg.linear_before_reset) {
    rh.resize(static_cast<size_t>(NB * H));
    rh_proj.resize(static_cast<size_t>(NB * H));
  }
  std::vector<C> zr(static_cast<size_t>(NB * 2 * H));  // GRU gate values z|r per batch entry

  for (int64_t s = 0; s < S; ++s) {
    gemm_nt(NB, GH, H, h.data(), r, hr.data(), C(0));
    auto time_of = [&](int64_t b) { return reverse ? o.lens[b] - 1 - s : s; };
    if (cfg.cell == Cell::kRnn) {
      for (int64_t b = 0; b < NB; ++b) {
        if (s >= o.lens[b]) continue;
        const int64_t t = time_of(b);
        const C* xg = &xw[(t * NB + b) * GH];
        for (int64_t j = 0; j < H; ++j) {
          C v = xg[j] + hr[b * GH + j] + (rb ? rb[j] : C(0));
          h[b * H + j] = activate(act[0], clip_value(cfg, v));
        }
        std::copy_n(&h[b * H], H, y + ((t * nd + d) * NB + b) * H);
      }
    } else if (cfg.cell == Cell::kGru) {
      for (int64_t b = 0; b < NB; ++b) {
        if (s >= o.lens[b]) continue;
        const C* xg = &xw[(time_of(b) * NB + b) * GH];
        for (int64_t j = 0; j < 2 * H; ++j) {
          C v = xg[j] + hr[b * GH + j] + (rb ? rb[j] : C(0));
          zr[b * 2 * H + j] = activate(act[0], clip_value(cfg, v));
        }
      }
      if (!cfg.linear_before_reset) {
        for (int64_t b = 0; b < NB; ++b)
          for (int64_t j = 0; j < H; ++j) rh[b * H + j] = zr[b * 2 * H + H + j] * h[b * H + j];
        gemm_nt(NB, H, H, rh.data(), r + 2 * H * H, rh_proj.data(), C(0));
      }
      for (int64_t b = 0; b < NB; ++b) {
        if (s >= o.lens[b]) continue;
        const int64_t t = time_of(b);
        const C* xg = &xw[(t * NB + b) * GH];
        for (int64_t j = 0; j < H; ++j) {
          const C z = zr[b * 2 * H + j], rg = zr[b * 2 * H + H + j];
          const C rbh = rb ? rb[2 * H + j] : C(0);
          const C rec = cfg.linear_before_reset ? rg * (hr[b * GH + 2 * H + j] + rbh) : rh_proj[b * H + j] + rbh;
          const C cand = activate(act[1], clip_value(cfg, xg[2 * H + j] + rec));
          h[b * H + j] = (C(1) - z) * cand + z * h[b * H + j];
        }
        std::copy_n(&h[b * H], H, y + ((t * nd + d) * NB + b) * H);
      }
    } else {
      for (int64_t b = 0; b < NB; ++b) {
        if (s >= o.lens[b]) continue;
        const int64_t t = time_of(b);
        const C* xg = &xw[(t * NB + b) * GH];
        const C* hg = &hr[b * GH];
        for (int64_t j = 0; j < H; ++j) {
          auto pre = [&](int gate) { return xg[gate * H + j] + hg[gate * H + j] + (rb ? rb[gate * H + j] : C(0)); };
          const C c_prev = c[b * H + j];
          const C i = activate(act[0], clip_value(cfg, pre(0) + (peep ? peep[j] * c_prev : C(0))));
          C f = activate(act[0], clip_value(cfg, pre(2) + (peep ? peep[2 * H + j] * c_prev : C(0))));
          if (cfg.input_forget) f = C(1) - i;
          const C cand = activate(act[1], clip_value(cfg, pre(3)));
          const C c_new = f * c_prev + i * cand;
          const C og = activate(act[0], clip_value(cfg, pre(1) + (peep ? peep[H + j] * c_new : C(0))));
          c[b * H + j] = c_new;
          h[b * H + j] = og * activate(act[2], c_new);
        }
        std::copy_n(&h[b * H], H, y + ((t * nd + d) * NB + b) * H);
      }
    }
  }
  std::copy(h.begin(), h.end(), h_out);
  std::copy(c.begin(), c.end(), c_out);
}

template <typename C>
Status compute_typed(ComputeContext& ctx, const Config& cfg) {
  KILN_ASSIGN_OR_RETURN(Operands<C> o, gather_operands<C>(ctx, cfg));
  const int64_t nd = cfg.num_dir, S = o.seq, NB = o.batch, H = o.hidden;
  const DataType cdt = DTypeOf<C>::value;
  Tensor y(cdt, {S, nd, NB, H}), yh(cdt, {nd, NB, H}), yc(cdt, {nd, NB, H});
  for (int d = 0; d < nd; ++d) {
    const bool reverse = cfg.num_dir == 2 ? d == 1 : cfg.reverse;
    run_direction<C>(cfg, o, d, reverse, y.data<C>(), yh.data<C>() + d * NB * H, yc.data<C>() + d * NB * H);
  }
  if (cfg.layout == 1) {
    // [S, nd, NB, H] -> [NB, S, nd, H]
    Tensor yt(cdt, {NB, S, nd, H});
    for (int64_t s = 0; s < S; ++s)
      for (int64_t d = 0; d < nd; ++d)
        for (int64_t b = 0; b < NB; ++b)
          std::copy_n(y.data<C>() + ((s * nd + d) * NB + b) * H, H, yt.data<C>() + ((b * S + s) * nd + d) * H);
    y = yt;
    yh = swap01<C>(yh);
    yc = swap01<C>(yc);
  }
  const DataType out_dt = ctx.input(0).dtype();
  Tensor* results[3] = {&y, &yh, &yc};
  for (int i = 0; i < ctx.num_outputs() && i < 3; ++i)
    ctx.set_output(i, out_dt == cdt ? *results[i] : results[i]->cast(out_dt));
  return Status::Ok();
}

OpSchema make_rnn(Cell cell) {
  OpSchema s;
  s.name = cell_name(cell);
  s.since_opset = 7;
  s.min_inputs = 3;
  s.max_inputs = cell == Cell::kLstm ? 8 : 6;
  s.min_outputs = 0;
  s.max_outputs = cell == Cell::kLstm ? 3 : 2;
  s.attrs = {{"activation_alpha", AttrType::kFLOATS}, {"activation_beta", AttrType::kFLOATS},
             {"activations", AttrType::kSTRINGS},     {"clip", AttrType::kFLOAT},
             {"direction", AttrType::kSTRING},        {"hidden_size", AttrType::kINT},
             {"layout", AttrType::kINT}};
  if (cell == Cell::kGru) s.attrs.push_back({"linear_before_reset", AttrType::kINT});
  if (cell == Cell::kLstm) s.attrs.push_back({"input_forget", AttrType::kINT});
  s.dtypes = float_types();
  s.infer = [cell](InferContext& ctx) { return infer_rnn(ctx, cell); };
  s.compute = [cell](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(Config cfg, parse_config(cell, ctx.attrs()));
    const DataType dt = ctx.input(0).dtype();
    if (dt == DataType::kDOUBLE) return compute_typed<double>(ctx, cfg);
    if (dtype_is_float(dt)) return compute_typed<float>(ctx, cfg);
    return unsupported(std::string(cell_name(cell)) + ": data type " + dtype_name(dt) + " is not supported");
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(RNN) { return make_rnn(Cell::kRnn); }
KILN_REGISTER_OP(GRU) { return make_rnn(Cell::kGru); }
KILN_REGISTER_OP(LSTM) { return make_rnn(Cell::kLstm); }

}  // namespace kiln::ops
