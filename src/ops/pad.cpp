// Pad: constant/reflect/edge/wrap modes; pads as an attribute (opset < 11) or inputs (with optional axes, opset 18).
#include <type_traits>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

Result<PadMode> parse_mode(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string m, attrs.get_string("mode", "constant"));
  if (m == "constant") return PadMode::kConstant;
  if (m == "reflect") return PadMode::kReflect;
  if (m == "edge") return PadMode::kEdge;
  if (m == "wrap") return PadMode::kWrap;
  return invalid_model("Pad: mode must be one of constant, reflect, edge, wrap but is \"" + m + "\"");
}

// Expands pads given for `axes` only into begin/end pads for every axis (2*rank, begins first).
Result<std::vector<int64_t>> full_pads(const std::vector<int64_t>& pads, const std::vector<int64_t>* axes, int64_t rank) {
  if (!axes) {
    if (static_cast<int64_t>(pads.size()) != 2 * rank)
      return invalid_model("Pad: pads must have 2*rank = " + std::to_string(2 * rank) + " values, got " +
                           std::to_string(pads.size()));
    return pads;
  }
  const int64_t na = axes->size();
  if (static_cast<int64_t>(pads.size()) != 2 * na)
    return invalid_model("Pad: pads must have 2*len(axes) = " + std::to_string(2 * na) + " values, got " +
                         std::to_string(pads.size()));
  std::vector<int64_t> r(2 * rank, 0);
  for (int64_t i = 0; i < na; ++i) {
    KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis((*axes)[i], rank, "Pad: axes entry"));
    r[a] = pads[i];
    r[a + rank] = pads[i + na];
  }
  return r;
}

// Pads for a node, or nullopt when they are a runtime input not known at inference time.
Result<std::optional<std::vector<int64_t>>> node_pads(const Attributes& attrs, int opset, int64_t rank,
                                                       const std::optional<std::vector<int64_t>>& pads_in, bool has_pads_in,
                                                       const std::optional<std::vector<int64_t>>& axes_in, bool has_axes_in) {
  if (opset < 11 || !has_pads_in) {
    const char* name = attrs.has("paddings") ? "paddings" : "pads";
    if (!attrs.has(name)) return invalid_model("Pad: pads are required (attribute before opset 11, input from 11)");
    KILN_ASSIGN_OR_RETURN(auto p, attrs.get_ints(name));
    KILN_ASSIGN_OR_RETURN(auto f, full_pads(p, nullptr, rank));
    return std::optional<std::vector<int64_t>>(f);
  }
  if (!pads_in || (has_axes_in && !axes_in)) return std::optional<std::vector<int64_t>>();
  KILN_ASSIGN_OR_RETURN(auto f, full_pads(*pads_in, has_axes_in ? &*axes_in : nullptr, rank));
  return std::optional<std::vector<int64_t>>(f);
}

template <typename T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, bool>) return v != 0;
  else if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) return T(static_cast<float>(v));
  else return static_cast<T>(v);
}

// Source index along one axis for output position o, or -1 for the constant fill.
int64_t source_index(PadMode mode, int64_t o, int64_t pb, int64_t n) {
  int64_t i = o - pb;
  if (i >= 0 && i < n) return i;
  if (n == 0) return -1;
  switch (mode) {
    case PadMode::kConstant: return -1;
    case PadMode::kEdge: return i < 0 ? 0 : n - 1;
    case PadMode::kWrap: return ((i % n) + n) % n;
    case PadMode::kReflect: {
      if (n == 1) return 0;
      int64_t period = 2 * (n - 1);
      i = ((i % period) + period) % period;
      return i >= n ? period - i : i;
    }
  }
  return -1;
}

template <typename T>
void pad_kernel(PadMode mode, const Tensor& x, const std::vector<int64_t>& pads, T value, Tensor& y) {
  const int rank = x.rank();
  const auto& os = y.shape();
  auto ist = strides_of(x.shape());
  // Per axis: source offset contribution for each output coordinate, -1 where the constant is used.
  std::vector<std::vector<int64_t>> map(rank);
  for (int d = 0; d < rank; ++d) {
    map[d].resize(os[d]);
    for (int64_t o = 0; o < os[d]; ++o) {
      int64_t s = source_index(mode, o, pads[d], x.dim(d));
      map[d][o] = s < 0 ? -1 : s * ist[d];
    }
  }
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  const int64_t total = y.numel();
  std::vector<int64_t> idx(rank, 0);
  for (int64_t i = 0; i < total; ++i) {
    int64_t off = 0;
    bool fill = false;
    for (int d = 0; d < rank; ++d) {
      int64_t m = map[d][idx[d]];
      if (m < 0) { fill = true; break; }
      off += m;
    }
    yp[i] = fill ? value : xp[off];
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < os[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

KILN_REGISTER_OP(Pad) {
  OpSchema s;
  s.name = "Pad";
  s.min_inputs = 1;
  s.max_inputs = 4;  // data, pads, constant_value, axes
  s.attrs = {{"mode", AttrType::kSTRING}, {"pads", AttrType::kINTS}, {"paddings", AttrType::kINTS},
             {"value", AttrType::kFLOAT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& x = ctx.input(0);
    KILN_RETURN_IF_ERROR(parse_mode(ctx.attrs()).status());
    TensorInfo& out = ctx.output(0);
    out.dtype = x.dtype;
    if (!x.rank_known) { out.rank_known = false; return Status::Ok(); }
    bool hp = ctx.has_input(1), ha = ctx.has_input(3);
    std::optional<std::vector<int64_t>> pv, av;
    if (hp) pv = known_static_values(ctx.input(1));
    if (ha) av = known_static_values(ctx.input(3));
    KILN_ASSIGN_OR_RETURN(auto pads, node_pads(ctx.attrs(), ctx.opset(), x.shape.size(), pv, hp, av, ha));
    const int64_t rank = x.shape.size();
    for (int64_t d = 0; d < rank; ++d) {
      const Dim& in = x.shape[d];
      if (!pads) { out.shape.push_back(ctx.fresh_dim()); continue; }
      int64_t add = (*pads)[d] + (*pads)[d + rank];
      if (add == 0) out.shape.push_back(in);
      else if (in.is_static()) {
        if (in.value + add < 0)
          return invalid_model("Pad: negative pads remove more than the " + std::to_string(in.value) + " elements of axis " + std::to_string(d));
        out.shape.push_back(Dim(in.value + add));
      } else {
        out.shape.push_back(ctx.fresh_dim());
      }
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(PadMode mode, parse_mode(ctx.attrs()));
    bool hp = ctx.has_input(1), ha = ctx.has_input(3);
    std::optional<std::vector<int64_t>> pv, av;
    if (hp) { KILN_ASSIGN_OR_RETURN(auto v, tensor_to_ints(ctx.input(1))); pv = v; }
    if (ha) { KILN_ASSIGN_OR_RETURN(auto v, tensor_to_ints(ctx.input(3))); av = v; }
    KILN_ASSIGN_OR_RETURN(auto pads_opt, node_pads(ctx.attrs(), ctx.opset(), x.rank(), pv, hp, av, ha));
    const auto& pads = *pads_opt;
    const int rank = x.rank();
    std::vector<int64_t> out;
    for (int d = 0; d < rank; ++d) {
      int64_t o = x.dim(d) + pads[d] + pads[d + rank];
      if (o < 0) return invalid_argument("Pad: negative pads remove more than the " + std::to_string(x.dim(d)) + " elements of axis " + std::to_string(d));
      if (x.dim(d) == 0 && o > 0 && mode != PadMode::kConstant)
        return invalid_argument("Pad: cannot pad empty axis " + std::to_string(d) + " in a non-constant mode");
      out.push_back(o);
    }
    double value = 0;
    if (ctx.opset() < 11) {
      KILN_ASSIGN_OR_RETURN(float v, ctx.attrs().get_float("value", 0.0f));
      value = v;
    } else if (ctx.has_input(2) && ctx.input(2).numel() > 0) {
      value = ctx.input(2).get_f64(0);
    }
    Tensor& y = ctx.allocate_output(0, x.dtype(), out);
    KILN_DISPATCH_ALL_TYPES(x.dtype(), "Pad", pad_kernel<scalar_t>(mode, x, pads, from_double<scalar_t>(value), y));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
