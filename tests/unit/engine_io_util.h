// The I/O plumbing of engine-level tests (unit and GPU): Tensor <-> HostTensor, loading a built engine, one
// inference on Tensors, and the layers a device engine leaves on the host. Failures are test failures (EXPECT),
// and the helpers then return empty values so that the caller's own checks fail too.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/tensor.h"
#include "kiln/runtime.h"
#include "runtime/device_backend.h"

namespace kiln::test {

inline HostTensor to_host(const Tensor& t) {
  HostTensor h;
  h.dtype = t.dtype();
  h.dims = t.shape();
  const auto* p = static_cast<const uint8_t*>(t.raw());
  h.data.assign(p, p + t.nbytes());
  return h;
}

inline Tensor from_host(const HostTensor& h) {
  Tensor t(h.dtype, h.dims);
  if (!h.data.empty()) std::memcpy(t.raw(), h.data.data(), h.data.size());
  return t;
}

// The engine a serialized blob holds, or null.
inline std::unique_ptr<Engine> load_engine(const std::vector<uint8_t>& blob, ILogger& logger = default_logger()) {
  Runtime rt(logger);
  auto engine = rt.deserialize_engine(blob.data(), blob.size());
  EXPECT_TRUE(engine.ok()) << engine.status().message();
  if (!engine.ok()) return nullptr;
  return std::move(*engine);
}

// The engine a build produced, or null.
inline std::unique_ptr<Engine> load_engine(const Result<std::vector<uint8_t>>& blob,
                                           ILogger& logger = default_logger()) {
  EXPECT_TRUE(blob.ok()) << blob.status().message();
  if (!blob.ok()) return nullptr;
  return load_engine(blob.value(), logger);
}

// The outputs of one run on the named inputs, in the engine's output order; empty when the run failed. On a
// given context (several runs of one context at different shapes), or on a fresh one.
inline std::vector<Tensor> infer(ExecutionContext& ctx, const std::vector<std::pair<std::string, Tensor>>& inputs) {
  std::vector<std::pair<std::string, HostTensor>> feed;
  for (const auto& [name, t] : inputs) feed.emplace_back(name, to_host(t));
  auto res = ctx.infer(feed);
  EXPECT_TRUE(res.ok()) << res.status().message();
  std::vector<Tensor> r;
  if (!res.ok()) return r;
  for (const auto& [name, h] : *res) r.push_back(from_host(h));
  return r;
}

inline std::vector<Tensor> infer(const Engine& engine, const std::vector<std::pair<std::string, Tensor>>& inputs) {
  auto ctx = engine.create_execution_context();
  EXPECT_NE(ctx, nullptr);
  if (!ctx) return {};
  return infer(*ctx, inputs);
}

// Inputs named in0, in1, ... (the networks the op tests build), skipping undefined tensors and `skip[i]` ones.
inline std::vector<std::pair<std::string, Tensor>> numbered_inputs(const std::vector<Tensor>& inputs,
                                                                   const std::vector<bool>& skip = {}) {
  std::vector<std::pair<std::string, Tensor>> r;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && !(i < skip.size() && skip[i])) r.emplace_back("in" + std::to_string(i), inputs[i]);
  return r;
}

// The layers of a CUDA engine that run on the host reference kernels, space-separated ("" for none).
inline std::string host_layers(const Engine& engine) {
  std::string s;
  auto b = runtime::device_backend(engine.backend());
  if (!b.ok()) return s;
  for (auto& n : (*b)->host_nodes(engine.plan())) s += n + " ";
  return s;
}

}  // namespace kiln::test
