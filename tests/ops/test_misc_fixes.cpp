// Tests of smaller operator fixes (BitShift 28, bool ReduceMax/Min, SpaceToDepth mode, inverse one-sided DFT,
// 3-D GridSample) and of the opset-6 upgrade path (broadcasting Gemm, channel-wise PRelu slopes). Expected
// values are worked out by hand in the comments.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "op_test_util.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/onnx_parser.h"
#include "kiln/runtime.h"
#include "onnx/onnx_pb.h"
#include "ops/op.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

using ops::testing::RunResult;
using ops::testing::run_op;

// Inference then compute of one op at a given opset (one output).
RunResult run_op_at(const std::string& name, const Attributes& attrs, const std::vector<const Tensor*>& inputs,
                    int opset) {
  return run_op(name, attrs, inputs, 1, opset);
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

Tensor bools(std::vector<int64_t> shape, const std::vector<int>& v) {
  Tensor t(DataType::kBOOL, std::move(shape));
  for (size_t i = 0; i < v.size(); ++i) t.data<bool>()[i] = v[i] != 0;
  return t;
}

std::vector<int> bool_values(const Tensor& t) {
  std::vector<int> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.data<bool>()[i] ? 1 : 0);
  return v;
}

Attributes with(const std::string& name, Attribute value) {
  Attributes a;
  a.set(name, std::move(value));
  return a;
}

}  // namespace

// ---- BitShift 28 ----

TEST(MiscFixes, BitShiftRightIsArithmeticForSignedTypes) {
  // -128 >> 1 == -64 and -8 >> 1 == -4 (sign kept); -1 >> 9 (count >= 8 bits) and a negative count shift every
  // bit out, which for a negative value leaves all ones (-1) and for a positive one leaves 0.
  Tensor x = Tensor::from_vector<int8_t>({5}, {-128, -8, -1, 64, -3});
  Tensor s = Tensor::from_vector<int8_t>({5}, {1, 1, 9, -1, -2});
  auto r = run_op_at("BitShift", with("direction", "RIGHT"), {&x, &s}, 28);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(values_of<int8_t>(r.outputs[0]), (std::vector<int8_t>{-64, -4, -1, 0, -1}));
}

TEST(MiscFixes, BitShiftLeftWrapsAndClearsOutOfRangeCounts) {
  // 64 << 1 == 128, which int8 wraps to -128; -1 << 8 and 5 << -2 are out of range and give 0.
  Tensor x = Tensor::from_vector<int8_t>({4}, {64, -1, 5, -3});
  Tensor s = Tensor::from_vector<int8_t>({4}, {1, 8, -2, 2});
  auto r = run_op_at("BitShift", with("direction", "LEFT"), {&x, &s}, 28);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(values_of<int8_t>(r.outputs[0]), (std::vector<int8_t>{-128, 0, 0, -12}));

  Tensor x32 = Tensor::from_vector<int32_t>({1}, {1});
  Tensor s32 = Tensor::from_vector<int32_t>({1}, {31});
  auto r32 = run_op_at("BitShift", with("direction", "LEFT"), {&x32, &s32}, 28);
  ASSERT_TRUE(r32.status.ok()) << r32.status.message();
  EXPECT_EQ(r32.outputs[0].data<int32_t>()[0], std::numeric_limits<int32_t>::min());
}

TEST(MiscFixes, BitShiftUnsignedIsUnchanged) {
  // 200 >> 3 == 25; 200 >> 8 shifts every bit out; 3 << 6 == 192.
  Tensor x = Tensor::from_vector<uint8_t>({3}, {200, 200, 3});
  Tensor s = Tensor::from_vector<uint8_t>({3}, {3, 8, 6});
  auto right = run_op_at("BitShift", with("direction", "RIGHT"), {&x, &s}, 11);
  ASSERT_TRUE(right.status.ok()) << right.status.message();
  EXPECT_EQ(values_of<uint8_t>(right.outputs[0]), (std::vector<uint8_t>{25, 0, 0}));
  auto left = run_op_at("BitShift", with("direction", "LEFT"), {&x, &s}, 11);
  ASSERT_TRUE(left.status.ok()) << left.status.message();
  EXPECT_EQ(left.outputs[0].data<uint8_t>()[2], 192);
}

// ---- ReduceMax / ReduceMin on bool (opset 20) ----

TEST(MiscFixes, ReduceMaxMinOnBoolAreAnyAndAll) {
  // Rows [1,0], [0,0], [1,1]: any per row = 1,0,1; all per row = 0,0,1.
  Tensor x = bools({3, 2}, {1, 0, 0, 0, 1, 1});
  Tensor axes = Tensor::from_vector<int64_t>({1}, {1});
  Attributes a = with("keepdims", int64_t{0});
  auto mx = run_op_at("ReduceMax", a, {&x, &axes}, 20);
  ASSERT_TRUE(mx.status.ok()) << mx.status.message();
  EXPECT_EQ(mx.outputs[0].dtype(), DataType::kBOOL);
  EXPECT_EQ(bool_values(mx.outputs[0]), (std::vector<int>{1, 0, 1}));
  auto mn = run_op_at("ReduceMin", a, {&x, &axes}, 20);
  ASSERT_TRUE(mn.status.ok()) << mn.status.message();
  EXPECT_EQ(bool_values(mn.outputs[0]), (std::vector<int>{0, 0, 1}));
}

TEST(MiscFixes, ReduceMaxMinOnEmptyBoolGiveIdentities) {
  // any() of nothing is false, all() of nothing is true.
  Tensor x(DataType::kBOOL, {2, 0});
  Tensor axes = Tensor::from_vector<int64_t>({1}, {1});
  auto mx = run_op_at("ReduceMax", {}, {&x, &axes}, 20);
  ASSERT_TRUE(mx.status.ok()) << mx.status.message();
  EXPECT_EQ(mx.outputs[0].shape(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(bool_values(mx.outputs[0]), (std::vector<int>{0, 0}));
  auto mn = run_op_at("ReduceMin", {}, {&x, &axes}, 20);
  ASSERT_TRUE(mn.status.ok()) << mn.status.message();
  EXPECT_EQ(bool_values(mn.outputs[0]), (std::vector<int>{1, 1}));
}

// ---- SpaceToDepth mode (opset 28) ----

TEST(MiscFixes, SpaceToDepthHonoursMode) {
  // X [1,2,2,2] = 0..7 (channel 0: 0..3, channel 1: 4..7), blocksize 2, output [1,8,1,1].
  // CRD: out channel = c*4 + (i*2 + j)  -> 0,1,2,3,4,5,6,7.
  // DCR: out channel = (i*2 + j)*2 + c  -> c0(0,0)=0, c1(0,0)=4, c0(0,1)=1, c1(0,1)=5, ...
  Tensor x = Tensor::from_vector<float>({1, 2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  Attributes crd = with("blocksize", int64_t{2});
  crd.set("mode", "CRD");
  auto r = run_op_at("SpaceToDepth", crd, {&x}, 28);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 8, 1, 1}));
  EXPECT_EQ(values_of<float>(r.outputs[0]), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
  Attributes dcr = with("blocksize", int64_t{2});
  dcr.set("mode", "DCR");
  auto d = run_op_at("SpaceToDepth", dcr, {&x}, 28);
  ASSERT_TRUE(d.status.ok()) << d.status.message();
  EXPECT_EQ(values_of<float>(d.outputs[0]), (std::vector<float>{0, 4, 1, 5, 2, 6, 3, 7}));
  // No mode (before opset 28) keeps the DCR order.
  auto dflt = run_op_at("SpaceToDepth", with("blocksize", int64_t{2}), {&x}, 13);
  ASSERT_TRUE(dflt.status.ok()) << dflt.status.message();
  EXPECT_EQ(values_of<float>(dflt.outputs[0]), values_of<float>(d.outputs[0]));
  Attributes bad = with("blocksize", int64_t{2});
  bad.set("mode", "XYZ");
  EXPECT_FALSE(run_op_at("SpaceToDepth", bad, {&x}, 28).status.ok());
}

// ---- DFT inverse one-sided ----

TEST(MiscFixes, DftInverseOneSidedGivesTheRealSignal) {
  // The real signal [1,2,3,4] has the one-sided spectrum [10, -2+2i, -2]. The imaginary part put on the DC bin
  // (7) cannot belong to a real signal's spectrum and is ignored, as irfft does.
  Tensor x = Tensor::from_vector<float>({1, 3, 2}, {10, 7, -2, 2, -2, 0});
  Attributes a = with("inverse", int64_t{1});
  a.set("onesided", int64_t{1});
  auto r = run_op_at("DFT", a, {&x}, 17);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 4, 1}));
  ASSERT_TRUE(r.inferred[0].rank_known);
  EXPECT_EQ(shape_to_string(r.inferred[0].shape), shape_to_string(shape_from_dims({1, 4, 1})));
  const std::vector<float> expect = {1, 2, 3, 4};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r.outputs[0].data<float>()[i], expect[i], 1e-5) << i;
}

// ---- GridSample 3-D ----

TEST(MiscFixes, GridSampleVolumetricLinearAndNearest) {
  // X [1,1,2,2,2] holds z*4 + y*2 + x. With align_corners, -1 and 1 are the first and last voxel centres.
  Tensor x = Tensor::from_vector<float>({1, 1, 2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7});
  // Points (x, y, z): centre -> mean 3.5; corners -> 0, 7; (1,-1,-1) -> voxel x=1 -> 1; (-1,-1,1) -> z=1 -> 4;
  // (0.5,0,-1): x=0.75, y=0.5, z=0 -> 0.75 + 2*0.5 = 1.75.
  Tensor grid = Tensor::from_vector<float>(
      {1, 1, 1, 6, 3}, {0, 0, 0, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1, 1, 0.5f, 0, -1});
  Attributes lin = with("align_corners", int64_t{1});
  lin.set("mode", "linear");
  auto r = run_op_at("GridSample", lin, {&x, &grid}, 22);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 1, 1, 1, 6}));
  const std::vector<float> expect = {3.5f, 0, 7, 1, 4, 1.75f};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(r.outputs[0].data<float>()[i], expect[i], 1e-6) << i;

  // Nearest: (0.6, -1, 1) maps to x = 0.8 -> 1, y = 0, z = 1 -> 4 + 1 = 5.
  Tensor g2 = Tensor::from_vector<float>({1, 1, 1, 1, 3}, {0.6f, -1, 1});
  Attributes near = with("align_corners", int64_t{1});
  near.set("mode", "nearest");
  auto n = run_op_at("GridSample", near, {&x, &g2}, 22);
  ASSERT_TRUE(n.status.ok()) << n.status.message();
  EXPECT_FLOAT_EQ(n.outputs[0].data<float>()[0], 5.0f);

  Attributes cubic = with("mode", "cubic");
  EXPECT_FALSE(run_op_at("GridSample", cubic, {&x, &g2}, 22).status.ok());
}

// ---- Resize half_pixel_symmetric (opset 19) ----

TEST(MiscFixes, ResizeHalfPixelSymmetricSplitsTheRoundingOverBothEnds) {
  // 4 -> 4 * 0.6 = 2.4, floored to 2: adjustment 2 / 2.4, offset 2 * (1 - 2 / 2.4) = 1/3. Output 0 samples
  // 1/3 + 0.5 / 0.6 - 0.5 = 2/3 and output 1 samples 1/3 + 1.5 / 0.6 - 0.5 = 7/3; linear over [1,2,3,4] gives
  // 1 + 2/3 and 1 + 7/3.
  Tensor x = Tensor::from_vector<float>({1, 1, 1, 4}, {1, 2, 3, 4});
  Tensor scales = Tensor::from_vector<float>({4}, {1, 1, 1, 0.6f});
  Attributes a = with("mode", "linear");
  a.set("coordinate_transformation_mode", "half_pixel_symmetric");
  auto r = run_op_at("Resize", a, {&x, nullptr, &scales}, 19);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 1, 1, 2}));
  EXPECT_NEAR(r.outputs[0].data<float>()[0], 5.0f / 3.0f, 1e-5);
  EXPECT_NEAR(r.outputs[0].data<float>()[1], 10.0f / 3.0f, 1e-5);
  EXPECT_FALSE(run_op_at("Resize", a, {&x, nullptr, &scales}, 18).status.ok());
}

TEST(MiscFixes, ResizeAntialiasWidensTheLinearKernelWhenDownscaling) {
  // [1,2,3,4] halved: the triangle kernel spans 2 input pixels each side. Output 0 sits at x = 0.5 and weighs
  // pixels -1..2 (the -1 clamps to pixel 0) by 0.25, 0.75, 0.75, 0.25 out of 2: (1*1 + 0.75*2 + 0.25*3) / 2.
  // Output 1 sits at x = 2.5 and weighs pixels 1..4 (4 clamps to 3): (0.25*2 + 0.75*3 + 1*4) / 2.
  Tensor x = Tensor::from_vector<float>({1, 1, 1, 4}, {1, 2, 3, 4});
  Tensor scales = Tensor::from_vector<float>({4}, {1, 1, 1, 0.5f});
  Attributes a = with("mode", "linear");
  a.set("antialias", int64_t{1});
  auto r = run_op_at("Resize", a, {&x, nullptr, &scales}, 18);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_EQ(r.outputs[0].shape(), (std::vector<int64_t>{1, 1, 1, 2}));
  EXPECT_NEAR(r.outputs[0].data<float>()[0], 1.625f, 1e-6);
  EXPECT_NEAR(r.outputs[0].data<float>()[1], 3.375f, 1e-6);
}

// ---- opset-6 models through the version converter ----

namespace {

class QuietLogger : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};
QuietLogger quiet;

constexpr int kF32 = onnx::TensorProto::FLOAT;

void set_shape(onnx::ValueInfoProto* vi, const std::vector<int64_t>& dims) {
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(kF32);
  for (auto d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

onnx::TensorProto float_tensor(const std::string& name, const std::vector<int64_t>& dims,
                               const std::vector<float>& v) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(kF32);
  for (auto d : dims) t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
  return t;
}

// Parses and builds the model and runs it once on float inputs; the parse status says why a model failed.
Status run_model(const onnx::ModelProto& m, const std::vector<std::pair<std::string, HostTensor>>& inputs,
                 std::map<std::string, std::vector<float>>* outputs) {
  std::string bytes;
  m.SerializeToString(&bytes);
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  KILN_RETURN_IF_ERROR(parser.parse(bytes.data(), bytes.size()));
  auto config = builder.create_builder_config();
  auto blob = builder.build_serialized_network(*network, *config);
  if (!blob.ok()) return blob.status();
  Runtime rt(quiet);
  auto engine = rt.deserialize_engine(blob->data(), blob->size());
  if (!engine.ok()) return engine.status();
  auto ctx = (*engine)->create_execution_context();
  auto r = ctx->infer(inputs);
  if (!r.ok()) return r.status();
  for (auto& [name, t] : *r) {
    std::vector<float> v(t.data.size() / sizeof(float));
    std::memcpy(v.data(), t.data.data(), t.data.size());
    (*outputs)[name] = std::move(v);
  }
  return Status::Ok();
}

HostTensor host_f32(Dims dims, const std::vector<float>& v) {
  HostTensor t;
  t.dims = std::move(dims);
  t.data.resize(v.size() * sizeof(float));
  std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}

onnx::ModelProto opset6_model() {
  onnx::ModelProto m;
  m.set_ir_version(3);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(6);
  m.mutable_graph()->set_name("opset6");
  return m;
}

}  // namespace

TEST(MiscFixes, Opset6BroadcastGemmFromAConstantIsUpgraded) {
  // Gemm-6 with broadcast=1 and C from a Constant node (no declared shape): the converter needs C's shape.
  // A = [[1,2],[3,4]], B = I, C = [10, 20] -> [[11, 22], [13, 24]].
  auto m = opset6_model();
  auto* g = m.mutable_graph();
  auto* a = g->add_input();
  a->set_name("a");
  set_shape(a, {2, 2});
  auto* c = g->add_node();
  c->set_op_type("Constant");
  c->add_output("c");
  auto* val = c->add_attribute();
  val->set_name("value");
  val->set_type(onnx::AttributeProto::TENSOR);
  *val->mutable_t() = float_tensor("", {2}, {10, 20});
  *g->add_initializer() = float_tensor("b", {2, 2}, {1, 0, 0, 1});
  auto* bi = g->add_input();
  bi->set_name("b");
  set_shape(bi, {2, 2});
  auto* gemm = g->add_node();
  gemm->set_op_type("Gemm");
  for (const char* in : {"a", "b", "c"}) gemm->add_input(in);
  gemm->add_output("y");
  auto* bc = gemm->add_attribute();
  bc->set_name("broadcast");
  bc->set_type(onnx::AttributeProto::INT);
  bc->set_i(1);
  set_shape(g->add_output(), {2, 2});
  g->mutable_output(0)->set_name("y");
  std::map<std::string, std::vector<float>> out;
  Status s = run_model(m, {{"a", host_f32({2, 2}, {1, 2, 3, 4})}}, &out);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(out["y"], (std::vector<float>{11, 22, 13, 24}));
}

TEST(MiscFixes, Opset6PReluSlopeFollowsTheChannelAxis) {
  // X [2,3,2] all -1 with slope [0.1, 0.2, 0.3] per channel (axis 1): each pair of outputs takes its channel's
  // slope, -0.1 -0.1 -0.2 -0.2 -0.3 -0.3, for both batch entries. Numpy broadcasting would have been invalid.
  auto m = opset6_model();
  auto* g = m.mutable_graph();
  auto* x = g->add_input();
  x->set_name("x");
  set_shape(x, {2, 3, 2});
  *g->add_initializer() = float_tensor("slope", {3}, {0.1f, 0.2f, 0.3f});
  auto* si = g->add_input();
  si->set_name("slope");
  set_shape(si, {3});
  auto* p = g->add_node();
  p->set_op_type("PRelu");
  p->add_input("x");
  p->add_input("slope");
  p->add_output("y");
  set_shape(g->add_output(), {2, 3, 2});
  g->mutable_output(0)->set_name("y");
  std::map<std::string, std::vector<float>> out;
  Status s = run_model(m, {{"x", host_f32({2, 3, 2}, std::vector<float>(12, -1.0f))}}, &out);
  ASSERT_TRUE(s.ok()) << s.message();
  const std::vector<float> expect = {-0.1f, -0.1f, -0.2f, -0.2f, -0.3f, -0.3f,
                                     -0.1f, -0.1f, -0.2f, -0.2f, -0.3f, -0.3f};
  ASSERT_EQ(out["y"].size(), expect.size());
  for (size_t i = 0; i < expect.size(); ++i) EXPECT_NEAR(out["y"][i], expect[i], 1e-6) << i;
}
