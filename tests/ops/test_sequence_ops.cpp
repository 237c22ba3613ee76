// Tests for the sequence and optional operators: inference and reference compute, against values worked out by hand.
#include <gtest/gtest.h>

#include "op_test_util.h"
#include "ops/op_util.h"

using namespace kiln;
using namespace kiln::ops;
using kiln::ops::testing::run_op;

namespace {

Tensor f32(std::vector<int64_t> shape, std::vector<float> v) { return Tensor::from_vector<float>(std::move(shape), v); }
Tensor i64(int64_t v) { return Tensor::scalar_i64(v); }

std::vector<float> values(const Tensor& t) {
  std::vector<float> r;
  for (int64_t i = 0; i < t.numel(); ++i) r.push_back(static_cast<float>(t.get_f64(i)));
  return r;
}

// The shapes and elements of a sequence's tensors.
std::vector<std::vector<int64_t>> shapes_of(const Tensor& seq) {
  std::vector<std::vector<int64_t>> r;
  for (const Tensor& t : seq.items()) r.push_back(t.shape());
  return r;
}

Attributes attrs(std::initializer_list<std::pair<const char*, Attribute>> kv) {
  Attributes a;
  for (auto& [k, v] : kv) a.set(k, v);
  return a;
}

Tensor seq_of(std::vector<Tensor> items) {
  DataType dt = items.empty() ? DataType::kFLOAT : items[0].dtype();
  return Tensor::sequence(dt, std::move(items));
}

const Tensor kA = f32({2}, {1, 2});
const Tensor kB = f32({3}, {3, 4, 5});
const Tensor kC = f32({1}, {6});

TEST(SequenceOps, ConstructAtLength) {
  auto r = run_op("SequenceConstruct", {}, {&kA, &kB, &kC});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  const Tensor& s = r.outputs[0];
  EXPECT_EQ(s.kind(), ValueKind::kSEQUENCE);
  EXPECT_EQ(s.dtype(), DataType::kFLOAT);
  ASSERT_EQ(s.items().size(), 3u);
  // Inference: three rank-1 tensors of different lengths share the rank, not the dim.
  EXPECT_EQ(r.inferred[0].kind, ValueKind::kSEQUENCE);
  ASSERT_TRUE(r.inferred[0].rank_known);
  ASSERT_EQ(r.inferred[0].shape.size(), 1u);
  EXPECT_FALSE(r.inferred[0].shape[0].is_static());

  Tensor pos = i64(-1);  // the last
  auto at = run_op("SequenceAt", {}, {&s, &pos});
  ASSERT_TRUE(at.status.ok()) << at.status.message();
  EXPECT_EQ(values(at.outputs[0]), (std::vector<float>{6}));
  EXPECT_EQ(at.inferred[0].kind, ValueKind::kTENSOR);
  Tensor one = Tensor::from_vector<int32_t>({}, {1});  // int32 positions are allowed too
  at = run_op("SequenceAt", {}, {&s, &one});
  ASSERT_TRUE(at.status.ok()) << at.status.message();
  EXPECT_EQ(values(at.outputs[0]), (std::vector<float>{3, 4, 5}));
  Tensor three = i64(3);
  at = run_op("SequenceAt", {}, {&s, &three});
  ASSERT_FALSE(at.status.ok());
  EXPECT_NE(at.status.message().find("position 3 is out of range [-3, 2]"), std::string::npos) << at.status.message();

  auto len = run_op("SequenceLength", {}, {&s});
  ASSERT_TRUE(len.status.ok()) << len.status.message();
  EXPECT_EQ(len.outputs[0].dtype(), DataType::kINT64);
  EXPECT_EQ(len.outputs[0].rank(), 0);
  EXPECT_EQ(len.outputs[0].get_i64(0), 3);
}

TEST(SequenceOps, ConstructRejectsMixedTypes) {
  Tensor ints = Tensor::from_vector<int64_t>({1}, {1});
  auto r = run_op("SequenceConstruct", {}, {&kA, &ints});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("input 1 is int64 but input 0 is float32"), std::string::npos) << r.status.message();
}

TEST(SequenceOps, InsertAtFrontBackAndNegative) {
  Tensor s = seq_of({kA, kB});
  auto back = run_op("SequenceInsert", {}, {&s, &kC});  // no position: appended
  ASSERT_TRUE(back.status.ok()) << back.status.message();
  EXPECT_EQ(shapes_of(back.outputs[0]), (std::vector<std::vector<int64_t>>{{2}, {3}, {1}}));
  Tensor zero = i64(0);
  auto front = run_op("SequenceInsert", {}, {&s, &kC, &zero});
  ASSERT_TRUE(front.status.ok());
  EXPECT_EQ(shapes_of(front.outputs[0]), (std::vector<std::vector<int64_t>>{{1}, {2}, {3}}));
  Tensor minus1 = i64(-1);  // before the last
  auto mid = run_op("SequenceInsert", {}, {&s, &kC, &minus1});
  ASSERT_TRUE(mid.status.ok());
  EXPECT_EQ(shapes_of(mid.outputs[0]), (std::vector<std::vector<int64_t>>{{2}, {1}, {3}}));
  Tensor two = i64(2);  // == length: the end
  auto end = run_op("SequenceInsert", {}, {&s, &kC, &two});
  ASSERT_TRUE(end.status.ok());
  EXPECT_EQ(shapes_of(end.outputs[0]), (std::vector<std::vector<int64_t>>{{2}, {3}, {1}}));
  Tensor three = i64(3);
  EXPECT_FALSE(run_op("SequenceInsert", {}, {&s, &kC, &three}).status.ok());
  Tensor minus3 = i64(-3);
  EXPECT_FALSE(run_op("SequenceInsert", {}, {&s, &kC, &minus3}).status.ok());
  // The input sequence is unchanged: sequences are values.
  EXPECT_EQ(s.items().size(), 2u);
  Tensor ints = Tensor::from_vector<int64_t>({1}, {1});
  EXPECT_FALSE(run_op("SequenceInsert", {}, {&s, &ints}).status.ok());
}

TEST(SequenceOps, EraseDefaultsToLast) {
  Tensor s = seq_of({kA, kB, kC});
  auto r = run_op("SequenceErase", {}, {&s});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(shapes_of(r.outputs[0]), (std::vector<std::vector<int64_t>>{{2}, {3}}));
  Tensor zero = i64(0);
  r = run_op("SequenceErase", {}, {&s, &zero});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(shapes_of(r.outputs[0]), (std::vector<std::vector<int64_t>>{{3}, {1}}));
  Tensor empty = seq_of({});
  r = run_op("SequenceErase", {}, {&empty});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("empty"), std::string::npos);
}

TEST(SequenceOps, EmptyTakesItsDtype) {
  auto r = run_op("SequenceEmpty", attrs({{"dtype", int64_t{7}}}), {});  // ONNX INT64
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].kind(), ValueKind::kSEQUENCE);
  EXPECT_EQ(r.outputs[0].dtype(), DataType::kINT64);
  EXPECT_TRUE(r.outputs[0].items().empty());
  EXPECT_EQ(r.inferred[0].dtype, DataType::kINT64);
  r = run_op("SequenceEmpty", {}, {});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.outputs[0].dtype(), DataType::kFLOAT);
}

// x = [[0,1,2,3,4],[5,6,7,8,9]]
const Tensor kX = f32({2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});

TEST(SequenceOps, SplitToSequenceDefaultKeepsOrDropsTheAxis) {
  auto r = run_op("SplitToSequence", attrs({{"axis", int64_t{1}}}), {&kX});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].items().size(), 5u);
  EXPECT_EQ(r.outputs[0].items()[3].shape(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(values(r.outputs[0].items()[3]), (std::vector<float>{3, 8}));
  ASSERT_EQ(r.inferred[0].shape.size(), 2u);
  EXPECT_EQ(r.inferred[0].shape[0], Dim(2));
  EXPECT_EQ(r.inferred[0].shape[1], Dim(1));

  r = run_op("SplitToSequence", attrs({{"axis", int64_t{0}}, {"keepdims", int64_t{0}}}), {&kX});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].items().size(), 2u);
  EXPECT_EQ(r.outputs[0].items()[1].shape(), (std::vector<int64_t>{5}));
  EXPECT_EQ(values(r.outputs[0].items()[1]), (std::vector<float>{5, 6, 7, 8, 9}));
  EXPECT_EQ(r.inferred[0].shape.size(), 1u);
}

TEST(SequenceOps, SplitToSequenceByChunkOrLengths) {
  Tensor two = i64(2);  // scalar: pieces of 2 along the axis, the last one shorter
  auto r = run_op("SplitToSequence", attrs({{"axis", int64_t{-1}}, {"keepdims", int64_t{0}}}), {&kX, &two});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(shapes_of(r.outputs[0]), (std::vector<std::vector<int64_t>>{{2, 2}, {2, 2}, {2, 1}}));  // keepdims ignored
  EXPECT_EQ(values(r.outputs[0].items()[1]), (std::vector<float>{2, 3, 7, 8}));
  EXPECT_EQ(values(r.outputs[0].items()[2]), (std::vector<float>{4, 9}));

  Tensor lengths = Tensor::from_vector<int64_t>({3}, {1, 0, 4});
  r = run_op("SplitToSequence", attrs({{"axis", int64_t{1}}}), {&kX, &lengths});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(shapes_of(r.outputs[0]), (std::vector<std::vector<int64_t>>{{2, 1}, {2, 0}, {2, 4}}));
  EXPECT_EQ(values(r.outputs[0].items()[2]), (std::vector<float>{1, 2, 3, 4, 6, 7, 8, 9}));

  Tensor bad = Tensor::from_vector<int64_t>({2}, {1, 3});
  r = run_op("SplitToSequence", attrs({{"axis", int64_t{1}}}), {&kX, &bad});
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("add up to 4 but the axis has 5"), std::string::npos) << r.status.message();
}

TEST(SequenceOps, ConcatFromSequenceConcatenatesOrStacks) {
  Tensor p = f32({2, 1}, {1, 2}), q = f32({2, 2}, {3, 4, 5, 6});
  Tensor s = seq_of({p, q});
  auto r = run_op("ConcatFromSequence", attrs({{"axis", int64_t{1}}}), {&s});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(values(r.outputs[0]), (std::vector<float>{1, 3, 4, 2, 5, 6}));

  Tensor u = f32({2}, {1, 2}), v = f32({2}, {3, 4}), w = f32({2}, {5, 6});
  Tensor s3 = seq_of({u, v, w});
  r = run_op("ConcatFromSequence", attrs({{"axis", int64_t{-1}}, {"new_axis", int64_t{1}}}), {&s3});
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{2, 3}));  // stacked along a new last axis
  EXPECT_EQ(values(r.outputs[0]), (std::vector<float>{1, 3, 5, 2, 4, 6}));
  r = run_op("ConcatFromSequence", attrs({{"axis", int64_t{0}}, {"new_axis", int64_t{1}}}), {&s3});
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(values(r.outputs[0]), (std::vector<float>{1, 2, 3, 4, 5, 6}));

  r = run_op("ConcatFromSequence", attrs({{"axis", int64_t{0}}}), {&s});  // [2,1] and [2,2] differ off axis 0
  ASSERT_FALSE(r.status.ok());
  EXPECT_NE(r.status.message().find("does not match"), std::string::npos) << r.status.message();
  Tensor empty = seq_of({});
  EXPECT_FALSE(run_op("ConcatFromSequence", attrs({{"axis", int64_t{0}}}), {&empty}).status.ok());
  EXPECT_FALSE(run_op("ConcatFromSequence", {}, {&s}).status.ok());  // axis is required
}

TEST(SequenceOps, OptionalWrapsChecksAndUnwraps) {
  auto some = run_op("Optional", {}, {&kA});
  ASSERT_TRUE(some.status.ok()) << some.status.message();
  EXPECT_EQ(some.outputs[0].kind(), ValueKind::kOPTIONAL_TENSOR);
  EXPECT_EQ(some.inferred[0].kind, ValueKind::kOPTIONAL_TENSOR);
  Attributes type;
  type.set("type", std::vector<int64_t>{static_cast<int64_t>(ValueKind::kSEQUENCE), static_cast<int64_t>(DataType::kINT32)});
  auto none = run_op("Optional", type, {});
  ASSERT_TRUE(none.status.ok()) << none.status.message();
  EXPECT_EQ(none.outputs[0].kind(), ValueKind::kOPTIONAL_SEQUENCE);
  EXPECT_EQ(none.outputs[0].dtype(), DataType::kINT32);
  EXPECT_TRUE(none.outputs[0].items().empty());
  EXPECT_FALSE(run_op("Optional", {}, {}).status.ok());  // nothing says what it would hold

  auto has = run_op("OptionalHasElement", {}, {&some.outputs[0]}, 1, 15);
  ASSERT_TRUE(has.status.ok()) << has.status.message();
  EXPECT_EQ(has.outputs[0].dtype(), DataType::kBOOL);
  EXPECT_TRUE(has.outputs[0].get_i64(0));
  has = run_op("OptionalHasElement", {}, {&none.outputs[0]}, 1, 15);
  ASSERT_TRUE(has.status.ok());
  EXPECT_FALSE(has.outputs[0].get_i64(0));
  has = run_op("OptionalHasElement", {}, {nullptr}, 1, 18);  // opset 18: no input at all is an empty optional
  ASSERT_TRUE(has.status.ok()) << has.status.message();
  EXPECT_FALSE(has.outputs[0].get_i64(0));
  has = run_op("OptionalHasElement", {}, {&kA}, 1, 18);  // and a plain tensor is present
  ASSERT_TRUE(has.status.ok());
  EXPECT_TRUE(has.outputs[0].get_i64(0));
  EXPECT_FALSE(run_op("OptionalHasElement", {}, {&kA}, 1, 15).status.ok());

  auto get = run_op("OptionalGetElement", {}, {&some.outputs[0]}, 1, 15);
  ASSERT_TRUE(get.status.ok()) << get.status.message();
  EXPECT_EQ(get.outputs[0].kind(), ValueKind::kTENSOR);
  EXPECT_EQ(values(get.outputs[0]), (std::vector<float>{1, 2}));
  get = run_op("OptionalGetElement", {}, {&none.outputs[0]}, 1, 15);
  ASSERT_FALSE(get.status.ok());
  EXPECT_NE(get.status.message().find("the optional is empty"), std::string::npos);
  Tensor s = seq_of({kA});
  get = run_op("OptionalGetElement", {}, {&s}, 1, 18);  // opset 18: a sequence passes through
  ASSERT_TRUE(get.status.ok()) << get.status.message();
  EXPECT_EQ(get.outputs[0].kind(), ValueKind::kSEQUENCE);
}

TEST(SequenceOps, TensorOnlyInputsAreChecked) {
  // A sequence where a tensor belongs fails with a status, never by reading its (absent) data.
  Tensor s = seq_of({kA});
  Tensor zero = i64(0);
  EXPECT_FALSE(run_op("SequenceAt", {}, {&kA, &zero}).status.ok());
  EXPECT_FALSE(run_op("SequenceInsert", {}, {&s, &s}).status.ok());
  EXPECT_FALSE(run_op("SequenceLength", {}, {&kA}).status.ok());
  EXPECT_FALSE(run_op("SplitToSequence", {}, {&s}).status.ok());
  EXPECT_FALSE(run_op("ConcatFromSequence", attrs({{"axis", int64_t{0}}}), {&kA}).status.ok());
}

}  // namespace
