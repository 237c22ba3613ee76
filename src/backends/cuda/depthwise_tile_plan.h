// Tiling and shared-memory plans of the tiled depthwise convolution (depthwise.cu, tactics
// kiln_depthwise_nhwc_tiled, _small, _pipe, _wide and _wide_pipe) and of the row-streaming one
// (kiln_depthwise_nhwc_rows): plain C++, so that the host-side geometry is unit-tested without a GPU.
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

// The squeeze (FusedConv's mean output, depthwise.h): the floats of shared memory a block of `threads` threads over
// cv vectors of vec channels needs to add up its per-channel sums (dw_block_channel_sums: every thread's vec sums,
// then J = max(1, threads / (cv * vec)) partial sums a channel), and whether a plan's staging buffer of
// buffer_bytes holds them (else the layer's mean is computed after the convolution).
KILN_DW_HD inline int dw_squeeze_floats(int threads, int cv, int vec) {
  const int per_channel = threads / (cv * vec) > 1 ? threads / (cv * vec) : 1;
  return threads * vec + per_channel * cv * vec;
}
inline bool dw_squeeze_fits(int threads, int cv, int vec, size_t buffer_bytes) {
  return cv > 0 && threads % cv == 0 &&
         static_cast<size_t>(dw_squeeze_floats(threads, cv, vec)) * sizeof(float) <= buffer_bytes;
}

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

// The row-streaming variant (tactic kiln_depthwise_nhwc_rows, depthwise_rows_kernel): a block owns whole staged
// input rows (up to tw output columns of cv channel vectors, whole pixels' channels where they fit) of one strip of
// th output rows and walks down it; a ring of `ring` input rows in shared memory takes the next rows' cp.async
// copies while the current output row is computed, so each input row is read from memory once per strip (the
// strips' seams add (k - s) rows each) and a warp's copies and stores cover contiguous runs of whole pixels.
// A thread computes kDwRowsCols neighbouring output columns of one channel vector, row after row.
constexpr int kDwRows = kDwTileVariants;      // its index after the tile variants
constexpr int kDwVariants = kDwRows + 1;      // every tactic of depthwise_tiled_fits / launch_depthwise_nhwc_tiled
constexpr int kDwRowsCols = 4;                // output columns per thread
constexpr size_t kDwRowsMaxSmem = 112 * 1024;  // two blocks an SM

struct DwRowsPlan {
  bool ok = false;
  int cv = 0, chunks = 0;   // channel vectors a block, chunks of the channels
  int tw = 0, tiles_x = 0;  // output columns a block (cgs * kDwRowsCols), column tiles
  int cgs = 0;              // column groups a block: threads = cv * cgs, thread (l, cg) with l fastest
  int in_w = 0;             // staged pixels a row: (tw - 1) * s + k
  // Row groups in flight behind the one waited for (0 or 1), and the ring's rows: k + (depth + 1) * s, so that
  // after each output row's barrier the next group goes where the previous output row's first s rows were.
  int depth = 0, ring = 0;
  int threads = 0;
  size_t weight_floats = 0, bias_floats = 0, row_vecs = 0, smem = 0;
  // Set by dw_rows_strips: output rows a strip (the last may hold fewer), strips an image, blocks
  // ((img * strips + strip) * tiles_x + tile) * chunks + chunk.
  int th = 0, strips = 0;
  int64_t blocks = 0;
};

// The plan without its strips (dw_rows_strips sets them at launch from the resident blocks): whole pixels'
// channels (chunks of at most kDwWideMaxVecs vectors) and two row groups in flight where the ring fits
// kDwRowsMaxSmem; else one, then narrower chunks.
inline DwRowsPlan dw_rows_plan(int n, int oh, int ow, int vecs, int vec, int k, int s) {
  DwRowsPlan p;
  if (n < 1 || oh < 1 || ow < 1 || vecs < 1 || (vec != 4 && vec != 8) || (k != 3 && k != 5) || (s != 1 && s != 2))
    return p;
  const int cgs_all = (ow + kDwRowsCols - 1) / kDwRowsCols;
  for (int chunks = (vecs + kDwWideMaxVecs - 1) / kDwWideMaxVecs; chunks <= vecs; ++chunks) {
    p.chunks = chunks;
    p.cv = (vecs + chunks - 1) / chunks;
    if ((p.chunks - 1) * p.cv >= vecs) continue;  // an empty last chunk: the next count splits evenly
    const int cgs_max = std::max(1, kDwTileThreads / p.cv);
    p.tiles_x = (cgs_all + cgs_max - 1) / cgs_max;
    p.cgs = (cgs_all + p.tiles_x - 1) / p.tiles_x;
    p.tw = p.cgs * kDwRowsCols;
    p.in_w = (p.tw - 1) * s + k;
    p.threads = p.cv * p.cgs;
    p.weight_floats = static_cast<size_t>(k) * k * p.cv * vec;
    p.bias_floats = static_cast<size_t>(p.cv) * vec;
    p.row_vecs = static_cast<size_t>(p.in_w) * p.cv;
    for (int depth = 1; depth >= 0; --depth) {
      p.depth = depth;
      p.ring = k + (depth + 1) * s;
      p.smem = (p.weight_floats + p.bias_floats) * 4 + p.ring * p.row_vecs * 16;
      if (p.smem <= kDwRowsMaxSmem) {
        // One strip a row at most: the grid's 32-bit index must take that many blocks.
        p.ok = p.threads <= kDwTileThreads &&
               static_cast<int64_t>(n) * oh * p.tiles_x * p.chunks <= INT_MAX;
        return p;
      }
    }
  }
  return DwRowsPlan{};
}

// The strips an image: the count whose blocks, run in waves of `resident`, take the least time, a block's time
// taken as its input rows ((th - 1) * s + k); ties to fewer strips (less halo).
inline void dw_rows_strips(DwRowsPlan& p, int n, int oh, int k, int s, int64_t resident) {
  resident = std::max<int64_t>(resident, 1);
  const int64_t per_strip = static_cast<int64_t>(n) * p.tiles_x * p.chunks;
  int64_t best = -1;
  for (int strips = 1; strips <= oh; ++strips) {
    const int th = (oh + strips - 1) / strips;
    if ((strips - 1) * th >= oh) continue;  // the same th with fewer strips was counted
    const int64_t waves = (per_strip * strips + resident - 1) / resident;
    const int64_t cost = waves * ((th - 1) * s + k);
    if (best < 0 || cost < best) best = cost, p.th = th, p.strips = strips;
  }
  p.blocks = per_strip * p.strips;
}

}  // namespace kiln::cuda
