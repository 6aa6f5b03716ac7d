#!/usr/bin/env python3
"""Fetch the PaddleOCR models lookout's OCR runs (models/ppocr-v6/) from the PyPI package rapidocr.

Reproducible and offline apart from PyPI: `pip download rapidocr==3.10.0 --no-deps` (one wheel), the
three ONNX files taken out of it unchanged, each checked against the sha256 the package records in its
MODEL_LICENSES.md (section 6), and the recogniser's character list (ONNX metadata key `character`)
written to `characters.txt`, one entry a line, so the runtime reads a plain file.

    python3 models/tools/fetch_ocr.py            # writes models/ppocr-v6/*.onnx + characters.txt
    python3 models/tools/fetch_ocr.py --check    # only verifies what is there

Needs only Python 3.8+ and pip; the ONNX metadata is read with a minimal protobuf walk (no `onnx`
package), because the files are used byte for byte and only one string is wanted from them.
"""

import argparse
import hashlib
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "rapidocr"
VERSION = "3.10.0"
# From rapidocr-3.10.0.dist-info/licenses/MODEL_LICENSES.md, section 6 (re-checked against the wheel).
FILES = {
    "PP-OCRv6_det_small.onnx": "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    "PP-OCRv6_rec_small.onnx": "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    "ch_ppocr_mobile_v2.0_cls_mobile.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
}
REC = "PP-OCRv6_rec_small.onnx"
OUT = pathlib.Path(__file__).resolve().parents[1] / "ppocr-v6"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def varint(buf: bytes, i: int):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message; value is bytes for wire type 2."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i : i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wt == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wt} not expected in an ONNX ModelProto")
        yield num, wt, v


def metadata(model: bytes) -> dict:
    """ModelProto.metadata_props (field 14: StringStringEntryProto key=1, value=2)."""
    out = {}
    for num, wt, v in fields(model):
        if num == 14 and wt == 2:
            entry = {n: val for n, _, val in fields(v)}
            out[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    return out


def licence_hashes(text: str) -> dict:
    return dict(re.findall(r"\| `([^`]+\.onnx)` \| `[^`]+` \| `([0-9a-f]{64})` \|", text))


def fetch(out: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-d", tmp, f"{PACKAGE}=={VERSION}"],
            check=True,
        )
        wheels = list(pathlib.Path(tmp).glob(f"{PACKAGE}-{VERSION}-*.whl"))
        if len(wheels) != 1:
            sys.exit(f"expected one {PACKAGE} {VERSION} wheel in {tmp}, found {wheels}")
        wheel = wheels[0]
        print(f"{wheel.name}  sha256 {sha256(wheel.read_bytes())}")
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            lic = next(n for n in names if n.endswith("licenses/MODEL_LICENSES.md"))
            recorded = licence_hashes(z.read(lic).decode())
            out.mkdir(parents=True, exist_ok=True)
            (out / "MODEL_LICENSES.md").write_bytes(z.read(lic))
            for name, want in FILES.items():
                if recorded.get(name) != want:
                    sys.exit(f"{lic} records {recorded.get(name)} for {name}, this script expects {want}")
                data = z.read(f"rapidocr/models/{name}")
                got = sha256(data)
                if got != want:
                    sys.exit(f"{name}: sha256 {got}, MODEL_LICENSES.md says {want}")
                (out / name).write_bytes(data)
                print(f"{name}  {len(data)} bytes  sha256 {got}  ok")
    write_characters(out)


def write_characters(out: pathlib.Path) -> None:
    meta = metadata((out / REC).read_bytes())
    if "character" not in meta:
        sys.exit(f"{out / REC} has no metadata key 'character' (keys: {sorted(meta)})")
    chars = meta["character"].splitlines()  # what rapidocr does (onnxruntime/main.py)
    text = "\n".join(chars) + "\n"
    (out / "characters.txt").write_text(text, encoding="utf-8")
    print(f"characters.txt  {len(chars)} entries  sha256 {sha256(text.encode())}")


def check(out: pathlib.Path) -> None:
    for name, want in FILES.items():
        got = sha256((out / name).read_bytes())
        if got != want:
            sys.exit(f"{out / name}: sha256 {got}, expected {want}")
        print(f"{name}  ok")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="verify the files in --out, download nothing")
    a = ap.parse_args()
    if a.check:
        check(a.out)
    else:
        fetch(a.out)


if __name__ == "__main__":
    main()
