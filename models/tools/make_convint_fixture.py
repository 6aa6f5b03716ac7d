#!/usr/bin/env python3
"""Writes tests/fixtures/models/convint/: small convolution graphs quantised by onnxruntime's
`quantize_dynamic` (DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul, as Florence-2's `_int8`
vision encoder has them), the graphs lookout's exact f32 convolution (src/engine/convint.rs) takes
over from tract's integer convolution where f32 sums are exact.

The fp32 graph, on x [1, 8, 20, 20] (values of both signs, so the activation zero point is not 0,
and padded borders show whether padding is the zero point):
  dw    = depthwise 3x3, pad 1                      (k = 9: always exact)
  stem  = 7x7 stride 4, pad 3, 8 -> 16 channels     (k = 392: exact with 7-bit weights only)
  wide  = 1x1, 8 -> 128 channels                    (k = 8)
  big   = 3x3 stride 2, pad 1, over `wide`, 128 -> 8 (k = 1152: never exact, stays tract's)
Two files: `convint-s8rr.onnx` (int8 weights per output channel, reduced range: the transformers.js
recipe Florence-2's files are made with) and `convint-u8.onnx` (uint8 weights per tensor, full
range). For each, `expect.json` gives the convolutions the pass must take, computed here from the
quantised weights by the bound the pass uses (taps x 255 x max|W - w0| <= 2^24). Inputs `x.bin`
(f32 little-endian) and onnxruntime's outputs (`<file>.bin`: dw, stem, big, f32).
Needs numpy, onnx, onnxruntime (models/tools/requirements-qmatmul.txt):
python models/tools/make_convint_fixture.py
"""
import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models", "convint")


def fp32_model(rng):
    def w(shape, s):
        return rng.normal(0, s, shape).astype(np.float32)

    inits = {
        "w_dw": w((8, 1, 3, 3), 0.3),
        "w_stem": w((16, 8, 7, 7), 0.05),
        "b_stem": w((16,), 0.1),
        "w_wide": w((128, 8, 1, 1), 0.3),
        "w_big": w((8, 128, 3, 3), 0.03),
    }
    # Per-channel spread, so per-channel quantisation differs from per-tensor.
    inits["w_dw"] *= np.linspace(0.2, 2.0, 8, dtype=np.float32)[:, None, None, None]
    nodes = [
        helper.make_node("Conv", ["x", "w_dw"], ["dw"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["stem"], name="stem",
                         strides=[4, 4], pads=[3, 3, 3, 3]),
        helper.make_node("Conv", ["x", "w_wide"], ["wide"], name="wide"),
        helper.make_node("Conv", ["wide", "w_big"], ["big"], name="big", strides=[2, 2], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "convint",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
        [
            helper.make_tensor_value_info("dw", TensorProto.FLOAT, [1, 8, 20, 20]),
            helper.make_tensor_value_info("stem", TensorProto.FLOAT, [1, 16, 5, 5]),
            helper.make_tensor_value_info("big", TensorProto.FLOAT, [1, 8, 10, 10]),
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def exact_convs(path):
    """Names of the ConvIntegers whose f32 sums are exact by convint.rs's bound."""
    m = onnx.load(path)
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    taken = []
    for n in m.graph.node:
        if n.op_type != "ConvInteger":
            continue
        w = init[n.input[1]].astype(np.int64)
        w0 = init[n.input[3]].astype(np.int64) if len(n.input) > 3 and n.input[3] in init else np.zeros(1, np.int64)
        w0 = w0.reshape(-1, *([1] * (w.ndim - 1))) if w0.size > 1 else w0.reshape(())
        taps = int(np.prod(w.shape[1:]))
        if taps * 255 * int(np.abs(w - w0).max()) <= 1 << 24:
            taken.append(n.name)
    return sorted(taken)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(21)
    files = {
        "convint-s8rr": dict(weight_type=QuantType.QInt8, per_channel=True, reduce_range=True),
        "convint-u8": dict(weight_type=QuantType.QUInt8),
    }
    expect = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "convint.onnx")
        onnx.save(fp32_model(rng), src)
        for name, kw in files.items():
            dst = os.path.join(OUT, f"{name}.onnx")
            quantize_dynamic(src, dst, op_types_to_quantize=["Conv"], **kw)
            ops = [n.op_type for n in onnx.load(dst).graph.node]
            assert ops.count("ConvInteger") == 4, ops
            expect[name] = exact_convs(dst)
    x = rng.normal(0.3, 1.0, (1, 8, 20, 20)).astype(np.float32)
    x.tofile(os.path.join(OUT, "x.bin"))
    for name in files:
        sess = ort.InferenceSession(os.path.join(OUT, f"{name}.onnx"), providers=["CPUExecutionProvider"])
        outs = sess.run(["dw", "stem", "big"], {"x": x})
        np.concatenate([o.ravel() for o in outs]).astype("<f4").tofile(os.path.join(OUT, f"{name}.bin"))
    with open(os.path.join(OUT, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", sorted(os.listdir(OUT)), expect)


if __name__ == "__main__":
    main()
