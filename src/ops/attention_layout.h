// kiln::FusedAttention's tensor layouts: the attributes that name them and where element (b, h, s, d) of Q, K, V
// and the output lies for each, shared by the CPU reference and the CUDA kernels.
#pragma once

#include <string>

#include "ops/op.h"

namespace kiln::ops {

// Element (b, h, s, d) of one operand lies at offset + b * st[0] + h * st[1] + s * st[2] + d.
struct AttentionView {
  int64_t offset = 0;
  int64_t st[3] = {0, 0, 0};
};

// Hk: K's and V's head count (grouped-query attention), which divides H; query head h reads K/V head h / (H / Hk)
// (Hk = 1: multi-query; Hk = H: ordinary multi-head). k's and v's st[1] step over K/V heads.
struct AttentionGeometry {
  int64_t B = 0, H = 0, Hk = 0, Sq = 0, Sk = 0, D = 0, Dv = 0;
  AttentionView q, k, v, o;  // k and v index input 0 when the layout is packed
  bool packed = false;
  Dims out_shape;
  // The K/V head query head h reads.
  int64_t kv_head(int64_t h) const { return Hk == H ? h : h / (H / Hk); }
};

// qkv_layout "bhsd" (default): Q [B,H,Sq,D], K [B,Hk,Sk,D], V [B,Hk,Sk,Dv] (Hk = H, or a divisor of it);
// "bshd" and "sbhd": the same stored as [B,S,H,D] and [S,B,H,D] (the latter what a sequence-first projection,
// torch's nn.MultiheadAttention, writes); "bs3hd" and "sb3hd": input 0 alone, a packed projection [B,S,3,H,D] or
// [S,B,3,H,D] whose thirds are Q, K and V (Sq = Sk, Dv = D, Hk = H: packed layouts have no grouped form).
// out_layout "bhsd" (default): [B,H,Sq,Dv]; "bshd": [B,Sq,H,Dv]; "sbhd": [Sq,B,H,Dv].
Result<std::string> attention_qkv_layout(const Attributes& a);
Result<std::string> attention_out_layout(const Attributes& a);
// Whether a qkv_layout is one of the packed ones (K and V read from input 0).
bool attention_layout_packed(const std::string& layout);
// The dims that hold B, H and S in a layout's 4-D form (D is dim 3; a packed layout's 5-D input has B and S in
// the same places and H at dim 3).
struct AttentionAxes {
  int b = 0, h = 1, s = 2;
};
AttentionAxes attention_axes(const std::string& layout);

// The problem and the operands' strides for concrete shapes, with every dimension checked against the others.
// k and v are null where the node has no K and V inputs, which must be exactly when the layout is packed.
Result<AttentionGeometry> attention_geometry(const Attributes& a, const Dims& q, const Dims* k, const Dims* v);

}  // namespace kiln::ops
