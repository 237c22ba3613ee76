// Normalization ops: BatchNormalization (inference and training mode), LayerNormalization, InstanceNormalization,
// GroupNormalization, LRN, MeanVarianceNormalization, LpNormalization.
#include <cmath>
#include <type_traits>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

template <typename T>
using NormAcc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
inline NormAcc<T> ld(const T& v) { return static_cast<NormAcc<T>>(static_cast<std::conditional_t<std::is_same_v<T, double>, double, float>>(v)); }

// Per-channel (or per-element) parameters as doubles, whatever their stored type.
Result<std::vector<double>> param_vector(const std::string& op, const Tensor& t, int64_t expect, const char* what) {
  if (t.numel() != expect)
    return invalid_argument(op + ": " + what + " must have " + std::to_string(expect) + " elements, got shape " +
                            dims_to_string(t.shape()));
  return t.to_f64_vector();
}

// Mean and biased variance of n strided values, two-pass for accuracy.
template <typename T>
void mean_var(const T* x, int64_t n, int64_t stride, NormAcc<T>* mean, NormAcc<T>* var) {
  using A = NormAcc<T>;
  A s = 0;
  for (int64_t i = 0; i < n; ++i) s += ld(x[i * stride]);
  A m = n > 0 ? s / static_cast<A>(n) : A(0);
  A v = 0;
  for (int64_t i = 0; i < n; ++i) {
    A d = ld(x[i * stride]) - m;
    v += d * d;
  }
  *mean = m;
  *var = n > 0 ? v / static_cast<A>(n) : A(0);
}

Status infer_first_like_input(InferContext& ctx) {
  ctx.output(0) = make_info(ctx.input(0).dtype, ctx.input(0).shape);
  ctx.output(0).rank_known = ctx.input(0).rank_known;
  return Status::Ok();
}

// Training mode: opset 14+ says so with an attribute; before that, asking for the running statistics did.
Result<bool> batchnorm_training(const Attributes& attrs, int opset, int num_outputs) {
  KILN_ASSIGN_OR_RETURN(int64_t training, attrs.get_int("training_mode", 0));
  if (training != 0 && training != 1)
    return invalid_model("BatchNormalization: training_mode must be 0 or 1, got " + std::to_string(training));
  if (num_outputs > 3)
    return unsupported("BatchNormalization: the saved_mean/saved_var outputs of opsets before 14 are not supported (got " +
                       std::to_string(num_outputs) + " outputs; Y, running_mean and running_var are)");
  if (opset >= 14 && training == 0 && num_outputs > 1)
    return invalid_model("BatchNormalization: running_mean/running_var outputs exist only with training_mode=1");
  return training == 1 || num_outputs > 1;
}

}  // namespace

KILN_REGISTER_OP(BatchNormalization) {
  OpSchema s;
  s.name = "BatchNormalization";
  s.min_inputs = s.max_inputs = 5;
  s.min_outputs = 1;
  s.max_outputs = 5;
  s.attrs = {{"epsilon", AttrType::kFLOAT}, {"momentum", AttrType::kFLOAT}, {"spatial", AttrType::kINT},
             {"training_mode", AttrType::kINT}, {"is_test", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(batchnorm_training(ctx.attrs(), ctx.opset(), ctx.num_outputs()).status());
    KILN_RETURN_IF_ERROR(infer_first_like_input(ctx));
    // running_mean / running_var: per channel, in the statistics' type (which opset 15 lets differ from X's).
    for (int i = 1; i < ctx.num_outputs(); ++i) {
      ctx.output(i) = make_info(ctx.input(2 + i).dtype, ctx.input(2 + i).shape);
      ctx.output(i).rank_known = ctx.input(2 + i).rank_known;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "BatchNormalization";
    KILN_ASSIGN_OR_RETURN(bool training, batchnorm_training(ctx.attrs(), ctx.opset(), ctx.num_outputs()));
    const Tensor& x = ctx.input(0);
    if (x.rank() < 2) return invalid_argument(op + ": X must have rank >= 2 (N, C, ...), got " + dims_to_string(x.shape()));
    KILN_ASSIGN_OR_RETURN(float eps, ctx.attrs().get_float("epsilon", 1e-5f));
    KILN_ASSIGN_OR_RETURN(int64_t spatial, ctx.attrs().get_int("spatial", 1));
    const int64_t n = x.dim(0), c = x.dim(1), inner = product(x.shape(), 2);
    // spatial=0 (opset 7-8) keeps statistics per channel and position.
    int64_t pc = spatial != 0 ? c : c * inner;
    if (spatial == 0 && ctx.input(1).numel() == c) pc = c;
    if (training && pc != c)
      return unsupported(op + ": training mode with per-position statistics (spatial=0) is not supported");
    KILN_ASSIGN_OR_RETURN(auto sc, param_vector(op, ctx.input(1), pc, "scale"));
    KILN_ASSIGN_OR_RETURN(auto bi, param_vector(op, ctx.input(2), pc, "B"));
    KILN_ASSIGN_OR_RETURN(auto mn, param_vector(op, ctx.input(3), pc, "input_mean"));
    KILN_ASSIGN_OR_RETURN(auto vr, param_vector(op, ctx.input(4), pc, "input_var"));
    if (training) {
      // Normalize with this batch's statistics (biased variance, over N and the spatial dims) and blend them
      // into the running ones: running = input * momentum + batch * (1 - momentum).
      KILN_ASSIGN_OR_RETURN(float momentum, ctx.attrs().get_float("momentum", 0.9f));
      const std::vector<double> xs = x.to_f64_vector();
      const double count = static_cast<double>(n * inner);
      std::vector<double> bm(c, 0.0), bv(c, 0.0);
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t i = 0; i < inner; ++i) bm[ci] += xs[(ni * c + ci) * inner + i];
      for (auto& m : bm) m = count > 0 ? m / count : 0.0;
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t i = 0; i < inner; ++i) {
            const double d = xs[(ni * c + ci) * inner + i] - bm[ci];
            bv[ci] += d * d;
          }
      for (auto& v : bv) v = count > 0 ? v / count : 0.0;
      const double mo = momentum;
      for (int i = 1; i < ctx.num_outputs(); ++i) {
        const Tensor& in_stat = ctx.input(2 + i);
        const std::vector<double>& batch = i == 1 ? bm : bv;
        const std::vector<double>& prev = i == 1 ? mn : vr;
        Tensor& out = ctx.allocate_output(i, in_stat.dtype(), in_stat.shape());
        KILN_DISPATCH_FLOAT_TYPES(in_stat.dtype(), op, {
          scalar_t* p = out.data<scalar_t>();
          for (int64_t ci = 0; ci < c; ++ci)
            p[ci] = static_cast<scalar_t>(static_cast<NormAcc<scalar_t>>(prev[ci] * mo + batch[ci] * (1.0 - mo)));
        });
      }
      mn = bm;
      vr = bv;
    }
    std::vector<double> a(pc), b(pc);
    for (int64_t i = 0; i < pc; ++i) {
      a[i] = sc[i] / std::sqrt(vr[i] + static_cast<double>(eps));
      b[i] = bi[i] - mn[i] * a[i];
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), op, {
      using A = NormAcc<scalar_t>;
      std::vector<A> af(a.begin(), a.end()), bf(b.begin(), b.end());
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t ci = 0; ci < c; ++ci) {
          int64_t base = (ni * c + ci) * inner;
          for (int64_t i = 0; i < inner; ++i) {
            int64_t p = pc == c ? ci : ci * inner + i;
            yp[base + i] = static_cast<scalar_t>(ld(xp[base + i]) * af[p] + bf[p]);
          }
        }
    });
    return Status::Ok();
  };
  return s;
}

namespace {

template <typename T>
void layer_norm_kernel(const Tensor& x, int64_t axis, float eps, const Tensor& scale, const Tensor* bias, Tensor& y,
                       Tensor* mean_out, Tensor* inv_out) {
  using A = NormAcc<T>;
  const int64_t outer = product(x.shape(), 0, axis), inner = product(x.shape(), axis);
  std::vector<int64_t> norm_dims(x.shape().begin() + axis, x.shape().end());
  auto sst = broadcast_strides(scale.shape(), norm_dims);
  std::vector<A> sv(inner), bv(inner, A(0));
  // Expand scale/bias to the normalized shape once, so the main loop is contiguous.
  {
    auto sd = scale.to_f64_vector();
    std::vector<double> bd;
    std::vector<int64_t> bst;
    if (bias) { bd = bias->to_f64_vector(); bst = broadcast_strides(bias->shape(), norm_dims); }
    std::vector<int64_t> idx(norm_dims.size(), 0);
    for (int64_t i = 0; i < inner; ++i) {
      int64_t so = 0, bo = 0;
      for (size_t d = 0; d < idx.size(); ++d) { so += idx[d] * sst[d]; if (bias) bo += idx[d] * bst[d]; }
      sv[i] = static_cast<A>(sd[so]);
      if (bias) bv[i] = static_cast<A>(bd[bo]);
      for (int d = static_cast<int>(idx.size()) - 1; d >= 0; --d) {
        if (++idx[d] < norm_dims[d]) break;
        idx[d] = 0;
      }
    }
  }
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  for (int64_t o = 0; o < outer; ++o) {
    A m, v;
    mean_var<T>(xp + o * inner, inner, 1, &m, &v);
    A inv = A(1) / std::sqrt(v + static_cast<A>(eps));
    for (int64_t i = 0; i < inner; ++i) yp[o * inner + i] = static_cast<T>((ld(xp[o * inner + i]) - m) * inv * sv[i] + bv[i]);
    if (mean_out) {
      if (mean_out->dtype() == DataType::kDOUBLE) mean_out->data<double>()[o] = m;
      else mean_out->data<float>()[o] = static_cast<float>(m);
    }
    if (inv_out) {
      if (inv_out->dtype() == DataType::kDOUBLE) inv_out->data<double>()[o] = inv;
      else inv_out->data<float>()[o] = static_cast<float>(inv);
    }
  }
}

Result<DataType> stash_dtype(const Attributes& attrs, DataType x) {
  KILN_ASSIGN_OR_RETURN(int64_t st, attrs.get_int("stash_type", 1));
  if (st != 1 && st != 11)
    return invalid_model("LayerNormalization: stash_type must be 1 (float) or 11 (double), got " + std::to_string(st));
  return (st == 11 || x == DataType::kDOUBLE) ? DataType::kDOUBLE : DataType::kFLOAT;
}

}  // namespace

KILN_REGISTER_OP(LayerNormalization) {
  OpSchema s;
  s.name = "LayerNormalization";
  s.since_opset = 17;
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.max_outputs = 3;
  s.attrs = {{"axis", AttrType::kINT}, {"epsilon", AttrType::kFLOAT}, {"stash_type", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    KILN_RETURN_IF_ERROR(infer_first_like_input(ctx));
    if (ctx.num_outputs() > 1) {
      if (!x.rank_known) return unsupported("LayerNormalization: X must have a known rank for the Mean output");
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
      KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, x.shape.size(), "LayerNormalization: axis"));
      KILN_ASSIGN_OR_RETURN(DataType u, stash_dtype(ctx.attrs(), x.dtype));
      Shape ms(x.shape.begin(), x.shape.begin() + axis);
      ms.resize(x.shape.size(), Dim(1));
      for (int i = 1; i < ctx.num_outputs(); ++i) ctx.output(i) = make_info(u, ms);
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, x.rank(), "LayerNormalization: axis"));
    KILN_ASSIGN_OR_RETURN(float eps, ctx.attrs().get_float("epsilon", 1e-5f));
    KILN_ASSIGN_OR_RETURN(DataType u, stash_dtype(ctx.attrs(), x.dtype()));
    std::vector<int64_t> norm_dims(x.shape().begin() + axis, x.shape().end());
    for (int i = 1; i <= 2; ++i) {
      if (!ctx.has_input(i)) continue;
      auto r = broadcast_dims({ctx.input(i).shape(), norm_dims});
      if (!r.ok() || r.value() != norm_dims)
        return invalid_argument(std::string("LayerNormalization: ") + (i == 1 ? "Scale" : "B") + " of shape " +
                                dims_to_string(ctx.input(i).shape()) + " does not broadcast to the normalized shape " +
                                dims_to_string(norm_dims));
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    std::vector<int64_t> ms(x.shape().begin(), x.shape().begin() + axis);
    ms.resize(x.rank(), 1);
    Tensor* mean = ctx.num_outputs() > 1 ? &ctx.allocate_output(1, u, ms) : nullptr;
    Tensor* inv = ctx.num_outputs() > 2 ? &ctx.allocate_output(2, u, ms) : nullptr;
    const Tensor* b = ctx.has_input(2) ? &ctx.input(2) : nullptr;
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "LayerNormalization",
                              layer_norm_kernel<scalar_t>(x, axis, eps, ctx.input(1), b, y, mean, inv));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(InstanceNormalization) {
  OpSchema s;
  s.name = "InstanceNormalization";
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"epsilon", AttrType::kFLOAT}};
  s.dtypes = float_types();
  s.infer = infer_first_like_input;
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "InstanceNormalization";
    const Tensor& x = ctx.input(0);
    if (x.rank() < 3) return invalid_argument(op + ": X must have rank >= 3 (N, C, spatial...), got " + dims_to_string(x.shape()));
    KILN_ASSIGN_OR_RETURN(float eps, ctx.attrs().get_float("epsilon", 1e-5f));
    const int64_t n = x.dim(0), c = x.dim(1), inner = product(x.shape(), 2);
    KILN_ASSIGN_OR_RETURN(auto sc, param_vector(op, ctx.input(1), c, "scale"));
    KILN_ASSIGN_OR_RETURN(auto bi, param_vector(op, ctx.input(2), c, "B"));
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), op, {
      using A = NormAcc<scalar_t>;
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t pl = 0; pl < n * c; ++pl) {
        A m, v;
        mean_var<scalar_t>(xp + pl * inner, inner, 1, &m, &v);
        A a = static_cast<A>(sc[pl % c]) / std::sqrt(v + static_cast<A>(eps));
        A b = static_cast<A>(bi[pl % c]) - m * a;
        for (int64_t i = 0; i < inner; ++i) yp[pl * inner + i] = static_cast<scalar_t>(ld(xp[pl * inner + i]) * a + b);
      }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(GroupNormalization) {
  OpSchema s;
  s.name = "GroupNormalization";
  s.since_opset = 18;
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"epsilon", AttrType::kFLOAT}, {"num_groups", AttrType::kINT, AttrRequirement::kRequired},
             {"stash_type", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = infer_first_like_input;
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "GroupNormalization";
    const Tensor& x = ctx.input(0);
    if (x.rank() < 2) return invalid_argument(op + ": X must have rank >= 2 (N, C, ...), got " + dims_to_string(x.shape()));
    KILN_ASSIGN_OR_RETURN(float eps, ctx.attrs().get_float("epsilon", 1e-5f));
    KILN_ASSIGN_OR_RETURN(int64_t groups, ctx.attrs().get_int("num_groups"));
    const int64_t n = x.dim(0), c = x.dim(1), inner = product(x.shape(), 2);
    if (groups < 1 || c % groups != 0)
      return invalid_argument(op + ": num_groups " + std::to_string(groups) + " must be >= 1 and divide the channel count " + std::to_string(c));
    // Opset 18 gives scale/bias per group, opset 21 per channel; accept either by size.
    int64_t pc = ctx.input(1).numel() == c ? c : groups;
    KILN_ASSIGN_OR_RETURN(auto sc, param_vector(op, ctx.input(1), pc, "scale"));
    KILN_ASSIGN_OR_RETURN(auto bi, param_vector(op, ctx.input(2), pc, "bias"));
    const int64_t cpg = c / groups, gsize = cpg * inner;
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), op, {
      using A = NormAcc<scalar_t>;
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t g = 0; g < groups; ++g) {
          int64_t base = (ni * groups + g) * gsize;
          A m, v;
          mean_var<scalar_t>(xp + base, gsize, 1, &m, &v);
          A inv = A(1) / std::sqrt(v + static_cast<A>(eps));
          for (int64_t cc = 0; cc < cpg; ++cc) {
            int64_t p = pc == c ? g * cpg + cc : g;
            A a = static_cast<A>(sc[p]) * inv, b = static_cast<A>(bi[p]) - m * a;
            for (int64_t i = 0; i < inner; ++i) {
              int64_t off = base + cc * inner + i;
              yp[off] = static_cast<scalar_t>(ld(xp[off]) * a + b);
            }
          }
        }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(LRN) {
  OpSchema s;
  s.name = "LRN";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"alpha", AttrType::kFLOAT}, {"beta", AttrType::kFLOAT}, {"bias", AttrType::kFLOAT},
             {"size", AttrType::kINT, AttrRequirement::kRequired}};
  s.dtypes = float_types();
  s.infer = infer_first_like_input;
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    if (x.rank() < 2) return invalid_argument("LRN: X must have rank >= 2 (N, C, ...), got " + dims_to_string(x.shape()));
    const auto& at = ctx.attrs();
    KILN_ASSIGN_OR_RETURN(float alpha, at.get_float("alpha", 1e-4f));
    KILN_ASSIGN_OR_RETURN(float beta, at.get_float("beta", 0.75f));
    KILN_ASSIGN_OR_RETURN(float bias, at.get_float("bias", 1.0f));
    KILN_ASSIGN_OR_RETURN(int64_t size, at.get_int("size"));
    if (size < 1) return invalid_model("LRN: size must be >= 1, got " + std::to_string(size));
    const int64_t n = x.dim(0), c = x.dim(1), inner = product(x.shape(), 2);
    const int64_t before = (size - 1) / 2, after = size - 1 - before;
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "LRN", {
      using A = NormAcc<scalar_t>;
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t i = 0; i < inner; ++i) {
            A sq = 0;
            for (int64_t cc = std::max<int64_t>(0, ci - before); cc <= std::min(c - 1, ci + after); ++cc) {
              A v = ld(xp[(ni * c + cc) * inner + i]);
              sq += v * v;
            }
            int64_t off = (ni * c + ci) * inner + i;
            A den = std::pow(static_cast<A>(bias) + static_cast<A>(alpha) / static_cast<A>(size) * sq, static_cast<A>(beta));
            yp[off] = static_cast<scalar_t>(ld(xp[off]) / den);
          }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(MeanVarianceNormalization) {
  OpSchema s;
  s.name = "MeanVarianceNormalization";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"axes", AttrType::kINTS}};
  s.dtypes = float_types();
  s.infer = infer_first_like_input;
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto axes, ctx.attrs().get_ints("axes", {0, 2, 3}));
    std::vector<bool> reduced(x.rank(), false);
    for (auto a : axes) {
      KILN_ASSIGN_OR_RETURN(int64_t na, normalize_axis(a, x.rank(), "MeanVarianceNormalization: axis"));
      reduced[na] = true;
    }
    // Map every element to its statistics group: the element's index with the reduced axes dropped.
    std::vector<int64_t> gdims;
    for (int i = 0; i < x.rank(); ++i) gdims.push_back(reduced[i] ? 1 : x.dim(i));
    auto gst = broadcast_strides(gdims, x.shape());
    const int64_t ng = product(gdims), total = x.numel();
    std::vector<int64_t> group(total);
    {
      std::vector<int64_t> idx(x.rank(), 0);
      for (int64_t i = 0; i < total; ++i) {
        int64_t g = 0;
        for (int d = 0; d < x.rank(); ++d) g += idx[d] * gst[d];
        group[i] = g;
        for (int d = x.rank() - 1; d >= 0; --d) {
          if (++idx[d] < x.dim(d)) break;
          idx[d] = 0;
        }
      }
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "MeanVarianceNormalization", {
      using A = NormAcc<scalar_t>;
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      std::vector<A> sum(ng, 0), sq(ng, 0);
      std::vector<int64_t> cnt(ng, 0);
      for (int64_t i = 0; i < total; ++i) { sum[group[i]] += ld(xp[i]); ++cnt[group[i]]; }
      for (int64_t g = 0; g < ng; ++g) sum[g] = cnt[g] ? sum[g] / static_cast<A>(cnt[g]) : A(0);
      for (int64_t i = 0; i < total; ++i) { A d = ld(xp[i]) - sum[group[i]]; sq[group[i]] += d * d; }
      for (int64_t g = 0; g < ng; ++g) sq[g] = std::sqrt(cnt[g] ? sq[g] / static_cast<A>(cnt[g]) : A(0)) + static_cast<A>(1e-9);
      for (int64_t i = 0; i < total; ++i) yp[i] = static_cast<scalar_t>((ld(xp[i]) - sum[group[i]]) / sq[group[i]]);
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(LpNormalization) {
  OpSchema s;
  s.name = "LpNormalization";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"axis", AttrType::kINT}, {"p", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = infer_first_like_input;
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, x.rank(), "LpNormalization: axis"));
    KILN_ASSIGN_OR_RETURN(int64_t p, ctx.attrs().get_int("p", 2));
    if (p != 1 && p != 2) return invalid_model("LpNormalization: p must be 1 or 2, got " + std::to_string(p));
    const int64_t outer = product(x.shape(), 0, axis), len = x.dim(axis), inner = product(x.shape(), axis + 1);
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "LpNormalization", {
      using A = NormAcc<scalar_t>;
      const scalar_t* xp = x.data<scalar_t>();
      scalar_t* yp = y.data<scalar_t>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t base = o * len * inner + i;
          A acc = 0;
          for (int64_t k = 0; k < len; ++k) {
            A v = ld(xp[base + k * inner]);
            acc += p == 1 ? std::fabs(v) : v * v;
          }
          A norm = p == 1 ? acc : std::sqrt(acc);
          for (int64_t k = 0; k < len; ++k)
            yp[base + k * inner] = static_cast<scalar_t>(norm == 0 ? A(0) : ld(xp[base + k * inner]) / norm);
        }
    });
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
