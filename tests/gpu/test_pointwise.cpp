// Fused Pointwise kernels (NVRTC-compiled at build time) against the CPU reference backend: the elementwise chains
// of tests/unit/pointwise_test_graphs.h at realistic sizes, in FP32 and in FP16 (where lowering's Casts are fused).
#include "../unit/pointwise_test_graphs.h"
#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

struct Run {
  std::vector<Tensor> outputs;
  int pointwise_layers = 0;
  std::string host_layers;
};

Run run_network(const pwtest::Case& c, const std::vector<Tensor>& inputs, Backend backend, bool fp16) {
  Run r;
  Builder builder;
  auto net = builder.create_network();
  net->graph().set_opset(c.opset);
  std::vector<ITensor*> ins;
  for (size_t i = 0; i < c.inputs_spec.size(); ++i)
    ins.push_back(net->add_input("in" + std::to_string(i), c.inputs_spec[i].first, c.inputs_spec[i].second));
  c.body(*net, ins);
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  if (fp16) config->set_flag(BuilderFlag::kFP16);
  auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
  if (!engine) return r;
  for (const auto& n : engine->plan().nodes) r.pointwise_layers += n.op_type == "Pointwise";
  if (backend == Backend::kCUDA) r.host_layers = test::host_layers(*engine);
  r.outputs = test::infer(*engine, test::numbered_inputs(inputs));
  return r;
}

// |gpu - cpu| <= tol * (1 + |cpu|): chains mix values near zero with values near 10^4 (attention masks).
void compare(const pwtest::Case& c, bool fp16) {
  SCOPED_TRACE(c.name + (fp16 ? " fp16" : " fp32"));
  const double tol = fp16 ? 2e-2 : 1e-4;
  std::vector<Tensor> inputs = c.inputs(7);
  Run cpu = run_network(c, inputs, Backend::kCPU, false);
  Run gpu = run_network(c, inputs, Backend::kCUDA, fp16);
  EXPECT_EQ(cpu.pointwise_layers, 0);  // the CPU pipeline stays unfused: it is the oracle
  EXPECT_GE(gpu.pointwise_layers, c.min_groups);
  EXPECT_TRUE(gpu.host_layers.empty()) << "ran on the host: " << gpu.host_layers;
  ASSERT_EQ(cpu.outputs.size(), gpu.outputs.size());
  for (size_t k = 0; k < cpu.outputs.size(); ++k) {
    ASSERT_EQ(cpu.outputs[k].shape(), gpu.outputs[k].shape()) << "output " << k;
    ASSERT_EQ(cpu.outputs[k].dtype(), gpu.outputs[k].dtype()) << "output " << k;
    Tensor a = cpu.outputs[k].cast(DataType::kDOUBLE), b = gpu.outputs[k].cast(DataType::kDOUBLE);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < a.numel(); ++i) {
      double x = a.data<double>()[i], y = b.data<double>()[i];
      bool ok = (std::isnan(x) && std::isnan(y)) || std::fabs(x - y) <= tol * (1 + std::fabs(x));
      if (!ok && bad++ == 0) first = i;
    }
    EXPECT_EQ(bad, 0) << "output " << k << ": " << bad << " of " << a.numel() << " differ; first at " << first
                      << ": cpu " << (first >= 0 ? a.data<double>()[first] : 0) << " gpu "
                      << (first >= 0 ? b.data<double>()[first] : 0);
  }
}

TEST(GpuPointwise, FusedChainsFp32) {
  KILN_REQUIRE_GPU();
  for (const auto& c : pwtest::cases(/*large=*/true)) compare(c, false);
}

// FP16 engines: lowering puts Casts at every float32 boundary and the fusion absorbs them. int_bool_casts is left
// out here: its float-to-int truncation flips by one wherever float16 rounding crosses an integer.
TEST(GpuPointwise, FusedChainsFp16WithCasts) {
  KILN_REQUIRE_GPU();
  for (const auto& c : pwtest::cases(/*large=*/true))
    if (c.name != "int_bool_casts") compare(c, true);
}

// Small shapes: scalar-like outputs, an innermost dim of 1 and sizes below one block.
TEST(GpuPointwise, SmallAndDegenerateShapes) {
  KILN_REQUIRE_GPU();
  pwtest::Case c{"tiny",
                 {{DataType::kFLOAT, {1, 3, 1}}, {DataType::kFLOAT, {1}}},
                 [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                   ITensor* s = pwtest::op(net, "Add", {in[0], in[1]});
                   (void)net.mark_output(pwtest::op(net, "Tanh", {pwtest::op(net, "Mul", {s, s})}));
                 }};
  compare(c, false);
  compare(c, true);
}

// A group whose rank comes only from a one-element constant ([1,1,1,1] + [3,1,1] + [3,1]: Swin's shifted-window
// mask indices) stays unfused, and the engine gives the [1,3,3,1] result the CPU reference does.
TEST(GpuPointwise, RankFromAOneElementConstant) {
  KILN_REQUIRE_GPU();
  pwtest::Case c{"rank_from_constant",
                 {{DataType::kFLOAT, {3, 1, 1}}, {DataType::kFLOAT, {3, 1}}},
                 [](NetworkDefinition& net, const std::vector<ITensor*>& in) {
                   const float half = 0.5f;
                   ITensor* z = net.add_constant("z", DataType::kFLOAT, {1, 1, 1, 1}, &half);
                   ITensor* s = pwtest::op(net, "Add", {pwtest::op(net, "Add", {z, in[0]}), in[1]});
                   (void)net.mark_output(pwtest::op(net, "Relu", {s}));
                 }};
  c.min_groups = 0;
  compare(c, false);
  compare(c, true);
}

}  // namespace
}  // namespace kiln::gpu_testing
