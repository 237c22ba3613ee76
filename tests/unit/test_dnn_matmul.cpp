// The host-side logic of FusedMatMul's cuDNN graph tactic (src/backends/cuda/dnn_matmul.h): stable names, the
// KILN_DNN_MATMUL gate, which layers are offered it, the tactic order, and the descriptors' dimensions and strides
// checked against plain row-major indexing of the stored matrices.
#include <gtest/gtest.h>

#include <cstdlib>
#include <tuple>

#include "backends/cuda/dnn_matmul.h"

namespace kiln::cuda {
namespace {

// The names go into engines and timing caches: they must not change.
TEST(DnnMatmulTactics, NamesAreStableAndRoundTrip) {
  EXPECT_EQ(dnn_matmul_tactic_name(0), "cudnn_matmul_fused_0");
  EXPECT_EQ(dnn_matmul_tactic_name(2), "cudnn_matmul_fused_2");
  for (int r : {0, 1, 2, 7, 42, 999}) EXPECT_EQ(dnn_matmul_tactic_index(dnn_matmul_tactic_name(r)), r);
  for (const char* other : {"", "lt_heur0", "cudnn_matmul_fused_", "cudnn_matmul_fused_-1", "cudnn_matmul_fused_1x",
                            "cudnn_matmul_fused_1000", "cudnn_fwd_algo1_tc", "xcudnn_matmul_fused_0"})
    EXPECT_EQ(dnn_matmul_tactic_index(other), -1) << other;
}

// On by default; only "0" withdraws the tactics (like KILN_DW_TILED and KILN_STEM_MMA).
TEST(DnnMatmulTactics, OnUnlessTheSwitchIsZero) {
  const char* old = std::getenv("KILN_DNN_MATMUL");
  const std::string saved = old ? old : "";
  unsetenv("KILN_DNN_MATMUL");
  EXPECT_TRUE(dnn_matmul_enabled());
  for (const char* on : {"1", "", "yes", "00"}) {
    setenv("KILN_DNN_MATMUL", on, 1);
    EXPECT_TRUE(dnn_matmul_enabled()) << on;
  }
  setenv("KILN_DNN_MATMUL", "0", 1);
  EXPECT_FALSE(dnn_matmul_enabled());
  if (old)
    setenv("KILN_DNN_MATMUL", saved.c_str(), 1);
  else
    unsetenv("KILN_DNN_MATMUL");
}

// Offered exactly where cuBLASLt's epilogue leaves work to the second pass: the erf-GELU, SiLU and sigmoid always; ReLU and
// tanh-GELU only with a residual added after them; never without an activation (cuBLASLt's C takes the
// residual) and never where the residual comes first (also cuBLASLt's C, before its activation).
TEST(DnnMatmulTactics, OfferedOnlyWhereCublasLtNeedsASecondPass) {
  for (bool res : {false, true})
    for (bool first : {false, true}) {
      // cuBLASLt has no SiLU or sigmoid epilogue: its path always makes the second pass for them.
      for (const char* act : {"gelu_erf", "silu", "sigmoid"}) EXPECT_TRUE(dnn_matmul_wanted(act, res, first)) << act;
      EXPECT_FALSE(dnn_matmul_wanted("none", res, first));
      for (const char* act : {"relu", "gelu_tanh"}) EXPECT_EQ(dnn_matmul_wanted(act, res, first), res && !first) << act;
    }
}

// cuBLASLt's first choice stays the untuned default; cuDNN's plans come next so the tuner's limit reaches them;
// with none, the list is cuBLASLt's unchanged.
TEST(DnnMatmulTactics, MergedOrder) {
  const std::vector<std::string> lt = {"lt_heur0", "lt_heur1", "lt_heur2"};
  EXPECT_EQ(merge_matmul_tactics(lt, {}), lt);
  EXPECT_EQ(
      merge_matmul_tactics(lt, {"cudnn_matmul_fused_0", "cudnn_matmul_fused_1"}),
      (std::vector<std::string>{"lt_heur0", "cudnn_matmul_fused_0", "cudnn_matmul_fused_1", "lt_heur1", "lt_heur2"}));
  EXPECT_EQ(merge_matmul_tactics({"lt_heur0"}, {"cudnn_matmul_fused_0"}),
            (std::vector<std::string>{"lt_heur0", "cudnn_matmul_fused_0"}));
}

int64_t offset(const DnnDims& t, int64_t i, int64_t j) { return i * t.strides[1] + j * t.strides[2]; }

// Every element (i, j) of the logical operand lands where the row-major stored matrix holds it.
TEST(DnnMatmulLayout, StridesAddressTheStoredMatrices) {
  for (bool tb : {false, true})
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{8192, 3072, 768}, {77, 101, 33}, {1, 1, 1}}) {
      SCOPED_TRACE(::testing::Message() << "m" << m << " n" << n << " k" << k << (tb ? " trans_b" : ""));
      const DnnMatmulLayout l = dnn_matmul_layout(m, n, k, tb);
      EXPECT_EQ(l.a.dims[0], 1);
      EXPECT_EQ(l.a.dims[1], m);
      EXPECT_EQ(l.a.dims[2], k);
      EXPECT_EQ(l.b.dims[1], k);
      EXPECT_EQ(l.b.dims[2], n);
      EXPECT_EQ(l.bias.dims[1], 1);
      EXPECT_EQ(l.bias.dims[2], n);
      EXPECT_EQ(l.y.dims[1], m);
      EXPECT_EQ(l.y.dims[2], n);
      for (int64_t i : {int64_t{0}, m / 2, m - 1})
        for (int64_t j : {int64_t{0}, k / 2, k - 1}) EXPECT_EQ(offset(l.a, i, j), i * k + j);
      for (int64_t i : {int64_t{0}, k / 2, k - 1})
        for (int64_t j : {int64_t{0}, n / 2, n - 1})
          EXPECT_EQ(offset(l.b, i, j), tb ? j * k + i : i * n + j);  // stored [N, K] or [K, N]
      for (int64_t i : {int64_t{0}, m - 1})
        for (int64_t j : {int64_t{0}, n - 1}) EXPECT_EQ(offset(l.y, i, j), i * n + j);
      // The bias row is one vector for every output row.
      EXPECT_EQ(offset(l.bias, 0, n - 1), n - 1);
      // The batch stride spans a whole matrix (one batch; cuDNN checks it is consistent).
      EXPECT_EQ(l.a.strides[0], m * k);
      EXPECT_EQ(l.b.strides[0], k * n);
      EXPECT_EQ(l.y.strides[0], m * n);
    }
}

TEST(DnnMatmulLayout, DeclinedProblems) {
  DnnMatmulSpec s;
  s.dt = DataType::kHALF;
  s.m = 128, s.n = 3072, s.k = 768;
  s.act = "gelu_erf";
  EXPECT_EQ(dnn_matmul_declined(s, 1, 1), "");
  s.dt = DataType::kBF16;
  EXPECT_EQ(dnn_matmul_declined(s, 1, 1), "");
  s.dt = DataType::kFLOAT;
  EXPECT_NE(dnn_matmul_declined(s, 1, 1), "");
  s.dt = DataType::kHALF;
  EXPECT_NE(dnn_matmul_declined(s, 4, 1), "");  // a strided batch
  EXPECT_NE(dnn_matmul_declined(s, 1, 3), "");  // host-loop calls
  DnnMatmulSpec e = s;
  e.k = 0;
  EXPECT_NE(dnn_matmul_declined(e, 1, 1), "");
  DnnMatmulSpec a = s;
  a.alpha = 0.5f;
  EXPECT_NE(dnn_matmul_declined(a, 1, 1), "");
  DnnMatmulSpec x = s;
  x.act = "swish";
  EXPECT_NE(dnn_matmul_declined(x, 1, 1), "");
  for (const char* act : {"none", "relu", "gelu_tanh", "silu", "sigmoid"}) {
    DnnMatmulSpec k = s;
    k.act = act;
    EXPECT_EQ(dnn_matmul_declined(k, 1, 1), "") << act;
  }
}

}  // namespace
}  // namespace kiln::cuda
