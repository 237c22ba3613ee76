#!/usr/bin/env python3
"""Runs the exported model zoo through the kiln CLI on the CPU backend and compares every output with PyTorch's."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402

REL_TOL = 1e-4  # max |kiln - torch| must stay within REL_TOL * max |torch|
PROFILE_BATCH = (1, export_models.REF_BATCH, 4)  # min/opt/max of the dynamic batch; the run uses opt


def dims(shape):
    return "x".join(str(d) for d in shape)


def load_export(path):
    """Reads --exportOutput JSON ([{name, dimensions, values}]); tolerates nan/inf spelled the C way."""
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        text = re.sub(r"(?<![\w\"])-?(nan|inf)(?![\w\"])",
                      lambda m: {"nan": "NaN", "-nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[m.group(0)],
                      text)
        doc = json.loads(text)
    out = {}
    for t in doc:
        shape = [int(d) for d in str(t["dimensions"]).split("x") if d != ""]
        out[t["name"]] = np.asarray(t["values"], dtype=np.float64).reshape(shape)
    return out


def run_kiln(kiln, model_dir, meta, out_json, timeout):
    inp = meta["inputs"][0]
    name, shape = inp["name"], inp["shape"]
    rest = shape[1:]
    lo, opt, hi = ([b] + rest for b in PROFILE_BATCH)
    cmd = [kiln, f"--onnx={os.path.join(model_dir, 'model.onnx')}",
           f"--minShapes={name}:{dims(lo)}", f"--optShapes={name}:{dims(opt)}", f"--maxShapes={name}:{dims(hi)}",
           f"--shapes={name}:{dims(shape)}", f"--loadInputs={name}:{os.path.join(model_dir, inp['file'])}",
           f"--exportOutput={out_json}", "--iterations=1", "--warmUp=0", "--duration=0", "--device=cpu"]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              errors="replace")
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout} s", time.time() - t0, cmd
    elapsed = time.time() - t0
    if proc.returncode != 0:
        lines = proc.stdout.strip().splitlines()
        # Errors come first and summaries last; show the first error lines rather than a tail of node lists.
        errs = [l for l in lines if re.search(r"error|\[E\]|unsupported|failed", l, re.I)][:3] or lines[-3:]
        how = (f"killed by signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited {proc.returncode}")
        return None, f"kiln {how}: " + " | ".join(l.strip() for l in errs), elapsed, cmd
    return proc.stdout, "", elapsed, cmd


def check_model(kiln, models_root, name, opset, build_dir, timeout, verbose):
    row = {"model": name, "opset": opset, "err": None, "tol": None, "ok": False, "time": 0.0, "msg": "", "note": ""}
    if not export_models.is_exported(models_root, name, opset):
        try:
            export_models.export_one(name, opset, models_root)
        except Exception as e:  # an exporter failure is this model's failure, not the whole run's
            row["msg"] = f"export failed: {type(e).__name__}: {e}"
            return row
    mdir = export_models.model_dir(models_root, name, opset)
    with open(os.path.join(mdir, "meta.json")) as f:
        meta = json.load(f)
    row["note"] = meta.get("note", "")
    ref = np.load(os.path.join(mdir, "output.npy")).astype(np.float64)
    row["tol"] = REL_TOL * float(np.max(np.abs(ref)))

    out_json = os.path.join(build_dir, "model_outputs", f"{name}_op{opset}.json")
    os.makedirs(os.path.dirname(out_json), exist_ok=True)
    if os.path.exists(out_json):
        os.remove(out_json)
    stdout, err, row["time"], cmd = run_kiln(kiln, mdir, meta, out_json, timeout)
    if verbose:
        print("  $ " + " ".join(cmd))
    if err:
        row["msg"] = err
        return row
    try:
        outputs = load_export(out_json)
    except (OSError, ValueError, KeyError) as e:
        row["msg"] = f"cannot read {out_json}: {e}"
        return row
    oname = meta["outputs"][0]["name"]
    if oname not in outputs:
        row["msg"] = f"output '{oname}' missing (got {', '.join(outputs) or 'none'})"
        return row
    got = outputs[oname]
    if got.shape != ref.shape:
        row["msg"] = f"shape {dims(got.shape)} != reference {dims(ref.shape)}"
        return row
    diff = np.abs(got - ref)
    row["err"] = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan")
    if np.isnan(got).any() and not np.isnan(ref).any():
        row["msg"] = f"{int(np.isnan(got).sum())} NaN outputs"
        return row
    row["ok"] = bool(row["err"] <= row["tol"])
    if not row["ok"]:
        row["msg"] = f"max abs err at flat index {int(np.argmax(diff))}"
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kiln-build", default="build")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--ci", action="store_true", help="small transformer variants, full-size CNNs (default)")
    g.add_argument("--full", action="store_true", help="full-size vit_b_16, BERT-base and GPT-2-small too")
    ap.add_argument("--models", nargs="*", help=f"subset of: {', '.join(export_models.ZOO)}")
    ap.add_argument("--opsets", type=int, nargs="*", default=list(export_models.OPSETS))
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model run")
    ap.add_argument("--verbose", action="store_true", help="print each kiln command line")
    args = ap.parse_args(argv)

    kiln = os.path.join(args.kiln_build, "bin", "kiln")
    if not os.access(kiln, os.X_OK):
        print(f"error: {kiln} not found; build it with: cmake --build {args.kiln_build} --target kiln", file=sys.stderr)
        return 2
    names = args.models or (export_models.FULL_MODELS if args.full else export_models.CI_MODELS)
    max_opset = export_models.max_exporter_opset()
    print(f"torch {export_models.torch.__version__}: torch.onnx exports opsets up to {max_opset}; "
          + ("opset 17 is exported natively." if max_opset >= 17 else
             f"opset 17 models are exported at {max_opset} and upgraded with onnx.version_converter."))
    print(f"Tolerance: max |kiln - torch| <= {REL_TOL:g} * max |torch output|; "
          f"batch {export_models.REF_BATCH} with profile min/opt/max batch {'/'.join(map(str, PROFILE_BATCH))}, "
          "CPU backend.")

    rows = []
    for name in names:
        for opset in args.opsets:
            row = check_model(kiln, args.models_dir, name, opset, args.kiln_build, args.timeout, args.verbose)
            rows.append(row)
            status = "PASS" if row["ok"] else "FAIL"
            print(f"  {status} {name} opset {opset} ({row['time']:.1f} s){': ' + row['msg'] if row['msg'] else ''}",
                  flush=True)

    def num(v):
        return "—" if v is None else f"{v:.3g}"

    print(f"\n{'model':<18} {'opset':>5} {'max abs err':>12} {'tolerance':>11} {'result':>6} {'time (s)':>9}")
    for r in rows:
        print(f"{r['model']:<18} {r['opset']:>5} {num(r['err']):>12} {num(r['tol']):>11} "
              f"{'pass' if r['ok'] else 'FAIL':>6} {r['time']:>9.1f}")
    notes = sorted({r["note"] for r in rows if r["note"]})
    for n in notes:
        print(f"note: {n}")
    failed = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} models passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
