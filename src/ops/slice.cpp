// Slice: strided sub-tensor selection (attributes before opset 10, inputs after; negative steps allowed).
#include <algorithm>
#include <climits>
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

struct SliceParams {
  std::vector<int64_t> starts, ends, axes, steps;
};

// One axis after clamping as the spec says: first element, step, element count.
struct AxisRange {
  int64_t start = 0, step = 1, count = 0;
};

AxisRange resolve_axis(int64_t s, int64_t e, int64_t step, int64_t dim) {
  if (s < 0) s += dim;
  if (e < 0) e += dim;
  AxisRange r;
  r.step = step;
  if (step > 0) {
    s = std::clamp<int64_t>(s, 0, dim);
    e = std::clamp<int64_t>(e, 0, dim);
    r.count = e > s ? (e - s + step - 1) / step : 0;
  } else {
    s = std::clamp<int64_t>(s, 0, dim - 1);
    e = std::clamp<int64_t>(e, -1, dim - 1);
    r.count = s > e ? (s - e - step - 1) / -step : 0;
  }
  r.start = s;
  return r;
}

// Checks lengths and fills default axes/steps; rank is the data rank.
Status complete_params(SliceParams& p, int64_t rank) {
  auto n = p.starts.size();
  if (p.ends.size() != n)
    return invalid_model("Slice: starts has " + std::to_string(n) + " entries but ends has " +
                         std::to_string(p.ends.size()));
  if (p.axes.empty()) {
    if (n > static_cast<size_t>(rank))
      return invalid_model("Slice: " + std::to_string(n) + " starts given for an input of rank " + std::to_string(rank));
    for (size_t i = 0; i < n; ++i) p.axes.push_back(static_cast<int64_t>(i));
  }
  if (p.steps.empty()) p.steps.assign(n, 1);
  if (p.axes.size() != n || p.steps.size() != n)
    return invalid_model("Slice: starts, ends, axes and steps must have the same length, found " + std::to_string(n) +
                         ", " + std::to_string(p.ends.size()) + ", " + std::to_string(p.axes.size()) + ", " +
                         std::to_string(p.steps.size()));
  std::vector<bool> seen(rank, false);
  for (size_t i = 0; i < n; ++i) {
    KILN_ASSIGN_OR_RETURN(p.axes[i], normalize_axis(p.axes[i], rank, "Slice axis"));
    if (seen[p.axes[i]]) return invalid_model("Slice: axis " + std::to_string(p.axes[i]) + " is repeated in axes");
    seen[p.axes[i]] = true;
    if (p.steps[i] == 0) return invalid_model("Slice: steps must be non-zero");
  }
  return Status::Ok();
}

// Per-axis ranges over the whole input (untouched axes take everything).
std::vector<AxisRange> ranges_for(const SliceParams& p, const std::vector<int64_t>& dims) {
  std::vector<AxisRange> r(dims.size());
  for (size_t a = 0; a < dims.size(); ++a) r[a] = AxisRange{0, 1, dims[a]};
  for (size_t i = 0; i < p.axes.size(); ++i)
    r[p.axes[i]] = resolve_axis(p.starts[i], p.ends[i], p.steps[i], dims[p.axes[i]]);
  return r;
}

// Copies the selected elements; the innermost axis is a memcpy when its step is 1.
void slice_copy(const Tensor& in, const std::vector<AxisRange>& rg, Tensor& out) {
  const int r = in.rank();
  const size_t es = dtype_size(in.dtype());
  if (out.numel() == 0) return;
  if (r == 0) {
    std::memcpy(out.raw(), in.raw(), es);
    return;
  }
  auto st = strides_of(in.shape());
  int64_t base = 0;
  std::vector<int64_t> step_st(r);
  for (int a = 0; a < r; ++a) {
    base += rg[a].start * st[a];
    step_st[a] = rg[a].step * st[a];
  }
  const uint8_t* src = static_cast<const uint8_t*>(in.raw());
  uint8_t* dst = static_cast<uint8_t*>(out.raw());
  const int64_t inner = rg[r - 1].count;
  const int64_t inner_st = step_st[r - 1];
  std::vector<int64_t> idx(r, 0);
  int64_t off = base;
  const int64_t n = out.numel();
  for (int64_t o = 0; o < n; o += inner) {
    if (inner_st == 1) {
      std::memcpy(dst + o * es, src + off * es, inner * es);
    } else {
      for (int64_t k = 0; k < inner; ++k) std::memcpy(dst + (o + k) * es, src + (off + k * inner_st) * es, es);
    }
    for (int a = r - 2; a >= 0; --a) {
      off += step_st[a];
      if (++idx[a] < rg[a].count) break;
      off -= step_st[a] * rg[a].count;
      idx[a] = 0;
    }
  }
}

}  // namespace

KILN_REGISTER_OP(Slice) {
  OpSchema s;
  s.name = "Slice";
  s.min_inputs = 1;
  s.max_inputs = 5;
  s.attrs = {{"starts", AttrType::kINTS}, {"ends", AttrType::kINTS}, {"axes", AttrType::kINTS}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    if (!in.rank_known) {
      o.rank_known = false;
      return Status::Ok();
    }
    const int64_t rank = static_cast<int64_t>(in.shape.size());
    SliceParams p;
    bool known = true;
    std::optional<std::vector<int64_t>> axes_only;  // axes known while starts/ends are not
    if (ctx.opset() < 10) {
      KILN_ASSIGN_OR_RETURN(p.starts, ctx.attrs().get_ints("starts"));
      KILN_ASSIGN_OR_RETURN(p.ends, ctx.attrs().get_ints("ends"));
      KILN_ASSIGN_OR_RETURN(p.axes, ctx.attrs().get_ints("axes", {}));
    } else {
      if (!ctx.has_input(1) || !ctx.has_input(2)) return invalid_model("Slice: inputs 'starts' and 'ends' are required");
      auto get = [&](int i, std::vector<int64_t>& v) {
        if (!ctx.has_input(i)) return true;
        auto k = known_static_values(ctx.input(i));
        if (k) v = *k;
        return k.has_value();
      };
      bool bounds = get(1, p.starts) & get(2, p.ends) & get(4, p.steps);
      bool axes = get(3, p.axes);
      known = bounds && axes;
      if (!known && axes && ctx.has_input(3)) axes_only = p.axes;
    }
    o.shape = in.shape;
    if (!known) {
      // Without the bounds, every sliced axis gets a fresh size (every axis when axes are unknown too).
      if (axes_only) {
        for (auto a : *axes_only) {
          KILN_ASSIGN_OR_RETURN(int64_t n, normalize_axis(a, rank, "Slice axis"));
          o.shape[n] = ctx.fresh_dim();
        }
      } else {
        for (auto& d : o.shape) d = ctx.fresh_dim();
      }
      return Status::Ok();
    }
    KILN_RETURN_IF_ERROR(complete_params(p, rank));
    for (size_t i = 0; i < p.axes.size(); ++i) {
      const Dim& d = in.shape[p.axes[i]];
      if (d.is_static()) {
        o.shape[p.axes[i]] = Dim(resolve_axis(p.starts[i], p.ends[i], p.steps[i], d.value).count);
      } else if (p.steps[i] == 1 && p.starts[i] == 0 && p.ends[i] >= INT32_MAX) {
        o.shape[p.axes[i]] = d;  // the whole axis
      } else {
        o.shape[p.axes[i]] = ctx.fresh_dim();
      }
    }
    auto value = known_values(in);
    if (value && rank == 1 && static_cast<int64_t>(value->size()) == (in.shape[0].is_static() ? in.shape[0].value : -2)) {
      auto rg = ranges_for(p, {static_cast<int64_t>(value->size())});
      std::vector<Dim> v;
      for (int64_t k = 0; k < rg[0].count; ++k) v.push_back((*value)[rg[0].start + k * rg[0].step]);
      o.value = v;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    SliceParams p;
    if (ctx.opset() < 10) {
      KILN_ASSIGN_OR_RETURN(p.starts, ctx.attrs().get_ints("starts"));
      KILN_ASSIGN_OR_RETURN(p.ends, ctx.attrs().get_ints("ends"));
      KILN_ASSIGN_OR_RETURN(p.axes, ctx.attrs().get_ints("axes", {}));
    } else {
      KILN_ASSIGN_OR_RETURN(p.starts, tensor_to_ints(ctx.input(1)));
      KILN_ASSIGN_OR_RETURN(p.ends, tensor_to_ints(ctx.input(2)));
      if (ctx.has_input(3)) { KILN_ASSIGN_OR_RETURN(p.axes, tensor_to_ints(ctx.input(3))); }
      if (ctx.has_input(4)) { KILN_ASSIGN_OR_RETURN(p.steps, tensor_to_ints(ctx.input(4))); }
    }
    Status st = complete_params(p, in.rank());
    if (!st.ok()) return invalid_argument(st.message());
    auto rg = ranges_for(p, in.shape());
    std::vector<int64_t> out_dims;
    for (auto& a : rg) out_dims.push_back(a.count);
    Tensor& out = ctx.allocate_output(0, in.dtype(), out_dims);
    slice_copy(in, rg, out);
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
