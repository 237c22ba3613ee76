// kiln ToNhwc and Unpad on the GPU. ToNhwc: a CNN's input converted, moved to channels-last and channel-padded in
// one pass (src/ops/to_nhwc.cpp); Y's type and padded channel count come from the plan. Unpad: a padded GEMM
// output's rows compacted, and converted (src/ops/unpad.cpp).
#include <algorithm>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"
#include "backends/cuda/unpad.h"

namespace kiln::cuda {

KILN_CUDA_KERNEL(ToNhwc) {
  KernelDef d;
  d.op = "ToNhwc";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& X = a.in[0];
    DevTensor& Y = a.out[0];
    if (X.rank() != 4 || Y.rank() != 4 || Y.shape[0] != X.shape[0] || Y.shape[1] != X.shape[2] ||
        Y.shape[2] != X.shape[3] || Y.shape[3] < X.shape[1])
      return internal_error("ToNhwc: X " + dims_to_string(X.shape) + " and Y " + dims_to_string(Y.shape) +
                            " do not match");
    return launch_to_nhwc(X.dtype, Y.dtype, X.data, Y.data, X.shape[0], X.shape[1], X.shape[2] * X.shape[3],
                          Y.shape[3], a.stream);
  };
  return d;
}

KILN_CUDA_KERNEL(Unpad) {
  KernelDef d;
  d.op = "Unpad";
  d.domain = "kiln";
  d.dtypes = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16};
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    const DataType to = p.values[n.outputs[0]].dtype;
    return to == DataType::kFLOAT || to == DataType::kHALF || to == DataType::kBF16;
  };
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& X = a.in[0];
    DevTensor& Y = a.out[0];
    if (X.rank() < 1 || Y.rank() != X.rank() || Y.shape.back() > X.shape.back() ||
        !std::equal(X.shape.begin(), X.shape.end() - 1, Y.shape.begin()))
      return internal_error("Unpad: X " + dims_to_string(X.shape) + " and Y " + dims_to_string(Y.shape) +
                            " do not match");
    const int64_t pitch = X.shape.back(), rows = pitch ? X.numel() / pitch : 0;
    return launch_unpad(X.dtype, Y.dtype, X.data, Y.data, rows, pitch, Y.shape.back(),
                        a.handles ? a.handles->sm_count : 0, a.stream);
  };
  return d;
}

}  // namespace kiln::cuda
