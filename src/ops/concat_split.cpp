// Concat and Split: joining tensors along an axis and cutting one into pieces.
#include <algorithm>
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Sizes of Split's pieces along a dim of `len`: explicit split list, else equal chunks (the last one smaller
// when len does not divide, as opset 18 specifies; older opsets only allowed divisible sizes).
Result<std::vector<int64_t>> split_sizes(const std::optional<std::vector<int64_t>>& split, int64_t len, int n) {
  if (split) {
    if (static_cast<int>(split->size()) != n)
      return invalid_model("Split: split has " + std::to_string(split->size()) + " entries but the node has " +
                           std::to_string(n) + " outputs");
    int64_t sum = 0;
    for (auto v : *split) {
      if (v < 0) return invalid_model("Split: split entries must be >= 0, found " + std::to_string(v));
      sum += v;
    }
    if (len >= 0 && sum != len)
      return invalid_model("Split: split sizes sum to " + std::to_string(sum) + " but the axis has size " +
                           std::to_string(len));
    return *split;
  }
  if (n <= 0) return invalid_model("Split: needs at least one output");
  int64_t chunk = (len + n - 1) / n;
  std::vector<int64_t> r(n);
  int64_t left = len;
  for (int i = 0; i < n; ++i) {
    r[i] = std::min(chunk, left);
    left -= r[i];
  }
  return r;
}

Result<int64_t> num_split_outputs(const Attributes& attrs, int num_outputs) {
  if (!attrs.has("num_outputs")) return num_outputs;
  KILN_ASSIGN_OR_RETURN(int64_t n, attrs.get_int("num_outputs"));
  if (n != num_outputs)
    return invalid_model("Split: num_outputs is " + std::to_string(n) + " but the node has " +
                         std::to_string(num_outputs) + " outputs");
  return n;
}

}  // namespace

KILN_REGISTER_OP(Concat) {
  OpSchema s;
  s.name = "Concat";
  s.since_opset = 4;
  s.min_inputs = 1;
  s.max_inputs = -1;
  s.attrs = {{"axis", AttrType::kINT, AttrRequirement::kRequired}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    TensorInfo& o = ctx.output(0);
    const TensorInfo* first = nullptr;
    for (int i = 0; i < ctx.num_inputs(); ++i)
      if (ctx.has_input(i) && ctx.input(i).rank_known) { first = &ctx.input(i); break; }
    o.dtype = ctx.input(0).dtype;
    if (!first) {
      o.rank_known = false;
      return Status::Ok();
    }
    const int64_t r = static_cast<int64_t>(first->shape.size());
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis"));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "Concat axis"));
    if (r == 0) return invalid_model("Concat: inputs must have rank >= 1, found a scalar");
    o.shape = first->shape;
    int64_t total = 0;
    bool total_known = true;
    bool all_values = true;
    std::vector<Dim> value;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      if (!ctx.has_input(i)) continue;
      const TensorInfo& t = ctx.input(i);
      if (t.dtype != o.dtype)
        return invalid_model(std::string("Concat: input ") + std::to_string(i) + " has type " + dtype_name(t.dtype) +
                             ", expected " + dtype_name(o.dtype) + " like input 0");
      if (!t.rank_known) { total_known = false; all_values = false; continue; }
      if (static_cast<int64_t>(t.shape.size()) != r)
        return invalid_model("Concat: input " + std::to_string(i) + " has shape " + shape_to_string(t.shape) +
                             ", expected rank " + std::to_string(r) + " like " + shape_to_string(first->shape));
      for (int64_t k = 0; k < r; ++k) {
        if (k == axis) continue;
        const Dim& d = t.shape[k];
        Dim& od = o.shape[k];
        if (d.is_static() && od.is_static() && d.value != od.value)
          return invalid_model("Concat: input " + std::to_string(i) + " has shape " + shape_to_string(t.shape) +
                               ", which differs from " + shape_to_string(first->shape) + " outside axis " +
                               std::to_string(axis));
        ctx.require_equal(d, first->shape[k]);
        if (d.is_static() && !od.is_static()) od = d;
      }
      if (t.shape[axis].is_static()) total += t.shape[axis].value;
      else total_known = false;
      auto v = known_values(t);
      if (v && r == 1) value.insert(value.end(), v->begin(), v->end());
      else all_values = false;
    }
    o.shape[axis] = total_known ? Dim(total) : ctx.fresh_dim();
    if (all_values && value.size() <= 64) {
      o.value = value;
      if (!total_known) o.shape[axis] = Dim(static_cast<int64_t>(value.size()));
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    std::vector<const Tensor*> ins;
    for (int i = 0; i < ctx.num_inputs(); ++i)
      if (ctx.has_input(i)) ins.push_back(&ctx.input(i));
    const Tensor& first = *ins[0];
    const int64_t r = first.rank();
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis"));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "Concat axis"));
    std::vector<int64_t> out_dims = first.shape();
    out_dims[axis] = 0;
    for (size_t i = 0; i < ins.size(); ++i) {
      const Tensor& t = *ins[i];
      bool ok = t.rank() == r && t.dtype() == first.dtype();
      for (int64_t k = 0; ok && k < r; ++k) ok = k == axis || t.shape()[k] == first.shape()[k];
      if (!ok)
        return invalid_argument("Concat: input " + std::to_string(i) + " is " + dtype_name(t.dtype()) + " " +
                                dims_to_string(t.shape()) + ", expected " + dtype_name(first.dtype()) + " " +
                                "matching " + dims_to_string(first.shape()) + " except on axis " +
                                std::to_string(axis));
      out_dims[axis] += t.shape()[axis];
    }
    Tensor& out = ctx.allocate_output(0, first.dtype(), out_dims);
    const size_t es = dtype_size(first.dtype());
    const int64_t outer = product(out_dims, 0, axis);
    const int64_t inner = product(out_dims, axis + 1) * es;
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    const int64_t out_row = out_dims[axis] * inner;
    int64_t col = 0;
    for (const Tensor* t : ins) {
      const int64_t row = t->shape()[axis] * inner;
      const uint8_t* src = static_cast<const uint8_t*>(t->raw());
      if (row > 0)
        for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * out_row + col, src + o * row, row);
      col += row;
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Split) {
  OpSchema s;
  s.name = "Split";
  s.since_opset = 2;
  s.min_inputs = 1;
  s.max_inputs = 2;
  s.min_outputs = 1;
  s.max_outputs = -1;
  s.attrs = {{"axis", AttrType::kINT}, {"split", AttrType::kINTS}, {"num_outputs", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    KILN_RETURN_IF_ERROR(num_split_outputs(ctx.attrs(), ctx.num_outputs()).status());
    for (auto& o : ctx.outputs()) o.dtype = in.dtype;
    if (!in.rank_known) {
      for (auto& o : ctx.outputs()) o.rank_known = false;
      return Status::Ok();
    }
    const int64_t r = static_cast<int64_t>(in.shape.size());
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "Split axis"));
    std::optional<std::vector<int64_t>> split;
    bool split_unknown = false;
    if (ctx.attrs().has("split")) {
      KILN_ASSIGN_OR_RETURN(split, ctx.attrs().get_ints("split"));
    } else if (ctx.has_input(1)) {
      split = known_static_values(ctx.input(1));
      split_unknown = !split;
    }
    const Dim& d = in.shape[axis];
    std::vector<Dim> sizes;
    if (split || d.is_static()) {
      KILN_ASSIGN_OR_RETURN(auto sz, split_sizes(split, d.is_static() ? d.value : -1, ctx.num_outputs()));
      for (auto v : sz) sizes.push_back(Dim(v));
    } else {
      for (int i = 0; i < ctx.num_outputs(); ++i) sizes.push_back(ctx.fresh_dim());
    }
    if (split_unknown) sizes.clear();
    auto value = known_values(in);
    int64_t pos = 0;
    for (int i = 0; i < ctx.num_outputs(); ++i) {
      TensorInfo& o = ctx.output(i);
      o.shape = in.shape;
      o.shape[axis] = split_unknown ? ctx.fresh_dim() : sizes[i];
      if (value && r == 1 && !split_unknown && sizes[i].is_static() &&
          pos + sizes[i].value <= static_cast<int64_t>(value->size())) {
        o.value = std::vector<Dim>(value->begin() + pos, value->begin() + pos + sizes[i].value);
        pos += sizes[i].value;
      }
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    const int64_t r = in.rank();
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", 0));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "Split axis"));
    std::optional<std::vector<int64_t>> split;
    if (ctx.attrs().has("split")) {
      KILN_ASSIGN_OR_RETURN(split, ctx.attrs().get_ints("split"));
    } else if (ctx.has_input(1)) {
      KILN_ASSIGN_OR_RETURN(split, tensor_to_ints(ctx.input(1)));
    }
    auto sizes_r = split_sizes(split, in.shape()[axis], ctx.num_outputs());
    if (!sizes_r.ok()) return invalid_argument(sizes_r.status().message());
    const auto& sizes = sizes_r.value();
    const size_t es = dtype_size(in.dtype());
    const int64_t outer = product(in.shape(), 0, axis);
    const int64_t inner = product(in.shape(), axis + 1) * es;
    const int64_t in_row = in.shape()[axis] * inner;
    const uint8_t* src = static_cast<const uint8_t*>(in.raw());
    int64_t col = 0;
    for (int i = 0; i < ctx.num_outputs(); ++i) {
      auto dims = in.shape();
      dims[axis] = sizes[i];
      Tensor& out = ctx.allocate_output(i, in.dtype(), dims);
      const int64_t row = sizes[i] * inner;
      uint8_t* dst = static_cast<uint8_t*>(out.raw());
      if (row > 0)
        for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * row, src + o * in_row + col, row);
      col += row;
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
