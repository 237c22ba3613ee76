"""Networks built layer by layer with TensorRT's layer API, checked against NumPy."""
import math

import numpy as np
import pytest

import kiln as trt

RNG = np.random.default_rng(7)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def build(network, profile_shapes=None):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.backend = trt.Backend.CPU  # the NumPy references are checked against the CPU oracle
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, shapes in profile_shapes.items():
            profile.set_shape(name, *shapes)
        config.add_optimization_profile(profile)
    return trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))


def run(network, feed, **kw):
    return build(network, **kw).infer(feed)


def new_network():
    return trt.Builder(trt.Logger()).create_network()


def conv2d(x, w, b=None, stride=(1, 1), pad=(0, 0), groups=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    n, c, _, _ = x.shape
    k, cg, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    outs = []
    for g in range(groups):
        xs = win[:, g * cg:(g + 1) * cg]
        ws = w[g * (k // groups):(g + 1) * (k // groups)]
        outs.append(np.einsum("nchwij,kcij->nkhw", xs, ws))
    y = np.concatenate(outs, axis=1)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def max_pool2d(x, window, stride):
    win = np.lib.stride_tricks.sliding_window_view(x, window, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    return win.max(axis=(-2, -1))


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_lenet_style_network_with_properties_set_after_creation():
    network = new_network()
    x = network.add_input("input", trt.float32, (2, 3, 12, 12))
    w1, b1 = randn(6, 3, 3, 3), randn(6)
    conv = network.add_convolution_nd(x, 6, (3, 3), trt.Weights(w1), trt.Weights(b1))
    relu = network.add_activation(conv.get_output(0), trt.ActivationType.RELU)
    assert relu.get_output(0).shape == (2, 6, 10, 10)
    # Set after the output is already consumed: the layer rebuilds and the shapes downstream follow.
    conv.stride_nd = trt.Dims2(2, 2)
    conv.padding_nd = (1, 1)
    assert conv.get_output(0).shape == (2, 6, 6, 6) and relu.get_output(0).shape == (2, 6, 6, 6)
    pool = network.add_pooling_nd(relu.get_output(0), trt.PoolingType.MAX, (2, 2))
    pool.stride_nd = (2, 2)
    flat = network.add_shuffle(pool.get_output(0))
    flat.reshape_dims = (0, -1)
    assert flat.get_output(0).shape == (2, 54)
    w2 = randn(5, 54)
    fc_w = network.add_constant((5, 54), w2)
    fc = network.add_matrix_multiply(flat.get_output(0), trt.MatrixOperation.NONE, fc_w.get_output(0),
                                     trt.MatrixOperation.TRANSPOSE)
    b2 = randn(1, 5)
    bias = network.add_elementwise(fc.get_output(0), network.add_constant((1, 5), b2).get_output(0),
                                   trt.ElementWiseOperation.SUM)
    prob = network.add_softmax(bias.get_output(0))
    prob.axes = 1 << 1
    prob.get_output(0).name = "prob"
    network.mark_output(prob.get_output(0))

    assert network.num_layers == 9  # 7 operator layers and 2 constant layers
    assert [network.get_layer(i).type for i in (0, 1)] == [trt.LayerType.CONVOLUTION, trt.ActivationType.RELU]
    assert network.get_layer(2).layer_type == trt.LayerType.POOLING
    conv.name = "conv1"
    assert conv.name == "conv1"

    engine = build(network)
    assert engine.get_tensor_name(1) == "prob"
    data = randn(2, 3, 12, 12)
    got = engine.infer({"input": data})["prob"]
    h = np.maximum(conv2d(data, w1, b1, stride=(2, 2), pad=(1, 1)), 0)
    want = softmax(max_pool2d(h, (2, 2), (2, 2)).reshape(2, -1) @ w2.T + b2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert "conv1" in engine.layer_names


def test_grouped_convolution_and_average_pooling():
    network = new_network()
    x = network.add_input("x", trt.float32, (1, 4, 7, 7))
    w = randn(6, 2, 3, 3)
    conv = network.add_convolution_nd(x, 6, (3, 3), w.ravel(), None)
    conv.num_groups = 2
    pool = network.add_pooling_nd(conv.get_output(0), trt.PoolingType.AVERAGE, (5, 5))
    network.mark_output(pool.get_output(0))
    data = randn(1, 4, 7, 7)
    got = run(network, {"x": data})
    name = pool.get_output(0).name
    np.testing.assert_allclose(got[name], conv2d(data, w, groups=2).mean(axis=(2, 3), keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("kind, alpha, beta, ref", [
    (trt.ActivationType.RELU, 0, 0, lambda x: np.maximum(x, 0)),
    (trt.ActivationType.SIGMOID, 0, 0, lambda x: 1 / (1 + np.exp(-x))),
    (trt.ActivationType.TANH, 0, 0, np.tanh),
    (trt.ActivationType.LEAKY_RELU, 0.1, 0, lambda x: np.where(x >= 0, x, 0.1 * x)),
    (trt.ActivationType.ELU, 0.5, 0, lambda x: np.where(x >= 0, x, 0.5 * (np.exp(x) - 1))),
    (trt.ActivationType.SELU, 1.5, 1.1, lambda x: np.where(x > 0, 1.1 * x, 1.1 * 1.5 * (np.exp(x) - 1))),
    (trt.ActivationType.SOFTSIGN, 0, 0, lambda x: x / (1 + np.abs(x))),
    (trt.ActivationType.SOFTPLUS, 2.0, 0.5, lambda x: 2.0 * np.log1p(np.exp(0.5 * x))),
    (trt.ActivationType.CLIP, -0.5, 0.5, lambda x: np.clip(x, -0.5, 0.5)),
    (trt.ActivationType.HARD_SIGMOID, 0.2, 0.5, lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    (trt.ActivationType.SCALED_TANH, 1.7, 0.6, lambda x: 1.7 * np.tanh(0.6 * x)),
    (trt.ActivationType.THRESHOLDED_RELU, 0.3, 0, lambda x: np.where(x > 0.3, x, 0)),
    (trt.ActivationType.GELU_ERF, 0, 0, lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    (trt.ActivationType.GELU_TANH, 0, 0,
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
])
def test_activations(kind, alpha, beta, ref):
    network = new_network()
    x = network.add_input("x", trt.float32, (3, 5))
    act = network.add_activation(x, trt.ActivationType.RELU)
    act.type, act.alpha, act.beta = kind, alpha, beta  # switching the kind rebuilds the layer
    assert act.type == kind
    network.mark_output(act.get_output(0))
    data = randn(3, 5) * 2
    out = run(network, {"x": data})[act.get_output(0).name]
    np.testing.assert_allclose(out, ref(data), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op, a, b, ref", [
    (trt.ElementWiseOperation.SUM, randn(2, 3), randn(1, 3), np.add),
    (trt.ElementWiseOperation.PROD, randn(2, 3), randn(2, 3), np.multiply),
    (trt.ElementWiseOperation.MAX, randn(2, 3), randn(2, 1), np.maximum),
    (trt.ElementWiseOperation.MIN, randn(2, 3), randn(2, 3), np.minimum),
    (trt.ElementWiseOperation.SUB, randn(2, 3), randn(2, 3), np.subtract),
    (trt.ElementWiseOperation.DIV, randn(2, 3), randn(2, 3) + 3, np.divide),
    (trt.ElementWiseOperation.POW, np.abs(randn(2, 3)) + 0.1, randn(2, 3), np.power),
    (trt.ElementWiseOperation.FLOOR_DIV, randn(2, 3) * 5, randn(2, 3) + 3, np.floor_divide),
    (trt.ElementWiseOperation.FLOOR_DIV, np.array([[7, -7, 7, -7]], np.int32), np.array([[2, 2, -2, -2]], np.int32),
     np.floor_divide),
    (trt.ElementWiseOperation.EQUAL, np.array([1, 2, 3], np.int64), np.array([1, 0, 3], np.int64), np.equal),
    (trt.ElementWiseOperation.GREATER, randn(4), randn(4), np.greater),
    (trt.ElementWiseOperation.LESS, randn(4), randn(4), np.less),
    (trt.ElementWiseOperation.AND, np.array([True, False, True]), np.array([True, True, False]), np.logical_and),
    (trt.ElementWiseOperation.XOR, np.array([True, False, True]), np.array([True, True, False]), np.logical_xor),
])
def test_elementwise(op, a, b, ref):
    network = new_network()
    ta = network.add_input("a", trt.from_numpy_dtype(a.dtype), a.shape)
    tb = network.add_input("b", trt.from_numpy_dtype(b.dtype), b.shape)
    layer = network.add_elementwise(ta, tb, op)
    assert layer.op == op
    network.mark_output(layer.get_output(0))
    out = run(network, {"a": a, "b": b})[layer.get_output(0).name]
    assert out.dtype == ref(a, b).dtype
    np.testing.assert_allclose(out, ref(a, b), rtol=1e-5)


@pytest.mark.parametrize("op0, op1, ashape, bshape, ref", [
    (trt.MatrixOperation.NONE, trt.MatrixOperation.NONE, (2, 3, 4), (4, 5), lambda a, b: a @ b),
    (trt.MatrixOperation.TRANSPOSE, trt.MatrixOperation.NONE, (2, 4, 3), (2, 4, 5), lambda a, b: a.swapaxes(-1, -2) @ b),
    (trt.MatrixOperation.NONE, trt.MatrixOperation.VECTOR, (2, 3, 4), (2, 4), lambda a, b: np.einsum("nij,nj->ni", a, b)),
    (trt.MatrixOperation.VECTOR, trt.MatrixOperation.VECTOR, (3, 4), (3, 4), lambda a, b: (a * b).sum(-1)),
])
def test_matrix_multiply(op0, op1, ashape, bshape, ref):
    network = new_network()
    a, b = randn(*ashape), randn(*bshape)
    layer = network.add_matrix_multiply(network.add_input("a", trt.float32, ashape), op0,
                                        network.add_input("b", trt.float32, bshape), op1)
    network.mark_output(layer.get_output(0))
    out = run(network, {"a": a, "b": b})[layer.get_output(0).name]
    np.testing.assert_allclose(out, ref(a, b), rtol=1e-4, atol=1e-5)


def test_matrix_operation_changed_after_creation():
    network = new_network()
    a, b = randn(3, 4), randn(3, 5)
    layer = network.add_matrix_multiply(network.add_input("a", trt.float32, (3, 4)), trt.MatrixOperation.NONE,
                                        network.add_input("b", trt.float32, (3, 5)), trt.MatrixOperation.NONE)
    layer.op0 = trt.MatrixOperation.TRANSPOSE
    assert layer.get_output(0).shape == (4, 5)
    network.mark_output(layer.get_output(0))
    np.testing.assert_allclose(run(network, {"a": a, "b": b})[layer.get_output(0).name], a.T @ b, rtol=1e-5)


def test_shuffle_concat_slice_gather_reduce_cast_identity():
    network = new_network()
    data = randn(2, 3, 4)
    x = network.add_input("x", trt.float32, (2, 3, 4))
    shuffle = network.add_shuffle(x)
    shuffle.first_transpose = trt.Permutation(0, 2, 1)
    shuffle.reshape_dims = (0, 2, 6)
    shuffle.second_transpose = (2, 0, 1)
    concat = network.add_concatenation([x, x])
    assert concat.axis == 0  # rank 3: TensorRT's default is rank - 3
    concat.axis = 2
    sl = network.add_slice(x, (1, 2, 3), (1, 2, 2), (1, -1, -2))
    indices = network.add_constant((2,), np.array([2, 0], np.int32)).get_output(0)
    gather = network.add_gather(x, indices, axis=1)
    reduce = network.add_reduce(x, trt.ReduceOperation.AVG, (1 << 0) | (1 << 2), keep_dims=False)
    rmax = network.add_reduce(x, trt.ReduceOperation.MAX, 1 << 1, keep_dims=True)
    rsum = network.add_reduce(x, trt.ReduceOperation.SUM, 1 << 2, keep_dims=False)
    cast = network.add_cast(x, trt.int32)
    ident = network.add_identity(x)
    layers = dict(shuffle=shuffle, concat=concat, slice=sl, gather=gather, reduce=reduce, rmax=rmax, rsum=rsum,
                  cast=cast, ident=ident)
    for name, layer in layers.items():
        layer.get_output(0).name = name
        network.mark_output(layer.get_output(0))
    out = run(network, {"x": data})
    np.testing.assert_array_equal(out["shuffle"], data.transpose(0, 2, 1).reshape(2, 2, 6).transpose(2, 0, 1))
    np.testing.assert_array_equal(out["concat"], np.concatenate([data, data], axis=2))
    np.testing.assert_array_equal(out["slice"], data[1:2, 2:0:-1, 3:0:-2])
    np.testing.assert_array_equal(out["gather"], data[:, [2, 0]])
    np.testing.assert_allclose(out["reduce"], data.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["rmax"], data.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["rsum"], data.sum(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(out["cast"], data.astype(np.int32))
    np.testing.assert_array_equal(out["ident"], data)


def test_gather_modes():
    network = new_network()
    data = randn(3, 4)
    idx = np.array([[0, 3], [1, 1], [2, 0]], np.int64)
    x = network.add_input("x", trt.float32, (3, 4))
    i = network.add_input("i", trt.int64, (3, 2))
    elem = network.add_gather_v2(x, i, trt.GatherMode.ELEMENT)
    elem.axis = 1
    nd = network.add_gather_v2(x, i, trt.GatherMode.ND)
    elem.get_output(0).name, nd.get_output(0).name = "elem", "nd"
    network.mark_output(elem.get_output(0))
    network.mark_output(nd.get_output(0))
    out = run(network, {"x": data, "i": idx})
    np.testing.assert_array_equal(out["elem"], np.take_along_axis(data, idx, axis=1))
    np.testing.assert_array_equal(out["nd"], data[idx[:, 0], idx[:, 1]])


def test_normalization_layer_instance_and_group():
    data = randn(2, 4, 3, 5)
    s, b, gs, gb = randn(1, 4, 1, 1), randn(1, 4, 1, 1), randn(1, 2, 1, 1), randn(1, 2, 1, 1)
    network = new_network()
    x = network.add_input("x", trt.float32, data.shape)
    const = lambda a: network.add_constant(a.shape, a).get_output(0)  # noqa: E731
    inst = network.add_normalization(x, const(s), const(b), (1 << 2) | (1 << 3))
    inst.epsilon = 1e-3
    group = network.add_normalization(x, const(gs), const(gb), (1 << 2) | (1 << 3))
    group.num_groups = 2
    inst.get_output(0).name, group.get_output(0).name = "inst", "group"
    network.mark_output(inst.get_output(0))
    network.mark_output(group.get_output(0))
    out = run(network, {"x": data})

    m, v = data.mean(axis=(2, 3), keepdims=True), data.var(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out["inst"], (data - m) / np.sqrt(v + 1e-3) * s + b, rtol=1e-4, atol=1e-5)
    g = data.reshape(2, 2, -1)
    gn = (g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + 1e-5)
    want = (gn * gs.reshape(1, 2, 1) + gb.reshape(1, 2, 1)).reshape(data.shape)
    np.testing.assert_allclose(out["group"], want, rtol=1e-4, atol=1e-5)


def test_dynamic_batch_input_shape_and_generic_op():
    network = new_network()
    x = network.add_input("x", trt.float32, (-1, 4))
    assert network.get_input(0).shape == (-1, 4)
    erf = network.add_op("Erf", [x])
    assert erf.type == trt.LayerType.UNARY and erf.op_types == ["Erf"]
    top = network.add_softmax(erf.get_output(0))
    top.axes = 1 << 1
    network.mark_output(top.get_output(0))
    engine = build(network, profile_shapes={"x": [(1, 4), (2, 4), (6, 4)]})
    data = randn(5, 4)
    want = softmax(np.vectorize(math.erf)(data), 1)
    np.testing.assert_allclose(engine.infer({"x": data})[top.get_output(0).name], want, rtol=1e-5)

    # Fixing the input shape instead (TensorRT's settable ITensor.shape) re-infers the layers downstream.
    network.get_input(0).shape = (3, 4)
    assert top.get_output(0).shape == (3, 4)
    np.testing.assert_allclose(build(network).infer({"x": data[:3]})[top.get_output(0).name], want[:3], rtol=1e-5)


def test_constant_layer_weights_can_change():
    network = new_network()
    x = network.add_input("x", trt.float32, (2, 2))
    c = network.add_constant((2, 2), np.ones((2, 2), np.float32))
    add = network.add_elementwise(x, c.get_output(0), trt.ElementWiseOperation.SUM)
    network.mark_output(add.get_output(0))
    c.weights = np.full((2, 2), 3, np.float32)
    assert c.type == trt.LayerType.CONSTANT
    np.testing.assert_array_equal(run(network, {"x": np.zeros((2, 2), np.float32)})[add.get_output(0).name],
                                  np.full((2, 2), 3, np.float32))


def test_padding_modes_and_run_time_reshape():
    network = new_network()
    data = randn(1, 2, 5, 5)
    w = randn(3, 2, 3, 3)
    x = network.add_input("x", trt.float32, data.shape)
    conv = network.add_convolution_nd(x, 3, (3, 3), w)
    conv.stride_nd = (2, 2)
    conv.padding_mode = trt.PaddingMode.SAME_UPPER
    pool = network.add_pooling_nd(x, trt.PoolingType.MAX, (2, 2))
    pool.stride_nd = (2, 2)
    pool.padding_mode = trt.PaddingMode.EXPLICIT_ROUND_UP
    shape = network.add_constant((2,), np.array([2, -1], np.int64)).get_output(0)
    flat = network.add_shuffle(x)
    flat.set_input(1, shape)
    assert flat.get_output(0).shape == (2, 25)
    for name, layer in (("conv", conv), ("pool", pool), ("flat", flat)):
        layer.get_output(0).name = name
        network.mark_output(layer.get_output(0))
    out = run(network, {"x": data})
    assert out["conv"].shape == (1, 3, 3, 3)  # SAME_UPPER: ceil(5 / 2)
    np.testing.assert_allclose(out["conv"], conv2d(data, w, stride=(2, 2), pad=(1, 1)), rtol=1e-4, atol=1e-5)
    padded = np.pad(data, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-np.inf)
    np.testing.assert_array_equal(out["pool"], max_pool2d(padded, (2, 2), (2, 2)))  # ceil mode: 3x3
    np.testing.assert_array_equal(out["flat"], data.reshape(2, -1))


def test_layers_valid_only_after_later_properties():
    """TensorRT validates at build time; scripts rely on setting properties after creating the layer."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network()
    a = network.add_input("a", trt.float32, (2, 3))
    b = network.add_input("b", trt.float32, (2, 5))
    cat = network.add_concatenation([a, b])  # default axis 0 does not fit yet
    assert cat.get_output(0).shape == (-1, -1)
    w = randn(4, 8)
    fc = network.add_matrix_multiply(cat.get_output(0), trt.MatrixOperation.NONE,
                                     network.add_constant((4, 8), w).get_output(0), trt.MatrixOperation.TRANSPOSE)
    cat.axis = 1  # fixes the concatenation, and through it the matrix multiply downstream
    assert cat.get_output(0).shape == (2, 8) and fc.get_output(0).shape == (2, 4)
    network.mark_output(fc.get_output(0))
    av, bv = randn(2, 3), randn(2, 5)
    out = run(network, {"a": av, "b": bv})[fc.get_output(0).name]
    np.testing.assert_allclose(out, np.concatenate([av, bv], axis=1) @ w.T, rtol=1e-5)
