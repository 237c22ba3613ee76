#!/usr/bin/env bash
# Here (the build machine): copies the built binaries and the shared libraries the device machine lacks into
# .devcarry/{bin,lib} (ignored by git), and the same packed as .devcarry.tgz, which is what the device call carries
# (the libraries alone outgrow its 64 MiB limit): unpack it there first, `tar xzf .devcarry.tgz`.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${BUILD_DIR:-build}
# The CUTLASS GEMM tactics come only from a build configured with their headers (`make cutlass`).
grep -q '^KILN_CUTLASS_DIR:PATH=/' $B/CMakeCache.txt 2>/dev/null ||
  echo "pack: $B has no CUTLASS GEMM tactics (run 'make cutlass' first to carry them)" >&2
rm -rf .devcarry && mkdir -p .devcarry/bin .devcarry/lib
cp $B/bin/kiln $B/bin/kiln_gpu_tests $B/bin/kiln_node_runner .devcarry/bin/
# kiln_tests: gpu_check's hf stage runs the HfModels gtest on the exports the device's torch/transformers write.
[ -f $B/bin/kiln_tests ] && cp $B/bin/kiln_tests .devcarry/bin/
cp $B/lib/libkiln_*.so .devcarry/lib/
# The Python package (gpu_check's python stage): the module finds libkiln_*.so through LD_LIBRARY_PATH there.
if [ -d $B/python/kiln ]; then
  mkdir -p .devcarry/python && cp -r $B/python/kiln .devcarry/python/
  # The device's python3 is 3.12: a module built for it comes from a second build directory, configured with
  # -DPython3_EXECUTABLE=<a python3.12 with headers> and built with --target _kiln (the libraries are shared).
  for m in ${PY_DEVICE_BUILD:-build-py312}/python/kiln/_kiln*.so; do [ -f "$m" ] && cp "$m" .devcarry/python/kiln/; done
  strip --strip-unneeded .devcarry/python/kiln/_kiln*.so
fi
strip --strip-unneeded .devcarry/bin/* .devcarry/lib/libkiln_*.so
for lib in libonnx.so.1 libonnx_proto.so.1 libprotobuf.so.32 libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
  cp "$(ldconfig -p | awk -v l=$lib '$1==l {print $NF; exit}')" .devcarry/lib/
done
cp /usr/local/cuda/lib64/libcudart.so.13 .devcarry/lib/
du -sh .devcarry
tar czf .devcarry.tgz .devcarry
du -sh .devcarry.tgz
