"""Builder, IBuilderConfig and the build-time objects around them (timing cache, memory pools, host memory)."""
import enum
import os

from . import _kiln
from ._kiln import Backend, BuilderFlag, IOptimizationProfile, IProgressMonitor, UnsupportedError
from .calibrator import IInt8Calibrator
from .network import INetworkDefinition

Severity = _kiln.ILogger.Severity


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class ProfilingVerbosity(enum.IntEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class IHostMemory(bytes):
    """Serialized engine or cache bytes (TensorRT's IHostMemory); usable wherever bytes are."""

    @property
    def nbytes(self):
        return len(self)


class ITimingCache:
    """A timing cache, kept with the config for the tactic-timing builder to come. Kiln's CPU builder times no
    tactics, so the cache stays as it was given."""

    def __init__(self, serialized=b""):
        self._data = bytes(serialized)

    def serialize(self):
        return IHostMemory(self._data)

    def combine(self, other, ignore_mismatch=False):
        # Nothing to merge until caches have entries; an empty cache combines with anything.
        if other._data and self._data and other._data != self._data:
            raise UnsupportedError("combining two non-empty timing caches is not supported yet")
        self._data = self._data or other._data
        return True

    def reset(self):
        self._data = b""
        return True


def _host_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


_CONSTRAINT_FLAGS = (BuilderFlag.OBEY_PRECISION_CONSTRAINTS, BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


def _default_backend():
    """The CUDA backend where it is built and a GPU is usable (as the CLI chooses), the CPU backend otherwise."""
    return Backend.CUDA if _kiln.cuda_device() is not None else Backend.CPU


class IBuilderConfig:
    """Build options. Flags, profiles and the backend go to the C++ BuilderConfig; the rest is kept here."""

    def __init__(self):
        self._cfg = _kiln._BuilderConfig()
        self._cfg.backend = _default_backend()
        self._constraints = set()
        self._profiles = []
        self._pool_limits = {}
        self._timing_cache = None
        self.builder_optimization_level = 3
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.avg_timing_iterations = 1
        self._int8_calibrator = None
        self._progress_monitor = None

    # --- flags ---
    def set_flag(self, flag):
        flag = BuilderFlag(flag)
        if flag in _CONSTRAINT_FLAGS:
            self._constraints.add(flag)
        else:
            self._cfg.set_flag(flag)

    def clear_flag(self, flag):
        flag = BuilderFlag(flag)
        if flag in _CONSTRAINT_FLAGS:
            self._constraints.discard(flag)
        else:
            self._cfg.clear_flag(flag)

    def get_flag(self, flag):
        flag = BuilderFlag(flag)
        return flag in self._constraints if flag in _CONSTRAINT_FLAGS else self._cfg.get_flag(flag)

    @property
    def flags(self):
        return sum(1 << int(f) for f in BuilderFlag.__members__.values() if self.get_flag(f))

    @flags.setter
    def flags(self, mask):
        for f in BuilderFlag.__members__.values():
            (self.set_flag if int(mask) >> int(f) & 1 else self.clear_flag)(f)

    def _for_build(self, network):
        """The C++ config for one build: the layers' precisions and the precision constraints added to a copy."""
        cfg = self._cfg.copy()
        for layer in network:
            if layer.precision_is_set:
                for name in layer._node_names():
                    cfg.set_layer_precision(name, layer.precision)
        obey, prefer = (f in self._constraints for f in _CONSTRAINT_FLAGS)
        cfg.precision_constraints = "obey" if obey else "prefer" if prefer else "none"
        return cfg

    # --- memory pools ---
    def set_memory_pool_limit(self, pool, pool_size):
        if int(pool_size) < 0:
            raise ValueError(f"memory pool limit must be >= 0, got {pool_size}")
        self._pool_limits[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        pool = MemoryPoolType(pool)
        if pool in self._pool_limits:
            return self._pool_limits[pool]
        return _host_memory_bytes() if pool == MemoryPoolType.WORKSPACE else 0

    # --- optimization ---
    @property
    def builder_optimization_level(self):
        return self._opt_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, level):
        if not 0 <= int(level) <= 5:
            raise ValueError(f"builder_optimization_level must be in [0, 5], got {level}")
        self._opt_level = int(level)

    def add_optimization_profile(self, profile):
        self._cfg.add_optimization_profile(profile)
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self):
        return len(self._profiles)

    def get_optimization_profile(self, index):
        return self._profiles[index]

    # --- timing cache ---
    def create_timing_cache(self, serialized_timing_cache=b""):
        return ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache, ignore_mismatch=False):
        self._timing_cache = cache
        return True

    def get_timing_cache(self):
        return self._timing_cache

    # --- quantization (stored for the INT8 work; the CPU backend refuses INT8 at build) ---
    @property
    def int8_calibrator(self):
        return self._int8_calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator):
        if calibrator is not None and not isinstance(calibrator, IInt8Calibrator):
            raise TypeError(f"int8_calibrator must subclass one of kiln's IInt8*Calibrator classes, got "
                            f"{type(calibrator).__name__}")
        self._int8_calibrator = calibrator

    # --- Kiln ---
    @property
    def backend(self):
        """Kiln: the backend to build for (Backend.CPU or Backend.CUDA)."""
        return self._cfg.backend

    @backend.setter
    def backend(self, value):
        self._cfg.backend = Backend(value)

    @property
    def dump_after(self):
        """Kiln: print the graph after the named optimization pass ("all" for every pass), at INFO."""
        return self._cfg.dump_after

    @dump_after.setter
    def dump_after(self, value):
        self._cfg.dump_after = value

    @property
    def progress_monitor(self):
        """A kiln.IProgressMonitor told of each build phase and step (None: no reports)."""
        return self._progress_monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor):
        if monitor is not None and not isinstance(monitor, IProgressMonitor):
            raise TypeError(f"progress_monitor must be a kiln.IProgressMonitor (call IProgressMonitor.__init__(self) "
                            f"in the subclass's __init__), got {type(monitor).__name__}")
        self._cfg.set_progress_monitor(monitor)
        self._progress_monitor = monitor


class Builder:
    """Builds serialized engines from networks."""

    def __init__(self, logger):
        self._logger = logger
        self._builder = _kiln._Builder(logger)

    def create_network(self, flags=0):
        return INetworkDefinition(flags, self._logger)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    @property
    def logger(self):
        return self._logger

    @property
    def platform_has_fast_fp16(self):
        return _kiln.cuda_device() is not None

    @property
    def platform_has_fast_int8(self):
        return False  # INT8 kernels come with the quantization work

    @property
    def platform_has_tf32(self):
        return self.platform_has_fast_fp16

    def _report_unused(self, config):
        """Options the builder keeps but has no use for yet are reported, not silently dropped."""
        unused = []
        if config._timing_cache is not None:
            unused.append("the timing cache (no tactics are timed)")
        if config._pool_limits:
            unused.append("memory pool limits")
        if config.builder_optimization_level != 3:
            unused.append(f"builder_optimization_level {config.builder_optimization_level}")
        if unused:
            self._logger.log(Severity.INFO, "the builder does not use " + ", ".join(unused) + " yet")

    def build_serialized_network(self, network, config):
        """The engine as IHostMemory (bytes); raises with the builder's message when the build fails."""
        if not isinstance(network, INetworkDefinition):
            raise TypeError(f"network must be an INetworkDefinition, got {type(network).__name__}")
        network._check_buildable()
        self._report_unused(config)
        return IHostMemory(self._builder.build_serialized_network(network._net, config._for_build(network)))

    def build_engine_with_config(self, network, config):
        from .runtime import Runtime
        return Runtime(self._logger).deserialize_cuda_engine(self.build_serialized_network(network, config))
