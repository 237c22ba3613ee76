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


def test_top1_flips_tells_near_ties_from_wrong_classes():
    ref = torch.zeros(50, 4)
    ref[:, 0] = 1.0
    out = ref.clone()
    out[:, 1:] += 0.001  # a small error everywhere: rms ~0.00087
    out[0] = torch.tensor([1.0, 1.0015, 0.0, 0.0])  # row 0 flips over a gap of 1.0: a wrong computation
    f = gpu_bench.top1_flips(out, ref)
    rms = float((out.double() - ref.double()).pow(2).mean().sqrt())
    assert f == {"rows": 1, "near_ties": 0, "max_gap_rms": pytest.approx(1.0 / rms)}
    # The same error with row 1 a near tie in float32 (gap 0.002, ~2 rms): reordered by the small error.
    ref[1, 2] = 0.998
    out[1] = torch.tensor([1.0, 0.0, 1.0005, 0.0])
    rms = float((out.double() - ref.double()).pow(2).mean().sqrt())
    f = gpu_bench.top1_flips(out, ref)
    assert (f["rows"], f["near_ties"]) == (2, 1) and f["max_gap_rms"] == pytest.approx(1.0 / rms)
    assert 0.002 / rms <= gpu_bench.NEAR_TIE_RMS
    assert gpu_bench.top1_flips(ref, ref) == {"rows": 0, "near_ties": 0}


def test_report_says_whether_flips_are_near_ties():
    flips, tflips = {"rows": 2, "near_ties": 2, "max_gap_rms": 0.6}, {"rows": 1, "near_ties": 1, "max_gap_rms": 0.3}
    line = gpu_bench.report([row({"cos": 0.9999, "top1": 0.98, "flips": flips},
                                 {"cos": 0.9999, "top1": 0.99, "flips": tflips})], "GPU").splitlines()[-1]
    assert "accuracy below the target" in line  # more flips than PyTorch: still flagged
    assert "flipped rows that are near ties: 2 of 2 (largest fp32 gap 0.6x the output's rms error), " \
           "PyTorch fp16 1 of 1" in line
