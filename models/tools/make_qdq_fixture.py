#!/usr/bin/env python3
"""Writes tests/fixtures/models/qdq/{qdq-u8,qdq-i8}.onnx: QDQ-format convolutions
(DequantizeLinear -> Conv -> QuantizeLinear, as onnxruntime's quantize_static writes them) in every
geometry lookout's QdqConv pass (src/engine/qdq.rs) takes over from tract, plus ones it must leave
to tract (a grouped conv, a conv whose output is not quantized), and a quantized concat
(DequantizeLinear [-> LeakyRelu] -> Concat -> QuantizeLinear, src/engine/qconcat.rs).

Each QuantizeLinear output is a graph output, so tests/engine_qdq.rs compares every one of them
between lookout's plan and tract's untouched plan. Weights, scales and zero points are random but
seeded. With onnxruntime installed it also writes an input (`input-{u8,i8}.bin`) and onnxruntime's
outputs for it with its default optimisations, which fuse each chain into QLinearConv
(`ort-{u8,i8}.bin`: the quantized graph outputs' bytes, concatenated), the independent reference.
Needs numpy and onnx (versions: models/tools/requirements-reference.txt):
    python models/tools/make_qdq_fixture.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models", "qdq")
SHAPE = (1, 8, 13, 11)


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

    scales = {"x": np.float32(0.02)}
    zps = {"x": zp("x_zp")}
    const("x_scale", np.array(scales["x"], dtype=np.float32))
    scale_names = {"x": "x_scale"}
    x_std = {"x": 74 * 0.02}  # uniform 8-bit input

    # (name, input, c_in, c_out, kernel, strides, pads [t, l, b, r], dilations, group, weights, bias)
    specs = [
        ("c3x3", "x", 8, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "per_channel", True),
        ("c3x3_s2", "c3x3", 16, 12, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, "per_tensor", True),
        ("c1x1", "c3x3_s2", 12, 20, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "per_channel", True),
        ("dw3x3", "c1x1", 20, 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 20, "per_channel", True),
        ("dw5x5_s2", "dw3x3", 20, 20, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 20, "per_channel", True),
        ("c3x3_dil2_asym", "c3x3", 16, 10, (3, 3), (1, 1), (1, 2, 0, 1), (2, 2), 1, "per_channel", True),
        ("c1x1_s2_nobias", "c3x3", 16, 9, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, "per_channel", False),
        # Left to tract: grouped but not depthwise.
        ("grouped", "c3x3", 16, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, "per_channel", True),
    ]
    for name, src, cin, cout, k, s, p, d, g, wk, has_bias in specs:
        wshape = (cout, cin // g) + k
        w = rng.integers(-127, 128, wshape).astype(np.int8)
        if wk == "per_tensor":
            w_scale = np.array(0.012, dtype=np.float32)
            w_zp = np.array(0, dtype=np.int8)
        else:
            w_scale = rng.uniform(0.005, 0.02, (cout,)).astype(np.float32)
            w_zp = np.zeros((cout,), dtype=np.int8)
        fan_in = (cin // g) * k[0] * k[1]
        y_std = np.sqrt(fan_in) * x_std[src] * 74 * float(np.mean(w_scale))
        y_scale = np.float32(3 * y_std / 128 * rng.uniform(0.8, 1.2))
        x_std[name] = 43 * float(y_scale)

        # DequantizeLinear of the input, weights and bias; bias scale = x_scale * w_scale in f32.
        nodes.append(helper.make_node(
            "DequantizeLinear", [src, scale_names[src], zps[src]], [f"{name}_xf"], name=f"{name}_dqx"))
        nodes.append(helper.make_node(
            "DequantizeLinear",
            [const(f"{name}_w", w), const(f"{name}_w_scale", w_scale), const(f"{name}_w_zp", w_zp)],
            [f"{name}_wf"], name=f"{name}_dqw", axis=0))
        conv_in = [f"{name}_xf", f"{name}_wf"]
        if has_bias:
            b = rng.integers(-3000, 3000, (cout,)).astype(np.int32)
            b_scale = (np.float32(scales[src]) * np.broadcast_to(w_scale, (cout,))).astype(np.float32)
            nodes.append(helper.make_node(
                "DequantizeLinear",
                [const(f"{name}_b", b), const(f"{name}_b_scale", b_scale),
                 const(f"{name}_b_zp", np.zeros((cout,), dtype=np.int32))],
                [f"{name}_bf"], name=f"{name}_dqb", axis=0))
            conv_in.append(f"{name}_bf")
        nodes.append(helper.make_node(
            "Conv", conv_in, [f"{name}_yf"], name=f"{name}_conv", kernel_shape=list(k),
            strides=list(s), pads=list(p), dilations=list(d), group=g))
        scales[name] = y_scale
        scale_names[name] = const(f"{name}_y_scale", np.array(y_scale, dtype=np.float32))
        zps[name] = zp(f"{name}_y_zp")
        nodes.append(helper.make_node(
            "QuantizeLinear", [f"{name}_yf", scale_names[name], zps[name]], [name], name=f"{name}_q"))
        outputs.append(helper.make_tensor_value_info(name, act_dt, [1, cout, None, None]))

    # Left to tract: a QDQ conv whose output stays float (no QuantizeLinear after it).
    w = rng.integers(-127, 128, (4, 16, 1, 1)).astype(np.int8)
    nodes.append(helper.make_node(
        "DequantizeLinear", ["c3x3", "c3x3_y_scale", zps["c3x3"]], ["float_xf"], name="float_dqx"))
    nodes.append(helper.make_node(
        "DequantizeLinear",
        [const("float_w", w), const("float_w_scale", np.full((4,), 0.01, np.float32)),
         const("float_w_zp", np.zeros((4,), np.int8))],
        ["float_wf"], name="float_dqw", axis=0))
    nodes.append(helper.make_node("Conv", ["float_xf", "float_wf"], ["float_out"], name="float_conv"))
    outputs.append(helper.make_tensor_value_info("float_out", TensorProto.FLOAT, [1, 4, None, None]))

    # A quantized concat as both int8 formats write one (src/engine/qconcat.rs): one input through
    # DequantizeLinear -> LeakyRelu, the other through DequantizeLinear only, each with its own
    # scale, requantized to a third.
    nodes.append(helper.make_node(
        "DequantizeLinear", ["c3x3_s2", "c3x3_s2_y_scale", zps["c3x3_s2"]], ["cat_af"], name="cat_dqa"))
    nodes.append(helper.make_node("LeakyRelu", ["cat_af"], ["cat_al"], name="cat_leaky", alpha=0.1))
    nodes.append(helper.make_node(
        "DequantizeLinear", ["c1x1_s2_nobias", "c1x1_s2_nobias_y_scale", zps["c1x1_s2_nobias"]], ["cat_bf"],
        name="cat_dqb"))
    nodes.append(helper.make_node("Concat", ["cat_al", "cat_bf"], ["cat_f"], name="cat", axis=1))
    cat_scale = const("cat_y_scale", np.array(max(scales["c3x3_s2"], scales["c1x1_s2_nobias"]), np.float32))
    nodes.append(helper.make_node("QuantizeLinear", ["cat_f", cat_scale, zp("cat_y_zp")], ["concat"],
                                  name="cat_q"))
    outputs.append(helper.make_tensor_value_info("concat", act_dt, [1, 21, None, None]))
    # And one whose first input is f32 to begin with (the float conv's output), as nanodet's first.
    nodes.append(helper.make_node(
        "DequantizeLinear", ["c3x3", "c3x3_y_scale", zps["c3x3"]], ["catf_bf"], name="catf_dqb"))
    nodes.append(helper.make_node("Concat", ["float_out", "catf_bf"], ["catf_f"], name="catf", axis=1))
    nodes.append(helper.make_node("QuantizeLinear", ["catf_f", "c3x3_y_scale", zp("catf_y_zp")],
                                  ["concat_f"], name="catf_q"))
    outputs.append(helper.make_tensor_value_info("concat_f", act_dt, [1, 20, None, None]))

    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", act_dt, list(SHAPE))], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for dt, tag, seed in [(TensorProto.UINT8, "u8", 17), (TensorProto.INT8, "i8", 18)]:
        path = os.path.join(OUT, f"qdq-{tag}.onnx")
        model = build(dt, seed)
        onnx.save(model, path)
        print("wrote", os.path.normpath(path))
        try:
            import onnxruntime as ort
        except ImportError:
            print("onnxruntime not installed: no reference outputs")
            continue
        rng = np.random.default_rng(seed + 100)
        x = rng.integers(0, 256, SHAPE).astype(np.uint8)
        if dt == TensorProto.INT8:
            x = x.view(np.int8)
        x.tofile(os.path.join(OUT, f"input-{tag}.bin"))
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"x": x})
        names = [o.name for o in sess.get_outputs()]
        with open(os.path.join(OUT, f"ort-{tag}.bin"), "wb") as f:
            for name, y in zip(names, outs):
                if name not in ("grouped", "float_out"):
                    f.write(y.tobytes())
        # Unfused (ORT_DISABLE_ALL: float conv between DequantizeLinear and QuantizeLinear, as
        # tract's plan computes it), for the record: how many bytes the two onnxruntime plans differ.
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        plain = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        for name, a, b in zip(names, outs, plain):
            if name != "float_out":
                diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
                print(f"  {tag} {name}: fused vs unfused onnxruntime differ in {int((diff > 0).sum())}"
                      f" of {diff.size}, by at most {int(diff.max())}")
        print("wrote onnxruntime", ort.__version__, "reference for", tag)
