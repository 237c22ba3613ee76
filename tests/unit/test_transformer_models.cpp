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

using namespace kiln;
using namespace kiln::test;

namespace {

// The input the export wrote (input.bin, with its dtype and shape from meta.json's first input).
Tensor read_input(const std::string& dir, const ir::Value& in) {
  std::ifstream f(dir + "/input.bin", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const int64_t item = static_cast<int64_t>(dtype_size(in.dtype));
  int64_t per_row = 1;
  for (size_t i = 1; i < in.shape.size(); ++i) per_row *= in.shape[i].value;
  Dims shape = {static_cast<int64_t>(bytes.size()) / (per_row * item)};
  for (size_t i = 1; i < in.shape.size(); ++i) shape.push_back(in.shape[i].value);
  Tensor t(in.dtype, shape);
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), bytes.size());
  std::memcpy(t.raw(), bytes.data(), std::min<size_t>(bytes.size(), t.nbytes()));
  return t;
}

// Attention blocks in the exported graph (one Softmax each in these models), and of them those whose head dim the
// CUDA fusion takes (32, 64 or 128: its tensor-core kernels; other head dims stay unfused by design). The head dim is
// the last dim of Q, the first operand of the MatMul the scores come from (through scale and mask nodes).
struct Blocks {
  int all = 0, fusable = 0;
};
Blocks attention_blocks(const ir::Graph& g) {
  Blocks b;
  for (const auto& n : g.nodes()) {
    if (n->op_type != "Softmax") continue;
    ++b.all;
    const ir::Node* p = n->inputs[0]->producer;
    while (p && p->op_type != "MatMul" && !p->inputs.empty()) {
      const ir::Value* next = nullptr;  // the non-constant operand of a scale or mask node
      for (const ir::Value* v : p->inputs)
        if (v && !v->is_constant() && v->producer && v->rank_known && v->shape.size() >= 3) next = v;
      p = next ? next->producer : nullptr;
    }
    if (!p || !p->inputs[0]->rank_known) continue;
    const ops::Dim& d = p->inputs[0]->shape.back();
    b.fusable += d.is_static() && (d.value == 32 || d.value == 64 || d.value == 128);
  }
  return b;
}

// Transposes of rank <= 4 whose result something other than Shape reads: the exporters' head-splitting and
// batch/sequence-first copies an engine would run (a layer that only feeds host-known values, such as a Shape of
// it, is skipped by the runtime; the rank-6 one that cuts ViT's image into patches is real work and not counted).
bool match_graph_output(const ir::Graph& g, const ir::Value* v) {
  return std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
}
int data_transposes(const ir::Graph& g) {
  int n = 0;
  for (const auto& node : g.nodes()) {
    if (node->op_type != "Transpose" || !node->outputs[0]->rank_known || node->outputs[0]->shape.size() > 4) continue;
    bool data = match_graph_output(g, node->outputs[0]);
    for (const ir::Node* u : node->outputs[0]->users) data |= u->op_type != "Shape";
    n += data;
  }
  return n;
}

void check_model(const std::string& dir) {
  SCOPED_TRACE(dir);
  auto g = import_onnx_file(dir + "/model.onnx");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->inputs().size(), 1u);
  const ir::Value& in = *g->inputs()[0];
  for (size_t i = 1; i < in.shape.size(); ++i) ASSERT_TRUE(in.shape[i].is_static()) << "only the batch is dynamic";
  const Tensor x = read_input(dir, in);
  auto cpu = g->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  const Blocks blocks = attention_blocks(*cpu);  // the CPU pipeline infers shapes and keeps attention unfused
  ASSERT_GT(blocks.all, 0) << "an export without attention";
  auto want = run_reference(*cpu, {x});
  ASSERT_EQ(want.size(), 1u);

  auto cuda = g->clone();
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.reduced_precision = DataType::kHALF;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  Status st = run_passes(*cuda, passes::pipeline_for(Backend::kCUDA), o);
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
  const Tensor a = want[0].cast(DataType::kFLOAT), b = got[0].cast(DataType::kFLOAT);
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = a.data<float>()[i] - b.data<float>()[i];
    num += d * d;
    den += static_cast<double>(a.data<float>()[i]) * a.data<float>()[i];
  }
  EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 1e-2) << "FP16 CUDA pipeline vs float32 CPU pipeline";
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
