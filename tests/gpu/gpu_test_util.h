// Cross-backend operator tests: build a one-op network, run it on the CPU reference backend and on the CUDA
// backend, and compare every output. Every test skips, with the reason, on a machine without a usable GPU.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../unit/engine_io_util.h"
#include "../unit/graph_test_util.h"
#include "builder/engine_writer.h"
#include "common/tensor.h"
#include "ir/graph.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/runtime.h"
#include "ops/layout_util.h"
#include "runtime/device_backend.h"

namespace kiln::gpu_testing {

// Null when a GPU is usable, else why not (printed by GTEST_SKIP).
inline const std::string* no_gpu_reason() {
  static std::string reason = [] {
    auto b = runtime::device_backend(Backend::kCUDA);
    if (!b.ok()) return b.status().message();
    auto d = (*b)->device_info();
    return d.ok() ? std::string() : d.status().message();
  }();
  return reason.empty() ? nullptr : &reason;
}

#define KILN_REQUIRE_GPU()                                             \
  do {                                                                 \
    if (const std::string* why = ::kiln::gpu_testing::no_gpu_reason()) \
      GTEST_SKIP() << "no CUDA GPU, GPU test skipped: " << *why;       \
  } while (0)

using test::random_tensor;

struct OpCase {
  std::string op;
  OpAttrs attrs;
  std::vector<Tensor> inputs;
  // Inputs that are engine constants (weights, axes, shapes) rather than network inputs.
  std::vector<bool> constant;
  int num_outputs = 1;
  double atol = 1e-5, rtol = 1e-5;
  // Builder flags for the CUDA build (FP16/BF16 lowering); the CPU reference always runs in FP32.
  std::vector<BuilderFlag> flags;
  // false: build the CUDA engine without TF32, so FP32 GEMMs and convolutions keep full FP32 precision.
  bool tf32 = true;
  bool allow_host_layers = false;  // false: the op must have run on the GPU
  int opset = 0;                   // default-domain opset of the network; 0: the network's default (17)
};

// Every activation the fused ops' epilogues (and the depthwise prologue) take, with typical parameters; Clip's
// bounds as given.
inline std::vector<ops::Epilogue> all_activations(float clip_lo, float clip_hi) {
  std::vector<ops::Epilogue> v;
  using A = ops::Activation;
  for (A a :
       {A::kNone, A::kRelu, A::kClip, A::kSigmoid, A::kSilu, A::kHardSwish, A::kGeluErf, A::kGeluTanh, A::kLeakyRelu}) {
    ops::Epilogue e;
    e.act = a;
    e.alpha = a == A::kHardSwish ? 1.f / 6.f : a == A::kLeakyRelu ? 0.1f : 0.f;
    e.beta = a == A::kHardSwish ? 0.5f : 0.f;
    e.lo = a == A::kClip ? clip_lo : -INFINITY;
    e.hi = a == A::kClip ? clip_hi : INFINITY;
    v.push_back(e);
  }
  return v;
}

struct QuietLogger : ILogger {
  void log(Severity, const char*) noexcept override {}
};

// Writes a graph as an engine for `backend` (no passes: the graph runs as built) and runs it; the names of the
// layers that ran on the host are appended to *host_layers when given.
inline std::vector<Tensor> run_graph(const ir::Graph& g, Backend backend, const std::vector<Tensor>& inputs,
                                     std::string* host_layers) {
  BuilderConfig config;
  config.set_backend(backend);
  config.clear_flag(BuilderFlag::kTF32);  // FP32 stays FP32, so the comparison can be tight
  auto engine = test::load_engine(builder::write_engine(g, config));
  if (!engine) return {};
  if (host_layers) *host_layers += test::host_layers(*engine);
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < inputs.size(); ++i) named.emplace_back(g.inputs()[i]->name, inputs[i]);
  return test::infer(*engine, named);
}

// The engine's first layer of type `op`, or null; a string attribute of a layer ("" where absent or not a string).
inline const runtime::PlanNode* first_node(const Engine& e, const std::string& op) {
  for (const auto& pn : e.plan().nodes)
    if (pn.op_type == op) return &pn;
  return nullptr;
}
inline std::string string_attr(const runtime::PlanNode* n, const char* name) {
  const Attribute* a = n ? n->attrs.find(name) : nullptr;
  return a && a->type() == AttrType::kSTRING ? a->s() : "";
}

// The CUDA result of graph g, with what the run wrote to stderr in *err (a tactic's fallback warning); nothing may
// run on the host.
inline std::vector<Tensor> run_capturing(const ir::Graph& g, const std::vector<Tensor>& inputs, std::string* err) {
  std::string host;
  ::testing::internal::CaptureStderr();
  std::vector<Tensor> got = run_graph(g, Backend::kCUDA, inputs, &host);
  *err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(host, "");
  return got;
}

// An engine's outputs for named inputs (test::infer), with what the run wrote to stderr in *err (a tactic's
// fallback warning, a stored plan's log line).
inline std::vector<Tensor> infer_capturing(const Engine& engine,
                                           const std::vector<std::pair<std::string, Tensor>>& inputs,
                                           std::string* err) {
  ::testing::internal::CaptureStderr();
  std::vector<Tensor> got = test::infer(engine, inputs);
  *err = ::testing::internal::GetCapturedStderr();
  return got;
}

// Element by element: |gpu - cpu| <= atol + rtol * |cpu| (equal infinities too; NaN against NaN only when
// nans_match: ops whose reference gives NaN on purpose).
inline void expect_tensors_close(const Tensor& cpu, const Tensor& gpu, double atol, double rtol,
                                 const std::string& what, bool nans_match = false) {
  ASSERT_EQ(cpu.shape(), gpu.shape()) << what;
  Tensor a = cpu.cast(DataType::kDOUBLE), b = gpu.cast(DataType::kDOUBLE);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.data<double>()[i], y = b.data<double>()[i];
    bool ok =
        (nans_match && std::isnan(x) && std::isnan(y)) || x == y || std::fabs(x - y) <= atol + rtol * std::fabs(x);
    if (!ok && bad++ == 0) first = i;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.numel() << " elements differ; first at " << first << ": cpu "
                    << (first >= 0 ? a.data<double>()[first] : 0) << " gpu "
                    << (first >= 0 ? b.data<double>()[first] : 0);
}

// A one-output graph on the CPU reference and on the GPU; every layer must have run on the GPU.
// Adds a graph input "z" of y's type and shape as FusedConv node n's residual (Z), after an empty bias (B) where
// n has none; returns it.
inline ir::Value* add_residual_input(ir::Graph& g, ir::Node* n) {
  ir::Value* z = g.add_value("z");
  z->dtype = n->outputs[0]->dtype;
  z->shape = n->outputs[0]->shape;
  z->rank_known = true;
  g.inputs().push_back(z);
  if (n->inputs.size() == 2) n->inputs.push_back(nullptr);  // Z without B
  n->inputs.push_back(z);
  g.rebuild_links();
  return z;
}

// The graph's `outputs` outputs on the CPU reference and on the GPU (every layer on the GPU, else a failure).
inline std::pair<std::vector<Tensor>, std::vector<Tensor>> run_on_both_all(const ir::Graph& g,
                                                                           const std::vector<Tensor>& inputs,
                                                                           size_t outputs) {
  std::string host;
  auto cpu = run_graph(g, Backend::kCPU, inputs, nullptr);
  auto gpu = run_graph(g, Backend::kCUDA, inputs, &host);
  EXPECT_TRUE(host.empty()) << "ran on the host: " << host;
  EXPECT_EQ(cpu.size(), outputs);
  EXPECT_EQ(gpu.size(), outputs);
  if (cpu.size() != outputs || gpu.size() != outputs) return {};
  return {cpu, gpu};
}

inline std::pair<Tensor, Tensor> run_on_both(const ir::Graph& g, const std::vector<Tensor>& inputs) {
  auto [cpu, gpu] = run_on_both_all(g, inputs, 1);
  if (cpu.empty()) return {};
  return {cpu[0], gpu[0]};
}

inline std::vector<Tensor> run_case(const OpCase& c, Backend backend, std::string* host_layers) {
  Builder builder;
  auto net = builder.create_network();
  if (c.opset) net->graph().set_opset(c.opset);
  std::vector<ITensor*> ins;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Tensor& t = c.inputs[i];
    std::string name = "in" + std::to_string(i);
    bool is_const = i < c.constant.size() && c.constant[i];
    if (!t.defined()) {
      ins.push_back(nullptr);
      continue;
    }
    ins.push_back(is_const ? net->add_constant(name, t.dtype(), t.shape(), t.raw())
                           : net->add_input(name, t.dtype(), t.shape()));
    EXPECT_NE(ins.back(), nullptr) << net->last_error().message();
  }
  auto outs = net->add_op(c.op, ins, c.attrs, c.num_outputs, "op");
  EXPECT_EQ(outs.size(), static_cast<size_t>(c.num_outputs)) << net->last_error().message();
  for (auto* o : outs) EXPECT_TRUE(net->mark_output(o).ok());
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  if (backend == Backend::kCUDA)
    for (auto f : c.flags) config->set_flag(f);
  if (backend == Backend::kCUDA && !c.tf32) config->clear_flag(BuilderFlag::kTF32);
  auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
  if (!engine) return {};
  if (backend == Backend::kCUDA && host_layers) *host_layers += test::host_layers(*engine);
  return test::infer(*engine, test::numbered_inputs(c.inputs, c.constant));
}

// Runs the case on both backends and compares element by element: |gpu - cpu| <= atol + rtol * |cpu|.
inline void expect_backends_agree(const OpCase& c) {
  std::string host_layers;
  std::vector<Tensor> cpu = run_case(c, Backend::kCPU, nullptr);
  std::vector<Tensor> gpu = run_case(c, Backend::kCUDA, &host_layers);
  if (!c.allow_host_layers) { EXPECT_TRUE(host_layers.empty()) << c.op << " ran on the host: " << host_layers; }
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t k = 0; k < cpu.size(); ++k) {
    ASSERT_EQ(cpu[k].shape(), gpu[k].shape()) << c.op << " output " << k;
    ASSERT_EQ(cpu[k].dtype(), gpu[k].dtype()) << c.op << " output " << k;
    expect_tensors_close(cpu[k], gpu[k], c.atol, c.rtol, c.op + " output " + std::to_string(k), true);
  }
}

// A network precision for whole-network GPU tests, with its tolerances against the CPU reference.
struct Precision {
  const char* name;
  std::vector<BuilderFlag> flags;
  double atol, rtol;
};
// FP32 runs without TF32 (the reference's accuracy); FP16/BF16 lower the whole network.
inline const Precision kPrecisions[] = {
    {"fp32", {}, 1e-3, 1e-3}, {"fp16", {BuilderFlag::kFP16}, 3e-2, 2e-2}, {"bf16", {BuilderFlag::kBF16}, 1.5e-1, 5e-2}};

// A process-wide count the CUDA backend keeps (DeviceBackend::counters(): "cudnn_conv.plans_restored",
// "cudnn_sdpa.plans_built", "tuner.graph_timing_fallbacks"...); -1 when the backend or the count is absent.
inline int64_t backend_counter(const char* name) {
  auto b = runtime::device_backend(Backend::kCUDA);
  if (!b.ok()) return -1;
  const auto c = (*b)->counters();
  const auto it = c.find(name);
  return it == c.end() ? -1 : it->second;
}

}  // namespace kiln::gpu_testing
