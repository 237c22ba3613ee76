// BatchNormalization in inference form: y = (x - mean) * scale / sqrt(var + epsilon) + B per channel, computed
// element by element from the four device parameter vectors (no per-run allocation). Training mode runs on the host.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"

namespace kiln::cuda {
namespace {

bool is_float(DataType dt) { return dt == DataType::kFLOAT || dt == DataType::kHALF || dt == DataType::kBF16; }

Status batchnorm_run(KernelArgs& args) {
  const DevTensor& X = args.in[0];
  DevTensor& Y = args.out[0];
  if (X.rank() < 2) return invalid_argument("BatchNormalization: X must have rank >= 2");
  KILN_ASSIGN_OR_RETURN(float eps, args.attrs().get_float("epsilon", 1e-5f));
  KILN_ASSIGN_OR_RETURN(int64_t spatial, args.attrs().get_int("spatial", 1));
  const int64_t n = X.shape[0], c = X.shape[1];
  int64_t inner = 1;
  for (int i = 2; i < X.rank(); ++i) inner *= X.shape[i];
  // spatial=0 (opsets 7-8) keeps statistics per channel and position, unless they have one value per channel.
  int64_t pc = spatial != 0 ? c : c * inner;
  if (spatial == 0 && args.in[1].numel() == c) pc = c;
  for (int i = 1; i <= 4; ++i)
    if (args.in[i].numel() != pc)
      return invalid_argument("BatchNormalization: input " + std::to_string(i) + " must have " + std::to_string(pc) +
                              " elements, got shape " + dims_to_string(args.in[i].shape));
  BnParams p;
  p.scale = args.in[1].data;
  p.bias = args.in[2].data;
  p.mean = args.in[3].data;
  p.var = args.in[4].data;
  p.scale_dt = args.in[1].dtype;
  p.bias_dt = args.in[2].dtype;
  p.mean_dt = args.in[3].dtype;
  p.var_dt = args.in[4].dtype;
  p.epsilon = eps;
  p.per_position = pc != c;
  return launch_batchnorm(X.dtype, X.data, Y.data, n, c, inner, p, args.stream);
}

bool batchnorm_supports(const runtime::PlanNode& n, const runtime::EnginePlan& p) {
  if (n.inputs.size() != 5 || n.outputs.size() != 1) return false;  // more outputs: training mode
  auto training = n.attrs.get_int("training_mode", 0);
  if (!training.ok() || *training != 0) return false;
  for (int id : n.inputs)
    if (id < 0 || !is_float(p.values[id].dtype)) return false;
  const auto& x = p.values[n.inputs[0]];
  return x.rank_known && x.shape.size() >= 2;
}

}  // namespace

KILN_CUDA_KERNEL(BatchNormalization) {
  KernelDef d;
  d.op = "BatchNormalization";
  d.dtypes = float_types();
  d.run = batchnorm_run;
  d.supports = batchnorm_supports;
  return d;
}

}  // namespace kiln::cuda
