#!/usr/bin/env python3
"""Random-weight ONNX models of real detector architectures, for the families without real weights here.

Writes tests/fixtures/models/<name>/{<name>.onnx, model.toml} (labels: tests/fixtures/coco.txt):

  yolov8-random   Ultralytics YOLOv8 architecture (ultralytics/cfg/models/v8/yolov8.yaml, depth 0.33 as
                  yolov8n, width 0.125 = half of yolov8n's 0.25 so the fp32 file stays under 8 MB),
                  80 classes, input `images` [1,3,320,320] RGB/255, output `output0` [1,84,2100]
                  (Detect head in export mode: cx,cy,w,h in input pixels + sigmoid class scores).
  ssd-random      small SSD-like net: NHWC input [1,300,300,3] RGB (x-127.5)/127.5, outputs `boxes`
                  [1,N,4] xyxy normalised (valid by construction) and `scores` [1,N,81] softmax with the
                  background in column 0.
  ssd-random-nms  the same net with ONNX NonMaxSuppression appended: `boxes` [1,K,4] yxyx normalised,
                  `scores` [1,K], `classes` [1,K] (float32, 0-based, background removed), `count` [1] int64.

Random weights give meaningless scores, so after building each model the script
  * re-estimates BatchNorm statistics on real photos (OpenCV sample data, so activations are in range),
  * scales the class-score weights (and for YOLOv8 sets the class biases) so that, on the model's
    reference photo, a few tens of candidates pass the manifest's conf threshold, with the threshold in the
    middle of a wide score gap (so the reference detections are not fragile).

Deterministic (seeds below, single-threaded CPU). Needs the Debian package opencv-doc for the photos and a
venv with torch + ultralytics (kept apart from the reference venv because ultralytics pulls opencv-python,
which clashes with opencv-python-headless):

    python3.11 -m venv /opt/torchvenv
    /opt/torchvenv/bin/pip install torch==2.15.0 ultralytics==8.4.190 onnx==1.23.2 onnxruntime==1.32.0
    YOLO_OFFLINE=1 /opt/torchvenv/bin/python models/tools/make_random_models.py

(run from the repository root).
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models", "tools"))
from ref import common  # noqa: E402

DATA = "/usr/share/doc/opencv-doc/examples/data"
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
CALIB = ["fruits.jpg", "messi5.jpg", "aero1.jpg", "baboon.jpg", "home.jpg", "building.jpg", "basketball1.png",
         "HappyFish.jpg"]
OPSET = 17
torch.set_num_threads(1)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def photo(name):
    return common.read_rgb(os.path.join(DATA, name))


def choose_shift(logits: np.ndarray, lo=30, hi=60):
    """Sorted-descending max-class logits -> (k, shift): adding ``shift`` puts logit 0 (score 0.5) in the
    widest gap between ranks lo..hi, so exactly k candidates pass conf 0.5."""
    s = np.sort(logits)[::-1]
    ks = np.arange(lo, hi + 1)
    gaps = s[ks - 1] - s[ks]
    k = int(ks[int(np.argmax(gaps))])
    return k, float(-(s[k - 1] + s[k]) / 2), float(gaps.max())


def ort_run(path, feed):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed)))


def pick_iou(family, outs, manifest, conf):
    """The NMS IoU threshold in 0.40..0.60 farthest from every IoU that greedy NMS compares on the
    reference photo (so tiny numeric differences cannot flip an NMS decision)."""
    mod = common.family_module(family)
    dets = [d for d in mod.decode(outs, manifest, conf)]
    best = None
    for thr in np.round(np.arange(0.40, 0.605, 0.01), 2):
        m = common.nms_margin(dets, float(thr))
        m = 1.0 if m is None else m
        if best is None or m > best[1] + 1e-9:
            best = (float(thr), m)
    return best


def write_manifest(path, text):
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------------------------------------ yolov8
YOLO_SEED = 8
YOLO_SIZE = 320
YOLO_REF_PHOTO = "messi5.jpg"
YOLO_MANIFEST = {
    "model": {"family": "yolov8"},
    "input": {"name": "images", "shape": [1, 3, YOLO_SIZE, YOLO_SIZE], "layout": "nchw", "color": "rgb",
              "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "resize": "letterbox",
              "align": "center", "pad_value": 114},
}


def make_yolov8():
    from ultralytics.nn.modules import Detect
    from ultralytics.nn.modules.block import C2f
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    torch.manual_seed(YOLO_SEED)
    cfg = copy.deepcopy(yaml_model_load("yolov8n.yaml"))
    cfg["scales"] = {"n": [0.33, 0.125, 1024]}
    cfg["scale"] = "n"
    model = DetectionModel(cfg, nc=80, verbose=False)
    det = model.model[-1]
    assert isinstance(det, Detect)

    def batch(names):
        xs = []
        for n in names:
            img, _ = common.preprocess(photo(n), YOLO_MANIFEST)
            xs.append(common.to_tensor(img, YOLO_MANIFEST)[0])
        return torch.from_numpy(np.stack(xs))

    # 1. BatchNorm statistics from real photos (cumulative average over one batch)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(batch(CALIB))
    model.eval()
    # 2. class biases to 0, measure the logits on the reference photo
    ref = batch([YOLO_REF_PHOTO])

    def max_logits():
        """Best-class logit of every anchor (the class convs' outputs, captured by hooks)."""
        got = []
        hooks = [seq[-1].register_forward_hook(lambda _m, _i, o: got.append(o.flatten(2))) for seq in det.cv3]
        with torch.no_grad():
            model(ref)
        for h in hooks:
            h.remove()
        return torch.cat(got, 2)[0].double().numpy().max(0)

    for seq in det.cv3:
        seq[-1].bias.data[:] = 0.0
    # spread the logits so that the best anchor lands at logit ~4 (score ~0.98, not saturated: no score
    # ties) when the k-th best sits at 0; scaling keeps each anchor's argmax class and the ranking
    base = np.sort(max_logits())[::-1]
    k, _, _ = choose_shift(base)
    spread = 4.0 / float(base[0] - (base[k - 1] + base[k]) / 2)
    for seq in det.cv3:
        seq[-1].weight.data *= spread
    k, shift, gap = choose_shift(max_logits())
    for seq in det.cv3:
        seq[-1].bias.data[:] = shift
    # 3. export like Ultralytics' exporter: fused, Detect in export mode, C2f split forward
    for prm in model.parameters():
        prm.requires_grad = False
    model = model.fuse(verbose=False)
    for m in model.modules():
        if isinstance(m, Detect):
            m.dynamic = False
            m.export = True
            m.format = "onnx"
            m.shape = None
        elif isinstance(m, C2f):
            m.forward = m.forward_split
    name = "yolov8-random"
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{name}.onnx")
    torch.onnx.export(model, (ref,), path, opset_version=OPSET, input_names=["images"],
                      output_names=["output0"], dynamo=False, do_constant_folding=True)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    out = ort_run(path, {"images": ref.numpy()})["output0"]
    assert out.shape == (1, 84, 2100), out.shape
    n_pass = int((out[0, 4:].max(0) >= 0.5).sum())
    print(f"{name}: {os.path.getsize(path) / 1e6:.2f} MB, {n_pass} candidates >= 0.5 (planned {k}, logit gap "
          f"{gap:.3f}), class-weight factor {spread:.3f}, bias {shift:.3f}")
    iou, iou_margin = pick_iou("yolov8", {"output0": out}, dict(YOLO_MANIFEST, decode={}), 0.5)
    print(f"{name}: NMS IoU {iou} (nearest compared IoU {iou_margin:.3f} away)")
    import ultralytics

    write_manifest(os.path.join(d, "model.toml"), f'''[model]
name = "{name}"
family = "yolov8"
file = "{name}.onnx"
variant = "fp32"
description = "Random-weight YOLOv8 (Ultralytics yolov8.yaml, depth 0.33, width 0.125), 80 classes, Detect head in export mode: meaningless detections, for decoder and runtime tests only"

[input]
name = "images"
shape = [1, 3, {YOLO_SIZE}, {YOLO_SIZE}]
layout = "nchw"
color = "rgb"
scale = 0.00392156862745098   # 1/255
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
resize = "letterbox"
align = "center"
pad_value = 114

[decode]

[labels]
file = "../../coco.txt"

[thresholds]
conf = 0.5      # chosen with the class biases so that {k} candidates pass on {YOLO_REF_PHOTO} (widest score gap)
iou = {iou}      # 0.40..0.60, farthest ({iou_margin:.3f}) from every IoU that NMS compares on {YOLO_REF_PHOTO}
max_detections = 100

[source]
package = "pypi:ultralytics"
version = "{ultralytics.__version__}"
files = ["ultralytics/cfg/models/v8/yolov8.yaml"]
licence = "AGPL-3.0 (architecture config); the random weights carry no licence"
weights = "random weights, models/tools/make_random_models.py, seed {YOLO_SEED}; BatchNorm statistics from OpenCV sample photos; class weights scaled by {spread:.4f}, class biases set to {shift:.4f}"
torch = "{torch.__version__}"
opset = {OPSET}
sha256 = "{sha256(path)}"
converted_by = "models/tools/make_random_models.py"
''')


# --------------------------------------------------------------------------------------------------- ssd
SSD_SEED = 300
SSD_SIZE = 300
SSD_REF_PHOTO = "aero1.jpg"
SSD_CLASSES = 80
SSD_MANIFEST = {
    "model": {"family": "ssd"},
    "input": {"name": "input", "shape": [1, SSD_SIZE, SSD_SIZE, 3], "layout": "nhwc", "color": "rgb",
              "scale": 1.0, "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5], "resize": "stretch"},
}


class TinySSD(nn.Module):
    """Two feature maps (19x19 stride 16 and 10x10 stride 32 at 300 px), one box per cell.
    Box = cell centre + 0.5-cell sigmoid offset, size sigmoid * 0.5 of the image: always x2 > x1, y2 > y1."""

    def __init__(self, nc=SSD_CLASSES):
        super().__init__()

        def block(ci, co):
            return nn.Sequential(nn.Conv2d(ci, co, 3, 2, 1), nn.BatchNorm2d(co), nn.ReLU())

        self.nc = nc
        self.backbone = nn.Sequential(block(3, 16), block(16, 32), block(32, 48), block(48, 64))  # /16: 19x19
        self.down = block(64, 96)  # /32: 10x10
        self.box = nn.ModuleList([nn.Conv2d(64, 4, 3, 1, 1), nn.Conv2d(96, 4, 3, 1, 1)])
        self.cls = nn.ModuleList([nn.Conv2d(64, nc + 1, 3, 1, 1), nn.Conv2d(96, nc + 1, 3, 1, 1)])
        self.logit_scale = 1.0  # multiplies all class logits (set by make_ssd)

    def forward(self, x):  # x: NHWC, already normalised
        x = x.permute(0, 3, 1, 2)
        f1 = self.backbone(x)
        f2 = self.down(f1)
        boxes, scores = [], []
        for f, bh, ch in zip((f1, f2), self.box, self.cls):
            g_h, g_w = f.shape[2], f.shape[3]
            b = bh(f).sigmoid()  # 1,4,gh,gw
            gy, gx = torch.meshgrid(torch.arange(g_h, dtype=torch.float32), torch.arange(g_w, dtype=torch.float32),
                                    indexing="ij")
            cx = (gx + 0.25 + 0.5 * b[:, 0]) / g_w
            cy = (gy + 0.25 + 0.5 * b[:, 1]) / g_h
            w = 0.05 + 0.45 * b[:, 2]
            h = 0.05 + 0.45 * b[:, 3]
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).clamp(0.0, 1.0)
            boxes.append(xyxy.reshape(1, -1, 4))
            c = ch(f) * self.logit_scale
            scores.append(c.permute(0, 2, 3, 1).reshape(1, -1, self.nc + 1))
        return torch.cat(boxes, 1), torch.cat(scores, 1).softmax(-1)


def make_ssd():
    torch.manual_seed(SSD_SEED)
    net = TinySSD()

    def batch(names):
        xs = []
        for n in names:
            img, _ = common.preprocess(photo(n), SSD_MANIFEST)
            xs.append(common.to_tensor(img, SSD_MANIFEST)[0])
        return torch.from_numpy(np.stack(xs))

    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(batch(CALIB))
    net.eval()
    ref = batch([SSD_REF_PHOTO])
    # sharpen the softmax (scale all class logits): with 81 competing columns the scale decides how many
    # cells have a class above 0.5; pick the scale whose 0.5 line has the widest margin, 30..60 cells above it
    def fg_logits(scale):
        net.logit_scale = scale
        with torch.no_grad():
            _, sc = net(ref)
        v = np.sort(sc[0, :, 1:].max(1).values.double().numpy())[::-1]
        return np.log(v) - np.log1p(-v)

    best = None
    for scale in np.arange(2.0, 20.0, 0.02):
        lv = fg_logits(float(scale))
        k = int((lv >= 0).sum())
        if 30 <= k <= 60:
            margin = min(lv[k - 1], -lv[k])
            if best is None or margin > best[2]:
                best = (round(float(scale), 2), k, float(margin))
    scale, k, margin = best
    net.logit_scale = scale
    print(f"ssd: logit scale {scale}, {k} candidates >= 0.5, logit margin {margin:.3f}")

    with torch.no_grad():
        b, sc = net(ref)
    plain = dict(SSD_MANIFEST, decode={"box_format": "xyxy", "normalized": True, "background_class": True})
    iou, iou_margin = pick_iou("ssd", {"boxes": b.numpy(), "scores": sc.numpy()}, plain, 0.5)
    print(f"ssd: NMS IoU {iou} (nearest compared IoU {iou_margin:.3f} away)")
    for name, builtin in (("ssd-random", False), ("ssd-random-nms", True)):
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{name}.onnx")
        torch.onnx.export(net, (ref,), path, opset_version=OPSET, input_names=["input"],
                          output_names=["boxes", "scores"], dynamo=False, do_constant_folding=True)
        if builtin:
            add_nms(path, iou=iou)
        onnx.checker.check_model(onnx.load(path))
        outs = ort_run(path, {"input": ref.numpy()})
        print(name, {k_: v_.shape for k_, v_ in outs.items()}, f"{os.path.getsize(path) / 1e6:.2f} MB")
        if builtin:
            decode = '''box_format = "yxyx"
normalized = true
background_class = false     # the graph drops the background column before NonMaxSuppression
builtin_nms = true
boxes_output = "boxes"       # [1, K, 4] y1,x1,y2,x2 in 0..1
scores_output = "scores"     # [1, K]
classes_output = "classes"   # [1, K] float32, 0-based class ids
count_output = "count"       # [1] int64 = K'''
            desc = ("Random-weight SSD-like detector with ONNX NonMaxSuppression in-graph (max 20 per class, "
                    f"IoU {iou}, score > 0.3): meaningless detections, for decoder and runtime tests only")
        else:
            decode = '''box_format = "xyxy"
normalized = true
background_class = true      # scores column 0 is background; class id = column - 1
builtin_nms = false
boxes_output = "boxes"       # [1, N, 4] x1,y1,x2,y2 in 0..1
scores_output = "scores"     # [1, N, 81] softmax'''
            desc = ("Random-weight SSD-like detector (boxes + softmax scores with background column): "
                    "meaningless detections, for decoder and runtime tests only")
        write_manifest(os.path.join(d, "model.toml"), f'''[model]
name = "{name}"
family = "ssd"
file = "{name}.onnx"
variant = "fp32"
description = "{desc}"

[input]
name = "input"
shape = [1, {SSD_SIZE}, {SSD_SIZE}, 3]
layout = "nhwc"
color = "rgb"
scale = 1.0
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]
resize = "stretch"

[decode]
{decode}

[labels]
file = "../../coco.txt"

[thresholds]
conf = 0.5      # chosen with the class-logit scale so that {k} candidates pass on {SSD_REF_PHOTO} (widest score gap)
iou = {iou}      # 0.40..0.60, farthest ({iou_margin:.3f}) from every IoU that NMS compares on {SSD_REF_PHOTO}
max_detections = 100

[source]
package = "none"
licence = "random weights, no licence; architecture: TinySSD in models/tools/make_random_models.py"
weights = "random weights, models/tools/make_random_models.py, seed {SSD_SEED}; BatchNorm statistics from OpenCV sample photos; class logits scaled by {scale}"
torch = "{torch.__version__}"
opset = {OPSET}
sha256 = "{sha256(path)}"
converted_by = "models/tools/make_random_models.py"
''')


def add_nms(path, max_per_class=20, iou=0.45, score=0.3):
    """Append ONNX NonMaxSuppression to a boxes [1,N,4] xyxy + scores [1,N,1+C] graph."""
    m = onnx.load(path)
    g = m.graph
    for o in list(g.output):
        g.output.remove(o)
    C = SSD_CLASSES
    init = [
        helper.make_tensor("nms_perm_yxyx", TensorProto.INT64, [4], [1, 0, 3, 2]),
        helper.make_tensor("nms_one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("nms_big", TensorProto.INT64, [1], [C + 1]),
        helper.make_tensor("nms_axis2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("nms_axis0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("nms_max", TensorProto.INT64, [1], [max_per_class]),
        helper.make_tensor("nms_iou", TensorProto.FLOAT, [1], [iou]),
        helper.make_tensor("nms_score", TensorProto.FLOAT, [1], [score]),
        helper.make_tensor("nms_col1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("nms_col2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("nms_col3", TensorProto.INT64, [1], [3]),
        helper.make_tensor("nms_ax1", TensorProto.INT64, [1], [1]),
    ]
    g.initializer.extend(init)
    n = helper.make_node
    g.node.extend([
        # boxes xyxy -> yxyx (the ONNX NMS corner layout)
        n("Gather", ["boxes", "nms_perm_yxyx"], ["nms_boxes_yxyx"], axis=2),
        # drop the background column, [1,N,C] -> [1,C,N]
        n("Slice", ["scores", "nms_one", "nms_big", "nms_axis2"], ["nms_fg"]),
        n("Transpose", ["nms_fg"], ["nms_fg_t"], perm=[0, 2, 1]),
        n("NonMaxSuppression", ["nms_boxes_yxyx", "nms_fg_t", "nms_max", "nms_iou", "nms_score"], ["nms_sel"],
          center_point_box=0),
        # sel: [K,3] = batch, class, box
        n("Slice", ["nms_sel", "nms_col1", "nms_col2", "nms_ax1"], ["nms_cls_k1"]),
        n("Slice", ["nms_sel", "nms_col2", "nms_col3", "nms_ax1"], ["nms_box_k1"]),
        n("Squeeze", ["nms_box_k1", "nms_ax1"], ["nms_box_k"]),
        n("Squeeze", ["nms_cls_k1", "nms_ax1"], ["nms_cls_k"]),
        n("Squeeze", ["nms_boxes_yxyx", "nms_axis0"], ["nms_boxes_n4"]),
        n("Gather", ["nms_boxes_n4", "nms_box_k"], ["nms_boxes_k4"], axis=0),
        n("Unsqueeze", ["nms_boxes_k4", "nms_axis0"], ["boxes_out"]),
        n("Squeeze", ["nms_fg_t", "nms_axis0"], ["nms_fg_cn"]),
        n("Slice", ["nms_sel", "nms_col1", "nms_col3", "nms_ax1"], ["nms_cls_box"]),
        n("GatherND", ["nms_fg_cn", "nms_cls_box"], ["nms_scores_k"]),
        n("Unsqueeze", ["nms_scores_k", "nms_axis0"], ["scores_out"]),
        n("Cast", ["nms_cls_k"], ["nms_cls_kf"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["nms_cls_kf", "nms_axis0"], ["classes"]),
        n("Shape", ["nms_box_k"], ["count"]),
    ])
    # rename the final outputs to boxes / scores (the inner tensors keep their names)
    for node in g.node:
        for i, o in enumerate(node.output):
            if o == "boxes":
                node.output[i] = "raw_boxes"
            elif o == "scores":
                node.output[i] = "raw_scores"
        for i, x in enumerate(node.input):
            if x == "boxes":
                node.input[i] = "raw_boxes"
            elif x == "scores":
                node.input[i] = "raw_scores"
    for node in g.node:
        for i, o in enumerate(node.output):
            if o == "boxes_out":
                node.output[i] = "boxes"
            elif o == "scores_out":
                node.output[i] = "scores"
        for i, x in enumerate(node.input):
            if x == "boxes_out":
                node.input[i] = "boxes"
            elif x == "scores_out":
                node.input[i] = "scores"
    g.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, "K", 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, "K"]),
        helper.make_tensor_value_info("classes", TensorProto.FLOAT, [1, "K"]),
        helper.make_tensor_value_info("count", TensorProto.INT64, [1]),
    ])
    onnx.save(m, path)


def main():
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["yolov8", "ssd"]
    if "yolov8" in which:
        make_yolov8()
    if "ssd" in which:
        make_ssd()


if __name__ == "__main__":
    main()
