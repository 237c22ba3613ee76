// Indexing operators: Gather, GatherElements, GatherND, ScatterND, ScatterElements (and the older Scatter).
#include <algorithm>
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Wraps a negative index and checks bounds; the error names the op, the index and the valid range.
inline Status check_index(int64_t& i, int64_t dim, const char* op) {
  int64_t orig = i;
  if (i < 0) i += dim;
  if (i < 0 || i >= dim)
    return invalid_argument(std::string(op) + ": index " + std::to_string(orig) + " is out of range [" +
                            std::to_string(-dim) + ", " + std::to_string(dim - 1) + "]");
  return Status::Ok();
}

enum class Reduction { kNone, kAdd, kMul, kMax, kMin };

Result<Reduction> get_reduction(const Attributes& attrs, const char* op) {
  KILN_ASSIGN_OR_RETURN(std::string r, attrs.get_string("reduction", "none"));
  if (r == "none") return Reduction::kNone;
  if (r == "add") return Reduction::kAdd;
  if (r == "mul") return Reduction::kMul;
  if (r == "max") return Reduction::kMax;
  if (r == "min") return Reduction::kMin;
  return invalid_model(std::string(op) + ": reduction '" + r + "' is not one of none, add, mul, max, min");
}

template <typename T>
inline void reduce_into(T& dst, T v, Reduction red) {
  switch (red) {
    case Reduction::kNone: dst = v; break;
    case Reduction::kAdd: dst = static_cast<T>(dst + v); break;
    case Reduction::kMul: dst = static_cast<T>(dst * v); break;
    case Reduction::kMax: if (dst < v) dst = v; break;
    case Reduction::kMin: if (v < dst) dst = v; break;
  }
}
template <>
inline void reduce_into<bool>(bool& dst, bool v, Reduction red) {
  switch (red) {
    case Reduction::kNone: dst = v; break;
    case Reduction::kAdd: case Reduction::kMax: dst = dst || v; break;
    case Reduction::kMul: case Reduction::kMin: dst = dst && v; break;
  }
}
template <>
inline void reduce_into<Half>(Half& dst, Half v, Reduction red) {
  float d = dst, x = v;
  reduce_into(d, x, red);
  dst = Half(d);
}
template <>
inline void reduce_into<BFloat16>(BFloat16& dst, BFloat16 v, Reduction red) {
  float d = dst, x = v;
  reduce_into(d, x, red);
  dst = BFloat16(d);
}

// Element-wise scatter/gather walk: calls f(data_offset, indices_offset) for every element of `indices`,
// where data_offset uses the index value on `axis` and the element's own coordinates elsewhere.
template <typename F>
Status walk_elements(const Tensor& data, const Tensor& indices, int64_t axis, const char* op, F f) {
  const int r = data.rank();
  if (indices.rank() != r)
    return invalid_argument(std::string(op) + ": indices " + dims_to_string(indices.shape()) + " must have the rank of data " +
                            dims_to_string(data.shape()));
  for (int a = 0; a < r; ++a)
    if (a != axis && indices.shape()[a] > data.shape()[a])
      return invalid_argument(std::string(op) + ": indices " + dims_to_string(indices.shape()) + " exceed data " +
                              dims_to_string(data.shape()) + " on axis " + std::to_string(a));
  auto dst = strides_of(data.shape());
  const int64_t n = indices.numel();
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;  // data offset without the axis term
  const int64_t dim = data.shape()[axis];
  for (int64_t e = 0; e < n; ++e) {
    int64_t iv = indices.get_i64(e);
    KILN_RETURN_IF_ERROR(check_index(iv, dim, op));
    f(off + iv * dst[axis], e);
    for (int a = r - 1; a >= 0; --a) {
      if (a != axis) off += dst[a];
      if (++idx[a] < indices.shape()[a]) break;
      if (a != axis) off -= dst[a] * indices.shape()[a];
      idx[a] = 0;
    }
  }
  return Status::Ok();
}

Status scatter_elements_compute(ComputeContext& ctx, const char* op) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  const Tensor& updates = ctx.input(2);
  if (updates.shape() != indices.shape())
    return invalid_argument(std::string(op) + ": updates " + dims_to_string(updates.shape()) +
                            " must have the shape of indices " + dims_to_string(indices.shape()));
  KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
  KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, data.rank(), std::string(op) + " axis"));
  KILN_ASSIGN_OR_RETURN(Reduction red, get_reduction(ctx.attrs(), op));
  Tensor out = data.clone();
  ctx.set_output(0, out);
  KILN_DISPATCH_ALL_TYPES(data.dtype(), op, {
    scalar_t* o = ctx.output(0).data<scalar_t>();
    const scalar_t* u = updates.data<scalar_t>();
    KILN_RETURN_IF_ERROR(walk_elements(data, indices, axis, op,
                                       [&](int64_t d, int64_t e) { reduce_into(o[d], u[e], red); }));
  });
  return Status::Ok();
}

Status infer_scatter(InferContext& ctx) {
  ctx.output(0) = make_info(ctx.input(0).dtype, ctx.input(0).shape);
  ctx.output(0).rank_known = ctx.input(0).rank_known;
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(Gather) {
  OpSchema s;
  s.name = "Gather";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& data = ctx.input(0);
    const TensorInfo& ind = ctx.input(1);
    TensorInfo& o = ctx.output(0);
    o.dtype = data.dtype;
    if (!data.rank_known || !ind.rank_known) {
      o.rank_known = false;
      return Status::Ok();
    }
    const int64_t r = static_cast<int64_t>(data.shape.size());
    if (r == 0) return invalid_model("Gather: data must have rank >= 1, found a scalar");
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "Gather axis"));
    o.shape.assign(data.shape.begin(), data.shape.begin() + axis);
    o.shape.insert(o.shape.end(), ind.shape.begin(), ind.shape.end());
    o.shape.insert(o.shape.end(), data.shape.begin() + axis + 1, data.shape.end());
    // Shape -> Gather picks single dims out of a shape vector: the usual dynamic-batch pattern.
    auto dv = known_values(data);
    auto iv = known_static_values(ind);
    if (r == 1 && dv && iv && ind.shape.size() <= 1) {
      const int64_t n = static_cast<int64_t>(dv->size());
      std::vector<Dim> v;
      for (int64_t i : *iv) {
        if (i < -n || i >= n)
          return invalid_model("Gather: index " + std::to_string(i) + " is out of range [" + std::to_string(-n) + ", " +
                               std::to_string(n - 1) + "]");
        v.push_back((*dv)[i < 0 ? i + n : i]);
      }
      o.value = v;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& data = ctx.input(0);
    const Tensor& ind = ctx.input(1);
    const int64_t r = data.rank();
    if (r == 0) return invalid_argument("Gather: data must have rank >= 1, found a scalar");
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "Gather axis"));
    std::vector<int64_t> out_dims(data.shape().begin(), data.shape().begin() + axis);
    out_dims.insert(out_dims.end(), ind.shape().begin(), ind.shape().end());
    out_dims.insert(out_dims.end(), data.shape().begin() + axis + 1, data.shape().end());
    KILN_ASSIGN_OR_RETURN(auto idx, tensor_to_ints(ind));
    const int64_t dim = data.shape()[axis];
    for (auto& i : idx) KILN_RETURN_IF_ERROR(check_index(i, dim, "Gather"));
    Tensor& out = ctx.allocate_output(0, data.dtype(), out_dims);
    const size_t es = dtype_size(data.dtype());
    const int64_t outer = product(data.shape(), 0, axis);
    const int64_t inner = product(data.shape(), axis + 1) * es;
    const uint8_t* src = static_cast<const uint8_t*>(data.raw());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    const int64_t n = static_cast<int64_t>(idx.size());
    if (inner == 0) return Status::Ok();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < n; ++k)
        std::memcpy(dst + (o * n + k) * inner, src + (o * dim + idx[k]) * inner, inner);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(GatherElements) {
  OpSchema s;
  s.name = "GatherElements";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& data = ctx.input(0);
    const TensorInfo& ind = ctx.input(1);
    ctx.output(0) = make_info(data.dtype, ind.shape);
    ctx.output(0).rank_known = ind.rank_known;
    if (data.rank_known && ind.rank_known) {
      if (data.shape.size() != ind.shape.size())
        return invalid_model("GatherElements: indices " + shape_to_string(ind.shape) + " must have the rank of data " +
                             shape_to_string(data.shape));
      KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
      KILN_RETURN_IF_ERROR(normalize_axis(axis, data.shape.size(), "GatherElements axis").status());
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& data = ctx.input(0);
    const Tensor& ind = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, data.rank(), "GatherElements axis"));
    Tensor& out = ctx.allocate_output(0, data.dtype(), ind.shape());
    const size_t es = dtype_size(data.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(data.raw());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    return walk_elements(data, ind, axis, "GatherElements",
                         [&](int64_t d, int64_t e) { std::memcpy(dst + e * es, src + d * es, es); });
  };
  return s;
}

KILN_REGISTER_OP(GatherND) {
  OpSchema s;
  s.name = "GatherND";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"batch_dims", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& data = ctx.input(0);
    const TensorInfo& ind = ctx.input(1);
    TensorInfo& o = ctx.output(0);
    o.dtype = data.dtype;
    KILN_ASSIGN_OR_RETURN(int64_t b, ctx.attrs().get_int("batch_dims", 0));
    if (!data.rank_known || !ind.rank_known || ind.shape.empty() || !ind.shape.back().is_static()) {
      o.rank_known = false;
      return Status::Ok();
    }
    const int64_t r = static_cast<int64_t>(data.shape.size()), q = static_cast<int64_t>(ind.shape.size());
    const int64_t k = ind.shape.back().value;
    if (b < 0 || b >= std::min(r, q) || b + k > r)
      return invalid_model("GatherND: batch_dims " + std::to_string(b) + " with index depth " + std::to_string(k) +
                           " does not fit data " + shape_to_string(data.shape) + " and indices " +
                           shape_to_string(ind.shape));
    o.shape.assign(ind.shape.begin(), ind.shape.end() - 1);
    o.shape.insert(o.shape.end(), data.shape.begin() + b + k, data.shape.end());
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& data = ctx.input(0);
    const Tensor& ind = ctx.input(1);
    KILN_ASSIGN_OR_RETURN(int64_t b, ctx.attrs().get_int("batch_dims", 0));
    const int64_t r = data.rank(), q = ind.rank();
    if (q < 1) return invalid_argument("GatherND: indices must have rank >= 1");
    const int64_t k = ind.shape().back();
    if (b < 0 || b >= std::min(r, q) || b + k > r)
      return invalid_argument("GatherND: batch_dims " + std::to_string(b) + " with index depth " + std::to_string(k) +
                              " does not fit data " + dims_to_string(data.shape()) + " and indices " +
                              dims_to_string(ind.shape()));
    for (int64_t a = 0; a < b; ++a)
      if (data.shape()[a] != ind.shape()[a])
        return invalid_argument("GatherND: batch dims of data " + dims_to_string(data.shape()) + " and indices " +
                                dims_to_string(ind.shape()) + " differ");
    std::vector<int64_t> out_dims(ind.shape().begin(), ind.shape().end() - 1);
    out_dims.insert(out_dims.end(), data.shape().begin() + b + k, data.shape().end());
    Tensor& out = ctx.allocate_output(0, data.dtype(), out_dims);
    const size_t es = dtype_size(data.dtype());
    const int64_t batch = product(data.shape(), 0, b);
    const int64_t slab = product(data.shape(), b);
    const int64_t slice = product(data.shape(), b + k);
    const int64_t per_batch = product(ind.shape(), b, q - 1);
    auto st = strides_of(data.shape());
    const uint8_t* src = static_cast<const uint8_t*>(data.raw());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    int64_t tuple = 0;
    for (int64_t bi = 0; bi < batch; ++bi) {
      for (int64_t j = 0; j < per_batch; ++j, ++tuple) {
        int64_t off = bi * slab;
        for (int64_t c = 0; c < k; ++c) {
          int64_t v = ind.get_i64(tuple * k + c);
          KILN_RETURN_IF_ERROR(check_index(v, data.shape()[b + c], "GatherND"));
          off += v * st[b + c];
        }
        std::memcpy(dst + tuple * slice * es, src + off * es, slice * es);
      }
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(ScatterND) {
  OpSchema s;
  s.name = "ScatterND";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"reduction", AttrType::kSTRING}};
  s.dtypes = all_types();
  s.infer = infer_scatter;
  s.compute = [](ComputeContext& ctx) {
    const Tensor& data = ctx.input(0);
    const Tensor& ind = ctx.input(1);
    const Tensor& upd = ctx.input(2);
    KILN_ASSIGN_OR_RETURN(Reduction red, get_reduction(ctx.attrs(), "ScatterND"));
    const int64_t r = data.rank(), q = ind.rank();
    if (q < 1) return invalid_argument("ScatterND: indices must have rank >= 1");
    const int64_t k = ind.shape().back();
    if (k > r)
      return invalid_argument("ScatterND: index depth " + std::to_string(k) + " exceeds the data rank " +
                              std::to_string(r));
    std::vector<int64_t> want(ind.shape().begin(), ind.shape().end() - 1);
    want.insert(want.end(), data.shape().begin() + k, data.shape().end());
    if (upd.shape() != want)
      return invalid_argument("ScatterND: updates have shape " + dims_to_string(upd.shape()) + ", expected " +
                              dims_to_string(want));
    ctx.set_output(0, data.clone());
    const int64_t n = product(ind.shape(), 0, q - 1);
    const int64_t slice = product(data.shape(), k);
    auto st = strides_of(data.shape());
    KILN_DISPATCH_ALL_TYPES(data.dtype(), "ScatterND", {
      scalar_t* o = ctx.output(0).data<scalar_t>();
      const scalar_t* u = upd.data<scalar_t>();
      for (int64_t t = 0; t < n; ++t) {
        int64_t off = 0;
        for (int64_t c = 0; c < k; ++c) {
          int64_t v = ind.get_i64(t * k + c);
          KILN_RETURN_IF_ERROR(check_index(v, data.shape()[c], "ScatterND"));
          off += v * st[c];
        }
        for (int64_t e = 0; e < slice; ++e) reduce_into(o[off + e], u[t * slice + e], red);
      }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(ScatterElements) {
  OpSchema s;
  s.name = "ScatterElements";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"axis", AttrType::kINT}, {"reduction", AttrType::kSTRING}};
  s.dtypes = all_types();
  s.infer = infer_scatter;
  s.compute = [](ComputeContext& ctx) { return scatter_elements_compute(ctx, "ScatterElements"); };
  return s;
}

// Deprecated since opset 11 in favour of ScatterElements, which it equals; still found in old exports.
KILN_REGISTER_OP(Scatter) {
  OpSchema s;
  s.name = "Scatter";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = infer_scatter;
  s.compute = [](ComputeContext& ctx) { return scatter_elements_compute(ctx, "Scatter"); };
  return s;
}

}  // namespace kiln::ops
