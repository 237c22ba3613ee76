// Registry of device backends and the lazy loading of their shared libraries.
#include "runtime/device_backend.h"

#include <dlfcn.h>

#include <filesystem>
#include <mutex>

namespace kiln::runtime {
namespace {

std::mutex g_mu;
DeviceBackend* g_backends[2] = {nullptr, nullptr};

// The directory of libkiln_runtime.so: backend libraries are installed beside it.
std::string own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&register_device_backend), &info) && info.dli_fname)
    return std::filesystem::path(info.dli_fname).parent_path().string();
  return ".";
}

}  // namespace

void register_device_backend(DeviceBackend* backend) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_backends[static_cast<int>(backend->kind())] = backend;
}

Result<DeviceBackend*> device_backend(Backend kind) {
  if (kind != Backend::kCUDA) return invalid_argument(std::string("no device backend for ") + backend_name(kind));
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_backends[1]) return g_backends[1];
  }
  std::string path = own_directory() + "/libkiln_cuda.so";
  // The library registers itself from a static initializer; it stays loaded for the process lifetime.
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    const char* err = dlerror();
    return unsupported("the CUDA backend is not available: cannot load " + path + " (" + (err ? err : "unknown") +
                       "); build Kiln with the CUDA toolkit installed");
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_backends[1]) return internal_error(path + " loaded but registered no CUDA backend");
  return g_backends[1];
}

}  // namespace kiln::runtime
