"""Data types: TensorRT-style aliases (kiln.float32, ...), nptype() and the NumPy storage of every Kiln type."""
import numpy as np

from ._kiln import DataType

float32 = DataType.FLOAT
float16 = DataType.HALF
bfloat16 = DataType.BF16
float64 = DataType.DOUBLE
int8 = DataType.INT8
uint8 = DataType.UINT8
int16 = DataType.INT16
uint16 = DataType.UINT16
int32 = DataType.INT32
uint32 = DataType.UINT32
int64 = DataType.INT64
uint64 = DataType.UINT64
bool = DataType.BOOL  # noqa: A001 (TensorRT names it so)
fp8 = DataType.FP8
int4 = DataType.INT4
uint4 = DataType.UINT4
fp4 = DataType.FP4
e8m0 = DataType.E8M0

_NUMPY = {
    DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.DOUBLE: np.float64,
    DataType.INT8: np.int8, DataType.UINT8: np.uint8, DataType.INT16: np.int16, DataType.UINT16: np.uint16,
    DataType.INT32: np.int32, DataType.UINT32: np.uint32, DataType.INT64: np.int64, DataType.UINT64: np.uint64,
    DataType.BOOL: np.bool_,
}
_FROM_NUMPY = {np.dtype(v): k for k, v in _NUMPY.items()}


def nptype(dtype):
    """The NumPy type of a Kiln DataType (TypeError for types NumPy lacks, such as bfloat16 and the FP8 types)."""
    try:
        return _NUMPY[dtype]
    except KeyError:
        raise TypeError(f"{dtype} has no NumPy equivalent; Kiln holds its elements as {storage_dtype(dtype)}") from None


def storage_dtype(dtype):
    """The NumPy dtype that holds a DataType's raw elements: nptype() where NumPy has the type, otherwise an
    unsigned integer of the same width (bfloat16 -> uint16; FP8 and the sub-byte types -> uint8, one per byte)."""
    if dtype in _NUMPY:
        return np.dtype(_NUMPY[dtype])
    return np.dtype(np.uint16) if dtype.itemsize == 2 else np.dtype(np.uint8)


def from_numpy_dtype(dtype):
    """The DataType of a NumPy dtype (TypeError when Kiln has none)."""
    try:
        return _FROM_NUMPY[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise TypeError(f"NumPy dtype {dtype} has no Kiln DataType") from None


def as_datatype(dtype):
    """Accepts a DataType or anything NumPy reads as a dtype (np.float32, "float16", ...)."""
    if isinstance(dtype, DataType):
        return dtype
    return from_numpy_dtype(dtype)
