"""Enums and small value types of the network API, with TensorRT's names: layer kinds and modes, Dims, Weights."""
import enum

import numpy as np

from ._kiln import DataType
from ._types import from_numpy_dtype, nptype


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    ACTIVATION = 1
    POOLING = 2
    ELEMENTWISE = 3
    SOFTMAX = 4
    CONCATENATION = 5
    SHUFFLE = 6
    REDUCE = 7
    CONSTANT = 8
    MATRIX_MULTIPLY = 9
    SLICE = 10
    GATHER = 11
    IDENTITY = 12
    CAST = 13
    NORMALIZATION = 14
    UNARY = 15
    PADDING = 16
    RESIZE = 17
    TOPK = 18
    SHAPE = 19
    SELECT = 20
    EINSUM = 21
    SCATTER = 22
    CONDITION = 23
    LOOP = 24
    QUANTIZE = 25
    DEQUANTIZE = 26
    OPERATOR = 100  # Kiln: any other ONNX operator (from the parser or INetworkDefinition.add_op)


class ActivationType(enum.IntEnum):
    RELU = 0
    SIGMOID = 1
    TANH = 2
    LEAKY_RELU = 3
    ELU = 4
    SELU = 5
    SOFTSIGN = 6
    SOFTPLUS = 7
    CLIP = 8
    HARD_SIGMOID = 9
    SCALED_TANH = 10
    THRESHOLDED_RELU = 11
    GELU_ERF = 12
    GELU_TANH = 13


class ElementWiseOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    DIV = 5
    POW = 6
    FLOOR_DIV = 7
    AND = 8
    OR = 9
    XOR = 10
    EQUAL = 11
    GREATER = 12
    LESS = 13


class PoolingType(enum.IntEnum):
    MAX = 0
    AVERAGE = 1
    MAX_AVERAGE_BLEND = 2


class ReduceOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


class MatrixOperation(enum.IntEnum):
    NONE = 0
    TRANSPOSE = 1
    VECTOR = 2


class PaddingMode(enum.IntEnum):
    EXPLICIT_ROUND_DOWN = 0
    EXPLICIT_ROUND_UP = 1
    SAME_UPPER = 2
    SAME_LOWER = 3


class SampleMode(enum.IntEnum):
    STRICT_BOUNDS = 0
    WRAP = 1
    CLAMP = 2
    FILL = 3
    REFLECT = 4


class GatherMode(enum.IntEnum):
    DEFAULT = 0
    ELEMENT = 1
    ND = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    """Flags for Builder.create_network(1 << int(flag)). Kiln networks always have an explicit batch dimension and
    compute in the types they declare, so both flags are accepted and change nothing."""
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class Dims(tuple):
    """A shape; any sequence of ints is accepted wherever Kiln takes one."""

    def __new__(cls, *dims):
        if len(dims) == 1 and not isinstance(dims[0], (int, np.integer)):
            dims = tuple(dims[0])
        return super().__new__(cls, (int(d) for d in dims))

    def __repr__(self):
        return f"{type(self).__name__}{tuple(self)}"


class Dims2(Dims):
    pass


class DimsHW(Dims2):
    pass


class Dims3(Dims):
    pass


class Dims4(Dims):
    pass


class Permutation(Dims):
    pass


class Weights:
    """An array of layer weights (TensorRT's Weights); NumPy arrays can be passed directly instead."""

    def __init__(self, a=None):
        if isinstance(a, DataType):
            self._array = np.zeros(0, dtype=nptype(a))
        else:
            self._array = None if a is None else _host_array(a)

    def numpy(self):
        return self._array

    @property
    def dtype(self):
        return DataType.FLOAT if self._array is None else from_numpy_dtype(self._array.dtype)

    @property
    def size(self):
        return 0 if self._array is None else self._array.size

    nbytes = property(lambda self: 0 if self._array is None else self._array.nbytes)

    def __len__(self):
        return self.size


def _host_array(a):
    if isinstance(a, Weights):
        return a.numpy()
    if not isinstance(a, np.ndarray) and hasattr(a, "__dlpack__"):
        a = np.from_dlpack(a)
    return np.ascontiguousarray(np.asarray(a))


def _weights(w):
    """A contiguous array, or None for absent/empty weights."""
    if w is None:
        return None
    a = _host_array(w)
    return a if a is not None and a.size else None


def _dims(d, what):
    try:
        return tuple(int(x) for x in d)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints, got {d!r}") from None
