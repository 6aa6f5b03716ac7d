#!/usr/bin/env python3
"""OCR speed: lookout's reader (tract) against rapidocr 3.10.0 (onnxruntime), one thread each, on the
photos of the OCR reference test (tests/fixtures/ocr/reference.json), stage by stage as rapidocr times
them (`elapse_list`: detection, angle classifier, recognition, each with its own pre/post-processing).

    /opt/ocr18venv/bin/python benches/ocr_ort.py [--lookout target/debug/lookout] [--repeat 5]

Prints a Markdown table (median per photo of `--repeat` reads, after one warm-up read; lookout's
`read --repeat` reports the same medians).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import onnxruntime  # noqa: E402
from rapidocr import RapidOCR  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path("/usr/share/doc/opencv-doc/examples/data")


def photos():
    ref = json.loads((ROOT / "tests/fixtures/ocr/reference.json").read_text(encoding="utf-8"))
    for img in ref["images"]:
        p = ROOT / img["decoded_png"] if "decoded_png" in img else DATA / img["file"]
        yield img["file"], p, len(img["lines"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookout", default=str(ROOT / "target/debug/lookout"))
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    eng = RapidOCR(
        params={
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
          f"load before: {os.getloadavg()}; onnxruntime {onnxruntime.__version__}", file=sys.stderr)
    rows = []
    for name, path, nlines in photos():
        eng(str(path))  # warm-up
        runs = [eng(str(path)).elapse_list for _ in range(a.repeat)]
        ort = [statistics.median(r[i] * 1e3 for r in runs) for i in range(3)]
        out = subprocess.run(
            [a.lookout, "read", "--json", "--repeat", str(a.repeat + 1), str(path)],
            check=True, capture_output=True, text=True,
        ).stdout
        t = json.loads(out.splitlines()[0])["timings"]
        ours = [t["det_ms"], t["cls_ms"], t["rec_ms"]]
        rows.append((name, nlines, ours, ort))
    print("| photo | lines | det tract ms | det ort ms | ratio | cls tract ms | cls ort ms | rec tract ms | rec ort ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n, o, r in rows:
        print(f"| {name} | {n} | {o[0]:.1f} | {r[0]:.1f} | **{o[0] / r[0]:.2f}** | {o[1]:.1f} | {r[1]:.1f} | "
              f"{o[2]:.1f} | {r[2]:.1f} | **{o[2] / r[2]:.2f}** |")
    tot = [sum(x[2][i] for x in rows) for i in range(3)]
    tor = [sum(x[3][i] for x in rows) for i in range(3)]
    print(f"| **all {len(rows)}** | {sum(x[1] for x in rows)} | {tot[0]:.0f} | {tor[0]:.0f} | **{tot[0] / tor[0]:.2f}** | "
          f"{tot[1]:.0f} | {tor[1]:.0f} | {tot[2]:.0f} | {tor[2]:.0f} | **{tot[2] / tor[2]:.2f}** |")
    print(f"load after: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
