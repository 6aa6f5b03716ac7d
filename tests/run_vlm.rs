//! `lookout run` with a VLM beside the detector, on the bundled clip: model-written descriptions and
//! verified alerts, and no alert lost or added by holding alerts for verification.
//!
//! The VLMs are the committed random-weight fixtures (tests/fixtures/vlm), so their answers are
//! nonsense; what is tested is the plumbing: every alert comes out once, carrying the question and
//! the model's answer, and descriptions carry the model's text beside the detector-based one.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

const FRAMES: &str = "60";

/// Runs the demo config with `extra` TOML appended; returns the output records.
fn run_demo(extra: &str, args: &[&str]) -> (Vec<Value>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    let cfg = tmp.path().join("vlm.toml");
    std::fs::write(&cfg, format!("{demo}\n{extra}\n")).unwrap();
    let out = tmp.path().join("events.jsonl");
    let res = common::lookout()
        .args([
            "run",
            "--broker",
            "none",
            "--max-frames",
            FRAMES,
            "--config",
        ])
        .arg(&cfg)
        .arg("--events-out")
        .arg(&out)
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr).to_string();
    assert!(res.status.success(), "{stderr}");
    let recs = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (recs, stderr)
}

fn alert_ids(recs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = recs
        .iter()
        .filter(|r| r["record"] == "alert")
        .map(|r| r["alert_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn check_vlm_run(dir: &str, model_name: &str) {
    let (plain, _) = run_demo("", &[]);
    let plain_ids = alert_ids(&plain);
    assert!(!plain_ids.is_empty(), "the demo rules fire on the clip");

    let vlm_cfg = format!(
        "[vlm]\nmodel = \"{dir}\"\nschedule = \"periodic\"\ninterval_s = 1.0\nverify_alerts = true\n\
         max_new_tokens = 4\nverify_timeout_s = 600.0\nqueue = 256\n"
    );
    let (recs, stderr) = run_demo(&vlm_cfg, &[]);
    assert!(stderr.contains("vlm: "), "{stderr}");

    // Same frames, same detections: verification holds alerts back but loses or adds none.
    let ids = alert_ids(&recs);
    assert_eq!(ids, plain_ids, "alerts with and without verification");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each alert published once");

    let alerts: Vec<&Value> = recs.iter().filter(|r| r["record"] == "alert").collect();
    for a in &alerts {
        let v = &a["verification"];
        let status = v["status"].as_str().unwrap_or_default();
        assert!(
            ["confirmed", "rejected", "unclear"].contains(&status),
            "alert {} was not answered by the model: {v}",
            a["alert_id"]
        );
        let label = a["labels"][0].as_str().unwrap();
        assert!(
            v["question"].as_str().unwrap().contains(label),
            "question names the label: {v}"
        );
        assert_eq!(v["model"], model_name);
        assert!(v["held_ms"].as_f64().unwrap() > 0.0);
    }

    let vlm_scenes: Vec<&Value> = recs
        .iter()
        .filter(|r| r["record"] == "scene" && r.get("vlm").is_some())
        .collect();
    assert!(!vlm_scenes.is_empty(), "model-written descriptions");
    for s in &vlm_scenes {
        let v = &s["vlm"];
        assert_eq!(v["model"], model_name);
        assert_eq!(v["trigger"], "periodic");
        assert!(v["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
        assert!(v["vision_ms"].as_f64().unwrap() > 0.0, "{v}");
        // The detector-based content rides along with the model's text.
        assert!(s["counts"].is_object() && s["text"].is_string());
    }
    println!(
        "{model_name}: {} alerts verified, {} model-written descriptions",
        alerts.len(),
        vlm_scenes.len()
    );
}

#[test]
fn smolvlm_describes_and_verifies_alerts() {
    check_vlm_run("tests/fixtures/vlm/smolvlm-tiny", "smolvlm");
}

#[test]
fn florence2_describes_and_verifies_alerts() {
    check_vlm_run("tests/fixtures/vlm/florence2-tiny", "florence2");
}

#[test]
fn a_bad_vlm_folder_is_named_and_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-vlm");
    let res = common::lookout()
        .args(["run", "--broker", "none", "--max-frames", "5", "--vlm"])
        .arg(&missing)
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(
        stderr.contains(&*missing.to_string_lossy()) && stderr.contains("config.json"),
        "{stderr}"
    );
    assert!(!Path::new(&missing).exists());
}

/// The model's captions of key frames reach the store and are merged, with their times, into
/// `lookout summary` (issue 17: "with a VLM configured, key frames are captioned and merged").
#[test]
fn vlm_captions_are_merged_into_the_stored_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let vlm_cfg = "[vlm]\nmodel = \"tests/fixtures/vlm/smolvlm-tiny\"\nschedule = \"periodic\"\n\
                   interval_s = 1.0\nmax_new_tokens = 4\nqueue = 256\n";
    let (recs, _) = run_demo(vlm_cfg, &["--store", store.to_str().unwrap()]);
    let captions: Vec<&str> = recs
        .iter()
        .filter(|r| r["record"] == "scene")
        .filter_map(|r| r["vlm"]["text"].as_str())
        .collect();
    assert!(!captions.is_empty(), "model-written descriptions");

    let out = common::succeed(
        common::lookout()
            .args(["summary", "--since", "1h", "--json", "--store"])
            .arg(&store),
    );
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    let merged = sum["vlm"].as_array().expect("summary.vlm");
    assert!(!merged.is_empty(), "captions in the summary: {sum}");
    let text = sum["text"].as_str().unwrap();
    for m in merged {
        let caption = m[1].as_str().unwrap();
        assert!(captions.contains(&caption), "{caption} was published");
        assert!(
            text.contains(caption),
            "the narrative quotes {caption}: {text}"
        );
    }
    // Detector lines come first in time order; the captions follow with their clock times.
    assert!(text.contains("the camera model wrote"), "{text}");
}
