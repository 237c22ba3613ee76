// Times the float Conv kernel on the convolutions of torchvision resnet50 (batch 1, 224x224) via the op registry.
#include <chrono>
#include <ctime>
#include <cstdio>
#include <random>
#include <vector>

#include "ops/op.h"

using namespace kiln;

namespace {

// Process CPU time: on a shared, oversubscribed machine it tracks the work done better than wall time.
double cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

struct ConvShape {
  int64_t cin, cout, k, stride, pad, hw, count;
};

// resnet50: stem, then per stage the first block (with downsample) and the repeated blocks.
std::vector<ConvShape> resnet50_convs() {
  std::vector<ConvShape> v = {{3, 64, 7, 2, 3, 224, 1}};
  struct Stage { int64_t in, mid, out, hw, blocks, stride; };
  const Stage stages[] = {{64, 64, 256, 56, 3, 1}, {256, 128, 512, 56, 4, 2}, {512, 256, 1024, 28, 6, 2},
                          {1024, 512, 2048, 14, 3, 2}};
  for (const Stage& s : stages) {
    int64_t ohw = s.hw / s.stride;
    v.push_back({s.in, s.mid, 1, 1, 0, s.hw, 1});
    v.push_back({s.mid, s.mid, 3, s.stride, 1, s.hw, 1});
    v.push_back({s.mid, s.out, 1, 1, 0, ohw, 1});
    v.push_back({s.in, s.out, 1, s.stride, 0, s.hw, 1});
    v.push_back({s.out, s.mid, 1, 1, 0, ohw, s.blocks - 1});
    v.push_back({s.mid, s.mid, 3, 1, 1, ohw, s.blocks - 1});
    v.push_back({s.mid, s.out, 1, 1, 0, ohw, s.blocks - 1});
  }
  return v;
}

Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng) {
  Tensor t(DataType::kFLOAT, std::move(shape));
  std::uniform_real_distribution<float> d(-1, 1);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int iters = argc > 1 ? std::atoi(argv[1]) : 5;
  const ops::OpSchema* conv = ops::OpRegistry::instance().find("Conv");
  std::mt19937 rng(0);
  double total_ms = 0, total_cpu_ms = 0, total_gflop = 0;
  for (const ConvShape& c : resnet50_convs()) {
    Tensor x = random_tensor({1, c.cin, c.hw, c.hw}, rng), w = random_tensor({c.cout, c.cin, c.k, c.k}, rng);
    Tensor b = random_tensor({c.cout}, rng);
    Attributes a;
    a.set("strides", std::vector<int64_t>{c.stride, c.stride});
    a.set("pads", std::vector<int64_t>{c.pad, c.pad, c.pad, c.pad});
    std::vector<Tensor> out(1);
    ops::ComputeContext ctx(a, 17, {&x, &w, &b}, &out);
    if (!conv->compute(ctx).ok()) { std::printf("conv failed\n"); return 1; }
    auto t0 = std::chrono::steady_clock::now();
    double c0 = cpu_ms();
    for (int i = 0; i < iters; ++i) (void)conv->compute(ctx);
    double cpu = (cpu_ms() - c0) / iters;
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
    int64_t ohw = out[0].dim(2);
    double gflop = 2.0 * c.cout * c.cin * c.k * c.k * ohw * ohw * 1e-9;
    std::printf("%4lld->%4lld k%lld s%lld %3lldx%-3lld x%lld: %7.3f ms wall %7.3f ms CPU  %6.1f GFLOP/CPU-s\n", (long long)c.cin,
                (long long)c.cout, (long long)c.k, (long long)c.stride, (long long)c.hw, (long long)c.hw,
                (long long)c.count, ms, cpu, gflop / cpu * 1e3);
    total_ms += ms * c.count;
    total_cpu_ms += cpu * c.count;
    total_gflop += gflop * c.count;
  }
  std::printf("resnet50 convs total: %.2f ms wall, %.2f ms CPU (%.2f GFLOP, %.1f GFLOP/s wall)\n", total_ms, total_cpu_ms,
              total_gflop, total_gflop / total_ms * 1e3);
  return 0;
}
