#!/usr/bin/env python3
"""SmolVLM-256M (random weights, real sizes) on tract (lookout) vs onnxruntime, in one run.

    /opt/vlmvenv/bin/python models/tools/make_vlm_smolvlm.py --full          # once: the model (~1.5 GB)
    cargo build --release                                                    # or a dev build: --lookout PATH
    /opt/ortvenv/bin/python benches/vlm_smolvlm.py [--model DIR] [--lookout BIN] [--tokens N] [--threads T]

For each variant (fp32, int8) and engine it starts a fresh process, generates greedily from the reference
image and prompt of `DIR/reference/reference.json`, and reports vision-encoder ms, prefill ms (token
embedding + decoder over the prompt), decode ms per token, new-token count and the process's peak RSS
(wait4 ru_maxrss). tract's figures come from `lookout describe --json`; onnxruntime runs the same three
graphs with the same loop here (one intra-op thread unless --threads). Each figure is one generation
right after loading (no warm-up run in either engine). Writes a Markdown table on stdout and
JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_MODEL = "/work/scratch-smolvlm/smolvlm-256m-random"


def ort_worker(model, suffix, tokens, threads):
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    ref = json.load(open(os.path.join(model, "reference", "reference.json")))
    cfg = json.load(open(os.path.join(model, "config.json")))
    tc = cfg["text_config"]
    L, KV, D = tc["num_hidden_layers"], tc["num_key_value_heads"], tc["head_dim"]
    eou = ref["end_of_utterance_id"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    sess = {g: ort.InferenceSession(os.path.join(model, "onnx", f"{g}{suffix}.onnx"), so,
                                    providers=["CPUExecutionProvider"])
            for g in ("vision_encoder", "embed_tokens", "decoder_model_merged")}
    load_ms = (time.perf_counter() - t0) * 1e3
    u8 = np.asarray(Image.open(os.path.join(model, "reference", ref["pixel_values_u8"])).convert("RGB"))
    pv = ((u8.astype(np.float64) / 255.0).astype(np.float32) - 0.5) / 0.5
    pv = pv.transpose(2, 0, 1)[None, None].copy()
    mask = np.ones((1, 1, pv.shape[-2], pv.shape[-1]), bool)
    ids = np.array([ref["input_ids"]], np.int64)

    t = time.perf_counter()
    feats = sess["vision_encoder"].run(None, {"pixel_values": pv, "pixel_attention_mask": mask})[0]
    vision_ms = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    emb = sess["embed_tokens"].run(None, {"input_ids": ids})[0]
    rows = np.where(ids[0] == cfg["image_token_id"])[0]
    emb[0, rows] = feats.reshape(-1, feats.shape[-1])
    dec = sess["decoder_model_merged"]
    names = [o.name for o in dec.get_outputs()]
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, KV, 0, D), np.float32) for i in range(L) for kv in ("key", "value")}
    seq = ids.shape[1]
    out = dec.run(None, {"inputs_embeds": emb, "attention_mask": np.ones((1, seq), np.int64),
                         "position_ids": np.arange(seq, dtype=np.int64)[None], **past})
    prefill_ms = (time.perf_counter() - t) * 1e3

    toks, steps, total = [], 0, seq
    t = time.perf_counter()
    while True:
        nxt = int(np.argmax(out[0][0, -1]))
        if nxt == eou:
            break
        toks.append(nxt)
        if len(toks) >= tokens:
            break
        for n, v in zip(names[1:], out[1:]):
            past[n.replace("present", "past_key_values")] = v
        e = sess["embed_tokens"].run(None, {"input_ids": np.array([[nxt]], np.int64)})[0]
        out = dec.run(None, {"inputs_embeds": e, "attention_mask": np.ones((1, total + 1), np.int64),
                             "position_ids": np.array([[total]], np.int64), **past})
        total += 1
        steps += 1
    decode_ms = (time.perf_counter() - t) * 1e3
    print(json.dumps({"load_ms": load_ms, "token_ids": toks, "prompt_tokens": seq,
                      "timings": {"vision_ms": vision_ms, "prefill_ms": prefill_ms,
                                  "decode_ms_per_token": decode_ms / steps if steps else 0.0}}))


def run_measured(cmd):
    """Runs cmd, returns (stdout, peak RSS in MB, wall s)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode(errors='replace')}")
    return out.decode(), ru.ru_maxrss / 1024.0, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--lookout", default="target/release/lookout")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--out", default=None)
    ap.add_argument("--ort-worker", nargs=2, metavar=("SUFFIX", "TOKENS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_worker:
        return ort_worker(a.model, a.ort_worker[0], int(a.ort_worker[1]), a.threads)

    ref = json.load(open(os.path.join(a.model, "reference", "reference.json")))
    image = os.path.join(a.model, "reference", ref["image"])
    rows = []
    for variant in a.variants.split(","):
        suffix = "" if variant == "fp32" else f"_{variant}"
        runs = {
            "tract (lookout)": [a.lookout, "describe", "--json", "--vlm", a.model, "--variant", variant,
                                "--threads", str(a.threads), "--max-new-tokens", str(a.tokens),
                                "--prompt", ref["prompt"], image],
            "onnxruntime": [sys.executable, os.path.abspath(__file__), "--model", a.model, "--threads",
                            str(a.threads), "--ort-worker", suffix, str(a.tokens)],
        }
        for engine, cmd in runs.items():
            out, rss, wall = run_measured(cmd)
            g = json.loads(out.strip().splitlines()[-1])
            rows.append({"variant": variant, "engine": engine, **g["timings"], "peak_rss_mb": rss, "wall_s": wall,
                         "new_tokens": len(g["token_ids"]), "prompt_tokens": g["prompt_tokens"],
                         "token_ids": g["token_ids"]})
            print(f"{variant:5} {engine:16} vision {g['timings']['vision_ms']:8.0f} ms  prefill "
                  f"{g['timings']['prefill_ms']:7.0f} ms  decode {g['timings']['decode_ms_per_token']:6.1f} ms/token  "
                  f"rss {rss:6.0f} MB", file=sys.stderr, flush=True)
    print(f"| variant | engine | vision encoder ms | prefill ms ({rows[0]['prompt_tokens']} tokens) | "
          "decode ms/token | peak RSS MB | new tokens |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['engine']} | {r['vision_ms']:.0f} | {r['prefill_ms']:.0f} | "
              f"{r['decode_ms_per_token']:.1f} | {r['peak_rss_mb']:.0f} | {r['new_tokens']} |")
    with open(os.path.join(a.model, "..", "vlm_bench.json") if a.out is None else a.out, "w") as f:
        json.dump({"load_avg_at_end": os.getloadavg(), "threads": a.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
