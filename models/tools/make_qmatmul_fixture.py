#!/usr/bin/env python3
"""Writes tests/fixtures/models/qmatmul/: small MatMul graphs quantised by onnxruntime's
`quantize_dynamic` (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul, as the VLMs' _int8 files
have them), the graphs lookout's QMatMul (src/engine/qmatmul.rs) takes over from tract.

The fp32 graph: x [1, seq, 72] -> y = x @ W1 [72, 37]; z = relu(x @ W2 [72, 20]) @ W3 [20, 11].
W1 and W2 read the same activation, so quantize_dynamic writes one DynamicQuantizeLinear for both
(as for a layer's q/k/v projections). k = 72 and n = 37, 11 are not multiples of the kernels' 16/4.
Three files: int8 weights per tensor (`qmm-s8.onnx`), uint8 weights (`qmm-u8.onnx`), int8 per
column (`qmm-s8-pc.onnx`). For seq = 1 (a decoder step) and seq = 5 (a prefill) it writes the input
(`x-1.bin`, `x-5.bin`, f32 little-endian) and onnxruntime's outputs (`<file>-<seq>.bin`: y then z,
f32), the independent reference tests/engine_qmatmul.rs holds lookout to.
Needs numpy, onnx, onnxruntime (models/tools/requirements-qmatmul.txt):
python models/tools/make_qmatmul_fixture.py

With `--bench DIR` it writes instead, for benches/qmatmul_ab.rs, int8 files with SmolVLM-256M's
decoder matmul sizes (random weights): `layer-int8.onnx` (one layer's q, k, v, o, gate, up, down:
hidden 576, MLP 1536, 3 KV heads of 64) and `lm_head-int8.onnx` (576 x 49 280), and Florence-2-base's
(`florence-layer-int8.onnx`: 768, MLP 3072; `florence-lm_head-int8.onnx`: 768 x 51 289). Not committed
(up to 40 MB each).
"""
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models", "qmatmul")
K = 72


def fp32_model(rng):
    w1 = rng.normal(0, 0.2, (K, 37)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (K, 20)).astype(np.float32)
    w3 = rng.normal(0, 0.3, (20, 11)).astype(np.float32)
    # Per-column spread, so per-channel quantisation differs from per-tensor.
    w1 *= np.linspace(0.2, 2.0, 37, dtype=np.float32)[None, :]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["y"], name="mm1"),
        helper.make_node("MatMul", ["x", "w2"], ["h"], name="mm2"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "w3"], ["z"], name="mm3"),
    ]
    graph = helper.make_graph(
        nodes,
        "qmm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", K])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 37]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, "seq", 11]),
        ],
        [numpy_helper.from_array(w, n) for w, n in [(w1, "w1"), (w2, "w2"), (w3, "w3")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def bench_model(path, hidden, mlp, kv, vocab, rng):
    """One decoder layer's projections (vocab = 0) or an lm_head, as fp32, quantised next to it."""
    w = lambda k, n: numpy_helper.from_array(rng.normal(0, 0.05, (k, n)).astype(np.float32), f"w{k}x{n}_{len(inits)}")
    inits, nodes, outs = [], [], []

    def mm(x, k, n, out):
        t = w(k, n)
        inits.append(t)
        nodes.append(helper.make_node("MatMul", [x, t.name], [out], name=out))
        return out

    if vocab:
        outs.append((mm("x", hidden, vocab, "logits"), vocab))
    else:
        for name, n in [("q", hidden), ("k", kv), ("v", kv)]:
            outs.append((mm("x", hidden, n, name), n))
        outs.append((mm(mm("x", hidden, hidden, "o_in"), hidden, hidden, "o"), hidden))
        g, u = mm("o", hidden, mlp, "gate"), mm("o", hidden, mlp, "up")
        nodes.append(helper.make_node("Mul", [g, u], ["gu"], name="gu"))
        outs.append((mm("gu", mlp, hidden, "down"), hidden))
    graph = helper.make_graph(
        nodes, "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", hidden])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, "seq", n]) for o, n in outs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "fp32.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, path, weight_type=QuantType.QInt8)


def bench(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(5)
    bench_model(os.path.join(out, "layer-int8.onnx"), 576, 1536, 192, 0, rng)
    bench_model(os.path.join(out, "lm_head-int8.onnx"), 576, 0, 0, 49280, rng)
    bench_model(os.path.join(out, "florence-layer-int8.onnx"), 768, 3072, 768, 0, rng)
    bench_model(os.path.join(out, "florence-lm_head-int8.onnx"), 768, 0, 0, 51289, rng)
    print("wrote", sorted(os.listdir(out)))


def main():
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--bench":
        return bench(sys.argv[2])
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(12)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "qmm.onnx")
        onnx.save(fp32_model(rng), src)
        files = {
            "qmm-s8": dict(weight_type=QuantType.QInt8),
            "qmm-u8": dict(weight_type=QuantType.QUInt8),
            "qmm-s8-pc": dict(weight_type=QuantType.QInt8, per_channel=True),
        }
        for name, kw in files.items():
            dst = os.path.join(OUT, f"{name}.onnx")
            quantize_dynamic(src, dst, **kw)
            ops = [n.op_type for n in onnx.load(dst).graph.node]
            assert ops.count("MatMulInteger") == 3 and ops.count("DynamicQuantizeLinear") == 2, ops
    for seq in (1, 5):
        x = rng.normal(0, 1.0, (1, seq, K)).astype(np.float32)
        x.tofile(os.path.join(OUT, f"x-{seq}.bin"))
        for name in files:
            sess = ort.InferenceSession(os.path.join(OUT, f"{name}.onnx"), providers=["CPUExecutionProvider"])
            y, z = sess.run(["y", "z"], {"x": x})
            np.concatenate([y.ravel(), z.ravel()]).astype("<f4").tofile(os.path.join(OUT, f"{name}-{seq}.bin"))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
