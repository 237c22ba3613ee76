// Tiling and shared-memory plan of the tiled depthwise convolution (depthwise.cu, tactics
// kiln_depthwise_nhwc_tiled, _small and _pipe): plain C++, so that the host-side geometry is unit-tested without a
// GPU.
#pragma once

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>

namespace kiln::cuda {

constexpr int kDwTileRows = 4;                // output rows per thread (a column of outputs: window rows reused)
constexpr int kDwTileThreads = 256;           // most threads per block
constexpr int kDwTileMaxVecs = 8;             // most 16-byte channel vectors per block
constexpr size_t kDwTileMaxSmem = 96 * 1024;  // at most two blocks' worth of an SM (opt-in above 48 KiB)
// 0: up to 16 x 32 outputs per tile, 1: up to 8 x 16, 2: pipelined, 3: wide, 4: wide and pipelined
constexpr int kDwTileVariants = 5;
constexpr int kDwTilePipe = 2;      // the persistent, double-buffered variant (depthwise_tiled_pipe_kernel)
// The wide variant: the tiled kernel over tiles of few output columns that take whole pixels' channels (up to
// kDwWideMaxVecs vectors, 512 bytes of a pixel) per block, so that a warp's loads and stores cover contiguous
// runs of pixels instead of 32-byte pieces of each (the large tiles keep 2 vectors of a 144-channel layer).
constexpr int kDwTileWide = 3;
constexpr int kDwTileWidePipe = 4;  // the wide tiles in the persistent, double-buffered kernel
constexpr int kDwWideMaxVecs = 32;

// Whether a variant runs the persistent, double-buffered kernel (two input buffers in kDwPipeMaxSmem).
inline bool dw_tile_pipelined(int variant) { return variant == kDwTilePipe || variant == kDwTileWidePipe; }
// The pipelined variant's two buffers: two blocks an SM still fit the H200's 228 KiB (1 KiB reserved a block).
constexpr size_t kDwPipeMaxSmem = 112 * 1024;

// A block computes th x tw output pixels (th a multiple of kDwTileRows) of cv channel vectors; thread
// (l, col, group) with l fastest computes the kDwTileRows outputs of column col, rows group * kDwTileRows on, for
// vector l. The input tile with its halo (in_h x in_w pixels of cv vectors) is staged in shared memory once.
struct DwTilePlan {
  bool ok = false;
  int th = 0, tw = 0, cv = 0;
  int in_h = 0, in_w = 0;
  // A staged row holds s phases of in_ws pixels: column c at c % s * in_ws + c / s (dw_tile_column), so the
  // neighbouring output columns of a warp read neighbouring 16-byte vectors at stride 2 too (no bank conflicts).
  int in_ws = 0;
  int threads = 0;
  // blockIdx.x = ((img * tiles_y + tile row) * tiles_x + tile col) * chunks + chunk: the chunks of one tile run
  // side by side, so a pixel's channels (one line of memory) are read at about the same time.
  int tiles_y = 0, tiles_x = 0, chunks = 0;
  int64_t blocks = 0;
  // Weights (float [tap][cv][vec]), bias (float [cv][vec]), then `buffers` input tiles of tile_vecs 16-byte
  // vectors each ([row][s * in_ws slots][cv]): one, or two for the pipelined variant (one filling while the
  // other is computed).
  size_t weight_floats = 0, bias_floats = 0, smem = 0;
  int buffers = 1;
  size_t tile_vecs = 0;
};

#if defined(__CUDACC__)
#define KILN_DW_HD __host__ __device__
#else
#define KILN_DW_HD
#endif

// The slot of staged column c in a tile row (stride s, in_ws pixels a phase).
KILN_DW_HD inline int dw_tile_column(int c, int s, int in_ws) { return c % s * in_ws + c / s; }

// The tiles and chunks of one tile geometry (0: up to 16 x 32 outputs, 1: up to 8 x 16, 2: wide) with `buffers`
// input tiles in at most max_smem bytes; the plan's ok is left to the caller.
inline void dw_tile_geometry(DwTilePlan& p, int n, int oh, int ow, int vecs, int vec, int k, int s, int geometry,
                             int buffers, size_t max_smem) {
  const int row_groups = (oh + kDwTileRows - 1) / kDwTileRows;
  int cv = 0, groups = 0;
  if (geometry == 2) {
    // Wide: the channels first (evenly split chunks of at most kDwWideMaxVecs vectors), then as many output
    // columns as the threads allow (evenly split), then row groups while threads remain.
    const int wide_chunks = (vecs + kDwWideMaxVecs - 1) / kDwWideMaxVecs;
    cv = (vecs + wide_chunks - 1) / wide_chunks;
    const int tw_max = std::clamp(kDwTileThreads / cv, 1, 32);
    p.tiles_x = (ow + tw_max - 1) / tw_max;
    p.tw = (ow + p.tiles_x - 1) / p.tiles_x;
    const int groups_max = std::clamp(kDwTileThreads / (cv * p.tw), 1, 4);
    p.tiles_y = (row_groups + groups_max - 1) / groups_max;
    groups = (row_groups + p.tiles_y - 1) / p.tiles_y;
  } else {
    const int tw_max = geometry == 0 ? 32 : 16, groups_max = geometry == 0 ? 4 : 2;
    // Tiles split the image evenly (56 columns: two of 28, not 32 + 24), so edge tiles idle few threads.
    p.tiles_x = (ow + tw_max - 1) / tw_max;
    p.tw = (ow + p.tiles_x - 1) / p.tiles_x;
    p.tiles_y = (row_groups + groups_max - 1) / groups_max;
    groups = (row_groups + p.tiles_y - 1) / p.tiles_y;
    // Channel vectors fill the block up to kDwTileThreads (small images take more channels), split evenly over
    // the chunks (18 vectors at most 8 a chunk: three chunks of 6).
    cv = std::clamp(kDwTileThreads / (p.tw * groups), 1, kDwTileMaxVecs);
  }
  p.th = groups * kDwTileRows;
  cv = std::min(cv, vecs);
  p.buffers = buffers;
  for (;; --cv) {
    p.chunks = (vecs + cv - 1) / cv;
    p.cv = (vecs + p.chunks - 1) / p.chunks;
    p.in_h = (p.th - 1) * s + k;
    p.in_w = (p.tw - 1) * s + k;
    p.in_ws = (p.in_w + s - 1) / s;
    p.weight_floats = static_cast<size_t>(k) * k * p.cv * vec;
    p.bias_floats = static_cast<size_t>(p.cv) * vec;
    p.tile_vecs = static_cast<size_t>(p.in_h) * s * p.in_ws * p.cv;
    p.smem = (p.weight_floats + p.bias_floats) * 4 + p.tile_vecs * 16 * buffers;
    if (p.smem <= max_smem || cv == 1) break;
  }
  p.threads = p.cv * p.tw * groups;
  p.blocks = static_cast<int64_t>(n) * p.tiles_y * p.tiles_x * p.chunks;
}

// n images of oh x ow outputs, vecs channel vectors of vec elements, a k x k window (3 or 5) at stride s (1 or 2).
// blocks counts the tiles times chunks: one block each for variants 0 and 1; the pipelined variant's persistent
// blocks (a multiple of chunks, chosen at launch) loop over them.
inline DwTilePlan dw_tile_plan(int n, int oh, int ow, int vecs, int vec, int k, int s, int variant) {
  DwTilePlan p;
  if (n < 1 || oh < 1 || ow < 1 || vecs < 1 || (vec != 4 && vec != 8) || (k != 3 && k != 5) || (s != 1 && s != 2) ||
      variant < 0 || variant >= kDwTileVariants)
    return p;
  if (variant == kDwTilePipe) {
    // Two buffers of the large tiles, unless that squeezes the chunk below what the small tiles keep: a stride-2
    // 112x112 FP16 layer keeps one vector (112 threads a block) in the large tiles, six (168) in the small.
    dw_tile_geometry(p, n, oh, ow, vecs, vec, k, s, 0, 2, kDwPipeMaxSmem);
    DwTilePlan small;
    dw_tile_geometry(small, n, oh, ow, vecs, vec, k, s, 1, 2, kDwPipeMaxSmem);
    if (small.smem <= kDwPipeMaxSmem && (p.smem > kDwPipeMaxSmem || small.threads > p.threads)) p = small;
    p.ok = p.smem <= kDwPipeMaxSmem && p.blocks <= INT_MAX && p.threads <= kDwTileThreads;
    return p;
  }
  if (variant == kDwTileWidePipe) {
    dw_tile_geometry(p, n, oh, ow, vecs, vec, k, s, 2, 2, kDwPipeMaxSmem);
    p.ok = p.smem <= kDwPipeMaxSmem && p.blocks <= INT_MAX && p.threads <= kDwTileThreads;
    return p;
  }
  dw_tile_geometry(p, n, oh, ow, vecs, vec, k, s, variant == kDwTileWide ? 2 : variant, 1, kDwTileMaxSmem);
  p.ok = p.smem <= kDwTileMaxSmem && p.blocks <= INT_MAX && p.threads <= kDwTileThreads;
  return p;
}

}  // namespace kiln::cuda
