// Unit tests for se_scale_gemm: a squeeze-excitation scale x * s read only by a projection GEMM becomes per-sample
// GEMM weights (s * W and a batched GEMM) with the same result on the reference kernels; the pass declines when the
// output width is large against H*W, when the product has other readers, and when s is no per-sample channel scale.
// Also what the rewrite relies on: FusedMatMul's trans_b on a batched B, and the CUDA GEMM's batch plan
// (gemm_geometry.h) running the per-sample weights as one cuBLASLt strided batch.
#include <gtest/gtest.h>

#include "backends/cuda/gemm_geometry.h"
#include "cnn_onnx_model.h"
#include "se_test_graphs.h"

using namespace kiln;
using namespace kiln::test;

namespace {

Status run_se_pass(ir::Graph& g) { return run_passes(g, list_of(passes::make_se_scale_gemm())); }

// Whether the pass rewrote the projection: its B is then the per-sample weights Mul, not the constant.
bool rewritten(const ir::Graph& g) {
  const ir::Node* mm = find_op(g, "FusedMatMul");
  return mm && !mm->inputs[1]->is_constant();
}

TEST(SeScaleGemm, ScaleMovesIntoPerSampleWeightsWithTheSameResult) {
  for (bool rank3 : {false, true})
    for (bool scale_first : {false, true})
      for (bool residual : {false, true})
        for (const char* act : {"none", "relu"}) {
          SeGraphSpec p;
          p.rank3 = rank3;
          p.scale_first = scale_first;
          p.residual = residual;
          p.act = act;
          SCOPED_TRACE(std::string(rank3 ? "rank 3" : "rank 4") + (scale_first ? " s*x" : " x*s") +
                       (residual ? " residual " : " ") + act);
          SeGraph se(p);
          ASSERT_TRUE(run_passes(se.g, {}).ok());
          auto want = run_reference(se.g, se.inputs);
          ASSERT_TRUE(run_se_pass(se.g).ok());
          ASSERT_TRUE(rewritten(se.g)) << ir::print(se.g);
          const ir::Node* mm = find_op(se.g, "FusedMatMul");
          EXPECT_EQ(mm->inputs[0]->name, "x");  // the GEMM reads the unscaled activation
          const ir::Value* ws = mm->inputs[1];
          ASSERT_NE(ws->producer, nullptr);
          EXPECT_EQ(ws->producer->op_type, "Mul");
          const std::vector<int64_t> ws_dims =
              rank3 ? std::vector<int64_t>{p.n, p.m, p.c} : std::vector<int64_t>{p.n, 1, p.m, p.c};
          EXPECT_EQ(ws->shape, ops::shape_from_dims(ws_dims));
          EXPECT_EQ(mm->attrs.get_int("trans_b", 0).value(), 1);
          // The activation-sized Mul is gone: the only Mul left is the [N, .., M, C] one.
          EXPECT_EQ(count_ops(se.g, "Mul"), 1) << ir::print(se.g);
          EXPECT_EQ(se.g.outputs()[0]->name, "y");
          auto got = run_reference(se.g, se.inputs);
          ASSERT_EQ(got.size(), 1u);
          expect_close(got[0], want[0], 1e-5, 1e-5);
        }
}

TEST(SeScaleGemm, HalfGraphKeepsHalfWeights) {
  SeGraphSpec p;
  p.dt = DataType::kHALF;
  p.residual = true;
  SeGraph se(p);
  ASSERT_TRUE(run_passes(se.g, {}).ok());
  auto want = run_reference(se.g, se.inputs);
  ASSERT_TRUE(run_se_pass(se.g).ok());
  ASSERT_TRUE(rewritten(se.g)) << ir::print(se.g);
  EXPECT_EQ(find_op(se.g, "FusedMatMul")->inputs[1]->dtype, DataType::kHALF);
  auto got = run_reference(se.g, se.inputs);
  ASSERT_EQ(got.size(), 1u);
  // Both round the scaled operand to half once (x*s there, s*W here): half rounding of a 16-term sum.
  expect_close(got[0], want[0], 2e-2, 1e-2);
}

TEST(SeScaleGemm, SymbolicBatch) {
  SeGraphSpec p;
  p.symbolic_batch = true;
  SeGraph se(p);
  ASSERT_TRUE(run_passes(se.g, {}).ok());
  auto want = run_reference(se.g, se.inputs);
  ASSERT_TRUE(run_se_pass(se.g).ok());
  ASSERT_TRUE(rewritten(se.g)) << ir::print(se.g);
  EXPECT_FALSE(find_op(se.g, "FusedMatMul")->inputs[1]->shape[0].is_static());
  auto got = run_reference(se.g, se.inputs);
  ASSERT_EQ(got.size(), 1u);
  expect_close(got[0], want[0], 1e-5, 1e-5);
}

TEST(SeScaleGemm, RuleIsFourRowsPerOutputChannel) {
  // H*W = 64: M = 16 is taken (16 * 4 = 64), M = 17 is not; 7x7 with M = 16 (efficientnet's late stages) is not.
  struct Case {
    int64_t h, w, m;
    bool taken;
  };
  for (Case k : {Case{8, 8, 16, true}, Case{8, 8, 17, false}, Case{7, 7, 16, false}, Case{56, 56, 24, true}}) {
    SCOPED_TRACE(std::to_string(k.h) + "x" + std::to_string(k.w) + " M=" + std::to_string(k.m));
    SeGraphSpec p;
    p.h = k.h;
    p.w = k.w;
    p.m = k.m;
    p.c = 24;
    SeGraph se(p);
    ASSERT_TRUE(run_passes(se.g, {}).ok());
    auto want = run_reference(se.g, se.inputs);
    ASSERT_TRUE(run_se_pass(se.g).ok());
    EXPECT_EQ(rewritten(se.g), k.taken) << ir::print(se.g);
    EXPECT_EQ(count_ops(se.g, "Mul"), 1);
    auto got = run_reference(se.g, se.inputs);
    ASSERT_EQ(got.size(), 1u);
    expect_close(got[0], want[0], 1e-5, 1e-5);
  }
}

TEST(SeScaleGemm, DeclinesOtherReadersAndOtherScales) {
  struct Case {
    const char* what;
    SeGraphSpec p;
  };
  std::vector<Case> cases;
  SeGraphSpec base;
  Case c{"product is also a graph output", base};
  c.p.extra_reader = true;
  cases.push_back(c);
  c = Case{"scale shared by the batch [1,1,1,C]", base};
  c.p.s_shape = {1, 1, 1, base.c};
  cases.push_back(c);
  c = Case{"one scale per sample [N,1,1,1]", base};
  c.p.s_shape = {base.n, 1, 1, 1};
  cases.push_back(c);
  c = Case{"scale varies over H [N,H,1,C]", base};
  c.p.s_shape = {base.n, base.h, 1, base.c};
  cases.push_back(c);
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    SeGraph se(k.p);
    ASSERT_TRUE(run_passes(se.g, {}).ok());
    ASSERT_TRUE(run_se_pass(se.g).ok());
    EXPECT_FALSE(rewritten(se.g)) << ir::print(se.g);
    EXPECT_NE(se.g.find_value("scaled"), nullptr);
  }
}

TEST(SeScaleGemm, DeclinesWhenTheProductFeedsSomethingElse) {
  // The product read by a second node besides the GEMM.
  SeGraph se(SeGraphSpec{});
  ir::Value* scaled = se.g.find_value("scaled");
  ir::Node* relu = se.g.add_node("Relu", "other", {scaled}, {"other"}, {}, 14);
  se.g.outputs().push_back(relu->outputs[0]);
  ASSERT_TRUE(run_passes(se.g, {}).ok());
  ASSERT_TRUE(run_se_pass(se.g).ok());
  EXPECT_FALSE(rewritten(se.g)) << ir::print(se.g);
}

TEST(FusedMatMul, TransBOnABatchedBMatchesMatMulOfTheTransposedB) {
  // A [2,3,5,4] x B stored [2,1,6,4] (each [N, K]) with trans_b, bias and residual, against MatMul with the
  // transposed B and the epilogue written out.
  Tensor a = random_f32({2, 3, 5, 4}, 10), b = random_f32({2, 1, 6, 4}, 11), bias = random_f32({6}, 12),
         z = random_f32({2, 3, 5, 6}, 13);
  ir::Graph g;
  std::vector<ir::Value*> in = {graph_input(g, "a", {2, 3, 5, 4}), graph_input(g, "b", {2, 1, 6, 4}),
                                graph_input(g, "bias", {6}), graph_input(g, "z", {2, 3, 5, 6})};
  Attributes at;
  at.set("trans_b", int64_t{1});
  at.set("activation", std::string("relu"));
  at.set("residual_first", int64_t{1});
  g.outputs().push_back(g.add_node("FusedMatMul", "mm", in, {"y"}, at, 1, "kiln")->outputs[0]);
  ASSERT_TRUE(run_passes(g, {}).ok());
  EXPECT_EQ(g.outputs()[0]->shape, ops::shape_from_dims({2, 3, 5, 6}));
  auto got = run_reference(g, {a, b, bias, z});
  ASSERT_EQ(got.size(), 1u);
  // The oracle, by hand in double.
  Tensor want(DataType::kFLOAT, {2, 3, 5, 6});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t r = 0; r < 5; ++r)
        for (int64_t j = 0; j < 6; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < 4; ++k)
            acc += double(a.data<float>()[((n * 3 + h) * 5 + r) * 4 + k]) * b.data<float>()[(n * 6 + j) * 4 + k];
          const int64_t o = ((n * 3 + h) * 5 + r) * 6 + j;
          acc += bias.data<float>()[j] + z.data<float>()[o];
          want.data<float>()[o] = static_cast<float>(acc > 0 ? acc : 0);
        }
  expect_close(got[0], want, 1e-5, 1e-5);
}

// The efficientnet-style block through the whole CUDA FP16 pipeline: at 28x28 (H*W = 784, M = 24) the SE multiply
// over [N, 28, 28, 144] disappears into a [N, 1, 24, 144] weight product; at 7x7 (49 < 4 * 24) it stays.
TEST(SeScaleGemm, EfficientnetBlockInTheCudaPipeline) {
  for (int64_t hw : {28, 7}) {
    SCOPED_TRACE("hw " + std::to_string(hw));
    auto [cpu, cuda] = cpu_and_cuda_graphs(se_block_cnn(2, hw, 144));
    ASSERT_TRUE(cpu && cuda);
    const ir::Node* proj = nullptr;  // the projection: the GEMM that writes 24 channels at full resolution
    int full_size = 0;               // nodes writing [2, hw, hw, 144]
    for (auto& n : cuda->nodes()) {
      const auto& s = n->outputs[0]->shape;
      if (n->op_type == "FusedMatMul" && s == ops::shape_from_dims({2, hw, hw, 24})) proj = n.get();
      full_size += s == ops::shape_from_dims({2, hw, hw, 144});
    }
    ASSERT_NE(proj, nullptr) << ir::print(*cuda);
    if (hw == 28) {
      EXPECT_EQ(full_size, 1) << "only the conv writes the block's activation\n" << ir::print(*cuda);
      ASSERT_FALSE(proj->inputs[1]->is_constant()) << ir::print(*cuda);
      EXPECT_EQ(proj->inputs[1]->shape, ops::shape_from_dims({2, 1, 24, 144}));
      EXPECT_EQ(proj->inputs[1]->dtype, DataType::kHALF);
      ASSERT_NE(proj->inputs[0]->producer, nullptr);
      EXPECT_EQ(proj->inputs[0]->producer->op_type, "FusedConv");
    } else {
      EXPECT_EQ(full_size, 2) << ir::print(*cuda);
      EXPECT_TRUE(proj->inputs[1]->is_constant()) << ir::print(*cuda);
    }
    expect_same_on_reference(*cpu, *cuda, random_f32({2, 8, hw, hw}, 92), 3e-2);
  }
}

}  // namespace

// ---- The CUDA GEMM's batch plan (gemm_geometry.h, host arithmetic) ----

namespace {

using kiln::cuda::GemmGeometry;

// Y computed by following the plan (each host-loop call, each matrix of its strided batch, row-major m x n), for
// comparison with MatMul's reference compute.
Tensor run_plan(const GemmGeometry& gm, const Tensor& a, const Tensor& b, std::vector<int64_t> y_shape) {
  Tensor y(DataType::kFLOAT, y_shape);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* py = y.data<float>();
  for (size_t call = 0; call < gm.off_a.size(); ++call)
    for (int64_t j = 0; j < gm.batch; ++j)
      for (int64_t r = 0; r < gm.m; ++r)
        for (int64_t c = 0; c < gm.n; ++c) {
          double acc = 0;
          const float* ra = pa + gm.off_a[call] + j * gm.sa + r * gm.k;
          const float* cb = pb + gm.off_b[call] + j * gm.sb + c;
          for (int64_t q = 0; q < gm.k; ++q) acc += double(ra[q]) * cb[q * gm.n];
          py[gm.off_y[call] + j * gm.sd + r * gm.n + c] = static_cast<float>(acc);
        }
  return y;
}

TEST(GemmGeometry, PerSampleWeightsAreOneStridedBatch) {
  // se_scale_gemm's projection at efficientnet's 56x56 stage: H folds into the rows, the samples are the batch.
  auto gm = kiln::cuda::gemm_geometry({8, 56, 56, 144}, {8, 1, 144, 24});
  ASSERT_TRUE(gm.ok()) << gm.status().message();
  EXPECT_EQ(gm->off_a.size(), 1u) << "one cuBLASLt call";
  EXPECT_EQ(gm->batch, 8);
  EXPECT_EQ(gm->m, 56 * 56);
  EXPECT_EQ(gm->n, 24);
  EXPECT_EQ(gm->k, 144);
  EXPECT_EQ(gm->sa, 56 * 56 * 144);
  EXPECT_EQ(gm->sb, 144 * 24);
  EXPECT_EQ(gm->sd, 56 * 56 * 24);
  // The shared weight before the rewrite: one tall GEMM over every sample's rows.
  auto shared = kiln::cuda::gemm_geometry({8, 56, 56, 144}, {144, 24});
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ(shared->off_a.size(), 1u);
  EXPECT_EQ(shared->batch, 1);
  EXPECT_EQ(shared->m, 8 * 56 * 56);
}

TEST(GemmGeometry, PlanComputesWhatMatMulComputes) {
  struct Case {
    std::vector<int64_t> a, b;
  };
  const Case cases[] = {{{3, 4, 5, 6}, {3, 1, 6, 7}},
                        {{3, 4, 5, 6}, {6, 7}},
                        {{2, 3, 4, 5}, {2, 3, 5, 2}},
                        {{4, 5, 6}, {2, 1, 6, 3}},
                        {{1, 4, 5, 6}, {3, 1, 6, 2}},
                        {{2, 1, 4, 5}, {1, 3, 5, 2}},
                        {{5}, {5, 3}},
                        {{4, 5}, {5}}};
  uint32_t seed = 40;
  for (const Case& c : cases) {
    SCOPED_TRACE(dims_to_string(c.a) + " x " + dims_to_string(c.b));
    Tensor a = random_f32(c.a, seed++), b = random_f32(c.b, seed++);
    std::vector<Tensor> want(1);
    Attributes none;
    ops::ComputeContext ctx(none, 17, {&a, &b}, &want);
    ASSERT_TRUE(ops::OpRegistry::instance().find("MatMul")->compute(ctx).ok());
    auto gm = kiln::cuda::gemm_geometry(c.a, c.b);
    ASSERT_TRUE(gm.ok()) << gm.status().message();
    expect_close(run_plan(*gm, a, b, want[0].shape()), want[0], 1e-5, 1e-5);
  }
}

}  // namespace
