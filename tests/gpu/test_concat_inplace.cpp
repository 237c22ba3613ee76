// In-place Concat on the CUDA backend (concat_elimination + runtime/concat_inplace.h): concats of computed
// producers (Relu, MatMul, Gemm, Conv) along axis 0 and 1, at batch 1 (in place) and batch 2 (axis 1 copies), an
// engine-output concat, an input read again after the concat, an alias of an input read elsewhere and bound as an
// output, Reshaped inputs (always copied), FP32 and FP16, each against the CPU reference. Whether the copy was
// eliminated is read from the context's activation total: the marked engine plans exactly the concat inputs'
// bytes fewer than the same graph unmarked (they live inside the concat's output), or the same bytes when it copies.
#include <cuda_runtime.h>

#include "../unit/concat_test_graphs.h"
#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

using test::ConcatNet;

struct EngineRun {
  std::vector<Tensor> outputs;
  uint64_t activation_bytes = 0;  // ExecutionContext::activation_total_bytes() at the run's shapes
};

EngineRun run_engine(const ir::Graph& g, Backend backend, const std::vector<Tensor>& inputs, std::string* host) {
  EngineRun r;
  BuilderConfig config;
  config.set_backend(backend);
  config.clear_flag(BuilderFlag::kTF32);  // FP32 stays FP32: tight comparison
  auto engine = test::load_engine(builder::write_engine(g, config));
  if (!engine) return r;
  if (host) *host += test::host_layers(*engine);
  auto ctx = engine->create_execution_context();
  EXPECT_TRUE(ctx);
  if (!ctx) return r;
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < inputs.size(); ++i) named.emplace_back(g.inputs()[i]->name, inputs[i]);
  r.outputs = test::infer(*ctx, named);
  r.activation_bytes = ctx->activation_total_bytes();
  return r;
}

// Bytes of the marked concats' inputs: what the arena no longer holds apart when they are written in place.
uint64_t concat_input_bytes(const ir::Graph& g) {
  uint64_t b = 0;
  for (const auto& n : g.nodes())
    if (n->op_type == "Concat" && test::marked_in_place(n->attrs))
      for (const ir::Value* v : n->inputs) b += volume(ops::static_dims(v->shape)) * dtype_size(v->dtype);
  return b;
}

// Runs the net unmarked and marked on the GPU and on the CPU reference; every output within tolerance, and the
// marked engine's activations smaller by the concat inputs' bytes exactly when in_place.
void check(ConcatNet net, bool in_place) {
  SCOPED_TRACE(net.what + (in_place ? " (in place)" : " (copy)"));
  auto plain = net.g->clone();
  ASSERT_TRUE(test::mark_concats(*net.g).ok());
  const uint64_t slice_bytes = concat_input_bytes(*net.g);
  if (in_place) { ASSERT_GT(slice_bytes, 0u) << "the pass should have marked the concat"; }
  std::string host;
  EngineRun cpu = run_engine(*plain, Backend::kCPU, net.inputs, nullptr);
  EngineRun gpu_plain = run_engine(*plain, Backend::kCUDA, net.inputs, &host);
  EngineRun gpu = run_engine(*net.g, Backend::kCUDA, net.inputs, &host);
  EXPECT_TRUE(host.empty()) << "ran on the host: " << host;
  ASSERT_EQ(cpu.outputs.size(), net.g->outputs().size());
  ASSERT_EQ(gpu.outputs.size(), cpu.outputs.size());
  ASSERT_EQ(gpu_plain.outputs.size(), cpu.outputs.size());
  const bool half = net.g->inputs()[0]->dtype == DataType::kHALF;
  const double tol = half ? 1e-2 : 1e-4;
  for (size_t k = 0; k < cpu.outputs.size(); ++k) {
    expect_tensors_close(cpu.outputs[k], gpu.outputs[k], tol, tol, "marked output " + std::to_string(k));
    expect_tensors_close(cpu.outputs[k], gpu_plain.outputs[k], tol, tol, "unmarked output " + std::to_string(k));
  }
  EXPECT_EQ(gpu_plain.activation_bytes - gpu.activation_bytes, in_place ? slice_bytes : 0)
      << "activation bytes: unmarked " << gpu_plain.activation_bytes << ", marked " << gpu.activation_bytes;
}

const DataType kTypes[] = {DataType::kFLOAT, DataType::kHALF};

TEST(GpuConcatInPlace, ReluAndMatMulIntoAnEngineOutput) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1}) {
      check(test::relu_matmul(dt, 1, axis, true), true);
      check(test::relu_matmul(dt, 2, axis, true), axis == 0);
    }
}

TEST(GpuConcatInPlace, ReluAndMatMulIntoTheArena) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1, -1}) {
      check(test::relu_matmul(dt, 1, axis, false), true);
      check(test::relu_matmul(dt, 2, axis, false), axis == 0);
    }
}

TEST(GpuConcatInPlace, ThreeProducersReluMatMulGemm) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1}) {
      check(test::three_producers(dt, 1, axis), true);
      check(test::three_producers(dt, 2, axis), axis == 0);
    }
}

TEST(GpuConcatInPlace, ConvAndRelu) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1}) {
      check(test::conv_relu(dt, 1, axis), true);
      check(test::conv_relu(dt, 2, axis), axis == 0);
    }
}

TEST(GpuConcatInPlace, InputReadAfterTheConcat) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1}) {
      check(test::read_after(dt, 1, axis), true);
      check(test::read_after(dt, 2, axis), axis == 0);
    }
}

TEST(GpuConcatInPlace, AliasOfAnInputReadElsewhereAndBoundAsOutput) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1}) {
      check(test::alias_of_input(dt, 1, axis), true);
      check(test::alias_of_input(dt, 2, axis), axis == 0);
    }
}

TEST(GpuConcatInPlace, ReshapedInputsAreCopied) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t axis : {0, 1, 2}) check(test::reshaped_inputs(dt, 1, axis), false);
}

// The full CUDA build (FP16 lowering, fusions, the pass last) with a dynamic batch: one context run at batch 1 (in
// place), 2 and 3 (copies) and 1 again, each against a CPU engine of the same network.
TEST(GpuConcatInPlace, DynamicBatchThroughTheBuilder) {
  KILN_REQUIRE_GPU();
  auto build = [&](Backend backend) -> std::unique_ptr<Engine> {
    Builder builder;
    auto net = builder.create_network();
    ITensor* x = net->add_input("x", DataType::kFLOAT, {-1, 128});
    Tensor wt = random_tensor(DataType::kFLOAT, {128, 128}, 7, -0.09, 0.09);
    ITensor* wc = net->add_constant("w", DataType::kFLOAT, {128, 128}, wt.raw());
    auto a = net->add_op("Relu", {x}, {}, 1, "relu");
    auto m = net->add_op("MatMul", {x, wc}, {}, 1, "matmul");
    auto c = net->add_op("Concat", {a[0], m[0]}, {{"axis", int64_t{1}}}, 1, "concat");
    auto y = net->add_op("Sigmoid", {c[0]}, {}, 1, "sigmoid");
    EXPECT_TRUE(net->mark_output(y[0]).ok());
    auto config = builder.create_builder_config();
    config->set_backend(backend);
    if (backend == Backend::kCUDA) config->set_flag(BuilderFlag::kFP16);
    OptimizationProfile p;
    EXPECT_TRUE(p.set_shape("x", {1, 128}, {2, 128}, {4, 128}).ok());
    config->add_optimization_profile(p);
    return test::load_engine(builder.build_serialized_network(*net, *config));
  };
  auto cpu = build(Backend::kCPU);
  auto gpu = build(Backend::kCUDA);
  ASSERT_TRUE(cpu && gpu);
  int marked = 0;
  for (const auto& n : gpu->plan().nodes) marked += n.op_type == "Concat" && test::marked_in_place(n.attrs);
  EXPECT_EQ(marked, 1) << "the CUDA pipeline marks the concat";
  auto ctx = gpu->create_execution_context();
  ASSERT_TRUE(ctx);
  uint32_t seed = 40;
  for (int64_t n : {1, 2, 3, 1}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    Tensor x = random_tensor(DataType::kFLOAT, {n, 128}, seed++);
    auto want = test::infer(*cpu, {{"x", x}});
    auto got = test::infer(*ctx, {{"x", x}});
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(want[0], got[0], 1e-2, 1e-2, "y");
  }
}

// Through a CUDA graph, with the concat's output bound by the caller: the producers write into the caller's
// buffer at offsets; rebinding it to another buffer recaptures.
TEST(GpuConcatInPlace, CudaGraphIntoTheCallersBuffer) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes) {
    ConcatNet net = test::relu_matmul(dt, 1, 1, true);
    SCOPED_TRACE(net.what);
    auto want = run_engine(*net.g, Backend::kCPU, net.inputs, nullptr);
    ASSERT_EQ(want.outputs.size(), 1u);
    ASSERT_TRUE(test::mark_concats(*net.g).ok());
    BuilderConfig config;
    config.set_backend(Backend::kCUDA);
    config.clear_flag(BuilderFlag::kTF32);
    auto engine = test::load_engine(builder::write_engine(*net.g, config));
    ASSERT_TRUE(engine);
    auto ctx = engine->create_execution_context();
    ASSERT_TRUE(ctx);
    const Tensor& x = net.inputs[0];
    Tensor y(dt, want.outputs[0].shape());
    void *dx = nullptr, *dy[2] = {nullptr, nullptr};
    ASSERT_EQ(cudaMalloc(&dx, x.nbytes()), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dy[0], y.nbytes()), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&dy[1], y.nbytes()), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dx, x.raw(), x.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(ctx->set_input_shape("x", x.shape()).ok());
    ASSERT_TRUE(ctx->set_tensor_address("x", dx).ok());
    const std::string out = net.g->outputs()[0]->name;
    for (void* buf : {dy[0], dy[1], dy[0]}) {
      ASSERT_EQ(cudaMemset(buf, 0xff, y.nbytes()), cudaSuccess);  // NaNs wherever nothing is written
      ASSERT_TRUE(ctx->set_tensor_address(out, buf).ok());
      Status st = ctx->enqueue_graph(nullptr);
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_TRUE(ctx->synchronize().ok());
      ASSERT_EQ(cudaMemcpy(y.raw(), buf, y.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
      expect_tensors_close(want.outputs[0], y, dt == DataType::kHALF ? 1e-2 : 1e-4, 1e-4, "y");
    }
    for (void* p : {dx, dy[0], dy[1]}) cudaFree(p);
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
