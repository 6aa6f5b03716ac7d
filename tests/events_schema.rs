//! One schema: every record `lookout run` publishes on the bundled clip, received from a real
//! mosquitto, deserialises into its typed payload (`lookout::pipeline::payload`) and serialises
//! back to the very same bytes. And the events are Frigate-shaped: one `event_id` per tracked
//! object from `new` to `end`, different after a restart, with zone stays and durations; each
//! alert names a snapshot that was published.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use lookout::mqtt::{Envelope, StatusBody};
use lookout::pipeline::payload::{
    AlertPayload, DetectionsPayload, EventPayload, ScenePayload, StatsPayload,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The demo config with detections published and stats every second, so every class shows up.
fn demo_config(dir: &Path, device: &str) -> std::path::PathBuf {
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    let demo = demo
        .replace(
            "device = \"lookout-demo\"",
            &format!("device = \"{device}\""),
        )
        .replace(
            "stats_interval = 5.0",
            "stats_interval = 1.0\npublish_detections = true",
        );
    let p = dir.join(format!("{device}.toml"));
    std::fs::write(&p, demo).unwrap();
    p
}

/// `lookout run` on the first 60 frames; returns the `--events-out` records.
fn run(cfg: &Path, broker: &str, dir: &Path, name: &str) -> Vec<Value> {
    let events = dir.join(format!("{name}.jsonl"));
    common::succeed(
        common::lookout()
            .args(["run", "--config"])
            .arg(cfg)
            .args(["--broker", broker, "--max-frames", "60"])
            .arg("--spool")
            .arg(dir.join(format!("{name}.redb")))
            .arg("--events-out")
            .arg(&events)
            .current_dir(common::repo()),
    );
    common::jsonl(&events)
}

/// Deserialise `payload` as `T` and serialise it again: the same JSON, field for field and in
/// the same order.
fn round_trip<T: DeserializeOwned + Serialize>(topic: &str, payload: &[u8]) -> Value {
    let text = std::str::from_utf8(payload).unwrap();
    let typed: T = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{topic}: does not deserialise ({e}): {text}"));
    let again = serde_json::to_string(&typed).unwrap();
    let (a, b): (Value, Value) = (
        serde_json::from_str(text).unwrap(),
        serde_json::from_str(&again).unwrap(),
    );
    assert!(
        same_json(&a, &b),
        "{topic}: the typed payload changes the record\n was {text}\n now {again}"
    );
    // Field order too: the key sequence of the two texts.
    assert_eq!(keys(text), keys(&again), "{topic}: field order");
    a
}

/// Equal JSON, where numbers may differ in the last bit: serde_json's default float parser
/// (without its `float_roundtrip` feature) can be one ulp off the printed value.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-15 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The object keys of a JSON text in the order they appear (nested ones included).
fn keys(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Quoted strings followed by `:` are keys; string values never are.
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            if b.get(i + 1) == Some(&b':') {
                out.push(text[start..i].to_string());
            }
        }
        i += 1;
    }
    out
}

#[test]
fn every_published_record_round_trips_through_the_typed_payloads() {
    if mosquitto::binary().is_none() {
        mosquitto::skip("mosquitto is not installed (apt-get install mosquitto)");
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let sub = mosquitto::Sub::new(broker.port, "schema-sub", &["lookout/schema/#"], true);
    let cfg = demo_config(tmp.path(), "schema");
    let recs = run(&cfg, &broker.url(), tmp.path(), "schema");

    // Everything up to the `offline` status lookout sends when it stops (after its spool).
    let mut msgs = Vec::new();
    let deadline = Instant::now() + mosquitto::WAIT;
    while Instant::now() < deadline {
        let Some(m) = sub.recv_within(Duration::from_millis(200)) else {
            continue;
        };
        let offline = m.topic.ends_with("/status") && m.json()["state"] == "offline";
        msgs.push(m);
        if offline {
            break;
        }
    }
    let mut by_class: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut snapshots = BTreeSet::new();
    for m in &msgs {
        let rest = m.topic.strip_prefix("lookout/schema/").unwrap();
        let (class, v) = match rest {
            "alerts" => ("alert", round_trip::<AlertPayload>(&m.topic, &m.payload)),
            "events" => ("event", round_trip::<EventPayload>(&m.topic, &m.payload)),
            "scene" => ("scene", round_trip::<ScenePayload>(&m.topic, &m.payload)),
            "detections" => (
                "detections",
                round_trip::<DetectionsPayload>(&m.topic, &m.payload),
            ),
            "stats" => ("stats", round_trip::<StatsPayload>(&m.topic, &m.payload)),
            "status" => (
                "status",
                round_trip::<Envelope<StatusBody>>(&m.topic, &m.payload),
            ),
            s if s.starts_with("snapshot/") => {
                assert!(m.payload.starts_with(&[0xFF, 0xD8]), "{s} is a JPEG");
                snapshots.insert(s.to_string());
                continue;
            }
            // Home Assistant's plain state topics (docs/homeassistant.md): not JSON records.
            "availability" => {
                assert!(
                    m.payload == b"online" || m.payload == b"offline",
                    "availability payload {:?}",
                    String::from_utf8_lossy(&m.payload)
                );
                continue;
            }
            s if (s.starts_with("zones/") || s.starts_with("labels/")) && s.ends_with("/count") => {
                let n = std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok());
                assert!(n.is_some(), "{s}: a count, got {:?}", m.payload);
                continue;
            }
            s if s.starts_with("rules/") && s.ends_with("/state") => {
                assert!(m.payload == b"ON" || m.payload == b"OFF", "{s}: ON or OFF");
                continue;
            }
            other => panic!("unexpected topic {other}"),
        };
        // One unit for every time in a payload: Unix seconds.
        assert_eq!(v["v"], 2);
        let ts = v["ts"].as_f64().unwrap();
        assert!(ts > 1.6e9 && ts < 1e11, "{} ts in seconds: {ts}", m.topic);
        if let Some(f) = v["frame_ts"].as_f64() {
            assert!(
                (ts - f).abs() < 3600.0,
                "{}: ts {ts}, frame_ts {f}",
                m.topic
            );
        }
        by_class.entry(class).or_default().push(v);
    }
    let counts: BTreeMap<&str, usize> = by_class.iter().map(|(k, v)| (*k, v.len())).collect();
    println!(
        "{} messages round-tripped: {counts:?}, snapshot topics {snapshots:?}",
        msgs.len()
    );
    for class in ["alert", "event", "scene", "detections", "stats", "status"] {
        assert!(counts.get(class).copied().unwrap_or(0) > 0, "no {class}");
    }

    // The broker got what the run reported, and the JSON Lines records are the same bodies.
    let jsonl_alerts: BTreeSet<String> = recs
        .iter()
        .filter(|r| r["record"] == "alert")
        .map(|r| r["alert_id"].as_str().unwrap().to_string())
        .collect();
    let mqtt_alerts: BTreeSet<String> = by_class["alert"]
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(mqtt_alerts, jsonl_alerts);
    let jsonl_events: BTreeSet<(String, u64)> = recs
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().into(),
                r["event_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mqtt_events: BTreeSet<(String, u64)> = by_class["event"]
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().into(),
                r["event_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mqtt_events, jsonl_events,
        "(event_id, event_seq) names each message"
    );

    // Each alert names a snapshot that was published, under `snapshot/<camera>/<label>`.
    for a in &by_class["alert"] {
        let s = a["snapshot"].as_str().unwrap_or_else(|| panic!("{a}"));
        let label = a["labels"][0].as_str().unwrap();
        assert_eq!(s, format!("snapshot/plaza/{label}"));
        assert!(snapshots.contains(s), "{s} was published");
    }
    assert!(
        snapshots.contains("snapshot/plaza"),
        "the per-camera topic stays"
    );
    check_events(&by_class["event"]);
}

/// Frigate's event contract on the events a run published.
fn check_events(events: &[Value]) {
    let mut by_id: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in events {
        by_id
            .entry(e["event_id"].as_str().unwrap())
            .or_default()
            .push(e);
    }
    let (mut exits, mut snapshots) = (0, 0);
    for (id, evs) in &by_id {
        let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "new", "{id}: {types:?}");
        assert_eq!(*types.last().unwrap(), "end", "{id}: {types:?}");
        assert!(types[1..types.len() - 1].iter().all(|t| *t == "update"));
        let track: BTreeSet<u64> = evs
            .iter()
            .map(|e| e["track_id"].as_u64().unwrap())
            .collect();
        assert_eq!(track.len(), 1, "{id}: one tracked object");
        assert!(id.ends_with(&format!("-{}", evs[0]["track_id"])), "{id}");
        for (n, e) in evs.iter().enumerate() {
            assert_eq!(e["event_seq"], n as u64);
            assert_eq!(e["after"]["id"], *id);
            let a = &e["after"];
            assert!(a["score"].as_f64() <= a["top_score"].as_f64());
            for z in a["current_zones"].as_array().unwrap() {
                assert!(a["entered_zones"].as_array().unwrap().contains(z), "{a}");
            }
            for stay in e["exited_zones"].as_array().into_iter().flatten() {
                exits += 1;
                let d = stay["left"].as_f64().unwrap() - stay["entered"].as_f64().unwrap();
                assert!(
                    (stay["duration_s"].as_f64().unwrap() - d).abs() < 0.002,
                    "{stay}"
                );
                assert!(d >= 0.0);
            }
            snapshots += a["has_snapshot"].as_bool().unwrap() as usize;
            if n + 1 < evs.len() {
                assert!(a["end_time"].is_null(), "end_time is null until end: {a}");
                assert!(e.get("duration_s").is_none());
            }
        }
        let end = evs.last().unwrap();
        let (start, stop) = (
            end["after"]["start_time"].as_f64().unwrap(),
            end["after"]["end_time"].as_f64().unwrap(),
        );
        let d = end["duration_s"].as_f64().unwrap();
        assert!((d - (stop - start)).abs() < 0.002, "{end}");
    }
    println!(
        "{} objects, {} events, {exits} zone stays, {snapshots} messages with has_snapshot",
        by_id.len(),
        events.len()
    );
    assert!(exits > 0, "people leave the path zone in the clip");
    assert!(snapshots > 0, "alerted objects have snapshots");
}

#[test]
fn event_ids_differ_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = demo_config(tmp.path(), "restart");
    let ids = |name: &str| -> (BTreeSet<String>, BTreeSet<u64>) {
        let recs = run(&cfg, "none", tmp.path(), name);
        let ev: Vec<&Value> = recs.iter().filter(|r| r["record"] == "event").collect();
        (
            ev.iter()
                .map(|e| e["event_id"].as_str().unwrap().to_string())
                .collect(),
            ev.iter().map(|e| e["track_id"].as_u64().unwrap()).collect(),
        )
    };
    let (a, tracks_a) = ids("a");
    let (b, tracks_b) = ids("b");
    println!(
        "run A: {} event ids, run B: {} ({} track ids in both)",
        a.len(),
        b.len(),
        tracks_a.intersection(&tracks_b).count()
    );
    assert!(!a.is_empty() && !b.is_empty());
    // Track ids start from 1 again in every process; event ids do not repeat.
    assert!(tracks_a.intersection(&tracks_b).count() > 0);
    let both: Vec<&String> = a.intersection(&b).collect();
    assert!(
        both.is_empty(),
        "event ids repeated after a restart: {both:?}"
    );
}
