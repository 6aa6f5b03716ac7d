#!/usr/bin/env python3
"""Writes tests/fixtures/models/qconv/{qconv-u8,qconv-i8}.onnx: QLinearConv in every geometry
lookout's QConv (src/engine/qconv.rs) takes over from tract, plus ones it must leave to tract.

Each conv output is a graph output, so tests/graph_rewrites.rs compares every one of them between
lookout's plan and tract's untouched plan. Weights, scales and zero points are random but seeded.
With onnxruntime installed it also writes an input (`input-{u8,i8}.bin`) and onnxruntime's output
for it (`ort-{u8,i8}.bin`: the graph outputs' bytes, concatenated, the grouped conv left out as
onnxruntime and tract both run it), the independent reference the test holds QConv to.
Needs numpy and onnx: python models/tools/make_qconv_fixture.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models", "qconv")


def build(act_dt, seed):
    rng = np.random.default_rng(seed)
    np_act = np.uint8 if act_dt == TensorProto.UINT8 else np.int8
    lo, hi = (0, 256) if act_dt == TensorProto.UINT8 else (-128, 128)
    inits, nodes, outputs = [], [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def zp(name):
        return const(name, np.array(rng.integers(lo + 40, hi - 40), dtype=np_act))

    x_scale = const("x_scale", np.array(0.02, dtype=np.float32))
    x_zp = zp("x_zp")

    # (name, input, c_in, c_out, kernel, strides, pads [t, l, b, r], dilations, group, weight kind)
    specs = [
        ("c3x3", "x", 8, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "i8"),
        ("c3x3_s2", "c3x3", 16, 12, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "i8_per_tensor"),
        ("c1x1", "c3x3_s2", 12, 20, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "u8"),
        ("dw3x3", "c1x1", 20, 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 20, "i8"),
        ("dw5x5_s2", "dw3x3", 20, 20, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 20, "i8"),
        ("c3x3_dil2_asym", "c3x3", 16, 10, (3, 3), (1, 1), (1, 2, 0, 1), (2, 2), 1, "i8"),
        ("c2x3_s21", "c3x3", 16, 6, (2, 3), (2, 1), (0, 1, 1, 0), (1, 1), 1, "i8_zp"),
        ("c1x1_s2_nobias", "c3x3", 16, 9, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "i8"),
        # Left to tract: grouped but not depthwise.
        ("grouped", "c3x3", 16, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, "i8"),
    ]
    scales = {"x": x_scale}
    x_std = {"x": 74 * 0.02}  # uniform 8-bit input
    zps = {"x": x_zp}
    for name, src, cin, cout, k, s, p, d, g, wk in specs:
        wshape = (cout, cin // g) + k
        if wk == "u8" and act_dt == TensorProto.INT8:
            wk = "i8"  # onnxruntime has no i8-activation x u8-weight QLinearConv
        if wk == "u8":
            w = rng.integers(0, 256, wshape).astype(np.uint8)
            w_zp = np.array(128, dtype=np.uint8)
            w_scale = np.array(0.01, dtype=np.float32)
        elif wk == "i8_zp":
            # Non-zero weight zero points, per channel, with w - zp still inside i8.
            w_zp = rng.integers(-20, 20, (cout,)).astype(np.int8)
            w = (rng.integers(-100, 100, wshape) + w_zp.reshape(-1, 1, 1, 1)).astype(np.int8)
            w_scale = rng.uniform(0.005, 0.02, (cout,)).astype(np.float32)
        elif wk == "i8_per_tensor":
            w = rng.integers(-127, 128, wshape).astype(np.int8)
            w_zp = np.array(0, dtype=np.int8)
            w_scale = np.array(0.012, dtype=np.float32)
        else:
            w = rng.integers(-127, 128, wshape).astype(np.int8)
            w_zp = np.zeros((cout,), dtype=np.int8)
            w_scale = rng.uniform(0.005, 0.02, (cout,)).astype(np.float32)
        # Real-valued output spread ~ sqrt(fan-in)·std(x)·std(w) (+ zero-point offsets); pick the
        # output scale so that ±3 standard deviations fill the 8-bit range: few values saturate.
        w_real = (w.astype(np.float64) - w_zp.astype(np.float64).reshape(-1, *([1] * 3) if w_zp.ndim else ())) * (
            w_scale.reshape(-1, 1, 1, 1) if w_scale.ndim else w_scale
        )
        fan_in = (cin // g) * k[0] * k[1]
        y_std = np.sqrt(fan_in) * x_std[src] * np.sqrt((w_real**2).mean())
        y_scale = np.array(3 * y_std / 128 * rng.uniform(0.8, 1.2), dtype=np.float32)
        x_std[name] = 43 * float(y_scale)
        inputs = [
            src,
            scales[src],
            zps[src],
            const(f"{name}_w", w),
            const(f"{name}_w_scale", w_scale),
            const(f"{name}_w_zp", w_zp),
            const(f"{name}_y_scale", y_scale),
            zp(f"{name}_y_zp"),
        ]
        if "nobias" not in name:
            inputs.append(const(f"{name}_b", rng.integers(-3000, 3000, (cout,)).astype(np.int32)))
        nodes.append(
            helper.make_node(
                "QLinearConv",
                inputs,
                [name],
                name=name,
                kernel_shape=list(k),
                strides=list(s),
                pads=list(p),
                dilations=list(d),
                group=g,
            )
        )
        scales[name] = f"{name}_y_scale"
        zps[name] = f"{name}_y_zp"
        outputs.append(helper.make_tensor_value_info(name, act_dt, [1, cout, None, None]))

    graph = helper.make_graph(
        nodes,
        "qconv",
        [helper.make_tensor_value_info("x", act_dt, [1, 8, 13, 11])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for dt, tag, seed in [(TensorProto.UINT8, "u8", 7), (TensorProto.INT8, "i8", 8)]:
        path = os.path.join(OUT, f"qconv-{tag}.onnx")
        model = build(dt, seed)
        onnx.save(model, path)
        print("wrote", os.path.normpath(path))
        try:
            import onnxruntime as ort
        except ImportError:
            print("onnxruntime not installed: no reference outputs")
            continue
        rng = np.random.default_rng(seed + 100)
        x = rng.integers(0, 256, (1, 8, 13, 11)).astype(np.uint8)
        if dt == TensorProto.INT8:
            x = x.view(np.int8)
        x.tofile(os.path.join(OUT, f"input-{tag}.bin"))
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"x": x})
        names = [o.name for o in sess.get_outputs()]
        with open(os.path.join(OUT, f"ort-{tag}.bin"), "wb") as f:
            for name, y in zip(names, outs):
                if name != "grouped":
                    f.write(y.tobytes())
        print("wrote onnxruntime", ort.__version__, "reference for", tag)
