# NVTX ranges, checked without Nsight Systems: kiln runs with the probe library (tests/support/nvtx_probe.cpp) as
# its NVTX injection, which writes each pushed range to a file. The build phases and passes are ranges on every
# backend; the per-layer ranges and "kiln enqueue" come from the CUDA backend (marked gpu).
import os
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from test_cli import BUILD_DIR, KILN

PROBE = BUILD_DIR / "lib" / "libkiln_nvtx_probe.so"


def relu_matmul_model(path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu1"), helper.make_node("MatMul", ["r", "w"], ["y"], name="proj")]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                          initializer=[numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def ranges(tmp_path, device):
    if not PROBE.is_file():
        pytest.skip(f"{PROBE} is not built (it needs the CUDA toolkit's nvtx3 headers)")
    out = tmp_path / f"nvtx_{device}.txt"
    env = dict(os.environ, NVTX_INJECTION64_PATH=str(PROBE.resolve()), NVTX_PROBE_OUT=str(out))
    proc = subprocess.run([str(KILN), f"--onnx={relu_matmul_model(tmp_path / 'm.onnx')}", f"--device={device}",
                           "--iterations=3", "--warmUp=0", "--duration=0"], env=env, capture_output=True, text=True,
                          timeout=300)
    if device == "cuda" and proc.returncode != 0:
        pytest.skip("no usable CUDA GPU for kiln: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    assert proc.returncode == 0, proc.stderr
    assert out.is_file(), "the probe wrote nothing: NVTX did not load it"
    lines = [tuple(l.split("\t", 1)) for l in out.read_text().splitlines()]
    assert all(d == "kiln" for d, _ in lines), {d for d, _ in lines}
    return [m for _, m in lines]


def test_build_phases_and_passes_are_nvtx_ranges(tmp_path):
    names = ranges(tmp_path, "cpu")
    for r in ["Building engine", "Optimization passes", "shape_inference", "constant_folding", "Writing engine"]:
        assert r in names, (r, sorted(set(names)))
    assert "proj" not in names  # the CPU backend's layers are not ranges


@pytest.mark.gpu
def test_cuda_layers_are_nvtx_ranges(tmp_path):
    names = ranges(tmp_path, "cuda")
    for r in ["Building engine", "Optimization passes", "Tuning tactics", "kiln enqueue", "relu1", "proj"]:
        assert r in names, (r, sorted(set(names)))
    # One range per layer per run: warm-up, the timed iterations and any profiling pass each add one.
    assert names.count("proj") >= 3 and names.count("proj") == names.count("relu1")
