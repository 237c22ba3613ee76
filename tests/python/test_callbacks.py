"""Python subclasses of ILogger, Logger, IProfiler and IOutputAllocator receive Kiln's calls."""
import sys

import numpy as np
import pytest

import kiln as trt


def small_engine(logger):
    builder = trt.Builder(logger)
    network = builder.create_network()
    x = network.add_input("x", trt.float32, (-1, 4))
    relu = network.add_activation(x, trt.ActivationType.RELU)
    relu.name = "relu"
    scale = network.add_constant((1, 4), np.full((1, 4), 2, np.float32))
    mul = network.add_elementwise(relu.get_output(0), scale.get_output(0), trt.ElementWiseOperation.PROD)
    mul.name = "scale"
    mul.get_output(0).name = "y"
    network.mark_output(mul.get_output(0))
    config = builder.create_builder_config()
    config.backend = trt.Backend.CPU  # host buffers below
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (2, 4), (4, 4))
    config.add_optimization_profile(profile)
    return trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))


def test_custom_logger_receives_build_messages(logger):
    small_engine(logger)
    assert logger.messages, "the builder logged nothing"
    severities = {s for s, _ in logger.messages}
    assert trt.ILogger.Severity.VERBOSE in severities
    assert any(msg.startswith("build:") for _, msg in logger.messages)
    assert all(isinstance(msg, str) for _, msg in logger.messages)


def test_logger_subclass_can_filter_and_defer_to_base(capsys):
    class Quiet(trt.Logger):
        def __init__(self):
            trt.Logger.__init__(self, trt.Logger.VERBOSE)
            self.seen = 0

        def log(self, severity, msg):
            self.seen += 1
            if severity <= trt.Logger.WARNING:
                trt.Logger.log(self, severity, msg)

    quiet = Quiet()
    small_engine(quiet)
    assert quiet.seen > 0
    assert quiet.min_severity == trt.Logger.VERBOSE

    loud = trt.Logger(trt.Logger.VERBOSE)
    small_engine(loud)
    assert "[kiln] [V] build:" in capsys.readouterr().err
    loud.min_severity = trt.Logger.ERROR
    small_engine(loud)
    assert capsys.readouterr().err == ""


def test_logger_errors_do_not_escape(monkeypatch):
    class Broken(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            raise ValueError("logger bug")

    # log() is called from C++ that cannot take an exception: it is reported as unraisable, the build goes on.
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    assert small_engine(Broken()).num_io_tensors == 2
    assert reported and isinstance(reported[0].exc_value, ValueError)


def test_profiler_reports_every_layer():
    class Recorder(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.calls = []

        def report_layer_time(self, layer_name, ms):
            self.calls.append((layer_name, ms))

    engine = small_engine(trt.Logger())
    context = engine.create_execution_context()
    profiler = Recorder()
    context.profiler = profiler
    assert context.profiler is profiler
    x = np.array([[-1, 2, -3, 4]], np.float32)
    y = np.empty((1, 4), np.float32)
    context.set_input_shape("x", x.shape)
    context.set_tensor_address("x", x.ctypes.data)
    context.set_tensor_address("y", y.ctypes.data)
    context.execute_async_v3(0)
    np.testing.assert_array_equal(y, [[0, 4, 0, 8]])
    assert [name for name, _ in profiler.calls] == engine.layer_names
    assert {"relu", "scale"} <= set(engine.layer_names)
    assert all(isinstance(ms, float) and ms >= 0 for _, ms in profiler.calls)
    context.execute_v2([x.ctypes.data, y.ctypes.data])
    assert len(profiler.calls) == 2 * len(engine.layer_names)
    context.profiler = None
    context.execute_async_v3(0)
    assert len(profiler.calls) == 2 * len(engine.layer_names)


def test_default_profiler_prints(capsys):
    engine = small_engine(trt.Logger())
    context = engine.create_execution_context()
    context.profiler = trt.Profiler()
    context.infer({"x": np.ones((2, 4), np.float32)})
    assert "relu:" in capsys.readouterr().out


def test_profiler_must_be_an_iprofiler():
    context = small_engine(trt.Logger()).create_execution_context()
    with pytest.raises(TypeError, match="IProfiler"):
        context.profiler = object()


def test_output_allocator_for_data_dependent_output():
    class Allocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffers, self.shapes = {}, {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            self.buffers[tensor_name] = np.empty(max(size, 1), np.uint8)
            return self.buffers[tensor_name].ctypes.data

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(shape)

    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network()
    x = network.add_input("x", trt.float32, (5,))
    nz = network.add_op("NonZero", [x])
    nz.get_output(0).name = "idx"
    network.mark_output(nz.get_output(0))
    config = builder.create_builder_config()
    config.backend = trt.Backend.CPU  # host buffers below
    engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    assert engine.get_tensor_shape("idx") == (1, -1)
    data = np.array([0, 3, 0, 1, 2], np.float32)

    # infer() sizes data-dependent outputs itself.
    np.testing.assert_array_equal(engine.infer({"x": data})["idx"], [[1, 3, 4]])

    context = engine.create_execution_context()
    alloc = Allocator()
    context.set_output_allocator("idx", alloc)
    assert context.get_output_allocator("idx") is alloc
    context.set_tensor_address("x", data.ctypes.data)
    context.execute_async_v3(0)
    assert alloc.shapes["idx"] == (1, 3)
    np.testing.assert_array_equal(alloc.buffers["idx"][:24].view(np.int64), [1, 3, 4])
    assert context.get_tensor_shape("idx") == (1, 3)
