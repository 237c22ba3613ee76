// fuse_norm_activation: which activations after a channels-last kiln GroupNormalization become its epilogue (graph
// before/after), that the fused node computes what the pair computed (CPU reference), and what it leaves alone.
#include <gtest/gtest.h>

#include "cnn_test_util.h"
#include "ops/layout_util.h"
#include "passes/pass.h"

using namespace kiln;
using namespace kiln::test;

namespace {

enum class Act { kSilu, kRelu, kSigmoid, kGeluErf };

// x [2, 5, 7, 24] -> kiln GroupNormalization (NHWC, 6 groups) -> activation -> y. `extra_reader`: the norm's
// output is a graph output too.
void build(ir::Graph& g, Act act, const std::string& norm_domain = "kiln", bool extra_reader = false) {
  ir::Value* x = graph_input(g, "x", {2, 5, 7, 24});
  Attributes a;
  a.set("num_groups", int64_t{6});
  a.set("epsilon", 1e-5f);
  if (norm_domain == "kiln") a.set("layout", std::string("NHWC"));
  ir::Value* scale = g.add_constant("scale", random_f32({24}, 2, 0.5f, 1.5f));
  ir::Value* bias = g.add_constant("bias", random_f32({24}, 3));
  ir::Value* y = op1(g, "GroupNormalization", {x, scale, bias}, a, norm_domain);
  if (norm_domain.empty()) y->producer->opset = 21;
  ir::Value* out = nullptr;
  switch (act) {
    case Act::kSilu:
      out = op1(g, "Mul", {y, op1(g, "Sigmoid", {y})});
      break;
    case Act::kRelu:
      out = op1(g, "Relu", {y});
      break;
    case Act::kSigmoid:
      out = op1(g, "Sigmoid", {y});
      break;
    case Act::kGeluErf: {
      Attributes ga;
      ga.set("approximate", std::string("none"));
      out = op1(g, "Gelu", {y}, ga);
      out->producer->opset = 20;
      break;
    }
  }
  g.outputs().push_back(out);
  if (extra_reader) g.outputs().push_back(y);
}

passes::PassList fusion() { return list_of(passes::make_fuse_norm_activation()); }

TEST(FuseNormActivation, ActivationBecomesTheGroupNormsEpilogue) {
  struct Case {
    Act act;
    const char* name;
    size_t removed;  // activation nodes that go
  };
  for (Case k : {Case{Act::kSilu, "silu", 2}, Case{Act::kRelu, "relu", 1}, Case{Act::kSigmoid, "sigmoid", 1},
                 Case{Act::kGeluErf, "gelu_erf", 1}}) {
    SCOPED_TRACE(k.name);
    ir::Graph g;
    build(g, k.act);
    ASSERT_TRUE(run_passes(g, {}).ok());
    auto before = g.clone();
    const size_t nodes = g.nodes().size();
    Status st = run_passes(g, fusion());
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(g.nodes().size(), nodes - k.removed) << ir::print(g);
    const ir::Node* norm = find_op(g, "GroupNormalization");
    ASSERT_NE(norm, nullptr);
    EXPECT_EQ(norm->domain, "kiln");
    EXPECT_EQ(norm->attrs.get_string("activation", "none").value(), k.name);
    EXPECT_EQ(norm->outputs[0], g.outputs()[0]) << "the norm writes the graph output under its name";
    const Attribute* from = norm->attrs.find(ops::kFusedFromAttr);
    ASSERT_NE(from, nullptr);
    EXPECT_EQ(from->strings().size(), k.removed + 1);
    const Tensor x = random_f32({2, 5, 7, 24}, 4, -3.f, 3.f);
    auto want = run_reference(*before, {x});
    auto got = run_reference(g, {x});
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    expect_close(got[0], want[0], 1e-5, 1e-5);
  }
}

TEST(FuseNormActivation, LeavesWhatItCannotFold) {
  {
    SCOPED_TRACE("the normalized value is read elsewhere too");
    ir::Graph g;
    build(g, Act::kSilu, "kiln", true);
    ASSERT_TRUE(run_passes(g, fusion()).ok());
    EXPECT_EQ(count_ops(g, "Sigmoid"), 1);
    EXPECT_EQ(find_op(g, "GroupNormalization")->attrs.get_string("activation", "none").value(), "none");
  }
  {
    SCOPED_TRACE("ONNX GroupNormalization (NCHW): its kernel has no epilogue");
    ir::Graph g;
    build(g, Act::kRelu, "");
    ASSERT_TRUE(run_passes(g, fusion()).ok());
    EXPECT_EQ(count_ops(g, "Relu"), 1);
  }
  {
    SCOPED_TRACE("an activation already fused: the second one stays");
    ir::Graph g;
    build(g, Act::kRelu);
    ir::Value* again = op1(g, "Sigmoid", {g.outputs()[0]});
    g.outputs()[0] = again;
    ASSERT_TRUE(run_passes(g, fusion()).ok());
    EXPECT_EQ(count_ops(g, "Relu"), 0);
    EXPECT_EQ(count_ops(g, "Sigmoid"), 1);
  }
}

}  // namespace
