// kiln ToNhwc on the GPU: a CNN's input converted, moved to channels-last and channel-padded in one pass (the
// op's definition and reference are src/ops/to_nhwc.cpp). Y's type and padded channel count come from the plan.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"

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

}  // namespace kiln::cuda
