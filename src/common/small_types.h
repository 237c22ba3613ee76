// Encodings of the sub-16-bit ONNX element types (float8, float4, e8m0, int4/uint4, int2/uint2).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/types.h"

namespace kiln {

// Inside Kiln every one of these types takes one byte per element: float8/float4/e8m0 hold their bit
// pattern in the low bits, int4/int2 hold the sign-extended value (an int8), uint4/uint2 the value (a
// uint8). Only the ONNX boundary packs 4-bit types two per byte and 2-bit types four per byte, because
// unpacked bytes keep element addressing uniform for every op that indexes or copies elements.

// True for the types whose ONNX serialization packs several elements into a byte.
bool dtype_is_packed_in_onnx(DataType t);
// Elements per byte in ONNX serialization (1, 2 or 4).
int onnx_elems_per_byte(DataType t);
// True for the minifloat types (float8 variants, float4, e8m0), whose bytes are codes, not values.
bool dtype_is_small_float(DataType t);

// Decodes one small-float code of type t (float8 variants, float4e2m1, e8m0) to float.
float small_float_to_float(DataType t, uint8_t code);
// Encodes v as type t with round-to-nearest-even. saturate clamps finite overflow (and infinities) to
// the largest finite value, as ONNX Cast's saturate=1 asks; otherwise overflow becomes inf where the
// type has it and NaN where it does not. float4e2m1 has neither, so it always saturates.
uint8_t float_to_small_float(DataType t, double v, bool saturate = true);
// float -> e8m0 with ONNX Cast's round_mode ("up", "down", "nearest"); works on the float32 exponent.
uint8_t float_to_e8m0(float v, bool saturate, const char* round_mode);

// Wraps an integer into the 4-bit / 2-bit range the way a C cast to a narrower integer does.
int8_t wrap_int_bits(int64_t v, int bits);
uint8_t wrap_uint_bits(int64_t v, int bits);
// Bit width of a sub-byte integer type (4 or 2), 0 for others.
int subbyte_int_bits(DataType t);

// Packs n unpacked elements (one per byte, as Kiln stores them) into ONNX layout: element 0 in the
// least significant bits. dst must hold (n + per_byte - 1) / per_byte bytes.
void pack_subbyte(DataType t, const uint8_t* src, size_t n, uint8_t* dst);
// Inverse of pack_subbyte; signed types are sign-extended.
void unpack_subbyte(DataType t, const uint8_t* src, size_t n, uint8_t* dst);

}  // namespace kiln
