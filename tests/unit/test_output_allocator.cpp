// Output allocator tests: data-dependent outputs (NonZero, TopK with a run-time k, Unique) through execute().
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kiln/builder.h"
#include "kiln/network.h"
#include "kiln/runtime.h"

using namespace kiln;

namespace {

class QuietLog : public ILogger {
 public:
  void log(Severity, const char*) noexcept override {}
};

struct ReallocCall {
  std::string name;
  void* current;
  uint64_t size;
  uint64_t alignment;
  void* returned;
};

// Grows its buffer only when a run needs more, so tests can see both reuse and reallocation.
class RecordingAllocator : public IOutputAllocator {
 public:
  void* reallocate_output(const char* tensor_name, void* current_memory, uint64_t size_bytes,
                          uint64_t alignment) noexcept override {
    void* result = nullptr;
    if (!fail) {
      auto& buf = buffers_[tensor_name];
      if (!buf || capacity_[tensor_name] < size_bytes) {
        // Replace rather than resize: a new address shows the runtime takes what we return.
        auto fresh = std::make_unique<uint8_t[]>(size_bytes + 1);
        retired_.push_back(std::move(buf));
        buf = std::move(fresh);
        capacity_[tensor_name] = size_bytes;
      }
      result = buf.get();
    }
    calls.push_back({tensor_name, current_memory, size_bytes, alignment, result});
    return result;
  }
  void notify_shape(const char* tensor_name, const Dims& dims) noexcept override { shapes[tensor_name] = dims; }

  template <typename T>
  std::vector<T> values(const std::string& name) const {
    auto it = shapes.find(name);
    if (it == shapes.end()) return {};
    std::vector<T> v(static_cast<size_t>(volume(it->second)));
    if (!v.empty()) std::memcpy(v.data(), buffers_.at(name).get(), v.size() * sizeof(T));
    return v;
  }

  bool fail = false;
  std::vector<ReallocCall> calls;
  std::map<std::string, Dims> shapes;

 private:
  std::map<std::string, std::unique_ptr<uint8_t[]>> buffers_;
  std::map<std::string, uint64_t> capacity_;
  std::vector<std::unique_ptr<uint8_t[]>> retired_;  // kept so old addresses stay distinct from new ones
};

// Builds a network with `make` and returns its engine.
template <typename F>
std::unique_ptr<Engine> build_engine(F&& make) {
  QuietLog log;
  Builder builder(log);
  auto net = builder.create_network();
  if (!make(*net)) {
    ADD_FAILURE() << net->last_error().to_string();
    return nullptr;
  }
  auto bytes = builder.build_serialized_network(*net, *builder.create_builder_config());
  EXPECT_TRUE(bytes.ok()) << bytes.status().to_string();
  if (!bytes.ok()) return nullptr;
  Runtime rt(log);
  auto e = rt.deserialize_engine(bytes->data(), bytes->size());
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

// x[5] float -> NonZero -> [1, nnz] int64.
std::unique_ptr<Engine> nonzero_engine() {
  return build_engine([](NetworkDefinition& net) {
    ITensor* x = net.add_input("x", DataType::kFLOAT, {5});
    auto nz = net.add_op("NonZero", {x});
    return nz.size() == 1 && net.mark_output(nz[0]).ok();
  });
}

bool contains(const Status& st, const std::string& s) { return st.message().find(s) != std::string::npos; }

}  // namespace

TEST(OutputAllocator, NonZeroThroughExecute) {
  auto e = nonzero_engine();
  ASSERT_TRUE(e);
  const std::string out = e->get_tensor_name(1);
  auto ctx = e->create_execution_context();
  std::vector<float> x = {0, 1.5f, 0, -2, 3};
  RecordingAllocator alloc;
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_output_allocator(out, &alloc).ok());
  EXPECT_EQ(ctx->get_output_allocator(out), &alloc);
  EXPECT_EQ(ctx->get_tensor_shape(out).value(), (Dims{1, -1}));

  Status st = ctx->execute();  // no address bound for the output: the allocator provides it
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(alloc.calls.size(), 1u);
  EXPECT_EQ(alloc.calls[0].name, out);
  EXPECT_EQ(alloc.calls[0].current, nullptr);
  EXPECT_EQ(alloc.calls[0].size, 3 * sizeof(int64_t));
  EXPECT_GE(alloc.calls[0].alignment, alignof(int64_t));
  EXPECT_EQ(alloc.shapes[out], (Dims{1, 3}));
  EXPECT_EQ(alloc.values<int64_t>(out), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(ctx->get_tensor_shape(out).value(), (Dims{1, 3}));
}

TEST(OutputAllocator, GrowingOutputReallocatesAndShrinkingReuses) {
  auto e = nonzero_engine();
  ASSERT_TRUE(e);
  const std::string out = e->get_tensor_name(1);
  auto ctx = e->create_execution_context();
  std::vector<float> x = {0, 0, 7, 0, 0};
  RecordingAllocator alloc;
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_output_allocator(out, &alloc).ok());
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_EQ(alloc.values<int64_t>(out), (std::vector<int64_t>{2}));

  // Same input shape, other data: the output grows from 1 to 4 elements.
  x = {1, 2, 0, 4, 5};
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  Status st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(alloc.calls.size(), 2u);
  EXPECT_EQ(alloc.calls[1].current, alloc.calls[0].returned);
  EXPECT_EQ(alloc.calls[1].size, 4 * sizeof(int64_t));
  EXPECT_NE(alloc.calls[1].returned, alloc.calls[0].returned);
  EXPECT_EQ(alloc.shapes[out], (Dims{1, 4}));
  EXPECT_EQ(alloc.values<int64_t>(out), (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(ctx->get_tensor_shape(out).value(), (Dims{1, 4}));

  // All zeros: an empty output, and the bigger buffer is handed back as the current memory.
  x = {0, 0, 0, 0, 0};
  ASSERT_TRUE(ctx->execute().ok());
  ASSERT_EQ(alloc.calls.size(), 3u);
  EXPECT_EQ(alloc.calls[2].current, alloc.calls[1].returned);
  EXPECT_EQ(alloc.calls[2].size, 0u);
  EXPECT_EQ(alloc.shapes[out], (Dims{1, 0}));
}

TEST(OutputAllocator, NullFromAllocatorIsAnErrorNamingTensorAndSize) {
  auto e = nonzero_engine();
  ASSERT_TRUE(e);
  const std::string out = e->get_tensor_name(1);
  auto ctx = e->create_execution_context();
  std::vector<float> x = {0, 1.5f, 0, -2, 3};
  RecordingAllocator alloc;
  alloc.fail = true;
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_output_allocator(out, &alloc).ok());
  Status st = ctx->execute();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), ErrorCode::kOutOfMemory);
  EXPECT_TRUE(contains(st, "output '" + out + "'")) << st.message();
  EXPECT_TRUE(contains(st, "24 bytes")) << st.message();
  EXPECT_TRUE(alloc.shapes.empty());  // no shape notification for an output that was not written
}

TEST(OutputAllocator, DataDependentOutputNeedsAllocatorOrLargeEnoughBuffer) {
  auto e = nonzero_engine();
  ASSERT_TRUE(e);
  const std::string out = e->get_tensor_name(1);
  auto ctx = e->create_execution_context();
  std::vector<float> x = {0, 1.5f, 0, -2, 3};
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());

  Status st = ctx->execute();
  EXPECT_TRUE(contains(st, "output '" + out + "' has no bound address")) << st.message();

  // A buffer of unknown size cannot be checked against a shape known only after the run.
  std::vector<int64_t> buf(5, -1);
  ASSERT_TRUE(ctx->set_tensor_address(out, buf.data()).ok());
  st = ctx->execute();
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(contains(st, "data-dependent shape")) << st.message();
  EXPECT_TRUE(contains(st, "set_output_allocator")) << st.message();

  // Too small for the 3 indices this input gives: refused, and the buffer is left alone.
  ASSERT_TRUE(ctx->set_tensor_address(out, buf.data(), 2 * sizeof(int64_t)).ok());
  st = ctx->execute();
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(contains(st, "output '" + out + "' needs 24 bytes (shape 1x3) but its bound buffer holds 16"))
      << st.message();
  EXPECT_EQ(buf, (std::vector<int64_t>(5, -1)));

  // Sized for the worst case (every element non-zero): it fits, and the shape says how much was written.
  ASSERT_TRUE(ctx->set_tensor_address(out, buf.data(), buf.size() * sizeof(int64_t)).ok());
  st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(ctx->get_tensor_shape(out).value(), (Dims{1, 3}));
  EXPECT_EQ(buf, (std::vector<int64_t>{1, 3, 4, -1, -1}));

  // The allocator takes precedence over a bound buffer; removing it restores the buffer.
  RecordingAllocator alloc;
  ASSERT_TRUE(ctx->set_output_allocator(out, &alloc).ok());
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_EQ(alloc.calls.size(), 1u);
  ASSERT_TRUE(ctx->set_output_allocator(out, nullptr).ok());
  ASSERT_TRUE(ctx->execute().ok());
  EXPECT_EQ(alloc.calls.size(), 1u);

  EXPECT_TRUE(contains(ctx->set_output_allocator("x", &alloc), "'x' is an input"));
  EXPECT_FALSE(ctx->set_output_allocator("nope", &alloc).ok());
}

TEST(OutputAllocator, TopKWithRunTimeK) {
  auto e = build_engine([](NetworkDefinition& net) {
    ITensor* x = net.add_input("x", DataType::kFLOAT, {6});
    ITensor* k = net.add_input("k", DataType::kINT64, {1});
    auto r = net.add_op("TopK", {x, k}, {}, 2);
    return r.size() == 2 && net.mark_output(r[0]).ok() && net.mark_output(r[1]).ok();
  });
  ASSERT_TRUE(e);
  const std::string values = e->get_tensor_name(2), indices = e->get_tensor_name(3);
  auto ctx = e->create_execution_context();
  EXPECT_EQ(ctx->get_tensor_shape(values).value(), (Dims{-1}));

  std::vector<float> x = {3, 1, 4, 1.5f, 5, 9};
  std::vector<int64_t> k = {2};
  RecordingAllocator alloc;
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address("k", k.data()).ok());
  ASSERT_TRUE(ctx->set_output_allocator(values, &alloc).ok());
  ASSERT_TRUE(ctx->set_output_allocator(indices, &alloc).ok());
  Status st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(alloc.shapes[values], (Dims{2}));
  EXPECT_EQ(alloc.shapes[indices], (Dims{2}));
  EXPECT_EQ(alloc.values<float>(values), (std::vector<float>{9, 5}));
  EXPECT_EQ(alloc.values<int64_t>(indices), (std::vector<int64_t>{5, 4}));

  k = {4};
  st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(alloc.values<float>(values), (std::vector<float>{9, 5, 4, 3}));
  EXPECT_EQ(alloc.values<int64_t>(indices), (std::vector<int64_t>{5, 4, 2, 0}));
  EXPECT_EQ(ctx->get_tensor_shape(indices).value(), (Dims{4}));
  ASSERT_EQ(alloc.calls.size(), 4u);
  EXPECT_EQ(alloc.calls[2].size, 4 * sizeof(float));
  EXPECT_EQ(alloc.calls[3].size, 4 * sizeof(int64_t));
}

TEST(OutputAllocator, UniqueMixesAllocatedAndBoundOutputs) {
  auto e = build_engine([](NetworkDefinition& net) {
    ITensor* x = net.add_input("x", DataType::kFLOAT, {6});
    auto r = net.add_op("Unique", {x}, {{"sorted", int64_t{1}}}, 4);
    if (r.size() != 4) return false;
    for (ITensor* t : r)
      if (!net.mark_output(t).ok()) return false;
    return true;
  });
  ASSERT_TRUE(e);
  const std::string y = e->get_tensor_name(1), first = e->get_tensor_name(2), inverse = e->get_tensor_name(3),
                    counts = e->get_tensor_name(4);
  auto ctx = e->create_execution_context();
  EXPECT_EQ(ctx->get_tensor_shape(y).value(), (Dims{-1}));
  EXPECT_EQ(ctx->get_tensor_shape(inverse).value(), (Dims{6}));

  std::vector<float> x = {2, 1, 2, 3, 1, 2};
  std::vector<int64_t> inv(6, -1);
  RecordingAllocator alloc;
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_tensor_address(inverse, inv.data()).ok());  // static shape: a plain buffer will do
  for (const auto& name : {y, first, counts}) ASSERT_TRUE(ctx->set_output_allocator(name, &alloc).ok());
  Status st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(alloc.values<float>(y), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(alloc.values<int64_t>(first), (std::vector<int64_t>{1, 0, 3}));
  EXPECT_EQ(alloc.values<int64_t>(counts), (std::vector<int64_t>{2, 3, 1}));
  EXPECT_EQ(inv, (std::vector<int64_t>{1, 0, 1, 2, 0, 1}));
  EXPECT_EQ(alloc.shapes.size(), 3u);
  EXPECT_EQ(alloc.shapes[counts], (Dims{3}));
  EXPECT_EQ(ctx->get_tensor_shape(y).value(), (Dims{3}));

  // infer() still returns the same outputs with their shapes.
  HostTensor hx;
  hx.dims = {6};
  hx.data.resize(24);
  std::memcpy(hx.data.data(), x.data(), 24);
  auto r = ctx->infer({{"x", hx}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)[0].second.dims, (Dims{3}));
  EXPECT_EQ((*r)[3].second.dims, (Dims{3}));

  // An output of static shape may take an allocator too; it is asked for exactly that size.
  ASSERT_TRUE(ctx->set_output_allocator(inverse, &alloc).ok());
  st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_GE(alloc.calls.size(), 2u);
  const ReallocCall& call = alloc.calls[alloc.calls.size() - 2];  // outputs are served in order; counts is last
  EXPECT_EQ(call.name, inverse);
  EXPECT_EQ(call.size, 6 * sizeof(int64_t));
  EXPECT_EQ(alloc.shapes[inverse], (Dims{6}));
  EXPECT_EQ(alloc.values<int64_t>(inverse), (std::vector<int64_t>{1, 0, 1, 2, 0, 1}));
}

namespace {

// Tries the context again from inside its own run: once from a second thread, once re-entering directly.
class ReenteringAllocator : public RecordingAllocator {
 public:
  void* reallocate_output(const char* tensor_name, void* current_memory, uint64_t size_bytes,
                          uint64_t alignment) noexcept override {
    std::thread other([this] { from_thread = ctx->execute(); });
    other.join();
    auto r = ctx->infer({{"x", HostTensor{DataType::kFLOAT, {5}, std::vector<uint8_t>(5 * sizeof(float))}}});
    from_callback = r.status();
    return RecordingAllocator::reallocate_output(tensor_name, current_memory, size_bytes, alignment);
  }
  ExecutionContext* ctx = nullptr;
  Status from_thread, from_callback;
};

}  // namespace

TEST(ExecutionContextThreads, SecondRunWhileOneRunsIsRefusedThenContextWorksAgain) {
  auto e = nonzero_engine();
  ASSERT_TRUE(e);
  const std::string out = e->get_tensor_name(1);
  auto ctx = e->create_execution_context();
  std::vector<float> x = {0, 1.5f, 0, -2, 3};
  ReenteringAllocator alloc;
  alloc.ctx = ctx.get();
  ASSERT_TRUE(ctx->set_tensor_address("x", x.data()).ok());
  ASSERT_TRUE(ctx->set_output_allocator(out, &alloc).ok());
  Status st = ctx->execute();
  ASSERT_TRUE(st.ok()) << st.to_string();
  for (const Status* s : {&alloc.from_thread, &alloc.from_callback}) {
    EXPECT_EQ(s->code(), ErrorCode::kInvalidArgument) << s->to_string();
    EXPECT_TRUE(contains(*s, "already running")) << s->message();
  }
  EXPECT_EQ(alloc.values<int64_t>(out), (std::vector<int64_t>{1, 3, 4}));  // the first run was not disturbed

  // The flag is released when the run ends: the next runs on this context succeed.
  ASSERT_TRUE(ctx->set_output_allocator(out, nullptr).ok());
  auto r = ctx->infer({{"x", HostTensor{DataType::kFLOAT, {5}, std::vector<uint8_t>(5 * sizeof(float))}}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)[0].second.dims, (Dims{1, 0}));
}

TEST(ExecutionContextBindings, NullAddressIsRefusedNamingTheTensor) {
  auto e = nonzero_engine();
  ASSERT_TRUE(e);
  const std::string out = e->get_tensor_name(1);
  auto ctx = e->create_execution_context();
  std::vector<int64_t> buf(5);
  ASSERT_TRUE(ctx->set_tensor_address(out, buf.data(), buf.size() * sizeof(int64_t)).ok());
  ASSERT_TRUE(ctx->set_tensor_address("x", nullptr).ok());
  Status st = ctx->execute();
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(contains(st, "input 'x' has no bound address")) << st.message();
}
