#!/usr/bin/env python3
"""Real models on the CUDA backend (issue 4's acceptance): for each full-size model,
FP32 (--noTF32) within 1e-3 relative of the CPU backend (TF32, the default, is reported beside it); FP16 and BF16
with cosine similarity >= 0.999 to FP32; and, for the classifiers, the same top-1 class in FP16/BF16 as in FP32 on
64 random inputs, with PyTorch's own FP16/BF16-vs-FP32 agreement on the same inputs as the peer figure.
Needs a GPU; exits 0 with a SKIP line where none is usable. Writes a JSON report with --out."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
from test_models import dims, load_export  # noqa: E402

CLASSIFIERS = {"resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16"}
FP32_REL = 1e-3
COS_MIN = 0.999
TOP1_BATCH = 64


def has_gpu():
    """Whether an NVIDIA GPU is visible (the driver's device node or version file)."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


def kiln_run(kiln, model, name, shape, input_file, out_json, device, extra, max_batch, more_inputs=()):
    """One kiln run; more_inputs: further (name, shape, file) inputs, each with the same batch profile."""
    ins = [(name, shape, input_file)] + list(more_inputs)
    spec = lambda f: ",".join(f"{n}:{f(s, fl)}" for n, s, fl in ins)  # noqa: E731
    cmd = [kiln, f"--onnx={model}", f"--minShapes={spec(lambda s, _: dims([1] + list(s[1:])))}",
           f"--optShapes={spec(lambda s, _: dims(s))}",
           f"--maxShapes={spec(lambda s, _: dims([max_batch] + list(s[1:])))}",
           f"--shapes={spec(lambda s, _: dims(s))}", f"--loadInputs={spec(lambda _, fl: fl)}",
           f"--exportOutput={out_json}", "--iterations=1", "--warmUp=0", "--duration=0", f"--device={device}"] + extra
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if p.returncode != 0:
        lines = [l for l in p.stdout.splitlines() if "[E]" in l or "rror" in l][:3] or p.stdout.splitlines()[-3:]
        raise RuntimeError(f"kiln {device} {' '.join(extra)} exited {p.returncode}: " + " | ".join(lines))
    warn = [l for l in p.stdout.splitlines() if "run on the host" in l]
    return load_export(out_json)["output"].astype(np.float64), time.time() - t0, warn


def torch_top1(name, x):
    """PyTorch's own agreement of FP16 and BF16 with FP32 on these inputs (same model and seed as the export): the
    top-1 matches of each, then the cosine similarity of each's logits to FP32's over the whole batch."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None, None, None, None
        ctor, make_input, _ = export_models.ZOO[name]
        torch.manual_seed(export_models.SEED)
        m = export_models.make_informative(ctor(), make_input).cuda().eval()
        xt = torch.from_numpy(x).cuda()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with torch.inference_mode():
            ref = m(xt).double()
            low = [m.to(dt)(xt.to(dt)).double() for dt in (torch.float16, torch.bfloat16)]
        top = [int((y.argmax(1) == ref.argmax(1)).sum()) for y in low]
        cos = [cosine(y.cpu().numpy(), ref.cpu().numpy()) for y in low]
        return top[0], top[1], cos[0], cos[1]
    except Exception as e:  # the peer figure is context, not the check
        print(f"  (torch top-1 baseline unavailable: {e})")
        return None, None, None, None


def cosine(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kiln-build", default="build")
    ap.add_argument("--models", nargs="*", default=export_models.FULL_MODELS)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--work", default="build/gpu_models")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    kiln = os.path.join(args.kiln_build, "bin", "kiln")
    if not has_gpu():
        print("SKIP: no GPU on this machine; the GPU model checks run in tools/device/gpu_check.sh")
        return 0
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for name in args.models:
        row = {"model": name, "ok": False, "msg": ""}
        rows.append(row)
        try:
            if not export_models.is_exported(args.models_dir, name, args.opset):
                export_models.export_one(name, args.opset, args.models_dir)
            mdir = export_models.model_dir(args.models_dir, name, args.opset)
            meta = json.load(open(os.path.join(mdir, "meta.json")))
            inp = meta["inputs"][0]
            model, iname, shape = os.path.join(mdir, "model.onnx"), inp["name"], inp["shape"]
            ifile = os.path.join(mdir, inp["file"])
            o = lambda tag: os.path.join(args.work, f"{name}_{tag}.json")  # noqa: E731
            cpu, _, _ = kiln_run(kiln, model, iname, shape, ifile, o("cpu"), "cpu", [], 4)
            f32, t32, warn = kiln_run(kiln, model, iname, shape, ifile, o("fp32"), "cuda", ["--noTF32"], 4)
            row["host_layers"] = warn[0] if warn else ""
            row["fp32_rel"] = float(np.max(np.abs(f32 - cpu)) / np.max(np.abs(cpu)))
            tf32, _, _ = kiln_run(kiln, model, iname, shape, ifile, o("tf32"), "cuda", [], 4)
            row["tf32_rel"] = float(np.max(np.abs(tf32 - cpu)) / np.max(np.abs(cpu)))
            row["tf32_cos"] = cosine(tf32, cpu)
            f16, _, _ = kiln_run(kiln, model, iname, shape, ifile, o("fp16"), "cuda", ["--fp16"], 4)
            b16, _, _ = kiln_run(kiln, model, iname, shape, ifile, o("bf16"), "cuda", ["--bf16"], 4)
            row["fp16_cos"], row["bf16_cos"] = cosine(f16, f32), cosine(b16, f32)
            ok = row["fp32_rel"] <= FP32_REL and row["fp16_cos"] >= COS_MIN and row["bf16_cos"] >= COS_MIN
            if name in CLASSIFIERS:
                rng = np.random.default_rng(7)
                x = rng.standard_normal((TOP1_BATCH, *shape[1:])).astype(np.float32)
                big = os.path.join(args.work, f"{name}_top1_input.bin")
                x.tofile(big)
                bshape = [TOP1_BATCH] + list(shape[1:])
                r32, _, _ = kiln_run(kiln, model, iname, bshape, big, o("t32"), "cuda", ["--noTF32"], TOP1_BATCH)
                r16, _, _ = kiln_run(kiln, model, iname, bshape, big, o("t16"), "cuda", ["--fp16"], TOP1_BATCH)
                rb16, _, _ = kiln_run(kiln, model, iname, bshape, big, o("tb16"), "cuda", ["--bf16"], TOP1_BATCH)
                top = r32.reshape(TOP1_BATCH, -1).argmax(1)
                row["fp16_top1"] = int((r16.reshape(TOP1_BATCH, -1).argmax(1) == top).sum())
                row["bf16_top1"] = int((rb16.reshape(TOP1_BATCH, -1).argmax(1) == top).sum())
                ok = ok and row["fp16_top1"] == TOP1_BATCH and row["bf16_top1"] == TOP1_BATCH
                # Cosine over the 64 random inputs too, Kiln's and PyTorch's own: how much of the distance
                # from FP32 is the 16-bit format's rather than Kiln's.
                row["fp16_cos64"], row["bf16_cos64"] = cosine(r16, r32), cosine(rb16, r32)
                (row["torch_fp16_top1"], row["torch_bf16_top1"], row["torch_fp16_cos64"],
                 row["torch_bf16_cos64"]) = torch_top1(name, x)
            row["ok"] = ok
        except Exception as e:  # one model's failure is reported, the others still run
            row["msg"] = f"{type(e).__name__}: {e}"
        figures = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                           if k not in ("model", "ok", "msg", "host_layers") and v is not None)
        print(f"  {'PASS' if row['ok'] else 'FAIL'} {name} {row.get('msg', '')} {row.get('host_layers', '')}\n"
              f"    {figures}", flush=True)

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)
    print(f"\n{'model':<16} {'fp32 rel':>9} {'tf32 rel':>9} {'tf32 cos':>9} {'fp16 cos':>9} {'bf16 cos':>9} "
          f"{'fp16 top1':>9} {'bf16 top1':>9} {'torch16':>7} {'torchbf':>7} "
          f"{'cos64 fp16/bf16: kiln':>22} {'torch':>15} result")
    for r in rows:
        print(f"{r['model']:<16} {f(r.get('fp32_rel'), '.2e'):>9} {f(r.get('tf32_rel'), '.2e'):>9} "
              f"{f(r.get('tf32_cos'), '.6f'):>9} {f(r.get('fp16_cos'), '.6f'):>9} "
              f"{f(r.get('bf16_cos'), '.6f'):>9} {f(r.get('fp16_top1'), 'd'):>9} {f(r.get('bf16_top1'), 'd'):>9} "
              f"{f(r.get('torch_fp16_top1'), 'd'):>7} {f(r.get('torch_bf16_top1'), 'd'):>7} "
              f"{f(r.get('fp16_cos64'), '.5f'):>14}/{f(r.get('bf16_cos64'), '.5f'):<7} "
              f"{f(r.get('torch_fp16_cos64'), '.5f'):>7}/{f(r.get('torch_bf16_cos64'), '.5f'):<7} "
              f"{'pass' if r['ok'] else 'FAIL'}")
    print(f"targets: fp32 rel err <= {FP32_REL:g} vs the CPU backend; cosine >= {COS_MIN} vs fp32; "
          f"top-1 {TOP1_BATCH}/{TOP1_BATCH} for classifiers")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
