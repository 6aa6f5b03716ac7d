#!/usr/bin/env python3
"""onnxruntime, 1 thread, on models/selfie-seg: the model alone and a whole person mask through
models/tools/ref/segment.py, on the same photo and box as benches/segment.rs (median of 20 after 3
warm-ups).

    /opt/ortvenv/bin/python benches/segment_ort.py
"""
import os
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models", "tools"))
from ref import segment as S  # noqa: E402


def median_ms(f):
    for _ in range(3):
        f()
    v = []
    for _ in range(20):
        t = time.perf_counter()
        f()
        v.append((time.perf_counter() - t) * 1e3)
    return float(np.median(v))


so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(os.path.join(ROOT, "models/selfie-seg/selfie-seg.onnx"), so,
                            providers=["CPUExecutionProvider"])
run = lambda x: sess.run(None, {"input": x})[0]  # noqa: E731
rgb = cv2.imread(os.path.join(ROOT, "tests/fixtures/images/basketball1.png"))[..., ::-1].copy()
box = [35, 84, 170, 475]
left, top, side = S.cut(box, rgb.shape[1], rgb.shape[0])
x = S.tensor(S.square(rgb, left, top, side))
model = median_ms(lambda: run(x))
mask = median_ms(lambda: S.mask(rgb, box, run))
print(f"selfie-seg onnxruntime {ort.__version__} 1 thread: probabilities {model:.2f} ms, person mask {mask:.2f} ms")
