#!/usr/bin/env python3
"""Writes tests/fixtures/models/qdq/shipped-{model}.json: onnxruntime's first output of the shipped
QDQ detectors (models/nanodet-g-int8-qdq; CenterNet's first output is its top-100 list, whose order
any rounding difference reshuffles) on a synthetic input that
Rust and Python compute exactly alike (x[i] = (k(i) − 128) / 32 with k an integer pattern), sampled
at every 211th value so that the fixture stays small. Two onnxruntime plans: its default one, which
fuses DequantizeLinear → Conv → QuantizeLinear into QLinearConv (integer arithmetic, as lookout's
QdqConv pass does), and ORT_DISABLE_ALL (float convs between DequantizeLinear and QuantizeLinear, as
tract's own plan does). tests/engine_qdq.rs compares lookout and tract with both.
Needs numpy, onnxruntime (models/tools/requirements-reference.txt): python models/tools/make_qdq_model_fixture.py
"""
import json
import os

import numpy as np
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODELS = {
    "nanodet-g-int8-qdq": ("nanodet-g.int8-qdq.onnx", [1, 3, 416, 416]),
}
STEP = 211


def synthetic(shape):
    """Same formula as tests/engine_qdq.rs `synthetic_input`: smooth stripes plus a pattern."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    w = shape[-1]
    k = ((i % w) * 3 + (i // w) * 5 + (i * 7919) % 61) % 256
    return ((k - 128).astype(np.float32) / np.float32(32)).reshape(shape)


def main():
    for name, (fname, shape) in MODELS.items():
        path = os.path.join(ROOT, "models", name, fname)
        if not os.path.exists(path):
            cands = [f for f in os.listdir(os.path.join(ROOT, "models", name)) if f.endswith(".onnx")]
            path = os.path.join(ROOT, "models", name, cands[0])
        res = {"model": os.path.relpath(path, ROOT), "onnxruntime": ort.__version__, "step": STEP}
        for level, key in [(ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "fused"),
                           (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "unfused")]:
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            so.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            shp = shape or [d if isinstance(d, int) else 1 for d in inp.shape]
            res["shape"] = shp
            y = sess.run(None, {inp.name: synthetic(shp)})[0].astype(np.float32).ravel()
            res["len"] = int(y.size)
            res[key] = [float(v) for v in y[::STEP]]
        d = np.abs(np.array(res["fused"]) - np.array(res["unfused"]))
        print(f"{name}: fused vs unfused onnxruntime: {int((d > 0).sum())} of {d.size} sampled values differ,"
              f" by at most {d.max():.6g}")
        out = os.path.join(ROOT, "tests", "fixtures", "models", "qdq", f"shipped-{name}.json")
        with open(out, "w") as f:
            json.dump(res, f)
        print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
    main()
