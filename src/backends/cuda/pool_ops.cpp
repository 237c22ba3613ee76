// MaxPool, AveragePool, GlobalMaxPool and GlobalAveragePool (1-D to 3-D) on own kernels that follow the
// reference (src/ops/pool.cpp) window by window; the geometry comes from the same window_util helpers. The kiln
// MaxPool/AveragePool (layout NHWC) run the same kernel with channels innermost.
#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/dense_kernels.h"
#include "ops/window_util.h"

namespace kiln::cuda {
namespace {

Status pool_run(KernelArgs& args, const char* op, PoolMode mode, bool nhwc) {
  const DevTensor& X = args.in[0];
  DevTensor& Y = args.out[0];
  if (Y.numel() == 0) return Status::Ok();
  const int nsp = X.rank() - 2;
  // Channels-last: the spatial dims are 1..rank-2 and the channels last; the kernel walks channels innermost.
  const int sp0 = nhwc ? 1 : 2;
  const int64_t channels = nhwc ? X.shape[X.rank() - 1] : X.shape[1];
  if (nsp < 1 || nsp > 3) return unsupported(std::string(op) + ": X must have rank 3 to 5");
  KILN_ASSIGN_OR_RETURN(ops::WindowParams p, ops::parse_window(op, args.attrs(), nsp, nullptr));
  KILN_ASSIGN_OR_RETURN(int64_t cip, args.attrs().get_int("count_include_pad", 0));
  std::vector<int64_t> in(X.shape.begin() + sp0, X.shape.begin() + sp0 + nsp), out(nsp);
  for (int i = 0; i < nsp; ++i) {
    KILN_ASSIGN_OR_RETURN(out[i], ops::window_out_size(op, p, i, in[i]));  // also resolves auto_pad's pads
  }
  Dims expect = {X.shape[0]};
  if (!nhwc) expect.push_back(channels);
  expect.insert(expect.end(), out.begin(), out.end());
  if (nhwc) expect.push_back(channels);
  if (expect != Y.shape)
    return internal_error(std::string(op) + ": output " + dims_to_string(Y.shape) + " but the window gives " +
                          dims_to_string(expect));
  PoolGeom g;
  auto i3 = ops::to3(in, 1), o3 = ops::to3(out, 1), k3 = ops::to3(p.kernel, 1), s3 = ops::to3(p.strides, 1),
       d3 = ops::to3(p.dilations, 1);
  auto pb3 = ops::to3(std::vector<int64_t>(p.pads.begin(), p.pads.begin() + nsp), 0);
  auto pe3 = ops::to3(std::vector<int64_t>(p.pads.begin() + nsp, p.pads.end()), 0);
  for (int i = 0; i < 3; ++i) {
    g.in[i] = i3[i];
    g.out[i] = o3[i];
    g.k[i] = k3[i];
    g.s[i] = s3[i];
    g.d[i] = d3[i];
    g.pb[i] = pb3[i];
    g.pe[i] = pe3[i];
  }
  if (nhwc) return launch_pool(X.dtype, mode, cip != 0, X.data, Y.data, X.shape[0], g, args.stream, channels);
  return launch_pool(X.dtype, mode, cip != 0, X.data, Y.data, X.shape[0] * channels, g, args.stream);
}

Status global_run(KernelArgs& args, PoolMode mode) {
  const DevTensor& X = args.in[0];
  DevTensor& Y = args.out[0];
  if (X.rank() < 2) return invalid_argument("global pooling: X must have rank >= 2");
  int64_t size = 1;
  for (int i = 2; i < X.rank(); ++i) size *= X.shape[i];
  return launch_global_pool(X.dtype, mode, X.data, Y.data, X.shape[0] * X.shape[1], size, args.stream);
}

// Rank 3 to 5 for windowed pooling, and no Indices output (MaxPool's second output runs on the host).
bool pool_supports(const runtime::PlanNode& n, const runtime::EnginePlan& p) {
  if (n.inputs.size() != 1 || n.inputs[0] < 0 || n.outputs.size() != 1) return false;
  const auto& x = p.values[n.inputs[0]];
  return x.rank_known && x.shape.size() >= 3 && x.shape.size() <= 5;
}

bool global_supports(const runtime::PlanNode& n, const runtime::EnginePlan& p) {
  if (n.inputs.size() != 1 || n.inputs[0] < 0 || n.outputs.size() != 1) return false;
  const auto& x = p.values[n.inputs[0]];
  return x.rank_known && x.shape.size() >= 2;
}

KernelDef pool_def(const char* op, PoolMode mode, bool nhwc = false) {
  KernelDef d;
  d.op = op;
  if (nhwc) d.domain = "kiln";
  d.dtypes = float_types();
  d.run = [op, mode, nhwc](KernelArgs& a) { return pool_run(a, op, mode, nhwc); };
  d.supports = pool_supports;
  return d;
}

KernelDef global_def(const char* op, PoolMode mode) {
  KernelDef d;
  d.op = op;
  d.dtypes = float_types();
  d.run = [mode](KernelArgs& a) { return global_run(a, mode); };
  d.supports = global_supports;
  return d;
}

}  // namespace

KILN_CUDA_KERNEL(MaxPool) { return pool_def("MaxPool", PoolMode::kMax); }
KILN_CUDA_KERNEL(AveragePool) { return pool_def("AveragePool", PoolMode::kAverage); }
KILN_CUDA_KERNEL(NhwcMaxPool) { return pool_def("MaxPool", PoolMode::kMax, true); }
KILN_CUDA_KERNEL(NhwcAveragePool) { return pool_def("AveragePool", PoolMode::kAverage, true); }
KILN_CUDA_KERNEL(GlobalMaxPool) { return global_def("GlobalMaxPool", PoolMode::kMax); }
KILN_CUDA_KERNEL(GlobalAveragePool) { return global_def("GlobalAveragePool", PoolMode::kAverage); }

}  // namespace kiln::cuda
