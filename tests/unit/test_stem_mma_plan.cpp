// The tensor-core stem convolution's host-side plan (backends/cuda/stem_mma_plan.h): for many windows, strides
// and dilations, every patch position a tile's ldmatrix reads lies inside the patch the plan sizes, the patch
// layout is one-to-one, a pixel's tap address is its base plus the tap's offset (the kernel's split), eight
// consecutive pixels are eight consecutive 16-byte vectors (conflict-free ldmatrix), and the shared memory
// holds every part.
#include <gtest/gtest.h>

#include <set>

#include "backends/cuda/stem_mma_plan.h"

namespace kiln::cuda {
namespace {

struct Win {
  int kh, kw, sh, sw, dh, dw;
};

void check_plan(const Win& w, int m) {
  SCOPED_TRACE("k " + std::to_string(w.kh) + "x" + std::to_string(w.kw) + " s " + std::to_string(w.sh) + "x" +
               std::to_string(w.sw) + " d " + std::to_string(w.dh) + "x" + std::to_string(w.dw) + " m " +
               std::to_string(m));
  const StemMmaPlan p = stem_mma_plan(w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, m);
  EXPECT_EQ(p.taps, w.kh * w.kw);
  EXPECT_GE(2 * p.ksteps, p.taps);
  EXPECT_LT(2 * p.ksteps, p.taps + 2);
  EXPECT_GE(p.wld, 16 * p.ksteps);
  EXPECT_EQ((p.wld / 8) % 2, 1) << "weight rows must be an odd number of 16-byte vectors (bank skew)";
  EXPECT_EQ(p.group_m % 16, 0);
  EXPECT_LE(p.group_m, kStemMaxGroup);
  EXPECT_GE(p.group_m * p.groups, m);
  EXPECT_LT(p.group_m * (p.groups - 1), m);

  // Every patch position is one vector of the buffer, distinct from every other's.
  std::set<int> seen;
  for (int r = 0; r < p.patch_h; ++r)
    for (int c = 0; c < p.patch_w; ++c) {
      const int i = stem_patch_index(r, c, w.sw, p.patch_ws);
      ASSERT_GE(i, 0);
      ASSERT_LT(i, p.patch_vecs);
      ASSERT_TRUE(seen.insert(i).second) << "patch position (" << r << ", " << c << ") shares vector " << i;
    }

  // What the kernel reads: output row ty, pixel px of the tile, tap (ky, kx) at patch row ty * sh + ky * dh,
  // column px * sw + kx * dw, addressed as base(ty) + px + offset(tap).
  for (int ty = 0; ty < kStemTileH; ++ty)
    for (int ky = 0; ky < w.kh; ++ky)
      for (int kx = 0; kx < w.kw; ++kx) {
        const int r = ty * w.sh + ky * w.dh;
        const int off = stem_patch_index(ky * w.dh, kx * w.dw, w.sw, p.patch_ws);
        const int base = stem_patch_index(ty * w.sh, 0, w.sw, p.patch_ws);
        for (int px = 0; px < kStemTileW; ++px) {
          const int c = px * w.sw + kx * w.dw;
          ASSERT_LT(r, p.patch_h);
          ASSERT_LT(c, p.patch_w);
          ASSERT_EQ(stem_patch_index(r, c, w.sw, p.patch_ws), base + px + off);
        }
      }

  EXPECT_TRUE(p.buffers == 1 || p.buffers == 2);
  const size_t parts = static_cast<size_t>(p.group_m) * p.wld * 2 + static_cast<size_t>(p.patch_vecs) * p.buffers * 16 +
                       16 + static_cast<size_t>(p.group_m) * 4 + static_cast<size_t>(2 * p.ksteps) * 4;
  EXPECT_GE(p.smem_bytes, parts);
  if (p.buffers == 2) EXPECT_LE(p.smem_bytes, kStemTwoBlockSmem);
  EXPECT_EQ(p.weight_bytes % 16, 0u) << "the patch after the weights must stay 16-byte aligned";
}

TEST(StemMmaPlan, PatchCoversEveryReadAndIsConflictFree) {
  const Win wins[] = {{7, 7, 2, 2, 1, 1}, {3, 3, 2, 2, 1, 1},   {3, 3, 1, 1, 1, 1}, {5, 5, 2, 2, 1, 1},
                      {3, 3, 1, 1, 2, 2}, {3, 3, 2, 2, 2, 2},   {1, 1, 1, 1, 1, 1}, {4, 4, 3, 3, 1, 1},
                      {2, 5, 1, 3, 2, 1}, {11, 11, 4, 4, 1, 1}, {3, 1, 1, 2, 1, 3}};
  for (const Win& w : wins)
    for (int m : {8, 16, 24, 32, 64, 72, 128}) check_plan(w, m);
}

// The stems this kernel is for double-buffer their patches and still fit two blocks per SM on an H200.
TEST(StemMmaPlan, StemsDoubleBufferAndFitTwoBlocksPerSm) {
  for (const Win& w : {Win{7, 7, 2, 2, 1, 1}, Win{3, 3, 2, 2, 1, 1}})
    for (int m : {32, 64}) {
      const StemMmaPlan p = stem_mma_plan(w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, m);
      EXPECT_EQ(p.buffers, 2);
      EXPECT_LE(2 * (p.smem_bytes + 1024), 228u * 1024);
    }
}

}  // namespace
}  // namespace kiln::cuda
