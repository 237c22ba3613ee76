"""GPU tensors in the Python API: zero-copy binding of torch/CuPy tensors (set_tensor, infer), its checks, and the
TensorRT-style FP16 workflow on CUDA against PyTorch. GPU tests skip, with the reason, without a GPU and torch."""
import copy
import inspect
import io

import numpy as np
import pytest

import kiln as trt
from kiln.runtime import DeviceTensorView, is_device_tensor


class FakeGpuTensor:
    """Just __cuda_array_interface__ (as Numba arrays have): enough for the checks that run before any launch."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x7F0000000000):
        self.__cuda_array_interface__ = {"data": (ptr, False), "shape": tuple(shape), "typestr": typestr,
                                         "strides": strides, "version": 3}


def relu_network(builder, dtype=trt.float32):
    network = builder.create_network(0)
    x = network.add_input("x", dtype, (-1, 8))
    network.mark_output(network.add_activation(x, trt.ActivationType.RELU).get_output(0))
    network.get_output(0).name = "y"
    return network


def build(backend, fp16=False, network_fn=relu_network, shapes=((1, 8), (4, 8), (64, 8))):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = network_fn(builder)
    config = builder.create_builder_config()
    config.backend = backend
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        profile.set_shape(network.get_input(i).name, *shapes)
    config.add_optimization_profile(profile)
    return trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))


# --- checks that need no GPU ------------------------------------------------------------------------------------

def test_views_read_cuda_array_interface():
    v = DeviceTensorView(FakeGpuTensor((3, 4)))
    assert v.data == 0x7F0000000000 and v.shape == (3, 4) and v.dtype == trt.float32 and v.is_c_contiguous
    assert v.nbytes == 48
    assert is_device_tensor(FakeGpuTensor((1,))) and not is_device_tensor(np.zeros(2))
    # Byte strides of a transposed [3, 4] float32 tensor: not C-contiguous.
    assert not DeviceTensorView(FakeGpuTensor((4, 3), strides=(4, 16))).is_c_contiguous
    assert DeviceTensorView(FakeGpuTensor((4, 3), strides=(12, 4))).is_c_contiguous
    assert DeviceTensorView(FakeGpuTensor((2,), "<f2")).dtype == trt.float16
    assert DeviceTensorView(FakeGpuTensor((2,), ">f4")).dtype is None  # big-endian: no Kiln type


def test_cpu_engine_refuses_gpu_tensors_with_a_reason():
    engine = build(trt.Backend.CPU)
    ctx = engine.create_execution_context()
    with pytest.raises(trt.UnsupportedError, match="CPU backend, which reads host memory"):
        ctx.set_tensor("x", FakeGpuTensor((2, 8)))
    with pytest.raises(trt.UnsupportedError, match="CPU backend"):
        engine.infer({"x": FakeGpuTensor((2, 8))})
    with pytest.raises(trt.InvalidArgumentError, match="no I/O tensor named 'z'"):
        ctx.set_tensor("z", FakeGpuTensor((2, 8)))
    # Host arrays still take the host path.
    x = np.arange(-8, 8, dtype=np.float32).reshape(2, 8)
    np.testing.assert_array_equal(engine.infer({"x": x})["y"], np.maximum(x, 0))


# --- on the GPU -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to PyTorch")
    if not trt.Builder(trt.Logger()).platform_has_fast_fp16:
        pytest.skip("Kiln's CUDA backend is not built or finds no GPU")
    return torch


@pytest.fixture(scope="module")
def relu_cuda(torch_cuda):
    engine = build(trt.Backend.CUDA)
    assert engine.backend == trt.Backend.CUDA
    return engine


@pytest.mark.gpu
def test_set_tensor_binds_torch_tensors_in_place(torch_cuda, relu_cuda):
    torch = torch_cuda
    ctx = relu_cuda.create_execution_context()
    x = torch.randn(6, 8, device="cuda")
    y = torch.full((6, 8), float("nan"), device="cuda")
    ctx.set_tensor("x", x)
    assert ctx.get_tensor_shape("y") == (6, 8)
    ctx.set_tensor("y", y)
    assert ctx.get_tensor_address("x") == x.data_ptr() and ctx.get_tensor_address("y") == y.data_ptr()
    # Stream 0 would be the context's own stream, which does not wait for torch's: use a stream of our own.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    assert ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    assert torch.equal(y, torch.relu(x))


@pytest.mark.gpu
def test_infer_returns_torch_tensors_on_the_device(torch_cuda, relu_cuda):
    torch = torch_cuda
    for batch in (1, 7, 64):
        x = torch.randn(batch, 8, device="cuda")
        out = relu_cuda.infer({"x": x})
        y = out["y"]
        assert isinstance(y, torch.Tensor) and y.device == x.device and y.dtype == torch.float32
        assert y.shape == (batch, 8)
        assert torch.equal(y, torch.relu(x))  # ordered on torch's current stream: no explicit sync needed
    # Given outputs are written in place.
    x = torch.randn(3, 8, device="cuda")
    y = torch.empty(3, 8, device="cuda")
    ptr = y.data_ptr()
    out = relu_cuda.create_execution_context().infer({"x": x}, outputs={"y": y})
    assert out["y"] is y and y.data_ptr() == ptr
    assert torch.equal(y, torch.relu(x))
    # On a side stream the run follows that stream.
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.randn(5, 8, device="cuda")
        y = relu_cuda.infer({"x": x})["y"]
    side.synchronize()
    assert torch.equal(y, torch.relu(x))


@pytest.mark.gpu
def test_gpu_tensor_checks(torch_cuda, relu_cuda):
    torch = torch_cuda
    ctx = relu_cuda.create_execution_context()
    with pytest.raises(TypeError, match="expects float32 but the GPU tensor holds float64"):
        ctx.set_tensor("x", torch.randn(2, 8, device="cuda", dtype=torch.float64))
    with pytest.raises(trt.InvalidArgumentError, match="must be C-contiguous"):
        ctx.set_tensor("x", torch.randn(8, 4, device="cuda").t())
    with pytest.raises(TypeError, match="not a GPU tensor|expects a GPU tensor"):
        ctx.set_tensor("x", torch.randn(2, 8))  # a CPU tensor
    ctx.set_tensor("x", torch.randn(2, 8, device="cuda"))
    with pytest.raises(trt.InvalidArgumentError, match=r"has shape \(2, 8\) for these input shapes"):
        ctx.set_tensor("y", torch.empty(3, 8, device="cuda"))
    with pytest.raises(trt.InvalidArgumentError, match="optimization profile allows"):
        ctx.set_tensor("x", torch.randn(65, 8, device="cuda"))  # beyond the profile's max batch
    with pytest.raises(trt.InvalidArgumentError, match="host arrays while others are GPU tensors"):
        build(trt.Backend.CUDA, network_fn=two_inputs, shapes=((1, 8), (4, 8), (8, 8))).infer(
            {"a": torch.randn(2, 8, device="cuda"), "b": np.zeros((2, 8), np.float32)})


def two_inputs(builder):
    network = builder.create_network(0)
    a = network.add_input("a", trt.float32, (-1, 8))
    b = network.add_input("b", trt.float32, (-1, 8))
    network.mark_output(network.add_elementwise(a, b, trt.ElementWiseOperation.SUM).get_output(0))
    return network


@pytest.mark.gpu
def test_bfloat16_tensors_come_through_dlpack(torch_cuda):
    torch = torch_cuda
    engine = build(trt.Backend.CUDA, network_fn=lambda b: relu_network(b, trt.bfloat16))  # a failure is a failure
    x = torch.randn(4, 8, device="cuda", dtype=torch.bfloat16)
    y = engine.infer({"x": x})["y"]
    assert y.dtype == torch.bfloat16 and torch.equal(y, torch.relu(x))


# --- the TensorRT-style FP16 workflow, with torch CUDA tensors -------------------------------------------------

@pytest.mark.gpu
def test_fp16_trt_workflow_on_cuda_matches_pytorch(torch_cuda):
    torch = torch_cuda

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(16)
            self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.fc1 = torch.nn.Linear(32, 64)
            self.fc2 = torch.nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv1(x)))
            x = torch.relu(self.conv2(x)).mean(dim=(2, 3))
            return torch.softmax(self.fc2(torch.nn.functional.gelu(self.fc1(x))), dim=1)

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    f = io.BytesIO()
    # Newer PyTorch defaults to the dynamo exporter; the TorchScript one needs no extra packages.
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(net, torch.randn(1, 3, 32, 32), f, input_names=["input"], output_names=["probs"],
                      dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17, **extra)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(f.getvalue()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.backend = trt.Backend.CUDA
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (16, 3, 32, 32), (32, 3, 32, 32))
    config.add_optimization_profile(profile)
    engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    assert engine.backend == trt.Backend.CUDA
    context = engine.create_execution_context()

    net = net.cuda()
    net16 = copy.deepcopy(net).half()  # PyTorch's own FP16 run: the error it makes is the yardstick
    assert engine.get_tensor_dtype("input") == trt.float32 and engine.get_tensor_dtype("probs") == trt.float32
    stream = torch.cuda.Stream()
    for batch in (1, 16, 32):
        x = torch.randn(batch, 3, 32, 32, device="cuda")
        context.set_input_shape("input", tuple(x.shape))
        out = torch.empty(context.get_tensor_shape("probs"), device="cuda")
        context.set_tensor_address("input", x.data_ptr())
        context.set_tensor_address("probs", out.data_ptr())
        stream.wait_stream(torch.cuda.current_stream())  # x was written on the current stream
        assert context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        with torch.no_grad():
            ref32 = net(x)
            ref16 = net16(x.half()).float()
        peer = (ref16 - ref32).abs().max().item()
        err = (out - ref32).abs().max().item()
        assert err <= max(4 * peer, 1e-2), (batch, err, peer)
        # Top-1 agrees wherever FP32 itself is not a near tie.
        top2 = ref32.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-2
        assert torch.equal(out.argmax(1)[clear], ref32.argmax(1)[clear]), batch
