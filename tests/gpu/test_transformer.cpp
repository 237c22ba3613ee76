// GPU tests of the transformer fusions: unfused networks (as exporters write them) run on the CPU reference and,
// fused by the CUDA pipeline into FusedMatMul / FusedAttention, on the GPU; plus kiln::FusedMatMul nodes directly,
// across every epilogue the kernel splits between cuBLASLt and its own pass.
#include <cmath>
#include <functional>
#include <limits>

#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "passes/shape_inference.h"

namespace kiln::gpu_testing {
namespace {

using Shape = std::vector<int64_t>;

// Builds the graph on the network's IR: `in` are the network inputs (one per NetCase input), the result is the
// list of values to mark as outputs.
using BuildFn = std::function<std::vector<ir::Value*>(ir::Graph& g, const std::vector<ir::Value*>& in)>;

struct NetCase {
  BuildFn build;
  std::vector<Tensor> inputs;  // float32 network inputs
  std::vector<BuilderFlag> flags;
  double atol = 1e-4, rtol = 1e-4;
  std::string fused_op;  // must appear in the CUDA engine (kiln domain)
};

// Appends a node and infers its outputs, as NetworkDefinition::add_op does (which only knows ai.onnx).
ir::Value* node(ir::Graph& g, const std::string& op, std::vector<ir::Value*> in, Attributes a = {},
                const std::string& domain = "") {
  ir::Node* n = g.add_node(op, g.unique_node_name(op), in, {""}, std::move(a), domain.empty() ? 17 : 1, domain);
  Status st = passes::infer_node(g, *n);
  EXPECT_TRUE(st.ok()) << op << ": " << st.message();
  return n->outputs[0];
}

ir::Value* weight(ir::Graph& g, Shape shape, uint32_t seed, double scale) {
  return g.add_constant("w" + std::to_string(seed), random_tensor(DataType::kFLOAT, shape, seed, -scale, scale));
}

ir::Value* scalar(ir::Graph& g, float v) {
  static int counter = 0;
  return g.add_constant("s" + std::to_string(counter++), Tensor::from_vector<float>({}, {v}));
}

std::vector<Tensor> run_net(const NetCase& c, Backend backend, std::vector<std::string>* ops) {
  Builder builder;
  auto net = builder.create_network();
  std::vector<ir::Value*> in;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const std::string name = "in" + std::to_string(i);
    EXPECT_NE(net->add_input(name, c.inputs[i].dtype(), c.inputs[i].shape()), nullptr);
    in.push_back(net->graph().find_value(name));
  }
  for (ir::Value* v : c.build(net->graph(), in)) {
    ITensor* t = net->find_tensor(v->name);
    EXPECT_NE(t, nullptr);
    if (t) {
      EXPECT_TRUE(net->mark_output(t).ok());
    }
  }
  auto config = builder.create_builder_config();
  config->set_backend(backend);
  if (backend == Backend::kCUDA) {
    config->clear_flag(BuilderFlag::kTF32);
    for (auto f : c.flags) config->set_flag(f);
  }
  auto engine = test::load_engine(builder.build_serialized_network(*net, *config));
  if (!engine) return {};
  if (ops)
    for (const auto& n : engine->plan().nodes) ops->push_back(n.op_type);
  if (backend == Backend::kCUDA) {
    EXPECT_EQ(test::host_layers(*engine), "") << "layers ran on the host";
  }
  return test::infer(*engine, test::numbered_inputs(c.inputs));
}

void expect_fused_agrees(const NetCase& c) {
  std::vector<std::string> cpu_ops, gpu_ops;
  std::vector<Tensor> cpu = run_net(c, Backend::kCPU, &cpu_ops);
  std::vector<Tensor> gpu = run_net(c, Backend::kCUDA, &gpu_ops);
  if (!c.fused_op.empty()) {
    EXPECT_NE(std::find(gpu_ops.begin(), gpu_ops.end(), c.fused_op), gpu_ops.end())
        << c.fused_op << " not in the engine";
    EXPECT_EQ(std::find(cpu_ops.begin(), cpu_ops.end(), c.fused_op), cpu_ops.end()) << "the CPU pipeline fused";
  }
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t k = 0; k < cpu.size(); ++k) {
    ASSERT_EQ(cpu[k].shape(), gpu[k].shape());
    Tensor a = cpu[k].cast(DataType::kDOUBLE), b = gpu[k].cast(DataType::kDOUBLE);
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < a.numel(); ++i) {
      const double x = a.data<double>()[i], y = b.data<double>()[i];
      if (!(std::fabs(x - y) <= c.atol + c.rtol * std::fabs(x)) && bad++ == 0) first = i;
    }
    EXPECT_EQ(bad, 0) << "output " << k << ": " << bad << " of " << a.numel() << " differ; first at " << first
                      << ": cpu " << (first >= 0 ? a.data<double>()[first] : 0) << " gpu "
                      << (first >= 0 ? b.data<double>()[first] : 0);
  }
}

// A case in `pr`'s precision and tolerances over float32 `inputs`.
NetCase precision_case(const Precision& pr, std::vector<Tensor> inputs, std::string fused_op = "") {
  NetCase c;
  c.inputs = std::move(inputs);
  c.flags = pr.flags;
  c.atol = pr.atol;
  c.rtol = pr.rtol;
  c.fused_op = std::move(fused_op);
  return c;
}

// torch.onnx's erf GELU of h: 0.5 * h * (1 + erf(h / sqrt(2))), which fuse_gelu recognizes.
ir::Value* erf_gelu(ir::Graph& g, ir::Value* h) {
  ir::Value* erf = node(g, "Erf", {node(g, "Div", {h, scalar(g, 1.4142135623730951f)})});
  return node(g, "Mul", {node(g, "Mul", {h, node(g, "Add", {erf, scalar(g, 1.0f)})}), scalar(g, 0.5f)});
}

// ---- FusedMatMul through the epilogue fusion ----

// bert's FFN: MatMul + bias, torch.onnx's decomposed erf GELU, MatMul + bias, residual.
TEST(GpuTransformer, BertFfnFusesIntoTwoFusedMatMuls) {
  KILN_REQUIRE_GPU();
  const int64_t B = 4, S = 128, E = 768, F = 3072;
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B, S, E}, 1)}, "FusedMatMul");
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      ir::Value* x = in[0];
      ir::Value* h = node(g, "Add", {node(g, "MatMul", {x, weight(g, {E, F}, 2, 0.03)}), weight(g, {F}, 3, 0.5)});
      ir::Value* gelu = erf_gelu(g, h);
      ir::Value* y = node(g, "Add", {node(g, "MatMul", {gelu, weight(g, {F, E}, 4, 0.02)}), weight(g, {E}, 5, 0.5)});
      return std::vector<ir::Value*>{node(g, "Add", {x, y})};
    };
    expect_fused_agrees(c);
  }
}

// KILN_FUSE_LAYERNORM_IO=1: bert's embedding (token Gather + position Add + LayerNorm) becomes one
// kiln::EmbedLayerNormalization and, in FP16/BF16, the last LayerNorm stores the float32 output itself (no Cast
// layer left); the network still agrees with the CPU reference in every precision, with int64 token ids including
// negative ones and batch 2 x 128 tokens (the register-resident kernel's shapes) and 3 x 37 (odd rows).
TEST(GpuTransformer, LayerNormsTakeTheEmbeddingAndTheOutputCast) {
  KILN_REQUIRE_GPU();
  ScopedEnv io("KILN_FUSE_LAYERNORM_IO", "1");
  const int64_t V = 1000, E = 768;
  for (const Precision& pr : kPrecisions)
    for (auto [B, S] : std::vector<std::pair<int64_t, int64_t>>{{2, 128}, {3, 37}}) {
      SCOPED_TRACE(std::string(pr.name) + " " + std::to_string(B) + "x" + std::to_string(S));
      std::vector<int64_t> ids(B * S);
      for (int64_t i = 0; i < B * S; ++i) ids[i] = (i * 131 + 7) % V - (i % 9 == 0 ? V : 0);
      NetCase c = precision_case(pr, {Tensor::from_vector<int64_t>({B, S}, ids)}, "EmbedLayerNormalization");
      c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
        Attributes ln;
        ln.set("axis", int64_t{-1});
        ln.set("epsilon", 1e-12f);
        Attributes ga;
        ga.set("axis", int64_t{0});
        ir::Value* tok = node(g, "Gather", {weight(g, {V, E}, 11, 1.0), in[0]}, ga);
        ir::Value* emb = node(g, "Add", {tok, weight(g, {1, S, E}, 12, 0.5)});
        ir::Value* x = node(g, "LayerNormalization", {emb, weight(g, {E}, 13, 1.0), weight(g, {E}, 14, 0.2)}, ln);
        ir::Value* h = node(g, "Add", {node(g, "MatMul", {x, weight(g, {E, E}, 15, 0.03)}), weight(g, {E}, 16, 0.5)});
        ir::Value* r = node(g, "Add", {x, h});
        return std::vector<ir::Value*>{
            node(g, "LayerNormalization", {r, weight(g, {E}, 17, 1.0), weight(g, {E}, 18, 0.2)}, ln)};
      };
      std::vector<std::string> ops;
      (void)run_net(c, Backend::kCUDA, &ops);
      if (pr.flags.empty()) {
        EXPECT_EQ(std::count(ops.begin(), ops.end(), "LayerNormalization"), 1);
      } else {
        EXPECT_EQ(std::count(ops.begin(), ops.end(), "Cast"), 0) << "the output Cast went into the LayerNorm";
        EXPECT_EQ(std::count(ops.begin(), ops.end(), "Pointwise"), 0) << "nor became a Pointwise layer";
      }
      EXPECT_EQ(std::count(ops.begin(), ops.end(), "Gather"), 0);
      expect_fused_agrees(c);
    }
}

// HF GPT-2's MLP as exported: Conv1D is Reshape([B,S,E] -> [B*S,E]), Gemm with bias, Reshape back, and the
// tanh GELU reads the [B,S,F] Reshape; fuse_matmul_epilogue moves the GELU above the Reshape into the Gemm's
// epilogue. The second Conv1D and the residual follow as exported; the residual goes into that Gemm's epilogue.
TEST(GpuTransformer, Gpt2Conv1dGeluAfterReshape) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, S = 64, E = 256, F = 1024;
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B, S, E}, 11)}, "FusedMatMul");
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      auto shape = [&](std::vector<int64_t> v) {
        static int k = 0;
        return g.add_constant("conv1d_shape" + std::to_string(k++),
                              Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
      };
      auto conv1d = [&](ir::Value* x, int64_t k, int64_t n, uint32_t seed) {
        ir::Value* rows = node(g, "Reshape", {x, shape({-1, k})});
        ir::Value* h = node(g, "Gemm", {rows, weight(g, {k, n}, seed, 0.05), weight(g, {n}, seed + 1, 0.5)});
        return node(g, "Reshape", {h, shape({B, S, n})});
      };
      ir::Value* h = conv1d(in[0], E, F, 12);
      // 0.5 * h * (1 + tanh(sqrt(2/pi) * (h + 0.044715 * h^3)))
      ir::Value* cube = node(g, "Pow", {h, scalar(g, 3.0f)});
      ir::Value* inner = node(g, "Add", {h, node(g, "Mul", {scalar(g, 0.044715f), cube})});
      ir::Value* t = node(g, "Tanh", {node(g, "Mul", {scalar(g, 0.7978845608028654f), inner})});
      ir::Value* gelu = node(g, "Mul", {node(g, "Mul", {scalar(g, 0.5f), h}), node(g, "Add", {scalar(g, 1.0f), t})});
      return std::vector<ir::Value*>{node(g, "Add", {in[0], conv1d(gelu, F, E, 14)})};
    };
    // Both Conv1Ds become FusedMatMuls: the first with the GELU in its epilogue, the second with the residual
    // (moved above its Reshape); no elementwise layer of the block is left.
    expect_fused_agrees(c);
    std::vector<std::string> ops;
    run_net(c, Backend::kCUDA, &ops);
    EXPECT_EQ(std::count(ops.begin(), ops.end(), "FusedMatMul"), 2);
    EXPECT_EQ(std::count(ops.begin(), ops.end(), "Add"), 0);
    if (pr.flags.empty()) {  // (FP16/BF16 engines keep the input and output Casts, which may become Pointwise)
      EXPECT_EQ(std::count(ops.begin(), ops.end(), "Pointwise"), 0);
    }
  }
}

// gpt2's tanh GELU (Pow form), ReLU, Gemm with transB, an odd N (cuBLASLt alignment), batched B.
TEST(GpuTransformer, ActivationsGemmOddSizesAndBatchedB) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c;
    c.inputs = {random_tensor(DataType::kFLOAT, {3, 37, 64}, 10), random_tensor(DataType::kFLOAT, {3, 37, 29}, 11),
                random_tensor(DataType::kFLOAT, {50, 64}, 12)};
    c.flags = pr.flags;
    c.atol = pr.atol;
    c.rtol = pr.rtol;
    c.fused_op = "FusedMatMul";
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      ir::Value* h = node(g, "Add", {node(g, "MatMul", {in[0], weight(g, {64, 37}, 13, 0.2)}), weight(g, {37}, 14, 1)});
      ir::Value* cube = node(g, "Pow", {h, scalar(g, 3.0f)});
      ir::Value* inner = node(g, "Add", {h, node(g, "Mul", {scalar(g, 0.044715f), cube})});
      ir::Value* t = node(g, "Tanh", {node(g, "Mul", {scalar(g, 0.7978845608028654f), inner})});
      ir::Value* gelu = node(g, "Mul", {node(g, "Mul", {scalar(g, 0.5f), h}), node(g, "Add", {scalar(g, 1.0f), t})});
      // [3,37,37] x batched [3,37,29] + bias, then ReLU.
      ir::Value* r = node(g, "Relu", {node(g, "Add", {node(g, "MatMul", {gelu, in[1]}), weight(g, {29}, 15, 1)})});
      Attributes ga;
      ga.set("transB", Attribute(int64_t{1}));
      ga.set("alpha", Attribute(0.5f));
      ir::Value* gm =
          node(g, "Relu", {node(g, "Gemm", {in[2], weight(g, {33, 64}, 16, 0.2), weight(g, {33}, 17, 1)}, ga)});
      return std::vector<ir::Value*>{r, gm};
    };
    expect_fused_agrees(c);
  }
}

// A chain of short dependent kernels, most of them launched with programmatic dependent launch (pdl.cuh): the
// erf-GELU epilogue pass after each cuBLASLt GEMM, LayerNormalization and a Pointwise kernel. A kernel that touched
// its input before its predecessor finished would read stale values somewhere along the chain.
TEST(GpuTransformer, DependentLaunchChainMatchesReference) {
  KILN_REQUIRE_GPU();
  // float32 (tight tolerances: the best detector) and float16; bfloat16's error would grow along the chain.
  for (const Precision& pr : {kPrecisions[0], kPrecisions[1]}) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {4, 64, 256}, 40)}, "FusedMatMul");
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      ir::Value* x = in[0];
      Attributes ln;
      ln.set("axis", Attribute(int64_t{-1}));
      for (uint32_t i = 0; i < 6; ++i) {
        ir::Value* h = node(g, "Add", {node(g, "MatMul", {x, weight(g, {256, 256}, 41 + 4 * i, 0.1)}),
                                       weight(g, {256}, 42 + 4 * i, 0.5)});
        // fuse_gelu and the epilogue fusion turn the erf GELU into FusedMatMul's gelu_erf.
        ir::Value* y = node(g, "LayerNormalization",
                            {erf_gelu(g, h), weight(g, {256}, 43 + 4 * i, 1), weight(g, {256}, 44 + 4 * i, 1)}, ln);
        x = node(g, "Add", {node(g, "Mul", {y, scalar(g, 0.5f)}), x});
      }
      return std::vector<ir::Value*>{x};
    };
    expect_fused_agrees(c);
  }
}

// kiln::FusedMatMul directly: every activation with and without bias and residual, so both the cuBLASLt
// epilogues and the fallback kernel run.
TEST(GpuTransformer, FusedMatMulEveryEpilogue) {
  KILN_REQUIRE_GPU();
  for (const char* act : {"none", "relu", "gelu_erf", "gelu_tanh"})
    for (int bias = 0; bias < 2; ++bias)
      for (int res = 0; res < 3; ++res)  // 2: the residual before the activation (residual_first, cuBLASLt's C)
        for (const Precision& pr : kPrecisions) {
          SCOPED_TRACE(std::string(act) + " bias " + std::to_string(bias) + " res " + std::to_string(res) + " " +
                       pr.name);
          NetCase c;
          c.inputs = {random_tensor(DataType::kFLOAT, {2, 40, 96}, 20),
                      random_tensor(DataType::kFLOAT, {2, 40, 64}, 21)};
          c.flags = pr.flags;
          c.atol = pr.atol;
          c.rtol = pr.rtol;
          const std::string a = act;
          c.build = [&, a, bias, res](ir::Graph& g, const std::vector<ir::Value*>& in) {
            Attributes at;
            at.set("activation", Attribute(a));
            if (res == 2) at.set("residual_first", Attribute(int64_t{1}));
            std::vector<ir::Value*> ins = {in[0], weight(g, {96, 64}, 22, 0.2)};
            ins.push_back(bias ? weight(g, {64}, 23, 1) : nullptr);
            if (res) ins.push_back(in[1]);
            if (!res && !bias) ins.pop_back();
            return std::vector<ir::Value*>{node(g, "FusedMatMul", ins, at, "kiln")};
          };
          // The CPU reference runs the same kiln op: this compares kernels, not fusions (no fused_op to look for).
          expect_fused_agrees(c);
        }
}

// ---- FusedAttention through the attention fusion ----

Tensor padding_mask(int64_t B, int64_t S) {
  Tensor m(DataType::kFLOAT, {B, 1, 1, S});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < S; ++j) m.data<float>()[b * S + j] = j >= S - 5 * b ? -10000.0f : 0.0f;
  return m;
}

Tensor causal_cond(int64_t S) {  // true where key j lies after query i (torch's masked_fill form)
  Tensor c(DataType::kBOOL, {S, S});
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) c.data<bool>()[i * S + j] = j > i;
  return c;
}

enum class Form { kBertDivPadding, kSdpaSplitScale, kCausalWhere };

void attention_case(Form form, int64_t B, int64_t H, int64_t S, int64_t D, const Precision& pr) {
  SCOPED_TRACE(std::string(pr.name) + " S=" + std::to_string(S) + " D=" + std::to_string(D));
  NetCase c;
  c.inputs = {random_tensor(DataType::kFLOAT, {B, H, S, D}, 30, -1, 1),
              random_tensor(DataType::kFLOAT, {B, H, S, D}, 31, -1, 1),
              random_tensor(DataType::kFLOAT, {B, H, S, D}, 32)};
  if (form == Form::kBertDivPadding) c.inputs.push_back(padding_mask(B, S));
  c.flags = pr.flags;
  c.atol = pr.atol;
  c.rtol = pr.rtol;
  // The fusion applies where the tensor-core kernel runs (FP16/BF16, head dims multiples of 8 up to 128); elsewhere
  // the unfused graph must still agree.
  const bool tc = !pr.flags.empty() && D % 8 == 0 && D <= 128;
  c.fused_op = tc ? "FusedAttention" : "";
  c.build = [form, S, D](ir::Graph& g, const std::vector<ir::Value*>& in) {
    Attributes t;
    t.set("perm", Attribute(std::vector<int64_t>{0, 1, 3, 2}));
    ir::Value* kt = node(g, "Transpose", {in[1]}, t);
    ir::Value* scores = nullptr;
    if (form == Form::kSdpaSplitScale) {
      const float s = std::sqrt(1.0f / std::sqrt(static_cast<float>(D)));
      scores = node(g, "MatMul", {node(g, "Mul", {in[0], scalar(g, s)}), node(g, "Mul", {kt, scalar(g, s)})});
    } else {
      scores = node(g, "Div", {node(g, "MatMul", {in[0], kt}), scalar(g, std::sqrt(static_cast<float>(D)))});
    }
    if (form == Form::kBertDivPadding) scores = node(g, "Add", {scores, in[3]});
    if (form == Form::kCausalWhere)
      scores = node(g, "Where", {g.add_constant("causal", causal_cond(S)), scalar(g, -3.4028234663852886e38f), scores});
    Attributes sm;
    sm.set("axis", Attribute(int64_t{-1}));
    return std::vector<ir::Value*>{node(g, "MatMul", {node(g, "Softmax", {scores}, sm), in[2]})};
  };
  expect_fused_agrees(c);
}

// torch 1.x nn.MultiheadAttention with batch_first=True as exported: the [B,S,E] input Transposed to
// sequence-first, one packed in_proj (MatMul + bias) Sliced in thirds, each Reshaped to [S,B*H,D] and Transposed
// to [B*H,S,D] (K to [B*H,D,S]), Q divided by sqrt(D), an [S,S] additive mask, the output Transposed back,
// Reshaped to [S*B,E] rows for the out_proj Gemm, Reshaped to [S,B,E] and Transposed to batch-first. The CUDA
// engine runs one FusedAttention reading the projection as bs3hd and writing bshd, with no Transpose layer.
void torch1_mha_case(int64_t B, int64_t S, int64_t H, int64_t D, const Precision& pr) {
  SCOPED_TRACE(std::string(pr.name) + " B=" + std::to_string(B) + " S=" + std::to_string(S));
  const int64_t E = H * D;
  NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B, S, E}, 70, -1, 1)},
                             pr.flags.empty() ? "" : "FusedAttention");
  Tensor mask(DataType::kFLOAT, {S, S});
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) mask.data<float>()[i * S + j] = (3 * i + j) % 7 == 0 ? -10000.0f : 0.0f;
  c.inputs.push_back(mask);
  c.build = [=](ir::Graph& g, const std::vector<ir::Value*>& in) {
    auto ints = [&](std::vector<int64_t> v) {
      static int k = 0;
      return g.add_constant("i" + std::to_string(k++),
                            Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
    };
    auto perm = [](std::vector<int64_t> p) {
      Attributes a;
      a.set("perm", Attribute(std::move(p)));
      return a;
    };
    ir::Value* xt = node(g, "Transpose", {in[0]}, perm({1, 0, 2}));
    ir::Value* a =
        node(g, "Add", {node(g, "MatMul", {xt, weight(g, {E, 3 * E}, 71, 0.1)}), weight(g, {3 * E}, 72, 0.1)});
    auto heads = [&](int k, std::vector<int64_t> p) {
      ir::Value* third = node(g, "Slice", {a, ints({k * E}), ints({(k + 1) * E}), ints({-1})});
      return node(g, "Transpose", {node(g, "Reshape", {third, ints({S, B * H, D})})}, perm(std::move(p)));
    };
    ir::Value* q = node(g, "Div", {heads(0, {1, 0, 2}), scalar(g, std::sqrt(static_cast<float>(D)))});
    ir::Value* scores = node(g, "Add", {node(g, "MatMul", {q, heads(1, {1, 2, 0})}), in[1]});
    Attributes sm;
    sm.set("axis", Attribute(int64_t{-1}));
    ir::Value* o = node(g, "MatMul", {node(g, "Softmax", {scores}, sm), heads(2, {1, 0, 2})});
    ir::Value* rows = node(g, "Reshape", {node(g, "Transpose", {o}, perm({1, 0, 2})), ints({S * B, E})});
    ir::Value* proj = node(g, "Gemm", {rows, weight(g, {E, E}, 73, 0.1), weight(g, {E}, 74, 0.1)});
    ir::Value* y = node(g, "Transpose", {node(g, "Reshape", {proj, ints({S, B, E})})}, perm({1, 0, 2}));
    return std::vector<ir::Value*>{y};
  };
  std::vector<std::string> gpu_ops;
  if (!pr.flags.empty()) {
    run_net(c, Backend::kCUDA, &gpu_ops);
    EXPECT_EQ(std::count(gpu_ops.begin(), gpu_ops.end(), "Transpose"), 0) << "a Transpose layer is left";
  }
  expect_fused_agrees(c);
}

TEST(GpuTransformer, Torch1BatchFirstMultiheadAttention) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    torch1_mha_case(2, 33, 4, 32, pr);
    torch1_mha_case(3, 128, 12, 64, pr);
  }
}

TEST(GpuTransformer, AttentionBertLikePaddingMask) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) attention_case(Form::kBertDivPadding, 4, 12, 128, 64, pr);
}

TEST(GpuTransformer, AttentionVitLikeOddLengthNoMask) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) attention_case(Form::kSdpaSplitScale, 2, 12, 197, 64, pr);
}

// Grids of at least two blocks per SM take the four-warp kernel (64 queries per block sharing each K/V tile); the
// smaller cases above take the one-warp form.
TEST(GpuTransformer, AttentionFourWarpBlocks) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    attention_case(Form::kBertDivPadding, 12, 12, 128, 64, pr);
    attention_case(Form::kCausalWhere, 8, 12, 200, 64, pr);
  }
}

TEST(GpuTransformer, AttentionGpt2LikeCausal) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    attention_case(Form::kCausalWhere, 2, 12, 64, 64, pr);
    attention_case(Form::kCausalWhere, 1, 4, 150, 64, pr);  // several key tiles, a partial last one
  }
}

// Hugging Face's eager attention as transformers 4.4x exports it in float32 (tests/models/export_hf.py), from a
// 0/1 padding mask input: kHfBert adds (1 - m) * finfo(float32).min to the scores (as FP16/BF16 that constant must
// saturate, not become -inf: 0 * -inf would be NaN at every kept key); kHfDistilBert fills finfo.min by
// Where(Cast(Expand(m == 0, Shape(scores))), ...); kHfLlama adds the mask and runs the softmax between no-op Casts
// (float32 and back), the probabilities cast once more to V's type; kHfSdpa is torch 2's SDPA export of a boolean
// mask, Add(scores, Where(m != 0, 0, -inf)), with the NaN guard Where(IsNaN(p), 0, p) after the softmax.
enum class HfForm { kHfBert, kHfDistilBert, kHfLlama, kHfSdpa };

void hf_attention_case(HfForm form, int64_t B, int64_t H, int64_t S, int64_t D, const Precision& pr) {
  SCOPED_TRACE(std::string(pr.name) + " form " + std::to_string(static_cast<int>(form)));
  Tensor m(DataType::kFLOAT, {B, 1, 1, S});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < S; ++j) m.data<float>()[b * S + j] = j >= S - 3 * b ? 0.0f : 1.0f;
  const bool tc = !pr.flags.empty() && D % 8 == 0 && D <= 128;
  NetCase c = precision_case(pr,
                             {random_tensor(DataType::kFLOAT, {B, H, S, D}, 80, -1, 1),
                              random_tensor(DataType::kFLOAT, {B, H, S, D}, 81, -1, 1),
                              random_tensor(DataType::kFLOAT, {B, H, S, D}, 82), m},
                             tc ? "FusedAttention" : "");
  c.build = [form, D](ir::Graph& g, const std::vector<ir::Value*>& in) {
    const float lowest = -3.4028234663852886e38f;
    Attributes t;
    t.set("perm", Attribute(std::vector<int64_t>{0, 1, 3, 2}));
    auto cast = [&](ir::Value* x, int64_t to) {
      Attributes a;
      a.set("to", Attribute(to));
      return node(g, "Cast", {x}, a);
    };
    ir::Value* scores =
        node(g, "Div", {node(g, "MatMul", {in[0], node(g, "Transpose", {in[1]}, t)}),
                        scalar(g, std::sqrt(static_cast<float>(D)))});
    if (form == HfForm::kHfSdpa) {
      ir::Value* keep = node(g, "Not", {node(g, "Equal", {in[3], scalar(g, 0.0f)})});
      ir::Value* bias = node(g, "Where", {keep, scalar(g, 0.0f), scalar(g, -std::numeric_limits<float>::infinity())});
      scores = node(g, "Add", {scores, bias});
    } else if (form == HfForm::kHfDistilBert) {
      ir::Value* hide = node(g, "Equal", {in[3], scalar(g, 0.0f)});
      ir::Value* cond = cast(node(g, "Expand", {hide, node(g, "Shape", {scores})}), 9);
      scores = node(g, "Where", {cond, scalar(g, lowest), scores});
    } else {
      scores = node(g, "Add", {scores, node(g, "Mul", {node(g, "Sub", {scalar(g, 1.0f), in[3]}), scalar(g, lowest)})});
    }
    Attributes sm;
    sm.set("axis", Attribute(int64_t{-1}));
    ir::Value* p = form == HfForm::kHfLlama ? cast(cast(node(g, "Softmax", {cast(scores, 1)}, sm), 1), 1)
                                             : node(g, "Softmax", {scores}, sm);
    if (form == HfForm::kHfSdpa) p = node(g, "Where", {node(g, "IsNaN", {p}), scalar(g, 0.0f), p});
    return std::vector<ir::Value*>{node(g, "MatMul", {p, in[2]})};
  };
  expect_fused_agrees(c);
}

TEST(GpuTransformer, AttentionHuggingFaceEagerForms) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions)
    for (HfForm f : {HfForm::kHfBert, HfForm::kHfDistilBert, HfForm::kHfLlama, HfForm::kHfSdpa}) {
      hf_attention_case(f, 3, 4, 32, 32, pr);
      hf_attention_case(f, 2, 12, 77, 64, pr);
    }
}

// HF Llama's attention block in float32: q/k/v projections split into heads and Transposed to [B,H,S,D], rotary
// embeddings on q and k (x * cos + cat(-x2, x1) * sin with [S,D] constants), K^T, softmax, the output Transposed
// back. sink_head_transposes moves the q/k Transposes below the rotary, so the engine's rotary kernels broadcast
// cos/sin as [1,S,1,D] over [B,S,H,D] and FusedAttention reads q, k and v in place (no Transpose layer).
TEST(GpuTransformer, LlamaRotaryAttention) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, S = 50, H = 4, D = 64, E = H * D;
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B, S, E}, 95, -1, 1)},
                               pr.flags.empty() ? "" : "FusedAttention");
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      auto i64 = [&](std::vector<int64_t> v) {
        static int k = 0;
        return g.add_constant("rope_i" + std::to_string(k++),
                              Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
      };
      auto perm = [](std::vector<int64_t> p) {
        Attributes a;
        a.set("perm", Attribute(std::move(p)));
        return a;
      };
      ir::Value* cos = weight(g, {S, D}, 96, 1.0);
      ir::Value* sin = weight(g, {S, D}, 97, 1.0);
      auto heads = [&](uint32_t seed) {
        ir::Value* p = node(g, "MatMul", {in[0], weight(g, {E, E}, seed, 0.06)});
        return node(g, "Transpose", {node(g, "Reshape", {p, i64({B, S, H, D})})}, perm({0, 2, 1, 3}));
      };
      auto rotary = [&](ir::Value* t) {
        ir::Value* x1 = node(g, "Slice", {t, i64({0}), i64({D / 2}), i64({3})});
        ir::Value* x2 = node(g, "Slice", {t, i64({D / 2}), i64({D}), i64({3})});
        Attributes cat;
        cat.set("axis", Attribute(int64_t{-1}));
        ir::Value* rot = node(g, "Concat", {node(g, "Neg", {x2}), x1}, cat);
        return node(g, "Add", {node(g, "Mul", {t, cos}), node(g, "Mul", {rot, sin})});
      };
      ir::Value* q = rotary(heads(98));
      ir::Value* kt = node(g, "Transpose", {rotary(heads(99))}, perm({0, 1, 3, 2}));
      ir::Value* v = heads(100);
      ir::Value* sc = node(g, "Div", {node(g, "MatMul", {q, kt}), scalar(g, 8.0f)});
      Attributes sm;
      sm.set("axis", Attribute(int64_t{-1}));
      ir::Value* o = node(g, "MatMul", {node(g, "Softmax", {sc}, sm), v});
      return std::vector<ir::Value*>{
          node(g, "Reshape", {node(g, "Transpose", {o}, perm({0, 2, 1, 3})), i64({B, S, E})})};
    };
    if (!pr.flags.empty()) {
      std::vector<std::string> gpu_ops;
      run_net(c, Backend::kCUDA, &gpu_ops);
      EXPECT_EQ(std::count(gpu_ops.begin(), gpu_ops.end(), "Transpose"), 0) << "a Transpose layer is left";
    }
    expect_fused_agrees(c);
  }
}

// HF Llama/Qwen2/Mistral's grouped-query attention block in float32: as LlamaRotaryAttention with k and v projected
// to Hk heads and repeated to H by repeat_kv (Unsqueeze(2) -> Expand [B,Hk,n,S,D] -> Reshape [B,H,S,D]), and a
// causal mask. fuse_attention reads K and V unrepeated (FusedAttention with Hk K/V heads): no Expand and no
// Transpose layer is left, and the engine agrees with the CPU pipeline's unfused graph.
TEST(GpuTransformer, LlamaGroupedQueryAttention) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, S = 50, H = 8, D = 64, E = H * D;
  for (const int64_t Hk : {int64_t{2}, int64_t{1}})
    for (const Precision& pr : kPrecisions) {
      SCOPED_TRACE(std::string(pr.name) + " Hk=" + std::to_string(Hk));
      NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B, S, E}, 105, -1, 1)},
                                 pr.flags.empty() ? "" : "FusedAttention");
      c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
        auto i64 = [&](std::vector<int64_t> v) {
          static int k = 0;
          return g.add_constant("gqa_i" + std::to_string(k++),
                                Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v));
        };
        auto perm = [](std::vector<int64_t> p) {
          Attributes a;
          a.set("perm", Attribute(std::move(p)));
          return a;
        };
        ir::Value* cos = weight(g, {S, D}, 106, 1.0);
        ir::Value* sin = weight(g, {S, D}, 107, 1.0);
        auto heads = [&](int64_t h, uint32_t seed) {
          ir::Value* p = node(g, "MatMul", {in[0], weight(g, {E, h * D}, seed, 0.06)});
          return node(g, "Transpose", {node(g, "Reshape", {p, i64({B, S, h, D})})}, perm({0, 2, 1, 3}));
        };
        auto rotary = [&](ir::Value* t) {
          ir::Value* x1 = node(g, "Slice", {t, i64({0}), i64({D / 2}), i64({3})});
          ir::Value* x2 = node(g, "Slice", {t, i64({D / 2}), i64({D}), i64({3})});
          Attributes cat;
          cat.set("axis", Attribute(int64_t{-1}));
          ir::Value* rot = node(g, "Concat", {node(g, "Neg", {x2}), x1}, cat);
          return node(g, "Add", {node(g, "Mul", {t, cos}), node(g, "Mul", {rot, sin})});
        };
        auto repeat_kv = [&](ir::Value* t) {
          ir::Value* e = node(g, "Expand", {node(g, "Unsqueeze", {t, i64({2})}), i64({B, Hk, H / Hk, S, D})});
          return node(g, "Reshape", {e, i64({B, H, S, D})});
        };
        Tensor causal(DataType::kFLOAT, {1, 1, S, S});
        for (int64_t i = 0; i < S; ++i)
          for (int64_t j = 0; j < S; ++j) causal.data<float>()[i * S + j] = j > i ? -3.4028234663852886e38f : 0.f;
        ir::Value* q = rotary(heads(H, 108));
        ir::Value* kt = node(g, "Transpose", {repeat_kv(rotary(heads(Hk, 109)))}, perm({0, 1, 3, 2}));
        ir::Value* v = repeat_kv(heads(Hk, 110));
        ir::Value* sc = node(g, "Div", {node(g, "MatMul", {q, kt}), scalar(g, 8.0f)});
        sc = node(g, "Add", {sc, g.add_constant("gqa_causal", causal)});
        Attributes sm;
        sm.set("axis", Attribute(int64_t{-1}));
        ir::Value* o = node(g, "MatMul", {node(g, "Softmax", {sc}, sm), v});
        return std::vector<ir::Value*>{
            node(g, "Reshape", {node(g, "Transpose", {o}, perm({0, 2, 1, 3})), i64({B, S, E})})};
      };
      if (!pr.flags.empty()) {
        std::vector<std::string> gpu_ops;
        run_net(c, Backend::kCUDA, &gpu_ops);
        EXPECT_EQ(std::count(gpu_ops.begin(), gpu_ops.end(), "Transpose"), 0) << "a Transpose layer is left";
        EXPECT_EQ(std::count(gpu_ops.begin(), gpu_ops.end(), "Expand"), 0) << "K/V are still repeated";
      }
      expect_fused_agrees(c);
    }
}

// kiln::FusedAttention nodes with Hk K/V heads directly, on both kernels (tensor-core: FP16/BF16 and head dim 64;
// generic: FP32, and head dims 80 and 24), against the op's reference compute on the CPU.
TEST(GpuTransformer, FusedAttentionGroupedKv) {
  KILN_REQUIRE_GPU();
  struct Case {
    int64_t B, H, Hk, Sq, Sk, D;
    bool mask, causal;
  };
  for (const Case& k : {Case{2, 4, 2, 50, 50, 64, true, false}, Case{1, 6, 1, 77, 77, 64, false, true},
                        Case{2, 4, 2, 40, 40, 80, false, true}, Case{2, 6, 3, 17, 29, 24, true, false}})
    for (const Precision& pr : kPrecisions) {
      SCOPED_TRACE(std::string(pr.name) + " H=" + std::to_string(k.H) + " Hk=" + std::to_string(k.Hk) +
                   " D=" + std::to_string(k.D));
      NetCase c;
      c.inputs = {random_tensor(DataType::kFLOAT, {k.B, k.H, k.Sq, k.D}, 64, -1, 1),
                  random_tensor(DataType::kFLOAT, {k.B, k.Hk, k.Sk, k.D}, 65, -1, 1),
                  random_tensor(DataType::kFLOAT, {k.B, k.Hk, k.Sk, k.D}, 66)};
      if (k.mask) c.inputs.push_back(random_tensor(DataType::kFLOAT, {k.B, 1, k.Sq, k.Sk}, 67, -3, 0));
      c.flags = pr.flags;
      c.atol = pr.atol;
      c.rtol = pr.rtol;
      c.build = [k](ir::Graph& g, const std::vector<ir::Value*>& in) {
        Attributes a;
        a.set("scale", Attribute(0.3f));
        if (k.causal) a.set("causal", Attribute(int64_t{1}));
        return std::vector<ir::Value*>{node(g, "FusedAttention", in, a, "kiln")};
      };
      expect_fused_agrees(c);
    }
}

// Head dims 32 and 128 take the tensor-core kernel too, and so do 40, 80 and 96 (in zero-padded 64/96 tiles); 12
// and 160 stay unfused on CUDA.
TEST(GpuTransformer, AttentionOtherHeadDims) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    attention_case(Form::kBertDivPadding, 2, 4, 77, 80, pr);
    attention_case(Form::kCausalWhere, 1, 3, 70, 40, pr);
    attention_case(Form::kBertDivPadding, 2, 2, 65, 96, pr);
    attention_case(Form::kBertDivPadding, 1, 2, 33, 12, pr);
    attention_case(Form::kCausalWhere, 1, 2, 40, 160, pr);
    attention_case(Form::kCausalWhere, 1, 2, 33, 32, pr);
    attention_case(Form::kBertDivPadding, 2, 4, 130, 128, pr);
    attention_case(Form::kCausalWhere, 1, 2, 100, 128, pr);
  }
}

// The standard ONNX Attention operator (opset 23) has no CUDA kernel: lower_onnx_attention makes it FusedAttention in
// every precision (the generic kernel in FP32), 4-D with an additive mask and causal, 3-D grouped-query (4 query
// heads, 2 K/V heads) with heads read in place.
TEST(GpuTransformer, OnnxAttentionOperatorRunsAsFusedAttention) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions)
    for (const bool three_d : {false, true}) {
      SCOPED_TRACE(std::string(pr.name) + (three_d ? " 3-D" : " 4-D"));
      const int64_t B = 2, H = 4, S = 77, Sk = 90, D = 64;
      NetCase c = precision_case(pr, {}, "FusedAttention");
      if (three_d) {
        c.inputs = {random_tensor(DataType::kFLOAT, {B, S, H * D}, 80, -1, 1),  // grouped-query: 2 K/V heads
                    random_tensor(DataType::kFLOAT, {B, Sk, 2 * D}, 81, -1, 1),
                    random_tensor(DataType::kFLOAT, {B, Sk, 2 * D}, 82)};
      } else {
        c.inputs = {random_tensor(DataType::kFLOAT, {B, H, S, D}, 83, -1, 1),
                    random_tensor(DataType::kFLOAT, {B, H, Sk, D}, 84, -1, 1),
                    random_tensor(DataType::kFLOAT, {B, H, Sk, D}, 85),
                    random_tensor(DataType::kFLOAT, {B, 1, S, Sk}, 86, -4, 0)};
      }
      c.build = [three_d, H](ir::Graph& g, const std::vector<ir::Value*>& in) {
        Attributes a;
        if (three_d) {
          a.set("q_num_heads", Attribute(H));
          a.set("kv_num_heads", Attribute(int64_t{2}));
        } else {
          a.set("is_causal", Attribute(int64_t{1}));
        }
        ir::Node* n = g.add_node("Attention", g.unique_node_name("Attention"), in, {""}, std::move(a), 23);
        Status st = passes::infer_node(g, *n);
        EXPECT_TRUE(st.ok()) << st.message();
        return std::vector<ir::Value*>{n->outputs[0]};
      };
      expect_fused_agrees(c);
    }
}

// Einsum has no CUDA kernel: lower_einsum writes it as MatMuls, and an attention written as einsums then fuses
// (FP16/BF16; FP32 runs the MatMuls), with a projection einsum "bsd,ed->bse" after it. No layer on the host.
TEST(GpuTransformer, EinsumAttentionAndProjection) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, H = 4, S = 50, D = 64, E = H * D;
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr,
                               {random_tensor(DataType::kFLOAT, {B, S, H, D}, 60, -1, 1),
                                random_tensor(DataType::kFLOAT, {B, S, H, D}, 61, -1, 1),
                                random_tensor(DataType::kFLOAT, {B, S, H, D}, 62)},
                               pr.flags.empty() ? "" : "FusedAttention");
    c.build = [=](ir::Graph& g, const std::vector<ir::Value*>& in) {
      auto einsum = [&](const char* eq, std::vector<ir::Value*> ops) {
        Attributes a;
        a.set("equation", std::string(eq));
        return node(g, "Einsum", std::move(ops), a);
      };
      ir::Value* scores = einsum("bqhd,bkhd->bhqk", {in[0], in[1]});
      Attributes sm;
      sm.set("axis", Attribute(int64_t{-1}));
      ir::Value* p = node(g, "Softmax", {node(g, "Mul", {scores, scalar(g, 0.125f)})}, sm);
      ir::Value* ctx = einsum("bhqk,bkhd->bqhd", {p, in[2]});
      ir::Value* w = g.add_constant("w_out", random_tensor(DataType::kFLOAT, {E, H, D}, 63, -0.05, 0.05));
      return std::vector<ir::Value*>{einsum("bqhd,ehd->bqe", {ctx, w})};
    };
    expect_fused_agrees(c);
  }
}

// RotaryEmbedding (opset 23) has a CUDA kernel (rotary.cu): 4-D with position ids into a cache, 3-D interleaved with
// a partial rotary dim and per-token caches, in each precision, against the reference (run_net: no layer on the
// host); a position id outside the cache gives a NaN row instead of reading past it.
TEST(GpuTransformer, OnnxRotaryEmbedding) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions)
    for (const bool four_d : {true, false}) {
      SCOPED_TRACE(std::string(pr.name) + (four_d ? " 4-D" : " 3-D"));
      const int64_t B = 2, H = 3, S = 17, D = 64, R = four_d ? 64 : 32, cache = 40;
      NetCase c = precision_case(
          pr, {random_tensor(DataType::kFLOAT, four_d ? std::vector<int64_t>{B, H, S, D} : std::vector<int64_t>{B, S, H * D}, 90)});
      c.build = [=](ir::Graph& g, const std::vector<ir::Value*>& in) {
        const std::vector<int64_t> cshape = four_d ? std::vector<int64_t>{cache, R / 2} : std::vector<int64_t>{B, S, R / 2};
        Tensor cs = random_tensor(DataType::kFLOAT, cshape, 91, -1, 1), sn = random_tensor(DataType::kFLOAT, cshape, 92, -1, 1);
        std::vector<ir::Value*> ins = {in[0], g.add_constant("cos_cache", cs), g.add_constant("sin_cache", sn)};
        if (four_d) {
          std::vector<int64_t> pos(B * S);
          for (int64_t i = 0; i < B * S; ++i) pos[i] = (i * 7) % cache;
          ins.push_back(g.add_constant("position_ids", Tensor::from_vector<int64_t>({B, S}, pos)));
        }
        Attributes a;
        if (!four_d) {
          a.set("num_heads", Attribute(H));
          a.set("interleaved", Attribute(int64_t{1}));
          a.set("rotary_embedding_dim", Attribute(R));
        }
        ir::Node* n = g.add_node("RotaryEmbedding", g.unique_node_name("RotaryEmbedding"), ins, {""}, std::move(a), 23);
        Status st = passes::infer_node(g, *n);
        EXPECT_TRUE(st.ok()) << st.message();
        return std::vector<ir::Value*>{n->outputs[0]};
      };
      expect_fused_agrees(c);
    }
  // A position past the cache: the reference refuses it; the GPU row is NaN (it reads nothing past the cache).
  const int64_t B = 1, H = 2, S = 3, D = 8, cache = 4;
  NetCase c = precision_case(kPrecisions[0], {random_tensor(DataType::kFLOAT, {B, H, S, D}, 93)});
  c.build = [=](ir::Graph& g, const std::vector<ir::Value*>& in) {
    std::vector<ir::Value*> ins = {in[0], g.add_constant("cos_cache", random_tensor(DataType::kFLOAT, {cache, D / 2}, 94)),
                                   g.add_constant("sin_cache", random_tensor(DataType::kFLOAT, {cache, D / 2}, 95)),
                                   g.add_constant("position_ids", Tensor::from_vector<int64_t>({B, S}, {0, cache, 1}))};
    ir::Node* n = g.add_node("RotaryEmbedding", g.unique_node_name("RotaryEmbedding"), ins, {""}, {}, 23);
    EXPECT_TRUE(passes::infer_node(g, *n).ok());
    return std::vector<ir::Value*>{n->outputs[0]};
  };
  const std::vector<Tensor> got = run_net(c, Backend::kCUDA, nullptr);
  ASSERT_EQ(got.size(), 1u);
  const Tensor y = got[0].cast(DataType::kFLOAT);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t d = 0; d < D; ++d) {
        const float v = y.data<float>()[(h * S + s) * D + d];
        EXPECT_EQ(std::isnan(v), s == 1) << "h " << h << " s " << s << " d " << d;
      }
}

// The generic kernel (FP32, and head dims without a tensor-core kernel), reached through kiln::FusedAttention
// nodes directly since the CUDA pipeline does not fuse those cases: the CPU runs the op's reference compute.
TEST(GpuTransformer, FusedAttentionGenericKernel) {
  KILN_REQUIRE_GPU();
  struct Case {
    int64_t B, H, Sq, Sk, D;
    bool mask, causal;
  };
  for (const Case& k :
       {Case{2, 3, 50, 50, 64, true, false}, Case{1, 2, 40, 40, 80, false, true}, Case{2, 2, 17, 29, 24, true, false}})
    for (const Precision& pr : kPrecisions) {
      SCOPED_TRACE(std::string(pr.name) + " D=" + std::to_string(k.D));
      NetCase c;
      c.inputs = {random_tensor(DataType::kFLOAT, {k.B, k.H, k.Sq, k.D}, 60, -1, 1),
                  random_tensor(DataType::kFLOAT, {k.B, k.H, k.Sk, k.D}, 61, -1, 1),
                  random_tensor(DataType::kFLOAT, {k.B, k.H, k.Sk, k.D}, 62)};
      if (k.mask) c.inputs.push_back(random_tensor(DataType::kFLOAT, {k.B, 1, k.Sq, k.Sk}, 63, -3, 0));
      c.flags = pr.flags;
      c.atol = pr.atol;
      c.rtol = pr.rtol;
      c.build = [k](ir::Graph& g, const std::vector<ir::Value*>& in) {
        Attributes a;
        a.set("scale", Attribute(0.3f));
        if (k.causal) a.set("causal", Attribute(int64_t{1}));
        return std::vector<ir::Value*>{node(g, "FusedAttention", in, a, "kiln")};
      };
      expect_fused_agrees(c);
    }
}

// masked_rows_zero=1 (the absorbed NaN guard of torch's SDPA export): a query row whose every key the mask hides
// with -inf gives zeros on both kernels (tensor-core: FP16/BF16, head dim 64; generic: FP32 and head dim 80), the
// other rows the reference's values. The mask hides all keys of rows 0 and 5 of batch 1 and some keys elsewhere.
TEST(GpuTransformer, FusedAttentionFullyMaskedRowsGiveZeros) {
  KILN_REQUIRE_GPU();
  for (const int64_t D : {int64_t{64}, int64_t{80}})
    for (const Precision& pr : kPrecisions) {
      SCOPED_TRACE(std::string(pr.name) + " D=" + std::to_string(D));
      const int64_t B = 2, H = 2, S = 40;
      NetCase c;
      Tensor mask(DataType::kFLOAT, {B, 1, S, S});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < S; ++i)
          for (int64_t j = 0; j < S; ++j) {
            const bool hidden = (b == 1 && (i == 0 || i == 5)) || (j + i) % 5 == 0;
            mask.data<float>()[(b * S + i) * S + j] = hidden ? -INFINITY : 0.f;
          }
      c.inputs = {random_tensor(DataType::kFLOAT, {B, H, S, D}, 70, -1, 1),
                  random_tensor(DataType::kFLOAT, {B, H, S, D}, 71, -1, 1),
                  random_tensor(DataType::kFLOAT, {B, H, S, D}, 72), mask};
      c.flags = pr.flags;
      c.atol = pr.atol;
      c.rtol = pr.rtol;
      c.build = [](ir::Graph& g, const std::vector<ir::Value*>& in) {
        Attributes a;
        a.set("masked_rows_zero", Attribute(int64_t{1}));
        return std::vector<ir::Value*>{node(g, "FusedAttention", in, a, "kiln")};
      };
      expect_fused_agrees(c);  // the CPU reference gives those rows zeros too; NaN never compares equal
      const std::vector<Tensor> got = run_net(c, Backend::kCUDA, nullptr);
      ASSERT_EQ(got.size(), 1u);
      const Tensor y = got[0].cast(DataType::kFLOAT);
      for (int64_t h = 0; h < H; ++h)
        for (const int64_t i : {int64_t{0}, int64_t{5}})
          for (int64_t d = 0; d < D; ++d)
            ASSERT_EQ(y.data<float>()[((1 * H + h) * S + i) * D + d], 0.f) << "h " << h << " row " << i << " d " << d;
    }
}

// The layouts fold_attention_layouts gives FusedAttention: q, k and v as the thirds of a packed [B,S,3,H,D]
// projection or as [B,S,H,D] tensors, the output as [B,S,H,D]; through the tensor-core kernel (head dim 64,
// FP16/BF16) and the generic one (FP32, head dim 80), against the op's reference compute on the CPU.
TEST(GpuTransformer, FusedAttentionStridedLayouts) {
  KILN_REQUIRE_GPU();
  struct Case {
    const char* qkv;
    const char* out;
    int64_t B, S, H, D;
    bool mask, causal;
  };
  for (const Case& k : {Case{"bs3hd", "bshd", 3, 128, 4, 64, true, false}, Case{"bs3hd", "bhsd", 2, 77, 3, 64, false, true},
                        Case{"bs3hd", "bshd", 24, 128, 12, 64, true, false},  // four-warp blocks
                        Case{"bshd", "bshd", 2, 130, 2, 64, true, false}, Case{"bs3hd", "bshd", 2, 40, 2, 80, true, false},
                        Case{"bshd", "bhsd", 1, 33, 2, 32, false, true}})
    for (const Precision& pr : kPrecisions) {
      SCOPED_TRACE(std::string(pr.name) + " " + k.qkv + "->" + k.out + " S=" + std::to_string(k.S) +
                   " D=" + std::to_string(k.D));
      const bool packed = std::string(k.qkv) == "bs3hd";
      NetCase c;
      if (packed) {
        c.inputs = {random_tensor(DataType::kFLOAT, {k.B, k.S, 3, k.H, k.D}, 70, -1, 1)};
      } else {
        for (int i = 0; i < 3; ++i) c.inputs.push_back(random_tensor(DataType::kFLOAT, {k.B, k.S, k.H, k.D}, 71 + i, -1, 1));
      }
      if (k.mask) c.inputs.push_back(random_tensor(DataType::kFLOAT, {k.B, 1, 1, k.S}, 75, -3, 0));
      c.flags = pr.flags;
      c.atol = pr.atol;
      c.rtol = pr.rtol;
      c.build = [k, packed](ir::Graph& g, const std::vector<ir::Value*>& in) {
        Attributes a;
        a.set("qkv_layout", Attribute(std::string(k.qkv)));
        a.set("out_layout", Attribute(std::string(k.out)));
        if (k.causal) a.set("causal", Attribute(int64_t{1}));
        std::vector<ir::Value*> args = in;
        if (packed) args.insert(args.begin() + 1, {nullptr, nullptr});
        return std::vector<ir::Value*>{node(g, "FusedAttention", args, a, "kiln")};
      };
      expect_fused_agrees(c);
    }
}

// One execution context run at several sequence lengths of its profile: the kernel's launch parameters, worked out
// when the shapes change, must follow them (and come back), as the reference does.
TEST(GpuTransformer, FusedAttentionFollowsShapeChanges) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, H = 4, D = 64;
  ir::Graph g;
  ir::Value* x = g.add_value("qkv");
  x->dtype = DataType::kHALF;
  x->shape = {ops::Dim(B), ops::Dim::symbol("S"), ops::Dim(3), ops::Dim(H), ops::Dim(D)};
  x->rank_known = true;
  g.inputs().push_back(x);
  Attributes a;
  a.set("qkv_layout", Attribute(std::string("bs3hd")));
  a.set("out_layout", Attribute(std::string("bshd")));
  g.outputs().push_back(node(g, "FusedAttention", {x, nullptr, nullptr}, a, "kiln"));
  std::unique_ptr<Engine> engines[2];
  for (Backend backend : {Backend::kCPU, Backend::kCUDA}) {
    BuilderConfig config;
    config.set_backend(backend);
    OptimizationProfile p;
    ASSERT_TRUE(p.set_shape("qkv", {B, 1, 3, H, D}, {B, 128, 3, H, D}, {B, 160, 3, H, D}).ok());
    config.add_optimization_profile(p);
    engines[backend == Backend::kCUDA] = test::load_engine(builder::write_engine(g, config));
    ASSERT_NE(engines[backend == Backend::kCUDA], nullptr);
  }
  auto cpu_ctx = engines[0]->create_execution_context();
  auto gpu_ctx = engines[1]->create_execution_context();
  ASSERT_TRUE(cpu_ctx && gpu_ctx);
  for (int64_t S : {128, 77, 160, 128}) {
    SCOPED_TRACE("S=" + std::to_string(S));
    const Tensor in = random_tensor(DataType::kHALF, {B, S, 3, H, D}, 80 + static_cast<uint32_t>(S), -1, 1);
    auto want = test::infer(*cpu_ctx, {{"qkv", in}});
    auto got = test::infer(*gpu_ctx, {{"qkv", in}});
    ASSERT_EQ(want.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].shape(), (Dims{B, S, H, D}));
    expect_tensors_close(want[0], got[0], 3e-2, 2e-2, "FusedAttention");
  }
}

// ---- LayerNorm decomposed (opset-13 exports) and the whole pipeline on a small encoder block ----

TEST(GpuTransformer, DecomposedLayerNormBecomesLayerNormalization) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c;
    c.inputs = {random_tensor(DataType::kFLOAT, {4, 50, 192}, 40, -3, 3)};
    c.flags = pr.flags;
    c.atol = pr.atol;
    c.rtol = pr.rtol;
    c.fused_op = "LayerNormalization";
    c.build = [](ir::Graph& g, const std::vector<ir::Value*>& in) {
      Attributes ax;
      ax.set("axes", Attribute(std::vector<int64_t>{-1}));
      ir::Value* mean = node(g, "ReduceMean", {in[0]}, ax);
      ir::Value* d = node(g, "Sub", {in[0], mean});
      ir::Value* var = node(g, "ReduceMean", {node(g, "Pow", {d, scalar(g, 2.0f)})}, ax);
      ir::Value* den = node(g, "Sqrt", {node(g, "Add", {var, scalar(g, 1e-5f)})});
      ir::Value* y = node(g, "Mul", {node(g, "Div", {d, den}), weight(g, {192}, 41, 1)});
      return std::vector<ir::Value*>{node(g, "Add", {y, weight(g, {192}, 42, 1)})};
    };
    expect_fused_agrees(c);
  }
}

// x / sqrt(v) in the forms exporters write: 0 Div(x, Sqrt(v)), 1 x * Reciprocal(Sqrt(v)), 2 x * Div(1, Sqrt(v))
// (torch's rsqrt), 3 Pow(v, -0.5) * x.
ir::Value* div_by_sqrt(ir::Graph& g, ir::Value* x, ir::Value* v, int form) {
  switch (form) {
    case 0:
      return node(g, "Div", {x, node(g, "Sqrt", {v})});
    case 1:
      return node(g, "Mul", {x, node(g, "Reciprocal", {node(g, "Sqrt", {v})})});
    case 2:
      return node(g, "Mul", {x, node(g, "Div", {scalar(g, 1.0f), node(g, "Sqrt", {v})})});
    default:
      return node(g, "Mul", {node(g, "Pow", {v, scalar(g, -0.5f)}), x});
  }
}

Attributes last_axis() {
  Attributes ax;
  ax.set("axes", Attribute(std::vector<int64_t>{-1}));
  return ax;
}

// x / sqrt(mean(x^2) + eps), x^2 as Pow(x, 2) (even forms) or Mul(x, x).
ir::Value* rms_core(ir::Graph& g, ir::Value* x, int form, float eps) {
  ir::Value* sq = form % 2 ? node(g, "Mul", {x, x}) : node(g, "Pow", {x, scalar(g, 2.0f)});
  return div_by_sqrt(g, x, node(g, "Add", {node(g, "ReduceMean", {sq}, last_axis()), scalar(g, eps)}), form);
}

ir::Value* cast_to(ir::Graph& g, ir::Value* x, int64_t onnx_type) {
  Attributes a;
  a.set("to", Attribute(onnx_type));
  return node(g, "Cast", {x}, a);
}

// RMSNorm as Llama/T5/Mistral exports write it below opset 23, in every division form, on row lengths that take
// the kernel's register path (192, 4096: Llama-7B's hidden size) and its generic path (100 halves: not a whole
// number of 16-byte vectors).
TEST(GpuTransformer, DecomposedRMSNormBecomesRMSNormalization) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    for (int64_t d : {192, 4096, 100}) {
      for (int form = 0; form < 4; ++form) {
        SCOPED_TRACE(std::string(pr.name) + " d=" + std::to_string(d) + " form " + std::to_string(form));
        NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {4, 50, d}, 50 + form, -3, 3)},
                                   "RMSNormalization");
        c.build = [d, form](ir::Graph& g, const std::vector<ir::Value*>& in) {
          ir::Value* w = weight(g, {d}, 51, 1);
          ir::Value* core = rms_core(g, in[0], form, 1e-6f);
          return std::vector<ir::Value*>{form < 2 ? node(g, "Mul", {w, core}) : node(g, "Mul", {core, w})};
        };
        expect_fused_agrees(c);
      }
    }
  }
}

// HF LlamaRMSNorm in a float16 model: weight * Cast(x32 * rsqrt(mean(x32^2) + eps), float16), x32 = Cast(x,
// float32). The fused node reads the float16 x (no Cast left) and accumulates in float32 as the export did.
TEST(GpuTransformer, LlamaRMSNormFloat16BetweenCasts) {
  KILN_REQUIRE_GPU();
  for (int64_t d : {256, 4096}) {
    SCOPED_TRACE(d);
    NetCase c;
    c.inputs = {random_tensor(DataType::kHALF, {2, 33, d}, 60, -3, 3)};
    c.atol = 3e-2;
    c.rtol = 2e-2;
    c.fused_op = "RMSNormalization";
    c.build = [d](ir::Graph& g, const std::vector<ir::Value*>& in) {
      ir::Value* w = g.add_constant("w_half", random_tensor(DataType::kHALF, {d}, 61, -1, 1));
      ir::Value* h = cast_to(g, rms_core(g, cast_to(g, in[0], 1), 2, 1e-6f), 10);
      return std::vector<ir::Value*>{node(g, "Mul", {w, h})};
    };
    expect_fused_agrees(c);
  }
}

// LayerNorm with the rsqrt forms instead of Div, and tf2onnx's Keras form y = x * s + (beta - mean * s),
// s = rsqrt(var + eps) * gamma.
TEST(GpuTransformer, LayerNormRsqrtAndKerasFormsBecomeLayerNormalization) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    for (int form = 1; form < 5; ++form) {
      SCOPED_TRACE(std::string(pr.name) + " form " + std::to_string(form));
      NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {4, 50, 192}, 70 + form, -3, 3)},
                                 "LayerNormalization");
      c.build = [form](ir::Graph& g, const std::vector<ir::Value*>& in) {
        ir::Value* x = in[0];
        ir::Value* mean = node(g, "ReduceMean", {x}, last_axis());
        ir::Value* d = node(g, "Sub", {x, mean});
        ir::Value* var = node(g, "ReduceMean", {node(g, "Mul", {d, d})}, last_axis());
        ir::Value* v = node(g, "Add", {var, scalar(g, 1e-5f)});
        ir::Value* gamma = weight(g, {192}, 71, 1);
        ir::Value* beta = weight(g, {192}, 72, 1);
        if (form < 4)
          return std::vector<ir::Value*>{node(g, "Add", {node(g, "Mul", {div_by_sqrt(g, d, v, form), gamma}), beta})};
        ir::Value* s = node(g, "Mul", {node(g, "Reciprocal", {node(g, "Sqrt", {v})}), gamma});
        ir::Value* shift = node(g, "Sub", {beta, node(g, "Mul", {mean, s})});
        return std::vector<ir::Value*>{node(g, "Add", {node(g, "Mul", {x, s}), shift})};
      };
      expect_fused_agrees(c);
    }
  }
}

// torch.onnx below opset 17 on a float16 model: the statistics of Cast(x - mean, float32), the normalized value
// Cast back to float16 before gamma and beta. The fused node reads the float16 x and computes in float32.
TEST(GpuTransformer, TorchFloat16LayerNormWithFloat32Statistics) {
  KILN_REQUIRE_GPU();
  NetCase c;
  c.inputs = {random_tensor(DataType::kHALF, {4, 50, 192}, 80, -3, 3)};
  c.atol = 3e-2;
  c.rtol = 2e-2;
  c.fused_op = "LayerNormalization";
  c.build = [](ir::Graph& g, const std::vector<ir::Value*>& in) {
    ir::Value* mean = node(g, "ReduceMean", {in[0]}, last_axis());
    ir::Value* d32 = cast_to(g, node(g, "Sub", {in[0], mean}), 1);
    ir::Value* var = node(g, "ReduceMean", {node(g, "Pow", {d32, scalar(g, 2.0f)})}, last_axis());
    ir::Value* norm = node(g, "Div", {d32, node(g, "Sqrt", {node(g, "Add", {var, scalar(g, 1e-5f)})})});
    ir::Value* gamma = g.add_constant("gamma_half", random_tensor(DataType::kHALF, {192}, 81, -1, 1));
    ir::Value* beta = g.add_constant("beta_half", random_tensor(DataType::kHALF, {192}, 82, -1, 1));
    return std::vector<ir::Value*>{node(g, "Add", {node(g, "Mul", {cast_to(g, norm, 10), gamma}), beta})};
  };
  expect_fused_agrees(c);
}

// ---- Hugging Face forms: CLIP's [B*H,S,D] bmm attention, ConvNeXt's channels_first LayerNorm ----

ir::Value* ints(ir::Graph& g, std::vector<int64_t> v) {
  static int counter = 0;
  const int64_t n = static_cast<int64_t>(v.size());
  return g.add_constant("ints" + std::to_string(counter++), Tensor::from_vector<int64_t>({n}, std::move(v)));
}

// CLIPAttention (eager) as exported: q = q_proj(x) * D^-0.5, q/k/v viewed [B,S,H,D], transposed, viewed
// [B*H,S,D]; bmm(q, k^T) viewed [B,H,S,S] for a constant causal mask and again for the padding mask (a network
// input), [B*H,S,S] between and for the Softmax; bmm with v, viewed [B,H,S,D], transposed, reshaped [B,S,E].
// lift_bmm_heads makes it per-head and fuse_attention takes both masks as their sum.
TEST(GpuTransformer, ClipBmmAttentionBecomesFusedAttention) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, S = 40, H = 4, D = 32, E = H * D;
  Tensor causal(DataType::kFLOAT, {1, 1, S, S});
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) causal.data<float>()[i * S + j] = j > i ? -3.4028234663852886e38f : 0.0f;
  Tensor pad(DataType::kFLOAT, {B, 1, S, S});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) pad.data<float>()[(b * S + i) * S + j] = j >= S - 7 * b ? -10000.0f : 0.0f;
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B, S, E}, 80, -1, 1), pad},
                               pr.flags.empty() ? "" : "FusedAttention");
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      auto split = [&](ir::Value* p) {
        Attributes t;
        t.set("perm", Attribute(std::vector<int64_t>{0, 2, 1, 3}));
        ir::Value* h = node(g, "Transpose", {node(g, "Reshape", {p, ints(g, {B, -1, H, D})})}, t);
        return node(g, "Reshape", {h, ints(g, {B * H, -1, D})});
      };
      ir::Value* q =
          split(node(g, "Mul",
                     {node(g, "Add", {node(g, "MatMul", {in[0], weight(g, {E, E}, 81, 0.2)}), weight(g, {E}, 82, 0.2)}),
                      scalar(g, 1.0f / std::sqrt(static_cast<float>(D)))}));
      ir::Value* k =
          split(node(g, "Add", {node(g, "MatMul", {in[0], weight(g, {E, E}, 83, 0.2)}), weight(g, {E}, 84, 0.2)}));
      ir::Value* v =
          split(node(g, "Add", {node(g, "MatMul", {in[0], weight(g, {E, E}, 85, 0.2)}), weight(g, {E}, 86, 0.2)}));
      Attributes kt;
      kt.set("perm", Attribute(std::vector<int64_t>{0, 2, 1}));
      ir::Value* s = node(g, "MatMul", {q, node(g, "Transpose", {k}, kt)});
      s = node(g, "Add", {node(g, "Reshape", {s, ints(g, {B, H, S, S})}), g.add_constant("causal", causal)});
      s = node(g, "Reshape", {s, ints(g, {B * H, S, S})});
      s = node(g, "Add", {node(g, "Reshape", {s, ints(g, {B, H, S, S})}), in[1]});
      s = node(g, "Reshape", {s, ints(g, {B * H, S, S})});
      Attributes sm;
      sm.set("axis", Attribute(int64_t{-1}));
      ir::Value* o = node(g, "MatMul", {node(g, "Softmax", {s}, sm), v});
      Attributes t;
      t.set("perm", Attribute(std::vector<int64_t>{0, 2, 1, 3}));
      o = node(g, "Transpose", {node(g, "Reshape", {o, ints(g, {B, H, S, D})})}, t);
      return std::vector<ir::Value*>{node(g, "Reshape", {o, ints(g, {B, S, E})})};
    };
    expect_fused_agrees(c);
  }
}

// Swin's shifted-window attention on 7x7 windows: scores [B*nW,H,49,49] + relative position bias, viewed
// [B,nW,H,49,49] for the window mask [1,nW,1,49,49] (0 or -100 as SwinModel builds it), viewed back. lift_bmm_heads
// adds the flattened mask to the scores and fuse_attention takes both masks.
TEST(GpuTransformer, SwinShiftedWindowAttentionBecomesFusedAttention) {
  KILN_REQUIRE_GPU();
  const int64_t B = 2, nW = 4, N = 49, H = 4, D = 32, C = H * D;
  Tensor mask(DataType::kFLOAT, {1, nW, 1, N, N});
  for (int64_t w = 0; w < nW; ++w)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j)
        mask.data<float>()[(w * N + i) * N + j] = w > 0 && ((i / 7 < 4) != (j / 7 < 4)) ? -100.0f : 0.0f;
  for (const Precision& pr : kPrecisions) {
    SCOPED_TRACE(pr.name);
    NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {B * nW, N, C}, 100, -1, 1)},
                               pr.flags.empty() ? "" : "FusedAttention");
    c.build = [&](ir::Graph& g, const std::vector<ir::Value*>& in) {
      auto heads = [&](uint32_t seed, std::vector<int64_t> perm) {
        Attributes t;
        t.set("perm", Attribute(perm));
        ir::Value* p =
            node(g, "Add", {node(g, "MatMul", {in[0], weight(g, {C, C}, seed, 0.2)}), weight(g, {C}, seed + 1, 0.2)});
        return node(g, "Transpose", {node(g, "Reshape", {p, ints(g, {0, 0, H, D})})}, t);
      };
      ir::Value* s = node(g, "MatMul", {heads(101, {0, 2, 1, 3}), heads(103, {0, 2, 3, 1})});
      s = node(g, "Div", {s, scalar(g, std::sqrt(static_cast<float>(D)))});
      s = node(g, "Add", {s, weight(g, {H, N, N}, 105, 2)});
      s = node(g, "Add", {node(g, "Reshape", {s, ints(g, {B, nW, H, N, N})}), g.add_constant("window_mask", mask)});
      s = node(g, "Reshape", {s, ints(g, {-1, H, N, N})});
      Attributes sm;
      sm.set("axis", Attribute(int64_t{-1}));
      Attributes t;
      t.set("perm", Attribute(std::vector<int64_t>{0, 2, 1, 3}));
      ir::Value* o = node(g, "MatMul", {node(g, "Softmax", {s}, sm), heads(106, {0, 2, 1, 3})});
      return std::vector<ir::Value*>{node(g, "Reshape", {node(g, "Transpose", {o}, t), ints(g, {0, 0, C})})};
    };
    expect_fused_agrees(c);
  }
}

// HF ConvNextLayerNorm channels_first: statistics over the channels of NCHW, weight[:, None, None] * x +
// bias[:, None, None]. Alone (Transpose -> LayerNormalization -> Transpose back) and between convolutions, where the
// FP16/BF16 engine runs it on the NHWC activations (ConvNeXt's stem and downsampling layer); C = 96 takes the
// LayerNorm kernel's vector path, C = 20 its generic one.
TEST(GpuTransformer, ChannelsFirstLayerNormBecomesLayerNormalization) {
  KILN_REQUIRE_GPU();
  for (const Precision& pr : kPrecisions) {
    for (int64_t C : {96, 20}) {
      for (bool convs : {false, true}) {
        SCOPED_TRACE(std::string(pr.name) + " C=" + std::to_string(C) + (convs ? " between convs" : ""));
        NetCase c = precision_case(pr, {random_tensor(DataType::kFLOAT, {2, convs ? 8 : C, 14, 14}, 90, -3, 3)},
                                   "LayerNormalization");
        c.build = [C, convs](ir::Graph& g, const std::vector<ir::Value*>& in) {
          ir::Value* x = in[0];
          if (convs) {
            Attributes a;
            a.set("kernel_shape", Attribute(std::vector<int64_t>{3, 3}));
            a.set("pads", Attribute(std::vector<int64_t>{1, 1, 1, 1}));
            x = node(g, "Conv", {x, weight(g, {C, 8, 3, 3}, 91, 0.3), weight(g, {C}, 92, 0.3)}, a);
          }
          Attributes ax;
          ax.set("axes", Attribute(std::vector<int64_t>{1}));
          ir::Value* d = node(g, "Sub", {x, node(g, "ReduceMean", {x}, ax)});
          ir::Value* var = node(g, "ReduceMean", {node(g, "Pow", {d, scalar(g, 2.0f)})}, ax);
          ir::Value* y = node(g, "Div", {d, node(g, "Sqrt", {node(g, "Add", {var, scalar(g, 1e-6f)})})});
          y = node(g, "Add", {node(g, "Mul", {weight(g, {C, 1, 1}, 93, 1), y}), weight(g, {C, 1, 1}, 94, 1)});
          if (convs) {
            Attributes a;
            a.set("kernel_shape", Attribute(std::vector<int64_t>{2, 2}));
            a.set("strides", Attribute(std::vector<int64_t>{2, 2}));
            y = node(g, "Conv", {y, weight(g, {2 * C, C, 2, 2}, 95, 0.3), weight(g, {2 * C}, 96, 0.3)}, a);
          }
          return std::vector<ir::Value*>{y};
        };
        expect_fused_agrees(c);
      }
    }
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
