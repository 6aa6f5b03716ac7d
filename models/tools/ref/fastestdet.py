"""FastestDet reference decode, after dog-qiuqiu/FastestDet ``example/onnx-runtime/runtime.py``.

Output ``[1, 5 + C, G_h, G_w]`` (NCHW, one grid):
  ch0 obj (sigmoid applied in-graph); ch1, ch2 centre offsets: cx = (col + tanh(v1)) / G_w,
  cy = (row + tanh(v2)) / G_h; ch3, ch4: w, h = sigmoid(v) as fractions of the input size;
  ch5.. class probabilities (softmax applied in-graph); score = obj^0.6 * max(cls)^0.4, class = argmax.
Differences from upstream (by the lookout contract): boxes stay as floats in input-tensor pixels
(upstream truncates to ints in source pixels) and the test is score >= conf (upstream: >).
"""

from __future__ import annotations

import numpy as np

from .common import input_hw, output


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def decode(outputs: dict, manifest: dict, conf: float):
    dec = manifest.get("decode", {})
    out = output(outputs, dec.get("output")).astype(np.float32)
    if out.ndim != 4 or out.shape[0] != 1:
        raise ValueError(f"fastestdet output must be [1, 5+C, G, G], got {out.shape}")
    fm = out[0].transpose(1, 2, 0)  # G_h x G_w x (5+C)
    gh, gw = fm.shape[:2]
    H, W = input_hw(manifest)
    obj = fm[..., 0]
    cls = fm[..., 5:]
    cid = cls.argmax(-1)
    cmax = np.take_along_axis(cls, cid[..., None], -1)[..., 0]
    # powers in float64 (upstream: float32 numpy scalars); compare scores with a small tolerance
    score = (np.power(obj.astype(np.float64), 0.6) * np.power(cmax.astype(np.float64), 0.4))
    dets = []
    for row, col in zip(*np.nonzero(score >= conf)):
        d = fm[row, col]
        cx = (col + np.tanh(float(d[1]))) / gw
        cy = (row + np.tanh(float(d[2]))) / gh
        bw, bh = _sigmoid(float(d[3])), _sigmoid(float(d[4]))
        x1, y1 = (cx - 0.5 * bw) * W, (cy - 0.5 * bh) * H
        x2, y2 = (cx + 0.5 * bw) * W, (cy + 0.5 * bh) * H
        dets.append((int(cid[row, col]), float(score[row, col]), x1, y1, x2, y2))
    return dets
