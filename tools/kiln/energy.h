// GPU energy during the timed run, from NVML loaded at run time (dlopen), so kiln has no link dependency on
// the driver's management library and runs where it is missing.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kiln/status.h"

namespace kiln::cli {

class EnergyMeter {
 public:
  EnergyMeter();
  ~EnergyMeter();
  EnergyMeter(const EnergyMeter&) = delete;
  EnergyMeter& operator=(const EnergyMeter&) = delete;

  // Loads NVML and finds the GPU (by PCI bus id when given, else the first one). The error says why not.
  Status open(const std::string& pci_bus_id);
  // Samples the board power every few milliseconds on a background thread until stop().
  void start();
  void stop();

  struct Reading {
    double seconds = 0, joules = 0, average_watts = 0;
    size_t samples = 0;
    bool from_energy_counter = false;  // the driver's energy counter (Volta and later), else integrated samples
  };
  Reading reading() const { return reading_; }

 private:
  struct Nvml;
  std::unique_ptr<Nvml> nvml_;
  std::thread sampler_;
  std::atomic<bool> running_{false};
  Reading reading_;
};

}  // namespace kiln::cli
