#!/usr/bin/env python3
"""Writes tests/fixtures/models/rowmatmul/: a decoder's attention step as BART and Florence-2 export
it, the products lookout's `RowMatMul` (src/engine/rowmatmul.rs) takes over from tract.

`attention.onnx`, inputs with symbolic lengths (`seq` query tokens, `past` cached tokens):
  h       [1, seq, 80]       the step's hidden state, split into 4 heads of 20
  past_k  [1, 4, past, 20]   cached keys (or an encoder's, for cross-attention)
  past_v  [1, 4, past, 20]   cached values
  share_v [1, 1, past, 20]   one value head shared by the 4 query heads (broadcast)
  group_k [1, 2, past, 20]   2 key heads, each shared by 2 query heads (grouped-query attention)
outputs:
  ctx     [1, seq, 80]       softmax(q . past_k^T / sqrt(20)) . past_v, heads merged back
  shared  [1, 4, seq, 20]    the same probabilities . share_v
  grouped [1, 2, 2, seq, past]  q (as 2 groups of 2 heads) . group_k^T
  self    [1, 4, seq, seq]   q . q^T: query and key lengths the same symbol, an encoder's
                             self-attention, which the pass must leave to tract
The head size (20) is not a multiple of the kernel's 16 lanes, so the dot products' tails run.
For seq = 1, 3 and 9 (past = 37): inputs `<seq>-<name>.bin` and onnxruntime's outputs
`<seq>-ort.bin` (ctx, shared, grouped, self; f32 little-endian). 1 and 3 query tokens run the
pass's loops (up to 8 rows: tokens x query heads per key head), 9 tract's plan.
Needs numpy, onnx, onnxruntime (models/tools/requirements-qmatmul.txt):
python models/tools/make_rowmatmul_fixture.py
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models", "rowmatmul")
HEADS, HEAD = 4, 20


def model():
    c = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
    inits = [
        c("split", [1, -1, HEADS, HEAD]),
        c("merge", [1, -1, HEADS * HEAD]),
        c("groups", [1, 2, 2, -1, HEAD]),
        c("axis2", [2]),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(HEAD), dtype=np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Reshape", ["h", "split"], ["h4"]),
        helper.make_node("Transpose", ["h4"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["past_k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="q_kt"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "past_v"], ["heads"], name="p_v"),
        helper.make_node("Transpose", ["heads"], ["heads_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["heads_t", "merge"], ["ctx"]),
        helper.make_node("MatMul", ["p", "share_v"], ["shared"], name="p_share_v"),
        helper.make_node("Reshape", ["q", "groups"], ["q5"]),
        helper.make_node("Unsqueeze", ["group_k", "axis2"], ["gk"]),
        helper.make_node("Transpose", ["gk"], ["gkt"], perm=[0, 1, 2, 4, 3]),
        helper.make_node("MatMul", ["q5", "gkt"], ["grouped"], name="q_group_kt"),
        helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "qt"], ["self"], name="q_qt"),
    ]
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    graph = helper.make_graph(
        nodes,
        "rowmatmul",
        [f("h", [1, "seq", HEADS * HEAD]), f("past_k", [1, HEADS, "past", HEAD]),
         f("past_v", [1, HEADS, "past", HEAD]), f("share_v", [1, 1, "past", HEAD]),
         f("group_k", [1, 2, "past", HEAD])],
        [f("ctx", [1, "seq", HEADS * HEAD]), f("shared", [1, HEADS, "seq", HEAD]),
         f("grouped", [1, 2, 2, "seq", "past"]), f("self", [1, HEADS, "seq", "seq"])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "attention.onnx")
    onnx.save(model(), path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(12)
    past = 37
    for seq in (1, 3, 9):
        feeds = {
            "h": rng.normal(0, 1, (1, seq, HEADS * HEAD)),
            "past_k": rng.normal(0, 1, (1, HEADS, past, HEAD)),
            "past_v": rng.normal(0, 1, (1, HEADS, past, HEAD)),
            "share_v": rng.normal(0, 1, (1, 1, past, HEAD)),
            "group_k": rng.normal(0, 1, (1, 2, past, HEAD)),
        }
        feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
        for k, v in feeds.items():
            v.astype("<f4").tofile(os.path.join(OUT, f"{seq}-{k}.bin"))
        outs = sess.run(["ctx", "shared", "grouped", "self"], feeds)
        np.concatenate([o.ravel() for o in outs]).astype("<f4").tofile(os.path.join(OUT, f"{seq}-ort.bin"))
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
