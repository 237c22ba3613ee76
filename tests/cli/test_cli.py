# End-to-end tests of the kiln command line on tiny ONNX models (run by `make test-cli`, KILN_BUILD=<build dir>).
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

BUILD_DIR = Path(os.environ.get("KILN_BUILD", "build"))
KILN = BUILD_DIR / "bin" / "kiln"
# Keeps each inference run short: the timing loop itself is tested separately.
FAST = ["--warmUp=0", "--duration=0", "--iterations=1"]

ALL_FLAGS = [
    "--onnx", "--saveEngine", "--loadEngine", "--minShapes", "--optShapes", "--maxShapes", "--shapes",
    "--loadInputs", "--exportOutput", "--exportTimes", "--iterations", "--warmUp", "--duration", "--verbose",
    "--device", "--skipInference", "--dumpOutput", "--noTF32", "--fp16", "--bf16", "--int8", "--help",
    "--version",
]


@pytest.fixture(scope="session", autouse=True)
def kiln_binary():
    if not KILN.is_file():
        pytest.fail(f"{KILN} not found: build Kiln first or set KILN_BUILD to the build directory")
    return KILN


def run_kiln(*args, check=None):
    proc = subprocess.run([str(KILN), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check is True:
        assert proc.returncode == 0, f"kiln failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    if check is False:
        assert proc.returncode != 0, f"kiln should have failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def save_model(path, nodes, inputs, outputs):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kiln-tests")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def relu_model(tmp_path):
    """y = Relu(x), x: float [N, 4] with a dynamic batch."""
    return save_model(
        tmp_path / "relu.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )


@pytest.fixture
def identity_int64_model(tmp_path):
    """y = Identity(x), x: int64 [N]."""
    return save_model(
        tmp_path / "identity_i64.onnx",
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N"])],
    )


@pytest.fixture
def add_model(tmp_path):
    """sum = in:0 + b, both float [N, 3]; the ':' in the input name is deliberate (TF-exported models have it)."""
    return save_model(
        tmp_path / "add.onnx",
        [helper.make_node("Add", ["in:0", "b"], ["sum"])],
        [
            helper.make_tensor_value_info("in:0", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3])],
    )


def profile_args(name, lo, opt, hi):
    return [f"--minShapes={name}:{lo}", f"--optShapes={name}:{opt}", f"--maxShapes={name}:{hi}"]


def build_engine(tmp_path, model, *extra):
    engine = tmp_path / (model.stem + ".engine")
    run_kiln(f"--onnx={model}", f"--saveEngine={engine}", "--skipInference", *extra, check=True)
    assert engine.is_file() and engine.stat().st_size > 0
    return engine


def read_outputs(path):
    data = json.loads(Path(path).read_text())
    assert isinstance(data, list)
    for entry in data:
        assert set(entry) == {"name", "dimensions", "values"}, entry.keys()
        assert isinstance(entry["dimensions"], str)
    return {e["name"]: e for e in data}


def as_array(entry, dtype=np.float32):
    dims = [int(d) for d in entry["dimensions"].split("x")] if entry["dimensions"] else []
    return np.array(entry["values"], dtype=dtype).reshape(dims)


# --- options ---------------------------------------------------------------------------------------------


def test_help_lists_every_flag():
    proc = run_kiln("--help", check=True)
    for flag in ALL_FLAGS:
        assert flag in proc.stdout, f"{flag} missing from --help"


def test_version():
    proc = run_kiln("--version", check=True)
    assert re.search(r"\d+\.\d+\.\d+", proc.stdout)


@pytest.mark.parametrize("typo,expected", [
    ("--loadengine=m.engine", "--loadEngine"),
    ("--iteratons=5", "--iterations"),
    ("--fp61", "--fp16"),
    ("--exportOuput=o.json", "--exportOutput"),
])
def test_unknown_flag_suggests_closest(typo, expected):
    proc = run_kiln(typo, check=False)
    assert "[E]" in proc.stderr
    assert f"Did you mean '{expected}'?" in proc.stderr, proc.stderr


def test_unknown_flag_far_from_all_gets_no_suggestion():
    proc = run_kiln("--completelyUnrelatedOption", check=False)
    assert "Unknown option '--completelyUnrelatedOption'" in proc.stderr
    assert "Did you mean" not in proc.stderr


def test_onnx_or_load_engine_required(relu_model, tmp_path):
    assert "exactly one of --onnx and --loadEngine" in run_kiln(*FAST, check=False).stderr
    proc = run_kiln(f"--onnx={relu_model}", f"--loadEngine={tmp_path / 'x.engine'}", check=False)
    assert "exactly one of --onnx and --loadEngine" in proc.stderr


@pytest.mark.parametrize("flag", ["--fp16", "--bf16", "--int8"])
def test_reduced_precision_on_cpu_is_an_error(relu_model, flag):
    proc = run_kiln(f"--onnx={relu_model}", flag, "--device=cpu", check=False)
    assert f"{flag} requires --device=cuda" in proc.stderr, proc.stderr


def test_fp16_without_device_is_an_error(relu_model):
    # No GPU backend is built, so the default device is the CPU and FP16 cannot be honoured.
    proc = run_kiln(f"--onnx={relu_model}", "--fp16", check=False)
    assert "--fp16 requires --device=cuda" in proc.stderr, proc.stderr


def test_explicit_cuda_device_is_unavailable(relu_model):
    # Without a GPU the refusal comes from the build (no CUDA backend) or from the backend (no usable GPU).
    proc = run_kiln(f"--onnx={relu_model}", "--device=cuda", check=False)
    assert proc.returncode == 1
    assert ("the CUDA backend is not available in this build" in proc.stderr
            or "no CUDA GPU is usable" in proc.stderr), proc.stderr


def test_default_device_is_reported(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", "--skipInference", check=True)
    assert re.search(r"^Device: cpu \(", proc.stdout, re.M), proc.stdout


def test_bad_dims_are_rejected(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", "--shapes=x:2xfour", check=False)
    assert "bad dimensions '2xfour'" in proc.stderr, proc.stderr


# --- build, save, load ----------------------------------------------------------------------------------


def test_build_save_load_and_run(tmp_path, relu_model):
    engine = build_engine(tmp_path, relu_model, *profile_args("x", "1x4", "2x4", "8x4"))
    proc = run_kiln(f"--loadEngine={engine}", f"--exportOutput={tmp_path / 'out.json'}", *FAST, check=True)
    assert "Input  'x': float32 -1x4 (profile 0: min 1x4, opt 2x4, max 8x4)" in proc.stdout, proc.stdout
    assert "Output 'y': float32" in proc.stdout
    out = read_outputs(tmp_path / "out.json")
    # Without --shapes a dynamic input runs at the profile's opt shape.
    assert out["y"]["dimensions"] == "2x4"
    # Random inputs are uniform in [-1, 1], so Relu's outputs lie in [0, 1].
    y = as_array(out["y"])
    assert (y >= 0).all() and (y <= 1).all() and (y > 0).any()


def test_build_prints_build_time(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", "--skipInference", check=True)
    assert re.search(r"Engine built in [\d.]+ s", proc.stdout), proc.stdout


def test_random_inputs_are_reproducible(tmp_path, relu_model):
    engine = build_engine(tmp_path, relu_model, *profile_args("x", "1x4", "4x4", "8x4"))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run_kiln(f"--loadEngine={engine}", f"--exportOutput={a}", *FAST, check=True)
    run_kiln(f"--loadEngine={engine}", f"--exportOutput={b}", *FAST, check=True)
    assert read_outputs(a) == read_outputs(b)


def test_dynamic_input_without_shapes_defaults_to_one(tmp_path, relu_model):
    out = tmp_path / "out.json"
    proc = run_kiln(f"--onnx={relu_model}", f"--exportOutput={out}", *FAST, check=True)
    assert "Automatically overriding shape to: 1x4" in proc.stderr
    assert read_outputs(out)["y"]["dimensions"] == "1x4"


def test_shapes_alone_sets_a_static_profile(tmp_path, relu_model):
    out = tmp_path / "out.json"
    run_kiln(f"--onnx={relu_model}", "--shapes=x:5x4", f"--exportOutput={out}", *FAST, check=True)
    assert read_outputs(out)["y"]["dimensions"] == "5x4"


def test_incomplete_profile_is_an_error(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", "--minShapes=x:1x4", "--maxShapes=x:8x4", check=False)
    assert "--optShapes" in proc.stderr, proc.stderr


def test_profile_for_unknown_input_is_an_error(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", *profile_args("nope", "1x4", "1x4", "1x4"), check=False)
    assert "'nope' is not an input" in proc.stderr, proc.stderr


def test_profile_rank_mismatch_is_an_error(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", *profile_args("x", "1x4x1", "1x4x1", "1x4x1"), check=False)
    assert "rank 2" in proc.stderr, proc.stderr


def test_build_only_flags_rejected_with_load_engine(tmp_path, relu_model):
    engine = build_engine(tmp_path, relu_model)
    proc = run_kiln(f"--loadEngine={engine}", "--minShapes=x:1x4", check=False)
    assert "--minShapes is a build option" in proc.stderr


# --- inputs, outputs and shapes ---------------------------------------------------------------------------


def test_export_output_matches_numpy(tmp_path, relu_model):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    x.tofile(tmp_path / "x.bin")
    out = tmp_path / "out.json"
    run_kiln(f"--onnx={relu_model}", *profile_args("x", "1x4", "2x4", "8x4"), "--shapes=x:3x4",
             f"--loadInputs=x:{tmp_path / 'x.bin'}", f"--exportOutput={out}", *FAST, check=True)
    text = out.read_text()
    data = json.loads(text)
    assert [e["name"] for e in data] == ["y"]
    assert data[0]["dimensions"] == "3x4"
    np.testing.assert_array_equal(as_array(data[0]), np.maximum(x, 0))


def test_load_inputs_round_trip_float(tmp_path):
    model = save_model(
        tmp_path / "identity_f32.onnx",
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
    )
    rng = np.random.default_rng(7)
    # Values that need all of float32's digits: the JSON must carry them exactly.
    x = (rng.standard_normal((2, 5)) * 1e3).astype(np.float32)
    x[0, 0] = np.float32(1e-30)
    x.tofile(tmp_path / "x.bin")
    out = tmp_path / "out.json"
    run_kiln(f"--onnx={model}", "--shapes=x:2x5", f"--loadInputs=x:{tmp_path / 'x.bin'}",
             f"--exportOutput={out}", *FAST, check=True)
    np.testing.assert_array_equal(as_array(read_outputs(out)["y"]), x)


def test_load_inputs_round_trip_int64(tmp_path, identity_int64_model):
    x = np.array([0, -1, 2**40 + 3, -(2**62), 7], dtype=np.int64)
    x.tofile(tmp_path / "x.bin")
    out = tmp_path / "out.json"
    run_kiln(f"--onnx={identity_int64_model}", "--shapes=x:5", f"--loadInputs=x:{tmp_path / 'x.bin'}",
             f"--exportOutput={out}", *FAST, check=True)
    entry = read_outputs(out)["y"]
    assert entry["values"] == x.tolist()  # int64 values stay exact, beyond double precision


def test_random_integer_inputs_are_small_and_non_negative(tmp_path, identity_int64_model):
    out = tmp_path / "out.json"
    run_kiln(f"--onnx={identity_int64_model}", "--shapes=x:64", f"--exportOutput={out}", *FAST, check=True)
    values = read_outputs(out)["y"]["values"]
    assert len(values) == 64 and all(isinstance(v, int) and 0 <= v <= 3 for v in values)


def test_input_name_with_colon(tmp_path, add_model):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 0.5, dtype=np.float32)
    a.tofile(tmp_path / "a.bin")
    b.tofile(tmp_path / "b.bin")
    out = tmp_path / "out.json"
    run_kiln(f"--onnx={add_model}", *profile_args("in:0", "1x3", "2x3", "4x3"), *profile_args("b", "1x3", "2x3", "4x3"),
             f"--loadInputs=in:0:{tmp_path / 'a.bin'},b:{tmp_path / 'b.bin'}", f"--exportOutput={out}", *FAST,
             check=True)
    np.testing.assert_array_equal(as_array(read_outputs(out)["sum"]), a + b)


def test_load_inputs_wrong_size(tmp_path, relu_model):
    np.zeros(5, dtype=np.float32).tofile(tmp_path / "x.bin")
    proc = run_kiln(f"--onnx={relu_model}", "--shapes=x:3x4", f"--loadInputs=x:{tmp_path / 'x.bin'}", *FAST, check=False)
    assert "[E]" in proc.stderr
    assert "has 20 bytes, but shape 3x4 of float32 needs 48 bytes" in proc.stderr, proc.stderr


def test_load_inputs_missing_file(tmp_path, relu_model):
    proc = run_kiln(f"--onnx={relu_model}", f"--loadInputs=x:{tmp_path / 'missing.bin'}", *FAST, check=False)
    assert "missing.bin" in proc.stderr, proc.stderr


def test_load_inputs_unknown_input(tmp_path, relu_model):
    np.zeros(4, dtype=np.float32).tofile(tmp_path / "x.bin")
    proc = run_kiln(f"--onnx={relu_model}", f"--loadInputs=z:{tmp_path / 'x.bin'}", *FAST, check=False)
    assert "'z' is not an input" in proc.stderr, proc.stderr


def test_shape_outside_profile(tmp_path, relu_model):
    engine = build_engine(tmp_path, relu_model, *profile_args("x", "1x4", "2x4", "8x4"))
    proc = run_kiln(f"--loadEngine={engine}", "--shapes=x:9x4", *FAST, check=False)
    assert "[E]" in proc.stderr
    assert "9x4" in proc.stderr and "max 8x4" in proc.stderr, proc.stderr


def test_dump_output(tmp_path, relu_model):
    x = np.array([[-1, 2, -3, 4]], dtype=np.float32)
    x.tofile(tmp_path / "x.bin")
    proc = run_kiln(f"--onnx={relu_model}", "--shapes=x:1x4", f"--loadInputs=x:{tmp_path / 'x.bin'}", "--dumpOutput",
                    *FAST, check=True)
    assert "y: (1x4)" in proc.stdout
    assert "0 2 0 4" in proc.stdout, proc.stdout


# --- engine files -----------------------------------------------------------------------------------------


def test_corrupt_engine_file(tmp_path):
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"this is not an engine" * 10)
    proc = run_kiln(f"--loadEngine={bad}", *FAST, check=False)
    assert re.search(r"^\[E\] .*failed to load engine", proc.stderr, re.M), proc.stderr
    assert "Traceback" not in proc.stderr and "Segmentation" not in proc.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_engine_file(tmp_path, relu_model, damage):
    engine = build_engine(tmp_path, relu_model)
    data = bytearray(engine.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    proc = run_kiln(f"--loadEngine={engine}", *FAST, check=False)
    assert proc.returncode == 1, proc.returncode  # a clean failure, not a crash (negative = signal)
    assert "[E]" in proc.stderr and "failed to load engine" in proc.stderr, proc.stderr


def test_missing_engine_file(tmp_path):
    proc = run_kiln(f"--loadEngine={tmp_path / 'none.engine'}", *FAST, check=False)
    assert "none.engine" in proc.stderr


def test_save_engine_to_unwritable_path(tmp_path, relu_model):
    proc = run_kiln(f"--onnx={relu_model}", f"--saveEngine={tmp_path / 'no' / 'such' / 'dir.engine'}", check=False)
    assert "--saveEngine" in proc.stderr, proc.stderr


def test_missing_onnx_file(tmp_path):
    proc = run_kiln(f"--onnx={tmp_path / 'none.onnx'}", check=False)
    assert "[E]" in proc.stderr and "none.onnx" in proc.stderr


# --- timing -----------------------------------------------------------------------------------------------


def test_performance_summary(tmp_path, relu_model):
    times = tmp_path / "times.json"
    proc = run_kiln(f"--onnx={relu_model}", "--iterations=25", "--warmUp=10", "--duration=0",
                    f"--exportTimes={times}", check=True)
    out = proc.stdout
    assert "=== Performance summary ===" in out
    assert re.search(r"^Throughput: [\d.]+ qps$", out, re.M), out
    latency = re.search(r"^Latency: min = ([\d.]+) ms, max = ([\d.]+) ms, mean = ([\d.]+) ms, median = ([\d.]+) ms, "
                        r"percentile\(90%\) = ([\d.]+) ms, percentile\(95%\) = ([\d.]+) ms, "
                        r"percentile\(99%\) = ([\d.]+) ms$", out, re.M)
    assert latency, out
    lo, hi, mean, median, p90, p95, p99 = map(float, latency.groups())
    assert lo <= median <= p90 <= p95 <= p99 <= hi and lo <= mean <= hi
    assert re.search(r"^Total Host Walltime: [\d.]+ s$", out, re.M)
    assert "Total GPU Compute Time: n/a" in out
    runs = json.loads(times.read_text())
    assert len(runs) >= 25  # --iterations is a minimum
    assert all(r["latencyMs"] >= 0 and r["endComputeMs"] >= r["startComputeMs"] for r in runs)


def test_duration_extends_the_run(relu_model):
    proc = run_kiln(f"--onnx={relu_model}", "--iterations=1", "--warmUp=0", "--duration=0.5", check=True)
    walltime = float(re.search(r"Total Host Walltime: ([\d.]+) s", proc.stdout).group(1))
    assert walltime >= 0.5
    assert int(re.search(r"Timed iterations: (\d+)", proc.stdout).group(1)) > 1


def test_several_profiles_and_profile_selection(tmp_path, relu_model):
    """Repeated --minShapes/--optShapes/--maxShapes naming the same input build one profile each (as trtexec);
    --profile picks the one the run uses, and its bounds are what the shapes are checked against."""
    engine = build_engine(tmp_path, relu_model, *profile_args("x", "1x4", "2x4", "4x4"),
                          *profile_args("x", "16x4", "32x4", "64x4"))
    x = np.linspace(-3, 3, 40 * 4, dtype=np.float32).reshape(40, 4)
    x.tofile(tmp_path / "x.bin")
    out = tmp_path / "out.json"
    run_kiln(f"--loadEngine={engine}", "--profile=1", "--shapes=x:40x4", f"--loadInputs=x:{tmp_path / 'x.bin'}",
             f"--exportOutput={out}", *FAST, check=True)
    np.testing.assert_array_equal(as_array(read_outputs(out)["y"]), np.maximum(x, 0))
    proc = run_kiln(f"--loadEngine={engine}", "--profile=0", "--shapes=x:40x4", *FAST, check=False)
    assert proc.returncode != 0 and "40x4" in proc.stderr and "max 4x4" in proc.stderr, proc.stderr
    proc = run_kiln(f"--loadEngine={engine}", "--profile=2", "--shapes=x:2x4", *FAST, check=False)
    assert "--profile=2: the engine has 2" in proc.stderr, proc.stderr


def test_several_profiles_need_every_flag_repeated(tmp_path, relu_model):
    proc = run_kiln(f"--onnx={relu_model}", "--minShapes=x:1x4", "--minShapes=x:8x4", "--optShapes=x:2x4",
                    "--maxShapes=x:4x4", *FAST, check=False)
    assert proc.returncode != 0
    assert "need --minShapes, --optShapes and --maxShapes repeated the same number of times" in proc.stderr, proc.stderr
