// EnergyMeter (see energy.h). NVML's C API is declared here by hand: only these few entry points are used, and
// the header is not installed where the driver is not.
#include "energy.h"

#include <dlfcn.h>

#include <chrono>

namespace kiln::cli {
namespace {

using NvmlReturn = int;  // nvmlReturn_t; NVML_SUCCESS is 0
using NvmlDevice = void*;
constexpr NvmlReturn kNvmlSuccess = 0;
using Clock = std::chrono::steady_clock;

}  // namespace

struct EnergyMeter::Nvml {
  void* lib = nullptr;
  bool initialized = false;
  NvmlDevice device = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*by_index)(unsigned, NvmlDevice*) = nullptr;
  NvmlReturn (*by_pci)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*power_mw)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*energy_mj)(NvmlDevice, unsigned long long*) = nullptr;
  ~Nvml() {
    if (initialized && shutdown) shutdown();
    if (lib) dlclose(lib);
  }
};

EnergyMeter::EnergyMeter() = default;
EnergyMeter::~EnergyMeter() { stop(); }

Status EnergyMeter::open(const std::string& pci_bus_id) {
  auto n = std::make_unique<Nvml>();
  n->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!n->lib) return unsupported("NVML not available");
  auto sym = [&](const char* name) { return dlsym(n->lib, name); };
  n->init = reinterpret_cast<NvmlReturn (*)()>(sym("nvmlInit_v2"));
  n->shutdown = reinterpret_cast<NvmlReturn (*)()>(sym("nvmlShutdown"));
  n->by_index = reinterpret_cast<NvmlReturn (*)(unsigned, NvmlDevice*)>(sym("nvmlDeviceGetHandleByIndex_v2"));
  n->by_pci = reinterpret_cast<NvmlReturn (*)(const char*, NvmlDevice*)>(sym("nvmlDeviceGetHandleByPciBusId_v2"));
  n->power_mw = reinterpret_cast<NvmlReturn (*)(NvmlDevice, unsigned*)>(sym("nvmlDeviceGetPowerUsage"));
  n->energy_mj =
      reinterpret_cast<NvmlReturn (*)(NvmlDevice, unsigned long long*)>(sym("nvmlDeviceGetTotalEnergyConsumption"));
  if (!n->init || !n->by_index || !n->power_mw) return unsupported("NVML lacks the power entry points");
  if (n->init() != kNvmlSuccess) return unsupported("NVML failed to initialize");
  n->initialized = true;
  const bool found = !pci_bus_id.empty() && n->by_pci ? n->by_pci(pci_bus_id.c_str(), &n->device) == kNvmlSuccess
                                                      : n->by_index(0, &n->device) == kNvmlSuccess;
  if (!found) return unsupported("NVML does not know the GPU" + (pci_bus_id.empty() ? "" : " " + pci_bus_id));
  unsigned mw = 0;
  if (n->power_mw(n->device, &mw) != kNvmlSuccess) return unsupported("the GPU does not report its power to NVML");
  nvml_ = std::move(n);
  return Status::Ok();
}

void EnergyMeter::start() {
  if (!nvml_ || running_) return;
  running_ = true;
  sampler_ = std::thread([this] {
    Nvml& n = *nvml_;
    unsigned long long mj0 = 0, mj1 = 0;
    const bool counter = n.energy_mj && n.energy_mj(n.device, &mj0) == kNvmlSuccess;
    const auto t0 = Clock::now();
    auto last_t = t0;
    double last_w = -1, joules = 0, watt_sum = 0;
    size_t samples = 0;
    // NVML refreshes power about every 20 ms on recent GPUs; sampling faster only repeats values.
    while (running_) {
      unsigned mw = 0;
      const auto now = Clock::now();
      if (n.power_mw(n.device, &mw) == kNvmlSuccess) {
        const double w = mw / 1000.0;
        if (last_w >= 0) joules += (w + last_w) / 2 * std::chrono::duration<double>(now - last_t).count();
        last_w = w, last_t = now, watt_sum += w, ++samples;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Reading r;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    r.samples = samples;
    if (counter && n.energy_mj(n.device, &mj1) == kNvmlSuccess && mj1 >= mj0) {
      r.from_energy_counter = true;
      r.joules = static_cast<double>(mj1 - mj0) / 1000.0;
    } else {
      r.joules = joules;
    }
    r.average_watts = r.seconds > 0 && r.from_energy_counter ? r.joules / r.seconds
                                                             : samples ? watt_sum / static_cast<double>(samples) : 0;
    reading_ = r;
  });
}

void EnergyMeter::stop() {
  if (!running_) return;
  running_ = false;
  if (sampler_.joinable()) sampler_.join();
}

}  // namespace kiln::cli
