// Operator attributes: a small typed variant (ONNX's attribute kinds) and the per-node attribute map.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "common/tensor.h"
#include "kiln/status.h"

namespace kiln {

// Numbering is part of the engine file format: append only.
enum class AttrType : uint8_t {
  kINT = 0, kFLOAT = 1, kSTRING = 2, kINTS = 3, kFLOATS = 4, kSTRINGS = 5, kTENSOR = 6, kGRAPH = 7
};
const char* attr_type_name(AttrType t);

// Declared type of one subgraph input or output; dims are -1 where unknown or symbolic (a body's symbols
// mean nothing in the enclosing graph).
struct GraphPort {
  std::string name;
  ValueKind kind = ValueKind::kTENSOR;  // for sequences and optionals, dtype/dims describe the tensors inside
  DataType dtype = DataType::kFLOAT;
  bool rank_known = false;
  std::vector<int64_t> dims;
};

// A graph-valued attribute: the body of If, Loop or Scan. The IR, the engine file and the runtime each hold
// their own form of the body; operators only see its ports and run it through ComputeContext::run_subgraph.
// Outer-scope values the body reads are extra inputs of the node (so ordering and liveness passes see them):
// captures()[i] is the node input that feeds the body input after its formal inputs, number i.
class Subgraph {
 public:
  explicit Subgraph(std::vector<int> captures) : captures_(std::move(captures)) {}
  virtual ~Subgraph() = default;
  virtual std::vector<GraphPort> input_ports() const = 0;  // the formal inputs; captures excluded
  virtual std::vector<GraphPort> output_ports() const = 0;
  virtual std::string describe() const = 0;
  const std::vector<int>& captures() const { return captures_; }

 private:
  std::vector<int> captures_;
};

class Attribute {
 public:
  using Value = std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>,
                             std::vector<std::string>, Tensor, std::shared_ptr<const Subgraph>>;
  Attribute() : v_(int64_t{0}) {}
  Attribute(int64_t v) : v_(v) {}                             // NOLINT
  Attribute(int v) : v_(int64_t{v}) {}                        // NOLINT
  Attribute(float v) : v_(v) {}                               // NOLINT
  Attribute(std::string v) : v_(std::move(v)) {}              // NOLINT
  Attribute(const char* v) : v_(std::string(v)) {}            // NOLINT
  Attribute(std::vector<int64_t> v) : v_(std::move(v)) {}     // NOLINT
  Attribute(std::vector<float> v) : v_(std::move(v)) {}       // NOLINT
  Attribute(std::vector<std::string> v) : v_(std::move(v)) {} // NOLINT
  Attribute(Tensor v) : v_(std::move(v)) {}                   // NOLINT
  Attribute(std::shared_ptr<const Subgraph> v) : v_(std::move(v)) {}  // NOLINT

  AttrType type() const { return static_cast<AttrType>(v_.index()); }
  const Value& value() const { return v_; }
  int64_t i() const { return std::get<int64_t>(v_); }
  float f() const { return std::get<float>(v_); }
  const std::string& s() const { return std::get<std::string>(v_); }
  const std::vector<int64_t>& ints() const { return std::get<std::vector<int64_t>>(v_); }
  const std::vector<float>& floats() const { return std::get<std::vector<float>>(v_); }
  const std::vector<std::string>& strings() const { return std::get<std::vector<std::string>>(v_); }
  const Tensor& t() const { return std::get<Tensor>(v_); }
  const std::shared_ptr<const Subgraph>& g() const { return std::get<std::shared_ptr<const Subgraph>>(v_); }

  std::string to_string() const;  // short human-readable form for graph dumps

 private:
  Value v_;
};

// Attribute map with typed getters; a getter with a default returns it when the attribute is absent, and
// every getter fails (naming the attribute and both types) when the attribute has another type.
class Attributes {
 public:
  bool has(const std::string& name) const { return map_.count(name) != 0; }
  void set(const std::string& name, Attribute a) { map_[name] = std::move(a); }
  void erase(const std::string& name) { map_.erase(name); }
  const std::map<std::string, Attribute>& map() const { return map_; }
  const Attribute* find(const std::string& name) const {
    auto it = map_.find(name);
    return it == map_.end() ? nullptr : &it->second;
  }

  Result<int64_t> get_int(const std::string& name) const;
  Result<int64_t> get_int(const std::string& name, int64_t def) const;
  Result<float> get_float(const std::string& name) const;
  Result<float> get_float(const std::string& name, float def) const;
  Result<std::string> get_string(const std::string& name) const;
  Result<std::string> get_string(const std::string& name, const std::string& def) const;
  Result<std::vector<int64_t>> get_ints(const std::string& name) const;
  Result<std::vector<int64_t>> get_ints(const std::string& name, const std::vector<int64_t>& def) const;
  Result<std::vector<float>> get_floats(const std::string& name) const;
  Result<std::vector<float>> get_floats(const std::string& name, const std::vector<float>& def) const;
  Result<Tensor> get_tensor(const std::string& name) const;
  Result<std::shared_ptr<const Subgraph>> get_graph(const std::string& name) const;
  // Whether any attribute is a subgraph (such nodes take captured outer values as trailing inputs).
  bool has_graph() const;

 private:
  std::map<std::string, Attribute> map_;
};

}  // namespace kiln
