"""YOLOX reference decode, after YOLOX's ``yolox/utils/demo_utils.py::demo_postprocess``.

Output ``[1, N, 5 + C]``, N = sum over strides of (H/stride) * (W/stride), cells row-major per stride:
  cx, cy = (v + grid) * stride;  w, h = exp(v) * stride;  obj and class scores already sigmoid;
  score = obj * max(cls), class = argmax(cls); keep score >= conf.
"""

from __future__ import annotations

import numpy as np

from .common import input_hw, output


def grids(in_h: int, in_w: int, strides):
    gs, ss = [], []
    for s in strides:
        hs, ws = in_h // s, in_w // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        gs.append(np.stack((xv, yv), 2).reshape(-1, 2))
        ss.append(np.full((hs * ws, 1), s))
    return np.concatenate(gs, 0).astype(np.float32), np.concatenate(ss, 0).astype(np.float32)


def decode(outputs: dict, manifest: dict, conf: float):
    dec = manifest.get("decode", {})
    strides = dec.get("strides", [8, 16, 32])
    out = output(outputs, dec.get("output")).astype(np.float32)
    if out.ndim != 3 or out.shape[0] != 1:
        raise ValueError(f"yolox output must be [1, N, 5+C], got {out.shape}")
    pred = out[0]
    H, W = input_hw(manifest)
    grid, stride = grids(H, W, strides)
    if grid.shape[0] != pred.shape[0]:
        raise ValueError(f"yolox: {pred.shape[0]} rows, strides {strides} at {H}x{W} give {grid.shape[0]}")
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(pred[:, 2:4]) * stride
    obj = pred[:, 4]
    cls = pred[:, 5:]
    cid = cls.argmax(1)
    score = obj * cls[np.arange(len(cid)), cid]
    dets = []
    for i in np.nonzero(score >= conf)[0]:
        cx, cy = float(xy[i, 0]), float(xy[i, 1])
        w, h = float(wh[i, 0]), float(wh[i, 1])
        dets.append((int(cid[i]), float(score[i]), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return dets
