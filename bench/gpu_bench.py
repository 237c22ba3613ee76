#!/usr/bin/env python3
"""GPU benchmark harness (issues 4 and 5): each model at batch 1 and a large batch, Kiln's CUDA backend against
PyTorch eager, eager + CUDA graph, torch.compile (default and reduce-overhead) and ONNX Runtime, all measured in
the same run on the same GPU.

Kiln: `kiln --device=cuda` per (model, precision, batch) with a static profile and --noDataTransfers; the figure
is the median GPU compute time of the timed enqueues (CUDA events), with and without --useCudaGraph, best of the
two. FP16 engines take and give float16 as the FP16 peers do (float inputs and the output built with
--inputIOFormats/--outputIOFormats=fp16:chw; token ids stay int64); --kiln-io=fp32 keeps the model's float32
bindings, as runs 1-21 measured. PyTorch: inference_mode, cuDNN benchmark on, TF32 allowed, FP16 by model.half(), CNNs in channels_last (as
../shared/PEERS.md measured them); median of CUDA-event times after warm-up. ONNX Runtime: whatever execution
providers the installed package has (the device's package is CPU-only: then batch 1 only, and labelled so).
Also reported: Kiln's engine build time, engine size and device memory (weights + activation arena), and its
accuracy: the built engine run once (Kiln's Python module, from <kiln-build>/python) on the timed input, against
the model in float32 on the same input: cosine similarity of the whole output and, for classifiers and the
language model, the share of rows whose top-1 class agrees (issue 5: cosine >= 0.999, same top-1); a row
below that says so in its note, so that a fast but wrong tactic cannot pass as a speed-up. PyTorch's eager FP16
output on the same input is compared the same way (its own column): where Kiln's top-1 differs on no more rows than
PyTorch FP16's does, the note says so instead (near ties that FP16 rounding reorders). Where any row flips, the note
also counts the flips that were near ties in float32 (the reference's gap between the two classes within 4 rms
errors of the whole output; top1_flips), for Kiln and for PyTorch FP16.
Writes <out-dir>/<gpu>-<date>.md and .json."""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
import export_models  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tactics  # noqa: E402

LARGE = {"resnet50": 128, "mobilenet_v2": 128, "efficientnet_b0": 128, "vit_b_16": 64, "bert_base": 64,
         "gpt2_base": 32, "unet_stage": 16}
CNNS = {"resnet50", "mobilenet_v2", "efficientnet_b0", "unet_stage"}
# A top-1 flip whose float32 gap is at most this many rms errors of the output is a near tie (top1_flips).
NEAR_TIE_RMS = 4.0
# Models whose output's last axis is a class (or next-token) score: the top-1 agreement is reported for them.
TOP1 = {"resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "gpt2_base"}
COS_TARGET = 0.999
RUNS, WARM = 50, 10
PEERS = ["eager", "eager_graph", "compile", "compile_ro", "ort"]
PEER_LABEL = {"eager": "eager", "eager_graph": "eager + CUDA graph", "compile": "torch.compile",
              "compile_ro": "torch.compile reduce-overhead", "ort": "ONNX Runtime"}


def cuda_time(fn, runs=RUNS, warm=WARM):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def torch_peer(kind, model, x):
    """Median ms per batch for one PyTorch mode, plus its one-time preparation seconds (compile, capture)."""
    with torch.inference_mode():
        t0 = time.time()
        if kind == "eager":
            return cuda_time(lambda: model(x)), 0.0
        if kind == "eager_graph":
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                model(x)
            return cuda_time(g.replay), time.time() - t0
        torch._dynamo.reset()
        mode = "reduce-overhead" if kind == "compile_ro" else None
        cm = torch.compile(model, mode=mode, dynamic=False)
        for _ in range(3):
            cm(x)
        torch.cuda.synchronize()
        prep = time.time() - t0
        return cuda_time(lambda: cm(x)), prep


def ort_peer(onnx_path, feed_name, x_np, batch):
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime not installed"
    prov = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    on_gpu = prov[0] == "CUDAExecutionProvider"
    if not on_gpu and batch > 1:
        return None, "CPU EP only: batch 1 only"
    so = ort.SessionOptions()
    sess = ort.InferenceSession(onnx_path, so, providers=prov)
    feed = {feed_name: x_np}
    runs = RUNS if on_gpu else 10
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), ("CUDA EP, host I/O included" if on_gpu else "CPU EP (no CUDA EP on this machine)")


def kiln_run(kiln, onnx_path, name, shape, fp16, graph, engine_path=None, load=None, cache=None, build_only=False,
             io_formats=()):
    d = "x".join(map(str, shape))
    if load:  # the engine the plain run built: the CUDA-graph run times the same engine without a second build
        cmd = [kiln, f"--loadEngine={load}", f"--shapes={name}:{d}"]
    else:
        cmd = [kiln, f"--onnx={onnx_path}", f"--minShapes={name}:{d}", f"--optShapes={name}:{d}",
               f"--maxShapes={name}:{d}"]
        if fp16:
            cmd.append("--fp16")
        cmd += list(io_formats)
        if engine_path:
            # The built engine's layers with their recorded tactics (which implementation each layer runs).
            cmd += [f"--saveEngine={engine_path}", f"--exportLayerInfo={engine_path}.layers.json",
                    "--profilingVerbosity=detailed"]
        if cache:
            cmd.append(f"--timingCacheFile={cache}")
        if build_only:
            cmd.append("--skipInference")
    cmd += ["--device=cuda", "--noDataTransfers", f"--iterations={RUNS}", "--warmUp=200", "--duration=0"]
    if graph:
        cmd.append("--useCudaGraph")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    r = {"ok": p.returncode == 0}
    if p.returncode != 0:
        err = [l for l in p.stdout.splitlines() if "[E]" in l][:1] or p.stdout.splitlines()[-1:]
        r["error"] = err[0][:200] if err else "failed"
        return r
    num = lambda pat: (lambda m: float(m.group(1)) if m else None)(re.search(pat, p.stdout))
    r["ms"] = num(r"GPU Compute Time: .*?median = ([0-9.]+) ms")
    r["build_s"] = num(r"Engine built in ([0-9.]+) s")
    # Loading the file, then the first inference after it (context setup; each layer prepares then: cuDNN plans
    # are compiled or restored there).
    r["load_s"] = num(r"Engine loaded in ([0-9.]+) s")
    r["first_ms"] = num(r"First inference: ([0-9.]+) ms")
    r["engine_bytes"] = num(r"engine size: (\d+) bytes")
    w, a = num(r"Device memory: weights ([0-9.]+) MiB"), num(r"activation arena ([0-9.]+) MiB")
    r["device_mib"] = (w or 0) + (a or 0) if w is not None else None
    host = re.search(r"(\d+) of (\d+) layers have no GPU kernel", p.stdout)
    r["note"] = f"{host.group(1)}/{host.group(2)} layers on host" if host else ""
    layers = re.search(r"network layers: (\d+)", p.stdout)
    r["layers"] = int(layers.group(1)) if layers else None
    if engine_path and os.path.exists(engine_path + ".layers.json"):
        r["tactics"] = tactics.tactic_families(open(engine_path + ".layers.json").read())
        os.remove(engine_path + ".layers.json")
    return r


def accuracy(out, ref, top1):
    """Cosine similarity of out to ref (whole tensors, float64) and, with top1, the share of rows (all axes but the
    last) whose largest entry is at the same index."""
    o, r = out.double().flatten(), ref.double().flatten()
    cos = float(torch.dot(o, r) / (o.norm() * r.norm()).clamp_min(1e-300))
    agree = float((out.argmax(-1) == ref.argmax(-1)).double().mean()) if top1 else None
    return cos, agree


def top1_flips(out, ref):
    """The rows (all axes but the last) whose largest entry is not at the reference's index, and how many of them
    are near ties. A flip needs the two entries' errors to differ by more than the reference's gap between them, so
    the gap is measured against the output's typical error, not the flipped row's own (which always covers it): the
    root mean square of out - ref over the whole tensor. A near tie's gap is at most NEAR_TIE_RMS of those (two
    independent errors of that size differ by more than ~4 of them rarely); a flip over a larger gap is the sign of a
    wrong computation in that row."""
    o = out.double().reshape(-1, out.shape[-1])
    r = ref.double().reshape(-1, ref.shape[-1])
    oi, ri = o.argmax(-1), r.argmax(-1)
    bad = (oi != ri).nonzero().flatten()
    if bad.numel() == 0:
        return {"rows": 0, "near_ties": 0}
    rms = float((o - r).pow(2).mean().sqrt().clamp_min(1e-300))
    gap = (r[bad, ri[bad]] - r[bad, oi[bad]]) / rms
    return {"rows": int(bad.numel()), "near_ties": int((gap <= NEAR_TIE_RMS).sum()), "max_gap_rms": float(gap.max())}


def first_output(y):
    """A module's output tensor (the first of a tuple or a dict-like output)."""
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)):
        return first_output(y[0])
    if hasattr(y, "values"):
        return first_output(next(iter(y.values())))
    raise TypeError(f"unexpected model output {type(y).__name__}")


def kiln_accuracy(trt, engine_path, name, x, ref, top1, missing=None):
    """Runs the engine file once on x (a CUDA tensor, in the binding's type) and compares its first output with ref
    (the float32 model's output); {"skipped": why} where the Python module is missing (`missing` says why) or the
    build wrote no engine, {"error": ...} where the run fails."""
    if trt is None:
        return {"skipped": f"Kiln's Python module does not import ({missing})" if missing else
                "Kiln's Python module does not import"}
    if not os.path.exists(engine_path):
        return {"skipped": "the build wrote no engine"}
    try:
        engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(open(engine_path, "rb").read())
        out = engine.infer({name: x})
        y = out[engine.output_names[0]] if isinstance(out, dict) else out[0]
        y = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y)).cuda()
        cos, agree = accuracy(y.reshape(ref.shape), ref, top1)
        flips = top1_flips(y.reshape(ref.shape), ref) if top1 else None
        del engine, out, y
        torch.cuda.synchronize()
        return {"cos": cos, "top1": agree, "flips": flips}
    except Exception as e:  # reported in the row, not fatal
        return {"error": f"{type(e).__name__}: {str(e)[:160]}"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kiln-build", default="build")
    ap.add_argument("--models", nargs="*", default=export_models.FULL_MODELS)
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--peers", nargs="*", default=PEERS, help=f"subset of {PEERS}")
    ap.add_argument("--batches", default="both", choices=["1", "large", "both"])
    ap.add_argument("--fp32", action="store_true", help="also Kiln FP32 against eager FP32 (issue 4's table)")
    ap.add_argument("--kiln-io", choices=["fp16", "fp32"], default="fp16",
                    help="the FP16 engines' float bindings: fp16 (default; what the FP16 peers take and give: "
                         "--inputIOFormats/--outputIOFormats=fp16:chw on float inputs and the output) or fp32 (the "
                         "ONNX model's own, as runs 1-21 measured)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("SKIP: no CUDA GPU")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    kiln = os.path.join(args.kiln_build, "bin", "kiln")
    sys.path.insert(0, os.path.join(args.kiln_build, "python"))
    try:
        import kiln as trt  # the accuracy check runs each built engine once through the Python module
    except ImportError as e:
        print(f"note: Kiln's Python module does not import ({e}): no accuracy figures")
        trt, missing = None, str(e)[:120]
    else:
        missing = None
    gpu = torch.cuda.get_device_name(0)
    tmp = tempfile.mkdtemp(prefix="kiln_bench_")
    rows = []
    for name in args.models:
        if not export_models.is_exported(args.models_dir, name, args.opset):
            export_models.export_one(name, args.opset, args.models_dir)
        mdir = export_models.model_dir(args.models_dir, name, args.opset)
        onnx_path = os.path.join(mdir, "model.onnx")
        meta = json.load(open(os.path.join(mdir, "meta.json")))
        iname, shape = meta["inputs"][0]["name"], meta["inputs"][0]["shape"]
        ctor, make_input, _ = export_models.ZOO[name]
        torch.manual_seed(export_models.SEED)
        base = export_models.make_informative(ctor(), make_input).cuda().eval()
        batches = {"1": [1], "large": [LARGE[name]], "both": [1, LARGE[name]]}[args.batches]
        # One input per batch for every runner, and the float32 model's output on it (the accuracy reference).
        inputs, refs = {}, {}
        for batch in batches:
            torch.manual_seed(export_models.SEED + batch)
            inputs[batch] = make_input(batch)
            with torch.inference_mode():
                xr = inputs[batch].cuda()
                refs[batch] = first_output(base.float()(xr.float() if xr.is_floating_point() else xr)).float()
        for fp16 in ([False, True] if args.fp32 else [True]):
            model = base.half() if fp16 else base.float()
            if name in CNNS:
                model = model.to(memory_format=torch.channels_last)
            for batch in batches:
                x = inputs[batch].cuda()
                if x.is_floating_point():
                    x = x.half() if fp16 else x
                    if name in CNNS:
                        x = x.contiguous(memory_format=torch.channels_last)
                r = {"model": name, "precision": "fp16" if fp16 else "fp32", "batch": batch, "peers": {}, "prep_s": {}}
                for peer in args.peers if fp16 else ["eager"]:
                    try:
                        if peer == "ort":
                            xn = inputs[batch].numpy()
                            ms, note = ort_peer(onnx_path, iname, xn, batch)
                            r["ort_note"] = note
                        else:
                            ms, prep = torch_peer(peer, model, x)
                            r["prep_s"][peer] = round(prep, 1)
                    except Exception as e:  # a peer that fails is reported, not fatal
                        ms = None
                        r.setdefault("peer_errors", {})[peer] = f"{type(e).__name__}: {str(e)[:160]}"
                    r["peers"][peer] = ms
                torch._dynamo.reset()
                if fp16:
                    # PyTorch's own FP16 output on the same input against the same float32 reference: what FP16
                    # rounding alone does to the top-1 of near ties, next to Kiln's figure.
                    with torch.inference_mode():
                        y16 = first_output(model(x)).float().reshape(refs[batch].shape)
                        cos, agree = accuracy(y16, refs[batch], name in TOP1)
                        flips = top1_flips(y16, refs[batch]) if name in TOP1 else None
                    r["torch_accuracy"] = {"cos": cos, "top1": agree, "flips": flips}
                bshape = [batch] + list(shape[1:])
                eng = os.path.join(tmp, f"{name}_{batch}.engine")
                cache = os.path.join(tmp, f"{name}_{batch}.timing.json")
                io = []
                if fp16 and args.kiln_io == "fp16":
                    io.append("--outputIOFormats=fp16:chw")
                    if meta["inputs"][0].get("dtype", "float32") == "float32":
                        io.append("--inputIOFormats=fp16:chw")
                    r["kiln_io"] = "fp16"
                plain = kiln_run(kiln, onnx_path, iname, bshape, fp16, False, eng, cache=cache, io_formats=io)
                # The engine's input binding: float16 where the FP16 build has float16 bindings, else float32 (token
                # ids keep their integer type).
                xk = inputs[batch].cuda()
                if xk.is_floating_point():
                    xk = xk.half() if "--inputIOFormats=fp16:chw" in io else xk.float()
                r["accuracy"] = kiln_accuracy(trt, eng, iname, xk.contiguous(), refs[batch], name in TOP1, missing)
                graphed = kiln_run(kiln, onnx_path, iname, bshape, fp16, True,
                                   load=eng if plain.get("ok") and os.path.exists(eng) else None)
                # The same build again with the timing cache the first one wrote: the warm-cache build time.
                warm = kiln_run(kiln, onnx_path, iname, bshape, fp16, False, cache=cache, build_only=True,
                                io_formats=io)
                plain["build_warm_s"] = warm.get("build_s")
                plain["load_s"], plain["first_ms"] = graphed.get("load_s"), graphed.get("first_ms")
                r["kiln"], r["kiln_graph"] = plain, graphed
                times = [v["ms"] for v in (plain, graphed) if v.get("ms")]
                r["kiln_ms"] = min(times) if times else None
                torch_times = {k: v for k, v in r["peers"].items() if v and k != "ort"}
                if torch_times:
                    best = min(torch_times, key=torch_times.get)
                    r["best_torch"], r["best_torch_ms"] = best, torch_times[best]
                    r["ratio_vs_best_torch"] = torch_times[best] / r["kiln_ms"] if r["kiln_ms"] else None
                eager = r["peers"].get("eager")
                r["speedup_vs_eager"] = eager / r["kiln_ms"] if eager and r["kiln_ms"] else None
                rows.append(r)
                print(json.dumps(r), flush=True)
                if os.path.exists(eng):
                    os.remove(eng)
        del base, refs
        torch.cuda.empty_cache()

    text = report(rows, gpu)
    print(text)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f"{re.sub('[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}-{datetime.date.today()}")
    open(stem + ".md", "w").write(text)
    json.dump({"gpu": gpu, "torch": torch.__version__, "rows": rows}, open(stem + ".json", "w"), indent=1)
    return 0


def acc_text(acc):
    """An accuracy cell: cosine, and the top-1 agreement in percent where the model has one."""
    return f"{acc['cos']:.5f}" + (f" ({100 * acc['top1']:.1f}%)" if acc.get("top1") is not None else "")


def report(rows, gpu):
    def f(v, fmt=".3f"):
        return "—" if v is None else format(v, fmt)
    lines = [f"# GPU benchmark: {gpu}, {datetime.date.today()}", "",
             f"torch {torch.__version__}; medians of {RUNS} runs (CUDA events) after warm-up. Kiln: GPU compute time "
             "without host transfers, best of plain and CUDA-graph enqueue. Large batch: throughput in items/s; "
             "batch 1: latency in ms. Ratio = best PyTorch mode / Kiln (> 1: Kiln is faster). Targets (issue 5): "
             "throughput ratio >= 1.3 at the large batch, latency ratio >= 1.25 (Kiln <= 0.8x) at batch 1.", ""]
    head = "| model | prec | batch | Kiln | " + " | ".join(PEER_LABEL[p] for p in PEERS) + \
        " | best PyTorch | ratio | cos vs fp32 (top-1) | PyTorch fp16: cos (top-1) | build s (warm cache) | " \
        "load s + 1st run ms | engine MiB | device MiB | note |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        b = r["batch"]
        conv = (lambda ms: f(b * 1e3 / ms, ".0f") if ms else "—") if b > 1 else (lambda ms: f(ms))
        peers = " | ".join(conv(r["peers"].get(p)) for p in PEERS)
        k = r["kiln"]
        eng = f(k["engine_bytes"] / 2**20, ".1f") if k.get("engine_bytes") else "—"
        note = "; ".join(n for n in (k.get("note") or k.get("error", ""), tactics.cudnn_note(k.get("tactics", {}))) if n)
        if r.get("ort_note"):
            note = (note + "; " if note else "") + "ORT: " + r["ort_note"]
        if r.get("kiln_io"):
            note = (note + "; " if note else "") + f"Kiln {r['kiln_io']} bindings"
        acc, tacc = r.get("accuracy", {}), r.get("torch_accuracy", {})
        torch_cell = acc_text(tacc) if tacc.get("cos") is not None else "—"
        if acc.get("cos") is not None:
            acc_cell = acc_text(acc)
            top1, torch_top1 = acc.get("top1"), tacc.get("top1")
            if acc["cos"] < COS_TARGET or (top1 is not None and top1 < 1.0 and
                                           (torch_top1 is None or top1 < torch_top1)):
                note = (note + "; " if note else "") + "**accuracy below the target (cos >= 0.999, same top-1)**"
            elif top1 is not None and top1 < 1.0:
                # Kiln's top-1 differs from float32 on no more rows than PyTorch's FP16 run does: near ties that
                # FP16 rounding reorders. Said, not flagged as Kiln's error; the issue's "same top-1" is still unmet.
                note = (note + "; " if note else "") + f"top-1 differs from fp32 on {100 * (1 - top1):.1f}% of " \
                    f"rows (PyTorch fp16: {100 * (1 - torch_top1):.1f}%)"
            if acc.get("flips") and acc["flips"]["rows"]:
                # Whether the flipped rows were near ties in float32 (top1_flips), for both runs where known.
                fl, tfl = acc["flips"], tacc.get("flips") or {}
                note = (note + "; " if note else "") + f"flipped rows that are near ties: {fl['near_ties']} of " \
                    f"{fl['rows']} (largest fp32 gap {fl['max_gap_rms']:.1f}x the output's rms error)" + \
                    (f", PyTorch fp16 {tfl['near_ties']} of {tfl['rows']}" if "rows" in tfl else "")
        else:
            acc_cell = "—"
            if acc.get("error"):
                note = (note + "; " if note else "") + "accuracy run failed: " + acc["error"]
            elif acc.get("skipped"):
                note = (note + "; " if note else "") + "no accuracy figure: " + acc["skipped"]
        lines.append(f"| {r['model']} | {r['precision']} | {b} | {conv(r['kiln_ms'])} | {peers} | "
                     f"{PEER_LABEL.get(r.get('best_torch'), '—')} | {f(r.get('ratio_vs_best_torch'), '.2f')}x | "
                     f"{acc_cell} | {torch_cell} | "
                     f"{f(k.get('build_s'), '.1f')} ({f(k.get('build_warm_s'), '.1f')}) | {f(k.get('load_s'), '.2f')} + {f(k.get('first_ms'), '.0f')} | "
                     f"{eng} | {f(k.get('device_mib'), '.0f')} | {note} |")
    prep = {}
    for r in rows:
        for p, s in r["prep_s"].items():
            if p.startswith("compile"):
                prep.setdefault(p, []).append(s)
    if prep:
        lines += ["", "torch.compile preparation (compile + first runs) per shape: " +
                  "; ".join(f"{PEER_LABEL[p]} {min(v):.0f}–{max(v):.0f} s" for p, v in prep.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
