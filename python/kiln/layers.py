"""The layers of INetworkDefinition, with TensorRT's names and defaults.

Each layer is a recipe of ONNX operators added through the C++ NetworkDefinition (add_op). TensorRT lets a
layer's properties change after it is created (conv.stride_nd = (2, 2)); Kiln's operators are immutable, so a
property change runs the recipe again and swaps the new operators in. The layer's output tensors stay the same
objects, so tensors already handed to later layers or marked as outputs remain valid.

TensorRT checks layers when it builds, so a script may create a layer that only becomes valid once more
properties are set (a grouped convolution's kernel sized for num_groups, a concatenation whose axis comes next).
A layer whose recipe is rejected therefore becomes pending: its outputs are placeholders of unknown dims, its
error is logged at INFO, it is retried whenever it or another layer changes, and building a network that still
has pending layers raises their errors.
"""
import math

import numpy as np

from . import _kiln
from ._kiln import DataType, InvalidArgumentError, InvalidModelError, UnsupportedError
from ._types import as_datatype, from_numpy_dtype, nptype
from .network_types import (ActivationType, ElementWiseOperation, GatherMode, LayerType, MatrixOperation,
                            PaddingMode, PoolingType, ReduceOperation, SampleMode, _dims, _host_array, _weights)


def _mask_to_axes(mask, rank, what):
    mask = int(mask)
    if mask <= 0 or mask >> rank:
        raise InvalidArgumentError(f"{what}: axes bit mask {mask:#b} must select axes of a rank-{rank} tensor")
    return [i for i in range(rank) if mask >> i & 1]


def _rank(t, what):
    if not t.rank_known:
        raise InvalidArgumentError(f"{what}: the rank of '{t.name}' is not known")
    return len(t.shape)


def _param(key, convert=None, doc=None):
    """A layer property whose change rebuilds the layer (undone if the rebuild raises, e.g. for an unsupported
    mode; a rejected shape or arity makes the layer pending instead)."""
    def get(self):
        return self._p[key]

    def set(self, value):
        old = self._p[key]
        self._p[key] = convert(value) if convert else value
        try:
            self._rebuild()
        except BaseException:
            self._p[key] = old
            raise
    return property(get, set, doc=doc)


# Errors that later property changes may cure: they make a layer pending rather than raise.
_CURABLE = (InvalidArgumentError, InvalidModelError)


class ILayer:
    """A layer: its inputs, its outputs and the operators its recipe added."""
    _layer_type = LayerType.OPERATOR

    def __init__(self, network, inputs, **params):
        self._network = network
        self._inputs = list(inputs)
        self._p = params
        self._nodes = []
        self._outputs = []
        self._name = None
        self._consts = {}
        self._error = None  # set while the layer is pending
        self._precision = None

    # --- recipe plumbing ---
    def _emit(self):
        """Adds the layer's operators from self._inputs and self._p; returns the output tensors."""
        raise NotImplementedError

    def _run_recipe(self):
        net = self._network._net
        start = net.num_nodes
        try:
            outs = list(self._emit())
        except BaseException:
            net.discard_nodes(net.node_ids(start))
            raise
        return outs, net.node_ids(start)

    def _create(self):
        self._network._register(self)
        try:
            self._outputs, nodes = self._run_recipe()
        except _CURABLE as e:
            self._set_pending(e)
        else:
            self._network._reassign(self, nodes)
        return self

    def _rebuild(self):
        try:
            outs, nodes = self._run_recipe()
        except _CURABLE as e:
            self._set_pending(e)  # a valid layer keeps its previous operators until it is fixed
            return
        self._network._net.replace_layer(self._nodes, self._outputs, outs)
        self._network._reassign(self, nodes)
        if self._name:
            self._network._net.set_node_name(nodes[-1], self._name)
        if self._error is not None:
            self._error = None
            self._network._retry_pending()

    def _placeholder_info(self):
        """(dtype, rank) of the output while pending; the rank matters to recipes downstream (default axes)."""
        x = self._inputs[0]
        return x.dtype, len(x.shape) if x.rank_known else 0

    def _set_pending(self, error):
        if not self._outputs:
            dtype, rank = self._placeholder_info()
            self._outputs = [self._network._net.add_placeholder(f"{type(self).__name__[1:]}_pending", dtype, rank)]
        self._error = error
        self._network._log_info(f"layer '{self.name}' is not valid yet ({error}); it must be fixed before building")

    def _const(self, key, array):
        """A network constant for a weights array, created once per distinct array (rebuilds reuse it)."""
        a = np.ascontiguousarray(array)
        cached = self._consts.get(key)
        if cached is not None and cached[0].dtype == a.dtype and cached[0].shape == a.shape and \
                np.array_equal(cached[0], a):
            return cached[1]
        t = self._network._constant(a)
        self._consts[key] = (a, t)
        return t

    def _op(self, op_type, inputs, num_outputs=1, **attrs):
        outs = self._network._net.add_op(op_type, list(inputs), attrs, num_outputs)
        return outs if num_outputs > 1 else outs[0]

    def _i64(self, values):
        return self._network._constant(np.asarray(values, dtype=np.int64))

    def _scalar(self, value, dtype):
        return self._network._constant(np.asarray(value, dtype=nptype(dtype)))

    # --- TensorRT's ILayer ---
    @property
    def type(self):
        return self._layer_type

    @property
    def layer_type(self):
        """The LayerType, also for pooling and activation layers, whose `type` is their kind (as in TensorRT)."""
        return self._layer_type

    @property
    def name(self):
        if self._name:
            return self._name
        if self._nodes:
            return self._network._net.node_info(self._nodes[-1])[0]
        return self._outputs[0].name if self._outputs else type(self).__name__

    @name.setter
    def name(self, value):
        if self._nodes and self._error is None:
            self._network._net.set_node_name(self._nodes[-1], str(value))
        self._name = str(value)

    @property
    def precision(self):
        """The type this layer should compute in (FLOAT, HALF or BF16); see BuilderFlag.*_PRECISION_CONSTRAINTS."""
        return self._precision if self._precision is not None else DataType.FLOAT

    @precision.setter
    def precision(self, dtype):
        self._precision = as_datatype(dtype)

    @property
    def precision_is_set(self):
        return self._precision is not None

    def reset_precision(self):
        self._precision = None

    def _node_names(self):
        return [self._network._net.node_info(n)[0] for n in self._nodes]

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    def set_input(self, index, tensor):
        if not 0 <= index <= len(self._inputs):
            raise IndexError(f"layer '{self.name}' has {len(self._inputs)} inputs; cannot set input {index}")
        old = list(self._inputs)
        if index == len(self._inputs):
            self._inputs.append(tensor)
        else:
            self._inputs[index] = tensor
        try:
            self._rebuild()
        except BaseException:
            self._inputs = old
            raise

    @property
    def op_types(self):
        """Kiln: the ONNX operators this layer consists of."""
        return [self._network._net.node_info(n)[1] for n in self._nodes]

    def __repr__(self):
        return f"<kiln.{type(self).__name__} '{self.name}' {'+'.join(self.op_types) or 'constant'}>"


_OP_LAYER_TYPES = {
    "Conv": LayerType.CONVOLUTION, "ConvTranspose": LayerType.CONVOLUTION,
    "MaxPool": LayerType.POOLING, "AveragePool": LayerType.POOLING, "GlobalAveragePool": LayerType.POOLING,
    "GlobalMaxPool": LayerType.POOLING, "LpPool": LayerType.POOLING,
    "MatMul": LayerType.MATRIX_MULTIPLY, "Gemm": LayerType.MATRIX_MULTIPLY,
    "Softmax": LayerType.SOFTMAX, "LogSoftmax": LayerType.SOFTMAX, "Concat": LayerType.CONCATENATION,
    "Reshape": LayerType.SHUFFLE, "Transpose": LayerType.SHUFFLE, "Flatten": LayerType.SHUFFLE,
    "Squeeze": LayerType.SHUFFLE, "Unsqueeze": LayerType.SHUFFLE,
    "Slice": LayerType.SLICE, "Gather": LayerType.GATHER, "GatherElements": LayerType.GATHER,
    "GatherND": LayerType.GATHER, "Identity": LayerType.IDENTITY, "Cast": LayerType.CAST,
    "LayerNormalization": LayerType.NORMALIZATION, "InstanceNormalization": LayerType.NORMALIZATION,
    "GroupNormalization": LayerType.NORMALIZATION, "BatchNormalization": LayerType.NORMALIZATION,
    "Pad": LayerType.PADDING, "Resize": LayerType.RESIZE, "TopK": LayerType.TOPK, "Shape": LayerType.SHAPE,
    "Where": LayerType.SELECT, "Einsum": LayerType.EINSUM, "ScatterND": LayerType.SCATTER,
    "ScatterElements": LayerType.SCATTER, "If": LayerType.CONDITION, "Loop": LayerType.LOOP,
    "QuantizeLinear": LayerType.QUANTIZE, "DequantizeLinear": LayerType.DEQUANTIZE,
}
for _op in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "And", "Or", "Xor", "Equal", "Greater", "Less"):
    _OP_LAYER_TYPES[_op] = LayerType.ELEMENTWISE
for _op in ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Softsign", "Softplus", "Clip", "HardSigmoid",
            "ThresholdedRelu", "Gelu", "HardSwish", "PRelu", "Mish", "Celu"):
    _OP_LAYER_TYPES[_op] = LayerType.ACTIVATION
for _op in ("Abs", "Exp", "Log", "Sqrt", "Neg", "Reciprocal", "Sin", "Cos", "Tan", "Floor", "Ceil", "Round", "Not",
            "Erf", "Sign", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "IsInf", "IsNaN"):
    _OP_LAYER_TYPES[_op] = LayerType.UNARY
for _op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
            "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
    _OP_LAYER_TYPES[_op] = LayerType.REDUCE


class _OperatorLayer(ILayer):
    """One ONNX operator as a layer: what the ONNX parser creates, and INetworkDefinition.add_op."""

    def __init__(self, network, node_id):
        super().__init__(network, [])
        name, op_type, inputs, outputs = network._net.node_info(node_id)
        self._nodes, self._inputs, self._outputs = [node_id], list(inputs), list(outputs)
        self._layer_type = _OP_LAYER_TYPES.get(op_type, LayerType.OPERATOR)

    def _rebuild(self):
        raise UnsupportedError(f"layer '{self.name}' ({self.op_types[0]}) was not built by a layer recipe; its "
                               "inputs cannot be changed")


class IConvolutionLayer(ILayer):
    _layer_type = LayerType.CONVOLUTION

    def __init__(self, network, input, num_output_maps, kernel_shape, kernel, bias):
        nd = len(kernel_shape)
        super().__init__(network, [input], num_output_maps=int(num_output_maps),
                         kernel_size_nd=_dims(kernel_shape, "kernel_shape"), stride_nd=(1,) * nd,
                         pre_padding=(0,) * nd, post_padding=(0,) * nd, dilation_nd=(1,) * nd, num_groups=1,
                         padding_mode=PaddingMode.EXPLICIT_ROUND_DOWN, kernel=_weights(kernel), bias=_weights(bias))
        if self._p["kernel"] is None:
            raise InvalidArgumentError("add_convolution_nd: the kernel weights are empty")

    num_output_maps = _param("num_output_maps", int)
    kernel_size_nd = _param("kernel_size_nd", lambda v: _dims(v, "kernel_size_nd"))
    stride_nd = _param("stride_nd", lambda v: _dims(v, "stride_nd"))
    pre_padding = _param("pre_padding", lambda v: _dims(v, "pre_padding"))
    post_padding = _param("post_padding", lambda v: _dims(v, "post_padding"))
    dilation_nd = _param("dilation_nd", lambda v: _dims(v, "dilation_nd"))
    num_groups = _param("num_groups", int)
    padding_mode = _param("padding_mode", PaddingMode)
    kernel = _param("kernel", _weights)
    bias = _param("bias", _weights)

    @property
    def padding_nd(self):
        return self._p["pre_padding"]

    @padding_nd.setter
    def padding_nd(self, value):
        old = dict(self._p)
        self._p["pre_padding"] = self._p["post_padding"] = _dims(value, "padding_nd")
        try:
            self._rebuild()
        except BaseException:
            self._p = old
            raise

    def _emit(self):
        x, p = self._inputs[0], self._p
        shape = x.shape
        nd = len(p["kernel_size_nd"])
        if len(shape) != nd + 2 or shape[1] < 0:
            raise InvalidArgumentError(f"convolution: input '{x.name}' has shape {shape}; a {nd}-D convolution needs "
                                       f"rank {nd + 2} with a static channel dimension")
        k, g, c = p["num_output_maps"], p["num_groups"], shape[1]
        if g <= 0 or c % g or k % g:
            raise InvalidArgumentError(f"convolution: num_groups {g} must divide the input channels ({c}) and "
                                       f"num_output_maps ({k})")
        wshape = (k, c // g) + p["kernel_size_nd"]
        kernel = p["kernel"]
        if kernel.size != math.prod(wshape):
            raise InvalidArgumentError(f"convolution: kernel weights hold {kernel.size} values but num_output_maps "
                                       f"{k}, {c // g} input channels per group and kernel {p['kernel_size_nd']} "
                                       f"need {math.prod(wshape)}")
        dt = nptype(x.dtype)
        inputs = [x, self._const("kernel", kernel.reshape(wshape).astype(dt, copy=False))]
        if p["bias"] is not None:
            if p["bias"].size != k:
                raise InvalidArgumentError(f"convolution: {p['bias'].size} bias values for {k} output maps")
            inputs.append(self._const("bias", p["bias"].reshape(k).astype(dt, copy=False)))
        attrs = dict(kernel_shape=p["kernel_size_nd"], strides=p["stride_nd"], dilations=p["dilation_nd"], group=g)
        mode = p["padding_mode"]
        if mode == PaddingMode.EXPLICIT_ROUND_UP:
            raise UnsupportedError("convolution: PaddingMode.EXPLICIT_ROUND_UP is not supported")
        if mode in (PaddingMode.SAME_UPPER, PaddingMode.SAME_LOWER):
            attrs["auto_pad"] = mode.name
        else:
            attrs["pads"] = p["pre_padding"] + p["post_padding"]
        return [self._op("Conv", inputs, **attrs)]


class IPoolingLayer(ILayer):
    _layer_type = LayerType.POOLING

    def __init__(self, network, input, type, window_size):
        nd = len(window_size)
        super().__init__(network, [input], pooling_type=PoolingType(type),
                         window_size_nd=_dims(window_size, "window_size"), stride_nd=(1,) * nd,
                         pre_padding=(0,) * nd, post_padding=(0,) * nd, padding_mode=PaddingMode.EXPLICIT_ROUND_DOWN,
                         average_count_excludes_padding=True, blend_factor=0.0)

    # As in TensorRT, a pooling layer's `type` is its pooling type (layer_type gives the LayerType).
    type = _param("pooling_type", PoolingType)
    window_size_nd = _param("window_size_nd", lambda v: _dims(v, "window_size_nd"))
    stride_nd = _param("stride_nd", lambda v: _dims(v, "stride_nd"))
    pre_padding = _param("pre_padding", lambda v: _dims(v, "pre_padding"))
    post_padding = _param("post_padding", lambda v: _dims(v, "post_padding"))
    padding_mode = _param("padding_mode", PaddingMode)
    average_count_excludes_padding = _param("average_count_excludes_padding", bool)
    blend_factor = _param("blend_factor", float)
    padding_nd = IConvolutionLayer.padding_nd

    def _emit(self):
        p = self._p
        if p["pooling_type"] == PoolingType.MAX_AVERAGE_BLEND:
            raise UnsupportedError("pooling: PoolingType.MAX_AVERAGE_BLEND is not supported")
        attrs = dict(kernel_shape=p["window_size_nd"], strides=p["stride_nd"])
        mode = p["padding_mode"]
        if mode in (PaddingMode.SAME_UPPER, PaddingMode.SAME_LOWER):
            attrs["auto_pad"] = mode.name
        else:
            attrs["pads"] = p["pre_padding"] + p["post_padding"]
            attrs["ceil_mode"] = int(mode == PaddingMode.EXPLICIT_ROUND_UP)
        if p["pooling_type"] == PoolingType.MAX:
            return [self._op("MaxPool", self._inputs, **attrs)]
        attrs["count_include_pad"] = int(not p["average_count_excludes_padding"])
        return [self._op("AveragePool", self._inputs, **attrs)]


class IActivationLayer(ILayer):
    _layer_type = LayerType.ACTIVATION

    def __init__(self, network, input, type):
        super().__init__(network, [input], activation_type=ActivationType(type), alpha=0.0, beta=0.0)

    type = _param("activation_type", ActivationType)
    alpha = _param("alpha", float)
    beta = _param("beta", float)

    def _emit(self):
        x, p = self._inputs[0], self._p
        t, a, b = p["activation_type"], p["alpha"], p["beta"]
        A = ActivationType
        simple = {A.RELU: "Relu", A.SIGMOID: "Sigmoid", A.TANH: "Tanh", A.SOFTSIGN: "Softsign", A.GELU_ERF: "Gelu"}
        if t in simple:
            return [self._op(simple[t], [x])]
        if t == A.GELU_TANH:
            return [self._op("Gelu", [x], approximate="tanh")]
        if t == A.LEAKY_RELU:
            return [self._op("LeakyRelu", [x], alpha=a)]
        if t == A.ELU:
            return [self._op("Elu", [x], alpha=a)]
        if t == A.SELU:
            return [self._op("Selu", [x], alpha=a, gamma=b)]
        if t == A.HARD_SIGMOID:
            return [self._op("HardSigmoid", [x], alpha=a, beta=b)]
        if t == A.THRESHOLDED_RELU:
            return [self._op("ThresholdedRelu", [x], alpha=a)]
        if t == A.CLIP:
            return [self._op("Clip", [x, self._scalar(a, x.dtype), self._scalar(b, x.dtype)])]
        if t == A.SOFTPLUS:  # alpha * log(exp(beta * x) + 1)
            inner = self._op("Softplus", [self._op("Mul", [x, self._scalar(b, x.dtype)])])
            return [self._op("Mul", [inner, self._scalar(a, x.dtype)])]
        if t == A.SCALED_TANH:  # alpha * tanh(beta * x)
            inner = self._op("Tanh", [self._op("Mul", [x, self._scalar(b, x.dtype)])])
            return [self._op("Mul", [inner, self._scalar(a, x.dtype)])]
        raise UnsupportedError(f"activation type {t!r} is not supported")


class IElementWiseLayer(ILayer):
    _layer_type = LayerType.ELEMENTWISE

    def __init__(self, network, a, b, op):
        super().__init__(network, [a, b], op=ElementWiseOperation(op))

    op = _param("op", ElementWiseOperation)

    def _placeholder_info(self):
        a, b = self._inputs
        rank = max(len(a.shape), len(b.shape))
        logical = self._p["op"] >= ElementWiseOperation.AND
        return (DataType.BOOL if logical else a.dtype), rank

    _ONNX = {"SUM": "Add", "PROD": "Mul", "MAX": "Max", "MIN": "Min", "SUB": "Sub", "DIV": "Div", "POW": "Pow",
             "AND": "And", "OR": "Or", "XOR": "Xor", "EQUAL": "Equal", "GREATER": "Greater", "LESS": "Less"}

    def _emit(self):
        a, b = self._inputs
        op = self._p["op"]
        if op != ElementWiseOperation.FLOOR_DIV:
            return [self._op(self._ONNX[op.name], [a, b])]
        if a.dtype in (DataType.FLOAT, DataType.HALF, DataType.BF16, DataType.DOUBLE):
            return [self._op("Floor", [self._op("Div", [a, b])])]
        # Integers: a - mod(a, b) (mod with the divisor's sign) is an exact multiple of b, so Div is exact.
        return [self._op("Div", [self._op("Sub", [a, self._op("Mod", [a, b], fmod=0)]), b])]


class IMatrixMultiplyLayer(ILayer):
    _layer_type = LayerType.MATRIX_MULTIPLY

    def __init__(self, network, a, op0, b, op1):
        super().__init__(network, [a, b], op0=MatrixOperation(op0), op1=MatrixOperation(op1))

    op0 = _param("op0", MatrixOperation)
    op1 = _param("op1", MatrixOperation)

    def _placeholder_info(self):
        a, b = self._inputs
        vectors = (self._p["op0"] == MatrixOperation.VECTOR) + (self._p["op1"] == MatrixOperation.VECTOR)
        return a.dtype, max(len(a.shape), len(b.shape)) - vectors

    def _operand(self, t, op, vector_axis):
        if op == MatrixOperation.NONE:
            return t
        rank = _rank(t, "matrix multiply")
        if op == MatrixOperation.TRANSPOSE:
            if rank < 2:
                raise InvalidArgumentError(f"matrix multiply: cannot transpose rank-{rank} tensor '{t.name}'")
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            return self._op("Transpose", [t], perm=perm)
        return self._op("Unsqueeze", [t, self._i64([vector_axis])])

    def _emit(self):
        a, b = self._inputs
        op0, op1 = self._p["op0"], self._p["op1"]
        y = self._op("MatMul", [self._operand(a, op0, -2), self._operand(b, op1, -1)])
        squeeze = ([-2] if op0 == MatrixOperation.VECTOR else []) + ([-1] if op1 == MatrixOperation.VECTOR else [])
        if squeeze:
            y = self._op("Squeeze", [y, self._i64(squeeze)])
        return [y]


class ISoftMaxLayer(ILayer):
    _layer_type = LayerType.SOFTMAX

    def __init__(self, network, input):
        rank = _rank(input, "softmax")
        super().__init__(network, [input], axes=1 << max(0, rank - 3))

    axes = _param("axes", int, "Bit mask with the one axis softmax runs along (default: rank - 3, or 0).")

    def _emit(self):
        x = self._inputs[0]
        axes = _mask_to_axes(self._p["axes"], _rank(x, "softmax"), "softmax")
        if len(axes) != 1:
            raise InvalidArgumentError(f"softmax: axes must select exactly one axis, got {self._p['axes']:#b}")
        return [self._op("Softmax", [x], axis=axes[0])]


class IShuffleLayer(ILayer):
    _layer_type = LayerType.SHUFFLE

    def __init__(self, network, input):
        super().__init__(network, [input], first_transpose=None, reshape_dims=None, second_transpose=None,
                         zero_is_placeholder=True)

    first_transpose = _param("first_transpose", lambda v: _dims(v, "first_transpose"))
    reshape_dims = _param("reshape_dims", lambda v: _dims(v, "reshape_dims"))
    second_transpose = _param("second_transpose", lambda v: _dims(v, "second_transpose"))
    zero_is_placeholder = _param("zero_is_placeholder", bool)

    def _placeholder_info(self):
        dims = self._p["reshape_dims"]
        return self._inputs[0].dtype, len(dims) if dims is not None else len(self._inputs[0].shape)

    def _emit(self):
        p, t = self._p, self._inputs[0]
        emitted = False
        if p["first_transpose"] is not None and p["first_transpose"] != tuple(range(len(p["first_transpose"]))):
            t, emitted = self._op("Transpose", [t], perm=p["first_transpose"]), True
        # A second input (set_input(1, shape_tensor)) is a run-time shape and overrides reshape_dims.
        shape = self._inputs[1] if len(self._inputs) > 1 else None
        if shape is None and p["reshape_dims"] is not None:
            shape = self._i64(p["reshape_dims"])
        if shape is not None:
            t, emitted = self._op("Reshape", [t, shape], allowzero=int(not p["zero_is_placeholder"])), True
        if p["second_transpose"] is not None and p["second_transpose"] != tuple(range(len(p["second_transpose"]))):
            t, emitted = self._op("Transpose", [t], perm=p["second_transpose"]), True
        return [t if emitted else self._op("Identity", [t])]


class IConstantLayer(ILayer):
    _layer_type = LayerType.CONSTANT

    def __init__(self, network, shape, weights):
        super().__init__(network, [], shape=_dims(shape, "shape"), weights=_host_array(weights))

    def _array(self):
        w, shape = self._p["weights"], self._p["shape"]
        if w.size != math.prod(shape):
            raise InvalidArgumentError(f"constant: shape {shape} needs {math.prod(shape)} values, the weights hold "
                                       f"{w.size}")
        return np.ascontiguousarray(w.reshape(shape))

    def _create(self):
        self._outputs = [self._network._constant(self._array())]
        self._network._register(self)
        return self

    def _rebuild(self):
        a = self._array()
        self._network._net.set_constant(self._outputs[0], from_numpy_dtype(a.dtype), a.shape, a)

    shape = _param("shape", lambda v: _dims(v, "shape"))
    weights = _param("weights", _host_array)


class IConcatenationLayer(ILayer):
    _layer_type = LayerType.CONCATENATION

    def __init__(self, network, inputs):
        if not inputs:
            raise InvalidArgumentError("add_concatenation: no inputs")
        super().__init__(network, inputs, axis=max(0, _rank(inputs[0], "concatenation") - 3))

    axis = _param("axis", int, "The axis to join along (default: rank - 3, or 0).")

    def _emit(self):
        return [self._op("Concat", self._inputs, axis=self._p["axis"])]


class IReduceLayer(ILayer):
    _layer_type = LayerType.REDUCE

    def __init__(self, network, input, op, axes, keep_dims):
        super().__init__(network, [input], op=ReduceOperation(op), axes=int(axes), keep_dims=bool(keep_dims))

    op = _param("op", ReduceOperation)
    axes = _param("axes", int, "Bit mask of the axes to reduce.")
    keep_dims = _param("keep_dims", bool)

    def _placeholder_info(self):
        x, p = self._inputs[0], self._p
        rank = len(x.shape)
        return x.dtype, rank if p["keep_dims"] else rank - bin(p["axes"] & ((1 << rank) - 1)).count("1")

    _ONNX = {"SUM": "ReduceSum", "PROD": "ReduceProd", "MAX": "ReduceMax", "MIN": "ReduceMin", "AVG": "ReduceMean"}

    def _emit(self):
        x, p = self._inputs[0], self._p
        axes = _mask_to_axes(p["axes"], _rank(x, "reduce"), "reduce")
        op = self._ONNX[p["op"].name]
        # Axes became an input at opset 13 for ReduceSum and at opset 18 for the others.
        if self._network._net.opset >= 18 or (op == "ReduceSum" and self._network._net.opset >= 13):
            return [self._op(op, [x, self._i64(axes)], keepdims=int(p["keep_dims"]))]
        return [self._op(op, [x], axes=axes, keepdims=int(p["keep_dims"]))]


class ISliceLayer(ILayer):
    _layer_type = LayerType.SLICE

    def __init__(self, network, input, start, shape, stride):
        super().__init__(network, [input], start=_dims(start, "start"), shape=_dims(shape, "shape"),
                         stride=_dims(stride, "stride"), mode=SampleMode.STRICT_BOUNDS)

    start = _param("start", lambda v: _dims(v, "start"))
    shape = _param("shape", lambda v: _dims(v, "shape"))
    stride = _param("stride", lambda v: _dims(v, "stride"))
    mode = _param("mode", SampleMode)

    def _emit(self):
        x, p = self._inputs[0], self._p
        if len(self._inputs) > 1:
            raise UnsupportedError("slice: run-time start/shape/stride tensors (set_input) are not supported yet")
        if p["mode"] != SampleMode.STRICT_BOUNDS:
            raise UnsupportedError(f"slice: {p['mode']!r} is not supported; only SampleMode.STRICT_BOUNDS")
        rank = _rank(x, "slice")
        if not len(p["start"]) == len(p["shape"]) == len(p["stride"]) == rank:
            raise InvalidArgumentError(f"slice: start {p['start']}, shape {p['shape']} and stride {p['stride']} "
                                       f"must each have {rank} entries (the rank of '{x.name}')")
        ends = []
        for s, n, st in zip(p["start"], p["shape"], p["stride"]):
            if st == 0:
                raise InvalidArgumentError("slice: strides must not be 0")
            end = s + (n - 1) * st + (1 if st > 0 else -1)
            # A negative end would count from the back in ONNX; far below zero means "past index 0".
            ends.append(end if n > 0 and (st > 0 or end >= 0) else (s if n == 0 else -(1 << 62)))
        return [self._op("Slice", [x, self._i64(p["start"]), self._i64(ends), self._i64(list(range(rank))),
                                   self._i64(p["stride"])])]


class IGatherLayer(ILayer):
    _layer_type = LayerType.GATHER

    def __init__(self, network, input, indices, axis=0, mode=GatherMode.DEFAULT):
        super().__init__(network, [input, indices], axis=int(axis), mode=GatherMode(mode), num_elementwise_dims=0)

    axis = _param("axis", int)
    mode = _param("mode", GatherMode)
    num_elementwise_dims = _param("num_elementwise_dims", int)

    def _emit(self):
        p = self._p
        if p["mode"] == GatherMode.ELEMENT:
            return [self._op("GatherElements", self._inputs, axis=p["axis"])]
        if p["mode"] == GatherMode.ND:
            return [self._op("GatherND", self._inputs, batch_dims=p["num_elementwise_dims"])]
        if p["num_elementwise_dims"]:
            raise UnsupportedError("gather: num_elementwise_dims must be 0 in GatherMode.DEFAULT")
        return [self._op("Gather", self._inputs, axis=p["axis"])]


class IIdentityLayer(ILayer):
    _layer_type = LayerType.IDENTITY

    def _emit(self):
        return [self._op("Identity", self._inputs)]


class ICastLayer(ILayer):
    _layer_type = LayerType.CAST

    def __init__(self, network, input, to_type):
        super().__init__(network, [input], to_type=as_datatype(to_type))

    to_type = _param("to_type", as_datatype)

    def _placeholder_info(self):
        return self._p["to_type"], len(self._inputs[0].shape)

    def _emit(self):
        return [self._op("Cast", self._inputs, to=_kiln.onnx_type_code(self._p["to_type"]))]


class INormalizationLayer(ILayer):
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the axes of a bit mask; with num_groups > 1 the
    channels (axis 1) are split into groups first, and scale/bias hold one value per group or per channel."""
    _layer_type = LayerType.NORMALIZATION

    def __init__(self, network, input, scale, bias, axes):
        super().__init__(network, [input, scale, bias], epsilon=1e-5, axes=int(axes), num_groups=1,
                         compute_precision=input.dtype)

    epsilon = _param("epsilon", float)
    axes = _param("axes", int, "Bit mask of the axes to normalize over.")
    num_groups = _param("num_groups", int)
    compute_precision = _param("compute_precision", as_datatype)

    def _normalize(self, x, axes):
        mean = self._op("ReduceMean", [x], axes=axes, keepdims=1) if self._network._net.opset < 18 else \
            self._op("ReduceMean", [x, self._i64(axes)], keepdims=1)
        d = self._op("Sub", [x, mean])
        sq = self._op("Mul", [d, d])
        var = self._op("ReduceMean", [sq], axes=axes, keepdims=1) if self._network._net.opset < 18 else \
            self._op("ReduceMean", [sq, self._i64(axes)], keepdims=1)
        std = self._op("Sqrt", [self._op("Add", [var, self._scalar(self._p["epsilon"], x.dtype)])])
        return self._op("Div", [d, std])

    def _emit(self):
        x, scale, bias = self._inputs
        p = self._p
        if p["compute_precision"] != x.dtype:
            raise UnsupportedError(f"normalization: compute_precision {p['compute_precision']!r} differs from the "
                                   f"input type {x.dtype!r}; the CPU backend computes in the input type")
        rank = _rank(x, "normalization")
        axes = _mask_to_axes(p["axes"], rank, "normalization")
        g = p["num_groups"]
        if g == 1:
            y = self._normalize(x, axes)
            return [self._op("Add", [self._op("Mul", [y, scale]), bias])]
        c = x.shape[1] if rank >= 2 else -1
        if g <= 0 or c <= 0 or c % g:
            raise InvalidArgumentError(f"normalization: num_groups {g} must divide the static channel dimension "
                                       f"of '{x.name}' {x.shape}")
        grouped = self._op("Reshape", [x, self._i64([0, g, -1])])
        y = self._normalize(grouped, [2])
        per = math.prod(scale.shape) if scale.shape else 1
        if per == g:  # per-group scale and bias, applied while grouped
            shape = self._i64([1, g, 1])
            y = self._op("Add", [self._op("Mul", [y, self._op("Reshape", [scale, shape])]),
                                 self._op("Reshape", [bias, shape])])
            return [self._op("Reshape", [y, self._op("Shape", [x])])]
        y = self._op("Reshape", [y, self._op("Shape", [x])])
        return [self._op("Add", [self._op("Mul", [y, scale]), bias])]
