// fold_layernorm_into_matmul pass (CUDA): a LayerNormalization over the last axis whose Y only a FusedMatMul with a
// constant B reads, as A (a pre-LN transformer's ln_1 -> QKV GEMM and ln_2 -> FFN1 GEMM), goes into that GEMM.
// LN(x) = (x - mean) * rstd * gamma + beta, so with W'[k,n] = gamma[k] * B[k,n]:
//   alpha * LN(x).B + bias = alpha * rstd * (x.W' - mean * colsum) + bias',
//   colsum[n] = sum_k W'[k,n],  bias'[n] = bias[n] + alpha * sum_k beta[k] * B[k,n],
// which is kiln::FusedMatMul with norm_epsilon (fused_matmul.cpp): the kernel reads x once for the row statistics and
// the product, and the normalized activation is neither written nor read back. colsum is summed from W' as rounded
// to float16, the values the kernel multiplies, so that the mean term cancels what the product adds.
//
// Only float16 with B stored [K, N] (trans_b 0), K and N multiples of 8, no residual and activation none or gelu_erf:
// the CUDA kernels exist for that. Only GEMMs of at least PassOptions::norm_gemm_min_rows rows, where a dynamic dim
// counts at the smallest value the optimization profiles give it (PassOptions::symbol_min): at batch 1 cuBLASLt
// after a separate LayerNorm is faster than those kernels. Off unless PassOptions::norm_gemm.
#include <cmath>

#include "ops/op_util.h"
#include "passes/fusion_util.h"
#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// The GEMM's alignment the kernels need: 16-byte rows of float16 in A (K) and in B and the output (N).
constexpr int64_t kAlign = 8;

// The elements of a LayerNorm Scale or Bias as a vector of k: [k], or one value ([1] or rank 0) broadcast; empty when
// it is neither (a parameter that does not broadcast to [k] is left to the LayerNorm to reject).
std::vector<double> norm_param(const ir::Value* v, int64_t k) {
  if (!v->is_constant() || !dtype_is_float(v->dtype) || v->constant->rank() > 1) return {};
  std::vector<double> p = v->constant->to_f64_vector();
  if (p.size() == 1) p.assign(static_cast<size_t>(k), p[0]);
  if (static_cast<int64_t>(p.size()) != k) return {};
  return p;
}

bool all_finite(const Tensor& t) {
  const std::vector<double> v = t.to_f64_vector();
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

class FoldLayerNormIntoMatMul final : public Pass {
 public:
  std::string_view name() const override { return "fold_layernorm_into_matmul"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    if (!ctx.options.norm_gemm) return Status::Ok();
    std::vector<ir::Node*> norms;
    for (const auto& n : g.nodes())
      if (n->op_type == "LayerNormalization" && n->domain.empty()) norms.push_back(n.get());
    int folded = 0;
    for (ir::Node* ln : norms) folded += fold(g, ctx, ln) ? 1 : 0;
    if (folded > 0) {
      g.prune_values();
      KILN_RETURN_IF_ERROR(g.topo_sort());
      ctx.changes += folded;
    }
    return Status::Ok();
  }

 private:
  static bool fold(ir::Graph& g, PassContext& ctx, ir::Node* ln) {
    if (ln->inputs.size() < 2 || ln->outputs.empty() || !ln->inputs[0] || !ln->inputs[1]) return false;
    ir::Value* x = ln->inputs[0];
    ir::Value* y = ln->outputs[0];
    ir::Value* beta_v = ln->inputs.size() > 2 ? ln->inputs[2] : nullptr;
    // Y only: the Mean/InvStdDev outputs must be absent or unread.
    for (size_t k = 1; k < ln->outputs.size(); ++k)
      if (ln->outputs[k] && (!ln->outputs[k]->users.empty() || match::is_graph_output(g, ln->outputs[k]))) return false;
    if (!y || match::is_graph_output(g, y)) return false;
    // One GEMM reads Y; other readers may only take its shape (a Shape node: an exporter reading the activation's
    // size, x.shape in the model's code), which is X's, and which they read from X after the fold.
    ir::Node* mm = nullptr;
    std::vector<ir::Node*> shape_readers;
    for (ir::Node* u : y->users) {
      if (u->op_type == "Shape" && u->domain.empty()) {
        shape_readers.push_back(u);
      } else if (mm && mm != u) {
        return false;
      } else {
        mm = u;
      }
    }
    if (!mm) return false;
    if (x->dtype != DataType::kHALF || y->dtype != DataType::kHALF) return false;

    // X's last dim static and its rows bounded below (static dims, or symbols the profiles bound: a dynamic
    // batch), normalized over its last axis alone.
    if (!x->rank_known || x->shape.size() < 2 || !x->shape.back().is_static()) return false;
    std::vector<int64_t> lower;
    for (const auto& d : x->shape) {
      if (d.is_static()) {
        lower.push_back(d.value);
        continue;
      }
      const auto it = ctx.options.symbol_min.find(d.sym);
      if (d.sym.empty() || it == ctx.options.symbol_min.end()) return false;
      lower.push_back(it->second);
    }
    const int64_t rank = static_cast<int64_t>(x->shape.size());
    auto axis_attr = ln->attrs.get_int("axis", -1);
    if (!axis_attr.ok()) return false;
    auto axis = ops::normalize_axis(*axis_attr, rank);
    if (!axis.ok() || *axis != rank - 1) return false;
    auto eps = ln->attrs.get_float("epsilon", 1e-5f);
    // float32 statistics (stash_type 1) are what the kernels compute; double ones (11) are left as they are.
    auto stash = ln->attrs.get_int("stash_type", 1);
    if (!eps.ok() || !stash.ok() || *stash != 1) return false;
    const int64_t k = x->shape.back().value;
    int64_t m = 1;  // the fewest rows the GEMM will see
    for (int64_t d = 0; d + 1 < rank; ++d) m *= lower[d];
    if (m < ctx.options.norm_gemm_min_rows || k % kAlign != 0 || k == 0) return false;

    // The GEMM: A = Y, one constant [K, N] float16 B, a constant bias or none, no residual, not folded already.
    if (mm->op_type != "FusedMatMul" || mm->domain != "kiln" || mm->inputs.size() < 2 || mm->inputs[0] != y ||
        mm->outputs.size() != 1 || mm->attrs.has("norm_epsilon"))
      return false;
    ir::Value* b = mm->inputs[1];
    ir::Value* bias_v = mm->inputs.size() > 2 ? mm->inputs[2] : nullptr;
    if ((mm->inputs.size() > 3 && mm->inputs[3]) || (mm->inputs.size() > 4 && mm->inputs[4])) return false;
    auto act = mm->attrs.get_string("activation", "none");
    auto tb = mm->attrs.get_int("trans_b", 0);
    auto alpha = mm->attrs.get_float("alpha", 1.0f);
    if (!act.ok() || (*act != "none" && *act != "gelu_erf") || !tb.ok() || *tb != 0 || !alpha.ok()) return false;
    if (!b || !b->is_constant() || b->dtype != DataType::kHALF || b->constant->rank() != 2 || b->constant->dim(0) != k)
      return false;
    const int64_t n = b->constant->dim(1);
    if (n % kAlign != 0 || n == 0) return false;
    if (bias_v && (!bias_v->is_constant() || bias_v->dtype != DataType::kHALF || bias_v->constant->rank() != 1 ||
                   bias_v->constant->numel() != n))
      return false;

    const std::vector<double> gamma = norm_param(ln->inputs[1], k);
    if (gamma.empty()) return false;
    std::vector<double> beta;
    if (beta_v) {
      beta = norm_param(beta_v, k);
      if (beta.empty()) return false;
    }

    // W' = gamma * B (a new constant: B may have other readers), rounded to float16 once; colsum from those
    // rounded values, in double, stored as float32.
    const std::vector<double> bd = b->constant->to_f64_vector();
    Tensor wd(DataType::kDOUBLE, {k, n});
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < n; ++j) wd.data<double>()[i * n + j] = gamma[i] * bd[i * n + j];
    Tensor w = wd.cast(DataType::kHALF);
    if (!all_finite(w)) return false;  // a gamma that takes gamma * B past float16's range
    const Tensor wr = w.cast(DataType::kDOUBLE);
    Tensor colsum(DataType::kFLOAT, {n});
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t i = 0; i < k; ++i) s += wr.data<double>()[i * n + j];
      colsum.data<float>()[j] = static_cast<float>(s);
    }
    // bias' = bias + alpha * beta.B, from the original B; without beta the bias stays as it is.
    Tensor new_bias;
    if (!beta.empty()) {
      Tensor bb(DataType::kDOUBLE, {n});
      const std::vector<double> old = bias_v ? bias_v->constant->to_f64_vector() : std::vector<double>(n, 0.0);
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t i = 0; i < k; ++i) s += beta[i] * bd[i * n + j];
        bb.data<double>()[j] = old[j] + static_cast<double>(*alpha) * s;
      }
      new_bias = bb.cast(DataType::kHALF);
      if (!all_finite(new_bias)) return false;
    }

    // The rewrite: the GEMM keeps its name and output and reads X; the LayerNorm goes, recorded on the GEMM for
    // layer information.
    if (!mm->attrs.find(ops::kFusedFromAttr))
      mm->attrs.set(ops::kFusedFromAttr, Attribute(std::vector<std::string>{mm->name}));
    match::record_fusion(mm, {ln});
    mm->attrs.set("norm_epsilon", *eps);
    if (mm->inputs.size() < 5) mm->inputs.resize(5, nullptr);
    g.set_node_input(mm, 0, x);
    for (ir::Node* u : shape_readers)
      for (size_t i = 0; i < u->inputs.size(); ++i)
        if (u->inputs[i] == y) g.set_node_input(u, i, x);
    g.set_node_input(mm, 1, g.add_constant(mm->name + "_norm_weight", std::move(w)));
    if (new_bias.defined()) g.set_node_input(mm, 2, g.add_constant(mm->name + "_norm_bias", std::move(new_bias)));
    g.set_node_input(mm, 4, g.add_constant(mm->name + "_norm_colsum", std::move(colsum)));
    std::vector<ir::Value*> outs = ln->outputs;
    const std::string ln_name = ln->name;
    g.remove_node(ln);
    for (ir::Value* o : outs)
      if (o && o->users.empty() && !match::is_graph_output(g, o)) g.remove_value(o);
    ctx.verbose("fold_layernorm_into_matmul: " + ln_name + " folded into " + mm->name + " (M=" + std::to_string(m) +
                ", K=" + std::to_string(k) + ", N=" + std::to_string(n) + ")");
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_layernorm_into_matmul() { return std::make_unique<FoldLayerNormIntoMatMul>(); }

}  // namespace kiln::passes
