// Programmatic dependent launch (Hopper and later): a kernel launched with launch_pdl() may start while the
// previous kernel on its stream is still finishing, so its launch and its blocks' setup overlap that kernel's tail
// instead of following it (about a microsecond per kernel boundary, which adds up at batch 1, where a transformer
// layer is a chain of short kernels). Every kernel launched this way must call pdl_wait() before it reads anything
// an earlier kernel wrote and before it writes any global memory; what it does before (reading weights, computing
// indices) overlaps the previous kernel. Without a trigger in the previous kernel, pdl_wait() returns once that
// kernel has completed and its writes are visible, as stream order would give. Captured into CUDA graphs as
// programmatic edges.
// A kernel may also call pdl_trigger() once it has waited: the next kernel (if launched this way) is then launched
// as soon as every block of this one has triggered or exited, instead of when this one completes, so its blocks take
// the SMs this kernel's last wave frees and run their setup there. A trigger changes no result: the next kernel
// still waits in pdl_wait() for this one's completion and writes. The CUTLASS GEMMs do the same (CUTLASS's grid
// dependency control: they wait before their first load and trigger when a block starts its last tile).
// KILN_PDL=0 launches every kernel plainly (stream order), for measuring what the overlap gives; KILN_PDL=1 launches
// the CUTLASS GEMMs with PDL too, which they are not by default until a GPU run has checked them.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace kiln::cuda {

#ifdef __CUDACC__
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel launch early (see above); only after pdl_wait().
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif

// KILN_PDL now: -1 unset (or anything else), 0 or 1.
inline int pdl_setting_now() {
  const char* e = std::getenv("KILN_PDL");
  return !e ? -1 : std::strcmp(e, "0") == 0 ? 0 : std::strcmp(e, "1") == 0 ? 1 : -1;
}
// Whether our kernels are launched with programmatic stream serialization: unless KILN_PDL=0 (read once).
inline bool pdl_enabled() {
  static const bool on = pdl_setting_now() != 0;
  return on;
}
// Whether a CUTLASS GEMM is: only with KILN_PDL=1 for now, read when the layer's kernel object is made.
inline bool pdl_gemm_enabled() { return pdl_setting_now() == 1; }

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
  cfg.numAttrs = pdl && pdl_enabled() ? 1 : 0;
  return cfg;
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization allowed (unless KILN_PDL=0);
// returns the launch error (also left for cudaGetLastError(), as <<<>>> does).
template <typename... KArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = pdl_config(grid, block, smem, stream, true, &attr);
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace kiln::cuda
