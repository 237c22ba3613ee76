#!/usr/bin/env bash
# On the device: the same benchmark rows with each cuDNN tactic family withdrawn in turn, to tell which family a
# latency or throughput change comes from (run 16 left bert_base batch 1 slower with the cuDNN tactics offered).
# Usage: [SETTINGS='A=1;B=0 C=0'] tools/device/switch_probe.sh [bench args...]   (default: --models bert_base efficientnet_b0 --batches 1)
# Each setting builds and times its own engines (no peers unless the arguments ask for them); a table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -f .devcarry.tgz ] && { [ .devcarry/bin/kiln -nt .devcarry.tgz ] || tar xzmf .devcarry.tgz; }
export LD_LIBRARY_PATH="$PWD/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=${OUT:-/tmp/kiln_switch_probe}; mkdir -p "$OUT"
args=${*:---models bert_base efficientnet_b0 --batches 1}
# KILN_TACTIC_TIMING=stream: the tuner times candidates as launches on a stream (graph replays are the default).
settings=("" "KILN_TACTIC_TIMING=stream" "KILN_DNN_SDPA=0" "KILN_DNN_MATMUL=0" "KILN_DNN_CONV=0"
          "KILN_DNN_SDPA=0 KILN_DNN_MATMUL=0 KILN_DNN_CONV=0")
# SETTINGS (';'-separated, '-' for the defaults) replaces the list.
if [ -n "${SETTINGS:-}" ]; then IFS=';' read -ra settings <<< "$SETTINGS"; for i in "${!settings[@]}"; do
  [ "${settings[$i]}" = "-" ] && settings[$i]=""; done; fi
rows=()
for s in "${settings[@]}"; do
  tag=${s:-defaults}; dir="$OUT/${tag// /_}"; mkdir -p "$dir"
  env $s python3 bench/gpu_bench.py --kiln-build .devcarry --models-dir /tmp/kiln_models --out-dir "$dir" --peers \
    $args > "$dir/bench.log" 2>&1
  # Each JSON row: model, batch, Kiln's time (ms at batch 1, items/s above), the recorded tactic families.
  while IFS= read -r line; do rows+=("$tag | $line"); done < <(python3 - "$dir/bench.log" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith("{"):
        continue
    r = json.loads(l)
    ms, b = r.get("kiln_ms"), r["batch"]
    v = "-" if not ms else (f"{ms:.3f} ms" if b == 1 else f"{b * 1e3 / ms:.0f}/s")
    t = ", ".join(f"{k} {n}" for k, n in sorted(r["kiln"].get("tactics", {}).items()))
    print(f"{r['model']} b{b} | {v} | {t}")
PY
)
done
echo "| switches | model | Kiln | recorded tactics |"
echo "|---|---|---|---|"
for r in "${rows[@]}"; do echo "| $r |"; done
