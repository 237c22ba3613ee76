// HostTensor <-> Tensor for infer(): tensors wrap the caller's bytes, sequences and optionals their elements.
#include "runtime/host_values.h"

namespace kiln::runtime {

namespace {

Result<Tensor> wrap_tensor(const HostTensor& h, DataType dtype, const std::string& what) {
  if (h.kind != ValueKind::kTENSOR)
    return invalid_argument(what + " expects a tensor but got " + a_kind(h.kind));
  if (h.dtype != dtype)
    return invalid_argument(what + " expects " + dtype_name(dtype) + " but got " + dtype_name(h.dtype));
  for (int64_t d : h.dims)
    if (d < 0) return invalid_argument(what + " has a negative dimension in shape " + dims_to_string(h.dims));
  size_t need = static_cast<size_t>(volume(h.dims)) * dtype_size(dtype);
  if (h.data.size() != need)
    return invalid_argument(what + " has " + std::to_string(h.data.size()) + " bytes but shape " +
                            dims_to_string(h.dims) + " of " + dtype_name(dtype) + " needs " + std::to_string(need));
  // Inputs are only read: ops never write into their inputs.
  return Tensor::wrap(dtype, h.dims, const_cast<uint8_t*>(h.data.data()));
}

Result<Tensor> wrap_sequence(const HostTensor& h, DataType dtype, const std::string& what) {
  std::vector<Tensor> items;
  for (size_t i = 0; i < h.elements.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(Tensor t, wrap_tensor(h.elements[i], dtype, what + " element " + std::to_string(i)));
    items.push_back(std::move(t));
  }
  return Tensor::sequence(dtype, std::move(items));
}

}  // namespace

Result<Tensor> wrap_host_value(const HostTensor& h, ValueKind kind, DataType dtype, const std::string& what) {
  if (h.kind != kind)
    return invalid_argument(what + " expects " + a_kind(kind) + " but got " + a_kind(h.kind));
  if (h.dtype != dtype)
    return invalid_argument(what + " expects elements of " + dtype_name(dtype) + " but got " + dtype_name(h.dtype));
  switch (kind) {
    case ValueKind::kTENSOR: return wrap_tensor(h, dtype, what);
    case ValueKind::kSEQUENCE: return wrap_sequence(h, dtype, what);
    case ValueKind::kOPTIONAL_TENSOR:
    case ValueKind::kOPTIONAL_SEQUENCE: {
      if (h.elements.size() > 1)
        return invalid_argument(what + " is an optional but holds " + std::to_string(h.elements.size()) + " values");
      Tensor value;
      if (!h.elements.empty()) {
        ValueKind inner = kind == ValueKind::kOPTIONAL_TENSOR ? ValueKind::kTENSOR : ValueKind::kSEQUENCE;
        KILN_ASSIGN_OR_RETURN(value, wrap_host_value(h.elements[0], inner, dtype, what + " value"));
      }
      return Tensor::optional(kind, dtype, std::move(value));
    }
  }
  return invalid_argument(what + " has an unknown value kind");
}

HostTensor to_host_value(const Tensor& t) {
  HostTensor h;
  h.kind = t.kind();
  h.dtype = t.dtype();
  if (t.is_tensor()) {
    h.dims = t.shape();
    const auto* p = static_cast<const uint8_t*>(t.raw());
    h.data.assign(p, p + t.nbytes());
    return h;
  }
  for (const Tensor& item : t.items()) h.elements.push_back(to_host_value(item));
  return h;
}

}  // namespace kiln::runtime
