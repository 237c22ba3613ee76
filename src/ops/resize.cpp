// Resize (opsets 10..19: nearest/linear/cubic over any axes, every coordinate transformation and nearest mode)
// and Upsample (opsets 7..9), as separable per-axis interpolation taps.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

enum class Mode { kNearest, kLinear, kCubic };
enum class Coord { kHalfPixel, kHalfPixelSymmetric, kPytorchHalfPixel, kAlignCorners, kAsymmetric, kTfHalfPixelForNn, kTfCropAndResize };
// kSimple: the opset <= 10 rule (floor when upsampling, ceil when downsampling).
enum class Nearest { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil, kSimple };

struct ResizeConfig {
  Mode mode = Mode::kNearest;
  Coord coord = Coord::kHalfPixel;
  Nearest nearest = Nearest::kRoundPreferFloor;
  float cubic_a = -0.75f;
  bool exclude_outside = false;
  bool antialias = false;  // opset 18
  float extrapolation = 0.0f;
  std::string policy = "stretch";
  std::vector<int64_t> axes;  // opset 18; empty = all
};

template <typename E>
Result<E> pick(const std::string& op, const char* attr, const std::string& v,
               const std::vector<std::pair<const char*, E>>& allowed) {
  std::string list;
  for (auto& [name, e] : allowed) {
    if (v == name) return e;
    list += (list.empty() ? "" : ", ") + std::string(name);
  }
  return invalid_model(op + ": " + attr + " must be one of " + list + " but is \"" + v + "\"");
}

Result<ResizeConfig> resize_config(const std::string& op, const Attributes& attrs, int opset, bool upsample) {
  ResizeConfig c;
  KILN_ASSIGN_OR_RETURN(std::string mode, attrs.get_string("mode", "nearest"));
  if (upsample || opset < 11) {
    KILN_ASSIGN_OR_RETURN(c.mode, pick<Mode>(op, "mode", mode, {{"nearest", Mode::kNearest}, {"linear", Mode::kLinear},
                                                                  {"bilinear", Mode::kLinear}}));
    c.coord = Coord::kAsymmetric;
    c.nearest = Nearest::kSimple;
    return c;
  }
  KILN_ASSIGN_OR_RETURN(c.mode, pick<Mode>(op, "mode", mode, {{"nearest", Mode::kNearest}, {"linear", Mode::kLinear},
                                                                {"cubic", Mode::kCubic}}));
  KILN_ASSIGN_OR_RETURN(std::string coord, attrs.get_string("coordinate_transformation_mode", "half_pixel"));
  KILN_ASSIGN_OR_RETURN(c.coord, pick<Coord>(op, "coordinate_transformation_mode", coord,
                                             {{"half_pixel", Coord::kHalfPixel},
                                              {"half_pixel_symmetric", Coord::kHalfPixelSymmetric},
                                              {"pytorch_half_pixel", Coord::kPytorchHalfPixel},
                                              {"align_corners", Coord::kAlignCorners},
                                              {"asymmetric", Coord::kAsymmetric},
                                              {"tf_half_pixel_for_nn", Coord::kTfHalfPixelForNn},
                                              {"tf_crop_and_resize", Coord::kTfCropAndResize}}));
  if (c.coord == Coord::kHalfPixelSymmetric && opset < 19)
    return invalid_model(op + ": coordinate_transformation_mode half_pixel_symmetric needs opset 19, the model has " +
                         std::to_string(opset));
  KILN_ASSIGN_OR_RETURN(std::string nm, attrs.get_string("nearest_mode", "round_prefer_floor"));
  KILN_ASSIGN_OR_RETURN(c.nearest, pick<Nearest>(op, "nearest_mode", nm,
                                                 {{"round_prefer_floor", Nearest::kRoundPreferFloor},
                                                  {"round_prefer_ceil", Nearest::kRoundPreferCeil},
                                                  {"floor", Nearest::kFloor},
                                                  {"ceil", Nearest::kCeil}}));
  KILN_ASSIGN_OR_RETURN(c.cubic_a, attrs.get_float("cubic_coeff_a", -0.75f));
  KILN_ASSIGN_OR_RETURN(int64_t ex, attrs.get_int("exclude_outside", 0));
  c.exclude_outside = ex != 0;
  KILN_ASSIGN_OR_RETURN(c.extrapolation, attrs.get_float("extrapolation_value", 0.0f));
  KILN_ASSIGN_OR_RETURN(int64_t aa, attrs.get_int("antialias", 0));
  c.antialias = aa != 0;
  KILN_ASSIGN_OR_RETURN(c.policy, attrs.get_string("keep_aspect_ratio_policy", "stretch"));
  KILN_RETURN_IF_ERROR(pick<int>(op, "keep_aspect_ratio_policy", c.policy,
                                 {{"stretch", 0}, {"not_larger", 1}, {"not_smaller", 2}}).status());
  KILN_ASSIGN_OR_RETURN(c.axes, attrs.get_ints("axes", {}));
  return c;
}

// Output sizes and per-axis scales from either scales or sizes (given for `axes`, or for all axes).
struct ResizeTarget {
  std::vector<int64_t> out;
  std::vector<float> scales;
};

Result<std::vector<int64_t>> resolved_axes(const std::string& op, const ResizeConfig& c, int64_t rank) {
  std::vector<int64_t> axes;
  if (c.axes.empty()) {
    for (int64_t i = 0; i < rank; ++i) axes.push_back(i);
    return axes;
  }
  for (auto a : c.axes) {
    KILN_ASSIGN_OR_RETURN(int64_t na, normalize_axis(a, rank, op + ": axes entry"));
    axes.push_back(na);
  }
  return axes;
}

Result<ResizeTarget> resize_target(const std::string& op, const ResizeConfig& c, const std::vector<int64_t>& in,
                                   const std::vector<float>* scales, const std::vector<int64_t>* sizes) {
  const int64_t rank = in.size();
  KILN_ASSIGN_OR_RETURN(auto axes, resolved_axes(op, c, rank));
  ResizeTarget t;
  t.out = in;
  t.scales.assign(rank, 1.0f);
  if (scales && sizes) return invalid_model(op + ": only one of scales and sizes may be given, got both");
  if (!scales && !sizes) return invalid_model(op + ": one of scales and sizes must be given, got neither");
  const auto n = static_cast<size_t>(scales ? scales->size() : sizes->size());
  if (n != axes.size())
    return invalid_model(op + ": " + (scales ? "scales" : "sizes") + " must have " + std::to_string(axes.size()) +
                         " values, got " + std::to_string(n));
  if (scales) {
    for (size_t i = 0; i < n; ++i) {
      float s = (*scales)[i];
      if (!(s > 0)) return invalid_model(op + ": scales must be > 0, got " + std::to_string(s));
      t.scales[axes[i]] = s;
      t.out[axes[i]] = static_cast<int64_t>(std::floor(static_cast<float>(in[axes[i]]) * s));
    }
    return t;
  }
  if (c.policy != "stretch") {
    // One common scale keeps the aspect ratio; the sizes bound it from above or below.
    float common = c.policy == "not_larger" ? std::numeric_limits<float>::max() : 0.0f;
    for (size_t i = 0; i < n; ++i) {
      float s = static_cast<float>((*sizes)[i]) / static_cast<float>(in[axes[i]]);
      common = c.policy == "not_larger" ? std::min(common, s) : std::max(common, s);
    }
    for (size_t i = 0; i < n; ++i) {
      t.scales[axes[i]] = common;
      t.out[axes[i]] = static_cast<int64_t>(std::round(static_cast<float>(in[axes[i]]) * common));
    }
    return t;
  }
  for (size_t i = 0; i < n; ++i) {
    if ((*sizes)[i] < 0) return invalid_model(op + ": sizes must be >= 0, got " + std::to_string((*sizes)[i]));
    t.out[axes[i]] = (*sizes)[i];
    t.scales[axes[i]] = in[axes[i]] > 0 ? static_cast<float>((*sizes)[i]) / static_cast<float>(in[axes[i]]) : 1.0f;
  }
  return t;
}

struct Tap {
  int64_t offset;  // element offset along the axis (index * stride)
  float w;
};
struct AxisTaps {
  std::vector<std::vector<Tap>> taps;  // per output coordinate
  std::vector<bool> outside;           // tf_crop_and_resize: sample lies outside the input -> extrapolation value
};

float original_coord(const ResizeConfig& c, int64_t x, float scale, int64_t out_len, int64_t in_len, float roi_start,
                     float roi_end) {
  const float xf = static_cast<float>(x);
  switch (c.coord) {
    case Coord::kHalfPixel: return (xf + 0.5f) / scale - 0.5f;
    case Coord::kHalfPixelSymmetric: {
      // Opset 19: half_pixel shifted so that the rounding of out_len to an integer is spread evenly over both
      // ends instead of all landing at the far end.
      const float len = static_cast<float>(in_len) * scale;
      const float adjustment = static_cast<float>(out_len) / len;
      const float offset = static_cast<float>(in_len) / 2.0f * (1.0f - adjustment);
      return offset + (xf + 0.5f) / scale - 0.5f;
    }
    case Coord::kPytorchHalfPixel: return out_len > 1 ? (xf + 0.5f) / scale - 0.5f : 0.0f;
    case Coord::kAlignCorners: {
      // The spec's length_resized is in_len * scale before flooring (it differs from out_len for scales input).
      float len = static_cast<float>(in_len) * scale;
      return out_len == 1 ? 0.0f : xf * static_cast<float>(in_len - 1) / (len - 1.0f);
    }
    case Coord::kAsymmetric: return xf / scale;
    case Coord::kTfHalfPixelForNn: return (xf + 0.5f) / scale;
    case Coord::kTfCropAndResize:
      return out_len > 1 ? roi_start * static_cast<float>(in_len - 1) +
                               xf * (roi_end - roi_start) * static_cast<float>(in_len - 1) / static_cast<float>(out_len - 1)
                         : 0.5f * (roi_start + roi_end) * static_cast<float>(in_len - 1);
  }
  return 0.0f;
}

int64_t nearest_index(Nearest m, float x, float scale) {
  switch (m) {
    case Nearest::kRoundPreferFloor:
      return x == std::floor(x) + 0.5f ? static_cast<int64_t>(std::floor(x)) : static_cast<int64_t>(std::round(x));
    case Nearest::kRoundPreferCeil:
      return x == std::floor(x) + 0.5f ? static_cast<int64_t>(std::ceil(x)) : static_cast<int64_t>(std::round(x));
    case Nearest::kFloor: return static_cast<int64_t>(std::floor(x));
    case Nearest::kCeil: return static_cast<int64_t>(std::ceil(x));
    case Nearest::kSimple: return scale < 1.0f ? static_cast<int64_t>(std::ceil(x)) : static_cast<int64_t>(x);
  }
  return 0;
}

// The linear (triangle) or cubic (Keys, coefficient a) interpolation kernel at distance d.
float filter_weight(Mode m, float a, float d) {
  d = std::fabs(d);
  if (m == Mode::kLinear) return std::max(0.0f, 1.0f - d);
  if (d <= 1.0f) return ((a + 2) * d - (a + 3)) * d * d + 1;
  if (d < 2.0f) return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
  return 0.0f;
}

AxisTaps axis_taps(const ResizeConfig& c, int64_t in_len, int64_t out_len, float scale, float roi_start, float roi_end,
                   int64_t stride) {
  AxisTaps a;
  a.taps.resize(out_len);
  a.outside.assign(out_len, false);
  auto clamp = [&](int64_t i) { return std::min(std::max<int64_t>(i, 0), in_len - 1); };
  for (int64_t o = 0; o < out_len; ++o) {
    auto& t = a.taps[o];
    // An axis that is not resized maps straight through (roi does not apply to it either).
    if (in_len == out_len && scale == 1.0f && c.coord != Coord::kTfCropAndResize) {
      t.push_back({o * stride, 1.0f});
      continue;
    }
    float x = original_coord(c, o, scale, out_len, in_len, roi_start, roi_end);
    if (c.coord == Coord::kTfCropAndResize && (x < 0 || x > static_cast<float>(in_len - 1))) {
      a.outside[o] = true;
      t.push_back({0, 0.0f});
      continue;
    }
    if (c.mode == Mode::kNearest) {
      t.push_back({clamp(nearest_index(c.nearest, x, scale)) * stride, 1.0f});
    } else if (c.antialias && scale < 1.0f) {
      // Antialiased downscaling stretches the kernel by 1/scale so every input pixel an output covers
      // contributes (a low-pass filter); the weights are renormalized to sum to one.
      const float support = (c.mode == Mode::kLinear ? 1.0f : 2.0f) / scale;
      const auto lo = static_cast<int64_t>(std::floor(x - support)) + 1;
      const auto hi = static_cast<int64_t>(std::ceil(x + support)) - 1;
      const size_t first = t.size();
      float sum = 0;
      for (int64_t i = lo; i <= hi; ++i) {
        if (c.exclude_outside && (i < 0 || i >= in_len)) continue;
        const float w = filter_weight(c.mode, c.cubic_a, (static_cast<float>(i) - x) * scale);
        if (w == 0.0f) continue;
        t.push_back({clamp(i) * stride, w});
        sum += w;
      }
      if (sum != 0.0f)
        for (size_t k = first; k < t.size(); ++k) t[k].w /= sum;
    } else if (c.mode == Mode::kLinear) {
      float xc = std::min(std::max(x, 0.0f), static_cast<float>(in_len - 1));
      int64_t i0 = static_cast<int64_t>(std::floor(xc));
      int64_t i1 = std::min(i0 + 1, in_len - 1);
      float r = xc - static_cast<float>(i0);
      t.push_back({i0 * stride, 1.0f - r});
      if (r != 0.0f) t.push_back({i1 * stride, r});
    } else {
      const float A = c.cubic_a;
      int64_t i0 = static_cast<int64_t>(std::floor(x));
      float r = x - static_cast<float>(i0);
      float w[4] = {((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A,
                    ((A + 2) * r - (A + 3)) * r * r + 1,
                    ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1,
                    ((A * (2 - r) - 5 * A) * (2 - r) + 8 * A) * (2 - r) - 4 * A};
      float sum = 0;
      for (int k = 0; k < 4; ++k) {
        int64_t i = i0 - 1 + k;
        if (c.exclude_outside && (i < 0 || i >= in_len)) w[k] = 0;
        sum += w[k];
      }
      for (int k = 0; k < 4; ++k) {
        if (w[k] == 0.0f) continue;
        t.push_back({clamp(i0 - 1 + k) * stride, c.exclude_outside && sum != 0 ? w[k] / sum : w[k]});
      }
    }
  }
  return a;
}

template <typename T>
void resize_kernel(const ResizeConfig& c, const Tensor& x, const std::vector<float>& scales,
                   const std::vector<float>& roi, Tensor& y) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int rank = x.rank();
  const auto& os = y.shape();
  auto ist = strides_of(x.shape());
  std::vector<AxisTaps> axes(rank);
  for (int d = 0; d < rank; ++d) {
    float rs = roi.empty() ? 0.0f : roi[d], re = roi.empty() ? 1.0f : roi[d + rank];
    axes[d] = axis_taps(c, x.dim(d), os[d], scales[d], rs, re, ist[d]);
  }
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  const int64_t total = y.numel();
  std::vector<int64_t> idx(rank, 0);
  // Depth-first walk over the Cartesian product of the taps of every axis.
  auto accumulate = [&](auto&& self, int d, int64_t off, A w) -> A {
    if (d == rank) return w * static_cast<A>(static_cast<std::conditional_t<std::is_integral_v<T>, A, T>>(xp[off]));
    A s = 0;
    for (const Tap& t : axes[d].taps[idx[d]]) s += self(self, d + 1, off + t.offset, w * static_cast<A>(t.w));
    return s;
  };
  for (int64_t i = 0; i < total; ++i) {
    bool outside = false;
    for (int d = 0; d < rank && !outside; ++d) outside = axes[d].outside[idx[d]];
    if (outside) {
      yp[i] = static_cast<T>(static_cast<A>(c.extrapolation));
    } else if (c.mode == Mode::kNearest) {
      int64_t off = 0;
      for (int d = 0; d < rank; ++d) off += axes[d].taps[idx[d]][0].offset;
      yp[i] = xp[off];  // exact copy: no rounding through float for integer or wide types
    } else {
      A v = accumulate(accumulate, 0, 0, A(1));
      if constexpr (std::is_integral_v<T>) yp[i] = static_cast<T>(std::round(v));
      else yp[i] = static_cast<T>(v);
    }
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < os[d]) break;
      idx[d] = 0;
    }
  }
}

std::vector<float> to_floats(const Tensor& t) {
  auto d = t.to_f64_vector();
  return std::vector<float>(d.begin(), d.end());
}

// Input slots (roi, scales, sizes) of this opset; -1 when the opset has no such input.
struct Slots {
  int roi = -1, scales = -1, sizes = -1;
};
Slots resize_slots(int opset, bool upsample) {
  if (upsample) return opset >= 9 ? Slots{-1, 1, -1} : Slots{};
  if (opset < 11) return Slots{-1, 1, -1};
  return Slots{1, 2, 3};
}

// Whether an input slot holds a non-empty tensor (ONNX marks unused optional inputs with "" or an empty tensor).
bool present(const ComputeContext& ctx, int i) { return i >= 0 && ctx.has_input(i) && ctx.input(i).numel() > 0; }
bool present_info(const InferContext& ctx, int i) {
  if (i < 0 || !ctx.has_input(i)) return false;
  const auto& s = ctx.input(i).shape;
  return !(s.size() == 1 && s[0].is_static() && s[0].value == 0);
}

OpSchema make_resize(const std::string& name, bool upsample) {
  OpSchema s;
  s.name = name;
  s.since_opset = upsample ? 7 : 10;
  s.min_inputs = 1;
  s.max_inputs = upsample ? 2 : 4;
  if (upsample) {
    s.attrs = {{"mode", AttrType::kSTRING}, {"scales", AttrType::kFLOATS}};
  } else {
    s.attrs = {{"mode", AttrType::kSTRING},          {"coordinate_transformation_mode", AttrType::kSTRING},
               {"cubic_coeff_a", AttrType::kFLOAT},  {"exclude_outside", AttrType::kINT},
               {"extrapolation_value", AttrType::kFLOAT}, {"nearest_mode", AttrType::kSTRING},
               {"antialias", AttrType::kINT},        {"axes", AttrType::kINTS},
               {"keep_aspect_ratio_policy", AttrType::kSTRING}};
  }
  s.dtypes = numeric_types();
  s.infer = [name, upsample](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(ResizeConfig c, resize_config(name, ctx.attrs(), ctx.opset(), upsample));
    TensorInfo& out = ctx.output(0);
    out.dtype = x.dtype;
    if (!x.rank_known) { out.rank_known = false; return Status::Ok(); }
    Slots sl = resize_slots(ctx.opset(), upsample);
    const int64_t rank = x.shape.size();
    std::optional<std::vector<float>> scales;
    std::optional<std::vector<int64_t>> sizes;
    bool unknown = false;
    if (upsample && ctx.opset() < 9) {
      KILN_ASSIGN_OR_RETURN(auto sv, ctx.attrs().get_floats("scales"));
      scales = sv;
    } else if (present_info(ctx, sl.sizes)) {
      sizes = known_static_values(ctx.input(sl.sizes));
      unknown = !sizes;
    } else if (present_info(ctx, sl.scales)) {
      if (ctx.input(sl.scales).constant) scales = to_floats(*ctx.input(sl.scales).constant);
      else unknown = true;
    } else {
      return invalid_model(name + ": one of scales and sizes must be given, got neither");
    }
    if (unknown) {
      for (int64_t i = 0; i < rank; ++i) out.shape.push_back(ctx.fresh_dim());
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(auto axes, resolved_axes(name, c, rank));
    const size_t n = scales ? scales->size() : sizes->size();
    if (n != axes.size())
      return invalid_model(name + ": " + (scales ? "scales" : "sizes") + " must have " + std::to_string(axes.size()) +
                           " values, got " + std::to_string(n));
    out.shape = x.shape;
    bool needs_all_static = sizes && c.policy != "stretch";
    for (size_t i = 0; i < n; ++i) {
      const Dim& in = x.shape[axes[i]];
      Dim& o = out.shape[axes[i]];
      if (needs_all_static) {
        o = ctx.fresh_dim();
      } else if (sizes) {
        o = Dim((*sizes)[i]);
      } else if ((*scales)[i] == 1.0f) {
        o = in;
      } else if (in.is_static()) {
        o = Dim(static_cast<int64_t>(std::floor(static_cast<float>(in.value) * (*scales)[i])));
      } else {
        o = ctx.fresh_dim();
      }
    }
    if (needs_all_static && shape_is_static(x.shape)) {
      KILN_ASSIGN_OR_RETURN(auto t, resize_target(name, c, static_dims(x.shape), nullptr, &*sizes));
      out.shape = shape_from_dims(t.out);
    }
    return Status::Ok();
  };
  s.compute = [name, upsample](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(ResizeConfig c, resize_config(name, ctx.attrs(), ctx.opset(), upsample));
    Slots sl = resize_slots(ctx.opset(), upsample);
    std::vector<float> scales_v;
    std::vector<int64_t> sizes_v;
    const std::vector<float>* scales = nullptr;
    const std::vector<int64_t>* sizes = nullptr;
    if (upsample && ctx.opset() < 9) {
      KILN_ASSIGN_OR_RETURN(scales_v, ctx.attrs().get_floats("scales"));
      scales = &scales_v;
    } else {
      if (present(ctx, sl.scales)) { scales_v = to_floats(ctx.input(sl.scales)); scales = &scales_v; }
      if (present(ctx, sl.sizes)) {
        KILN_ASSIGN_OR_RETURN(sizes_v, tensor_to_ints(ctx.input(sl.sizes)));
        sizes = &sizes_v;
      }
    }
    KILN_ASSIGN_OR_RETURN(ResizeTarget t, resize_target(name, c, x.shape(), scales, sizes));
    std::vector<float> roi;
    if (c.coord == Coord::kTfCropAndResize) {
      if (!present(ctx, sl.roi))
        return invalid_model(name + ": coordinate_transformation_mode tf_crop_and_resize needs the roi input");
      auto r = to_floats(ctx.input(sl.roi));
      KILN_ASSIGN_OR_RETURN(auto axes, resolved_axes(name, c, x.rank()));
      if (r.size() != 2 * axes.size())
        return invalid_model(name + ": roi must have " + std::to_string(2 * axes.size()) + " values, got " + std::to_string(r.size()));
      roi.assign(2 * x.rank(), 0.0f);
      for (int64_t d = 0; d < x.rank(); ++d) roi[d + x.rank()] = 1.0f;
      for (size_t i = 0; i < axes.size(); ++i) {
        roi[axes[i]] = r[i];
        roi[axes[i] + x.rank()] = r[i + axes.size()];
      }
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), t.out);
    if (y.numel() == 0) return Status::Ok();
    if (x.numel() == 0) return invalid_argument(name + ": cannot resize an empty input to a non-empty output");
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), name, resize_kernel<scalar_t>(c, x, t.scales, roi, y));
    return Status::Ok();
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(Resize) { return make_resize("Resize", false); }
KILN_REGISTER_OP(Upsample) { return make_resize("Upsample", true); }

}  // namespace kiln::ops
