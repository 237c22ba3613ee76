// GPU tests of the CNN path: kiln FusedConv (NCHW/NHWC, FP32/FP16, every epilogue) against the CPU reference, and
// a small CNN imported from ONNX through the whole CUDA pipeline (BN folding, epilogue fusion, FP16, NHWC).
#include <cstdio>

#include "../unit/cnn_onnx_model.h"
#include "builder/engine_writer.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "ops/layout_util.h"
#include "passes/pass.h"

namespace kiln::gpu_testing {
namespace {

struct ConvCase {
  std::vector<int64_t> x;  // NCHW
  int64_t m = 16, k = 3, stride = 1, group = 1;
  std::vector<int64_t> pads = {1, 1, 1, 1};
  bool bias = true, residual = true;
};

// One FusedConv node; inputs in the node's layout (weights KRSC for NHWC), as the layout pass would leave them.
void fused_conv_case(const ConvCase& c, const std::string& layout, DataType dt, const ops::Epilogue& ep) {
  const bool nhwc = layout == "NHWC";
  SCOPED_TRACE(layout + " " + dtype_name(dt) + " " + ops::activation_name(ep.act) + " x" + dims_to_string(c.x) + " k" +
               std::to_string(c.k) + " s" + std::to_string(c.stride) + " g" + std::to_string(c.group) +
               (c.bias ? " bias" : "") + (c.residual ? " residual" : ""));
  const int64_t cin = c.x[1];
  float s = 1.f / std::sqrt(static_cast<float>(cin / c.group * c.k * c.k));
  Tensor x = random_tensor(dt, c.x, 1);
  Tensor w = random_tensor(dt, {c.m, cin / c.group, c.k, c.k}, 2, -s, s);
  Tensor b = random_tensor(dt, {c.m}, 3, -0.5, 0.5);
  auto perm = ops::perm_to_nhwc(4);
  if (nhwc) {
    x = ops::permute(x, perm).value();
    w = ops::permute(w, perm).value();
  }
  ir::Graph g;
  ir::Value* xv = g.add_value("x");
  xv->dtype = dt;
  xv->shape = ops::shape_from_dims(x.shape());
  xv->rank_known = true;
  g.inputs().push_back(xv);
  Attributes a;
  a.set("pads", c.pads);
  a.set("strides", std::vector<int64_t>{c.stride, c.stride});
  a.set("group", c.group);
  a.set("layout", layout);
  a.set("activation", ops::activation_name(ep.act));
  a.set("alpha", ep.alpha);
  a.set("beta", ep.beta);
  a.set("clip_min", ep.lo);
  a.set("clip_max", ep.hi);
  // The output shape, from the op's own inference, sizes Z.
  std::vector<ir::Value*> in = {xv, g.add_constant("w", w)};
  if (c.bias) in.push_back(g.add_constant("b", b));
  ir::Node* n = g.add_node("FusedConv", "fused", in, {"y"}, a, 1, "kiln");
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  ASSERT_TRUE(passes::make_shape_inference()->apply(g, ctx).ok());
  std::vector<Tensor> inputs = {x};
  if (c.residual) {
    ir::Value* z = add_residual_input(g, n);
    inputs.push_back(random_tensor(dt, ops::static_dims(z->shape), 4));
  }
  g.outputs().push_back(n->outputs[0]);
  auto [cpu, gpu] = run_on_both(g, inputs);
  if (dt == DataType::kFLOAT)
    expect_tensors_close(cpu, gpu, 5e-4, 1e-4, "FusedConv");
  else
    expect_tensors_close(cpu, gpu, 1e-2, 4e-3, "FusedConv");
}

TEST(GpuCnn, FusedConvEveryEpilogue) {
  KILN_REQUIRE_GPU();
  ConvCase c;
  c.x = {2, 16, 14, 14};
  for (const char* layout : {"NCHW", "NHWC"})
    for (DataType dt : {DataType::kFLOAT, DataType::kHALF})
      for (const auto& ep : all_activations(-0.5f, 0.75f)) fused_conv_case(c, layout, dt, ep);
}

TEST(GpuCnn, FusedConvShapesAndOptionalInputs) {
  KILN_REQUIRE_GPU();
  ops::Epilogue relu;
  relu.act = ops::Activation::kRelu;
  ops::Epilogue silu;
  silu.act = ops::Activation::kSilu;
  std::vector<ConvCase> cases;
  ConvCase base;
  base.x = {3, 32, 17, 15};
  // Bias only (cuDNN's fused call needs Z: the own kernel runs), Z only, neither.
  for (auto [bias, res] : {std::pair{true, false}, {false, true}, {false, false}}) {
    ConvCase c = base;
    c.bias = bias;
    c.residual = res;
    cases.push_back(c);
  }
  ConvCase strided = base;  // resnet's downsampling 1x1 and 3x3 stride-2 convolutions
  strided.stride = 2;
  cases.push_back(strided);
  ConvCase pw = base;
  pw.k = 1;
  pw.pads = {0, 0, 0, 0};
  pw.m = 64;
  cases.push_back(pw);
  ConvCase dw = base;  // depthwise, as in mobilenet and efficientnet
  dw.group = 32;
  dw.m = 32;
  cases.push_back(dw);
  for (const auto& c : cases)
    for (const char* layout : {"NCHW", "NHWC"})
      for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
        fused_conv_case(c, layout, dt, relu);
        fused_conv_case(c, layout, dt, silu);
      }
  // Asymmetric pads: NCHW only (the padded copy path), with an epilogue after it.
  ConvCase asym = base;
  asym.pads = {0, 1, 1, 2};
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) fused_conv_case(asym, "NCHW", dt, silu);
}

// One kiln-domain node of one input, shape-inferred, run on the CPU reference and on the GPU (where all of it
// must run: no host layers).
void run_kiln_node(const std::string& op, const Attributes& attrs, const Tensor& x_data, Tensor* cpu, Tensor* gpu) {
  ir::Graph g;
  ir::Value* x = g.add_value("x");
  x->dtype = x_data.dtype();
  for (int64_t d : x_data.shape()) x->shape.push_back(ops::Dim(d));
  x->rank_known = true;
  g.inputs().push_back(x);
  g.outputs().push_back(g.add_node(op, "layer", {x}, {"y"}, attrs, 1, "kiln")->outputs[0]);
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  ASSERT_TRUE(passes::make_shape_inference()->apply(g, ctx).ok());
  std::tie(*cpu, *gpu) = run_on_both(g, {x_data});
}

TEST(GpuCnn, NhwcPoolingMatchesReference) {
  KILN_REQUIRE_GPU();
  // 24 channels: whole 16-byte vectors per thread for every type; 10: the one-channel-per-thread form.
  for (const char* op : {"MaxPool", "AveragePool"})
    for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
      for (int64_t c : {24, 10}) {
        SCOPED_TRACE(std::string(op) + " " + dtype_name(dt) + " C " + std::to_string(c));
        Attributes a;
        a.set("kernel_shape", std::vector<int64_t>{3, 3});
        a.set("strides", std::vector<int64_t>{2, 2});
        a.set("pads", std::vector<int64_t>{1, 1, 1, 1});
        a.set("layout", "NHWC");
        if (std::string(op) == "AveragePool") a.set("count_include_pad", int64_t{1});
        Tensor cpu, gpu;
        run_kiln_node(op, a, random_tensor(dt, {2, 13, 11, c}, 5), &cpu, &gpu);
        if (HasFatalFailure()) return;
        expect_tensors_close(cpu, gpu, dt == DataType::kFLOAT ? 1e-6 : 8e-3, 8e-3, op);
      }
}

// kiln GroupNormalization (layout NHWC, per-channel scale and bias: layout_nhwc's form of GroupNormalization
// between NHWC convolutions) against the CPU reference (ONNX GroupNormalization on the NCHW permutation).
TEST(GpuCnn, NhwcGroupNormMatchesReference) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> shape;
    int64_t groups;
    std::string act = "none";  // fuse_norm_activation's epilogue
  };
  uint32_t seed = 70;
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16})
    for (const Case& k : {Case{{2, 13, 11, 32}, 8}, Case{{1, 9, 7, 20}, 5}, Case{{2, 5, 6, 16}, 16},
                          Case{{1, 4, 4, 24}, 1}, Case{{2, 17, 40}, 4},
                          // UNet-sized: many row chunks per image, 320 and 1280 channels (more than one
                          // channel per thread), 32 groups.
                          Case{{1, 48, 40, 320}, 32}, Case{{3, 9, 11, 1280}, 32}, Case{{2, 13, 11, 32}, 8, "silu"},
                          Case{{1, 48, 40, 320}, 32, "silu"}, Case{{2, 5, 6, 16}, 4, "relu"}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + dims_to_string(k.shape) + " groups " + std::to_string(k.groups) +
                   " activation " + k.act);
      const int64_t c = k.shape.back();
      ir::Graph g;
      ir::Value* x = g.add_value("x");
      x->dtype = dt;
      for (int64_t d : k.shape) x->shape.push_back(ops::Dim(d));
      x->rank_known = true;
      g.inputs().push_back(x);
      Attributes a;
      a.set("num_groups", k.groups);
      a.set("epsilon", 1e-5f);
      a.set("layout", "NHWC");
      a.set("activation", k.act);
      ir::Value* scale = g.add_constant("scale", random_tensor(dt, {c}, seed++, 0.5, 1.5));
      ir::Value* bias = g.add_constant("bias", random_tensor(dt, {c}, seed++));
      g.outputs().push_back(g.add_node("GroupNormalization", "gn", {x, scale, bias}, {"y"}, a, 1, "kiln")->outputs[0]);
      QuietLogger quiet;
      passes::PassContext ctx(quiet);
      ASSERT_TRUE(passes::make_shape_inference()->apply(g, ctx).ok());
      Tensor cpu, gpu;
      std::tie(cpu, gpu) = run_on_both(g, {random_tensor(dt, k.shape, seed++, -3, 3)});
      if (HasFatalFailure()) return;
      expect_tensors_close(cpu, gpu, dt == DataType::kFLOAT ? 1e-4 : 3e-2, 2e-2, "kiln GroupNormalization NHWC");
    }
}

TEST(GpuCnn, ToNhwcMatchesReference) {
  KILN_REQUIRE_GPU();
  struct Case {
    DataType in, out;
    int64_t c, channels;
  };
  // float -> half padded to 8 (the 16-byte store), float -> float unpadded, half -> bfloat16 padded to 5.
  for (const Case& k : {Case{DataType::kFLOAT, DataType::kHALF, 3, 8}, Case{DataType::kFLOAT, DataType::kFLOAT, 3, 3},
                        Case{DataType::kHALF, DataType::kBF16, 4, 5}, Case{DataType::kBF16, DataType::kHALF, 1, 8}}) {
    SCOPED_TRACE(std::string(dtype_name(k.in)) + " -> " + dtype_name(k.out) + " channels " +
                 std::to_string(k.channels));
    Attributes a;
    a.set("to", int64_t{k.out == DataType::kHALF ? 10 : k.out == DataType::kBF16 ? 16 : 1});
    a.set("channels", k.channels);
    Tensor cpu, gpu;
    run_kiln_node("ToNhwc", a, random_tensor(k.in, {3, k.c, 17, 29}, 9), &cpu, &gpu);
    if (HasFatalFailure()) return;
    EXPECT_EQ(gpu.shape(), (std::vector<int64_t>{3, 17, 29, k.channels}));
    expect_tensors_close(cpu, gpu, 0, 0, "ToNhwc");  // conversions round the same way: bit-identical
  }
}

// ---- a small CNN through ONNX ----

struct OnnxRun {
  std::vector<Tensor> out;
  std::string host;
  int nhwc_convs = 0, nchw_convs = 0, transposes = 0, to_nhwc = 0, reduce_means = 0, token_gemms = 0, slices = 0;
  int sigmoid_gemms = 0;           // FusedMatMuls with a SiLU or sigmoid epilogue (none with KILN_DNN_MATMUL=0)
  int mlps = 0, mlp_squeezes = 0;  // FusedMlp layers (fuse_small_mlp), and those that take the squeeze too
  std::string gemm_tactics;        // "name=tactic " of every FusedMatMul
};

OnnxRun run_onnx(const onnx::ModelProto& m, Backend backend, std::vector<BuilderFlag> flags, const Tensor& x) {
  OnnxRun r;
  auto engine = test::build_onnx_engine(m, backend, flags);
  if (!engine) return r;
  for (const auto& n : engine->plan().nodes) {
    if (n.op_type == "FusedConv" || n.op_type == "Conv") {
      auto layout = n.attrs.get_string("layout", "NCHW");
      (layout.ok() && *layout == "NHWC" ? r.nhwc_convs : r.nchw_convs)++;
    }
    // A 1x1 convolution on NHWC data runs as a GEMM (conv1x1_as_gemm): FusedMatMul over a rank-4 input.
    if (n.op_type == "FusedMatMul" && !n.inputs.empty() && n.inputs[0] >= 0 &&
        engine->plan().values[n.inputs[0]].shape.size() == 4) {
      r.nhwc_convs++;
    }
    // A patch-embedding convolution as a GEMM over the patches (conv_patchify_as_gemm): FusedMatMul on rank 3.
    if (n.op_type == "FusedMatMul" && !n.inputs.empty() && n.inputs[0] >= 0 &&
        engine->plan().values[n.inputs[0]].shape.size() == 3) {
      r.token_gemms++;
    }
    r.transposes += n.op_type == "Transpose";
    r.to_nhwc += n.op_type == "ToNhwc";
    r.reduce_means += n.op_type == "ReduceMean";
    r.slices += n.op_type == "Slice";
    if (n.op_type == "FusedMlp") {
      r.nhwc_convs += 2;  // a squeeze-excitation's two 1x1 convolutions on the NHWC pool (fuse_small_mlp)
      r.mlps++;
      auto sq = n.attrs.get_int("squeeze", 0);
      r.mlp_squeezes += sq.ok() && *sq == 1;
    }
    if (n.op_type == "FusedMatMul") {
      auto act = n.attrs.get_string("activation", "none");
      r.sigmoid_gemms += act.ok() && (*act == "silu" || *act == "sigmoid");
      auto t = n.attrs.get_string("kiln.tactic", "");
      r.gemm_tactics += n.name + "=" + (t.ok() ? *t : std::string("?")) + " ";
    }
  }
  if (backend == Backend::kCUDA) r.host = test::host_layers(*engine);
  r.out = test::infer(*engine, {{"x", x}});
  return r;
}

TEST(GpuCnn, SmallCnnFromOnnxFp32AndFp16Nhwc) {
  KILN_REQUIRE_GPU();
  int convs = 0;
  onnx::ModelProto m = test::small_cnn(&convs);
  Tensor x = random_tensor(DataType::kFLOAT, {4, 3, 32, 32}, 7);
  OnnxRun cpu = run_onnx(m, Backend::kCPU, {}, x);
  ASSERT_EQ(cpu.out.size(), 1u);
  EXPECT_EQ(cpu.nchw_convs, convs);  // the CPU pipeline stays unfused

  OnnxRun f32 = run_onnx(m, Backend::kCUDA, {}, x);
  ASSERT_EQ(f32.out.size(), 1u);
  EXPECT_TRUE(f32.host.empty()) << f32.host;
  EXPECT_EQ(f32.nhwc_convs, 0);
  expect_tensors_close(cpu.out[0], f32.out[0], 1e-3, 1e-3, "CUDA FP32");

  OnnxRun f16 = run_onnx(m, Backend::kCUDA, {BuilderFlag::kFP16}, x);
  ASSERT_EQ(f16.out.size(), 1u);
  EXPECT_TRUE(f16.host.empty()) << f16.host;
  EXPECT_EQ(f16.nhwc_convs, convs);
  EXPECT_EQ(f16.nchw_convs, 0);
  EXPECT_EQ(f16.transposes, 0) << "no Transpose: the input's conversion is a ToNhwc, none inside the body";
  EXPECT_EQ(f16.to_nhwc, 1);
  expect_tensors_close(cpu.out[0], f16.out[0], 3e-2, 3e-2, "CUDA FP16 NHWC");
}

// efficientnet_b0's squeeze-excite block (C = 144, 28x28) through the whole CUDA FP16 pipeline at batch 1 and 8, with
// the cuDNN matmul tactics on (the default) and withdrawn (KILN_DNN_MATMUL=0), and fuse_small_mlp withdrawn for the
// first: its global pool runs as a ReduceMean over the NHWC tensor's axes 1, 2 (the contiguous-column kernel); on,
// the SE gate's reduce (SiLU) and expand (sigmoid) GEMMs keep their activations (conv1x1_as_gemm under
// PassOptions::matmul_sigmoid_acts), whichever tactic then runs them (cuDNN's fused plan, or cuBLASLt + the
// epilogue pass); off, they follow the GEMMs as before. With fuse_small_mlp (the default) the pool and both GEMMs
// are one FusedMlp. All match the reference. The layout is forced NHWC (KILN_LAYOUT=nhwc): what is checked is that
// layout's graph, which the timed layout choice may trade for NCHW at batch 1 where the two time alike (the GPU
// suite's shards run at once).
TEST(GpuCnn, SqueezeExciteBlockFp16WithTheDnnMatmulSwitch) {
  KILN_REQUIRE_GPU();
  ScopedEnv nhwc("KILN_LAYOUT", "nhwc");
  for (int variant = 0; variant < 3; ++variant) {
    const char* sw = variant == 1 ? "0" : nullptr;
    const bool mlp = variant == 2;
    ScopedEnv gate("KILN_DNN_MATMUL", sw);
    ScopedEnv no_mlp("KILN_DISABLE_PASSES", mlp ? nullptr : "fuse_small_mlp");
    const std::string label = std::string("KILN_DNN_MATMUL=") + (sw ? sw : "(unset)") +
                              (mlp ? ", fuse_small_mlp" : ", without fuse_small_mlp");
    for (int64_t n : {1, 8}) {
      SCOPED_TRACE(label + ", batch " + std::to_string(n));
      onnx::ModelProto m = test::se_block_cnn(n, 28, 144);
      Tensor x = random_tensor(DataType::kFLOAT, {n, 8, 28, 28}, 12);
      OnnxRun cpu = run_onnx(m, Backend::kCPU, {}, x);
      OnnxRun f16 = run_onnx(m, Backend::kCUDA, {BuilderFlag::kFP16}, x);
      ASSERT_EQ(cpu.out.size(), 1u);
      ASSERT_EQ(f16.out.size(), 1u);
      EXPECT_TRUE(f16.host.empty()) << f16.host;
      EXPECT_EQ(f16.reduce_means, mlp ? 0 : 1);
      EXPECT_EQ(f16.sigmoid_gemms, sw || mlp ? 0 : 2) << f16.gemm_tactics;
      EXPECT_EQ(f16.mlp_squeezes, mlp ? 1 : 0);
      std::printf("DNN_MM se block %s batch %lld tactics: %s\n", label.c_str(), static_cast<long long>(n),
                  f16.gemm_tactics.c_str());
      expect_tensors_close(cpu.out[0], f16.out[0], 3e-2, 3e-2, "CUDA FP16 squeeze-excite, " + label);
    }
  }
}

// efficientnet_b0's block with its depthwise convolution (expand 1x1, depthwise 3x3 + SiLU, squeeze-excite,
// project; se_block_cnn's depthwise form) through the CUDA FP16 pipeline with fuse_conv_squeeze on
// (KILN_CONV_SQUEEZE=1) and off: on, the depthwise FusedConv writes the mean (from its kernel's partial sums or a
// reduction after it, whichever tactic the tuner keeps) and the FusedMlp reads it; off, the FusedMlp takes the
// squeeze itself. No ReduceMean is left either way; both match the reference.
TEST(GpuCnn, DepthwiseSqueezeExciteBlockWithAndWithoutTheFusedSqueeze) {
  KILN_REQUIRE_GPU();
  ScopedEnv nhwc("KILN_LAYOUT", "nhwc");
  for (const char* sw : {"1", "0"}) {
    ScopedEnv squeeze("KILN_CONV_SQUEEZE", sw);
    for (int64_t n : {1, 8}) {
      SCOPED_TRACE(std::string("KILN_CONV_SQUEEZE=") + sw + ", batch " + std::to_string(n));
      onnx::ModelProto m = test::se_block_cnn(n, 28, 144, true);
      Tensor x = random_tensor(DataType::kFLOAT, {n, 8, 28, 28}, 13);
      OnnxRun cpu = run_onnx(m, Backend::kCPU, {}, x);
      OnnxRun f16 = run_onnx(m, Backend::kCUDA, {BuilderFlag::kFP16}, x);
      ASSERT_EQ(cpu.out.size(), 1u);
      ASSERT_EQ(f16.out.size(), 1u);
      EXPECT_TRUE(f16.host.empty()) << f16.host;
      EXPECT_EQ(f16.reduce_means, 0);
      EXPECT_EQ(f16.mlps, 1);
      EXPECT_EQ(f16.mlp_squeezes, std::string(sw) == "1" ? 0 : 1);
      expect_tensors_close(cpu.out[0], f16.out[0], 3e-2, 3e-2, "CUDA FP16 depthwise squeeze-excite");
    }
  }
}

// vit's patch embedding (Conv kernel = stride, then the token Reshape + Transpose) through the whole CUDA
// pipeline, FP32 and FP16: one patch Transpose (6-D, 16-element runs at patch 16) and one GEMM, no convolution,
// no ToNhwc; at vit_b_16's size (224/16, hidden 768) and a small one with 8-element runs and an odd batch.
TEST(GpuCnn, VitPatchEmbeddingAsGemm) {
  KILN_REQUIRE_GPU();
  struct Case {
    int64_t batch, hw, patch, hidden;
  };
  for (const Case& k : {Case{2, 224, 16, 768}, Case{3, 40, 8, 64}}) {
    SCOPED_TRACE("batch " + std::to_string(k.batch) + " " + std::to_string(k.hw) + "/" + std::to_string(k.patch) +
                 " hidden " + std::to_string(k.hidden));
    onnx::ModelProto m = test::vit_stem(k.batch, 3, k.hw, k.patch, k.hidden);
    Tensor x = random_tensor(DataType::kFLOAT, {k.batch, 3, k.hw, k.hw}, 13);
    OnnxRun cpu = run_onnx(m, Backend::kCPU, {}, x);
    ASSERT_EQ(cpu.out.size(), 1u);
    for (bool fp16 : {false, true}) {
      SCOPED_TRACE(fp16 ? "FP16" : "FP32");
      OnnxRun gpu = run_onnx(m, Backend::kCUDA,
                             fp16 ? std::vector<BuilderFlag>{BuilderFlag::kFP16} : std::vector<BuilderFlag>{}, x);
      ASSERT_EQ(gpu.out.size(), 1u);
      EXPECT_TRUE(gpu.host.empty()) << gpu.host;
      EXPECT_EQ(gpu.nhwc_convs + gpu.nchw_convs, 0);
      EXPECT_EQ(gpu.token_gemms, 1);
      EXPECT_EQ(gpu.transposes, 1);
      EXPECT_EQ(gpu.to_nhwc, 0);
      const double tol = fp16 ? 3e-2 : 1e-3;
      expect_tensors_close(cpu.out[0], gpu.out[0], tol, tol, fp16 ? "CUDA FP16 patch GEMM" : "CUDA FP32 patch GEMM");
    }
  }
}

// --- Strided 1x1 convolutions as Slice + GEMM (conv1x1_as_gemm; GpuStridedConv1x1) ---

struct Strided1x1 {
  std::vector<int64_t> x;  // NHWC
  int64_t m = 48, sh = 2, sw = 2;
  bool bias = true, residual = false;
};

// One NHWC FusedConv 1x1 with strides (sh, sw) and no pads, as layout_nhwc leaves resnet's downsample.
std::unique_ptr<ir::Graph> strided_1x1_graph(const Strided1x1& c, DataType dt, const ops::Epilogue& ep,
                                             std::vector<Tensor>* inputs) {
  auto g = std::make_unique<ir::Graph>();
  const int64_t cin = c.x[3];
  const float s = 1.f / std::sqrt(static_cast<float>(cin));
  ir::Value* xv = g->add_value("x");
  xv->dtype = dt;
  xv->shape = ops::shape_from_dims(c.x);
  xv->rank_known = true;
  g->inputs().push_back(xv);
  Attributes a;
  a.set("pads", std::vector<int64_t>(4, 0));
  a.set("strides", std::vector<int64_t>{c.sh, c.sw});
  a.set("layout", std::string("NHWC"));
  a.set("activation", ops::activation_name(ep.act));
  a.set("alpha", ep.alpha);
  a.set("beta", ep.beta);
  a.set("clip_min", ep.lo);
  a.set("clip_max", ep.hi);
  std::vector<ir::Value*> in = {xv, g->add_constant("w", random_tensor(dt, {c.m, 1, 1, cin}, 2, -s, s))};
  if (c.bias) in.push_back(g->add_constant("b", random_tensor(dt, {c.m}, 3, -0.5, 0.5)));
  ir::Node* n = g->add_node("FusedConv", "conv", in, {"y"}, a, 1, "kiln");
  QuietLogger quiet;
  passes::PassContext ctx(quiet);
  EXPECT_TRUE(passes::make_shape_inference()->apply(*g, ctx).ok());
  inputs->assign({random_tensor(dt, c.x, 1)});
  if (c.residual) {
    ir::Value* z = add_residual_input(*g, n);
    inputs->push_back(random_tensor(dt, ops::static_dims(z->shape), 4));
  }
  g->outputs().push_back(n->outputs[0]);
  return g;
}

// The graph after conv1x1_as_gemm alone (every kernel assumed present): a Slice and a FusedMatMul in place of the
// convolution.
std::unique_ptr<ir::Graph> as_slice_gemm(const ir::Graph& g) {
  auto r = g.clone();
  QuietLogger quiet;
  passes::PassOptions o;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  passes::PassContext ctx(quiet, o);
  EXPECT_TRUE(passes::make_conv1x1_as_gemm()->apply(*r, ctx).ok());
  int slices = 0, gemms = 0, convs = 0;
  for (auto& n : r->nodes()) {
    slices += n->op_type == "Slice";
    gemms += n->op_type == "FusedMatMul";
    convs += n->op_type == "FusedConv";
  }
  EXPECT_EQ(slices, 1);
  EXPECT_EQ(gemms, 1);
  EXPECT_EQ(convs, 0);
  return r;
}

// The rewritten graph (Slice + FusedMatMul, activations after it where the GEMM epilogue has none) on the GPU
// against the original convolution on the CPU reference: FP32 (no TF32) and FP16, strides (2,2), (2,1), (3,3),
// odd and even sizes, with bias, residual, both or neither, ReLU inside the GEMM and SiLU after it.
TEST(GpuStridedConv1x1, RewrittenGraphMatchesConvolution) {
  KILN_REQUIRE_GPU();
  std::vector<ops::Epilogue> eps(3);
  eps[1].act = ops::Activation::kRelu;
  eps[2].act = ops::Activation::kSilu;
  std::vector<Strided1x1> cases;
  for (auto [sh, sw] : {std::pair<int64_t, int64_t>{2, 2}, {2, 1}, {3, 3}})
    for (auto x : {std::vector<int64_t>{2, 14, 14, 32}, std::vector<int64_t>{3, 15, 13, 40}})
      for (auto [bias, residual] : {std::pair{true, false}, {true, true}, {false, true}, {false, false}}) {
        Strided1x1 c;
        c.x = x, c.sh = sh, c.sw = sw, c.bias = bias, c.residual = residual;
        cases.push_back(c);
      }
  for (const auto& c : cases)
    for (DataType dt : {DataType::kFLOAT, DataType::kHALF})
      for (const auto& ep : eps) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + ops::activation_name(ep.act) + " x" + dims_to_string(c.x) +
                     " strides " + std::to_string(c.sh) + "," + std::to_string(c.sw) + (c.bias ? " bias" : "") +
                     (c.residual ? " residual" : ""));
        std::vector<Tensor> inputs;
        auto g = strided_1x1_graph(c, dt, ep, &inputs);
        auto rewritten = as_slice_gemm(*g);
        auto cpu = run_graph(*g, Backend::kCPU, inputs, nullptr);
        std::string host;
        auto gpu = run_graph(*rewritten, Backend::kCUDA, inputs, &host);
        EXPECT_TRUE(host.empty()) << "ran on the host: " << host;
        ASSERT_EQ(cpu.size(), 1u);
        ASSERT_EQ(gpu.size(), 1u);
        if (dt == DataType::kFLOAT)
          expect_tensors_close(cpu[0], gpu[0], 5e-4, 1e-4, "strided 1x1 as Slice + GEMM");
        else
          expect_tensors_close(cpu[0], gpu[0], 1e-2, 4e-3, "strided 1x1 as Slice + GEMM");
      }
}

// A resnet downsampling block from ONNX through the whole CUDA pipeline: in FP16 the 1x1 stride-2 shortcut runs as
// one Slice + GEMM (NHWC), in FP32 it stays a (cuDNN, NCHW) convolution; both against the CPU pipeline, even and
// odd sizes.
TEST(GpuStridedConv1x1, DownsampleBlockFromOnnxFp32AndFp16) {
  KILN_REQUIRE_GPU();
  for (int64_t hw : {28, 15}) {
    SCOPED_TRACE("hw " + std::to_string(hw));
    onnx::ModelProto m = test::downsample_block_cnn(4, hw, 64, 128);
    Tensor x = random_tensor(DataType::kFLOAT, {4, 8, hw, hw}, 14);
    OnnxRun cpu = run_onnx(m, Backend::kCPU, {}, x);
    ASSERT_EQ(cpu.out.size(), 1u);
    OnnxRun f32 = run_onnx(m, Backend::kCUDA, {}, x);
    ASSERT_EQ(f32.out.size(), 1u);
    EXPECT_TRUE(f32.host.empty()) << f32.host;
    EXPECT_EQ(f32.slices, 0);
    expect_tensors_close(cpu.out[0], f32.out[0], 1e-3, 1e-3, "CUDA FP32");
    OnnxRun f16 = run_onnx(m, Backend::kCUDA, {BuilderFlag::kFP16}, x);
    ASSERT_EQ(f16.out.size(), 1u);
    EXPECT_TRUE(f16.host.empty()) << f16.host;
    EXPECT_EQ(f16.slices, 1);
    EXPECT_EQ(f16.nhwc_convs, 3);  // the stem, the 3x3 stride-2 conv, and the shortcut GEMM
    EXPECT_EQ(f16.nchw_convs, 0);
    expect_tensors_close(cpu.out[0], f16.out[0], 3e-2, 3e-2, "CUDA FP16 strided 1x1 as Slice + GEMM");
  }
}

// resnet50's downsample convolutions in FP16 at batch 128 and 1 (layer2: 256->512 at 56x56, layer3: 512->1024 at
// 28x28, layer4: 1024->2048 at 14x14), the NHWC FusedConv (cuDNN) against the Slice + GEMM, and the Slice alone:
// prints the times (the prediction was 0.307/0.175 ms -> about 0.08/0.05 ms at batch 128) and checks the two agree.
TEST(GpuStridedConv1x1, ResnetDownsampleTimes) {
  KILN_REQUIRE_GPU();
  struct Layer {
    const char* name;
    int64_t hw, c, m;
  };
  for (int64_t batch : {128, 1})
    for (Layer l : {Layer{"layer2", 56, 256, 512}, Layer{"layer3", 28, 512, 1024}, Layer{"layer4", 14, 1024, 2048}}) {
      SCOPED_TRACE(std::string(l.name) + " batch " + std::to_string(batch));
      Strided1x1 c;
      c.x = {batch, l.hw, l.hw, l.c};
      c.m = l.m;
      std::vector<Tensor> inputs;
      auto g = strided_1x1_graph(c, DataType::kHALF, ops::Epilogue{}, &inputs);
      auto rewritten = as_slice_gemm(*g);
      // The Slice alone, as the pass makes it: x[:, ::2, ::2, :].
      ir::Graph slice_only;
      {
        ir::Value* x = slice_only.add_value("x");
        x->dtype = DataType::kHALF;
        x->shape = ops::shape_from_dims(c.x);
        x->rank_known = true;
        slice_only.inputs().push_back(x);
        auto ints = [&](const char* name, std::vector<int64_t> v) {
          return slice_only.add_constant(name, Tensor::from_vector<int64_t>({2}, v));
        };
        ir::Node* n = slice_only.add_node("Slice", "slice",
                                          {x, ints("starts", {0, 0}), ints("ends", {INT64_MAX, INT64_MAX}),
                                           ints("axes", {1, 2}), ints("steps", {2, 2})},
                                          {"y"}, {}, 13);
        QuietLogger quiet;
        passes::PassContext ctx(quiet);
        EXPECT_TRUE(passes::make_shape_inference()->apply(slice_only, ctx).ok());
        slice_only.outputs().push_back(n->outputs[0]);
      }
      const int runs = batch == 1 ? 200 : 20;
      Timed conv = time_on_gpu(*g, inputs, runs);
      Timed gemm = time_on_gpu(*rewritten, inputs, runs);
      Timed slice = time_on_gpu(slice_only, {inputs[0]}, runs);
      std::printf(
          "[ timing ] resnet50 %s downsample b%lld FP16: FusedConv %.1f us, Slice + GEMM %.1f us "
          "(Slice %.1f us, %.0f GB/s)\n",
          l.name, static_cast<long long>(batch), conv.us, gemm.us, slice.us,
          slice.us > 0 ? 2.0 * static_cast<double>(slice.y.nbytes()) / slice.us / 1e3 : 0.0);
      ASSERT_TRUE(conv.y.defined() && gemm.y.defined());
      expect_tensors_close(conv.y, gemm.y, 3e-2, 1e-2, "FusedConv vs Slice + GEMM");
    }
}

}  // namespace
}  // namespace kiln::gpu_testing
