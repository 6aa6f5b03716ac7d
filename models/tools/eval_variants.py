#!/usr/bin/env python3
"""Accuracy and speed of the fp32 and int8 variants with onnxruntime (CPU, 1 thread).

Run in the onnxruntime venv from the repository root, after quantize.py:

    /opt/ortvenv/bin/python models/tools/eval_variants.py [--work /tmp/lookout-quant] [--runs 20]
        [--out models/tools/VARIANTS.md]

For every model in quantize.PUBLISH it runs the fp32 model and each int8 variant in <work>/<name>/ on
EVAL_IMAGES (16 real photos, none used for calibration), with the manifest's pre-processing, decoder
(models/tools/ref/), class-aware NMS and thresholds, and reports per variant:
  * fp32 dets: detections of the fp32 model (score >= the manifest's conf), summed over the images;
  * matched: fraction of them found by the variant (same class, IoU >= 0.5, greedy one-to-one,
    the variant searched at conf - 0.1 so a score drifting just under the threshold still counts);
  * mean |dscore| over the matched pairs; extra: variant detections >= conf with no fp32 partner
    (fp32 searched at conf - 0.1);
  * median latency (ms) of session.run alone, 1 intra-op thread, sequential, over --runs runs of one image;
  * whether the file holds any op outside the standard ONNX domain (com.microsoft etc.).
Writes the table to --out (markdown) and prints it.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(MODELS_DIR)
sys.path.insert(0, HERE)
import quantize  # noqa: E402
from ref import common  # noqa: E402

OPENCV_DATA = quantize.OPENCV_DATA
SHARED_MEDIA = quantize.SHARED_MEDIA
EVAL_IMAGES = [f"{SHARED_MEDIA}/{f}" for f in [
    "drive_udacity_vd_test1.jpg", "drive_udacity_vd_test4.jpg", "indoor_coco_000000000139_livingroom.jpg",
    "outdoor_darknet_dog.jpg", "outdoor_darknet_person.jpg", "tabletop_coco_000000002592_mug_knife.jpg"]] + [
    f"{OPENCV_DATA}/{f}" for f in [
        "messi5.jpg", "fruits.jpg", "basketball1.png", "home.jpg", "building.jpg", "chicky_512.png",
        "licenseplate_motion.jpg", "left.jpg", "aloeL.jpg", "stuff.jpg"]]


# Found while choosing quantize.EXCLUDE (same images and matching, 2026-11-23); kept here so the table
# below says why some convs stay float32.
NOTES = """
## Notes

* Mixed precision: `quantize.py` keeps the convs named in its `EXCLUDE` in float32. Quantising every Conv
  (same calibration) matched far fewer fp32 detections: nanodet-g QDQ 48/49 (mean abs dscore 0.025),
  QLinearConv 47/49; centernet-mbv3 QDQ 36/68 (0.142), QLinearConv 33/68 (0.129), dynamic 0/68 (the
  heat-map peaks collapse). `onnxruntime.quantization.qdq_loss_debug` showed CenterNet's activation SQNR
  falling to ~4 dB within the first two MobileNetV3 blocks (the BN-folded depthwise convs amplify the
  rounding of their inputs), and a quantised class heat map gives flat peaks that pass the in-graph 3x3
  max-pool test several times. Percentile or entropy calibration, or int8 activations (S8S8), did not fix it
  (53-63%); excluding the stem, every depthwise conv and the two output heads did (68/68).
* onnxruntime runs the int8 CenterNet no faster than fp32: the graph is dominated by float element-wise work
  (hard-swish, the 80x128x128 heat map, top-k over 1.3M scores), not by convs.
* None of the int8 files contains an op outside the standard ONNX domain: the quantisers were limited to
  Conv/MatMul, so they emit only QLinearConv / ConvInteger / QuantizeLinear / DequantizeLinear /
  DynamicQuantizeLinear (no com.microsoft QLinearAdd, QLinearSigmoid, QLinearLeakyRelu, ...).
* tract 0.23.9 (from its source, not measured here): QLinearConv becomes tract's own quantised conv
  (per-channel kernel scales supported); QuantizeLinear/DequantizeLinear become element-wise ops, and only
  DQ -> element-wise -> Q chains are folded (into quantised ops or lookup tables), so a QDQ Conv probably
  runs as a float conv on dequantised weights. `<name>-int8` (QLinearConv) is therefore the variant more
  likely to be faster in tract; `<name>-int8-qdq` is onnxruntime's preferred format. Measure both in tract.
"""


def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def detect_all(sess, manifest, tensors, conf):
    th = manifest["thresholds"]
    fam = manifest["model"]["family"]
    return [common.postprocess(fam, common.run_onnx(None, t, manifest, session=sess), manifest, conf,
                               th["iou"], th["max_detections"]) for t in tensors]


def latency_ms(sess, manifest, tensor, runs):
    name = manifest["input"]["name"]
    for _ in range(3):
        sess.run(None, {name: tensor})
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: tensor})
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def evaluate(name, work, runs, log):
    manifest = common.load_manifest(os.path.join(MODELS_DIR, name, "model.toml"))
    conf = manifest["thresholds"]["conf"]
    labels = common.load_labels(manifest)
    tensors = []
    for p in EVAL_IMAGES:
        img, _ = common.preprocess(common.read_rgb(p), manifest)
        tensors.append(common.to_tensor(img, manifest))
    files = {"fp32": common.model_path(manifest)}
    for v in quantize.VARIANTS:
        p = os.path.join(work, name, f"{name}.{v}.onnx")
        if os.path.exists(p):
            files[v] = p
    rows, ref, ref_low = [], None, None
    for v, path in files.items():
        sess = session(path)
        dets = detect_all(sess, manifest, tensors, conf)
        lat = latency_ms(sess, manifest, tensors[3], runs)
        _, nonstd = quantize.op_report(path)
        size = os.path.getsize(path) / 1e6
        if v == "fp32":
            ref = dets
            ref_low = detect_all(sess, manifest, tensors, max(conf - 0.1, 0.01))
            n = sum(len(d) for d in ref)
            rows.append((name, v, size, n, "—", "—", "—", lat, nonstd))
            for p, d in zip(EVAL_IMAGES, ref):
                log(f"  {name} fp32 {os.path.basename(p)}: " + ", ".join(
                    f"{labels[c]} {s:.2f}" for c, s, *_ in d))
            continue
        low = detect_all(sess, manifest, tensors, max(conf - 0.1, 0.01))
        matched, dsc, extra = 0, [], 0
        for r, rl, d, dl in zip(ref, ref_low, dets, low):
            m = common.match(r, dl, 0.5)
            matched += len(m["pairs"])
            dsc += [abs(x[3]) for x in m["pairs"]]
            extra += len(common.match(d, rl, 0.5)["unmatched_ref"])
        n = sum(len(d) for d in ref)
        rows.append((name, v, size, n, f"{matched}/{n} = {matched / max(n, 1):.0%}",
                     f"{np.mean(dsc):.3f}" if dsc else "—", str(extra), lat, nonstd))
        log(f"  {name} {v}: matched {matched}/{n}, mean |dscore| {np.mean(dsc) if dsc else 0:.3f}, "
            f"extra {extra}, {lat:.1f} ms")
    return rows


def main():
    import onnxruntime as ort
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/lookout-quant")
    ap.add_argument("--models", default=",".join(quantize.PUBLISH))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(HERE, "VARIANTS.md"))
    a = ap.parse_args()
    lines = []
    log = lambda s: (print(s, flush=True), lines.append(s))
    rows = []
    for name in a.models.split(","):
        rows += evaluate(name, a.work, a.runs, log)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    head = [
        "# fp32 vs int8 variants (onnxruntime, 1 thread)", "",
        f"Written by `models/tools/eval_variants.py` on {datetime.date.today().isoformat()}: "
        f"{os.cpu_count()}-core x86-64 ({cpu}), onnxruntime {ort.__version__}, intra-op threads 1, "
        f"median of {a.runs} runs of one 416/512 input (other work may share the machine: compare rows, "
        "not absolute numbers).", "",
        f"{len(EVAL_IMAGES)} real images (../shared/media/*.jpg and OpenCV sample photos; none used for "
        "calibration), manifest pre-processing, decoder, class-aware NMS and thresholds. *fp32 dets*: "
        "fp32 detections with score >= conf; *matched*: found by the variant (same class, IoU >= 0.5, the "
        "variant searched down to conf - 0.1); *extra*: variant detections >= conf without an fp32 partner (fp32 searched down to conf - 0.1); "
        "*non-std ops*: ops outside the standard ONNX domain (tract rejects com.microsoft ops).", "",
        "| model | variant | MB | fp32 dets | matched | mean abs dscore | extra | ms (1 thread) | non-std ops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table = [f"| {m} | {v} | {s:.2f} | {n} | {mt} | {ds} | {ex} | {lat:.1f} | {', '.join(ns) or 'none'} |"
             for (m, v, s, n, mt, ds, ex, lat, ns) in rows]
    text = "\n".join(head + table) + "\n"
    print(text)
    with open(a.out, "w") as f:
        f.write(text)
        f.write(NOTES)
        f.write("\n## Log: fp32 detections per image (score >= conf, after NMS) and per-variant summary\n\n```\n")
        f.write("\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
