#!/usr/bin/env python3
"""Writes the node test cases of the installed onnx package (onnx.backend.test.case.node) to disk in the backend-test layout (model.onnx + test_data_set_0/{input,output}_N.pb)."""
import argparse
import os
import shutil
import sys
import warnings

# The onnx package Kiln tests against is the newest from PyPI, installed in a virtual environment, not the system's
# Debian copy; run this script with that environment's interpreter.
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node as node_cases

STAMP = "ONNX_VERSION"


def serialize_value(value, value_info):
    """One input or output of a test case as the TensorProto/SequenceProto/... bytes the runners read."""
    t = value_info.type
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, value_info.name).SerializeToString()
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, value_info.name).SerializeToString()
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, value_info.name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, value_info.name).SerializeToString()


def write_case(case, out_dir):
    case_dir = os.path.join(out_dir, case.name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    graph = case.model.graph
    for i, (inputs, outputs) in enumerate(case.data_sets):
        ds = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(ds, exist_ok=True)
        for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
            for j, value in enumerate(values):
                with open(os.path.join(ds, f"{kind}_{j}.pb"), "wb") as f:
                    f.write(serialize_value(value, infos[j]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="directory to hold <out>/node/<test name>/")
    ap.add_argument("--force", action="store_true", help="rewrite even if the stamp matches the installed onnx")
    args = ap.parse_args(argv)

    node_dir = os.path.join(args.out, "node")
    stamp = os.path.join(args.out, STAMP)
    # Writing ~1,600 cases takes a while; the stamp makes repeated `make test-node` runs free.
    if not args.force and os.path.isfile(stamp) and open(stamp).read().strip() == onnx.__version__:
        print(f"onnx {onnx.__version__} node tests already written under {node_dir}")
        return 0
    if os.path.isdir(node_dir):
        shutil.rmtree(node_dir)
    os.makedirs(node_dir)

    with warnings.catch_warnings():  # the case generators divide by zero on purpose (inf/nan expectations)
        warnings.simplefilter("ignore", RuntimeWarning)
        cases = node_cases.collect_testcases()
    failed = []
    for case in cases:
        try:
            write_case(case, node_dir)
        except Exception as e:  # one unserializable case (exotic type) must not cost the whole suite
            failed.append((case.name, f"{type(e).__name__}: {e}"))
            shutil.rmtree(os.path.join(node_dir, case.name), ignore_errors=True)
    with open(stamp, "w") as f:
        f.write(onnx.__version__ + "\n")
    print(f"wrote {len(cases) - len(failed)} node tests of onnx {onnx.__version__} "
          f"(opsets up to {onnx.defs.onnx_opset_version()}) to {node_dir}")
    for name, why in failed:
        print(f"  not written: {name}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
