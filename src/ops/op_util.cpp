// Shared operator helpers: axis normalization, broadcasting, strides, known-value queries.
#include "ops/op_util.h"

#include <algorithm>

namespace kiln::ops {

Result<int64_t> normalize_axis(int64_t axis, int64_t rank, const std::string& what) {
  int64_t lo = -rank, hi = rank - 1;
  // A scalar has no axis: callers index the input's dims with the result (Split, Compress, Unique and the
  // reductions read or wrote past an empty shape on a rank-0 input).
  if (rank == 0)
    return invalid_model(what + " " + std::to_string(axis) + " refers to an input of rank 0, which has no axes");
  if (axis < lo || axis > hi)
    return invalid_model(what + " " + std::to_string(axis) + " is out of range [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "] for rank " + std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

Result<Shape> broadcast_shapes(const std::vector<Shape>& shapes, InferContext* ctx) {
  size_t rank = 0;
  for (auto& s : shapes) rank = std::max(rank, s.size());
  Shape out(rank, Dim(1));
  for (size_t k = 0; k < rank; ++k) {
    std::optional<Dim> fixed;          // the static dim > 1, if any
    std::vector<const Dim*> symbolic;  // in operand order
    bool unnamed = false;              // a dim nothing is known of (it may be 1)
    for (auto& s : shapes) {
      if (k + s.size() < rank) continue;
      const Dim& d = s[k - (rank - s.size())];
      if (d.is_static() && d.value == 1) continue;
      if (!d.is_static()) {
        symbolic.push_back(&d);
        unnamed |= d.sym.empty();
        continue;
      }
      if (fixed && fixed->value != d.value)
        return invalid_model("shapes " + [&] {
          std::string r;
          for (auto& x : shapes) r += (r.empty() ? "" : " and ") + shape_to_string(x);
          return r;
        }() + " cannot be broadcast");
      fixed = d;
    }
    if (fixed) out[k] = *fixed;
    else if (!symbolic.empty()) out[k] = *symbolic.front();
    if (fixed || !ctx || unnamed) continue;
    bool apart = false;
    for (size_t i = 1; i < symbolic.size(); ++i) {
      if (ctx->declared_apart(*symbolic.front(), *symbolic[i])) apart = true;
      else ctx->require_equal(*symbolic.front(), *symbolic[i]);
    }
    if (apart) out[k] = ctx->fresh_dim();
  }
  return out;
}

Result<std::vector<int64_t>> broadcast_dims(const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<Shape> s;
  for (auto& d : shapes) s.push_back(shape_from_dims(d));
  KILN_ASSIGN_OR_RETURN(Shape r, broadcast_shapes(s));
  return static_dims(r);
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  std::vector<int64_t> st(out.size(), 0);
  auto in_st = strides_of(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : in_st[i];
  return st;
}

int64_t product(const std::vector<int64_t>& v, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < std::min(end, v.size()); ++i) p *= v[i];
  return p;
}

Result<std::vector<int64_t>> tensor_to_ints(const Tensor& t) {
  if (!dtype_is_integer(t.dtype())) return invalid_model(std::string("expected an integer tensor, got ") + dtype_name(t.dtype()));
  return t.to_i64_vector();
}

std::optional<std::vector<Dim>> known_values(const TensorInfo& t) {
  if (t.value) return t.value;
  if (t.constant && dtype_is_integer(t.constant->dtype()) && t.constant->rank() <= 1) {
    std::vector<Dim> v;
    for (auto x : t.constant->to_i64_vector()) v.push_back(Dim(x));
    return v;
  }
  return std::nullopt;
}

std::optional<std::vector<int64_t>> known_static_values(const TensorInfo& t) {
  if (t.constant && dtype_is_integer(t.constant->dtype())) return t.constant->to_i64_vector();
  auto v = known_values(t);
  if (!v) return std::nullopt;
  std::vector<int64_t> r;
  for (auto& d : *v) {
    if (!d.is_static()) return std::nullopt;
    r.push_back(d.value);
  }
  return r;
}

Status infer_same_as_input0(InferContext& ctx) {
  for (int i = 0; i < ctx.num_outputs(); ++i) {
    ctx.output(i).dtype = ctx.input(0).dtype;
    ctx.output(i).shape = ctx.input(0).shape;
    ctx.output(i).rank_known = ctx.input(0).rank_known;
  }
  return Status::Ok();
}

namespace {
const std::pair<int64_t, DataType> kOnnxTypeCodes[] = {
    {1, DataType::kFLOAT},  {2, DataType::kUINT8},   {3, DataType::kINT8},    {4, DataType::kUINT16},
    {5, DataType::kINT16},  {6, DataType::kINT32},   {7, DataType::kINT64},   {9, DataType::kBOOL},
    {10, DataType::kHALF},  {11, DataType::kDOUBLE}, {12, DataType::kUINT32}, {13, DataType::kUINT64},
    {16, DataType::kBF16},  {17, DataType::kFP8E4M3FN}, {18, DataType::kFP8E4M3FNUZ}, {19, DataType::kFP8E5M2},
    {20, DataType::kFP8E5M2FNUZ}, {21, DataType::kUINT4}, {22, DataType::kINT4}, {23, DataType::kFP4E2M1},
    {24, DataType::kFP8E8M0}, {25, DataType::kUINT2}, {26, DataType::kINT2}};
}  // namespace

bool dtype_from_onnx_code(int64_t code, DataType* out) {
  for (auto& [c, t] : kOnnxTypeCodes)
    if (c == code) {
      *out = t;
      return true;
    }
  return false;
}

int64_t onnx_code_of(DataType dt) {
  for (auto& [c, t] : kOnnxTypeCodes)
    if (t == dt) return c;
  return 0;  // TensorProto's UNDEFINED
}

const std::vector<DataType>& float_types() {
  static const std::vector<DataType> v = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kDOUBLE};
  return v;
}
const std::vector<DataType>& numeric_types() {
  static const std::vector<DataType> v = {DataType::kFLOAT, DataType::kHALF,  DataType::kBF16,  DataType::kDOUBLE,
                                          DataType::kINT8,  DataType::kUINT8, DataType::kINT16, DataType::kUINT16,
                                          DataType::kINT32, DataType::kUINT32, DataType::kINT64, DataType::kUINT64};
  return v;
}
const std::vector<DataType>& all_types() {
  static const std::vector<DataType> v = [] {
    auto r = numeric_types();
    r.push_back(DataType::kBOOL);
    return r;
  }();
  return v;
}

}  // namespace kiln::ops
