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
        .map(|v| v["alert_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn demo_with_embedded_broker_is_visible_to_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let port = mosquitto::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut run = common::lookout()
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
    let watch = common::lookout()
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
    assert_eq!(p["v"], 2);
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
        mosquitto::skip("mosquitto is not installed (apt-get install mosquitto)");
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
    let st = common::lookout()
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

/// Alert keys as `alert_id@frame_ts`: pipeline ids restart with frame numbers in a new process,
/// the frame timestamp tells two runs apart.
fn alert_keys_from_jsonl(path: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["record"] == "alert")
        .map(|v| format!("{}@{}", v["alert_id"].as_str().unwrap(), v["frame_ts"]))
        .collect()
}

/// Issue 4's fault test: while `lookout run` emits alerts, the broker is stopped and restarted
/// twice (once for longer than the keep-alive) and lookout itself is SIGKILLed and restarted on
/// the same spool. A persistent QoS 1 subscriber must receive every alert either run reported.
#[test]
fn alerts_survive_broker_restarts_and_a_killed_lookout() {
    if mosquitto::binary().is_none() {
        mosquitto::skip("mosquitto is not installed (apt-get install mosquitto)");
        return;
    }
    let mut broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    let demo = demo
        .replace("device = \"lookout-demo\"", "device = \"fault\"")
        .replace(
            "file:samples/vtest?fps=10",
            "file:samples/vtest?fps=10&loop=true",
        );
    std::fs::write(
        &cfg,
        format!("{demo}\n[mqtt]\nkeep_alive_s = 2\nreconnect_max_ms = 500\n"),
    )
    .unwrap();
    let spool = tmp.path().join("spool.redb");

    // Persistent QoS 1 subscriber; mosquitto_sub reconnects by itself after broker restarts.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-L",
            &format!("{}/lookout/fault/alerts", broker.url()),
            "-q",
            "1",
            "-c",
            "-i",
            "fault-sub",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let reader = {
        let out = sub.stdout.take().unwrap();
        let received = received.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    received.lock().unwrap().push(v);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let url = broker.url();
    let start_run = |events: &std::path::Path, extra: &[&str]| {
        common::lookout()
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--broker", &url])
            .arg("--spool")
            .arg(&spool)
            .arg("--events-out")
            .arg(events)
            .args(extra)
            .current_dir(common::repo())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let events_a = tmp.path().join("a.jsonl");
    let mut a = start_run(&events_a, &[]);
    std::thread::sleep(Duration::from_secs(4));
    broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();
    std::thread::sleep(Duration::from_secs(3));
    broker.stop();
    std::thread::sleep(Duration::from_secs(5)); // longer than the 2 s keep-alive
    broker.restart();
    std::thread::sleep(Duration::from_secs(3));
    a.kill().unwrap(); // SIGKILL: no flush, no goodbye
    a.wait().unwrap();

    let events_b = tmp.path().join("b.jsonl");
    let b = start_run(&events_b, &["--max-frames", "30"]);
    let st = b.wait_with_output().unwrap();
    assert!(st.status.success());

    let mut want = alert_keys_from_jsonl(&events_a);
    let from_a = want.len();
    want.extend(alert_keys_from_jsonl(&events_b));
    assert!(from_a > 0, "run A reported alerts before it was killed");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (got, total, distinct_ids) = loop {
        let r = received.lock().unwrap().clone();
        let got: BTreeSet<String> = r
            .iter()
            .map(|v| format!("{}@{}", v["alert_id"].as_str().unwrap_or(""), v["frame_ts"]))
            .collect();
        let ids: BTreeSet<&str> = r.iter().filter_map(|v| v["id"].as_str()).collect();
        if want.is_subset(&got) || Instant::now() > deadline {
            break (got, r.len(), ids.len());
        }
        drop(ids);
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = sub.kill();
    let _ = sub.wait();
    let _ = reader.join();
    let missing: Vec<_> = want.difference(&got).collect();
    println!(
        "alerts reported: {} (run A {from_a}, run B {}); received {total} messages, {distinct_ids} distinct envelope ids, \
         {} distinct alerts; missing {}",
        want.len(),
        want.len() - from_a,
        got.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "alerts lost: {missing:?}");
}
