// pad_gemm_width and kiln::Unpad: the op's reference against slicing done here, the pass's graphs (which GEMMs it
// pads, the Cast it absorbs) and their results against the unpadded graph's, and an engine with Unpad on the CPU.
#include <gtest/gtest.h>

#include "builder/engine_writer.h"
#include "cnn_test_util.h"
#include "engine_io_util.h"
#include "env_switch_test_util.h"
#include "ops/op_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

Tensor run_unpad(const Tensor& x, int64_t width, DataType to, bool set_to, Status* st) {
  Attributes a;
  a.set("width", width);
  if (set_to) a.set("to", ops::onnx_code_of(to));
  std::vector<Tensor> out(1);
  ops::ComputeContext c(a, 1, {&x}, &out);
  *st = ops::OpRegistry::instance().find("Unpad", "kiln")->compute(c);
  return out[0];
}

TEST(UnpadOp, KeepsTheFirstColumnsOfEveryRowAndConverts) {
  struct Case {
    DataType in, to;
    bool set_to;
  };
  for (Case cs : {Case{DataType::kFLOAT, DataType::kFLOAT, false}, Case{DataType::kHALF, DataType::kFLOAT, true},
                  Case{DataType::kBF16, DataType::kFLOAT, true}, Case{DataType::kFLOAT, DataType::kHALF, true}}) {
    SCOPED_TRACE(std::string(dtype_name(cs.in)) + " -> " + dtype_name(cs.to));
    const Tensor x = random_tensor(cs.in, {2, 3, 16}, 5);
    Status st;
    Tensor y = run_unpad(x, 11, cs.to, cs.set_to, &st);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(y.dtype(), cs.to);
    ASSERT_EQ(y.shape(), (std::vector<int64_t>{2, 3, 11}));
    // The slice x[..., :11], element by element, then the type conversion Cast does.
    Tensor want(cs.in, {2, 3, 11});
    Tensor xd = x.cast(DataType::kDOUBLE), wd(DataType::kDOUBLE, {2, 3, 11});
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t j = 0; j < 11; ++j) wd.data<double>()[r * 11 + j] = xd.data<double>()[r * 16 + j];
    expect_close(y, wd.cast(cs.in).cast(cs.to), 0);
  }
}

TEST(UnpadOp, InferenceKeepsLeadingDimsAndRejectsTooWide) {
  ir::Graph g;
  ir::Value* x = add_input(g, "x", DataType::kHALF, {ops::Dim::symbol("batch"), ops::Dim(7), ops::Dim(1008)});
  Attributes a;
  a.set("width", int64_t{1001});
  a.set("to", ops::onnx_code_of(DataType::kFLOAT));
  ir::Node* n = g.add_node("Unpad", "u", {x}, {"y"}, a, 1, "kiln");
  g.outputs().push_back(n->outputs[0]);
  ASSERT_TRUE(run_passes(g, {}).ok());
  const ir::Value* y = g.outputs()[0];
  EXPECT_EQ(y->dtype, DataType::kFLOAT);
  ASSERT_EQ(y->shape.size(), 3u);
  EXPECT_EQ(y->shape[0], ops::Dim::symbol("batch"));
  EXPECT_EQ(y->shape[2], ops::Dim(1001));
  Status st;
  run_unpad(random_tensor(DataType::kFLOAT, {2, 8}, 1), 9, DataType::kFLOAT, false, &st);
  EXPECT_FALSE(st.ok()) << "width beyond X's last dim";
}

passes::PassOptions cuda_options() {
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  return o;
}

Status pad(ir::Graph& g, DataType reduced = DataType::kFLOAT) {
  passes::PassOptions o = cuda_options();
  o.reduced_precision = reduced;
  return run_passes(g, list_of(passes::make_pad_gemm_width(), passes::make_dead_code_elimination()), o);
}

// x [2, seq, k] float32 -> MatMul(x, W [k, n]) -> y (a graph output).
struct LmHead {
  ir::Graph g;
  std::vector<Tensor> inputs;
  LmHead(int64_t k, int64_t n, int64_t seq = 5) {
    ir::Value* x = graph_input(g, "x", {2, seq, k});
    inputs.push_back(random_f32({2, seq, k}, 1));
    ir::Node* m = g.add_node("MatMul", "lm_head", {x, g.add_constant("w", random_f32({k, n}, 2))}, {"y"}, {}, 17);
    g.outputs().push_back(m->outputs[0]);
  }
};

TEST(PadGemmWidth, OddWidthMatMulWritesPaddedRowsAndUnpadKeepsTheOutput) {
  LmHead h(64, 1001);
  auto before = h.g.clone();
  ASSERT_TRUE(pad(h.g).ok());
  const ir::Node* mm = find_op(h.g, "MatMul");
  const ir::Node* u = find_op(h.g, "Unpad");
  ASSERT_NE(mm, nullptr);
  ASSERT_NE(u, nullptr) << ir::print(h.g);
  EXPECT_EQ(mm->name, "lm_head") << "the GEMM keeps its layer name";
  // float32: 1001 columns padded to the next multiple of 4 (16 bytes).
  EXPECT_EQ(mm->inputs[1]->constant->shape(), (std::vector<int64_t>{64, 1004}));
  EXPECT_EQ(mm->outputs[0]->shape.back(), ops::Dim(1004));
  EXPECT_EQ(u->inputs[0], mm->outputs[0]);
  EXPECT_EQ(u->attrs.get_int("width", 0).value(), 1001);
  EXPECT_FALSE(u->attrs.has("to"));
  ASSERT_EQ(h.g.outputs().size(), 1u);
  EXPECT_EQ(h.g.outputs()[0], u->outputs[0]);
  EXPECT_EQ(h.g.outputs()[0]->name, "y");
  EXPECT_EQ(h.g.outputs()[0]->shape.back(), ops::Dim(1001));
  // The padding columns are zero and the kept ones are W's.
  const Tensor wp = h.g.find_value(mm->inputs[1]->name)->constant->cast(DataType::kDOUBLE);
  const Tensor w = before->find_value("w")->constant->cast(DataType::kDOUBLE);
  for (int64_t k = 0; k < 64; ++k)
    for (int64_t j = 0; j < 1004; ++j)
      ASSERT_EQ(wp.data<double>()[k * 1004 + j], j < 1001 ? w.data<double>()[k * 1001 + j] : 0.0) << k << "," << j;
  EXPECT_EQ(h.g.find_value("w"), nullptr) << "the unpadded weight is dead";
  expect_close(run_reference(h.g, h.inputs)[0], run_reference(*before, h.inputs)[0], 1e-5, 1e-5);
}

// gpt2's case through the whole CUDA pipeline in FP16: MatMul + bias + GELU become a FusedMatMul, lowering adds
// the float32 output Cast, and Unpad takes it: no Cast and no Pointwise layer remain.
TEST(PadGemmWidth, CudaPipelineAbsorbsTheOutputCast) {
  for (DataType reduced : {DataType::kHALF, DataType::kBF16, DataType::kFLOAT}) {
    SCOPED_TRACE(dtype_name(reduced));
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {2, 8, 64});
    ir::Value* mm = op1(g, "MatMul", {x, g.add_constant("w", random_f32({64, 5001}, 3, -0.2f, 0.2f))});
    ir::Value* h =
        g.add_node("Add", "bias", {mm, g.add_constant("b", random_f32({5001}, 4))}, {"h"}, {}, 17)->outputs[0];
    Attributes ga;
    ga.set("approximate", std::string("tanh"));
    g.outputs().push_back(g.add_node("Gelu", "gelu", {h}, {"logits"}, ga, 20)->outputs[0]);
    std::vector<Tensor> in = {random_f32({2, 8, 64}, 5)};
    auto before = g.clone();
    Status st = run_cuda_pipeline(g, reduced);
    ASSERT_TRUE(st.ok()) << st.message();
    const ir::Node* f = find_op(g, "FusedMatMul");
    const ir::Node* u = find_op(g, "Unpad");
    ASSERT_NE(f, nullptr) << ir::print(g);
    ASSERT_NE(u, nullptr) << ir::print(g);
    // 5001 >= 4096: rows padded to a multiple of 64 elements.
    EXPECT_EQ(f->inputs[1]->constant->shape(), (std::vector<int64_t>{64, 5056}));
    EXPECT_EQ(f->inputs[2]->constant->shape(), (std::vector<int64_t>{5056}));
    EXPECT_EQ(f->outputs[0]->dtype, reduced);
    // Unpad is the GEMM's only reader; besides the two only the input's lowering Cast remains.
    const bool lowered = reduced != DataType::kFLOAT;
    EXPECT_EQ(f->outputs[0]->users, std::vector<ir::Node*>{const_cast<ir::Node*>(u)});
    EXPECT_EQ(g.nodes().size(), lowered ? 3u : 2u) << ir::print(g);
    EXPECT_EQ(g.outputs()[0]->shape.back(), ops::Dim(5001));
    EXPECT_EQ(g.outputs()[0], u->outputs[0]);
    EXPECT_EQ(g.outputs()[0]->name, "logits");
    EXPECT_EQ(g.outputs()[0]->dtype, DataType::kFLOAT);
    EXPECT_EQ(u->attrs.has("to"), lowered);
    const double tol = reduced == DataType::kFLOAT ? 1e-5 : reduced == DataType::kHALF ? 2e-2 : 1e-1;
    expect_close(run_reference(g, in)[0], run_reference(*before, in)[0], tol, tol);
  }
}

// Through the pipeline with a reader other than the output Cast: Unpad keeps the lowered type and the Tanh (with
// the output's Cast, one Pointwise kernel) reads the compact value.
TEST(PadGemmWidth, CudaPipelineWithAnotherReader) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {64, 64});
  ir::Value* mm = op1(g, "MatMul", {x, g.add_constant("w", random_f32({64, 1001}, 14, -0.1f, 0.1f))});
  g.outputs().push_back(g.add_node("Tanh", "tanh", {mm}, {"y"}, {}, 17)->outputs[0]);
  std::vector<Tensor> in = {random_f32({64, 64}, 15, -2, 2)};
  auto before = g.clone();
  Status st = run_cuda_pipeline(g, DataType::kHALF);
  ASSERT_TRUE(st.ok()) << st.message();
  const ir::Node* u = find_op(g, "Unpad");
  ASSERT_NE(u, nullptr) << ir::print(g);
  EXPECT_EQ(u->outputs[0]->dtype, DataType::kHALF);
  EXPECT_EQ(u->inputs[0]->shape.back(), ops::Dim(1008));
  ASSERT_EQ(u->outputs[0]->users.size(), 1u);
  EXPECT_EQ(u->outputs[0]->users[0]->op_type, "Pointwise") << ir::print(g);
  expect_close(run_reference(g, in)[0], run_reference(*before, in)[0], 1e-2, 1e-2);
}

// A weight stored [N, K] (Gemm's transB, FusedMatMul's trans_b) is padded with zero rows.
TEST(PadGemmWidth, TransposedWeightGetsZeroRows) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {6, 32});
  Attributes a;
  a.set("trans_b", int64_t{1});
  a.set("activation", std::string("relu"));
  ir::Node* n =
      g.add_node("FusedMatMul", "head",
                 {x, g.add_constant("w", random_f32({777, 32}, 6)), g.add_constant("b", random_f32({777}, 7))}, {"y"},
                 a, 1, "kiln");
  g.outputs().push_back(n->outputs[0]);
  std::vector<Tensor> in = {random_f32({6, 32}, 8)};
  auto before = g.clone();
  ASSERT_TRUE(pad(g).ok());
  const ir::Node* f = find_op(g, "FusedMatMul");
  ASSERT_NE(find_op(g, "Unpad"), nullptr) << ir::print(g);
  EXPECT_EQ(f->inputs[1]->constant->shape(), (std::vector<int64_t>{780, 32}));
  EXPECT_EQ(f->inputs[2]->constant->shape(), (std::vector<int64_t>{780}));
  expect_close(run_reference(g, in)[0], run_reference(*before, in)[0], 1e-5, 1e-5);
}

// The compacted value feeds something other than a Cast: Unpad keeps the GEMM's type and the reader reads it.
TEST(PadGemmWidth, OtherReadersReadTheCompactValue) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {4, 48});
  ir::Value* mm =
      g.add_node("MatMul", "mm", {x, g.add_constant("w", random_f32({48, 2003}, 9))}, {"m"}, {}, 17)->outputs[0];
  ir::Value* r = op1(g, "Relu", {mm});
  g.outputs().push_back(g.add_node("Softmax", "sm", {r}, {"p"}, {}, 17)->outputs[0]);
  g.outputs().push_back(mm);  // and a graph output itself
  std::vector<Tensor> in = {random_f32({4, 48}, 10)};
  auto before = g.clone();
  ASSERT_TRUE(pad(g).ok());
  const ir::Node* u = find_op(g, "Unpad");
  ASSERT_NE(u, nullptr) << ir::print(g);
  EXPECT_FALSE(u->attrs.has("to"));
  EXPECT_EQ(find_op(g, "Relu")->inputs[0], u->outputs[0]);
  EXPECT_EQ(g.outputs()[1], u->outputs[0]);
  EXPECT_EQ(g.outputs()[1]->name, "m");
  EXPECT_EQ(g.outputs()[1]->shape.back(), ops::Dim(2003));
  EXPECT_EQ(find_op(g, "MatMul")->outputs[0]->shape.back(), ops::Dim(2004));
  auto want = run_reference(*before, in), got = run_reference(g, in);
  ASSERT_EQ(got.size(), 2u);
  expect_close(got[0], want[0], 1e-6, 1e-5);
  expect_close(got[1], want[1], 1e-5, 1e-5);
}

// A Cast that is one of two readers stays: Unpad cannot take it without leaving the other reader a padded value.
TEST(PadGemmWidth, CastWithAnotherReaderStays) {
  ir::Graph g;
  ir::Value* x = graph_input(g, "x", {4, 48});
  ir::Value* mm =
      g.add_node("MatMul", "mm", {x, g.add_constant("w", random_f32({48, 1001}, 11))}, {"m"}, {}, 17)->outputs[0];
  Attributes ca;
  ca.set("to", ops::onnx_code_of(DataType::kHALF));
  g.outputs().push_back(g.add_node("Cast", "c", {mm}, {"h"}, ca, 17)->outputs[0]);
  g.outputs().push_back(op1(g, "Relu", {mm}));
  std::vector<Tensor> in = {random_f32({4, 48}, 12)};
  auto before = g.clone();
  ASSERT_TRUE(pad(g).ok());
  ASSERT_EQ(count_ops(g, "Unpad"), 1) << ir::print(g);
  EXPECT_EQ(count_ops(g, "Cast"), 1);
  EXPECT_EQ(find_op(g, "Cast")->inputs[0], find_op(g, "Unpad")->outputs[0]);
  auto want = run_reference(*before, in), got = run_reference(g, in);
  expect_close(got[0], want[0], 1e-2, 1e-3);
  expect_close(got[1], want[1], 1e-5, 1e-5);
}

TEST(PadGemmWidth, LeavesAlignedNarrowNonConstantAndResidualGemmsAlone) {
  // Aligned: 1000 float32 columns are 4000 bytes; 1000 halves after lowering would be 2000.
  {
    LmHead h(64, 1000);
    ASSERT_TRUE(pad(h.g).ok());
    EXPECT_EQ(count_ops(h.g, "Unpad"), 0);
  }
  // Narrow: under 512 columns.
  {
    LmHead h(64, 509);
    ASSERT_TRUE(pad(h.g).ok());
    EXPECT_EQ(count_ops(h.g, "Unpad"), 0);
  }
  // B not a constant.
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {4, 64});
    ir::Value* w = graph_input(g, "w", {64, 1001});
    g.outputs().push_back(g.add_node("MatMul", "mm", {x, w}, {"y"}, {}, 17)->outputs[0]);
    ASSERT_TRUE(pad(g).ok());
    EXPECT_EQ(count_ops(g, "Unpad"), 0);
  }
  // A residual input in the epilogue.
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {4, 64});
    ir::Value* z = graph_input(g, "z", {4, 1001});
    g.outputs().push_back(g.add_node("FusedMatMul", "f",
                                     {x, g.add_constant("w", random_f32({64, 1001}, 13)), nullptr, z}, {"y"}, {}, 1,
                                     "kiln")
                              ->outputs[0]);
    ASSERT_TRUE(pad(g).ok());
    EXPECT_EQ(count_ops(g, "Unpad"), 0);
  }
  // No Unpad kernel on the backend.
  {
    LmHead h(64, 1001);
    passes::PassOptions o = cuda_options();
    o.has_kernel = [](const std::string& op, const std::string&, DataType) { return op != "Unpad"; };
    ASSERT_TRUE(run_passes(h.g, list_of(passes::make_pad_gemm_width()), o).ok());
    EXPECT_EQ(count_ops(h.g, "Unpad"), 0);
  }
}

TEST(PadGemmWidth, InTheCudaPipelineOnlyBeforeFusePointwise) {
  std::vector<std::string> names;
  for (auto& p : passes::pipeline_for(Backend::kCUDA)) names.emplace_back(p->name());
  auto at = [&](const std::string& s) { return std::find(names.begin(), names.end(), s) - names.begin(); };
  ASSERT_LT(at("pad_gemm_width"), static_cast<long>(names.size()));
  EXPECT_LT(at("precision_lowering"), at("pad_gemm_width"));
  EXPECT_LT(at("conv1x1_as_gemm"), at("pad_gemm_width"));
  EXPECT_LT(at("pad_gemm_width"), at("fuse_pointwise"));
  for (auto& p : passes::pipeline_for(Backend::kCPU)) EXPECT_NE(p->name(), "pad_gemm_width");
}

// An engine file carries the pass's layer and the CPU executor runs it (engines built for CUDA fall back to it for
// layers).
TEST(PadGemmWidth, EnginesWithUnpadRunOnTheCpuExecutor) {
  LmHead h(64, 1001, 5);
  auto before = h.g.clone();
  ASSERT_TRUE(
      run_passes(h.g, list_of(passes::make_pad_gemm_width(), passes::make_dead_code_elimination()), cuda_options())
          .ok());
  ASSERT_EQ(count_ops(h.g, "Unpad"), 1) << ir::print(h.g);
  auto engine = load_engine(builder::write_engine(h.g, BuilderConfig()));
  ASSERT_NE(engine, nullptr);
  auto got = infer(*engine, {{"x", h.inputs[0]}});
  ASSERT_EQ(got.size(), 1u);
  expect_close(got[0], run_reference(*before, h.inputs)[0], 1e-5, 1e-5);
}

// With odd_gemm, a float16 MatMul with no Cast to absorb (float16 bindings) becomes one FusedMatMul under its name
// with B stored [N, K] (the transposed weight) and the odd width kept: no Unpad, no padding, the same values. A
// FusedMatMul that already stores B so is left as it is; a float32 GEMM (no CUTLASS kernel) and one whose output
// Cast padding absorbs are padded as before, and so is one whose K makes rows of K that are no whole number of
// 16-byte vectors (the kernels load them by TMA).
TEST(PadGemmWidth, OddGemmKeepsTheWidthWithBStoredNK) {
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {4, 80, 64}, DataType::kHALF);
    const Tensor w_kn = random_f32({64, 5001}, 35, -0.2f, 0.2f).cast(DataType::kHALF);
    ir::Value* w = g.add_constant("w", w_kn);
    g.outputs().push_back(g.add_node("MatMul", "lm_head", {x, w}, {"logits"}, {}, 17)->outputs[0]);
    std::vector<Tensor> in = {random_f32({4, 80, 64}, 36).cast(DataType::kHALF)};
    auto before = g.clone();
    passes::PassOptions o;
    o.odd_gemm = true;
    Status st = run_cuda_pipeline(g, DataType::kHALF, o);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(g.nodes().size(), 1u) << ir::print(g);
    const ir::Node* f = find_op(g, "FusedMatMul");
    ASSERT_NE(f, nullptr) << ir::print(g);
    EXPECT_EQ(f->name, "lm_head");
    EXPECT_EQ(f->attrs.get_int("trans_b", 0).value(), 1);
    EXPECT_EQ(f->outputs[0], g.outputs()[0]);
    EXPECT_EQ(g.outputs()[0]->name, "logits");
    EXPECT_EQ(g.outputs()[0]->shape.back(), ops::Dim(5001));
    const Tensor nk = f->inputs[1]->constant->cast(DataType::kDOUBLE);
    const Tensor kn = w_kn.cast(DataType::kDOUBLE);
    ASSERT_EQ(nk.shape(), (std::vector<int64_t>{5001, 64}));
    for (int64_t j = 0; j < 5001; j += 97)
      for (int64_t i = 0; i < 64; ++i)
        ASSERT_EQ(nk.data<double>()[j * 64 + i], kn.data<double>()[i * 5001 + j]) << j << "," << i;
    expect_close(run_reference(g, in)[0], run_reference(*before, in)[0], 2e-2, 2e-2);
  }
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {64, 32}, DataType::kHALF);
    Attributes a;
    a.set("trans_b", int64_t{1});
    ir::Value* w = g.add_constant("w", random_f32({777, 32}, 37).cast(DataType::kHALF));
    g.outputs().push_back(g.add_node("FusedMatMul", "head", {x, w}, {"y"}, a, 1, "kiln")->outputs[0]);
    passes::PassOptions o = cuda_options();
    o.odd_gemm = true;
    ASSERT_TRUE(run_passes(g, list_of(passes::make_pad_gemm_width()), o).ok());
    const ir::Node* f = find_op(g, "FusedMatMul");
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->inputs[1], w) << "already [N, K]: untouched";
    EXPECT_EQ(count_ops(g, "Unpad"), 0);
  }
  {
    LmHead h(64, 1001, 200);  // float32 throughout: padded
    passes::PassOptions o = cuda_options();
    o.odd_gemm = true;
    ASSERT_TRUE(run_passes(h.g, list_of(passes::make_pad_gemm_width()), o).ok());
    EXPECT_EQ(count_ops(h.g, "Unpad"), 1) << ir::print(h.g);
  }
  {
    ir::Graph g;
    ir::Value* x = graph_input(g, "x", {4, 80, 36}, DataType::kHALF);  // K = 36: 72-byte rows
    ir::Value* w = g.add_constant("w", random_f32({36, 5001}, 38).cast(DataType::kHALF));
    g.outputs().push_back(g.add_node("MatMul", "lm_head", {x, w}, {"logits"}, {}, 17)->outputs[0]);
    passes::PassOptions o;
    o.odd_gemm = true;
    ASSERT_TRUE(run_cuda_pipeline(g, DataType::kHALF, o).ok());
    EXPECT_EQ(count_ops(g, "Unpad"), 1) << ir::print(g);
  }
  for (DataType reduced : {DataType::kHALF, DataType::kBF16}) {
    LmHead h(64, 1001, 200);  // float32 output: lowering's Cast follows the GEMM, and padding absorbs it
    passes::PassOptions o;
    o.odd_gemm = true;
    ASSERT_TRUE(run_cuda_pipeline(h.g, reduced, o).ok());
    EXPECT_EQ(count_ops(h.g, "Unpad"), 1) << ir::print(h.g);
  }
}

TEST(PadGemmWidth, OddGemmSwitchTypoIsAnError) { expect_env_switch_takes_0_or_1("KILN_ODD_GEMM"); }

}  // namespace
