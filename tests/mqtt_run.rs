//! `lookout run` publishing over MQTT: the README demo (embedded broker + `lookout watch`), and a
//! real mosquitto broker receiving every alert the run reports.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn alert_ids_from_jsonl(path: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["record"] == "alert")
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn demo_with_embedded_broker_is_visible_to_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let port = mosquitto::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut run = Command::new(common::lookout_bin())
        .args([
            "run",
            "--broker",
            "embedded",
            "--embedded-port",
            &port.to_string(),
            "--max-frames",
            "80",
            "--json",
        ])
        .arg("--spool")
        .arg(tmp.path().join("spool.redb"))
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The broker is up once its port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "embedded broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let watch = Command::new(common::lookout_bin())
        .args(["watch", "--broker", &url, "--json", "--idle-timeout", "8"])
        .output()
        .unwrap();
    assert!(run.wait().unwrap().success());
    let lines: Vec<Value> = String::from_utf8_lossy(&watch.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: BTreeSet<String> = lines
        .iter()
        .filter_map(|v| v["kind"].as_str().map(str::to_owned))
        .collect();
    println!("watch saw {} messages of kinds {kinds:?}", lines.len());
    assert!(
        kinds.contains("alert") && kinds.contains("event") && kinds.contains("scene"),
        "{kinds:?}"
    );
    let alert = lines.iter().find(|v| v["kind"] == "alert").unwrap();
    let p = &alert["payload"];
    assert_eq!(p["v"], 1);
    assert!(
        p["id"].is_string()
            && p["alert_id"].is_string()
            && p["rule"].is_string()
            && p["message"].is_string(),
        "{p}"
    );
}

#[test]
fn every_alert_reaches_a_real_mosquitto_subscriber() {
    if mosquitto::binary().is_none() {
        eprintln!("SKIP: mosquitto not installed");
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    std::fs::write(
        &cfg,
        demo.replace("device = \"lookout-demo\"", "device = \"qos1\""),
    )
    .unwrap();
    // A persistent QoS 1 subscriber, connected before the run starts.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-L",
            &format!("{}/lookout/qos1/alerts", broker.url()),
            "-q",
            "1",
            "-c",
            "-i",
            "qos1-sub",
            "-v",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    std::thread::sleep(Duration::from_millis(500));
    let events = tmp.path().join("events.jsonl");
    let st = Command::new(common::lookout_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args([
            "--broker",
            &broker.url(),
            "--max-frames",
            "60",
            "--summary-json",
        ])
        .arg("--spool")
        .arg(tmp.path().join("spool.redb"))
        .arg("--events-out")
        .arg(&events)
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let want = alert_ids_from_jsonl(&events);
    assert!(!want.is_empty());
    // lookout flushed its spool before exiting; give the subscriber a moment, then stop it.
    std::thread::sleep(Duration::from_secs(2));
    let _ = sub.kill();
    let out = sub.wait_with_output().unwrap();
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, p)| serde_json::from_str::<Value>(p).ok())
        .map(|v| v["alert_id"].as_str().unwrap_or("").to_string())
        .collect();
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    println!(
        "alerts reported {}, received {} ({} distinct)",
        want.len(),
        got.len(),
        distinct.len()
    );
    assert_eq!(distinct, want, "every alert arrives, nothing else");
}
