//! Clips around alerts (`[store] clip_pre_s`/`clip_post_s`): a run of the bundled clip whose
//! rules fire leaves playable clips (MP4 through the real ffmpeg, checked with ffprobe; MJPEG
//! when ffmpeg is not on the PATH), every alert published names one, the store's alert records
//! name the same files, and retention deletes them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The demo config with a store keeping 1 s before and after each alert.
fn config(dir: &Path, store: &Path) -> PathBuf {
    let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    let src = format!(
        "file:{}?fps=10",
        common::repo().join("samples/vtest").display()
    );
    let text = demo.replace("file:samples/vtest?fps=10", &src)
        + &format!(
            "\n[store]\npath = \"{}\"\nclip_pre_s = 1.0\nclip_post_s = 1.0\nembedding_model = \"\"\n",
            store.display()
        );
    let p = dir.join("clips.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the bundled clip (the first `frames` frames) with `path` as PATH; returns the alerts
/// published and the store's alert records.
fn run(dir: &Path, frames: u64, path: &str) -> (PathBuf, Vec<Value>, Vec<Value>) {
    let store = dir.join("store");
    let events = dir.join("events.jsonl");
    common::succeed(
        common::lookout()
            .args([
                "run",
                "--broker",
                "none",
                "--max-frames",
                &frames.to_string(),
            ])
            .arg("--config")
            .arg(config(dir, &store))
            .arg("--events-out")
            .arg(&events)
            .env("PATH", path)
            .current_dir(common::repo()),
    );
    let alerts: Vec<Value> = common::jsonl(&events)
        .into_iter()
        .filter(|r| r["record"] == "alert")
        .collect();
    let out = common::succeed(
        common::lookout()
            .args(["events", "--kind", "alert", "--json", "--store"])
            .arg(&store),
    );
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (store, alerts, records)
}

/// Every alert names a clip that exists, and its store record names the same one.
fn check_linked(store: &Path, alerts: &[Value], records: &[Value], ext: &str) -> Vec<PathBuf> {
    assert!(
        !alerts.is_empty(),
        "the demo rules fire on the bundled clip"
    );
    let mut clips = Vec::new();
    for a in alerts {
        let clip = a["clip"]
            .as_str()
            .unwrap_or_else(|| panic!("alert without a clip: {a}"));
        assert!(clip.ends_with(ext), "{clip}");
        let file = store.join(clip);
        assert!(file.is_file(), "{} missing", file.display());
        let rec = records
            .iter()
            .find(|r| r["source_id"] == a["alert_id"])
            .unwrap_or_else(|| panic!("no record for {}", a["alert_id"]));
        assert_eq!(rec["clip"], a["clip"], "{rec}");
        if !clips.contains(&file) {
            clips.push(file);
        }
    }
    // Each clip is charged to exactly one alert record (the newest sharing it).
    for c in &clips {
        let charged = records
            .iter()
            .filter(|r| {
                r["clip_bytes"].as_u64().unwrap_or(0) > 0
                    && store.join(r["clip"].as_str().unwrap()) == *c
            })
            .count();
        assert_eq!(charged, 1, "{}", c.display());
    }
    clips
}

/// Frames ffprobe counts in the first video stream, with its codec.
fn probe(file: &Path) -> Option<(String, u64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    Some((
        s["codec_name"].as_str()?.to_string(),
        s["nb_read_frames"].as_str()?.parse().ok()?,
    ))
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn alerts_get_mp4_clips_through_ffmpeg_and_retention_deletes_them() {
    if !have("ffmpeg") || !have("ffprobe") {
        common::skip("ffmpeg/ffprobe are not installed (apt-get install ffmpeg)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    let (store, alerts, records) = run(tmp.path(), 120, &path);
    let clips = check_linked(&store, &alerts, &records, ".mp4");
    for c in &clips {
        let (codec, frames) = probe(c).expect("ffprobe reads the clip");
        assert!(codec == "h264" || codec == "mpeg4", "{codec}");
        assert!(frames >= 2, "{}: {frames} frames", c.display());
    }
    // Retention: a bound nothing fits under removes every record, alerts last, and the clips
    // with them.
    drop(lookout::store::Store::open(&store, 1, 0.0).unwrap());
    for c in &clips {
        assert!(!c.exists(), "{} survived retention", c.display());
    }
    let left = lookout::store::Store::open_read(&store)
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(left.alerts, 0, "{left:?}");
}

#[test]
fn without_ffmpeg_clips_are_mjpeg() {
    let tmp = tempfile::tempdir().unwrap();
    // A PATH with nothing on it: the run must not find ffmpeg.
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let (store, alerts, records) = run(tmp.path(), 60, empty.to_str().unwrap());
    let clips = check_linked(&store, &alerts, &records, ".mjpeg");
    for c in &clips {
        let bytes = std::fs::read(c).unwrap();
        assert_eq!(
            &bytes[..3],
            &[0xFF, 0xD8, 0xFF],
            "{} starts with a JPEG",
            c.display()
        );
        let jpegs = bytes
            .windows(3)
            .filter(|w| w == &[0xFF, 0xD8, 0xFF])
            .count();
        assert!(jpegs >= 2, "{}: {jpegs} JPEGs", c.display());
        if have("ffprobe") {
            let (codec, frames) = probe(c).expect("ffprobe reads the clip");
            assert_eq!(codec, "mjpeg");
            assert_eq!(frames as usize, jpegs);
        }
    }
}
