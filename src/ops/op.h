// Operator definitions: each operator registers, in one file, its attribute schema, its shape and type
// inference (over symbolic shapes) and its reference CPU computation. The builder and the runtime both
// use this library; it knows nothing of ONNX protobufs, graphs or engines.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/attribute.h"
#include "common/tensor.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::ops {

// One dimension: a static size (value >= 0) or a symbolic one (value < 0, named by sym; empty sym = unknown).
struct Dim {
  int64_t value = -1;
  std::string sym;
  Dim() = default;
  Dim(int64_t v) : value(v) {}  // NOLINT(google-explicit-constructor)
  static Dim symbol(std::string s) { Dim d; d.sym = std::move(s); return d; }
  bool is_static() const { return value >= 0; }
  bool operator==(const Dim& o) const {
    return is_static() ? value == o.value : (!o.is_static() && !sym.empty() && sym == o.sym);
  }
  bool operator!=(const Dim& o) const { return !(*this == o); }
  std::string to_string() const { return is_static() ? std::to_string(value) : (sym.empty() ? "?" : sym); }
};
using Shape = std::vector<Dim>;
std::string shape_to_string(const Shape& s);  // "[N,3,224,224]"
bool shape_is_static(const Shape& s);
std::vector<int64_t> static_dims(const Shape& s);  // -1 for symbolic dims
Shape shape_from_dims(const std::vector<int64_t>& d);

// What inference knows about one value. `value` holds the known elements of a small integer tensor
// (rank 0 or 1) such as a shape computed by Shape/Gather/Concat, possibly with symbolic entries; this is
// how Reshape/Expand/ConstantOfShape/Slice learn their targets. `constant` is set when the whole tensor
// is a known constant (initializers, folded subgraphs).
// For a sequence or optional (kind), dtype and shape describe the tensors inside: shape holds what every
// element shares (dims they may not share are unknown: Dim() without a symbol), rank_known is false when their
// ranks may differ or nothing is known of them; value and constant stay unset.
struct TensorInfo {
  ValueKind kind = ValueKind::kTENSOR;
  DataType dtype = DataType::kFLOAT;
  Shape shape;
  bool rank_known = true;
  std::optional<std::vector<Dim>> value;
  const Tensor* constant = nullptr;
};

class InferContext {
 public:
  InferContext(const Attributes& attrs, int opset, std::vector<const TensorInfo*> inputs, int num_outputs,
               std::function<std::string()> fresh_symbol = {});

  int opset() const { return opset_; }
  const Attributes& attrs() const { return attrs_; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  // Optional inputs that the model leaves out are absent (has_input false, input() must not be called).
  bool has_input(int i) const { return i < num_inputs() && inputs_[i] != nullptr; }
  const TensorInfo& input(int i) const { return *inputs_[i]; }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  TensorInfo& output(int i) { return outputs_[i]; }
  std::vector<TensorInfo>& outputs() { return outputs_; }
  // A new, unique symbolic dimension (for sizes inference cannot know, e.g. NonZero's count).
  Dim fresh_dim();

  // Dim unification (passes/shape_inference.h): an operator whose legality proves two dims equal (a MatMul's
  // contraction, Concat's non-axis dims, two symbols broadcast against each other) says so here, and the
  // shape_inference pass gives every dim of the class one name. Without a sink (the runtime's resolver, subgraph
  // bodies, NetworkDefinition) nothing is recorded. Pairs with an unnamed dim, or of two static dims (the op itself
  // checks those), carry nothing and are dropped.
  struct Unification {
    std::vector<std::pair<Dim, Dim>> equal;
    // Symbols the user declared on graph inputs: each ranges over its own profile, 1 included.
    std::function<bool(const std::string&)> declared;
  };
  void set_unification(Unification* u) { unification_ = u; }
  void require_equal(const Dim& a, const Dim& b);
  // Whether two symbols were declared apart by the user: broadcasting them proves nothing (either may be 1).
  bool declared_apart(const Dim& a, const Dim& b) const;

 private:
  const Attributes& attrs_;
  int opset_;
  std::vector<const TensorInfo*> inputs_;
  std::vector<TensorInfo> outputs_;
  std::function<std::string()> fresh_symbol_;
  int local_counter_ = 0;
  Unification* unification_ = nullptr;
};

// Runs one subgraph body: `inputs` are its formal inputs followed by the captured outer values.
using SubgraphRunner =
    std::function<Result<std::vector<Tensor>>(const Subgraph& body, const std::vector<Tensor>& inputs)>;

class ComputeContext {
 public:
  // Inputs beyond explicit_input_count() are values captured by subgraph attributes: the op does not see
  // them, run_subgraph() passes them on. `runner` is set by executors that can run subgraphs.
  ComputeContext(const Attributes& attrs, int opset, std::vector<const Tensor*> inputs, std::vector<Tensor>* outputs,
                 SubgraphRunner runner = {});

  int opset() const { return opset_; }
  const Attributes& attrs() const { return attrs_; }
  int num_inputs() const { return num_inputs_; }
  bool has_input(int i) const { return i < num_inputs() && inputs_[i] != nullptr; }
  const Tensor& input(int i) const { return *inputs_[i]; }
  int num_outputs() const { return static_cast<int>(outputs_->size()); }
  // Allocates output i with the given type and shape and returns it for writing.
  Tensor& allocate_output(int i, DataType dtype, std::vector<int64_t> shape) {
    (*outputs_)[i] = Tensor(dtype, std::move(shape));
    return (*outputs_)[i];
  }
  // Sets output i to an existing tensor (e.g. a reshaped view of an input: no copy).
  void set_output(int i, Tensor t) { (*outputs_)[i] = std::move(t); }
  Tensor& output(int i) { return (*outputs_)[i]; }
  // Runs the body held by graph attribute `attr` on its formal inputs; fails when no runner was given.
  Result<std::vector<Tensor>> run_subgraph(const std::string& attr, std::vector<Tensor> inputs) const;

 private:
  const Attributes& attrs_;
  int opset_;
  std::vector<const Tensor*> inputs_;  // explicit inputs, then captured values
  int num_inputs_;
  std::vector<Tensor>* outputs_;
  SubgraphRunner runner_;
};

enum class AttrRequirement { kOptional, kRequired };
struct AttrSpec {
  std::string name;
  AttrType type;
  AttrRequirement req = AttrRequirement::kOptional;
};

using InferFn = std::function<Status(InferContext&)>;
using ComputeFn = std::function<Status(ComputeContext&)>;

struct OpSchema {
  std::string name;            // ONNX op type, e.g. "Conv"
  std::string domain;          // "" for ai.onnx
  int since_opset = 1;         // oldest opset this definition handles
  // Newest ONNX version (a since_version) of the op whose semantics this definition implements; models whose
  // opset selects a newer version are rejected at import. Left 0, the registry sets the op's version at opset
  // max(17, since_opset) for ai.onnx ops (ONNX 1.12's); raise it only once the newer version's node tests pass.
  int max_version = 0;
  int min_inputs = 0, max_inputs = 0;    // max_inputs < 0: variadic
  int min_outputs = 1, max_outputs = 1;  // max_outputs < 0: variadic
  std::vector<AttrSpec> attrs; // every attribute the op accepts
  std::vector<DataType> dtypes;  // data types the reference compute handles (documentation + checks)
  // Whether inputs may be sequences or optionals (see ValueKind); the executor hands every other op tensors only.
  bool takes_non_tensors = false;
  InferFn infer;
  ComputeFn compute;
};

class OpRegistry {
 public:
  static OpRegistry& instance();
  void add(OpSchema schema);
  // nullptr when unknown. domain "" and "ai.onnx" are the same.
  const OpSchema* find(const std::string& name, const std::string& domain = "") const;
  std::vector<const OpSchema*> all() const;

 private:
  std::map<std::string, OpSchema> ops_;  // key: domain + "::" + name
};

// Registers ops at static-initialization time:  KILN_REGISTER_OP(Relu) { return OpSchema{...}; }
// The op library is linked whole (CMake links it as an OBJECT library) so these always run.
#define KILN_REGISTER_OP(NAME)                                                         \
  static ::kiln::ops::OpSchema kiln_make_op_##NAME();                                  \
  static const bool kiln_op_registered_##NAME =                                        \
      (::kiln::ops::OpRegistry::instance().add(kiln_make_op_##NAME()), true);          \
  static ::kiln::ops::OpSchema kiln_make_op_##NAME()

// Checks input/output counts against the schema (max < 0: variadic); the message says expected and found.
Status check_arity(const OpSchema& schema, int num_inputs, int num_outputs);

// Number of a node's inputs that are its own: those after them are outer values captured by its subgraph
// attributes (see Subgraph::captures), which come last.
int explicit_input_count(const Attributes& attrs, int total_inputs);

// Attributes whose name starts with this prefix are annotations the builder adds to a layer ("kiln.fused_from":
// the original nodes a fused layer replaces; "kiln.tactic": the implementation chosen); ops ignore them.
inline constexpr const char* kAnnotationPrefix = "kiln.";
inline constexpr const char* kFusedFromAttr = "kiln.fused_from";
// On a layout Transpose (a reformat layer): the layout region it borders, named after the region's first
// convolution (layout_nhwc); the builder times each region in NHWC and in NCHW (see PassOptions).
inline constexpr const char* kLayoutRegionAttr = "kiln.layout_region";

// Validates attribute presence and types against the schema; unknown attributes are errors too (annotations
// excepted).
Status validate_attributes(const OpSchema& schema, const Attributes& attrs);

}  // namespace kiln::ops
