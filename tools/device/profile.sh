#!/usr/bin/env bash
# On the device: per-layer profiles (kiln --dumpProfile) of the slowest benchmark configurations, the layers
# sorted by time, top 12 each, and the time per op type. Usage: tools/device/profile.sh [model:batch ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
export LD_LIBRARY_PATH="$PWD/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=${OUT:-/tmp/kiln_profile}; mkdir -p "$OUT"
for spec in ${*:-bert_base:64 resnet50:128}; do
  m=${spec%%:*}; b=${spec##*:}
  python3 -c "import sys; sys.path.insert(0,'tests/models'); import export_models as e
if not e.is_exported('/tmp/kiln_models','$m',17): e.export_one('$m',17,'/tmp/kiln_models')" >/dev/null 2>&1
  dir=/tmp/kiln_models/${m}_op17
  shape=$(python3 -c "import json; s=json.load(open('$dir/meta.json'))['inputs'][0]['shape']; print('x'.join(map(str,[$b]+s[1:])))")
  .devcarry/bin/kiln --onnx=$dir/model.onnx --shapes=input:$shape --minShapes=input:$shape --optShapes=input:$shape \
    --maxShapes=input:$shape --device=cuda --fp16 --noDataTransfers --iterations=20 --warmUp=100 --duration=0 \
    --exportProfile=$OUT/${m}_$b.json > $OUT/${m}_$b.log 2>&1
  echo "== $m batch $b fp16: $(grep -m1 'GPU Compute Time' $OUT/${m}_$b.log | sed 's/percentile.*//')"
  python3 - $OUT/${m}_$b.json <<'PY'
import json, sys, collections
rows = [r for r in json.load(open(sys.argv[1])) if "name" in r]
tot = sum(r["averageMs"] for r in rows)
for r in sorted(rows, key=lambda r: -r["averageMs"])[:12]:
    print(f"  {r['averageMs']:8.3f} ms {100*r['averageMs']/tot:5.1f}%  {r['name'][:70]}")
PY
done
