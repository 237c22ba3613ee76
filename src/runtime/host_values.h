// Conversions between the public HostTensor, which also carries sequence and optional values, and runtime Tensors.
#pragma once

#include <string>

#include "common/tensor.h"
#include "kiln/runtime.h"
#include "kiln/status.h"

namespace kiln::runtime {

// Checks a caller's value against the kind and element type the engine expects (recursively, with each element's
// byte count against its dims) and wraps its bytes without copying: `h` must outlive the result. `what` names the
// value in errors ("input 'x'").
Result<Tensor> wrap_host_value(const HostTensor& h, ValueKind kind, DataType dtype, const std::string& what);

// Copies a computed value, sequences and optionals included, into a HostTensor.
HostTensor to_host_value(const Tensor& t);

}  // namespace kiln::runtime
