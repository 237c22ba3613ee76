#!/usr/bin/env python3
"""`make bench`: ResNet-50 batch 1 on the CPU, Kiln (through the kiln CLI) against PyTorch, measured in one run."""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402  (shares the model export and the output comparison)

TARGET_RATIO = 3.0
TORCH_THREADS = 2
SHAPE = f"{demo.INPUT_NAME}:1x3x224x224"


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit():
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def time_pytorch(model, x, runs, warmup):
    import torch
    # Debian's PyTorch starts with one thread on these machines (see PEERS.md): two is the fair figure.
    torch.set_num_threads(TORCH_THREADS)
    times_ms = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            start = time.perf_counter()
            out = model(x)
            times_ms.append((time.perf_counter() - start) * 1e3)
    return times_ms, out.numpy()


def run_cli(cmd):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"[E] kiln exited with {proc.returncode}: {' '.join(map(str, cmd))}")
    return proc.stdout


def parse_summary(stdout):
    """The CLI's trtexec-style performance summary as numbers (ms, qps, s)."""
    m = re.search(r"Latency: min = ([\d.]+) ms, max = ([\d.]+) ms, mean = ([\d.]+) ms, median = ([\d.]+) ms, "
                  r"percentile\(90%\) = ([\d.]+) ms", stdout)
    if not m:
        sys.exit("[E] no performance summary in the kiln output:\n" + stdout)
    keys = ["min", "max", "mean", "median", "p90"]
    summary = dict(zip(keys, map(float, m.groups())))
    summary["throughput_qps"] = float(re.search(r"Throughput: ([\d.]+) qps", stdout).group(1))
    build = re.search(r"Engine built in ([\d.]+) s", stdout)
    summary["build_s"] = float(build.group(1)) if build else None
    return summary


def describe(times_ms):
    s = sorted(times_ms)
    return {"min": s[0], "max": s[-1], "mean": statistics.fmean(s), "median": statistics.median(s),
            "p90": s[min(len(s) - 1, max(0, int(np.ceil(0.9 * len(s))) - 1))]}


def write_results(out_dir, record):
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"cpu-{record['date']}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    k, t = record["kiln"], record["pytorch"]
    lines = [
        f"# ResNet-50 on the CPU, batch 1, 224x224 ({record['date']})",
        "",
        f"Machine: {record['machine']['cpu']}, {record['machine']['cores']} usable cores, "
        f"load average {record['machine']['load_average_at_start']:.1f} at start. "
        f"PyTorch {record['pytorch']['version']} with {TORCH_THREADS} threads, inference mode. "
        f"Kiln {record['kiln']['version']} (commit {record['commit']}), CPU backend, kiln CLI timing "
        f"(host wall time of one synchronous execution).",
        "",
        "| engine | median ms | mean ms | min ms | p90 ms | runs |",
        "|---|---|---|---|---|---|",
        f"| PyTorch eager | {t['median']:.2f} | {t['mean']:.2f} | {t['min']:.2f} | {t['p90']:.2f} | {t['runs']} |",
        f"| Kiln | {k['median']:.2f} | {k['mean']:.2f} | {k['min']:.2f} | {k['p90']:.2f} | {k['runs']} |",
        "",
        f"Kiln / PyTorch (median): **{record['ratio']:.2f}** (target <= {TARGET_RATIO:g}: "
        f"{'met' if record['ratio'] <= TARGET_RATIO else 'missed'}).",
        f"Engine build time: {k['build_s']:.2f} s. Output check: max|kiln - torch| / max|torch| = "
        f"{record['max_rel_diff']:.2e}.",
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))
    return stem


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kiln-build", default="build")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per engine")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (PyTorch)")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--fail-above-target", action="store_true", help="exit 1 when the ratio misses the target")
    args = parser.parse_args()

    kiln = Path(args.kiln_build) / "bin" / "kiln"
    if not kiln.is_file():
        sys.exit(f"[E] {kiln} not found: run `make build` first")
    import torch
    onnx_path = ROOT / "models" / "resnet50.onnx"
    model = demo.ensure_resnet50_onnx(onnx_path)

    load = os.getloadavg()[0]
    if load > (len(os.sched_getaffinity(0))):
        # Both engines share the cores with whatever else runs; the ratio survives better than either figure.
        print(f"[W] load average {load:.1f} exceeds {len(os.sched_getaffinity(0))} usable cores: absolute times will be inflated")

    torch.manual_seed(1)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    print(f"PyTorch {torch.__version__}: {args.warmup} warm-up + {args.runs} timed runs, {TORCH_THREADS} threads",
          flush=True)
    torch_ms, ref = time_pytorch(model, x, args.runs, args.warmup)
    torch_stats = describe(torch_ms)

    print("Kiln: building and timing through the kiln CLI", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine, input_file, output_file = Path(tmp) / "r50.engine", Path(tmp) / "x.bin", Path(tmp) / "y.json"
        x.numpy().astype(np.float32).tofile(input_file)
        stdout = run_cli([kiln, f"--onnx={onnx_path}", f"--saveEngine={engine}", f"--shapes={SHAPE}",
                          f"--loadInputs={demo.INPUT_NAME}:{input_file}", f"--exportOutput={output_file}",
                          f"--iterations={args.runs}", "--duration=0", "--warmUp=1000"])
        kiln_out = demo.read_exported_output(output_file)
        version = run_cli([kiln, "--version"]).split()[-1]
    kiln_stats = parse_summary(stdout)
    kiln_stats["runs"] = int(re.search(r"Timed iterations: (\d+)", stdout).group(1))
    kiln_stats["version"] = version
    torch_stats.update(runs=args.runs, version=torch.__version__, threads=TORCH_THREADS)

    record = {
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "machine": {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "load_average_at_start": load},
        "model": "torchvision resnet50, random weights (seed 0), batch 1, 224x224, FP32",
        "pytorch": torch_stats,
        "kiln": kiln_stats,
        "ratio": kiln_stats["median"] / torch_stats["median"],
        "max_rel_diff": demo.compare(kiln_out, ref),
    }
    stem = write_results(Path(args.out_dir), record)

    print()
    print(f"{'engine':<16}{'median ms':>12}{'mean ms':>12}{'min ms':>12}{'p90 ms':>12}")
    for name, s in (("PyTorch eager", torch_stats), ("Kiln", kiln_stats)):
        print(f"{name:<16}{s['median']:>12.2f}{s['mean']:>12.2f}{s['min']:>12.2f}{s['p90']:>12.2f}")
    verdict = "met" if record["ratio"] <= TARGET_RATIO else "MISSED"
    print(f"Kiln / PyTorch (median): {record['ratio']:.2f}  (target <= {TARGET_RATIO:g}: {verdict})")
    print(f"Output check: max|kiln - torch| / max|torch| = {record['max_rel_diff']:.2e}")
    print(f"Results: {stem}.md, {stem}.json")
    if record["max_rel_diff"] > demo.TOLERANCE:
        sys.exit("[E] Kiln's output differs from PyTorch's beyond the tolerance")
    if args.fail_above_target and record["ratio"] > TARGET_RATIO:
        sys.exit(1)


if __name__ == "__main__":
    main()
