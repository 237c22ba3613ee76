// GPU tests of kiln::FusedAttention's tactics (the tensor-core kernel's block sizes, attention_tactics.h): each
// forced through the layer's "kiln.tactic" over bert-, vit- and gpt2-like cases, odd lengths, every mask broadcast
// form, the strided layouts, grouped-query and multi-query K/V, head dims 8 to 128 (the 32/64/96/128 tiles and
// zero-padded ones), FP16 and BF16, against the CPU reference; the tuner choosing one;
// and (disabled, run by hand) the time of each at bert/vit batch 64.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "attention_test_util.h"
#include "backends/cuda/attention_tactics.h"
#include "../unit/engine_test_util.h"
#include "gpu_test_util.h"
#include "gpu_timing_util.h"
#include "passes/shape_inference.h"

namespace kiln::gpu_testing {
namespace {

// Small batches of the shapes the tactics are for, every mask broadcast form (a key-only padding mask takes the
// paired loads with one row for all queries, a full [B,1,S,S] mask paired loads per row when S is even and single
// ones when odd, a query-only mask stride 0 along keys), causal with partial tiles, and each layout.
const AttnCase kCases[] = {
    {"bert", 2, 3, 128, 64, "bhsd", "bhsd", {2, 1, 1, 128}},
    {"bert-b1", 1, 12, 128, 64, "bs3hd", "bshd", {1, 1, 1, 128}},
    {"vit-b1", 1, 12, 197, 64, "bs3hd", "bshd", {}},
    {"bert-packed", 2, 3, 128, 64, "bs3hd", "bshd", {2, 1, 1, 128}},
    {"vit", 2, 3, 197, 64, "bs3hd", "bshd", {}},
    {"gpt2", 2, 3, 128, 64, "bs3hd", "bshd", {}, true},
    {"gpt2-odd", 1, 2, 150, 64, "bhsd", "bhsd", {}, true},
    {"odd-full-mask", 2, 2, 77, 64, "bshd", "bshd", {2, 1, 77, 77}},
    {"even-full-mask-causal", 1, 2, 130, 64, "bhsd", "bshd", {1, 2, 130, 130}, true},
    {"query-mask", 2, 2, 77, 64, "bhsd", "bhsd", {2, 1, 77, 1}},
    {"d32", 2, 2, 77, 32, "bs3hd", "bshd", {2, 1, 1, 77}},
    {"d32-causal", 1, 2, 33, 32, "bhsd", "bhsd", {}, true},
    {"d128", 2, 2, 130, 128, "bhsd", "bhsd", {2, 1, 1, 130}},
    {"d128-causal", 1, 2, 100, 128, "bs3hd", "bshd", {}, true},
    // Head dims in a zero-padded tile (8 and 16 in 32's, 40 in 64's, 80 in 96's, 120 in 128's) and the 96 tile.
    {"d8", 2, 2, 70, 8, "bhsd", "bhsd", {2, 1, 1, 70}},
    {"d16-packed", 2, 2, 77, 16, "bs3hd", "bshd", {}},
    {"d40-causal", 1, 3, 130, 40, "bs3hd", "bshd", {}, true},
    {"d80", 2, 2, 129, 80, "bshd", "bshd", {2, 1, 129, 129}},
    {"d80-seq-first", 2, 2, 64, 80, "sbhd", "sbhd", {}, true, 100},
    {"d96", 2, 2, 77, 96, "bhsd", "bhsd", {2, 1, 1, 77}},
    {"d120-causal", 1, 2, 90, 120, "bhsd", "bshd", {}, true},
    {"short", 3, 2, 9, 64, "bhsd", "bhsd", {3, 1, 1, 9}},
    // Fewer queries than keys and more, causal (top-left aligned) and masked.
    {"sq50-sk130", 2, 2, 50, 64, "bhsd", "bshd", {2, 1, 1, 130}, false, 130},
    {"sq130-sk77-causal", 1, 3, 130, 64, "bshd", "bhsd", {}, true, 77},
    {"sq200-sk64-causal-mask", 1, 2, 200, 128, "bhsd", "bhsd", {1, 2, 200, 64}, true, 64},
    // Sequence-first (torch 1.x nn.MultiheadAttention exports): [S,B,H,D] operands and output, packed [S,B,3,H,D].
    {"seq-first", 2, 3, 77, 64, "sbhd", "sbhd", {77, 77}},
    {"seq-first-packed", 2, 2, 128, 32, "sb3hd", "sbhd", {}},
    {"seq-first-sq50-sk130", 2, 2, 50, 64, "sbhd", "bhsd", {}, true, 130},
    // Grouped-query attention (K/V heads Hk dividing H; query head h reads K/V head h / (H / Hk)), multi-query
    // (Hk = 1), each separate layout, padding and full masks, causal, Sq != Sk, head dims 32/64/128.
    {"gqa-4/2", 2, 4, 128, 64, "bhsd", "bhsd", {2, 1, 1, 128}, false, 0, 2},
    {"gqa-8/2-bshd-causal", 1, 8, 150, 64, "bshd", "bshd", {}, true, 0, 2},
    {"mqa-6/1-sbhd", 2, 6, 77, 64, "sbhd", "bshd", {2, 1, 1, 77}, false, 0, 1},
    {"gqa-4/2-d32-full-mask", 2, 4, 77, 32, "bshd", "bhsd", {2, 1, 77, 77}, false, 0, 2},
    {"mqa-4/1-d128-causal", 1, 4, 100, 128, "bhsd", "bshd", {}, true, 0, 1},
    {"gqa-6/3-sq50-sk130", 2, 6, 50, 64, "bshd", "bshd", {2, 1, 1, 130}, false, 130, 3},
    // Grids of at least two blocks an SM (B * H * 64-query blocks >= 264), where the default is four warps a
    // block (the cases above take one): vit's odd length, gpt2's causal tiles, bert's padding mask, a zero-padded
    // head dim with a causal edge, Sq != Sk.
    {"vit-grid", 8, 12, 197, 64, "bs3hd", "bshd", {}},
    {"gpt2-grid", 12, 12, 128, 64, "bs3hd", "bshd", {}, true},
    {"bert-grid", 12, 12, 128, 64, "bs3hd", "bshd", {12, 1, 1, 128}},
    {"d40-grid-causal-full-mask", 24, 4, 130, 40, "bhsd", "bshd", {24, 1, 130, 130}, true},
    {"d32-grid-sq200-sk77", 12, 8, 200, 32, "bhsd", "bhsd", {12, 1, 1, 77}, false, 77},
};

std::vector<std::string> all_tactics() {
  std::vector<std::string> v;
  for (int w : cuda::kAttentionWarps) v.push_back(cuda::attention_tactic_name(w));
  for (int w : cuda::kAttentionSplitWarps) v.push_back(cuda::attention_tactic_name(w, cuda::kAttentionKeySplit));
  return v;
}

// Every tactic (offered for the shape or not: a layer's recorded tactic that is not offered falls back to the
// default) against the CPU reference, and bit for bit against the default: a warp's arithmetic does not depend
// on its block's size, so any difference would be a race or a wrong tile. A key-split block sums its key tiles in
// another order (two partial softmaxes merged), so it is held to the default within a few float16/bfloat16
// roundings instead of bit for bit.
TEST(GpuAttentionTactics, EveryTacticMatchesTheReference) {
  KILN_REQUIRE_GPU();
  for (const AttnCase& c : kCases)
    for (DataType dt : {DataType::kHALF, DataType::kBF16}) {
      std::vector<Tensor> inputs;
      const auto g0 = attention_graph(c, dt, "", &inputs, 11);
      const Tensor cpu = run_graph(*g0, Backend::kCPU, inputs, nullptr).at(0);
      std::string host;
      const std::vector<Tensor> base = run_graph(*g0, Backend::kCUDA, inputs, &host);
      ASSERT_EQ(base.size(), 1u);
      ASSERT_EQ(host, "");
      const double atol = dt == DataType::kHALF ? 3e-2 : 1.5e-1, rtol = dt == DataType::kHALF ? 2e-2 : 5e-2;
      expect_tensors_close(cpu, base[0], atol, rtol, describe(c, dt, ""));
      for (const std::string& t : all_tactics()) {
        SCOPED_TRACE(describe(c, dt, t));
        std::vector<Tensor> same_inputs;
        const auto g = attention_graph(c, dt, t, &same_inputs, 11);
        const std::vector<Tensor> got = run_graph(*g, Backend::kCUDA, same_inputs, &host);
        ASSERT_EQ(got.size(), 1u);
        EXPECT_EQ(host, "");
        expect_tensors_close(cpu, got[0], atol, rtol, "vs the reference");
        ASSERT_EQ(got[0].nbytes(), base[0].nbytes());
        if (cuda::attention_tactic_block(t).splits > 1) {
          const double tight = dt == DataType::kHALF ? 4e-3 : 3e-2;
          expect_tensors_close(base[0], got[0], tight, tight, "vs the default tactic");
        } else {
          EXPECT_EQ(std::memcmp(got[0].raw(), base[0].raw(), got[0].nbytes()), 0) << "differs from the default tactic";
        }
      }
    }
}

// The tuner times the offered tactics of a FusedAttention layer and records one of them (one of our block sizes
// or cuDNN's); the tuned engine agrees with the reference.
TEST(GpuAttentionTactics, TunerRecordsAnOfferedTactic) {
  KILN_REQUIRE_GPU();
  const AttnCase c{"vit", 16, 12, 197, 64, "bs3hd", "bshd", {}};
  TunedBuild b = tuned_build("FusedAttention", "attn", 3, [&](ir::Graph& g) {
    std::vector<Tensor> unused;
    fill_attention_graph(g, c, DataType::kHALF, "", &unused, 0);
  });
  ASSERT_NE(b.engine, nullptr);
  Engine* engine = b.engine.get();
  const std::string tactic = b.tactic;
  // cuDNN's fused attention is offered too (dnn_attention.h) unless KILN_DNN_SDPA=0.
  EXPECT_TRUE(cuda::attention_tactic_warps(tactic) != 0 || tactic == "cudnn_sdpa") << "recorded tactic '" << tactic << "'";
  const Tensor x = random_tensor(DataType::kHALF, {c.B, c.S, 3, c.H, c.D}, 5, -1, 1);
  const auto got = test::infer(*engine, {{"qkv", x}});
  std::vector<Tensor> unused;
  const auto want = run_graph(*attention_graph(c, DataType::kHALF, "", &unused, 0), Backend::kCPU, {x}, nullptr);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(want.size(), 1u);
  expect_tensors_close(want[0], got[0], 3e-2, 2e-2, "tuned FusedAttention");
}

// Not a check: the time of each tactic at bert-base and vit-b/16 batch 64 (FP16), printed. Run by hand with
// --gtest_also_run_disabled_tests --gtest_filter='*AttentionTacticTimes*'.
TEST(GpuAttentionTactics, DISABLED_AttentionTacticTimes) {
  KILN_REQUIRE_GPU();
  const AttnCase cases[] = {
      {"bert_base b64", 64, 12, 128, 64, "bs3hd", "bshd", {64, 1, 1, 128}},
      {"vit_b_16 b64", 64, 12, 197, 64, "bs3hd", "bshd", {}},
      {"gpt2 b32", 32, 12, 128, 64, "bs3hd", "bshd", {}, true},
      {"bert_base b1", 1, 12, 128, 64, "bs3hd", "bshd", {1, 1, 1, 128}},
  };
  for (const AttnCase& c : cases) {
    std::vector<std::string> names = {""};
    for (const std::string& t : all_tactics()) names.push_back(t);
    for (const std::string& t : names) {
      std::vector<Tensor> inputs;
      const auto gp = attention_graph(c, DataType::kHALF, t, &inputs, 3);
      const ir::Graph& g = *gp;
      BuilderConfig config;
      config.set_backend(Backend::kCUDA);
      auto engine = test::load_engine(builder::write_engine(g, config));
      ASSERT_NE(engine, nullptr);
      // Four contexts over four copies of the inputs, taken in turn, so that the timing does not run from L2
      // alone; each keeps its bindings (no per-run checks).
      constexpr int kSets = 4;
      std::vector<std::unique_ptr<ExecutionContext>> ctxs;
      std::vector<void*> bufs;
      const Dims out_shape = ops::static_dims(g.outputs()[0]->shape);
      int64_t out_elems = 1;
      for (int64_t d : out_shape) out_elems *= d;
      cudaStream_t stream = nullptr;
      ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
      for (int s = 0; s < kSets; ++s) {
        ctxs.push_back(engine->create_execution_context());
        ASSERT_NE(ctxs.back(), nullptr);
        for (size_t i = 0; i < inputs.size(); ++i) {
          void* p = nullptr;
          ASSERT_EQ(cudaMalloc(&p, inputs[i].nbytes()), cudaSuccess);
          ASSERT_EQ(cudaMemcpy(p, inputs[i].raw(), inputs[i].nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
          bufs.push_back(p);
          ASSERT_TRUE(ctxs.back()->set_input_shape(g.inputs()[i]->name, inputs[i].shape()).ok());
          ASSERT_TRUE(ctxs.back()->set_tensor_address(g.inputs()[i]->name, p).ok());
        }
        void* out = nullptr;
        ASSERT_EQ(cudaMalloc(&out, out_elems * 2), cudaSuccess);
        bufs.push_back(out);
        ASSERT_TRUE(ctxs.back()->set_tensor_address("y", out).ok());
        ASSERT_TRUE(ctxs.back()->enqueue(stream).ok());  // warm-up
      }
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      std::vector<float> times;
      for (int rep = 0; rep < 5; ++rep) {
        constexpr int kIters = 40;
        cudaEventRecord(e0, stream);
        for (int it = 0; it < kIters; ++it) EXPECT_TRUE(ctxs[it % kSets]->enqueue(stream).ok());
        cudaEventRecord(e1, stream);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        times.push_back(ms * 1000.f / kIters);
      }
      std::sort(times.begin(), times.end());
      std::printf("ATTN_TIME %-14s %-18s %8.1f us (median of 5 x 40 launches)\n", c.name,
                  t.empty() ? "default" : t.c_str(), times[2]);
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cudaStreamDestroy(stream);
      ctxs.clear();
      for (void* p : bufs) cudaFree(p);
    }
  }
}

}  // namespace
}  // namespace kiln::gpu_testing
