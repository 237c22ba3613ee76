// Pooling: MaxPool (with Indices), AveragePool, LpPool and their Global variants (1D/2D/3D windows).
#include <cmath>
#include <limits>
#include <type_traits>

#include "ops/window_util.h"

namespace kiln::ops {
namespace {

enum class PoolKind { kMax, kAverage, kLp };

// Window geometry with spatial dims left-padded to 3; pe is needed for count_include_pad.
struct PoolGeo {
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
};

PoolGeo make_pool_geo(const std::vector<int64_t>& in, const std::vector<int64_t>& out, const WindowParams& p) {
  PoolGeo g;
  auto i3 = to3(in, 1), o3 = to3(out, 1), k = to3(p.kernel, 1), s = to3(p.strides, 1), d = to3(p.dilations, 1);
  auto pb = to3(std::vector<int64_t>(p.pads.begin(), p.pads.begin() + p.nsp), 0);
  auto pe = to3(std::vector<int64_t>(p.pads.begin() + p.nsp, p.pads.end()), 0);
  for (int i = 0; i < 3; ++i) {
    g.in[i] = i3[i]; g.out[i] = o3[i]; g.k[i] = k[i]; g.s[i] = s[i]; g.d[i] = d[i]; g.pb[i] = pb[i]; g.pe[i] = pe[i];
  }
  return g;
}

// Accumulation type: float for float/half/bf16, double for double, the type itself for integers (max only).
template <typename T>
using PoolAcc = std::conditional_t<std::is_same_v<T, double>, double,
                                   std::conditional_t<std::is_integral_v<T>, T, float>>;

struct PoolOptions {
  PoolKind kind = PoolKind::kMax;
  bool count_include_pad = false;
  int64_t p = 2;
  int64_t storage_order = 0;
};

template <typename T>
void pool_kernel(const PoolGeo& g, int64_t planes, const PoolOptions& o, const T* x, T* y, int64_t* indices) {
  using A = PoolAcc<T>;
  const int64_t isz = g.in_size(), osz = g.out_size();
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * isz;
    T* yp = y + pl * osz;
    int64_t oi = 0;
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh)
        for (int64_t ow = 0; ow < g.out[2]; ++ow, ++oi) {
          const int64_t o3[3] = {od, oh, ow};
          A acc = o.kind == PoolKind::kMax ? std::numeric_limits<A>::lowest() : A(0);
          int64_t best = -1, count = 0;
          for (int64_t kd = 0; kd < g.k[0]; ++kd) {
            int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
            if (id < 0 || id >= g.in[0]) continue;
            for (int64_t kh = 0; kh < g.k[1]; ++kh) {
              int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
              if (ih < 0 || ih >= g.in[1]) continue;
              for (int64_t kw = 0; kw < g.k[2]; ++kw) {
                int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                if (iw < 0 || iw >= g.in[2]) continue;
                int64_t off = (id * g.in[1] + ih) * g.in[2] + iw;
                A v = static_cast<A>(static_cast<float>(xp[off]));
                if constexpr (std::is_integral_v<T>) v = static_cast<A>(xp[off]);
                ++count;
                if (o.kind == PoolKind::kMax) {
                  if (best < 0 || v > acc || (std::isnan(static_cast<double>(v)) && !std::isnan(static_cast<double>(acc)))) {
                    acc = v;
                    best = o.storage_order == 0 ? off : (iw * g.in[1] + ih) * g.in[0] + id;
                  }
                } else if (o.kind == PoolKind::kAverage) {
                  acc += v;
                } else {
                  A a = std::fabs(v);
                  acc += o.p == 1 ? a : o.p == 2 ? a * a : static_cast<A>(std::pow(a, static_cast<A>(o.p)));
                }
              }
            }
          }
          if constexpr (!std::is_integral_v<T>) {
            if (o.kind == PoolKind::kAverage) {
              int64_t div = count;
              if (o.count_include_pad) {
                div = 1;
                // Window positions inside the padded extent [-pb, in + pe) count, even where they are padding.
                for (int a = 0; a < 3; ++a) {
                  int64_t c = 0;
                  for (int64_t kk = 0; kk < g.k[a]; ++kk) {
                    int64_t pos = o3[a] * g.s[a] - g.pb[a] + kk * g.d[a];
                    if (pos >= -g.pb[a] && pos < g.in[a] + g.pe[a]) ++c;
                  }
                  div *= c;
                }
              }
              acc = div > 0 ? acc / static_cast<A>(div) : A(0);
            } else if (o.kind == PoolKind::kLp) {
              acc = o.p == 1 ? acc : o.p == 2 ? std::sqrt(acc) : static_cast<A>(std::pow(acc, A(1) / static_cast<A>(o.p)));
            }
          }
          if (o.kind == PoolKind::kMax && best < 0) acc = A(0);
          yp[oi] = static_cast<T>(acc);
          if (indices) indices[pl * osz + oi] = best < 0 ? -1 : pl * isz + best;
        }
  }
}

template <typename T>
void global_kernel(int64_t planes, int64_t size, const PoolOptions& o, const T* x, T* y) {
  using A = PoolAcc<T>;
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * size;
    A acc = o.kind == PoolKind::kMax ? std::numeric_limits<A>::lowest() : A(0);
    for (int64_t i = 0; i < size; ++i) {
      A v;
      if constexpr (std::is_integral_v<T>) v = xp[i]; else v = static_cast<A>(static_cast<float>(xp[i]));
      if (o.kind == PoolKind::kMax) {
        if (v > acc || std::isnan(static_cast<double>(v))) acc = v;
      } else if (o.kind == PoolKind::kAverage) {
        acc += v;
      } else {
        A a = v < 0 ? -v : v;
        acc += o.p == 2 ? a * a : static_cast<A>(std::pow(a, static_cast<A>(o.p)));
      }
    }
    if constexpr (!std::is_integral_v<T>) {
      if (o.kind == PoolKind::kAverage) acc = size > 0 ? acc / static_cast<A>(size) : A(0);
      if (o.kind == PoolKind::kLp) acc = static_cast<A>(std::pow(acc, A(1) / static_cast<A>(o.p)));
    }
    y[pl] = static_cast<T>(acc);
  }
}

const std::vector<DataType>& maxpool_types() {
  static const std::vector<DataType> v = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kDOUBLE,
                                          DataType::kINT8, DataType::kUINT8};
  return v;
}

Result<PoolOptions> pool_options(const std::string& op, PoolKind kind, const Attributes& attrs) {
  PoolOptions o;
  o.kind = kind;
  KILN_ASSIGN_OR_RETURN(int64_t cip, attrs.get_int("count_include_pad", 0));
  o.count_include_pad = cip != 0;
  KILN_ASSIGN_OR_RETURN(o.p, attrs.get_int("p", 2));
  if (kind == PoolKind::kLp && o.p < 1) return invalid_model(op + ": p must be >= 1, got " + std::to_string(o.p));
  KILN_ASSIGN_OR_RETURN(o.storage_order, attrs.get_int("storage_order", 0));
  if (o.storage_order != 0 && o.storage_order != 1)
    return invalid_model(op + ": storage_order must be 0 (row major) or 1 (column major), got " + std::to_string(o.storage_order));
  return o;
}

OpSchema make_pool(const std::string& name, PoolKind kind) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 1;
  s.max_outputs = kind == PoolKind::kMax ? 2 : 1;
  s.attrs = {{"auto_pad", AttrType::kSTRING}, {"kernel_shape", AttrType::kINTS, AttrRequirement::kRequired},
             {"pads", AttrType::kINTS}, {"strides", AttrType::kINTS}, {"ceil_mode", AttrType::kINT},
             {"dilations", AttrType::kINTS}};
  if (kind == PoolKind::kMax) s.attrs.push_back({"storage_order", AttrType::kINT});
  if (kind == PoolKind::kAverage) s.attrs.push_back({"count_include_pad", AttrType::kINT});
  if (kind == PoolKind::kLp) s.attrs.push_back({"p", AttrType::kINT});
  s.dtypes = kind == PoolKind::kMax ? maxpool_types() : float_types();
  s.infer = [name](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    if (!x.rank_known) return unsupported(name + ": X must have a known rank");
    int nsp = static_cast<int>(x.shape.size()) - 2;
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window(name, ctx.attrs(), nsp, nullptr));
    KILN_ASSIGN_OR_RETURN(Shape out, window_out_shape(name, ctx, p, x.shape, x.shape[1]));
    ctx.output(0) = make_info(x.dtype, out);
    if (ctx.num_outputs() > 1) ctx.output(1) = make_info(DataType::kINT64, out);
    return Status::Ok();
  };
  s.compute = [name, kind](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window(name, ctx.attrs(), x.rank() - 2, nullptr));
    if (p.nsp > 3) return unsupported(name + ": at most 3 spatial dimensions are supported, got " + std::to_string(p.nsp));
    KILN_ASSIGN_OR_RETURN(PoolOptions o, pool_options(name, kind, ctx.attrs()));
    std::vector<int64_t> out = {x.dim(0), x.dim(1)};
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end());
    for (int i = 0; i < p.nsp; ++i) {
      KILN_ASSIGN_OR_RETURN(int64_t v, window_out_size(name, p, i, in_sp[i]));
      out.push_back(v);
    }
    PoolGeo g = make_pool_geo(in_sp, std::vector<int64_t>(out.begin() + 2, out.end()), p);
    Tensor& y = ctx.allocate_output(0, x.dtype(), out);
    int64_t* idx = nullptr;
    if (ctx.num_outputs() > 1) idx = ctx.allocate_output(1, DataType::kINT64, out).data<int64_t>();
    int64_t planes = x.dim(0) * x.dim(1);
    if (kind == PoolKind::kMax) {
      switch (x.dtype()) {
        case DataType::kINT8: pool_kernel<int8_t>(g, planes, o, x.data<int8_t>(), y.data<int8_t>(), idx); return Status::Ok();
        case DataType::kUINT8: pool_kernel<uint8_t>(g, planes, o, x.data<uint8_t>(), y.data<uint8_t>(), idx); return Status::Ok();
        default: break;
      }
    }
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), name,
                              pool_kernel<scalar_t>(g, planes, o, x.data<scalar_t>(), y.data<scalar_t>(), idx));
    return Status::Ok();
  };
  return s;
}

OpSchema make_global_pool(const std::string& name, PoolKind kind) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 1;
  if (kind == PoolKind::kLp) s.attrs = {{"p", AttrType::kINT}};
  s.dtypes = kind == PoolKind::kMax ? maxpool_types() : float_types();
  s.infer = [name](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    if (!x.rank_known) return unsupported(name + ": X must have a known rank");
    if (x.shape.size() < 2) return invalid_model(name + ": X must have rank >= 2 (N, C, spatial...), got " + shape_to_string(x.shape));
    Shape out = {x.shape[0], x.shape[1]};
    out.resize(x.shape.size(), Dim(1));
    ctx.output(0) = make_info(x.dtype, out);
    return Status::Ok();
  };
  s.compute = [name, kind](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    if (x.rank() < 2) return invalid_argument(name + ": X must have rank >= 2, got " + dims_to_string(x.shape()));
    KILN_ASSIGN_OR_RETURN(PoolOptions o, pool_options(name, kind, ctx.attrs()));
    std::vector<int64_t> out = {x.dim(0), x.dim(1)};
    out.resize(x.rank(), 1);
    Tensor& y = ctx.allocate_output(0, x.dtype(), out);
    int64_t planes = x.dim(0) * x.dim(1);
    int64_t size = product(x.shape(), 2);
    if (kind == PoolKind::kMax) {
      switch (x.dtype()) {
        case DataType::kINT8: global_kernel<int8_t>(planes, size, o, x.data<int8_t>(), y.data<int8_t>()); return Status::Ok();
        case DataType::kUINT8: global_kernel<uint8_t>(planes, size, o, x.data<uint8_t>(), y.data<uint8_t>()); return Status::Ok();
        default: break;
      }
    }
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), name, global_kernel<scalar_t>(planes, size, o, x.data<scalar_t>(), y.data<scalar_t>()));
    return Status::Ok();
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(MaxPool) { return make_pool("MaxPool", PoolKind::kMax); }
KILN_REGISTER_OP(AveragePool) { return make_pool("AveragePool", PoolKind::kAverage); }
KILN_REGISTER_OP(LpPool) { return make_pool("LpPool", PoolKind::kLp); }
KILN_REGISTER_OP(GlobalMaxPool) { return make_global_pool("GlobalMaxPool", PoolKind::kMax); }
KILN_REGISTER_OP(GlobalAveragePool) { return make_global_pool("GlobalAveragePool", PoolKind::kAverage); }
KILN_REGISTER_OP(GlobalLpPool) { return make_global_pool("GlobalLpPool", PoolKind::kLp); }

}  // namespace kiln::ops
