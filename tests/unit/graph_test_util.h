// The reference runner the pass tests share: a graph (kiln-domain ops included) computed node by node with each
// op's reference compute, without engines or executors.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "ir/graph.h"

namespace kiln::test {

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

}  // namespace kiln::test
