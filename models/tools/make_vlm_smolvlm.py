#!/usr/bin/env python3
"""Random-weight SmolVLM (Idefics3) models in the onnx-community / transformers.js layout, with references.

    /opt/vlmvenv/bin/python models/tools/make_vlm_smolvlm.py --tiny     # -> tests/fixtures/vlm/smolvlm-tiny/
    /opt/vlmvenv/bin/python models/tools/make_vlm_smolvlm.py --full     # -> /work/scratch-smolvlm/smolvlm-256m-random/

(run from the repository root; venv: models/tools/requirements-vlm.txt). Offline: transformers builds
`Idefics3ForConditionalGeneration` from a config, no hub access.

What it writes (the layout of https://huggingface.co/onnx-community/SmolVLM-256M-Instruct):
  config.json, preprocessor_config.json, processor_config.json, tokenizer.json, tokenizer_config.json,
  chat_template.json, generation_config.json
  onnx/vision_encoder.onnx   pixel_values f32 [B,N,3,512,512], pixel_attention_mask bool [B,N,512,512]
                             -> image_features f32 [N_real,64,H]
  onnx/embed_tokens.onnx     input_ids i64 [B,S] -> inputs_embeds f32 [B,S,H]
  onnx/decoder_model_merged.onnx
                             inputs_embeds [B,S,H], attention_mask i64 [B,P+S], position_ids i64 [B,S],
                             past_key_values.{i}.{key,value} [B,KV,P,D]
                             -> logits [B,S,V], present.{i}.{key,value} [B,KV,P+S,D]   (no `If`)
  onnx/*_int8.onnx, onnx/*_uint8.onnx   onnxruntime quantize_dynamic (QInt8 / QUInt8 weights), the way
                             transformers.js' scripts/quantize.py makes `_int8` / `_uint8`
  onnx/*_q4.onnx (tiny only)  small graphs with the com.microsoft operators of the published `_q4` files
                             (MatMulNBits, GatherBlockQuantized), to test that lookout refuses them
  reference/                 what transformers (fp32) and onnxruntime (int8) compute on reference/image.png:
                             reference.json (ids, tokens, shapes, stats) + raw little-endian f32 arrays *.f32

The tokenizer is a real byte-level BPE (tokenizers' trainer on the pinned transformers sources, so it is
reproducible) with SmolVLM's special-token layout: <|endoftext|>=0, <|im_start|>=1, <|im_end|>=2, then after
the BPE vocabulary (size BASE) <global-img>=BASE, <row_r_col_c> (36), <fake_token_around_image>=BASE+37,
<image>=BASE+38, <unused*>, <end_of_utterance>=BASE+127. With BASE=49152 (--full) the ids are SmolVLM-256M's
(image 49190, end of utterance 49279, vocab 49280).

Random weights make near-flat logits; greedy decoding is only a fair test if the top-1 token wins by a clear
margin at every step, so the script draws weights at a larger scale and tries seeds until the smallest
top-1/top-2 logit gap over the reference run is >= MIN_MARGIN (recorded in reference.json).
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from PIL import Image

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (DynamicCache, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor,
                          PreTrainedTokenizerFast)
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPSET = 17
MIN_MARGIN = 0.02
torch.set_num_threads(1)

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

SIZES = {
    # Real SmolVLM-256M-Instruct numbers (issue 5).
    "full": dict(base_vocab=49152, text=dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                              num_key_value_heads=3, head_dim=64, intermediate_size=1536),
                 vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
                 max_new_tokens=16, seeds=range(1)),
    # Same structure (3 kv heads, GQA 3:1, 512 px, patch 16, scale factor 4 -> 64 image tokens), small widths.
    "tiny": dict(base_vocab=384, text=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                                           num_key_value_heads=3, head_dim=8, intermediate_size=96),
                 vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                 max_new_tokens=12, seeds=range(40)),
}

PROMPT = "Describe this image."


# ----------------------------------------------------------------------------------------------- tokenizer
def corpus_files():
    """The pinned transformers' own Python sources: a deterministic, offline training corpus."""
    base = os.path.dirname(transformers.__file__)
    files = sorted(glob.glob(os.path.join(base, "**", "*.py"), recursive=True))
    return files


def special_layout(base):
    added = {base: "<global-img>"}
    k = base + 1
    for r in range(1, 7):
        for c in range(1, 7):
            added[k] = f"<row_{r}_col_{c}>"
            k += 1
    added[base + 37] = "<fake_token_around_image>"
    added[base + 38] = "<image>"
    for i, tid in enumerate(range(base + 39, base + 127)):
        added[tid] = f"<unused{i}>"
    added[base + 127] = "<end_of_utterance>"
    return added


def build_tokenizer(base_vocab):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab, min_frequency=2, show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    files = corpus_files()
    if base_vocab < 2000:
        files = [f for f in files if "/models/llama/" in f or "/models/idefics3/" in f]
    tok.train(files, trainer)
    got = tok.get_vocab_size()
    if got < base_vocab:
        # The corpus ran out of merges: pad with plain (non-special) filler tokens so the ids line up.
        tok.add_tokens([f"<|filler_{i}|>" for i in range(base_vocab - got)])
    assert tok.get_vocab_size() == base_vocab, (tok.get_vocab_size(), base_vocab)
    layout = special_layout(base_vocab)
    tok.add_special_tokens([tokenizers.AddedToken(layout[i], special=True, normalized=False)
                            for i in sorted(layout)])
    for tid, t in layout.items():
        assert tok.token_to_id(t) == tid, (t, tok.token_to_id(t), tid)
    return tok


# ----------------------------------------------------------------------------------------------- model
def make_config(size, vocab, base):
    s = SIZES[size]
    text = dict(model_type="llama", vocab_size=vocab, max_position_embeddings=8192, rms_norm_eps=1e-5,
                rope_theta=100000.0, tie_word_embeddings=False, pad_token_id=2, bos_token_id=1,
                eos_token_id=2, hidden_act="silu", attention_bias=False, mlp_bias=False,
                initializer_range=0.02, **s["text"])
    vision = dict(model_type="idefics3_vision", image_size=512, patch_size=16, num_channels=3,
                  hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0,
                  initializer_range=0.02, **s["vision"])
    cfg = Idefics3Config(text_config=text, vision_config=vision, scale_factor=4, image_token_id=base + 38,
                         vocab_size=vocab, pad_token_id=128002 if size == "full" else 2,
                         tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    return cfg


def check_position_ids(model):
    """transformers 4.55-4.57 computed shifted SigLIP position ids for full 512x512 tiles (their issue
    41190). With the pinned version a full tile must get ids 0..N-1 in order: read them back through the
    model's own embedding module with the patch projection zeroed and the table set to row = index."""
    emb = copy.deepcopy(model.model.vision_model.embeddings)
    with torch.no_grad():
        emb.patch_embedding.weight.zero_()
        emb.patch_embedding.bias.zero_()
        n = emb.position_embedding.weight.shape[0]
        emb.position_embedding.weight.copy_(torch.arange(n, dtype=torch.float32)[:, None].expand_as(
            emb.position_embedding.weight))
        side = emb.num_patches_per_side
        out = emb(torch.zeros(1, 3, side * emb.patch_size, side * emb.patch_size),
                  torch.ones(1, side, side, dtype=torch.bool))
    ids = out[0, :, 0].round().long()
    assert torch.equal(ids, torch.arange(n)), f"shifted SigLIP position ids: {ids[:40].tolist()}"


def randomise(model, seed):
    """Weights at a scale where activations and logits are far from flat (norms stay at 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                if p.dim() == 4:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                std = 1.0 / np.sqrt(fan_in)
                if "embed_tokens" in name or "position_embedding" in name:
                    std = 1.0
                p.copy_(std * torch.randn(p.shape, generator=g))
        # A sharper LM head so greedy picks are well separated.
        model.lm_head.weight.mul_(3.0)


# ----------------------------------------------------------------------------------------------- export wrappers
def _bucketize_export(input, boundaries, *, right=False, out_int32=False):
    """torch.bucketize as comparisons + sum (same values; the ONNX exporter has no bucketize)."""
    cmp = (boundaries <= input.unsqueeze(-1)) if right else (boundaries < input.unsqueeze(-1))
    return cmp.sum(-1)


class VisionEncoder(torch.nn.Module):
    """Idefics3Model.get_image_features in export-friendly ops (exports [N_real, 64, H]).

    Same arithmetic as transformers' code; only ops the TorchScript ONNX exporter lacks are rewritten:
    unfold -> reshape + sum, bucketize -> comparisons + sum, and the Python-list split of the output is dropped.
    """

    def __init__(self, model):
        super().__init__()
        self.m = model.model
        self.patch = model.config.vision_config.patch_size

    def forward(self, pixel_values, pixel_attention_mask):
        b, n, c, h, w = pixel_values.shape
        pv = pixel_values.view(b * n, c, h, w)
        nb = pv.shape[1] * pv.shape[2] * pv.shape[3]
        real = (pv == 0.0).sum(dim=(-1, -2, -3)) != nb
        pv = pv[real].contiguous()
        pam = pixel_attention_mask.view(b * n, h, w)[real].contiguous()
        p = self.patch
        patch_mask = pam.reshape(-1, h // p, p, w // p, p).sum(dim=(2, 4)) > 0

        vm = self.m.vision_model
        emb = vm.embeddings
        x = emb.patch_embedding(pv).flatten(2).transpose(1, 2)
        nps = emb.num_patches_per_side
        boundaries = torch.arange(1 / nps, 1.0, 1 / nps)
        nb_h = patch_mask[:, :, 0].sum(dim=1)
        nb_w = patch_mask[:, 0, :].sum(dim=1)
        h_idx = torch.arange(h // p, dtype=torch.float32)
        w_idx = torch.arange(w // p, dtype=torch.float32)
        fh = torch.clamp(h_idx[None, :] * (1.0 / nb_h)[:, None], max=1.0 - 1e-6)
        fw = torch.clamp(w_idx[None, :] * (1.0 / nb_w)[:, None], max=1.0 - 1e-6)
        bh = _bucketize_export(fh, boundaries, right=True)
        bw = _bucketize_export(fw, boundaries, right=True)
        pos = (bh[:, :, None] * nps + bw[:, None, :]).reshape(pv.shape[0], -1)
        flat_mask = patch_mask.reshape(pv.shape[0], -1)
        pos = torch.where(flat_mask, pos, torch.zeros_like(pos))
        x = x + emb.position_embedding(pos)
        mask = create_bidirectional_mask(config=vm.config, inputs_embeds=x, attention_mask=flat_mask)
        x = vm.encoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
        x = vm.post_layernorm(x)
        return self.m.connector(x)


class EmbedTokens(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.e = model.model.text_model.embed_tokens

    def forward(self, input_ids):
        return self.e(input_ids)


class Decoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.text = model.model.text_model
        self.head = model.lm_head
        self.layers = model.config.text_config.num_hidden_layers

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)],
                             config=self.text.config)
        out = self.text(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=cache, use_cache=True)
        logits = self.head(out.last_hidden_state)
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (logits, *presents)


def export_all(model, cfg, onnx_dir):
    tc = cfg.text_config
    L, KV, D, H = tc.num_hidden_layers, tc.num_key_value_heads, tc.head_dim, tc.hidden_size
    pv = torch.randn(1, 1, 3, 512, 512)
    pam = torch.ones(1, 1, 512, 512, dtype=torch.bool)
    torch.onnx.export(VisionEncoder(model), (pv, pam), os.path.join(onnx_dir, "vision_encoder.onnx"),
                      dynamo=False, opset_version=OPSET, input_names=["pixel_values", "pixel_attention_mask"],
                      output_names=["image_features"],
                      dynamic_axes={"pixel_values": {0: "batch_size", 1: "num_images"},
                                    "pixel_attention_mask": {0: "batch_size", 1: "num_images"},
                                    "image_features": {0: "num_real_images"}})

    ids = torch.tensor([[1, 5, 7]], dtype=torch.long)
    torch.onnx.export(EmbedTokens(model), (ids,), os.path.join(onnx_dir, "embed_tokens.onnx"), dynamo=False,
                      opset_version=OPSET, input_names=["input_ids"], output_names=["inputs_embeds"],
                      dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                    "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})

    S, P = 3, 4
    emb = torch.randn(1, S, H)
    mask = torch.ones(1, P + S, dtype=torch.long)
    pos = torch.arange(P, P + S).unsqueeze(0)
    past, in_names, out_names, axes = [], ["inputs_embeds", "attention_mask", "position_ids"], ["logits"], {}
    axes["inputs_embeds"] = {0: "batch_size", 1: "sequence_length"}
    axes["attention_mask"] = {0: "batch_size", 1: "total_sequence_length"}
    axes["position_ids"] = {0: "batch_size", 1: "sequence_length"}
    axes["logits"] = {0: "batch_size", 1: "sequence_length"}
    for i in range(L):
        for kv in ("key", "value"):
            past.append(torch.randn(1, KV, P, D))
            in_names.append(f"past_key_values.{i}.{kv}")
            out_names.append(f"present.{i}.{kv}")
            axes[in_names[-1]] = {0: "batch_size", 2: "past_sequence_length"}
            axes[out_names[-1]] = {0: "batch_size", 2: "total_sequence_length"}
    torch.onnx.export(Decoder(model), (emb, mask, pos, *past), os.path.join(onnx_dir, "decoder_model_merged.onnx"),
                      dynamo=False, opset_version=OPSET, input_names=in_names, output_names=out_names,
                      dynamic_axes=axes)
    for f in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        m = onnx.load(os.path.join(onnx_dir, f + ".onnx"))
        ops = {n.op_type for n in m.graph.node}
        assert "If" not in ops, f"{f}: has If"
        onnx.checker.check_model(m)


def quantize(onnx_dir):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    for f in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        for suffix, wt in (("_int8", QuantType.QInt8), ("_uint8", QuantType.QUInt8)):
            quantize_dynamic(os.path.join(onnx_dir, f + ".onnx"), os.path.join(onnx_dir, f + suffix + ".onnx"),
                             weight_type=wt, per_channel=False, reduce_range=False,
                             extra_options=dict(EnableSubgraph=True))


def write_q4_stubs(onnx_dir, hidden, vocab):
    """Small graphs named like the published `_q4` files and using their com.microsoft operators
    (MatMulNBits, GatherBlockQuantized), to test that lookout refuses them with a clear message."""
    k_blocks = hidden // 16

    def save(name, nodes, inputs, outputs, inits):
        g = helper.make_graph(nodes, "q4", inputs, outputs, inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])
        onnx.save(m, os.path.join(onnx_dir, name))

    def matmul_nbits(x_name, y_name):
        w = helper.make_tensor("w_q4", TensorProto.UINT8, [hidden, k_blocks, 8],
                               np.zeros(hidden * k_blocks * 8, np.uint8))
        sc = helper.make_tensor("w_scales", TensorProto.FLOAT, [hidden * k_blocks],
                                np.ones(hidden * k_blocks, np.float32))
        node = helper.make_node("MatMulNBits", [x_name, "w_q4", "w_scales"], [y_name], name="matmul_q4",
                                domain="com.microsoft", K=hidden, N=hidden, bits=4, block_size=16)
        return node, [w, sc]

    f = lambda n, shape: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)  # noqa: E731
    node, inits = matmul_nbits("inputs_embeds", "logits")
    save("decoder_model_merged_q4.onnx", [node], [f("inputs_embeds", [1, "sequence_length", hidden])],
         [f("logits", [1, "sequence_length", hidden])], inits)
    node, inits = matmul_nbits("pixel_values", "image_features")
    save("vision_encoder_q4.onnx", [node], [f("pixel_values", [1, 64, hidden])], [f("image_features", [1, 64, hidden])],
         inits)
    data = helper.make_tensor("embed_q4", TensorProto.UINT8, [vocab, hidden // 2], np.zeros(vocab * hidden // 2, np.uint8))
    scales = helper.make_tensor("embed_scales", TensorProto.FLOAT, [vocab, k_blocks], np.ones(vocab * k_blocks, np.float32))
    node = helper.make_node("GatherBlockQuantized", ["embed_q4", "input_ids", "embed_scales"], ["inputs_embeds"],
                            name="embed_q4", domain="com.microsoft", bits=4, block_size=16, gather_axis=0,
                            quantize_axis=1)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence_length"])
    save("embed_tokens_q4.onnx", [node], [ids], [f("inputs_embeds", [1, "sequence_length", hidden])], [data, scales])


# ----------------------------------------------------------------------------------------------- references
def save_f32(ref_dir, name, arr, meta):
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
    a.tofile(os.path.join(ref_dir, name + ".f32"))
    meta[name] = {"file": name + ".f32", "shape": list(a.shape)}


def torch_greedy(model, inputs, max_new, eos):
    """Greedy generation by transformers' generate, plus the logits of every step."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, num_beams=1,
                             output_logits=True, return_dict_in_generate=True, eos_token_id=eos, pad_token_id=eos)
    prompt_len = inputs["input_ids"].shape[1]
    toks = out.sequences[0, prompt_len:].tolist()
    step_logits = np.stack([lg[0].numpy() for lg in out.logits])
    return toks, step_logits


def margins(step_logits):
    s = np.sort(step_logits, axis=-1)
    return s[:, -1] - s[:, -2]


def ort_session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_greedy(onnx_dir, suffix, cfg, input_ids, pixel_values, pixel_mask, max_new, eos):
    """The same greedy loop as lookout's, on onnxruntime: vision once, prefill, then one token per step."""
    tc = cfg.text_config
    vis = ort_session(os.path.join(onnx_dir, f"vision_encoder{suffix}.onnx"))
    emb = ort_session(os.path.join(onnx_dir, f"embed_tokens{suffix}.onnx"))
    dec = ort_session(os.path.join(onnx_dir, f"decoder_model_merged{suffix}.onnx"))
    feats = vis.run(None, {"pixel_values": pixel_values, "pixel_attention_mask": pixel_mask})[0]
    embeds = emb.run(None, {"input_ids": input_ids})[0]
    img_rows = np.where(input_ids[0] == cfg.image_token_id)[0]
    merged = embeds.copy()
    merged[0, img_rows] = feats.reshape(-1, feats.shape[-1])
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, tc.num_key_value_heads, 0, tc.head_dim), np.float32)
            for i in range(tc.num_hidden_layers) for kv in ("key", "value")}
    seq = input_ids.shape[1]
    x = merged
    pos = np.arange(seq, dtype=np.int64)[None]
    toks, logits_all, prefill = [], [], None
    total = seq
    for step in range(max_new):
        feed = {"inputs_embeds": x, "attention_mask": np.ones((1, total), np.int64), "position_ids": pos, **past}
        outs = dec.run(None, feed)
        logits = outs[0]
        if prefill is None:
            prefill = logits[0]
        last = logits[0, -1]
        logits_all.append(last)
        nxt = int(np.argmax(last))
        toks.append(nxt)
        if nxt == eos:
            break
        names = [o.name for o in dec.get_outputs()]
        for name, val in zip(names[1:], outs[1:]):
            past[name.replace("present", "past_key_values")] = val
        x = emb.run(None, {"input_ids": np.array([[nxt]], np.int64)})[0]
        pos = np.array([[total]], np.int64)
        total += 1
    return dict(features=feats, embeds=merged, prefill=prefill, tokens=toks, step_logits=np.stack(logits_all))


def reference_image():
    """A real photo (the repository's messi5.jpg, 548x342): exercises both processor resizes and aspect change."""
    return Image.open(os.path.join(ROOT, "tests", "fixtures", "images", "messi5.jpg")).convert("RGB")


def build(size, out_dir):
    s = SIZES[size]
    base = s["base_vocab"]
    print(f"[{size}] tokenizer (BPE, base vocab {base})", flush=True)
    tok = build_tokenizer(base)
    vocab = tok.get_vocab_size()
    assert vocab == base + 128
    eou = base + 127

    onnx_dir = os.path.join(out_dir, "onnx")
    ref_dir = os.path.join(out_dir, "reference")
    for d in (onnx_dir, ref_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    tok.save(os.path.join(out_dir, "tokenizer.json"))

    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(out_dir, "tokenizer.json"),
                                   bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>", model_max_length=8192)
    ip = Idefics3ImageProcessorPil(do_resize=True, size={"longest_edge": 4 * 512}, max_image_size={"longest_edge": 512},
                                   resample=1, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], do_image_splitting=False,
                                   do_pad=True, do_convert_rgb=True)
    proc = Idefics3Processor(image_processor=ip, tokenizer=fast, image_seq_len=64, chat_template=CHAT_TEMPLATE)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    img = reference_image()
    inputs = proc(text=[prompt], images=[[img]], return_tensors="pt")
    input_ids = inputs["input_ids"]

    cfg = make_config(size, vocab, base)
    best = None
    for seed in s["seeds"]:
        torch.manual_seed(seed)
        model = Idefics3ForConditionalGeneration(cfg).eval()
        randomise(model, seed)
        toks, step_logits = torch_greedy(model, dict(inputs), s["max_new_tokens"], eou)
        m = float(margins(step_logits).min())
        distinct = len(set(toks))
        print(f"[{size}] seed {seed}: min top-1 margin {m:.4f}, tokens {toks}", flush=True)
        if best is None or (m, distinct) > (best[1], best[3]):
            best = (seed, m, model, distinct, toks, step_logits)
        if m >= MIN_MARGIN and distinct >= 3:
            break
    seed, min_margin, model, _, toks, step_logits = best
    check_position_ids(model)
    print(f"[{size}] using seed {seed} (min margin {min_margin:.4f})", flush=True)

    with torch.no_grad():
        feats = model.model.get_image_features(inputs["pixel_values"], inputs["pixel_attention_mask"]).pooler_output
        feats = torch.cat(list(feats), 0).reshape(1, 64, -1) if isinstance(feats, (list, tuple)) else feats
        embeds = model.model.text_model.embed_tokens(input_ids)
        merged = model.model.inputs_merger(input_ids, embeds, feats.reshape(-1, feats.shape[-1]))
        fwd = model(input_ids=input_ids, attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"],
                    pixel_attention_mask=inputs["pixel_attention_mask"], use_cache=False)
        prefill = fwd.logits[0].numpy()
    assert int(np.argmax(prefill[-1])) == toks[0]
    with torch.no_grad():
        wrapped = VisionEncoder(model)(inputs["pixel_values"], inputs["pixel_attention_mask"].bool())
    wrap_diff = float((wrapped.reshape(feats.shape) - feats).abs().max())
    print(f"[{size}] export wrapper vs get_image_features: max |diff| {wrap_diff:.3g}", flush=True)
    assert wrap_diff < 1e-5

    # config files (before export: the exporter's tracing does not touch them)
    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["Idefics3ForConditionalGeneration"]
    cfg_dict["transformers.js_config"] = {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2, sort_keys=True)
    ip_dict = ip.to_dict()
    ip_dict["image_processor_type"] = "Idefics3ImageProcessor"
    ip_dict["processor_class"] = "Idefics3Processor"
    ip_dict["do_image_splitting"] = False
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(ip_dict, f, indent=2, sort_keys=True)
    with open(os.path.join(out_dir, "processor_config.json"), "w") as f:
        json.dump({"image_seq_len": 64, "processor_class": "Idefics3Processor"}, f, indent=2)
    with open(os.path.join(out_dir, "chat_template.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE}, f, indent=2)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
                   "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "model_max_length": 8192,
                   "add_prefix_space": False, "chat_template": CHAT_TEMPLATE}, f, indent=2)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": [2, eou], "pad_token_id": 2}, f, indent=2)

    print(f"[{size}] export", flush=True)
    export_all(model, cfg, onnx_dir)
    print(f"[{size}] quantize", flush=True)
    quantize(onnx_dir)
    if size == "tiny":
        write_q4_stubs(onnx_dir, cfg.text_config.hidden_size, vocab)

    ids_np = input_ids.numpy().astype(np.int64)
    pv = inputs["pixel_values"].numpy().astype(np.float32)
    pm = inputs["pixel_attention_mask"].numpy().astype(bool)
    fp32 = ort_greedy(onnx_dir, "", cfg, ids_np, pv, pm, s["max_new_tokens"], eou)
    ort_diff = {
        "image_features": float(np.abs(fp32["features"] - feats.numpy()).max()),
        "prefill_logits": float(np.abs(fp32["prefill"] - prefill).max()),
        "step_logits": float(np.abs(fp32["step_logits"] - step_logits[:len(fp32["step_logits"])]).max()),
    }
    print(f"[{size}] onnxruntime fp32 vs transformers: {ort_diff}; tokens {fp32['tokens']}", flush=True)
    if fp32["tokens"] != toks:
        msg = f"onnxruntime fp32 tokens {fp32['tokens']} != transformers {toks}"
        if size == "tiny":
            raise SystemExit(msg)
        print(f"[{size}] WARNING: {msg}", flush=True)
    int8 = ort_greedy(onnx_dir, "_int8", cfg, ids_np, pv, pm, s["max_new_tokens"], eou)
    uint8 = ort_greedy(onnx_dir, "_uint8", cfg, ids_np, pv, pm, s["max_new_tokens"], eou)
    print(f"[{size}] onnxruntime int8 tokens {int8['tokens']}, uint8 {uint8['tokens']}", flush=True)

    meta = {}
    img.save(os.path.join(ref_dir, "image.png"))
    # The processor's 512x512 image as 8-bit pixels: pixel_values are exactly (u8/255 - 0.5)/0.5 of these.
    u8 = np.round((pv[0, 0] * 0.5 + 0.5) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    assert np.abs((u8.transpose(2, 0, 1).astype(np.float32) / 255.0 - 0.5) / 0.5 - pv[0, 0]).max() < 1e-6
    Image.fromarray(u8).save(os.path.join(ref_dir, "pixel_values_u8.png"))
    save_f32(ref_dir, "image_features", feats.numpy(), meta)
    save_f32(ref_dir, "inputs_embeds", merged.numpy(), meta)
    save_f32(ref_dir, "prefill_logits", prefill, meta)
    save_f32(ref_dir, "step_logits", step_logits, meta)
    save_f32(ref_dir, "int8_step_logits", int8["step_logits"], meta)
    if size == "full":
        # Big arrays stay out of the way of the benchmark folder's size; the tiny fixture keeps all of them.
        pass
    ref = {
        "generator": "models/tools/make_vlm_smolvlm.py",
        "size": size,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "onnxruntime": ort.__version__, "onnx": onnx.__version__, "tokenizers": tokenizers.__version__},
        "seed": seed,
        "min_top1_margin": min_margin,
        "prompt": PROMPT,
        "chat_prompt": prompt,
        "image": "image.png",
        "image_size": [img.width, img.height],
        "pixel_values_u8": "pixel_values_u8.png",
        "pixel_values_stats": {"sum": float(pv.sum()), "min": float(pv.min()), "max": float(pv.max()),
                               "first": [float(v) for v in pv.reshape(-1)[:8]]},
        "input_ids": input_ids[0].tolist(),
        "image_token_id": cfg.image_token_id,
        "end_of_utterance_id": eou,
        "max_new_tokens": s["max_new_tokens"],
        "greedy_tokens": toks,
        "greedy_text": fast.decode(toks, skip_special_tokens=True),
        "ort_fp32_tokens": fp32["tokens"],
        "ort_fp32_vs_transformers_max_abs": ort_diff,
        "ort_int8_tokens": int8["tokens"],
        "ort_int8_text": fast.decode([t for t in int8["tokens"] if t != eou], skip_special_tokens=True),
        "ort_uint8_tokens": uint8["tokens"],
        "arrays": meta,
    }
    # A second pre-processing case: portrait, odd sizes (the first resize rounds the width up to even).
    portrait = Image.open(os.path.join(ROOT, "tests", "fixtures", "images", "fruits.jpg")).convert("RGB")
    portrait = portrait.crop((100, 50, 401, 507))
    portrait.save(os.path.join(ref_dir, "portrait.png"))
    ppv = ip(images=[[portrait]], return_tensors="np")["pixel_values"][0, 0]
    pu8 = np.round((ppv * 0.5 + 0.5) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(pu8).save(os.path.join(ref_dir, "portrait_pixel_values_u8.png"))
    ref["preprocess_cases"] = [
        {"image": "image.png", "pixel_values_u8": "pixel_values_u8.png"},
        {"image": "portrait.png", "pixel_values_u8": "portrait_pixel_values_u8.png"},
    ]
    # Tokenizer spot checks for the Rust side: plain text and the chat template with the image expansion.
    samples = ["Is the path clear?", "A person walks a dog near 3 parked cars.", " héllo  wörld\n\ttabs"]
    ref["tokenizer_samples"] = [{"text": t, "ids": fast(t)["input_ids"]} for t in samples]
    with open(os.path.join(ref_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"[{size}] wrote {out_dir}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tiny", action="store_true")
    g.add_argument("--full", action="store_true")
    ap.add_argument("--out", help="output folder (default: tests/fixtures/vlm/smolvlm-tiny or "
                                  "/work/scratch-smolvlm/smolvlm-256m-random)")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    size = "tiny" if a.tiny else "full"
    out = a.out or (os.path.join(ROOT, "tests", "fixtures", "vlm", "smolvlm-tiny") if a.tiny
                    else "/work/scratch-smolvlm/smolvlm-256m-random")
    os.makedirs(out, exist_ok=True)
    build(size, out)


if __name__ == "__main__":
    sys.exit(main())
