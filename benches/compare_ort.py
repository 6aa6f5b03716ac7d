#!/usr/bin/env python3
"""lookout (tract) vs onnxruntime and OpenVINO on the same models, inputs and thread counts, in one run.

For every bundled model (and the ../shared YOLOX-Nano and FastestDet when present) and each thread
count, it runs `lookout bench` (the release binary: load, pre-processing, inference, decode, NMS), an
onnxruntime session and, when the `openvino` package is installed, OpenVINO's CPU plugin twice (f32
pinned with INFERENCE_PRECISION_HINT=f32, and its default precision, which is bf16 on CPUs with AMX or
AVX-512 BF16) on the identical pre-processed tensor, alternating them, and prints ratios. With --write
it rewrites benches/RESULTS.md. The VLM rows come from `benches/vlm_smolvlm.py` and `benches/vlm_florence2.py`,
run here for each thread count on the full-size random-weight models (fp32 and int8: vision encoder,
prefill, decode, peak RSS) when those models exist; otherwise the VLM benches' own tables are copied.

    cargo build --release --bin lookout --example florence2_bench
    /opt/ortvenv/bin/python benches/compare_ort.py --write      # venv: pip install -r models/tools/requirements-reference.txt
                                                                 # (+ requirements-openvino.txt for the OpenVINO columns,
                                                                 # + tokenizers==0.23.3 for the Florence-2 rows)

No assertion is made on speed anywhere; these are measurements.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models", "tools"))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from ref import common  # noqa: E402

try:
    import openvino as ov  # noqa: E402
except ImportError:  # the OpenVINO columns are optional
    ov = None

IMAGE = os.path.join(ROOT, "tests", "fixtures", "images", "messi5.jpg")


def manifests() -> list[str]:
    out = []
    mdir = os.path.join(ROOT, "models")
    for name in sorted(os.listdir(mdir)):
        p = os.path.join(mdir, name, "model.toml")
        if os.path.isfile(p):
            out.append(p)
    shared = os.path.join(ROOT, "..", "shared", "models")
    if os.path.isdir(shared):
        for case in ("yolox", "fastestdet"):
            out.append(os.path.join(ROOT, "tests", "fixtures", "reference", case, "model.toml"))
    else:
        print("note: ../shared absent, YOLOX-Nano and FastestDet rows skipped", file=sys.stderr)
    return out


def ort_median(model: str, tensor: np.ndarray, threads: int, iters: int) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: tensor})
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {name: tensor})
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def ov_median(model: str, tensor: np.ndarray, threads: int, iters: int, f32: bool) -> tuple[float, str]:
    """OpenVINO CPU plugin, latency mode, one stream: median ms and the precision it ran at."""
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if f32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(model, "CPU", config)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    req = compiled.create_infer_request()
    for _ in range(3):
        req.infer({0: tensor})
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        req.infer({0: tensor})
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples), precision


def lookout_bench(binary: str, manifest: str, threads: int, iters: int, image: str = IMAGE,
                  plain_tract: bool = False) -> dict:
    env = dict(os.environ)
    if plain_tract:
        # lookout's own ops (QConv, FastQuantize, SelectTopk, PlannedResize) off: tract's plan as is.
        env["LOOKOUT_PLAIN_TRACT"] = "1"
    cmd = [binary, "bench", "--model", manifest, "--threads", str(threads), "--iters", str(iters), "--json", image]
    # tract's own plan can die of SIGSEGV with threads on an AMX CPU: its AMX int8 kernels read
    # tiles past the end of a B operand that tract packed itself (no slack; lookout's QConv packs
    # its own with slack, see src/engine/qconv.rs). Seen here in about half of the runs of
    # centernet-mbv3-int8 at 2 threads, in tract's plan only. That column is for reference, so a
    # crashed run is retried a few times and, failing that, left empty; lookout's own plan is not.
    for attempt in range(4 if plain_tract else 1):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode == 0:
            return json.loads(out.stdout)
        print(f"  {os.path.basename(os.path.dirname(manifest))} t={threads}"
              f"{' plain tract' if plain_tract else ''}: exit {out.returncode} (attempt {attempt + 1})",
              file=sys.stderr, flush=True)
    if plain_tract:
        return {"median_ms": {"inference": None}, "crashed": True}
    raise subprocess.CalledProcessError(out.returncode, cmd, out.stdout, out.stderr)


CLIP = os.path.join(ROOT, "samples", "vtest")


def end_to_end(binary: str, manifest: str) -> dict:
    """`lookout run` on the bundled clip, unpaced (no fps), against the detector alone on a frame of
    the same clip: throughput ratio, the frame loop's cost outside inference, and start-up."""
    frames = sorted(os.listdir(CLIP))
    det = lookout_bench(binary, manifest, 1, 20, image=os.path.join(CLIP, frames[0]))
    events = os.path.join("/tmp", f"lookout-e2e-{os.getpid()}.jsonl")
    subprocess.run(
        [binary, "run", "--model", manifest, "--source", f"file:{CLIP}", "--broker", "none",
         "--events-out", events],
        check=True, capture_output=True, text=True,
    )
    stats = None
    with open(events) as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("record") == "stats":
                stats = rec
    os.remove(events)
    st = stats["stages"]
    outside = sum(st[k]["mean_ms"] for k in ("preprocess", "postprocess", "analyse", "publish"))
    startups = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(
            [binary, "run", "--model", manifest, "--source", f"file:{CLIP}", "--broker", "none",
             "--max-frames", "1", "--summary-json"],
            check=True, capture_output=True, text=True,
        )
        startups.append((time.perf_counter() - t) * 1e3)
    det_fps = 1e3 / det["median_ms"]["total"]
    return {
        "model": common.load_manifest(manifest)["model"]["name"],
        "frames": stats["frames_processed"], "run_fps": stats["fps"], "det_fps": det_fps,
        "ratio": stats["fps"] / det_fps, "run_inference_ms": st["inference"]["mean_ms"],
        "outside_ms": outside, "outside_pct": 100 * outside / st["inference"]["mean_ms"],
        "startup_ms": statistics.median(startups), "first_ms": det["first_detection_ms"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookout", default=os.path.join(ROOT, "target", "release", "lookout"))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="*", help="model names to include")
    ap.add_argument("--write", action="store_true", help="write benches/RESULTS.md")
    ap.add_argument("--build", default="release build", help="how the lookout binary was built, for the header")
    ap.add_argument("--note", default="", help="a sentence for the header (e.g. the build profile, if not release)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end rows")
    ap.add_argument("--e2e", nargs="*", default=["nanodet-g", "nanodet-g-int8", "centernet-mbv3", "centernet-mbv3-int8"],
                    help="models for the end-to-end rows (lookout run vs detector alone)")
    ap.add_argument("--smolvlm", default="/work/scratch-smolvlm/smolvlm-256m-random",
                    help="full-size SmolVLM folder (models/tools/make_vlm_smolvlm.py --full)")
    ap.add_argument("--florence", default="/work/scratch-florence/florence2-base",
                    help="full-size Florence-2 folder (models/tools/make_vlm_florence2.py --full)")
    ap.add_argument("--florence-bin", default=None,
                    help="the florence2_bench example binary (default: next to --lookout, in examples/)")
    ap.add_argument("--vlm-tokens", type=int, default=16)
    ap.add_argument("--no-vlm", action="store_true", help="skip the VLM rows (copy the VLM benches' tables)")
    args = ap.parse_args()

    img = common.read_rgb(IMAGE)
    # Other work on the machine moves these figures; the table records how busy it was.
    args.load_before = os.getloadavg()
    rows = []
    for mpath in manifests():
        m = common.load_manifest(mpath)
        name = m["model"]["name"]
        if "input" not in m or m["model"].get("kind", "detector") != "detector":
            continue  # not a detector (the MiniLM text embedder, the person segmenter, OCR)
        if args.only and name not in args.only:
            continue
        onnx = common.model_path(m)
        model_img, _ = common.preprocess(img, m)
        tensor = common.to_tensor(model_img, m)
        for t in args.threads:
            lk = lookout_bench(args.lookout, mpath, t, args.iters)
            plain = lookout_bench(args.lookout, mpath, t, args.iters, plain_tract=True)
            o = ort_median(onnx, tensor, t, args.iters)
            ov_f32 = ov_default = (None, None)
            if ov is not None:
                try:
                    ov_f32 = ov_median(onnx, tensor, t, args.iters, f32=True)
                    ov_default = ov_median(onnx, tensor, t, args.iters, f32=False)
                except RuntimeError as e:  # e.g. its ONNX frontend rejects a QLinearConv
                    why = [l for l in str(e).splitlines() if l.strip()]
                    print(f"{name}: OpenVINO cannot run it: {why[-2:] if why else e}", file=sys.stderr)
            row = {
                "model": name, "variant": m["model"].get("variant", "fp32"), "threads": t,
                "tract_ms": lk["median_ms"]["inference"], "ort_ms": o,
                "plain_ms": plain["median_ms"]["inference"],
                "lookout_total_ms": lk["median_ms"]["total"], "overhead_pct": lk["overhead_pct"],
                "load_ms": lk["load_ms"], "first_ms": lk["first_detection_ms"],
                "ov_f32_ms": ov_f32[0], "ov_ms": ov_default[0], "ov_precision": ov_default[1],
            }
            row["ratio"] = row["tract_ms"] / o
            rows.append(row)
            print(f"{name:26} {row['variant']:13} t={t}  tract {row['tract_ms']:8.2f} ms "
                  f"(plain tract {row['plain_ms'] if row['plain_ms'] is None else format(row['plain_ms'], '8.2f')})  ort {o:8.2f} ms  "
                  f"ratio {row['ratio']:5.2f}  openvino f32 {row['ov_f32_ms'] or float('nan'):8.2f} "
                  f"default ({row['ov_precision']}) {row['ov_ms'] or float('nan'):8.2f} ms  lookout total {row['lookout_total_ms']:8.2f} ms "
                  f"(+{row['overhead_pct']:.1f}%)  load {row['load_ms']:.0f} ms", flush=True)

    # int8 vs fp32 of the same base model, same engine and threads.
    base = {(r["model"], r["threads"]): r for r in rows if r["variant"] == "fp32"}
    for r in rows:
        b = base.get((r["model"].split("-int8")[0], r["threads"]))
        r["int8_vs_fp32_tract"] = r["tract_ms"] / b["tract_ms"] if b and r["variant"] != "fp32" else None
        r["int8_vs_fp32_ort"] = r["ort_ms"] / b["ort_ms"] if b and r["variant"] != "fp32" else None

    e2e = []
    for name in ([] if args.no_e2e else args.e2e):
        mpath = os.path.join(ROOT, "models", name, "model.toml")
        if not os.path.isfile(mpath):
            continue
        r = end_to_end(args.lookout, mpath)
        e2e.append(r)
        print(f"e2e {name:22} run {r['run_fps']:6.2f} fps  detector {r['det_fps']:6.2f} fps  ratio {r['ratio']:.3f}  "
              f"outside inference {r['outside_pct']:.1f} %  start-up {r['startup_ms']:.0f} ms", flush=True)

    vlm = []
    if not args.no_vlm:
        try:
            vlm = vlm_rows(args)
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as e:
            # The detector rows are still worth writing; the VLM benches' own tables are copied instead.
            print(f"VLM rows failed, copying the VLM benches' tables instead: {e}", file=sys.stderr)

    args.load_after = os.getloadavg()
    if args.write:
        write_results(rows, e2e, vlm, args)


def vlm_rows(args) -> list[dict]:
    """Both VLM benches at every thread count, each a fresh process per engine and variant (the
    benches alternate the engines themselves). Returns one dict per model, variant and thread count
    with tract's and onnxruntime's figures."""
    out = []
    here = os.path.dirname(os.path.abspath(__file__))
    fbin = args.florence_bin or os.path.join(os.path.dirname(args.lookout), "examples", "florence2_bench")
    # The example is a separate binary: built before the last change to the library, it measures old
    # code under the header's build (two runs of 2026-12-07 did so before this check).
    if os.path.isfile(fbin) and os.path.getmtime(fbin) + 60 < os.path.getmtime(args.lookout):
        sys.exit(f"{fbin} is older than {args.lookout}: rebuild both "
                 "(cargo build --release --bin lookout --example florence2_bench)")
    for t in args.threads:
        if os.path.isfile(os.path.join(args.smolvlm, "reference", "reference.json")):
            js = os.path.join("/tmp", f"compare_ort_smolvlm_t{t}.json")
            subprocess.run([sys.executable, os.path.join(here, "vlm_smolvlm.py"), "--model", args.smolvlm,
                            "--lookout", args.lookout, "--threads", str(t), "--tokens", str(args.vlm_tokens),
                            "--out", js], check=True, stdout=subprocess.DEVNULL)
            by = {}
            for r in json.load(open(js))["rows"]:
                by.setdefault(r["variant"], {})["tract" if "tract" in r["engine"] else "ort"] = r
            for variant, e in by.items():
                out.append(vlm_row("SmolVLM-256M", variant, t, e, lambda r: r["prefill_ms"]))
        else:
            print(f"no SmolVLM model at {args.smolvlm}: VLM rows skipped", file=sys.stderr)
        if os.path.isfile(os.path.join(args.florence, "reference", "reference.json")) and os.path.isfile(fbin):
            js = os.path.join("/tmp", f"compare_ort_florence_t{t}.json")
            subprocess.run([sys.executable, os.path.join(here, "vlm_florence2.py"), "--dir", args.florence,
                            "--tract-bin", fbin, "--threads", str(t), "--tokens", str(args.vlm_tokens),
                            "--iters", "1", "--out", js], check=True, stdout=subprocess.DEVNULL)
            by = {}
            for r in json.load(open(js)):
                by.setdefault(r["variant"].strip("_") or "fp32", {})["ort" if r["runtime"] == "onnxruntime" else "tract"] = r
            for variant, e in by.items():
                # Florence-2 is an encoder-decoder: its "prefill" is the text encoder plus the first decoder step.
                out.append(vlm_row("Florence-2-base", variant, t, e, lambda r: r["encoder_ms"] + r["first_step_ms"]))
        else:
            print(f"no Florence-2 model at {args.florence} or no {fbin}: VLM rows skipped", file=sys.stderr)
    # int8 against fp32 of the same model, engine and threads: the "int8 pays" question.
    fp32 = {(r["model"], r["threads"]): r for r in out if r["variant"] == "fp32"}
    for r in out:
        b = fp32.get((r["model"], r["threads"]))
        r["int8_vs_fp32"] = (r["tract"]["decode"] / b["tract"]["decode"]) if b and r is not b else None
    for r in out:
        print(f"vlm {r['model']:16} {r['variant']:5} t={r['threads']}  " + "  ".join(
            f"{k} {r['tract'][k]:.1f}/{r['ort'][k]:.1f}" for k in ("vision", "prefill", "decode")), flush=True)
    return out


def vlm_row(model: str, variant: str, threads: int, e: dict, prefill) -> dict:
    def pick(r):
        return {"vision": r["vision_ms"], "prefill": prefill(r), "decode": r["decode_ms_per_token"],
                "rss": r["peak_rss_mb"], "tokens": r.get("token_ids")}
    t, o = pick(e["tract"]), pick(e["ort"])
    return {"model": model, "variant": variant, "threads": threads, "tract": t, "ort": o,
            "same_tokens": t["tokens"] == o["tokens"] if t["tokens"] is not None else None}


def first_table(path: str) -> list[dict]:
    """The first Markdown table of a file, as dicts keyed by header."""
    rows, header = [], None
    with open(path) as fh:
        for line in fh:
            if not line.startswith("|"):
                if header:
                    break
                continue
            cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(cells[0]) <= set("-: "):
                rows.append(dict(zip(header, cells)))
    return rows


def vlm_section() -> list[str]:
    """VLM vision / prefill / decode ratios, from the VLM benches' own tables (their scripts measure
    both runtimes in one run; not re-measured here)."""
    out = [
        "",
        "## VLMs: vision encoder, prefill, decode",
        "",
        "Copied from the VLM benches' own tables (each measured both runtimes in one run on this machine kind, random",
        "weights at the real sizes, 1 thread; see each file for its date, load and caveats). ratio = tract / onnxruntime.",
        "SmolVLM's vision encoder was re-measured alone after lookout pinned its one-image selection",
        "(`src/engine/pin.rs`, `benches/vision_pin.rs`): see the second section of `benches/VLM_SMOLVLM.md`.",
        "",
        "| model | variant | vision ms tract / ort (ratio) | prefill ms tract / ort (ratio) | decode ms/token tract / ort (ratio) | source |",
        "|---|---|---|---|---|---|",
    ]
    specs = [
        ("SmolVLM-256M", "VLM_SMOLVLM.md", "engine", "vision encoder ms", "prefill ms (78 tokens)", "decode ms/token"),
        ("Florence-2-base", "VLM_FLORENCE2.md", "runtime", "vision encoder ms", "text encoder ms", "decode ms/token"),
    ]
    for model, fname, who, vis, pre, dec in specs:
        path = os.path.join(ROOT, "benches", fname)
        if not os.path.isfile(path):
            continue
        by = {}
        for r in first_table(path):
            engine = "tract" if "tract" in r.get(who, "") else "ort"
            # The first row per engine: a file may list variants of lookout's plan below its own.
            by.setdefault(r["variant"], {}).setdefault(engine, r)
        for variant, e in by.items():
            if "tract" not in e or "ort" not in e:
                continue
            # A cell may hold two runs ("2595 / 2302"): the first is used.
            num = lambda r, col: float(r[col].split("/")[0])  # noqa: E731
            cell = lambda col: (f"{num(e['tract'], col):.0f} / {num(e['ort'], col):.0f} "  # noqa: E731
                                f"(**{num(e['tract'], col) / num(e['ort'], col):.2f}**)")
            cell_f = lambda col: (f"{num(e['tract'], col):.1f} / {num(e['ort'], col):.1f} "  # noqa: E731
                                  f"(**{num(e['tract'], col) / num(e['ort'], col):.2f}**)")
            out.append(f"| {model} | {variant} | {cell(vis)} | {cell(pre)} | {cell_f(dec)} | `benches/{fname}` |")
    return out + [""]


def previous_e2e() -> list[str]:
    """The end-to-end table rows of the RESULTS.md being replaced, for a run made with --no-e2e."""
    path = os.path.join(ROOT, "benches", "RESULTS.md")
    if not os.path.isfile(path):
        return []
    text = open(path).read().split("## End to end", 1)
    if len(text) < 2:
        return []
    rows = [l for l in text[1].split("## VLMs", 1)[0].splitlines() if l.startswith("| ") and "frames" not in l]
    return rows


def vlm_measured_section(vlm: list[dict], args) -> list[str]:
    out = [
        "",
        "## VLMs: vision encoder, prefill, decode (measured in this run)",
        "",
        "`benches/vlm_smolvlm.py` and `benches/vlm_florence2.py`, called by this script for each thread count: random",
        "weights at the real sizes (`models/tools/make_vlm_smolvlm.py --full`, `make_vlm_florence2.py --full`), the",
        f"int8 files are onnxruntime's `quantize_dynamic`; {args.vlm_tokens} new tokens, greedy, one generation per",
        "fresh process right after loading. SmolVLM prefill = token embedding + decoder over the prompt; Florence-2",
        "prefill = text encoder + first decoder step. ratio = tract / onnxruntime; int8/fp32 = lookout's int8 decode",
        "over its fp32 decode (below 1 = int8 pays). Peak RSS is the process's (wait4 / getrusage).",
        f"same tokens: lookout's {args.vlm_tokens} tokens equal onnxruntime's on the same file. SmolVLM's int8 paths part at a near tie",
        "of the random weights (benches/VLM_SMOLVLM.md, \"int8 tokens vs onnxruntime's int8\").",
        "",
        "| model | variant | threads | vision ms tract / ort (ratio) | prefill ms tract / ort (ratio) | decode ms/token tract / ort (ratio) | int8/fp32 decode lookout | peak RSS MB tract / ort | same tokens |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in vlm:
        t, o = r["tract"], r["ort"]
        c = lambda k, d: f"{t[k]:.{d}f} / {o[k]:.{d}f} (**{t[k] / o[k]:.2f}**)"  # noqa: E731
        i8 = "—" if r["int8_vs_fp32"] is None else f"{r['int8_vs_fp32']:.2f}"
        same = {True: "yes", False: "no", None: "—"}[r["same_tokens"]]
        out.append(f"| {r['model']} | {r['variant']} | {r['threads']} | {c('vision', 0)} | {c('prefill', 0)} | "
                   f"{c('decode', 1)} | {i8} | {t['rss']:.0f} / {o['rss']:.0f} | {same} |")
    return out + [""]


def cpu_description() -> str:
    """The CPU's model name, family and the vector extensions the kernels choose by (tract's and
    onnxruntime's pick differs between AVX2, AVX-512, VNNI and AMX machines, and so do the ratios)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(l.split(":", 1) for l in f.read().split("\n\n")[0].splitlines() if ":" in l)
    except OSError:
        return "unknown"
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    isa = [name for flag, name in [("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"),
                                   ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                                   ("avx512_bf16", "AVX-512 BF16"), ("amx_int8", "AMX")] if flag in flags]
    return f"{info.get('model name', 'unknown')}, family {info.get('cpu family', '?')} model {info.get('model', '?')}: {', '.join(isa) or 'no AVX2'}"


def write_results(rows: list[dict], e2e: list[dict], vlm: list[dict], args) -> None:
    cpu = cpu_description()
    lines = [
        "# Results: lookout (tract) vs onnxruntime",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} ({cpu}), {os.cpu_count()} cores, "
        f"by `benches/compare_ort.py` in one run: same ONNX file, same pre-processed input "
        f"(`tests/fixtures/images/messi5.jpg`), same thread count, median of {args.iters} runs after 3 warm-ups, "
        f"tract 0.23.9 (`lookout bench`, {args.build}) and onnxruntime {ort.__version__} (CPU provider, "
        f"sequential, all graph optimisations). ratio = tract / onnxruntime (below 1 = lookout faster). "
        + (f"OpenVINO {ov.get_version()} (CPU plugin, latency hint, 1 stream, same threads): \"f32\" pins "
           f"INFERENCE_PRECISION_HINT=f32, \"default\" is its own choice of precision, named in the cell "
           f"(bf16 on CPUs with AMX / AVX-512 BF16: not the same arithmetic as the others). "
           if ov is not None else "OpenVINO not installed: its columns are empty. ")
        + f"{args.note} "
        f"Load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in args.load_before)} before the run and "
        f"{'/'.join(f'{x:.2f}' for x in args.load_after)} after it: on {os.cpu_count()} cores anything above "
        f"~{os.cpu_count() - 1} means other processes competed with the measurement.",
        "",
        "| model | variant | threads | lookout (tract) ms | plain tract ms | onnxruntime ms | ratio | OpenVINO f32 ms | OpenVINO default ms | int8/fp32 lookout | int8/fp32 ort | lookout total ms | outside inference | load ms | first detection ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['threads']} | {f(r['tract_ms'])} | {f(r['plain_ms'])} | {f(r['ort_ms'])} | "
            f"**{f(r['ratio'])}** | {f(r['ov_f32_ms'])} | "
            f"{f(r['ov_ms'])}{'' if r['ov_ms'] is None else ' (' + r['ov_precision'] + ')'} | {f(r['int8_vs_fp32_tract'])} | {f(r['int8_vs_fp32_ort'])} | "
            f"{f(r['lookout_total_ms'])} | {f(r['overhead_pct'], 1)} % | {f(r['load_ms'], 0)} | {f(r['first_ms'], 0)} |"
        )
    lines += [
        "",
        "\"plain tract\" is the same binary with `LOOKOUT_PLAIN_TRACT=1`: tract's own plan, without lookout's",
        "QConv, QdqConv, QConcat, QMatMul, FastQuantize, FastDynQuantize, SelectTopk, PlannedResize, AxisSoftmax,",
        "SeparableMaxPool, PoolChannelsLast, StridedCopy, ChannelsFirst, HardSwish, PanelConv (and its direct convs), ConvInteger as exact f32 convolutions, dropped zero terms, FusedAttention, Gelu, RowMatMul, StoreOrder,",
        "BlockBinary, symbolic lengths declared at least 1 and constant folding (src/engine/); the heap policy",
        "(src/engine/heap.rs: freed tensors kept) is the binary's and holds for both columns,",
        "measured in the same run. OpenVINO \"—\": its ONNX frontend refuses the file (both QLinearConv files; 2026.4.1",
        "says a QLinearConv's dequantization scale count must match the input shape dimension of its axis).",
        "Plain tract \"—\": tract's own plan died (SIGSEGV) in four tries: with threads on an AMX CPU its AMX int8",
        "kernels read tiles past the end of a B operand tract packed itself (lookout's QConv packs its own, with",
        "slack); lookout's plan of the same file does not crash.",
        "\"outside inference\" is lookout's pre-processing, decode and NMS as a share of inference time;",
        "\"first detection\" is process-internal time from loading the model to the first result.",
        "Graph rewrites, SelectTopk and their interleaved before/after measurements: `benches/GRAPH_REWRITES.md`.",
        "",
        "## End to end: `lookout run` against the detector alone",
        "",
        "`lookout run --source file:samples/vtest` (the bundled 120-frame clip, 768x576 JPEG, unpaced, 1 thread, no broker)",
        "against `lookout bench` on the clip's first frame (pre-processing + inference + decode + NMS, median of 20).",
        "ratio = run fps / detector fps. \"outside inference\" is the run's own per-frame pre-processing, post-processing,",
        "analysis (tracking, rules, scene) and publishing, as a share of its inference time (from its `stats.stages`).",
        "start-up is the process wall time of `lookout run --max-frames 1` (spawn, config, model load, first frame,",
        "shutdown; median of 3): an upper bound on time to first detection.",
        "",
        "| model | frames | run fps | detector fps | ratio | outside inference | start-up ms | load → first detection ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if not e2e:
        header = next(i for i, l in enumerate(lines) if l.startswith("| model | frames"))
        lines[header:header] = ["Not re-measured in this run: the rows are those of the previous RESULTS.md.", ""]
        lines += previous_e2e()
    for r in e2e:
        lines.append(
            f"| {r['model']} | {r['frames']} | {f(r['run_fps'])} | {f(r['det_fps'])} | **{f(r['ratio'], 3)}** | "
            f"{f(r['outside_pct'], 1)} % | {f(r['startup_ms'], 0)} | {f(r['first_ms'], 0)} |"
        )
    lines += vlm_measured_section(vlm, args) if vlm else vlm_section()
    path = os.path.join(ROOT, "benches", "RESULTS.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
