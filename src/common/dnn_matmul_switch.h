// FusedMatMul's cuDNN graph tactics (backends/cuda/dnn_matmul.h) are on unless KILN_DNN_MATMUL=0 withdraws them
// (measured on an H200: all GPU tests pass, efficientnet_b0 b128 +13.5%). Here, in common, because the builder reads
// it too: with them on, the CUDA pipeline keeps SiLU and sigmoid inside FusedMatMul
// (passes::PassOptions::matmul_sigmoid_acts), where cuDNN's fused epilogue saves their separate pass.
#pragma once

#include <cstdlib>
#include <cstring>

#include "kiln/types.h"

namespace kiln {

inline bool dnn_matmul_enabled() {
  const char* v = std::getenv("KILN_DNN_MATMUL");
  return !(v && std::strcmp(v, "0") == 0);
}

// The builder's passes::PassOptions::matmul_sigmoid_acts: CUDA unless the switch is off, never the CPU backend.
inline bool matmul_sigmoid_acts_for(Backend backend) { return backend == Backend::kCUDA && dnn_matmul_enabled(); }

}  // namespace kiln
