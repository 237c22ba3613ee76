// Unit tests for the float8/float4/e8m0 codecs and the int4/int2 packing of src/common/small_types.
#include <gtest/gtest.h>

#include <cmath>

#include "common/small_types.h"
#include "common/tensor.h"

namespace kiln {
namespace {

TEST(SmallTypes, E4M3FnSpecValues) {
  const DataType t = DataType::kFP8E4M3FN;
  EXPECT_EQ(small_float_to_float(t, 0x7E), 448.0f);
  EXPECT_TRUE(std::isnan(small_float_to_float(t, 0x7F)));
  EXPECT_TRUE(std::isnan(small_float_to_float(t, 0xFF)));
  EXPECT_EQ(small_float_to_float(t, 0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(small_float_to_float(t, 0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(small_float_to_float(t, 0x38), 1.0f);
  EXPECT_EQ(small_float_to_float(t, 0xBE), -1.75f);
  EXPECT_EQ(float_to_small_float(t, 448.0), 0x7E);
  EXPECT_EQ(float_to_small_float(t, 1.0), 0x38);
  EXPECT_EQ(float_to_small_float(t, std::ldexp(1.0, -9)), 0x01);
  EXPECT_EQ(float_to_small_float(t, 1000.0, true), 0x7E);
  EXPECT_EQ(float_to_small_float(t, -1000.0, true), 0xFE);
  EXPECT_EQ(float_to_small_float(t, 1000.0, false), 0x7F);
  EXPECT_EQ(float_to_small_float(t, INFINITY, false), 0x7F);
  EXPECT_EQ(float_to_small_float(t, INFINITY, true), 0x7E);
  // 464 lies halfway between 448 and 480 (the NaN code's slot): ties to even keep 448.
  EXPECT_EQ(float_to_small_float(t, 464.0, false), 0x7E);
  // 1.0625 is halfway between 1.0 (mantissa 000) and 1.125 (001): even wins.
  EXPECT_EQ(float_to_small_float(t, 1.0625), 0x38);
  EXPECT_EQ(float_to_small_float(t, 1.1875), 0x3A);
  EXPECT_EQ(float_to_small_float(t, -0.0), 0x80);
}

TEST(SmallTypes, E5M2SpecValues) {
  const DataType t = DataType::kFP8E5M2;
  EXPECT_EQ(small_float_to_float(t, 0x7B), 57344.0f);
  EXPECT_EQ(small_float_to_float(t, 0x7C), INFINITY);
  EXPECT_EQ(small_float_to_float(t, 0xFC), -INFINITY);
  EXPECT_TRUE(std::isnan(small_float_to_float(t, 0x7D)));
  EXPECT_EQ(small_float_to_float(t, 0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(float_to_small_float(t, 57344.0), 0x7B);
  EXPECT_EQ(float_to_small_float(t, 1e6, true), 0x7B);
  EXPECT_EQ(float_to_small_float(t, 1e6, false), 0x7C);
  EXPECT_EQ(float_to_small_float(t, -INFINITY, false), 0xFC);
}

TEST(SmallTypes, FnuzVariants) {
  EXPECT_TRUE(std::isnan(small_float_to_float(DataType::kFP8E4M3FNUZ, 0x80)));
  EXPECT_EQ(small_float_to_float(DataType::kFP8E4M3FNUZ, 0x7F), 240.0f);
  EXPECT_EQ(small_float_to_float(DataType::kFP8E4M3FNUZ, 0x40), 1.0f);  // bias 8
  EXPECT_EQ(small_float_to_float(DataType::kFP8E5M2FNUZ, 0x7F), 57344.0f);
  EXPECT_EQ(small_float_to_float(DataType::kFP8E5M2FNUZ, 0x40), 1.0f);  // bias 16
  EXPECT_EQ(float_to_small_float(DataType::kFP8E4M3FNUZ, -0.0), 0x00);  // no negative zero
  EXPECT_EQ(float_to_small_float(DataType::kFP8E4M3FNUZ, 1000.0, false), 0x80);
  EXPECT_EQ(float_to_small_float(DataType::kFP8E5M2FNUZ, NAN), 0x80);
}

TEST(SmallTypes, Float4AndE8M0) {
  const DataType t = DataType::kFP4E2M1;
  const float want[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (int c = 0; c < 8; ++c) {
    EXPECT_EQ(small_float_to_float(t, static_cast<uint8_t>(c)), want[c]);
    EXPECT_EQ(small_float_to_float(t, static_cast<uint8_t>(c | 8)), -want[c]);
  }
  EXPECT_EQ(float_to_small_float(t, 9.0, false), 0x7);  // no inf: always saturates
  EXPECT_EQ(float_to_small_float(t, 0.25), 0x0);        // halfway to 0.5: even (0) wins
  EXPECT_EQ(float_to_small_float(t, -3.5), 0xE);        // halfway 3..4: even (4) wins
  EXPECT_EQ(small_float_to_float(DataType::kFP8E8M0, 127), 1.0f);
  EXPECT_TRUE(std::isnan(small_float_to_float(DataType::kFP8E8M0, 0xFF)));
  EXPECT_EQ(float_to_e8m0(1.1f, true, "up"), 128);
  EXPECT_EQ(float_to_e8m0(1.1f, true, "down"), 127);
  EXPECT_EQ(float_to_e8m0(1.6f, true, "nearest"), 128);
}

TEST(SmallTypes, Int4Packing) {
  const int8_t vals[2] = {-8, 7};
  uint8_t packed = 0;
  pack_subbyte(DataType::kINT4, reinterpret_cast<const uint8_t*>(vals), 2, &packed);
  EXPECT_EQ(packed, 0x78);  // -8 = 0b1000 in the low nibble, 7 in the high one
  int8_t back[2] = {};
  unpack_subbyte(DataType::kINT4, &packed, 2, reinterpret_cast<uint8_t*>(back));
  EXPECT_EQ(back[0], -8);
  EXPECT_EQ(back[1], 7);
  const uint8_t u2[5] = {0, 1, 2, 3, 1};
  uint8_t p2[2] = {};
  pack_subbyte(DataType::kUINT2, u2, 5, p2);
  EXPECT_EQ(p2[0], 0xE4);
  EXPECT_EQ(p2[1], 0x01);
  EXPECT_EQ(wrap_int_bits(-9, 4), 7);
  EXPECT_EQ(wrap_uint_bits(-1, 4), 15);
}

TEST(SmallTypes, TensorCastRoundTrip) {
  Tensor f = Tensor::from_vector<float>({4}, {0.5f, -3.0f, 500.0f, 9.0f});
  Tensor e4 = f.cast(DataType::kFP8E4M3FN);
  EXPECT_EQ(e4.nbytes(), 4u);
  EXPECT_EQ(e4.get_f64(0), 0.5);
  EXPECT_EQ(e4.get_f64(1), -3.0);
  EXPECT_EQ(e4.get_f64(2), 448.0);
  EXPECT_TRUE(std::isnan(f.cast(DataType::kFP8E4M3FN, false).get_f64(2)));
  Tensor i4 = f.cast(DataType::kINT4);
  EXPECT_EQ(i4.get_i64(1), -3);
  EXPECT_EQ(i4.get_i64(3), -7);  // 9 wraps
  EXPECT_EQ(i4.cast(DataType::kFLOAT).data<float>()[1], -3.0f);
}

}  // namespace
}  // namespace kiln
