// fuse_groupnorm: torch's exported GroupNorm (Reshape [0, G, -1], InstanceNormalization, Reshape back by Shape(x) or
// a constant, Mul gamma, Add beta) becomes one GroupNormalization that computes what the exporter's nodes compute on
// the reference kernels (each of those ops is itself checked against the ONNX node tests); forms it must not take
// stay as they are.
#include <gtest/gtest.h>

#include <cstdio>

#include "builder/layout_choice.h"
#include "cnn_onnx_model.h"
#include "onnx_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

struct GnForm {
  bool dynamic_batch = false;  // x [N, C, H, W] with N symbolic: the back Reshape reads Shape(x)
  bool shape_back = true;      // Reshape back by Shape(x) (else by a constant)
  bool affine = true;          // Mul gamma [C,1,1], Add beta [C,1,1]
  int64_t groups = 4, view_groups = 4;
  std::vector<int64_t> gamma_shape = {8, 1, 1};
};

// x [2, 8, 5, 6] through the exporter's GroupNorm decomposition, then a Relu (a reader after the pattern).
std::unique_ptr<ir::Graph> exported_groupnorm(const GnForm& f) {
  auto g = std::make_unique<ir::Graph>();
  ops::Shape xs = {f.dynamic_batch ? ops::Dim::symbol("N") : ops::Dim(2), ops::Dim(8), ops::Dim(5), ops::Dim(6)};
  ir::Value* x = add_input(*g, "x", DataType::kFLOAT, xs);
  ir::Value* view = g->add_constant("view", Tensor::from_vector<int64_t>({3}, {0, f.view_groups, -1}));
  ir::Value* grouped = op1(*g, "Reshape", {x, view});
  Attributes in_attrs;
  in_attrs.set("epsilon", 1e-5f);
  ir::Value* norm = op1(*g, "InstanceNormalization",
                        {grouped, g->add_constant("s", random_f32({f.view_groups}, 3, 0.5f, 1.5f)),
                         g->add_constant("b", random_f32({f.view_groups}, 4, -0.5f, 0.5f))},
                        in_attrs);
  ir::Value* back_shape = f.shape_back ? op1(*g, "Shape", {x})
                                       : g->add_constant("back", Tensor::from_vector<int64_t>({4}, {2, 8, 5, 6}));
  ir::Value* y = op1(*g, "Reshape", {norm, back_shape});
  if (f.affine) {
    y = op1(*g, "Mul", {y, g->add_constant("gamma", random_f32(f.gamma_shape, 5, 0.5f, 2.f))});
    y = op1(*g, "Add", {g->add_constant("beta", random_f32(f.gamma_shape, 6, -1.f, 1.f)), y});
  }
  g->outputs().push_back(op1(*g, "Relu", {y}));
  return g;
}

// Fuses a copy; returns it. The original's and the copy's outputs agree on the reference kernels.
std::unique_ptr<ir::Graph> fused_and_checked(const ir::Graph& src, bool expect_fused) {
  auto before = src.clone();
  EXPECT_TRUE(run_passes(*before, {}).ok());
  auto after = src.clone();
  Status st = run_passes(*after, list_of(passes::make_fuse_groupnorm(), passes::make_dead_code_elimination()));
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(count_ops(*after, "GroupNormalization"), expect_fused ? 1 : 0) << ir::print(*after);
  EXPECT_EQ(count_ops(*after, "InstanceNormalization"), expect_fused ? 0 : 1);
  const Tensor x = random_f32({2, 8, 5, 6}, 9, -3.f, 3.f);
  auto want = run_reference(*before, {x});
  auto got = run_reference(*after, {x});
  EXPECT_EQ(want.size(), 1u);
  if (want.size() == 1 && got.size() == 1) expect_close(got[0], want[0], 1e-5, 1e-5);
  return after;
}

TEST(FuseGroupNorm, TorchExportFormsBecomeOneGroupNormalization) {
  for (bool dynamic : {false, true})
    for (bool shape_back : {true, false}) {
      if (dynamic && !shape_back) continue;  // a constant back shape implies a static batch
      SCOPED_TRACE(std::string(dynamic ? "dynamic batch" : "static batch") + (shape_back ? ", Shape(x)" : ", constant"));
      GnForm f;
      f.dynamic_batch = dynamic;
      f.shape_back = shape_back;
      auto after = fused_and_checked(*exported_groupnorm(f), true);
      if (HasFailure()) return;
      // Only the GroupNormalization and the reader remain (no Mul/Add, Shape or Reshape).
      EXPECT_EQ(after->nodes().size(), 2u) << ir::print(*after);
      for (auto& n : after->nodes())
        if (n->op_type == "GroupNormalization") {
          EXPECT_EQ(n->attrs.get_int("num_groups").value(), 4);
          EXPECT_EQ(n->inputs[1]->constant->numel(), 8) << "per-channel scale (opset 21's form)";
        }
    }
}

TEST(FuseGroupNorm, WithoutAffineAndWithGammaAsAVector) {
  GnForm plain;
  plain.affine = false;
  fused_and_checked(*exported_groupnorm(plain), true);
  GnForm four_d;
  four_d.gamma_shape = {1, 8, 1, 1};
  fused_and_checked(*exported_groupnorm(four_d), true);
}

TEST(FuseGroupNorm, FormsThatAreNotAGroupNormStay) {
  // Groups that do not divide the channels: the view is not a grouping of whole channels.
  GnForm odd;
  odd.view_groups = 3;
  auto g = exported_groupnorm(odd);
  // [0, 3, -1] over 8 channels is still a valid reshape (8*30 = 3*80), just not a GroupNorm.
  fused_and_checked(*g, false);
  // Gamma per element, not per channel.
  GnForm per_element;
  per_element.gamma_shape = {8, 5, 6};
  auto after = fused_and_checked(*exported_groupnorm(per_element), true);
  // The norm fuses, the per-element Mul/Add stay after it.
  EXPECT_EQ(count_ops(*after, "Mul"), 1);
  EXPECT_EQ(count_ops(*after, "Add"), 1);
}

// Through the whole CUDA pipeline in FP16 (reference kernels): the fused layer survives lowering and computes the
// float32 graph's result within FP16 rounding.
TEST(FuseGroupNorm, CudaPipelineFloat16) {
  GnForm f;
  f.dynamic_batch = true;
  auto src = exported_groupnorm(f);
  auto cpu = src->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  auto cuda = src->clone();
  Status st = run_cuda_pipeline(*cuda);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(count_ops(*cuda, "GroupNormalization"), 1) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "InstanceNormalization"), 0);
  expect_same_on_reference(*cpu, *cuda, random_f32({2, 8, 5, 6}, 19, -3.f, 3.f), 2e-2);
}


// An export of torch.nn.GroupNorm (Conv -> GroupNorm(4, 32) -> SiLU, dynamic batch) written by the PyTorch on the
// machine (KILN_GROUPNORM_ONNX names it; `make test-models` writes it): fused through the CUDA FP16 pipeline.
TEST(FuseGroupNorm, TorchExport) {
  const char* path = std::getenv("KILN_GROUPNORM_ONNX");
  if (!path || !*path) GTEST_SKIP() << "KILN_GROUPNORM_ONNX is not set (`make test-models` sets it)";
  auto g = import_onnx_file(path);
  ASSERT_NE(g, nullptr);
  auto cpu = g->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  const int norms = count_ops(*cpu, "InstanceNormalization");
  EXPECT_GE(norms, 1) << "the export's form (CPU pipeline: unfused)";
  auto cuda = g->clone();
  Status st = run_cuda_pipeline(*cuda);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(count_ops(*cuda, "GroupNormalization"), norms) << ir::print(*cuda);
  EXPECT_EQ(count_ops(*cuda, "InstanceNormalization"), 0);
  std::printf("%s: %d GroupNorms fused, %zu layout regions, %zu nodes (CPU pipeline %zu)\n", path, norms,
              builder::layout_regions(*cuda).size(), cuda->nodes().size(), cpu->nodes().size());
  if (std::getenv("KILN_GROUPNORM_STRUCTURE_ONLY")) return;  // large exports: the reference kernels are slow
  std::vector<int64_t> dims;
  for (const ops::Dim& d : g->inputs()[0]->shape) dims.push_back(d.is_static() ? d.value : 2);
  expect_same_on_reference(*cpu, *cuda, random_f32(dims, 29, -2.f, 2.f), 3e-2);
}


// The CUDA FP16 pass list on an ONNX conv-GroupNorm-SiLU-conv (cnn_onnx_model.h; GpuTuning's
// GroupNormExportFusesAndRunsChannelsLast builds the same model on the GPU): the GroupNorm fuses; by the rule it
// separates two layout regions (2 Transposes between the convolutions), channels-last (nhwc_groupnorm) it joins
// them (only the output's Transpose left) and applies the SiLU after it. Both compute the float32 CPU pipeline's result within FP16 rounding.
TEST(FuseGroupNorm, CudaPipelineChannelsLastJoinsTheConvolutions) {
  auto g = import_onnx(groupnorm_cnn());
  ASSERT_NE(g, nullptr);
  auto cpu = g->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  const Tensor x = random_f32({4, 3, 32, 32}, 51, -2.f, 2.f);
  auto want = run_reference(*cpu, {x});
  ASSERT_EQ(want.size(), 1u);
  for (bool nhwc_gn : {false, true}) {
    SCOPED_TRACE(nhwc_gn ? "channels-last GroupNorm" : "NCHW GroupNorm");
    passes::PassOptions o;
    o.backend = Backend::kCUDA;
    o.reduced_precision = DataType::kHALF;
    o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
    o.nhwc_groupnorm = nhwc_gn;
    auto cuda = g->clone();
    Status st = run_passes(*cuda, passes::pipeline_for(Backend::kCUDA), o);
    ASSERT_TRUE(st.ok()) << st.message();
    int gn = 0, kiln_gn = 0;
    for (auto& n : cuda->nodes()) {
      gn += n->op_type == "GroupNormalization" && n->domain.empty();
      kiln_gn += n->op_type == "GroupNormalization" && n->domain == "kiln";
    }
    EXPECT_EQ(gn, nhwc_gn ? 0 : 1) << ir::print(*cuda);
    EXPECT_EQ(kiln_gn, nhwc_gn ? 1 : 0);
    if (nhwc_gn) {
      // fuse_norm_activation: the SiLU after it is its epilogue, no Pointwise kernel of its own.
      const ir::Node* norm = find_op(*cuda, "GroupNormalization");
      ASSERT_NE(norm, nullptr);
      EXPECT_EQ(norm->attrs.get_string("activation", "none").value(), "silu") << ir::print(*cuda);
      EXPECT_EQ(count_ops(*cuda, "Pointwise"), 0) << ir::print(*cuda);
    }
    EXPECT_EQ(count_ops(*cuda, "InstanceNormalization"), 0);
    // The output's Transpose back to NCHW stays; by the rule also the first region's exit before the GroupNorm
    // (the second region's entry became a kiln::ToNhwc).
    EXPECT_EQ(count_ops(*cuda, "Transpose"), nhwc_gn ? 1 : 2) << ir::print(*cuda);
    EXPECT_EQ(builder::layout_regions(*cuda).size(), nhwc_gn ? 1u : 2u);
    auto got = run_reference(*cuda, {x});
    ASSERT_EQ(got.size(), 1u);
    EXPECT_LT(relative_l2(want[0], got[0].cast(DataType::kFLOAT)), 1e-2);
  }
}

}  // namespace
