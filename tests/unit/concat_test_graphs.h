// Graphs for the concat elimination tests: the pass and the runtime's in-place decision (unit tests, CPU) and the
// in-place runs against the CPU reference (tests/gpu/test_concat_inplace.cpp). Widths of 128 elements make every
// slice a multiple of 256 bytes in FP16 and FP32 alike (runtime::kSliceAlignment).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cnn_test_util.h"
#include "passes/pass.h"
#include "runtime/concat_inplace.h"

namespace kiln::test {

struct ConcatNet {
  std::unique_ptr<ir::Graph> g = std::make_unique<ir::Graph>();
  std::vector<Tensor> inputs;  // random, one per graph input
  std::string what;            // for SCOPED_TRACE
};

inline ir::Value* add_op(ir::Graph& g, const std::string& op, const std::string& name, std::vector<ir::Value*> in,
                         Attributes a = {}) {
  return g.add_node(op, name, in, {name + "_out"}, std::move(a), 17)->outputs[0];
}

inline ir::Value* add_weight(ir::Graph& g, const std::string& name, std::vector<int64_t> shape, DataType dt,
                             uint32_t seed, double scale) {
  return g.add_constant(name, random_tensor(dt, std::move(shape), seed, -scale, scale));
}

inline ir::Value* add_concat(ir::Graph& g, std::vector<ir::Value*> in, int64_t axis,
                             const std::string& name = "concat") {
  Attributes a;
  a.set("axis", axis);
  return add_op(g, "Concat", name, std::move(in), a);
}

inline ir::Value* add_reshape(ir::Graph& g, ir::Value* x, std::vector<int64_t> shape, const std::string& name) {
  const auto rank = static_cast<int64_t>(shape.size());
  return add_op(g, "Reshape", name, {x, g.add_constant(name + "_shape", Tensor::from_vector<int64_t>({rank}, shape))});
}

// Shape inference on the built graph; the net's inputs drawn at random.
inline void finish(ConcatNet& net, std::string what) {
  Status st = run_passes(*net.g, {});
  EXPECT_TRUE(st.ok()) << st.message();
  for (size_t i = 0; i < net.g->inputs().size(); ++i) {
    const ir::Value* v = net.g->inputs()[i];
    net.inputs.push_back(random_tensor(v->dtype, ops::static_dims(v->shape), 100 + static_cast<uint32_t>(i)));
  }
  net.what = std::move(what) + " " + dtype_name(net.g->inputs()[0]->dtype);
}

inline std::string case_name(const std::string& base, int64_t n, int64_t axis) {
  return base + " n=" + std::to_string(n) + " axis=" + std::to_string(axis);
}

// x[n,128] -> Relu, MatMul -> Concat(axis) -> y (the engine output itself when concat_is_output, else Sigmoid).
inline ConcatNet relu_matmul(DataType dt, int64_t n, int64_t axis, bool concat_is_output) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* a = add_op(g, "Relu", "relu", {x});
  ir::Value* m = add_op(g, "MatMul", "matmul", {x, add_weight(g, "w", {128, 128}, dt, 1, 0.09)});
  ir::Value* c = add_concat(g, {a, m}, axis);
  g.outputs().push_back(concat_is_output ? c : add_op(g, "Sigmoid", "sigmoid", {c}));
  finish(net, case_name(concat_is_output ? "relu+matmul -> output" : "relu+matmul -> sigmoid", n, axis));
  return net;
}

// x[n,128] -> Relu, MatMul, Gemm (with bias) -> Concat(axis) -> Sigmoid -> y.
inline ConcatNet three_producers(DataType dt, int64_t n, int64_t axis) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* a = add_op(g, "Relu", "relu", {x});
  ir::Value* m = add_op(g, "MatMul", "matmul", {x, add_weight(g, "w1", {128, 128}, dt, 1, 0.09)});
  ir::Value* gm = add_op(g, "Gemm", "gemm",
                         {x, add_weight(g, "w2", {128, 128}, dt, 2, 0.09), add_weight(g, "b2", {128}, dt, 3, 0.5)});
  ir::Value* c = add_concat(g, {a, m, gm}, axis);
  g.outputs().push_back(add_op(g, "Sigmoid", "sigmoid", {c}));
  finish(net, case_name("relu+matmul+gemm", n, axis));
  return net;
}

// x[n,8,8,8] -> Conv 3x3 (pads 1, bias) and Relu -> Concat(axis) -> Relu -> y.
inline ConcatNet conv_relu(DataType dt, int64_t n, int64_t axis) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 8, 8, 8}, dt);
  Attributes ca;
  ca.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  ca.set("kernel_shape", std::vector<int64_t>{3, 3});
  ir::Value* cv = add_op(g, "Conv", "conv",
                         {x, add_weight(g, "w", {8, 8, 3, 3}, dt, 1, 0.12), add_weight(g, "b", {8}, dt, 2, 0.5)}, ca);
  ir::Value* r = add_op(g, "Relu", "relu", {x});
  ir::Value* c = add_concat(g, {cv, r}, axis);
  g.outputs().push_back(add_op(g, "Relu", "relu_out", {c}));
  finish(net, case_name("conv+relu", n, axis));
  return net;
}

// x[n,128] -> a = Relu, b = Sigmoid -> Concat -> Relu -> Sigmoid -> Relu -> y1; then y2 = a * x, read after all
// of that: the arena must keep a (inside the concat's output) alive past the values planned after the concat.
inline ConcatNet read_after(DataType dt, int64_t n, int64_t axis) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* a = add_op(g, "Relu", "relu", {x});
  ir::Value* b = add_op(g, "Sigmoid", "sigmoid", {x});
  ir::Value* c = add_concat(g, {a, b}, axis);
  ir::Value* d = add_op(g, "Relu", "relu2", {c});
  ir::Value* e = add_op(g, "Sigmoid", "sigmoid2", {d});
  g.outputs().push_back(add_op(g, "Relu", "relu3", {e}));
  g.outputs().push_back(add_op(g, "Mul", "mul", {a, x}));
  finish(net, case_name("input read after the concat", n, axis));
  return net;
}

// x[n,128] -> Relu and Sigmoid, each Reshaped to [n,2,64] -> Concat(axis) -> Relu -> y: the inputs are Reshape
// outputs (another value's bytes), so the concat copies at every shape.
inline ConcatNet reshaped_inputs(DataType dt, int64_t n, int64_t axis) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* a = add_reshape(g, add_op(g, "Relu", "relu", {x}), {n, 2, 64}, "reshape_a");
  ir::Value* b = add_reshape(g, add_op(g, "Sigmoid", "sigmoid", {x}), {n, 2, 64}, "reshape_b");
  ir::Value* c = add_concat(g, {a, b}, axis);
  g.outputs().push_back(add_op(g, "Relu", "relu_out", {c}));
  finish(net, case_name("reshaped inputs", n, axis));
  return net;
}

// x[n,128] -> a = Relu, ra = Reshape(a) to [n,2,64] (before the concat), b = Sigmoid -> Concat(a, b) -> Sigmoid
// -> y1; after it Relu(ra) -> y2, and ra itself is output y3: reads and an engine-output copy through an alias
// of an input that lives inside the concat's output.
inline ConcatNet alias_of_input(DataType dt, int64_t n, int64_t axis) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* a = add_op(g, "Relu", "relu", {x});
  ir::Value* ra = add_reshape(g, a, {n, 2, 64}, "reshape_a");
  ir::Value* b = add_op(g, "Sigmoid", "sigmoid", {x});
  ir::Value* c = add_concat(g, {a, b}, axis);
  g.outputs().push_back(add_op(g, "Sigmoid", "sigmoid_out", {c}));
  g.outputs().push_back(add_op(g, "Relu", "relu_ra", {ra}));
  g.outputs().push_back(ra);
  finish(net, case_name("reshape of an input read elsewhere", n, axis));
  return net;
}

inline ir::Value* add_conv3x3(ir::Graph& g, ir::Value* x, int64_t cin, int64_t cout, DataType dt, uint32_t seed,
                              const std::string& name) {
  Attributes ca;
  ca.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  ca.set("kernel_shape", std::vector<int64_t>{3, 3});
  return add_op(g, "Conv", name,
                {x, add_weight(g, name + "_w", {cout, cin, 3, 3}, dt, seed, 0.12),
                 add_weight(g, name + "_b", {cout}, dt, seed + 1, 0.5)},
                ca);
}

// A DenseNet-like block of nested channel concats, x[n,8,8,8]:
//   concat1 = Concat(relu0(conv0(x)), sigmoid0(x));  concat2 = Concat(concat1, relu1(conv1(concat1)));
//   concat3 = Concat(relu2(conv2(concat2)), concat2)  (levels 3: the inner concat second, at a nonzero offset)
// -> Relu -> y (or the last concat is y itself, concat_is_output). Each concat's output is also read by the
// next conv. At batch 1 every level is in place.
inline ConcatNet dense_block(DataType dt, int64_t n, int levels, bool concat_is_output = false) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 8, 8, 8}, dt);
  ir::Value* f0 = add_op(g, "Relu", "relu0", {add_conv3x3(g, x, 8, 8, dt, 1, "conv0")});
  ir::Value* c = add_concat(g, {f0, add_op(g, "Sigmoid", "sigmoid0", {x})}, 1, "concat1");
  ir::Value* f1 = add_op(g, "Relu", "relu1", {add_conv3x3(g, c, 16, 8, dt, 3, "conv1")});
  c = add_concat(g, {c, f1}, 1, "concat2");
  if (levels >= 3) {
    ir::Value* f2 = add_op(g, "Relu", "relu2", {add_conv3x3(g, c, 24, 8, dt, 5, "conv2")});
    c = add_concat(g, {f2, c}, 1, "concat3");
  }
  g.outputs().push_back(concat_is_output ? c : add_op(g, "Relu", "relu_out", {c}));
  finish(net, "dense block of " + std::to_string(levels) + " nested concats" + (concat_is_output ? " -> output" : "") +
                  " n=" + std::to_string(n));
  return net;
}

// x[n,128] -> concat1 = Concat(Relu, Sigmoid), concat2 = Concat(MatMul, concat1) along axis -> Sigmoid -> y1;
// after both, y2 = Neg(concat1) and y3 = Reshape(concat1) bound as an engine output: the nested inner output is
// read, and copied out through an alias, from inside the outer one.
inline ConcatNet nested_read_elsewhere(DataType dt, int64_t n, int64_t axis) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* c1 = add_concat(g, {add_op(g, "Relu", "relu", {x}), add_op(g, "Sigmoid", "sigmoid", {x})}, axis,
                             "concat1");
  ir::Value* m = add_op(g, "MatMul", "matmul", {x, add_weight(g, "w", {128, 128}, dt, 1, 0.09)});
  ir::Value* c2 = add_concat(g, {m, c1}, axis, "concat2");
  g.outputs().push_back(add_op(g, "Sigmoid", "sigmoid_out", {c2}));
  g.outputs().push_back(add_op(g, "Neg", "neg", {c1}));
  g.outputs().push_back(add_reshape(g, c1, {-1}, "reshape_c1"));
  finish(net, case_name("nested inner concat read elsewhere", n, axis));
  return net;
}

// x[n,128] -> concat1 = Concat(Relu, Sigmoid) along axis 0 ([2n,128]), concat2 = Concat(concat1, MatMul(x2))
// along axis 1 ([2n,256]) -> Sigmoid -> y: the outer slices are never contiguous (2n rows), so the inner concat
// is eliminated on its own and the outer one copies.
inline ConcatNet inner_only(DataType dt, int64_t n) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  ir::Value* x = graph_input(g, "x", {n, 128}, dt);
  ir::Value* x2 = graph_input(g, "x2", {2 * n, 128}, dt);
  ir::Value* c1 = add_concat(g, {add_op(g, "Relu", "relu", {x}), add_op(g, "Sigmoid", "sigmoid", {x})}, 0,
                             "concat1");
  ir::Value* m = add_op(g, "MatMul", "matmul", {x2, add_weight(g, "w", {128, 128}, dt, 1, 0.09)});
  g.outputs().push_back(add_op(g, "Sigmoid", "sigmoid_out", {add_concat(g, {c1, m}, 1, "concat2")}));
  finish(net, "inner concat only, n=" + std::to_string(n));
  return net;
}

// Three levels of FP32 [1,w] concats along axis 1, of Relus of graph inputs of the given widths:
//   c1 = Concat(l1a, l1b), c2 = Concat(l2, c1), c3 = Concat(c2, l3) -> Sigmoid -> y.
// Widths that are not multiples of 64 floats make the next slice's offset miss kSliceAlignment at some level.
inline ConcatNet nested_widths(int64_t l1a, int64_t l1b, int64_t l2, int64_t l3) {
  ConcatNet net;
  ir::Graph& g = *net.g;
  auto leaf = [&](const std::string& name, int64_t w) {
    return add_op(g, "Relu", name, {graph_input(g, name + "_x", {1, w})});
  };
  ir::Value* c1 = add_concat(g, {leaf("l1a", l1a), leaf("l1b", l1b)}, 1, "c1");
  ir::Value* c2 = add_concat(g, {leaf("l2", l2), c1}, 1, "c2");
  ir::Value* c3 = add_concat(g, {c2, leaf("l3", l3)}, 1, "c3");
  g.outputs().push_back(add_op(g, "Sigmoid", "y", {c3}));
  finish(net, "nested widths " + std::to_string(l1a) + "," + std::to_string(l1b) + "," + std::to_string(l2) + "," +
                  std::to_string(l3));
  return net;
}

// The cases of nested_widths, with the concats the runtime eliminates and the root c1 lives in ("" where c1
// copies); the unit tests check the decision, the GPU tests the results.
struct NestedWidthsCase {
  int64_t l1a, l1b, l2, l3;
  std::vector<std::string> eliminated;
  std::string root_of_c1;
};
inline const std::vector<NestedWidthsCase>& nested_widths_cases() {
  static const std::vector<NestedWidthsCase> cases = {
      {64, 64, 64, 64, {"c1", "c2", "c3"}, "c3"},  // 256-byte leaves: all three, in one root
      {3, 64, 64, 64, {"c2"}, ""},                // c1's second slice at 12 bytes: c1 copies into its slice of
                                                  // c2; c2 ends at 524 bytes, so l3's slice in c3 is misaligned
      {64, 32, 32, 64, {"c1", "c3"}, "c1"},        // c1 at 128 bytes in c2: c2 copies (its 512 bytes a slice of
                                                  // c3), c1 is its own root
      {64, 64, 64, 3, {"c1", "c2", "c3"}, "c3"},   // the last slice may be any size
      {64, 3, 64, 64, {"c1", "c2"}, "c2"},         // c2 ends at 524 bytes: only c3 copies
  };
  return cases;
}

inline const ir::Node* node_named(const ir::Graph& g, const std::string& name) {
  for (const auto& n : g.nodes())
    if (n->name == name) return n.get();
  return nullptr;
}

inline bool marked_in_place(const Attributes& a) {
  const Attribute* m = a.find(runtime::kInPlaceAttr);
  return m && m->type() == AttrType::kINT && m->i() == 1;
}

// Runs concat_elimination alone (every op assumed to have a device kernel unless has_kernel says otherwise).
inline Status mark_concats(ir::Graph& g, passes::PassOptions o = {}) {
  return run_passes(g, list_of(passes::make_concat_elimination()), std::move(o));
}

}  // namespace kiln::test
