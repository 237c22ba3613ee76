# Tests of the trtexec-grade flags (issue 6) and `kiln compare` on the CPU backend (KILN_BUILD=<build dir>).
import json
import math
import re
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_cli import FAST, build_engine, run_kiln, save_model

NEW_FLAGS = [
    "--fp8", "--best", "--memPoolSize", "--builderOptimizationLevel", "--timingCacheFile", "--avgTiming",
    "--maxTactics", "--infStreams", "--threads", "--useSpinWait", "--separateProfileRun", "--avgRuns",
    "--percentile", "--dumpProfile", "--exportProfile", "--exportTimes", "--dumpLayerInfo", "--exportLayerInfo",
    "--profilingVerbosity", "--inputIOFormats", "--outputIOFormats", "--profile", "--getPlanVersionOnly",
    "--useCudaGraph", "--noDataTransfers", "--precisionConstraints", "--layerPrecisions", "--skipInference",
    "--dumpOutput", "--noTF32", "--int8",
]
COMPARE_FLAGS = ["--onnx", "--loadEngine", "--device", "--reference", "--referenceOnnx", "--atol", "--rtol",
                 "--markAll", "--shapes", "--loadInputs", "--fp16", "--bf16", "--layerPrecisions"]
TRTEXEC_TIME_KEYS = ["startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
                     "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs"]
LAYERS = ["relu1", "scale", "shift", "act"]


def chain_model(path, shift=0.25):
    """y = Sigmoid((Relu(x) * 2) + shift), x: float [N, 8]; the layer names are the profile's rows."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu1"),
        helper.make_node("Mul", ["r", "two"], ["m"], name="scale"),
        helper.make_node("Add", ["m", "bias"], ["a"], name="shift"),
        helper.make_node("Sigmoid", ["a"], ["y"], name="act"),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                     numpy_helper.from_array(np.full(8, shift, np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kiln-tests")
    import onnx
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def chain(tmp_path):
    return chain_model(tmp_path / "chain.onnx")


@pytest.fixture
def chain_engine(tmp_path, chain):
    return build_engine(tmp_path, chain, "--minShapes=x:1x8", "--optShapes=x:2x8", "--maxShapes=x:4x8")


def err(proc):
    return proc.stderr


# --- help and option errors --------------------------------------------------------------------------------


def test_help_documents_every_new_flag():
    out = run_kiln("--help", check=True).stdout
    for flag in NEW_FLAGS:
        assert flag in out, f"{flag} missing from --help"
    assert "kiln compare" in out


def test_compare_help_documents_its_flags():
    out = run_kiln("compare", "--help", check=True).stdout
    for flag in COMPARE_FLAGS:
        assert flag in out, f"{flag} missing from kiln compare --help"


@pytest.mark.parametrize("typo,expected", [
    ("--dumpProfil", "--dumpProfile"),
    ("--infstream=2", "--infStreams"),
    ("--exportLayerInf=x.json", "--exportLayerInfo"),
    ("--seperateProfileRun", "--separateProfileRun"),
    ("--getPlanVersion", "--getPlanVersionOnly"),
])
def test_unknown_new_flag_suggests_closest(typo, expected):
    proc = run_kiln(typo, check=False)
    assert proc.returncode == 2
    assert f"Did you mean '{expected}'?" in err(proc), err(proc)


def test_compare_unknown_flag_suggests_closest(chain):
    proc = run_kiln("compare", f"--onnx={chain}", "--marAll", check=False)
    assert proc.returncode == 2
    assert "Did you mean '--markAll'?" in err(proc), err(proc)


def test_fp8_is_not_implemented(chain):
    proc = run_kiln(f"--onnx={chain}", "--fp8", check=False)
    assert proc.returncode == 1
    assert "--fp8: FP8 precision is not implemented yet" in err(proc), err(proc)


def test_best_on_cpu_says_what_it_enables(chain):
    proc = run_kiln(f"--onnx={chain}", "--best", "--device=cpu", check=False)
    assert proc.returncode == 1
    assert "--best requires --device=cuda" in err(proc)
    assert "FP16 and BF16" in err(proc) and "INT8" in err(proc), err(proc)


@pytest.mark.parametrize("flag", ["--useCudaGraph", "--noDataTransfers"])
def test_gpu_only_flags_refused_on_cpu(chain, flag):
    proc = run_kiln(f"--onnx={chain}", flag, "--device=cpu", *FAST, check=False)
    assert proc.returncode == 1
    assert f"{flag} requires --device=cuda" in err(proc), err(proc)


@pytest.mark.parametrize("args,message", [
    (["--builderOptimizationLevel=6"], "--builderOptimizationLevel must be 0 to 5, got 6"),
    (["--avgTiming=0"], "--avgTiming must be at least 1"),
    (["--maxTactics=-5"], "--maxTactics must be >= 0"),
    (["--infStreams=0"], "--infStreams must be 1 to"),
    (["--avgRuns=0"], "--avgRuns must be at least 1"),
    (["--percentile=50,101"], "'101' is not a percentage in [0, 100]"),
    (["--percentile=ninety"], "'ninety' is not a percentage"),
    (["--memPoolSize=workspace:lots"], "bad size in 'workspace:lots'"),
    (["--memPoolSize=dlaSRAM:1"], "DLA, which Kiln does not support"),
    (["--memPoolSize=tacticSharedMem:1"], "'tacticSharedMem' is not supported yet"),
    (["--memPoolSize=scratch:1"], "unknown pool 'scratch'"),
    (["--profilingVerbosity=everything"], "--profilingVerbosity"),
    (["--profile=-1"], "--profile must be >= 0"),
    (["--inputIOFormats=fp33:chw"], "unknown type 'fp33'"),
    (["--outputIOFormats=fp32:nchw"], "unknown format 'nchw'"),
    (["--separateProfileRun"], "--separateProfileRun needs --dumpProfile or --exportProfile"),
    (["--dumpLayerInfo", "--profilingVerbosity=none"], "has nothing to show"),
    (["--skipInference", "--dumpProfile"], "--skipInference runs nothing"),
    (["--getPlanVersionOnly"], "--getPlanVersionOnly needs --loadEngine"),
])
def test_bad_values_are_rejected(chain, args, message):
    proc = run_kiln(f"--onnx={chain}", *args, *FAST, check=False)
    assert proc.returncode == 2, (proc.returncode, err(proc))
    assert message in err(proc), err(proc)


@pytest.mark.parametrize("flag", ["--best", "--fp8", "--memPoolSize=workspace:1G", "--builderOptimizationLevel=2",
                                  "--timingCacheFile=t.cache", "--avgTiming=2", "--maxTactics=4"])
def test_build_flags_rejected_with_load_engine(chain_engine, flag):
    proc = run_kiln(f"--loadEngine={chain_engine}", flag, *FAST, check=False)
    assert proc.returncode == 2
    assert "is a build option; it has no effect with --loadEngine" in err(proc), err(proc)


def test_tuning_flags_on_cpu_say_there_is_nothing_to_tune(tmp_path, chain):
    cache = tmp_path / "timing.cache"
    proc = run_kiln(f"--onnx={chain}", "--builderOptimizationLevel=5", "--avgTiming=4", "--maxTactics=3",
                    f"--timingCacheFile={cache}", "--memPoolSize=workspace:64M", "--skipInference", check=True)
    assert "--builderOptimizationLevel=5, --avgTiming=4, --maxTactics=3" in err(proc), err(proc)
    assert "the CPU reference backend has one implementation per layer, so there is nothing to tune" in err(proc)
    assert f"workspace limit {64 << 20} bytes; the CPU backend's kernels use no workspace" in err(proc)
    assert not cache.exists()  # nothing was timed, so nothing is written
    verbose = run_kiln(f"--onnx={chain}", "--verbose", "--skipInference", check=True)
    assert re.search(r"\[V\] builder config: optimization level 3, avgTiming 8, maxTactics -1.*the CPU backend has nothing to tune",
                     err(verbose)), err(verbose)


@pytest.mark.parametrize("spec,expected", [("workspace:2048", 2048 << 20), ("workspace:512K", 512 << 10),
                                           ("workspace:3G", 3 << 30), ("workspace:100B", 100)])
def test_mem_pool_size_units(chain, spec, expected):
    proc = run_kiln(f"--onnx={chain}", f"--memPoolSize={spec}", "--skipInference", check=True)
    assert f"workspace limit {expected} bytes;" in err(proc), err(proc)


def test_threads_and_spin_wait_are_noted_on_cpu(chain):
    proc = run_kiln(f"--onnx={chain}", "--threads", "--useSpinWait", *FAST, check=True)
    assert "--useSpinWait: the CPU backend runs each inference synchronously" in err(proc), err(proc)
    assert "--threads: Kiln always drives each --infStreams stream from its own thread" in err(proc)


# --- performance summary and --exportTimes ------------------------------------------------------------------

STAT = r"min = [\d.]+ ms, max = [\d.]+ ms, mean = [\d.]+ ms, median = [\d.]+ ms"


def test_performance_summary_has_trtexec_structure(tmp_path, chain):
    proc = run_kiln(f"--onnx={chain}", "--iterations=20", "--warmUp=0", "--duration=0", "--percentile=50,99.9",
                    check=True)
    out = proc.stdout
    lines = out[out.index("=== Performance summary ==="):].splitlines()
    heads = [l.split(":")[0] for l in lines[1:10]]
    assert heads == ["Throughput", "Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency",
                     "Total Host Walltime", "Total GPU Compute Time", "Energy"], lines
    for what in ["Latency", "Enqueue Time"]:
        m = re.search(rf"^{what}: ({STAT}), percentile\(50%\) = ([\d.]+) ms, percentile\(99.9%\) = ([\d.]+) ms$",
                      out, re.M)
        assert m, out
    for what in ["H2D Latency", "GPU Compute Time", "D2H Latency", "Total GPU Compute Time"]:
        assert re.search(rf"^{what}: n/a \(CPU backend", out, re.M), out
    assert "Energy: n/a (NVML not available)" in out
    assert "Timed iterations: 20 on 1 stream" in out


def test_default_percentiles_are_90_95_99(chain):
    out = run_kiln(f"--onnx={chain}", *FAST, check=True).stdout
    assert re.search(r"^Latency: .*percentile\(90%\) = .*percentile\(95%\) = .*percentile\(99%\) = [\d.]+ ms$", out,
                     re.M), out


def test_export_times_uses_trtexec_layout(tmp_path, chain):
    times = tmp_path / "times.json"
    run_kiln(f"--onnx={chain}", "--iterations=12", "--warmUp=0", "--duration=0", f"--exportTimes={times}", check=True)
    runs = json.loads(times.read_text())
    assert isinstance(runs, list) and len(runs) == 12
    previous = -1
    for r in runs:
        assert list(r) == TRTEXEC_TIME_KEYS
        assert r["startEnqMs"] >= previous and r["endEnqMs"] >= r["startEnqMs"]
        previous = r["startEnqMs"]
        assert r["h2dMs"] == 0 and r["d2hMs"] == 0  # the CPU backend copies nothing
        assert math.isclose(r["computeMs"], r["endComputeMs"] - r["startComputeMs"], abs_tol=1e-9)
        assert math.isclose(r["latencyMs"], r["h2dMs"] + r["computeMs"] + r["d2hMs"], abs_tol=1e-9)


def test_avg_runs_prints_trace_averages_in_verbose(chain):
    proc = run_kiln(f"--onnx={chain}", "--iterations=12", "--warmUp=0", "--duration=0", "--avgRuns=5", "--verbose",
                    check=True)
    assert "Trace averages of 5 runs:" in proc.stdout
    averages = re.findall(r"^Average on 5 runs - GPU latency: n/a - Host latency: [\d.]+ ms \(enqueue [\d.]+ ms\)$",
                          proc.stdout, re.M)
    assert len(averages) == 2, proc.stdout  # 12 runs make two full windows of 5
    assert "=== What the metrics mean ===" in proc.stdout


def test_inf_streams_run_concurrently_and_sum(tmp_path, chain):
    times = tmp_path / "times.json"
    out_json = tmp_path / "out.json"
    proc = run_kiln(f"--onnx={chain}", "--infStreams=3", "--iterations=5", "--warmUp=0", "--duration=0",
                    f"--exportTimes={times}", f"--exportOutput={out_json}", check=True)
    assert "Timed iterations: 15 on 3 streams" in proc.stdout, proc.stdout
    runs = json.loads(times.read_text())
    assert len(runs) == 15
    # Throughput counts the queries of every stream over one walltime, from the first start to the last end.
    qps = float(re.search(r"Throughput: ([\d.]+) qps", proc.stdout).group(1))
    wall_ms = max(r["endEnqMs"] for r in runs) - min(r["startEnqMs"] for r in runs)
    assert math.isclose(qps, 15 / wall_ms * 1000, rel_tol=0.02), (qps, wall_ms)
    assert json.loads(out_json.read_text())[0]["name"] == "y"


# --- per-layer profile --------------------------------------------------------------------------------------


def read_profile(path):
    data = json.loads(path.read_text())
    assert isinstance(data, list) and list(data[0]) == ["count"]
    rows = data[1:]
    for r in rows:
        assert list(r) == ["name", "timeMs", "averageMs", "medianMs", "percentage"], r
        assert r["timeMs"] >= 0 and r["averageMs"] >= 0 and r["medianMs"] >= 0
    return data[0]["count"], rows


def test_export_profile_layout_and_counts(tmp_path, chain):
    prof = tmp_path / "profile.json"
    proc = run_kiln(f"--onnx={chain}", "--iterations=9", "--warmUp=0", "--duration=0", f"--exportProfile={prof}",
                    check=True)
    count, rows = read_profile(prof)
    assert count == 9  # the profiler rode along the 9 timed runs
    assert [r["name"] for r in rows] == LAYERS
    assert math.isclose(sum(r["percentage"] for r in rows), 100, abs_tol=1e-6)
    for r in rows:
        assert math.isclose(r["averageMs"], r["timeMs"] / count, rel_tol=1e-9)
    assert "--separateProfileRun keeps it out" in err(proc)


def test_first_inference_time_is_reported(chain_engine):
    # What a service waits for after loading an engine: context setup and the first run, reported once.
    out = run_kiln(f"--loadEngine={chain_engine}", "--iterations=2", "--warmUp=0", "--duration=0", check=True).stdout
    lines = re.findall(r"^First inference: ([\d.]+) ms after the engine was ready", out, re.M)
    assert len(lines) == 1 and float(lines[0]) > 0, out
    assert out.index("Engine loaded in") < out.index("First inference:") < out.index("Timed iterations:"), out


def test_dump_profile_table(chain):
    out = run_kiln(f"--onnx={chain}", "--iterations=6", "--warmUp=0", "--duration=0", "--dumpProfile",
                   check=True).stdout
    assert "=== Profile (6 iterations) ===" in out, out
    header = re.search(r"^Layer\s+Time \(ms\)\s+Avg\. \(ms\)\s+Median \(ms\)\s+Time %$", out, re.M)
    assert header, out
    for name in LAYERS:
        assert re.search(rf"^{name}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^Total\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+100\.0$", out, re.M), out


def test_separate_profile_run(tmp_path, chain):
    prof, times = tmp_path / "profile.json", tmp_path / "times.json"
    proc = run_kiln(f"--onnx={chain}", "--iterations=7", "--warmUp=0", "--duration=0", "--separateProfileRun",
                    f"--exportProfile={prof}", f"--exportTimes={times}", check=True)
    count, rows = read_profile(prof)
    assert count == 7 and len(json.loads(times.read_text())) == 7
    assert [r["name"] for r in rows] == LAYERS
    assert "--separateProfileRun keeps it out" not in err(proc)


def test_profile_with_inf_streams_merges_every_stream(tmp_path, chain):
    prof = tmp_path / "profile.json"
    run_kiln(f"--onnx={chain}", "--infStreams=2", "--iterations=4", "--warmUp=0", "--duration=0",
             f"--exportProfile={prof}", check=True)
    count, _ = read_profile(prof)
    assert count == 8


# --- layer information --------------------------------------------------------------------------------------


def test_export_layer_info_names_only(tmp_path, chain_engine):
    info = tmp_path / "layers.json"
    run_kiln(f"--loadEngine={chain_engine}", f"--exportLayerInfo={info}", "--skipInference", check=True)
    data = json.loads(info.read_text())
    assert list(data) == ["Layers", "Bindings"]
    assert data["Layers"] == LAYERS
    assert data["Bindings"] == ["x", "y"]


def test_export_layer_info_detailed(tmp_path, chain_engine):
    info = tmp_path / "layers.json"
    run_kiln(f"--loadEngine={chain_engine}", f"--exportLayerInfo={info}", "--profilingVerbosity=detailed",
             "--skipInference", check=True)
    layers = json.loads(info.read_text())["Layers"]
    assert [l["Name"] for l in layers] == LAYERS
    assert [l["LayerType"] for l in layers] == ["Relu", "Mul", "Add", "Sigmoid"]
    for l in layers:
        assert list(l) == ["Name", "LayerType", "Inputs", "Outputs", "Precision", "Backend", "RunsOn"]
        assert l["Precision"] == "FP32" and l["Backend"] == "cpu" and l["RunsOn"] == "Host"
        for t in l["Inputs"] + l["Outputs"]:
            assert list(t) == ["Name", "Location", "Dimensions", "Format/Datatype"]
            assert t["Location"] == "Host" and t["Format/Datatype"] == "Row major linear FP32"
    relu = layers[0]
    assert relu["Inputs"][0] == {"Name": "x", "Location": "Host", "Dimensions": [-1, 8],
                                 "Format/Datatype": "Row major linear FP32"}
    assert relu["Outputs"][0]["Name"] == "r"
    assert [t["Name"] for t in layers[1]["Inputs"]] == ["r", "two"]  # weights are inputs too


def test_layer_info_with_a_profile_gives_each_layers_share(tmp_path, chain_engine):
    # With a profile in the same run, the detailed layer information carries each layer's average time and share,
    # the same figures as --exportProfile's; without one it has neither.
    info, prof = tmp_path / "layers.json", tmp_path / "profile.json"
    out = run_kiln(f"--loadEngine={chain_engine}", f"--exportLayerInfo={info}", "--profilingVerbosity=detailed",
                   f"--exportProfile={prof}", "--dumpLayerInfo", "--iterations=5", "--warmUp=0", "--duration=0",
                   check=True).stdout
    layers = json.loads(info.read_text())["Layers"]
    count, rows = read_profile(prof)
    assert count == 5
    by_name = {r["name"]: r for r in rows}
    assert [l["Name"] for l in layers] == LAYERS
    for l in layers:
        assert list(l)[-2:] == ["AverageMs", "TimePercent"], l
        assert math.isclose(l["AverageMs"], by_name[l["Name"]]["averageMs"], rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(l["TimePercent"], by_name[l["Name"]]["percentage"], rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(sum(l["TimePercent"] for l in layers), 100, abs_tol=1e-6)
    for name in LAYERS:
        assert re.search(rf"^{name} \[.*; [\d.]+ ms a run \([\d.]+% of the profiled time\)$", out, re.M), out
    plain = tmp_path / "plain.json"
    run_kiln(f"--loadEngine={chain_engine}", f"--exportLayerInfo={plain}", "--profilingVerbosity=detailed",
             "--iterations=2", "--warmUp=0", "--duration=0", check=True)
    for l in json.loads(plain.read_text())["Layers"]:
        assert "AverageMs" not in l and "TimePercent" not in l


def test_dump_layer_info(chain_engine):
    names = run_kiln(f"--loadEngine={chain_engine}", "--dumpLayerInfo", "--skipInference", check=True).stdout
    assert "=== Layer Information (4 layers) ===" in names
    assert "\nrelu1\nscale\nshift\nact\n" in names, names
    detailed = run_kiln(f"--loadEngine={chain_engine}", "--dumpLayerInfo", "--profilingVerbosity=detailed",
                        "--skipInference", check=True).stdout
    assert "relu1 [Relu] FP32: (x FP32 ?x8) -> (r FP32 ?x8), runs on the host" in detailed or \
        re.search(r"relu1 \[Relu\] FP32: \(x FP32 \w+x8\) -> \(r FP32 \w+x8\), runs on the host", detailed), detailed
    assert "Bindings: x, y" in detailed


# --- I/O formats, profiles, plan version --------------------------------------------------------------------


def test_io_formats_matching_the_engine_are_accepted(chain):
    run_kiln(f"--onnx={chain}", "--inputIOFormats=fp32:chw", "--outputIOFormats=fp32:chw", *FAST, check=True)


@pytest.mark.parametrize("flag,spec,message", [
    ("--outputIOFormats", "fp32:hwc8", "format 'hwc8' for 'y' is not supported yet"),
    ("--inputIOFormats", "fp32:chw,fp32:chw", "gives 2 formats, but the network has 1 inputs"),
    ("--inputIOFormats", "int32:chw", "int32 bindings are not supported; float32, float16 and bfloat16 are"),
])
def test_io_formats_the_engine_cannot_honour(chain, flag, spec, message):
    proc = run_kiln(f"--onnx={chain}", f"{flag}={spec}", *FAST, check=False)
    assert proc.returncode == 1
    assert message in err(proc), err(proc)


def chain_reference(x):
    """The chain model's float32 result for float32 x."""
    return 1.0 / (1.0 + np.exp(-(np.maximum(x, 0) * 2.0 + 0.25)))


@pytest.mark.parametrize("in_type,out_type", [("fp16", "fp16"), ("fp32", "fp16"), ("bf16", "fp32"), ("fp16", "bf16")])
def test_io_formats_choose_the_binding_types(tmp_path, chain, in_type, out_type):
    """A float binding built as another float type (trtexec's fp16:chw): the engine's bindings carry it, the data
    goes in and out in it, and the result is the float32 network's, rounded where the binding is narrower."""
    names = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    engine = tmp_path / "io.engine"
    proc = run_kiln(f"--onnx={chain}", f"--inputIOFormats={in_type}:chw", f"--outputIOFormats={out_type}:chw",
                    "--shapes=x:4x8", f"--saveEngine={engine}", "--skipInference", check=True)
    assert f"Input  'x': {names[in_type]}" in proc.stdout, proc.stdout
    assert f"Output 'y': {names[out_type]}" in proc.stdout, proc.stdout
    x = np.linspace(-3, 3, 32, dtype=np.float32).reshape(4, 8)
    if in_type == "fp16":
        x = x.astype(np.float16)
        raw = x.tobytes()
    elif in_type == "bf16":
        bits = (x.view(np.uint32) + 0x8000) >> 16  # round to bfloat16 (no ties in these values)
        raw = bits.astype(np.uint16).tobytes()
        x = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        raw = x.tobytes()
    (tmp_path / "x.bin").write_bytes(raw)
    out = tmp_path / "out.json"
    run_kiln(f"--loadEngine={engine}", "--shapes=x:4x8", f"--loadInputs=x:{tmp_path / 'x.bin'}",
             f"--exportOutput={out}", f"--inputIOFormats={in_type}:chw", f"--outputIOFormats={out_type}:chw", *FAST,
             check=True)
    got = np.array(json.loads(out.read_text())[0]["values"], np.float64).reshape(4, 8)
    want = chain_reference(np.asarray(x, np.float32).astype(np.float64))
    tol = {"fp32": 1e-6, "fp16": 1e-3, "bf16": 8e-3}[out_type]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    # The binding types are fixed in the engine: asking for others at load is an error that says so.
    other = "fp32" if in_type != "fp32" else "fp16"
    proc = run_kiln(f"--loadEngine={engine}", "--shapes=x:4x8", f"--inputIOFormats={other}:chw", *FAST, check=False)
    assert proc.returncode == 1
    assert (f"--inputIOFormats: '{other}:chw' for 'x', but the engine's binding is {names[in_type]} (binding types "
            "are chosen when the engine is built") in err(proc), err(proc)


def test_io_formats_keep_integer_bindings(tmp_path):
    """An integer input cannot take a float binding type: the build stops, naming the input and its type."""
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Relu", ["f"], ["y"], name="relu")]
    path = save_model(tmp_path / "ints.onnx", nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    proc = run_kiln(f"--onnx={path}", "--inputIOFormats=fp16:chw", *FAST, check=False)
    assert proc.returncode == 1
    assert ("--inputIOFormats: 'fp16:chw' for 'ids' (int64): set_io_type 'ids': the tensor is int64; only "
            "float32/float16/bfloat16 tensors can change their binding type") in err(proc), err(proc)
    # Its own type is fine, and the float output may still change.
    run_kiln(f"--onnx={path}", "--inputIOFormats=int64:chw", "--outputIOFormats=fp16:chw", *FAST, check=True)


def test_profile_selection(chain_engine):
    run_kiln(f"--loadEngine={chain_engine}", "--profile=0", *FAST, check=True)
    run_kiln(f"--loadEngine={chain_engine}", "--useProfile=0", *FAST, check=True)
    proc = run_kiln(f"--loadEngine={chain_engine}", "--profile=1", *FAST, check=False)
    assert proc.returncode == 1
    assert "--profile=1: the engine has 1 optimization profile(s)" in err(proc), err(proc)


def test_get_plan_version_only(tmp_path, chain_engine):
    proc = run_kiln(f"--loadEngine={chain_engine}", "--getPlanVersionOnly", check=True)
    version = re.search(r"\d+\.\d+\.\d+", run_kiln("--version", check=True).stdout).group(0)
    assert f"Plan was created with Kiln version: {version}" in proc.stdout, proc.stdout
    assert "Engine format version: 1" in proc.stdout
    assert "=== Performance summary ===" not in proc.stdout  # it only reads the header
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"not an engine at all, just bytes")
    proc = run_kiln(f"--loadEngine={bad}", "--getPlanVersionOnly", check=False)
    assert proc.returncode == 1 and "bad magic" in err(proc), err(proc)


def test_get_plan_version_reads_only_the_header(tmp_path, chain_engine):
    # A body that the full loader rejects does not matter to --getPlanVersionOnly.
    data = bytearray(chain_engine.read_bytes())
    data[-1] ^= 0xFF
    damaged = tmp_path / "damaged.engine"
    damaged.write_bytes(bytes(data))
    assert run_kiln(f"--loadEngine={damaged}", *FAST, check=False).returncode == 1
    assert "Plan was created with Kiln version" in run_kiln(f"--loadEngine={damaged}", "--getPlanVersionOnly",
                                                            check=True).stdout


# --- kiln compare -------------------------------------------------------------------------------------------


def test_compare_passes_against_the_cpu_reference(chain):
    proc = run_kiln("compare", f"--onnx={chain}", "--shapes=x:3x8", check=True)
    assert "Reference: CPU backend" in proc.stdout
    assert re.search(r"^y\s+\(output\)\s+(\S+)\s+\S+\s+\S+\s+\S+\s+1\.000000\s+pass$", proc.stdout, re.M), proc.stdout
    assert "PASSED: 1 tensors within the tolerance" in proc.stdout


def test_compare_an_engine_with_float16_bindings(tmp_path, chain):
    """An engine built with float16 bindings against the float32 model: the reference gets the same inputs converted
    to its float32, and the difference is the float16 rounding of the input and output (within 1e-3, not 1e-5)."""
    engine = tmp_path / "fp16io.engine"
    run_kiln(f"--onnx={chain}", "--shapes=x:4x8", "--inputIOFormats=fp16:chw", "--outputIOFormats=fp16:chw",
             f"--saveEngine={engine}", "--skipInference", check=True)
    proc = run_kiln("compare", f"--loadEngine={engine}", f"--referenceOnnx={chain}", "--shapes=x:4x8", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Input 'x': float16 4x8" in proc.stdout, proc.stdout
    assert re.search(r"^y\s+\(output\)\s.*FAIL \(\d+ of 32 elements\)$", proc.stdout, re.M), proc.stdout
    proc = run_kiln("compare", f"--loadEngine={engine}", f"--referenceOnnx={chain}", "--shapes=x:4x8", "--atol=1e-3",
                    "--rtol=1e-3", check=True)
    assert "PASSED: 1 tensors within the tolerance" in proc.stdout, proc.stdout


def test_compare_fails_on_a_different_reference(tmp_path, chain):
    other = chain_model(tmp_path / "other.onnx", shift=0.5)
    proc = run_kiln("compare", f"--onnx={chain}", f"--referenceOnnx={other}", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^y\s+\(output\)\s.*FAIL \(\d+ of 8 elements\)$", proc.stdout, re.M), proc.stdout
    assert "FAILED: 1 of 1 tensors exceed the tolerance" in proc.stdout
    # A loose enough tolerance passes (a 0.25 shift moves the sigmoid by at most 0.0625).
    run_kiln("compare", f"--onnx={chain}", f"--referenceOnnx={other}", "--atol=0.13", check=True)


def test_compare_mark_all_names_the_first_layer_that_differs(tmp_path, chain):
    other = chain_model(tmp_path / "other.onnx", shift=0.5)
    proc = run_kiln("compare", f"--onnx={chain}", f"--referenceOnnx={other}", "--markAll", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    for tensor, layer in [("r", "relu1"), ("m", "scale")]:
        assert re.search(rf"^{tensor}\s+{layer} \[\w+\]\s.*pass$", out, re.M), out
    assert re.search(r"^a\s+shift \[Add\]\s.*FAIL", out, re.M), out
    assert "First layer over the tolerance: 'shift' (Add), output 'a': max abs error 2.5000e-01" in out, out
    assert "FAILED: 2 of 4 tensors exceed the tolerance" in out


def test_compare_mark_all_passes_on_the_same_model(chain):
    proc = run_kiln("compare", f"--onnx={chain}", "--markAll", check=True)
    assert "PASSED: 4 tensors within the tolerance" in proc.stdout, proc.stdout


def test_compare_loaded_engine(chain, chain_engine):
    proc = run_kiln("compare", f"--loadEngine={chain_engine}", f"--onnx={chain}", check=True)
    assert f"Subject:   engine {chain_engine} on cpu" in proc.stdout


def test_compare_with_loaded_inputs(tmp_path, chain):
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    x.tofile(tmp_path / "x.bin")
    run_kiln("compare", f"--onnx={chain}", "--shapes=x:2x8", f"--loadInputs=x:{tmp_path / 'x.bin'}", check=True)


@pytest.mark.parametrize("args,message", [
    ([], "Give --onnx (a model to build) or --loadEngine"),
    (["--markAll", "--loadEngine=e.engine", "--onnx=m.onnx"], "--markAll needs --onnx"),
    (["--loadEngine=e.engine"], "give --onnx or --referenceOnnx with --loadEngine"),
    (["--onnx=m.onnx", "--atol=-1"], "--atol and --rtol must be >= 0"),
    (["--onnx=m.onnx", "--reference=tensorrt"], "--reference"),
])
def test_compare_usage_errors(args, message):
    proc = run_kiln("compare", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_compare_fp16_on_cpu_is_refused(chain):
    proc = run_kiln("compare", f"--onnx={chain}", "--fp16", "--device=cpu", check=False)
    assert proc.returncode == 1 and "--fp16 requires --device=cuda" in proc.stderr, proc.stderr


def test_compare_with_onnxruntime(chain):
    proc = run_kiln("compare", f"--onnx={chain}", "--reference=onnxruntime", "--markAll")
    # kiln runs the python3 on PATH, which need not be the interpreter running these tests.
    if subprocess.run(["python3", "-c", "import onnxruntime"], capture_output=True).returncode != 0:
        assert proc.returncode == 1
        assert "--reference=onnxruntime needs the onnxruntime Python package" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Reference: ONNX Runtime" in proc.stdout
    assert "PASSED: 4 tensors within the tolerance" in proc.stdout, proc.stdout


def test_compare_output_missing_from_the_reference(tmp_path, chain):
    renamed = save_model(
        tmp_path / "renamed.onnx",
        [helper.make_node("Relu", ["x"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8])],
    )
    proc = run_kiln("compare", f"--onnx={chain}", f"--referenceOnnx={renamed}", check=False)
    assert proc.returncode == 1
    assert re.search(r"^y\s+-\s+FAIL: not an output of the reference$", proc.stdout, re.M), proc.stdout
