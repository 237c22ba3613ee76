// Conv and ConvTranspose (1D/2D/3D, groups, dilations, auto_pad): im2col + GEMM, direct loop for depthwise.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/gemm_util.h"
#include "ops/window_util.h"

namespace kiln::ops {
namespace {

// Geometry with spatial dims left-padded to 3 so one set of loops handles 1D, 2D and 3D.
struct Geo3 {
  int64_t img[3], grid[3], k[3], s[3], d[3], pb[3];
  int64_t img_size() const { return img[0] * img[1] * img[2]; }
  int64_t grid_size() const { return grid[0] * grid[1] * grid[2]; }
  int64_t k_size() const { return k[0] * k[1] * k[2]; }
};

Geo3 make_geo(const std::vector<int64_t>& img, const std::vector<int64_t>& grid, const WindowParams& p) {
  Geo3 g;
  auto im = to3(img, 1), gr = to3(grid, 1), k = to3(p.kernel, 1), s = to3(p.strides, 1), d = to3(p.dilations, 1);
  std::vector<int64_t> pb(p.pads.begin(), p.pads.begin() + p.nsp);
  pb = to3(pb, 0);
  for (int i = 0; i < 3; ++i) {
    g.img[i] = im[i]; g.grid[i] = gr[i]; g.k[i] = k[i]; g.s[i] = s[i]; g.d[i] = d[i]; g.pb[i] = pb[i];
  }
  return g;
}

// Range [lo, hi) of grid positions o along one axis whose image position o*s - pb + kk*d lies inside [0, n).
inline void valid_range(int64_t n, int64_t grid, int64_t s, int64_t pb, int64_t off, int64_t* lo, int64_t* hi) {
  // pos = o*s + base, base = off - pb; need 0 <= pos < n.
  int64_t base = off - pb;
  int64_t l = base >= 0 ? 0 : (-base + s - 1) / s;
  int64_t h = n - base <= 0 ? 0 : (n - base + s - 1) / s;
  *lo = std::min(l, grid);
  *hi = std::max(*lo, std::min(h, grid));
}

// Visits, for every column row (channel, kernel offset) and every grid row (od, oh), the image row and the valid
// ow range; f(col_row_ptr_offset, img_row_offset or -1, lo, hi, base_w). Shared by im2col and col2im.
template <typename F>
void for_each_patch_row(const Geo3& g, int64_t channels, F&& f) {
  const int64_t gs = g.grid_size();
  int64_t row = 0;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw, ++row) {
          int64_t wlo, whi;
          valid_range(g.img[2], g.grid[2], g.s[2], g.pb[2], kw * g.d[2], &wlo, &whi);
          int64_t base_w = kw * g.d[2] - g.pb[2];
          for (int64_t od = 0; od < g.grid[0]; ++od) {
            int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
            for (int64_t oh = 0; oh < g.grid[1]; ++oh) {
              int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
              int64_t col_off = row * gs + (od * g.grid[1] + oh) * g.grid[2];
              bool inside = id >= 0 && id < g.img[0] && ih >= 0 && ih < g.img[1];
              int64_t img_off = inside ? ((c * g.img[0] + id) * g.img[1] + ih) * g.img[2] : -1;
              f(col_off, img_off, wlo, whi, base_w);
            }
          }
        }
  }
}

template <typename T>
void im2col(const Geo3& g, int64_t channels, const T* x, T* col) {
  const int64_t gw = g.grid[2], sw = g.s[2];
  for_each_patch_row(g, channels, [&](int64_t co, int64_t io, int64_t lo, int64_t hi, int64_t base_w) {
    T* dst = col + co;
    if (io < 0) { std::fill(dst, dst + gw, T(0)); return; }
    std::fill(dst, dst + lo, T(0));
    const T* src = x + io + base_w;
    if (sw == 1) {
      std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(T));
    } else {
      for (int64_t o = lo; o < hi; ++o) dst[o] = src[o * sw];
    }
    std::fill(dst + hi, dst + gw, T(0));
  });
}

template <typename T>
void col2im(const Geo3& g, int64_t channels, const T* col, T* y) {
  const int64_t sw = g.s[2];
  for_each_patch_row(g, channels, [&](int64_t co, int64_t io, int64_t lo, int64_t hi, int64_t base_w) {
    if (io < 0) return;
    const T* src = col + co;
    T* dst = y + io + base_w;
    for (int64_t o = lo; o < hi; ++o) dst[o * sw] += src[o];
  });
}

// One input channel per group: a direct loop beats im2col (no K reduction worth a GEMM).
template <typename T>
void depthwise(const Geo3& g, int64_t n_batch, int64_t channels, int64_t mult, const T* x, const T* w, const T* bias,
               T* y) {
  const int64_t ks = g.k_size(), isz = g.img_size(), osz = g.grid_size();
  for (int64_t n = 0; n < n_batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t mm = 0; mm < mult; ++mm) {
        int64_t m = c * mult + mm;
        const T* xc = x + (n * channels + c) * isz;
        const T* wm = w + m * ks;
        T* ym = y + (n * channels * mult + m) * osz;
        T b = bias ? bias[m] : T(0);
        for (int64_t od = 0; od < g.grid[0]; ++od)
          for (int64_t oh = 0; oh < g.grid[1]; ++oh) {
            T* yrow = ym + (od * g.grid[1] + oh) * g.grid[2];
            std::fill(yrow, yrow + g.grid[2], b);
            for (int64_t kd = 0; kd < g.k[0]; ++kd) {
              int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
              if (id < 0 || id >= g.img[0]) continue;
              for (int64_t kh = 0; kh < g.k[1]; ++kh) {
                int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
                if (ih < 0 || ih >= g.img[1]) continue;
                const T* xrow = xc + (id * g.img[1] + ih) * g.img[2];
                for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                  T wv = wm[(kd * g.k[1] + kh) * g.k[2] + kw];
                  int64_t lo, hi;
                  valid_range(g.img[2], g.grid[2], g.s[2], g.pb[2], kw * g.d[2], &lo, &hi);
                  const T* src = xrow + kw * g.d[2] - g.pb[2];
                  if (g.s[2] == 1) {
                    for (int64_t o = lo; o < hi; ++o) yrow[o] += wv * src[o];
                  } else {
                    const int64_t s = g.s[2];
                    for (int64_t o = lo; o < hi; ++o) yrow[o] += wv * src[o * s];
                  }
                }
              }
            }
          }
      }
}

struct ConvSetup {
  WindowParams p;
  int64_t group = 1;
  std::vector<int64_t> out_shape;
};

Status check_conv_inputs(const std::string& op, const std::vector<int64_t>& xs, const std::vector<int64_t>& ws,
                         int64_t group, bool transpose) {
  if (xs.size() < 3) return invalid_argument(op + ": X must have rank >= 3 (N, C, spatial...), got " + dims_to_string(xs));
  if (ws.size() != xs.size())
    return invalid_argument(op + ": W must have the rank of X (" + std::to_string(xs.size()) + "), got " + dims_to_string(ws));
  if (group < 1) return invalid_model(op + ": group must be >= 1, got " + std::to_string(group));
  int64_t c = xs[1];
  if (c >= 0 && c % group != 0)
    return invalid_argument(op + ": input channels " + std::to_string(c) + " are not divisible by group " + std::to_string(group));
  if (!transpose) {
    if (c >= 0 && ws[1] >= 0 && ws[1] * group != c)
      return invalid_argument(op + ": W has " + std::to_string(ws[1]) + " input channels per group, expected C/group = " +
                              std::to_string(c / group));
    if (ws[0] >= 0 && ws[0] % group != 0)
      return invalid_argument(op + ": output channels " + std::to_string(ws[0]) + " are not divisible by group " + std::to_string(group));
  } else if (c >= 0 && ws[0] >= 0 && ws[0] != c) {
    return invalid_argument(op + ": W has " + std::to_string(ws[0]) + " input channels, expected " + std::to_string(c));
  }
  return Status::Ok();
}

template <typename T>
Status conv_compute(const Tensor& x, const Tensor& w, const Tensor* b, WindowParams p, int64_t group,
                    const std::vector<int64_t>& out_spatial, Tensor& y) {
  const auto& xs = x.shape();
  const auto& ws = w.shape();
  const int64_t n_batch = xs[0], c_in = xs[1], m_out = ws[0];
  const int64_t cg = c_in / group, mg = m_out / group;
  std::vector<int64_t> in_spatial(xs.begin() + 2, xs.end());
  Geo3 g = make_geo(in_spatial, out_spatial, p);
  const T* xp = x.data<T>();
  const T* wp = w.data<T>();
  const T* bp = b ? b->data<T>() : nullptr;
  T* yp = y.data<T>();
  const int64_t isz = g.img_size(), osz = g.grid_size(), ks = g.k_size();
  if (y.numel() == 0) return Status::Ok();

  if (cg == 1) {
    depthwise<T>(g, n_batch, c_in, mg, xp, wp, bp, yp);
    return Status::Ok();
  }
  bool pointwise = ks == 1;
  for (int i = 0; i < 3; ++i) pointwise = pointwise && g.s[i] == 1 && g.pb[i] == 0 && g.img[i] == g.grid[i];
  std::vector<T> col;
  if (!pointwise) col.resize(static_cast<size_t>(cg * ks * osz));
  for (int64_t n = 0; n < n_batch; ++n)
    for (int64_t gi = 0; gi < group; ++gi) {
      const T* xg = xp + (n * c_in + gi * cg) * isz;
      const T* wg = wp + gi * mg * cg * ks;
      T* yg = yp + (n * m_out + gi * mg) * osz;
      const T* colp = xg;
      if (!pointwise) {
        im2col<T>(g, cg, xg, col.data());
        colp = col.data();
      }
      gemm(false, false, mg, osz, cg * ks, T(1), wg, cg * ks, colp, osz, T(0), yg, osz);
      if (bp)
        for (int64_t m = 0; m < mg; ++m) {
          T bv = bp[gi * mg + m];
          T* row = yg + m * osz;
          for (int64_t o = 0; o < osz; ++o) row[o] += bv;
        }
    }
  return Status::Ok();
}

template <typename T>
Status conv_transpose_compute(const Tensor& x, const Tensor& w, const Tensor* b, const WindowParams& p, int64_t group,
                              Tensor& y) {
  const auto& xs = x.shape();
  const auto& ws = w.shape();
  const int64_t n_batch = xs[0], c_in = xs[1], cg = c_in / group, mg = ws[1], m_out = mg * group;
  std::vector<int64_t> in_spatial(xs.begin() + 2, xs.end());
  std::vector<int64_t> out_spatial(y.shape().begin() + 2, y.shape().end());
  // In the transposed direction the output is the "image" and the input is the grid of window positions.
  Geo3 g = make_geo(out_spatial, in_spatial, p);
  const int64_t isz = g.grid_size(), osz = g.img_size(), ks = g.k_size();
  const T* xp = x.data<T>();
  const T* wp = w.data<T>();
  T* yp = y.data<T>();
  if (y.numel() == 0) return Status::Ok();
  std::vector<T> col(static_cast<size_t>(mg * ks * isz));
  for (int64_t n = 0; n < n_batch; ++n)
    for (int64_t gi = 0; gi < group; ++gi) {
      const T* xg = xp + (n * c_in + gi * cg) * isz;
      const T* wg = wp + gi * cg * mg * ks;
      T* yg = yp + (n * m_out + gi * mg) * osz;
      gemm(true, false, mg * ks, isz, cg, T(1), wg, mg * ks, xg, isz, T(0), col.data(), isz);
      col2im<T>(g, mg, col.data(), yg);
    }
  if (b) {
    const T* bp = b->data<T>();
    for (int64_t n = 0; n < n_batch; ++n)
      for (int64_t m = 0; m < m_out; ++m) {
        T* row = yp + (n * m_out + m) * osz;
        for (int64_t o = 0; o < osz; ++o) row[o] += bp[m];
      }
  }
  return Status::Ok();
}

// Runs a float/double kernel; half and bfloat16 tensors go through float and back.
template <typename F>
Status with_compute_type(ComputeContext& ctx, const std::string& op, int n_in, DataType out_dtype,
                         const std::vector<int64_t>& out_shape, F&& kernel) {
  DataType dt = ctx.input(0).dtype();
  for (int i = 1; i < n_in; ++i)
    if (ctx.has_input(i) && ctx.input(i).dtype() != dt)
      return invalid_argument(op + ": input " + std::to_string(i) + " has type " + dtype_name(ctx.input(i).dtype()) +
                              ", expected " + dtype_name(dt) + " like X");
  if (dt == DataType::kFLOAT || dt == DataType::kDOUBLE) {
    std::vector<const Tensor*> ins;
    for (int i = 0; i < n_in; ++i) ins.push_back(ctx.has_input(i) ? &ctx.input(i) : nullptr);
    Tensor& y = ctx.allocate_output(0, dt, out_shape);
    if (dt == DataType::kFLOAT) return kernel(float{}, ins, y);
    return kernel(double{}, ins, y);
  }
  if (dt == DataType::kHALF || dt == DataType::kBF16) {
    std::vector<Tensor> conv;
    std::vector<const Tensor*> ins;
    conv.reserve(n_in);
    for (int i = 0; i < n_in; ++i) {
      if (!ctx.has_input(i)) { ins.push_back(nullptr); continue; }
      conv.push_back(ctx.input(i).cast(DataType::kFLOAT));
      ins.push_back(&conv.back());
    }
    Tensor yf(DataType::kFLOAT, out_shape);
    KILN_RETURN_IF_ERROR(kernel(float{}, ins, yf));
    ctx.set_output(0, yf.cast(dt));
    return Status::Ok();
  }
  return unsupported(op + ": data type " + std::string(dtype_name(dt)) + " is not supported (float types only)");
}

std::vector<int64_t> spatial_of(const std::vector<int64_t>& s) { return {s.begin() + 2, s.end()}; }

const std::vector<AttrSpec>& conv_attrs() {
  static const std::vector<AttrSpec> a = {{"auto_pad", AttrType::kSTRING}, {"dilations", AttrType::kINTS},
                                          {"group", AttrType::kINT},       {"kernel_shape", AttrType::kINTS},
                                          {"pads", AttrType::kINTS},       {"strides", AttrType::kINTS}};
  return a;
}

}  // namespace

KILN_REGISTER_OP(Conv) {
  OpSchema s;
  s.name = "Conv";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = conv_attrs();
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    const TensorInfo& w = ctx.input(1);
    if (!x.rank_known) return unsupported("Conv: X must have a known rank");
    KILN_ASSIGN_OR_RETURN(int64_t group, ctx.attrs().get_int("group", 1));
    KILN_RETURN_IF_ERROR(check_conv_inputs("Conv", static_dims(x.shape), static_dims(w.shape), group, false));
    std::vector<int64_t> wk = spatial_of(static_dims(w.shape));
    int nsp = static_cast<int>(x.shape.size()) - 2;
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window("Conv", ctx.attrs(), nsp, &wk));
    for (int i = 0; i < nsp; ++i)
      if (wk[i] >= 0 && wk[i] != p.kernel[i])
        return invalid_model("Conv: kernel_shape " + dims_to_string(p.kernel) + " does not match W " +
                             shape_to_string(w.shape));
    KILN_ASSIGN_OR_RETURN(Shape out, window_out_shape("Conv", ctx, p, x.shape, w.shape[0]));
    ctx.output(0) = make_info(x.dtype, out);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    const Tensor& w = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(int64_t group, ctx.attrs().get_int("group", 1));
    KILN_RETURN_IF_ERROR(check_conv_inputs("Conv", x.shape(), w.shape(), group, false));
    std::vector<int64_t> wk = spatial_of(w.shape());
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window("Conv", ctx.attrs(), x.rank() - 2, &wk));
    if (p.kernel != wk)
      return invalid_argument("Conv: kernel_shape " + dims_to_string(p.kernel) + " does not match W " + dims_to_string(w.shape()));
    if (ctx.has_input(2) && ctx.input(2).numel() != w.dim(0))
      return invalid_argument("Conv: B must have " + std::to_string(w.dim(0)) + " elements, got " +
                              dims_to_string(ctx.input(2).shape()));
    std::vector<int64_t> out = {x.dim(0), w.dim(0)};
    for (int i = 0; i < p.nsp; ++i) {
      KILN_ASSIGN_OR_RETURN(int64_t o, window_out_size("Conv", p, i, x.dim(i + 2)));
      out.push_back(o);
    }
    std::vector<int64_t> out_spatial = spatial_of(out);
    if (p.nsp > 3) return unsupported("Conv: at most 3 spatial dimensions are supported, got " + std::to_string(p.nsp));
    return with_compute_type(ctx, "Conv", 3, x.dtype(), out,
                             [&](auto tag, const std::vector<const Tensor*>& in, Tensor& y) -> Status {
                               using T = decltype(tag);
                               return conv_compute<T>(*in[0], *in[1], in[2], p, group, out_spatial, y);
                             });
  };
  return s;
}

namespace {

// Output spatial sizes and effective pads of ConvTranspose; `in` may hold -1 for unknown sizes.
Result<std::vector<int64_t>> conv_transpose_geometry(const Attributes& attrs, WindowParams& p,
                                                      const std::vector<int64_t>& in) {
  const int nsp = p.nsp;
  KILN_ASSIGN_OR_RETURN(auto out_pad, attrs.get_ints("output_padding", std::vector<int64_t>(nsp, 0)));
  if (out_pad.size() != static_cast<size_t>(nsp))
    return invalid_model("ConvTranspose: output_padding must have " + std::to_string(nsp) + " values, got " +
                         std::to_string(out_pad.size()));
  std::vector<int64_t> out_shape;
  if (attrs.has("output_shape")) {
    KILN_ASSIGN_OR_RETURN(out_shape, attrs.get_ints("output_shape"));
    // Some exporters write the full N, C, spatial... shape.
    if (out_shape.size() == static_cast<size_t>(nsp + 2)) out_shape.erase(out_shape.begin(), out_shape.begin() + 2);
    if (out_shape.size() != static_cast<size_t>(nsp))
      return invalid_model("ConvTranspose: output_shape must have " + std::to_string(nsp) + " values, got " +
                           std::to_string(out_shape.size()));
  }
  std::vector<int64_t> out(nsp, -1);
  for (int i = 0; i < nsp; ++i) {
    if (in[i] < 0) continue;
    int64_t dk = (p.kernel[i] - 1) * p.dilations[i] + 1;
    int64_t full = p.strides[i] * (in[i] - 1) + out_pad[i] + dk;
    if (!out_shape.empty() || p.auto_pad == AutoPad::kSameUpper || p.auto_pad == AutoPad::kSameLower) {
      int64_t target = !out_shape.empty() ? out_shape[i] : in[i] * p.strides[i];
      int64_t total = full - target;
      if (total < 0) total = 0;  // the extra tail comes out as zeros (+ bias) past the last window
      int64_t small = total / 2, big = total - small;
      if (p.auto_pad == AutoPad::kSameUpper) {
        p.pads[i] = small;
        p.pads[i + nsp] = big;
      } else {
        p.pads[i] = big;
        p.pads[i + nsp] = small;
      }
      out[i] = target;
    } else {
      if (p.auto_pad == AutoPad::kValid) p.pads[i] = p.pads[i + nsp] = 0;
      out[i] = full - p.pads[i] - p.pads[i + nsp];
      if (out[i] < 0)
        return invalid_argument("ConvTranspose: pads leave a negative output size on spatial axis " + std::to_string(i));
    }
  }
  return out;
}

}  // namespace

KILN_REGISTER_OP(ConvTranspose) {
  OpSchema s;
  s.name = "ConvTranspose";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = conv_attrs();
  s.attrs.push_back({"output_padding", AttrType::kINTS});
  s.attrs.push_back({"output_shape", AttrType::kINTS});
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    const TensorInfo& w = ctx.input(1);
    if (!x.rank_known) return unsupported("ConvTranspose: X must have a known rank");
    KILN_ASSIGN_OR_RETURN(int64_t group, ctx.attrs().get_int("group", 1));
    KILN_RETURN_IF_ERROR(check_conv_inputs("ConvTranspose", static_dims(x.shape), static_dims(w.shape), group, true));
    std::vector<int64_t> wk = spatial_of(static_dims(w.shape));
    int nsp = static_cast<int>(x.shape.size()) - 2;
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window("ConvTranspose", ctx.attrs(), nsp, &wk));
    KILN_ASSIGN_OR_RETURN(auto out, conv_transpose_geometry(ctx.attrs(), p, spatial_of(static_dims(x.shape))));
    Shape shape = {x.shape[0], w.shape[1].is_static() ? Dim(w.shape[1].value * group) : ctx.fresh_dim()};
    for (auto o : out) shape.push_back(o >= 0 ? Dim(o) : ctx.fresh_dim());
    ctx.output(0) = make_info(x.dtype, shape);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    const Tensor& w = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(int64_t group, ctx.attrs().get_int("group", 1));
    KILN_RETURN_IF_ERROR(check_conv_inputs("ConvTranspose", x.shape(), w.shape(), group, true));
    std::vector<int64_t> wk = spatial_of(w.shape());
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window("ConvTranspose", ctx.attrs(), x.rank() - 2, &wk));
    if (p.kernel != wk)
      return invalid_argument("ConvTranspose: kernel_shape " + dims_to_string(p.kernel) + " does not match W " +
                              dims_to_string(w.shape()));
    if (p.nsp > 3) return unsupported("ConvTranspose: at most 3 spatial dimensions are supported");
    int64_t m_out = w.dim(1) * group;
    if (ctx.has_input(2) && ctx.input(2).numel() != m_out)
      return invalid_argument("ConvTranspose: B must have " + std::to_string(m_out) + " elements, got " +
                              dims_to_string(ctx.input(2).shape()));
    KILN_ASSIGN_OR_RETURN(auto out_sp, conv_transpose_geometry(ctx.attrs(), p, spatial_of(x.shape())));
    std::vector<int64_t> out = {x.dim(0), m_out};
    out.insert(out.end(), out_sp.begin(), out_sp.end());
    return with_compute_type(ctx, "ConvTranspose", 3, x.dtype(), out,
                             [&](auto tag, const std::vector<const Tensor*>& in, Tensor& y) -> Status {
                               using T = decltype(tag);
                               return conv_transpose_compute<T>(*in[0], *in[1], in[2], p, group, y);
                             });
  };
  return s;
}

}  // namespace kiln::ops
