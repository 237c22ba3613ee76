"""Runtime, ICudaEngine and IExecutionContext, plus the Pythonic infer() and the DLPack helpers it uses.

Addresses are integers as in TensorRT: host pointers for engines on the CPU backend (which ignores stream
handles and runs synchronously), device pointers once the CUDA backend binds them.
"""
import ctypes
import enum
import threading

import numpy as np

from . import _kiln
from ._kiln import Backend, InvalidArgumentError, IProfiler, TensorIOMode, UnsupportedError
from ._types import storage_dtype
from .builder import IHostMemory


class TensorLocation(enum.IntEnum):
    DEVICE = 0
    HOST = 1


class Profiler(IProfiler):
    """Prints each layer's time, like TensorRT's default Profiler."""

    def __init__(self):
        IProfiler.__init__(self)

    def report_layer_time(self, layer_name, ms):
        print(f"{layer_name}: {ms:.3f}ms")


# --- DLPack ---------------------------------------------------------------------------------------------------

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

_DL_CPU, _DL_CUDA_HOST = 1, 3
_DL_INT, _DL_UINT, _DL_FLOAT, _DL_BFLOAT, _DL_BOOL = 0, 1, 2, 4, 6
_DLPACK_TYPES = {
    _kiln.DataType.FLOAT: {(_DL_FLOAT, 32)}, _kiln.DataType.HALF: {(_DL_FLOAT, 16)},
    _kiln.DataType.DOUBLE: {(_DL_FLOAT, 64)}, _kiln.DataType.BF16: {(_DL_BFLOAT, 16)},
    _kiln.DataType.INT8: {(_DL_INT, 8)}, _kiln.DataType.INT16: {(_DL_INT, 16)},
    _kiln.DataType.INT32: {(_DL_INT, 32)}, _kiln.DataType.INT64: {(_DL_INT, 64)},
    _kiln.DataType.UINT8: {(_DL_UINT, 8)}, _kiln.DataType.UINT16: {(_DL_UINT, 16)},
    _kiln.DataType.UINT32: {(_DL_UINT, 32)}, _kiln.DataType.UINT64: {(_DL_UINT, 64)},
    _kiln.DataType.BOOL: {(_DL_BOOL, 8), (_DL_UINT, 8)},
}


class DLPackView:
    """What a DLPack producer (a torch or CuPy tensor, a NumPy array, ...) exposes, read without copying.
    Keep the view (it holds the producer) while `data` is in use."""

    def __init__(self, obj):
        self.owner = obj
        self.capsule = obj.__dlpack__()
        t = _DLTensor.from_address(_capsule_pointer(self.capsule, b"dltensor"))
        self.data = (t.data or 0) + t.byte_offset
        self.device = (t.device.device_type, t.device.device_id)
        self.shape = tuple(t.shape[i] for i in range(t.ndim))
        self.strides = None if not t.strides else tuple(t.strides[i] for i in range(t.ndim))
        self.dtype = (t.dtype.code, t.dtype.bits, t.dtype.lanes)

    @property
    def is_host(self):
        return self.device[0] in (_DL_CPU, _DL_CUDA_HOST)

    @property
    def is_c_contiguous(self):
        if self.strides is None:
            return True
        expect = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n != 1 and s != expect:
                return False
            expect *= n
        return True


def as_host_array(obj):
    """A NumPy array over any host tensor (NumPy, or a DLPack producer such as a CPU torch tensor), zero-copy."""
    if isinstance(obj, np.ndarray):
        return obj
    if hasattr(obj, "__dlpack__"):
        return np.from_dlpack(obj)
    return np.asarray(obj)


def _host_input(name, value, dtype):
    """(address, shape, keep-alive) for an input value of the engine's dtype, without copying when possible."""
    want = storage_dtype(dtype)
    hint = f"input '{name}' expects {dtype.type_name}"
    if not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__"):
        try:
            view = DLPackView(value)
        except (RuntimeError, BufferError, TypeError) as e:
            raise TypeError(f"{hint}: cannot read it through DLPack: {e}") from None
        if not view.is_host:
            raise UnsupportedError(f"{hint} in host memory for the CPU backend, but it is on DLPack device "
                                   f"{view.device}; copy it to the host first (for torch: .cpu())")
        if view.dtype[2] != 1 or view.dtype[:2] not in _DLPACK_TYPES.get(dtype, ()):
            raise TypeError(f"{hint} but got DLPack type code {view.dtype[0]} with {view.dtype[1]} bits; convert it "
                            f"first (for torch: .to(...))")
        if view.is_c_contiguous:
            return view.data, view.shape, view
        value = np.from_dlpack(value)
    if isinstance(value, np.ndarray):
        if value.dtype != want:
            raise TypeError(f"{hint} ({want}) but got a {value.dtype} array; convert it with .astype(np.{want})")
    else:
        value = np.asarray(value, dtype=want)  # lists and scalars carry no type of their own
    value = np.ascontiguousarray(value)
    return value.ctypes.data, value.shape, value


def _address(memory, name):
    if isinstance(memory, (int, np.integer)):
        return int(memory)
    raise TypeError(f"the address for '{name}' must be an int (for a NumPy array: array.ctypes.data; for a torch "
                    f"tensor: tensor.data_ptr()), got {type(memory).__name__}")


# --- runtime objects --------------------------------------------------------------------------------------------

class Runtime:
    """Loads serialized engines."""

    def __init__(self, logger):
        self._logger = logger
        self._runtime = _kiln._Runtime(logger)

    def deserialize_cuda_engine(self, serialized_engine):
        """Any Kiln engine, whichever backend it was built for; raises on bytes that are not a valid engine."""
        return ICudaEngine(self._runtime.deserialize_engine(serialized_engine))

    deserialize_engine = deserialize_cuda_engine

    @property
    def logger(self):
        return self._logger


class ICudaEngine:
    """A built engine (TensorRT's name; a Kiln engine may run on the CPU backend)."""

    def __init__(self, engine):
        self._engine = engine
        self._local = threading.local()  # infer()'s context, one per thread

    @property
    def num_io_tensors(self):
        return self._engine.num_io_tensors

    def get_tensor_name(self, index):
        return self._engine.get_tensor_name(index)

    def _names(self, mode):
        e = self._engine
        return [e.get_tensor_name(i) for i in range(e.num_io_tensors) if e.get_tensor_mode(e.get_tensor_name(i)) == mode]

    @property
    def input_names(self):
        """Kiln: the input tensor names in order."""
        return self._names(TensorIOMode.INPUT)

    @property
    def output_names(self):
        """Kiln: the output tensor names in order."""
        return self._names(TensorIOMode.OUTPUT)

    def get_tensor_mode(self, name):
        return self._engine.get_tensor_mode(name)

    def get_tensor_dtype(self, name):
        return self._engine.get_tensor_dtype(name)

    def get_tensor_shape(self, name):
        return self._engine.get_tensor_shape(name)

    def get_tensor_location(self, name):
        self._engine.get_tensor_dtype(name)  # raises for unknown names
        return TensorLocation.HOST if self._engine.backend == Backend.CPU else TensorLocation.DEVICE

    def get_tensor_profile_shape(self, name, profile_index):
        return self._engine.get_profile_shape(name, profile_index)

    @property
    def num_optimization_profiles(self):
        return max(1, self._engine.num_optimization_profiles)

    @property
    def num_layers(self):
        return self._engine.num_layers

    @property
    def layer_names(self):
        """Kiln: the names the profiler reports, in execution order."""
        return self._engine.layer_names

    @property
    def backend(self):
        return self._engine.backend

    @property
    def device_memory_size(self):
        return 0  # the CPU backend allocates per context, not from caller-provided device memory

    def create_execution_context(self):
        return IExecutionContext(self, self._engine.create_execution_context())

    def serialize(self):
        return IHostMemory(self._engine.serialize())

    def infer(self, feed):
        """Kiln: runs the engine on a dict of input arrays (NumPy arrays or DLPack producers such as torch
        tensors) and returns a dict of NumPy output arrays. On the CPU backend, inputs are read in place when
        they are contiguous host memory of the input's type, and outputs are written once, into the returned
        arrays; a CUDA engine copies them to and from the device. Each thread gets its own context."""
        ctx = getattr(self._local, "context", None)
        if ctx is None:
            ctx = self._local.context = self.create_execution_context()
        return ctx.infer(feed)

    def __repr__(self):
        return f"<kiln.ICudaEngine {self._engine.backend.name} inputs={self.input_names} outputs={self.output_names}>"


class IExecutionContext:
    """Per-run state of an engine: input shapes, bound addresses, the profiler."""

    def __init__(self, engine, context):
        self._engine = engine
        self._ctx = context
        self._profile = 0
        self.name = ""
        self.debug_sync = False

    @property
    def engine(self):
        return self._engine

    def set_input_shape(self, name, shape):
        self._ctx.set_input_shape(name, tuple(int(d) for d in shape))
        return True

    def get_tensor_shape(self, name):
        return self._ctx.get_tensor_shape(name)

    def set_tensor_address(self, name, memory):
        self._ctx.set_tensor_address(name, _address(memory, name))
        return True

    def get_tensor_address(self, name):
        return self._ctx.get_tensor_address(name)

    def set_output_allocator(self, name, output_allocator):
        self._ctx.set_output_allocator(name, output_allocator)
        return True

    def get_output_allocator(self, name):
        return self._ctx.get_output_allocator(name)

    @property
    def active_optimization_profile(self):
        return self._profile

    @active_optimization_profile.setter
    def active_optimization_profile(self, index):
        self.set_optimization_profile_async(index, 0)

    def set_optimization_profile_async(self, profile_index, stream_handle):
        self._ctx.set_optimization_profile(int(profile_index))
        self._profile = int(profile_index)
        return True

    @property
    def profiler(self):
        return self._ctx.profiler

    @profiler.setter
    def profiler(self, profiler):
        if profiler is not None and not isinstance(profiler, IProfiler):
            raise TypeError(f"profiler must be a kiln.IProfiler (call IProfiler.__init__(self) in the subclass's "
                            f"__init__), got {type(profiler).__name__}")
        self._ctx.profiler = profiler

    def execute_async_v3(self, stream_handle=0):
        """Enqueues a run with the bound addresses on a CUDA stream (0: the context's own stream). On the CPU
        backend the run is synchronous and the stream is not used."""
        self._ctx.execute(int(stream_handle))
        return True

    def execute_v2(self, bindings):
        """Binds one address per I/O tensor, in engine order (engine.get_tensor_name(i)), and runs."""
        n = self._engine.num_io_tensors
        if len(bindings) != n:
            raise InvalidArgumentError(f"execute_v2 needs {n} bindings (one per I/O tensor: "
                                       f"{[self._engine.get_tensor_name(i) for i in range(n)]}), got {len(bindings)}")
        for i, address in enumerate(bindings):
            self.set_tensor_address(self._engine.get_tensor_name(i), address)
        self._ctx.execute()
        return True

    def infer(self, feed):
        """Kiln: see ICudaEngine.infer. Uses its own bindings; those set with set_tensor_address stay as they were."""
        inputs, keep = [], []
        given = set()
        for name, value in feed.items():
            if self._engine.get_tensor_mode(name) != TensorIOMode.INPUT:
                raise InvalidArgumentError(f"'{name}' is not an input of the engine (inputs: "
                                           f"{', '.join(self._engine.input_names)})")
            address, shape, holder = _host_input(name, value, self._engine.get_tensor_dtype(name))
            inputs.append((name, address, tuple(shape)))
            keep.append(holder)
            given.add(name)
        missing = [n for n in self._engine.input_names if n not in given]
        if missing:
            raise InvalidArgumentError(f"inputs {missing} are missing (the engine takes "
                                       f"{', '.join(self._engine.input_names)})")
        results = self._ctx.run_arrays(inputs)
        del keep
        return {name: raw.view(storage_dtype(dt)).reshape(dims) for name, raw, dims, dt in results}
