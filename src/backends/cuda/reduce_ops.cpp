// Registration of the reduction kernels: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare,
// ArgMax/ArgMin and CumSum. Attributes and constant inputs (axes) are read here; src/ops/reduce.cpp and
// src/ops/generators.cpp hold the semantics these follow.
#include <cstring>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/reduce_kernels.h"
#include "ops/op_util.h"

namespace kiln::cuda {

Status launch_reduce_dims(DataType dt, const void* x, void* y, const Dims& shape, const std::vector<bool>& reduced,
                          ReduceOp op, int64_t y_numel, const std::string& name, void* workspace,
                          size_t workspace_bytes, int sm_count, cudaStream_t stream) {
  AxisSplit s;
  if (!split_axes(shape, reduced, &s)) return unsupported(name + ": too many alternating reduced and kept dims");
  ReduceProblem p;
  p.op = op;
  p.nout = s.nkept;
  p.nred = s.nred;
  p.red = s.red;
  p.kept = s.kept;
  // Column mode (the innermost kept dim across the threads, loads coalesced over outputs) unless that dim is so
  // short that most of a 32-wide tile would idle on a long reduction; row mode handles every layout. One
  // contiguous reduced block before it (NHWC global pooling) takes column mode at any width: its kernel idles no
  // lanes.
  if (s.innermost_kept) {
    ReduceProblem c = p;
    c.inner = s.kept.size[s.kept.n - 1];
    --c.kept.n;
    if (c.inner >= 16 || s.nred < 32 || reduce_cols_contiguous(dt, c)) p = c;
  }
  if (y_numel != p.nout) return internal_error(name + ": output size does not match the reduced shape");
  return launch_reduce(dt, x, y, p, workspace, workspace_bytes, sm_count, stream);
}

namespace {

bool input_present(const runtime::PlanNode& n, int i) {
  return i < static_cast<int>(n.inputs.size()) && n.inputs[i] >= 0;
}

// Input i absent, or a constant of the engine (so host_in holds it at run time).
bool absent_or_constant(const runtime::PlanNode& n, const runtime::EnginePlan& plan, int i) {
  return !input_present(n, i) || plan.values[n.inputs[i]].constant.defined();
}

bool rank_at_most(const runtime::PlanNode& n, const runtime::EnginePlan& plan, int i, size_t max_rank) {
  const auto& v = plan.values[n.inputs[i]];
  return v.rank_known && v.shape.size() <= max_rank;
}

const std::vector<DataType>& float_and_int_types() {
  static const std::vector<DataType> v = {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT32,
                                          DataType::kINT64};
  return v;
}

Status copy_input(KernelArgs& a) {
  const size_t bytes = a.out[0].nbytes();
  if (bytes) KILN_CUDA_CHECK(cudaMemcpyAsync(a.out[0].data, a.in[0].data, bytes, cudaMemcpyDeviceToDevice, a.stream));
  return Status::Ok();
}

Status run_reduce(KernelArgs& a, ReduceOp op) {
  const std::string& name = a.node->op_type;
  const DevTensor& x = a.in[0];
  KILN_ASSIGN_OR_RETURN(int64_t noop, a.attrs().get_int("noop_with_empty_axes", 0));
  std::vector<int64_t> axes;
  if (a.attrs().has("axes")) {
    KILN_ASSIGN_OR_RETURN(axes, a.attrs().get_ints("axes"));
  } else if (input_present(*a.node, 1)) {
    if (!a.host_in[1]) return internal_error(name + ": the axes input is not known on the host");
    KILN_ASSIGN_OR_RETURN(axes, ops::tensor_to_ints(*a.host_in[1]));
  }
  if (axes.empty() && noop) return copy_input(a);
  const int rank = x.rank();
  std::vector<bool> mask(rank, axes.empty());
  for (int64_t ax : axes) {
    KILN_ASSIGN_OR_RETURN(int64_t na, ops::normalize_axis(ax, rank, name + ": axis"));
    if (na < rank) mask[na] = true;  // rank 0 accepts axis 0, which names no dim
  }
  return launch_reduce_dims(x.dtype, x.data, a.out[0].data, x.shape, mask, op, a.out[0].numel(), name,
                            a.handles->workspace, a.handles->workspace_bytes, a.handles->sm_count, a.stream);
}

KernelDef reduce_def(const char* op, ReduceOp kind, bool ints) {
  KernelDef d;
  d.op = op;
  d.dtypes = ints ? float_and_int_types() : float_types();
  d.run = [kind](KernelArgs& a) { return run_reduce(a, kind); };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return rank_at_most(n, plan, 0, kMaxIndexDims) && (n.attrs.has("axes") || absent_or_constant(n, plan, 1));
  };
  return d;
}

Status run_arg(KernelArgs& a, bool is_max) {
  const std::string& name = a.node->op_type;
  const DevTensor& x = a.in[0];
  KILN_ASSIGN_OR_RETURN(int64_t axis, a.attrs().get_int("axis", 0));
  KILN_ASSIGN_OR_RETURN(int64_t last, a.attrs().get_int("select_last_index", 0));
  KILN_ASSIGN_OR_RETURN(axis, ops::normalize_axis(axis, x.rank(), name + ": axis"));
  if (x.shape[axis] == 0)
    return invalid_argument(name + ": cannot reduce over axis " + std::to_string(axis) + " of size 0");
  const int64_t outer = ops::product(x.shape, 0, axis), len = x.shape[axis], inner = ops::product(x.shape, axis + 1);
  return launch_arg_reduce(x.dtype, x.data, a.out[0].as<int64_t>(), outer, len, inner, is_max, last != 0,
                           a.handles->sm_count, a.stream);
}

KernelDef arg_def(const char* op, bool is_max) {
  KernelDef d;
  d.op = op;
  d.dtypes = float_and_int_types();
  d.run = [is_max](KernelArgs& a) { return run_arg(a, is_max); };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    const auto& x = plan.values[n.inputs[0]];
    return x.rank_known && !x.shape.empty();
  };
  return d;
}

}  // namespace

KILN_CUDA_KERNEL(ReduceSum) { return reduce_def("ReduceSum", ReduceOp::kSum, true); }
KILN_CUDA_KERNEL(ReduceMean) { return reduce_def("ReduceMean", ReduceOp::kMean, false); }
KILN_CUDA_KERNEL(ReduceMax) { return reduce_def("ReduceMax", ReduceOp::kMax, true); }
KILN_CUDA_KERNEL(ReduceMin) { return reduce_def("ReduceMin", ReduceOp::kMin, true); }
KILN_CUDA_KERNEL(ReduceProd) { return reduce_def("ReduceProd", ReduceOp::kProd, true); }
KILN_CUDA_KERNEL(ReduceL1) { return reduce_def("ReduceL1", ReduceOp::kL1, false); }
KILN_CUDA_KERNEL(ReduceL2) { return reduce_def("ReduceL2", ReduceOp::kL2, false); }
KILN_CUDA_KERNEL(ReduceLogSum) { return reduce_def("ReduceLogSum", ReduceOp::kLogSum, false); }
KILN_CUDA_KERNEL(ReduceLogSumExp) { return reduce_def("ReduceLogSumExp", ReduceOp::kLogSumExp, false); }
KILN_CUDA_KERNEL(ReduceSumSquare) { return reduce_def("ReduceSumSquare", ReduceOp::kSumSquare, false); }
KILN_CUDA_KERNEL(ArgMax) { return arg_def("ArgMax", true); }
KILN_CUDA_KERNEL(ArgMin) { return arg_def("ArgMin", false); }

KILN_CUDA_KERNEL(CumSum) {
  KernelDef d;
  d.op = "CumSum";
  d.dtypes = float_and_int_types();
  d.run = [](KernelArgs& a) -> Status {
    const DevTensor& x = a.in[0];
    if (!a.host_in[1]) return internal_error("CumSum: the axis input is not known on the host");
    if (a.host_in[1]->numel() != 1) return invalid_argument("CumSum: axis must hold one element");
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> axv, ops::tensor_to_ints(*a.host_in[1]));
    KILN_ASSIGN_OR_RETURN(int64_t exclusive, a.attrs().get_int("exclusive", 0));
    KILN_ASSIGN_OR_RETURN(int64_t reverse, a.attrs().get_int("reverse", 0));
    KILN_ASSIGN_OR_RETURN(int64_t axis, ops::normalize_axis(axv[0], x.rank(), "CumSum axis"));
    int64_t outer = 1, len = 1, inner = 1;  // rank 0: one element
    if (x.rank() > 0) {
      outer = ops::product(x.shape, 0, axis);
      len = x.shape[axis];
      inner = ops::product(x.shape, axis + 1);
    }
    return launch_cumsum(x.dtype, x.data, a.out[0].data, outer, len, inner, exclusive != 0, reverse != 0,
                         a.handles->sm_count, a.stream);
  };
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& plan) {
    return input_present(n, 1) && absent_or_constant(n, plan, 1);
  };
  return d;
}

}  // namespace kiln::cuda
