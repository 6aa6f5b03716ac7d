"""Shared reference helpers: manifest, pre-processing (cv2), tensor conversion, NMS, matching.

Conventions (models/README.md):
  * pre-processing works on u8 RGB images; resize is cv2.resize INTER_LINEAR (half-pixel centres);
  * ``letterbox``: r = min(W_in / w, H_in / h), new size (int(w * r), int(h * r)) as YOLOX's ``preproc``,
    placed top-left or centred ((W_in - nw) // 2, (H_in - nh) // 2), the rest filled with ``pad_value``;
  * ``stretch``: cv2.resize straight to (W_in, H_in);
  * tensor = (pixel * scale - mean[c]) / std[c] in the model's channel order, float32, batch 1;
  * every decoder: argmax class per anchor / cell, score as the family defines, keep score >= conf,
    boxes in input-tensor pixels; then greedy class-aware NMS (IoU > iou suppresses, areas without +1),
    results sorted by score descending and cut to max_detections.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from typing import Iterable, Sequence

import cv2
import numpy as np

Det = tuple  # (class_id: int, score: float, x1: float, y1: float, x2: float, y2: float)


# --------------------------------------------------------------------------------------------- manifest
def load_manifest(path: str | os.PathLike) -> dict:
    """Parse a model.toml. Adds ``_dir`` (folder of the manifest) for resolving relative files."""
    with open(path, "rb") as f:
        m = tomllib.load(f)
    m["_dir"] = os.path.dirname(os.path.abspath(path))
    m.setdefault("decode", {})
    m.setdefault("thresholds", {})
    return m


def input_hw(manifest: dict) -> tuple[int, int]:
    """(H_in, W_in) of the model input from ``[input].shape`` and ``layout``."""
    inp = manifest["input"]
    shape = inp["shape"]
    layout = inp.get("layout", "nchw").lower()
    if len(shape) != 4:
        raise ValueError(f"input shape must be 4-D, got {shape}")
    if layout == "nchw":
        return int(shape[2]), int(shape[3])
    if layout == "nhwc":
        return int(shape[1]), int(shape[2])
    raise ValueError(f"unknown layout {layout!r}")


def load_labels(manifest: dict) -> list[str]:
    lab = manifest.get("labels", {}).get("file")
    if not lab:
        return []
    path = os.path.join(manifest.get("_dir", "."), lab)
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip() != ""]


def model_path(manifest: dict) -> str:
    return os.path.join(manifest.get("_dir", "."), manifest["model"]["file"])


# --------------------------------------------------------------------------------------- pre-process
def preprocess(img_rgb_u8: np.ndarray, manifest: dict) -> tuple[np.ndarray, dict]:
    """Resize a u8 RGB HxWx3 image to the model's input geometry.

    Returns (model_img_u8 HxWx3 RGB, info). ``info`` maps input-tensor pixels back to the source:
    ``x_src = (x_in - offset_x) / scale_x``, ``y_src = (y_in - offset_y) / scale_y``.
    """
    if img_rgb_u8.dtype != np.uint8 or img_rgb_u8.ndim != 3 or img_rgb_u8.shape[2] != 3:
        raise ValueError("expected a u8 HxWx3 RGB image")
    H, W = input_hw(manifest)
    inp = manifest["input"]
    resize = inp.get("resize", "letterbox").lower()
    h, w = img_rgb_u8.shape[:2]
    if resize == "stretch":
        out = cv2.resize(img_rgb_u8, (W, H), interpolation=cv2.INTER_LINEAR)
        info = dict(resize="stretch", src_w=w, src_h=h, in_w=W, in_h=H, new_w=W, new_h=H,
                    scale_x=W / w, scale_y=H / h, offset_x=0, offset_y=0)
        return out, info
    if resize != "letterbox":
        raise ValueError(f"unknown resize {resize!r}")
    align = inp.get("align", "top-left").lower()
    pad = int(inp.get("pad_value", 114))
    out, info = letterbox(img_rgb_u8, W, H, align=align, pad_value=pad)
    return out, info


def letterbox(img: np.ndarray, W: int, H: int, align: str = "top-left", pad_value: int = 114):
    h, w = img.shape[:2]
    r = min(W / w, H / h)
    nw, nh = int(w * r), int(h * r)
    nw, nh = max(nw, 1), max(nh, 1)
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    if align in ("top-left", "topleft", "top_left"):
        ox, oy = 0, 0
    elif align in ("center", "centre"):
        ox, oy = (W - nw) // 2, (H - nh) // 2
    else:
        raise ValueError(f"unknown align {align!r}")
    out = np.full((H, W, img.shape[2]), pad_value, dtype=np.uint8)
    out[oy:oy + nh, ox:ox + nw] = resized
    info = dict(resize="letterbox", align=align, src_w=w, src_h=h, in_w=W, in_h=H, new_w=nw, new_h=nh,
                scale_x=r, scale_y=r, ratio=r, offset_x=ox, offset_y=oy)
    return out, info


def to_tensor(model_img_u8: np.ndarray, manifest: dict) -> np.ndarray:
    """u8 RGB HxWx3 at input geometry -> float32 tensor with the manifest's colour, normalisation, layout."""
    inp = manifest["input"]
    H, W = input_hw(manifest)
    if model_img_u8.shape[:2] != (H, W):
        raise ValueError(f"image is {model_img_u8.shape[:2]}, model wants {(H, W)}")
    color = inp.get("color", "rgb").lower()
    img = model_img_u8
    if color == "bgr":
        img = img[:, :, ::-1]
    elif color != "rgb":
        raise ValueError(f"unknown color {color!r}")
    scale = np.float32(inp.get("scale", 1.0))
    mean = np.asarray(inp.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32).reshape(1, 1, 3)
    std = np.asarray(inp.get("std", [1.0, 1.0, 1.0]), dtype=np.float32).reshape(1, 1, 3)
    x = (img.astype(np.float32) * scale - mean) / std
    layout = inp.get("layout", "nchw").lower()
    if layout == "nchw":
        x = x.transpose(2, 0, 1)
    x = np.ascontiguousarray(x[None], dtype=np.float32)
    return x


def unmap_box(box: Sequence[float], info: dict) -> tuple[float, float, float, float]:
    """Input-tensor pixels -> source-image pixels (clipped to the source)."""
    x1, y1, x2, y2 = box
    sx, sy, ox, oy = info["scale_x"], info["scale_y"], info["offset_x"], info["offset_y"]
    w, h = info["src_w"], info["src_h"]
    f = lambda v, o, s, lim: float(min(max((v - o) / s, 0.0), lim))
    return f(x1, ox, sx, w), f(y1, oy, sy, h), f(x2, ox, sx, w), f(y2, oy, sy, h)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as u8 RGB (cv2 decoder; honours EXIF orientation as cv2.imread does)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(bgr[:, :, ::-1])


# ----------------------------------------------------------------------------------------------- NMS
def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes; areas (x2 - x1) * (y2 - y1), no +1."""
    ax1, ay1, ax2, ay2 = a[-4:]
    bx1, by1, bx2, by2 = b[-4:]
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def sort_dets(dets: Iterable[Det]) -> list[Det]:
    """By score descending; stable (equal scores keep decode order)."""
    return sorted(dets, key=lambda d: -d[1])


def nms(dets: Iterable[Det], iou_thr: float, max_det: int | None = None) -> list[Det]:
    """Greedy class-aware NMS. A box is dropped when IoU with a kept box of the same class is > iou_thr.
    Output sorted by score descending, at most ``max_det``."""
    kept: list[Det] = []
    by_class: dict[int, list[Det]] = {}
    for d in sort_dets(dets):
        same = by_class.setdefault(int(d[0]), [])
        if any(iou(d, k) > iou_thr for k in same):
            continue
        same.append(d)
        kept.append(d)
        if max_det is not None and len(kept) >= max_det:
            break
    return kept


def nms_margin(dets: Iterable[Det], iou_thr: float) -> float | None:
    """Smallest |IoU - iou_thr| over the comparisons greedy NMS makes (candidate vs kept box of its class):
    how close a reference result is to flipping an NMS decision."""
    kept: dict[int, list[Det]] = {}
    worst = None
    for d in sort_dets(dets):
        same = kept.setdefault(int(d[0]), [])
        ious = [iou(d, k) for k in same]
        for v in ious:
            m = abs(v - iou_thr)
            worst = m if worst is None or m < worst else worst
        if not any(v > iou_thr for v in ious):
            same.append(d)
    return worst


def match(ref_dets: Sequence[Det], dets: Sequence[Det], iou_thr: float = 0.5) -> dict:
    """Greedy one-to-one matching of ``dets`` to ``ref_dets`` (same class, IoU >= iou_thr), references
    taken in descending score order, each paired with its best free candidate.

    Returns {"pairs": [(ref_index, det_index, iou, score_diff)], "unmatched_ref": [...],
    "unmatched_det": [...]}. ``score_diff`` = det score - ref score.
    """
    order = sorted(range(len(ref_dets)), key=lambda i: -ref_dets[i][1])
    used: set[int] = set()
    pairs = []
    unmatched_ref = []
    for i in order:
        r = ref_dets[i]
        best, best_iou = None, iou_thr
        for j, d in enumerate(dets):
            if j in used or int(d[0]) != int(r[0]):
                continue
            v = iou(r, d)
            if v >= best_iou:
                best, best_iou = j, v
        if best is None:
            unmatched_ref.append(i)
        else:
            used.add(best)
            pairs.append((i, best, best_iou, float(dets[best][1]) - float(r[1])))
    unmatched_det = [j for j in range(len(dets)) if j not in used]
    return {"pairs": pairs, "unmatched_ref": unmatched_ref, "unmatched_det": unmatched_det}


# ------------------------------------------------------------------------------------ run + decode
def family_module(family: str):
    """The decoder module ``ref.<family>``."""
    pkg = __name__.rsplit(".", 1)[0] if "." in __name__ else None
    if pkg:
        return importlib.import_module(f"{pkg}.{family}")
    return importlib.import_module(family)


def run_onnx(path: str, tensor: np.ndarray, manifest: dict, session=None) -> dict:
    """Run the model with onnxruntime (CPU, 1 thread, deterministic); returns {output_name: array}."""
    import onnxruntime as ort

    if session is None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = manifest["input"]["name"]
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, {name: tensor})
    return dict(zip(names, outs))


def postprocess(family: str, outputs: dict, manifest: dict, conf: float, iou_thr: float,
                max_det: int) -> list[Det]:
    """Family decode, then NMS (unless the model has NMS built in), sorted, cut to max_det."""
    mod = family_module(family)
    dets = [(int(c), float(s), float(a), float(b), float(d), float(e))
            for (c, s, a, b, d, e) in mod.decode(outputs, manifest, conf)]
    builtin = getattr(mod, "builtin_nms", None)
    if callable(builtin) and builtin(manifest):
        return sort_dets(dets)[:max_det]
    return nms(dets, iou_thr, max_det)


def detect(img_rgb_u8: np.ndarray, manifest: dict, onnx_path: str | None = None, conf=None, iou_thr=None,
           max_det=None):
    """Whole reference pipeline on a source image. Returns (model_img_u8, info, dets in input pixels)."""
    th = manifest.get("thresholds", {})
    conf = th.get("conf", 0.35) if conf is None else conf
    iou_thr = th.get("iou", 0.45) if iou_thr is None else iou_thr
    max_det = th.get("max_detections", 100) if max_det is None else max_det
    model_img, info = preprocess(img_rgb_u8, manifest)
    outs = run_onnx(onnx_path or model_path(manifest), to_tensor(model_img, manifest), manifest)
    return model_img, info, postprocess(manifest["model"]["family"], outs, manifest, conf, iou_thr, max_det)


def output(outputs: dict, name: str | None, index: int = 0) -> np.ndarray:
    """Pick an output by name, or the ``index``-th one when name is None."""
    if name is not None:
        if name not in outputs:
            raise KeyError(f"output {name!r} not in {list(outputs)}")
        return outputs[name]
    return list(outputs.values())[index]
