// In-place Concat on the CUDA backend (concat_elimination + runtime/concat_inplace.h): concats of computed
// producers (Relu, MatMul, Gemm, Conv) along axis 0 and 1, at batch 1 (in place) and batch 2 (axis 1 copies), an
// engine-output concat, an input read again after the concat, an alias of an input read elsewhere and bound as an
// output, Reshaped inputs (always copied), FP32 and FP16, each against the CPU reference. Whether the copy was
// eliminated is read from the context's activation total: the marked engine plans exactly the concat inputs'
// bytes fewer than the same graph unmarked (they live inside the concat's output), or the same bytes when it copies.
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>

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

// Bytes of the inputs of the marked concats `in_place` accepts (by name): what the arena no longer holds apart
// when they are written in place. With nesting too: an eliminated inner concat's inputs and its output (an input
// of the outer one) both leave the arena, and only the outermost output remains.
uint64_t concat_input_bytes(const ir::Graph& g, const std::function<bool(const std::string&)>& in_place) {
  uint64_t b = 0;
  for (const auto& n : g.nodes())
    if (n->op_type == "Concat" && test::marked_in_place(n->attrs) && in_place(n->name))
      for (const ir::Value* v : n->inputs) b += volume(ops::static_dims(v->shape)) * dtype_size(v->dtype);
  return b;
}

// Runs the net unmarked and marked on the GPU and on the CPU reference; every output within tolerance, and the
// marked engine's activations smaller by the inputs' bytes of the concats expected in place (all the marked ones
// when in_place, none otherwise; or those named in `eliminated`).
void check(ConcatNet net, bool in_place, const std::vector<std::string>* eliminated = nullptr) {
  SCOPED_TRACE(net.what + (in_place ? " (in place)" : " (copy)"));
  auto plain = net.g->clone();
  ASSERT_TRUE(test::mark_concats(*net.g).ok());
  const uint64_t slice_bytes = concat_input_bytes(*net.g, [&](const std::string& name) {
    return eliminated ? std::find(eliminated->begin(), eliminated->end(), name) != eliminated->end() : in_place;
  });
  if (in_place) { ASSERT_GT(slice_bytes, 0u) << "the pass should have marked the concat"; }
  if (eliminated)
    for (const std::string& name : *eliminated) {
      const ir::Node* c = test::node_named(*net.g, name);
      ASSERT_TRUE(c && test::marked_in_place(c->attrs)) << name << " should have been marked";
    }
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

// Nested concats (a DenseNet-like block, two and three levels): at batch 1 every level is eliminated, the inner
// outputs living inside the outer one, and each conv reads the concat below it from there; at batch 2 all copy.
TEST(GpuConcatInPlace, NestedDenseBlock) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int levels : {2, 3}) {
      check(test::dense_block(dt, 1, levels), true);
      check(test::dense_block(dt, 1, levels, true), true);  // the outermost concat is the engine output
      check(test::dense_block(dt, 2, levels), false);
    }
}

// The inner concat is also read after the outer one (Neg) and copied out through a Reshape bound as an engine
// output: along axis 0 at batch 1 and 2, along axis 1 at batch 1, both levels in place; axis 1 at batch 2 copies.
TEST(GpuConcatInPlace, NestedInnerReadElsewhere) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (int64_t n : {1, 2})
      for (int64_t axis : {0, 1}) check(test::nested_read_elsewhere(dt, n, axis), n == 1 || axis == 0);
}

// The inner concat (axis 0) is eliminated on its own while the outer one (axis 1 over 2n rows) copies from it.
TEST(GpuConcatInPlace, NestedInnerOnlyWhenTheOuterCopies) {
  KILN_REQUIRE_GPU();
  const std::vector<std::string> inner = {"concat1"};
  for (DataType dt : kTypes)
    for (int64_t n : {1, 2}) check(test::inner_only(dt, n), true, &inner);
}

// Three levels of FP32 [1,w] concats where one level's offsets miss the 256-byte alignment: that level copies
// (its concat kernel writing into its slice of the level above, where that one is in place), the others do not.
TEST(GpuConcatInPlace, NestedAlignmentRefusalsAtAnyLevel) {
  KILN_REQUIRE_GPU();
  for (const test::NestedWidthsCase& t : test::nested_widths_cases())
    check(test::nested_widths(t.l1a, t.l1b, t.l2, t.l3), true, &t.eliminated);
}

// A network (`make` adds it after input "x" [-1, rest...] and marks its output) built for the CPU and, in FP16, for
// CUDA with one profile (batch 1 / 2 / 4); `marked` Concats of the CUDA engine must be marked in place; then one
// CUDA context runs each batch of `batches`, against the CPU engine.
void expect_dynamic_batches_agree(const std::function<ITensor*(NetworkDefinition&, ITensor*)>& make, const Dims& rest,
                                  int marked, const std::vector<int64_t>& batches, uint32_t seed, double tol) {
  auto build = [&](Backend backend) -> std::unique_ptr<Engine> {
    Builder builder;
    auto net = builder.create_network();
    Dims dyn = {-1}, lo = {1}, opt = {2}, hi = {4};
    for (int64_t d : rest) dyn.push_back(d), lo.push_back(d), opt.push_back(d), hi.push_back(d);
    ITensor* x = net->add_input("x", DataType::kFLOAT, dyn);
    EXPECT_TRUE(net->mark_output(make(*net, x)).ok());
    auto config = builder.create_builder_config();
    config->set_backend(backend);
    if (backend == Backend::kCUDA) config->set_flag(BuilderFlag::kFP16);
    OptimizationProfile p;
    EXPECT_TRUE(p.set_shape("x", lo, opt, hi).ok());
    config->add_optimization_profile(p);
    return test::load_engine(builder.build_serialized_network(*net, *config));
  };
  auto cpu = build(Backend::kCPU);
  auto gpu = build(Backend::kCUDA);
  ASSERT_TRUE(cpu && gpu);
  int got_marked = 0;
  for (const auto& n : gpu->plan().nodes) got_marked += n.op_type == "Concat" && test::marked_in_place(n.attrs);
  EXPECT_EQ(got_marked, marked) << "Concats the CUDA pipeline marks";
  auto ctx = gpu->create_execution_context();
  ASSERT_TRUE(ctx);
  for (int64_t n : batches) {
    SCOPED_TRACE("batch " + std::to_string(n));
    Dims shape = {n};
    for (int64_t d : rest) shape.push_back(d);
    Tensor x = random_tensor(DataType::kFLOAT, shape, seed++);
    auto want = test::infer(*cpu, {{"x", x}});
    auto got = test::infer(*ctx, {{"x", x}});
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    expect_tensors_close(want[0], got[0], tol, tol, "y");
  }
}

// The full CUDA build (FP16 lowering, fusions, the pass last) with a dynamic batch: one context run at batch 1 (in
// place), 2 and 3 (copies) and 1 again, each against a CPU engine of the same network.
TEST(GpuConcatInPlace, DynamicBatchThroughTheBuilder) {
  KILN_REQUIRE_GPU();
  const Tensor wt = random_tensor(DataType::kFLOAT, {128, 128}, 7, -0.09, 0.09);
  auto make = [&](NetworkDefinition& net, ITensor* x) {
    ITensor* wc = net.add_constant("w", DataType::kFLOAT, {128, 128}, wt.raw());
    auto a = net.add_op("Relu", {x}, {}, 1, "relu");
    auto m = net.add_op("MatMul", {x, wc}, {}, 1, "matmul");
    auto c = net.add_op("Concat", {a[0], m[0]}, {{"axis", int64_t{1}}}, 1, "concat");
    return net.add_op("Sigmoid", {c[0]}, {}, 1, "sigmoid")[0];
  };
  expect_dynamic_batches_agree(make, {128}, 1, {1, 2, 3, 1}, 40, 1e-2);
}

// The dense block of test::dense_block (three nested levels) through the full CUDA build in FP16 (Conv + Relu
// fused, then the pass marks every level) with a dynamic batch: batch 1 (all in place), 2 (all copy) and 1 again on
// one context, each against a CPU engine of the same network.
TEST(GpuConcatInPlace, NestedDenseBlockThroughTheBuilder) {
  KILN_REQUIRE_GPU();
  std::vector<Tensor> weights;
  for (int64_t cin : {8, 16, 24}) {
    const auto seed = static_cast<uint32_t>(cin);
    weights.push_back(random_tensor(DataType::kFLOAT, {8, cin, 3, 3}, seed, -0.12, 0.12));
    weights.push_back(random_tensor(DataType::kFLOAT, {8}, seed + 1, -0.5, 0.5));
  }
  auto make = [&](NetworkDefinition& net, ITensor* x) {
    const OpAttrs conv_attrs = {{"pads", std::vector<int64_t>{1, 1, 1, 1}},
                                {"kernel_shape", std::vector<int64_t>{3, 3}}};
    auto conv_relu = [&](ITensor* in, int k) {
      const Tensor& w = weights[2 * k];
      const Tensor& b = weights[2 * k + 1];
      const std::string name = "conv" + std::to_string(k);
      ITensor* wc = net.add_constant(name + "_w", DataType::kFLOAT, w.shape(), w.raw());
      ITensor* bc = net.add_constant(name + "_b", DataType::kFLOAT, b.shape(), b.raw());
      auto c = net.add_op("Conv", {in, wc, bc}, conv_attrs, 1, name);
      return net.add_op("Relu", {c[0]}, {}, 1, "relu" + std::to_string(k))[0];
    };
    auto concat = [&](ITensor* a, ITensor* b, const std::string& name) {
      return net.add_op("Concat", {a, b}, {{"axis", int64_t{1}}}, 1, name)[0];
    };
    ITensor* c1 = concat(conv_relu(x, 0), net.add_op("Sigmoid", {x}, {}, 1, "sigmoid0")[0], "concat1");
    ITensor* c2 = concat(c1, conv_relu(c1, 1), "concat2");
    ITensor* c3 = concat(conv_relu(c2, 2), c2, "concat3");
    return net.add_op("Relu", {c3}, {}, 1, "relu_out")[0];
  };
  expect_dynamic_batches_agree(make, {8, 8, 8}, 3, {1, 2, 1}, 60, 3e-2);
}

// Through a CUDA graph, with the concat's output bound by the caller: the producers write into the caller's
// buffer at offsets (nested: at the inner concats' offsets plus their own); rebinding it to another buffer
// recaptures.
TEST(GpuConcatInPlace, CudaGraphIntoTheCallersBuffer) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kTypes)
    for (bool nested : {false, true}) {
      ConcatNet net = nested ? test::dense_block(dt, 1, 3, true) : test::relu_matmul(dt, 1, 1, true);
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
        const double tol = dt == DataType::kHALF ? 1e-2 : 1e-4;
        expect_tensors_close(want.outputs[0], y, tol, tol, "y");
      }
      for (void* p : {dx, dy[0], dy[1]}) cudaFree(p);
    }
}

}  // namespace
}  // namespace kiln::gpu_testing
