#!/usr/bin/env python3
"""Exact graph clean-ups of converter leftovers, before tract sees a model.

    /opt/ortvenv/bin/python models/tools/optimize_graph.py IN.onnx OUT.onnx [--manifest model.toml]
    /opt/ortvenv/bin/python models/tools/optimize_graph.py --model models/nanodet-g     # in place + manifest
    /opt/ortvenv/bin/python models/tools/optimize_graph.py --make-fixture tests/fixtures/models/pad-conv
    /opt/ortvenv/bin/python models/tools/optimize_graph.py --self-test    # the quantised Pad folds

Python deps: requirements-optimize.txt (onnx, numpy, onnxruntime for the check; OpenCV for the photos).

tf2onnx turns TF.js/TF "SAME" padding into a separate `Pad` node in front of each Conv/MaxPool; tract keeps
such a Pad as its own pass over the activation (it only absorbs a Pad into a Conv in some padding modes,
and never into a MaxPool). Every rewrite here keeps the graph's semantics exactly:

* pad-into-conv: `Pad(x, pads, 0) -> Conv` becomes `Conv(x, pads += Pad's spatial pads)`. Only constant mode,
  pad value 0, batch and channel axes unpadded, non-negative pads, Conv without auto_pad, and the Pad output
  read by nothing else.
* pad-into-qlinearconv: the same for `Pad(uint8/int8 x, pads, v) -> QLinearConv` when v equals the
  QLinearConv's x_zero_point (the quantised value of 0.0, which is what the conv pads with).
* pad-through-qdq: `Pad(x, pads, 0) -> QuantizeLinear -> DequantizeLinear -> Conv` (a QDQ graph whose Pad
  stayed float) becomes `x -> Q -> DQ -> Conv(pads)`: Q(0) is the zero point and DQ(zero point) is 0, so
  quantising the zeros the Pad added gives the zeros the Conv pads with. `DequantizeLinear -> Pad -> Conv` is
  the plain pad-into-conv case.
* pad-into-maxpool: `Pad(x, pads, -inf) -> MaxPool` becomes `MaxPool(pads)`; ONNX MaxPool ignores padded
  cells, which is max with -inf. Only when every pad is smaller than the kernel (no window made of padding
  alone), dilation 1, one output.
* transpose-pairs: `Transpose(p) -> Transpose(q)` whose composition is the identity: the readers of the
  second read the first's input (the first stays if something else reads it). Identity Transposes and
  Reshapes to the same static shape are dropped, and `Reshape -> Reshape` reads the first's input.

The result is checked: onnxruntime (graph optimisations OFF, so each graph runs as written) on the original
and on the rewritten graph, on real photos pre-processed as the manifest says (tests/fixtures/images/*) or,
without a manifest, on random inputs; every output must agree within --tol (default 1e-5, absolute). The
script prints the max difference and exits non-zero when it is exceeded.
"""
from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import os
import re
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGES = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "images", "*")))


def log(*a):
    print("[optimize]", *a, flush=True)


# ----------------------------------------------------------------------------------------- graph utilities
class Graph:
    """Index of a GraphProto: producers, consumers, constant values (initializers, Constant nodes and
    Casts of them, which is how convert_human_models.py stores float16 weights)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.stale = set()  # tensors whose recorded value_info no longer holds
        self.reindex()

    def reindex(self):
        self.inits = {i.name: i for i in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers = collections.defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.graph_outputs = {o.name for o in self.g.output}

    def const(self, name: str):
        """numpy value of a constant tensor name, or None when it is computed at run time."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.producer.get(name)
        if n is None:
            return None
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
            return None
        if n.op_type == "Cast":
            v = self.const(n.input[0])
            if v is None:
                return None
            to = helper.get_attribute_value(next(a for a in n.attribute if a.name == "to"))
            return v.astype(helper.tensor_dtype_to_np_dtype(to))
        return None

    def only_reader(self, name: str):
        """The single node reading `name`, or None when several nodes (or a graph output) read it."""
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or name in self.graph_outputs:
            return None
        return readers[0]

    def shape(self, name: str):
        """Static shape from value_info / inputs / outputs / initializers, or None."""
        if name in self.inits:
            return list(self.inits[name].dims)
        for vi in list(self.g.value_info) + list(self.g.input) + list(self.g.output):
            if vi.name == name and vi.type.tensor_type.HasField("shape"):
                dims = vi.type.tensor_type.shape.dim
                if all(d.HasField("dim_value") for d in dims):
                    return [d.dim_value for d in dims]
        return None

    def remove(self, nodes):
        ids = {id(n) for n in nodes}
        keep = [n for n in self.g.node if id(n) not in ids]
        del self.g.node[:]
        self.g.node.extend(keep)

    def rewire(self, old: str, new: str):
        """Every reader of tensor `old` reads `new` instead (graph outputs are never rewired)."""
        for n in self.g.node:
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new

    def drop_dead(self):
        """Remove nodes whose outputs nothing reads, and unused initializers."""
        while True:
            self.reindex()
            dead = [n for n in self.g.node
                    if all(not self.consumers.get(o) and o not in self.graph_outputs for o in n.output)]
            if not dead:
                break
            self.remove(dead)
        used = {i for n in self.g.node for i in n.input} | self.graph_outputs
        live = [i for i in self.g.initializer if i.name in used]
        if len(live) != len(self.g.initializer):
            del self.g.initializer[:]
            self.g.initializer.extend(live)
        self.reindex()


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node, name, value):
    for k, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[k]
            break
    node.attribute.append(helper.make_attribute(name, value))


def pad_spec(G: Graph, pad):
    """(per-axis (begin, end) list, constant value or None for the default 0, input dtype) of a constant-mode
    Pad with static pads, or None."""
    mode = attr(pad, "mode", b"constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode != "constant":
        return None
    if len(pad.input) > 3 and pad.input[3]:  # opset-18 axes input: not produced by our converters
        return None
    pads = G.const(pad.input[1]) if len(pad.input) > 1 else None
    if pads is None:
        return None
    pads = [int(p) for p in pads.ravel()]
    rank = len(pads) // 2
    per_axis = [(pads[a], pads[a + rank]) for a in range(rank)]
    value = None
    if len(pad.input) > 2 and pad.input[2]:
        value = G.const(pad.input[2])
        if value is None:
            return None
        value = value.ravel()
        if value.size != 1:
            return None
        value = value[0]
    return per_axis, value


def spatial_only(per_axis):
    """Spatial (begin, end) pads of an NC... tensor, or None when batch/channel are padded or a pad is negative."""
    if len(per_axis) < 3 or per_axis[0] != (0, 0) or per_axis[1] != (0, 0):
        return None
    if any(b < 0 or e < 0 for b, e in per_axis):
        return None
    return per_axis[2:]


def add_pads(node, spatial):
    """Add spatial (begin, end) pads to a Conv/QLinearConv/MaxPool's `pads` ([x1_b, x2_b, .., x1_e, x2_e])."""
    n = len(spatial)
    old = attr(node, "pads", [0] * (2 * n))
    new = [old[i] + spatial[i][0] for i in range(n)] + [old[n + i] + spatial[i][1] for i in range(n)]
    set_attr(node, "pads", new)


def no_auto_pad(node):
    ap = attr(node, "auto_pad", b"NOTSET")
    return (ap.decode() if isinstance(ap, bytes) else ap) == "NOTSET"


# ------------------------------------------------------------------------------------------------ rewrites
def fold_pad_into_conv(G: Graph) -> int:
    """pad-into-conv and pad-into-qlinearconv."""
    done = 0
    for pad in [n for n in G.g.node if n.op_type == "Pad"]:
        spec = pad_spec(G, pad)
        conv = G.only_reader(pad.output[0])
        if spec is None or conv is None or not no_auto_pad(conv):
            continue
        per_axis, value = spec
        spatial = spatial_only(per_axis)
        if spatial is None:
            continue
        if conv.op_type == "Conv" and conv.input[0] == pad.output[0]:
            if value is not None and float(value) != 0.0:
                continue
        elif conv.op_type == "QLinearConv" and conv.input[0] == pad.output[0]:
            zp = G.const(conv.input[2])
            pv = 0 if value is None else value
            if zp is None or zp.size != 1 or int(zp.ravel()[0]) != int(pv):
                continue
        else:
            continue
        add_pads(conv, spatial)
        G.rewire(pad.output[0], pad.input[0])
        G.remove([pad])
        G.reindex()
        done += 1
    return done


def fold_pad_through_qdq(G: Graph) -> int:
    done = 0
    for pad in [n for n in G.g.node if n.op_type == "Pad"]:
        spec = pad_spec(G, pad)
        q = G.only_reader(pad.output[0])
        if spec is None or q is None or q.op_type != "QuantizeLinear" or q.input[0] != pad.output[0]:
            continue
        dq = G.only_reader(q.output[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        conv = G.only_reader(dq.output[0])
        if conv is None or conv.op_type != "Conv" or conv.input[0] != dq.output[0] or not no_auto_pad(conv):
            continue
        per_axis, value = spec
        spatial = spatial_only(per_axis)
        if spatial is None or (value is not None and float(value) != 0.0):
            continue
        # Q and DQ must share scale and zero point for DQ(Q(0)) == 0 to hold trivially; with the quantiser's
        # output they are the same tensors. Different ones are left alone.
        if list(q.input[1:]) != list(dq.input[1:]):
            continue
        add_pads(conv, spatial)
        q.input[0] = pad.input[0]
        G.stale.update([q.output[0], dq.output[0]])  # Q and DQ now carry the unpadded shape
        G.remove([pad])
        G.reindex()
        done += 1
    return done


def fold_pad_into_maxpool(G: Graph) -> int:
    done = 0
    for pad in [n for n in G.g.node if n.op_type == "Pad"]:
        spec = pad_spec(G, pad)
        mp = G.only_reader(pad.output[0])
        if spec is None or mp is None or mp.op_type != "MaxPool" or len(mp.output) != 1:
            continue
        if not no_auto_pad(mp) or attr(mp, "ceil_mode", 0) != 0 or attr(mp, "storage_order", 0) != 0:
            continue
        per_axis, value = spec
        spatial = spatial_only(per_axis)
        if spatial is None or value is None or not (np.isneginf(value)):
            continue
        kernel = attr(mp, "kernel_shape")
        dil = attr(mp, "dilations", [1] * len(kernel))
        old = attr(mp, "pads", [0] * (2 * len(kernel)))
        if any(d != 1 for d in dil) or any(o != 0 for o in old):
            continue
        if any(b >= k or e >= k for (b, e), k in zip(spatial, kernel)):
            continue
        add_pads(mp, spatial)
        G.rewire(pad.output[0], pad.input[0])
        G.remove([pad])
        G.reindex()
        done += 1
    return done


def drop_transpose_pairs(G: Graph) -> int:
    done = 0
    for t2 in [n for n in G.g.node if n.op_type == "Transpose"]:
        t1 = G.producer.get(t2.input[0])
        if t1 is None or t1.op_type != "Transpose":
            continue
        p, q = attr(t1, "perm"), attr(t2, "perm")
        if p is None or q is None or len(p) != len(q):
            continue
        # out2[i] = in1 axis p[q[i]]: identity when p[q[i]] == i for every i
        if any(p[q[i]] != i for i in range(len(q))):
            continue
        if t2.output[0] in G.graph_outputs:
            continue
        G.rewire(t2.output[0], t1.input[0])
        G.remove([t2])
        G.reindex()
        done += 1
    return done


def drop_identity_transposes_reshapes(G: Graph) -> int:
    done = 0
    for n in list(G.g.node):
        if n.output[0] in G.graph_outputs:
            continue
        if n.op_type == "Transpose":
            perm = attr(n, "perm")
            if perm is None or list(perm) != list(range(len(perm))):
                continue
        elif n.op_type == "Reshape":
            a, b = G.shape(n.input[0]), G.shape(n.output[0])
            if a is None or b is None or a != b:
                continue
        else:
            continue
        G.rewire(n.output[0], n.input[0])
        G.remove([n])
        G.reindex()
        done += 1
    # Reshape -> Reshape: the second only needs the first's input (the target shape is the second's)
    for r2 in [n for n in G.g.node if n.op_type == "Reshape"]:
        r1 = G.producer.get(r2.input[0])
        if r1 is None or r1.op_type != "Reshape" or attr(r2, "allowzero", 0) or attr(r1, "allowzero", 0):
            continue
        target = G.const(r2.input[1])
        if target is None or any(int(d) == 0 for d in target.ravel()):  # 0 copies r1's dims: keep
            continue
        r2.input[0] = r1.input[0]
        G.reindex()
        done += 1
    return done


REWRITES = [
    ("pad-into-conv", fold_pad_into_conv),
    ("pad-through-qdq", fold_pad_through_qdq),
    ("pad-into-maxpool", fold_pad_into_maxpool),
    ("transpose-pairs", drop_transpose_pairs),
    ("identity-transpose-reshape", drop_identity_transposes_reshapes),
]


def optimize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    G = Graph(model)
    counts = {}
    for name, fn in REWRITES:
        counts[name] = fn(G)
    G.drop_dead()
    # value_info of removed tensors is harmless but stale; drop entries whose tensor no longer exists
    names = {o for n in G.g.node for o in n.output} | {i.name for i in G.g.input} | set(G.inits)
    vi = [v for v in G.g.value_info if v.name in names and v.name not in G.stale]
    del G.g.value_info[:]
    G.g.value_info.extend(vi)
    onnx.checker.check_model(model)
    return model, {k: v for k, v in counts.items() if v}


# ------------------------------------------------------------------------------------------------- checking
def ort_session(model_bytes: bytes):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    # OFF: onnxruntime would otherwise fuse the Pads itself, and the check must run each graph as written
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def check_inputs(model: onnx.ModelProto, manifest: str | None):
    """[(label, {input name: array})]: the fixture photos through the manifest's pre-processing, or random."""
    if manifest:
        sys.path.insert(0, HERE)
        from ref import common
        m = common.load_manifest(manifest)
        out = []
        for p in IMAGES:
            img, _ = common.preprocess(common.read_rgb(p), m)
            out.append((os.path.basename(p), {m["input"]["name"]: common.to_tensor(img, m)}))
        return out
    rng = np.random.default_rng(0)
    init_names = {i.name for i in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        dt = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        feeds[inp.name] = rng.standard_normal(shape).astype(dt)
    return [("random", feeds)]


def verify(original: onnx.ModelProto, rewritten: onnx.ModelProto, manifest: str | None, tol: float) -> float:
    a, b = ort_session(original.SerializeToString()), ort_session(rewritten.SerializeToString())
    names = [o.name for o in a.get_outputs()]
    worst = 0.0
    for label, feeds in check_inputs(original, manifest):
        oa, ob = a.run(names, feeds), b.run(names, feeds)
        diffs = []
        for n, x, y in zip(names, oa, ob):
            if x.shape != y.shape:
                raise SystemExit(f"{label}: output {n} shape {x.shape} vs {y.shape}")
            d = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.size else 0.0
            diffs.append(d)
        worst = max(worst, max(diffs))
        log(f"  {label}: max |original - rewritten| = {max(diffs):.3e}")
    if worst > tol:
        raise SystemExit(f"rewritten graph differs from the original by {worst:.3e} > {tol:g}")
    return worst


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def optimize_file(src: str, dst: str, manifest: str | None, tol: float) -> dict:
    original = onnx.load(src)
    rewritten, counts = optimize(original)
    log(f"{src}: {counts or 'nothing to rewrite'}; "
        f"{len(original.graph.node)} -> {len(rewritten.graph.node)} nodes")
    worst = verify(original, rewritten, manifest, tol)
    log(f"  checked on {len(IMAGES) if manifest else 1} input(s): max diff {worst:.3e} (tol {tol:g})")
    if counts or src != dst:
        onnx.save(rewritten, dst)
    return counts


def update_manifest(manifest: str, model_file: str):
    """Point the manifest's [source].sha256 at the rewritten file and note the rewrite in converted_by."""
    text = open(manifest).read()
    text = re.sub(r'(?m)^sha256 = "[0-9a-f]+"', f'sha256 = "{sha256(model_file)}"', text)
    if "optimize_graph.py" not in text:
        text = re.sub(r'(?m)^converted_by = "(.*)"$',
                      lambda m: f'converted_by = "{m.group(1)} + models/tools/optimize_graph.py"', text)
    open(manifest, "w").write(text)
    log(f"  {manifest}: sha256 {sha256(model_file)}")


def optimize_model_dir(folder: str, tol: float) -> dict:
    sys.path.insert(0, HERE)
    from ref import common
    manifest = os.path.join(folder, "model.toml")
    path = common.model_path(common.load_manifest(manifest))
    counts = optimize_file(path, path, manifest, tol)
    if counts:
        update_manifest(manifest, path)
    return counts


# ------------------------------------------------------------------------------------------- test fixture
def make_fixture(out_dir: str, tol: float):
    """A few-KB fp32 graph with what the rewrites handle, as the real models have it (tf2onnx SAME padding):
    Pad(0) -> Conv (stride 2, asymmetric pads), Pad(0) -> Conv (existing pads), Pad(-inf) -> MaxPool,
    Transpose pair; plus its rewritten form. tests/graph_rewrites.rs runs both in tract. The self-test's
    quantised graphs (QLinearConv with a zero-point Pad, Pad -> Q -> DQ -> Conv) go to the same folder."""
    rng = np.random.default_rng(7)
    X = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 17, 20])
    Y = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0, 1, 0, 0, 1, 2], np.int64), "pads_a"),
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads_b"),
        numpy_helper.from_array(np.array(-np.inf, np.float32), "neg_inf"),
        numpy_helper.from_array((rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 0, 0, 1], np.int64), "pads_c"),
    ]
    nodes = [
        helper.make_node("Pad", ["input", "pads_a"], ["p1"], name="pad_a"),
        helper.make_node("Conv", ["p1", "w1", "b1"], ["c1"], name="conv_s2", strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("LeakyRelu", ["c1"], ["r1"], alpha=0.1),
        helper.make_node("Pad", ["r1", "pads_b", "neg_inf"], ["p2"], name="pad_b"),
        helper.make_node("MaxPool", ["p2"], ["m1"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Pad", ["m1", "pads_c", "zero"], ["p3"], name="pad_c"),
        helper.make_node("Conv", ["p3", "w2"], ["c2"], name="conv_dw", group=8, kernel_shape=[3, 3],
                         pads=[0, 1, 1, 0]),
        helper.make_node("Transpose", ["c2"], ["t1"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 3, 1, 2]),
        helper.make_node("Sigmoid", ["t2"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "pad_conv_fixture", [X], [Y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="models/tools/optimize_graph.py --make-fixture")
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    os.makedirs(out_dir, exist_ok=True)
    before, after = os.path.join(out_dir, "original.onnx"), os.path.join(out_dir, "rewritten.onnx")
    onnx.save(model, before)
    counts = optimize_file(before, after, None, tol)
    expected = {"pad-into-conv": 2, "pad-into-maxpool": 1, "transpose-pairs": 1}
    if counts != expected:
        raise SystemExit(f"fixture: expected rewrites {expected}, got {counts}")
    log(f"wrote {before} ({os.path.getsize(before)} B) and {after} ({os.path.getsize(after)} B)")


def self_test(tol: float, out_dir: str | None = None):
    """The quantised patterns, which none of the shipped graphs has any more (onnxruntime's quant_pre_process
    folds zero Pads before quantising): Pad(uint8, zero point) -> QLinearConv, and
    Pad(0) -> QuantizeLinear -> DequantizeLinear -> Conv. Each must be rewritten and give onnxruntime's
    outputs of the original; a Pad whose value is not the zero point must be left alone."""
    rng = np.random.default_rng(11)
    f32, u8 = TensorProto.FLOAT, TensorProto.UINT8

    def model(nodes, inits, io_type=f32):
        g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", io_type, [1, 4, 9, 8])],
                              [helper.make_tensor_value_info("y", io_type, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)

    w = (rng.standard_normal((6, 4, 3, 3)) * 0.5).astype(np.float32)
    common = [numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64), "pads")]
    # QLinearConv, input zero point 7 and a Pad with 7 (the quantised 0.0), then a Pad with 3 (kept)
    q = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"), numpy_helper.from_array(np.uint8(7), "xz"),
         numpy_helper.from_array(np.clip(np.round(w / 0.01), -127, 127).astype(np.int8), "wq"),
         numpy_helper.from_array(np.array(0.01, np.float32), "ws"), numpy_helper.from_array(np.int8(0), "wz"),
         numpy_helper.from_array(np.array(0.1, np.float32), "ys"), numpy_helper.from_array(np.uint8(128), "yz")]
    cases = []
    for value, expect in ((7, {"pad-into-conv": 1}), (3, {})):
        pv = [numpy_helper.from_array(np.uint8(value), "pv")]
        nodes = [helper.make_node("Pad", ["x", "pads", "pv"], ["p"]),
                 helper.make_node("QLinearConv", ["p", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["y"],
                                  kernel_shape=[3, 3])]
        cases.append((f"qlinearconv-pad{value}", model(nodes, common + q + pv, u8), expect))
    # QDQ: Pad(0) stays float in front of the activation's Q/DQ pair
    qdq = [numpy_helper.from_array(np.array(0.02, np.float32), "s"), numpy_helper.from_array(np.uint8(100), "z"),
           numpy_helper.from_array(w, "w")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("Conv", ["dq", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 1])]
    cases.append(("pad-qdq-conv", model(nodes, common + qdq), {"pad-through-qdq": 1}))
    for label, m, expect in cases:
        onnx.checker.check_model(m)
        rewritten, counts = optimize(m)
        if counts != expect:
            raise SystemExit(f"self-test {label}: expected {expect}, got {counts}")
        feeds = check_inputs(m, None)[0][1]
        if m.graph.input[0].type.tensor_type.elem_type == u8:
            feeds = {"x": rng.integers(0, 256, (1, 4, 9, 8)).astype(np.uint8)}
        a = ort_session(m.SerializeToString()).run(None, feeds)[0]
        b = ort_session(rewritten.SerializeToString()).run(None, feeds)[0]
        d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        log(f"self-test {label}: {counts or 'left alone'}, output {list(a.shape)}, max diff {d:.3e}")
        if a.shape != b.shape or d > tol:
            raise SystemExit(f"self-test {label}: outputs differ ({a.shape} vs {b.shape}, {d})")
        if out_dir and counts:
            onnx.save(m, os.path.join(out_dir, f"{label}.original.onnx"))
            onnx.save(rewritten, os.path.join(out_dir, f"{label}.rewritten.onnx"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", nargs="?")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--manifest", help="model.toml whose pre-processing feeds the photos to the check")
    ap.add_argument("--model", action="append", default=[],
                    help="model folder (models/<name>): rewrite its ONNX in place, update model.toml's sha256")
    ap.add_argument("--make-fixture", metavar="DIR", help="write the Pad->Conv test graphs to DIR")
    ap.add_argument("--self-test", action="store_true",
                    help="check the QLinearConv and QDQ Pad folds on small generated graphs")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()
    if a.self_test:
        self_test(a.tol)
    if a.make_fixture:
        make_fixture(a.make_fixture, a.tol)
        self_test(a.tol, a.make_fixture)
    for folder in a.model:
        optimize_model_dir(folder, a.tol)
    if a.src:
        if not a.dst:
            ap.error("give OUT.onnx")
        optimize_file(a.src, a.dst, a.manifest, a.tol)
    if not (a.self_test or a.make_fixture or a.model or a.src):
        ap.error("nothing to do")


if __name__ == "__main__":
    main()
