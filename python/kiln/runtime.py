"""Runtime, ICudaEngine and IExecutionContext, plus the Pythonic infer() and the DLPack helpers it uses.

Addresses are integers as in TensorRT: host pointers for engines on the CPU backend (which ignores stream
handles and runs synchronously), device pointers once the CUDA backend binds them.
"""
import ctypes
import enum
import sys
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


def _c_contiguous(shape, strides):
    """Whether element strides (None: dense) describe a C-order layout; size-1 dims may have any stride."""
    if strides is None:
        return True
    expect = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


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
        return _c_contiguous(self.shape, self.strides)


# --- GPU tensors (torch, CuPy, Numba...) -------------------------------------------------------------------------

_DL_CUDA, _DL_CUDA_MANAGED = 2, 13
_FROM_DLPACK = {code_bits: dt for dt, codes in _DLPACK_TYPES.items() for code_bits in codes
                if dt != _kiln.DataType.BOOL or code_bits[0] == _DL_BOOL}
_FROM_TYPESTR = {"f4": _kiln.DataType.FLOAT, "f2": _kiln.DataType.HALF, "f8": _kiln.DataType.DOUBLE,
                 "i1": _kiln.DataType.INT8, "u1": _kiln.DataType.UINT8, "i2": _kiln.DataType.INT16,
                 "u2": _kiln.DataType.UINT16, "i4": _kiln.DataType.INT32, "u4": _kiln.DataType.UINT32,
                 "i8": _kiln.DataType.INT64, "u8": _kiln.DataType.UINT64, "b1": _kiln.DataType.BOOL}


def is_device_tensor(obj):
    """Whether obj is a GPU tensor Kiln can bind in place: it offers __cuda_array_interface__, or DLPack on a
    CUDA device (torch CUDA tensors and CuPy arrays offer both)."""
    if isinstance(obj, np.ndarray):
        return False
    if hasattr(obj, "__dlpack_device__"):
        try:
            return int(obj.__dlpack_device__()[0]) in (_DL_CUDA, _DL_CUDA_MANAGED)
        except Exception:  # noqa: BLE001 - a producer that cannot say where it lives is not bindable
            return False
    return hasattr(obj, "__cuda_array_interface__")


class DeviceTensorView:
    """A GPU tensor read without copying: data pointer, shape, element strides, Kiln dtype (None when Kiln has
    no such type) and CUDA device id (None when the producer does not say). Keep the view (it holds the tensor)
    while the pointer is in use. DLPack is read first: unlike __cuda_array_interface__ it carries bfloat16."""

    def __init__(self, obj):
        self.owner = obj
        self.device_id = None
        if hasattr(obj, "__dlpack__") and is_device_tensor(obj) and hasattr(obj, "__dlpack_device__"):
            v = DLPackView(obj)
            self._dlpack = v
            self.data, self.shape, self.device_id = v.data, v.shape, v.device[1]
            self.strides = v.strides
            self.dtype = _FROM_DLPACK.get(v.dtype[:2]) if v.dtype[2] == 1 else None
            self.type_text = f"DLPack type code {v.dtype[0]} with {v.dtype[1]} bits"
        elif hasattr(obj, "__cuda_array_interface__"):
            cai = obj.__cuda_array_interface__
            self.data = int(cai["data"][0] or 0)
            self.shape = tuple(int(d) for d in cai["shape"])
            typestr = cai["typestr"]
            self.dtype = _FROM_TYPESTR.get(typestr[1:]) if typestr[0] in "<|" else None
            self.type_text = f"typestr {typestr!r}"
            item = int(typestr[2:]) if typestr[2:].isdigit() else 1
            st = cai.get("strides")
            self.strides = None if st is None else tuple(int(b) // item for b in st)
        else:
            raise TypeError(f"a {type(obj).__name__} is not a GPU tensor (it has neither __cuda_array_interface__ "
                            f"nor DLPack on a CUDA device)")

    @property
    def is_c_contiguous(self):
        return _c_contiguous(self.shape, self.strides)

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * (self.dtype.itemsize if self.dtype is not None else 1)


def _device_view(what, obj, dtype):
    """Checks that obj can be bound in place as `what` of Kiln type `dtype`; returns its DeviceTensorView."""
    try:
        view = DeviceTensorView(obj)
    except (RuntimeError, BufferError, TypeError) as e:
        raise TypeError(f"{what} expects a GPU tensor of {dtype.type_name}: cannot read it ({e}); for torch, "
                        f"pass a CUDA tensor that does not require grad (.detach())") from None
    if view.dtype != dtype:
        have = view.dtype.type_name if view.dtype is not None else view.type_text
        raise TypeError(f"{what} expects {dtype.type_name} but the GPU tensor holds {have}; convert it first "
                        f"(for torch: .to(torch.{_TORCH_NAMES.get(dtype, 'float32')}))")
    if not view.is_c_contiguous:
        raise InvalidArgumentError(f"{what} must be C-contiguous, but the GPU tensor of shape {view.shape} has "
                                   f"element strides {view.strides}; pass .contiguous() (a copy you make knowingly)")
    if view.data == 0 and view.nbytes:
        raise InvalidArgumentError(f"{what}: the GPU tensor has a null data pointer")
    return view


_TORCH_NAMES = {
    _kiln.DataType.FLOAT: "float32", _kiln.DataType.HALF: "float16", _kiln.DataType.BF16: "bfloat16",
    _kiln.DataType.DOUBLE: "float64", _kiln.DataType.INT8: "int8", _kiln.DataType.UINT8: "uint8",
    _kiln.DataType.INT16: "int16", _kiln.DataType.UINT16: "uint16", _kiln.DataType.INT32: "int32",
    _kiln.DataType.UINT32: "uint32", _kiln.DataType.INT64: "int64", _kiln.DataType.UINT64: "uint64",
    _kiln.DataType.BOOL: "bool",
}


def _producer(obj):
    """'torch', 'cupy' or None: whose stream and allocator the GPU path of infer() follows."""
    root = type(obj).__module__.split(".")[0]
    return root if root in ("torch", "cupy") and root in sys.modules else None


def _empty_like_producer(producer, like, shape, dtype, name):
    if producer == "torch":
        torch = sys.modules["torch"]
        tdt = getattr(torch, _TORCH_NAMES.get(dtype, ""), None)
        if tdt is None:
            raise UnsupportedError(f"output '{name}' is {dtype.type_name}, which this torch has no type for")
        return torch.empty(tuple(shape), dtype=tdt, device=like.device)
    if producer == "cupy":
        cupy = sys.modules["cupy"]
        if dtype not in _NUMPY_OK:
            raise UnsupportedError(f"output '{name}' is {dtype.type_name}, which CuPy has no type for")
        with like.device:
            return cupy.empty(tuple(shape), dtype=storage_dtype(dtype))
    raise UnsupportedError(f"infer() allocates outputs only for torch and CuPy inputs; for other GPU tensors pass "
                           f"the outputs too: infer(feed, outputs={{'{name}': tensor}})")


_NUMPY_OK = {dt for dt in _TORCH_NAMES if dt != _kiln.DataType.BF16}


def _current_stream(producer, like):
    """(handle, stream object) of the producer's current CUDA stream; handle 0 is the legacy default stream."""
    if producer == "torch":
        s = sys.modules["torch"].cuda.current_stream(like.device)
        return int(s.cuda_stream), s
    if producer == "cupy":
        s = sys.modules["cupy"].cuda.get_current_stream()
        return int(s.ptr), s
    return 0, None


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

    def infer(self, feed, outputs=None):
        """Kiln: runs the engine on a dict of input arrays (NumPy arrays or DLPack producers such as torch
        tensors) and returns a dict of NumPy output arrays. On the CPU backend, inputs are read in place when
        they are contiguous host memory of the input's type, and outputs are written once, into the returned
        arrays; a CUDA engine copies host arrays to and from the device. GPU tensors (torch CUDA tensors, CuPy
        arrays) given to a CUDA engine are used in place and the outputs come back as tensors of the same
        library on the same device (or are written into `outputs`, a dict of GPU tensors), ordered on that
        library's current stream. Each thread gets its own context."""
        ctx = getattr(self._local, "context", None)
        if ctx is None:
            ctx = self._local.context = self.create_execution_context()
        return ctx.infer(feed, outputs)

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
        self._tensors = {}  # name -> DeviceTensorView bound by set_tensor, kept alive here

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
        self._tensors.pop(name, None)
        return True

    def set_tensor(self, name, tensor):
        """Kiln: binds a GPU tensor (torch CUDA tensor, CuPy array, anything with __cuda_array_interface__ or
        CUDA DLPack) in place, for a CUDA engine. An input's shape becomes the input shape; an output must
        already have the shape the inputs give it (set the inputs first). The dtype must be the tensor's own
        and the tensor C-contiguous; the context keeps the tensor alive until it is rebound."""
        mode = self._engine.get_tensor_mode(name)
        if mode == TensorIOMode.NONE:
            raise InvalidArgumentError(f"the engine has no I/O tensor named '{name}' (inputs: "
                                       f"{self._engine.input_names}, outputs: {self._engine.output_names})")
        what = f"{'input' if mode == TensorIOMode.INPUT else 'output'} '{name}'"
        if self._engine.backend == Backend.CPU:
            raise UnsupportedError(f"{what}: this engine runs on the CPU backend, which reads host memory; build "
                                   f"for the CUDA backend to bind GPU tensors, or pass host arrays (.cpu())")
        view = _device_view(what, tensor, self._engine.get_tensor_dtype(name))
        if mode == TensorIOMode.INPUT:
            self._ctx.set_input_shape(name, view.shape)
        else:
            want = tuple(self._ctx.get_tensor_shape(name))
            if any(d < 0 for d in want):
                raise UnsupportedError(f"{what} has a data-dependent shape {want}; a GPU tensor cannot be sized "
                                       f"for it ahead of the run: use infer() with host arrays")
            if tuple(view.shape) != want:
                raise InvalidArgumentError(f"{what} has shape {want} for these input shapes, but the GPU tensor "
                                           f"has shape {tuple(view.shape)}")
        self._ctx.set_tensor_address(name, view.data, view.nbytes)
        self._tensors[name] = view
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

    def infer(self, feed, outputs=None):
        """Kiln: see ICudaEngine.infer. Uses its own bindings; those set with set_tensor_address stay as they were.
        With GPU tensors for a CUDA engine, nothing is copied: see _infer_device."""
        if outputs is not None or any(is_device_tensor(v) for v in feed.values()):
            return self._infer_device(feed, outputs or {})
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

    def _infer_device(self, feed, outputs):
        """GPU tensors in, GPU tensors out, zero-copy: inputs are bound in place, outputs are the given tensors or
        new ones from the inputs' library (torch or CuPy) on their device. The run is enqueued on that library's
        current stream and not waited for, as its own ops are; on the legacy default stream (handle 0), or for
        other producers, the run is synchronous instead."""
        if self._engine.backend == Backend.CPU:
            raise UnsupportedError("this engine runs on the CPU backend, which reads host memory; pass host arrays "
                                   "(for torch: .cpu()) or build the engine for the CUDA backend")
        names = self._engine.input_names
        host = [n for n, v in feed.items() if not is_device_tensor(v)]
        if host:
            raise InvalidArgumentError(f"inputs {host} are host arrays while others are GPU tensors; give every "
                                       f"input on the GPU (zero-copy) or every input on the host")
        for name in list(feed) + list(outputs):
            if self._engine.get_tensor_mode(name) == TensorIOMode.NONE:
                raise InvalidArgumentError(f"'{name}' is not an I/O tensor of the engine (inputs: {names}, "
                                           f"outputs: {self._engine.output_names})")
        missing = [n for n in names if n not in feed]
        if missing:
            raise InvalidArgumentError(f"inputs {missing} are missing (the engine takes {', '.join(names)})")
        wrong = [n for n in feed if self._engine.get_tensor_mode(n) != TensorIOMode.INPUT]
        wrong += [n for n in outputs if self._engine.get_tensor_mode(n) != TensorIOMode.OUTPUT]
        if wrong:
            raise InvalidArgumentError(f"{wrong} are given on the wrong side: inputs go in the feed, outputs in "
                                       f"outputs=")
        first = feed[names[0]] if names else next(iter(outputs.values()), None)
        producer = _producer(first) if first is not None else None
        saved = {n: self._ctx.get_tensor_address(n) for n in names + self._engine.output_names}
        saved_tensors = dict(self._tensors)
        try:
            for name in names:
                self.set_tensor(name, feed[name])
            result = {}
            for name in self._engine.output_names:
                t = outputs.get(name)
                if t is None:
                    shape = tuple(self._ctx.get_tensor_shape(name))
                    if any(d < 0 for d in shape):
                        raise UnsupportedError(f"output '{name}' has a data-dependent shape {shape}; run this "
                                               f"engine with host arrays")
                    t = _empty_like_producer(producer, first, shape, self._engine.get_tensor_dtype(name), name)
                self.set_tensor(name, t)
                result[name] = t
            handle, stream = _current_stream(producer, first)
            if handle:
                self._ctx.execute(handle)
            else:
                if stream is not None:
                    stream.synchronize()  # inputs written on the legacy stream must be complete first
                self._ctx.execute()
            return result
        finally:
            for name, address in saved.items():
                self._ctx.set_tensor_address(name, address)
            self._tensors = saved_tensors

