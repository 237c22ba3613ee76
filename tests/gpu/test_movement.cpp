// Data-movement and indexing kernels on the CUDA backend against the CPU reference: Transpose, Concat, Split,
// Slice, Gather*, Scatter*, Expand, Tile, Pad, DepthToSpace/SpaceToDepth, Trilu, Resize, OneHot, EyeLike, and
// (through small multi-op networks with a dynamic input) ConstantOfShape, Range and Slice with shape-derived bounds.
#include "gpu_test_util.h"

#include <cstring>
#include <functional>

namespace kiln::gpu_testing {
namespace {

Tensor i64(std::vector<int64_t> shape, std::vector<int64_t> v) { return Tensor::from_vector<int64_t>(std::move(shape), v); }
Tensor i32(std::vector<int64_t> shape, std::vector<int32_t> v) { return Tensor::from_vector<int32_t>(std::move(shape), v); }
Tensor f32(std::vector<int64_t> shape, std::vector<float> v) { return Tensor::from_vector<float>(std::move(shape), v); }

OpCase make(std::string op, std::vector<Tensor> inputs, std::vector<bool> constant = {}, OpAttrs attrs = {}) {
  OpCase c;
  c.op = std::move(op);
  c.inputs = std::move(inputs);
  c.constant = std::move(constant);
  c.attrs = std::move(attrs);
  c.atol = c.rtol = 0;  // data movement is exact
  return c;
}

const DataType kAllWidths[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT8,
                               DataType::kUINT8, DataType::kINT32, DataType::kINT64, DataType::kBOOL,
                               DataType::kDOUBLE};

// --- Transpose, DepthToSpace, SpaceToDepth ---

TEST(GpuMovement, TransposeLastTwoEveryWidth) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 10;
  for (DataType dt : kAllWidths) {
    SCOPED_TRACE(dtype_name(dt));
    expect_backends_agree(make("Transpose", {random_tensor(dt, {37, 53}, seed++, -50, 50)}, {}, {{"perm", std::vector<int64_t>{1, 0}}}));
    expect_backends_agree(make("Transpose", {random_tensor(dt, {3, 33, 65}, seed++, -50, 50)}, {}, {{"perm", std::vector<int64_t>{0, 2, 1}}}));
  }
}

// vit's patch gathering (conv_patchify_as_gemm): [N, C, Ho, kh, Wo, kw] -> [N, Ho, Wo, C, kh, kw], six dims that do
// not collapse; kw = 16 half (32-byte runs, widened to 16-byte units) and odd runs moved element by element.
TEST(GpuMovement, TransposePatches) {
  KILN_REQUIRE_GPU();
  const OpAttrs perm = {{"perm", std::vector<int64_t>{0, 2, 4, 1, 3, 5}}};
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kHALF, {2, 3, 5, 16, 7, 16}, 40)}, {}, perm));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {2, 3, 5, 16, 7, 16}, 41)}, {}, perm));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kHALF, {3, 3, 4, 3, 5, 3}, 42)}, {}, perm));
}

TEST(GpuMovement, TransposeGeneralPerms) {
  KILN_REQUIRE_GPU();
  // NCHW -> NHWC and back collapse to batched swaps; [2,0,1] and [1,0,2] are strided; default perm reverses.
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {2, 3, 5, 7}, 1)}, {}, {{"perm", std::vector<int64_t>{0, 2, 3, 1}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kHALF, {2, 5, 7, 3}, 2)}, {}, {{"perm", std::vector<int64_t>{0, 3, 1, 2}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kINT64, {4, 6, 9}, 3, -100, 100)}, {}, {{"perm", std::vector<int64_t>{2, 0, 1}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kINT8, {4, 6, 9}, 4, -100, 100)}, {}, {{"perm", std::vector<int64_t>{1, 0, 2}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {3, 4, 5}, 5)}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {1, 5, 1, 3}, 6)}, {}, {{"perm", std::vector<int64_t>{3, 2, 1, 0}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {17}, 7)}, {}, {{"perm", std::vector<int64_t>{0}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kBF16, {2, 3, 4, 5, 6}, 8)}, {}, {{"perm", std::vector<int64_t>{4, 2, 0, 3, 1}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {0, 4}, 9)}, {}, {{"perm", std::vector<int64_t>{1, 0}}}));
  // Several tiles per matrix; attention's head split [B,S,H,D] -> [B,H,S,D] (rows widened when D*size is a
  // multiple of 16 bytes).
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {70, 130}, 15)}, {}, {{"perm", std::vector<int64_t>{1, 0}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kINT8, {3, 40, 70}, 16, -9, 9)}, {}, {{"perm", std::vector<int64_t>{0, 2, 1}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kFLOAT, {2, 3, 4, 5}, 17)}, {}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}}));
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kHALF, {2, 3, 4, 8}, 18)}, {}, {{"perm", std::vector<int64_t>{0, 2, 1, 3}}}));
  // Identity perm (only size-1 axes move): a widened contiguous copy.
  expect_backends_agree(make("Transpose", {random_tensor(DataType::kHALF, {8, 1, 16}, 10)}, {}, {{"perm", std::vector<int64_t>{1, 0, 2}}}));
}

TEST(GpuMovement, DepthToSpaceAndBack) {
  KILN_REQUIRE_GPU();
  for (const char* mode : {"DCR", "CRD"}) {
    SCOPED_TRACE(mode);
    expect_backends_agree(make("DepthToSpace", {random_tensor(DataType::kFLOAT, {2, 12, 3, 5}, 11)}, {},
                               {{"blocksize", int64_t{2}}, {"mode", std::string(mode)}}));
    expect_backends_agree(make("DepthToSpace", {random_tensor(DataType::kHALF, {1, 27, 4, 2}, 12)}, {},
                               {{"blocksize", int64_t{3}}, {"mode", std::string(mode)}}));
  }
  expect_backends_agree(make("SpaceToDepth", {random_tensor(DataType::kFLOAT, {2, 3, 6, 4}, 13)}, {}, {{"blocksize", int64_t{2}}}));
  expect_backends_agree(make("SpaceToDepth", {random_tensor(DataType::kINT8, {1, 2, 9, 3}, 14, -9, 9)}, {}, {{"blocksize", int64_t{3}}}));
}

// --- Concat, Split ---

TEST(GpuMovement, Concat) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("Concat", {random_tensor(DataType::kFLOAT, {2, 3}, 20), random_tensor(DataType::kFLOAT, {5, 3}, 21)}, {},
                             {{"axis", int64_t{0}}}));
  expect_backends_agree(make("Concat",
                             {random_tensor(DataType::kHALF, {2, 3, 4}, 22), random_tensor(DataType::kHALF, {2, 1, 4}, 23),
                              random_tensor(DataType::kHALF, {2, 7, 4}, 24)},
                             {}, {{"axis", int64_t{1}}}));
  expect_backends_agree(make("Concat", {random_tensor(DataType::kINT64, {3, 5}, 25, -9, 9), random_tensor(DataType::kINT64, {3, 2}, 26, -9, 9)}, {},
                             {{"axis", int64_t{-1}}}));
  // Rows of 16 and 32 bytes move as 16-byte units.
  expect_backends_agree(make("Concat", {random_tensor(DataType::kHALF, {4, 8}, 34), random_tensor(DataType::kHALF, {4, 16}, 35)}, {},
                             {{"axis", int64_t{1}}}));
  expect_backends_agree(make("Concat", {random_tensor(DataType::kFLOAT, {3, 4}, 36), random_tensor(DataType::kFLOAT, {3, 4}, 37)}, {},
                             {{"axis", int64_t{1}}}));
  // An empty piece, bool, and a weight input.
  expect_backends_agree(make("Concat", {random_tensor(DataType::kBOOL, {2, 0, 3}, 27), random_tensor(DataType::kBOOL, {2, 4, 3}, 28)}, {},
                             {{"axis", int64_t{1}}}));
  expect_backends_agree(make("Concat", {random_tensor(DataType::kUINT8, {7}, 29, 0, 200), random_tensor(DataType::kUINT8, {9}, 30, 0, 200)},
                             {false, true}, {{"axis", int64_t{0}}}));
}

TEST(GpuMovement, Split) {
  KILN_REQUIRE_GPU();
  OpCase c = make("Split", {random_tensor(DataType::kFLOAT, {4, 7}, 31)}, {}, {{"axis", int64_t{1}}, {"num_outputs", int64_t{3}}});
  c.num_outputs = 3;  // 3, 3, 1
  expect_backends_agree(c);
  c = make("Split", {random_tensor(DataType::kHALF, {7, 5}, 32), i64({2}, {2, 5})}, {false, true}, {{"axis", int64_t{0}}});
  c.num_outputs = 2;
  expect_backends_agree(c);
  c = make("Split", {random_tensor(DataType::kINT8, {2, 3, 6}, 33, -9, 9), i64({3}, {1, 0, 5})}, {false, true}, {{"axis", int64_t{-1}}});
  c.num_outputs = 3;
  expect_backends_agree(c);
}

// --- Slice ---

TEST(GpuMovement, Slice) {
  KILN_REQUIRE_GPU();
  Tensor x = random_tensor(DataType::kFLOAT, {6, 9, 5}, 40);
  // Positive steps, clamped ends.
  expect_backends_agree(make("Slice", {x, i64({2}, {1, 2}), i64({2}, {100, 8}), i64({2}, {0, 1}), i64({2}, {2, 3})},
                             {false, true, true, true, true}));
  // Negative steps, negative axes and starts, int32 parameters.
  expect_backends_agree(make("Slice", {x, i32({2}, {-1, 4}), i32({2}, {-100, 0}), i32({2}, {-1, 0}), i32({2}, {-2, -1})},
                             {false, true, true, true, true}));
  // Default axes and steps; an empty result.
  expect_backends_agree(make("Slice", {x, i64({1}, {3}), i64({1}, {5})}, {false, true, true}));
  expect_backends_agree(make("Slice", {x, i64({1}, {5}), i64({1}, {3})}, {false, true, true}));
  // Inner contiguous rows of half (widened) and bool.
  expect_backends_agree(make("Slice", {random_tensor(DataType::kHALF, {4, 64}, 41), i64({1}, {1}), i64({1}, {3})}, {false, true, true}));
  expect_backends_agree(make("Slice", {random_tensor(DataType::kBOOL, {5, 6}, 42), i64({1}, {-1}), i64({1}, {INT64_MIN}), i64({1}, {1}), i64({1}, {-2})},
                             {false, true, true, true, true}));
}

// --- Slice with contiguous channel rows (the strided copy's row kernel; GpuSliceVector) ---

// NHWC stride-s Slices as conv1x1_as_gemm makes them for strided 1x1 convolutions (axes 1 and 2, whole channels):
// every element width, even and odd spatial sizes, steps (2,2), (2,1), (3,3) and a negative one. 784+ rows of
// 128 channels: the row kernel serves them (16-byte units where the rows allow).
TEST(GpuSliceVector, NhwcStridedSliceEveryWidth) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 300;
  const int64_t kEnd = INT64_MAX;
  for (DataType dt : kAllWidths) {
    SCOPED_TRACE(dtype_name(dt));
    for (auto shape : {std::vector<int64_t>{4, 28, 28, 128}, std::vector<int64_t>{3, 29, 27, 128}}) {
      Tensor x = random_tensor(dt, shape, seed++, -50, 50);
      for (auto [sh, sw] : {std::pair<int64_t, int64_t>{2, 2}, {2, 1}, {3, 3}}) {
        SCOPED_TRACE(dims_to_string(shape) + " steps " + std::to_string(sh) + "," + std::to_string(sw));
        expect_backends_agree(make("Slice", {x, i64({2}, {0, 0}), i64({2}, {kEnd, kEnd}), i64({2}, {1, 2}),
                                             i64({2}, {sh, sw})},
                                   {false, true, true, true, true}));
      }
      // Reversed rows (a negative outer stride), the channel rows still contiguous.
      expect_backends_agree(make("Slice", {x, i64({2}, {-1, 1}), i64({2}, {INT64_MIN, kEnd}), i64({2}, {1, 2}),
                                           i64({2}, {-2, 2})},
                                 {false, true, true, true, true}));
    }
  }
}

// Rows that are not 16-byte multiples or start misaligned (a channel offset): the copy falls back to narrower
// units or to the element-wise kernel, and must still be exact. Channel counts 3 (short rows), 20 and 36 (8-byte
// units), 63/33/97 (element units) in half, float and int8.
TEST(GpuSliceVector, MisalignedAndNarrowRows) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 320;
  const int64_t kEnd = INT64_MAX;
  struct Case { DataType dt; int64_t c, c0; };
  for (Case k : {Case{DataType::kHALF, 64, 1}, Case{DataType::kHALF, 20, 0}, Case{DataType::kHALF, 36, 0},
                 Case{DataType::kHALF, 3, 0}, Case{DataType::kHALF, 40, 4}, Case{DataType::kFLOAT, 33, 0},
                 Case{DataType::kFLOAT, 34, 2}, Case{DataType::kINT8, 100, 3}, Case{DataType::kBF16, 72, 8}}) {
    SCOPED_TRACE(std::string(dtype_name(k.dt)) + " C " + std::to_string(k.c) + " from " + std::to_string(k.c0));
    Tensor x = random_tensor(k.dt, {4, 28, 29, k.c}, seed++, -50, 50);
    expect_backends_agree(make("Slice", {x, i64({3}, {0, 0, k.c0}), i64({3}, {kEnd, kEnd, kEnd}), i64({3}, {1, 2, 3}),
                                         i64({3}, {2, 2, 1})},
                               {false, true, true, true, true}));
  }
}

// Other users of the strided copy whose inner rows are contiguous take the row kernel too: a channel Concat of
// NHWC tensors and an Expand along a middle axis (zero source stride).
TEST(GpuSliceVector, ContiguousRowsInConcatAndExpand) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {DataType::kHALF, DataType::kFLOAT, DataType::kINT8}) {
    SCOPED_TRACE(dtype_name(dt));
    OpCase c = make("Concat", {random_tensor(dt, {4, 14, 14, 64}, 340, -50, 50),
                               random_tensor(dt, {4, 14, 14, 40}, 341, -50, 50)},
                    {}, {{"axis", int64_t{3}}});
    expect_backends_agree(c);
    expect_backends_agree(make("Expand", {random_tensor(dt, {64, 1, 48}, 342, -50, 50), i64({3}, {64, 32, 48})},
                               {false, true}));
  }
}

// --- Gather family ---

TEST(GpuMovement, Gather) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("Gather", {random_tensor(DataType::kFLOAT, {5, 4}, 50), i64({3}, {0, -1, 2})}, {false, true}));
  expect_backends_agree(make("Gather", {random_tensor(DataType::kHALF, {3, 6, 8}, 51), i32({2, 2}, {5, 0, -6, 3})}, {false, false},
                             {{"axis", int64_t{1}}}));
  expect_backends_agree(make("Gather", {random_tensor(DataType::kINT64, {3, 7}, 52, -9, 9), i64({}, {-2})}, {false, true},
                             {{"axis", int64_t{-1}}}));
  expect_backends_agree(make("Gather", {random_tensor(DataType::kBOOL, {4, 3}, 53), i64({5}, {3, 3, 0, 1, -4})}, {false, false}));
  expect_backends_agree(make("Gather", {random_tensor(DataType::kUINT8, {10, 5}, 54, 0, 200), i64({0}, {})}, {false, false}));
}

TEST(GpuMovement, GatherElements) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("GatherElements", {random_tensor(DataType::kFLOAT, {3, 4}, 60), i64({3, 2}, {0, 3, -1, 2, 1, 1})}, {false, true},
                             {{"axis", int64_t{1}}}));
  // Indices smaller than data on the other axes.
  expect_backends_agree(make("GatherElements", {random_tensor(DataType::kHALF, {4, 5, 3}, 61), i32({2, 3, 2}, {0, 3, 1, 2, 3, 0, -1, 0, 2, 2, 1, 1})},
                             {false, false}, {{"axis", int64_t{0}}}));
  expect_backends_agree(make("GatherElements", {random_tensor(DataType::kINT8, {2, 6}, 62, -9, 9), i64({2, 6}, {5, 4, 3, 2, 1, 0, 0, 0, 0, -6, -5, -4})},
                             {false, false}, {{"axis", int64_t{-1}}}));
}

TEST(GpuMovement, GatherND) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("GatherND", {random_tensor(DataType::kFLOAT, {3, 4, 5}, 70), i64({2, 2}, {0, 1, 2, -1})}, {false, true}));
  expect_backends_agree(make("GatherND", {random_tensor(DataType::kHALF, {3, 4, 5}, 71), i64({3, 1}, {2, 0, 1})}, {false, false}));
  expect_backends_agree(make("GatherND", {random_tensor(DataType::kINT32, {3, 4}, 72, -9, 9), i32({2, 2}, {0, 0, 2, 3})}, {false, false}));
  // batch_dims 1: one index tuple list per batch entry.
  expect_backends_agree(make("GatherND", {random_tensor(DataType::kFLOAT, {2, 3, 4}, 73), i64({2, 2, 1}, {1, 0, 2, 2})}, {false, true},
                             {{"batch_dims", int64_t{1}}}));
  expect_backends_agree(make("GatherND", {random_tensor(DataType::kBF16, {2, 3, 4}, 74), i64({2, 1, 2}, {1, 3, 2, 0})}, {false, true},
                             {{"batch_dims", int64_t{1}}}));
}

// --- Scatter family (duplicates follow the reference's sequential order) ---

TEST(GpuMovement, ScatterND) {
  KILN_REQUIRE_GPU();
  Tensor data = random_tensor(DataType::kFLOAT, {4, 3, 2}, 80);
  Tensor upd = random_tensor(DataType::kFLOAT, {3, 3, 2}, 81);
  expect_backends_agree(make("ScatterND", {data, i64({3, 1}, {2, 0, -1}), upd}, {false, true, false}));
  // Duplicates: the last write wins without a reduction; reductions apply in order.
  Tensor dup = i64({3, 1}, {1, 3, 1});
  for (const char* red : {"none", "add", "mul", "max", "min"}) {
    SCOPED_TRACE(red);
    expect_backends_agree(make("ScatterND", {data, dup, upd}, {false, true, false}, {{"reduction", std::string(red)}}));
    expect_backends_agree(make("ScatterND",
                               {random_tensor(DataType::kINT32, {4, 3}, 82, -9, 9), i32({4, 2}, {0, 1, 3, 2, 0, 1, 0, 1}),
                                random_tensor(DataType::kINT32, {4}, 83, -9, 9)},
                               {false, false, false}, {{"reduction", std::string(red)}}));
    expect_backends_agree(make("ScatterND",
                               {random_tensor(DataType::kHALF, {5, 8}, 84), i64({4, 1}, {4, 4, 0, 4}), random_tensor(DataType::kHALF, {4, 8}, 85)},
                               {false, true, false}, {{"reduction", std::string(red)}}));
  }
  // Many duplicates: 200 updates onto 64 rows, summed in index order.
  {
    Tensor idx = random_tensor(DataType::kINT64, {200, 1}, 88, 0, 63);
    expect_backends_agree(make("ScatterND", {random_tensor(DataType::kFLOAT, {64, 16}, 89), idx, random_tensor(DataType::kFLOAT, {200, 16}, 79)},
                               {false, false, false}, {{"reduction", std::string("add")}}));
  }
  // Whole-tensor tuples (index depth equals the rank) on int8.
  expect_backends_agree(make("ScatterND",
                             {random_tensor(DataType::kINT8, {3, 3}, 86, -9, 9), i64({2, 2}, {0, 0, 2, 1}), random_tensor(DataType::kINT8, {2}, 87, -9, 9)},
                             {false, true, false}));
}

TEST(GpuMovement, ScatterElements) {
  KILN_REQUIRE_GPU();
  Tensor data = random_tensor(DataType::kFLOAT, {3, 5}, 90);
  for (const char* red : {"none", "add", "mul", "max", "min"}) {
    SCOPED_TRACE(red);
    expect_backends_agree(make("ScatterElements", {data, i64({2, 3}, {1, 1, 4, -1, 1, 1}), random_tensor(DataType::kFLOAT, {2, 3}, 91)},
                               {false, true, false}, {{"axis", int64_t{1}}, {"reduction", std::string(red)}}));
    expect_backends_agree(make("ScatterElements",
                               {random_tensor(DataType::kINT64, {4, 2}, 92, -9, 9), i64({3, 2}, {0, 3, 0, 3, 0, 1}),
                                random_tensor(DataType::kINT64, {3, 2}, 93, -9, 9)},
                               {false, false, false}, {{"axis", int64_t{0}}, {"reduction", std::string(red)}}));
    expect_backends_agree(make("ScatterElements",
                               {random_tensor(DataType::kBF16, {2, 4}, 94), i32({2, 4}, {3, 3, 3, 3, 0, 1, 0, 1}), random_tensor(DataType::kBF16, {2, 4}, 95)},
                               {false, false, false}, {{"axis", int64_t{1}}, {"reduction", std::string(red)}}));
  }
  expect_backends_agree(make("ScatterElements",
                             {random_tensor(DataType::kBOOL, {3, 3}, 96), i64({1, 3}, {2, 0, 1}), random_tensor(DataType::kBOOL, {1, 3}, 97)},
                             {false, true, false}, {{"axis", int64_t{0}}, {"reduction", std::string("add")}}));
}

// --- Expand, Tile ---

TEST(GpuMovement, ExpandAndTile) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("Expand", {random_tensor(DataType::kFLOAT, {3, 1}, 100), i64({3}, {2, 3, 4})}, {false, true}));
  expect_backends_agree(make("Expand", {random_tensor(DataType::kHALF, {}, 101), i64({1}, {37})}, {false, true}));
  expect_backends_agree(make("Expand", {random_tensor(DataType::kINT8, {1, 5, 1}, 102, -9, 9), i64({3}, {4, 1, 3})}, {false, true}));
  expect_backends_agree(make("Expand", {random_tensor(DataType::kHALF, {2, 1, 16}, 103), i64({3}, {2, 5, 16})}, {false, true}));
  expect_backends_agree(make("Tile", {random_tensor(DataType::kFLOAT, {2, 3}, 104), i64({2}, {2, 3})}, {false, true}));
  expect_backends_agree(make("Tile", {random_tensor(DataType::kINT64, {3, 1, 2}, 105, -9, 9), i64({3}, {1, 4, 1})}, {false, true}));
  expect_backends_agree(make("Tile", {random_tensor(DataType::kBOOL, {5}, 106), i64({1}, {0})}, {false, true}));
}

// --- Pad ---

TEST(GpuMovement, Pad) {
  KILN_REQUIRE_GPU();
  Tensor x = random_tensor(DataType::kFLOAT, {3, 4}, 110);
  expect_backends_agree(make("Pad", {x, i64({4}, {1, 2, 2, 3}), f32({}, {1.5f})}, {false, true, true}));
  for (const char* mode : {"reflect", "edge", "wrap"}) {
    SCOPED_TRACE(mode);
    expect_backends_agree(make("Pad", {x, i64({4}, {2, 3, 2, 5})}, {false, true}, {{"mode", std::string(mode)}}));
    expect_backends_agree(make("Pad", {random_tensor(DataType::kHALF, {2, 3, 5}, 111), i64({6}, {0, 1, 2, 0, -1, 3})}, {false, true},
                               {{"mode", std::string(mode)}}));
  }
  // Negative pads crop; int32 with a fill value; the axes input.
  expect_backends_agree(make("Pad", {random_tensor(DataType::kINT32, {4, 5}, 112, -9, 9), i64({4}, {-1, 1, 0, -2}), i32({}, {7})},
                             {false, true, true}));
  expect_backends_agree(make("Pad", {random_tensor(DataType::kFLOAT, {2, 3, 4}, 113), i64({2}, {1, 2}), Tensor(), i64({1}, {-1})},
                             {false, true, false, true}, {{"mode", std::string("reflect")}}));
  expect_backends_agree(make("Pad", {random_tensor(DataType::kUINT8, {1, 1}, 114, 0, 200), i64({4}, {2, 2, 2, 2})}, {false, true},
                             {{"mode", std::string("reflect")}}));
  // Pads wider than the axis wrap around more than once.
  for (const char* mode : {"reflect", "wrap"})
    expect_backends_agree(make("Pad", {random_tensor(DataType::kINT64, {1, 2, 3, 2}, 115, -9, 9), i64({8}, {0, 0, 7, 1, 0, 1, 2, 5})},
                               {false, true}, {{"mode", std::string(mode)}}));
}

// --- Trilu ---

TEST(GpuMovement, Trilu) {
  KILN_REQUIRE_GPU();
  for (int64_t upper : {0, 1}) {
    for (int64_t k : {-2, 0, 3}) {
      SCOPED_TRACE(std::to_string(upper) + " " + std::to_string(k));
      expect_backends_agree(make("Trilu", {random_tensor(DataType::kFLOAT, {2, 5, 7}, 120), i64({}, {k})}, {false, true},
                                 {{"upper", upper}}));
    }
    expect_backends_agree(make("Trilu", {random_tensor(DataType::kHALF, {6, 4}, 121)}, {}, {{"upper", upper}}));
  }
}

// --- Resize ---

OpCase resize_case(Tensor x, Tensor roi, Tensor scales, Tensor sizes, OpAttrs attrs) {
  OpCase c = make("Resize", {std::move(x), std::move(roi), std::move(scales), std::move(sizes)}, {false, true, true, true},
                  std::move(attrs));
  c.atol = 1e-6;
  c.rtol = 1e-6;
  return c;
}

TEST(GpuMovement, ResizeNearest) {
  KILN_REQUIRE_GPU();
  Tensor x = random_tensor(DataType::kFLOAT, {1, 2, 5, 7}, 130);
  const char* coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"};
  const char* modes[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  for (const char* coord : coords) {
    for (const char* nm : modes) {
      SCOPED_TRACE(std::string(coord) + " " + nm);
      OpAttrs at = {{"mode", std::string("nearest")}, {"coordinate_transformation_mode", std::string(coord)},
                    {"nearest_mode", std::string(nm)}};
      expect_backends_agree(resize_case(x, Tensor(), f32({4}, {1, 1, 2.0f, 1.5f}), Tensor(), at));
      expect_backends_agree(resize_case(x, Tensor(), f32({4}, {1, 1, 0.6f, 0.45f}), Tensor(), at));
      expect_backends_agree(resize_case(x, Tensor(), Tensor(), i64({4}, {1, 2, 8, 3}), at));
    }
  }
  // Integer and half data, the axes attribute, and keep_aspect_ratio_policy.
  expect_backends_agree(resize_case(random_tensor(DataType::kUINT8, {1, 3, 4, 4}, 131, 0, 250), Tensor(), f32({4}, {1, 1, 3, 3}), Tensor(),
                                    {{"mode", std::string("nearest")}}));
  expect_backends_agree(resize_case(random_tensor(DataType::kHALF, {2, 6, 9}, 132), Tensor(), Tensor(), i64({2}, {4, 13}),
                                    {{"mode", std::string("nearest")}, {"axes", std::vector<int64_t>{1, 2}}}));
  expect_backends_agree(resize_case(random_tensor(DataType::kFLOAT, {1, 1, 4, 6}, 133), Tensor(), Tensor(), i64({2}, {7, 7}),
                                    {{"mode", std::string("nearest")}, {"axes", std::vector<int64_t>{2, 3}},
                                     {"keep_aspect_ratio_policy", std::string("not_larger")}}));
}

TEST(GpuMovement, ResizeLinear) {
  KILN_REQUIRE_GPU();
  const char* coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"};
  for (const char* coord : coords) {
    SCOPED_TRACE(coord);
    OpAttrs at = {{"mode", std::string("linear")}, {"coordinate_transformation_mode", std::string(coord)}};
    expect_backends_agree(resize_case(random_tensor(DataType::kFLOAT, {1, 2, 5, 7}, 140), Tensor(), f32({4}, {1, 1, 2.0f, 1.7f}), Tensor(), at));
    expect_backends_agree(resize_case(random_tensor(DataType::kFLOAT, {2, 3, 9, 8}, 141), Tensor(), Tensor(), i64({4}, {2, 3, 4, 5}), at));
    expect_backends_agree(resize_case(random_tensor(DataType::kFLOAT, {3, 11}, 142), Tensor(), f32({2}, {1, 2.5f}), Tensor(), at));
    expect_backends_agree(resize_case(random_tensor(DataType::kHALF, {1, 2, 4, 4}, 143), Tensor(), f32({4}, {1, 1, 2, 2}), Tensor(), at));
    expect_backends_agree(resize_case(random_tensor(DataType::kBF16, {1, 2, 6, 6}, 144), Tensor(), f32({4}, {1, 1, 0.5f, 0.5f}), Tensor(), at));
    expect_backends_agree(resize_case(random_tensor(DataType::kUINT8, {1, 3, 5, 5}, 145, 0, 250), Tensor(), f32({4}, {1, 1, 1.6f, 1.6f}), Tensor(), at));
    // 3-D (volumetric in one batch) with every axis resized.
    expect_backends_agree(resize_case(random_tensor(DataType::kFLOAT, {3, 4, 5}, 146), Tensor(), f32({3}, {2, 1.5f, 0.8f}), Tensor(), at));
  }
  // tf_crop_and_resize: samples outside the crop take the extrapolation value.
  for (const char* mode : {"linear", "nearest"}) {
    SCOPED_TRACE(mode);
    expect_backends_agree(resize_case(random_tensor(DataType::kFLOAT, {1, 1, 6, 6}, 147), f32({8}, {0, 0, -0.2f, 0.1f, 1, 1, 0.9f, 1.3f}),
                                      Tensor(), i64({4}, {1, 1, 5, 7}),
                                      {{"mode", std::string(mode)}, {"coordinate_transformation_mode", std::string("tf_crop_and_resize")},
                                       {"extrapolation_value", 3.25f}}));
  }
}

// --- OneHot, EyeLike ---

TEST(GpuMovement, OneHot) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("OneHot", {i64({2, 3}, {0, 4, -1, 7, 2, -6}), i64({}, {5}), f32({2}, {-1.0f, 2.5f})}, {false, true, true}));
  expect_backends_agree(make("OneHot", {i32({4}, {3, 0, 1, 9}), f32({}, {4.0f}), i32({2}, {0, 1})}, {false, true, true},
                             {{"axis", int64_t{0}}}));
  expect_backends_agree(make("OneHot", {f32({2, 2}, {1.7f, 0.0f, -1.2f, 3.0f}), i64({1}, {3}), Tensor::from_vector<int64_t>({2}, {5, 9})},
                             {false, true, false}, {{"axis", int64_t{1}}}));
}

TEST(GpuMovement, EyeLike) {
  KILN_REQUIRE_GPU();
  expect_backends_agree(make("EyeLike", {random_tensor(DataType::kFLOAT, {4, 6}, 150)}));
  expect_backends_agree(make("EyeLike", {random_tensor(DataType::kFLOAT, {5, 3}, 151)}, {}, {{"k", int64_t{-2}}}));
  expect_backends_agree(make("EyeLike", {random_tensor(DataType::kINT32, {3, 7}, 152)}, {}, {{"k", int64_t{4}}, {"dtype", int64_t{10}}}));
}

// --- Multi-op networks: values known on the host only once input shapes are (ConstantOfShape, Range, Slice) ---

using BuildFn = std::function<std::vector<ITensor*>(NetworkDefinition&, ITensor* x)>;

std::vector<Tensor> run_dynamic(Backend backend, const BuildFn& build, const Tensor& x, std::string* host_layers) {
  Builder builder;
  auto net = builder.create_network();
  Dims dyn = x.shape();
  dyn[0] = -1;
  ITensor* in = net->add_input("x", x.dtype(), dyn);
  EXPECT_NE(in, nullptr);
  std::vector<ITensor*> outs = build(*net, in);
  for (auto* o : outs) {
    EXPECT_NE(o, nullptr) << net->last_error().message();
    if (!o) return {};
    EXPECT_TRUE(net->mark_output(o).ok());
  }
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  OptimizationProfile p;
  Dims lo = x.shape(), hi = x.shape();
  lo[0] = 1;
  hi[0] = 64;
  EXPECT_TRUE(p.set_shape("x", lo, x.shape(), hi).ok());
  config->add_optimization_profile(p);
  auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
  if (!engine) return {};
  if (backend == Backend::kCUDA && host_layers) *host_layers += test::host_layers(*engine);
  return test::infer(*engine, {{"x", x}});
}

// Both backends must agree exactly; `gpu_ops` must not be among the host layers (Shape/Gather may be, since
// they are computed on the host while preparing).
void expect_dynamic_agree(const BuildFn& build, const Tensor& x, const std::vector<std::string>& gpu_ops) {
  std::string host;
  auto cpu = run_dynamic(Backend::kCPU, build, x, nullptr);
  auto gpu = run_dynamic(Backend::kCUDA, build, x, &host);
  for (const auto& op : gpu_ops) EXPECT_EQ(host.find("(" + op + ")"), std::string::npos) << op << " ran on the host: " << host;
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t k = 0; k < cpu.size(); ++k) {
    ASSERT_EQ(cpu[k].shape(), gpu[k].shape());
    ASSERT_EQ(cpu[k].dtype(), gpu[k].dtype());
    ASSERT_EQ(cpu[k].nbytes(), gpu[k].nbytes());
    EXPECT_EQ(std::memcmp(cpu[k].raw(), gpu[k].raw(), cpu[k].nbytes()), 0) << "output " << k;
  }
}

ITensor* const_i64(NetworkDefinition& net, const std::string& name, std::vector<int64_t> shape, std::vector<int64_t> v) {
  Tensor t = Tensor::from_vector<int64_t>(std::move(shape), v);
  return net.add_constant(name, DataType::kINT64, t.shape(), t.raw());
}

TEST(GpuMovement, ConstantOfShapeFromDynamicShape) {
  KILN_REQUIRE_GPU();
  auto build = [](NetworkDefinition& net, ITensor* x) -> std::vector<ITensor*> {
    auto s = net.add_op("Shape", {x});
    if (s.empty()) return {nullptr};
    auto c = net.add_op("ConstantOfShape", {s[0]});
    return {c.empty() ? nullptr : c[0]};
  };
  expect_dynamic_agree(build, random_tensor(DataType::kFLOAT, {9, 5}, 160), {"ConstantOfShape"});
}

TEST(GpuMovement, RangeFromDynamicShape) {
  KILN_REQUIRE_GPU();
  // limit = x.shape[0] (20 > 16, so shape inference does not carry the values and a kernel runs).
  auto build = [](NetworkDefinition& net, ITensor* x) -> std::vector<ITensor*> {
    auto s = net.add_op("Shape", {x});
    if (s.empty()) return {nullptr};
    auto n = net.add_op("Gather", {s[0], const_i64(net, "zero", {}, {0})});
    if (n.empty()) return {nullptr};
    auto r = net.add_op("Range", {const_i64(net, "start", {}, {-3}), n[0], const_i64(net, "delta", {}, {2})});
    return {r.empty() ? nullptr : r[0]};
  };
  expect_dynamic_agree(build, random_tensor(DataType::kFLOAT, {40, 2}, 161), {"Range"});
}

TEST(GpuMovement, SliceWithShapeDerivedBounds) {
  KILN_REQUIRE_GPU();
  // x[n-2 : 0 : -1, 4 :: -1] with n = x.shape[0]; the starts are computed from the shape (values shape inference
  // only carries when non-negative, so the negative bounds stay constants).
  auto build = [](NetworkDefinition& net, ITensor* x) -> std::vector<ITensor*> {
    auto s = net.add_op("Shape", {x});
    if (s.empty()) return {nullptr};
    auto n = net.add_op("Gather", {s[0], const_i64(net, "first", {1}, {0})});
    if (n.empty()) return {nullptr};
    auto st = net.add_op("Sub", {n[0], const_i64(net, "two", {1}, {2})});
    if (st.empty()) return {nullptr};
    auto starts = net.add_op("Concat", {st[0], const_i64(net, "four", {1}, {4})}, {{"axis", int64_t{0}}});
    if (starts.empty()) return {nullptr};
    auto y = net.add_op("Slice", {x, starts[0], const_i64(net, "ends", {2}, {0, -100}), const_i64(net, "axes", {2}, {0, 1}),
                                  const_i64(net, "steps", {2}, {-1, -1})});
    return {y.empty() ? nullptr : y[0]};
  };
  expect_dynamic_agree(build, random_tensor(DataType::kFLOAT, {7, 6}, 162), {"Slice"});
}

}  // namespace
}  // namespace kiln::gpu_testing
