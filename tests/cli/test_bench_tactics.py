"""bench/tactics.py: counting an engine's recorded tactics by family from kiln's detailed layer info."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import tactics  # noqa: E402

KILN = os.path.join(os.environ.get("KILN_BUILD", "build"), "bin", "kiln")


def test_families_of_recorded_tactics():
    info = {"Layers": [
        {"Name": "attn0", "TacticName": "cudnn_sdpa"},
        {"Name": "attn1", "TacticName": "kiln_attn_mma_w4"},
        {"Name": "ffn1", "TacticName": "cudnn_matmul_fused_2"},
        {"Name": "ffn2", "TacticName": "lt_heur5"},
        {"Name": "conv", "TacticName": "cudnn_conv_graph_0"},
        {"Name": "conv2", "TacticName": "cudnn_fwd_algo1_tc"},
        {"Name": "dw", "TacticName": "kiln_depthwise_nhwc_tiled"},
        {"Name": "odd", "TacticName": "something_new_3"},
        {"Name": "untuned"},
        "a name-only entry",
    ]}
    counts = tactics.tactic_families(json.dumps(info))
    assert counts == {"cuDNN SDPA": 1, "Kiln attention": 1, "cuDNN matmul": 1, "cuBLASLt": 1, "cuDNN conv graph": 1,
                      "cuDNN legacy conv": 1, "Kiln depthwise": 1, "something_new": 1}
    assert tactics.cudnn_note(counts) == "cuDNN SDPA 1, cuDNN conv graph 1, cuDNN matmul 1"
    assert tactics.cudnn_note({"cuBLASLt": 3}) == ""


def test_cpu_engine_records_no_tactics(tmp_path):
    # A real engine's detailed layer info (CPU backend: nothing is tuned, so no layer carries a tactic).
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    info = tmp_path / "layers.json"
    subprocess.run([KILN, f"--onnx={model}", "--device=cpu", "--skipInference", f"--exportLayerInfo={info}",
                    "--profilingVerbosity=detailed"], check=True, capture_output=True)
    layers = json.loads(info.read_text())["Layers"]
    assert [l["Name"] for l in layers] == ["mm"]
    assert tactics.tactic_families(info.read_text()) == {}
