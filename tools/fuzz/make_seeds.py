#!/usr/bin/env python3
"""Writes the fuzz seed corpora: ONNX models (the small node-test models of libonnx-testdata plus structurally
broken variants made with the onnx library) under OUT/onnx. Engine seeds are built from the ONNX seeds by
`kiln_fuzz_replay onnx --save-engines OUT/engine OUT/onnx/good` (see README.md)."""
import argparse
import copy
import glob
import os
import random
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NODE_DATA = "/usr/share/libonnx-testdata/data/node"


def base_model():
    """x[1,3,4,4] -> Conv -> Relu -> Add(bias) -> y: small, with an initializer of each common kind."""
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((1, 2, 1, 1), np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "b"], ["y"], name="add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def if_model(then_nodes=None, cond_init=True):
    """y = If(cond) then x+1 else x*2, the branches capturing x from the outer graph."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    then_g = helper.make_graph(then_nodes or [helper.make_node("Add", ["x", "one"], ["t"], name="then_add")], "then",
                               [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])], [one])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["e"], name="else_mul")], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])], [two])
    inits = [helper.make_tensor("cond", TensorProto.BOOL, [], [True])] if cond_init else []
    g = helper.make_graph([helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def loop_model(body_nodes=None):
    """y = Loop(3) { acc = acc + x }."""
    body_in = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
               helper.make_tensor_value_info("c", TensorProto.BOOL, []),
               helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2])]
    body_out = [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])]
    nodes = body_nodes or [helper.make_node("Identity", ["c"], ["c_out"], name="body_cond"),
                           helper.make_node("Add", ["acc", "x"], ["acc_out"], name="body_add")]
    body = helper.make_graph(nodes, "body", body_in, body_out)
    inits = [helper.make_tensor("n", TensorProto.INT64, [], [3]), helper.make_tensor("t", TensorProto.BOOL, [], [True])]
    g = helper.make_graph([helper.make_node("Loop", ["n", "t", "x"], ["y"], name="loop", body=body)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def defects():
    """(name, model) pairs, each with one kind of structural defect."""
    out = []

    def variant(name, fn, make=base_model):
        m = make()
        fn(m)
        out.append((name, m))

    def set_dim(m, v):
        m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = v
    variant("neg_input_dim", lambda m: set_dim(m, -3))
    variant("huge_input_dim", lambda m: set_dim(m, 1 << 62))
    variant("zero_input_dim", lambda m: set_dim(m, 0))

    def init_dims(m, dims):
        del m.graph.initializer[0].dims[:]
        m.graph.initializer[0].dims.extend(dims)
    variant("init_neg_dims", lambda m: init_dims(m, [2, -3, 3, 3]))
    variant("init_huge_dims", lambda m: init_dims(m, [1 << 40, 1 << 30, 3, 3]))
    variant("init_overflow_dims", lambda m: init_dims(m, [1 << 62, 1 << 62, 4, 4]))
    variant("init_zero_dims", lambda m: init_dims(m, [2, 0, 3, 3]))

    def short_raw(m):
        t = m.graph.initializer[0]
        t.raw_data = t.raw_data[:10]
    variant("init_raw_short", short_raw)

    def no_data(m):
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
    variant("init_no_data", no_data)

    def float_data_short(m):
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.float_data.extend([1.0, 2.0])
    variant("init_float_data_short", float_data_short)

    def bad_dtype(m):
        m.graph.initializer[0].data_type = 99
    variant("init_bad_dtype", bad_dtype)
    variant("init_string_dtype", lambda m: setattr(m.graph.initializer[1], "data_type", TensorProto.STRING))

    def attr_type(m):
        conv = m.graph.node[0]
        del conv.attribute[:]
        conv.attribute.extend([helper.make_attribute("pads", "oops"), helper.make_attribute("strides", 1.5)])
    variant("attr_wrong_type", attr_type)

    def attr_negative(m):
        conv = m.graph.node[0]
        conv.attribute.extend([helper.make_attribute("strides", [0, -1]), helper.make_attribute("dilations", [1 << 40, 1])])
    variant("attr_bad_values", attr_negative)

    def attr_undefined(m):
        a = m.graph.node[0].attribute[0]
        a.type = onnx.AttributeProto.UNDEFINED
    variant("attr_undefined_type", attr_undefined)

    def cycle(m):
        m.graph.node[0].input[0] = "y"  # conv reads add's output
    variant("graph_cycle", cycle)

    def self_loop(m):
        m.graph.node[1].input[0] = "r"
    variant("graph_self_loop", self_loop)

    def dup_output(m):
        m.graph.node[1].output[0] = "c"
    variant("duplicate_value_name", dup_output)

    def dup_init(m):
        m.graph.initializer.append(copy.deepcopy(m.graph.initializer[0]))
    variant("duplicate_initializer", dup_init)

    def undefined_input(m):
        m.graph.node[2].input[1] = "nowhere"
    variant("undefined_input", undefined_input)

    def missing_output(m):
        m.graph.output[0].name = "not_produced"
    variant("missing_graph_output", missing_output)

    def empty_names(m):
        m.graph.node[1].input[0] = ""
    variant("empty_required_input", empty_names)

    variant("no_opset_import", lambda m: m.ClearField("opset_import"))
    variant("opset_huge", lambda m: setattr(m.opset_import[0], "version", 1 << 40))
    variant("opset_negative", lambda m: setattr(m.opset_import[0], "version", -5))
    variant("opset_zero", lambda m: setattr(m.opset_import[0], "version", 0))
    variant("opset_unknown_domain", lambda m: m.opset_import.append(helper.make_opsetid("com.nowhere", 3)))
    variant("ir_version_huge", lambda m: setattr(m, "ir_version", 1 << 40))

    def unknown_op(m):
        m.graph.node[1].op_type = "NoSuchOp"
    variant("unknown_op", unknown_op)

    def extra_inputs(m):
        m.graph.node[1].input.extend(["x", "x", "x"])
    variant("too_many_inputs", extra_inputs)

    def ext(location, offset=None, length=None):
        def fn(m):
            t = m.graph.initializer[0]
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            entries = [("location", location)]
            if offset is not None:
                entries.append(("offset", str(offset)))
            if length is not None:
                entries.append(("length", str(length)))
            for k, v in entries:
                e = t.external_data.add()
                e.key, e.value = k, v
        return fn
    variant("external_escape", ext("../../../../etc/passwd"))
    variant("external_absolute", ext("/etc/passwd"))
    variant("external_missing", ext("weights_not_there.bin"))
    variant("external_huge_offset", ext("weights_not_there.bin", offset=1 << 62, length=1 << 62))
    variant("external_bad_offset", ext("w.bin", offset="-1" if False else -1))
    variant("external_dir", ext("."))

    # Subgraphs with the same defects.
    out.append(("if_ok", if_model()))
    out.append(("if_undefined_input", if_model([helper.make_node("Add", ["x", "missing"], ["t"], name="then_add")])))
    out.append(("if_cycle", if_model([helper.make_node("Add", ["x", "t"], ["t"], name="then_add")])))
    out.append(("if_cond_missing", if_model(cond_init=False)))

    def if_branch_wrong_attr(m):
        m.graph.node[0].attribute[0].type = onnx.AttributeProto.INT
    variant("if_branch_not_graph", if_branch_wrong_attr, if_model)

    def if_branch_bad_init(m):
        m.graph.node[0].attribute[0].g.initializer[0].raw_data = b"\x01"
        m.graph.node[0].attribute[0].g.initializer[0].dims.extend([1 << 40])
    variant("if_branch_bad_initializer", if_branch_bad_init, if_model)

    def if_nested_ext(m):
        t = m.graph.node[0].attribute[0].g.initializer[0]
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", "../../secret.bin"
    variant("if_branch_external_escape", if_nested_ext, if_model)
    out.append(("loop_ok", loop_model()))
    out.append(("loop_undefined", loop_model([helper.make_node("Identity", ["c"], ["c_out"], name="body_cond"),
                                              helper.make_node("Add", ["acc", "ghost"], ["acc_out"], name="body_add")])))
    out.append(("loop_dup", loop_model([helper.make_node("Identity", ["c"], ["acc_out"], name="body_cond"),
                                        helper.make_node("Add", ["acc", "x"], ["acc_out"], name="body_add")])))

    def loop_body_inputs(m):
        del m.graph.node[0].attribute[0].g.input[:]
    variant("loop_body_no_inputs", loop_body_inputs, loop_model)

    def loop_huge_trip(m):
        m.graph.initializer[0].CopyFrom(helper.make_tensor("n", TensorProto.INT64, [], [1 << 62]))
    variant("loop_huge_trip_count", loop_huge_trip, loop_model)

    # Ops whose output size comes from data.
    cos = helper.make_graph([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")], "g", [],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                            [helper.make_tensor("s", TensorProto.INT64, [2], [1 << 31, 1 << 31])])
    out.append(("constant_of_shape_huge", helper.make_model(cos, opset_imports=[helper.make_opsetid("", 17)])))
    exp = helper.make_graph([helper.make_node("Expand", ["x", "s"], ["y"], name="expand")], "g",
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                            [helper.make_tensor("s", TensorProto.INT64, [3], [1 << 20, 1 << 20, 1 << 20])])
    out.append(("expand_huge", helper.make_model(exp, opset_imports=[helper.make_opsetid("", 17)])))
    rs = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")], "g",
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                           [helper.make_tensor("s", TensorProto.INT64, [3], [-1, -1, 0])])
    out.append(("reshape_two_minus_one", helper.make_model(rs, opset_imports=[helper.make_opsetid("", 17)])))
    return out


def attribute_mutants(model, rng, per_model):
    """Variants of one model aimed at libonnx's inference functions, which trust what a valid model holds: one
    attribute of one node changed in length, sign or type, one of a node's later inputs emptied (""), or a graph
    input's declared rank changed."""
    edits = []
    for ni, node in enumerate(model.graph.node):
        for ai, a in enumerate(node.attribute):
            if a.type == onnx.AttributeProto.INTS:
                edits += [(ni, ai, "drop"), (ni, ai, "extend"), (ni, ai, "negate"), (ni, ai, "zero"), (ni, ai, "empty"),
                          (ni, ai, "huge"), (ni, ai, "to_int")]
            elif a.type == onnx.AttributeProto.INT:
                edits += [(ni, ai, "negate"), (ni, ai, "zero"), (ni, ai, "huge"), (ni, ai, "to_ints"), (ni, ai, "to_float")]
            elif a.type in (onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING):
                edits += [(ni, ai, "to_int")]
            elif a.type == onnx.AttributeProto.TENSOR:
                edits += [(ni, ai, "tensor_rank"), (ni, ai, "tensor_empty")]
        for ii in range(1, len(node.input)):
            if node.input[ii]:
                edits.append((ni, ii, "empty_input"))
    inits = {t.name for t in model.graph.initializer}
    for gi, vi in enumerate(model.graph.input):
        if vi.name not in inits and vi.type.tensor_type.HasField("shape"):
            edits += [(-1, gi, "rank_drop"), (-1, gi, "rank_add"), (-1, gi, "rank_scalar")]
    rng.shuffle(edits)
    out = []
    for ni, k, what in edits[:per_model]:
        m = copy.deepcopy(model)
        if what.startswith("rank_"):
            # A graph input's declared rank changed (outputs lose their shapes so inference alone decides them):
            # inference functions that index dims without checking the rank read past the shape.
            shape = m.graph.input[k].type.tensor_type.shape
            if what == "rank_drop":
                del shape.dim[-1:]
            elif what == "rank_add":
                shape.dim.add().dim_value = 1
            else:
                shape.ClearField("dim")
            for o in m.graph.output:
                o.type.tensor_type.ClearField("shape")
            out.append((f"in{k}_{what}", m))
            continue
        node = m.graph.node[ni]
        if what == "empty_input":
            node.input[k] = ""
        else:
            a = node.attribute[k]
            if what == "drop":
                del a.ints[-1:]
            elif what == "extend":
                a.ints.append(a.ints[-1] if a.ints else 1)
            elif what == "negate":
                if a.type == onnx.AttributeProto.INTS:
                    a.ints[:] = [-v - 1 if v == 0 else -v for v in a.ints]
                else:
                    a.i = -a.i - 1 if a.i == 0 else -a.i
            elif what == "zero":
                if a.type == onnx.AttributeProto.INTS:
                    a.ints[:] = [0] * len(a.ints)
                else:
                    a.i = 0
            elif what == "empty":
                del a.ints[:]
            elif what == "huge":
                if a.type == onnx.AttributeProto.INTS:
                    a.ints[:] = [1 << 40] * max(1, len(a.ints))
                else:
                    a.i = 1 << 40
            elif what == "to_int":
                v = a.ints[0] if a.type == onnx.AttributeProto.INTS and a.ints else 1
                name = a.name
                a.Clear()
                a.name, a.type, a.i = name, onnx.AttributeProto.INT, v
            elif what == "to_ints":
                v = a.i
                name = a.name
                a.Clear()
                a.name, a.type = name, onnx.AttributeProto.INTS
                a.ints[:] = [v, v]
            elif what == "to_float":
                v = a.i
                name = a.name
                a.Clear()
                a.name, a.type, a.f = name, onnx.AttributeProto.FLOAT, float(v) + 0.5
            elif what == "tensor_rank":
                a.t.dims.append(1)
            elif what == "tensor_empty":
                a.t.ClearField("raw_data")
                for f in ("float_data", "int32_data", "int64_data", "double_data", "string_data"):
                    a.t.ClearField(f)
        out.append((f"n{ni}_{k}_{what}", m))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-node-models", type=int, default=2000)
    ap.add_argument("--max-bytes", type=int, default=64 << 10, help="skip node-test models larger than this")
    ap.add_argument("--attr-mutants", type=int, default=0,
                    help="also write up to this many attribute/optional-input mutants of each node-test model "
                         "(OUT/onnx/mutants), aimed at libonnx's shape inference")
    args = ap.parse_args()
    good = os.path.join(args.out, "onnx", "good")
    bad = os.path.join(args.out, "onnx", "defects")
    os.makedirs(good, exist_ok=True)
    os.makedirs(bad, exist_ok=True)
    models = sorted(glob.glob(os.path.join(NODE_DATA, "*", "model.onnx")))
    random.Random(0).shuffle(models)
    n = 0
    for path in models:
        if n >= args.max_node_models or os.path.getsize(path) > args.max_bytes:
            continue
        shutil.copy(path, os.path.join(good, os.path.basename(os.path.dirname(path)) + ".onnx"))
        n += 1
    onnx.save(base_model(), os.path.join(good, "kiln_conv_relu_add.onnx"))
    for name, m in defects():
        with open(os.path.join(bad, name + ".onnx"), "wb") as f:
            f.write(m.SerializeToString())
    n_mut = 0
    if args.attr_mutants > 0:
        mut = os.path.join(args.out, "onnx", "mutants")
        os.makedirs(mut, exist_ok=True)
        rng = random.Random(1)
        for path in sorted(glob.glob(os.path.join(good, "*.onnx"))):
            model = onnx.load(path)
            for name, m in attribute_mutants(model, rng, args.attr_mutants):
                with open(os.path.join(mut, os.path.basename(path)[:-5] + "." + name + ".onnx"), "wb") as f:
                    f.write(m.SerializeToString())
                n_mut += 1
    print(f"{n} node-test models, {len(defects())} defect models, {n_mut} mutants under {args.out}/onnx")


if __name__ == "__main__":
    main()
