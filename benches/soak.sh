#!/usr/bin/env bash
# Soak: `lookout run` on the bundled clip, looping, for N minutes (default 10) against a real
# mosquitto with a persistent QoS 1 subscriber. Samples the process's resident memory every 10 s
# and checks that every alert lookout reported reached the subscriber. Writes benches/SOAK.md.
#
#   cargo build --release && bash benches/soak.sh 10
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-10}
BIN=${LOOKOUT_BIN:-target/release/lookout}
W=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$W/mosquitto.conf" <<CONF
$( [ "$(id -u)" = 0 ] && echo "user root" )
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $W/
max_queued_messages 100000
CONF
mosquitto -c "$W/mosquitto.conf" >"$W/mosquitto.log" 2>&1 &
MQ=$!
trap 'kill $MQ $SUB $LK 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
sed -e 's/device = "lookout-demo"/device = "soak"/' -e 's|file:samples/vtest?fps=10|file:samples/vtest?fps=10\&loop=true|' \
  samples/demo.toml > "$W/soak.toml"
mosquitto_sub -L "mqtt://127.0.0.1:$PORT/lookout/soak/alerts" -q 1 -c -i soak-sub > "$W/received.jsonl" &
SUB=$!
sleep 0.5
"$BIN" run --config "$W/soak.toml" --broker "mqtt://127.0.0.1:$PORT" --spool "$W/spool.redb" \
  --events-out "$W/events.jsonl" --summary-json > "$W/summary.json" 2> "$W/run.log" &
LK=$!
echo "t_s,rss_kb" > "$W/rss.csv"
END=$(( $(date +%s) + MIN * 60 ))
T0=$(date +%s)
while [ "$(date +%s)" -lt "$END" ] && kill -0 $LK 2>/dev/null; do
  echo "$(( $(date +%s) - T0 )),$(awk '/VmRSS/ {print $2}' /proc/$LK/status)" >> "$W/rss.csv"
  sleep 10
done
kill -INT $LK; wait $LK || true
sleep 3; kill $SUB 2>/dev/null || true; wait $SUB 2>/dev/null || true
python3 - "$W" "$MIN" <<'PY'
import csv, json, sys, datetime, platform, os
w, minutes = sys.argv[1], sys.argv[2]
rows = [(int(r["t_s"]), int(r["rss_kb"])) for r in csv.DictReader(open(f"{w}/rss.csv")) if r["rss_kb"]]
warm = [r for r in rows if r[0] >= 60] or rows
first, last, peak = warm[0][1], warm[-1][1], max(r[1] for r in warm)
reported = {json.loads(l)["alert_id"] + "@" + str(json.loads(l)["frame_ts"]) for l in open(f"{w}/events.jsonl") if '"record":"alert"' in l}
got = set()
for l in open(f"{w}/received.jsonl"):
    try:
        v = json.loads(l); got.add(v["alert_id"] + "@" + str(v["frame_ts"]))
    except Exception:
        pass
summary = json.loads(open(f"{w}/summary.json").read().strip().splitlines()[-1])
missing = reported - got
text = f"""# Soak: `lookout run`, {minutes} minutes

Run {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, by `benches/soak.sh {minutes}`:
the bundled clip looping at 10 fps through the demo rules, release build, real mosquitto with a persistent
QoS 1 subscriber on the alerts topic.

| figure | value |
|---|---|
| frames processed | {summary['frames_processed']} |
| frames dropped (drop-oldest) | {summary['frames_dropped']} |
| events / alerts / descriptions | {summary['events']} / {summary['alerts']} / {summary['descriptions']} |
| resident memory after the first minute | {first/1024:.1f} MiB |
| resident memory at the end | {last/1024:.1f} MiB |
| peak resident memory (after the first minute) | {peak/1024:.1f} MiB |
| growth, first minute to end | {(last-first)/1024:+.1f} MiB |
| alerts reported / received by the subscriber / missing | {len(reported)} / {len(got & reported)} / {len(missing)} |

Samples (every 10 s): {", ".join(f"{t}s {kb/1024:.1f}" for t, kb in rows)}
"""
open("benches/SOAK.md", "w").write(text)
print(text)
PY
