/* kiln_nvtx_probe: an NVTX injection library that writes every range Kiln pushes to a text file, one line per
 * push ("<domain>\t<message>"). It stands in for Nsight Systems where nsys is not installed (CI, the device
 * machine): NVTX_INJECTION64_PATH=<this .so> NVTX_PROBE_OUT=<file> kiln ...; tests/cli/test_cli_nvtx.py and
 * gpu_check.sh's nvtx stage read the file. Only the calls Kiln makes are hooked (domain create, push, pop). */
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>

static FILE* out_file = nullptr;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* A domain handle is a pointer to its name (the probe never frees them: a process creates a handful). */
static nvtxDomainHandle_t probe_domain_create(const char* name) {
  return reinterpret_cast<nvtxDomainHandle_t>(strdup(name ? name : ""));
}

static int probe_push(nvtxDomainHandle_t domain, const nvtxEventAttributes_t* a) {
  const char* msg = "";
  if (a && a->messageType == NVTX_MESSAGE_TYPE_ASCII && a->message.ascii) msg = a->message.ascii;
  pthread_mutex_lock(&lock);
  if (out_file) {
    fprintf(out_file, "%s\t%s\n", domain ? reinterpret_cast<const char*>(domain) : "", msg);
    fflush(out_file);
  }
  pthread_mutex_unlock(&lock);
  return 0;
}

static int probe_pop(nvtxDomainHandle_t domain) {
  (void)domain;
  return 0;
}

static int hook(NvtxGetExportTableFunc_t get_table, int slot, NvtxFunctionPointer fn) {
  const NvtxExportTableCallbacks* cb = static_cast<const NvtxExportTableCallbacks*>(get_table(NVTX_ETID_CALLBACKS));
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!cb || !cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &table, &size) || !table || static_cast<unsigned>(slot) > size)
    return 0;
  *table[slot] = fn;
  return 1;
}

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get_table) {
  const char* path = getenv("NVTX_PROBE_OUT");
  out_file = fopen(path ? path : "nvtx_probe.txt", "a");
  if (!out_file) return 0;
  return hook(get_table, NVTX_CBID_CORE2_DomainCreateA, reinterpret_cast<NvtxFunctionPointer>(probe_domain_create)) &&
         hook(get_table, NVTX_CBID_CORE2_DomainRangePushEx, reinterpret_cast<NvtxFunctionPointer>(probe_push)) &&
         hook(get_table, NVTX_CBID_CORE2_DomainRangePop, reinterpret_cast<NvtxFunctionPointer>(probe_pop));
}
