"""A TensorRT-style script, unchanged but for `import kiln as trt`: ONNX from PyTorch -> engine -> run -> compare."""
import io

import numpy as np
import pytest
import torch

import kiln as trt


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return torch.softmax(self.fc(torch.flatten(self.pool(x), 1)), dim=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    f = io.BytesIO()
    torch.onnx.export(net, torch.randn(1, 3, 32, 32), f, input_names=["input"], output_names=["probs"],
                      dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17)
    return net, f.getvalue()


def reference(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def build_engine_bytes(onnx_bytes, logger, fp16=False, io_type=None):
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        raise RuntimeError([str(parser.get_error(i)) for i in range(parser.num_errors)])
    if io_type is not None:
        network.set_io_type(network.get_input(0), io_type)
        network.set_io_type(network.get_output(0), io_type)
        assert network.get_io_type(network.get_input(0)) == io_type
        assert network.get_input(0).dtype == trt.float32, "the network keeps its own type"
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config)


def test_parse_build_serialize_run_with_bound_buffers(model, tmp_path):
    net, onnx_bytes = model
    logger = trt.Logger(trt.Logger.WARNING)
    path = tmp_path / "small.onnx"
    path.write_bytes(onnx_bytes)

    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path))
    assert parser.num_errors == 0
    assert network.num_inputs == 1 and network.num_outputs == 1
    assert network.get_input(0).name == "input" and network.get_input(0).shape == (-1, 3, 32, 32)
    assert network.num_layers > 5
    assert network.get_layer(0).type == trt.LayerType.CONVOLUTION

    config = builder.create_builder_config()
    config.backend = trt.Backend.CPU  # the buffers below are host memory (the default is CUDA on a GPU machine)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))
    assert config.add_optimization_profile(profile) == 0

    # FP16 as a TensorRT script sets it: the CPU backend refuses it with a clear error (test_fp16_on_cuda below
    # builds it where a GPU is present).
    config.set_flag(trt.BuilderFlag.FP16)
    with pytest.raises(trt.UnsupportedError, match="FP16/BF16 need the CUDA backend: the CPU reference backend "
                                                   "computes in float32 only"):
        builder.build_serialized_network(network, config)
    config.clear_flag(trt.BuilderFlag.FP16)

    serialized = builder.build_serialized_network(network, config)
    assert isinstance(serialized, trt.IHostMemory) and serialized.nbytes > 1000
    engine_path = tmp_path / "small.engine"
    with open(engine_path, "wb") as f:
        f.write(serialized)

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    assert engine.num_io_tensors == 2
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert names == ["input", "probs"]
    assert engine.get_tensor_mode("input") == trt.TensorIOMode.INPUT
    assert engine.get_tensor_mode("probs") == trt.TensorIOMode.OUTPUT
    assert engine.get_tensor_dtype("input") == trt.float32
    assert trt.nptype(engine.get_tensor_dtype("probs")) == np.float32
    assert engine.get_tensor_shape("input") == (-1, 3, 32, 32)
    assert engine.get_tensor_profile_shape("input", 0) == [(1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)]
    assert bytes(engine.serialize()) == bytes(serialized)

    context = engine.create_execution_context()
    rng = np.random.default_rng(1)
    for batch in (1, 3, 8):
        x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
        assert context.set_input_shape("input", x.shape)
        out_shape = context.get_tensor_shape("probs")
        assert out_shape == (batch, 10)
        y = np.empty(out_shape, dtype=trt.nptype(engine.get_tensor_dtype("probs")))
        context.set_tensor_address("input", x.ctypes.data)
        context.set_tensor_address("probs", y.ctypes.data)
        assert context.execute_async_v3(stream_handle=0)
        np.testing.assert_allclose(y, reference(net, x), rtol=1e-4, atol=1e-5)
        y2 = np.zeros_like(y)
        assert context.execute_v2([x.ctypes.data, y2.ctypes.data])
        np.testing.assert_array_equal(y2, y)
        assert context.get_tensor_address("probs") == y2.ctypes.data


def test_engine_infer_with_numpy_and_torch(model):
    net, onnx_bytes = model
    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine(build_engine_bytes(onnx_bytes, logger))
    x = np.random.default_rng(2).standard_normal((5, 3, 32, 32), dtype=np.float32)
    out = engine.infer({"input": x})
    assert list(out) == ["probs"] and out["probs"].shape == (5, 10)
    np.testing.assert_allclose(out["probs"], reference(net, x), rtol=1e-4, atol=1e-5)

    # Torch tensors come in through DLPack, also non-contiguous ones (copied then); outputs go back zero-copy.
    xt = torch.from_numpy(x)
    np.testing.assert_array_equal(engine.infer({"input": xt})["probs"], out["probs"])
    strided = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 3, 2))).transpose(2, 3)
    assert not strided.is_contiguous()
    np.testing.assert_array_equal(engine.infer({"input": strided})["probs"], out["probs"])
    back = torch.from_dlpack(out["probs"])
    assert back.data_ptr() == out["probs"].ctypes.data


def test_float16_bindings(model):
    """set_io_type: the engine takes and gives float16 while the network computes in float32 (CPU backend here);
    the result is the float32 network's on the float16 input, rounded to float16."""
    net, onnx_bytes = model
    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine(build_engine_bytes(onnx_bytes, logger, io_type=trt.float16))
    assert engine.get_tensor_dtype("input") == trt.float16
    assert engine.get_tensor_dtype("probs") == trt.float16
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float16)
    out = engine.infer({"input": x})["probs"]
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), reference(net, x.astype(np.float32)), rtol=2e-3, atol=1e-4)
    # A float32 array for a float16 binding is refused by name rather than reinterpreted.
    with pytest.raises(Exception, match="input"):
        engine.infer({"input": x.astype(np.float32)})


def test_io_type_errors(model):
    _, onnx_bytes = model
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    assert trt.OnnxParser(network, logger).parse(onnx_bytes)
    with pytest.raises(Exception, match="int32 bindings are not supported; float32, float16 and bfloat16 are"):
        network.set_io_type(network.get_input(0), trt.int32)
    # Setting the tensor's own type back undoes an earlier call.
    network.set_io_type(network.get_output(0), trt.bfloat16)
    assert network.get_io_type(network.get_output(0)) == trt.bfloat16
    network.set_io_type(network.get_output(0), trt.float32)
    assert network.get_io_type(network.get_output(0)) == trt.float32


@pytest.mark.gpu
@pytest.mark.skipif(not trt.Builder(trt.Logger()).platform_has_fast_fp16, reason="needs the CUDA backend and a GPU")
def test_fp16_on_cuda(model):
    net, onnx_bytes = model
    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine(build_engine_bytes(onnx_bytes, logger, fp16=True))
    assert engine.backend == trt.Backend.CUDA
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(engine.infer({"input": x})["probs"], reference(net, x), atol=2e-2)
