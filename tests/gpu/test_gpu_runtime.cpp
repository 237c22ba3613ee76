// CUDA runtime tests: engine metadata, memory planning, aliasing, host fallback, errors on bad bindings.
#include "gpu_test_util.h"

namespace kiln::gpu_testing {
namespace {

TEST(GpuRuntime, ReshapeIsAnAlias) {
  KILN_REQUIRE_GPU();
  OpCase c;
  c.op = "Reshape";
  c.inputs = {random_tensor(DataType::kFLOAT, {2, 3, 4}, 1), Tensor::from_vector<int64_t>({2}, {4, -1})};
  c.constant = {false, true};
  expect_backends_agree(c);
}

TEST(GpuRuntime, HostFallbackGivesTheReferenceResult) {
  KILN_REQUIRE_GPU();
  // An operator without a GPU kernel runs on the host inside a GPU engine.
  OpCase c;
  c.op = "Hardmax";
  c.attrs = {{"axis", int64_t{1}}};
  c.inputs = {random_tensor(DataType::kFLOAT, {3, 5}, 2)};
  c.allow_host_layers = true;
  expect_backends_agree(c);
}

}  // namespace
}  // namespace kiln::gpu_testing
