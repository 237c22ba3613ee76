#!/usr/bin/env python3
"""Runs the ONNX backend test suites through kiln_node_runner, reports pass/fail/skip per suite and gates on the node-suite pass rate."""
import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict

SUITES = ["node", "pytorch-converted", "pytorch-operator", "simple"]
# The node tests of the newest onnx release from PyPI, written by write_pypi_node_tests.py (`make test-node`).
PYPI_SUITE = "onnx-pypi"
ALL_SUITES = SUITES + [PYPI_SUITE]
DEFAULT_DATA = "/usr/share/libonnx-testdata/data"
GATE_SUITE = "node"
GATE_RATE = 0.90
# Skip reasons of cases whose values are not numeric tensors (strings, maps, sparse tensors, and sequences or
# optionals of those); the tensor-typed pass rate leaves only these out, as issue 3 counts them separately, so
# unsupported operators and numeric element types count as not passing.
NON_TENSOR_SKIPS = ("unsupported type: string", "unsupported type: sequence", "unsupported type: map",
                    "unsupported type: optional", "unsupported type: sparse tensor",
                    "unsupported type: unknown value type")


def find_data_root(explicit):
    if explicit:
        return explicit
    if os.path.isdir(DEFAULT_DATA):
        return DEFAULT_DATA
    try:  # the onnx Python package ships the same tests
        import onnx.backend.test
        return os.path.join(os.path.dirname(onnx.backend.test.__file__), "data")
    except ImportError:
        return DEFAULT_DATA


def suite_dir(args, root, suite):
    if suite == PYPI_SUITE:
        return os.path.join(args.pypi_data or os.path.join(args.kiln_build, "onnx-node-pypi"), "node")
    return os.path.join(root, suite)


def list_tests(d, pattern):
    if not os.path.isdir(d):
        return []
    out = []
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isfile(os.path.join(p, "model.onnx")) and (not pattern or pattern.search(name)):
            out.append(p)
    return out


def parse_lines(text):
    results = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        results[r.get("dir")] = r
    return results


# Generators whose reference data came from numpy's random streams: Kiln's draws differ, so their value
# comparisons fail, and with a different element count each run (unseeded). They stay failures, with one stable
# reason, so that docs/operators.md does not change from run to run.
RANDOM_OPS = {"Bernoulli", "RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal", "Multinomial"}


def stable_random_reason(r):
    ops = set(r.get("ops") or [])
    training_dropout = "Dropout" in ops and "training" in r.get("name", "")
    if not (ops & RANDOM_OPS or training_dropout):
        return
    # A value comparison of independent random draws says nothing either way: one that happened to match
    # (test_bernoulli, now and then) is recorded like the others, or the generated tables would flip between runs.
    # (Only the generators: training-mode Dropout with ratio 0 passes for real.)
    if (r.get("status") == "pass" and ops & RANDOM_OPS) or (r.get("status") == "fail" and r.get("stage") == "compare"):
        r["status"], r["stage"] = "fail", "compare"
        r["reason"] = ("random output: Kiln's generator is not numpy's, whose draws the reference data holds, so the "
                       "values cannot match")


# Reference data that contradicts its own model, checked by hand: such a test stays a failure (nothing is hidden),
# with the reason stated instead of the value mismatch.
DATA_DEFECTS = {
    ("node", "test_adam_multiple"): (
        "reference data inconsistent with the model: the node has no epsilon attribute (spec default 1e-6) but the "
        "data were computed with epsilon 1e-2; onnx-pypi's copy of this test, whose node sets it, passes"),
}


def stated_data_defect(r):
    why = DATA_DEFECTS.get((r.get("suite"), r.get("name")))
    if why and r.get("status") == "fail" and r.get("stage") == "compare":
        r["reason"] = why


def missing_result(test_dir, reason):
    return {"name": os.path.basename(test_dir), "dir": test_dir, "status": "fail", "stage": "run",
            "reason": reason, "ops": [], "dtypes": [], "opset": 0, "time_ms": 0, "datasets": 0}


def run_batch(runner, dirs, per_test_timeout, device="cpu"):
    """Runs dirs in one runner process; tests the process never reported (it died or hung) run again one by one."""
    # The runner forks and times out each test itself; this limit only catches a wedged runner.
    backstop = per_test_timeout * len(dirs) + 30
    cmd = [runner, f"--timeout={per_test_timeout}", f"--device={device}"] + dirs
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=backstop,
                              errors="replace")
        results, err = parse_lines(proc.stdout), proc.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        results, err = parse_lines(out), "runner timed out"
    if len(dirs) > 1:
        for d in dirs:
            if d not in results:
                results.update(run_batch(runner, [d], per_test_timeout, device))
    elif dirs[0] not in results:
        tail = (err or "").strip().splitlines()[-3:]
        results[dirs[0]] = missing_result(dirs[0], "runner produced no result: " + " | ".join(tail))
    return results


def summarize(tests):
    by_suite = defaultdict(Counter)
    for t in tests:
        by_suite[t["suite"]][t["status"]] += 1
    tensor_typed = Counter(t["suite"] for t in tests
                           if not (t["status"] == "skip" and t["reason"].startswith(NON_TENSOR_SKIPS)))
    summary = {}
    for suite, c in by_suite.items():
        supported = c["pass"] + c["fail"]
        summary[suite] = {"pass": c["pass"], "fail": c["fail"], "skip": c["skip"], "total": sum(c.values()),
                          "supported": supported, "pass_rate": (c["pass"] / supported) if supported else None,
                          "tensor_typed": tensor_typed[suite],
                          "tensor_pass_rate": (c["pass"] / tensor_typed[suite]) if tensor_typed[suite] else None}
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kiln-build", default="build", help="CMake build directory holding bin/kiln_node_runner")
    ap.add_argument("--results", default=None, help="write all results as JSON here")
    ap.add_argument("--suite", default=None, action="append", choices=ALL_SUITES + ["all", "debian"],
                    help="suite to run (repeatable); 'debian' = the libonnx-testdata suites, 'all' = those and "
                         f"{PYPI_SUITE}")
    ap.add_argument("--filter", default=None, help="regex on test names (e.g. '^test_conv')")
    ap.add_argument("--data", default=None, help=f"test data root (default {DEFAULT_DATA})")
    ap.add_argument("--pypi-data", default=None,
                    help=f"root written by write_pypi_node_tests.py for the {PYPI_SUITE} suite "
                         "(default KILN_BUILD/onnx-node-pypi)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--timeout", type=int, default=60, help="seconds per test")
    ap.add_argument("--jobs", type=int, default=1, help="runner processes in parallel")
    ap.add_argument("--quiet", action="store_true", help="do not list each skip and failure")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="backend the engines are built for")
    args = ap.parse_args(argv)

    runner = os.path.join(args.kiln_build, "bin", "kiln_node_runner")
    if not os.access(runner, os.X_OK):
        print(f"error: {runner} not found; build it with: cmake --build {args.kiln_build} --target kiln_node_runner",
              file=sys.stderr)
        return 2
    root = find_data_root(args.data)
    pattern = re.compile(args.filter) if args.filter else None
    chosen = args.suite or ["all"]
    suites = []
    for c in chosen:
        for s in ALL_SUITES if c == "all" else SUITES if c == "debian" else [c]:
            if s not in suites:
                suites.append(s)

    started = time.time()
    tests = []
    for suite in suites:
        d = suite_dir(args, root, suite)
        dirs = list_tests(d, pattern)
        if not dirs:
            print(f"[{suite}] no tests under {d}" + (" matching the filter" if pattern else ""))
            continue
        batches = [dirs[i:i + args.batch_size] for i in range(0, len(dirs), args.batch_size)]
        results = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for r in pool.map(lambda b: run_batch(runner, b, args.timeout, args.device), batches):
                results.update(r)
        for d in dirs:
            r = results.get(d) or missing_result(d, "no result")
            r["suite"] = suite
            stable_random_reason(r)
            stated_data_defect(r)
            tests.append(r)
        c = Counter(results[d]["status"] for d in dirs if d in results)
        print(f"[{suite}] {len(dirs)} tests: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped", flush=True)
        if args.device != "cpu":
            on_host = sum(1 for d in dirs if d in results and results[d]["status"] == "pass"
                          and results[d].get("host_layers", 0) > 0)
            print(f"[{suite}] {args.device}: {on_host} of the passing tests ran some layers on the host", flush=True)

    summary = summarize(tests)
    if not args.quiet:
        skips = sorted((t for t in tests if t["status"] == "skip"), key=lambda t: (t["reason"], t["suite"], t["name"]))
        if skips:
            print(f"\nSkipped ({len(skips)}):")
            for t in skips:
                print(f"  SKIP {t['suite']}/{t['name']}: {t['reason']}")
        fails = sorted((t for t in tests if t["status"] == "fail"), key=lambda t: (t["suite"], t["name"]))
        if fails:
            print(f"\nFailed ({len(fails)}):")
            for t in fails:
                print(f"  FAIL {t['suite']}/{t['name']} [{t['stage']}]: {t['reason']}")

    skip_reasons = Counter((t["suite"], t["reason"]) for t in tests if t["status"] == "skip")
    if skip_reasons:
        print("\nSkip reasons:")
        for (suite, reason), n in sorted(skip_reasons.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
            print(f"  {n:4d}  {suite}: {reason}")

    print("\nSummary (pass rate = passed / (passed + failed), i.e. over tests of supported operators and types):")
    print("  (tensor-typed rate = passed / cases whose values are all tensors, skipped or not)")
    print(f"  {'suite':<20} {'pass':>5} {'fail':>5} {'skip':>5} {'total':>6}  pass rate  tensor-typed rate")
    pct = lambda r: "n/a" if r is None else f"{100 * r:.1f}%"  # noqa: E731
    for suite in suites:
        s = summary.get(suite)
        if not s:
            continue
        print(f"  {suite:<20} {s['pass']:>5} {s['fail']:>5} {s['skip']:>5} {s['total']:>6}  {pct(s['pass_rate']):>9}"
              f"  {pct(s['tensor_pass_rate']):>6} of {s['tensor_typed']}")

    gate = {"suite": GATE_SUITE, "threshold": GATE_RATE, "applies": GATE_SUITE in summary}
    ok = True
    if gate["applies"]:
        rate = summary[GATE_SUITE]["pass_rate"] or 0.0
        gate["pass_rate"] = rate
        ok = rate >= GATE_RATE
        gate["passed"] = ok
        print(f"\nGate: {GATE_SUITE} pass rate {100 * rate:.1f}% {'>=' if ok else '<'} {100 * GATE_RATE:.0f}%"
              f" -> {'OK' if ok else 'FAILED'}")
    print(f"({time.time() - started:.1f} s)")

    if args.results:
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        doc = {"generated_by": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
               "data_root": root, "suite_dirs": {s: suite_dir(args, root, s) for s in suites},
               "summary": summary, "gate": gate, "tests": tests}
        with open(args.results, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"results: {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
