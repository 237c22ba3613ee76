// Tensor generators and structured fills: Constant, ConstantOfShape, Range, EyeLike, Trilu, Tile, CumSum, OneHot;
// also Einsum (reference loop over all labels).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "ops/einsum.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

constexpr size_t kMaxValueElems = 16;  // integer tensors up to this size carry `value` for shape arithmetic

// Value entries for an integer tensor small enough to matter for shape arithmetic.
std::optional<std::vector<Dim>> small_int_value(const Tensor& t) {
  if (!dtype_is_integer(t.dtype()) || t.rank() > 1 || t.numel() > static_cast<int64_t>(kMaxValueElems))
    return std::nullopt;
  std::vector<Dim> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(Dim(t.get_i64(i)));
  return v;
}

// A scalar input's value at inference time: whole-tensor constant first, then propagated integer values.
std::optional<double> known_scalar(const TensorInfo& t) {
  if (t.constant && t.constant->numel() == 1) return t.constant->get_f64(0);
  auto v = known_static_values(t);
  if (v && v->size() == 1) return static_cast<double>((*v)[0]);
  return std::nullopt;
}

// Output dims from a known shape value; unnamed unknown entries get fresh names.
Shape shape_from_value(const std::vector<Dim>& v, InferContext& ctx) {
  Shape s;
  for (auto& d : v) s.push_back(d.is_static() || !d.sym.empty() ? d : ctx.fresh_dim());
  return s;
}

Result<Tensor> constant_tensor(const Attributes& attrs) {
  if (attrs.has("value")) return attrs.get_tensor("value");
  if (attrs.has("value_float")) {
    KILN_ASSIGN_OR_RETURN(float f, attrs.get_float("value_float"));
    return Tensor::from_vector<float>({}, {f});
  }
  if (attrs.has("value_floats")) {
    KILN_ASSIGN_OR_RETURN(auto v, attrs.get_floats("value_floats"));
    return Tensor::from_vector<float>({static_cast<int64_t>(v.size())}, v);
  }
  if (attrs.has("value_int")) {
    KILN_ASSIGN_OR_RETURN(int64_t i, attrs.get_int("value_int"));
    return Tensor::scalar_i64(i);
  }
  if (attrs.has("value_ints")) {
    KILN_ASSIGN_OR_RETURN(auto v, attrs.get_ints("value_ints"));
    return Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v);
  }
  if (attrs.has("value_string") || attrs.has("value_strings"))
    return unsupported("Constant: string constants (value_string/value_strings) are not supported");
  if (attrs.has("sparse_value")) return unsupported("Constant: sparse_value is not supported");
  return invalid_model("Constant: exactly one of value, value_float(s), value_int(s) must be set, found none");
}

// Range's element count, computed in the element type's arithmetic as the spec does.
int64_t range_count(double start, double limit, double delta, bool integer) {
  if (integer) {
    auto s = static_cast<int64_t>(start), l = static_cast<int64_t>(limit), d = static_cast<int64_t>(delta);
    int64_t num = l - s;
    int64_t n = num / d + ((num % d != 0 && ((num > 0) == (d > 0))) ? 1 : 0);
    return std::max<int64_t>(n, 0);
  }
  return std::max<int64_t>(static_cast<int64_t>(std::ceil((limit - start) / delta)), 0);
}

Result<int64_t> onehot_depth_from(double d) {
  if (!(d >= 1)) return invalid_argument("OneHot: depth must be >= 1, found " + std::to_string(d));
  return static_cast<int64_t>(d);
}

}  // namespace

Result<EinsumPlan> parse_einsum(std::string eq, const std::vector<size_t>& ranks) {
  eq.erase(std::remove(eq.begin(), eq.end(), ' '), eq.end());
  auto bad = [&](const std::string& why) { return invalid_model("Einsum: equation '" + eq + "': " + why); };
  std::string lhs = eq, rhs;
  bool explicit_out = false;
  if (auto arrow = eq.find("->"); arrow != std::string::npos) {
    lhs = eq.substr(0, arrow);
    rhs = eq.substr(arrow + 2);
    explicit_out = true;
  }
  std::vector<std::string> terms;
  for (size_t b = 0;;) {
    size_t c = lhs.find(',', b);
    terms.push_back(lhs.substr(b, c == std::string::npos ? std::string::npos : c - b));
    if (c == std::string::npos) break;
    b = c + 1;
  }
  if (terms.size() != ranks.size())
    return bad("has " + std::to_string(terms.size()) + " operands but the node has " + std::to_string(ranks.size()) +
               " inputs");
  auto letter_id = [](char ch) { return ch >= 'a' && ch <= 'z' ? ch - 'a' : (ch >= 'A' && ch <= 'Z' ? 26 + ch - 'A' : -1); };
  EinsumPlan plan;
  int ell = 0;
  std::vector<int> counts(52, 0);
  for (size_t t = 0; t < terms.size(); ++t) {
    const std::string& term = terms[t];
    size_t dots = term.find("...");
    int letters = 0;
    for (char ch : term)
      if (ch != '.') ++letters;
    int e = dots == std::string::npos ? 0 : static_cast<int>(ranks[t]) - letters;
    if (e < 0 || (dots == std::string::npos && letters != static_cast<int>(ranks[t])))
      return bad("operand " + std::to_string(t) + " '" + term + "' does not match its rank " + std::to_string(ranks[t]));
    ell = std::max(ell, e);
  }
  for (size_t t = 0; t < terms.size(); ++t) {
    const std::string& term = terms[t];
    std::vector<int> ids;
    int e = static_cast<int>(ranks[t]);
    for (char ch : term)
      if (ch != '.') --e;
    for (size_t i = 0; i < term.size(); ++i) {
      if (term[i] == '.') {
        if (term.compare(i, 3, "...") != 0) return bad("stray '.'");
        for (int k = 0; k < e; ++k) ids.push_back(52 + ell - e + k);
        i += 2;
        continue;
      }
      int id = letter_id(term[i]);
      if (id < 0) return bad(std::string("invalid label '") + term[i] + "'");
      ids.push_back(id);
      ++counts[id];
    }
    plan.inputs.push_back(ids);
  }
  if (explicit_out) {
    for (size_t i = 0; i < rhs.size(); ++i) {
      if (rhs[i] == '.') {
        if (rhs.compare(i, 3, "...") != 0) return bad("stray '.'");
        for (int k = 0; k < ell; ++k) plan.output.push_back(52 + k);
        i += 2;
        continue;
      }
      int id = letter_id(rhs[i]);
      if (id < 0 || counts[id] == 0) return bad(std::string("output label '") + rhs[i] + "' is not in any operand");
      plan.output.push_back(id);
    }
  } else {
    for (int k = 0; k < ell; ++k) plan.output.push_back(52 + k);
    for (int id = 0; id < 52; ++id)
      if (counts[id] == 1) plan.output.push_back(id);
  }
  plan.num_labels = 52 + ell;
  return plan;
}

KILN_REGISTER_OP(Constant) {
  OpSchema s;
  s.name = "Constant";
  s.min_inputs = s.max_inputs = 0;
  s.attrs = {{"value", AttrType::kTENSOR},         {"value_float", AttrType::kFLOAT},
             {"value_floats", AttrType::kFLOATS},  {"value_int", AttrType::kINT},
             {"value_ints", AttrType::kINTS},      {"value_string", AttrType::kSTRING},
             {"value_strings", AttrType::kSTRINGS}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    int set = 0;
    for (const char* n : {"value", "value_float", "value_floats", "value_int", "value_ints", "value_string",
                          "value_strings"})
      set += ctx.attrs().has(n);
    if (set > 1) return invalid_model("Constant: exactly one value attribute must be set, found " + std::to_string(set));
    KILN_ASSIGN_OR_RETURN(Tensor t, constant_tensor(ctx.attrs()));
    ctx.output(0) = make_info(t.dtype(), shape_from_dims(t.shape()));
    ctx.output(0).value = small_int_value(t);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(Tensor t, constant_tensor(ctx.attrs()));
    ctx.set_output(0, std::move(t));  // shares the attribute's storage; outputs are never written in place
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(ConstantOfShape) {
  OpSchema s;
  s.name = "ConstantOfShape";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"value", AttrType::kTENSOR}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& shp = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = DataType::kFLOAT;
    Tensor fill;
    if (ctx.attrs().has("value")) {
      KILN_ASSIGN_OR_RETURN(fill, ctx.attrs().get_tensor("value"));
      if (fill.numel() != 1)
        return invalid_model("ConstantOfShape: value must hold one element, found " + std::to_string(fill.numel()));
      o.dtype = fill.dtype();
    }
    if (auto v = known_values(shp)) {
      o.shape = shape_from_value(*v, ctx);
      for (auto& d : *v)
        if (d.is_static() && d.value < 0) return invalid_model("ConstantOfShape: shape " + shape_to_string(*v) + " has a negative entry");
    } else if (shp.rank_known && shp.shape.size() == 1 && shp.shape[0].is_static()) {
      if (shp.shape[0].value > kMaxRank)
        return invalid_model("ConstantOfShape: the shape input has " + std::to_string(shp.shape[0].value) +
                             " entries; Kiln supports at most " + std::to_string(kMaxRank) + " dims");
      o.shape.clear();
      for (int64_t i = 0; i < shp.shape[0].value; ++i) o.shape.push_back(ctx.fresh_dim());
    } else {
      o.rank_known = false;
      return Status::Ok();
    }
    if (dtype_is_integer(o.dtype) && o.shape.size() <= 1 && shape_is_static(o.shape)) {
      int64_t n = o.shape.empty() ? 1 : o.shape[0].value;
      if (n <= static_cast<int64_t>(kMaxValueElems))
        o.value = std::vector<Dim>(n, Dim(fill.defined() ? fill.get_i64(0) : 0));
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(auto dims, tensor_to_ints(ctx.input(0)));
    for (auto d : dims)
      if (d < 0) return invalid_argument("ConstantOfShape: shape " + dims_to_string(dims) + " has a negative entry");
    if (!ctx.attrs().has("value")) {
      ctx.allocate_output(0, DataType::kFLOAT, dims);  // zero-filled
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(Tensor fill, ctx.attrs().get_tensor("value"));
    if (fill.numel() != 1)
      return invalid_argument("ConstantOfShape: value must hold one element, found " + std::to_string(fill.numel()));
    Tensor& out = ctx.allocate_output(0, fill.dtype(), dims);
    const size_t es = dtype_size(fill.dtype());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    for (int64_t i = 0; i < out.numel(); ++i) std::memcpy(dst + i * es, fill.raw(), es);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Range) {
  OpSchema s;
  s.name = "Range";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 3;
  s.dtypes = {DataType::kFLOAT, DataType::kDOUBLE, DataType::kINT16, DataType::kINT32, DataType::kINT64};
  s.infer = [](InferContext& ctx) {
    const DataType dt = ctx.input(0).dtype;
    for (int i = 1; i < 3; ++i)
      if (ctx.input(i).dtype != dt)
        return invalid_model(std::string("Range: start, limit and delta must share one type, found ") +
                             dtype_name(dt) + " and " + dtype_name(ctx.input(i).dtype));
    TensorInfo& o = ctx.output(0);
    o.dtype = dt;
    auto st = known_scalar(ctx.input(0)), li = known_scalar(ctx.input(1)), de = known_scalar(ctx.input(2));
    if (!st || !li || !de) {
      o.shape = {ctx.fresh_dim()};
      return Status::Ok();
    }
    if (*de == 0) return invalid_model("Range: delta must be non-zero");
    const bool integer = dtype_is_integer(dt);
    int64_t n = range_count(*st, *li, *de, integer);
    o.shape = {Dim(n)};
    if (integer && n <= static_cast<int64_t>(kMaxValueElems)) {
      std::vector<Dim> v;
      for (int64_t i = 0; i < n; ++i) v.push_back(Dim(static_cast<int64_t>(*st) + i * static_cast<int64_t>(*de)));
      o.value = v;
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& t0 = ctx.input(0);
    for (int i = 0; i < 3; ++i)
      if (ctx.input(i).numel() != 1)
        return invalid_argument("Range: inputs must be scalars, input " + std::to_string(i) + " has shape " +
                                dims_to_string(ctx.input(i).shape()));
    const double st = t0.get_f64(0), li = ctx.input(1).get_f64(0), de = ctx.input(2).get_f64(0);
    if (de == 0) return invalid_argument("Range: delta must be non-zero");
    const int64_t n = range_count(st, li, de, dtype_is_integer(t0.dtype()));
    Tensor& out = ctx.allocate_output(0, t0.dtype(), {n});
    KILN_DISPATCH_NUMERIC_TYPES(t0.dtype(), "Range", {
      scalar_t* o = out.data<scalar_t>();
      if constexpr (std::is_integral_v<scalar_t>) {
        const int64_t s0 = t0.get_i64(0), d0 = ctx.input(2).get_i64(0);
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<scalar_t>(s0 + i * d0);
      } else {
        using calc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<scalar_t>(static_cast<calc_t>(st + i * de));
      }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(EyeLike) {
  OpSchema s;
  s.name = "EyeLike";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"dtype", AttrType::kINT}, {"k", AttrType::kINT}};
  s.dtypes = all_types();
  auto out_type = [](const Attributes& attrs, DataType in) -> Result<DataType> {
    if (!attrs.has("dtype")) return in;
    KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("dtype"));
    DataType dt;
    if (!dtype_from_onnx_code(code, &dt))
      return unsupported("EyeLike: dtype " + std::to_string(code) + " (ONNX TensorProto code) is not supported");
    return dt;
  };
  s.infer = [out_type](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    if (in.rank_known && in.shape.size() != 2)
      return invalid_model("EyeLike: input must be 2-D, found " + shape_to_string(in.shape));
    KILN_ASSIGN_OR_RETURN(DataType dt, out_type(ctx.attrs(), in.dtype));
    ctx.output(0) = make_info(dt, in.shape);
    ctx.output(0).rank_known = in.rank_known;
    return Status::Ok();
  };
  s.compute = [out_type](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    if (in.rank() != 2) return invalid_argument("EyeLike: input must be 2-D, found " + dims_to_string(in.shape()));
    KILN_ASSIGN_OR_RETURN(DataType dt, out_type(ctx.attrs(), in.dtype()));
    KILN_ASSIGN_OR_RETURN(int64_t k, ctx.attrs().get_int("k", 0));
    Tensor& out = ctx.allocate_output(0, dt, in.shape());
    const int64_t rows = in.shape()[0], cols = in.shape()[1];
    KILN_DISPATCH_ALL_TYPES(dt, "EyeLike", {
      scalar_t* o = out.data<scalar_t>();
      for (int64_t i = 0; i < rows; ++i) {
        int64_t j = i + k;
        if (j >= 0 && j < cols) o[i * cols + j] = static_cast<scalar_t>(1.0f);
      }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Trilu) {
  OpSchema s;
  s.name = "Trilu";
  s.since_opset = 14;
  s.min_inputs = 1;
  s.max_inputs = 2;
  s.attrs = {{"upper", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    if (in.rank_known && in.shape.size() < 2)
      return invalid_model("Trilu: input must have rank >= 2, found " + shape_to_string(in.shape));
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    if (in.rank() < 2) return invalid_argument("Trilu: input must have rank >= 2, found " + dims_to_string(in.shape()));
    KILN_ASSIGN_OR_RETURN(int64_t upper, ctx.attrs().get_int("upper", 1));
    int64_t k = 0;
    if (ctx.has_input(1)) {
      if (ctx.input(1).numel() != 1) return invalid_argument("Trilu: k must be a scalar");
      k = ctx.input(1).get_i64(0);
    }
    Tensor& out = ctx.allocate_output(0, in.dtype(), in.shape());  // zero-filled: only kept elements are copied
    const int64_t rows = in.dim(-2), cols = in.dim(-1);
    const int64_t mats = rows * cols == 0 ? 0 : in.numel() / (rows * cols);
    const size_t es = dtype_size(in.dtype());
    const uint8_t* src = static_cast<const uint8_t*>(in.raw());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    for (int64_t m = 0; m < mats; ++m) {
      for (int64_t i = 0; i < rows; ++i) {
        // Kept columns: j >= i + k for the upper triangle, j <= i + k for the lower one.
        int64_t lo = upper ? std::clamp<int64_t>(i + k, 0, cols) : 0;
        int64_t hi = upper ? cols : std::clamp<int64_t>(i + k + 1, 0, cols);
        int64_t row = (m * rows + i) * cols;
        if (hi > lo) std::memcpy(dst + (row + lo) * es, src + (row + lo) * es, (hi - lo) * es);
      }
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Tile) {
  OpSchema s;
  s.name = "Tile";
  s.since_opset = 6;
  s.min_inputs = s.max_inputs = 2;
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    const TensorInfo& rep = ctx.input(1);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    if (!in.rank_known) {
      o.rank_known = false;
      return Status::Ok();
    }
    o.shape = in.shape;
    auto rv = known_values(rep);
    if (!rv) {
      for (auto& d : o.shape) d = ctx.fresh_dim();
      return Status::Ok();
    }
    if (rv->size() != in.shape.size())
      return invalid_model("Tile: repeats has " + std::to_string(rv->size()) + " entries, expected " +
                           std::to_string(in.shape.size()) + " (the input rank)");
    for (size_t i = 0; i < rv->size(); ++i) {
      const Dim& r = (*rv)[i];
      const Dim& d = in.shape[i];
      if (r.is_static() && r.value == 1) continue;
      if (r.is_static() && d.is_static()) o.shape[i] = Dim(d.value * r.value);
      else if (r.is_static() && r.value == 0) o.shape[i] = Dim(0);
      else if (d.is_static() && d.value == 1 && !r.sym.empty()) o.shape[i] = r;
      else o.shape[i] = ctx.fresh_dim();
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto reps, tensor_to_ints(ctx.input(1)));
    const int r = in.rank();
    if (static_cast<int>(reps.size()) != r)
      return invalid_argument("Tile: repeats has " + std::to_string(reps.size()) + " entries, expected " +
                              std::to_string(r) + " (the input rank)");
    std::vector<int64_t> out_dims(r);
    for (int i = 0; i < r; ++i) {
      if (reps[i] < 0) return invalid_argument("Tile: repeats must be >= 0, found " + std::to_string(reps[i]));
      out_dims[i] = in.shape()[i] * reps[i];
    }
    Tensor& out = ctx.allocate_output(0, in.dtype(), out_dims);
    const size_t es = dtype_size(in.dtype());
    if (out.numel() == 0) return Status::Ok();
    if (r == 0) {
      std::memcpy(out.raw(), in.raw(), es);
      return Status::Ok();
    }
    // Each output row (innermost axis) is the matching input row repeated; rows map back by modulo.
    auto in_st = strides_of(in.shape());
    const int64_t row_in = in.shape()[r - 1] * es, row_out = out_dims[r - 1] * es;
    const int64_t rows = out.numel() / out_dims[r - 1];
    const uint8_t* src = static_cast<const uint8_t*>(in.raw());
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    std::vector<int64_t> idx(r, 0);
    for (int64_t row = 0; row < rows; ++row) {
      int64_t off = 0;
      for (int a = 0; a < r - 1; ++a) off += (idx[a] % in.shape()[a]) * in_st[a];
      for (int64_t k = 0; k < reps[r - 1]; ++k) std::memcpy(dst + row * row_out + k * row_in, src + off * es, row_in);
      for (int a = r - 2; a >= 0; --a) {
        if (++idx[a] < out_dims[a]) break;
        idx[a] = 0;
      }
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(CumSum) {
  OpSchema s;
  s.name = "CumSum";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"exclusive", AttrType::kINT}, {"reverse", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& ax = ctx.input(1);
    if (ax.rank_known && ax.shape.size() > 1)
      return invalid_model("CumSum: axis must be a scalar or 1-element tensor, found " + shape_to_string(ax.shape));
    return infer_same_as_input0(ctx);
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    if (ctx.input(1).numel() != 1) return invalid_argument("CumSum: axis must hold one element");
    KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(ctx.input(1).get_i64(0), in.rank(), "CumSum axis"));
    KILN_ASSIGN_OR_RETURN(int64_t exclusive, ctx.attrs().get_int("exclusive", 0));
    KILN_ASSIGN_OR_RETURN(int64_t reverse, ctx.attrs().get_int("reverse", 0));
    Tensor& out = ctx.allocate_output(0, in.dtype(), in.shape());
    if (in.rank() == 0) {
      if (!exclusive) std::memcpy(out.raw(), in.raw(), dtype_size(in.dtype()));
      return Status::Ok();
    }
    const int64_t outer = product(in.shape(), 0, axis), len = in.shape()[axis], inner = product(in.shape(), axis + 1);
    KILN_DISPATCH_NUMERIC_TYPES(in.dtype(), "CumSum", {
      // Half and bfloat16 accumulate in float so rounding happens once per output.
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, Half> || std::is_same_v<scalar_t, BFloat16>, float,
                                       scalar_t>;
      const scalar_t* x = in.data<scalar_t>();
      scalar_t* y = out.data<scalar_t>();
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
          acc_t acc = acc_t(0);
          for (int64_t t = 0; t < len; ++t) {
            int64_t p = reverse ? len - 1 - t : t;
            int64_t at = (o * len + p) * inner + i;
            acc_t v = static_cast<acc_t>(x[at]);
            if (exclusive) { y[at] = static_cast<scalar_t>(acc); acc = static_cast<acc_t>(acc + v); }
            else { acc = static_cast<acc_t>(acc + v); y[at] = static_cast<scalar_t>(acc); }
          }
        }
      }
    });
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(OneHot) {
  OpSchema s;
  s.name = "OneHot";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 3;
  s.attrs = {{"axis", AttrType::kINT}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& ind = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = ctx.input(2).dtype;
    if (!ind.rank_known) {
      o.rank_known = false;
      return Status::Ok();
    }
    const int64_t r = static_cast<int64_t>(ind.shape.size()) + 1;
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "OneHot axis"));
    Dim depth = ctx.fresh_dim();
    if (auto d = known_scalar(ctx.input(1))) {
      KILN_ASSIGN_OR_RETURN(int64_t n, onehot_depth_from(*d));
      depth = Dim(n);
    }
    o.shape = ind.shape;
    o.shape.insert(o.shape.begin() + axis, depth);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& ind = ctx.input(0);
    const Tensor& values = ctx.input(2);
    if (ctx.input(1).numel() != 1) return invalid_argument("OneHot: depth must hold one element");
    if (values.numel() != 2)
      return invalid_argument("OneHot: values must hold two elements [off, on], found " + std::to_string(values.numel()));
    KILN_ASSIGN_OR_RETURN(int64_t depth, onehot_depth_from(ctx.input(1).get_f64(0)));
    const int64_t r = ind.rank() + 1;
    KILN_ASSIGN_OR_RETURN(int64_t axis, ctx.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, normalize_axis(axis, r, "OneHot axis"));
    std::vector<int64_t> out_dims = ind.shape();
    out_dims.insert(out_dims.begin() + axis, depth);
    Tensor& out = ctx.allocate_output(0, values.dtype(), out_dims);
    const size_t es = dtype_size(values.dtype());
    const uint8_t* off_v = static_cast<const uint8_t*>(values.raw());
    const uint8_t* on_v = off_v + es;
    uint8_t* dst = static_cast<uint8_t*>(out.raw());
    for (int64_t i = 0; i < out.numel(); ++i) std::memcpy(dst + i * es, off_v, es);
    const int64_t outer = product(ind.shape(), 0, axis), inner = product(ind.shape(), axis);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        auto v = static_cast<int64_t>(ind.get_f64(o * inner + i));
        if (v < 0) v += depth;
        if (v < 0 || v >= depth) continue;  // out-of-range indices give an all-off row, as the spec says
        std::memcpy(dst + ((o * depth + v) * inner + i) * es, on_v, es);
      }
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Einsum) {
  OpSchema s;
  s.name = "Einsum";
  s.since_opset = 12;
  s.min_inputs = 1;
  s.max_inputs = -1;
  s.attrs = {{"equation", AttrType::kSTRING, AttrRequirement::kRequired}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    TensorInfo& o = ctx.output(0);
    o.dtype = ctx.input(0).dtype;
    std::vector<size_t> ranks;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      if (!ctx.input(i).rank_known) {
        o.rank_known = false;
        return Status::Ok();
      }
      ranks.push_back(ctx.input(i).shape.size());
    }
    KILN_ASSIGN_OR_RETURN(std::string eq, ctx.attrs().get_string("equation"));
    KILN_ASSIGN_OR_RETURN(EinsumPlan plan, parse_einsum(eq, ranks));
    std::vector<std::optional<Dim>> dims(plan.num_labels);
    for (size_t t = 0; t < plan.inputs.size(); ++t)
      for (size_t k = 0; k < plan.inputs[t].size(); ++k) {
        const Dim& d = ctx.input(static_cast<int>(t)).shape[k];
        auto& cur = dims[plan.inputs[t][k]];
        if (!cur || (cur->is_static() && cur->value == 1) || (!cur->is_static() && d.is_static() && d.value != 1)) cur = d;
      }
    o.shape.clear();
    for (int id : plan.output) o.shape.push_back(dims[id] ? *dims[id] : Dim(1));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    std::vector<size_t> ranks;
    for (int i = 0; i < ctx.num_inputs(); ++i) ranks.push_back(ctx.input(i).rank());
    KILN_ASSIGN_OR_RETURN(std::string eq, ctx.attrs().get_string("equation"));
    KILN_ASSIGN_OR_RETURN(EinsumPlan plan, parse_einsum(eq, ranks));
    const DataType dt = ctx.input(0).dtype();
    std::vector<int64_t> size(plan.num_labels, -1);
    for (size_t t = 0; t < plan.inputs.size(); ++t) {
      if (ctx.input(static_cast<int>(t)).dtype() != dt) return invalid_argument("Einsum: inputs must share one data type");
      for (size_t k = 0; k < plan.inputs[t].size(); ++k) {
        int64_t d = ctx.input(static_cast<int>(t)).shape()[k];
        int64_t& cur = size[plan.inputs[t][k]];
        if (cur < 0 || cur == 1) cur = d;
        else if (d != 1 && d != cur)
          return invalid_argument("Einsum: label sizes disagree (" + std::to_string(cur) + " vs " + std::to_string(d) +
                                  ") in '" + eq + "'");
      }
    }
    // Loop order: output labels, then the summed ones; strides per label per operand (0 where absent or broadcast).
    std::vector<int> order = plan.output;
    for (int id = 0; id < plan.num_labels; ++id)
      if (size[id] >= 0 && std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
    const size_t nl = order.size(), no = plan.output.size(), nin = plan.inputs.size();
    std::vector<int64_t> extent(nl);
    std::vector<std::vector<int64_t>> st(nin, std::vector<int64_t>(nl, 0));
    for (size_t l = 0; l < nl; ++l) extent[l] = std::max<int64_t>(size[order[l]], 1);
    for (size_t t = 0; t < nin; ++t) {
      const Tensor& x = ctx.input(static_cast<int>(t));
      auto xs = strides_of(x.shape());
      for (size_t k = 0; k < plan.inputs[t].size(); ++k) {
        if (x.shape()[k] == 1) continue;
        size_t l = std::find(order.begin(), order.end(), plan.inputs[t][k]) - order.begin();
        st[t][l] += xs[k];  // a repeated label walks the diagonal
      }
    }
    std::vector<int64_t> out_dims;
    for (size_t l = 0; l < no; ++l) out_dims.push_back(size[order[l]] < 0 ? 1 : size[order[l]]);
    Tensor& out = ctx.allocate_output(0, dt, out_dims);
    int64_t inner = 1;
    for (size_t l = no; l < nl; ++l) inner *= extent[l];
    for (auto d : out_dims)
      if (d == 0) return Status::Ok();
    KILN_DISPATCH_NUMERIC_TYPES(dt, "Einsum", {
      std::vector<const scalar_t*> src(nin);
      for (size_t t = 0; t < nin; ++t) src[t] = ctx.input(static_cast<int>(t)).data<scalar_t>();
      scalar_t* y = out.data<scalar_t>();
      std::vector<int64_t> idx(nl, 0), off(nin, 0);
      for (int64_t o = 0; o < out.numel(); ++o) {
        double acc = 0;
        for (int64_t j = 0; j < inner; ++j) {
          double p = 1;
          for (size_t t = 0; t < nin; ++t) p *= static_cast<double>(src[t][off[t]]);
          acc += p;
          // Advance the odometer over all labels (the summed ones fastest).
          for (size_t l = nl; l-- > 0;) {
            for (size_t t = 0; t < nin; ++t) off[t] += st[t][l];
            if (++idx[l] < extent[l]) break;
            for (size_t t = 0; t < nin; ++t) off[t] -= st[t][l] * extent[l];
            idx[l] = 0;
          }
        }
        y[o] = static_cast<scalar_t>(acc);
      }
    });
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
