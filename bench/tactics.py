"""Which implementations an engine's layers run, from `kiln --exportLayerInfo --profilingVerbosity=detailed`.

The builder records each tuned layer's winner as its TacticName; the benchmark counts them by family so a table
row says, for example, how many attention layers took cuDNN's SDPA rather than Kiln's kernel.
"""
import json
import re

# Tactic name prefixes (see the CUDA backend's tactic lists) and the short labels the report uses.
FAMILIES = [
    ("cudnn_sdpa", "cuDNN SDPA"),
    ("cudnn_matmul_fused_", "cuDNN matmul"),
    ("cudnn_conv_graph_", "cuDNN conv graph"),
    ("cudnn_fwd_algo", "cuDNN legacy conv"),
    ("cudnn_bwd_data_algo", "cuDNN legacy conv"),
    ("lt_heur", "cuBLASLt"),
    ("kiln_attn_mma_", "Kiln attention"),
    ("kiln_depthwise_", "Kiln depthwise"),
    ("kiln_direct_conv_", "Kiln stem"),
]


def family(tactic):
    for prefix, label in FAMILIES:
        if tactic.startswith(prefix):
            return label
    return re.sub(r"_?\d+$", "", tactic) or "other"


def tactic_families(layer_info_text):
    """{family label: number of layers} of a detailed layer-info JSON text; {} where no layer records a tactic."""
    counts = {}
    for layer in json.loads(layer_info_text).get("Layers", []):
        if isinstance(layer, dict) and layer.get("TacticName"):
            label = family(layer["TacticName"])
            counts[label] = counts.get(label, 0) + 1
    return counts


def cudnn_note(counts):
    """The cuDNN graph-API families of `counts` as a short note ("cuDNN SDPA 12, cuDNN conv graph 16"), or ""."""
    graph = [(k, v) for k, v in sorted(counts.items()) if k.startswith("cuDNN") and "legacy" not in k]
    return ", ".join(f"{k} {v}" for k, v in graph)
