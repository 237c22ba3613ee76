// Unit tests for align_gemm_weights: a constant GEMM weight with rows that are not whole 16-byte vectors is kept
// transposed ([N, K], trans_b) when its columns are, with the same result; aligned and unsuitable weights stay.
#include <gtest/gtest.h>

#include "cnn_test_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

// x [2, 3, K] -> MatMul or FusedMatMul (bias, GELU, residual) with a constant B [K, N] -> y, in `dt`.
struct OneGemm {
  ir::Graph g;
  std::vector<Tensor> inputs;
  OneGemm(int64_t k, int64_t n, DataType dt, bool fused) {
    ir::Value* x = graph_input(g, "x", {2, 3, k});
    x->dtype = dt;
    inputs.push_back(random_f32({2, 3, k}, 1).cast(dt));
    std::vector<ir::Value*> in = {x, g.add_constant("w", random_f32({k, n}, 2).cast(dt))};
    ir::Node* node;
    if (fused) {
      in.push_back(g.add_constant("b", random_f32({n}, 3).cast(dt)));
      ir::Value* z = graph_input(g, "z", {2, 3, n});
      z->dtype = dt;
      in.push_back(z);
      inputs.push_back(random_f32({2, 3, n}, 4).cast(dt));
      Attributes a;
      a.set("activation", std::string("gelu_erf"));
      node = g.add_node("FusedMatMul", "mm", in, {"y"}, a, 1, "kiln");
    } else {
      node = g.add_node("MatMul", "mm", in, {"y"}, {}, 13);
    }
    node->outputs[0]->dtype = dt;
    g.outputs().push_back(node->outputs[0]);
  }
};

Status align(ir::Graph& g) {
  passes::PassList l;
  l.push_back(passes::make_align_gemm_weights());
  return run_passes(g, std::move(l));
}

TEST(AlignGemmWeights, UnalignedWeightsAreStoredTransposedWithTheSameResult) {
  // Rows of 50 halves (100 bytes) or 13 floats are not 16-byte vectors; K = 64 rows are.
  struct Case { DataType dt; int64_t n; bool fused; };
  for (Case c : {Case{DataType::kHALF, 50, false}, Case{DataType::kHALF, 50, true}, Case{DataType::kFLOAT, 13, false},
                 Case{DataType::kBF16, 61, true}}) {
    SCOPED_TRACE(std::string(dtype_name(c.dt)) + " N " + std::to_string(c.n) + (c.fused ? " fused" : ""));
    OneGemm m(64, c.n, c.dt, c.fused);
    ASSERT_TRUE(run_passes(m.g, {}).ok());
    auto want = run_reference(m.g, m.inputs);
    ASSERT_TRUE(align(m.g).ok());
    ASSERT_EQ(count_ops(m.g, "MatMul"), 0) << ir::print(m.g);
    ASSERT_EQ(count_ops(m.g, "FusedMatMul"), 1) << ir::print(m.g);
    const ir::Node* mm = m.g.nodes().front().get();
    EXPECT_EQ(mm->attrs.get_int("trans_b", 0).value(), 1);
    const auto& ws = mm->inputs[1]->constant->shape();
    EXPECT_EQ(ws, (std::vector<int64_t>{c.n, 64}));
    EXPECT_EQ(m.g.outputs()[0]->name, "y");
    auto got = run_reference(m.g, m.inputs);
    ASSERT_EQ(got.size(), 1u);
    // The same products in the same order: only the weight's layout changed.
    expect_close(got[0].cast(DataType::kFLOAT), want[0].cast(DataType::kFLOAT), 1e-6, 1e-6);
  }
}

TEST(AlignGemmWeights, AlignedOrUnsuitableWeightsStay) {
  // N = 64 halves is aligned; K = 30 halves would make the transposed rows unaligned instead.
  for (auto [k, n] : {std::pair<int64_t, int64_t>{64, 64}, {30, 50}}) {
    SCOPED_TRACE("K " + std::to_string(k) + " N " + std::to_string(n));
    OneGemm m(k, n, DataType::kHALF, false);
    ASSERT_TRUE(align(m.g).ok());
    EXPECT_EQ(count_ops(m.g, "MatMul"), 1) << ir::print(m.g);
    EXPECT_EQ(count_ops(m.g, "FusedMatMul"), 0);
  }
}

}  // namespace
