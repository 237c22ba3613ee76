// Operators whose output is their input's bytes under another shape: on the GPU they are aliases (no launch,
// no memory), resolved by the context's memory plan.
#include "backends/cuda/cuda_kernel.h"

namespace kiln::cuda {
namespace {

KernelDef alias_of(const char* op) {
  KernelDef d;
  d.op = op;
  d.alias = true;
  d.run = [](KernelArgs&) { return Status::Ok(); };
  return d;
}

}  // namespace

KILN_CUDA_KERNEL(Reshape) { return alias_of("Reshape"); }
KILN_CUDA_KERNEL(Flatten) { return alias_of("Flatten"); }
KILN_CUDA_KERNEL(Squeeze) { return alias_of("Squeeze"); }
KILN_CUDA_KERNEL(Unsqueeze) { return alias_of("Unsqueeze"); }
KILN_CUDA_KERNEL(Identity) {
  KernelDef d = alias_of("Identity");
  // Sequence-typed Identity is not a plain buffer.
  return d;
}

}  // namespace kiln::cuda
