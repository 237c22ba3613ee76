// Programmatic dependent launch (Hopper and later): a kernel launched with launch_pdl() may start while the
// previous kernel on its stream is still finishing, so its launch and its blocks' setup overlap that kernel's tail
// instead of following it (about a microsecond per kernel boundary, which adds up at batch 1, where a transformer
// layer is a chain of short kernels). Every kernel launched this way must call pdl_wait() before it reads anything
// an earlier kernel wrote and before it writes any global memory; what it does before (reading weights, computing
// indices) overlaps the previous kernel. Without a trigger in the previous kernel, pdl_wait() returns once that
// kernel has completed and its writes are visible, as stream order would give. Captured into CUDA graphs as
// programmatic edges.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace kiln::cuda {

#ifdef __CUDACC__
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
#endif

// A launch configuration that allows programmatic stream serialization when `pdl` (else a plain launch); `attr`
// is the storage its attribute lives in, which must outlive the launch call.
inline cudaLaunchConfig_t pdl_config(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool pdl,
                                     cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr->val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cfg;
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization allowed; returns the launch
// error (also left for cudaGetLastError(), as <<<>>> does).
template <typename... KArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = pdl_config(grid, block, smem, stream, true, &attr);
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace kiln::cuda
