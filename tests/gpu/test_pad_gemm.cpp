// GPU tests of pad_gemm_width and kiln::Unpad: the Unpad kernel alone (every type pair, the vector path and the
// fallback, tiles spanning rows, grid-stride steps), gpt2's lm_head timed both ways (padded + Unpad, the odd-width
// CUTLASS GEMM), and lm_head-like networks built through the CUDA pipeline in FP32/FP16/BF16, against the CPU backend
// (whose pipeline never pads).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "../unit/engine_test_util.h"
#include "backends/cuda/gemm_tactics.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "ops/op_util.h"
#include "passes/shape_inference.h"

namespace kiln::gpu_testing {
namespace {

// Whether the CUDA backend stores odd-width rows with its CUTLASS kernels (a build with them, KILN_CUTLASS not 0).
bool odd_width_gemm() {
  auto b = runtime::device_backend(Backend::kCUDA);
  return b.ok() && (*b)->odd_width_gemm();
}

// ---- kiln::Unpad alone ----

// x [rows, pitch] of in_dt (a graph input) -> Unpad(width, to) -> y; exact: both sides slice and convert alike.
void expect_unpad_agrees(DataType in_dt, DataType to, std::vector<int64_t> lead, int64_t pitch, int64_t width,
                         bool set_to = true) {
  SCOPED_TRACE(std::string(dtype_name(in_dt)) + " -> " + dtype_name(to) + " pitch " + std::to_string(pitch) +
               " width " + std::to_string(width));
  ir::Graph g;
  std::vector<int64_t> dims = lead;
  dims.push_back(pitch);
  ir::Value* x = test::add_input(g, "x", in_dt, ops::shape_from_dims(dims));
  Attributes a;
  a.set("width", width);
  if (set_to) a.set("to", ops::onnx_code_of(to));
  ir::Node* n = g.add_node("Unpad", "unpad", {x}, {"y"}, a, 1, "kiln");
  ASSERT_TRUE(passes::infer_node(g, *n).ok());
  g.outputs().push_back(n->outputs[0]);
  auto [cpu, gpu] = run_on_both(g, {random_tensor(in_dt, dims, 21, -300, 300)});
  ASSERT_EQ(gpu.dtype(), to);
  expect_tensors_close(cpu, gpu, 0, 0, "Unpad");
}

TEST(GpuPadGemm, UnpadKernelEveryTypePair) {
  KILN_REQUIRE_GPU();
  const DataType kTypes[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
  for (DataType in : kTypes)
    for (DataType to : kTypes) {
      // The aligned pitch pad_gemm_width makes (vector path), and 64-element rows.
      const int64_t e = 16 / static_cast<int64_t>(dtype_size(in));
      expect_unpad_agrees(in, to, {64}, (1001 + e - 1) / e * e, 1001);
      expect_unpad_agrees(in, to, {3, 7}, 5056, 5001);
    }
  expect_unpad_agrees(DataType::kHALF, DataType::kHALF, {64}, 1008, 1001, false);  // no 'to': X's type
}

TEST(GpuPadGemm, UnpadKernelShapes) {
  KILN_REQUIRE_GPU();
  // gpt2's width: 64 rows of 50304 halves are more tiles than the grid has blocks (grid-stride steps).
  expect_unpad_agrees(DataType::kHALF, DataType::kFLOAT, {64}, 50304, 50257);
  expect_unpad_agrees(DataType::kFLOAT, DataType::kFLOAT, {64}, 50260, 50257);
  // Narrow pitches: one tile spans many rows.
  expect_unpad_agrees(DataType::kHALF, DataType::kFLOAT, {1000}, 8, 5);
  expect_unpad_agrees(DataType::kFLOAT, DataType::kHALF, {333}, 4, 1);
  expect_unpad_agrees(DataType::kHALF, DataType::kFLOAT, {17}, 16, 16);
  // 2-byte types both ways: whole 16-byte output vectors gathered from two input vectors (every offset in the
  // vector occurs across rows of an odd width), the row-crossing vectors and a partial last vector.
  expect_unpad_agrees(DataType::kHALF, DataType::kHALF, {64}, 50304, 50257);
  expect_unpad_agrees(DataType::kBF16, DataType::kHALF, {7}, 64, 57);
  expect_unpad_agrees(DataType::kHALF, DataType::kBF16, {5}, 16, 9);
  expect_unpad_agrees(DataType::kHALF, DataType::kHALF, {9}, 8, 8);
  expect_unpad_agrees(DataType::kBF16, DataType::kBF16, {33}, 8, 7);  // narrower than a vector: the tiled kernel
  // A pitch that is no whole number of 16-byte vectors: the scalar fallback.
  expect_unpad_agrees(DataType::kHALF, DataType::kFLOAT, {37}, 1003, 1001);
  expect_unpad_agrees(DataType::kBF16, DataType::kBF16, {5, 9}, 77, 70);
}

// ---- gpt2's lm_head: padded GEMM + Unpad against the odd-width CUTLASS GEMM ----

// gpt2's lm_head at b32 (4096 rows, K 768, 50257 halves a row), float16, timed alone:
//   one GEMM (odd ld): cuBLASLt's first choice writing rows of 50257 (what runs without the CUTLASS kernels);
//   padded:            cuBLASLt's first choice writing 50264-element rows (pad_gemm_width's padded GEMM);
//   unpad:             kiln::Unpad of those rows to 50257 (the padded route's second layer);
//   odd c1 / c4:       the CUTLASS odd-width kernels (pad_gemm_width's odd_gemm layer), B [50257, 768].
// An H100 timed (bench/NOTES.md): padded 0.47 ms + Unpad 0.27, odd c1 0.57, c4 0.58, odd ld 3.1. Prints the figures; checks the
// odd-width outputs against the padded GEMM's on every row.
TEST(GpuPadGemm, OddWidthLmHeadTimes) {
  KILN_REQUIRE_GPU();
  if (!odd_width_gemm()) GTEST_SKIP() << "this build has no CUTLASS kernels (make cutlass)";
  const int64_t m = 4096, k = 768, w = 50257, pitch = 50264;
  const Tensor a = random_tensor(DataType::kHALF, {m, k}, 71, -1, 1);
  const Tensor bw = random_tensor(DataType::kHALF, {w, k}, 72, -0.05, 0.05);
  // B [w + zeros_below, k] (zeros_below = pitch - w: the padded GEMM's), with a forced tactic where one is named.
  auto gemm = [&](int64_t zeros_below, const std::string& tactic = "") {
    auto g = std::make_unique<ir::Graph>();
    ir::Value* x = test::add_input(*g, "a", DataType::kHALF, ops::shape_from_dims({m, k}));
    Tensor b(DataType::kHALF, {w + zeros_below, k});
    std::memcpy(b.raw(), bw.raw(), bw.nbytes());
    Attributes at;
    at.set("trans_b", int64_t{1});
    if (!tactic.empty()) at.set("kiln.tactic", tactic);
    ir::Node* n = g->add_node("FusedMatMul", "lm_head", {x, g->add_constant("b", std::move(b))}, {"y"}, at, 1, "kiln");
    EXPECT_TRUE(passes::infer_node(*g, *n).ok());
    g->outputs().push_back(n->outputs[0]);
    return g;
  };
  auto unpad = [&]() {
    auto g = std::make_unique<ir::Graph>();
    ir::Value* x = test::add_input(*g, "y_padded", DataType::kHALF, ops::shape_from_dims({m, pitch}));
    Attributes at;
    at.set("width", w);
    ir::Node* n = g->add_node("Unpad", "lm_head_unpad", {x}, {"y"}, at, 1, "kiln");
    EXPECT_TRUE(passes::infer_node(*g, *n).ok());
    g->outputs().push_back(n->outputs[0]);
    return g;
  };
  const Timed one = time_on_gpu(*gemm(0, "lt_heur0"), {a}, 5);
  const Timed pad = time_on_gpu(*gemm(pitch - w), {a}, 20);
  const Timed unp = time_on_gpu(*unpad(), {pad.y}, 20);
  const Timed odd1 = time_on_gpu(*gemm(0, cuda::cutlass_odd_tactic_name(1)), {a}, 20);
  const Timed odd4 = time_on_gpu(*gemm(0, cuda::cutlass_odd_tactic_name(4)), {a}, 20);
  std::printf(
      "ODDGEMM lm_head b32 fp16: one GEMM (odd ld) %.1f us, padded %.1f us + unpad %.1f us = %.1f us, "
      "CUTLASS odd c1 %.1f us, c4 %.1f us\n",
      one.us, pad.us, unp.us, pad.us + unp.us, odd1.us, odd4.us);
  ASSERT_EQ(pad.y.shape(), (std::vector<int64_t>{m, pitch}));
  const uint16_t* yp = pad.y.data<uint16_t>();
  for (const Timed* t : {&odd1, &odd4, &one, &unp}) {
    ASSERT_EQ(t->y.shape(), (std::vector<int64_t>{m, w}));
    const uint16_t* y = t->y.data<uint16_t>();
    int64_t bad = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < w; ++c) {
        const double u = half_to_float(y[r * w + c]), v = half_to_float(yp[r * pitch + c]);
        bad += std::fabs(u - v) > 1e-2 + 1e-2 * std::fabs(v);
      }
    EXPECT_EQ(bad, 0) << "of " << m * w << " elements";
  }
}

// ---- lm_head-like networks through the builder ----

using BuildFn = std::function<ir::Value*(ir::Graph& g, ir::Value* x)>;

ir::Value* node(ir::Graph& g, const std::string& op, std::vector<ir::Value*> in, Attributes a = {}, int opset = 17) {
  ir::Node* n = g.add_node(op, g.unique_node_name(op), in, {""}, std::move(a), opset);
  Status st = passes::infer_node(g, *n);
  EXPECT_TRUE(st.ok()) << op << ": " << st.message();
  return n->outputs[0];
}

ir::Value* weight(ir::Graph& g, std::vector<int64_t> shape, uint32_t seed, double scale) {
  return g.add_constant("w" + std::to_string(seed), random_tensor(DataType::kFLOAT, shape, seed, -scale, scale));
}

// The network's output on `backend`; *ops gets the engine's layer types.
Tensor run_net(const BuildFn& build, const Tensor& x, Backend backend, const std::vector<BuilderFlag>& flags,
               std::vector<std::string>* ops) {
  Builder builder;
  auto net = builder.create_network();
  EXPECT_NE(net->add_input("x", x.dtype(), x.shape()), nullptr);
  ir::Value* y = build(net->graph(), net->graph().find_value("x"));
  ITensor* t = net->find_tensor(y->name);
  EXPECT_NE(t, nullptr);
  if (!t || !net->mark_output(t).ok()) return {};
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  if (backend == Backend::kCUDA) {
    config->clear_flag(BuilderFlag::kTF32);
    for (auto f : flags) config->set_flag(f);
  }
  auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
  if (!engine) return {};
  for (const auto& n : engine->plan().nodes) ops->push_back(n.op_type);
  if (backend == Backend::kCUDA) { EXPECT_EQ(test::host_layers(*engine), "") << "layers ran on the host"; }
  auto out = test::infer(*engine, {{"x", x}});
  EXPECT_EQ(out.size(), 1u);
  return out.empty() ? Tensor() : out[0];
}

// The network in each precision: the CUDA engine pads (an Unpad layer; with casts >= 0, that many Cast layers left
// besides the input's), and its float32 output matches the CPU backend's. odd_reduced: a GEMM that only multiplies
// and whose output no Cast reads; in FP16/BF16 with the CUTLASS kernels built it keeps its odd width (odd_gemm: no
// Unpad, a FusedMatMul with a cutlass_odd tactic).
void expect_padded_agrees(const BuildFn& build, const Tensor& x, int casts = 0, bool odd_reduced = false) {
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    std::vector<std::string> cpu_ops, gpu_ops;
    Tensor cpu = run_net(build, x, Backend::kCPU, {}, &cpu_ops);
    Tensor gpu = run_net(build, x, Backend::kCUDA, pr.flags, &gpu_ops);
    const bool odd = odd_reduced && !pr.flags.empty() && odd_width_gemm();
    EXPECT_EQ(std::count(gpu_ops.begin(), gpu_ops.end(), "Unpad"), odd ? 0 : 1)
        << (odd ? "pad_gemm_width padded a product the odd-width kernels take" : "pad_gemm_width did not pad");
    EXPECT_EQ(std::count(cpu_ops.begin(), cpu_ops.end(), "Unpad"), 0) << "the CPU pipeline padded";
    // FP16/BF16: the output's Cast back to float32 is Unpad's (the input's lowering Cast stays a layer of its own).
    if (!pr.flags.empty() && casts >= 0) {
      EXPECT_EQ(
          std::count(gpu_ops.begin(), gpu_ops.end(), "Cast") + std::count(gpu_ops.begin(), gpu_ops.end(), "Pointwise"),
          1 + casts);
    }
    ASSERT_TRUE(cpu.defined() && gpu.defined());
    ASSERT_EQ(gpu.dtype(), DataType::kFLOAT);
    expect_tensors_close(cpu, gpu, pr.atol, pr.rtol, "output");
  }
}

// x [64, 64] x W [64, N]: gpt2's lm_head (no bias) at a test's size, and the widths 1001 (16-byte padding) and
// 50257 (gpt2's vocabulary, padded to 64 elements).
TEST(GpuPadGemm, LmHeadOddWidth) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {1001, 50257}) {
    SCOPED_TRACE("N = " + std::to_string(n));
    expect_padded_agrees(
        [n](ir::Graph& g, ir::Value* x) {
          return node(g, "MatMul", {x, weight(g, {64, n}, 2, 0.2)});
        },
        random_tensor(DataType::kFLOAT, {64, 64}, 1));
  }
}

// With a bias and with an activation in the GEMM's epilogue (the bias padded too), on a batched A [2, 32, 64].
TEST(GpuPadGemm, BiasAndActivation) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {1001, 50257}) {
    for (const char* act : {"none", "relu", "gelu"}) {
      SCOPED_TRACE("N = " + std::to_string(n) + " " + act);
      const std::string a = act;
      expect_padded_agrees(
          [n, a](ir::Graph& g, ir::Value* x) {
            ir::Value* h = node(g, "Add", {node(g, "MatMul", {x, weight(g, {64, n}, 3, 0.2)}), weight(g, {n}, 4, 1)});
            if (a == "relu") return node(g, "Relu", {h});
            if (a == "gelu") return node(g, "Gelu", {h}, {}, 20);
            return h;
          },
          random_tensor(DataType::kFLOAT, {2, 32, 64}, 5));
    }
  }
}

// The compacted value feeds a Tanh (not a Cast): Unpad keeps the GEMM's type and the Tanh reads it (in FP16/BF16 a
// Pointwise kernel with the output's Cast). In FP16/BF16 with the CUTLASS kernels, the odd-width GEMM writes the
// 1001-element rows itself (and at gpt2's width, 50257, with 37 rows: partial tiles both ways).
TEST(GpuPadGemm, CompactValueFeedsAnotherLayer) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {1001, 50257}) {
    SCOPED_TRACE("N = " + std::to_string(n));
    expect_padded_agrees(
        [n](ir::Graph& g, ir::Value* x) {
          return node(g, "Tanh", {node(g, "MatMul", {x, weight(g, {64, n}, 6, 0.1)})});
        },
        random_tensor(DataType::kFLOAT, {n == 1001 ? 64 : 37, 64}, 7), -1, true);
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
