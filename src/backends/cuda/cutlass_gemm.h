// GEMMs of our own from NVIDIA CUTLASS (Hopper warp-specialized TMA/WGMMA kernels), as tactics of kiln::FusedMatMul
// where cuBLASLt's epilogue cannot finish the layer: D = act(alpha * A B + bias[col]) in one kernel, where cuBLASLt
// writes A B + bias and a second pass of ours applies the activation. Four kinds (CutlassAct, gemm_tactics.h):
//   - erf GELU with B [K, N] (bert's and vit's FFN1 from a MatMul; cuBLASLt's GELU epilogue is the tanh form): the
//     pass costs ~30-45 us per layer at batch 64, at its memory floor;
//   - SiLU with B stored [N, K] (efficientnet's expand 1x1 convolutions, conv1x1_as_gemm): memory-bound GEMMs
//     that cuBLASLt + the pass or cuDNN's fused graph run at 1.5-2x their floor;
//   - no activation, bias + residual (C, read by the epilogue), B either way (a transformer's attention output
//     projection and FFN2): cuBLASLt fuses these too, but at N = 768 its large tiles leave a partial last wave;
//   - the product alone into rows of any width N, B stored [N, K] (gpt2's lm_head, N = 50257; pad_gemm_width's
//     odd_gemm): the epilogue stages the tile in shared memory, each row shifted by its misalignment, and stores
//     the rows in 16-byte pieces (OddRowEpilogue), where cuBLASLt needs the rows padded to 16 bytes and an Unpad
//     pass to compact them.
// Built only when CMake is given the CUTLASS headers (KILN_CUTLASS_DIR; `make cutlass` fetches them):
// cutlass_gemm_available() says whether this build has them. Row-major A [M, K] and D [M, N], float16 or bfloat16,
// K and N multiples of 8 (16-byte rows for TMA; the odd-width kind: K only), 16-byte aligned pointers; bias [N] of
// the same type (or none).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "backends/cuda/gemm_tactics.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::cuda {

// The kernel configurations, by tactic index: tile shape and schedule (GELU: 0-3 and 8; SiLU: 0 and 2; residual: 4;
// odd width: 1 and 4, with Kiln's epilogue that stages rows in shared memory in place of the TMA store).
//   0: 128x128x64, cooperative (two consumer warp groups on one tile), cluster 1x1
//   1: 128x256x64, cooperative, cluster 1x1 (large problems: half the tiles of 0)
//   2: 64x128x64, ping-pong (two warp groups on alternate tiles), cluster 1x1 (few output tiles: batch 1)
//   3: 256x128x64, cooperative, cluster 2x1 (B tiles multicast to two SMs by TMA)
//   4: 128x128x64, ping-pong, cluster 1x1 (the residual kernels: bert's output projection at b64 19.1 us against
//      cuBLASLt's 20.1 on an H100)
//   8: 128x192x64, ping-pong, cluster 1x1 (GELU: one warp group's epilogue under the other's main loop; with the
//      sigmoid form of gelu_sigmoid.h vit's FFN1 at b64 takes ~102 us against c1's 119 on an H100)
// The folded-LayerNorm kinds (kNorm, kNormGelu; float16, B [K, N]) are built in configurations 0, 1 and 3.
// kCutlassGeluConfigs (gemm_tactics.h) lists the GELU ones. Measured and dropped (kernel set 4): the GELU
// ping-pong 128x128 (clusters 1x1 and 2x1) and 64x256 kernels and the stream-K cooperative 128x128 ones (GELU and
// residual), slower than 1 and 3 at bert's and vit's b64 and than cuBLASLt + the pass at b1 on an H100 in two
// sessions (bench/NOTES.md), each ~45 s of compile per type. Kernel set 5 dropped the cooperative 128x192 residual
// and bias-only kernels (configuration 5), which lost to the ping-pong residual kernel or to cuBLASLt at every
// shape timed (vit's and bert's out-projection and FFN2, bert's and gpt2's QKV). Kernel set 7 replaced the
// odd-width kernels' CUTLASS no-shared-memory epilogue (1.32 and 1.34 ms at gpt2's lm_head b32, against 0.47 + 0.27
// for the padded GEMM and the Unpad) with Kiln's staged one (c1 0.57 ms, c4 0.58).

// The row and column terms of a kNorm / kNormGelu kernel's epilogue, D = act(rstd[m] (acc + neg_mean[m] colsum[n])
// + bias[n]): each row's negated mean and reciprocal deviation (alpha folded in) from the statistics pass, float
// [M]; B's column sums, float [N].
struct CutlassRowNorm {
  const float* neg_mean = nullptr;
  const float* rstd = nullptr;
  const float* colsum = nullptr;
};

// One planned kernel for one problem: run() launches it, re-initializing its parameters (TMA descriptors) when a
// pointer changed since the last run. c: the residual [M, N] of a kResidual kernel, else null; norm: the row and
// column terms of a kNorm / kNormGelu kernel, else null.
class CutlassGemm {
 public:
  virtual ~CutlassGemm() = default;
  virtual Status run(const void* a, const void* b, const void* bias, const void* c, void* d, void* workspace,
                     size_t workspace_bytes, cudaStream_t stream, const CutlassRowNorm* norm = nullptr) = 0;
};

// The revision of the set of CUTLASS kernels offered (configurations and kinds), part of the timing cache's device key
// with the CUTLASS version: raised whenever tactics are added, so that a cache written before re-times its layers
// instead of keeping them from the new candidates. 2: the ping-pong/stream-K GELU and the residual kernels; 3: the
// 64x256 ping-pong GELU kernel, and the few-tile kernels, which set 2 offered but could not build; 4: the ping-pong and
// stream-K GELU kernels and the stream-K residual one dropped (an engine or cache that names one takes cuBLASLt and the
// pass, with a warning); the cooperative 128x192 residual and bias-only kernels added; the GELU epilogue from erfc's
// scaled form (then gelu_erfc.h); 5: the 128x192 residual and bias-only kernels dropped; 6: the odd-width kernels
// added; 7: the odd-width kernels' epilogue staged in shared memory (OddRowEpilogue); 8: the folded-LayerNorm kernels
// (kNorm, kNormGelu); 9: the GELU epilogue as x sigma(L(x)) (gelu_sigmoid.h) in every GELU kernel, and the ping-pong
// 128x192 GELU kernel (configuration 8).
inline constexpr int kCutlassKernelSet = 9;

// Whether this build has the CUTLASS kernels, and their CUTLASS version ("4.2.0"; empty without them).
bool cutlass_gemm_available();
std::string cutlass_version();

// Whether the tuner offers them: unless KILN_CUTLASS=0 (an A/B switch, as KILN_DNN_MATMUL=0 is for cuDNN's; an
// engine that recorded a CUTLASS tactic runs it either way).
inline bool cutlass_tactics_enabled() {
  const char* v = std::getenv("KILN_CUTLASS");
  return cutlass_gemm_available() && !(v && std::string(v) == "0");
}

// The kernel of `act` and `config` for an M x N x K problem in dt (float16 or bfloat16), B stored [N, K] when
// trans_b, alpha scaling A B; Unsupported where this build has no CUTLASS kernels, dt, the configuration, the
// layout or the sizes do not fit them, or CUTLASS cannot implement the problem.
Result<std::unique_ptr<CutlassGemm>> make_cutlass_gemm(CutlassAct act, int config, DataType dt, bool trans_b,
                                                       int64_t m, int64_t n, int64_t k, bool bias, float alpha);

}  // namespace kiln::cuda
