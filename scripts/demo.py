#!/usr/bin/env python3
"""`make demo`: export ResNet-50 to ONNX, build a Kiln engine with the kiln CLI, time it, check it against PyTorch."""
import argparse
import inspect
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
INPUT_NAME = "input"
# Written into the ONNX file so that a model from elsewhere under the same name is never taken for ours:
# the PyTorch reference is only valid for these exact weights.
PROVENANCE_KEY = "kiln_demo_provenance"
PROVENANCE = "torchvision.models.resnet50(weights=None) after torch.manual_seed(0), eval, opset 13"
# FP32 on both sides; only the order of summation differs.
TOLERANCE = 1e-3


def import_torch():
    try:
        import torch
        import torchvision
    except ImportError as e:
        sys.exit(f"[E] {e}: run with /usr/bin/python3 (Debian's python3-torch and python3-torchvision)")
    return torch, torchvision


def reference_model():
    torch, torchvision = import_torch()
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def has_our_provenance(path):
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return any(p.key == PROVENANCE_KEY and p.value == PROVENANCE for p in model.metadata_props)


def ensure_resnet50_onnx(path):
    """Exports the model unless `path` already holds this exact export; returns the PyTorch model."""
    torch, _ = import_torch()
    import onnx
    model = reference_model()
    if path.exists() and has_our_provenance(path):
        return model
    if path.exists():
        print(f"{path} was not exported by this script (no provenance tag): exporting again")
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Exporting ResNet-50 (random weights, seed 0) to {path}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        # Newer PyTorch defaults to the dynamo exporter (opset 18+); the TorchScript exporter gives opset 13 everywhere.
        extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(tmp_path), opset_version=13,
                          input_names=[INPUT_NAME], output_names=["output"],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, "output": {0: "batch"}}, **extra)
        exported = onnx.load(str(tmp_path))
        exported.metadata_props.add(key=PROVENANCE_KEY, value=PROVENANCE)
        onnx.save(exported, str(path))
    return model


def detect_gpu():
    """Name of the first NVIDIA GPU, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return lines[0] if proc.returncode == 0 and lines else None


def run_kiln(kiln, args):
    """Runs the CLI with its output shown; exits with the CLI's failure."""
    cmd = [str(kiln), *args]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"[E] kiln exited with {proc.returncode}")
    return proc.stdout


def read_exported_output(path, name="output"):
    entries = {e["name"]: e for e in json.loads(Path(path).read_text())}
    entry = entries[name]
    dims = [int(d) for d in entry["dimensions"].split("x")]
    return np.array(entry["values"], dtype=np.float32).reshape(dims)


def compare(kiln_out, ref):
    """max |kiln - ref| / max |ref|: one number that does not depend on the logits' scale."""
    return float(np.max(np.abs(kiln_out - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kiln-build", default="build", help="Kiln build directory (holds bin/kiln)")
    parser.add_argument("--models", default=str(ROOT / "models"), help="where the ONNX model and engine go")
    parser.add_argument("--duration", default="3", help="seconds of timed inference (the CLI's --duration)")
    args = parser.parse_args()

    kiln = Path(args.kiln_build) / "bin" / "kiln"
    if not kiln.is_file():
        sys.exit(f"[E] {kiln} not found: run `make build` first")
    models = Path(args.models)
    onnx_path, engine_path = models / "resnet50.onnx", models / "resnet50.engine"
    torch, _ = import_torch()
    model = ensure_resnet50_onnx(onnx_path)

    gpu = detect_gpu()
    print(f"GPU: {gpu}" if gpu else "GPU: none found")
    cuda_built = (Path(args.kiln_build) / "lib" / "libkiln_cuda.so").is_file()
    device = "cuda" if gpu and cuda_built else "cpu"
    if device == "cuda":
        # TF32 (TensorRT's default) rounds products to 10 bits; the check below compares with PyTorch's FP32.
        print("Kiln runs on its CUDA backend in FP32 (--noTF32), so the check against PyTorch's FP32 is strict.")
    else:
        print("Kiln runs on its CPU backend" + (" (the CUDA backend is not in this build)." if gpu else "."))
    build_flags = [f"--device={device}"] + (["--noTF32"] if device == "cuda" else [])

    shape = f"{INPUT_NAME}:1x3x224x224"
    run_kiln(kiln, [f"--onnx={onnx_path}", f"--saveEngine={engine_path}", f"--minShapes={shape}",
                    f"--optShapes={shape}", f"--maxShapes={INPUT_NAME}:8x3x224x224", "--skipInference"] + build_flags)

    torch.manual_seed(1)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        input_file, output_file = Path(tmp) / "input.bin", Path(tmp) / "output.json"
        x.numpy().astype(np.float32).tofile(input_file)
        run_kiln(kiln, [f"--loadEngine={engine_path}", f"--shapes={shape}", f"--loadInputs={INPUT_NAME}:{input_file}",
                        f"--exportOutput={output_file}", f"--duration={args.duration}", f"--device={device}"])
        kiln_out = read_exported_output(output_file)

    with torch.inference_mode():
        ref = model(x).numpy()
    rel = compare(kiln_out, ref)
    same_top1 = int(np.argmax(kiln_out)) == int(np.argmax(ref))
    print(f"Check against PyTorch: max|kiln - torch| / max|torch| = {rel:.3e} (tolerance {TOLERANCE:g}); "
          f"top-1 class {'matches' if same_top1 else 'differs'}")
    if rel > TOLERANCE:
        sys.exit("[E] Kiln's output differs from PyTorch's beyond the tolerance")
    print("Demo passed.")


if __name__ == "__main__":
    main()
