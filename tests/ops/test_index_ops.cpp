// Tests for TopK, NonZero, Unique, DepthToSpace, quantization and NonMaxSuppression against hand-computed values.
#include <gtest/gtest.h>

#include "ops/op_util.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

int g_fresh = 0;

Result<std::vector<TensorInfo>> run_infer(const std::string& op, const Attributes& attrs,
                                          std::vector<const TensorInfo*> ins, int opset, int num_outputs) {
  const OpSchema* s = OpRegistry::instance().find(op);
  if (!s) return internal_error("op not registered: " + op);
  KILN_RETURN_IF_ERROR(validate_attributes(*s, attrs));
  InferContext ctx(attrs, opset, std::move(ins), num_outputs, [] { return "u" + std::to_string(g_fresh++); });
  KILN_RETURN_IF_ERROR(s->infer(ctx));
  return ctx.outputs();
}

Result<std::vector<Tensor>> run_compute(const std::string& op, const Attributes& attrs, std::vector<const Tensor*> ins,
                                        int opset, int num_outputs) {
  const OpSchema* s = OpRegistry::instance().find(op);
  if (!s) return internal_error("op not registered: " + op);
  std::vector<Tensor> outs(num_outputs);
  ComputeContext ctx(attrs, opset, std::move(ins), &outs);
  KILN_RETURN_IF_ERROR(s->compute(ctx));
  return outs;
}

TensorInfo const_info(const Tensor& t) {
  TensorInfo i = make_info(t.dtype(), shape_from_dims(t.shape()));
  i.constant = &t;
  return i;
}

}  // namespace

TEST(TopK, TiesPreferLowerIndex) {
  Tensor x = Tensor::from_vector<float>({1, 6}, {3, 7, 7, 1, 7, 3});
  Tensor k = Tensor::from_vector<int64_t>({1}, {4});
  auto r = run_compute("TopK", {}, {&x, &k}, 17, 2);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].to_f64_vector(), (std::vector<double>{7, 7, 7, 3}));
  EXPECT_EQ(r.value()[1].to_i64_vector(), (std::vector<int64_t>{1, 2, 4, 0}));

  Attributes smallest;
  smallest.set("largest", int64_t{0});
  auto s = run_compute("TopK", smallest, {&x, &k}, 17, 2);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.value()[1].to_i64_vector(), (std::vector<int64_t>{3, 0, 5, 1}));
}

TEST(TopK, InferUsesKnownKOrFreshDim) {
  TensorInfo x = make_info(DataType::kFLOAT, {Dim::symbol("N"), Dim(10)});
  Tensor k = Tensor::from_vector<int64_t>({1}, {3});
  TensorInfo kinfo = const_info(k);
  auto r = run_infer("TopK", {}, {&x, &kinfo}, 17, 2);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(shape_to_string(r.value()[0].shape), "[N,3]");
  EXPECT_EQ(r.value()[1].dtype, DataType::kINT64);

  TensorInfo unknown_k = make_info(DataType::kINT64, {Dim(1)});
  auto u = run_infer("TopK", {}, {&x, &unknown_k}, 17, 2);
  ASSERT_TRUE(u.ok());
  EXPECT_FALSE(u.value()[0].shape[1].is_static());
  EXPECT_FALSE(u.value()[0].shape[1].sym.empty());

  // Opset 1..9 carries k as an attribute.
  Attributes a;
  a.set("k", int64_t{11});
  auto bad = run_infer("TopK", a, {&x}, 9, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("exceeds"), std::string::npos) << bad.status().message();
}

TEST(NonZero, SmallMatrix) {
  Tensor x = Tensor::from_vector<int32_t>({2, 3}, {0, 5, 0, -1, 0, 2});
  auto r = run_compute("NonZero", {}, {&x}, 13, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 1, 1, 1, 0, 2}));

  TensorInfo xi = make_info(DataType::kINT32, {Dim(2), Dim(3)});
  auto inf = run_infer("NonZero", {}, {&xi}, 13, 1);
  ASSERT_TRUE(inf.ok());
  EXPECT_EQ(inf.value()[0].shape[0], Dim(2));
  EXPECT_FALSE(inf.value()[0].shape[1].sym.empty());
}

TEST(Unique, UnsortedKeepsFirstOccurrenceOrder) {
  Tensor x = Tensor::from_vector<int64_t>({6}, {4, 1, 4, 3, 1, 1});
  Attributes a;
  a.set("sorted", int64_t{0});
  auto r = run_compute("Unique", a, {&x}, 11, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{4, 1, 3}));
  EXPECT_EQ(r.value()[1].to_i64_vector(), (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(r.value()[2].to_i64_vector(), (std::vector<int64_t>{0, 1, 0, 2, 1, 1}));
  EXPECT_EQ(r.value()[3].to_i64_vector(), (std::vector<int64_t>{2, 3, 1}));
}

TEST(DepthToSpace, DcrAndCrdDiffer) {
  // 4 channels of 1x1, blocksize 2: DCR reads channels in order, CRD too for a single output channel; with
  // 8 channels the two orderings interleave differently.
  std::vector<float> v(8);
  for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(i);
  Tensor x = Tensor::from_vector<float>({1, 8, 1, 1}, v);
  Attributes dcr, crd;
  dcr.set("blocksize", int64_t{2});
  crd.set("blocksize", int64_t{2});
  crd.set("mode", "CRD");
  auto a = run_compute("DepthToSpace", dcr, {&x}, 13, 1);
  auto b = run_compute("DepthToSpace", crd, {&x}, 13, 1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a.value()[0].to_f64_vector(), (std::vector<double>{0, 2, 4, 6, 1, 3, 5, 7}));
  EXPECT_EQ(b.value()[0].to_f64_vector(), (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7}));

  Attributes bad;
  bad.set("blocksize", int64_t{2});
  bad.set("mode", "RCD");
  TensorInfo xi = const_info(x);
  auto e = run_infer("DepthToSpace", bad, {&xi}, 13, 1);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("allowed values are DCR, CRD"), std::string::npos) << e.status().message();
}

TEST(DequantizeLinear, PerAxis) {
  Tensor x = Tensor::from_vector<uint8_t>({2, 2}, {10, 20, 30, 40});
  Tensor scale = Tensor::from_vector<float>({2}, {0.5f, 2.0f});
  Tensor zp = Tensor::from_vector<uint8_t>({2}, {10, 0});
  Attributes a;
  a.set("axis", int64_t{0});
  auto r = run_compute("DequantizeLinear", a, {&x, &scale, &zp}, 13, 1);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].to_f64_vector(), (std::vector<double>{0, 5, 60, 80}));
}

TEST(QuantizeLinear, RoundsHalfToEvenAndSaturates) {
  Tensor x = Tensor::from_vector<float>({4}, {2.5f, 3.5f, -300.f, 300.f});
  Tensor scale = Tensor::from_vector<float>({}, {1.f});
  Tensor zp = Tensor::from_vector<int8_t>({}, {0});
  auto r = run_compute("QuantizeLinear", {}, {&x, &scale, &zp}, 13, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].dtype(), DataType::kINT8);
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{2, 4, -128, 127}));
}

TEST(NonMaxSuppression, SuppressesOverlap) {
  // Boxes 0 and 1 overlap with IoU 0.81; box 2 is disjoint.
  Tensor boxes = Tensor::from_vector<float>({1, 3, 4}, {0, 0, 1, 1, 0, 0, 0.9f, 0.9f, 5, 5, 6, 6});
  Tensor scores = Tensor::from_vector<float>({1, 1, 3}, {0.8f, 0.9f, 0.1f});
  Tensor max_out = Tensor::from_vector<int64_t>({1}, {10});
  Tensor iou = Tensor::from_vector<float>({1}, {0.5f});
  auto r = run_compute("NonMaxSuppression", {}, {&boxes, &scores, &max_out, &iou}, 11, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 0, 1, 0, 0, 2}));
}

TEST(ReverseSequence, ReversesEachBatchPrefix) {
  // [time=4, batch=2]; batch 0 reverses all 4 steps, batch 1 only its first 2.
  Tensor x = Tensor::from_vector<float>({4, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  Tensor lens = Tensor::from_vector<int64_t>({2}, {4, 2});
  auto r = run_compute("ReverseSequence", {}, {&x, &lens}, 10, 1);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].to_f64_vector(), (std::vector<double>{6, 3, 4, 1, 2, 5, 0, 7}));

  Attributes bad;
  bad.set("batch_axis", int64_t{0});
  TensorInfo xi = const_info(x), li = const_info(lens);
  auto e = run_infer("ReverseSequence", bad, {&xi, &li}, 10, 1);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("allowed values are 0, 1"), std::string::npos);
}
