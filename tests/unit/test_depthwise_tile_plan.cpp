// The tiled depthwise convolution's host-side plan (backends/cuda/depthwise_tile_plan.h): for the windows and
// strides it takes, the tiles and channel chunks cover every output exactly once under the kernel's thread
// mapping, every tile position a thread reads lies inside the staged input tile (one slot per column, stride-2
// columns split by phase), the block stays within its thread and shared-memory limits, and windows, strides and
// vector widths it does not take are declined. For the pipelined variant also: two buffers, and its persistent
// schedule (blocks striding over the tiles of their chunk) covers every output exactly once. The row-streaming
// plan likewise, with its ring schedule (DepthwiseRowsPlan.*).
#include <gtest/gtest.h>

#include <vector>

#include "backends/cuda/depthwise_tile_plan.h"

namespace kiln::cuda {
namespace {

void check_plan(int n, int oh, int ow, int vecs, int vec, int k, int s, int variant) {
  SCOPED_TRACE("n " + std::to_string(n) + " out " + std::to_string(oh) + "x" + std::to_string(ow) + " vecs " +
               std::to_string(vecs) + "x" + std::to_string(vec) + " k " + std::to_string(k) + " s " +
               std::to_string(s) + " variant " + std::to_string(variant));
  const DwTilePlan p = dw_tile_plan(n, oh, ow, vecs, vec, k, s, variant);
  ASSERT_TRUE(p.ok);
  const int R = kDwTileRows;
  ASSERT_EQ(p.th % R, 0);
  const int groups = p.th / R;
  EXPECT_EQ(p.threads, p.cv * p.tw * groups);
  EXPECT_LE(p.threads, kDwTileThreads);
  EXPECT_GE(p.cv, 1);
  EXPECT_LE(p.cv, variant >= kDwTileWide ? kDwWideMaxVecs : kDwTileMaxVecs);
  // Tiles and chunks cover the outputs and channels, none wholly outside them.
  EXPECT_GE(p.tiles_x * p.tw, ow);
  EXPECT_LT((p.tiles_x - 1) * p.tw, ow);
  EXPECT_GE(p.tiles_y * p.th, oh);
  EXPECT_LT((p.tiles_y - 1) * p.th, oh);
  EXPECT_GE(p.chunks * p.cv, vecs);
  EXPECT_LT((p.chunks - 1) * p.cv, vecs);
  EXPECT_EQ(p.blocks, static_cast<int64_t>(n) * p.tiles_y * p.tiles_x * p.chunks);
  // The input tile holds every row and column a thread reads: rows grp * R * s + j for j < (R - 1) * s + k,
  // columns col * s + kx.
  EXPECT_LE((groups - 1) * R * s + (R - 1) * s + k, p.in_h);
  EXPECT_LE((p.tw - 1) * s + k, p.in_w);
  // Staged columns map one-to-one onto the row's s * in_ws slots, and a thread's column col * s + kx lies at
  // the slot of kx plus col (the kernel's addressing: neighbouring threads, neighbouring slots).
  EXPECT_EQ(p.in_ws, (p.in_w + s - 1) / s);
  std::vector<int> slot_of(static_cast<size_t>(s) * p.in_ws, -1);
  for (int c = 0; c < p.in_w; ++c) {
    const int slot = dw_tile_column(c, s, p.in_ws);
    ASSERT_GE(slot, 0);
    ASSERT_LT(slot, s * p.in_ws);
    EXPECT_EQ(slot_of[slot], -1) << "columns " << slot_of[slot] << " and " << c << " share a slot";
    slot_of[slot] = c;
  }
  for (int col = 0; col < p.tw; ++col)
    for (int kx = 0; kx < k; ++kx)
      EXPECT_EQ(dw_tile_column(col * s + kx, s, p.in_ws), dw_tile_column(kx, s, p.in_ws) + col);
  // Shared memory: weights and bias in whole 16-byte vectors (the tile after them stays 16-byte aligned).
  EXPECT_EQ(p.weight_floats, static_cast<size_t>(k * k * p.cv * vec));
  EXPECT_EQ(p.bias_floats, static_cast<size_t>(p.cv * vec));
  EXPECT_EQ(p.weight_floats % 4, 0u);
  EXPECT_EQ(p.bias_floats % 4, 0u);
  // Then one input tile, or two for the pipelined variant (the second one 16 bytes a vector further).
  const bool pipe = dw_tile_pipelined(variant);
  EXPECT_EQ(p.buffers, pipe ? 2 : 1);
  EXPECT_EQ(p.tile_vecs, static_cast<size_t>(p.in_h) * s * p.in_ws * p.cv);
  EXPECT_EQ(p.smem, (p.weight_floats + p.bias_floats) * 4 + p.tile_vecs * 16 * p.buffers);
  EXPECT_LE(p.smem, pipe ? kDwPipeMaxSmem : kDwTileMaxSmem);
  // The staging walk (a thread keeps lane tid % cv and steps pstep pixels with its row and column stepped, not
  // divided) writes every staged pixel's slot of every lane exactly once, inside the tile.
  {
    std::vector<int> staged(p.tile_vecs, 0);
    const int pstep = p.threads / p.cv, pixels = p.in_h * p.in_w;
    const int drow = pstep / p.in_w, dcol = pstep % p.in_w;
    for (int tid = 0; tid < p.threads; ++tid) {
      const int l0 = tid % p.cv;
      int pix = tid / p.cv, srow = pix / p.in_w, scol = pix % p.in_w;
      for (; pix < pixels; pix += pstep) {
        ASSERT_EQ(srow, pix / p.in_w);
        ASSERT_EQ(scol, pix % p.in_w);
        const size_t slot = static_cast<size_t>(srow * s * p.in_ws + dw_tile_column(scol, s, p.in_ws)) * p.cv + l0;
        ASSERT_LT(slot, p.tile_vecs);
        ++staged[slot];
        srow += drow;
        scol += dcol;
        if (scol >= p.in_w) scol -= p.in_w, ++srow;
      }
    }
    int twice = 0, staged_slots = 0;
    for (int h : staged) twice += h > 1, staged_slots += h == 1;
    EXPECT_EQ(twice, 0);
    EXPECT_EQ(staged_slots, pixels * p.cv);
  }
  // The kernel's mapping (block -> tile and chunk, thread -> vector, column, row group) writes every output
  // vector of one image exactly once.
  std::vector<int> hits(static_cast<size_t>(oh) * ow * vecs, 0);
  for (int b = 0; b < p.tiles_y * p.tiles_x * p.chunks; ++b)  // image 0
      for (int tid = 0; tid < p.threads; ++tid) {
        const int chunk = b % p.chunks, tx = b / p.chunks % p.tiles_x, ty = b / p.chunks / p.tiles_x;
        const int l = tid % p.cv, q = tid / p.cv, col = q % p.tw, grp = q / p.tw;
        const int v = chunk * p.cv + l, ox = tx * p.tw + col;
        if (v >= vecs || ox >= ow) continue;
        for (int r = 0; r < R; ++r) {
          const int oy = ty * p.th + grp * R + r;
          if (oy >= oh) break;
          ++hits[(static_cast<size_t>(oy) * ow + ox) * vecs + v];
        }
      }
  int wrong = 0;
  for (int h : hits) wrong += h != 1;
  EXPECT_EQ(wrong, 0) << "outputs not written exactly once";
  if (!pipe) return;
  // The pipelined kernel's persistent schedule over all n images: gridDim.x = chunks * per (the launcher's choice
  // for per blocks a chunk, from one to one a tile); block b keeps chunk b % chunks and takes the chunk's tiles
  // b / chunks, + per, + 2 per, ... Every output vector is written exactly once whatever per is.
  const int spatial = static_cast<int>(p.blocks / p.chunks);
  for (int per : {1, 2, 3, 7, spatial}) {
    if (per > spatial) continue;
    std::vector<int> all(static_cast<size_t>(n) * oh * ow * vecs, 0);
    for (int b = 0; b < per * p.chunks; ++b) {
      const int chunk = b % p.chunks;
      for (int sp = b / p.chunks; sp < spatial; sp += per) {
        const int tx = sp % p.tiles_x, q = sp / p.tiles_x, ty = q % p.tiles_y, img = q / p.tiles_y;
        ASSERT_LT(img, n);
        for (int tid = 0; tid < p.threads; ++tid) {
          const int l = tid % p.cv, cq = tid / p.cv, col = cq % p.tw, grp = cq / p.tw;
          const int v = chunk * p.cv + l, ox = tx * p.tw + col;
          if (v >= vecs || ox >= ow) continue;
          for (int r = 0; r < R; ++r) {
            const int oy = ty * p.th + grp * R + r;
            if (oy >= oh) break;
            ++all[((static_cast<size_t>(img) * oh + oy) * ow + ox) * vecs + v];
          }
        }
      }
    }
    int off = 0;
    for (int h : all) off += h != 1;
    EXPECT_EQ(off, 0) << "persistent schedule with " << per << " blocks a chunk";
  }
}

TEST(DepthwiseTilePlan, CoversOutputsAndFitsItsLimits) {
  struct Shape {
    int oh, ow, vecs;
  };
  // mobilenet_v2 / efficientnet_b0 layers (half: 8 channels a vector), tile edges, tiny images, odd vector counts.
  const Shape shapes[] = {{56, 56, 18}, {112, 112, 4}, {56, 56, 12}, {28, 28, 24}, {14, 14, 84},
                          {7, 7, 144},  {7, 7, 120},   {1, 1, 1},    {3, 5, 3},    {17, 33, 5},
                          {9, 100, 2},  {100, 9, 7},   {4, 4, 30},   {2, 64, 60}};
  for (const Shape& sh : shapes)
    for (int vec : {4, 8})
      for (int k : {3, 5})
        for (int s : {1, 2})
          for (int variant = 0; variant < kDwTileVariants; ++variant)
            check_plan(3, sh.oh, sh.ow, sh.vecs, vec, k, s, variant);
}

TEST(DepthwiseTilePlan, TilesOfTheProfiledLayers) {
  // mobilenet_v2 features.3 (56x56x144 half, 3x3 s1): two tiles of 28 columns, four of 16 rows, 2 vectors.
  DwTilePlan p = dw_tile_plan(128, 56, 56, 18, 8, 3, 1, 0);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.tw, 28);
  EXPECT_EQ(p.th, 16);
  EXPECT_EQ(p.cv, 2);
  EXPECT_EQ(p.chunks, 9);
  EXPECT_EQ(p.threads, 224);
  // efficientnet_b0 7x7x1152 (5x5): one tile per image, 8 vectors a block.
  p = dw_tile_plan(128, 7, 7, 144, 8, 5, 1, 0);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.tiles_x * p.tiles_y, 1);
  EXPECT_EQ(p.cv, 8);
  EXPECT_EQ(p.chunks, 18);
}

// The wide variant takes whole pixels' channels (up to 32 vectors) and fits as many columns as the threads allow.
TEST(DepthwiseTilePlan, WideVariantTakesWholePixels) {
  // mobilenet_v2 features.3 (56x56x144 half, 3x3 s1): all 18 vectors a block (288 contiguous bytes a pixel), four
  // tiles of 14 columns, one row group: 252 threads.
  DwTilePlan p = dw_tile_plan(128, 56, 56, 18, 8, 3, 1, kDwTileWide);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.cv, 18);
  EXPECT_EQ(p.chunks, 1);
  EXPECT_EQ(p.tw, 14);
  EXPECT_EQ(p.th, 4);
  EXPECT_EQ(p.threads, 252);
  EXPECT_EQ(p.smem, (9 * 18 * 8 + 18 * 8) * 4 + 6 * 16 * 18 * 16);
  // features.1 (112x112x32, 3x3 s1): 4 vectors, 28 columns (four tiles), two row groups: 224 threads.
  p = dw_tile_plan(128, 112, 112, 4, 8, 3, 1, kDwTileWide);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.cv, 4);
  EXPECT_EQ(p.tw, 28);
  EXPECT_EQ(p.th, 8);
  EXPECT_EQ(p.threads, 224);
  // efficientnet_b0 14x14x672 (84 vectors, 5x5 s1): three chunks of 28, 7 columns (two tiles), one row group.
  p = dw_tile_plan(128, 14, 14, 84, 8, 5, 1, kDwTileWide);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.chunks, 3);
  EXPECT_EQ(p.cv, 28);
  EXPECT_EQ(p.tw, 7);
  EXPECT_EQ(p.th, 4);
  EXPECT_EQ(p.threads, 196);
  // The wide tiles in the pipelined kernel: features.3's, with two buffers.
  p = dw_tile_plan(128, 56, 56, 18, 8, 3, 1, kDwTileWidePipe);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.cv, 18);
  EXPECT_EQ(p.tw, 14);
  EXPECT_EQ(p.buffers, 2);
  EXPECT_EQ(p.smem, (9 * 18 * 8 + 18 * 8) * 4 + 2 * (6 * 16 * 18 * 16));
}

TEST(DepthwiseTilePlan, PipelinedVariantPicksItsTiles) {
  // mobilenet_v2 features.3 (56x56x144 half, 3x3 s1): the large tiles, two buffers of 18 x 30 pixels x 2 vectors.
  DwTilePlan p = dw_tile_plan(128, 56, 56, 18, 8, 3, 1, kDwTilePipe);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.tw, 28);
  EXPECT_EQ(p.th, 16);
  EXPECT_EQ(p.cv, 2);
  EXPECT_EQ(p.threads, 224);
  EXPECT_EQ(p.smem, (9 * 2 * 8 + 2 * 8) * 4 + 2 * (18 * 30 * 2 * 16));
  // features.2 (112x112x96 -> 56x56, 3x3 s2): two large tiles of 2 vectors would overflow the 112 KiB, one
  // vector (112 threads) fits; the small tiles keep 6 vectors (168 threads) and win.
  const DwTilePlan large = dw_tile_plan(128, 56, 56, 12, 8, 3, 2, 0);
  ASSERT_TRUE(large.ok);
  EXPECT_GT(large.weight_floats * 4 + large.bias_floats * 4 + 2 * large.tile_vecs * 16, kDwPipeMaxSmem);
  p = dw_tile_plan(128, 56, 56, 12, 8, 3, 2, kDwTilePipe);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.tw, 14);
  EXPECT_EQ(p.th, 8);
  EXPECT_EQ(p.cv, 6);
  EXPECT_EQ(p.threads, 168);
}

// The untuned default takes the first variant that fits other than the pipelined and wide ones (conv_ops.cpp):
// there always is one where those fit (the pipelined variant's two buffers need more room than variant 1's one at
// the same tiles; the wide tiles hold more channels than the large ones, which shrink their chunk until it fits).
TEST(DepthwiseTilePlan, PipelinedAndWideFitOnlyWhereAnotherVariantFits) {
  for (int oh : {1, 7, 28, 56, 112, 200})
    for (int vecs : {1, 4, 18, 144, 2000})
      for (int vec : {4, 8})
        for (int k : {3, 5})
          for (int s : {1, 2})
            for (int variant : {kDwTilePipe, kDwTileWide, kDwTileWidePipe})
              if (dw_tile_plan(2, oh, oh, vecs, vec, k, s, variant).ok) {
                EXPECT_TRUE(dw_tile_plan(2, oh, oh, vecs, vec, k, s, 0).ok ||
                            dw_tile_plan(2, oh, oh, vecs, vec, k, s, 1).ok)
                    << oh << " " << vecs << " " << vec << " " << k << " " << s << " variant " << variant;
              }
}

// The row-streaming plan (kDwRows): under the kernel's mapping every output is written exactly once, every staged
// column a thread reads lies inside the row, and the ring schedule (groups 0 .. depth issued first, group r +
// depth + 1 issued after output row r's barrier) never overwrites a row before the last output row that reads it,
// and has every row an output row reads landed (its group <= r) in its slot when that row is computed.
void check_rows_plan(int n, int oh, int ow, int vecs, int vec, int k, int s, int64_t resident) {
  SCOPED_TRACE("n " + std::to_string(n) + " out " + std::to_string(oh) + "x" + std::to_string(ow) + " vecs " +
               std::to_string(vecs) + "x" + std::to_string(vec) + " k " + std::to_string(k) + " s " +
               std::to_string(s) + " resident " + std::to_string(resident));
  DwRowsPlan p = dw_rows_plan(n, oh, ow, vecs, vec, k, s);
  ASSERT_TRUE(p.ok);
  dw_rows_strips(p, n, oh, k, s, resident);
  EXPECT_EQ(p.threads, p.cv * p.cgs);
  EXPECT_LE(p.threads, kDwTileThreads);
  EXPECT_LE(p.cv, kDwWideMaxVecs);
  EXPECT_EQ(p.tw, p.cgs * kDwRowsCols);
  EXPECT_GE(p.tiles_x * p.tw, ow);
  EXPECT_LT((p.tiles_x - 1) * p.tw, ow);
  EXPECT_GE(p.chunks * p.cv, vecs);
  EXPECT_LT((p.chunks - 1) * p.cv, vecs);
  EXPECT_GE(p.strips * p.th, oh);
  EXPECT_LT((p.strips - 1) * p.th, oh);
  EXPECT_EQ(p.blocks, static_cast<int64_t>(n) * p.strips * p.tiles_x * p.chunks);
  EXPECT_EQ(p.in_w, (p.tw - 1) * s + k);
  EXPECT_EQ(p.row_vecs, static_cast<size_t>(p.in_w) * p.cv);
  EXPECT_EQ(p.ring, k + (p.depth + 1) * s);
  EXPECT_EQ(p.weight_floats % 4, 0u);
  EXPECT_EQ(p.bias_floats % 4, 0u);
  EXPECT_EQ(p.smem, (p.weight_floats + p.bias_floats) * 4 + p.ring * p.row_vecs * 16);
  EXPECT_LE(p.smem, kDwRowsMaxSmem);
  // A thread's columns: staged columns oxt * s .. oxt * s + (kDwRowsCols - 1) * s + k - 1 inside in_w.
  for (int cg = 0; cg < p.cgs; ++cg)
    EXPECT_LE(cg * kDwRowsCols * s + (kDwRowsCols - 1) * s + k, p.in_w);
  // Outputs of image 0 (and, through the block index, the last image's strip count).
  std::vector<int> hits(static_cast<size_t>(oh) * ow * vecs, 0);
  for (int64_t b = 0; b < p.blocks / n; ++b) {
    int q = static_cast<int>(b);
    const int chunk = q % p.chunks;
    q /= p.chunks;
    const int tx = q % p.tiles_x, strip = q / p.tiles_x % p.strips;
    const int oy0 = strip * p.th, rows = std::min(p.th, oh - oy0);
    ASSERT_GE(rows, 1);
    for (int tid = 0; tid < p.threads; ++tid) {
      const int l = tid % p.cv, cg = tid / p.cv, v = chunk * p.cv + l;
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < kDwRowsCols; ++c) {
          const int ox = tx * p.tw + cg * kDwRowsCols + c;
          if (v >= vecs || ox >= ow) continue;
          ++hits[(static_cast<size_t>(oy0 + r) * ow + ox) * vecs + v];
        }
    }
  }
  int wrong = 0;
  for (int h : hits) wrong += h != 1;
  EXPECT_EQ(wrong, 0) << "outputs not written exactly once";
  // The ring schedule of the longest strip: slot -> the input row it holds (-1 none) and the group that copied it.
  const int rows = p.th;
  auto group_of = [&](int i) { return i < k ? 0 : (i - k) / s + 1; };
  std::vector<int> held(p.ring, -1);
  auto issue = [&](int g) {
    if (g >= rows) return;
    const int first = g == 0 ? 0 : (g - 1) * s + k, count = g == 0 ? k : s;
    for (int i = first; i < first + count; ++i) {
      const int slot = i % p.ring;
      // A row still read by an output row at or after the current one must not be overwritten.
      if (held[slot] >= 0) {
        const int last_reader = held[slot] / s;  // output rows r with r * s <= row: the last is row / s
        EXPECT_LT(last_reader, g - p.depth - 1) << "row " << held[slot] << " overwritten by " << i;
      }
      held[slot] = i;
    }
  };
  for (int g = 0; g <= p.depth; ++g) issue(g);
  for (int r = 0; r < rows; ++r) {
    // Wait: groups <= r landed. Every row the output row reads is in its slot from a group <= r.
    for (int ky = 0; ky < k; ++ky) {
      const int i = r * s + ky;
      EXPECT_EQ(held[i % p.ring], i) << "output row " << r << " reads row " << i;
      EXPECT_LE(group_of(i), r);
    }
    issue(r + p.depth + 1);
  }
}

TEST(DepthwiseRowsPlan, CoversOutputsAndKeepsEveryRowUntilRead) {
  struct Shape {
    int oh, ow, vecs;
  };
  const Shape shapes[] = {{56, 56, 18}, {112, 112, 4}, {56, 56, 12}, {28, 28, 30}, {14, 14, 84}, {7, 7, 144},
                          {7, 7, 120},  {1, 1, 1},     {3, 5, 3},    {17, 33, 5},  {9, 100, 2},  {100, 9, 7},
                          {2, 64, 60},  {56, 224, 64}};
  for (const Shape& sh : shapes)
    for (int vec : {4, 8})
      for (int k : {3, 5})
        for (int s : {1, 2})
          for (int64_t resident : {1, 7, 264})
            for (int n : {1, 3, 128}) check_rows_plan(n, sh.oh, sh.ow, sh.vecs, vec, k, s, resident);
}

TEST(DepthwiseRowsPlan, ThePlansOfTheProfiledLayers) {
  // mobilenet_v2 features.3 (56x56x144 half, 3x3 s1): whole pixels (18 vectors), 14 groups of 4 columns (252
  // threads), rows of 58 pixels, two groups in flight (5 rows: 82.5 KiB with the weights); with 264 resident
  // blocks at batch 128, two strips of 28 rows: 256 blocks in one wave.
  DwRowsPlan p = dw_rows_plan(128, 56, 56, 18, 8, 3, 1);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.cv, 18);
  EXPECT_EQ(p.chunks, 1);
  EXPECT_EQ(p.tiles_x, 1);
  EXPECT_EQ(p.threads, 252);
  EXPECT_EQ(p.in_w, 58);
  EXPECT_EQ(p.depth, 1);
  EXPECT_EQ(p.ring, 5);
  EXPECT_EQ(p.smem, (9 * 18 * 8 + 18 * 8) * 4 + 5 * 58 * 18 * 16);
  dw_rows_strips(p, 128, 56, 3, 1, 264);
  EXPECT_EQ(p.strips, 2);
  EXPECT_EQ(p.th, 28);
  EXPECT_EQ(p.blocks, 256);
  // features.2 (112x112x96 -> 56x56, 3x3 s2): rows of 113 pixels of 12 vectors (21.2 KiB); two groups in flight
  // would take 7 rows (148 KiB), one takes 5 (106 KiB).
  p = dw_rows_plan(128, 56, 56, 12, 8, 3, 2);
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.cv, 12);
  EXPECT_EQ(p.in_w, 113);
  EXPECT_EQ(p.depth, 0);
  EXPECT_EQ(p.ring, 5);
  // Batch 1 spreads one image over many strips.
  p = dw_rows_plan(1, 56, 56, 18, 8, 3, 1);
  ASSERT_TRUE(p.ok);
  dw_rows_strips(p, 1, 56, 3, 1, 264);
  EXPECT_EQ(p.strips, 56);
  EXPECT_EQ(p.th, 1);
}

// The squeeze (FusedConv's mean output) sums each block's outputs in the block's staging buffer: it must fit there
// for every variant's plan of the CNN layers (else those layers fall back to a reduction after the convolution and
// the GPU tests of the in-kernel sums would test the fallback), float and half, batch 128 and 1.
TEST(DepthwiseTilePlan, SqueezeSumsFitEveryPlansBuffer) {
  struct Shape {
    int oh, ow, c, k, s;
  };
  const Shape layers[] = {{112, 112, 32, 3, 1}, {56, 56, 96, 3, 2},  {56, 56, 144, 3, 1}, {28, 28, 144, 5, 2},
                          {28, 28, 240, 5, 1},  {14, 14, 240, 3, 2}, {14, 14, 480, 3, 1}, {14, 14, 672, 5, 1},
                          {7, 7, 672, 5, 2},    {7, 7, 1152, 5, 1},  {7, 7, 960, 3, 1},   {1, 4, 40, 3, 1}};
  for (int n : {128, 1})
    for (int vec : {4, 8})
      for (const Shape& l : layers) {
        SCOPED_TRACE("n " + std::to_string(n) + " " + std::to_string(l.oh) + "x" + std::to_string(l.ow) + "x" +
                     std::to_string(l.c) + " k" + std::to_string(l.k) + " s" + std::to_string(l.s) + " vec " +
                     std::to_string(vec));
        for (int variant = 0; variant < kDwTileVariants; ++variant) {
          const DwTilePlan p = dw_tile_plan(n, l.oh, l.ow, l.c / vec, vec, l.k, l.s, variant);
          if (!p.ok) continue;
          EXPECT_TRUE(dw_squeeze_fits(p.threads, p.cv, vec, p.tile_vecs * 16)) << "variant " << variant;
        }
        const DwRowsPlan r = dw_rows_plan(n, l.oh, l.ow, l.c / vec, vec, l.k, l.s);
        if (r.ok) EXPECT_TRUE(dw_squeeze_fits(r.threads, r.cv, vec, static_cast<size_t>(r.ring) * r.row_vecs * 16));
      }
  // A buffer one float short, and threads that are no multiple of the chunk's vectors, are declined.
  const int need = dw_squeeze_floats(224, 2, 8);
  EXPECT_EQ(need, 224 * 8 + 14 * 2 * 8);
  EXPECT_TRUE(dw_squeeze_fits(224, 2, 8, need * sizeof(float)));
  EXPECT_FALSE(dw_squeeze_fits(224, 2, 8, need * sizeof(float) - 4));
  EXPECT_FALSE(dw_squeeze_fits(225, 2, 8, 1 << 20));
}

TEST(DepthwiseRowsPlan, Declines) {
  EXPECT_FALSE(dw_rows_plan(1, 8, 8, 4, 8, 7, 1).ok);  // 7x7 window
  EXPECT_FALSE(dw_rows_plan(1, 8, 8, 4, 8, 3, 3).ok);  // stride 3
  EXPECT_FALSE(dw_rows_plan(1, 8, 8, 4, 2, 3, 1).ok);  // not a 16-byte vector of 2- or 4-byte elements
  EXPECT_FALSE(dw_rows_plan(0, 8, 8, 4, 8, 3, 1).ok);
  EXPECT_FALSE(dw_rows_plan(1 << 26, 56, 56, 18, 8, 3, 1).ok);  // a strip a row: more blocks than the grid takes
  // One vector of a very wide row overflows the ring even without a group in flight.
  EXPECT_FALSE(dw_rows_plan(1, 8, 20000, 1, 8, 5, 2).ok);
}

TEST(DepthwiseTilePlan, DeclinesWhatTheKernelDoesNotTake) {
  EXPECT_FALSE(dw_tile_plan(1, 8, 8, 4, 8, 7, 1, 0).ok);  // 7x7 window
  EXPECT_FALSE(dw_tile_plan(1, 8, 8, 4, 8, 3, 3, 0).ok);  // stride 3
  EXPECT_FALSE(dw_tile_plan(1, 8, 8, 4, 2, 3, 1, 0).ok);  // not a 16-byte vector of 2- or 4-byte elements
  EXPECT_FALSE(dw_tile_plan(1, 8, 8, 4, 8, 3, 1, kDwTileVariants).ok);
  EXPECT_FALSE(dw_tile_plan(0, 8, 8, 4, 8, 3, 1, 0).ok);  // nothing to compute
  EXPECT_FALSE(dw_tile_plan(1, 8, 8, 0, 8, 3, 1, 0).ok);
  // More blocks than a 1-D grid's 32-bit index takes.
  EXPECT_FALSE(dw_tile_plan(1 << 26, 56, 56, 18, 8, 3, 1, 0).ok);
  EXPECT_FALSE(dw_tile_plan(1 << 26, 56, 56, 18, 8, 3, 1, kDwTilePipe).ok);
  EXPECT_TRUE(dw_tile_plan(1, 56, 56, 70000 * 2, 8, 3, 1, 0).ok);  // many chunks: no gridDim.y limit
}

}  // namespace
}  // namespace kiln::cuda
