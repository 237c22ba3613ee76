// Helpers for the tests that run exported transformers (tests/models/export_models.py, export_hf.py) through the
// CUDA pass list on the reference kernels: reading the export's inputs, counting attention blocks and the
// Transposes an engine would run.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <sstream>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "graph_test_util.h"

namespace kiln::test {

// The model directories the environment variables list (':'-separated; `make test-models` sets them), in order.
inline std::vector<std::string> model_dirs(std::initializer_list<const char*> vars) {
  std::vector<std::string> dirs;
  for (const char* var : vars)
    if (const char* v = std::getenv(var)) {
      std::stringstream ss(v);
      std::string d;
      while (std::getline(ss, d, ':'))
        if (!d.empty()) dirs.push_back(d);
    }
  return dirs;
}

// An input the export wrote (raw C-order data in the graph input's dtype): of `shape` where given, else every dim
// but the batch is the graph's.
inline Tensor read_input(const std::string& path, const ir::Value& in, Dims shape = {}) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const int64_t item = static_cast<int64_t>(dtype_size(in.dtype));
  if (shape.empty()) {
    int64_t per_row = 1;
    for (size_t i = 1; i < in.shape.size(); ++i) per_row *= in.shape[i].value;
    shape = {static_cast<int64_t>(bytes.size()) / (per_row * item)};
    for (size_t i = 1; i < in.shape.size(); ++i) shape.push_back(in.shape[i].value);
  }
  Tensor t(in.dtype, shape);
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), bytes.size());
  std::memcpy(t.raw(), bytes.data(), std::min<size_t>(bytes.size(), t.nbytes()));
  return t;
}

// Attention blocks in the exported graph (one Softmax each in these models), and of them those whose head dim the
// CUDA fusion takes (multiples of 8 up to 128: its tensor-core kernel's; other head dims stay unfused by design). The head dim is
// the last dim of Q, the first operand of the MatMul the scores come from (through scale and mask nodes).
struct Blocks {
  int all = 0, fusable = 0;
};
inline Blocks attention_blocks(const ir::Graph& g) {
  Blocks b;
  for (const auto& n : g.nodes()) {
    if (n->op_type != "Softmax") continue;
    ++b.all;
    const ir::Node* p = n->inputs[0]->producer;
    while (p && p->op_type != "MatMul" && !p->inputs.empty()) {
      // The non-constant operand of a scale, cast or mask node; of several (an additive mask, a Where's
      // condition), the MatMul's result, else the one with the node's own shape, which the scores keep.
      const ir::Value* next = nullptr;
      for (const ir::Value* v : p->inputs)
        if (v && !v->is_constant() && v->producer && v->rank_known && v->shape.size() >= 3 &&
            v->dtype != DataType::kBOOL &&  // a Where's condition is the mask, never the scores
            (!next || (next->producer->op_type != "MatMul" &&
                       (v->producer->op_type == "MatMul" || v->shape == p->outputs[0]->shape))))
          next = v;
      p = next ? next->producer : nullptr;
    }
    if (!p || !p->inputs[0]->rank_known) continue;
    const ops::Dim& d = p->inputs[0]->shape.back();
    b.fusable += d.is_static() && d.value > 0 && d.value % 8 == 0 && d.value <= 128;
  }
  return b;
}

// Transposes of rank <= 4 whose result something other than Shape reads: the exporters' head-splitting and
// batch/sequence-first copies an engine would run (a layer that only feeds host-known values, such as a Shape of
// it, is skipped by the runtime; the rank-6 one that cuts ViT's image into patches is real work and not counted).
inline bool match_graph_output(const ir::Graph& g, const ir::Value* v) {
  return std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
}
inline int data_transposes(const ir::Graph& g) {
  int n = 0;
  for (const auto& node : g.nodes()) {
    if (node->op_type != "Transpose" || !node->outputs[0]->rank_known || node->outputs[0]->shape.size() > 4) continue;
    bool data = match_graph_output(g, node->outputs[0]);
    for (const ir::Node* u : node->outputs[0]->users) data |= u->op_type != "Shape";
    n += data;
  }
  return n;
}

}  // namespace kiln::test
