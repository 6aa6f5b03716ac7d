"""Reference person masks (onnxruntime, or TensorFlow on the SavedModel) for lookout's `segment` room.

The same steps as src/segment/mod.rs, written with OpenCV and numpy:
  * the cut: a square around the box centre, side = round(max(w, h) * (1 + 2 * 0.1)) (the whole image,
    no margin, without a box), black where it leaves the image;
  * cv2.resize INTER_LINEAR to the model input (lookout's resize is bit-exact with it), RGB, * scale;
  * the [1,H,W,1] probabilities resized back to side x side with cv2.resize INTER_LINEAR (float);
  * pixels of the box span [floor(x1), ceil(x2)) x [floor(y1), ceil(y2)) with p > threshold are on.
"""
import math

import cv2
import numpy as np

MARGIN = 0.1


def cut(box, w, h):
    if box is None:
        box, margin = (0.0, 0.0, float(w), float(h)), 0.0
    else:
        margin = MARGIN
    x1, y1, x2, y2 = box
    long_ = max(x2 - x1, y2 - y1, 1.0)
    side = max(round(long_ * (1 + 2 * margin)), 1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # Rust's f32::round is half away from zero; python's round is half-even: use floor(v + 0.5) on
    # the (non-negative) side and copysign for the offsets
    def rnd(v):
        return int(math.copysign(math.floor(abs(v) + 0.5), v))
    side = rnd(long_ * (1 + 2 * margin))
    side = max(side, 1)
    return rnd(cx - side / 2), rnd(cy - side / 2), side


def square(rgb, left, top, side):
    h, w = rgb.shape[:2]
    sq = np.zeros((side, side, 3), np.uint8)
    xa, xb = max(left, 0), min(left + side, w)
    ya, yb = max(top, 0), min(top + side, h)
    if xb > xa and yb > ya:
        sq[ya - top:yb - top, xa - left:xb - left] = rgb[ya:yb, xa:xb]
    return sq


def tensor(sq, size=(256, 256), scale=1 / 255.0, mean=(0, 0, 0), std=(1, 1, 1), bgr=False):
    canvas = cv2.resize(sq, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if bgr:
        canvas = canvas[..., ::-1]
    x = (canvas.astype(np.float32) * np.float32(scale) - np.float32(mean)) / np.float32(std)
    return x[None].astype(np.float32)


def mask(rgb, box, run, threshold=0.5, **norm):
    """run: [1,H,W,3] float32 -> [1,H,W,1] probabilities (onnxruntime or TF)."""
    h, w = rgb.shape[:2]
    left, top, side = cut(box, w, h)
    prob = run(tensor(square(rgb, left, top, side), **norm))[0, :, :, 0].astype(np.float32)
    up = cv2.resize(prob, (side, side), interpolation=cv2.INTER_LINEAR)
    b = box if box is not None else (0, 0, w, h)
    x0, x1 = min(max(math.floor(b[0]), 0), w), min(max(math.ceil(b[2]), 0), w)
    y0, y1 = min(max(math.floor(b[1]), 0), h), min(max(math.ceil(b[3]), 0), h)
    m = np.zeros((h, w), np.uint8)
    if x1 > x0 and y1 > y0:
        m[y0:y1, x0:x1] = up[y0 - top:y1 - top, x0 - left:x1 - left] > threshold
    return m


def rle(m):
    """COCO uncompressed RLE (column-major, first run = zeros)."""
    flat = m.T.reshape(-1)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(c) for c in counts]}


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)
