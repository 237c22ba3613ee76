// The graph se_scale_gemm rewrites, as conv1x1_as_gemm leaves it after a squeeze-excitation gate: x -> Mul(x,
// Sigmoid(g)) -> FusedMatMul(W [M, C] trans_b, bias, residual z). Shared by the pass tests (CPU reference) and the
// GPU tests (the rewritten graph's batched GEMM on CUDA).
#pragma once

#include <string>
#include <vector>

#include "cnn_test_util.h"

namespace kiln::test {

struct SeGraphSpec {
  int64_t n = 2, h = 8, w = 8, c = 16, m = 8;
  bool scale_first = false;  // Mul(s, x), torchvision's `scale * input`
  bool residual = false;
  const char* act = "none";
  DataType dt = DataType::kFLOAT;
  bool rank3 = false;            // x [N, H*W, C], s [N, 1, C]
  std::vector<int64_t> s_shape;  // default [N, 1, 1, C] (or [N, 1, C])
  bool extra_reader = false;     // the product is also a graph output
  bool symbolic_batch = false;
};

// Inputs x, g (and z with a residual), in the graph's type dt; output "y", the product "scaled".
struct SeGraph {
  ir::Graph g;
  std::vector<Tensor> inputs;
  explicit SeGraph(const SeGraphSpec& p) {
    std::vector<int64_t> xs =
        p.rank3 ? std::vector<int64_t>{p.n, p.h * p.w, p.c} : std::vector<int64_t>{p.n, p.h, p.w, p.c};
    std::vector<int64_t> ss = !p.s_shape.empty() ? p.s_shape
                              : p.rank3          ? std::vector<int64_t>{p.n, 1, p.c}
                                                 : std::vector<int64_t>{p.n, 1, 1, p.c};
    auto input = [&](const std::string& name, std::vector<int64_t> dims, uint32_t seed) {
      ir::Value* v = graph_input(g, name, dims, p.dt);
      if (p.symbolic_batch && dims[0] == p.n) v->shape[0] = ops::Dim::symbol("batch");
      inputs.push_back(random_f32(dims, seed).cast(p.dt));
      return v;
    };
    ir::Value* x = input("x", xs, 1);
    ir::Value* gate = input("g", ss, 2);
    ir::Value* s = g.add_node("Sigmoid", "sigmoid", {gate}, {"s"}, {}, 13)->outputs[0];
    std::vector<ir::Value*> mul_in = p.scale_first ? std::vector<ir::Value*>{s, x} : std::vector<ir::Value*>{x, s};
    ir::Value* scaled = g.add_node("Mul", "se_mul", mul_in, {"scaled"}, {}, 14)->outputs[0];
    std::vector<ir::Value*> in = {scaled, g.add_constant("w", random_f32({p.m, p.c}, 3).cast(p.dt)),
                                  g.add_constant("b", random_f32({p.m}, 4).cast(p.dt))};
    if (p.residual) {
      std::vector<int64_t> zs = xs;
      zs.back() = p.m;
      in.push_back(input("z", zs, 5));
    }
    Attributes a;
    a.set("trans_b", int64_t{1});
    a.set("activation", std::string(p.act));
    if (p.residual) a.set("residual_first", int64_t{1});
    ir::Node* mm = g.add_node("FusedMatMul", "proj", in, {"y"}, a, 1, "kiln");
    g.outputs().push_back(mm->outputs[0]);
    if (p.extra_reader) g.outputs().push_back(scaled);
  }
};

}  // namespace kiln::test
