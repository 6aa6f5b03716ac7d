#!/usr/bin/env python3
"""Where onnxruntime's time goes in one ONNX graph, per operator kind: the other half of
`cargo run --release --example qmatmul_profile -- FILE ... --ours` (lookout's plan, per tract op kind).

    /opt/ortvenv/bin/python benches/ort_profile.py FILE.onnx [--runs N] [--threads T] [DIM=VALUE ...]

Inputs are what qmatmul_profile feeds: symbolic dimensions 1 unless DIM=VALUE says otherwise, f32
values ((i % 97) - 48) / 60, bool true, integers 1. One warm-up run, then N profiled runs (default
3), sequential execution, all graph optimisations. Prints ms per run for each operator kind, largest
first, and their total.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("dims", nargs="*", help="DIM=VALUE for symbolic input dimensions")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    given = dict(d.split("=", 1) for d in a.dims)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(a.file, so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = [int(given.get(d, 1)) if isinstance(d, str) or d is None else d for d in i.shape]
        n = int(np.prod(shape))
        if "bool" in i.type:
            feeds[i.name] = np.ones(shape, dtype=bool)
        elif "int64" in i.type:
            feeds[i.name] = np.ones(shape, dtype=np.int64)
        else:
            feeds[i.name] = ((np.arange(n) % 97 - 48) / 60).astype(np.float32).reshape(shape)
    s.run(None, feeds)
    # A second session with profiling on, so that the warm-up above is not in its file.
    so.enable_profiling = True
    so.profile_file_prefix = "/tmp/ort_profile"
    s = ort.InferenceSession(a.file, so, providers=["CPUExecutionProvider"])
    for _ in range(a.runs + 1):
        s.run(None, feeds)
    path = s.end_profiling()
    events = json.load(open(path))
    os.remove(path)
    # The first run of this session is its warm-up: only the later `model_run`s count.
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    start = runs[1]["ts"] if len(runs) > 1 else 0
    ms, nodes = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            ms[e["args"]["op_name"]] += e["dur"] / 1000 / a.runs
            nodes[e["args"]["op_name"]] += 1
    print(f"-- onnxruntime {ort.__version__}: {a.file}, {a.threads} thread(s), {a.runs} runs:"
          f" profiled {sum(ms.values()):.2f} ms per run")
    for op, v in ms.most_common(12):
        print(f"  {v:9.3f} ms {nodes[op] // a.runs:4d} x {op}")


if __name__ == "__main__":
    main()
