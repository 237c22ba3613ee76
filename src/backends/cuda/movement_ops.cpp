// Registration of the data-movement and indexing kernels: attribute handling, the host-side parameters each
// launcher needs (mirroring src/ops/<op>.cpp exactly), and supports() checks that send the cases not handled here
// to the host reference.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/movement_kernels.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

namespace mv = movement;
using runtime::EnginePlan;
using runtime::PlanNode;

// ---------------------------------------------------------------------------------------------------------------
// Shared checks

bool sub_byte(DataType t) {
  return t == DataType::kINT4 || t == DataType::kUINT4 || t == DataType::kFP4E2M1 || t == DataType::kINT2 ||
         t == DataType::kUINT2;
}
// Types the byte-moving kernels copy: whole elements of 1, 2, 4 or 8 bytes.
bool movable(DataType t) {
  if (sub_byte(t)) return false;
  size_t s = dtype_size(t);
  return s == 1 || s == 2 || s == 4 || s == 8;
}
// The types KILN_DISPATCH_ALL_TYPES covers (references that compute on typed values reject the others).
bool reference_typed(DataType t) {
  switch (t) {
    case DataType::kFLOAT: case DataType::kDOUBLE: case DataType::kHALF: case DataType::kBF16: case DataType::kBOOL:
    case DataType::kINT8: case DataType::kUINT8: case DataType::kINT16: case DataType::kUINT16: case DataType::kINT32:
    case DataType::kUINT32: case DataType::kINT64: case DataType::kUINT64:
      return true;
    default:
      return false;
  }
}
bool is_index_type(DataType t) { return t == DataType::kINT32 || t == DataType::kINT64; }

bool has_in(const PlanNode& n, int i) { return i < static_cast<int>(n.inputs.size()) && n.inputs[i] >= 0; }
const runtime::PlanValue& in_val(const PlanNode& n, const EnginePlan& p, int i) { return p.values[n.inputs[i]]; }
const runtime::PlanValue& out_val(const PlanNode& n, const EnginePlan& p, int i) { return p.values[n.outputs[i]]; }
// Rank when known, else -1.
int rank_of(const runtime::PlanValue& v) { return v.rank_known ? static_cast<int>(v.shape.size()) : -1; }
// Element count when the shape is static, else -1.
int64_t static_numel(const runtime::PlanValue& v) {
  if (!v.rank_known || !ops::shape_is_static(v.shape)) return -1;
  int64_t n = 1;
  for (const auto& d : v.shape) n *= d.value;
  return n;
}

// Whether a value's contents will be known on the host before the run (KernelArgs::host_in): constants, and small
// integer tensors computed from shapes by operators whose inference propagates values (see shape_resolver.h).
// Conservative: a false "no" only costs a host fallback, a false "yes" makes run() fail.
bool host_knowable(const EnginePlan& plan, int id, int depth = 0) {
  if (id < 0) return true;
  const auto& v = plan.values[id];
  if (v.constant.defined()) return true;
  if (!is_index_type(v.dtype) || depth > 32) return false;
  if (!v.rank_known || v.shape.size() > 1) return false;
  for (const auto& n : plan.nodes) {
    if (std::find(n.outputs.begin(), n.outputs.end(), id) == n.outputs.end()) continue;
    if (!n.domain.empty() && n.domain != "ai.onnx") return false;
    static const char* kSources[] = {"Shape", "Size"};
    static const char* kPropagating[] = {"Gather", "Concat", "Slice", "Cast", "Squeeze", "Unsqueeze", "Reshape",
                                         "Identity", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Min", "Max",
                                         "Split", "Transpose", "Flatten"};
    for (const char* s : kSources)
      if (n.op_type == s) return true;
    bool propagating = false;
    for (const char* s : kPropagating) propagating |= n.op_type == s;
    if (!propagating) return false;
    for (int in : n.inputs)
      if (!host_knowable(plan, in, depth + 1)) return false;
    return true;
  }
  return false;  // a network input
}

// A host copy of input i, or an error naming what was expected (supports() promised it).
Result<const Tensor*> host_input(const KernelArgs& a, int i, const char* op, const char* what) {
  if (i < static_cast<int>(a.host_in.size()) && a.host_in[i]) return a.host_in[i];
  return internal_error(std::string(op) + ": input '" + what + "' is not known on the host before the run");
}

Result<int64_t> attr_int(const KernelArgs& a, const char* name, int64_t def) { return a.attrs().get_int(name, def); }

// Element strides of a dense shape.
std::vector<int64_t> strides(const Dims& d) { return ops::strides_of(d); }

int64_t prod(const Dims& d, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < e && i < d.size(); ++i) p *= d[i];
  return p;
}

mv::IndexRef index_ref(const DevTensor& t) { return mv::IndexRef{t.data, t.dtype == DataType::kINT64}; }

// Dense-to-dense copy of src (dims) into a box of dst; the building block of Concat/Split/Slice/Expand/Tile.
Status copy_box(const void* src, void* dst, int es, const Dims& dims, const std::vector<int64_t>& src_st,
                const std::vector<int64_t>& dst_st, cudaStream_t stream) {
  if (dims.size() > static_cast<size_t>(mv::kMaxCopyDims))
    return internal_error("copy: rank " + std::to_string(dims.size()) + " exceeds the kernel's limit");
  mv::CopyPlan p;
  p.rank = static_cast<int>(dims.size());
  for (int d = 0; d < p.rank; ++d) {
    p.dims[d] = dims[d];
    p.src_st[d] = src_st[d];
    p.dst_st[d] = dst_st[d];
  }
  return mv::strided_copy(src, dst, es, p, stream);
}

const uint8_t* bytes(const void* p, int64_t elems, size_t es) { return static_cast<const uint8_t*>(p) + elems * static_cast<int64_t>(es); }
uint8_t* bytes(void* p, int64_t elems, size_t es) { return static_cast<uint8_t*>(p) + elems * static_cast<int64_t>(es); }

// Low bytes of one element, for kernels that take a value by value.
uint64_t element_bits(const Tensor& t) {
  uint64_t v = 0;
  std::memcpy(&v, t.raw(), std::min<size_t>(dtype_size(t.dtype()), sizeof(v)));
  return v;
}

// The registration defaults of this file: any dtype, supports() decides.
KernelDef def(const char* op, KernelFn run, SupportsFn supports) {
  KernelDef d;
  d.op = op;
  d.run = std::move(run);
  d.supports = std::move(supports);
  return d;
}

// Input 0 and output 0 movable, every present input's rank known and at most max_rank.
bool basic_ok(const PlanNode& n, const EnginePlan& p, int max_rank) {
  if (n.inputs.empty() || n.outputs.empty() || !has_in(n, 0)) return false;
  if (!movable(in_val(n, p, 0).dtype) || !movable(out_val(n, p, 0).dtype)) return false;
  int r = rank_of(in_val(n, p, 0));
  int ro = rank_of(out_val(n, p, 0));
  return r >= 0 && r <= max_rank && ro >= 0 && ro <= max_rank;
}

// ---------------------------------------------------------------------------------------------------------------
// Transpose, DepthToSpace, SpaceToDepth

Status run_transpose(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const int r = x.rank();
  std::vector<int64_t> def_perm(r);
  for (int i = 0; i < r; ++i) def_perm[i] = r - 1 - i;
  KILN_ASSIGN_OR_RETURN(auto perm, a.attrs().get_ints("perm", def_perm));
  if (static_cast<int>(perm.size()) != r) return invalid_argument("Transpose: perm does not match the input rank");
  for (auto& p : perm) p = p < 0 ? p + r : p;
  return mv::transpose(x.data, a.out[0].data, static_cast<int>(dtype_size(x.dtype)), r, x.shape.data(), perm.data(),
                       a.stream);
}

bool dcr_mode(const KernelArgs& a, bool* dcr) {
  auto m = a.attrs().get_string("mode", "DCR");
  if (!m.ok()) return false;
  *dcr = m.value() == "DCR";
  return m.value() == "DCR" || m.value() == "CRD";
}

Status run_depth_space(KernelArgs& a, bool to_space) {
  const DevTensor& x = a.in[0];
  const char* op = to_space ? "DepthToSpace" : "SpaceToDepth";
  KILN_ASSIGN_OR_RETURN(int64_t b, a.attrs().get_int("blocksize"));
  bool dcr = true;
  if (!dcr_mode(a, &dcr)) return invalid_argument(std::string(op) + ": mode must be DCR or CRD");
  if (x.rank() != 4 || b <= 0) return invalid_argument(std::string(op) + ": needs a 4-D input and blocksize > 0");
  const auto& s = x.shape;
  Dims view;
  std::vector<int64_t> perm;
  if (to_space) {  // deep [N, C*b*b, H, W] -> wide [N, C, H*b, W*b]
    if (s[1] % (b * b)) return invalid_argument("DepthToSpace: channels not divisible by blocksize^2");
    const int64_t c = s[1] / (b * b);
    if (dcr) { view = {s[0], b, b, c, s[2], s[3]}; perm = {0, 3, 4, 1, 5, 2}; }
    else { view = {s[0], c, b, b, s[2], s[3]}; perm = {0, 1, 4, 2, 5, 3}; }
  } else {  // wide [N, C, H*b, W*b] -> deep [N, C*b*b, H, W]
    if (s[2] % b || s[3] % b) return invalid_argument("SpaceToDepth: spatial dims not divisible by blocksize");
    view = {s[0], s[1], s[2] / b, b, s[3] / b, b};
    perm = dcr ? std::vector<int64_t>{0, 3, 5, 1, 2, 4} : std::vector<int64_t>{0, 1, 3, 5, 2, 4};
  }
  return mv::transpose(x.data, a.out[0].data, static_cast<int>(dtype_size(x.dtype)), 6, view.data(), perm.data(),
                       a.stream);
}

// ---------------------------------------------------------------------------------------------------------------
// Concat, Split

Status run_concat(KernelArgs& a) {
  const DevTensor& y = a.out[0];
  const int r = y.rank();
  KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis"));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, r, "Concat axis"));
  const size_t es = dtype_size(y.dtype);
  const int64_t outer = prod(y.shape, 0, axis), inner = prod(y.shape, axis + 1, r), out_len = y.shape[axis];
  int64_t col = 0;
  for (size_t i = 0; i < a.in.size(); ++i) {
    if (a.node->inputs[i] < 0) continue;  // omitted optional input
    const DevTensor& x = a.in[i];
    if (x.rank() != r) return invalid_argument("Concat: input ranks differ");
    const int64_t len = x.shape[axis];
    if (col + len > out_len) return invalid_argument("Concat: inputs exceed the output along the axis");
    KILN_RETURN_IF_ERROR(copy_box(x.data, bytes(y.data, col * inner, es), static_cast<int>(es), {outer, len, inner},
                                  {len * inner, inner, 1}, {out_len * inner, inner, 1}, a.stream));
    col += len;
  }
  if (col != out_len) return invalid_argument("Concat: inputs do not fill the output along the axis");
  return Status::Ok();
}

Status run_split(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const int r = x.rank();
  KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis", 0));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, r, "Split axis"));
  const size_t es = dtype_size(x.dtype);
  const int64_t outer = prod(x.shape, 0, axis), inner = prod(x.shape, axis + 1, r), in_len = x.shape[axis];
  int64_t col = 0;
  // The pieces' sizes are the output shapes, which shape resolution computed from the split input or attribute.
  for (auto& y : a.out) {
    if (y.rank() != r) return invalid_argument("Split: output rank differs from the input's");
    const int64_t len = y.shape[axis];
    if (col + len > in_len) return invalid_argument("Split: outputs exceed the input along the axis");
    KILN_RETURN_IF_ERROR(copy_box(bytes(x.data, col * inner, es), y.data, static_cast<int>(es), {outer, len, inner},
                                  {in_len * inner, inner, 1}, {len * inner, inner, 1}, a.stream));
    col += len;
  }
  if (col != in_len) return invalid_argument("Split: outputs do not cover the input along the axis");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------------------------
// Slice (the reference's clamping: src/ops/slice.cpp resolve_axis)

struct AxisRange {
  int64_t start = 0, step = 1, count = 0;
};

AxisRange resolve_axis(int64_t s, int64_t e, int64_t step, int64_t dim) {
  if (s < 0) s += dim;
  if (e < 0) e += dim;
  AxisRange r;
  r.step = step;
  if (step > 0) {
    s = std::clamp<int64_t>(s, 0, dim);
    e = std::clamp<int64_t>(e, 0, dim);
    r.count = e > s ? (e - s + step - 1) / step : 0;
  } else {
    s = std::clamp<int64_t>(s, 0, dim - 1);
    e = std::clamp<int64_t>(e, -1, dim - 1);
    r.count = s > e ? (s - e - step - 1) / -step : 0;
  }
  r.start = s;
  return r;
}

Status run_slice(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& y = a.out[0];
  const int r = x.rank();
  std::vector<int64_t> starts, ends, axes, steps;
  if (a.node->opset < 10) {
    KILN_ASSIGN_OR_RETURN(starts, a.attrs().get_ints("starts"));
    KILN_ASSIGN_OR_RETURN(ends, a.attrs().get_ints("ends"));
    KILN_ASSIGN_OR_RETURN(axes, a.attrs().get_ints("axes", {}));
  } else {
    const char* names[] = {"", "starts", "ends", "axes", "steps"};
    std::vector<int64_t>* dst[] = {nullptr, &starts, &ends, &axes, &steps};
    for (int i = 1; i <= 4; ++i) {
      if (!a.has_input(i)) continue;
      KILN_ASSIGN_OR_RETURN(const Tensor* t, host_input(a, i, "Slice", names[i]));
      KILN_ASSIGN_OR_RETURN(*dst[i], ops::tensor_to_ints(*t));
    }
  }
  const size_t n = starts.size();
  if (ends.size() != n) return invalid_argument("Slice: starts and ends differ in length");
  if (axes.empty())
    for (size_t i = 0; i < n; ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(n, 1);
  if (axes.size() != n || steps.size() != n) return invalid_argument("Slice: starts, ends, axes, steps differ in length");
  std::vector<AxisRange> rg(r);
  for (int d = 0; d < r; ++d) rg[d] = AxisRange{0, 1, x.shape[d]};
  for (size_t i = 0; i < n; ++i) {
    KILN_ASSIGN_OR_RETURN(int64_t ax, ops::normalize_axis(axes[i], r, "Slice axis"));
    if (steps[i] == 0) return invalid_argument("Slice: steps must be non-zero");
    rg[ax] = resolve_axis(starts[i], ends[i], steps[i], x.shape[ax]);
  }
  for (int d = 0; d < r; ++d)
    if (rg[d].count != y.shape[d])
      return internal_error("Slice: axis " + std::to_string(d) + " selects " + std::to_string(rg[d].count) +
                            " elements but the output has " + std::to_string(y.shape[d]));
  if (y.numel() == 0) return Status::Ok();
  const auto in_st = strides(x.shape);
  const size_t es = dtype_size(x.dtype);
  int64_t base = 0;
  std::vector<int64_t> src_st(r);
  for (int d = 0; d < r; ++d) {
    base += rg[d].start * in_st[d];
    src_st[d] = rg[d].step * in_st[d];
  }
  return copy_box(bytes(x.data, base, es), y.data, static_cast<int>(es), y.shape, src_st, strides(y.shape), a.stream);
}

bool slice_supports(const PlanNode& n, const EnginePlan& p) {
  if (!basic_ok(n, p, mv::kMaxCopyDims)) return false;
  if (n.opset < 10) return true;
  for (int i = 1; i <= 4; ++i)
    if (has_in(n, i) && !host_knowable(p, n.inputs[i])) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Expand, Tile

Status run_expand(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& y = a.out[0];
  if (y.numel() == 0) return Status::Ok();
  if (x.rank() > y.rank()) return invalid_argument("Expand: output rank below the input's");
  auto st = ops::broadcast_strides(x.shape, y.shape);
  return copy_box(x.data, y.data, static_cast<int>(dtype_size(x.dtype)), y.shape, st, strides(y.shape), a.stream);
}

// Output axis d viewed as [repeat, in_d]: the input stride on the repeat dim is 0.
Status run_tile(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& y = a.out[0];
  if (y.numel() == 0) return Status::Ok();
  const int r = x.rank();
  if (y.rank() != r) return invalid_argument("Tile: output rank differs from the input's");
  const auto in_st = strides(x.shape), out_st = strides(y.shape);
  Dims dims;
  std::vector<int64_t> src_st, dst_st;
  for (int d = 0; d < r; ++d) {
    if (x.shape[d] == 0 || y.shape[d] % x.shape[d]) return invalid_argument("Tile: output is not a multiple of the input");
    dims.push_back(y.shape[d] / x.shape[d]);
    src_st.push_back(0);
    dst_st.push_back(x.shape[d] * out_st[d]);
    dims.push_back(x.shape[d]);
    src_st.push_back(in_st[d]);
    dst_st.push_back(out_st[d]);
  }
  return copy_box(x.data, y.data, static_cast<int>(dtype_size(x.dtype)), dims, src_st, dst_st, a.stream);
}

// ---------------------------------------------------------------------------------------------------------------
// Gather, GatherElements, GatherND

Status run_gather(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& ind = a.in[1];
  const int r = x.rank();
  if (r == 0) return invalid_argument("Gather: data must have rank >= 1");
  KILN_ASSIGN_OR_RETURN(int64_t axis, attr_int(a, "axis", 0));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, r, "Gather axis"));
  return mv::gather(x.data, a.out[0].data, static_cast<int>(dtype_size(x.dtype)), prod(x.shape, 0, axis),
                    x.shape[axis], prod(x.shape, axis + 1, r), index_ref(ind), ind.numel(), a.stream);
}

bool gather_supports(const PlanNode& n, const EnginePlan& p) {
  return basic_ok(n, p, 64) && has_in(n, 1) && is_index_type(in_val(n, p, 1).dtype) && rank_of(in_val(n, p, 0)) >= 1;
}

Status run_gather_elements(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& ind = a.in[1];
  const int r = x.rank();
  KILN_ASSIGN_OR_RETURN(int64_t axis, attr_int(a, "axis", 0));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, r, "GatherElements axis"));
  if (ind.rank() != r) return invalid_argument("GatherElements: indices must have the rank of data");
  mv::ElemsDesc d;
  d.rank = r;
  d.axis = static_cast<int>(axis);
  d.axis_dim = x.shape[axis];
  const auto st = strides(x.shape);
  for (int i = 0; i < r; ++i) {
    if (i != axis && ind.shape[i] > x.shape[i]) return invalid_argument("GatherElements: indices exceed data");
    d.idx_dims[i] = ind.shape[i];
    d.data_st[i] = st[i];
  }
  return mv::gather_elements(x.data, a.out[0].data, static_cast<int>(dtype_size(x.dtype)), d, index_ref(ind),
                             ind.numel(), a.stream);
}

bool elements_supports(const PlanNode& n, const EnginePlan& p) {
  return basic_ok(n, p, mv::kMaxDims) && has_in(n, 1) && is_index_type(in_val(n, p, 1).dtype) &&
         rank_of(in_val(n, p, 0)) >= 1;
}

Status run_gather_nd(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& ind = a.in[1];
  KILN_ASSIGN_OR_RETURN(int64_t b, attr_int(a, "batch_dims", 0));
  const int64_t r = x.rank(), q = ind.rank();
  if (q < 1) return invalid_argument("GatherND: indices must have rank >= 1");
  const int64_t k = ind.shape.back();
  if (b < 0 || b >= std::min(r, q) || b + k > r || k > mv::kMaxDims)
    return invalid_argument("GatherND: batch_dims and index depth do not fit the data");
  mv::NdDesc d;
  d.depth = static_cast<int>(k);
  const auto st = strides(x.shape);
  for (int64_t c = 0; c < k; ++c) {
    d.dims[c] = x.shape[b + c];
    d.st[c] = st[b + c];
  }
  d.per_batch = prod(ind.shape, b, q - 1);
  d.slab = prod(x.shape, b, r);
  d.slice = prod(x.shape, b + k, r);
  const int64_t n_tuples = prod(ind.shape, 0, q - 1);
  return mv::gather_nd(x.data, a.out[0].data, static_cast<int>(dtype_size(x.dtype)), d, index_ref(ind), n_tuples,
                       a.stream);
}

bool gather_nd_supports(const PlanNode& n, const EnginePlan& p) {
  if (!basic_ok(n, p, 64) || !has_in(n, 1) || !is_index_type(in_val(n, p, 1).dtype)) return false;
  const auto& ind = in_val(n, p, 1);
  if (rank_of(ind) < 1 || !ind.shape.back().is_static()) return false;
  return ind.shape.back().value <= mv::kMaxDims;
}

// ---------------------------------------------------------------------------------------------------------------
// ScatterND, ScatterElements, Scatter

constexpr size_t kWorkspaceBytes = 64ull << 20;  // CudaHandles::workspace_bytes of every context

Result<mv::Reduction> reduction_of(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string r, attrs.get_string("reduction", "none"));
  if (r == "none") return mv::Reduction::kNone;
  if (r == "add") return mv::Reduction::kAdd;
  if (r == "mul") return mv::Reduction::kMul;
  if (r == "max") return mv::Reduction::kMax;
  if (r == "min") return mv::Reduction::kMin;
  return invalid_argument("Scatter: reduction '" + r + "' is not one of none, add, mul, max, min");
}

bool scatter_type(DataType t, mv::ScatterType* out) {
  switch (t) {
    case DataType::kFLOAT: *out = mv::ScatterType::kFloat; return true;
    case DataType::kHALF: *out = mv::ScatterType::kHalf; return true;
    case DataType::kBF16: *out = mv::ScatterType::kBF16; return true;
    case DataType::kDOUBLE: *out = mv::ScatterType::kDouble; return true;
    case DataType::kINT8: *out = mv::ScatterType::kInt8; return true;
    case DataType::kUINT8: *out = mv::ScatterType::kUInt8; return true;
    case DataType::kINT16: *out = mv::ScatterType::kInt16; return true;
    case DataType::kUINT16: *out = mv::ScatterType::kUInt16; return true;
    case DataType::kINT32: *out = mv::ScatterType::kInt32; return true;
    case DataType::kUINT32: *out = mv::ScatterType::kUInt32; return true;
    case DataType::kINT64: *out = mv::ScatterType::kInt64; return true;
    case DataType::kUINT64: *out = mv::ScatterType::kUInt64; return true;
    case DataType::kBOOL: *out = mv::ScatterType::kBool; return true;
    default: return false;
  }
}

// Copies data into the output (the scatter then updates it in place).
Status copy_data(const KernelArgs& a) {
  const DevTensor& x = a.in[0];
  if (x.nbytes() && x.data != a.out[0].data)
    KILN_CUDA_CHECK(cudaMemcpyAsync(a.out[0].data, x.data, x.nbytes(), cudaMemcpyDeviceToDevice, a.stream));
  return Status::Ok();
}

Status run_scatter_nd(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& ind = a.in[1];
  const DevTensor& upd = a.in[2];
  KILN_ASSIGN_OR_RETURN(mv::Reduction red, reduction_of(a.attrs()));
  mv::ScatterType t = mv::ScatterType::kFloat;
  if (!scatter_type(x.dtype, &t) && red != mv::Reduction::kNone)
    return unsupported(std::string("ScatterND: reduction on ") + dtype_name(x.dtype));
  const int64_t r = x.rank(), q = ind.rank();
  if (q < 1) return invalid_argument("ScatterND: indices must have rank >= 1");
  const int64_t k = ind.shape.back();
  if (k > r || k > mv::kMaxDims) return invalid_argument("ScatterND: index depth exceeds the data rank");
  Dims want(ind.shape.begin(), ind.shape.end() - 1);
  want.insert(want.end(), x.shape.begin() + k, x.shape.end());
  if (upd.shape != want) return invalid_argument("ScatterND: updates have the wrong shape");
  KILN_RETURN_IF_ERROR(copy_data(a));
  mv::ScatterNdDesc d;
  d.depth = static_cast<int>(k);
  for (int64_t c = 0; c < k; ++c) d.dims[c] = x.shape[c];
  d.slots = prod(x.shape, 0, k);
  d.slice = prod(x.shape, k, r);
  return mv::scatter_nd(a.out[0].data, upd.data, static_cast<int>(dtype_size(x.dtype)), t, red, d, index_ref(ind),
                        prod(ind.shape, 0, q - 1), a.handles->workspace, a.handles->workspace_bytes, a.stream);
}

Status run_scatter_elements(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& ind = a.in[1];
  const DevTensor& upd = a.in[2];
  const int r = x.rank();
  KILN_ASSIGN_OR_RETURN(int64_t axis, attr_int(a, "axis", 0));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, r, "ScatterElements axis"));
  mv::Reduction red = mv::Reduction::kNone;
  if (a.node->op_type != "Scatter") { KILN_ASSIGN_OR_RETURN(red, reduction_of(a.attrs())); }
  mv::ScatterType t = mv::ScatterType::kFloat;
  if (!scatter_type(x.dtype, &t) && red != mv::Reduction::kNone)
    return unsupported(std::string("ScatterElements: reduction on ") + dtype_name(x.dtype));
  if (upd.shape != ind.shape || ind.rank() != r)
    return invalid_argument("ScatterElements: updates and indices must share a shape of the data's rank");
  mv::ElemsDesc d;
  d.rank = r;
  d.axis = static_cast<int>(axis);
  d.axis_dim = x.shape[axis];
  const auto st = strides(x.shape);
  for (int i = 0; i < r; ++i) {
    if (i != axis && ind.shape[i] > x.shape[i]) return invalid_argument("ScatterElements: indices exceed data");
    d.idx_dims[i] = ind.shape[i];
    d.data_st[i] = st[i];
  }
  KILN_RETURN_IF_ERROR(copy_data(a));
  return mv::scatter_elements(a.out[0].data, upd.data, static_cast<int>(dtype_size(x.dtype)), t, red, d, x.numel(),
                              index_ref(ind), ind.numel(), a.handles->workspace, a.handles->workspace_bytes, a.stream);
}

bool scatter_supports(const PlanNode& n, const EnginePlan& p, bool nd) {
  if (!basic_ok(n, p, mv::kMaxDims) || n.inputs.size() < 3 || !has_in(n, 1) || !has_in(n, 2)) return false;
  const auto& ind = in_val(n, p, 1);
  if (!is_index_type(ind.dtype) || rank_of(ind) < 1) return false;
  if (in_val(n, p, 2).dtype != in_val(n, p, 0).dtype) return false;
  auto red = reduction_of(n.attrs);
  if (!red.ok()) return false;
  mv::ScatterType t;
  if (red.value() != mv::Reduction::kNone && !scatter_type(in_val(n, p, 0).dtype, &t)) return false;
  // The number of contributions must be known to size the sort's scratch space.
  int64_t n_idx = static_numel(ind);
  if (n_idx < 0) return false;
  if (nd) {
    if (!ind.shape.back().is_static() || ind.shape.back().value > mv::kMaxDims) return false;
    n_idx = ind.shape.back().value == 0 ? prod(ops::static_dims(ind.shape), 0, ind.shape.size() - 1)
                                        : n_idx / ind.shape.back().value;
  }
  return mv::scatter_workspace_bytes(n_idx) <= kWorkspaceBytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Pad

Result<std::vector<int64_t>> pad_amounts(const KernelArgs& a, int rank) {
  std::vector<int64_t> pads;
  const bool from_attr = a.node->opset < 11 || !a.has_input(1);
  if (from_attr) {
    const char* name = a.attrs().has("paddings") ? "paddings" : "pads";
    KILN_ASSIGN_OR_RETURN(pads, a.attrs().get_ints(name));
    if (static_cast<int>(pads.size()) != 2 * rank) return invalid_argument("Pad: pads must have 2*rank values");
    return pads;
  }
  KILN_ASSIGN_OR_RETURN(const Tensor* pt, host_input(a, 1, "Pad", "pads"));
  KILN_ASSIGN_OR_RETURN(pads, ops::tensor_to_ints(*pt));
  if (!a.has_input(3)) {
    if (static_cast<int>(pads.size()) != 2 * rank) return invalid_argument("Pad: pads must have 2*rank values");
    return pads;
  }
  KILN_ASSIGN_OR_RETURN(const Tensor* at, host_input(a, 3, "Pad", "axes"));
  KILN_ASSIGN_OR_RETURN(auto axes, ops::tensor_to_ints(*at));
  const int64_t na = static_cast<int64_t>(axes.size());
  if (static_cast<int64_t>(pads.size()) != 2 * na) return invalid_argument("Pad: pads must have 2*len(axes) values");
  std::vector<int64_t> full(2 * rank, 0);
  for (int64_t i = 0; i < na; ++i) {
    KILN_ASSIGN_OR_RETURN(int64_t ax, ops::normalize_axis(axes[i], rank, "Pad: axes entry"));
    full[ax] = pads[i];
    full[ax + rank] = pads[i + na];
  }
  return full;
}

Result<mv::PadMode> pad_mode(const Attributes& attrs) {
  KILN_ASSIGN_OR_RETURN(std::string m, attrs.get_string("mode", "constant"));
  if (m == "constant") return mv::PadMode::kConstant;
  if (m == "reflect") return mv::PadMode::kReflect;
  if (m == "edge") return mv::PadMode::kEdge;
  if (m == "wrap") return mv::PadMode::kWrap;
  return invalid_argument("Pad: unknown mode '" + m + "'");
}

Status run_pad(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& y = a.out[0];
  const int r = x.rank();
  KILN_ASSIGN_OR_RETURN(mv::PadMode mode, pad_mode(a.attrs()));
  KILN_ASSIGN_OR_RETURN(auto pads, pad_amounts(a, r));
  mv::PadDesc d;
  d.rank = r;
  d.mode = mode;
  const auto st = strides(x.shape);
  for (int i = 0; i < r; ++i) {
    if (x.shape[i] + pads[i] + pads[i + r] != y.shape[i]) return internal_error("Pad: output shape disagrees with pads");
    if (x.shape[i] == 0 && y.shape[i] > 0 && mode != mv::PadMode::kConstant)
      return invalid_argument("Pad: cannot pad empty axis " + std::to_string(i) + " in a non-constant mode");
    d.out_dims[i] = y.shape[i];
    d.in_dims[i] = x.shape[i];
    d.in_st[i] = st[i];
    d.pad_begin[i] = pads[i];
  }
  // The fill value goes through double like the reference (get_f64 then a cast to the element type).
  double value = 0;
  if (a.node->opset < 11) {
    KILN_ASSIGN_OR_RETURN(float v, a.attrs().get_float("value", 0.0f));
    value = v;
  } else if (a.has_input(2) && a.in[2].numel() > 0) {
    KILN_ASSIGN_OR_RETURN(const Tensor* vt, host_input(a, 2, "Pad", "constant_value"));
    value = vt->get_f64(0);
  }
  d.value = element_bits(Tensor::from_vector<double>({}, {value}).cast(x.dtype));
  if (r == 0) {  // nothing to pad: a copy
    if (x.nbytes()) KILN_CUDA_CHECK(cudaMemcpyAsync(y.data, x.data, x.nbytes(), cudaMemcpyDeviceToDevice, a.stream));
    return Status::Ok();
  }
  return mv::pad(x.data, y.data, static_cast<int>(dtype_size(x.dtype)), d, a.stream);
}

bool pad_supports(const PlanNode& n, const EnginePlan& p) {
  if (!basic_ok(n, p, mv::kMaxDims) || !reference_typed(in_val(n, p, 0).dtype)) return false;
  if (!pad_mode(n.attrs).ok()) return false;
  if (n.opset < 11) return true;
  for (int i = 1; i <= 3; ++i)
    if (has_in(n, i) && !host_knowable(p, n.inputs[i])) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Trilu

Status run_trilu(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const int r = x.rank();
  if (r < 2) return invalid_argument("Trilu: input must have rank >= 2");
  KILN_ASSIGN_OR_RETURN(int64_t upper, attr_int(a, "upper", 1));
  int64_t k = 0;
  if (a.has_input(1)) {
    KILN_ASSIGN_OR_RETURN(const Tensor* kt, host_input(a, 1, "Trilu", "k"));
    if (kt->numel() != 1) return invalid_argument("Trilu: k must be a scalar");
    k = kt->get_i64(0);
  }
  const int64_t rows = x.shape[r - 2], cols = x.shape[r - 1];
  const int64_t mats = rows * cols == 0 ? 0 : x.numel() / (rows * cols);
  return mv::trilu(x.data, a.out[0].data, static_cast<int>(dtype_size(x.dtype)), mats, rows, cols, k, upper != 0,
                   a.stream);
}

bool trilu_supports(const PlanNode& n, const EnginePlan& p) {
  return basic_ok(n, p, 64) && rank_of(in_val(n, p, 0)) >= 2 && (!has_in(n, 1) || host_knowable(p, n.inputs[1]));
}

// ---------------------------------------------------------------------------------------------------------------
// Resize / Upsample (src/ops/resize.cpp: resize_config, resize_target)

struct ResizeSetup {
  bool linear = false;
  mv::ResizeCoord coord = mv::ResizeCoord::kHalfPixel;
  mv::ResizeNearest nearest = mv::ResizeNearest::kRoundPreferFloor;
  bool exclude_outside = false, antialias = false, cubic = false;
  float extrapolation = 0.0f;
  std::string policy = "stretch";
  std::vector<int64_t> axes;
  int roi = -1, scales = -1, sizes = -1;  // input slots for this opset
};

Result<ResizeSetup> resize_setup(const PlanNode& n) {
  const bool upsample = n.op_type == "Upsample";
  const Attributes& at = n.attrs;
  ResizeSetup s;
  KILN_ASSIGN_OR_RETURN(std::string mode, at.get_string("mode", "nearest"));
  if (upsample || n.opset < 11) {
    if (mode != "nearest" && mode != "linear" && mode != "bilinear") return unsupported("Resize: mode " + mode);
    s.linear = mode != "nearest";
    s.coord = mv::ResizeCoord::kAsymmetric;
    s.nearest = mv::ResizeNearest::kSimple;
    if (upsample) s.scales = n.opset >= 9 ? 1 : -1;
    else s.scales = 1;
    return s;
  }
  if (mode == "cubic") s.cubic = true;
  else if (mode == "linear") s.linear = true;
  else if (mode != "nearest") return unsupported("Resize: mode " + mode);
  KILN_ASSIGN_OR_RETURN(std::string coord, at.get_string("coordinate_transformation_mode", "half_pixel"));
  const std::pair<const char*, mv::ResizeCoord> coords[] = {
      {"half_pixel", mv::ResizeCoord::kHalfPixel},
      {"half_pixel_symmetric", mv::ResizeCoord::kHalfPixelSymmetric},
      {"pytorch_half_pixel", mv::ResizeCoord::kPytorchHalfPixel},
      {"align_corners", mv::ResizeCoord::kAlignCorners},
      {"asymmetric", mv::ResizeCoord::kAsymmetric},
      {"tf_half_pixel_for_nn", mv::ResizeCoord::kTfHalfPixelForNn},
      {"tf_crop_and_resize", mv::ResizeCoord::kTfCropAndResize}};
  bool found = false;
  for (auto& [name, c] : coords)
    if (coord == name) { s.coord = c; found = true; }
  if (!found) return unsupported("Resize: coordinate_transformation_mode " + coord);
  KILN_ASSIGN_OR_RETURN(std::string nm, at.get_string("nearest_mode", "round_prefer_floor"));
  const std::pair<const char*, mv::ResizeNearest> modes[] = {
      {"round_prefer_floor", mv::ResizeNearest::kRoundPreferFloor},
      {"round_prefer_ceil", mv::ResizeNearest::kRoundPreferCeil},
      {"floor", mv::ResizeNearest::kFloor},
      {"ceil", mv::ResizeNearest::kCeil}};
  found = false;
  for (auto& [name, m] : modes)
    if (nm == name) { s.nearest = m; found = true; }
  if (!found) return unsupported("Resize: nearest_mode " + nm);
  KILN_ASSIGN_OR_RETURN(int64_t ex, at.get_int("exclude_outside", 0));
  s.exclude_outside = ex != 0;
  KILN_ASSIGN_OR_RETURN(s.extrapolation, at.get_float("extrapolation_value", 0.0f));
  KILN_ASSIGN_OR_RETURN(int64_t aa, at.get_int("antialias", 0));
  s.antialias = aa != 0;
  KILN_ASSIGN_OR_RETURN(s.policy, at.get_string("keep_aspect_ratio_policy", "stretch"));
  KILN_ASSIGN_OR_RETURN(s.axes, at.get_ints("axes", {}));
  s.roi = 1;
  s.scales = 2;
  s.sizes = 3;
  return s;
}

// Whether slot i holds a non-empty tensor (ONNX leaves unused optional inputs out or passes an empty tensor).
bool slot_present(const KernelArgs& a, int i) { return i >= 0 && a.has_input(i) && a.in[i].numel() > 0; }
bool slot_present_plan(const PlanNode& n, const EnginePlan& p, int i) {
  if (i < 0 || !has_in(n, i)) return false;
  return static_numel(in_val(n, p, i)) != 0;
}

bool linear_type(DataType t, mv::LinearType* out) {
  switch (t) {
    case DataType::kFLOAT: *out = mv::LinearType::kFloat; return true;
    case DataType::kHALF: *out = mv::LinearType::kHalf; return true;
    case DataType::kBF16: *out = mv::LinearType::kBF16; return true;
    case DataType::kINT8: *out = mv::LinearType::kInt8; return true;
    case DataType::kUINT8: *out = mv::LinearType::kUInt8; return true;
    case DataType::kINT32: *out = mv::LinearType::kInt32; return true;
    case DataType::kINT64: *out = mv::LinearType::kInt64; return true;
    default: return false;
  }
}

Status run_resize(KernelArgs& a) {
  const DevTensor& x = a.in[0];
  const DevTensor& y = a.out[0];
  KILN_ASSIGN_OR_RETURN(ResizeSetup s, resize_setup(*a.node));
  const int r = x.rank();
  if (r > mv::kMaxDims) return internal_error("Resize: rank exceeds the kernel's limit");
  std::vector<int64_t> axes;
  if (s.axes.empty()) {
    for (int i = 0; i < r; ++i) axes.push_back(i);
  } else {
    for (auto ax : s.axes) {
      KILN_ASSIGN_OR_RETURN(int64_t na, ops::normalize_axis(ax, r, "Resize: axes entry"));
      axes.push_back(na);
    }
  }
  // Per-axis scales, computed as resize_target does.
  std::vector<float> scales(r, 1.0f);
  const bool upsample_attr = a.node->op_type == "Upsample" && a.node->opset < 9;
  if (upsample_attr || slot_present(a, s.scales)) {
    std::vector<float> sv;
    if (upsample_attr) {
      KILN_ASSIGN_OR_RETURN(sv, a.attrs().get_floats("scales"));
    } else {
      KILN_ASSIGN_OR_RETURN(const Tensor* t, host_input(a, s.scales, "Resize", "scales"));
      for (double v : t->to_f64_vector()) sv.push_back(static_cast<float>(v));
    }
    if (sv.size() != axes.size()) return invalid_argument("Resize: scales has the wrong length");
    for (size_t i = 0; i < sv.size(); ++i) scales[axes[i]] = sv[i];
  } else if (slot_present(a, s.sizes)) {
    if (s.policy != "stretch") {
      KILN_ASSIGN_OR_RETURN(const Tensor* t, host_input(a, s.sizes, "Resize", "sizes"));
      KILN_ASSIGN_OR_RETURN(auto sizes, ops::tensor_to_ints(*t));
      if (sizes.size() != axes.size()) return invalid_argument("Resize: sizes has the wrong length");
      float common = s.policy == "not_larger" ? std::numeric_limits<float>::max() : 0.0f;
      for (size_t i = 0; i < sizes.size(); ++i) {
        float f = static_cast<float>(sizes[i]) / static_cast<float>(x.shape[axes[i]]);
        common = s.policy == "not_larger" ? std::min(common, f) : std::max(common, f);
      }
      for (auto ax : axes) scales[ax] = common;
    } else {
      // Stretch: sizes are the output dims.
      for (auto ax : axes)
        scales[ax] = x.shape[ax] > 0 ? static_cast<float>(y.shape[ax]) / static_cast<float>(x.shape[ax]) : 1.0f;
    }
  } else {
    return invalid_argument("Resize: one of scales and sizes must be given");
  }
  mv::ResizeDesc d;
  d.rank = r;
  d.linear = s.linear;
  d.coord = s.coord;
  d.nearest = s.nearest;
  for (int i = 0; i < r; ++i) {
    d.in_dims[i] = x.shape[i];
    d.out_dims[i] = y.shape[i];
    d.scales[i] = scales[i];
    d.roi_start[i] = 0.0f;
    d.roi_end[i] = 1.0f;
  }
  if (s.coord == mv::ResizeCoord::kTfCropAndResize) {
    if (!slot_present(a, s.roi)) return invalid_argument("Resize: tf_crop_and_resize needs the roi input");
    KILN_ASSIGN_OR_RETURN(const Tensor* t, host_input(a, s.roi, "Resize", "roi"));
    auto rv = t->to_f64_vector();
    if (rv.size() != 2 * axes.size()) return invalid_argument("Resize: roi has the wrong length");
    for (size_t i = 0; i < axes.size(); ++i) {
      d.roi_start[axes[i]] = static_cast<float>(rv[i]);
      d.roi_end[axes[i]] = static_cast<float>(rv[i + axes.size()]);
    }
  }
  // The reference writes static_cast<T>(static_cast<float>(extrapolation_value)) outside the crop.
  d.extrapolation = element_bits(Tensor::from_vector<float>({}, {s.extrapolation}).cast(x.dtype));
  if (y.numel() == 0) return Status::Ok();
  if (x.numel() == 0) return invalid_argument("Resize: cannot resize an empty input to a non-empty output");
  if (!s.linear) return mv::resize_nearest(x.data, y.data, static_cast<int>(dtype_size(x.dtype)), d, a.stream);
  mv::LinearType lt;
  if (!linear_type(x.dtype, &lt)) return unsupported(std::string("Resize: linear mode on ") + dtype_name(x.dtype));
  return mv::resize_linear(x.data, y.data, lt, d, a.stream);
}

bool resize_supports(const PlanNode& n, const EnginePlan& p) {
  if (!basic_ok(n, p, mv::kMaxDims)) return false;
  const DataType dt = in_val(n, p, 0).dtype;
  if (!reference_typed(dt) || dt == DataType::kBOOL) return false;  // the reference handles numeric types
  auto s = resize_setup(n);
  if (!s.ok() || s->cubic) return false;
  if (s->linear) {
    mv::LinearType lt;
    // Antialiasing only changes linear/cubic downscaling, which this kernel does not filter.
    if (s->antialias || !linear_type(dt, &lt) || rank_of(in_val(n, p, 0)) > 4) return false;
  }
  const bool upsample_attr = n.op_type == "Upsample" && n.opset < 9;
  if (!upsample_attr) {
    if (slot_present_plan(n, p, s->scales)) {
      if (!in_val(n, p, s->scales).constant.defined()) return false;
    } else if (slot_present_plan(n, p, s->sizes)) {
      if (s->policy != "stretch" && !host_knowable(p, n.inputs[s->sizes])) return false;
    } else {
      return false;
    }
  }
  if (s->coord == mv::ResizeCoord::kTfCropAndResize &&
      (!slot_present_plan(n, p, s->roi) || !in_val(n, p, s->roi).constant.defined()))
    return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Generators: ConstantOfShape, EyeLike, Range, OneHot, Shape, Size

Status run_constant_of_shape(KernelArgs& a) {
  const DevTensor& y = a.out[0];
  uint64_t bits = 0;  // float 0 by default
  if (a.attrs().has("value")) {
    KILN_ASSIGN_OR_RETURN(Tensor v, a.attrs().get_tensor("value"));
    if (v.numel() != 1 || v.dtype() != y.dtype) return invalid_argument("ConstantOfShape: bad value attribute");
    bits = element_bits(v);
  }
  return mv::fill(y.data, static_cast<int>(dtype_size(y.dtype)), y.numel(), bits, a.stream);
}

bool constant_of_shape_supports(const PlanNode& n, const EnginePlan& p) {
  if (n.outputs.empty() || !movable(out_val(n, p, 0).dtype)) return false;
  if (n.attrs.has("value")) {
    auto v = n.attrs.get_tensor("value");
    if (!v.ok() || v->numel() != 1) return false;
  }
  return true;
}

Status run_eye_like(KernelArgs& a) {
  const DevTensor& y = a.out[0];
  if (y.rank() != 2) return invalid_argument("EyeLike: input must be 2-D");
  KILN_ASSIGN_OR_RETURN(int64_t k, attr_int(a, "k", 0));
  const uint64_t one = element_bits(Tensor::from_vector<float>({}, {1.0f}).cast(y.dtype));
  return mv::eye(y.data, static_cast<int>(dtype_size(y.dtype)), y.shape[0], y.shape[1], k, one, a.stream);
}

bool eye_like_supports(const PlanNode& n, const EnginePlan& p) {
  return !n.outputs.empty() && movable(out_val(n, p, 0).dtype) && reference_typed(out_val(n, p, 0).dtype) &&
         rank_of(out_val(n, p, 0)) == 2;
}

bool range_type(DataType t, mv::RangeType* out) {
  switch (t) {
    case DataType::kFLOAT: *out = mv::RangeType::kFloat; return true;
    case DataType::kDOUBLE: *out = mv::RangeType::kDouble; return true;
    case DataType::kINT16: *out = mv::RangeType::kInt16; return true;
    case DataType::kINT32: *out = mv::RangeType::kInt32; return true;
    case DataType::kINT64: *out = mv::RangeType::kInt64; return true;
    default: return false;
  }
}

Status run_range(KernelArgs& a) {
  const DevTensor& y = a.out[0];
  mv::RangeType t;
  if (!range_type(y.dtype, &t)) return unsupported(std::string("Range: type ") + dtype_name(y.dtype));
  KILN_ASSIGN_OR_RETURN(const Tensor* st, host_input(a, 0, "Range", "start"));
  KILN_ASSIGN_OR_RETURN(const Tensor* de, host_input(a, 2, "Range", "delta"));
  if (st->numel() != 1 || de->numel() != 1) return invalid_argument("Range: inputs must be scalars");
  if (y.rank() != 1) return internal_error("Range: output must be 1-D");
  return mv::range(y.data, t, y.shape[0], st->get_f64(0), de->get_f64(0), st->get_i64(0), de->get_i64(0), a.stream);
}

bool range_supports(const PlanNode& n, const EnginePlan& p) {
  mv::RangeType t;
  if (n.inputs.size() != 3 || n.outputs.empty() || !range_type(out_val(n, p, 0).dtype, &t)) return false;
  for (int i = 0; i < 3; ++i)
    if (!has_in(n, i) || !host_knowable(p, n.inputs[i])) return false;
  return true;
}

bool onehot_index(DataType t, mv::OneHotIndex* out) {
  switch (t) {
    case DataType::kINT32: *out = mv::OneHotIndex::kInt32; return true;
    case DataType::kINT64: *out = mv::OneHotIndex::kInt64; return true;
    case DataType::kFLOAT: *out = mv::OneHotIndex::kFloat; return true;
    case DataType::kDOUBLE: *out = mv::OneHotIndex::kDouble; return true;
    case DataType::kINT8: *out = mv::OneHotIndex::kInt8; return true;
    case DataType::kUINT8: *out = mv::OneHotIndex::kUInt8; return true;
    default: return false;
  }
}

Status run_one_hot(KernelArgs& a) {
  const DevTensor& ind = a.in[0];
  const DevTensor& values = a.in[2];
  const DevTensor& y = a.out[0];
  mv::OneHotIndex it;
  if (!onehot_index(ind.dtype, &it)) return unsupported(std::string("OneHot: indices of type ") + dtype_name(ind.dtype));
  if (values.numel() != 2) return invalid_argument("OneHot: values must hold two elements [off, on]");
  const int r = ind.rank() + 1;
  KILN_ASSIGN_OR_RETURN(int64_t axis, attr_int(a, "axis", -1));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, r, "OneHot axis"));
  if (y.rank() != r) return internal_error("OneHot: output rank is not the indices' rank + 1");
  // depth is the output's size on the axis (shape resolution read it from the depth input).
  return mv::one_hot(ind.data, it, values.data, y.data, static_cast<int>(dtype_size(y.dtype)),
                     prod(ind.shape, 0, axis), y.shape[axis], prod(ind.shape, axis, ind.rank()), a.stream);
}

bool one_hot_supports(const PlanNode& n, const EnginePlan& p) {
  mv::OneHotIndex it;
  return n.inputs.size() == 3 && has_in(n, 0) && has_in(n, 2) && onehot_index(in_val(n, p, 0).dtype, &it) &&
         movable(out_val(n, p, 0).dtype) && rank_of(in_val(n, p, 0)) >= 0;
}

Status run_shape(KernelArgs& a) {
  const Dims& s = a.in[0].shape;
  const int64_t rank = static_cast<int64_t>(s.size());
  auto clamp = [rank](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  KILN_ASSIGN_OR_RETURN(int64_t b, attr_int(a, "start", 0));
  KILN_ASSIGN_OR_RETURN(int64_t e, attr_int(a, "end", rank));
  b = clamp(b);
  e = std::max(b, clamp(e));
  if (a.out[0].numel() != e - b) return internal_error("Shape: output size disagrees with start/end");
  return mv::write_i64(a.out[0].data, static_cast<int>(e - b), s.data() + b, a.stream);
}

Status run_size(KernelArgs& a) {
  const int64_t n = a.in[0].numel();
  return mv::write_i64(a.out[0].data, 1, &n, a.stream);
}

bool shape_supports(const PlanNode& n, const EnginePlan& p) {
  int r = has_in(n, 0) ? rank_of(in_val(n, p, 0)) : -1;
  return r >= 0 && r <= 2 * mv::kMaxDims;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

KILN_CUDA_KERNEL(Transpose) {
  return def("Transpose", run_transpose, [](const PlanNode& n, const EnginePlan& p) { return basic_ok(n, p, mv::kMaxDims); });
}
KILN_CUDA_KERNEL(DepthToSpace) {
  return def("DepthToSpace", [](KernelArgs& a) { return run_depth_space(a, true); },
             [](const PlanNode& n, const EnginePlan& p) { return basic_ok(n, p, 4) && rank_of(in_val(n, p, 0)) == 4; });
}
KILN_CUDA_KERNEL(SpaceToDepth) {
  return def("SpaceToDepth", [](KernelArgs& a) { return run_depth_space(a, false); },
             [](const PlanNode& n, const EnginePlan& p) { return basic_ok(n, p, 4) && rank_of(in_val(n, p, 0)) == 4; });
}
KILN_CUDA_KERNEL(Concat) {
  return def("Concat", run_concat, [](const PlanNode& n, const EnginePlan& p) {
    if (!basic_ok(n, p, 64)) return false;
    for (size_t i = 0; i < n.inputs.size(); ++i)
      if (has_in(n, static_cast<int>(i)) && in_val(n, p, static_cast<int>(i)).dtype != in_val(n, p, 0).dtype) return false;
    return true;
  });
}
KILN_CUDA_KERNEL(Split) {
  return def("Split", run_split, [](const PlanNode& n, const EnginePlan& p) { return basic_ok(n, p, 64); });
}
KILN_CUDA_KERNEL(Slice) { return def("Slice", run_slice, slice_supports); }
KILN_CUDA_KERNEL(Expand) {
  return def("Expand", run_expand, [](const PlanNode& n, const EnginePlan& p) { return basic_ok(n, p, mv::kMaxCopyDims); });
}
KILN_CUDA_KERNEL(Tile) {
  return def("Tile", run_tile, [](const PlanNode& n, const EnginePlan& p) { return basic_ok(n, p, mv::kMaxCopyDims / 2); });
}
KILN_CUDA_KERNEL(Gather) { return def("Gather", run_gather, gather_supports); }
KILN_CUDA_KERNEL(GatherElements) { return def("GatherElements", run_gather_elements, elements_supports); }
KILN_CUDA_KERNEL(GatherND) { return def("GatherND", run_gather_nd, gather_nd_supports); }
KILN_CUDA_KERNEL(ScatterND) {
  return def("ScatterND", run_scatter_nd, [](const PlanNode& n, const EnginePlan& p) { return scatter_supports(n, p, true); });
}
KILN_CUDA_KERNEL(ScatterElements) {
  return def("ScatterElements", run_scatter_elements,
             [](const PlanNode& n, const EnginePlan& p) { return scatter_supports(n, p, false); });
}
KILN_CUDA_KERNEL(Scatter) {
  return def("Scatter", run_scatter_elements,
             [](const PlanNode& n, const EnginePlan& p) { return scatter_supports(n, p, false); });
}
KILN_CUDA_KERNEL(Pad) { return def("Pad", run_pad, pad_supports); }
KILN_CUDA_KERNEL(Trilu) { return def("Trilu", run_trilu, trilu_supports); }
KILN_CUDA_KERNEL(Resize) { return def("Resize", run_resize, resize_supports); }
KILN_CUDA_KERNEL(Upsample) { return def("Upsample", run_resize, resize_supports); }
KILN_CUDA_KERNEL(ConstantOfShape) { return def("ConstantOfShape", run_constant_of_shape, constant_of_shape_supports); }
KILN_CUDA_KERNEL(EyeLike) { return def("EyeLike", run_eye_like, eye_like_supports); }
KILN_CUDA_KERNEL(Range) { return def("Range", run_range, range_supports); }
KILN_CUDA_KERNEL(OneHot) { return def("OneHot", run_one_hot, one_hot_supports); }
KILN_CUDA_KERNEL(Shape) { return def("Shape", run_shape, shape_supports); }
KILN_CUDA_KERNEL(Size) {
  return def("Size", run_size, [](const PlanNode& n, const EnginePlan& p) { return has_in(n, 0) && !n.outputs.empty(); });
}

}  // namespace kiln::cuda
