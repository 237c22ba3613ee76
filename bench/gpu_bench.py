#!/usr/bin/env python3
"""GPU benchmark (issue 4's first table): each model of the foundation issue in FP32 and FP16, at batch 1 and
a large batch, Kiln's CUDA backend against PyTorch eager, measured in the same run on the same GPU.

Kiln: `kiln --device=cuda` per (model, precision, batch) with a static profile, --noDataTransfers; the figure is
the median GPU compute time from CUDA events around each enqueue (also with --useCudaGraph). PyTorch: eager,
inference_mode, cuDNN benchmark on, TF32 allowed for FP32, FP16 by model.half(); median of CUDA-event times over
the same number of runs after warm-up. Writes <out-dir>/<gpu>-<date>.md and .json."""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
import export_models  # noqa: E402

LARGE = {"resnet50": 128, "mobilenet_v2": 128, "efficientnet_b0": 128, "vit_b_16": 64, "bert_base": 64,
         "gpt2_base": 32}
RUNS, WARM = 50, 10


def torch_time(model, x, runs=RUNS, warm=WARM):
    with torch.inference_mode():
        for _ in range(warm):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            model(x)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    return float(np.median(times))


def kiln_time(kiln, onnx_path, name, shape, fp16, graph):
    d = "x".join(map(str, shape))
    cmd = [kiln, f"--onnx={onnx_path}", f"--minShapes={name}:{d}", f"--optShapes={name}:{d}", f"--maxShapes={name}:{d}",
           "--device=cuda", "--noDataTransfers", f"--iterations={RUNS}", "--warmUp=200", "--duration=0"]
    if fp16:
        cmd.append("--fp16")
    if graph:
        cmd.append("--useCudaGraph")
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if p.returncode != 0:
        err = [l for l in p.stdout.splitlines() if "[E]" in l][:1] or p.stdout.splitlines()[-1:]
        return None, None, err[0][:160] if err else "failed"
    m = re.search(r"GPU Compute Time: .*?median = ([0-9.]+) ms", p.stdout)
    b = re.search(r"Engine built in ([0-9.]+) s", p.stdout)
    host = re.search(r"(\d+) of (\d+) layers have no GPU kernel", p.stdout)
    note = f"{host.group(1)}/{host.group(2)} layers on host" if host else ""
    return (float(m.group(1)) if m else None), (float(b.group(1)) if b else time.time() - t0), note


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kiln-build", default="build")
    ap.add_argument("--models", nargs="*", default=export_models.FULL_MODELS)
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("SKIP: no CUDA GPU")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    kiln = os.path.join(args.kiln_build, "bin", "kiln")
    gpu = torch.cuda.get_device_name(0)
    rows = []
    for name in args.models:
        if not export_models.is_exported(args.models_dir, name, args.opset):
            export_models.export_one(name, args.opset, args.models_dir)
        mdir = export_models.model_dir(args.models_dir, name, args.opset)
        meta = json.load(open(os.path.join(mdir, "meta.json")))
        iname, shape = meta["inputs"][0]["name"], meta["inputs"][0]["shape"]
        ctor, make_input, _ = export_models.ZOO[name]
        torch.manual_seed(export_models.SEED)
        model = export_models.make_informative(ctor(), make_input).cuda().eval()
        for fp16 in (False, True):
            m = model.half() if fp16 else model.float()
            for batch in (1, LARGE[name]):
                x = make_input(batch).cuda()
                if fp16 and x.is_floating_point():
                    x = x.half()
                t_torch = torch_time(m, x)
                bshape = [batch] + list(shape[1:])
                t_k, build_s, note = kiln_time(kiln, os.path.join(mdir, "model.onnx"), iname, bshape, fp16, False)
                t_kg, _, _ = kiln_time(kiln, os.path.join(mdir, "model.onnx"), iname, bshape, fp16, True)
                r = {"model": name, "precision": "fp16" if fp16 else "fp32", "batch": batch, "torch_eager_ms": t_torch,
                     "kiln_ms": t_k, "kiln_graph_ms": t_kg, "build_s": build_s, "note": note}
                best = min(v for v in (t_k, t_kg) if v) if (t_k or t_kg) else None
                r["speedup_vs_eager"] = t_torch / best if best else None
                rows.append(r)
                print(json.dumps(r), flush=True)
        del model
        torch.cuda.empty_cache()

    def f(v, fmt=".3f"):
        return "—" if v is None else format(v, fmt)
    lines = [f"# GPU benchmark: {gpu}, {datetime.date.today()}", "",
             f"torch {torch.__version__}; medians of {RUNS} runs (CUDA events) after warm-up; Kiln GPU compute time "
             "without host transfers. speedup = PyTorch eager / best Kiln (plain or CUDA graph).", "",
             "| model | precision | batch | PyTorch eager ms | Kiln ms | Kiln + CUDA graph ms | speedup | build s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {f(r['torch_eager_ms'])} | {f(r['kiln_ms'])} | "
                     f"{f(r['kiln_graph_ms'])} | {f(r['speedup_vs_eager'], '.2f')}x | {f(r['build_s'], '.1f')} | {r['note']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f"{re.sub('[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}-{datetime.date.today()}")
    open(stem + ".md", "w").write(text)
    json.dump({"gpu": gpu, "torch": torch.__version__, "rows": rows}, open(stem + ".json", "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
