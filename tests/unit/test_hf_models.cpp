// Tiny random-weight Hugging Face exports (tests/models/export_hf.py; KILN_HF_MODEL_DIRS = model directories
// separated by ':'; `make test-hf` sets it) through the CUDA FP16 pass list on the reference kernels: the forms HF's
// modeling code exports to (BERT/RoBERTa/DistilBERT/ViT/DeiT erf-GELU + LayerNorm, GPT-2's tanh GELU, T5's, Llama's
// and Gemma's RMSNorm, padding and causal masks, rotary embeddings, CLIP's quick_gelu, Whisper's Conv1d stem, ConvNeXt,
// Swin's windows) fuse to FusedAttention, LayerNormalization/RMSNormalization and Gelu, and the optimized graph
// computes what the CPU pipeline's graph computes. What each family SHOULD fuse
// comes from its architecture (kFamilies); a form that does not fuse today is listed, with the reason, in
// kExpectedGaps and printed, never silently accepted. Skipped, saying so, when the variable is unset or empty.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cnn_test_util.h"
#include "kiln/builder.h"
#include "kiln/onnx_parser.h"
#include "onnx_model_util.h"
#include "ops/pointwise_program.h"
#include "transformer_model_util.h"

using namespace kiln;
using namespace kiln::test;

namespace {

// What each exported family should become: its attention blocks, its norms (all of one kind) and its GELUs, from
// the configs export_hf.py builds (2 layers everywhere).
struct Family {
  const char* name;      // the export's directory name up to "_op"
  int attention;         // self-attention blocks
  const char* norm_op;   // the fused norm op
  int norms;             // decomposed norms in the export
  int gelus;             // GELUs (erf or tanh form)
  int quick_gelus = 0;   // CLIP's quick_gelu x * sigmoid(1.702 x): one Pointwise kernel each, no Sigmoid node left
};
constexpr Family kFamilies[] = {
    {"hf_bert", 2, "LayerNormalization", 5, 2},        // embeddings LN + 2 per layer; erf GELU
    {"hf_roberta", 2, "LayerNormalization", 5, 2},     // as BERT; position ids from the padding mask (cumsum)
    {"hf_distilbert", 2, "LayerNormalization", 5, 2},  // embeddings LN + 2 per layer
    {"hf_gpt2", 2, "LayerNormalization", 5, 2},        // 2 per layer + ln_f; gelu_new (tanh form)
    {"hf_vit", 2, "LayerNormalization", 5, 2},         // 2 per layer + final LN
    {"hf_t5enc", 2, "RMSNormalization", 5, 2},         // T5LayerNorm: 2 per layer + final; gated-gelu (tanh)
    {"hf_llama", 2, "RMSNormalization", 5, 0},         // 2 per layer + final; SiLU MLP, no GELU
    {"hf_gemma", 2, "RMSNormalization", 5, 2},         // x * (1 + w): 2 per layer + final; gelu_pytorch_tanh
    {"hf_cliptext", 2, "LayerNormalization", 5, 0, 2},  // 2 per layer + final; quick_gelu (not a GELU)
    {"hf_clipvis", 2, "LayerNormalization", 5, 0, 2},   // pre_layrnorm + 2 per layer; quick_gelu
    {"hf_whisperenc", 2, "LayerNormalization", 5, 4},  // 2 per layer + final; erf GELU after each stem conv and FFN
    {"hf_convnext", 0, "LayerNormalization", 6, 4},    // 2 channels_first (stem, downsample) + 1 per block
    {"hf_swin", 4, "LayerNormalization", 11, 4},       // patch embed + 2 per block + patch merging + final
    {"hf_deit", 2, "LayerNormalization", 5, 2},        // as ViT
    {"hf_beit", 2, "LayerNormalization", 4, 2},        // 2 per layer (mean pooling: no final LN); relative bias
    // Grouped-query attention (K/V heads fewer than Q heads; repeat_kv folded into the attention, kGroupedFamilies)
    {"hf_llama_gqa", 2, "RMSNormalization", 5, 0},    // 4 heads / 2 K/V heads
    {"hf_qwen2_gqa", 2, "RMSNormalization", 5, 0},    // 4 heads / 2 K/V heads, q/k/v biases
    {"hf_mistral_mqa", 2, "RMSNormalization", 5, 0},  // 4 heads / 1 K/V head (multi-query)
};

// Forms that do not fuse today (family, form: "attention", "norms", "gelu" or "transposes"), with the reason. The
// test prints each when it meets it and checks the rest; a listed gap that has closed is reported too, so this
// table cannot go stale unnoticed.
struct Gap {
  const char* family;
  const char* form;
  const char* reason;
};
constexpr const char* kRotaryTableGap =
    "the rotary table (inv_freq x positions, computed at run time for the sequence length) is transposed "
    "[1,D/2,S] -> [1,S,D/2] once per inference, a few KB (a static length folds it); the head Transposes sink";
const std::vector<Gap> kExpectedGaps = {
    // (Llama's rotary embeddings kept its Q/K/V head Transposes until sink_head_transposes; CLIP's [B*H,S,D] bmm
    // attention and Swin's shifted-window attention (its mask added through a 5-D view) stayed unfused until
    // lift_bmm_heads; ConvNeXt's channels_first norms until fuse_layernorm took a channel axis.)
    {"hf_whisperenc", "transposes",
     "the Conv1d stem's [B,C,T] output permuted to [B,T,C] before the first layer: layout_nhwc takes only 2-D "
     "convolutions, so the Conv1d stays channels-first and the Transpose runs (once per model)"},
    // Dynamic-length exports (make test-hf's <family>_dynseq_op17): the same expectations, and these gaps.
    {"hf_llama_dynseq", "transposes", kRotaryTableGap},
    {"hf_llama_gqa_dynseq", "transposes", kRotaryTableGap},
    {"hf_qwen2_gqa_dynseq", "transposes", kRotaryTableGap},
    {"hf_mistral_mqa_dynseq", "transposes", kRotaryTableGap},
    {"hf_gemma_dynseq", "transposes", kRotaryTableGap},
    {"hf_t5enc_dynseq", "transposes",
     "the relative position bias, computed at run time for the sequence length, is permuted [S,S,H] -> [1,H,S,S] "
     "once per inference (a static length folds it)"},
    {"hf_convnext", "transposes",
     "the network's output is NCHW: one Transpose takes the NHWC body's result back (the stem's patchify GEMM, the "
     "channels_first norms as Transposed LayerNormalizations and the blocks' permutes all cancel inside)"},
};

// The grouped-query families: their attention must read K and V unrepeated (no repeat_kv Expand or Tile left, the
// FusedAttention's K/V inputs with fewer heads than its Q).
const char* const kGroupedFamilies[] = {"hf_llama_gqa", "hf_qwen2_gqa", "hf_mistral_mqa"};

// The gap listed for this export's variant (e.g. "hf_llama_dynseq", a dynamic-length export) or else its family.
const Gap* find_gap(const std::string& variant, const std::string& family, const std::string& form) {
  for (const std::string& key : {variant, family})
    for (const Gap& g : kExpectedGaps)
      if (key == g.family && form == g.form) return &g;
  return nullptr;
}

// Op counts of the optimized graph, with the ops inside kiln::Pointwise programs (fuse_pointwise runs last and
// folds Gelu, Erf, Pow, Sqrt and Tanh into them) counted under their ONNX names.
std::map<std::string, int> op_counts(const ir::Graph& g) {
  std::map<std::string, int> c;
  for (const auto& n : g.nodes()) {
    ++c[n->op_type];
    // With KILN_HF_LAYERNORM_IO: the LayerNorms that took in their Add or lookup count as LayerNorms too.
    if (n->domain == "kiln" && (n->op_type == "AddLayerNormalization" || n->op_type == "EmbedLayerNormalization")) {
      ++c["LayerNormalization"];
      ++c["LayerNorm with its input"];
    }
    if (n->domain == "kiln" && n->attrs.has("to") && n->op_type.find("LayerNormalization") != std::string::npos)
      ++c["LayerNorm storing float32"];
    // fuse_matmul_epilogue folds a GELU that follows a GEMM into the FusedMatMul, fuse_conv_epilogue one that follows
    // a convolution (Whisper's Conv1d stem) into the FusedConv.
    if (n->op_type == "FusedMatMul" || n->op_type == "FusedConv") {
      auto act = n->attrs.get_string("activation", "none");
      c["Gelu"] += act.ok() && act->rfind("gelu", 0) == 0;
    }
    if (n->op_type != "Pointwise" || n->domain != "kiln") continue;
    auto prog = ops::PointwiseProgram::parse(n->attrs.get_string("program", "").value());
    EXPECT_TRUE(prog.ok());
    if (!prog.ok()) continue;
    for (const ops::PwInstr& x : prog->code) {
      switch (x.op) {
        case ops::PwOp::kGelu: ++c["Gelu"]; break;
        case ops::PwOp::kErf: ++c["Erf"]; break;
        case ops::PwOp::kPow: ++c["Pow"]; break;
        case ops::PwOp::kSqrt: ++c["Sqrt"]; break;
        case ops::PwOp::kTanh: ++c["Tanh"]; break;
        case ops::PwOp::kSigmoid: ++c["Sigmoid in Pointwise"]; break;
        default: break;
      }
    }
  }
  return c;
}

// The family of an export directory: <family>_op<N>, or <family>_dynseq_op<N> for a dynamic-sequence export (the
// same expectations: what fuses must not depend on the sequence length being known).
std::string family_of(const std::string& dir) {
  std::string base = dir.substr(dir.find_last_of('/') + 1);
  base = base.substr(0, base.rfind("_op"));
  for (const std::string suffix : {"_fp16conv", "_dynseq"})
    if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0)
      base.resize(base.size() - suffix.size());
  return base;
}

struct Row {
  std::string family, line;
};
std::vector<Row>& table() {
  static std::vector<Row> rows;
  return rows;
}

void check_model(const std::string& dir) {
  SCOPED_TRACE(dir);
  const std::string family = family_of(dir);
  const std::string base = dir.substr(dir.find_last_of('/') + 1);
  const std::string variant = base.substr(0, base.rfind("_op"));  // family, or family_dynseq
  const Family* want_f = nullptr;
  for (const Family& f : kFamilies)
    if (family == f.name) want_f = &f;
  ASSERT_NE(want_f, nullptr) << "no expectations for family '" << family << "' in kFamilies";
  auto g = import_onnx_file(dir + "/model.onnx");
  ASSERT_NE(g, nullptr);
  // The inputs as meta.json lists them (name, shape, file: the first is input.bin as export_models.py writes it, the
  // others <name>.bin), in the graph's input order; the shapes come from there since the batch, and in a _dynseq
  // export the sequence, are dynamic in the graph.
  std::ifstream mf(dir + "/meta.json");
  ASSERT_TRUE(mf.good()) << dir << "/meta.json";
  const nlohmann::json meta = nlohmann::json::parse(mf);
  std::vector<Tensor> xs;
  for (size_t i = 0; i < g->inputs().size(); ++i) {
    const ir::Value& in = *g->inputs()[i];
    const nlohmann::json* m = nullptr;
    for (const auto& e : meta.at("inputs"))
      if (e.at("name").get<std::string>() == in.name) m = &e;
    ASSERT_NE(m, nullptr) << "input " << in.name << " is not in meta.json";
    xs.push_back(read_input(dir + "/" + m->at("file").get<std::string>(), in, m->at("shape").get<Dims>()));
  }
  auto cpu = g->clone();
  ASSERT_TRUE(run_passes(*cpu, passes::pipeline_for(Backend::kCPU)).ok());
  const Blocks blocks = attention_blocks(*cpu);
  EXPECT_EQ(blocks.all, want_f->attention) << "Softmax nodes in the CPU pipeline's graph";
  EXPECT_EQ(blocks.fusable, blocks.all) << "every export uses head dim 32";
  auto want = run_reference(*cpu, xs);
  ASSERT_EQ(want.size(), 1u);

  auto cuda = g->clone();
  // KILN_HF_LAYERNORM_IO=1: with the LayerNorm input/output fusions (PassOptions::layernorm_io, opt-in), which
  // must leave every count and the result as they are.
  passes::PassOptions io;
  io.layernorm_io = std::getenv("KILN_HF_LAYERNORM_IO") && std::string(std::getenv("KILN_HF_LAYERNORM_IO")) == "1";
  Status st = run_cuda_pipeline(*cuda, DataType::kHALF, io);  // FP16, every kernel assumed present
  ASSERT_TRUE(st.ok()) << st.message();
  // KILN_HF_DUMP=1 prints the optimized graph (to see which form a gap leaves behind).
  if (const char* d = std::getenv("KILN_HF_DUMP"); d && *d == '1') std::cout << ir::print(*cuda) << "\n";
  auto c = op_counts(*cuda);
  const int transposes = data_transposes(*cuda);

  // Each form: fused as it should be, or a listed gap (printed), or a failure.
  auto check = [&](const char* form, bool fused, const std::string& detail) {
    const Gap* gap = find_gap(variant, family, form);
    if (gap) {
      std::cout << "  EXPECTED GAP " << family << " " << form << ": " << gap->reason << " (now: " << detail << ")"
                << (fused ? " -- it fuses now: remove it from kExpectedGaps" : "") << "\n";
      EXPECT_FALSE(fused) << family << " " << form << " is listed in kExpectedGaps but fuses now";
    } else {
      EXPECT_TRUE(fused) << family << " " << form << " did not fuse: " << detail;
    }
  };
  std::ostringstream att, nrm, gel, tr;
  att << c["FusedAttention"] << "/" << blocks.all << " FusedAttention, " << c["Softmax"] << " Softmax left";
  check("attention", c["FusedAttention"] == blocks.all && c["Softmax"] == 0, att.str());
  const int norms = c[want_f->norm_op];
  nrm << norms << "/" << want_f->norms << " " << want_f->norm_op << ", " << c["ReduceMean"] << " ReduceMean, "
      << c["Sqrt"] << " Sqrt, " << c["Pow"] << " Pow left";
  if (io.layernorm_io)
    nrm << " (" << c["LayerNorm with its input"] << " with their Add/lookup, " << c["LayerNorm storing float32"]
        << " storing float32)";
  check("norms", norms == want_f->norms && c["ReduceMean"] == 0 && c["Sqrt"] == 0, nrm.str());
  gel << c["Gelu"] << "/" << want_f->gelus << " Gelu, " << c["Erf"] << " Erf, " << c["Tanh"] << " Tanh, " << c["Pow"]
      << " Pow left";
  // A norm left unfused (a listed gap) leaves its own Pow; a tanh GELU left unfused still shows its Tanh.
  const bool norms_gap = find_gap(variant, family, "norms") != nullptr;
  if (want_f->quick_gelus)
    gel << ", " << c["Sigmoid in Pointwise"] << "/" << want_f->quick_gelus << " quick_gelu Pointwise, " << c["Sigmoid"]
        << " Sigmoid left";
  check("gelu",
        c["Gelu"] == want_f->gelus && c["Erf"] == 0 && c["Tanh"] == 0 && (c["Pow"] == 0 || norms_gap) &&
            c["Sigmoid"] == 0 &&
            (want_f->quick_gelus == 0 || c["Sigmoid in Pointwise"] == want_f->quick_gelus),  // SiLU has one too
        gel.str());
  tr << transposes << " Transpose of rank <= 4 that run";
  check("transposes", transposes == 0, tr.str());
  std::ostringstream rep;
  if (std::find(std::begin(kGroupedFamilies), std::end(kGroupedFamilies), family) != std::end(kGroupedFamilies)) {
    int grouped = 0;
    for (const auto& n : cuda->nodes()) {
      if (n->op_type != "FusedAttention" || n->inputs.size() < 3 || !n->inputs[1]) continue;
      const std::string l = n->attrs.get_string("qkv_layout", "bhsd").value();
      const int hax = l == "bhsd" ? 1 : 2;  // bshd and sbhd keep heads at dim 2
      const ir::Value *q = n->inputs[0], *k = n->inputs[1];
      grouped += q->rank_known && k->rank_known && q->shape.size() == 4 && k->shape.size() == 4 &&
                 q->shape[hax].is_static() && k->shape[hax].is_static() && k->shape[hax].value < q->shape[hax].value;
    }
    int repeats = 0;  // 5-D Expand or Tile: repeat_kv's [B,Hk,n,S,D] (the models' mask Expands are 4-D)
    for (const auto& n : cuda->nodes())
      repeats += (n->op_type == "Expand" || n->op_type == "Tile") && n->outputs[0]->rank_known &&
                 n->outputs[0]->shape.size() == 5;
    rep << grouped << "/" << blocks.all << " FusedAttention reading K/V unrepeated, " << repeats
        << " 5-D Expand/Tile left";
    check("kv repeat", grouped == blocks.all && repeats == 0, rep.str());
  }

  auto got = run_reference(*cuda, xs);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0].shape(), want[0].shape());
  // FP16 activations against the float32 graph: relative L2 of the whole output.
  const double rel = relative_l2(want[0], got[0]);
  EXPECT_LT(rel, 1e-2) << "FP16 CUDA pipeline vs float32 CPU pipeline";
  // And the CPU pipeline against PyTorch's own float32 output (output.bin): the HF forms are imported right.
  std::ifstream f(dir + "/output.bin", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const Tensor cpu_out = want[0].cast(DataType::kFLOAT);
  ASSERT_EQ(bytes.size(), static_cast<size_t>(cpu_out.nbytes())) << "output.bin";
  Tensor torch_out(DataType::kFLOAT, cpu_out.shape());
  std::memcpy(torch_out.raw(), bytes.data(), bytes.size());
  const double torch_rel = relative_l2(torch_out, cpu_out);
  // (An export converted to float16 by onnxconverter-common, <family>_fp16conv, computes in float16 on the CPU too.)
  const bool fp16_model = variant.find("_fp16conv") != std::string::npos;
  EXPECT_LT(torch_rel, fp16_model ? 1e-2 : 1e-4) << "CPU pipeline vs PyTorch";
  std::ostringstream line;
  line << att.str() << (rep.str().empty() ? "" : " | " + rep.str())
       << " | " << nrm.str() << " | " << gel.str() << " | " << tr.str() << " | rel L2 " << rel
       << " (CPU pipeline vs PyTorch " << torch_rel << ") | "
       << cuda->nodes().size() << " nodes (CPU pipeline " << cpu->nodes().size() << ")";
  std::cout << dir << " float16: " << line.str() << "\n";
  table().push_back({variant, line.str()});
}

TEST(HfModels, FusedInEveryExport) {
  const char* dirs = std::getenv("KILN_HF_MODEL_DIRS");
  if (!dirs || !*dirs) GTEST_SKIP() << "KILN_HF_MODEL_DIRS is not set (`make test-hf` sets it)";
  std::stringstream ss(dirs);
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty()) check_model(dir);
  std::cout << "\nHF exports through the CUDA FP16 pass list:\n";
  for (const Row& r : table()) std::cout << "  " << r.family << ": " << r.line << "\n";
}

}  // namespace
