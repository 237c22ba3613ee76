// Registration of TopK: k from the attribute (opset < 10) or the constant K input, axis and largest as the
// reference in src/ops/index_ops.cpp reads them; rows longer than kTopKMaxLen, or a K computed at run time, stay
// on the host reference. The kernel is topk.cu.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/reduce_kernels.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

Status run_topk(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  int64_t k = 0;
  if (a.node->opset < 10) {
    KILN_ASSIGN_OR_RETURN(k, a.attrs().get_int("k"));
  } else {
    if (a.in.size() < 2 || !a.host_in[1]) return internal_error("TopK: K is not known on the host");
    KILN_ASSIGN_OR_RETURN(auto kv, ops::tensor_to_ints(*a.host_in[1]));
    if (kv.size() != 1) return invalid_argument("TopK: 'K' must hold exactly one value, got " + std::to_string(kv.size()));
    k = kv[0];
  }
  if (x.rank() == 0) return invalid_argument("TopK: the input must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis", -1));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, x.rank(), "TopK axis"));
  KILN_ASSIGN_OR_RETURN(int64_t largest, a.attrs().get_int("largest", 1));
  const int64_t len = x.shape[axis];
  if (k < 0 || k > len)
    return invalid_argument("TopK: k = " + std::to_string(k) + " is out of range [0, " + std::to_string(len) +
                            "] for input " + dims_to_string(x.shape));
  return launch_topk(x.dtype, x.data, a.out[0].data, static_cast<int64_t*>(a.out[1].data),
                     ops::product(x.shape, 0, axis), len, ops::product(x.shape, axis + 1), k, largest != 0, a.stream);
}

}  // namespace

KILN_CUDA_KERNEL(TopK) {
  KernelDef d;
  d.op = "TopK";
  d.dtypes = float_types();
  d.run = run_topk;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    const auto& x = plan.values[n.inputs[0]];
    if (!x.rank_known || x.shape.empty()) return false;
    auto axis = n.attrs.get_int("axis", -1);
    if (!axis.ok()) return false;
    const int64_t r = static_cast<int64_t>(x.shape.size());
    const int64_t ax = *axis < 0 ? *axis + r : *axis;
    if (ax < 0 || ax >= r || !x.shape[ax].is_static() || x.shape[ax].value < 1 || x.shape[ax].value > kTopKMaxLen)
      return false;
    // K: the attribute below opset 10, else a constant input (read on the host at run time).
    return n.opset < 10 || (n.inputs.size() > 1 && n.inputs[1] >= 0 && plan.values[n.inputs[1]].constant.defined());
  };
  return d;
}

}  // namespace kiln::cuda
