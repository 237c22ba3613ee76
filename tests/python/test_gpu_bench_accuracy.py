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


def row(acc, torch_acc=None):
    return {"model": "vit_b_16", "precision": "fp16", "batch": 1, "peers": {"eager": 1.0}, "prep_s": {},
            "kiln": {"ms": 0.5}, "kiln_ms": 0.5, "best_torch": "eager", "ratio_vs_best_torch": 2.0, "accuracy": acc,
            "torch_accuracy": torch_acc or {}}


def test_report_flags_rows_below_the_accuracy_target():
    good = gpu_bench.report([row({"cos": 0.99995, "top1": 1.0})], "GPU").splitlines()[-1]
    assert "| 0.99995 (100.0%) |" in good and "below the target" not in good
    for acc in ({"cos": 0.998, "top1": 1.0}, {"cos": 0.9999, "top1": 0.98}):
        assert "accuracy below the target" in gpu_bench.report([row(acc)], "GPU").splitlines()[-1]
    failed = gpu_bench.report([row({"error": "RuntimeError: boom"})], "GPU").splitlines()[-1]
    assert "accuracy run failed: RuntimeError: boom" in failed
    # No module: each row says why it has no figure (not a bare dash).
    skipped = gpu_bench.kiln_accuracy(None, "/nonexistent", "x", None, None, True, "No module named 'kiln'")
    line = gpu_bench.report([row(skipped)], "GPU").splitlines()[-1]
    assert "| — |" in line
    assert "no accuracy figure: Kiln's Python module does not import (No module named 'kiln')" in line


def test_report_sets_top1_flips_against_pytorch_fp16():
    # Kiln flips 2% of rows' top-1 where PyTorch FP16 flips 3%: said in the note, not flagged as Kiln's error.
    line = gpu_bench.report([row({"cos": 0.9999, "top1": 0.98}, {"cos": 0.9998, "top1": 0.97})], "GPU").splitlines()[-1]
    assert "| 0.99990 (98.0%) | 0.99980 (97.0%) |" in line
    assert "below the target" not in line and "top-1 differs from fp32 on 2.0% of rows (PyTorch fp16: 3.0%)" in line
    # More flips than PyTorch FP16, or a cosine below 0.999 whatever PyTorch does: flagged.
    for acc, tacc in (({"cos": 0.9999, "top1": 0.96}, {"cos": 0.9999, "top1": 0.97}),
                      ({"cos": 0.998, "top1": 1.0}, {"cos": 0.997, "top1": 1.0})):
        assert "accuracy below the target" in gpu_bench.report([row(acc, tacc)], "GPU").splitlines()[-1]
