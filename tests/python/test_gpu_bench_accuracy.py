"""The GPU benchmark's accuracy columns (bench/gpu_bench.py), checked on the CPU: the comparison itself against
values computed here by hand, and a row below the target flagged in its note."""
import importlib
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
gpu_bench = importlib.import_module("gpu_bench")


def test_cosine_and_top1_agreement():
    ref = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.25]])
    out = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.25]])  # row 0's largest entry moved
    cos, top1 = gpu_bench.accuracy(out, ref, True)
    # Both have the same norm (a permutation of row 0): cos = dot / |ref|^2.
    dot = 1 + 6 + 6 + 0.25 + 1 + 0.0625
    assert cos == pytest.approx(dot / (1 + 9 + 4 + 0.25 + 1 + 0.0625), rel=1e-12)
    assert top1 == 0.5
    assert gpu_bench.accuracy(ref, ref, False) == (pytest.approx(1.0), None)


def row(acc):
    return {"model": "vit_b_16", "precision": "fp16", "batch": 1, "peers": {"eager": 1.0}, "prep_s": {},
            "kiln": {"ms": 0.5}, "kiln_ms": 0.5, "best_torch": "eager", "ratio_vs_best_torch": 2.0, "accuracy": acc}


def test_report_flags_rows_below_the_accuracy_target():
    good = gpu_bench.report([row({"cos": 0.99995, "top1": 1.0})], "GPU").splitlines()[-1]
    assert "| 0.99995 (100.0%) |" in good and "below the target" not in good
    for acc in ({"cos": 0.998, "top1": 1.0}, {"cos": 0.9999, "top1": 0.98}):
        assert "accuracy below the target" in gpu_bench.report([row(acc)], "GPU").splitlines()[-1]
    failed = gpu_bench.report([row({"error": "RuntimeError: boom"})], "GPU").splitlines()[-1]
    assert "accuracy run failed: RuntimeError: boom" in failed
