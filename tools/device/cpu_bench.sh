#!/usr/bin/env bash
# Runs `make bench`'s CPU comparison (resnet50 batch 1, Kiln vs PyTorch, same run) on the lent device machine,
# pinned to 2 cores like CI. Expects the binaries and the shared libraries they need in .devcarry/{bin,lib}
# (the device has no Debian packages); prints the table last and leaves results under $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="$PWD/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) ($(nproc) cores, pinned to 0,1)"
python3 -c 'import torch, onnx; print("torch", torch.__version__, "onnx", onnx.__version__)'
taskset -c 0,1 python3 bench/cpu_resnet50.py --kiln-build .devcarry --runs "${RUNS:-30}" --out-dir "${OUT:-bench/results}"
