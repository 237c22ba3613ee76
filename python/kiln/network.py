"""INetworkDefinition: inputs, outputs, the layer list (parsed ONNX operators included) and TensorRT's add_* calls."""
import numpy as np

from . import _kiln
from ._kiln import InvalidArgumentError
from ._types import as_datatype, from_numpy_dtype
from .layers import (IActivationLayer, ICastLayer, IConcatenationLayer, IConstantLayer, IConvolutionLayer,
                     IElementWiseLayer, IGatherLayer, IIdentityLayer, IMatrixMultiplyLayer, INormalizationLayer,
                     IPoolingLayer, IReduceLayer, IShuffleLayer, ISliceLayer, ISoftMaxLayer, _OperatorLayer, _dims)


class INetworkDefinition:
    """The network to build: fill it with OnnxParser or layer by layer."""

    def __init__(self, flags=0, logger=None):
        self._net = _kiln._Network()
        self._layers = []
        self._owner = {}  # node id -> layer
        self._logger = logger
        self._retrying = False
        self.flags = int(flags)
        self.name = "network"

    # --- bookkeeping ---
    def _register(self, layer):
        for n in layer._nodes:
            self._owner[n] = layer
        self._sync()
        self._layers.append(layer)

    def _reassign(self, layer, nodes):
        for n in layer._nodes:
            self._owner.pop(n, None)
        layer._nodes = nodes
        for n in nodes:
            self._owner[n] = layer

    def _sync(self):
        """Operators added by the ONNX parser become one layer each, in their order."""
        if self._net.num_nodes == len(self._owner):  # every operator already belongs to a layer
            return
        for n in self._net.node_ids():
            if n not in self._owner:
                layer = _OperatorLayer(self, n)
                self._layers.append(layer)
                self._owner[n] = layer

    def _log_info(self, msg):
        if self._logger is not None:
            self._logger.log(_kiln.ILogger.Severity.INFO, msg)

    def _retry_pending(self):
        """Rebuilds pending layers until none becomes valid any more (a fix may cure layers downstream)."""
        if self._retrying:
            return
        self._retrying = True
        try:
            progress = True
            while progress:
                progress = False
                for layer in [l for l in self._layers if l._error is not None]:
                    try:
                        layer._rebuild()
                    except _kiln.KilnError as e:
                        layer._error = e
                    progress |= layer._error is None
        finally:
            self._retrying = False

    def _check_buildable(self):
        self._retry_pending()
        pending = [layer for layer in self._layers if layer._error is not None]
        if pending:
            raise InvalidArgumentError("; ".join(f"layer '{layer.name}' ({type(layer).__name__}) is invalid: "
                                                 f"{layer._error}" for layer in pending))

    def _constant(self, array):
        a = np.ascontiguousarray(array)
        return self._net.add_constant("", from_numpy_dtype(a.dtype), a.shape, a)

    # --- inputs and outputs ---
    def add_input(self, name, dtype, shape):
        return self._net.add_input(name, as_datatype(dtype), _dims(shape, "shape"))

    def mark_output(self, tensor):
        self._net.mark_output(tensor)

    def unmark_output(self, tensor):
        self._net.unmark_output(tensor)

    def set_io_type(self, tensor, dtype):
        """The type the engine's binding for network input or output `tensor` carries (float32, float16 or
        bfloat16, for a tensor of one of those types): the network keeps its own types and the engine converts at
        the boundary, or nowhere where the layers next to it run in that type (an FP16 build). trtexec's
        --inputIOFormats=fp16:chw; TensorRT's `tensor.dtype = ...` on network I/O."""
        self._net.set_io_type(tensor, as_datatype(dtype))

    def get_io_type(self, tensor):
        """The binding type of network input or output `tensor`: set_io_type's, else the tensor's own."""
        return self._net.io_type(tensor)

    @property
    def num_inputs(self):
        return self._net.num_inputs

    @property
    def num_outputs(self):
        return self._net.num_outputs

    def get_input(self, index):
        if not 0 <= index < self._net.num_inputs:
            raise IndexError(f"input {index} does not exist (the network has {self._net.num_inputs})")
        return self._net.get_input(index)

    def get_output(self, index):
        if not 0 <= index < self._net.num_outputs:
            raise IndexError(f"output {index} does not exist (the network has {self._net.num_outputs})")
        return self._net.get_output(index)

    @property
    def num_layers(self):
        self._sync()
        return len(self._layers)

    def get_layer(self, index):
        self._sync()
        return self._layers[index]

    def __len__(self):
        return self.num_layers

    def __getitem__(self, index):
        return self.get_layer(index)

    def __iter__(self):
        self._sync()
        return iter(list(self._layers))

    @property
    def has_implicit_batch_dimension(self):
        return False

    def __str__(self):
        return str(self._net)

    # --- layers ---
    def add_convolution_nd(self, input, num_output_maps, kernel_shape, kernel, bias=None):
        return IConvolutionLayer(self, input, num_output_maps, kernel_shape, kernel, bias)._create()

    def add_pooling_nd(self, input, type, window_size):
        return IPoolingLayer(self, input, type, window_size)._create()

    def add_activation(self, input, type):
        return IActivationLayer(self, input, type)._create()

    def add_elementwise(self, input1, input2, op):
        return IElementWiseLayer(self, input1, input2, op)._create()

    def add_matrix_multiply(self, input0, op0, input1, op1):
        return IMatrixMultiplyLayer(self, input0, op0, input1, op1)._create()

    def add_softmax(self, input):
        return ISoftMaxLayer(self, input)._create()

    def add_shuffle(self, input):
        return IShuffleLayer(self, input)._create()

    def add_constant(self, shape, weights):
        return IConstantLayer(self, shape, weights)._create()

    def add_concatenation(self, inputs):
        return IConcatenationLayer(self, list(inputs))._create()

    def add_reduce(self, input, op, axes, keep_dims):
        return IReduceLayer(self, input, op, axes, keep_dims)._create()

    def add_slice(self, input, start, shape, stride):
        return ISliceLayer(self, input, start, shape, stride)._create()

    def add_gather(self, input, indices, axis):
        return IGatherLayer(self, input, indices, axis=axis)._create()

    def add_gather_v2(self, input, indices, mode):
        return IGatherLayer(self, input, indices, mode=mode)._create()

    def add_identity(self, input):
        return IIdentityLayer(self, [input])._create()

    def add_cast(self, input, to_type):
        return ICastLayer(self, input, to_type)._create()

    def add_normalization(self, input, scale, bias, axesMask):
        return INormalizationLayer(self, input, scale, bias, axesMask)._create()

    def add_op(self, op_type, inputs, attributes=None, num_outputs=1, name=None):
        """Kiln: adds any supported ONNX operator (ONNX attribute names and semantics) as one layer."""
        start = self._net.num_nodes
        self._net.add_op(op_type, list(inputs), dict(attributes or {}), num_outputs, name or "")
        layer = _OperatorLayer(self, self._net.node_ids(start)[0])
        self._register(layer)
        return layer
