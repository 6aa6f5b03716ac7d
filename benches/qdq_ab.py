"""QDQ int8 detectors in lookout: tract's own plan (LOOKOUT_PLAIN_TRACT=1) vs lookout's passes, and
the same network as QLinearConv for reference, at several thread counts, all interleaved in one run.

    python3 benches/qdq_ab.py [--lookout BIN] [--threads 1,2] [--rounds 5] [--iters 10]
        [--models nanodet-g-int8-qdq,nanodet-g-int8]

Each round runs `lookout bench --json` once per (model, plain/lookout, threads), in turn, in an order
that is rotated every round so that drift in machine load hits every cell alike; the figure per cell
is the median over rounds of each run's median inference ms. Prints a Markdown table (plain ms,
lookout ms, speed-up of lookout over plain, and each thread count's speed-up over the first), the
load average before and after, and the build's path. Standard library only. No assertions.
"""

import argparse
import json
import os
import statistics
import subprocess
import time


def bench(binary, model, threads, iters, plain):
    env = dict(os.environ)
    env.pop("LOOKOUT_PLAIN_TRACT", None)
    if plain:
        env["LOOKOUT_PLAIN_TRACT"] = "1"
    out = subprocess.run([binary, "bench", "--model", model, "--threads", str(threads), "--iters", str(iters),
                          "--json"], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]["inference"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookout", default="target/debug/lookout")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--models", default="nanodet-g-int8-qdq,nanodet-g-int8")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    models = a.models.split(",")
    cells = [(m, plain, t) for m in models for plain in (True, False) for t in threads]
    before = os.getloadavg()
    start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ms = {c: [] for c in cells}
    for r in range(a.rounds):
        k = r % len(cells)
        for c in cells[k:] + cells[:k]:
            ms[c].append(bench(a.lookout, c[0], c[2], a.iters, c[1]))
    after = os.getloadavg()
    print(f"{start}, {a.lookout}; load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in before)} before, "
          f"{'/'.join(f'{x:.2f}' for x in after)} after; {os.cpu_count()} CPUs; "
          f"{a.rounds} rounds x {a.iters} iterations, interleaved\n")
    print("| model | threads | tract plain ms | lookout ms | lookout speed-up | plain "
          f"{threads[0]}→t | lookout {threads[0]}→t |")
    print("|---|---|---|---|---|---|---|")
    for m in models:
        med = {(p, t): statistics.median(ms[(m, p, t)]) for p in (True, False) for t in threads}
        for t in threads:
            p, l = med[(True, t)], med[(False, t)]
            print(f"| {m} | {t} | {p:.1f} | {l:.1f} | {p / l:.2f}× | {med[(True, threads[0])] / p:.2f}× "
                  f"| {med[(False, threads[0])] / l:.2f}× |")


if __name__ == "__main__":
    main()
