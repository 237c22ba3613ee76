// Control flow end to end: ONNX models with If/Loop/Scan bodies built with the protobuf API, then
// OnnxParser -> Builder -> engine bytes -> Runtime, compared with results worked out by hand.
#include <gtest/gtest.h>

#include <cstring>

#include "common/engine_format.h"
#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/onnx_parser.h"
#include "kiln/runtime.h"
#include "onnx/onnx_pb.h"
#include "ops/op.h"
#include "runtime/engine_plan.h"

using namespace kiln;

namespace {

constexpr int kF32 = onnx::TensorProto::FLOAT;
constexpr int kI64 = onnx::TensorProto::INT64;
constexpr int kBool = onnx::TensorProto::BOOL;

class QuietLogger : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};
QuietLogger quiet;

void set_type(onnx::ValueInfoProto* vi, int elem, const std::vector<int64_t>& dims) {
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (auto d : dims) shape->add_dim()->set_dim_value(d);
}

void add_in(onnx::GraphProto* g, const std::string& name, int elem, const std::vector<int64_t>& dims) {
  auto* vi = g->add_input();
  vi->set_name(name);
  set_type(vi, elem, dims);
}

void add_out(onnx::GraphProto* g, const std::string& name, int elem, const std::vector<int64_t>& dims) {
  auto* vi = g->add_output();
  vi->set_name(name);
  set_type(vi, elem, dims);
}

// An output whose shape is left to inference (only its element type is declared).
void add_out_untyped_shape(onnx::GraphProto* g, const std::string& name, int elem) {
  auto* vi = g->add_output();
  vi->set_name(name);
  vi->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
}

onnx::NodeProto* add_node(onnx::GraphProto* g, const std::string& op, const std::vector<std::string>& ins,
                          const std::vector<std::string>& outs) {
  auto* n = g->add_node();
  n->set_op_type(op);
  n->set_name(op + "_" + std::to_string(g->node_size()));
  for (auto& i : ins) n->add_input(i);
  for (auto& o : outs) n->add_output(o);
  return n;
}

template <typename T>
onnx::TensorProto make_tensor(const std::string& name, int elem, const std::vector<int64_t>& dims,
                              const std::vector<T>& v) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(elem);
  for (auto d : dims) t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)));
  return t;
}

template <typename T>
void add_constant(onnx::GraphProto* g, const std::string& out, int elem, const std::vector<int64_t>& dims,
                  const std::vector<T>& v) {
  auto* n = add_node(g, "Constant", {}, {out});
  auto* a = n->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  *a->mutable_t() = make_tensor<T>("", elem, dims, v);
}

void set_graph(onnx::NodeProto* n, const std::string& name, const onnx::GraphProto& body) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::GRAPH);
  *a->mutable_g() = body;
}

void set_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a->add_ints(x);
}

void set_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

onnx::ModelProto make_model(int opset) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* imp = m.add_opset_import();
  imp->set_domain("");
  imp->set_version(opset);
  m.mutable_graph()->set_name("control_flow");
  return m;
}

template <typename T>
HostTensor host(DataType dt, Dims dims, const std::vector<T>& v) {
  HostTensor t;
  t.dtype = dt;
  t.dims = std::move(dims);
  t.data.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}
HostTensor host_bool(bool b) { return host<uint8_t>(DataType::kBOOL, {}, {static_cast<uint8_t>(b)}); }
HostTensor host_i64(int64_t v) { return host<int64_t>(DataType::kINT64, {}, {v}); }

template <typename T>
std::vector<T> values(const HostTensor& t) {
  std::vector<T> v(t.data.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

using Outputs = std::map<std::string, HostTensor>;

// Parses, builds and deserializes the model; the engine goes through its bytes like a deployed one.
std::unique_ptr<Engine> build_engine(const onnx::ModelProto& m, Status* status) {
  std::string bytes;
  m.SerializeToString(&bytes);
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  *status = parser.parse(bytes.data(), bytes.size());
  if (!status->ok()) return nullptr;
  auto config = builder.create_builder_config();
  auto blob = builder.build_serialized_network(*network, *config);
  if (!blob.ok()) {
    *status = blob.status();
    return nullptr;
  }
  Runtime rt(quiet);
  auto engine = rt.deserialize_engine(blob->data(), blob->size());
  if (!engine.ok()) {
    *status = engine.status();
    return nullptr;
  }
  return std::move(engine).value();
}

Outputs run(const Engine& engine, const std::vector<std::pair<std::string, HostTensor>>& inputs) {
  auto ctx = engine.create_execution_context();
  auto r = ctx->infer(inputs);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  Outputs out;
  if (r.ok())
    for (auto& [name, t] : *r) out[name] = t;
  return out;
}

// A Loop body (iter, cond, s) -> (cond', s + iter + 1, s + iter + 1): sums 1..M with partial sums as scan output.
onnx::GraphProto sum_body() {
  onnx::GraphProto b;
  b.set_name("sum_body");
  add_in(&b, "i", kI64, {});
  add_in(&b, "c", kBool, {});
  add_in(&b, "s", kI64, {});
  add_constant<int64_t>(&b, "one", kI64, {}, {1});
  add_node(&b, "Add", {"i", "one"}, {"i1"});
  add_node(&b, "Add", {"s", "i1"}, {"s2"});
  add_node(&b, "Identity", {"c"}, {"c_out"});
  add_out(&b, "c_out", kBool, {});
  add_out(&b, "s2", kI64, {});
  add_out(&b, "s2", kI64, {});  // the same value twice: loop-carried and scanned
  return b;
}

}  // namespace

TEST(ControlFlow, IfChoosesBetweenConstants) {
  auto m = make_model(13);
  auto* g = m.mutable_graph();
  add_in(g, "cond", kBool, {});
  onnx::GraphProto then_g, else_g;
  then_g.set_name("then");
  add_constant<float>(&then_g, "a", kF32, {2}, {1.f, 2.f});
  add_out(&then_g, "a", kF32, {2});
  else_g.set_name("else");
  add_constant<float>(&else_g, "b", kF32, {2}, {3.f, 4.f});
  add_out(&else_g, "b", kF32, {2});
  auto* n = add_node(g, "If", {"cond"}, {"y"});
  set_graph(n, "then_branch", then_g);
  set_graph(n, "else_branch", else_g);
  add_out(g, "y", kF32, {2});

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  EXPECT_EQ(values<float>(run(*engine, {{"cond", host_bool(true)}})["y"]), (std::vector<float>{1.f, 2.f}));
  EXPECT_EQ(values<float>(run(*engine, {{"cond", host_bool(false)}})["y"]), (std::vector<float>{3.f, 4.f}));
}

// Branches read the outer input x, an outer initializer k and an outer intermediate x2 that only a branch uses
// (dead-code elimination must keep its producer).
TEST(ControlFlow, IfCapturesOuterValues) {
  auto m = make_model(13);
  auto* g = m.mutable_graph();
  add_in(g, "cond", kBool, {});
  add_in(g, "x", kF32, {3});
  *g->add_initializer() = make_tensor<float>("k", kF32, {3}, {10.f, 20.f, 30.f});
  add_node(g, "Mul", {"x", "x"}, {"x2"});
  onnx::GraphProto then_g, else_g;
  then_g.set_name("then");
  add_node(&then_g, "Add", {"x2", "k"}, {"t"});
  add_out(&then_g, "t", kF32, {3});
  else_g.set_name("else");
  add_node(&else_g, "Mul", {"x", "k"}, {"e"});
  add_out(&else_g, "e", kF32, {3});
  auto* n = add_node(g, "If", {"cond"}, {"y"});
  set_graph(n, "then_branch", then_g);
  set_graph(n, "else_branch", else_g);
  add_out(g, "y", kF32, {3});

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  auto x = host<float>(DataType::kFLOAT, {3}, {1.f, 2.f, 3.f});
  EXPECT_EQ(values<float>(run(*engine, {{"cond", host_bool(true)}, {"x", x}})["y"]),
            (std::vector<float>{11.f, 24.f, 39.f}));
  EXPECT_EQ(values<float>(run(*engine, {{"cond", host_bool(false)}, {"x", x}})["y"]),
            (std::vector<float>{10.f, 40.f, 90.f}));
}

TEST(ControlFlow, LoopSumsOneToN) {
  auto m = make_model(13);
  auto* g = m.mutable_graph();
  add_in(g, "n", kI64, {});
  *g->add_initializer() = make_tensor<int64_t>("s0", kI64, {}, {0});
  auto* n = add_node(g, "Loop", {"n", "", "s0"}, {"sum", "partials"});
  set_graph(n, "body", sum_body());
  add_out(g, "sum", kI64, {});
  add_out_untyped_shape(g, "partials", kI64);

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  auto out = run(*engine, {{"n", host_i64(5)}});
  EXPECT_EQ(values<int64_t>(out["sum"]), std::vector<int64_t>{15});
  EXPECT_EQ(out["partials"].dims, (Dims{5}));
  EXPECT_EQ(values<int64_t>(out["partials"]), (std::vector<int64_t>{1, 3, 6, 10, 15}));
  // No iteration: the initial value comes back and the scan output is empty.
  out = run(*engine, {{"n", host_i64(0)}});
  EXPECT_EQ(values<int64_t>(out["sum"]), std::vector<int64_t>{0});
  EXPECT_EQ(out["partials"].dims, (Dims{0}));
}

// No trip count: the body's condition (against an outer-scope limit) ends the loop.
TEST(ControlFlow, LoopStopsOnConditionWithCapturedLimit) {
  auto m = make_model(16);
  auto* g = m.mutable_graph();
  add_in(g, "limit", kI64, {});
  *g->add_initializer() = make_tensor<int64_t>("s0", kI64, {}, {0});
  *g->add_initializer() = make_tensor<uint8_t>("go", kBool, {}, {1});
  onnx::GraphProto b;
  b.set_name("body");
  add_in(&b, "i", kI64, {});
  add_in(&b, "c", kBool, {});
  add_in(&b, "s", kI64, {});
  add_constant<int64_t>(&b, "one", kI64, {}, {1});
  add_node(&b, "Add", {"i", "one"}, {"i1"});
  add_node(&b, "Add", {"s", "i1"}, {"s2"});
  add_node(&b, "Less", {"i1", "limit"}, {"c_out"});
  add_out(&b, "c_out", kBool, {});
  add_out(&b, "s2", kI64, {});
  auto* n = add_node(g, "Loop", {"", "go", "s0"}, {"sum"});
  set_graph(n, "body", b);
  add_out(g, "sum", kI64, {});

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  // Iterations add 1, 2, 3, 4; the fourth sees i1 == 4, which is not < 4.
  EXPECT_EQ(values<int64_t>(run(*engine, {{"limit", host_i64(4)}})["sum"]), std::vector<int64_t>{10});
  EXPECT_EQ(values<int64_t>(run(*engine, {{"limit", host_i64(1)}})["sum"]), std::vector<int64_t>{1});
}

// A Loop whose body holds an If whose branches read the top-level input x: a capture through two scopes.
TEST(ControlFlow, NestedCaptureThroughLoopAndIf) {
  auto m = make_model(13);
  auto* g = m.mutable_graph();
  add_in(g, "m", kI64, {});
  add_in(g, "x", kF32, {3});
  *g->add_initializer() = make_tensor<float>("acc0", kF32, {3}, {0.f, 0.f, 0.f});
  onnx::GraphProto then_g, else_g, b;
  then_g.set_name("then");
  add_node(&then_g, "Add", {"acc", "x"}, {"t"});
  add_out(&then_g, "t", kF32, {3});
  else_g.set_name("else");
  add_node(&else_g, "Sub", {"acc", "x"}, {"e"});
  add_out(&else_g, "e", kF32, {3});
  b.set_name("body");
  add_in(&b, "i", kI64, {});
  add_in(&b, "c", kBool, {});
  add_in(&b, "acc", kF32, {3});
  add_constant<int64_t>(&b, "two", kI64, {}, {2});
  add_node(&b, "Less", {"i", "two"}, {"early"});
  auto* branch = add_node(&b, "If", {"early"}, {"acc2"});
  set_graph(branch, "then_branch", then_g);
  set_graph(branch, "else_branch", else_g);
  add_out(&b, "c", kBool, {});  // a body input returned as is
  add_out(&b, "acc2", kF32, {3});
  auto* n = add_node(g, "Loop", {"m", "", "acc0"}, {"y"});
  set_graph(n, "body", b);
  add_out(g, "y", kF32, {3});

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  auto x = host<float>(DataType::kFLOAT, {3}, {1.f, 2.f, 3.f});
  // acc: x, 2x, then x again (the third iteration subtracts).
  EXPECT_EQ(values<float>(run(*engine, {{"m", host_i64(2)}, {"x", x}})["y"]), (std::vector<float>{2.f, 4.f, 6.f}));
  EXPECT_EQ(values<float>(run(*engine, {{"m", host_i64(3)}, {"x", x}})["y"]), (std::vector<float>{1.f, 2.f, 3.f}));
}

TEST(ControlFlow, ScanCumulativeSumBothDirections) {
  for (int64_t direction : {0, 1}) {
    auto m = make_model(11);
    auto* g = m.mutable_graph();
    add_in(g, "xs", kF32, {3, 2});
    *g->add_initializer() = make_tensor<float>("s0", kF32, {2}, {0.f, 0.f});
    onnx::GraphProto b;
    b.set_name("body");
    add_in(&b, "s", kF32, {2});
    add_in(&b, "x", kF32, {2});
    add_node(&b, "Add", {"s", "x"}, {"s2"});
    add_node(&b, "Identity", {"s2"}, {"scan_out"});
    add_out(&b, "s2", kF32, {2});
    add_out(&b, "scan_out", kF32, {2});
    auto* n = add_node(g, "Scan", {"s0", "xs"}, {"total", "running"});
    set_graph(n, "body", b);
    set_int(n, "num_scan_inputs", 1);
    set_ints(n, "scan_input_directions", {direction});
    add_out(g, "total", kF32, {2});
    add_out(g, "running", kF32, {3, 2});

    Status st;
    auto engine = build_engine(m, &st);
    ASSERT_TRUE(engine) << st.to_string();
    auto out = run(*engine, {{"xs", host<float>(DataType::kFLOAT, {3, 2}, {1.f, 2.f, 3.f, 4.f, 5.f, 6.f})}});
    EXPECT_EQ(values<float>(out["total"]), (std::vector<float>{9.f, 12.f}));
    EXPECT_EQ(values<float>(out["running"]),
              direction == 0 ? (std::vector<float>{1.f, 2.f, 4.f, 6.f, 9.f, 12.f})
                             : (std::vector<float>{5.f, 6.f, 8.f, 10.f, 9.f, 12.f}))
        << "direction " << direction;
  }
}

// ONNX lets a Loop body leave its inputs untyped (ONNX's own function expansion of Range writes such bodies): the
// iteration number is an int64 scalar, the condition a bool, each loop-carried value takes its initial value's
// type. The body's outputs are typed from there.
// Opset 21: newer than the linked libonnx knows (17 on Debian), so its shape inference, which would type the
// body first, is skipped and Kiln's own gives the types.
TEST(ControlFlow, UntypedLoopBodyInputsTakeTheLoopsTypes) {
  auto m = make_model(21);
  auto* g = m.mutable_graph();
  add_in(g, "n", kI64, {});
  *g->add_initializer() = make_tensor<int64_t>("s0", kI64, {}, {0});
  onnx::GraphProto b = sum_body();
  for (auto& in : *b.mutable_input()) in.clear_type();
  auto* n = add_node(g, "Loop", {"n", "", "s0"}, {"sum", "partials"});
  set_graph(n, "body", b);
  add_out(g, "sum", kI64, {});
  add_out_untyped_shape(g, "partials", kI64);

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  auto out = run(*engine, {{"n", host_i64(4)}});
  EXPECT_EQ(values<int64_t>(out["sum"]), std::vector<int64_t>{10});
  EXPECT_EQ(values<int64_t>(out["partials"]), (std::vector<int64_t>{1, 3, 6, 10}));
}

// An untyped Scan body (the expansion of LinearAttention writes these): the states take the initial states'
// types and shapes, each scan input one slice of the outer input, here along axis 1 of a value computed in the
// graph (so nothing about it is declared): [3, 2] scanned along axis 1 gives slices of shape [3].
TEST(ControlFlow, UntypedScanBodyInputsAreSlicesOfTheScanInputs) {
  auto m = make_model(21);  // past libonnx's inference, as above
  auto* g = m.mutable_graph();
  add_in(g, "xs", kF32, {3, 2});
  add_constant<float>(g, "two", kF32, {}, {2.f});
  add_node(g, "Mul", {"xs", "two"}, {"xs2"});
  *g->add_initializer() = make_tensor<float>("s0", kF32, {3}, {0.f, 0.f, 0.f});
  onnx::GraphProto b;
  b.set_name("body");
  b.add_input()->set_name("s");
  b.add_input()->set_name("x");
  add_node(&b, "Add", {"s", "x"}, {"s2"});
  add_node(&b, "Identity", {"s2"}, {"scan_out"});
  b.add_output()->set_name("s2");
  b.add_output()->set_name("scan_out");
  auto* n = add_node(g, "Scan", {"s0", "xs2"}, {"total", "running"});
  set_graph(n, "body", b);
  set_int(n, "num_scan_inputs", 1);
  set_ints(n, "scan_input_axes", {1});
  // Output shapes left to inference, which takes them from the body's: a wrong slice shape would show here.
  add_out_untyped_shape(g, "total", kF32);
  add_out_untyped_shape(g, "running", kF32);

  Status st;
  auto engine = build_engine(m, &st);
  ASSERT_TRUE(engine) << st.to_string();
  const auto& plan = engine->plan();
  for (const auto& io : plan.io) {
    const auto& v = plan.values[io.value];
    if (io.name == "running") EXPECT_EQ(ops::shape_to_string(v.shape), "[2,3]");
    if (io.name == "total") EXPECT_EQ(ops::shape_to_string(v.shape), "[3]");
  }
  auto out = run(*engine, {{"xs", host<float>(DataType::kFLOAT, {3, 2}, {1.f, 2.f, 3.f, 4.f, 5.f, 6.f})}});
  // Columns of 2 * xs: [2, 6, 10] and [4, 8, 12]; their running sums.
  EXPECT_EQ(out["running"].dims, (Dims{2, 3}));
  EXPECT_EQ(values<float>(out["running"]), (std::vector<float>{2.f, 6.f, 10.f, 6.f, 14.f, 22.f}));
  EXPECT_EQ(values<float>(out["total"]), (std::vector<float>{6.f, 14.f, 22.f}));
}

// A graph input of the model itself must still declare its type: only bodies take theirs from the node.
TEST(ControlFlow, UntypedTopLevelInputIsStillAnError) {
  auto m = make_model(13);
  auto* g = m.mutable_graph();
  g->add_input()->set_name("x");
  add_node(g, "Identity", {"x"}, {"y"});
  add_out(g, "y", kF32, {2});
  Status st;
  auto engine = build_engine(m, &st);
  EXPECT_FALSE(engine);
  EXPECT_NE(st.message().find("graph input 'x' declares no type"), std::string::npos) << st.to_string();
}

// The runtime validates a body like a top-level engine: a damaged nested engine is rejected, naming the node.
TEST(ControlFlow, DamagedBodyIsRejectedByTheReader) {
  auto m = make_model(13);
  auto* g = m.mutable_graph();
  add_in(g, "n", kI64, {});
  *g->add_initializer() = make_tensor<int64_t>("s0", kI64, {}, {0});
  auto* n = add_node(g, "Loop", {"n", "", "s0"}, {"sum", "partials"});
  set_graph(n, "body", sum_body());
  add_out(g, "sum", kI64, {});
  add_out_untyped_shape(g, "partials", kI64);
  std::string bytes;
  m.SerializeToString(&bytes);
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  ASSERT_TRUE(parser.parse(bytes.data(), bytes.size()).ok());
  auto blob = builder.build_serialized_network(*network, *builder.create_builder_config());
  ASSERT_TRUE(blob.ok()) << blob.status().to_string();

  auto f = engine_format::decode(blob->data(), blob->size());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  std::vector<Tensor> data(f->values.size());
  std::vector<const Tensor*> weights(f->values.size(), nullptr);
  for (size_t i = 0; i < f->values.size(); ++i) {
    auto& v = f->values[i];
    if (!v.is_constant) continue;
    data[i] = Tensor::wrap(v.dtype, ops::static_dims(v.shape),
                           const_cast<uint8_t*>(blob->data() + f->weights_offset + v.weight_offset));
    weights[i] = &data[i];
  }
  bool damaged = false;
  for (auto& node : f->nodes)
    if (auto* a = node.attrs.find("body")) {
      const auto* body = dynamic_cast<const engine_format::SerializedSubgraph*>(a->g().get());
      ASSERT_NE(body, nullptr);
      std::vector<uint8_t> broken = body->engine();
      broken[broken.size() / 2] ^= 0x5a;  // inside a checksummed section
      node.attrs.set("body", std::shared_ptr<const Subgraph>(
                                 std::make_shared<engine_format::SerializedSubgraph>(broken, body->captures())));
      damaged = true;
    }
  ASSERT_TRUE(damaged);
  auto bad = engine_format::encode(std::move(*f), weights);
  ASSERT_TRUE(bad.ok()) << bad.status().to_string();
  Runtime rt(quiet);
  auto e = rt.deserialize_engine(bad->data(), bad->size());
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), ErrorCode::kInvalidEngine);
  EXPECT_NE(e.status().message().find("subgraph 'body'"), std::string::npos) << e.status().message();
}
