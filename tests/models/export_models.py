#!/usr/bin/env python3
"""Exports the model-test zoo (torchvision CNNs/ViT, a BERT-style encoder, a GPT-style decoder) to ONNX with PyTorch reference outputs."""
import argparse
import inspect
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

OPSETS = (13, 17)
REF_BATCH = 2  # > 1 and different from any export-time default, so the dynamic batch dim is exercised
SEED = 0


class BertEncoder(nn.Module):
    """Token + learned position embeddings, post-LN TransformerEncoder with GELU, final LayerNorm."""

    def __init__(self, vocab, max_len, d_model, heads, layers, ffn):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.emb_norm = nn.LayerNorm(d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        # TransformerEncoder deep-copies one layer, so every layer would start with the same weights (and the
        # exporter would then share the initializers); give each its own, as a trained model has.
        for m in self.encoder.modules():
            if isinstance(m, nn.MultiheadAttention):
                m._reset_parameters()
            elif isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.emb_norm(self.tok(ids) + self.pos(positions))
        return self.norm(self.encoder(x))


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        hd = c // self.heads
        q = q.reshape(b, t, self.heads, hd).transpose(1, 2)
        k = k.reshape(b, t, self.heads, hd).transpose(1, 2)
        v = v.reshape(b, t, self.heads, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(hd)
        # Built from Range/comparison rather than triu so the mask exists at opset 13 too (Trilu is opset 14).
        pos = torch.arange(t, device=x.device)
        future = pos.unsqueeze(0) > pos.unsqueeze(1)
        scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
        y = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class GptBlock(nn.Module):
    def __init__(self, d_model, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GptDecoder(nn.Module):
    def __init__(self, vocab, max_len, d_model, heads, layers):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(GptBlock(d_model, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.tok(ids) + self.pos(positions)
        for blk in self.blocks:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


class UNetStage(torch.nn.Module):
    """A Stable-Diffusion-like UNet stage without attention (for fuse_groupnorm and the layout choice): conv_in
    4 -> c, two GroupNorm(32)-SiLU-Conv3x3 residual blocks, a stride-2 downsample, two more blocks at half the size,
    conv_out c -> 4. Every GroupNorm sits between convolutions, as in diffusers' ResnetBlock2D."""

    class Block(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1 = torch.nn.GroupNorm(32, c), torch.nn.Conv2d(c, c, 3, padding=1)
            self.n2, self.c2 = torch.nn.GroupNorm(32, c), torch.nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            h = self.c1(torch.nn.functional.silu(self.n1(x)))
            return x + self.c2(torch.nn.functional.silu(self.n2(h)))

    def __init__(self, c=320):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(4, c, 3, padding=1)
        self.blocks = torch.nn.Sequential(self.Block(c), self.Block(c), torch.nn.Conv2d(c, c, 3, stride=2, padding=1),
                                          self.Block(c), self.Block(c))
        self.norm_out, self.conv_out = torch.nn.GroupNorm(32, c), torch.nn.Conv2d(c, 4, 3, padding=1)

    def forward(self, x):
        return self.conv_out(torch.nn.functional.silu(self.norm_out(self.blocks(self.conv_in(x)))))


def _latent(batch):
    return torch.randn(batch, 4, 64, 64)


def _tv(name, **kw):
    import torchvision.models as tvm
    return getattr(tvm, name)(weights=None, **kw)


def _vit_ci():
    from torchvision.models.vision_transformer import VisionTransformer
    return VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768)


def _image(batch):
    return torch.randn(batch, 3, 224, 224)


def _tokens(vocab, seq):
    return lambda batch: torch.randint(0, vocab, (batch, seq), dtype=torch.int64)


# name -> (constructor, input maker, description). Full-size and CI variants have distinct names so both can
# live in one models/ directory without one masking the other.
ZOO = {
    "resnet50": (lambda: _tv("resnet50"), _image, "torchvision resnet50"),
    "mobilenet_v2": (lambda: _tv("mobilenet_v2"), _image, "torchvision mobilenet_v2"),
    "efficientnet_b0": (lambda: _tv("efficientnet_b0"), _image, "torchvision efficientnet_b0"),
    "vit_b_16": (lambda: _tv("vit_b_16"), _image, "torchvision vit_b_16"),
    "vit_ci": (_vit_ci, _image, "VisionTransformer 224/16, 2 layers, hidden 192, 3 heads (head dim 64, as vit_b_16)"),
    "bert_base": (lambda: BertEncoder(30522, 512, 768, 12, 12, 3072), _tokens(30522, 128),
                  "BERT-base-like encoder, 12 layers, d 768, 12 heads, seq 128"),
    "bert_ci": (lambda: BertEncoder(1000, 64, 128, 4, 2, 512), _tokens(1000, 32),
                "BERT-style encoder, 2 layers, d 128, 4 heads, seq 32"),
    "gpt2_base": (lambda: GptDecoder(50257, 1024, 768, 12, 12), _tokens(50257, 128),
                  "GPT-2-small-like decoder, 12 layers, d 768, 12 heads, seq 128"),
    "gpt_ci": (lambda: GptDecoder(1000, 64, 128, 4, 2), _tokens(1000, 32),
               "GPT-style decoder, 2 layers, d 128, 4 heads, seq 32"),
    "unet_stage": (UNetStage, _latent, "SD-like UNet stage without attention, 320 channels, 64x64 latent, "
                   "9 GroupNorms (not in FULL_MODELS: `--models unet_stage`)"),
}
CI_MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "vit_ci", "bert_ci", "gpt_ci"]
FULL_MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "bert_base", "gpt2_base"]


def make_informative(model, make_input):
    """Makes a randomly initialized model produce outputs of a useful magnitude, so that the comparison means something.

    torchvision zero-initializes ViT's head, and its fan-out init of depthwise convolutions shrinks activations
    layer by layer, so the untrained mobilenet_v2/efficientnet_b0 emit ~1e-9 logits. Zero weight matrices get a small
    random init, and BatchNorm statistics are estimated from random inputs (data-dependent init), which restores
    unit-scale activations while keeping every layer's arithmetic exercised.
    """
    with torch.no_grad():
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor) and w.dim() >= 2 and not w.any():
                w.normal_(0.0, 0.02)
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bns:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the calibration batches
            model.train()
            for _ in range(2):
                model(make_input(8))
    return model.eval()


def max_exporter_opset():
    try:
        from torch.onnx import _constants
        return int(getattr(_constants, "ONNX_MAX_OPSET", getattr(_constants, "onnx_main_opset", 13)))
    except Exception:
        return 13


def model_dir(root, name, opset):
    return os.path.join(root, f"{name}_op{opset}")


def _save_array(path_stem, arr):
    np.save(path_stem + ".npy", arr)
    np.ascontiguousarray(arr).tofile(path_stem + ".bin")


def export_one(name, opset, root):
    """Exports ZOO[name] at `opset` into models/<name>_op<opset>/ and returns its meta dict."""
    ctor, make_input, desc = ZOO[name]
    torch.manual_seed(SEED)
    model = make_informative(ctor(), make_input)
    torch.manual_seed(SEED + 1)
    x = make_input(REF_BATCH)
    out_dir = model_dir(root, name, opset)
    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, "model.onnx")

    # The reference runs with autograd on (as the export trace does) so PyTorch takes the same,
    # non-fused transformer path that gets exported.
    with torch.inference_mode(False):
        ref = model(x).detach().numpy()

    export_opset, note = opset, ""
    if opset > max_exporter_opset():
        export_opset = max_exporter_opset()
        note = f"torch {torch.__version__} exports up to opset {export_opset}; upgraded to {opset} with onnx.version_converter"
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Newer PyTorch defaults to the dynamo exporter; the TorchScript one keeps exports alike across versions.
        extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(model, (x,), onnx_path, opset_version=export_opset, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True, **extra)
    import onnx
    if export_opset != opset:
        from onnx import version_converter
        m = version_converter.convert_version(onnx.load(onnx_path), opset)
        onnx.save(m, onnx_path)
    onnx.checker.check_model(onnx_path)

    xin = x.numpy()
    _save_array(os.path.join(out_dir, "input"), xin)
    _save_array(os.path.join(out_dir, "output"), ref)
    meta = {
        "name": name, "description": desc, "opset": opset, "exported_opset": export_opset, "note": note,
        "torch": torch.__version__, "seed": SEED,
        "inputs": [{"name": "input", "dtype": str(xin.dtype), "shape": list(xin.shape), "file": "input.bin",
                    "dynamic_axes": {"0": "batch"}}],
        "outputs": [{"name": "output", "dtype": str(ref.dtype), "shape": list(ref.shape), "file": "output.bin"}],
        "export_seconds": round(time.time() - t0, 2),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def is_exported(root, name, opset):
    d = model_dir(root, name, opset)
    return all(os.path.exists(os.path.join(d, f)) for f in ("model.onnx", "input.bin", "output.bin", "meta.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="models", help="output root (default: models/, git-ignored)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--ci", action="store_true", help="small transformer variants (resnet50 stays full size)")
    g.add_argument("--full", action="store_true", help="full-size models (default)")
    ap.add_argument("--models", nargs="*", help=f"subset of: {', '.join(ZOO)}")
    ap.add_argument("--opsets", type=int, nargs="*", default=list(OPSETS))
    ap.add_argument("--force", action="store_true", help="re-export even when the files exist")
    args = ap.parse_args(argv)
    names = args.models or (CI_MODELS if args.ci else FULL_MODELS)
    print(f"torch {torch.__version__}: exporter supports opsets up to {max_exporter_opset()}")
    for name in names:
        for opset in args.opsets:
            if not args.force and is_exported(args.out, name, opset):
                print(f"  {name}_op{opset}: exists")
                continue
            meta = export_one(name, opset, args.out)
            extra = f" ({meta['note']})" if meta["note"] else ""
            print(f"  {name}_op{opset}: input {meta['inputs'][0]['shape']} -> output {meta['outputs'][0]['shape']}"
                  f" in {meta['export_seconds']} s{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
