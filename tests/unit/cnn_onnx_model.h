// Small CNNs as ONNX models (opset 17, float32, like torch.onnx exports): a resnet stem and basic block, a
// mobilenet_v2 inverted residual (ReLU6, depthwise), an efficientnet squeeze-excite gate (SiLU) and a linear head;
// an efficientnet squeeze-excite block alone; a resnet downsampling block; and vit's patch embedding with its token
// layout chain.
// Shared by the pass tests (CPU reference) and the GPU tests (full CUDA pipeline).
#pragma once

#include <cmath>

#include "cnn_test_util.h"
#include "onnx_model_util.h"

namespace kiln::test {

struct CnnBuilder {
  onnx::ModelProto m = onnx_model(17);
  onnx::GraphProto* g = m.mutable_graph();
  uint32_t seed = 100;
  int count = 0;
  int convs = 0;

  std::string init(const std::vector<int64_t>& dims, float lo, float hi) {
    std::string name = "init" + std::to_string(count++);
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t->add_dims(d);
    Tensor r = random_f32(dims, seed++, lo, hi);
    for (int64_t i = 0; i < r.numel(); ++i) t->add_float_data(r.data<float>()[i]);
    return name;
  }
  std::string scalar(float v) {
    std::string name = "init" + std::to_string(count++);
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_float_data(v);
    return name;
  }
  std::string node(const std::string& op, const std::vector<std::string>& in, onnx::NodeProto** out = nullptr) {
    std::string y = "t" + std::to_string(count++);
    auto* n = add_onnx_node(g, op, in, {y});
    if (out) *out = n;
    return y;
  }
  static void ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  std::string conv(const std::string& x, int64_t cin, int64_t cout, int64_t k, int64_t stride = 1, int64_t group = 1) {
    float s = 1.f / std::sqrt(static_cast<float>(cin / group * k * k));
    onnx::NodeProto* n;
    std::string y = node("Conv", {x, init({cout, cin / group, k, k}, -s, s)}, &n);
    ints(n, "pads", {k / 2, k / 2, k / 2, k / 2});
    ints(n, "strides", {stride, stride});
    set_attr_int(n, "group", group);
    ++convs;
    return y;
  }
  std::string bn(const std::string& x, int64_t c) {
    return node("BatchNormalization",
                {x, init({c}, 0.5f, 1.5f), init({c}, -0.2f, 0.2f), init({c}, -0.2f, 0.2f), init({c}, 0.5f, 2.f)});
  }
  std::string ints_init(const std::string& name, const std::vector<int64_t>& v) {  // a 1-D int64 initializer
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) t->add_int64_data(x);
    return name;
  }
  std::string relu6(const std::string& x) { return node("Clip", {x, scalar(0.f), scalar(6.f)}); }
  std::string silu(const std::string& x) { return node("Mul", {x, node("Sigmoid", {x})}); }
};

// Input "x" [4, 3, 32, 32], output "y" [4, 10]; *convs: the number of Conv nodes.
inline onnx::ModelProto small_cnn(int* convs) {
  CnnBuilder b;
  add_graph_input(b.g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {4, 3, 32, 32}));
  // Stem and a resnet basic block.
  std::string s = b.node("Relu", {b.bn(b.conv("x", 3, 16, 3, 2), 16)});
  onnx::NodeProto* mp;
  s = b.node("MaxPool", {s}, &mp);
  CnnBuilder::ints(mp, "kernel_shape", {3, 3});
  CnnBuilder::ints(mp, "strides", {2, 2});
  CnnBuilder::ints(mp, "pads", {1, 1, 1, 1});
  std::string r = b.node("Relu", {b.bn(b.conv(s, 16, 16, 3), 16)});
  r = b.bn(b.conv(r, 16, 16, 3), 16);
  std::string blk = b.node("Relu", {b.node("Add", {r, s})});
  // A mobilenet_v2 inverted residual: expand, depthwise, project, add.
  std::string e = b.relu6(b.bn(b.conv(blk, 16, 32, 1), 32));
  e = b.relu6(b.bn(b.conv(e, 32, 32, 3, 1, 32), 32));
  e = b.bn(b.conv(e, 32, 16, 1), 16);
  std::string inv = b.node("Add", {blk, e});
  // An efficientnet squeeze-excite gate.
  std::string gap = b.node("GlobalAveragePool", {inv});
  std::string gate = b.node("Sigmoid", {b.conv(b.silu(b.conv(gap, 16, 4, 1)), 4, 16, 1)});
  std::string se = b.node("Mul", {inv, gate});
  // Head.
  std::string f = b.node("Flatten", {b.node("GlobalAveragePool", {b.silu(b.bn(b.conv(se, 16, 24, 1), 24))})});
  onnx::NodeProto* gm;
  std::string y = b.node("Gemm", {f, b.init({10, 24}, -0.3f, 0.3f), b.init({10}, -0.1f, 0.1f)}, &gm);
  set_attr_int(gm, "transB", 1);
  add_onnx_node(b.g, "Identity", {y}, {"y"});
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {4, 10}));
  *convs = b.convs;
  return b.m;
}

// conv -> torch's GroupNorm export (Reshape [0, 4, -1], InstanceNormalization, Reshape back by Shape, Mul gamma,
// Add beta) -> SiLU -> conv. Input "x" [4, 3, 32, 32], output "y" [4, 16, 32, 32].
inline onnx::ModelProto groupnorm_cnn() {
  CnnBuilder b;
  add_graph_input(b.g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {4, 3, 32, 32}));
  std::string h = b.conv("x", 3, 32, 3);
  std::string grouped = b.node("Reshape", {h, b.ints_init("view", {0, 4, -1})});
  std::string norm = b.node("InstanceNormalization", {grouped, b.init({4}, 0.8f, 1.2f), b.init({4}, -0.1f, 0.1f)});
  std::string back = b.node("Reshape", {norm, b.node("Shape", {h})});
  std::string affine =
      b.node("Add", {b.node("Mul", {back, b.init({32, 1, 1}, 0.5f, 1.5f)}), b.init({32, 1, 1}, -0.5f, 0.5f)});
  add_onnx_node(b.g, "Identity", {b.conv(b.silu(affine), 32, 16, 3)}, {"y"});
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {4, 16, 32, 32}));
  return b.m;
}

// An efficientnet_b0-like squeeze-excite block at reduced size: stem conv, BN, SiLU, then the gate (global
// average pool, 1x1 reduce, SiLU, 1x1 expand, Sigmoid, Mul) and a 1x1 projection. Input "x" [n, 8, hw, hw],
// output "y" [n, 24, hw, hw]; `c` channels inside the block (144 in b0's 56x56 stage). With `depthwise`, the stem
// is b0's expand 1x1 conv + BN + SiLU and a depthwise 3x3 conv + BN + SiLU (the squeeze then reads a depthwise
// convolution's output, as in the model).
inline onnx::ModelProto se_block_cnn(int64_t n, int64_t hw, int64_t c, bool depthwise = false) {
  CnnBuilder b;
  add_graph_input(b.g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {n, 8, hw, hw}));
  std::string s = depthwise ? b.silu(b.bn(b.conv(b.silu(b.bn(b.conv("x", 8, c, 1), c)), c, c, 3, 1, c), c))
                            : b.silu(b.bn(b.conv("x", 8, c, 3), c));
  std::string gap = b.node("GlobalAveragePool", {s});
  std::string gate = b.node("Sigmoid", {b.conv(b.silu(b.conv(gap, c, c / 24, 1)), c / 24, c, 1)});
  std::string y = b.bn(b.conv(b.node("Mul", {s, gate}), c, 24, 1), 24);
  add_onnx_node(b.g, "Identity", {y}, {"y"});
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {n, 24, hw, hw}));
  return b.m;
}

// A resnet downsampling block at reduced size: stem 3x3 conv + BN + ReLU to c channels, then the main path (3x3
// stride-s conv + BN) and the shortcut (1x1 stride-s conv + BN, resnet's downsample) added and ReLU'd. Input "x"
// [n, 8, hw, hw], output "y" [n, cout, (hw-1)/s+1, same]; with odd hw the strided outputs round up.
inline onnx::ModelProto downsample_block_cnn(int64_t n, int64_t hw, int64_t c, int64_t cout, int64_t stride = 2) {
  CnnBuilder b;
  add_graph_input(b.g, "x", value_type("tensor", onnx::TensorProto::FLOAT, {n, 8, hw, hw}));
  std::string s = b.node("Relu", {b.bn(b.conv("x", 8, c, 3), c)});
  std::string main = b.bn(b.conv(s, c, cout, 3, stride), cout);
  std::string shortcut = b.bn(b.conv(s, c, cout, 1, stride), cout);
  std::string y = b.node("Relu", {b.node("Add", {main, shortcut})});
  add_onnx_node(b.g, "Identity", {y}, {"y"});
  const int64_t ho = (hw - 1) / stride + 1;
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {n, cout, ho, ho}));
  return b.m;
}

// torchvision's VisionTransformer._process_input at reduced size: x [batch, c, hw, hw] (batch -1: dynamic) -> Conv
// (kernel = stride = patch, bias) -> Reshape to [n, hidden, patches] with n taken from Shape(x) -> Transpose(0,2,1)
// -> + position embedding -> y [batch, patches, hidden]. `nchw_reader`: the conv output also feeds a ReduceMean
// over H and W, added to y, so one reader still wants NCHW.
inline onnx::ModelProto vit_stem(int64_t batch, int64_t c, int64_t hw, int64_t patch, int64_t hidden,
                                 bool nchw_reader = false) {
  CnnBuilder b;
  onnx::TypeProto in = value_type("tensor", onnx::TensorProto::FLOAT, {batch, c, hw, hw});
  if (batch < 0) in.mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_param("batch");
  add_graph_input(b.g, "x", in);
  onnx::NodeProto* conv;
  const float s = 1.f / std::sqrt(static_cast<float>(c * patch * patch));
  std::string y = b.node("Conv", {"x", b.init({hidden, c, patch, patch}, -s, s), b.init({hidden}, -0.5f, 0.5f)}, &conv);
  CnnBuilder::ints(conv, "kernel_shape", {patch, patch});
  CnnBuilder::ints(conv, "strides", {patch, patch});
  CnnBuilder::ints(conv, "pads", {0, 0, 0, 0});
  CnnBuilder::ints(conv, "dilations", {1, 1});
  set_attr_int(conv, "group", 1);
  // n = x.shape[0]; the exporter's target is Concat(Unsqueeze(n), hidden, h*w).
  const int64_t patches = (hw / patch) * (hw / patch);
  add_int_constant(b.g, "zero", 0);
  onnx::NodeProto* gather;
  std::string n = b.node("Gather", {b.node("Shape", {"x"}), "zero"}, &gather);
  set_attr_int(gather, "axis", 0);
  onnx::NodeProto* cat;
  std::string target = b.node("Concat", {b.node("Unsqueeze", {n, b.ints_init("axes0", {0})}),
                                         b.ints_init("hidden", {hidden}), b.ints_init("patches", {patches})},
                              &cat);
  set_attr_int(cat, "axis", 0);
  onnx::NodeProto* tr;
  std::string tokens = b.node("Transpose", {b.node("Reshape", {y, target})}, &tr);
  CnnBuilder::ints(tr, "perm", {0, 2, 1});
  std::string out = b.node("Add", {tokens, b.init({patches, hidden}, -0.1f, 0.1f)});
  if (nchw_reader) {
    onnx::NodeProto* mean;
    std::string pooled = b.node("ReduceMean", {y}, &mean);
    CnnBuilder::ints(mean, "axes", {2, 3});
    set_attr_int(mean, "keepdims", 0);
    out = b.node("Add", {out, b.node("Unsqueeze", {pooled, b.ints_init("axes1", {1})})});
  }
  add_onnx_node(b.g, "Identity", {out}, {"y"});
  add_graph_output(b.g, "y", value_type("tensor", onnx::TensorProto::FLOAT, {batch, patches, hidden}));
  return b.m;
}

// The model as Kiln's ONNX parser imports it (what the builder then runs its passes on).
inline std::unique_ptr<ir::Graph> import_onnx(const onnx::ModelProto& m) {
  std::string bytes;
  m.SerializeToString(&bytes);
  SilentLogger quiet;
  Builder builder(quiet);
  auto network = builder.create_network();
  OnnxParser parser(*network, quiet);
  Status st = parser.parse(bytes.data(), bytes.size());
  EXPECT_TRUE(st.ok()) << st.message();
  return network->graph().clone();
}

// The imported model after the CPU pipeline and, separately, after the CUDA FP16 pipeline (every kernel assumed
// present): the pair the CNN pass tests inspect and compare. Null graphs when a step fails (and the test fails).
struct CpuCudaGraphs {
  std::unique_ptr<ir::Graph> cpu, cuda;
};
inline CpuCudaGraphs cpu_and_cuda_graphs(const onnx::ModelProto& m, passes::PassOptions cuda_options = {}) {
  CpuCudaGraphs r;
  auto g = import_onnx(m);
  if (::testing::Test::HasFailure()) return r;
  auto cuda = g->clone();
  Status st = run_passes(*g, passes::pipeline_for(Backend::kCPU));
  EXPECT_TRUE(st.ok()) << "CPU pipeline: " << st.message();
  Status sc = run_cuda_pipeline(*cuda, DataType::kHALF, std::move(cuda_options));
  EXPECT_TRUE(sc.ok()) << "CUDA pipeline: " << sc.message();
  if (st.ok() && sc.ok()) r.cpu = std::move(g), r.cuda = std::move(cuda);
  return r;
}

// Both graphs run on the reference kernels with input x give the same single output within tol (FP16 rounding).
inline void expect_same_on_reference(const ir::Graph& want, const ir::Graph& got, const Tensor& x, double tol) {
  auto a = run_reference(want, {x});
  auto b = run_reference(got, {x});
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  expect_close(b[0], a[0], tol, tol);
}

}  // namespace kiln::test
