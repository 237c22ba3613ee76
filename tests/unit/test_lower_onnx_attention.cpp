// lower_onnx_attention: the opset-23 Attention operator as kiln::FusedAttention in the CUDA pass list. Hand-built
// graphs check what is lowered and what is left (the lowered graph computed by the reference kernels against the
// operator's own reference kernel), and OnnxNodeTests runs the ONNX suite's Attention tests (expected outputs made
// by ONNX's reference implementation) through the whole CUDA pass list on the reference kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cnn_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "onnx/proto_convert.h"
#include "onnx_model_util.h"
#include "passes/pass.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using test::count_ops;
using test::find_op;
using test::graph_input;

constexpr int kOpset = 23;

struct AttnGraph {
  std::unique_ptr<ir::Graph> g = std::make_unique<ir::Graph>();
  std::vector<Tensor> inputs;
  ir::Node* node = nullptr;
};

// Q, K, V (and a mask) as graph inputs with random data, one Attention node, its first output the graph's.
AttnGraph attention(const std::vector<int64_t>& q, const std::vector<int64_t>& k, const std::vector<int64_t>& v,
                    Attributes a, const std::vector<int64_t>& mask = {}, DataType mask_type = DataType::kFLOAT,
                    int outputs = 1) {
  AttnGraph t;
  t.g->set_opset(kOpset);
  std::vector<ir::Value*> in = {graph_input(*t.g, "q", q), graph_input(*t.g, "k", k), graph_input(*t.g, "v", v)};
  t.inputs = {test::random_tensor(DataType::kFLOAT, q, 1), test::random_tensor(DataType::kFLOAT, k, 2),
              test::random_tensor(DataType::kFLOAT, v, 3)};
  if (!mask.empty()) {
    in.push_back(graph_input(*t.g, "mask", mask, mask_type));
    t.inputs.push_back(mask_type == DataType::kBOOL ? test::random_tensor(DataType::kBOOL, mask, 4)
                                                    : test::random_tensor(DataType::kFLOAT, mask, 4, -3, 0));
  }
  std::vector<std::string> outs = {"y"};
  for (int i = 1; i < outputs; ++i) outs.push_back("y" + std::to_string(i));
  t.node = t.g->add_node("Attention", "attn", in, outs, std::move(a), kOpset);
  t.g->outputs().push_back(t.node->outputs[0]);
  return t;
}

Attributes attrs(std::initializer_list<std::pair<const char*, Attribute>> kv) {
  Attributes a;
  for (const auto& [k, v] : kv) a.set(k, v);
  return a;
}

// The CUDA pass list (float32: results comparable with the operator's reference at float tolerance).
void lower_and_compare(AttnGraph& t, int want_lowered) {
  const std::vector<Tensor> want = test::run_reference(*t.g, t.inputs);
  ASSERT_TRUE(test::run_cuda_pipeline(*t.g, DataType::kFLOAT).ok());
  EXPECT_EQ(count_ops(*t.g, "FusedAttention"), want_lowered);
  EXPECT_EQ(count_ops(*t.g, "Attention"), 1 - want_lowered);
  const std::vector<Tensor> got = test::run_reference(*t.g, t.inputs);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) test::expect_close(got[i], want[i], 1e-5, 1e-4);
}

TEST(LowerOnnxAttention, FourDimensionalWithAdditiveMaskAndCausal) {
  AttnGraph t = attention({2, 3, 7, 16}, {2, 3, 9, 16}, {2, 3, 9, 8}, attrs({{"is_causal", Attribute(int64_t{1})}}),
                          {2, 1, 7, 9});
  lower_and_compare(t, 1);
  const ir::Node* f = find_op(*t.g, "FusedAttention");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attrs.get_int("causal", 0).value(), 1);
  EXPECT_FLOAT_EQ(f->attrs.get_float("scale", 0).value(), 0.25f);  // 1/sqrt(16)
  EXPECT_EQ(f->attrs.get_int("masked_rows_zero", 0).value(), 1);
}

TEST(LowerOnnxAttention, ThreeDimensionalReadsHeadsInPlace) {
  AttnGraph t = attention({2, 5, 4 * 8}, {2, 6, 4 * 8}, {2, 6, 4 * 4},
                          attrs({{"q_num_heads", Attribute(int64_t{4})},
                                 {"kv_num_heads", Attribute(int64_t{4})},
                                 {"scale", Attribute(0.3f)}}));
  lower_and_compare(t, 1);
  const ir::Node* f = find_op(*t.g, "FusedAttention");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attrs.get_string("qkv_layout").value(), "bshd");
  EXPECT_EQ(f->attrs.get_string("out_layout").value(), "bshd");
  EXPECT_FLOAT_EQ(f->attrs.get_float("scale", 0).value(), 0.3f);
  EXPECT_EQ(count_ops(*t.g, "Transpose"), 0);
}

// Grouped-query (K/V heads dividing Q's) and multi-query attention, 4-D and 3-D: FusedAttention reads K/V with
// their own head count.
TEST(LowerOnnxAttention, GroupedAndMultiQuery) {
  {
    AttnGraph t = attention({2, 6, 5, 8}, {2, 2, 7, 8}, {2, 2, 7, 8}, attrs({{"is_causal", Attribute(int64_t{1})}}),
                            {2, 1, 5, 7});
    lower_and_compare(t, 1);
  }
  {
    AttnGraph t = attention({2, 5, 4 * 8}, {2, 6, 1 * 8}, {2, 6, 1 * 4},
                            attrs({{"q_num_heads", Attribute(int64_t{4})}, {"kv_num_heads", Attribute(int64_t{1})}}));
    lower_and_compare(t, 1);
    EXPECT_EQ(count_ops(*t.g, "Transpose"), 0);
  }
}

// A bool mask with rows that hide every key: the operator gives zeros there, and so must the lowered graph.
TEST(LowerOnnxAttention, BoolMaskWithFullyMaskedRows) {
  AttnGraph t = attention({1, 2, 4, 8}, {1, 2, 5, 8}, {1, 2, 5, 8}, {}, {1, 1, 4, 5}, DataType::kBOOL);
  bool* m = t.inputs[3].data<bool>();
  for (int j = 0; j < 5; ++j) m[2 * 5 + j] = false;  // query 2 sees nothing
  m[0] = true;
  lower_and_compare(t, 1);
  const std::vector<Tensor> got = test::run_reference(*t.g, t.inputs);
  for (int h = 0; h < 2; ++h)
    for (int d = 0; d < 8; ++d) EXPECT_EQ(got[0].data<float>()[(h * 4 + 2) * 8 + d], 0.f);
}

// What the lowering cannot express stays the operator: KV cache inputs, a read present_key, softcap, a sliding
// window, a mask shorter than the keys (the operator pads it with -inf).
TEST(LowerOnnxAttention, FormsItLeavesAlone) {
  {
    AttnGraph t = attention({1, 2, 4, 8}, {1, 2, 4, 8}, {1, 2, 4, 8}, attrs({{"softcap", Attribute(5.0f)}}));
    lower_and_compare(t, 0);
  }
  {
    AttnGraph t = attention({1, 2, 4, 8}, {1, 2, 6, 8}, {1, 2, 6, 8}, {}, {1, 1, 4, 4});
    lower_and_compare(t, 0);
  }
  {
    AttnGraph t = attention({1, 2, 4, 8}, {1, 2, 4, 8}, {1, 2, 4, 8}, {}, {}, DataType::kFLOAT, 2);
    t.g->outputs().push_back(t.node->outputs[1]);  // present_key is read
    lower_and_compare(t, 0);
  }
  {
    AttnGraph t =
        attention({1, 2, 4, 8}, {1, 2, 4, 8}, {1, 2, 4, 8}, attrs({{"left_window_size", Attribute(int64_t{2})}}));
    t.g->set_opset(25);
    t.node->opset = 25;
    lower_and_compare(t, 0);
  }
}

// ---- the ONNX suite's Attention tests (pypi onnx's node tests; `make test-node` writes them and runs this) ----

// Tests whose every Attention the lowering must take: no KV cache, softcap, window or short mask.
const std::set<std::string> kMustLower = {
    "test_attention_3d",
    "test_attention_3d_attn_mask",
    "test_attention_3d_causal",
    "test_attention_3d_scaled",
    "test_attention_3d_diff_heads_sizes",
    "test_attention_3d_diff_heads_sizes_attn_mask",
    "test_attention_4d",
    "test_attention_4d_attn_mask",
    "test_attention_4d_attn_mask_3d",
    "test_attention_4d_attn_mask_4d_causal",
    "test_attention_4d_attn_mask_bool",
    "test_attention_4d_attn_mask_bool_4d",
    "test_attention_4d_causal",
    "test_attention_4d_fp16",
    "test_attention_4d_diff_heads_sizes",
    "test_attention_4d_diff_heads_sizes_causal",
    "test_attention_23_boolmask_fullymasked_row_nan_robustness",
    "test_attention_3d_gqa",
    "test_attention_3d_gqa_attn_mask",
    "test_attention_3d_gqa_causal",
    "test_attention_4d_gqa",
    "test_attention_4d_gqa_attn_mask",
    "test_attention_4d_gqa_causal",
};

TEST(LowerOnnxAttention, OnnxNodeTests) {
  const char* dir = std::getenv("KILN_ONNX_NODE_DIR");
  if (!dir || !*dir || !fs::is_directory(dir))
    GTEST_SKIP() << "KILN_ONNX_NODE_DIR (the pypi onnx node tests' directory) is not set; `make test-node` runs this";
  int tests = 0, lowered = 0, compared = 0;
  std::set<std::string> seen_must;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("test_attention", 0) != 0 || name.find("expanded") != std::string::npos) continue;
    const fs::path model = e.path() / "model.onnx", data = e.path() / "test_data_set_0";
    if (!fs::exists(model) || !fs::is_directory(data)) continue;
    SCOPED_TRACE(name);
    std::unique_ptr<ir::Graph> g = test::import_onnx_file(model.string());
    if (!g) continue;
    ++tests;
    std::vector<Tensor> inputs, want;
    for (size_t i = 0; i < g->inputs().size(); ++i)
      inputs.push_back(test::read_tensor_pb(data / ("input_" + std::to_string(i) + ".pb")));
    for (size_t i = 0; i < g->outputs().size(); ++i)
      want.push_back(test::read_tensor_pb(data / ("output_" + std::to_string(i) + ".pb")));
    const int before = count_ops(*g, "Attention");
    const Status st = test::run_cuda_pipeline(*g, DataType::kFLOAT);
    ASSERT_TRUE(st.ok()) << st.message();
    const int taken = before - count_ops(*g, "Attention");
    EXPECT_EQ(count_ops(*g, "FusedAttention"), taken);
    if (kMustLower.count(name)) {
      seen_must.insert(name);
      EXPECT_EQ(taken, before) << "not lowered";
    }
    if (taken == 0) continue;
    ++lowered;
    const std::vector<Tensor> got = test::run_reference(*g, inputs);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const bool half = want[i].dtype() == DataType::kHALF || want[i].dtype() == DataType::kBF16;
      test::expect_close(got[i], want[i], half ? 4e-3 : 1e-5, half ? 1e-2 : 1e-3);
    }
    ++compared;
  }
  std::cout << "ONNX Attention node tests: " << tests << ", lowered and compared: " << compared << "\n";
  EXPECT_EQ(seen_must.size(), kMustLower.size()) << "some named tests are missing from " << dir;
  EXPECT_GT(lowered, 0);
}

}  // namespace
}  // namespace kiln
