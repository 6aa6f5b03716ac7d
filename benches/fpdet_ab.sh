#!/bin/sh
# The fp32 detector A/B of benches/GRAPH_REWRITES.md section 7, all four fp32 detectors: tract's plan,
# lookout without AxisSoftmax/SeparableMaxPool (LOOKOUT_FPDET=0), lookout with them; 1 and 2 threads,
# interleaved run by run in one process per model (benches/fpdet_ab.rs).
#   benches/fpdet_ab.sh            dev build (what the shared dev box allows)
#   PROFILE=--release benches/fpdet_ab.sh   release build (a quiet machine or a board; say so with the figures)
# FastestDet and YOLOX-Nano come from ../shared/models and are skipped when absent.
set -eu
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-5}"
ITERS="${ITERS:-6}"
THREADS="${THREADS:-1,2}"
cargo build --quiet ${PROFILE:-} --example fpdet_ab
ab() {
  if [ -f "$1" ]; then
    cargo run --quiet ${PROFILE:-} --example fpdet_ab -- "$1" "$2" "$ROUNDS" "$ITERS" "$THREADS"
    echo
  else
    echo "skip: $1 absent"
  fi
}
ab ../shared/models/fastestdet/FastestDet.onnx 1,3,352,352
ab ../shared/models/yolox-nano/yolox_nano.onnx 1,3,416,416
ab models/nanodet-g/nanodet-g.onnx 1,3,416,416
ab models/centernet-mbv3/centernet-mbv3.onnx 1,512,512,3
