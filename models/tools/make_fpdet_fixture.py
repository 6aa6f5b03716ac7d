#!/usr/bin/env python3
"""Writes tests/fixtures/models/fpdet/fpdet.onnx: the fp32 detector ops lookout swaps into tract's
plans (src/engine/softmax.rs AxisSoftmax, src/engine/maxpool.rs SeparableMaxPool), each as a graph
output so tests/engine_fpdet.rs compares every one with tract's untouched plan and onnxruntime.

* FastestDet's class-score softmax, `Transpose(0,3,2,1) -> Softmax(axis 3) -> Transpose(0,3,2,1)`,
  which tract folds into one softmax over axis 1; softmaxes over axis 1 and axis 2 directly; one
  over the last axis (left to tract: its vectorised path).
* Max pools: 3x3/2 pad 1 (FastestDet, NanoDet-g stems), 5/9/13 stride 1 (YOLOX's SPP), 2x2/2,
  3x2 strides (3,2) with asymmetric pads and ceil mode.

With onnxruntime it also writes `input.bin` (the input, f32 little-endian) and `ort.bin` (the graph
outputs' f32 values in output order, concatenated): the independent reference.
Needs numpy, onnx, onnxruntime (models/tools/requirements-fpdet.txt):
    python models/tools/make_fpdet_fixture.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models", "fpdet")
SHAPE = [1, 8, 24, 30]


def build():
    nodes, outputs = [], []

    def out(name):
        outputs.append(name)

    # FastestDet's pattern (its file is opset 11, where a softmax over the last axis means the same).
    nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 2, 1]))
    nodes.append(helper.make_node("Softmax", ["xt"], ["smt"], axis=3))
    nodes.append(helper.make_node("Transpose", ["smt"], ["sm_fastestdet"], perm=[0, 3, 2, 1]))
    out("sm_fastestdet")
    for axis in (1, 2, 3):
        nodes.append(helper.make_node("Softmax", ["x"], [f"sm_axis{axis}"], axis=axis))
        out(f"sm_axis{axis}")
    # (name, kernel, strides, pads [t, l, b, r], ceil_mode)
    pools = [
        ("mp3s2", [3, 3], [2, 2], [1, 1, 1, 1], 0),
        ("mp5", [5, 5], [1, 1], [2, 2, 2, 2], 0),
        ("mp9", [9, 9], [1, 1], [4, 4, 4, 4], 0),
        ("mp13", [13, 13], [1, 1], [6, 6, 6, 6], 0),
        ("mp2s2", [2, 2], [2, 2], [0, 0, 0, 0], 0),
        ("mp3x2_ceil", [3, 2], [3, 2], [1, 1, 0, 0], 1),
    ]
    for name, k, s, p, ceil in pools:
        nodes.append(helper.make_node("MaxPool", ["x"], [name], kernel_shape=k, strides=s, pads=p,
                                      ceil_mode=ceil))
        out(name)
    inp = [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)]
    opset = [helper.make_opsetid("", 13)]
    # The output shapes from onnx's own shape inference, then the graph with its typed outputs.
    untyped = helper.make_model(helper.make_graph(nodes, "fpdet", inp, []), opset_imports=opset)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(untyped).graph.value_info}
    graph = helper.make_graph(nodes, "fpdet", inp, [inferred[name] for name in outputs])
    model = helper.make_model(graph, opset_imports=opset, producer_name="lookout")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    os.makedirs(OUT, exist_ok=True)
    model = build()
    path = os.path.join(OUT, "fpdet.onnx")
    onnx.save(model, path)
    print("wrote", path)
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime absent: no reference outputs written")
        return
    x = (np.random.default_rng(7).standard_normal(SHAPE) * 3.0).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"x": x})
    x.astype("<f4").tofile(os.path.join(OUT, "input.bin"))
    with open(os.path.join(OUT, "ort.bin"), "wb") as f:
        for o in outs:
            f.write(np.ascontiguousarray(o, dtype="<f4").tobytes())
    print("onnxruntime", ort.__version__, "outputs:", [(o.name, list(v.shape)) for o, v in zip(sess.get_outputs(), outs)])


if __name__ == "__main__":
    main()
