#!/usr/bin/env bash
# Fault injection: `lookout run` on the bundled clip, looping, for N minutes (default 5) against a
# real mosquitto with a persistent QoS 1 subscriber on the alerts, while a fault is injected every
# PERIOD seconds (default 20), in turn:
#   kill -9 of lookout (restarted at once on the same spool and --events-out),
#   the broker stopped for 10 s (SIGTERM: it keeps sessions and retained messages),
#   hostile commands (broken JSON, unknown commands, wrong types, 100 KiB payloads),
#   a burst of 200 pings,
#   a retained `cmd/rules/disable` (may run once, live, when published; never again on a
#     re-delivery; cleared two faults later, after a kill -9 whose restart re-subscribes),
#   a retained 1 MiB command on `cmd/ping` (over max_incoming_bytes; cleared three faults later,
#     also after a kill -9).
# At the end it prints alerts produced (--events-out) / delivered (subscriber) / duplicated /
# missing, reconnects, and the replies to the commands, and writes benches/FAULTS.md.
#
#   cargo build && bash benches/faults.sh 5            # LOOKOUT_BIN=… to pick another binary
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-5}
PERIOD=${PERIOD:-20}
BIN=${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-target}/debug/lookout}
[ -x "$BIN" ] || { echo "no lookout binary at $BIN (cargo build, or set LOOKOUT_BIN)" >&2; exit 1; }
command -v mosquitto_pub >/dev/null || { echo "needs mosquitto-clients" >&2; exit 1; }
MOSQ=$(command -v mosquitto || echo /usr/sbin/mosquitto)
W=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DEV=faults
T=lookout/$DEV
cat > "$W/mosquitto.conf" <<CONF
$( [ "$(id -u)" = 0 ] && echo "user root" )
listener $PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $W/
max_queued_messages 100000
CONF
MQ=; SUBL=; LK=
broker_up() {
  "$MOSQ" -c "$W/mosquitto.conf" >>"$W/mosquitto.log" 2>&1 &
  MQ=$!
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
}
broker_down() { kill -TERM "$MQ" 2>/dev/null || true; wait "$MQ" 2>/dev/null || true; }
RUNS=0
lookout_up() {
  RUNS=$((RUNS + 1))
  "$BIN" -v run --config "$W/faults.toml" --broker "mqtt://127.0.0.1:$PORT" --spool "$W/spool.redb" \
    --events-out "$W/events.jsonl" >/dev/null 2>>"$W/run.log" &
  LK=$!
}
pub() { mosquitto_pub -p "$PORT" -q 1 "$@" 2>>"$W/pub.log" || echo "publish failed: $*" >>"$W/pub.log"; }
# Each kill on its own `|| true`: under `set -e` a failing command would end the handler early.
cleanup() {
  [ -n "$SUBL" ] && { pkill -P "$SUBL" 2>/dev/null || true; kill "$SUBL" 2>/dev/null || true; }
  [ -n "$LK" ] && { kill "$LK" 2>/dev/null || true; }
  [ -n "$MQ" ] && { kill -9 "$MQ" 2>/dev/null || true; }
  return 0
}
trap cleanup EXIT

broker_up
sed -e "s/device = \"lookout-demo\"/device = \"$DEV\"/" -e 's|file:samples/vtest?fps=10|file:samples/vtest?fps=10\&loop=true|' \
  samples/demo.toml > "$W/faults.toml"
# The subscriber outlives broker restarts: mosquitto_sub exits when the broker goes, so it is
# restarted in a loop; its persistent session (-c) keeps what arrives meanwhile.
( while :; do
    mosquitto_sub -p "$PORT" -q 1 -c -i faults-sub -v -t "$T/alerts" -t "$T/reply/#" >>"$W/received.txt" 2>/dev/null || true
    sleep 0.5
  done ) &
SUBL=$!
sleep 1
lookout_up

head -c $((1 << 20)) /dev/zero | tr '\0' ' ' > "$W/big.txt"
head -c $((100 << 10)) /dev/zero | tr '\0' 'x' > "$W/100k.txt"
END=$(( $(date +%s) + MIN * 60 ))
N=0; KILLS=0; STOPS=0; HOSTILE=0; BURSTS=0; RETAINED=0; OVERSIZED=0
CLEAR_RET=-1; CLEAR_BIG=-1
while [ "$(date +%s)" -lt "$END" ]; do
  sleep "$PERIOD"
  N=$((N + 1))
  if [ "$CLEAR_RET" = "$N" ]; then
    # Cleared, and the rule switched back on: the live delivery of the retained command (a
    # broker forwards it to present subscribers as an ordinary message) did switch it off.
    pub -t "$T/cmd/rules/disable" -r -n
    pub -t "$T/cmd/rules/enable" -m "{\"request_id\":\"enable-$N\",\"name\":\"path\"}"
  fi
  [ "$CLEAR_BIG" = "$N" ] && pub -t "$T/cmd/ping" -r -n
  # A 12-fault cycle: each retained command is present across a kill -9, so the restarted
  # lookout (a new process) subscribes again and the broker re-sends it.
  case $(( N % 12 )) in
    2|8|0) kill -9 "$LK" 2>/dev/null || true; wait "$LK" 2>/dev/null || true; KILLS=$((KILLS + 1)); lookout_up ;;
    3|9) broker_down; sleep 10; broker_up; STOPS=$((STOPS + 1)) ;;
    4|7|10) for p in '{' '[1,2]' '{"request_id":7}' '{"instruction":5}' '{"request_id":"h-'$N'","camra":"x"}'; do
         pub -t "$T/cmd/ground" -m "$p"; HOSTILE=$((HOSTILE + 1))
       done
       pub -t "$T/cmd/explode" -m '{}'; pub -t "$T/cmd/ground" -f "$W/100k.txt"; HOSTILE=$((HOSTILE + 2)) ;;
    5|11) for i in $(seq 200); do echo "{\"request_id\":\"burst-$N-$i\"}"; done |
         mosquitto_pub -p "$PORT" -q 1 -t "$T/cmd/ping" -l 2>>"$W/pub.log" || true
       BURSTS=$((BURSTS + 1)) ;;
    1) pub -t "$T/cmd/rules/disable" -r -m "{\"request_id\":\"ret-$N\",\"name\":\"path\"}"
       RETAINED=$((RETAINED + 1)); CLEAR_RET=$((N + 2)) ;;
    6) pub -t "$T/cmd/ping" -r -f "$W/big.txt"; OVERSIZED=$((OVERSIZED + 1)); CLEAR_BIG=$((N + 3)) ;;
  esac
done
pub -t "$T/cmd/rules/disable" -r -n; pub -t "$T/cmd/ping" -r -n
kill -INT "$LK"; wait "$LK" || true
# What is still in the spool goes out on one more start, given 20 s to drain.
lookout_up; sleep 20; kill -INT "$LK"; wait "$LK" || true
# The subscriber's mosquitto_sub first (by parent id), then its loop, which sleeps 0.5 s between.
sleep 3; pkill -P "$SUBL" 2>/dev/null || true; kill "$SUBL" 2>/dev/null || true
wait "$SUBL" 2>/dev/null || true; SUBL=""

python3 - "$W" "$MIN" "$PERIOD" "$BIN" "$RUNS" "$KILLS" "$STOPS" "$HOSTILE" "$BURSTS" "$RETAINED" "$OVERSIZED" <<'PY'
import json, sys, datetime, platform, os, re, collections
w, minutes, period, binary, runs, kills, stops, hostile, bursts, retained, oversized = sys.argv[1:]
produced = set()
for l in open(f"{w}/events.jsonl"):
    if '"record":"alert"' in l:
        v = json.loads(l); produced.add(f'{v["alert_id"]}@{v["frame_ts"]}')
delivered = collections.Counter()
replies = collections.defaultdict(list)
for l in open(f"{w}/received.txt", errors="replace"):
    topic, _, payload = l.partition(" ")
    try:
        v = json.loads(payload)
    except Exception:
        continue
    if topic.endswith("/alerts"):
        delivered[f'{v["alert_id"]}@{v["frame_ts"]}'] += 1
    elif "/reply/" in topic:
        replies[v.get("request_id", "")].append(v)
log = open(f"{w}/run.log", errors="replace").read()
connected = log.count("mqtt: connected")
reconnects = connected - int(runs)
# A reply re-delivered by the broker carries the same envelope id: count distinct envelopes.
distinct = {rid: {r["id"]: r for r in rs} for rid, rs in replies.items()}
burst_ids = [r for r in distinct if r.startswith("burst-")]
burst_ok = sum(1 for r in burst_ids for x in distinct[r].values() if x.get("ok"))
burst_busy = sum(1 for r in burst_ids for x in distinct[r].values() if str(x.get("error", "")).startswith("busy"))
burst_multi = sum(1 for r in burst_ids if len(distinct[r]) > 1)
ret = {r: list(distinct[r].values()) for r in distinct if r.startswith("ret-")}
# Run once when published (live, if lookout was connected then); any further run is a re-delivery.
ret_live = sum(1 for rs in ret.values() if any(x.get("ok") for x in rs))
ret_rerun = sum(max(0, sum(1 for x in rs if x.get("ok")) - 1) for rs in ret.values())
ret_refused = sum(1 for rs in ret.values() for x in rs if "retained command refused" in str(x.get("error", "")))
ret_dup = sum(1 for rs in ret.values() for x in rs if "duplicate" in str(x.get("error", "")))
warn = len(re.findall(r"\bWARN\b", log)); err = len(re.findall(r"\bERROR\b", log))
oversized_lines = log.count("max_incoming_bytes")
panics = log.count("panicked")
missing = produced - set(delivered)
dups = sum(n - 1 for n in delivered.values() if n > 1)
extra = set(delivered) - produced
text = f"""# Faults: `lookout run` under injected faults, {minutes} minutes

Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores, by
`benches/faults.sh {minutes}` (a fault every {period} s) with the **debug build** (`{os.path.basename(binary)}`
from the dev profile, not release): the bundled clip looping at 10 fps through the demo rules, a real
mosquitto with persistence, a persistent QoS 1 subscriber on `alerts` and `reply/#`.

| fault | times |
|---|---|
| `kill -9` of lookout, restarted on the same spool | {kills} |
| broker stopped for 10 s | {stops} |
| hostile commands (broken JSON, wrong types, unknown command, 100 KiB) | {hostile} |
| bursts of 200 `cmd/ping` | {bursts} |
| retained `cmd/rules/disable` (cleared two faults later, after a `kill -9`) | {retained} |
| retained 1 MiB `cmd/ping`, over max_incoming_bytes (cleared three faults later, after a `kill -9`) | {oversized} |

| figure | value |
|---|---|
| alerts produced (in `--events-out`) | {len(produced)} |
| alerts delivered to the subscriber (distinct) | {len(produced & set(delivered))} |
| alerts missing | {len(missing)} |
| alerts duplicated (extra copies received) | {dups} |
| alerts received but not in `--events-out` (staged when killed) | {len(extra)} |
| lookout starts / MQTT reconnects | {runs} / {reconnects} |
| burst pings answered ok / busy / with more than one reply | {burst_ok} / {burst_busy} / {burst_multi} of {200 * int(bursts)} |
| retained commands run when published (live) / run again on re-delivery | {ret_live} / {ret_rerun} |
| retained re-deliveries refused with an error reply / answered "duplicate" | {ret_refused} / {ret_dup} |
| log lines WARN / ERROR / naming max_incoming_bytes / panics | {warn} / {err} / {oversized_lines} / {panics} |
"""
if missing:
    text += f"\nMissing alerts: {sorted(missing)[:20]}\n"
open("benches/FAULTS.md", "w").write(text)
print(text)
print(f"work dir: {w}")
PY
