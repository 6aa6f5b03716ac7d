"""NanoDet (GFL head) reference decode, after RangiLyu/nanodet ``GFLHead`` / ``Integral`` post-processing.

Per stride s (``[decode].strides``) the model has two outputs over the N = (H/s)·(W/s) cells of that
level, cells row-major (col = i % (W/s), row = i // (W/s)):
  * class map ``[1, N, C]``: per-class scores, already sigmoid unless ``cls_sigmoid = true``;
  * box map ``[1, N, 4·(reg_max+1)]``: for the sides left, top, right, bottom (in that order) the logits of
    a discrete distribution over 0..reg_max; distance = Σ softmax(bins)·k · s.
  centre = ((col + center_offset)·s, (row + center_offset)·s); box = (cx - l, cy - t, cx + r, cy + b).
  score = max class score, class = argmax; keep score >= conf.
Outputs are recognised by shape (N and last dimension), not by name, so any output order works.
"""

from __future__ import annotations

import numpy as np

from .common import input_hw


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _level_outputs(outputs: dict, n: int, nbins4: int):
    cls = box = None
    for name, v in outputs.items():
        a = np.asarray(v)
        if a.ndim == 3 and a.shape[0] == 1 and a.shape[1] == n:
            if a.shape[2] == nbins4 and box is None:
                box = a[0]
            elif cls is None:
                cls = a[0]
    if cls is None or box is None:
        shapes = {k: list(np.asarray(v).shape) for k, v in outputs.items()}
        raise ValueError(f"nanodet: no class/box outputs with {n} cells (box dim {nbins4}) in {shapes}")
    return cls.astype(np.float32), box.astype(np.float32)


def decode(outputs: dict, manifest: dict, conf: float):
    dec = manifest.get("decode", {})
    strides = dec.get("strides", [8, 16, 32])
    reg_max = int(dec.get("reg_max", 7))
    off = float(dec.get("center_offset", 0.0))
    cls_sigmoid = bool(dec.get("cls_sigmoid", False))
    H, W = input_hw(manifest)
    nb = reg_max + 1
    proj = np.arange(nb, dtype=np.float32)
    dets = []
    for s in strides:
        gw, gh = W // s, H // s
        cls, box = _level_outputs(outputs, gw * gh, 4 * nb)
        if cls_sigmoid:
            cls = _sigmoid(cls)
        cid = cls.argmax(1)
        score = cls[np.arange(len(cid)), cid]
        keep = np.nonzero(score >= conf)[0]
        if len(keep) == 0:
            continue
        logits = box[keep].reshape(-1, 4, nb)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        dist = (e / e.sum(-1, keepdims=True)) @ proj * s  # [k, 4] = l, t, r, b in pixels
        for k, i in enumerate(keep):
            cx = (i % gw + off) * s
            cy = (i // gw + off) * s
            l, t, r, b = (float(v) for v in dist[k])
            dets.append((int(cid[i]), float(score[i]), cx - l, cy - t, cx + r, cy + b))
    return dets
