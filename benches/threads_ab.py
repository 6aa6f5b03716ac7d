"""lookout at 1 and 2 (or more) threads, interleaved so every thread count sees the same load.

    python3 benches/threads_ab.py --lookout BIN MODEL_DIR... [--threads 1,2] [--rounds 5] [--iters 10]

Each round runs `lookout bench --json` once per model and thread count, in turn; the figure per
(model, threads) is the median over rounds of each run's median inference ms. Prints a Markdown
table with the speed-up of each thread count over the first, and the load average before and after.
Standard library only.
"""

import argparse
import json
import os
import statistics
import subprocess


def bench(binary, model, threads, iters):
    out = subprocess.run([binary, "bench", "--model", model, "--threads", str(threads), "--iters", str(iters),
                          "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]["inference"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookout", default="target/debug/lookout")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    before = os.getloadavg()
    ms = {(m, t): [] for m in a.models for t in threads}
    for _ in range(a.rounds):
        for m in a.models:
            for t in threads:
                ms[(m, t)].append(bench(a.lookout, m, t, a.iters))
    after = os.getloadavg()
    print(f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in before)} before, "
          f"{'/'.join(f'{x:.2f}' for x in after)} after; {os.cpu_count()} CPUs; "
          f"{a.rounds} rounds x {a.iters} iterations\n")
    print("| model | " + " | ".join(f"{t} thr ms" for t in threads) + " | "
          + " | ".join(f"{threads[0]}→{t} speed-up" for t in threads[1:]) + " |")
    print("|---" * (2 * len(threads)) + "|")
    for m in a.models:
        med = [statistics.median(ms[(m, t)]) for t in threads]
        print(f"| {os.path.basename(m.rstrip('/'))} | " + " | ".join(f"{x:.1f}" for x in med) + " | "
              + " | ".join(f"{med[0] / x:.2f}×" for x in med[1:]) + " |")


if __name__ == "__main__":
    main()
