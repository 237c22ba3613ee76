// Unit tests for conv_patchify_as_gemm: patch-embedding convolutions (kernel = stride) become a patch Transpose and a
// FusedMatMul; vit's token layout chain after them disappears, other readers still get NCHW, other convolutions stay;
// the results equal the original graph's on the reference kernels (and the exported vit's, when given).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cnn_onnx_model.h"
#include "passes/matcher.h"

using namespace kiln;
using namespace kiln::test;

namespace {

int count_perm(const ir::Graph& g, const std::vector<int64_t>& perm) {
  int k = 0;
  for (auto& n : g.nodes()) k += passes::match::perm_is(n.get(), perm);
  return k;
}

// After the whole CUDA pass list, FP32 and FP16: the convolution is one GEMM over the patch Transpose, and nothing
// transposes the tokens; the results match the CPU pipeline's graph at two batch sizes (the batch is dynamic).
TEST(ConvPatchifyAsGemm, VitStemBecomesOneGemmWithoutTokenTranspose) {
  onnx::ModelProto m = vit_stem(-1, 3, 32, 8, 48);
  auto cpu = import_onnx(m);
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
    SCOPED_TRACE(dtype_name(dt));
    auto cuda = import_onnx(m);
    Status st = run_cuda_pipeline(*cuda, dt);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(count_ops(*cuda, "Conv") + count_ops(*cuda, "FusedConv"), 0) << ir::print(*cuda);
    EXPECT_EQ(count_ops(*cuda, "FusedMatMul"), 1) << ir::print(*cuda);
    // The one Transpose gathers the patches (innermost runs of kw elements); no ToNhwc and no channel Pad.
    EXPECT_EQ(count_ops(*cuda, "Transpose"), 1) << ir::print(*cuda);
    EXPECT_EQ(count_perm(*cuda, {0, 2, 4, 1, 3, 5}), 1) << ir::print(*cuda);
    EXPECT_EQ(count_ops(*cuda, "ToNhwc") + count_ops(*cuda, "Pad"), 0) << ir::print(*cuda);
    // The GEMM reads the weight as it is stored ([OC, C*kh*kw], trans_b) and takes the conv's bias.
    const ir::Node* mm = find_op(*cuda, "FusedMatMul");
    ASSERT_NE(mm, nullptr);
    EXPECT_EQ(mm->attrs.get_int("trans_b", 0).value(), 1);
    ASSERT_EQ(mm->inputs.size(), 3u);
    EXPECT_EQ(mm->inputs[1]->constant->shape(), (std::vector<int64_t>{48, 3 * 8 * 8}));
    EXPECT_EQ(mm->inputs[0]->dtype, dt);
    EXPECT_EQ(cuda->outputs()[0]->name, "y");
    for (int64_t batch : {2, 3}) {
      SCOPED_TRACE("batch " + std::to_string(batch));
      const double tol = dt == DataType::kFLOAT ? 1e-5 : 2e-2;
      expect_same_on_reference(*cpu, *cuda, random_f32({batch, 3, 32, 32}, 7 + static_cast<uint32_t>(batch)), tol);
    }
  }
}

// A reader that wants the NCHW output (here a spatial mean) gets it through Reshape + Transpose(0,3,1,2) of the
// product, while the token chain still reads the product directly.
TEST(ConvPatchifyAsGemm, NchwReadersStillGetNchw) {
  onnx::ModelProto m = vit_stem(-1, 3, 32, 8, 48, /*nchw_reader=*/true);
  auto cpu = import_onnx(m);
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
    SCOPED_TRACE(dtype_name(dt));
    auto cuda = import_onnx(m);
    ASSERT_TRUE(run_cuda_pipeline(*cuda, dt).ok());
    EXPECT_EQ(count_ops(*cuda, "Conv") + count_ops(*cuda, "FusedConv"), 0) << ir::print(*cuda);
    EXPECT_EQ(count_ops(*cuda, "FusedMatMul"), 1) << ir::print(*cuda);
    EXPECT_EQ(count_perm(*cuda, {0, 2, 1}), 0) << ir::print(*cuda);
    EXPECT_EQ(count_perm(*cuda, {0, 3, 1, 2}), 1) << ir::print(*cuda);
    const double tol = dt == DataType::kFLOAT ? 1e-5 : 2e-2;
    expect_same_on_reference(*cpu, *cuda, random_f32({2, 3, 32, 32}, 21), tol);
  }
}

// x [2, c, 12, 12] -> Conv(kernel k, stride s, pads, dilation, group) -> Relu -> y, as an IR graph.
struct OneConv {
  ir::Graph g;
  Tensor x;
  OneConv(int64_t c, int64_t k, int64_t stride, int64_t pad = 0, int64_t dilation = 1, int64_t group = 1,
          int64_t hw = 12, const char* act = "Relu") {
    const int64_t m = 8;
    ir::Value* xv = graph_input(g, "x", {2, c, hw, hw});
    x = random_f32({2, c, hw, hw}, 1);
    Attributes a;
    a.set("strides", std::vector<int64_t>{stride, stride});
    a.set("pads", std::vector<int64_t>(4, pad));
    a.set("dilations", std::vector<int64_t>{dilation, dilation});
    a.set("group", group);
    ir::Value* y = g.add_node("Conv", "conv",
                              {xv, g.add_constant("w", random_f32({m, c / group, k, k}, 2)),
                               g.add_constant("b", random_f32({m}, 3))},
                              {"conv_out"}, a, 17)
                       ->outputs[0];
    ir::Node* r = g.add_node(act, "act", {y}, {"y"}, {}, 17);
    g.outputs().push_back(r->outputs[0]);
  }
};

passes::PassOptions cuda_options() {
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  return o;
}

// The pass alone, on plain graphs: the epilogue fusion's FusedConv (bias, activation) becomes the GEMM with the
// activation in its epilogue or, for those it lacks, after it; the NCHW result equals the convolution's.
TEST(ConvPatchifyAsGemm, FusedConvEpiloguesAndNchwResult) {
  for (const char* act : {"Relu", "Sigmoid", "Identity"}) {
    SCOPED_TRACE(act);
    OneConv c(3, 4, 4, 0, 1, 1, 12, act);
    ASSERT_TRUE(run_passes(c.g, {}).ok());
    auto want = run_reference(c.g, {c.x});
    ASSERT_TRUE(run_passes(c.g,
                           list_of(passes::make_remove_identity(), passes::make_fuse_conv_epilogue(),
                                   passes::make_conv_patchify_as_gemm()),
                           cuda_options())
                    .ok());
    EXPECT_EQ(count_ops(c.g, "Conv") + count_ops(c.g, "FusedConv"), 0) << ir::print(c.g);
    EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 1) << ir::print(c.g);
    EXPECT_EQ(count_perm(c.g, {0, 3, 1, 2}), 1) << ir::print(c.g);
    const ir::Node* mm = find_op(c.g, "FusedMatMul");
    ASSERT_NE(mm, nullptr);
    const std::string a = act;
    EXPECT_EQ(mm->attrs.get_string("activation", "").value(), a == "Relu" ? "relu" : "none");
    EXPECT_EQ(count_ops(c.g, "Sigmoid"), a == "Sigmoid" ? 1 : 0);
    EXPECT_EQ(c.g.outputs()[0]->name, "y");
    auto got = run_reference(c.g, {c.x});
    ASSERT_EQ(got.size(), 1u);
    expect_close(got[0], want[0], 1e-5, 1e-5);
  }
}

TEST(ConvPatchifyAsGemm, OtherConvolutionsStay) {
  struct Case {
    const char* what;
    int64_t c, k, stride, pad, dilation, group, hw;
  };
  for (Case cs : {Case{"padding", 3, 4, 4, 1, 1, 1, 12}, Case{"stride below the kernel", 3, 4, 2, 0, 1, 1, 12},
                  Case{"stride above the kernel", 3, 2, 4, 0, 1, 1, 12}, Case{"groups", 4, 4, 4, 0, 1, 2, 12},
                  Case{"dilation", 3, 2, 2, 0, 2, 1, 12}, Case{"size not a multiple", 3, 5, 5, 0, 1, 1, 12},
                  Case{"1x1", 3, 1, 1, 0, 1, 1, 12}, Case{"many channels, NCHW reader", 16, 2, 2, 0, 1, 1, 12}}) {
    SCOPED_TRACE(cs.what);
    OneConv c(cs.c, cs.k, cs.stride, cs.pad, cs.dilation, cs.group, cs.hw);
    ASSERT_TRUE(run_passes(c.g, list_of(passes::make_conv_patchify_as_gemm()), cuda_options()).ok());
    EXPECT_EQ(count_ops(c.g, "Conv"), 1) << ir::print(c.g);
    EXPECT_EQ(count_ops(c.g, "FusedMatMul"), 0) << ir::print(c.g);
  }
  // The CPU pipeline keeps its convolutions (its graph is the reference).
  OneConv c(3, 4, 4);
  passes::PassOptions cpu;
  ASSERT_TRUE(run_passes(c.g, list_of(passes::make_conv_patchify_as_gemm()), cpu).ok());
  EXPECT_EQ(count_ops(c.g, "Conv"), 1);
}

// A channels-last reader (torchvision's Swin and ConvNeXt stems permute the conv output to NHWC) reads the product
// as [N, Ho, Wo, OC]: no Transpose is left but the patches', and the convolution is taken whatever its channels.
TEST(ConvPatchifyAsGemm, NhwcReaderReadsTheProduct) {
  for (int64_t c : {3, 16}) {
    SCOPED_TRACE("channels " + std::to_string(c));
    OneConv conv(c, 2, 2, 0, 1, 1, 12, "Identity");
    ir::Graph& g = conv.g;
    ir::Node* id = g.outputs()[0]->producer;
    Attributes a;
    a.set("perm", std::vector<int64_t>{0, 2, 3, 1});
    ir::Node* t = g.add_node("Transpose", "to_nhwc", {id->inputs[0]}, {"nhwc"}, a, 17);
    g.set_node_input(id, 0, t->outputs[0]);
    ASSERT_TRUE(g.topo_sort().ok());
    ASSERT_TRUE(run_passes(g, {}).ok());
    auto want = run_reference(g, {conv.x});
    ASSERT_TRUE(run_passes(g, list_of(passes::make_conv_patchify_as_gemm()), cuda_options()).ok());
    EXPECT_EQ(count_ops(g, "Conv"), 0) << ir::print(g);
    EXPECT_EQ(count_ops(g, "Transpose"), 1) << ir::print(g);
    EXPECT_EQ(count_perm(g, {0, 2, 4, 1, 3, 5}), 1) << ir::print(g);
    auto got = run_reference(g, {conv.x});
    ASSERT_EQ(got.size(), 1u);
    expect_close(got[0], want[0], 1e-5, 1e-5);
  }
}

// A ConvNeXt-like stem (4x4 patches) feeding a 3x3 convolution through the whole CUDA FP16 pipeline: the product is
// NHWC already, so layout_nhwc cancels the Transpose back to NCHW against the 3x3 conv's Transpose to NHWC and no
// conversion into channels-last is left (no ToNhwc, no Transpose(0,2,3,1)), only the one back at the output.
TEST(ConvPatchifyAsGemm, PatchStemFeedingAnNhwcConvolution) {
  CnnBuilder b;
  add_graph_input(b.g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {2, 3, 32, 32}));
  onnx::NodeProto* stem;
  std::string s = b.node("Conv", {"x", b.init({16, 3, 4, 4}, -0.2f, 0.2f), b.init({16}, -0.5f, 0.5f)}, &stem);
  CnnBuilder::ints(stem, "kernel_shape", {4, 4});
  CnnBuilder::ints(stem, "strides", {4, 4});
  std::string y = b.node("Relu", {b.conv(s, 16, 16, 3)});
  add_onnx_node(b.g, "Identity", {y}, {"y"});
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {2, 16, 8, 8}));
  auto [cpu, cuda] = cpu_and_cuda_graphs(b.m);
  ASSERT_TRUE(cpu && cuda);
  EXPECT_EQ(count_ops(*cuda, "Conv"), 0) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "FusedConv"), 1) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "FusedMatMul"), 1) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "ToNhwc") + count_perm(*cuda, {0, 2, 3, 1}), 0) << ir::print(*cuda);
  EXPECT_EQ(count_perm(*cuda, {0, 3, 1, 2}), 1) << ir::print(*cuda);
  expect_same_on_reference(*cpu, *cuda, random_f32({2, 3, 32, 32}, 44), 3e-2);
}

// With many channels the patch convolution is still taken when only the token chain reads it (nothing NCHW left).
TEST(ConvPatchifyAsGemm, ManyChannelsWithOnlyTheTokenChain) {
  onnx::ModelProto m = vit_stem(-1, 16, 16, 4, 32);
  auto cpu = import_onnx(m);
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  auto cuda = import_onnx(m);
  ASSERT_TRUE(run_cuda_pipeline(*cuda, DataType::kFLOAT).ok());
  EXPECT_EQ(count_ops(*cuda, "Conv") + count_ops(*cuda, "FusedConv"), 0) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "Transpose"), 1) << ir::print(*cuda);
  expect_same_on_reference(*cpu, *cuda, random_f32({2, 16, 16, 16}, 33), 1e-5);
}

// The exported torchvision ViT (KILN_VIT_MODEL_DIRS = model directories with model.onnx, input.bin and output.bin,
// separated by ':'; `make test-models` sets it): its conv_proj becomes the GEMM, no Transpose of the tokens is left,
// and the FP16 CUDA graph computes PyTorch's logits on the reference kernels.
void check_vit(const std::string& dir) {
  SCOPED_TRACE(dir);
  auto read = [&](const char* file) {
    std::ifstream f(dir + "/" + file, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  std::vector<char> in = read("input.bin"), out = read("output.bin");
  const int64_t per_image = 3 * 224 * 224 * 4;
  ASSERT_TRUE(!in.empty() && in.size() % per_image == 0);
  const int64_t batch = static_cast<int64_t>(in.size()) / per_image;
  ASSERT_TRUE(!out.empty() && out.size() % (batch * 4) == 0);
  Tensor x(DataType::kFLOAT, {batch, 3, 224, 224}),
      want(DataType::kFLOAT, {batch, static_cast<int64_t>(out.size()) / (batch * 4)});
  std::memcpy(x.raw(), in.data(), in.size());
  std::memcpy(want.raw(), out.data(), out.size());
  std::ifstream f(dir + "/model.onnx", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(bytes));
  for (DataType dt : {DataType::kFLOAT, DataType::kHALF}) {
    SCOPED_TRACE(dtype_name(dt));
    auto g = import_onnx(m);
    Status st = run_cuda_pipeline(*g, dt);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(count_ops(*g, "Conv") + count_ops(*g, "FusedConv"), 0);
    EXPECT_EQ(count_ops(*g, "ToNhwc") + count_ops(*g, "Pad"), 0);
    EXPECT_EQ(count_perm(*g, {0, 2, 4, 1, 3, 5}), 1);
    EXPECT_EQ(count_perm(*g, {0, 2, 1}), 0);
    auto got = run_reference(*g, {x});
    ASSERT_EQ(got.size(), 1u);
    if (dt == DataType::kFLOAT)
      expect_close(got[0], want, 1e-3, 1e-3);
    else
      expect_close(got[0], want, 0.05, 0.05);
  }
}

TEST(ConvPatchifyAsGemm, ExportedVit) {
  const char* dirs = std::getenv("KILN_VIT_MODEL_DIRS");
  if (!dirs || !*dirs)
    GTEST_SKIP() << "set KILN_VIT_MODEL_DIRS to vit model directories (model.onnx, input.bin) to run";
  std::stringstream ss(dirs);
  for (std::string d; std::getline(ss, d, ':');)
    if (!d.empty()) check_vit(d);
}

}  // namespace
