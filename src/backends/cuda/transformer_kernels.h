// Launchers of the transformer fusions' own kernels: the GEMM epilogue cuBLASLt cannot fuse, and fused attention.
// Each takes the stream, never allocates, never synchronizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/attention_tactics.h"
#include "common/tensor.h"
#include "kiln/status.h"

namespace kiln::cuda {

// Activation codes of kiln::FusedMatMul's epilogue.
enum class EpiAct : int { kNone = 0, kRelu = 1, kGeluErf = 2, kGeluTanh = 3, kSilu = 4, kSigmoid = 5 };

// In place over a contiguous (rows x n) output: y = act(y + bias[col]) + res, where bias and res may be null.
// dt: float types; bias and res have dt too.
Status launch_matmul_epilogue(DataType dt, void* y, const void* bias, const void* res, int64_t total, int64_t n,
                              EpiAct act, cudaStream_t stream);

// softmax(scale * Q K^T + mask [causal]) V for Q [B,H,Sq,D], K [B,H,Sk,D], V [B,H,Sk,Dv] and output [B,H,Sq,Dv]
// in any strided layout with unit stride along D: element (b, h, row, d) of Q lies at q + b*qs[0] + h*qs[1] +
// row*qs[2] + d, likewise K, V and O ([B,S,H,D] tensors and the thirds of a packed [B,S,3,H,D] projection are
// such views). The mask (null: none) is read at b*ms[0] + h*ms[1] + i*ms[2] + j*ms[3] (0 strides broadcast).
struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* mask = nullptr;
  void* o = nullptr;
  int64_t B = 0, H = 0, Sq = 0, Sk = 0, D = 0, Dv = 0;
  int64_t Hk = 0;  // K/V heads (grouped-query attention; divides H): query head h reads K/V head h / (H / Hk)
  int64_t qs[3] = {0, 0, 0}, ks[3] = {0, 0, 0}, vs[3] = {0, 0, 0}, os[3] = {0, 0, 0};
  int64_t ms[4] = {0, 0, 0, 0};
  float scale = 1.0f;
  bool causal = false;
  bool masked_rows_zero = false;  // a row whose every key is masked gives zeros, not NaN (FusedAttention's attribute)
  int sm_count = 0;  // the GPU's multiprocessors (0: asked of the current device)
  // Warps per block of the tensor-core kernel (a tactic, attention_tactics.h); 0: the heuristic. A case the
  // tensor-core kernel does not run fails when this is set.
  int warps = 0;
  int splits = 1;  // with warps set: warp groups splitting the keys (1, or kAttentionKeySplit)
};
// Half and bfloat16 with D = Dv in {32, 64, 128}, 16-byte aligned rows, run a tensor-core flash-attention kernel;
// any other case a one-row-per-block kernel whose scores row lives in shared memory. Both: one launch, softmax in
// float32, no workspace.
Status launch_fused_attention(DataType dt, const AttentionParams& p, cudaStream_t stream);

// What picks the tensor-core kernel and its block size for these parameters (their addresses too: alignment).
inline AttentionShape attention_shape(const AttentionParams& p, DataType dt) {
  AttentionShape s;
  s.B = p.B, s.H = p.H, s.Sq = p.Sq, s.Sk = p.Sk, s.D = p.D, s.Dv = p.Dv;
  s.half_or_bf16 = dt == DataType::kHALF || dt == DataType::kBF16;
  s.aligned = attention_rows_aligned(p.q, p.k, p.v, p.o, p.qs, p.ks, p.vs, p.os);
  return s;
}

// ONNX RotaryEmbedding over x [B,H,S,D] (four_d) or [B,S,H*D], rows = B*H*S heads of D values; the first R of
// each are rotated (R/2 angles per row, non-interleaved pairs (i, i + R/2) or interleaved (2i, 2i + 1)), the rest
// copied. The caches (x's type) are [cache_rows, R/2] read at position_ids[b*S + s] (int64), or, with no position
// ids, [B*S, R/2] read at b*S + s. A position outside [0, cache_rows) makes its row NaN.
struct RotaryParams {
  int64_t rows = 0, S = 0, H = 0, D = 0, R = 0, cache_rows = 0;
  bool four_d = false, interleaved = false;
};
Status launch_rotary_embedding(DataType dt, const RotaryParams& p, const void* x, const void* cos_cache,
                               const void* sin_cache, const int64_t* position_ids, void* y, cudaStream_t stream);

}  // namespace kiln::cuda
