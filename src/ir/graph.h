// The intermediate representation: a Graph of Nodes (operators) connected by Values (tensors).
// Values carry a data type and a shape with static or symbolic dims; constants carry their data.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/attribute.h"
#include "common/tensor.h"
#include "ops/op.h"

namespace kiln::ir {

using ops::Dim;
using ops::Shape;
using ops::TensorInfo;

struct Node;

struct Value {
  std::string name;
  ValueKind kind = ValueKind::kTENSOR;            // sequences/optionals: dtype and shape describe their tensors
  DataType dtype = DataType::kFLOAT;
  Shape shape;
  bool rank_known = false;                       // false until inference or the importer sets a shape
  std::optional<std::vector<Dim>> known;         // known elements of a small integer tensor (see TensorInfo)
  std::shared_ptr<const Tensor> constant;        // set for initializers and folded values
  Node* producer = nullptr;                      // null for graph inputs and constants
  // A subgraph input the model declares no type for (ONNX lets a Loop or Scan body leave its inputs untyped):
  // shape inference takes the type from the enclosing node's inputs each time it infers the body.
  bool type_from_parent = false;
  std::vector<Node*> users;                      // maintained by Graph (one entry per use)

  bool is_constant() const { return constant != nullptr; }
  TensorInfo info() const;                       // view for ops inference
  void set_info(const TensorInfo& t);
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" = ai.onnx
  int opset = 0;       // opset version of the node's domain
  std::vector<Value*> inputs;   // nullptr marks an omitted optional input
  std::vector<Value*> outputs;
  Attributes attrs;
};

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Deep copy: new nodes and values with the same names and links; constant tensors are shared (immutable).
  std::unique_ptr<Graph> clone() const;

  // Creates a value; a taken name gets a numeric suffix. Never returns null.
  Value* add_value(const std::string& name);
  Value* add_constant(const std::string& name, Tensor t);
  Value* find_value(const std::string& name) const;
  // Appends a node. Output values are created with the given names (made unique).
  Node* add_node(const std::string& op_type, const std::string& name, const std::vector<Value*>& inputs,
                 const std::vector<std::string>& output_names, Attributes attrs = {}, int opset = 0,
                 const std::string& domain = "");
  // Removes a node; its outputs stay (as dangling values) until prune_values().
  void remove_node(Node* n);
  // Every use of `from` (node inputs and graph outputs) becomes a use of `to`.
  void replace_all_uses(Value* from, Value* to);
  void set_node_input(Node* n, size_t i, Value* v);
  // Deletes one value that nothing uses or produces any more (e.g. the outputs of a node just removed).
  void remove_value(Value* v);
  // Gives a value a new name; false (and no change) when another value already holds it.
  bool rename_value(Value* v, const std::string& name);
  // Drops values that no node uses or produces and that are not graph inputs/outputs.
  void prune_values();

  // Orders nodes so each comes after its producers; fails naming the nodes of a cycle.
  Status topo_sort();
  // Rebuilds producer/users links from nodes (after bulk edits).
  void rebuild_links();

  std::vector<Value*>& inputs() { return inputs_; }
  const std::vector<Value*>& inputs() const { return inputs_; }
  std::vector<Value*>& outputs() { return outputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  const std::vector<std::unique_ptr<Value>>& values() const { return values_; }

  int opset() const { return opset_; }     // default-domain opset of the model
  void set_opset(int v) { opset_ = v; }
  std::string name;

  // A fresh symbolic dimension name ("sym__N"), unique in this graph. Not "unk__N": ONNX's own shape inference
  // mints those, and an imported "unk__0" must never be taken for the same dim as one of ours.
  static constexpr const char* kFreshSymbolPrefix = "sym__";
  std::string fresh_symbol() { return kFreshSymbolPrefix + std::to_string(symbol_counter_++); }
  std::string unique_node_name(const std::string& base);

 private:
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Value>> values_;
  std::unordered_map<std::string, Value*> by_name_;
  std::unordered_map<std::string, int> node_names_;
  std::vector<Value*> inputs_, outputs_;
  int opset_ = 17;
  int symbol_counter_ = 0;
};

// A subgraph attribute in the IR (If/Loop/Scan bodies). The body's inputs are its formal inputs followed by one
// input per captured outer value, in the order of captures(). The body is shared between copies of the
// attribute, so Graph::clone() copies it explicitly; passes may refine its shapes in place.
class GraphAttr final : public Subgraph {
 public:
  GraphAttr(std::unique_ptr<Graph> body, int num_formal_inputs, std::vector<int> captures);
  Graph& body() const { return *body_; }
  int num_formal_inputs() const { return num_formal_; }
  std::vector<GraphPort> input_ports() const override;
  std::vector<GraphPort> output_ports() const override;
  std::string describe() const override;
  std::shared_ptr<GraphAttr> clone() const;

 private:
  std::unique_ptr<Graph> body_;
  int num_formal_;
};

// The IR form of a node's subgraph attributes, by attribute name (non-IR forms are skipped).
std::vector<std::pair<std::string, const GraphAttr*>> graph_attrs(const Node& n);

// Structural checks: every input produced before use, no cycles, unique names, outputs produced, each node's
// op known with valid arity and attributes. Errors name the node.
Status verify(const Graph& g);
// Readable text dump: one line per input, constant summary, node and output.
std::string print(const Graph& g);

}  // namespace kiln::ir
