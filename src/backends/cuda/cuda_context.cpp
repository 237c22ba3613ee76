// CudaContext: one execution context on the GPU. prepare() resolves shapes on the host, decides where every
// value lives (weights, the activation arena, caller I/O buffers, or an alias of another value) and packs the
// arena from value lifetimes; enqueue() then only launches kernels on the caller's stream.
#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>

#include "backends/cpu/cpu_executor.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/dnn_matmul.h"
#include "common/nvtx.h"
#include "runtime/concat_inplace.h"
#include "runtime/memory_plan.h"
#include "runtime/shape_resolver.h"

namespace kiln::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 64ull << 20;

// Candidates the tuner meant to time as CUDA-graph replays but timed on the stream (they could not be captured).
std::atomic<int64_t> g_graph_timing_fallbacks{0};

std::string where(const runtime::PlanNode& n) { return "layer '" + n.name + "' (" + n.op_type + ")"; }

// The runtime API cannot tell how large an allocation is; the driver's cuMemGetAddressRange can, and the
// runtime hands out driver entry points without linking libcuda. Null when the driver does not offer one.
void* driver_fn(const char* name) {
  void* f = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(name, &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return f;
}
using AddressRangeFn = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
using RetainHandleFn = CUresult (*)(CUmemGenericAllocationHandle*, void*);
using ReleaseFn = CUresult (*)(CUmemGenericAllocationHandle);

// Bytes from `addr` to the end of the device allocation it lies in; -1 when unknown.
int64_t bytes_to_allocation_end(void* addr) {
  static const auto range = reinterpret_cast<AddressRangeFn>(driver_fn("cuMemGetAddressRange"));
  CUdeviceptr base = 0;
  size_t size = 0;
  const auto a = reinterpret_cast<CUdeviceptr>(addr);
  if (!range || range(&base, &size, a) != CUDA_SUCCESS) return -1;
  return static_cast<int64_t>(base + size - a);
}

// Memory mapped with the virtual memory API (PyTorch's expandable segments) is several allocations mapped back to
// back, so a buffer may rightly cross from one into the next: its extent is unknown. Asked only when a buffer
// looks too small, since the retain call fails (an API error that compute-sanitizer reports) for cudaMalloc memory.
bool is_vmm_mapping(void* addr) {
  static const auto retain = reinterpret_cast<RetainHandleFn>(driver_fn("cuMemRetainAllocationHandle"));
  static const auto release = reinterpret_cast<ReleaseFn>(driver_fn("cuMemRelease"));
  if (!retain || !release) return true;  // cannot tell: do not reject
  CUmemGenericAllocationHandle h{};
  if (retain(&h, addr) != CUDA_SUCCESS) return false;
  release(h);
  return true;
}

struct WeightRotation;

class CudaContext final : public runtime::DeviceContext {
 public:
  CudaContext(std::shared_ptr<const runtime::EnginePlan> plan, std::shared_ptr<DeviceWeights> weights)
      : plan_(std::move(plan)), weights_(std::move(weights)) {}

  ~CudaContext() override {
    // The captured graph first: its nodes launch the kernels of the plans the kernel states own.
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    steps_.clear();  // kernel states (cuDNN execution plans among them) before the handles they were built with
    for (auto& b : host_io_) if (b.ptr) cudaFree(b.ptr);
    if (arena_) cudaFree(arena_);
    if (handles_.workspace) cudaFree(handles_.workspace);
    if (handles_.lt) cublasLtDestroy(handles_.lt);
    if (handles_.dnn) DnnMatmul::release_handle(handles_.dnn);  // the plans kept for it, before the handle
    if (handles_.dnn) cudnnDestroy(handles_.dnn);
    for (auto e : events_) cudaEventDestroy(e);
    if (stream_) cudaStreamDestroy(stream_);
  }

  Status init() {
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    KILN_CUBLAS_CHECK(cublasLtCreate(&handles_.lt));
    KILN_CUDNN_CHECK(cudnnCreate(&handles_.dnn));
    int dev = 0;
    KILN_CUDA_CHECK(cudaGetDevice(&dev));
    device_ = dev;
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&handles_.sm_count, cudaDevAttrMultiProcessorCount, dev));
    // The builder's workspace limit (--memPoolSize=workspace:N) caps the scratch memory: candidates that need
    // more (cuDNN algorithms, cuBLASLt heuristics) are not offered; without one, kWorkspaceBytes.
    size_t ws_bytes = kWorkspaceBytes;
    if (auto it = plan_->metadata.find("workspace_limit"); it != plan_->metadata.end())
      ws_bytes = std::min<size_t>(kWorkspaceBytes, std::max<size_t>(std::stoull(it->second), 256));
    KILN_RETURN_IF_ERROR(device_alloc(&handles_.workspace, ws_bytes, "the kernel workspace"));
    handles_.workspace_bytes = ws_bytes;
    auto flags = plan_->metadata.find("builder_flags");
    handles_.allow_tf32 = flags != plan_->metadata.end() && flags->second.find("tf32") != std::string::npos;
    // Size the arena once for the largest shapes the engine accepts, so later shape changes reuse it.
    std::vector<Dims> max_shapes;
    for (int i : plan_->inputs) {
      int v = plan_->io[i].value;
      Dims d = ops::static_dims(plan_->values[v].shape);
      if (!plan_->profiles.empty()) {
        auto it = plan_->profiles[0].find(v);
        if (it != plan_->profiles[0].end()) d = it->second.max;
      }
      max_shapes.push_back(d);
    }
    bool all_known = true;
    for (auto& d : max_shapes) all_known &= volume(d) >= 0;
    if (all_known) KILN_RETURN_IF_ERROR(prepare(max_shapes));
    return Status::Ok();
  }

  Status prepare(const std::vector<Dims>& input_shapes) override;
  Status enqueue(const std::vector<void*>& io, void* stream) override;
  Status enqueue_graph(const std::vector<void*>& io, void* stream) override;
  Status run_host(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) override;
  Status synchronize(void* stream) override {
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream ? static_cast<cudaStream_t>(stream) : stream_));
    return Status::Ok();
  }
  uint64_t arena_bytes() const override { return arena_capacity_; }
  uint64_t activation_bytes() const override { return activation_bytes_; }
  void set_profiler(IProfiler* p) override { profiler_ = p; }
  Status tune(const runtime::TuneOptions& options, runtime::TimingEntries& cache,
              std::vector<runtime::TacticChoice>* choices,
              const std::function<void(int, int)>& progress) override;
  Result<double> time_engine(int iters, int repeats) override;

 private:
  // kSlice: bytes at `offset` inside value `alias` (an input of an eliminated Concat, inside its output; that
  // output may itself be a kSlice of an outer eliminated Concat's).
  enum class Loc : uint8_t { kNone, kWeight, kArena, kIo, kAlias, kSlice };
  struct Slot {
    Loc loc = Loc::kNone;
    uint64_t offset = 0;  // into the arena for kArena, into the `alias` value for kSlice
    int io = -1;     // io index for kIo
    int alias = -1;  // value id for kAlias and kSlice
  };
  struct Step {
    const runtime::PlanNode* node = nullptr;
    const KernelDef* kernel = nullptr;  // null: runs on the host
    bool copy_out = false;              // an alias whose output is an engine output: copy instead
    bool in_place = false;              // an eliminated Concat: its producers wrote the output, nothing to launch
    std::shared_ptr<void> state;
    std::string tactic;                 // the builder's choice ("kiln.tactic"), empty: the kernel's default
  };

  Status device_alloc(void** p, size_t bytes, const std::string& what) {
    cudaError_t e = cudaMalloc(p, bytes);
    if (e == cudaSuccess) return Status::Ok();
    *p = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    return Status(ErrorCode::kOutOfMemory, "out of GPU memory allocating " + std::to_string(bytes) + " bytes for " +
                                               what + " (" + std::to_string(free_b) + " bytes free of " +
                                               std::to_string(total_b) + ")");
  }

  void* ptr(int v, const std::vector<void*>& io) const {
    const Slot& s = slots_[v];
    switch (s.loc) {
      case Loc::kWeight: {  // empty constants have no device bytes
        auto it = weights_->by_value.find(v);
        return it == weights_->by_value.end() ? nullptr : it->second;
      }
      case Loc::kArena: return static_cast<uint8_t*>(arena_) + s.offset;
      case Loc::kIo: return io[s.io];
      case Loc::kAlias: return ptr(s.alias, io);
      case Loc::kSlice: return static_cast<uint8_t*>(ptr(s.alias, io)) + s.offset;
      default: return nullptr;
    }
  }
  const Tensor* host_of(int v) const {
    if (plan_->values[v].constant.defined()) return &plan_->values[v].constant;
    return host_vals_[v].defined() ? &host_vals_[v] : nullptr;
  }
  Status run_host_step(Step& s, const std::vector<void*>& io, cudaStream_t stream);
  // Points a's tensors at this step's buffers (a.stream and a.handles are the caller's).
  void fill_args(Step& s, const std::vector<void*>& io, KernelArgs& a) const;
  // The layer's identity for the timing cache: op, types, shapes and attributes at the prepared shapes.
  std::string signature(const runtime::PlanNode& n) const;
  // The tuner's CUDA-graph timing of one candidate (TuneOptions::graph_timing); nothing if it cannot be captured.
  // rot: copies of the layer's weights each launch takes in turn (TuneOptions::cold_weights), or null.
  Result<std::optional<double>> time_in_graph(Step& s, KernelArgs& a, int iters, cudaEvent_t e0, cudaEvent_t e1,
                                              const WeightRotation* rot);
  // The copies of a layer's weights for cold-weight timing; null where it has no constant input of 1 MB or more.
  Result<std::unique_ptr<WeightRotation>> weight_rotation(const Step& s, const KernelArgs& a);
  // Device buffers for every I/O tensor at the prepared shapes (the host path's and the tuner's, grown on demand).
  Result<std::vector<void*>> io_buffers();
  // io_buffers() with the inputs filled with timing data (uniform floats, zero integers).
  Result<std::vector<void*>> timing_inputs();
  // Refuses null, host, other-GPU and too-small bindings before any launch. The driver queries cost about a
  // microsecond each, so bindings are checked again only when an address or the shapes change.
  Status check_bindings(const std::vector<void*>& io);

  std::shared_ptr<const runtime::EnginePlan> plan_;
  std::shared_ptr<DeviceWeights> weights_;
  cudaStream_t stream_ = nullptr;
  int device_ = 0;  // the GPU this context's arena and weights live on
  CudaHandles handles_;
  void* arena_ = nullptr;
  uint64_t arena_capacity_ = 0, activation_bytes_ = 0;
  IProfiler* profiler_ = nullptr;
  std::vector<cudaEvent_t> events_;

  // Prepared for the current input shapes.
  bool prepared_ = false, dynamic_ = false;
  std::vector<Dims> prepared_shapes_;
  std::vector<Dims> dims_;        // per value
  std::vector<Tensor> host_vals_;  // per value: contents known on the host (shape tensors)
  std::vector<Slot> slots_;
  std::vector<Step> steps_;
  std::vector<std::pair<int, int>> final_copies_;  // (value, io) outputs not written by a step
  std::string host_layers_;                         // names, for the CUDA-graph error
  uint64_t shape_epoch_ = 0;
  std::vector<void*> checked_io_;  // bindings check_bindings last accepted, for these shapes
  uint64_t checked_epoch_ = ~0ull;

  // CUDA graph of the last enqueue_graph.
  cudaGraphExec_t graph_exec_ = nullptr;
  std::vector<void*> graph_io_;
  uint64_t graph_epoch_ = 0;
  uint64_t warm_epoch_ = 0;
  cudaStream_t graph_stream_ = nullptr;

  // Device buffers of the host convenience path, grown on demand.
  struct Buf { void* ptr = nullptr; size_t bytes = 0; };
  std::vector<Buf> host_io_;
  bool warned_dynamic_ = false;
};

Status CudaContext::prepare(const std::vector<Dims>& input_shapes) {
  if (prepared_ && input_shapes == prepared_shapes_) return Status::Ok();
  const auto& plan = *plan_;
  prepared_ = false;
  KILN_ASSIGN_OR_RETURN(std::vector<ops::TensorInfo> info, runtime::resolve_shapes(plan, input_shapes));
  const size_t nv = plan.values.size();
  dims_.assign(nv, Dims{});
  host_vals_.assign(nv, Tensor());
  slots_.assign(nv, Slot{});
  steps_.clear();
  final_copies_.clear();
  host_layers_.clear();
  dynamic_ = false;
  for (size_t v = 0; v < nv; ++v) {
    if (!info[v].rank_known || !ops::shape_is_static(info[v].shape)) {
      dynamic_ = true;
      continue;
    }
    dims_[v] = ops::static_dims(info[v].shape);
    if (!plan.values[v].constant.defined() && runtime::host_known(info[v])) host_vals_[v] = runtime::host_value(info[v]);
  }
  prepared_shapes_ = input_shapes;
  ++shape_epoch_;
  if (dynamic_) {  // data-dependent shapes: run_host() runs the engine on the host reference kernels
    prepared_ = true;
    return Status::Ok();
  }

  std::vector<int> io_of(nv, -1);
  for (size_t i = 0; i < plan.io.size(); ++i) io_of[plan.io[i].value] = static_cast<int>(i);
  std::vector<bool> is_output(nv, false);
  for (int o : plan.outputs) is_output[plan.io[o].value] = true;

  const int n_nodes = static_cast<int>(plan.nodes.size());
  const int kEnd = n_nodes;
  std::vector<runtime::Lifetime> life(nv);
  std::vector<bool> needs_mem(nv, false);
  std::vector<int> root(nv);
  std::iota(root.begin(), root.end(), 0);
  for (size_t v = 0; v < nv; ++v) {
    if (plan.values[v].constant.defined()) slots_[v].loc = Loc::kWeight;
  }
  for (int i : plan.inputs) slots_[plan.io[i].value] = Slot{Loc::kIo, 0, i, -1};

  auto touch = [&](int v, int t) {
    int r = root[v];
    if (slots_[r].loc != Loc::kArena) return;
    life[r].first = std::min(life[r].first, t);
    life[r].last = std::max(life[r].last, t);
  };
  // Layers whose outputs are all known on the host are not run; nor are layers that only fed them (a Cast
  // back to float32 read only by Shape, say): walk back from the engine outputs.
  std::vector<bool> live(nv, false), runs(n_nodes, false);
  for (int o : plan.outputs) live[plan.io[o].value] = true;
  for (int idx = n_nodes - 1; idx >= 0; --idx) {
    const auto& n = plan.nodes[idx];
    bool all_known = !n.outputs.empty(), needed = false;
    for (int o : n.outputs) {
      all_known &= host_vals_[o].defined() || plan.values[o].constant.defined();
      needed |= live[o];
    }
    if (all_known || !needed) continue;
    runs[idx] = true;
    for (int id : n.inputs)
      if (id >= 0) live[id] = true;
  }
  // Kernels first: whether a Concat is eliminated depends on which layers write their outputs on the device.
  std::vector<const KernelDef*> kernels(n_nodes, nullptr);
  std::vector<bool> device_writer(n_nodes, false), host_known(nv, false), in_place(n_nodes, false);
  for (int idx = 0; idx < n_nodes; ++idx) {
    if (!runs[idx]) continue;
    kernels[idx] = KernelRegistry::instance().find(plan.nodes[idx], plan);
    device_writer[idx] = kernels[idx] && !kernels[idx]->alias;
  }
  for (size_t v = 0; v < nv; ++v) host_known[v] = host_vals_[v].defined();
  // Eliminated Concats: each input lives inside the output (kSlice), so the output's memory is live from its
  // first writer on; reads of an input (or of an alias of it, whose root is then the output) extend it further.
  // A nested concat's output is itself a slice of the outer output (set when the outer one is placed): only the
  // root of the chain gets memory, its lifetime from the earliest writer of any slice nested in it (first_writer).
  for (const runtime::InPlaceConcat& c : runtime::plan_inplace_concats(plan, dims_, device_writer, host_known)) {
    in_place[c.node] = true;
    default_logger().log(ILogger::Severity::kVERBOSE,
                         ("concat '" + plan.nodes[c.node].name + "' is written in place at these shapes").c_str());
    const int out = c.output;
    if (c.root == out && is_output[out]) {
      slots_[out] = Slot{Loc::kIo, 0, io_of[out], -1};
    } else if (c.root == out) {
      slots_[out].loc = Loc::kArena;
      life[out] = {static_cast<uint64_t>(volume(dims_[out])) * dtype_size(plan.values[out].dtype), c.first_writer,
                   c.node};
    }  // else a slice of the outer concat's output, placed with it below
    for (const auto& [v, offset] : c.slices) {
      slots_[v] = Slot{Loc::kSlice, offset, -1, out};
      root[v] = c.root;
    }
  }
  for (int idx = 0; idx < n_nodes; ++idx) {
    const auto& n = plan.nodes[idx];
    if (!runs[idx]) continue;  // known on the host (uploaded below where read) or feeding nothing that runs
    Step s;
    s.node = &n;
    s.kernel = kernels[idx];
    s.in_place = in_place[idx];
    if (const Attribute* t = n.attrs.find("kiln.tactic"); t && t->type() == AttrType::kSTRING) s.tactic = t->s();
    if (!s.kernel) host_layers_ += (host_layers_.empty() ? "" : ", ") + where(n);
    for (int id : n.inputs) {
      if (id < 0) continue;
      if (slots_[id].loc == Loc::kNone) {  // a host-known value read on the device: lives the whole run
        slots_[id].loc = Loc::kArena;
        life[id] = {static_cast<uint64_t>(volume(dims_[id])) * dtype_size(plan.values[id].dtype), 0, kEnd};
      }
      touch(id, idx);
    }
    bool alias = s.kernel && s.kernel->alias;
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      int o = n.outputs[k];
      if (s.in_place || slots_[o].loc == Loc::kSlice) continue;  // placed with the eliminated Concats above
      if (is_output[o]) {
        slots_[o] = Slot{Loc::kIo, 0, io_of[o], -1};
        if (alias && k == 0) s.copy_out = true;
        continue;
      }
      if (alias && k == 0 && n.inputs[0] >= 0) {
        slots_[o] = Slot{Loc::kAlias, 0, -1, n.inputs[0]};
        root[o] = root[n.inputs[0]];
        continue;
      }
      slots_[o].loc = Loc::kArena;
      life[o] = {static_cast<uint64_t>(volume(dims_[o])) * dtype_size(plan.values[o].dtype), idx, idx};
    }
    steps_.push_back(std::move(s));
  }
  // Outputs no step writes (constants, inputs, host-known values) are copied at the end.
  for (int o : plan.outputs) {
    int v = plan.io[o].value;
    if (slots_[v].loc == Loc::kIo && slots_[v].io == o) continue;
    if (slots_[v].loc == Loc::kNone) {  // host-known, read by no step
      slots_[v].loc = Loc::kArena;
      life[v] = {static_cast<uint64_t>(volume(dims_[v])) * dtype_size(plan.values[v].dtype), 0, kEnd};
    }
    touch(v, kEnd);
    final_copies_.emplace_back(v, o);
  }
  // Reads through aliases keep the root alive.
  for (int idx = 0; idx < n_nodes; ++idx)
    for (int id : plan.nodes[idx].inputs)
      if (id >= 0) touch(id, idx);

  std::vector<runtime::Lifetime> arena_life(nv);
  for (size_t v = 0; v < nv; ++v)
    if (slots_[v].loc == Loc::kArena) arena_life[v] = life[v];
  runtime::MemoryPlan mp = runtime::plan_memory(arena_life);
  for (size_t v = 0; v < nv; ++v)
    if (slots_[v].loc == Loc::kArena) slots_[v].offset = mp.offsets[v];
  activation_bytes_ = mp.total_bytes;
  if (mp.arena_bytes > arena_capacity_) {
    if (arena_) cudaFree(arena_);
    arena_ = nullptr;
    arena_capacity_ = 0;
    KILN_RETURN_IF_ERROR(device_alloc(&arena_, mp.arena_bytes, "the activation arena"));
    arena_capacity_ = mp.arena_bytes;
  }
  // Upload host-known values (shape tensors) that the device reads.
  for (size_t v = 0; v < nv; ++v) {
    if (slots_[v].loc != Loc::kArena || !host_vals_[v].defined() || host_vals_[v].nbytes() == 0) continue;
    KILN_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(arena_) + slots_[v].offset, host_vals_[v].raw(),
                                    host_vals_[v].nbytes(), cudaMemcpyHostToDevice, stream_));
  }
  // Every stream the context later runs on must see these: wait for them here, at prepare time.
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  prepared_ = true;
  return Status::Ok();
}

Status CudaContext::run_host_step(Step& s, const std::vector<void*>& io, cudaStream_t stream) {
  const auto& n = *s.node;
  const auto& plan = *plan_;
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<Tensor> in_t(n.inputs.size());
  std::vector<const Tensor*> in;
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    int id = n.inputs[k];
    if (id < 0) { in.push_back(nullptr); continue; }
    if (const Tensor* h = host_of(id)) { in.push_back(h); continue; }
    in_t[k] = Tensor(plan.values[id].dtype, dims_[id]);
    if (in_t[k].nbytes())
      KILN_CUDA_CHECK(cudaMemcpyAsync(in_t[k].raw(), ptr(id, io), in_t[k].nbytes(), cudaMemcpyDeviceToHost, stream));
    in.push_back(&in_t[k]);
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<Tensor> out(n.outputs.size());
  ops::ComputeContext ctx(n.attrs, n.opset, in, &out, cpu::run_plan_subgraph);
  KILN_RETURN_IF_ERROR(n.schema->compute(ctx).with_context(where(n) + " on the host"));
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    int o = n.outputs[k];
    if (!out[k].defined()) continue;
    if (out[k].shape() != dims_[o] || out[k].dtype() != plan.values[o].dtype)
      return internal_error(where(n) + " produced " + dims_to_string(out[k].shape()) + " but shape resolution gave " +
                            dims_to_string(dims_[o]));
    // On the run's stream (not the legacy default stream, which a non-blocking stream does not wait for), and
    // waited for: the host tensor dies when this step returns.
    if (out[k].nbytes())
      KILN_CUDA_CHECK(cudaMemcpyAsync(ptr(o, io), out[k].raw(), out[k].nbytes(), cudaMemcpyHostToDevice, stream));
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return Status::Ok();
}

void CudaContext::fill_args(Step& s, const std::vector<void*>& io, KernelArgs& a) const {
  const auto& plan = *plan_;
  const auto& n = *s.node;
  a.node = &n;
  a.in.resize(n.inputs.size());
  a.host_in.resize(n.inputs.size());
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    int id = n.inputs[k];
    if (id < 0) { a.in[k] = DevTensor{}; a.host_in[k] = nullptr; continue; }
    a.in[k] = DevTensor{ptr(id, io), plan.values[id].dtype, dims_[id]};
    a.host_in[k] = host_of(id);
  }
  a.out.resize(n.outputs.size());
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    int o = n.outputs[k];
    a.out[k] = DevTensor{ptr(o, io), plan.values[o].dtype, dims_[o]};
  }
  a.state = &s.state;
  a.tactic = s.tactic;
}

std::string CudaContext::signature(const runtime::PlanNode& n) const {
  const auto& plan = *plan_;
  std::string sig = (n.domain.empty() ? "" : n.domain + "::") + n.op_type;
  auto tensors = [&](const std::vector<int>& ids) {
    sig += "(";
    for (int id : ids) {
      if (id < 0) { sig += "-,"; continue; }
      sig += std::string(dtype_name(plan.values[id].dtype)) + dims_to_string(dims_[id]) + ",";
    }
    sig += ")";
  };
  tensors(n.inputs);
  tensors(n.outputs);
  for (const auto& [name, attr] : n.attrs.map()) {
    if (name.rfind(ops::kAnnotationPrefix, 0) == 0) continue;
    sig += " " + name + "=" + attr.to_string();
  }
  return sig;
}

Result<std::vector<void*>> CudaContext::io_buffers() {
  const auto& plan = *plan_;
  host_io_.resize(plan.io.size());
  std::vector<void*> io(plan.io.size(), nullptr);
  for (size_t i = 0; i < plan.io.size(); ++i) {
    int v = plan.io[i].value;
    size_t bytes = std::max<size_t>(static_cast<size_t>(volume(dims_[v])) * dtype_size(plan.values[v].dtype), 256);
    Buf& b = host_io_[i];
    if (b.bytes < bytes || !b.ptr) {
      if (b.ptr) cudaFree(b.ptr);
      b = Buf{};
      KILN_RETURN_IF_ERROR(device_alloc(&b.ptr, bytes, "the I/O buffer of '" + plan.io[i].name + "'"));
      b.bytes = bytes;
    }
    io[i] = b.ptr;
  }
  return io;
}

// Copies of one layer's large constant inputs: copies[c][j] is copy c of input inputs[j] (copy 0: the weights
// themselves; copies 1 and up are freed with the rotation). Enough copies that together they are twice the L2 cache
// (at most 64), so a launch's copy has been pushed out of L2 by the others before its turn comes again.
struct WeightRotation {
  std::vector<int> inputs;
  std::vector<std::vector<void*>> copies;
  WeightRotation() = default;
  WeightRotation(const WeightRotation&) = delete;
  WeightRotation& operator=(const WeightRotation&) = delete;
  ~WeightRotation() {
    for (size_t c = 1; c < copies.size(); ++c)
      for (void* p : copies[c]) cudaFree(p);
  }
};

Result<std::unique_ptr<WeightRotation>> CudaContext::weight_rotation(const Step& s, const KernelArgs& a) {
  constexpr size_t kMinBytes = size_t{1} << 20;
  auto rot = std::make_unique<WeightRotation>();
  std::vector<void*> first;
  size_t bytes = 0;
  for (size_t k = 0; k < s.node->inputs.size() && k < a.in.size(); ++k) {
    const int id = s.node->inputs[k];
    if (id < 0 || !plan_->values[id].constant.defined() || a.in[k].nbytes() < kMinBytes) continue;
    rot->inputs.push_back(static_cast<int>(k));
    first.push_back(a.in[k].data);
    bytes += a.in[k].nbytes();
  }
  if (rot->inputs.empty()) return std::unique_ptr<WeightRotation>();
  int l2 = 0;
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device_));
  const size_t want = std::clamp<size_t>(2 * static_cast<size_t>(l2) / bytes + 1, 2, 64);
  rot->copies.push_back(first);
  while (rot->copies.size() < want) {
    std::vector<void*>& copy = rot->copies.emplace_back();  // freed with the rotation, even while incomplete
    for (size_t j = 0; j < rot->inputs.size(); ++j) {
      void* p = nullptr;
      const DevTensor& w = a.in[rot->inputs[j]];
      if (cudaMalloc(&p, w.nbytes()) != cudaSuccess) {  // short of memory: time with the complete copies made so far
        cudaGetLastError();
        for (void* q : copy) cudaFree(q);
        rot->copies.pop_back();
        return rot;
      }
      copy.push_back(p);
      KILN_CUDA_CHECK(cudaMemcpyAsync(p, w.data, w.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    }
  }
  return rot;
}

// One candidate's time per launch as a CUDA-graph replay: `iters` launches captured into a graph, instantiated,
// replayed once (the first launch of an instantiated graph uploads it), then timed over kGraphReplays replays.
// Nothing (not an error) when the candidate cannot be captured (a kernel that synchronizes or allocates while
// running): the caller times it on the stream. CUDA errors outside the capture are errors.
Result<std::optional<double>> CudaContext::time_in_graph(Step& s, KernelArgs& a, int iters, cudaEvent_t e0,
                                                         cudaEvent_t e1, const WeightRotation* rot) {
  constexpr int kGraphReplays = 3;
  // With a rotation, every copy is read once per replay (so at least as many launches as copies).
  const int ncopies = rot ? static_cast<int>(rot->copies.size()) : 1;
  if (ncopies > 1) iters = std::max(iters, ncopies);
  auto use_copy = [&](int c) {
    if (ncopies > 1)
      for (size_t j = 0; j < rot->inputs.size(); ++j) a.in[rot->inputs[j]].data = rot->copies[c][j];
  };
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::shared_ptr<void> guard(nullptr, [&](void*) {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  });
  if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return std::optional<double>();
  }
  Status st;
  for (int it = 0; it < iters && st.ok(); ++it) {
    use_copy(it % ncopies);
    st = s.kernel->run(a);
  }
  use_copy(0);
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  // A capture that recorded no work (a run that launched nothing on the stream) would time as free: stream timing.
  size_t nodes = 0;
  const bool empty = graph && (cudaGraphGetNodes(graph, nullptr, &nodes) != cudaSuccess || nodes == 0);
  if (!st.ok() || ended != cudaSuccess || !graph || empty || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
    cudaGetLastError();  // an invalidated capture leaves its error behind
    // A kernel that failed inside the capture may have left its state half set up: set up again on the stream.
    s.state.reset();
    if (!s.kernel->run(a).ok() || cudaStreamSynchronize(stream_) != cudaSuccess) cudaGetLastError();
    return std::optional<double>();
  }
  KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
  KILN_CUDA_CHECK(cudaEventRecord(e0, stream_));
  for (int r = 0; r < kGraphReplays; ++r) KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
  KILN_CUDA_CHECK(cudaEventRecord(e1, stream_));
  KILN_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  return std::optional<double>(static_cast<double>(ms) / (static_cast<double>(iters) * kGraphReplays));
}

// Time on realistic data, not zeros (which can run faster than real values): float inputs get uniform values in
// [-1, 1], integer inputs (token ids, indices) zeros, which are valid for any table. The tuner's and
// time_engine's I/O buffers.
Result<std::vector<void*>> CudaContext::timing_inputs() {
  KILN_ASSIGN_OR_RETURN(std::vector<void*> io, io_buffers());
  uint32_t seed = 12345;
  for (int i : plan_->inputs) {
    const int v = plan_->io[i].value;
    const DataType dt = plan_->values[v].dtype;
    const int64_t n = volume(dims_[v]);
    Tensor t(dt, dims_[v]);
    if (dt == DataType::kFLOAT || dt == DataType::kHALF || dt == DataType::kBF16) {
      Tensor f(DataType::kFLOAT, dims_[v]);
      for (int64_t k = 0; k < n; ++k) {
        seed = seed * 1664525u + 1013904223u;
        f.data<float>()[k] = static_cast<float>(seed >> 8) / static_cast<float>(1 << 23) - 1.0f;
      }
      t = dt == DataType::kFLOAT ? f : f.cast(dt);
    } else if (t.nbytes()) {
      std::memset(t.raw(), 0, t.nbytes());
    }
    if (t.nbytes()) KILN_CUDA_CHECK(cudaMemcpy(io[i], t.raw(), t.nbytes(), cudaMemcpyHostToDevice));
  }
  return io;
}

Result<double> CudaContext::time_engine(int iters, int repeats) {
  if (!prepared_ || dynamic_) return unsupported("an engine with data-dependent shapes cannot be timed as a whole");
  KILN_ASSIGN_OR_RETURN(std::vector<void*> io, timing_inputs());
  const bool graph = host_layers_.empty() && !profiler_;
  auto run = [&]() -> Status { return graph ? enqueue_graph(io, stream_) : enqueue(io, stream_); };
  KILN_RETURN_IF_ERROR(run().with_context("the run before timing the engine"));
  KILN_RETURN_IF_ERROR(run());
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  KILN_CUDA_CHECK(cudaEventCreate(&e0));
  KILN_CUDA_CHECK(cudaEventCreate(&e1));
  std::shared_ptr<void> guard(nullptr, [&](void*) { cudaEventDestroy(e0); cudaEventDestroy(e1); });
  std::vector<double> times;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    KILN_CUDA_CHECK(cudaEventRecord(e0, stream_));
    for (int i = 0; i < std::max(1, iters); ++i) KILN_RETURN_IF_ERROR(run());
    KILN_CUDA_CHECK(cudaEventRecord(e1, stream_));
    KILN_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    times.push_back(ms / std::max(1, iters));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

Status CudaContext::tune(const runtime::TuneOptions& options, runtime::TimingEntries& cache,
                         std::vector<runtime::TacticChoice>* choices, const std::function<void(int, int)>& progress) {
  if (!prepared_ || dynamic_) return Status::Ok();  // nothing to time without static shapes
  KILN_ASSIGN_OR_RETURN(std::vector<void*> io, timing_inputs());
  // One full run fills every activation the timed layers read.
  KILN_RETURN_IF_ERROR(enqueue(io, stream_).with_context("the run before tactic timing"));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  KILN_CUDNN_CHECK(cudnnSetStream(handles_.dnn, stream_));
  const int by_level[] = {1, 2, 4, 8, 16, 1 << 20};
  const int level = std::clamp(options.level, 0, 5);
  const int max_timed = options.max_tactics > 0 ? options.max_tactics : by_level[level];
  const int iters = std::max(1, options.avg_timing);
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  KILN_CUDA_CHECK(cudaEventCreate(&e0));
  KILN_CUDA_CHECK(cudaEventCreate(&e1));
  std::shared_ptr<void> guard(nullptr, [&](void*) { cudaEventDestroy(e0); cudaEventDestroy(e1); });
  std::vector<Step*> tunable;
  for (Step& s : steps_)
    if (s.kernel && !s.kernel->alias && !s.in_place && s.kernel->tactics) tunable.push_back(&s);
  int done = 0;
  // Annotations already stored with an earlier layer (name and value): stored once (see KernelDef::annotations).
  std::set<std::pair<std::string, std::string>> annotated;
  for (Step* sp : tunable) {
    Step& s = *sp;
    KernelArgs a;
    a.stream = stream_;
    a.handles = &handles_;
    fill_args(s, io, a);
    a.max_timed = level == 0 || options.max_tactics == 0 ? 1 : max_timed;
    const std::string key = signature(*s.node);
    auto hit = cache.find(key);
    std::unique_ptr<WeightRotation> rotation;
    a.cached_tactic = hit != cache.end() ? hit->second.first : "";
    std::vector<std::string> candidates = s.kernel->tactics(a);
    a.cached_tactic.clear();
    if (progress) progress(++done, static_cast<int>(tunable.size()));
    if (candidates.empty()) continue;
    runtime::TacticChoice c;
    c.layer = s.node->name;
    c.key = key;
    c.candidates = static_cast<int>(candidates.size());
    // The timed winner's state, kept until its annotations are made: a cuDNN conv graph plan lives only while a
    // layer state holds it (dnn_conv.cpp), so without it fused_conv_annotations would compile the plan again.
    std::shared_ptr<void> winner_state;
    if (hit != cache.end() && std::find(candidates.begin(), candidates.end(), hit->second.first) != candidates.end()) {
      c.tactic = hit->second.first;
      c.ms = hit->second.second;
      c.from_cache = true;
    } else if (level == 0 || options.max_tactics == 0 || candidates.size() == 1) {
      c.tactic = candidates[0];
    } else {
      double best = 0;
      if (options.graph_timing && options.cold_weights) {
        KILN_ASSIGN_OR_RETURN(rotation, weight_rotation(s, a));
      }
      for (size_t k = 0; k < candidates.size() && c.timed < max_timed; ++k) {
        s.state.reset();
        a.tactic = candidates[k];
        a.strict_tactic = true;
        // A candidate that cannot run these shapes (workspace, alignment) is skipped, not fatal.
        if (!s.kernel->run(a).ok() || cudaStreamSynchronize(stream_) != cudaSuccess) {
          cudaGetLastError();
          continue;
        }
        std::optional<double> graph_ms;
        if (options.graph_timing) {
          KILN_ASSIGN_OR_RETURN(graph_ms, time_in_graph(s, a, iters, e0, e1, rotation.get()));
          if (!graph_ms) {
            g_graph_timing_fallbacks.fetch_add(1);
            default_logger().log(
                ILogger::Severity::kVERBOSE,
                (where(*s.node) + ": tactic " + a.tactic + " cannot be captured in a CUDA graph; timed on the stream")
                    .c_str());
          }
        }
        double avg = 0;
        if (graph_ms) {
          avg = *graph_ms;
        } else {
          KILN_CUDA_CHECK(cudaEventRecord(e0, stream_));
          Status st;
          for (int it = 0; it < iters && st.ok(); ++it) st = s.kernel->run(a);
          KILN_CUDA_CHECK(cudaEventRecord(e1, stream_));
          KILN_CUDA_CHECK(cudaEventSynchronize(e1));
          if (!st.ok()) continue;
          float ms = 0;
          KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
          avg = ms / iters;
        }
        ++c.timed;
        c.timings.emplace_back(candidates[k], avg);
        if (c.tactic.empty() || avg < best) {
          best = avg;
          c.tactic = candidates[k];
          winner_state = s.state;
        }
      }
      if (c.tactic.empty()) c.tactic = candidates[0];
      c.ms = best;
      cache[c.key] = {c.tactic, c.ms};
    }
    s.tactic = c.tactic;
    s.state.reset();
    if (s.kernel->annotations) {
      a.tactic = c.tactic;
      a.strict_tactic = false;
      for (auto& an : s.kernel->annotations(a))
        if (annotated.insert(an).second) c.annotations.push_back(std::move(an));
    }
    choices->push_back(std::move(c));
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return Status::Ok();
}

Status CudaContext::check_bindings(const std::vector<void*>& io) {
  if (io == checked_io_ && checked_epoch_ == shape_epoch_) return Status::Ok();
  const auto& plan = *plan_;
  // Host pointers bound by mistake, or device buffers too small for the bound shape, would fault (or corrupt
  // a neighbour) inside a kernel; refuse them before any launch.
  for (size_t i = 0; i < io.size(); ++i) {
    const std::string what =
        std::string(plan.io[i].mode == TensorIOMode::kINPUT ? "input '" : "output '") + plan.io[i].name + "'";
    if (!io[i]) return invalid_argument(what + " is bound to a null address; bind a device buffer");
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, io[i]) != cudaSuccess) cudaGetLastError();
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
      return invalid_argument(what + " is bound to an address that is not GPU memory; the CUDA backend "
                              "needs device buffers (or use infer() with host data)");
    if (attr.type == cudaMemoryTypeDevice && attr.device != device_)
      return invalid_argument(what + " is on GPU " + std::to_string(attr.device) + " but this context runs on GPU " +
                              std::to_string(device_) + "; bind memory of that GPU (or create the context with "
                              "GPU " + std::to_string(attr.device) + " current)");
    const int v = plan.io[i].value;
    const uint64_t need = static_cast<uint64_t>(volume(dims_[v])) * dtype_size(plan.values[v].dtype);
    // Checked against the whole allocation the address lies in (a pooled allocator's block, for PyTorch), so
    // this catches overruns past the allocation only; staying inside one's own slice is the caller's duty.
    if (need == 0) continue;
    const int64_t room = bytes_to_allocation_end(io[i]);
    if (room >= 0 && need > static_cast<uint64_t>(room) && !is_vmm_mapping(io[i]))
      return invalid_argument(what + " needs " + std::to_string(need) + " bytes (shape " + dims_to_string(dims_[v]) +
                              ") but its device allocation ends " + std::to_string(room) +
                              " bytes after the bound address");
  }
  checked_io_ = io;
  checked_epoch_ = shape_epoch_;
  return Status::Ok();
}

Status CudaContext::enqueue(const std::vector<void*>& io, void* stream_handle) {
  if (!prepared_) return internal_error("enqueue before prepare");
  if (dynamic_)
    return unsupported("this engine has shapes that depend on the input data; run it with infer() (the host "
                       "convenience path) on the CUDA backend");
  const auto& plan = *plan_;
  cudaStream_t stream = stream_handle ? static_cast<cudaStream_t>(stream_handle) : stream_;
  // Checked here unless capturing: enqueue_graph checks before it captures, and the driver query below is
  // better kept out of a capture.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  KILN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture == cudaStreamCaptureStatusNone) KILN_RETURN_IF_ERROR(check_bindings(io));
  // NVTX ranges named after the layers are always on (common/nvtx.h): under Nsight Systems each layer's kernels
  // sit under its name. They are host-side only, so CUDA graph capture ignores them.
  nvtx::Range run_range("kiln enqueue");
  KILN_CUDNN_CHECK(cudnnSetStream(handles_.dnn, stream));
  const bool profile = profiler_ != nullptr;
  if (profile && events_.size() < steps_.size() + 1) {
    for (size_t i = events_.size(); i < steps_.size() + 1; ++i) {
      cudaEvent_t e;
      KILN_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
  }
  if (profile) KILN_CUDA_CHECK(cudaEventRecord(events_[0], stream));
  KernelArgs a;
  a.stream = stream;
  a.handles = &handles_;
  for (size_t si = 0; si < steps_.size(); ++si) {
    Step& s = steps_[si];
    const auto& n = *s.node;
    nvtx::Range layer_range(n.name.c_str());
    if (s.in_place) {
      // Nothing to copy: the producers wrote each input into its slice of the output.
    } else if (!s.kernel) {
      KILN_RETURN_IF_ERROR(run_host_step(s, io, stream));
    } else if (s.kernel->alias) {
      if (s.copy_out) {
        int o = n.outputs[0];
        size_t bytes = static_cast<size_t>(volume(dims_[o])) * dtype_size(plan.values[o].dtype);
        if (bytes)
          KILN_CUDA_CHECK(cudaMemcpyAsync(ptr(o, io), ptr(n.inputs[0], io), bytes, cudaMemcpyDeviceToDevice, stream));
      }
    } else {
      fill_args(s, io, a);
      Status st = s.kernel->run(a);
      if (!st.ok()) return st.with_context(where(n));
    }
    if (profile) KILN_CUDA_CHECK(cudaEventRecord(events_[si + 1], stream));
  }
  for (auto [v, o] : final_copies_) {
    size_t bytes = static_cast<size_t>(volume(dims_[v])) * dtype_size(plan.values[v].dtype);
    if (bytes) KILN_CUDA_CHECK(cudaMemcpyAsync(io[o], ptr(v, io), bytes, cudaMemcpyDeviceToDevice, stream));
  }
  if (profile) {
    KILN_CUDA_CHECK(cudaEventSynchronize(events_[steps_.size()]));
    for (size_t si = 0; si < steps_.size(); ++si) {
      float ms = 0;
      KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[si], events_[si + 1]));
      profiler_->report_layer_time(steps_[si].node->name.c_str(), ms);
    }
  }
  return Status::Ok();
}

Status CudaContext::enqueue_graph(const std::vector<void*>& io, void* stream_handle) {
  if (!prepared_) return internal_error("enqueue before prepare");
  if (!host_layers_.empty())
    return unsupported("CUDA graphs need every layer on the GPU, but these run on the host: " + host_layers_);
  if (profiler_) return unsupported("CUDA graphs and the per-layer profiler cannot be combined");
  KILN_RETURN_IF_ERROR(check_bindings(io));
  cudaStream_t stream = stream_handle ? static_cast<cudaStream_t>(stream_handle) : stream_;
  if (!graph_exec_ || io != graph_io_ || graph_epoch_ != shape_epoch_ || graph_stream_ != stream) {
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    graph_exec_ = nullptr;
    // One plain run first: kernels pick (and time) their algorithms on a first run, which capture forbids.
    if (warm_epoch_ != shape_epoch_) {
      KILN_RETURN_IF_ERROR(enqueue(io, stream));
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      warm_epoch_ = shape_epoch_;
    }
    KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    Status st = enqueue(io, stream);
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream, &graph);
    if (!st.ok()) {
      if (graph) cudaGraphDestroy(graph);
      return st.with_context("while capturing a CUDA graph");
    }
    KILN_CUDA_CHECK(e);
    e = cudaGraphInstantiate(&graph_exec_, graph, 0);
    cudaGraphDestroy(graph);
    KILN_CUDA_CHECK(e);
    graph_io_ = io;
    graph_epoch_ = shape_epoch_;
    graph_stream_ = stream;
  }
  KILN_CUDA_CHECK(cudaGraphLaunch(graph_exec_, stream));
  return Status::Ok();
}

Status CudaContext::run_host(const std::vector<Tensor>& inputs, std::vector<Tensor>* outputs) {
  const auto& plan = *plan_;
  std::vector<Dims> shapes;
  for (const auto& t : inputs) shapes.push_back(t.shape());
  KILN_RETURN_IF_ERROR(prepare(shapes));
  if (dynamic_) {
    if (!warned_dynamic_) {
      warned_dynamic_ = true;
      default_logger().log(ILogger::Severity::kWARNING,
                           "engine has data-dependent shapes: this run uses the host reference kernels");
    }
    cpu::CpuExecutor ex(plan);
    return ex.run(inputs, outputs);
  }
  // prepare() resolved every I/O shape: one device buffer each, grown on demand and kept for later runs.
  KILN_ASSIGN_OR_RETURN(std::vector<void*> io, io_buffers());
  for (size_t k = 0; k < plan.inputs.size(); ++k) {
    int i = plan.inputs[k];
    if (inputs[k].nbytes())
      KILN_CUDA_CHECK(cudaMemcpyAsync(io[i], inputs[k].raw(), inputs[k].nbytes(), cudaMemcpyHostToDevice, stream_));
  }
  outputs->clear();
  for (int o : plan.outputs) {
    int v = plan.io[o].value;
    outputs->emplace_back(plan.values[v].dtype, dims_[v]);
  }
  KILN_RETURN_IF_ERROR(enqueue(io, stream_));
  for (size_t k = 0; k < plan.outputs.size(); ++k) {
    Tensor& t = (*outputs)[k];
    if (t.nbytes())
      KILN_CUDA_CHECK(cudaMemcpyAsync(t.raw(), io[plan.outputs[k]], t.nbytes(), cudaMemcpyDeviceToHost, stream_));
  }
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return Status::Ok();
}

}  // namespace

int64_t graph_timing_fallbacks() { return g_graph_timing_fallbacks.load(); }

std::unique_ptr<runtime::DeviceContext> make_context(std::shared_ptr<const runtime::EnginePlan> plan,
                                                     std::shared_ptr<DeviceWeights> weights, Status* status) {
  auto ctx = std::make_unique<CudaContext>(std::move(plan), std::move(weights));
  *status = ctx->init();
  if (!status->ok()) return nullptr;
  return ctx;
}

}  // namespace kiln::cuda
