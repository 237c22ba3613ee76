// Host-side input data for the CLI: seeded random fill, raw files, and FP16/BF16 conversions.
#pragma once

#include <cstdint>
#include <string>

#include "kiln/runtime.h"
#include "kiln/status.h"

namespace kiln::cli {

// Sizes t.data for t.dims and t.dtype.
void allocate(HostTensor& t);

// Uniform [-1, 1] for floating types, integers in [0, 3] (small enough to be valid indices or counts for
// most models), 0/1 for bool. The same seed gives the same data on every run.
void fill_random(HostTensor& t, uint32_t seed);

// Reads raw little-endian bytes in t.dtype, C order; the file size must equal the tensor's byte size.
Status load_raw(const std::string& path, const std::string& input_name, HostTensor& t);

// t in another float type (float32, float16, bfloat16 either way): what a reference whose input is declared in
// that type is fed when the subject's binding has another (an engine built with float16 bindings).
Result<HostTensor> convert_float(const HostTensor& t, DataType to);

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

}  // namespace kiln::cli
