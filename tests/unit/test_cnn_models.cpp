// Real torchvision CNN exports (KILN_CNN_MODEL_DIRS = model directories holding model.onnx and input.bin,
// separated by ':'; `make test-models` sets it to the CNNs it has just exported) through the CUDA pass list on the
// reference kernels: structure (every Conv fused and NHWC, no BatchNormalization, no layout Transpose left) and
// outputs against the CPU pipeline's graph. Skipped, saying so, when the variable is unset or empty.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cnn_test_util.h"
#include "kiln/builder.h"
#include "kiln/onnx_parser.h"
#include "onnx_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

void check_model(const std::string& dir) {
  SCOPED_TRACE(dir);
  auto g = import_onnx_file(dir + "/model.onnx");
  ASSERT_NE(g, nullptr);
  std::ifstream f(dir + "/input.bin", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const int64_t per_image = 3 * 224 * 224 * 4;
  ASSERT_EQ(bytes.size() % per_image, 0u);
  Tensor x(DataType::kFLOAT, {static_cast<int64_t>(bytes.size()) / per_image, 3, 224, 224});
  std::memcpy(x.raw(), bytes.data(), bytes.size());

  auto cpu = g->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  const int convs = count_ops(*cpu, "Conv");
  auto want = run_reference(*cpu, {x});
  ASSERT_EQ(want.size(), 1u);
  // FP32, FP16, and FP16 with SiLU/sigmoid in the GEMM epilogues (the builder's CUDA default), where
  // fuse_small_mlp makes each squeeze-excitation one FusedMlp.
  for (int variant = 0; variant < 3; ++variant) {
    const DataType dt = variant == 0 ? DataType::kFLOAT : DataType::kHALF;
    SCOPED_TRACE(std::string(dtype_name(dt)) + (variant == 2 ? " sigmoid acts" : ""));
    auto cuda = g->clone();
    passes::PassOptions o;
    o.backend = Backend::kCUDA;
    o.reduced_precision = dt;
    o.matmul_sigmoid_acts = variant == 2;
    o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
    Status st = run_passes(*cuda, passes::pipeline_for(Backend::kCUDA), o);
    ASSERT_TRUE(st.ok()) << st.message();
    // gemm: 1x1 convolutions that conv1x1_as_gemm turned into FusedMatMul on NHWC data (two a FusedMlp).
    int nhwc = 0, gemm = 0;
    for (auto& n : cuda->nodes()) {
      if (n->op_type == "FusedConv") nhwc += n->attrs.get_string("layout", "").value() == "NHWC";
      gemm += n->op_type == "FusedMatMul" && n->inputs[0]->shape.size() == 4;
      gemm += n->op_type == "FusedMlp" ? 2 : 0;
    }
    std::cout << dir << " " << dtype_name(dt) << ": " << convs << " Conv -> " << count_ops(*cuda, "FusedConv")
               << " FusedConv (" << nhwc << " NHWC), " << gemm << " as GEMMs, " << count_ops(*cuda, "Conv") << " Conv, "
              << count_ops(*cuda, "BatchNormalization") << " BN, " << count_ops(*cuda, "Transpose") << " Transpose, "
              << count_ops(*cuda, "FusedMlp") << " FusedMlp, " << cuda->nodes().size()
              << " nodes (CPU pipeline: " << cpu->nodes().size() << ")\n";
    if (variant == 2) {
      // Every squeeze-excitation (efficientnet_b0 has 16) is one FusedMlp that takes its pool: no ReduceMean is
      // left but the head's, and no GEMM reads a pooled [N, 1, 1, C] vector.
      const int se = dir.find("efficientnet") != std::string::npos ? 16 : 0;
      int squeezes = 0;
      for (auto& n : cuda->nodes()) {
        squeezes += n->op_type == "FusedMlp" && n->attrs.get_int("squeeze", 0).value() == 1;
        if (n->op_type == "FusedMatMul" && n->inputs[0]->shape.size() == 4) {
          EXPECT_FALSE(n->inputs[0]->shape[1] == ops::Dim(1) && n->inputs[0]->shape[2] == ops::Dim(1)) << n->name;
        }
      }
      EXPECT_EQ(count_ops(*cuda, "FusedMlp"), se);
      EXPECT_EQ(squeezes, se);
    }
    EXPECT_EQ(count_ops(*cuda, "BatchNormalization"), 0);
    EXPECT_EQ(count_ops(*cuda, "FusedConv") + count_ops(*cuda, "Conv") + gemm, convs);
    if (dt == DataType::kHALF) {
      EXPECT_GT(gemm, 0);
      EXPECT_EQ(nhwc + gemm, convs);
      // The one conversion into channels-last, at the input, is a kiln::ToNhwc (fuse_input_layout).
      EXPECT_EQ(count_ops(*cuda, "Transpose"), 0);
      EXPECT_EQ(count_ops(*cuda, "ToNhwc"), 1);
    }
    auto got = run_reference(*cuda, {x});
    ASSERT_EQ(got.size(), 1u);
    // Logits: FP32 differs from the unfused graph by summation order only; FP16 by its precision over ~50 layers.
    if (dt == DataType::kFLOAT)
      expect_close(got[0], want[0], 1e-3, 1e-3);
    else
      expect_close(got[0], want[0], 0.15, 0.05);
  }
}

TEST(CnnModels, CudaPassesOnExportedModels) {
  const char* dirs = std::getenv("KILN_CNN_MODEL_DIRS");
  if (!dirs || !*dirs) GTEST_SKIP() << "set KILN_CNN_MODEL_DIRS to model directories (model.onnx, input.bin) to run";
  std::stringstream ss(dirs);
  for (std::string d; std::getline(ss, d, ':');)
    if (!d.empty()) check_model(d);
}

}  // namespace
