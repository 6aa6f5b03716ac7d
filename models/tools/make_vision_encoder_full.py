"""A random-weight SigLIP vision encoder at SmolVLM-256M's real size, without torch.

    /opt/perf12bvenv/bin/python models/tools/make_vision_encoder_full.py OUT_DIR [--layers 12]

Writes OUT_DIR/vision_encoder.onnx (fp32, ~370 MB) and OUT_DIR/vision_encoder_int8.onnx (onnxruntime
`quantize_dynamic`, QInt8 weights, per-tensor: how transformers.js and `make_vlm_smolvlm.py` make
`_int8`). Needs only onnx, onnxruntime and numpy (models/tools/requirements-reference.txt), where the
full model (`make_vlm_smolvlm.py --full`) needs torch and transformers (~5.7 GB): for measuring the
vision encoder alone (`benches/vision_pin.rs`).

Same inputs, outputs and sizes as the exported `vision_encoder.onnx` of SmolVLM-256M: pixel_values
[1, 1, 3, 512, 512] and pixel_attention_mask [1, 1, 512, 512] in, image features [n_real, 64, 576] out;
768 hidden, 12 heads, 3072 MLP, 12 layers, 16 px patches (1 024 tokens), pixel-shuffle connector
(scale 4) to 576. Kept from the export, because it decides how tract plans the graph: the "real image"
selection `NonZero(Not(count of zero values == values per image))` + `GatherND`, which makes the image
count a run-time symbol. Simplified (same shapes and matmul work, less elementwise work): learned
position embeddings are added for all 1 024 patches (no bucketised positions, no patch attention mask).
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, HEADS, MLP, PATCH, SIZE, SCALE, TEXT = 768, 12, 3072, 16, 512, 4, 576


def build(layers, seed=0):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, *shape, std=0.02):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name))
        return name

    def c(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def n(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    # Real-image selection, as the exporter writes it.
    pv = n("Reshape", ["pixel_values", c("pv_shape", np.array([-1, 3, SIZE, SIZE], np.int64))], "pv")
    zero = n("Equal", [pv, c("zero_f", np.array(0.0, np.float32))], "is_zero")
    zcount = n("ReduceSum", [n("Cast", [zero], "is_zero_i", to=TensorProto.INT64),
                             c("axes_chw", np.array([1, 2, 3], np.int64))], "zero_count", keepdims=0)
    real = n("Not", [n("Equal", [zcount, c("nb", np.array(3 * SIZE * SIZE, np.int64))], "all_zero")], "real")
    idx = n("Transpose", [n("NonZero", [real], "real_nz")], "real_idx", perm=[1, 0])
    x = n("GatherND", [pv, idx], "pv_real")

    # Patch embedding and positions.
    x = n("Conv", [x, w("patch_w", HIDDEN, 3, PATCH, PATCH), w("patch_b", HIDDEN)], "patches",
          kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH])
    x = n("Reshape", [x, c("flat_shape", np.array([0, HIDDEN, -1], np.int64))], "patches_flat")
    x = n("Transpose", [x], "tokens", perm=[0, 2, 1])
    tokens = (SIZE // PATCH) ** 2
    x = n("Add", [x, w("pos_emb", tokens, HIDDEN)], "embedded")

    def layernorm(x, name):
        return n("LayerNormalization", [x, c(name + "_g", np.ones(HIDDEN, np.float32)),
                                        c(name + "_b", np.zeros(HIDDEN, np.float32))], name, axis=-1, epsilon=1e-6)

    def linear(x, name, k, m):
        return n("Add", [n("MatMul", [x, w(name + "_w", k, m)], name + "_mm"), w(name + "_b", m)], name)

    head = HIDDEN // HEADS
    split = c("heads_shape", np.array([0, 0, HEADS, head], np.int64))
    merge = c("merge_shape", np.array([0, 0, HIDDEN], np.int64))
    for i in range(layers):
        p = f"l{i}"
        h = layernorm(x, p + "_ln1")
        q, k, v = (n("Transpose", [n("Reshape", [linear(h, f"{p}_{t}", HIDDEN, HIDDEN), split], f"{p}_{t}_h")],
                     f"{p}_{t}_t", perm=[0, 2, 1, 3] if t != "k" else [0, 2, 3, 1]) for t in "qkv")
        s = n("Mul", [n("MatMul", [q, k], p + "_qk"), c(p + "_scale", np.array(head ** -0.5, np.float32))], p + "_s")
        a = n("MatMul", [n("Softmax", [s], p + "_p", axis=-1), v], p + "_av")
        a = n("Reshape", [n("Transpose", [a], p + "_av_t", perm=[0, 2, 1, 3]), merge], p + "_attn")
        x = n("Add", [x, linear(a, p + "_o", HIDDEN, HIDDEN)], p + "_res1")
        h = linear(layernorm(x, p + "_ln2"), p + "_fc1", HIDDEN, MLP)
        # gelu_pytorch_tanh: 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))
        h3 = n("Mul", [n("Mul", [h, h], p + "_h2"), h], p + "_h3")
        inner = n("Mul", [n("Add", [h, n("Mul", [h3, c(p + "_g1", np.array(0.044715, np.float32))], p + "_h3s")],
                            p + "_gi"), c(p + "_g2", np.array(np.sqrt(2 / np.pi), np.float32))], p + "_gs")
        t = n("Add", [n("Tanh", [inner], p + "_tanh"), c(p + "_one", np.array(1.0, np.float32))], p + "_t1")
        h = n("Mul", [n("Mul", [h, t], p + "_ht"), c(p + "_half", np.array(0.5, np.float32))], p + "_gelu")
        x = n("Add", [x, linear(h, p + "_fc2", MLP, HIDDEN)], p + "_res2")
    x = layernorm(x, "post_ln")

    # Idefics3 connector: pixel shuffle by SCALE, then a projection to the text width.
    side = SIZE // PATCH
    x = n("Reshape", [x, c("ps1", np.array([-1, side, side // SCALE, HIDDEN * SCALE], np.int64))], "ps1_out")
    x = n("Transpose", [x], "ps1_t", perm=[0, 2, 1, 3])
    x = n("Reshape", [x, c("ps2", np.array([-1, side // SCALE, side // SCALE, HIDDEN * SCALE * SCALE], np.int64))],
          "ps2_out")
    x = n("Transpose", [x], "ps2_t", perm=[0, 2, 1, 3])
    x = n("Reshape", [x, c("ps3", np.array([-1, (side // SCALE) ** 2, HIDDEN * SCALE * SCALE], np.int64))], "ps3_out")
    x = n("MatMul", [x, w("connector_w", HIDDEN * SCALE * SCALE, TEXT)], "image_features")

    graph = helper.make_graph(
        nodes, "vision_encoder",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 1, 3, SIZE, SIZE]),
         helper.make_tensor_value_info("pixel_attention_mask", TensorProto.BOOL, [1, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("image_features", TensorProto.FLOAT, ["n_real", 64, TEXT])],
        inits)
    # pixel_attention_mask is declared (as in the export) but, with positions simplified, unused.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=12)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    model = build(a.layers)
    onnx.checker.check_model(model)
    f32 = os.path.join(a.out, "vision_encoder.onnx")
    onnx.save(model, f32)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(f32, os.path.join(a.out, "vision_encoder_int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=False, reduce_range=False)
    for f in sorted(os.listdir(a.out)):
        print(f, os.path.getsize(os.path.join(a.out, f)) // (1 << 20), "MB")


if __name__ == "__main__":
    main()
