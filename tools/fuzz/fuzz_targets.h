// Kiln's fuzz targets: plain functions over untrusted bytes, shared by the libFuzzer binaries and the replay
// driver (kiln_fuzz_replay), so a crash found by one reproduces in the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::fuzz {

// What one input led to; `message` is the first error (empty when everything succeeded).
struct Outcome {
  bool accepted = false;  // parsed/loaded without error
  bool ran = false;       // the engine was built (ONNX) or run (engine)
  std::string message;
  std::vector<uint8_t> engine;  // run_onnx: the engine it built (seeds for the engine target)
};

// Parses the bytes as an ONNX model and, where that succeeds, builds a CPU engine from it (inputs with dynamic
// dims get a profile of 1..2) and loads that engine. Refuses nothing on size: the importer must.
Outcome run_onnx(const uint8_t* data, size_t size);
// Loads the bytes as an engine file and, where that succeeds, runs it once on the CPU with zero-filled inputs
// (dynamic dims at their profile minimum, or 1), unless the inputs would exceed a small element budget.
Outcome run_engine(const uint8_t* data, size_t size);

// Structure-aware engine mutation: picks one section of a well-formed engine (or, with the given odds, the
// header's own fields), lets `mutate` change its bytes (it may grow or shrink them up to `max_section`), then lays
// the file out again and recomputes every offset, size, checksum and the file size, so the change reaches the
// section decoders instead of stopping at a checksum. Returns the new size (0 when `data` is not an engine file
// whose header can be walked; the caller then mutates bytes blindly).
using ByteMutator = size_t (*)(uint8_t* data, size_t size, size_t max_size);
size_t mutate_engine(uint8_t* data, size_t size, size_t max_size, unsigned seed, ByteMutator mutate);

}  // namespace kiln::fuzz

extern "C" int fuzz_onnx(const uint8_t* data, size_t size);
extern "C" int fuzz_engine(const uint8_t* data, size_t size);
