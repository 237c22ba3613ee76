// Type conversion and selection: Cast, CastLike and Where.
#include <algorithm>

#include "common/small_types.h"
#include "ops/broadcast_loop.h"

namespace kiln::ops {
namespace {

// ONNX TensorProto.DataType numbers for the types Kiln has; the rest are named in the error.
Result<DataType> dtype_from_onnx(int64_t code) {
  DataType t;
  if (dtype_from_onnx_code(code, &t)) return t;
  const char* name = code == 8 ? "STRING" : code == 14 ? "COMPLEX64" : code == 15 ? "COMPLEX128"
                   : (code == 27 || code == 28) ? "FLOAT6" : nullptr;
  if (name) return unsupported(std::string("Cast: target type ") + name + " (" + std::to_string(code) + ") is not supported");
  return invalid_model("Cast: attribute 'to' must be an ONNX TensorProto data type number, got " + std::to_string(code));
}

// Integer values known at build time survive a cast to another integer type (Shape -> Cast(int32) chains).
void propagate_cast_values(InferContext& ctx, DataType to) {
  if (!dtype_is_integer(ctx.input(0).dtype)) return;
  if (to == DataType::kBOOL) {
    if (auto v = known_static_values(ctx.input(0))) {
      std::vector<Dim> r;
      for (int64_t x : *v) r.push_back(Dim(x != 0 ? 1 : 0));
      ctx.output(0).value = std::move(r);
    }
  } else if (dtype_is_integer(to)) {
    ctx.output(0).value = known_values(ctx.input(0));
  }
}

Status infer_cast(InferContext& ctx, DataType to) {
  KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
  ctx.output(0).dtype = to;
  propagate_cast_values(ctx, to);
  return Status::Ok();
}

Status compute_cast(ComputeContext& ctx, DataType to) {
  const Tensor& in = ctx.input(0);
  // The runtime never writes in place, so a no-op cast may share the input's storage.
  if (in.dtype() == to) {
    ctx.set_output(0, in);
    return Status::Ok();
  }
  KILN_ASSIGN_OR_RETURN(int64_t saturate, ctx.attrs().get_int("saturate", 1));
  if (to == DataType::kFP8E8M0) {
    KILN_ASSIGN_OR_RETURN(std::string mode, ctx.attrs().get_string("round_mode", "up"));
    if (mode != "up" && mode != "down" && mode != "nearest")
      return invalid_model("Cast: round_mode '" + mode + "' is not supported; allowed values are up, down, nearest");
    Tensor out(to, in.shape());
    for (int64_t i = 0; i < in.numel(); ++i)
      out.data<uint8_t>()[i] = float_to_e8m0(static_cast<float>(in.get_f64(i)), saturate != 0, mode.c_str());
    ctx.set_output(0, out);
    return Status::Ok();
  }
  ctx.set_output(0, in.cast(to, saturate != 0));
  return Status::Ok();
}

// Known values of a bool or integer tensor (rank <= 1), as 0/1 for bools.
std::optional<std::vector<Dim>> known_cond_values(const TensorInfo& t) {
  if (t.value) return t.value;
  if (t.constant && t.constant->dtype() == DataType::kBOOL && t.constant->rank() <= 1) {
    std::vector<Dim> v;
    for (int64_t x : t.constant->to_i64_vector()) v.push_back(Dim(x != 0 ? 1 : 0));
    return v;
  }
  return known_values(t);
}

}  // namespace

KILN_REGISTER_OP(Cast) {
  OpSchema s;
  s.name = "Cast";
  s.min_inputs = s.max_inputs = 1;
  // saturate (opset 19) only concerns float8 targets; round_mode (opset 24) only float8e8m0.
  s.attrs = {{"to", AttrType::kINT, AttrRequirement::kRequired}, {"saturate", AttrType::kINT},
             {"round_mode", AttrType::kSTRING}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(int64_t code, ctx.attrs().get_int("to"));
    KILN_ASSIGN_OR_RETURN(DataType to, dtype_from_onnx(code));
    return infer_cast(ctx, to);
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(int64_t code, ctx.attrs().get_int("to"));
    KILN_ASSIGN_OR_RETURN(DataType to, dtype_from_onnx(code));
    return compute_cast(ctx, to);
  };
  return s;
}

KILN_REGISTER_OP(CastLike) {
  OpSchema s;
  s.name = "CastLike";
  s.since_opset = 15;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"saturate", AttrType::kINT}, {"round_mode", AttrType::kSTRING}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) { return infer_cast(ctx, ctx.input(1).dtype); };
  s.compute = [](ComputeContext& ctx) { return compute_cast(ctx, ctx.input(1).dtype()); };
  return s;
}

KILN_REGISTER_OP(Where) {
  OpSchema s;
  s.name = "Where";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 3;
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    if (ctx.input(0).dtype != DataType::kBOOL)
      return invalid_model(std::string("Where: condition must be bool but is ") + dtype_name(ctx.input(0).dtype));
    KILN_RETURN_IF_ERROR(check_same_dtype(ctx, "Where", {1, 2}));
    KILN_RETURN_IF_ERROR(infer_broadcast(ctx, {0, 1, 2}, ctx.input(1).dtype));
    // Selecting between known shape values (e.g. Where(Equal(shape, -1), 1, shape) before Expand).
    TensorInfo& out = ctx.output(0);
    if (dtype_is_integer(out.dtype) && out.rank_known && out.shape.size() <= 1) {
      auto c = known_cond_values(ctx.input(0));
      auto x = known_values(ctx.input(1));
      auto y = known_values(ctx.input(2));
      if (c && x && y && !c->empty() && !x->empty() && !y->empty()) {
        size_t n = std::max({c->size(), x->size(), y->size()});
        auto fits = [n](size_t m) { return m == n || m == 1; };
        bool shape_ok = out.shape.empty() ? n == 1 : (!out.shape[0].is_static() || out.shape[0].value == static_cast<int64_t>(n));
        if (fits(c->size()) && fits(x->size()) && fits(y->size()) && shape_ok) {
          std::vector<Dim> r;
          for (size_t i = 0; i < n; ++i) {
            const Dim& ci = (*c)[c->size() == 1 ? 0 : i];
            if (!ci.is_static()) return Status::Ok();
            r.push_back(ci.value != 0 ? (*x)[x->size() == 1 ? 0 : i] : (*y)[y->size() == 1 ? 0 : i]);
          }
          out.value = std::move(r);
        }
      }
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& c = ctx.input(0);
    const Tensor& x = ctx.input(1);
    const Tensor& y = ctx.input(2);
    if (c.dtype() != DataType::kBOOL)
      return invalid_argument(std::string("Where: condition must be bool, got ") + dtype_name(c.dtype()));
    if (x.dtype() != y.dtype())
      return invalid_argument(std::string("Where: X and Y must have the same type, got ") + dtype_name(x.dtype()) +
                              " and " + dtype_name(y.dtype()));
    KILN_ASSIGN_OR_RETURN(auto dims, broadcast_dims({c.shape(), x.shape(), y.shape()}));
    Tensor& out = ctx.allocate_output(0, x.dtype(), dims);
    const bool* pc = c.data<bool>();
    KILN_DISPATCH_ALL_TYPES(x.dtype(), "Where", {
      const scalar_t* px = x.data<scalar_t>();
      const scalar_t* py = y.data<scalar_t>();
      scalar_t* po = out.data<scalar_t>();
      for_each_broadcast<3>(dims, {&c.shape(), &x.shape(), &y.shape()},
                            [&](int64_t o, const std::array<int64_t, 3>& i) { po[o] = pc[i[0]] ? px[i[1]] : py[i[2]]; });
    });
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
