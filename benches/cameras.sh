#!/usr/bin/env bash
# Several cameras in one process: `lookout run` with 4 cameras from looped clips, then with 1, each
# for SECS seconds (default 60), stopped with SIGINT. Reports per camera the processed fps, the mean
# latency (capture done → analysis done, from its stats records) and the pool's wait; the smallest
# camera's share of the fair rate (total fps / cameras); peak RSS of 4 cameras vs 1 (models are
# loaded once: the difference is the cameras' own buffers and threads); and the four again with
# cam0 capped by `detect_fps = 0.5` (its share among the uncapped three is against their own fair
# rate). Writes the figures to
# stdout as a Markdown table; benches/CAMERAS.md keeps a run.
#
#   cargo build && bash benches/cameras.sh 60          # LOOKOUT_BIN=… to pick another binary
#
# The clips: the bundled pedestrian clip (file:, looped) and, when ../shared/media has them, two
# mp4 clips through ffmpeg (video:, looped); otherwise the bundled clip four times.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
BIN=${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-target}/debug/lookout}
[ -x "$BIN" ] || { echo "no lookout binary at $BIN (cargo build, or set LOOKOUT_BIN)" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
MEDIA=../shared/media
VTEST='file:samples/vtest?fps=10&loop=true'
CLIP1=$VTEST; CLIP2=$VTEST
if command -v ffmpeg >/dev/null && [ -f "$MEDIA/video_drive_udacity_test_video.mp4" ] \
   && [ -f "$MEDIA/video_intel_bottle-detection.mp4" ]; then
  CLIP1="video:$(realpath "$MEDIA/video_drive_udacity_test_video.mp4")?fps=10&loop=true&width=640"
  CLIP2="video:$(realpath "$MEDIA/video_intel_bottle-detection.mp4")?fps=10&loop=true&width=640"
fi

# $1: file, $2..: sources, one camera each.
write_config() {
  local f=$1; shift
  printf 'device = "camsbench"\n[pipeline]\nstats_interval = 2.0\ndescribe_interval = 0\n' > "$f"
  local i=0
  for s in "$@"; do
    printf '[[cameras]]\nname = "cam%d"\nsource = "%s"\n' "$i" "$s" >> "$f"
    i=$((i + 1))
  done
}

# $1: label, $2: config. Runs SECS seconds; leaves $W/$1.{jsonl,summary,rss,err}.
run_for() {
  local label=$1 cfg=$2
  RUST_LOG=lookout=info "$BIN" run --config "$cfg" --broker none --http off --summary-json \
    --events-out "$W/$label.jsonl" --truncate-events >"$W/$label.summary" 2>"$W/$label.err" &
  local pid=$! peak=0 t=0
  while [ "$t" -lt "$SECS" ] && kill -0 "$pid" 2>/dev/null; do
    sleep 1; t=$((t + 1))
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
  done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" || true
  echo "$peak" > "$W/$label.rss"
}

write_config "$W/four.toml" "$VTEST" "$CLIP1" "$CLIP2" "$VTEST"
write_config "$W/one.toml" "$VTEST"
# The same four with cam0 capped at 0.5 detections a second: the rest goes to the others.
sed '0,/^source = .*/s//&\ndetect_fps = 0.5/' "$W/four.toml" > "$W/capped.toml"
run_for four "$W/four.toml"
run_for one "$W/one.toml"
run_for capped "$W/capped.toml"

python3 - "$W" "$SECS" <<'PY'
import json, sys, statistics
w, secs = sys.argv[1], sys.argv[2]
def load(label):
    summary = json.loads(open(f"{w}/{label}.summary").read().strip().splitlines()[-1])
    stats = {}
    for line in open(f"{w}/{label}.jsonl"):
        r = json.loads(line)
        if r.get("record") == "stats" and r.get("frames_processed", 0) > 0:
            stats.setdefault(r["camera"], []).append(r)
    rss = int(open(f"{w}/{label}.rss").read().strip() or 0) / 1024
    loads = sum("detector pool:" in l for l in open(f"{w}/{label}.err"))
    return summary, stats, rss, loads
four, stats4, rss4, loads4 = load("four")
one, stats1, rss1, loads1 = load("one")
def rows(summary, stats):
    out = []
    for c in summary["cameras"]:
        fps = c["frames_processed"] / summary["wall_s"]
        # The first interval holds the start-up; the rest is steady state.
        lat = [s["latency_ms"] for s in stats.get(c["camera"], [])[1:]] or [0.0]
        out.append((c["camera"], c["frames_processed"], fps, statistics.mean(lat),
                    c["pool"]["mean_wait_ms"], c["pool"]["mean_detect_ms"]))
    return out
capped, statsc, rssc, _ = load("capped")
r4, r1, rc = rows(four, stats4), rows(one, stats1), rows(capped, statsc)
total = sum(r[2] for r in r4)
fair = total / len(r4)
print(f"4 cameras, {secs} s: {four['frames_processed']} frames, {total:.2f} fps in all, "
      f"fair rate {fair:.2f} fps per camera; models loaded {four['models_loaded']} "
      f"({loads4} 'detector pool:' log line)")
print()
print("| run | camera | frames | fps | share of fair rate | mean latency ms | pool wait ms | detect ms |")
print("|---|---|---|---|---|---|---|---|")
for r in r4:
    print(f"| 4 cameras | {r[0]} | {r[1]} | {r[2]:.2f} | {r[2] / fair:.2f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} |")
for r in r1:
    print(f"| 1 camera | {r[0]} | {r[1]} | {r[2]:.2f} | — | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} |")
fair_c = sum(r[2] for r in rc[1:]) / (len(rc) - 1)
for r in rc:
    share = "capped" if r[0] == "cam0" else f"{r[2] / fair_c:.2f}"
    print(f"| 4 cameras, cam0 detect_fps = 0.5 | {r[0]} | {r[1]} | {r[2]:.2f} | {share} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} |")
print()
print(f"min camera share of the fair rate: {min(r[2] for r in r4) / fair:.2f}")
print(f"peak RSS: 4 cameras {rss4:.0f} MiB, 1 camera {rss1:.0f} MiB "
      f"(+{rss4 - rss1:.0f} MiB for 3 more cameras; models loaded: {four['models_loaded']} vs {one['models_loaded']})")
PY
