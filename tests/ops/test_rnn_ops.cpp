// Tests for the recurrent (RNN, GRU, LSTM) and signal (DFT, windows) operators against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/op_util.h"

using namespace kiln;
using namespace kiln::ops;

namespace {

int g_rnn_sym_counter = 0;

struct Inferred {
  Status status;
  std::vector<TensorInfo> outs;
};

Inferred run_infer(const std::string& op, const Attributes& attrs, std::vector<const TensorInfo*> ins,
                   int num_outputs, int opset = 17) {
  const OpSchema* s = OpRegistry::instance().find(op);
  EXPECT_NE(s, nullptr) << op;
  if (!s) return {internal_error("no op"), {}};
  Status st = validate_attributes(*s, attrs);
  if (!st.ok()) return {st, {}};
  InferContext ctx(attrs, opset, std::move(ins), num_outputs, [] { return "r" + std::to_string(g_rnn_sym_counter++); });
  st = s->infer(ctx);
  return {st, ctx.outputs()};
}

struct Outputs {
  Status status;
  std::vector<Tensor> outs;
};

Outputs run_compute(const std::string& op, const Attributes& attrs, std::vector<const Tensor*> ins, int num_outputs,
                    int opset = 17) {
  const OpSchema* s = OpRegistry::instance().find(op);
  EXPECT_NE(s, nullptr) << op;
  Outputs o;
  o.outs.resize(num_outputs);
  if (!s) return o;
  ComputeContext ctx(attrs, opset, std::move(ins), &o.outs);
  o.status = s->compute(ctx);
  return o;
}

Tensor f32(std::vector<int64_t> shape, std::vector<float> v) { return Tensor::from_vector<float>(std::move(shape), v); }

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(RnnOps, OneStepRnnTanhMatchesHandComputation) {
  Tensor x = f32({1, 1, 2}, {1.f, 2.f});
  Tensor w = f32({1, 1, 2}, {0.5f, -0.25f});
  Tensor r = f32({1, 1, 1}, {0.3f});
  Tensor b = f32({1, 2}, {0.1f, 0.2f});
  Tensor h0 = f32({1, 1, 1}, {0.4f});
  Attributes a;
  a.set("hidden_size", int64_t{1});
  auto o = run_compute("RNN", a, {&x, &w, &r, &b, nullptr, &h0}, 2);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  const double want = std::tanh(0.5 * 1 - 0.25 * 2 + 0.3 * 0.4 + 0.1 + 0.2);
  ASSERT_EQ(o.outs[0].shape(), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_NEAR(o.outs[0].get_f64(0), want, 1e-6);
  EXPECT_NEAR(o.outs[1].get_f64(0), want, 1e-6);
}

TEST(RnnOps, ReverseRnnHonoursSequenceLengths) {
  // Relu with unit weights accumulates the inputs from the end of each entry's own sequence.
  Tensor x = f32({3, 2, 1}, {1.f, 1.f, 2.f, 2.f, 3.f, 3.f});
  Tensor w = f32({1, 1, 1}, {1.f});
  Tensor r = f32({1, 1, 1}, {1.f});
  Tensor lens = Tensor::from_vector<int32_t>({2}, {3, 2});
  Attributes a;
  a.set("hidden_size", int64_t{1});
  a.set("direction", "reverse");
  a.set("activations", std::vector<std::string>{"Relu"});
  auto o = run_compute("RNN", a, {&x, &w, &r, nullptr, &lens}, 2);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  // Y is [seq, dir, batch, hidden]: entry 0 runs t=2,1,0 -> 3, 5, 6; entry 1 runs t=1,0 -> 2, 3 and pads t=2.
  EXPECT_EQ(o.outs[0].to_f64_vector(), (std::vector<double>{6, 3, 5, 2, 3, 0}));
  EXPECT_EQ(o.outs[1].to_f64_vector(), (std::vector<double>{6, 3}));
}

TEST(RnnOps, GruOneStepBothResetPlacements) {
  const double x = 0.7, h = -0.3;
  // W rows z, r, h; R rows z, r, h; B = Wb(z,r,h) then Rb(z,r,h).
  const double wz = 0.2, wr = -0.4, wh = 0.9, rz = 0.5, rr = 0.1, rh = -0.6;
  const double bw[3] = {0.01, 0.02, 0.03}, br[3] = {-0.05, 0.04, 0.07};
  Tensor tx = f32({1, 1, 1}, {float(x)});
  Tensor tw = f32({1, 3, 1}, {float(wz), float(wr), float(wh)});
  Tensor tr = f32({1, 3, 1}, {float(rz), float(rr), float(rh)});
  Tensor tb = f32({1, 6}, {float(bw[0]), float(bw[1]), float(bw[2]), float(br[0]), float(br[1]), float(br[2])});
  Tensor th = f32({1, 1, 1}, {float(h)});
  const double z = sigm(wz * x + rz * h + bw[0] + br[0]);
  const double rg = sigm(wr * x + rr * h + bw[1] + br[1]);
  for (int lbr : {0, 1}) {
    Attributes a;
    a.set("hidden_size", int64_t{1});
    a.set("linear_before_reset", int64_t{lbr});
    auto o = run_compute("GRU", a, {&tx, &tw, &tr, &tb, nullptr, &th}, 2);
    ASSERT_TRUE(o.status.ok()) << o.status.to_string();
    const double cand = lbr ? std::tanh(wh * x + bw[2] + rg * (rh * h + br[2]))
                            : std::tanh(wh * x + bw[2] + rh * (rg * h) + br[2]);
    EXPECT_NEAR(o.outs[1].get_f64(0), (1 - z) * cand + z * h, 1e-6) << "linear_before_reset=" << lbr;
  }
}

TEST(RnnOps, LstmOneStepWithPeepholes) {
  const double x = 0.5, h = 0.2, c = -0.4;
  // Gate order i, o, f, c; peepholes i, o, f.
  Tensor tx = f32({1, 1, 1}, {float(x)});
  Tensor tw = f32({1, 4, 1}, {0.1f, 0.2f, 0.3f, 0.4f});
  Tensor tr = f32({1, 4, 1}, {-0.1f, -0.2f, -0.3f, -0.4f});
  Tensor th = f32({1, 1, 1}, {float(h)});
  Tensor tc = f32({1, 1, 1}, {float(c)});
  Tensor tp = f32({1, 3}, {0.5f, 0.6f, 0.7f});
  Attributes a;
  a.set("hidden_size", int64_t{1});
  auto o = run_compute("LSTM", a, {&tx, &tw, &tr, nullptr, nullptr, &th, &tc, &tp}, 3);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  const double i = sigm(0.1 * x - 0.1 * h + 0.5 * c);
  const double f = sigm(0.3 * x - 0.3 * h + 0.7 * c);
  const double g = std::tanh(0.4 * x - 0.4 * h);
  const double c1 = f * c + i * g;
  const double og = sigm(0.2 * x - 0.2 * h + 0.6 * c1);
  EXPECT_NEAR(o.outs[2].get_f64(0), c1, 1e-6);
  EXPECT_NEAR(o.outs[1].get_f64(0), og * std::tanh(c1), 1e-6);
}

TEST(RnnOps, BidirectionalShapesAreSymbolic) {
  TensorInfo x = make_info(DataType::kFLOAT, {Dim::symbol("T"), Dim::symbol("N"), Dim(3)});
  TensorInfo w = make_info(DataType::kFLOAT, {Dim(2), Dim(16), Dim(3)});
  TensorInfo r = make_info(DataType::kFLOAT, {Dim(2), Dim(16), Dim(4)});
  Attributes a;
  a.set("hidden_size", int64_t{4});
  a.set("direction", "bidirectional");
  auto res = run_infer("LSTM", a, {&x, &w, &r}, 3);
  ASSERT_TRUE(res.status.ok()) << res.status.to_string();
  EXPECT_EQ(shape_to_string(res.outs[0].shape), "[T,2,N,4]");
  EXPECT_EQ(shape_to_string(res.outs[1].shape), "[2,N,4]");
  EXPECT_EQ(shape_to_string(res.outs[2].shape), "[2,N,4]");

  a.set("layout", int64_t{1});
  TensorInfo xb = make_info(DataType::kFLOAT, {Dim::symbol("N"), Dim::symbol("T"), Dim(3)});
  res = run_infer("LSTM", a, {&xb, &w, &r}, 2);
  ASSERT_TRUE(res.status.ok()) << res.status.to_string();
  EXPECT_EQ(shape_to_string(res.outs[0].shape), "[N,T,2,4]");
  EXPECT_EQ(shape_to_string(res.outs[1].shape), "[N,2,4]");
}

TEST(RnnOps, BadDirectionAndActivationAreRejectedWithAllowedValues) {
  TensorInfo x = make_info(DataType::kFLOAT, {Dim(2), Dim(1), Dim(3)});
  TensorInfo w = make_info(DataType::kFLOAT, {Dim(1), Dim(12), Dim(3)});
  TensorInfo r = make_info(DataType::kFLOAT, {Dim(1), Dim(12), Dim(4)});
  Attributes a;
  a.set("direction", "sideways");
  auto res = run_infer("GRU", a, {&x, &w, &r}, 2);
  ASSERT_FALSE(res.status.ok());
  EXPECT_NE(res.status.message().find("sideways"), std::string::npos) << res.status.message();
  EXPECT_NE(res.status.message().find("forward, reverse, bidirectional"), std::string::npos) << res.status.message();

  Attributes b;
  b.set("activations", std::vector<std::string>{"Sigmoid", "Swish"});
  res = run_infer("GRU", b, {&x, &w, &r}, 2);
  ASSERT_FALSE(res.status.ok());
  EXPECT_NE(res.status.message().find("Swish"), std::string::npos) << res.status.message();
  EXPECT_NE(res.status.message().find("HardSigmoid"), std::string::npos) << res.status.message();
}

TEST(SignalOps, PeriodicHannWindow) {
  Tensor n = Tensor::scalar_i64(4);
  auto o = run_compute("HannWindow", Attributes{}, {&n}, 1);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  auto v = o.outs[0].to_f64_vector();
  ASSERT_EQ(v.size(), 4u);
  const double want[4] = {0.0, 0.5, 1.0, 0.5};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(v[i], want[i], 1e-6);
}

TEST(SignalOps, DftOfImpulseIsFlatAndOnesidedHalves) {
  Tensor x = f32({1, 4, 1}, {1.f, 0.f, 0.f, 0.f});
  Attributes a;
  a.set("onesided", int64_t{1});
  TensorInfo xi = make_info(DataType::kFLOAT, {Dim(1), Dim(4), Dim(1)});
  auto inf = run_infer("DFT", a, {&xi}, 1);
  ASSERT_TRUE(inf.status.ok()) << inf.status.to_string();
  EXPECT_EQ(shape_to_string(inf.outs[0].shape), "[1,3,2]");
  auto o = run_compute("DFT", a, {&x}, 1);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  EXPECT_EQ(o.outs[0].to_f64_vector(), (std::vector<double>{1, 0, 1, 0, 1, 0}));
}

}  // namespace

namespace {

TEST(Col2ImOps, OverlappingBlocksAreSummed) {
  // 1-D image of 4 with blocks of 2 at stride 1: the middle pixels are covered twice.
  Tensor x = f32({1, 2, 3}, {1, 1, 1, 1, 1, 1});
  Tensor image = Tensor::from_vector<int64_t>({1}, {4});
  Tensor block = Tensor::from_vector<int64_t>({1}, {2});
  auto o = run_compute("Col2Im", Attributes{}, {&x, &image, &block}, 1, 18);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  EXPECT_EQ(o.outs[0].shape(), (std::vector<int64_t>{1, 1, 4}));
  EXPECT_EQ(o.outs[0].to_f64_vector(), (std::vector<double>{1, 2, 2, 1}));
}

TEST(Col2ImOps, RowBlocksTransposeBackIntoImage) {
  // Blocks of one row of 5 over a 5x5 image: column l of block element k is pixel (l, k).
  std::vector<float> v(25);
  for (int k = 0; k < 5; ++k)
    for (int l = 0; l < 5; ++l) v[k * 5 + l] = static_cast<float>(1 + 5 * l + k);
  Tensor x = f32({1, 5, 5}, v);
  Tensor image = Tensor::from_vector<int64_t>({2}, {5, 5});
  Tensor block = Tensor::from_vector<int64_t>({2}, {1, 5});
  TensorInfo xi = make_info(DataType::kFLOAT, {Dim(1), Dim(5), Dim(5)});
  TensorInfo ii = make_info(DataType::kINT64, {Dim(2)});
  ii.constant = &image;
  TensorInfo bi = make_info(DataType::kINT64, {Dim(2)});
  bi.constant = &block;
  auto inf = run_infer("Col2Im", Attributes{}, {&xi, &ii, &bi}, 1, 18);
  ASSERT_TRUE(inf.status.ok()) << inf.status.to_string();
  EXPECT_EQ(shape_to_string(inf.outs[0].shape), "[1,1,5,5]");
  auto o = run_compute("Col2Im", Attributes{}, {&x, &image, &block}, 1, 18);
  ASSERT_TRUE(o.status.ok()) << o.status.to_string();
  auto got = o.outs[0].to_f64_vector();
  for (int i = 0; i < 25; ++i) EXPECT_EQ(got[i], i + 1);
}

}  // namespace
