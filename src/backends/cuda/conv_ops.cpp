// Conv (cudnnConvolutionForward) and ConvTranspose (cudnnConvolutionBackwardData) on cuDNN's legacy API, NCHW,
// 1-D to 3-D, groups and dilations. cuDNN pads symmetrically: asymmetric Conv pads go through a zero-padded copy
// of X in the workspace, and ConvTranspose outputs it cannot produce directly are computed uncropped in the
// workspace and cropped. The batch is split into chunks where a copy or cuDNN's 32-bit sizes require it.
// kiln FusedConv runs the same convolution (NCHW, or NHWC with KRSC weights for 2-D) and then its epilogue:
// inside cuDNN (cudnnConvolutionBiasActivationForward) for bias + residual + relu/identity, else in one own kernel.
// Depthwise NHWC FusedConv (group == C == M) has an own kernel too, with the whole epilogue and an optional
// prologue fused (depthwise.cu): a tactic next to cuDNN's algorithms and the default without tuning, the only
// implementation for what cuDNN cannot do (asymmetric NHWC pads, a prologue). NHWC FusedConv with few input
// channels (image stems, group 1, C <= 8) has an own direct kernel (direct_conv.cu), a tactic next to cuDNN's.
// For half/bfloat16 with exactly 8 channels a tensor-core one (direct_conv_mma.cu) is a further tactic and the
// untuned default (KILN_STEM_MMA=0 withdraws it). A shared-memory tiled depthwise kernel (two tile sizes, tactics
// kiln_depthwise_nhwc_tiled and kiln_depthwise_nhwc_tiled_small, the untuned default where it fits, and a
// persistent double-buffered form, kiln_depthwise_nhwc_tiled_pipe, never the untuned default) is offered too
// (KILN_DW_TILED=0 withdraws them), and a wider tile shape, kiln_depthwise_nhwc_tiled_wide and _wide_pipe
// (whole pixels' channels a block), and a row-streaming kernel, kiln_depthwise_nhwc_rows (KILN_DW_WIDE=0 withdraws
// these three). NHWC FusedConv that none of the own kernels runs (group 1, half/bfloat16, symmetric pads) is also
// offered cuDNN's backend graph API as tactics cudnn_conv_graph_<r> (dnn_conv.h: convolution + bias + residual +
// activation as one graph; KILN_DNN_CONV=0 withdraws them).
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"
#include "backends/cuda/depthwise.h"
#include "backends/cuda/depthwise_tile_plan.h"
#include "backends/cuda/direct_conv.h"
#include "backends/cuda/dnn_conv.h"
#include "backends/cuda/dnn_layer_plan.h"
#include "backends/cuda/reduce_kernels.h"
#include "kiln/logger.h"
#include "ops/layout_util.h"
#include "ops/window_util.h"

namespace kiln::cuda {
namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

cudnnDataType_t dnn_type(DataType dt) {
  switch (dt) {
    case DataType::kHALF: return CUDNN_DATA_HALF;
    case DataType::kBF16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
  }
}

// Geometry of one node for concrete shapes. For ConvTranspose, "in"/"out" are X's and Y's spatial sizes and
// cuDNN sees the transposed problem (Y as the forward convolution's input).
struct ConvGeo {
  bool transpose = false;
  int nsp = 0;
  int64_t n = 0, c = 0, m = 0, group = 1;  // batch, X channels, Y channels
  std::vector<int64_t> in, out, k, s, d, pb, pe;
  // What cuDNN computes: its input ("image") and output ("grid") spatial sizes and symmetric pads. For Conv the
  // image is X (padded copy when `copy`), for ConvTranspose it is Y (uncropped copy when `copy`).
  std::vector<int64_t> img, grid, pad;
  bool copy = false;
  std::vector<int64_t> copy_off;  // Conv: -(pb - pad); ConvTranspose: crop offset pb

  int64_t img_volume() const { int64_t v = 1; for (auto x : img) v *= x; return v; }
  int64_t grid_volume() const { int64_t v = 1; for (auto x : grid) v *= x; return v; }
  int64_t vol(const std::vector<int64_t>& v) const { int64_t r = 1; for (auto x : v) r *= x; return r; }
  // Per image: elements of the tensors cuDNN sees, and bytes of the workspace copy.
  int64_t img_elems() const { return (transpose ? m : c) * img_volume(); }
  int64_t grid_elems() const { return (transpose ? c : m) * grid_volume(); }
};

// The reference's pads for ConvTranspose (src/ops/conv.cpp): output_shape or SAME_* pad the difference from the
// full extent, SAME_UPPER with the smaller half first, every other mode with the bigger half first.
Status transpose_pads(const Attributes& attrs, ops::WindowParams& p, const std::vector<int64_t>& in,
                      std::vector<int64_t>* out) {
  const int nsp = p.nsp;
  KILN_ASSIGN_OR_RETURN(auto out_pad, attrs.get_ints("output_padding", std::vector<int64_t>(nsp, 0)));
  if (out_pad.size() != static_cast<size_t>(nsp)) return invalid_model("ConvTranspose: bad output_padding");
  std::vector<int64_t> out_shape;
  if (attrs.has("output_shape")) {
    KILN_ASSIGN_OR_RETURN(out_shape, attrs.get_ints("output_shape"));
    if (out_shape.size() == static_cast<size_t>(nsp + 2)) out_shape.erase(out_shape.begin(), out_shape.begin() + 2);
    if (out_shape.size() != static_cast<size_t>(nsp)) return invalid_model("ConvTranspose: bad output_shape");
  }
  out->assign(nsp, 0);
  for (int i = 0; i < nsp; ++i) {
    int64_t dk = (p.kernel[i] - 1) * p.dilations[i] + 1;
    int64_t full = p.strides[i] * (in[i] - 1) + out_pad[i] + dk;
    if (!out_shape.empty() || p.auto_pad == ops::AutoPad::kSameUpper || p.auto_pad == ops::AutoPad::kSameLower) {
      int64_t target = !out_shape.empty() ? out_shape[i] : in[i] * p.strides[i];
      int64_t total = std::max<int64_t>(0, full - target);
      int64_t small = total / 2, big = total - small;
      p.pads[i] = p.auto_pad == ops::AutoPad::kSameUpper ? small : big;
      p.pads[i + nsp] = total - p.pads[i];
      (*out)[i] = target;
    } else {
      if (p.auto_pad == ops::AutoPad::kValid) p.pads[i] = p.pads[i + nsp] = 0;
      (*out)[i] = full - p.pads[i] - p.pads[i + nsp];
      if ((*out)[i] < 0) return invalid_argument("ConvTranspose: pads leave a negative output size");
    }
  }
  return Status::Ok();
}

Result<ConvGeo> conv_geometry(const std::string& op, const Attributes& attrs, const Dims& x, const Dims& w,
                              bool transpose) {
  if (x.size() < 3 || x.size() > 5 || w.size() != x.size())
    return unsupported(op + ": X must have rank 3 to 5 and W the same rank, got " + dims_to_string(x) + " and " +
                       dims_to_string(w));
  ConvGeo g;
  g.transpose = transpose;
  g.nsp = static_cast<int>(x.size()) - 2;
  KILN_ASSIGN_OR_RETURN(g.group, attrs.get_int("group", 1));
  g.n = x[0];
  g.c = x[1];
  if (g.group < 1 || g.c % g.group != 0) return invalid_argument(op + ": channels not divisible by group");
  if (transpose) {
    if (w[0] != g.c) return invalid_argument(op + ": W does not match X's channels");
    g.m = w[1] * g.group;
  } else {
    if (w[1] * g.group != g.c || w[0] % g.group != 0) return invalid_argument(op + ": W does not match X's channels");
    g.m = w[0];
  }
  std::vector<int64_t> wk(w.begin() + 2, w.end());
  KILN_ASSIGN_OR_RETURN(ops::WindowParams p, ops::parse_window(op, attrs, g.nsp, &wk));
  if (p.kernel != wk) return invalid_argument(op + ": kernel_shape does not match W");
  g.in.assign(x.begin() + 2, x.end());
  if (transpose) {
    KILN_RETURN_IF_ERROR(transpose_pads(attrs, p, g.in, &g.out));
  } else {
    g.out.resize(g.nsp);
    for (int i = 0; i < g.nsp; ++i) {
      KILN_ASSIGN_OR_RETURN(g.out[i], ops::window_out_size(op, p, i, g.in[i]));
    }
  }
  g.k = p.kernel;
  g.s = p.strides;
  g.d = p.dilations;
  g.pb.assign(p.pads.begin(), p.pads.begin() + g.nsp);
  g.pe.assign(p.pads.begin() + g.nsp, p.pads.end());
  g.pad.resize(g.nsp);
  g.copy_off.assign(g.nsp, 0);
  if (!transpose) {
    g.grid = g.out;
    g.img.resize(g.nsp);
    for (int i = 0; i < g.nsp; ++i) {
      g.pad[i] = std::min(g.pb[i], g.pe[i]);
      g.img[i] = g.in[i] + g.pb[i] + g.pe[i] - 2 * g.pad[i];
      g.copy_off[i] = g.pad[i] - g.pb[i];
      g.copy |= g.pb[i] != g.pe[i];
    }
  } else {
    g.grid = g.in;
    // cuDNN writes Y directly when, padding both ends by pb, the forward convolution of Y gives back X's size.
    bool direct = true;
    for (int i = 0; i < g.nsp; ++i) {
      int64_t dk = (g.k[i] - 1) * g.d[i] + 1, span = g.out[i] + 2 * g.pb[i] - dk;
      direct = direct && span >= 0 && span / g.s[i] + 1 == g.in[i];
    }
    g.copy = !direct;
    g.img.resize(g.nsp);
    for (int i = 0; i < g.nsp; ++i) {
      int64_t dk = (g.k[i] - 1) * g.d[i] + 1;
      g.pad[i] = direct ? g.pb[i] : 0;
      g.img[i] = direct ? g.out[i] : g.s[i] * (g.in[i] - 1) + dk;  // uncropped extent
      g.copy_off[i] = g.pb[i];
    }
  }
  for (int i = 0; i < g.nsp; ++i)
    if (g.pad[i] > INT_MAX || g.k[i] > INT_MAX || g.s[i] > INT_MAX || g.d[i] > INT_MAX || g.img[i] > INT_MAX ||
        g.grid[i] > INT_MAX)
      return unsupported(op + ": window parameters exceed cuDNN's 32-bit limits");
  return g;
}

// Images per cuDNN call: every tensor cuDNN sees stays below 2^31 elements and the workspace copy within half
// of the workspace. 0 when a single image does not fit.
int64_t chunk_images(const ConvGeo& g, DataType dt, size_t workspace_bytes) {
  const int64_t per = std::max<int64_t>({g.img_elems(), g.grid_elems(), 1});
  int64_t n = INT_MAX / per;
  if (g.copy) {
    const int64_t copy_bytes = std::max<int64_t>(g.img_elems() * static_cast<int64_t>(dtype_size(dt)), 1);
    n = std::min<int64_t>(n, static_cast<int64_t>(workspace_bytes / 2) / copy_bytes);
  }
  return std::min<int64_t>(n, std::max<int64_t>(g.n, 1));
}

// Descriptors and algorithm candidates for one batch-chunk size.
struct DnnConv {
  cudnnTensorDescriptor_t img = nullptr, grid = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  struct Algo {
    int algo;
    cudnnMathType_t math;
    size_t ws;
  };
  std::vector<Algo> algos;  // in the heuristic's order
  size_t chosen = 0;        // the first candidate that ran, then the fastest once timed
  bool timed = false;       // candidates timed on real data (first run outside CUDA-graph capture)

  DnnConv() = default;
  DnnConv(const DnnConv&) = delete;
  DnnConv& operator=(const DnnConv&) = delete;
  ~DnnConv() {
    if (img) cudnnDestroyTensorDescriptor(img);
    if (grid) cudnnDestroyTensorDescriptor(grid);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

Status set_tensor(cudnnTensorDescriptor_t t, cudnnDataType_t type, const std::vector<int>& dims) {
  std::vector<int> strides(dims.size());
  int64_t s = 1;
  for (int i = static_cast<int>(dims.size()) - 1; i >= 0; --i) {
    strides[i] = static_cast<int>(s);
    s *= dims[i];
  }
  KILN_CUDNN_CHECK(cudnnSetTensorNdDescriptor(t, type, static_cast<int>(dims.size()), dims.data(), strides.data()));
  return Status::Ok();
}

bool is_tensor_op(cudnnMathType_t m) { return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION; }

Status build_dnn(const ConvGeo& g, DataType dt, int64_t images, const CudaHandles& h, size_t ws_avail, DnnConv& dc,
                 bool nhwc) {
  const cudnnDataType_t type = dnn_type(dt);
  // 1-D runs as 2-D with a trailing spatial dim of 1.
  auto sp = [&](const std::vector<int64_t>& v, int64_t fill) {
    std::vector<int> r(v.begin(), v.end());
    if (r.size() == 1) r.push_back(static_cast<int>(fill));
    return r;
  };
  std::vector<int> img = {static_cast<int>(images), static_cast<int>(g.transpose ? g.m : g.c)};
  std::vector<int> grid = {static_cast<int>(images), static_cast<int>(g.transpose ? g.c : g.m)};
  for (int v : sp(g.img, 1)) img.push_back(v);
  for (int v : sp(g.grid, 1)) grid.push_back(v);
  // The forward convolution's filter: [grid channels, image channels / group, kernel...]; ONNX's W for both ops.
  std::vector<int> wd = {static_cast<int>(g.transpose ? g.c : g.m), static_cast<int>((g.transpose ? g.m : g.c) / g.group)};
  for (int v : sp(g.k, 1)) wd.push_back(v);
  std::vector<int> pad = sp(g.pad, 0), stride = sp(g.s, 1), dil = sp(g.d, 1);

  KILN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&dc.img));
  KILN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&dc.grid));
  KILN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&dc.w));
  KILN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&dc.conv));
  if (nhwc) {
    // Channels-last is 2-D only (the layout pass and supports() see to it); dims stay in N, C, H, W order.
    if (img.size() != 4) return internal_error("NHWC convolution needs 2 spatial dims");
    KILN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(dc.img, CUDNN_TENSOR_NHWC, type, img[0], img[1], img[2], img[3]));
    KILN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(dc.grid, CUDNN_TENSOR_NHWC, type, grid[0], grid[1], grid[2], grid[3]));
    KILN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(dc.w, type, CUDNN_TENSOR_NHWC, wd[0], wd[1], wd[2], wd[3]));
  } else {
    KILN_RETURN_IF_ERROR(set_tensor(dc.img, type, img));
    KILN_RETURN_IF_ERROR(set_tensor(dc.grid, type, grid));
    KILN_CUDNN_CHECK(cudnnSetFilterNdDescriptor(dc.w, type, CUDNN_TENSOR_NCHW, static_cast<int>(wd.size()), wd.data()));
  }
  KILN_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(dc.conv, static_cast<int>(pad.size()), pad.data(), stride.data(),
                                                   dil.data(), CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  KILN_CUDNN_CHECK(cudnnSetConvolutionGroupCount(dc.conv, static_cast<int>(g.group)));
  // FP32 without TF32 must stay on FMA kernels: CUDNN_DEFAULT_MATH lets cuDNN use TF32 tensor cores on Ampere+.
  const bool strict = dt == DataType::kFLOAT && !h.allow_tf32;
  const cudnnMathType_t base_math = strict ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(dc.conv, base_math));

  std::vector<int> check(grid.size());
  KILN_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(dc.conv, dc.img, dc.w, static_cast<int>(check.size()),
                                                         check.data()));
  if (check != grid) return internal_error("cuDNN's convolution output shape differs from the reference's");

  // Heuristic choice, no timing and no synchronization, so it is safe inside CUDA-graph capture. Timed selection
  // (cudnnFind*AlgorithmEx) belongs to the builder's auto-tuner.
  struct Cand { int algo; cudnnStatus_t status; cudnnMathType_t math; };
  std::vector<Cand> cands;
  if (!g.transpose) {
    int max_count = 0, got = 0;
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h.dnn, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max_count, 1));
    KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h.dnn, dc.img, dc.w, dc.conv, dc.grid, max_count, &got,
                                                            perf.data()));
    for (int i = 0; i < got; ++i) cands.push_back({static_cast<int>(perf[i].algo), perf[i].status, perf[i].mathType});
  } else {
    int max_count = 0, got = 0;
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h.dnn, &max_count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max_count, 1));
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h.dnn, dc.w, dc.grid, dc.conv, dc.img, max_count,
                                                                 &got, perf.data()));
    for (int i = 0; i < got; ++i) cands.push_back({static_cast<int>(perf[i].algo), perf[i].status, perf[i].mathType});
  }
  for (const Cand& c : cands) {
    if (c.status != CUDNN_STATUS_SUCCESS) continue;
    if (strict && is_tensor_op(c.math)) continue;
    cudnnMathType_t math = strict ? CUDNN_FMA_MATH : c.math;
    if (cudnnSetConvolutionMathType(dc.conv, math) != CUDNN_STATUS_SUCCESS) continue;
    size_t ws = 0;
    cudnnStatus_t st =
        g.transpose ? cudnnGetConvolutionBackwardDataWorkspaceSize(h.dnn, dc.w, dc.grid, dc.conv, dc.img,
                                                                   static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), &ws)
                    : cudnnGetConvolutionForwardWorkspaceSize(h.dnn, dc.img, dc.w, dc.conv, dc.grid,
                                                              static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), &ws);
    if (st != CUDNN_STATUS_SUCCESS || ws > ws_avail) continue;
    bool dup = false;
    for (const auto& a : dc.algos) dup = dup || (a.algo == c.algo && a.math == math);
    if (!dup) dc.algos.push_back({c.algo, math, ws});
  }
  if (dc.algos.empty())
    return internal_error(std::string("cuDNN offers no ") + (g.transpose ? "ConvTranspose" : "Conv") +
                          " algorithm for " + dtype_name(dt) + " within the " + std::to_string(ws_avail) +
                          "-byte workspace");
  return Status::Ok();
}

// cuDNN's fused epilogue for one node: bias descriptor [1, M, 1, 1] and the activation.
struct DnnEpilogue {
  cudnnTensorDescriptor_t bias = nullptr;
  cudnnActivationDescriptor_t act = nullptr;
  DnnEpilogue() = default;
  DnnEpilogue(const DnnEpilogue&) = delete;
  DnnEpilogue& operator=(const DnnEpilogue&) = delete;
  ~DnnEpilogue() {
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (act) cudnnDestroyActivationDescriptor(act);
  }
};

// What a FusedConv node adds to a convolution.
struct FusedSpec {
  bool nhwc = false;
  ops::Epilogue ep;
  ops::Epilogue pre;  // applied to X on load: only the depthwise kernel can
  bool has_z = false;
  bool has_pre() const { return pre.act != ops::Activation::kNone; }
};

constexpr const char* kDepthwiseTactic = "kiln_depthwise_nhwc";
constexpr const char* kDirectTactic = "kiln_direct_conv_nhwc";
constexpr const char* kStemMmaTactic = "kiln_direct_conv_nhwc_mma";
// The tiled depthwise kernel's tile variants and the row-streaming kernel (depthwise_tile_plan.h), in variant
// order.
constexpr const char* kDwTiledTactics[kDwVariants] = {
    "kiln_depthwise_nhwc_tiled",      "kiln_depthwise_nhwc_tiled_small",     "kiln_depthwise_nhwc_tiled_pipe",
    "kiln_depthwise_nhwc_tiled_wide", "kiln_depthwise_nhwc_tiled_wide_pipe", "kiln_depthwise_nhwc_rows"};

// The tiled variant a tactic names; -1 for any other name.
int dw_tiled_variant(const std::string& tactic) {
  for (int v = 0; v < kDwVariants; ++v)
    if (tactic == kDwTiledTactics[v]) return v;
  return -1;
}

// The tiled depthwise kernel is offered by default and is the untuned default where it fits (on the H200 at batch
// 128 it beat the strip kernel on every layer timed: mobilenet_v2's features.1-3 152-219 vs 217-265 us, cuDNN
// 324-371 us); KILN_DW_TILED=0 withdraws it.
bool dw_tiled_enabled() {
  const char* v = std::getenv("KILN_DW_TILED");
  return !(v && std::strcmp(v, "0") == 0);
}

// The wide tiles (kDwTileWide, and kDwTileWidePipe in the pipelined kernel) and the row-streaming kernel (kDwRows)
// are offered to the tuner next to the other variants (on an H200 at batch 128 the tuner took the row-streaming
// kernel for mobilenet_v2's five largest depthwise layers: the model 1.878 -> 1.762 ms); KILN_DW_WIDE=0 withdraws
// them (a recorded or forced tactic runs them either way).
bool dw_wide_enabled() {
  const char* v = std::getenv("KILN_DW_WIDE");
  return !(v && std::strcmp(v, "0") == 0);
}

// KILN_DEPTHWISE=0 withdraws the strip depthwise kernel (kiln_depthwise_nhwc), so that a test proves the tiled one
// ran: a layer with a prologue that it declined would fall back to the host.
bool dw_strip_enabled() {
  const char* v = std::getenv("KILN_DEPTHWISE");
  return !(v && std::strcmp(v, "0") == 0);
}

// Whether tiled variant v can run this depthwise convolution.
bool dw_tiled_fits(const DepthwiseGeom& d, DataType dt, int v) {
  return (dt == DataType::kFLOAT || dt == DataType::kHALF || dt == DataType::kBF16) &&
         depthwise_tiled_fits(d, static_cast<int>(dtype_size(dt)), v);
}

// The tiled variants (kDwTiledTactics) offered for this depthwise convolution: those that fit, unless
// KILN_DW_TILED=0.
std::vector<int> dw_tiled_variants(const DepthwiseGeom& d, DataType dt) {
  std::vector<int> r;
  if (!dw_tiled_enabled()) return r;
  for (int v = 0; v < kDwVariants; ++v)
    if ((v < kDwTileWide || dw_wide_enabled()) && dw_tiled_fits(d, dt, v)) r.push_back(v);
  return r;
}

// The own depthwise kernels' geometry when one of them can run this convolution: NHWC 2-D FusedConv with one
// input and one output channel per group, sizes within the 32-bit indices.
std::optional<DepthwiseGeom> depthwise_geom(const ConvGeo& g, const FusedSpec* f, DataType dt) {
  if (!f || !f->nhwc || g.transpose || g.nsp != 2 || g.group != g.c || g.m != g.c) return std::nullopt;
  for (const auto& v : {g.in, g.out, g.k, g.s, g.d, g.pb})
    for (int64_t x : v)
      if (x > INT_MAX) return std::nullopt;
  if (g.n > INT_MAX || g.c > INT_MAX) return std::nullopt;
  auto i = [](int64_t v) { return static_cast<int>(v); };
  DepthwiseGeom d{i(g.n),    i(g.in[0]), i(g.in[1]), i(g.c),    i(g.out[0]), i(g.out[1]), i(g.k[0]),
                  i(g.k[1]), i(g.s[0]),  i(g.s[1]),  i(g.d[0]), i(g.d[1]),   i(g.pb[0]),  i(g.pb[1])};
  if (!depthwise_fits(d)) return std::nullopt;
  if (!dw_strip_enabled() && dw_tiled_variants(d, dt).empty()) return std::nullopt;
  return d;
}

// The own direct kernel is offered by default (its GPU tests, tests/gpu/test_direct_conv.cpp, pass inside engines
// on the H200); KILN_DIRECT_CONV=0 withdraws it, to compare against cuDNN alone.
bool direct_conv_enabled() {
  const char* v = std::getenv("KILN_DIRECT_CONV");
  return !(v && std::strcmp(v, "0") == 0);
}

// The tensor-core stem kernel (direct_conv_mma.cu) is offered by default and is the untuned default where it fits
// (on the H200, FP16 batch 128: resnet50's 7x7 stem 335 us against the direct kernel's 1040 and cuDNN's 1109;
// mobilenet_v2/efficientnet_b0's 3x3 stems 118/156 against 214/245 and 364/392); KILN_STEM_MMA=0 withdraws it.
bool stem_mma_enabled() {
  const char* v = std::getenv("KILN_STEM_MMA");
  return !(v && std::strcmp(v, "0") == 0);
}

// Input channels [0, used) hold every nonzero weight of W [M, kh, kw, C]: the channels an image stem really
// reads (ToNhwc pads its 3 to 8 with zeros). C when W is not known on the host.
int used_channels(const Tensor* w, int64_t c) {
  if (!w || c < 1 || w->numel() % c != 0) return static_cast<int>(c);
  int used = 1;
  for (int64_t i = 0; i < w->numel(); ++i)
    if (w->get_f64(i) != 0.0) used = std::max(used, static_cast<int>(i % c) + 1);
  return used;
}

// The geometry both own stem kernels take: NHWC 2-D FusedConv, group 1, at most 8 input channels, no prologue,
// every size within 32-bit indices; `cu` channels used. Whether a kernel fits it is that kernel's own question.
std::optional<DirectConvGeom> stem_geom(const ConvGeo& g, const FusedSpec* f, int cu) {
  if (!f || !f->nhwc || f->has_pre() || g.transpose || g.nsp != 2 || g.group != 1 || g.c > 8) return std::nullopt;
  for (const auto& v : {g.in, g.out, g.k, g.s, g.d, g.pb})
    for (int64_t x : v)
      if (x > INT_MAX) return std::nullopt;
  if (g.n > INT_MAX || g.m > INT_MAX) return std::nullopt;
  auto i = [](int64_t v) { return static_cast<int>(v); };
  return DirectConvGeom{i(g.n),    i(g.in[0]), i(g.in[1]), i(g.c),    i(g.m),    i(g.out[0]), i(g.out[1]), i(g.k[0]),
                        i(g.k[1]), i(g.s[0]),  i(g.s[1]),  i(g.d[0]), i(g.d[1]), i(g.pb[0]),  i(g.pb[1]),  cu};
}

// The own direct kernel's geometry when it can run this convolution (output channels in whole 8s, weights in
// shared memory: direct_conv_fits), reading only the input channels W uses.
std::optional<DirectConvGeom> direct_geom(const ConvGeo& g, const FusedSpec* f, const Tensor* w_host) {
  if (!direct_conv_enabled()) return std::nullopt;
  auto d = stem_geom(g, f, 0);
  if (!d) return std::nullopt;
  d->cu = used_channels(w_host, g.c);  // a scan of W: only for the convolutions that got this far
  if (!direct_conv_fits(*d)) return std::nullopt;
  return d;
}

// The tensor-core stem kernel's geometry when it can run this convolution: half or bfloat16, exactly 8 input
// channels (one 16-byte vector per tap), all of them read.
std::optional<DirectConvGeom> stem_mma_geom(const ConvGeo& g, const FusedSpec* f, DataType dt) {
  if (!stem_mma_enabled() || (dt != DataType::kHALF && dt != DataType::kBF16) || g.c != 8) return std::nullopt;
  auto d = stem_geom(g, f, 8);
  if (!d || !direct_conv_mma_fits(*d)) return std::nullopt;
  return d;
}

// W's host copy (a constant weight), null when it has none.
const Tensor* host_weight(const KernelArgs& args) { return args.host_in.size() > 1 ? args.host_in[1] : nullptr; }

// Whether the direct kernel runs an untuned layer instead of cuDNN: where at most 3 channels are used (an image).
// On an H200 (FP16, batch 128, 224x224 with 3 of 8 channels, epilogue included) it ran resnet50's 7x7 stem in
// 1040 us and the 3x3 stems of mobilenet_v2/efficientnet_b0 in 214/245 us, where cuDNN took 1127/411/462 us
// inside the models; with all 8 channels used it needs 2206 us for the 7x7 stem, so there cuDNN stays first.
bool direct_by_default(const std::optional<DirectConvGeom>& d) { return d && d->cu <= 3; }

struct ConvState {
  Dims x_shape, w_shape;
  bool has_bias = false;
  bool has_z = false;
  ConvGeo g;
  std::unique_ptr<DnnEpilogue> dnn_ep;  // set while cuDNN's fused call is used; dropped when cuDNN refuses it
  int64_t chunk = 0;
  std::unique_ptr<DnnConv> full, rest;  // chunks of `chunk` images, and the last, smaller one
  size_t copy_bytes = 0;                // workspace bytes taken by the copy of one full chunk
  std::optional<DepthwiseGeom> depthwise;  // set: an own depthwise kernel runs, no cuDNN state
  int dw_variant = -1;                     // with depthwise: the tiled kernel's variant, -1 the strip kernel
  std::optional<DirectConvGeom> direct;    // set: the own direct kernel runs, no cuDNN state
  std::optional<DirectConvGeom> stem_mma;  // set: the tensor-core stem kernel runs, no cuDNN state
  std::unique_ptr<DnnConvGraph> graph;     // set: the layer's cuDNN graph tactic runs instead of the legacy path
};

// The FusedConv as a cuDNN graph problem: NHWC 2-D forward only (dnn_conv_declined says what else it takes).
std::optional<DnnConvSpec> graph_spec(const ConvGeo& g, const FusedSpec* f, DataType dt, bool has_bias) {
  if (!f || !f->nhwc || g.transpose || g.nsp != 2) return std::nullopt;
  DnnConvSpec s;
  s.dt = dt;
  s.n = g.n;
  s.h = g.in[0];
  s.w = g.in[1];
  s.c = g.c;
  s.k = g.m;
  s.r = g.k[0];
  s.s = g.k[1];
  s.p = g.out[0];
  s.q = g.out[1];
  for (int i = 0; i < 2; ++i) {
    s.pad[i] = g.pb[i];
    s.pad_end[i] = g.pe[i];
    s.stride[i] = g.s[i];
    s.dil[i] = g.d[i];
  }
  s.group = g.group;
  s.bias = has_bias;
  s.res = f->has_z;
  s.prologue = f->has_pre();
  s.act = f->ep.act;
  return s;
}

// The extra operands of cudnnConvolutionBiasActivationForward (null: a plain convolution).
struct DnnFusedCall {
  const DnnEpilogue* ep = nullptr;
  const void* bias = nullptr;
  const void* z = nullptr;
};

// Runs cuDNN over `images` images: the first candidate algorithm that cuDNN accepts (on the first run) is kept.
// `refused` (when given) is set when every candidate answered NOT_SUPPORTED/BAD_PARAM: the caller may fall back.
Status run_dnn(const KernelArgs& args, const ConvState& st, DnnConv& dc, const void* w, const void* img_in,
               void* img_out, const void* grid_in, void* grid_out, const DnnFusedCall& fc = {},
               bool* refused = nullptr) {
  CudaHandles& h = *args.handles;
  void* ws = static_cast<uint8_t*>(h.workspace) + st.copy_bytes;
  const size_t ws_bytes = h.workspace_bytes - st.copy_bytes;
  const float one = 1.0f, zero = 0.0f;
  auto launch = [&](const DnnConv::Algo& a) -> cudnnStatus_t {
    cudnnStatus_t r = cudnnSetConvolutionMathType(dc.conv, a.math);
    if (r != CUDNN_STATUS_SUCCESS) return r;
    if (fc.ep)
      return cudnnConvolutionBiasActivationForward(h.dnn, &one, dc.img, img_in, dc.w, w, dc.conv,
                                                   static_cast<cudnnConvolutionFwdAlgo_t>(a.algo), ws, ws_bytes, &one,
                                                   dc.grid, fc.z, fc.ep->bias, fc.bias, fc.ep->act, dc.grid, grid_out);
    if (!st.g.transpose)
      return cudnnConvolutionForward(h.dnn, &one, dc.img, img_in, dc.w, w, dc.conv,
                                     static_cast<cudnnConvolutionFwdAlgo_t>(a.algo), ws, ws_bytes, &zero, dc.grid,
                                     grid_out);
    return cudnnConvolutionBackwardData(h.dnn, &one, dc.w, w, dc.grid, grid_in, dc.conv,
                                        static_cast<cudnnConvolutionBwdDataAlgo_t>(a.algo), ws, ws_bytes, &zero,
                                        dc.img, img_out);
  };
  // The first run for a shape outside CUDA-graph capture times every candidate on the real buffers (each
  // computes the same result) and keeps the fastest: a stand-in for the builder's tactic timing (issue 5),
  // costing one synchronization per convolution and shape, once.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (!dc.timed && dc.algos.size() > 1 && cudaStreamIsCapturing(args.stream, &capturing) == cudaSuccess &&
      capturing == cudaStreamCaptureStatusNone) {
    dc.timed = true;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    KILN_CUDA_CHECK(cudaEventCreate(&e0));
    KILN_CUDA_CHECK(cudaEventCreate(&e1));
    float best = 0;
    size_t best_i = dc.algos.size();
    for (size_t i = 0; i < dc.algos.size(); ++i) {
      if (launch(dc.algos[i]) != CUDNN_STATUS_SUCCESS) continue;  // warm-up; unsupported ones drop out
      cudaEventRecord(e0, args.stream);
      cudnnStatus_t r = launch(dc.algos[i]);
      cudaEventRecord(e1, args.stream);
      if (r != CUDNN_STATUS_SUCCESS || cudaEventSynchronize(e1) != cudaSuccess) continue;
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (best_i == dc.algos.size() || ms < best) best = ms, best_i = i;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGetLastError();
    if (best_i < dc.algos.size()) dc.chosen = best_i;
  }
  cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
  for (size_t i = dc.chosen; i < dc.algos.size(); ++i) {
    const auto& a = dc.algos[i];
    last = launch(a);
    if (last == CUDNN_STATUS_SUCCESS) {
      dc.chosen = i;
      return Status::Ok();
    }
    // Only "this algorithm does not do that" moves on to the next candidate; anything else is an error.
    if (last != CUDNN_STATUS_NOT_SUPPORTED && last != CUDNN_STATUS_BAD_PARAM) break;
  }
  if (refused && (last == CUDNN_STATUS_NOT_SUPPORTED || last == CUDNN_STATUS_BAD_PARAM)) {
    *refused = true;
    return Status::Ok();
  }
  return cudnn_status(last,
                      fc.ep             ? "cudnnConvolutionBiasActivationForward"
                      : st.g.transpose ? "cudnnConvolutionBackwardData"
                                       : "cudnnConvolutionForward",
                      __FILE__, __LINE__);
}

Box3 box_of(const std::vector<int64_t>& dst, const std::vector<int64_t>& src, const std::vector<int64_t>& off) {
  Box3 b;
  auto d3 = ops::to3(dst, 1), s3 = ops::to3(src, 1), o3 = ops::to3(off, 0);
  for (int i = 0; i < 3; ++i) {
    b.dst[i] = d3[i];
    b.src[i] = s3[i];
    b.off[i] = o3[i];
  }
  return b;
}

Dims permuted(const Dims& d, const std::vector<int64_t>& perm) {
  Dims r;
  for (auto a : perm) r.push_back(d[a]);
  return r;
}

// The cuDNN fused call applies y = act(conv + z + bias) with relu or identity only, and needs the bias; without
// a residual it would have to read z = y (whose stale arena contents, times alpha2 = 0, could still be NaN), so
// those cases take the own epilogue kernel. 2-D only: its bias descriptor is 4-D.
bool dnn_can_fuse(const ConvGeo& g, const FusedSpec& f, bool has_bias) {
  return !g.transpose && !g.copy && g.nsp == 2 && has_bias && f.has_z &&
         (f.ep.act == ops::Activation::kRelu || f.ep.act == ops::Activation::kNone);
}

Status make_dnn_epilogue(const ConvGeo& g, DataType dt, const FusedSpec& f, DnnEpilogue& e) {
  KILN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e.bias));
  KILN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e.bias, CUDNN_TENSOR_NCHW, dnn_type(dt), 1, static_cast<int>(g.m), 1, 1));
  KILN_CUDNN_CHECK(cudnnCreateActivationDescriptor(&e.act));
  KILN_CUDNN_CHECK(cudnnSetActivationDescriptor(
      e.act, f.ep.act == ops::Activation::kRelu ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
      CUDNN_NOT_PROPAGATE_NAN, 0.0));
  return Status::Ok();
}

// Descriptors, geometry and cuDNN's candidate algorithms for the node's current shapes.
// With allow_own, a depthwise NHWC convolution takes the own kernel unless the tactic names a cuDNN
// algorithm (it is the only choice for what cuDNN's NHWC path cannot do: asymmetric pads), and one the direct
// kernel can run takes it when the tactic names it, when there is no tactic and it is the default
// (direct_by_default), or when cuDNN's NHWC path cannot run it (asymmetric pads). The tensor-core stem kernel
// runs when the tactic names it, or for asymmetric pads that neither cuDNN nor the direct kernel takes.
Result<std::shared_ptr<ConvState>> make_conv_state(const KernelArgs& args, bool transpose, const FusedSpec* fused,
                                                   bool allow_own = true) {
  const char* op = transpose ? "ConvTranspose" : fused ? "FusedConv" : "Conv";
  const DevTensor &X = args.in[0], &W = args.in[1];
  const DevTensor& Y = args.out[0];
  const bool has_bias = args.has_input(2);
  const bool has_z = fused && fused->has_z;
  const bool nhwc = fused && fused->nhwc;
  auto fresh = std::make_shared<ConvState>();
  fresh->x_shape = X.shape;
  fresh->w_shape = W.shape;
  fresh->has_bias = has_bias;
  fresh->has_z = has_z;
  if (nhwc && X.rank() != 4) return unsupported("FusedConv: NHWC needs 2 spatial dims");
  // The geometry is worked out in NCHW terms; NHWC only changes the descriptors.
  Dims xs = nhwc ? permuted(X.shape, ops::perm_to_nchw(4)) : X.shape;
  Dims ws = nhwc ? permuted(W.shape, ops::perm_to_nchw(4)) : W.shape;
  KILN_ASSIGN_OR_RETURN(fresh->g, conv_geometry(op, args.attrs(), xs, ws, transpose));
  const ConvGeo& g = fresh->g;
  if (allow_own) {
    fresh->depthwise = depthwise_geom(g, fused, X.dtype);
    const int named = dw_tiled_variant(args.tactic);
    const bool dnn_tactic = !args.tactic.empty() && args.tactic != kDepthwiseTactic && named < 0;
    if (fresh->depthwise && dnn_tactic && !g.copy && !fused->has_pre()) fresh->depthwise.reset();
    if (fresh->depthwise) {
      // The tiled kernel where the tactic names one of its variants that fits (a recorded tactic runs whatever
      // KILN_DW_TILED says: the switch only gates offering it), or untuned (its first variant that fits), or where
      // the strip kernel is withdrawn (KILN_DEPTHWISE=0); else the strip kernel.
      if (named >= 0 && dw_tiled_fits(*fresh->depthwise, X.dtype, named)) {
        fresh->dw_variant = named;
      } else if (!dw_strip_enabled() || args.tactic.empty()) {
        // The pipelined, wide and row-streaming variants run only when named (the tuner's choice: which of them
        // wins depends on the layer), never as the untuned default.
        for (int v : dw_tiled_variants(*fresh->depthwise, X.dtype))
          if (v != kDwTilePipe && v < kDwTileWide) {
            fresh->dw_variant = v;
            break;
          }
      }
    }
    if (!fresh->depthwise) {
      fresh->direct = direct_geom(g, fused, host_weight(args));
      fresh->stem_mma = stem_mma_geom(g, fused, X.dtype);
      if (fresh->stem_mma && (args.tactic == kStemMmaTactic || args.tactic.empty())) {
        fresh->direct.reset();
      } else {
        const bool wanted = args.tactic == kDirectTactic || (args.tactic.empty() && direct_by_default(fresh->direct));
        if (fresh->direct && !wanted && !(nhwc && g.copy)) fresh->direct.reset();
        if (fresh->stem_mma && !(nhwc && g.copy && !fresh->direct)) fresh->stem_mma.reset();
      }
    }
  }
  if (fused && fused->has_pre() && !fresh->depthwise)
    return unsupported("FusedConv: a pre_activation needs the depthwise NHWC kernel");
  if (nhwc && g.copy && !fresh->depthwise && !fresh->direct && !fresh->stem_mma)
    return unsupported("FusedConv: NHWC needs symmetric pads");
  Dims expect = {g.n, g.m};
  expect.insert(expect.end(), g.out.begin(), g.out.end());
  if (nhwc) expect = permuted(expect, ops::perm_to_nhwc(4));
  if (expect != Y.shape)
    return internal_error(std::string(op) + ": output " + dims_to_string(Y.shape) + " but the geometry gives " +
                          dims_to_string(expect));
  if (has_bias && args.in[2].numel() != g.m)
    return invalid_argument(std::string(op) + ": B must have " + std::to_string(g.m) + " elements");
  if (has_z && args.in[3].shape != Y.shape)
    return invalid_argument(std::string(op) + ": Z " + dims_to_string(args.in[3].shape) + " must have Y's shape");
  if (fresh->depthwise || fresh->direct || fresh->stem_mma) return fresh;
  fresh->chunk = chunk_images(g, X.dtype, args.handles->workspace_bytes);
  if (fresh->chunk < 1)
    return unsupported(std::string(op) + ": one image is too large for cuDNN or for the workspace copy");
  if (g.copy) fresh->copy_bytes = align_up(static_cast<size_t>(fresh->chunk * g.img_elems()) * dtype_size(X.dtype));
  const size_t ws_avail = args.handles->workspace_bytes - fresh->copy_bytes;
  if (g.n > 0) {
    fresh->full = std::make_unique<DnnConv>();
    KILN_RETURN_IF_ERROR(build_dnn(g, X.dtype, fresh->chunk, *args.handles, ws_avail, *fresh->full, nhwc));
    if (g.n % fresh->chunk != 0) {
      fresh->rest = std::make_unique<DnnConv>();
      KILN_RETURN_IF_ERROR(build_dnn(g, X.dtype, g.n % fresh->chunk, *args.handles, ws_avail, *fresh->rest, nhwc));
    }
  }
  if (fused && dnn_can_fuse(g, *fused, has_bias)) {
    fresh->dnn_ep = std::make_unique<DnnEpilogue>();
    KILN_RETURN_IF_ERROR(make_dnn_epilogue(g, X.dtype, *fused, *fresh->dnn_ep));
  }
  return fresh;
}

// Tactic names: the cuDNN algorithm and its math mode (tensor cores or FMA).
std::string tactic_name(bool transpose, const DnnConv::Algo& a) {
  return std::string(transpose ? "cudnn_bwd_data_algo" : "cudnn_fwd_algo") + std::to_string(a.algo) +
         (is_tensor_op(a.math) ? "_tc" : "_fma");
}

// Applies the builder's tactic to a fresh state: that algorithm first, no run-time timing. Where the shapes
// differ from the tuned ones cuDNN may not offer it; the heuristic order then stands (strict: an error, for
// the tuner, which must not time a tactic under a name that did not run).
Status apply_tactic(const KernelArgs& args, bool transpose, ConvState& st) {
  // A graph tactic is built by conv_run; the legacy candidates keep the heuristic order for its fallback.
  if (args.tactic.empty() || st.depthwise || st.direct || st.stem_mma || dnn_conv_tactic_index(args.tactic) >= 0)
    return Status::Ok();
  if (args.tactic == kDepthwiseTactic || args.tactic == kDirectTactic || args.tactic == kStemMmaTactic ||
      dw_tiled_variant(args.tactic) >= 0)
    return args.strict_tactic ? unsupported("tactic " + args.tactic + " cannot run this convolution") : Status::Ok();
  for (DnnConv* d : {st.full.get(), st.rest.get()}) {
    if (!d) continue;
    bool found = false;
    for (size_t i = 0; i < d->algos.size() && !found; ++i)
      if (tactic_name(transpose, d->algos[i]) == args.tactic) d->chosen = i, d->timed = true, found = true;
    if (!found && args.strict_tactic && d == st.full.get())
      return unsupported("tactic " + args.tactic + " is not among cuDNN's algorithms for this convolution");
  }
  return Status::Ok();
}

// The plan of graph tactic `rank` for this layer: restored from the plan the builder stored with the node when it
// is for this problem, cuDNN and GPU (no compile), else built. A stored plan that cannot be used is only a slower
// load: one line in the log, then the build.
Result<std::unique_ptr<DnnConvGraph>> graph_tactic(const KernelArgs& args, const DnnConvSpec& spec, int rank) {
  CudaHandles& h = *args.handles;
  using Plan = std::unique_ptr<DnnConvGraph>;
  return restore_or_build<Plan>(
      args, "FusedConv", DnnConvGraph::plan_key(spec, rank), dnn_conv_plan_key(spec, rank, ""),
      [&](const std::string& json) { return DnnConvGraph::restore(h.dnn, spec, rank, json, h.workspace_bytes); },
      [&] { return DnnConvGraph::build(h.dnn, spec, rank, h.workspace_bytes); });
}

// fused: null for Conv/ConvTranspose; for FusedConv its layout and epilogue (input 3 is Z). squeeze: FusedConv's
// mean output, which the tiled and row-streaming depthwise kernels take (squeeze->done then set).
Status conv_run(KernelArgs& args, bool transpose, const FusedSpec* fused, DwSqueeze* squeeze = nullptr) {
  const DevTensor &X = args.in[0], &W = args.in[1];
  DevTensor& Y = args.out[0];
  if (Y.numel() == 0) return Status::Ok();
  const bool has_bias = args.has_input(2);
  const bool has_z = fused && fused->has_z;
  const bool nhwc = fused && fused->nhwc;
  auto* st = static_cast<ConvState*>(args.state->get());
  if (!st || st->x_shape != X.shape || st->w_shape != W.shape || st->has_bias != has_bias || st->has_z != has_z) {
    KILN_ASSIGN_OR_RETURN(std::shared_ptr<ConvState> fresh, make_conv_state(args, transpose, fused));
    KILN_RETURN_IF_ERROR(apply_tactic(args, transpose, *fresh));
    // A recorded graph tactic runs whether or not KILN_DNN_CONV is set (the engine chose it); where it cannot be
    // built here (other GPU, cuDNN version or shapes) the layer keeps the legacy path.
    if (const int rank = dnn_conv_tactic_index(args.tactic);
        rank >= 0 && !fresh->depthwise && !fresh->direct && !fresh->stem_mma) {
      Status gs = unsupported("not an NHWC 2-D FusedConv");
      if (auto spec = graph_spec(fresh->g, fused, X.dtype, has_bias)) {
        auto built = graph_tactic(args, *spec, rank);
        if (built.ok())
          fresh->graph = std::move(*built);
        else
          gs = built.status();
      }
      if (!fresh->graph) {
        if (args.strict_tactic) return gs;  // the tuner must not time a name that did not run
        const std::string msg = std::string(transpose ? "ConvTranspose" : fused ? "FusedConv" : "Conv") + " '" +
                                args.node->name + "': recorded tactic " + args.tactic + " cannot be built here (" +
                                gs.message() + "); it falls back to cuDNN's legacy convolution";
        default_logger().log(ILogger::Severity::kWARNING, msg.c_str());
      }
    }
    *args.state = fresh;
    st = fresh.get();
  }
  const ConvGeo& g = st->g;
  if (st->depthwise && st->dw_variant >= 0)
    return launch_depthwise_nhwc_tiled(X.dtype, X.data, W.data, has_bias ? args.in[2].data : nullptr,
                                       has_z ? args.in[3].data : nullptr, Y.data, *st->depthwise,
                                       epilogue_params(fused->pre), epilogue_params(fused->ep), st->dw_variant,
                                       args.handles->sm_count, args.stream, squeeze);
  if (st->depthwise)
    return launch_depthwise_nhwc(X.dtype, X.data, W.data, has_bias ? args.in[2].data : nullptr,
                                 has_z ? args.in[3].data : nullptr, Y.data, *st->depthwise,
                                 epilogue_params(fused->pre), epilogue_params(fused->ep), args.handles->sm_count,
                                 args.stream);
  if (st->direct)
    return launch_direct_conv_nhwc(X.dtype, X.data, W.data, has_bias ? args.in[2].data : nullptr,
                                   has_z ? args.in[3].data : nullptr, Y.data, *st->direct, epilogue_params(fused->ep),
                                   args.stream);
  if (st->stem_mma)
    return launch_direct_conv_nhwc_mma(X.dtype, X.data, W.data, has_bias ? args.in[2].data : nullptr,
                                       has_z ? args.in[3].data : nullptr, Y.data, *st->stem_mma,
                                       epilogue_params(fused->ep), args.handles->sm_count, args.stream);
  if (st->graph) {
    const void* bias = has_bias ? args.in[2].data : nullptr;
    const void* z = has_z ? args.in[3].data : nullptr;
    if (auto done = run_layer_plan(args, st->graph, dnn_pointers_aligned({X.data, W.data, bias, z, Y.data}),
                                   "FusedConv", "cuDNN's legacy convolution", [&](DnnConvGraph& d) {
                                     return d.run(args.handles->dnn, args.handles->workspace, X.data, W.data, bias,
                                                  z, Y.data);
                                   }))
      return *done;
  }
  const size_t es = dtype_size(X.dtype);
  const int64_t x_img = g.c * g.vol(g.in), y_img = g.m * g.vol(g.out);
  void* copy = args.handles->workspace;
  bool epilogue_done = st->dnn_ep != nullptr;
  for (int64_t n0 = 0; n0 < g.n; n0 += st->chunk) {
    const int64_t cnt = std::min(st->chunk, g.n - n0);
    DnnConv& dc = cnt == st->chunk ? *st->full : *st->rest;
    const auto* x = static_cast<const uint8_t*>(X.data) + n0 * x_img * es;
    auto* y = static_cast<uint8_t*>(Y.data) + n0 * y_img * es;
    if (!transpose) {
      const void* img = x;
      if (g.copy) {
        KILN_RETURN_IF_ERROR(
            launch_window_copy(static_cast<int>(es), x, copy, cnt * g.c, box_of(g.img, g.in, g.copy_off), args.stream));
        img = copy;
      }
      if (st->dnn_ep) {
        DnnFusedCall fc;
        fc.ep = st->dnn_ep.get();
        fc.bias = args.in[2].data;
        fc.z = static_cast<const uint8_t*>(args.in[3].data) + n0 * y_img * es;
        bool refused = false;
        KILN_RETURN_IF_ERROR(run_dnn(args, *st, dc, W.data, img, nullptr, nullptr, y, fc, &refused));
        if (!refused) continue;
        // cuDNN has no fused kernel for this problem: from now on plain convolution + own epilogue, for every
        // chunk (earlier chunks are simply recomputed).
        st->dnn_ep.reset();
        epilogue_done = false;
        for (DnnConv* d : {st->full.get(), st->rest.get()})
          if (d) d->chosen = 0, d->timed = false;
        n0 = -st->chunk;
        continue;
      }
      KILN_RETURN_IF_ERROR(run_dnn(args, *st, dc, W.data, img, nullptr, nullptr, y));
    } else {
      void* img = g.copy ? copy : static_cast<void*>(y);
      KILN_RETURN_IF_ERROR(run_dnn(args, *st, dc, W.data, nullptr, img, x, nullptr));
      if (g.copy)
        KILN_RETURN_IF_ERROR(
            launch_window_copy(static_cast<int>(es), copy, y, cnt * g.m, box_of(g.out, g.img, g.copy_off), args.stream));
    }
  }
  if (!fused) {
    if (has_bias)
      KILN_RETURN_IF_ERROR(launch_channel_bias(Y.dtype, Y.data, args.in[2].data, g.n, g.m, g.vol(g.out), args.stream));
    return Status::Ok();
  }
  if (epilogue_done || (!has_bias && !has_z && fused->ep.act == ops::Activation::kNone)) return Status::Ok();
  const EpilogueParams e = epilogue_params(fused->ep);
  return launch_conv_epilogue(Y.dtype, Y.data, has_bias ? args.in[2].data : nullptr, has_z ? args.in[3].data : nullptr,
                              Y.numel(), g.m, nhwc ? 1 : g.vol(g.out), e, args.stream);
}

Result<FusedSpec> fused_spec(const KernelArgs& args) {
  FusedSpec f;
  // Compared in place, not moved into a local string (GCC 12 then warns, wrongly, that it may be uninitialized).
  const Result<std::string> layout = args.attrs().get_string("layout", "NCHW");
  if (!layout.ok()) return layout.status();
  f.nhwc = layout.value() == "NHWC";
  KILN_ASSIGN_OR_RETURN(f.ep, ops::parse_epilogue("FusedConv", args.attrs()));
  KILN_ASSIGN_OR_RETURN(f.pre, ops::parse_epilogue("FusedConv", args.attrs(), ops::kProloguePrefix));
  f.has_z = args.has_input(3);
  return f;
}

// The own kernels first where they apply, in the order that makes the first one the untuned default: the tiled
// depthwise variants that fit, then the strip kernel; the tensor-core stem kernel, then the direct kernel where it
// is the default; then cuDNN's candidates for the node's shapes in its heuristic order (the tuner times them all),
// and the direct kernel after them where it is not the default. NHWC FusedConv that no own kernel runs also gets
// cuDNN's graph plans, after the legacy first choice (merge_conv_tactics).
std::vector<std::string> conv_tactics(const KernelArgs& args, bool transpose, const FusedSpec* fused) {
  std::vector<std::string> names;
  if (args.out.empty() || args.out[0].numel() == 0) return names;
  KernelArgs probe = args;  // the layer's recorded tactic must not hide the other candidates
  probe.tactic.clear();
  probe.strict_tactic = false;
  auto own = make_conv_state(probe, transpose, fused, true);
  if (own.ok() && (*own)->depthwise) {
    for (int v : dw_tiled_variants(*(*own)->depthwise, args.in[0].dtype)) names.push_back(kDwTiledTactics[v]);
    if (dw_strip_enabled()) names.push_back(kDepthwiseTactic);
  }
  // The direct kernel's eligibility follows from the geometry alone (no second state with cuDNN descriptors).
  std::optional<DirectConvGeom> direct;
  const bool mma = own.ok() && !(*own)->depthwise && stem_mma_geom((*own)->g, fused, args.in[0].dtype);
  if (mma) names.push_back(kStemMmaTactic);
  if (own.ok() && !(*own)->depthwise)
    direct = direct_geom((*own)->g, fused, host_weight(args));
  if (direct_by_default(direct)) names.push_back(kDirectTactic);
  auto st = make_conv_state(probe, transpose, fused, false);
  if (st.ok() && (*st)->full)
    for (const auto& a : (*st)->full->algos) names.push_back(tactic_name(transpose, a));
  if (direct && !direct_by_default(direct)) names.push_back(kDirectTactic);
  // Not where an own kernel runs: the graph plans ran the image stems 1.0-2.3x slower than the own stem kernels
  // (H200, FP16, batch 128, GpuDnnConv.DISABLED_StemsBatch128Times), so offering them would only cost compiles.
  const bool own_kernel = own.ok() && ((*own)->depthwise || mma || direct);
  if (fused && dnn_conv_enabled() && args.handles && st.ok() && (*st)->full && !own_kernel) {
    const auto spec = graph_spec((*st)->g, fused, args.in[0].dtype, args.has_input(2));
    if (spec && dnn_conv_wanted(*spec, own_kernel)) {
      const int n = DnnConvGraph::count_usable(args.handles->dnn, *spec, kDnnConvMaxTactics,
                                               args.handles->workspace_bytes);
      std::vector<std::string> dnn;
      for (int r = 0; r < n; ++r) dnn.push_back(dnn_conv_tactic_name(r));
      names = merge_conv_tactics(names, dnn);
    }
  }
  return names;
}

// needs_depthwise: only the depthwise kernel can run the node (a FusedConv prologue). max_outputs: 2 for FusedConv
// (its mean output M).
bool conv_supports(const runtime::PlanNode& n, const runtime::EnginePlan& p, bool transpose, bool nhwc = false,
                   bool needs_depthwise = false, size_t max_outputs = 1) {
  if (n.inputs.size() < 2 || n.inputs[0] < 0 || n.inputs[1] < 0 || n.outputs.empty() || n.outputs.size() > max_outputs)
    return false;
  const DataType dt = node_dtype(n, p);
  for (int id : n.inputs)
    if (id >= 0 && p.values[id].dtype != dt) return false;
  const auto& xv = p.values[n.inputs[0]];
  const auto& wv = p.values[n.inputs[1]];
  if (!xv.rank_known || !wv.rank_known || xv.shape.size() < 3 || xv.shape.size() > 5 ||
      wv.shape.size() != xv.shape.size())
    return false;
  if (nhwc && xv.shape.size() != 4) return false;
  Dims x = ops::static_dims(xv.shape), w = ops::static_dims(wv.shape);
  if (nhwc) {
    x = permuted(x, ops::perm_to_nchw(4));
    w = permuted(w, ops::perm_to_nchw(4));
  }
  for (size_t i = 1; i < w.size(); ++i)
    if (w[i] < 0) return false;  // the kernel size and channels must be known to check the attributes
  // Where every size is known, check the geometry and that one image fits; symbolic batch/spatial sizes are
  // checked at run time.
  if (x[1] < 0) return false;
  bool all_static = std::all_of(x.begin(), x.end(), [](int64_t v) { return v >= 0; }) && w[0] >= 0;
  auto group = n.attrs.get_int("group", 1);
  const bool depthwise = nhwc && group.ok() && ops::is_depthwise(*group, x[1], w[0], w[1]);
  if (needs_depthwise && !depthwise) return false;
  if (!all_static) {
    if (!nhwc || depthwise) return true;  // the depthwise kernel pads any way (sizes are checked at run time)
    // NHWC has no padded-copy path: with sizes unknown, only explicit symmetric pads (or none) are sure to fit.
    auto ap = n.attrs.get_string("auto_pad", "NOTSET");
    auto pads = n.attrs.get_ints("pads", std::vector<int64_t>(4, 0));
    if (!ap.ok() || (*ap != "NOTSET" && *ap != "VALID") || !pads.ok() || pads->size() != 4) return false;
    return (*pads)[0] == (*pads)[2] && (*pads)[1] == (*pads)[3];
  }
  auto g = conv_geometry(transpose ? "ConvTranspose" : "Conv", n.attrs, x, w, transpose);
  if (!g.ok()) return false;
  if ((nhwc && g->copy) || needs_depthwise) {
    FusedSpec f;
    f.nhwc = true;
    // cuDNN's NHWC path pads symmetrically only; the own kernels pad any way.
    return depthwise_geom(*g, &f, dt).has_value() ||
           (!needs_depthwise && (direct_geom(*g, &f, nullptr).has_value() || stem_mma_geom(*g, &f, dt).has_value()));
  }
  return chunk_images(*g, dt, 64ull << 20) >= 1;  // the context's workspace size (cuda_context.cpp)
}

bool fused_supports(const runtime::PlanNode& n, const runtime::EnginePlan& p) {
  auto layout = n.attrs.get_string("layout", "NCHW");
  if (!layout.ok() || (*layout != "NCHW" && *layout != "NHWC")) return false;
  if (!ops::parse_epilogue("FusedConv", n.attrs).ok()) return false;
  auto pre = ops::parse_epilogue("FusedConv", n.attrs, ops::kProloguePrefix);
  if (!pre.ok()) return false;
  return conv_supports(n, p, false, *layout == "NHWC", pre->act != ops::Activation::kNone, 2);
}

}  // namespace

KILN_CUDA_KERNEL(Conv) {
  KernelDef d;
  d.op = "Conv";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) { return conv_run(a, false, nullptr); };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) { return conv_supports(n, p, false); };
  d.tactics = [](const KernelArgs& a) { return conv_tactics(a, false, nullptr); };
  return d;
}

KILN_CUDA_KERNEL(ConvTranspose) {
  KernelDef d;
  d.op = "ConvTranspose";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) { return conv_run(a, true, nullptr); };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) { return conv_supports(n, p, true); };
  d.tactics = [](const KernelArgs& a) { return conv_tactics(a, true, nullptr); };
  return d;
}

// With a chosen graph tactic: its plan's JSON and key, for the engine (a timed winner's plan is the one the tuner
// built on this handle, which it keeps alive for this, so nothing compiles here; a timing-cache answer compiles it
// once). Nothing when cuDNN cannot serialize it; the load then compiles.
std::vector<std::pair<std::string, std::string>> fused_conv_annotations(KernelArgs& args) {
  const int rank = dnn_conv_tactic_index(args.tactic);
  if (rank < 0 || !args.handles || args.in.size() < 2 || args.out.empty() || args.out[0].numel() == 0) return {};
  auto fused = fused_spec(args);
  if (!fused.ok() || !fused->nhwc || args.in[0].rank() != 4) return {};
  const Dims xs = permuted(args.in[0].shape, ops::perm_to_nchw(4));
  const Dims ws = permuted(args.in[1].shape, ops::perm_to_nchw(4));
  auto g = conv_geometry("FusedConv", args.attrs(), xs, ws, false);
  if (!g.ok()) return {};
  const auto spec = graph_spec(*g, &*fused, args.in[0].dtype, args.has_input(2));
  if (!spec) return {};
  auto d = DnnConvGraph::build(args.handles->dnn, *spec, rank, args.handles->workspace_bytes);
  if (!d.ok()) return {};
  std::string json = (*d)->json();
  if (json.empty()) return {};
  return {{kDnnPlanKeyAttr, DnnConvGraph::plan_key(*spec, rank)}, {kDnnPlanAttr, std::move(json)}};
}

KILN_CUDA_KERNEL(FusedConv) {
  KernelDef d;
  d.op = "FusedConv";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(FusedSpec f, fused_spec(a));
    if (a.out.size() < 2) return conv_run(a, false, &f);
    // M, Y's spatial mean (fuse_conv_squeeze): the depthwise kernel's partial sums where it takes them, else a
    // reduction over Y after the convolution (what the ReduceMean it replaced ran).
    DevTensor& m = a.out[1];
    DwSqueeze sq{m.data, a.handles->workspace, a.handles->workspace_bytes};
    KILN_RETURN_IF_ERROR(conv_run(a, false, &f, &sq));
    if (sq.done || m.numel() == 0) return Status::Ok();
    // No spatial elements: the reduction writes the empty mean, 0, as the reference gives.
    const DevTensor& y = a.out[0];
    std::vector<bool> spatial(y.rank(), true);
    spatial[0] = false;
    spatial[f.nhwc ? y.rank() - 1 : 1] = false;
    return launch_reduce_dims(y.dtype, y.data, m.data, y.shape, spatial, ReduceOp::kMean, m.numel(), "FusedConv",
                              a.handles->workspace, a.handles->workspace_bytes, a.handles->sm_count, a.stream);
  };
  d.supports = fused_supports;
  d.tactics = [](const KernelArgs& a) {
    auto f = fused_spec(a);
    return f.ok() ? conv_tactics(a, false, &*f) : std::vector<std::string>{};
  };
  d.annotations = fused_conv_annotations;
  return d;
}

EpilogueParams epilogue_params(const ops::Epilogue& e) {
  EpilogueParams p;
  p.act = static_cast<int>(e.act);
  p.alpha = e.alpha;
  p.beta = e.beta;
  p.lo = e.lo;
  p.hi = e.hi;
  return p;
}

}  // namespace kiln::cuda
