"""YOLOv8 / YOLO11 (Ultralytics export) reference decode, after ``ultralytics.utils.ops.non_max_suppression``.

Output ``[1, 4 + C, N]``: rows 0-3 cx, cy, w, h in input pixels; rows 4.. class scores (sigmoid applied
in-graph), no objectness; score = max(cls), class = argmax; keep score >= conf (Ultralytics: > conf).
"""

from __future__ import annotations

import numpy as np

from .common import output


def decode(outputs: dict, manifest: dict, conf: float):
    dec = manifest.get("decode", {})
    out = output(outputs, dec.get("output")).astype(np.float32)
    if out.ndim != 3 or out.shape[0] != 1:
        raise ValueError(f"yolov8 output must be [1, 4+C, N], got {out.shape}")
    pred = out[0].T  # N x (4+C)
    cls = pred[:, 4:]
    cid = cls.argmax(1)
    score = cls[np.arange(len(cid)), cid]
    dets = []
    for i in np.nonzero(score >= conf)[0]:
        cx, cy, w, h = (float(v) for v in pred[i, :4])
        dets.append((int(cid[i]), float(score[i]), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return dets
