#!/usr/bin/env python3
"""A/B latency of two model folders in lookout (tract), interleaved in one run.

    /opt/ortvenv/bin/python benches/ab_models.py A_DIR B_DIR [--threads 1 2] [--rounds 3] [--iters 20]
        [--lookout target/release/lookout] [--lookout-b OTHER_BINARY] [--image tests/fixtures/images/messi5.jpg]

Each round runs `lookout bench --json` on A then B (then swaps the order in the next round, so drift in
machine load hits both alike) and the reported figure per side is the median of the per-round medians of
`--iters` timed inferences. Used to decide whether a rewritten graph (models/tools/optimize_graph.py) is
faster than the original; with --lookout-b (and A_DIR = B_DIR) it compares two builds of lookout on one
model instead. No assertions; these are measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(binary, model, threads, iters, image):
    out = subprocess.run([binary, "bench", "--model", model, "--threads", str(threads), "--iters", str(iters),
                          "--json", image], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["median_ms"]["inference"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--lookout", default=os.path.join(ROOT, "target", "release", "lookout"))
    ap.add_argument("--lookout-b", help="binary for the B side (default: --lookout)")
    ap.add_argument("--image", default=os.path.join(ROOT, "tests", "fixtures", "images", "messi5.jpg"))
    a = ap.parse_args()
    for t in a.threads:
        sides = {"a": (a.lookout, a.a), "b": (a.lookout_b or a.lookout, a.b)}
        got = {"a": [], "b": []}
        for r in range(a.rounds):
            for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
                binary, model = sides[side]
                got[side].append(bench(binary, model, t, a.iters, a.image))
        ma, mb = statistics.median(got["a"]), statistics.median(got["b"])
        print(json.dumps({"threads": t, "a": a.a, "b": a.b, "a_ms": round(ma, 2), "b_ms": round(mb, 2),
                          "b_over_a": round(mb / ma, 3), "a_rounds": [round(x, 2) for x in got["a"]],
                          "b_rounds": [round(x, 2) for x in got["b"]],
                          **({"lookout_b": a.lookout_b} if a.lookout_b else {})}), flush=True)


if __name__ == "__main__":
    main()
