// Registration of the normalization kernels: Softmax, LogSoftmax, LpNormalization, LayerNormalization,
// RMSNormalization, InstanceNormalization, GroupNormalization, MeanVarianceNormalization. Attribute handling
// and shape checks mirror the reference implementations in src/ops/softmax.cpp, norm.cpp and transformer_ops.cpp.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/elementwise_kernels.h"
#include "backends/cuda/movement_kernels.h"
#include "backends/cuda/norm_kernels.h"
#include "backends/cuda/unpad.h"
#include "ops/add_layer_norm.h"
#include "ops/layout_util.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

bool is_float_type(DataType dt) { return dt == DataType::kFLOAT || dt == DataType::kHALF || dt == DataType::kBF16; }

// Inputs from `first` on are absent or of a float type (scale and bias are read with a run-time type tag).
bool params_are_float(const runtime::PlanNode& n, const runtime::EnginePlan& plan, int first) {
  for (size_t i = first; i < n.inputs.size(); ++i)
    if (n.inputs[i] >= 0 && !is_float_type(plan.values[n.inputs[i]].dtype)) return false;
  return true;
}

bool rank_known_at_most(const runtime::PlanNode& n, const runtime::EnginePlan& plan, size_t max_rank) {
  const auto& v = plan.values[n.inputs[0]];
  return v.rank_known && v.shape.size() <= max_rank;
}

// Softmax, LogSoftmax (opset < 13: the input flattened to 2-D at axis; from 13: the one axis) and Lp.
Status run_axis_norm(KernelArgs& a, RowNorm mode, int64_t outer, int64_t len, int64_t inner) {
  const DevTensor& x = a.in[0];
  if (inner == 1) {
    RowNormParams p;
    p.mode = mode;
    p.rows = outer;
    p.len = len;
    if (len == 0) return Status::Ok();
    return launch_row_norm(x.dtype, x.data, a.out[0].data, p, a.handles->sm_count, a.stream);
  }
  return launch_col_norm(x.dtype, x.data, a.out[0].data, mode, outer, len, inner, a.stream);
}

KernelDef softmax_def(const char* op, RowNorm mode) {
  KernelDef d;
  d.op = op;
  d.dtypes = float_types();
  d.run = [mode](KernelArgs& a) -> Status {
    const std::string& name = a.node->op_type;
    const DevTensor& x = a.in[0];
    const int opset = a.node->opset;
    KILN_ASSIGN_OR_RETURN(int64_t axis_attr, a.attrs().get_int("axis", opset < 13 ? 1 : -1));
    KILN_ASSIGN_OR_RETURN(int64_t axis, ops::normalize_axis(axis_attr, x.rank(), name + " axis"));
    const int64_t outer = ops::product(x.shape, 0, axis);
    int64_t len = 1, inner = 1;
    if (opset < 13) {
      len = ops::product(x.shape, axis);
    } else if (x.rank() > 0) {
      len = x.shape[axis];
      inner = ops::product(x.shape, axis + 1);
    }
    return run_axis_norm(a, mode, outer, len, inner);
  };
  return d;
}

// Scale or bias of a Layer/RMS normalization as a map from the position in the normalized dims.
Status param_map(const std::string& op, const DevTensor& t, const std::vector<int64_t>& norm_dims, IndexMap* m) {
  auto bd = ops::broadcast_dims({t.shape, norm_dims});
  if (!bd.ok() || bd.value() != norm_dims)
    return invalid_argument(op + ": parameter of shape " + dims_to_string(t.shape) +
                            " does not broadcast to the normalized shape " + dims_to_string(norm_dims));
  if (!strided_map(norm_dims, ops::broadcast_strides(t.shape, norm_dims), m))
    return unsupported(op + ": parameter broadcast needs too many dims");
  return Status::Ok();
}

// A LayerNorm's launch parameters from its attributes, the shape of the normalized tensor x (the output's for kiln
// EmbedLayerNormalization, whose input 0 is the table) and the scale/bias inputs at `first_param` and after (1 for
// LayerNormalization, 2 for kiln AddLayerNormalization, 3 for EmbedLayerNormalization); *axis gets the axis.
Result<RowNormParams> layer_norm_params(const KernelArgs& a, const std::string& op, const DevTensor& x, int first_param,
                                        int64_t* axis) {
  KILN_ASSIGN_OR_RETURN(int64_t ax, a.attrs().get_int("axis", -1));
  KILN_ASSIGN_OR_RETURN(ax, ops::normalize_axis(ax, x.rank(), op + ": axis"));
  KILN_ASSIGN_OR_RETURN(float eps, a.attrs().get_float("epsilon", 1e-5f));
  KILN_ASSIGN_OR_RETURN(int64_t stash, a.attrs().get_int("stash_type", 1));
  if (stash != 1 && stash != 11)
    return invalid_model(op + ": stash_type must be 1 (float) or 11 (double), got " + std::to_string(stash));
  const std::vector<int64_t> norm_dims(x.shape.begin() + ax, x.shape.end());
  RowNormParams p;
  p.mode = RowNorm::kLayerNorm;
  p.rows = ops::product(x.shape, 0, ax);
  p.len = ops::product(x.shape, ax);
  p.eps = eps;
  const DevTensor& scale = a.in[first_param];
  p.scale = scale.data;
  p.scale_dtype = scale.dtype;
  KILN_RETURN_IF_ERROR(param_map(op, scale, norm_dims, &p.scale_map));
  const int bias = first_param + 1;
  if (static_cast<int>(a.in.size()) > bias && a.node->inputs[bias] >= 0) {
    p.bias = a.in[bias].data;
    p.bias_dtype = a.in[bias].dtype;
    KILN_RETURN_IF_ERROR(param_map(op, a.in[bias], norm_dims, &p.bias_map));
  }
  *axis = ax;
  return p;
}

Status run_layer_norm(KernelArgs& a) {
  const std::string op = "LayerNormalization";
  int64_t axis = 0;
  KILN_ASSIGN_OR_RETURN(RowNormParams p, layer_norm_params(a, op, a.in[0], 1, &axis));
  for (size_t k = 1; k < a.out.size() && k < 3; ++k) {
    const DevTensor& s = a.out[k];
    if (s.dtype != DataType::kFLOAT && s.dtype != DataType::kDOUBLE)
      return unsupported(op + ": statistics output type must be float or double");
    p.stats_double = s.dtype == DataType::kDOUBLE;
    (k == 1 ? p.mean_out : p.inv_std_out) = s.data;
  }
  // Empty rows still produce statistics (mean 0), so launch whenever there are rows.
  return launch_row_norm(a.in[0].dtype, a.in[0].data, a.out[0].data, p, a.handles->sm_count, a.stream);
}

// Where a kiln LayerNorm node whose register-resident kernel did not apply builds its rows in x's type `dt` (the
// lookups and the Add, rounded as the separate nodes stored them): the output itself, or, when the node stores
// float32 from a reduced type (`to`), the workspace.
Result<void*> staging(KernelArgs& a, DataType dt, int64_t elems, const std::string& op) {
  if (a.out[0].dtype == dt) return a.out[0].data;
  const size_t bytes = static_cast<size_t>(elems) * dtype_size(dt);
  if (bytes > a.handles->workspace_bytes)
    return unsupported(op + ": storing float32 from " + std::string(dtype_name(dt)) + " outside the register-resident " +
                       "kernel stages the rows in the workspace, which holds " +
                       std::to_string(a.handles->workspace_bytes) + " bytes, not " + std::to_string(bytes));
  return a.handles->workspace;
}

// The rows in `staged` (dt) normalized into the output: there directly where the output has dt; where it is
// float32 from a reduced type, widened into it exactly and normalized there in float32, as the reference and the
// register-resident kernel compute (normalizing in dt and converting would round every value to dt first).
// p: the LayerNorm's parameters (its addend and lookups are in `staged` already).
Status norm_staged(KernelArgs& a, DataType dt, const void* staged, RowNormParams p) {
  p.addend = nullptr;
  p.gather_index = nullptr;
  p.gather2_table = nullptr;
  p.out_float = false;
  void* y = a.out[0].data;
  if (a.out[0].dtype == dt) return launch_row_norm(dt, staged, y, p, a.handles->sm_count, a.stream);
  KILN_RETURN_IF_ERROR(launch_unpad(dt, DataType::kFLOAT, staged, y, p.rows, p.len, p.len, a.handles->sm_count,
                                    a.stream));
  return launch_row_norm(DataType::kFLOAT, y, y, p, a.handles->sm_count, a.stream);
}

// y = x + addend in dt over `total` elements, the addend repeating along the outer dim (element i of x meets
// element i mod numel(addend)); y may be x.
Status add_rows(KernelArgs& a, DataType dt, const void* x, void* y, int64_t total, const DevTensor& addend) {
  EwBroadcast bc;
  bc.rank = 2;
  bc.num_inputs = 2;
  bc.total = total;
  bc.index32 = bc.total < (int64_t{1} << 31);
  bc.dims[0] = addend.numel();
  bc.dims[1] = total / addend.numel();
  bc.strides[0][0] = 1, bc.strides[0][1] = addend.numel();
  bc.strides[1][0] = 1, bc.strides[1][1] = 0;
  return launch_binary(BinaryOp::kAdd, dt, x, addend.data, y, bc, a.stream);
}

// kiln LayerNormalization (X, Scale, [Bias]), Y in X's type or float32 (`to`).
Status run_kiln_layer_norm(KernelArgs& a) {
  const std::string op = "kiln LayerNormalization";
  const DevTensor& x = a.in[0];
  int64_t axis = 0;
  KILN_ASSIGN_OR_RETURN(RowNormParams p, layer_norm_params(a, op, x, 1, &axis));
  if (p.rows == 0 || p.len == 0) return Status::Ok();
  RowNormParams f = p;
  f.out_float = a.out[0].dtype != x.dtype;
  Status fused = launch_row_norm(x.dtype, x.data, a.out[0].data, f, a.handles->sm_count, a.stream);
  if (!f.out_float || fused.code() != ErrorCode::kUnsupported) return fused;
  return norm_staged(a, x.dtype, x.data, p);  // X itself holds the rows
}

// kiln AddLayerNormalization (A, B, Scale, [Bias]), Y in A's type or float32 (`to`).
Status run_add_layer_norm(KernelArgs& a) {
  const std::string op = "kiln AddLayerNormalization";
  const DevTensor& x = a.in[0];
  const DevTensor& addend = a.in[1];
  int64_t axis = 0;
  KILN_ASSIGN_OR_RETURN(RowNormParams p, layer_norm_params(a, op, x, 2, &axis));
  if (addend.dtype != x.dtype) return invalid_argument(op + ": A and B differ in type");
  KILN_RETURN_IF_ERROR(ops::check_add_layernorm_addend(ops::shape_from_dims(x.shape), ops::shape_from_dims(addend.shape),
                                                       axis, op));
  if (p.rows == 0 || p.len == 0) return Status::Ok();
  // The register-resident kernel adds B's row as it loads each row; elsewhere the sum is staged first.
  RowNormParams f = p;
  f.out_float = a.out[0].dtype != x.dtype;
  f.addend = addend.data;
  f.addend_rows = addend.numel() / p.len;
  Status fused = launch_row_norm(x.dtype, x.data, a.out[0].data, f, a.handles->sm_count, a.stream);
  if (fused.code() != ErrorCode::kUnsupported) return fused;
  KILN_ASSIGN_OR_RETURN(void* y, staging(a, x.dtype, x.numel(), op));
  KILN_RETURN_IF_ERROR(add_rows(a, x.dtype, x.data, y, x.numel(), addend));
  return norm_staged(a, x.dtype, y, p);
}

// Adds row idx2[r] of table2 to each of the `rows` rows of y (len elements of dt each), gathering those rows into
// the workspace from byte `ws_offset` on, as many rows at a time as fit: the two-lookup EmbedLayerNormalization
// where the register-resident kernel does not apply.
Status add_second_lookup(KernelArgs& a, DataType dt, void* y, int64_t rows, int64_t len, const DevTensor& table2,
                         const DevTensor& idx2, size_t ws_offset, const std::string& op) {
  const size_t row_bytes = static_cast<size_t>(len) * dtype_size(dt);
  const size_t avail = a.handles->workspace_bytes > ws_offset ? a.handles->workspace_bytes - ws_offset : 0;
  const int64_t chunk = static_cast<int64_t>(avail / row_bytes);
  if (chunk <= 0)
    return unsupported(op + ": a row of " + std::to_string(row_bytes) + " bytes does not fit the workspace left (" +
                       std::to_string(avail) + " bytes) for the second lookup");
  const bool is64 = idx2.dtype == DataType::kINT64;
  auto* ws = static_cast<uint8_t*>(a.handles->workspace) + ws_offset;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    const void* ip = static_cast<const uint8_t*>(idx2.data) + r0 * (is64 ? 8 : 4);
    KILN_RETURN_IF_ERROR(movement::gather(table2.data, ws, static_cast<int>(dtype_size(dt)), 1, table2.shape[0], len,
                                          movement::IndexRef{ip, is64}, n, a.stream));
    void* yc = static_cast<uint8_t*>(y) + r0 * row_bytes;
    DevTensor rows;
    rows.data = ws;
    rows.dtype = dt;
    rows.shape = {n, len};
    KILN_RETURN_IF_ERROR(add_rows(a, dt, yc, yc, n * len, rows));
  }
  return Status::Ok();
}

// kiln EmbedLayerNormalization (Data, Indices, B, Scale, [Bias], [Data2, Indices2]), Y in Data's type or float32
// (`to`): the register-resident LayerNorm kernel loads each row from the table(s) by its index and adds B's row;
// where it does not apply, the rows are gathered into Y first (the Gather kernel; a second lookup's rows through
// the workspace and added), then B added and Y normalized in place.
Status run_embed_layer_norm(KernelArgs& a) {
  const std::string op = "kiln EmbedLayerNormalization";
  const DevTensor& table = a.in[0];
  const DevTensor& idx = a.in[1];
  const DevTensor& addend = a.in[2];
  const DevTensor& out = a.out[0];
  if (table.rank() < 1) return invalid_argument(op + ": Data must have rank >= 1");
  if (addend.dtype != table.dtype) return invalid_argument(op + ": Data and B differ in type");
  int64_t axis = 0;
  KILN_ASSIGN_OR_RETURN(RowNormParams p, layer_norm_params(a, op, out, 3, &axis));
  KILN_RETURN_IF_ERROR(ops::check_add_layernorm_addend(ops::shape_from_dims(out.shape),
                                                       ops::shape_from_dims(addend.shape), axis, op));
  if (p.rows == 0 || p.len == 0) return Status::Ok();
  const int64_t row_len = ops::product(table.shape, 1);  // one table row: what each index selects
  const bool two = a.has_input(5) && a.has_input(6);
  if (two && (a.in[5].dtype != table.dtype || a.in[5].rank() != table.rank() ||
              ops::product(a.in[5].shape, 1) != row_len || a.in[6].numel() != idx.numel()))
    return invalid_argument(op + ": the second lookup's table " + dims_to_string(a.in[5].shape) + " or indices " +
                            dims_to_string(a.in[6].shape) + " do not match the first's (" + dims_to_string(table.shape) +
                            ", " + dims_to_string(idx.shape) + ")");
  if (row_len == p.len) {
    RowNormParams f = p;
    f.gather_index = idx.data;
    f.gather_index64 = idx.dtype == DataType::kINT64;
    f.gather_rows = table.shape[0];
    if (two) {
      f.gather2_table = a.in[5].data;
      f.gather2_index = a.in[6].data;
      f.gather2_index64 = a.in[6].dtype == DataType::kINT64;
      f.gather2_rows = a.in[5].shape[0];
    }
    f.addend = addend.data;
    f.addend_rows = addend.numel() / p.len;
    f.out_float = out.dtype != table.dtype;
    Status fused = launch_row_norm(table.dtype, table.data, out.data, f, a.handles->sm_count, a.stream);
    if (fused.code() != ErrorCode::kUnsupported) return fused;
  }
  KILN_ASSIGN_OR_RETURN(void* y, staging(a, table.dtype, out.numel(), op));
  KILN_RETURN_IF_ERROR(movement::gather(table.data, y, static_cast<int>(dtype_size(table.dtype)), 1, table.shape[0],
                                        row_len, movement::IndexRef{idx.data, idx.dtype == DataType::kINT64},
                                        idx.numel(), a.stream));
  if (two) {
    // The workspace after Y where Y is staged there, from its start otherwise.
    const size_t used = y == out.data ? 0 : (out.numel() * dtype_size(table.dtype) + 255) / 256 * 256;
    KILN_RETURN_IF_ERROR(add_second_lookup(a, table.dtype, y, idx.numel(), row_len, a.in[5], a.in[6], used, op));
  }
  KILN_RETURN_IF_ERROR(add_rows(a, table.dtype, y, y, out.numel(), addend));
  return norm_staged(a, table.dtype, y, p);
}

Status run_rms_norm(KernelArgs& a) {
  const std::string op = "RMSNormalization";
  const DevTensor& x = a.in[0];
  KILN_ASSIGN_OR_RETURN(int64_t stash, a.attrs().get_int("stash_type", 1));
  if (stash != 1 && stash != 10 && stash != 11 && stash != 16)
    return invalid_model(op + ": stash_type must be one of 1, 10, 11, 16, got " + std::to_string(stash));
  KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis", -1));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, x.rank(), "RMSNormalization axis"));
  KILN_ASSIGN_OR_RETURN(float eps, a.attrs().get_float("epsilon", 1e-5f));
  const std::vector<int64_t> norm_dims(x.shape.begin() + axis, x.shape.end());
  RowNormParams p;
  p.mode = RowNorm::kRmsNorm;
  p.rows = ops::product(x.shape, 0, axis);
  p.len = ops::product(x.shape, axis);
  p.eps = eps;
  p.scale = a.in[1].data;
  p.scale_dtype = a.in[1].dtype;
  KILN_RETURN_IF_ERROR(param_map(op, a.in[1], norm_dims, &p.scale_map));
  if (p.len == 0) return Status::Ok();
  return launch_row_norm(x.dtype, x.data, a.out[0].data, p, a.handles->sm_count, a.stream);
}

// Instance (groups == C) and Group normalization over [N, C, spatial...].
Status run_group_norm(KernelArgs& a, bool instance) {
  const std::string op = instance ? "InstanceNormalization" : "GroupNormalization";
  const DevTensor& x = a.in[0];
  const int min_rank = instance ? 3 : 2;
  if (x.rank() < min_rank)
    return invalid_argument(op + ": X must have rank >= " + std::to_string(min_rank) + ", got " +
                            dims_to_string(x.shape));
  KILN_ASSIGN_OR_RETURN(float eps, a.attrs().get_float("epsilon", 1e-5f));
  const int64_t n = x.shape[0], c = x.shape[1], inner = ops::product(x.shape, 2);
  int64_t groups = c;
  if (!instance) {
    KILN_ASSIGN_OR_RETURN(groups, a.attrs().get_int("num_groups"));
    if (groups < 1 || c % groups != 0)
      return invalid_argument(op + ": num_groups " + std::to_string(groups) +
                              " must be >= 1 and divide the channel count " + std::to_string(c));
  }
  // Opset 18 gives GroupNormalization's scale/bias per group, opset 21 per channel; accept either by size.
  const int64_t pc = instance || a.in[1].numel() == c ? c : groups;
  if (a.in[1].numel() != pc || a.in[2].numel() != pc)
    return invalid_argument(op + ": scale and bias must have " + std::to_string(pc) + " elements, got " +
                            dims_to_string(a.in[1].shape) + " and " + dims_to_string(a.in[2].shape));
  RowNormParams p;
  p.mode = instance ? RowNorm::kInstanceNorm : RowNorm::kGroupNorm;
  p.groups = groups;
  p.cpg = c / groups;
  p.inner = inner;
  p.rows = n * groups;
  p.len = p.cpg * inner;
  p.eps = eps;
  p.per_channel = pc == c && p.cpg > 1;
  p.scale = a.in[1].data;
  p.scale_dtype = a.in[1].dtype;
  p.bias = a.in[2].data;
  p.bias_dtype = a.in[2].dtype;
  if (p.len == 0) return Status::Ok();
  return launch_row_norm(x.dtype, x.data, a.out[0].data, p, a.handles->sm_count, a.stream);
}

}  // namespace

KILN_CUDA_KERNEL(Softmax) { return softmax_def("Softmax", RowNorm::kSoftmax); }
KILN_CUDA_KERNEL(LogSoftmax) { return softmax_def("LogSoftmax", RowNorm::kLogSoftmax); }

KILN_CUDA_KERNEL(LpNormalization) {
  KernelDef d;
  d.op = "LpNormalization";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& x = a.in[0];
    KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis", -1));
    KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, x.rank(), "LpNormalization: axis"));
    KILN_ASSIGN_OR_RETURN(int64_t p, a.attrs().get_int("p", 2));
    if (p != 1 && p != 2) return invalid_model("LpNormalization: p must be 1 or 2, got " + std::to_string(p));
    if (x.rank() == 0) return invalid_argument("LpNormalization: X must have rank >= 1");
    return run_axis_norm(a, p == 1 ? RowNorm::kLp1 : RowNorm::kLp2, ops::product(x.shape, 0, axis), x.shape[axis],
                         ops::product(x.shape, axis + 1));
  };
  return d;
}

KILN_CUDA_KERNEL(LayerNormalization) {
  KernelDef d;
  d.op = "LayerNormalization";
  d.dtypes = float_types();
  d.run = run_layer_norm;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return rank_known_at_most(n, plan, kMaxIndexDims) && params_are_float(n, plan, 1);
  };
  return d;
}

KILN_CUDA_KERNEL(AddLayerNormalization) {
  KernelDef d;
  d.op = "AddLayerNormalization";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_add_layer_norm;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return rank_known_at_most(n, plan, kMaxIndexDims) && params_are_float(n, plan, 2);
  };
  return d;
}

KILN_CUDA_KERNEL(KilnLayerNormalization) {
  KernelDef d;
  d.op = "LayerNormalization";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_kiln_layer_norm;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return rank_known_at_most(n, plan, kMaxIndexDims) && params_are_float(n, plan, 1);
  };
  return d;
}

KILN_CUDA_KERNEL(EmbedLayerNormalization) {
  KernelDef d;
  d.op = "EmbedLayerNormalization";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_embed_layer_norm;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    auto index_type = [&](size_t i) {
      const DataType t = plan.values[n.inputs[i]].dtype;
      return t == DataType::kINT32 || t == DataType::kINT64;
    };
    auto float_or_absent = [&](size_t i) {
      return i >= n.inputs.size() || n.inputs[i] < 0 || is_float_type(plan.values[n.inputs[i]].dtype);
    };
    const auto& y = plan.values[n.outputs[0]];
    const bool two = n.inputs.size() > 6 && n.inputs[5] >= 0 && n.inputs[6] >= 0;
    return index_type(1) && (!two || index_type(6)) && float_or_absent(2) && float_or_absent(3) &&
           float_or_absent(4) && float_or_absent(5) && y.rank_known && y.shape.size() <= kMaxIndexDims;
  };
  return d;
}

KILN_CUDA_KERNEL(RMSNormalization) {
  KernelDef d;
  d.op = "RMSNormalization";
  d.dtypes = float_types();
  d.run = run_rms_norm;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return rank_known_at_most(n, plan, kMaxIndexDims) && params_are_float(n, plan, 1);
  };
  return d;
}

KILN_CUDA_KERNEL(LRN) {
  KernelDef d;
  d.op = "LRN";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& x = a.in[0];
    if (x.rank() < 2) return invalid_argument("LRN: X must have rank >= 2 (N, C, ...), got " + dims_to_string(x.shape));
    KILN_ASSIGN_OR_RETURN(float alpha, a.attrs().get_float("alpha", 1e-4f));
    KILN_ASSIGN_OR_RETURN(float beta, a.attrs().get_float("beta", 0.75f));
    KILN_ASSIGN_OR_RETURN(float bias, a.attrs().get_float("bias", 1.0f));
    KILN_ASSIGN_OR_RETURN(int64_t size, a.attrs().get_int("size"));
    if (size < 1) return invalid_model("LRN: size must be >= 1, got " + std::to_string(size));
    return launch_lrn(x.dtype, x.data, a.out[0].data, x.shape[0], x.shape[1], ops::product(x.shape, 2), size, alpha,
                      beta, bias, a.stream);
  };
  return d;
}

KILN_CUDA_KERNEL(InstanceNormalization) {
  KernelDef d;
  d.op = "InstanceNormalization";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) { return run_group_norm(a, true); };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) { return params_are_float(n, plan, 1); };
  return d;
}

KILN_CUDA_KERNEL(GroupNormalization) {
  KernelDef d;
  d.op = "GroupNormalization";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) { return run_group_norm(a, false); };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) { return params_are_float(n, plan, 1); };
  return d;
}

KILN_CUDA_KERNEL(MeanVarianceNormalization) {
  KernelDef d;
  d.op = "MeanVarianceNormalization";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& x = a.in[0];
    KILN_ASSIGN_OR_RETURN(auto axes, a.attrs().get_ints("axes", {0, 2, 3}));
    std::vector<bool> reduced(x.rank(), false);
    for (int64_t ax : axes) {
      KILN_ASSIGN_OR_RETURN(int64_t na, ops::normalize_axis(ax, x.rank(), "MeanVarianceNormalization: axis"));
      if (na < x.rank()) reduced[na] = true;
    }
    AxisSplit s;
    if (!split_axes(x.shape, reduced, &s))
      return unsupported("MeanVarianceNormalization: too many alternating reduced and kept dims");
    return launch_mvn(x.dtype, x.data, a.out[0].data, s, a.handles->sm_count, a.stream);
  };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return rank_known_at_most(n, plan, kMaxIndexDims);
  };
  return d;
}

// kiln GroupNormalization with layout "NHWC" (layout_nhwc): X [N, spatial..., C], per-channel scale and bias;
// the statistics groups are (n, g) of the view [N, S, G, C/G], reduced over S and C/G (launch_nhwc_groupnorm).
KILN_CUDA_KERNEL(NhwcGroupNormalization) {
  KernelDef d;
  d.op = "GroupNormalization";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& x = a.in[0];
    if (x.rank() < 3) return invalid_argument("kiln GroupNormalization: X must have rank >= 3, got " +
                                              dims_to_string(x.shape));
    KILN_ASSIGN_OR_RETURN(float eps, a.attrs().get_float("epsilon", 1e-5f));
    KILN_ASSIGN_OR_RETURN(int64_t groups, a.attrs().get_int("num_groups"));
    const int64_t n = x.shape[0], c = x.shape.back(), spatial = ops::product(x.shape, 1, x.rank() - 1);
    if (groups < 1 || c % groups != 0)
      return invalid_argument("kiln GroupNormalization: num_groups " + std::to_string(groups) +
                              " must be >= 1 and divide the channel count " + std::to_string(c));
    if (a.in[1].numel() != c || a.in[2].numel() != c)
      return invalid_argument("kiln GroupNormalization: scale and bias must have " + std::to_string(c) +
                              " elements (one per channel), got " + dims_to_string(a.in[1].shape) + " and " +
                              dims_to_string(a.in[2].shape));
    ChannelAffine aff;
    aff.scale = a.in[1].data;
    aff.scale_dtype = a.in[1].dtype;
    aff.bias = a.in[2].data;
    aff.bias_dtype = a.in[2].dtype;
    aff.channels = c;
    aff.eps = eps;
    KILN_ASSIGN_OR_RETURN(const ops::Epilogue act, ops::parse_epilogue("kiln GroupNormalization", a.attrs()));
    aff.act = epilogue_params(act);
    return launch_nhwc_groupnorm(x.dtype, x.data, a.out[0].data, n, spatial, groups, aff, a.handles->workspace,
                                 a.handles->workspace_bytes, a.handles->sm_count, a.stream);
  };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return n.inputs.size() == 3 && n.inputs[1] >= 0 && n.inputs[2] >= 0 && params_are_float(n, plan, 1);
  };
  return d;
}

}  // namespace kiln::cuda
