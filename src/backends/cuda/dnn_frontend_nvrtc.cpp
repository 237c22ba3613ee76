// The cuDNN frontend (third_party/cudnn_frontend, included by dnn_attention.cpp alone) calls NVRTC directly from its
// experimental runtime-compiled engines, which Kiln never builds (its SDPA graph does not use them). These stand-ins,
// hidden inside libkiln_cuda.so, answer such calls with an error, so the runtime library does not link libnvrtc and
// an engine runs where NVRTC is not installed (issue 5: generated kernels are stored compiled, the runtime needs no
// NVRTC). cuDNN loads NVRTC by itself for its runtime-fused plans; without it those plans fail to build and the
// layers fall back to cuBLASLt, the legacy convolution or Kiln's attention kernel with a warning.
#include <nvrtc.h>

#define KILN_NO_NVRTC extern "C" __attribute__((visibility("hidden"))) nvrtcResult

KILN_NO_NVRTC nvrtcCreateProgram(nvrtcProgram*, const char*, const char*, int, const char* const*, const char* const*) {
  return NVRTC_ERROR_INTERNAL_ERROR;
}
KILN_NO_NVRTC nvrtcDestroyProgram(nvrtcProgram*) { return NVRTC_ERROR_INTERNAL_ERROR; }
KILN_NO_NVRTC nvrtcCompileProgram(nvrtcProgram, int, const char* const*) { return NVRTC_ERROR_INTERNAL_ERROR; }
KILN_NO_NVRTC nvrtcGetCUBINSize(nvrtcProgram, size_t*) { return NVRTC_ERROR_INTERNAL_ERROR; }
KILN_NO_NVRTC nvrtcGetCUBIN(nvrtcProgram, char*) { return NVRTC_ERROR_INTERNAL_ERROR; }
KILN_NO_NVRTC nvrtcGetProgramLogSize(nvrtcProgram, size_t*) { return NVRTC_ERROR_INTERNAL_ERROR; }
KILN_NO_NVRTC nvrtcGetProgramLog(nvrtcProgram, char*) { return NVRTC_ERROR_INTERNAL_ERROR; }
