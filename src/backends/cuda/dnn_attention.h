// kiln::FusedAttention on cuDNN's fused flash attention (SDPA forward, through the cuDNN frontend's graph API):
// the tactic "cudnn_sdpa", which the tuner times against our own kernel's block sizes. The name, the switches, which
// layers are offered it, the dims/strides handed to cuDNN and the key and text form of a stored plan are plain C++
// (the CPU tests check them); DnnSdpa itself lives in dnn_attention.cpp, the only file that includes the (heavy)
// frontend headers. With KILN_DNN_SDPA_STORE=1 the chosen plan is stored in the engine (the frontend's serialized
// graph: cuDNN's plan JSON with its compiled kernel, plus the variant-pack metadata) and restored at load, as the
// fused-matmul and conv-graph plans are; without it cuDNN builds the plan at an engine's first inference.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/dnn_common.h"
#include "common/tensor.h"
#include "kiln/status.h"
#include "ops/attention_layout.h"

struct cudnnContext;  // cudnnHandle_t, without cudnn.h

namespace kiln::cuda {

inline constexpr const char* kDnnSdpaTactic = "cudnn_sdpa";

// On unless KILN_DNN_SDPA=0 withdraws it (the tuner keeps it only where it times faster; a recorded one runs
// regardless of the switch).
inline bool dnn_sdpa_enabled() {
  const char* v = std::getenv("KILN_DNN_SDPA");
  return !(v && std::strcmp(v, "0") == 0);
}

// Whether a chosen cudnn_sdpa plan is stored in the engine and a stored one restored at load: only with
// KILN_DNN_SDPA_STORE=1 until a GPU run has verified the restore path (on by default once a GPU run has verified
// it). Off, the builder stores nothing and a load ignores any stored plan: cuDNN builds it at the first inference.
inline bool dnn_sdpa_store_enabled() {
  const char* v = std::getenv("KILN_DNN_SDPA_STORE");
  return v && std::strcmp(v, "1") == 0;
}

// One FusedAttention problem as cuDNN sees it. Element (b, h, s, d) of Q lies at b*qs[0] + h*qs[1] + s*qs[2] + d
// from Q's first element (likewise K, V, O): the strides FusedAttention's state works out, packed or not.
// mask: the additive mask's shape left-padded to rank 4 (empty: no mask), a dense tensor broadcast to
// [B, H, Sq, Sk]. Hk: K's and V's head count (grouped-query attention, Hk divides H), which cuDNN's SDPA takes
// natively from the K and V tensors' head dims.
struct DnnSdpaSpec {
  DataType dt = DataType::kHALF;
  int64_t B = 0, H = 0, Sq = 0, Sk = 0, D = 0, Dv = 0;
  int64_t Hk = 0;
  int64_t qs[3] = {0, 0, 0}, ks[3] = {0, 0, 0}, vs[3] = {0, 0, 0}, os[3] = {0, 0, 0};
  Dims mask;
  float scale = 1.0f;
  bool causal = false;  // top-left aligned: key j masked for query i when j > i
};

// The spec of a FusedAttention node from its geometry (ops::attention_geometry: strides of the packed or separate
// layouts), element type, mask shape left-padded to rank 4 (empty: none), scale and causal flag.
inline DnnSdpaSpec dnn_sdpa_spec(const ops::AttentionGeometry& g, DataType dt, const Dims& mask4, float scale,
                                 bool causal) {
  DnnSdpaSpec s;
  s.dt = dt;
  s.B = g.B, s.H = g.H, s.Sq = g.Sq, s.Sk = g.Sk, s.D = g.D, s.Dv = g.Dv, s.Hk = g.Hk;
  for (int i = 0; i < 3; ++i) s.qs[i] = g.q.st[i], s.ks[i] = g.k.st[i], s.vs[i] = g.v.st[i], s.os[i] = g.o.st[i];
  s.mask = mask4;
  s.scale = scale;
  s.causal = causal;
  return s;
}

// The problem as a key: everything the graph is built from. The scale goes in exactly (9 significant digits
// round-trip a float): a stored plan carries it as a constant.
inline std::string dnn_sdpa_problem_key(const DnnSdpaSpec& s) {
  std::string k = dtype_name(s.dt);
  for (int64_t v : {s.B, s.H, s.Sq, s.Sk, s.D, s.Dv}) k += " " + std::to_string(v);
  if (s.Hk != s.H) k += " kv_heads " + std::to_string(s.Hk);  // only where grouped: older keys stay valid
  for (const int64_t* st : {s.qs, s.ks, s.vs, s.os}) {
    k += " /";
    for (int i = 0; i < 3; ++i) k += " " + std::to_string(st[i]);
  }
  char scale[32];
  std::snprintf(scale, sizeof scale, "%.9g", static_cast<double>(s.scale));
  return k + " mask" + dims_to_string(s.mask) + " scale " + scale + (s.causal ? " causal" : "");
}

// What a stored plan (kDnnPlanAttr / kDnnPlanKeyAttr of dnn_common.h) is valid for: the tactic, the problem (only
// the tuned shapes' plan is stored) and `where` (the cuDNN version and the GPU the plan's kernel was compiled for).
inline std::string dnn_sdpa_plan_key(const DnnSdpaSpec& s, const std::string& where) {
  return std::string(kDnnSdpaTactic) + " | " + dnn_sdpa_problem_key(s) + " | " + where;
}

// The frontend serializes a graph as UBJSON (binary). The engine format would keep the bytes (strings are
// length-prefixed), but anything that shows a node's string attributes as text would not, so the plan is stored
// base64-encoded (standard alphabet, '=' padding).
inline std::string dnn_plan_to_text(const std::vector<uint8_t>& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string t;
  t.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = uint32_t{bytes[i]} << 16;
    if (n > 1) v |= uint32_t{bytes[i + 1]} << 8;
    if (n > 2) v |= bytes[i + 2];
    for (size_t c = 0; c < 4; ++c) t += c <= n ? kAlphabet[(v >> (18 - 6 * c)) & 63] : '=';
  }
  return t;
}

// dnn_plan_to_text's inverse into *bytes; false (bytes unspecified) for text it cannot have written.
inline bool dnn_plan_from_text(const std::string& t, std::vector<uint8_t>* bytes) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  bytes->clear();
  if (t.size() % 4) return false;
  bytes->reserve(t.size() / 4 * 3);
  for (size_t i = 0; i < t.size(); i += 4) {
    const bool last = i + 4 == t.size();
    const size_t pad = last ? (t[i + 3] == '=') + (t[i + 2] == '=') : 0;
    if (pad == 1 && t[i + 2] == '=') return false;  // "x=y=" : padding inside
    uint32_t v = 0;
    for (size_t c = 0; c < 4; ++c) {
      const int d = c < 4 - pad ? value(t[i + c]) : 0;
      if (d < 0) return false;
      v = v << 6 | static_cast<uint32_t>(d);
    }
    // Bits the padding drops must be zero (dnn_plan_to_text writes them so): one text per byte string.
    if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff))) return false;
    bytes->push_back(static_cast<uint8_t>(v >> 16));
    if (pad < 2) bytes->push_back(static_cast<uint8_t>(v >> 8));
    if (pad < 1) bytes->push_back(static_cast<uint8_t>(v));
  }
  return true;
}

// One tensor of the graph: rank 4, strides in elements.
struct DnnSdpaTensor {
  int64_t dims[4] = {0, 0, 0, 0};
  int64_t strides[4] = {0, 0, 0, 0};
};

struct DnnSdpaLayout {
  DnnSdpaTensor q, k, v, o;
  bool has_bias = false;
  DnnSdpaTensor bias;  // the mask, dims as stored (size-1 dims broadcast by cuDNN), dense strides
};

inline DnnSdpaLayout dnn_sdpa_layout(const DnnSdpaSpec& s) {
  DnnSdpaLayout l;
  auto view = [](int64_t b, int64_t h, int64_t n, int64_t d, const int64_t* st) {
    return DnnSdpaTensor{{b, h, n, d}, {st[0], st[1], st[2], 1}};
  };
  l.q = view(s.B, s.H, s.Sq, s.D, s.qs);
  l.k = view(s.B, s.Hk, s.Sk, s.D, s.ks);
  l.v = view(s.B, s.Hk, s.Sk, s.Dv, s.vs);
  l.o = view(s.B, s.H, s.Sq, s.Dv, s.os);
  if (s.mask.size() == 4) {
    l.has_bias = true;
    int64_t st = 1;
    for (int d = 3; d >= 0; --d) {
      l.bias.dims[d] = s.mask[d];
      l.bias.strides[d] = st;
      st *= s.mask[d];
    }
  }
  return l;
}

// Why the cuDNN tactic is not offered for a spec, or empty. FP16/BF16 only; head dims multiples of 8 up to 128
// (cuDNN's Hopper/Blackwell forward surface, the common part); every row 16 bytes aligned (strides multiples of
// 8 elements: the frontend assumes 16-byte aligned tensors); a mask of rank 4 that broadcasts to [B,H,Sq,Sk] and
// is not broadcast along the keys (cuDNN's bias takes the key dimension from the tensor).
inline std::string dnn_sdpa_declined(const DnnSdpaSpec& s) {
  if (s.dt != DataType::kHALF && s.dt != DataType::kBF16) return "not float16/bfloat16";
  if (s.B <= 0 || s.H <= 0 || s.Sq <= 0 || s.Sk <= 0 || s.D <= 0 || s.Dv <= 0) return "an empty problem";
  if (s.Hk <= 0 || s.H % s.Hk != 0) return "K/V heads that do not divide the query heads";
  if (s.D % 8 || s.Dv % 8 || s.D > 128 || s.Dv > 128) return "head dims not multiples of 8 up to 128";
  int64_t st = 0;
  for (int i = 0; i < 3; ++i) st |= s.qs[i] | s.ks[i] | s.vs[i] | s.os[i];
  if (st % 8) return "strides not multiples of 8 elements";
  if (!s.mask.empty()) {
    if (s.mask.size() != 4) return "a mask not padded to rank 4";
    const int64_t full[4] = {s.B, s.H, s.Sq, s.Sk};
    for (int d = 0; d < 4; ++d)
      if (s.mask[d] != 1 && s.mask[d] != full[d]) return "a mask that does not broadcast";
    if (s.mask[3] != s.Sk) return "a mask broadcast along the keys";
  }
  return "";
}

// The layer's tactic list: our kernel's default stays first (the untuned choice), cuDNN's next so that the
// tuner's per-level limit reaches it, then our other block sizes. Nothing is added where our tensor-core kernel
// has no tactics (the tuner would take a lone candidate untimed).
inline std::vector<std::string> merge_attention_tactics(const std::vector<std::string>& own, bool offer_dnn) {
  if (!offer_dnn || own.empty()) return own;
  std::vector<std::string> v = {own[0], kDnnSdpaTactic};
  v.insert(v.end(), own.begin() + 1, own.end());
  return v;
}

// A built cuDNN SDPA graph (its chosen plan) for one spec. Layers of one context with the same spec share it.
class DnnSdpa {
 public:
  ~DnnSdpa();
  DnnSdpa(const DnnSdpa&) = delete;
  DnnSdpa& operator=(const DnnSdpa&) = delete;

  // The graph for s on this handle's device, shared with any other live layer of the same handle and spec (a
  // restored one included). kUNSUPPORTED when declined, refused by cuDNN, or needing more than max_workspace bytes.
  static Result<std::shared_ptr<DnnSdpa>> get(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace);
  // The graph for s from a stored plan (stored_plan()'s text for the same key), no compile; shared as get()'s.
  // kUNSUPPORTED when the text is not such a plan, cuDNN refuses it or it needs more than max_workspace: the
  // caller then builds.
  static Result<std::shared_ptr<DnnSdpa>> restore(cudnnContext* handle, const DnnSdpaSpec& s, const std::string& text,
                                                  size_t max_workspace);
  // Whether get() succeeds for s: asked of cuDNN once per process, device, spec and workspace limit.
  static bool supported(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace);
  // The plan for s serialized for the engine (dnn_plan_to_text of the frontend's serialized graph): the one this
  // process built for the device (each build keeps it while dnn_sdpa_store_enabled(), so the tuner's plan is not
  // compiled again), else get()'s. Empty where cuDNN cannot serialize it (the load then builds).
  static std::string stored_plan(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace);
  // dnn_sdpa_plan_key with this process's cuDNN version and the current GPU.
  static std::string plan_key(const DnnSdpaSpec& s);
  // Process-wide counts (the GPU tests read them): graphs whose plan cuDNN built (each a compile), and plans
  // restored from stored text.
  static int64_t plans_built();
  static int64_t plans_restored();

  size_t workspace_bytes() const { return workspace_; }

  // On the handle's stream (the context sets it); mask null where the spec has none.
  Status run(cudnnContext* handle, void* workspace, const void* q, const void* k, const void* v, const void* mask,
             void* o) const;

 private:
  struct Impl;
  explicit DnnSdpa(std::unique_ptr<Impl> impl);
  static Result<std::shared_ptr<DnnSdpa>> build(cudnnContext* handle, const DnnSdpaSpec& s, size_t max_workspace);
  std::unique_ptr<Impl> impl_;
  size_t workspace_ = 0;
};

}  // namespace kiln::cuda
