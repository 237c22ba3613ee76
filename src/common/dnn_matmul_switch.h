// KILN_DNN_MATMUL=1: the switch of FusedMatMul's cuDNN graph tactics (backends/cuda/dnn_matmul.h). Here, in common,
// because the builder reads it too: with it set, the CUDA pipeline keeps SiLU and sigmoid inside FusedMatMul
// (passes::PassOptions::matmul_sigmoid_acts), where only cuDNN's fused epilogue saves their separate pass.
#pragma once

#include <cstdlib>
#include <cstring>

#include "kiln/types.h"

namespace kiln {

inline bool dnn_matmul_enabled() {
  const char* v = std::getenv("KILN_DNN_MATMUL");
  return v && std::strcmp(v, "1") == 0;
}

// The builder's passes::PassOptions::matmul_sigmoid_acts: CUDA with the switch on, never otherwise.
inline bool matmul_sigmoid_acts_for(Backend backend) { return backend == Backend::kCUDA && dnn_matmul_enabled(); }

}  // namespace kiln
