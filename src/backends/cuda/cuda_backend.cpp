// CUDA backend entry: device queries, engine compatibility checks, weight upload, context creation.
// Registers itself with the runtime when libkiln_cuda.so is loaded.
#include "backends/cuda/cuda_backend.h"

#include <cstring>

#include "backends/cuda/cutlass_gemm.h"
#include "backends/cuda/dnn_attention.h"
#include "backends/cuda/dnn_conv.h"
#include "backends/cuda/dnn_matmul.h"

namespace kiln::cuda {
namespace {

std::string version3(int v) {  // cuDNN style 91400 -> "9.14.0"; cuBLAS 130100 -> "13.1.0"
  if (v >= 100000) return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}
std::string cuda_version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }
std::string major_of(const std::string& v) { return v.substr(0, v.find('.')); }

class CudaBackend final : public runtime::DeviceBackend {
 public:
  Backend kind() const override { return Backend::kCUDA; }

  Result<runtime::DeviceInfo> device_info() override {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
      return unsupported(std::string("no CUDA GPU is usable: ") +
                         (e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports no device"));
    int dev = 0;
    KILN_CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp p{};
    KILN_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    runtime::DeviceInfo info;
    info.name = p.name;
    info.cc_major = p.major;
    info.cc_minor = p.minor;
    info.multiprocessors = p.multiProcessorCount;
    info.total_memory = p.totalGlobalMem;
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    info.cuda_runtime = cuda_version(rt);
    info.cuda_driver = cuda_version(drv);
    info.cublaslt = version3(static_cast<int>(cublasLtGetVersion()));
    info.cudnn = version3(static_cast<int>(cudnnGetVersion()));
    info.cutlass =
        cutlass_gemm_available() ? cutlass_version() + " kernel set " + std::to_string(kCutlassKernelSet) : "";
    return info;
  }

  bool has_kernel(const std::string& op, const std::string& domain, DataType dtype) const override {
    return KernelRegistry::instance().has(op, domain, dtype);
  }

  // The CUTLASS odd-width kernels (cutlass_odd_c*), unless KILN_CUTLASS=0 withdraws them.
  bool odd_width_gemm() const override { return cutlass_tactics_enabled(); }

  Status check_engine(const runtime::EnginePlan& plan) override {
    auto meta = [&](const char* k) {
      auto it = plan.metadata.find(k);
      return it == plan.metadata.end() ? std::string() : it->second;
    };
    for (const char* k : {kMetaGpuName, kMetaGpuCc, kMetaCudaRuntime, kMetaCublasLt, kMetaCudnn})
      if (meta(k).empty())
        return Status(ErrorCode::kInvalidEngine, std::string("engine was built for backend cuda but records no '") +
                                                     k + "'; it was not written by Kiln's builder");
    auto dev = device_info();
    if (!dev.ok())
      return Status(ErrorCode::kInvalidEngine, "engine was built for backend cuda but " + dev.status().message());
    const runtime::DeviceInfo& here = *dev;
    std::string cc = std::to_string(here.cc_major) + "." + std::to_string(here.cc_minor);
    const std::string rebuild = "; rebuild the engine on this machine (kiln --onnx=<model> --saveEngine=<file>)";
    if (meta(kMetaGpuCc) != cc)
      return Status(ErrorCode::kInvalidEngine, "engine was built for '" + meta(kMetaGpuName) + "' (compute capability " +
                                                   meta(kMetaGpuCc) + ") but this GPU is '" + here.name +
                                                   "' (compute capability " + cc + ")" + rebuild);
    // Kernels are compiled for one architecture and libraries keep their ABI within a major version.
    const std::pair<const char*, std::string> libs[] = {
        {kMetaCublasLt, here.cublaslt}, {kMetaCudnn, here.cudnn}, {kMetaCudaRuntime, here.cuda_runtime}};
    for (const auto& [key, have] : libs) {
      std::string built = meta(key);
      if (major_of(built) != major_of(have))
        return Status(ErrorCode::kInvalidEngine, std::string("engine was built with ") + (key + 4) + " " + built +
                                                     " but this machine has " + have + rebuild);
    }
    return Status::Ok();
  }

  Result<std::shared_ptr<void>> load_weights(const runtime::EnginePlan& plan) override {
    auto w = std::make_shared<DeviceWeights>();
    constexpr uint64_t kAlign = 256;
    std::vector<std::pair<int, uint64_t>> layout;
    for (size_t v = 0; v < plan.values.size(); ++v) {
      const Tensor& c = plan.values[v].constant;
      if (!c.defined()) continue;
      layout.emplace_back(static_cast<int>(v), w->bytes);
      w->bytes += (c.nbytes() + kAlign - 1) / kAlign * kAlign;
    }
    if (w->bytes == 0) return std::shared_ptr<void>(w);
    cudaError_t e = cudaMalloc(&w->base, w->bytes);
    if (e != cudaSuccess) {
      w->base = nullptr;
      return Status(ErrorCode::kOutOfMemory, "cannot allocate " + std::to_string(w->bytes) +
                                                 " bytes of GPU memory for the engine's weights: " +
                                                 cudaGetErrorString(e));
    }
    for (auto [v, off] : layout) {
      void* dst = static_cast<uint8_t*>(w->base) + off;
      const Tensor& c = plan.values[v].constant;
      if (c.nbytes()) KILN_CUDA_CHECK(cudaMemcpy(dst, c.raw(), c.nbytes(), cudaMemcpyHostToDevice));
      w->by_value[v] = dst;
    }
    // Pageable copies may still be in flight when cudaMemcpy returns; contexts run on non-blocking streams
    // that do not wait for the legacy stream, so finish them here.
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    return std::shared_ptr<void>(w);
  }

  Result<std::unique_ptr<runtime::DeviceContext>> create_context(std::shared_ptr<const runtime::EnginePlan> plan,
                                                                 std::shared_ptr<void> weights) override {
    Status st;
    auto ctx = make_context(std::move(plan), std::static_pointer_cast<DeviceWeights>(weights), &st);
    if (!ctx) return st;
    return ctx;
  }

  std::vector<std::string> host_nodes(const runtime::EnginePlan& plan) const override {
    std::vector<std::string> r;
    for (const auto& n : plan.nodes)
      if (!KernelRegistry::instance().find(n, plan)) r.push_back(n.name + " (" + n.op_type + ")");
    return r;
  }

  std::map<std::string, int64_t> counters() const override {
    return {{"cudnn_matmul.plans_finalized", DnnMatmul::plans_finalized()},
            {"cudnn_matmul.plans_restored", DnnMatmul::plans_restored()},
            {"cudnn_conv.plans_restored", DnnConvGraph::plans_restored()},
            {"cudnn_sdpa.plans_built", DnnSdpa::plans_built()},
            {"cudnn_sdpa.plans_restored", DnnSdpa::plans_restored()},
            {"tuner.graph_timing_fallbacks", graph_timing_fallbacks()}};
  }
};

CudaBackend g_backend;
const bool g_registered = (runtime::register_device_backend(&g_backend), true);

}  // namespace

DeviceWeights::~DeviceWeights() {
  if (base) cudaFree(base);
}

}  // namespace kiln::cuda
