// Transpose: permutes the axes of a tensor (perm defaults to reversing them).
#include <algorithm>
#include <cstring>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

Result<std::vector<int64_t>> get_perm(const Attributes& attrs, int64_t rank) {
  std::vector<int64_t> def(rank);
  for (int64_t i = 0; i < rank; ++i) def[i] = rank - 1 - i;
  KILN_ASSIGN_OR_RETURN(auto perm, attrs.get_ints("perm", def));
  auto describe = [&] {
    std::string p = "[";
    for (size_t i = 0; i < perm.size(); ++i) p += (i ? "," : "") + std::to_string(perm[i]);
    return p + "]";
  };
  if (static_cast<int64_t>(perm.size()) != rank)
    return invalid_model("Transpose: perm " + describe() + " has " + std::to_string(perm.size()) +
                         " entries, expected " + std::to_string(rank) + " (the input rank)");
  std::vector<bool> seen(rank, false);
  for (auto& p : perm) {
    int64_t a = p < 0 ? p + rank : p;  // tolerated by ONNX Runtime; the spec itself says non-negative
    if (a < 0 || a >= rank || seen[a])
      return invalid_model("Transpose: perm " + describe() + " is not a permutation of 0.." + std::to_string(rank - 1) +
                           " (entry " + std::to_string(p) + (a >= 0 && a < rank ? " repeats)" : " out of range)"));
    seen[a] = true;
    p = a;
  }
  return perm;
}

// Copies elements of a fixed byte width; T is an unsigned integer of that width.
template <typename T>
void transpose_kernel(const T* src, T* dst, const std::vector<int64_t>& out_dims, const std::vector<int64_t>& src_st) {
  const int r = static_cast<int>(out_dims.size());
  const int64_t inner = out_dims[r - 1];
  const int64_t inner_st = src_st[r - 1];
  int64_t n = 1;
  for (auto d : out_dims) n *= d;
  if (n == 0) return;
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t o = 0; o < n; o += inner) {
    T* d = dst + o;
    const T* s = src + off;
    if (inner_st == 1) {
      std::memcpy(d, s, inner * sizeof(T));
    } else {
      for (int64_t k = 0; k < inner; ++k) d[k] = s[k * inner_st];
    }
    for (int a = r - 2; a >= 0; --a) {
      off += src_st[a];
      if (++idx[a] < out_dims[a]) break;
      off -= src_st[a] * out_dims[a];
      idx[a] = 0;
    }
  }
}

struct Bytes16 { uint64_t a, b; };

}  // namespace

KILN_REGISTER_OP(Transpose) {
  OpSchema s;
  s.name = "Transpose";
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"perm", AttrType::kINTS}};
  s.dtypes = all_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& in = ctx.input(0);
    TensorInfo& o = ctx.output(0);
    o.dtype = in.dtype;
    if (!in.rank_known) {
      o.rank_known = false;
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(auto perm, get_perm(ctx.attrs(), static_cast<int64_t>(in.shape.size())));
    o.shape.clear();
    for (auto p : perm) o.shape.push_back(in.shape[p]);
    if (o.shape.size() <= 1) o.value = known_values(in);
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& in = ctx.input(0);
    KILN_ASSIGN_OR_RETURN(auto perm, get_perm(ctx.attrs(), in.rank()));
    const int r = in.rank();
    // Drop size-1 axes: they do not move data and only slow down the odometer.
    std::vector<int64_t> out_dims, st;
    auto in_st = strides_of(in.shape());
    std::vector<int64_t> full_out;
    for (int i = 0; i < r; ++i) {
      full_out.push_back(in.shape()[perm[i]]);
      if (in.shape()[perm[i]] == 1) continue;
      out_dims.push_back(in.shape()[perm[i]]);
      st.push_back(in_st[perm[i]]);
    }
    bool identity = std::is_sorted(st.begin(), st.end(), std::greater<int64_t>());
    if (identity) {
      ctx.set_output(0, in.reshaped(full_out));  // same element order: a view suffices
      return Status::Ok();
    }
    Tensor& out = ctx.allocate_output(0, in.dtype(), full_out);
    const void* src = in.raw();
    void* dst = out.raw();
    switch (dtype_size(in.dtype())) {
      case 1: transpose_kernel(static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), out_dims, st); break;
      case 2: transpose_kernel(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), out_dims, st); break;
      case 4: transpose_kernel(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), out_dims, st); break;
      case 8: transpose_kernel(static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), out_dims, st); break;
      case 16: transpose_kernel(static_cast<const Bytes16*>(src), static_cast<Bytes16*>(dst), out_dims, st); break;
      default: return unsupported(std::string("Transpose: data type ") + dtype_name(in.dtype()) + " is not supported");
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
