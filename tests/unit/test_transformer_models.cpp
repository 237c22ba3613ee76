// The transformer exports `make test-models` writes with this machine's PyTorch (bert_ci, gpt_ci, vit_ci at
// opsets 13 and 17; KILN_TRANSFORMER_MODEL_DIRS = model directories separated by ':') through the CUDA FP16 pass
// list on the reference kernels: every attention block whose head dim the CUDA fusion takes becomes one
// FusedAttention (the exporter's form is what the pattern fusion must see through, whatever PyTorch version wrote
// it: Debian's 1.13 writes nn.MultiheadAttention sequence-first, with 3-D [B*H,S,D] operands) and the optimized
// graph computes what the CPU pipeline's graph computes. Skipped, saying so, when the variable is unset or empty.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cnn_test_util.h"
#include "kiln/builder.h"
#include "kiln/onnx_parser.h"
#include "onnx_model_util.h"
#include "transformer_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

void check_model(const std::string& dir) {
  SCOPED_TRACE(dir);
  auto g = import_onnx_file(dir + "/model.onnx");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->inputs().size(), 1u);
  const ir::Value& in = *g->inputs()[0];
  for (size_t i = 1; i < in.shape.size(); ++i) ASSERT_TRUE(in.shape[i].is_static()) << "only the batch is dynamic";
  const Tensor x = read_input(dir + "/input.bin", in);
  auto cpu = g->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  const Blocks blocks = attention_blocks(*cpu);  // the CPU pipeline infers shapes and keeps attention unfused
  ASSERT_GT(blocks.all, 0) << "an export without attention";
  ASSERT_GT(blocks.fusable, 0) << "the CI exports use head dims the fusion takes (else the counts below say nothing)";
  auto want = run_reference(*cpu, {x});
  ASSERT_EQ(want.size(), 1u);

  auto cuda = g->clone();
  Status st = run_cuda_pipeline(*cuda);  // FP16, every kernel assumed present
  ASSERT_TRUE(st.ok()) << st.message();
  const int fused = count_ops(*cuda, "FusedAttention");
  std::cout << dir << " float16: " << blocks.all << " attention blocks (" << blocks.fusable << " with head dims the "
            << "fusion takes) -> " << fused << " FusedAttention, " << count_ops(*cuda, "Softmax") << " Softmax, "
            << count_ops(*cuda, "Transpose") << " Transpose (" << data_transposes(*cuda) << " not only for a Shape), "
            << count_ops(*cuda, "MatMul") << " MatMul, " << cuda->nodes().size()
            << " nodes (CPU pipeline: " << cpu->nodes().size() << ")\n";
  EXPECT_EQ(fused, blocks.fusable) << "every attention block with a fusable head dim fused";
  EXPECT_EQ(count_ops(*cuda, "Softmax"), blocks.all - blocks.fusable);
  // Fully fused, the exporters' head-splitting and batch-first/sequence-first copies are all gone.
  if (blocks.fusable == blocks.all) {
    EXPECT_EQ(data_transposes(*cuda), 0);
  }
  auto got = run_reference(*cuda, {x});
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].shape(), want[0].shape());
  // FP16 activations against the float32 graph: relative L2 of the whole output.
  EXPECT_LT(relative_l2(want[0], got[0]), 1e-2) << "FP16 CUDA pipeline vs float32 CPU pipeline";
}

TEST(TransformerModels, AttentionFusedInEveryExport) {
  const char* dirs = std::getenv("KILN_TRANSFORMER_MODEL_DIRS");
  if (!dirs || !*dirs) GTEST_SKIP() << "KILN_TRANSFORMER_MODEL_DIRS is not set (`make test-models` sets it)";
  std::stringstream ss(dirs);
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty()) check_model(dir);
}

}  // namespace
