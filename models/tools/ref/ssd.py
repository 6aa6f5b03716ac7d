"""SSD-style reference decode (models/README.md, family ``ssd``).

Without built-in NMS: boxes ``[1, N, 4]`` + scores ``[1, N, C]`` (or C+1 with a background column 0).
  box_format: xyxy | yxyx | cxcywh; normalized: coordinates are fractions of the input (x * W_in, y * H_in);
  background_class: column 0 is background and is skipped; class id = column - 1 (so the labels file
  has no background line); score = max over the remaining columns, class = argmax; keep score >= conf.
With built-in NMS (``builtin_nms = true``): boxes ``[1, K, 4]``, scores ``[1, K]``, classes ``[1, K]``,
  optional count ``[1]`` (only the first count rows are valid); keep score >= conf; class id = classes
  value (minus 1 when background_class, i.e. 1-based ids); no further NMS.
Output names: ``boxes_output``, ``scores_output``, ``classes_output``, ``count_output``; when absent, the
  outputs are taken in graph order (boxes, scores[, classes[, count]]).
"""

from __future__ import annotations

import numpy as np

from .common import input_hw, output


def builtin_nms(manifest: dict) -> bool:
    return bool(manifest.get("decode", {}).get("builtin_nms", False))


def _to_xyxy(b: np.ndarray, fmt: str, normalized: bool, H: int, W: int) -> np.ndarray:
    b = b.astype(np.float32)
    if fmt == "xyxy":
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    elif fmt == "yxyx":
        y1, x1, y2, x2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    elif fmt == "cxcywh":
        cx, cy, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:
        raise ValueError(f"unknown box_format {fmt!r}")
    xy = np.stack([x1, y1, x2, y2], 1)
    if normalized:
        xy = xy * np.array([W, H, W, H], dtype=np.float32)
    return xy


def decode(outputs: dict, manifest: dict, conf: float):
    dec = manifest.get("decode", {})
    fmt = dec.get("box_format", "xyxy").lower()
    normalized = bool(dec.get("normalized", True))
    background = bool(dec.get("background_class", False))
    H, W = input_hw(manifest)
    boxes = output(outputs, dec.get("boxes_output"), 0)
    scores = output(outputs, dec.get("scores_output"), 1)
    if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
        raise ValueError(f"ssd boxes must be [1, N, 4], got {boxes.shape}")
    xyxy = _to_xyxy(boxes[0], fmt, normalized, H, W)
    dets = []
    if builtin_nms(manifest):
        classes = output(outputs, dec.get("classes_output"), 2)
        sc = scores.reshape(-1).astype(np.float32)
        cl = classes.reshape(-1)
        k = len(sc)
        cname = dec.get("count_output")
        if cname is not None:
            k = min(k, int(np.asarray(outputs[cname]).reshape(-1)[0]))
        for i in range(k):
            if sc[i] >= conf:
                c = int(round(float(cl[i]))) - (1 if background else 0)
                if c < 0:
                    continue
                dets.append((c, float(sc[i]), *(float(v) for v in xyxy[i])))
        return dets
    if scores.ndim != 3 or scores.shape[0] != 1 or scores.shape[1] != boxes.shape[1]:
        raise ValueError(f"ssd scores must be [1, N, C], got {scores.shape} with boxes {boxes.shape}")
    sc = scores[0].astype(np.float32)
    if background:
        sc = sc[:, 1:]
    cid = sc.argmax(1)
    best = sc[np.arange(len(cid)), cid]
    for i in np.nonzero(best >= conf)[0]:
        dets.append((int(cid[i]), float(best[i]), *(float(v) for v in xyxy[i])))
    return dets
