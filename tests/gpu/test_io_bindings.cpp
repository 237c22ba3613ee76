// Float16 engine bindings on the GPU (NetworkDefinition::set_io_type): a small CNN and a LayerNorm/GEMM block built
// with float16 input and output bindings, FP16 on CUDA, against the same network on the CPU backend (float32
// layers, the same bindings): the engine's I/O is float16, no Cast layer runs at the bindings, and the values
// agree.
#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

struct Net {
  std::unique_ptr<NetworkDefinition> net;
  std::vector<Tensor> inputs;  // float16, for the float16 input binding
};

std::vector<float> rand_vec(int64_t n, uint32_t seed, float scale) {
  const Tensor t = random_tensor(DataType::kFLOAT, {n}, seed, -scale, scale);
  return std::vector<float>(t.data<float>(), t.data<float>() + n);
}

// x [2, 3, 32, 32] -> Conv 3x3 (16) + Relu -> Conv 1x1 (32) -> GlobalAveragePool -> Flatten -> Gemm (10).
Net cnn(Builder& b) {
  Net n{b.create_network(), {}};
  ITensor* x = n.net->add_input("x", DataType::kFLOAT, {2, 3, 32, 32});
  ITensor* c1 = n.net->add_convolution(x, 16, {3, 3}, rand_vec(16 * 3 * 9, 1, 0.3f), rand_vec(16, 2, 0.1f), {1, 1},
                                       {1, 1, 1, 1});
  ITensor* r = n.net->add_activation(c1, ActivationType::kRELU);
  ITensor* c2 = n.net->add_convolution(r, 32, {1, 1}, rand_vec(32 * 16, 3, 0.3f), rand_vec(32, 4, 0.1f));
  ITensor* p = n.net->add_op("GlobalAveragePool", {c2})[0];
  ITensor* f = n.net->add_op("Flatten", {p})[0];
  const std::vector<float> w = rand_vec(32 * 10, 5, 0.3f);
  ITensor* wt = n.net->add_constant("fc_w", DataType::kFLOAT, {32, 10}, w.data());
  ITensor* y = n.net->add_op("MatMul", {f, wt})[0];
  EXPECT_TRUE(n.net->mark_output(y).ok());
  n.inputs.push_back(random_tensor(DataType::kFLOAT, {2, 3, 32, 32}, 6).cast(DataType::kHALF));
  return n;
}

// x [2, 16, 256] -> MatMul + bias -> + x -> LayerNormalization: a transformer block's tail, its output the
// LayerNorm's.
Net block(Builder& b) {
  Net n{b.create_network(), {}};
  ITensor* x = n.net->add_input("x", DataType::kFLOAT, {2, 16, 256});
  const std::vector<float> w = rand_vec(256 * 256, 7, 0.06f), bias = rand_vec(256, 8, 0.5f),
                           g = rand_vec(256, 9, 1.0f), be = rand_vec(256, 10, 0.2f);
  ITensor* wt = n.net->add_constant("w", DataType::kFLOAT, {256, 256}, w.data());
  ITensor* bt = n.net->add_constant("b", DataType::kFLOAT, {256}, bias.data());
  ITensor* h = n.net->add_op("Add", {n.net->add_op("MatMul", {x, wt})[0], bt})[0];
  ITensor* r = n.net->add_op("Add", {h, x})[0];
  ITensor* gt = n.net->add_constant("gamma", DataType::kFLOAT, {256}, g.data());
  ITensor* bet = n.net->add_constant("beta", DataType::kFLOAT, {256}, be.data());
  ITensor* y = n.net->add_op("LayerNormalization", {r, gt, bet}, {{"axis", int64_t{-1}}, {"epsilon", 1e-5f}})[0];
  EXPECT_TRUE(n.net->mark_output(y).ok());
  n.inputs.push_back(random_tensor(DataType::kFLOAT, {2, 16, 256}, 11).cast(DataType::kHALF));
  return n;
}

std::vector<Tensor> run(Net (*make)(Builder&), Backend backend, std::vector<std::string>* ops) {
  Builder b;
  Net n = make(b);
  EXPECT_TRUE(n.net->set_io_type(n.net->get_input(0), DataType::kHALF).ok());
  EXPECT_TRUE(n.net->set_io_type(n.net->get_output(0), DataType::kHALF).ok());
  auto config = b.create_builder_config();
  config->set_backend(backend);
  if (backend == Backend::kCUDA) config->set_flag(BuilderFlag::kFP16);
  auto engine = test::load_engine(b.build_serialized_network(*n.net, *config));
  if (!engine) return {};
  EXPECT_EQ(engine->get_tensor_dtype("x"), DataType::kHALF);
  EXPECT_EQ(engine->get_tensor_dtype(n.net->get_output(0)->name().c_str()), DataType::kHALF);
  if (ops)
    for (const auto& node : engine->plan().nodes) ops->push_back(node.op_type);
  if (backend == Backend::kCUDA) {
    EXPECT_EQ(test::host_layers(*engine), "") << "layers ran on the host";
  }
  return test::infer(*engine, {{"x", n.inputs[0]}});
}

TEST(GpuIoBindings, Float16BindingsConvertNothingInAnFp16Engine) {
  KILN_REQUIRE_GPU();
  for (auto [name, make] : std::vector<std::pair<const char*, Net (*)(Builder&)>>{{"cnn", cnn}, {"block", block}}) {
    SCOPED_TRACE(name);
    std::vector<std::string> ops;
    const std::vector<Tensor> cpu = run(make, Backend::kCPU, nullptr);
    const std::vector<Tensor> gpu = run(make, Backend::kCUDA, &ops);
    ASSERT_EQ(cpu.size(), 1u);
    ASSERT_EQ(gpu.size(), 1u);
    EXPECT_EQ(gpu[0].dtype(), DataType::kHALF);
    EXPECT_EQ(std::count(ops.begin(), ops.end(), "Cast"), 0) << "a Cast at a float16 binding";
    EXPECT_EQ(std::count(ops.begin(), ops.end(), "Pointwise"), 0) << "a conversion pass at a float16 binding";
    expect_tensors_close(cpu[0].cast(DataType::kFLOAT), gpu[0].cast(DataType::kFLOAT), 3e-2, 3e-2,
                         "FP16 engine vs the CPU backend");
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
