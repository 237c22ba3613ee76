// Tests for shape, data-movement and generator operators: symbolic inference, value propagation, compute, errors.
#include <gtest/gtest.h>

#include <climits>
#include <numeric>

#include "ops/op_util.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

struct Ran {
  Status status;
  std::vector<TensorInfo> outs;
};

int g_sym_counter = 0;

// Runs one op's inference the way the importer does: attributes validated, then InferFn.
Ran infer(const std::string& op, const Attributes& attrs, std::vector<const TensorInfo*> ins, int opset = 17,
          int num_outputs = 1) {
  const OpSchema* s = OpRegistry::instance().find(op);
  EXPECT_NE(s, nullptr) << op;
  if (!s) return {internal_error("no op"), {}};
  Status st = validate_attributes(*s, attrs);
  if (!st.ok()) return {st, {}};
  InferContext ctx(attrs, opset, std::move(ins), num_outputs, [] { return "s" + std::to_string(g_sym_counter++); });
  st = s->infer(ctx);
  return {st, ctx.outputs()};
}

struct Computed {
  Status status;
  std::vector<Tensor> outs;
};

Computed compute(const std::string& op, const Attributes& attrs, std::vector<const Tensor*> ins, int opset = 17,
                 int num_outputs = 1) {
  const OpSchema* s = OpRegistry::instance().find(op);
  EXPECT_NE(s, nullptr) << op;
  Computed c;
  c.outs.resize(num_outputs);
  ComputeContext ctx(attrs, opset, std::move(ins), &c.outs);
  c.status = s->compute(ctx);
  return c;
}

TensorInfo info(DataType dt, Shape s) { return make_info(dt, std::move(s)); }

TensorInfo const_info(const Tensor& t) {
  TensorInfo i = make_info(t.dtype(), shape_from_dims(t.shape()));
  i.constant = &t;
  return i;
}

Tensor i64s(std::vector<int64_t> v) { return Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v); }

const Dim kN = Dim::symbol("N");

}  // namespace

TEST(ShapeOps, DynamicBatchFlattenChainGivesSymbolicBatch) {
  // torch.flatten(x, 1) exported with a dynamic batch: Shape -> Gather(0) -> Unsqueeze -> Concat([.., -1]) -> Reshape.
  TensorInfo x = info(DataType::kFLOAT, {kN, 3, 224, 224});
  auto shape = infer("Shape", {}, {&x});
  ASSERT_TRUE(shape.status.ok()) << shape.status.to_string();
  ASSERT_TRUE(shape.outs[0].value.has_value());
  EXPECT_EQ(shape.outs[0].shape, (Shape{4}));

  Tensor zero = Tensor::scalar_i64(0);
  TensorInfo zi = const_info(zero);
  auto gather = infer("Gather", {}, {&shape.outs[0], &zi});
  ASSERT_TRUE(gather.status.ok()) << gather.status.to_string();
  EXPECT_EQ(gather.outs[0].shape, Shape{});
  ASSERT_TRUE(gather.outs[0].value.has_value());
  EXPECT_EQ(*gather.outs[0].value, (std::vector<Dim>{kN}));

  Tensor axes0 = i64s({0});
  TensorInfo ai = const_info(axes0);
  auto unsq = infer("Unsqueeze", {}, {&gather.outs[0], &ai}, 13);
  ASSERT_TRUE(unsq.status.ok()) << unsq.status.to_string();
  EXPECT_EQ(unsq.outs[0].shape, (Shape{1}));

  Tensor minus1 = i64s({-1});
  TensorInfo mi = const_info(minus1);
  Attributes cat;
  cat.set("axis", int64_t{0});
  auto concat = infer("Concat", cat, {&unsq.outs[0], &mi});
  ASSERT_TRUE(concat.status.ok()) << concat.status.to_string();
  EXPECT_EQ(concat.outs[0].shape, (Shape{2}));

  auto reshape = infer("Reshape", {}, {&x, &concat.outs[0]});
  ASSERT_TRUE(reshape.status.ok()) << reshape.status.to_string();
  EXPECT_EQ(shape_to_string(reshape.outs[0].shape), "[N,150528]");  // 3*224*224
}

TEST(ShapeOps, GatherWithVectorIndexAndSliceOfShape) {
  TensorInfo x = info(DataType::kFLOAT, {kN, Dim::symbol("S"), 12, 64});
  auto shape = infer("Shape", {}, {&x});
  Tensor idx = i64s({-1, 0});
  TensorInfo ii = const_info(idx);
  auto g = infer("Gather", {}, {&shape.outs[0], &ii});
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  EXPECT_EQ(*g.outs[0].value, (std::vector<Dim>{Dim(64), kN}));

  // Slice [:2] of the shape keeps the symbols: [N, S].
  Tensor st = i64s({0}), en = i64s({2});
  TensorInfo si = const_info(st), ei = const_info(en);
  auto sl = infer("Slice", {}, {&shape.outs[0], &si, &ei});
  ASSERT_TRUE(sl.status.ok()) << sl.status.to_string();
  EXPECT_EQ(sl.outs[0].shape, (Shape{2}));
  EXPECT_EQ(*sl.outs[0].value, (std::vector<Dim>{kN, Dim::symbol("S")}));

  // Reshape x to [N, S, 768] via Concat(slice, [768]).
  Tensor c768 = i64s({768});
  TensorInfo ci = const_info(c768);
  Attributes cat;
  cat.set("axis", int64_t{0});
  auto concat = infer("Concat", cat, {&sl.outs[0], &ci});
  auto r = infer("Reshape", {}, {&x, &concat.outs[0]});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(shape_to_string(r.outs[0].shape), "[N,S,768]");
}

TEST(ShapeOps, ReshapeZeroAndMinusOne) {
  Tensor target = i64s({0, -1});
  TensorInfo ti = const_info(target);
  TensorInfo x = info(DataType::kFLOAT, {2, 3, 4});
  auto r = infer("Reshape", {}, {&x, &ti});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.outs[0].shape, (Shape{2, 12}));

  // Symbolic input: 0 copies N, -1 solves to 12*64 = 768 after cancelling nothing else.
  TensorInfo xs = info(DataType::kFLOAT, {kN, 12, 64});
  auto rs = infer("Reshape", {}, {&xs, &ti});
  ASSERT_TRUE(rs.status.ok()) << rs.status.to_string();
  EXPECT_EQ(shape_to_string(rs.outs[0].shape), "[N,768]");

  // allowzero=1 keeps a literal 0.
  Tensor t0 = i64s({0, 5});
  TensorInfo t0i = const_info(t0);
  TensorInfo empty = info(DataType::kFLOAT, {0, 5});
  Attributes az;
  az.set("allowzero", int64_t{1});
  auto r0 = infer("Reshape", az, {&empty, &t0i}, 14);
  ASSERT_TRUE(r0.status.ok()) << r0.status.to_string();
  EXPECT_EQ(r0.outs[0].shape, (Shape{0, 5}));

  // Compute returns a view of the input's storage.
  std::vector<float> data(24);
  std::iota(data.begin(), data.end(), 0.0f);
  Tensor xt = Tensor::from_vector<float>({2, 3, 4}, data);
  auto c = compute("Reshape", {}, {&xt, &target});
  ASSERT_TRUE(c.status.ok()) << c.status.to_string();
  EXPECT_EQ(c.outs[0].shape(), (std::vector<int64_t>{2, 12}));
  EXPECT_EQ(c.outs[0].raw(), xt.raw());
}

TEST(ShapeOps, ReshapeSymbolicTargetWithMinusOne) {
  // Target [batch, -1, 768] as produced by Concat(Gather(Shape), [-1, 768]).
  TensorInfo x = info(DataType::kFLOAT, {Dim::symbol("batch"), 14, 14, 768});
  TensorInfo t = info(DataType::kINT64, {3});
  t.value = std::vector<Dim>{Dim::symbol("batch"), Dim(-1), Dim(768)};
  auto r = infer("Reshape", {}, {&x, &t});
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(shape_to_string(r.outs[0].shape), "[batch,196,768]");

  // Unknown target values but known length: right rank, fresh dims.
  TensorInfo u = info(DataType::kINT64, {3});
  auto ru = infer("Reshape", {}, {&x, &u});
  ASSERT_TRUE(ru.status.ok());
  ASSERT_EQ(ru.outs[0].shape.size(), 3u);
  EXPECT_FALSE(ru.outs[0].shape[0].is_static());
  EXPECT_FALSE(ru.outs[0].shape[0].sym.empty());
}

TEST(ShapeOps, ReshapeSizeMismatchNamesBothShapes) {
  Tensor target = i64s({5, 5});
  TensorInfo ti = const_info(target);
  TensorInfo x = info(DataType::kFLOAT, {2, 3, 4});
  auto r = infer("Reshape", {}, {&x, &ti});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("[2,3,4]"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("[5,5]"), std::string::npos) << r.status.message();

  Tensor xt(DataType::kFLOAT, {2, 3, 4});
  auto c = compute("Reshape", {}, {&xt, &target});
  ASSERT_FALSE(c.status.ok());
  EXPECT_NE(c.status.message().find("24 elements"), std::string::npos) << c.status.message();
  EXPECT_NE(c.status.message().find("25 elements"), std::string::npos) << c.status.message();
}

TEST(ShapeOps, SliceNegativeStep) {
  // numpy: np.arange(10)[::-3] == [9, 6, 3, 0]; np.arange(10)[7:2:-2] == [7, 5, 3].
  std::vector<int64_t> v(10);
  std::iota(v.begin(), v.end(), 0);
  Tensor x = Tensor::from_vector<int64_t>({10}, v);
  Tensor st = i64s({-1}), en = i64s({INT64_MIN}), ax = i64s({0}), sp = i64s({-3});
  auto c = compute("Slice", {}, {&x, &st, &en, &ax, &sp});
  ASSERT_TRUE(c.status.ok()) << c.status.to_string();
  EXPECT_EQ(c.outs[0].to_i64_vector(), (std::vector<int64_t>{9, 6, 3, 0}));

  Tensor st2 = i64s({7}), en2 = i64s({2}), sp2 = i64s({-2});
  auto c2 = compute("Slice", {}, {&x, &st2, &en2, &ax, &sp2});
  ASSERT_TRUE(c2.status.ok());
  EXPECT_EQ(c2.outs[0].to_i64_vector(), (std::vector<int64_t>{7, 5, 3}));

  TensorInfo xi = info(DataType::kINT64, {10});
  TensorInfo sti = const_info(st), eni = const_info(en), axi = const_info(ax), spi = const_info(sp);
  auto r = infer("Slice", {}, {&xi, &sti, &eni, &axi, &spi});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.outs[0].shape, (Shape{4}));

  // On a 2-D tensor along axis 1, reversing [[0,1,2],[3,4,5]] gives [[2,1,0],[5,4,3]].
  Tensor m = Tensor::from_vector<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  Tensor s3 = i64s({-1}), e3 = i64s({-4}), a3 = i64s({1}), p3 = i64s({-1});
  auto c3 = compute("Slice", {}, {&m, &s3, &e3, &a3, &p3});
  ASSERT_TRUE(c3.status.ok());
  EXPECT_EQ(c3.outs[0].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c3.outs[0].to_f64_vector(), (std::vector<double>{2, 1, 0, 5, 4, 3}));
}

TEST(ShapeOps, TransposeBadPermIsReported) {
  TensorInfo x = info(DataType::kFLOAT, {2, 3, 4});
  Attributes a;
  a.set("perm", std::vector<int64_t>{0, 0, 1});
  auto r = infer("Transpose", a, {&x});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("not a permutation"), std::string::npos) << r.status.message();
  EXPECT_NE(r.status.message().find("[0,0,1]"), std::string::npos) << r.status.message();

  Attributes shortp;
  shortp.set("perm", std::vector<int64_t>{1, 0});
  auto r2 = infer("Transpose", shortp, {&x});
  ASSERT_FALSE(r2.status.ok());
  EXPECT_NE(r2.status.message().find("expected 3"), std::string::npos) << r2.status.message();
}

TEST(ShapeOps, TransposeComputesPermutation) {
  // x[i][j][k] = 100i + 10j + k, shape [2,3,4]; perm [2,0,1] gives y[k][i][j] = x[i][j][k].
  std::vector<int32_t> v;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) v.push_back(100 * i + 10 * j + k);
  Tensor x = Tensor::from_vector<int32_t>({2, 3, 4}, v);
  Attributes a;
  a.set("perm", std::vector<int64_t>{2, 0, 1});
  auto c = compute("Transpose", a, {&x});
  ASSERT_TRUE(c.status.ok());
  ASSERT_EQ(c.outs[0].shape(), (std::vector<int64_t>{4, 2, 3}));
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) EXPECT_EQ(c.outs[0].get_i64((k * 2 + i) * 3 + j), 100 * i + 10 * j + k);

  TensorInfo xi = info(DataType::kFLOAT, {kN, 3, 4});
  auto r = infer("Transpose", {}, {&xi});
  EXPECT_EQ(shape_to_string(r.outs[0].shape), "[4,3,N]");
}

TEST(ShapeOps, ExpandAndConstantOfShapeFromShapeValue) {
  TensorInfo x = info(DataType::kFLOAT, {kN, 1, 8});
  auto shape = infer("Shape", {}, {&x});
  auto cos = infer("ConstantOfShape", {}, {&shape.outs[0]});
  ASSERT_TRUE(cos.status.ok());
  EXPECT_EQ(shape_to_string(cos.outs[0].shape), "[N,1,8]");
  EXPECT_EQ(cos.outs[0].dtype, DataType::kFLOAT);

  TensorInfo y = info(DataType::kFLOAT, {4, 1});
  auto ex = infer("Expand", {}, {&y, &shape.outs[0]});
  ASSERT_TRUE(ex.status.ok()) << ex.status.to_string();
  EXPECT_EQ(shape_to_string(ex.outs[0].shape), "[N,4,8]");

  Tensor yt = Tensor::from_vector<float>({3, 1}, {1, 2, 3});
  Tensor tgt = i64s({2, 1, 2});
  auto c = compute("Expand", {}, {&yt, &tgt});
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.outs[0].shape(), (std::vector<int64_t>{2, 3, 2}));
  EXPECT_EQ(c.outs[0].to_f64_vector(), (std::vector<double>{1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3}));
}

TEST(ShapeOps, SplitUnevenLastChunk) {
  Tensor x = Tensor::from_vector<int64_t>({7}, {0, 1, 2, 3, 4, 5, 6});
  Attributes a;
  a.set("num_outputs", int64_t{3});
  auto c = compute("Split", a, {&x}, 18, 3);
  ASSERT_TRUE(c.status.ok()) << c.status.to_string();
  EXPECT_EQ(c.outs[0].to_i64_vector(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(c.outs[1].to_i64_vector(), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(c.outs[2].to_i64_vector(), (std::vector<int64_t>{6}));
  TensorInfo xi = info(DataType::kINT64, {7});
  auto r = infer("Split", a, {&xi}, 18, 3);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.outs[2].shape, (Shape{1}));
}

TEST(ShapeOps, GatherNegativeIndicesAndOutOfRange) {
  Tensor d = Tensor::from_vector<float>({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor idx = i64s({-1, 0});
  auto c = compute("Gather", {}, {&d, &idx});
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.outs[0].to_f64_vector(), (std::vector<double>{5, 6, 1, 2}));
  Tensor bad = i64s({3});
  auto b = compute("Gather", {}, {&d, &bad});
  ASSERT_FALSE(b.status.ok());
  EXPECT_NE(b.status.message().find("out of range [-3, 2]"), std::string::npos) << b.status.message();
}

TEST(ShapeOps, SqueezeUnsqueezeFlattenAreViews) {
  Tensor x(DataType::kBOOL, {1, 3, 1, 2});
  auto s = compute("Squeeze", {}, {&x});
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.outs[0].shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(s.outs[0].raw(), x.raw());
  Tensor ax = i64s({0, -1});
  auto u = compute("Unsqueeze", {}, {&x, &ax});
  ASSERT_TRUE(u.status.ok());
  EXPECT_EQ(u.outs[0].shape(), (std::vector<int64_t>{1, 1, 3, 1, 2, 1}));
  EXPECT_EQ(u.outs[0].raw(), x.raw());
  Attributes fa;
  fa.set("axis", int64_t{2});
  auto f = compute("Flatten", fa, {&x});
  ASSERT_TRUE(f.status.ok());
  EXPECT_EQ(f.outs[0].shape(), (std::vector<int64_t>{3, 2}));

  TensorInfo xi = info(DataType::kFLOAT, {kN, 3, 4});
  auto fi = infer("Flatten", {}, {&xi});
  EXPECT_EQ(shape_to_string(fi.outs[0].shape), "[N,12]");
  Attributes old;
  old.set("axes", std::vector<int64_t>{1});
  auto ui = infer("Unsqueeze", old, {&xi}, 11);
  ASSERT_TRUE(ui.status.ok());
  EXPECT_EQ(shape_to_string(ui.outs[0].shape), "[N,1,3,4]");
}

TEST(ShapeOps, RangeAndConstantSetValues) {
  Tensor s0 = Tensor::scalar_i64(0), l = Tensor::scalar_i64(5), d = Tensor::scalar_i64(2);
  TensorInfo si = const_info(s0), li = const_info(l), di = const_info(d);
  auto r = infer("Range", {}, {&si, &li, &di});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.outs[0].shape, (Shape{3}));
  EXPECT_EQ(*r.outs[0].value, (std::vector<Dim>{0, 2, 4}));

  Attributes ca;
  ca.set("value_ints", std::vector<int64_t>{1, -1});
  auto c = infer("Constant", ca, {});
  ASSERT_TRUE(c.status.ok());
  EXPECT_EQ(c.outs[0].shape, (Shape{2}));
  ASSERT_TRUE(c.outs[0].value.has_value());
  EXPECT_EQ((*c.outs[0].value)[0], Dim(1));

  Attributes sa;
  sa.set("value_string", std::string("hi"));
  auto cs = infer("Constant", sa, {});
  ASSERT_FALSE(cs.status.ok());
  EXPECT_NE(cs.status.message().find("string"), std::string::npos);
}
