// EnginePlan: a deserialized, validated engine, immutable and shared by every context of an Engine.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/attribute.h"
#include "common/tensor.h"
#include "kiln/status.h"
#include "kiln/types.h"
#include "ops/op.h"

namespace kiln::runtime {

struct PlanValue {
  std::string name;
  ValueKind kind = ValueKind::kTENSOR;  // sequences/optionals: dtype and shape describe their tensors
  DataType dtype = DataType::kFLOAT;
  bool rank_known = true;
  ops::Shape shape;
  Tensor constant;  // defined() for constants; points into EnginePlan::file (read-only)
};

struct PlanNode {
  std::string name, op_type, domain;
  int opset = 0;
  Attributes attrs;
  std::vector<int> inputs;  // value ids, -1 for an omitted optional input
  std::vector<int> outputs;
  const ops::OpSchema* schema = nullptr;
  // Values whose last reader is this node: the executor drops them once it has run.
  std::vector<int> release_after;
};

struct PlanIo {
  std::string name;
  int value = -1;
  TensorIOMode mode = TensorIOMode::kNONE;
};

struct ProfileBounds {
  Dims min, opt, max;
};

struct EnginePlan {
  std::string kiln_version;
  Backend backend = Backend::kCPU;
  std::string device;
  std::map<std::string, std::string> metadata;
  std::vector<PlanValue> values;
  std::vector<PlanNode> nodes;
  std::vector<PlanIo> io;           // inputs first, then outputs, in network order
  std::vector<int> inputs, outputs;  // indices into io
  // profiles[p][value id] = bounds of a dynamic input in profile p.
  std::vector<std::map<int, ProfileBounds>> profiles;

  // The engine file, copied once into 64-byte aligned memory so constants can be used in place.
  std::shared_ptr<uint8_t> file;
  size_t file_size = 0;

  // Index into io, or -1.
  int find_io(const std::string& name) const;
};

// A subgraph attribute in a plan (If/Loop/Scan bodies): a nested plan, read and validated like an engine of
// its own, whose inputs are the body's formal inputs followed by the values it captures.
class PlanSubgraph final : public Subgraph {
 public:
  PlanSubgraph(std::shared_ptr<const EnginePlan> plan, std::vector<int> captures)
      : Subgraph(std::move(captures)), plan_(std::move(plan)) {}
  const EnginePlan& plan() const { return *plan_; }
  std::vector<GraphPort> input_ports() const override;
  std::vector<GraphPort> output_ports() const override;
  std::string describe() const override;

 private:
  std::shared_ptr<const EnginePlan> plan_;
};

// Decodes and validates an engine file (format, compatibility, op registry, value ids, ordering).
// Never throws except std::bad_alloc, which the public API turns into an OutOfMemory status.
Result<std::shared_ptr<const EnginePlan>> read_engine(const void* data, size_t size);

}  // namespace kiln::runtime
