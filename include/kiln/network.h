// NetworkDefinition: the network to build, filled by the ONNX parser or layer by layer through this API.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln {
namespace ir {
class Graph;
struct Value;
}  // namespace ir

// A tensor of the network (a handle owned by its NetworkDefinition).
class ITensor {
 public:
  const std::string& name() const;
  DataType dtype() const;
  Dims dims() const;  // -1 for dynamic dims
  // Only for network inputs: changes the declared shape (e.g. fix the batch dim).
  void set_dims(const Dims& d);

 private:
  friend class NetworkDefinition;
  explicit ITensor(ir::Value* v) : value_(v) {}
  ir::Value* value_;
};

// Attribute values for add_op (ONNX attribute kinds without tensors).
using OpAttr = std::variant<int64_t, float, std::string, std::vector<int64_t>, std::vector<float>>;
using OpAttrs = std::vector<std::pair<std::string, OpAttr>>;

enum class ActivationType { kRELU, kSIGMOID, kTANH, kGELU_ERF, kGELU_TANH, kSILU, kHARD_SIGMOID, kHARD_SWISH, kLEAKY_RELU, kELU, kSOFTPLUS, kCLIP };
enum class ElementWiseOperation { kSUM, kSUB, kPROD, kDIV, kMIN, kMAX, kPOW };
enum class PoolingType { kMAX, kAVERAGE };
enum class ReduceOperation { kSUM, kMEAN, kMAX, kMIN, kPROD };

class NetworkDefinition {
 public:
  NetworkDefinition();
  ~NetworkDefinition();
  NetworkDefinition(const NetworkDefinition&) = delete;
  NetworkDefinition& operator=(const NetworkDefinition&) = delete;

  // Inputs, outputs and generic operators. Every add_* returns null on error and records the error
  // (see last_error()); add_op accepts any operator Kiln registers, with ONNX semantics and attribute names.
  ITensor* add_input(const std::string& name, DataType dtype, const Dims& dims);
  Status mark_output(ITensor* t);
  std::vector<ITensor*> add_op(const std::string& op_type, const std::vector<ITensor*>& inputs,
                               const OpAttrs& attrs = {}, int num_outputs = 1, const std::string& name = "");
  ITensor* add_constant(const std::string& name, DataType dtype, const Dims& dims, const void* data);

  // TensorRT-style conveniences over add_op.
  ITensor* add_convolution(ITensor* input, int64_t out_channels, const Dims& kernel, const std::vector<float>& weights,
                           const std::vector<float>& bias, const Dims& strides = {}, const Dims& pads = {},
                           const Dims& dilations = {}, int64_t groups = 1);
  ITensor* add_activation(ITensor* input, ActivationType type, float alpha = 0.f, float beta = 0.f);
  ITensor* add_elementwise(ITensor* a, ITensor* b, ElementWiseOperation op);
  ITensor* add_matrix_multiply(ITensor* a, ITensor* b);
  ITensor* add_pooling(ITensor* input, PoolingType type, const Dims& window, const Dims& strides = {},
                       const Dims& pads = {});
  ITensor* add_softmax(ITensor* input, int64_t axis = -1);
  ITensor* add_reshape(ITensor* input, const Dims& shape);
  ITensor* add_concatenation(const std::vector<ITensor*>& inputs, int64_t axis);
  ITensor* add_reduce(ITensor* input, ReduceOperation op, const std::vector<int64_t>& axes, bool keep_dims);

  // The type the engine's binding for network input or output `t` carries (trtexec's --inputIOFormats and
  // --outputIOFormats, TensorRT's ITensor::setType on network I/O): float32, float16 or bfloat16, for a tensor of
  // one of those types. The network keeps its own types; the built engine converts at the boundary, and where the
  // layers next to it run in that type anyway (an FP16 build) nothing is converted. Setting a tensor's own type
  // back undoes an earlier call.
  Status set_io_type(ITensor* t, DataType dtype);
  // The binding type of network input or output `t`: the one set_io_type gave it, else its own.
  DataType io_type(const ITensor* t) const;
  // Internal (the builder): the binding types set_io_type recorded, by value.
  const std::unordered_map<const ir::Value*, DataType>& io_types() const;

  int num_inputs() const;
  int num_outputs() const;
  int num_layers() const;
  ITensor* get_input(int i);
  ITensor* get_output(int i);
  ITensor* find_tensor(const std::string& name);
  const Status& last_error() const { return last_error_; }

  // Internal: the IR graph behind this network (for the ONNX parser and the builder).
  ir::Graph& graph();
  const ir::Graph& graph() const;
  ITensor* wrap(ir::Value* v);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Status last_error_;
};

}  // namespace kiln
