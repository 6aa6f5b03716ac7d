//! `[vlm] verify_mode = "update"` on the bundled clip, through a real mosquitto that is restarted
//! while the run goes on: every alert goes out at once (`pending`) and its verdict follows as an
//! `update` of the same `alert_id`; each of the two arrives, and arrives once (after the
//! de-duplication by envelope `id` that QoS 1 asks of every subscriber).
//!
//! The VLM is the committed random-weight SmolVLM fixture: its answers are nonsense, what is
//! tested is the delivery.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lookout::pipeline::payload::AlertPayload;
use serde_json::Value;

/// The next message within `d`, if any, read as a typed alert payload.
fn take(sub: &mosquitto::Sub, got: &mut Vec<Value>, d: Duration) {
    if let Some(m) = sub.recv_within(d) {
        let a: AlertPayload = serde_json::from_slice(&m.payload).unwrap();
        got.push(serde_json::to_value(&a).unwrap());
    }
}

#[test]
fn each_alert_and_its_verdict_arrive_once_across_a_broker_restart() {
    if mosquitto::binary().is_none() {
        mosquitto::skip("mosquitto is not installed (apt-get install mosquitto)");
        return;
    }
    let mut broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[mqtt]\nkeep_alive_s = 2\nreconnect_max_ms = 500\n\n[vlm]\n\
             model = \"tests/fixtures/vlm/smolvlm-tiny\"\nverify_alerts = true\n\
             verify_mode = \"update\"\nmax_new_tokens = 4\nverify_timeout_s = 600.0\nqueue = 256\n",
            demo.replace("device = \"lookout-demo\"", "device = \"verify\"")
        ),
    )
    .unwrap();
    // A persistent QoS 1 subscriber: the broker keeps what arrives for it while it reconnects.
    let sub = mosquitto::Sub::new(broker.port, "verify-sub", &["lookout/verify/alerts"], false);
    let events = tmp.path().join("events.jsonl");
    let mut run = common::lookout()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--broker", &broker.url(), "--max-frames", "60"])
        .arg("--spool")
        .arg(tmp.path().join("spool.redb"))
        .arg("--events-out")
        .arg(&events)
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut got: Vec<Value> = Vec::new();
    // The broker goes away once the first alert is through, while verdicts are still to come.
    let deadline = Instant::now() + mosquitto::WAIT;
    while got.is_empty() && Instant::now() < deadline {
        take(&sub, &mut got, Duration::from_millis(100));
    }
    assert!(!got.is_empty(), "no alert before the restart");
    broker.stop();
    std::thread::sleep(Duration::from_secs(3)); // longer than the 2 s keep-alive
    broker.restart();
    let status = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        take(&sub, &mut got, Duration::from_millis(100));
    };
    assert!(status.success());

    // What the run reported: one `new` and one `update` per alert.
    let reported: BTreeSet<(String, String)> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["record"] == "alert")
        .map(|r| {
            (
                r["alert_id"].as_str().unwrap().to_string(),
                r["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let key = |v: &Value| {
        (
            v["alert_id"].as_str().unwrap().to_string(),
            v["type"].as_str().unwrap().to_string(),
        )
    };
    let deadline = Instant::now() + mosquitto::WAIT;
    while Instant::now() < deadline
        && !reported.is_subset(&got.iter().map(key).collect::<BTreeSet<_>>())
    {
        take(&sub, &mut got, Duration::from_millis(200));
    }
    // Anything still on its way (a re-send) arrives within a moment of the rest.
    take(&sub, &mut got, Duration::from_secs(1));

    // De-duplicate QoS 1 re-sends by envelope id, then count per (alert_id, type).
    let mut by_envelope: BTreeMap<String, &Value> = BTreeMap::new();
    for v in &got {
        if let Some(prev) = by_envelope.insert(v["id"].as_str().unwrap().to_string(), v) {
            assert_eq!(prev, v, "one envelope id, one message");
        }
    }
    let mut per_key: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for v in by_envelope.values() {
        per_key.entry(key(v)).or_default().push(v);
    }
    let alerts: BTreeSet<&String> = reported.iter().map(|(id, _)| id).collect();
    println!(
        "alerts {}, messages reported {}, received {} ({} after de-duplication by id)",
        alerts.len(),
        reported.len(),
        got.len(),
        by_envelope.len()
    );
    assert!(alerts.len() >= 2, "the demo rules fire on the clip");
    for id in &alerts {
        assert!(reported.contains(&(id.to_string(), "new".into())), "{id}");
        assert!(
            reported.contains(&(id.to_string(), "update".into())),
            "{id}"
        );
    }
    let received: BTreeSet<(String, String)> = per_key.keys().cloned().collect();
    assert_eq!(received, reported, "each alert and each verdict arrives");
    for (k, vs) in &per_key {
        assert_eq!(
            vs.len(),
            1,
            "{k:?} arrived as {} distinct messages",
            vs.len()
        );
        let status = vs[0]["verification"]["status"].as_str().unwrap();
        match k.1.as_str() {
            "new" => assert_eq!(status, "pending", "{k:?}"),
            _ => assert!(
                ["confirmed", "rejected", "unclear"].contains(&status),
                "{k:?}: the model answered: {status}"
            ),
        }
    }
    // The alert precedes its verdict on the topic.
    let order: Vec<(String, String)> = got.iter().map(key).collect();
    for id in &alerts {
        let first = |t: &str| order.iter().position(|k| k.0 == **id && k.1 == t);
        assert!(first("new") < first("update"), "{id}: alert before verdict");
    }
}
