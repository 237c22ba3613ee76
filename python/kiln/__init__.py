"""Kiln's Python API, shaped after TensorRT's: scripts written for `tensorrt` run with `import kiln as trt`.

Build: Logger, Builder, INetworkDefinition (layer API), OnnxParser, IBuilderConfig, IOptimizationProfile.
Run: Runtime, ICudaEngine, IExecutionContext, IProfiler, IOutputAllocator.
Beyond TensorRT: ICudaEngine.infer({name: array}) -> {name: ndarray}, DLPack inputs (torch tensors), the CPU
backend (everything runs without a GPU), and errors raised as exceptions that carry the library's message.
"""
from ._kiln import (Backend, BuilderFlag, DataType, ILogger, IOptimizationProfile, IOutputAllocator, IProfiler,
                    IProgressMonitor, ITensor, InternalError, InvalidArgumentError, InvalidEngineError,
                    InvalidModelError, KilnError, KilnIOError, KilnMemoryError, Logger, ParserError, TensorIOMode,
                    UnsupportedError)
from ._types import (as_datatype, bfloat16, bool, e8m0, float16, float32, float64, fp4, fp8, from_numpy_dtype, int4,
                     int8, int16, int32, int64, nptype, storage_dtype, uint4, uint8, uint16, uint32, uint64)
from .builder import Builder, IBuilderConfig, IHostMemory, ITimingCache, MemoryPoolType, ProfilingVerbosity
from .calibrator import (CalibrationAlgoType, IInt8Calibrator, IInt8EntropyCalibrator, IInt8EntropyCalibrator2,
                         IInt8LegacyCalibrator, IInt8MinMaxCalibrator)
from .layers import (IActivationLayer, ICastLayer, IConcatenationLayer, IConstantLayer, IConvolutionLayer,
                     IElementWiseLayer, IGatherLayer, IIdentityLayer, ILayer, IMatrixMultiplyLayer, INormalizationLayer,
                     IPoolingLayer, IReduceLayer, IShuffleLayer, ISliceLayer, ISoftMaxLayer)
from .network import INetworkDefinition
from .network_types import (ActivationType, Dims, Dims2, Dims3, Dims4, DimsHW, ElementWiseOperation, GatherMode,
                            LayerType, MatrixOperation, NetworkDefinitionCreationFlag, PaddingMode, Permutation,
                            PoolingType, ReduceOperation, SampleMode, Weights)
from .parser import OnnxParser
from .runtime import (DeviceTensorView, DLPackView, ICudaEngine, IExecutionContext, Profiler, Runtime, TensorLocation,
                      as_host_array, is_device_tensor)
from . import _kiln

__version__ = _kiln.version()
