// Identity and Dropout (inference mode: Identity with an all-true mask; training mode: seeded random mask).
#include <memory>
#include <random>
#include <type_traits>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Seed used when the node has no `seed` attribute: any fixed value keeps runs reproducible.
constexpr uint64_t kDefaultDropoutSeed = 0x6b696c6e;  // "kiln"

// Training-mode dropout: keeps each element with probability 1 - ratio and scales kept ones by 1 / (1 - ratio).
// Uniforms come from the raw 64-bit engine output rather than std::uniform_real_distribution, whose algorithm
// differs between standard libraries, so a seed gives the same mask everywhere.
template <typename T>
void dropout_train(const Tensor& x, double ratio, uint64_t seed, Tensor& y, bool* mask) {
  std::mt19937_64 rng(seed);
  const T* xp = x.data<T>();
  T* yp = y.data<T>();
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const A scale = static_cast<A>(1.0 / (1.0 - ratio));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const bool keep = u >= ratio;
    mask[i] = keep;
    yp[i] = static_cast<T>(keep ? static_cast<A>(xp[i]) * scale : A(0));
  }
}

}  // namespace

KILN_REGISTER_OP(Identity) {
  OpSchema s;
  s.name = "Identity";
  s.min_inputs = s.max_inputs = 1;
  s.dtypes = all_types();
  s.takes_non_tensors = true;  // an Identity of a sequence or optional passes it on too
  s.infer = [](InferContext& ctx) {
    KILN_RETURN_IF_ERROR(infer_same_as_input0(ctx));
    ctx.output(0).kind = ctx.input(0).kind;
    ctx.output(0).value = known_values(ctx.input(0));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    ctx.set_output(0, ctx.input(0));  // shares the input's storage; the runtime never writes in place
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(Dropout) {
  OpSchema s;
  s.name = "Dropout";
  s.min_inputs = 1;
  s.max_inputs = 3;  // data, ratio (opset 12+), training_mode (opset 12+)
  s.min_outputs = 1;
  s.max_outputs = 2;
  s.attrs = {{"ratio", AttrType::kFLOAT}, {"seed", AttrType::kINT}, {"is_test", AttrType::kINT}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    ctx.output(0) = make_info(ctx.input(0).dtype, ctx.input(0).shape);
    if (ctx.num_outputs() > 1) ctx.output(1) = make_info(DataType::kBOOL, ctx.input(0).shape);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "Dropout";
    // Only opset 12+ can ask for training (the training_mode input); older graphs are run as inference.
    const bool training = ctx.has_input(2) && ctx.input(2).numel() == 1 && ctx.input(2).get_i64(0) != 0;
    double ratio = 0.5;
    if (ctx.has_input(1) && ctx.input(1).numel() > 0) {
      if (ctx.input(1).numel() != 1)
        return invalid_argument(op + ": ratio must be a scalar, got shape " + dims_to_string(ctx.input(1).shape()));
      ratio = ctx.input(1).get_f64(0);
    } else {
      KILN_ASSIGN_OR_RETURN(float r, ctx.attrs().get_float("ratio", 0.5f));
      ratio = r;
    }
    const Tensor& x = ctx.input(0);
    if (!training || ratio == 0.0) {
      // Without training, or with nothing to drop, Dropout is exactly the identity.
      ctx.set_output(0, x);
      if (ctx.num_outputs() > 1) {
        Tensor& mask = ctx.allocate_output(1, DataType::kBOOL, x.shape());
        std::fill_n(mask.data<bool>(), mask.numel(), true);
      }
      return Status::Ok();
    }
    if (!(ratio >= 0.0 && ratio < 1.0))
      return invalid_argument(op + ": ratio must be in [0, 1) in training mode, got " + std::to_string(ratio));
    KILN_ASSIGN_OR_RETURN(int64_t seed, ctx.attrs().get_int("seed", static_cast<int64_t>(kDefaultDropoutSeed)));
    Tensor& y = ctx.allocate_output(0, x.dtype(), x.shape());
    Tensor* mask = ctx.num_outputs() > 1 ? &ctx.allocate_output(1, DataType::kBOOL, x.shape()) : nullptr;
    std::unique_ptr<bool[]> scratch;
    bool* keep = mask ? mask->data<bool>() : (scratch = std::make_unique<bool[]>(static_cast<size_t>(x.numel()))).get();
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), op, dropout_train<scalar_t>(x, ratio, static_cast<uint64_t>(seed), y, keep));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
