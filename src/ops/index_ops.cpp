// Selection and index-producing operators: TopK, NonZero, Unique, Compress, ReverseSequence.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Half and bfloat16 have no ordering of their own; everything else compares natively (int64 stays exact).
template <typename T>
inline auto key_of(T v) {
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) return static_cast<float>(v);
  else return v;
}

// [outer, n, inner] view of a tensor around one axis.
struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisSplit split_at(const std::vector<int64_t>& shape, int64_t axis) {
  AxisSplit s;
  s.outer = product(shape, 0, axis);
  s.n = shape[axis];
  s.inner = product(shape, axis + 1);
  return s;
}

// A run-time count as a Dim: static when known, else a fresh symbol.
Dim count_dim(std::optional<int64_t> n, InferContext& ctx) { return n ? Dim(*n) : ctx.fresh_dim(); }

// --- TopK ---

Result<std::optional<int64_t>> topk_k_infer(InferContext& ctx) {
  if (ctx.opset() < 10) {
    KILN_ASSIGN_OR_RETURN(int64_t k, ctx.attrs().get_int("k"));
    return std::optional<int64_t>(k);
  }
  if (!ctx.has_input(1)) return invalid_model("TopK: input 'K' is required from opset 10");
  auto v = known_static_values(ctx.input(1));
  if (!v) return std::optional<int64_t>();
  if (v->size() != 1) return invalid_model("TopK: 'K' must hold exactly one value, got " + std::to_string(v->size()));
  return std::optional<int64_t>((*v)[0]);
}

template <typename T>
void topk_kernel(const Tensor& x, const AxisSplit& s, int64_t k, bool largest, Tensor& vals, Tensor& idx) {
  const T* in = x.data<T>();
  T* out_v = vals.data<T>();
  int64_t* out_i = idx.data<int64_t>();
  std::vector<int64_t> order(s.n);
  for (int64_t o = 0; o < s.outer; ++o) {
    for (int64_t i = 0; i < s.inner; ++i) {
      const T* base = in + o * s.n * s.inner + i;
      std::iota(order.begin(), order.end(), 0);
      // Equal values keep the lower index first, as the spec requires; that makes the order total.
      auto better = [&](int64_t a, int64_t b) {
        auto va = key_of(base[a * s.inner]), vb = key_of(base[b * s.inner]);
        if (va == vb) return a < b;
        return largest ? vb < va : va < vb;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
      for (int64_t j = 0; j < k; ++j) {
        int64_t off = (o * k + j) * s.inner + i;
        out_v[off] = base[order[j] * s.inner];
        out_i[off] = order[j];
      }
    }
  }
}

// --- Unique ---

// Groups the slices along an axis (or the flattened elements) into distinct values.
template <typename T>
Status unique_compute(ComputeContext& ctx, std::optional<int64_t> axis_attr, bool sorted) {
  const Tensor& x = ctx.input(0);
  std::vector<int64_t> shape = x.shape();
  int64_t axis = 0;
  AxisSplit s;
  if (axis_attr) {
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(*axis_attr, x.rank(), "Unique axis"));
    s = split_at(shape, axis);
  } else {
    s.n = x.numel();
  }
  const T* in = x.data<T>();
  // Lexicographic comparison of slice a and slice b, element order (outer, inner).
  auto cmp = [&](int64_t a, int64_t b) -> int {
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) {
        auto va = key_of(in[(o * s.n + a) * s.inner + i]), vb = key_of(in[(o * s.n + b) * s.inner + i]);
        if (va < vb) return -1;
        if (vb < va) return 1;
      }
    return 0;
  };
  std::vector<int64_t> order(s.n);
  std::iota(order.begin(), order.end(), 0);
  // Stable: within a group of equal slices the first occurrence leads.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cmp(a, b) < 0; });
  std::vector<int64_t> first, counts, group_of(s.n);
  for (size_t p = 0; p < order.size(); ++p) {
    if (p == 0 || cmp(order[p - 1], order[p]) != 0) {
      first.push_back(order[p]);
      counts.push_back(0);
    }
    group_of[order[p]] = static_cast<int64_t>(first.size()) - 1;
    ++counts.back();
  }
  const int64_t u = static_cast<int64_t>(first.size());
  // Output position of each group: sorted order as is, otherwise by first occurrence.
  std::vector<int64_t> pos(u);
  std::iota(pos.begin(), pos.end(), 0);
  if (!sorted) {
    std::vector<int64_t> g(u);
    std::iota(g.begin(), g.end(), 0);
    std::sort(g.begin(), g.end(), [&](int64_t a, int64_t b) { return first[a] < first[b]; });
    for (int64_t r = 0; r < u; ++r) pos[g[r]] = r;
  }
  std::vector<int64_t> y_shape = axis_attr ? shape : std::vector<int64_t>{s.n};
  y_shape[axis] = u;
  Tensor& y = ctx.allocate_output(0, x.dtype(), y_shape);
  T* out = y.data<T>();
  for (int64_t gi = 0; gi < u; ++gi)
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) out[(o * u + pos[gi]) * s.inner + i] = in[(o * s.n + first[gi]) * s.inner + i];
  if (ctx.num_outputs() > 1) {
    int64_t* p = ctx.allocate_output(1, DataType::kINT64, {u}).data<int64_t>();
    for (int64_t gi = 0; gi < u; ++gi) p[pos[gi]] = first[gi];
  }
  if (ctx.num_outputs() > 2) {
    int64_t* p = ctx.allocate_output(2, DataType::kINT64, {s.n}).data<int64_t>();
    for (int64_t j = 0; j < s.n; ++j) p[j] = pos[group_of[j]];
  }
  if (ctx.num_outputs() > 3) {
    int64_t* p = ctx.allocate_output(3, DataType::kINT64, {u}).data<int64_t>();
    for (int64_t gi = 0; gi < u; ++gi) p[pos[gi]] = counts[gi];
  }
  return Status::Ok();
}

// Copies slices [outer, n, inner] along an axis where keep[j] is true.
void copy_selected(const Tensor& x, const AxisSplit& s, const std::vector<int64_t>& keep, Tensor& out) {
  const size_t es = dtype_size(x.dtype());
  const uint8_t* src = static_cast<const uint8_t*>(x.raw());
  uint8_t* dst = static_cast<uint8_t*>(out.raw());
  const int64_t m = static_cast<int64_t>(keep.size());
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(dst + ((o * m + j) * s.inner) * es, src + ((o * s.n + keep[j]) * s.inner) * es, s.inner * es);
}

Result<std::optional<int64_t>> get_optional_axis(const Attributes& attrs) {
  if (!attrs.has("axis")) return std::optional<int64_t>();
  KILN_ASSIGN_OR_RETURN(int64_t a, attrs.get_int("axis"));
  return std::optional<int64_t>(a);
}

Status check_binary_attr(const Attributes& attrs, const std::string& op, const std::string& name, int64_t def) {
  KILN_ASSIGN_OR_RETURN(int64_t v, attrs.get_int(name, def));
  if (v != 0 && v != 1)
    return invalid_model(op + ": attribute '" + name + "' is " + std::to_string(v) + "; allowed values are 0, 1");
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(TopK) {
  OpSchema s;
  s.name = "TopK";
  s.min_inputs = 1;
  s.max_inputs = 2;  // X, K (opset 10+; before that k is an attribute)
  s.min_outputs = s.max_outputs = 2;
  s.attrs = {{"k", AttrType::kINT}, {"axis", AttrType::kINT}, {"largest", AttrType::kINT}, {"sorted", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    KILN_RETURN_IF_ERROR(check_binary_attr(ctx.attrs(), "TopK", "largest", 1));
    KILN_RETURN_IF_ERROR(check_binary_attr(ctx.attrs(), "TopK", "sorted", 1));
    KILN_ASSIGN_OR_RETURN(auto k, topk_k_infer(ctx));
    ctx.output(0).dtype = x.dtype;
    ctx.output(1).dtype = DataType::kINT64;
    if (!x.rank_known) {
      ctx.output(0).rank_known = ctx.output(1).rank_known = false;
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attrs().get_int("axis", -1).value(),
                                                       static_cast<int64_t>(x.shape.size()), "TopK axis"));
    if (k && *k < 0) return invalid_model("TopK: k must be >= 0, got " + std::to_string(*k));
    if (k && x.shape[axis].is_static() && *k > x.shape[axis].value)
      return invalid_model("TopK: k = " + std::to_string(*k) + " exceeds the size " + std::to_string(x.shape[axis].value) +
                           " of axis " + std::to_string(axis) + " of input " + shape_to_string(x.shape));
    Shape out = x.shape;
    // k equal to the whole axis keeps its (possibly symbolic) size.
    out[axis] = k ? Dim(*k) : ctx.fresh_dim();
    ctx.output(0).shape = ctx.output(1).shape = out;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    int64_t k = 0;
    if (ctx.opset() < 10) {
      KILN_ASSIGN_OR_RETURN(k, ctx.attrs().get_int("k"));
    } else {
      KILN_ASSIGN_OR_RETURN(auto kv, tensor_to_ints(ctx.input(1)));
      if (kv.size() != 1) return invalid_argument("TopK: 'K' must hold exactly one value, got " + std::to_string(kv.size()));
      k = kv[0];
    }
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.attrs().get_int("axis", -1).value(), x.rank(), "TopK axis"));
    if (k < 0 || k > x.dim(static_cast<int>(axis)))
      return invalid_argument("TopK: k = " + std::to_string(k) + " is out of range [0, " +
                              std::to_string(x.dim(static_cast<int>(axis))) + "] for input " + dims_to_string(x.shape()));
    bool largest = ctx.attrs().get_int("largest", 1).value() != 0;
    auto shape = x.shape();
    AxisSplit sp = split_at(shape, axis);
    shape[axis] = k;
    Tensor& vals = ctx.allocate_output(0, x.dtype(), shape);
    Tensor& idx = ctx.allocate_output(1, DataType::kINT64, shape);
    KILN_DISPATCH_NUMERIC_TYPES(x.dtype(), "TopK", topk_kernel<scalar_t>(x, sp, k, largest, vals, idx));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(NonZero) {
  OpSchema s;
  s.name = "NonZero";
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = DataType::kINT64;
    // A scalar reports like a 1-element vector (numpy's behaviour).
    Dim rows = x.rank_known ? Dim(std::max<int64_t>(1, static_cast<int64_t>(x.shape.size()))) : ctx.fresh_dim();
    std::optional<int64_t> n;
    if (x.constant) {
      int64_t c = 0;
      for (int64_t i = 0; i < x.constant->numel(); ++i) c += x.constant->get_f64(i) != 0.0;
      n = c;
    }
    o.shape = {rows, count_dim(n, ctx)};
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    std::vector<int64_t> hits;
    auto collect = [&](auto* p) {
      for (int64_t i = 0; i < x.numel(); ++i)
        if (static_cast<double>(key_of(p[i])) != 0.0) hits.push_back(i);
    };
    KILN_DISPATCH_ALL_TYPES(x.dtype(), "NonZero", collect(x.data<scalar_t>()));
    const int64_t r = std::max(1, x.rank());
    const int64_t n = static_cast<int64_t>(hits.size());
    Tensor& out = ctx.allocate_output(0, DataType::kINT64, {r, n});
    int64_t* p = out.data<int64_t>();
    std::vector<int64_t> shape = x.rank() == 0 ? std::vector<int64_t>{1} : x.shape();
    for (int64_t j = 0; j < n; ++j) {
      int64_t rem = hits[j];
      for (int64_t d = r - 1; d >= 0; --d) {
        p[d * n + j] = rem % shape[d];
        rem /= shape[d];
      }
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Unique) {
  OpSchema s;
  s.name = "Unique";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 1;
  s.min_outputs = 1;
  s.max_outputs = 4;  // Y, indices, inverse_indices, counts
  s.attrs = {{"axis", AttrType::kINT}, {"sorted", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    KILN_RETURN_IF_ERROR(check_binary_attr(ctx.attrs(), "Unique", "sorted", 1));
    KILN_ASSIGN_OR_RETURN(auto axis, get_optional_axis(ctx.attrs()));
    Dim u = ctx.fresh_dim();
    TensorInfo& y = ctx.output(0);
    y.dtype = x.dtype;
    Dim inverse_len;
    if (!axis) {
      y.shape = {u};
      int64_t n = 1;
      bool known = x.rank_known;
      for (auto& d : x.shape) {
        known = known && d.is_static();
        if (d.is_static()) n *= d.value;
      }
      if (known) inverse_len = Dim(n);
      else if (x.rank_known && x.shape.size() == 1 && !x.shape[0].sym.empty()) inverse_len = x.shape[0];
      else inverse_len = ctx.fresh_dim();
    } else if (!x.rank_known) {
      y.rank_known = false;
      inverse_len = ctx.fresh_dim();
    } else {
      KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis(*axis, static_cast<int64_t>(x.shape.size()), "Unique axis"));
      y.shape = x.shape;
      y.shape[a] = u;
      inverse_len = x.shape[a].is_static() || !x.shape[a].sym.empty() ? x.shape[a] : ctx.fresh_dim();
    }
    for (int i = 1; i < ctx.num_outputs(); ++i) ctx.output(i) = make_info(DataType::kINT64, {i == 2 ? inverse_len : u});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(auto axis, get_optional_axis(ctx.attrs()));
    bool sorted = ctx.attrs().get_int("sorted", 1).value() != 0;
    KILN_DISPATCH_ALL_TYPES(ctx.input(0).dtype(), "Unique",
                            KILN_RETURN_IF_ERROR(unique_compute<scalar_t>(ctx, axis, sorted)));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Compress) {
  OpSchema s;
  s.name = "Compress";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    const TensorInfo& c = ctx.input(1);
    if (c.rank_known && c.shape.size() != 1)
      return invalid_model("Compress: condition must be 1-D, got " + shape_to_string(c.shape));
    KILN_ASSIGN_OR_RETURN(auto axis, get_optional_axis(ctx.attrs()));
    std::optional<int64_t> n;
    if (c.constant) {
      int64_t k = 0;
      for (int64_t i = 0; i < c.constant->numel(); ++i) k += c.constant->get_f64(i) != 0.0;
      n = k;
    }
    TensorInfo& o = ctx.output(0);
    o.dtype = x.dtype;
    if (!axis) {
      o.shape = {count_dim(n, ctx)};
    } else if (!x.rank_known) {
      o.rank_known = false;
    } else {
      KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis(*axis, static_cast<int64_t>(x.shape.size()), "Compress axis"));
      o.shape = x.shape;
      o.shape[a] = count_dim(n, ctx);
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    const Tensor& c = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(auto axis_attr, get_optional_axis(ctx.attrs()));
    AxisSplit sp;
    std::vector<int64_t> shape;
    int64_t axis = 0;
    if (axis_attr) {
      KILN_ASSIGN_OR_RETURN(axis, normalize_axis(*axis_attr, x.rank(), "Compress axis"));
      shape = x.shape();
      sp = split_at(shape, axis);
    } else {
      sp.n = x.numel();
      shape = {sp.n};
    }
    if (c.numel() > sp.n)
      return invalid_argument("Compress: condition has " + std::to_string(c.numel()) + " entries but the selected axis has " +
                              std::to_string(sp.n));
    // Entries past the end of a shorter condition count as false.
    std::vector<int64_t> keep;
    for (int64_t j = 0; j < c.numel(); ++j)
      if (c.get_f64(j) != 0.0) keep.push_back(j);
    shape[axis] = static_cast<int64_t>(keep.size());
    Tensor& out = ctx.allocate_output(0, x.dtype(), shape);
    copy_selected(x, sp, keep, out);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(ReverseSequence) {
  OpSchema s;
  s.name = "ReverseSequence";
  s.since_opset = 10;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"batch_axis", AttrType::kINT}, {"time_axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    int64_t b = ctx.attrs().get_int("batch_axis", 1).value(), t = ctx.attrs().get_int("time_axis", 0).value();
    if ((b != 0 && b != 1) || (t != 0 && t != 1) || b == t)
      return invalid_model("ReverseSequence: batch_axis " + std::to_string(b) + " and time_axis " + std::to_string(t) +
                           " must be distinct; allowed values are 0, 1");
    if (ctx.input(0).rank_known && ctx.input(0).shape.size() < 2)
      return invalid_model("ReverseSequence: input must have rank >= 2, got " + shape_to_string(ctx.input(0).shape));
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto lens, tensor_to_ints(ctx.input(1)));
    const int64_t batch_axis = ctx.attrs().get_int("batch_axis", 1).value();
    const auto& shape = x.shape();
    const int64_t nbatch = shape[batch_axis], ntime = shape[1 - batch_axis];
    if (static_cast<int64_t>(lens.size()) != nbatch)
      return invalid_argument("ReverseSequence: sequence_lens has " + std::to_string(lens.size()) +
                              " entries, batch size is " + std::to_string(nbatch));
    const int64_t inner = product(shape, 2);
    const size_t es = dtype_size(x.dtype());
    Tensor& out = ctx.allocate_output(0, x.dtype(), shape);
    const uint8_t* src = static_cast<const uint8_t*>(x.raw());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    const int64_t bstride = (batch_axis == 0 ? ntime : 1) * inner, tstride = (batch_axis == 0 ? 1 : nbatch) * inner;
    for (int64_t b = 0; b < nbatch; ++b) {
      int64_t len = lens[b];
      if (len < 0 || len > ntime)
        return invalid_argument("ReverseSequence: sequence_lens[" + std::to_string(b) + "] = " + std::to_string(len) +
                                " is out of range [0, " + std::to_string(ntime) + "]");
      for (int64_t t = 0; t < ntime; ++t) {
        int64_t from = t < len ? len - 1 - t : t;
        std::memcpy(dst + (b * bstride + t * tstride) * es, src + (b * bstride + from * tstride) * es, inner * es);
      }
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
