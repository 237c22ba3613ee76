// CUDA reductions, softmax and normalizations against the CPU reference: every op, every registered dtype,
// row/column/strided layouts, block-sized rows, size-1 and empty dims, negative axes, opset-dependent semantics.
#include "../unit/engine_test_util.h"
#include "gpu_test_util.h"
#include "passes/shape_inference.h"
#include "ops/op_util.h"

namespace kiln::gpu_testing {
namespace {

using DT = DataType;

Tensor i64s(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::from_vector<int64_t>({n}, v);
}

void set_tol(OpCase& c, DT dt, double f32_atol = 1e-5, double f32_rtol = 1e-5) {
  switch (dt) {
    case DT::kHALF: c.atol = 4e-3; c.rtol = 4e-3; break;
    case DT::kBF16: c.atol = 3e-2; c.rtol = 2e-2; break;
    case DT::kFLOAT: c.atol = f32_atol; c.rtol = f32_rtol; break;
    default: c.atol = 0; c.rtol = 0; break;
  }
}

// ReduceXxx at opset 17: ReduceSum takes axes as a constant input, the others as an attribute.
void check_reduce(const std::string& op, DT dt, std::vector<int64_t> shape, std::vector<int64_t> axes,
                  int64_t keepdims = 1, uint32_t seed = 1, double lo = -2, double hi = 2) {
  SCOPED_TRACE(op + " " + dims_to_string(shape) + " axes " + dims_to_string(axes) + " dtype " +
               std::to_string(static_cast<int>(dt)));
  OpCase c;
  c.op = op;
  c.inputs = {random_tensor(dt, shape, seed, lo, hi)};
  c.attrs = {{"keepdims", keepdims}};
  if (op == "ReduceSum") {
    if (!axes.empty()) {
      c.inputs.push_back(i64s(axes));
      c.constant = {false, true};
    }
  } else if (!axes.empty()) {
    c.attrs.push_back({"axes", axes});
  }
  // Sums of many terms differ from the sequential reference by reassociation.
  set_tol(c, dt, 1e-4, 1e-5);
  expect_backends_agree(c);
}

const char* const kAllReduce[] = {"ReduceSum", "ReduceMean",      "ReduceMax",      "ReduceMin",
                                  "ReduceProd", "ReduceL1",       "ReduceL2",       "ReduceLogSum",
                                  "ReduceLogSumExp", "ReduceSumSquare"};

TEST(GpuReduce, EveryOpEveryLayoutFloat) {
  KILN_REQUIRE_GPU();
  for (const char* op : kAllReduce) {
    // LogSum needs a positive sum; Prod stays finite with values near 1.
    const std::string o = op;
    const double lo = (o == "ReduceLogSum" || o == "ReduceProd") ? 0.5 : -2, hi = o == "ReduceProd" ? 1.5 : 2;
    check_reduce(op, DT::kFLOAT, {3, 4, 5}, {1}, 1, 1, lo, hi);        // middle axis: column kernel
    check_reduce(op, DT::kFLOAT, {3, 4, 5}, {-1}, 0, 2, lo, hi);       // last axis: row kernel
    check_reduce(op, DT::kFLOAT, {3, 4, 5}, {0, 2}, 1, 3, lo, hi);     // non-contiguous axes
    check_reduce(op, DT::kFLOAT, {3, 4, 5}, {0, 1}, 0, 4, lo, hi);     // leading axes: column kernel
    check_reduce(op, DT::kFLOAT, {3, 4, 5}, {}, 1, 5, lo, hi);         // all axes
    check_reduce(op, DT::kFLOAT, {2, 3, 1, 4, 3}, {1, 3}, 0, 6, lo, hi);  // strided kept and reduced dims
  }
}

TEST(GpuReduce, HalfAndBFloat16) {
  KILN_REQUIRE_GPU();
  for (DT dt : {DT::kHALF, DT::kBF16})
    for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp",
                           "ReduceSumSquare", "ReduceL1"}) {
      check_reduce(op, dt, {4, 33, 7}, {1}, 1, 7);
      check_reduce(op, dt, {4, 33, 7}, {2}, 0, 8);
      check_reduce(op, dt, {6, 700}, {-1}, 1, 9);
    }
}

TEST(GpuReduce, Integers) {
  KILN_REQUIRE_GPU();
  for (DT dt : {DT::kINT32, DT::kINT64}) {
    for (const char* op : {"ReduceSum", "ReduceMax", "ReduceMin"}) {
      check_reduce(op, dt, {5, 6, 7}, {1}, 1, 10, -100, 100);
      check_reduce(op, dt, {5, 6, 7}, {2}, 0, 11, -100, 100);
      check_reduce(op, dt, {5, 6, 7}, {0, 2}, 1, 12, -100, 100);
      check_reduce(op, dt, {3, 2000}, {}, 0, 13, -100, 100);
    }
    check_reduce("ReduceProd", dt, {5, 6, 7}, {2}, 1, 14, -3, 3);
    check_reduce("ReduceProd", dt, {5, 6, 7}, {0}, 1, 15, -3, 3);
  }
}

TEST(GpuReduce, LongRowsAndColumns) {
  KILN_REQUIRE_GPU();
  for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceLogSumExp", "ReduceL2"}) {
    check_reduce(op, DT::kFLOAT, {3, 5000}, {1}, 1, 20);     // block per row
    check_reduce(op, DT::kFLOAT, {1, 70000}, {1}, 0, 21);    // one long row, 1024 threads
    check_reduce(op, DT::kFLOAT, {3000, 70}, {0}, 1, 22);    // tall reduction, few column tiles
    check_reduce(op, DT::kFLOAT, {7, 300, 45}, {1}, 1, 23);  // column tiles with a partial tile
    check_reduce(op, DT::kFLOAT, {2, 3, 4, 5, 6}, {0, 2, 4}, 1, 24);
    check_reduce(op, DT::kFLOAT, {5, 100, 3}, {1}, 0, 25);   // short innermost kept dim: contiguous columns
  }
}

// Like check_reduce, for reductions of thousands of elements: the reference adds the float terms in sequence, the
// kernels in a tree, so their rounding differs by about sqrt(count) ulps of the running sum.
void check_long_reduce(const std::string& op, DT dt, std::vector<int64_t> shape, std::vector<int64_t> axes,
                       int64_t keepdims, uint32_t seed, double lo = -2, double hi = 2) {
  SCOPED_TRACE(op + " " + dims_to_string(shape) + " axes " + dims_to_string(axes) + " dtype " + dtype_name(dt) +
               " keepdims " + std::to_string(keepdims));
  OpCase c;
  c.op = op;
  c.inputs = {random_tensor(dt, shape, seed, lo, hi)};
  c.attrs = {{"keepdims", keepdims}};
  if (op == "ReduceSum") {
    c.inputs.push_back(i64s(axes));
    c.constant = {false, true};
  } else {
    c.attrs.push_back({"axes", axes});
  }
  set_tol(c, dt);
  int64_t count = 1;
  for (int64_t a : axes) count *= shape[a < 0 ? a + static_cast<int64_t>(shape.size()) : a];
  if (dt == DT::kFLOAT) c.atol = 1e-6 * static_cast<double>(count) + 1e-5;
  expect_backends_agree(c);
}

// NHWC global pooling: axes 1, 2 of [N, H, W, C], x viewed as [N, H*W, C] (the contiguous-column kernel). C of 16
// bytes' multiple takes 16-byte vectors, other C (7 halves, 6 floats) scalars; batch 1 splits the rows across blocks
// and combines partials from the workspace; C = 1280 at 7x7 is efficientnet's last pool.
void check_nhwc_pool(const std::string& op, DT dt, std::vector<int64_t> shape, int64_t keepdims, uint32_t seed,
                     double lo = -2, double hi = 2) {
  check_long_reduce(op, dt, shape, {1, 2}, keepdims, seed, lo, hi);
}

TEST(GpuReduce, NhwcGlobalPoolContiguousColumns) {
  KILN_REQUIRE_GPU();
  const std::vector<std::vector<int64_t>> shapes = {
      {4, 56, 56, 144},  // efficientnet_b0's 56x56 squeeze-excite pool at batch 4: 18 vectors per row
      {1, 56, 56, 144},  // the same at batch 1: rows split across blocks
      {1, 7, 7, 1280},   // the head's pool: 160 half vectors per row
      {2, 14, 14, 7},    // C = 7: scalar loads, 36 rows per block
      {3, 5, 9, 6},      // fp32 C = 6: scalar; halves: not a whole vector either
      {2, 3, 3, 2100},   // rows wider than one 256-vector tile: balanced tiles
  };
  uint32_t seed = 200;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (const char* op : {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"})
      for (const auto& s : shapes) check_nhwc_pool(op, dt, s, 1, seed++);
}

TEST(GpuReduce, NhwcGlobalPoolOtherOpsAndIntegers) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 300;
  for (DT dt : {DT::kFLOAT, DT::kHALF})
    for (const char* op : {"ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd"})
      for (auto s : std::vector<std::vector<int64_t>>{{2, 9, 9, 24}, {2, 9, 9, 5}}) {
        // LogSum needs a positive sum; Prod stays finite with values near 1 (and runs the generic kernel).
        const std::string o = op;
        const double lo = (o == "ReduceLogSum" || o == "ReduceProd") ? 0.9 : -2, hi = o == "ReduceProd" ? 1.1 : 2;
        check_nhwc_pool(op, dt, s, 1, seed++, lo, hi);
      }
  for (DT dt : {DT::kINT32, DT::kINT64})
    for (const char* op : {"ReduceSum", "ReduceMax", "ReduceMin"})
      for (auto s : std::vector<std::vector<int64_t>>{{2, 9, 9, 24}, {3, 4, 4, 3}, {1, 30, 30, 8}})
        check_nhwc_pool(op, dt, s, 0, seed++, -100, 100);
  check_nhwc_pool("ReduceMean", DT::kHALF, {3, 6, 6, 40}, 0, seed++);  // keepdims 0: [N, C] out
}

// Contiguous rows (the innermost dims reduced): 16-byte vectors along the row when its length allows, scalars
// otherwise; a warp per row for short rows, a block for long ones.
TEST(GpuReduce, ContiguousRows) {
  KILN_REQUIRE_GPU();
  struct Case { std::vector<int64_t> shape, axes; };
  const Case cases[] = {
      {{6, 768}, {-1}},        // bert-base hidden: 96 half vectors, a warp per row
      {{2, 3, 384}, {1, 2}},   // two reduced dims merged into one row
      {{130, 40}, {1}},        // many short rows
      {{3, 9000}, {1}},        // a block per row
      {{1, 50000}, {0, 1}},    // one long row: everything into one value
      {{7, 13}, {1}},          // odd length: scalar loads
  };
  uint32_t seed = 400;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (const char* op : {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2"})
      for (const auto& k : cases) check_long_reduce(op, dt, k.shape, k.axes, 0, seed++);
  for (DT dt : {DT::kINT32, DT::kINT64})
    for (const char* op : {"ReduceSum", "ReduceMax"})
      for (const auto& k : cases) check_long_reduce(op, dt, k.shape, k.axes, 1, seed++, -100, 100);
}

TEST(GpuReduce, EdgeCases) {
  KILN_REQUIRE_GPU();
  check_reduce("ReduceSum", DT::kFLOAT, {}, {}, 1, 30);           // rank 0
  check_reduce("ReduceL2", DT::kFLOAT, {}, {}, 0, 31);
  check_reduce("ReduceMax", DT::kFLOAT, {7}, {0}, 0, 32);         // rank 1 to a scalar
  check_reduce("ReduceMean", DT::kFLOAT, {1, 1, 9}, {0, 1}, 1, 33);  // only size-1 dims reduced: a map
  check_reduce("ReduceLogSumExp", DT::kFLOAT, {4, 9}, {1}, 1, 34, 60, 90);  // large values: shifted by the max
  check_reduce("ReduceSum", DT::kFLOAT, {2, 0, 3}, {1}, 1, 35);   // empty reduction: identity values
  check_reduce("ReduceMax", DT::kFLOAT, {2, 0, 3}, {1}, 0, 36);
  check_reduce("ReduceProd", DT::kFLOAT, {2, 0, 3}, {1}, 0, 37);
  check_reduce("ReduceMean", DT::kFLOAT, {2, 0, 3}, {1}, 0, 38);
  check_reduce("ReduceSum", DT::kFLOAT, {0, 4}, {1}, 1, 39);      // no outputs
}

TEST(GpuReduce, NoopWithEmptyAxesAndAxesInput) {
  KILN_REQUIRE_GPU();
  {
    OpCase c;
    c.op = "ReduceSum";
    c.inputs = {random_tensor(DT::kFLOAT, {3, 4}, 40)};
    c.attrs = {{"noop_with_empty_axes", int64_t{1}}};
    expect_backends_agree(c);
  }
  {
    // Opset 18 moves axes to an input for every reduction.
    OpCase c;
    c.op = "ReduceMean";
    c.opset = 18;
    c.inputs = {random_tensor(DT::kFLOAT, {3, 4, 5}, 41), i64s({-1, 0})};
    c.constant = {false, true};
    c.attrs = {{"keepdims", int64_t{0}}};
    set_tol(c, DT::kFLOAT, 1e-5, 1e-5);
    expect_backends_agree(c);
  }
  {
    OpCase c;
    c.op = "ReduceMax";
    c.opset = 18;
    c.inputs = {random_tensor(DT::kHALF, {3, 4, 5}, 42)};
    c.attrs = {{"keepdims", int64_t{1}}};
    expect_backends_agree(c);
  }
}

void check_arg(const std::string& op, DT dt, std::vector<int64_t> shape, int64_t axis, int64_t keepdims, int64_t last,
               uint32_t seed, double lo = -2, double hi = 2) {
  SCOPED_TRACE(op + " " + dims_to_string(shape) + " axis " + std::to_string(axis) + " last " + std::to_string(last));
  OpCase c;
  c.op = op;
  c.inputs = {random_tensor(dt, shape, seed, lo, hi)};
  c.attrs = {{"axis", axis}, {"keepdims", keepdims}, {"select_last_index", last}};
  c.atol = c.rtol = 0;
  expect_backends_agree(c);
}

TEST(GpuArgReduce, LayoutsTiesAndTypes) {
  KILN_REQUIRE_GPU();
  for (const char* op : {"ArgMax", "ArgMin"}) {
    for (int64_t last : {0, 1}) {
      check_arg(op, DT::kFLOAT, {4, 7, 5}, 1, 1, last, 50);      // strided axis: one thread per column
      check_arg(op, DT::kFLOAT, {6, 300}, -1, 0, last, 51);      // warp per row
      check_arg(op, DT::kFLOAT, {3, 5000}, 1, 1, last, 52);      // block per row
      check_arg(op, DT::kFLOAT, {9}, 0, 0, last, 53);
      // Integers and half precision from a small range: many ties, so first/last index matters.
      check_arg(op, DT::kINT32, {5, 200}, 1, 1, last, 54, -3, 3);
      check_arg(op, DT::kINT64, {5, 6, 7}, 0, 0, last, 55, -3, 3);
      check_arg(op, DT::kHALF, {5, 500}, 1, 0, last, 56, -1, 1);
      check_arg(op, DT::kBF16, {5, 6, 70}, 2, 1, last, 57, -1, 1);
    }
  }
}

// TopK (topk.cu): values and int64 indices bit for bit against the reference (equal values by lower index), the
// K input a constant; rows along the last or a strided axis, odd lengths, ties, k = 1 and k = the whole row.
void check_topk(DT dt, std::vector<int64_t> shape, int64_t axis, int64_t k, int64_t largest, uint32_t seed,
                double lo = -4, double hi = 4) {
  SCOPED_TRACE(std::string("TopK ") + dims_to_string(shape) + " axis " + std::to_string(axis) + " k " +
               std::to_string(k) + " largest " + std::to_string(largest));
  OpCase c;
  c.op = "TopK";
  c.inputs = {random_tensor(dt, shape, seed, lo, hi), Tensor::from_vector<int64_t>({1}, {k})};
  c.constant = {false, true};
  c.num_outputs = 2;
  c.attrs = {{"axis", axis}, {"largest", largest}};
  c.atol = c.rtol = 0;
  expect_backends_agree(c);
}

// LRN (lrn.cu): AlexNet/GoogLeNet's settings and the defaults, odd and even window sizes at the channel edges,
// 3-D and 4-D inputs, each float type, against the reference.
TEST(GpuLrn, WindowsAndTypes) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> shape;
    OpAttrs attrs;
  };
  const Case cases[] = {{{2, 16, 7, 7}, {{"size", int64_t{5}}, {"alpha", 1e-4f}, {"beta", 0.75f}, {"bias", 1.0f}}},
                        {{1, 9, 5, 6}, {{"size", int64_t{4}}, {"alpha", 2e-3f}, {"beta", 0.5f}, {"bias", 2.0f}}},
                        {{3, 5, 11}, {{"size", int64_t{3}}}},
                        {{2, 4, 3, 3}, {{"size", int64_t{9}}}}};
  uint32_t seed = 90;
  for (const Case& k : cases)
    for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16}) {
      SCOPED_TRACE(dims_to_string(k.shape) + " " + dtype_name(dt));
      OpCase c;
      c.op = "LRN";
      c.inputs = {random_tensor(dt, k.shape, ++seed, -3, 3)};
      c.attrs = k.attrs;
      set_tol(c, dt, 1e-5, 1e-5);
      expect_backends_agree(c);
    }
}

TEST(GpuTopK, RowsAxesTiesAndTypes) {
  KILN_REQUIRE_GPU();
  for (int64_t largest : {1, 0}) {
    check_topk(DT::kFLOAT, {4, 1000}, -1, 5, largest, 60);     // ImageNet-like top-5
    check_topk(DT::kFLOAT, {3, 7, 5}, 1, 3, largest, 61);      // a strided axis
    check_topk(DT::kFLOAT, {2, 4096}, 1, 4096, largest, 62);   // the longest row, k = the row
    check_topk(DT::kFLOAT, {5, 33}, 1, 1, largest, 63);
    check_topk(DT::kHALF, {6, 300}, 1, 10, largest, 64, -1, 1);  // many ties: lower index first
    check_topk(DT::kBF16, {2, 3, 257}, 2, 17, largest, 65, -1, 1);
  }
}

void check_softmax(const std::string& op, DT dt, std::vector<int64_t> shape, int64_t axis, int opset, uint32_t seed,
                   double lo = -4, double hi = 4) {
  SCOPED_TRACE(op + " " + dims_to_string(shape) + " axis " + std::to_string(axis) + " opset " +
               std::to_string(opset));
  OpCase c;
  c.op = op;
  c.opset = opset;
  c.inputs = {random_tensor(dt, shape, seed, lo, hi)};
  c.attrs = {{"axis", axis}};
  set_tol(c, dt, 1e-6, 1e-5);
  expect_backends_agree(c);
}

TEST(GpuSoftmax, LayoutsAndOpsets) {
  KILN_REQUIRE_GPU();
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    check_softmax(op, DT::kFLOAT, {4, 10}, -1, 17, 60);
    check_softmax(op, DT::kFLOAT, {2, 3000}, 1, 17, 61);          // block per row
    check_softmax(op, DT::kFLOAT, {1, 40000}, 1, 17, 62);         // one long row
    check_softmax(op, DT::kFLOAT, {3, 5, 7}, 1, 17, 63);          // strided axis
    check_softmax(op, DT::kFLOAT, {3, 5, 7}, 0, 17, 64);
    check_softmax(op, DT::kFLOAT, {37}, 0, 17, 65);
    check_softmax(op, DT::kFLOAT, {4, 1}, -1, 17, 66);             // rows of one element
    check_softmax(op, DT::kFLOAT, {8, 16}, -1, 17, 67, -80, 80);   // large logits: max subtraction
    // Before opset 13 the input is flattened to 2-D at axis (default 1).
    check_softmax(op, DT::kFLOAT, {2, 3, 4, 5}, 1, 11, 68);
    check_softmax(op, DT::kFLOAT, {2, 3, 4, 5}, 2, 11, 69);
    check_softmax(op, DT::kFLOAT, {2, 3, 4, 5}, -3, 12, 70);
    for (DT dt : {DT::kHALF, DT::kBF16}) {
      check_softmax(op, dt, {6, 129}, -1, 17, 71);
      check_softmax(op, dt, {3, 17, 9}, 1, 17, 72);
      check_softmax(op, dt, {2, 2500}, -1, 17, 73);
    }
  }
  {
    OpCase c;  // opset 11 default axis (1)
    c.op = "Softmax";
    c.opset = 11;
    c.inputs = {random_tensor(DT::kFLOAT, {3, 4, 6}, 74)};
    set_tol(c, DT::kFLOAT, 1e-6, 1e-5);
    expect_backends_agree(c);
  }
}

TEST(GpuNorm, LayerNormalization) {
  KILN_REQUIRE_GPU();
  struct Case { std::vector<int64_t> x; int64_t axis; std::vector<int64_t> scale; bool bias; };
  const Case cases[] = {
      {{4, 8, 32}, -1, {32}, true},
      {{4, 8, 32}, 1, {8, 32}, true},
      {{4, 8, 32}, 1, {1, 32}, false},  // scale broadcast over the normalized dims
      {{4, 8, 32}, 1, {8, 1}, true},
      {{2, 5000}, -1, {5000}, true},      // block per row
      {{3, 7}, 0, {3, 7}, true},
      {{6, 1}, -1, {1}, true},
      // The register-resident vector path (rows of 32 * VPT 16-byte vectors, dense parameters): VPT 1-4.
      {{3, 37, 768}, -1, {768}, true},
      {{130, 512}, -1, {512}, false},
      {{2, 3, 1024}, -1, {1024}, true},
      {{2, 3, 384}, -1, {384}, true},  // 384 halves: 1.5 vectors per lane, the wide vector kernel
      // The wide vector kernel (whole 16-byte vectors, beyond the register path): llama's 4096 and 1280 with a
      // warp per row, 12000 with a block per row; 1030 is no whole number of vectors (the general kernel).
      {{3, 5, 4096}, -1, {4096}, true},
      {{4, 1280}, -1, {1280}, false},
      {{2, 12000}, -1, {12000}, true},
      {{3, 1030}, -1, {1030}, true},
  };
  uint32_t seed = 80;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (const auto& k : cases) {
      SCOPED_TRACE(dims_to_string(k.x) + " axis " + std::to_string(k.axis));
      OpCase c;
      c.op = "LayerNormalization";
      c.inputs = {random_tensor(dt, k.x, seed++), random_tensor(dt, k.scale, seed++, 0.5, 1.5)};
      c.constant = {false, true, true};
      if (k.bias) c.inputs.push_back(random_tensor(dt, k.scale, seed++));
      c.attrs = {{"axis", k.axis}, {"epsilon", 1e-5f}};
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
}

// FP32 model, FP16 build: the lowering makes x, scale and bias half, so this runs the wide kernel's vector
// parameter loads in a full build. (Its element-by-element parameter path, for parameters of another type than
// x, is not reached by any test yet.)
TEST(GpuNorm, LayerNormalizationLoweredToHalf) {
  KILN_REQUIRE_GPU();
  for (auto [x, scale] : std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>{
           {{4, 7, 384}, {384}}, {{2, 4096}, {4096}}, {{3, 768}, {768}}}) {
    SCOPED_TRACE(dims_to_string(x));
    OpCase c;
    c.op = "LayerNormalization";
    c.inputs = {random_tensor(DT::kFLOAT, x, 95), random_tensor(DT::kFLOAT, scale, 96, 0.5, 1.5),
                random_tensor(DT::kFLOAT, scale, 97)};
    c.constant = {false, true, true};
    c.attrs = {{"axis", int64_t{-1}}, {"epsilon", 1e-5f}};
    c.flags = {BuilderFlag::kFP16};
    c.atol = 1e-2;
    c.rtol = 1e-2;
    expect_backends_agree(c);
  }
}

// A graph of one kiln norm node `n` (inputs in graph-input order): its output on the GPU against the CPU reference,
// all of it on the GPU, in `to` (the node's output type), within the tolerance of `dt`, the type it computes in.
void expect_node_agrees(ir::Graph& g, ir::Node* n, const std::vector<Tensor>& inputs, DT dt, DT to) {
  Status st = passes::infer_node(g, *n);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(n->outputs[0]->dtype, to);
  g.outputs().push_back(n->outputs[0]);
  const std::vector<Tensor> cpu = run_graph(g, Backend::kCPU, inputs, nullptr);
  std::string host;
  const std::vector<Tensor> gpu = run_graph(g, Backend::kCUDA, inputs, &host);
  EXPECT_EQ(host, "") << "ran on the host";
  ASSERT_EQ(cpu.size(), 1u);
  ASSERT_EQ(gpu.size(), 1u);
  ASSERT_EQ(gpu[0].dtype(), to);
  // Stored as float32 from a reduced type, only the order of float32 sums differs from the reference.
  const double tol = dt == DT::kFLOAT || to == DT::kFLOAT ? 1e-4 : dt == DT::kHALF ? 1e-2 : 5e-2;
  expect_tensors_close(cpu[0], gpu[0], tol, tol, "vs the reference");
}

// kiln AddLayerNormalization (fuse_add_layernorm's node): A + B normalized, B of A's shape or repeating along
// leading dims, against the CPU reference, in each type: bert's embedding shapes (the register-resident kernel
// adds B as it loads a row), rows that kernel does not take (5000 and 1030 elements: B is added into Y first and
// Y normalized in place), B as a graph input or a constant, with and without the LayerNorm's bias.
TEST(GpuNorm, AddLayerNormalization) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> a, b;
    bool b_constant, bias;
  };
  const Case cases[] = {
      {{2, 128, 768}, {1, 128, 768}, true, true},   // token + position embeddings, batch 2
      {{1, 128, 768}, {128, 768}, true, true},      // batch 1, the table without its batch dim
      {{3, 37, 768}, {3, 37, 768}, false, true},    // a residual of the same shape
      {{4, 8, 512}, {512}, true, false},            // one row for all
      {{2, 5000}, {1, 5000}, true, true},           // beyond the register-resident kernel
      {{3, 1030}, {3, 1030}, false, true},          // rows of no whole 16-byte vectors
  };
  uint32_t seed = 300;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (bool to_float : {false, true})
    for (const Case& k : cases) {
      if (to_float && dt == DT::kFLOAT) continue;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " A " + dims_to_string(k.a) + " B " + dims_to_string(k.b) +
                   (to_float ? " stored as float32" : ""));
      ir::Graph g;
      std::vector<Tensor> inputs;
      ir::Value* a = test::add_input(g, "a", dt, ops::shape_from_dims(k.a));
      inputs.push_back(random_tensor(dt, k.a, seed++, -2, 2));
      ir::Value* b = nullptr;
      if (k.b_constant) {
        b = g.add_constant("b", random_tensor(dt, k.b, seed++, -2, 2));
      } else {
        b = test::add_input(g, "b", dt, ops::shape_from_dims(k.b));
        inputs.push_back(random_tensor(dt, k.b, seed++, -2, 2));
      }
      const std::vector<int64_t> row = {k.a.back()};
      std::vector<ir::Value*> in = {a, b, g.add_constant("scale", random_tensor(dt, row, seed++, 0.5, 1.5))};
      if (k.bias) in.push_back(g.add_constant("bias", random_tensor(dt, row, seed++)));
      Attributes at;
      at.set("axis", int64_t{-1});
      at.set("epsilon", 1e-5f);
      if (to_float) at.set("to", ops::onnx_code_of(DT::kFLOAT));
      ir::Node* n = g.add_node("AddLayerNormalization", "add_ln", in, {"y"}, at, 1, "kiln");
      expect_node_agrees(g, n, inputs, dt, to_float ? DT::kFLOAT : dt);
    }
}

// kiln EmbedLayerNormalization (fuse_add_layernorm's node for a lookup + sum + LayerNorm): rows looked up in a
// table by int64 or int32 indices (negative ones counted from the end), B added, normalized; against the CPU
// reference in each type: bert's shapes (the register-resident kernel reads each row from the table), rows too
// long for it (5000: the rows are gathered into Y first), and a table whose rows hold several normalized rows
// ([V, 4, 64] normalized over the last dim: gathered first too).
TEST(GpuNorm, EmbedLayerNormalization) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> table, ids, b;
    DT idx;
    int64_t table2_rows = 0;  // a second lookup (HF BERT's token types): its table's rows, 0 for none
  };
  const Case cases[] = {
      {{1000, 768}, {2, 128}, {1, 128, 768}, DT::kINT64},     // bert's token table, batch 2
      {{1000, 768}, {1, 128}, {128, 768}, DT::kINT32},        // batch 1, int32 ids
      {{30, 256}, {3, 7}, {256}, DT::kINT64},                 // one addend row for all
      {{40, 5000}, {2, 3}, {1, 3, 5000}, DT::kINT64},          // beyond the register-resident kernel
      {{40, 4, 64}, {2, 3}, {64}, DT::kINT32},                 // table rows of several normalized rows
      {{1000, 768}, {2, 128}, {1, 128, 768}, DT::kINT64, 2},  // + token types (2 rows), in the kernel
      {{40, 5000}, {2, 3}, {1, 3, 5000}, DT::kINT32, 3},       // + a second lookup, outside it (workspace)
  };
  uint32_t seed = 400;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (bool to_float : {false, true})
    for (const Case& k : cases) {
      if (to_float && dt == DT::kFLOAT) continue;
      SCOPED_TRACE(std::string(dtype_name(dt)) + " table " + dims_to_string(k.table) + " ids " + dims_to_string(k.ids) +
                   " " + dtype_name(k.idx) + (to_float ? " stored as float32" : "") +
                   (k.table2_rows ? " + a second lookup" : ""));
      ir::Graph g;
      int64_t n = 1;
      for (int64_t d : k.ids) n *= d;
      const int64_t rows = k.table[0];
      std::vector<int64_t> v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = (i * 37 + 11) % rows - (i % 5 == 0 ? rows : 0);  // every fifth negative
      ir::Value* ids = test::add_input(g, "ids", k.idx, ops::shape_from_dims(k.ids));
      std::vector<Tensor> inputs = {Tensor::from_vector<int64_t>(k.ids, v).cast(k.idx)};
      const std::vector<int64_t> row = {k.table.back()};
      std::vector<ir::Value*> in = {g.add_constant("table", random_tensor(dt, k.table, seed++, -2, 2)), ids,
                                    g.add_constant("b", random_tensor(dt, k.b, seed++, -1, 1)),
                                    g.add_constant("scale", random_tensor(dt, row, seed++, 0.5, 1.5)),
                                    g.add_constant("bias", random_tensor(dt, row, seed++))};
      if (k.table2_rows) {
        std::vector<int64_t> t2 = k.table;
        t2[0] = k.table2_rows;
        std::vector<int64_t> v2(n);
        for (int64_t i = 0; i < n; ++i) v2[i] = i % k.table2_rows - (i % 7 == 0 ? k.table2_rows : 0);
        in.push_back(g.add_constant("table2", random_tensor(dt, t2, seed++, -2, 2)));
        in.push_back(test::add_input(g, "ids2", k.idx, ops::shape_from_dims(k.ids)));
        inputs.push_back(Tensor::from_vector<int64_t>(k.ids, v2).cast(k.idx));
      }
      Attributes at;
      at.set("axis", int64_t{-1});
      at.set("epsilon", 1e-5f);
      if (to_float) at.set("to", ops::onnx_code_of(DT::kFLOAT));
      ir::Node* node = g.add_node("EmbedLayerNormalization", "embed_ln", in, {"y"}, at, 1, "kiln");
      expect_node_agrees(g, node, inputs, dt, to_float ? DT::kFLOAT : dt);
    }
}

// kiln LayerNormalization (fuse_layernorm_output_cast's node): Y stored as float32 from float16/bfloat16 input,
// against the CPU reference (the float32 normalization of the reduced inputs): rows the register-resident kernel
// stores as float32 itself (768, 256, 1024) and rows it does not take (5000, 1030, 4096), which are normalized into
// the workspace and converted; and `to` equal to X's type.
TEST(GpuNorm, KilnLayerNormalizationStoresFloat32) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 500;
  for (DT dt : {DT::kHALF, DT::kBF16, DT::kFLOAT})
    for (std::vector<int64_t> shape : std::vector<std::vector<int64_t>>{
             {1, 128, 768}, {64, 128, 768}, {5, 256}, {3, 1024}, {2, 5000}, {3, 1030}, {7, 4096}})
      for (bool bias : {true, false}) {
        const DT to = dt == DT::kFLOAT ? DT::kFLOAT : (bias ? DT::kFLOAT : dt);  // without bias: `to` = X's type
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + dims_to_string(shape) + " to " + dtype_name(to));
        ir::Graph g;
        ir::Value* x = test::add_input(g, "x", dt, ops::shape_from_dims(shape));
        std::vector<Tensor> inputs = {random_tensor(dt, shape, seed++, -3, 3)};
        const std::vector<int64_t> row = {shape.back()};
        std::vector<ir::Value*> in = {x, g.add_constant("scale", random_tensor(dt, row, seed++, 0.5, 1.5))};
        if (bias) in.push_back(g.add_constant("bias", random_tensor(dt, row, seed++)));
        Attributes at;
        at.set("axis", int64_t{-1});
        at.set("epsilon", 1e-5f);
        at.set("to", ops::onnx_code_of(to));
        ir::Node* n = g.add_node("LayerNormalization", "ln_f32", in, {"y"}, at, 1, "kiln");
        expect_node_agrees(g, n, inputs, dt, to);
      }
}

TEST(GpuNorm, LayerNormalizationStatistics) {
  KILN_REQUIRE_GPU();
  for (int64_t stash : {1, 11})
    for (DT dt : {DT::kFLOAT, DT::kHALF}) {
      OpCase c;
      c.op = "LayerNormalization";
      c.inputs = {random_tensor(dt, {3, 4, 16}, 90), random_tensor(dt, {4, 16}, 91), random_tensor(dt, {4, 16}, 92)};
      c.constant = {false, true, true};
      c.attrs = {{"axis", int64_t{-2}}, {"stash_type", stash}};
      c.num_outputs = 3;
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
}

TEST(GpuNorm, RMSNormalization) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 100;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (auto [x, axis, scale] : std::vector<std::tuple<std::vector<int64_t>, int64_t, std::vector<int64_t>>>{
             {{4, 8, 64}, -1, {64}}, {{4, 8, 64}, 1, {8, 64}}, {{4, 8, 64}, 1, {64}}, {{2, 4096}, -1, {4096}},
             {{2, 9000}, 1, {1}}}) {
      SCOPED_TRACE(dims_to_string(x));
      OpCase c;
      c.op = "RMSNormalization";
      c.opset = 23;
      c.inputs = {random_tensor(dt, x, seed++), random_tensor(dt, scale, seed++, 0.5, 1.5)};
      c.constant = {false, true};
      c.attrs = {{"axis", axis}, {"epsilon", 1e-6f}};
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
}

TEST(GpuNorm, InstanceAndGroupNormalization) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 110;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16}) {
    for (auto x : std::vector<std::vector<int64_t>>{{2, 3, 5, 7}, {1, 4, 3000}, {2, 5, 2}}) {
      OpCase c;
      c.op = "InstanceNormalization";
      c.inputs = {random_tensor(dt, x, seed++), random_tensor(dt, {x[1]}, seed++, 0.5, 1.5),
                  random_tensor(dt, {x[1]}, seed++)};
      c.constant = {false, true, true};
      c.attrs = {{"epsilon", 1e-5f}};
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
    // Opset 18: scale/bias per group; opset 21: per channel.
    for (auto [opset, groups, pc] : std::vector<std::tuple<int, int64_t, int64_t>>{{18, 3, 3}, {21, 3, 6}, {21, 6, 6},
                                                                                 {21, 1, 6}}) {
      SCOPED_TRACE("GroupNormalization opset " + std::to_string(opset) + " groups " + std::to_string(groups));
      OpCase c;
      c.op = "GroupNormalization";
      c.opset = opset;
      c.inputs = {random_tensor(dt, {2, 6, 4, 5}, seed++), random_tensor(dt, {pc}, seed++, 0.5, 1.5),
                  random_tensor(dt, {pc}, seed++)};
      c.constant = {false, true, true};
      c.attrs = {{"num_groups", groups}, {"epsilon", 1e-5f}};
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
  }
}

TEST(GpuNorm, LpNormalization) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 130;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16})
    for (int64_t p : {1, 2})
      for (auto [x, axis] : std::vector<std::pair<std::vector<int64_t>, int64_t>>{
               {{4, 10}, -1}, {{3, 5, 7}, 1}, {{3, 5, 7}, 0}, {{2, 3000}, 1}, {{5}, 0}}) {
        OpCase c;
        c.op = "LpNormalization";
        c.inputs = {random_tensor(dt, x, seed++)};
        c.attrs = {{"axis", axis}, {"p", p}};
        set_tol(c, dt, 1e-6, 1e-5);
        expect_backends_agree(c);
      }
}

TEST(GpuNorm, MeanVarianceNormalization) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 150;
  for (DT dt : {DT::kFLOAT, DT::kHALF, DT::kBF16}) {
    {
      OpCase c;  // default axes {0, 2, 3}: strided groups
      c.op = "MeanVarianceNormalization";
      c.inputs = {random_tensor(dt, {2, 3, 4, 5}, seed++)};
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
    for (auto axes : std::vector<std::vector<int64_t>>{{2, 3}, {1}, {-1}, {0, 1, 2, 3}}) {
      OpCase c;
      c.op = "MeanVarianceNormalization";
      c.inputs = {random_tensor(dt, {2, 3, 4, 50}, seed++)};
      c.attrs = {{"axes", axes}};
      set_tol(c, dt, 1e-5, 1e-4);
      expect_backends_agree(c);
    }
  }
}

void check_cumsum(DT dt, std::vector<int64_t> shape, int64_t axis, int64_t exclusive, int64_t reverse, uint32_t seed,
                  DT axis_dt = DT::kINT64) {
  SCOPED_TRACE("CumSum " + dims_to_string(shape) + " axis " + std::to_string(axis) + " exclusive " +
               std::to_string(exclusive) + " reverse " + std::to_string(reverse));
  OpCase c;
  c.op = "CumSum";
  c.inputs = {random_tensor(dt, shape, seed, -10, 10), Tensor::from_vector<int64_t>({}, {axis}).cast(axis_dt)};
  c.constant = {false, true};
  c.attrs = {{"exclusive", exclusive}, {"reverse", reverse}};
  set_tol(c, dt, 1e-4, 1e-5);
  if (dt == DT::kHALF || dt == DT::kBF16) c.atol = dt == DT::kHALF ? 0.1 : 1.0;  // sums up to ~100 in 16 bits
  expect_backends_agree(c);
}

TEST(GpuCumSum, LayoutsFlagsAndTypes) {
  KILN_REQUIRE_GPU();
  for (int64_t ex : {0, 1})
    for (int64_t rev : {0, 1}) {
      check_cumsum(DT::kFLOAT, {3, 200}, 1, ex, rev, 170);    // block scan per row
      check_cumsum(DT::kFLOAT, {2, 3000}, -1, ex, rev, 171);  // several chunks per row
      check_cumsum(DT::kFLOAT, {4, 5, 6}, 1, ex, rev, 172);   // strided axis
      check_cumsum(DT::kFLOAT, {4, 5, 6}, 0, ex, rev, 173);
      check_cumsum(DT::kFLOAT, {10}, 0, ex, rev, 174);
      check_cumsum(DT::kINT32, {3, 500}, 1, ex, rev, 175);
      check_cumsum(DT::kINT64, {4, 5, 6}, -2, ex, rev, 176);
      check_cumsum(DT::kHALF, {3, 100}, 1, ex, rev, 177);
      check_cumsum(DT::kBF16, {3, 5, 6}, 1, ex, rev, 178);
    }
  check_cumsum(DT::kFLOAT, {4, 7}, 1, 0, 0, 179, DT::kINT32);  // axis given as int32
  // A scalar has no axis: refused on every backend (BadOnnxInputs.CumSumOfAScalarIsAnError), not compared here.
}

}  // namespace
}  // namespace kiln::gpu_testing
