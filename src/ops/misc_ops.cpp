// Assorted operators: Shrink, Det, random generators (RandomNormal/Uniform[Like], Bernoulli), MaxRoiPool,
// RoiAlign, NonMaxSuppression, GridSample.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// The dtype attribute of a random op; `def` when absent. Random values only come in float types except for
// Bernoulli, whose 0/1 output may be any numeric type or bool.
Result<DataType> random_dtype(const Attributes& attrs, DataType def, const std::string& op, bool any_type) {
  if (!attrs.has("dtype")) return def;
  KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("dtype"));
  DataType t;
  if (!dtype_from_onnx_code(code, &t) || (!any_type && !dtype_is_float(t)))
    return invalid_model(op + ": dtype " + std::to_string(code) + " is not allowed; allowed values are " +
                         (any_type ? "ONNX numeric or bool type codes" : "1 (float), 10 (float16), 11 (double), 16 (bfloat16)"));
  return t;
}

// A seeded engine is deterministic run to run; without a seed every run differs.
std::mt19937_64 make_engine(const Attributes& attrs) {
  if (attrs.has("seed")) {
    float seed = attrs.get_float("seed").value();
    uint32_t bits;
    std::memcpy(&bits, &seed, sizeof bits);
    return std::mt19937_64(bits);
  }
  return std::mt19937_64(std::random_device{}());
}

Tensor doubles_to(DataType t, const std::vector<int64_t>& shape, const std::vector<double>& v) {
  Tensor d(DataType::kDOUBLE, shape);
  std::copy(v.begin(), v.end(), d.data<double>());
  return t == DataType::kDOUBLE ? d : d.cast(t);
}

enum class RandomKind { kNormal, kUniform };

std::vector<double> draw(const Attributes& attrs, RandomKind kind, int64_t n) {
  auto eng = make_engine(attrs);
  std::vector<double> v(static_cast<size_t>(n));
  if (kind == RandomKind::kNormal) {
    std::normal_distribution<double> d(attrs.get_float("mean", 0.f).value(), attrs.get_float("scale", 1.f).value());
    for (auto& x : v) x = d(eng);
  } else {
    std::uniform_real_distribution<double> d(attrs.get_float("low", 0.f).value(), attrs.get_float("high", 1.f).value());
    for (auto& x : v) x = d(eng);
  }
  return v;
}

OpSchema random_schema(const std::string& name, RandomKind kind, bool like) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = like ? 1 : 0;
  if (kind == RandomKind::kNormal) s.attrs = {{"mean", AttrType::kFLOAT}, {"scale", AttrType::kFLOAT}};
  else s.attrs = {{"low", AttrType::kFLOAT}, {"high", AttrType::kFLOAT}};
  s.attrs.push_back({"seed", AttrType::kFLOAT});
  s.attrs.push_back({"dtype", AttrType::kINT});
  if (!like) s.attrs.push_back({"shape", AttrType::kINTS, AttrRequirement::kRequired});
  s.dtypes = float_types();
  s.infer = [name, like](InferContext& ctx) {
    TensorInfo& o = ctx.output(0);
    if (like) {
      DataType def = dtype_is_float(ctx.input(0).dtype) ? ctx.input(0).dtype : DataType::kFLOAT;
      KILN_ASSIGN_OR_RETURN(o.dtype, random_dtype(ctx.attrs(), def, name, false));
      o.shape = ctx.input(0).shape;
      o.rank_known = ctx.input(0).rank_known;
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(o.dtype, random_dtype(ctx.attrs(), DataType::kFLOAT, name, false));
    KILN_ASSIGN_OR_RETURN(auto shape, ctx.attrs().get_ints("shape"));
    for (auto d : shape)
      if (d < 0) return invalid_model(name + ": shape entries must be >= 0, got " + dims_to_string(shape));
    o.shape = shape_from_dims(shape);
    return Status::Ok();
  };
  s.compute = [name, kind, like](ComputeContext& ctx) {
    std::vector<int64_t> shape;
    DataType t;
    if (like) {
      shape = ctx.input(0).shape();
      DataType def = dtype_is_float(ctx.input(0).dtype()) ? ctx.input(0).dtype() : DataType::kFLOAT;
      KILN_ASSIGN_OR_RETURN(t, random_dtype(ctx.attrs(), def, name, false));
    } else {
      KILN_ASSIGN_OR_RETURN(shape, ctx.attrs().get_ints("shape"));
      KILN_ASSIGN_OR_RETURN(t, random_dtype(ctx.attrs(), DataType::kFLOAT, name, false));
    }
    ctx.set_output(0, doubles_to(t, shape, draw(ctx.attrs(), kind, product(shape))));
    return Status::Ok();
  };
  return s;
}

// LU decomposition with partial pivoting on one n x n matrix, in double.
double determinant(std::vector<double> a, int64_t n) {
  double det = 1.0;
  for (int64_t c = 0; c < n; ++c) {
    int64_t piv = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::fabs(a[r * n + c]) > std::fabs(a[piv * n + c])) piv = r;
    if (a[piv * n + c] == 0.0) return 0.0;
    if (piv != c) {
      for (int64_t k = 0; k < n; ++k) std::swap(a[c * n + k], a[piv * n + k]);
      det = -det;
    }
    det *= a[c * n + c];
    for (int64_t r = c + 1; r < n; ++r) {
      double f = a[r * n + c] / a[c * n + c];
      for (int64_t k = c; k < n; ++k) a[r * n + k] -= f * a[c * n + k];
    }
  }
  return det;
}

Result<std::string> one_of(const Attributes& attrs, const std::string& op, const std::string& name,
                           const std::string& def, const std::vector<std::string>& allowed) {
  KILN_ASSIGN_OR_RETURN(std::string v, attrs.get_string(name, def));
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return v;
  std::string list;
  for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return invalid_model(op + ": attribute '" + name + "' is '" + v + "'; allowed values are " + list);
}

// Bilinear sample of one H x W plane the way RoiAlign defines it (points just outside clamp to the edge,
// points further out contribute 0). `max_mode` combines the four taps by max instead of sum.
double roi_bilinear(const double* plane, int64_t h, int64_t w, double y, double x, bool max_mode) {
  if (y < -1.0 || y > static_cast<double>(h) || x < -1.0 || x > static_cast<double>(w)) return 0.0;
  y = std::max(y, 0.0);
  x = std::max(x, 0.0);
  int64_t y0 = static_cast<int64_t>(y), x0 = static_cast<int64_t>(x), y1, x1;
  if (y0 >= h - 1) { y0 = y1 = h - 1; y = static_cast<double>(y0); } else { y1 = y0 + 1; }
  if (x0 >= w - 1) { x0 = x1 = w - 1; x = static_cast<double>(x0); } else { x1 = x0 + 1; }
  double ly = y - static_cast<double>(y0), lx = x - static_cast<double>(x0), hy = 1.0 - ly, hx = 1.0 - lx;
  double t[4] = {hy * hx * plane[y0 * w + x0], hy * lx * plane[y0 * w + x1], ly * hx * plane[y1 * w + x0],
                 ly * lx * plane[y1 * w + x1]};
  if (max_mode) return std::max({t[0], t[1], t[2], t[3]});
  return t[0] + t[1] + t[2] + t[3];
}

// --- NonMaxSuppression ---

struct Box {
  double y1, x1, y2, x2;
};

Box read_box(const Tensor& boxes, int64_t off, bool center) {
  double a = boxes.get_f64(off), b = boxes.get_f64(off + 1), c = boxes.get_f64(off + 2), d = boxes.get_f64(off + 3);
  if (center) return {b - d / 2, a - c / 2, b + d / 2, a + c / 2};  // [x_center, y_center, width, height]
  // Corners may come in either order.
  return {std::min(a, c), std::min(b, d), std::max(a, c), std::max(b, d)};
}

double iou(const Box& p, const Box& q) {
  double area_p = (p.y2 - p.y1) * (p.x2 - p.x1), area_q = (q.y2 - q.y1) * (q.x2 - q.x1);
  if (area_p <= 0 || area_q <= 0) return 0.0;
  double ih = std::min(p.y2, q.y2) - std::max(p.y1, q.y1), iw = std::min(p.x2, q.x2) - std::max(p.x1, q.x1);
  if (ih <= 0 || iw <= 0) return 0.0;
  double inter = ih * iw;
  return inter / (area_p + area_q - inter);
}

// --- GridSample ---

enum class GridPadding { kZeros, kBorder, kReflection };

// Reflects x into [lo, hi] (mirror at both ends, repeating).
double reflect(double x, double lo, double hi) {
  if (hi <= lo) return lo;
  double span = hi - lo;
  double d = std::fabs(x - lo);
  double flips = std::floor(d / span);
  double extra = d - flips * span;
  return static_cast<int64_t>(flips) % 2 == 0 ? lo + extra : hi - extra;
}

// Applies border/reflection padding to a continuous source coordinate along an axis of `size` pixels.
double pad_coord(double x, int64_t size, GridPadding pad, bool align_corners) {
  const double last = static_cast<double>(size - 1);
  if (pad == GridPadding::kBorder) return std::clamp(x, 0.0, last);
  if (pad == GridPadding::kReflection) {
    x = align_corners ? reflect(x, 0.0, last) : reflect(x, -0.5, static_cast<double>(size) - 0.5);
    return std::clamp(x, 0.0, last);
  }
  return x;
}

double unnormalize(double v, int64_t size, bool align_corners) {
  return align_corners ? (v + 1.0) / 2.0 * static_cast<double>(size - 1)
                       : ((v + 1.0) * static_cast<double>(size) - 1.0) / 2.0;
}

// Volumetric (5-D) GridSample: X [N,C,D,H,W], grid [N,D_out,H_out,W_out,3] holding (x, y, z). ONNX allows only
// nearest and linear here (cubic is 2-D only), so this stays a separate, smaller loop than the 2-D one.
std::vector<double> grid_sample_3d(const Tensor& x, const Tensor& grid, bool nearest, GridPadding pad, bool align) {
  const int64_t n = x.dim(0), c = x.dim(1), d = x.dim(2), h = x.dim(3), w = x.dim(4);
  const int64_t od = grid.dim(1), oh = grid.dim(2), ow = grid.dim(3), vol = d * h * w, outs = od * oh * ow;
  std::vector<double> out(static_cast<size_t>(n * c * outs));
  std::vector<double> cube(static_cast<size_t>(vol));
  auto at = [&](int64_t zz, int64_t yy, int64_t xx) {
    return (zz < 0 || zz >= d || yy < 0 || yy >= h || xx < 0 || xx >= w) ? 0.0 : cube[(zz * h + yy) * w + xx];
  };
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t i = 0; i < vol; ++i) cube[i] = x.get_f64((b * c + ch) * vol + i);
      for (int64_t o = 0; o < outs; ++o) {
        const int64_t g = (b * outs + o) * 3;
        const double sx = pad_coord(unnormalize(grid.get_f64(g), w, align), w, pad, align);
        const double sy = pad_coord(unnormalize(grid.get_f64(g + 1), h, align), h, pad, align);
        const double sz = pad_coord(unnormalize(grid.get_f64(g + 2), d, align), d, pad, align);
        double v = 0.0;
        if (nearest) {
          v = at(static_cast<int64_t>(std::nearbyint(sz)), static_cast<int64_t>(std::nearbyint(sy)),
                 static_cast<int64_t>(std::nearbyint(sx)));
        } else {
          const double fx = std::floor(sx), fy = std::floor(sy), fz = std::floor(sz);
          const double lx = sx - fx, ly = sy - fy, lz = sz - fz;
          const auto x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy), z0 = static_cast<int64_t>(fz);
          for (int k = 0; k < 8; ++k) {
            const int dz = k >> 2, dy = (k >> 1) & 1, dx = k & 1;
            const double wt = (dz ? lz : 1 - lz) * (dy ? ly : 1 - ly) * (dx ? lx : 1 - lx);
            v += wt * at(z0 + dz, y0 + dy, x0 + dx);
          }
        }
        out[(b * c + ch) * outs + o] = v;
      }
    }
  return out;
}

double cubic_weight(double t, int tap) {
  constexpr double a = -0.75;
  auto near = [](double d) { return ((a + 2) * d - (a + 3)) * d * d + 1; };
  auto far = [](double d) { return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a; };
  switch (tap) {
    case 0: return far(t + 1);
    case 1: return near(t);
    case 2: return near(1 - t);
    default: return far(2 - t);
  }
}

}  // namespace

KILN_REGISTER_OP(Shrink) {
  OpSchema s;
  s.name = "Shrink";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"bias", AttrType::kFLOAT}, {"lambd", AttrType::kFLOAT}};
  s.dtypes = numeric_types();
  s.infer = infer_same_as_input0;
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    const double bias = ctx.attrs().get_float("bias", 0.f).value(), lambd = ctx.attrs().get_float("lambd", 0.5f).value();
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    auto run = [&](auto* out) {
      using T = std::remove_pointer_t<decltype(out)>;
      for (int64_t i = 0; i < x.numel(); ++i) {
        double v = x.get_f64(i);
        double r = v < -lambd ? v + bias : (v > lambd ? v - bias : 0.0);
        if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) out[i] = T(static_cast<float>(r));
        else out[i] = static_cast<T>(r);
      }
    };
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), "Shrink", run(y.data<scalar_t>()));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Det) {
  OpSchema s;
  s.name = "Det";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!x.rank_known) { o.rank_known = false; return Status::Ok(); }
    if (x.shape.size() < 2) return invalid_model("Det: input must have rank >= 2, got " + shape_to_string(x.shape));
    const Dim &m = x.shape[x.shape.size() - 2], &n = x.shape.back();
    if (m.is_static() && n.is_static() && m.value != n.value)
      return invalid_model("Det: matrices must be square, got " + shape_to_string(x.shape));
    o.shape.assign(x.shape.begin(), x.shape.end() - 2);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    if (!dtype_is_float(x.dtype())) return unsupported(std::string("Det: data type ") + dtype_name(x.dtype()) + " is not supported");
    if (x.rank() < 2 || x.dim(-1) != x.dim(-2))
      return invalid_argument("Det: input must be [..., M, M], got " + dims_to_string(x.shape()));
    const int64_t n = x.dim(-1);
    std::vector<int64_t> out_shape(x.shape().begin(), x.shape().end() - 2);
    const int64_t batch = product(out_shape);
    std::vector<double> r(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<double> a(static_cast<size_t>(n * n));
      for (int64_t i = 0; i < n * n; ++i) a[i] = x.get_f64(b * n * n + i);
      r[b] = determinant(std::move(a), n);
    }
    ctx.set_output(0, doubles_to(x.dtype(), out_shape, r));
    return Status::Ok();
  };
  return s;
}

// Random generators: values are not reproducible across implementations, so their ONNX node tests can only
// check shapes and types (the backend suite marks them so); a seed makes Kiln's own output deterministic.
KILN_REGISTER_OP(RandomNormal) { return random_schema("RandomNormal", RandomKind::kNormal, false); }
KILN_REGISTER_OP(RandomUniform) { return random_schema("RandomUniform", RandomKind::kUniform, false); }
KILN_REGISTER_OP(RandomNormalLike) { return random_schema("RandomNormalLike", RandomKind::kNormal, true); }
KILN_REGISTER_OP(RandomUniformLike) { return random_schema("RandomUniformLike", RandomKind::kUniform, true); }

KILN_REGISTER_OP(Bernoulli) {
  OpSchema s;
  s.name = "Bernoulli";
  s.since_opset = 15;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"dtype", AttrType::kINT}, {"seed", AttrType::kFLOAT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    KILN_ASSIGN_OR_RETURN(ctx.output(0).dtype, random_dtype(ctx.attrs(), ctx.input(0).dtype, "Bernoulli", true));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& p = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(DataType t, random_dtype(ctx.attrs(), p.dtype(), "Bernoulli", true));
    auto eng = make_engine(ctx.attrs());
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<double> v(static_cast<size_t>(p.numel()));
    for (int64_t i = 0; i < p.numel(); ++i) v[i] = u(eng) < p.get_f64(i) ? 1.0 : 0.0;
    ctx.set_output(0, doubles_to(t, p.shape(), v));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(MaxRoiPool) {
  OpSchema s;
  s.name = "MaxRoiPool";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"pooled_shape", AttrType::kINTS, AttrRequirement::kRequired}, {"spatial_scale", AttrType::kFLOAT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo &x = ctx.input(0), &rois = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(auto pooled, ctx.attrs().get_ints("pooled_shape"));
    if (pooled.size() != 2 || pooled[0] <= 0 || pooled[1] <= 0)
      return invalid_model("MaxRoiPool: pooled_shape must hold two positive values, got " + dims_to_string(pooled));
    if (x.rank_known && x.shape.size() != 4) return invalid_model("MaxRoiPool: input must be 4-D, got " + shape_to_string(x.shape));
    Dim nr = rois.rank_known && !rois.shape.empty() ? rois.shape[0] : ctx.fresh_dim();
    Dim c = x.rank_known ? x.shape[1] : ctx.fresh_dim();
    ctx.output(0) = make_info(x.dtype, {nr, c, pooled[0], pooled[1]});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor &x = ctx.input(0), &rois = ctx.input(1);
    auto pooled = ctx.attrs().get_ints("pooled_shape").value();
    const double scale = ctx.attrs().get_float("spatial_scale", 1.f).value();
    if (x.rank() != 4 || rois.rank() != 2 || rois.dim(1) != 5)
      return invalid_argument("MaxRoiPool: expected X [N,C,H,W] and rois [R,5], got " + dims_to_string(x.shape()) + " and " +
                              dims_to_string(rois.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), nr = rois.dim(0), ph = pooled[0], pw = pooled[1];
    std::vector<double> out(static_cast<size_t>(nr * c * ph * pw));
    for (int64_t r = 0; r < nr; ++r) {
      int64_t b = static_cast<int64_t>(rois.get_f64(r * 5));
      if (b < 0 || b >= n) return invalid_argument("MaxRoiPool: roi " + std::to_string(r) + " has batch index " + std::to_string(b));
      auto coord = [&](int k) { return static_cast<int64_t>(std::round(rois.get_f64(r * 5 + k) * scale)); };
      int64_t x1 = coord(1), y1 = coord(2), x2 = coord(3), y2 = coord(4);
      double bin_h = static_cast<double>(std::max<int64_t>(y2 - y1 + 1, 1)) / static_cast<double>(ph);
      double bin_w = static_cast<double>(std::max<int64_t>(x2 - x1 + 1, 1)) / static_cast<double>(pw);
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t i = 0; i < ph; ++i)
          for (int64_t j = 0; j < pw; ++j) {
            int64_t hs = std::clamp<int64_t>(static_cast<int64_t>(std::floor(i * bin_h)) + y1, 0, h);
            int64_t he = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((i + 1) * bin_h)) + y1, 0, h);
            int64_t ws = std::clamp<int64_t>(static_cast<int64_t>(std::floor(j * bin_w)) + x1, 0, w);
            int64_t we = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((j + 1) * bin_w)) + x1, 0, w);
            double m = (he <= hs || we <= ws) ? 0.0 : -INFINITY;  // empty bins give 0
            for (int64_t yy = hs; yy < he; ++yy)
              for (int64_t xx = ws; xx < we; ++xx) m = std::max(m, x.get_f64(((b * c + ch) * h + yy) * w + xx));
            out[((r * c + ch) * ph + i) * pw + j] = m;
          }
    }
    ctx.set_output(0, doubles_to(x.dtype(), {nr, c, ph, pw}, out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(RoiAlign) {
  OpSchema s;
  s.name = "RoiAlign";
  s.since_opset = 10;
  s.min_inputs = s.max_inputs = 3;  // X, rois, batch_indices
  s.attrs = {{"mode", AttrType::kSTRING},           {"output_height", AttrType::kINT},
             {"output_width", AttrType::kINT},      {"sampling_ratio", AttrType::kINT},
             {"spatial_scale", AttrType::kFLOAT},   {"coordinate_transformation_mode", AttrType::kSTRING}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo &x = ctx.input(0), &rois = ctx.input(1);
    KILN_RETURN_IF_ERROR(one_of(ctx.attrs(), "RoiAlign", "mode", "avg", {"avg", "max"}).status());
    KILN_RETURN_IF_ERROR(one_of(ctx.attrs(), "RoiAlign", "coordinate_transformation_mode", "half_pixel",
                                {"half_pixel", "output_half_pixel"}).status());
    KILN_ASSIGN_OR_RETURN(int64_t oh, ctx.attrs().get_int("output_height", 1));
    KILN_ASSIGN_OR_RETURN(int64_t ow, ctx.attrs().get_int("output_width", 1));
    if (oh <= 0 || ow <= 0) return invalid_model("RoiAlign: output_height/output_width must be positive");
    if (x.rank_known && x.shape.size() != 4) return invalid_model("RoiAlign: input must be 4-D, got " + shape_to_string(x.shape));
    Dim nr = rois.rank_known && !rois.shape.empty() ? rois.shape[0] : ctx.fresh_dim();
    Dim c = x.rank_known ? x.shape[1] : ctx.fresh_dim();
    ctx.output(0) = make_info(x.dtype, {nr, c, oh, ow});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor &x = ctx.input(0), &rois = ctx.input(1), &bidx = ctx.input(2);
    KILN_ASSIGN_OR_RETURN(std::string mode, one_of(ctx.attrs(), "RoiAlign", "mode", "avg", {"avg", "max"}));
    // Opset 10 had no attribute and behaved as output_half_pixel; opset 16 made half_pixel the default.
    KILN_ASSIGN_OR_RETURN(std::string ctm, one_of(ctx.attrs(), "RoiAlign", "coordinate_transformation_mode",
                                                  ctx.opset() >= 16 ? "half_pixel" : "output_half_pixel",
                                                  {"half_pixel", "output_half_pixel"}));
    const int64_t oh = ctx.attrs().get_int("output_height", 1).value(), ow = ctx.attrs().get_int("output_width", 1).value();
    const int64_t ratio = ctx.attrs().get_int("sampling_ratio", 0).value();
    const double scale = ctx.attrs().get_float("spatial_scale", 1.f).value();
    if (x.rank() != 4 || rois.rank() != 2 || rois.dim(1) != 4 || bidx.numel() != rois.dim(0))
      return invalid_argument("RoiAlign: expected X [N,C,H,W], rois [R,4], batch_indices [R], got " +
                              dims_to_string(x.shape()) + ", " + dims_to_string(rois.shape()) + ", " +
                              dims_to_string(bidx.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), nr = rois.dim(0);
    const bool half_pixel = ctm == "half_pixel", max_mode = mode == "max";
    const double offset = half_pixel ? 0.5 : 0.0;
    std::vector<double> plane(static_cast<size_t>(h * w));
    std::vector<double> out(static_cast<size_t>(nr * c * oh * ow));
    for (int64_t r = 0; r < nr; ++r) {
      int64_t b = bidx.get_i64(r);
      if (b < 0 || b >= n) return invalid_argument("RoiAlign: batch index " + std::to_string(b) + " is out of range");
      double x1 = rois.get_f64(r * 4) * scale - offset, y1 = rois.get_f64(r * 4 + 1) * scale - offset;
      double rw = rois.get_f64(r * 4 + 2) * scale - offset - x1, rh = rois.get_f64(r * 4 + 3) * scale - offset - y1;
      // Without half-pixel alignment rois are at least one pixel, as in the original (Mask R-CNN) formulation.
      if (!half_pixel) { rw = std::max(rw, 1.0); rh = std::max(rh, 1.0); }
      const double bh = rh / static_cast<double>(oh), bw = rw / static_cast<double>(ow);
      const int64_t gh = ratio > 0 ? ratio : static_cast<int64_t>(std::ceil(rh / static_cast<double>(oh)));
      const int64_t gw = ratio > 0 ? ratio : static_cast<int64_t>(std::ceil(rw / static_cast<double>(ow)));
      const double count = static_cast<double>(std::max<int64_t>(gh * gw, 1));
      for (int64_t ch = 0; ch < c; ++ch) {
        for (int64_t i = 0; i < h * w; ++i) plane[i] = x.get_f64((b * c + ch) * h * w + i);
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            double acc = max_mode ? -INFINITY : 0.0;
            for (int64_t iy = 0; iy < gh; ++iy) {
              double yy = y1 + i * bh + (iy + 0.5) * bh / static_cast<double>(gh);
              for (int64_t ix = 0; ix < gw; ++ix) {
                double xx = x1 + j * bw + (ix + 0.5) * bw / static_cast<double>(gw);
                double v = roi_bilinear(plane.data(), h, w, yy, xx, max_mode);
                acc = max_mode ? std::max(acc, v) : acc + v;
              }
            }
            if (gh * gw == 0) acc = 0.0;
            out[((r * c + ch) * oh + i) * ow + j] = max_mode ? acc : acc / count;
          }
      }
    }
    ctx.set_output(0, doubles_to(x.dtype(), {nr, c, oh, ow}, out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(NonMaxSuppression) {
  OpSchema s;
  s.name = "NonMaxSuppression";
  s.since_opset = 10;
  s.min_inputs = 2;
  s.max_inputs = 5;  // boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold
  s.attrs = {{"center_point_box", AttrType::kINT}};
  s.dtypes = {DataType::kFLOAT};
  s.infer = [](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(int64_t cpb, ctx.attrs().get_int("center_point_box", 0));
    if (cpb != 0 && cpb != 1)
      return invalid_model("NonMaxSuppression: center_point_box is " + std::to_string(cpb) + "; allowed values are 0, 1");
    ctx.output(0) = make_info(DataType::kINT64, {ctx.fresh_dim(), Dim(3)});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor &boxes = ctx.input(0), &scores = ctx.input(1);
    if (boxes.rank() != 3 || boxes.dim(2) != 4 || scores.rank() != 3 || scores.dim(0) != boxes.dim(0) ||
        scores.dim(2) != boxes.dim(1))
      return invalid_argument("NonMaxSuppression: expected boxes [B,N,4] and scores [B,C,N], got " +
                              dims_to_string(boxes.shape()) + " and " + dims_to_string(scores.shape()));
    const bool center = ctx.attrs().get_int("center_point_box", 0).value() == 1;
    const int64_t max_out = ctx.has_input(2) && ctx.input(2).numel() > 0 ? ctx.input(2).get_i64(0) : 0;
    const double iou_th = ctx.has_input(3) && ctx.input(3).numel() > 0 ? ctx.input(3).get_f64(0) : 0.0;
    const bool has_score_th = ctx.has_input(4) && ctx.input(4).numel() > 0;
    const double score_th = has_score_th ? ctx.input(4).get_f64(0) : 0.0;
    const int64_t nb = boxes.dim(0), nbox = boxes.dim(1), nc = scores.dim(1);
    std::vector<int64_t> sel;
    for (int64_t b = 0; b < nb && max_out > 0; ++b) {
      std::vector<Box> bx(static_cast<size_t>(nbox));
      for (int64_t i = 0; i < nbox; ++i) bx[i] = read_box(boxes, (b * nbox + i) * 4, center);
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t base = (b * nc + c) * nbox;
        std::vector<int64_t> cand;
        for (int64_t i = 0; i < nbox; ++i)
          if (!has_score_th || scores.get_f64(base + i) > score_th) cand.push_back(i);
        // Higher score first; equal scores keep the lower box index first.
        std::stable_sort(cand.begin(), cand.end(),
                         [&](int64_t p, int64_t q) { return scores.get_f64(base + p) > scores.get_f64(base + q); });
        std::vector<int64_t> kept;
        for (int64_t i : cand) {
          if (static_cast<int64_t>(kept.size()) >= max_out) break;
          bool suppressed = false;
          for (int64_t k : kept)
            if (iou(bx[i], bx[k]) > iou_th) { suppressed = true; break; }
          if (!suppressed) kept.push_back(i);
        }
        for (int64_t k : kept) sel.insert(sel.end(), {b, c, k});
      }
    }
    Tensor& out = ctx.allocate_output(0, DataType::kINT64, {static_cast<int64_t>(sel.size() / 3), 3});
    std::copy(sel.begin(), sel.end(), out.data<int64_t>());
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(GridSample) {
  OpSchema s;
  s.name = "GridSample";
  s.since_opset = 16;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"align_corners", AttrType::kINT}, {"mode", AttrType::kSTRING}, {"padding_mode", AttrType::kSTRING}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo &x = ctx.input(0), &grid = ctx.input(1);
    // Opset 20 renamed bilinear/bicubic to linear/cubic; both spellings are accepted.
    KILN_RETURN_IF_ERROR(one_of(ctx.attrs(), "GridSample", "mode", "bilinear",
                                {"bilinear", "nearest", "bicubic", "linear", "cubic"}).status());
    KILN_RETURN_IF_ERROR(one_of(ctx.attrs(), "GridSample", "padding_mode", "zeros", {"zeros", "border", "reflection"}).status());
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!x.rank_known || !grid.rank_known) { o.rank_known = false; return Status::Ok(); }
    if (x.shape.size() == 5 && grid.shape.size() == 5) {
      KILN_ASSIGN_OR_RETURN(std::string mode, ctx.attrs().get_string("mode", "bilinear"));
      if (mode == "bicubic" || mode == "cubic")
        return invalid_model("GridSample: mode '" + mode + "' is only defined for 4-D input, got " +
                             shape_to_string(x.shape));
      o.shape = {x.shape[0], x.shape[1], grid.shape[1], grid.shape[2], grid.shape[3]};
      return Status::Ok();
    }
    if (x.shape.size() != 4 || grid.shape.size() != 4)
      return unsupported("GridSample: only 4-D input [N,C,H,W] with grid [N,H_out,W_out,2] or 5-D input [N,C,D,H,W] "
                         "with grid [N,D_out,H_out,W_out,3] is supported, got " +
                         shape_to_string(x.shape) + " and " + shape_to_string(grid.shape));
    o.shape = {x.shape[0], x.shape[1], grid.shape[1], grid.shape[2]};
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor &x = ctx.input(0), &grid = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(std::string mode, one_of(ctx.attrs(), "GridSample", "mode", ctx.opset() >= 20 ? "linear" : "bilinear",
                                                   {"bilinear", "nearest", "bicubic", "linear", "cubic"}));
    KILN_ASSIGN_OR_RETURN(std::string pm, one_of(ctx.attrs(), "GridSample", "padding_mode", "zeros",
                                                 {"zeros", "border", "reflection"}));
    const bool align = ctx.attrs().get_int("align_corners", 0).value() != 0;
    const GridPadding pad = pm == "zeros" ? GridPadding::kZeros : (pm == "border" ? GridPadding::kBorder : GridPadding::kReflection);
    if (x.rank() == 5) {
      if (grid.rank() != 5 || grid.dim(4) != 3 || grid.dim(0) != x.dim(0))
        return invalid_argument("GridSample: expected grid [N,D_out,H_out,W_out,3] for X " + dims_to_string(x.shape()) +
                                ", got " + dims_to_string(grid.shape()));
      if (mode == "bicubic" || mode == "cubic")
        return invalid_argument("GridSample: mode '" + mode + "' is only defined for 4-D input");
      auto out = grid_sample_3d(x, grid, mode == "nearest", pad, align);
      ctx.set_output(0, doubles_to(x.dtype(), {x.dim(0), x.dim(1), grid.dim(1), grid.dim(2), grid.dim(3)}, out));
      return Status::Ok();
    }
    if (x.rank() != 4 || grid.rank() != 4 || grid.dim(3) != 2 || grid.dim(0) != x.dim(0))
      return unsupported("GridSample: expected X [N,C,H,W] and grid [N,H_out,W_out,2], got " + dims_to_string(x.shape()) +
                         " and " + dims_to_string(grid.shape()));
    const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), oh = grid.dim(1), ow = grid.dim(2);
    std::vector<double> out(static_cast<size_t>(n * c * oh * ow));
    std::vector<double> plane(static_cast<size_t>(h * w));
    auto at = [&](int64_t yy, int64_t xx) {
      return (yy < 0 || yy >= h || xx < 0 || xx >= w) ? 0.0 : plane[yy * w + xx];
    };
    // Cubic taps pad each integer tap position rather than the sample point.
    auto tap = [&](int64_t yy, int64_t xx) {
      if (pad != GridPadding::kZeros) {
        yy = static_cast<int64_t>(pad_coord(static_cast<double>(yy), h, pad, align));
        xx = static_cast<int64_t>(pad_coord(static_cast<double>(xx), w, pad, align));
      }
      return at(yy, xx);
    };
    for (int64_t b = 0; b < n; ++b)
      for (int64_t ch = 0; ch < c; ++ch) {
        for (int64_t i = 0; i < h * w; ++i) plane[i] = x.get_f64((b * c + ch) * h * w + i);
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            const int64_t g = ((b * oh + i) * ow + j) * 2;
            double sx = unnormalize(grid.get_f64(g), w, align), sy = unnormalize(grid.get_f64(g + 1), h, align);
            double v;
            if (mode == "bicubic" || mode == "cubic") {
              double fx = std::floor(sx), fy = std::floor(sy);
              double tx = sx - fx, ty = sy - fy;
              v = 0.0;
              for (int p = 0; p < 4; ++p) {
                double row = 0.0;
                for (int q = 0; q < 4; ++q)
                  row += cubic_weight(tx, q) * tap(static_cast<int64_t>(fy) - 1 + p, static_cast<int64_t>(fx) - 1 + q);
                v += cubic_weight(ty, p) * row;
              }
            } else {
              sx = pad_coord(sx, w, pad, align);
              sy = pad_coord(sy, h, pad, align);
              if (mode == "nearest") {
                v = at(static_cast<int64_t>(std::nearbyint(sy)), static_cast<int64_t>(std::nearbyint(sx)));
              } else {
                double fx = std::floor(sx), fy = std::floor(sy);
                double lx = sx - fx, ly = sy - fy;
                int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
                v = (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x0 + 1)) +
                    ly * ((1 - lx) * at(y0 + 1, x0) + lx * at(y0 + 1, x0 + 1));
              }
            }
            out[((b * c + ch) * oh + i) * ow + j] = v;
          }
      }
    ctx.set_output(0, doubles_to(x.dtype(), {n, c, oh, ow}, out));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
