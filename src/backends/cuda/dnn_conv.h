// kiln::FusedConv (2-D NHWC, group 1, half/bfloat16) on cuDNN's backend graph API: Y = act(conv(X, W) + B + Z) as
// one convolution + pointwise graph, which reaches the engines (and the fused conv + epilogue kernels) that the
// legacy cudnnConvolutionForward algorithms do not. Tactics cudnn_conv_graph_<r>, offered next to the legacy
// algorithms (KILN_DNN_CONV=0 withdraws them; the tuner keeps them only where they time faster). The names, the
// switch, which convolutions are offered the tactics and the descriptors' dimensions are plain C++ (the CPU tests
// check them); DnnConvGraph itself lives in dnn_conv.cpp.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cuda/dnn_common.h"
#include "backends/cuda/tactic_list.h"
#include "common/tensor.h"
#include "kiln/status.h"
#include "ops/layout_util.h"

struct cudnnContext;  // cudnnHandle_t, without cudnn.h

namespace kiln::cuda {

// "cudnn_conv_graph_<r>": the r-th plan, in dnn_conv_config_order, that finalizes within the workspace.
inline constexpr const char* kDnnConvTacticPrefix = "cudnn_conv_graph_";
// Offered per layer: a runtime-fusion plan costs an NVRTC compile at build time.
inline constexpr int kDnnConvMaxTactics = 3;

inline std::string dnn_conv_tactic_name(int rank) { return kDnnConvTacticPrefix + std::to_string(rank); }

// The rank a tactic name carries, or -1 when it is not one of ours.
inline int dnn_conv_tactic_index(std::string_view t) { return dnn_tactic_rank(t, kDnnConvTacticPrefix); }

// The switch: on unless KILN_DNN_CONV=0 (a recorded tactic runs regardless; the switch only gates offering it).
inline bool dnn_conv_enabled() {
  const char* v = std::getenv("KILN_DNN_CONV");
  return !(v && std::strcmp(v, "0") == 0);
}

// One NHWC FusedConv problem: X [n, h, w, c], W [k, r, s, c / group] (KRSC, as the layout pass stores it),
// Y [n, p, q, k]; pads before (pad) and after (pad_end) per spatial dim.
struct DnnConvSpec {
  DataType dt = DataType::kHALF;
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t k = 0, r = 0, s = 0;
  int64_t p = 0, q = 0;
  int64_t pad[2] = {0, 0}, pad_end[2] = {0, 0}, stride[2] = {1, 1}, dil[2] = {1, 1};
  int64_t group = 1;
  bool bias = false, res = false;
  bool prologue = false;  // a pre_* activation on X: only the depthwise kernel applies it
  ops::Activation act = ops::Activation::kNone;
};

// The activations the graph maps onto cuDNN's pointwise modes (none adds no node).
inline bool dnn_conv_act_supported(ops::Activation a) {
  using A = ops::Activation;
  return a == A::kNone || a == A::kRelu || a == A::kSigmoid || a == A::kSilu || a == A::kGeluErf || a == A::kGeluTanh;
}

// Why the graph is not tried for a spec, or empty: half/bfloat16 (float accumulation), group 1, no prologue,
// symmetric pads (the legacy NHWC path's rule; asymmetric ones keep the padded copy), a supported activation,
// an output size that follows from the window, every tensor below 2^31 elements.
inline std::string dnn_conv_declined(const DnnConvSpec& s) {
  if (s.dt != DataType::kHALF && s.dt != DataType::kBF16) return "not float16/bfloat16";
  if (s.group != 1) return "grouped";
  if (s.prologue) return "a prologue";
  if (!dnn_conv_act_supported(s.act)) return std::string("activation ") + ops::activation_name(s.act);
  if (s.n <= 0 || s.h <= 0 || s.w <= 0 || s.c <= 0 || s.k <= 0 || s.r <= 0 || s.s <= 0 || s.p <= 0 || s.q <= 0)
    return "an empty tensor";
  const int64_t in[2] = {s.h, s.w}, ker[2] = {s.r, s.s}, out[2] = {s.p, s.q};
  for (int i = 0; i < 2; ++i) {
    if (s.pad[i] != s.pad_end[i]) return "asymmetric pads";
    if (s.pad[i] < 0 || s.stride[i] < 1 || s.dil[i] < 1) return "bad window";
    const int64_t span = in[i] + 2 * s.pad[i] - (ker[i] - 1) * s.dil[i] - 1;
    if (span < 0 || span / s.stride[i] + 1 != out[i]) return "output size does not follow from the window";
  }
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  if (s.n * s.h * s.w * s.c > kMax || s.n * s.p * s.q * s.k > kMax || s.k * s.r * s.s * s.c > kMax)
    return "beyond 32-bit sizes";
  return "";
}

// Whether a layer is offered the tactics: a spec the graph takes, on a convolution none of the own kernels
// (depthwise, stems) runs.
inline bool dnn_conv_wanted(const DnnConvSpec& s, bool own_kernel) {
  return !own_kernel && dnn_conv_declined(s).empty();
}

// The layer's tactic list: the legacy first choice stays first (the untuned default), the graph plans next so
// that the tuner's per-level limit reaches them, then the legacy others.
inline std::vector<std::string> merge_conv_tactics(const std::vector<std::string>& legacy,
                                                   const std::vector<std::string>& dnn) {
  return after_first_choice(legacy, dnn);
}

// The order in which a heuristic list's configs are tried (their tactic ranks), given which ones compile at plan
// time: the heuristic's first choice (its best prediction) first whatever it is, then the precompiled configs,
// then the other runtime-compiled ones, each in the heuristic's order. A runtime-fusion plan is an NVRTC compile
// at build time (and again per process when an engine loads), so with kDnnConvMaxTactics offered the precompiled
// ones are preferred beyond the first.
inline std::vector<size_t> dnn_conv_config_order(const std::vector<bool>& runtime_compiled) {
  std::vector<size_t> order;
  if (runtime_compiled.empty()) return order;
  order.push_back(0);
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 1; i < runtime_compiled.size(); ++i)
      if (runtime_compiled[i] == (pass == 1)) order.push_back(i);
  return order;
}

// One tensor of the graph: cuDNN's convolution dims are [N, C, H, W] (K, C, R, S for the filter) whatever the
// memory order; the strides (elements) say NHWC.
struct DnnConvDims {
  int64_t dims[4] = {0, 0, 0, 0};
  int64_t strides[4] = {0, 0, 0, 0};
};

// X, W, Y (also Z and every float intermediate) and the bias, broadcast as [1, K, 1, 1].
struct DnnConvLayout {
  DnnConvDims x, w, y, bias;
};

inline DnnConvLayout dnn_conv_layout(const DnnConvSpec& s) {
  DnnConvLayout l;
  const int64_t cg = s.c / s.group;
  l.x = {{s.n, s.c, s.h, s.w}, {s.h * s.w * s.c, 1, s.w * s.c, s.c}};
  l.w = {{s.k, cg, s.r, s.s}, {s.r * s.s * cg, 1, s.s * cg, cg}};
  l.y = {{s.n, s.k, s.p, s.q}, {s.p * s.q * s.k, 1, s.q * s.k, s.k}};
  l.bias = {{1, s.k, 1, 1}, {s.k, 1, s.k, s.k}};
  return l;
}

// The problem as a string: the key of the per-process memory of cuDNN's answers.
inline std::string dnn_conv_key(const DnnConvSpec& s) {
  std::string k = std::to_string(static_cast<int>(s.dt));
  for (int64_t v : {s.n, s.h, s.w, s.c, s.k, s.r, s.s, s.p, s.q, s.pad[0], s.pad[1], s.pad_end[0], s.pad_end[1],
                    s.stride[0], s.stride[1], s.dil[0], s.dil[1], s.group})
    k += " " + std::to_string(v);
  k += std::string(" ") + (s.bias ? "b" : "-") + (s.res ? "z" : "-") + (s.prologue ? "p" : "-") + " " +
       ops::activation_name(s.act);
  return k;
}

// What a stored plan (the node annotations kDnnPlanAttr / kDnnPlanKeyAttr of dnn_common.h) is valid for: the
// tactic, the problem (only the tuned shapes' plan is stored) and `where` (the cuDNN version and the GPU).
inline std::string dnn_conv_plan_key(const DnnConvSpec& s, int rank, const std::string& where) {
  return dnn_conv_tactic_name(rank) + " | " + dnn_conv_key(s) + " | " + where;
}

namespace dnn_graph {
struct Plan;  // one finalized plan, shared by a context's layers of one problem (dnn_graph.h)
}

// A finalized cuDNN execution plan for one spec, with its graph's descriptors, shared with the other layers of
// the same problem and rank on the same handle; each layer's variant pack is rebuilt only when its pointers change.
class DnnConvGraph {
 public:
  ~DnnConvGraph();
  DnnConvGraph(const DnnConvGraph&) = delete;
  DnnConvGraph& operator=(const DnnConvGraph&) = delete;

  // The plan of tactic rank `rank`. Unsupported (kUNSUPPORTED) when cuDNN refuses the graph or has fewer usable
  // plans; other errors are cuDNN failures.
  static Result<std::unique_ptr<DnnConvGraph>> build(cudnnContext* handle, const DnnConvSpec& s, int rank,
                                                     size_t max_workspace);
  // The plan of tactic `rank` from a stored JSON (json() of a plan for the same key), no compile; a layer of the
  // same problem on this handle shares it. Unsupported when cuDNN refuses the text or the plan needs more than
  // max_workspace: the caller then builds.
  static Result<std::unique_ptr<DnnConvGraph>> restore(cudnnContext* handle, const DnnConvSpec& s, int rank,
                                                       const std::string& json, size_t max_workspace);
  // dnn_conv_plan_key with this process's cuDNN version and the current GPU.
  static std::string plan_key(const DnnConvSpec& s, int rank);
  // Plans restored from stored JSON in this process (the GPU tests read it).
  static int64_t plans_restored();
  // The plan serialized for the engine (empty where cuDNN cannot).
  std::string json() const;
  // How many plans (at most `max`) finalize within max_workspace: the tactics to offer; 0 when refused.
  // Remembered per problem and device for the process, with which configs gave them (build then finalizes only
  // its own).
  static int count_usable(cudnnContext* handle, const DnnConvSpec& s, int max, size_t max_workspace);

  size_t workspace_bytes() const { return workspace_; }
  // Whether the plan's engine compiles at run time (a note for the tests' prints).
  bool runtime_compiled() const { return rtc_; }

  // On the handle's stream (the context sets it); bias/z null where the spec has none.
  Status run(cudnnContext* handle, void* workspace, const void* x, const void* w, const void* bias, const void* z,
             void* y);

 private:
  struct Impl;
  explicit DnnConvGraph(std::unique_ptr<Impl> impl);
  static std::unique_ptr<DnnConvGraph> wrap(std::shared_ptr<dnn_graph::Plan> plan, const DnnConvSpec& s);
  std::unique_ptr<Impl> impl_;
  size_t workspace_ = 0;
  bool rtc_ = false;
};

}  // namespace kiln::cuda
