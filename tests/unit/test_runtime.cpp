// Runtime tests: Engine queries, ExecutionContext shapes/bindings/profiles, execution, and concurrent contexts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "engine_test_util.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "runtime/engine_plan.h"

using namespace kiln;
using namespace kiln::test;

namespace {

std::unique_ptr<Engine> load_test_engine() {
  auto b = build_test_engine();
  Runtime rt;
  auto e = rt.deserialize_engine(b.data(), b.size());
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

bool contains(const Status& st, const std::string& s) { return st.message().find(s) != std::string::npos; }

}  // namespace

TEST(Runtime, EngineQueries) {
  auto e = load_test_engine();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->num_io_tensors(), 5);
  EXPECT_EQ(e->get_tensor_name(0), "x");
  EXPECT_EQ(e->get_tensor_name(1), "y");
  EXPECT_EQ(e->get_tensor_name(99), "");
  EXPECT_EQ(e->get_tensor_mode("x"), TensorIOMode::kINPUT);
  EXPECT_EQ(e->get_tensor_mode("mask"), TensorIOMode::kOUTPUT);
  EXPECT_EQ(e->get_tensor_mode("t"), TensorIOMode::kNONE);
  EXPECT_EQ(e->get_tensor_dtype("mask"), DataType::kBOOL);
  EXPECT_EQ(e->get_tensor_dtype("b_out"), DataType::kINT8);
  EXPECT_EQ(e->get_tensor_shape("x"), (Dims{-1, 4}));
  EXPECT_EQ(e->get_tensor_shape("w_out"), (Dims{2, 3}));
  EXPECT_EQ(e->num_layers(), 4);
  EXPECT_EQ(e->backend(), Backend::kCPU);
  EXPECT_EQ(e->kiln_version(), kiln_version_string());
  ASSERT_EQ(e->num_optimization_profiles(), 1);
  Dims mn, opt, mx;
  ASSERT_TRUE(e->get_profile_shape("x", 0, &mn, &opt, &mx).ok());
  EXPECT_EQ(mn, (Dims{1, 4}));
  EXPECT_EQ(opt, (Dims{8, 4}));
  EXPECT_EQ(mx, (Dims{32, 4}));
  EXPECT_FALSE(e->get_profile_shape("x", 1, &mn, &opt, &mx).ok());
  EXPECT_FALSE(e->get_profile_shape("y", 0, &mn, &opt, &mx).ok());
}

TEST(Runtime, SerializeReturnsTheBytesAndReloads) {
  auto b = build_test_engine();
  Runtime rt;
  auto e = rt.deserialize_engine(b.data(), b.size());
  ASSERT_TRUE(e.ok());
  auto again = (*e)->serialize();
  EXPECT_EQ(again, b);
  std::string path = ::testing::TempDir() + "kiln_runtime_test.engine";
  {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(again.data()), again.size());
  }
  auto e2 = rt.load_engine_file(path);
  ASSERT_TRUE(e2.ok()) << e2.status().to_string();
  EXPECT_EQ((*e2)->num_layers(), 4);
  std::remove(path.c_str());
  auto missing = rt.load_engine_file(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kIoError);
}

TEST(Runtime, InferRunsTheGraph) {
  auto e = load_test_engine();
  ASSERT_TRUE(e);
  auto ctx = e->create_execution_context();
  std::vector<float> xv = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  auto out = ctx->infer({{"x", host_f32({3, 4}, xv)}});
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  ASSERT_EQ(out->size(), 4u);
  EXPECT_EQ((*out)[0].first, "y");
  EXPECT_EQ((*out)[0].second.dims, (Dims{3, 4}));
  EXPECT_EQ(to_f32((*out)[0].second), xv);
  EXPECT_EQ((*out)[1].first, "mask");
  EXPECT_EQ((*out)[1].second.dtype, DataType::kBOOL);
  EXPECT_EQ((*out)[1].second.data, std::vector<uint8_t>(12, 1));
  EXPECT_EQ(to_f32((*out)[2].second), (std::vector<float>{1.5f, -2, 3, 4, 5, 6.25f}));
  EXPECT_EQ((*out)[3].second.data, (std::vector<uint8_t>{7, static_cast<uint8_t>(-8), 9}));
  auto shape = ctx->get_tensor_shape("y");
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ(*shape, (Dims{3, 4}));
}

TEST(Runtime, InferValidatesInputs) {
  auto e = load_test_engine();
  ASSERT_TRUE(e);
  auto ctx = e->create_execution_context();
  HostTensor wrong_type;
  wrong_type.dtype = DataType::kINT64;
  wrong_type.dims = {1, 4};
  wrong_type.data.resize(32);
  auto r = ctx->infer({{"x", wrong_type}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input 'x' expects float32 but got int64");
  auto short_data = host_f32({2, 4}, {1, 2, 3});
  r = ctx->infer({{"x", short_data}});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(contains(r.status(), "input 'x' has 12 bytes but shape 2x4 of float32 needs 32")) << r.status().message();
  r = ctx->infer({});
  EXPECT_TRUE(contains(r.status(), "input 'x' is missing"));
  r = ctx->infer({{"nope", short_data}});
  EXPECT_TRUE(contains(r.status(), "'nope' is not an input of this engine (inputs: x)")) << r.status().message();
}

TEST(Runtime, SetInputShapeChecksRankStaticDimsAndProfile) {
  auto e = load_test_engine();
  ASSERT_TRUE(e);
  auto ctx = e->create_execution_context();
  Status st = ctx->set_input_shape("x", {65, 4});
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "input 'x' dimension 0 is 65 but the optimization profile allows [1, 32]");
  st = ctx->set_input_shape("x", {0, 4});
  EXPECT_TRUE(contains(st, "allows [1, 32]"));
  st = ctx->set_input_shape("x", {4, 5});
  EXPECT_EQ(st.message(), "input 'x' dimension 1 is 5 but the engine was built for 4");
  st = ctx->set_input_shape("x", {4});
  EXPECT_TRUE(contains(st, "input 'x' has rank 2")) << st.message();
  st = ctx->set_input_shape("y", {4, 4});
  EXPECT_TRUE(contains(st, "is an output"));
  st = ctx->set_input_shape("zzz", {4, 4});
  EXPECT_TRUE(contains(st, "no I/O tensor 'zzz'"));
  EXPECT_TRUE(ctx->set_input_shape("x", {32, 4}).ok());
  EXPECT_FALSE(ctx->set_optimization_profile(1).ok());
  EXPECT_TRUE(ctx->set_optimization_profile(0).ok());
}

TEST(Runtime, ExecuteWithBoundBuffers) {
  auto e = load_test_engine();
  ASSERT_TRUE(e);
  auto ctx = e->create_execution_context();
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8}, y(8, 0), w(6, 0);
  std::vector<uint8_t> mask(8, 0);
  std::vector<int8_t> b(3, 0);
  // Nothing set yet: the error names what is missing.
  Status st = ctx->execute();
  EXPECT_TRUE(contains(st, "has no bound address")) << st.message();
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address("y", y.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address("mask", mask.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address("w_out", w.data()).ok());
  st = ctx->execute();
  EXPECT_EQ(st.message(), "output 'b_out' has no bound address (call set_tensor_address)");
  ASSERT_TRUE(ctx->set_tensor_address("b_out", b.data()).ok());
  st = ctx->execute();
  EXPECT_EQ(st.message(), "the shape of input 'x' is not set (call set_input_shape)");
  auto ys = ctx->get_tensor_shape("y");
  EXPECT_FALSE(ys.ok());
  ASSERT_TRUE(ctx->set_input_shape("x", {2, 4}).ok());
  ys = ctx->get_tensor_shape("y");
  ASSERT_TRUE(ys.ok()) << ys.status().to_string();
  EXPECT_EQ(*ys, (Dims{2, 4}));
  EXPECT_EQ(ctx->get_tensor_shape("mask").value(), (Dims{2, 4}));
  EXPECT_EQ(ctx->get_tensor_shape("w_out").value(), (Dims{2, 3}));
  st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(y, x);
  EXPECT_EQ(mask, std::vector<uint8_t>(8, 1));
  EXPECT_EQ(w, (std::vector<float>{1.5f, -2, 3, 4, 5, 6.25f}));
  EXPECT_EQ(b, (std::vector<int8_t>{7, -8, 9}));
  // Rerun with new data in the same buffers.
  x[0] = 100;
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_EQ(y[0], 100);
}

TEST(Runtime, StaticGraphNeedsNoShapesAndChainsReleaseIntermediates) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = add_input(*g, "x", DataType::kINT64, {2, 2});
  ir::Value* cur = x;
  for (int i = 0; i < 10; ++i)
    cur = add_node(*g, "Identity", "id" + std::to_string(i), {cur}, {"v" + std::to_string(i)}, DataType::kINT64, {2, 2})
              ->outputs[0];
  g->outputs().push_back(cur);
  auto b = builder::write_engine(*g, BuilderConfig());
  ASSERT_TRUE(b.ok());
  Runtime rt;
  auto e = rt.deserialize_engine(b->data(), b->size());
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  // Each node drops its input after reading it; the engine output v9 is never dropped.
  const auto& plan = (*e)->plan();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(plan.nodes[i].release_after, std::vector<int>{plan.nodes[i].inputs[0]});
  auto ctx = (*e)->create_execution_context();
  std::vector<int64_t> in = {1, -2, 3, 1LL << 40}, out(4, 0);
  ASSERT_TRUE(ctx->set_tensor_address("x", in.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address("v9", out.data()).ok());
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_EQ(out, in);
}

TEST(Runtime, ContextsOutliveTheirEngine) {
  std::unique_ptr<ExecutionContext> ctx;
  {
    auto e = load_test_engine();
    ASSERT_TRUE(e);
    ctx = e->create_execution_context();
  }
  auto out = ctx->infer({{"x", host_f32({1, 4}, {1, 2, 3, 4})}});
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(to_f32((*out)[2].second), (std::vector<float>{1.5f, -2, 3, 4, 5, 6.25f}));
}

TEST(Runtime, ConcurrentContextsGiveIdenticalResults) {
  auto e = load_test_engine();
  ASSERT_TRUE(e);
  constexpr int kThreads = 4, kRuns = 50;
  std::vector<std::vector<std::vector<uint8_t>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto ctx = e->create_execution_context();
      for (int r = 0; r < kRuns; ++r) {
        int n = 1 + (r % 32);
        std::vector<float> xv(n * 4);
        for (int i = 0; i < n * 4; ++i) xv[i] = static_cast<float>(i * 0.5 + r);
        auto out = ctx->infer({{"x", host_f32({n, 4}, xv)}});
        if (!out.ok()) {
          results[t].push_back({});
          continue;
        }
        std::vector<uint8_t> all;
        for (auto& [name, h] : *out) all.insert(all.end(), h.data.begin(), h.data.end());
        results[t].push_back(std::move(all));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(results[t].size(), static_cast<size_t>(kRuns));
    for (int r = 0; r < kRuns; ++r) {
      ASSERT_FALSE(results[t][r].empty()) << "thread " << t << " run " << r;
      EXPECT_EQ(results[t][r], results[0][r]) << "thread " << t << " run " << r;
    }
  }
}

TEST(Runtime, ConstantOutputAndUnproducedOutput) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = add_input(*g, "x", DataType::kFLOAT, {1});
  ir::Node* n = add_node(*g, "Identity", "id", {x}, {"y"}, DataType::kFLOAT, {1});
  ir::Value* folded = g->add_constant("folded", Tensor::from_vector<int32_t>({2}, {3, 4}));
  g->outputs() = {n->outputs[0], folded};
  auto b = builder::write_engine(*g, BuilderConfig());
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  Runtime rt;
  auto e = rt.deserialize_engine(b->data(), b->size());
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  auto ctx = (*e)->create_execution_context();
  auto out = ctx->infer({{"x", host_f32({1}, {2.f})}});
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  ASSERT_EQ((*out)[1].first, "folded");
  EXPECT_EQ((*out)[1].second.dtype, DataType::kINT32);
  EXPECT_EQ((*out)[1].second.data, (std::vector<uint8_t>{3, 0, 0, 0, 4, 0, 0, 0}));

  ir::Value* dangling = g->add_value("dangling");
  g->outputs().push_back(dangling);
  auto bad = builder::write_engine(*g, BuilderConfig());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "network output 'dangling' is not produced by any node");
}

TEST(Runtime, ProfileChangeRevalidatesShapes) {
  auto b = build_test_engine();
  // A second profile with a narrower batch range.
  auto two = reencode(b, [](engine_format::EngineFile& f) {
    f.profiles.push_back({engine_format::ProfileEntry{0, {1, 4}, {2, 4}, {4, 4}}});
  });
  Runtime rt;
  auto e = rt.deserialize_engine(two.data(), two.size());
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  EXPECT_EQ((*e)->num_optimization_profiles(), 2);
  auto ctx = (*e)->create_execution_context();
  ASSERT_TRUE(ctx->set_input_shape("x", {8, 4}).ok());
  ASSERT_TRUE(ctx->set_optimization_profile(1).ok());
  EXPECT_EQ(ctx->get_tensor_shape("y").status().message(),
            "input 'x' dimension 0 is 8 but the optimization profile allows [1, 4]");
  ASSERT_TRUE(ctx->set_input_shape("x", {4, 4}).ok());
  EXPECT_EQ(ctx->get_tensor_shape("y").value(), (Dims{4, 4}));
}

namespace {

class QuietLog : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

// x[N,4] -> MatMul W[4,2] -> Relu -> Reshape [-1]: built through the public Builder with a batch profile.
std::unique_ptr<Engine> build_mlp_engine(const std::vector<float>& w) {
  QuietLog log;
  Builder builder(log);
  auto net = builder.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {-1, 4});
  ITensor* wt = net->add_constant("W", DataType::kFLOAT, {4, 2}, w.data());
  ITensor* mm = net->add_matrix_multiply(x, wt);
  ITensor* relu = net->add_activation(mm, ActivationType::kRELU);
  ITensor* flat = net->add_reshape(relu, {-1});
  EXPECT_TRUE(flat) << net->last_error().to_string();
  if (!flat || !net->mark_output(flat).ok()) return nullptr;
  auto config = builder.create_builder_config();
  OptimizationProfile p;
  EXPECT_TRUE(p.set_shape("x", {1, 4}, {4, 4}, {16, 4}).ok());
  config->add_optimization_profile(p);
  auto bytes = builder.build_serialized_network(*net, *config);
  EXPECT_TRUE(bytes.ok()) << bytes.status().to_string();
  if (!bytes.ok()) return nullptr;
  Runtime rt(log);
  auto e = rt.deserialize_engine(bytes->data(), bytes->size());
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<float> mlp_reference(const std::vector<float>& x, const std::vector<float>& w, int n) {
  std::vector<float> y(n * 2);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < 2; ++j) {
      float s = 0;
      for (int k = 0; k < 4; ++k) s += x[i * 4 + k] * w[k * 2 + j];
      y[i * 2 + j] = std::max(s, 0.f);
    }
  return y;
}

}  // namespace

TEST(RuntimeEndToEnd, BuiltNetworkWithDynamicBatch) {
  std::vector<float> w = {1, -1, 0.5f, 2, -3, 0.25f, 4, -0.5f};
  auto e = build_mlp_engine(w);
  ASSERT_TRUE(e);
  ASSERT_EQ(e->num_optimization_profiles(), 1);
  Dims mn, opt, mx;
  ASSERT_TRUE(e->get_profile_shape("x", 0, &mn, &opt, &mx).ok());
  EXPECT_EQ(mx, (Dims{16, 4}));
  const std::string out_name = e->get_tensor_name(1);
  EXPECT_EQ(e->get_tensor_mode(out_name), TensorIOMode::kOUTPUT);

  auto ctx = e->create_execution_context();
  EXPECT_EQ(ctx->set_input_shape("x", {17, 4}).message(),
            "input 'x' dimension 0 is 17 but the optimization profile allows [1, 16]");
  ASSERT_TRUE(ctx->set_input_shape("x", {3, 4}).ok());
  auto shape = ctx->get_tensor_shape(out_name);
  ASSERT_TRUE(shape.ok()) << shape.status().to_string();
  EXPECT_EQ(*shape, (Dims{6}));

  std::vector<float> x = {1, 2, 3, 4, -1, -2, -3, -4, 0.5f, 0, 1, -1}, y(6, -99);
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address(out_name, y.data()).ok());
  Status st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  auto want = mlp_reference(x, w, 3);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(y[i], want[i], 1e-5f) << i;
}

TEST(RuntimeEndToEnd, ConcurrentContextsOnRealOps) {
  std::vector<float> w = {1, -1, 0.5f, 2, -3, 0.25f, 4, -0.5f};
  auto e = build_mlp_engine(w);
  ASSERT_TRUE(e);
  constexpr int kThreads = 4, kRuns = 50;
  std::vector<std::vector<std::vector<float>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto ctx = e->create_execution_context();
      for (int r = 0; r < kRuns; ++r) {
        int n = 1 + (r % 16);
        std::vector<float> xv(n * 4);
        for (int i = 0; i < n * 4; ++i) xv[i] = static_cast<float>((i * 7 + r) % 11) - 5.f;
        auto out = ctx->infer({{"x", host_f32({n, 4}, xv)}});
        results[t].push_back(out.ok() ? to_f32((*out)[0].second) : std::vector<float>{});
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int r = 0; r < kRuns; ++r) {
    int n = 1 + (r % 16);
    std::vector<float> xv(n * 4);
    for (int i = 0; i < n * 4; ++i) xv[i] = static_cast<float>((i * 7 + r) % 11) - 5.f;
    auto want = mlp_reference(xv, w, n);
    for (int t = 0; t < kThreads; ++t) {
      ASSERT_EQ(results[t][r].size(), want.size()) << "thread " << t << " run " << r;
      EXPECT_EQ(results[t][r], results[0][r]) << "thread " << t << " run " << r;
      for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(results[t][r][i], want[i], 1e-5f);
    }
  }
}

TEST(RuntimeEndToEnd, DataDependentOutputNeedsInfer) {
  QuietLog log;
  Builder builder(log);
  auto net = builder.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {5});
  auto nz = net->add_op("NonZero", {x});
  ASSERT_EQ(nz.size(), 1u) << net->last_error().to_string();
  ASSERT_TRUE(net->mark_output(nz[0]).ok());
  auto bytes = builder.build_serialized_network(*net, *builder.create_builder_config());
  ASSERT_TRUE(bytes.ok()) << bytes.status().to_string();
  Runtime rt(log);
  auto e = rt.deserialize_engine(bytes->data(), bytes->size());
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  const std::string out_name = (*e)->get_tensor_name(1);
  auto ctx = (*e)->create_execution_context();
  std::vector<float> xv = {0, 1.5f, 0, -2, 3};
  std::vector<int64_t> out(5);
  ASSERT_TRUE(ctx->set_tensor_address("x", xv.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address(out_name, out.data()).ok());
  auto shape = ctx->get_tensor_shape(out_name);
  ASSERT_TRUE(shape.ok()) << shape.status().to_string();
  EXPECT_EQ(*shape, (Dims{1, -1}));
  Status st = ctx->execute();
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("data-dependent shape; use infer()"), std::string::npos) << st.message();
  auto r = ctx->infer({{"x", host_f32({5}, xv)}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)[0].second.dims, (Dims{1, 3}));
  std::vector<int64_t> idx(3);
  std::memcpy(idx.data(), (*r)[0].second.data.data(), 24);
  EXPECT_EQ(idx, (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(ctx->get_tensor_shape(out_name).value(), (Dims{1, 3}));
}
