#!/usr/bin/env bash
# On the device: per-layer profiles (kiln --dumpProfile) of the slowest benchmark configurations, the layers
# sorted by time, top 12 each, and the time per op type. Usage: tools/device/profile.sh [model:batch ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
# The device call carries .devcarry.tgz (tools/device/pack.sh): unpack it unless this tree holds a newer copy.
[ -f .devcarry.tgz ] && { [ .devcarry/bin/kiln -nt .devcarry.tgz ] || tar xzmf .devcarry.tgz; }
export LD_LIBRARY_PATH="$PWD/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=${OUT:-/tmp/kiln_profile}; mkdir -p "$OUT"
for spec in ${*:-bert_base:64 resnet50:128}; do
  m=${spec%%:*}; b=${spec##*:}
  python3 -c "import sys; sys.path.insert(0,'tests/models'); import export_models as e
if not e.is_exported('/tmp/kiln_models','$m',17): e.export_one('$m',17,'/tmp/kiln_models')" >/dev/null 2>&1
  dir=/tmp/kiln_models/${m}_op17
  shape=$(python3 -c "import json; i=json.load(open('$dir/meta.json'))['inputs'][0]; print(i['name']+':'+'x'.join(map(str,[$b]+i['shape'][1:])))")
  .devcarry/bin/kiln --onnx=$dir/model.onnx --shapes=$shape --minShapes=$shape --optShapes=$shape \
    --maxShapes=$shape --device=cuda --fp16 --noDataTransfers --iterations=20 --warmUp=100 --duration=0 \
    --exportProfile=$OUT/${m}_$b.json > $OUT/${m}_$b.log 2>&1
  echo "== $m batch $b fp16: $(grep -m1 'GPU Compute Time' $OUT/${m}_$b.log | sed 's/percentile.*//')"
  python3 - $OUT/${m}_$b.json <<'PY'
import json, sys, collections
rows = [r for r in json.load(open(sys.argv[1])) if "name" in r]
tot = sum(r["averageMs"] for r in rows)
for r in sorted(rows, key=lambda r: -r["averageMs"])[:10]:
    print(f"  {r['averageMs']:8.3f} ms {100*r['averageMs']/tot:5.1f}%  {r['name'][:70]}")
# By kind of layer, from the name: fused layers carry their kind in it (pointwise_*, *_fused), others end in /Op.
kinds = collections.Counter()
for r in rows:
    n = r["name"]
    k = "Pointwise" if n.startswith("pointwise_") else "FusedConv" if n.endswith("_fused") else n.rsplit("/", 1)[-1].split("_")[0]
    kinds[k] += r["averageMs"]
print("  by kind: " + ", ".join(f"{k} {100*v/tot:.0f}%" for k, v in kinds.most_common(8)))
PY
done
