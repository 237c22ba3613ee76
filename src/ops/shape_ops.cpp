// Shape-manipulating operators: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Expand.
#include <algorithm>
#include <cstring>
#include <set>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Convention for `value` entries: a named symbol is a run-time size, an unnamed negative entry is the literal
// integer (Reshape's -1). Unnamed unknown dims therefore get a fresh name before entering a value.
std::vector<Dim> dims_as_value(const Shape& s, InferContext& ctx) {
  std::vector<Dim> v;
  for (auto& d : s) v.push_back(d.is_static() || !d.sym.empty() ? d : ctx.fresh_dim());
  return v;
}

// Product of dims; symbolic only when a single non-1 symbolic factor remains.
Dim dim_product(const std::vector<Dim>& dims, InferContext& ctx) {
  int64_t p = 1;
  const Dim* sym = nullptr;
  int nsym = 0;
  for (auto& d : dims) {
    if (d.is_static()) p *= d.value;
    else { sym = &d; ++nsym; }
  }
  if (nsym == 0) return Dim(p);
  if (p == 0) return Dim(0);
  if (nsym == 1 && p == 1 && !sym->sym.empty()) return *sym;
  return ctx.fresh_dim();
}

Result<std::vector<int64_t>> input_ints(const ComputeContext& ctx, int i, const char* op, const char* what) {
  auto r = tensor_to_ints(ctx.input(i));
  if (!r.ok()) return invalid_argument(std::string(op) + ": input '" + what + "': " + r.status().message());
  return r;
}

// The axes of Squeeze/Unsqueeze: the attribute before opset 13, the optional second input after.
Result<std::optional<std::vector<int64_t>>> infer_axes(InferContext& ctx, bool* unknown) {
  *unknown = false;
  if (ctx.opset() < 13 || ctx.attrs().has("axes")) {
    if (!ctx.attrs().has("axes")) return std::optional<std::vector<int64_t>>();
    KILN_ASSIGN_OR_RETURN(auto a, ctx.attrs().get_ints("axes"));
    return std::optional<std::vector<int64_t>>(a);
  }
  if (!ctx.has_input(1)) return std::optional<std::vector<int64_t>>();
  auto v = known_static_values(ctx.input(1));
  if (!v) *unknown = true;
  return v;
}

Result<std::optional<std::vector<int64_t>>> compute_axes(ComputeContext& ctx, const char* op) {
  if (ctx.opset() < 13 || ctx.attrs().has("axes")) {
    if (!ctx.attrs().has("axes")) return std::optional<std::vector<int64_t>>();
    KILN_ASSIGN_OR_RETURN(auto a, ctx.attrs().get_ints("axes"));
    return std::optional<std::vector<int64_t>>(a);
  }
  if (!ctx.has_input(1)) return std::optional<std::vector<int64_t>>();
  KILN_ASSIGN_OR_RETURN(auto a, input_ints(ctx, 1, op, "axes"));
  return std::optional<std::vector<int64_t>>(a);
}

Result<std::vector<int64_t>> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const std::string& op) {
  std::vector<int64_t> r;
  for (auto a : axes) {
    KILN_ASSIGN_OR_RETURN(int64_t n, normalize_axis(a, rank, op + " axis"));
    if (std::find(r.begin(), r.end(), n) != r.end())
      return invalid_model(op + ": axis " + std::to_string(a) + " is repeated in axes");
    r.push_back(n);
  }
  std::sort(r.begin(), r.end());
  return r;
}

// --- Shape ---

std::pair<int64_t, int64_t> shape_range(const Attributes& attrs, int64_t rank) {
  int64_t start = attrs.get_int("start", 0).value();
  int64_t end = attrs.get_int("end", rank).value();
  auto clamp = [rank](int64_t x) { return std::clamp(x < 0 ? x + rank : x, int64_t{0}, rank); };
  start = clamp(start);
  end = clamp(end);
  return {start, std::max(start, end)};
}

// --- Reshape ---

// Resolves a Reshape target over symbolic dims. -1 is solved by cancelling equal symbols between input and
// target and dividing what is left, so [N,3,224,224] -> [N,-1] gives [N,150528].
Result<Shape> reshape_target(const Shape& in, const std::vector<Dim>& target, bool allowzero, InferContext* ctx) {
  Shape out;
  int infer_at = -1;
  for (size_t i = 0; i < target.size(); ++i) {
    const Dim& t = target[i];
    if (t.is_static() && t.value == 0 && !allowzero) {
      if (i >= in.size())
        return invalid_model("Reshape: target " + shape_to_string(target) + " has 0 at position " + std::to_string(i) +
                             " but the input " + shape_to_string(in) + " has only " + std::to_string(in.size()) + " dims");
      out.push_back(in[i]);
    } else if (!t.is_static() && t.sym.empty()) {
      if (t.value != -1)
        return invalid_model("Reshape: target entry " + std::to_string(t.value) + " is invalid (expected >= -1)");
      if (infer_at >= 0) return invalid_model("Reshape: target " + shape_to_string(target) + " has more than one -1");
      infer_at = static_cast<int>(i);
      out.push_back(Dim());
    } else {
      out.push_back(t);
    }
  }
  if (allowzero && infer_at >= 0)
    for (auto& d : out)
      if (d.is_static() && d.value == 0) return invalid_model("Reshape: allowzero=1 target cannot hold both 0 and -1");
  // Cancel equal symbols and static factors on both sides.
  std::vector<Dim> rest_in(in.begin(), in.end());
  int64_t out_static = 1;
  bool out_unknown = false;
  for (size_t i = 0; i < out.size(); ++i) {
    if (static_cast<int>(i) == infer_at) continue;
    const Dim& d = out[i];
    if (d.is_static()) {
      // A crafted target ([2^40, 2^40, 2^40]) overflows int64 (signed overflow: undefined).
      if (__builtin_mul_overflow(out_static, d.value, &out_static))
        return invalid_model("Reshape: target " + shape_to_string(target) + " has more elements than int64 can count");
      continue;
    }
    auto it = std::find(rest_in.begin(), rest_in.end(), d);
    if (it != rest_in.end()) rest_in.erase(it);
    else out_unknown = true;
  }
  int64_t in_static = 1;
  bool in_unknown = false;
  for (auto& d : rest_in) {
    if (!d.is_static()) in_unknown = true;
    else if (__builtin_mul_overflow(in_static, d.value, &in_static))
      return invalid_model("Reshape: input " + shape_to_string(in) + " has more elements than int64 can count");
  }
  if (infer_at >= 0) {
    if (!in_unknown && !out_unknown) {
      if (out_static == 0 || in_static % out_static != 0)
        return invalid_model("Reshape: cannot infer -1 in target " + shape_to_string(target) + " for input " +
                             shape_to_string(in) + ": " + std::to_string(in_static) + " elements are not divisible by " +
                             std::to_string(out_static));
      out[infer_at] = Dim(in_static / out_static);
    } else {
      // One leftover symbol with matching static parts is exactly that symbol.
      std::vector<Dim> syms;
      for (auto& d : rest_in)
        if (!d.is_static()) syms.push_back(d);
      if (!out_unknown && syms.size() == 1 && !syms[0].sym.empty() && in_static == out_static)
        out[infer_at] = syms[0];
      else
        out[infer_at] = ctx ? ctx->fresh_dim() : Dim();
    }
  } else if (!in_unknown && !out_unknown && in_static != out_static) {
    return invalid_model("Reshape: cannot reshape input " + shape_to_string(in) + " to " + shape_to_string(out) +
                         ": element counts differ (" + std::to_string(in_static) + " vs " + std::to_string(out_static) +
                         " after cancelling common dims)");
  }
  return out;
}

Status expand_compute(const Tensor& in, const std::vector<int64_t>& out_dims, Tensor& out) {
  const size_t es = dtype_size(in.dtype());
  const int r = static_cast<int>(out_dims.size());
  auto st = broadcast_strides(in.shape(), out_dims);
  const int64_t n = out.numel();
  if (n == 0) return Status::Ok();
  const uint8_t* src = static_cast<const uint8_t*>(in.raw());
  uint8_t* dst = static_cast<uint8_t*>(out.raw());
  // Copy runs along the innermost dim: contiguous when its input stride is 1, a splat when it is 0.
  const int64_t inner = out_dims[r - 1];
  const int64_t inner_st = st[r - 1];
  std::vector<int64_t> idx(r, 0);
  int64_t src_off = 0;
  for (int64_t o = 0; o < n; o += inner) {
    if (inner_st == 1) {
      std::memcpy(dst + o * es, src + src_off * es, inner * es);
    } else {
      for (int64_t k = 0; k < inner; ++k) std::memcpy(dst + (o + k) * es, src + (src_off + k * inner_st) * es, es);
    }
    for (int d = r - 2; d >= 0; --d) {
      src_off += st[d];
      if (++idx[d] < out_dims[d]) break;
      src_off -= st[d] * out_dims[d];
      idx[d] = 0;
    }
  }
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(Shape) {
  OpSchema s;
  s.name = "Shape";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"start", AttrType::kINT}, {"end", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = DataType::kINT64;
    if (!in.rank_known) {
      o.shape = {ctx.fresh_dim()};
      return Status::Ok();
    }
    auto [b, e] = shape_range(ctx.attrs(), static_cast<int64_t>(in.shape.size()));
    o.shape = {Dim(e - b)};
    auto all = dims_as_value(in.shape, ctx);
    o.value = std::vector<Dim>(all.begin() + b, all.begin() + e);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const auto& shp = ctx.input(0).shape();
    auto [b, e] = shape_range(ctx.attrs(), static_cast<int64_t>(shp.size()));
    Tensor& o = ctx.allocate_output(0, DataType::kINT64, {e - b});
    for (int64_t i = b; i < e; ++i) o.data<int64_t>()[i - b] = shp[i];
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Size) {
  OpSchema s;
  s.name = "Size";
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    ctx.output(0) = make_info(DataType::kINT64, {});
    if (in.rank_known) {
      Dim p = dim_product(in.shape, ctx);
      ctx.output(0).value = std::vector<Dim>{p};
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    Tensor& o = ctx.allocate_output(0, DataType::kINT64, {});
    o.data<int64_t>()[0] = ctx.input(0).numel();
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Reshape) {
  OpSchema s;
  s.name = "Reshape";
  s.since_opset = 5;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"allowzero", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    const TensorInfo& shp = ctx.input(1);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    KILN_ASSIGN_OR_RETURN(int64_t allowzero, ctx.attrs().get_int("allowzero", 0));
    if (auto tv = known_values(shp)) {
      if (!in.rank_known) {
        // Only entries that do not depend on the input are known.
        o.shape.clear();
        for (auto& d : *tv) o.shape.push_back(d.is_static() && (d.value > 0 || allowzero) ? d
                                              : (!d.sym.empty() ? d : ctx.fresh_dim()));
      } else {
        KILN_ASSIGN_OR_RETURN(o.shape, reshape_target(in.shape, *tv, allowzero != 0, &ctx));
      }
    } else if (shp.rank_known && shp.shape.size() == 1 && shp.shape[0].is_static()) {
      if (shp.shape[0].value > kMaxRank)
        return invalid_model("Reshape: the shape input has " + std::to_string(shp.shape[0].value) +
                             " entries; Kiln supports at most " + std::to_string(kMaxRank) + " dims");
      o.shape.clear();
      for (int64_t i = 0; i < shp.shape[0].value; ++i) o.shape.push_back(ctx.fresh_dim());
    } else {
      o.rank_known = false;
    }
    if (o.shape.size() <= 1) o.value = known_values(in);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto target, input_ints(ctx, 1, "Reshape", "shape"));
    KILN_ASSIGN_OR_RETURN(int64_t allowzero, ctx.attrs().get_int("allowzero", 0));
    std::vector<int64_t> out(target.size());
    int infer_at = -1;
    int64_t known = 1;
    for (size_t i = 0; i < target.size(); ++i) {
      int64_t t = target[i];
      if (t == 0 && !allowzero) {
        if (i >= static_cast<size_t>(in.rank()))
          return invalid_argument("Reshape: target " + dims_to_string(target) + " has 0 at position " +
                                  std::to_string(i) + " beyond the input rank " + std::to_string(in.rank()));
        t = in.shape()[i];
      } else if (t == -1) {
        if (infer_at >= 0) return invalid_argument("Reshape: target " + dims_to_string(target) + " has more than one -1");
        infer_at = static_cast<int>(i);
        continue;
      } else if (t < -1) {
        return invalid_argument("Reshape: target entry " + std::to_string(t) + " is invalid (expected >= -1)");
      }
      out[i] = t;
      known *= t;
    }
    if (infer_at >= 0) {
      if (known == 0 || in.numel() % known != 0)
        return invalid_argument("Reshape: cannot infer -1 in target " + dims_to_string(target) + " for input " +
                                dims_to_string(in.shape()) + " (" + std::to_string(in.numel()) + " elements)");
      out[infer_at] = in.numel() / known;
    } else if (known != in.numel()) {
      return invalid_argument("Reshape: cannot reshape input " + dims_to_string(in.shape()) + " (" +
                              std::to_string(in.numel()) + " elements) to " + dims_to_string(out) + " (" +
                              std::to_string(known) + " elements)");
    }
    ctx.set_output(0, in.reshaped(out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Flatten) {
  OpSchema s;
  s.name = "Flatten";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    if (!in.rank_known) {
      o.shape = {ctx.fresh_dim(), ctx.fresh_dim()};
      return Status::Ok();
    }
    int64_t r = static_cast<int64_t>(in.shape.size());
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 1));
    if (axis < -r || axis > r)
      return invalid_model("Flatten: axis " + std::to_string(axis) + " is out of range [" + std::to_string(-r) + ", " +
                           std::to_string(r) + "] for rank " + std::to_string(r));
    if (axis < 0) axis += r;
    o.shape = {dim_product(std::vector<Dim>(in.shape.begin(), in.shape.begin() + axis), ctx),
               dim_product(std::vector<Dim>(in.shape.begin() + axis, in.shape.end()), ctx)};
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    int64_t r = in.rank();
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 1));
    if (axis < -r || axis > r)
      return invalid_argument("Flatten: axis " + std::to_string(axis) + " is out of range [" + std::to_string(-r) +
                              ", " + std::to_string(r) + "] for rank " + std::to_string(r));
    if (axis < 0) axis += r;
    int64_t a = product(in.shape(), 0, axis), b = product(in.shape(), axis);
    ctx.set_output(0, in.reshaped({a, b}));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Squeeze) {
  OpSchema s;
  s.name = "Squeeze";
  s.min_inputs = 1;
  s.max_inputs = 2;
  s.attrs = {{"axes", AttrType::kINTS}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    bool unknown = false;
    KILN_ASSIGN_OR_RETURN(auto axes, infer_axes(ctx, &unknown));
    if (!in.rank_known || unknown) {
      o.rank_known = false;
      return Status::Ok();
    }
    int64_t r = static_cast<int64_t>(in.shape.size());
    std::vector<bool> drop(r, false);
    if (axes) {
      KILN_ASSIGN_OR_RETURN(auto ax, normalize_axes(*axes, r, "Squeeze"));
      for (auto a : ax) {
        if (in.shape[a].is_static() && in.shape[a].value != 1)
          return invalid_model("Squeeze: axis " + std::to_string(a) + " of input " + shape_to_string(in.shape) +
                               " has size " + std::to_string(in.shape[a].value) + ", expected 1");
        drop[a] = true;
      }
    } else {
      // Symbolic dims are assumed not to be 1, as ONNX shape inference does.
      for (int64_t i = 0; i < r; ++i) drop[i] = in.shape[i].is_static() && in.shape[i].value == 1;
    }
    o.shape.clear();
    for (int64_t i = 0; i < r; ++i)
      if (!drop[i]) o.shape.push_back(in.shape[i]);
    if (o.shape.size() <= 1) o.value = known_values(in);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto axes, compute_axes(ctx, "Squeeze"));
    int64_t r = in.rank();
    std::vector<bool> drop(r, false);
    if (axes) {
      KILN_ASSIGN_OR_RETURN(auto ax, normalize_axes(*axes, r, "Squeeze"));
      for (auto a : ax) {
        if (in.shape()[a] != 1)
          return invalid_argument("Squeeze: axis " + std::to_string(a) + " of input " + dims_to_string(in.shape()) +
                                  " has size " + std::to_string(in.shape()[a]) + ", expected 1");
        drop[a] = true;
      }
    } else {
      for (int64_t i = 0; i < r; ++i) drop[i] = in.shape()[i] == 1;
    }
    std::vector<int64_t> out;
    for (int64_t i = 0; i < r; ++i)
      if (!drop[i]) out.push_back(in.shape()[i]);
    ctx.set_output(0, in.reshaped(out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Unsqueeze) {
  OpSchema s;
  s.name = "Unsqueeze";
  s.min_inputs = 1;
  s.max_inputs = 2;
  s.attrs = {{"axes", AttrType::kINTS}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    bool unknown = false;
    KILN_ASSIGN_OR_RETURN(auto axes, infer_axes(ctx, &unknown));
    if (!axes && !unknown) return invalid_model("Unsqueeze: axes are required");
    if (!in.rank_known || unknown) {
      o.rank_known = false;
      return Status::Ok();
    }
    int64_t r = static_cast<int64_t>(in.shape.size()) + static_cast<int64_t>(axes->size());
    KILN_ASSIGN_OR_RETURN(auto ax, normalize_axes(*axes, r, "Unsqueeze"));
    o.shape.clear();
    size_t k = 0, j = 0;
    for (int64_t i = 0; i < r; ++i) {
      if (k < ax.size() && ax[k] == i) { o.shape.push_back(Dim(1)); ++k; }
      else o.shape.push_back(in.shape[j++]);
    }
    if (o.shape.size() <= 1) o.value = known_values(in);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto axes, compute_axes(ctx, "Unsqueeze"));
    if (!axes) return invalid_argument("Unsqueeze: axes are required");
    int64_t r = in.rank() + static_cast<int64_t>(axes->size());
    KILN_ASSIGN_OR_RETURN(auto ax, normalize_axes(*axes, r, "Unsqueeze"));
    std::vector<int64_t> out;
    size_t k = 0, j = 0;
    for (int64_t i = 0; i < r; ++i) {
      if (k < ax.size() && ax[k] == i) { out.push_back(1); ++k; }
      else out.push_back(in.shape()[j++]);
    }
    ctx.set_output(0, in.reshaped(out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Expand) {
  OpSchema s;
  s.name = "Expand";
  s.since_opset = 8;
  s.min_inputs = s.max_inputs = 2;
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    const TensorInfo& shp = ctx.input(1);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    if (!in.rank_known) {
      o.rank_known = false;
      return Status::Ok();
    }
    if (auto tv = known_values(shp)) {
      Shape target;
      for (auto& d : *tv) target.push_back(d.is_static() || !d.sym.empty() ? d : ctx.fresh_dim());
      auto r = broadcast_shapes({in.shape, target});
      if (!r.ok())
        return invalid_model("Expand: input " + shape_to_string(in.shape) + " cannot be expanded to " +
                             shape_to_string(target));
      o.shape = std::move(r).value();
    } else if (shp.rank_known && shp.shape.size() == 1 && shp.shape[0].is_static()) {
      size_t r = std::max<size_t>(in.shape.size(), shp.shape[0].value);
      o.shape.assign(r, Dim());
      for (size_t i = 0; i < r; ++i) {
        size_t off = r - in.shape.size();
        // A static input dim > 1 can only broadcast with 1 or itself.
        if (i >= off && in.shape[i - off].is_static() && in.shape[i - off].value != 1) o.shape[i] = in.shape[i - off];
        else o.shape[i] = ctx.fresh_dim();
      }
    } else {
      o.rank_known = false;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto target, input_ints(ctx, 1, "Expand", "shape"));
    auto r = broadcast_dims({in.shape(), target});
    if (!r.ok())
      return invalid_argument("Expand: input " + dims_to_string(in.shape()) + " cannot be expanded to " +
                              dims_to_string(target));
    auto out_dims = std::move(r).value();
    if (out_dims.empty()) {
      ctx.set_output(0, in);
      return Status::Ok();
    }
    Tensor& out = ctx.allocate_output(0, in.dtype(), out_dims);
    return expand_compute(in, out_dims, out);
  };
  return s;
}

}  // namespace kiln::ops
