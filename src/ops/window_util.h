// Sliding-window geometry shared by Conv, ConvTranspose and the pooling ops: kernel/stride/pad parsing,
// auto_pad resolution and output sizes, for static and symbolic spatial dimensions.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "ops/op_util.h"

namespace kiln::ops {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

inline Result<AutoPad> parse_auto_pad(const std::string& op, const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string s, attrs.get_string("auto_pad", "NOTSET"));
  if (s == "NOTSET" || s.empty()) return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  return invalid_model(op + ": auto_pad must be one of NOTSET, SAME_UPPER, SAME_LOWER, VALID but is \"" + s + "\"");
}

// Window parameters of one node, all vectors of length `nsp` (pads: begins then ends, 2*nsp).
struct WindowParams {
  int nsp = 0;
  std::vector<int64_t> kernel, strides, dilations, pads;
  AutoPad auto_pad = AutoPad::kNotSet;
  bool ceil_mode = false;
};

// Reads kernel_shape (or takes `kernel_from_weights` when the attribute is absent), strides, dilations, pads.
inline Result<WindowParams> parse_window(const std::string& op, const Attributes& attrs, int nsp,
                                         const std::vector<int64_t>* kernel_from_weights, bool allow_dilations = true) {
  WindowParams p;
  p.nsp = nsp;
  if (nsp < 1) return invalid_model(op + ": expected an input of rank >= 3 (N, C, spatial...), got rank " + std::to_string(nsp + 2));
  KILN_ASSIGN_OR_RETURN(p.auto_pad, parse_auto_pad(op, attrs));
  if (attrs.has("kernel_shape")) {
    KILN_ASSIGN_OR_RETURN(p.kernel, attrs.get_ints("kernel_shape"));
  } else if (kernel_from_weights) {
    p.kernel = *kernel_from_weights;
  } else {
    return invalid_model(op + ": required attribute 'kernel_shape' is missing");
  }
  KILN_ASSIGN_OR_RETURN(p.strides, attrs.get_ints("strides", std::vector<int64_t>(nsp, 1)));
  KILN_ASSIGN_OR_RETURN(p.dilations, attrs.get_ints("dilations", std::vector<int64_t>(nsp, 1)));
  KILN_ASSIGN_OR_RETURN(p.pads, attrs.get_ints("pads", std::vector<int64_t>(2 * nsp, 0)));
  KILN_ASSIGN_OR_RETURN(int64_t cm, attrs.get_int("ceil_mode", 0));
  p.ceil_mode = cm != 0;
  auto check_len = [&](const std::vector<int64_t>& v, size_t n, const char* name) -> Status {
    if (v.size() != n)
      return invalid_model(op + ": attribute '" + name + "' must have " + std::to_string(n) + " values for " +
                           std::to_string(nsp) + " spatial dims, got " + std::to_string(v.size()));
    return Status::Ok();
  };
  KILN_RETURN_IF_ERROR(check_len(p.kernel, nsp, "kernel_shape"));
  KILN_RETURN_IF_ERROR(check_len(p.strides, nsp, "strides"));
  KILN_RETURN_IF_ERROR(check_len(p.dilations, nsp, "dilations"));
  KILN_RETURN_IF_ERROR(check_len(p.pads, 2 * nsp, "pads"));
  for (int i = 0; i < nsp; ++i) {
    if (p.kernel[i] < 1 || p.strides[i] < 1 || p.dilations[i] < 1)
      return invalid_model(op + ": kernel_shape, strides and dilations must be >= 1");
    if (p.pads[i] < 0 || p.pads[i + nsp] < 0) return invalid_model(op + ": pads must be >= 0");
  }
  if (!allow_dilations)
    for (auto d : p.dilations)
      if (d != 1) return unsupported(op + ": dilations other than 1 are not supported");
  return p;
}

// Output size along axis i for input size `in` (static); fills the effective pads for auto_pad modes.
inline Result<int64_t> window_out_size(const std::string& op, WindowParams& p, int i, int64_t in) {
  int64_t s = p.strides[i], dk = (p.kernel[i] - 1) * p.dilations[i] + 1;
  int64_t out;
  switch (p.auto_pad) {
    case AutoPad::kSameUpper:
    case AutoPad::kSameLower: {
      out = (in + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (out - 1) * s + dk - in);
      int64_t small = total / 2, big = total - small;
      p.pads[i] = p.auto_pad == AutoPad::kSameUpper ? small : big;
      p.pads[i + p.nsp] = total - p.pads[i];
      return out;
    }
    case AutoPad::kValid:
      p.pads[i] = p.pads[i + p.nsp] = 0;
      break;
    case AutoPad::kNotSet:
      break;
  }
  int64_t span = in + p.pads[i] + p.pads[i + p.nsp] - dk;
  if (span < 0)
    return invalid_argument(op + ": window of extent " + std::to_string(dk) + " is larger than padded input size " +
                            std::to_string(in + p.pads[i] + p.pads[i + p.nsp]) + " on spatial axis " + std::to_string(i));
  if (p.ceil_mode) {
    out = (span + s - 1) / s + 1;
    // A window may not start inside the end padding only.
    if ((out - 1) * s >= in + p.pads[i]) --out;
  } else {
    out = span / s + 1;
  }
  return out;
}

// Symbolic output shape [N, channels, spatial...] for a windowed op; unknown spatial dims stay unknown unless the
// window is the identity (1-wide, stride 1, no pad).
inline Result<Shape> window_out_shape(const std::string& op, InferContext& ctx, WindowParams p, const Shape& in,
                                      Dim channels) {
  Shape out;
  out.push_back(in[0]);
  out.push_back(channels);
  for (int i = 0; i < p.nsp; ++i) {
    const Dim& d = in[i + 2];
    if (d.is_static()) {
      KILN_ASSIGN_OR_RETURN(int64_t o, window_out_size(op, p, i, d.value));
      out.push_back(Dim(o));
    } else if (p.kernel[i] == 1 && p.strides[i] == 1 &&
               (p.auto_pad != AutoPad::kNotSet || (p.pads[i] == 0 && p.pads[i + p.nsp] == 0))) {
      out.push_back(d);
    } else {
      out.push_back(ctx.fresh_dim());
    }
  }
  return out;
}

// Pads `v` (kernel, strides, ... of nsp <= 3 entries) on the left to 3 entries with `fill`.
inline std::vector<int64_t> to3(const std::vector<int64_t>& v, int64_t fill) {
  std::vector<int64_t> r(3 - v.size(), fill);
  r.insert(r.end(), v.begin(), v.end());
  return r;
}

}  // namespace kiln::ops
