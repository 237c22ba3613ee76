// NVTX ranges in the "kiln" domain, shared by the builder (build phases, passes) and the CUDA backend (one range
// per layer per run), so one Nsight Systems filter shows both. nvtx3 is header-only: with no tool attached a call
// jumps to an empty stub. Include only where the CUDA toolkit's headers are on the include path.
#pragma once

#include <nvtx3/nvToolsExt.h>

namespace kiln::nvtx {

inline nvtxDomainHandle_t domain() {
  static nvtxDomainHandle_t d = nvtxDomainCreateA("kiln");
  return d;
}

inline void push(const char* name) {
  nvtxEventAttributes_t a{};
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.messageType = NVTX_MESSAGE_TYPE_ASCII;
  a.message.ascii = name;
  nvtxDomainRangePushEx(domain(), &a);
}

inline void pop() { nvtxDomainRangePop(domain()); }

// A range for the lifetime of the object.
class Range {
 public:
  explicit Range(const char* name) { push(name); }
  ~Range() { pop(); }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;
};

}  // namespace kiln::nvtx
