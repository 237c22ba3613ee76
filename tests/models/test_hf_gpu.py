#!/usr/bin/env python3
"""The tiny Hugging Face exports (export_hf.py) as CUDA engines against PyTorch: for each, Kiln FP16 with cosine
similarity >= 0.999 to PyTorch's FP32 output (the export's output.npy), Kiln FP32 (--noTF32) within 1e-3 relative of
it; BF16's cosine is reported beside them. Exports what is missing with this machine's torch/transformers (offline:
configs only). Needs a GPU; exits 0 with a SKIP line where none is usable. Writes a JSON report with --out."""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_hf  # noqa: E402
from export_models import model_dir  # noqa: E402
from test_models_gpu import COS_MIN, FP32_REL, cosine, has_gpu, kiln_run  # noqa: E402


def is_exported(root, name):
    d = model_dir(root, name, export_hf.OPSET)
    return all(os.path.exists(os.path.join(d, f)) for f in ("model.onnx", "output.npy", "meta.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kiln-build", default="build")
    ap.add_argument("--models", nargs="*", default=list(export_hf.HF_MODELS))
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--work", default="build/gpu_hf")
    ap.add_argument("--out", default=None)
    ap.add_argument("--dynamic-seq", action="store_true",
                    help="the text families' dynamic-length exports (<name>_dynseq_op17; export_hf.py --dynamic-seq)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kiln = os.path.join(args.kiln_build, "bin", "kiln")
    if not has_gpu():
        print("SKIP: no GPU on this machine; the HF GPU checks run in tools/device/gpu_check.sh hf")
        return 0
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for name in args.models:
        if args.dynamic_seq and export_hf.HF_MODELS[name][1] is not export_hf._text_inputs:
            continue  # only the text families have a dynamic-length variant
        variant = name + ("_dynseq" if args.dynamic_seq else "")
        row = {"model": variant, "ok": False, "msg": ""}
        rows.append(row)
        try:
            if not is_exported(args.models_dir, variant):
                export_hf.export_one(name, args.models_dir, dynamic_seq=args.dynamic_seq)
            mdir = model_dir(args.models_dir, variant, export_hf.OPSET)
            meta = json.load(open(os.path.join(mdir, "meta.json")))
            row["attn"] = meta.get("attn_implementation", "")
            ins = [(i["name"], i["shape"], os.path.join(mdir, i["file"])) for i in meta["inputs"]]
            model = os.path.join(mdir, "model.onnx")
            ref = np.load(os.path.join(mdir, "output.npy")).astype(np.float64)

            def run(tag, extra):
                n, s, f = ins[0]
                out, _, warn = kiln_run(kiln, model, n, s, f, os.path.join(args.work, f"{variant}_{tag}.json"), "cuda",
                                        extra, 4, more_inputs=ins[1:])
                if warn:
                    row["host_layers"] = warn[0]
                return out.reshape(ref.shape)
            f32 = run("fp32", ["--noTF32"])
            row["fp32_rel"] = float(np.max(np.abs(f32 - ref)) / np.max(np.abs(ref)))
            row["fp16_cos"] = cosine(run("fp16", ["--fp16"]), ref)
            row["bf16_cos"] = cosine(run("bf16", ["--bf16"]), ref)
            row["ok"] = row["fp32_rel"] <= FP32_REL and row["fp16_cos"] >= COS_MIN
        except Exception as e:  # one model's failure is reported, the others still run
            row["msg"] = f"{type(e).__name__}: {e}"
        figures = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                           if k not in ("model", "ok", "msg", "host_layers"))
        print(f"  {'PASS' if row['ok'] else 'FAIL'} {variant} {row['msg']} {row.get('host_layers', '')}\n    {figures}",
              flush=True)
    print(f"\n{'model':<14} {'attention':>9} {'fp32 rel':>9} {'fp16 cos':>9} {'bf16 cos':>9} result")
    for r in rows:
        f = lambda k, fmt: "—" if r.get(k) is None else format(r[k], fmt)  # noqa: E731
        print(f"{r['model']:<14} {r.get('attn', ''):>9} {f('fp32_rel', '.2e'):>9} {f('fp16_cos', '.6f'):>9} "
              f"{f('bf16_cos', '.6f'):>9} {'pass' if r['ok'] else 'FAIL'}")
    print(f"targets vs PyTorch FP32: fp16 cosine >= {COS_MIN}; fp32 (--noTF32) max rel err <= {FP32_REL:g}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
