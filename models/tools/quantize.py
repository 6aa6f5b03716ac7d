#!/usr/bin/env python3
"""int8 variants of the converted human-models detectors, with onnxruntime.quantization.

Run in the onnxruntime venv (onnxruntime 1.32, onnx 1.23, numpy, opencv-python-headless), from the
repository root, after convert_human_models.py:

    /opt/ortvenv/bin/python models/tools/quantize.py [--work /tmp/lookout-quant] [--models nanodet-g,...]

For each fp32 model (models/<name>/<name>.onnx) it writes to <work>/<name>/:
  <name>.fp32.onnx          plain float32 weights (float16-stored initializers + Cast folded back)
  <name>.pre.onnx           after onnxruntime's quant_pre_process (shape inference + basic optimisation)
  <name>.int8-dynamic.onnx  quantize_dynamic: ConvInteger/MatMulInteger, activations quantised at run time
  <name>.int8-qdq.onnx      quantize_static, QuantFormat.QDQ, per-channel int8 weights, uint8 activations
  <name>.int8-qlinear.onnx  quantize_static, QuantFormat.QOperator, only Conv/MatMul quantised, so the graph
                            holds QLinearConv/QLinearMatMul/QuantizeLinear/DequantizeLinear and no ORT
                            contrib ops (tract rejects com.microsoft QLinearAdd/QLinearMul/...)
Convs listed by EXCLUDE stay float32 in every variant (mixed precision; see there). The variants named in
PUBLISH are copied to models/<name>-int8/ (QLinearConv) and models/<name>-int8-qdq/ (QDQ), each with its own
model.toml and coco.txt. Static calibration uses CALIB: 16 real images (OpenCV sample data from the Debian
package opencv-doc and frames of the videos in ../shared/media), disjoint from eval_variants.py's images.
The pre-processing is the manifest's own (models/tools/ref/common.py). The result is deterministic for a
given onnxruntime version.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(MODELS_DIR)
sys.path.insert(0, HERE)
import convert_human_models as chm  # noqa: E402  (stdlib-only at import time: MODELS, write_manifest)
import optimize_graph  # noqa: E402
from ref import common  # noqa: E402

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
SHARED_MEDIA = os.path.join(os.path.dirname(ROOT), "shared", "media")

# (file, frame index or None). Videos are read sequentially up to the frame (exact, codec independent).
CALIB = [
    (f"{OPENCV_DATA}/{f}", None) for f in [
        "basketball2.png", "baboon.jpg", "HappyFish.jpg", "aero1.jpg", "aero3.jpg", "leuvenA.jpg",
        "rubberwhale1.png", "box_in_scene.png", "butterfly.jpg", "orange.jpg", "apple.jpg", "squirrel_cls.jpg"]
] + [
    (f"{OPENCV_DATA}/vtest.avi", 100),
    (f"{OPENCV_DATA}/Megamind.avi", 50),
    (f"{SHARED_MEDIA}/video_drive_udacity_test_video.mp4", 20),
    (f"{SHARED_MEDIA}/video_intel_bottle-detection.mp4", 300),
]

VARIANTS = ["int8-dynamic", "int8-qdq", "int8-qlinear"]
# Convs left in float32 (mixed precision), found with onnxruntime.quantization.qdq_loss_debug and by matching
# detections against fp32 on the evaluation photos (VARIANTS.md):
#   nanodet-g: the first 3 convs (stem at 208x208); all-int8 loses ~2% of the fp32 detections.
#   centernet-mbv3: the first 6 convs (stem + first two inverted-residual blocks), every depthwise conv
#   (BN-folded MobileNetV3 depthwise kernels amplify activation rounding: SQNR falls to ~4 dB by block 2)
#   and the last 3 (class heat-map 1x1 and box-size head; a quantised heat map makes flat peaks that pass
#   the in-graph 3x3 max-pool peak test several times). All-int8 matches only ~50% of fp32 detections.
EXCLUDE = {
    "nanodet-g": {"first": 3, "depthwise": False, "last": 0},
    "centernet-mbv3": {"first": 6, "depthwise": True, "last": 3},
}
# published int8 variants: model -> [(folder, variant)]. QLinearConv runs as a real int8 conv in tract;
# QDQ is what onnxruntime prefers (tract evaluates Q/DQ pairs as float ops around a float conv).
PUBLISH = {
    "nanodet-g": [("nanodet-g-int8", "int8-qlinear"), ("nanodet-g-int8-qdq", "int8-qdq")],
    "centernet-mbv3": [("centernet-mbv3-int8", "int8-qlinear"), ("centernet-mbv3-int8-qdq", "int8-qdq")],
}
STANDARD_DOMAINS = ("", "ai.onnx")


def log(*a):
    print("[quantize]", *a, flush=True)


def read_frame(path, index):
    import cv2
    if index is None:
        return common.read_rgb(path)
    cap = cv2.VideoCapture(path)
    frame = None
    for _ in range(index + 1):
        ok, frame = cap.read()
        if not ok:
            raise RuntimeError(f"{path}: cannot read frame {index}")
    cap.release()
    return np.ascontiguousarray(frame[:, :, ::-1])


def calib_tensors(manifest):
    out = []
    for path, idx in CALIB:
        img = read_frame(path, idx)
        model_img, _ = common.preprocess(img, manifest)
        out.append(common.to_tensor(model_img, manifest))
    return out


def op_report(path):
    """{(domain, op_type): count} of a model and whether any op is outside the standard ONNX domain."""
    m = onnx.load(path, load_external_data=False)
    ops = collections.Counter((n.domain or "", n.op_type) for n in m.graph.node)
    nonstd = sorted({f"{d}:{t}" for (d, t) in ops if d not in STANDARD_DOMAINS})
    return ops, nonstd


def drop_unused_opsets(path):
    """quant_pre_process saves with onnxruntime's opset imports (com.microsoft, ai.onnx.ml, ...) although no
    node uses them; keep only the default domain and the domains nodes actually use."""
    m = onnx.load(path)
    used = {n.domain for n in m.graph.node}
    keep = [o for o in m.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    if len(keep) != len(m.opset_import):
        del m.opset_import[:]
        m.opset_import.extend(keep)
        onnx.save(m, path)


def fp32_plain(src, dst):
    """Fold `Cast(float16 initializer) -> float32` (convert_human_models.py's fp16 storage) back into plain
    float32 initializers, so the quantisers see Conv weights as initializers."""
    m = onnx.load(src)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    keep_nodes, folded = [], 0
    for n in g.node:
        if n.op_type == "Cast" and len(n.input) == 1 and n.input[0] in inits:
            arr = numpy_helper.to_array(inits[n.input[0]])
            to = next(a.i for a in n.attribute if a.name == "to")
            if arr.dtype == np.float16 and to == onnx.TensorProto.FLOAT:
                g.initializer.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
                folded += 1
                continue
        keep_nodes.append(n)
    del g.node[:]
    g.node.extend(keep_nodes)
    used = {x for n in g.node for x in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    onnx.save(m, dst)
    log(f"fp32 plain: folded {folded} Cast(float16) initializers -> {dst}")


class Reader(CalibrationDataReader):
    """onnxruntime CalibrationDataReader over pre-computed tensors."""

    def __init__(self, name, tensors):
        super().__init__()
        self.name, self.tensors, self.i = name, tensors, 0

    def get_next(self):
        if self.i >= len(self.tensors):
            return None
        self.i += 1
        return {self.name: self.tensors[self.i - 1]}

    def rewind(self):
        self.i = 0


def excluded_convs(path, rule):
    """Names of the Conv nodes to keep in float32: the first/last N in graph order, and depthwise ones."""
    g = onnx.load(path).graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    names = [n.name for n in convs[:rule.get("first", 0)]]
    if rule.get("last", 0):
        names += [n.name for n in convs[-rule["last"]:]]
    if rule.get("depthwise"):
        names += [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return sorted(set(names))


def quantize_model(name, work):
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    manifest = common.load_manifest(os.path.join(MODELS_DIR, name, "model.toml"))
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    plain = os.path.join(d, f"{name}.fp32.onnx")
    fp32_plain(common.model_path(manifest), plain)
    pre = os.path.join(d, f"{name}.pre.onnx")
    quant_pre_process(plain, pre, skip_symbolic_shape=True)
    tensors = calib_tensors(manifest)
    inp = manifest["input"]["name"]
    exclude = excluded_convs(pre, EXCLUDE.get(name, {}))
    log(f"{name}: {len(exclude)} convs stay float32: {exclude}")
    ops = ["Conv", "MatMul"]
    out = {}

    path = os.path.join(d, f"{name}.int8-dynamic.onnx")
    quantize_dynamic(pre, path, weight_type=QuantType.QUInt8, per_channel=False, op_types_to_quantize=ops,
                     nodes_to_exclude=exclude)
    out["int8-dynamic"] = path

    for variant, fmt in (("int8-qdq", QuantFormat.QDQ), ("int8-qlinear", QuantFormat.QOperator)):
        path = os.path.join(d, f"{name}.{variant}.onnx")
        quantize_static(pre, path, Reader(inp, tensors), quant_format=fmt, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=ops,
                        nodes_to_exclude=exclude)
        out[variant] = path

    for v, p in out.items():
        drop_unused_opsets(p)
        ops, nonstd = op_report(p)
        q = sorted({t for (_, t) in ops if "quant" in t.lower() or "Integer" in t or t.startswith("QLinear")})
        log(f"{name} {v}: {os.path.getsize(p) / 1e6:.2f} MB, quant ops {q}, non-standard {nonstd or 'none'}")
    return out


def publish(name, folder, variant, path):
    spec = next(s for s in chm.MODELS.values() if s["folder"] == name)
    _, nonstd = op_report(path)
    if nonstd:
        sys.exit(f"{name} {variant} has non-standard ops {nonstd}; not publishing")
    out_dir = os.path.join(MODELS_DIR, folder)
    os.makedirs(out_dir, exist_ok=True)
    file = f"{name}.{variant}.onnx"
    dst = os.path.join(out_dir, file)
    shutil.copyfile(path, dst)
    converted_by = "models/tools/convert_human_models.py + models/tools/quantize.py"
    if spec.get("optimize"):
        # the quantisers leave the -inf Pad in front of the MaxPool (quant_pre_process already folded the
        # zero Pads into the Convs); fold it, checked on the fixture photos against the unrewritten file
        optimize_graph.optimize_file(dst, dst, os.path.join(MODELS_DIR, name, "model.toml"), 1e-5)
        converted_by += " + models/tools/optimize_graph.py"
    shutil.copyfile(os.path.join(MODELS_DIR, name, "coco.txt"), os.path.join(out_dir, "coco.txt"))
    key = next(k for k, s in chm.MODELS.items() if s["folder"] == name)
    how = {"int8-qdq": "static int8 QDQ",
           "int8-qlinear": "static int8 QLinearConv",
           "int8-dynamic": "dynamic int8 ConvInteger"}[variant]
    n_fp32 = len(excluded_convs(os.path.join(os.path.dirname(path), f"{name}.pre.onnx"), EXCLUDE.get(name, {})))
    desc = (f"{spec['description']}; {how} (per-channel int8 weights, uint8 activations, {n_fp32} sensitive "
            f"convs kept float32), calibrated on 16 real images")
    chm.write_manifest(os.path.join(out_dir, "model.toml"), spec, folder, file, variant, desc,
                       [f"models/{key}.json", f"models/{key}.bin"], chm.sha256(dst),
                       converted_by=converted_by)
    log(f"published {dst} ({os.path.getsize(dst) / 1e6:.2f} MB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/lookout-quant")
    ap.add_argument("--models", default=",".join(PUBLISH))
    ap.add_argument("--no-publish", action="store_true", help="only write the variants to --work")
    a = ap.parse_args()
    for name in a.models.split(","):
        out = quantize_model(name, a.work)
        if not a.no_publish:
            for folder, variant in PUBLISH.get(name, []):
                publish(name, folder, variant, out[variant])


if __name__ == "__main__":
    main()
