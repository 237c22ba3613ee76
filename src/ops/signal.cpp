// Signal-processing operators (opset 17): DFT, STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix.
#include <cmath>
#include <complex>
#include <numbers>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

using Complex = std::complex<double>;

// output_datatype holds a raw ONNX TensorProto code; these operators only produce numeric types.
Result<DataType> output_dtype(const std::string& op, const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(int64_t code, attrs.get_int("output_datatype", 1));
  DataType t;
  if (dtype_from_onnx_code(code, &t) && t != DataType::kBOOL) return t;
  return invalid_model(op + ": attribute 'output_datatype' is " + std::to_string(code) +
                       "; allowed values (ONNX TensorProto codes): 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 16");
}

// A scalar (or one-element) integer input known at inference time, if any.
std::optional<int64_t> known_scalar(const InferContext& ctx, int i) {
  if (!ctx.has_input(i)) return std::nullopt;
  auto v = known_static_values(ctx.input(i));
  if (!v || v->size() != 1) return std::nullopt;
  return (*v)[0];
}

Result<int64_t> scalar_input(const ComputeContext& ctx, int i, const std::string& op, const char* what) {
  const Tensor& t = ctx.input(i);
  if (t.numel() != 1)
    return invalid_argument(op + ": input " + what + " must be a scalar but has shape " + dims_to_string(t.shape()));
  if (!dtype_is_integer(t.dtype()))
    return invalid_argument(op + ": input " + what + " must be an integer but is " + dtype_name(t.dtype()));
  return t.get_i64(0);
}

// Values computed in double are written out in the requested type.
void set_output_from_f64(ComputeContext& ctx, int i, Tensor values, DataType dt) {
  ctx.set_output(i, dt == DataType::kDOUBLE ? std::move(values) : values.cast(dt));
}

// Discrete Fourier transform of `in` (n points, zero-padded or truncated to n) into out[0, out_len).
// Inverse transforms are scaled by 1/n, as numpy's ifft.
class Dft {
 public:
  explicit Dft(int64_t n, bool inverse) : n_(n), inverse_(inverse), tw_(static_cast<size_t>(n)) {
    const double sign = inverse ? 1.0 : -1.0;
    for (int64_t m = 0; m < n; ++m) {
      const double a = 2.0 * std::numbers::pi * static_cast<double>(m) / static_cast<double>(n);
      tw_[m] = Complex(std::cos(a), sign * std::sin(a));
    }
  }
  void run(const std::vector<Complex>& in, int64_t out_len, Complex* out) const {
    const int64_t len = std::min<int64_t>(n_, static_cast<int64_t>(in.size()));
    for (int64_t k = 0; k < out_len; ++k) {
      Complex acc(0, 0);
      // Index the twiddle table with (j*k) mod n, kept incrementally to avoid overflow and recomputing sin/cos.
      int64_t idx = 0;
      for (int64_t j = 0; j < len; ++j) {
        acc += in[j] * tw_[idx];
        idx += k;
        if (idx >= n_) idx %= n_;
      }
      out[k] = inverse_ ? acc / static_cast<double>(n_) : acc;
    }
  }

 private:
  int64_t n_;
  bool inverse_;
  std::vector<Complex> tw_;
};

// ---- DFT ----

struct DftParams {
  int64_t axis = 1;
  bool inverse = false, onesided = false;
};

Result<DftParams> dft_params(const Attributes& attrs, int64_t rank, std::optional<int64_t> axis_input) {
  DftParams p;
  KILN_ASSIGN_OR_RETURN(int64_t inv, attrs.get_int("inverse", 0));
  KILN_ASSIGN_OR_RETURN(int64_t one, attrs.get_int("onesided", 0));
  if (inv != 0 && inv != 1) return invalid_model("DFT: attribute 'inverse' is " + std::to_string(inv) + "; allowed values: 0, 1");
  if (one != 0 && one != 1) return invalid_model("DFT: attribute 'onesided' is " + std::to_string(one) + "; allowed values: 0, 1");
  p.inverse = inv != 0;
  p.onesided = one != 0;
  KILN_ASSIGN_OR_RETURN(int64_t axis, attrs.get_int("axis", 1));
  if (axis_input) axis = *axis_input;
  if (rank < 2) return invalid_model("DFT: input must have rank >= 2 (signal dims plus a last dim of 1 or 2)");
  // The last axis holds the real/imaginary parts and cannot be transformed.
  if (axis < -rank || axis > rank - 2 || (axis < 0 && axis + rank > rank - 2))
    return invalid_model("DFT: axis " + std::to_string(axis) + " is out of range [" + std::to_string(-rank) + ", -2] or [0, " +
                         std::to_string(rank - 2) + "] for rank " + std::to_string(rank));
  p.axis = axis < 0 ? axis + rank : axis;
  return p;
}

OpSchema make_dft() {
  OpSchema s;
  s.name = "DFT";
  s.since_opset = 17;
  s.min_inputs = 1;
  s.max_inputs = 3;  // input, dft_length (opset 17); axis joins the inputs in opset 20
  s.attrs = {{"axis", AttrType::kINT}, {"inverse", AttrType::kINT}, {"onesided", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    if (!dtype_is_float(x.dtype)) return invalid_model(std::string("DFT: input must be a floating-point type but is ") + dtype_name(x.dtype));
    TensorInfo& out = ctx.output(0);
    out = TensorInfo{};
    out.dtype = x.dtype;
    if (!x.rank_known) { out.rank_known = false; return Status::Ok(); }
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    std::optional<int64_t> axis_in = ctx.has_input(2) ? known_scalar(ctx, 2) : std::nullopt;
    if (ctx.has_input(2) && !axis_in) {
      // Axis decided at run time: only the rank and the complex dimension are known.
      out.shape.clear();
      for (int64_t i = 0; i + 1 < rank; ++i) out.shape.push_back(ctx.fresh_dim());
      KILN_ASSIGN_OR_RETURN(int64_t inv, ctx.attrs().get_int("inverse", 0));
      KILN_ASSIGN_OR_RETURN(int64_t one, ctx.attrs().get_int("onesided", 0));
      out.shape.push_back(Dim(inv != 0 && one != 0 ? 1 : 2));  // an inverse one-sided DFT is real
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(DftParams p, dft_params(ctx.attrs(), rank, axis_in));
    const Dim& last = x.shape.back();
    if (last.is_static() && last.value != 1 && last.value != 2)
      return invalid_model("DFT: the last dimension of the input must be 1 (real) or 2 (complex) but is " + last.to_string());
    out.shape = x.shape;
    out.shape.back() = Dim(2);
    Dim n = x.shape[p.axis];
    if (ctx.has_input(1)) {
      auto len = known_scalar(ctx, 1);
      n = len ? Dim(*len) : ctx.fresh_dim();
    }
    if (p.inverse && p.onesided) {
      // Inverse of a one-sided spectrum: a real signal of dft_length points, by default 2 * (bins - 1).
      if (!ctx.has_input(1)) n = n.is_static() ? Dim(2 * (n.value - 1)) : ctx.fresh_dim();
      out.shape.back() = Dim(1);
    } else if (p.onesided) {
      n = n.is_static() ? Dim(n.value / 2 + 1) : ctx.fresh_dim();
    }
    out.shape[p.axis] = n;
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    if (!dtype_is_float(x.dtype())) return unsupported(std::string("DFT: data type ") + dtype_name(x.dtype()) + " is not supported");
    const int64_t rank = x.rank();
    std::optional<int64_t> axis_in;
    if (ctx.has_input(2)) { KILN_ASSIGN_OR_RETURN(axis_in, scalar_input(ctx, 2, "DFT", "axis")); }
    KILN_ASSIGN_OR_RETURN(DftParams p, dft_params(ctx.attrs(), rank, axis_in));
    const auto& dims = x.shape();
    const int64_t comp = dims.back();
    if (comp != 1 && comp != 2)
      return invalid_argument("DFT: the last dimension of the input must be 1 (real) or 2 (complex) but is " + std::to_string(comp));
    const int64_t len = dims[p.axis];
    const bool real_inverse = p.inverse && p.onesided;
    int64_t n = real_inverse ? 2 * (len - 1) : len;
    if (ctx.has_input(1)) {
      KILN_ASSIGN_OR_RETURN(n, scalar_input(ctx, 1, "DFT", "dft_length"));
      if (n <= 0) return invalid_argument("DFT: dft_length must be positive but is " + std::to_string(n));
    }
    if (real_inverse && n <= 0)
      return invalid_argument("DFT: an inverse one-sided transform needs at least 2 bins along the axis but has " +
                              std::to_string(len));
    const int64_t out_n = real_inverse ? n : p.onesided ? n / 2 + 1 : n;
    const int64_t out_comp = real_inverse ? 1 : 2;
    const int64_t outer = product(dims, 0, p.axis), inner = product(dims, p.axis + 1, rank - 1);
    std::vector<int64_t> out_dims = dims;
    out_dims[p.axis] = out_n;
    out_dims.back() = out_comp;
    Tensor xd = x.dtype() == DataType::kDOUBLE ? x : x.cast(DataType::kDOUBLE);
    Tensor yd(DataType::kDOUBLE, out_dims);
    const double* src = xd.data<double>();
    double* dst = yd.data<double>();
    Dft dft(n, p.inverse);
    std::vector<Complex> line(static_cast<size_t>(len)), res(static_cast<size_t>(out_n));
    std::vector<Complex> full(real_inverse ? static_cast<size_t>(n) : 0);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t in = 0; in < inner; ++in) {
        for (int64_t j = 0; j < len; ++j) {
          const double* e = src + ((o * len + j) * inner + in) * comp;
          line[j] = Complex(e[0], comp == 2 ? e[1] : 0.0);
        }
        if (real_inverse) {
          // The one-sided bins stand for a Hermitian spectrum: rebuild the upper half as conjugates. Taking the
          // real part of the result then ignores the imaginary parts of the DC and Nyquist bins, as irfft does.
          for (int64_t k = 0; k < n; ++k) {
            const int64_t mirror = n - k;
            if (k <= n / 2) full[k] = k < len ? line[k] : Complex(0, 0);
            else full[k] = mirror < len ? std::conj(line[mirror]) : Complex(0, 0);
          }
          dft.run(full, out_n, res.data());
        } else {
          dft.run(line, out_n, res.data());
        }
        for (int64_t k = 0; k < out_n; ++k) {
          double* e = dst + ((o * out_n + k) * inner + in) * out_comp;
          e[0] = res[k].real();
          if (!real_inverse) e[1] = res[k].imag();
        }
      }
    }
    set_output_from_f64(ctx, 0, std::move(yd), x.dtype());
    return Status::Ok();
  };
  return s;
}

// ---- STFT ----

OpSchema make_stft() {
  OpSchema s;
  s.name = "STFT";
  s.since_opset = 17;
  s.min_inputs = 2;
  s.max_inputs = 4;  // signal, frame_step, window, frame_length
  s.attrs = {{"onesided", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    if (!dtype_is_float(x.dtype)) return invalid_model(std::string("STFT: signal must be a floating-point type but is ") + dtype_name(x.dtype));
    KILN_ASSIGN_OR_RETURN(int64_t onesided, ctx.attrs().get_int("onesided", 1));
    if (onesided != 0 && onesided != 1)
      return invalid_model("STFT: attribute 'onesided' is " + std::to_string(onesided) + "; allowed values: 0, 1");
    if (x.rank_known && x.shape.size() != 3)
      return invalid_model("STFT: signal must have shape [batch, length, 1 or 2] but has shape " + shape_to_string(x.shape));
    if (ctx.has_input(2) && ctx.input(2).dtype != x.dtype)
      return invalid_model(std::string("STFT: window must have the signal's type ") + dtype_name(x.dtype));
    Dim frame_len;
    if (auto fl = known_scalar(ctx, 3)) frame_len = Dim(*fl);
    else if (!ctx.has_input(3) && ctx.has_input(2) && ctx.input(2).rank_known && ctx.input(2).shape.size() == 1)
      frame_len = ctx.input(2).shape[0];
    else if (!ctx.has_input(3) && !ctx.has_input(2))
      return invalid_model("STFT: needs a window or a frame_length input to know the frame length");
    else frame_len = ctx.fresh_dim();
    auto step = known_scalar(ctx, 1);
    Dim frames;
    if (x.rank_known && x.shape[1].is_static() && frame_len.is_static() && step && *step > 0)
      frames = Dim((x.shape[1].value - frame_len.value) / *step + 1);
    else frames = ctx.fresh_dim();
    Dim bins = frame_len;
    if (onesided) bins = frame_len.is_static() ? Dim(frame_len.value / 2 + 1) : ctx.fresh_dim();
    TensorInfo& out = ctx.output(0);
    out = TensorInfo{};
    out.dtype = x.dtype;
    out.shape = {x.rank_known ? x.shape[0] : ctx.fresh_dim(), frames, bins, Dim(2)};
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    if (!dtype_is_float(x.dtype())) return unsupported(std::string("STFT: data type ") + dtype_name(x.dtype()) + " is not supported");
    if (x.rank() != 3 || (x.dim(2) != 1 && x.dim(2) != 2))
      return invalid_argument("STFT: signal must have shape [batch, length, 1 or 2] but has shape " + dims_to_string(x.shape()));
    KILN_ASSIGN_OR_RETURN(int64_t onesided, ctx.attrs().get_int("onesided", 1));
    KILN_ASSIGN_OR_RETURN(int64_t step, scalar_input(ctx, 1, "STFT", "frame_step"));
    if (step <= 0) return invalid_argument("STFT: frame_step must be positive but is " + std::to_string(step));
    int64_t frame_len = -1;
    std::vector<double> window;
    if (ctx.has_input(2)) {
      const Tensor& w = ctx.input(2);
      if (w.rank() != 1) return invalid_argument("STFT: window must be 1-D but has shape " + dims_to_string(w.shape()));
      window = w.to_f64_vector();
      frame_len = w.dim(0);
    }
    if (ctx.has_input(3)) {
      KILN_ASSIGN_OR_RETURN(int64_t fl, scalar_input(ctx, 3, "STFT", "frame_length"));
      if (frame_len >= 0 && fl != frame_len)
        return invalid_argument("STFT: frame_length " + std::to_string(fl) + " differs from the window length " +
                                std::to_string(frame_len));
      frame_len = fl;
    }
    if (frame_len < 0) return invalid_argument("STFT: needs a window or a frame_length input to know the frame length");
    const int64_t batch = x.dim(0), length = x.dim(1), comp = x.dim(2);
    if (frame_len <= 0 || frame_len > length)
      return invalid_argument("STFT: frame length " + std::to_string(frame_len) + " must be in [1, " + std::to_string(length) + "]");
    const int64_t frames = (length - frame_len) / step + 1;
    const int64_t bins = onesided ? frame_len / 2 + 1 : frame_len;
    Tensor xd = x.dtype() == DataType::kDOUBLE ? x : x.cast(DataType::kDOUBLE);
    Tensor yd(DataType::kDOUBLE, {batch, frames, bins, 2});
    const double* src = xd.data<double>();
    double* dst = yd.data<double>();
    Dft dft(frame_len, false);
    std::vector<Complex> frame(static_cast<size_t>(frame_len)), res(static_cast<size_t>(bins));
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t f = 0; f < frames; ++f) {
        for (int64_t j = 0; j < frame_len; ++j) {
          const double* e = src + (b * length + f * step + j) * comp;
          const double w = window.empty() ? 1.0 : window[j];
          frame[j] = Complex(e[0] * w, comp == 2 ? e[1] * w : 0.0);
        }
        dft.run(frame, bins, res.data());
        for (int64_t k = 0; k < bins; ++k) {
          double* e = dst + ((b * frames + f) * bins + k) * 2;
          e[0] = res[k].real();
          e[1] = res[k].imag();
        }
      }
    }
    set_output_from_f64(ctx, 0, std::move(yd), x.dtype());
    return Status::Ok();
  };
  return s;
}

// ---- windows ----

// Generalized cosine window sum_k a_k cos(2*pi*k*n/D) with alternating signs folded into the coefficients;
// D is N for periodic windows (for spectral analysis) and N-1 for symmetric ones (for filter design).
OpSchema make_window(const std::string& name, std::vector<double> coeffs) {
  OpSchema s;
  s.name = name;
  s.since_opset = 17;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"output_datatype", AttrType::kINT}, {"periodic", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [name](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(DataType dt, output_dtype(name, ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(int64_t periodic, ctx.attrs().get_int("periodic", 1));
    if (periodic != 0 && periodic != 1)
      return invalid_model(name + ": attribute 'periodic' is " + std::to_string(periodic) + "; allowed values: 0, 1");
    if (!dtype_is_integer(ctx.input(0).dtype))
      return invalid_model(name + ": size must be an integer but is " + dtype_name(ctx.input(0).dtype));
    auto n = known_scalar(ctx, 0);
    ctx.output(0) = make_info(dt, {n ? Dim(*n) : ctx.fresh_dim()});
    return Status::Ok();
  };
  s.compute = [name, coeffs](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(DataType dt, output_dtype(name, ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(int64_t periodic, ctx.attrs().get_int("periodic", 1));
    KILN_ASSIGN_OR_RETURN(int64_t n, scalar_input(ctx, 0, name, "size"));
    if (n < 0) return invalid_argument(name + ": size must be non-negative but is " + std::to_string(n));
    Tensor w(DataType::kDOUBLE, {n});
    const double denom = static_cast<double>(periodic ? n : n - 1);
    for (int64_t i = 0; i < n; ++i) {
      // A one-point symmetric window has no period; it is 1, as numpy defines it.
      double v = denom > 0 ? 0.0 : 1.0;
      for (size_t k = 0; k < coeffs.size() && denom > 0; ++k)
        v += coeffs[k] * std::cos(2.0 * std::numbers::pi * static_cast<double>(k * i) / denom);
      w.data<double>()[i] = v;
    }
    set_output_from_f64(ctx, 0, std::move(w), dt);
    return Status::Ok();
  };
  return s;
}

// ---- MelWeightMatrix ----

OpSchema make_mel() {
  OpSchema s;
  s.name = "MelWeightMatrix";
  s.since_opset = 17;
  s.min_inputs = s.max_inputs = 5;  // num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz
  s.attrs = {{"output_datatype", AttrType::kINT}};
  s.dtypes = numeric_types();
  s.infer = [](InferContext& ctx) {
    KILN_ASSIGN_OR_RETURN(DataType dt, output_dtype("MelWeightMatrix", ctx.attrs()));
    for (int i = 0; i < 3; ++i)
      if (!dtype_is_integer(ctx.input(i).dtype))
        return invalid_model("MelWeightMatrix: input " + std::to_string(i) + " must be an integer but is " + dtype_name(ctx.input(i).dtype));
    auto mels = known_scalar(ctx, 0);
    auto dft_len = known_scalar(ctx, 1);
    ctx.output(0) = make_info(dt, {dft_len ? Dim(*dft_len / 2 + 1) : ctx.fresh_dim(), mels ? Dim(*mels) : ctx.fresh_dim()});
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    KILN_ASSIGN_OR_RETURN(DataType dt, output_dtype("MelWeightMatrix", ctx.attrs()));
    KILN_ASSIGN_OR_RETURN(int64_t mels, scalar_input(ctx, 0, "MelWeightMatrix", "num_mel_bins"));
    KILN_ASSIGN_OR_RETURN(int64_t dft_len, scalar_input(ctx, 1, "MelWeightMatrix", "dft_length"));
    KILN_ASSIGN_OR_RETURN(int64_t rate, scalar_input(ctx, 2, "MelWeightMatrix", "sample_rate"));
    if (mels <= 0 || dft_len <= 0 || rate <= 0)
      return invalid_argument("MelWeightMatrix: num_mel_bins, dft_length and sample_rate must be positive");
    if (ctx.input(3).numel() != 1 || ctx.input(4).numel() != 1)
      return invalid_argument("MelWeightMatrix: lower_edge_hertz and upper_edge_hertz must be scalars");
    const double lower = ctx.input(3).get_f64(0), upper = ctx.input(4).get_f64(0);
    if (lower < 0 || upper <= lower)
      return invalid_argument("MelWeightMatrix: need 0 <= lower_edge_hertz < upper_edge_hertz");
    const int64_t spec_bins = dft_len / 2 + 1;
    auto hz_to_mel = [](double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); };
    const double low_mel = hz_to_mel(lower), high_mel = hz_to_mel(upper);
    // num_mel_bins + 2 band edges, evenly spaced in mel and snapped down to DFT bins, following the
    // operator's reference definition (which divides the mel range into num_mel_bins + 2 steps).
    const double step = (high_mel - low_mel) / static_cast<double>(mels + 2);
    std::vector<int64_t> edge(static_cast<size_t>(mels + 2));
    for (int64_t i = 0; i < mels + 2; ++i) {
      const double hz = 700.0 * (std::pow(10.0, (static_cast<double>(i) * step + low_mel) / 2595.0) - 1.0);
      edge[i] = static_cast<int64_t>(std::floor(static_cast<double>(dft_len + 1) * hz / static_cast<double>(rate)));
    }
    Tensor m(DataType::kDOUBLE, {spec_bins, mels});
    double* out = m.data<double>();
    auto put = [&](int64_t bin, int64_t mel, double v) {
      if (bin >= 0 && bin < spec_bins) out[bin * mels + mel] = v;
    };
    for (int64_t i = 0; i < mels; ++i) {
      const int64_t lo = edge[i], center = edge[i + 1], hi = edge[i + 2];
      if (center == lo) put(center, i, 1.0);
      else
        for (int64_t j = lo; j <= center; ++j) put(j, i, static_cast<double>(j - lo) / static_cast<double>(center - lo));
      if (hi > center)
        for (int64_t j = center; j < hi; ++j) put(j, i, static_cast<double>(hi - j) / static_cast<double>(hi - center));
    }
    set_output_from_f64(ctx, 0, std::move(m), dt);
    return Status::Ok();
  };
  return s;
}

}  // namespace

KILN_REGISTER_OP(DFT) { return make_dft(); }
KILN_REGISTER_OP(STFT) { return make_stft(); }
KILN_REGISTER_OP(HannWindow) { return make_window("HannWindow", {0.5, -0.5}); }
KILN_REGISTER_OP(HammingWindow) { return make_window("HammingWindow", {25.0 / 46.0, -21.0 / 46.0}); }
KILN_REGISTER_OP(BlackmanWindow) { return make_window("BlackmanWindow", {0.42, -0.5, 0.08}); }
KILN_REGISTER_OP(MelWeightMatrix) { return make_mel(); }

}  // namespace kiln::ops
