// Sequence and optional operators: SequenceEmpty/Construct/Insert/At/Erase/Length, SplitToSequence,
// ConcatFromSequence, SequenceMap, Optional, OptionalHasElement, OptionalGetElement. Values are Tensors of kind
// kSEQUENCE / kOPTIONAL_* (see Tensor::sequence), so these ops only move references to immutable tensors around.
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// ---- helpers ----

bool is_optional(ValueKind k) { return k == ValueKind::kOPTIONAL_TENSOR || k == ValueKind::kOPTIONAL_SEQUENCE; }

Status expect_kind(const Tensor& t, ValueKind want, const std::string& what) {
  if (t.kind() == want) return Status::Ok();
  return invalid_argument(what + " must be " + a_kind(want) + " but is " + a_kind(t.kind()));
}

Status expect_info_kind(const TensorInfo& t, ValueKind want, const std::string& what) {
  if (t.kind == want) return Status::Ok();
  return invalid_model(what + " must be " + a_kind(want) + " but is " + a_kind(t.kind));
}

// A sequence position: a one-element int32/int64 tensor within [lo, hi], negative values counting from the end
// (n is the sequence length); returns the non-negative index.
Result<int64_t> position(const Tensor& p, int64_t n, int64_t lo, int64_t hi, const std::string& op) {
  if (!p.is_tensor() || (p.dtype() != DataType::kINT32 && p.dtype() != DataType::kINT64) || p.numel() != 1)
    return invalid_argument(op + ": position must be a scalar int32 or int64 tensor");
  int64_t pos = p.get_i64(0);
  if (pos < lo || pos > hi)
    return invalid_argument(op + ": position " + std::to_string(pos) + " is out of range [" + std::to_string(lo) +
                            ", " + std::to_string(hi) + "] for a sequence of " + std::to_string(n) + " tensors");
  return pos < 0 ? pos + n : pos;
}

// What a sequence info says of its tensors: static dims only, since its elements may differ in any other.
Shape element_dims(const Shape& s) {
  Shape r;
  for (const Dim& d : s) r.push_back(d.is_static() ? d : Dim());
  return r;
}

TensorInfo sequence_info(DataType dt, bool rank_known, Shape dims) {
  TensorInfo t;
  t.kind = ValueKind::kSEQUENCE;
  t.dtype = dt;
  t.rank_known = rank_known;
  t.shape = element_dims(dims);
  return t;
}

// The info of a sequence `seq` once a tensor described by `t` has joined its elements.
TensorInfo join_element(const TensorInfo& seq, const TensorInfo& t) {
  TensorInfo r = seq;
  r.rank_known = seq.rank_known && t.rank_known && seq.shape.size() == t.shape.size();
  r.shape.clear();
  if (!r.rank_known) return r;
  for (size_t i = 0; i < t.shape.size(); ++i)
    r.shape.push_back(seq.shape[i].is_static() && t.shape[i].is_static() && seq.shape[i] == t.shape[i] ? seq.shape[i]
                                                                                                      : Dim());
  return r;
}

// A tensor taken out of a sequence or optional: dims the elements need not share become fresh symbols.
TensorInfo element_tensor(const TensorInfo& seq, InferContext& ctx) {
  TensorInfo t;
  t.dtype = seq.dtype;
  t.rank_known = seq.rank_known;
  for (const Dim& d : seq.shape) t.shape.push_back(d.is_static() ? d : ctx.fresh_dim());
  return t;
}

Status check_element_dtype(DataType seq, DataType t, const std::string& what) {
  if (seq == t) return Status::Ok();
  return invalid_argument(what + " is " + dtype_name(t) + " but the sequence holds " + dtype_name(seq));
}

OpSchema sequence_schema(const char* name, int since, int min_in, int max_in) {
  OpSchema s;
  s.name = name;
  s.since_opset = since;
  s.min_inputs = min_in;
  s.max_inputs = max_in;
  s.dtypes = all_types();
  s.takes_non_tensors = true;
  return s;
}

// Copies rows [start, start + len) along `axis` of t (viewed as outer x dim x inner) into a new tensor of `shape`.
Tensor take_rows(const Tensor& t, int64_t axis, int64_t start, int64_t len, std::vector<int64_t> shape) {
  Tensor out(t.dtype(), std::move(shape));
  const size_t inner = static_cast<size_t>(product(t.shape(), axis + 1)) * dtype_size(t.dtype());
  const int64_t outer = product(t.shape(), 0, axis), dim = t.dim(axis);
  auto* dst = static_cast<uint8_t*>(out.raw());
  const auto* src = static_cast<const uint8_t*>(t.raw());
  if (inner * len == 0) return out;
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(dst + o * len * inner, src + (o * dim + start) * inner, len * inner);
  return out;
}

// ---- SplitToSequence: split (omitted: pieces of 1, scalar: pieces of that size, 1-D: these sizes) ----

struct SplitPlan {
  std::vector<int64_t> lengths;
  bool squeeze = false;  // keepdims = 0 with no split input: the axis is dropped
};

Result<SplitPlan> split_plan(const ComputeContext& ctx, int64_t dim) {
  SplitPlan p;
  if (!ctx.has_input(1)) {
    KILN_ASSIGN_OR_RETURN(int64_t keepdims, ctx.attrs().get_int("keepdims", 1));
    p.lengths.assign(static_cast<size_t>(dim), 1);
    p.squeeze = keepdims == 0;
    return p;
  }
  const Tensor& s = ctx.input(1);
  if (!s.is_tensor() || (s.dtype() != DataType::kINT32 && s.dtype() != DataType::kINT64) || s.rank() > 1)
    return invalid_argument("SplitToSequence: split must be a scalar or 1-D int32/int64 tensor");
  std::vector<int64_t> v = s.to_i64_vector();
  if (s.rank() == 0) {
    if (v[0] <= 0) return invalid_argument("SplitToSequence: split must be positive, got " + std::to_string(v[0]));
    for (int64_t at = 0; at < dim; at += v[0]) p.lengths.push_back(std::min(v[0], dim - at));
    return p;
  }
  int64_t sum = 0;
  for (int64_t x : v) {
    if (x < 0) return invalid_argument("SplitToSequence: split sizes must be >= 0, got " + std::to_string(x));
    sum += x;
  }
  if (sum != dim)
    return invalid_argument("SplitToSequence: split sizes add up to " + std::to_string(sum) + " but the axis has " +
                            std::to_string(dim));
  p.lengths = std::move(v);
  return p;
}

Status split_to_sequence_infer(InferContext& ctx) {
  const TensorInfo& x = ctx.input(0);
  ctx.output(0) = sequence_info(x.dtype, x.rank_known, {});
  if (!x.rank_known) return Status::Ok();
  KILN_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.attrs().get_int("axis", 0));
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_attr, static_cast<int64_t>(x.shape.size())));
  KILN_ASSIGN_OR_RETURN(int64_t keepdims, ctx.attrs().get_int("keepdims", 1));
  Shape dims = x.shape;
  if (!ctx.has_input(1)) {
    if (keepdims) dims[axis] = Dim(1);
    else dims.erase(dims.begin() + axis);
  } else {
    dims[axis] = Dim();  // pieces may differ in size along the axis
  }
  ctx.output(0).shape = element_dims(dims);
  return Status::Ok();
}

Status split_to_sequence_compute(ComputeContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_RETURN_IF_ERROR(expect_kind(x, ValueKind::kTENSOR, "SplitToSequence: input"));
  KILN_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.attrs().get_int("axis", 0));
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_attr, x.rank()));
  KILN_ASSIGN_OR_RETURN(SplitPlan plan, split_plan(ctx, x.dim(axis)));
  std::vector<Tensor> items;
  int64_t start = 0;
  for (int64_t len : plan.lengths) {
    std::vector<int64_t> shape = x.shape();
    shape[axis] = len;
    Tensor piece = take_rows(x, axis, start, len, shape);
    if (plan.squeeze) {
      shape.erase(shape.begin() + axis);
      piece = piece.reshaped(shape);
    }
    items.push_back(std::move(piece));
    start += len;
  }
  ctx.set_output(0, Tensor::sequence(x.dtype(), std::move(items)));
  return Status::Ok();
}

// ---- ConcatFromSequence: concatenates along axis, or stacks along a new axis (new_axis = 1) ----

Status concat_from_sequence_infer(InferContext& ctx) {
  const TensorInfo& seq = ctx.input(0);
  KILN_RETURN_IF_ERROR(expect_info_kind(seq, ValueKind::kSEQUENCE, "input_sequence"));
  KILN_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.attrs().get_int("axis"));
  KILN_ASSIGN_OR_RETURN(int64_t new_axis, ctx.attrs().get_int("new_axis", 0));
  TensorInfo out = element_tensor(seq, ctx);
  if (out.rank_known) {
    const int64_t rank = static_cast<int64_t>(out.shape.size()) + (new_axis ? 1 : 0);
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_attr, rank));
    if (new_axis) out.shape.insert(out.shape.begin() + axis, ctx.fresh_dim());
    else out.shape[axis] = ctx.fresh_dim();  // the sum over an unknown number of tensors
  }
  ctx.output(0) = out;
  return Status::Ok();
}

Status concat_from_sequence_compute(ComputeContext& ctx) {
  const std::string op = "ConcatFromSequence";
  const Tensor& seq = ctx.input(0);
  KILN_RETURN_IF_ERROR(expect_kind(seq, ValueKind::kSEQUENCE, op + ": input_sequence"));
  KILN_ASSIGN_OR_RETURN(int64_t axis_attr, ctx.attrs().get_int("axis"));
  KILN_ASSIGN_OR_RETURN(int64_t new_axis, ctx.attrs().get_int("new_axis", 0));
  const auto& items = seq.items();
  if (items.empty()) return invalid_argument(op + ": the sequence is empty, so the result has no shape");
  const std::vector<int64_t>& first = items[0].shape();
  const int64_t rank = static_cast<int64_t>(first.size());
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_attr, new_axis ? rank + 1 : rank));
  // Each element viewed as outer x len x inner, len = 1 along a new axis.
  std::vector<int64_t> out_shape = first;
  if (new_axis) out_shape.insert(out_shape.begin() + axis, 0);
  else out_shape[axis] = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& s = items[i].shape();
    bool same = s.size() == first.size();
    for (int64_t d = 0; same && d < rank; ++d) same = s[d] == first[d] || (!new_axis && d == axis);
    if (!same)
      return invalid_argument(op + ": tensor " + std::to_string(i) + " has shape " + dims_to_string(s) +
                              ", which does not match " + dims_to_string(first) + " outside the axis");
    KILN_RETURN_IF_ERROR(check_element_dtype(seq.dtype(), items[i].dtype(), op + ": tensor " + std::to_string(i)));
    out_shape[axis] += new_axis ? 1 : s[axis];
  }
  Tensor& out = ctx.allocate_output(0, seq.dtype(), out_shape);
  const size_t esize = dtype_size(seq.dtype());
  const int64_t outer = product(out_shape, 0, axis);
  const size_t inner = static_cast<size_t>(product(out_shape, axis + 1)) * esize;
  const size_t row = static_cast<size_t>(out_shape[axis]) * inner;
  auto* dst = static_cast<uint8_t*>(out.raw());
  size_t at = 0;  // bytes of each output row filled so far
  for (const Tensor& t : items) {
    const size_t chunk = (new_axis ? 1 : static_cast<size_t>(t.dim(axis))) * inner;
    const auto* src = static_cast<const uint8_t*>(t.raw());
    if (chunk)
      for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * row + at, src + o * chunk, chunk);
    at += chunk;
  }
  return Status::Ok();
}

// ---- SequenceMap: runs the body once per element; sequence inputs are taken element-wise ----

Status sequence_map_infer(InferContext& ctx) {
  KILN_RETURN_IF_ERROR(expect_info_kind(ctx.input(0), ValueKind::kSEQUENCE, "input_sequence"));
  KILN_ASSIGN_OR_RETURN(auto body, ctx.attrs().get_graph("body"));
  auto ports = body->output_ports();
  if (static_cast<int>(ports.size()) != ctx.num_outputs())
    return invalid_model("body has " + std::to_string(ports.size()) + " outputs but the node has " +
                         std::to_string(ctx.num_outputs()));
  for (int k = 0; k < ctx.num_outputs(); ++k) {
    if (ports[k].kind != ValueKind::kTENSOR)
      return unsupported("body output '" + ports[k].name + "' is " + a_kind(ports[k].kind) +
                         "; SequenceMap collects tensors");
    ctx.output(k) = sequence_info(ports[k].dtype, ports[k].rank_known, shape_from_dims(ports[k].dims));
  }
  return Status::Ok();
}

Status sequence_map_compute(ComputeContext& ctx) {
  const std::string op = "SequenceMap";
  KILN_RETURN_IF_ERROR(expect_kind(ctx.input(0), ValueKind::kSEQUENCE, op + ": input_sequence"));
  const size_t n = ctx.input(0).items().size();
  for (int j = 1; j < ctx.num_inputs(); ++j) {
    const Tensor& in = ctx.input(j);
    if (in.kind() == ValueKind::kSEQUENCE && in.items().size() != n)
      return invalid_argument(op + ": input " + std::to_string(j) + " has " + std::to_string(in.items().size()) +
                              " tensors but input_sequence has " + std::to_string(n));
    if (in.kind() != ValueKind::kSEQUENCE && !in.is_tensor())
      return invalid_argument(op + ": input " + std::to_string(j) + " is " + a_kind(in.kind()) +
                              "; additional inputs are tensors or sequences");
  }
  KILN_ASSIGN_OR_RETURN(auto body, ctx.attrs().get_graph("body"));
  auto ports = body->output_ports();
  if (static_cast<int>(ports.size()) != ctx.num_outputs())
    return invalid_model(op + ": body has " + std::to_string(ports.size()) + " outputs but the node has " +
                         std::to_string(ctx.num_outputs()));
  std::vector<std::vector<Tensor>> results(ctx.num_outputs());
  for (size_t i = 0; i < n; ++i) {
    std::vector<Tensor> in;
    for (int j = 0; j < ctx.num_inputs(); ++j)
      in.push_back(ctx.input(j).kind() == ValueKind::kSEQUENCE ? ctx.input(j).items()[i] : ctx.input(j));
    KILN_ASSIGN_OR_RETURN(auto outs, ctx.run_subgraph("body", std::move(in)));
    if (outs.size() != results.size())
      return invalid_model(op + ": body produced " + std::to_string(outs.size()) + " outputs, expected " +
                           std::to_string(results.size()));
    for (size_t k = 0; k < outs.size(); ++k) {
      KILN_RETURN_IF_ERROR(expect_kind(outs[k], ValueKind::kTENSOR, op + ": body output " + std::to_string(k)));
      results[k].push_back(std::move(outs[k]));
    }
  }
  for (int k = 0; k < ctx.num_outputs(); ++k) ctx.set_output(k, Tensor::sequence(ports[k].dtype, std::move(results[k])));
  return Status::Ok();
}

// ---- Optional ----

// Optional's `type` attribute, which the importer turns into {ValueKind, DataType} of the value inside.
Result<std::pair<ValueKind, DataType>> optional_type_attr(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(auto v, attrs.get_ints("type"));
  if (v.size() != 2 || (v[0] != static_cast<int64_t>(ValueKind::kTENSOR) &&
                        v[0] != static_cast<int64_t>(ValueKind::kSEQUENCE)) ||
      v[1] < 0 || v[1] >= kNumDataTypes)
    return invalid_model("Optional: attribute 'type' must hold {value kind (0 tensor, 1 sequence), data type}");
  return std::make_pair(static_cast<ValueKind>(v[0]), static_cast<DataType>(v[1]));
}

ValueKind optional_of(ValueKind inner) {
  return inner == ValueKind::kSEQUENCE ? ValueKind::kOPTIONAL_SEQUENCE : ValueKind::kOPTIONAL_TENSOR;
}

}  // namespace

KILN_REGISTER_OP(SequenceEmpty) {
  OpSchema s = sequence_schema("SequenceEmpty", 11, 0, 0);
  s.attrs = {{"dtype", AttrType::kINT}};
  auto dtype_of = [](const Attributes& a) -> Result<DataType> {
    KILN_ASSIGN_OR_RETURN(int64_t code, a.get_int("dtype", 1));  // ONNX FLOAT
    DataType dt;
    if (!dtype_from_onnx_code(code, &dt))
      return unsupported("SequenceEmpty: dtype " + std::to_string(code) + " is not a type Kiln supports");
    return dt;
  };
  s.infer = [dtype_of](InferContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(DataType dt, dtype_of(ctx.attrs()));
    ctx.output(0) = sequence_info(dt, false, {});
    return Status::Ok();
  };
  s.compute = [dtype_of](ComputeContext& ctx) -> Status {
    KILN_ASSIGN_OR_RETURN(DataType dt, dtype_of(ctx.attrs()));
    ctx.set_output(0, Tensor::sequence(dt, {}));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SequenceConstruct) {
  OpSchema s = sequence_schema("SequenceConstruct", 11, 1, -1);
  s.infer = [](InferContext& ctx) -> Status {
    TensorInfo seq;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const TensorInfo& t = ctx.input(i);
      KILN_RETURN_IF_ERROR(expect_info_kind(t, ValueKind::kTENSOR, "input " + std::to_string(i)));
      if (i == 0) seq = sequence_info(t.dtype, t.rank_known, t.shape);
      else if (t.dtype != seq.dtype)
        return invalid_model("input " + std::to_string(i) + " is " + dtype_name(t.dtype) + " but input 0 is " +
                             dtype_name(seq.dtype));
      else seq = join_element(seq, t);
    }
    ctx.output(0) = seq;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    std::vector<Tensor> items;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      const std::string what = "SequenceConstruct: input " + std::to_string(i);
      KILN_RETURN_IF_ERROR(expect_kind(ctx.input(i), ValueKind::kTENSOR, what));
      KILN_RETURN_IF_ERROR(check_element_dtype(ctx.input(0).dtype(), ctx.input(i).dtype(), what));
      items.push_back(ctx.input(i));
    }
    ctx.set_output(0, Tensor::sequence(ctx.input(0).dtype(), std::move(items)));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SequenceInsert) {
  OpSchema s = sequence_schema("SequenceInsert", 11, 2, 3);
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(expect_info_kind(ctx.input(0), ValueKind::kSEQUENCE, "input_sequence"));
    KILN_RETURN_IF_ERROR(expect_info_kind(ctx.input(1), ValueKind::kTENSOR, "tensor"));
    if (ctx.input(1).dtype != ctx.input(0).dtype)
      return invalid_model("tensor is " + std::string(dtype_name(ctx.input(1).dtype)) + " but the sequence holds " +
                           dtype_name(ctx.input(0).dtype));
    ctx.output(0) = join_element(ctx.input(0), ctx.input(1));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "SequenceInsert";
    const Tensor& seq = ctx.input(0);
    KILN_RETURN_IF_ERROR(expect_kind(seq, ValueKind::kSEQUENCE, op + ": input_sequence"));
    KILN_RETURN_IF_ERROR(expect_kind(ctx.input(1), ValueKind::kTENSOR, op + ": tensor"));
    KILN_RETURN_IF_ERROR(check_element_dtype(seq.dtype(), ctx.input(1).dtype(), op + ": tensor"));
    std::vector<Tensor> items = seq.items();
    const auto n = static_cast<int64_t>(items.size());
    int64_t at = n;
    if (ctx.has_input(2)) {
      KILN_ASSIGN_OR_RETURN(at, position(ctx.input(2), n, -n, n, op));
    }
    items.insert(items.begin() + at, ctx.input(1));
    ctx.set_output(0, Tensor::sequence(seq.dtype(), std::move(items)));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SequenceAt) {
  OpSchema s = sequence_schema("SequenceAt", 11, 2, 2);
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(expect_info_kind(ctx.input(0), ValueKind::kSEQUENCE, "input_sequence"));
    ctx.output(0) = element_tensor(ctx.input(0), ctx);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& seq = ctx.input(0);
    KILN_RETURN_IF_ERROR(expect_kind(seq, ValueKind::kSEQUENCE, "SequenceAt: input_sequence"));
    const auto n = static_cast<int64_t>(seq.items().size());
    KILN_ASSIGN_OR_RETURN(int64_t at, position(ctx.input(1), n, -n, n - 1, "SequenceAt"));
    ctx.set_output(0, seq.items()[at]);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SequenceErase) {
  OpSchema s = sequence_schema("SequenceErase", 11, 1, 2);
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(expect_info_kind(ctx.input(0), ValueKind::kSEQUENCE, "input_sequence"));
    ctx.output(0) = ctx.input(0);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& seq = ctx.input(0);
    KILN_RETURN_IF_ERROR(expect_kind(seq, ValueKind::kSEQUENCE, "SequenceErase: input_sequence"));
    std::vector<Tensor> items = seq.items();
    const auto n = static_cast<int64_t>(items.size());
    if (n == 0) return invalid_argument("SequenceErase: the sequence is empty");
    int64_t at = n - 1;
    if (ctx.has_input(1)) {
      KILN_ASSIGN_OR_RETURN(at, position(ctx.input(1), n, -n, n - 1, "SequenceErase"));
    }
    items.erase(items.begin() + at);
    ctx.set_output(0, Tensor::sequence(seq.dtype(), std::move(items)));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SequenceLength) {
  OpSchema s = sequence_schema("SequenceLength", 11, 1, 1);
  s.infer = [](InferContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(expect_info_kind(ctx.input(0), ValueKind::kSEQUENCE, "input_sequence"));
    ctx.output(0) = make_info(DataType::kINT64, {});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    KILN_RETURN_IF_ERROR(expect_kind(ctx.input(0), ValueKind::kSEQUENCE, "SequenceLength: input_sequence"));
    ctx.set_output(0, Tensor::scalar_i64(static_cast<int64_t>(ctx.input(0).items().size())));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SplitToSequence) {
  OpSchema s = sequence_schema("SplitToSequence", 11, 1, 2);
  s.attrs = {{"axis", AttrType::kINT}, {"keepdims", AttrType::kINT}};
  s.takes_non_tensors = false;
  s.infer = split_to_sequence_infer;
  s.compute = split_to_sequence_compute;
  return s;
}

KILN_REGISTER_OP(ConcatFromSequence) {
  OpSchema s = sequence_schema("ConcatFromSequence", 11, 1, 1);
  s.attrs = {{"axis", AttrType::kINT, AttrRequirement::kRequired}, {"new_axis", AttrType::kINT}};
  s.infer = concat_from_sequence_infer;
  s.compute = concat_from_sequence_compute;
  return s;
}

KILN_REGISTER_OP(SequenceMap) {
  // Captured outer values follow the node's own inputs, as for every op with a subgraph.
  OpSchema s = sequence_schema("SequenceMap", 17, 1, -1);
  s.min_outputs = 1;
  s.max_outputs = -1;
  s.attrs = {{"body", AttrType::kGRAPH, AttrRequirement::kRequired}};
  s.infer = sequence_map_infer;
  s.compute = sequence_map_compute;
  return s;
}

KILN_REGISTER_OP(Optional) {
  OpSchema s = sequence_schema("Optional", 15, 0, 1);
  s.attrs = {{"type", AttrType::kINTS}};
  s.infer = [](InferContext& ctx) -> Status {
    TensorInfo t;
    if (ctx.has_input(0)) {
      const TensorInfo& in = ctx.input(0);
      if (is_optional(in.kind)) return invalid_model("input is already an optional");
      t = in;
      t.kind = optional_of(in.kind);
      t.shape = element_dims(in.shape);
      t.value.reset();
      t.constant = nullptr;
    } else {
      auto type = optional_type_attr(ctx.attrs());
      if (!type.ok())
        return invalid_model("Optional without an input needs the 'type' attribute: " + type.status().message());
      t.kind = optional_of(type->first);
      t.dtype = type->second;
      t.rank_known = false;
    }
    ctx.output(0) = t;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    if (ctx.has_input(0)) {
      const Tensor& in = ctx.input(0);
      if (is_optional(in.kind())) return invalid_argument("Optional: input is already an optional");
      ctx.set_output(0, Tensor::optional(optional_of(in.kind()), in.dtype(), in));
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(auto type, optional_type_attr(ctx.attrs()));
    ctx.set_output(0, Tensor::optional(optional_of(type.first), type.second, Tensor()));
    return Status::Ok();
  };
  return s;
}

// Opset 18 lets both take a plain tensor or sequence (always "present") and OptionalHasElement no input at all.
KILN_REGISTER_OP(OptionalHasElement) {
  OpSchema s = sequence_schema("OptionalHasElement", 15, 0, 1);
  s.infer = [](InferContext& ctx) -> Status {
    if (ctx.opset() < 18 && !(ctx.has_input(0) && is_optional(ctx.input(0).kind)))
      return invalid_model("input must be an optional before opset 18");
    ctx.output(0) = make_info(DataType::kBOOL, {});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    bool present = ctx.has_input(0) && (!is_optional(ctx.input(0).kind()) || !ctx.input(0).items().empty());
    ctx.set_output(0, Tensor::from_vector<bool>({}, {present}));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(OptionalGetElement) {
  OpSchema s = sequence_schema("OptionalGetElement", 15, 1, 1);
  s.infer = [](InferContext& ctx) -> Status {
    const TensorInfo& in = ctx.input(0);
    if (!is_optional(in.kind)) {
      if (ctx.opset() < 18) return invalid_model("input must be an optional before opset 18");
      ctx.output(0) = in;
      return Status::Ok();
    }
    if (in.kind == ValueKind::kOPTIONAL_SEQUENCE) {
      ctx.output(0) = sequence_info(in.dtype, in.rank_known, in.shape);
    } else {
      ctx.output(0) = element_tensor(in, ctx);
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const Tensor& in = ctx.input(0);
    if (!is_optional(in.kind())) {
      ctx.set_output(0, in);
      return Status::Ok();
    }
    if (in.items().empty()) return invalid_argument("OptionalGetElement: the optional is empty");
    ctx.set_output(0, in.items()[0]);
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
