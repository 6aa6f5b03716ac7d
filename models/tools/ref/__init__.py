"""Python reference implementation of lookout's pre-processing, decoders and NMS.

Independent of the Rust code: it follows models/README.md (the manifest contract) and the upstream
reference post-processing of each family. Used by tests/fixtures/make_reference.py to write the
reference-detection fixtures the Rust tests compare against.

Every family module exposes ``decode(outputs, manifest, conf) -> list[(class_id, score, x1, y1, x2, y2)]``
(boxes in input-tensor pixels, before NMS). A module may also define ``builtin_nms(manifest) -> bool``;
when it returns True, ``common.postprocess`` skips NMS (the model did it in-graph).
"""
