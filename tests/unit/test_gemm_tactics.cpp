// The cuBLASLt GEMM tactics offered to the tuner (src/backends/cuda/gemm_tactics.h): stable names that parse back,
// the eight heuristic ranks first (what the default level times), and the split-K variants only for problems whose
// output tiles leave most SMs idle.
#include <gtest/gtest.h>

#include <algorithm>

#include "backends/cuda/gemm_tactics.h"

namespace kiln::cuda {
namespace {

constexpr int kH100Sms = 132;

// The names go into engines and timing caches: they must not change.
TEST(GemmTactics, NamesAreStableAndParseBack) {
  EXPECT_EQ(lt_tactic_name(0), "lt_heur0");
  EXPECT_EQ(lt_tactic_name(3, 8), "lt_heur3_sk8");
  for (int r = 0; r < kLtRanks; ++r)
    for (int s : {1, 2, 4, 16}) {
      const LtTactic t = parse_lt_tactic(lt_tactic_name(r, s));
      EXPECT_EQ(t.rank, r);
      EXPECT_EQ(t.splitk, s);
    }
  // Not one of these: the kernel's default (rank 0, unsplit); a rank past the list is clamped to the last.
  for (const char* other : {"", "cudnn_matmul_fused_0", "lt_heur", "heur3"}) {
    const LtTactic t = parse_lt_tactic(other);
    EXPECT_EQ(t.rank, 0) << other;
    EXPECT_EQ(t.splitk, 1) << other;
  }
  EXPECT_EQ(parse_lt_tactic("lt_heur12").rank, kLtRanks - 1);
  EXPECT_EQ(parse_lt_tactic("lt_heur1_x4").splitk, 1);
}

// bert_base at batch 1 (128 tokens): 6 to 18 output tiles for 132 SMs, so splits are offered; largest first, each
// part at least 128 deep.
TEST(GemmTactics, SplitCountsForBatchOneTransformerGemms) {
  EXPECT_EQ(splitk_counts(128, 768, 3072, kH100Sms), (std::vector<int>{16, 8}));  // FFN2: 6 tiles
  EXPECT_EQ(splitk_counts(128, 2304, 768, kH100Sms), (std::vector<int>{4, 2}));   // QKV: 18 tiles
  EXPECT_EQ(splitk_counts(128, 768, 768, kH100Sms), (std::vector<int>{4, 2}));  // out-proj: 6 tiles, K / 128 = 6
  EXPECT_EQ(splitk_counts(128, 768, 256, kH100Sms), (std::vector<int>{2}));  // two parts of 128
  // Enough tiles (batch 64: 8192 rows), too shallow a K, or the SM count unknown: none.
  EXPECT_TRUE(splitk_counts(8192, 768, 3072, kH100Sms).empty());
  EXPECT_TRUE(splitk_counts(128, 768, 200, kH100Sms).empty());
  EXPECT_TRUE(splitk_counts(128, 768, 3072, 0).empty());
  EXPECT_TRUE(splitk_counts(0, 768, 3072, kH100Sms).empty());
  EXPECT_TRUE(splitk_counts(128 * 12, 128 * 6, 3072, kH100Sms).empty());  // 72 tiles: more than half of 132
}

// The default level times the first eight: always the ranks; the splits follow, for levels 4 and 5.
TEST(GemmTactics, RanksFirstSplitsAfter) {
  for (const auto& v : {lt_tactics(128, 768, 3072, kH100Sms), lt_tactics(8192, 768, 3072, kH100Sms),
                        lt_tactics(0, 0, 0, 0)}) {
    ASSERT_GE(v.size(), static_cast<size_t>(kLtRanks));
    for (int r = 0; r < kLtRanks; ++r) EXPECT_EQ(v[r], lt_tactic_name(r));
    for (const auto& n : v) EXPECT_EQ(std::count(v.begin(), v.end(), n), 1) << n;
  }
  const auto small = lt_tactics(128, 768, 3072, kH100Sms);
  EXPECT_EQ(small.size(), static_cast<size_t>(kLtRanks + 4 * 2));
  EXPECT_EQ(small[kLtRanks], "lt_heur0_sk16");
  EXPECT_EQ(lt_tactics(8192, 768, 3072, kH100Sms).size(), static_cast<size_t>(kLtRanks));
}

// The folded-LayerNorm kinds (FusedMatMul with norm_epsilon): stable names; float16, B [K, N], no residual, no
// activation or erf GELU; the large tiles first at vit's shapes and the narrow ones first at few tiles; in the
// layer's list before cuBLASLt's (which run over standardized rows) at large sizes and after them at few tiles, and
// cuBLASLt's alone where no kind takes the layer.
TEST(GemmTactics, CutlassNormKindsForFoldedLayerNorms) {
  for (int c : kCutlassNormConfigs) {
    EXPECT_EQ(parse_cutlass_tactic(cutlass_norm_tactic_name(c)).act, CutlassAct::kNorm);
    EXPECT_EQ(parse_cutlass_tactic(cutlass_norm_tactic_name(c)).config, c);
    EXPECT_EQ(parse_cutlass_tactic(cutlass_ngelu_tactic_name(c)).act, CutlassAct::kNormGelu);
  }
  EXPECT_EQ(cutlass_ngelu_tactic_name(1), "cutlass_ngelu_c1");
  EXPECT_EQ(parse_cutlass_tactic("cutlass_norm_c2").config, -1);
  CutlassProblem p;
  p.available = p.reduced_type = p.half = p.norm = p.no_act = p.bias = true;
  p.m = 12608, p.n = 2304, p.k = 768;  // vit_b_16's QKV at batch 64
  EXPECT_EQ(cutlass_kind(p), CutlassAct::kNorm);
  const std::vector<std::string> lt = lt_tactics(p.m, p.n, p.k, kH100Sms);
  std::vector<std::string> want = {"cutlass_norm_c1", "cutlass_norm_c3", "cutlass_norm_c0"};
  want.insert(want.end(), lt.begin(), lt.end());
  EXPECT_EQ(with_cutlass_tactics(lt, p, kH100Sms), want);
  CutlassProblem g = p;
  g.no_act = false;
  g.gelu_erf = true;
  g.m = 197;  // batch 1: 18 tiles of 128x128
  EXPECT_EQ(cutlass_kind(g), CutlassAct::kNormGelu);
  EXPECT_EQ(cutlass_tactics(g, kH100Sms), (std::vector<std::string>{"cutlass_ngelu_c0", "cutlass_ngelu_c1"}));
  const std::vector<std::string> few = with_cutlass_tactics(lt, g, kH100Sms);
  ASSERT_EQ(few.size(), lt.size() + 2);
  EXPECT_EQ(few.front(), lt.front());
  EXPECT_EQ(few.back(), "cutlass_ngelu_c1");
  for (auto change : {+[](CutlassProblem& q) { q.half = false; }, +[](CutlassProblem& q) { q.trans_b = true; },
                      +[](CutlassProblem& q) { q.residual = true; }, +[](CutlassProblem& q) { q.no_act = false; },
                      +[](CutlassProblem& q) { q.available = false; }, +[](CutlassProblem& q) { q.n = 2300; }}) {
    CutlassProblem q = p;
    change(q);
    EXPECT_FALSE(cutlass_kind(q).has_value());
    EXPECT_EQ(with_cutlass_tactics(lt, q, kH100Sms), lt);
  }
}

// The CUTLASS GEMM + erf-GELU tactics: stable names, offered only where the build has the kernels and the layer fits
// them, the narrow ping-pong kernel first where few output tiles leave SMs idle, and placed right after cuBLASLt's
// first choice so that the default level times them.
TEST(GemmTactics, CutlassGeluOfferedForErfGeluLayersThatFit) {
  for (int c : kCutlassGeluConfigs) EXPECT_EQ(parse_cutlass_tactic(cutlass_gelu_tactic_name(c)).config, c);
  EXPECT_EQ(cutlass_gelu_tactic_name(1), "cutlass_gelu_c1");
  EXPECT_EQ(parse_cutlass_tactic("cutlass_gelu_c4").config, -1);  // dropped in kernel set 4 (cutlass_gemm.h)
  EXPECT_EQ(parse_cutlass_tactic("cutlass_gelu_c7").config, -1);
  EXPECT_EQ(parse_cutlass_tactic("lt_heur0").config, -1);
  CutlassProblem p;
  p.available = p.gelu_erf = p.reduced_type = true;
  p.m = 8192, p.n = 3072, p.k = 768;
  EXPECT_EQ(cutlass_tactics(p, 132),
            (std::vector<std::string>{"cutlass_gelu_c8", "cutlass_gelu_c1", "cutlass_gelu_c3"}));
  EXPECT_EQ(cutlass_kind(p), CutlassAct::kGeluErf);
  p.m = 128;  // bert at batch 1: 24 tiles of 128x128 for 132 SMs
  // The same kind whatever the offer order: an engine recording c1 (offered to large problems only) still builds it.
  EXPECT_EQ(cutlass_kind(p), CutlassAct::kGeluErf);
  EXPECT_EQ(cutlass_tactics(p, 132), (std::vector<std::string>{"cutlass_gelu_c2", "cutlass_gelu_c0"}));
  auto without = [&](auto change) {
    CutlassProblem q = p;
    change(q);
    // No kind means no tactic, at any SM count (the check FusedMatMul makes at build and at load).
    EXPECT_EQ(cutlass_tactics(q, 132).empty(), !cutlass_kind(q).has_value());
    return cutlass_tactics(q, 132).empty();
  };
  EXPECT_TRUE(without([](CutlassProblem& q) { q.available = false; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.gelu_erf = false; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.residual = true; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.reduced_type = false; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.trans_b = true; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.gemms = 4; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.n = 3070; }));
  EXPECT_TRUE(without([](CutlassProblem& q) { q.k = 770; }));
  // SiLU layers (1x1 convolutions: B stored [N, K]): configurations 0 and 2 only, and only with trans_b.
  CutlassProblem s = p;
  s.gelu_erf = false;
  s.silu = true;
  s.trans_b = true;
  s.m = 1605632, s.n = 96, s.k = 16;  // efficientnet_b0's first expand layer at batch 128
  EXPECT_EQ(cutlass_tactics(s, 132), (std::vector<std::string>{"cutlass_silu_c0", "cutlass_silu_c2"}));
  EXPECT_EQ(cutlass_kind(s), CutlassAct::kSilu);
  s.trans_b = false;
  EXPECT_FALSE(cutlass_kind(s).has_value());
  EXPECT_TRUE(cutlass_tactics(s, 132).empty());
  EXPECT_EQ(parse_cutlass_tactic("cutlass_silu_c2").act, CutlassAct::kSilu);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_silu_c2").config, 2);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_silu_c1").config, -1);  // not built
  EXPECT_EQ(parse_cutlass_tactic("cutlass_silu_c0").act, CutlassAct::kSilu);  // a SiLU name is no GELU configuration
  EXPECT_EQ(parse_cutlass_tactic("cutlass_gelu_c0").act, CutlassAct::kGeluErf);
  // Bias + residual with no activation (bert's attention output projection, B stored [N, K], and FFN2, B [K, N]):
  // the ping-pong 128x128 kernel, for either layout; not with an activation or a broadcast residual.
  CutlassProblem r;
  r.available = r.reduced_type = r.residual = r.no_act = true;
  r.m = 8192, r.n = 768, r.k = 768;
  for (bool tb : {true, false}) {
    r.trans_b = tb;
    EXPECT_EQ(cutlass_tactics(r, 132), (std::vector<std::string>{"cutlass_res_c4"}));
    EXPECT_EQ(cutlass_kind(r), CutlassAct::kResidual);
  }
  CutlassProblem ra = r;
  ra.no_act = false;
  ra.gelu_erf = true;
  EXPECT_TRUE(cutlass_tactics(ra, 132).empty());
  EXPECT_FALSE(cutlass_kind(ra).has_value());  // no CUTLASS kernel does a residual and an activation
  CutlassProblem rb = r;
  rb.residual_full = false;
  EXPECT_TRUE(cutlass_tactics(rb, 132).empty());
  CutlassProblem rc = r;
  rc.reduced_type = false;  // float32
  EXPECT_TRUE(cutlass_tactics(rc, 132).empty());
  EXPECT_EQ(parse_cutlass_tactic("cutlass_res_c4").act, CutlassAct::kResidual);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_res_c4").config, 4);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_res_c6").config, -1);  // dropped in kernel set 4
  EXPECT_EQ(parse_cutlass_tactic("cutlass_res_c5").config, -1);  // dropped in kernel set 5
  EXPECT_EQ(parse_cutlass_tactic("cutlass_res_c0").config, -1);  // not built
  EXPECT_EQ(parse_cutlass_tactic("cutlass_gelu_c3").act, CutlassAct::kGeluErf);
  // Bias alone (a QKV projection), B either way: cuBLASLt's epilogue does it; no CUTLASS kind since kernel set 5.
  CutlassProblem q;
  q.available = q.reduced_type = q.no_act = true;
  q.m = 8192, q.n = 2304, q.k = 768;
  for (bool tb : {true, false}) {
    q.trans_b = tb;
    EXPECT_FALSE(cutlass_kind(q).has_value());
    EXPECT_TRUE(cutlass_tactics(q, 132).empty());
  }
  EXPECT_EQ(parse_cutlass_tactic("cutlass_bias_c5").config, -1);  // dropped in kernel set 5
  // The product alone into rows of an odd width (gpt2's lm_head, B stored [N, K]): the kernels with rows staged in
  // shared memory; not with a bias, an activation, a residual or B stored [K, N]; other kinds still need N a multiple
  // of 8.
  CutlassProblem o;
  o.available = o.reduced_type = o.no_act = o.trans_b = true;
  o.m = 4096, o.n = 50257, o.k = 768;
  EXPECT_EQ(cutlass_kind(o), CutlassAct::kOddWidth);
  EXPECT_EQ(cutlass_tactics(o, 132), (std::vector<std::string>{"cutlass_odd_c1", "cutlass_odd_c4"}));
  for (auto change : {+[](CutlassProblem& p) { p.bias = true; }, +[](CutlassProblem& p) { p.trans_b = false; },
                      +[](CutlassProblem& p) { p.no_act = false, p.gelu_erf = true; },
                      +[](CutlassProblem& p) { p.residual = true; }, +[](CutlassProblem& p) { p.k = 770; }}) {
    CutlassProblem oc = o;
    change(oc);
    EXPECT_FALSE(cutlass_kind(oc).has_value());
  }
  CutlassProblem og = o;
  og.no_act = false, og.gelu_erf = true, og.trans_b = false;  // GELU at an odd width: no kind
  EXPECT_FALSE(cutlass_kind(og).has_value());
  EXPECT_EQ(parse_cutlass_tactic("cutlass_odd_c4").act, CutlassAct::kOddWidth);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_odd_c4").config, 4);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_odd_c1").config, 1);
  EXPECT_EQ(parse_cutlass_tactic("cutlass_odd_c0").config, -1);  // not built
  const std::vector<std::string> lt = lt_tactics(8192, 3072, 768, 132);
  // Merged into cuBLASLt's ranks: after its first choice; at an odd width, before all of them.
  CutlassProblem g;
  g.available = g.reduced_type = g.gelu_erf = true;
  g.m = 8192, g.n = 3072, g.k = 768;
  const std::vector<std::string> merged = with_cutlass_tactics(lt, g, 132);
  ASSERT_EQ(merged.size(), lt.size() + 3);
  EXPECT_EQ(merged[0], "lt_heur0");
  EXPECT_EQ(merged[1], "cutlass_gelu_c8");
  EXPECT_EQ(merged[2], "cutlass_gelu_c1");
  EXPECT_EQ(merged[3], "cutlass_gelu_c3");
  EXPECT_EQ(merged[4], "lt_heur1");
  const std::vector<std::string> odd_first = with_cutlass_tactics(lt, o, 132);
  ASSERT_EQ(odd_first.size(), lt.size() + 2);
  EXPECT_EQ(odd_first[0], "cutlass_odd_c1");
  EXPECT_EQ(odd_first[1], "cutlass_odd_c4");
  EXPECT_EQ(odd_first[2], "lt_heur0");
  CutlassProblem none = g;
  none.available = false;  // no kernels built: cuBLASLt's list as it was
  EXPECT_EQ(with_cutlass_tactics(lt, none, 132), lt);
}

}  // namespace
}  // namespace kiln::cuda
