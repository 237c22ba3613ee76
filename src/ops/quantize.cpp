// Linear quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis, blocked), DynamicQuantizeLinear,
// QLinearMatMul, QLinearConv.
#include <algorithm>
#include <cmath>

#include "common/small_types.h"
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Integer range of a quantized type; false for types that are not quantized types.
bool quant_range(DataType t, double* lo, double* hi) {
  switch (t) {
    case DataType::kUINT8: *lo = 0; *hi = 255; return true;
    case DataType::kINT8: *lo = -128; *hi = 127; return true;
    case DataType::kUINT16: *lo = 0; *hi = 65535; return true;
    case DataType::kINT16: *lo = -32768; *hi = 32767; return true;
    case DataType::kINT32: *lo = -2147483648.0; *hi = 2147483647.0; return true;
    case DataType::kUINT4: *lo = 0; *hi = 15; return true;
    case DataType::kINT4: *lo = -8; *hi = 7; return true;
    case DataType::kUINT2: *lo = 0; *hi = 3; return true;
    case DataType::kINT2: *lo = -2; *hi = 1; return true;
    default: return false;
  }
}

// Float8 and float4 quantized types: values are cast (not rounded to integers) after scaling.
bool is_float_quant_type(DataType t) { return dtype_is_small_float(t) && t != DataType::kFP8E8M0; }

Status check_quant_type(DataType t, const std::string& op, const std::string& what, bool allow_int32) {
  double lo = 0, hi = 0;
  if (is_float_quant_type(t)) return Status::Ok();
  if (!quant_range(t, &lo, &hi) || (t == DataType::kINT32 && !allow_int32))
    return unsupported(op + ": " + what + " type " + dtype_name(t) + " is not supported; allowed types are uint8, int8, "
                       "uint16, int16, uint4, int4, uint2, int2, float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz), float4e2m1" +
                       (allow_int32 ? ", int32" : ""));
  return Status::Ok();
}

// ONNX TensorProto element-type numbers that QuantizeLinear's output_dtype may name.
Result<DataType> onnx_quant_dtype(int64_t code) {
  DataType t;
  double lo = 0, hi = 0;
  if (dtype_from_onnx_code(code, &t) && t != DataType::kINT32 && (quant_range(t, &lo, &hi) || is_float_quant_type(t)))
    return t;
  return unsupported("QuantizeLinear: output_dtype " + std::to_string(code) +
                     " is not supported; allowed values are 2 (uint8), 3 (int8), 4 (uint16), 5 (int16), 17-20 (float8), "
                     "21 (uint4), 22 (int4), 23 (float4e2m1), 25 (uint2), 26 (int2)");
}

Result<DataType> quantize_output_type(const Attributes& attrs, std::optional<DataType> zero_point) {
  if (zero_point) return *zero_point;
  if (attrs.has("output_dtype")) {
    KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("output_dtype"));
    if (code != 0) return onnx_quant_dtype(code);
  }
  return DataType::kUINT8;
}

// How a scale/zero-point tensor maps onto the elements of x: element (o, a, i) of the [outer, n, inner] view
// uses parameter 0 (per-tensor), a (per-axis) or (o * blocks + a / block) * inner + i (blocked).
struct QuantParams {
  int64_t outer = 1, n = 1, inner = 1;
  int64_t block = 0;   // 0: not blocked
  bool per_tensor = true;
  int64_t index(int64_t e) const {
    if (per_tensor) return 0;
    int64_t i = e % inner, a = (e / inner) % n;
    if (block == 0) return a;
    int64_t o = e / (inner * n);
    int64_t blocks = (n + block - 1) / block;
    return (o * blocks + a / block) * inner + i;
  }
};

Result<QuantParams> quant_params(const std::string& op, const Attributes& attrs, const std::vector<int64_t>& x_shape,
                                 const Tensor& scale, const Tensor* zero_point) {
  QuantParams p;
  // A scalar scale may come with a 1-element 1-D zero point (the float8/int4 reference models do this).
  const bool both_single = zero_point && zero_point->numel() == 1 && scale.numel() == 1 && scale.rank() <= 1 &&
                           zero_point->rank() <= 1;
  if (zero_point && !both_single && zero_point->shape() != scale.shape())
    return invalid_argument(op + ": zero point shape " + dims_to_string(zero_point->shape()) + " differs from scale shape " +
                            dims_to_string(scale.shape()));
  // A 1-element 1-D scale counts as per-tensor too (what opset 10 models hold).
  if (scale.rank() == 0 || (scale.rank() == 1 && scale.numel() == 1 && x_shape.size() != 1)) return p;
  KILN_ASSIGN_OR_RETURN(int64_t block, attrs.get_int("block_size", 0));
  KILN_ASSIGN_OR_RETURN(int64_t axis_raw, attrs.get_int("axis", 1));
  KILN_ASSIGN_OR_RETURN(int64_t axis, normalize_axis(axis_raw, static_cast<int64_t>(x_shape.size()), op + " axis"));
  p.per_tensor = false;
  p.outer = product(x_shape, 0, axis);
  p.n = x_shape[axis];
  p.inner = product(x_shape, axis + 1);
  if (block > 0) {
    p.block = block;
    std::vector<int64_t> want = x_shape;
    want[axis] = (x_shape[axis] + block - 1) / block;
    if (scale.shape() != want)
      return invalid_argument(op + ": blocked scale shape " + dims_to_string(scale.shape()) + " does not match " +
                              dims_to_string(want) + " for input " + dims_to_string(x_shape) + " and block_size " +
                              std::to_string(block));
    return p;
  }
  if (block < 0) return invalid_model(op + ": block_size must be >= 0, got " + std::to_string(block));
  if (scale.rank() != 1 || scale.numel() != p.n)
    return invalid_argument(op + ": per-axis scale must be 1-D of size " + std::to_string(p.n) + " (axis " +
                            std::to_string(axis) + " of " + dims_to_string(x_shape) + "), got " +
                            dims_to_string(scale.shape()));
  return p;
}

template <typename T>
void store_saturated(Tensor& out, int64_t i, double v, double lo, double hi) {
  out.data<T>()[i] = static_cast<T>(std::clamp(v, lo, hi));
}

// Writes rounded-and-saturated values into an integer tensor of one of the quantized types.
Status store_quantized(Tensor& out, const std::vector<double>& v) {
  double lo = 0, hi = 0;
  quant_range(out.dtype(), &lo, &hi);
  for (size_t i = 0; i < v.size(); ++i) {
    double q = std::clamp(v[i], lo, hi);
    switch (out.dtype()) {
      case DataType::kUINT8: out.data<uint8_t>()[i] = static_cast<uint8_t>(q); break;
      case DataType::kINT8: out.data<int8_t>()[i] = static_cast<int8_t>(q); break;
      case DataType::kUINT16: out.data<uint16_t>()[i] = static_cast<uint16_t>(q); break;
      case DataType::kINT16: out.data<int16_t>()[i] = static_cast<int16_t>(q); break;
      case DataType::kINT32: out.data<int32_t>()[i] = static_cast<int32_t>(q); break;
      case DataType::kINT4: case DataType::kINT2: out.data<int8_t>()[i] = static_cast<int8_t>(q); break;
      case DataType::kUINT4: case DataType::kUINT2: out.data<uint8_t>()[i] = static_cast<uint8_t>(q); break;
      default: return internal_error("store_quantized: unexpected type");
    }
  }
  return Status::Ok();
}

Status infer_matmul_shape(const Shape& a, const Shape& b, Shape* out, const std::string& op) {
  if (a.empty() || b.empty()) return invalid_model(op + ": inputs must have rank >= 1");
  Shape a2 = a, b2 = b;
  if (a.size() == 1) a2.insert(a2.begin(), Dim(1));
  if (b.size() == 1) b2.push_back(Dim(1));
  const Dim& ka = a2[a2.size() - 1];
  const Dim& kb = b2[b2.size() - 2];
  if (ka.is_static() && kb.is_static() && ka.value != kb.value)
    return invalid_model(op + ": inner dimensions differ: " + shape_to_string(a) + " x " + shape_to_string(b));
  KILN_ASSIGN_OR_RETURN(Shape batch, broadcast_shapes({Shape(a2.begin(), a2.end() - 2), Shape(b2.begin(), b2.end() - 2)}));
  *out = batch;
  if (a.size() > 1) out->push_back(a2[a2.size() - 2]);
  if (b.size() > 1) out->push_back(b2.back());
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(QuantizeLinear) {
  OpSchema s;
  s.name = "QuantizeLinear";
  s.since_opset = 10;
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = {{"axis", AttrType::kINT}, {"saturate", AttrType::kINT}, {"block_size", AttrType::kINT},
             {"output_dtype", AttrType::kINT}};
  s.dtypes = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT32};
  s.infer = [](InferContext& ctx) {
    std::optional<DataType> zp;
    if (ctx.has_input(2)) zp = ctx.input(2).dtype;
    KILN_ASSIGN_OR_RETURN(DataType out, quantize_output_type(ctx.attrs(), zp));
    KILN_RETURN_IF_ERROR(check_quant_type(out, "QuantizeLinear", "output", false));
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).dtype = out;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
    std::optional<DataType> zpt;
    if (zp) zpt = zp->dtype();
    KILN_ASSIGN_OR_RETURN(DataType out_t, quantize_output_type(ctx.attrs(), zpt));
    KILN_RETURN_IF_ERROR(check_quant_type(out_t, "QuantizeLinear", "output", false));
    KILN_ASSIGN_OR_RETURN(QuantParams p, quant_params("QuantizeLinear", ctx.attrs(), x.shape(), ctx.input(1), zp));
    // The division happens in float32, as the spec's reference does; rounding is half to even.
    Tensor xf = x.cast(DataType::kFLOAT), sf = ctx.input(1).cast(DataType::kFLOAT);
    if (is_float_quant_type(out_t)) {
      KILN_ASSIGN_OR_RETURN(int64_t saturate, ctx.attrs().get_int("saturate", 1));
      Tensor& out = ctx.allocate_output(0, out_t, x.shape());
      for (int64_t e = 0; e < x.numel(); ++e) {
        int64_t k = p.index(e);
        float r = xf.data<float>()[e] / sf.data<float>()[k];
        double v = static_cast<double>(r) + (zp ? zp->get_f64(k) : 0.0);
        out.data<uint8_t>()[e] = float_to_small_float(out_t, v, saturate != 0);
      }
      return Status::Ok();
    }
    std::vector<double> q(x.numel());
    for (int64_t e = 0; e < x.numel(); ++e) {
      int64_t k = p.index(e);
      float r = std::nearbyint(xf.data<float>()[e] / sf.data<float>()[k]);
      q[e] = static_cast<double>(r) + (zp ? zp->get_f64(k) : 0.0);
    }
    Tensor& out = ctx.allocate_output(0, out_t, x.shape());
    return store_quantized(out, q);
  };
  return s;
}

KILN_REGISTER_OP(DequantizeLinear) {
  OpSchema s;
  s.name = "DequantizeLinear";
  s.since_opset = 10;
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = {{"axis", AttrType::kINT}, {"block_size", AttrType::kINT}};
  s.dtypes = {DataType::kUINT8, DataType::kINT8, DataType::kUINT16, DataType::kINT16, DataType::kINT32};
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(check_quant_type(ctx.input(0).dtype, "DequantizeLinear", "input", true));
    DataType st = ctx.input(1).dtype;
    if (!dtype_is_float(st) || st == DataType::kDOUBLE)
      return invalid_model(std::string("DequantizeLinear: scale type ") + dtype_name(st) +
                           " is not allowed; allowed types are float32, float16, bfloat16");
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).dtype = st;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    const Tensor* zp = ctx.has_input(2) ? &ctx.input(2) : nullptr;
    KILN_RETURN_IF_ERROR(check_quant_type(x.dtype(), "DequantizeLinear", "input", true));
    if (zp && zp->dtype() != x.dtype())
      return invalid_argument(std::string("DequantizeLinear: zero point type ") + dtype_name(zp->dtype()) +
                              " differs from input type " + dtype_name(x.dtype()));
    KILN_ASSIGN_OR_RETURN(QuantParams p, quant_params("DequantizeLinear", ctx.attrs(), x.shape(), ctx.input(1), zp));
    Tensor sf = ctx.input(1).cast(DataType::kFLOAT);
    Tensor y(DataType::kFLOAT, x.shape());
    for (int64_t e = 0; e < x.numel(); ++e) {
      int64_t k = p.index(e);
      float centered = is_float_quant_type(x.dtype())
                           ? static_cast<float>(x.get_f64(e) - (zp ? zp->get_f64(k) : 0.0))
                           : static_cast<float>(x.get_i64(e) - (zp ? zp->get_i64(k) : 0));
      y.data<float>()[e] = centered * sf.data<float>()[k];
    }
    ctx.set_output(0, ctx.input(1).dtype() == DataType::kFLOAT ? y : y.cast(ctx.input(1).dtype()));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(DynamicQuantizeLinear) {
  OpSchema s;
  s.name = "DynamicQuantizeLinear";
  s.since_opset = 11;
  s.min_inputs = s.max_inputs = 1;
  s.min_outputs = s.max_outputs = 3;
  s.dtypes = {DataType::kFLOAT};
  s.infer = [](InferContext& ctx) {
    if (ctx.input(0).dtype != DataType::kFLOAT)
      return invalid_model(std::string("DynamicQuantizeLinear: input type ") + dtype_name(ctx.input(0).dtype) +
                           " is not allowed; allowed types are float32");
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).dtype = DataType::kUINT8;
    ctx.output(1) = make_info(DataType::kFLOAT, {});
    ctx.output(2) = make_info(DataType::kUINT8, {});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    if (x.dtype() != DataType::kFLOAT) return unsupported("DynamicQuantizeLinear: input must be float32");
    const float* in = x.data<float>();
    // The range always includes 0 so that 0 is exactly representable.
    float lo = 0.f, hi = 0.f;
    for (int64_t i = 0; i < x.numel(); ++i) {
      lo = std::min(lo, in[i]);
      hi = std::max(hi, in[i]);
    }
    float scale = (hi - lo) / 255.f;
    float zp = scale == 0.f ? 0.f : std::clamp(std::nearbyint(0.f - lo / scale), 0.f, 255.f);
    Tensor& y = ctx.allocate_output(0, DataType::kUINT8, x.shape());
    for (int64_t i = 0; i < x.numel(); ++i) {
      float q = scale == 0.f ? zp : std::nearbyint(in[i] / scale) + zp;
      y.data<uint8_t>()[i] = static_cast<uint8_t>(std::clamp(q, 0.f, 255.f));
    }
    ctx.allocate_output(1, DataType::kFLOAT, {}).data<float>()[0] = scale;
    ctx.allocate_output(2, DataType::kUINT8, {}).data<uint8_t>()[0] = static_cast<uint8_t>(zp);
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(QLinearMatMul) {
  OpSchema s;
  s.name = "QLinearMatMul";
  s.since_opset = 10;
  s.min_inputs = s.max_inputs = 8;  // a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
  s.dtypes = {DataType::kUINT8, DataType::kINT8};
  s.infer = [](InferContext& ctx) {
    for (int i : {0, 3, 7}) KILN_RETURN_IF_ERROR(check_quant_type(ctx.input(i).dtype, "QLinearMatMul", "input", false));
    TensorInfo& o = ctx.output(0);
    o.dtype = ctx.input(7).dtype;
    if (!ctx.input(0).rank_known || !ctx.input(3).rank_known) { o.rank_known = false; return Status::Ok(); }
    return infer_matmul_shape(ctx.input(0).shape, ctx.input(3).shape, &o.shape, "QLinearMatMul");
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& a = ctx.input(0);
    const Tensor& b = ctx.input(3);
    if (a.rank() < 1 || b.rank() < 1) return invalid_argument("QLinearMatMul: inputs must have rank >= 1");
    std::vector<int64_t> as = a.shape(), bs = b.shape();
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
    if (bs[bs.size() - 2] != k)
      return invalid_argument("QLinearMatMul: inner dimensions differ: " + dims_to_string(a.shape()) + " x " +
                              dims_to_string(b.shape()));
    std::vector<int64_t> ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
    KILN_ASSIGN_OR_RETURN(auto batch, broadcast_dims({ab, bb}));
    auto ast = broadcast_strides(ab, batch), bst = broadcast_strides(bb, batch);
    // Scales and zero points are per tensor, per row of a ([M]) or per column of b ([N]).
    auto param = [](const Tensor& t, int64_t i) { return t.numel() == 1 ? 0 : i; };
    const Tensor &a_scale = ctx.input(1), &a_zp = ctx.input(2), &b_scale = ctx.input(4), &b_zp = ctx.input(5);
    const Tensor &y_scale = ctx.input(6), &y_zp = ctx.input(7);
    if ((a_scale.numel() != 1 && a_scale.numel() != m) || (b_scale.numel() != 1 && b_scale.numel() != n) ||
        a_zp.numel() != a_scale.numel() || b_zp.numel() != b_scale.numel() || y_scale.numel() != 1 || y_zp.numel() != 1)
      return invalid_argument("QLinearMatMul: scales/zero points must be scalars, per-row of a or per-column of b");
    std::vector<int64_t> out_shape = batch;
    if (a.rank() > 1) out_shape.push_back(m);
    if (b.rank() > 1) out_shape.push_back(n);
    const int64_t nb = product(batch);
    std::vector<double> y(static_cast<size_t>(nb * m * n));
    for (int64_t bi = 0; bi < nb; ++bi) {
      int64_t aoff = 0, boff = 0;
      for (int64_t d = static_cast<int64_t>(batch.size()) - 1, rem = bi; d >= 0; --d) {
        int64_t c = rem % batch[d];
        rem /= batch[d];
        aoff += c * ast[d];
        boff += c * bst[d];
      }
      aoff *= m * k;
      boff *= k * n;
      for (int64_t r = 0; r < m; ++r) {
        int64_t za = a_zp.get_i64(param(a_zp, r));
        for (int64_t c = 0; c < n; ++c) {
          int64_t zb = b_zp.get_i64(param(b_zp, c));
          int64_t acc = 0;
          for (int64_t t = 0; t < k; ++t)
            acc += (a.get_i64(aoff + r * k + t) - za) * (b.get_i64(boff + t * n + c) - zb);
          float mult = static_cast<float>(a_scale.get_f64(param(a_scale, r))) *
                       static_cast<float>(b_scale.get_f64(param(b_scale, c))) / static_cast<float>(y_scale.get_f64(0));
          y[(bi * m + r) * n + c] = std::nearbyint(static_cast<double>(acc) * mult) + static_cast<double>(y_zp.get_i64(0));
        }
      }
    }
    Tensor& out = ctx.allocate_output(0, y_zp.dtype(), out_shape);
    return store_quantized(out, y);
  };
  return s;
}

}  // namespace kiln::ops

namespace kiln::ops {
namespace {

// Spatial geometry of a convolution: per spatial axis the output size and the leading pad.
struct ConvGeometry {
  std::vector<int64_t> kernel, strides, dilations, pad_begin, out;
};

Result<ConvGeometry> conv_geometry(const Attributes& attrs, const std::vector<int64_t>& in_spatial,
                                   const std::vector<int64_t>& w_spatial, const std::string& op) {
  const size_t r = in_spatial.size();
  ConvGeometry g;
  KILN_ASSIGN_OR_RETURN(g.kernel, attrs.get_ints("kernel_shape", w_spatial));
  KILN_ASSIGN_OR_RETURN(g.strides, attrs.get_ints("strides", std::vector<int64_t>(r, 1)));
  KILN_ASSIGN_OR_RETURN(g.dilations, attrs.get_ints("dilations", std::vector<int64_t>(r, 1)));
  KILN_ASSIGN_OR_RETURN(auto pads, attrs.get_ints("pads", std::vector<int64_t>(2 * r, 0)));
  KILN_ASSIGN_OR_RETURN(std::string auto_pad, attrs.get_string("auto_pad", "NOTSET"));
  if (auto_pad != "NOTSET" && auto_pad != "VALID" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    return invalid_model(op + ": auto_pad '" + auto_pad + "' is not supported; allowed values are NOTSET, VALID, "
                         "SAME_UPPER, SAME_LOWER");
  if (g.kernel.size() != r || g.strides.size() != r || g.dilations.size() != r || pads.size() != 2 * r)
    return invalid_model(op + ": kernel_shape/strides/dilations/pads do not match " + std::to_string(r) + " spatial dims");
  for (size_t i = 0; i < r; ++i) {
    const int64_t ext = (g.kernel[i] - 1) * g.dilations[i] + 1;
    if (g.strides[i] <= 0 || g.dilations[i] <= 0) return invalid_model(op + ": strides and dilations must be positive");
    int64_t pb = pads[i], pe = pads[i + r];
    if (auto_pad == "VALID") pb = pe = 0;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      int64_t out = (in_spatial[i] + g.strides[i] - 1) / g.strides[i];
      int64_t total = std::max<int64_t>(0, (out - 1) * g.strides[i] + ext - in_spatial[i]);
      pb = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pe = total - pb;
    }
    int64_t span = in_spatial[i] + pb + pe - ext;
    if (span < 0) return invalid_model(op + ": kernel extent " + std::to_string(ext) + " exceeds padded input size");
    g.pad_begin.push_back(pb);
    g.out.push_back(span / g.strides[i] + 1);
  }
  return g;
}

}  // namespace

KILN_REGISTER_OP(QLinearConv) {
  OpSchema s;
  s.name = "QLinearConv";
  s.since_opset = 10;
  s.min_inputs = 8;
  s.max_inputs = 9;  // x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B (int32)
  s.attrs = {{"auto_pad", AttrType::kSTRING}, {"dilations", AttrType::kINTS}, {"group", AttrType::kINT},
             {"kernel_shape", AttrType::kINTS}, {"pads", AttrType::kINTS}, {"strides", AttrType::kINTS}};
  s.dtypes = {DataType::kUINT8, DataType::kINT8};
  s.infer = [](InferContext& ctx) {
    const TensorInfo &x = ctx.input(0), &w = ctx.input(3);
    for (int i : {0, 3, 7}) KILN_RETURN_IF_ERROR(check_quant_type(ctx.input(i).dtype, "QLinearConv", "input", false));
    TensorInfo& o = ctx.output(0);
    o.dtype = ctx.input(7).dtype;
    if (!x.rank_known || !w.rank_known) { o.rank_known = false; return Status::Ok(); }
    if (x.shape.size() < 3 || w.shape.size() != x.shape.size())
      return invalid_model("QLinearConv: x " + shape_to_string(x.shape) + " and w " + shape_to_string(w.shape) +
                           " must have the same rank >= 3");
    o.shape = {x.shape[0], w.shape[0]};
    std::vector<int64_t> in_sp = static_dims(Shape(x.shape.begin() + 2, x.shape.end()));
    std::vector<int64_t> w_sp = static_dims(Shape(w.shape.begin() + 2, w.shape.end()));
    bool known = std::none_of(in_sp.begin(), in_sp.end(), [](int64_t d) { return d < 0; }) &&
                 (ctx.attrs().has("kernel_shape") || std::none_of(w_sp.begin(), w_sp.end(), [](int64_t d) { return d < 0; }));
    if (known) {
      KILN_ASSIGN_OR_RETURN(ConvGeometry g, conv_geometry(ctx.attrs(), in_sp, w_sp, "QLinearConv"));
      for (auto d : g.out) o.shape.push_back(Dim(d));
    } else {
      for (size_t i = 2; i < x.shape.size(); ++i) o.shape.push_back(ctx.fresh_dim());
    }
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor &x = ctx.input(0), &w = ctx.input(3);
    const Tensor &x_scale = ctx.input(1), &x_zp = ctx.input(2), &w_scale = ctx.input(4), &w_zp = ctx.input(5);
    const Tensor &y_scale = ctx.input(6), &y_zp = ctx.input(7);
    if (x.rank() < 3 || w.rank() != x.rank())
      return invalid_argument("QLinearConv: x " + dims_to_string(x.shape()) + " and w " + dims_to_string(w.shape()) +
                              " must have the same rank >= 3");
    const int64_t group = ctx.attrs().get_int("group", 1).value();
    const int64_t n = x.dim(0), c = x.dim(1), m = w.dim(0), cg = w.dim(1);
    if (group <= 0 || c != cg * group || m % group != 0)
      return invalid_argument("QLinearConv: channels " + std::to_string(c) + " and weights " + dims_to_string(w.shape()) +
                              " do not fit group " + std::to_string(group));
    std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end()), w_sp(w.shape().begin() + 2, w.shape().end());
    KILN_ASSIGN_OR_RETURN(ConvGeometry g, conv_geometry(ctx.attrs(), in_sp, w_sp, "QLinearConv"));
    if (g.kernel != w_sp) return invalid_argument("QLinearConv: kernel_shape does not match the weights");
    if ((w_scale.numel() != 1 && w_scale.numel() != m) || w_zp.numel() != w_scale.numel() || x_scale.numel() != 1 ||
        x_zp.numel() != 1 || y_scale.numel() != 1 || y_zp.numel() != 1)
      return invalid_argument("QLinearConv: scales/zero points must be scalars (w's may be per output channel)");
    const Tensor* bias = ctx.has_input(8) ? &ctx.input(8) : nullptr;
    const size_t r = in_sp.size();
    const int64_t out_sp = product(g.out), k_sp = product(w_sp), in_vol = product(in_sp), mg = m / group;
    const int64_t xz = x_zp.get_i64(0);
    std::vector<double> y(static_cast<size_t>(n * m * out_sp));
    std::vector<int64_t> opos(r), kpos(r);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t oc = 0; oc < m; ++oc) {
        const int64_t grp = oc / mg, pc = w_scale.numel() == 1 ? 0 : oc;
        const int64_t wz = w_zp.get_i64(pc);
        const float mult = static_cast<float>(x_scale.get_f64(0)) * static_cast<float>(w_scale.get_f64(pc)) /
                           static_cast<float>(y_scale.get_f64(0));
        for (int64_t o = 0; o < out_sp; ++o) {
          for (int64_t d = static_cast<int64_t>(r) - 1, rem = o; d >= 0; --d) { opos[d] = rem % g.out[d]; rem /= g.out[d]; }
          int64_t acc = bias ? bias->get_i64(oc) : 0;
          for (int64_t kc = 0; kc < cg; ++kc) {
            const int64_t ic = grp * cg + kc;
            for (int64_t kk = 0; kk < k_sp; ++kk) {
              for (int64_t d = static_cast<int64_t>(r) - 1, rem = kk; d >= 0; --d) { kpos[d] = rem % w_sp[d]; rem /= w_sp[d]; }
              int64_t off = 0;
              bool inside = true;
              for (size_t d = 0; d < r && inside; ++d) {
                int64_t p = opos[d] * g.strides[d] - g.pad_begin[d] + kpos[d] * g.dilations[d];
                inside = p >= 0 && p < in_sp[d];
                off = off * in_sp[d] + p;
              }
              // Padding holds the zero point, i.e. real zero, so it contributes nothing.
              if (!inside) continue;
              acc += (x.get_i64((b * c + ic) * in_vol + off) - xz) * (w.get_i64((oc * cg + kc) * k_sp + kk) - wz);
            }
          }
          y[(b * m + oc) * out_sp + o] = std::nearbyint(static_cast<double>(acc) * mult) + static_cast<double>(y_zp.get_i64(0));
        }
      }
    std::vector<int64_t> out_shape = {n, m};
    out_shape.insert(out_shape.end(), g.out.begin(), g.out.end());
    Tensor& out = ctx.allocate_output(0, y_zp.dtype(), out_shape);
    return store_quantized(out, y);
  };
  return s;
}

}  // namespace kiln::ops
