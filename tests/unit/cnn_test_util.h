// Helpers for the pass tests (CNN, transformer, general): building small conv graphs, running a pass list, and running
// a graph node by node on the reference kernels (the CPU backend's implementations) to compare a transformed graph with
// the original.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine_test_util.h"
#include "graph_test_util.h"
#include "ir/graph.h"
#include "passes/pass_manager.h"

namespace kiln::test {

inline Tensor random_f32(std::vector<int64_t> shape, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t(DataType::kFLOAT, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
  return t;
}

inline ir::Value* graph_input(ir::Graph& g, const std::string& name, std::vector<int64_t> shape,
                              DataType dt = DataType::kFLOAT) {
  return add_input(g, name, dt, ops::shape_from_dims(shape));
}

inline ir::Value* op1(ir::Graph& g, const std::string& op, std::vector<ir::Value*> in, Attributes a = {},
                      const std::string& domain = "") {
  return g.add_node(op, op, in, {op + "_out"}, std::move(a), domain.empty() ? 17 : 1, domain)->outputs[0];
}

// Runs shape inference, then `passes`, verifying after each.
inline Status run_passes(ir::Graph& g, passes::PassList passes, passes::PassOptions o = {}) {
  struct Quiet : ILogger {
    void log(Severity, const char*) noexcept override {}
  };
  static Quiet quiet;
  o.verify_each = true;
  passes::PassContext ctx(quiet, o);
  passes::PassList l;
  l.push_back(passes::make_shape_inference());
  for (auto& p : passes) l.push_back(std::move(p));
  passes::PassManager pm(std::move(l));
  return pm.run(g, ctx);
}

// The CUDA pipeline as the builder runs it with a reduced precision, every kernel assumed present; `o` carries
// any other options (opt-in fusions).
inline Status run_cuda_pipeline(ir::Graph& g, DataType reduced = DataType::kHALF, passes::PassOptions o = {}) {
  o.backend = Backend::kCUDA;
  o.reduced_precision = reduced;
  o.has_kernel = [](const std::string&, const std::string&, DataType) { return true; };
  return run_passes(g, passes::pipeline_for(Backend::kCUDA), o);
}

// A pass list from its passes: list_of(make_a(), make_b()).
template <typename... P>
passes::PassList list_of(P... p) {
  passes::PassList l;
  (l.push_back(std::move(p)), ...);
  return l;
}

// |a - b| <= atol + rtol * |b| everywhere, shapes equal.
inline void expect_close(const Tensor& a, const Tensor& b, double atol, double rtol = 0) {
  ASSERT_EQ(a.shape(), b.shape());
  Tensor x = a.cast(DataType::kDOUBLE), y = b.cast(DataType::kDOUBLE);
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double d = std::fabs(x.data<double>()[i] - y.data<double>()[i]);
    if (!(d <= atol + rtol * std::fabs(y.data<double>()[i])) && bad++ == 0) first = i;
  }
  EXPECT_EQ(bad, 0) << bad << " of " << x.numel() << " differ; first at " << first << ": "
                    << (first >= 0 ? x.data<double>()[first] : 0) << " vs "
                    << (first >= 0 ? y.data<double>()[first] : 0);
}

inline int count_ops(const ir::Graph& g, const std::string& op) {
  int n = 0;
  for (auto& node : g.nodes()) n += node->op_type == op;
  return n;
}

inline const ir::Node* find_op(const ir::Graph& g, const std::string& op) {
  for (auto& n : g.nodes())
    if (n->op_type == op) return n.get();
  return nullptr;
}

}  // namespace kiln::test
