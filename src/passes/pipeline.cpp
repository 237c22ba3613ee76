// The pass pipelines, one explicit list per backend; each entry says why it sits where it does.
#include "passes/pass.h"

namespace kiln::passes {

PassList cpu_pipeline() {
  PassList p;
  // Before anything renames or removes values: Gradient nodes name their xs and y by value name.
  p.push_back(make_expand_gradient());
  // Folding needs each node's output shape (to skip huge results) and known values (to fold Shape chains).
  p.push_back(make_shape_inference());
  // Identity/Dropout, and (types and shapes now known) Casts to their input's type and Reshapes to its shape, only
  // add names and copies; removing them lets every later pass see through them.
  p.push_back(make_remove_identity());
  p.push_back(make_constant_folding());
  // On folded graphs: duplicates are easier to see once constant chains are single values.
  p.push_back(make_common_subexpression_elimination());
  p.push_back(make_fold_transposes());
  // Folding leaves the subgraphs that fed folded nodes unused, and their weights with them.
  p.push_back(make_dead_code_elimination());
  // Folded constants carry exact shapes: inference now tightens symbolic dims downstream.
  p.push_back(make_shape_inference());
  // Once more: dims the first folds revealed (a Pad whose pads came from Shape arithmetic, so that everything after
  // it had unknown dims) make more Shape chains known. Swin's shifted-window mask is built from such dims: ~850 int64
  // and mask nodes that would otherwise run at every inference fold here. The last inference is for the writer.
  p.push_back(make_constant_folding());
  // Swin's window Pads are by zero once their sizes fold.
  p.push_back(make_remove_identity());
  p.push_back(make_common_subexpression_elimination());
  p.push_back(make_dead_code_elimination());
  p.push_back(make_shape_inference());
  return p;
}

PassList cuda_pipeline() {
  PassList p = cpu_pipeline();
  // Einsum has no CUDA kernel; as MatMuls (an einsum attention then in the form fuse_attention takes).
  p.push_back(make_lower_einsum());
  // Decomposed exporter forms first, on folded constants: the later fusions then see Gelu and LayerNormalization.
  p.push_back(make_fuse_layernorm());
  // After LayerNorm: a LayerNorm's tail (d / sqrt(mean(d^2) + eps) * gamma) is an RMSNorm of d.
  p.push_back(make_fuse_rmsnorm());
  // torch's GroupNorm (Reshape, InstanceNormalization, Reshape back, Mul, Add): one GroupNormalization kernel.
  p.push_back(make_fuse_groupnorm());
  p.push_back(make_fuse_gelu());
  // Before the epilogue fusion, which would otherwise take the Q.K^T MatMul for an ordinary GEMM. The [B*H,S,D]
  // bmm form first becomes [B,H,S,D], whose head Transposes sink_head_transposes and the layout folds then see.
  p.push_back(make_lift_bmm_heads());
  p.push_back(make_sink_head_transposes());
  p.push_back(make_fuse_attention());
  // The opset-23 Attention operator has no CUDA kernel: as FusedAttention it runs on the GPU, and the layout folds
  // below read its 3-D form's operands in place like the fused exporter forms'.
  p.push_back(make_lower_onnx_attention());
  p.push_back(make_fuse_matmul_epilogue());
  // After the epilogues: the projections merged here already carry their bias (and activation).
  p.push_back(make_fuse_qkv());
  // After attention and the in_proj epilogue exist: q/k/v of torch's packed projection through one Transpose.
  p.push_back(make_fold_mha_input_transposes());
  p.push_back(make_fold_mha_output_transposes());
  // Then attention reads the packed projection and writes [B,S,H,D] in place of those Transposes.
  p.push_back(make_fold_attention_layouts());
  // Cleans up the exported head-splitting chain the previous pass bypassed (its remains feed nothing).
  p.push_back(make_dead_code_elimination());
  // Again: the batch-first rewrite above leaves out_proj -> Reshape -> residual Add where a Transpose stood between.
  p.push_back(make_fuse_matmul_epilogue());
  // BN first: its folded bias is what fuse_conv_epilogue then takes with the activation. Both before lowering,
  // so the folding happens in float32 and FusedConv is lowered as one layer.
  p.push_back(make_fold_batchnorm());
  p.push_back(make_fuse_conv_epilogue());
  // After folding and inference: lowering needs every value's type, and folded constants convert once.
  p.push_back(make_precision_lowering());
  // Float16/bfloat16 bindings (NetworkDefinition::set_io_type) next to lowered layers: the binding's Cast and
  // lowering's own meet as float16 -> float32 -> float16, which fold to nothing.
  p.push_back(make_remove_identity());
  // Casts back to float32 that nothing reads, and float32 weights only their converted copies read.
  p.push_back(make_dead_code_elimination());
  // Patch-embedding convolutions (kernel = stride) as GEMMs: after the epilogue fusion and lowering, so the GEMM
  // takes the bias and activation and is made in the final type; before layout_nhwc, so the convolution never goes
  // channels-last (a 3-channel image padded to 8) and its NCHW readers' Transpose back is one layout_nhwc can sink.
  p.push_back(make_conv_patchify_as_gemm());
  // After lowering: only float16/bfloat16 convolutions go channels-last (tensor cores want NHWC).
  p.push_back(make_layout_nhwc());
  // On NHWC tensors a 1x1 convolution is a GEMM: cuBLASLt runs it (bias/ReLU/residual in its epilogue).
  p.push_back(make_conv1x1_as_gemm());
  // After conv1x1_as_gemm made the projection a FusedMatMul; before fuse_pointwise, which would take the SE Mul
  // into a Pointwise kernel over the whole activation.
  p.push_back(make_se_scale_gemm());
  // After layout_nhwc made the squeeze-excitation's GlobalAveragePool a ReduceMean over H and W of the NHWC
  // depthwise convolution's output: that convolution takes it as its second output (opt-in). Before
  // fuse_small_mlp, which would otherwise take the ReduceMean into the FusedMlp.
  p.push_back(make_fuse_conv_squeeze());
  // After conv1x1_as_gemm made the squeeze-excitation's fc1 and fc2 FusedMatMuls (their activations in the
  // epilogues); before pad_gemm_width would pad fc1's narrow output rows, and before fuse_pointwise.
  p.push_back(make_fuse_small_mlp());
  // The input's Cast + Transpose + channel Pad that lowering and layout_nhwc left: one kiln::ToNhwc pass.
  p.push_back(make_fuse_input_layout());
  // After layout_nhwc and conv1x1_as_gemm, whose activations (the expand GEMM's ReLU6) it folds into the depthwise
  // NHWC conv that reads them; before fuse_pointwise would turn them into Pointwise kernels.
  p.push_back(make_fuse_conv_prologue());
  // After layout_nhwc made GroupNorms channels-last; before fuse_pointwise would take their activations.
  p.push_back(make_fuse_norm_activation());
  // After lowering (the Add and the LayerNorm in the engine's type); before fuse_pointwise would take the Add.
  // Opt-in (PassOptions::layernorm_io) until the CUDA kernel's reading of B has been checked on a GPU.
  p.push_back(make_fuse_add_layernorm());
  // After it (the LayerNorm that stores float32 may be one it made) and after lowering's output Casts; before
  // fuse_pointwise would take the Cast. Opt-in likewise.
  p.push_back(make_fuse_layernorm_output_cast());
  // After lowering (B and the LayerNorm in float16, the kernels' type) and fuse_qkv (the merged QKV GEMM is the one
  // ln_1 feeds), and after the LayerNorm fusions above took what they fuse: a LayerNorm they changed is no longer
  // an ONNX one. Before pad_gemm_width, which would pad B without colsum. Opt-in (PassOptions::norm_gemm).
  p.push_back(make_fold_layernorm_into_matmul());
  // After lowering and its dead-code elimination (B is the converted constant, the float32 output's Cast is in
  // place) and after every pass that makes GEMMs; before fuse_pointwise, which would take that Cast into a
  // Pointwise kernel that Unpad absorbs instead.
  p.push_back(make_pad_gemm_width());
  // Last: the chains to fuse include the Casts that lowering inserted, and every other fusion has taken its nodes.
  p.push_back(make_fuse_pointwise());
  // Values only the fused nodes read (converted constants, internal results) are gone with them.
  p.push_back(make_dead_code_elimination());
  // Very last: it only annotates Concats, and its conditions are about which node writes each input, which every
  // fusion above may change (a Relu becomes a Pointwise, a Conv a FusedMatMul); nothing after it rewrites them.
  p.push_back(make_concat_elimination());
  return p;
}

PassList pipeline_for(Backend backend) {
  switch (backend) {
    case Backend::kCPU: return cpu_pipeline();
    case Backend::kCUDA: return cuda_pipeline();
  }
  return cpu_pipeline();
}

}  // namespace kiln::passes
