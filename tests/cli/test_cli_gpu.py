# GPU-only kiln flags on the CUDA backend (--useCudaGraph, --noDataTransfers, --infStreams, --useSpinWait,
# --dumpProfile, NVML energy), each checked against a CPU run; skipped with kiln's own reason without a GPU.
# gpu_check.sh's `cli` stage runs them on the device: pytest -m gpu tests/cli.
import json
import math
import re

import numpy as np
import pytest

from test_cli import as_array, read_outputs, run_kiln


def first_output(path):
    """The one output of the chain model from an --exportOutput file (read_outputs keys them by name)."""
    outputs = read_outputs(path)
    assert len(outputs) == 1, outputs.keys()
    return next(iter(outputs.values()))
from test_cli_trtexec import chain_model, read_profile

pytestmark = pytest.mark.gpu
SHAPES = ["--shapes=x:4x8", "--minShapes=x:1x8", "--optShapes=x:4x8", "--maxShapes=x:8x8"]


def cpu_reference(d, model, shapes, x):
    """Writes input x (named x) under d and runs the model once on the CPU backend: the file and the reference output."""
    xfile = d / "x.bin"
    x.tofile(xfile)
    ref_json = d / "cpu.json"
    run_kiln(f"--onnx={model}", *shapes, "--device=cpu", f"--loadInputs=x:{xfile}", f"--exportOutput={ref_json}",
             "--iterations=1", "--warmUp=0", "--duration=0", check=True)
    return xfile, as_array(first_output(ref_json))


@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory):
    """The chain model, fixed input data, its CPU outputs and a CUDA engine; skips when kiln cannot use a GPU."""
    d = tmp_path_factory.mktemp("gpu_cli")
    model = chain_model(d / "chain.onnx")
    engine = d / "chain_cuda.engine"
    proc = run_kiln(f"--onnx={model}", *SHAPES, "--device=cuda", f"--saveEngine={engine}", "--skipInference")
    if proc.returncode != 0:
        pytest.skip("no usable CUDA GPU for kiln: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    x = np.random.default_rng(7).uniform(-3, 3, (4, 8)).astype(np.float32)
    xfile, ref = cpu_reference(d, model, SHAPES, x)
    return {"dir": d, "model": model, "engine": engine, "xfile": xfile, "ref": ref}


def run_gpu(setup, name, *args, iterations=20, duration=0):
    out_json = setup["dir"] / f"{name}_outputs.json"
    proc = run_kiln(f"--loadEngine={setup['engine']}", "--device=cuda", "--shapes=x:4x8",
                    f"--loadInputs=x:{setup['xfile']}", f"--exportOutput={out_json}", f"--iterations={iterations}",
                    "--warmUp=0", f"--duration={duration}", *args, check=True)
    got = as_array(first_output(out_json))
    # Sigmoid's expf on the GPU may differ from the CPU's in the last bits; nothing else differs.
    np.testing.assert_allclose(got, setup["ref"], rtol=1e-5, atol=1e-6, err_msg=name)
    return proc


def test_plain_cuda_run_reports_device_times(gpu_setup):
    out = run_gpu(gpu_setup, "plain").stdout
    assert out.startswith("Device: cuda"), out
    for what in ["H2D Latency", "GPU Compute Time", "D2H Latency"]:
        assert re.search(rf"^{what}: min = [\d.]+ ms", out, re.M), out


def test_use_cuda_graph_gives_the_same_outputs(gpu_setup):
    run_gpu(gpu_setup, "graph", "--useCudaGraph")


def test_no_data_transfers_leaves_copies_out_of_timed_runs(gpu_setup):
    times = gpu_setup["dir"] / "times_ndt.json"
    run_gpu(gpu_setup, "ndt", "--noDataTransfers", f"--exportTimes={times}", iterations=10)
    runs = json.loads(times.read_text())
    assert len(runs) >= 10
    # Only event records remain between the copy markers: microseconds, not a 128-byte copy's launch.
    assert max(r["h2dMs"] for r in runs[1:]) < 0.05, runs
    assert max(r["d2hMs"] for r in runs[1:]) < 0.05, runs
    assert all(r["computeMs"] > 0 for r in runs)


def test_inf_streams_with_spin_wait(gpu_setup):
    out = run_gpu(gpu_setup, "streams", "--infStreams=3", "--useSpinWait", "--useCudaGraph", iterations=30).stdout
    assert re.search(r"^Timed iterations: \d+ on 3 streams", out, re.M), out
    qps = float(re.search(r"Throughput: ([\d.]+) qps", out).group(1))
    assert qps > 0


def test_dump_and_export_profile_on_cuda(gpu_setup):
    prof = gpu_setup["dir"] / "profile.json"
    info = gpu_setup["dir"] / "layers.json"
    out = run_gpu(gpu_setup, "profile", "--dumpProfile", f"--exportProfile={prof}", f"--exportLayerInfo={info}",
                  iterations=8).stdout
    assert "=== Profile (8 iterations) ===" in out, out
    count, rows = read_profile(prof)
    assert count == 8
    layers = json.loads(info.read_text())["Layers"]
    names = [r["name"] for r in rows]
    # Fusion may merge the chain's layers on the GPU: every row is an engine layer, each at most once.
    assert names and set(names) <= set(layers) and len(set(names)) == len(names), (names, layers)
    assert math.isclose(sum(r["percentage"] for r in rows), 100, abs_tol=1e-3)
    for name in names:
        assert re.search(rf"^{re.escape(name)}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out


def test_energy_is_measured_through_nvml(gpu_setup):
    # A second of runs: NVML's energy counter and power readings move in steps of milliseconds.
    out = run_gpu(gpu_setup, "energy", iterations=50, duration=1).stdout
    m = re.search(r"^Energy: ([\d.]+) W average over ([\d.]+) s, ([\d.]+) J in total, ([\d.]+) J per inference "
                  r"\((NVML energy counter|NVML power samples)\)$", out, re.M)
    if not m:
        na = re.search(r"^Energy: n/a \((.*)\)$", out, re.M)
        assert na, out
        pytest.skip(f"NVML not usable on this GPU machine: {na.group(1)}")
    watts, seconds, joules = float(m.group(1)), float(m.group(2)), float(m.group(3))
    assert 1 < watts < 2000 and seconds > 0.5, out
    # The counter gives joules (watts follow from them); sampled watts integrate to roughly the same joules.
    assert math.isclose(joules, watts * seconds, rel_tol=0.02 if "counter" in m.group(5) else 0.5), out


def test_fp16_engine_runs_close_to_fp32(gpu_setup):
    engine = gpu_setup["dir"] / "chain_fp16.engine"
    run_kiln(f"--onnx={gpu_setup['model']}", *SHAPES, "--device=cuda", "--fp16", f"--saveEngine={engine}",
             "--skipInference", check=True)
    out_json = gpu_setup["dir"] / "fp16.json"
    run_kiln(f"--loadEngine={engine}", "--device=cuda", "--shapes=x:4x8", f"--loadInputs=x:{gpu_setup['xfile']}",
             f"--exportOutput={out_json}", "--iterations=1", "--warmUp=0", "--duration=0", check=True)
    np.testing.assert_allclose(as_array(first_output(out_json)), gpu_setup["ref"], rtol=5e-3, atol=5e-3)


def test_fp16_bindings_on_cuda(gpu_setup):
    """--inputIOFormats/--outputIOFormats=fp16:chw with --fp16: the engine takes and gives float16, the values match
    the CPU run of the float32 model within float16 rounding, and no layer of the engine is a conversion."""
    d = gpu_setup["dir"]
    engine = d / "chain_fp16_io.engine"
    proc = run_kiln(f"--onnx={gpu_setup['model']}", *SHAPES, "--device=cuda", "--fp16", "--inputIOFormats=fp16:chw",
                    "--outputIOFormats=fp16:chw", f"--saveEngine={engine}", "--skipInference", check=True)
    assert "Input  'x': float16" in proc.stdout and "Output 'y': float16" in proc.stdout, proc.stdout
    x16 = np.fromfile(gpu_setup["xfile"], np.float32).astype(np.float16)
    xfile = d / "x16.bin"
    x16.tofile(xfile)
    out_json, info = d / "fp16_io.json", d / "fp16_io_layers.json"
    run_kiln(f"--loadEngine={engine}", "--device=cuda", "--shapes=x:4x8", f"--loadInputs=x:{xfile}",
             f"--exportOutput={out_json}", f"--exportLayerInfo={info}", "--profilingVerbosity=detailed",
             "--iterations=1", "--warmUp=0", "--duration=0", check=True)
    np.testing.assert_allclose(as_array(first_output(out_json)), gpu_setup["ref"], rtol=5e-3, atol=5e-3)
    layers = json.loads(info.read_text())["Layers"]
    assert not [l["Name"] for l in layers if l["LayerType"] == "Cast"], layers
    assert all(t["Format/Datatype"].endswith("FP16") for l in layers for t in l["Inputs"] + l["Outputs"]), layers


def matmul_model(path):
    """y = Relu(x · W + b), x: float [N, 64], W [64, 32]: one GEMM layer with cuBLASLt tactics on CUDA."""
    from onnx import TensorProto, helper, numpy_helper
    import onnx
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="proj"),
             helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
             helper.make_node("Relu", ["a"], ["y"], name="act")]
    graph = helper.make_graph(
        nodes, "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        initializer=[numpy_helper.from_array(rng.uniform(-0.2, 0.2, (64, 32)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.uniform(-0.5, 0.5, 32).astype(np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_tuning_flags_and_timing_cache_on_cuda(gpu_setup, tmp_path):
    """A GEMM layer has cuBLASLt tactics: timed at level 3 and written to the cache; a rebuild reads every layer from
    the cache and times nothing (and writes the same engine); level 0 times nothing; every engine computes what the
    CPU backend computes."""
    model = matmul_model(tmp_path / "gemm.onnx")
    shapes = ["--shapes=x:16x64", "--minShapes=x:1x64", "--optShapes=x:16x64", "--maxShapes=x:32x64"]
    x = np.random.default_rng(5).uniform(-1, 1, (16, 64)).astype(np.float32)
    xfile, ref = cpu_reference(tmp_path, model, shapes, x)
    cache = tmp_path / "timing.json"
    engines = []
    for i, flags in enumerate([("--builderOptimizationLevel=3", f"--timingCacheFile={cache}", "--avgTiming=2"),
                               (f"--timingCacheFile={cache}",),
                               ("--builderOptimizationLevel=0",)]):
        engine = tmp_path / f"tuned{i}.engine"
        proc = run_kiln(f"--onnx={model}", *shapes, "--device=cuda", f"--saveEngine={engine}", "--skipInference",
                        *flags, check=True)
        engines.append(engine)
        log = proc.stdout + proc.stderr
        if i == 0:
            assert re.search(r"tactics: 1 layers tuned \([1-9]\d* tactics timed, 0 layers from the timing cache\)", log), log
            data = json.loads(cache.read_text())
            assert data["format"] == "kiln-timing-cache" and data["devices"], data
            assert any(e["tactic"].startswith("lt_heur") for d in data["devices"].values() for e in d.values()), data
        elif i == 1:
            assert "(0 tactics timed, 1 layers from the timing cache)" in log, log
        else:
            assert "tactics:" not in log, log
    assert engines[0].read_bytes() == engines[1].read_bytes(), "a rebuild from the timing cache gives the same engine"
    for engine in engines:
        out_json = tmp_path / (engine.stem + ".json")
        run_kiln(f"--loadEngine={engine}", "--device=cuda", "--shapes=x:16x64", f"--loadInputs=x:{xfile}",
                 f"--exportOutput={out_json}", "--iterations=1", "--warmUp=0", "--duration=0", check=True)
        # TF32 is on by default (as in TensorRT): about 1e-3 relative on a 64-long dot product.
        np.testing.assert_allclose(as_array(first_output(out_json)), ref, rtol=5e-3, atol=5e-3)


def test_workspace_limit_on_cuda(gpu_setup, tmp_path):
    """--memPoolSize=workspace:N caps the kernels' scratch memory; a GEMM still builds, runs and computes the same."""
    model = matmul_model(tmp_path / "gemm.onnx")
    shapes = ["--shapes=x:16x64", "--minShapes=x:16x64", "--optShapes=x:16x64", "--maxShapes=x:16x64"]
    x = np.random.default_rng(9).uniform(-1, 1, (16, 64)).astype(np.float32)
    xfile = tmp_path / "x.bin"
    x.tofile(xfile)
    outs = {}
    for device, extra in (("cpu", []), ("cuda", ["--memPoolSize=workspace:1M"])):
        out_json = tmp_path / f"{device}.json"
        proc = run_kiln(f"--onnx={model}", *shapes, f"--device={device}", f"--loadInputs=x:{xfile}",
                        f"--exportOutput={out_json}", "--iterations=1", "--warmUp=0", "--duration=0", *extra, check=True)
        if extra:
            assert "workspace limit 1048576 bytes: the CUDA kernels' scratch memory" in proc.stderr, proc.stderr
        outs[device] = as_array(first_output(out_json))
    np.testing.assert_allclose(outs["cuda"], outs["cpu"], rtol=5e-3, atol=5e-3)


def test_use_cuda_graph_with_a_profile_profiles_separate_plain_runs(gpu_setup):
    """The timed runs replay the graph; the profile comes from separate layer-by-layer runs, and the log says so
    (the profiler and a graph replay exclude each other: this combination used to fail)."""
    prof = gpu_setup["dir"] / "profile_graph.json"
    proc = run_gpu(gpu_setup, "graph_profile", "--useCudaGraph", "--dumpProfile", f"--exportProfile={prof}",
                   iterations=6)
    count, rows = read_profile(prof)
    assert count == 6 and rows, rows
    assert "=== Profile (6 iterations) ===" in proc.stdout, proc.stdout
    assert "the timed runs above replayed the CUDA graph" in proc.stderr, proc.stderr
