#!/usr/bin/env python3
"""Florence-2-base (random weights, real sizes) under onnxruntime and tract, in one run.

    /opt/florencevenv/bin/python models/tools/make_vlm_florence2.py --full     # once, ~3 GB in /work/scratch-florence
    /opt/florencevenv/bin/python benches/vlm_florence2.py [--dir DIR] [--variants "" _int8] [--threads 1]

For each variant, onnxruntime runs in a child process of its own (so its peak RSS is its own) and
then `cargo run --release --example florence2_bench` runs tract on the same files. Both do the same
work on the same input (the fixture script's 768×768 test image, prompt `<CAPTION>`): the vision
encoder, the text encoder (embed_tokens + encoder_model over 577 + 9 tokens), the first decoder step
(decoder_model) and greedy steps with the KV cache (decoder_with_past_model). Medians over --iters.
Prints a Markdown table and writes the raw figures to DIR/bench.json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model", "decoder_model", "decoder_with_past_model"]


def ort_child(dir_: Path, variant: str, threads: int, iters: int, tokens: int):
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t = time.perf_counter()
    s = {g: ort.InferenceSession(str(dir_ / "onnx" / f"{g}{variant}.onnx"), so, providers=["CPUExecutionProvider"])
         for g in GRAPHS}
    load_s = time.perf_counter() - t
    cfg = json.loads((dir_ / "config.json").read_text())
    n_layers = cfg["text_config"]["decoder_layers"]
    img = Image.open(dir_ / "reference/image.png").convert("RGB").resize((768, 768), Image.Resampling.BICUBIC)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    pix = ((np.asarray(img, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None].copy()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(dir_ / "tokenizer.json"))
    ids = tok.encode("<s>What does the image describe?</s>", add_special_tokens=False).ids

    def embed(x):
        return s["embed_tokens"].run(None, {"input_ids": np.array([x], np.int64)})[0]

    vision, encoder, first, per_token = [], [], [], []
    generated = []
    for _ in range(iters):
        t = time.perf_counter()
        feats = s["vision_encoder"].run(None, {"pixel_values": pix})[0]
        vision.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        emb = np.concatenate([feats, embed(ids)], axis=1)
        mask = np.ones((1, emb.shape[1]), np.int64)
        enc = s["encoder_model"].run(None, {"inputs_embeds": emb, "attention_mask": mask})[0]
        encoder.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        out = s["decoder_model"].run(None, {"inputs_embeds": embed([2]), "encoder_attention_mask": mask,
                                            "encoder_hidden_states": enc})
        first.append((time.perf_counter() - t) * 1e3)
        logits, kv = out[0], out[1:]
        toks = []
        t = time.perf_counter()
        steps = 0
        while True:
            tok_id = 0 if not toks else int(np.argmax(logits[0, -1]))
            if tok_id == 2:
                break
            toks.append(tok_id)
            if len(toks) >= tokens:
                break
            feeds = {"inputs_embeds": embed([tok_id]), "encoder_attention_mask": mask}
            for i in range(n_layers):
                for k, part in enumerate(["decoder.key", "decoder.value", "encoder.key", "encoder.value"]):
                    feeds[f"past_key_values.{i}.{part}"] = kv[4 * i + k]
            out = s["decoder_with_past_model"].run(None, feeds)
            logits = out[0]
            for i in range(n_layers):
                kv[4 * i], kv[4 * i + 1] = out[1 + 2 * i], out[2 + 2 * i]
            steps += 1
        if steps:
            per_token.append((time.perf_counter() - t) * 1e3 / steps)
        generated = toks
    med = lambda v: sorted(v)[len(v) // 2] if v else float("nan")  # noqa: E731
    return {
        "runtime": "onnxruntime", "variant": variant, "threads": threads, "load_s": load_s,
        "vision_ms": med(vision), "encoder_ms": med(encoder), "first_step_ms": med(first),
        "decode_ms_per_token": med(per_token), "tokens": len(generated), "token_ids": generated,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def run_ort(dir_, variant, threads, iters, tokens):
    cmd = [sys.executable, __file__, "--child", "--dir", str(dir_), "--variants", variant,
           "--threads", str(threads), "--iters", str(iters), "--tokens", str(tokens)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_tract(dir_, variant, threads, iters, tokens, binary=None):
    prog = [str(binary)] if binary else ["cargo", "run", "--release", "--quiet", "--example", "florence2_bench", "--"]
    cmd = prog + [str(dir_), "--variant", variant, "--threads", str(threads), "--iters", str(iters),
                  "--tokens", str(tokens)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/work/scratch-florence/florence2-base"))
    ap.add_argument("--variants", nargs="+", default=["", "_int8"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--tract-bin", type=Path, help="a built florence2_bench example (default: cargo run --release)")
    ap.add_argument("--out", type=Path, help="where to write the rows as JSON (default: DIR/bench.json)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(ort_child(args.dir, args.variants[0], args.threads, args.iters, args.tokens)))
        return
    # Greedy tokens of the same prompt from the fixture script: transformers (fp32) and
    # onnxruntime on the _int8 graphs; both runtimes here must reproduce them.
    ref = json.loads((args.dir / "reference/reference.json").read_text())["cases"][0]
    want = {"": ref["tokens"], "_int8": ref.get("int8", {}).get("tokens")}
    rows = []
    for v in args.variants:
        for runner in (run_ort, run_tract):
            extra = {"binary": args.tract_bin} if runner is run_tract else {}
            r = runner(args.dir, v, args.threads, args.iters, args.tokens, **extra)
            w = want.get(v)
            r["tokens_match_reference"] = None if w is None else r["token_ids"] == w[: len(r["token_ids"])]
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
    (args.out or args.dir / "bench.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"Florence-2-base sizes, random weights, {args.threads} thread(s), medians of {args.iters}; "
          f"`{os.uname().machine}`, {os.cpu_count()} cores\n")
    print("| variant | runtime | load s | vision encoder ms | text encoder ms | first decoder step ms "
          "| decode ms/token | tokens (= reference) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant'] or 'fp32'} | {r['runtime']} | {r['load_s']:.1f} | {r['vision_ms']:.0f} | "
              f"{r['encoder_ms']:.0f} | {r['first_step_ms']:.0f} | {r['decode_ms_per_token']:.1f} | "
              f"{r['tokens']} ({r['tokens_match_reference']}) | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
