// GPU tests of the dense family (MatMul, Gemm, Conv, ConvTranspose, BatchNormalization, pooling) against the
// CPU reference, in FP32 (with and without TF32), FP16 and BF16.
#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

using Shape = std::vector<int64_t>;

// Tolerances per data type: FP32 without TF32 is close to exact; TF32 keeps 10 mantissa bits of each product;
// FP16/BF16 outputs differ from the reference by at most about one unit in the last place.
struct Tol {
  double atol, rtol;
};
Tol tol_for(DataType dt, bool tf32) {
  switch (dt) {
    case DataType::kHALF: return {1e-2, 4e-3};
    case DataType::kBF16: return {5e-2, 1.6e-2};
    default: return tf32 ? Tol{5e-2, 1e-2} : Tol{5e-4, 1e-4};  // FP32 allows for Winograd/FFT algorithms
  }
}

OpCase make_case(const std::string& op, OpAttrs attrs, std::vector<Tensor> inputs, std::vector<bool> constant = {},
                 bool tf32 = false) {
  OpCase c;
  c.op = op;
  c.attrs = std::move(attrs);
  c.inputs = std::move(inputs);
  c.constant = std::move(constant);
  c.tf32 = tf32;
  Tol t = tol_for(c.inputs[0].dtype(), tf32);
  c.atol = t.atol;
  c.rtol = t.rtol;
  return c;
}

const DataType kFloatTypes[] = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};

// ---- MatMul ----

void matmul_case(DataType dt, Shape a, Shape b, uint32_t seed, bool b_const = false, bool tf32 = false) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " " + dims_to_string(a) + " x " + dims_to_string(b));
  expect_backends_agree(make_case("MatMul", {}, {random_tensor(dt, a, seed), random_tensor(dt, b, seed + 1)},
                                  {false, b_const}, tf32));
}

TEST(GpuDense, MatMul2DFp32) {
  KILN_REQUIRE_GPU();
  matmul_case(DataType::kFLOAT, {33, 47}, {47, 29}, 1);
  matmul_case(DataType::kFLOAT, {1, 1}, {1, 1}, 2);
  matmul_case(DataType::kFLOAT, {128, 256}, {256, 96}, 3, /*b_const=*/true);
}

TEST(GpuDense, MatMulTf32) {
  KILN_REQUIRE_GPU();
  matmul_case(DataType::kFLOAT, {64, 128}, {128, 80}, 4, false, /*tf32=*/true);
  matmul_case(DataType::kFLOAT, {2, 3, 40, 64}, {64, 24}, 5, true, /*tf32=*/true);
}

TEST(GpuDense, MatMulVectors) {
  KILN_REQUIRE_GPU();
  matmul_case(DataType::kFLOAT, {7}, {7, 5}, 6);          // 1-D x 2-D -> [5]
  matmul_case(DataType::kFLOAT, {4, 7}, {7}, 7);          // 2-D x 1-D -> [4]
  matmul_case(DataType::kFLOAT, {9}, {9}, 8);             // 1-D x 1-D -> scalar
  matmul_case(DataType::kFLOAT, {5}, {3, 5, 6}, 9);       // 1-D x batched -> [3, 6]
  matmul_case(DataType::kFLOAT, {2, 3, 4, 5}, {5}, 10);   // batched x 1-D -> [2, 3, 4]
}

TEST(GpuDense, MatMulBatchBroadcast) {
  KILN_REQUIRE_GPU();
  matmul_case(DataType::kFLOAT, {3, 5, 7, 4}, {3, 5, 4, 6}, 11);     // equal batches: one strided batch
  matmul_case(DataType::kFLOAT, {2, 3, 5, 8}, {8, 6}, 12);           // shared B: folded into rows
  matmul_case(DataType::kFLOAT, {5, 8}, {4, 8, 6}, 13);              // shared A: batch stride 0
  matmul_case(DataType::kFLOAT, {2, 1, 5, 8}, {1, 3, 8, 6}, 14);     // both broadcast: host loop + batch
  matmul_case(DataType::kFLOAT, {2, 1, 3, 5, 8}, {3, 8, 6}, 15);     // size-1 batch dim inside
  matmul_case(DataType::kFLOAT, {4, 1, 5, 8}, {4, 3, 8, 6}, 16);     // A broadcast on the inner batch dim
  matmul_case(DataType::kFLOAT, {1, 1, 3, 5}, {2, 2, 5, 3}, 17);
}

TEST(GpuDense, MatMulOddAlignment) {
  KILN_REQUIRE_GPU();
  // Odd sizes leave batch matrices and rows at 2- or 4-byte alignment.
  matmul_case(DataType::kFLOAT, {3, 5, 3}, {3, 3, 7}, 18);
  matmul_case(DataType::kHALF, {3, 5, 3}, {3, 3, 7}, 19);
  matmul_case(DataType::kBF16, {2, 1, 3, 3}, {1, 3, 3, 5}, 20);
}

TEST(GpuDense, MatMulHalfAndBf16) {
  KILN_REQUIRE_GPU();
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    matmul_case(dt, {64, 96}, {96, 48}, 21);
    matmul_case(dt, {2, 3, 16, 32}, {32, 24}, 22, true);
    matmul_case(dt, {2, 1, 8, 16}, {1, 3, 16, 8}, 23);
    matmul_case(dt, {16}, {16, 8}, 24);
  }
}

TEST(GpuDense, MatMulEmpty) {
  KILN_REQUIRE_GPU();
  matmul_case(DataType::kFLOAT, {3, 0}, {0, 4}, 25);  // K = 0: zeros
  matmul_case(DataType::kFLOAT, {0, 5}, {5, 4}, 26);  // empty output
}

// ---- Gemm ----

void gemm_case(DataType dt, int64_t m, int64_t n, int64_t k, int64_t ta, int64_t tb, float alpha, float beta,
               const Shape* c_shape, uint32_t seed, bool tf32 = false, bool weights_const = true) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" +
               std::to_string(k) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " alpha=" +
               std::to_string(alpha) + " beta=" + std::to_string(beta) + " C=" + (c_shape ? dims_to_string(*c_shape) : "none"));
  std::vector<Tensor> in = {random_tensor(dt, ta ? Shape{k, m} : Shape{m, k}, seed),
                            random_tensor(dt, tb ? Shape{n, k} : Shape{k, n}, seed + 1)};
  std::vector<bool> cst = {false, weights_const};
  if (c_shape) {
    in.push_back(random_tensor(dt, *c_shape, seed + 2));
    cst.push_back(weights_const);
  }
  OpAttrs attrs = {{"transA", ta}, {"transB", tb}, {"alpha", alpha}, {"beta", beta}};
  expect_backends_agree(make_case("Gemm", attrs, in, cst, tf32));
}

TEST(GpuDense, GemmTransposes) {
  KILN_REQUIRE_GPU();
  for (int64_t ta : {0, 1})
    for (int64_t tb : {0, 1}) gemm_case(DataType::kFLOAT, 13, 17, 19, ta, tb, 1.0f, 1.0f, nullptr, 30);
}

TEST(GpuDense, GemmBiasAndC) {
  KILN_REQUIRE_GPU();
  const Shape vec = {17}, row = {1, 17}, full = {13, 17}, col = {13, 1}, one = {1}, scalar = {};
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 1, 1.0f, 1.0f, &vec, 31);    // bias epilogue
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 1, 1.0f, 1.0f, &row, 32);    // bias epilogue
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 1, 0.5f, 1.0f, &vec, 33);    // alpha applies to AB only
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 1, 1.0f, 0.5f, &vec, 34);    // broadcast C, then beta
  gemm_case(DataType::kFLOAT, 13, 17, 19, 1, 0, 2.0f, -1.5f, &full, 35);
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 0, 1.0f, 1.0f, &col, 36);
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 0, 1.0f, 2.0f, &one, 37);
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 0, 1.0f, 1.0f, &scalar, 38);
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 0, 1.0f, 0.0f, &full, 39);   // beta 0: C ignored
  gemm_case(DataType::kFLOAT, 13, 1, 19, 0, 1, 1.0f, 1.0f, &one, 40);     // n = 1 bias
  gemm_case(DataType::kFLOAT, 13, 17, 19, 0, 1, 1.0f, 1.0f, &vec, 41, false, /*weights_const=*/false);
}

TEST(GpuDense, GemmTf32) {
  KILN_REQUIRE_GPU();
  const Shape vec = {96};
  gemm_case(DataType::kFLOAT, 64, 96, 128, 0, 1, 1.0f, 1.0f, &vec, 42, /*tf32=*/true);
}

TEST(GpuDense, GemmHalfAndBf16) {
  KILN_REQUIRE_GPU();
  const Shape vec = {24}, full = {16, 24};
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    gemm_case(dt, 16, 24, 40, 0, 1, 1.0f, 1.0f, &vec, 43);
    gemm_case(dt, 16, 24, 40, 1, 0, 0.5f, 0.25f, &full, 44);
    gemm_case(dt, 15, 23, 7, 0, 0, 1.0f, 1.0f, nullptr, 45);
  }
}

TEST(GpuDense, GemmEmptyK) {
  KILN_REQUIRE_GPU();
  const Shape full = {4, 5};
  gemm_case(DataType::kFLOAT, 4, 5, 0, 0, 0, 1.0f, 0.5f, &full, 46);
  gemm_case(DataType::kFLOAT, 4, 5, 0, 0, 0, 1.0f, 1.0f, nullptr, 47);
}

// ---- Conv ----

void conv_case(DataType dt, Shape x, Shape w, bool bias, OpAttrs attrs, uint32_t seed, bool tf32 = false) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " X " + dims_to_string(x) + " W " + dims_to_string(w));
  std::vector<Tensor> in = {random_tensor(dt, x, seed), random_tensor(dt, w, seed + 1, -1, 1)};
  std::vector<bool> cst = {false, true};
  if (bias) {
    in.push_back(random_tensor(dt, {w[0]}, seed + 2));
    cst.push_back(true);
  }
  expect_backends_agree(make_case("Conv", std::move(attrs), in, cst, tf32));
}

TEST(GpuDense, Conv2D) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  conv_case(DataType::kFLOAT, {2, 3, 9, 11}, {8, 3, 3, 3}, true, {{"pads", V{1, 1, 1, 1}}}, 50);
  conv_case(DataType::kFLOAT, {1, 4, 10, 10}, {6, 4, 3, 3}, false, {{"strides", V{2, 2}}}, 51);
  conv_case(DataType::kFLOAT, {2, 4, 12, 13}, {6, 4, 3, 3}, true,
            {{"dilations", V{2, 2}}, {"pads", V{2, 1, 2, 1}}}, 52);
  conv_case(DataType::kFLOAT, {2, 6, 8, 8}, {4, 3, 3, 3}, true, {{"group", int64_t{2}}, {"pads", V{1, 1, 1, 1}}}, 53);
  conv_case(DataType::kFLOAT, {2, 8, 9, 9}, {8, 1, 3, 3}, true,
            {{"group", int64_t{8}}, {"pads", V{1, 1, 1, 1}}, {"strides", V{2, 2}}}, 54);  // depthwise
  conv_case(DataType::kFLOAT, {3, 16, 7, 7}, {32, 16, 1, 1}, true, {}, 55);             // pointwise
  conv_case(DataType::kFLOAT, {1, 3, 6, 7}, {5, 3, 2, 4}, true, {{"strides", V{1, 2}}}, 56);  // rectangular
}

TEST(GpuDense, ConvAutoPadAndAsymmetricPads) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  conv_case(DataType::kFLOAT, {2, 3, 8, 8}, {4, 3, 3, 3}, true,
            {{"auto_pad", std::string("SAME_UPPER")}, {"strides", V{2, 2}}}, 60);  // pads 0/1: padded copy
  conv_case(DataType::kFLOAT, {2, 3, 8, 8}, {4, 3, 3, 3}, true,
            {{"auto_pad", std::string("SAME_LOWER")}, {"strides", V{2, 2}}}, 61);
  conv_case(DataType::kFLOAT, {1, 3, 7, 7}, {4, 3, 3, 3}, false, {{"auto_pad", std::string("SAME_UPPER")}}, 62);
  conv_case(DataType::kFLOAT, {1, 3, 7, 7}, {4, 3, 2, 2}, false, {{"auto_pad", std::string("SAME_UPPER")}}, 63);
  conv_case(DataType::kFLOAT, {1, 3, 7, 7}, {4, 3, 3, 3}, false, {{"auto_pad", std::string("VALID")}}, 64);
  conv_case(DataType::kFLOAT, {2, 3, 7, 9}, {4, 3, 3, 3}, true, {{"pads", V{0, 2, 1, 0}}}, 65);
  conv_case(DataType::kHALF, {2, 3, 8, 8}, {4, 3, 3, 3}, true, {{"pads", V{1, 0, 2, 1}}}, 66);
}

TEST(GpuDense, Conv1DAnd3D) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  conv_case(DataType::kFLOAT, {2, 4, 17}, {6, 4, 3}, true, {{"pads", V{1, 1}}}, 70);
  conv_case(DataType::kFLOAT, {2, 4, 17}, {6, 2, 5}, true, {{"group", int64_t{2}}, {"strides", V{2}}, {"dilations", V{2}}}, 71);
  conv_case(DataType::kFLOAT, {2, 4, 16}, {6, 4, 4}, false, {{"auto_pad", std::string("SAME_UPPER")}}, 72);
  conv_case(DataType::kFLOAT, {1, 3, 5, 6, 7}, {4, 3, 3, 3, 3}, true, {{"pads", V{1, 1, 1, 1, 1, 1}}}, 73);
  conv_case(DataType::kFLOAT, {2, 2, 6, 6, 6}, {4, 2, 2, 3, 3}, true, {{"strides", V{2, 1, 2}}}, 74);
}

TEST(GpuDense, ConvTf32HalfBf16) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  conv_case(DataType::kFLOAT, {2, 16, 14, 14}, {32, 16, 3, 3}, true, {{"pads", V{1, 1, 1, 1}}}, 80, /*tf32=*/true);
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    conv_case(dt, {2, 16, 14, 14}, {32, 16, 3, 3}, true, {{"pads", V{1, 1, 1, 1}}}, 81);
    conv_case(dt, {2, 8, 9, 9}, {8, 1, 3, 3}, true, {{"group", int64_t{8}}, {"pads", V{1, 1, 1, 1}}}, 82);
    conv_case(dt, {2, 4, 17}, {6, 4, 3}, true, {{"strides", V{2}}}, 83);
  }
}

// ---- ConvTranspose ----

void conv_t_case(DataType dt, Shape x, Shape w, int64_t group, bool bias, OpAttrs attrs, uint32_t seed) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " X " + dims_to_string(x) + " W " + dims_to_string(w));
  std::vector<Tensor> in = {random_tensor(dt, x, seed), random_tensor(dt, w, seed + 1, -1, 1)};
  std::vector<bool> cst = {false, true};
  if (bias) {
    in.push_back(random_tensor(dt, {w[1] * group}, seed + 2));
    cst.push_back(true);
  }
  attrs.push_back({"group", group});
  expect_backends_agree(make_case("ConvTranspose", std::move(attrs), in, cst));
}

TEST(GpuDense, ConvTranspose) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  conv_t_case(DataType::kFLOAT, {2, 4, 5, 6}, {4, 3, 3, 3}, 1, true, {}, 90);
  conv_t_case(DataType::kFLOAT, {2, 4, 5, 6}, {4, 3, 3, 3}, 1, true,
              {{"strides", V{2, 2}}, {"pads", V{1, 1, 1, 1}}, {"output_padding", V{1, 1}}}, 91);
  conv_t_case(DataType::kFLOAT, {1, 4, 5, 5}, {4, 2, 4, 4}, 2, true, {{"strides", V{2, 2}}, {"pads", V{1, 1, 1, 1}}}, 92);
  conv_t_case(DataType::kFLOAT, {1, 3, 5, 5}, {3, 2, 3, 3}, 1, false, {{"dilations", V{2, 2}}, {"pads", V{1, 1, 1, 1}}}, 93);
  // Asymmetric pads: computed uncropped in the workspace, then cropped.
  conv_t_case(DataType::kFLOAT, {2, 3, 4, 4}, {3, 2, 3, 3}, 1, true,
              {{"strides", V{2, 2}}, {"auto_pad", std::string("SAME_UPPER")}}, 94);
  conv_t_case(DataType::kFLOAT, {2, 3, 4, 4}, {3, 2, 3, 3}, 1, true,
              {{"strides", V{2, 2}}, {"auto_pad", std::string("SAME_LOWER")}}, 95);
  conv_t_case(DataType::kFLOAT, {1, 3, 4, 5}, {3, 2, 3, 3}, 1, true,
              {{"strides", V{2, 2}}, {"output_shape", V{9, 10}}}, 96);
  conv_t_case(DataType::kFLOAT, {1, 3, 4, 5}, {3, 2, 3, 3}, 1, true, {{"pads", V{0, 1, 2, 0}}}, 97);
  conv_t_case(DataType::kFLOAT, {1, 2, 3, 3}, {2, 2, 3, 3}, 1, true,
              {{"strides", V{2, 2}}, {"output_shape", V{9, 9}}}, 98);  // past the full extent: zeros + bias
}

TEST(GpuDense, ConvTranspose1D3DAndHalf) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  conv_t_case(DataType::kFLOAT, {2, 4, 7}, {4, 3, 3}, 1, true, {{"strides", V{2}}, {"output_padding", V{1}}}, 100);
  conv_t_case(DataType::kFLOAT, {1, 2, 3, 4, 3}, {2, 3, 2, 2, 2}, 1, true, {{"strides", V{2, 2, 2}}}, 101);
  for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
    conv_t_case(dt, {2, 8, 6, 6}, {8, 4, 4, 4}, 1, true, {{"strides", V{2, 2}}, {"pads", V{1, 1, 1, 1}}}, 102);
    conv_t_case(dt, {2, 8, 6, 6}, {8, 4, 3, 3}, 1, true, {{"strides", V{2, 2}}, {"auto_pad", std::string("SAME_UPPER")}}, 103);
  }
}

// ---- BatchNormalization ----

void bn_case(DataType dt, Shape x, uint32_t seed, float eps = 1e-5f, bool params_const = true) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " X " + dims_to_string(x));
  const Shape c = {x[1]};
  std::vector<Tensor> in = {random_tensor(dt, x, seed), random_tensor(dt, c, seed + 1),
                            random_tensor(dt, c, seed + 2), random_tensor(dt, c, seed + 3),
                            random_tensor(dt, c, seed + 4, 0.1, 2.0)};
  std::vector<bool> cst = {false, params_const, params_const, params_const, params_const};
  OpCase oc = make_case("BatchNormalization", {{"epsilon", eps}}, in, cst);
  if (dt == DataType::kFLOAT) {
    oc.atol = 1e-5;
    oc.rtol = 1e-5;
  }
  expect_backends_agree(oc);
}

TEST(GpuDense, BatchNormalization) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kFloatTypes) {
    bn_case(dt, {2, 5, 7, 9}, 110);
    bn_case(dt, {3, 6}, 111);
    bn_case(dt, {2, 4, 33}, 112, 1e-3f);
    bn_case(dt, {1, 3, 2, 3, 4}, 113);
  }
  bn_case(DataType::kFLOAT, {2, 5, 7, 9}, 114, 1e-5f, /*params_const=*/false);
}

TEST(GpuDense, BatchNormalizationPerPosition) {
  KILN_REQUIRE_GPU();
  // spatial=0 (opsets 7-8): statistics per channel and position.
  const Shape x = {2, 3, 4, 5}, pc = {3, 4, 5};
  OpCase c = make_case("BatchNormalization", {{"spatial", int64_t{0}}},
                       {random_tensor(DataType::kFLOAT, x, 115), random_tensor(DataType::kFLOAT, pc, 116),
                        random_tensor(DataType::kFLOAT, pc, 117), random_tensor(DataType::kFLOAT, pc, 118),
                        random_tensor(DataType::kFLOAT, pc, 119, 0.1, 2.0)},
                       {false, true, true, true, true});
  c.atol = c.rtol = 1e-5;
  expect_backends_agree(c);
}

// ---- Pooling ----

void pool_case(const std::string& op, DataType dt, Shape x, OpAttrs attrs, uint32_t seed) {
  SCOPED_TRACE(op + " " + std::string(dtype_name(dt)) + " X " + dims_to_string(x));
  OpCase c = make_case(op, std::move(attrs), {random_tensor(dt, x, seed)});
  if (dt == DataType::kFLOAT) {
    c.atol = 1e-6;
    c.rtol = 1e-6;
  }
  expect_backends_agree(c);
}

TEST(GpuDense, MaxPool) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  for (DataType dt : kFloatTypes) {
    pool_case("MaxPool", dt, {2, 3, 9, 11}, {{"kernel_shape", V{3, 3}}, {"strides", V{2, 2}}, {"pads", V{1, 1, 1, 1}}}, 120);
    pool_case("MaxPool", dt, {2, 3, 10, 10}, {{"kernel_shape", V{3, 3}}, {"strides", V{2, 2}}, {"ceil_mode", int64_t{1}}}, 121);
  }
  pool_case("MaxPool", DataType::kFLOAT, {1, 2, 9, 9}, {{"kernel_shape", V{2, 2}}, {"dilations", V{2, 2}}}, 122);
  pool_case("MaxPool", DataType::kFLOAT, {1, 2, 7, 8}, {{"kernel_shape", V{3, 2}}, {"auto_pad", std::string("SAME_UPPER")}, {"strides", V{2, 2}}}, 123);
  pool_case("MaxPool", DataType::kFLOAT, {1, 2, 7, 8}, {{"kernel_shape", V{3, 3}}, {"auto_pad", std::string("SAME_LOWER")}}, 124);
  pool_case("MaxPool", DataType::kFLOAT, {2, 3, 17}, {{"kernel_shape", V{4}}, {"strides", V{3}}, {"pads", V{2, 1}}}, 125);
  pool_case("MaxPool", DataType::kFLOAT, {1, 2, 5, 6, 7}, {{"kernel_shape", V{2, 3, 2}}, {"strides", V{2, 2, 2}}, {"ceil_mode", int64_t{1}}}, 126);
  // Windows that lie entirely in the padding give 0, as in the reference.
  pool_case("MaxPool", DataType::kFLOAT, {1, 1, 3, 3}, {{"kernel_shape", V{2, 2}}, {"pads", V{2, 2, 2, 2}}, {"strides", V{2, 2}}}, 127);
}

TEST(GpuDense, AveragePool) {
  KILN_REQUIRE_GPU();
  using V = std::vector<int64_t>;
  for (DataType dt : kFloatTypes) {
    for (int64_t cip : {0, 1}) {
      pool_case("AveragePool", dt, {2, 3, 9, 11},
                {{"kernel_shape", V{3, 3}}, {"strides", V{2, 2}}, {"pads", V{1, 1, 1, 1}}, {"count_include_pad", cip}}, 130);
      pool_case("AveragePool", dt, {2, 3, 10, 10},
                {{"kernel_shape", V{3, 3}}, {"strides", V{2, 2}}, {"pads", V{1, 0, 1, 0}}, {"ceil_mode", int64_t{1}},
                 {"count_include_pad", cip}}, 131);
    }
  }
  pool_case("AveragePool", DataType::kFLOAT, {2, 3, 17}, {{"kernel_shape", V{5}}, {"strides", V{2}}, {"pads", V{2, 2}}}, 132);
  pool_case("AveragePool", DataType::kFLOAT, {1, 2, 5, 6, 7},
            {{"kernel_shape", V{2, 2, 3}}, {"pads", V{1, 0, 1, 0, 1, 1}}, {"count_include_pad", int64_t{1}}}, 133);
  pool_case("AveragePool", DataType::kFLOAT, {1, 2, 8, 8}, {{"kernel_shape", V{3, 3}}, {"auto_pad", std::string("SAME_UPPER")}}, 134);
  pool_case("AveragePool", DataType::kFLOAT, {1, 2, 9, 9}, {{"kernel_shape", V{2, 2}}, {"dilations", V{2, 2}}, {"ceil_mode", int64_t{1}}, {"strides", V{2, 2}}}, 135);
}

TEST(GpuDense, GlobalPool) {
  KILN_REQUIRE_GPU();
  for (DataType dt : kFloatTypes)
    for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
      OpCase c = make_case(op, {}, {random_tensor(dt, {2, 3, 7, 7}, 140)});
      c.atol = dt == DataType::kFLOAT ? 1e-5 : c.atol;
      c.rtol = dt == DataType::kFLOAT ? 1e-5 : c.rtol;
      expect_backends_agree(c);
      c.inputs = {random_tensor(dt, {2, 5, 64, 70}, 141)};
      expect_backends_agree(c);
      c.inputs = {random_tensor(dt, {3, 4, 13}, 142)};
      expect_backends_agree(c);
      c.inputs = {random_tensor(dt, {1, 2, 3, 4, 5}, 143)};
      expect_backends_agree(c);
    }
}

TEST(GpuDense, MaxPoolIndicesRunOnTheHost) {
  KILN_REQUIRE_GPU();
  OpCase c = make_case("MaxPool", {{"kernel_shape", std::vector<int64_t>{2, 2}}},
                       {random_tensor(DataType::kFLOAT, {1, 2, 6, 6}, 150)});
  c.num_outputs = 2;
  c.allow_host_layers = true;
  expect_backends_agree(c);
}

}  // namespace
}  // namespace kiln::gpu_testing
