// Random test data, and the reference runner the pass tests share: a graph (kiln-domain ops included) computed
// node by node with each op's reference compute, without engines or executors.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "ir/graph.h"

namespace kiln::test {

// Random tensor of any numeric type: floats in [lo, hi), integers in [lo, hi], bools half true.
inline Tensor random_tensor(DataType dt, std::vector<int64_t> shape, uint32_t seed, double lo = -2, double hi = 2) {
  Tensor f(DataType::kDOUBLE, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t i = 0; i < f.numel(); ++i) {
    double x = u(rng);
    if (dt != DataType::kFLOAT && dt != DataType::kDOUBLE && dt != DataType::kHALF && dt != DataType::kBF16)
      x = std::round(x);
    if (dt == DataType::kBOOL) x = x > (lo + hi) / 2;
    f.data<double>()[i] = x;
  }
  return f.cast(dt);
}

// Every graph output, computed node by node with the reference kernels.
inline std::vector<Tensor> run_reference(const ir::Graph& g, const std::vector<Tensor>& inputs) {
  std::map<const ir::Value*, Tensor> vals;
  for (size_t i = 0; i < inputs.size(); ++i) vals[g.inputs()[i]] = inputs[i];
  for (auto& n : g.nodes()) {
    std::vector<const Tensor*> in;
    for (auto* v : n->inputs) {
      if (!v) {
        in.push_back(nullptr);
        continue;
      }
      if (v->is_constant()) vals[v] = *v->constant;
      in.push_back(&vals.at(v));
    }
    std::vector<Tensor> out(n->outputs.size());
    ops::ComputeContext c(n->attrs, n->opset ? n->opset : g.opset(), in, &out);
    const ops::OpSchema* s = ops::OpRegistry::instance().find(n->op_type, n->domain);
    EXPECT_NE(s, nullptr) << n->op_type;
    if (!s) return {};
    Status st = s->compute(c);
    EXPECT_TRUE(st.ok()) << n->name << ": " << st.message();
    if (!st.ok()) return {};
    for (size_t k = 0; k < out.size(); ++k) vals[n->outputs[k]] = out[k];
  }
  std::vector<Tensor> r;
  for (auto* v : g.outputs()) r.push_back(v->is_constant() ? *v->constant : vals.at(v));
  return r;
}

// ||got - want|| / ||want|| over all elements, in double (the two of one shape, any float types): how model-level
// FP16 results are compared with a float32 reference.
inline double relative_l2(const Tensor& want, const Tensor& got) {
  EXPECT_EQ(want.shape(), got.shape());
  if (want.shape() != got.shape()) return INFINITY;
  const Tensor a = want.cast(DataType::kDOUBLE), b = got.cast(DataType::kDOUBLE);
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<double>()[i], d = b.data<double>()[i] - x;
    num += d * d;
    den += x * x;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace kiln::test
