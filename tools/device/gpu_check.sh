#!/usr/bin/env bash
# On the device machine, in one call: the GPU test suite, the ONNX node tests on the CUDA backend next to the
# CPU backend, the full-size models in FP32/FP16/BF16, and the benchmarks; a short table last.
# Usage (device): tools/device/gpu_check.sh [tests | tests1 | tests2] [cli] [python] [nvtx] [node] [models] [hf] [sanitize]
#   [profile] [ab] [bench]
#   (default: tests cli python nvtx node models; hf, the tiny Hugging Face exports, needs transformers there).
#   nvtx checks under Nsight Systems that the layer, pass and build-phase ranges appear. cli and python run the
#   pytest tests marked `gpu` (GPU-only kiln flags; zero-copy torch tensors and the FP16 workflow); without a GPU
#   they skip, each saying why.
# Environment: NODE_DEVICES (cpu cuda), BENCH_ARGS (passed to bench/gpu_bench.py), SAN_TIMEOUT, SAN_MODELS, SAN_RUNS,
# SAN_TESTS_TIMEOUT and SAN_GTEST_FILTER (memcheck over kiln_gpu_tests; with a filter, racecheck over it too),
# GPU_TEST_FILTER (a gtest filter for the tests stage, e.g. '-*Times*' to leave out the timing prints; the summary
# names the filter so a partial run never reads as the whole suite), GPU_TEST_SHARDS and GPU_TEST_TIMEOUT (the
# tests stage as concurrent gtest shards, each stopped after so many seconds), PROFILE_MODELS (model:batch pairs
# for the profile stage; PROFILE_FLAGS adds kiln flags, e.g. --outputIOFormats=fp16:chw), AB_ENV and AB_MODELS
# (the ab stage: ';'-separated variants of VAR=value words against the default, per model; AB_FLAGS adds kiln flags
# to every ab run).
# Prepare here first: make build && tools/device/pack.sh (binaries + libraries into .devcarry.tgz; carry that).
set -uo pipefail
cd "$(dirname "$0")/../.."
# The device call carries .devcarry.tgz (tools/device/pack.sh): unpack it unless this tree holds a newer copy.
[ -f .devcarry.tgz ] && { [ .devcarry/bin/kiln -nt .devcarry.tgz ] || tar xzmf .devcarry.tgz; }
OUT=${OUT:-/tmp/kiln_gpu_check}; mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.devcarry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
stages=${*:-tests cli python nvtx node models}
summary=()
# Distinct test names gtest printed with a status (a failure shows once as it happens and again in the summary).
count_tests() { grep -oE "^\[  $1 *\] [A-Z][A-Za-z0-9_/.]+" "$2" | awk '{print $NF}' | sort -u | wc -l; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
nproc

for s in $stages; do
  case $s in
  tests|tests1|tests2)
    # The whole suite takes ~630 s of test time on an H100 (run 18), more than one device call allows: tests1 and
    # tests2 are its two halves (~300 s and ~330 s), one call each.
    filter=${GPU_TEST_FILTER:-*}
    case $s in
      tests1) filter='GpuDnn*:GpuElementwise*:GpuTuning*' ;;
      tests2) filter='*-GpuDnn*:GpuElementwise*:GpuTuning*' ;;
    esac
    # GPU_TEST_SHARDS=N runs the selection as N gtest shards at once (one GPU; most of the suite's time is engine
    # builds on the host, so the whole suite fits one call with 3 shards). The logs are joined afterwards.
    # GPU_TEST_TIMEOUT (seconds) stops a shard that runs longer, so the summary still prints inside a device call.
    shards=${GPU_TEST_SHARDS:-1}
    # Shards share the GPU, so what a test times there is noisy (one layer read 80 us in one run, 97 in the next):
    # over the whole suite, the timing tests (*Times*) run afterwards on their own, one at a time.
    # Every selection does so (not only the whole suite): the timing tests it selects are listed first
    # (--gtest_list_tests under the filter), left out of the shards, and run by name after them.
    shard_filter=$filter timed_after=0 timed=''
    if [ "$shards" -gt 1 ]; then
      timed=$(./.devcarry/bin/kiln_gpu_tests --gtest_list_tests --gtest_filter="$filter" 2>/dev/null |
        awk '/^[^ ]/ {suite = $1} /^  / {print suite $1}' | grep 'Times' | paste -sd: -)
      if [ -n "$timed" ]; then
        case $filter in *-*) shard_filter="$filter:*Times*" ;; *) shard_filter="$filter-*Times*" ;; esac
        timed_after=1
      fi
    fi
    for ((i = 0; i < shards; i++)); do
      GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i timeout ${GPU_TEST_TIMEOUT:-0} \
        ./.devcarry/bin/kiln_gpu_tests --gtest_filter="$shard_filter" \
        --gtest_output=xml:"$OUT/gpu_${s}_$i.xml" > "$OUT/gpu_${s}_$i.log" 2>&1 &
    done
    rc=0
    for ((i = 0; i < shards; i++)); do wait -n || rc=$?; done
    if [ $timed_after = 1 ]; then
      timeout ${GPU_TEST_TIMEOUT:-0} ./.devcarry/bin/kiln_gpu_tests --gtest_filter="$timed" \
        --gtest_output=xml:"$OUT/gpu_${s}_timed.xml" > "$OUT/gpu_${s}_timed.log" 2>&1 || rc=$?
    fi
    cat "$OUT"/gpu_${s}_*.log > "$OUT/gpu_$s.log"; rm -f "$OUT"/gpu_${s}_*.log
    # At most 8 files come back from a device call: the shards' JUnit files travel as one archive, so that a call
    # that also runs the bench gets the bench's .md and .json back.
    (cd "$OUT" && tar czf gpu_${s}_xml.tgz gpu_${s}_*.xml && rm -f gpu_${s}_*.xml) 2> /dev/null || true
    passed=$(grep -hE '^\[  PASSED  \] [0-9]+ test' "$OUT/gpu_$s.log" | awk '{n += $4} END {print n + 0}')
    grep -E "^\[  (FAILED|PASSED|SKIPPED) " "$OUT/gpu_$s.log" | head -40
    grep -B2 -A8 "Failure" "$OUT/gpu_$s.log" | head -80
    # Timing tests print their candidates' times (e.g. GpuCutlassGemm's 'CUTLASS tuned' lines): show them here.
    grep -hE "^(CUTLASS tuned|SPLITK tuned|ODDGEMM|NORMGEMM|MLP) " "$OUT/gpu_$s.log" | cut -c1-600
    summary+=("gpu op tests$([ "$filter" = '*' ] || echo " (filter $filter)")$([ $shards = 1 ] || echo " in $shards shards")$([ $timed_after = 0 ] || echo " (+ *Times* alone after)"): $passed passed, $(count_tests FAILED "$OUT/gpu_$s.log") failed, $(count_tests SKIPPED "$OUT/gpu_$s.log") skipped (rc $rc)")
    ;;
  cli|python)
    # pytest tests marked gpu; a skip is a failure to look at here (the device has a GPU), so skips are listed.
    if ! python3 -c "import pytest" 2>/dev/null; then summary+=("$s gpu tests: pytest is not installed here; not run"); continue; fi
    if [ $s = cli ]; then
      KILN_BUILD=.devcarry python3 -m pytest -q -rs -m gpu tests/cli > "$OUT/${s}_gpu.log" 2>&1
    elif python3 -c "import sys; sys.path.insert(0, '.devcarry/python'); import kiln" 2> "$OUT/python_import.log"; then
      rm -f "$OUT/python_import.log"  # nothing to say (the 8-file limit above)
      KILN_BUILD=.devcarry python3 -m pytest -q -rs -m gpu tests/python > "$OUT/${s}_gpu.log" 2>&1
    else
      summary+=("python gpu tests: the carried module does not import here: $(tail -1 "$OUT/python_import.log")"); continue
    fi
    rc=$?
    grep -E "^(FAILED|ERROR|SKIPPED)|(passed|failed|skipped)" "$OUT/${s}_gpu.log" | tail -20
    grep -B5 -A25 "^____" "$OUT/${s}_gpu.log" | head -120
    summary+=("$s gpu tests: $(tail -1 "$OUT/${s}_gpu.log") (rc $rc)")
    ;;
  nvtx)
    nsys=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -1)
    if [ -z "$nsys" ]; then
      # Without Nsight Systems: the probe library (tests/support/nvtx_probe.cpp) records the ranges instead.
      KILN_BUILD=.devcarry python3 -m pytest -q -rs tests/cli/test_cli_nvtx.py > "$OUT/nvtx_probe.log" 2>&1
      summary+=("nvtx (probe injection, nsys absent): $(tail -1 "$OUT/nvtx_probe.log")"); continue
    fi
    python3 - "$OUT/nvtx_chain.onnx" <<'PY'
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu1"), helper.make_node("MatMul", ["r", "w"], ["y"], name="proj")]
g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
                      initializer=[numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")])
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), sys.argv[1])
PY
    $nsys profile --trace=cuda,nvtx --force-overwrite=true -o "$OUT/nvtx" .devcarry/bin/kiln --onnx="$OUT/nvtx_chain.onnx" \
      --device=cuda --iterations=5 --warmUp=0 --duration=0 > "$OUT/nvtx_run.log" 2>&1
    # The report is nvtx_sum in current Nsight Systems, nvtxsum in older ones.
    $nsys stats --report nvtx_sum --format csv "$OUT/nvtx.nsys-rep" > "$OUT/nvtx_sum.csv" 2>&1 ||
      $nsys stats --report nvtxsum --format csv "$OUT/nvtx.nsys-rep" > "$OUT/nvtx_sum.csv" 2>&1
    [ -s "$OUT/nvtx_sum.csv" ] || tail -5 "$OUT/nvtx_run.log"
    missing=""
    for r in "kiln enqueue" relu1 proj "Building engine" "Optimization passes" "Writing engine" shape_inference; do
      grep -q "$r" "$OUT/nvtx_sum.csv" || missing+=" '$r'"
    done
    head -20 "$OUT/nvtx_sum.csv"
    summary+=("nvtx: ranges ${missing:+MISSING:$missing}${missing:-all found (layers, passes, build phases)}")
    ;;
  node)
    # The onnx wheel ships the node test cases as code: write them out as model + data directories first.
    python3 tests/onnx/write_pypi_node_tests.py --out /tmp/onnx-node > "$OUT/node_write.log" 2>&1 || tail -3 "$OUT/node_write.log"
    for dev in ${NODE_DEVICES:-cpu cuda}; do
      python3 tests/onnx/run_node_tests.py --kiln-build .devcarry --suite onnx-pypi --pypi-data /tmp/onnx-node \
        --device $dev --jobs 16 --quiet --results "$OUT/node_$dev.json" > "$OUT/node_$dev.log" 2>&1
      summary+=("node suite (onnx $(python3 -c 'import onnx; print(onnx.__version__)')) $dev: $(grep -m1 '^\[onnx-pypi\] .* tests:' "$OUT/node_$dev.log")")
      grep -m1 "ran some layers on the host" "$OUT/node_$dev.log" && summary+=("  $(grep -m1 'ran some layers on the host' "$OUT/node_$dev.log")")
    done
    [ -f "$OUT/node_cpu.json" ] && python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(d):
    j = json.load(open(f"{out}/node_{d}.json"))
    return {t["name"]: t for t in j["tests"]}
cpu, gpu = load("cpu"), load("cuda")
worse = [n for n in cpu if cpu[n]["status"] == "pass" and gpu.get(n, {}).get("status") != "pass"]
print(f"passing on cpu but not on cuda: {len(worse)}")
for n in sorted(worse)[:60]:
    print(f"  {n}: [{gpu[n]['stage']}] {gpu[n]['reason'][:200]}")
PY
    ;;
  models)
    python3 tests/models/test_models_gpu.py --kiln-build .devcarry --models-dir /tmp/kiln_models \
      --work /tmp/kiln_gpu_models --out "$OUT/models_gpu.json" 2>&1 | tee "$OUT/models_gpu.log" | tail -12
    summary+=("models: $(grep -c '^  PASS' "$OUT/models_gpu.log") passed, $(grep -c '^  FAIL' "$OUT/models_gpu.log") failed")
    ;;
  hf)
    # Tiny random-weight Hugging Face models exported with this machine's torch/transformers (offline, from
    # configs): the HfModels gtest (fusion counts and FP16 outputs on the reference kernels), then each as a CUDA
    # engine against PyTorch (tests/models/test_hf_gpu.py).
    if ! python3 -c "import transformers" 2>/dev/null; then summary+=("hf: transformers is not installed here; not run"); continue; fi
    rm -rf /tmp/kiln_hf
    hf_dirs=$(HF_HUB_OFFLINE=1 python3 tests/models/export_hf.py --out /tmp/kiln_hf --keep-going --list-dirs 2> "$OUT/hf_export.log" | tail -1)
    # The text families again with a dynamic sequence length (the FP16 NaN of HF's run-time causal masks showed there).
    hf_dyn=$(HF_HUB_OFFLINE=1 python3 tests/models/export_hf.py --out /tmp/kiln_hf --keep-going --list-dirs --dynamic-seq 2>> "$OUT/hf_export.log" | tail -1)
    hf_dirs=$hf_dirs${hf_dyn:+:$hf_dyn}
    grep -E "^  |torch " "$OUT/hf_export.log"
    if [ -x .devcarry/bin/kiln_tests ]; then
      KILN_HF_MODEL_DIRS=$hf_dirs .devcarry/bin/kiln_tests --gtest_filter='HfModels.*' > "$OUT/hf_gtest.log" 2>&1
      rc=$?
      sed -n '/^HF exports/,/^\[/p' "$OUT/hf_gtest.log"; grep -E "EXPECTED GAP|Failure" -A3 "$OUT/hf_gtest.log" | head -60
      summary+=("hf gtest (HfModels on $(echo "$hf_dirs" | tr ':' '\n' | grep -c .) exports): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/hf_gtest.log" | head -1) (rc $rc)")
    else
      summary+=("hf gtest: .devcarry/bin/kiln_tests missing (pack.sh after building kiln_tests); not run")
    fi
    python3 tests/models/test_hf_gpu.py --kiln-build .devcarry --models-dir /tmp/kiln_hf --work /tmp/kiln_hf_gpu \
      --out "$OUT/hf_gpu.json" 2>&1 | tee "$OUT/hf_gpu.log" | tail -12
    python3 tests/models/test_hf_gpu.py --kiln-build .devcarry --models-dir /tmp/kiln_hf --work /tmp/kiln_hf_gpu \
      --dynamic-seq --out "$OUT/hf_gpu_dynseq.json" 2>&1 | tee -a "$OUT/hf_gpu.log" | tail -12
    summary+=("hf engines vs PyTorch: $(grep -c '^  PASS' "$OUT/hf_gpu.log") passed, $(grep -c '^  FAIL' "$OUT/hf_gpu.log") failed")
    ;;
  sanitize)
    # compute-sanitizer memcheck and racecheck on the model suite (batch 2, FP32 and FP16) and the GPU op tests.
    san=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
    if [ -z "$san" ]; then summary+=("sanitizer: compute-sanitizer not found on this machine; not run"); continue; fi
    san_models=${SAN_MODELS:-resnet50 mobilenet_v2 efficientnet_b0 vit_b_16 bert_base gpt2_base}
    python3 tests/models/export_models.py --out /tmp/kiln_models --opsets 17 --models $san_models > "$OUT/san_export.log" 2>&1 \
      || { tail -3 "$OUT/san_export.log"; summary+=("sanitizer: model export failed"); }
    for m in $san_models; do
      d=/tmp/kiln_models/${m}_op17; [ -f $d/model.onnx ] || { summary+=("sanitizer $m: model missing"); continue; }
      sh=$(python3 -c "import json; i=json.load(open('$d/meta.json'))['inputs'][0]; print(i['name']+':'+'x'.join(map(str,i['shape'])))")
      # SAN_RUNS picks tool:precision pairs (racecheck looks at shared memory: one precision is enough).
      for run in ${SAN_RUNS:-memcheck: memcheck:--fp16 racecheck:--fp16}; do
        tool=${run%%:*} p=${run#*:}
        timeout ${SAN_TIMEOUT:-60} $san --tool $tool --error-exitcode 9 .devcarry/bin/kiln --onnx=$d/model.onnx --shapes=$sh \
          --minShapes=$sh --optShapes=$sh --maxShapes=$sh --device=cuda $p \
          --builderOptimizationLevel=0 --iterations=1 --warmUp=0 --duration=0 > "$OUT/san_${m}_${tool}${p}.log" 2>&1
        rc=$?; log="$OUT/san_${m}_${tool}${p}.log"
        # Racecheck flags cuBLASLt's Hopper kernels (nvjet_*: TMA and mbarrier protocols it does not model);
        # hazards in Kiln's own kernels are counted apart.
        own=$(grep "Race reported" "$log" | grep -vcE "at (nvjet|sm90_xmma|cutlass|cudnn)")
        summary+=("sanitizer $tool $m ${p:-fp32}: rc $rc $(grep -m1 -E '(ERROR|RACECHECK) SUMMARY' "$log")${own:+ (in Kiln kernels: $own)}")
      done
    done
    # The whole GPU suite under memcheck needs several minutes: SAN_TESTS_TIMEOUT (0 skips it), or a subset via
    # SAN_GTEST_FILTER.
    if [ "${SAN_TESTS_TIMEOUT:-}" != 0 ]; then
      timeout ${SAN_TESTS_TIMEOUT:-${SAN_TIMEOUT:-60}} $san --tool memcheck --error-exitcode 9 .devcarry/bin/kiln_gpu_tests \
        --gtest_filter="${SAN_GTEST_FILTER:-*}" > "$OUT/san_gpu_tests.log" 2>&1
      summary+=("sanitizer memcheck kiln_gpu_tests: rc $? $(grep -m1 'ERROR SUMMARY' "$OUT/san_gpu_tests.log")")
    fi
    # With a subset named (e.g. the own shared-memory kernels: 'GpuTransformer.*Attention*:GpuDepthwise.*:GpuReduce.*'),
    # racecheck over it too.
    if [ -n "${SAN_GTEST_FILTER:-}" ]; then
      timeout ${SAN_TESTS_TIMEOUT:-${SAN_TIMEOUT:-60}} $san --tool racecheck --error-exitcode 9 .devcarry/bin/kiln_gpu_tests \
        --gtest_filter="$SAN_GTEST_FILTER" > "$OUT/san_gpu_tests_race.log" 2>&1
      rc=$?
      own=$(grep "Race reported" "$OUT/san_gpu_tests_race.log" | grep -vcE "at (nvjet|sm90_xmma|cutlass|cudnn)")
      summary+=("sanitizer racecheck kiln_gpu_tests ($SAN_GTEST_FILTER): rc $rc $(grep -m1 'RACECHECK SUMMARY' "$OUT/san_gpu_tests_race.log") (in Kiln kernels: $own)")
    fi
    ;;
  ab)
    # Environment settings against the default, model by model, in one call: AB_ENV holds one or more variants
    # separated by ';', each one or more VAR=value words (e.g. "KILN_TACTIC_WEIGHTS=cold;KILN_FUSE_LAYERNORM_IO=1;
    # KILN_TACTIC_WEIGHTS=cold KILN_FUSE_LAYERNORM_IO=1"), and AB_MODELS model:batch pairs. Each engine is built
    # fresh (no timing cache) for the default and every variant, twice in alternation, and timed as a CUDA-graph
    # replay (FP16, median GPU compute time of 500 runs); each kiln run is stopped after 120 s. AB_FLAGS: kiln flags
    # for every run (e.g. "--outputIOFormats=fp16:chw", float16 bindings as gpu_bench.py builds them).
    # AB_TIMING_CACHE=1: the runs of one model:batch share a timing cache (the first build times, the others reuse
    # its choices), for run-time switches (KILN_PDL=0) where the tuner's own spread would blur the difference.
    IFS=';' read -r -a variants <<< "${AB_ENV:-}"
    variants=("" "${variants[@]}")
    header="| model | batch |"
    for pass in 1 2; do for v in "${variants[@]}"; do header+=" ${v:-default} ms (pass $pass) |"; done; done
    echo "$header"
    for mb in ${AB_MODELS:-bert_base:1}; do
      m=${mb%:*} b=${mb#*:} d=/tmp/kiln_models/${m}_op17
      [ -f $d/model.onnx ] || timeout 300 python3 tests/models/export_models.py --out /tmp/kiln_models --models $m \
        --opsets 17 > "$OUT/ab_export.log" 2>&1
      sh=$(python3 -c "import json; i=json.load(open('$d/meta.json'))['inputs'][0]; print(i['name']+':'+'x'.join(map(str,[$b]+i['shape'][1:])))")
      row="| $m | $b |" cache_flag=""
      if [ "${AB_TIMING_CACHE:-0}" = 1 ]; then
        rm -f "/tmp/kiln_ab_${m}_$b.cache"; cache_flag="--timingCacheFile=/tmp/kiln_ab_${m}_$b.cache"
      fi
      for pass in 1 2; do
        for i in "${!variants[@]}"; do
          ms=$( (for kv in ${variants[$i]}; do export "$kv"; done
                 timeout 120 .devcarry/bin/kiln --onnx=$d/model.onnx --minShapes=$sh --optShapes=$sh --maxShapes=$sh \
                   --shapes=$sh --device=cuda --fp16 --useCudaGraph --noDataTransfers --iterations=500 --warmUp=200 \
                   --duration=0 --verbose $cache_flag ${AB_FLAGS:-}) 2>&1 | tee "$OUT/ab_${m}_b${b}_v${i}_$pass.log" |
                grep -m1 "^GPU Compute Time" | sed -E 's/.*median = ([0-9.]+) ms.*/\1/')
          row+=" ${ms:-failed} |"
        done
      done
      echo "$row"
      summary+=("ab $m b$b: $row")
    done
    ;;
  profile)
    # Per-layer FP16 profiles (kiln --exportProfile, separate profiled runs) of PROFILE_MODELS (model:batch pairs),
    # written as $OUT/prof_<model>_<batch>.json (and the engine's layers with their tactics as layers_*.json); prints each one's layers grouped by name with the block index
    # taken out, largest first.
    for mb in ${PROFILE_MODELS:-bert_base:1 vit_b_16:64}; do
      m=${mb%:*} b=${mb#*:} d=/tmp/kiln_models/${m}_op17
      [ -f $d/model.onnx ] || python3 tests/models/export_models.py --out /tmp/kiln_models --models $m --opsets 17 \
        > "$OUT/profile_export.log" 2>&1
      sh=$(python3 -c "import json; i=json.load(open('$d/meta.json'))['inputs'][0]; print(i['name']+':'+'x'.join(map(str,[$b]+i['shape'][1:])))")
      .devcarry/bin/kiln --onnx=$d/model.onnx --minShapes=$sh --optShapes=$sh --maxShapes=$sh --shapes=$sh \
        --device=cuda --fp16 --iterations=100 --warmUp=200 --duration=0 --separateProfileRun \
        --exportProfile="$OUT/prof_${m}_$b.json" --exportLayerInfo="$OUT/layers_${m}_$b.json" \
        --profilingVerbosity=detailed ${PROFILE_FLAGS:-} > "$OUT/profile_$m.log" 2>&1 || tail -3 "$OUT/profile_$m.log"
      grep -E "^GPU Compute Time" "$OUT/profile_$m.log"
      python3 - "$OUT/prof_${m}_$b.json" <<'PY'
import json, re, sys
rows = json.load(open(sys.argv[1]))[1:]
groups = {}
for r in rows:
    k = re.sub(r"(layers?[._/]?|blocks\.|encoder_layer_|_)\d+", r"\1#", r["name"])
    groups.setdefault(k, [0.0, 0])
    groups[k][0] += r["averageMs"]
    groups[k][1] += 1
total = sum(v[0] for v in groups.values())
print(f"{sys.argv[1]}: {len(rows)} layers, {total:.3f} ms profiled")
for k, (ms, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:15]:
    print(f"  {ms:8.4f} ms {100 * ms / total:5.1f}%  x{n:<3d} {k}")
PY
      summary+=("profile $m b$b: $(ls "$OUT/prof_${m}_$b.json" 2>/dev/null || echo 'not written')")
    done
    ;;
  bench)
    # BENCH_ARGS narrows a run to fit one device call, e.g. "--models resnet50 bert_base --peers eager compile_ro".
    python3 bench/gpu_bench.py --kiln-build .devcarry --models-dir /tmp/kiln_models --out-dir "$OUT" ${BENCH_ARGS:-} \
      > "$OUT/bench.log" 2>&1
    sed -n '/^# GPU benchmark/,$p' "$OUT/bench.log"; grep -m3 -E "Error|Traceback" "$OUT/bench.log"
    summary+=("bench: $(grep -c '^{' "$OUT/bench.log") rows (see $OUT/*.md)")
    ;;
  esac
done
echo; echo "=== gpu_check summary ==="
for l in "${summary[@]}"; do echo "$l"; done
