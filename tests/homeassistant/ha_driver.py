#!/usr/bin/env python3
"""Checks lookout's Home Assistant MQTT discovery against a REAL Home Assistant.

Starts a real mosquitto, a real Home Assistant (its MQTT integration set up through a config
entry, pointed at that mosquitto) and `lookout run` on the bundled clip (looping), then checks,
through Home Assistant's own REST and websocket APIs, what a user would see:

1. the entities lookout announces appear, all on one HA device named after the lookout device;
2. zone / label occupancy and counts change while the clip plays;
3. the image entity serves a JPEG (the latest snapshot);
4. the event entity fires for alerts;
5. turning a rule's switch off in HA stops that rule's alerts (watched on MQTT), and on again;
6. killing lookout (SIGKILL) makes the entities `unavailable` (the availability last will).

Writes `report.json`, the retained discovery payloads (`discovery.json`), the image HA served
(`ha-image.jpg`) and the logs into --out. Exit status 0 only when every check passed.

Run it through tests/homeassistant/validate.sh, which builds the Python environment.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import aiohttp
import paho.mqtt.client as mqtt

DEVICE = "lookout-demo"
RULE_TO_SWITCH = "path"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Capture:
    """A paho subscriber that records every message (retained flag and arrival time)."""

    def __init__(self, port, filters):
        self.msgs = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(client_id=f"ha-driver-{uuid.uuid4().hex[:8]}")
        self.c.on_connect = lambda c, u, f, rc: [c.subscribe(t, 1) for t in filters]
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, m):
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain), time.time()))

    def snapshot(self):
        with self.lock:
            return list(self.msgs)

    def publish(self, topic, payload, retain=False):
        self.c.publish(topic, payload, qos=1, retain=retain)

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


class HA:
    def __init__(self, port, token):
        self.base = f"http://127.0.0.1:{port}"
        self.h = {"Authorization": f"Bearer {token}"}
        self.token = token

    async def get(self, s, path):
        async with s.get(self.base + path, headers=self.h) as r:
            r.raise_for_status()
            return await r.json()

    async def get_bytes(self, s, path):
        async with s.get(self.base + path, headers=self.h) as r:
            return r.status, r.headers.get("Content-Type", ""), await r.read()

    async def post(self, s, path, body):
        async with s.post(self.base + path, headers=self.h, json=body) as r:
            r.raise_for_status()
            return await r.json()

    async def state(self, s, entity_id):
        async with s.get(f"{self.base}/api/states/{entity_id}", headers=self.h) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            return await r.json()

    async def ws(self, s, *commands):
        """Runs websocket commands, returns their results in order."""
        out = []
        async with s.ws_connect(self.base + "/api/websocket") as w:
            await w.receive_json()  # auth_required
            await w.send_json({"type": "auth", "access_token": self.token})
            ok = await w.receive_json()
            assert ok["type"] == "auth_ok", ok
            for i, cmd in enumerate(commands, 1):
                await w.send_json({"id": i, **cmd})
                while True:
                    m = await w.receive_json()
                    if m.get("id") == i and m.get("type") == "result":
                        assert m["success"], m
                        out.append(m["result"])
                        break
        return out


async def wait_for(what, fn, timeout, every=0.5):
    deadline = time.time() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


async def onboard(port):
    """Creates the owner user through HA's onboarding API and returns an access token."""
    base = f"http://127.0.0.1:{port}"
    client_id = f"{base}/"
    async with aiohttp.ClientSession() as s:
        async def up():
            try:
                async with s.get(base + "/api/onboarding") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for("Home Assistant's HTTP server", up, 300, 1.0)
        async with s.post(
            base + "/api/onboarding/users",
            json={"client_id": client_id, "name": "Driver", "username": "driver",
                  "password": "driver-password-1", "language": "en"},
        ) as r:
            r.raise_for_status()
            code = (await r.json())["auth_code"]
        async with s.post(
            base + "/auth/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": client_id},
        ) as r:
            r.raise_for_status()
            tokens = await r.json()
        # The rest of onboarding, so HA's frontend opens on its pages (for the screenshot).
        h = {"Authorization": f"Bearer {tokens['access_token']}"}
        for step, body in (("core_config", {}), ("analytics", {}),
                           ("integration", {"client_id": client_id, "redirect_uri": client_id})):
            async with s.post(f"{base}/api/onboarding/{step}", headers=h, json=body) as r:
                if r.status != 200:
                    log(f"onboarding step {step}: {r.status}")
        return tokens


def write_ha_config(cfg_dir, http_port, mqtt_port):
    os.makedirs(os.path.join(cfg_dir, ".storage"), exist_ok=True)
    # HA serves <config>/www as /local only when the folder exists at start (the screenshot's
    # login page goes there).
    os.makedirs(os.path.join(cfg_dir, "www"), exist_ok=True)
    with open(os.path.join(cfg_dir, "configuration.yaml"), "w") as f:
        f.write(
            "homeassistant:\n  name: lookout validation\n  unit_system: metric\n"
            "  time_zone: UTC\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {http_port}\n"
            "api:\nwebsocket_api:\nconfig:\nonboarding:\nfrontend:\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n"
        )
    # HA 2024 sets MQTT up through a config entry only (YAML broker settings are gone).
    entries = {
        "version": 1, "minor_version": 2, "key": "core.config_entries",
        "data": {"entries": [{
            "entry_id": uuid.uuid4().hex, "version": 1, "minor_version": 1, "domain": "mqtt",
            "title": f"127.0.0.1:{mqtt_port}",
            "data": {"broker": "127.0.0.1", "port": mqtt_port, "discovery": True,
                     "discovery_prefix": "homeassistant"},
            "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
            "source": "user", "unique_id": None, "disabled_by": None,
        }]},
    }
    with open(os.path.join(cfg_dir, ".storage", "core.config_entries"), "w") as f:
        json.dump(entries, f)


def start_mosquitto(work, port):
    conf = os.path.join(work, "mosquitto.conf")
    user = "user root\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"{user}allow_anonymous true\npersistence false\n"
                f"log_dest file {work}/mosquitto.log\nlistener {port} 127.0.0.1\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    p = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return p
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mosquitto did not start")


def start_lookout(args, work, mqtt_port):
    demo = open(os.path.join(args.repo, "samples/demo.toml")).read()
    demo = demo.replace("file:samples/vtest?fps=10", "file:samples/vtest?fps=10&loop=true")
    # Two more zones (no alerts, only occupancy): the demo's `path` is never empty on this
    # clip, these two empty and fill as people walk, so an occupancy sensor can be seen flip.
    for name, poly in (("left", "[[0.0, 0.0], [0.25, 0.0], [0.25, 1.0], [0.0, 1.0]]"),
                       ("near", "[[0.0, 0.62], [1.0, 0.62], [1.0, 1.0], [0.0, 1.0]]")):
        demo += f'\n[[rules]]\nname = "{name}"\nkind = "zone"\npolygon = {poly}\nclasses = ["person"]\n'
    cfg = os.path.join(work, "lookout.toml")
    with open(cfg, "w") as f:
        f.write(demo)
    out = open(os.path.join(args.out, "lookout.log"), "w")
    return subprocess.Popen(
        [args.lookout, "run", "--config", cfg, "--broker", f"mqtt://127.0.0.1:{mqtt_port}",
         "--spool", os.path.join(work, "spool.redb")],
        cwd=args.repo, stdout=out, stderr=subprocess.STDOUT)


def screenshot(args, cfg_dir, port, tokens, device_id):
    """The HA device page in headless Chromium, logged in by a page on HA's own origin that
    puts the tokens where HA's frontend keeps them. Best effort: a failure is only logged."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        log("no chromium: no screenshot")
        return
    base = f"http://127.0.0.1:{port}"
    stored = {"hassUrl": base, "clientId": f"{base}/", "expires": int(time.time() * 1000) + 1800_000,
              "refresh_token": tokens["refresh_token"], "access_token": tokens["access_token"],
              "token_type": "Bearer", "expires_in": 1800}
    with open(os.path.join(cfg_dir, "www", "login.html"), "w") as f:
        f.write("<script>localStorage.setItem('hassTokens', JSON.stringify(%s));"
                "location.replace('/config/devices/device/%s');</script>" % (json.dumps(stored), device_id))
    out = os.path.join(args.out, "ha-device.png")
    r = subprocess.run(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,2000", "--virtual-time-budget=25000", f"--screenshot={out}",
         f"{base}/local/login.html"],
        capture_output=True, timeout=120)
    log(f"screenshot: {out} ({'ok' if os.path.exists(out) else r.stderr.decode()[-300:]})")


def retained_configs(cap):
    """Discovery configs as the broker holds them: topic -> payload (last one wins)."""
    configs = {}
    for topic, payload, _retain, _t in cap.snapshot():
        if topic.startswith("homeassistant/") and topic.endswith("/config"):
            if payload:
                configs[topic] = json.loads(payload)
            else:
                configs.pop(topic, None)
    return configs


async def run(args):
    report = {"checks": {}, "observed": {}}
    checks = report["checks"]
    work = tempfile.mkdtemp(prefix="lookout-ha-")
    mqtt_port, http_port = free_port(), free_port()
    procs = []
    try:
        procs.append(start_mosquitto(work, mqtt_port))
        log(f"mosquitto on {mqtt_port}")
        cfg_dir = os.path.join(work, "ha")
        write_ha_config(cfg_dir, http_port, mqtt_port)
        ha_log = open(os.path.join(args.out, "homeassistant.log"), "w")
        t0 = time.time()
        hass = subprocess.Popen(
            [sys.executable, "-m", "homeassistant", "-c", cfg_dir, "--skip-pip"],
            stdout=ha_log, stderr=subprocess.STDOUT)
        procs.append(hass)
        tokens = await onboard(http_port)
        ha = HA(http_port, tokens["access_token"])
        report["observed"]["ha_start_s"] = round(time.time() - t0, 1)
        log(f"Home Assistant up on {http_port} after {report['observed']['ha_start_s']} s, onboarded")

        async with aiohttp.ClientSession() as s:
            cfg = await ha.get(s, "/api/config")
            report["observed"]["ha_version"] = cfg["version"]

            async def mqtt_loaded():
                return "mqtt" in (await ha.get(s, "/api/config"))["components"]

            await wait_for("HA's MQTT integration", mqtt_loaded, 120)
            cap = Capture(mqtt_port, ["homeassistant/#", f"lookout/{DEVICE}/#"])
            lookout = start_lookout(args, work, mqtt_port)
            procs.append(lookout)
            log("lookout run started on the looping clip")

            # 1. Entities on one device.
            await asyncio.sleep(3)
            configs = retained_configs(cap)
            uniques = {c["unique_id"]: t for t, c in configs.items()}
            report["observed"]["discovery_configs"] = len(configs)

            async def all_registered():
                (ents,) = await ha.ws(s, {"type": "config/entity_registry/list"})
                mine = {e["unique_id"]: e for e in ents if e["platform"] == "mqtt"}
                return mine if set(uniques) <= set(mine) else None

            mine = await wait_for("every announced entity in HA's entity registry",
                                  all_registered, 120)
            (devices,) = await ha.ws(s, {"type": "config/device_registry/list"})
            dev_ids = {mine[u]["device_id"] for u in uniques}
            dev = [d for d in devices if d["id"] in dev_ids]
            checks["entities_on_one_device"] = (
                len(dev_ids) == 1 and dev[0]["name"] == DEVICE and dev[0]["manufacturer"] == "lookout")
            entity_of = {configs[t]["unique_id"]: mine[configs[t]["unique_id"]]["entity_id"]
                         for t in configs}
            report["observed"]["device"] = {k: dev[0].get(k) for k in
                                            ("name", "manufacturer", "model", "sw_version", "identifiers")}
            report["observed"]["entities"] = sorted(entity_of.values())
            log(f"{len(entity_of)} entities on device {dev[0]['name']!r}")

            def eid(unique_suffix):
                return next(e for u, e in entity_of.items() if u.endswith(unique_suffix))

            # 2. Occupancy and counts change with the clip.
            watched = {n: eid(n) for n in ("_zone_path_occupancy", "_zone_path_count",
                                           "_label_person_count", "_label_person_occupancy")}
            # Every other occupancy sensor too: on this clip the path is never empty, so a
            # flip to `off` can only come from a label that comes and goes.
            for u, e in entity_of.items():
                if u.endswith("_occupancy"):
                    watched.setdefault(u[u.index("_label_"):] if "_label_" in u else u, e)
            seen = {n: [] for n in watched}
            deadline = time.time() + args.watch_s
            while time.time() < deadline:
                for n, e in watched.items():
                    st = (await ha.state(s, e) or {}).get("state")
                    if not seen[n] or seen[n][-1] != st:
                        seen[n].append(st)
                await asyncio.sleep(0.5)
            report["observed"]["state_sequences"] = {watched[n]: v for n, v in seen.items()}
            flipped = [watched[n] for n, v in seen.items()
                       if n.endswith("_occupancy") and {"on", "off"} <= set(v)]
            report["observed"]["occupancy_sensors_that_flipped"] = flipped
            checks["an_occupancy_sensor_flips"] = bool(flipped)
            if args.screenshot:
                screenshot(args, cfg_dir, http_port, tokens, dev[0]["id"])
            checks["zone_count_changes"] = len(set(seen["_zone_path_count"]) - {"unknown"}) >= 2
            checks["person_count_changes"] = len(set(seen["_label_person_count"]) - {"unknown"}) >= 2
            checks["zone_occupancy_on"] = "on" in seen["_zone_path_occupancy"]
            log(f"states seen: {seen}")

            # 3. The image entity serves a JPEG.
            image = eid("_snapshot_plaza")

            async def image_ready():
                st = await ha.state(s, image)
                return st if st and st["state"] not in ("unknown", "unavailable") else None

            await wait_for("a snapshot in the image entity", image_ready, 120)
            status, ctype, body = await ha.get_bytes(s, f"/api/image_proxy/{image}")
            with open(os.path.join(args.out, "ha-image.jpg"), "wb") as f:
                f.write(body)
            report["observed"]["image"] = {"status": status, "content_type": ctype, "bytes": len(body)}
            checks["image_is_jpeg"] = status == 200 and body[:3] == b"\xff\xd8\xff"
            log(f"image entity: {status} {ctype} {len(body)} bytes")

            # 3b. The snapshot button sends cmd/snapshot; lookout answers on reply/<id>.
            t_press = time.time()
            await ha.post(s, "/api/services/button/press", {"entity_id": eid("_snapshot")})

            def snapshot_replies():
                out = []
                for topic, payload, _r, t in cap.snapshot():
                    if t >= t_press and topic.startswith(f"lookout/{DEVICE}/reply/"):
                        v = json.loads(payload)
                        if v.get("command") == "snapshot":
                            out.append(v)
                return out

            async def replied():
                return snapshot_replies()

            reply = (await wait_for("lookout's reply to the snapshot button", replied, 60))[0]
            report["observed"]["snapshot_button_reply"] = reply
            checks["snapshot_button_works"] = reply.get("ok") is True

            # 3c. Diagnostic sensors read the stats.
            async def diagnostics():
                vals = {}
                for n in ("_fps", "_inference_ms", "_spool_depth"):
                    st = (await ha.state(s, eid(n)) or {}).get("state")
                    try:
                        vals[eid(n)] = float(st)
                    except (TypeError, ValueError):
                        return None
                return vals

            diag = await wait_for("numbers in the diagnostic sensors", diagnostics, 60)
            report["observed"]["diagnostics"] = diag
            checks["diagnostic_sensors_have_numbers"] = diag[eid("_fps")] > 0

            # 4. The event entity fires for alerts.
            event = eid("_alerts")

            async def event_fired():
                st = await ha.state(s, event)
                return st if st and st["state"] not in ("unknown", "unavailable") else None

            ev = await wait_for("an alert in the event entity", event_fired, 120)
            report["observed"]["event_entity"] = ev
            checks["event_entity_fires"] = ev["attributes"].get("event_type") in (
                "path", "lamp-post", "crowd", "left", "near")

            # 5. The rule switch: off stops its alerts, on brings them back.
            switch = eid(f"_rule_{RULE_TO_SWITCH}")
            st = await ha.state(s, switch)
            report["observed"]["switch_before"] = st["state"]
            await ha.post(s, "/api/services/switch/turn_off", {"entity_id": switch})

            async def switch_off():
                return (await ha.state(s, switch))["state"] == "off"

            await wait_for("the switch to report off (from lookout's retained state)", switch_off, 60)
            t_off = time.time()
            # Alerts already on their way (spooled before the switch reached the frame loop)
            # may still arrive for a moment; judge from a short grace period on.
            await asyncio.sleep(args.off_s)
            grace = 3.0

            def alerts_by_rule(t_from, t_to):
                counts = {}
                for topic, payload, _r, t in cap.snapshot():
                    if topic == f"lookout/{DEVICE}/alerts" and t_from <= t < t_to:
                        r = json.loads(payload).get("rule")
                        counts[r] = counts.get(r, 0) + 1
                return counts

            before = alerts_by_rule(0, t_off)
            during = alerts_by_rule(t_off + grace, time.time())
            await ha.post(s, "/api/services/switch/turn_on", {"entity_id": switch})

            async def switch_on():
                return (await ha.state(s, switch))["state"] == "on"

            await wait_for("the switch to report on", switch_on, 60)
            t_on = time.time()

            async def path_alert_again():
                return alerts_by_rule(t_on, time.time()).get(RULE_TO_SWITCH, 0) > 0

            try:
                await wait_for("a path alert after switching on", path_alert_again, args.off_s * 2)
                back = True
            except TimeoutError:
                back = False
            report["observed"]["alerts_before_off"] = before
            report["observed"]["alerts_while_off"] = during
            report["observed"]["while_off_s"] = round(time.time() - t_off - grace, 1)
            checks["rule_switch_off_stops_its_alerts"] = (
                before.get(RULE_TO_SWITCH, 0) > 0 and during.get(RULE_TO_SWITCH, 0) == 0)
            checks["rule_switch_on_restores_alerts"] = back
            rule_states = [(t, p.decode()) for t, p, _r, _t in cap.snapshot()
                           if t == f"lookout/{DEVICE}/rules/{RULE_TO_SWITCH}/state"]
            report["observed"]["rule_state_messages"] = rule_states
            log(f"alerts before off {before}, while off {during}, back on: {back}")

            # 6. Killed lookout: entities unavailable.
            occ = watched["_zone_path_occupancy"]
            before_kill = (await ha.state(s, occ))["state"]
            report["observed"]["state_before_kill"] = before_kill
            lookout.send_signal(signal.SIGKILL)
            lookout.wait()
            t_kill = time.time()

            async def unavailable():
                return (await ha.state(s, occ))["state"] == "unavailable"

            await wait_for("entities to turn unavailable after SIGKILL", unavailable, 120)
            report["observed"]["unavailable_after_kill_s"] = round(time.time() - t_kill, 2)

            def availability():
                return [(p.decode(), r) for t, p, r, _t in cap.snapshot()
                        if t == f"lookout/{DEVICE}/availability"]

            async def offline_seen():
                a = availability()
                return bool(a) and a[-1][0] == "offline"

            await wait_for("the availability last will on MQTT", offline_seen, 60)
            report["observed"]["availability_messages"] = availability()
            unavail = [e for e in entity_of.values()
                       if ((await ha.state(s, e)) or {}).get("state") == "unavailable"]
            report["observed"]["unavailable_entities_after_kill"] = len(unavail)
            checks["unavailable_after_kill"] = (
                before_kill != "unavailable" and len(unavail) == len(entity_of))
            checks["availability_offline_after_kill"] = True
            log("entities unavailable after SIGKILL")

            with open(os.path.join(args.out, "discovery.json"), "w") as f:
                json.dump(dict(sorted(configs.items())), f, indent=1, ensure_ascii=False)
            cap.stop()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.copy(os.path.join(work, "mosquitto.log"), os.path.join(args.out, "mosquitto.log"))
        with open(os.path.join(args.out, "report.json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        shutil.rmtree(work, ignore_errors=True)
    failed = [k for k, v in checks.items() if not v]
    log(f"checks: {json.dumps(checks)}")
    return 1 if failed or not checks else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lookout", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--watch-s", type=float, default=40)
    ap.add_argument("--off-s", type=float, default=25)
    ap.add_argument("--screenshot", action="store_true",
                    help="also save HA's device page as ha-device.png (needs chromium)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
