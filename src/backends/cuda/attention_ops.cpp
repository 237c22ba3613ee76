// kiln::FusedAttention on the CUDA backend: shapes, layout strides and mask strides from the node, the kernels in
// attention.cu.
#include <cmath>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/transformer_kernels.h"
#include "ops/attention_layout.h"
#include "ops/op_util.h"

namespace kiln::cuda {
namespace {

Status run_fused_attention(KernelArgs& a) {
  const DevTensor& q = a.in[0];
  const bool has_k = a.has_input(1), has_v = a.has_input(2);
  const DevTensor& k = has_k ? a.in[1] : q;  // a packed layout reads K and V from Q's buffer
  const DevTensor& v = has_v ? a.in[2] : q;
  KILN_ASSIGN_OR_RETURN(ops::AttentionGeometry geo, ops::attention_geometry(a.attrs(), q.shape, has_k ? &k.shape : nullptr,
                                                                            has_v ? &v.shape : nullptr));
  if (geo.out_shape != a.out[0].shape)
    return internal_error("FusedAttention: output " + dims_to_string(a.out[0].shape) + ", expected " +
                          dims_to_string(geo.out_shape));
  AttentionParams p;
  p.B = geo.B, p.H = geo.H, p.Sq = geo.Sq, p.Sk = geo.Sk, p.D = geo.D, p.Dv = geo.Dv;
  for (int i = 0; i < 3; ++i) p.qs[i] = geo.q.st[i], p.ks[i] = geo.k.st[i], p.vs[i] = geo.v.st[i], p.os[i] = geo.o.st[i];
  KILN_ASSIGN_OR_RETURN(int64_t causal, a.attrs().get_int("causal", 0));
  KILN_ASSIGN_OR_RETURN(float scale, a.attrs().get_float("scale", 0.0f));
  p.scale = a.attrs().has("scale") ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.D)));
  p.causal = causal != 0;
  if (a.has_input(3)) {
    const DevTensor& m = a.in[3];
    Dims ms = m.shape;
    if (ms.size() > 4) return invalid_argument("FusedAttention: the mask has rank > 4");
    while (ms.size() < 4) ms.insert(ms.begin(), 1);
    const Dims full = {p.B, p.H, p.Sq, p.Sk};
    for (int d = 0; d < 4; ++d)
      if (ms[d] != 1 && ms[d] != full[d])
        return invalid_argument("FusedAttention: mask " + dims_to_string(m.shape) + " does not broadcast to " +
                                dims_to_string(full));
    const std::vector<int64_t> st = ops::broadcast_strides(ms, full);
    for (int d = 0; d < 4; ++d) p.ms[d] = st[d];
    p.mask = m.data;
  }
  const size_t es = dtype_size(q.dtype);
  p.q = static_cast<const char*>(q.data) + geo.q.offset * es;
  p.k = static_cast<const char*>(k.data) + geo.k.offset * es;
  p.v = static_cast<const char*>(v.data) + geo.v.offset * es;
  p.o = a.out[0].data;
  return launch_fused_attention(q.dtype, p, a.stream);
}

}  // namespace

KILN_CUDA_KERNEL(FusedAttention) {
  KernelDef d;
  d.op = "FusedAttention";
  d.domain = "kiln";
  d.dtypes = float_types();
  d.run = run_fused_attention;
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan& p) {
    const DataType dt = node_dtype(n, p);
    for (int id : n.inputs)
      if (id >= 0 && p.values[id].dtype != dt) return false;
    return true;
  };
  return d;
}

}  // namespace kiln::cuda
