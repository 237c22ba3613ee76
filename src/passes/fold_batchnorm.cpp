// fold_batchnorm pass: an inference BatchNormalization after a Conv/ConvTranspose with constant weights becomes
// part of the convolution's weights and bias (y = a*(conv(x) + b - mean) + beta, a = scale / sqrt(var + eps)).
#include <cmath>

#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

bool is_float(DataType t) {
  return t == DataType::kFLOAT || t == DataType::kDOUBLE || t == DataType::kHALF || t == DataType::kBF16;
}

// BN's parameter inputs (scale, B, mean, var) are constant vectors of one entry per output channel.
bool params_fold(const ir::Node& bn, int64_t channels) {
  if (bn.inputs.size() != 5) return false;
  for (int i = 1; i < 5; ++i) {
    const ir::Value* v = bn.inputs[i];
    if (!v || !v->is_constant() || !is_float(v->dtype) || v->constant->numel() != channels) return false;
  }
  return true;
}

// Only Y may be read: the training outputs (running mean/var) need the unfolded statistics.
bool inference_form(const ir::Graph& g, const ir::Node& bn) {
  auto mode = bn.attrs.get_int("training_mode", 0);
  if (!mode.ok() || *mode != 0) return false;
  for (size_t k = 1; k < bn.outputs.size(); ++k)
    if (!bn.outputs[k]->users.empty() || match::is_graph_output(g, bn.outputs[k])) return false;
  return true;
}

class FoldBatchNorm final : public Pass {
 public:
  std::string_view name() const override { return "fold_batchnorm"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    auto conv =
        match::op_any({"Conv", "ConvTranspose"}, {match::any(), match::constant().bind("w")}).used_once().bind("conv");
    auto pattern = match::op("BatchNormalization", {conv}).bind("bn");
    int n = match::rewrite(g, pattern, [&](match::Bindings& b) { return fold(g, b); });
    if (n > 0) KILN_RETURN_IF_ERROR(g.topo_sort());
    g.prune_values();
    ctx.changes += n;
    return Status::Ok();
  }

 private:
  static bool fold(ir::Graph& g, match::Bindings& b) {
    ir::Node* conv = b.node("conv");
    ir::Node* bn = b.node("bn");
    const Tensor& w = *b.value("w")->constant;
    if (!is_float(w.dtype()) || w.rank() < 3 || !inference_form(g, *bn)) return false;
    const bool transpose = conv->op_type == "ConvTranspose";
    auto group_r = conv->attrs.get_int("group", 1);
    if (!group_r.ok() || *group_r < 1) return false;
    const int64_t group = *group_r;
    // ConvTranspose's W is [C_in, M/group, k...]: output channel of (c, j) is (c / (C_in/group)) * M/group + j.
    const int64_t m_out = transpose ? w.dim(1) * group : w.dim(0);
    if (transpose && w.dim(0) % group != 0) return false;
    if (!params_fold(*bn, m_out)) return false;
    ir::Value* bias = conv->inputs.size() > 2 ? conv->inputs[2] : nullptr;
    if (bias && (!bias->is_constant() || bias->constant->numel() != m_out)) return false;
    auto eps_r = bn->attrs.get_float("epsilon", 1e-5f);
    if (!eps_r.ok()) return false;
    const double eps = *eps_r;

    std::vector<double> scale = bn->inputs[1]->constant->to_f64_vector();
    std::vector<double> beta = bn->inputs[2]->constant->to_f64_vector();
    std::vector<double> mean = bn->inputs[3]->constant->to_f64_vector();
    std::vector<double> var = bn->inputs[4]->constant->to_f64_vector();
    std::vector<double> a(m_out), nb(m_out);
    for (int64_t m = 0; m < m_out; ++m) {
      a[m] = scale[m] / std::sqrt(var[m] + eps);
      double cb = bias ? bias->constant->get_f64(m) : 0.0;
      nb[m] = (cb - mean[m]) * a[m] + beta[m];
    }

    // Computed in double and stored in W's type, so a float16 model keeps float16 weights.
    Tensor wd = w.cast(DataType::kDOUBLE);
    double* wp = wd.data<double>();
    const int64_t per_row = w.numel() / (w.dim(0) * w.dim(1));  // kernel volume
    for (int64_t r = 0; r < w.dim(0); ++r)
      for (int64_t j = 0; j < w.dim(1); ++j) {
        int64_t m = transpose ? (r / (w.dim(0) / group)) * w.dim(1) + j : r;
        double* p = wp + (r * w.dim(1) + j) * per_row;
        for (int64_t k = 0; k < per_row; ++k) p[k] *= a[m];
      }
    Tensor bt = Tensor::from_vector<double>({m_out}, nb);
    DataType bias_dt = bias ? bias->dtype : w.dtype();
    ir::Value* new_w = g.add_constant(b.value("w")->name + "_bnfold", wd.cast(w.dtype()));
    ir::Value* new_b = g.add_constant(bn->name + "_bias", bt.cast(bias_dt));

    g.set_node_input(conv, 1, new_w);
    if (conv->inputs.size() > 2) {
      g.set_node_input(conv, 2, new_b);
    } else {
      conv->inputs.push_back(new_b);
      new_b->users.push_back(conv);
    }
    // The convolution now produces BN's Y itself, so Y keeps its name (it may be a graph output).
    ir::Value* y = bn->outputs[0];
    ir::Value* old = conv->outputs[0];
    g.remove_node(bn);
    conv->outputs[0] = y;
    y->producer = conv;
    old->producer = nullptr;
    g.remove_value(old);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fold_batchnorm() { return std::make_unique<FoldBatchNorm>(); }

}  // namespace kiln::passes
