// Unit tests for Tensor storage, casts and half/bfloat16 conversion.
#include <gtest/gtest.h>

#include <cmath>

#include "common/attribute.h"
#include "common/tensor.h"

using namespace kiln;

TEST(Tensor, HalfRoundTripMatchesIeee) {
  // Exact values survive; 1/3 rounds to the nearest half (0x3555), subnormals and overflow behave.
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(1.0f / 3.0f), 0x3555);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(1e6f), 0x7c00);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_FLOAT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_FLOAT_EQ(half_to_float(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_FLOAT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);
  EXPECT_FLOAT_EQ(bf16_to_float(float_to_bf16(1.00390625f)), 1.0f);  // tie goes to even
}

TEST(Tensor, CastTruncatesTowardZero) {
  Tensor t = Tensor::from_vector<float>({4}, {1.7f, -1.7f, 0.0f, 3.0f});
  Tensor i = t.cast(DataType::kINT32);
  EXPECT_EQ(i.to_i64_vector(), (std::vector<int64_t>{1, -1, 0, 3}));
  Tensor b = t.cast(DataType::kBOOL);
  EXPECT_EQ(b.to_i64_vector(), (std::vector<int64_t>{1, 1, 0, 1}));
}

TEST(Tensor, ReshapeSharesStorage) {
  Tensor t = Tensor::from_vector<int64_t>({2, 3}, {0, 1, 2, 3, 4, 5});
  Tensor r = t.reshaped({3, 2});
  r.data<int64_t>()[5] = 42;
  EXPECT_EQ(t.get_i64(5), 42);
  EXPECT_EQ(r.dim(-1), 2);
}

TEST(Attributes, WrongTypeNamesBothTypes) {
  Attributes a;
  a.set("axis", Attribute(std::string("x")));
  auto r = a.get_int("axis", 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("must be of type int but is string"), std::string::npos);
  EXPECT_EQ(a.get_int("missing", 7).value(), 7);
  EXPECT_FALSE(a.get_int("missing").ok());
}
