// GPU test helpers that time an engine on the device and set environment switches for one scope (the tactic
// gates of kernels not yet measured).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace kiln::gpu_testing {

// Device buffers of one engine's I/O, and the average time of `runs` enqueues.
struct Timed {
  Tensor y;
  double us = 0;
};

// An engine's inputs (by name) in device buffers, its output "y" of type y_dtype: the average of `runs` enqueues
// (`graph`: of CUDA-graph replays through enqueue_graph, as a serving loop at batch 1 runs an engine).
inline Timed time_engine(Engine& engine, const std::vector<std::pair<std::string, Tensor>>& inputs, DataType y_dtype,
                         int runs, bool graph = false) {
  Timed r;
  auto ctx = engine.create_execution_context();
  std::vector<void*> bufs;
  for (const auto& [name, t] : inputs) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, t.nbytes()), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, t.raw(), t.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_TRUE(ctx->set_input_shape(name, t.shape()).ok());
    EXPECT_TRUE(ctx->set_tensor_address(name, d).ok());
    bufs.push_back(d);
  }
  auto yshape = ctx->get_tensor_shape("y");
  EXPECT_TRUE(yshape.ok());
  if (!yshape.ok()) return r;
  r.y = Tensor(y_dtype, *yshape);
  void* dy = nullptr;
  EXPECT_EQ(cudaMalloc(&dy, r.y.nbytes()), cudaSuccess);
  bufs.push_back(dy);
  EXPECT_TRUE(ctx->set_tensor_address("y", dy).ok());
  cudaStream_t s;
  EXPECT_EQ(cudaStreamCreate(&s), cudaSuccess);
  auto run = [&] { return graph ? ctx->enqueue_graph(s) : ctx->enqueue(s); };
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(run().ok());  // the first run times cuDNN's candidates (and captures)
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, s);
  for (int i = 0; i < runs; ++i) EXPECT_TRUE(run().ok());
  cudaEventRecord(e1, s);
  EXPECT_EQ(cudaEventSynchronize(e1), cudaSuccess);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  r.us = 1000.0 * ms / runs;
  EXPECT_EQ(cudaMemcpy(r.y.raw(), dy, r.y.nbytes(), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  for (void* b : bufs) cudaFree(b);
  return r;
}

// A graph written as a CUDA engine as it stands (no passes), timed.
inline Timed time_on_gpu(const ir::Graph& g, const std::vector<Tensor>& inputs, int runs) {
  BuilderConfig config;
  config.set_backend(Backend::kCUDA);
  auto engine = test::load_engine(builder::write_engine(g, config));
  if (!engine) return {};
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < inputs.size(); ++i) named.emplace_back(g.inputs()[i]->name, inputs[i]);
  return time_engine(*engine, named, g.outputs()[0]->dtype, runs);
}

// Collects the builder's messages, e.g. the tuner's "tactic for '<layer>': <name> (... best of N timed)" lines.
struct TextLogger : ILogger {
  std::string text;
  void log(Severity, const char* msg) noexcept override { text += std::string(msg) + "\n"; }
};

// A tuned build of the graph `make` fills (at `level`): the engine, the tactic recorded for the (last) layer of
// type `op`, and how many candidates the tuner timed for layer `layer` (-1: no tactic line for it).
struct TunedBuild {
  std::unique_ptr<Engine> engine;
  std::string tactic;
  int timed = -1;
  std::string log;  // the builder's messages
};
template <typename Make>
TunedBuild tuned_build(const char* op, const char* layer, int level, Make&& make) {
  TextLogger log;
  Builder builder(log);
  auto net = builder.create_network();
  make(net->graph());
  auto config = builder.create_builder_config();
  config->set_backend(Backend::kCUDA);
  config->set_builder_optimization_level(level);
  TunedBuild r;
  r.engine = test::load_engine(builder.build_serialized_network(*net, *config));
  r.log = log.text;
  EXPECT_NE(r.engine, nullptr);
  if (!r.engine) return r;
  for (const auto& pn : r.engine->plan().nodes)
    if (pn.op_type == op)
      if (const Attribute* t = pn.attrs.find("kiln.tactic"); t && t->type() == AttrType::kSTRING) r.tactic = t->s();
  const size_t at = log.text.find(std::string("tactic for '") + layer + "'");
  if (at != std::string::npos) {
    const size_t best = log.text.find("best of ", at);
    if (best != std::string::npos && best < log.text.find('\n', at)) r.timed = std::atoi(log.text.c_str() + best + 8);
  }
  return r;
}

// Two builds through one timing cache file: `build(path)` once (the tuner writes its answers), then again with
// every answer matching `pattern` (a regex over the cache's quoted tactic names) renamed to `tactic`, so that the
// second build takes that tactic from the cache whatever won the timing. The second build's engine.
template <typename Build>
Result<std::vector<uint8_t>> build_with_cached_tactic(const std::string& name, const std::string& pattern,
                                                      const std::string& tactic, Build&& build) {
  const std::string path = ::testing::TempDir() + "kiln_forced_cache_" + name + ".json";
  std::remove(path.c_str());
  auto first = build(path);
  if (!first.ok()) return first.status();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  in.close();
  const std::string forced = std::regex_replace(text.str(), std::regex(pattern), "\"" + tactic + "\"");
  EXPECT_NE(forced.find("\"" + tactic + "\""), std::string::npos) << text.str();
  std::ofstream(path, std::ios::trunc) << forced;
  auto blob = build(path);
  std::remove(path.c_str());
  return blob;
}

// Builds the graph `make` fills (it returns the graph's inputs) through the Builder at optimization level 3 (the
// tactic tuner runs), checks that nothing ran on the host and that the tuned engine matches the CPU reference on
// a second, untouched copy of the graph (within tol; `what` names the check), and returns the tactic recorded on
// its `op` node (empty: none recorded).
template <typename Make>
std::string tuned_tactic_of(const char* op, Make&& make, double tol, const char* what) {
  TunedBuild b = tuned_build(op, "", 3, make);
  if (!b.engine) return {};
  Engine* engine = b.engine.get();
  EXPECT_EQ(test::host_layers(*engine), "");
  const std::string tactic = b.tactic;
  ir::Graph ref;  // the same graph, untouched by the builder's passes, for the CPU reference
  const std::vector<Tensor> inputs = make(ref);
  std::vector<std::pair<std::string, Tensor>> named;
  for (size_t i = 0; i < inputs.size(); ++i) named.emplace_back(ref.inputs()[i]->name, inputs[i]);
  const auto got = test::infer(*engine, named);
  const auto want = run_graph(ref, Backend::kCPU, inputs, nullptr);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(want.size(), 1u);
  if (got.size() == 1 && want.size() == 1) expect_tensors_close(want[0], got[0], tol, tol, what);
  return tactic;
}

// Elements of two half tensors of one shape (checked by the caller) that differ by more than 8e-3 absolute plus
// 8e-3 relative: the batch-128 timing tests' agreement between two implementations of one layer.
inline int64_t half_mismatches(const Tensor& a, const Tensor& b) {
  const Half* ya = a.data<Half>();
  const Half* yb = b.data<Half>();
  int64_t bad = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float u = ya[i], v = yb[i];
    if (!(std::fabs(u - v) <= 8e-3f + 8e-3f * std::fabs(v))) ++bad;
  }
  return bad;
}

// Sets an environment variable for one scope and restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace kiln::gpu_testing
