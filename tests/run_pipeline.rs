//! `lookout run` end to end on real footage: the bundled pedestrian clip (always) and the
//! ../shared mp4 clips through real ffmpeg (when present).
//!
//! Id stability is measured without ground truth as *re-births*: a track that is born where another
//! track of the same class ended moments earlier (IoU ≥ 0.3 with its last box, within 1.5 s) is
//! the same object under a new id, i.e. an id switch.

mod common;

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

fn run(args: &[&str]) -> (Vec<Value>, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("events.jsonl");
    let res = common::lookout()
        .arg("run")
        .args(args)
        .arg("--events-out")
        .arg(&out)
        .arg("--summary-json")
        .args(if args.contains(&"--broker") {
            &[][..]
        } else {
            &["--broker", "none"][..]
        })
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&res.stdout).lines().last().unwrap()).unwrap();
    let recs = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (recs, summary)
}

fn bbox(v: &Value) -> lookout::BBox {
    let a: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    lookout::BBox::from([a[0], a[1], a[2], a[3]])
}

struct Lifecycle {
    tracks: usize,
    switches: usize,
}

/// Check new/update/end consistency and count re-births.
fn check_lifecycle(recs: &[Value]) -> Lifecycle {
    let events: Vec<&Value> = recs.iter().filter(|r| r["record"] == "event").collect();
    let mut by_track: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for e in &events {
        by_track
            .entry(e["track_id"].as_u64().unwrap())
            .or_default()
            .push(e);
    }
    for (id, evs) in &by_track {
        assert_eq!(
            evs.first().unwrap()["type"],
            "new",
            "track {id} starts with new"
        );
        assert_eq!(
            evs.last().unwrap()["type"],
            "end",
            "track {id} ends with end"
        );
        assert_eq!(
            evs.iter().filter(|e| e["type"] == "new").count(),
            1,
            "track {id}: one new"
        );
        assert_eq!(
            evs.iter().filter(|e| e["type"] == "end").count(),
            1,
            "track {id}: one end"
        );
        for w in evs.windows(2) {
            assert_eq!(
                w[1]["before"], w[0]["after"],
                "track {id}: before = previous after"
            );
            assert!(w[1]["frame_id"].as_u64() >= w[0]["frame_id"].as_u64());
        }
        let labels: std::collections::BTreeSet<_> =
            evs.iter().map(|e| e["label"].as_str().unwrap()).collect();
        assert_eq!(labels.len(), 1, "track {id} keeps its class");
        // One event id from new to end (also in `after.id`), messages counted by event_seq.
        let event_id = &evs[0]["event_id"];
        assert!(event_id.is_string());
        for (n, e) in evs.iter().enumerate() {
            assert_eq!(&e["event_id"], event_id, "track {id}: stable event id");
            assert_eq!(&e["after"]["id"], event_id);
            assert_eq!(e["event_seq"], n as u64);
        }
    }
    // Re-births.
    let mut ends: Vec<(f64, String, lookout::BBox)> = Vec::new();
    let mut switches = 0;
    for e in &events {
        let ts = e["frame_ts"].as_f64().unwrap();
        let label = e["label"].as_str().unwrap().to_string();
        match e["type"].as_str().unwrap() {
            "end" => ends.push((
                e["before"]["frame_time"].as_f64().unwrap_or(ts),
                label,
                bbox(&e["after"]["box"]),
            )),
            "new" => {
                let b = bbox(&e["after"]["box"]);
                let first_seen = e["after"]["start_time"].as_f64().unwrap_or(ts);
                if ends.iter().any(|(t, l, eb)| {
                    *l == label && first_seen - t < 1.5 && first_seen >= *t && eb.iou(&b) >= 0.3
                }) {
                    switches += 1;
                }
            }
            _ => {}
        }
    }
    Lifecycle {
        tracks: by_track.len(),
        switches,
    }
}

fn kinds(recs: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in recs {
        *m.entry(r["record"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn bundled_clip_tracks_people_and_fires_the_demo_rules() {
    let (recs, summary) = run(&["--max-frames", "120"]);
    println!("summary {summary}");
    println!("records {:?}", kinds(&recs));
    assert_eq!(
        summary["frames_processed"], 120,
        "file sources are processed completely"
    );
    let lc = check_lifecycle(&recs);
    let per_track = lc.switches as f64 / lc.tracks.max(1) as f64;
    println!(
        "tracks {}, id switches (re-births) {} = {per_track:.2} per track",
        lc.tracks, lc.switches
    );
    assert!(lc.tracks >= 5, "pedestrians are tracked");
    assert!(
        per_track <= 0.25,
        "id switches per track {per_track:.2} above the 0.25 bound"
    );
    let alerts: Vec<&Value> = recs.iter().filter(|r| r["record"] == "alert").collect();
    let rules: std::collections::BTreeSet<_> =
        alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    println!("alerts {} from rules {rules:?}", alerts.len());
    assert!(rules.contains("path"), "people enter the path zone");
    assert!(
        rules.contains("lamp-post"),
        "people cross the lamp-post line"
    );
    let ids: std::collections::BTreeSet<_> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), alerts.len(), "alert ids are unique");
    let scenes: Vec<&Value> = recs.iter().filter(|r| r["record"] == "scene").collect();
    assert!(
        !scenes.is_empty()
            && scenes
                .iter()
                .any(|s| s["text"].as_str().unwrap().contains("person"))
    );
    // Stats records break the frame's latency down by stage; an interval with no frames has none.
    let stats = recs
        .iter()
        .rfind(|r| r["record"] == "stats" && r["fps"].as_f64().unwrap() > 0.0)
        .expect("a stats record over processed frames");
    println!("stages {}", stats["stages"]);
    for stage in [
        "capture",
        "queue",
        "preprocess",
        "inference",
        "postprocess",
        "analyse",
        "publish",
    ] {
        let t = &stats["stages"][stage];
        let (mean, max) = (t["mean_ms"].as_f64(), t["max_ms"].as_f64());
        assert!(
            mean.is_some_and(|m| m >= 0.0) && max >= mean,
            "stage {stage}: {t}"
        );
    }
    assert!(stats["stages"]["inference"]["mean_ms"].as_f64().unwrap() > 0.0);
    assert!(stats["stages"]["capture"]["mean_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn events_agree_with_the_detections_of_their_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    std::fs::write(
        &cfg,
        demo.replace("[pipeline]", "[pipeline]\npublish_detections = true"),
    )
    .unwrap();
    let (recs, _) = run(&["--config", cfg.to_str().unwrap(), "--max-frames", "60"]);
    let mut dets: HashMap<u64, Vec<lookout::BBox>> = HashMap::new();
    for r in recs.iter().filter(|r| r["record"] == "detections") {
        dets.insert(
            r["frame_id"].as_u64().unwrap(),
            r["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| bbox(&d["box"]))
                .collect(),
        );
    }
    let news: Vec<&Value> = recs
        .iter()
        .filter(|r| r["record"] == "event" && r["type"] == "new")
        .collect();
    assert!(!news.is_empty());
    for n in news {
        let f = n["frame_id"].as_u64().unwrap();
        let b = bbox(&n["after"]["box"]);
        let best = dets[&f].iter().map(|d| d.iou(&b)).fold(0.0f32, f32::max);
        assert!(
            best >= 0.5,
            "new event in frame {f} has no matching detection (best IoU {best:.2})"
        );
    }
}

#[test]
fn real_mp4_clips_through_ffmpeg() {
    let shared = require_shared!();
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.toml"); // no demo rules, no class filter
    std::fs::write(&plain, "[camera]\nname = \"clip\"\n").unwrap();
    let plain = plain.to_str().unwrap();
    let clip = shared.join("media/video_drive_udacity_test_video.mp4");
    let uri = format!("video:{}", clip.display());
    let (recs, summary) = run(&["--config", plain, "--source", &uri]);
    println!("udacity: {summary}");
    assert_eq!(summary["frames_processed"], 38);
    let lc = check_lifecycle(&recs);
    let cars: std::collections::BTreeSet<u64> = recs
        .iter()
        .filter(|r| r["record"] == "event" && r["label"] == "car")
        .map(|r| r["track_id"].as_u64().unwrap())
        .collect();
    println!(
        "udacity: {} tracks, {} car tracks, {} switches",
        lc.tracks,
        cars.len(),
        lc.switches
    );
    // Two cars drive ahead-right through the whole clip.
    assert!((2..=4).contains(&cars.len()), "car tracks {cars:?}");
    assert!(lc.switches <= 1);

    let clip = shared.join("media/video_intel_bottle-detection.mp4");
    let uri = format!("video:{}", clip.display());
    let (recs, summary) = run(&["--config", plain, "--source", &uri, "--max-frames", "150"]);
    println!("bottles: {summary}");
    let lc = check_lifecycle(&recs);
    println!("bottles: {} tracks, {} switches", lc.tracks, lc.switches);
    assert!(lc.switches as f64 / lc.tracks.max(1) as f64 <= 0.5);
}

#[test]
fn bad_config_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[detector]\nworkers = 0\n").unwrap();
    let out = common::lookout()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("bad.toml") && e.contains("detector.workers"),
        "{e}"
    );
}
