// libFuzzer entry point for the ONNX importer (build with -DKILN_FUZZ=ON and clang).
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fuzz_onnx(data, size); }
