#!/usr/bin/env python3
"""Random-weight Florence-2 in the published onnx-community layout, with reference outputs.

No weights can be downloaded here, so this builds `Florence2ForConditionalGeneration` (DaViT vision
tower + BART-like encoder-decoder, transformers 5.23) from a config with random weights, exports it to
the layout that onnx-community / transformers.js publish, quantizes it the transformers.js way and
records what transformers (and onnxruntime, for int8) produce at every stage.

    /opt/florencevenv/bin/python models/tools/make_vlm_florence2.py --tiny   # -> tests/fixtures/vlm/florence2-tiny/
    /opt/florencevenv/bin/python models/tools/make_vlm_florence2.py --full   # -> /work/scratch-florence/florence2-base/

(`--out DIR` overrides the destination.) Requirements: models/tools/requirements-florence2.txt.

Layout written (names as in onnx-community/Florence-2-base):
  config.json, generation_config.json, preprocessor_config.json, processor_config.json,
  tokenizer.json, tokenizer_config.json
  onnx/vision_encoder.onnx       pixel_values [B,3,768,768] -> image_features [B,577,D]
  onnx/embed_tokens.onnx         input_ids [B,T] (int64) -> inputs_embeds [B,T,D]
  onnx/encoder_model.onnx        inputs_embeds [B,S,D], attention_mask [B,S] -> last_hidden_state
  onnx/decoder_model.onnx        inputs_embeds, encoder_hidden_states, encoder_attention_mask
                                 -> logits, present.{i}.{decoder,encoder}.{key,value}
  onnx/decoder_with_past_model.onnx
                                 inputs_embeds, encoder_attention_mask, past_key_values.{i}.*
                                 -> logits, present.{i}.decoder.{key,value}
  onnx/*_int8.onnx, *_uint8.onnx, *_quantized.onnx (dynamic quantization; --tiny keeps _int8 only)
  onnx/decoder_model_q4.onnx     (--tiny only) MatMulNBits (com.microsoft) file for the rejection test
  reference/                     reference outputs (see write_reference)

The encoder input is [image_features ; embed(<s> prompt </s>)], as in the original Florence-2 and in
transformers.js; transformers 5 gets the same sequence by scattering the image features over 577
`<image>` placeholder tokens, which is what the reference run below does (through the real processor).

The ONNX encoder/decoder graphs are written with explicit key/value tensors (the shape optimum's
seq2seq export has) from the transformers model's own modules; before export each is checked against
the transformers forward pass (max |diff| printed).

The tokenizer is BART-style byte-level BPE in the real tokenizer.json format (RobertaProcessing,
ByteLevel decoder), trained here on a small corpus, with BART's specials (<s> <pad> </s> <unk> at ids
0-3, <mask>) and Florence-2's added tokens (task tokens, <loc_0>..<loc_999>), plus transformers 5's
<image> placeholder. Its vocabulary is smaller than the real 51289 ids; --full keeps vocab_size 51289
in the model (the ids past the tokenizer's are never produced by a trained model; here they decode to
nothing) so that the embedding and lm_head cost is the real one.
"""

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[2]

FLORENCE_EXTRA_TOKENS = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{x}>" for x in range(1000)]
    + [
        "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
        "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
        "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
    ]
)

# Phrases the reference post-processor drops from grounding results (pronouns and the like; the
# original Florence-2 processor's black list, abridged). Written to processor_config.json.
BANNED_GROUNDING = [
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they",
    "them", "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "its", "myself", "yourself",
    "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these",
    "those", "who", "whom", "whose", "which", "what", "all", "another", "any", "anybody", "anyone",
    "anything", "each", "everybody", "everyone", "everything", "few", "many", "nobody", "none",
    "several", "some", "somebody", "someone", "something", "both", "either", "neither", "no one",
    "nothing", "other", "others", "the image", "image", "images", "the", "a", "an", "a group",
    "other objects", "lots", "a set",
]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def sizes(tiny: bool):
    if tiny:
        vision = dict(depths=[1, 1, 1, 1], embed_dim=[16, 24, 32, 48], num_heads=[1, 2, 2, 3],
                      num_groups=[1, 2, 2, 3], projection_dim=64)
        text = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128)
        return vision, text, None
    # Florence-2-base: DaViT 128/256/512/1024, depths 1/1/9/1, projection 768; BART-base 6+6 layers.
    vision = dict(depths=[1, 1, 9, 1], embed_dim=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32],
                  num_groups=[4, 8, 16, 32], projection_dim=768)
    text = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)
    return vision, text, 51289


# ---------------------------------------------------------------------------------------------
# tokenizer


def corpus():
    prompts = [
        "What does the image describe?", "Describe in detail what is shown in the image.",
        "Describe with a paragraph what is shown in the image.",
        "Locate the objects with category name in the image.", "Locate the phrases in the caption:",
        "Locate the objects in the image, with their descriptions.", "What is the text in the image?",
        "Locate the region proposals in the image.", "Locate {} in the image.",
    ]
    labels = (REPO / "tests/fixtures/coco.txt").read_text().split("\n")
    labels = [s.strip() for s in labels if s.strip()]
    places = ["on the path", "near the door", "in the street", "on a table", "in the kitchen",
              "next to a car", "under a tree", "in the parking lot", "at the gate"]
    lines = []
    for i, lab in enumerate(labels):
        lines.append(f"A {lab} {places[i % len(places)]}.")
        lines.append(f"There is a {lab} and a {labels[(i * 7) % len(labels)]} {places[(i * 3) % len(places)]}.")
        lines.append(f"Is the {lab} blocking the path? Yes, the {lab} is {places[(i * 5) % len(places)]}.")
    return prompts * 20 + lines * 3


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens(["<mask>"])
    tok.add_special_tokens(FLORENCE_EXTRA_TOKENS)
    tok.add_special_tokens(["<image>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    return tok


# ---------------------------------------------------------------------------------------------
# model


def build_model(tiny: bool, tok_vocab: int, image_token_id: int, seed: int):
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration
    from transformers.models.florence2.configuration_florence2 import Florence2VisionConfig

    vision, text, full_vocab = sizes(tiny)
    vc = Florence2VisionConfig(drop_path_rate=0.0, window_size=12, **vision)
    tc = BartConfig(
        vocab_size=full_vocab or tok_vocab, max_position_embeddings=640 if tiny else 1024, scale_embedding=False,
        activation_function="gelu", bos_token_id=0, pad_token_id=1, eos_token_id=2,
        decoder_start_token_id=2, forced_bos_token_id=0, forced_eos_token_id=None,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.02, **text,
    )
    cfg = Florence2Config(vision_config=vc.to_dict(), text_config=tc.to_dict(), image_token_id=image_token_id)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(cfg).eval()
    # transformers' init (std 0.02) leaves a random decoder dominated by its residual stream, which
    # with tied embeddings just repeats its input token. Wider weights give varied greedy sequences
    # and clear top-1 margins, so token equality is a real test.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        lm = model.model.language_model
        for mod in list(lm.encoder.layers) + list(lm.decoder.layers):
            for name, p in mod.named_parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
                elif "layer_norm" not in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        lm.shared.weight.copy_(torch.randn(lm.shared.weight.shape, generator=g))
        # Strong decoder positions: the random decoder otherwise repeats its input token (tied
        # embeddings + residual stream), which would make token equality a weak test.
        for emb, std in ((lm.encoder.embed_positions, 0.5), (lm.decoder.embed_positions, 4.0)):
            emb.weight.copy_(torch.randn(emb.weight.shape, generator=g) * std)
    model.tie_weights()
    assert model.lm_head.weight.data_ptr() == lm.shared.weight.data_ptr() or torch.equal(
        model.lm_head.weight, lm.shared.weight)
    return model


def generation_config():
    from transformers import GenerationConfig

    # Greedy, no n-gram blocking; <s> forced as the first token as Florence-2's BART config does.
    return GenerationConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2,
        forced_bos_token_id=0, num_beams=1, do_sample=False, no_repeat_ngram_size=0,
    )


# ---------------------------------------------------------------------------------------------
# export graphs (explicit key/value tensors; transformers' modules and weights)

NEG = torch.finfo(torch.float32).min


def mha(attn, x, mask, kv=None, k=None, v=None):
    b, t, d = x.shape
    h = attn.num_heads
    hd = d // h
    q = attn.q_proj(x).view(b, t, h, hd).transpose(1, 2)
    if k is None:
        k = attn.k_proj(kv).view(b, -1, h, hd).transpose(1, 2)
        v = attn.v_proj(kv).view(b, -1, h, hd).transpose(1, 2)
    w = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
    if mask is not None:
        w = w + mask
    w = torch.softmax(w, dim=-1)
    o = torch.matmul(w, v).transpose(1, 2).reshape(b, t, d)
    return attn.out_proj(o), k, v


def pad_mask(mask):
    return (1.0 - mask[:, None, None, :].to(torch.float32)) * NEG


def ffn(layer, h):
    r = h
    h = layer.fc2(layer.activation_fn(layer.fc1(h)))
    return layer.final_layer_norm(r + h)


class VisionEncoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model.model

    def forward(self, pixel_values):
        return self.m.get_image_features(pixel_values).pooler_output


class EmbedTokens(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.emb = model.model.language_model.shared

    def forward(self, input_ids):
        return self.emb(input_ids)


class Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.enc = model.model.language_model.encoder

    def forward(self, inputs_embeds, attention_mask):
        s = inputs_embeds.shape[1]
        pos = self.enc.embed_positions.weight[2 : 2 + s]
        h = self.enc.layernorm_embedding(inputs_embeds + pos)
        mask = pad_mask(attention_mask)
        for layer in self.enc.layers:
            a, _, _ = mha(layer.self_attn, h, mask, kv=h)
            h = layer.self_attn_layer_norm(h + a)
            h = ffn(layer, h)
        return h


class Decoder(nn.Module):
    """decoder_model (with_past=False) or decoder_with_past_model (with_past=True)."""

    def __init__(self, model, with_past: bool):
        super().__init__()
        self.dec = model.model.language_model.decoder
        self.lm_head = model.lm_head
        self.with_past = with_past
        self.n = len(self.dec.layers)

    def forward(self, inputs_embeds, encoder_attention_mask, *rest):
        t = inputs_embeds.shape[1]
        if self.with_past:
            past = rest
            p = past[0].shape[2]
            enc_hidden = None
        else:
            (enc_hidden,) = rest
            past = None
            p = 0
        pos = self.dec.embed_positions.weight[2 + p : 2 + p + t]
        h = self.dec.layernorm_embedding(inputs_embeds + pos)
        i = torch.arange(t)[:, None] + p
        j = torch.arange(p + t)[None, :]
        causal = (j > i).to(torch.float32) * NEG
        enc_mask = pad_mask(encoder_attention_mask)
        presents = []
        for n, layer in enumerate(self.dec.layers):
            q_in = h
            b, _, d = h.shape
            hh = layer.self_attn.num_heads
            k_new = layer.self_attn.k_proj(q_in).view(b, t, hh, d // hh).transpose(1, 2)
            v_new = layer.self_attn.v_proj(q_in).view(b, t, hh, d // hh).transpose(1, 2)
            if past is not None:
                k = torch.cat([past[4 * n], k_new], dim=2)
                v = torch.cat([past[4 * n + 1], v_new], dim=2)
            else:
                k, v = k_new, v_new
            a, _, _ = mha(layer.self_attn, h, causal, k=k, v=v)
            h = layer.self_attn_layer_norm(h + a)
            if past is not None:
                a, ek, ev = mha(layer.encoder_attn, h, enc_mask, k=past[4 * n + 2], v=past[4 * n + 3])
            else:
                a, ek, ev = mha(layer.encoder_attn, h, enc_mask, kv=enc_hidden)
            h = layer.encoder_attn_layer_norm(h + a)
            h = ffn(layer, h)
            presents += [k, v] if past is not None else [k, v, ek, ev]
        return (self.lm_head(h), *presents)


def kv_names(n, prefix, with_encoder=True):
    out = []
    for i in range(n):
        out += [f"{prefix}.{i}.decoder.key", f"{prefix}.{i}.decoder.value"]
        if with_encoder:
            out += [f"{prefix}.{i}.encoder.key", f"{prefix}.{i}.encoder.value"]
    return out


def export(module, args, path, input_names, output_names, dynamic_axes):
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=17, do_constant_folding=True, dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(path))
    print(f"  wrote {path.relative_to(path.parents[1])} ({path.stat().st_size / 1e6:.2f} MB)")


def export_all(model, onnx_dir: Path, d: int):
    n = len(model.model.language_model.decoder.layers)
    heads = model.model.language_model.decoder.layers[0].self_attn.num_heads
    hd = d // heads
    pix = torch.randn(1, 3, 768, 768)
    export(VisionEncoder(model), (pix,), onnx_dir / "vision_encoder.onnx", ["pixel_values"],
           ["image_features"], {"pixel_values": {0: "batch_size"}, "image_features": {0: "batch_size"}})
    ids = torch.tensor([[0, 5, 6, 2]])
    export(EmbedTokens(model), (ids,), onnx_dir / "embed_tokens.onnx", ["input_ids"], ["inputs_embeds"],
           {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
    emb = torch.randn(1, 590, d)
    mask = torch.ones(1, 590, dtype=torch.int64)
    export(Encoder(model), (emb, mask), onnx_dir / "encoder_model.onnx", ["inputs_embeds", "attention_mask"],
           ["last_hidden_state"],
           {"inputs_embeds": {0: "batch_size", 1: "encoder_sequence_length"},
            "attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
            "last_hidden_state": {0: "batch_size", 1: "encoder_sequence_length"}})
    dec_in = torch.randn(1, 1, d)
    enc_h = torch.randn(1, 590, d)
    present = kv_names(n, "present")
    dyn = {"inputs_embeds": {0: "batch_size", 1: "decoder_sequence_length"},
           "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
           "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
           "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    for name in present:
        seq = "encoder_sequence_length" if ".encoder." in name else "decoder_sequence_length"
        dyn[name] = {0: "batch_size", 2: seq}
    export(Decoder(model, False), (dec_in, mask, enc_h), onnx_dir / "decoder_model.onnx",
           ["inputs_embeds", "encoder_attention_mask", "encoder_hidden_states"], ["logits"] + present, dyn)
    past_names = kv_names(n, "past_key_values")
    past = []
    for name in past_names:
        length = 590 if ".encoder." in name else 3
        past.append(torch.randn(1, heads, length, hd))
    dyn = {"inputs_embeds": {0: "batch_size", 1: "decoder_sequence_length"},
           "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
           "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    for name in past_names:
        seq = "encoder_sequence_length" if ".encoder." in name else "past_decoder_sequence_length"
        dyn[name] = {0: "batch_size", 2: seq}
    present_dec = kv_names(n, "present", with_encoder=False)
    for name in present_dec:
        dyn[name] = {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
    export(Decoder(model, True), (dec_in, mask, *past), onnx_dir / "decoder_with_past_model.onnx",
           ["inputs_embeds", "encoder_attention_mask"] + past_names, ["logits"] + present_dec, dyn)


GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model", "decoder_with_past_model"]


def quantize(onnx_dir: Path, suffixes):
    """Dynamic quantization as transformers.js's scripts/quantize.py does it (IntegerOps, all op
    types present in the graph, per-channel, reduced range, EnableSubgraph + MatMulConstBOnly)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode

    for suffix in suffixes:
        wtype = QuantType.QInt8 if suffix == "_int8" else QuantType.QUInt8
        for g in GRAPHS:
            model = onnx.load(str(onnx_dir / f"{g}.onnx"))
            op_types = sorted({n.op_type for n in model.graph.node})
            q = ONNXQuantizer(
                model, per_channel=True, reduce_range=True, mode=QuantizationMode.IntegerOps, static=False,
                weight_qType=wtype, activation_qType=QuantType.QUInt8, tensors_range=None,
                nodes_to_quantize=[], nodes_to_exclude=[], op_types_to_quantize=op_types,
                extra_options=dict(EnableSubgraph=True, MatMulConstBOnly=True),
            )
            q.quantize_model()
            out = onnx_dir / f"{g}{suffix}.onnx"
            onnx.save_model(q.model.model, str(out))
            print(f"  wrote onnx/{out.name} ({out.stat().st_size / 1e6:.2f} MB)")


def q4_file(onnx_dir: Path):
    """A 4-bit MatMulNBits decoder as transformers.js's q4 mode writes it (onnxruntime-only op)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(onnx_dir / "decoder_model.onnx"))
    q = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
    q.process()
    out = onnx_dir / "decoder_model_q4.onnx"
    onnx.save_model(q.model.model, str(out))
    ops = {f"{n.domain}.{n.op_type}" for n in q.model.model.graph.node if n.domain}
    print(f"  wrote onnx/{out.name} ({out.stat().st_size / 1e6:.2f} MB), custom ops {sorted(ops)}")


# ---------------------------------------------------------------------------------------------
# processor (the reference pre- and post-processing)


def build_processor(out: Path):
    from transformers import Florence2Processor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(out / "tokenizer.json"), bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>", extra_special_tokens={"image_token": "<image>"},
        model_max_length=1024,
    )
    # The PIL backend (the processor the original Florence-2 used); transformers 5's torchvision
    # backend resizes with a different bicubic kernel.
    ip = CLIPImageProcessorPil(
        do_resize=True, size={"height": 768, "width": 768}, resample=3, do_center_crop=False,
        crop_size={"height": 768, "width": 768}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True,
    )
    ip.image_seq_length = 577
    post = {
        "ocr": {"PATTERN": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
                "AREA_THRESHOLD": 0.0},
        "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING},
        "pure_text": {}, "description_with_bboxes": {}, "description_with_polygons": {}, "polygons": {},
        "bboxes": {}, "description_with_bboxes_or_polygons": {},
    }
    proc = Florence2Processor(image_processor=ip, tokenizer=tok, post_processor_config=post)
    return proc, tok, ip, post


def write_processor_files(out: Path, tok, ip, post):
    pre = {
        "image_processor_type": "CLIPImageProcessor", "processor_class": "Florence2Processor",
        "do_resize": True, "size": {"height": 768, "width": 768}, "resample": 3, "do_center_crop": False,
        "crop_size": {"height": 768, "width": 768}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
        "do_convert_rgb": True, "image_seq_length": 577,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    (out / "processor_config.json").write_text(json.dumps(
        {"processor_class": "Florence2Processor", "num_additional_image_tokens": 0,
         "post_processor_config": post}, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BartTokenizer", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
         "unk_token": "<unk>", "mask_token": "<mask>", "model_max_length": 1024,
         "extra_special_tokens": {"image_token": "<image>"}}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# images


def synthetic_image(w, h, seed):
    """Gradients, hard-edged shapes and a small noisy patch: exercises the resize kernel and
    compresses well as PNG."""
    from PIL import Image, ImageDraw

    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1),
                     ((xx + yy) % 97) * 255.0 / 96], axis=-1)
    img = Image.fromarray(base.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randint(0, w - 20), rng.randint(0, h - 20)
        x1, y1 = x0 + rng.randint(10, max(11, w // 3)), y0 + rng.randint(10, max(11, h // 3))
        col = tuple(int(c) for c in rng.randint(0, 256, 3))
        if rng.rand() < 0.5:
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            d.ellipse([x0, y0, x1, y1], fill=col)
    arr = np.array(img)
    py, px = rng.randint(0, h - 48), rng.randint(0, w - 48)
    arr[py : py + 48, px : px + 48] = rng.randint(0, 256, (48, 48, 3))
    return Image.fromarray(arr)


# ---------------------------------------------------------------------------------------------
# onnxruntime greedy loop (the same one lookout runs)


class OrtFlorence:
    def __init__(self, onnx_dir: Path, suffix: str, n_layers: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.s = {g: ort.InferenceSession(str(onnx_dir / f"{g}{suffix}.onnx"), so,
                                          providers=["CPUExecutionProvider"]) for g in GRAPHS}
        self.n = n_layers

    def image_features(self, pixel_values):
        return self.s["vision_encoder"].run(None, {"pixel_values": pixel_values})[0]

    def embed(self, ids):
        return self.s["embed_tokens"].run(None, {"input_ids": np.array([ids], dtype=np.int64)})[0]

    def encode(self, feats, text_ids):
        emb = np.concatenate([feats, self.embed(text_ids)], axis=1)
        mask = np.ones((1, emb.shape[1]), dtype=np.int64)
        return self.s["encoder_model"].run(None, {"inputs_embeds": emb, "attention_mask": mask})[0], mask

    def greedy(self, enc, mask, max_new, start=2, forced_bos=0, eos=2):
        out = self.s["decoder_model"].run(None, {"inputs_embeds": self.embed([start]), "encoder_attention_mask": mask,
                                                 "encoder_hidden_states": enc})
        logits, kv = out[0], out[1:]
        tokens, steps = [], []
        while True:
            step = logits[0, -1].astype(np.float32)
            steps.append(step)
            tok = forced_bos if (not tokens and forced_bos is not None) else int(np.argmax(step))
            if tok == eos:
                break
            tokens.append(tok)
            if len(tokens) >= max_new:
                break
            feeds = {"inputs_embeds": self.embed([tok]), "encoder_attention_mask": mask}
            for i in range(self.n):
                feeds[f"past_key_values.{i}.decoder.key"] = kv[4 * i]
                feeds[f"past_key_values.{i}.decoder.value"] = kv[4 * i + 1]
                feeds[f"past_key_values.{i}.encoder.key"] = kv[4 * i + 2]
                feeds[f"past_key_values.{i}.encoder.value"] = kv[4 * i + 3]
            out = self.s["decoder_with_past_model"].run(None, feeds)
            logits = out[0]
            for i in range(self.n):
                kv[4 * i] = out[1 + 2 * i]
                kv[4 * i + 1] = out[2 + 2 * i]
        return tokens, np.stack(steps)


# ---------------------------------------------------------------------------------------------
# references


def save_f32(path: Path, arr):
    arr = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
    path.write_bytes(arr.tobytes())
    return {"file": path.name, "shape": list(arr.shape)}


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def margins(steps):
    s = np.sort(steps, axis=-1)
    return float(np.min(s[:, -1] - s[:, -2]))


CASES = [
    ("<CAPTION>", None),
    ("<OD>", None),
    ("<CAPTION_TO_PHRASE_GROUNDING>", "a person on the path"),
]


def write_reference(model, proc, out: Path, tiny: bool, max_new: int):
    from PIL import Image

    ref = out / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    n_layers = len(model.model.language_model.decoder.layers)
    d = model.config.text_config.d_model

    # Model-equivalence image: 768x768, so the processor's resize is the identity and lookout's
    # pixel_values can equal the reference exactly.
    img = synthetic_image(768, 768, seed=3)
    img.save(ref / "image.png", optimize=True)
    img = Image.open(ref / "image.png").convert("RGB")
    meta = {"image": "image.png", "max_new_tokens": max_new, "cases": []}

    pix_direct = ((np.asarray(img, np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32))
                  / np.array(IMAGENET_STD, np.float32)).transpose(2, 0, 1)[None]
    ort_fp32 = OrtFlorence(out / "onnx", "", n_layers)
    ort_int8 = OrtFlorence(out / "onnx", "_int8", n_layers) if (out / "onnx/vision_encoder_int8.onnx").exists() else None

    feats_saved = False
    for ci, (task, arg) in enumerate(CASES):
        prompt = task + (arg or "")
        inputs = proc(text=prompt, images=img, return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        text_ids = [i for i in ids if i != proc.image_token_id]
        assert ids[:577] == [proc.image_token_id] * 577, "image tokens first"
        pix = inputs["pixel_values"].numpy()
        print(f"  {prompt!r}: pixel_values vs direct normalisation {maxdiff(pix, pix_direct):.2e}")
        with torch.no_grad():
            feats = model.model.get_image_features(inputs["pixel_values"]).pooler_output
            emb = model.get_input_embeddings()(inputs["input_ids"])
            emb = emb.masked_scatter((inputs["input_ids"] == proc.image_token_id)[..., None], feats)
            enc = model.model.language_model.encoder(inputs_embeds=emb,
                                                     attention_mask=inputs["attention_mask"]).last_hidden_state
            gen = model.generate(**inputs, generation_config=generation_config(), max_new_tokens=max_new,
                                 output_logits=True, return_dict_in_generate=True)
        seq = gen.sequences[0].tolist()
        assert seq[0] == 2
        tokens = seq[1:]
        if tokens and tokens[-1] == 2:
            tokens = tokens[:-1]
        steps = torch.stack([l[0] for l in gen.logits]).numpy()

        # The exported graphs must reproduce transformers.
        o_feats = ort_fp32.image_features(pix)
        o_enc, mask = ort_fp32.encode(o_feats, text_ids)
        o_tokens, o_steps = ort_fp32.greedy(o_enc, mask, max_new)
        print(f"    image_features |ort-torch| {maxdiff(o_feats, feats):.2e}, encoder {maxdiff(o_enc, enc):.2e}, "
              f"logits {maxdiff(o_steps[:len(steps)], steps[:len(o_steps)]):.2e}, min top-1 margin {margins(steps):.4f}")
        assert o_tokens == tokens, f"onnxruntime fp32 tokens {o_tokens} != transformers {tokens}"
        text = proc.batch_decode(gen.sequences, skip_special_tokens=False)[0]
        case = {
            "task": task, "text_input": arg, "prompt": proc._construct_prompts(prompt)[0],
            "input_ids": text_ids, "tokens": tokens, "decoded": text,
            "parsed": proc.post_process_generation(text=text, task=task, image_size=img.size)[task],
            "min_top1_margin": margins(steps),
            "logits": save_f32(ref / f"case{ci}_logits.bin", steps),
        }
        if not feats_saved:
            case["image_features"] = save_f32(ref / "image_features.bin", feats.numpy())
            case["encoder_output"] = save_f32(ref / f"case{ci}_encoder.bin", enc.numpy())
            # A sample of pixel_values (the full tensor is 7 MB) at fixed pseudo-random positions.
            rs = np.random.RandomState(11)
            idx = rs.choice(pix.size, 4096, replace=False)
            case["pixel_values_sample"] = {"index": idx.tolist(), "value": pix.reshape(-1)[idx].tolist()}
            feats_saved = True
        if ort_int8 is not None:
            q_feats = ort_int8.image_features(pix)
            q_enc, _ = ort_int8.encode(q_feats, text_ids)
            q_tokens, q_steps = ort_int8.greedy(q_enc, mask, max_new)
            case["int8"] = {"tokens": q_tokens, "min_top1_margin": margins(q_steps)}
            if ci == 0:
                case["int8"]["logits"] = save_f32(ref / f"case{ci}_int8_logits.bin", q_steps)
            print(f"    int8 tokens {q_tokens} (fp32 {tokens}), int8 margin {margins(q_steps):.4f}, "
                  f"|int8-fp32| logits {maxdiff(q_steps[:len(steps)], steps[:len(q_steps)]):.3f}")
        meta["cases"].append(case)
        print(f"    tokens {tokens}\n    decoded {text!r}")
    (ref / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


def write_preprocess_reference(proc, out: Path):
    """A non-square image (downscaled in x, upscaled in y): the processor's resized uint8 image
    (lossless PNG) and a sample of its pixel_values."""
    from PIL import Image

    ref = out / "reference"
    src = synthetic_image(1000, 600, seed=5)
    src.save(ref / "preprocess_src.png", optimize=True)
    src = Image.open(ref / "preprocess_src.png").convert("RGB")
    resized = src.resize((768, 768), resample=Image.Resampling.BICUBIC, reducing_gap=None)
    resized.save(ref / "preprocess_resized.png", optimize=True)
    pix = proc.image_processor(images=src, return_tensors="np")["pixel_values"]
    direct = ((np.asarray(resized, np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32))
              / np.array(IMAGENET_STD, np.float32)).transpose(2, 0, 1)[None]
    print(f"  preprocess: processor pixel_values vs PIL resize + normalise {maxdiff(pix, direct):.2e}")
    rs = np.random.RandomState(12)
    idx = rs.choice(pix.size, 8192, replace=False)
    meta = {"source": "preprocess_src.png", "resized": "preprocess_resized.png", "shape": list(pix.shape),
            "sample": {"index": idx.tolist(), "value": pix.reshape(-1)[idx].tolist()},
            "sum": float(pix.astype(np.float64).sum()), "abs_sum": float(np.abs(pix.astype(np.float64)).sum())}
    (ref / "preprocess.json").write_text(json.dumps(meta) + "\n")


def write_postprocess_reference(proc, out: Path):
    """The reference post-processor's answers on fixed generated texts."""
    L = lambda *n: "".join(f"<loc_{i}>" for i in n)  # noqa: E731
    texts = [
        ("<OD>", "</s><s>person" + L(100, 200, 300, 400) + "car" + L(5, 6, 700, 800) + "</s>", (640, 480)),
        ("<OD>", "</s><s>traffic light" + L(0, 0, 999, 999) + L(10, 20, 30, 40) + "dog" + L(1, 2, 3) + "</s>", (1000, 600)),
        ("<OD>", "</s><s>" + L(1, 2, 3, 4) + "cat" + L(11, 12, 13, 14) + "</s>", (333, 777)),
        ("<OD>", "</s><s>nothing here</s>", (640, 480)),
        ("<CAPTION_TO_PHRASE_GROUNDING>",
         "</s><s>a person" + L(101, 202, 303, 404) + " on the path" + L(1, 500, 999, 998) + "</s>", (640, 480)),
        ("<CAPTION_TO_PHRASE_GROUNDING>",
         "</s><s>it" + L(1, 2, 3, 4) + "two dogs" + L(10, 10, 20, 20) + L(30, 30, 40, 40) + "</s>", (1280, 720)),
        ("<CAPTION_TO_PHRASE_GROUNDING>", "</s><s>caf\u00e9 table" + L(400, 401, 402, 403) + "<pad></s>", (500, 500)),
        ("<OPEN_VOCABULARY_DETECTION>", "</s><s>red car" + L(12, 34, 560, 780) + "</s>", (1920, 1080)),
        ("<OPEN_VOCABULARY_DETECTION>", "</s><s>bus" + L(12, 34, 560, 780) + L(1, 1, 2, 2) + "</s>", (641, 479)),
        ("<CAPTION>", "</s><s>A person walking on the path.</s>", (640, 480)),
        ("<DETAILED_CAPTION>", "</s><s> Two dogs<pad> </s>", (640, 480)),
    ]
    cases = []
    for task, text, size in texts:
        got = proc.post_process_generation(text=text, task=task, image_size=size)[task]
        cases.append({"task": task, "text": text, "image_size": list(size), "expected": got})
    (out / "reference" / "postprocess.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"  postprocess: {len(cases)} cases")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tiny", action="store_true")
    g.add_argument("--full", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out or (REPO / "tests/fixtures/vlm/florence2-tiny" if args.tiny
                       else Path("/work/scratch-florence/florence2-base"))
    if out.exists():
        shutil.rmtree(out)
    (out / "onnx").mkdir(parents=True)

    tok = build_tokenizer(512)
    tok.save(str(out / "tokenizer.json"))
    proc, hf_tok, ip, post = build_processor(out)
    write_processor_files(out, hf_tok, ip, post)
    model = build_model(args.tiny, tok.get_vocab_size(), proc.image_token_id, args.seed)
    cfg = model.config.to_dict()
    cfg.pop("_attn_implementation_autoset", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    generation_config().save_pretrained(str(out))
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"tokenizer vocab {tok.get_vocab_size()}, model vocab {model.config.text_config.vocab_size}")

    d = model.config.text_config.d_model
    export_all(model, out / "onnx", d)
    quantize(out / "onnx", ["_int8"] if args.tiny else ["_int8", "_uint8", "_quantized"])
    if args.tiny:
        q4_file(out / "onnx")
    write_reference(model, proc, out, args.tiny, args.max_new_tokens)
    write_preprocess_reference(proc, out)
    write_postprocess_reference(proc, out)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"done: {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
