//! Fault test: `lookout run` with a small store is killed with SIGKILL in the middle of a soak
//! (the bundled clip, looped), then the store is read and written again: it opens with no repair
//! by hand, every alert the run had reported (its JSON Lines log is written only after the store
//! committed the alert) is there unless retention removed it oldest-first, and the size bound
//! holds.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lookout::store::{Kind, Store};

const MAX_BYTES: u64 = 1 << 20;

fn alerts_in(log: &std::path::Path) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // The last line may be cut by the kill.
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["record"] == "alert")
        .map(|v| {
            (
                v["alert_id"].as_str().unwrap().to_string(),
                v["frame_ts"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_store_killed_mid_run_reopens_with_its_alerts_and_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let log = tmp.path().join("events.jsonl");
    let cfg = tmp.path().join("soak.toml");
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    let demo = demo.replace(
        "source = \"file:samples/vtest?fps=10\"",
        "source = \"file:samples/vtest?fps=10&loop=true\"",
    );
    std::fs::write(
        &cfg,
        format!(
            "{demo}\n[store]\npath = \"{}\"\nmax_bytes = {MAX_BYTES}\n",
            store.display()
        ),
    )
    .unwrap();
    let mut child = common::lookout()
        .args(["run", "--broker", "none", "--summary-json", "--config"])
        .arg(&cfg)
        .arg("--events-out")
        .arg(&log)
        .current_dir(common::repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Soak until enough alerts (each with a snapshot) that retention must have evicted, then
    // kill -9. The deadline only keeps a broken run from hanging the test.
    let deadline = Instant::now() + Duration::from_secs(900);
    while alerts_in(&log).len() < 40 {
        assert!(
            Instant::now() < deadline,
            "the soak produced too few alerts"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "lookout run exited early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let reported = alerts_in(&log);

    // Reading opens the killed writer's file (repairing it if redb asks to).
    common::succeed(
        common::lookout()
            .args(["events", "--kind", "alert", "--json", "--store"])
            .arg(&store),
    );
    let s = Store::open_read(&store).unwrap();
    let stored: Vec<(String, f64)> = s
        .records(&[Kind::Alert], f64::MIN, f64::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.source_id.unwrap(), r.ts))
        .collect();
    let ids: BTreeSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    let oldest = stored.iter().map(|(_, t)| *t).fold(f64::MAX, f64::min);
    let stats = s.stats().unwrap();
    println!(
        "reported {} alerts, {} stored, oldest stored at {oldest}; {stats:?}",
        reported.len(),
        stored.len()
    );
    assert!(!stored.is_empty());
    // Retention removes alerts oldest first, so every reported alert from the oldest one kept on
    // is there.
    let lost: Vec<&(String, f64)> = reported
        .iter()
        .filter(|(id, ts)| *ts >= oldest && !ids.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "reported but not stored: {lost:?}");
    drop(s);

    // A writer opens it again, runs and applies the bound.
    common::succeed(
        common::lookout()
            .args(["run", "--broker", "none", "--max-frames", "20", "--config"])
            .arg(&cfg)
            .current_dir(common::repo()),
    );
    let stats = Store::open_read(&store).unwrap().stats().unwrap();
    println!("after the restart: {stats:?}");
    assert!(stats.bytes <= MAX_BYTES, "{stats:?}");
    // On disk: the accounted JPEGs plus at most the few files the kill left behind unnamed
    // (removed on a later open once they are ten minutes old).
    assert!(stats.media_bytes <= MAX_BYTES + 512 * 1024, "{stats:?}");
    assert!(stats.alerts > 0);
}
