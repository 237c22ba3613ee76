// precision_lowering pass: structure after lowering (casts at the float32 boundaries, converted weights, network
// I/O types kept) and numerics (the lowered graph, run on the reference kernels, stays near float32).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>

#include "graph_test_util.h"
#include "ir/graph.h"
#include "passes/pass_manager.h"

using namespace kiln;

namespace {

struct Built {
  std::unique_ptr<ir::Graph> g;
  Tensor w;
};

// X[2,4] -> MatMul(W[4,3]) -> Relu -> Softmax -> Y, all float32.
Built make_graph() {
  Built b;
  b.g = std::make_unique<ir::Graph>();
  ir::Graph& g = *b.g;
  ir::Value* x = g.add_value("X");
  x->dtype = DataType::kFLOAT;
  x->shape = {2, 4};
  x->rank_known = true;
  g.inputs().push_back(x);
  std::vector<float> w(12);
  for (int i = 0; i < 12; ++i) w[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
  b.w = Tensor::from_vector<float>({4, 3}, w);
  ir::Value* wv = g.add_constant("W", b.w);
  auto* mm = g.add_node("MatMul", "mm", {x, wv}, {"h"}, {}, 17);
  auto* relu = g.add_node("Relu", "relu", {mm->outputs[0]}, {"r"}, {}, 17);
  Attributes a;
  a.set("axis", int64_t{-1});
  auto* sm = g.add_node("Softmax", "sm", {relu->outputs[0]}, {"Y"}, a, 17);
  g.outputs().push_back(sm->outputs[0]);
  return b;
}

// A backend with reduced-precision MatMul and Relu kernels but no Softmax one.
bool matmul_relu_only(const std::string& op, const std::string&, DataType) { return op == "MatMul" || op == "Relu"; }

Status lower(ir::Graph& g, DataType t, std::map<std::string, DataType> layers = {}, std::string constraints = "none",
             std::function<bool(const std::string&, const std::string&, DataType)> has_kernel = matmul_relu_only) {
  struct Quiet : ILogger {
    void log(Severity, const char*) noexcept override {}
  };
  static Quiet quiet;
  passes::PassOptions o;
  o.backend = Backend::kCUDA;
  o.verify_each = true;
  o.reduced_precision = t;
  o.layer_precisions = std::move(layers);
  o.precision_constraints = std::move(constraints);
  o.has_kernel = std::move(has_kernel);
  passes::PassContext ctx(quiet, o);
  passes::PassList l;
  l.push_back(passes::make_shape_inference());
  l.push_back(passes::make_precision_lowering());
  l.push_back(passes::make_dead_code_elimination());
  passes::PassManager pm(std::move(l));
  return pm.run(g, ctx);
}

const ir::Node* find(const ir::Graph& g, const std::string& op) {
  for (auto& n : g.nodes())
    if (n->op_type == op) return n.get();
  return nullptr;
}

// Runs the graph on the reference kernels, node by node.
Tensor run(const ir::Graph& g, const Tensor& x) {
  std::map<const ir::Value*, Tensor> vals;
  vals[g.inputs()[0]] = x;
  for (auto& n : g.nodes()) {
    std::vector<const Tensor*> in;
    for (auto* v : n->inputs) {
      if (v->is_constant()) vals[v] = *v->constant;
      in.push_back(&vals.at(v));
    }
    std::vector<Tensor> out(n->outputs.size());
    ops::ComputeContext c(n->attrs, n->opset, in, &out);
    const ops::OpSchema* s = ops::OpRegistry::instance().find(n->op_type);
    const Status st = s->compute(c);
    EXPECT_TRUE(st.ok()) << n->op_type << ": " << st.message();
    for (size_t k = 0; k < out.size(); ++k) vals[n->outputs[k]] = out[k];
  }
  return vals.at(g.outputs()[0]);
}

TEST(PrecisionLowering, LowersLayersWithKernelsAndKeepsIoTypes) {
  for (DataType t : {DataType::kHALF, DataType::kBF16}) {
    Built b = make_graph();
    ASSERT_TRUE(lower(*b.g, t).ok());
    const ir::Node* mm = find(*b.g, "MatMul");
    const ir::Node* relu = find(*b.g, "Relu");
    const ir::Node* sm = find(*b.g, "Softmax");
    ASSERT_TRUE(mm && relu && sm);
    EXPECT_EQ(mm->inputs[0]->dtype, t);
    EXPECT_EQ(mm->inputs[0]->producer->op_type, "Cast");  // the float32 network input, cast once
    EXPECT_TRUE(mm->inputs[1]->is_constant());            // weights converted at build time
    EXPECT_EQ(mm->inputs[1]->constant->dtype(), t);
    EXPECT_EQ(relu->inputs[0], mm->outputs[0]);  // no cast between two lowered layers
    EXPECT_EQ(relu->outputs[0]->dtype, t);
    EXPECT_EQ(sm->inputs[0]->dtype, DataType::kFLOAT);  // Softmax has no reduced kernel here
    EXPECT_EQ(sm->inputs[0]->producer->op_type, "Cast");
    EXPECT_EQ(b.g->inputs()[0]->dtype, DataType::kFLOAT);
    EXPECT_EQ(b.g->outputs()[0]->dtype, DataType::kFLOAT);
    EXPECT_EQ(b.g->outputs()[0]->name, "Y");
    int casts = 0;
    for (auto& n : b.g->nodes()) casts += n->op_type == "Cast";
    EXPECT_EQ(casts, 2);  // the MatMul->Relu cast back to float32 was dead and is gone
    // Numerics: the lowered graph against the float32 graph on the same input.
    Tensor x(DataType::kFLOAT, {2, 4});
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1, 1);
    for (int i = 0; i < 8; ++i) x.data<float>()[i] = u(rng);
    Built ref = make_graph();
    Tensor want = run(*ref.g, x), got = run(*b.g, x);
    ASSERT_EQ(got.dtype(), DataType::kFLOAT);
    for (int i = 0; i < 6; ++i)
      EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], t == DataType::kHALF ? 2e-3 : 1.5e-2) << i;
  }
}

// RotaryEmbedding goes to the reduced type with its cos/sin caches (converted at build time); its position ids stay
// int64; the result stays within half precision of float32.
TEST(PrecisionLowering, RotaryEmbeddingWithItsCaches) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = g->add_value("X");
  x->dtype = DataType::kFLOAT;
  x->shape = {1, 2, 3, 8};
  x->rank_known = true;
  g->inputs().push_back(x);
  Tensor cs(DataType::kFLOAT, {5, 4}), sn(DataType::kFLOAT, {5, 4});
  for (int i = 0; i < 20; ++i) {
    cs.data<float>()[i] = std::cos(0.3f * static_cast<float>(i));
    sn.data<float>()[i] = std::sin(0.3f * static_cast<float>(i));
  }
  auto* r = g->add_node("RotaryEmbedding", "rope",
                        {x, g->add_constant("cos", cs), g->add_constant("sin", sn),
                         g->add_constant("pos", Tensor::from_vector<int64_t>({1, 3}, {4, 0, 2}))},
                        {"Y"}, {}, 23);
  g->outputs().push_back(r->outputs[0]);
  Tensor xin(DataType::kFLOAT, {1, 2, 3, 8});
  for (int i = 0; i < 48; ++i) xin.data<float>()[i] = 0.1f * static_cast<float>(i % 11) - 0.5f;
  const Tensor want = run(*g, xin);
  ASSERT_TRUE(lower(*g, DataType::kHALF, {}, "none", [](const std::string&, const std::string&, DataType) {
                return true;
              }).ok());
  const ir::Node* rope = find(*g, "RotaryEmbedding");
  ASSERT_NE(rope, nullptr);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rope->inputs[i]->dtype, DataType::kHALF) << i;
  EXPECT_EQ(rope->inputs[3]->dtype, DataType::kINT64);
  const Tensor got = run(*g, xin);
  for (int i = 0; i < 48; ++i) EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 2e-3) << i;
}

// Shape of a lowered layer's output reads the reduced value: the Cast back to float32 that only it read is gone,
// while Shape of the float32 network input keeps reading the input (no Cast made for it).
TEST(PrecisionLowering, ShapeReadsTheLoweredValue) {
  Built b = make_graph();
  ir::Graph& g = *b.g;
  const ir::Value* r = g.find_value("r");
  ASSERT_NE(r, nullptr);
  auto* s_r = g.add_node("Shape", "shape_r", {const_cast<ir::Value*>(r)}, {"S"}, {}, 17);
  auto* s_x = g.add_node("Shape", "shape_x", {g.inputs()[0]}, {"SX"}, {}, 17);
  g.outputs().push_back(s_r->outputs[0]);
  g.outputs().push_back(s_x->outputs[0]);
  ASSERT_TRUE(g.topo_sort().ok());
  ASSERT_TRUE(lower(g, DataType::kHALF).ok());
  const ir::Node* shape_r = nullptr;
  const ir::Node* shape_x = nullptr;
  for (auto& n : g.nodes()) {
    if (n->name == "shape_r") shape_r = n.get();
    if (n->name == "shape_x") shape_x = n.get();
  }
  ASSERT_TRUE(shape_r && shape_x);
  EXPECT_EQ(shape_r->inputs[0]->dtype, DataType::kHALF);
  EXPECT_EQ(shape_r->inputs[0]->producer->op_type, "Relu");
  EXPECT_EQ(shape_x->inputs[0], g.inputs()[0]);
  // Relu's float32 copy still feeds Softmax (no reduced kernel here): that Cast stays, for Softmax alone.
  const ir::Node* sm = find(g, "Softmax");
  ASSERT_NE(sm, nullptr);
  EXPECT_EQ(sm->inputs[0]->producer->op_type, "Cast");
  EXPECT_EQ(sm->inputs[0]->users.size(), 1u);
  // Without the Softmax reader the Cast back is dead and gone.
  Built c = make_graph();
  ir::Graph& h = *c.g;
  ir::Value* relu_out = h.find_value("r");
  auto* neg = h.add_node("Shape", "shape_only", {relu_out}, {"S2"}, {}, 17);
  ir::Node* smn = h.nodes()[2].get();
  ASSERT_EQ(smn->op_type, "Softmax");
  h.outputs().clear();
  h.remove_node(smn);
  h.prune_values();
  h.outputs().push_back(neg->outputs[0]);
  ASSERT_TRUE(h.topo_sort().ok());
  ASSERT_TRUE(lower(h, DataType::kHALF).ok());
  int casts = 0;
  for (auto& n : h.nodes()) casts += n->op_type == "Cast";
  EXPECT_EQ(casts, 1) << "only the network input's Cast to float16";
}

bool all_kernels(const std::string&, const std::string&, DataType) { return true; }

ir::Value* float_input(ir::Graph& g, const std::string& name, std::vector<ops::Dim> shape) {
  ir::Value* x = g.add_value(name);
  x->dtype = DataType::kFLOAT;
  x->shape = std::move(shape);
  x->rank_known = true;
  g.inputs().push_back(x);
  return x;
}

// A fill made at run time (ConstantOfShape of the input's shape) with float32's lowest value, used as HF's
// dynamic-length causal masks use it: multiplied by a 0/1 pattern and added to the scores. Lowered, the fill is made
// in float16 with its value saturated (-65504), not cast at run time (-inf, and -inf * 0 = NaN).
TEST(PrecisionLowering, RunTimeFillOfFloatMinSaturates) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = float_input(*g, "X", {4, 6});
  ir::Value* shape = g->add_node("Shape", "shape", {x}, {"s"}, {}, 17)->outputs[0];
  Attributes fill;
  fill.set("value", Attribute(Tensor::from_vector<float>({1}, {-3.4028234663852886e38f})));
  ir::Value* m = g->add_node("ConstantOfShape", "fill", {shape}, {"m"}, std::move(fill), 17)->outputs[0];
  std::vector<float> pattern(24);
  for (int i = 0; i < 24; ++i) pattern[i] = (i % 6) > (i / 6) + 1 ? 1.f : 0.f;  // a causal-like 0/1 pattern
  ir::Value* masked =
      g->add_node("Mul", "mask_mul", {m, g->add_constant("pattern", Tensor::from_vector<float>({4, 6}, pattern))},
                  {"mask"}, {}, 17)
          ->outputs[0];
  ir::Value* scores = g->add_node("Add", "add_mask", {x, masked}, {"scores"}, {}, 17)->outputs[0];
  Attributes ax;
  ax.set("axis", int64_t{-1});
  g->outputs().push_back(g->add_node("Softmax", "sm", {scores}, {"Y"}, std::move(ax), 17)->outputs[0]);
  Tensor xin(DataType::kFLOAT, {4, 6});
  for (int i = 0; i < 24; ++i) xin.data<float>()[i] = 0.3f * static_cast<float>(i % 7) - 1.f;
  const Tensor want = run(*g, xin);
  ASSERT_TRUE(lower(*g, DataType::kHALF, {}, "none", all_kernels).ok());
  const ir::Node* mul = find(*g, "Mul");
  ASSERT_NE(mul, nullptr);
  EXPECT_EQ(mul->inputs[0]->producer->op_type, "ConstantOfShape") << "a float16 fill, no Cast of the float32 one";
  EXPECT_EQ(mul->inputs[0]->dtype, DataType::kHALF);
  const Tensor got = run(*g, xin);
  for (int i = 0; i < 24; ++i) {
    EXPECT_FALSE(std::isnan(got.data<float>()[i])) << i;
    EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 2e-3) << i;
  }
}

// T5's relative-position buckets computed at run time: an int distance cast to float, Div, Log, Mul, cast back to
// int64, used as a Gather index. Those stay float32 (a bucket boundary must not move with float16 rounding); the
// network around them (here the Add of the gathered bias) is lowered.
TEST(PrecisionLowering, IndexArithmeticStaysFloat32) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = float_input(*g, "X", {1, 39});
  ir::Value* shape = g->add_node("Shape", "shape", {x}, {"s"}, {}, 17)->outputs[0];
  ir::Value* len = g->add_node("Gather", "len", {shape, g->add_constant("one", Tensor::from_vector<int64_t>({}, {1}))},
                               {"n"}, {}, 17)
                       ->outputs[0];
  ir::Value* pos = g->add_node("Range", "range",
                               {g->add_constant("start", Tensor::from_vector<int64_t>({}, {0})), len,
                                g->add_constant("delta", Tensor::from_vector<int64_t>({}, {1}))},
                               {"pos"}, {}, 17)
                       ->outputs[0];
  Attributes to_f, to_i;
  to_f.set("to", int64_t{1});
  to_i.set("to", int64_t{7});
  ir::Value* pf = g->add_node("Cast", "to_float", {pos}, {"pf"}, std::move(to_f), 17)->outputs[0];
  ir::Value* p1 =
      g->add_node("Add", "plus_one", {pf, g->add_constant("c1", Tensor::from_vector<float>({}, {1.f}))}, {"p1"}, {}, 17)
          ->outputs[0];
  ir::Value* d =
      g->add_node("Div", "div", {p1, g->add_constant("c3", Tensor::from_vector<float>({}, {3.f}))}, {"d"}, {}, 17)
          ->outputs[0];
  ir::Value* l = g->add_node("Log", "log", {d}, {"l"}, {}, 17)->outputs[0];
  ir::Value* b =
      g->add_node("Mul", "scale", {l, g->add_constant("c8", Tensor::from_vector<float>({}, {7.9f}))}, {"b"}, {}, 17)
          ->outputs[0];
  ir::Value* bi = g->add_node("Cast", "to_int", {b}, {"bi"}, std::move(to_i), 17)->outputs[0];
  std::vector<float> table(40);
  for (int i = 0; i < 40; ++i) table[i] = 0.05f * static_cast<float>(i);
  ir::Value* bias =
      g->add_node("Gather", "bias",
                  {g->add_constant("table", Tensor::from_vector<float>({40}, table)),
                   g->add_node("Add", "shift", {bi, g->add_constant("c10", Tensor::from_vector<int64_t>({}, {10}))},
                               {"idx"}, {}, 17)
                       ->outputs[0]},
                  {"bias_v"}, {}, 17)
          ->outputs[0];
  g->outputs().push_back(g->add_node("Add", "add_bias", {x, bias}, {"Y"}, {}, 17)->outputs[0]);
  Tensor xin(DataType::kFLOAT, {1, 39});
  for (int i = 0; i < 39; ++i) xin.data<float>()[i] = 0.01f * static_cast<float>(i);
  const Tensor want = run(*g, xin);
  ASSERT_TRUE(lower(*g, DataType::kHALF, {}, "none", all_kernels).ok());
  for (const char* name : {"plus_one", "div", "log", "scale"}) {
    const ir::Node* n = nullptr;
    for (const auto& m : g->nodes())
      if (m->name == name) n = m.get();
    ASSERT_NE(n, nullptr) << name;
    EXPECT_EQ(n->outputs[0]->dtype, DataType::kFLOAT) << name << " must stay float32";
  }
  const ir::Node* add = nullptr;
  for (const auto& m : g->nodes())
    if (m->name == "add_bias") add = m.get();
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->outputs[0]->dtype, DataType::kHALF) << "the data path is lowered";
  const Tensor got = run(*g, xin);
  for (int i = 0; i < 39; ++i) EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 2e-3) << i;
}

// An extra float output that the network returns (training-mode BatchNormalization's running mean) is used even
// with no node reading it: the layer stays float32, so the output keeps its type (it came back float16 before).
TEST(PrecisionLowering, ExtraOutputThatIsAGraphOutputKeepsTheLayerFloat32) {
  auto g = std::make_unique<ir::Graph>();
  ir::Value* x = float_input(*g, "X", {2, 3, 4});
  auto vec = [&](const char* name, float v) {
    return g->add_constant(name, Tensor::from_vector<float>({3}, {v, v + 0.5f, v + 1.f}));
  };
  Attributes a;
  a.set("training_mode", int64_t{1});
  ir::Node* bn = g->add_node("BatchNormalization", "bn",
                             {x, vec("scale", 1.f), vec("bias", 0.f), vec("mean", 0.1f), vec("var", 1.f)},
                             {"Y", "running_mean", "running_var"}, std::move(a), 15);
  g->outputs().push_back(bn->outputs[0]);
  g->outputs().push_back(bn->outputs[1]);
  ASSERT_TRUE(lower(*g, DataType::kHALF, {}, "none", all_kernels).ok());
  const ir::Node* n = find(*g, "BatchNormalization");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->inputs[3]->dtype, DataType::kFLOAT);
  EXPECT_EQ(n->outputs[1]->dtype, DataType::kFLOAT);
  EXPECT_EQ(g->outputs()[1]->dtype, DataType::kFLOAT);
}

TEST(PrecisionLowering, LayerPrecisionsAndConstraints) {
  Built b = make_graph();
  // Without the global flag, one named layer is lowered alone.
  ASSERT_TRUE(lower(*b.g, DataType::kFLOAT, {{"relu", DataType::kHALF}}).ok());
  EXPECT_EQ(find(*b.g, "Relu")->outputs[0]->dtype, DataType::kHALF);
  EXPECT_EQ(find(*b.g, "MatMul")->outputs[0]->dtype, DataType::kFLOAT);
  // A layer pinned to float32 stays there under --fp16.
  Built c = make_graph();
  ASSERT_TRUE(lower(*c.g, DataType::kHALF, {{"mm", DataType::kFLOAT}}).ok());
  EXPECT_EQ(find(*c.g, "MatMul")->outputs[0]->dtype, DataType::kFLOAT);
  EXPECT_EQ(find(*c.g, "Relu")->outputs[0]->dtype, DataType::kHALF);
  // obey: asking a type no kernel has fails and names the layer.
  Built d = make_graph();
  Status st = lower(*d.g, DataType::kFLOAT, {{"sm", DataType::kHALF}}, "obey");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("layer 'sm' (Softmax)"), std::string::npos) << st.message();
  Built e = make_graph();
  EXPECT_TRUE(lower(*e.g, DataType::kFLOAT, {{"sm", DataType::kHALF}}, "prefer").ok());
}

}  // namespace

// The padding mask exporters write, Softmax(X + (1 - M) * finfo(float32).min): lowered to FP16 or BF16, the
// constant must clamp to the type's largest finite value, since as an infinity the unmasked positions' 0 * -inf
// would make the whole row NaN. Run on the reference kernels against the float32 graph.
TEST(PrecisionLowering, FloatMinMaskConstantSaturates) {
  auto build = [] {
    auto g = std::make_unique<ir::Graph>();
    ir::Value* in[2];
    for (int i = 0; i < 2; ++i) {
      in[i] = g->add_value(i ? "M" : "X");
      in[i]->dtype = DataType::kFLOAT;
      in[i]->shape = {2, 4};
      in[i]->rank_known = true;
      g->inputs().push_back(in[i]);
    }
    ir::Value* one = g->add_constant("one", Tensor::from_vector<float>({}, {1.0f}));
    ir::Value* low = g->add_constant("low", Tensor::from_vector<float>({}, {-std::numeric_limits<float>::max()}));
    auto* inv = g->add_node("Sub", "inv", {one, in[1]}, {"inv"}, {}, 17);
    auto* add = g->add_node("Mul", "fill", {inv->outputs[0], low}, {"fill"}, {}, 17);
    auto* sum = g->add_node("Add", "masked", {in[0], add->outputs[0]}, {"masked"}, {}, 17);
    Attributes a;
    a.set("axis", int64_t{-1});
    auto* sm = g->add_node("Softmax", "sm", {sum->outputs[0]}, {"Y"}, a, 17);
    g->outputs().push_back(sm->outputs[0]);
    return g;
  };
  const Tensor x = Tensor::from_vector<float>({2, 4}, {0.5f, -1.0f, 2.0f, 0.25f, 1.5f, 0.0f, -0.5f, 1.0f});
  const Tensor m = Tensor::from_vector<float>({2, 4}, {1, 1, 1, 1, 1, 1, 0, 0});
  auto ref = build();
  const Tensor want = test::run_reference(*ref, {x, m})[0];
  for (DataType t : {DataType::kHALF, DataType::kBF16}) {
    SCOPED_TRACE(dtype_name(t));
    auto g = build();
    struct Quiet : ILogger {
      void log(Severity, const char*) noexcept override {}
    } quiet;
    passes::PassOptions o;
    o.backend = Backend::kCUDA;
    o.reduced_precision = t;
    o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
    passes::PassContext ctx(quiet, o);
    passes::PassList l;
    l.push_back(passes::make_shape_inference());
    l.push_back(passes::make_precision_lowering());
    l.push_back(passes::make_dead_code_elimination());
    ASSERT_TRUE(passes::PassManager(std::move(l)).run(*g, ctx).ok());
    const ir::Node* mul = find(*g, "Mul");
    ASSERT_TRUE(mul);
    ASSERT_EQ(mul->inputs[1]->constant->dtype(), t);
    const double lowered = mul->inputs[1]->constant->get_f64(0);
    EXPECT_TRUE(std::isfinite(lowered));
    EXPECT_EQ(lowered, t == DataType::kHALF ? -65504.0 : -3.3895313892515355e38);
    const Tensor got = test::run_reference(*g, {x, m})[0];
    ASSERT_EQ(got.dtype(), DataType::kFLOAT);
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-2) << i;
  }
}
