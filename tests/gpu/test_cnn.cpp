// GPU tests of the CNN path: kiln FusedConv (NCHW/NHWC, FP32/FP16, every epilogue) against the CPU reference, and
// a small CNN imported from ONNX through the whole CUDA pipeline (BN folding, epilogue fusion, FP16, NHWC).
#include "../unit/cnn_onnx_model.h"
#include "builder/engine_writer.h"
#include "gpu_test_util.h"
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
  int nhwc_convs = 0, nchw_convs = 0, transposes = 0, to_nhwc = 0, reduce_means = 0, token_gemms = 0;
};

OnnxRun run_onnx(const onnx::ModelProto& m, Backend backend, std::vector<BuilderFlag> flags, const Tensor& x) {
  OnnxRun r;
  QuietLogger quiet;
  std::string bytes;
  m.SerializeToString(&bytes);
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  Status st = parser.parse(bytes.data(), bytes.size());
  EXPECT_TRUE(st.ok()) << st.message();
  if (!st.ok()) return r;
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  config->clear_flag(BuilderFlag::kTF32);
  for (auto f : flags) config->set_flag(f);
  auto engine = test::load_engine(builder.build_serialized_network(*network, *config), quiet);
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

// efficientnet_b0's squeeze-excite block (C = 144, 28x28) through the whole CUDA FP16 pipeline: its global pool
// runs as a ReduceMean over the NHWC tensor's axes 1, 2 (the contiguous-column kernel), at batch 1 and 8.
TEST(GpuCnn, SqueezeExciteBlockFp16Nhwc) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {1, 8}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    onnx::ModelProto m = test::se_block_cnn(n, 28, 144);
    Tensor x = random_tensor(DataType::kFLOAT, {n, 8, 28, 28}, 12);
    OnnxRun cpu = run_onnx(m, Backend::kCPU, {}, x);
    OnnxRun f16 = run_onnx(m, Backend::kCUDA, {BuilderFlag::kFP16}, x);
    ASSERT_EQ(cpu.out.size(), 1u);
    ASSERT_EQ(f16.out.size(), 1u);
    EXPECT_TRUE(f16.host.empty()) << f16.host;
    EXPECT_EQ(f16.reduce_means, 1);
    expect_tensors_close(cpu.out[0], f16.out[0], 3e-2, 3e-2, "CUDA FP16 NHWC squeeze-excite");
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
      OnnxRun gpu = run_onnx(m, Backend::kCUDA, fp16 ? std::vector<BuilderFlag>{BuilderFlag::kFP16}
                                                     : std::vector<BuilderFlag>{}, x);
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

}  // namespace
}  // namespace kiln::gpu_testing
