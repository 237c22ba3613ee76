// CUDA side of kiln::Pointwise: loads the kernel image the builder compiled (runtime API library management, no
// NVRTC and no driver API link) and launches it with the broadcast strides of the current shapes.
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/pdl.cuh"
#include "ops/op_util.h"
#include "ops/pointwise_program.h"

namespace kiln::cuda {
namespace {

using ops::kPwMaxInputs;
using ops::kPwMaxOutputs;
using ops::kPwMaxRank;
using ops::PwKernelParams;

struct PwKernels {
  cudaKernel_t v1_64 = nullptr, v1_32 = nullptr, v4_32 = nullptr;
  bool pdl = false;  // the kernels begin with griddepcontrol.wait (the image has the "_pdl" marker kernel)
};

// Images are named by content, so one load serves every node and context that runs the same program; libraries
// load into every device context (cudaLibrary_t is context-independent) and stay for the life of the process.
Result<PwKernels> load_kernels(const std::string& image, const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, PwKernels> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second;
  cudaLibrary_t lib = nullptr;
  KILN_CUDA_CHECK(cudaLibraryLoadData(&lib, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  PwKernels k;
  Status st = [&]() -> Status {
    KILN_CUDA_CHECK(cudaLibraryGetKernel(&k.v1_64, lib, (name + "_v1_64").c_str()));
    KILN_CUDA_CHECK(cudaLibraryGetKernel(&k.v1_32, lib, (name + "_v1_32").c_str()));
    KILN_CUDA_CHECK(cudaLibraryGetKernel(&k.v4_32, lib, (name + "_v4_32").c_str()));
    cudaKernel_t marker = nullptr;
    k.pdl = cudaLibraryGetKernel(&marker, lib, (name + "_pdl").c_str()) == cudaSuccess;
    if (!k.pdl) (void)cudaGetLastError();  // an image from before the marker: plain launches
    return Status::Ok();
  }();
  if (!st.ok()) {
    cudaLibraryUnload(lib);
    return st;
  }
  loaded[name] = k;
  return k;
}

// Dims and broadcast strides of every input against the output, with size-1 output dims dropped and neighbouring dims
// merged wherever every input walks them as one; a scalar output keeps one dim of 1.
Status make_params(const KernelArgs& a, PwKernelParams* p) {
  const Dims& out = a.out[0].shape;
  const int ni = static_cast<int>(a.in.size());
  std::vector<std::vector<int64_t>> st;
  for (int k = 0; k < ni; ++k) {
    if (a.in[k].rank() > static_cast<int>(out.size()))
      return invalid_argument("Pointwise: input " + std::to_string(k) + " " + dims_to_string(a.in[k].shape) +
                              " has a higher rank than the output " + dims_to_string(out));
    st.push_back(ops::broadcast_strides(a.in[k].shape, out));
  }
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> cst(ni);
  for (size_t d = 0; d < out.size(); ++d) {
    if (out[d] == 1) continue;
    bool merge = !dims.empty();
    for (int k = 0; k < ni && merge; ++k) merge = cst[k].back() == st[k][d] * out[d];
    if (merge) {
      dims.back() *= out[d];
      for (int k = 0; k < ni; ++k) cst[k].back() = st[k][d];
    } else {
      dims.push_back(out[d]);
      for (int k = 0; k < ni; ++k) cst[k].push_back(st[k][d]);
    }
  }
  if (dims.empty()) {
    dims.push_back(1);
    for (int k = 0; k < ni; ++k) cst[k].push_back(0);
  }
  if (dims.size() > static_cast<size_t>(kPwMaxRank))
    return unsupported("Pointwise: output " + dims_to_string(out) + " needs " + std::to_string(dims.size()) +
                       " dims after merging, the kernel takes " + std::to_string(kPwMaxRank));
  p->rank = static_cast<long long>(dims.size());
  p->n = a.out[0].numel();
  for (size_t d = 0; d < dims.size(); ++d) {
    p->dims[d] = dims[d];
    for (int k = 0; k < ni; ++k) p->strides[k][d] = cst[k][d];
  }
  return Status::Ok();
}

// A node's loaded kernels, and its launch parameters for the shapes they were computed at: make_params (with its
// allocations) runs when the shapes change, not on every enqueue; only the buffer addresses are set per run.
struct PwState {
  PwKernels kernels;
  std::vector<Dims> shapes;  // the inputs' shapes, then the output's
  PwKernelParams params{};
};

bool same_shapes(const PwState& s, const KernelArgs& a) {
  if (s.shapes.size() != a.in.size() + 1 || s.shapes.back() != a.out[0].shape) return false;
  for (size_t k = 0; k < a.in.size(); ++k)
    if (s.shapes[k] != a.in[k].shape) return false;
  return true;
}

// The four-wide kernel moves four elements with one vector instruction for every output and every input that
// runs along the innermost dim: those pointers must be aligned to four elements (arena and weight buffers are;
// user I/O buffers need not be).
bool vector_aligned(const KernelArgs& a, const PwKernelParams& p) {
  auto aligned = [](const void* ptr, DataType t) {
    return reinterpret_cast<uintptr_t>(ptr) % (4 * dtype_size(t)) == 0;
  };
  for (size_t k = 0; k < a.in.size(); ++k)
    if (p.strides[k][p.rank - 1] == 1 && !aligned(a.in[k].data, a.in[k].dtype)) return false;
  for (const DevTensor& o : a.out)
    if (!aligned(o.data, o.dtype)) return false;
  return true;
}

Status run_pointwise(KernelArgs& a) {
  if (a.in.size() > static_cast<size_t>(kPwMaxInputs) || a.out.size() > static_cast<size_t>(kPwMaxOutputs))
    return unsupported("Pointwise: too many inputs or outputs for the kernel's parameter block");
  for (size_t k = 1; k < a.out.size(); ++k)
    if (a.out[k].shape != a.out[0].shape)
      return internal_error("Pointwise: outputs have different shapes " + dims_to_string(a.out[0].shape) + " and " +
                            dims_to_string(a.out[k].shape));
  if (!*a.state) {
    KILN_ASSIGN_OR_RETURN(std::string image, a.attrs().get_string("image"));
    KILN_ASSIGN_OR_RETURN(std::string name, a.attrs().get_string("kernel"));
    auto state = std::make_shared<PwState>();
    KILN_ASSIGN_OR_RETURN(state->kernels, load_kernels(image, name));
    *a.state = state;
  }
  auto* st = static_cast<PwState*>(a.state->get());
  if (!same_shapes(*st, a)) {
    st->shapes.clear();
    st->params = PwKernelParams{};
    KILN_RETURN_IF_ERROR(make_params(a, &st->params));
    for (const DevTensor& t : a.in) st->shapes.push_back(t.shape);
    st->shapes.push_back(a.out[0].shape);
  }
  const PwKernels* k = &st->kernels;
  PwKernelParams p = st->params;
  for (size_t i = 0; i < a.in.size(); ++i) p.in[i] = a.in[i].data;
  for (size_t i = 0; i < a.out.size(); ++i) p.out[i] = a.out[i].data;
  if (p.n == 0) return Status::Ok();
  // 32-bit index arithmetic when every offset fits (integer division is the kernel's main cost); four elements
  // per thread when they share a row, so one index decomposition and one vector access serve four.
  const bool small = p.n < (int64_t{1} << 31) - 4096;
  const bool four = small && p.dims[p.rank - 1] % 4 == 0 && vector_aligned(a, p);
  cudaKernel_t fn = !small ? k->v1_64 : four ? k->v4_32 : k->v1_32;
  const int per_thread = four ? 4 : 1, block = 256;
  const int64_t needed = (p.n / per_thread + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(a.handles && a.handles->sm_count > 0 ? a.handles->sm_count : 132) * 16;
  dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, std::min(needed, cap))));
  void* args[] = {&p};
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t cfg = pdl_config(grid, dim3(block), 0, a.stream, k->pdl, &attr);
  KILN_CUDA_CHECK(cudaLaunchKernelExC(&cfg, reinterpret_cast<const void*>(fn), args));
  return Status::Ok();
}

}  // namespace

KILN_CUDA_KERNEL(Pointwise) {
  KernelDef d;
  d.op = "Pointwise";
  d.domain = "kiln";
  d.run = run_pointwise;
  // Only nodes the builder compiled; an engine built without NVRTC never has Pointwise nodes.
  d.supports = [](const runtime::PlanNode& n, const runtime::EnginePlan&) {
    const Attribute* img = n.attrs.find("image");
    return img && img->type() == AttrType::kSTRING && !img->s().empty() && n.attrs.has("kernel") &&
           n.inputs.size() <= static_cast<size_t>(kPwMaxInputs) && n.outputs.size() <= static_cast<size_t>(kPwMaxOutputs);
  };
  return d;
}

}  // namespace kiln::cuda
