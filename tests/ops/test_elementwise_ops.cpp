// Focused tests for the elementwise, unary, cast and softmax operators, run straight through the registry.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "ops/op.h"
#include "ops/op_util.h"

using namespace kiln;
using kiln::ops::Dim;
using kiln::ops::TensorInfo;

namespace {

const ops::OpSchema& schema_of(const std::string& name) {
  const ops::OpSchema* s = ops::OpRegistry::instance().find(name);
  EXPECT_NE(s, nullptr) << name << " is not registered";
  return *s;
}

// Infers and computes one node on concrete inputs; the inputs double as constants for inference.
Result<std::vector<Tensor>> run_op(const std::string& name, const std::vector<Tensor>& inputs,
                                   const Attributes& attrs = {}, int opset = 17) {
  const ops::OpSchema& s = schema_of(name);
  KILN_RETURN_IF_ERROR(ops::validate_attributes(s, attrs));
  std::vector<TensorInfo> infos(inputs.size());
  std::vector<const TensorInfo*> info_ptrs;
  std::vector<const Tensor*> ins;
  for (size_t i = 0; i < inputs.size(); ++i) {
    infos[i].dtype = inputs[i].dtype();
    infos[i].shape = ops::shape_from_dims(inputs[i].shape());
    infos[i].constant = &inputs[i];
    info_ptrs.push_back(&infos[i]);
    ins.push_back(&inputs[i]);
  }
  ops::InferContext ictx(attrs, opset, info_ptrs, 1);
  KILN_RETURN_IF_ERROR(s.infer(ictx));
  std::vector<Tensor> outs(1);
  ops::ComputeContext cctx(attrs, opset, ins, &outs);
  KILN_RETURN_IF_ERROR(s.compute(cctx));
  if (outs[0].dtype() != ictx.output(0).dtype) return internal_error("inferred dtype differs from computed");
  return outs;
}

// Inference only, on symbolic inputs.
Result<TensorInfo> infer_op(const std::string& name, const std::vector<TensorInfo>& inputs, int opset = 17) {
  Attributes attrs;
  std::vector<const TensorInfo*> ptrs;
  for (auto& t : inputs) ptrs.push_back(&t);
  ops::InferContext ctx(attrs, opset, ptrs, 1);
  KILN_RETURN_IF_ERROR(schema_of(name).infer(ctx));
  return ctx.output(0);
}

TensorInfo shape_value(std::vector<Dim> v) {
  TensorInfo t;
  t.dtype = DataType::kINT64;
  t.shape = {Dim(static_cast<int64_t>(v.size()))};
  t.value = std::move(v);
  return t;
}

}  // namespace

TEST(ElementwiseOps, AddBroadcastsRowAgainstMatrix) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {10, 20, 30};
  auto r = run_op("Add", {Tensor::from_vector<float>({2, 3}, a), Tensor::from_vector<float>({3}, b)});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Tensor& out = r.value()[0];
  ASSERT_EQ(out.shape(), (std::vector<int64_t>{2, 3}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_FLOAT_EQ(out.data<float>()[i * 3 + j], a[i * 3 + j] + b[j]);
}

TEST(ElementwiseOps, MulBroadcastsColumnAgainstRow) {
  std::vector<double> col = {1.5, -2}, row = {3, 0.25, -4};
  auto r = run_op("Mul", {Tensor::from_vector<double>({2, 1}, col), Tensor::from_vector<double>({1, 3}, row)});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Tensor& out = r.value()[0];
  ASSERT_EQ(out.shape(), (std::vector<int64_t>{2, 3}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_DOUBLE_EQ(out.data<double>()[i * 3 + j], col[i] * row[j]);
}

TEST(ElementwiseOps, HalfAddMatchesFloatRounded) {
  std::vector<Half> a = {Half(1.5f), Half(-0.125f), Half(1000.f)};
  std::vector<Half> b = {Half(0.25f), Half(0.125f), Half(0.5f)};
  auto r = run_op("Add", {Tensor::from_vector<Half>({3}, a), Tensor::from_vector<Half>({3}, b)});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(r.value()[0].data<Half>()[i].bits, Half(static_cast<float>(a[i]) + static_cast<float>(b[i])).bits);
}

TEST(ElementwiseOps, IntegerDivisionTruncatesTowardZero) {
  auto r = run_op("Div", {Tensor::from_vector<int32_t>({4}, {7, -7, 7, -7}), Tensor::from_vector<int32_t>({4}, {2, 2, -2, -2})});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{3, -3, -3, 3}));
}

TEST(ElementwiseOps, ModSignFollowsDivisorUnlessFmod) {
  Tensor a = Tensor::from_vector<int64_t>({4}, {7, -7, 7, -7});
  Tensor b = Tensor::from_vector<int64_t>({4}, {3, 3, -3, -3});
  auto r = run_op("Mod", {a, b});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{1, 2, -2, -1}));  // Python's %
  Attributes fmod;
  fmod.set("fmod", int64_t{1});
  auto f = run_op("Mod", {a, b}, fmod);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f.value()[0].to_i64_vector(), (std::vector<int64_t>{1, -1, 1, -1}));  // C's %
}

TEST(ElementwiseOps, PowKeepsBaseTypeWithFloatExponent) {
  auto r = run_op("Pow", {Tensor::from_vector<int32_t>({3}, {2, 3, 4}), Tensor::from_vector<float>({3}, {3.f, 0.5f, -1.f})});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r.value()[0].dtype(), DataType::kINT32);
  EXPECT_EQ(r.value()[0].to_i64_vector(),
            (std::vector<int64_t>{8, static_cast<int64_t>(std::sqrt(3.0)), static_cast<int64_t>(1.0 / 4)}));
}

TEST(ElementwiseOps, MulPropagatesShapeValues) {
  // Shape(x) = [N, 3, 4] times [1, 1, 2] is a Reshape target [N, 3, 8].
  auto r = infer_op("Mul", {shape_value({Dim::symbol("N"), Dim(3), Dim(4)}), shape_value({Dim(1), Dim(1), Dim(2)})});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_TRUE(r->value.has_value());
  ASSERT_EQ(r->value->size(), 3u);
  EXPECT_EQ((*r->value)[0], Dim::symbol("N"));
  EXPECT_EQ((*r->value)[1].value, 3);
  EXPECT_EQ((*r->value)[2].value, 8);
}

TEST(ElementwiseOps, ScalarShapeArithmeticPropagates) {
  // Gather(Shape, 1) * Gather(Shape, 2) on static dims: a flattened size of 3 * 4.
  TensorInfo h, w;
  h.dtype = w.dtype = DataType::kINT64;
  h.value = std::vector<Dim>{Dim(3)};
  w.value = std::vector<Dim>{Dim(4)};
  auto r = infer_op("Mul", {h, w});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_TRUE(r->value.has_value());
  EXPECT_TRUE(r->shape.empty());
  EXPECT_EQ((*r->value)[0].value, 12);
  auto d = infer_op("Div", {h, w});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d->value)[0].value, 0);
}

TEST(ElementwiseOps, FloatInputsDoNotPropagateValues) {
  TensorInfo a = shape_value({Dim(2)});
  a.dtype = DataType::kFLOAT;
  a.value.reset();
  auto r = infer_op("Add", {a, a});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->value.has_value());
}

TEST(ElementwiseOps, MismatchedTypesAreRejected) {
  TensorInfo a, b;
  a.dtype = DataType::kFLOAT;
  b.dtype = DataType::kINT64;
  auto r = infer_op("Add", {a, b});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("int64"), std::string::npos) << r.status().message();
}

TEST(ElementwiseOps, IncompatibleBroadcastIsRejected) {
  auto r = run_op("Sub", {Tensor::from_vector<float>({2}, {1, 2}), Tensor::from_vector<float>({3}, {1, 2, 3})});
  EXPECT_FALSE(r.ok());
}

TEST(UnaryOps, GeluRejectsUnknownApproximation) {
  Attributes attrs;
  attrs.set("approximate", std::string("fast"));
  auto r = run_op("Gelu", {Tensor::from_vector<float>({1}, {1.f})}, attrs, 20);
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("none"), std::string::npos) << m;
  EXPECT_NE(m.find("tanh"), std::string::npos) << m;
  EXPECT_NE(m.find("fast"), std::string::npos) << m;
}

TEST(UnaryOps, GeluMatchesErfAndTanhForms) {
  std::vector<float> x = {-2.f, -0.5f, 0.f, 0.7f, 3.f};
  auto exact = run_op("Gelu", {Tensor::from_vector<float>({5}, x)}, {}, 20);
  Attributes tanh_attr;
  tanh_attr.set("approximate", std::string("tanh"));
  auto approx = run_op("Gelu", {Tensor::from_vector<float>({5}, x)}, tanh_attr, 20);
  ASSERT_TRUE(exact.ok() && approx.ok());
  for (int i = 0; i < 5; ++i) {
    double v = x[i];
    EXPECT_NEAR(exact.value()[0].data<float>()[i], 0.5 * v * std::erfc(-v / std::sqrt(2.0)), 1e-6);
    double t = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    EXPECT_NEAR(approx.value()[0].data<float>()[i], t, 1e-6);
  }
}

TEST(UnaryOps, ClipWithOptionalInputsOnIntegers) {
  Tensor x = Tensor::from_vector<int32_t>({5}, {-10, -1, 0, 5, 100});
  auto r = run_op("Clip", {x, Tensor::from_vector<int32_t>({}, {-2}), Tensor::from_vector<int32_t>({}, {6})});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{-2, -1, 0, 5, 6}));
}

TEST(CastOps, FloatToIntTruncatesAndToBoolTestsNonZero) {
  Tensor x = Tensor::from_vector<float>({4}, {-1.7f, 2.9f, 0.f, 0.25f});
  Attributes to_int32, to_bool;
  to_int32.set("to", int64_t{6});
  to_bool.set("to", int64_t{9});
  auto i = run_op("Cast", {x}, to_int32);
  auto b = run_op("Cast", {x}, to_bool);
  ASSERT_TRUE(i.ok() && b.ok());
  EXPECT_EQ(i.value()[0].to_i64_vector(), (std::vector<int64_t>{-1, 2, 0, 0}));
  EXPECT_EQ(b.value()[0].to_i64_vector(), (std::vector<int64_t>{1, 1, 0, 1}));
}

TEST(CastOps, WhereBroadcastsThreeWays) {
  Tensor c = Tensor::from_vector<bool>({2, 1}, {true, false});
  Tensor x = Tensor::from_vector<int64_t>({1, 3}, {1, 2, 3});
  Tensor y = Tensor::from_vector<int64_t>({}, {-1});
  auto r = run_op("Where", {c, x, y});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value()[0].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.value()[0].to_i64_vector(), (std::vector<int64_t>{1, 2, 3, -1, -1, -1}));
}

TEST(SoftmaxOps, AxisSemanticsChangeAtOpset13) {
  std::vector<float> x = {1, 2, 3, 4};
  Attributes axis1;
  axis1.set("axis", int64_t{1});
  Tensor in = Tensor::from_vector<float>({1, 2, 2}, x);
  // Opset 11 flattens from axis 1: one row of four. Opset 13 normalizes only along axis 1 (pairs 1,3 and 2,4).
  auto old = run_op("Softmax", {in}, axis1, 11);
  auto now = run_op("Softmax", {in}, axis1, 13);
  ASSERT_TRUE(old.ok() && now.ok());
  double total = 0;
  for (float v : x) total += std::exp(v);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(old.value()[0].data<float>()[i], std::exp(x[i]) / total, 1e-6);
  for (int i = 0; i < 4; ++i) {
    int other = i < 2 ? i + 2 : i - 2;
    EXPECT_NEAR(now.value()[0].data<float>()[i], std::exp(x[i]) / (std::exp(x[i]) + std::exp(x[other])), 1e-6);
  }
}

TEST(SoftmaxOps, LogSoftmaxIsStableForLargeLogits) {
  auto r = run_op("LogSoftmax", {Tensor::from_vector<float>({2}, {1000.f, 1001.f})});
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r.value()[0].data<float>()[0], -std::log1p(std::exp(1.0)), 1e-5);
  EXPECT_NEAR(r.value()[0].data<float>()[1], -std::log1p(std::exp(-1.0)), 1e-5);
}
