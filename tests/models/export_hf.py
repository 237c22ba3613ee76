#!/usr/bin/env python3
"""Exports tiny random-weight Hugging Face models (built from configs: nothing is downloaded) to ONNX the way users
do (TorchScript exporter, opset 17, dynamic batch, constant folding), with PyTorch reference outputs, in the layout
export_models.py writes (model.onnx, input.bin/.npy, output.bin/.npy, meta.json; extra inputs as <name>.bin/.npy).

Needs transformers (not a Kiln dependency): `make test-hf` puts it on PYTHONPATH. Each model's attention keeps the
implementation transformers picks by default for the installed torch (eager on torch 1.13, SDPA where torch has it),
since that is the graph a user's export contains; meta.json records which one it was."""
import argparse
import contextlib
import inspect
import json
import os
import sys
import time
import warnings
from functools import partial

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_models import REF_BATCH, SEED, _save_array, max_exporter_opset, model_dir  # noqa: E402

OPSET = 17
VOCAB, SEQ, D, HEADS, LAYERS, FFN = 1000, 32, 128, 4, 2, 512  # head dim 32: one the CUDA attention fusion takes


def _text_inputs(batch):
    """Token ids and a padding mask of ones with the last positions of every other row zeroed (the form a padded
    batch has); rows that are all padding never occur."""
    ids = torch.randint(5, VOCAB, (batch, SEQ), dtype=torch.int64)
    mask = torch.ones(batch, SEQ, dtype=torch.int64)
    for b in range(1, batch, 2):
        mask[b, SEQ - 5 - b:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _image_inputs(batch):
    return {"pixel_values": torch.randn(batch, 3, 64, 64)}


# The sizes under BertConfig's names, which the ViT, DeiT, BEiT, CLIP and Llama-family configs use too.
SIZES = dict(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN)
KV_HEADS = 2  # grouped-query families: 4 query heads share 2 K/V heads (group 2); head dim 32 as above


def _encoder(family, **config):
    """transformers' <family>Model without its pooling layer, on a <family>Config of SIZES and `config` (BERT,
    RoBERTa, ViT, DeiT, BEiT)."""
    import transformers
    cfg = getattr(transformers, family + "Config")(**SIZES, **config)
    return getattr(transformers, family + "Model")(cfg, add_pooling_layer=False)


def _decoder(family, kv_heads=HEADS, **config):
    """A Llama-style decoder stack, transformers' <family>Model (no cache) on a <family>Config of SIZES, `kv_heads`
    K/V heads (HF's repeat_kv before the attention where fewer than HEADS) and `config` (Llama, Gemma, Qwen2,
    Mistral)."""
    import transformers
    cfg = getattr(transformers, family + "Config")(vocab_size=VOCAB, num_key_value_heads=kv_heads,
                                                   max_position_embeddings=64, use_cache=False, **SIZES, **config)
    return getattr(transformers, family + "Model")(cfg)


def _distilbert():
    from transformers import DistilBertConfig, DistilBertModel
    return DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=D, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                                            max_position_embeddings=64))


def _gpt2():
    from transformers import GPT2Config, GPT2Model
    return GPT2Model(GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=LAYERS, n_head=HEADS, n_positions=64,
                                bos_token_id=0, eos_token_id=0, use_cache=False))  # token ids inside the vocab


def _t5():
    # gated-gelu: T5 v1.1 / Flan-T5's feed-forward (tanh GELU); T5LayerNorm is an RMSNorm without bias.
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(vocab_size=VOCAB, d_model=D, d_kv=D // HEADS, d_ff=FFN, num_layers=LAYERS,
                                   num_heads=HEADS, feed_forward_proj="gated-gelu", use_cache=False))


def _clip_text():
    # CLIP's text tower: causal mask combined with the padding mask; quick_gelu x * sigmoid(1.702 x).
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=SEQ, hidden_act="quick_gelu",
                                        **SIZES))


def _clip_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModel
    return CLIPVisionModel(CLIPVisionConfig(image_size=64, patch_size=16, hidden_act="quick_gelu", **SIZES))


def _whisper_enc():
    # The encoder alone: Conv1d + GELU stem (two convs, the second of stride 2), sinusoidal positions, no mask.
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    return WhisperEncoder(WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=D, encoder_layers=LAYERS,
                                        encoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_layers=1,
                                        decoder_attention_heads=HEADS, decoder_ffn_dim=FFN,
                                        max_source_positions=SEQ // 2))


def _audio_inputs(batch):
    # Whisper's encoder needs exactly 2 * max_source_positions mel frames.
    return {"input_features": torch.randn(batch, 16, SEQ)}


def _convnext():
    from transformers import ConvNextConfig, ConvNextModel
    return ConvNextModel(ConvNextConfig(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[32, 64],
                                        depths=[2, 2], image_size=64))


def _swin():
    # Window 4 on a 16x16 patch grid (64 / 4): shifted windows in the second block of each stage; head dim 32.
    from transformers import SwinConfig, SwinModel
    return SwinModel(SwinConfig(image_size=64, patch_size=4, embed_dim=64, depths=[2, 2], num_heads=[2, 4],
                                window_size=4), add_pooling_layer=False)


# name -> (constructor, input maker, description). Head dims 32 throughout (one the CUDA attention fusion takes).
HF_MODELS = {
    "hf_bert": (partial(_encoder, "Bert", vocab_size=VOCAB, max_position_embeddings=64), _text_inputs,
                "BertModel, 2 layers, d 128, 4 heads (head dim 32), seq 32, padding mask"),
    "hf_roberta": (partial(_encoder, "Roberta", vocab_size=VOCAB, max_position_embeddings=66), _text_inputs,
                   "RobertaModel, 2 layers, d 128, 4 heads, seq 32, padding mask"),
    "hf_distilbert": (_distilbert, _text_inputs, "DistilBertModel, 2 layers, d 128, 4 heads, seq 32, padding mask"),
    "hf_gpt2": (_gpt2, _text_inputs, "GPT2Model (no cache), 2 layers, d 128, 4 heads, seq 32, padding mask"),
    "hf_vit": (partial(_encoder, "ViT", image_size=64, patch_size=16), _image_inputs,
               "ViTModel 64/16, 2 layers, d 128, 4 heads (17 tokens)"),
    "hf_t5enc": (_t5, _text_inputs, "T5EncoderModel (gated-gelu), 2 layers, d 128, 4 heads, seq 32, padding mask"),
    "hf_llama": (partial(_decoder, "Llama"), _text_inputs,
                 "LlamaModel (no cache), 2 layers, d 128, 4 heads, seq 32, padding mask"),
    # Grouped-query attention: K/V with fewer heads than Q.
    "hf_llama_gqa": (partial(_decoder, "Llama", KV_HEADS), _text_inputs,
                     "LlamaModel (no cache), 2 layers, d 128, 4 heads / 2 kv heads, seq 32, padding mask"),
    "hf_qwen2_gqa": (partial(_decoder, "Qwen2", KV_HEADS), _text_inputs,
                     "Qwen2Model (no cache), 2 layers, d 128, 4 heads / 2 kv heads (qkv bias), seq 32, padding mask"),
    "hf_mistral_mqa": (partial(_decoder, "Mistral", 1, sliding_window=None), _text_inputs,
                       "MistralModel (no cache), 2 layers, d 128, 4 heads / 1 kv head (multi-query), seq 32, "
                       "padding mask"),
    # GemmaRMSNorm is x * (1 + w); gelu_pytorch_tanh is GELU's tanh approximation; head_dim from the config. K/V heads
    # as many as Q's: grouped-query attention is not involved.
    "hf_gemma": (partial(_decoder, "Gemma", head_dim=D // HEADS, hidden_activation="gelu_pytorch_tanh"), _text_inputs,
                 "GemmaModel (no cache), 2 layers, d 128, 4 heads (head dim 32), seq 32, padding mask"),
    "hf_cliptext": (_clip_text, _text_inputs, "CLIPTextModel, 2 layers, d 128, 4 heads, seq 32, causal + padding"),
    "hf_clipvis": (_clip_vision, _image_inputs, "CLIPVisionModel 64/16, 2 layers, d 128, 4 heads (17 tokens)"),
    "hf_whisperenc": (_whisper_enc, _audio_inputs, "WhisperEncoder, 16 mels x 32 frames, 2 layers, d 128, 4 heads"),
    "hf_convnext": (_convnext, _image_inputs, "ConvNextModel 64x64, 2 stages (32, 64 channels), depths 2, 2"),
    "hf_swin": (_swin, _image_inputs, "SwinModel 64/4, window 4, depths 2, 2, embed 64, heads 2, 4 (head dim 32)"),
    "hf_deit": (partial(_encoder, "DeiT", image_size=64, patch_size=16), _image_inputs,
                "DeiTModel 64/16, 2 layers, d 128, 4 heads (18 tokens: cls + distillation)"),
    # Relative position bias shared by the layers' attention (added to the scores), layer scale, mean pooling off.
    "hf_beit": (partial(_encoder, "Beit", image_size=64, patch_size=16, use_relative_position_bias=True,
                        layer_scale_init_value=0.1), _image_inputs,
                "BeitModel 64/16, 2 layers, d 128, 4 heads, relative position bias, layer scale"),
}


class LastHidden(nn.Module):
    """The model's last_hidden_state as the one output, inputs passed by keyword in a fixed order."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)))  # a ModelOutput by default (config.return_dict)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def build(name):
    """The wrapped model and its reference inputs (seeded like export_models.py)."""
    ctor, make_inputs, _ = HF_MODELS[name]
    torch.manual_seed(SEED)
    model = ctor().eval()
    torch.manual_seed(SEED + 1)
    inputs = make_inputs(REF_BATCH)
    return LastHidden(model, list(inputs)).eval(), inputs


def export_one(name, root, opset=OPSET, dynamic_seq=False):
    """Exports HF_MODELS[name] into <root>/<name>_op<opset>/ (with dynamic_seq: <name>_dynseq_op<opset>/, the
    sequence axis of text inputs and of the output dynamic too, as users export decoders) and returns its meta."""
    import transformers
    _, make_inputs, desc = HF_MODELS[name]
    model, inputs = build(name)
    names, xs = list(inputs), tuple(inputs.values())
    seq_axis = dynamic_seq and make_inputs is _text_inputs
    out_dir = model_dir(root, name + ("_dynseq" if seq_axis else ""), opset)
    os.makedirs(out_dir, exist_ok=True)
    onnx_path = os.path.join(out_dir, "model.onnx")
    with torch.no_grad():
        ref = model(*xs).detach().numpy()
    export_opset = min(opset, max_exporter_opset())
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        axes = {n: ({0: "batch", 1: "seq"} if seq_axis else {0: "batch"}) for n in names + ["output"]}
        torch.onnx.export(model, xs, onnx_path, opset_version=export_opset, input_names=names,
                          output_names=["output"], dynamic_axes=axes, do_constant_folding=True, **extra)
    import onnx
    if export_opset != opset:
        from onnx import version_converter
        onnx.save(version_converter.convert_version(onnx.load(onnx_path), opset), onnx_path)
    onnx.checker.check_model(onnx_path)

    metas_in = []
    for i, (n, x) in enumerate(inputs.items()):
        stem = "input" if i == 0 else n  # the first input where export_models.py's readers look for it
        a = x.numpy()
        _save_array(os.path.join(out_dir, stem), a)
        metas_in.append({"name": n, "dtype": str(a.dtype), "shape": list(a.shape), "file": stem + ".bin",
                         "dynamic_axes": {"0": "batch", "1": "seq"} if seq_axis else {"0": "batch"}})
    _save_array(os.path.join(out_dir, "output"), ref)
    meta = {
        "name": name, "description": desc, "opset": opset, "exported_opset": export_opset, "note": "",
        "torch": torch.__version__, "transformers": transformers.__version__, "seed": SEED,
        "attn_implementation": getattr(model.model.config, "_attn_implementation", "eager"),
        "inputs": metas_in,
        "outputs": [{"name": "output", "dtype": str(ref.dtype), "shape": list(ref.shape), "file": "output.bin"}],
        "export_seconds": round(time.time() - t0, 2),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="models", help="output root (default: models/, git-ignored)")
    ap.add_argument("--models", nargs="*", default=list(HF_MODELS), help=f"subset of: {', '.join(HF_MODELS)}")
    ap.add_argument("--list-dirs", action="store_true", help="print the exported directories, ':'-separated")
    ap.add_argument("--keep-going", action="store_true", help="report a model that fails to export and go on")
    ap.add_argument("--dynamic-seq", action="store_true",
                    help="export the text families with a dynamic sequence axis too, into <name>_dynseq_op<opset>/ "
                         "(the other families are skipped)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs only; never reach for the hub
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", file=sys.stderr)
    done, failed = [], []
    for name in args.models:
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries only --list-dirs' line
                if args.dynamic_seq and HF_MODELS[name][1] is not _text_inputs:
                    continue
                meta = export_one(name, args.out, dynamic_seq=args.dynamic_seq)
        except Exception as e:  # an architecture this torch cannot export is reported, not fatal, with --keep-going
            if not args.keep_going:
                raise
            failed.append(name)
            print(f"  {name}: export FAILED: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
            continue
        done.append(model_dir(args.out, name + ("_dynseq" if args.dynamic_seq else ""), OPSET))
        shapes = ", ".join(f"{i['name']} {i['shape']}" for i in meta["inputs"])
        print(f"  {name}: {shapes} -> {meta['outputs'][0]['shape']} ({meta['attn_implementation']} attention) in "
              f"{meta['export_seconds']} s", file=sys.stderr, flush=True)
    if args.list_dirs:
        print(":".join(done))
    return 1 if failed and not done else 0


if __name__ == "__main__":
    sys.exit(main())
