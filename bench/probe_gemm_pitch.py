#!/usr/bin/env python3
"""Probe (device, seconds): how much an odd output width costs cuBLASLt, for gpt2's lm_head.

gpt2's lm_head is [B*S, 768] x [768, 50257] in FP16 followed by the float32 output cast; it took 1.24 ms of a
2.8 ms batch-32 run (bench/NOTES.md, run 7), about a third of the tensor cores' rate. Storing the weight as
[N, K] did not help (run 7), so the suspect is the output's row pitch of 50257 halves, which is not a whole number
of 16-byte vectors. This builds the same product with N = 50257, padded to 50264 and cut to 50176 (a multiple of
256), in FP16 with the float32 output cast as in the model, and prints the GEMM's and the cast's times from the
per-layer profile: whether a padded output with the compaction fused into the cast is worth building. With
pad_gemm_width in the pipeline N = 50257 runs padded; KILN_DISABLE_PASSES=pad_gemm_width gives the unpadded GEMM.

Usage (device): python3 bench/probe_gemm_pitch.py --kiln-build .devcarry [--rows 4096]
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model(path, rows, k, n):
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((k, n)) * 0.02).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="lm_head")]
    g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])], initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln-build", default="build")
    ap.add_argument("--rows", type=int, default=4096)  # gpt2 at batch 32, sequence 128
    ap.add_argument("--k", type=int, default=768)
    args = ap.parse_args()
    kiln = os.path.join(args.kiln_build, "bin", "kiln")
    # With --fp16 the product runs in half and the float32 output keeps a cast layer after it, as in gpt2.
    print(f"{'N':>6} {'total ms':>9} {'GEMM ms':>8} {'TFLOPS':>7} {'cast ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (50257, 50264, 50176):
            path, prof = os.path.join(tmp, f"probe_{n}.onnx"), os.path.join(tmp, f"probe_{n}.json")
            model(path, args.rows, args.k, n)
            p = subprocess.run([kiln, f"--onnx={path}", f"--shapes=x:{args.rows}x{args.k}", "--device=cuda", "--fp16",
                                "--noDataTransfers", "--iterations=50", "--warmUp=100", "--duration=0",
                                "--separateProfileRun", f"--exportProfile={prof}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
            m = re.search(r"GPU Compute Time: .*?median = ([0-9.]+) ms", p.stdout)
            if not m or not os.path.exists(prof):
                print(f"{n:>6} failed: {p.stdout.splitlines()[-1:]}")
                continue
            rows = [r for r in json.load(open(prof)) if "name" in r]
            # pad_gemm_width names its compaction "lm_head_unpad": it counts as the cast it replaces.
            is_gemm = [r for r in rows if "lm_head" in r["name"] and "unpad" not in r["name"]]
            gemm = sum(r["medianMs"] for r in is_gemm)
            cast = sum(r["medianMs"] for r in rows if r not in is_gemm)
            print(f"{n:>6} {float(m.group(1)):9.3f} {gemm:8.3f} {2 * args.rows * args.k * n / gemm / 1e9:7.0f} "
                  f"{cast:8.3f}")
    torch_times(args.rows, args.k)


def torch_times(rows, k):
    """The same product in PyTorch FP16 (cuBLAS), B as [K, N] and as [N, K] (gpt2's tied weight), for context."""
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        return
    x = torch.randn(rows, k, device="cuda", dtype=torch.half)
    for n in (50257, 50264):
        w = torch.randn(k, n, device="cuda", dtype=torch.half) * 0.02
        wt = w.t().contiguous()
        for label, f in (("[K,N]", lambda: x @ w), ("[N,K]^T", lambda: x @ wt.t())):
            for _ in range(10):
                f()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(50):
                f()
            b.record()
            torch.cuda.synchronize()
            ms = a.elapsed_time(b) / 50
            print(f"torch {label:8} N={n}: {ms:.3f} ms, {2 * rows * k * n / ms / 1e9:.0f} TFLOPS")


if __name__ == "__main__":
    main()
