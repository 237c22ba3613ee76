#!/usr/bin/env bash
# Fetches NVIDIA CUTLASS's headers (BSD-3-Clause; the C++ templates the CUTLASS GEMM tactics are built from) into
# $1 (default build/_deps/cutlass): include/ and tools/util/include/, from the nvidia-cutlass wheel on PyPI, which
# carries the C++ source. Prints the directory to pass as -DKILN_CUTLASS_DIR.
set -euo pipefail
VERSION=${CUTLASS_VERSION:-4.2.0.0}
DEST=${1:-build/_deps/cutlass}
if [ -f "$DEST/include/cutlass/cutlass.h" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "$DEST"; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cutlass==$VERSION" >&2
unzip -q "$tmp"/nvidia_cutlass-*.whl 'cutlass_library/source/include/*' 'cutlass_library/source/tools/util/include/*' \
  '*.dist-info/licenses/LICENSE.txt' -d "$tmp/x" >&2
rm -rf "$DEST" && mkdir -p "$DEST/tools/util"
mv "$tmp/x/cutlass_library/source/include" "$DEST/include"
mv "$tmp/x/cutlass_library/source/tools/util/include" "$DEST/tools/util/include"
cp "$tmp"/x/*.dist-info/licenses/LICENSE.txt "$DEST/"
echo "$VERSION" > "$DEST/VERSION"
echo "$DEST"
