// Swish, SwiGLU, AffineGrid, TensorScatter, DeformConv, the preview-training optimizers and two ai.onnx.ml ops.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

constexpr const char* kTrainingDomain = "ai.onnx.preview.training";
constexpr const char* kMlDomain = "ai.onnx.ml";

// Results are accumulated in double and narrowed once, so half/bfloat16 inputs round only at the end.
Tensor from_doubles(DataType t, const std::vector<int64_t>& shape, const std::vector<double>& v) {
  Tensor d(DataType::kDOUBLE, shape);
  std::copy(v.begin(), v.end(), d.data<double>());
  return t == DataType::kDOUBLE ? d : d.cast(t);
}

Status require_float(const std::string& op, const std::string& what, DataType dt) {
  if (dtype_is_float(dt)) return Status::Ok();
  return invalid_model(op + ": " + what + " must be a floating-point type but is " + std::string(dtype_name(dt)));
}

Result<std::string> string_one_of(const Attributes& attrs, const std::string& op, const std::string& name,
                                  const std::string& def, const std::vector<std::string>& allowed) {
  KILN_ASSIGN_OR_RETURN(std::string v, attrs.get_string(name, def));
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return v;
  std::string list;
  for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return invalid_model(op + ": attribute '" + name + "' is '" + v + "'; allowed values are " + list);
}

Result<bool> bool_attr(const Attributes& attrs, const std::string& op, const std::string& name) {
  KILN_ASSIGN_OR_RETURN(int64_t v, attrs.get_int(name, 0));
  if (v != 0 && v != 1)
    return invalid_model(op + ": attribute '" + name + "' is " + std::to_string(v) + "; allowed values are 0, 1");
  return v == 1;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

Dim dim_or_fresh(InferContext& ctx, const Dim& d) { return d.is_static() || !d.sym.empty() ? d : ctx.fresh_dim(); }

// --- AffineGrid ---

// Normalized [-1, 1] coordinate of sample i of n along one axis.
double grid_coord(int64_t i, int64_t n, bool align) {
  if (align) return n > 1 ? -1.0 + 2.0 * static_cast<double>(i) / static_cast<double>(n - 1) : -1.0;
  return -1.0 + (2.0 * static_cast<double>(i) + 1.0) / static_cast<double>(n);
}

// --- Training optimizers ---

// Inputs are R, T, then `groups` blocks of n tensors (X, G, states...); outputs are X_new then each new state.
Result<int> optimizer_count(const std::string& op, int num_inputs, int num_outputs, int groups) {
  const int tensors = num_inputs - 2;
  if (tensors <= 0 || tensors % groups != 0)
    return invalid_model(op + ": expects R, T and " + std::to_string(groups) + " equally long lists of tensors, got " +
                         std::to_string(num_inputs) + " inputs");
  const int n = tensors / groups;
  if (num_outputs != n * (groups - 1))
    return invalid_model(op + ": " + std::to_string(n) + " optimized tensors need " + std::to_string(n * (groups - 1)) +
                         " outputs, found " + std::to_string(num_outputs));
  return n;
}

// Output block b (0 = X, then the states) takes the shape and type of input block 0 or b + 1 (G is skipped).
int optimizer_source(int out, int n) {
  const int block = out / n, k = out % n;
  return 2 + (block == 0 ? 0 : block + 1) * n + k;
}

// Per-element update: x, g and the old states in, new x and new states out.
using UpdateFn = std::function<void(double r, int64_t t, double x, double g, const double* s, double* x_new, double* s_new)>;

OpSchema optimizer_schema(const std::string& name, int states, std::vector<AttrSpec> attrs,
                          std::function<Result<UpdateFn>(const Attributes&)> make) {
  OpSchema s;
  s.name = name;
  s.domain = kTrainingDomain;
  s.since_opset = 1;
  s.min_inputs = 3;
  s.max_inputs = -1;
  s.min_outputs = 1;
  s.max_outputs = -1;
  s.attrs = std::move(attrs);
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE};
  const int groups = 2 + states;
  s.infer = [name, groups, make](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(make(ctx.attrs()).status());
    KILN_ASSIGN_OR_RETURN(int n, optimizer_count(name, ctx.num_inputs(), ctx.num_outputs(), groups));
    for (int i = 2; i < ctx.num_inputs(); ++i) {
      if (!ctx.has_input(i)) return invalid_model(name + ": input " + std::to_string(i) + " is required");
      KILN_RETURN_IF_ERROR(require_float(name, "input " + std::to_string(i), ctx.input(i).dtype));
    }
    for (int o = 0; o < ctx.num_outputs(); ++o) ctx.output(o) = ctx.input(optimizer_source(o, n));
    for (auto& o : ctx.outputs()) { o.value.reset(); o.constant = nullptr; }
    return Status::Ok();
  };
  s.compute = [name, groups, states, make](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(UpdateFn fn, make(ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(int n, optimizer_count(name, ctx.num_inputs(), ctx.num_outputs(), groups));
    const double r = ctx.input(0).get_f64(0);
    const int64_t t = ctx.input(1).get_i64(0);
    for (int k = 0; k < n; ++k) {
      const Tensor& x = ctx.input(2 + k);
      const Tensor& g = ctx.input(2 + n + k);
      const int64_t m = x.numel();
      if (g.numel() != m) return invalid_model(name + ": X and G of tensor " + std::to_string(k) + " differ in size");
      std::vector<const Tensor*> old(states);
      for (int j = 0; j < states; ++j) {
        old[j] = &ctx.input(2 + (2 + j) * n + k);
        if (old[j]->numel() != m) return invalid_model(name + ": a state of tensor " + std::to_string(k) + " differs in size from X");
      }
      std::vector<double> xn(m);
      std::vector<std::vector<double>> sn(states, std::vector<double>(m));
      double sv[2], so[2];
      for (int64_t i = 0; i < m; ++i) {
        for (int j = 0; j < states; ++j) sv[j] = old[j]->get_f64(i);
        fn(r, t, x.get_f64(i), g.get_f64(i), sv, &xn[i], so);
        for (int j = 0; j < states; ++j) sn[j][i] = so[j];
      }
      ctx.set_output(k, from_doubles(x.dtype(), x.shape(), xn));
      for (int j = 0; j < states; ++j) ctx.set_output((1 + j) * n + k, from_doubles(old[j]->dtype(), old[j]->shape(), sn[j]));
    }
    return Status::Ok();
  };
  return s;
}

// Bilinear sample of an H x W plane at pixel coordinates; taps outside the plane count as 0.
double bilinear_zero(const double* plane, int64_t h, int64_t w, double y, double x) {
  const double fy = std::floor(y), fx = std::floor(x);
  const auto y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
  const double ly = y - fy, lx = x - fx;
  double v = 0.0;
  for (int k = 0; k < 4; ++k) {
    const int64_t yy = y0 + (k >> 1), xx = x0 + (k & 1);
    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
    v += ((k >> 1) ? ly : 1 - ly) * ((k & 1) ? lx : 1 - lx) * plane[yy * w + xx];
  }
  return v;
}

struct DeformParams {
  std::vector<int64_t> kernel, strides, pads, dilations;
  int64_t group = 1, offset_group = 1;
};

Result<DeformParams> deform_params(const Attributes& a, const std::vector<int64_t>& w_spatial) {
  DeformParams p;
  const size_t r = w_spatial.size();
  KILN_ASSIGN_OR_RETURN(p.kernel, a.get_ints("kernel_shape", w_spatial));
  KILN_ASSIGN_OR_RETURN(p.strides, a.get_ints("strides", std::vector<int64_t>(r, 1)));
  KILN_ASSIGN_OR_RETURN(p.pads, a.get_ints("pads", std::vector<int64_t>(2 * r, 0)));
  KILN_ASSIGN_OR_RETURN(p.dilations, a.get_ints("dilations", std::vector<int64_t>(r, 1)));
  KILN_ASSIGN_OR_RETURN(p.group, a.get_int("group", 1));
  KILN_ASSIGN_OR_RETURN(p.offset_group, a.get_int("offset_group", 1));
  if (p.kernel.size() != r || p.strides.size() != r || p.pads.size() != 2 * r || p.dilations.size() != r)
    return invalid_model("DeformConv: kernel_shape, strides, dilations need " + std::to_string(r) +
                         " entries and pads " + std::to_string(2 * r));
  if (p.group < 1 || p.offset_group < 1) return invalid_model("DeformConv: group and offset_group must be >= 1");
  for (size_t i = 0; i < r; ++i)
    if (p.strides[i] < 1 || p.dilations[i] < 1 || p.kernel[i] < 1)
      return invalid_model("DeformConv: strides, dilations and kernel_shape must be >= 1");
  return p;
}

}  // namespace

KILN_REGISTER_OP(Swish) {
  OpSchema s;
  s.name = "Swish";
  s.since_opset = 24;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"alpha", AttrType::kFLOAT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(require_float("Swish", "X", ctx.input(0).dtype));
    KILN_RETURN_IF_ERROR(ctx.attrs().get_float("alpha", 1.f).status());
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(float alpha, ctx.attrs().get_float("alpha", 1.f));
    const Tensor& x = ctx.input(0);
    std::vector<double> out(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double v = x.get_f64(i);
      out[i] = v * sigmoid(alpha * v);
    }
    ctx.set_output(0, from_doubles(x.dtype(), x.shape(), out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SwiGLU) {
  OpSchema s;
  s.name = "SwiGLU";
  s.since_opset = 28;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"alpha", AttrType::kFLOAT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(require_float("SwiGLU", "A", ctx.input(0).dtype));
    KILN_RETURN_IF_ERROR(ctx.attrs().get_float("alpha", 1.f).status());
    if (ctx.input(1).dtype != ctx.input(0).dtype)
      return invalid_model("SwiGLU: A and B must have the same type, got " + std::string(dtype_name(ctx.input(0).dtype)) + " and " +
                           dtype_name(ctx.input(1).dtype));
    const auto& a = ctx.input(0).shape;
    const auto& b = ctx.input(1).shape;
    // No broadcasting: the gate pairs element for element.
    if (ctx.input(0).rank_known && ctx.input(1).rank_known) {
      bool bad = a.size() != b.size();
      for (size_t i = 0; !bad && i < a.size(); ++i) bad = a[i].is_static() && b[i].is_static() && a[i] != b[i];
      if (bad)
        return invalid_model("SwiGLU: A " + shape_to_string(a) + " and B " + shape_to_string(b) + " must have the same shape");
    }
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(float alpha, ctx.attrs().get_float("alpha", 1.f));
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(1);
    if (a.shape() != b.shape()) return invalid_model("SwiGLU: A and B must have the same shape");
    std::vector<double> out(a.numel());
    for (int64_t i = 0; i < a.numel(); ++i) {
      const double v = a.get_f64(i);
      out[i] = v * sigmoid(alpha * v) * b.get_f64(i);
    }
    ctx.set_output(0, from_doubles(a.dtype(), a.shape(), out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(AffineGrid) {
  OpSchema s;
  s.name = "AffineGrid";
  s.since_opset = 20;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"align_corners", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(bool_attr(ctx.attrs(), "AffineGrid", "align_corners").status());
    const TensorInfo& theta = ctx.input(0);
    KILN_RETURN_IF_ERROR(require_float("AffineGrid", "theta", theta.dtype));
    TensorInfo& o = ctx.output(0);
    o.dtype = theta.dtype;
    int spatial = -1;
    if (theta.rank_known) {
      if (theta.shape.size() != 3) return invalid_model("AffineGrid: theta must be 3-D, got " + shape_to_string(theta.shape));
      if (theta.shape[1].is_static()) spatial = static_cast<int>(theta.shape[1].value);
    }
    auto size = known_values(ctx.input(1));
    if (!size && ctx.input(1).shape.size() == 1 && ctx.input(1).shape[0].is_static())
      spatial = static_cast<int>(ctx.input(1).shape[0].value) - 2;
    if (size) {
      if (size->size() != 4 && size->size() != 5)
        return invalid_model("AffineGrid: size must have 4 (N,C,H,W) or 5 (N,C,D,H,W) entries");
      spatial = static_cast<int>(size->size()) - 2;
    }
    if (spatial != 2 && spatial != 3) {
      if (spatial >= 0) return invalid_model("AffineGrid: only 2-D and 3-D grids exist, got " + std::to_string(spatial));
      o.rank_known = false;
      return Status::Ok();
    }
    o.shape.clear();
    o.shape.push_back(dim_or_fresh(ctx, size ? (*size)[0] : (theta.rank_known ? theta.shape[0] : Dim())));
    for (int i = 0; i < spatial; ++i) o.shape.push_back(size ? dim_or_fresh(ctx, (*size)[2 + i]) : ctx.fresh_dim());
    o.shape.push_back(spatial);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(bool align, bool_attr(ctx.attrs(), "AffineGrid", "align_corners"));
    const Tensor& theta = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto size, tensor_to_ints(ctx.input(1)));
    if (size.size() != 4 && size.size() != 5)
      return invalid_model("AffineGrid: size must have 4 (N,C,H,W) or 5 (N,C,D,H,W) entries");
    const int sp = static_cast<int>(size.size()) - 2;
    const int64_t n = size[0];
    if (theta.rank() != 3 || theta.dim(0) != n || theta.dim(1) != sp || theta.dim(2) != sp + 1)
      return invalid_model("AffineGrid: theta must be [N," + std::to_string(sp) + "," + std::to_string(sp + 1) + "], got " +
                           dims_to_string(theta.shape()));
    // Grid axes run D, H, W (outermost first); the homogeneous point lists them as (x=W, y=H, z=D, 1).
    const int64_t d = sp == 3 ? size[2] : 1, h = size[sp == 3 ? 3 : 2], w = size[sp == 3 ? 4 : 3];
    const int64_t pts = d * h * w;
    std::vector<double> out(static_cast<size_t>(n * pts * sp));
    for (int64_t b = 0; b < n; ++b)
      for (int64_t zi = 0; zi < d; ++zi)
        for (int64_t yi = 0; yi < h; ++yi)
          for (int64_t xi = 0; xi < w; ++xi) {
            const double p[4] = {grid_coord(xi, w, align), grid_coord(yi, h, align),
                                 sp == 3 ? grid_coord(zi, d, align) : 1.0, 1.0};
            const int64_t base = ((b * pts) + (zi * h + yi) * w + xi) * sp;
            for (int r = 0; r < sp; ++r) {
              double acc = 0.0;
              for (int c = 0; c <= sp; ++c) acc += theta.get_f64((b * sp + r) * (sp + 1) + c) * p[c];
              out[base + r] = acc;
            }
          }
    std::vector<int64_t> shape{n};
    if (sp == 3) shape.push_back(d);
    shape.push_back(h);
    shape.push_back(w);
    shape.push_back(sp);
    ctx.set_output(0, from_doubles(theta.dtype(), shape, out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(TensorScatter) {
  OpSchema s;
  s.name = "TensorScatter";
  s.since_opset = 24;
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = {{"mode", AttrType::kSTRING}, {"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(string_one_of(ctx.attrs(), "TensorScatter", "mode", "linear", {"linear", "circular"}).status());
    const TensorInfo& past = ctx.input(0);
    if (ctx.input(1).dtype != past.dtype)
      return invalid_model("TensorScatter: update must have the type of past_cache (" + std::string(dtype_name(past.dtype)) + ")");
    if (past.rank_known) {
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -2));
      KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, static_cast<int64_t>(past.shape.size())));
      if (axis == 0) return invalid_model("TensorScatter: axis cannot be the batch axis 0");
    }
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(std::string mode,
                          string_one_of(ctx.attrs(), "TensorScatter", "mode", "linear", {"linear", "circular"}));
    const Tensor& past = ctx.input(0);
    const Tensor& upd = ctx.input(1);
    const int64_t rank = past.rank();
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -2));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, rank));
    if (axis == 0) return invalid_model("TensorScatter: axis cannot be the batch axis 0");
    if (upd.rank() != rank) return invalid_model("TensorScatter: update must have the rank of past_cache");
    for (int64_t i = 0; i < rank; ++i)
      if (i == axis ? upd.dim(i) > past.dim(i) : upd.dim(i) != past.dim(i))
        return invalid_model("TensorScatter: update " + dims_to_string(upd.shape()) + " does not fit past_cache " +
                             dims_to_string(past.shape()) + " along axis " + std::to_string(i));
    const int64_t batch = past.dim(0), max_seq = past.dim(axis), seq = upd.dim(axis);
    std::vector<int64_t> write(static_cast<size_t>(batch), 0);
    if (ctx.has_input(2)) {
      KILN_ASSIGN_OR_RETURN(write, tensor_to_ints(ctx.input(2)));
      if (static_cast<int64_t>(write.size()) != batch)
        return invalid_model("TensorScatter: write_indices must hold one index per batch entry");
    }
    Tensor out = past.clone();
    const size_t es = dtype_size(past.dtype());
    const int64_t inner = product(past.shape(), axis + 1);
    const int64_t per_batch = product(past.shape(), 1, axis);  // rows between the batch axis and `axis`
    const auto* src = static_cast<const uint8_t*>(upd.raw());
    auto* dst = static_cast<uint8_t*>(out.raw());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t p = 0; p < per_batch; ++p)
        for (int64_t q = 0; q < seq; ++q) {
          int64_t pos = write[b] + q;
          if (mode == "circular") pos = ((pos % max_seq) + max_seq) % max_seq;
          if (pos < 0 || pos >= max_seq)
            return invalid_model("TensorScatter: write position " + std::to_string(pos) + " is outside the cache of " +
                                 std::to_string(max_seq));
          const int64_t row = b * per_batch + p;
          std::memcpy(dst + ((row * max_seq + pos) * inner) * es, src + ((row * seq + q) * inner) * es,
                      static_cast<size_t>(inner) * es);
        }
    ctx.set_output(0, std::move(out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Momentum) {
  return optimizer_schema(
      "Momentum", 1,
      {{"alpha", AttrType::kFLOAT, AttrRequirement::kRequired},
       {"beta", AttrType::kFLOAT, AttrRequirement::kRequired},
       {"mode", AttrType::kSTRING, AttrRequirement::kRequired},
       {"norm_coefficient", AttrType::kFLOAT, AttrRequirement::kRequired}},
      [](const Attributes& a) -> Result<UpdateFn> {
        KILN_ASSIGN_OR_RETURN(float alpha, a.get_float("alpha"));
        KILN_ASSIGN_OR_RETURN(float beta, a.get_float("beta"));
        KILN_ASSIGN_OR_RETURN(float norm, a.get_float("norm_coefficient"));
        KILN_ASSIGN_OR_RETURN(std::string mode, string_one_of(a, "Momentum", "mode", "", {"standard", "nesterov"}));
        const bool nesterov = mode == "nesterov";
        return UpdateFn([=](double r, int64_t t, double x, double g, const double* s, double* xn, double* sn) {
          const double greg = norm * x + g;
          // The first step (T == 0) takes the whole gradient: there is no history to damp yet.
          const double v = alpha * s[0] + (t > 0 ? beta : 1.0) * greg;
          sn[0] = v;
          *xn = nesterov ? x - r * (greg + alpha * v) : x - r * v;
        });
      });
}

KILN_REGISTER_OP(Adagrad) {
  return optimizer_schema(
      "Adagrad", 1,
      {{"decay_factor", AttrType::kFLOAT}, {"epsilon", AttrType::kFLOAT}, {"norm_coefficient", AttrType::kFLOAT}},
      [](const Attributes& a) -> Result<UpdateFn> {
        KILN_ASSIGN_OR_RETURN(float decay, a.get_float("decay_factor", 0.f));
        KILN_ASSIGN_OR_RETURN(float eps, a.get_float("epsilon", 1e-6f));
        KILN_ASSIGN_OR_RETURN(float norm, a.get_float("norm_coefficient", 0.f));
        return UpdateFn([=](double r, int64_t t, double x, double g, const double* s, double* xn, double* sn) {
          const double rate = r / (1.0 + static_cast<double>(t) * decay);
          const double greg = norm * x + g;
          sn[0] = s[0] + greg * greg;
          *xn = x - rate * greg / (std::sqrt(sn[0]) + eps);
        });
      });
}

KILN_REGISTER_OP(Adam) {
  return optimizer_schema(
      "Adam", 2,
      {{"alpha", AttrType::kFLOAT}, {"beta", AttrType::kFLOAT}, {"epsilon", AttrType::kFLOAT},
       {"norm_coefficient", AttrType::kFLOAT}, {"norm_coefficient_post", AttrType::kFLOAT}},
      [](const Attributes& a) -> Result<UpdateFn> {
        KILN_ASSIGN_OR_RETURN(float alpha, a.get_float("alpha", 0.9f));
        KILN_ASSIGN_OR_RETURN(float beta, a.get_float("beta", 0.999f));
        KILN_ASSIGN_OR_RETURN(float eps, a.get_float("epsilon", 1e-6f));
        KILN_ASSIGN_OR_RETURN(float norm, a.get_float("norm_coefficient", 0.f));
        KILN_ASSIGN_OR_RETURN(float post, a.get_float("norm_coefficient_post", 0.f));
        return UpdateFn([=](double r, int64_t t, double x, double g, const double* s, double* xn, double* sn) {
          const double greg = norm * x + g;
          sn[0] = alpha * s[0] + (1.0 - alpha) * greg;
          sn[1] = beta * s[1] + (1.0 - beta) * greg * greg;
          // Bias correction of both moments folds into the step size once T counts real steps.
          const double td = static_cast<double>(t);
          const double rate = t > 0 ? r * std::sqrt(1.0 - std::pow(double{beta}, td)) / (1.0 - std::pow(double{alpha}, td)) : r;
          *xn = (1.0 - post) * (x - rate * sn[0] / (std::sqrt(sn[1]) + eps));
        });
      });
}

KILN_REGISTER_OP(Binarizer) {
  OpSchema s;
  s.name = "Binarizer";
  s.domain = kMlDomain;
  s.since_opset = 1;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"threshold", AttrType::kFLOAT}};
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kINT64, DataType::kINT32};
  s.infer = [](InferContext& ctx) {
    DataType dt = ctx.input(0).dtype;
    if (dt != DataType::kFLOAT && dt != DataType::kDOUBLE && dt != DataType::kINT64 && dt != DataType::kINT32)
      return invalid_model("Binarizer: X must be float, double, int64 or int32, got " + std::string(dtype_name(dt)));
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(float thr, ctx.attrs().get_float("threshold", 0.f));
    const Tensor& x = ctx.input(0);
    std::vector<double> out(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) out[i] = x.get_f64(i) > thr ? 1.0 : 0.0;
    ctx.set_output(0, from_doubles(x.dtype(), x.shape(), out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(ArrayFeatureExtractor) {
  OpSchema s;
  s.name = "ArrayFeatureExtractor";
  s.domain = kMlDomain;
  s.since_opset = 1;
  s.min_inputs = s.max_inputs = 2;
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kINT64, DataType::kINT32};
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    const TensorInfo& y = ctx.input(1);
    if (y.dtype != DataType::kINT64) return invalid_model("ArrayFeatureExtractor: Y must be int64, got " + std::string(dtype_name(y.dtype)));
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!x.rank_known || x.shape.empty()) {
      o.rank_known = x.rank_known;
      if (x.rank_known) return invalid_model("ArrayFeatureExtractor: X must have rank >= 1");
      return Status::Ok();
    }
    Dim count = y.rank_known && shape_is_static(y.shape) ? Dim(product(static_dims(y.shape))) : ctx.fresh_dim();
    // A vector input reads as one row, so the result stays 2-D.
    if (x.shape.size() == 1) o.shape = {Dim(1), count};
    else { o.shape.assign(x.shape.begin(), x.shape.end() - 1); o.shape.push_back(count); }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto idx, tensor_to_ints(ctx.input(1).reshaped({ctx.input(1).numel()})));
    const int64_t f = x.dim(-1), rows = x.numel() / std::max<int64_t>(f, 1), k = static_cast<int64_t>(idx.size());
    for (auto i : idx)
      if (i < 0 || i >= f)
        return invalid_model("ArrayFeatureExtractor: index " + std::to_string(i) + " is outside [0, " + std::to_string(f) + ")");
    std::vector<int64_t> shape = x.rank() == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>(x.shape().begin(), x.shape().end() - 1);
    shape.push_back(k);
    Tensor& out = ctx.allocate_output(0, x.dtype(), shape);
    const size_t es = dtype_size(x.dtype());
    const auto* src = static_cast<const uint8_t*>(x.raw());
    auto* dst = static_cast<uint8_t*>(out.raw());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < k; ++j) std::memcpy(dst + (r * k + j) * es, src + (r * f + idx[j]) * es, es);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(DeformConv) {
  OpSchema s;
  s.name = "DeformConv";
  s.since_opset = 19;
  s.max_version = 22;  // 22 only widened the element types
  s.min_inputs = 3;
  s.max_inputs = 5;
  s.attrs = {{"dilations", AttrType::kINTS}, {"group", AttrType::kINT},   {"kernel_shape", AttrType::kINTS},
             {"offset_group", AttrType::kINT}, {"pads", AttrType::kINTS}, {"strides", AttrType::kINTS}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    const TensorInfo& w = ctx.input(1);
    const TensorInfo& off = ctx.input(2);
    KILN_RETURN_IF_ERROR(require_float("DeformConv", "X", x.dtype));
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!x.rank_known || !w.rank_known) { o.rank_known = false; return Status::Ok(); }
    if (x.shape.size() != 4 || w.shape.size() != 4)
      return unsupported("DeformConv: only 2-D deformable convolution is supported (X and W of rank 4)");
    std::vector<int64_t> ws = {w.shape[2].value, w.shape[3].value};
    KILN_ASSIGN_OR_RETURN(DeformParams p, deform_params(ctx.attrs(), ws));
    o.shape = {dim_or_fresh(ctx, x.shape[0]), dim_or_fresh(ctx, w.shape[0])};
    for (int i = 0; i < 2; ++i) {
      const Dim& in = x.shape[2 + i];
      if (in.is_static() && p.kernel[i] > 0) {
        const int64_t span = (p.kernel[i] - 1) * p.dilations[i] + 1;
        o.shape.push_back((in.value + p.pads[i] + p.pads[2 + i] - span) / p.strides[i] + 1);
      } else {
        o.shape.push_back(off.rank_known && off.shape.size() == 4 ? dim_or_fresh(ctx, off.shape[2 + i]) : ctx.fresh_dim());
      }
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    const Tensor& w = ctx.input(1);
    const Tensor& off = ctx.input(2);
    if (x.rank() != 4 || w.rank() != 4 || off.rank() != 4)
      return unsupported("DeformConv: only 2-D deformable convolution is supported");
    KILN_ASSIGN_OR_RETURN(DeformParams p, deform_params(ctx.attrs(), {w.dim(2), w.dim(3)}));
    const int64_t n = x.dim(0), ic = x.dim(1), ih = x.dim(2), iw = x.dim(3), oc = w.dim(0), icg = w.dim(1);
    const int64_t kh = p.kernel[0], kw = p.kernel[1], og = p.offset_group, kk = kh * kw;
    const int64_t oh = off.dim(2), ow = off.dim(3);
    if (icg * p.group != ic || oc % p.group != 0)
      return invalid_model("DeformConv: X has " + std::to_string(ic) + " channels but W expects " + std::to_string(icg) +
                           " per group over " + std::to_string(p.group) + " groups");
    if (ic % og != 0 || off.dim(1) != og * kk * 2 || off.dim(0) != n)
      return invalid_model("DeformConv: offset " + dims_to_string(off.shape()) + " does not match offset_group " +
                           std::to_string(og) + " and kernel " + std::to_string(kh) + "x" + std::to_string(kw));
    const bool has_b = ctx.has_input(3), has_m = ctx.has_input(4);
    if (has_m && ctx.input(4).numel() != n * og * kk * oh * ow)
      return invalid_model("DeformConv: mask must be [N, offset_group*kH*kW, oH, oW]");
    if (has_b && ctx.input(3).numel() != oc) return invalid_model("DeformConv: B must hold one value per output channel");
    const auto xd = x.to_f64_vector(), wd = w.to_f64_vector(), od = off.to_f64_vector();
    const std::vector<double> md = has_m ? ctx.input(4).to_f64_vector() : std::vector<double>();
    const int64_t ocg = oc / p.group, icog = ic / og, plane = oh * ow;
    std::vector<double> out(static_cast<size_t>(n * oc * plane));
    // Sampled values depend on (batch, input channel, kernel tap, output pixel) only, so they are gathered once
    // per input channel and reused by every output channel of its group.
    std::vector<double> cols(static_cast<size_t>(kk * plane));
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < ic; ++c) {
        const int64_t g = c / icog, grp = c / icg;
        const double* img = xd.data() + (b * ic + c) * ih * iw;
        for (int64_t ki = 0; ki < kh; ++ki)
          for (int64_t kj = 0; kj < kw; ++kj) {
            const int64_t tap = ki * kw + kj;
            const double* oy = od.data() + ((b * og + g) * kk * 2 + tap * 2) * plane;
            const double* ox = oy + plane;
            const double* m = has_m ? md.data() + ((b * og + g) * kk + tap) * plane : nullptr;
            for (int64_t i = 0; i < oh; ++i)
              for (int64_t j = 0; j < ow; ++j) {
                const int64_t q = i * ow + j;
                const double y = static_cast<double>(i * p.strides[0] - p.pads[0] + ki * p.dilations[0]) + oy[q];
                const double xx = static_cast<double>(j * p.strides[1] - p.pads[1] + kj * p.dilations[1]) + ox[q];
                cols[tap * plane + q] = bilinear_zero(img, ih, iw, y, xx) * (m ? m[q] : 1.0);
              }
          }
        for (int64_t o = grp * ocg; o < (grp + 1) * ocg; ++o) {
          const double* wk = wd.data() + (o * icg + (c - grp * icg)) * kk;
          double* dst = out.data() + (b * oc + o) * plane;
          for (int64_t tap = 0; tap < kk; ++tap)
            for (int64_t q = 0; q < plane; ++q) dst[q] += wk[tap] * cols[tap * plane + q];
        }
      }
    if (has_b)
      for (int64_t b = 0; b < n; ++b)
        for (int64_t o = 0; o < oc; ++o)
          for (int64_t q = 0; q < plane; ++q) out[(b * oc + o) * plane + q] += ctx.input(3).get_f64(o);
    ctx.set_output(0, from_doubles(x.dtype(), {n, oc, oh, ow}, out));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
