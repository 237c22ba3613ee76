// libFuzzer entry point for the engine loader and CPU runtime, with a structure-aware mutator: most mutations
// edit one section and recompute the checksums and layout, so they reach the record decoders and the runtime.
#include "fuzz_targets.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fuzz_engine(data, size); }

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  // One in eight mutations is blind, so the header checks and checksum paths are still exercised.
  if (seed % 8 != 0) {
    size_t n = kiln::fuzz::mutate_engine(data, size, max_size, seed / 8, LLVMFuzzerMutate);
    if (n) return n;
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
