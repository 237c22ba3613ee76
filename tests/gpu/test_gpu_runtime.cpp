// CUDA runtime tests: engine metadata, memory planning, aliasing, host fallback, errors on bad bindings.
#include <cuda_runtime.h>

#include <thread>

#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

TEST(GpuRuntime, ReshapeIsAnAlias) {
  KILN_REQUIRE_GPU();
  OpCase c;
  c.op = "Reshape";
  c.inputs = {random_tensor(DataType::kFLOAT, {2, 3, 4}, 1), Tensor::from_vector<int64_t>({2}, {4, -1})};
  c.constant = {false, true};
  expect_backends_agree(c);
}

TEST(GpuRuntime, HostFallbackGivesTheReferenceResult) {
  KILN_REQUIRE_GPU();
  // An operator without a GPU kernel runs on the host inside a GPU engine.
  OpCase c;
  c.op = "Hardmax";
  c.attrs = {{"axis", int64_t{1}}};
  c.inputs = {random_tensor(DataType::kFLOAT, {3, 5}, 2)};
  c.allow_host_layers = true;
  expect_backends_agree(c);
}

}  // namespace
}  // namespace kiln::gpu_testing

namespace kiln::gpu_testing {
namespace {

// x[N,8] -> Relu -> Reshape -> output, built for the CUDA backend with a dynamic batch.
std::unique_ptr<Engine> small_engine(std::string* err, int max_batch = 64) {
  Builder builder;
  auto net = builder.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {-1, 8});
  auto r = net->add_op("Relu", {x}, {}, 1, "relu");
  int64_t shape[2] = {-1, 4};
  ITensor* s = net->add_constant("shape", DataType::kINT64, {2}, shape);
  auto y = net->add_op("Reshape", {r[0], s}, {}, 1, "reshape");
  EXPECT_TRUE(net->mark_output(y[0]).ok());
  auto config = builder.create_builder_config();
  config->set_backend(Backend::kCUDA);
  OptimizationProfile p;
  EXPECT_TRUE(p.set_shape("x", {1, 8}, {4, 8}, {max_batch, 8}).ok());
  config->add_optimization_profile(p);
  auto blob = builder.build_serialized_network(*net, *config);
  if (!blob.ok()) return *err = blob.status().message(), nullptr;
  Runtime rt;
  auto e = rt.deserialize_engine(blob->data(), blob->size());
  if (!e.ok()) return *err = e.status().message(), nullptr;
  return std::move(e).value();
}

TEST(GpuRuntime, EngineRecordsTheGpuAndRejectsAnother) {
  KILN_REQUIRE_GPU();
  std::string err;
  auto e = small_engine(&err);
  ASSERT_TRUE(e) << err;
  EXPECT_FALSE(e->metadata("gpu.name").empty());
  EXPECT_EQ(e->metadata("gpu.compute_capability").find('.') != std::string::npos, true);
  EXPECT_FALSE(e->metadata("gpu.cudnn").empty());
  auto backend = runtime::device_backend(Backend::kCUDA);
  ASSERT_TRUE(backend.ok());
  runtime::EnginePlan other = e->plan();
  other.metadata["gpu.compute_capability"] = "8.0";
  other.metadata["gpu.name"] = "NVIDIA A100-SXM4-80GB";
  Status st = (*backend)->check_engine(other);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("engine was built for 'NVIDIA A100-SXM4-80GB' (compute capability 8.0)"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("rebuild the engine"), std::string::npos);
  other = e->plan();
  other.metadata["gpu.cudnn"] = "8.9.7";
  st = (*backend)->check_engine(other);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cudnn 8.9.7"), std::string::npos) << st.message();
}

TEST(GpuRuntime, DeviceBuffersStreamsGraphsAndErrors) {
  KILN_REQUIRE_GPU();
  std::string err;
  auto e = small_engine(&err);
  ASSERT_TRUE(e) << err;
  auto ctx = e->create_execution_context();
  ASSERT_TRUE(ctx);
  EXPECT_GT(ctx->activation_arena_bytes(), 0u);
  const int n = 6;
  std::vector<float> x(n * 8), y(n * 8, -1.f);
  for (int i = 0; i < n * 8; ++i) x[i] = static_cast<float>(i % 7) - 3.f;
  void *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, y.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE(ctx->set_input_shape("x", {n, 8}).ok());
  const std::string out = e->get_tensor_name(1);
  ASSERT_TRUE(ctx->set_tensor_address("x", dx, x.size() * 4).ok());
  // Unbound output: refused before any launch.
  Status st = ctx->enqueue(nullptr);
  EXPECT_NE(st.message().find("output '" + out + "' has no bound device address"), std::string::npos) << st.message();
  // A buffer too small for the bound shape.
  ASSERT_TRUE(ctx->set_tensor_address(out, dy, 16).ok());
  st = ctx->enqueue(nullptr);
  EXPECT_NE(st.message().find("needs 192 bytes"), std::string::npos) << st.message();
  ASSERT_TRUE(ctx->set_tensor_address(out, dy, y.size() * 4).ok());
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  for (bool graph : {false, true, true}) {
    ASSERT_EQ(cudaMemset(dy, 0xff, y.size() * 4), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    st = graph ? ctx->enqueue_graph(s) : ctx->enqueue(s);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < n * 8; ++i) ASSERT_EQ(y[i], std::max(x[i], 0.f)) << i << (graph ? " graph" : "");
  }
  auto yshape = ctx->get_tensor_shape(out);
  ASSERT_TRUE(yshape.ok());
  EXPECT_EQ(*yshape, (Dims{n * 2, 4}));
  // A host pointer where a device buffer belongs.
  ASSERT_TRUE(ctx->set_tensor_address(out, y.data(), y.size() * 4).ok());
  st = ctx->enqueue(nullptr);
  EXPECT_NE(st.message().find("'" + out + "'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("not GPU memory"), std::string::npos) << st.message();
  cudaStreamDestroy(s);
  cudaFree(dx);
  cudaFree(dy);
}

TEST(GpuRuntime, ContextsOnStreamsInParallelAgree) {
  KILN_REQUIRE_GPU();
  std::string err;
  auto e = small_engine(&err);
  ASSERT_TRUE(e) << err;
  constexpr int kContexts = 4, kRuns = 20;
  std::vector<std::string> failures(kContexts);
  std::vector<std::thread> threads;
  for (int c = 0; c < kContexts; ++c) {
    threads.emplace_back([&, c] {
      auto ctx = e->create_execution_context();
      if (!ctx) return void(failures[c] = "no context");
      for (int r = 0; r < kRuns; ++r) {
        int n = 1 + (c + r) % 8;
        HostTensor h;
        h.dims = {n, 8};
        h.data.resize(n * 8 * 4);
        auto* f = reinterpret_cast<float*>(h.data.data());
        for (int i = 0; i < n * 8; ++i) f[i] = static_cast<float>((i * 13 + c + r) % 11) - 5.f;
        auto out = ctx->infer({{"x", h}});
        if (!out.ok()) return void(failures[c] = out.status().message());
        const auto& y = (*out)[0].second;
        if (y.dims != Dims{n * 2, 4}) return void(failures[c] = "shape " + dims_to_string(y.dims));
        auto* g = reinterpret_cast<const float*>(y.data.data());
        for (int i = 0; i < n * 8; ++i)
          if (g[i] != std::max(f[i], 0.f)) return void(failures[c] = "value at " + std::to_string(i));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int c = 0; c < kContexts; ++c) EXPECT_EQ(failures[c], "") << "context " << c;
}

struct CountingProfiler : IProfiler {
  std::vector<std::string> layers;
  void report_layer_time(const char* name, float ms) noexcept override {
    if (ms >= 0) layers.emplace_back(name);
  }
};

TEST(GpuRuntime, ProfilerGetsEveryDeviceLayer) {
  KILN_REQUIRE_GPU();
  std::string err;
  auto e = small_engine(&err);
  ASSERT_TRUE(e) << err;
  auto ctx = e->create_execution_context();
  CountingProfiler prof;
  ctx->set_profiler(&prof);
  HostTensor h;
  h.dims = {2, 8};
  h.data.assign(64, 0);
  ASSERT_TRUE(ctx->infer({{"x", h}}).ok());
  EXPECT_EQ(prof.layers, (std::vector<std::string>{"relu", "reshape"}));
}

// Re-enters the context it profiles: the in-use flag must refuse the nested run, not let it race.
struct ReenteringProfiler : IProfiler {
  ExecutionContext* ctx = nullptr;
  Status nested;
  int calls = 0;
  void report_layer_time(const char*, float) noexcept override {
    if (calls++ == 0) nested = ctx->enqueue(nullptr);
  }
};

TEST(GpuRuntime, NullTooSmallAndBusyBindingsAreRefusedBeforeLaunch) {
  KILN_REQUIRE_GPU();
  std::string err;
  auto e = small_engine(&err);
  ASSERT_TRUE(e) << err;
  auto ctx = e->create_execution_context();
  const std::string out = e->get_tensor_name(1);
  const int n = 64;  // output: 64*8 floats = 2048 bytes
  ASSERT_TRUE(ctx->set_input_shape("x", {n, 8}).ok());
  constexpr size_t kAlloc = 2u << 20;  // a multiple of any allocation granularity, so its end is exact
  void *dx = nullptr, *block = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, n * 8 * 4), cudaSuccess);
  ASSERT_EQ(cudaMemset(dx, 0, n * 8 * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&block, kAlloc), cudaSuccess);
  ASSERT_TRUE(ctx->set_tensor_address("x", dx).ok());

  ASSERT_TRUE(ctx->set_tensor_address(out, nullptr).ok());
  Status st = ctx->enqueue(nullptr);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("output '" + out + "' has no bound device address"), std::string::npos) << st.message();

  // 64 bytes before the end of a device allocation, with no size given: the allocation's end catches it.
  void* tail = static_cast<uint8_t*>(block) + kAlloc - 64;
  ASSERT_TRUE(ctx->set_tensor_address(out, tail).ok());
  st = ctx->enqueue(nullptr);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("output '" + out + "' needs 2048 bytes"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("ends 64 bytes after the bound address"), std::string::npos) << st.message();

  // Enough room: runs, and a profiler callback re-entering the context is refused while it runs.
  ASSERT_TRUE(ctx->set_tensor_address(out, block).ok());
  ReenteringProfiler prof;
  prof.ctx = ctx.get();
  ctx->set_profiler(&prof);
  st = ctx->enqueue(nullptr);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_TRUE(ctx->synchronize().ok());
  EXPECT_GT(prof.calls, 0);
  EXPECT_EQ(prof.nested.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(prof.nested.message().find("already running"), std::string::npos) << prof.nested.message();
  ctx->set_profiler(nullptr);
  EXPECT_TRUE(ctx->execute().ok());  // released after the run
  cudaFree(dx);
  cudaFree(block);
}

}  // namespace
}  // namespace kiln::gpu_testing
