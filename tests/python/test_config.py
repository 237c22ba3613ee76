"""IBuilderConfig options, timing caches and calibrators: stored as TensorRT stores them."""
import numpy as np
import pytest

import kiln as trt


def test_flags_pools_levels_and_timing_cache(logger):
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    assert config.get_flag(trt.BuilderFlag.TF32)  # on by default, as in TensorRT
    config.set_flag(trt.BuilderFlag.FP16)
    assert config.get_flag(trt.BuilderFlag.FP16)
    assert config.flags == (1 << int(trt.BuilderFlag.TF32)) | (1 << int(trt.BuilderFlag.FP16))
    config.flags = 0
    assert not config.get_flag(trt.BuilderFlag.TF32) and not config.get_flag(trt.BuilderFlag.FP16)

    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) > 0
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 1 << 30
    config.builder_optimization_level = 5
    with pytest.raises(ValueError):
        config.builder_optimization_level = 9
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    assert config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED

    cache = config.create_timing_cache(b"")
    assert config.set_timing_cache(cache, ignore_mismatch=False)
    assert config.get_timing_cache() is cache
    assert bytes(cache.serialize()) == b""
    assert cache.combine(config.create_timing_cache(b""), False)

    # Options the CPU builder does not use are reported at build time.
    network = builder.create_network()
    network.mark_output(network.add_identity(network.add_input("x", trt.float32, (2,))).get_output(0))
    builder.build_serialized_network(network, config)
    assert any("does not use the timing cache" in m and "memory pool limits" in m for _, m in logger.messages)


def test_profiles(logger):
    builder = trt.Builder(logger)
    profile = builder.create_optimization_profile()
    profile.set_shape("x", trt.Dims([1, 2]), (2, 2), (3, 2))
    assert profile.get_shape("x") == [(1, 2), (2, 2), (3, 2)]
    with pytest.raises(trt.InvalidArgumentError, match="min <= opt <= max"):
        profile.set_shape("x", (1, 2), (4, 2), (3, 2))
    with pytest.raises(trt.InvalidArgumentError, match="same rank"):
        profile.set_shape("x", (1, 2), (4,), (3, 2))
    config = builder.create_builder_config()
    assert config.add_optimization_profile(profile) == 0
    assert config.num_optimization_profiles == 1


def test_calibrators_subclass_and_store():
    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self, batches):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.cache = None

        def get_batch_size(self):
            return 2

        def get_batch(self, names):
            batch = next(self.batches, None)
            return None if batch is None else [batch.ctypes.data]

        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache):
            self.cache = bytes(cache)

    calib = Calibrator([np.zeros((2, 3), np.float32)])
    assert calib.get_algorithm() == trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2
    assert isinstance(calib.get_batch(["x"])[0], int) and calib.get_batch(["x"]) is None
    for base, algo in [(trt.IInt8MinMaxCalibrator, trt.CalibrationAlgoType.MINMAX_CALIBRATION),
                       (trt.IInt8EntropyCalibrator, trt.CalibrationAlgoType.ENTROPY_CALIBRATION),
                       (trt.IInt8LegacyCalibrator, trt.CalibrationAlgoType.LEGACY_CALIBRATION)]:
        assert type("C", (base,), {})().get_algorithm() == algo
    config = trt.Builder(trt.Logger()).create_builder_config()
    config.int8_calibrator = calib
    assert config.int8_calibrator is calib
    with pytest.raises(TypeError, match="IInt8"):
        config.int8_calibrator = object()


def test_module_surface():
    assert trt.__version__
    assert trt.nptype(trt.float16) is np.float16 and trt.nptype(trt.int64) is np.int64
    assert trt.float32.itemsize == 4 and trt.bfloat16.itemsize == 2
    assert trt.storage_dtype(trt.bfloat16) == np.uint16
    assert trt.Dims2(2, 3) == (2, 3) and trt.Dims((1, 2, 3)) == (1, 2, 3)
    assert trt.Logger.WARNING == trt.ILogger.Severity.WARNING
    assert not trt.Builder(trt.Logger()).platform_has_fast_int8


def test_layer_precision_and_constraints(logger):
    builder = trt.Builder(logger)
    network = builder.create_network()
    relu = network.add_activation(network.add_input("x", trt.float32, (2,)), trt.ActivationType.RELU)
    network.mark_output(relu.get_output(0))
    assert relu.precision == trt.float32 and not relu.precision_is_set
    relu.precision = trt.float16
    assert relu.precision_is_set
    config = builder.create_builder_config()
    config.backend = trt.Backend.CPU
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert config.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert config.flags >> int(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS) & 1
    # The per-layer precision reaches the C++ builder, which refuses FP16 on the CPU backend.
    with pytest.raises(trt.UnsupportedError, match="FP16/BF16 need the CUDA backend"):
        builder.build_serialized_network(network, config)
    relu.reset_precision()
    builder.build_serialized_network(network, config)
