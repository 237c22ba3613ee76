// GPU tests of kiln::FusedMlp (fused_mlp.cu): every tactic of the plan at efficientnet_b0's squeeze-excitation
// sizes, with the squeeze at their feature maps' sizes, and at odd sizes (the one-element paths, a squeeze over an
// empty map too), in FP32, FP16 and BF16, with and without biases, against the CPU reference; the efficientnet
// block through the whole CUDA FP16 pipeline (fuse_small_mlp on) against the CPU backend; and each SE size timed as one FusedMlp (each tactic)
// against the layers it replaces (ReduceMean and two FusedMatMuls).
#include "../unit/cnn_onnx_model.h"
#include "backends/cuda/fused_mlp.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "passes/pass.h"

namespace kiln::gpu_testing {
namespace {

struct MlpCase {
  int64_t rows, k, hidden, n;
  DataType dt = DataType::kFLOAT;
  bool biases = true;
  std::string act1 = "silu", act2 = "sigmoid";
  std::string tactic = "";  // empty: the planner's first
  int64_t hw = -1;  // >= 0: squeeze, x is [rows, hw, hw, k] (0: an empty map, whose mean is 0)
  bool squeeze() const { return hw >= 0; }
  std::string str() const {
    const std::string map = squeeze() ? "(" + std::to_string(hw) + "x" + std::to_string(hw) + ") " : "";
    return std::to_string(rows) + " rows " + map +
           std::to_string(k) + "-" + std::to_string(hidden) + "-" + std::to_string(n) + " " + dtype_name(dt) + " " +
           act1 + "/" + act2 + (biases ? " biases " : " ") + tactic;
  }
  cuda::MlpShape shape() const { return cuda::MlpShape{rows, k, hidden, n, squeeze(), squeeze() ? hw * hw : 0}; }
};

// x [rows, 1, 1, k] (or [rows, hw, hw, k] with squeeze) -> FusedMlp -> y; weights scaled so the sums stay O(1)
// (half keeps its precision).
std::vector<Tensor> mlp_graph(const MlpCase& c, ir::Graph& g) {
  const double s1 = 2.0 / std::sqrt(static_cast<double>(c.k)), s2 = 2.0 / std::sqrt(static_cast<double>(c.hidden));
  const std::vector<int64_t> xs =
      c.squeeze() ? std::vector<int64_t>{c.rows, c.hw, c.hw, c.k} : std::vector<int64_t>{c.rows, 1, 1, c.k};
  ir::Value* x = g.add_value("x");
  x->dtype = c.dt;
  x->shape = ops::shape_from_dims(xs);
  x->rank_known = true;
  g.inputs().push_back(x);
  Attributes a;
  a.set("activation1", c.act1);
  a.set("activation2", c.act2);
  if (c.squeeze()) a.set("squeeze", int64_t{1});
  if (!c.tactic.empty()) a.set("kiln.tactic", c.tactic);
  std::vector<ir::Value*> in = {
      x, g.add_constant("w1", random_tensor(c.dt, {c.hidden, c.k}, 2, -s1, s1)),
      c.biases ? g.add_constant("b1", random_tensor(c.dt, {c.hidden}, 3, -0.5, 0.5)) : nullptr,
      g.add_constant("w2", random_tensor(c.dt, {c.n, c.hidden}, 4, -s2, s2))};
  if (c.biases) in.push_back(g.add_constant("b2", random_tensor(c.dt, {c.n}, 5, -0.5, 0.5)));
  ir::Node* n = g.add_node("FusedMlp", "mlp", in, {"y"}, a, 1, "kiln");
  g.outputs().push_back(n->outputs[0]);
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  Status inferred = passes::make_shape_inference()->apply(g, ctx);
  EXPECT_TRUE(inferred.ok()) << inferred.message();
  return {random_tensor(c.dt, xs, 1, -2.0, 2.0)};
}

// The reference keeps the hidden layer in float as the kernel does and rounds the output once; the kernel sums in
// another order (lanes, then a shuffle tree): about one rounding of the output type.
double mlp_tolerance(DataType dt) { return dt == DataType::kFLOAT ? 1e-4 : dt == DataType::kHALF ? 4e-3 : 3e-2; }

// The case on the CPU reference once, then on the GPU with each tactic of its plan.
void every_tactic(MlpCase c) {
  SCOPED_TRACE(c.str());
  ir::Graph g;
  const std::vector<Tensor> inputs = mlp_graph(c, g);
  const std::vector<Tensor> cpu = run_graph(g, Backend::kCPU, inputs, nullptr);
  ASSERT_EQ(cpu.size(), 1u);
  const std::vector<cuda::MlpTactic> plan = cuda::mlp_tactics(c.shape(), 132, static_cast<int>(dtype_size(c.dt)));
  ASSERT_FALSE(plan.empty());
  for (const cuda::MlpTactic& t : plan) {
    c.tactic = cuda::mlp_tactic_name(t);
    SCOPED_TRACE(c.tactic);
    ir::Graph gt;
    mlp_graph(c, gt);
    std::string err;
    const std::vector<Tensor> gpu = run_capturing(gt, inputs, &err);
    ASSERT_EQ(gpu.size(), 1u) << err;
    // The squeeze adds one more rounding on the pool-first path (the pooled rows in T, as ReduceMean stores them).
    const double tol = mlp_tolerance(c.dt) * (c.squeeze() ? 2 : 1);
    expect_tensors_close(cpu[0], gpu[0], tol, tol, "FusedMlp");
    if (::testing::Test::HasFailure()) return;
  }
}

// efficientnet_b0's squeeze-excitations: C -> C/4 (the first block's 32 -> 8) or C/24 -> C.
const int64_t kSeShapes[][2] = {{32, 8}, {96, 4}, {144, 6}, {240, 10}, {480, 20}, {672, 28}, {1152, 48}};

TEST(GpuFusedMlp, EveryTacticAtSqueezeExcitationSizes) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    for (const auto& sh : kSeShapes)
      for (int64_t rows : {128, 1, 5}) {
        every_tactic(MlpCase{rows, sh[0], sh[1], sh[0], dt});
        if (::testing::Test::HasFailure()) return;
      }
}

// With squeeze: each SE size at its feature map's size in efficientnet_b0 (batch 16 for the large maps, 128 for
// the 14x14 and 7x7 ones, and 1), every tactic (the fused one-block-a-row kernel and the pool-first ones).
TEST(GpuFusedMlp, EveryTacticWithTheSqueeze) {
  KILN_REQUIRE_GPU();
  const int64_t maps[][3] = {{32, 8, 112}, {96, 4, 56}, {144, 6, 28}, {240, 10, 14}, {672, 28, 7}, {1152, 48, 7}};
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    for (const auto& m : maps)
      for (int64_t rows : {m[2] >= 28 ? int64_t{16} : int64_t{128}, int64_t{1}}) {
        MlpCase c{rows, m[0], m[1], m[0], dt};
        c.hw = m[2];
        every_tactic(c);
        if (::testing::Test::HasFailure()) return;
      }
}

TEST(GpuFusedMlp, OddSizesActivationsAndNoBiases) {
  KILN_REQUIRE_GPU();
  // K, hidden not multiples of 8: the one-element paths; N below a warp; a hidden layer wider than the block.
  const int64_t shapes[][4] = {{3, 37, 5, 37}, {9, 20, 4, 33}, {2, 40, 300, 17}, {130, 8, 1, 8}};
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    for (const auto& sh : shapes)
      for (const auto& [a1, a2] :
           {std::pair{"relu", "none"}, std::pair{"gelu_erf", "gelu_tanh"}, std::pair{"none", "silu"}})
        for (bool biases : {true, false})
          for (int64_t hw : {-1, 3, 0}) {  // no squeeze, a 3x3 map, an empty map (the pool-first tactics only)
            MlpCase c{sh[0], sh[1], sh[2], sh[3], dt, biases, a1, a2};
            c.hw = hw;
            every_tactic(c);
            if (::testing::Test::HasFailure()) return;
          }
}

// se_block_cnn (depthwise, efficientnet's block) through the CUDA FP16 pipeline: the excitation is one FusedMlp
// layer on the GPU, and the block computes what the CPU backend does.
TEST(GpuFusedMlp, EfficientnetBlockFp16Pipeline) {
  KILN_REQUIRE_GPU();
  // Pinned channels-last: the timed layout choice may keep a block this small NCHW, where no GEMM reads the pool.
  ScopedEnv nhwc("KILN_LAYOUT", "nhwc");
  for (int64_t n : {1, 8}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    onnx::ModelProto m = test::se_block_cnn(n, 14, 144, true);
    Tensor x = random_tensor(DataType::kFLOAT, {n, 8, 14, 14}, 21);
    std::vector<Tensor> out[2];
    for (int cuda = 0; cuda < 2; ++cuda) {
      auto engine =
          test::build_onnx_engine(m, cuda ? Backend::kCUDA : Backend::kCPU,
                                  cuda ? std::vector<BuilderFlag>{BuilderFlag::kFP16} : std::vector<BuilderFlag>{});
      ASSERT_TRUE(engine);
      if (cuda) {
        EXPECT_EQ(test::host_layers(*engine), "");
        EXPECT_NE(first_node(*engine, "FusedMlp"), nullptr) << "no FusedMlp layer in the engine";
      }
      out[cuda] = test::infer(*engine, {{"x", x}});
      ASSERT_EQ(out[cuda].size(), 1u);
    }
    expect_tensors_close(out[0][0], out[1][0], 3e-2, 3e-2, "CUDA FP16 SE block with FusedMlp");
  }
}

// Each squeeze-excitation size at batch 128 and 1 in FP16: the layers FusedMlp replaces (with the squeeze: the
// ReduceMean over H and W; then fc1 + SiLU and fc2 + sigmoid as FusedMatMuls, their default tactics) against
// FusedMlp with each of its tactics. Without the squeeze also at 1024 and 4096 rows, where the tensor-core GEMMs
// should win (fuse_small_mlp bounds no batch: these lines say where it should). Prints; asserts only that the
// results agree.
TEST(GpuFusedMlp, TimesAgainstTwoGemms) {
  KILN_REQUIRE_GPU();
  const int64_t maps[][3] = {{32, 8, 112},  {96, 4, 56},   {144, 6, 56},  {144, 6, 28}, {240, 10, 28},
                             {240, 10, 14}, {480, 20, 14}, {672, 28, 14}, {672, 28, 7}, {1152, 48, 7}};
  for (int64_t rows : {128, 1, 1024, 4096})
    for (bool squeeze : {false, true})
      for (const auto& m : maps) {
        if (!squeeze && m[2] != 7 && m[0] != 32 && m[0] != 96 && m[2] != 28) continue;  // each C once
        if (squeeze && rows > 128) continue;
        MlpCase c{rows, m[0], m[1], m[0], DataType::kHALF};
        c.hw = squeeze ? m[2] : -1;
        SCOPED_TRACE(c.str());
        ir::Graph fused;
        const std::vector<Tensor> inputs = mlp_graph(c, fused);
        // The same weights as the layers it replaces.
        ir::Graph pair;
        {
          const ir::Node* mn = fused.nodes()[0].get();
          ir::Value* x = pair.add_value("x");
          x->dtype = c.dt;
          x->shape = fused.inputs()[0]->shape;
          x->rank_known = true;
          pair.inputs().push_back(x);
          if (squeeze) {
            Attributes ra;
            ra.set("axes", std::vector<int64_t>{1, 2});
            ra.set("keepdims", int64_t{1});
            x = pair.add_node("ReduceMean", "pool", {x}, {"pooled"}, ra, 13)->outputs[0];
          }
          auto copy = [&](int i) { return pair.add_constant(mn->inputs[i]->name, *mn->inputs[i]->constant); };
          Attributes a1, a2;
          a1.set("trans_b", int64_t{1});
          a1.set("activation", c.act1);
          a2.set("trans_b", int64_t{1});
          a2.set("activation", c.act2);
          ir::Value* h = pair.add_node("FusedMatMul", "fc1", {x, copy(1), copy(2)}, {"h"}, a1, 1, "kiln")->outputs[0];
          pair.outputs().push_back(
              pair.add_node("FusedMatMul", "fc2", {h, copy(3), copy(4)}, {"y"}, a2, 1, "kiln")->outputs[0]);
          QuietLogger quiet;
          passes::PassContext ctx(quiet);
          ASSERT_TRUE(passes::make_shape_inference()->apply(pair, ctx).ok());
        }
        const Timed before = time_on_gpu(pair, inputs, 200);
        std::string line;
        double best = 1e30;
        std::string best_name;
        for (const cuda::MlpTactic& t : cuda::mlp_tactics(c.shape(), 132, 2)) {
          ir::Graph g;
          c.tactic = cuda::mlp_tactic_name(t);
          mlp_graph(c, g);
          const Timed one = time_on_gpu(g, inputs, 200);
          expect_tensors_close(before.y, one.y, 2e-2, 2e-2, "FusedMlp against the layers it replaces");
          char buf[64];
          std::snprintf(buf, sizeof(buf), " %s=%.2f", c.tactic.substr(9).c_str(), one.us);
          line += buf;
          if (one.us < best) best = one.us, best_name = c.tactic;
        }
        std::printf("MLP %4lld rows %s%4lld-%2lld-%4lld: %s %.2f us, best FusedMlp %.2f us (%s);%s\n",
                    static_cast<long long>(rows),
                    squeeze ? ("pool " + std::to_string(m[2]) + "x" + std::to_string(m[2]) + " ").c_str() : "",
                    static_cast<long long>(c.k), static_cast<long long>(c.hidden), static_cast<long long>(c.n),
                    squeeze ? "ReduceMean + two GEMMs" : "two GEMMs", before.us, best, best_name.c_str(), line.c_str());
      }
}

}  // namespace
}  // namespace kiln::gpu_testing
