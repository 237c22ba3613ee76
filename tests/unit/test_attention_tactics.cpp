// The FusedAttention tactics offered to the tuner (src/backends/cuda/attention_tactics.h): stable names, the
// untuned default first, which block sizes each shape is offered, and the cases that have none.
#include <gtest/gtest.h>

#include <algorithm>

#include "backends/cuda/attention_tactics.h"

namespace kiln::cuda {
namespace {

constexpr int kH200Sms = 132;

AttentionShape shape(int64_t B, int64_t H, int64_t S, int64_t D) {
  AttentionShape s;
  s.B = B, s.H = H, s.Sq = S, s.Sk = S, s.D = D, s.Dv = D;
  s.half_or_bf16 = true;
  s.aligned = true;
  return s;
}

bool has(const std::vector<std::string>& v, const std::string& name) {
  return std::find(v.begin(), v.end(), name) != v.end();
}

// The names go into engines and timing caches: they must not change.
TEST(AttentionTactics, NamesAreStableAndRoundTrip) {
  EXPECT_EQ(attention_tactic_name(1), "kiln_attn_mma_w1");
  EXPECT_EQ(attention_tactic_name(2), "kiln_attn_mma_w2");
  EXPECT_EQ(attention_tactic_name(4), "kiln_attn_mma_w4");
  EXPECT_EQ(attention_tactic_name(8), "kiln_attn_mma_w8");
  for (int w : kAttentionWarps) EXPECT_EQ(attention_tactic_warps(attention_tactic_name(w)), w);
  for (const char* other : {"", "kiln_attn_mma_w3", "kiln_attn_mma_w16", "kiln_depthwise_nhwc", "kiln_attn_mma_w",
                            "kiln_attn_mma_w8s2", "kiln_attn_mma_w4s3", "kiln_attn_mma_w4s"})
    EXPECT_EQ(attention_tactic_warps(other), 0) << other;
  // The key-split blocks.
  EXPECT_EQ(attention_tactic_name(1, 2), "kiln_attn_mma_w1s2");
  EXPECT_EQ(attention_tactic_name(4, 2), "kiln_attn_mma_w4s2");
  for (int w : kAttentionSplitWarps) {
    const AttentionBlock b = attention_tactic_block(attention_tactic_name(w, kAttentionKeySplit));
    EXPECT_EQ(b.warps, w);
    EXPECT_EQ(b.splits, kAttentionKeySplit);
  }
  EXPECT_EQ(attention_tactic_block("kiln_attn_mma_w4").splits, 1);
}

// The key-split blocks are offered where the grid leaves SMs idle (the untuned choice is one warp per block) and
// there are keys for at least two tiles: bert/vit/gpt2 at batch 1, not at batch 64, not for 64 keys or fewer.
TEST(AttentionTactics, KeySplitOnlyForSmallGridsWithTwoKeyTiles) {
  for (const AttentionShape& s : {shape(1, 12, 128, 64), shape(1, 12, 197, 64), shape(1, 12, 128, 32)}) {
    const auto v = attention_tactics(s, kH200Sms);
    for (int w : kAttentionSplitWarps) EXPECT_TRUE(has(v, attention_tactic_name(w, kAttentionKeySplit))) << w;
    EXPECT_LE(v.size(), 7u);  // with cuDNN's, all timed at the default optimization level
  }
  for (const AttentionShape& s : {shape(64, 12, 128, 64), shape(64, 12, 197, 64), shape(1, 12, 64, 64),
                                  shape(2, 2, 40, 64)})
    for (const auto& n : attention_tactics(s, kH200Sms)) EXPECT_EQ(attention_tactic_block(n).splits, 1) << n;
  // Queries for only one warp: the split block of one row warp, not the larger ones.
  AttentionShape few = shape(1, 2, 16, 64);
  few.Sk = 300;
  const auto v = attention_tactics(few, kH200Sms);
  EXPECT_TRUE(has(v, "kiln_attn_mma_w1s2"));
  EXPECT_FALSE(has(v, "kiln_attn_mma_w2s2"));
  EXPECT_FALSE(has(v, "kiln_attn_mma_w4s2"));
}

// The untuned default is the heuristic the kernel always had: four warps per block unless that grid would give
// fewer than two blocks per SM, then one.
TEST(AttentionTactics, DefaultIsTheHeuristicAndComesFirst) {
  const AttentionShape bert64 = shape(64, 12, 128, 64), bert1 = shape(1, 12, 128, 64);
  EXPECT_EQ(attention_default_warps(bert64, kH200Sms), 4);
  EXPECT_EQ(attention_default_warps(bert1, kH200Sms), 1);
  EXPECT_EQ(attention_default_warps(shape(11, 12, 64, 64), kH200Sms), 1);  // 132 blocks < 264
  EXPECT_EQ(attention_default_warps(shape(22, 12, 64, 64), kH200Sms), 4);  // 264 blocks
  EXPECT_EQ(attention_tactics(bert64, kH200Sms).front(), "kiln_attn_mma_w4");
  EXPECT_EQ(attention_tactics(bert1, kH200Sms).front(), "kiln_attn_mma_w1");
  for (const AttentionShape& s : {bert64, bert1, shape(64, 12, 197, 64), shape(2, 4, 77, 128)}) {
    const auto v = attention_tactics(s, kH200Sms);
    EXPECT_EQ(v.front(), attention_tactic_name(attention_default_warps(s, kH200Sms)));
    for (const auto& n : v) EXPECT_EQ(std::count(v.begin(), v.end(), n), 1) << n;
    EXPECT_LE(v.size(), 8u);  // all timed at the default optimization level
  }
}

// bert/vit at batch 64 are offered every block size, 8 warps (128 queries: K/V read once per head at S <= 128)
// included.
TEST(AttentionTactics, LongEnoughSequencesGetEveryBlockSize) {
  for (const AttentionShape& s : {shape(64, 12, 128, 64), shape(64, 12, 197, 64), shape(32, 12, 128, 32),
                                  shape(8, 16, 256, 128)}) {
    const auto v = attention_tactics(s, kH200Sms);
    EXPECT_EQ(v.size(), 4u);
    for (int w : kAttentionWarps) EXPECT_TRUE(has(v, attention_tactic_name(w))) << w;
  }
}

// A block size is offered while at least half its warps have query rows.
TEST(AttentionTactics, ShortSequencesDeclineMostlyIdleBlocks) {
  const auto s9 = attention_tactics(shape(3, 2, 9, 64), kH200Sms);
  EXPECT_EQ(s9, (std::vector<std::string>{"kiln_attn_mma_w1"}));
  const auto s40 = attention_tactics(shape(1, 2, 40, 64), kH200Sms);
  EXPECT_TRUE(has(s40, "kiln_attn_mma_w2"));
  EXPECT_TRUE(has(s40, "kiln_attn_mma_w4"));
  EXPECT_FALSE(has(s40, "kiln_attn_mma_w8"));
  EXPECT_FALSE(has(attention_tactics(shape(1, 2, 64, 64), kH200Sms), "kiln_attn_mma_w8"));
  EXPECT_TRUE(has(attention_tactics(shape(1, 2, 65, 64), kH200Sms), "kiln_attn_mma_w8"));
  // The default is offered even where its blocks are mostly idle (it is what runs untuned).
  EXPECT_EQ(attention_tactics(shape(64, 12, 16, 64), kH200Sms).front(), "kiln_attn_mma_w4");
}

// Where the tensor-core kernel does not run there is nothing to choose: the generic kernel runs.
TEST(AttentionTactics, NoTacticsWithoutTheTensorCoreKernel) {
  AttentionShape f32 = shape(64, 12, 128, 64);
  f32.half_or_bf16 = false;
  AttentionShape misaligned = shape(64, 12, 128, 64);
  misaligned.aligned = false;
  AttentionShape dv = shape(64, 12, 128, 64);
  dv.Dv = 32;
  for (const AttentionShape& s : {f32, misaligned, dv, shape(2, 4, 77, 12), shape(2, 4, 77, 136), shape(2, 4, 77, 256),
                                  shape(0, 12, 128, 64), shape(2, 12, 0, 64)}) {
    EXPECT_FALSE(attention_mma_applies(s) && s.B * s.H * s.Sq > 0);
    EXPECT_TRUE(attention_tactics(s, kH200Sms).empty());
  }
  for (int64_t d : {8, 16, 32, 40, 64, 80, 96, 120, 128}) EXPECT_TRUE(attention_mma_applies(shape(1, 1, 1, d))) << d;
}

// A head dim runs in the smallest instantiated tile that holds it.
TEST(AttentionTactics, HeadDimTiles) {
  const std::pair<int64_t, int64_t> cases[] = {{8, 32},  {32, 32}, {40, 64},  {64, 64},
                                               {72, 96}, {96, 96}, {104, 128}, {128, 128}};
  for (const auto& [d, tile] : cases) EXPECT_EQ(attention_mma_tile(d), tile) << d;
}

TEST(AttentionTactics, RowAlignment) {
  alignas(16) static char buf[4096];
  const int64_t bhsd[3] = {12 * 128 * 64, 128 * 64, 64};
  const int64_t bs3hd[3] = {128 * 3 * 12 * 64, 64, 3 * 12 * 64};
  EXPECT_TRUE(attention_rows_aligned(buf, buf + 16, buf + 32, buf + 4, bhsd, bhsd, bhsd, bhsd));
  EXPECT_TRUE(attention_rows_aligned(buf, buf + 128, buf + 256, buf, bs3hd, bs3hd, bs3hd, bhsd));
  EXPECT_FALSE(attention_rows_aligned(buf + 8, buf, buf, buf, bhsd, bhsd, bhsd, bhsd));  // a base off 16 bytes
  EXPECT_FALSE(attention_rows_aligned(buf, buf, buf, buf + 2, bhsd, bhsd, bhsd, bhsd));  // the output off 4 bytes
  const int64_t odd_row[3] = {77 * 80, 80, 76};  // rows 152 bytes apart
  EXPECT_FALSE(attention_rows_aligned(buf, buf, buf, buf, odd_row, bhsd, bhsd, bhsd));
  const int64_t odd_out[3] = {77 * 80, 80, 79};
  EXPECT_FALSE(attention_rows_aligned(buf, buf, buf, buf, bhsd, bhsd, bhsd, odd_out));
}

}  // namespace
}  // namespace kiln::cuda
