// Loss operators: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (which is log-softmax followed by NLL).
#include <cmath>
#include <optional>

#include "ops/broadcast_loop.h"

namespace kiln::ops {
namespace {

enum class Reduction { kNone, kSum, kMean };

Result<Reduction> parse_reduction(const std::string& op, const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string r, attrs.get_string("reduction", "mean"));
  if (r == "none") return Reduction::kNone;
  if (r == "sum") return Reduction::kSum;
  if (r == "mean") return Reduction::kMean;
  return invalid_model(op + ": reduction must be one of none, sum, mean but is \"" + r + "\"");
}

// Everything a loss node needs besides its tensors, read once from the attributes.
struct LossOptions {
  Reduction reduction = Reduction::kMean;
  std::optional<int64_t> ignore_index;
};

Result<LossOptions> loss_options(const std::string& op, const Attributes& attrs) {
  LossOptions o;
  KILN_ASSIGN_OR_RETURN(o.reduction, parse_reduction(op, attrs));
  if (attrs.has("ignore_index")) {
    KILN_ASSIGN_OR_RETURN(int64_t ii, attrs.get_int("ignore_index"));
    o.ignore_index = ii;
  }
  return o;
}

// Shared inference: input [N, C, d1..dk] (float), target [N, d1..dk] (int32/int64), weight [C] (input's type).
// Output 0 is [N, d1..dk] without reduction and a scalar otherwise; further outputs (SCE's log_prob) mirror input 0.
Status infer_loss(InferContext& ctx, const std::string& op) {
  KILN_ASSIGN_OR_RETURN(LossOptions o, loss_options(op, ctx.attrs()));
  const TensorInfo &in = ctx.input(0), &target = ctx.input(1);
  if (!dtype_is_float(in.dtype))
    return invalid_model(op + ": input must be a floating-point type but is " + dtype_name(in.dtype));
  if (target.dtype != DataType::kINT32 && target.dtype != DataType::kINT64)
    return invalid_model(op + ": target must be int32 or int64 but is " + dtype_name(target.dtype));
  if (ctx.has_input(2) && ctx.input(2).dtype != in.dtype)
    return invalid_model(op + ": weight must have the input's type " + dtype_name(in.dtype) + " but is " +
                         dtype_name(ctx.input(2).dtype));
  TensorInfo& out = ctx.output(0);
  out.dtype = in.dtype;
  if (in.rank_known && in.shape.size() < 2)
    return invalid_model(op + ": input must have rank >= 2 (N, C, d1..dk), got " + shape_to_string(in.shape));
  if (in.rank_known && target.rank_known && target.shape.size() + 1 != in.shape.size())
    return invalid_model(op + ": target " + shape_to_string(target.shape) + " must have rank one less than input " +
                         shape_to_string(in.shape));
  if (o.reduction != Reduction::kNone) {
    out.shape.clear();
  } else if (target.rank_known) {
    out.shape = target.shape;
  } else if (in.rank_known) {
    out.shape = {in.shape[0]};
    out.shape.insert(out.shape.end(), in.shape.begin() + 2, in.shape.end());
  } else {
    out.rank_known = false;
  }
  for (int i = 1; i < ctx.num_outputs(); ++i) {
    ctx.output(i) = make_info(in.dtype, in.shape);
    ctx.output(i).rank_known = in.rank_known;
  }
  return Status::Ok();
}

// Loss of each target position from log-probabilities laid out [N, C, D] (D = product of the extra dims), then
// reduced. Mean divides by the summed weights of the positions that count, so ignored positions dilute nothing.
Result<Tensor> nll_from_log_prob(const std::string& op, const std::vector<double>& logp,
                                 const std::vector<int64_t>& in_shape, const Tensor& target, const Tensor* weight,
                                 const LossOptions& o, DataType out_dtype) {
  if (in_shape.size() < 2)
    return invalid_argument(op + ": input must have rank >= 2 (N, C, d1..dk), got " + dims_to_string(in_shape));
  std::vector<int64_t> expect_target = {in_shape[0]};
  expect_target.insert(expect_target.end(), in_shape.begin() + 2, in_shape.end());
  if (target.shape() != expect_target)
    return invalid_argument(op + ": target must have shape " + dims_to_string(expect_target) + " for input " +
                            dims_to_string(in_shape) + ", got " + dims_to_string(target.shape()));
  const int64_t n = in_shape[0], c = in_shape[1], d = product(in_shape, 2);
  std::vector<double> w;
  if (weight) {
    if (weight->rank() != 1 || weight->dim(0) != c)
      return invalid_argument(op + ": weight must have shape [" + std::to_string(c) + "], got " +
                              dims_to_string(weight->shape()));
    w = weight->to_f64_vector();
  }
  const std::vector<int64_t> t = target.to_i64_vector();
  std::vector<double> loss(static_cast<size_t>(n * d), 0.0);
  double total = 0, total_w = 0;
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t di = 0; di < d; ++di) {
      const int64_t pos = ni * d + di, cls = t[pos];
      if (o.ignore_index && cls == *o.ignore_index) continue;
      if (cls < 0 || cls >= c)
        return invalid_argument(op + ": target value " + std::to_string(cls) + " at flat position " +
                                std::to_string(pos) + " is outside [0, " + std::to_string(c) + ")" +
                                (o.ignore_index ? " and is not ignore_index " + std::to_string(*o.ignore_index) : ""));
      const double wi = weight ? w[cls] : 1.0;
      loss[pos] = -logp[(ni * c + cls) * d + di] * wi;
      total += loss[pos];
      total_w += wi;
    }
  Tensor out;
  if (o.reduction == Reduction::kNone) {
    out = Tensor(out_dtype, expect_target);
  } else {
    out = Tensor(out_dtype, {});
    // 0/0 (every position ignored) gives NaN, as the reference does.
    loss = {o.reduction == Reduction::kSum ? total : total / total_w};
  }
  KILN_DISPATCH_FLOAT_TYPES(out_dtype, op, {
    scalar_t* p = out.data<scalar_t>();
    for (size_t i = 0; i < loss.size(); ++i) p[i] = static_cast<scalar_t>(static_cast<compute_t<scalar_t>>(loss[i]));
  });
  return out;
}

}  // namespace

KILN_REGISTER_OP(NegativeLogLikelihoodLoss) {
  OpSchema s;
  s.name = "NegativeLogLikelihoodLoss";
  s.since_opset = 12;
  s.min_inputs = 2;
  s.max_inputs = 3;  // input, target, weight
  s.attrs = {{"ignore_index", AttrType::kINT}, {"reduction", AttrType::kSTRING}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) { return infer_loss(ctx, "NegativeLogLikelihoodLoss"); };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "NegativeLogLikelihoodLoss";
    KILN_ASSIGN_OR_RETURN(LossOptions o, loss_options(op, ctx.attrs()));
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(Tensor out, nll_from_log_prob(op, in.to_f64_vector(), in.shape(), ctx.input(1),
                                                        ctx.has_input(2) ? &ctx.input(2) : nullptr, o, in.dtype()));
    ctx.set_output(0, std::move(out));
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(SoftmaxCrossEntropyLoss) {
  OpSchema s;
  s.name = "SoftmaxCrossEntropyLoss";
  s.since_opset = 12;
  s.min_inputs = 2;
  s.max_inputs = 3;  // scores, labels, weights
  s.min_outputs = 1;
  s.max_outputs = 2;  // output, log_prob
  s.attrs = {{"ignore_index", AttrType::kINT}, {"reduction", AttrType::kSTRING}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) { return infer_loss(ctx, "SoftmaxCrossEntropyLoss"); };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "SoftmaxCrossEntropyLoss";
    KILN_ASSIGN_OR_RETURN(LossOptions o, loss_options(op, ctx.attrs()));
    const Tensor& in = ctx.input(0);
    if (in.rank() < 2)
      return invalid_argument(op + ": scores must have rank >= 2 (N, C, d1..dk), got " + dims_to_string(in.shape()));
    const int64_t n = in.dim(0), c = in.dim(1), d = product(in.shape(), 2);
    // Log-softmax over the class axis, in double so the loss does not inherit float rounding twice.
    std::vector<double> logp = in.to_f64_vector();
    for (int64_t ni = 0; ni < n; ++ni)
      for (int64_t di = 0; di < d; ++di) {
        double* base = logp.data() + ni * c * d + di;
        double mx = -INFINITY;
        for (int64_t k = 0; k < c; ++k) mx = std::max(mx, base[k * d]);
        double sum = 0;
        for (int64_t k = 0; k < c; ++k) sum += std::exp(base[k * d] - mx);
        const double lse = mx + std::log(sum);
        for (int64_t k = 0; k < c; ++k) base[k * d] -= lse;
      }
    KILN_ASSIGN_OR_RETURN(Tensor out, nll_from_log_prob(op, logp, in.shape(), ctx.input(1),
                                                        ctx.has_input(2) ? &ctx.input(2) : nullptr, o, in.dtype()));
    ctx.set_output(0, std::move(out));
    if (ctx.num_outputs() > 1) {
      Tensor& lp = ctx.allocate_output(1, in.dtype(), in.shape());
      KILN_DISPATCH_FLOAT_TYPES(in.dtype(), op, {
        scalar_t* p = lp.data<scalar_t>();
        for (size_t i = 0; i < logp.size(); ++i) p[i] = static_cast<scalar_t>(static_cast<compute_t<scalar_t>>(logp[i]));
      });
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
