// The pass interface: every graph transformation is a Pass with a name and an apply(), run by a PassManager.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "ir/graph.h"
#include "kiln/logger.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::passes {

inline constexpr const char* kAllLayoutRegions = "*";

struct PassOptions {
  Backend backend = Backend::kCPU;
  // precision_lowering: float16 or bfloat16 when the config allows it, else float32 (the pass does nothing).
  DataType reduced_precision = DataType::kFLOAT;
  std::map<std::string, DataType> layer_precisions;  // --layerPrecisions, by layer name
  std::string precision_constraints = "none";        // none | prefer | obey
  // Whether the target backend has a kernel for (op, domain, dtype).
  std::function<bool(const std::string&, const std::string&, DataType)> has_kernel;
  // fuse_pointwise: false where no pointwise code generator exists (the builder was built without NVRTC).
  bool fuse_pointwise = true;
  // conv1x1_as_gemm, fuse_matmul_epilogue: a SiLU or sigmoid after the GEMM goes into FusedMatMul's epilogue
  // instead of following it as ONNX nodes. The builder sets it for CUDA unless KILN_DNN_MATMUL=0, as cuDNN's fused
  // matmul applies it in-kernel (cuBLASLt cannot; off, the optimized graph keeps the activation as its own node).
  bool matmul_sigmoid_acts = false;
  // layout_nhwc: layout regions (named by kiln.layout_region, see ops/op.h) whose convolutions stay NCHW, as the
  // builder measured them faster so, reformat layers counted; kAllLayoutRegions keeps every region NCHW.
  std::set<std::string> nchw_layout_regions;
  // layout_nhwc: GroupNormalization between NHWC convolutions runs channels-last (kiln GroupNormalization, layout
  // NHWC) instead of bounding a layout region (KILN_NHWC_GROUPNORM=0 turns it off).
  bool nhwc_groupnorm = true;
  // fuse_add_layernorm, fuse_layernorm_output_cast: off until their CUDA kernels have run on a GPU
  // (KILN_FUSE_LAYERNORM_IO=1 turns them on).
  bool layernorm_io = false;
  // pad_gemm_width: a float16/bfloat16 GEMM that only multiplies, with no Cast to absorb, stays at its odd width as a
  // FusedMatMul with B stored [N, K], for the CUDA backend's CUTLASS kernels that store rows of any width
  // (cutlass_odd_c*), instead of padded rows and an Unpad. The builder sets it where the device backend has such
  // kernels (runtime::DeviceBackend::odd_width_gemm); KILN_ODD_GEMM=0 or 1 overrides.
  bool odd_gemm = false;
  // fold_layernorm_into_matmul: a float16 LayerNormalization read only by a GEMM with a constant B goes into it
  // (kiln::FusedMatMul's norm_epsilon: a row-statistics pass and the CUTLASS epilogue, or cuBLASLt over the rows
  // standardized, as the tuner finds faster). Off unless KILN_NORM_GEMM=1: measured neutral on an H100 (vit_b_16
  // b64 +0.3%, gpt2 b32 -0.4%; bench/NOTES.md).
  bool norm_gemm = false;
  // fuse_conv_squeeze: a depthwise convolution's spatial mean (a squeeze-excitation's pool) becomes its second
  // output, which the CUDA depthwise kernels sum as they store Y. Off unless KILN_CONV_SQUEEZE=1: correct on an H200,
  // but efficientnet_b0 b128 ran 1.6% slower with it (the sums cost the instruction-bound kernels more than the
  // pools they replace; bench/NOTES.md, twenty-sixth session).
  bool conv_squeeze = false;
  // The smallest value each symbolic dim of the network's inputs takes in the optimization profiles (the builder
  // fills it): a pass that pays off only above a size reads a dynamic dim's lower bound here.
  std::map<std::string, int64_t> symbol_min;
  // fold_layernorm_into_matmul folds only GEMMs of at least this many rows M (a dynamic dim at its symbol_min):
  // below it (batch 1) cuBLASLt's GEMM after a separate LayerNorm beats the CUTLASS kernels of the folded form.
  int64_t norm_gemm_min_rows = 2048;
  std::string dump_after;  // a pass name, or "all"; empty: no dumps
#ifdef NDEBUG
  bool verify_each = false;  // release builds verify once at the end of the pipeline (the builder does)
#else
  bool verify_each = true;
#endif
};

// What a pass may use besides the graph. `changes` is how a pass reports its work (nodes folded, removed...):
// the manager resets it before each pass and logs it, so a pass that did nothing is visible in --verbose.
struct PassContext {
  explicit PassContext(ILogger& l, PassOptions o = {}) : logger(l), options(std::move(o)) {}
  ILogger& logger;
  PassOptions options;
  int changes = 0;

  void log(ILogger::Severity s, const std::string& msg) const { logger.log(s, msg.c_str()); }
  // A warning said once per build, however often the pass that finds it runs (shape_inference runs several times).
  void warn_once(const std::string& msg) {
    if (warned_.insert(msg).second) log(ILogger::Severity::kWARNING, msg);
  }
  void verbose(const std::string& msg) const { log(ILogger::Severity::kVERBOSE, msg); }

 private:
  std::set<std::string> warned_;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string_view name() const = 0;
  virtual Status apply(ir::Graph& g, PassContext& ctx) = 0;
};

using PassList = std::vector<std::unique_ptr<Pass>>;

// One factory per pass file; pipelines (pipeline.cpp) and tests compose them.
std::unique_ptr<Pass> make_shape_inference();
std::unique_ptr<Pass> make_constant_folding();
std::unique_ptr<Pass> make_dead_code_elimination();
std::unique_ptr<Pass> make_remove_identity();
std::unique_ptr<Pass> make_precision_lowering();
std::unique_ptr<Pass> make_expand_gradient();
std::unique_ptr<Pass> make_common_subexpression_elimination();
std::unique_ptr<Pass> make_fold_transposes();
// CNN fusions and layout (CUDA pipeline).
std::unique_ptr<Pass> make_fold_batchnorm();
std::unique_ptr<Pass> make_fuse_conv_epilogue();
std::unique_ptr<Pass> make_fuse_conv_prologue();
std::unique_ptr<Pass> make_fuse_norm_activation();
// These two do nothing unless PassOptions::layernorm_io.
std::unique_ptr<Pass> make_fuse_add_layernorm();
std::unique_ptr<Pass> make_fuse_layernorm_output_cast();
std::unique_ptr<Pass> make_layout_nhwc();
std::unique_ptr<Pass> make_conv1x1_as_gemm();
std::unique_ptr<Pass> make_conv_patchify_as_gemm();
// A squeeze-excitation scale read only by a GEMM becomes per-sample GEMM weights (CUDA pipeline).
std::unique_ptr<Pass> make_se_scale_gemm();
std::unique_ptr<Pass> make_fuse_conv_squeeze();
// Two small FusedMatMuls in a row over one row per sample (a squeeze-excitation's fc1, fc2) become one FusedMlp.
std::unique_ptr<Pass> make_fuse_small_mlp();
std::unique_ptr<Pass> make_fuse_input_layout();
std::unique_ptr<Pass> make_fuse_pointwise();
// GEMMs with a constant B and an output row pitch that is not a 16-byte multiple write padded rows (CUDA pipeline).
std::unique_ptr<Pass> make_pad_gemm_width();
// A LayerNormalization read only by a GEMM with a constant B goes into it (CUDA pipeline, PassOptions::norm_gemm).
std::unique_ptr<Pass> make_fold_layernorm_into_matmul();
// Marks Concats whose producers can write into their slices of the output (kiln.inplace; the CUDA context acts on it).
std::unique_ptr<Pass> make_concat_elimination();
// Transformer fusions of the CUDA pipeline (the CPU pipeline stays unfused: its results are the reference).
std::unique_ptr<Pass> make_fuse_layernorm();
std::unique_ptr<Pass> make_fuse_rmsnorm();
std::unique_ptr<Pass> make_fuse_groupnorm();
std::unique_ptr<Pass> make_fuse_gelu();
std::unique_ptr<Pass> make_lift_bmm_heads();
std::unique_ptr<Pass> make_sink_head_transposes();
std::unique_ptr<Pass> make_fuse_attention();
// Einsum as Transpose/Reshape/MatMul/ReduceSum where it is one or two operands without diagonals (CUDA pipeline).
std::unique_ptr<Pass> make_lower_einsum();
// The standard ONNX Attention operator (opset 23) as kiln::FusedAttention where they compute the same (CUDA pipeline).
std::unique_ptr<Pass> make_lower_onnx_attention();
std::unique_ptr<Pass> make_fuse_matmul_epilogue();
std::unique_ptr<Pass> make_fuse_qkv();
std::unique_ptr<Pass> make_fold_mha_input_transposes();
std::unique_ptr<Pass> make_fold_mha_output_transposes();
std::unique_ptr<Pass> make_fold_attention_layouts();

// The whole CPU pipeline, in order.
PassList cpu_pipeline();
// The pipeline for a backend (CUDA reuses the CPU list until it has fusions of its own).
PassList pipeline_for(Backend backend);

}  // namespace kiln::passes
